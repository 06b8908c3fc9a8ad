"""haha.lab.capture without root: the pcap reader (classic format, cooked SLL/SLL2 and
Ethernet frames, both byte orders) and the independent header-chain walker, against packets
built by scapy (the test oracle) rather than by haha's own codec."""

import struct
from ipaddress import IPv6Address

import pytest
from scapy.layers.inet6 import (
    HAO,
    ICMPv6ParamProblem,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import ESP

from haha.lab.capture import (
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    CaptureError,
    read_pcap,
    summarise,
)

COA, HA, HOA = "2001:db8:20::11", "2001:db8:1::1", "2001:db8:1::100"


def _bu():
    return bytes(IPv6(src=COA, dst=HA) / IPv6ExtHdrDestOpt(options=[HAO(hoa=HOA)])
                 / ESP(spi=0x1234, seq=1, data=b"\x00" * 24))


def _ba():
    # RFC 6275 6.4: type 2 routing header, one address (the home address), segments left 1.
    rh2 = IPv6ExtHdrRouting(type=2, segleft=1, addresses=[HOA])
    return bytes(IPv6(src=HA, dst=COA) / rh2 / ESP(spi=0x4321, seq=1, data=b"\x00" * 24))


def test_walker_finds_home_address_option_routing_header_and_esp():
    """A BU: Destination Options with a Home Address option, then ESP; a BA: a type 2 routing
    header, then ESP; an ICMPv6 Parameter Problem after a Hop-by-Hop header is recognised."""
    bu = summarise(_bu())
    assert (bu.src, bu.dst, bu.headers, bu.upper) == (IPv6Address(COA), IPv6Address(HA),
                                                      (60,), 50)
    assert bu.home_address == IPv6Address(HOA) and bu.routing_type2 is None
    ba = summarise(_ba())
    assert ba.headers == (43,) and ba.upper == 50 and ba.routing_type2 == IPv6Address(HOA)
    pp = summarise(bytes(IPv6(src=HA, dst=COA) / IPv6ExtHdrHopByHop()
                         / ICMPv6ParamProblem(code=1, ptr=40)))
    assert pp.headers == (0,) and pp.upper == 58 and (pp.icmp_type, pp.icmp_code) == (4, 1)


def _pcap(linktype, frames, endian="<"):
    head = struct.pack(endian + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    body = b"".join(struct.pack(endian + "IIII", 1, 2, len(f), len(f)) + f for f in frames)
    return head + body


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcap_reader_unwraps_each_link_type(tmp_path, endian):
    """IPv6 packets come back from Linux cooked (SLL, SLL2) and Ethernet captures; frames of
    other protocols are skipped."""
    pkt = _bu()
    sll = struct.pack(">HHHQH", 0, 1, 6, 0, 0x86DD) + pkt
    sll2 = struct.pack(">HHIHBB8s", 0x86DD, 0, 2, 1, 0, 6, bytes(8)) + pkt
    eth = bytes(12) + b"\x86\xdd" + pkt
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    for linktype, frames in ((DLT_LINUX_SLL, [sll]), (DLT_LINUX_SLL2, [sll2]),
                             (DLT_EN10MB, [arp, eth])):
        path = tmp_path / f"{linktype}.pcap"
        path.write_bytes(_pcap(linktype, frames, endian))
        assert read_pcap(path) == [pkt]


def test_pcap_reader_refuses_other_files(tmp_path):
    """A file that is not pcap is an error naming it; an empty one holds no packets."""
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))  # pcapng: not read here
    with pytest.raises(CaptureError, match="not a pcap file"):
        read_pcap(bad)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert read_pcap(empty) == []


def test_a_capture_stops_only_once_its_file_stopped_growing(tmp_path, monkeypatch):
    """Before tcpdump is stopped (packets still waiting in the kernel for it are lost then),
    ``settle`` waits until the capture file has kept its size for ``quiet`` seconds: it goes
    on waiting while the file grows, returns at the first quiet look, and gives up at
    ``limit`` for a file that never stops growing."""
    from haha.lab import capture

    monkeypatch.setattr(capture, "scaled", lambda s: s)
    path = tmp_path / "c.pcap"
    now = [0.0]
    growth = [10, 20, 30, 30]  # the file's size at each look

    def sleep(seconds):
        now[0] += seconds
        path.write_bytes(bytes(growth.pop(0)) if growth else b"x" * 30)

    capture.settle(str(path), quiet=0.2, limit=5.0, clock=lambda: now[0], sleep=sleep)
    assert abs(now[0] - 0.8) < 1e-9  # missing, 10, 20, 30, then 30 again: quiet

    def grow(seconds):
        now[0] += seconds
        path.write_bytes(b"x" * (path.stat().st_size + 1))

    now[0] = 0.0
    capture.settle(str(path), quiet=0.2, limit=1.0, clock=lambda: now[0], sleep=grow)
    assert 1.0 <= now[0] < 1.0 + 0.2 + 1e-9  # never quiet: the limit ends it
