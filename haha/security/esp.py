"""ESP transport mode (RFC 4303) with AES-GCM and a 16-octet ICV (RFC 4106), per SA.

Packet layout (RFC 4303 2, RFC 4106 3-5), offsets from the SPI::

    0  Security Parameters Index 32
    4  Sequence Number 32                      (RFC 4303 2.2, the low 32 bits; no ESN here)
    8  Initialization Vector 64                (RFC 4106 3.1, explicit, unique per packet)
    16 ciphertext of: Payload | Padding 1,2,3.. | Pad Length 8 | Next Header 8
    -16 Integrity Check Value 128              (RFC 4106 3.3 / 6: the GCM tag)

GCM nonce = salt (4 octets, RFC 4106 4) || IV (8 octets). Additional authenticated data =
SPI || Sequence Number (RFC 4106 5, 32-bit sequence numbers). GCM needs no block alignment, so the
padding only makes the ciphertext a multiple of 4 octets (RFC 4303 2.4), the minimum that does,
which is what Linux's esp6 does for ``rfc4106(gcm(aes))`` (its block size is 1, aligned to 4).

IV choice: the IV is the 64-bit sequence number XORed with a random 64-bit mask drawn when the SA
object is made. That is Linux's ``seqiv`` generator (sequence number XOR a random per-SA salt):
unique for every packet of one SA object (the sequence number never repeats), and with manual
keys, where a restarted daemon reuses the same key and starts its sequence number again at 1, the
fresh mask keeps the IVs of the new run apart from the old run's (GCM must never see one
key/nonce pair twice). Known-answer tests pass a mask that reproduces a published IV.

Inbound checks, in RFC 4303 3.4 order: length, anti-replay pre-check (3.4.3), ICV (with GCM
decryption, one step), then the window moves, then the trailer (padding 1, 2, 3, ... and a pad
length that fits) is checked. Sequence number 0 is never sent (3.3.3) and counts as a replay.

Memory (docs/security.md, "Memory per SA"): an SA keeps its counters as integers in
``__slots__`` and its keying material as one ``key || salt`` bytes object, or nothing at all
when a shared :class:`KeySource` can derive it again (a node group's SAs). The AES-GCM context
(an OpenSSL cipher context of about 2.5 KB) and the salt are built when the SA is first used and
kept in a :class:`CipherCache` holding the contexts of the most recently used SAs only. An SA
whose context was evicted builds it again at its next packet (a few microseconds, a key
derivation more with a key source): the bytes on the wire, the sequence numbers and the
anti-replay window do not depend on it.
"""

import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable
from ipaddress import IPv6Address
from typing import Protocol, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import (
    AUTH_FAILED,
    BAD_PADDING,
    REPLAY,
    SEQ_EXHAUSTED,
    TOO_OLD,
    TRUNCATED,
    SecurityConfigError,
    SecurityError,
)

HEADER_LEN = 8  # SPI + Sequence Number
IV_LEN = 8  # RFC 4106 3.1
ICV_LEN = 16  # RFC 4106 6: 8, 12 and 16 are defined; only 16 is used here
SALT_LEN = 4  # RFC 4106 4
KEY_LENGTHS = (16, 24, 32)  # AES-128, -192, -256
#: The shortest ESP packet: header, IV, a ciphertext holding at least Pad Length and Next Header,
#: ICV. A sender aligns the ciphertext to 4 octets (RFC 4303 2.4); a receiver does not insist
#: (GCM has no block size and Linux does not check it either), so 2 is the minimum accepted.
MIN_LEN = HEADER_LEN + IV_LEN + 2 + ICV_LEN
SEQ_MAX = 0xFFFFFFFF  # the last sequence number an SA may send (RFC 4303 3.3.3: never cycles)
MIN_SPI = 256  # SPIs 1-255 are reserved by IANA, 0 for local use (RFC 4303 2.1)
DEFAULT_REPLAY_WINDOW = 64  # RFC 4303 3.4.3: 32 MUST, 64 SHOULD be the default
MAX_PAYLOAD = 0xFFFF - HEADER_LEN - IV_LEN - 3 - 2 - ICV_LEN  # fits one IPv6 Payload Length
NO_NEXT_HEADER = 59  # a TFC dummy packet (RFC 4303 2.6): callers discard it

