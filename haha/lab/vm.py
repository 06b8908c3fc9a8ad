"""The stock-kernel tier: run a command (the tier's pytest) under Debian's own kernel in QEMU.

No disk image is built. Debian's ``linux-image-amd64`` package is downloaded with ``apt-get
download``, unpacked with ``dpkg -x`` and indexed with ``depmod -b`` into a cache directory
(kept between runs). A small initramfs (``busybox`` from ``busybox-static`` and the virtio, 9p
and overlay modules, written here as a cpio archive) mounts the host's root file system read-only
over 9p (virtfs) under a tmpfs overlay and switches root to it, so the guest runs the host's own
Python, virtual environment, iproute2 and nft. The kernel's modules are bound in over
``/lib/modules/<release>``, so the guest's ``modprobe`` (and the kernel's own module requests)
find them, and its configuration over ``/boot/config-<release>`` (what
:func:`haha.backends.netlink.read_kernel_config` reads). A third share, the job directory, is writable: the guest reads its command from it and
writes the command's exit status back. The guest mounts a fresh tmpfs on ``/tmp``.

The guest prints to the serial console, which is this process's standard output. The tier
fails loudly: a missing package, a kernel that does not boot or a guest that ends without
writing its status is an error (exit status 3), never a skip.

Under emulation (TCG) everything is about ten times slower than on the host; the guest exports
``HAHA_WAIT_SCALE`` (:func:`haha.lab.wait_scale`), which every wait of the lab multiplies.

Command line::

    python -m haha.lab.vm [--cache DIR] [--scale N] [--memory MiB] -- COMMAND...

runs COMMAND in the current directory inside the guest and exits with its status.
"""

import argparse
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterable, Optional, Sequence

#: Modules the initramfs loads (with what they depend on, in ``modprobe``'s order) to reach
#: the host's root file system.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")

#: Modules the guest loads before the command: what a stock kernel with the project's
#: configuration has loaded (the issue's list) plus netfilter and xfrm for the guard and ESP.
GUEST_MODULES = ("ip6_tunnel", "esp6", "tun", "veth", "bridge", "xfrm_user", "nf_tables",
                 "af_packet", "l2tp_eth")

