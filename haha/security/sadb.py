"""The security association database: manually keyed ESP SAs by peer and by SPI.

One SA per direction per peer (RFC 4301 manual keying): an HA pair has two, an HA and a mobile
node two. The *peer* of an SA is the identity its packets belong to:

- between home agents, the peer home agent's address;
- between a home agent and a mobile node, the mobile node's **home address** (RFC 3776 uses the
  home address in its selectors), on the mobile node's side the home agent's address.

``protect(peer, next_header, payload)`` picks the outbound SA by peer. ``unprotect(source, esp)``
picks the inbound SA by SPI and then checks that ``source`` is the SA's peer (or one of its
``sources``). The caller passes as ``source`` the address the packet speaks for: a packet with
a Home Address option (a mobile node away from home, whose outer source is its care-of address)
is checked against the home address in that option (``haha.wire.ipv6.Packet.source`` gives
exactly that); any other packet against its IPv6 source. The care-of address itself is never
bound to an SA: it changes with every move.

Address take-over (docs/design.md) adds SAs bound to a *local* address as well: a home agent
holding a dead peer's address uses the dead peer's SA pair with each of its mobile nodes
(:meth:`SecurityAssociationDatabase.add_local`), so that pair exists beside its own pair with
the same node. ``protect(peer, ..., local=address)`` picks it; inbound, the SPI does.

Drops are counted by reason in ``counters`` (a dict, every reason present from the start).
Nothing here logs, and no error, ``repr`` or ``describe()`` output holds key material.
"""

import os
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Union, cast

from zope.interface import implementer

from ..interfaces import IKnownSpi, ISecurityAssociations, ISequencePersistence
from ..wire.addresses import address_int
from .errors import (
    AUTH_FAILED,
    BAD_PADDING,
    NO_SA,
    REPLAY,
    EPOCH_LIMITED,
    SEQ_EXHAUSTED,
    STALE_EPOCH,
    TOO_OLD,
    TRUNCATED,
    UNKNOWN_SPI,
    WRONG_SOURCE,
    SecurityConfigError,
    SecurityError,
)
from .esp import (
    _HEAD,
    DEFAULT_CIPHER_CACHE,
    DEFAULT_REPLAY_WINDOW,
    CipherCache,
    KEY_LENGTHS,
    MIN_LEN,
    MIN_SPI,
    SALT_LEN,
    SEQ_MAX,
    InboundSA,
    KeySource,
    OutboundSA,
)
from .epoch import EpochInboundSA, Rekey

if TYPE_CHECKING:
    from .seqstore import SequenceStore

#: An address as callers may give it: an IPv6Address or its text.
AddressLike = Union[IPv6Address, str]

HOME_AGENT = "home-agent"
MOBILE_NODE = "mobile-node"
ROLES = (HOME_AGENT, MOBILE_NODE)
DIRECTIONS = ("in", "out")

#: The reasons the database counts (inbound drops and outbound refusals).
SADB_REASONS = (UNKNOWN_SPI, REPLAY, TOO_OLD, AUTH_FAILED, BAD_PADDING, TRUNCATED, WRONG_SOURCE,
                STALE_EPOCH, EPOCH_LIMITED,
                SEQ_EXHAUSTED, NO_SA)


def _address(value: Any, what: str) -> IPv6Address:
    a: Union[IPv4Address, IPv6Address]
    try:
        a = value if isinstance(value, IPv6Address) else ip_address(value)
    except (TypeError, ValueError):
        raise SecurityConfigError(f"{what} {value!r} is not an IPv6 address") from None
    if not isinstance(a, IPv6Address):
        raise SecurityConfigError(f"{what} {value!r} is not an IPv6 address")
    return a


