"""Tier 3: TCP through the tun backend with TUN offloads: the home agent's TUN hands over
TCP super-packets (GSO), haha cuts them into segments, and the mobile node's kernel accepts
every one (checksums, sequence numbers, lengths): the bytes arrive intact.

Topology and parts as in test_backend_tun_netns.py (haha.lab.shared_home_link; ha1 runs a
RawTransport + TunBackend, mn1 a RawTransport + MobileTunnel, both in this process).
"""

from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from haha.backends.netsys import Pyroute2Netlink
from haha.backends.tun import MobileTunnel, TunBackend
from haha.core.duties import ForwardingRoute
from haha.io.raw import RawTransport
from haha.io.system import LinuxSystem
from haha.lab import topology
from tcptransfer import expected, transfer

HOME = IPv6Address("2001:db8:1::100")
PORT = 5202
SIZE = 8 << 20



def _transfer(topo):
    return transfer(topo, "mn1", HOME, "cn", PORT, SIZE)


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_tcp_through_offloaded_tun_arrives_intact(require_root):
    """8 MB of TCP from the correspondent to the home address cross the user-space tunnel
    intact while the home agent's TUN delivers GSO super-packets (gso_reads > 0) that haha
    segments, and the node's TUN is written with virtio headers."""
    topo = topology.shared_home_link(n_has=1, n_mns=1)
    topo.create()
    parts = []
    try:
        ha_ns, mn_ns = topo.ns("ha1"), topo.ns("mn1")
        ha_addr, care_of = topo.address("ha1"), topo.address("mn1")
        ha_nl, mn_nl = Pyroute2Netlink(ha_ns), Pyroute2Netlink(mn_ns)
        parts += [ha_nl.close, mn_nl.close]

        ha_tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(ha_ns))
        backend = TunBackend(reactor, ha_tx, tun_name="hahatun0", netlink=ha_nl,
                             system=LinuxSystem(ha_ns))
        backend.tun_offload = True  # off by default (docs/io.md, "Offloads")
        ha_tx.start(lambda p: backend.decapsulate(p) if p[6] == 41 else None)
        parts.append(ha_tx.stop)
        backend.start()
        parts.append(backend.stop)

        mn_tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(mn_ns))
        tunnel = MobileTunnel(reactor, mn_tx, tun_name="hahamn0", netlink=mn_nl,
                              system=LinuxSystem(mn_ns))
        tunnel.tun_offload = True
        mn_tx.start(lambda p: tunnel.decapsulate(p) if p[6] == 41 else None)
        parts.append(mn_tx.stop)
        tunnel.start()
        parts.append(tunnel.stop)

        backend.install(ForwardingRoute(HOME, care_of, ha_addr, (), True))
        backend.proxy_nd_start(HOME, "eth0")
        tunnel.set_endpoint(HOME, care_of, ha_addr)

        n, digest = yield deferToThread(_transfer, topo)
        assert (n, digest) == expected(SIZE), (n, backend.snapshot(), tunnel.snapshot())
        assert backend.tun.offload and tunnel.tun.offload
        assert backend.tun.counters["gso_reads"] > 0, backend.snapshot()
        assert backend.tun.counters["gso_segments"] > backend.tun.counters["gso_reads"]
        assert tunnel.counters["decapsulated"] >= SIZE // 1500
        assert not backend.tun.counters["offload_errors"]
        assert not tunnel.tun.counters["offload_errors"]
    finally:
        for stop in reversed(parts):
            try:
                stop()
            except Exception:  # clean up everything even when one part fails
                pass
        topo.destroy()
