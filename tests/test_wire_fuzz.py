"""Fuzzing: whatever the octets, the decoders raise WireError or return a value, nothing else.

Random bytes, bit flips, corrupted length fields and inserted options are fed to decode_mh,
decode_icmpv6 and parse_packet. Most mutations are decoded with the checksum check off (after a
mutation the checksum would reject nearly everything before the interesting code runs), and
with Header Len and Payload Length made consistent again so the inner length checks are the
ones exercised.
"""

import importlib.util
import os
from ipaddress import IPv6Address

from hypothesis import given, settings
from hypothesis import strategies as st

from haha.wire import WireError
from haha.wire.errors import REASONS
from haha.wire.icmpv6 import decode_icmpv6
from haha.wire.ipv6 import parse_packet
from haha.wire.mh import decode_mh

_spec = importlib.util.spec_from_file_location(
    "golden", os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "golden.py")
)
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

VECTORS = golden.load_all()
MH = [v for v in VECTORS if v.kind == "mh"]
ICMP = [v for v in VECTORS if v.kind == "icmpv6"]
PACKETS = [v for v in VECTORS if v.kind == "packet"]
SRC = IPv6Address("2001:db8::1")
DST = IPv6Address("2001:db8::2")


def only_wire_errors(decode, data, *args, **kwargs):
    """Run a decoder; a WireError (with a known reason) is fine, anything else fails the test."""
    try:
        return decode(data, *args, **kwargs)
    except WireError as e:
        assert e.reason in REASONS
        return None


def deep_mh(v, data):
    """Decode a mutated MH with its Header Len fixed to its length and no checksum check."""
    data = bytearray(data)
    data += bytes(-len(data) % 8)  # zero octets are Pad1s
    if len(data) >= 8:
        data[1] = min(len(data) // 8 - 1, 255)
    return only_wire_errors(decode_mh, bytes(data), v.src, v.dst, v.profile,
                            verify_checksum=False)


def deep_packet(data):
    """Parse a mutated packet with its Payload Length fixed, then decode what it carries."""
    data = bytearray(data)
    if len(data) >= 40:
        data[4:6] = min(len(data) - 40, 0xFFFF).to_bytes(2, "big")
    p = only_wire_errors(parse_packet, bytes(data))
    if p is not None:
        if p.next_header == 135:
            only_wire_errors(decode_mh, p.payload, p.source, p.destination,
                             verify_checksum=False)
        elif p.next_header == 58:
            only_wire_errors(decode_icmpv6, p.payload, p.source, p.destination,
                             verify_checksum=False)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes(data, verify):
    """Random octets, with and without checksum verification, raise nothing but WireError."""
    only_wire_errors(decode_mh, data, SRC, DST, verify_checksum=verify)
    only_wire_errors(decode_icmpv6, data, SRC, DST, verify_checksum=verify)
    only_wire_errors(parse_packet, data)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=2, max_size=300), st.sampled_from([0, 5, 6, 7, 12, 200, 201, 202,
                                                               203, 204, 99]))
def test_random_bodies_behind_a_valid_header(body, mh_type):
    """A consistent MH header (Header Len right) of each type followed by random octets reaches
    the per-type decoders, which raise nothing but WireError."""
    data = bytearray(bytes((59, 0, mh_type, 0, 0, 0)) + body)
    deep_mh(MH[0], data[:2] + bytes((mh_type,)) + data[3:])


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MH), st.integers(0, 10_000), st.integers(0, 7))
def test_single_bit_flip_is_always_refused(v, pos, bit):
    """A single flipped bit anywhere in a valid Mobility Header is always refused with
    WireError (the ones' complement checksum catches every single-bit error)."""
    data = bytearray(v.raw)
    data[pos % len(data)] ^= 1 << bit
    assert only_wire_errors(decode_mh, bytes(data), v.src, v.dst, v.profile) is None


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MH), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)),
                                     min_size=1, max_size=8))
def test_bit_flips_in_mobility_headers(v, flips):
    """Flipping several bits anywhere in a valid Mobility Header raises nothing but WireError,
    with the checksum check on and (Header Len kept consistent) off."""
    data = bytearray(v.raw)
    for pos, bit in flips:
        data[pos % len(data)] ^= 1 << bit
    only_wire_errors(decode_mh, bytes(data), v.src, v.dst, v.profile)
    deep_mh(v, data)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MH), st.data())
def test_corrupted_option_lengths(v, data):
    """Overwriting any octet of the options area (type and length octets included) with any
    value raises nothing but WireError."""
    raw = bytearray(v.raw)
    start = 8 if len(raw) > 8 else 6
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(start, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    deep_mh(v, raw)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MH), st.integers(0, 255), st.integers(0, 300), st.binary(max_size=40))
def test_header_len_and_truncation(v, header_len, cut, extra):
    """Any Header Len over any amount of data (cut short or extended) raises nothing but
    WireError; a Header Len that disagrees with the data is always refused."""
    data = bytearray(v.raw[: max(cut, 0)] + extra)
    if len(data) >= 2:
        data[1] = header_len
        result = only_wire_errors(decode_mh, bytes(data), v.src, v.dst, v.profile,
                                  verify_checksum=False)
        if (header_len + 1) * 8 != len(data):
            assert result is None
    else:
        assert only_wire_errors(decode_mh, bytes(data), v.src, v.dst) is None


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(MH), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=40),
       st.integers(0, 64))
def test_inserted_options(v, otype, olen, odata, where):
    """An option TLV (any type, any length octet, any data) inserted anywhere after the fixed
    part raises nothing but WireError."""
    raw = bytearray(v.raw)
    at = 6 + (where % max(len(raw) - 6, 1))
    raw[at:at] = bytes((otype, olen)) + odata
    deep_mh(v, raw)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ICMP), st.data())
def test_mutated_icmpv6(v, data):
    """Overwritten octets, cut or appended data in ICMPv6 messages raise nothing but WireError,
    with and without checksum verification."""
    raw = bytearray(v.raw)
    for _ in range(data.draw(st.integers(0, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=24))
    only_wire_errors(decode_icmpv6, bytes(raw), v.src, v.dst)
    only_wire_errors(decode_icmpv6, bytes(raw), v.src, v.dst, verify_checksum=False)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(PACKETS), st.data())
def test_mutated_packets(v, data):
    """Mutated packets (extension header lengths, next headers, routing types and segments
    left included) raise nothing but WireError from parse_packet or the upper-layer decoder."""
    raw = bytearray(v.raw)
    for _ in range(data.draw(st.integers(1, 5))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    only_wire_errors(parse_packet, bytes(raw))
    deep_packet(raw)
