"""RFC 8200 4.1-4.4 in the packet parser: option action bits, the place of Hop-by-Hop, and the
ICMPv6 Parameter Problem each case calls for (RFC 4443 3.4).

The packets of the table are assembled field by field from the RFC layouts with ``struct`` (not
with haha's encoder), each with the outcome RFC 8200 prescribes: parsed, discarded silently, or
discarded with a Parameter Problem of a given code pointing at a given octet, sent always or only
when the destination was not multicast.
"""

import struct
from ipaddress import IPv6Address

import pytest

from haha.icmperror import GlobalBudget, parameter_problem
from haha.wire.errors import WireError
from haha.wire.icmpv6 import ParameterProblem as PPMessage
from haha.wire.icmpv6 import decode_icmpv6, encode_icmpv6
from haha.wire.ipv6 import ParameterProblem, parse_packet

SRC = IPv6Address("2001:db8:2::5")
DST = IPv6Address("2001:db8:1::1")
GROUP = IPv6Address("ff02::1")
HOA = IPv6Address("2001:db8:1::100")
BRR = bytes((59, 0, 0, 0, 0, 0, 0, 0))  # a Mobility Header, opaque here (next header 135)


def ipv6(nh, rest, dst=DST, src=SRC):
    """Fixed header (RFC 8200 3): version 6, Payload Length, Next Header, Hop Limit 64."""
    return struct.pack("!IHBB", 6 << 28, len(rest), nh, 64) + src.packed + dst.packed + rest


