"""Every way an inbound ESP packet can be wrong is dropped with the right counter, and nothing
else happens: replays, reordering inside and outside the anti-replay window (RFC 4303 3.4.3),
a bit flipped anywhere in the packet, a wrong SPI, a wrong source, truncation, bad padding.
No error message or repr carries key material."""

import random
import struct
from ipaddress import IPv6Address

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from haha.security import SaSpec, SecurityAssociationDatabase, SecurityError
from haha.security.esp import MIN_LEN, SEQ_MAX, InboundSA, OutboundSA

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")
STRANGER = IPv6Address("2001:db8:99::1")
KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SALT = bytes.fromhex("a1a2a3a4")
SPI = 0x00C0FFEE
PAYLOAD = bytes(range(100))


def _pair(window=64):
    """HA1 sends to HA2: HA1's outbound SA, HA2's inbound SA."""
    sender = SecurityAssociationDatabase.from_specs([SaSpec(HA2, "out", SPI, KEY, SALT)])
    receiver = SecurityAssociationDatabase.from_specs(
        [SaSpec(HA1, "in", SPI, KEY, SALT)], replay_window=window
    )
    return sender, receiver


def _drop(db, source, esp):
    with pytest.raises(SecurityError) as e:
        db.unprotect(source, esp)
    return e.value.reason


def _nonzero(counters):
    return {k: v for k, v in counters.items() if v}


def test_round_trip_and_counters_start_at_zero():
    """A protected message comes out with its peer, next header and payload; every counter
    exists from the start and stays 0 on success."""
    s, r = _pair()
    assert set(r.counters) >= {"unknown-spi", "replay", "too-old", "auth-failed", "bad-padding",
                               "truncated", "wrong-source", "seq-exhausted", "no-sa"}
    assert r.unprotect(HA1, s.protect(HA2, 135, PAYLOAD)) == (HA1, 135, PAYLOAD)
    assert _nonzero(r.counters) == {} and _nonzero(s.counters) == {}


def test_replay_is_dropped_and_counted():
    """The same packet twice: the second is a replay, counted once, and the first packet's
    successor still passes."""
    s, r = _pair()
    p1, p2 = s.protect(HA2, 135, PAYLOAD), s.protect(HA2, 135, PAYLOAD)
    r.unprotect(HA1, p1)
    assert _drop(r, HA1, p1) == "replay"
    assert r.unprotect(HA1, p2)[2] == PAYLOAD
    assert _drop(r, HA1, p2) == "replay"
    assert _nonzero(r.counters) == {"replay": 2}


def test_reordering_inside_the_window_is_accepted_once():
    """Packets 1-64 delivered in a random order after packet 64 arrived first are each accepted
    exactly once (window 64: sequence numbers top-63..top are inside)."""
    s, r = _pair(64)
    packets = [s.protect(HA2, 135, bytes([i])) for i in range(1, 65)]
    assert r.unprotect(HA1, packets[-1])[2] == bytes([64])
    order = list(range(63))
    random.Random(7).shuffle(order)
    for i in order:
        assert r.unprotect(HA1, packets[i])[2] == bytes([i + 1])
    for i in order:
        assert _drop(r, HA1, packets[i]) == "replay"
    assert _nonzero(r.counters) == {"replay": 63}


@pytest.mark.parametrize("window", [64, 128, 1024])
def test_reordering_outside_the_window_is_too_old(window):
    """After sequence number N, N - window + 1 is still inside and N - window is too old, for
    windows of 64 (RFC 4303's recommended default) and larger."""
    n = window + 50
    s, r = _pair(window)
    packets = {i: s.protect(HA2, 135, b"x") for i in range(1, n + 1)}
    r.unprotect(HA1, packets[n])
    assert _drop(r, HA1, packets[n - window]) == "too-old"
    assert _drop(r, HA1, packets[1]) == "too-old"
    r.unprotect(HA1, packets[n - window + 1])
    assert _nonzero(r.counters) == {"too-old": 2}


