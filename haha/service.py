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

from __future__ import annotations

import os
import random
import time
from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, Optional, Union

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from . import alloctrim, notices, startup
from .advertiser import HomeLinkAdvertiser
from .control.metrics import ServiceMetrics, home_agent_gauges, metrics_site, mobile_node_gauges
from .control.server import ControlFactory
from .core.homeagent import HomeAgent, NotServing
from .core.mobilenode import MobileNode
from .core.settings import (
    HomeAgentSettings,
    MobileNodeSettings,
)
from .config import HomeAgentConfig, MobileNodeConfig
from .inifile import ConfigError, parse_address
from .io.rxqueue import InputQueue
from .logthrottle import LogThrottle
from .leaving import deregister
from .logging import logger
from .interfaces import (
    IAnycastJoin,
    ICounterSource,
    IControllable,
    IPeerListener,
    IRouterAdvertisementListener,
    ISequencePersistence,
    ISnapshot,
    IStartStop,
)
from .protocol import HomeAgentAdapter, MobileNodeAdapter
from .control.jsonvalue import jsonable
from .security import keyring as _keyring
from .security.keyring import (  # importable from here as before (__all__)
    KERNEL_ESP_MODES,
    NodeKeyring,
    node_group,
    node_secrets,
    rate_limiter,
    security_policy,
)
from .security.policy import SecurityPolicy
from .security.sadb import SecurityAssociationDatabase
from .stallprobe import StallProbe
from .statedir import ensure_directory, unix_socket_path
from .transports import anycast_membership, build_transport
from .wire.addresses import address_text

if TYPE_CHECKING:
    from .backends.common import Ownership
    from .backends.netlink_mobile import KernelMobileTunnel
    from .backends.tun import MobileTunnel
    from .security.seqstore import SequenceStore

log = logger("haha.service")

#: The wall clock, read only for what orders runs across restarts: the boot epoch and where an
#: SA without a recorded sequence number starts (``docs/operations.md``). Tests replace it.
wall_clock = time.time

AnyConfig = Union[HomeAgentConfig, MobileNodeConfig]


# -- settings and keys --------------------------------------------------------------------------


def home_agent_settings(config: HomeAgentConfig) -> HomeAgentSettings:
    """The core's settings of a home agent configuration (``config.settings``)."""
    return config.settings


def mobile_node_settings(config: MobileNodeConfig) -> MobileNodeSettings:
    """The core's settings of a mobile node configuration (``config.settings``)."""
    return config.settings


def kernel_esp(config: HomeAgentConfig, transport: Any, reactor: Any) -> tuple[Any, Any]:
    """:func:`haha.security.keyring.kernel_esp` on this module's :data:`wall_clock`."""
    return _keyring.kernel_esp(config, transport, reactor, wall_clock)


def home_agent_sadb(config: HomeAgentConfig) -> SecurityAssociationDatabase | None:
    """:func:`haha.security.keyring.home_agent_sadb` on this module's :data:`wall_clock`."""
    return _keyring.home_agent_sadb(config, wall_clock)


# -- transport and kernel state -----------------------------------------------------------------


def _join_anycast(config: HomeAgentConfig, transport: Any) -> tuple[IPv6Address, str] | None:
    """Join :func:`anycast_membership` through ``transport`` when it can (the raw transport);
    a refusal is a start-up failure with a sentence that says what to fix."""
    if not IAnycastJoin.providedBy(transport):
        return None
    address, interface = anycast_membership(config)
    try:
        transport.join_anycast(address, interface)
    except OSError as e:
        raise OSError(e.errno, (
            f"cannot join the Home-Agents anycast address {address} of {config.home_prefix} on "
            f"{interface} (needed for DHAAD, RFC 6275 10.5): {e.strerror or e}; the interface "
            f"needs IPv6 forwarding enabled or an address in {config.home_prefix}")) from None
    return address, interface


def kernel_state_path(config: HomeAgentConfig) -> str | None:
    """Where a home agent keeps the record of what it installed in the kernel
    (:class:`haha.backends.common.StateFile`): beside the ESP sequence file, with the extension
    ``.state`` (``ha1.seq`` -> ``ha1.state``); in lab mode, without a sequence file, beside the
    configuration file. None when neither is known."""
    base = config.security.sequence_file or getattr(config, "path", None)
    if not base:
        return None
    return os.path.splitext(base)[0] + ".state"


