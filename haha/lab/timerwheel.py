"""Many timers on one reactor call: the load generator's clock for thousands of node adapters.

Each :class:`haha.protocol.MobileNodeAdapter` keeps one timer armed for its machine's next
deadline and asks for a call "as soon as the packets delivered now are handled"
(``callLater(0, ...)``); with the reactor's own ``callLater`` every one of them is a
``DelayedCall`` in the reactor's heap, whose ordering is a Python ``__lt__`` (a heap of 50,000
calls costs about 16 of them per push and per pop) and whose cancellations make the reactor
rebuild the heap now and then. :class:`TimerWheel` offers the same two methods an adapter uses
(``seconds()`` and ``callLater(delay, f, *args)`` returning something with ``active()`` and
``cancel()``) and keeps the timers itself:

- a timer is put in the slot of ``resolution`` seconds that ends after its deadline (it never
  fires early, at most ``resolution`` late); slots are kept in a dict by number, the numbers
  in a heap of ints (compared in C);
- the reactor holds exactly one ``DelayedCall``, for the earliest slot, plus one ``callLater(0)``
  while calls of delay 0 are waiting: all those due run in that one turn, in the order asked;
- a cancelled timer is only marked (dropped when its slot comes);
- a call that raises is counted (``failed``) and logged with its traceback; the others run;
- with ``read_first`` set (the generator: its shared socket's reading), due timers run only
  once it has read everything waiting: one process multiplexes thousands of nodes, and a
  node's answer can wait in the shared socket behind other nodes' packets for seconds, which
  no node with a processor of its own would see; a retransmission timer firing then would
  send the home agent a copy of what it already answered, and the node would process the
  answer to it again (load on both sides that the benchmark would count as the home agents').
  While input waits the due timers wait too (``waited-for-input``), a turn at a time: late,
  never early, as RFC 6275 11.8 allows a node to be.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from ..logging import logger

#: The default slot: 10 ms (a node's shortest timer is a retransmission after 1 s).
DEFAULT_RESOLUTION = 0.01


class Timer:
    """One timer of a :class:`TimerWheel` (what an adapter keeps: ``active``, ``cancel``)."""

    __slots__ = ("f", "args", "when", "state")

    def __init__(self, f: Callable[..., object], args: tuple[Any, ...], when: float) -> None:
        self.f = f
        self.args = args
        self.when = when
        self.state = 0  # 0 pending, 1 fired, 2 cancelled

    def active(self) -> bool:
        """Neither fired nor cancelled."""
        return self.state == 0

    def cancel(self) -> None:
        """It will not run (nothing if it ran already)."""
        if self.state == 0:
            self.state = 2

    def getTime(self) -> float:  # noqa: N802 - as IDelayedCall
        """When it was asked to run (it runs at most one slot later)."""
        return self.when


class TimerWheel:
    """``seconds()`` and ``callLater()`` for many callers on one reactor (module docstring).

    ``reactor`` provides ``IReactorTime``; ``resolution`` is the slot length in seconds."""

    def __init__(self, reactor: IReactorTime, resolution: float = DEFAULT_RESOLUTION) -> None:
        if not resolution > 0:
            raise ValueError(f"resolution {resolution!r} must be positive")
        self.reactor = reactor
        self.resolution = resolution
        self.seconds = reactor.seconds
        self.counters: Counter[str] = Counter()
        self._slots: dict[int, list[Timer]] = {}
        self._heap: list[int] = []
        self._soon: list[Timer] = []
        self._soon_call: IDelayedCall | None = None
        self._call: IDelayedCall | None = None
        self._armed: int | None = None  # the slot self._call is for
        #: Called before due timers run (module docstring): reads what waits and answers
        #: whether it has read everything (True) or ran out of its time first (False).
        self.read_first: Callable[[], bool] | None = None
        self.log = logger("haha.lab.timers")

    def __len__(self) -> int:
        """Timers held (cancelled ones too, until their slot comes)."""
        return len(self._soon) + sum(len(s) for s in self._slots.values())

    def callLater(self, delay: float, f: Callable[..., object],  # noqa: N802
                  *args: Any) -> Timer:
        """Run ``f(*args)`` once ``delay`` seconds have passed (0: after the current turn)."""
        now = self.seconds()
        timer = Timer(f, args, now + delay)
        if delay <= 0:
            self._soon.append(timer)
            if self._soon_call is None:
                self._soon_call = self.reactor.callLater(0, self._run_soon)
            return timer
        # The slot that ends after the deadline: never early, at most one slot late.
        slot = int((now + delay) / self.resolution) + 1
        timers = self._slots.get(slot)
        if timers is None:
            self._slots[slot] = [timer]
            heapq.heappush(self._heap, slot)
            if self._armed is None or slot < self._armed:
                self._arm(slot)
        else:
            timers.append(timer)
        return timer

    def _arm(self, slot: int) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._armed = slot
        self._call = self.reactor.callLater(max(0.0, slot * self.resolution - self.seconds()),
                                            self._run)

    def _run_soon(self) -> None:
        self._soon_call = None
        soon, self._soon = self._soon, []
        for timer in soon:
            self._fire(timer)

    def _run(self) -> None:
        self._call = None
        self._armed = None
        heap, slots = self._heap, self._slots
        read_first = self.read_first
        if read_first is not None and heap and not read_first():
            # Input still waits: the due timers wait for the next turn (module docstring).
            self.counters["waited-for-input"] += 1
            self._armed = heap[0]
            self._call = self.reactor.callLater(0, self._run)
            return
        current = int(self.seconds() / self.resolution)
        while heap and heap[0] <= current:
            for timer in slots.pop(heapq.heappop(heap)):
                self._fire(timer)
        if heap and self._armed is None:
            self._arm(heap[0])

    def _fire(self, timer: Timer) -> None:
        if timer.state != 0:
            return
        timer.state = 1
        try:
            timer.f(*timer.args)
        except Exception:
            self.counters["failed"] += 1
            self.log.failure("a timer's call failed", failure=Failure())
        self.counters["fired"] += 1
