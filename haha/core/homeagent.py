"""The home agent machine (RFC 6275 10, RFC 3963 6, draft section 5), sans-IO.

:class:`HomeAgent` holds the binding cache (primaries and copies), the Home Agent list and the
synchronisation state, and reacts to three kinds of input, each taking ``now``:

- ``receive(inbound, now)``: a decoded message (:class:`~haha.core.effects.Inbound`);
- ``tick(now)``: timers (binding expiry, peer death, HELLO, BIU/BIR/HASR retransmission, end of
  the boot wait); ``next_deadline()`` says when the next one is due;
- operator and discovery requests: ``start``, ``stop``, ``drain``, ``resume``, ``switch``,
  ``set_preference``, ``add_peer``, ``remove_peer``, ``request_binding``.

Each returns the list of effects to carry out (:mod:`haha.core.effects`). The life cycle,
``created -> booting -> serving <-> draining -> stopped``, is the explicit total table of
:mod:`haha.core.halifecycle`: every input goes through it, and the machine changes state
nowhere else. The rest lives in its own modules: registration rules (:mod:`.registration`),
synchronisation in and out (:mod:`haha.core.sync`), switch requests, take-over of a dead peer's
nodes and address hand-back (:mod:`.switching`), tombstones of deleted bindings
(:mod:`.tombstones`), address take-over (:mod:`.addrtakeover`).

When a peer becomes live, it is asked for all its bindings (bulk BIR); when it dies, the
first-ranked live home agent takes over its mobile nodes from its copies and sends each a HASR
naming itself.
"""

import random
from collections import Counter
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from haha.wire.addresses import address_int
from haha.wire.icmpv6 import DhaadReply, DhaadRequest, RouterAdvertisement
from haha.wire.mh import (
    BE_UNKNOWN_MH_TYPE,
    BindingError,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingUpdate,
    HaHello,
    UnknownMessage,
)

from . import halist
from .addrtakeover import AddressTakeover
from .antientropy import AntiEntropy
from .cache import Binding, BindingCache
from .duties import duties_of, transition
from .effects import AdvertisePrefix, DrainComplete, Event, Inbound, Send, SendIcmp
from .events import EventName
from .flapwatch import FlapWatch
from .halifecycle import (
    ACCEPT,
    DROP,
    IGNORE,
    MESSAGE_INPUTS,
    REFUSE,
    RUNNING,
    SERVES,
    TRANSITIONS,
    HAInput,
    HAState,
    NotServing,
    TableViolation,
)
from .heldcopies import HeldCopies
from .peering import Peering
from .registrar import Registrar
from .slices import Backlog
from .switching import SWITCH_TRIES, TAKE_OVER_SLICE, SwitchRequests, drain_target
from .sync import UNSPECIFIED, Sync, SyncReceiver
from .sync.inbound import SWEEP_SLICE
from .sync.outbound import BULK_SLICE
from .tombstones import TOMBSTONE_TIME, TOMBSTONE_WINDOW, Tombstones

# The states by their old names (importable as before).
CREATED = HAState.CREATED
BOOTING = HAState.BOOTING
SERVING = HAState.SERVING
DRAINING = HAState.DRAINING
STOPPED = HAState.STOPPED

__all__ = ["BOOTING", "CREATED", "DHAAD_MAX_ADDRESSES", "DRAINING", "SERVING", "STOPPED",
           "SWITCH_TRIES", "TOMBSTONE_TIME", "TOMBSTONE_WINDOW", "UNSPECIFIED", "BindingView",
           "HAInput", "HAState", "HomeAgent", "NotServing", "home_agents_anycast"]

#: At most this many addresses in a DHAAD reply: (1280 - 40 - 8) / 16 (RFC 6275 10.5 asks
#: the reply to fit the minimum MTU).
DHAAD_MAX_ADDRESSES = 77

Effects = List[Any]
_Receiver = Callable[[Inbound, Any, float, Effects], None]


