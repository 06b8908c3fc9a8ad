"""Interoperability with scapy, an independent implementation (a test dependency only).

Our packets are dissected by scapy to the same field values, and scapy, asked to recompute every
length and checksum of the packet it dissected, produces our octets again (same padding, same
pseudo-header choice for the Home Address option and type 2 routing header). Packets built by
scapy decode with haha.wire to the same values.

scapy's classes (scapy.layers.inet6): IPv6ExtHdrDestOpt + HAO, IPv6ExtHdrRouting(type=2),
MIP6MH_BRR/BU/BA/BE, MIP6OptAltCoA, MIP6OptBRAdvice, MIP6OptMobNetPrefix,
ICMPv6HAADRequest/Reply. Its BU flags field is the 7 bits "PRMKLHA" from the least significant
(so A is 0x40 of it, our 0x8000), its BA flags the 3 bits "PRK".
"""

from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers import inet6 as S

from haha.wire.icmpv6 import DhaadReply, DhaadRequest, decode_icmpv6, encode_icmpv6
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import (
    BA_K,
    BA_R,
    BU_A,
    BU_H,
    BU_R,
    BindingAck,
    BindingError,
    BindingRefreshRequest,
    BindingUpdate,
    decode_mh,
    encode_mh,
)
from haha.wire.options import AlternateCareOfAddress, BindingRefreshAdvice, MobileNetworkPrefix

HA = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:5::1")
HOA = IPv6Address("2001:db8:1::100")
COA = IPv6Address("2001:db8:2::5")
MNP = IPv6Network("2001:db8:100::/48")
ANYCAST = IPv6Address("2001:db8:1::fdff:ffff:ffff:fffe")


def real_options(layer):
    """A scapy option list without its Pad1/PadN."""
    return [o for o in layer.options if not isinstance(o, (S.Pad1, S.PadN))]


def rebuilt_by_scapy(pkt):
    """scapy's own octets for a dissected packet, every checksum and length recomputed.

    The Destination Options header keeps only its HAO: scapy re-pads it itself, and looks
    for a Home Address option only in a header holding nothing else.
    """
    pkt = pkt.copy()
    layer = pkt
    while layer:
        for name in ("cksum", "len", "plen"):
            if name in layer.fields:
                setattr(layer, name, None)  # through setattr: drops scapy's cached raw octets
        if isinstance(layer, S.IPv6ExtHdrDestOpt):
            layer.options = [o for o in layer.options if isinstance(o, S.HAO)]
        layer = layer.payload if layer.payload else None
    return bytes(pkt)


def ours_bu_with_hao():
    bu = BindingUpdate(0x1234, BU_A | BU_H | BU_R, 150,
                       (AlternateCareOfAddress(COA), MobileNetworkPrefix(MNP)))
    return bu, build_packet(COA, HA, 135, encode_mh(bu, HOA, HA), home_address=HOA)


def test_scapy_reads_our_binding_update_home_address_option_and_mnp():
    """scapy dissects our BU (with HAO and an MNP option) to the same sequence, flags, lifetime,
    home address, alternate care-of address and prefix."""
    bu, raw = ours_bu_with_hao()
    p = S.IPv6(raw)
    assert p[S.HAO].hoa == str(HOA) and p[S.HAO].otype == 0xC9
    m = p[S.MIP6MH_BU]
    assert (m.seq, int(m.flags), m.mhtime) == (0x1234, bu.flags >> 9, 150)
    alt, mnp = real_options(m)
    assert isinstance(alt, S.MIP6OptAltCoA) and alt.acoa == str(COA)
    assert isinstance(mnp, S.MIP6OptMobNetPrefix)
    assert (mnp.plen, mnp.prefix) == (48, str(MNP.network_address))


def test_scapy_recomputes_our_binding_update_bytes_and_checksum():
    """scapy, recomputing lengths, padding and the checksum (from the home address) of our BU
    packet, produces exactly our octets."""
    _, raw = ours_bu_with_hao()
    assert rebuilt_by_scapy(S.IPv6(raw)).hex() == raw.hex()