def backend_ownership(config: HomeAgentConfig) -> Ownership:
    """The :class:`haha.backends.common.Ownership` of a home agent: what a run of this daemon
    may leave in the kernel (proxy entries on the home interface for its home prefix, the
    prefix's route, tunnels from its addresses) and its state file (docs/io.md, "State left
    behind")."""
    from .backends.common import Ownership

    return Ownership(config.home_prefix, config.home_interface,
                     frozenset({config.address, config.haha_address}), kernel_state_path(config))


def backend_context(config: HomeAgentConfig, reactor: Any, transport: Any) -> Any:
    """The :class:`haha.backends.context.BackendContext` a home agent's backend is built from:
    its ``[backend:NAME]`` section, the reactor, the daemon's transport, its
    :func:`backend_ownership`, the whole configuration and a logger carrying its address."""
    from .backends.context import BackendContext

    return BackendContext(config.backend.options, reactor, transport=transport,
                          ownership=backend_ownership(config), config=config,
                          log=logger(f"haha.backends.{config.backend.name}", config.address))


def _start_services(parent: Any, config: AnyConfig, target: Any, labels: dict[str, str],
                    gauges: Callable[[], Any]) -> None:
    """The control socket and metrics endpoint (when configured) as child services; the
    metrics (``parent.metrics``, their own registry) and the adapter's log carry the daemon's
    identity, ``labels["address"]``."""
    parent.log = logger("haha.service", labels["address"])
    target.adapter.log = logger(f"haha.{target.adapter.role}", labels["address"])
    parent.metrics = ServiceMetrics(target.counters, gauges, labels).attach(target.adapter)
    if config.control.socket:
        _runtime_directory(config)
        factory: Any = ControlFactory(target)  # an IProtocolFactory (zope, unseen by mypy)
        strports.service(config.control.socket, factory).setServiceParent(parent)
    if config.control.metrics:
        strports.service(config.control.metrics, metrics_site(parent.metrics)).setServiceParent(
            parent)


def _runtime_directory(config: AnyConfig) -> None:
    """The control socket's directory, made (0750) when missing (haha.statedir)."""
    assert config.control.socket is not None
    path = unix_socket_path(config.control.socket)
    directory = os.path.dirname(path) if path else None
    if directory:
        try:
            ensure_directory(directory)
        except OSError as e:
            raise ConfigError(f"cannot create the directory {directory} for the control socket: "
                              f"{e.strerror}", config.path, "control", "socket") from None


def _warn_if_insecure(policy: SecurityPolicy) -> None:
    """Lab mode (no ESP) is logged loudly, three times, at every start."""
    if policy.warning:
        for _ in range(3):
            log.critical("{warning}", warning=policy.warning)


# -- home agent ---------------------------------------------------------------------------------


def _measure_switch_ticks(machine: HomeAgent, adapter: HomeAgentAdapter,
                          timer: Callable[[], float] = time.perf_counter) -> None:
    """Time each firing of the adapter's timer that sent switch requests (the machine's tick,
    the nodes' SAs, sealing, sending: all of it, in wall-clock time) and tell the machine's
    :class:`~haha.core.switching.SwitchRequests` (``measured``), which sizes its next ticks to
    a time budget instead of a fixed count. The core has no clock; this is its measurement."""
    fire = adapter._fire
    switching = machine.switching
    counters = machine.counters

    def timed() -> None:
        before = counters["switch-sent"]
        start = timer()
        fire()
        sent = counters["switch-sent"] - before
        if sent > 0:
            switching.measured(sent, timer() - start)

    adapter._fire = timed  # type: ignore[method-assign]


def _prioritise_take_over(machine: HomeAgent, transport: Any, adapter: HomeAgentAdapter
                          ) -> None:
    """Schedule a take-over before node traffic: while ``machine`` has urgent work (a
    take-over in slices: :meth:`HomeAgent.urgent`) the transport's
    input queue gives node traffic only short slices between the machine's own (peers still
    first); a switch request is not repeated while its node's answer waits in that queue;
    and once a node's answer is accepted, its copies still arriving (retransmissions sent
    before our acknowledgement reached it) are dropped unread for a few seconds
    (``InputQueue.answered``). A transport without an input queue (kernel ESP's, an
    embedder's) is left as it is."""
    queue = getattr(transport, "input", None)
    if not isinstance(queue, InputQueue):
        return
    queue.urgent = lambda: machine.urgent(adapter.now())
    queue.hold_while_urgent = True
    holds = queue.holds
    machine.switching.waiting = lambda care_of: holds(care_of.packed)
    answered = queue.answered
    machine.switching.on_answered = lambda care_of: answered(care_of.packed)