def home_agents_anycast(prefix: IPv6Network) -> IPv6Address:
    """The Mobile IPv6 Home-Agents anycast address of ``prefix`` (RFC 2526, RFC 6275 10.5):
    interface identifier FDFF:FFFF:FFFF:FFFE for a /64, else all ones but the last 7 bits
    (anycast ID 0x7E)."""
    base = int(prefix.network_address)
    host = (1 << (128 - prefix.prefixlen)) - 1
    if prefix.prefixlen == 64:
        return IPv6Address(base | 0xFDFF_FFFF_FFFF_FFFE)
    return IPv6Address(base | (host & ~0x7F) | 0x7E)


class BindingView(tuple):
    """A comparable summary of one binding: ``(home_address, care_of, sequence, flags,
    prefixes, primary)`` with ``primary`` the primary home agent's signalling address."""

    __slots__ = ()

    def __new__(cls, home_address: Any, care_of: Any, sequence: int, flags: int,
                prefixes: Tuple[Any, ...], primary: Any) -> "BindingView":
        return tuple.__new__(cls, (home_address, care_of, sequence, flags, prefixes, primary))

    home_address = property(lambda self: self[0])
    care_of = property(lambda self: self[1])
    sequence = property(lambda self: self[2])
    flags = property(lambda self: self[3])
    prefixes = property(lambda self: self[4])
    primary = property(lambda self: self[5])


