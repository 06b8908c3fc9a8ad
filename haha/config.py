"""Configuration: one INI format for home agents and mobile nodes -> frozen dataclasses.

``load_home_agent(path)`` and ``load_mobile_node(path)`` read a file, check every key and every
cross-key rule, and return a :class:`HomeAgentConfig` or :class:`MobileNodeConfig`. Every mistake
is a :class:`ConfigError` naming the file, section, key and line. Every key is documented in
``docs/configuration.md`` (a test keeps the two in step).

The core's values are validated once, by the core's own settings records
(:class:`haha.core.settings.HomeAgentSettings`, :class:`~haha.core.settings.MobileNodeSettings`):
this module reads their keys with their types only, builds the record (``config.settings``, what
the machines run on) and turns a :class:`~haha.core.settings.SettingsError` into a located
:class:`ConfigError` through :data:`HOME_AGENT_KEYS` / :data:`MOBILE_NODE_KEYS`. What only the
service uses (transport, security, control, plugins) is validated here.

Plugin choices (``backend``, ``discovery``) are resolved by name later, in :mod:`haha.plugins`;
their own sections (``[backend:NAME]``, ``[discovery:NAME]``) travel as located
:class:`haha.inifile.Section` objects so the plugin's errors are located too.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar, overload

from .inifile import (
    ConfigError,
    Section,
    parse_address,
    parse_ini,
    parse_prefix,
    read_ini,
    split_list,
)
from .core.settings import (
    DRAIN_SPREAD,
    HOME_LINK,
    KINDS,
    NO_HOME_LINK,
    SWITCH_HASR,
    TAKE_OVER_FIRST,
    HomeAgentSettings,
    MobileNodeSettings,
    SettingsError,
)
from .alloctrim import MAX_INTERVAL, MAX_PAD, MAX_THRESHOLD, MIN_INTERVAL
from .security.admission import AdmissionSettings
from .wire.errors import ProfileError
from .wire.numbers import NumberProfile

__all__ = [
    "ConfigError",
    "HomeAgentConfig",
    "MobileNodeConfig",
    "load_home_agent",
    "load_mobile_node",
    "parse_home_agent",
    "parse_mobile_node",
]

#: Home agent configurations of draft section 3.
CONFIGURATIONS = KINDS
TRANSPORTS = ("raw", "udp")
SECURITY_MODES = ("esp", "kernel-xfrm", "external", "none")
LOG_LEVELS = ("debug", "info", "warn", "error")


class _Located:
    """Something read from the configuration that can still report a located error later
    (when a plugin is resolved or a key file loaded)."""

    location: Location

    def error(self, message: str) -> ConfigError:
        path, section, key, line = self.location
        return ConfigError(message, path, section, key, line)


#: Where a value was read: (file, section, key, line).
Location = tuple[Optional[str], Optional[str], Optional[str], Optional[int]]
_NOWHERE: Location = (None, None, None, None)


@dataclass(frozen=True)
class PluginChoice(_Located):
    """A plugin selected by name, with its own configuration section."""

    name: str
    options: Section = field(compare=False, repr=False)
    location: Location = field(compare=False, repr=False, default=_NOWHERE)


@dataclass(frozen=True)
class KeyFile(_Located):
    """A secret in a file that only its owner may read (checked at load)."""

    path: str
    location: Location = field(compare=False, repr=False, default=_NOWHERE)


@dataclass(frozen=True)
class SecurityConfig:
    mode: str = "esp"
    lab: bool = False
    peer_keys: dict[IPv6Address, KeyFile] = field(default_factory=dict)  # peer HA address
    node_keys: dict[IPv6Address, KeyFile] = field(default_factory=dict)  # home address
    node_key_dir: str | None = None
    key: KeyFile | None = None  # mobile node: its own secret, shared by the home agents
    sequence_file: str | None = None  # ESP sequence numbers kept across restarts
    rate: float = 50.0
    burst: int = 100
    #: haha.security.admission.AdmissionSettings (None: its defaults with rate and burst)
    admission: AdmissionSettings | None = None
    node_group_key: KeyFile | None = None  # home agent: derives the secrets of a node group
    #: the group's home addresses (None: the home prefix)
    node_group_prefix: IPv6Network | None = None
    #: kernel-xfrm: what this run installed in the kernel (haha.security.kernelmode)
    xfrm_state_file: str | None = None
    #: external: seconds between checks of the IKE daemon's SAs and policies
    external_check_interval: float = 60.0
    #: SAs that keep their AES-GCM context between packets (haha.security.esp.CipherCache)
    cipher_cache: int = 4096
    #: node-group SAs keep their derived key || salt (haha.security.nodegroup)
    keep_node_keys: bool = True


@dataclass(frozen=True)
class TransportConfig:
    kind: str = "raw"
    interfaces: tuple[str, ...] = ()
    udp_listen: tuple[str, int] | None = None  # (host, port)
    #: IPv6Address/IPv6Network -> (host, port)
    udp_peers: dict[IPv6Address | IPv6Network, tuple[str, int]] = field(default_factory=dict)
    receive_buffer: int = 32 << 20  # octets; 0 = the kernel's default
    send_buffer: int = 0
    udp_learned: int = 262144  # most sources the UDP transport remembers
    #: The input queue (haha.io.rxqueue): packets read and not yet processed, in all and from
    #: one source; whether a node's retransmission replaces its waiting copy.
    max_backlog: int = 131072
    max_per_source: int = 1024
    supersede: bool = True


@dataclass(frozen=True)
class MemoryConfig:
    """``[memory]``: giving freed memory back to the system (haha.alloctrim)."""

    trim: bool = True
    trim_interval: float = 10.0  # seconds, at least, between two trims
    trim_pad: int = 0  # octets kept at the top of the heap
    #: octets of growth of the allocator's freed memory that trim without a burst (0: never)
    trim_threshold: int = 2 << 20


@dataclass(frozen=True)
class ControlConfig:
    socket: str | None = None  # Twisted server endpoint string
    metrics: str | None = None  # Twisted server endpoint string


T = TypeVar("T")


class _Core(Generic[T]):
    """A value of the core's settings, read under the configuration's name (a read-only view
    of ``self.settings``; not a field, so it is never stored twice)."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = doc

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _Core[T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...

    def __get__(self, obj: object, owner: type | None = None) -> T | _Core[T]:
        if obj is None:
            return self
        value: T = getattr(getattr(obj, "settings"), self.name)
        return value


@dataclass(frozen=True)
class HomeAgentConfig:
    """A checked home agent configuration. ``settings`` is the core's own record
    (:class:`haha.core.settings.HomeAgentSettings`, validated there once, its errors located
    here); the rest is what the service wires around the core. The core's values can also be
    read under the configuration's key names (``config.lifetime`` is ``settings.ha_lifetime``)."""

    path: str
    settings: HomeAgentSettings
    home_interface: str | None
    drain_on_stop: bool
    drain_timeout: float
    implicit_mode: bool
    router_advertisements: bool
    router_lifetime: int
    discovery: PluginChoice
    backend: PluginChoice
    security: SecurityConfig
    transport: TransportConfig
    control: ControlConfig
    log_level: str
    memory: MemoryConfig = MemoryConfig()

    address = _Core[IPv6Address]("address", "[home-agent] address")
    #: The signalling address: ``haha-address``, else ``address``.
    haha_address = _Core[IPv6Address](
        "signalling_address", "[home-agent] haha-address, else address")
    home_prefix = _Core[IPv6Network]("home_prefix", "[home-agent] home-prefix")
    configuration = _Core[str]("kind", "[home-agent] configuration")
    preference = _Core[int]("preference", "[home-agent] preference")
    lifetime = _Core[int]("ha_lifetime", "[home-agent] lifetime")
    hello_interval = _Core[float]("hello_interval", "[home-agent] hello-interval")
    hello_misses = _Core[int]("hello_misses", "[home-agent] hello-misses")
    max_binding_lifetime = _Core[int]("max_binding_lifetime", "[home-agent] max-binding-lifetime")
    boot_wait = _Core[float]("boot_wait", "[home-agent] boot-wait")
    take_over = _Core[bool]("take_over", "[home-agent] take-over")
    take_over_share = _Core[str]("take_over_share", "[home-agent] take-over-share")
    sync_mtu = _Core[int]("sync_mtu", "[home-agent] sync-mtu")
    sync_window = _Core[int]("biu_window", "[home-agent] sync-window")
    address_takeover = _Core[bool]("address_takeover", "[home-agent] address-takeover")
    drain_mode = _Core[str]("drain", "[home-agent] drain-mode")
    switch_message = _Core[str]("switch_message", "[home-agent] switch-message")
    switch_rate = _Core[float]("switch_rate", "[home-agent] switch-rate")
    switch_retransmit_cap = _Core[float]("switch_retransmit_cap",
                                         "[home-agent] switch-retransmit-cap")
    mobile_router_support = _Core[bool]("nemo", "[home-agent] mobile-router-support")
    mobile_network_prefixes = _Core[tuple[IPv6Network, ...]](
        "hello_prefixes", "[home-agent] mobile-network-prefixes")
    mobile_routers = _Core[Mapping[IPv6Address, tuple[IPv6Network, ...]]](
        "mobile_routers", "[mobile-routers]")
    peers = _Core[tuple[IPv6Address, ...]]("peers", "[peers] static")
    authorised = _Core[tuple[IPv6Network, ...]]("authorised_peer_prefixes", "[peers] authorised")
    max_candidates = _Core[int]("max_candidates", "[peers] max-candidates")
    numbers = _Core[NumberProfile]("numbers", "[numbers]")


@dataclass(frozen=True)
class MobileNodeConfig:
    """A checked mobile node configuration: ``settings`` is the core's
    :class:`haha.core.settings.MobileNodeSettings` (same names as the keys of
    ``[mobile-node]``), the rest is what the service wires around it."""

    path: str
    settings: MobileNodeSettings
    home_agent: IPv6Address | None
    care_of_address: IPv6Address
    interface: str | None
    backend: PluginChoice
    security: SecurityConfig
    transport: TransportConfig
    control: ControlConfig
    log_level: str

    home_address = _Core[IPv6Address]("home_address", "[mobile-node] home-address")
    home_prefix = _Core[IPv6Network]("home_prefix", "[mobile-node] home-prefix")
    #: ``home-agent`` first, then ``home-agents``.
    home_agents = _Core[tuple[IPv6Address, ...]](
        "home_agents", "[mobile-node] home-agent and home-agents")
    lifetime = _Core[int]("lifetime", "[mobile-node] lifetime")
    mobile_router = _Core[bool]("mobile_router", "[mobile-node] mobile-router")
    prefixes = _Core[tuple[IPv6Network, ...]]("prefixes", "[mobile-node] prefixes")
    obeys_switch = _Core[bool]("obeys_switch", "[mobile-node] obey-switch")
    numbers = _Core[NumberProfile]("numbers", "[numbers]")


#: Where each field of the core's settings is read from: ``(section, key)``; None as the key
#: for a map section whose keys are the entries (``[mobile-routers]``).
HOME_AGENT_KEYS: dict[str, tuple[str, str | None]] = {
    "address": ("home-agent", "address"),
    "home_prefix": ("home-agent", "home-prefix"),
    "kind": ("home-agent", "configuration"),
    "haha_address": ("home-agent", "haha-address"),
    "preference": ("home-agent", "preference"),
    "ha_lifetime": ("home-agent", "lifetime"),
    "hello_interval": ("home-agent", "hello-interval"),
    "hello_misses": ("home-agent", "hello-misses"),
    "max_binding_lifetime": ("home-agent", "max-binding-lifetime"),
    "boot_wait": ("home-agent", "boot-wait"),
    "take_over": ("home-agent", "take-over"),
    "take_over_share": ("home-agent", "take-over-share"),
    "sync_mtu": ("home-agent", "sync-mtu"),
    "biu_window": ("home-agent", "sync-window"),
    "address_takeover": ("home-agent", "address-takeover"),
    "drain": ("home-agent", "drain-mode"),
    "switch_message": ("home-agent", "switch-message"),
    "switch_rate": ("home-agent", "switch-rate"),
    "switch_retransmit_cap": ("home-agent", "switch-retransmit-cap"),
    "nemo": ("home-agent", "mobile-router-support"),
    "hello_prefixes": ("home-agent", "mobile-network-prefixes"),
    "mobile_routers": ("mobile-routers", None),
    "implicit_prefixes": ("mobile-routers", None),
    "peers": ("peers", "static"),
    "authorised_peer_prefixes": ("peers", "authorised"),
    "max_candidates": ("peers", "max-candidates"),
    "numbers": ("numbers", None),
}
MOBILE_NODE_KEYS: dict[str, tuple[str, str | None]] = {
    "home_address": ("mobile-node", "home-address"),
    "home_prefix": ("mobile-node", "home-prefix"),
    "home_agents": ("mobile-node", "home-agents"),
    "mobile_router": ("mobile-node", "mobile-router"),
    "prefixes": ("mobile-node", "prefixes"),
    "lifetime": ("mobile-node", "lifetime"),
    "obeys_switch": ("mobile-node", "obey-switch"),
    "retransmit_same_sequence": ("mobile-node", "retransmit-same-sequence"),
    "retransmit_jitter": ("mobile-node", "retransmit-jitter"),
    "refresh_jitter": ("mobile-node", "refresh-jitter"),
    "numbers": ("numbers", None),
}

SettingsT = TypeVar("SettingsT", HomeAgentSettings, MobileNodeSettings)


def _settings(cls: type[SettingsT], keys: dict[str, tuple[str, str | None]],
              parsed: dict[str, Section], path: str, values: dict[str, Any]) -> SettingsT:
    """``cls(**values)``, the core's settings, validated by the core; a refusal becomes a
    :class:`ConfigError` at the key the field was read from (field names in its text become
    key names)."""
    try:
        return cls(**values)
    except SettingsError as e:
        name, _, entry = e.field.partition("[")
        section, key = keys.get(name, (None, None))
        if entry:  # one entry of a map section: the entry's own key
            key = entry.rstrip("]")
        detail = e.detail
        for field_name in sorted(keys, key=len, reverse=True):
            k = keys[field_name][1]
            if k is not None:
                detail = re.sub(rf"\b{field_name}\b", k, detail)
        sec = parsed.get(section) if section is not None else None
        if sec is None:
            raise ConfigError(detail, path, section, key) from None
        raise sec.error(key, detail) from None


#: The sections each kind of file may have (plugin sections ``backend:*``/``discovery:*`` aside).
HA_SECTIONS = (
    "home-agent", "peers", "mobile-routers", "numbers", "security", "peer-keys", "node-keys",
    "transport", "udp-peers", "control", "log", "memory",
)
MN_SECTIONS = ("mobile-node", "numbers", "security", "transport", "udp-peers", "control", "log")


def _sections(parsed: dict[str, Section], path: str, allowed: tuple[str, ...],
              plugin_kinds: tuple[str, ...]) -> Callable[[str], Section]:
    for name, sec in parsed.items():
        kind = name.split(":", 1)[0]
        if name in allowed or (":" in name and kind in plugin_kinds):
            continue
        close = difflib.get_close_matches(name, list(allowed), n=1)
        hint = f"; did you mean [{close[0]}]?" if close else ""
        raise ConfigError(f"unknown section{hint}", path, name, None, sec.line)

    def get(name: str) -> Section:
        return parsed.get(name) or Section.empty(name, path)

    return get


def _plugin(parsed: dict[str, Section], main: Section, key: str, kind: str, default: str,
            path: str) -> PluginChoice:
    name = main.get_str(key, default)
    v = main._values.get(key)
    loc = (path, main.name, key, v.line if v else main.line)
    own = parsed.get(f"{kind}:{name}") or Section.empty(f"{kind}:{name}", path)
    for other in parsed:
        if other.startswith(kind + ":") and other != f"{kind}:{name}":
            raise ConfigError(
                f"section for {kind} {other.split(':', 1)[1]!r}, but {key} = {name}",
                path, other, None, parsed[other].line,
            )
    return PluginChoice(name, own, loc)


def _check_key_file(sec: Section, key: str, text: str) -> KeyFile:
    v = sec._values.get(key)
    loc = (sec.path, sec.name, key, v.line if v else sec.line)
    p = os.path.join(os.path.dirname(os.path.abspath(sec.path)), os.path.expanduser(text))
    kf = KeyFile(p, loc)
    try:
        st = os.stat(p)
    except OSError as e:
        fix = f" (make one: python -m haha.security.keys generate {p})" \
            if e.errno == errno.ENOENT else ""
        raise kf.error(f"cannot read key file {p}: {e.strerror}{fix}") from None
    if not stat.S_ISREG(st.st_mode):
        raise kf.error(f"key file {p} is not a regular file")
    if st.st_mode & 0o077:
        raise kf.error(
            f"key file {p} has mode {stat.S_IMODE(st.st_mode):04o}: it must not be readable or "
            f"writable by group or others (chmod 600 {p})"
        )
    if not os.access(p, os.R_OK):
        raise kf.error(f"cannot read key file {p}: permission denied (this process runs as "
                       f"uid {os.geteuid()}; the file belongs to uid {st.st_uid})")
    return kf


def _key_map(sec: Section, what: str) -> dict[IPv6Address, KeyFile]:
    out = {}
    for key, text in sec.items():
        try:
            a = parse_address(key)
        except ValueError as e:
            raise sec.error(key, f"{e}: keys of [{sec.name}] are {what}") from None
        out[a] = _check_key_file(sec, key, text)
    return out


def _endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ValueError("expected HOST:PORT with a numeric port") from None
    if not 0 < p < 65536:
        raise ValueError("port must be 1-65535")
    return (host, p)


def _numbers(sec: Section) -> NumberProfile:
    values = {}
    for key in list(sec.keys()):
        attr = key.replace("-", "_")
        values[attr] = sec.get_int(key, minimum=0, maximum=255)
    try:
        return NumberProfile.make(name="custom", **values) if values else NumberProfile.make()
    except ProfileError as e:
        # Locate the error on the first overridden key the message mentions.
        words = set(str(e).replace(",", " ").split())
        bad = next((k for k in sec.keys() if k.replace("-", "_") in words), None)
        raise sec.error(bad, str(e).replace("_", "-")) from None


def _security(get: Callable[[str], Section], node: bool) -> SecurityConfig:
    sec = get("security")
    mode = sec.get_str("mode", "esp", choices=SECURITY_MODES)
    lab = sec.get_bool("lab", False)
    if mode == "none" and not lab:
        raise sec.error(
            "mode",
            "security = none sends and accepts unauthenticated signalling; it is only allowed "
            "with lab = yes in [security]",
        )
    rate = sec.get_float("rate-limit", 50.0, minimum=0.1, maximum=1e6)
    burst = sec.get_int("rate-burst", 100, minimum=1, maximum=1_000_000)
    admission = AdmissionSettings(
        source_rate=rate, source_burst=burst,
        max_sources=sec.get_int("max-sources", 4096, minimum=1, maximum=10_000_000),
        admit_rate=sec.get_float("admit-rate", 409.6, minimum=0.1, maximum=1e7),
        admit_burst=sec.get_int("admit-burst", 1024, minimum=1, maximum=10_000_000),
        unauthenticated_rate=sec.get_float("unauthenticated-rate", 2000.0, minimum=0.1,
                                           maximum=1e7),
        unauthenticated_burst=sec.get_int("unauthenticated-burst", 4000, minimum=1,
                                          maximum=10_000_000),
        authenticated_rate=sec.get_float("authenticated-rate", 10000.0, minimum=0.1,
                                         maximum=1e7),
        authenticated_burst=sec.get_int("authenticated-burst", 20000, minimum=1,
                                        maximum=10_000_000),
        answer_rate=sec.get_float("answer-rate", 100.0, minimum=0.1, maximum=1e6),
        answer_burst=sec.get_int("answer-burst", 200, minimum=1, maximum=1_000_000))
    key = None
    peer_keys = node_keys = {}
    node_key_dir = group_key = group_prefix = None
    if node:
        text = sec.raw("key", required=(mode == "esp"))
        if text is not None:
            key = _check_key_file(sec, "key", text)
    else:
        peer_keys = _key_map(get("peer-keys"), "peer home agent addresses")
        node_keys = _key_map(get("node-keys"), "home addresses")
        node_key_dir = sec.get_str("node-key-dir")
        if node_key_dir is not None:
            d = os.path.join(os.path.dirname(os.path.abspath(sec.path)), node_key_dir)
            if not os.path.isdir(d):
                raise sec.error("node-key-dir", f"{d} is not a directory")
            node_key_dir = d
        text = sec.raw("node-group-key")
        if text is not None:
            group_key = _check_key_file(sec, "node-group-key", text)
        group_prefix = sec.get_prefix("node-group-prefix")
        if group_prefix is not None and group_key is None:
            raise sec.error("node-group-prefix", "node-group-prefix needs node-group-key")
    here = os.path.dirname(os.path.abspath(sec.path))
    default_seq = os.path.join(here, os.path.splitext(os.path.basename(sec.path))[0] + ".seq")
    sequence_file = os.path.join(here, sec.get_str("sequence-file", default_seq))
    xfrm_state_file, check_interval = _kernel_esp_keys(sec, mode, node, group_key, here)
    cipher_cache = sec.get_int("cipher-cache", 4096, minimum=1, maximum=10_000_000)
    keep_node_keys = sec.get_bool("keep-node-keys", True)
    sec.check_unused(["cipher-cache", "keep-node-keys", "mode", "lab", "rate-limit", "rate-burst", "key", "node-key-dir",
                      "sequence-file", "max-sources", "admit-rate", "admit-burst",
                      "unauthenticated-rate", "unauthenticated-burst", "authenticated-rate",
                      "authenticated-burst", "answer-rate", "answer-burst", "node-group-key",
                      "node-group-prefix", "xfrm-state-file", "external-check-interval"])
    return SecurityConfig(mode, lab, peer_keys, node_keys, node_key_dir, key,
                          sequence_file if mode == "esp" else None, rate, burst, admission,
                          group_key, group_prefix, xfrm_state_file, check_interval,
                          cipher_cache=cipher_cache, keep_node_keys=keep_node_keys)


def _kernel_esp_keys(sec: Any, mode: str, node: bool, group_key: Any,
                     here: str) -> tuple[str | None, float]:
    """``(xfrm-state-file, external-check-interval)`` of the modes where the kernel does ESP
    (haha.security.kernelmode); refuses what they cannot do."""
    if mode in ("kernel-xfrm", "external") and node:
        raise sec.error("mode", f"mode = {mode} is for home agents; a mobile node uses "
                        "mode = esp")
    if mode in ("kernel-xfrm", "external") and group_key is not None:
        raise sec.error("node-group-key",
                        f"node-group-key cannot be used with mode = {mode}: a node's SAs "
                        "are derived on its first packet, and the kernel must hold them before "
                        "it; give each node its key in [node-keys] or node-key-dir")
    default = os.path.splitext(os.path.basename(sec.path))[0] + ".xfrm"
    state = sec.get_str("xfrm-state-file", default)
    interval = sec.get_float("external-check-interval", 60.0, minimum=1.0, maximum=86400.0)
    return (os.path.join(here, state) if mode == "kernel-xfrm" else None), interval


def _transport(get: Callable[[str], Section]) -> TransportConfig:
    sec = get("transport")
    kind = sec.get_str("kind", "raw", choices=TRANSPORTS)
    interfaces = sec.get_list("interfaces")
    listen = sec._get("udp-listen", None, kind == "udp", _endpoint)
    peers = {}
    ps = get("udp-peers")
    for key, text in ps.items():
        try:
            a = IPv6Network(key) if "/" in key else parse_address(key)
            peers[a] = _endpoint(text)
        except ValueError as e:
            raise ps.error(key, f"{e} (keys are IPv6 addresses or prefixes, values "
                           "HOST:PORT)") from None
    receive_buffer = sec.get_int("receive-buffer", 32 << 20, minimum=0, maximum=1 << 30)
    send_buffer = sec.get_int("send-buffer", 0, minimum=0, maximum=1 << 30)
    learned = sec.get_int("udp-learned", 262144, minimum=1, maximum=1 << 24)
    backlog = sec.get_int("max-backlog", 131072, minimum=1, maximum=1 << 24)
    per_source = sec.get_int("max-per-source", 1024, minimum=1, maximum=1 << 24)
    supersede = sec.get_bool("supersede", True)
    sec.check_unused(["kind", "interfaces", "udp-listen", "receive-buffer", "send-buffer",
                      "udp-learned", "max-backlog", "max-per-source", "supersede"])
    return TransportConfig(kind, interfaces, listen, peers, receive_buffer, send_buffer, learned,
                           backlog, per_source, supersede)


def _control(get: Callable[[str], Section]) -> ControlConfig:
    sec = get("control")
    c = ControlConfig(sec.get_str("socket"), sec.get_str("metrics"))
    sec.check_unused(["socket", "metrics"])
    return c


def _memory(get: Callable[[str], Section]) -> MemoryConfig:
    sec = get("memory")
    m = MemoryConfig(sec.get_bool("trim", True),
                     sec.get_float("trim-interval", 10.0, minimum=MIN_INTERVAL,
                                   maximum=MAX_INTERVAL),
                     sec.get_int("trim-pad", 0, minimum=0, maximum=MAX_PAD),
                     sec.get_int("trim-threshold", 2 << 20, minimum=0, maximum=MAX_THRESHOLD))
    sec.check_unused(["trim", "trim-interval", "trim-pad", "trim-threshold"])
    return m


def _log(get: Callable[[str], Section]) -> str:
    sec = get("log")
    level = sec.get_str("level", "info", choices=LOG_LEVELS)
    sec.check_unused(["level"])
    return level


def _mobile_routers(sec: Section) -> dict[IPv6Address, tuple[IPv6Network, ...]]:
    """``[mobile-routers]``: home address -> the prefixes the router may register."""
    mrs = {}
    for key, text in sec.items():
        try:
            hoa = parse_address(key)
        except ValueError as e:
            raise sec.error(key, f"{e}: keys of [mobile-routers] are home addresses") from None
        try:
            prefixes = tuple(parse_prefix(t) for t in split_list(text))
        except ValueError as e:
            raise sec.error(key, f"{e} (got {text!r})") from None
        if not prefixes:
            raise sec.error(key, "a mobile router needs at least one authorised prefix")
        for p in prefixes:
            if hoa in p:
                raise sec.error(key, f"prefix {p} contains the router's own home address")
        mrs[hoa] = prefixes
    return mrs


def parse_home_agent(parsed: dict[str, Section], path: str) -> HomeAgentConfig:
    """Build a :class:`HomeAgentConfig` from parsed sections (see :func:`load_home_agent`).

    The core's values are read with their types only and validated once, by the core's
    :class:`HomeAgentSettings` (errors located through :data:`HOME_AGENT_KEYS`); then come the
    rules that involve what only the service uses."""
    get = _sections(parsed, path, HA_SECTIONS, ("backend", "discovery"))
    ha = get("home-agent")
    if "home-agent" not in parsed:
        raise ConfigError("a home agent configuration needs a [home-agent] section", path)
    address = ha.get_address("address", required=True, unicast=False)
    prefix = ha.get_prefix("home-prefix", required=True)
    configuration = ha.get_str("configuration", HOME_LINK)
    haha_address = ha.get_address("haha-address", unicast=False)
    lifetime = ha.get_int("lifetime", 1800)
    hello = ha.get_float("hello-interval", 10.0)
    implicit = ha.get_bool("implicit-mode", True)
    peers_sec = get("peers")
    mrs = _mobile_routers(get("mobile-routers"))
    settings = _settings(HomeAgentSettings, HOME_AGENT_KEYS, parsed, path, dict(
        address=address, home_prefix=prefix, kind=configuration,
        haha_address=None if haha_address == address else haha_address,
        preference=ha.get_int("preference", 0),
        ha_lifetime=lifetime, hello_interval=hello,
        hello_misses=ha.get_int("hello-misses", 0),
        max_binding_lifetime=ha.get_int("max-binding-lifetime", 3600),
        boot_wait=ha.get_float("boot-wait", min(2 * hello, float(lifetime))),
        take_over=ha.get_bool("take-over", True),
        take_over_share=ha.get_str("take-over-share", TAKE_OVER_FIRST),
        sync_mtu=ha.get_int("sync-mtu", 1280),
        biu_window=ha.get_int("sync-window", 64),
        address_takeover=ha.get_bool("address-takeover", False),
        drain=ha.get_str("drain-mode", DRAIN_SPREAD),
        switch_message=ha.get_str("switch-message", SWITCH_HASR),
        switch_rate=ha.get_float("switch-rate", 4000.0),
        switch_retransmit_cap=ha.get_float("switch-retransmit-cap", 4.0),
        nemo=ha.get_bool("mobile-router-support", True),
        hello_prefixes=ha.get_prefixes("mobile-network-prefixes"),
        mobile_routers=mrs, implicit_prefixes=mrs if implicit else {},
        peers=peers_sec.get_addresses("static", unicast=False),
        authorised_peer_prefixes=peers_sec.get_prefixes("authorised"),
        max_candidates=peers_sec.get_int("max-candidates", 64),
        numbers=_numbers(get("numbers")),
        # HELLO on every link, the shared home link included (where draft 5.4 suggests Router
        # Advertisements): a peer is live only through ESP-protected messages, and an RA is
        # not protected (docs/security.md, "Peer liveness"). RAs still go to mobile nodes.
        send_hello=True))
    if configuration != NO_HOME_LINK and address not in prefix:
        raise ha.error(
            "address",
            f"home agent address {address} is outside home-prefix {prefix}: on a home link "
            f"(configuration = {configuration}) the HA address is on the home prefix",
        )
    if hello >= lifetime:
        raise ha.error(
            "hello-interval",
            f"hello-interval {hello:g} s must be shorter than lifetime {lifetime} s, or peers "
            "declare this home agent dead between two HELLOs",
        )
    home_interface = ha.get_str("home-interface")
    drain = ha.get_bool("drain-on-stop", True)
    drain_timeout = ha.get_float("drain-timeout", 10.0, minimum=0, maximum=3600)
    ras = ha.get_bool("router-advertisements", configuration != NO_HOME_LINK)
    router_lifetime = ha.get_int("router-lifetime", 0, minimum=0, maximum=9000)
    backend = _plugin(parsed, ha, "backend", "backend", "null", path)
    discovery = _plugin(parsed, peers_sec, "discovery", "discovery", "static", path)
    if settings.address_takeover and discovery.name == "link":
        raise ha.error("address-takeover", "address-takeover needs peers known by their HAHA "
                       "addresses (static, dns): Router Advertisements (discovery = link) "
                       "name the home agent address, which moves")
    ha.check_unused()
    peers_sec.check_unused()

    security = _security(get, node=False)
    if security.mode in ("esp", "kernel-xfrm"):
        for p in settings.peers:
            if p not in security.peer_keys:
                raise peers_sec.error(
                    "static",
                    f"static peer {p} has no key in [peer-keys] (security = {security.mode})")
    transport = _transport(get)
    if transport.kind == "raw" and configuration != NO_HOME_LINK and home_interface is None:
        raise ConfigError(
            f"configuration = {configuration} on real interfaces needs home-interface (proxy "
            "Neighbour Discovery and Router Advertisements happen there)",
            path, "home-agent", "home-interface", ha.line)
    return HomeAgentConfig(
        path=path, settings=settings, home_interface=home_interface, drain_on_stop=drain,
        drain_timeout=drain_timeout, implicit_mode=implicit, router_advertisements=ras,
        router_lifetime=router_lifetime, discovery=discovery, backend=backend,
        security=security, transport=transport, control=_control(get), log_level=_log(get),
        memory=_memory(get))


def parse_mobile_node(parsed: dict[str, Section], path: str) -> MobileNodeConfig:
    """Build a :class:`MobileNodeConfig` from parsed sections (see :func:`load_mobile_node`);
    the core's values are validated once, by :class:`MobileNodeSettings`."""
    get = _sections(parsed, path, MN_SECTIONS, ("backend",))
    if "mobile-node" not in parsed:
        raise ConfigError("a mobile node configuration needs a [mobile-node] section", path)
    mn = get("mobile-node")
    ha = mn.get_address("home-agent")
    has = mn.get_addresses("home-agents", unicast=False)
    if ha is not None and ha not in has:
        has = (ha,) + has
    settings = _settings(MobileNodeSettings, MOBILE_NODE_KEYS, parsed, path, dict(
        home_address=mn.get_address("home-address", required=True, unicast=False),
        home_prefix=mn.get_prefix("home-prefix", required=True),
        home_agents=has,
        lifetime=mn.get_int("lifetime", 600),
        mobile_router=mn.get_bool("mobile-router", False),
        prefixes=mn.get_prefixes("prefixes"),
        obeys_switch=mn.get_bool("obey-switch", True),
        retransmit_same_sequence=mn.get_bool("retransmit-same-sequence", True),
        retransmit_jitter=mn.get_float("retransmit-jitter", 0.0),
        refresh_jitter=mn.get_float("refresh-jitter", 0.0),
        numbers=_numbers(get("numbers"))))
    coa = mn.get_address("care-of-address", required=True)
    interface = mn.get_str("interface")
    backend = _plugin(parsed, mn, "backend", "backend", "null", path)
    mn.check_unused()
    return MobileNodeConfig(
        path=path, settings=settings, home_agent=ha, care_of_address=coa, interface=interface,
        backend=backend, security=_security(get, node=True), transport=_transport(get),
        control=_control(get), log_level=_log(get))


def load_home_agent(path: str) -> HomeAgentConfig:
    """Read and check a home agent configuration file."""
    return parse_home_agent(read_ini(path), path)


def load_mobile_node(path: str) -> MobileNodeConfig:
    """Read and check a mobile node / mobile router configuration file."""
    return parse_mobile_node(read_ini(path), path)


def home_agent_from_text(text: str, path: str = "<config>") -> HomeAgentConfig:
    """Parse a home agent configuration held in a string (tests, embedding)."""
    return parse_home_agent(parse_ini(text, path), path)


def mobile_node_from_text(text: str, path: str = "<config>") -> MobileNodeConfig:
    """Parse a mobile node configuration held in a string (tests, embedding)."""
    return parse_mobile_node(parse_ini(text, path), path)