def test_a_jump_larger_than_the_window_clears_it():
    """A sequence number far ahead moves the window without growing memory; the old ones are
    then too old and the new top a replay."""
    out = OutboundSA(SPI, KEY, SALT, seq=0)
    inb = InboundSA(SPI, KEY, SALT)
    first = out.seal(135, b"a")
    far = OutboundSA(SPI, KEY, SALT, seq=SEQ_MAX - 1).seal(135, b"b")
    inb.open(first)
    assert inb.open(far)[:2] == (135, b"b")
    assert inb.top == SEQ_MAX
    for p, reason in ((first, "too-old"), (far, "replay")):
        with pytest.raises(SecurityError) as e:
            inb.open(p)
        assert e.value.reason == reason


def test_sequence_number_zero_is_a_replay():
    """Sequence number 0 is never sent (the first packet carries 1, RFC 4303 3.3.3): a packet
    claiming it is dropped before any cryptography."""
    s, r = _pair()
    p = bytearray(s.protect(HA2, 135, PAYLOAD))
    p[4:8] = bytes(4)
    assert _drop(r, HA1, bytes(p)) == "replay"


def _expected_flip_reason(offset, packet_len):
    if offset < 4:
        return "unknown-spi"
    return "auth-failed"  # sequence number (AAD), IV (nonce), ciphertext, ICV


def test_every_single_bit_flip_is_dropped_with_its_reason():
    """Flipping any one bit of any octet -- SPI, sequence number, IV, ciphertext, ICV -- is
    dropped (unknown SPI for the SPI, authentication failure for the rest) and changes nothing:
    the untouched packet is accepted afterwards."""
    s, r = _pair()
    sender = OutboundSA(SPI, KEY, SALT, seq=0x12345677)  # a sequence number no flip makes 0
    good = sender.seal(135, PAYLOAD)
    regions = {"unknown-spi": 0, "auth-failed": 0}
    for offset in range(len(good)):
        for bit in range(8):
            bad = bytearray(good)
            bad[offset] ^= 1 << bit
            reason = _drop(r, HA1, bytes(bad))
            assert reason == _expected_flip_reason(offset, len(good)), (offset, bit)
            regions[reason] += 1
    assert regions == {"unknown-spi": 32, "auth-failed": 8 * (len(good) - 4)}
    assert r.counters["unknown-spi"] == 32
    assert r.counters["auth-failed"] == 8 * (len(good) - 4)
    assert r.unprotect(HA1, good) == (HA1, 135, PAYLOAD)


def test_truncated_and_extended_packets():
    """Every prefix of a packet is dropped: shorter than header + IV + 2 + ICV octets as
    truncated, longer ones as authentication failures; so is a packet with octets appended."""
    s, r = _pair()
    good = s.protect(HA2, 135, PAYLOAD)
    for n in range(len(good)):
        assert _drop(r, HA1, good[:n]) == ("truncated" if n < MIN_LEN else "auth-failed"), n
    assert _drop(r, HA1, good + b"\0") == "auth-failed"
    assert r.counters["truncated"] == MIN_LEN
    assert r.unprotect(HA1, good)[2] == PAYLOAD


def test_wrong_spi_and_wrong_source():
    """An SPI nobody configured is unknown; an authentic packet from another source than the
    SA's peer is refused before decryption and does not move the window."""
    s, r = _pair()
    p = s.protect(HA2, 135, PAYLOAD)
    assert _drop(r, HA1, struct.pack("!I", SPI + 1) + p[4:]) == "unknown-spi"
    assert _drop(r, STRANGER, p) == "wrong-source"
    assert _drop(r, HA2, p) == "wrong-source"
    assert r.unprotect(HA1, p)[2] == PAYLOAD
    assert _nonzero(r.counters) == {"unknown-spi": 1, "wrong-source": 2}


def _authentic(seq, plaintext, key=KEY, salt=SALT, spi=SPI):
    """An ESP packet with an arbitrary (possibly malformed) trailer, correctly authenticated."""
    head = struct.pack("!II", spi, seq)
    iv = bytes(8)
    return head + iv + AESGCM(key).encrypt(salt + iv, plaintext, head)


@pytest.mark.parametrize(
    "plaintext",
    [
        b"abcd" + b"\x00\x00" + bytes((2, 135)),  # padding must be 1, 2
        b"abcd" + b"\x02\x01" + bytes((2, 135)),  # out of order
        b"abc" + b"\x01\x02\x04" + bytes((3, 135)),  # last padding octet wrong
        bytes((5, 135)),  # pad length larger than what precedes it
        b"ab" + bytes((255, 135)),
    ],
)
def test_bad_padding_is_dropped_after_authentication(plaintext):
    """An authentic packet whose padding is not 1, 2, 3, ... or whose Pad Length exceeds the
    data is dropped as bad padding (RFC 4303 2.4); it was authentic, so its sequence number is
    then used up."""
    s, r = _pair()
    p = _authentic(1, plaintext)
    assert _drop(r, HA1, p) == "bad-padding"
    assert _drop(r, HA1, p) == "replay"
    assert _nonzero(r.counters) == {"bad-padding": 1, "replay": 1}


