"""The embeddable entry points: :class:`HomeAgentService` and :class:`MobileNodeService`.

Both are Twisted ``MultiService``\\ s built by a classmethod ``build(config, reactor=..., ...)``
from a checked configuration (:mod:`haha.config`). Every collaborator can be passed in instead of
built from the configuration (``backend``, ``discovery``, ``transport``, ``sadb``), so tests and
larger applications wire fakes or their own objects without patching anything; ``twistd``'s
``makeService`` (:mod:`haha.tap`) only calls ``build``.

A home agent service starts its transport (joining its home prefix's Home-Agents anycast
address when the transport can: :func:`anycast_membership`), backend (which first removes what a
crashed run of the same daemon left in the kernel: :func:`backend_ownership`), machine and
discovery in that order, serves the control socket and metrics endpoint when configured, and on
stop drains its mobile nodes to its peers (``drain-on-stop``, bounded by ``drain-timeout``),
says goodbye with a HELLO of lifetime zero, and releases everything it installed. A mobile node
service announces its home address on its interface once it is back home (RFC 6275 11.5.4).
"""

import os
import random
import time
from ipaddress import IPv6Address

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet import defer
from zope.interface import implementer

from . import notices, startup
from .advertiser import HomeLinkAdvertiser
from .config import KeyFile
from .control.metrics import ServiceMetrics, home_agent_gauges, metrics_site, mobile_node_gauges
from .control.server import ControlFactory
from .durability import boot_epoch_for, watch_store
from .core.homeagent import HomeAgent, NotServing, home_agents_anycast
from .core.mobilenode import DEREGISTERING, HOME as MN_HOME, IDLE as MN_IDLE, MobileNode
from .core.settings import (
    HomeAgentSettings,
    MobileNodeSettings,
)
from .inifile import ConfigError, parse_address
from .logthrottle import LogThrottle
from .leaving import deregister
from .logging import logger
from .interfaces import IControllable, IPeerListener, IRouterAdvertisementListener
from .protocol import HomeAgentAdapter, MobileNodeAdapter
from .security import keys as _keys
from .security.errors import KeyFileError, SecurityConfigError
from .security.policy import SecurityPolicy
from .security.admission import Admission, AdmissionSettings
from .security.sadb import HOME_AGENT, MOBILE_NODE, SecurityAssociationDatabase
from .security.seqstore import SequenceStore, time_floor
from .statedir import ensure_directory, unix_socket_path

log = logger("haha.service")

#: The wall clock, read only for what orders runs across restarts: the boot epoch and where an
#: SA without a recorded sequence number starts (``docs/operations.md``). Tests replace it.
wall_clock = time.time


# -- settings -----------------------------------------------------------------------------------


def home_agent_settings(config):
    """The core's :class:`HomeAgentSettings` for a :class:`haha.config.HomeAgentConfig`."""
    # HELLO on every link, the shared home link included (where draft 5.4 suggests Router
    # Advertisements): a peer is live only through ESP-protected messages, and an RA is not
    # protected (docs/security.md, "Peer liveness"). RAs still go to mobile nodes.
    return HomeAgentSettings(
        address=config.address,
        home_prefix=config.home_prefix,
        kind=config.configuration,
        haha_address=config.haha_address if config.haha_address != config.address else None,
        preference=config.preference,
        ha_lifetime=config.lifetime,
        hello_interval=config.hello_interval,
        send_hello=True,
        max_candidates=config.max_candidates,
        max_binding_lifetime=config.max_binding_lifetime,
        peers=config.peers,
        authorised_peer_prefixes=config.authorised,
        nemo=config.mobile_router_support,
        mobile_routers=config.mobile_routers,
        implicit_prefixes=config.mobile_routers if config.implicit_mode else {},
        boot_wait=config.boot_wait,
        take_over=config.take_over,
        address_takeover=config.address_takeover,
        hello_misses=config.hello_misses,
        drain=config.drain_mode,
        drain_preference=0,
        switch_message=config.switch_message,
        switch_rate=config.switch_rate,
        numbers=config.numbers,
        hello_prefixes=config.mobile_network_prefixes,
    )


