"""Where a running daemon's memory goes: the answer of the control command ``memory``.

Always (a few system calls, nothing kept): the process's resident memory from
``/proc/self/status`` (``rss``, its peak ``rss_peak``, the anonymous part ``rss_anon``), the
number of memory blocks Python has allocated (``python_blocks``), and what the C allocator holds
(``malloc``, from glibc's ``mallinfo2``: ``in_use``, ``free_held`` (freed but kept by the
allocator, counted in RSS where it was touched), ``mmapped``; None without glibc 2.33), and
``trim``: when the home agent last gave freed memory back to the system, why, how long it
took and how much it released (:mod:`haha.alloctrim`; None in a daemon without it).

With allocation tracing on (Python's ``tracemalloc``: the daemon started with the environment
variable ``PYTHONTRACEMALLOC=1``, or ``N`` frames), also what Python code holds: ``traced`` (and
its peak), the tracing's own cost (``tracing_overhead``), and the ``top`` allocation sites,
grouped by ``file:line`` of the line that allocated (``by=line``) or by file (``by=file``), each
with its ``size`` (octets) and ``count`` (blocks). A ``mark`` keeps the grouped figures (a few
thousand sites: kilobytes, not a snapshot); every later answer of the same control socket then
has ``growth``: the sites that grew most since the mark, with ``size`` and ``count`` as
differences. Tracing off, the answer says so (``tracing: false``) and how to turn it on.

Tracing costs memory (about 60 octets and a few hundred nanoseconds per live block, shown as
``tracing_overhead``) and CPU while it is on, so it is for diagnosis, not for production.
Taking the snapshot with a few million live blocks takes seconds of CPU: the control server
runs :func:`report` in a thread, so the reactor keeps serving meanwhile (slower, sharing the
interpreter). Nothing here runs unless asked.
"""

from __future__ import annotations

import ctypes
import sys
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Mapping

#: Sites in an answer unless ``top`` says otherwise, and the most it may ask.
DEFAULT_TOP = 20
MAX_TOP = 1000
GROUPINGS = {"line": "lineno", "file": "filename"}
#: What the answer says when tracing is off.
TRACING_OFF = ("allocation tracing is off: start the daemon with the environment variable "
               "PYTHONTRACEMALLOC=1 to see allocation sites (docs/operations.md, \"Memory\")")

_STATUS_FIELDS = {"VmRSS": "rss", "VmHWM": "rss_peak", "RssAnon": "rss_anon",
                  "RssFile": "rss_file"}


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> Any:
    try:
        fn = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    fn.restype = _Mallinfo2
    fn.argtypes = []
    return fn


_MALLINFO2 = _mallinfo2()


def process_memory(status_path: str = "/proc/self/status") -> dict[str, int | None]:
    """``rss``, ``rss_peak``, ``rss_anon``, ``rss_file`` in octets (None where the kernel does
    not say)."""
    out: dict[str, int | None] = dict.fromkeys(_STATUS_FIELDS.values())
    try:
        with open(status_path) as f:
            for line in f:
                name, _, rest = line.partition(":")
                key = _STATUS_FIELDS.get(name)
                if key is not None:
                    words = rest.split()
                    out[key] = int(words[0]) * 1024 if words and words[0].isdigit() else None
    except OSError:  # no /proc here (not Linux): every figure stays None, and says so
        return out
    return out


def malloc_figures() -> dict[str, int] | None:
    """The C allocator's figures (glibc ``mallinfo2``; module docstring), or None."""
    if _MALLINFO2 is None:
        return None
    m = _MALLINFO2()
    return {"arena": m.arena, "in_use": m.uordblks + m.hblkhd, "free_held": m.fordblks,
            "mmapped": m.hblkhd, "releasable_at_top": m.keepcost}


def site_name(filename: str, paths: tuple[str, ...] | None = None) -> str:
    """``filename`` relative to the longest ``sys.path`` entry holding it (``haha/core/x.py``,
    ``twisted/internet/udp.py``, ``ipaddress.py``), or as it is."""
    best = ""
    for entry in sys.path if paths is None else paths:
        if entry and filename.startswith(entry.rstrip("/") + "/") and len(entry) > len(best):
            best = entry.rstrip("/")
    return filename[len(best) + 1:] if best else filename


