"""The Twisted adapter: packets in, the sans-IO machines in the middle, effects out.

:class:`Adapter` owns no protocol logic. For each inbound packet it parses the IPv6 header
chain, admits it (:mod:`haha.security.admission`: ESP under a known SA is authenticated first
and charged to its peer, the rest to the unauthenticated budget), removes ESP, decodes the
Mobility Header or ICMPv6 message, asks the security policy, and hands the core an ``Inbound``
record. It carries out the effects the core returns (encode, protect, send; install and remove
forwarding; log and count events) and keeps exactly one timer armed for the core's next
deadline, on the injected ``IReactorTime``.

Nothing that arrives can stop it: malformed packets, failed authentication, policy refusals and
even a failure inside the core are counted by reason and dropped (a core failure is also logged
with its traceback). :class:`HomeAgentAdapter` and :class:`MobileNodeAdapter` add what differs:
the home agent's backend, discovery and Router Advertisements; the mobile node's tunnel and
on-demand keys.
"""

from collections import Counter

from twisted.logger import LogLevel

from .backends.addresses import hold_address
from .logging import enabled, logger

from .core.effects import (
    AdvertisePrefix,
    Event,
    HoldAddress,
    InstallRoute,
    ProxyNd,
    RemoveRoute,
    Send,
    SendIcmp,
    TunnelDown,
    TunnelUp,
    make_inbound,
)
from .core.events import INFO_EVENTS
from .icmperror import GlobalBudget, parameter_problem
from .security.errors import SecurityError
from .security.sadb import MOBILE_NODE
from .wire.errors import WireError
from .wire.icmpv6 import decode_icmpv6, encode_icmpv6
from .wire.ipv6 import ParameterProblem, build_packet, parse_packet
from .wire.mh import BindingInfoUpdate, decode_mh, encode_mh, mh_type_of
from .wire.numbers import (
    ICMP6_ROUTER_ADVERT,
    IPPROTO_ESP,
    IPPROTO_ICMPV6,
    IPPROTO_IPV6,
    IPPROTO_MH,
    IPPROTO_NONE,
)

_UNSPECIFIED = bytes(16)

#: Messages sent in answer to unauthenticated input: one global budget (security/admission.py).
_ANSWERS = frozenset({"BindingError", "DhaadReply"})

#: Events logged at info level; the rest at debug (they are still counted).
_INFO_EVENTS = INFO_EVENTS