def mobile_node_settings(config):
    """The core's :class:`MobileNodeSettings` for a :class:`haha.config.MobileNodeConfig`."""
    return MobileNodeSettings(
        home_address=config.home_address,
        home_prefix=config.home_prefix,
        home_agents=config.home_agents,
        mobile_router=config.mobile_router,
        prefixes=config.prefixes,
        lifetime=config.lifetime,
        obeys_switch=config.obeys_switch,
        numbers=config.numbers,
    )


# -- security -----------------------------------------------------------------------------------


def _located(key_file, what):
    """Load a key file, turning its error into a located configuration error."""
    try:
        return _keys.load_secret(key_file.path)
    except (KeyFileError, SecurityConfigError, OSError) as e:
        raise key_file.error(f"{what}: {e}") from None


def security_policy(config):
    mode = config.security.mode
    if mode in KERNEL_ESP_MODES:
        mode = "esp"  # the same rules; the kernel applies ESP (haha.security.kerneldaemon)
    try:
        return SecurityPolicy(config.numbers, mode, config.security.lab)
    except SecurityConfigError as e:
        raise ConfigError(str(e), config.path, "security", "mode") from None


#: Security modes where the kernel does ESP (haha.security.kernelmode).
KERNEL_ESP_MODES = ("kernel-xfrm", "external")


def rate_limiter(config):
    """The admission budgets of :mod:`haha.security.admission` from ``[security]``."""
    sec = config.security
    settings = sec.admission
    if settings is None:
        settings = AdmissionSettings(source_rate=sec.rate, source_burst=sec.burst)
    return Admission(settings)


def kernel_esp(config, transport, reactor):
    """``(sadb, transport)`` when the kernel does ESP (``[security] mode = kernel-xfrm`` or
    ``external``, docs/security.md "Kernel ESP")."""
    from .security.kerneldaemon import kernel_esp_for

    peers = {}
    if config.security.mode == "kernel-xfrm":
        peers = {p: _located(kf, "peer key") for p, kf in config.security.peer_keys.items()}
    nodes = node_secrets(config) if config.security.mode == "kernel-xfrm" else {}
    return kernel_esp_for(config, transport, reactor, peers, nodes, wall_clock())


def home_agent_sadb(config):
    """The SA database of a home agent: one derived pair per peer key and per mobile node key
    (docs/security.md), or None in lab mode."""
    if config.security.mode in ("none",) + KERNEL_ESP_MODES:
        return None  # kernel ESP: haha.security.kerneldaemon.kernel_esp_for
    specs = []
    me_peers = config.haha_address
    store = _sequence_store(config)
    epoch = boot_epoch_for(store, wall_clock())  # peers follow it: a run without its file
    # rejoins at once (haha.security.epoch)
    for peer, key_file in config.security.peer_keys.items():
        secret = _located(key_file, "peer key")
        specs.extend(_keys.derive_pair(secret, me_peers, peer, HOME_AGENT, epoch=epoch))
    for hoa, secret in node_secrets(config).items():
        specs.extend(_keys.derive_pair(secret, config.address, hoa, MOBILE_NODE))
    try:
        db = SecurityAssociationDatabase.from_specs(specs, sequence_store=store)
    except SecurityConfigError as e:
        raise ConfigError(str(e), config.path, "security", "sequence-file") from None
    db.epoch = epoch  # SIGHUP re-keys peers with it (haha.reload)
    return db


def node_secrets(config):
    """``{home address: secret}`` of the mobile nodes a home agent serves with ESP
    (``[node-keys]`` and ``node-key-dir``)."""
    nodes = dict(config.security.node_keys)
    if config.security.node_key_dir:
        for name in sorted(os.listdir(config.security.node_key_dir)):
            if not name.endswith(".key"):
                continue
            try:
                hoa = IPv6Address(name[:-4])
            except ValueError:
                raise ConfigError(
                    f"{name}: files in node-key-dir are named HOME-ADDRESS.key",
                    config.path, "security", "node-key-dir") from None
            if hoa not in nodes:
                nodes[hoa] = KeyFile(os.path.join(config.security.node_key_dir, name),
                                     (config.path, "security", "node-key-dir", None))
    return {hoa: _located(key_file, "mobile node key") for hoa, key_file in nodes.items()}