def ext(nh, options):
    """A Hop-by-Hop or Destination Options header (RFC 8200 4.3, 4.6): Next Header, Hdr Ext
    Len, options padded with PadN/Pad1 to a multiple of 8 octets."""
    body = bytes((nh, 0)) + options
    pad = -len(body) % 8
    if pad == 1:
        body += b"\x00"
    elif pad:
        body += bytes((1, pad - 2)) + bytes(pad - 2)
    return bytes((body[0], len(body) // 8 - 1)) + body[2:]


def opt(t, data=b"\x00\x00"):
    return bytes((t, len(data))) + data


HAO = opt(0xC9, HOA.packed)  # Home Address option (RFC 6275 6.3)

# name, packet, outcome: "ok" | ("drop",) | ("report", code, pointer, when)
TABLE = [
    ("dstopt-00-skipped", ipv6(60, ext(135, opt(0x1E)) + BRR), "ok"),
    ("hbh-00-skipped", ipv6(0, ext(135, opt(0x3E)) + BRR), "ok"),
    ("hbh-router-alert-known", ipv6(0, ext(135, opt(0x05)) + BRR), "ok"),
    ("dstopt-tunnel-encap-limit-known", ipv6(60, ext(135, opt(0x04, b"\x04")) + BRR), "ok"),
    ("dstopt-01-discarded", ipv6(60, ext(135, opt(0x5E)) + BRR), ("drop",)),
    ("hbh-01-discarded", ipv6(0, ext(135, opt(0x7F)) + BRR), ("drop",)),
    # the option type octet sits at 40 (header) + 2 (Next Header, Hdr Ext Len)
    ("dstopt-10-reported", ipv6(60, ext(135, opt(0x9E)) + BRR),
     ("report", 2, 42, "always")),
    ("hbh-10-reported", ipv6(0, ext(135, opt(0x80)) + BRR), ("report", 2, 42, "always")),
    ("dstopt-11-reported-unless-multicast", ipv6(60, ext(135, opt(0xDE)) + BRR),
     ("report", 2, 42, "unicast")),
    ("hbh-11-reported-unless-multicast", ipv6(0, ext(135, opt(0xC2, bytes(4))) + BRR),
     ("report", 2, 42, "unicast")),
    # a known option first: the pointer names the unknown one after it
    ("dstopt-11-after-hao", ipv6(60, ext(135, b"\x01\x02\x00\x00" + HAO + opt(0xFE)) + BRR),
     ("report", 2, 64, "unicast")),
    # the Home Address option is no Hop-by-Hop option: unrecognised there, action 11
    ("hao-in-hop-by-hop", ipv6(0, ext(135, b"\x01\x02\x00\x00" + HAO) + BRR),
     ("report", 2, 46, "unicast")),
    # RFC 8200 4.1: Hop-by-Hop only first; next header 0 elsewhere is code 1 at that field
    ("hbh-after-dstopts", ipv6(60, ext(0, opt(0x1E)) + ext(135, b"") + BRR),
     ("report", 1, 40, "unicast")),
    ("hbh-after-hbh", ipv6(0, ext(0, b"") + ext(135, b"") + BRR), ("report", 1, 40, "unicast")),
    # RFC 8200 4.4: a routing type we cannot process with segments left: code 0 at the type
    ("routing-type-0-segments-left",
     ipv6(43, bytes((135, 2, 0, 1, 0, 0, 0, 0)) + HOA.packed + BRR),
     ("report", 0, 42, "unicast")),
]


@pytest.mark.parametrize("name,packet,outcome", TABLE, ids=[t[0] for t in TABLE])
def test_option_action_bits_and_header_order(name, packet, outcome):
    """Each packet of the table is parsed, or refused with the Parameter Problem code, pointer
    and reporting rule of RFC 8200 4.1, 4.2 and 4.4."""
    if outcome == "ok":
        p = parse_packet(packet)
        assert p.next_header == 135 and p.payload == BRR
        return
    with pytest.raises(ParameterProblem) as e:
        parse_packet(packet)
    err = e.value
    assert isinstance(err, WireError)  # callers that only know WireError still drop it
    if outcome[0] == "drop":
        assert err.report == "never"
        assert parameter_problem(packet, err, lambda d: DST) == (None, "silent")
        return
    _, code, pointer, when = outcome
    assert (err.code, err.pointer, err.report) == (code, pointer, when)
    answer, why = parameter_problem(packet, err, lambda d: DST)
    assert why is None
    src, dst, message = answer
    assert (src, dst) == (DST, SRC)
    assert (message.code, message.pointer, message.invoking) == (code, pointer, packet)


def _to_group(packet):
    return packet[:24] + GROUP.packed + packet[40:]


def test_multicast_destination_reported_only_for_action_10():
    """To a multicast destination, an unrecognised option with action 10 is still reported
    (from this node's unicast address), action 11 and code 1 are not (RFC 4443 2.4 (e.3))."""
    own = IPv6Address("2001:db8:1::1")
    source_for = lambda d: own if d.is_multicast else d  # noqa: E731
    ten = _to_group(ipv6(60, ext(135, opt(0x9E)) + BRR))
    with pytest.raises(ParameterProblem) as e:
        parse_packet(ten)
    answer, why = parameter_problem(ten, e.value, source_for)
    assert why is None and answer[0] == own and answer[1] == SRC
    for packet in (_to_group(ipv6(60, ext(135, opt(0xDE)) + BRR)),
                   _to_group(ipv6(60, ext(0, b"") + ext(135, b"") + BRR))):
        with pytest.raises(ParameterProblem) as e:
            parse_packet(packet)
        assert parameter_problem(packet, e.value, source_for) == (None, "multicast-destination")


def test_no_report_to_multicast_or_unspecified_sources_nor_about_icmp_errors():
    """No Parameter Problem to a multicast or unspecified source (RFC 4443 2.4 (e.4)), nor
    about a packet carrying an ICMPv6 error message (e.1); an informational one is reported."""
    bad = ext(58, opt(0x9E))
    for src in (IPv6Address("ff02::1"), IPv6Address("::")):
        packet = ipv6(60, bad + BRR, src=src)
        with pytest.raises(ParameterProblem) as e:
            parse_packet(packet)
        assert parameter_problem(packet, e.value, lambda d: d) == (None, "bad-source")
    error = ipv6(60, bad + bytes((1, 0, 0, 0, 0, 0, 0, 0)))  # Destination Unreachable
    with pytest.raises(ParameterProblem) as e:
        parse_packet(error)
    assert parameter_problem(error, e.value, lambda d: d) == (None, "icmp-error")
    echo = ipv6(60, bad + bytes((128, 0, 0, 0, 0, 0, 0, 0)))  # Echo Request
    with pytest.raises(ParameterProblem) as e:
        parse_packet(echo)
    assert parameter_problem(echo, e.value, lambda d: d)[1] is None


def test_invoking_packet_is_cut_to_the_minimum_mtu():
    """The answer carries at most 1232 octets of the invoking packet, so it fits 1280."""
    packet = ipv6(60, ext(135, opt(0x9E)) + bytes(2000))
    with pytest.raises(ParameterProblem) as e:
        parse_packet(packet)
    (src, dst, message), _ = parameter_problem(packet, e.value, lambda d: d)
    data = encode_icmpv6(message, src, dst)
    assert len(data) == 8 + 1232 and 40 + len(data) == 1280


def test_parameter_problem_message_round_trip_and_layout():
    """Parameter Problem (RFC 4443 3.4): type 4, the code, the checksum, a 32-bit pointer and
    the invoking packet, decoded back to the same object."""
    m = PPMessage(2, 42, b"\x60" + bytes(47))
    data = encode_icmpv6(m, DST, SRC)
    assert data[:2] == b"\x04\x02" and data[4:8] == struct.pack("!I", 42)
    assert data[8:] == m.invoking
    assert decode_icmpv6(data, DST, SRC) == m


def test_global_budget_refuses_past_its_burst_and_refills():
    """One bucket for every answer: ``burst`` at once, then ``rate`` per second."""
    b = GlobalBudget(rate=2.0, burst=3)
    assert [b.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.refused == 1
    assert b.allow(0.5) and not b.allow(0.5)
    with pytest.raises(ValueError):
        GlobalBudget(rate=0)
