"""Failing disks and the sequence file (haha.security.seqstore, haha.durability).

The writer is injected (``store._write``, the ``os.write`` seam): short writes are continued,
a full disk (ENOSPC) or an I/O error leaves the earlier file intact and no temporary file, the
SAs keep sending from memory without an exception, the failure is reported once and the
recovery once; a damaged file at start is refused with one line naming the way forward, which
the ``reset`` command provides. The kernel state record keeps its earlier content when the
disk is full.
"""

import errno
import json
import os
from ipaddress import IPv6Address

import pytest

from haha.backends.common import StateFile
from haha.durability import watch_store
from haha.security import SecurityAssociationDatabase
from haha.security.epoch import EPOCH_ORIGIN_MS, STORE_KEY
from haha.security.errors import SecurityConfigError
from haha.security.keys import derive_pair
from haha.security.seqstore import SequenceStore, main, reset, write_atomically

HA = IPv6Address("2001:db8:1::1")
MN = IPv6Address("2001:db8:1::100")
SECRET = bytes(range(32))


def _full(fd, data):
    raise OSError(errno.ENOSPC, "No space left on device")


def _short(fd, data):
    return os.write(fd, bytes(data[:3]))


def test_short_writes_are_continued(tmp_path):
    """A writer that takes three octets at a time still produces the whole file."""
    path = str(tmp_path / "f")
    write_atomically(path, b'{"a": 1, "b": 2}', _short)
    assert json.loads(open(path).read()) == {"a": 1, "b": 2}


def test_a_write_that_makes_no_progress_fails_and_keeps_the_old_file(tmp_path):
    """A writer returning 0 (or ENOSPC) is an OSError; the earlier file is untouched and no
    temporary file is left behind."""
    path = str(tmp_path / "f")
    write_atomically(path, b'{"old": 1}')
    for writer in (lambda fd, data: 0, _full):
        with pytest.raises(OSError):
            write_atomically(path, b'{"new": 2}', writer)
        assert json.loads(open(path).read()) == {"old": 1}
        assert os.listdir(tmp_path) == ["f"]


def test_full_disk_sends_go_on_reported_once_and_recovery_reported(tmp_path):
    """With the disk full, an SA that must reserve every 4 packets sends 40 without an
    exception; the failure is counted, reported once, the file keeps its last good content;
    when space returns the next reservation writes and the recovery is reported once."""
    path = tmp_path / "ha.seq"
    store = watch_store(SequenceStore(path, block=4))
    reports = []
    store.on_failure = lambda e: reports.append(("failed", e.errno))
    store.on_recovery = lambda: reports.append(("recovered",))
    db = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA, MN, "mobile-node"),
                                                sequence_store=store)
    good = path.read_text()
    store._write = _full
    seqs = [int.from_bytes(db.protect(MN, 135, b"x")[4:8], "big") for _ in range(40)]
    assert seqs == list(range(1, 41))  # unique, in order, none refused
    assert reports == [("failed", errno.ENOSPC)]
    assert store.counters["write-failed"] >= 9 and store.counters["failing"] == 1
    assert path.read_text() == good
    assert not store.healthy
    store._write = os.write
    for _ in range(4):
        db.protect(MN, 135, b"x")
    assert reports == [("failed", errno.ENOSPC), ("recovered",)]
    assert store.healthy
    assert max(json.loads(path.read_text()).values()) >= 44


def test_watch_store_logs_one_line_per_run_of_failures(tmp_path, capsys):
    """The daemon's reporter: one error line for many failed writes, one line at recovery."""
    from twisted.logger import globalLogPublisher

    lines = []
    globalLogPublisher.addObserver(lines.append)
    try:
        store = watch_store(SequenceStore(tmp_path / "s.seq", block=1))
        store._write = _full
        for i in range(20):
            store.record("x", i)
        store._write = os.write
        store.record("x", 99)
    finally:
        globalLogPublisher.removeObserver(lines.append)
    mine = [e for e in lines if e.get("log_namespace") == "haha.durability"]
    assert len(mine) == 2
    assert "cannot write the ESP sequence file" in mine[0]["log_format"]
    assert "written again" in mine[1]["log_format"]


@pytest.mark.parametrize("text", ["{\"out 2001:db8:1::100 0x00000", "", "[]",
                                  '{"out x": 4294967296}'])