def node_group(config):
    """The home agent's node group (``[security] node-group-key``), or None."""
    sec = config.security
    if sec.mode == "none" or sec.node_group_key is None:
        return None
    from .security.nodegroup import NodeGroup

    return NodeGroup(_located(sec.node_group_key, "node group key"),
                     sec.node_group_prefix or config.home_prefix, config.address)


def _sequence_store(config):
    """ESP sequence numbers survive restarts (docs/security.md): without them a restarted
    daemon's peers would drop everything it sends as too old."""
    path = config.security.sequence_file
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
        return watch_store(SequenceStore(path, floor=lambda: time_floor(wall_clock())))
    except SecurityConfigError as e:
        raise ConfigError(str(e), config.path, "security", "sequence-file") from None


class NodeKeyring:
    """A mobile node's keys: its one secret (shared by the home agent set) derives the SA pair
    with any home agent on first use, so the node can talk to (and authenticate) a home agent it
    learned from DHAAD or that took it over, without configuring SPIs."""

    def __init__(self, secret, home_address, sadb):
        self._secret = secret
        self.home_address = home_address
        self.sadb = sadb
        self.derived = set()

    def ensure(self, home_agent):
        if home_agent in self.derived or self.sadb.has_peer(home_agent):
            return
        for spec in _keys.derive_pair(self._secret, self.home_address, home_agent, HOME_AGENT):
            self.sadb.add(spec)
        self.derived.add(home_agent)

    def learn(self, source, esp):
        """A protected packet from ``source``: derive its pair if that explains the SPI."""
        if source in self.derived or len(esp) < 4 or self.sadb.has_peer(source):
            return
        spi = int.from_bytes(esp[:4], "big")
        inbound = _keys.derive_sa(self._secret, source, self.home_address)
        if inbound.spi == spi:
            self.ensure(source)

    def __repr__(self):
        return f"<NodeKeyring {self.home_address} derived={sorted(map(str, self.derived))}>"


def mobile_node_security(config):
    """``(sadb, keyring)`` of a mobile node, ``(None, None)`` in lab mode."""
    if config.security.mode == "none":
        return None, None
    secret = _located(config.security.key, "mobile node key")
    sadb = SecurityAssociationDatabase(sequence_store=_sequence_store(config))
    keyring = NodeKeyring(secret, config.home_address, sadb)
    for ha in config.home_agents:
        keyring.ensure(ha)
    return sadb, keyring


# -- transport ----------------------------------------------------------------------------------


def build_transport(config, reactor, home_interface=None):
    """The configured transport (not started)."""
    t = config.transport
    if t.kind == "udp":
        from .io.udp import UdpTransport

        host, port = t.udp_listen
        return UdpTransport(reactor, port=port, interface=host, peers=t.udp_peers,
                            max_learned=t.udp_learned, receive_buffer=t.receive_buffer,
                            send_buffer=t.send_buffer)
    from .io.raw import RawTransport

    return RawTransport(reactor, interfaces=list(t.interfaces) or None,
                        default_interface=home_interface, receive_buffer=t.receive_buffer)


def anycast_membership(config):
    """``(address, interface)``: where a home agent joins the Home-Agents anycast address of
    its home prefix (RFC 6275 10.5, RFC 2526), so that Dynamic Home Agent Address Discovery
    requests reach it (docs/io.md, "DHAAD on real links").

    On a home link (``home-interface``) the kernel must answer Neighbour Solicitations for the
    address there, or the home link's router cannot deliver a request at all. Without a home
    link the address lies inside the home prefix that routing brings to whichever home agent
    advertises it; joining it on ``lo`` only makes the kernel take the request as local (and
    drop the unknown ICMPv6 type silently) instead of answering it with Destination
    Unreachable from the backend's ``unreachable`` prefix route."""
    return home_agents_anycast(config.home_prefix), config.home_interface or "lo"