def _key(address: Any) -> int:
    # The hot paths key their tables by the address's integer: hashing or comparing IPv6Address
    # objects costs ten times more (it goes through hex()), which matters against an AES-GCM
    # operation of about a microsecond. ``address_int`` is the codec's integer read
    # (bench/wire_fast.py measures it against ``int(address)``).
    if type(address) is IPv6Address:
        return address_int(address)
    return address_int(_address(address, "address"))


@dataclass(frozen=True)
class SaSpec:
    """One manually keyed SA as the configuration gives it.

    ``key`` (16, 24 or 32 octets) and ``salt`` (4 octets) are the RFC 4106 keying material: the
    Linux ``rfc4106(gcm(aes))`` key blob is ``key || salt``. They never appear in the ``repr``.
    ``role`` is what the *peer* is (``home-agent`` or ``mobile-node``); the policy uses it to
    refuse, say, a Binding Information Update protected by a mobile node's SA. ``sources``
    lists further addresses an inbound SA accepts packets from (a home agent that signals from
    both its HA address and its HAHA address); ``replay_window`` overrides the database default.
    """

    peer: IPv6Address
    direction: str
    spi: int
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    role: str = HOME_AGENT
    sources: tuple[IPv6Address, ...] = ()
    replay_window: Optional[int] = None
    #: Outbound: the boot epoch keying this SA, also its IV mask (haha.security.epoch).
    epoch: Optional[int] = None
    #: Inbound: ``rekey(epoch) -> (key, salt)``: the SA follows the sender's boot epochs.
    rekey: Optional[Rekey] = field(default=None, repr=False,
                                                                 compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "peer", _address(self.peer, "SA peer"))
        if self.direction not in DIRECTIONS:
            raise SecurityConfigError(f"SA {self.direction!r} for peer {self.peer}: direction "
                                      "must be 'in' or 'out'")
        if not isinstance(self.spi, int) or isinstance(self.spi, bool) or not (
            MIN_SPI <= self.spi <= 0xFFFFFFFF
        ):
            raise SecurityConfigError(f"SA {self.direction!r} for peer {self.peer}: SPI "
                                      f"{self.spi!r} is not in 256..4294967295 "
                                      "(RFC 4303 2.1 reserves 0-255)")
        if not (isinstance(self.key, (bytes, bytearray)) and len(self.key) in KEY_LENGTHS
                and isinstance(self.salt, (bytes, bytearray)) and len(self.salt) == SALT_LEN
                and self.role in ROLES):
            self._refuse()  # the name is built only for an error: formatting an address
            # costs more than every check here (10,000 node keys at start-up)
        object.__setattr__(self, "key", bytes(self.key))
        object.__setattr__(self, "salt", bytes(self.salt))
        object.__setattr__(
            self, "sources", tuple(_address(s, f"SA {self.direction} spi=0x{self.spi:08x} "
                                               f"for peer {self.peer}: source")
                                   for s in self.sources)
        )

    def _refuse(self) -> None:
        name = f"SA {self.direction} spi=0x{self.spi:08x} for peer {self.peer}"
        if not isinstance(self.key, (bytes, bytearray)) or len(self.key) not in KEY_LENGTHS:
            raise SecurityConfigError(f"{name}: key must be 16, 24 or 32 octets")
        if not isinstance(self.salt, (bytes, bytearray)) or len(self.salt) != SALT_LEN:
            raise SecurityConfigError(f"{name}: salt must be 4 octets")
        raise SecurityConfigError(f"{name}: role must be one of {', '.join(ROLES)}")


