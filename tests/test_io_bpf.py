"""The classic BPF assembler, interpreter and mobility filter of haha.io.bpf (pure, tier 1).

The filter is checked against an independent statement of what it must accept (a plain
extension-header walk written here); the kernel agrees with the interpreter in
test_io_raw_netns.py.
"""

from ipaddress import IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from haha.io import bpf
from haha.wire.ipv6 import build_packet

A = IPv6Address("2001:db8::1")
B = IPv6Address("2001:db8::2")


def _want(packet, icmp_types=bpf.DEFAULT_ICMP_TYPES, addresses=None, max_headers=4,
          pkttype=bpf.PACKET_HOST):
    """What the filter must decide, stated without BPF."""
    if pkttype == bpf.PACKET_OUTGOING or len(packet) < 40 or packet[0] >> 4 != 6:
        return False
    if addresses is not None:
        dst = IPv6Address(bytes(packet[24:40]))
        if not dst.is_multicast and dst not in addresses:
            return False
    nh, pos = packet[6], 40
    for walked in range(max_headers + 1):
        if nh in (41, 50, 135):
            return True
        if nh == 58:
            return pos < len(packet) and packet[pos] in icmp_types
        if nh not in (0, 43, 60) or walked == max_headers:
            return False
        if pos + 2 > len(packet):
            return False
        nh, pos = packet[pos], pos + (packet[pos + 1] + 1) * 8
    return False


def test_assembler_resolves_labels_and_refuses_bad_jumps():
    """Forward labels become relative offsets; an undefined label, a backward jump, a label
    defined twice and a conditional jump beyond 255 instructions are errors."""
    a = bpf.Assembler()
    a.ld_abs(0, bpf.B).jeq(1, "yes", "no").label("yes").ret(1).label("no").ret(0)
    prog = a.assemble()
    assert prog[1] == bpf.Insn(bpf.JMP | bpf.JEQ, 0, 1, 1)
    assert bpf.run(prog, b"\x01") == 1 and bpf.run(prog, b"\x02") == 0
    with pytest.raises(bpf.BpfError, match="undefined label"):
        bpf.Assembler().jeq(1, "nowhere").assemble()
    b = bpf.Assembler().label("top").ret(0)
    b.ja("top")
    with pytest.raises(bpf.BpfError, match="backward"):
        b.assemble()
    with pytest.raises(bpf.BpfError, match="twice"):
        bpf.Assembler().label("x").label("x")
    far = bpf.Assembler().jeq(1, "end")
    for _ in range(300):
        far.ret(0)
    far.label("end").ret(1)
    with pytest.raises(bpf.BpfError, match="spans"):
        far.assemble()


def test_pack_round_trip_and_layout():
    """pack() lays out struct sock_filter (8 octets each) and unpack() inverts it."""
    prog = bpf.mobility_filter()
    data = bpf.pack(prog)
    assert len(data) == 8 * len(prog)
    assert bpf.unpack(data) == prog
    with pytest.raises(bpf.BpfError):
        bpf.unpack(data[:-1])


def test_interpreter_semantics():
    """Loads past the end, division by zero end the program with 0; ALU, MEM, X and the
    PKTTYPE ancillary load behave as the kernel's."""
    a = bpf.Assembler()
    a.ld_ancillary(bpf.SKF_AD_PKTTYPE).st(3).ldx_imm(2).ld_ind(0, bpf.H).alu(bpf.ADD, 1)
    a.alu_x(bpf.ADD).alu(bpf.LSH, 4).alu(bpf.RSH, 2).tax().ld_mem(3).alu_x(bpf.OR)
    a._emit(bpf.RET | bpf.RET_A)
    prog = a.assemble()
    # pkttype 1; H at offset 2 = 0x0102 -> +1 +2 = 0x105 -> <<4 >>2 = 0x414 -> X; A = 1 | X
    assert bpf.run(prog, b"\x00\x00\x01\x02", pkttype=1) == 0x415
    assert bpf.run(prog, b"\x00\x00\x01") == 0  # H load past the end
    d = bpf.Assembler().ld_abs(0, bpf.B).alu(bpf.DIV, 0).ret(1).assemble()
    assert bpf.run(d, b"\x05") == 0


