"""What both kernel-facing backends do the same way: proxy ND, the unsolicited Neighbour
Advertisement, the advertised home prefix, sysctls restored at stop, netlink failures counted.

Proxy ND uses the kernel (``net.ipv6.conf.<if>.proxy_ndp`` + a proxy neighbour entry); on
take-over one unsolicited NA goes to all-nodes (RFC 6275 10.4.1, RFC 4861 7.2.6: Target = the
home address, Target Link-layer Address = ours, S=0, O=1, R=0 unless ``router_flag``; source our
link-local address, Hop Limit 255). ``advertise_prefix`` installs the aggregated home prefix as
an ``unreachable`` route with protocol ``static`` and a high metric: the route a routing daemon
(BIRD, FRR) redistributes to attract the prefix; home addresses with a binding have more specific
routes and win, the others get ICMPv6 Destination Unreachable from this home agent.
"""

from ipaddress import IPv6Address, IPv6Network


from ..logging import class_logger
from ..wire.icmpv6 import NA_O, NA_R, LinkLayerAddress, NeighborAdvertisement, encode_icmpv6
from ..wire.ipv6 import build_packet
from ..wire.numbers import IPPROTO_ICMPV6, ND_OPT_TARGET_LLADDR
from .netsys import RTPROT_STATIC, NetlinkFailure, Pyroute2Netlink

ALL_NODES = IPv6Address("ff02::1")


class LinkDuties:
    """Mixin. The host class provides ``_netlink`` (a netlink seam or None for the real one),
    ``transport``, ``counters``, ``table``, ``prefix_metric``, ``router_flag`` and calls
    :meth:`_init_link_duties` and :meth:`_stop_link_duties`."""

    log = class_logger()

    @property
    def netlink(self):
        """The netlink seam, the real one (pyroute2) made on first use."""
        if self._netlink is None:
            self._netlink = Pyroute2Netlink()
        return self._netlink

    def _init_link_duties(self):
        self.proxied = set()  # (address, interface)
        self.prefixes = set()
        self._saved_sysctls = {}

    def _stop_link_duties(self):
        for address, interface in list(self.proxied):
            self.proxy_nd_stop(address, interface)
        for prefix in list(self.prefixes):
            self.withdraw_prefix(prefix)
        for key, value in list(self._saved_sysctls.items()):
            self._nl(f"restore {key}", self.netlink.sysctl_set, key, value)
        self._saved_sysctls.clear()

    def _nl(self, what, func, *args, **kw):
        """A netlink call whose failure is logged and counted, never raised."""
        try:
            func(*args, **kw)
            return True
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("{what} failed: {error}", what=what, error=str(e), errno=e.errno)
            return False

    def _set_sysctl(self, key, value):
        """Set a sysctl, remembering its first value for :meth:`_stop_link_duties`."""
        if key not in self._saved_sysctls:
            self._saved_sysctls[key] = self.netlink.sysctl_get(key)
        self.netlink.sysctl_set(key, value)

    def proxy_nd_start(self, address, interface):
        if not isinstance(address, IPv6Address):
            raise TypeError(f"{address!r} is not an IPv6Address")
        if not isinstance(interface, str) or not interface:
            raise TypeError(f"interface {interface!r} is not a name")
        key = f"net.ipv6.conf.{interface}.proxy_ndp"
        try:
            self._set_sysctl(key, "1")
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot enable proxy_ndp on {interface}: {error}",
                          interface=interface, error=str(e))
        if self._nl(f"proxy ND for {address}", self.netlink.neigh_proxy_add, address, interface):
            self.proxied.add((address, interface))
        self.send_unsolicited_na(address, interface)

    def proxy_nd_stop(self, address, interface):
        if (address, interface) not in self.proxied:
            return
        self.proxied.discard((address, interface))
        self._nl(f"stop proxy ND for {address}", self.netlink.neigh_proxy_delete, address,
                 interface)

    def send_unsolicited_na(self, address, interface):
        """One unsolicited NA to all-nodes for ``address`` with our link-layer address
        (RFC 6275 10.4.1, RFC 4861 7.2.6). Returns the packet sent, or None."""
        if self.transport is None:
            self.counters["na_errors"] += 1
            self.log.warn("no transport to send the NA for {address}", address=str(address))
            return None
        try:
            info = self.netlink.link_info(interface)
        except NetlinkFailure as e:
            self.counters["na_errors"] += 1
            self.log.warn("no link information for {interface}: {error}", interface=interface,
                          error=str(e))
            return None
        addrs = info.get("addresses") or []
        src = next((a for a in addrs if a.is_link_local), addrs[0] if addrs else None)
        if src is None or not info.get("mac"):
            self.counters["na_errors"] += 1
            self.log.warn("{interface} has no address or link-layer address for an NA",
                          interface=interface)
            return None
        flags = NA_O | (NA_R if self.router_flag else 0)
        na = NeighborAdvertisement(address, flags,
                                   (LinkLayerAddress(ND_OPT_TARGET_LLADDR, info["mac"]),))
        packet = build_packet(src, ALL_NODES, IPPROTO_ICMPV6, encode_icmpv6(na, src, ALL_NODES),
                              hop_limit=255)
        self.transport.send(packet, interface=interface)
        self.counters["unsolicited_na"] += 1
        return packet

    def advertise_prefix(self, prefix):
        if not isinstance(prefix, IPv6Network):
            raise TypeError(f"{prefix!r} is not an IPv6Network")
        if prefix in self.prefixes:
            return
        if self._nl(f"advertise {prefix}", self.netlink.route_replace, prefix, table=self.table,
                    metric=self.prefix_metric, kind="unreachable", proto=RTPROT_STATIC):
            self.prefixes.add(prefix)

    def withdraw_prefix(self, prefix):
        if prefix not in self.prefixes:
            return
        self.prefixes.discard(prefix)
        self._nl(f"withdraw {prefix}", self.netlink.route_delete, prefix, table=self.table,
                 metric=self.prefix_metric, kind="unreachable", proto=RTPROT_STATIC)

