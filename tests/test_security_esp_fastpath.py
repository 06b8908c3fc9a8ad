"""The ESP fast path (tables, slices counted from the end, the integer anti-replay bitmap) gives
exactly the verdicts of the rules written out plainly: RFC 4303 2.4 padding, RFC 4303 3.4.3
anti-replay, and the minimal trailer for every next header and payload length."""

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from haha.security import SecurityError
from haha.security.esp import InboundSA, OutboundSA

KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
SALT = bytes.fromhex("a1a2a3a4")
SPI = 0x00C0FFEE
AEAD = AESGCM(KEY)


def _authentic(seq, plaintext):
    """An authentic ESP packet carrying ``plaintext`` as is (any trailer, well-formed or not)."""
    head = struct.pack("!II", SPI, seq)
    iv = struct.pack("!Q", seq ^ 0x5A5A)
    return head + iv + AEAD.encrypt(SALT + iv, plaintext, head)


def _rfc_trailer(plain):
    """RFC 4303 2.4, written out: ``(next_header, payload)`` or None for bad padding."""
    pad = plain[len(plain) - 2]
    end = len(plain) - 2 - pad
    if end < 0 or plain[end:len(plain) - 2] != bytes(range(1, pad + 1)):
        return None
    return plain[len(plain) - 1], plain[:end]


@st.composite
def _plaintexts(draw):
    """Mostly well-formed trailers (any pad length 0-255), some with one octet changed, some
    arbitrary bytes; the plaintext always holds at least Pad Length and Next Header."""
    kind = draw(st.sampled_from(["good", "spoilt", "raw"]))
    if kind == "raw":
        return draw(st.binary(min_size=2, max_size=300))
    payload = draw(st.binary(max_size=40))
    pad = draw(st.integers(0, 255))
    plain = payload + bytes(range(1, pad + 1)) + bytes((pad, draw(st.integers(0, 255))))
    if kind == "spoilt":
        i = draw(st.integers(0, len(plain) - 1))
        plain = plain[:i] + bytes(((plain[i] + draw(st.integers(1, 255))) & 0xFF,)) + plain[i + 1:]
    return plain


@settings(max_examples=400, deadline=None)
@given(plain=_plaintexts())
def test_padding_verdict_is_the_rfc_rule(plain):
    """An authentic packet is accepted exactly when its padding is 1, 2, 3, ... and its Pad
    Length fits in the plaintext, and then yields the next header and payload the rule gives;
    otherwise it is dropped as bad padding."""
    sa = InboundSA(SPI, KEY, SALT)
    expected = _rfc_trailer(plain)
    if expected is None:
        with pytest.raises(SecurityError) as e:
            sa.open(_authentic(7, plain))
        assert e.value.reason == "bad-padding"
    else:
        assert sa.open(_authentic(7, plain)) == (*expected, 7)


@st.composite
def _streams(draw):
    """A window and a list of steps: ``("at", n)`` is sequence number n, ``("by", k)`` is the
    top plus k (often right at the window's edges)."""
    window = draw(st.sampled_from([64, 65, 128]))
    edge = st.sampled_from([-window - 1, -window, -window + 1, -1, 0, 1, window - 1, window,
                            window + 1])
    step = st.one_of(st.tuples(st.just("at"), st.integers(0, 300)),
                     st.tuples(st.just("by"), st.one_of(edge, st.integers(-200, 200))))
    return window, draw(st.lists(step, max_size=60))


@settings(max_examples=300, deadline=None)
@given(stream=_streams())
def test_anti_replay_verdicts_match_a_set_of_received_numbers(stream):
    """A stream of authentic packets (repeats, reordering, jumps past the window, numbers
    just inside and just left of it) gets, packet by packet, the verdict of RFC 4303 3.4.3
    kept as a plain set: too old left of the window, replay for a number already received
    (0 counts as received), else accepted."""
    window, steps = stream
    sa = InboundSA(SPI, KEY, SALT, replay_window=window)
    received, top = {0}, 0
    for how, n in steps:
        seq = n if how == "at" else max(0, top + n)
        if seq <= top and top - seq >= window:
            expected = "too-old"
        elif seq in received:
            expected = "replay"
        else:
            expected = "ok"
            received.add(seq)
            top = max(top, seq)
        try:
            sa.open(_authentic(seq, b"x\x01\x02\x02\x87"))
            got = "ok"
        except SecurityError as e:
            got = e.reason
        assert got == expected, (seq, top)
    assert sa.top == top


def test_every_next_header_and_length_gets_the_minimal_trailer():
    """For all 256 next headers and payload lengths 0-7 the plaintext is payload, padding
    1, 2, 3, ... to the next multiple of 4, Pad Length, Next Header (RFC 4303 2.4)."""
    sa = OutboundSA(SPI, KEY, SALT)
    for nh in range(256):
        for n in range(8):
            payload = bytes(range(100, 100 + n))
            esp = sa.seal(nh, payload)
            plain = AEAD.decrypt(SALT + esp[8:16], esp[16:], esp[:8])
            pad = (-(n + 2)) % 4
            assert plain == payload + bytes(range(1, pad + 1)) + bytes((pad, nh)), (nh, n)


@pytest.mark.parametrize("nh", [-1, -256, -257, 256, 511, 1 << 40])
def test_next_header_out_of_range_is_refused_and_consumes_nothing(nh):
    """Negative and too large next headers are refused with ValueError (never looked up in a
    table from the end) and use no sequence number."""
    sa = OutboundSA(SPI, KEY, SALT)
    with pytest.raises(ValueError):
        sa.seal(nh, b"payload")
    assert sa.seq == 0
