"""Boot epochs: fresh keys for every run of a home agent, learned by its peers from the ESP.

With keys derived from long-lived pair secrets, a home agent that restarts without its sequence
file (or its disk) would send again from sequence number 1 under the same key: its peers'
anti-replay windows drop everything it sends as too old, for ever, and GCM would meet keys it
has used before. An *epoch* makes every run's keys new (``docs/security.md``, "Boot epochs"):

- each run of a home agent draws an epoch, 64 bits: a 40-bit **generation** (milliseconds
  since 2020-01-01 UTC, or one more than the generation recorded in the sequence file when
  that is larger, so it grows from run to run even when the clock is behind) and 24 random
  bits. The generation is recorded before the first packet is sent (failure to record is
  survivable: the clock and the random bits still make the epoch new);
- the keys and salts of the SAs *it sends on* to its peer home agents are derived with the
  epoch mixed in (:func:`haha.security.keys.derive_sa`); SPIs do not depend on it;
- every packet announces the epoch, authenticated: the IV (RFC 4106 3.1, explicit, unique per
  packet under one key) is the sequence number XOR the epoch, exactly the per-SA mask an
  :class:`~haha.security.esp.OutboundSA` already applies. The receiver reads ``IV XOR seq``;
- an :class:`EpochInboundSA` accepts the epoch it knows as usual; a packet announcing a
  *later* generation is checked under keys derived for that epoch, and when its ICV is valid
  (only a holder of the pair secret can produce one) the SA switches: new keys, a fresh
  anti-replay window. An earlier generation, or another epoch of the same generation, is
  dropped as ``stale-epoch`` (a replay of an old run's packets can never rewind the SA).

Sequence numbers of epoch-keyed SAs need no reservation on disk: a new run has new keys.
"""

import os
import time
from collections.abc import Callable
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any


from .errors import AUTH_FAILED, EPOCH_LIMITED, STALE_EPOCH, SecurityError
from .esp import _HEAD_IV, _NEVER, InboundSA

if TYPE_CHECKING:
    from .seqstore import SequenceStore

#: ``rekey(epoch) -> (key, salt)``; ``on_switch(epoch, previous) -> (advance, save_at)``.
#: A ``rekey`` marked ``static`` also answers ``rekey(None)``: the epoch-free pair (below).
Rekey = Callable[[int | None], tuple[bytes, bytes]]
OnSwitch = Callable[[int, int | None], tuple[Callable[[InboundSA, int], int] | None, int | None]]

#: Milliseconds between the Unix epoch and 2020-01-01T00:00:00Z.
EPOCH_ORIGIN_MS = 1577836800000
GENERATION_BITS = 40  # 2^40 ms: about 34.8 years after 2020
RANDOM_BITS = 24
GENERATION_MAX = (1 << GENERATION_BITS) - 1
#: The sequence-store entry holding the last generation a run of this daemon used.
STORE_KEY = "epoch-generation"
#: New-epoch tries per inbound SA: per second, and at once (EpochInboundSA).
TRIES_PER_SECOND = 5.0
TRIES_BURST = 10


def generation_of(epoch: int) -> int:
    """The 40-bit generation of a 64-bit epoch."""
    return epoch >> RANDOM_BITS


def new_epoch(wall: float, recorded: int = 0, rng: Callable[[int], bytes] = os.urandom) -> int:
    """A fresh epoch for a run starting at Unix time ``wall`` (seconds) after a run whose
    generation was ``recorded`` (0 when unknown)."""
    ms = int(wall * 1000) - EPOCH_ORIGIN_MS
    generation = min(max(recorded + 1, ms, 1), GENERATION_MAX)
    return (generation << RANDOM_BITS) | int.from_bytes(rng(3), "big")


def boot_epoch(store: "SequenceStore | None", wall: float,
               rng: Callable[[int], bytes] = os.urandom) -> tuple[int, bool]:
    """The epoch of this run, its generation recorded in ``store`` (a
    :class:`haha.security.seqstore.SequenceStore`, or None). Returns ``(epoch, recorded)``:
    ``recorded`` is False when the store could not write it (the disk is full or failing),
    which the caller reports; the epoch is still new (clock and random bits)."""
    last = store.get(STORE_KEY) if store is not None else 0
    epoch = new_epoch(wall, last or 0, rng)
    if store is None:
        return epoch, False
    return epoch, store.record(STORE_KEY, generation_of(epoch))


