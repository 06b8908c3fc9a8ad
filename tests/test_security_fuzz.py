"""Fuzzing the inbound path as a home agent runs it: ESP unprotect, then the Mobility Header
decoder on what comes out. Whatever the bytes -- random, mutated from a valid packet, or
authentic (correctly encrypted with the right key) but with arbitrary plaintext and trailer --
only SecurityError or WireError may come out, and a packet is either dropped or decoded."""

import struct
from ipaddress import IPv6Address

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from haha.security import SaSpec, SecurityAssociationDatabase, SecurityError
from haha.wire.errors import WireError
from haha.wire.mh import BindingInfoUpdate, BindingUpdate, HaHello, decode_mh, encode_mh
from haha.wire.numbers import IPPROTO_MH
from haha.wire.options import BceInfo

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")
KEY = bytes(range(100, 116))
SALT = b"salt"
SPI = 0x00001000

VALID = [
    encode_mh(BindingUpdate(1, 0xC000, 100), HA2, HA1),
    encode_mh(HaHello(3, 0, 1800, 5, 64, HA2), HA2, HA1),
    encode_mh(BindingInfoUpdate(7, (BceInfo(IPv6Address("2001:db8:100::1"), HA2, 0xC000, 9, 60),)),
              HA2, HA1),
]


def _receiver():
    return SecurityAssociationDatabase.from_specs([SaSpec(HA2, "in", SPI, KEY, SALT)])


def _sender():
    return SecurityAssociationDatabase.from_specs([SaSpec(HA1, "out", SPI, KEY, SALT)])


def inbound(db, source, esp):
    """The home agent's inbound path: ESP, then MH. Returns the message or None (not MH)."""
    peer, next_header, payload = db.unprotect(source, esp)
    if next_header == IPPROTO_MH:
        return decode_mh(payload, source, HA1)
    return None


def _survives(db, source, esp):
    try:
        inbound(db, source, esp)
    except (SecurityError, WireError):
        pass


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=200), source=st.sampled_from([HA2, HA1]))
def test_random_bytes(data, source):
    """Random bytes, with and without a known SPI in front."""
    db = _receiver()
    _survives(db, source, data)
    _survives(db, source, struct.pack("!I", SPI) + data)


@settings(max_examples=500, deadline=None)
@given(which=st.integers(0, len(VALID) - 1), flips=st.lists(st.tuples(st.integers(0, 10**6),
       st.integers(0, 7)), max_size=4), cut=st.integers(0, 10**6), extra=st.binary(max_size=8))
def test_mutated_valid_packets(which, flips, cut, extra):
    """A valid protected HAHA/BU packet with bits flipped, cut short or extended: dropped with
    a SecurityError, or (untouched) decoded to the message sent."""
    db = _receiver()
    good = _sender().protect(HA1, IPPROTO_MH, VALID[which])
    bad = bytearray(good)
    for pos, bit in flips:
        bad[pos % len(bad)] ^= 1 << bit
    bad = bytes(bad[: len(bad) - cut % 4]) + (extra if cut % 3 == 0 else b"")
    try:
        msg = inbound(db, HA2, bad)
    except SecurityError:
        return
    assert bad == good
    assert msg == decode_mh(VALID[which], HA2, HA1)


@settings(max_examples=500, deadline=None)
@given(plain=st.binary(min_size=0, max_size=300), seq=st.integers(0, 2**32 - 1),
       trailer=st.one_of(st.none(), st.tuples(st.integers(0, 255), st.integers(0, 255))))
def test_authentic_packets_with_arbitrary_plaintext(plain, seq, trailer):
    """Correctly authenticated packets whose plaintext is arbitrary (any padding, pad length,
    next header, any MH bytes): only SecurityError (padding, replay) or WireError (the MH
    decoder) may come out."""
    if trailer is not None:
        plain = plain + bytes(trailer)
    head = struct.pack("!II", SPI, seq)
    iv = struct.pack("!Q", seq)
    esp = head + iv + AESGCM(KEY).encrypt(SALT + iv, plain, head)
    _survives(_receiver(), HA2, esp)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_any_upper_layer_round_trips(payload):
    """Whatever upper-layer bytes are protected come back unchanged; as MH they decode or are
    refused by the MH decoder with a WireError."""
    db = _receiver()
    esp = _sender().protect(HA1, IPPROTO_MH, payload)
    assert db.unprotect(HA2, esp) == (HA2, IPPROTO_MH, payload)
    try:
        decode_mh(payload, HA2, HA1)
    except WireError:
        pass