META_PACKAGE = "linux-image-amd64"
STATUS_FILE = "status"
JOB_MOUNT = "/haha-job"

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /modules/*.ko; do insmod "$m" || echo "haha-vm: insmod $m failed"; done
mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower \
    || { echo "haha-vm: cannot mount the host root"; poweroff -f; }
mount -t tmpfs -o size=75% tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || { echo "haha-vm: cannot mount the overlay"; poweroff -f; }
release=$(uname -r)
mkdir -p /newroot/lib/modules/$release /newroot{job} /newroot/boot /kernel
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 kernel /kernel
mount --bind /kernel/lib/modules/$release /newroot/lib/modules/$release
touch /newroot/boot/config-$release
mount --bind /kernel/boot/config-$release /newroot/boot/config-$release
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /newroot{job}
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh {job}/guest.sh
"""

GUEST = r"""# runs as init (pid 1) in the guest, on the host's root file system
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8
mkdir -p /haha-host-tmp /haha-host-run
mount --bind /tmp /haha-host-tmp
mount --bind /run /haha-host-run
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
{keep}
mkdir -p /dev/pts /dev/shm /run/netns
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ip link set lo up
hostname haha-vm
for m in {modules}; do modprobe "$m" || echo "haha-vm: modprobe $m failed"; done
echo "haha-vm: kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s"
cd {cwd} && sh {job}/command.sh
echo $? > {job}/{status}
sync
/bin/busybox poweroff -f 2>/dev/null || echo o > /proc/sysrq-trigger
sleep 60
"""


def keep_visible(cwd: str) -> str:
    """The guest's shell lines that keep the host directory holding ``cwd`` at its own path
    when ``cwd`` lies under ``/tmp`` or ``/run``, which the guest mounts afresh (a checkout, with
    its venv, cloned under /tmp by CI): its top directory there is bound back in."""
    lines = []
    for base, saved in (("/tmp", "/haha-host-tmp"), ("/run", "/haha-host-run")):
        if cwd.startswith(base + "/"):
            top = cwd[len(base) + 1:].split("/", 1)[0]
            target = shlex.quote(f"{base}/{top}")
            lines.append(f"mkdir -p {target} && mount --bind {shlex.quote(saved + '/' + top)} "
                         f"{target}")
    return "\n".join(lines)


class VMError(RuntimeError):
    """The guest could not be prepared or booted."""


def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)
    except FileNotFoundError as e:
        raise VMError(f"{argv[0]} is missing ({e}); install qemu-system-x86, busybox-static, "
                      "kmod (./dev test-stock-kernel installs them as root)") from None
    except subprocess.CalledProcessError as e:
        raise VMError(f"{' '.join(argv)} failed ({e.returncode}): "
                      f"{(e.stderr or e.stdout).strip()}") from None


def kernel_package() -> str:
    """The versioned kernel package ``linux-image-amd64`` depends on (apt's lists)."""
    for attempt in (0, 1):
        out = subprocess.run(["apt-cache", "depends", META_PACKAGE], capture_output=True,
                             text=True).stdout
        for line in out.splitlines():
            words = line.split()
            if len(words) == 2 and words[0] == "Depends:" and words[1].startswith("linux-image-"):
                return words[1]
        if attempt == 0:
            _run(["apt-get", "update", "-qq"])
    raise VMError(f"apt-cache knows no package behind {META_PACKAGE}")


def prepare_kernel(cache: str) -> tuple[str, str]:
    """Download, unpack and index the kernel once; return (vmlinuz path, modules dir)."""
    os.makedirs(cache, exist_ok=True)
    package = kernel_package()
    root = os.path.join(cache, package)
    stamp = os.path.join(root, ".ready")
    if not os.path.exists(stamp):
        shutil.rmtree(root, ignore_errors=True)
        download = tempfile.mkdtemp(dir=cache)
        os.chmod(download, 0o755)  # apt's sandbox user reads the directory
        try:
            _run(["apt-get", "download", "-qq", package], cwd=download)
            debs = [f for f in os.listdir(download) if f.endswith(".deb")]
            if len(debs) != 1:
                raise VMError(f"apt-get download {package} left {debs}")
            _run(["dpkg", "-x", os.path.join(download, debs[0]), root])
        finally:
            shutil.rmtree(download, ignore_errors=True)
        release = os.listdir(os.path.join(root, "lib", "modules"))[0]
        _run(["depmod", "-b", root, release])
        open(stamp, "w").close()
    release = os.listdir(os.path.join(root, "lib", "modules"))[0]
    vmlinuz = os.path.join(root, "boot", f"vmlinuz-{release}")
    return vmlinuz, os.path.join(root, "lib", "modules", release)


def cpio_newc(entries: Iterable[tuple[str, int, Optional[bytes]]]) -> bytes:
    """A cpio (newc) archive from (path, mode, data) triples; directories have data None."""
    out = bytearray()
    for ino, (path, mode, data) in enumerate(list(entries) + [("TRAILER!!!", 0, b"")], 1):
        data = data or b""
        name = path.encode() + b"\0"
        nlink = 2 if stat.S_ISDIR(mode) else 1
        fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def boot_module_files(modules_dir: str) -> list[str]:
    """The module files of :data:`BOOT_MODULES` and their dependencies, in load order."""
    base = os.path.dirname(os.path.dirname(os.path.dirname(modules_dir)))
    release = os.path.basename(modules_dir)
    files: list[str] = []
    for name in BOOT_MODULES:
        out = _run(["modprobe", "-d", base, "-S", release, "--show-depends", name]).stdout
        for line in out.splitlines():
            words = line.split()
            if words and words[0] == "insmod" and words[1] not in files:
                files.append(words[1])
    return files


def build_initramfs(modules_dir: str, path: str) -> None:
    """Write the initramfs: busybox, the boot modules, /init."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    with open(busybox, "rb") as f:
        bb = f.read()
    if b"ld-linux" in bb[:4096]:
        raise VMError(f"{busybox} is dynamically linked; install busybox-static")
    entries: list[tuple[str, int, Optional[bytes]]] = [
        (d, stat.S_IFDIR | 0o755, None)
        for d in ("bin", "dev", "proc", "sys", "modules", "newroot", "lower", "rw", "kernel")]
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, bb))
    for i, module in enumerate(boot_module_files(modules_dir)):
        with open(module, "rb") as f:
            entries.append((f"modules/{i:02d}-{os.path.basename(module)}", stat.S_IFREG | 0o644,
                            f.read()))
    entries.append(("init", stat.S_IFREG | 0o755, INIT.replace("{job}", JOB_MOUNT).encode()))
    with open(path, "wb") as f:
        f.write(cpio_newc(entries))


def qemu_argv(vmlinuz: str, initramfs: str, modules_dir: str, job: str, memory: int = 3072,
              cpus: int = 2) -> list[str]:
    """The QEMU command line. TCG unless ``HAHA_VM_ACCEL`` names another accelerator: on the
    machines this was built on, /dev/kvm exists but a KVM guest hangs in the firmware."""
    accel = os.environ.get("HAHA_VM_ACCEL", "tcg,thread=multi")
    kernel_root = os.path.dirname(os.path.dirname(os.path.dirname(modules_dir)))
    return [
        "qemu-system-x86_64", "-accel", accel, "-cpu", "max",
        "-m", str(memory), "-smp", str(cpus), "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", vmlinuz, "-initrd", initramfs,
        "-append", "console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={kernel_root},mount_tag=kernel,security_model=none,readonly=on",
        "-virtfs", f"local,path={job},mount_tag=job,security_model=none",
    ]


def default_cache() -> str:
    venv = os.environ.get("VIRTUAL_ENV") or os.path.dirname(os.path.dirname(sys.executable))
    return os.path.join(venv, "stock-kernel")


def run(command: Sequence[str], cwd: Optional[str] = None, cache: Optional[str] = None,
        scale: float = 10, memory: int = 3072, env: Optional[dict[str, str]] = None,
        timeout: Optional[float] = None) -> int:
    """Boot the stock kernel, run ``command`` (argv) in ``cwd`` there, return its exit status.
    Raises :class:`VMError` when the guest cannot be prepared or ends without a status."""
    cwd = os.path.abspath(cwd or os.getcwd())
    cache = cache or default_cache()
    vmlinuz, modules_dir = prepare_kernel(cache)
    job = tempfile.mkdtemp(prefix="haha-vm-", dir=cache)
    try:
        initramfs = os.path.join(job, "initramfs.cpio")
        build_initramfs(modules_dir, initramfs)
        exports = {"HAHA_WAIT_SCALE": str(scale), "HAHA_STOCK_KERNEL": "1",
                   "PYTHONDONTWRITEBYTECODE": "1", "PY_COLORS": "0"}
        exports.update(env or {})
        with open(os.path.join(job, "command.sh"), "w") as f:
            for k, v in exports.items():
                f.write(f"export {k}={shlex.quote(v)}\n")
            f.write("exec " + " ".join(shlex.quote(a) for a in command) + "\n")
        with open(os.path.join(job, "guest.sh"), "w") as f:
            f.write(GUEST.replace("{job}", JOB_MOUNT).replace("{cwd}", shlex.quote(cwd))
                    .replace("{keep}", keep_visible(cwd))
                    .replace("{status}", STATUS_FILE)
                    .replace("{modules}", " ".join(GUEST_MODULES)))
        started = time.monotonic()
        argv = qemu_argv(vmlinuz, initramfs, modules_dir, job, memory=memory)
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, timeout=timeout)
        except FileNotFoundError:
            raise VMError("qemu-system-x86_64 is missing; install qemu-system-x86") from None
        except subprocess.TimeoutExpired:
            raise VMError(f"the guest did not finish within {timeout} s") from None
        took = time.monotonic() - started
        try:
            with open(os.path.join(job, STATUS_FILE)) as f:
                status = int(f.read().strip())
        except (OSError, ValueError):
            raise VMError(f"the guest ended (qemu status {proc.returncode}, after {took:.0f} s) "
                          "without writing the command's exit status: it did not boot, or "
                          "crashed") from None
        print(f"haha-vm: guest finished in {took:.0f} s, command status {status}", flush=True)
        return status
    finally:
        shutil.rmtree(job, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m haha.lab.vm", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--cache", help="kernel cache directory (default: VENV/stock-kernel)")
    parser.add_argument("--scale", type=float, default=10.0,
                        help="HAHA_WAIT_SCALE in the guest (default 10)")
    parser.add_argument("--memory", type=int, default=3072, help="guest memory, MiB")
    parser.add_argument("--timeout", type=float, default=None, help="give up after seconds")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        status = run(args.command, cache=args.cache, scale=args.scale, memory=args.memory,
                     timeout=args.timeout)
    except VMError as e:
        print(f"haha-vm: FAILED: {e}", file=sys.stderr, flush=True)
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main())