@implementer(ISecurityAssociations, ISequencePersistence, IKnownSpi)
class SecurityAssociationDatabase:
    """Manually keyed ESP SAs (see the module docstring for peers and sources).

    ``replay_window`` is the default anti-replay window (64..65536, RFC 4303 3.4.3); ``rng``
    draws each outbound SA's IV mask (:mod:`haha.security.esp`). ``sequence_store`` (a
    :class:`haha.security.seqstore.SequenceStore`) keeps sequence numbers across restarts;
    without one, a restarted node's peers drop its packets as too old (docs/security.md).
    ``cipher_cache`` is how many SAs keep their AES-GCM context between packets
    (:class:`haha.security.esp.CipherCache`: the most recently used ones).
    """

    def __init__(self, replay_window: int = DEFAULT_REPLAY_WINDOW,
                 rng: Callable[[int], bytes] = os.urandom,
                 sequence_store: "Optional[SequenceStore]" = None,
                 cipher_cache: int = DEFAULT_CIPHER_CACHE) -> None:
        self.replay_window = replay_window
        self._rng = rng
        self.sequence_store = sequence_store
        #: The AES-GCM contexts of the most recently used SAs of this database.
        self.ciphers = CipherCache(cipher_cache)
        #: This run's boot epoch when the outbound SAs are keyed by one (set by whoever built
        #: the database, haha.security.keyring), else None.
        self.epoch: Optional[int] = None
        self._out: dict[int, OutboundSA] = {}  # int(peer) -> OutboundSA
        # spi -> InboundSA, or a tuple of them: derived SPIs of different peers may collide
        # (a tuple only then: one per SA would cost 56 octets each)
        self._in: dict[int, Union[InboundSA, tuple[InboundSA, ...]]] = {}
        self._in_peer: dict[IPv6Address, InboundSA] = {}  # peer -> InboundSA
        # (int(local), int(peer)) -> OutboundSA (address take-over)
        self._out_local: dict[tuple[int, int], OutboundSA] = {}
        self._in_local: dict[tuple[int, int], InboundSA] = {}  # (int(local), int(peer)) -> SA
        # Every drop reason (a str-valued Reason) plus the epoch counters below.
        self.counters: dict[str, int] = dict.fromkeys(SADB_REASONS, 0)
        # A peer's first epoch authenticated; a peer's new run authenticated and followed.
        self.counters["epoch-learned"] = self.counters["epoch-switched"] = 0

    def _role(self, p: int, peer: Any) -> Optional[str]:
        """The role of the peer whose integer is ``p`` (every SA of a peer has the same): from
        its own SAs, else from one held for address take-over; None without any SA. Kept on
        the SAs rather than in a table of its own (an entry per node)."""
        out = self._out.get(p)
        if out is not None:
            return out.role
        sa = self._in_peer.get(peer if type(peer) is IPv6Address else IPv6Address(p))
        if sa is not None:
            return sa.role
        for (_, q), local_sa in list(self._out_local.items()) + list(self._in_local.items()):
            if q == p:
                return local_sa.role
        return None

    def _same_spi(self, spi: int) -> tuple[InboundSA, ...]:
        """The inbound SAs of ``spi`` (usually none or one)."""
        sas = self._in.get(spi)
        if sas is None:
            return ()
        return sas if type(sas) is tuple else (cast(InboundSA, sas),)

    def _set_spi(self, spi: int, sas: tuple[InboundSA, ...]) -> None:
        if not sas:
            self._in.pop(spi, None)
        else:
            self._in[spi] = sas[0] if len(sas) == 1 else sas

    @classmethod
    def from_specs(cls, specs: Iterable[SaSpec], replay_window: int = DEFAULT_REPLAY_WINDOW,
                   rng: Callable[[int], bytes] = os.urandom,
                   sequence_store: "Optional[SequenceStore]" = None,
                   cipher_cache: int = DEFAULT_CIPHER_CACHE
                   ) -> "SecurityAssociationDatabase":
        """A database holding ``specs`` (an iterable of :class:`SaSpec`). Raises
        :class:`SecurityConfigError` for a second SA of one peer in one direction, an inbound
        SPI shared with another peer for the same source addresses, or one peer given two
        roles; nothing is half-built."""
        db = cls(replay_window, rng, sequence_store, cipher_cache)
        if sequence_store is None:
            for spec in specs:
                db.add(spec)
        else:
            with sequence_store.batch():
                for spec in specs:
                    db.add(spec)
        return db

    def add(self, spec: SaSpec, key_source: Optional[KeySource] = None) -> None:
        """Add one SA. Raises :class:`SecurityConfigError` and changes nothing when it clashes.
        With ``key_source`` the SA keeps no key material: the source derives ``spec``'s key
        and salt again whenever the SA's cipher context is rebuilt (a node group's SAs)."""
        if not isinstance(spec, SaSpec):
            raise SecurityConfigError(f"expected an SaSpec, got {type(spec).__name__}")
        p = _key(spec.peer)  # one integer object for this SA's tables and its peer_key
        known = self._role(p, spec.peer)
        if known is not None and known != spec.role:
            raise SecurityConfigError(
                f"peer {spec.peer} is already a {known}; an SA cannot make it a {spec.role}"
            )
        if spec.direction == "out":
            if p in self._out:
                raise SecurityConfigError(f"peer {spec.peer} already has an outbound SA")
            seq, limit, reserve = 0, None, None
            if self.sequence_store is not None and spec.epoch is None:
                seq, limit, reserve = self.sequence_store.start_outbound(spec.peer, spec.spi)
            out = OutboundSA(
                spec.spi, spec.key, spec.salt, peer=spec.peer, rng=self._rng, seq=seq,
                limit=limit if limit is not None else 0xFFFFFFFF, reserve=reserve,
                iv_mask=spec.epoch, ciphers=self.ciphers, role=spec.role)
            if key_source is not None:
                out.use_key_source(key_source)
            self._out[p] = out
        else:
            same = self._same_spi(spec.spi)
            mine = {spec.peer, *spec.sources}
            for other in same:
                if other.peer == spec.peer or mine & ({other.peer} | other.sources):
                    raise SecurityConfigError(
                        f"inbound SPI 0x{spec.spi:08x} of peer {spec.peer} is already used by "
                        f"the SA of peer {other.peer} for the same source addresses"
                    )
            if spec.peer in self._in_peer:
                raise SecurityConfigError(f"peer {spec.peer} already has an inbound SA")
            window = self.replay_window if spec.replay_window is None else spec.replay_window
            sa: InboundSA
            if spec.rekey is not None:
                sa = self._epoch_inbound(spec, spec.rekey, window)
            else:
                floor, advance, save_at = 0, None, None
                if self.sequence_store is not None:
                    floor, advance, save_at = self.sequence_store.start_inbound(spec.peer,
                                                                                spec.spi)
                sa = InboundSA(spec.spi, spec.key, spec.salt, peer=spec.peer,
                               replay_window=window, role=spec.role, sources=spec.sources,
                               floor=floor, advance=advance, save_at=save_at,
                               ciphers=self.ciphers, peer_key=p)
                if key_source is not None:
                    sa.use_key_source(key_source)
            self._set_spi(spec.spi, same + (sa,))
            self._in_peer[spec.peer] = sa

    def add_derived_pair(self, peer: IPv6Address, role: str, out_spi: int, out_keys: bytes,
                         in_spi: int, in_keys: bytes,
                         key_sources: tuple[Optional[KeySource], Optional[KeySource]]
                         = (None, None), prime: bool = False,
                         prime_inbound: bool = True) -> None:
        """Both SAs of a pair whose keys were just derived (``out_keys`` and ``in_keys``:
        ``key || salt``): what :meth:`add` of the two :class:`SaSpec` does (same checks, same
        errors, nothing added when one fails), without building them: a node group installs a
        pair per node on its first packet. ``key_sources`` (outbound, inbound) as for
        :meth:`add`; ``prime`` builds both cipher contexts from the keys given (only the
        outbound one with ``prime_inbound`` false: a pair installed to send, whose inbound
        context is built from the kept keys when a packet first arrives)."""
        if type(peer) is not IPv6Address:
            raise SecurityConfigError(f"SA peer {peer!r} is not an IPv6Address")
        if role not in ROLES:
            raise SecurityConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
        klen = len(out_keys) - SALT_LEN
        if klen not in KEY_LENGTHS or len(in_keys) != len(out_keys):
            raise SecurityConfigError(f"SA pair for peer {peer}: key || salt must be 20, 28 or "
                                      "36 octets")
        for spi in (out_spi, in_spi):
            if not isinstance(spi, int) or isinstance(spi, bool) \
                    or not MIN_SPI <= spi <= 0xFFFFFFFF:
                raise SecurityConfigError(f"SA pair for peer {peer}: SPI {spi!r} is not in "
                                          "256..4294967295 (RFC 4303 2.1 reserves 0-255)")
        if out_keys.__class__ is not bytes or in_keys.__class__ is not bytes:
            out_keys, in_keys = bytes(out_keys), bytes(in_keys)
        p = address_int(peer)
        # A new peer (the usual case: a node's first packet) has no SA in any table; only
        # then are the checks below all passed without looking further.
        if p in self._out or peer in self._in_peer or self._out_local or self._in_local:
            known = self._role(p, peer)
            if known is not None and known != role:
                raise SecurityConfigError(
                    f"peer {peer} is already a {known}; an SA cannot make it a {role}")
            if p in self._out:
                raise SecurityConfigError(f"peer {peer} already has an outbound SA")
            if peer in self._in_peer:
                raise SecurityConfigError(f"peer {peer} already has an inbound SA")
        same = self._same_spi(in_spi)
        for other in same:
            if other.peer == peer or peer in other.sources:
                raise SecurityConfigError(
                    f"inbound SPI 0x{in_spi:08x} of peer {peer} is already used by "
                    f"the SA of peer {other.peer} for the same source addresses")
        iv_mask = int.from_bytes(self._rng(8), "big")
        if not 0 <= iv_mask < 1 << 64:
            raise SecurityConfigError("IV mask must be a 64-bit unsigned integer")
        store = self.sequence_store
        if store is not None:
            seq, limit, reserve, floor, advance, save_at = store.start_pair(peer, out_spi,
                                                                            in_spi)
        else:
            seq, limit, reserve, floor, advance, save_at = 0, SEQ_MAX, None, 0, None, None
        out_mat = in_mat = None
        if key_sources == (None, None):
            # One object for both directions' keys (_Keyed.share_pair_keys, whose checks the
            # lengths above have made): 33 octets less per pair (a node group keeps its
            # nodes' keys, haha.security.nodegroup).
            out_mat = in_mat = out_keys + in_keys
        # Built without checking again what was checked above (the constructors' checks).
        out = OutboundSA.derived(out_spi, out_mat or out_keys, peer, seq, limit, reserve,
                                 iv_mask, self.ciphers, role)
        sa = InboundSA.derived(in_spi, in_mat or in_keys, peer, self.replay_window, role,
                               floor, advance, save_at, self.ciphers, p)
        if key_sources[0] is not None:
            out.use_key_source(key_sources[0])
        if key_sources[1] is not None:
            sa.use_key_source(key_sources[1])
        self._out[p] = out
        self._set_spi(in_spi, same + (sa,))
        self._in_peer[peer] = sa
        if prime:
            self.ciphers.load(out, out_keys)
            if prime_inbound:
                self.ciphers.load(sa, in_keys)

    def _epoch_inbound(self, spec: SaSpec, rekey: Rekey, window: int) -> EpochInboundSA:
        store = self.sequence_store
        epoch, floor, advance, save_at = None, 0, None, None
        if store is not None:
            epoch, floor, advance, save_at = store.start_inbound_epoch(spec.peer, spec.spi)

        def switched(new: int, old: Optional[int], peer: IPv6Address = spec.peer,
                     spi: int = spec.spi) -> Any:
            self.counters["epoch-switched" if old is not None else "epoch-learned"] += 1
            if store is None:
                return None, None
            return store.switch_inbound_epoch(peer, spi, new)

        return EpochInboundSA(spec.spi, rekey, epoch=epoch, peer=spec.peer, floor=floor,
                              on_switch=switched, replay_window=window, role=spec.role,
                              ciphers=self.ciphers,
                              sources=spec.sources, advance=advance, save_at=save_at)

    def add_local(self, spec: SaSpec, local: AddressLike, seq: int = 0, floor: int = 0) -> None:
        """Add ``spec`` as an SA of ``local`` (one of this node's addresses other than its
        own, held for address take-over): outbound ones start after sequence number ``seq``,
        inbound ones accept only numbers above ``floor``. Not kept in the sequence store (the
        address is given back or reclaimed at a restart). Raises
        :class:`SecurityConfigError` and changes nothing when it clashes."""
        if not isinstance(spec, SaSpec):
            raise SecurityConfigError(f"expected an SaSpec, got {type(spec).__name__}")
        local = _address(local, "local address")
        key = (_key(local), _key(spec.peer))
        known = self._role(_key(spec.peer), spec.peer)
        if known is not None and known != spec.role:
            raise SecurityConfigError(
                f"peer {spec.peer} is already a {known}; an SA cannot make it a {spec.role}")
        if spec.direction == "out":
            if key in self._out_local:
                raise SecurityConfigError(f"peer {spec.peer} already has an outbound SA "
                                          f"from {local}")
            self._out_local[key] = OutboundSA(spec.spi, spec.key, spec.salt, peer=spec.peer,
                                              rng=self._rng, seq=seq, ciphers=self.ciphers,
                                              role=spec.role)
        else:
            if key in self._in_local:
                raise SecurityConfigError(f"peer {spec.peer} already has an inbound SA to "
                                          f"{local}")
            same = self._same_spi(spec.spi)
            if any(other.peer == spec.peer for other in same):
                raise SecurityConfigError(f"inbound SPI 0x{spec.spi:08x} of peer {spec.peer} "
                                          "is already in use")
            window = self.replay_window if spec.replay_window is None else spec.replay_window
            sa = InboundSA(spec.spi, spec.key, spec.salt, peer=spec.peer, replay_window=window,
                           role=spec.role, sources=spec.sources, floor=floor,
                           ciphers=self.ciphers)
            self._set_spi(spec.spi, same + (sa,))
            self._in_local[key] = sa

    def remove_local(self, local: AddressLike) -> None:
        """Forget every SA added with :meth:`add_local` for ``local``."""
        at = address_int(_address(local, "local address"))
        for key in [k for k in self._out_local if k[0] == at]:
            self.ciphers.drop(self._out_local.pop(key))
        for key in [k for k in self._in_local if k[0] == at]:
            self._forget_inbound(self._in_local.pop(key))

    def has_local(self, local: AddressLike, peer: AddressLike) -> bool:
        """Whether an outbound SA of ``local`` towards ``peer`` exists."""
        return (_key(local), _key(peer)) in self._out_local

    def continue_after(self, peer: AddressLike, outbound: int, inbound: int,
                       local: Optional[AddressLike] = None) -> None:
        """Move the SA pair with ``peer`` (``local``'s, else the own one) past numbers another
        home agent used with the same keys: outbound after ``outbound``, inbound counting
        everything up to ``inbound`` as received. Unknown pairs are ignored."""
        if local is not None:
            key = (_key(local), _key(peer))
            sa_out, sa_in = self._out_local.get(key), self._in_local.get(key)
        else:
            sa_out = self._out.get(_key(peer))
            sa_in = self._in_peer.get(_address(peer, "peer"))
        if sa_out is not None:
            sa_out.skip_to(outbound)
        if sa_in is not None:
            sa_in.raise_floor(inbound)

    def state_of(self, peer: AddressLike) -> list[tuple[Optional[IPv6Address], int, int]]:
        """``[(local, outbound seq, inbound top), ...]`` of every SA pair with ``peer``:
        ``local`` None for the node's own pair, else the held address (address take-over)."""
        p = _key(peer)
        out: list[tuple[Optional[IPv6Address], int, int]] = []
        sa_out = self._out.get(p)
        sa_in = self._in_peer.get(_address(peer, "peer"))
        if sa_out is not None or sa_in is not None:
            out.append((None, sa_out.seq if sa_out else 0, sa_in.top if sa_in else 0))
        for (local, q), sa in self._out_local.items():
            if q == p:
                sa_in = self._in_local.get((local, q))
                out.append((IPv6Address(local), sa.seq, sa_in.top if sa_in else 0))
        return out

    def flush(self) -> None:
        """Record every inbound SA's anti-replay top in the sequence store (a clean stop)."""
        if self.sequence_store is not None:
            self.sequence_store.flush(self)

    def remove_peer(self, peer: AddressLike) -> None:
        """Forget every SA of ``peer`` (both directions). Unknown peers are ignored."""
        peer = _address(peer, "peer")
        out = self._out.pop(_key(peer), None)
        if out is not None:
            self.ciphers.drop(out)
        gone = self._in_peer.pop(peer, None)
        if gone is not None:
            self._forget_inbound(gone)

    def _forget_inbound(self, gone: InboundSA) -> None:
        self._set_spi(gone.spi, tuple(sa for sa in self._same_spi(gone.spi) if sa is not gone))
        self.ciphers.drop(gone)

    # -- ISecurityAssociations ------------------------------------------------------------------

    def protect(self, peer: AddressLike, next_header: int, payload: bytes,
                local: Optional[AddressLike] = None) -> bytes:
        """ESP bytes (SPI to ICV) carrying ``payload`` on the outbound SA towards ``peer``
        (the one of ``local`` when there is one: address take-over).

        Raises :class:`SecurityError` ``no-sa`` or ``seq-exhausted`` (both counted), and
        ``ValueError`` for a bad next header or an oversized payload.
        """
        sa = None
        if local is not None and self._out_local:
            sa = self._out_local.get((_key(local), _key(peer)))
        if sa is None:
            sa = self._out.get(address_int(peer)) if type(peer) is IPv6Address else None
            if sa is None:
                sa = self._lookup_out(peer)
        try:
            return sa.seal(next_header, payload)
        except SecurityError as e:
            self.counters[e.reason] += 1
            raise

    def _lookup_out(self, peer: Any) -> OutboundSA:
        try:
            sa = self._out.get(_key(peer))
        except SecurityConfigError:
            sa = None
        if sa is None:
            self.counters[NO_SA] += 1
            raise SecurityError(NO_SA, "no outbound SA for this peer", peer=peer)
        return sa

    def unprotect(self, source: AddressLike, esp: bytes) -> tuple[IPv6Address, int, bytes]:
        """``(peer, next_header, payload)`` of an ESP packet from ``source``.

        ``source`` is the home address for a packet with a Home Address option, otherwise the
        IPv6 source (``haha.wire.ipv6.Packet.source``). Raises :class:`SecurityError` with one
        of ``truncated``, ``unknown-spi``, ``wrong-source``, ``too-old``, ``replay``,
        ``auth-failed``, ``bad-padding``; each drop is counted. A packet whose next header is
        59 (a TFC dummy packet, RFC 4303 2.6) is returned as such: the caller discards it.
        """
        if len(esp) < MIN_LEN:
            self.counters[TRUNCATED] += 1
            raise SecurityError(TRUNCATED, f"ESP packet of {len(esp)} octets is shorter than "
                                f"{MIN_LEN}")
        spi, seq = _HEAD.unpack_from(esp)
        found = self._in.get(spi)
        if found is None:
            self.counters[UNKNOWN_SPI] += 1
            raise SecurityError(UNKNOWN_SPI, spi=spi)
        src = address_int(source) if type(source) is IPv6Address else _key(source)
        if type(found) is tuple:
            sa = self._by_source(found, src, source)
        else:
            sa = found  # type: ignore[assignment]  # not cast(): a call on the hot path
            if src != sa.peer_key and src not in sa.source_keys:
                sa = self._by_source((sa,), src, source)
        try:
            # Every SA of the database is built from a SaSpec, which names its peer.
            return cast("tuple[IPv6Address, int, bytes]", sa._accept(esp, seq))
        except SecurityError as e:
            self.counters[e.reason] += 1
            raise

    def knows(self, esp: bytes) -> bool:
        """Whether ESP packet ``esp`` names an inbound SA: the SPI alone, no cryptography
        (the adapter checks known SAs before charging anything to the unauthenticated
        budget, :mod:`haha.security.admission`)."""
        return len(esp) >= 4 and int.from_bytes(esp[:4], "big") in self._in

    def _by_source(self, sas: tuple[InboundSA, ...], src: int, source: AddressLike) -> InboundSA:
        # Derived SPIs may collide between peers (docs/security.md): the source tells them apart.
        for sa in sas:
            if src == sa.peer_key or src in sa.source_keys:
                return sa
        sa = sas[0]
        self.counters[WRONG_SOURCE] += 1
        raise SecurityError(
            WRONG_SOURCE, f"packet from {source} on the SA of {sa.peer}", spi=sa.spi, peer=sa.peer
        )

    def has_peer(self, peer: AddressLike) -> bool:
        """Whether an outbound SA exists for ``peer``."""
        try:
            return _key(peer) in self._out
        except SecurityConfigError:
            return False

    # -- inspection ---------------------------------------------------------------------------

    def role_of(self, peer: AddressLike) -> Optional[str]:
        """``home-agent`` or ``mobile-node`` for a peer with an SA, else None."""
        try:
            return self._role(_key(peer), peer)
        except SecurityConfigError:
            return None

    def peers(self) -> frozenset[IPv6Address]:
        """The peers with an outbound SA."""
        return frozenset(sa.peer for sa in self._out.values() if sa.peer is not None)

    def describe(self) -> list[dict[str, Any]]:
        """A JSON-serialisable list of the SAs: peer, role, direction, SPI, sequence numbers
        (for the control interface). Never keys or salts."""
        rows: list[dict[str, Any]] = []
        for key, out in self._out.items():
            rows.append({"peer": str(out.peer), "role": out.role, "direction": "out",
                         "spi": f"0x{out.spi:08x}", "seq": out.seq, "remaining": out.remaining})
        for sa in self._in_peer.values():
            row = {"peer": str(sa.peer), "role": sa.role, "direction": "in",
                   "spi": f"0x{sa.spi:08x}", "top": sa.top, "received": sa.received,
                   "window": sa.window}
            if isinstance(sa, EpochInboundSA):
                row["epoch"] = None if sa.epoch is None else f"{sa.epoch:016x}"
            rows.append(row)
        for (local, peer), out in self._out_local.items():
            rows.append({"peer": str(out.peer), "role": out.role, "direction": "out",
                         "local": str(IPv6Address(local)), "spi": f"0x{out.spi:08x}",
                         "seq": out.seq, "remaining": out.remaining})
        for (local, _), sa in self._in_local.items():
            rows.append({"peer": str(sa.peer), "role": sa.role, "direction": "in",
                         "local": str(IPv6Address(local)), "spi": f"0x{sa.spi:08x}",
                         "top": sa.top, "received": sa.received, "window": sa.window})
        return rows

    def __repr__(self) -> str:
        return (f"<SecurityAssociationDatabase outbound={len(self._out)} "
                f"inbound={len(self._in_peer)}>")
