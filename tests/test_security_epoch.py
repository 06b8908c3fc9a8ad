"""Boot epochs (haha.security.epoch): every run of a home agent sends under new keys, and its
peers follow on the first authentic packet.

A run that lost its sequence file is accepted at once (instead of dropped as too old for ever);
no two runs share an AES-GCM key; a replay of an earlier run's packets or a forged announcement
of a new epoch changes nothing; the generation grows from run to run even with the clock
behind; a restarted receiver remembers the peer's epoch and window from its sequence file.
"""

import hashlib
import hmac
import json
from ipaddress import IPv6Address

import pytest

from haha.security import SecurityAssociationDatabase, SecurityError
from haha.security.epoch import (
    EPOCH_ORIGIN_MS,
    RANDOM_BITS,
    STORE_KEY,
    boot_epoch,
    generation_of,
    new_epoch,
)
from haha.security.esp import OutboundSA
from haha.security.keys import derive_pair, derive_sa
from haha.security.seqstore import SequenceStore

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")
SECRET = bytes(range(7, 39))
T0 = 1_800_000_000.0  # a wall-clock time (2027)


def _epoch(offset_ms=0, low=1):
    return new_epoch(T0 + offset_ms / 1000, 0, lambda n: low.to_bytes(n, "big"))


def _db(local, peer, epoch, store=None):
    return SecurityAssociationDatabase.from_specs(derive_pair(SECRET, local, peer, epoch=epoch),
                                                  sequence_store=store)


def _reason(db, source, esp):
    with pytest.raises(SecurityError) as e:
        db.unprotect(source, esp)
    return e.value.reason


def _hkdf(ikm, salt, info, length):
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = hmac.new(prk, t + info + bytes((i,)), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:length]


def test_a_run_without_its_sequence_file_is_followed_at_once():
    """HA1 sends 200 packets, restarts with no state and a new epoch: HA2's first sight of the
    new run switches its SA (fresh window) instead of dropping it as too old."""
    ha1, ha2 = _db(HA1, HA2, _epoch(0)), _db(HA2, HA1, _epoch(5))
    for _ in range(200):
        ha2.unprotect(HA1, ha1.protect(HA2, 135, b"hello"))
    ha1 = _db(HA1, HA2, _epoch(60_000))  # restart a minute later, nothing on disk
    peer, nh, payload = ha2.unprotect(HA1, ha1.protect(HA2, 135, b"back"))
    assert (peer, nh, payload) == (HA1, 135, b"back")
    assert ha2.counters["epoch-switched"] == 1
    assert ha2.counters["too-old"] == 0
    for _ in range(100):
        ha2.unprotect(HA1, ha1.protect(HA2, 135, b"more"))
    row = [r for r in ha2.describe() if r["direction"] == "in"][0]
    assert row["epoch"] == f"{_epoch(60_000):016x}" and row["top"] == 101


def test_replays_of_an_earlier_run_are_refused_after_the_switch():
    """Packets captured from the old run, replayed after the peer switched, are stale-epoch
    (they cannot rewind the SA), and the new run's packets keep flowing."""
    ha1, ha2 = _db(HA1, HA2, _epoch(0)), _db(HA2, HA1, _epoch(5))
    old = [ha1.protect(HA2, 135, bytes([i])) for i in range(10)]
    ha2.unprotect(HA1, old[0])
    ha1 = _db(HA1, HA2, _epoch(1000))
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"new"))
    for p in old:
        assert _reason(ha2, HA1, p) == "stale-epoch"
    assert ha2.counters["stale-epoch"] == 10
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"still"))


def test_a_forged_new_epoch_changes_nothing():
    """A packet announcing a later epoch but sealed with another secret fails its ICV: no
    switch, and the current run is still accepted."""
    ha1, ha2 = _db(HA1, HA2, _epoch(0)), _db(HA2, HA1, _epoch(5))
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"hello"))
    spi = derive_sa(SECRET, HA1, HA2).spi
    forged_key = derive_sa(bytes(32), HA1, HA2, epoch=_epoch(9000))
    forger = OutboundSA(spi, forged_key.key, forged_key.salt, iv_mask=_epoch(9000))
    assert _reason(ha2, HA1, forger.seal(135, b"evil")) == "auth-failed"
    assert ha2.counters["epoch-switched"] == 0
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"again"))


