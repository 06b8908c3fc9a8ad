"""The sans-IO pipeline: IPv6 packets in, the core machine in the middle, packets and effects out.

An :class:`Endpoint` owns everything between the wire and a core machine
(:class:`haha.core.homeagent.HomeAgent` or :class:`haha.core.mobilenode.MobileNode`), and no
I/O: no reactor, no socket, no Twisted. Time is passed in as ``now``. In the manner of a
sans-IO protocol library:

- :meth:`Endpoint.receive` takes one complete inbound IPv6 packet. It parses the header chain,
  admits the packet (:mod:`haha.security.admission`: ESP under a known SA is authenticated
  first and charged to its peer, the rest to the unauthenticated budget), removes ESP, decodes
  the Mobility Header or ICMPv6 message, asks the security policy
  (:mod:`haha.security.policy`), and hands the core an ``Inbound`` record. Nothing that arrives
  can stop it: malformed packets, failed authentication, policy refusals and a failure inside
  the core are counted by reason (:attr:`Endpoint.counters`) and dropped.
- :meth:`Endpoint.call` runs any other entry point of the machine (start, stop, drain,
  add_peer, move...) the same way; :meth:`Endpoint.handle_timer` runs its timer, due at
  :meth:`Endpoint.next_timer`.
- What the machine returns is processed in order: messages are encoded, protected with ESP
  where the policy requires it, held to the answer budgets and built into packets
  (:class:`Datagram`); everything else the caller must carry out is queued beside them in the
  same order: forwarding effects for a backend (``InstallRoute``, ``HoldAddress``,
  ``TunnelUp``...), ``Event`` records, :class:`Tunnelled` packets to decapsulate,
  :class:`Advertised` Router Advertisements for discovery and :class:`Failed` records of a
  contained failure. :meth:`Endpoint.output` hands the queue over (and empties it);
  :meth:`Endpoint.datagrams_to_send` hands over only the packets.

The Twisted adapter (:mod:`haha.protocol`) and the in-memory network (:mod:`haha.testing`) both
drive this class, so every in-memory scenario runs the pipeline the daemon runs.
"""

from collections import Counter
from enum import Enum
from ipaddress import IPv6Address
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from .core.effects import (
    Event,
    HoldAddress,
    Send,
    SendIcmp,
    make_inbound,
)
from .icmperror import GlobalBudget, parameter_problem
from .security.errors import SecurityError
from .security.sadb import MOBILE_NODE
from .wire.addresses import address_int
from .wire.errors import WireError
from .wire.icmpv6 import IcmpMessage, UnknownIcmp, decode_icmpv6, encode_icmpv6
from .wire.ipv6 import ParameterProblem, build_packet, parse_packet
from .wire.mh import BindingInfoUpdate, MhMessage, decode_mh, encode_mh, mh_type_of
from .wire.numbers import (
    ICMP6_ROUTER_ADVERT,
    IPPROTO_ESP,
    IPPROTO_ICMPV6,
    IPPROTO_IPV6,
    IPPROTO_MH,
    IPPROTO_NONE,
)

__all__ = [
    "Advertised", "Datagram", "Endpoint", "Failed", "HomeAgentEndpoint", "MobileNodeEndpoint",
    "Role", "Tunnelled",
]

_UNSPECIFIED = bytes(16)

#: Messages sent in answer to unauthenticated input: one global budget (security/admission.py).
_ANSWERS = frozenset({"BindingError", "DhaadReply"})


class Role(str, Enum):
    """Which machine an endpoint drives (also the log namespace suffix, ``haha.<role>``)."""

    HOME_AGENT = "home-agent"
    MOBILE_NODE = "mobile-node"

    def __str__(self) -> str:
        return self.value


class Datagram(NamedTuple):
    """One complete IPv6 packet to send: ``data`` from ``source`` to ``destination`` (the
    first hop: a Type 2 Routing Header's final destination is inside ``data``)."""

    data: bytes
    destination: IPv6Address
    source: IPv6Address


class Tunnelled(NamedTuple):
    """An IPv6-in-IPv6 packet that arrived: the backend (home agent) or tunnel (mobile node)
    decapsulates it."""

    data: bytes


class Advertised(NamedTuple):
    """A Router Advertisement that passed the checks, from ``source``, for discovery."""

    source: IPv6Address
    advertisement: Any


class Failed(NamedTuple):
    """A failure the endpoint contained: ``where`` (the machine entry point) raised ``error``.
    Counted as ``core-failed``; the caller logs it with its traceback."""

    where: str
    error: BaseException


