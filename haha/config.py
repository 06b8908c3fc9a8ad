"""Configuration: one INI format for home agents and mobile nodes -> frozen dataclasses.

``load_home_agent(path)`` and ``load_mobile_node(path)`` read a file, check every key and every
cross-key rule, and return a :class:`HomeAgentConfig` or :class:`MobileNodeConfig`. Every mistake
is a :class:`ConfigError` naming the file, section, key and line. Every key is documented in
``docs/configuration.md`` (a test keeps the two in step).

Plugin choices (``backend``, ``discovery``) are resolved by name later, in :mod:`haha.plugins`;
their own sections (``[backend:NAME]``, ``[discovery:NAME]``) travel as located
:class:`haha.inifile.Section` objects so the plugin's errors are located too.
"""

import difflib
import errno
import os
import stat
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network

from .inifile import (
    ConfigError,
    Section,
    parse_address,
    parse_ini,
    parse_prefix,
    read_ini,
    split_list,
)
from .core.settings import DRAIN_MODES, KINDS, SWITCH_MESSAGES
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
SECURITY_MODES = ("esp", "none")
LOG_LEVELS = ("debug", "info", "warn", "error")
PREFERENCE_MIN, PREFERENCE_MAX = 0, 65535  # unsigned, RFC 6275 7.4 (see docs/protocol.md)


class _Located:
    """Something read from the configuration that can still report a located error later
    (when a plugin is resolved or a key file loaded)."""

    def error(self, message):
        path, section, key, line = self.location
        return ConfigError(message, path, section, key, line)


_NOWHERE = (None, None, None, None)


@dataclass(frozen=True)
class PluginChoice(_Located):
    """A plugin selected by name, with its own configuration section."""

    name: str
    options: Section = field(compare=False, repr=False)
    location: tuple = field(compare=False, repr=False, default=_NOWHERE)


@dataclass(frozen=True)
class KeyFile(_Located):
    """A secret in a file that only its owner may read (checked at load)."""

    path: str
    location: tuple = field(compare=False, repr=False, default=_NOWHERE)


@dataclass(frozen=True)
class SecurityConfig:
    mode: str = "esp"
    lab: bool = False
    peer_keys: dict = field(default_factory=dict)  # peer HA address -> KeyFile
    node_keys: dict = field(default_factory=dict)  # home address -> KeyFile
    node_key_dir: str | None = None
    key: KeyFile | None = None  # mobile node: its own secret, shared by the home agents
    sequence_file: str | None = None  # ESP sequence numbers kept across restarts
    rate: float = 50.0
    burst: int = 100
    #: haha.security.admission.AdmissionSettings (None: its defaults with rate and burst)
    admission: object = None
    node_group_key: KeyFile | None = None  # home agent: derives the secrets of a node group
    node_group_prefix: object = None  # the group's home addresses (None: the home prefix)


@dataclass(frozen=True)
class TransportConfig:
    kind: str = "raw"
    interfaces: tuple = ()
    udp_listen: tuple | None = None  # (host, port)
    udp_peers: dict = field(default_factory=dict)  # IPv6Address/IPv6Network -> (host, port)
    receive_buffer: int = 8 << 20  # octets; 0 = the kernel's default
    send_buffer: int = 0
    udp_learned: int = 262144  # most sources the UDP transport remembers


@dataclass(frozen=True)
class ControlConfig:
    socket: str | None = None  # Twisted server endpoint string
    metrics: str | None = None  # Twisted server endpoint string


@dataclass(frozen=True)
class HomeAgentConfig:
    path: str
    address: IPv6Address
    haha_address: IPv6Address
    home_prefix: object
    configuration: str
    home_interface: str
    preference: int
    lifetime: int
    hello_interval: float
    max_binding_lifetime: int
    boot_wait: float
    take_over: bool
    drain_on_stop: bool
    drain_timeout: float
    drain_mode: str
    switch_message: str
    implicit_mode: bool
    mobile_router_support: bool
    router_advertisements: bool
    router_lifetime: int
    mobile_routers: dict  # home address -> tuple of authorised prefixes
    peers: tuple
    authorised: tuple
    discovery: PluginChoice
    backend: PluginChoice
    numbers: NumberProfile
    security: SecurityConfig
    transport: TransportConfig
    control: ControlConfig
    log_level: str
    max_candidates: int = 64  # [peers] max-candidates
    switch_rate: float = 4000.0
    address_takeover: bool = False
    hello_misses: int = 0
    #: Mobile Network Prefixes announced in HELLO (draft 4.1.1).
    mobile_network_prefixes: tuple = ()


