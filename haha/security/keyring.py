"""The daemon's keys, from a checked configuration to a filled SA database.

What ``[security]``, ``[peer-keys]`` and ``[node-keys]`` name becomes, at start-up:

- :func:`home_agent_sadb`: one derived SA pair per peer key (stamped with this run's boot
  epoch), over the ESP sequence file (docs/security.md);
- :func:`node_secrets`: the mobile node secrets of ``[node-keys]`` and ``node-key-dir``;
- :func:`node_group`: the node group of ``node-group-key`` and those configured secrets, which
  derives a mobile node's SA pair when the node first shows up (configured or not);
- :func:`mobile_node_security`: a mobile node's SA database and its :class:`NodeKeyring`, which
  derives the pair with any home agent on first use;
- :func:`security_policy` and :func:`rate_limiter`: the policy and the admission budgets.

Every failure (a key file that cannot be read, a sequence file that cannot be written) is a
:class:`haha.inifile.ConfigError` naming the file, section and key it came from. The wall clock
is passed in (``wall``): it orders runs across restarts (boot epoch, sequence floor) and tests
move it by hand.
"""

from __future__ import annotations

import os
import socket
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any, Callable, Union

from ..durability import boot_epoch_for, watch_store
from ..inifile import ConfigError
from ..statedir import ensure_directory
from . import keys as _keys
from .admission import Admission, AdmissionSettings
from .errors import KeyFileError, SecurityConfigError
from .policy import SecurityPolicy
from .sadb import HOME_AGENT, SecurityAssociationDatabase
from .seqstore import SequenceStore, time_floor

if TYPE_CHECKING:
    from ..config import HomeAgentConfig, KeyFile, MobileNodeConfig
    from .nodegroup import NodeGroup

__all__ = [
    "KERNEL_ESP_MODES", "NodeKeyring", "home_agent_sadb", "kernel_esp", "load_located", "mobile_node_security", "node_group",
    "node_key_files", "node_secrets", "rate_limiter", "security_policy", "sequence_store",
]

#: The key length of a node's pairs (AES-128, as :func:`haha.security.keys.derive_pair`'s
#: default).
_KLEN = 16

#: Reads the wall clock (seconds since the epoch).
WallClock = Callable[[], float]
AnyConfig = Union["HomeAgentConfig", "MobileNodeConfig"]


def load_located(key_file: KeyFile, what: str) -> bytes:
    """The secret in ``key_file``; its error becomes a configuration error at its key."""
    try:
        secret: bytes = _keys.load_secret(key_file.path)
    except (KeyFileError, SecurityConfigError, OSError) as e:
        raise key_file.error(f"{what}: {e}") from None
    return secret


#: Security modes where the kernel does ESP (haha.security.kernelmode).
KERNEL_ESP_MODES = ("kernel-xfrm", "external")


def security_policy(config: AnyConfig) -> SecurityPolicy:
    """The security policy of ``[security] mode`` (lab mode is refused without ``lab``)."""
    mode = config.security.mode
    if mode in KERNEL_ESP_MODES:
        mode = "esp"  # the same rules; the kernel applies ESP (haha.security.kerneldaemon)
    try:
        return SecurityPolicy(config.numbers, mode, config.security.lab)
    except SecurityConfigError as e:
        raise ConfigError(str(e), config.path, "security", "mode") from None


def rate_limiter(config: AnyConfig) -> Admission:
    """The admission budgets of :mod:`haha.security.admission` from ``[security]``."""
    sec = config.security
    settings = sec.admission
    if settings is None:
        settings = AdmissionSettings(source_rate=sec.rate, source_burst=sec.burst)
    return Admission(settings)


def sequence_store(config: AnyConfig, wall: WallClock) -> SequenceStore:
    """ESP sequence numbers survive restarts (docs/security.md): without them a restarted
    daemon's peers would drop everything it sends as too old. The file's directory is made
    when missing."""
    path = config.security.sequence_file
    assert path is not None, "lab mode has no sequence file"
    directory = os.path.dirname(path) or "."
    try:
        ensure_directory(directory)
    except OSError as e:
        raise ConfigError(f"cannot create the state directory {directory} for the ESP sequence "
                          f"file: {e.strerror}", config.path, "security", "sequence-file") from None
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"cannot write the ESP sequence file {path}: directory {directory} "
                          "is missing or not writable", config.path, "security",
                          "sequence-file")
    try:
        store: SequenceStore = watch_store(SequenceStore(path, floor=lambda: time_floor(wall())))
    except SecurityConfigError as e:
        raise ConfigError(str(e), config.path, "security", "sequence-file") from None
    return store