#: What :meth:`Endpoint.output` yields: a :class:`Datagram`, :class:`Tunnelled`,
#: :class:`Advertised`, :class:`Failed`, an ``Event`` or a forwarding effect of the core.
Output = Any


class _Silent:
    """The log of an endpoint nobody listens to (the Twisted adapter gives its logger)."""

    def debug(self, *a: Any, **kw: Any) -> None:
        pass

    warn = error = debug


class Endpoint:
    """What the home agent and mobile node endpoints share (module docstring).

    ``machine`` is the core machine; ``profile`` the numbering profile of the codecs; ``policy``
    a :class:`haha.security.policy.SecurityPolicy`; ``sadb`` an ``ISecurityAssociations``
    (None only with the lab policy); ``limiter`` a :class:`haha.security.admission.Admission`
    (or a bare per-source :class:`haha.security.ratelimit.RateLimiter`) or None.

    ``log`` receives ``warn``/``error`` lines about what cannot be sent (anything with those
    methods, the adapter's Twisted logger included); ``on_drop(reason, fields)``, when set, is
    told of every dropped packet (the adapter logs them at debug level). With
    ``contain_failures`` (the default) a failure inside the machine is counted and queued as
    :class:`Failed`; without it, it is raised to the caller (the in-memory network, so that a
    scenario stops at a core bug).
    """

    role: Role
    #: A :class:`haha.security.takeover.TakeoverKeys` with address take-over and ESP.
    takeover_keys: Any = None

    def __init__(self, machine: Any, profile: Any, policy: Any, sadb: Any = None,
                 limiter: Any = None, log: Any = None, contain_failures: bool = True) -> None:
        self.machine = machine
        self.profile = profile
        self.policy = policy
        self.sadb = sadb
        self.limiter = limiter
        self.log = log if log is not None else _Silent()
        self.contain_failures = contain_failures
        self.counters: Counter = Counter()
        #: One budget for every ICMPv6 Parameter Problem sent (RFC 4443 2.4 (f)).
        self.error_budget = GlobalBudget()
        #: ``f(direction, message, peer, now)`` for every message received ('in': ``peer`` is
        #: the sender's home address or source) or sent ('out': its home address or
        #: destination); the metrics measure latencies with it (haha.control.timing).
        self.message_taps: List[Callable[[str, Any, Any, float], None]] = []
        self.on_drop: Optional[Callable[[str, Dict[str, Any]], None]] = None
        #: Machine entry points run so far (a caller re-arms its timer only when it changed
        #: or something was queued: a dropped packet costs neither).
        self.calls = 0
        #: The output queue: read it to see whether anything is queued, take it with
        #: :meth:`output` (or :meth:`datagrams_to_send`).
        self.outbox: List[Output] = []
        self._now = 0.0

    # -- output ---------------------------------------------------------------------------

    def output(self) -> List[Output]:
        """Everything queued since the last call, in order, and empty the queue."""
        out = self.outbox
        self.outbox = []
        return out

    def datagrams_to_send(self) -> List[Datagram]:
        """The packets queued since the last call, in order; the rest stays queued."""
        out = self.outbox
        packets = [o for o in out if type(o) is Datagram]
        self.outbox = [o for o in out if type(o) is not Datagram]
        return packets

    # -- timers and machine calls -----------------------------------------------------------

    def next_timer(self) -> Optional[float]:
        """When :meth:`handle_timer` is due next (the machine's next deadline), or None."""
        deadline: Optional[float] = self.machine.next_deadline()
        return deadline

    def handle_timer(self, now: float) -> None:
        """The machine's timer, at ``now``."""
        self.call(now, self.machine.tick, now)

    def call(self, now: float, method: Callable[..., Any], *args: Any,
             **kw: Any) -> Optional[list]:
        """Run a machine entry point at ``now``: ``method(*args, **kw)`` (the machine's own
        ``now`` is among ``args``) and process its effects; returns them, or None when it
        failed (contained, :class:`Failed`)."""
        self.calls += 1
        try:
            effects = method(*args, **kw)
        except Exception as e:
            if not self.contain_failures:
                raise
            self.counters["core-failed"] += 1
            self.outbox.append(Failed(getattr(method, "__name__", repr(method)), e))
            return None
        self.apply(effects, now)
        return effects

    def start(self, now: float, **kw: Any) -> Optional[list]:
        """Start the machine (``kw``: the mobile node's ``care_of``)."""
        return self.call(now, self.machine.start, now, **kw)

    def stop(self, now: float) -> Optional[list]:
        """Stop the machine (a home agent says goodbye, a mobile node forgets its binding)."""
        return self.call(now, self.machine.stop, now)

    def apply(self, effects: list, now: float) -> None:
        """Process ``effects`` (a list from the machine, at ``now``) into the output queue."""
        self._now = now
        for effect in effects:
            kind = type(effect)
            if kind is Send:
                self.send_mh(effect)
            elif kind is Event:
                self.counters["event." + effect.name] += 1
                self.outbox.append(effect)
            elif kind is SendIcmp:
                self.send_icmp(effect)
            else:
                self.duty(effect)

    def duty(self, effect: Any) -> None:
        """A non-packet effect: queued for the caller (a subclass may act on it first)."""
        self.outbox.append(effect)

    # -- inbound ----------------------------------------------------------------------------

    def _drop(self, reason: str, **fields: Any) -> None:
        self.counters["dropped." + reason] += 1
        if self.on_drop is not None:
            self.on_drop(reason, fields)

    def receive(self, data: bytes, now: float) -> None:
        """One complete inbound IPv6 packet, at ``now``."""
        self._now = now
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
        decoded = self._decode(nh, payload, packet.source, packet.destination, packet.src)
        if decoded is None:
            return None
        message, mtype = decoded
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
        self._to_machine(make_inbound(message, packet.src, packet.dst, packet.home_address,
                                      packet.routing_address, protected_by), now)
        return None

    def _decode(self, nh: int, payload: bytes, source: IPv6Address, destination: IPv6Address,
                src: IPv6Address) -> Optional[Tuple[MhMessage | IcmpMessage, int]]:
        """The Mobility Header or ICMPv6 message that ``payload`` (next header ``nh``) holds,
        and its type; None when it was dropped (counted, ``src`` named)."""
        message: MhMessage | IcmpMessage
        try:
            if nh == IPPROTO_MH:
                message = decode_mh(payload, source, destination, self.profile)
                return message, mh_type_of(message, self.profile)
            if nh == IPPROTO_ICMPV6:
                message = decode_icmpv6(payload, source, destination)
                return message, (message.type if isinstance(message, UnknownIcmp)
                                 else message.TYPE)
        except WireError as e:
            self._drop("malformed-" + e.reason, detail=e.detail, src=src)
            return None
        self._drop("unexpected-next-header", next_header=nh)
        return None

    def _to_machine(self, inbound: Any, now: float) -> None:
        """A received message to the machine, and its effects carried out (Endpoint.call
        inlined: this is the per-packet path)."""
        self.calls += 1
        try:
            effects = self.machine.receive(inbound, now)
        except Exception as e:
            if not self.contain_failures:
                raise
            self.counters["core-failed"] += 1
            self.outbox.append(Failed("receive", e))
            return
        self.apply(effects, now)

    def _known_sa(self, esp: bytes) -> bool:
        knows = getattr(self.sadb, "knows", None)
        return knows is not None and bool(knows(esp))

    def _admit(self, source: IPv6Address, now: float) -> bool:
        """The unauthenticated budget (per source, then global) for one packet."""
        lim = self.limiter
        if lim is None:
            return True
        unauthenticated = getattr(lim, "unauthenticated", None)
        return bool(unauthenticated(source, now) if unauthenticated else lim.allow(source, now))

    def _admit_peer(self, peer: IPv6Address, now: float) -> bool:
        authenticated = getattr(self.limiter, "authenticated", None)
        return authenticated is None or bool(authenticated(peer, now))

    def _answer_allowed(self, effect: Any) -> bool:
        """The global budget for answers to unauthenticated input (Binding Error, DHAAD
        reply), and never a group or :: as source (RFC 4291 2.7, RFC 4443 2.4)."""
        src = effect.src
        # ff00::/8 (RFC 4291 2.7) or :: tested on the integer: IPv6Address.is_multicast is a
        # network membership test in Python, and every packet sent passes here.
        if type(src) is IPv6Address:
            a = address_int(src)
            bad = a >> 120 == 0xFF or not a
        else:
            bad = src.is_multicast or src.is_unspecified
        if bad:
            self.counters["send-refused.bad-source"] += 1
            return False
        if type(effect.message).__name__ not in _ANSWERS:
            return True
        answer = getattr(self.limiter, "answer", None)
        if answer is None or answer(self._now):
            return True
        self.counters["send-refused.answer-budget"] += 1
        return False

    def parameter_problem(self, data: bytes, error: ParameterProblem) -> None:
        """Drop a packet RFC 8200 refuses, answering it when RFC 4443 2.4 allows and the
        global budget has room (:mod:`haha.icmperror`)."""
        self._drop(error.counter, detail=error.detail)
        verdict = parameter_problem(data, error, self.error_source)
        if verdict[0] is None:
            self.counters["parameter-problem-not-sent." + verdict[1]] += 1
        elif not self.error_budget.allow(self._now):
            self.counters["parameter-problem-not-sent.rate-limited"] += 1
        else:
            src, dst, answer = verdict[0]
            self.send_icmp(SendIcmp(answer, src, dst))

    def error_source(self, destination: IPv6Address) -> Optional[IPv6Address]:
        """The address an ICMPv6 error about a packet sent to ``destination`` leaves from:
        that address when it is one of ours and unicast, else None (no answer)."""
        return None if destination.is_multicast else destination

    def unprotect(self, packet: Any) -> Optional[Tuple[Any, int, bytes]]:
        """``(peer, next header, payload)`` of an ESP packet, or None (dropped, counted)."""
        if self.sadb is None:  # lab mode without keys: ESP cannot be accepted
            self._drop("no-sa", src=packet.src)
            return None
        try:
            result: Tuple[Any, int, bytes] = self.sadb.unprotect(packet.source, packet.payload)
            return result
        except SecurityError as e:
            self._drop(e.reason, src=packet.src, spi=e.spi)
        return None

    def tunnelled(self, packet: Any, data: bytes) -> None:
        """An IPv6-in-IPv6 packet: queued as :class:`Tunnelled` for the caller to decapsulate
        (the caller counts it: it knows whether it has something that decapsulates)."""
        self.outbox.append(Tunnelled(data))

    def source_known(self, next_header: int, message_type: int, packet: Any) -> bool:
        """Lab mode only (nothing arrived in ESP): whether the sender is one the policy may
        accept for this message type. With ESP the SA's peer is the answer."""
        return False

    def router_advertisement(self, packet: Any, advertisement: Any) -> None:
        """A Router Advertisement passed the policy (queued for discovery)."""

    # -- outbound ---------------------------------------------------------------------------

    def send_mh(self, effect: Send) -> None:
        """Encode, protect and queue one Mobility Header message."""
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
            sealed = self.protect(effect.protect, data, effect.src if keys is not None else None)
            if sealed is None:
                return
            data = sealed
            nh = IPPROTO_ESP
        packet = build_packet(effect.src, effect.dst, nh, data,
                              home_address=effect.home_address,
                              routing_address=effect.routing_address)
        self.counters["sent." + type(message).__name__] += 1
        dst: Any = effect.dst  # the effect records' fields are not typed yet
        src: Any = effect.src
        self.outbox.append(Datagram(packet, dst, src))
        for tap in self.message_taps:
            tap("out", message, effect.routing_address or effect.dst, self._now)

    def protect(self, peer: Any, data: bytes, local: Any = None) -> Optional[bytes]:
        """ESP bytes carrying MH ``data`` to ``peer`` (from ``local``), or None (counted)."""
        try:
            if local is not None:  # address take-over: the SA of the address sent from
                sealed: bytes = self.sadb.protect(peer, IPPROTO_MH, data, local)
            else:
                sealed = self.sadb.protect(peer, IPPROTO_MH, data)
            return sealed
        except SecurityError as e:
            self.counters["send-failed." + e.reason] += 1
            self.log.warn("cannot protect a message for {peer}: {reason}", peer=peer,
                          reason=e.reason)
        return None

    def send_icmp(self, effect: SendIcmp) -> None:
        """Encode and queue one ICMPv6 message."""
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
        dst: Any = effect.dst
        src: Any = effect.src
        self.outbox.append(Datagram(build_packet(src, dst, IPPROTO_ICMPV6, data), dst, src))