def _join_anycast(config, transport):
    """Join :func:`anycast_membership` through ``transport`` when it can (the raw transport);
    a refusal is a start-up failure with a sentence that says what to fix."""
    join = getattr(transport, "join_anycast", None)
    if join is None:
        return None
    address, interface = anycast_membership(config)
    try:
        join(address, interface)
    except OSError as e:
        raise OSError(e.errno, (
            f"cannot join the Home-Agents anycast address {address} of {config.home_prefix} on "
            f"{interface} (needed for DHAAD, RFC 6275 10.5): {e.strerror or e}; the interface "
            f"needs IPv6 forwarding enabled or an address in {config.home_prefix}")) from None
    return address, interface


def kernel_state_path(config):
    """Where a home agent keeps the record of what it installed in the kernel
    (:class:`haha.backends.common.StateFile`): beside the ESP sequence file, with the extension
    ``.state`` (``ha1.seq`` -> ``ha1.state``); in lab mode, without a sequence file, beside the
    configuration file. None when neither is known."""
    base = config.security.sequence_file or getattr(config, "path", None)
    if not base:
        return None
    return os.path.splitext(base)[0] + ".state"


def backend_ownership(config):
    """The :class:`haha.backends.common.Ownership` of a home agent: what a run of this daemon
    may leave in the kernel (proxy entries on the home interface for its home prefix, the
    prefix's route, tunnels from its addresses) and its state file (docs/io.md, "State left
    behind")."""
    from .backends.common import Ownership

    return Ownership(config.home_prefix, config.home_interface,
                     frozenset({config.address, config.haha_address}), kernel_state_path(config))


def _start_services(parent, config, target, labels, gauges):
    """The control socket and metrics endpoint (when configured) as child services; the
    metrics (``parent.metrics``, their own registry) and the adapter's log carry the daemon's
    identity, ``labels["address"]``."""
    parent.log = logger("haha.service", labels["address"])
    target.adapter.log = logger(f"haha.{target.adapter.role}", labels["address"])
    parent.metrics = ServiceMetrics(target.counters, gauges, labels).attach(target.adapter)
    if config.control.socket:
        _runtime_directory(config)
        strports.service(config.control.socket, ControlFactory(target)).setServiceParent(parent)
    if config.control.metrics:
        strports.service(config.control.metrics, metrics_site(parent.metrics)).setServiceParent(
            parent)


def _runtime_directory(config):
    """The control socket's directory, made (0750) when missing (haha.statedir)."""
    path = unix_socket_path(config.control.socket)
    directory = os.path.dirname(path) if path else None
    if directory:
        try:
            ensure_directory(directory)
        except OSError as e:
            raise ConfigError(f"cannot create the directory {directory} for the control socket: "
                              f"{e.strerror}", config.path, "control", "socket") from None


def _warn_if_insecure(policy):
    """Lab mode (no ESP) is logged loudly, three times, at every start."""
    if policy.warning:
        for _ in range(3):
            log.critical("{warning}", warning=policy.warning)


def _json(value):
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


# -- home agent ---------------------------------------------------------------------------------