#: At most this many Mobile Network Prefix options in a HELLO (24 octets each: the HELLO stays
#: well inside the minimum MTU with ESP).
MAX_HELLO_PREFIXES = 40


@dataclass(frozen=True)
class MobileNodeConfig:
    path: str
    home_address: IPv6Address
    home_prefix: object
    home_agent: IPv6Address
    home_agents: tuple
    care_of_address: IPv6Address
    interface: str
    lifetime: int
    mobile_router: bool
    prefixes: tuple
    backend: PluginChoice
    numbers: NumberProfile
    security: SecurityConfig
    transport: TransportConfig
    control: ControlConfig
    log_level: str
    obeys_switch: bool = True


#: The sections each kind of file may have (plugin sections ``backend:*``/``discovery:*`` aside).
HA_SECTIONS = (
    "home-agent", "peers", "mobile-routers", "numbers", "security", "peer-keys", "node-keys",
    "transport", "udp-peers", "control", "log",
)
MN_SECTIONS = ("mobile-node", "numbers", "security", "transport", "udp-peers", "control", "log")


def _sections(parsed, path, allowed, plugin_kinds):
    for name, sec in parsed.items():
        kind = name.split(":", 1)[0]
        if name in allowed or (":" in name and kind in plugin_kinds):
            continue
        close = difflib.get_close_matches(name, list(allowed), n=1)
        hint = f"; did you mean [{close[0]}]?" if close else ""
        raise ConfigError(f"unknown section{hint}", path, name, None, sec.line)

    def get(name):
        return parsed.get(name) or Section.empty(name, path)

    return get


def _plugin(parsed, main, key, kind, default, path):
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


def _check_key_file(sec, key, text):
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


def _key_map(sec, what):
    out = {}
    for key, text in sec.items():
        try:
            a = parse_address(key)
        except ValueError as e:
            raise sec.error(key, f"{e}: keys of [{sec.name}] are {what}") from None
        out[a] = _check_key_file(sec, key, text)
    return out


def _endpoint(text):
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


def _numbers(sec):
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


def _security(get, node):
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
    sec.check_unused(["mode", "lab", "rate-limit", "rate-burst", "key", "node-key-dir",
                      "sequence-file", "max-sources", "admit-rate", "admit-burst",
                      "unauthenticated-rate", "unauthenticated-burst", "authenticated-rate",
                      "authenticated-burst", "answer-rate", "answer-burst", "node-group-key",
                      "node-group-prefix"])
    return SecurityConfig(mode, lab, peer_keys, node_keys, node_key_dir, key,
                          sequence_file if mode == "esp" else None, rate, burst, admission,
                          group_key, group_prefix)


def _transport(get):
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
    receive_buffer = sec.get_int("receive-buffer", 8 << 20, minimum=0, maximum=1 << 30)
    send_buffer = sec.get_int("send-buffer", 0, minimum=0, maximum=1 << 30)
    learned = sec.get_int("udp-learned", 262144, minimum=1, maximum=1 << 24)
    sec.check_unused(["kind", "interfaces", "udp-listen", "receive-buffer", "send-buffer",
                      "udp-learned"])
    return TransportConfig(kind, interfaces, listen, peers, receive_buffer, send_buffer, learned)


def _control(get):
    sec = get("control")
    c = ControlConfig(sec.get_str("socket"), sec.get_str("metrics"))
    sec.check_unused(["socket", "metrics"])
    return c


def _log(get):
    sec = get("log")
    level = sec.get_str("level", "info", choices=LOG_LEVELS)
    sec.check_unused(["level"])
    return level


