"""ESP sequence numbers that survive a restart, for manually keyed SAs.

With manual keys a restarted daemon keeps its keys but would start every outbound SA again at
sequence number 1: its peers' anti-replay windows (RFC 4303 3.4.3) then drop everything it
sends as too old until their own restart -- a home agent that comes back after a crash could
never speak to its peers again. And a restarted receiver, with an empty window, would accept
one replay of every packet it had already seen.

This store keeps, in one small JSON file, for each outbound SA the highest sequence number it
may have used and for each inbound SA a floor below which everything counts as received:

- outbound: before the first packet of a run, and then once every ``block`` packets, the SA
  reserves the next ``block`` numbers and the file is rewritten (atomically, fsynced) before
  the packet leaves; after a restart the SA continues above the last reservation, so it skips
  at most ``block`` numbers and never reuses one;
- SAs added alone (outside :meth:`SequenceStore.batch`: a node of a node group derived when it
  first speaks) and without an entry of their own share one reservation per run, ``out-shared``:
  the first such SA of a run writes ``out-shared = base + block`` (``base`` the previous run's
  ``out-shared`` or the time floor, whichever is higher), and every such SA starts at ``base``
  with room up to ``base + block`` before it writes an entry of its own. A burst of 100,000 new
  nodes costs one write instead of 100,000 rewrites of a growing file; after a restart every SA
  without an entry starts above anything one of them may have sent;
- inbound: the window's top is written once it has advanced ``block`` past the last value
  written, and by :meth:`SequenceStore.flush` at a clean stop; after a restart everything up to
  it counts as received. After a crash, at most ``block`` earlier packets could be replayed
  once; after a clean stop, none.

Entries are named ``out|in PEER SPI``; new keys with a new SPI start fresh. When an SA is given
new keys under the *same* SPI, its entries must be removed (``docs/security.md``). SAs keyed by
boot epoch (:mod:`haha.security.epoch`) reserve nothing outbound; their inbound entries carry
the epoch (``in PEER SPI epoch EPOCH``), and ``epoch-generation`` records the last run's.

Failing disks. Every write goes to ``PATH.tmp`` (written in full -- a short write is continued,
never ignored -- and fsynced), then replaces ``PATH`` by rename, and the directory is fsynced:
the file on disk is always a complete earlier or later version, never a truncated one. When a
write fails (``ENOSPC``, ``EIO``, a read-only file system...), the temporary file is removed,
``counters["write-failed"]`` counts it, ``on_failure(error)`` is called once per run of
failures (the daemon logs one line), and the daemon keeps serving from what it holds in memory:
an outbound SA goes on past its reservation and the next reservation tries the disk again;
``on_recovery()`` is called by the first write that succeeds again. What a crash in that time
costs is in ``docs/operations.md``.

A file that cannot be read at start is refused with one line naming it and the way forward:
``python -m haha.security.seqstore reset PATH`` moves it aside and writes a fresh one whose
epoch generation is later than any run before.
"""

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any

from zope.interface import implementer

from ..interfaces import ICounterSource
from ..wire.addresses import address_text
from .errors import SecurityConfigError
from .esp import SEQ_MAX

if TYPE_CHECKING:
    from .sadb import SecurityAssociationDatabase

#: ``reserve(sa, seq) -> limit`` and ``advance(sa, top) -> next threshold``
#: (haha.security.esp): one function each for every SA of a store, which names the entry from
#: the SA's peer, SPI and (inbound, keyed by boot epoch) epoch when it writes, so an SA costs
#: the store no object of its own.
Reserve = Callable[[Any, int], int]
Advance = Callable[[Any, int], int]

#: Entries that are not sequence numbers, and the largest value each may hold.
_SPECIAL = {"epoch-generation": (1 << 40) - 1}

#: The entry of the run's shared outbound reservation (module docstring, "SAs added alone").
SHARED = "out-shared"

DEFAULT_BLOCK = 1024


def _name(direction: str, peer: object, spi: int) -> str:
    # address_text: str() of an address costs more than the rest of adding an SA
    text = address_text(peer) if type(peer) is IPv6Address else str(peer)
    return f"{direction} {text} 0x{spi:08x}"