class EpochInboundSA(InboundSA):
    """An inbound SA whose keys follow the sender's epoch (module docstring).

    ``rekey(epoch)`` returns ``(key, salt)`` for an epoch. ``epoch`` is the epoch known at
    creation (None: the first authentic packet sets it), with ``floor`` its recorded window top.
    ``on_switch(epoch, previous)`` is called after a switch (``previous`` None: the first epoch
    learned) and returns ``(advance, save_at)`` for the new epoch's window (see
    :class:`InboundSA`), or ``(None, None)``.

    Trying a new epoch costs a key derivation and a key schedule (about ten times an ordinary
    packet, ``bench/epoch.py``) before the ICV can say whether the packet is genuine, so the
    tries are budgeted: ``tries`` per second, ``burst`` at once, on the monotonic ``clock``.
    A candidate beyond the budget is dropped as ``epoch-limited`` without any cryptography. A
    flood of forged announcements then costs a few derivations a second, and can at worst delay
    a genuine new run (its next packet is tried when a token is back).
    """

    __slots__ = ("epoch", "_rekey", "_on_switch", "switches", "_kw", "_clock", "_rate",
                 "_burst", "_tokens", "_stamp", "_static", "_static_mask")

    def __init__(self, spi: int, rekey: Rekey, epoch: int | None = None,
                 peer: IPv6Address | None = None, floor: int = 0,
                 on_switch: OnSwitch | None = None, tries: float = TRIES_PER_SECOND,
                 burst: float = TRIES_BURST, clock: Callable[[], float] = time.monotonic,
                 **kw: Any) -> None:
        key, salt = rekey(epoch if epoch is not None else 0)
        super().__init__(spi, key, salt, peer=peer, floor=floor if epoch is not None else 0,
                         **kw)
        self.epoch = epoch
        self._rekey = rekey
        self._on_switch = on_switch
        self.switches = 0
        self._kw = {k: v for k, v in kw.items()
                    if k in ("replay_window", "role", "sources", "ciphers")}
        self._clock = clock
        self._rate = tries
        self._burst = burst
        self._tokens = float(burst)
        self._stamp: float | None = None
        # A sender whose ESP is done by a Linux kernel (``[security] mode = kernel-xfrm``)
        # cannot announce an epoch: the kernel's IV is the sequence number XOR a random mask
        # of its own. It sends under the epoch-free keys of the pair instead, which a ``rekey``
        # marked ``static`` gives for ``None`` (haha.security.keys.derive_pair). Their packets
        # are checked under those keys, in a window of their own; ``_static_mask`` is the mask
        # the kernel's SA uses, learned from its first authentic packet.
        self._static: InboundSA | None = None
        self._static_mask: int | None = None
        if getattr(rekey, "static", False):
            skey, ssalt = rekey(None)
            self._static = InboundSA(spi, skey, ssalt, peer=peer, **self._kw)

    def _take_token(self) -> bool:
        now = self._clock()
        if self._stamp is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def _accept(self, esp: bytes, seq: int) -> tuple[IPv6Address | None, int, bytes]:
        epoch = _HEAD_IV.unpack_from(esp)[2] ^ seq
        if epoch == self.epoch:
            return super()._accept(esp, seq)
        static = self._static
        tried = False  # a token was spent on this packet
        if static is not None:
            if epoch == self._static_mask:
                result = static._accept(esp, seq)
                self.received += 1
                return result
            # A kernel sender's new mask costs an ICV check: under the same budget as a new
            # epoch, so a flood of forged announcements costs no more than before.
            if self._take_token():
                tried = True
                if static.authentic(esp):
                    self._static_mask = epoch
                    result = static._accept(esp, seq)
                    self.received += 1
                    return result
            elif self.epoch is None or generation_of(epoch) > generation_of(self.epoch):
                raise SecurityError(EPOCH_LIMITED, "too many new-epoch tries", spi=self.spi,
                                    seq=seq, peer=self.peer)
        if self.epoch is not None and generation_of(epoch) <= generation_of(self.epoch):
            raise SecurityError(STALE_EPOCH, "an earlier run's keys", spi=self.spi, seq=seq,
                                peer=self.peer)
        if not tried and not self._take_token():
            raise SecurityError(EPOCH_LIMITED, "too many new-epoch tries", spi=self.spi,
                                seq=seq, peer=self.peer)
        key, salt = self._rekey(epoch)
        candidate = InboundSA(self.spi, key, salt, peer=self.peer, **self._kw)
        try:
            result = candidate._accept(esp, seq)
        except SecurityError as e:
            if e.reason == AUTH_FAILED:
                raise
            self._switch(epoch, candidate)  # authentic but malformed: the sender did switch
            raise
        finally:
            candidate._ciphers.drop(candidate)  # a candidate's context never stays cached
        self._switch(epoch, candidate)
        return result

    @property
    def static_mask(self) -> int | None:
        """The IV mask of the sender's epoch-free (kernel) SA once one of its packets was
        authentic, else None."""
        return self._static_mask

    def _switch(self, epoch: int, candidate: InboundSA) -> None:
        old, self.epoch = self.epoch, epoch
        self._ciphers.drop(self)  # the old keys' context: built again from the new keys
        self._key = candidate._key
        self._top = candidate._top
        self._bits = candidate._bits
        self.received += candidate.received
        self.switches += 1
        self._advance, self._save_at = None, _NEVER
        if self._on_switch is not None:
            advance, save_at = self._on_switch(epoch, old)
            if advance is not None and save_at is not None:
                self._advance, self._save_at = advance, save_at

    def __repr__(self) -> str:
        e = "unknown" if self.epoch is None else f"{self.epoch:016x}"
        return f"<EpochInboundSA spi=0x{self.spi:08x} peer={self.peer} epoch={e} top={self._top}>"


__all__ = ["EpochInboundSA", "boot_epoch", "generation_of", "new_epoch"]