@implementer(IControllable, IPeerListener)
class HomeAgentService(MultiService):
    """A home agent as a Twisted service (module docstring)."""

    log: Logger  # set by _start_services, with the daemon's address
    metrics: ServiceMetrics

    def __init__(self, config: HomeAgentConfig, machine: HomeAgent, adapter: HomeAgentAdapter,
                 backend: Any, discovery: Any, transport: Any, reactor: Any,
                 sadb: Any = None) -> None:
        # backend, discovery, transport: what plugins and embedders provide (IForwardingBackend,
        # IPeerDiscovery, IMobilityTransport, checked with providedBy where optional);
        # sadb: ISecurityAssociations (user-space or kernel ESP), None in lab mode.
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
        self.started_at: Optional[float] = None
        self._drained: Optional[defer.Deferred[None]] = None
        self._log_throttle = LogThrottle()
        # (address, interface) joined at start, when the transport can
        self.anycast: Optional[tuple[IPv6Address, str]] = None
        self.advertiser: Optional[HomeLinkAdvertiser] = None
        if config.router_advertisements and config.home_interface and \
                config.transport.kind == "raw":
            self.advertiser = HomeLinkAdvertiser(
                reactor, transport, machine, config.home_interface,
                interval=min(config.hello_interval, config.lifetime / 3),
                lifetime=config.lifetime, prefix=config.home_prefix,
                router_lifetime=config.router_lifetime)
        _measure_switch_ticks(machine, adapter)
        _prioritise_take_over(machine, transport, adapter)
        # Started with the other children at the end of startService (haha.stallprobe).
        self.stall_probe = StallProbe(reactor)
        self.stall_probe.setServiceParent(self)
        probe = self.stall_probe
        # Freed memory back to the system once a burst is over (haha.alloctrim).
        self.allocator_trim = alloctrim.attach(self, transport, config.memory)
        _start_services(self, config, self,
                        {"role": "home-agent", "address": str(config.address)},
                        lambda: home_agent_gauges(machine) + probe.gauges())

    @classmethod
    @startup.translated
    def build(cls, config: HomeAgentConfig, reactor: Any = None, backend: Any = None,
              discovery: Any = None, transport: Any = None, sadb: Any = None,
              rng: Optional[random.Random] = None,
              backend_factory: Optional[Callable[[Any], Any]] = None) -> HomeAgentService:
        """Everything from ``config``; each keyword replaces what the configuration would
        build (``sadb`` is ignored in lab mode). ``backend`` is used as it is;
        ``backend_factory`` (a callable taking a :class:`haha.backends.context.BackendContext`,
        as a plugin's factory does) replaces the configured plugin and is given the daemon's
        transport and ownership (:func:`backend_context`). Raises
        :class:`haha.errors.StartupError` when this host cannot run it (:mod:`haha.startup`)."""
        if reactor is None:
            from twisted.internet import reactor
        startup.check_home_agent(config, transport=transport is None, backend=backend is None)
        from .plugins import build_backend, build_discovery

        settings = home_agent_settings(config)
        policy = security_policy(config)
        if sadb is None:
            sadb = _keyring.home_agent_sadb(config, wall_clock)
        if transport is None:
            transport = build_transport(config, reactor, config.home_interface)
        if config.security.mode in KERNEL_ESP_MODES:
            sadb, transport = kernel_esp(config, transport, reactor)
        if backend is None:
            backend = build_backend(config.backend, backend_context(config, reactor, transport),
                                    factory=backend_factory)
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
    def startService(self) -> None:  # noqa: N802 - Twisted hook
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
        self.adapter.call(self.machine.start, self.reactor.seconds())
        if self.advertiser is not None:
            self.advertiser.start()
        self.discovery.start(self)
        self.log.info("home agent {address} started ({kind}, backend {backend}, "
                      "transport {transport})",
                      address=self.config.address, kind=self.config.configuration,
                      backend=self.config.backend.name, transport=self.config.transport.kind)
        super().startService()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[Any, Any, None]:  # noqa: N802 - Twisted hook
        # The control socket and metrics (child services) stay up while the node drains.
        if self.config.drain_on_stop and self.machine.cache.primary_count and \
                self.machine.serving:
            yield self._drain(self.config.drain_timeout)
        notices.report_left_behind(self.machine)
        self.adapter.call(self.machine.stop, self.reactor.seconds())
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

    def _drain(self, timeout: float) -> defer.Deferred[None]:
        """Ask every mobile node to switch away; fire when none is left or at ``timeout``."""
        self._drained = self.adapter.when_drained()  # fired on the core's DrainComplete
        self.adapter.call(self.machine.drain, self.reactor.seconds())
        if not self.machine.cache.primary_count and not self._drained.called:
            self._drained.callback(None)
        # At ``timeout`` the wait is cancelled and the stop goes on with what is left.
        return self._drained.addTimeout(timeout, self.reactor,
                                        onTimeoutCancel=lambda result, timeout: None)

    # -- IPeerListener ----------------------------------------------------------------------

    def peer_appeared(self, address: IPv6Address, source: str) -> None:
        if self.sadb is not None and not self.sadb.has_peer(address):
            self.adapter.counters["peer-refused.no-key"] += 1
            # Discovery is unauthenticated: one line per source per minute, the rest counted.
            held = self._log_throttle.allow(source, self.reactor.seconds())
            if held is not None:
                self.log.warn("peer {peer} from {source} has no key in [peer-keys]: ignored"
                              " ({held} more since the last such line)",
                              peer=address, source=source, held=held)
            return
        self.adapter.call(self.machine.add_peer, address, self.reactor.seconds(), source)

    def peer_disappeared(self, address: IPv6Address, source: str) -> None:
        self.adapter.call(self.machine.remove_peer, address, self.reactor.seconds(), source)

    # -- IControllable ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        m = self.machine
        return jsonable({
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
            "reactor": self.stall_probe.report(),
        })

    def bindings(self) -> list[dict[str, Any]]:
        return list(self.binding_rows())

    def binding_rows(self) -> Iterator[dict[str, Any]]:
        """The rows of :meth:`bindings`, converted as they are taken (the control socket
        streams them in slices: haha.control.server)."""
        machine = self.machine
        identity = machine.identity
        ours = address_text(identity)
        # Only the keys are sorted in the first call (integers: a few ms for 100,000; sorting
        # the entries by a key function took 25 ms, and a snapshot of views 150, stalls the
        # daemon's probe saw); each row is made, as text, when its slice is written. An entry
        # changed meanwhile is shown as it is then, one removed is left out.
        for b in machine.cache.in_address_order():
            primary = ours if b.primary is None else address_text(b.primary)
            yield {
                "home_address": address_text(b.home_address),
                "care_of": address_text(b.care_of),
                "sequence": b.sequence, "flags": b.flags,
                "prefixes": [str(p) for p in b.prefixes], "primary": primary,
                "copy": b.primary is not None and primary != ours,
            }

    def peers(self) -> list[dict[str, Any]]:
        out = []
        for address, preference in self.machine.ranked():
            if address == self.machine.identity:
                continue
            e = self.machine.peers.get(address)
            out.append(jsonable({"address": address, "preference": preference,
                              "prefixes": list(e.prefixes) if e is not None else []}))
        return out

    def counters(self) -> dict[str, int]:
        c = dict(self.adapter.counters)
        for k, v in self.machine.counters.items():
            c["core." + k] = v
        for source in (self.transport, self.sadb, self.adapter.policy, self.adapter.limiter,
                       self.discovery, _kept_sequences(self.sadb)):
            if not ICounterSource.providedBy(source):
                continue
            for k, v in source.counters.items():
                c[f"{type(source).__name__.lower()}.{k}"] = v
        c["log-lines-suppressed"] = self._log_throttle.suppressed
        c["bindings_now"] = len(self.machine.cache)
        c["primaries_now"] = self.machine.cache.primary_count
        c["peers_now"] = sum(1 for a, _ in self.machine.ranked() if a != self.machine.identity)
        c.update(self.stall_probe.counters())
        c.update(self.allocator_trim.counters())
        return c

    def command(self, name: str, arguments: dict[str, str]) -> Any:
        now = self.reactor.seconds()
        try:
            if name == "switch":
                hoa = parse_address(arguments["home-address"])
                named = arguments.get("target")
                target = parse_address(named) if named else None
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
                return jsonable(self.backend.snapshot())
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

    log: Logger  # set by _start_services, with the daemon's address
    metrics: ServiceMetrics

    def __init__(self, config: MobileNodeConfig, machine: MobileNode, adapter: MobileNodeAdapter,
                 tunnel: Any, transport: Any, reactor: Any) -> None:
        # tunnel: an IMobileTunnel (None with the null backend); transport: IMobilityTransport
        super().__init__()
        self.setName(f"haha-mn {config.home_address}")
        self.config = config
        self.machine = machine
        self.adapter = adapter
        self.tunnel = tunnel
        self.transport = transport
        self.reactor = reactor
        self.started_at: Optional[float] = None
        # with the raw transport the care-of address must be ours (haha.notices)
        self.care_of_watch = notices.CareOfWatch(reactor, machine, interface=config.interface) \
            if config.transport.kind == "raw" else None
        self.leaving = False
        _start_services(self, config, self,
                        {"role": "mobile-node", "address": str(config.home_address)},
                        lambda: mobile_node_gauges(machine))

    @classmethod
    @startup.translated
    def build(cls, config: MobileNodeConfig, reactor: Any = None, tunnel: Any = None,
              transport: Any = None, sadb: Any = None, rng: Optional[random.Random] = None,
              keyring: Optional[NodeKeyring] = None) -> MobileNodeService:
        if reactor is None:
            from twisted.internet import reactor
        startup.check_mobile_node(config, transport=transport is None, tunnel=tunnel is None)
        settings = mobile_node_settings(config)
        policy = security_policy(config)
        if sadb is None:
            sadb, keyring = _keyring.mobile_node_security(config, wall_clock)
        if transport is None:
            transport = build_transport(config, reactor, config.interface)
        if tunnel is None:
            tunnel = _mobile_tunnel(config, reactor, transport)
        machine = MobileNode(settings, rng or random.Random())
        limiter = rate_limiter(config)
        adapter = MobileNodeAdapter(machine, transport, reactor, config.numbers, policy, sadb,
                                    limiter, tunnel, keyring, interface=config.interface)
        return cls(config, machine, adapter, tunnel, transport, reactor)

    @startup.translated
    def startService(self) -> None:  # noqa: N802 - Twisted hook
        _warn_if_insecure(self.adapter.policy)
        self.adapter.start_transport()
        if IStartStop.providedBy(self.tunnel):
            self.tunnel.start()
        self.adapter.running = True
        self.leaving = False
        self.started_at = self.reactor.seconds()
        self.adapter.call(self.machine.start, self.reactor.seconds(),
                          care_of=self.config.care_of_address)
        if self.care_of_watch is not None:
            self.care_of_watch.start()
        self.log.info("mobile {kind} {hoa} started at {coa}",
                      kind="router" if self.config.mobile_router else "node",
                      hoa=self.config.home_address, coa=self.config.care_of_address)
        super().startService()

    @defer.inlineCallbacks
    def stopService(self) -> Generator[Any, Any, None]:  # noqa: N802 - Twisted hook
        yield super().stopService()
        if self.care_of_watch is not None:
            self.care_of_watch.stop()
        # Deregister first (bounded wait: haha.leaving), then forget everything.
        self.leaving = True
        acknowledged = yield deregister(self.adapter, self.machine, self.reactor)
        if not acknowledged:
            self.log.warn("stopping without an acknowledged deregistration from {ha}",
                          ha=self.machine.target)
        self.adapter.call(self.machine.stop, self.reactor.seconds())
        self.adapter.running = False
        self.adapter.stop_timer()
        if self.adapter.sadb is not None:
            self.adapter.sadb.flush()
        if IStartStop.providedBy(self.tunnel):
            yield defer.maybeDeferred(self.tunnel.stop)
        yield defer.maybeDeferred(self.transport.stop)

    def move(self, care_of: IPv6Address) -> None:
        """Movement detection found ``care_of`` (embedders call this)."""
        self.adapter.call(self.machine.move, care_of, self.reactor.seconds())
        if self.care_of_watch is not None and self.running:
            self.care_of_watch.check()

    # -- IControllable ----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        m = self.machine
        return jsonable({
            "role": "mobile-router" if self.config.mobile_router else "mobile-node",
            "home_address": m.home_address,
            "care_of": m.care_of,
            "state": m.state,
            "home_agent": m.home_agent,
            "known_home_agents": list(m.known_home_agents),
            "lifetime": m.lifetime,
            "expires_in": None if m.expires is None else m.expires - self.reactor.seconds(),
        })

    def bindings(self) -> list[dict[str, Any]]:
        m = self.machine
        if m.home_agent is None:
            return []
        return [jsonable({"home_address": m.home_address, "care_of": m.care_of,
                       "home_agent": m.home_agent, "sequence": m.sequence,
                       "prefixes": list(self.config.prefixes)})]

    def peers(self) -> list[str]:
        return jsonable(list(self.machine.known_home_agents))

    def counters(self) -> dict[str, int]:
        c = dict(self.adapter.counters)
        for k, v in self.machine.counters.items():
            c["core." + k] = v
        c["registered_now"] = int(self.machine.home_agent is not None)
        store = _kept_sequences(self.adapter.sadb)
        if ICounterSource.providedBy(store):
            for k, v in store.counters.items():
                c[f"sequencestore.{k}"] = v
        return c

    def command(self, name: str, arguments: dict[str, str]) -> Any:
        if name == "move":
            try:
                coa = parse_address(arguments["care-of"])
            except KeyError:
                raise ValueError("move needs care-of=ADDRESS") from None
            self.move(coa)
            return {"care_of": str(coa)}
        if name == "home":
            self.adapter.call(self.machine.return_home, self.reactor.seconds())
            return {"state": self.machine.state}
        if name == "tunnel":  # None: no tunnel (backend = null), or one that cannot say
            return jsonable(self.tunnel.snapshot()) if ISnapshot.providedBy(self.tunnel) \
                else None
        raise ValueError(f"unknown command {name!r}; known: move, home, tunnel")