@implementer(ICounterSource)
class SequenceStore:
    """The state file at ``path`` (created when missing). ``block`` is how many sequence
    numbers are reserved at a time (outbound) and how far a top moves between writes
    (inbound)."""

    def __init__(self, path: str | os.PathLike[str], block: int = DEFAULT_BLOCK,
                 floor: Callable[[], int] | None = None) -> None:
        if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 1 << 24:
            raise SecurityConfigError(f"sequence block {block!r} is not in 1..16777216")
        self.path = os.fspath(path)
        self.block = block
        #: ``floor()``: where an outbound SA with no entry starts (None: at 1). See
        #: :func:`time_floor`.
        self.floor = floor
        self._data = self._load()
        self._batch = 0
        self._dirty = False
        #: This run's shared reservation ``(base, limit)``, None until an SA added alone needs it.
        self._shared: tuple[int, int] | None = None
        self.writes = 0
        #: ``write-failed``: writes that failed; ``failing``: 1 while the last write failed.
        self.counters = {"write-failed": 0, "failing": 0}
        self.last_error: OSError | None = None
        self.on_failure: Callable[[OSError], object] | None = None  # called with the OSError once per run of failed writes
        self.on_recovery: Callable[[], object] | None = None  # called when a write succeeds after failures
        self._write = os.write  # the seam tests use to make the disk fail
        # Bound once: every SA of this store holds these same two objects.
        self._reserve: Reserve = self._reserve_for
        self._advance: Advance = self._advance_for

    def _load(self) -> dict[str, int]:
        try:
            with open(self.path, encoding="ascii") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SecurityConfigError(
                f"sequence state file {self.path} cannot be read ({e}); {self._way_forward()}"
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            and 0 <= v <= _SPECIAL.get(k, SEQ_MAX)
            for k, v in data.items()
        ):
            raise SecurityConfigError(f"sequence state file {self.path} is not a name -> "
                                      f"sequence number object; {self._way_forward()}")
        return data

    def _way_forward(self) -> str:
        return (f"to start afresh safely run: python -m haha.security.seqstore reset "
                f"{self.path} (docs/operations.md)")

    def _save(self) -> bool:
        """Write the file (module docstring); True when it is on disk, False when the write
        failed (counted, reported once, the previous file left as it was)."""
        if self._batch:
            self._dirty = True
            return True
        try:
            write_atomically(self.path, json.dumps(self._data, sort_keys=True).encode("ascii"),
                             self._write)
        except OSError as e:
            self._dirty = True
            self.counters["write-failed"] += 1
            self.last_error = e
            if not self.counters["failing"]:
                self.counters["failing"] = 1
                if self.on_failure is not None:
                    self.on_failure(e)
            return False
        self._dirty = False
        self.writes += 1
        if self.counters["failing"]:
            self.counters["failing"] = 0
            if self.on_recovery is not None:
                self.on_recovery()
        return True

    @property
    def healthy(self) -> bool:
        """Whether the last write reached the disk."""
        return not self.counters["failing"]

    def get(self, name: str, default: int = 0) -> int:
        """The value of entry ``name``."""
        return self._data.get(name, default)

    def record(self, name: str, value: int) -> bool:
        """Set entry ``name`` and write; True when it is on disk."""
        self._data[name] = value
        return self._save()

    def batch(self) -> AbstractContextManager["SequenceStore"]:
        """A context manager holding writes back until it exits (one write for many SAs)."""
        store = self

        class _Batch:
            def __enter__(self) -> "SequenceStore":
                store._batch += 1
                return store

            def __exit__(self, *exc: object) -> None:
                store._batch -= 1
                if not store._batch and store._dirty:
                    store._save()

        return _Batch()

    # -- outbound ---------------------------------------------------------------------------

    def start_outbound(self, peer: object, spi: int) -> tuple[int, int, Reserve]:
        """``(seq, limit, reserve)`` for a new outbound SA object: the last number that may
        already have been sent, how far it may go before reserving again (this reservation is
        written now, or when the current batch ends) and the reservation callback."""
        return self._start_outbound(_name("out", peer, spi))

    def start_pair(self, peer: object, out_spi: int, in_spi: int
                   ) -> tuple[int, int, Reserve, int, Advance, int]:
        """:meth:`start_outbound` of ``(peer, out_spi)`` followed by :meth:`start_inbound` of
        ``(peer, in_spi)``, in one call: the peer's text made once for both names (a node
        group installs a pair per node on its first packet)."""
        text = address_text(peer) if type(peer) is IPv6Address else str(peer)
        seq, limit, reserve = self._start_outbound(f"out {text} 0x{out_spi:08x}")
        floor = self._data.get(f"in {text} 0x{in_spi:08x}", 0)
        return (seq, limit, reserve, floor, self._advance,
                floor + self.block if floor else self.block)

    def _start_outbound(self, name: str) -> tuple[int, int, Reserve]:
        used = self._data.get(name)
        if used is None and not self._batch:
            return self._start_shared(name)
        if used is None:
            used = self.floor() if self.floor is not None else 0
            used = max(used, self._data.get(SHARED, 0))
        if used >= SEQ_MAX:
            return SEQ_MAX, SEQ_MAX, self._reserve
        limit = min(used + self.block, SEQ_MAX)
        self._data[name] = limit
        self._save()
        return used, limit, self._reserve

    def _start_shared(self, name: str) -> tuple[int, int, Reserve]:
        """``start_outbound`` of an SA added alone with no entry: the run's shared reservation
        (written by the first such SA of the run, module docstring)."""
        if self._shared is None:
            floor = self.floor() if self.floor is not None else 0
            base = max(self._data.get(SHARED, 0), floor)
            limit = min(base + self.block, SEQ_MAX)
            self._data[SHARED] = limit
            self._save()
            self._shared = (base, limit)
        base, limit = self._shared
        return base, limit, self._reserve

    def _reserve_for(self, sa: Any, seq: int) -> int:
        """The next reservation of outbound SA ``sa`` (``sa.peer``, ``sa.spi``), from ``seq``."""
        # When the write fails the SA goes on from this in-memory reservation; the next
        # one tries the disk again (module docstring).
        limit = min(seq - 1 + self.block, SEQ_MAX)
        self._data[_name("out", sa.peer, sa.spi)] = limit
        self._save()
        return limit

    # -- inbound ----------------------------------------------------------------------------

    def start_inbound(self, peer: object, spi: int) -> tuple[int, Advance, int]:
        """``(floor, advance, save_at)`` for a new inbound SA object (see the module
        docstring)."""
        floor = self._data.get(_name("in", peer, spi), 0)
        # self.block itself for a new SA: one shared int instead of one per SA
        return floor, self._advance, floor + self.block if floor else self.block

    def start_inbound_epoch(self, peer: object, spi: int
                            ) -> tuple[int | None, int, Advance | None, int | None]:
        """``(epoch, floor, advance, save_at)`` for a new epoch-keyed inbound SA: the latest
        epoch recorded for it (None when none is) and that epoch's window top."""
        prefix = _name("in", peer, spi) + " epoch "
        known = [(int(k[len(prefix):], 16), v) for k, v in self._data.items()
                 if k.startswith(prefix)]
        if not known:
            return None, 0, None, None
        epoch, floor = max(known)
        return epoch, floor, self._advance, floor + self.block

    def switch_inbound_epoch(self, peer: object, spi: int, epoch: int) -> tuple[Advance, int]:
        """The peer began a new epoch: drop the entries of earlier ones, return
        ``(advance, save_at)`` for the new one (written once its top passes ``block``)."""
        prefix = _name("in", peer, spi) + " epoch "
        for k in [k for k in self._data if k.startswith(prefix)]:
            del self._data[k]
        name = _epoch_name(peer, spi, epoch)
        self._data[name] = 0
        self._save()
        return self._advance, self.block

    def _advance_for(self, sa: Any, top: int) -> int:
        """Record inbound SA ``sa``'s window top (its entry named by ``sa.peer``, ``sa.spi``
        and, for an SA keyed by boot epoch, ``sa.epoch``); the next threshold."""
        epoch = getattr(sa, "epoch", None)
        name = _name("in", sa.peer, sa.spi) if epoch is None else \
            _epoch_name(sa.peer, sa.spi, epoch)
        self._data[name] = top
        self._save()
        return top + self.block

    def flush(self, sadb: "SecurityAssociationDatabase") -> bool:
        """Write the current top of every inbound SA of ``sadb`` (at a clean stop); True when
        it reached the disk."""
        for row in sadb.describe():
            if row["direction"] == "in" and row["top"]:
                if row.get("epoch") is not None:
                    name = _epoch_name(row["peer"], int(row["spi"], 16),
                                       int(row["epoch"], 16))
                else:
                    name = _name("in", row["peer"], int(row["spi"], 16))
                if self._data.get(name, 0) < row["top"]:
                    self._data[name] = row["top"]
        return self._save()

    def forget(self, peer: object, spi: int) -> None:
        """Remove both entries of an SA (before giving it new keys under the same SPI)."""
        for d in ("out", "in"):
            self._data.pop(_name(d, peer, spi), None)
        self._save()


