"""The mobile node / mobile router machine (RFC 6275 11, RFC 3963 5, draft section 6), sans-IO.

States:

- ``idle``: not started;
- ``home``: on the home link, no binding;
- ``discovering``: DHAAD request outstanding (RFC 6275 11.4.1), retransmitted from
  INITIAL_DHAAD_TIMEOUT doubling, DHAAD_RETRIES times, then at the capped interval;
- ``registering``: Binding Update sent to a home agent that holds no binding for us yet;
- ``registered``: binding accepted; refreshed at ``refresh_fraction`` of the granted lifetime
  (or earlier when Binding Refresh Advice says so);
- ``refreshing``: Binding Update sent to the home agent that holds our binding (a refresh, a
  new care-of address, a Binding Refresh Request);
- ``switching``: Binding Update sent to a new home agent (after HASR or RFC 5142 Home Agent
  Switch) while the binding at the old one is still valid;
- ``deregistering``: deregistration sent from the home link (docs/protocol.md 9 form: from the home
  address without Home Address option, lifetime 0, Alternate Care-of Address = home address),
  or, when the node stops while away (``leave``), from the care-of address with the Home
  Address option, lifetime 0 (RFC 6275 11.7.1).

Retransmission (RFC 6275 11.8): a first registration with a home agent starts at
InitialBindackTimeoutFirstReg (1.5 s), anything else at INITIAL_BINDACK_TIMEOUT (1 s), doubling
to MAX_BINDACK_TIMEOUT (32 s). A retransmitted Binding Update is the same message, sequence
number included (``retransmit_same_sequence``, the default): when it waited in a loaded home
agent's queue behind the first copy, the home agent answers it from the binding the first copy
made instead of registering again (a strict RFC 6275 9.5.1 home agent answers 135 with that
number, and the node goes on with the next one). Without the setting every retransmission
carries a new number, as deployed nodes do. With ``retransmit_jitter`` each wait is drawn from
the RFC's value to that fraction more (never sooner), and with ``refresh_jitter`` the refresh
falls up to that fraction earlier (never later): nodes started together (a load generator's)
do not retransmit or refresh in lockstep. A 135, a move or a switch starts a new number. A
Binding Acknowledgement for any Binding Update of the registration in flight (same home agent,
same care-of address; the last :data:`IN_FLIGHT` numbers) completes it: when queueing delay at a
loaded home agent exceeds the retransmission interval, the answer to an earlier copy is the only
answer that can arrive in time, and insisting on the newest number would livelock.

Inputs are the operator/environment calls (``start``, ``move``, ``return_home``, ``leave``,
``stop``), the
messages (``receive``: BA, HASR, Home Agent Switch, DHAAD reply, Binding Refresh Request,
Binding Error) and the timers (``tick``: retransmit, refresh, expire). :data:`TRANSITIONS` maps
every (state, input) pair to a handler, to :data:`IGNORE` (network noise that the state has no
use for: counted and dropped) or to :data:`INVALID` (an API call that makes no sense in that
state: :class:`InvalidTransition` is raised). The table is total; a test walks every pair.
"""

import random
from collections import Counter, deque
from enum import StrEnum
from ipaddress import IPv6Address
from typing import Any, cast

from haha.wire.addresses import address_int
from haha.wire.icmpv6 import DhaadReply, DhaadRequest
from haha.wire.mh import (
    BA_R,
    BA_SEQUENCE_OUT_OF_WINDOW,
    BU_A,
    BU_H,
    BU_R,
    BindingAck,
    BindingError,
    BindingRefreshRequest,
    BE_UNKNOWN_MH_TYPE,
    BindingUpdate,
    HaSwitchRequest,
    HomeAgentSwitch,
)
from haha.wire.options import AlternateCareOfAddress, MobileNetworkPrefix, MobilityOption

from .effects import (
    AnnounceHome,
    Event,
    Inbound,
    LeaveComplete,
    Send,
    SendIcmp,
    TunnelDown,
    TunnelUp,
    make_send,
)
from .effecttypes import Effects
from .events import EventName
from .homeagent import home_agents_anycast
from .seqnum import next_sequence, seconds, units
from .settings import MobileNodeSettings

IN_FLIGHT = 16  # sequence numbers of one registration attempt a BA may answer

# The events of every step, read once (an enum member read from its class costs about 0.1 us,
# a module global a tenth of that).
_STATE_EVENT = EventName.STATE
_REGISTERED_EVENT = EventName.REGISTERED
_SWITCH_RECEIVED_EVENT = EventName.SWITCH_RECEIVED



