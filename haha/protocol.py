"""The Twisted adapter: transport bytes into the sans-IO endpoint, its output onto the world.

The whole packet pipeline (parse, admission, ESP, decode, policy, the core machine, encode,
protect, answer budgets) is :mod:`haha.endpoint`, which the in-memory network of
:mod:`haha.testing` runs too. :class:`Adapter` is the glue around one endpoint: each packet the
transport delivers goes to :meth:`~haha.endpoint.Endpoint.receive` with the injected
``IReactorTime``'s time; what the endpoint queues is carried out in order (packets to the
transport, forwarding effects to the backend or tunnel, events to the log and the observers,
IPv6-in-IPv6 packets to the decapsulator, Router Advertisements to discovery); and exactly one
timer is kept armed for the machine's next deadline (after packets, re-armed once the packets
delivered together are handled). The service calls the machine through
:meth:`Adapter.call` (or the endpoint's named entry points through it).

Nothing that arrives can stop it: the endpoint counts and drops what it refuses, contains a
failure inside the core (logged here with its traceback), and a backend or transport failure is
counted (``effect-failed``) and logged. :class:`HomeAgentAdapter` and
:class:`MobileNodeAdapter` add what differs: the home agent's backend, discovery and Router
Advertisements; the mobile node's tunnel.
"""

from ipaddress import IPv6Address
from typing import Any, Callable, Generic, List, Optional, TypeVar

from twisted.internet import defer
from twisted.logger import LogLevel
from twisted.python.failure import Failure

from .backends.addresses import hold_address
from .interfaces import IDecapsulator, IHomeAnnouncer
from .core.effects import (
    AdvertisePrefix,
    AnnounceHome,
    DrainComplete,
    LeaveComplete,
    Event,
    HoldAddress,
    InstallRoute,
    ProxyNd,
    RemoveRoute,
    TunnelDown,
    TunnelUp,
)
from .core.events import INFO_EVENTS
from .endpoint import (
    Advertised,
    Datagram,
    Endpoint,
    Failed,
    HomeAgentEndpoint,
    Tunnelled,
)
from .logging import enabled, logger
from .nodeendpoint import NodeEndpoint
from .logsummary import PER_BINDING_EVENTS, BurstSummary
from .wire.addresses import address_text

#: Events logged at info level; the rest at debug (they are still counted).
_INFO_EVENTS = INFO_EVENTS


T = TypeVar("T")


class _Waiters(Generic[T]):
    """Deferreds waiting for the next effect of one kind (a drain over, a leave over)."""

    def __init__(self) -> None:
        self._waiting: List[defer.Deferred[T]] = []

    def wait(self) -> "defer.Deferred[T]":
        d: defer.Deferred[T] = defer.Deferred()
        self._waiting.append(d)
        return d

    def fire(self, value: T) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if not d.called:  # a waiter that timed out already
                d.callback(value)


def _delegate(name: str) -> Any:
    """An attribute of the adapter that is its endpoint's."""
    return property(lambda self: getattr(self.endpoint, name),
                    lambda self, value: setattr(self.endpoint, name, value),
                    doc=f"The endpoint's ``{name}``.")