@pytest.mark.parametrize("n", range(0, 12))
def test_padding_is_minimal_and_counts_up(n):
    """For each payload length the ciphertext is the smallest multiple of 4 that holds payload,
    Pad Length and Next Header, and the padding octets are 1, 2, 3 (RFC 4303 2.4)."""
    s, r = _pair()
    payload = bytes(range(50, 50 + n))
    p = s.protect(HA2, 59 if n == 0 else 135, payload)
    ct_len = len(p) - 8 - 8 - 16
    assert ct_len % 4 == 0 and n + 2 <= ct_len < n + 6
    plain = AESGCM(KEY).decrypt(SALT + p[8:16], p[16:], p[:8])
    pad = plain[-2]
    assert plain[n:n + pad] == bytes(range(1, pad + 1))
    assert r.unprotect(HA1, p)[1:] == ((59 if n == 0 else 135), payload)


def test_buffers_other_than_bytes_are_accepted():
    """bytearray and memoryview packets and payloads work like bytes."""
    s, r = _pair()
    p = s.protect(HA2, 135, bytearray(PAYLOAD))
    assert r.unprotect(HA1, memoryview(p)) == (HA1, 135, PAYLOAD)
    p = s.protect(HA2, 135, memoryview(PAYLOAD))
    assert r.unprotect(HA1, bytearray(p)) == (HA1, 135, PAYLOAD)


def test_outbound_refusals_are_counted_and_consume_nothing():
    """No SA for the peer, a next header out of range, an oversized payload, and a used-up
    sequence space are refused; only the first and last are drops to count."""
    s, _r = _pair()
    with pytest.raises(SecurityError) as e:
        s.protect(STRANGER, 135, PAYLOAD)
    assert e.value.reason == "no-sa"
    with pytest.raises(ValueError):
        s.protect(HA2, 256, PAYLOAD)
    with pytest.raises(ValueError):
        s.protect(HA2, 135, bytes(70000))
    sa = s._out[int(HA2)]  # the SA object, to place its counter at the end of the space
    assert sa.seq == 0
    sa._seq = SEQ_MAX
    with pytest.raises(SecurityError) as e:
        s.protect(HA2, 135, PAYLOAD)
    assert e.value.reason == "seq-exhausted"
    assert _nonzero(s.counters) == {"no-sa": 1, "seq-exhausted": 1}


def test_no_key_material_in_errors_or_reprs():
    """Neither the key nor the salt -- as bytes repr, hex, or decimal octets -- appears in any
    drop's message or repr, nor in the reprs and descriptions of specs, SAs and databases."""
    s, r = _pair()
    p = s.protect(HA2, 135, PAYLOAD)
    texts = []
    for bad, source in ((p[:10], HA1), (b"\0\0\0\1" + p[4:], HA1), (p, STRANGER),
                        (p[:-1] + bytes((p[-1] ^ 1,)), HA1), (_authentic(9, b"\0\0\2\1"), HA1)):
        with pytest.raises(SecurityError) as e:
            r.unprotect(source, bad)
        texts += [str(e.value), repr(e.value), repr(e.value.args)]
    r.unprotect(HA1, p)
    with pytest.raises(SecurityError) as e:
        r.unprotect(HA1, p)
    texts += [str(e.value), repr(e.value)]
    spec = SaSpec(HA2, "out", SPI, KEY, SALT)
    texts += [repr(spec), str(spec), repr(s), repr(r), str(s.describe()), str(r.describe()),
              repr(s._out[int(HA2)]), repr(r._same_spi(SPI)[0]), repr(r.ciphers)]
    secrets = [KEY, SALT]
    needles = []
    for x in secrets:
        needles += [repr(x), x.hex(), x.hex().upper(), str(list(x))]
    for text in texts:
        for needle in needles:
            assert needle not in text, (needle, text)
