"""Tier 3: the tun backend carries a correspondent's ping to a mobile node and back.

Topology (haha.lab.shared_home_link): cn -- r -- home link (ha1) ; r -- visited link (mn1).
The mobile node's home address 2001:db8:1::100 is on the home link's prefix. ha1 runs a
RawTransport + TunBackend (proxy ND for the home address on its home interface), mn1 a
RawTransport + MobileTunnel; both live in this test process, each in its own namespace, on one
reactor. The binding is installed by calling ``backend.install`` (the daemon drives it in real
runs). The correspondent pings the home address: r resolves it on the home link (ha1 answers by
proxy ND), ha1 forwards it into its TUN, encapsulates it to the care-of address, mn1 decapsulates
it into its TUN, answers from the home address through the reverse tunnel, and ha1 decapsulates
and forwards the reply to cn.
"""

from ipaddress import IPv6Address, IPv6Network

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from haha.backends.netsys import Pyroute2Netlink
from haha.backends.tun import TunBackend
from haha.core.duties import ForwardingRoute
from haha.io.raw import RawTransport
from haha.io.system import LinuxSystem
from haha.lab import ping, topology
from haha.wire.ipv6 import build_packet
from tunpair import decapsulating, user_space_tunnel

HOME = IPv6Address("2001:db8:1::100")


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_ping_from_correspondent_through_user_space_tunnel(require_root):
    """A correspondent's ping reaches the mobile node's home address through the HA's TUN and
    IPv6-in-IPv6 tunnel and the reply comes back through the reverse tunnel; the counters show
    both directions were encapsulated and decapsulated in user space."""
    with user_space_tunnel(decapsulating) as t:
        topo, ha_tx, backend, mn_tx, tunnel = t.topo, t.ha_tx, t.backend, t.mn_tx, t.tunnel
        mn_ns = topo.ns("mn1")
        t.route(HOME)

        answered = yield deferToThread(ping.ping, topo.ns("cn"), HOME, attempts=8,
                                       interval=0.5)
        assert answered, (backend.snapshot(), tunnel.snapshot(), dict(ha_tx.counters),
                          dict(mn_tx.counters))
        assert backend.counters["encapsulated"] >= 1
        assert backend.counters["decapsulated"] >= 1
        assert tunnel.counters["encapsulated"] >= 1
        assert tunnel.counters["decapsulated"] >= 1
        assert backend.counters["unsolicited_na"] == 1

        # The mobile node reaches the correspondent from its home address, too.
        answered = yield deferToThread(ping.ping, mn_ns, topo.info["cn"], source=HOME,
                                       attempts=8, interval=0.5)
        assert answered


@pytest.mark.netns
def test_no_open_relay_and_prefix_route(require_root):
    """A tunnelled packet from an unregistered care-of address is dropped and counted; an
    advertised prefix becomes an unreachable route in the kernel and is removed at stop, and
    the TUN routes disappear with the backend."""
    topo = topology.no_home_link(n_has=1, n_mns=1)
    topo.create()
    parts = []
    try:
        ha_ns = topo.ns("ha1")
        nl = Pyroute2Netlink(ha_ns)
        parts.append(nl.close)
        tx = RawTransport(reactor, system=LinuxSystem(ha_ns))
        backend = TunBackend(reactor, tx, tun_name="hahatun0", netlink=nl,
                             system=LinuxSystem(ha_ns))
        tx.start(decapsulating(backend))
        parts.append(tx.stop)
        backend.start()
        parts.append(backend.stop)
        prefix = IPv6Network("2001:db8:1::/64")
        backend.advertise_prefix(prefix)
        backend.install(ForwardingRoute(HOME, IPv6Address("2001:db8:20::11"),
                                        IPv6Address("2001:db8:2::1"),
                                        (IPv6Network("2001:db8:99::/48"),), True))
        routes = topo.run("ha1", ["ip", "-6", "route", "show"]).stdout
        assert "unreachable 2001:db8:1::/64" in routes
        assert "2001:db8:1::100 dev hahatun0" in routes
        assert "2001:db8:99::/48 dev hahatun0" in routes

        # From the registered care-of address but with a foreign inner source: dropped; from an
        # unknown care-of address: dropped.
        inner = build_packet(IPv6Address("2001:db8:30::10"), IPv6Address("2001:db8:30::ff"), 59,
                             b"")
        outer = build_packet(IPv6Address("2001:db8:20::11"), IPv6Address("2001:db8:2::1"), 41,
                             inner)
        assert backend.decapsulate(outer) is False
        assert backend.counters["decap_spoofed_source"] == 1
        outer2 = build_packet(IPv6Address("2001:db8:20::99"), IPv6Address("2001:db8:2::1"), 41,
                              inner)
        assert backend.decapsulate(outer2) is False
        assert backend.counters["decap_unknown_care_of"] == 1
        backend.stop()
        routes = topo.run("ha1", ["ip", "-6", "route", "show"]).stdout
        assert "unreachable" not in routes and "hahatun0" not in routes
    finally:
        for stop in reversed(parts):
            try:
                stop()
            except Exception:
                pass
        topo.destroy()
