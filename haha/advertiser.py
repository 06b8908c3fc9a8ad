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

from ipaddress import IPv6Address

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

ALL_NODES = IPv6Address("ff02::1")


def link_local_address(interface, path="/proc/net/if_inet6"):
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

    def __init__(self, clock, transport, machine, interface, interval, lifetime, prefix,
                 router_lifetime=0, source=None):
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
        self._call = None

    def advertisement(self, lifetime=None):
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

    def send(self, lifetime=None):
        src = self.source or link_local_address(self.interface)
        if src is None:
            return False
        data = encode_icmpv6(self.advertisement(lifetime), src, ALL_NODES)
        self.transport.send(build_packet(src, ALL_NODES, IPPROTO_ICMPV6, data, hop_limit=255),
                            interface=self.interface)
        self.sent += 1
        return True

    def start(self):
        self._tick()

    def _tick(self):
        self.send()
        self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.send(lifetime=0)
