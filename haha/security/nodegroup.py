"""Node groups: one key for many mobile nodes (``docs/security.md``, "Node groups").

A home agent configured with ``[security] node-group-key`` (and optionally
``node-group-prefix``, the home prefix by default) holds no per-node secret: the secret of the
node at home address ``A`` is :func:`haha.security.keys.derive_node_secret` of the group key and
``A``, and its SA pair is derived from that as for a configured node. Nothing is derived at
start-up, so a group of 100,000 nodes costs one key in memory and one line of configuration.

:meth:`NodeGroup.admit` derives a node's pair when a packet first shows up from it, and keeps it
only once the packet has authenticated under it: a forged packet naming home addresses of the
prefix makes the home agent compute, never store (the derivation is keyed by the home address,
so its SPI cannot be guessed either). :meth:`NodeGroup.ensure` derives the pair for a node this
home agent must write to first (a HASR after a take-over).

Configured nodes (``[node-keys]``, ``node-key-dir``) are served the same way: the group holds
their secrets (``configured``, one bytes object each; they win over the group key) and derives
their pairs on first contact too, so a configured node costs its secret and no SA until it
speaks, and start-up reads the key files but derives nothing. A group without a group key
covers its configured nodes only.

By default (``keep_keys``, ``[security] keep-node-keys = yes``) a node's two SAs keep their
``key || salt`` once derived (20 octets each with AES-128, both directions in one object of
about 73 octets per node): a node whose cipher contexts were evicted builds them again from
those, with no derivation. With 100,000 nodes and a cache of 4,096 contexts nearly every packet rebuilds its
context, and deriving the pair again (a node secret, a PRK, two expands: eight HMACs) was about
a tenth of the home agent's CPU per Binding Update. Without ``keep_keys`` the SAs keep no key
material: the group is their :class:`~haha.security.esp.KeySource`, and derives a node's key
and salt again whenever its SA's cipher context was evicted and is rebuilt (the group key's
PRK is computed once: four HMACs give both directions, the second held for the other
context's rebuild, :meth:`NodeGroup.keys_of`), so a node's SA pair costs no key bytes at all.
Kept keys live in the SA objects only, so they go with the SA: a node removed or re-keyed
(its SAs removed, :meth:`NodeGroup.set_configured`) keeps nothing. A pair just derived builds
its two contexts from the keys at hand (it is used at once), not from a second derivation.
"""

from collections.abc import Callable, Iterator, Mapping
from ipaddress import IPv6Address, IPv6Network
from typing import Any, TypeVar

from ..wire.addresses import address_int
from .keys import GroupKdf, SecretKdf, derive_pair_keys
from .sadb import MOBILE_NODE, SaSpec, SecurityAssociationDatabase

T = TypeVar("T")


class _GroupKeys:
    """The :class:`~haha.security.esp.KeySource` of a group's SAs in one direction."""

    __slots__ = ("_group", "_outbound")

    def __init__(self, group: "NodeGroup", outbound: bool) -> None:
        self._group = group
        self._outbound = outbound

    def keys(self, sa: Any) -> bytes:
        g = self._group
        g.rederived += 1
        return g.keys_of(sa.peer, self._outbound)