@implementer(IControllable, IPeerListener)
class HomeAgentService(MultiService):
    """A home agent as a Twisted service (module docstring)."""

    def __init__(self, config, machine, adapter, backend, discovery, transport, reactor,
                 sadb=None):
        super().__init__()
        self.setName(f"haha {config.address}")  # two home agents in one MultiService
        self.config = config
        self.machine = machine
        self.adapter = adapter
        self.backend = backend
        self.discovery = discovery
        self.transport = transport
        self.reactor = reactor
        self.sadb = sadb
        self.started_at = None
        self._drained = None
        self._log_throttle = LogThrottle()
        self.anycast = None  # (address, interface) joined at start, when the transport can
        self.advertiser = None
        if config.router_advertisements and config.home_interface and \
                config.transport.kind == "raw":
            self.advertiser = HomeLinkAdvertiser(
                reactor, transport, machine, config.home_interface,
                interval=min(config.hello_interval, config.lifetime / 3),
                lifetime=config.lifetime, prefix=config.home_prefix,
                router_lifetime=config.router_lifetime)
        adapter.observers.append(self._observe)
        _start_services(self, config, self,
                        {"role": "home-agent", "address": str(config.address)},
                        lambda: home_agent_gauges(machine))

    @classmethod
    @startup.translated
    def build(cls, config, reactor=None, backend=None, discovery=None, transport=None,
              sadb=None, rng=None):
        """Everything from ``config``; each keyword replaces what the configuration would
        build (``sadb`` is ignored in lab mode). Raises :class:`haha.errors.StartupError`
        when this host cannot run it (:mod:`haha.startup`)."""
        if reactor is None:
            from twisted.internet import reactor
        startup.check_home_agent(config, transport=transport is None, backend=backend is None)
        from .plugins import build_backend, build_discovery

        settings = home_agent_settings(config)
        policy = security_policy(config)
        if sadb is None:
            sadb = home_agent_sadb(config)
        if transport is None:
            transport = build_transport(config, reactor, config.home_interface)
        if config.security.mode in KERNEL_ESP_MODES:
            sadb, transport = kernel_esp(config, transport, reactor)
        if backend is None:
            backend = build_backend(config.backend, reactor)
        if getattr(backend, "transport", False) is None:
            backend.transport = transport
        if getattr(backend, "ownership", False) is None:
            backend.ownership = backend_ownership(config)
        if discovery is None:
            discovery = build_discovery(config.discovery, reactor, config)
        machine = HomeAgent(settings, rng or random.Random())
        limiter = rate_limiter(config)
        for peer in config.peers:
            limiter.pin(peer)
        adapter = HomeAgentAdapter(
            machine, transport, reactor, config.numbers, policy, sadb, limiter, backend,
            home_interface=config.home_interface,
            ra_listener=discovery if IRouterAdvertisementListener.providedBy(discovery) else None,
            node_group=node_group(config),
        )
        if config.address_takeover and sadb is not None:
            from .security.takeover import TakeoverKeys
            from .security.nodegroup import NodeSecrets

            adapter.takeover_keys = TakeoverKeys(
                sadb, config.address, NodeSecrets(node_secrets(config), adapter.node_group))
        return cls(config, machine, adapter, backend, discovery, transport, reactor, sadb)

    # -- service ----------------------------------------------------------------------------

    @startup.translated
    def startService(self):  # noqa: N802 - Twisted hook
        _warn_if_insecure(self.adapter.policy)
        self.adapter.start_transport()
        try:
            self.anycast = _join_anycast(self.config, self.transport)
            self.backend.start()
        except Exception:
            self.transport.stop()
            raise
        self.adapter.running = True
        self.started_at = self.reactor.seconds()
        self.adapter._run(self.machine.start, self.reactor.seconds())
        if self.advertiser is not None:
            self.advertiser.start()
        self.discovery.start(self)
        self.log.info("home agent {address} started ({kind}, backend {backend}, "
                      "transport {transport})",
                      address=self.config.address, kind=self.config.configuration,
                      backend=self.config.backend.name, transport=self.config.transport.kind)
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802 - Twisted hook
        # The control socket and metrics (child services) stay up while the node drains.
        if self.config.drain_on_stop and self.machine.cache.primary_count and \
                self.machine.serving:
            yield self._drain(self.config.drain_timeout)
        notices.report_left_behind(self.machine)
        self.adapter._run(self.machine.stop, self.reactor.seconds())
        if self.advertiser is not None:
            self.advertiser.stop()
        self.adapter.running = False
        self.adapter.stop_timer()
        yield defer.maybeDeferred(self.discovery.stop)
        try:
            yield defer.maybeDeferred(self.backend.stop)
        except Exception:
            self.log.failure("the backend failed to stop cleanly")
        if self.sadb is not None:
            self.sadb.flush()
        yield defer.maybeDeferred(self.transport.stop)
        self.anycast = None  # the transport's socket held the membership
        yield super().stopService()
        self.log.info("home agent {address} stopped", address=self.config.address)

    def _drain(self, timeout):
        """Ask every mobile node to switch away; fire when none is left or at ``timeout``."""
        self._drained = defer.Deferred()
        self.adapter._run(self.machine.drain, self.reactor.seconds())
        if not self.machine.cache.primary_count and not self._drained.called:
            self._drained.callback(None)
        d = self._drained
        call = self.reactor.callLater(timeout, lambda: d.called or d.callback(None))
        d.addBoth(lambda r: call.active() and call.cancel() or r)
        return d

    def _observe(self, event):
        if event.name == "drain-complete" and self._drained is not None \
                and not self._drained.called:
            self._drained.callback(None)

    # -- IPeerListener ----------------------------------------------------------------------

    def peer_appeared(self, address, source):
        if self.sadb is not None and not self.sadb.has_peer(address):
            self.adapter.counters["peer-refused.no-key"] += 1
            # Discovery is unauthenticated: one line per source per minute, the rest counted.
            held = self._log_throttle.allow(source, self.reactor.seconds())
            if held is not None:
                self.log.warn("peer {peer} from {source} has no key in [peer-keys]: ignored"
                              " ({held} more since the last such line)",
                              peer=address, source=source, held=held)
            return
        self.adapter._run(self.machine.add_peer, address, self.reactor.seconds(), source)

    def peer_disappeared(self, address, source):
        self.adapter._run(self.machine.remove_peer, address, self.reactor.seconds(), source)

    # -- IControllable ----------------------------------------------------------------------

    def status(self):
        m = self.machine
        return _json({
            "role": "home-agent",
            "address": self.config.address,
            "haha_address": self.config.haha_address,
            "home_prefix": self.config.home_prefix,
            "configuration": self.config.configuration,
            "state": m.state,
            "preference": m.preference,
            "primaries": m.cache.primary_count,
            "bindings": len(m.cache),
            "live_peers": [a for a, _ in m.ranked() if a != m.identity],
            "uptime": None if self.started_at is None else
            self.reactor.seconds() - self.started_at,
            "backend": self.config.backend.name,
            "security": self.config.security.mode,
            "boot_epoch": None if getattr(self.sadb, "epoch", None) is None else
            f"{self.sadb.epoch:016x}",
            "anycast": list(self.anycast) if self.anycast else None,
        })

    def bindings(self):
        out = []
        for view in sorted(self.machine.snapshot().values(), key=lambda v: int(v[0])):
            out.append(_json({
                "home_address": view.home_address, "care_of": view.care_of,
                "sequence": view.sequence, "flags": view.flags,
                "prefixes": list(view.prefixes), "primary": view.primary,
                "copy": view.primary != self.machine.identity,
            }))
        return out

    def peers(self):
        out = []
        for address, preference in self.machine.ranked():
            if address == self.machine.identity:
                continue
            e = self.machine.peers.get(address)
            out.append(_json({"address": address, "preference": preference,
                              "prefixes": list(e.prefixes) if e is not None else []}))
        return out

    def counters(self):
        c = dict(self.adapter.counters)
        for k, v in self.machine.counters.items():
            c["core." + k] = v
        for source in (self.transport, self.sadb, self.adapter.policy, self.adapter.limiter,
                       self.discovery, getattr(self.sadb, "sequence_store", None)):
            for k, v in getattr(source, "counters", {}).items():
                c[f"{type(source).__name__.lower()}.{k}"] = v
        c["log-lines-suppressed"] = self._log_throttle.suppressed
        c["bindings_now"] = len(self.machine.cache)
        c["primaries_now"] = self.machine.cache.primary_count
        c["peers_now"] = sum(1 for a, _ in self.machine.ranked() if a != self.machine.identity)
        return c

    def command(self, name, arguments):
        now = self.reactor.seconds()
        try:
            if name == "switch":
                hoa = parse_address(arguments["home-address"])
                target = arguments.get("target")
                target = parse_address(target) if target else None
                self.adapter.apply(self.machine.switch(hoa, now, target))
                return {"switch-requested": str(hoa), "target": str(target) if target else None}
            if name == "drain":
                self.adapter.apply(self.machine.drain(now))
                return {"draining": self.machine.cache.primary_count}
            if name == "resume":
                self.adapter.apply(self.machine.resume(now))
                return {"state": self.machine.state}
            if name == "preference":
                self.adapter.apply(self.machine.set_preference(int(arguments["value"]), now))
                return {"preference": self.machine.preference}
            if name == "forwarding":
                return _json(self.backend.snapshot())
        except KeyError as e:
            raise ValueError(f"{name}: missing or unknown {e}") from None
        except NotServing as e:
            raise ValueError(str(e)) from None
        raise ValueError(f"unknown command {name!r}; known: switch, drain, resume, preference, "
                         "forwarding")