_PAD = bytes(range(1, 256))  # RFC 4303 2.4 default padding: 1, 2, 3, ... (Pad Length <= 255)
_PADS = tuple(_PAD[:n] for n in range(256))
_NEVER = SEQ_MAX + 1
#: Padding, Pad Length and Next Header for each next header and payload length:
#: ``_TAILS[next_header][len(payload) & 3]`` (the minimal padding, RFC 4303 2.4, depends only
#: on the length modulo 4).
_TAILS = tuple(
    tuple(_PAD[:pad] + bytes((pad, nh)) for pad in (-(r + 2) & 3 for r in range(4)))
    for nh in range(256)
)
_HEAD = struct.Struct("!II")
_HEAD_IV = struct.Struct("!IIQ")  # SPI, Sequence Number, IV
# Slices of a packet, made once: Python 3.11 builds a new slice object for every ``x[a:b]``.
_AAD = slice(0, 8)  # SPI || Sequence Number (RFC 4106 5)
_IV = slice(8, 16)
_BODY = slice(16, None)  # ciphertext || ICV


#: The lengths of one SA's ``key || salt``; anything longer is a pair's (both halves).
_KEYMAT_LENGTHS = tuple(k + SALT_LEN for k in KEY_LENGTHS)
_KEYMAT_MAX = max(_KEYMAT_LENGTHS)

#: Cipher contexts a :class:`CipherCache` keeps by default (``[security] cipher-cache``).
DEFAULT_CIPHER_CACHE = 4096
_EMPTY: frozenset = frozenset()
#: Replay-window bitmap masks by window size, shared by every SA of that size.
_WINDOW_MASKS: dict[int, int] = {}


#: ``AESGCM.encrypt`` or ``decrypt`` of one context: ``(nonce, data, associated_data)``.
Crypt = Callable[[bytes, bytes, bytes], bytes]


class KeySource(Protocol):
    """Derives an SA's ``key || salt`` again when its cipher context is rebuilt, so that the SA
    needs to keep no key material (one source serves many SAs: it reads ``sa.peer``)."""

    def keys(self, sa: "_Keyed") -> bytes:
        """``key || salt`` (RFC 4106: a 16, 24 or 32 octet key and a 4 octet salt) of ``sa``."""


class CipherCache:
    """The AES-GCM contexts of at most ``capacity`` SAs, the most recently used ones.

    An SA asks :meth:`load` for its context when it has none. :attr:`lru` lists the SAs
    holding one, oldest first, each with its use count (packets sealed or opened) when it was
    last looked at. Beyond ``capacity`` the oldest goes, unless it was used since (its count
    moved): then it gets a second chance at the recent end (the "clock" approximation of least
    recently used, which costs the packets nothing: a packet only reads the SA's context, it
    moves nothing). An evicted SA (``sa._crypt = None``) builds its context again when next
    used. ``built`` counts contexts built, ``evicted`` contexts dropped for room."""

    __slots__ = ("capacity", "lru", "built", "evicted")

    def __init__(self, capacity: int = DEFAULT_CIPHER_CACHE) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise SecurityConfigError(f"cipher cache size {capacity!r} is not a positive "
                                      "integer")
        self.capacity = capacity
        #: SA -> its use count when last looked at, oldest first.
        self.lru: OrderedDict["_Keyed", int] = OrderedDict()
        self.built = 0
        self.evicted = 0

    def load(self, sa: "_Keyed", keys: bytes | None = None) -> Crypt:
        """Build ``sa``'s context (and salt), keep it at the recent end, make room beyond
        capacity; returns the SA's encrypt (outbound) or decrypt (inbound) call. ``keys``:
        the SA's ``key || salt`` when the caller has it at hand (an SA just derived), else the
        SA's own or its key source's."""
        if keys is not None:
            keymat: Union[bytes, KeySource] = keys
        else:
            keymat = sa._key
            if keymat.__class__ is not bytes:
                keymat = keymat.keys(sa)  # type: ignore[union-attr]  # a KeySource
            elif len(keymat) > _KEYMAT_MAX:  # type: ignore[arg-type]
                # Both directions of a pair in one object (:meth:`_Keyed.share_pair_keys`).
                half = len(keymat) >> 1  # type: ignore[arg-type]
                keymat = keymat[:half] if sa._OUTBOUND else keymat[half:]  # type: ignore[index]
        aead = AESGCM(keymat[:-SALT_LEN])  # type: ignore[index]
        crypt: Crypt = aead.encrypt if sa._OUTBOUND else aead.decrypt
        lru = self.lru
        while len(lru) >= self.capacity:  # room first: the SA being loaded is never the one
            old, seen = lru.popitem(last=False)
            uses = old._uses()
            if uses != seen:
                lru[old] = uses  # used since it was last looked at: a second chance
                continue
            old._crypt = old._salt = None
            self.evicted += 1
        lru[sa] = sa._uses()
        self.built += 1
        sa._salt = keymat[-SALT_LEN:]  # type: ignore[index]
        sa._crypt = crypt
        return crypt

    def drop(self, sa: "_Keyed") -> None:
        """Forget ``sa``'s context (the SA was removed or re-keyed)."""
        self.lru.pop(sa, None)
        sa._crypt = sa._salt = None

    def __len__(self) -> int:
        return len(self.lru)

    def __repr__(self) -> str:
        return (f"<CipherCache {len(self.lru)}/{self.capacity} built={self.built} "
                f"evicted={self.evicted}>")