def parse_home_agent(parsed, path):
    """Build a :class:`HomeAgentConfig` from parsed sections (see :func:`load_home_agent`)."""
    get = _sections(parsed, path, HA_SECTIONS, ("backend", "discovery"))
    ha = get("home-agent")
    if "home-agent" not in parsed:
        raise ConfigError("a home agent configuration needs a [home-agent] section", path)
    address = ha.get_address("address", required=True)
    prefix = ha.get_prefix("home-prefix", required=True)
    configuration = ha.get_str("configuration", "home-link", choices=CONFIGURATIONS)
    haha_address = ha.get_address("haha-address")
    if configuration == "no-home-link" and haha_address is None:
        haha_address = address  # draft 3.2: the address mobile nodes use is the HAHA address
    if configuration != "no-home-link" and address not in prefix:
        raise ha.error(
            "address",
            f"home agent address {address} is outside home-prefix {prefix}: on a home link "
            f"(configuration = {configuration}) the HA address is on the home prefix",
        )
    home_interface = ha.get_str("home-interface")
    preference = ha.get_int("preference", 0, minimum=PREFERENCE_MIN, maximum=PREFERENCE_MAX)
    lifetime = ha.get_int("lifetime", 1800, minimum=1, maximum=65535)
    hello = ha.get_float("hello-interval", 10.0, minimum=0.1, maximum=65535)
    if hello >= lifetime:
        raise ha.error(
            "hello-interval",
            f"hello-interval {hello:g} s must be shorter than lifetime {lifetime} s, or peers "
            "declare this home agent dead between two HELLOs",
        )
    misses = ha.get_int("hello-misses", 0, minimum=0, maximum=1000)
    max_life = ha.get_int("max-binding-lifetime", 3600, minimum=4, maximum=262140)
    boot_wait = ha.get_float("boot-wait", min(2 * hello, float(lifetime)), minimum=0, maximum=3600)
    take_over = ha.get_bool("take-over", True)
    address_takeover = ha.get_bool("address-takeover", False)
    if address_takeover and (haha_address is None or haha_address == address):
        raise ha.error("address-takeover", "address-takeover needs a haha-address of its own: "
                       "the home agent address moves between home agents, the signalling "
                       "address stays with the machine")
    drain = ha.get_bool("drain-on-stop", True)
    drain_timeout = ha.get_float("drain-timeout", 10.0, minimum=0, maximum=3600)
    drain_mode = ha.get_str("drain-mode", "spread", choices=DRAIN_MODES)
    switch_message = ha.get_str("switch-message", "hasr", choices=SWITCH_MESSAGES)
    switch_rate = ha.get_float("switch-rate", 4000.0, minimum=0.1, maximum=1e7)
    implicit = ha.get_bool("implicit-mode", True)
    mr_support = ha.get_bool("mobile-router-support", True)
    ras = ha.get_bool("router-advertisements", configuration != "no-home-link")
    router_lifetime = ha.get_int("router-lifetime", 0, minimum=0, maximum=9000)
    mnps = ha.get_prefixes("mobile-network-prefixes")
    if len(mnps) > MAX_HELLO_PREFIXES:
        raise ha.error("mobile-network-prefixes",
                       f"{len(mnps)} prefixes; a HELLO carries at most {MAX_HELLO_PREFIXES}")
    if len(set(mnps)) != len(mnps):
        raise ha.error("mobile-network-prefixes", "a prefix is listed twice")
    backend = _plugin(parsed, ha, "backend", "backend", "null", path)
    discovery_sec = get("peers")
    discovery = _plugin(parsed, discovery_sec, "discovery", "discovery", "static", path)
    if address_takeover and discovery.name == "link":
        raise ha.error("address-takeover", "address-takeover needs peers known by their HAHA "
                       "addresses (static, dns): Router Advertisements (discovery = link) "
                       "name the home agent address, which moves")
    ha.check_unused()

    peers = discovery_sec.get_addresses("static")
    own = {address, haha_address}
    for p in peers:
        if p in own:
            raise discovery_sec.error("static", f"{p} is this home agent's own address")
    authorised = discovery_sec.get_prefixes("authorised")
    max_candidates = discovery_sec.get_int("max-candidates", 64, minimum=0, maximum=1_000_000)
    discovery_sec.check_unused()

    mrs = {}
    mr_sec = get("mobile-routers")
    for key, text in mr_sec.items():
        try:
            hoa = parse_address(key)
        except ValueError as e:
            raise mr_sec.error(key, f"{e}: keys of [mobile-routers] are home addresses") from None
        if hoa not in prefix:
            raise mr_sec.error(key, f"mobile router home address {hoa} is outside {prefix}")
        try:
            prefixes = tuple(parse_prefix(t) for t in split_list(text))
        except ValueError as e:
            raise mr_sec.error(key, f"{e} (got {text!r})") from None
        if not prefixes:
            raise mr_sec.error(key, "a mobile router needs at least one authorised prefix")
        for p in prefixes:
            if hoa in p:
                raise mr_sec.error(key, f"prefix {p} contains the router's own home address")
        mrs[hoa] = prefixes

    numbers = _numbers(get("numbers"))
    security = _security(get, node=False)
    if security.mode == "esp":
        for p in peers:
            if p not in security.peer_keys:
                raise ConfigError(
                    f"static peer {p} has no key in [peer-keys] (security = esp)",
                    path, "peers", "static",
                    discovery_sec._values["static"].line,
                )
    transport = _transport(get)
    if transport.kind == "raw" and configuration != "no-home-link" and home_interface is None:
        raise ConfigError(
            f"configuration = {configuration} on real interfaces needs home-interface (proxy "
            "Neighbour Discovery and Router Advertisements happen there)",
            path, "home-agent", "home-interface", ha.line)
    control = _control(get)
    level = _log(get)
    return HomeAgentConfig(
        path=path, address=address, haha_address=haha_address or address, home_prefix=prefix,
        configuration=configuration, home_interface=home_interface, preference=preference,
        lifetime=lifetime, hello_interval=hello, max_binding_lifetime=max_life,
        boot_wait=boot_wait, take_over=take_over, drain_on_stop=drain,
        drain_timeout=drain_timeout, drain_mode=drain_mode, switch_message=switch_message,
        switch_rate=switch_rate, implicit_mode=implicit,
        mobile_router_support=mr_support, router_advertisements=ras,
        router_lifetime=router_lifetime, mobile_routers=mrs, peers=peers,
        authorised=authorised, discovery=discovery, backend=backend, numbers=numbers,
        security=security, transport=transport, control=control, log_level=level,
        max_candidates=max_candidates, address_takeover=address_takeover,
        hello_misses=misses, mobile_network_prefixes=mnps,
    )


