"""Tombstones: what a home agent remembers of deleted bindings (sans-IO).

A deleted binding (deregistered, expired, deleted by a peer's BIU, swept after a bulk answer)
leaves a tombstone for :data:`TOMBSTONE_TIME` (at least; 4 x ``biu_max_timeout`` when that is
longer): a late or retransmitted BIU entry with an older sequence number must not bring the
binding back. The tombstone guards sequence numbers up to :data:`TOMBSTONE_WINDOW` behind the
deleted one; further behind is a mobile node that restarted with a new random number, which
RFC 6275 9.5.1 lets register. A new registration or a newer BIU entry lifts it.
"""

from collections import deque
from typing import Any, Deque, Dict, Optional, Tuple

from .seqnum import distance

#: A deleted binding leaves a tombstone this long (seconds).
TOMBSTONE_TIME = 300.0

#: ... and guards sequence numbers up to this far behind the deleted one (strictly older).
TOMBSTONE_WINDOW = 64


class Tombstones:
    """The tombstones of one home agent; ``max_timeout`` is its ``biu_max_timeout``."""

    __slots__ = ("_time", "_graves", "_queue")

    def __init__(self, max_timeout: float) -> None:
        self._time = max(TOMBSTONE_TIME, 4 * max_timeout)
        self._graves: Dict[Any, Tuple[int, float]] = {}  # home address -> (sequence, until)
        self._queue: Deque[Tuple[float, Any]] = deque()

    def __bool__(self) -> bool:
        return bool(self._graves)

    def __len__(self) -> int:
        return len(self._graves)

    def __contains__(self, home_address: object) -> bool:
        return home_address in self._graves

    def bury(self, home_address: Any, sequence: int, now: float) -> None:
        """Remember that the binding of ``home_address`` was deleted at ``sequence``; forget
        the tombstones that have run out."""
        until = now + self._time
        self._graves[home_address] = (sequence, until)
        q = self._queue
        q.append((until, home_address))
        while q and q[0][0] <= now:
            t, old = q.popleft()
            entry = self._graves.get(old)
            if entry is not None and entry[1] == t:
                del self._graves[old]

    def buried(self, home_address: Any, sequence: int, now: float) -> bool:
        """Whether a BIU entry for ``home_address`` with ``sequence`` is a late copy of a
        deleted binding."""
        entry = self._graves.get(home_address)
        if entry is None:
            return False
        if entry[1] <= now:
            del self._graves[home_address]
            return False
        return -TOMBSTONE_WINDOW <= distance(sequence, entry[0]) < 0

    def sequence(self, home_address: Any) -> Optional[int]:
        """The sequence number the binding of ``home_address`` was deleted at, or None."""
        entry = self._graves.get(home_address)
        return None if entry is None else entry[0]

    def lift(self, home_address: Any) -> None:
        """The binding of ``home_address`` exists again: forget its tombstone."""
        self._graves.pop(home_address, None)