#: The cache of SAs made without one (tests, tools); each database has its own.
default_ciphers = CipherCache()


class _Keyed:
    """What both halves of an SA share: keying material, and the cipher context's encrypt or
    decrypt call and the salt while the :class:`CipherCache` holds them (None otherwise)."""

    __slots__ = ("_key", "_salt", "_crypt", "_ciphers")

    _OUTBOUND = False  # which call of the context the SA uses
    _key: Union[bytes, KeySource]  # key || salt, or what derives it
    _salt: bytes | None
    _crypt: Crypt | None
    _ciphers: CipherCache

    #: ``_uses()``: packets the SA sealed or opened so far (the cache's clock reads it);
    #: each half defines it.
    _uses: Callable[[], int]

    def _hold(self, keymat: Union[bytes, KeySource], ciphers: CipherCache) -> None:
        """Keep ``keymat`` (``key || salt``), no context yet: it is built from the cache
        ``ciphers`` on first use."""
        self._key = keymat
        self._salt = None
        self._crypt = None
        self._ciphers = ciphers

    def share_pair_keys(self, pair: bytes) -> None:
        """Keep ``pair``, the outbound SA's ``key || salt`` followed by the inbound SA's, as
        the keying material of this half; both halves of a pair hold the one object (33
        octets of object header less than two), and each takes its own half when it builds its
        context. ``pair`` must be this SA's key and salt and its partner's, in that order for
        the outbound half."""
        if pair.__class__ is not bytes or len(pair) <= _KEYMAT_MAX \
                or len(pair) >> 1 not in _KEYMAT_LENGTHS or len(pair) & 1:
            raise SecurityConfigError("a pair's keys must be two key || salt of one length")
        self._key = pair

    def use_key_source(self, source: KeySource) -> None:
        """Keep no key material: ``source`` derives it whenever the context is rebuilt."""
        self._key = source

    def _cipher(self) -> Crypt:
        """The SA's encrypt or decrypt call, from the cache or built again (module
        docstring)."""
        crypt = self._crypt
        return crypt if crypt is not None else self._ciphers.load(self)


def _check_key(key: bytes, salt: bytes) -> None:
    if not isinstance(key, (bytes, bytearray)) or len(key) not in KEY_LENGTHS:
        n = len(key) if isinstance(key, (bytes, bytearray)) else type(key).__name__
        raise SecurityConfigError(f"AES-GCM key must be 16, 24 or 32 octets, not {n}")
    if not isinstance(salt, (bytes, bytearray)) or len(salt) != SALT_LEN:
        n = len(salt) if isinstance(salt, (bytes, bytearray)) else type(salt).__name__
        raise SecurityConfigError(f"RFC 4106 salt must be 4 octets, not {n}")


def _check_spi(spi: int) -> None:
    if not isinstance(spi, int) or isinstance(spi, bool) or not MIN_SPI <= spi <= 0xFFFFFFFF:
        raise SecurityConfigError(f"SPI {spi!r} is not in 256..4294967295 (RFC 4303 2.1)")


