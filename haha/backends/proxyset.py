"""The proxy Neighbour Discovery entries a backend holds, as a set of ``(address, interface)``.

A home agent on a home link proxies ND for every home address it serves (RFC 6275 10.4.1),
so a backend holds one entry per primary binding: 100,000 at the scale the project aims at.
Held as a set of 2-tuples, each entry costs its tuple (64 octets) besides its slot in the set;
:class:`ProxiedSet` keeps one set of addresses per interface instead (a home agent proxies on
one or a few interfaces), so an entry costs only its slot: the address object is the one the
binding's route already holds. It behaves as a ``set`` of ``(address, interface)`` pairs
(``add``, ``discard``, ``in``, iteration, ``len``, comparison with sets).
"""

from __future__ import annotations

from collections.abc import MutableSet
from typing import Any, Dict, Generic, Hashable, Iterable, Iterator, Optional, Set, Tuple, TypeVar

#: The interface's type: ``str``, or ``Optional[str]`` where None stands for no interface.
I = TypeVar("I", str, Optional[str])


class ProxiedSet(MutableSet[Tuple[Any, I]], Generic[I]):
    """A set of ``(address, interface)`` pairs stored as ``{interface: {address, ...}}``."""

    __slots__ = ("_by_interface",)

    def __init__(self, pairs: Iterable[Tuple[Any, I]] = ()) -> None:
        self._by_interface: Dict[I, Set[Hashable]] = {}
        for pair in pairs:
            self.add(pair)

    def add(self, pair: Tuple[Any, I]) -> None:
        address, interface = pair
        addresses = self._by_interface.get(interface)
        if addresses is None:
            addresses = self._by_interface[interface] = set()
        addresses.add(address)

    def discard(self, pair: Tuple[Any, I]) -> None:
        address, interface = pair
        addresses = self._by_interface.get(interface)
        if addresses is not None:
            addresses.discard(address)
            if not addresses:
                del self._by_interface[interface]

    def clear(self) -> None:
        self._by_interface.clear()

    def __contains__(self, pair: object) -> bool:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return False
        addresses = self._by_interface.get(pair[1])
        return addresses is not None and pair[0] in addresses

    def __iter__(self) -> Iterator[Tuple[Any, I]]:
        for interface, addresses in list(self._by_interface.items()):
            for address in list(addresses):
                yield address, interface

    def __len__(self) -> int:
        return sum(len(addresses) for addresses in self._by_interface.values())

    def __repr__(self) -> str:
        return f"ProxiedSet({sorted(self, key=repr)!r})"