class Adapter:
    """What the home agent and mobile node adapters share (module docstring).

    ``machine`` is a :class:`haha.core.homeagent.HomeAgent` or
    :class:`haha.core.mobilenode.MobileNode`; ``transport`` an ``IMobilityTransport``; ``clock``
    an ``IReactorTime``; ``sadb``, ``policy`` and ``limiter`` go to the endpoint
    (:class:`haha.endpoint.Endpoint`), which :attr:`endpoint` holds.
    """

    role: Optional[str] = None

    machine = _delegate("machine")
    profile = _delegate("profile")
    policy = _delegate("policy")
    sadb = _delegate("sadb")
    limiter = _delegate("limiter")
    error_budget = _delegate("error_budget")
    message_taps = _delegate("message_taps")
    #: A :class:`haha.security.takeover.TakeoverKeys` with address take-over and ESP.
    takeover_keys = _delegate("takeover_keys")

    def __init__(self, machine: Any, transport: Any, clock: Any, profile: Any, policy: Any,
                 sadb: Any = None, limiter: Any = None, log: Any = None) -> None:
        self.endpoint = self._endpoint(machine, profile, policy, sadb, limiter)
        self.transport = transport
        self.clock = clock
        self.log = log or logger(f"haha.{self.role}")
        self.endpoint.on_drop = self._log_drop
        #: The endpoint's counters, and the adapter's own (the same Counter).
        self.counters = self.endpoint.counters
        self.observers: List[Callable[[Any], None]] = []
        self._call: Any = None
        self._deadline: Optional[float] = None
        self._rearm_call: Any = None
        self.running = False
        #: Per-binding info lines beyond a few a second go to debug, summarised once a second
        #: (:mod:`haha.logsummary`).
        self.log_summary = BurstSummary()
        self._summary_call: Any = None

    def _endpoint(self, machine: Any, profile: Any, policy: Any, sadb: Any,
                  limiter: Any) -> Endpoint:
        return Endpoint(machine, profile, policy, sadb, limiter)

    @property
    def log(self) -> Any:
        """The Twisted logger (the endpoint's too)."""
        return self._log

    @log.setter
    def log(self, log: Any) -> None:
        self._log = log
        endpoint = self.__dict__.get("endpoint")
        if endpoint is not None:
            endpoint.log = log

    # -- life cycle -------------------------------------------------------------------------

    def now(self) -> float:
        """The clock's time."""
        return self.clock.seconds()

    def start_transport(self) -> None:
        """Start the transport, delivering to :meth:`packet_received`."""
        self.transport.start(self.packet_received)

    def call(self, method: Callable[..., Any], *args: Any, **kw: Any) -> Optional[list]:
        """Run a machine entry point (``method(*args, **kw)``) through the endpoint and carry
        out what it queued; returns the effects, or None when the machine failed (logged,
        not raised)."""
        effects = self.endpoint.call(self.now(), method, *args, **kw)
        self.flush()
        return effects

    def apply(self, effects: list) -> None:
        """Process ``effects`` (a list from the machine), carry them out, re-arm the timer."""
        self.endpoint.apply(effects, self.now())
        self.flush()

    def flush(self) -> None:
        """Carry out everything the endpoint queued, in order, and re-arm the timer."""
        self._carry_out()
        self._rearm()

    def _carry_out(self) -> None:
        """Carry out everything the endpoint queued, in order."""
        endpoint = self.endpoint
        items = endpoint.outbox
        if items:
            endpoint.outbox = []
        for item in items:
            try:
                kind = type(item)
                if kind is Datagram:
                    self.transport.send(item.data)
                elif kind is Event:
                    self._publish(item)  # counted by the endpoint
                elif kind is Tunnelled:
                    self.tunnelled(item.data)
                elif kind is Failed:
                    self.log.failure("the {role} machine failed in {method}",
                                     failure=Failure(item.error), role=self.role,
                                     method=item.where)
                elif kind is Advertised:
                    self.router_advertisement(item.source, item.advertisement)
                else:
                    self.duty(item)
            except Exception:  # a backend or transport bug must not stop the daemon
                self.counters["effect-failed"] += 1
                self.log.failure("carrying out {effect!r} failed", effect=item)

    def stop_timer(self) -> None:
        """Cancel the timer (the service stops it with the machine)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._deadline = None
        if self._rearm_call is not None and self._rearm_call.active():
            self._rearm_call.cancel()
        self._rearm_call = None

    def _rearm_soon(self) -> None:
        """Re-arm the timer once the packets being delivered now are all handled: one
        ``next_deadline`` per turn of the reactor (or slice of the transport) instead of one
        per packet (6.7 % of a home agent's time in a 10,000-node burst, docs/core.md)."""
        if self._rearm_call is None:
            self._rearm_call = self.clock.callLater(0, self._rearm_now)

    def _rearm_now(self) -> None:
        self._rearm_call = None
        self._rearm()

    def _rearm(self) -> None:
        """One timer for the machine's next deadline (left alone when that has not moved)."""
        if not self.running:
            self.stop_timer()
            return
        deadline = self.endpoint.next_timer()
        call = self._call
        if call is not None and call.active():
            if deadline == self._deadline:
                return
            call.cancel()
        self._call = self._deadline = None
        soon = self._rearm_call
        if soon is not None:  # re-armed now: the re-arm due after the turn has nothing to do
            if soon.active():
                soon.cancel()
            self._rearm_call = None
        if deadline is not None:
            clock = self.clock
            self._deadline = deadline
            self._call = clock.callLater(max(0.0, deadline - clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call = None
        self._deadline = None
        self.endpoint.handle_timer(self.now())
        self.flush()

    # -- inbound ----------------------------------------------------------------------------

    def _drop(self, reason: str, **fields: Any) -> None:
        """Count and drop a packet (the endpoint's drop, with its debug line)."""
        self.endpoint._drop(reason, **fields)

    def _log_drop(self, reason: str, fields: dict) -> None:
        if enabled(self._log, LogLevel.debug):
            self._log.debug("dropped a packet: {reason}", reason=reason, **fields)

    def packet_received(self, data: bytes) -> None:
        """The transport's receiver: one complete IPv6 packet."""
        endpoint = self.endpoint
        calls = endpoint.calls
        endpoint.receive(data, self.now())
        # A packet dropped before the machine queued nothing and moved no deadline. What it
        # queued goes out now; the timer is re-armed after the packets delivered with it.
        if endpoint.calls != calls or endpoint.outbox:
            self._carry_out()
            if endpoint.calls != calls:
                self._rearm_soon()

    #: What decapsulates IPv6-in-IPv6 (the home agent's backend, the node's tunnel), or None.
    decapsulator: Any = None

    def tunnelled(self, data: bytes) -> None:
        """Hand an IPv6-in-IPv6 packet to the decapsulator (counted either way)."""
        if not IDecapsulator.providedBy(self.decapsulator):
            self.counters["dropped.tunnel-without-backend"] += 1
            return
        self.counters["tunnelled-in"] += 1
        try:
            self.decapsulator.decapsulate(data)
        except Exception:
            self.counters["tunnel-failed"] += 1
            self.log.failure("decapsulation failed")

    def router_advertisement(self, source: Any, advertisement: Any) -> None:
        """A Router Advertisement passed the policy (home agents feed discovery with it)."""

    # -- outbound ---------------------------------------------------------------------------

    def send_mh(self, effect: Any) -> None:
        """Encode, protect and send one ``Send`` now (the endpoint's path)."""
        self.apply([effect])

    def send_icmp(self, effect: Any) -> None:
        """Encode and send one ``SendIcmp`` now (the endpoint's path)."""
        self.apply([effect])

    def duty(self, effect: Any) -> None:
        """Carry out a non-packet effect (each role knows its own)."""
        raise TypeError(f"{self.role} cannot carry out {effect!r}")

    def event(self, event: Any) -> None:
        """Count ``event``, log it (info or debug by name) and tell the observers (what the
        adapter does with each event the endpoint queues; the endpoint counts those)."""
        self.counters["event." + event.name] += 1
        self._publish(event)

    def _publish(self, event: Any) -> None:
        name = event.name
        level = LogLevel.info if name in _INFO_EVENTS else LogLevel.debug
        if name in PER_BINDING_EVENTS and level is LogLevel.info \
                and not self.log_summary.admit(name, self.now()):
            level = LogLevel.debug
            if self._summary_call is None:
                self._summary_call = self.clock.callLater(self.log_summary.window,
                                                          self._summarise)
        if enabled(self._log, level):
            # Fields become strings (JSON observers) and the format is built only for events
            # the level shows: below it an event costs a counter and this check.
            fields = {k: (v if isinstance(v, (int, float, str, bool, type(None)))
                          else address_text(v) if type(v) is IPv6Address else str(v))
                      for k, v in event.fields.items()}
            self._log.emit(level, "{event} " + " ".join(f"{k}={{{k}}}" for k in fields),
                           event=event.name, **fields)
        for observer in list(self.observers):
            observer(event)


    def _summarise(self) -> None:
        """One info line per event name held back from info in the last window."""
        self._summary_call = None
        for name, count in self.log_summary.take():
            self._log.info("{event}: {count} more in the last {window} s (each logged at "
                           "debug level)", event=name, count=count,
                           window=self.log_summary.window, summarised=True)


class HomeAgentAdapter(Adapter):
    """A :class:`haha.core.homeagent.HomeAgent` on a transport, with a forwarding backend and
    (optionally) a discovery strategy that wants Router Advertisements. ``node_group`` (a
    :class:`haha.security.nodegroup.NodeGroup` deriving mobile nodes' SAs on first contact, or
    None) goes to the :class:`haha.endpoint.HomeAgentEndpoint`."""

    role = "home-agent"

    node_group = _delegate("node_group")

    def __init__(self, machine: Any, transport: Any, clock: Any, profile: Any, policy: Any,
                 sadb: Any = None, limiter: Any = None, backend: Any = None,
                 home_interface: Optional[str] = None, ra_listener: Any = None,
                 log: Any = None, node_group: Any = None) -> None:
        self._node_group = node_group
        super().__init__(machine, transport, clock, profile, policy, sadb, limiter, log)
        self.backend = backend
        self.home_interface = home_interface
        self.ra_listener = ra_listener
        self._drained: _Waiters[None] = _Waiters()

    def when_drained(self) -> "defer.Deferred[None]":
        """A Deferred that fires the next time the machine says its drain is complete
        (:class:`~haha.core.effects.DrainComplete`)."""
        return self._drained.wait()

    def _endpoint(self, machine: Any, profile: Any, policy: Any, sadb: Any,
                  limiter: Any) -> Endpoint:
        return HomeAgentEndpoint(machine, profile, policy, sadb, limiter, self._node_group)

    def router_advertisement(self, source: Any, advertisement: Any) -> None:
        if self.ra_listener is not None:
            self.ra_listener.router_advertisement(source, advertisement)

    @property  # type: ignore[override]
    def decapsulator(self) -> Any:
        return self.backend

    def duty(self, effect: Any) -> None:
        kind = type(effect)
        b = self.backend
        if kind is InstallRoute:
            b.install(effect.route)
        elif kind is RemoveRoute:
            b.remove(effect.home_address)
        elif kind is ProxyNd:
            if effect.on:
                b.proxy_nd_start(effect.address, self.home_interface)
            else:
                b.proxy_nd_stop(effect.address, self.home_interface)
        elif kind is AdvertisePrefix:
            if effect.on:
                b.advertise_prefix(effect.prefix)
            else:
                b.withdraw_prefix(effect.prefix)
        elif kind is HoldAddress:
            # The ESP side (TakeoverKeys) is the endpoint's; this is the backend's.
            hold_address(b, effect, self.home_interface, self.counters)
        elif kind is DrainComplete:
            self._drained.fire(None)
        else:
            super().duty(effect)
        self.counters["duty." + kind.__name__] += 1


class MobileNodeAdapter(Adapter):
    """A :class:`haha.core.mobilenode.MobileNode` on a transport with its side of the tunnel.

    ``keyring`` (optional, a :class:`haha.service.NodeKeyring`) goes to the
    :class:`haha.nodeendpoint.NodeEndpoint` (a :class:`haha.endpoint.MobileNodeEndpoint` with a
    short path for a home agent's protected answers): it derives the SAs of a home agent the
    node has not talked to yet, the first time one is needed.
    """

    role = "mobile-node"

    keyring = _delegate("keyring")

    def __init__(self, machine: Any, transport: Any, clock: Any, profile: Any, policy: Any,
                 sadb: Any = None, limiter: Any = None, tunnel: Any = None,
                 keyring: Any = None, log: Any = None,
                 interface: Optional[str] = None) -> None:
        self._keyring = keyring
        super().__init__(machine, transport, clock, profile, policy, sadb, limiter, log)
        self.tunnel = tunnel
        #: The interface on the home link the home address is announced on (AnnounceHome).
        self.interface = interface
        self._left: _Waiters[bool] = _Waiters()

    def packet_received(self, data: bytes) -> None:
        """The transport's receiver: one complete IPv6 packet. A node receives one packet at a
        time (an answer, a switch request), not the bursts a home agent's socket delivers,
        so the timer is re-armed at once: a call for after the turn would cost more than the
        re-arming it saves (a second timer per packet in a load generator's thousands of
        nodes)."""
        endpoint = self.endpoint
        calls = endpoint.calls
        endpoint.receive(data, self.clock.seconds())
        if endpoint.calls != calls:
            self._carry_out()
            self._rearm()
        elif endpoint.outbox:
            self._carry_out()

    def _publish(self, event: Any) -> None:
        """As :meth:`Adapter._publish`; an event the level discards and that is not summarised
        goes straight to the observers (one look-up, no log record)."""
        name = event.name
        if name in PER_BINDING_EVENTS \
                or enabled(self._log, LogLevel.info if name in _INFO_EVENTS else LogLevel.debug):
            return super()._publish(event)
        observers = self.observers
        if observers:
            for observer in tuple(observers):
                observer(event)

    def when_left(self) -> "defer.Deferred[bool]":
        """A Deferred that fires with the ``acknowledged`` of the machine's next
        :class:`~haha.core.effects.LeaveComplete` (a stopping node's deregistration is over)."""
        return self._left.wait()

    def _endpoint(self, machine: Any, profile: Any, policy: Any, sadb: Any,
                  limiter: Any) -> Endpoint:
        # The node's pipeline with its short path for a home agent's protected answers
        # (haha.nodeendpoint: the same steps for those, the general ones for the rest).
        return NodeEndpoint(machine, profile, policy, sadb, limiter, self._keyring)

    @property  # type: ignore[override]
    def decapsulator(self) -> Any:
        return self.tunnel

    def duty(self, effect: Any) -> None:
        kind = type(effect)
        if kind is TunnelUp:
            if self.tunnel is not None:
                # Every home agent of the node may tunnel to it (draft 3.2, forwarding from
                # copies): the tunnel accepts them all, and sends to the registered one.
                self.tunnel.set_endpoint(effect.home_address, effect.care_of, effect.home_agent,
                                         prefixes=effect.prefixes,
                                         home_agents=tuple(self.machine.known_home_agents))
        elif kind is TunnelDown:
            if self.tunnel is not None:
                self.tunnel.clear()
        elif kind is AnnounceHome:
            self.announce_home(effect)
        elif kind is LeaveComplete:
            self._left.fire(effect.acknowledged)
        else:
            super().duty(effect)
        self.counters["duty." + kind.__name__] += 1


    def announce_home(self, effect: AnnounceHome) -> None:
        """Back on the home link: announce the home address with our own link-layer address
        (RFC 6275 11.5.4) on ``interface``, through the tunnel when it can."""
        if not IHomeAnnouncer.providedBy(self.tunnel):
            return
        announce = self.tunnel.announce_home
        if not self.interface:
            self.counters["home-na-no-interface"] += 1
            self.log.warn("home: no interface configured to announce {hoa} on",
                          hoa=effect.home_address)
            return
        if announce(effect.home_address, self.interface) is not None:
            self.counters["home-na-sent"] += 1
            self.log.info("home: announced {hoa} on {interface} (deregistered: {dereg})",
                          hoa=effect.home_address, interface=self.interface,
                          dereg=effect.deregistered)


__all__ = ["Adapter", "HomeAgentAdapter", "MobileNodeAdapter"]
