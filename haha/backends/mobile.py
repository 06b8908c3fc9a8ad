"""What both mobile node tunnels do the same way: the policy rules and routing table that send
the home address's (and a mobile router's prefixes') traffic into the tunnel, the steering of
applications that choose no source address, the removal of rules a killed run left, the
checks of :meth:`set_endpoint`'s arguments and the home Neighbour Advertisement.

The user-space tunnel (:class:`haha.backends.tun.MobileTunnel`, a TUN device) and the kernel
tunnel (:class:`haha.backends.netlink_mobile.KernelMobileTunnel`, ip6tnl links) differ only in
what the table's default route leads into and in who encapsulates.

Rules (docs/io.md): ``from <home address>`` and ``from <each prefix>`` look up ``table`` at
``rule_priority``; with a steering mark, rules ``rule_priority + 1`` and ``+ 2``
(:meth:`~haha.backends.netsys.Pyroute2Netlink.steer_add`) send every packet not marked with it
that no specific main-table route claims to ``table`` too. Every rule carries haha's routing
protocol number; a run removes, at start, those of its own table (the table is the node's own)
that a killed run left.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, FrozenSet, Iterable, Optional, Set, Tuple

from .netsys import RTPROT_HAHA, NetlinkFailure

#: The mobile node's policy routing table unless configured ("MN").
DEFAULT_TABLE = 0x4D4E
DEFAULT_RULE_PRIORITY = 1000


def check_table(table: Optional[int]) -> int:
    """``table`` (None: :data:`DEFAULT_TABLE`), refused when it is one of the kernel's own
    (local 255, main 254, default 253) or out of range."""
    if table is None:
        table = DEFAULT_TABLE
    if not 1 <= table < 0xFFFFFFFF or table in (253, 254, 255):
        raise ValueError(f"routing table {table} is reserved or out of range")
    return table


def check_endpoint(home_address: Any, care_of: Any, home_agent: Any, prefixes: Iterable[Any],
                   home_agents: Iterable[Any]
                   ) -> Tuple[FrozenSet[IPv6Address], Tuple[IPv6Network, ...]]:
    """Type checks of :meth:`IMobileTunnel.set_endpoint`'s arguments (``TypeError`` naming the
    bad one, before anything changes); returns ``(home_agents, prefixes)`` as a frozenset and
    a tuple."""
    for name, value in (("home_address", home_address), ("care_of", care_of),
                        ("home_agent", home_agent)):
        if not isinstance(value, IPv6Address):
            raise TypeError(f"{name} {value!r} is not an IPv6Address")
    agents = frozenset(home_agents)
    for a in agents:
        if not isinstance(a, IPv6Address):
            raise TypeError(f"home agent {a!r} is not an IPv6Address")
    nets = tuple(prefixes)
    for p in nets:
        if not isinstance(p, IPv6Network):
            raise TypeError(f"prefix {p!r} is not an IPv6Network")
    return agents, nets


class MobileRouting:
    """Mixin for a mobile node's tunnel. The host class provides ``netlink`` (the seam),
    ``counters``, ``log``, ``_nl`` and ``_leftover`` and ``send_unsolicited_na``
    (:class:`haha.backends.common.LinkDuties`), and sets ``table``, ``rule_priority``,
    ``steer_mark``, ``home_address`` and ``prefixes`` (the node's own mobile network
    prefixes)."""

    netlink: Any
    counters: Counter[str]
    log: Any
    table: Optional[int]  # as LinkDuties declares it; always set (check_table)
    rule_priority: int
    steer_mark: Optional[int]
    home_address: Optional[IPv6Address]
    prefixes: Any  # the node's own prefixes (a tuple), not LinkDuties' advertised ones
    _nl: Callable[..., bool]
    _leftover: Callable[[str], None]
    send_unsolicited_na: Callable[[IPv6Address, str], Optional[bytes]]

    def _sources(self) -> Set[IPv6Network]:
        """The sources whose traffic goes into the tunnel: the home address and the prefixes
        (nothing while no endpoint is set)."""
        if self.home_address is None:
            return set()
        return {IPv6Network(self.home_address)} | set(self.prefixes)

    def _delete_rules(self, sources: Iterable[IPv6Network]) -> None:
        for src in sources:
            self._nl(f"delete rule from {src}", self.netlink.rule_delete, src, self.table,
                     self.rule_priority)

    def _add_rules(self, sources: Iterable[IPv6Network]) -> None:
        for src in sources:
            self._nl(f"rule from {src}", self.netlink.rule_add, src, self.table,
                     self.rule_priority, proto=RTPROT_HAHA)

    def _steer(self, on: bool) -> None:
        """Add (``on``) or remove the steering rules, when there is a steering mark."""
        if self.steer_mark is None:
            return
        if on:
            self._nl("steer unmarked traffic into the tunnel", self.netlink.steer_add,
                     self.table, self.rule_priority + 1, self.steer_mark, proto=RTPROT_HAHA)
        else:
            self._nl("remove the steering rules", self.netlink.steer_delete, self.table,
                     self.rule_priority + 1, self.steer_mark)

    def _reclaim_rules(self) -> None:
        """Policy rules with haha's protocol number into this tunnel's table at its priority,
        and steering rules into its table, are an earlier run's (the table is the node's own):
        removed, logged and counted."""
        try:
            rules = self.netlink.rule_dump()
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot list policy rules: {error}", error=str(e))
            return
        for src, table, priority, proto in rules:
            if proto != RTPROT_HAHA or table != self.table or priority != self.rule_priority:
                continue
            if self._nl(f"remove leftover rule from {src}", self.netlink.rule_delete, src,
                        table, priority):
                self._leftover(f"policy rule from {src} to table {table}")
        try:
            steering = self.netlink.steer_dump()
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot list policy rules: {error}", error=str(e))
            return
        for table, priority, mark, proto in steering:
            if proto != RTPROT_HAHA or table != self.table:
                continue
            if self._nl(f"remove leftover steering rules at {priority}",
                        self.netlink.steer_delete, table, priority, mark):
                self._leftover(f"steering rules at {priority} to table {table}")

    def announce_home(self, home_address: IPv6Address, interface: str) -> Optional[bytes]:
        """Back on the home link after deregistering: one unsolicited Neighbour
        Advertisement to all-nodes for ``home_address`` on ``interface`` with our link-layer
        address and the Override flag (RFC 6275 11.5.4), so that neighbours (the home link's
        router) stop sending to the home agent that proxied for us. Returns the packet sent,
        or None (counted as ``na_errors``)."""
        if not isinstance(home_address, IPv6Address):
            raise TypeError(f"home address {home_address!r} is not an IPv6Address")
        if self.home_address is not None:
            raise RuntimeError("the tunnel is still up: the node is not home")
        return self.send_unsolicited_na(home_address, interface)
