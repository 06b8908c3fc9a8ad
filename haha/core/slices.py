"""Bulk work in slices, so one machine call never holds the reactor for long (sans-IO).

Taking over a dead peer's mobile nodes, answering a bulk BIR and sweeping the copies a bulk
answer did not refresh each touch every binding involved: at 100,000 bindings, done in one
call, they block the daemon for seconds, long enough for its peers to miss its HELLOs and
declare it dead. A :class:`Backlog` holds such jobs and runs at most ``size`` items per
``run(now, out)`` (the first slice of a job runs when it is added, if nothing is queued before
it); while work is left, ``next_deadline()`` is a time already past, so the
adapter's one timer fires again at once (``callLater(0)``) and the reactor reads packets and
serves the control socket between two slices.

A job is an iterable of items, a ``step(item, now, out)`` applied to each, an optional
``alive()`` checked before every slice (False drops the rest of the job: the peer came back, the
home agent stopped), an optional ``after(now, out)`` called at the end of every slice (the
take-over sends the slice's BIUs there, packed) and an optional ``done(now, out)`` called after
the last item. Items are
taken in order and jobs first-come first-served, so the effects of a sliced run, concatenated,
are those of the same work done at once (but for how ``after`` groups them), as long as nothing
else happens in between; when something does (a BU, a BIU), each ``step`` re-checks that its
item still needs the work.

``size`` None (or 0) runs every job to its end inside :meth:`add`: the unsliced behaviour.
"""

from collections import deque
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from .effecttypes import Effects

#: Items per slice. A take-over item costs the daemon about 0.1-0.2 ms (cache, forwarding,
#: BIU, HASR under ESP): 128 of them stay well under the 50 ms stall goal (bench/bulk.py).
SLICE = 32

#: A job's callables: ``step(item, now, out)``; ``after``/``done`` take ``(now, out)``.
Step = Callable[[Any, float, Effects], None]
Hook = Callable[[float, Effects], None]


class _Job:
    __slots__ = ("items", "step", "alive", "done", "after", "name", "size")

    def __init__(self, items: Iterable[Any], step: Step, alive: Callable[[], bool] | None,
                 done: Hook | None, after: Hook | None, name: str,
                 size: int | None = None) -> None:
        self.size = size
        self.items = iter(items)
        self.step = step
        self.alive = alive
        self.done = done
        self.after = after
        self.name = name


class Backlog:
    """First-come first-served jobs, run ``size`` items at a time (module docstring).

    ``counters`` (a Counter, optional) gets ``slices`` and ``slice-items.<name>``.
    """

    def __init__(self, size: int = SLICE, counters: MutableMapping[str, int] | None = None
                 ) -> None:
        self.size = size
        #: Items per slice of the jobs of a given name, when their items are cheaper than the
        #: default ``size`` (the take-over: haha.core.switching.TAKE_OVER_SLICE).
        self.sizes: dict[str, int] = {}
        self.counters: MutableMapping[str, int] = counters if counters is not None else {}
        self._jobs: deque[_Job] = deque()
        self._since: float | None = None
        # queued jobs by name: has() is asked for every packet while a take-over may run
        # (HomeAgent.urgent, from the transport's input queue), so it must not walk the queue
        self._names: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def pending(self) -> bool:
        return bool(self._jobs)

    def add(self, items: Iterable[Any], step: Step, now: float, out: Effects,
            alive: Callable[[], bool] | None = None, done: Hook | None = None,
            after: Hook | None = None, name: str = "work") -> None:
        """Queue a job. Its first slice runs at once when nothing is queued before it (a small
        job is then done within the call, as if unsliced); unsliced (the backlog's ``size``
        falsy), all of it runs at once. A job whose ``name`` is in :attr:`sizes` takes that
        many items per slice (a slice that starts with it, across jobs)."""
        size = self.sizes.get(name)
        job = _Job(items, step, alive, done, after, name, size)
        if not self.size:
            self._finish(job, now, out, None)
            return
        queued = bool(self._jobs)
        self._jobs.append(job)
        self._names[name] = self._names.get(name, 0) + 1
        if queued:
            return
        self._finish(job, now, out, size or self.size)
        self._since = now if self._jobs else None

    def has(self, name: str) -> bool:
        """Whether a job called ``name`` is queued (unfinished)."""
        return name in self._names

    def next_deadline(self) -> float | None:
        """When the next slice is due: at once (the time work was last queued or run)."""
        return self._since if self._jobs else None

    def run(self, now: float, out: Effects) -> int:
        """Run one slice: up to ``size`` items, across jobs in order. Returns items done."""
        jobs = self._jobs
        budget = (jobs[0].size or self.size or None) if jobs and self.size else None
        done = 0
        while jobs and (budget is None or done < budget):
            job = jobs[0]
            n = self._finish(job, now, out, None if budget is None else budget - done)
            done += n
        if jobs:
            self._since = now
        else:
            self._since = None
        if done:
            self.counters["slices"] = self.counters.get("slices", 0) + 1
        return done

    def _finish(self, job: _Job, now: float, out: Effects, budget: int | None) -> int:
        """Run ``job`` for up to ``budget`` items (None: all); pop it from the queue when it
        ends or is dropped. Returns the items done."""
        if job.alive is not None and not job.alive():
            self._pop(job)
            return 0
        step = job.step
        items = job.items
        n = 0
        finished = False
        for item in items:
            step(item, now, out)
            n += 1
            if budget is not None and n >= budget:
                break
        else:
            finished = True
        if n and job.after is not None:
            job.after(now, out)
        if finished:
            self._pop(job)
            if job.done is not None:
                job.done(now, out)
        key = "slice-items." + job.name
        self.counters[key] = self.counters.get(key, 0) + n
        return n

    def _pop(self, job: _Job) -> None:
        if self._jobs and self._jobs[0] is job:
            self._jobs.popleft()
            names = self._names
            left = names[job.name] - 1
            if left:
                names[job.name] = left
            else:
                del names[job.name]

    def clear(self) -> None:
        """Forget every job (the machine stopped)."""
        self._jobs.clear()
        self._names.clear()
        self._since = None


__all__ = ["Backlog", "SLICE"]