def home_agent_sadb(config: HomeAgentConfig,
                    wall: WallClock) -> SecurityAssociationDatabase | None:
    """The SA database of a home agent: one derived pair per peer key (docs/security.md), or
    None in lab mode; mobile nodes' pairs are derived on first contact by :func:`node_group`'s
    group, configured nodes' too (their keys cost nothing more than their secrets until then). ``db.epoch`` is this run's boot epoch: peers
    follow it, so a run that lost its sequence file rejoins at once (haha.security.epoch), and
    SIGHUP re-keys peers with it (haha.reload). None as well when the kernel does ESP
    (:func:`kernel_esp`)."""
    if config.security.mode in ("none",) + KERNEL_ESP_MODES:
        return None
    specs: list[_keys.SaSpec] = []
    store = sequence_store(config, wall)
    epoch = boot_epoch_for(store, wall())
    for peer, key_file in config.security.peer_keys.items():
        secret = load_located(key_file, "peer key")
        specs.extend(_keys.derive_pair(secret, config.haha_address, peer, HOME_AGENT,
                                       epoch=epoch))
    try:
        db = SecurityAssociationDatabase.from_specs(specs, sequence_store=store,
                                                    cipher_cache=config.security.cipher_cache)
    except SecurityConfigError as e:
        raise ConfigError(str(e), config.path, "security", "sequence-file") from None
    db.epoch = epoch
    return db


def kernel_esp(config: HomeAgentConfig, transport: Any, reactor: Any,
               wall: WallClock) -> tuple[Any, Any]:
    """``(sadb, transport)`` when the kernel does ESP (``[security] mode = kernel-xfrm`` or
    ``external``, docs/security.md "Kernel ESP")."""
    from .kerneldaemon import kernel_esp_for

    peers: dict[IPv6Address, bytes] = {}
    nodes: dict[IPv6Address, bytes] = {}
    if config.security.mode == "kernel-xfrm":
        peers = {p: load_located(kf, "peer key") for p, kf in config.security.peer_keys.items()}
        nodes = node_secrets(config)
    return kernel_esp_for(config, transport, reactor, peers, nodes, wall())


def node_key_files(config: HomeAgentConfig) -> dict[IPv6Address, KeyFile]:
    """``{home address: KeyFile}`` of ``[node-keys]`` and ``node-key-dir`` (files named
    ``HOME-ADDRESS.key``; ``[node-keys]`` wins for a node in both)."""
    from ..config import KeyFile

    nodes = dict(config.security.node_keys)
    directory = config.security.node_key_dir
    if directory:
        where = (config.path, "security", "node-key-dir", None)
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".key"):
                continue
            try:
                # inet_pton then the integer: several times faster than parsing the text with
                # IPv6Address (100,000 files at start-up); it also refuses a zone ("%eth0"),
                # which no home address has.
                hoa = IPv6Address(int.from_bytes(socket.inet_pton(socket.AF_INET6, name[:-4]),
                                                 "big"))
            except (OSError, ValueError):
                raise ConfigError(
                    f"{name}: files in node-key-dir are named HOME-ADDRESS.key",
                    config.path, "security", "node-key-dir") from None
            if hoa not in nodes:
                nodes[hoa] = KeyFile(os.path.join(directory, name), where)
    return nodes


def node_secrets(config: HomeAgentConfig) -> dict[IPv6Address, bytes]:
    """``{home address: secret}`` of the mobile nodes a home agent serves with ESP
    (:func:`node_key_files`)."""
    return {hoa: load_located(key_file, "mobile node key")
            for hoa, key_file in node_key_files(config).items()}


def node_group(config: HomeAgentConfig) -> NodeGroup | None:
    """The home agent's mobile nodes: the group of ``[security] node-group-key`` and the
    configured secrets (:func:`node_secrets`, read now: a file that cannot be read stops the
    start), whose SA pairs are derived on first contact; None when there are neither, and in
    lab mode and the kernel's ESP modes (there the kernel holds every SA from the start)."""
    sec = config.security
    if sec.mode in ("none",) + KERNEL_ESP_MODES:
        return None
    configured = node_secrets(config)
    if sec.node_group_key is None and not configured:
        return None
    from .nodegroup import NodeGroup

    group_key = None
    if sec.node_group_key is not None:
        group_key = load_located(sec.node_group_key, "node group key")
    return NodeGroup(group_key, sec.node_group_prefix or config.home_prefix, config.address,
                     configured=configured, keep_keys=sec.keep_node_keys)