class State(StrEnum):
    """The mobile node's states (module docstring)."""

    IDLE = "idle"
    HOME = "home"
    DISCOVERING = "discovering"
    REGISTERING = "registering"
    REGISTERED = "registered"
    REFRESHING = "refreshing"
    SWITCHING = "switching"
    DEREGISTERING = "deregistering"


class Input(StrEnum):
    """The inputs of the machine: operator calls, messages, timers."""

    START_AWAY = "start-away"
    START_HOME = "start-home"
    MOVE = "move"
    RETURN_HOME = "return-home"
    STOP = "stop"
    LEAVE = "leave"  # stopping: deregister first
    BA = "ba"
    SWITCH = "switch"  # HASR (draft 4.1.5) or RFC 5142 Home Agent Switch
    DHAAD_REPLY = "dhaad-reply"
    BRR = "brr"
    BE = "be"
    RETRANSMIT = "retransmit"
    REFRESH = "refresh"
    EXPIRE = "expire"


IDLE = State.IDLE
HOME = State.HOME
DISCOVERING = State.DISCOVERING
REGISTERING = State.REGISTERING
REGISTERED = State.REGISTERED
REFRESHING = State.REFRESHING
SWITCHING = State.SWITCHING
DEREGISTERING = State.DEREGISTERING
STATES = tuple(State)

START_AWAY = Input.START_AWAY
START_HOME = Input.START_HOME
MOVE = Input.MOVE
RETURN_HOME = Input.RETURN_HOME
STOP = Input.STOP
LEAVE = Input.LEAVE
BA = Input.BA
SWITCH = Input.SWITCH
DHAAD_REPLY = Input.DHAAD_REPLY
BRR = Input.BRR
BE = Input.BE
RETRANSMIT = Input.RETRANSMIT
REFRESH = Input.REFRESH
EXPIRE = Input.EXPIRE
INPUTS = tuple(Input)

IGNORE = "ignore"
INVALID = "invalid"


class InvalidTransition(RuntimeError):
    """An operator call that the mobile node's state does not allow."""

    def __init__(self, state: State, event: Input) -> None:
        self.state = state
        self.event = event
        super().__init__(f"{event} is not allowed in state {state}")


def _table() -> dict[tuple[State, Input], str]:
    t: dict[tuple[State, Input], str] = {}
    network = (BA, SWITCH, DHAAD_REPLY, BRR, BE)
    timers = (RETRANSMIT, REFRESH, EXPIRE)
    for s in STATES:
        for i in network + timers:
            t[(s, i)] = IGNORE
        t[(s, STOP)] = "_stop"
        t[(s, LEAVE)] = "_leave" if s in (DISCOVERING, REGISTERING, REGISTERED, REFRESHING,
                                          SWITCHING) else IGNORE
        t[(s, START_AWAY)] = INVALID
        t[(s, START_HOME)] = INVALID
        t[(s, BE)] = "_binding_error" if s != IDLE else IGNORE
    t[(IDLE, START_AWAY)] = "_go_away"
    t[(IDLE, START_HOME)] = "_start_home"
    t[(IDLE, MOVE)] = INVALID
    t[(IDLE, RETURN_HOME)] = INVALID
    t[(HOME, MOVE)] = "_go_away"
    t[(HOME, RETURN_HOME)] = IGNORE
    for s in (DISCOVERING, REGISTERING, REGISTERED, REFRESHING, SWITCHING):
        t[(s, RETURN_HOME)] = "_return_home"
        t[(s, SWITCH)] = "_switch_request"
    t[(DISCOVERING, MOVE)] = "_discover_again"
    t[(DISCOVERING, DHAAD_REPLY)] = "_dhaad_reply"
    t[(DISCOVERING, RETRANSMIT)] = "_dhaad_retransmit"
    t[(DISCOVERING, EXPIRE)] = "_binding_lost"
    for s in (REGISTERING, REFRESHING, SWITCHING):
        t[(s, MOVE)] = "_resend_now"
        t[(s, BA)] = "_binding_ack"
        t[(s, RETRANSMIT)] = "_bu_retransmit"
    t[(REFRESHING, EXPIRE)] = "_binding_lost"
    t[(SWITCHING, EXPIRE)] = "_binding_lost"
    t[(REGISTERED, MOVE)] = "_refresh"
    t[(REGISTERED, BRR)] = "_refresh"
    t[(REGISTERED, REFRESH)] = "_refresh"
    t[(REGISTERED, EXPIRE)] = "_binding_lost"
    t[(DEREGISTERING, MOVE)] = "_go_away"
    t[(DEREGISTERING, RETURN_HOME)] = IGNORE
    t[(DEREGISTERING, BA)] = "_dereg_ack"
    t[(DEREGISTERING, RETRANSMIT)] = "_dereg_retransmit"
    t[(DEREGISTERING, EXPIRE)] = "_dereg_expired"
    return t


