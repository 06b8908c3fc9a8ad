"""The home agent machine (RFC 6275 10, RFC 3963 6, draft section 5), sans-IO.

:class:`HomeAgent` holds the binding cache (primaries and copies), the Home Agent list and the
synchronisation state, and reacts to three kinds of input, each taking ``now``:

- ``receive(inbound, now)``: a decoded message (:class:`~haha.core.effects.Inbound`);
- ``tick(now)``: timers (binding expiry, peer death, HELLO, BIU/BIR/HASR retransmission, end of
  the boot wait); ``next_deadline()`` says when the next one is due;
- operator and discovery requests: ``start``, ``stop``, ``drain``, ``resume``, ``switch``,
  ``set_preference``, ``add_peer``, ``remove_peer``, ``request_binding``.

Each returns the list of effects to carry out (:mod:`haha.core.effects`). Life cycle:
``created -> booting -> serving <-> draining -> stopped``; while booting (draft 5.4 "SHOULD
wait") the home agent listens to HELLOs and learns bindings but does not serve mobile nodes.

Synchronisation rules (docs/protocol.md 6.3-6.6): every create, update and delete of a primary
binding goes to every live peer as an unsolicited BIU; a BIU entry older than what is held is
rejected (BIA 129) and does not overwrite; equal sequence numbers from different primaries are
settled by rank (a live primary beats a dead one; then highest preference, lowest address), so
every home agent reaches the same answer. When a peer becomes live, it is asked for all its
bindings (bulk BIR); when it dies, the first-ranked live home agent takes over its mobile nodes
from its copies and sends each a HASR naming itself.
"""

import heapq
import itertools
import math
import random
from collections import Counter, deque
from ipaddress import IPv6Address

from haha.wire.addresses import address_int
from haha.wire.icmpv6 import RA_H, DhaadReply, DhaadRequest, RouterAdvertisement
from haha.wire.mh import (
    BA_R,
    BE_UNKNOWN_MH_TYPE,
    BIA_REJECTED_NOT_AUTHORISED,
    BIA_REJECTED_OLDER,
    BIA_SYNCHRONISED,
    BU_A,
    BU_H,
    BU_R,
    BindingAck,
    BindingError,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingUpdate,
    HaHello,
    HaSwitchRequest,
    HomeAgentSwitch,
    UnknownMessage,
)
from haha.wire.options import IPADDR_HOME_AGENT, AlternateCareOfAddress, IpAddress
from haha.wire.options import BindingDigest, MobileNetworkPrefix

from haha.wire.records import maker
from . import candidates, halist, registration
from .addrtakeover import AddressTakeover, handback_address
from .cache import BindingCache
from .duties import duties_of, transition
from .effects import AdvertisePrefix, Event, Send, SendIcmp, make_install, make_send
from .seqnum import distance, next_sequence, seconds
from .flapwatch import FlapWatch
from .slices import Backlog
from .settings import DRAIN_BEST, DRAIN_DISCOVER, SWITCH_RFC5142
from .antientropy import AntiEntropy
from .sync import UNSPECIFIED, Sync

CREATED = "created"
BOOTING = "booting"
SERVING = "serving"
DRAINING = "draining"
STOPPED = "stopped"

#: A switch request (HASR) is sent at most this many times (1 s doubling: about 95 s).
SWITCH_TRIES = 7

#: A deleted binding leaves a tombstone this long (seconds): a late or retransmitted BIU with an
#: older sequence number must not bring it back. At least this, or 4 x ``biu_max_timeout``.
TOMBSTONE_TIME = 300.0

#: ... and guards sequence numbers up to this far behind the deleted one (further behind is a
#: mobile node that restarted with a new random number, which RFC 6275 9.5.1 lets register).
TOMBSTONE_WINDOW = 64  # strictly older, up to this far behind

#: At most this many addresses in a DHAAD reply: (1280 - 40 - 8) / 16 (RFC 6275 10.5 asks
#: the reply to fit the minimum MTU).
DHAAD_MAX_ADDRESSES = 77

_ba = maker(BindingAck)


def home_agents_anycast(prefix):
    """The Mobile IPv6 Home-Agents anycast address of ``prefix`` (RFC 2526, RFC 6275 10.5):
    interface identifier FDFF:FFFF:FFFF:FFFE for a /64, else all ones but the last 7 bits
    (anycast ID 0x7E)."""
    base = int(prefix.network_address)
    host = (1 << (128 - prefix.prefixlen)) - 1
    if prefix.prefixlen == 64:
        return IPv6Address(base | 0xFDFF_FFFF_FFFF_FFFE)
    return IPv6Address(base | (host & ~0x7F) | 0x7E)


class NotServing(RuntimeError):
    """An operator request that the home agent cannot honour in its current state."""


class BindingView(tuple):
    """A comparable summary of one binding: ``(home_address, care_of, sequence, flags,
    prefixes, primary)`` with ``primary`` the primary home agent's signalling address."""

    __slots__ = ()

    def __new__(cls, home_address, care_of, sequence, flags, prefixes, primary):
        return tuple.__new__(cls, (home_address, care_of, sequence, flags, prefixes, primary))

    home_address = property(lambda self: self[0])
    care_of = property(lambda self: self[1])
    sequence = property(lambda self: self[2])
    flags = property(lambda self: self[3])
    prefixes = property(lambda self: self[4])
    primary = property(lambda self: self[5])


class _SwitchState:
    """A switch request in progress: ``waiting`` until its paced first transmission, then
    retransmitted until the node re-registers elsewhere or ``SWITCH_TRIES`` are spent."""

    __slots__ = ("desired", "sequence", "timeout", "next_at", "tries", "waiting")

    def __init__(self, desired, sequence, timeout, next_at, waiting):
        self.desired = desired
        self.sequence = sequence
        self.timeout = timeout
        self.next_at = next_at
        self.tries = 1
        self.waiting = waiting


