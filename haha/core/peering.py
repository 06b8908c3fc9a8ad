"""Peer liveness of a home agent (draft 5.4; docs/protocol.md 6.2, 6.6, 6.8), sans-IO.

:class:`Peering` sends this home agent's HELLOs (with its preference, the prefixes it serves,
a digest of its primaries and the addresses it holds for others) and handles the peers':
a protected HELLO from a known peer makes, refreshes, re-ranks or (lifetime 0) ends it in the
Home Agent list (:mod:`haha.core.halist`). A new peer is asked for all its bindings (bulk BIR);
a peer that was declared dead and comes back is also sent our primaries; a lasting difference
between a peer's digest and our copies naming it asks it for everything again (anti-entropy).
A peer that dies (its lifetime passes, or its HELLO says 0) is dropped from synchronisation,
and the first-ranked live home agent takes over its mobile nodes (:mod:`haha.core.switching`).

Discovery (``add_peer``/``remove_peer``) only proposes candidates: it is not authenticated and
never makes or ends a live peer; neither does a Router Advertisement.
"""

import math
from typing import TYPE_CHECKING, Any, List, Optional, Set, Tuple

from haha.wire.icmpv6 import RA_H, RouterAdvertisement
from haha.wire.mh import HaHello
from haha.wire.options import BindingDigest, MobileNetworkPrefix

from . import candidates, halist
from .effects import Event, Inbound, Send
from .events import EventName
from .seqnum import next_sequence
from .settings import TAKE_OVER_SPLIT
from .switching import take_over

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .homeagent import HomeAgent

Effects = List[Any]


