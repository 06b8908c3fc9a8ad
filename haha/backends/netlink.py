"""The ``netlink`` forwarding backend: the kernel's own ip6tnl tunnels, through pyroute2.

One ``ip6tnl`` link (mode ip6ip6, no Tunnel Encapsulation Limit option) per pair of home agent
address and care-of address, named ``hahaN``; routes for the home address (/128) and mobile
network prefixes point into it, so the kernel encapsulates and decapsulates (RFC 2473) without
user space. Proxy ND, the advertised prefix and the removal of what a crashed run left are
:class:`haha.backends.common.LinkDuties`; here, besides, the leftover tunnels: ip6tnl links named
``hahaN`` whose local end is one of the ownership's addresses (their routes go with them).

It needs the kernel's IPv6-in-IPv6 tunnel driver (``ip6_tunnel``, CONFIG_IPV6_TUNNEL), which
stock Debian/Ubuntu kernels ship as a module. This project's development kernel does not have
it, so there :meth:`NetlinkBackend.start` raises :class:`KernelUnsupported` saying exactly that
(use ``backend = tun``); the stock-kernel tier (``haha.lab.vm``) runs the backend end to end on
Debian's kernel. With ``ip6_tunnel`` loaded the kernel keeps ``ip6tnl0`` (``::`` to ``::``) in
every namespace: the start-up probe avoids its end points and never touches it. The raw
transport's guard would drop the IPv6-in-IPv6 the kernel must decapsulate, so ``start`` asks it
to leave protocol 41 to the kernel (:meth:`haha.io.raw.RawTransport.leave_tunnels_to_kernel`).
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
from collections import Counter
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from zope.interface import implementer

from ..errors import StartupError
from ..logging import class_logger
from ..interfaces import IAddressHolder, IForwardingBackend, IKernelTunnels
from .common import LinkDuties, Ownership, Scope
from .netsys import RTPROT_HAHA, NetlinkFailure
from .null import check_route, route_json

if TYPE_CHECKING:
    from .context import BackendContext

EEXIST = 17
EOPNOTSUPP = 95
_TUNNEL_NAME = re.compile(r"^haha\d+$")


class KernelUnsupported(StartupError, RuntimeError):
    """The kernel lacks what the backend needs (a start-up failure: :mod:`haha.startup`)."""


NO_TUNNEL_MESSAGE = (
    "the netlink backend needs the kernel's IPv6-in-IPv6 tunnel driver (ip6_tunnel, "
    "CONFIG_IPV6_TUNNEL) and this kernel does not have it ({why}); use backend = tun, which "
    "tunnels in user space"
)


def read_kernel_config() -> Optional[str]:
    """The running kernel's build configuration text, or None when it cannot be found."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return f.read()
    except OSError:
        pass
    try:
        with open(f"/boot/config-{os.uname().release}") as f:
            return f.read()
    except OSError:
        return None


def require_ip6_tunnel(netlink: Any,
                       kernel_config: Optional[Callable[[], Optional[str]]] = read_kernel_config
                       ) -> None:
    """Raise :class:`KernelUnsupported` (a one-line start-up error naming the driver) unless
    the kernel can make ip6tnl links: its configuration (``kernel_config()``, None: unknown)
    says ``# CONFIG_IPV6_TUNNEL is not set``, or a probe link fails with "Operation not
    supported". Used by the home agent's backend and the mobile node's kernel tunnel.

    A kernel with ``ip6_tunnel`` loaded keeps a fallback device ``ip6tnl0`` (local ``::``,
    remote ``::``) in every namespace (unless ``net.core.fb_tunnels_only_for_init_net``), and
    two ip6tnl links may not share their end points: the probe's remote end is therefore an
    address of the discard-only prefix 100::/64 (RFC 6666) made unique by the process id,
    never ``::``. "File exists" (a link of that name or those end points is there) proves the
    driver as well as a created link does."""
    config = kernel_config() if kernel_config else None
    if config is not None and "# CONFIG_IPV6_TUNNEL is not set" in config:
        raise KernelUnsupported(NO_TUNNEL_MESSAGE.format(why="CONFIG_IPV6_TUNNEL is not set"))
    pid = os.getpid()
    probe = f"hahap{pid % 100000}"
    remote = IPv6Address("100::") + (pid & 0xFFFFFFFF)
    try:
        netlink.ip6tnl_add(probe, "::", remote)
    except NetlinkFailure as e:
        if e.errno == EOPNOTSUPP:
            raise KernelUnsupported(NO_TUNNEL_MESSAGE.format(
                why="creating an ip6tnl link fails with 'Operation not supported'")) from None
        if e.errno == EEXIST:
            return
        raise
    netlink.link_delete(probe)


