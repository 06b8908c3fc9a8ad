"""Monotonic time for the reactor a daemon runs on.

Every lifetime, timer and liveness deadline of haha is a number of seconds from the injected
``IReactorTime``: the core is given ``now = clock.seconds()`` and the adapter arms one
``clock.callLater(deadline - now)``. Twisted's reactors measure both with the wall clock
(``reactor.seconds`` is ``time.time``), so a wall-clock step moves every deadline: a step of
-6 h stalls every timer for six hours (bindings and peers never expire, HELLOs stop), +2 h fires
them all at once (every binding and peer expires). NTP steps, a virtual machine resumed, an
operator's ``date -s``: a home agent must not care.

:func:`use_monotonic_time` switches a reactor to ``time.monotonic`` (``CLOCK_MONOTONIC``, which
no step moves). The daemon does it where it is built (:mod:`haha.tap`, :mod:`haha.tap_mn`),
before anything is scheduled; delayed calls already pending are moved onto the new time base
with the same remaining delay, so it is safe at any time. An embedder passes its service an
``IReactorTime`` whose ``seconds()`` and ``callLater`` run on one monotonic clock: the result
of this function, or a ``twisted.internet.task.Clock`` in tests (``docs/operations.md``).

What stays on the wall clock: log timestamps (``twisted.logger`` reads ``time.time`` itself)
and anything that is a date for people. Nothing haha stores or sends is an absolute reactor
time: the control interface reports uptime and expiry as differences.
"""

import heapq
import time
from collections.abc import Callable
from typing import Any


def is_monotonic(reactor: object, monotonic: Callable[[], float] = time.monotonic) -> bool:
    """Whether ``reactor.seconds`` is ``monotonic`` (set by :func:`use_monotonic_time`)."""
    return getattr(reactor, "seconds", None) == monotonic


def use_monotonic_time(reactor: Any, monotonic: Callable[[], float] = time.monotonic) -> Any:
    """Make ``reactor`` (a ``twisted.internet.base.ReactorBase``) measure time, schedule
    ``callLater`` and compute its poll timeouts with ``monotonic``; returns ``reactor``.

    Delayed calls already pending keep their remaining delay. Idempotent. A reactor that is not
    a ``ReactorBase`` (no ``getDelayedCalls``/``seconds``) is refused with ``TypeError``: an
    embedder's own clock must already be monotonic.
    """
    if is_monotonic(reactor, monotonic):
        return reactor
    if not callable(getattr(reactor, "seconds", None)) or \
            not callable(getattr(reactor, "getDelayedCalls", None)):
        raise TypeError(f"{type(reactor).__name__} has no seconds()/getDelayedCalls(): pass a "
                        "reactor whose clock is already monotonic")
    shift = monotonic() - reactor.seconds()
    pending = getattr(reactor, "_pendingTimedCalls", None)
    new = getattr(reactor, "_newTimedCalls", None)
    if isinstance(pending, list) and isinstance(new, list):
        # Cancelled calls still in the reactor's heap move too, so the heap stays a heap.
        calls = pending + new
    else:
        calls = reactor.getDelayedCalls()
    for call in calls:
        call.time += shift
        call.seconds = monotonic
    if isinstance(pending, list):
        heapq.heapify(pending)
    reactor.seconds = monotonic
    return reactor


__all__ = ["is_monotonic", "use_monotonic_time"]