class Peering:
    """HELLOs in and out, and the peers' coming and going, for the home agent ``ha``."""

    def __init__(self, ha: "HomeAgent") -> None:
        self.ha = ha
        settings = ha.settings
        self.known = candidates.KnownPeers(settings.peers, settings.max_candidates,
                                           settings.ha_lifetime, ha.peers.__contains__)
        self.untold: Set[Any] = set()  # peers declared dead: what we registered since is theirs
        self.hello_seq = ha.rng.randrange(1 << 16)
        self.next_hello: Optional[float] = None

    # -- discovery -------------------------------------------------------------------------

    def authorised(self, address: Any) -> bool:
        settings = self.ha.settings
        if address in settings.peers:
            return True
        return any(address in p for p in settings.authorised_peer_prefixes)

    def add(self, address: Any, now: float, source: str, out: Effects) -> None:
        """Discovery proposes ``address``."""
        ha = self.ha
        if address == ha.identity:
            return
        if not self.authorised(address):
            ha.counters["peer-refused"] += 1
            out.append(Event(EventName.PEER_REFUSED, peer=address, source=source))
            return
        added = self.known.add(address, now)
        if added == candidates.FULL:
            ha.counters["peer-refused:candidates-full"] += 1
        elif added == candidates.ADDED:
            out.append(Event(EventName.PEER_KNOWN, peer=address, source=source))
            if ha.settings.send_hello and ha.running:
                self.send_hello(address, now, out)

    def remove(self, address: Any, now: float, source: str, out: Effects) -> None:
        """Discovery no longer proposes ``address``."""
        ha = self.ha
        if address in ha.settings.peers or address not in self.known:
            return
        if address in ha.peers:
            ha.counters["peer-withdrawal-ignored:live"] += 1
            return
        self.known.discard(address)
        out.append(Event(EventName.PEER_FORGOTTEN, peer=address, source=source))
        self.untold.discard(address)

    # -- HELLO out -------------------------------------------------------------------------

    def hello_message(self, lifetime: int) -> HaHello:
        """Our HELLO. It carries the digest of our primaries (anti-entropy), except while a
        take-over or switch requests are under way: then our nodes re-register for many
        seconds and their refreshes reach the peers late by design (held and packed,
        :mod:`.heldcopies`), so every HELLO would show a difference, and after 10 s each peer
        would ask us for everything in the middle of the take-over (a bulk answer of every
        binding, seen at 30,000 nodes). A HELLO without a digest restarts the peer's count;
        the digests, and any repair a real loss needs, resume when the requests are done."""
        ha = self.ha
        s = ha.settings
        self.hello_seq = next_sequence(self.hello_seq)
        digest: Tuple[Any, ...] = () if ha.held_copies.active() \
            else (BindingDigest(*ha.cache.digest()),)
        return HaHello(self.hello_seq, ha.preference, lifetime,
                       min(0xFFFF, math.ceil(s.hello_interval)), s.home_prefix.prefixlen,
                       ha.address, tuple(MobileNetworkPrefix(p) for p in s.hello_prefixes)
                       + digest + ha.takeover.hello_options())

    def send_hello(self, address: Any, now: float, out: Effects,
                   lifetime: Optional[int] = None) -> None:
        ha = self.ha
        if lifetime is None:
            lifetime = ha.settings.ha_lifetime
        out.append(Send(self.hello_message(lifetime), ha.identity, address, protect=address))
        ha.counters["hello-sent"] += 1

    def send_hellos(self, now: float, out: Effects, lifetime: Optional[int] = None) -> None:
        """A HELLO to every known peer; the next round after ``hello_interval``."""
        for address in sorted(self.known, key=int):
            self.send_hello(address, now, out, lifetime)
        self.next_hello = now + self.ha.settings.hello_interval

    # -- HELLO in --------------------------------------------------------------------------

    def check(self, inb: Inbound, out: Effects) -> bool:
        """Whether ``inb`` comes from a known peer, protected by that peer's SA when
        protection is required; if not, it is counted and dropped."""
        src = inb.src
        ha = self.ha
        if src not in self.known:
            ha.drop(out, "unknown-peer", inb)
            return False
        by = inb.protected_by
        if by is None:
            if ha.settings.peer_protection_required:
                ha.drop(out, "unprotected", inb)
                return False
        elif by is not src and by != src:
            ha.drop(out, "sa-mismatch", inb)
            return False
        return True

    def hello(self, inb: Inbound, hello: HaHello, now: float, out: Effects) -> None:
        ha = self.ha
        if not self.check(inb, out):
            return
        ha.counters["hello-received"] += 1
        settings = ha.settings
        prefix = settings.home_prefix
        if hello.prefix_length != prefix.prefixlen or (
                hello.home_agent not in prefix and not settings.advertises_prefix):
            return ha.drop(out, "foreign-prefix", inb)
        result = ha.peers.hello(inb.src, hello, now)
        if result == halist.STALE:
            return ha.drop(out, "stale-hello", inb, sequence=hello.sequence)
        ha.takeover.peer_hello(inb.src, hello)
        if ha.sync_in.claims:
            ha.sync_in.forget_claims(inb.src)
        if settings.hello_misses and result != halist.DELETED:
            e = ha.peers.get(inb.src)
            if e is not None:  # fast failure detection (settings.hello_misses)
                e.expires = min(e.expires, now + settings.hello_misses * settings.hello_interval)
        self._result(inb.src, result, now, out)
        self._check_digest(inb.src, hello, now, out)

    def _check_digest(self, peer: Any, hello: HaHello, now: float, out: Effects) -> None:
        """Anti-entropy (:mod:`.antientropy`): compare the HELLO's digest of ``peer``'s
        primaries with our copies naming it; a lasting difference asks it for everything."""
        ha = self.ha
        if peer not in ha.peers or not ha.serving:
            return
        theirs = None
        for o in hello.options:
            if type(o) is BindingDigest:
                theirs = (o.count, o.digest)
        mine = ha.cache.digest(peer)
        if ha.antientropy.heard(peer, theirs, mine, now):
            assert theirs is not None
            ha.counters["anti-entropy-repairs"] += 1
            out.append(Event(EventName.ANTI_ENTROPY_REPAIR, peer=peer, theirs=theirs[0],
                             ours=mine[0]))
            ha.sync.request(peer, None, now, out)

    def _result(self, address: Any, result: Any, now: float, out: Effects) -> None:
        ha = self.ha
        if result == halist.RESTARTED:
            # Its HELLO sequence jumped back: it restarted and must answer again before it
            # is ranked (halist); it asks us for everything itself.
            out.append(Event(EventName.PEER_RESTARTED, peer=address))
            if ha.serving:
                ha.sync.request(address, None, now, out)
        elif result == halist.NEW:
            ha.sync.add_peer(address)
            e = ha.peers.entry(address)
            ha.takeover.peer_seen(address, e.home_agent)
            out.append(Event(EventName.PEER_UP, peer=address, home_agent=e.home_agent,
                             preference=e.preference, via=e.source))
            if ha.settings.send_hello and e.source == "hello":
                self.send_hello(address, now, out)
            if ha.running:
                # Booting too: a restarted home agent relearns from the peers it hears during
                # its boot wait, and the answer replaces their push of the same bindings (a
                # request at the end of the wait had them sent twice).
                ha.sync.request(address, None, now, out)
            if ha.serving and address in self.untold:
                # Push as well as pull: a peer we declared dead may never have doubted us,
                # and then it will not ask for what we registered meanwhile. (If it
                # restarted, its bulk request takes over whatever of this push has not left
                # yet.) In slices: Sync.push.
                ha.sync.push(address, list(ha.cache), now, out)
            self.untold.discard(address)
        elif result == halist.DELETED:
            self.down(address, "lifetime-zero", now, out)
        elif result == halist.UPDATED:
            e = ha.peers.entry(address)
            ha.takeover.peer_seen(address, e.home_agent)
            out.append(Event(EventName.PEER_CHANGED, peer=address, preference=e.preference,
                             lifetime=e.lifetime))

    def router_advertisement(self, inb: Inbound, ra: RouterAdvertisement, now: float,
                             out: Effects) -> None:
        # Not authenticated: an advertisement never creates, refreshes, ranks or deletes a
        # peer (halist). Discovery may propose its sender as a candidate (add_peer).
        if not ra.flags & RA_H:
            self.ha.counters["ignored:not-home-agent-ra"] += 1
            return
        self.ha.counters["ignored:ra-not-liveness"] += 1

    # -- peers dying -----------------------------------------------------------------------

    def down(self, address: Any, reason: str, now: float, out: Effects) -> None:
        """Peer ``address`` is dead (``reason``): stop synchronising with it, and take over
        its mobile nodes if this home agent ranks first among the live ones (with
        ``take_over_share`` 'split': its share of them)."""
        ha = self.ha
        ha.sync.drop_peer(address)
        ha.antientropy.forget(address)
        self.untold.add(address)
        out.append(Event(EventName.PEER_DOWN, peer=address, reason=reason))
        ha.takeover.peer_gone(address, out)
        # Another survivor's claims on its bindings, refused while it was live here.
        ha.sync_in.apply_claims(address, now, out)
        if not ha.settings.take_over or not ha.serving:
            return
        order = [a for a, _ in ha.ranked()]
        if ha.settings.take_over_share == TAKE_OVER_SPLIT:
            # Every survivor its share, decided by the same ranking everywhere (switching.py).
            if ha.identity in order:
                take_over(ha, address, now, out, share=(order.index(ha.identity), len(order)))
        elif order and order[0] == ha.identity:
            take_over(ha, address, now, out)