@implementer(IForwardingBackend, IAddressHolder)
class NetlinkBackend(LinkDuties):
    """Kernel tunnels. ``transport``: sends the unsolicited Neighbour Advertisements;
    ``netlink``: the seam (default pyroute2 in the current namespace); ``kernel_config``: a
    callable returning the kernel configuration text or None; ``ownership``: what an earlier
    run of the same daemon may have left (:class:`~haha.backends.common.Ownership`; None:
    nothing reclaimed); ``log``: a Logger carrying the daemon's identity (None: the class's
    own). The plugin builds it with :func:`build` from a
    :class:`~haha.backends.context.BackendContext`."""

    name = "netlink"
    log = class_logger()

    def __init__(self, reactor: Any = None, transport: Any = None, table: Optional[int] = None,
                 prefix_metric: int = 1024, router_flag: bool = False,
                 enable_forwarding: bool = True, netlink: Any = None,
                 kernel_config: Optional[Callable[[], Optional[str]]] = read_kernel_config,
                 ownership: Optional[Ownership] = None, log: Any = None) -> None:
        self._reactor = reactor
        self.transport = transport
        self.table = table
        self.prefix_metric = prefix_metric
        self.router_flag = router_flag
        self.enable_forwarding = enable_forwarding
        self._netlink = netlink
        self._kernel_config = kernel_config
        self.counters = Counter()
        self.routes: Dict[IPv6Address, Any] = {}
        self._tunnels: Dict[Any, List[Any]] = {}  # (local, care_of) -> [name, set(home)]
        self._names = itertools.count()
        self.running = False
        self._init_link_duties(ownership, log)

    def capabilities(self) -> frozenset[str]:
        return frozenset({"tunnel", "proxy-nd", "prefix-route"})

    def start(self) -> None:
        """Check that the kernel can make ip6tnl links (raise :class:`KernelUnsupported`
        naming the missing driver when it cannot), remove what an earlier run of the same
        daemon left (when ``ownership`` is set), enable forwarding."""
        require_ip6_tunnel(self.netlink, self._kernel_config)
        if IKernelTunnels.providedBy(self.transport):
            # the raw transport's guard would drop what ip6tnl must receive
            self.transport.leave_tunnels_to_kernel(True)
        self._claim()  # an earlier run's leftovers go before anything is installed
        if self.enable_forwarding:
            try:
                self._set_sysctl("net.ipv6.conf.all.forwarding", "1")
            except NetlinkFailure:
                self._release()
                raise
        self.running = True

    def _reclaim_more(self, scopes: List[Scope]) -> None:
        """Leftover tunnels: ip6tnl links named like ours (``hahaN``) from one of our
        addresses that this run did not make."""
        ours = {entry[0] for entry in self._tunnels.values()}
        try:
            tunnels = self.netlink.ip6tnl_dump()
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot list tunnels: {error}", error=str(e))
            return
        for name, (local, remote) in sorted(tunnels.items()):
            if name in ours or not _TUNNEL_NAME.match(name):
                continue
            if not any(local in s.addresses for s in scopes):
                continue
            if self._nl(f"remove leftover tunnel {name}", self.netlink.link_delete, name):
                self._leftover(f"tunnel {name} ({local} -> {remote})")

    def stop(self) -> None:
        for home in list(self.routes):
            self.remove(home)
        self._stop_link_duties()
        self.running = False

    def install(self, route: Any) -> None:
        check_route(route)
        if route.home_address in self.routes:
            self.remove(route.home_address)
        key = (route.local, route.care_of)
        entry = self._tunnels.get(key)
        if entry is None:
            name = f"haha{next(self._names)}"
            if not self._nl(f"create tunnel {name}", self.netlink.ip6tnl_add, name,
                            route.local, route.care_of):
                return
            self._nl(f"bring {name} up", self.netlink.link_set, name, up=True)
            entry = self._tunnels[key] = [name, set()]
        entry[1].add(route.home_address)
        self.routes[route.home_address] = route
        for net in [IPv6Network(route.home_address)] + list(route.prefixes):
            self._nl(f"route {net} into {entry[0]}", self.netlink.route_replace, net,
                     dev=entry[0], table=self.table, proto=RTPROT_HAHA)

    def remove(self, home_address: IPv6Address) -> None:
        route = self.routes.pop(home_address, None)
        if route is None:
            return
        key = (route.local, route.care_of)
        name, homes = self._tunnels[key]
        for net in [IPv6Network(home_address)] + list(route.prefixes):
            self._nl(f"remove route {net}", self.netlink.route_delete, net, dev=name,
                     table=self.table, proto=RTPROT_HAHA)
        homes.discard(home_address)
        if not homes:
            del self._tunnels[key]
            self._nl(f"delete tunnel {name}", self.netlink.link_delete, name)

    def snapshot(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "routes": [route_json(self.routes[h]) for h in sorted(self.routes)],
            "tunnels": {v[0]: [str(k[0]), str(k[1])] for k, v in self._tunnels.items()},
            "kernel_routes": sorted({str(n) for r in self.routes.values()
                                     for n in [IPv6Network(r.home_address)] + list(r.prefixes)}),
            "tunnel_packets": self._tunnel_packets(),
            "proxy_nd": [[str(a), i] for a, i in sorted(self.proxied)],
            "prefixes": [str(p) for p in sorted(self.prefixes)],
            "counters": dict(self.counters),
        }


    def _tunnel_packets(self) -> Dict[str, Dict[str, int]]:
        """The kernel's packet counters of this run's tunnels: ``{name: {"encapsulated": tx,
        "decapsulated": rx}}`` (the kernel does the work, so haha's own counters cannot)."""
        out = {}
        for name, _ in self._tunnels.values():
            try:
                stats = self.netlink.link_stats(name)
            except NetlinkFailure:
                self.counters["netlink_errors"] += 1
                continue
            out[name] = {"encapsulated": stats["tx_packets"], "decapsulated": stats["rx_packets"]}
        return out


def build(context: BackendContext) -> NetlinkBackend:
    """The ``netlink`` backend plugin's factory: a complete :class:`NetlinkBackend` from a
    :class:`~haha.backends.context.BackendContext` (its ``[backend:netlink]`` options, reactor,
    transport for the unsolicited Neighbour Advertisement, ownership, netlink seam)."""
    options = context.options
    return NetlinkBackend(context.reactor, context.transport,
                          table=options.get_int("table", None, minimum=1, maximum=0xFFFFFFFE),
                          enable_forwarding=options.get_bool("forwarding", True),
                          router_flag=options.get_bool("router-flag", False),
                          netlink=context.netlink, ownership=context.ownership,
                          log=context.log)