@pytest.mark.parametrize("nh,payload,ok", [
    (135, bytes(16), True), (50, bytes(16), True), (41, bytes(40), True),
    (17, bytes(8), False), (6, bytes(20), False), (59, b"", False),
    (58, bytes((134,)) + bytes(15), True), (58, bytes((145,)) + bytes(7), True),
    (58, bytes((128,)) + bytes(7), False), (58, bytes((135,)) + bytes(23), False),
])
def test_filter_upper_layers(nh, payload, ok):
    """MH, ESP, IPv6-in-IPv6 and the default ICMPv6 types pass; other upper layers do not."""
    assert bool(bpf.run(bpf.mobility_filter(), build_packet(A, B, nh, payload))) is ok


def test_filter_hao_rh2_and_options():
    """A Binding Update behind a Home Address option and a Binding Acknowledgement behind a
    type 2 routing header pass; NS/NA pass only with the proxy-ND types; our own outgoing copies
    never pass; a non-IPv6 frame never passes."""
    bu = build_packet(A, B, 135, bytes(16), home_address=IPv6Address("2001:db8:1::5"))
    ba = build_packet(A, B, 135, bytes(16), routing_address=IPv6Address("2001:db8:1::5"))
    prog = bpf.mobility_filter()
    assert bpf.run(prog, bu) == bpf.ACCEPT_ALL and bpf.run(prog, ba) == bpf.ACCEPT_ALL
    assert bpf.run(prog, bu, bpf.PACKET_OUTGOING) == 0
    ns = build_packet(A, B, 58, bytes((135,)) + bytes(23))
    assert bpf.run(prog, ns) == 0
    assert bpf.run(bpf.mobility_filter(bpf.DEFAULT_ICMP_TYPES | bpf.ND_ICMP_TYPES), ns)
    assert bpf.run(prog, b"\x45" + bytes(60)) == 0


def test_filter_addresses():
    """With addresses, only those destinations and multicast pass; many addresses still
    assemble (every jump stays short)."""
    others = [IPv6Address(f"2001:db8::{i:x}") for i in range(100, 160)]
    prog = bpf.mobility_filter(addresses=[B] + others)
    assert bpf.run(prog, build_packet(A, B, 135, bytes(16)))
    assert bpf.run(prog, build_packet(A, others[-1], 135, bytes(16)))
    assert not bpf.run(prog, build_packet(B, A, 135, bytes(16)))
    ra = build_packet(A, IPv6Address("ff02::1"), 58, bytes((134,)) + bytes(15))
    assert bpf.run(prog, ra)
    with pytest.raises(bpf.BpfError):
        bpf.mobility_filter(max_headers=0)
    with pytest.raises(bpf.BpfError):
        bpf.mobility_filter(icmp_types={300})


_ext_kinds = st.sampled_from([0, 43, 60, 44, 51, 17])
_chain = st.lists(st.tuples(_ext_kinds, st.integers(0, 3)), max_size=7)


@st.composite
def _packets(draw):
    """IPv6 packets with random extension-header chains, upper layers, destinations, and
    sometimes cut short."""
    upper = draw(st.sampled_from([135, 50, 41, 58, 17, 6, 59]))
    body = bytes((draw(st.sampled_from([134, 128, 144, 147, 135, 1])),)) + bytes(15)
    nh, payload = upper, body
    for kind, length in reversed(draw(_chain)):
        payload = bytes((nh, length)) + bytes(6 + 8 * length) + payload
        nh = kind
    dst = draw(st.sampled_from([B, A, IPv6Address("ff02::1")]))
    pkt = build_packet(A, dst, nh, payload)
    cut = draw(st.integers(0, len(pkt)))
    return pkt if draw(st.booleans()) else pkt[:cut]


@settings(max_examples=400, deadline=None)
@given(_packets(), st.sampled_from([bpf.PACKET_HOST, bpf.PACKET_MULTICAST, bpf.PACKET_OUTGOING]),
       st.booleans(), st.integers(1, 6))
def test_filter_matches_its_specification(packet, pkttype, restrict, max_headers):
    """For any header chain, truncation, destination and packet type, the program accepts
    exactly what the plain specification above accepts."""
    addresses = {B} if restrict else None
    prog = bpf.mobility_filter(addresses=addresses, max_headers=max_headers)
    got = bool(bpf.run(prog, packet, pkttype))
    assert got == _want(packet, addresses=addresses, max_headers=max_headers, pkttype=pkttype)