def test_scapy_reads_and_recomputes_our_binding_ack_with_routing_header():
    """Our BA behind a type 2 routing header: scapy reads the same status, K/R flags, sequence,
    lifetime, refresh advice and home address, and recomputes our octets (checksum to the
    home address)."""
    ba = BindingAck(0, 0x1234, 150, BA_K | BA_R, (BindingRefreshAdvice(140),))
    raw = build_packet(HA, COA, 135, encode_mh(ba, HA, HOA), routing_address=HOA)
    p = S.IPv6(raw)
    rh = p[S.IPv6ExtHdrRouting]
    assert (rh.type, rh.segleft, rh.addresses) == (2, 1, [str(HOA)])
    m = p[S.MIP6MH_BA]
    assert (m.status, int(m.flags), m.seq, m.mhtime) == (0, ba.flags >> 5, 0x1234, 150)
    (bra,) = real_options(m)
    assert isinstance(bra, S.MIP6OptBRAdvice) and bra.rinter == 140
    assert rebuilt_by_scapy(p).hex() == raw.hex()


@pytest.mark.parametrize("status", [0, 1, 128, 135, 139, 140, 141, 142, 143])
def test_scapy_reads_our_binding_ack_statuses(status):
    """Each BA status, the NEMO ones 140-143 included, reads the same in scapy."""
    raw = build_packet(HA, COA, 135, encode_mh(BindingAck(status, 9), HA, COA))
    assert S.IPv6(raw)[S.MIP6MH_BA].status == status


def test_scapy_reads_and_recomputes_our_binding_error_and_refresh_request():
    """Our BE and BRR: same status and home address in scapy, and the same octets when scapy
    recomputes them."""
    raw = build_packet(HA, COA, 135, encode_mh(BindingError(2, HOA), HA, COA))
    p = S.IPv6(raw)
    assert (p[S.MIP6MH_BE].status, p[S.MIP6MH_BE].ha) == (2, str(HOA))
    assert rebuilt_by_scapy(p).hex() == raw.hex()
    raw = build_packet(HA, HOA, 135, encode_mh(BindingRefreshRequest(), HA, HOA))
    p = S.IPv6(raw)
    assert p.haslayer(S.MIP6MH_BRR) and p[S.MIP6MH_BRR].mhtype == 0
    assert rebuilt_by_scapy(p).hex() == raw.hex()


@pytest.mark.parametrize("mobile_router", [False, True])
def test_scapy_reads_and_recomputes_our_dhaad(mobile_router):
    """Our DHAAD request and reply: same identifier, R flag (RFC 3963 7.1/7.2) and addresses in
    scapy, and the same octets (ICMPv6 checksum) when scapy recomputes them."""
    raw = build_packet(COA, ANYCAST, 58,
                       encode_icmpv6(DhaadRequest(0x77, mobile_router), COA, ANYCAST))
    p = S.IPv6(raw)
    assert (p[S.ICMPv6HAADRequest].id, p[S.ICMPv6HAADRequest].R) == (0x77, int(mobile_router))
    assert rebuilt_by_scapy(p).hex() == raw.hex()
    reply = DhaadReply(0x77, (HA, HA2), mobile_router)
    raw = build_packet(HA, COA, 58, encode_icmpv6(reply, HA, COA))
    p = S.IPv6(raw)
    r = p[S.ICMPv6HAADReply]
    assert (r.id, r.R, r.addresses) == (0x77, int(mobile_router), [str(HA), str(HA2)])
    assert rebuilt_by_scapy(p).hex() == raw.hex()


def _ours(raw):
    p = parse_packet(raw)
    if p.next_header == 58:
        return p, decode_icmpv6(p.payload, p.source, p.destination)
    return p, decode_mh(p.payload, p.source, p.destination)


