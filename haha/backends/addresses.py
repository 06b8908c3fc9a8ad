"""Holding a home agent address for address take-over (:mod:`haha.core.addrtakeover`), for the
kernel-facing backends.

``hold_address(address, interface)`` with an interface (a shared home link): the address goes
on that interface as a /128 without Duplicate Address Detection (the peer that had it is dead
or has just released it; DAD would only delay the take-over by a second) and one unsolicited
Neighbour Advertisement (O=1) moves the neighbours' cache entries to this machine at once.
Without an interface (no shared home link): the address goes on ``lo`` (so the kernel takes
packets to it as local) and a /128 route to it, tagged with haha's routing protocol number
(:data:`~haha.backends.netsys.RTPROT_HAHA`, 72) in the backend's table, is what the operator's
routing daemon redistributes to bring the address here (BIRD: ``protocol kernel { ... import
where krt_source = 72; }``; FRR: ``redistribute kernel`` filtered on the protocol).
``release_address`` removes both.

An address held when the daemon is killed stays in the kernel: the kernel keeps answering
Neighbour Solicitations for it and accepting packets to it until the next start, which removes
it before anything else (the held addresses are in the kernel state record of
:mod:`haha.backends.common`), then asks for its own address back.
"""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from ..interfaces import IAddressHolder
from .netsys import RTPROT_HAHA

#: Where an address held without a home link goes.
LOOPBACK = "lo"


class AddressHolding:
    """Mixin for :class:`~haha.backends.common.LinkDuties` hosts: ``held`` maps each address
    held to the interface it is on (None: held as a route)."""

    if TYPE_CHECKING:  # what the host class (LinkDuties) provides
        counters: Counter[str]
        table: Optional[int]
        log: Any

        @property
        def netlink(self) -> Any: ...

        def _nl(self, what: str, func: Callable[..., Any], *args: Any, **kw: Any) -> bool: ...

        def _save_state(self) -> None: ...

        def _leftover(self, what: str) -> None: ...

        def send_unsolicited_na(self, address: IPv6Address, interface: str) -> Optional[bytes]:
            ...

    @property
    def held(self) -> Dict[IPv6Address, Optional[str]]:
        h = self.__dict__.get("_held")
        if h is None:
            h = self.__dict__["_held"] = {}
        return h

    def hold_address(self, address: IPv6Address, interface: Optional[str]) -> None:
        """Answer for ``address``: on ``interface`` with an unsolicited NA, or (``interface``
        None) on ``lo`` with a redistributable /128 route. Failures are logged and counted."""
        if not isinstance(address, IPv6Address):
            raise TypeError(f"{address!r} is not an IPv6Address")
        if interface is not None and (not isinstance(interface, str) or not interface):
            raise TypeError(f"interface {interface!r} is not a name")
        if address in self.held:
            return
        dev = interface or LOOPBACK
        if not self._nl(f"add {address} to {dev}", self.netlink.address_add,
                        f"{address}/128", dev):
            return
        self.held[address] = interface
        self._save_state()
        self.counters["addresses_held"] += 1
        if interface is not None:
            self.send_unsolicited_na(address, interface)
        else:
            self._nl(f"route to {address}", self.netlink.route_replace, f"{address}/128",
                     dev=LOOPBACK, table=self.table, proto=RTPROT_HAHA)
        self.log.info("holding {address} ({how})", address=str(address),
                      how=f"on {interface}" if interface else "as a /128 route")

    def release_address(self, address: IPv6Address, interface: Optional[str] = None) -> None:
        """Stop answering for ``address`` (unknown addresses are ignored)."""
        if address not in self.held:
            return
        interface = self.held.pop(address)
        self._drop_held(address, interface)
        self._save_state()
        self.log.info("released {address}", address=str(address))

    def _drop_held(self, address: IPv6Address, interface: Optional[str]) -> None:
        if interface is None:
            self._nl(f"remove the route to {address}", self.netlink.route_delete,
                     f"{address}/128", dev=LOOPBACK, table=self.table, proto=RTPROT_HAHA)
        self._nl(f"remove {address}", self.netlink.address_delete, f"{address}/128",
                 interface or LOOPBACK)

    def _release_held(self) -> None:
        for address in sorted(self.held, key=int):
            self.release_address(address)

    def _held_json(self) -> List[List[Optional[str]]]:
        return [[str(a), i] for a, i in sorted(self.held.items(), key=lambda x: int(x[0]))]

    def _reclaim_held(self, recorded: Any) -> None:
        """Remove the addresses an earlier run recorded as held (``[[address, interface or
        None], ...]`` from its state record) and this run does not hold."""
        for entry in recorded or ():
            try:
                address, interface = IPv6Address(entry[0]), entry[1]
            except (TypeError, ValueError, IndexError):
                self.log.warn("ignoring a malformed held address {entry!r}", entry=entry)
                continue
            if address in self.held:
                continue
            if interface is None:
                if self._nl(f"remove leftover route to {address}", self.netlink.route_delete,
                            f"{address}/128", dev=LOOPBACK, table=self.table,
                            proto=RTPROT_HAHA):
                    self._leftover(f"route to held address {address}")
            if self._nl(f"remove leftover {address}", self.netlink.address_delete,
                        f"{address}/128", interface or LOOPBACK):
                self._leftover(f"held address {address} on {interface or LOOPBACK}")


def hold_address(backend: Any, effect: Any, home_interface: Optional[str],
                 counters: Counter[str]) -> None:
    """Carry out a :class:`~haha.core.effects.HoldAddress` on ``backend`` (the adapter's
    duty): on ``home_interface`` when the effect is on the link, else as a route. A backend
    that does not provide :class:`~haha.interfaces.IAddressHolder` (a third party's) counts
    ``duty.unsupported`` and holds nothing."""
    if not IAddressHolder.providedBy(backend):
        counters["duty.unsupported"] += 1
        return
    interface = home_interface if effect.on_link else None
    if effect.on:
        backend.hold_address(effect.address, interface)
    else:
        backend.release_address(effect.address, interface)
