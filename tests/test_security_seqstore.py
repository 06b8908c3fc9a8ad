"""Sequence numbers across restarts with manual keys (haha.security.seqstore): without a store
a restarted sender is shut out by its peer's anti-replay window; with one it resumes above
every number it may have used, a restarted receiver refuses old packets, and the file is
written rarely and atomically."""

import json
import os
from ipaddress import IPv6Address

import pytest

from haha.security import SecurityAssociationDatabase, SecurityError
from haha.security.errors import SecurityConfigError
from haha.security.keys import derive_pair
from haha.security.seqstore import SequenceStore

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")
SECRET = bytes(range(7, 39))


def _ha1(store=None):
    return SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, HA2),
                                                  sequence_store=store)


def _ha2(store=None):
    return SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA2, HA1),
                                                  sequence_store=store)


def _reason(db, source, esp):
    with pytest.raises(SecurityError) as e:
        db.unprotect(source, esp)
    return e.value.reason


def test_without_a_store_a_restarted_sender_is_shut_out():
    """The problem this solves: HA1 restarts, starts again at sequence number 1, and HA2 drops
    what it sends as too old."""
    ha1, ha2 = _ha1(), _ha2()
    for _ in range(100):
        ha2.unprotect(HA1, ha1.protect(HA2, 135, b"hello"))
    ha1 = _ha1()  # restart
    assert _reason(ha2, HA1, ha1.protect(HA2, 135, b"hello")) == "too-old"


def test_restarted_sender_resumes_above_everything_it_sent(tmp_path):
    """With a store, HA1's new run starts above its last reservation: HA2 accepts at once, and
    at most one block of numbers is skipped."""
    path = tmp_path / "seq.json"
    ha1, ha2 = _ha1(SequenceStore(path, block=16)), _ha2()
    sent = [ha1.protect(HA2, 135, bytes([i])) for i in range(40)]
    for p in sent:
        ha2.unprotect(HA1, p)
    last = int.from_bytes(sent[-1][4:8], "big")
    ha1 = _ha1(SequenceStore(path, block=16))  # crash and restart
    p = ha1.protect(HA2, 135, b"back")
    seq = int.from_bytes(p[4:8], "big")
    assert last < seq <= last + 16 + 1
    assert ha2.unprotect(HA1, p) == (HA1, 135, b"back")


def test_reservation_is_on_disk_before_the_packet_leaves(tmp_path):
    """After every protect, the file (read as a crash would leave it) already covers the
    number just used; it is rewritten once per block, not per packet."""
    path = tmp_path / "seq.json"
    store = SequenceStore(path, block=10)
    ha1 = _ha1(store)
    writes0 = store.writes
    for _ in range(95):
        seq = int.from_bytes(ha1.protect(HA2, 135, b"x")[4:8], "big")
        data = json.loads(path.read_text())
        assert max(v for k, v in data.items() if k.startswith("out ")) >= seq
    assert store.writes - writes0 == 9  # 11-20, 21-30, ... 91-100 reserved along the way


def test_restarted_receiver_refuses_old_packets(tmp_path):
    """HA2 restarts: after a clean stop (flush) no earlier packet is accepted again; after a
    crash at most one block of the most recent ones could be, never older ones."""
    path = tmp_path / "seq2.json"
    ha1 = _ha1()
    ha2 = _ha2(SequenceStore(path, block=8))
    sent = [ha1.protect(HA2, 135, bytes([i])) for i in range(30)]
    for p in sent:
        ha2.unprotect(HA1, p)
    ha2.flush()
    ha2 = _ha2(SequenceStore(path, block=8))  # clean restart
    assert {_reason(ha2, HA1, p) for p in sent} <= {"too-old", "replay"}
    assert ha2.unprotect(HA1, ha1.protect(HA2, 135, b"new"))[2] == b"new"

    path3 = tmp_path / "seq3.json"
    ha1 = _ha1()
    ha2 = _ha2(SequenceStore(path3, block=8))
    sent = [ha1.protect(HA2, 135, bytes([i])) for i in range(30)]
    for p in sent:
        ha2.unprotect(HA1, p)
    ha2 = _ha2(SequenceStore(path3, block=8))  # crash: no flush
    replayed = 0
    for p in sent:
        try:
            ha2.unprotect(HA1, p)
            replayed += 1
        except SecurityError:
            pass
    assert replayed <= 8
    assert all(_reason(ha2, HA1, p) in ("too-old", "replay") for p in sent[:-8])


def test_many_sas_are_reserved_with_one_write(tmp_path):
    """Building a database of many SAs writes the state file once, with mode 0600."""
    store = SequenceStore(tmp_path / "s.json")
    specs = []
    for i in range(1, 51):
        specs += derive_pair(SECRET, HA1, IPv6Address(f"2001:db8:100::{i}"), "mobile-node")
    SecurityAssociationDatabase.from_specs(specs, sequence_store=store)
    assert store.writes == 1
    assert oct(os.stat(tmp_path / "s.json").st_mode & 0o777) == "0o600"