class HomeAgentEndpoint(Endpoint):
    """A :class:`haha.core.homeagent.HomeAgent`'s pipeline. ``node_group`` (a
    :class:`haha.security.nodegroup.NodeGroup` or None) derives mobile nodes' SAs on first
    contact."""

    role = Role.HOME_AGENT

    def __init__(self, machine: Any, profile: Any, policy: Any, sadb: Any = None,
                 limiter: Any = None, node_group: Any = None, log: Any = None,
                 contain_failures: bool = True) -> None:
        super().__init__(machine, profile, policy, sadb, limiter, log, contain_failures)
        self.node_group = node_group

    def drain(self, now: float) -> Optional[list]:
        """Ask every mobile node to switch away (before a planned stop)."""
        return self.call(now, self.machine.drain, now)

    def add_peer(self, address: IPv6Address, now: float, source: Any) -> Optional[list]:
        """Discovery found peer ``address`` (through ``source``)."""
        return self.call(now, self.machine.add_peer, address, now, source)

    def remove_peer(self, address: IPv6Address, now: float, source: Any) -> Optional[list]:
        """Discovery lost peer ``address`` (through ``source``)."""
        return self.call(now, self.machine.remove_peer, address, now, source)

    def unprotect(self, packet: Any) -> Optional[Tuple[Any, int, bytes]]:
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
        derived: Tuple[Any, int, bytes] = result
        return derived

    def protect(self, peer: Any, data: bytes, local: Any = None) -> Optional[bytes]:
        # The SA lookup first (an integer key): most peers written to already have their SA,
        # and the known-peer test hashes an IPv6Address.
        sadb = self.sadb
        if self.node_group is not None and sadb is not None and not sadb.has_peer(peer) \
                and not self.machine.is_known_peer(peer):
            self.node_group.ensure(sadb, peer)
        return super().protect(peer, data, local)

    def error_source(self, destination: IPv6Address) -> Optional[IPv6Address]:
        # Packets to a group or to the Home-Agents anycast address are answered from the
        # home agent's own address (RFC 4443 2.2).
        m = self.machine
        if destination.is_multicast or destination == m.anycast:
            address: IPv6Address = m.address
            return address
        return destination

    def source_known(self, next_header: int, message_type: int, packet: Any) -> bool:
        # Home agents must be known peers; mobile nodes are checked by the core (home prefix).
        if self.policy.rule(next_header, message_type).role == MOBILE_NODE:
            return True
        return bool(self.machine.is_known_peer(packet.source))

    def router_advertisement(self, packet: Any, advertisement: Any) -> None:
        self.outbox.append(Advertised(packet.src, advertisement))

    def duty(self, effect: Any) -> None:
        if type(effect) is HoldAddress and self.takeover_keys is not None:
            self.takeover_keys.apply(effect)  # the SAs of the address held or released
        self.outbox.append(effect)


