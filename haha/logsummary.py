"""Per-binding log lines at scale: a few each second, then one summary line per second.

A home agent logs each binding it creates, deletes or loses at info level. With a handful of
nodes that is what an operator wants; in a burst of 10,000 registrations it is 10,000 lines a
second per home agent, and formatting them cost more of the daemon's time than the protocol.
:class:`BurstSummary` lets the first ``per_second`` events of each name through in every second
(``window``); the rest are held back from info (they are still logged at debug level when
debug is on, and still counted as ``event.<name>``), and once the second is over one line says
how many of each were held back. Time is passed in.
"""

from typing import Dict, List, Optional, Tuple

__all__ = ["BurstSummary", "PER_BINDING_EVENTS"]

#: The events a home agent or node logs at info once per binding: these are summarised.
PER_BINDING_EVENTS = frozenset({
    "binding-created", "binding-deleted", "binding-expired", "primary-lost",
    "switch-requested",
})


class BurstSummary:
    """``admit(name, now)``: whether one event may be logged at info (module docstring);
    :meth:`take` returns and forgets what was held back, for the summary line."""

    def __init__(self, per_second: int = 10, window: float = 1.0) -> None:
        if per_second < 0 or not window > 0:
            raise ValueError("per_second must be >= 0 and window positive")
        self.per_second = per_second
        self.window = window
        self._started: Optional[float] = None
        self._shown: Dict[str, int] = {}
        self._held: Dict[str, int] = {}
        #: Events held back from info since the start (all names).
        self.held_back = 0

    def admit(self, name: str, now: float) -> bool:
        """True: log this event at info. False: held back (counted for the summary)."""
        started = self._started
        if started is None or now >= started + self.window:
            self._started = now
            self._shown.clear()
        shown = self._shown.get(name, 0)
        if shown < self.per_second:
            self._shown[name] = shown + 1
            return True
        self._held[name] = self._held.get(name, 0) + 1
        self.held_back += 1
        return False

    def pending(self) -> bool:
        """Whether some events were held back and not yet summarised."""
        return bool(self._held)

    def take(self) -> List[Tuple[str, int]]:
        """``[(event name, count held back)]`` since the last call, by name, and forget them."""
        held = sorted(self._held.items())
        self._held.clear()
        return held