# -- mobile node --------------------------------------------------------------------------------


@implementer(IControllable)
class MobileNodeService(MultiService):
    """A mobile node or mobile router as a Twisted service."""

    def __init__(self, config, machine, adapter, tunnel, transport, reactor):
        super().__init__()
        self.setName(f"haha-mn {config.home_address}")
        self.config = config
        self.machine = machine
        self.adapter = adapter
        self.tunnel = tunnel
        self.transport = transport
        self.reactor = reactor
        self.started_at = None
        # with the raw transport the care-of address must be ours (haha.notices)
        self.care_of_watch = notices.CareOfWatch(reactor, machine, interface=config.interface) \
            if config.transport.kind == "raw" else None
        self.leaving = False
        adapter.observers.append(self._observe)
        _start_services(self, config, self,
                        {"role": "mobile-node", "address": str(config.home_address)},
                        lambda: mobile_node_gauges(machine))

    @classmethod
    @startup.translated
    def build(cls, config, reactor=None, tunnel=None, transport=None, sadb=None, rng=None,
              keyring=None):
        if reactor is None:
            from twisted.internet import reactor
        startup.check_mobile_node(config, transport=transport is None, tunnel=tunnel is None)
        settings = mobile_node_settings(config)
        policy = security_policy(config)
        if sadb is None:
            sadb, keyring = mobile_node_security(config)
        if transport is None:
            transport = build_transport(config, reactor, config.interface)
        if tunnel is None:
            tunnel = _mobile_tunnel(config, reactor, transport)
        machine = MobileNode(settings, rng or random.Random())
        limiter = rate_limiter(config)
        adapter = MobileNodeAdapter(machine, transport, reactor, config.numbers, policy, sadb,
                                    limiter, tunnel, keyring)
        return cls(config, machine, adapter, tunnel, transport, reactor)

    @startup.translated
    def startService(self):  # noqa: N802 - Twisted hook
        _warn_if_insecure(self.adapter.policy)
        self.adapter.start_transport()
        if self.tunnel is not None and hasattr(self.tunnel, "start"):
            self.tunnel.start()
        self.adapter.running = True
        self.leaving = False
        self.started_at = self.reactor.seconds()
        self.adapter._run(self.machine.start, self.reactor.seconds(),
                          care_of=self.config.care_of_address)
        if self.care_of_watch is not None:
            self.care_of_watch.start()
        self.log.info("mobile {kind} {hoa} started at {coa}",
                      kind="router" if self.config.mobile_router else "node",
                      hoa=self.config.home_address, coa=self.config.care_of_address)
        super().startService()

    @defer.inlineCallbacks
    def stopService(self):  # noqa: N802 - Twisted hook
        yield super().stopService()
        if self.care_of_watch is not None:
            self.care_of_watch.stop()
        # Deregister first (bounded wait: haha.leaving), then forget everything.
        self.leaving = True
        acknowledged = yield deregister(self.adapter, self.machine, self.reactor)
        if not acknowledged:
            self.log.warn("stopping without an acknowledged deregistration from {ha}",
                          ha=self.machine.target)
        self.adapter._run(self.machine.stop, self.reactor.seconds())
        self.adapter.running = False
        self.adapter.stop_timer()
        if self.adapter.sadb is not None:
            self.adapter.sadb.flush()
        if self.tunnel is not None and hasattr(self.tunnel, "stop"):
            yield defer.maybeDeferred(self.tunnel.stop)
        yield defer.maybeDeferred(self.transport.stop)

    def move(self, care_of):
        """Movement detection found ``care_of`` (embedders call this)."""
        self.adapter._run(self.machine.move, care_of, self.reactor.seconds())
        if self.care_of_watch is not None and self.running:
            self.care_of_watch.check()

    def _observe(self, event):
        """Back on the home link (deregistered, or given up on it): announce the home address
        with our own link-layer address (RFC 6275 11.5.4), on ``interface``."""
        if event.name != "state" or event["new"] != MN_HOME or event["old"] == MN_IDLE \
                or self.leaving:
            return
        announce = getattr(self.tunnel, "announce_home", None)
        if announce is None:
            return
        if not self.config.interface:
            self.adapter.counters["home-na-no-interface"] += 1
            self.log.warn("home: no interface configured to announce {hoa} on",
                          hoa=self.config.home_address)
            return
        if announce(self.config.home_address, self.config.interface) is not None:
            self.adapter.counters["home-na-sent"] += 1
            self.log.info("home: announced {hoa} on {interface} (deregistered: {dereg})",
                          hoa=self.config.home_address, interface=self.config.interface,
                          dereg=event["old"] == DEREGISTERING)

    # -- IControllable ----------------------------------------------------------------------

    def status(self):
        m = self.machine
        return _json({
            "role": "mobile-router" if self.config.mobile_router else "mobile-node",
            "home_address": m.home_address,
            "care_of": m.care_of,
            "state": m.state,
            "home_agent": m.home_agent,
            "known_home_agents": list(m.known_home_agents),
            "lifetime": m.lifetime,
            "expires_in": None if m.expires is None else m.expires - self.reactor.seconds(),
        })

    def bindings(self):
        m = self.machine
        if m.home_agent is None:
            return []
        return [_json({"home_address": m.home_address, "care_of": m.care_of,
                       "home_agent": m.home_agent, "sequence": m.sequence,
                       "prefixes": list(self.config.prefixes)})]

    def peers(self):
        return _json(list(self.machine.known_home_agents))

    def counters(self):
        c = dict(self.adapter.counters)
        for k, v in self.machine.counters.items():
            c["core." + k] = v
        c["registered_now"] = int(self.machine.home_agent is not None)
        store = getattr(self.adapter.sadb, "sequence_store", None)
        for k, v in getattr(store, "counters", {}).items():
            c[f"sequencestore.{k}"] = v
        return c

    def command(self, name, arguments):
        if name == "move":
            try:
                coa = parse_address(arguments["care-of"])
            except KeyError:
                raise ValueError("move needs care-of=ADDRESS") from None
            self.move(coa)
            return {"care_of": str(coa)}
        if name == "home":
            self.adapter._run(self.machine.return_home, self.reactor.seconds())
            return {"state": self.machine.state}
        raise ValueError(f"unknown command {name!r}; known: move, home")


def _mobile_tunnel(config, reactor, transport):
    if config.backend.name == "null":
        config.backend.options.check_unused()
        return None
    if config.backend.name != "tun":
        raise config.backend.error(
            f"a mobile node's tunnel is 'tun' or 'null', not {config.backend.name!r}")
    from .backends.tun import MobileTunnel, options_of
    from .io.raw import RawTransport

    options = config.backend.options
    kw = options_of(options)
    home = options.get_str("default-source", "home", choices=("home", "care-of")) == "home"
    mark = options.get_int("mark", 0x4D4E, minimum=1, maximum=0xFFFFFFFF)
    options.check_unused()
    steer = None
    if home and isinstance(transport, RawTransport):
        # The transport's own packets (signalling, the tunnel's outer packets) carry the mark
        # and keep the main table; everything else unmarked is steered into the tunnel.
        transport.mark = steer = mark
    return MobileTunnel(reactor, transport, router_flag=config.mobile_router, steer_mark=steer,
                        **kw)


__all__ = ["HomeAgentService", "MobileNodeService", "anycast_membership", "backend_ownership",
           "home_agent_settings", "kernel_state_path", "mobile_node_settings"]
