"""The mobile node's tunnel in the kernel (``backend = netlink`` in a mobile node's file): ip6tnl
links, so that the kernel encapsulates and decapsulates (RFC 2473) and no data packet passes
through user space.

While away from home (:meth:`KernelMobileTunnel.set_endpoint`):

- one ip6tnl link (mode ip6ip6, no Tunnel Encapsulation Limit option, outer Hop Limit
  ``hop_limit``) from the care-of address to the registered home agent carries the home
  address (``nodad``); routing table ``table``'s default route leads into it, and the policy
  rules of :mod:`haha.backends.mobile` send the home address's and the prefixes' traffic (and,
  with a steering mark, every unmarked packet no specific route claims) to that table. The
  outer packets leave from the care-of address and use the main table: with a steering mark
  the links carry it (``fwmark``), as the daemon's own packets do, so the steering rules do not
  send them back into the tunnel;
- one receive-only ip6tnl link from the care-of address to each other home agent of the node's
  list (draft 3.2: without a home link every home agent forwards from its Binding Cache Copies,
  so the node's traffic may arrive through any of them). The kernel matches an arriving
  IPv6-in-IPv6 packet to the link with exactly its outer addresses; from any other source it
  is not decapsulated (the kernel's fallback ``ip6tnl0`` is down);
- a new care-of address makes new links (make before break: the old ones are deleted after the
  new default route is in place; their addresses and routes go with them); a new home agent
  (switch request, re-registration elsewhere) moves the home address and the default route to
  its link, the old home agent's link staying receive-only while it is in the list.

:meth:`~KernelMobileTunnel.clear` (back home, deregistered) removes the rules, the route and
every link. ``start`` refuses, with one line, a kernel without ``ip6_tunnel``
(:func:`haha.backends.netlink.require_ip6_tunnel`), removes what a killed run left (policy
rules of haha's protocol in the node's table, ip6tnl links named ``device`` + a number, haha's
routes in the node's table: unlike a TUN device, ip6tnl links outlive the process), and asks
the raw transport to leave IPv6-in-IPv6 to the kernel (its guard drops it otherwise).

What the kernel does not do as :class:`haha.backends.tun.MobileTunnel` does: it does not check
the inner destination of a decapsulated packet. A mobile node has forwarding off, so a packet
not for one of its addresses is dropped; a mobile router (forwarding on) forwards what its home
agents tunnel to it, as a router at the end of any ip6tnl tunnel does. Packet counts are the
kernel's (``tunnel_packets`` in :meth:`~KernelMobileTunnel.snapshot`).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Tuple

from zope.interface import implementer

from ..interfaces import IHomeAnnouncer, IKernelTunnels, IMobileTunnel, ISnapshot, IStartStop
from ..logging import class_logger
from .common import LinkDuties
from .mobile import (DEFAULT_RULE_PRIORITY, DEFAULT_TABLE, MobileRouting, check_endpoint,
                     check_table)
from .netlink import read_kernel_config, require_ip6_tunnel
from .netsys import RTPROT_HAHA, NetlinkFailure

DEFAULT_DEVICE = "hahamn"
DEFAULT_HOP_LIMIT = 64
#: A link name is at most 15 characters: the prefix leaves room for five digits.
_DEVICE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,9}$")
_DEFAULT_ROUTE = IPv6Network("::/0")


@implementer(IMobileTunnel, IStartStop, IHomeAnnouncer, ISnapshot)
class KernelMobileTunnel(MobileRouting, LinkDuties):
    """The node's (or mobile router's) end of the bidirectional tunnel as kernel ip6tnl links
    (module docstring).

    ``transport``: sends the home Neighbour Advertisement and is told to leave IPv6-in-IPv6 to
    the kernel (:class:`haha.io.raw.RawTransport`). ``device``: the links' name prefix
    (``hahamn`` makes ``hahamn0``, ``hahamn1``...; links of that form are taken for an earlier
    run's, so the prefix, like ``table``, is the node's own). ``hop_limit``: the outer Hop
    Limit; ``mtu``: the links' MTU (None: the kernel's, the path's MTU minus 40).
    ``table``/``rule_priority``/``steer_mark``: as :class:`haha.backends.tun.MobileTunnel`.
    ``netlink``: the seam (None: pyroute2 in this namespace); ``kernel_config``: a callable
    returning the kernel configuration text or None; ``log``: a Logger with the daemon's
    identity."""

    name = "netlink"
    log = class_logger()

    def __init__(self, transport: Any = None, device: str = DEFAULT_DEVICE,
                 hop_limit: int = DEFAULT_HOP_LIMIT, mtu: Optional[int] = None,
                 table: Optional[int] = DEFAULT_TABLE,
                 rule_priority: int = DEFAULT_RULE_PRIORITY, netlink: Any = None,
                 kernel_config: Optional[Callable[[], Optional[str]]] = read_kernel_config,
                 router_flag: bool = False, steer_mark: Optional[int] = None,
                 log: Any = None) -> None:
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise ValueError(f"tunnel device prefix {device!r} is not 1-10 letters, digits, "
                             "'_' or '-' starting with a letter")
        if not 1 <= hop_limit <= 255:
            raise ValueError(f"tunnel hop limit {hop_limit} out of range 1-255")
        if mtu is not None and not 1280 <= mtu <= 65535:
            raise ValueError(f"tunnel MTU {mtu} out of range 1280-65535 (RFC 8200 5)")
        if steer_mark is not None and not 1 <= steer_mark <= 0xFFFFFFFF:
            raise ValueError(f"steering mark {steer_mark} out of range 1-4294967295")
        self.transport = transport
        self._netlink = netlink
        self._kernel_config = kernel_config
        self.device = device
        self.hop_limit = hop_limit
        self.mtu = mtu
        self.table = check_table(table)
        self.rule_priority = rule_priority
        self.router_flag = router_flag  # a mobile router's home Neighbour Advertisement has R
        self.steer_mark = steer_mark
        self.prefix_metric = None
        self.counters: Counter[str] = Counter()
        self.running = False
        self._init_link_duties(None, log)
        self.home_address: Optional[IPv6Address] = None
        self.care_of: Optional[IPv6Address] = None
        self.home_agent: Optional[IPv6Address] = None
        self.home_agents: FrozenSet[IPv6Address] = frozenset()
        self.prefixes: Tuple[IPv6Network, ...] = ()  # type: ignore[assignment]
        self._tunnels: Dict[IPv6Address, str] = {}  # home agent -> link (local: care_of)
        self._address_on: Optional[str] = None  # the link holding the home address
        self._route_dev: Optional[str] = None  # the link the table's default route uses
        self._names = itertools.count()
        self._pattern = re.compile(rf"^{re.escape(device)}\d+$")

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Refuse a kernel without ``ip6_tunnel`` (:class:`haha.backends.netlink.
        KernelUnsupported`, one line), remove an earlier run's rules, links and routes, leave
        IPv6-in-IPv6 to the kernel."""
        if self.running:
            raise RuntimeError("mobile tunnel already started")
        require_ip6_tunnel(self.netlink, self._kernel_config)
        self._reclaim_rules()
        self._reclaim_links()
        if IKernelTunnels.providedBy(self.transport):
            # the raw transport's guard would drop what the ip6tnl links must receive
            self.transport.leave_tunnels_to_kernel(True)
        self.running = True
        self.log.info("kernel mobile tunnel started (ip6tnl {device}N, table {table})",
                      device=self.device, table=self.table)

    def stop(self) -> None:
        """Remove everything (:meth:`clear`) and give IPv6-in-IPv6 back to the transport's
        guard. Idempotent."""
        self.clear()
        if self.running and IKernelTunnels.providedBy(self.transport):
            try:
                self.transport.leave_tunnels_to_kernel(False)
            except Exception as e:  # stopping goes on: the transport stops next
                self.counters["transport_errors"] += 1
                self.log.warn("cannot restore the transport's guard: {error}", error=str(e))
        self.running = False

    def _reclaim_links(self) -> None:
        """ip6tnl links named like ours (an earlier run's: they outlive the process), then
        haha's routes left in our table."""
        try:
            links = self.netlink.ip6tnl_dump()
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot list tunnels: {error}", error=str(e))
            links = {}
        for name, (local, remote) in sorted(links.items()):
            if not self._pattern.match(name) or name in self._tunnels.values():
                continue
            if self._nl(f"remove leftover tunnel {name}", self.netlink.link_delete, name):
                self._leftover(f"tunnel {name} ({local} -> {remote})")
        try:
            routes = self.netlink.route_dump(table=self.table, proto=RTPROT_HAHA)
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot list routes: {error}", error=str(e))
            return
        for r in routes:
            if self._nl(f"remove leftover route {r['dst']}", self.netlink.route_delete,
                        r["dst"], dev=r.get("dev"), table=self.table, proto=RTPROT_HAHA):
                self._leftover(f"route {r['dst']} in table {self.table}")

    # -- end points ---------------------------------------------------------------------------

    def set_endpoint(self, home_address: IPv6Address, care_of: IPv6Address,
                     home_agent: IPv6Address, prefixes: Iterable[IPv6Network] = (),
                     home_agents: Iterable[IPv6Address] = ()) -> None:
        """Tunnel ``home_address`` (and ``prefixes``) between ``care_of`` and ``home_agent``,
        receiving from every one of ``home_agents`` too; replaces any previous endpoint
        (module docstring). Kernel refusals are logged and counted (``netlink_errors``)."""
        agents, nets = check_endpoint(home_address, care_of, home_agent, prefixes, home_agents)
        if not self.running:
            raise RuntimeError("mobile tunnel not started")
        wanted = {home_agent} | agents
        keep = {} if care_of != self.care_of else {
            h: n for h, n in self._tunnels.items() if h in wanted}
        stale = [n for h, n in self._tunnels.items() if keep.get(h) != n]
        tunnels = dict(keep)
        for h in [home_agent] + sorted(wanted - {home_agent}):
            if h not in tunnels:
                name = self._make_link(care_of, h)
                if name is not None:
                    tunnels[h] = name
        send = tunnels.get(home_agent)
        old_home, old_on = self.home_address, self._address_on
        if send is not None and (send, home_address) != (old_on, old_home):
            self._address_on = send if self._nl(
                f"put the home address on {send}", self.netlink.address_add,
                f"{home_address}/128", send) else None
            if old_on is not None and old_on not in stale:
                self._nl(f"remove the home address from {old_on}", self.netlink.address_delete,
                         f"{old_home}/128", old_on)
        elif send is None:
            if old_on is not None and old_on not in stale:  # kept only to receive now
                self._nl(f"remove the home address from {old_on}", self.netlink.address_delete,
                         f"{old_home}/128", old_on)
            self._address_on = None
        if send != self._route_dev:
            if send is not None:
                self._nl(f"default route into {send}", self.netlink.route_replace,
                         _DEFAULT_ROUTE, dev=send, table=self.table, proto=RTPROT_HAHA)
            elif self._route_dev not in stale:
                self._nl("remove the tunnel route", self.netlink.route_delete, _DEFAULT_ROUTE,
                         dev=self._route_dev, table=self.table, proto=RTPROT_HAHA)
            self._route_dev = send
        new_sources = {IPv6Network(home_address)} | set(nets)
        old_sources = self._sources()
        self._delete_rules(old_sources - new_sources)
        self._add_rules(new_sources - old_sources)
        if old_home is None:
            self._steer(True)
        for name in stale:
            self._nl(f"delete tunnel {name}", self.netlink.link_delete, name)
        self._tunnels = tunnels
        self.home_address, self.care_of, self.home_agent = home_address, care_of, home_agent
        self.home_agents = agents
        self.prefixes = nets
        if send is None:
            self.counters["no_tunnel_to_home_agent"] += 1
            self.log.warn("no tunnel to {ha}: {hoa}'s traffic cannot leave", ha=home_agent,
                          hoa=home_address)

    def _make_link(self, local: IPv6Address, remote: IPv6Address) -> Optional[str]:
        """A new ip6tnl link ``local`` -> ``remote``, up; its name, or None (counted)."""
        name = f"{self.device}{next(self._names)}"
        if not self._nl(f"create tunnel {name} to {remote}", self.netlink.ip6tnl_add, name,
                        local, remote, hop_limit=self.hop_limit, fwmark=self.steer_mark):
            return None
        if not self._nl(f"bring {name} up", self.netlink.link_set, name, up=True,
                        mtu=self.mtu):
            self._nl(f"delete tunnel {name}", self.netlink.link_delete, name)
            return None
        return name

    def clear(self) -> None:
        """Remove the endpoint: rules, the tunnel route, every link (the home address goes
        with its link). Idempotent."""
        if self.home_address is None:
            return
        self._delete_rules(self._sources())
        self._steer(False)
        if self._route_dev is not None:
            self._nl("remove the tunnel route", self.netlink.route_delete, _DEFAULT_ROUTE,
                     dev=self._route_dev, table=self.table, proto=RTPROT_HAHA)
        for name in self._tunnels.values():
            self._nl(f"delete tunnel {name}", self.netlink.link_delete, name)
        self._tunnels = {}
        self._address_on = self._route_dev = None
        self.home_address = self.care_of = self.home_agent = None
        self.home_agents = frozenset()
        self.prefixes = ()

    # -- observation --------------------------------------------------------------------------

    @property
    def links(self) -> Dict[str, Tuple[IPv6Address, IPv6Address]]:
        """``{name: (care-of, home agent)}`` of this run's links."""
        if self.care_of is None:
            return {}
        return {n: (self.care_of, h) for h, n in self._tunnels.items()}

    def snapshot(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "device": self._route_dev,
            "home_address": str(self.home_address) if self.home_address else None,
            "care_of": str(self.care_of) if self.care_of else None,
            "home_agent": str(self.home_agent) if self.home_agent else None,
            "home_agents": sorted(str(a) for a in self.home_agents),
            "prefixes": [str(p) for p in self.prefixes],
            "table": self.table,
            "tunnels": {n: [str(a), str(b)] for n, (a, b) in sorted(self.links.items())},
            "tunnel_packets": self._tunnel_packets(),
            "counters": dict(self.counters),
        }

    def _tunnel_packets(self) -> Dict[str, Dict[str, int]]:
        """The kernel's counters of this run's links: ``{name: {"encapsulated": tx,
        "decapsulated": rx}}``."""
        out: Dict[str, Dict[str, int]] = {}
        for name in sorted(self._tunnels.values()):
            try:
                stats = self.netlink.link_stats(name)
            except NetlinkFailure:
                self.counters["netlink_errors"] += 1
                continue
            out[name] = {"encapsulated": stats["tx_packets"], "decapsulated": stats["rx_packets"]}
        return out


def options_of(options: Any) -> Dict[str, Any]:
    """The keyword arguments a mobile node's ``[backend:netlink]`` gives
    :class:`KernelMobileTunnel`: ``device``, ``mtu``, ``hop-limit``, ``table``."""
    mtu = options.get_int("mtu", 0, minimum=0, maximum=65535)
    if mtu and mtu < 1280:
        raise options.error("mtu", f"{mtu} is below IPv6's minimum link MTU 1280 (0: the "
                            "kernel's)")
    device = options.get_str("device", DEFAULT_DEVICE)
    if not _DEVICE.match(device):
        raise options.error("device", f"{device!r} is not a link name prefix (1-10 letters, "
                            "digits, '_' or '-', starting with a letter)")
    return {
        "device": device,
        "mtu": mtu or None,
        "hop_limit": options.get_int("hop-limit", DEFAULT_HOP_LIMIT, minimum=1, maximum=255),
        "table": options.get_int("table", None, minimum=1, maximum=0xFFFFFFFE),
    }


__all__: List[str] = ["DEFAULT_DEVICE", "KernelMobileTunnel", "options_of"]