class OutboundSA(_Keyed):
    """The sending half of one SA: sequence counter, IV generation, encryption.

    ``seq`` is the last sequence number sent (0 for a new SA: the first packet carries 1).
    ``iv_mask`` is the 64-bit mask of the IV (drawn from ``rng`` when not given). ``limit`` and
    ``reserve`` let sequence numbers survive restarts (:mod:`haha.security.seqstore`): the SA
    sends up to ``limit`` and then calls ``reserve(sa, seq)``, which must record durably that
    numbers up to its result may be used and return it, before the packet leaves (the SA is
    passed, so one function serves every SA: no object per SA). ``ciphers`` is the
    :class:`CipherCache` its AES-GCM context lives in.
    """

    __slots__ = ("spi", "peer", "role", "_seq", "_mask", "_limit", "_reserve")

    _OUTBOUND = True

    def __init__(self, spi: int, key: bytes, salt: bytes, peer: IPv6Address | None = None,
                 seq: int = 0, iv_mask: int | None = None,
                 rng: Callable[[int], bytes] = os.urandom, limit: int = SEQ_MAX,
                 reserve: "Callable[[OutboundSA, int], int] | None" = None,
                 ciphers: CipherCache | None = None, role: str | None = None) -> None:
        _check_spi(spi)
        _check_key(key, salt)
        if not isinstance(seq, int) or not 0 <= seq <= SEQ_MAX:
            raise SecurityConfigError(f"initial sequence number {seq!r} is not in 0..{SEQ_MAX}")
        if not isinstance(limit, int) or not seq <= limit <= SEQ_MAX:
            raise SecurityConfigError(f"sequence limit {limit!r} is not in {seq}..{SEQ_MAX}")
        if iv_mask is None:
            iv_mask = int.from_bytes(rng(8), "big")
        if not isinstance(iv_mask, int) or not 0 <= iv_mask < 1 << 64:
            raise SecurityConfigError("IV mask must be a 64-bit unsigned integer")
        self.spi = spi
        self.peer = peer
        #: What the peer is (``home-agent``, ``mobile-node``), as the database was told.
        self.role = role
        self._hold(bytes(key) + bytes(salt), default_ciphers if ciphers is None else ciphers)
        self._seq = seq
        self._mask = iv_mask
        self._limit = limit if reserve is not None else SEQ_MAX
        self._reserve = reserve

    @classmethod
    def derived(cls, spi: int, keymat: bytes, peer: IPv6Address, seq: int, limit: int,
                reserve: "Callable[[OutboundSA, int], int] | None", iv_mask: int,
                ciphers: CipherCache, role: str) -> "OutboundSA":
        """An SA whose arguments its database has checked already (a derived pair,
        :meth:`haha.security.sadb.SecurityAssociationDatabase.add_derived_pair`): the state
        ``OutboundSA(spi, key, salt, ...)`` builds, without checking again. ``keymat`` is
        ``key || salt``."""
        sa = cls.__new__(cls)
        sa.spi = spi
        sa.peer = peer
        sa.role = role
        sa._hold(keymat, ciphers)
        sa._seq = seq
        sa._mask = iv_mask
        sa._limit = limit if reserve is not None else SEQ_MAX
        sa._reserve = reserve
        return sa

    @property
    def seq(self) -> int:
        """The last sequence number sent."""
        return self._seq

    def _uses(self) -> int:
        return self._seq

    @property
    def remaining(self) -> int:
        """How many more packets this SA may send."""
        return SEQ_MAX - self._seq

    def seal(self, next_header: int, payload: bytes) -> bytes:
        """The ESP packet (bytes from the SPI to the ICV) carrying ``payload``.

        Raises :class:`SecurityError` ``seq-exhausted`` once sequence number 2^32-1 has been
        sent, and ``ValueError`` for a next header outside 0-255 or a payload too large for one
        IPv6 packet; neither consumes a sequence number.
        """
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise ValueError(f"payload of {n} octets does not fit in one IPv6 packet with ESP")
        if not 0 <= next_header <= 255:
            raise ValueError(f"next header {next_header!r} is not 0-255")
        seq = self._seq + 1
        if seq > self._limit:
            self._extend(seq)
        self._seq = seq
        head = _HEAD_IV.pack(self.spi, seq, seq ^ self._mask)
        if payload.__class__ is not bytes:
            payload = bytes(payload)
        encrypt = self._crypt  # inline _cipher(): this is the hot path
        if encrypt is None:
            encrypt = self._ciphers.load(self)
        return head + encrypt(self._salt + head[_IV],  # type: ignore[operator]
                              payload + _TAILS[next_header][n & 3], head[_AAD])

    def skip_to(self, seq: int) -> None:
        """Continue after sequence number ``seq`` when it is above the last one sent (another
        home agent used this SA's keys up to there: address take-over)."""
        if seq <= self._seq:
            return
        seq = min(seq, SEQ_MAX)
        if seq > self._limit:
            self._extend(seq)
        self._seq = seq

    def _extend(self, seq: int) -> None:
        if seq > SEQ_MAX:
            raise SecurityError(
                SEQ_EXHAUSTED, "sequence number 2^32-1 already sent; the SA needs new keys",
                spi=self.spi, peer=self.peer,
            )
        reserve = self._reserve
        assert reserve is not None  # without it the limit is SEQ_MAX, refused above
        limit = reserve(self, seq)
        if not seq <= limit <= SEQ_MAX:
            raise AssertionError(f"sequence reservation returned {limit} for {seq}")
        self._limit = limit

    def __repr__(self) -> str:
        return f"<OutboundSA spi=0x{self.spi:08x} peer={self.peer} seq={self._seq}>"


