"""Process level: a real twistd home agent whose sequence file lives on a full disk.

A 64 KiB tmpfs, mounted on a temporary directory for the test and removed after it, holds
ha1's sequence file. With the tmpfs filled, ha1 is killed and started again: it serves (its
peer follows its new boot epoch, it relearns the node's binding), says once that it cannot
write the file, logs no traceback, leaves the file on disk exactly as it was, and stops
cleanly. When space returns, the next start writes the file again. Needs root (mount).
"""

import errno
import json
import os
import subprocess

import pytest

from haha.lab.cluster import LocalCluster

pytestmark = [pytest.mark.process, pytest.mark.slow]

HA1 = "2001:db8:1::1"
HOA = "2001:db8:1::100"


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:  # fail, never skip: CI runs as root
        pytest.fail("mounting a tmpfs needs root (CI runs as root)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(directory):
    """Fill the file system holding ``directory``; returns the filler's path."""
    path = os.path.join(directory, "filler")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
        for size in (512, 64, 8, 1):  # the last partial block too
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return path


def _status(c, name):
    return c.ask(name, "status") or {}


def test_full_disk_keeps_serving_says_so_once_and_corrupts_nothing(tmp_path, small_disk):
    """Start, stop and serving with the sequence file's disk full: one error line, a gauge, no
    traceback, the file unchanged; written again once space returns."""
    with LocalCluster(tmp_path / "c", n_has=2, lifetime=3, hello_interval=1.0) as c:
        seq = small_disk / "ha1.seq"
        ha1 = c.node("ha1")
        with open(ha1.config, "a") as f:
            f.write(f"\n[security]\nsequence-file = {seq}\n")
        for ha in c.has:
            c.start(ha.name)
        for ha in c.has:
            c.wait_for(f"{ha.name} serving",
                       lambda ha=ha: _status(c, ha.name).get("state") == "serving")
        c.start("mn1")
        c.wait_for("registration", lambda: _status(c, "mn1").get("home_agent") == HA1)
        c.kill("ha1")  # a crash: the file holds the first run's reservations
        before = seq.read_bytes()
        json.loads(before)
        filler = _fill(small_disk)

        c.start("ha1")
        c.wait_for("ha1 serving on a full disk",
                   lambda: _status(c, "ha1").get("state") == "serving")
        c.wait_for("ha1 relearns the binding", lambda: c.primary_of(HOA, ["ha1"]).get("ha1"))
        c.wait_for("ha2 follows the new epoch", lambda: (c.ask("ha2", "counters") or {}).get(
            "securityassociationdatabase.epoch-switched", 0) >= 1)
        counters = c.ask("ha1", "counters")
        assert counters["sequencestore.failing"] == 1
        assert counters["sequencestore.write-failed"] >= 1
        c.stop("ha1")
        assert ha1.process.returncode in (0, -15)
        log = open(ha1.logfile).read()
        assert log.count("cannot write the ESP sequence file") == 1
        assert "Traceback" not in log
        assert f"home agent {HA1} stopped" in log
        assert seq.read_bytes() == before  # never replaced by a partial file
        assert not os.path.exists(f"{seq}.tmp")

        os.unlink(filler)
        c.start("ha1")
        c.wait_for("ha1 serving again", lambda: _status(c, "ha1").get("state") == "serving")
        assert c.ask("ha1", "counters")["sequencestore.failing"] == 0
        assert seq.read_bytes() != before
        json.loads(seq.read_bytes())
        c.stop_all()