#: 2020-01-01T00:00:00Z in Unix seconds.
TIME_FLOOR_ORIGIN = 1577836800


def time_floor(wall: float) -> int:
    """Where an outbound SA with no recorded sequence number starts, at Unix time ``wall``: one
    number per second since 2020 (capped at half the sequence space, reached in 2088).

    A sequence file that is lost (or new) then still starts every SA above what an earlier run
    sent, as long as that run sent fewer packets on the SA than seconds have passed since it
    started -- true of the signalling with mobile nodes (a Binding Update or Acknowledgement
    per refresh). The receiver's anti-replay window simply moves ahead. A clock behind the
    earlier run's start undoes it (``docs/operations.md``)."""
    return min(max(int(wall) - TIME_FLOOR_ORIGIN, 0), SEQ_MAX // 2)


def _epoch_name(peer: object, spi: int, epoch: int) -> str:
    return f"{_name('in', peer, spi)} epoch {epoch:016x}"


def write_atomically(path: str, data: bytes,
                     write: Callable[[int, memoryview], int] = os.write) -> None:
    """Replace the file ``path`` by ``data``: written in full to ``path.tmp`` (mode 0600), fsynced,
    renamed over ``path``, directory fsynced. Raises OSError (the temporary file removed, ``path``
    untouched) when any step fails, including a write that makes no progress."""
    tmp = f"{path}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                n = write(fd, view)
                if not n:
                    raise OSError(errno.ENOSPC, f"no progress writing {tmp}")
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def reset(path: str, wall: float | None = None) -> str | None:
    """Move a damaged (or any) sequence file aside and write a fresh one whose epoch
    generation is later than every earlier run's. Returns where the old file went (None when
    there was none)."""
    from .epoch import EPOCH_ORIGIN_MS, GENERATION_MAX, STORE_KEY

    path = os.fspath(path)
    wall = time.time() if wall is None else wall
    aside = None
    recorded = 0
    if os.path.exists(path):
        try:
            with open(path, encoding="ascii") as f:
                old = json.load(f)
            value = old.get(STORE_KEY, 0) if isinstance(old, dict) else 0
            if isinstance(value, int) and 0 <= value <= GENERATION_MAX:
                recorded = value
        except (OSError, ValueError):
            pass
        aside = f"{path}.damaged-{int(wall)}"
        os.replace(path, aside)
    generation = min(max(recorded + 1, int(wall * 1000) - EPOCH_ORIGIN_MS), GENERATION_MAX)
    write_atomically(path, json.dumps({STORE_KEY: generation}).encode("ascii"))
    return aside


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haha.security.seqstore {check,reset} FILE``; returns an exit status."""
    p = argparse.ArgumentParser(prog="python -m haha.security.seqstore",
                                description="haha ESP sequence files")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="read FILE as the daemon does").add_argument("file")
    sub.add_parser("reset", help="move FILE aside, write a fresh one (a new epoch "
                   "generation)").add_argument("file")
    args = p.parse_args(argv)
    if args.command == "check":
        try:
            store = SequenceStore(args.file)
        except SecurityConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"{args.file}: {len(store._data)} entries, readable")
        return 0
    try:
        aside = reset(args.file)
    except OSError as e:
        print(f"error: cannot reset {args.file}: {e.strerror or e}", file=sys.stderr)
        return 2
    if aside:
        print(f"moved {args.file} to {aside}; wrote a fresh {args.file}")
    else:
        print(f"wrote a fresh {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
