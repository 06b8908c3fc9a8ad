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
- inbound: the window's top is written once it has advanced ``block`` past the last value
  written, and by :meth:`SequenceStore.flush` at a clean stop; after a restart everything up to
  it counts as received. After a crash, at most ``block`` earlier packets could be replayed
  once; after a clean stop, none.

Entries are named ``out|in PEER SPI``; new keys with a new SPI start fresh. When an SA is given
new keys under the *same* SPI, its entries must be removed (``docs/security.md``).
"""

import json
import os

from .errors import SecurityConfigError
from .esp import SEQ_MAX

DEFAULT_BLOCK = 1024


def _name(direction, peer, spi):
    return f"{direction} {peer} 0x{spi:08x}"


class SequenceStore:
    """The state file at ``path`` (created when missing). ``block`` is how many sequence
    numbers are reserved at a time (outbound) and how far a top moves between writes
    (inbound)."""

    def __init__(self, path, block=DEFAULT_BLOCK):
        if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 1 << 24:
            raise SecurityConfigError(f"sequence block {block!r} is not in 1..16777216")
        self.path = os.fspath(path)
        self.block = block
        self._data = self._load()
        self._batch = 0
        self._dirty = False
        self.writes = 0

    def _load(self):
        try:
            with open(self.path, encoding="ascii") as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise SecurityConfigError(
                f"sequence state file {self.path} cannot be read ({e}); remove it only if every "
                "peer's SAs are re-keyed or their state removed too"
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and 0 <= v <= SEQ_MAX
            for k, v in data.items()
        ):
            raise SecurityConfigError(f"sequence state file {self.path} is not a name -> "
                                      "sequence number object")
        return data

    def _save(self):
        if self._batch:
            self._dirty = True
            return
        tmp = f"{self.path}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(tmp, flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, json.dumps(self._data, sort_keys=True).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._dirty = False
        self.writes += 1

    def batch(self):
        """A context manager holding writes back until it exits (one write for many SAs)."""
        store = self

        class _Batch:
            def __enter__(self):
                store._batch += 1
                return store

            def __exit__(self, *exc):
                store._batch -= 1
                if not store._batch and store._dirty:
                    store._save()

        return _Batch()

    # -- outbound ---------------------------------------------------------------------------

    def start_outbound(self, peer, spi):
        """``(seq, limit, reserve)`` for a new outbound SA object: the last number that may
        already have been sent, how far it may go before reserving again (this reservation is
        written now, or when the current batch ends) and the reservation callback."""
        name = _name("out", peer, spi)
        used = self._data.get(name, 0)
        if used >= SEQ_MAX:
            return SEQ_MAX, SEQ_MAX, self._reserver(name)
        limit = min(used + self.block, SEQ_MAX)
        self._data[name] = limit
        self._save()
        return used, limit, self._reserver(name)

    def _reserver(self, name):
        def reserve(seq):
            limit = min(seq - 1 + self.block, SEQ_MAX)
            self._data[name] = limit
            self._save()
            return limit

        return reserve

    # -- inbound ----------------------------------------------------------------------------

    def start_inbound(self, peer, spi):
        """``(floor, advance, save_at)`` for a new inbound SA object (see the module
        docstring)."""
        name = _name("in", peer, spi)
        floor = self._data.get(name, 0)

        def advance(top):
            self._data[name] = top
            self._save()
            return top + self.block

        return floor, advance, floor + self.block

    def flush(self, sadb):
        """Write the current top of every inbound SA of ``sadb`` (at a clean stop)."""
        for row in sadb.describe():
            if row["direction"] == "in" and row["top"]:
                name = _name("in", row["peer"], int(row["spi"], 16))
                if self._data.get(name, 0) < row["top"]:
                    self._data[name] = row["top"]
        self._save()

    def forget(self, peer, spi):
        """Remove both entries of an SA (before giving it new keys under the same SPI)."""
        for d in ("out", "in"):
            self._data.pop(_name(d, peer, spi), None)
        self._save()