Sites = dict[str, tuple[int, int]]  # site -> (size, count)


def traced_sites(by: str = "line") -> Sites:
    """Every allocation site's live size and count now (tracing must be on), grouped ``by``
    line or file; this module's own allocations and tracemalloc's left out."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)])
    paths = tuple(sys.path)
    out: Sites = {}
    for stat in snapshot.statistics(GROUPINGS[by]):
        frame = stat.traceback[0]
        name = site_name(frame.filename, paths)
        site = f"{name}:{frame.lineno}" if by == "line" else name
        size, count = out.get(site, (0, 0))
        out[site] = (size + stat.size, count + stat.count)
    return out


@dataclass
class Mark:
    """A ``mark``: the grouped figures at one moment (module docstring)."""

    by: str
    sites: Sites = field(default_factory=dict)
    traced: int = 0
    rss: int | None = None


def parse_arguments(arguments: Mapping[str, str]) -> tuple[int, str, bool]:
    """``(top, by, mark)`` from the command's arguments; ValueError naming a bad one."""
    top_text = arguments.get("top", str(DEFAULT_TOP))
    if not top_text.isdigit() or not 1 <= int(top_text) <= MAX_TOP:
        raise ValueError(f"memory: top={top_text!r} must be a number from 1 to {MAX_TOP}")
    by = arguments.get("by", "line")
    if by not in GROUPINGS:
        raise ValueError(f"memory: by={by!r} must be one of {', '.join(GROUPINGS)}")
    mark = arguments.get("mark", "no")
    if mark not in ("yes", "no"):
        raise ValueError(f"memory: mark={mark!r} must be yes or no")
    return int(top_text), by, mark == "yes"


def _rows(items: list[tuple[str, int, int]], top: int) -> list[dict[str, Any]]:
    return [{"site": site, "size": size, "count": count} for site, size, count in items[:top]]


def report(arguments: Mapping[str, str], marks: dict[str, Mark],
           trim: Any = None) -> dict[str, Any]:
    """The ``memory`` answer (module docstring); ``marks`` keeps this control socket's mark
    (under ``"mark"``) between calls; ``trim``: the daemon's
    :class:`haha.alloctrim.AllocatorTrim`, whose report is the answer's ``trim`` (None
    without one). Raises ValueError for a bad argument."""
    top, by, set_mark = parse_arguments(arguments)
    out: dict[str, Any] = dict(process_memory())
    out["python_blocks"] = sys.getallocatedblocks()
    out["malloc"] = malloc_figures()
    out["trim"] = None if trim is None else trim.report()
    tracing = tracemalloc.is_tracing()
    out["tracing"] = tracing
    if not tracing:
        out["hint"] = TRACING_OFF
        if set_mark:
            raise ValueError("memory: mark=yes needs allocation tracing; " + TRACING_OFF)
        return out
    sites = traced_sites(by)
    traced, peak = tracemalloc.get_traced_memory()
    out.update(traced=traced, traced_peak=peak,
               tracing_overhead=tracemalloc.get_tracemalloc_memory(),
               frames=tracemalloc.get_traceback_limit(), by=by)
    out["top"] = _rows(sorted(((s, size, count) for s, (size, count) in sites.items()),
                              key=lambda r: -r[1]), top)
    mark = marks.get("mark")
    if mark is not None and mark.by == by:
        changed = []
        for site in sites.keys() | mark.sites.keys():
            size, count = sites.get(site, (0, 0))
            size0, count0 = mark.sites.get(site, (0, 0))
            if size != size0 or count != count0:
                changed.append((site, size - size0, count - count0))
        changed.sort(key=lambda r: -abs(r[1]))
        out["growth"] = {"traced": traced - mark.traced,
                         "rss": None if mark.rss is None or out["rss"] is None
                         else out["rss"] - mark.rss,
                         "sites": _rows(changed, top)}
    elif mark is not None:
        out["growth"] = None
        out["hint"] = f"the mark groups by {mark.by}: ask with by={mark.by} for the growth"
    if set_mark:
        marks["mark"] = Mark(by, sites, traced, out["rss"])
        out["marked"] = True
    return out


__all__ = ["DEFAULT_TOP", "MAX_TOP", "Mark", "TRACING_OFF", "malloc_figures", "parse_arguments",
           "process_memory", "report", "site_name", "traced_sites"]
