"""How long the reactor goes without a break: a probe timer inside the daemon.

A home agent does its bulk work (take-over, bulk answers, expiry, node traffic) in slices so
that its reactor never stops answering peers, HELLOs and the control socket for long. This probe
shows whether that holds in the running daemon: a timer due every ``interval`` (10 ms) notes,
each time it runs, how late it ran (``late``: wall-clock, which also counts the time the
process waited for a CPU held by other processes) and how much CPU the reactor's thread used
meanwhile (``stall``: at most ``late``, at least ``late`` minus ``interval`` when the reactor
was busy all along; so a stall is the reactor's own work without a break, up to one interval
too high, and a busy machine cannot inflate it).

It also times every collection of Python's garbage collector (``gc.callbacks``: a full
collection over a large heap is one kind of stall), per generation.

Kept: the longest of each since start; counters of stalls over 10, 50, 100 and 500 ms; and
the last 512 stalls over 10 ms with their wall-clock time and delay (for a benchmark's phase,
which filters them by time). ``haha-ctl status`` shows them under ``reactor``, ``haha-ctl
counters`` the counters (``reactor.stalls-over-50ms`` ...), /metrics the counters
(``haha_reactor_total``) and the longest (``haha_reactor_longest_seconds``).
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Stall bounds (ms) with a counter each.
BOUNDS_MS = (10, 50, 100, 500)
#: A run with a stall at least this long (s) is kept in ``recent``.
KEEP_OVER = 0.010


class StallProbe(Service):
    """The probe timer (a Twisted service: it runs while its parent runs)."""

    def __init__(self, reactor: IReactorTime, interval: float = 0.010, keep: int = 512,
                 monotonic: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.thread_time,
                 wall: Callable[[], float] = time.time) -> None:
        if interval <= 0:
            raise ValueError(f"stall probe interval must be positive, not {interval!r}")
        self.setName("stall-probe")
        self.reactor = reactor
        self.interval = interval
        self._monotonic, self._cpu, self._wall = monotonic, cpu, wall
        self.runs = 0
        self.longest_stall = 0.0
        self.longest_late = 0.0
        self.over = {b: 0 for b in BOUNDS_MS}
        #: (wall-clock time, stall ms, late ms) of the last runs with a stall over 10 ms.
        self.recent: deque[tuple[float, float, float]] = deque(maxlen=keep)
        self._call: IDelayedCall | None = None
        self._due = 0.0
        self._cpu_then = 0.0
        # The garbage collector's pauses, per generation: collections, the longest (s), and
        # those of 50 ms or more (a full collection over a large heap stalls the reactor).
        self.gc_collections = [0, 0, 0]
        self.gc_longest = [0.0, 0.0, 0.0]
        self.gc_over_50ms = [0, 0, 0]
        self._gc_started = 0.0

    def startService(self) -> None:  # noqa: N802 - Twisted hook
        super().startService()
        self._schedule(self._monotonic(), self._cpu())
        gc.callbacks.append(self._gc)

    def stopService(self) -> Any:  # noqa: N802 - Twisted hook
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        return super().stopService()

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks``: time each collection (the whole process's: it stops every
        thread, the reactor's included)."""
        if phase == "start":
            self._gc_started = self._monotonic()
            return
        self.gc_pause(int(info.get("generation", 2)), self._monotonic() - self._gc_started)

    def gc_pause(self, generation: int, seconds: float) -> None:
        """Record one collection of ``generation`` that took ``seconds``."""
        g = min(max(generation, 0), 2)
        self.gc_collections[g] += 1
        if seconds > self.gc_longest[g]:
            self.gc_longest[g] = seconds
        if seconds >= 0.050:
            self.gc_over_50ms[g] += 1

    def _schedule(self, now: float, cpu: float) -> None:
        self._due = now + self.interval
        self._cpu_then = cpu
        self._call = self.reactor.callLater(self.interval, self._run)

    def _run(self) -> None:
        now, cpu = self._monotonic(), self._cpu()
        self.observe(now - self._due, cpu - self._cpu_then)
        self._schedule(now, cpu)

    def observe(self, late: float, cpu_used: float) -> None:
        """Record one run of the timer: ``late`` seconds after it was due, the reactor's
        thread having used ``cpu_used`` seconds of CPU since the run before."""
        late = max(0.0, late)
        stall = min(late, max(0.0, cpu_used))
        self.runs += 1
        if stall > self.longest_stall:
            self.longest_stall = stall
        if late > self.longest_late:
            self.longest_late = late
        ms = stall * 1000.0
        for b in BOUNDS_MS:
            if ms >= b:
                self.over[b] += 1
        if stall >= KEEP_OVER:
            self.recent.append((round(self._wall(), 3), round(ms, 1), round(late * 1000.0, 1)))

    def counters(self) -> dict[str, int]:
        """For ``counters`` and /metrics (``haha_reactor_total``): runs, and the stalls at or
        over each bound."""
        c = {"reactor.probe-runs": self.runs}
        for b in BOUNDS_MS:
            c[f"reactor.stalls-over-{b}ms"] = self.over[b]
        for g in range(3):
            c[f"reactor.gc{g}-collections"] = self.gc_collections[g]
            c[f"reactor.gc{g}-pauses-over-50ms"] = self.gc_over_50ms[g]
        return c

    def gauges(self) -> list[tuple[str, dict[str, float]]]:
        """For /metrics: ``haha_reactor_longest_seconds`` (``kind`` stall or late)."""
        return [("haha_reactor_longest_seconds",
                 {"stall": self.longest_stall, "late": self.longest_late})]

    def report(self) -> dict[str, Any]:
        """For ``status``: the longest stall and delay (ms) and the recent ones over 10 ms."""
        return {"interval_ms": round(self.interval * 1000.0, 3),
                "longest_stall_ms": round(self.longest_stall * 1000.0, 1),
                "longest_late_ms": round(self.longest_late * 1000.0, 1),
                "stalls_over_ms": {str(b): n for b, n in self.over.items()},
                "recent": [list(r) for r in self.recent],
                "gc": {"collections": list(self.gc_collections),
                       "longest_ms": [round(x * 1000.0, 1) for x in self.gc_longest],
                       "pauses_over_50ms": list(self.gc_over_50ms)}}


__all__ = ["BOUNDS_MS", "StallProbe"]
