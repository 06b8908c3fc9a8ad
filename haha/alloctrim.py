"""Giving freed memory back to the system: the C allocator's ``malloc_trim`` after bursts.

Python keeps small objects in its own arenas, but everything larger (a dictionary's table, a
deque's blocks, a list's array, a datagram read) comes from the C allocator, glibc's
``malloc``. When such memory is freed, glibc keeps it for the next allocation instead of giving
it back to the kernel: only a free stretch at the very top of its heap is returned. After a
burst of registrations a home agent's input queue, its tables sized for the burst and the
datagrams read are freed, but their pages stay in the process's resident memory, about 365
octets per binding after a burst of 100,000 nodes (``haha-ctl memory`` shows it as
``malloc.free_held``; docs/operations.md, "Memory").

glibc's ``malloc_trim(pad)`` gives back every whole free page of its heaps (``madvise``: the
address space is kept, the pages leave the resident set, keeping ``pad`` octets at the top).
Free fragments smaller than a page between live blocks stay: most of those 365 octets were
such fragments, one per datagram read, until the UDP transport stopped making them
(:mod:`haha.io.udp`, "Reading"). It walks the allocator's free lists holding its lock, so it
costs a little CPU and holds the reactor while it runs (about 0.2 ms at 100,000 bindings, 4 to
8 ms over 100,000 such fragments: ``bench/memory.py``); each call is measured (``last.ms``,
``longest_ms``) and shown by ``haha-ctl memory`` under ``trim``.

:class:`AllocatorTrim` calls it when asked (:meth:`AllocatorTrim.request`: the home agent's
input queue once a deep backlog has drained, docs/io.md "Input queues"), on a later turn of the
reactor, and never sooner than ``interval`` seconds after its previous call: requests meanwhile
are folded into one call at the end of the interval. Where the C library has no
``malloc_trim`` (not glibc: musl, macOS) it does nothing and says so once in the log at debug.
``[memory] trim = no`` turns it off (docs/configuration.md).

Memory can also be freed outside a burst (a bulk answer built and sent, a take-over's tables,
the authenticated buckets of a burst's nodes forgotten a few seconds after it, a control
answer): every ``interval`` a look at the allocator's figures (glibc's ``mallinfo2``, as
``haha-ctl memory`` shows them) trims when the freed memory it holds has grown by ``threshold``
octets since the last trim (0: no such look). Either way at most one call per ``interval``.

Sans-IO apart from the call itself: the reactor (``seconds``, ``callLater``), the C library and
the clocks are passed in (tests give fakes).
"""

from __future__ import annotations

import ctypes
import time
from typing import Any, Callable, Mapping, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall

from .logging import class_logger

#: Defaults (docs/configuration.md, ``[memory]``).
DEFAULT_INTERVAL = 10.0
DEFAULT_PAD = 0
DEFAULT_THRESHOLD = 2 << 20
#: Bounds of ``trim-interval`` (seconds), ``trim-pad`` and ``trim-threshold`` (octets).
MIN_INTERVAL, MAX_INTERVAL = 1.0, 86400.0
MAX_PAD = 1 << 30
MAX_THRESHOLD = 1 << 40


class CLibrary(Protocol):
    """What is needed of the C library: ``malloc_trim(pad)``, 1 when memory was released."""

    def malloc_trim(self, pad: int) -> int: ...


class _Glibc:
    """The process's C library through ctypes (ctypes lets other threads run meanwhile)."""

    def __init__(self, fn: Any) -> None:
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_size_t]
        self._fn = fn

    def malloc_trim(self, pad: int) -> int:
        return int(self._fn(pad))


