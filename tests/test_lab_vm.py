"""haha.lab.vm, the stock-kernel tier's launcher, without booting anything: the initramfs
archive, the QEMU command line, and the loud failures (a guest that writes no status, a missing
QEMU) that must never pass for a skipped tier."""

import os
import shutil
import stat
import subprocess

import pytest

from haha.lab import vm


def _fake_kernel(monkeypatch, tmp_path):
    """prepare_kernel and build_initramfs stand-ins: nothing is downloaded or read."""
    modules = tmp_path / "k" / "lib" / "modules" / "6.1.0-test"
    modules.mkdir(parents=True)
    monkeypatch.setattr(vm, "prepare_kernel", lambda cache: (str(tmp_path / "vmlinuz"),
                                                             str(modules)))
    monkeypatch.setattr(vm, "build_initramfs", lambda modules_dir, path: open(path, "wb").close())


def _fake_qemu(monkeypatch, tmp_path, body):
    """A qemu-system-x86_64 on PATH running ``body`` (sh) with $JOB set to the job share."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "qemu-system-x86_64"
    script.write_text("#!/bin/sh\n"
                      'for a in "$@"; do case "$a" in *mount_tag=job*) '
                      'JOB=$(echo "$a" | sed "s/^local,path=//; s/,.*//");; esac; done\n'
                      + body + "\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def _read_newc(data):
    """A newc reader written from the format's description (110-octet ASCII header: magic
    070701 and 13 eight-digit hex fields; name and data each padded to 4 octets)."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        body = data[pos:pos + size]
        pos = (pos + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_cpio_archive_lists_as_written(tmp_path):
    """cpio_newc writes a newc archive whose entries (names, modes, contents) an independent
    reader finds as written, and which busybox's cpio, when installed, extracts the same."""
    data = vm.cpio_newc([("bin", stat.S_IFDIR | 0o755, None),
                         ("bin/x", stat.S_IFREG | 0o755, b"hello"),
                         ("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n")])
    assert len(data) % 4 == 0
    assert _read_newc(data) == {"bin": (stat.S_IFDIR | 0o755, b""),
                                "bin/x": (stat.S_IFREG | 0o755, b"hello"),
                                "init": (stat.S_IFREG | 0o755, b"#!/bin/sh\n")}
    if shutil.which("busybox"):
        out = tmp_path / "out"
        out.mkdir()
        done = subprocess.run(["busybox", "cpio", "-i", "-d"], input=data, cwd=out,
                              capture_output=True)
        assert done.returncode == 0, done.stderr
        assert (out / "bin" / "x").read_bytes() == b"hello"
        assert os.stat(out / "bin" / "x").st_mode & 0o777 == 0o755


def test_qemu_command_line(monkeypatch):
    """TCG by default (HAHA_VM_ACCEL overrides), no network, the host root read-only over
    9p, the unpacked kernel package read-only, the job share writable."""
    monkeypatch.delenv("HAHA_VM_ACCEL", raising=False)
    argv = vm.qemu_argv("/c/k/boot/vmlinuz", "/j/initramfs.cpio", "/c/k/lib/modules/6.1", "/j")
    text = " ".join(argv)
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg,thread=multi"]
    assert "-nic none" in text and "-no-reboot" in text
    assert "local,path=/,mount_tag=hostroot,security_model=none,readonly=on" in text
    assert "local,path=/c/k,mount_tag=kernel,security_model=none,readonly=on" in text
    assert "local,path=/j,mount_tag=job,security_model=none" in text
    assert "mount_tag=job,security_model=none,readonly" not in text
    monkeypatch.setenv("HAHA_VM_ACCEL", "kvm")
    assert vm.qemu_argv("v", "i", "/c/k/lib/modules/6.1", "/j")[2] == "kvm"


def test_status_written_by_the_guest_is_the_tiers(monkeypatch, tmp_path):
    """The command's exit status, written by the guest into the job share, is run()'s result,
    and the command file exports HAHA_WAIT_SCALE for the lab's waits."""
    _fake_kernel(monkeypatch, tmp_path)
    _fake_qemu(monkeypatch, tmp_path, 'grep -q "HAHA_WAIT_SCALE=7" "$JOB/command.sh" && '
                                      'echo 9 > "$JOB/status"')
    assert vm.run(["true"], cache=str(tmp_path), scale=7) == 9


def test_a_checkout_under_tmp_stays_visible_in_the_guest(monkeypatch, tmp_path):
    """The guest mounts a fresh /tmp and /run; a working directory under either (CI clones
    under /tmp, with the venv inside) is bound back at its own path before the command runs,
    and nothing is bound for one elsewhere."""
    assert vm.keep_visible("/tmp/ci-check/sub") == \
        "mkdir -p /tmp/ci-check && mount --bind /haha-host-tmp/ci-check /tmp/ci-check"
    assert vm.keep_visible("/run/x") == \
        "mkdir -p /run/x && mount --bind /haha-host-run/x /run/x"
    assert vm.keep_visible("/work/main") == ""
    _fake_kernel(monkeypatch, tmp_path)
    _fake_qemu(monkeypatch, tmp_path, 'grep -q "mount --bind /haha-host-tmp/ci-check '
                                      '/tmp/ci-check" "$JOB/guest.sh" && echo 0 > "$JOB/status"')
    assert vm.run(["true"], cwd="/tmp/ci-check/sub", cache=str(tmp_path)) == 0


def test_a_guest_without_status_fails_loudly(monkeypatch, tmp_path, capsys):
    """A guest that ends without writing the status (it did not boot) is a VMError, and the
    command line exits with 3 and says so: never a pass, never a skip."""
    _fake_kernel(monkeypatch, tmp_path)
    _fake_qemu(monkeypatch, tmp_path, "exit 0")
    with pytest.raises(vm.VMError, match="without writing the command's exit status"):
        vm.run(["true"], cache=str(tmp_path))
    assert vm.main(["--cache", str(tmp_path), "--", "true"]) == 3
    assert "haha-vm: FAILED" in capsys.readouterr().err


def test_missing_qemu_fails_loudly(monkeypatch, tmp_path):
    """Without qemu-system-x86_64 the error names the package to install."""
    _fake_kernel(monkeypatch, tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(vm.VMError, match="install qemu-system-x86"):
        vm.run(["true"], cache=str(tmp_path))


def test_a_hung_guest_is_stopped(monkeypatch, tmp_path):
    """A guest that outlives the timeout is killed and reported."""
    _fake_kernel(monkeypatch, tmp_path)
    _fake_qemu(monkeypatch, tmp_path, "exec sleep 30")
    with pytest.raises(vm.VMError, match="did not finish within 0.5 s"):
        vm.run(["true"], cache=str(tmp_path), timeout=0.5)