class NodeGroup:
    """The home addresses inside ``prefix`` whose secrets derive from ``group_key`` (None: no
    group key), and the ``configured`` nodes with their own secrets; ``local`` is this home
    agent's address (its identity in the pairs). ``derived`` counts the pairs installed,
    ``rederived`` the keys derived again for an evicted cipher context (never with
    ``keep_keys``: the SAs then keep their own, module docstring).

    The group key's PRK is computed once (:class:`~haha.security.keys.GroupKdf`), and a node's
    pair is derived in one pass: one node secret, one PRK, both directions. An evicted node's
    two contexts are usually rebuilt together (its Binding Update opened, its
    acknowledgement sealed), so rebuilding one direction keeps the other direction's
    ``key || salt`` for the next rebuild of the same node (:meth:`keys_of`): the only key
    material the group holds besides its keys, one SA's, dropped when used, replaced by the next
    node's, and forgotten when the configured secrets change."""

    def __init__(self, group_key: bytes | None, prefix: IPv6Network, local: IPv6Address,
                 key_bits: int = 128,
                 configured: Mapping[IPv6Address, bytes] | None = None,
                 keep_keys: bool = True) -> None:
        self.keep_keys = keep_keys
        self._kdf = None if group_key is None else GroupKdf(group_key)
        self._key = self._kdf is not None
        # home address (as an integer: cheaper to keep and to hash) -> secret
        self._configured: dict[int, bytes] = {}
        # (home address as an integer, outbound?, key || salt): the other half of the pair
        # derived last (class docstring)
        self._held: tuple[int, bool, bytes] | None = None
        if configured:
            self.set_configured(configured)
        self.prefix = prefix
        self._net = address_int(prefix.network_address)
        self._mask = address_int(prefix.netmask)
        self.local = local
        self._local_int = address_int(local)
        self._local = local.packed
        self.key_bits = key_bits
        self._klen = key_bits // 8
        self.derived = 0
        self.rederived = 0
        self._sources = {"out": _GroupKeys(self, True), "in": _GroupKeys(self, False)}

    def _specs(self, home_address: IPv6Address, keys: tuple[int, bytes, int, bytes]
               ) -> tuple[SaSpec, SaSpec]:
        out_spi, out_keys, in_spi, in_keys = keys
        k = self._klen
        return (SaSpec(home_address, "out", out_spi, out_keys[:k], out_keys[k:],
                       role=MOBILE_NODE),
                SaSpec(home_address, "in", in_spi, in_keys[:k], in_keys[k:], role=MOBILE_NODE))

    def _install(self, sadb: SecurityAssociationDatabase, home_address: IPv6Address,
                 keys: tuple[int, bytes, int, bytes], inbound: bool = True) -> None:
        # The contexts are built now from the keys just derived, not derived again at their
        # first use: both on a node's first packet (the packet opened, the answer sealed);
        # only the outbound one when the pair is installed to send (a switch request to a
        # node first seen here: the inbound context is built from the kept keys if the node
        # answers, and no cached context is evicted for it meanwhile). Without kept keys both
        # are built now, as building one later would derive the pair again.
        out_spi, out_keys, in_spi, in_keys = keys
        sources = (None, None) if self.keep_keys \
            else (self._sources["out"], self._sources["in"])
        sadb.add_derived_pair(home_address, MOBILE_NODE, out_spi, out_keys, in_spi, in_keys,
                              sources, prime=True, prime_inbound=inbound or not self.keep_keys)

    def __repr__(self) -> str:  # never the key
        return (f"<NodeGroup {self.prefix} configured={len(self._configured)} "
                f"derived={self.derived}>")

    def covers(self, home_address: Any) -> bool:
        """Whether the group has the secret of ``home_address`` (any object: only a
        configured node's address, or an IPv6 address in the prefix other than this home
        agent's when there is a group key, is covered)."""
        if type(home_address) is not IPv6Address:
            if not isinstance(home_address, IPv6Address):
                return False
            return self.covers(IPv6Address(int(home_address)))  # a subclass: by its value
        a = address_int(home_address)
        if self._configured and a in self._configured:
            return True
        # Integers: IPv6Network.__contains__ and IPv6Address.__eq__ are Python calls, and
        # every first packet of a node passes here.
        return self._key and a & self._mask == self._net and a != self._local_int

    def secret(self, home_address: IPv6Address) -> bytes:
        """The derivation secret of the node at ``home_address`` (it must be covered): its
        configured one, else derived from the group key."""
        secret = self._configured.get(address_int(home_address)) if self._configured else None
        if secret is not None:
            return secret
        if self._kdf is None:
            raise KeyError(home_address)
        return self._kdf.node_secret(home_address.packed)

    def pair_keys(self, home_address: IPv6Address) -> tuple[int, bytes, int, bytes]:
        """``(outbound SPI, key || salt, inbound SPI, key || salt)`` of the node at
        ``home_address`` (it must be covered), both directions in one pass."""
        if self._configured and address_int(home_address) in self._configured:
            return derive_pair_keys(SecretKdf(self.secret(home_address)), self._local,
                                    home_address.packed, self._klen)
        if self._kdf is None:
            raise KeyError(home_address)
        # From the group key in one pass (GroupKdf.pair_keys: the same octets).
        return self._kdf.pair_keys(self._local, home_address.packed, self._klen)

    def pair(self, home_address: IPv6Address) -> tuple[SaSpec, SaSpec]:
        """The two SaSpecs (outbound, inbound) of the node at ``home_address``."""
        return self._specs(home_address, self.pair_keys(home_address))

    def keys_of(self, home_address: IPv6Address, outbound: bool) -> bytes:
        """``key || salt`` of the node's SA in one direction, for a context being rebuilt:
        the other direction's is held for the next call (class docstring)."""
        at = address_int(home_address)
        held = self._held
        if held is not None and held[0] == at and held[1] == outbound:
            self._held = None
            return held[2]
        _, out_keys, _, in_keys = self.pair_keys(home_address)
        if outbound:
            self._held = (at, False, in_keys)
            return out_keys
        self._held = (at, True, out_keys)
        return in_keys

    def configured(self) -> dict[IPv6Address, bytes]:
        """``{home address: secret}`` of the configured nodes."""
        return {IPv6Address(a): s for a, s in self._configured.items()}

    def set_configured(self, nodes: Mapping[IPv6Address, bytes]) -> None:
        """Replace the configured nodes (SIGHUP, :mod:`haha.reload`). The SAs of a node
        removed or re-keyed are the caller's to remove."""
        self._configured = {address_int(a): bytes(s) for a, s in nodes.items()}
        self._held = None  # a re-keyed node's keys must not outlive its secret

    def ensure(self, sadb: SecurityAssociationDatabase, home_address: IPv6Address) -> bool:
        """Derive and install the pair of ``home_address`` unless ``sadb`` has one (or the
        address is outside the group). True when an SA exists afterwards."""
        if sadb.has_peer(home_address):
            return True
        if not self.covers(home_address):
            return False
        self._install(sadb, home_address, self.pair_keys(home_address), inbound=False)
        self.derived += 1
        return True

    def admit(self, sadb: SecurityAssociationDatabase, source: IPv6Address, spi: int,
              unprotect: Callable[[], T]) -> T | None:
        """An ESP packet with ``spi`` from ``source`` (its home address when it carried a Home
        Address option) for which ``sadb`` has no pair: when ``source`` is in the group and the
        derived inbound SPI is ``spi``, install the pair and return ``unprotect()``'s result,
        removing the pair again if it raises (the packet did not authenticate). Returns None
        when the group does not explain the packet."""
        if sadb.has_peer(source) or not self.covers(source):
            return None
        keys = self.pair_keys(source)
        if keys[2] != spi:
            return None
        self._install(sadb, source, keys)
        try:
            result = unprotect()
        except Exception:
            sadb.remove_peer(source)
            raise
        self.derived += 1
        return result


class NodeSecrets(Mapping[IPv6Address, bytes]):
    """``{home address: secret}`` of the nodes a home agent serves: the configured ones
    (``explicit``) and, looked up by address, every node the ``group`` covers (derived on
    demand). Iterating gives the configured ones only: a group has no list of members."""

    def __init__(self, explicit: Mapping[IPv6Address, bytes], group: NodeGroup | None = None
                 ) -> None:
        self._explicit = dict(explicit)
        self._group = group

    def __getitem__(self, home_address: IPv6Address) -> bytes:
        secret = self._explicit.get(home_address)
        if secret is not None:
            return secret
        if self._group is not None and self._group.covers(home_address):
            return self._group.secret(home_address)
        raise KeyError(home_address)

    def __contains__(self, home_address: object) -> bool:
        return home_address in self._explicit or (
            self._group is not None and self._group.covers(home_address))

    def __iter__(self) -> Iterator[IPv6Address]:
        return iter(self._explicit)

    def __len__(self) -> int:
        return len(self._explicit)

    def __repr__(self) -> str:  # never a secret
        return f"<NodeSecrets {len(self._explicit)} configured, group={self._group!r}>"