class HomeAgent:
    """One home agent. ``settings`` is a :class:`~haha.core.settings.HomeAgentSettings`,
    ``rng`` a :class:`random.Random` (identifiers, HELLO sequence start, DHAAD tie order)."""

    def __init__(self, settings: Any, rng: Optional[random.Random] = None) -> None:
        self.settings = settings
        self.rng = rng if rng is not None else random.Random()
        self.counters: Counter = Counter()
        self.cache = BindingCache()
        self.peers = halist.HomeAgentList()
        self.sync = Sync(settings, self.rng, self.counters)
        self.sync_in = SyncReceiver(self)
        self.antientropy = AntiEntropy()
        # Take-over, bulk answers and sweeps run in slices (haha.core.slices); so do expiry
        # and switch retransmissions, at most work.size each per tick.
        self.work = Backlog(counters=self.counters)
        # Cheaper items, larger slices (each bounded by a count, well under 50 ms).
        self.work.sizes.update({"take-over": TAKE_OVER_SLICE, "bulk-answer": BULK_SLICE,
                                "sweep": SWEEP_SLICE, "claims": TAKE_OVER_SLICE})
        self.sync.work = self.work
        self.sync.cache = self.cache
        self.flaps = FlapWatch(self.counters)  # a home address claimed from two care-ofs
        self.address = settings.address
        self.identity = settings.signalling_address
        self.anycast = home_agents_anycast(settings.home_prefix)
        self.preference = settings.preference
        self.home_net = address_int(settings.home_prefix.network_address)
        self.home_mask = address_int(settings.home_prefix.netmask)
        self.peering = Peering(self)  # HELLOs, peers coming and going
        self.registrar = Registrar(self)  # Binding Updates
        self._boot_until: Optional[float] = None
        self.tombstones = Tombstones(settings.biu_max_timeout)
        self._drain_reported = False
        self.takeover = AddressTakeover(settings, self.rng, self.counters)
        self.switching = SwitchRequests(settings, self.rng, self.counters, self.cache,
                                        self.takeover.unswitchable)
        # Refreshes of our own primaries wait while switch requests are out (a take-over's
        # nodes re-registering) and leave packed (haha.core.heldcopies).
        self.held_copies = HeldCopies(
            lambda: bool(self.switching) or self.work.has("take-over"), self.counters)
        # receive() dispatches through the table: per state, message type -> handler.
        self._receivers: Dict[HAState, Dict[type, _Receiver]] = {
            s: self._receivers_in(s) for s in HAState}
        self.state = HAState.CREATED
        self._receive = self._receivers[self.state]

    def _receivers_in(self, state: HAState) -> Dict[type, _Receiver]:
        table: Dict[type, _Receiver] = {}
        for kind, i in list(MESSAGE_INPUTS.items()) + [(object, HAInput.OTHER)]:
            entry = TRANSITIONS[(state, i)]
            if entry.kind == ACCEPT:
                assert entry.handler is not None
                table[kind] = getattr(self, entry.handler)
            else:  # DROP (the table has nothing else for messages)
                table[kind] = self._dropper(str(entry.reason))
        return table

    def _dropper(self, reason: str) -> _Receiver:
        def drop(inb: Inbound, message: Any, now: float, out: Effects) -> None:
            self.drop(out, reason, inb)
        return drop

    # ======================================================================================
    # the life-cycle table (haha.core.halifecycle)
    # ======================================================================================

    def _input(self, i: HAInput, now: float, out: Effects, *args: Any, **kw: Any) -> Effects:
        """Drive one input through :data:`~haha.core.halifecycle.TRANSITIONS`: refuse it
        (:class:`NotServing`), ignore it, or run its handler and check where it left the
        machine."""
        state = self.state
        entry = TRANSITIONS[(state, i)]
        kind = entry.kind
        if kind == REFUSE:
            raise NotServing(f"{i}: the home agent is {state}")
        if kind == IGNORE:
            return out
        if kind == DROP:
            self.drop(out, str(entry.reason))
            return out
        getattr(self, str(entry.handler))(now, out, *args, **kw)
        if self.state not in entry.next:
            raise TableViolation(f"{i} in {state} left the home agent {self.state}, not one of "
                                 f"{sorted(entry.next)}")
        return out

    def _enter(self, state: HAState) -> None:
        self.state = state
        self._receive = self._receivers[state]

    @property
    def running(self) -> bool:
        """Started and not stopped (booting, serving or draining)."""
        return self.state in RUNNING

    @property
    def serving(self) -> bool:
        """Serving mobile nodes (serving or draining)."""
        return self.state in SERVES

    @property
    def draining(self) -> bool:
        return self.state is HAState.DRAINING

    def start(self, now: float) -> Effects:
        """Begin: advertise the home prefix (no home link), greet the peers, start the boot
        wait (draft 5.4). Returns effects."""
        return self._input(HAInput.START, now, [])

    def _start(self, now: float, out: Effects) -> None:
        if self.settings.advertises_prefix:
            out.append(AdvertisePrefix(self.settings.home_prefix, True))
        if self.settings.boot_wait > 0:
            self._enter(HAState.BOOTING)
            self._boot_until = now + self.settings.boot_wait
        else:
            self._enter(HAState.SERVING)
        out.append(Event(EventName.STARTED, state=self.state))
        if self.settings.send_hello:
            self._send_hellos(now, out)
        self.takeover.start(self.peering.known, now, out)
        if self.state is HAState.SERVING:
            self.takeover.boot_over(self.peers, out)

    def _boot_over(self, now: float, out: Effects) -> None:
        self._boot_until = None
        self._enter(HAState.SERVING)
        out.append(Event(EventName.SERVING, peers=len(self.peers)))
        self.takeover.boot_over(self.peers, out)
        for address in list(self.sync.peers):
            e = self.peers.entries.get(address)
            if e is None or not e.answered:  # else it answered while we booted
                self.sync.request(address, None, now, out)

    def stop(self, now: float) -> Effects:
        """Leave: HELLO with lifetime 0 to the peers (they delete this home agent at once),
        withdraw the home prefix. Forwarding state is the backend's to remove
        (``IForwardingBackend.stop``). Returns effects."""
        return self._input(HAInput.STOP, now, [])

    def _stop_unstarted(self, now: float, out: Effects) -> None:
        self._enter(HAState.STOPPED)

    def _stop(self, now: float, out: Effects) -> None:
        if self.settings.send_hello:
            self._send_hellos(now, out, lifetime=0)
        if self.settings.advertises_prefix:
            out.append(AdvertisePrefix(self.settings.home_prefix, False))
        self.takeover.stop(out)
        self._enter(HAState.STOPPED)
        self.peering.next_hello = None
        self._boot_until = None
        self.work.clear()
        self.held_copies.clear()
        out.append(Event(EventName.STOPPED, primaries=self.cache.primary_count))

    def drain(self, now: float) -> Effects:
        """Hand every mobile node over to the other home agents: advertise the drain
        preference, refuse new registrations (129) and send each primary a switch request as
        ``settings.drain`` says. Returns effects."""
        return self._input(HAInput.DRAIN, now, [])

    def _drain(self, now: float, out: Effects) -> None:
        self._enter(HAState.DRAINING)
        self._set_preference(self.settings.drain_preference, now, out)
        primaries = self.cache.primaries()
        out.append(Event(EventName.DRAIN_STARTED, primaries=len(primaries)))
        self.switching.drain_cursor = 0
        self._drain_reported = False
        for b in primaries:
            self.switching.request(b, drain_target(self), now, out)
        self.check_drained(out)

    def resume(self, now: float) -> Effects:
        """Stop draining: serve again with the configured preference. Returns effects."""
        return self._input(HAInput.RESUME, now, [])

    def _resume(self, now: float, out: Effects) -> None:
        self._enter(HAState.SERVING)
        self.switching.cancel_all()
        self._set_preference(self.settings.preference, now, out)
        out.append(Event(EventName.RESUMED))

    def set_preference(self, preference: int, now: float) -> Effects:
        """Change the advertised preference; a HELLO goes out at once (draft 5.4)."""
        if not 0 <= preference <= 0xFFFF:
            raise ValueError(f"preference {preference} is outside 0..65535")
        return self._input(HAInput.SET_PREFERENCE, now, [], preference)

    def _set_preference_call(self, now: float, out: Effects, preference: int) -> None:
        self._set_preference(preference, now, out)

    def switch(self, home_address: Any, now: float, desired: Any = None) -> Effects:
        """Operator request: ask the mobile node of ``home_address`` (a primary binding of this
        home agent) to switch, to ``desired`` if given (draft 5.3). Returns effects."""
        return self._input(HAInput.SWITCH, now, [], home_address, desired)

    def _switch_call(self, now: float, out: Effects, home_address: Any, desired: Any) -> None:
        b = self.cache.get(home_address)
        if b is None or b.primary is not None:
            raise KeyError(f"{home_address} is not a primary binding of this home agent")
        if desired in (self.address, self.identity):
            raise ValueError(f"{home_address} is already registered with this home agent")
        self.switching.request(b, desired, now, out)

    def add_peer(self, address: Any, now: float, source: str = "discovery") -> Effects:
        """A discovery strategy proposes ``address`` (IPeerListener.peer_appeared). Accepted
        only if it is a static peer or inside ``authorised_peer_prefixes``; returns effects
        (a HELLO to the new peer)."""
        return self._input(HAInput.ADD_PEER, now, [], address, source)

    def _add_peer(self, now: float, out: Effects, address: Any, source: str) -> None:
        self.peering.add(address, now, source, out)

    def remove_peer(self, address: Any, now: float, source: str = "discovery") -> Effects:
        """A discovery strategy no longer proposes ``address``. Static peers stay known; a
        candidate that is not live is forgotten. A live peer stays: discovery is not
        authenticated and never ends what the peer's protected HELLOs keep alive (it dies
        when its lifetime passes without one, or by its own HELLO with lifetime 0)."""
        return self._input(HAInput.REMOVE_PEER, now, [], address, source)

    def _remove_peer(self, now: float, out: Effects, address: Any, source: str) -> None:
        self.peering.remove(address, now, source, out)

    def request_binding(self, now: float, home_address: Any = None,
                        prefix: Any = None) -> Effects:
        """Ask every live peer for the binding of ``home_address`` or of mobile network
        ``prefix`` (draft 5.1); only its primary answers. Returns effects."""
        if (home_address is None) == (prefix is None):
            raise ValueError("give exactly one of home_address and prefix")
        target = home_address if home_address is not None else prefix
        return self._input(HAInput.REQUEST_BINDING, now, [], target)

    def _request_binding(self, now: float, out: Effects, target: Any) -> None:
        for address in list(self.sync.peers):
            self.sync.request(address, target, now, out)

    # ======================================================================================
    # queries
    # ======================================================================================

    def primary_of(self, binding: Binding) -> Any:
        """The signalling address of ``binding``'s primary home agent."""
        return self.identity if binding.primary is None else binding.primary

    def snapshot(self) -> Dict[Any, BindingView]:
        """``{home address: BindingView}`` of the whole cache (for comparisons and tests)."""
        return {
            b.home_address: BindingView(b.home_address, b.care_of, b.sequence, b.flags,
                                        b.prefixes, self.primary_of(b))
            for b in self.cache
        }

    @property
    def known_peers(self) -> FrozenSet[Any]:
        """Signalling addresses of every peer known (static or discovered), live or not."""
        return frozenset(self.peering.known)

    def ranked(self) -> List[Tuple[Any, int]]:
        """``(signalling address, preference)`` of every live home agent in sync
        (:mod:`haha.core.halist`), this one included unless stopped, best first
        (docs/protocol.md 6.6)."""
        out = [(e.address, e.preference) for e in self.peers.synced()]
        if self.running:
            out.append((self.identity, self.preference))
        out.sort(key=lambda x: halist.rank_key(x[1], x[0]))
        return out

    def home_agent_addresses(self) -> List[Any]:
        """The DHAAD reply list (RFC 6275 10.5.1): home agent addresses of the live home agents
        by decreasing preference, equal preferences in an order drawn from the injected rng;
        a draining home agent leaves itself out, and so does a peer not in sync."""
        entries = [(e.preference, e.home_agent) for e in self.peers.synced()]
        if self.state is HAState.SERVING:
            entries.append((self.preference, self.address))
        entries.sort(key=lambda x: (-x[0], int(x[1])))
        out: List[Any] = []
        i = 0
        while i < len(entries):
            j = i
            while j < len(entries) and entries[j][0] == entries[i][0]:
                j += 1
            group = [a for _, a in entries[i:j]]
            self.rng.shuffle(group)
            out.extend(group)
            i = j
        return out[:DHAAD_MAX_ADDRESSES]

    def is_known_peer(self, address: Any) -> bool:
        """Whether ``address`` is a configured or accepted peer home agent (its signalling
        address): the adapter's known-source test for HAHA messages in lab mode."""
        return address in self.peering.known

    def busy(self) -> bool:
        """True while synchronisation or switch requests are still outstanding."""
        return bool(self.switching) or self.sync.busy() or self.work.pending() \
            or bool(self.held_copies)

    def urgent(self, now: float) -> bool:
        """True while this home agent has work that should come before its mobile nodes'
        traffic (the transport's input queue asks, haha.io.rxqueue, and holds that traffic
        meanwhile): a take-over still in slices (local work, a few seconds of CPU at 100,000
        bindings), or first switch requests behind their pace (more due than a tick sends,
        ``switching.behind``: telling every node is bounded by the requests' own cost, about
        65 us each, not by the nodes' answers, 200-250 us each). Peers' traffic still goes
        first."""
        return self.work.has("take-over") or self.switching.behind(now)

    # ======================================================================================
    # timers
    # ======================================================================================

    def next_deadline(self) -> Optional[float]:
        """The absolute time of the next timer, or None."""
        candidates = [self.cache.next_expiry(), self.peers.next_expiry(),
                      self.sync.next_deadline(), self.peering.next_hello, self._boot_until,
                      self.switching.next_deadline(), self.takeover.next_deadline(),
                      self.work.next_deadline(), self.held_copies.due]
        due = [t for t in candidates if t is not None]
        return min(due) if due else None

    def tick(self, now: float) -> Effects:
        """Process every timer due at ``now``. Returns effects."""
        return self._input(HAInput.TICK, now, [])

    def _tick(self, now: float, out: Effects) -> None:
        sliced = self.work.pending()  # work queued now had its first slice already
        expired = self.cache.pop_expired(now, self.work.size or None)
        batch = len(expired) > 1  # a mass expiry: deletions leave packed, not one BIU each
        for b in expired:
            self._expired(b, now, out, batch)
        if batch:
            self.sync.flush(now, out)
        for e in self.peers.pop_expired(now):
            self.peering.down(e.address, "expired", now, out)
        if self.held_copies:
            self.held_copies.release(now, self.cache, self.sync, out)
        self.sync.tick(now, out)
        if self._boot_until is not None and now >= self._boot_until:
            self._input(HAInput.BOOT_OVER, now, out)
        next_hello = self.peering.next_hello
        if next_hello is not None and now >= next_hello:
            self.peering.send_hellos(now, out)
        if not self.work.size:
            self.switching.tick(now, out, None)
        elif not self.work.has("take-over"):
            self.switching.tick(now, out, self.switching.slice)
        # else: the take-over's slices first (switching.py): its switch requests wait
        # until every binding it takes is primary here, forwarded and announced.
        if self.takeover.enabled:
            self.takeover.tick(now, out)
        if sliced:
            self.work.run(now, out)

    # ======================================================================================
    # inbound
    # ======================================================================================

    def receive(self, inbound: Inbound, now: float) -> Effects:
        """Process one decoded message (dispatched through the life-cycle table). Returns
        effects."""
        out: Effects = []
        receivers = self._receive
        handler = receivers.get(type(inbound.message))
        if handler is None:
            handler = receivers[object]
        handler(inbound, inbound.message, now, out)
        return out

    def drop(self, out: Effects, reason: str, inbound: Optional[Inbound] = None,
             **fields: Any) -> None:
        """Count a message (or input) dropped for ``reason`` and say so in an event."""
        self.counters["dropped:" + reason] += 1
        if inbound is not None:
            fields.setdefault("message", type(inbound.message).__name__)
            fields.setdefault("src", inbound.src)
        out.append(Event(EventName.DROPPED, reason=reason, **fields))

    _drop = drop  # the old name

    # -- Binding Update (RFC 6275 10.3, RFC 3963 6.2) --------------------------------------

    def _on_bu(self, inb: Inbound, bu: BindingUpdate, now: float, out: Effects) -> None:
        self.registrar.binding_update(inb, bu, now, out)

    # -- BIU, BIA, BIR: haha.core.sync ----------------------------------------------------

    def _on_biu(self, inb: Inbound, biu: BindingInfoUpdate, now: float, out: Effects) -> None:
        self.sync_in.biu(inb, biu, now, out)

    def _on_bia(self, inb: Inbound, bia: BindingInfoAck, now: float, out: Effects) -> None:
        self.sync_in.bia(inb, bia, now, out)

    def _on_bir(self, inb: Inbound, bir: BindingInfoRequest, now: float,
                out: Effects) -> None:
        self.sync_in.bir(inb, bir, now, out)

    # -- HELLO, Router Advertisements, peers coming and going: haha.core.peering ---------

    def peer_check(self, inb: Inbound, out: Effects) -> bool:
        """Whether ``inb`` comes from a known peer, protected by that peer's SA when
        protection is required; if not, it is counted and dropped."""
        return self.peering.check(inb, out)

    def _on_hello(self, inb: Inbound, hello: HaHello, now: float, out: Effects) -> None:
        self.peering.hello(inb, hello, now, out)

    def _on_ra(self, inb: Inbound, ra: RouterAdvertisement, now: float, out: Effects) -> None:
        self.peering.router_advertisement(inb, ra, now, out)

    def _send_hellos(self, now: float, out: Effects, lifetime: Optional[int] = None) -> None:
        self.peering.send_hellos(now, out, lifetime)

    def _set_preference(self, preference: int, now: float, out: Effects) -> None:
        if preference == self.preference:
            return
        self.preference = preference
        out.append(Event(EventName.PREFERENCE, preference=preference))
        if self.settings.send_hello and self.running:
            self.peering.send_hellos(now, out)

    # -- DHAAD (RFC 6275 10.5, RFC 3963 7) -------------------------------------------------

    def _on_dhaad(self, inb: Inbound, req: DhaadRequest, now: float, out: Effects) -> None:
        if not self.settings.dhaad:
            return self.drop(out, "dhaad-not-served", inb)
        if inb.dst != self.anycast and inb.dst != self.address:
            return self.drop(out, "dhaad-wrong-destination", inb)
        if req.mobile_router and not self.settings.nemo:
            return self.drop(out, "dhaad-mobile-router", inb)
        reply = DhaadReply(req.identifier, tuple(self.home_agent_addresses()),
                           req.mobile_router)
        out.append(SendIcmp(reply, self.address, inb.src))
        self.counters["dhaad-replied"] += 1

    def _on_be(self, inb: Inbound, be: BindingError, now: float, out: Effects) -> None:
        # A node that does not know the switch request answers it with status 2 (RFC 6275
        # 9.2): it will never switch, address take-over serves it where it is.
        switching = self.switching
        hoa = inb.home_address or be.home_address
        if hoa not in switching:
            # Some stacks leave the Home Address field unspecified: the care-of address tells.
            hoa = self.takeover.switch_target(switching.pending, self.cache, inb.src) or hoa
        st = switching.get(hoa)
        b = self.cache.get(hoa)
        if be.status != BE_UNKNOWN_MH_TYPE or st is None or b is None or b.primary is not None \
                or inb.src not in (b.care_of, hoa):
            return self.drop(out, "unexpected", inb)
        switching.cancel(hoa)
        self.takeover.unswitchable.add(hoa)
        self.counters["switch-unsupported"] += 1
        out.append(Event(EventName.SWITCH_UNSUPPORTED, home_address=hoa))

    # -- anything else -----------------------------------------------------------------------

    def _on_unknown(self, inb: Inbound, msg: UnknownMessage, now: float, out: Effects) -> None:
        # RFC 6275 9.2: an unrecognised MH type is answered with Binding Error status 2,
        # from the address it was sent to: never from a group (nor ::), so a message sent to
        # a multicast address is not answered (as RFC 4443 2.4 e) for ICMPv6 errors).
        if inb.dst.is_multicast or inb.dst.is_unspecified:
            return self.drop(out, "unknown-mh-to-group", inb)
        be = BindingError(BE_UNKNOWN_MH_TYPE, inb.home_address or UNSPECIFIED)
        out.append(Send(be, inb.dst, inb.src))
        self.counters["be-sent"] += 1

    # ======================================================================================
    # expiry, draining
    # ======================================================================================

    def _expired(self, b: Binding, now: float, out: Effects, batch: bool = False) -> None:
        if b.primary is not None and self.settings.take_over:
            self.takeover.linger(b, now)
        self.tombstones.bury(b.home_address, b.sequence, now)
        transition(b.home_address, duties_of(self.settings, b), (None, False), out)
        self.switching.cancel(b.home_address)
        out.append(Event(EventName.BINDING_EXPIRED, home_address=b.home_address,
                         primary=b.primary is None))
        if b.primary is None:
            self.sync.publish(b, now, out, deleted=True, batch=batch)
            self.check_drained(out)

    def check_drained(self, out: Effects) -> None:
        """While draining, once the last primary is gone: :class:`DrainComplete` for whoever
        waits for the drain, and the ``drain-complete`` event."""
        if self.state is HAState.DRAINING and self.cache.primary_count == 0 \
                and not self._drain_reported:
            self._drain_reported = True
            out.append(DrainComplete())
            out.append(Event(EventName.DRAIN_COMPLETE))