class InboundSA(_Keyed):
    """The receiving half of one SA: anti-replay window, ICV check, decryption, trailer check.

    The window (RFC 4303 3.4.3) is ``replay_window`` sequence numbers wide ending at the
    highest authenticated sequence number ``top``; bit ``i`` of the bitmap (one integer)
    records ``top - i``. ``ciphers`` is the :class:`CipherCache` its AES-GCM context lives in.
    """

    __slots__ = ("spi", "peer", "role", "sources", "peer_key", "source_keys", "window",
                 "_top", "_bits", "_mask", "received", "_save_at", "_advance")

    def __init__(self, spi: int, key: bytes, salt: bytes, peer: IPv6Address | None = None,
                 replay_window: int = DEFAULT_REPLAY_WINDOW, role: str | None = None,
                 sources: Iterable[IPv6Address] = (), floor: int = 0,
                 advance: "Callable[[InboundSA, int], int] | None" = None,
                 save_at: int | None = None, ciphers: CipherCache | None = None,
                 peer_key: int | None = None) -> None:
        _check_spi(spi)
        _check_key(key, salt)
        if not isinstance(replay_window, int) or not 64 <= replay_window <= 1 << 16:
            raise SecurityConfigError(
                f"anti-replay window {replay_window!r} is not in 64..65536 (RFC 4303 3.4.3)"
            )
        self.spi = spi
        self.peer = peer
        self.role = role
        #: Every outer source address (besides ``peer``) the SA accepts packets from (one
        #: shared empty set for the usual SA with none).
        self.sources = frozenset(sources) if sources else _EMPTY
        #: ``peer`` and ``sources`` as integers, for fast comparison by the database (which
        #: passes ``peer_key``, the integer it keys its tables with, to share it).
        self.peer_key = peer_key if peer_key is not None or peer is None else int(peer)
        self.source_keys = frozenset(int(s) for s in self.sources) if self.sources else _EMPTY
        self.window = replay_window
        self._hold(bytes(key) + bytes(salt), default_ciphers if ciphers is None else ciphers)
        if not isinstance(floor, int) or not 0 <= floor <= SEQ_MAX:
            raise SecurityConfigError(f"replay floor {floor!r} is not in 0..{SEQ_MAX}")
        mask = _WINDOW_MASKS.get(replay_window)
        if mask is None:
            mask = _WINDOW_MASKS[replay_window] = (1 << replay_window) - 1
        self._mask = mask
        # Sequence number 0 counts as already received: it is never sent. A floor (the top
        # recorded before a restart) makes every number up to it count as received.
        self._top = floor
        self._bits = 1 if floor == 0 else self._mask
        self.received = 0
        # ``advance(sa, top)`` records the top durably (haha.security.seqstore) once it
        # reaches ``save_at`` and returns the next threshold.
        self._advance = advance
        self._save_at = save_at if advance is not None and save_at is not None else _NEVER

    @classmethod
    def derived(cls, spi: int, keymat: bytes, peer: IPv6Address, replay_window: int,
                role: str, floor: int, advance: "Callable[[InboundSA, int], int] | None",
                save_at: int | None, ciphers: CipherCache, peer_key: int) -> "InboundSA":
        """An SA whose arguments its database has checked already (a derived pair, no
        other sources): the state ``InboundSA(spi, key, salt, ...)`` builds, without checking
        again. ``keymat`` is ``key || salt``."""
        sa = cls.__new__(cls)
        sa.spi = spi
        sa.peer = peer
        sa.role = role
        sa.sources = _EMPTY
        sa.peer_key = peer_key
        sa.source_keys = _EMPTY
        sa.window = replay_window
        sa._hold(keymat, ciphers)
        mask = _WINDOW_MASKS.get(replay_window)
        if mask is None:
            mask = _WINDOW_MASKS[replay_window] = (1 << replay_window) - 1
        sa._mask = mask
        sa._top = floor
        sa._bits = 1 if floor == 0 else mask
        sa.received = 0
        sa._advance = advance
        sa._save_at = save_at if advance is not None and save_at is not None else _NEVER
        return sa

    @property
    def top(self) -> int:
        """The highest authenticated sequence number (0 before the first packet)."""
        return self._top

    def _uses(self) -> int:
        return self.received

    def raise_floor(self, floor: int) -> None:
        """Count every number up to ``floor`` as received (another home agent accepted them
        with this SA's keys: address take-over). Never lowers the window."""
        if self._top < floor <= SEQ_MAX:
            self._top = floor
            self._bits = self._mask

    def open(self, esp: bytes) -> tuple[int, bytes, int]:
        """Authenticate and decrypt ``esp``; return ``(next_header, payload, seq)``.

        Raises :class:`SecurityError` (``truncated``, ``too-old``, ``replay``, ``auth-failed``,
        ``bad-padding``). The window only moves for an authentic packet.
        """
        if len(esp) < MIN_LEN:
            raise SecurityError(
                TRUNCATED, f"ESP packet of {len(esp)} octets is shorter than {MIN_LEN}",
                spi=self.spi,
            )
        seq = _HEAD.unpack_from(esp)[1]
        _peer, next_header, payload = self._accept(esp, seq)
        return next_header, payload, seq

    def open_checked(self, esp: bytes, seq: int) -> tuple[int, bytes]:
        """``(next_header, payload)``: :meth:`open` for a caller that has already checked
        ``len(esp) >= MIN_LEN`` and read the sequence number ``seq``."""
        _peer, next_header, payload = self._accept(esp, seq)
        return next_header, payload

    def authentic(self, esp: bytes) -> bool:
        """Whether ``esp`` (at least :data:`MIN_LEN` octets) passes this SA's ICV check. Changes
        no state: no window, no counter."""
        try:
            decrypt = self._cipher()
            decrypt(self._salt + esp[_IV], esp[_BODY], esp[_AAD])  # type: ignore[operator]
        except InvalidTag:
            return False
        return True

    def _accept(self, esp: bytes, seq: int) -> tuple[IPv6Address | None, int, bytes]:
        """``(peer, next_header, payload)``: :meth:`open_checked` with the SA's peer in front,
        the tuple :meth:`SecurityAssociationDatabase.unprotect` returns (its fast path)."""
        top = self._top
        if seq <= top:
            diff = top - seq
            if diff >= self.window:
                raise SecurityError(TOO_OLD, "left of the anti-replay window", spi=self.spi,
                                    seq=seq)
            if (self._bits >> diff) & 1:
                raise SecurityError(REPLAY, "already received", spi=self.spi, seq=seq)
        decrypt = self._crypt  # inline _cipher(): this is the hot path
        if decrypt is None:
            decrypt = self._ciphers.load(self)
        try:
            plain = decrypt(self._salt + esp[_IV],  # type: ignore[operator]
                            esp[_BODY], esp[_AAD])
        except InvalidTag:
            raise SecurityError(AUTH_FAILED, "ICV mismatch", spi=self.spi, seq=seq) from None
        if seq > top:
            shift = seq - top
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.window else 1
            self._top = seq
            if seq >= self._save_at:
                advance = self._advance
                assert advance is not None  # _save_at is _NEVER without it
                self._save_at = advance(self, seq)
        else:
            self._bits |= 1 << (top - seq)
        self.received += 1
        pad = plain[-2]
        # Counted from the end, so a Pad Length larger than what precedes it leaves a short
        # slice that cannot equal the padding (the plaintext has at least 2 octets).
        end = -2 - pad
        if plain[end:-2] != _PADS[pad]:
            raise SecurityError(BAD_PADDING, f"pad length {pad} or padding octets malformed",
                                spi=self.spi, seq=seq)
        return self.peer, plain[-1], plain[:end]

    def __repr__(self) -> str:
        return f"<InboundSA spi=0x{self.spi:08x} peer={self.peer} top={self._top}>"