class HomeAgent:
    """One home agent. ``settings`` is a :class:`~haha.core.settings.HomeAgentSettings`,
    ``rng`` a :class:`random.Random` (identifiers, HELLO sequence start, DHAAD tie order)."""

    def __init__(self, settings, rng=None):
        self.settings = settings
        self.rng = rng if rng is not None else random.Random()
        self.counters = Counter()
        self.cache = BindingCache()
        self.peers = halist.HomeAgentList()
        self.sync = Sync(settings, self.rng, self.counters)
        self.antientropy = AntiEntropy()
        self._untold = set()  # peers declared dead: what we registered since is not theirs
        # Take-over, bulk answers and sweeps run in slices (haha.core.slices); so do expiry
        # and switch retransmissions, at most work.size each per tick.
        self.work = Backlog(counters=self.counters)
        self.sync.work = self.work
        self.sync.cache = self.cache
        self.flaps = FlapWatch(self.counters)  # a home address claimed from two care-ofs
        self.state = CREATED
        self.address = settings.address
        self.identity = settings.signalling_address
        self.anycast = home_agents_anycast(settings.home_prefix)
        self.preference = settings.preference
        self._net = address_int(settings.home_prefix.network_address)
        self._mask = address_int(settings.home_prefix.netmask)
        self._known = candidates.KnownPeers(settings.peers, settings.max_candidates,
                                            settings.ha_lifetime, self.peers.__contains__)
        self._hello_seq = self.rng.randrange(1 << 16)
        self._next_hello = None
        self._boot_until = None
        self._switch = {}
        self._switch_heap = []  # (next_at, order, home address): ties never compare addresses
        self._switch_order = itertools.count()
        self._switch_slot = 0.0  # when the next paced first switch request may leave
        self._tombstones = {}  # home address -> (sequence, until)
        self._tomb_queue = deque()
        self._drain_cursor = 0
        self._drain_reported = False
        self.takeover = AddressTakeover(settings, self.rng, self.counters)
        self._handlers = {
            BindingUpdate: self._on_bu,
            HaHello: self._on_hello,
            BindingInfoUpdate: self._on_biu,
            BindingInfoAck: self._on_bia,
            BindingInfoRequest: self._on_bir,
            DhaadRequest: self._on_dhaad,
            RouterAdvertisement: self._on_ra,
            UnknownMessage: self._on_unknown,
            BindingError: self._on_be,
        }

    # ======================================================================================
    # life cycle and operator requests
    # ======================================================================================

    def start(self, now):
        """Begin: advertise the home prefix (no home link), greet the peers, start the boot
        wait (draft 5.4). Returns effects."""
        if self.state != CREATED:
            raise NotServing(f"start: the home agent is {self.state}")
        out = []
        if self.settings.advertises_prefix:
            out.append(AdvertisePrefix(self.settings.home_prefix, True))
        if self.settings.boot_wait > 0:
            self.state = BOOTING
            self._boot_until = now + self.settings.boot_wait
        else:
            self.state = SERVING
        out.append(Event("started", state=self.state))
        if self.settings.send_hello:
            self._send_hellos(now, out)
        self.takeover.start(self._known, now, out)
        if self.state == SERVING:
            self.takeover.boot_over(self.peers, out)
        return out

    def stop(self, now):
        """Leave: HELLO with lifetime 0 to the peers (they delete this home agent at once),
        withdraw the home prefix. Forwarding state is the backend's to remove
        (``IForwardingBackend.stop``). Returns effects."""
        out = []
        if self.state in (CREATED, STOPPED):
            self.state = STOPPED
            return out
        if self.settings.send_hello:
            self._send_hellos(now, out, lifetime=0)
        if self.settings.advertises_prefix:
            out.append(AdvertisePrefix(self.settings.home_prefix, False))
        self.takeover.stop(out)
        self.state = STOPPED
        self._next_hello = None
        self._boot_until = None
        self.work.clear()
        out.append(Event("stopped", primaries=self.cache.primary_count))
        return out

    def drain(self, now):
        """Hand every mobile node over to the other home agents: advertise the drain
        preference, refuse new registrations (129) and send each primary a switch request as
        ``settings.drain`` says. Returns effects."""
        if self.state != SERVING:
            raise NotServing(f"drain: the home agent is {self.state}")
        self.state = DRAINING
        out = []
        self._set_preference(self.settings.drain_preference, now, out)
        primaries = self.cache.primaries()
        out.append(Event("drain-started", primaries=len(primaries)))
        self._drain_cursor = 0
        self._drain_reported = False
        for b in primaries:
            self._request_switch(b, self._drain_target(), now, out)
        self._check_drained(out)
        return out

    def resume(self, now):
        """Stop draining: serve again with the configured preference. Returns effects."""
        if self.state != DRAINING:
            raise NotServing(f"resume: the home agent is {self.state}")
        self.state = SERVING
        out = []
        for hoa in list(self._switch):
            self._cancel_switch(hoa)
        self._set_preference(self.settings.preference, now, out)
        out.append(Event("resumed"))
        return out

    def set_preference(self, preference, now):
        """Change the advertised preference; a HELLO goes out at once (draft 5.4)."""
        if not 0 <= preference <= 0xFFFF:
            raise ValueError(f"preference {preference} is outside 0..65535")
        out = []
        self._set_preference(preference, now, out)
        return out

    def switch(self, home_address, now, desired=None):
        """Operator request: ask the mobile node of ``home_address`` (a primary binding of this
        home agent) to switch, to ``desired`` if given (draft 5.3). Returns effects."""
        if self.state not in (SERVING, DRAINING):
            raise NotServing(f"switch: the home agent is {self.state}")
        b = self.cache.get(home_address)
        if b is None or b.primary is not None:
            raise KeyError(f"{home_address} is not a primary binding of this home agent")
        if desired in (self.address, self.identity):
            raise ValueError(f"{home_address} is already registered with this home agent")
        out = []
        self._request_switch(b, desired, now, out)
        return out

    def add_peer(self, address, now, source="discovery"):
        """A discovery strategy proposes ``address`` (IPeerListener.peer_appeared). Accepted
        only if it is a static peer or inside ``authorised_peer_prefixes``; returns effects
        (a HELLO to the new peer)."""
        out = []
        if address == self.identity:
            return out
        if not self._authorised(address):
            self.counters["peer-refused"] += 1
            out.append(Event("peer-refused", peer=address, source=source))
            return out
        added = self._known.add(address, now)
        if added == candidates.FULL:
            self.counters["peer-refused:candidates-full"] += 1
        elif added == candidates.ADDED:
            out.append(Event("peer-known", peer=address, source=source))
            if self.settings.send_hello and self.state in (BOOTING, SERVING, DRAINING):
                self._send_hello(address, now, out)
        return out

    def remove_peer(self, address, now, source="discovery"):
        """A discovery strategy no longer proposes ``address``. Static peers stay known; a
        candidate that is not live is forgotten. A live peer stays: discovery is not
        authenticated and never ends what the peer's protected HELLOs keep alive (it dies
        when its lifetime passes without one, or by its own HELLO with lifetime 0)."""
        out = []
        if address in self.settings.peers or address not in self._known:
            return out
        if address in self.peers:
            self.counters["peer-withdrawal-ignored:live"] += 1
            return out
        self._known.discard(address)
        out.append(Event("peer-forgotten", peer=address, source=source))
        self._untold.discard(address)
        return out

    def request_binding(self, now, home_address=None, prefix=None):
        """Ask every live peer for the binding of ``home_address`` or of mobile network
        ``prefix`` (draft 5.1); only its primary answers. Returns effects."""
        if (home_address is None) == (prefix is None):
            raise ValueError("give exactly one of home_address and prefix")
        out = []
        target = home_address if home_address is not None else prefix
        for address in list(self.sync.peers):
            self.sync.request(address, target, now, out)
        return out

    # ======================================================================================
    # queries
    # ======================================================================================

    @property
    def serving(self):
        return self.state in (SERVING, DRAINING)

    def primary_of(self, binding):
        """The signalling address of ``binding``'s primary home agent."""
        return self.identity if binding.primary is None else binding.primary

    def snapshot(self):
        """``{home address: BindingView}`` of the whole cache (for comparisons and tests)."""
        return {
            b.home_address: BindingView(b.home_address, b.care_of, b.sequence, b.flags,
                                        b.prefixes, self.primary_of(b))
            for b in self.cache
        }

    @property
    def known_peers(self):
        """Signalling addresses of every peer known (static or discovered), live or not."""
        return frozenset(self._known)

    def ranked(self):
        """``(signalling address, preference)`` of every live home agent in sync
        (:mod:`haha.core.halist`), this one included unless stopped, best first
        (docs/protocol.md 6.6)."""
        out = [(e.address, e.preference) for e in self.peers.synced()]
        if self.state not in (CREATED, STOPPED):
            out.append((self.identity, self.preference))
        out.sort(key=lambda x: halist.rank_key(x[1], x[0]))
        return out

    def home_agent_addresses(self):
        """The DHAAD reply list (RFC 6275 10.5.1): home agent addresses of the live home agents
        by decreasing preference, equal preferences in an order drawn from the injected rng;
        a draining home agent leaves itself out, and so does a peer not in sync."""
        entries = [(e.preference, e.home_agent) for e in self.peers.synced()]
        if self.state == SERVING:
            entries.append((self.preference, self.address))
        entries.sort(key=lambda x: (-x[0], int(x[1])))
        out = []
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

    def is_known_peer(self, address):
        """Whether ``address`` is a configured or accepted peer home agent (its signalling
        address): the adapter's known-source test for HAHA messages in lab mode."""
        return address in self._known

    def busy(self):
        """True while synchronisation or switch requests are still outstanding."""
        return bool(self._switch) or self.sync.busy() or self.work.pending()

    # ======================================================================================
    # timers
    # ======================================================================================

    def next_deadline(self):
        """The absolute time of the next timer, or None."""
        candidates = [self.cache.next_expiry(), self.peers.next_expiry(),
                      self.sync.next_deadline(), self._next_hello, self._boot_until,
                      self._next_switch(), self.takeover.next_deadline(),
                      self.work.next_deadline()]
        due = [t for t in candidates if t is not None]
        return min(due) if due else None

    def tick(self, now):
        """Process every timer due at ``now``. Returns effects."""
        out = []
        if self.state in (CREATED, STOPPED):
            return out
        sliced = self.work.pending()  # work queued now had its first slice already
        expired = self.cache.pop_expired(now, self.work.size or None)
        batch = len(expired) > 1  # a mass expiry: deletions leave packed, not one BIU each
        for b in expired:
            self._expired(b, now, out, batch)
        if batch:
            self.sync.flush(now, out)
        for e in self.peers.pop_expired(now):
            self._peer_down(e.address, "expired", now, out)
        self.sync.tick(now, out)
        if self._boot_until is not None and now >= self._boot_until:
            self._boot_until = None
            self.state = SERVING
            out.append(Event("serving", peers=len(self.peers)))
            self.takeover.boot_over(self.peers, out)
            for address in list(self.sync.peers):
                self.sync.request(address, None, now, out)
        if self._next_hello is not None and now >= self._next_hello:
            self._send_hellos(now, out)
        self._tick_switches(now, out)
        if self.takeover.enabled:
            self.takeover.tick(now, out)
        if sliced:
            self.work.run(now, out)
        return out

    # ======================================================================================
    # inbound
    # ======================================================================================

    def receive(self, inbound, now):
        """Process one decoded message. Returns effects."""
        out = []
        if self.state in (CREATED, STOPPED):
            self._drop(out, "not-running", inbound)
            return out
        handler = self._handlers.get(type(inbound.message))
        if handler is None:
            self._drop(out, "unexpected", inbound)
        else:
            handler(inbound, inbound.message, now, out)
        return out

    def _drop(self, out, reason, inbound=None, **fields):
        self.counters["dropped:" + reason] += 1
        if inbound is not None:
            fields.setdefault("message", type(inbound.message).__name__)
            fields.setdefault("src", inbound.src)
        out.append(Event("dropped", reason=reason, **fields))

    # -- Binding Update (RFC 6275 10.3, RFC 3963 6.2) --------------------------------------

    def _on_bu(self, inb, bu, now, out):
        hoa = inb.home_address or inb.src
        flags = bu.flags
        if not flags & BU_H:
            # Not a home registration: correspondent registrations need return routability
            # (RFC 6275 9.5.1), which a home agent without route optimisation discards.
            return self._drop(out, "not-home-registration", inb)
        by = inb.protected_by
        if by is not None and by is not hoa and by != hoa:
            return self._drop(out, "sa-mismatch", inb, home_address=hoa)
        if self.state == BOOTING:
            return self._drop(out, "booting", inb)
        care_of = inb.src
        for o in bu.options:
            if type(o) is AlternateCareOfAddress:
                care_of = o.address
                break
        if care_of != hoa and address_int(care_of) & self._mask == self._net \
                and bu.lifetime and self.settings.proxies_nd:
            # A node started on its home link may send a BU or two with a care-of address in
            # the home prefix before it notices it is home (docs/protocol.md 9): no tunnel to the
            # home link, no rejection that would make it give up on this home agent.
            return self._drop(out, "care-of-in-home-prefix", inb, home_address=hoa)
        held = self.cache.get(hoa)
        v = registration.examine(self.settings, bu, hoa, care_of, held, self.state == DRAINING)
        action = v.action
        if action == registration.REGISTER:
            self._register(hoa, care_of, bu, v, inb.dst, held, now, out)
        elif action == registration.DEREGISTER:
            self._deregister(held, now, out, "deregistered")
            self.counters["bu-deregistered"] += 1
        elif action == registration.DUPLICATE:
            self.counters["bu-duplicate"] += 1
        else:
            self.counters[f"bu-rejected:{v.status}"] += 1
        if flags & BU_A or v.status >= 128:
            routing = inb.home_address if inb.home_address is not None \
                and inb.home_address != inb.src else None
            ba_flags = BA_R if flags & BU_R and self.settings.nemo else 0
            out.append(make_send(_ba(v.status, v.sequence, v.lifetime, ba_flags, ()),
                                 inb.dst, inb.src, None, routing, hoa))

    def _register(self, hoa, care_of, bu, v, local, held, now, out):
        lifetime = seconds(v.lifetime)
        expires = now + lifetime
        prefixes = v.prefixes
        if held is not None and held.care_of != care_of:
            self.flaps.moved(hoa, held.care_of, care_of, now, out)
        if held is not None and held.primary is None:
            # A refresh or a move of our own primary: duties change only with the tunnel.
            same = held.care_of == care_of and held.prefixes == prefixes and held.local == local
            b = self.cache.store(hoa, care_of, bu.flags, bu.sequence, lifetime, expires,
                                 prefixes, None, local, now, held)
            if not same:
                # Still primary, so proxy duty unchanged; the tunnel moved.
                out.append(make_install(duties_of(self.settings, b)[0]))
                out.append(Event("binding-updated", home_address=hoa, care_of=care_of,
                                 sequence=bu.sequence))
        else:
            previous = held.primary if held is not None else None
            old = duties_of(self.settings, held)
            b = self.cache.store(hoa, care_of, bu.flags, bu.sequence, lifetime, expires,
                                 prefixes, None, local, now, held)
            transition(hoa, old, duties_of(self.settings, b), out)
            out.append(Event("binding-created", home_address=hoa, care_of=care_of,
                             sequence=bu.sequence, prefixes=prefixes, previous=previous))
        self.counters["bu-accepted"] += 1
        if self._tombstones:
            self._tombstones.pop(hoa, None)
        if self._switch and hoa in self._switch:
            if self._switch[hoa].sequence != bu.sequence:
                self._cancel_switch(hoa)
        self.sync.publish(b, now, out)

    def _deregister(self, held, now, out, why):
        hoa = held.home_address
        self.cache.remove(hoa)
        self._bury(hoa, held.sequence, now)
        transition(hoa, duties_of(self.settings, held), (None, False), out)
        self._cancel_switch(hoa)
        out.append(Event("binding-deleted", home_address=hoa, reason=why,
                         primary=held.primary is None))
        # Whoever held it, the deregistration reached this home agent: tell everybody.
        self.sync.publish(held, now, out, deleted=True)
        self._check_drained(out)

    # -- HELLO (draft 5.4) -----------------------------------------------------------------

    def _peer_check(self, inb, out):
        src = inb.src
        if src not in self._known:
            self._drop(out, "unknown-peer", inb)
            return False
        by = inb.protected_by
        if by is None:
            if self.settings.peer_protection_required:
                self._drop(out, "unprotected", inb)
                return False
        elif by is not src and by != src:
            self._drop(out, "sa-mismatch", inb)
            return False
        return True

    def _on_hello(self, inb, hello, now, out):
        if not self._peer_check(inb, out):
            return
        self.counters["hello-received"] += 1
        prefix = self.settings.home_prefix
        if hello.prefix_length != prefix.prefixlen or (
                hello.home_agent not in prefix and not self.settings.advertises_prefix):
            return self._drop(out, "foreign-prefix", inb)
        result = self.peers.hello(inb.src, hello, now)
        if result == halist.STALE:
            return self._drop(out, "stale-hello", inb, sequence=hello.sequence)
        self.takeover.peer_hello(inb.src, hello)
        if self.settings.hello_misses and result != halist.DELETED:
            e = self.peers.get(inb.src)
            if e is not None:  # fast failure detection (settings.hello_misses)
                e.expires = min(e.expires,
                                now + self.settings.hello_misses * self.settings.hello_interval)
        self._peer_result(inb.src, result, now, out)
        self._check_digest(inb.src, hello, now, out)

    def _check_digest(self, peer, hello, now, out):
        """Anti-entropy (:mod:`.antientropy`): compare the HELLO's digest of ``peer``'s
        primaries with our copies naming it; a lasting difference asks it for everything."""
        if peer not in self.peers or self.state not in (SERVING, DRAINING):
            return
        theirs = None
        for o in hello.options:
            if type(o) is BindingDigest:
                theirs = (o.count, o.digest)
        mine = self.cache.digest(peer)
        if self.antientropy.heard(peer, theirs, mine, now):
            self.counters["anti-entropy-repairs"] += 1
            out.append(Event("anti-entropy-repair", peer=peer, theirs=theirs[0], ours=mine[0]))
            self.sync.request(peer, None, now, out)

    def _peer_result(self, address, result, now, out):
        if result == halist.RESTARTED:
            # Its HELLO sequence jumped back: it restarted and must answer again before it
            # is ranked (halist); it asks us for everything itself.
            out.append(Event("peer-restarted", peer=address))
            if self.serving:
                self.sync.request(address, None, now, out)
        elif result == halist.NEW:
            self.sync.add_peer(address)
            e = self.peers.get(address)
            self.takeover.peer_seen(address, e.home_agent)
            out.append(Event("peer-up", peer=address, home_agent=e.home_agent,
                             preference=e.preference, via=e.source))
            if self.settings.send_hello and e.source == "hello":
                self._send_hello(address, now, out)
            if self.serving:
                self.sync.request(address, None, now, out)
            if address in self._untold and self.state in (SERVING, DRAINING):
                # Push as well as pull: a peer we declared dead may never have doubted us, and
                # then it will not ask for what we registered meanwhile. (If it restarted, its
                # bulk request takes over whatever of this push has not left yet.)
                for b in self.cache.primaries():
                    self.sync.offer(address, b, now, out)
            self._untold.discard(address)
        elif result == halist.DELETED:
            self._peer_down(address, "lifetime-zero", now, out)
        elif result == halist.UPDATED:
            e = self.peers.get(address)
            self.takeover.peer_seen(address, e.home_agent)
            out.append(Event("peer-changed", peer=address, preference=e.preference,
                             lifetime=e.lifetime))

    def _hello_message(self, lifetime):
        s = self.settings
        self._hello_seq = next_sequence(self._hello_seq)
        return HaHello(self._hello_seq, self.preference, lifetime,
                       min(0xFFFF, math.ceil(s.hello_interval)), s.home_prefix.prefixlen,
                       self.address, tuple(MobileNetworkPrefix(p) for p in s.hello_prefixes)
                       + (BindingDigest(*self.cache.digest()),)
                       + self.takeover.hello_options())

    def _send_hello(self, address, now, out, lifetime=None):
        if lifetime is None:
            lifetime = self.settings.ha_lifetime
        out.append(Send(self._hello_message(lifetime), self.identity, address, protect=address))
        self.counters["hello-sent"] += 1

    def _send_hellos(self, now, out, lifetime=None):
        for address in sorted(self._known, key=int):
            self._send_hello(address, now, out, lifetime)
        self._next_hello = now + self.settings.hello_interval

    def _set_preference(self, preference, now, out):
        if preference == self.preference:
            return
        self.preference = preference
        out.append(Event("preference", preference=preference))
        if self.settings.send_hello and self.state not in (CREATED, STOPPED):
            self._send_hellos(now, out)

    # -- Router Advertisement from a home agent on the same link (docs/protocol.md 6.8) ----------

    def _on_ra(self, inb, ra, now, out):
        # Not authenticated: an advertisement never creates, refreshes, ranks or deletes a
        # peer (halist). Discovery may propose its sender as a candidate (add_peer).
        if not ra.flags & RA_H:
            self.counters["ignored:not-home-agent-ra"] += 1
            return
        self.counters["ignored:ra-not-liveness"] += 1

    def _authorised(self, address):
        if address in self.settings.peers:
            return True
        return any(address in p for p in self.settings.authorised_peer_prefixes)

    # -- peers coming and going ------------------------------------------------------------

    def _peer_down(self, address, reason, now, out):
        self.sync.drop_peer(address)
        self.antientropy.forget(address)
        self._untold.add(address)
        out.append(Event("peer-down", peer=address, reason=reason))
        self.takeover.peer_gone(address, out)
        if not self.settings.take_over or self.state not in (SERVING, DRAINING):
            return
        ranked = self.ranked()
        if not ranked or ranked[0][0] != self.identity:
            return
        copies = list(self.cache.copies_of(address))
        local = self.takeover.take_over(address, self.peers, out) or self.address
        for b in self.takeover.lingering_of(address, now):
            # A copy that expired before its primary was declared dead (addrtakeover.py).
            if self.cache.get(b.home_address) is None:
                self._tombstones.pop(b.home_address, None)
                copies.append(self.cache.store(b.home_address, b.care_of, b.flags, b.sequence,
                                               b.lifetime, now + b.lifetime, b.prefixes,
                                               address, None, now))
        if not copies:
            return
        taken = [0]

        def take(b, now, out):
            if self.cache.get(b.home_address) is not b or b.primary != address:
                return  # refreshed by another primary, or deleted, since the peer died
            old = duties_of(self.settings, b)
            b = self.cache.store(b.home_address, b.care_of, b.flags, b.sequence, b.lifetime,
                                 b.expires, b.prefixes, None, local, now)
            transition(b.home_address, old, duties_of(self.settings, b), out)
            self.sync.publish(b, now, out, batch=True)  # sent packed at the end of the slice
            # A draining home agent still takes over (nobody else would: it may rank first
            # in its peers' view), then passes the nodes on as its drain says.
            desired = self.address if self.state == SERVING else self._drain_target()
            self._request_switch(b, desired, now, out)
            taken[0] += 1

        def done(now, out):
            self.counters["taken-over"] += taken[0]
            out.append(Event("take-over", peer=address, count=taken[0]))

        # In slices (haha.core.slices); dropped if the peer comes back or this HA stops.
        self.work.add(copies, take, now, out, name="take-over", done=done,
                      after=self.sync.flush,
                      alive=lambda: self.state in (SERVING, DRAINING)
                      and address not in self.peers)

    # -- BIU, BIA, BIR (draft 5.1, 5.2) ----------------------------------------------------

    def _preference_of(self, address):
        if address == self.identity:
            return self.preference
        e = self.peers.get(address)
        return e.preference if e is not None else 0

    def _loses_tie(self, claimant, held):
        """Equal sequence numbers, different primaries: does ``claimant`` lose to ``held``?

        A copy whose primary we have declared dead loses to any claimant (take-over). Otherwise
        the rank of docs/protocol.md 6.6 decides, without liveness: both parties are talking to
        each other, and a rule that depended on each one's view of the other could make two
        home agents refuse each other forever.
        """
        holder = self.primary_of(held)
        if held.primary is not None and held.primary not in self.peers:
            return False
        return halist.rank_key(self._preference_of(claimant), claimant) > \
            halist.rank_key(self._preference_of(holder), holder)

    def _on_biu(self, inb, biu, now, out):
        if not self._peer_check(inb, out):
            return
        sender = inb.src
        self.counters["biu-received"] += 1
        # The entries' primary is the sender, unless an IP Address option (sub-type 3) names
        # another home agent (a bulk answer returning a restarted home agent's bindings).
        claimant = sender
        for o in biu.options:
            if type(o) is IpAddress and o.subtype == IPADDR_HOME_AGENT:
                claimant = o.address
        mine = claimant == self.identity
        status = BIA_SYNCHRONISED
        prefix = self.settings.home_prefix
        cache = self.cache
        settings = self.settings
        for bce in biu.entries:
            hoa = bce.home_address
            if hoa not in prefix:
                status = max(status, BIA_REJECTED_NOT_AUTHORISED)
                continue
            held = cache.get(hoa)
            if held is None and self._tombstones and self._buried(hoa, bce.sequence, now):
                status = max(status, BIA_REJECTED_OLDER)
                self.counters["biu-entry-rejected"] += 1
                if bce.lifetime:
                    # The sender still believes in a binding we saw deleted: tell it.
                    self.sync.publish_deletion(hoa, self._tombstones[hoa][0], now, out)
                continue
            if held is not None:
                d = distance(bce.sequence, held.sequence)
                if d < 0 or d == 0 and held.primary != claimant and not (
                        mine and held.primary in (None, sender)) and \
                        self._loses_tie(claimant, held):
                    status = max(status, BIA_REJECTED_OLDER)
                    self.counters["biu-entry-rejected"] += 1
                    if held.primary is None:
                        self.sync.offer(sender, held, now, out)
                    continue
            self.counters["biu-entry-applied"] += 1
            if bce.lifetime == 0:
                self._bury(hoa, bce.sequence, now)
                if held is not None:
                    cache.remove(hoa)
                    transition(hoa, duties_of(settings, held), (None, False), out)
                    self._cancel_switch(hoa)
                    out.append(Event("binding-deleted", home_address=hoa, reason="peer",
                                     primary=held.primary is None, by=sender))
                    if held.primary is None:
                        self.sync.withdraw(hoa, now, out)
                        self._check_drained(out)
                continue
            if self._tombstones:
                self._tombstones.pop(hoa, None)
            lifetime = seconds(bce.lifetime)
            old = duties_of(settings, held)
            was_primary = held is not None and held.primary is None
            if mine:
                # Our own binding from before a restart, returned by a peer: ours again.
                b = cache.store(hoa, bce.care_of_address, bce.flags, bce.sequence, lifetime,
                                now + lifetime, bce.prefixes, None, self.address, now, held)
                transition(hoa, old, duties_of(settings, b), out)
                if not was_primary:
                    out.append(Event("binding-restored", home_address=hoa, by=sender))
                    self.sync.publish(b, now, out)
                continue
            if held is not None and held.care_of != bce.care_of_address:
                # the node registered elsewhere from another care-of: may be a conflict too
                self.flaps.moved(hoa, held.care_of, bce.care_of_address, now, out)
            b = cache.store(hoa, bce.care_of_address, bce.flags, bce.sequence, lifetime,
                            now + lifetime, bce.prefixes, claimant, None, now, held)
            transition(hoa, old, duties_of(settings, b), out)
            if held is None:
                out.append(Event("copy-created", home_address=hoa, primary=claimant))
            elif was_primary:
                self._cancel_switch(hoa)
                self.sync.withdraw(hoa, now, out)
                out.append(Event("primary-lost", home_address=hoa, to=claimant,
                                 sequence=bce.sequence))
                self._check_drained(out)
        out.append(make_send(BindingInfoAck(biu.identifier, status), self.identity, sender,
                             None, None, sender))
        if status != BIA_SYNCHRONISED:
            self.counters["bia-rejected-sent"] += 1
        r = self.sync.answered(sender, biu)
        if r is not None and r.target is None:
            self.peers.bulk_answered(sender)
            self._sweep(sender, r.started, now, out)

    def _bury(self, hoa, sequence, now):
        """Remember a deletion for TOMBSTONE_TIME (see :data:`TOMBSTONE_WINDOW`)."""
        until = now + max(TOMBSTONE_TIME, 4 * self.settings.biu_max_timeout)
        self._tombstones[hoa] = (sequence, until)
        q = self._tomb_queue
        q.append((until, hoa))
        while q and q[0][0] <= now:
            t, old = q.popleft()
            entry = self._tombstones.get(old)
            if entry is not None and entry[1] == t:
                del self._tombstones[old]

    def _buried(self, hoa, sequence, now):
        """Whether a BIU entry for ``hoa`` with ``sequence`` is a late copy of a deleted
        binding."""
        entry = self._tombstones.get(hoa)
        if entry is None:
            return False
        if entry[1] <= now:
            del self._tombstones[hoa]
            return False
        return -TOMBSTONE_WINDOW <= distance(sequence, entry[0]) < 0

    def _sweep(self, peer, since, now, out):
        """A bulk answer from ``peer`` is complete: copies naming it that the answer did not
        refresh are gone at the primary."""
        stale = [b for b in self.cache.copies_of(peer) if b.touched < since]
        removed = [0]

        def remove(b, now, out):
            if self.cache.get(b.home_address) is not b or b.primary != peer \
                    or b.touched >= since:
                return  # refreshed or taken since the answer ended
            self.cache.remove(b.home_address)
            self._bury(b.home_address, b.sequence, now)
            transition(b.home_address, duties_of(self.settings, b), (None, False), out)
            removed[0] += 1

        def done(now, out):
            out.append(Event("bulk-sync-complete", peer=peer, removed=removed[0]))

        self.work.add(stale, remove, now, out, name="sweep", done=done)

    def _on_bia(self, inb, bia, now, out):
        if not self._peer_check(inb, out):
            return
        self.counters["bia-received"] += 1
        if self.takeover.enabled:
            address = handback_address(bia)
            if address is not None:
                return self.takeover.confirmed(inb.src, bia.identifier, address, out)
        o = self.sync.acknowledge(inb.src, bia, now, out)
        if o is None:
            self.counters["bia-unmatched"] += 1
        elif o.marker:
            self.peers.bulk_delivered(inb.src)
        elif bia.status >= 128:
            out.append(Event("biu-rejected", peer=inb.src, status=bia.status,
                             home_addresses=tuple(bce.home_address
                                                  for bce, _ in o.entries.values())))

    def _on_bir(self, inb, bir, now, out):
        if not self._peer_check(inb, out):
            return
        self.counters["bir-received"] += 1
        sender = inb.src
        if self.takeover.enabled:
            wanted = handback_address(bir)
            if wanted is not None:
                return self._hand_back(sender, bir.identifier, wanted, now, out)
        if sender not in self.peers:
            return self._drop(out, "bir-from-dead-peer", inb)
        hoa = bir.home_address
        if hoa == UNSPECIFIED:
            # Copies naming the requester go back to it too: a home agent that asks for
            # everything has lost its state (restart), those were its primaries. It holds
            # none of ours until it acknowledges the end of the answer (halist).
            self.peers.lost_state(sender)
            self.sync.answer_bulk(sender, bir.identifier, self.cache.primaries(), now, out,
                                  theirs=self.cache.copies_of(sender))
            return
        if hoa is not None:
            b = self.cache.get(hoa)
        elif bir.prefix is not None:
            b = self.cache.lookup_prefix(bir.prefix.network_address)
            if b is not None and not any(bir.prefix.subnet_of(p) for p in b.prefixes):
                b = None
        else:
            return self._drop(out, "malformed-bir", inb)
        if b is not None and b.primary is None:
            self.sync.answer_single(sender, bir.identifier, b, now, out)

    # -- DHAAD (RFC 6275 10.5, RFC 3963 7) -------------------------------------------------

    def _on_dhaad(self, inb, req, now, out):
        if not self.settings.dhaad or self.state != SERVING and self.state != DRAINING:
            return self._drop(out, "dhaad-not-served", inb)
        if inb.dst != self.anycast and inb.dst != self.address:
            return self._drop(out, "dhaad-wrong-destination", inb)
        if req.mobile_router and not self.settings.nemo:
            return self._drop(out, "dhaad-mobile-router", inb)
        reply = DhaadReply(req.identifier, tuple(self.home_agent_addresses()),
                           req.mobile_router)
        out.append(SendIcmp(reply, self.address, inb.src))
        self.counters["dhaad-replied"] += 1

    # -- address take-over (addrtakeover.py) ---------------------------------------------------

    def _hand_back(self, peer, identifier, address, now, out):
        released = self.takeover.requested(peer, identifier, address, out)
        if released is False:
            return
        if released is not None:
            # The bindings served from the address go back with it, as BIUs naming the peer.
            given = []
            for b in self.cache.primaries():
                if b.local == released:
                    old = duties_of(self.settings, b)
                    self._cancel_switch(b.home_address)
                    b = self.cache.store(b.home_address, b.care_of, b.flags, b.sequence,
                                         b.lifetime, b.expires, b.prefixes, peer, None, now, b)
                    transition(b.home_address, old, duties_of(self.settings, b), out)
                    self.sync.withdraw(b.home_address, now, out)
                    given.append(b)
            self.sync.give_back(peer, given, now, out)
            out.append(Event("bindings-handed-back", to=peer, count=len(given)))
            self._check_drained(out)
        self.takeover.confirm(peer, identifier, address, out)

    def _on_be(self, inb, be, now, out):
        # A node that does not know the switch request answers it with status 2 (RFC 6275
        # 9.2): it will never switch, address take-over serves it where it is.
        hoa = inb.home_address or be.home_address
        if hoa not in self._switch:
            # Some stacks leave the Home Address field unspecified: the care-of address tells.
            hoa = self.takeover.switch_target(self._switch, self.cache, inb.src) or hoa
        st = self._switch.get(hoa)
        b = self.cache.get(hoa)
        if be.status != BE_UNKNOWN_MH_TYPE or st is None or b is None or b.primary is not None \
                or inb.src not in (b.care_of, hoa):
            return self._drop(out, "unexpected", inb)
        self._cancel_switch(hoa)
        self.takeover.unswitchable.add(hoa)
        self.counters["switch-unsupported"] += 1
        out.append(Event("switch-unsupported", home_address=hoa))

    # -- anything else -----------------------------------------------------------------------

    def _on_unknown(self, inb, msg, now, out):
        # RFC 6275 9.2: an unrecognised MH type is answered with Binding Error status 2,
        # from the address it was sent to: never from a group (nor ::), so a message sent to
        # a multicast address is not answered (as RFC 4443 2.4 e) for ICMPv6 errors).
        if inb.dst.is_multicast or inb.dst.is_unspecified:
            return self._drop(out, "unknown-mh-to-group", inb)
        be = BindingError(BE_UNKNOWN_MH_TYPE, inb.home_address or UNSPECIFIED)
        out.append(Send(be, inb.dst, inb.src))
        self.counters["be-sent"] += 1

    # ======================================================================================
    # expiry, switching, draining
    # ======================================================================================

    def _expired(self, b, now, out, batch=False):
        if b.primary is not None and self.settings.take_over:
            self.takeover.linger(b, now)
        self._bury(b.home_address, b.sequence, now)
        transition(b.home_address, duties_of(self.settings, b), (None, False), out)
        self._cancel_switch(b.home_address)
        out.append(Event("binding-expired", home_address=b.home_address,
                         primary=b.primary is None))
        if b.primary is None:
            self.sync.publish(b, now, out, deleted=True, batch=batch)
            self._check_drained(out)

    def _drain_target(self):
        others = [a for a, _ in self.ranked() if a != self.identity]
        if not others or self.settings.drain == DRAIN_DISCOVER:
            return None
        if self.settings.drain == DRAIN_BEST:
            address = others[0]
        else:
            address = others[self._drain_cursor % len(others)]
            self._drain_cursor += 1
        return self.peers.get(address).home_agent

    def _request_switch(self, b, desired, now, out):
        """Ask the node of ``b`` to switch to ``desired``. First transmissions are paced at
        ``switch_rate`` per second (a take-over of thousands of nodes is spread over seconds
        instead of leaving in one burst that the nodes then answer at once); each request's
        retransmissions back off from its own first transmission, with jitter, so they stay
        spread."""
        if b.home_address in self.takeover.unswitchable:
            return
        timeout = self.settings.biu_initial_timeout
        at = max(now, self._switch_slot)
        self._switch_slot = at + 1.0 / self.settings.switch_rate
        waiting = at > now
        st = _SwitchState(desired, b.sequence, timeout,
                          at if waiting else now + self._jittered(timeout), waiting)
        self._switch[b.home_address] = st
        heapq.heappush(self._switch_heap, (st.next_at, next(self._switch_order), b.home_address))
        if not waiting:
            self._send_switch(b, desired, out)
        else:
            self.counters["switch-paced"] += 1
        out.append(Event("switch-requested", home_address=b.home_address, desired=desired))

    def _jittered(self, timeout):
        """A retransmission timeout stretched by up to a quarter at random, so requests sent
        together do not come back together (RFC 6275 11.8 asks the same of nodes' BUs)."""
        return timeout * (1.0 + 0.25 * self.rng.random())

    def _send_switch(self, b, desired, out):
        hoa = b.home_address
        if self.settings.switch_message == SWITCH_RFC5142:
            msg = HomeAgentSwitch((desired,) if desired is not None else ())
        else:
            opts = (IpAddress(IPADDR_HOME_AGENT, desired, 128),) if desired is not None else ()
            msg = HaSwitchRequest(opts)
        out.append(Send(msg, self.address, b.care_of, routing_address=hoa, protect=hoa))
        self.counters["switch-sent"] += 1

    def _cancel_switch(self, hoa):
        self._switch.pop(hoa, None)

    def _next_switch(self):
        heap = self._switch_heap
        for _ in range(64):  # bounded: past that, a stale top only wakes _tick_switches early
            if not heap:
                return None
            t, _, hoa = heap[0]
            st = self._switch.get(hoa)
            if st is not None and st.next_at == t:
                return t
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _tick_switches(self, now, out):
        heap = self._switch_heap
        maximum = self.settings.biu_max_timeout
        limit = self.work.size or None  # the rest stay due: the next tick comes at once
        sent = 0
        while heap and heap[0][0] <= now and (limit is None or sent < limit):
            t, _, hoa = heapq.heappop(heap)
            sent += 1  # stale items count too: a mass expiry leaves 100,000 of them
            st = self._switch.get(hoa)
            if st is None or st.next_at != t:
                continue
            b = self.cache.get(hoa)
            if b is None or b.primary is not None or b.sequence != st.sequence:
                del self._switch[hoa]
                continue
            if st.waiting:  # its paced first transmission
                st.waiting = False
                st.next_at = now + self._jittered(st.timeout)
                heapq.heappush(heap, (st.next_at, next(self._switch_order), hoa))
                self._send_switch(b, st.desired, out)
                continue
            if st.tries >= SWITCH_TRIES:
                del self._switch[hoa]
                out.append(Event("switch-unanswered", home_address=hoa, desired=st.desired))
                continue
            st.tries += 1
            st.timeout = min(st.timeout * 2, maximum)
            st.next_at = now + self._jittered(st.timeout)
            heapq.heappush(heap, (st.next_at, next(self._switch_order), hoa))
            self._send_switch(b, st.desired, out)
            self.counters["switch-retransmitted"] += 1

    def _check_drained(self, out):
        if self.state == DRAINING and self.cache.primary_count == 0 \
                and not self._drain_reported:
            self._drain_reported = True
            out.append(Event("drain-complete"))
