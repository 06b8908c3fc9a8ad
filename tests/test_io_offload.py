"""haha.io.offload: completing partial checksums and cutting TUN GSO super-packets, with scapy
as the independent oracle (scapy computes every checksum itself when its field is deleted)."""

import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings, strategies as st
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.packet import Raw

from haha.io import offload
from haha.io.offload import (OffloadError, VNET_HDR, VIRTIO_NET_HDR_F_NEEDS_CSUM,
                             VIRTIO_NET_HDR_GSO_TCPV6, complete_partial_checksum, segments)

HA, COA = "2001:db8:1::1", "2001:db8:20::100"
CN, HOME = "2001:db8:30::5", "2001:db8:1::100"


def _pseudo_sum(src, dst, length, proto):
    """The folded one's complement sum of the IPv6 pseudo-header (RFC 8200 8.1), by a plain
    16-bit word loop (independent of haha.io.offload)."""
    data = IPv6Address(src).packed + IPv6Address(dst).packed + struct.pack("!IxxxB", length, proto)
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _partial(good, start, offset, src, dst, proto):
    """``good`` (a correct packet) as a sender with checksum offload hands it over: the field
    at ``start + offset`` holds only the pseudo-header sum (CHECKSUM_PARTIAL)."""
    out = bytearray(good)
    out[start + offset:start + offset + 2] = _pseudo_sum(
        src, dst, len(good) - start, proto).to_bytes(2, "big")
    return bytes(out)


def _same_checksum(a, b):
    """One's complement has two zeros: 0x0000 and 0xFFFF verify alike (TCP may carry either;
    UDP never 0, RFC 768/8200 8.1)."""
    return a == b or {a, b} == {0, 0xFFFF}


@given(payload=st.binary(min_size=0, max_size=1500), tcp=st.booleans(),
       opts=st.booleans())
@settings(max_examples=150, deadline=None)
def test_completion_matches_scapy_through_a_tunnel(payload, tcp, opts):
    """A tunnelled TCP or UDP packet (IPv6-in-IPv6, optionally with extension headers on both
    layers) whose inner checksum holds only the pseudo-header sum comes out exactly as scapy
    builds it with a computed checksum."""
    upper = TCP(sport=40000, dport=5201, seq=7, flags="PA") if tcp else UDP(sport=40000,
                                                                                dport=5201)
    inner = IPv6(src=CN, dst=HOME)
    outer = IPv6(src=HA, dst=COA)
    if opts:
        inner = inner / IPv6ExtHdrDestOpt()
        outer = outer / IPv6ExtHdrHopByHop()
    good = bytes(outer / inner / upper / Raw(payload))
    parsed = IPv6(good)
    layer = parsed[TCP] if tcp else parsed[UDP]
    start = len(good) - len(bytes(layer))
    offset = 16 if tcp else 6
    partial = _partial(good, start, offset, CN, HOME, 6 if tcp else 17)
    done = complete_partial_checksum(partial)
    assert done is not None
    assert done[:start + offset] == good[:start + offset]
    assert done[start + offset + 2:] == good[start + offset + 2:]
    got = int.from_bytes(done[start + offset:start + offset + 2], "big")
    want = layer.chksum
    assert _same_checksum(got, want) if tcp else got == want


def test_udp_checksum_is_never_zero():
    """A UDP packet whose sum is all ones gets 0xFFFF, never 0 (0 means "no checksum", which
    IPv6 forbids)."""
    base = IPv6(src=CN, dst=HOME) / UDP(sport=1, dport=2, chksum=0) / Raw(b"\0\0")
    raw = bytearray(bytes(base))
    # choose the two payload octets so that the complete sum is 0xFFFF
    pseudo = _pseudo_sum(CN, HOME, 10, 17)
    rest = sum(struct.unpack("!4H", bytes(raw[40:48])))
    total = pseudo + rest
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    raw[48:50] = (0xFFFF - total).to_bytes(2, "big")  # now the sum is exactly 0xFFFF
    partial = _partial(bytes(raw), 40, 6, CN, HOME, 17)
    done = complete_partial_checksum(partial)
    assert done[46:48] == b"\xff\xff"
    want = IPv6(done)[UDP].copy()
    del want.chksum
    assert IPv6(bytes(IPv6(src=CN, dst=HOME) / want))[UDP].chksum == 0xFFFF


@pytest.mark.parametrize("packet", [
    b"",
    bytes(IPv6(src=CN, dst=HOME, nh=58) / Raw(bytes(8))),          # ICMPv6: not TCP/UDP
    bytes(IPv6(src=CN, dst=HOME) / UDP())[:45],                      # cut short
    bytes(IPv6(src=HA, dst=COA) / IPv6(src=CN, dst=HOME) / UDP())[:70],
    b"\x45" + bytes(60),                                             # IPv4
    bytes(IPv6(src=CN, dst=HOME, nh=44) / Raw(bytes(16))),          # a fragment
])
def test_nothing_to_complete_gives_none(packet):
    """A packet without a TCP/UDP header that fits is left alone: None, nothing guessed."""
    assert complete_partial_checksum(packet) is None


def _vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, start=0, offset=0):
    return VNET_HDR.pack(flags, gso_type, hdr_len, gso_size, start, offset)


def test_segments_without_offload_pass_the_packet_unchanged():
    """A TUN read without NEEDS_CSUM or GSO is the packet after the 10-octet header."""
    p = bytes(IPv6(src=HOME, dst=CN) / UDP() / Raw(b"abc"))
    assert segments(_vnet() + p) == [p]


