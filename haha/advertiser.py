"""Router Advertisements of a home agent on its home link (RFC 6275 7.1, 7.2, 7.4, 10.5.1).

On a shared home link home agents learn each other from Router Advertisements rather than HELLO
(draft 5.4, docs/protocol.md 6.8), and mobile nodes at home learn them too. The advertiser sends, every
``interval`` seconds, to all-nodes (ff02::1) from the interface's link-local address with hop
limit 255 (RFC 4861 6.1.2): the H flag, a Prefix Information option with the R flag carrying the
home agent's global address, and a Home Agent Information option with the current preference
(which drops while draining) and lifetime. Router Lifetime is 0 by default: advertising home
agent service does not make this node the link's default router. On stop one last advertisement
with Home Agent Lifetime 0 tells the peers to forget it at once.
"""

from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from .interfaces import IMobilityTransport

from .wire.icmpv6 import (
    PI_R,
    RA_H,
    HomeAgentInformation,
    PrefixInformation,
    RouterAdvertisement,
    encode_icmpv6,
)
from .wire.ipv6 import build_packet
from .wire.numbers import IPPROTO_ICMPV6

if TYPE_CHECKING:
    from .core.homeagent import HomeAgent

ALL_NODES = IPv6Address("ff02::1")


def link_local_address(interface: str | None, path: str = "/proc/net/if_inet6"
                       ) -> IPv6Address | None:
    """The first link-local address of ``interface`` (from the kernel's table), or None."""
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5] == interface and fields[3] == "20":
                    return IPv6Address(int(fields[0], 16))
    except OSError:
        return None
    return None


class HomeLinkAdvertiser:
    """Periodic home-agent Router Advertisements (module docstring)."""

    def __init__(self, clock: IReactorTime, transport: IMobilityTransport, machine: "HomeAgent",
                 interface: str | None, interval: float, lifetime: int, prefix: IPv6Network,
                 router_lifetime: int = 0, source: IPv6Address | None = None) -> None:
        self.clock = clock
        self.transport = transport
        self.machine = machine
        self.interface = interface
        self.interval = interval
        self.lifetime = lifetime
        self.prefix = prefix
        self.router_lifetime = router_lifetime
        self.source = source
        self.sent = 0
        self._call: IDelayedCall | None = None

    def advertisement(self, lifetime: int | None = None) -> RouterAdvertisement:
        """The Router Advertisement (H flag, the prefix, Home Agent Information)."""
        m = self.machine
        return RouterAdvertisement(
            cur_hop_limit=64,
            flags=RA_H,
            router_lifetime=self.router_lifetime,
            options=(
                PrefixInformation(m.address, self.prefix.prefixlen, PI_R),
                HomeAgentInformation(m.preference,
                                     self.lifetime if lifetime is None else lifetime),
            ),
        )

    def send(self, lifetime: int | None = None) -> bool:
        """Send one advertisement; False when the interface has no link-local address."""
        src = self.source or link_local_address(self.interface)
        if src is None:
            return False
        data = encode_icmpv6(self.advertisement(lifetime), src, ALL_NODES)
        self.transport.send(build_packet(src, ALL_NODES, IPPROTO_ICMPV6, data, hop_limit=255),
                            interface=self.interface)
        self.sent += 1
        return True

    def start(self) -> None:
        """Advertise now and every ``interval`` seconds."""
        self._tick()

    def _tick(self) -> None:
        self.send()
        self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        """Stop, and say so with a Home Agent Lifetime of 0."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.send(lifetime=0)