#: Every (state, input) pair: a handler method name, IGNORE or INVALID.
TRANSITIONS = _table()

#: The counter of each ignored (state, input) pair: ``ignored:STATE:INPUT``.
_IGNORED = {key: f"ignored:{key[0].value}:{key[1].value}"
            for key, entry in TRANSITIONS.items() if entry == IGNORE}

#: The most addresses a DHAAD reply can carry in the minimum MTU (RFC 6275 10.5.1).
DHAAD_MAX_ADDRESSES = 77
#: How many home agents learnt from DHAAD the Home Agent list keeps (configured ones aside).
KNOWN_LIMIT = DHAAD_MAX_ADDRESSES


def global_scope(address: IPv6Address) -> bool:
    """Whether ``address`` has global scope (draft 5.3 switches at once only to such): not
    link-local (fe80::/10), site-local (fec0::/10, deprecated by RFC 3879), multicast (ff00::/8),
    unspecified (::) or loopback (::1), RFC 4291 2.4. Read from the address's integer (the
    ``is_*`` properties of :mod:`ipaddress` each test a network: 2 us for the five)."""
    k = address_int(address)
    return not (k >> 120 == 0xFF or k >> 118 in _LOCAL_TOP10 or k <= 1)


#: The top 10 bits of fe80::/10 (link-local) and fec0::/10 (site-local).
_LOCAL_TOP10 = (0x3FA, 0x3FB)


def same_address(a: IPv6Address | None, b: IPv6Address | None) -> bool:
    """``a == b`` for two IPv6 addresses or None, from their integers (and scopes):
    ``IPv6Address.__eq__`` is Python code, about three times the cost, and the node compares
    addresses on every step."""
    if a is b:
        return True
    return a is not None and b is not None and address_int(a) == address_int(b) \
        and a.scope_id == b.scope_id