def parse_mobile_node(parsed, path):
    """Build a :class:`MobileNodeConfig` from parsed sections (see :func:`load_mobile_node`)."""
    get = _sections(parsed, path, MN_SECTIONS, ("backend",))
    if "mobile-node" not in parsed:
        raise ConfigError("a mobile node configuration needs a [mobile-node] section", path)
    mn = get("mobile-node")
    hoa = mn.get_address("home-address", required=True)
    prefix = mn.get_prefix("home-prefix", required=True)
    if hoa not in prefix:
        raise mn.error("home-address", f"home address {hoa} is outside home-prefix {prefix}")
    ha = mn.get_address("home-agent")
    has = mn.get_addresses("home-agents")
    if ha is not None and ha not in has:
        has = (ha,) + has
    coa = mn.get_address("care-of-address", required=True)
    interface = mn.get_str("interface")
    lifetime = mn.get_int("lifetime", 600, minimum=4, maximum=262140)
    mr = mn.get_bool("mobile-router", False)
    prefixes = mn.get_prefixes("prefixes")
    obeys_switch = mn.get_bool("obey-switch", True)
    if prefixes and not mr:
        raise mn.error("prefixes", "mobile network prefixes need mobile-router = yes")
    backend = _plugin(parsed, mn, "backend", "backend", "null", path)
    mn.check_unused()
    numbers = _numbers(get("numbers"))
    security = _security(get, node=True)
    transport = _transport(get)
    control = _control(get)
    level = _log(get)
    return MobileNodeConfig(
        path=path, home_address=hoa, home_prefix=prefix, home_agent=ha, home_agents=has,
        care_of_address=coa, interface=interface, lifetime=lifetime, mobile_router=mr,
        prefixes=prefixes, backend=backend, numbers=numbers, security=security,
        transport=transport, control=control, log_level=level, obeys_switch=obeys_switch,
    )


def load_home_agent(path):
    """Read and check a home agent configuration file."""
    return parse_home_agent(read_ini(path), path)


def load_mobile_node(path):
    """Read and check a mobile node / mobile router configuration file."""
    return parse_mobile_node(read_ini(path), path)


def home_agent_from_text(text, path="<config>"):
    """Parse a home agent configuration held in a string (tests, embedding)."""
    return parse_home_agent(parse_ini(text, path), path)


def mobile_node_from_text(text, path="<config>"):
    """Parse a mobile node configuration held in a string (tests, embedding)."""
    return parse_mobile_node(parse_ini(text, path), path)