class MobileNodeEndpoint(Endpoint):
    """A :class:`haha.core.mobilenode.MobileNode`'s pipeline.

    ``keyring`` (optional) derives the SAs of a home agent the node has not talked to yet, the
    first time one is needed: when sending to it, and when a protected packet arrives from it
    with an SPI that its derived SA explains (a surviving home agent taking the node over).
    """

    role = Role.MOBILE_NODE

    def __init__(self, machine: Any, profile: Any, policy: Any, sadb: Any = None,
                 limiter: Any = None, keyring: Any = None, log: Any = None,
                 contain_failures: bool = True) -> None:
        super().__init__(machine, profile, policy, sadb, limiter, log, contain_failures)
        self.keyring = keyring

    def move(self, care_of: IPv6Address, now: float) -> Optional[list]:
        """The node's care-of address changed."""
        return self.call(now, self.machine.move, care_of, now)

    def return_home(self, now: float) -> Optional[list]:
        """The node is back on its home link."""
        return self.call(now, self.machine.return_home, now)

    def leave(self, now: float) -> Optional[list]:
        """Deregister before stopping."""
        return self.call(now, self.machine.leave, now)

    def source_known(self, next_header: int, message_type: int, packet: Any) -> bool:
        m = self.machine
        return packet.source in m.known_home_agents or packet.source in (m.home_agent, m.target)

    def unprotect(self, packet: Any) -> Optional[Tuple[Any, int, bytes]]:
        # The keyring has nothing to do for a home agent the database has SAs with (its
        # first test hashes an IPv6Address in Python; this one looks up an integer).
        keyring = self.keyring
        if keyring is not None and self.sadb is not None \
                and not keyring.sadb.has_peer(packet.src):
            keyring.learn(packet.src, packet.payload)
        return super().unprotect(packet)

    def protect(self, peer: Any, data: bytes, local: Any = None) -> Optional[bytes]:
        keyring = self.keyring
        if keyring is not None and not keyring.sadb.has_peer(peer):
            keyring.ensure(peer)
        return super().protect(peer, data)