def test_same_generation_with_other_random_bits_is_stale():
    """Only a later generation switches the SA: another epoch of the same millisecond (a
    replay from a run that began in the same millisecond) is refused."""
    ha1, ha2 = _db(HA1, HA2, _epoch(0, low=1)), _db(HA2, HA1, _epoch(5))
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"x"))
    twin = _db(HA1, HA2, _epoch(0, low=2))
    assert _reason(ha2, HA1, twin.protect(HA2, 135, b"y")) == "stale-epoch"


def test_no_two_runs_share_a_key_and_the_iv_announces_the_epoch():
    """Each epoch derives its own key and salt (the SPI stays); the IV of every packet is the
    sequence number XOR the epoch, so the (key, IV) pairs of two runs never meet."""
    a, b = _epoch(0), _epoch(1)
    ka, kb = derive_sa(SECRET, HA1, HA2, epoch=a), derive_sa(SECRET, HA1, HA2, epoch=b)
    plain = derive_sa(SECRET, HA1, HA2)
    assert ka.spi == kb.spi == plain.spi
    assert len({ka.key, kb.key, plain.key}) == 3 and ka.salt != kb.salt
    db = _db(HA1, HA2, a)
    for seq in (1, 2, 3):
        p = db.protect(HA2, 135, b"z")
        assert int.from_bytes(p[8:16], "big") ^ int.from_bytes(p[4:8], "big") == a
        assert int.from_bytes(p[4:8], "big") == seq


def test_epoch_derivation_matches_the_documented_construction():
    """key || salt = HKDF-SHA256(secret, "haha-esp-epoch-v1", key_len || sender || receiver ||
    epoch), checked against HKDF written here from RFC 5869 (docs/security.md)."""
    epoch = 0x0123456789ABCDEF
    for bits in (128, 256):
        k = bits // 8
        okm = _hkdf(SECRET, b"haha-esp-epoch-v1",
                    bytes((k,)) + HA1.packed + HA2.packed + epoch.to_bytes(8, "big"), k + 4)
        d = derive_sa(SECRET, HA1, HA2, bits, epoch=epoch)
        assert (d.key, d.salt) == (okm[:k], okm[k:])


def test_generation_grows_even_when_the_clock_is_behind(tmp_path):
    """boot_epoch records each run's generation; the next run takes one more even when the
    wall clock stepped back six hours."""
    store = SequenceStore(tmp_path / "s.seq")
    first, ok = boot_epoch(store, T0)
    assert ok and generation_of(first) == int(T0 * 1000) - EPOCH_ORIGIN_MS
    second, _ = boot_epoch(SequenceStore(tmp_path / "s.seq"), T0 - 6 * 3600)
    assert generation_of(second) == generation_of(first) + 1
    assert json.loads((tmp_path / "s.seq").read_text())[STORE_KEY] == generation_of(second)
    assert 0 <= second & ((1 << RANDOM_BITS) - 1) < 1 << RANDOM_BITS


def test_an_unrecordable_epoch_is_still_new(tmp_path):
    """With a disk that refuses the write, boot_epoch says so (False) and still returns an epoch
    of a later generation than the last recorded."""
    store = SequenceStore(tmp_path / "s.seq")
    store.record(STORE_KEY, int(T0 * 1000) - EPOCH_ORIGIN_MS + 10)

    def full(fd, data):
        raise OSError(28, "No space left on device")

    store._write = full
    epoch, ok = boot_epoch(store, T0)
    assert not ok
    assert generation_of(epoch) == int(T0 * 1000) - EPOCH_ORIGIN_MS + 11