def test_we_read_scapys_binding_update_with_home_address_option():
    """A BU built by scapy (HAO, Alternate CoA, MNP, flags A H R) decodes with haha.wire to the
    same values, its checksum (computed by scapy from the home address) accepted."""
    pkt = (S.IPv6(src=str(COA), dst=str(HA))
           / S.IPv6ExtHdrDestOpt(options=[S.HAO(hoa=str(HOA))])
           / S.MIP6MH_BU(seq=77, flags="AHR", mhtime=300,
                         options=[S.MIP6OptAltCoA(acoa=str(COA)),
                                  S.MIP6OptMobNetPrefix(plen=48, prefix=str(MNP.network_address))]))
    p, m = _ours(bytes(pkt))
    assert p.home_address == HOA and p.src == COA
    assert m == BindingUpdate(77, BU_A | BU_H | BU_R, 300,
                              (AlternateCareOfAddress(COA), MobileNetworkPrefix(MNP)))


def test_we_read_scapys_binding_ack_error_and_refresh_request():
    """BA (behind a type 2 routing header), BE and BRR built by scapy decode to the same values
    with their checksums accepted."""
    pkt = (S.IPv6(src=str(HA), dst=str(COA))
           / S.IPv6ExtHdrRouting(type=2, segleft=1, addresses=[str(HOA)])
           / S.MIP6MH_BA(status=141, flags="KR", seq=5, mhtime=20,
                         options=[S.MIP6OptBRAdvice(rinter=15)]))
    p, m = _ours(bytes(pkt))
    assert p.routing_address == HOA
    assert m == BindingAck(141, 5, 20, BA_K | BA_R, (BindingRefreshAdvice(15),))
    _, m = _ours(bytes(S.IPv6(src=str(HA), dst=str(COA)) / S.MIP6MH_BE(status=1, ha=str(HOA))))
    assert m == BindingError(1, HOA)
    _, m = _ours(bytes(S.IPv6(src=str(HA), dst=str(HOA)) / S.MIP6MH_BRR()))
    assert m == BindingRefreshRequest()


def test_we_read_scapys_dhaad():
    """DHAAD request and reply built by scapy decode to the same identifier, R flag and
    addresses."""
    _, m = _ours(bytes(S.IPv6(src=str(COA), dst=str(ANYCAST)) / S.ICMPv6HAADRequest(id=9, R=1)))
    assert m == DhaadRequest(9, True)
    _, m = _ours(bytes(S.IPv6(src=str(HA), dst=str(COA))
                       / S.ICMPv6HAADReply(id=9, R=0, addresses=[str(HA2)])))
    assert m == DhaadReply(9, (HA2,), False)


_flag_bits = st.sets(st.sampled_from([BU_A, BU_H, 0x2000, 0x1000, 0x0800, BU_R, 0x0200]))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 0xFFFF), _flag_bits, st.integers(0, 0xFFFF),
       st.integers(0, 2**128 - 1).map(IPv6Address), st.booleans())
def test_binding_update_fields_agree_with_scapy_both_ways(seq, flags, lifetime, coa, with_mnp):
    """For any sequence number, flag set (the 7 scapy knows), lifetime and care-of address, our
    BU and scapy's are the same octets."""
    flags = sum(flags)
    opts = (AlternateCareOfAddress(coa),) + ((MobileNetworkPrefix(MNP),) if with_mnp else ())
    ours = build_packet(coa, HA, 135, encode_mh(BindingUpdate(seq, flags, lifetime, opts), HOA, HA),
                        home_address=HOA)
    s_opts = [S.MIP6OptAltCoA(acoa=str(coa))]
    if with_mnp:
        s_opts.append(S.MIP6OptMobNetPrefix(plen=48, prefix=str(MNP.network_address)))
    theirs = bytes(S.IPv6(src=str(coa), dst=str(HA))
                   / S.IPv6ExtHdrDestOpt(options=[S.HAO(hoa=str(HOA))])
                   / S.MIP6MH_BU(seq=seq, flags=flags >> 9, mhtime=lifetime, options=s_opts))
    assert ours.hex() == theirs.hex()