class MobileNode:
    """One mobile node or mobile router. ``settings`` is a
    :class:`~haha.core.settings.MobileNodeSettings`, ``rng`` a :class:`random.Random` (initial
    sequence number, DHAAD identifiers)."""

    def __init__(self, settings: MobileNodeSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.rng = rng if rng is not None else random.Random()
        self.counters: Counter[str] = Counter()
        self.state = IDLE
        self.home_address: IPv6Address = settings.home_address
        self.anycast = home_agents_anycast(settings.home_prefix)
        self.care_of: IPv6Address | None = None
        #: The home agent holding our binding (when bound).
        self.home_agent: IPv6Address | None = None
        #: The home agent the outstanding Binding Update went to.
        self.target: IPv6Address | None = None
        self.known_home_agents: list[IPv6Address] = list(settings.home_agents)
        self.sequence = self.rng.randrange(1 << 16)
        self.tunnel: TunnelUp | None = None
        self.expires: float | None = None
        self.lifetime: int | None = None
        self._candidates: list[IPv6Address] = []
        self._rejected: set[IPv6Address | None] = set()
        self._avoid: IPv6Address | None = None
        self._retransmit_at: float | None = None
        self._timeout = 0.0  # the retransmission interval, set by every state that sends
        self._attempts = 0
        self._in_flight: deque[int] = deque(maxlen=IN_FLIGHT)
        #: The Binding Update of the registration attempt in flight, as last sent.
        self._bu_sent: Send | None = None
        #: (care-of address, flags, lifetime units, options) of the Binding Updates sent from
        #: that care-of address (:meth:`_send_bu`).
        self._bu_fixed: tuple[IPv6Address, int, int, tuple[MobilityOption, ...]] | None = None
        self._refresh_at: float | None = None
        self._dhaad_id: int | None = None
        self._dhaad_tries = 0
        self._dhaad_failed = False
        self._dereg_tried: set[IPv6Address | None] = set()
        self._leaving = False  # the deregistration under way is the away form (``leave``)

    # ======================================================================================
    # public entry points
    # ======================================================================================

    def start(self, now: float, care_of: IPv6Address | None = None) -> Effects:
        """Start on the home link (``care_of`` None) or away at ``care_of``. Returns effects."""
        if care_of is None:
            return self.dispatch(START_HOME, now)
        return self.dispatch(START_AWAY, now, care_of=care_of)

    def move(self, care_of: IPv6Address, now: float) -> Effects:
        """Movement detection (outside this machine) found a new care-of address."""
        return self.dispatch(MOVE, now, care_of=care_of)

    def return_home(self, now: float) -> Effects:
        """The node is back on its home link: deregister."""
        return self.dispatch(RETURN_HOME, now)

    def stop(self, now: float) -> Effects:
        """Forget everything at once (no signalling); the tunnel goes down."""
        return self.dispatch(STOP, now)

    def leave(self, now: float) -> Effects:
        """The node is stopping: if a home agent holds its binding, deregister from where it
        is (``deregistering`` until the BA; the caller bounds the wait, then calls ``stop``);
        otherwise stop at once."""
        return self.dispatch(LEAVE, now)

    def receive(self, inbound: Inbound, now: float) -> Effects:
        """Process one decoded message. Returns effects."""
        msg = inbound.message
        kind = type(msg)
        if kind is BindingAck:
            return self.dispatch(BA, now, inbound=inbound)
        if kind is HaSwitchRequest or kind is HomeAgentSwitch:
            if not self.settings.obeys_switch:
                # Like deployed stacks: the message type is unknown to this node (RFC 6275 9.2).
                self.counters["switch-refused"] += 1
                be = BindingError(BE_UNKNOWN_MH_TYPE, self.home_address)
                return [Send(be, self.care_of or self.home_address, inbound.src),
                        Event(EventName.SWITCH_REFUSED, src=inbound.src)]
            return self.dispatch(SWITCH, now, inbound=inbound)
        if kind is DhaadReply:
            return self.dispatch(DHAAD_REPLY, now, inbound=inbound)
        if kind is BindingRefreshRequest:
            return self.dispatch(BRR, now, inbound=inbound)
        if kind is BindingError:
            return self.dispatch(BE, now, inbound=inbound)
        self.counters["dropped:unexpected"] += 1
        return [Event(EventName.DROPPED, reason="unexpected", message=kind.__name__, src=inbound.src)]

    def next_deadline(self) -> float | None:
        """The earliest of the retransmission, refresh and expiry timers (None: none set).
        Asked after every packet and timer: no list, no call beyond this one."""
        best = self._retransmit_at
        t = self._refresh_at
        if t is not None and (best is None or t < best):
            best = t
        t = self.expires
        if t is not None and (best is None or t < best):
            best = t
        return best

    def _due(self, now: float) -> Input | None:
        """The earliest timer due at ``now``, cleared (ties: expiry, refresh, retransmission),
        or None."""
        name: Input | None = None
        best = now
        t = self.expires
        if t is not None and t <= best:
            name, best = EXPIRE, t
        t = self._refresh_at
        if t is not None and (t < best or name is None and t <= best):
            name, best = REFRESH, t
        t = self._retransmit_at
        if t is not None and (t < best or name is None and t <= best):
            name = RETRANSMIT
        if name is EXPIRE:
            self.expires = None
        elif name is RETRANSMIT:
            self._retransmit_at = None
        elif name is REFRESH:
            self._refresh_at = None
        return name

    def tick(self, now: float) -> Effects:
        """Fire every timer due at ``now``, earliest first. Returns effects."""
        out: Effects = []
        for _ in range(8):
            name = self._due(now)
            if name is None:
                break
            out.extend(self.dispatch(name, now))
        return out

    @property
    def bound(self) -> bool:
        """True while a binding is believed to exist at ``home_agent``."""
        return self.home_agent is not None

    def busy(self) -> bool:
        """True in the transient states (waiting for an answer)."""
        return self.state in (DISCOVERING, REGISTERING, REFRESHING, SWITCHING, DEREGISTERING)

    # ======================================================================================
    # dispatch
    # ======================================================================================

    def dispatch(self, event: Input, now: float, **kw: Any) -> Effects:
        """Drive one input through :data:`TRANSITIONS` (every other entry point calls this)."""
        entry = TRANSITIONS[(self.state, event)]
        if entry == INVALID:
            raise InvalidTransition(self.state, event)
        out: Effects = []
        if entry == IGNORE:
            # A duplicate acknowledgement (the answer to a retransmission) lands here after
            # every busy take-over: the counter's name is made once per pair, not per packet.
            self.counters[_IGNORED[(self.state, event)]] += 1
            return out
        before = self.state
        getattr(self, entry)(now, out, **kw)
        if self.state != before:
            out.append(Event(_STATE_EVENT, old=before, new=self.state, input=event))
        return out

    # ======================================================================================
    # handlers
    # ======================================================================================

    def _start_home(self, now: float, out: Effects) -> None:
        self.state = HOME

    def _stop(self, now: float, out: Effects) -> None:
        if self._leaving:
            out.append(LeaveComplete(False))
        self._leaving = False
        self._tunnel_down(out)
        self._reset_binding()
        self._retransmit_at = None
        self._dhaad_id = None
        self.care_of = None
        self.target = None
        self.state = IDLE

    def _go_away(self, now: float, out: Effects, care_of: IPv6Address) -> None:
        if self._leaving:
            out.append(LeaveComplete(False))
        self._leaving = False
        self.care_of = care_of
        self._rejected = set()
        self._candidates = list(self.known_home_agents)
        if self._candidates:
            self._register_with(self._candidates.pop(0), now, out, first=True)
        else:
            self._discover(now, out)

    # -- registration ------------------------------------------------------------------------

    def _register_with(self, home_agent: IPv6Address | None, now: float,
                          out: Effects, first: bool) -> None:
        """Send a Binding Update to ``home_agent``: ``first`` when it holds no binding of ours
        (InitialBindackTimeoutFirstReg), else a refresh or care-of change."""
        self.target = home_agent
        if self.home_agent is not None and same_address(home_agent, self.home_agent):
            self.state = REFRESHING
            self._timeout = self.settings.initial_timeout
        elif self.bound:
            self.state = SWITCHING
            self._timeout = self.settings.first_timeout
        else:
            self.state = REGISTERING
            self._timeout = self.settings.first_timeout if first \
                else self.settings.initial_timeout
        self._attempts = 0
        self._refresh_at = None
        self._send_bu(now, out)

    def _send_bu(self, now: float, out: Effects, again: bool = False) -> None:
        """Send the Binding Update of the attempt in flight: with a new sequence number, or
        (``again``: a retransmission, with ``retransmit_same_sequence``) the number it had."""
        s = self.settings
        send = self._bu_sent
        if not again or send is None:
            # A new attempt (every state that retransmits entered with one): a new message.
            # A retransmission is the very same record (nothing of it changed).
            if not again:
                self.sequence = next_sequence(self.sequence)
            care_of = self.care_of
            assert care_of is not None  # sent only while away
            assert self.target is not None  # _register_with names the home agent first
            # Everything but the sequence number depends on the settings and the care-of
            # address only: made once per care-of address, not per Binding Update.
            fixed = self._bu_fixed
            if fixed is None or fixed[0] is not care_of:
                opts: list[MobilityOption] = []
                if s.alternate_care_of:
                    opts.append(AlternateCareOfAddress(care_of))
                opts.extend(MobileNetworkPrefix(p) for p in s.prefixes)
                fixed = self._bu_fixed = (care_of, BU_A | BU_H | (BU_R if s.mobile_router else 0),
                                          units(s.lifetime), tuple(opts))
            bu = BindingUpdate(self.sequence, fixed[1], fixed[2], fixed[3])
            send = self._bu_sent = make_send(bu, care_of, self.target, self.home_address, None,
                                             self.target)
        out.append(send)
        self._sent(self.sequence)
        self._retransmit_at = now + self._jittered(self._timeout)
        self.counters["bu-sent"] += 1

    def _jittered(self, timeout: float) -> float:
        """The wait before retransmitting a Binding Update: ``timeout`` (RFC 6275 11.8), or
        with ``retransmit_jitter`` a draw from [timeout, timeout * (1 + jitter)]."""
        jitter = self.settings.retransmit_jitter
        return timeout * (1.0 + jitter * self.rng.random()) if jitter else timeout

    def _sent(self, sequence: int) -> None:
        """Note one Binding Update of the attempt in flight (the first of an attempt, with
        ``_attempts`` reset to 0, forgets the numbers of the previous attempt)."""
        if not self._attempts:
            self._in_flight.clear()
        self._in_flight.append(sequence)
        self._attempts += 1

    def _answers_in_flight(self, ba: BindingAck) -> bool:
        """Whether ``ba`` answers a Binding Update of the attempt in flight (or is a 135, which
        carries the home agent's own number instead)."""
        return ba.sequence in self._in_flight or ba.status == BA_SEQUENCE_OUT_OF_WINDOW

    def _resend_now(self, now: float, out: Effects, care_of: IPv6Address) -> None:
        self.care_of = care_of
        self._timeout = self.settings.initial_timeout if self.state == REFRESHING \
            else self.settings.first_timeout
        self._attempts = 0
        self._send_bu(now, out)

    def _refresh(self, now: float, out: Effects,
                    care_of: IPv6Address | None = None, inbound: Inbound | None = None) -> None:
        if care_of is not None:
            self.care_of = care_of
        self._register_with(self.home_agent, now, out, first=False)

    def _bu_retransmit(self, now: float, out: Effects) -> None:
        limit = self.settings.registration_attempts
        if limit and self._attempts >= limit:
            out.append(Event(EventName.REGISTRATION_TIMEOUT, home_agent=self.target,
                             attempts=self._attempts))
            self._rejected.add(self.target)
            return self._next_candidate(now, out)
        self._timeout = min(self._timeout * 2, self.settings.max_timeout)
        # Same care-of address, same home agent (a move or a switch starts a new attempt): the
        # same message again, so a home agent that accepted a queued copy answers this one
        # from its binding instead of registering it once more.
        self._send_bu(now, out, again=self.settings.retransmit_same_sequence)
        self.counters["bu-retransmitted"] += 1

    def _ba_valid(self, inbound: Inbound, out: Effects) -> bool:
        ba = cast(BindingAck, inbound.message)
        target = self.target
        if target is None or not same_address(inbound.src, target):
            self.counters["dropped:ba-wrong-source"] += 1
            return False
        if not same_address(inbound.routing_address, self.home_address):
            self.counters["dropped:ba-without-routing-header"] += 1
            return False
        protected_by = inbound.protected_by
        if protected_by is not None and not same_address(protected_by, target):
            self.counters["dropped:ba-sa-mismatch"] += 1
            return False
        if not self._answers_in_flight(ba):
            self.counters["dropped:ba-stale"] += 1
            return False
        return True

    def _binding_ack(self, now: float, out: Effects, inbound: Inbound) -> None:
        if not self._ba_valid(inbound, out):
            return
        ba = cast(BindingAck, inbound.message)
        s = self.settings
        if ba.status == BA_SEQUENCE_OUT_OF_WINDOW:
            # RFC 6275 11.7.3: resend with a number above the one the home agent accepted.
            self.sequence = ba.sequence
            self._send_bu(now, out)
            self.counters["ba-135"] += 1
            return
        reason = None
        if ba.status >= 128:
            reason = f"status {ba.status}"
        elif ba.lifetime == 0:
            reason = "lifetime 0"
        elif s.mobile_router and not ba.flags & BA_R:
            reason = "no R flag"  # the home agent does not serve mobile routers (docs/protocol.md 9)
        if reason is not None:
            out.append(Event(EventName.REGISTRATION_REJECTED, home_agent=self.target, status=ba.status,
                             reason=reason))
            self._rejected.add(self.target)
            if self.target == self.home_agent:
                self._tunnel_down(out)
                self._reset_binding()
            return self._next_candidate(now, out)
        granted = seconds(ba.lifetime)
        self.home_agent = self.target
        self.lifetime = granted
        self.expires = now + granted
        refresh = granted * s.refresh_fraction
        # Binding Refresh Advice is an option (RFC 6275 6.2.4): a BA without options has none
        # (the property looks through the options in Python).
        advice = ba.refresh_interval if ba.options else None
        if advice:
            refresh = min(refresh, seconds(advice))
        if s.refresh_jitter:  # sooner, never later (settings)
            refresh *= 1.0 - s.refresh_jitter * self.rng.random()
        self._refresh_at = now + refresh
        self._retransmit_at = None
        if self._rejected:
            self._rejected = set()
        if self._candidates:
            self._candidates = []
        self.state = REGISTERED
        home_agent, care_of = self.home_agent, self.care_of
        # Accepted from the target (the source was checked) while away from home.
        assert care_of is not None and home_agent is not None
        if self._known(home_agent) is None:
            self.known_home_agents.append(home_agent)
        tunnel = self.tunnel
        if tunnel is None or not (same_address(tunnel.home_agent, home_agent)
                                  and same_address(tunnel.care_of, care_of)
                                  and same_address(tunnel.home_address, self.home_address)
                                  and tunnel.prefixes == s.prefixes):
            # A tunnel equal to the one in force (a refresh) is not carried out again.
            tunnel = self.tunnel = TunnelUp(self.home_address, care_of, home_agent, s.prefixes)
            out.append(tunnel)
        out.append(Event(_REGISTERED_EVENT, home_agent=home_agent, care_of=care_of,
                         lifetime=granted, sequence=ba.sequence))

    def _next_candidate(self, now: float, out: Effects) -> None:
        while self._candidates:
            ha = self._candidates.pop(0)
            if ha not in self._rejected:
                return self._register_with(ha, now, out, first=True)
        self._discover(now, out)

    def _binding_lost(self, now: float, out: Effects) -> None:
        ha = self.home_agent or self.target
        out.append(Event(EventName.BINDING_LOST, home_agent=ha))
        self._tunnel_down(out)
        self._reset_binding()
        if self.state in (REGISTERED, REFRESHING):
            self._register_with(ha, now, out, first=True)

    def _binding_error(self, now: float, out: Effects, inbound: Inbound) -> None:
        self.counters["binding-error"] += 1
        out.append(Event(EventName.BINDING_ERROR, status=cast(BindingError, inbound.message).status,
                         src=inbound.src))

    def _reset_binding(self) -> None:
        self.home_agent = None
        self.expires = None
        self.lifetime = None
        self._refresh_at = None

    def _tunnel_down(self, out: Effects) -> None:
        if self.tunnel is not None:
            self.tunnel = None
            out.append(TunnelDown(self.home_address))

    # -- switching (draft 5.3 / 6.1, RFC 5142) -----------------------------------------------

    def _switch_request(self, now: float, out: Effects, inbound: Inbound) -> None:
        msg = inbound.message
        routing = inbound.routing_address
        if routing is not None and not same_address(routing, self.home_address):
            self.counters["dropped:switch-wrong-home-address"] += 1
            return
        if inbound.protected_by is None and self._known(inbound.src) is None:
            self.counters["dropped:switch-unauthenticated"] += 1
            return
        wanted: tuple[IPv6Address, ...]
        if type(msg) is HaSwitchRequest:
            desired = msg.desired_home_agent
            wanted = (desired,) if desired is not None else ()
        else:
            wanted = tuple(cast(HomeAgentSwitch, msg).addresses)
        if wanted:
            state = self.state
            if state == REGISTERED and same_address(wanted[0], self.home_agent):
                self.counters["switch-already-there"] += 1
                return
            if (state == REGISTERING or state == SWITCHING) \
                    and same_address(wanted[0], self.target):
                # A retransmitted request while our Binding Update to that home agent is on
                # its way (queued at a home agent taking many nodes over): our own
                # retransmission covers its loss; a new Binding Update would only add to the
                # queue.
                self.counters["switch-already-underway"] += 1
                return
        self.counters["switch-received"] += 1
        out.append(Event(_SWITCH_RECEIVED_EVENT, src=inbound.src,
                         desired=wanted[0] if wanted else None))
        asking = inbound.src
        for desired in wanted:
            # The Home Agent list's own entry (equal to the one named): what the node keeps
            # from here on (target, home agent) is that object, so later comparisons find it
            # by identity.
            known = self._known(desired)
            if known is not None and global_scope(known):
                if self._rejected:
                    self._rejected.discard(known)
                k = address_int(known)
                self._candidates = [a for a in self.known_home_agents
                                    if a is not known and not (address_int(a) == k
                                                               and same_address(a, known))]
                return self._register_with(known, now, out,
                                           first=not same_address(known, self.home_agent))
        self._avoid = asking
        self._discover(now, out)

    def _known(self, address: IPv6Address | None) -> IPv6Address | None:
        """The entry of the Home Agent list equal to ``address`` (that very object), or None."""
        if address is None:
            return None
        # same_address inlined (asked on every switch request and registration): integers
        # first, the scope only when they are equal.
        k = address_int(address)
        for a in self.known_home_agents:
            if a is address or address_int(a) == k and a.scope_id == address.scope_id:
                return a
        return None

    # -- discovery (RFC 6275 11.4.1) -----------------------------------------------------------

    def _discover(self, now: float, out: Effects) -> None:
        self.state = DISCOVERING
        self.target = None
        self._dhaad_tries = 0
        self._dhaad_failed = False
        self._timeout = self.settings.dhaad_timeout
        self._send_dhaad(now, out)

    def _send_dhaad(self, now: float, out: Effects) -> None:
        self._dhaad_id = self.rng.randrange(1, 1 << 16)
        assert self.care_of is not None  # a node discovers only while away
        out.append(SendIcmp(DhaadRequest(self._dhaad_id, self.settings.mobile_router),
                            self.care_of, self.anycast))
        self._retransmit_at = now + self._timeout
        self.counters["dhaad-sent"] += 1

    def _discover_again(self, now: float, out: Effects, care_of: IPv6Address) -> None:
        self.care_of = care_of
        self._discover(now, out)

    def _dhaad_retransmit(self, now: float, out: Effects) -> None:
        # Back-off doubles for DHAAD_RETRIES retransmissions, then the node reports the failure
        # and keeps asking at the last interval.
        self._dhaad_tries += 1
        if self._dhaad_tries < self.settings.dhaad_retries:
            self._timeout = self._timeout * 2
        elif not self._dhaad_failed:
            self._dhaad_failed = True
            out.append(Event(EventName.DISCOVERY_FAILED, tries=self._dhaad_tries))
        self._send_dhaad(now, out)

    def _dhaad_reply(self, now: float, out: Effects, inbound: Inbound) -> None:
        reply = cast(DhaadReply, inbound.message)
        if reply.identifier != self._dhaad_id or inbound.dst != self.care_of:
            self.counters["dropped:dhaad-unmatched"] += 1
            return
        # A genuine reply fits the minimum MTU (RFC 6275 10.5.1: at most 77 addresses); more
        # is not believed, and the Home Agent list keeps the configured agents plus at most
        # KNOWN_LIMIT learnt ones, so forged replies cannot grow it without bound.
        addresses = [a for a in reply.addresses[:DHAAD_MAX_ADDRESSES] if global_scope(a)]
        if not addresses:
            self.counters["dhaad-empty"] += 1
            return
        self._dhaad_id = None
        configured = list(self.settings.home_agents)
        learnt = [a for a in dict.fromkeys(addresses + self.known_home_agents)
                  if a not in configured][:KNOWN_LIMIT]
        self.known_home_agents = configured + learnt
        order = [a for a in addresses if a not in self._rejected and a != self._avoid]
        order += [a for a in addresses if a not in order and a not in self._rejected]
        if not order:
            order = list(addresses)
            self._rejected = set()
        self._avoid = None
        self._candidates = order[1:]
        self._register_with(order[0], now, out, first=order[0] != self.home_agent)

    # -- going home (RFC 6275 11.5.4, docs/protocol.md 9) -------------------------------------------

    def _return_home(self, now: float, out: Effects) -> None:
        ha = self.home_agent or self.target
        self._tunnel_down(out)
        self._refresh_at = None
        self._dhaad_id = None
        self.care_of = None
        if ha is None:
            self._reset_binding()
            self._retransmit_at = None
            self.state = HOME
            out.append(AnnounceHome(self.home_address, False))
            return
        self.target = ha
        self.state = DEREGISTERING
        self._dereg_tried = set()
        self._timeout = self.settings.initial_timeout
        self._attempts = 0
        self._send_dereg(now, out)

    def _leave(self, now: float, out: Effects) -> None:
        if self.home_agent is None or self.care_of is None:
            return self._stop(now, out)
        self._tunnel_down(out)
        self._refresh_at = None
        self._dhaad_id = None
        self.target = self.home_agent
        self.state = DEREGISTERING
        self._leaving = True
        self._dereg_tried = set()
        self._timeout = self.settings.initial_timeout
        self._attempts = 0
        self._send_dereg(now, out)

    def _send_dereg(self, now: float, out: Effects) -> None:
        s = self.settings
        self.sequence = next_sequence(self.sequence)
        flags = BU_A | BU_H | (BU_R if s.mobile_router else 0)
        assert self.target is not None  # _return_home and _leave name the home agent first
        if self._leaving:
            # RFC 6275 11.7.1: lifetime 0 from the care-of address, Home Address option.
            assert self.care_of is not None  # _leave deregisters this way only when away
            bu = BindingUpdate(self.sequence, flags, 0, (AlternateCareOfAddress(self.care_of),))
            out.append(Send(bu, self.care_of, self.target, home_address=self.home_address,
                            protect=self.target))
        else:
            bu = BindingUpdate(self.sequence, flags, 0,
                               (AlternateCareOfAddress(self.home_address),))
            out.append(Send(bu, self.home_address, self.target, protect=self.target))
        self._sent(self.sequence)
        self._retransmit_at = now + self._jittered(self._timeout)
        self.counters["dereg-sent"] += 1

    def _dereg_retransmit(self, now: float, out: Effects) -> None:
        if self._timeout >= self.settings.max_timeout:
            out.append(Event(EventName.DEREGISTRATION_TIMEOUT, home_agent=self.target))
            # Any home agent of the group holds the binding (as primary or copy) and takes a
            # deregistration: try the others we know before giving up.
            self._dereg_tried.add(self.target)
            others = [a for a in self.known_home_agents if a not in self._dereg_tried]
            if not others:
                return self._home(out)
            self.target = others[0]
            self._timeout = self.settings.initial_timeout
            self._attempts = 0
            return self._send_dereg(now, out)
        self._timeout = min(self._timeout * 2, self.settings.max_timeout)
        self._send_dereg(now, out)

    def _dereg_ack(self, now: float, out: Effects, inbound: Inbound) -> None:
        ba = cast(BindingAck, inbound.message)
        if inbound.src != self.target or not self._answers_in_flight(ba):
            self.counters["dropped:ba-stale"] += 1
            return
        if ba.status == BA_SEQUENCE_OUT_OF_WINDOW:
            self.sequence = ba.sequence
            return self._send_dereg(now, out)
        out.append(Event(EventName.DEREGISTERED, home_agent=self.target, status=ba.status))
        self._home(out, acknowledged=True)

    def _dereg_expired(self, now: float, out: Effects) -> None:
        self._home(out)

    def _home(self, out: Effects, acknowledged: bool = False) -> None:
        if self._leaving:  # a stopping node (leave) is not on its home link: its wait ends
            out.append(LeaveComplete(acknowledged))
        else:
            out.append(AnnounceHome(self.home_address, True))
        self._leaving = False
        self._reset_binding()
        self._retransmit_at = None
        self.target = None
        self.state = HOME
