"""ESP for address take-over: the survivor speaks with a dead peer's mobile nodes as that peer.

A home agent's SA pair with a mobile node is derived from the node's secret and the two
addresses (:func:`haha.security.keys.derive_pair`), and the mobile nodes keep using the pair of
the address they registered with. So a home agent that holds a dead peer's address X
(:mod:`haha.core.addrtakeover`) derives the pair (X, node) for every node whose key it has and
whose numbers X's owner announced (the nodes it served), and adds it beside its own (:meth:`~haha.security.sadb.SecurityAssociationDatabase.add_local`).

Two numbers make those SAs safe to continue, and the synchronisation carries them: each BIU a
home agent sends holds, per entry and per SA pair it has with that node, an ESP State option
(:class:`haha.wire.options.EspState`) with its outbound sequence number plus :data:`MARGIN`
(a high-water mark it will not pass before its next BIU for the node: a BIU follows every
registration, and between two of them a home agent sends the node at most a Binding
Acknowledgement and a few switch requests) and the highest sequence number it accepted from
the node. The survivor's outbound SA continues above the high-water mark, so the node's replay
window accepts it; its inbound SA counts everything up to the dead peer's top as received, so
an old Binding Update replayed to the new holder is refused. When the address is handed back,
the holder's final numbers travel to the returning home agent in the BIUs that give the
bindings back, and it moves its own SAs past them.
"""

from collections.abc import Iterable, Mapping
from ipaddress import IPv6Address

from haha.core.effects import HoldAddress
from haha.wire.options import BceInfo, EspState

from . import keys as _keys
from .sadb import MOBILE_NODE, SecurityAssociationDatabase

#: How far above its current outbound sequence number a home agent announces its high-water.
MARGIN = 256


class TakeoverKeys:
    """The ESP side of address take-over for one home agent.

    ``sadb`` is its :class:`~haha.security.sadb.SecurityAssociationDatabase`, ``address`` its
    own home agent address, ``secrets`` ``{home address: derivation secret}`` of the mobile
    nodes it serves (``[node-keys]``, ``node-key-dir``; a
    :class:`~haha.security.nodegroup.NodeSecrets` adds a node group's).
    """

    def __init__(self, sadb: SecurityAssociationDatabase, address: IPv6Address,
                 secrets: Mapping[IPv6Address, bytes]) -> None:
        self.sadb = sadb
        self.address = address
        self.secrets = secrets  # a Mapping; a node group's answers lookups, lists nobody
        #: (home address, local address) -> (outbound high-water, inbound top), as learned.
        self.state: dict[tuple[IPv6Address, IPv6Address], tuple[int, int]] = {}
        # (home address, local) -> numbers at release: sent with the node's BIUs from then on,
        # so whoever holds the address next (its owner, back) continues past them.
        self._released: dict[tuple[IPv6Address, IPv6Address], tuple[int, int]] = {}
        self.counters = {"esp-state-learned": 0, "esp-state-sent": 0, "sas-derived": 0}

    # -- what goes out in BIUs ---------------------------------------------------------------

    def options(self, entries: Iterable[BceInfo]) -> tuple[EspState, ...]:
        """The ESP State options for the BIU entries ``entries``."""
        out: list[EspState] = []
        for bce in entries:
            hoa = bce.home_address
            for local, seq, top in self.sadb.state_of(hoa):
                out.append(EspState(hoa, local or self.address, min(seq + MARGIN, 0xFFFFFFFF),
                                    top))
            for (h, local), (high, top) in list(self._released.items()):
                if h == hoa:
                    out.append(EspState(hoa, local, high, top))
        self.counters["esp-state-sent"] += len(out)
        return tuple(out)

    # -- what comes in ---------------------------------------------------------------------------

    def learn(self, options: Iterable[object]) -> None:
        """Merge the ESP State options of an authenticated BIU (highest numbers win); numbers
        for this home agent's own address move its own SAs past them (a hand-back)."""
        for o in options:
            if type(o) is not EspState:
                continue
            key = (o.home_address, o.local)
            high, top = self.state.get(key, (0, 0))
            self.state[key] = (max(high, o.outbound), max(top, o.inbound))
            self.counters["esp-state-learned"] += 1
            if o.local == self.address:
                self.sadb.continue_after(o.home_address, o.outbound, o.inbound)
            elif self.sadb.has_local(o.local, o.home_address):
                self.sadb.continue_after(o.home_address, o.outbound, o.inbound, local=o.local)

    # -- holding and releasing an address ----------------------------------------------------

    def hold(self, address: IPv6Address) -> None:
        """Derive the SA pairs of ``address`` with the nodes its owner announced numbers for
        (the nodes it served: its BIUs carry them), continuing from those numbers. Nodes it
        never announced get nothing: without the numbers their replay window would drop what
        this home agent sends. Its own address has its own SAs already."""
        if address == self.address:
            return
        nodes = sorted((hoa for hoa, local in self.state if local == address
                        and hoa in self.secrets), key=int)
        for hoa in nodes:
            secret = self.secrets[hoa]
            if self.sadb.has_local(address, hoa):
                continue
            high, top = self.state[(hoa, address)]
            for spec in _keys.derive_pair(secret, address, hoa, MOBILE_NODE):
                self.sadb.add_local(spec, address, seq=high, floor=top)
            self._released.pop((hoa, address), None)
            self.counters["sas-derived"] += 2

    def release(self, address: IPv6Address) -> None:
        """Forget the SAs of ``address``, keeping their last numbers for the BIUs that hand the
        bindings back."""
        if address == self.address:
            return
        for hoa in set(self.secrets) | {h for h, local in self.state if local == address}:
            for local, seq, top in self.sadb.state_of(hoa):
                if local == address:
                    self._released[(hoa, address)] = (min(seq + MARGIN, 0xFFFFFFFF), top)
                    self.state[(hoa, address)] = self._released[(hoa, address)]
        self.sadb.remove_local(address)

    def apply(self, effect: HoldAddress) -> None:
        """Carry out the ESP side of a :class:`~haha.core.effects.HoldAddress`."""
        address = effect.address
        assert isinstance(address, IPv6Address)
        (self.hold if effect.on else self.release)(address)
