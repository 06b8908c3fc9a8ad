"""Keep Python's full garbage collections small in a daemon holding 100,000 bindings.

CPython's collector examines every tracked object of the oldest generation in a full
collection; a home agent with 100,000 bindings holds a few million such objects, and a full
collection (triggered by allocation, in the middle of a take-over or a mass expiry) then holds
the reactor for hundreds of milliseconds, more than the slicing of the bulk work saves
(``bench/bulk.py``). :class:`GcFreezer` calls ``gc.freeze()`` every ``interval`` seconds: what
is alive by then (the binding cache, the synchronisation state: long-lived by nature) moves to
the permanent generation, which collections skip, so each collection examines at most the
objects of the last interval. ``gc.freeze()`` itself costs no more than splicing lists.

The price: reference cycles that become garbage after being frozen are not reclaimed. haha's
own state is acyclic (entries refer to addresses, never back), and objects freed by reference
counting (nearly all) are freed as usual; :meth:`GcFreezer.counters` says how many objects are
frozen. The daemon (``twistd haha``) installs it; embedders choose.
"""

import gc

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

#: Seconds between two freezes.
INTERVAL = 1.0


class GcFreezer(TimerService):
    """A service freezing the heap every ``interval`` seconds (module docstring)."""

    def __init__(self, interval: float = INTERVAL, clock: IReactorTime | None = None) -> None:
        super().__init__(interval, self.freeze)
        if clock is not None:
            self.clock = clock
        self.freezes = 0

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted hook
        """Stop freezing and give the frozen objects back to the collector."""
        d = super().stopService()
        gc.unfreeze()
        return d

    def freeze(self) -> None:
        """Move every object alive now out of the collector's generations."""
        gc.freeze()
        self.freezes += 1

    def counters(self) -> dict[str, int]:
        """Objects frozen now and freezes so far."""
        return {"gc-frozen": gc.get_freeze_count(), "gc-freezes": self.freezes}


__all__ = ["GcFreezer", "INTERVAL"]