def _kept_sequences(sadb: Any) -> Optional[SequenceStore]:
    """The ESP sequence store of ``sadb`` when it keeps one, else None."""
    return sadb.sequence_store if ISequencePersistence.providedBy(sadb) else None


def _mobile_tunnel(config: MobileNodeConfig, reactor: Any,
                   transport: Any) -> Optional[MobileTunnel | KernelMobileTunnel]:
    """The mobile node's tunnel from its ``[backend]``: ``tun`` (user space, any kernel),
    ``netlink`` (the kernel's ip6tnl), None with ``null``."""
    if config.backend.name == "null":
        config.backend.options.check_unused()
        return None
    if config.backend.name not in ("tun", "netlink"):
        raise config.backend.error(
            f"a mobile node's tunnel is 'tun', 'netlink' or 'null', not {config.backend.name!r}")
    from .io.raw import RawTransport

    options = config.backend.options
    if config.backend.name == "netlink":
        from .backends import netlink_mobile

        kw = netlink_mobile.options_of(options)
    else:
        from .backends import tun

        kw = tun.options_of(options)
    home = options.get_str("default-source", "home", choices=("home", "care-of")) == "home"
    mark = options.get_int("mark", 0x4D4E, minimum=1, maximum=0xFFFFFFFF)
    options.check_unused()
    steer = None
    if home and isinstance(transport, RawTransport):
        # The transport's own packets (signalling, the tunnel's outer packets) carry the mark
        # and keep the main table; everything else unmarked is steered into the tunnel.
        transport.mark = steer = mark
    if config.backend.name == "netlink":
        return netlink_mobile.KernelMobileTunnel(
            transport, router_flag=config.mobile_router, steer_mark=steer,
            log=logger("haha.backends.netlink_mobile", config.home_address), **kw)
    return tun.MobileTunnel(reactor, transport, router_flag=config.mobile_router,
                            steer_mark=steer, **kw)


__all__ = ["HomeAgentService", "KERNEL_ESP_MODES", "MobileNodeService", "NodeKeyring", "anycast_membership",
           "backend_ownership", "home_agent_sadb", "home_agent_settings", "kernel_esp", "kernel_state_path",
           "build_transport", "mobile_node_settings", "node_secrets"]