class Adapter:
    """What the home agent and mobile node adapters share (module docstring).

    ``machine`` is a :class:`haha.core.homeagent.HomeAgent` or
    :class:`haha.core.mobilenode.MobileNode`; ``transport`` an ``IMobilityTransport``; ``clock``
    an ``IReactorTime``; ``sadb`` an ``ISecurityAssociations`` (None only with the lab policy);
    ``policy`` a :class:`haha.security.policy.SecurityPolicy`; ``limiter`` a
    :class:`haha.security.admission.Admission` (or a bare per-source
    :class:`haha.security.ratelimit.RateLimiter`) or None.
    """

    role: str | None = None
    #: A :class:`haha.security.takeover.TakeoverKeys` with address take-over and ESP.
    takeover_keys = None

    def __init__(self, machine, transport, clock, profile, policy, sadb=None, limiter=None,
                 log=None):
        self.machine = machine
        self.transport = transport
        self.clock = clock
        self.profile = profile
        self.policy = policy
        self.sadb = sadb
        self.limiter = limiter
        self.log = log or logger(f"haha.{self.role}")
        self.counters = Counter()
        #: One budget for every ICMPv6 Parameter Problem sent (RFC 4443 2.4 (f)).
        self.error_budget = GlobalBudget()
        self.observers = []
        #: ``f(direction, message, peer, now)`` for every message received ('in': ``peer`` is
        #: the sender's home address or source) or sent ('out': its home address or
        #: destination); the metrics measure latencies with it (haha.control.timing).
        self.message_taps = []
        self._call = None
        self._deadline = None
        self.running = False

    # -- life cycle -------------------------------------------------------------------------

    def now(self):
        return self.clock.seconds()

    def start_transport(self):
        self.transport.start(self.packet_received)

    def apply(self, effects):
        """Carry out ``effects`` (a list from the machine) and re-arm the timer."""
        for effect in effects:
            try:
                self._apply(effect)
            except Exception:  # a backend or transport bug must not stop the daemon
                self.counters["effect-failed"] += 1
                self.log.failure("carrying out {effect!r} failed", effect=effect)
        self._rearm()

    def stop_timer(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._deadline = None

    def _rearm(self):
        if not self.running:
            self.stop_timer()
            return
        deadline = self.machine.next_deadline()
        if deadline == self._deadline and self._call is not None and self._call.active():
            return
        self.stop_timer()
        if deadline is not None:
            self._deadline = deadline
            self._call = self.clock.callLater(max(0.0, deadline - self.now()), self._fire)

    def _fire(self):
        self._call = None
        self._deadline = None
        self._run(self.machine.tick, self.now())

    def _run(self, method, *args, **kw):
        """Call a machine entry point and apply its effects; a failure is logged, not raised."""
        try:
            effects = method(*args, **kw)
        except Exception:
            self.counters["core-failed"] += 1
            self.log.failure("the {role} machine failed in {method}", role=self.role,
                             method=getattr(method, "__name__", method))
            self._rearm()
            return None
        self.apply(effects)
        return effects

    # -- inbound ----------------------------------------------------------------------------

    def _drop(self, reason, **fields):
        self.counters["dropped." + reason] += 1
        if enabled(self.log, LogLevel.debug):
            self.log.debug("dropped a packet: {reason}", reason=reason, **fields)

    def packet_received(self, data):
        """The transport's receiver: one complete IPv6 packet."""
        self.counters["packets-received"] += 1
        try:
            packet = parse_packet(data)
        except ParameterProblem as e:
            return self.parameter_problem(data, e)
        except WireError as e:
            return self._drop("malformed-" + e.reason, detail=e.detail)
        nh = packet.next_header
        if nh == IPPROTO_IPV6:
            return self.tunnelled(packet, data)
        if nh not in (IPPROTO_MH, IPPROTO_ESP, IPPROTO_ICMPV6):
            return self._drop("unexpected-next-header", next_header=nh)
        # A multicast source is never valid (RFC 4291 2.7) and the unspecified one only for a
        # node that has no address yet (DAD): neither sends signalling haha answers, and the
        # answer (a DHAAD reply, a Binding Error) would go to a group or nowhere. Dropped
        # before it costs a rate-limiter bucket.
        first = data[8]
        if first == 0xFF or not first and data[8:24] == _UNSPECIFIED:
            return self._drop("bad-source", src=packet.src)
        now = self.now()
        payload = packet.payload
        protected_by = None
        if nh == IPPROTO_ESP and self._known_sa(payload):
            # Known SA: authenticate first and charge the SA's peer, so that nothing forged
            # from the same outer source can use up its budget (security/admission.py).
            result = self.unprotect(packet)
            if result is None:
                self._admit(packet.src, now)  # a failure counts against the strangers
                return None
            protected_by, nh, payload = result
            if not self._admit_peer(protected_by, now):
                return self._drop("rate-limited-peer", peer=protected_by)
        elif not self._admit(packet.src, now):
            return self._drop("rate-limited", src=packet.src)
        elif nh == IPPROTO_ESP:
            result = self.unprotect(packet)
            if result is None:
                return None
            protected_by, nh, payload = result
            if nh == IPPROTO_NONE:
                return self._drop("esp-dummy")
        source, destination = packet.source, packet.destination
        try:
            if nh == IPPROTO_MH:
                message = decode_mh(payload, source, destination, self.profile)
                mtype = mh_type_of(message, self.profile)
            elif nh == IPPROTO_ICMPV6:
                message = decode_icmpv6(payload, source, destination)
                mtype = message.TYPE if hasattr(message, "TYPE") else message.type
            else:
                return self._drop("unexpected-next-header", next_header=nh)
        except WireError as e:
            return self._drop("malformed-" + e.reason, detail=e.detail, src=packet.src)
        role = self.sadb.role_of(protected_by) if protected_by is not None else None
        known = protected_by is not None or self.source_known(nh, mtype, packet)
        decision = self.policy.decide(nh, mtype, protected_by is not None, known, role)
        if not decision.process:
            return self._drop(decision.reason, src=packet.src, message=type(message).__name__)
        if nh == IPPROTO_ICMPV6 and mtype == ICMP6_ROUTER_ADVERT:
            # RFC 4861 6.1.2: a valid advertisement comes from a link-local source with hop
            # limit 255 (so it cannot have been forwarded from another link).
            if packet.hop_limit != 255 or not packet.src.is_link_local:
                return self._drop("bad-router-advertisement", src=packet.src)
            self.router_advertisement(packet, message)
        self.counters["received." + type(message).__name__] += 1
        if self.takeover_keys is not None and protected_by is not None \
                and type(message) is BindingInfoUpdate:
            self.takeover_keys.learn(message.options)
        for tap in self.message_taps:
            tap("in", message, packet.home_address or packet.src, now)
        inbound = make_inbound(message, packet.src, packet.dst, packet.home_address,
                               packet.routing_address, protected_by)
        self._run(self.machine.receive, inbound, now)
        return None

    def _known_sa(self, esp):
        knows = getattr(self.sadb, "knows", None)
        return knows is not None and knows(esp)

    def _admit(self, source, now):
        """The unauthenticated budget (per source, then global) for one packet."""
        lim = self.limiter
        if lim is None:
            return True
        unauthenticated = getattr(lim, "unauthenticated", None)
        return unauthenticated(source, now) if unauthenticated else lim.allow(source, now)

    def _admit_peer(self, peer, now):
        authenticated = getattr(self.limiter, "authenticated", None)
        return authenticated is None or authenticated(peer, now)

    def _answer_allowed(self, effect):
        """The global budget for answers to unauthenticated input (Binding Error, DHAAD
        reply), and never a group or :: as source (RFC 4291 2.7, RFC 4443 2.4)."""
        src = effect.src
        if src.is_multicast or src.is_unspecified:
            self.counters["send-refused.bad-source"] += 1
            return False
        if type(effect.message).__name__ not in _ANSWERS:
            return True
        answer = getattr(self.limiter, "answer", None)
        if answer is None or answer(self.now()):
            return True
        self.counters["send-refused.answer-budget"] += 1
        return False

    def parameter_problem(self, data, error):
        """Drop a packet RFC 8200 refuses, answering it when RFC 4443 2.4 allows and the
        global budget has room (:mod:`haha.icmperror`)."""
        self._drop(error.counter, detail=error.detail)
        answer, why = parameter_problem(data, error, self.error_source)
        if answer is None:
            self.counters["parameter-problem-not-sent." + why] += 1
        elif not self.error_budget.allow(self.now()):
            self.counters["parameter-problem-not-sent.rate-limited"] += 1
        else:
            self.send_icmp(SendIcmp(answer[2], answer[0], answer[1]))

    def error_source(self, destination):
        """The address an ICMPv6 error about a packet sent to ``destination`` leaves from:
        that address when it is one of ours and unicast, else None (no answer)."""
        return None if destination.is_multicast else destination

    def unprotect(self, packet):
        if self.sadb is None:  # lab mode without keys: ESP cannot be accepted
            self._drop("no-sa", src=packet.src)
            return None
        try:
            return self.sadb.unprotect(packet.source, packet.payload)
        except SecurityError as e:
            self._drop(e.reason, src=packet.src, spi=e.spi)
        return None

    #: What decapsulates IPv6-in-IPv6 (the home agent's backend, the node's tunnel), or None.
    decapsulator = None

    def tunnelled(self, packet, data):
        decapsulate = getattr(self.decapsulator, "decapsulate", None)
        if decapsulate is None:
            return self._drop("tunnel-without-backend")
        self.counters["tunnelled-in"] += 1
        try:
            decapsulate(data)
        except Exception:
            self.counters["tunnel-failed"] += 1
            self.log.failure("decapsulation failed")
        return None

    def source_known(self, next_header, message_type, packet):
        """Lab mode only (nothing arrived in ESP): whether the sender is one the policy may
        accept for this message type. With ESP the SA's peer is the answer."""
        return False

    def router_advertisement(self, packet, advertisement):
        """A Router Advertisement passed the policy (home agents feed discovery with it)."""

    # -- outbound ---------------------------------------------------------------------------

    def _apply(self, effect):
        kind = type(effect)
        if kind is Send:
            self.send_mh(effect)
        elif kind is Event:
            self.event(effect)
        elif kind is SendIcmp:
            self.send_icmp(effect)
        else:
            self.duty(effect)

    def duty(self, effect):
        raise TypeError(f"{self.role} cannot carry out {effect!r}")

    def send_mh(self, effect):
        if not self._answer_allowed(effect):
            return
        message = effect.message
        keys = self.takeover_keys
        if keys is not None and type(message) is BindingInfoUpdate:
            message = BindingInfoUpdate(message.identifier, message.entries,
                                        message.options + keys.options(message.entries))
        src_ck = effect.home_address or effect.src
        dst_ck = effect.routing_address or effect.dst
        try:
            data = encode_mh(message, src_ck, dst_ck, self.profile)
        except WireError as e:
            self.counters["send-failed.encode"] += 1
            self.log.error("cannot encode {message!r}: {why}", message=message, why=str(e))
            return
        nh = IPPROTO_MH
        if self.policy.must_protect(IPPROTO_MH, mh_type_of(message, self.profile)):
            if effect.protect is None:
                self.counters["send-failed.unprotected"] += 1
                self.log.error("refusing to send {name} without ESP: no peer to protect it for",
                               name=type(message).__name__)
                return
            data = self.protect(effect.protect, data, effect.src if keys is not None else None)
            if data is None:
                return
            nh = IPPROTO_ESP
        packet = build_packet(effect.src, effect.dst, nh, data,
                              home_address=effect.home_address,
                              routing_address=effect.routing_address)
        self.counters["sent." + type(message).__name__] += 1
        self.transport.send(packet)
        for tap in self.message_taps:
            tap("out", message, effect.routing_address or effect.dst, self.now())

    def protect(self, peer, data, local=None):
        try:
            if local is not None:  # address take-over: the SA of the address sent from
                return self.sadb.protect(peer, IPPROTO_MH, data, local)
            return self.sadb.protect(peer, IPPROTO_MH, data)
        except SecurityError as e:
            self.counters["send-failed." + e.reason] += 1
            self.log.warn("cannot protect a message for {peer}: {reason}", peer=peer,
                          reason=e.reason)
        return None

    def send_icmp(self, effect):
        if not self._answer_allowed(effect):
            return
        try:
            data = encode_icmpv6(effect.message, effect.src, effect.dst)
        except WireError as e:
            self.counters["send-failed.encode"] += 1
            self.log.error("cannot encode {message!r}: {why}", message=effect.message,
                           why=str(e))
            return
        self.counters["sent." + type(effect.message).__name__] += 1
        self.transport.send(build_packet(effect.src, effect.dst, IPPROTO_ICMPV6, data))

    def event(self, event):
        self.counters["event." + event.name] += 1
        level = LogLevel.info if event.name in _INFO_EVENTS else LogLevel.debug
        if enabled(self.log, level):
            # Fields become strings (JSON observers) and the format is built only for events
            # the level shows: below it an event costs a counter and this check.
            fields = {k: (str(v) if not isinstance(v, (int, float, str, bool, type(None)))
                          else v) for k, v in event.fields.items()}
            self.log.emit(level, "{event} " + " ".join(f"{k}={{{k}}}" for k in fields),
                          event=event.name, **fields)
        for observer in list(self.observers):
            observer(event)


class HomeAgentAdapter(Adapter):
    """A :class:`haha.core.homeagent.HomeAgent` on a transport, with a forwarding backend and
    (optionally) a discovery strategy that wants Router Advertisements."""

    role = "home-agent"

    def __init__(self, machine, transport, clock, profile, policy, sadb=None, limiter=None,
                 backend=None, home_interface=None, ra_listener=None, log=None,
                 node_group=None):
        super().__init__(machine, transport, clock, profile, policy, sadb, limiter, log)
        self.backend = backend
        self.home_interface = home_interface
        self.ra_listener = ra_listener
        #: A :class:`haha.security.nodegroup.NodeGroup` deriving mobile nodes' SAs on first
        #: contact, or None.
        self.node_group = node_group

    def unprotect(self, packet):
        group = self.node_group
        if group is None or self.sadb is None or self.sadb.has_peer(packet.source) \
                or len(packet.payload) < 8 or self.machine.is_known_peer(packet.source):
            return super().unprotect(packet)
        spi = int.from_bytes(packet.payload[:4], "big")
        try:
            result = group.admit(self.sadb, packet.source, spi,
                                 lambda: self.sadb.unprotect(packet.source, packet.payload))
        except SecurityError as e:
            self._drop(e.reason, src=packet.src, spi=e.spi)
            return None
        if result is None:
            return super().unprotect(packet)
        self.counters["node-group-derived"] += 1
        return result

    def protect(self, peer, data, local=None):
        if self.node_group is not None and self.sadb is not None \
                and not self.machine.is_known_peer(peer):
            self.node_group.ensure(self.sadb, peer)
        return super().protect(peer, data, local)

    def error_source(self, destination):
        # Packets to a group or to the Home-Agents anycast address are answered from the
        # home agent's own address (RFC 4443 2.2).
        m = self.machine
        if destination.is_multicast or destination == m.anycast:
            return m.address
        return destination

    def source_known(self, next_header, message_type, packet):
        # Home agents must be known peers; mobile nodes are checked by the core (home prefix).
        if self.policy.rule(next_header, message_type).role == MOBILE_NODE:
            return True
        return self.machine.is_known_peer(packet.source)

    def router_advertisement(self, packet, advertisement):
        if self.ra_listener is not None:
            self.ra_listener.router_advertisement(packet.src, advertisement)

    @property
    def decapsulator(self):
        return self.backend

    def duty(self, effect):
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
            hold_address(b, effect, self.home_interface, self.counters)
            if self.takeover_keys is not None:
                self.takeover_keys.apply(effect)
        else:
            super().duty(effect)
        self.counters["duty." + kind.__name__] += 1


class MobileNodeAdapter(Adapter):
    """A :class:`haha.core.mobilenode.MobileNode` on a transport with its side of the tunnel.

    ``keyring`` (optional) derives the SAs of a home agent the node has not talked to yet, the
    first time one is needed: when sending to it, and when a protected packet arrives from it
    with an SPI that its derived SA explains (a surviving home agent taking the node over).
    """

    role = "mobile-node"

    def __init__(self, machine, transport, clock, profile, policy, sadb=None, limiter=None,
                 tunnel=None, keyring=None, log=None):
        super().__init__(machine, transport, clock, profile, policy, sadb, limiter, log)
        self.tunnel = tunnel
        self.keyring = keyring

    def source_known(self, next_header, message_type, packet):
        m = self.machine
        return packet.source in m.known_home_agents or packet.source in (m.home_agent, m.target)

    def unprotect(self, packet):
        if self.keyring is not None and self.sadb is not None:
            self.keyring.learn(packet.src, packet.payload)
        return super().unprotect(packet)

    def protect(self, peer, data, local=None):
        if self.keyring is not None:
            self.keyring.ensure(peer)
        return super().protect(peer, data)

    @property
    def decapsulator(self):
        return self.tunnel

    def duty(self, effect):
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
        else:
            super().duty(effect)
        self.counters["duty." + kind.__name__] += 1


__all__ = ["Adapter", "HomeAgentAdapter", "MobileNodeAdapter"]