class NodeKeyring:
    """A mobile node's keys: its one secret (shared by the home agent set) derives the SA pair
    with any home agent on first use, so the node can talk to (and authenticate) a home agent it
    learned from DHAAD or that took it over, without configuring SPIs."""

    def __init__(self, secret: bytes, home_address: IPv6Address,
                 sadb: SecurityAssociationDatabase) -> None:
        self._secret = secret
        self.home_address = home_address
        self.sadb = sadb
        self.derived: set[IPv6Address] = set()

    def ensure(self, home_agent: IPv6Address, prime: bool = False) -> None:
        """Derive the pair with ``home_agent`` unless the database has one. Its cipher
        contexts are built at their first use, or now, from the keys at hand, with ``prime``
        (a load generator's nodes, before the burst it measures)."""
        if home_agent in self.derived or self.sadb.has_peer(home_agent):
            return
        self._install(home_agent, _keys.SecretKdf(self._secret), None, prime)

    def learn(self, source: IPv6Address, esp: bytes) -> None:
        """A protected packet from ``source``: derive its pair if that explains the SPI.
        One PRK serves both the SPI test and the pair, and the inbound keys computed for the
        test are the ones installed (the node is taken over: it opens this packet and
        answers at once, so both contexts are built from the keys at hand)."""
        if source in self.derived or len(esp) < 4 or self.sadb.has_peer(source):
            return
        spi = int.from_bytes(esp[:4], "big")
        if type(source) is not IPv6Address:  # a subclass or text: the general path
            if _keys.derive_sa(self._secret, source, self.home_address).spi == spi:
                self.ensure(source)
            return
        kdf = _keys.SecretKdf(self._secret)
        if source.packed == self.home_address.packed:
            return  # no pair with itself (derive_sa refuses it): nothing explains the SPI
        inbound = kdf.okm(_KLEN, source.packed, self.home_address.packed)
        if _keys.spi_of(inbound, _KLEN) == spi:
            self._install(source, kdf, inbound, True)

    def _install(self, home_agent: IPv6Address, kdf: _keys.SecretKdf,
                 inbound: bytes | None, prime: bool) -> None:
        """The pair with ``home_agent`` from ``kdf`` (the node's secret), added to the
        database as :meth:`SecurityAssociationDatabase.add` adds the two SaSpecs of
        :func:`haha.security.keys.derive_pair` (same SPIs, keys, checks and sequence numbers),
        without building them; ``inbound``: that direction's OKM when already derived;
        ``prime``: both cipher contexts built now."""
        if type(home_agent) is not IPv6Address:
            for spec in _keys.derive_pair(self._secret, self.home_address, home_agent,
                                          HOME_AGENT):
                self.sadb.add(spec)
            self.derived.add(home_agent)
            return
        local, peer = self.home_address.packed, home_agent.packed
        if local == peer:
            raise SecurityConfigError(f"sender and receiver are both {home_agent}")
        out = kdf.okm(_KLEN, local, peer)
        if inbound is None:
            inbound = kdf.okm(_KLEN, peer, local)
        end = _KLEN + 4
        self.sadb.add_derived_pair(home_agent, HOME_AGENT, _keys.spi_of(out, _KLEN), out[:end],
                                   _keys.spi_of(inbound, _KLEN), inbound[:end], prime=prime)
        self.derived.add(home_agent)

    def __repr__(self) -> str:
        return f"<NodeKeyring {self.home_address} derived={sorted(map(str, self.derived))}>"


def mobile_node_security(
        config: MobileNodeConfig,
        wall: WallClock) -> tuple[SecurityAssociationDatabase | None, NodeKeyring | None]:
    """``(sadb, keyring)`` of a mobile node, ``(None, None)`` in lab mode; the keyring has
    derived the pair with every configured home agent."""
    if config.security.mode == "none":
        return None, None
    assert config.security.key is not None, "haha.config requires key with mode = esp"
    secret = load_located(config.security.key, "mobile node key")
    sadb = SecurityAssociationDatabase(sequence_store=sequence_store(config, wall),
                                       cipher_cache=config.security.cipher_cache)
    keyring = NodeKeyring(secret, config.home_address, sadb)
    for ha in config.home_agents:
        keyring.ensure(ha)
    return sadb, keyring