def test_a_damaged_file_is_refused_with_the_way_forward(tmp_path, text):
    """A truncated, empty or ill-shaped file stops the start with one line that names the file
    and the command that resets it safely."""
    path = tmp_path / "ha.seq"
    path.write_text(text)
    with pytest.raises(SecurityConfigError) as e:
        SequenceStore(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    assert f"python -m haha.security.seqstore reset {path}" in message


def test_reset_moves_the_file_aside_and_bumps_the_generation(tmp_path, capsys):
    """`python -m haha.security.seqstore reset FILE` keeps the damaged file beside, writes a
    loadable one whose epoch generation is above the one recorded (even with the clock
    behind) and above the clock's."""
    path = tmp_path / "ha.seq"
    future = int(2_000_000_000 * 1000) - EPOCH_ORIGIN_MS
    path.write_text(json.dumps({STORE_KEY: future, "out x 0x00000100": 5})[:-3])
    assert main(["check", str(path)]) == 1
    assert main(["reset", str(path)]) == 0
    assert "moved" in capsys.readouterr().out
    store = SequenceStore(path)
    assert store.get(STORE_KEY) > int(1_700_000_000 * 1000) - EPOCH_ORIGIN_MS
    aside = [p for p in os.listdir(tmp_path) if p.startswith("ha.seq.damaged-")]
    assert len(aside) == 1
    # a recorded generation ahead of the clock is respected
    path.write_text(json.dumps({STORE_KEY: future}))
    reset(path)
    assert SequenceStore(path).get(STORE_KEY) == future + 1
    assert main(["check", str(path)]) == 0


def test_service_start_with_a_damaged_file_is_one_located_line(tmp_path):
    """The daemon's configuration error for a damaged sequence file: file, section, key, and
    the reset command."""
    from haha.config import home_agent_from_text
    from haha.inifile import ConfigError
    from haha.security.keys import generate_key_file
    from haha.service import home_agent_sadb

    generate_key_file(str(tmp_path / "p.key"))
    (tmp_path / "ha.seq").write_text('{"epoch-gen')
    config = home_agent_from_text(
        "[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
        "configuration = separate-links\nhome-interface = eth0\n"
        f"[peers]\nstatic = 2001:db8:1::2\n[peer-keys]\n2001:db8:1::2 = {tmp_path}/p.key\n"
        f"[security]\nsequence-file = {tmp_path}/ha.seq\n", str(tmp_path / "ha.conf"))
    with pytest.raises(ConfigError) as e:
        home_agent_sadb(config)
    text = str(e.value)
    assert "[security] sequence-file" in text and "seqstore reset" in text and "\n" not in text


def test_state_record_survives_a_full_disk(tmp_path):
    """The kernel state record is rewritten in place (it carries the lock): a write that fails
    leaves the earlier record readable, and a shorter record is padded, still valid JSON."""
    path = tmp_path / "ha.state"
    state = StateFile(path)
    assert state.acquire() is None
    state.write({"pid": 1, "scope": "a" * 100})
    state.write({"pid": 2})
    assert json.loads(path.read_text()) == {"pid": 2}
    real = os.pwrite

    def failing(fd, data, offset):  # the disk takes 5 more octets, then is full
        if offset < 200 and len(data) > 5:
            real(fd, bytes(data[:5]), offset)
            return 5
        raise OSError(errno.ENOSPC, "No space left on device")

    os.pwrite = failing
    try:
        with pytest.raises(OSError):
            state.write({"pid": 3, "scope": "b" * 1000})
    finally:
        os.pwrite = real
    assert json.loads(path.read_text()) == {"pid": 2}
    state.release(remove=True)


def test_time_floor_starts_unrecorded_sas_above_an_earlier_run(tmp_path):
    """An SA with no entry starts at the time floor (one per second since 2020, capped at half
    the space); an SA with an entry continues from it as before."""
    from haha.security.seqstore import time_floor

    assert time_floor(1577836800) == 0 and time_floor(0) == 0
    assert time_floor(1577836800 + 1000) == 1000
    assert time_floor(1e12) == 0xFFFFFFFF // 2
    now = [1_800_000_000]
    store = SequenceStore(tmp_path / "f.seq", block=8, floor=lambda: time_floor(now[0]))
    db = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA, MN, "mobile-node"),
                                                sequence_store=store)
    first = int.from_bytes(db.protect(MN, 135, b"x")[4:8], "big")
    assert first == time_floor(now[0]) + 1
    now[0] += 3600
    again = SecurityAssociationDatabase.from_specs(
        derive_pair(SECRET, HA, MN, "mobile-node"),
        sequence_store=SequenceStore(tmp_path / "f.seq", block=8, floor=lambda: 0))
    assert int.from_bytes(again.protect(MN, 135, b"x")[4:8], "big") == first + 8
