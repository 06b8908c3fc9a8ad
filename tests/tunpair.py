"""A home agent's user-space tunnel and a mobile node's, for the tier-3 tun tests.

Topology (haha.lab.shared_home_link): cn -- r -- home link (ha1) ; r -- visited link (mn1).
ha1 runs a RawTransport + TunBackend, mn1 a RawTransport + MobileTunnel, both in the test
process, each in its own namespace, on one reactor. :func:`user_space_tunnel` builds and
starts them and tears everything down, even when a part fails; :meth:`TunnelPair.route`
installs the binding the daemon would (the backend's route and proxy ND, the node's
endpoint).
"""

from contextlib import contextmanager
from ipaddress import IPv6Address
from typing import Any, Callable, Iterator, NamedTuple

from twisted.internet import reactor

from haha.backends.netsys import Pyroute2Netlink
from haha.backends.tun import MobileTunnel, TunBackend
from haha.core.duties import ForwardingRoute
from haha.io.raw import RawTransport
from haha.io.system import LinuxSystem
from haha.lab import topology
from haha.wire.numbers import IPPROTO_IPV6


def ignoring(end: Any) -> Callable[[bytes], None]:
    """A transport receiver that drops every packet (the tunnel end reads its own)."""
    return lambda packet: None


def decapsulating(end: Any) -> Callable[[bytes], None]:
    """A transport receiver that hands IPv6-in-IPv6 to ``end`` (the daemon does that in real
    runs; here the test does)."""
    def receive(packet: bytes) -> None:
        if packet[6] == IPPROTO_IPV6:
            end.decapsulate(packet)
    return receive


class TunnelPair(NamedTuple):
    topo: Any
    ha_tx: RawTransport
    backend: TunBackend
    mn_tx: RawTransport
    tunnel: MobileTunnel
    ha_addr: IPv6Address
    care_of: IPv6Address

    def route(self, home: IPv6Address) -> None:
        """The binding of ``home`` at ``care_of`` with ha1, installed at both ends."""
        self.backend.install(ForwardingRoute(home, self.care_of, self.ha_addr, (), True))
        self.backend.proxy_nd_start(home, "eth0")
        self.tunnel.set_endpoint(home, self.care_of, self.ha_addr)


@contextmanager
def user_space_tunnel(receiver: Callable[[Any], Callable[[bytes], None]] = ignoring,
                      offload: bool = False, **options: Any) -> Iterator[TunnelPair]:
    """Both tunnel ends, started: ``receiver(end)`` receives what each end's transport reads,
    ``offload`` opens both TUNs with offloads, ``options`` go to both ends' constructors
    (``super_packets``)."""
    topo = topology.shared_home_link(n_has=1, n_mns=1)
    topo.create()
    parts: list[Callable[[], object]] = []
    try:
        ha_ns, mn_ns = topo.ns("ha1"), topo.ns("mn1")
        ha_nl, mn_nl = Pyroute2Netlink(ha_ns), Pyroute2Netlink(mn_ns)
        parts += [ha_nl.close, mn_nl.close]

        ha_tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(ha_ns))
        backend = TunBackend(reactor, ha_tx, tun_name="hahatun0", netlink=ha_nl,
                             system=LinuxSystem(ha_ns), **options)
        if offload:
            backend.tun_offload = True  # off by default (docs/io.md, "Offloads")
        ha_tx.start(receiver(backend))
        parts.append(ha_tx.stop)
        backend.start()
        parts.append(backend.stop)

        mn_tx = RawTransport(reactor, interfaces=["eth0"], system=LinuxSystem(mn_ns))
        tunnel = MobileTunnel(reactor, mn_tx, tun_name="hahamn0", netlink=mn_nl,
                              system=LinuxSystem(mn_ns), **options)
        if offload:
            tunnel.tun_offload = True
        mn_tx.start(receiver(tunnel))
        parts.append(mn_tx.stop)
        tunnel.start()
        parts.append(tunnel.stop)

        yield TunnelPair(topo, ha_tx, backend, mn_tx, tunnel, topo.address("ha1"),
                         topo.address("mn1"))
    finally:
        for stop in reversed(parts):
            try:
                stop()
            except Exception:  # clean up everything even when one part fails
                pass
        topo.destroy()