def test_a_restarted_receiver_keeps_the_peers_epoch_and_window(tmp_path):
    """HA2 stops cleanly (flush) and starts again from its file: it knows HA1's epoch and
    refuses a replay of HA1's packets, and still follows HA1's next run."""
    path = tmp_path / "ha2.seq"
    ha1 = _db(HA1, HA2, _epoch(0))
    ha2 = _db(HA2, HA1, _epoch(5), SequenceStore(path, block=16))
    sent = [ha1.protect(HA2, 135, bytes([i])) for i in range(40)]
    for p in sent:
        ha2.unprotect(HA1, p)
    ha2.flush()
    ha2 = _db(HA2, HA1, _epoch(100), SequenceStore(path, block=16))
    for p in (sent[0], sent[-1]):
        assert _reason(ha2, HA1, p) == "replay"  # everything up to the recorded top
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"next"))
    ha1 = _db(HA1, HA2, _epoch(2000))
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"new run"))
    assert ha2.counters["epoch-switched"] == 1


def test_epoch_keyed_sas_reserve_nothing_on_disk(tmp_path):
    """An epoch-keyed outbound SA writes no reservations (its run's keys are new), so a full
    disk cannot slow it; only the peer's epoch is recorded on the inbound side."""
    store = SequenceStore(tmp_path / "x.seq", block=4)
    db = _db(HA1, HA2, _epoch(0), store)
    writes = store.writes
    for _ in range(50):
        db.protect(HA2, 135, b"q")
    assert store.writes == writes
    assert not any(k.startswith("out ") for k in store._data)


def test_new_epoch_tries_are_budgeted():
    """Forged announcements of new epochs are tried (a derivation each) only within the budget:
    10 at once, then 5 a second; beyond it they are dropped as epoch-limited without any
    cryptography, and a genuine new run is followed as soon as a token is back."""
    from haha.security.epoch import EpochInboundSA

    now = [100.0]
    spi = derive_sa(SECRET, HA1, HA2).spi

    def rekey(epoch):
        d = derive_sa(SECRET, HA1, HA2, epoch=epoch)
        return d.key, d.salt

    derived = []

    def counting(epoch):
        derived.append(epoch)
        return rekey(epoch)

    sa = EpochInboundSA(spi, counting, epoch=_epoch(0), peer=HA1, clock=lambda: now[0])
    derived.clear()
    wrong = derive_sa(bytes(32), HA1, HA2)
    forged = [OutboundSA(spi, wrong.key, wrong.salt, iv_mask=_epoch(1000 + i)).seal(135, b"f")
              for i in range(30)]
    reasons = []
    for p in forged:
        try:
            sa.open(p)
        except SecurityError as e:
            reasons.append(e.reason)
    assert reasons == ["auth-failed"] * 10 + ["epoch-limited"] * 20
    assert len(derived) == 10
    genuine = OutboundSA(spi, *rekey(_epoch(5000)), iv_mask=_epoch(5000)).seal(135, b"g")
    with pytest.raises(SecurityError, match="epoch-limited"):
        sa.open(genuine)
    now[0] += 0.2  # one token back
    assert sa.open(genuine)[1] == b"g"
    assert sa.epoch == _epoch(5000)


def test_the_database_counts_epoch_limited_drops():
    """Through the SA database the drop is counted by its reason."""
    ha2 = _db(HA2, HA1, _epoch(5))
    ha1 = _db(HA1, HA2, _epoch(0))
    ha2.unprotect(HA1, ha1.protect(HA2, 135, b"x"))
    spi = derive_sa(SECRET, HA1, HA2).spi
    wrong = derive_sa(bytes(32), HA1, HA2)
    for i in range(40):
        p = OutboundSA(spi, wrong.key, wrong.salt, iv_mask=_epoch(1000 + i)).seal(135, b"f")
        _reason(ha2, HA1, p)
    assert ha2.counters["epoch-limited"] >= 25
    assert ha2.counters["auth-failed"] + ha2.counters["epoch-limited"] == 40
