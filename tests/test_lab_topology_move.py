"""haha.lab Topology.move_interface: a host's interface carried from one link to another after
the topology is built (how the mobility tests move a node to another visited link or home);
and the DAD probe a returning node sends (haha.lab.ping)."""

import os

import pytest

from haha.lab.ping import ping
from haha.lab.topology import Topology


def _lab():
    t = Topology(tag=f"{os.getpid()}-mv")
    t.add_node("h").add_node("r")
    t.add_link("one", ("r", "eth1", ["2001:db8:a::ff/64"]), ("h", "eth0", ["2001:db8:a::1/64"]))
    t.add_link("two", ("r", "eth2", ["2001:db8:b::ff/64"]), bridge=True)
    t.add_link("three", ("r", "eth3", ["2001:db8:c::ff/64"]), bridge=True)
    return t


def test_move_is_refused_before_create_and_for_unknown_or_unbridged_links():
    """move_interface needs a created topology, a bridged target link and a known interface."""
    t = _lab()
    with pytest.raises(RuntimeError, match="created"):
        t.move_interface("h", "eth0", "two")
    t.created = True  # only the checks below, nothing is built
    with pytest.raises(ValueError, match="not a bridged link"):
        t.move_interface("h", "eth0", "one")
    with pytest.raises(ValueError, match="not a bridged link"):
        t.move_interface("h", "eth0", "nowhere")
    with pytest.raises(KeyError):
        t.move_interface("h", "eth9", "two")
    assert t.moves == []


@pytest.mark.netns
def test_an_interface_moves_between_links_and_keeps_its_name(require_root):
    """h's eth0 starts on a veth pair with r (link one), is carried onto bridged link two (r
    loses its end of the pair), re-addressed there by the host, reaches r across it, and moves
    again to link three; destroy() removes everything."""
    t = _lab()
    t.create()
    try:
        h = t.ns("h")
        assert ping(h, "2001:db8:a::ff", attempts=3, interval=0.2)
        t.move_interface("h", "eth0", "two")
        assert "eth1" not in t.run("r", ["ip", "-o", "link"]).stdout
        t.run("h", ["ip", "-6", "addr", "flush", "dev", "eth0", "scope", "global"])
        t.run("h", ["ip", "-6", "addr", "add", "2001:db8:b::1/64", "dev", "eth0", "nodad"])
        assert ping(h, "2001:db8:b::ff", attempts=5, interval=0.2)
        t.move_interface("h", "eth0", "three")
        t.run("h", ["ip", "-6", "addr", "flush", "dev", "eth0", "scope", "global"])
        t.run("h", ["ip", "-6", "addr", "add", "2001:db8:c::1/64", "dev", "eth0", "nodad"])
        assert ping(h, "2001:db8:c::ff", attempts=5, interval=0.2)
        assert "2001:db8:b::" not in t.run("h", ["ip", "-6", "route"]).stdout
        assert t.describe()["moves"] == [["h", "eth0", "two"], ["h", "eth0", "three"]]
    finally:
        t.destroy()
    left = set(os.popen("ip netns list").read().split()) & set(t.namespaces())
    assert not left and t.moves == []


def test_dad_solicitation_matches_the_codec():
    """The hand-built DAD probe (haha.lab.ping) is the NS haha's codec would build: from ::
    to the solicited-node group ff02::1:ffXX:XXXX, Hop Limit 255, target the address, valid
    checksum, no options."""
    from ipaddress import IPv6Address

    from haha.lab.ping import dad_solicitation, solicited_node
    from haha.wire.icmpv6 import NeighborSolicitation, decode_icmpv6, encode_icmpv6
    from haha.wire.ipv6 import parse_packet

    target = IPv6Address("2001:db8:1::1:2:100")
    assert solicited_node(target) == IPv6Address("ff02::1:ff02:100")
    p = parse_packet(dad_solicitation(target))
    assert (p.src, p.dst, p.hop_limit, p.next_header) == (
        IPv6Address("::"), solicited_node(target), 255, 58)
    assert decode_icmpv6(p.payload, p.src, p.dst) == NeighborSolicitation(target)
    assert p.payload == encode_icmpv6(NeighborSolicitation(target), p.src, p.dst)