def test_bad_state_files_and_forget(tmp_path):
    """A corrupt or ill-shaped state file is refused naming it; forget() drops an SA's entries
    so it can take new keys under the same SPI."""
    bad = tmp_path / "bad.json"
    for text in ("{not json", '{"out x 0x1": -1}', "[1, 2]"):
        bad.write_text(text)
        with pytest.raises(SecurityConfigError, match=str(bad)):
            SequenceStore(bad)
    with pytest.raises(SecurityConfigError):
        SequenceStore(tmp_path / "ok.json", block=0)
    store = SequenceStore(tmp_path / "ok.json", block=4)
    ha1 = _ha1(store)
    spi = next(r for r in ha1.describe() if r["direction"] == "out")["spi"]
    ha1.protect(HA2, 135, b"x")
    store.forget(HA2, int(spi, 16))
    assert not any(str(HA2) in k for k in json.loads((tmp_path / "ok.json").read_text()))


def _node(i):
    return IPv6Address(f"2001:db8:100::{i:x}")


def test_sas_added_alone_share_one_reservation_per_run(tmp_path):
    """SAs added one at a time (node-group nodes derived at first contact) write the file once
    per run, not once each: the first writes ``out-shared``, the next thousand write nothing
    (a rewrite of a growing file per new node made a burst of N registrations O(N^2))."""
    store = SequenceStore(tmp_path / "s.seq", block=64)
    db = SecurityAssociationDatabase(sequence_store=store)
    for i in range(1, 1001):
        for spec in derive_pair(SECRET, HA1, _node(i), "mobile-node"):
            db.add(spec)
    assert store.writes == 1
    assert json.loads((tmp_path / "s.seq").read_text()) == {"out-shared": 64}
    # Each SA still writes an entry of its own once it has used the shared block.
    for _ in range(64):
        db.protect(_node(7), 135, b"x")
    assert store.writes == 1
    db.protect(_node(7), 135, b"x")
    assert store.writes == 2
    data = json.loads((tmp_path / "s.seq").read_text())
    own = [v for k, v in data.items() if k.startswith(f"out {_node(7)} ")]
    assert own == [64 + 64]  # sequence number 65 used: 65..128 reserved


def test_a_restart_starts_shared_sas_above_everything_they_sent(tmp_path):
    """After a crash, an SA that only ever used the shared reservation (no entry of its own)
    starts above every number any such SA may have sent, whether it is added alone again or
    from the configuration in a batch; the receiver accepts it at once."""
    path = tmp_path / "s.seq"
    store = SequenceStore(path, block=32)
    db = SecurityAssociationDatabase(sequence_store=store)
    peers = [_node(i) for i in range(1, 6)]
    receivers = {}
    for p in peers:
        for spec in derive_pair(SECRET, HA1, p, "mobile-node"):
            db.add(spec)
        receivers[p] = SecurityAssociationDatabase.from_specs(
            derive_pair(SECRET, p, HA1, "home-agent"))
    highest = 0
    for k, p in enumerate(peers):
        for _ in range(5 * k + 1):
            esp = db.protect(p, 135, b"x")
            receivers[p].unprotect(HA1, esp)
            highest = max(highest, int.from_bytes(esp[4:8], "big"))
    # Crash: a new run adds peers[0] alone and peers[1] in a batch (e.g. now configured).
    store = SequenceStore(path, block=32)
    db = SecurityAssociationDatabase(sequence_store=store)
    for spec in derive_pair(SECRET, HA1, peers[0], "mobile-node"):
        db.add(spec)
    with store.batch():
        for spec in derive_pair(SECRET, HA1, peers[1], "mobile-node"):
            db.add(spec)
    for p in peers[:2]:
        esp = db.protect(p, 135, b"again")
        assert int.from_bytes(esp[4:8], "big") > highest
        assert receivers[p].unprotect(HA1, esp) == (HA1, 135, b"again")


@pytest.mark.parametrize("recorded", [False, True])
def test_start_pair_is_start_outbound_then_start_inbound(tmp_path, recorded):
    """start_pair (a derived pair's two SAs in one call) gives what start_outbound followed by
    start_inbound give, and leaves the same state on disk: for a peer with no entries (the run's
    shared reservation) and for one whose entries a run before recorded (its own)."""
    peer = IPv6Address("2001:db8:1::1:5")
    results, files = [], []
    for name in ("pair", "apart"):
        path = str(tmp_path / name)
        if recorded:
            with open(path, "w") as f:
                json.dump({"out 2001:db8:1::1:5 0x00001000": 5000,
                           "in 2001:db8:1::1:5 0x00002000": 7000}, f)
        store = SequenceStore(path, block=64)
        if name == "pair":
            seq, limit, reserve, floor, advance, save_at = store.start_pair(peer, 0x1000,
                                                                            0x2000)
        else:
            seq, limit, reserve = store.start_outbound(peer, 0x1000)
            floor, advance, save_at = store.start_inbound(peer, 0x2000)
        assert reserve == store._reserve and advance == store._advance
        results.append((seq, limit, floor, save_at))
        with open(path) as f:
            files.append(json.load(f))
    assert results[0] == results[1] and files[0] == files[1]
    assert results[0][2] == (7000 if recorded else 0)