def test_segments_complete_a_partial_checksum():
    """NEEDS_CSUM with csum_start/csum_offset: the checksum scapy computes is filled in."""
    good = bytes(IPv6(src=HOME, dst=CN) / UDP(sport=9, dport=10) / Raw(b"hello world"))
    partial = _partial(good, 40, 6, HOME, CN, 17)
    out = segments(_vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 40, 6) + partial)
    assert out == [good]


@pytest.mark.parametrize("size,mss,flags", [(5000, 1388, "PA"), (1388 * 3, 1388, "FPA"),
                                              (1000, 1388, "PA"), (4097, 1000, "CEPA")])
def test_gso_super_packet_cut_into_valid_segments(size, mss, flags):
    """A TCPv6 GSO super-packet (as a TUN with TUNSETOFFLOAD hands it over: checksum field with
    the pseudo-header sum of the whole) becomes segments of ``gso_size`` payload octets with
    consecutive sequence numbers, headers (options included) repeated, Payload Length right,
    FIN/PSH only on the last and CWR only on the first, each checksum as scapy computes it."""
    payload = bytes(range(256)) * (size // 256 + 1)
    payload = payload[:size]
    tcp = TCP(sport=5201, dport=40000, seq=0xFFFFF000, ack=99, flags=flags,
              options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
    big = bytes(IPv6(src=HOME, dst=CN, hlim=63) / tcp / Raw(payload))
    head = 40 + 32
    partial = _partial(big, 40, 16, HOME, CN, 6)
    frame = _vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, head, mss, 40, 16)
    out = segments(frame + partial)
    assert len(out) == -(-size // mss)
    got = b""
    seq = 0xFFFFF000
    for i, seg in enumerate(out):
        p = IPv6(seg)
        assert p.plen == len(seg) - 40 and p.hlim == 63
        t = p[TCP]
        data = bytes(t.payload)
        assert len(data) == min(mss, size - i * mss)
        assert t.seq == seq and t.ack == 99
        assert t.options == tcp.options
        last, first = i == len(out) - 1, i == 0
        assert ("F" in str(t.flags)) == ("F" in flags and last)
        assert ("P" in str(t.flags)) == ("P" in flags and last)
        assert ("C" in str(t.flags)) == ("C" in flags and first)
        assert "E" in str(t.flags) and "A" in str(t.flags) if "E" in flags else True
        want = TCP(bytes(t))
        del want.chksum
        want = IPv6(bytes(IPv6(src=HOME, dst=CN, hlim=63) / want))[TCP].chksum
        assert _same_checksum(t.chksum, want), i
        got += data
        seq = (seq + len(data)) & 0xFFFFFFFF
    assert got == payload


def test_gso_super_packet_with_extension_header():
    """Segments of a super-packet with a Destination Options header in front of TCP count it
    in the Payload Length and keep it in every segment."""
    payload = bytes(3000)
    big = bytes(IPv6(src=HOME, dst=CN) / IPv6ExtHdrDestOpt() / TCP(flags="A") / Raw(payload))
    partial = _partial(big, 48, 16, HOME, CN, 6)
    out = segments(_vnet(VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV6, 68, 1400, 48,
                         16) + partial)
    assert [len(s) for s in out] == [68 + 1400, 68 + 1400, 68 + 200]
    for seg in out:
        p = IPv6(seg)
        assert p.plen == len(seg) - 40 and IPv6ExtHdrDestOpt in p
        want = p[TCP].copy()
        del want.chksum
        assert _same_checksum(p[TCP].chksum, IPv6(bytes(
            IPv6(src=HOME, dst=CN) / IPv6ExtHdrDestOpt() / want))[TCP].chksum)


@pytest.mark.parametrize("frame", [
    b"\x01\x04",                                                        # shorter than the header
    _vnet(1, 0, 0, 0, 40, 6) + bytes(44),                               # checksum beyond the end
    _vnet(1, offload.VIRTIO_NET_HDR_GSO_UDP_L4, 48, 1000, 40, 6) + bytes(3000),  # not TCPv6
    _vnet(0, VIRTIO_NET_HDR_GSO_TCPV6, 60, 1000, 40, 16) + bytes(3000),  # no NEEDS_CSUM
    _vnet(1, VIRTIO_NET_HDR_GSO_TCPV6, 60, 0, 40, 16) + bytes(3000),     # gso_size 0
    _vnet(1, VIRTIO_NET_HDR_GSO_TCPV6, 60, 1000, 40, 16) + bytes(50),    # TCP header cut short
])
def test_bad_virtio_headers_are_refused(frame):
    """A virtio_net_hdr that does not fit its packet raises OffloadError (the caller counts
    and drops it)."""
    with pytest.raises(OffloadError):
        segments(frame)


def test_auxdata_status():
    """auxdata_status reads tp_status from the PACKET_AUXDATA control message only."""
    aux = struct.pack("=IIIHHHH", offload.TP_STATUS_CSUMNOTREADY | 1, 100, 100, 0, 0, 0, 0)
    assert offload.auxdata_status([(263, 8, aux)]) == offload.TP_STATUS_CSUMNOTREADY | 1
    assert offload.auxdata_status([(41, 8, aux)]) == 0
    assert offload.auxdata_status([]) == 0