def system_library() -> CLibrary | None:
    """The running process's C library when it has ``malloc_trim`` (glibc), else None."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None
    return _Glibc(fn)


def resident(status_path: str = "/proc/self/status") -> int | None:
    """The process's resident memory in octets (``VmRSS``), None where the kernel does not
    say (:func:`haha.control.memory.process_memory`'s ``rss``)."""
    from .control.memory import process_memory

    return process_memory(status_path)["rss"]


#: ``library`` not given: the process's own (:func:`system_library`), looked up when built.
_UNSET: Any = object()


class AllocatorTrim(Service):
    """``malloc_trim`` on request, at most once per ``interval`` (module docstring).

    ``reactor`` provides ``seconds`` and ``callLater``; ``library`` the C library (default: the
    process's, None where it has no ``malloc_trim``); ``enabled`` False makes every request a
    no-op (``[memory] trim = no``); ``pad``: octets kept at the top of the heap; ``threshold``
    and ``figures`` (the allocator's, default glibc's ``mallinfo2``): the look every interval
    (module docstring), started with the service. ``timer`` and
    ``cpu`` measure each call (wall clock and the calling thread's CPU), ``wall`` says when
    it ran, ``rss`` reads the resident memory before and after.
    """

    log = class_logger()

    def __init__(self, reactor: Any, *, enabled: bool = True,
                 interval: float = DEFAULT_INTERVAL, pad: int = DEFAULT_PAD,
                 threshold: int = DEFAULT_THRESHOLD, library: CLibrary | None = _UNSET,
                 figures: Callable[[], Mapping[str, int] | None] | None = None,
                 timer: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.thread_time,
                 wall: Callable[[], float] = time.time,
                 rss: Callable[[], int | None] = resident) -> None:
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise ValueError(f"trim interval {interval!r} must be from {MIN_INTERVAL:g} to "
                             f"{MAX_INTERVAL:g} seconds")
        if not 0 <= pad <= MAX_PAD:
            raise ValueError(f"trim pad {pad!r} must be from 0 to {MAX_PAD} octets")
        if not 0 <= threshold <= MAX_THRESHOLD:
            raise ValueError(f"trim threshold {threshold!r} must be from 0 to "
                             f"{MAX_THRESHOLD} octets")
        self.setName("allocator-trim")
        self.reactor = reactor
        self.enabled = bool(enabled)
        self.interval = float(interval)
        self.pad = int(pad)
        self.library = system_library() if library is _UNSET else library
        self.threshold = int(threshold)
        if figures is None:
            from .control.memory import malloc_figures
            figures = malloc_figures
        self._figures: Callable[[], Mapping[str, int] | None] = figures
        self.checks = 0
        #: The allocator's freed memory just after the last trim (the threshold's base).
        self._held_after: int | None = None
        self._check_call: IDelayedCall | None = None
        self._timer, self._cpu, self._wall, self._rss = timer, cpu, wall, rss
        self.requests = 0
        self.runs = 0
        #: Requests folded into a call already due (within ``interval`` of the last one).
        self.deferred = 0
        #: Requests ignored: trimming off, or no ``malloc_trim`` in the C library.
        self.ignored = 0
        self.released = 0  # octets the resident memory shrank by, over every call
        self.last: dict[str, Any] | None = None
        self.longest = 0.0  # seconds (wall clock) of the longest call
        self._last_run: float | None = None  # reactor seconds of the last call
        self._reason = ""
        self._call: IDelayedCall | None = None
        self._said_unavailable = False

    @property
    def available(self) -> bool:
        """Whether this process's C library can trim."""
        return self.library is not None

    def startService(self) -> None:  # noqa: N802 - Twisted hook
        super().startService()
        if self.enabled and self.library is not None and self.threshold:
            self._check_call = self.reactor.callLater(self.interval, self._check)

    def stopService(self) -> Any:  # noqa: N802 - Twisted hook
        for call in (self._call, self._check_call):
            if call is not None and call.active():
                call.cancel()
        self._call = self._check_call = None
        return super().stopService()

    def _held(self) -> int | None:
        figures = self._figures()
        return None if figures is None else figures["free_held"]

    def _check(self) -> None:
        """The periodic look (module docstring): trim when the freed memory the allocator
        holds grew by ``threshold`` since the last trim, unless one ran or is due within the
        interval."""
        self._check_call = self.reactor.callLater(self.interval, self._check)
        self.checks += 1
        if self._call is not None and self._call.active():
            return
        if self._last_run is not None and \
                self.reactor.seconds() < self._last_run + self.interval:
            return
        held = self._held()
        if held is None:
            return
        base = self._held_after if self._held_after is not None else 0
        if held - base >= self.threshold:
            self.trim(f"freed memory held grew by {held - base} octets")

    def request(self, reason: str) -> None:
        """Ask for a trim because of ``reason`` (a few words, shown as ``last.reason``): on the
        next turn of the reactor, or ``interval`` seconds after the previous call if that is
        later; nothing more when one is due already."""
        self.requests += 1
        if not self.enabled or self.library is None:
            self.ignored += 1
            if self.library is None and self.enabled and not self._said_unavailable:
                self._said_unavailable = True
                self.log.debug("allocator trim: the C library has no malloc_trim (not "
                               "glibc): freed memory stays with the allocator")
            return
        self._reason = reason
        if self._call is not None and self._call.active():
            self.deferred += 1
            return
        now = self.reactor.seconds()
        delay = 0.0 if self._last_run is None else max(0.0, self._last_run + self.interval - now)
        if delay > 0:
            self.deferred += 1
        self._call = self.reactor.callLater(delay, self._run)

    def _run(self) -> None:
        self._call = None
        self.trim(self._reason)

    def trim(self, reason: str) -> dict[str, Any] | None:
        """One ``malloc_trim`` now, measured (``last``); None when it cannot run."""
        if self.library is None:
            return None
        before = self._rss()
        t0, c0 = self._timer(), self._cpu()
        released_any = self.library.malloc_trim(self.pad)
        seconds, cpu = self._timer() - t0, self._cpu() - c0
        after = self._rss()
        self._held_after = self._held()
        self._last_run = self.reactor.seconds()
        self.runs += 1
        freed = None if before is None or after is None else before - after
        if freed is not None and freed > 0:
            self.released += freed
        self.longest = max(self.longest, seconds)
        self.last = {"at": round(self._wall(), 3), "reason": reason,
                     "ms": round(seconds * 1000.0, 3), "cpu_ms": round(cpu * 1000.0, 3),
                     "rss_before": before, "rss_after": after, "released": freed,
                     "returned_memory": bool(released_any)}
        self.log.info("allocator trim ({reason}): {ms} ms, resident memory {freed} octets "
                      "smaller", reason=reason, ms=self.last["ms"], freed=freed)
        return self.last

    def counters(self) -> dict[str, int]:
        """For ``counters`` and /metrics: requests, calls, requests folded or ignored, and the
        octets released."""
        return {"allocator-trim.requests": self.requests, "allocator-trim.runs": self.runs,
                "allocator-trim.deferred": self.deferred, "allocator-trim.ignored": self.ignored,
                "allocator-trim.checks": self.checks,
                "allocator-trim.released-octets": self.released}

    def report(self) -> dict[str, Any]:
        """For ``haha-ctl memory`` (``trim``): the settings, the counters, the longest call
        and the last one (when, why, how long, what it released), or None."""
        return {"enabled": self.enabled, "available": self.available,
                "interval_s": self.interval, "pad": self.pad, "threshold": self.threshold,
                "checks": self.checks, "requests": self.requests, "runs": self.runs, "deferred": self.deferred,
                "ignored": self.ignored, "released": self.released,
                "longest_ms": round(self.longest * 1000.0, 3),
                "due": self._call is not None and self._call.active(),
                "last": None if self.last is None else dict(self.last)}


def attach(service: Any, transport: Any, settings: Any) -> AllocatorTrim:
    """An :class:`AllocatorTrim` for ``service`` (a MultiService: started and stopped with
    it) with ``settings`` (:class:`haha.config.MemoryConfig`), asked to trim whenever the
    input queue of ``transport`` empties after a deep backlog (a transport without one is
    left as it is)."""
    trim = AllocatorTrim(service.reactor, enabled=settings.trim, interval=settings.trim_interval,
                         pad=settings.trim_pad, threshold=settings.trim_threshold)
    trim.setServiceParent(service)
    queue = getattr(transport, "input", None)
    if queue is not None and hasattr(queue, "on_drained"):
        queue.on_drained = lambda: trim.request("backlog drained")
    return trim


__all__ = ["AllocatorTrim", "CLibrary", "DEFAULT_INTERVAL", "DEFAULT_PAD", "DEFAULT_THRESHOLD",
           "attach",
           "resident", "system_library"]
