"""Binding synchronisation, inbound: BIU, BIA and BIR from peers (draft 5.1, 5.2; docs/protocol.md
6.3-6.6), sans-IO.

Rules: a BIU entry older than what is held is rejected (BIA 129) and does not overwrite; equal
sequence numbers from different primaries are settled by rank (a live primary beats a dead one;
then highest preference, lowest address), so every home agent reaches the same answer; a BIU
entry that a tombstone covers (:mod:`haha.core.tombstones`) is rejected and answered with the
deletion. A bulk request (BIR for ``::``) is answered with every primary and the copies naming
the requester (:class:`~haha.core.sync.outbound.Sync`); when the end of a bulk answer arrives,
the copies naming its sender that it did not refresh are swept.

:class:`SyncReceiver` works on the state of the :class:`~haha.core.homeagent.HomeAgent` it
belongs to (its cache, peers, tombstones, switch requests and outbound :class:`Sync`).
"""

from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from haha.wire.mh import (
    BIA_REJECTED_NOT_AUTHORISED,
    BIA_REJECTED_OLDER,
    BIA_SYNCHRONISED,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
)
from haha.wire.addresses import address_int
from haha.wire.options import IPADDR_HOME_AGENT, BceInfo, IpAddress

from .. import halist
from ..addrtakeover import handback_address
from ..cache import Binding
from ..duties import duties_of, transition
from ..effects import Event, Inbound, make_send
from ..events import EventName
from ..seqnum import distance, seconds
from ..switching import hand_back
from .outbound import UNSPECIFIED

#: Cache entries looked at per slice of the sweep after a bulk answer: most are passed over
#: at a fraction of a microsecond each.
SWEEP_SLICE = 2048

if TYPE_CHECKING:  # pragma: no cover - typing only
    from ..homeagent import HomeAgent


class SyncReceiver:
    """Applies what peers send: BIUs to the binding cache, BIAs to the outbound
    synchronisation, BIRs answered from the cache."""

    def __init__(self, ha: "HomeAgent") -> None:
        self.ha = ha
        #: Claims refused while their holder was live: holder -> {home address: (claimant,
        #: entry, when received)}. A survivor's take-over may reach us before we have declared
        #: the dead peer dead ourselves (its last HELLO reached us later): the claim loses to
        #: the holder's rank then, and is applied if the holder dies before saying HELLO again
        #: (:meth:`apply_claims`), so the copy names the survivor at once rather than after the
        #: node re-registers or anti-entropy repairs it.
        self.claims: Dict[Any, Dict[Any, Tuple[Any, BceInfo, float]]] = {}
        #: Copies created by the bulk answer under way from each peer (entries of BIUs packing
        #: several while our bulk request is outstanding): counted, not one ``copy-created``
        #: event each (100,000 events for a restart), and reported in its
        #: ``bulk-sync-complete``.
        self.bulk_copied: Dict[Any, int] = {}

    # -- ranking ties ----------------------------------------------------------------------

    def preference_of(self, address: Any) -> int:
        ha = self.ha
        if address == ha.identity:
            return int(ha.preference)
        e = ha.peers.get(address)
        return e.preference if e is not None else 0

    def loses_tie(self, claimant: Any, held: Binding) -> bool:
        """Equal sequence numbers, different primaries: does ``claimant`` lose to ``held``?

        A copy whose primary we have declared dead loses to any claimant (take-over). Otherwise
        the rank of docs/protocol.md 6.6 decides, without liveness: both parties are talking to
        each other, and a rule that depended on each one's view of the other could make two
        home agents refuse each other forever.
        """
        ha = self.ha
        holder = ha.primary_of(held)
        if held.primary is not None and held.primary not in ha.peers:
            return False
        return bool(halist.rank_key(self.preference_of(claimant), claimant) >
                    halist.rank_key(self.preference_of(holder), holder))

    # -- BIU -------------------------------------------------------------------------------

    def biu(self, inb: Inbound, biu: BindingInfoUpdate, now: float, out: List[Any]) -> None:
        """A BIU from a peer: apply each entry, answer with one BIA."""
        ha = self.ha
        if not ha.peer_check(inb, out):
            return
        sender = inb.src
        counters = ha.counters
        counters["biu-received"] += 1
        # The entries' primary is the sender, unless an IP Address option (sub-type 3) names
        # another home agent (a bulk answer returning a restarted home agent's bindings).
        claimant = sender
        for o in biu.options:
            if type(o) is IpAddress and o.subtype == IPADDR_HOME_AGENT:
                claimant = o.address
        mine = claimant == ha.identity
        status = BIA_SYNCHRONISED
        copied = 0
        # The home prefix tested on integers (IPv6Network.__contains__ is a Python call per
        # entry); a BIU's entries are decoded IPv6Addresses.
        net, mask = ha.home_net, ha.home_mask
        cache = ha.cache
        settings = ha.settings
        sync = ha.sync
        # Packed entries while our bulk request to the sender is outstanding: its answer (or a
        # burst as large), counted for bulk-sync-complete rather than one event each. So are
        # those arriving while we boot: a peer that sees us come back pushes its primaries
        # before our bulk request leaves (at the end of the boot wait), and its
        # bulk-sync-complete reports them.
        bulk = len(biu.entries) > 1 and (not ha.serving or sync.bulk_requested(sender))
        tombstones = ha.tombstones
        switching = ha.switching
        for bce in biu.entries:
            hoa = bce.home_address
            if type(hoa) is not IPv6Address or address_int(hoa) & mask != net:
                status = max(status, BIA_REJECTED_NOT_AUTHORISED)
                continue
            held = cache.get(hoa)
            if held is None and tombstones and tombstones.buried(hoa, bce.sequence, now):
                status = max(status, BIA_REJECTED_OLDER)
                counters["biu-entry-rejected"] += 1
                if bce.lifetime:
                    # The sender still believes in a binding we saw deleted: tell it.
                    sync.publish_deletion(hoa, tombstones.sequence(hoa), now, out)
                continue
            if held is not None:
                d = distance(bce.sequence, held.sequence)
                if d < 0 or d == 0 and held.primary != claimant and not (
                        mine and held.primary in (None, sender)) and \
                        self.loses_tie(claimant, held):
                    status = max(status, BIA_REJECTED_OLDER)
                    counters["biu-entry-rejected"] += 1
                    if held.primary is None:
                        sync.offer(sender, held, now, out)
                    elif d == 0 and held.primary in ha.peers and claimant in ha.peers:
                        self.claims.setdefault(held.primary, {})[hoa] = (claimant, bce, now)
                    continue
            counters["biu-entry-applied"] += 1
            if bce.lifetime == 0:
                tombstones.bury(hoa, bce.sequence, now)
                if held is not None:
                    cache.remove(hoa)
                    transition(hoa, duties_of(settings, held), (None, False), out)
                    switching.cancel(hoa)
                    out.append(Event(EventName.BINDING_DELETED, home_address=hoa, reason="peer",
                                     primary=held.primary is None, by=sender))
                    if held.primary is None:
                        sync.withdraw(hoa, now, out)
                        ha.check_drained(out)
                continue
            if tombstones:
                tombstones.lift(hoa)
            lifetime = seconds(bce.lifetime)
            old = duties_of(settings, held)
            was_primary = held is not None and held.primary is None
            if mine:
                # Our own binding from before a restart, returned by a peer: ours again.
                b = cache.store(hoa, bce.care_of_address, bce.flags, bce.sequence, lifetime,
                                now + lifetime, bce.prefixes, None, ha.address, now, held)
                transition(hoa, old, duties_of(settings, b), out)
                if not was_primary:
                    out.append(Event(EventName.BINDING_RESTORED, home_address=hoa, by=sender))
                    sync.publish(b, now, out)
                continue
            if held is not None and address_int(held.care_of) \
                    != address_int(bce.care_of_address):
                # the node registered elsewhere from another care-of: may be a conflict too
                ha.flaps.moved(hoa, held.care_of, bce.care_of_address, now, out)
            b = cache.store(hoa, bce.care_of_address, bce.flags, bce.sequence, lifetime,
                            now + lifetime, bce.prefixes, claimant, None, now, held)
            transition(hoa, old, duties_of(settings, b), out)
            if held is None:
                if bulk:
                    copied += 1
                else:
                    out.append(Event(EventName.COPY_CREATED, home_address=hoa,
                                     primary=claimant))
            elif was_primary:
                switching.cancel(hoa)
                sync.withdraw(hoa, now, out)
                out.append(Event(EventName.PRIMARY_LOST, home_address=hoa, to=claimant,
                                 sequence=bce.sequence))
                ha.check_drained(out)
        if copied:
            self.bulk_copied[sender] = self.bulk_copied.get(sender, 0) + copied
        out.append(make_send(BindingInfoAck(biu.identifier, status), ha.identity, sender,
                             None, None, sender))
        if status != BIA_SYNCHRONISED:
            counters["bia-rejected-sent"] += 1
        r = sync.answered(sender, biu)
        if r is not None and r.target is None:
            ha.peers.bulk_answered(sender)
            self.sweep(sender, r.started, now, out)

    def apply_claims(self, dead: Any, now: float, out: List[Any]) -> None:
        """Peer ``dead`` was declared dead: the claims on its bindings that we refused while
        it was live (:attr:`claims`) become copies naming their claimant, if the claimant is
        live and the copy is still the one the claim contested (same sequence, still naming
        ``dead``). Those are then not ours to take over."""
        claims = self.claims.pop(dead, None)
        if not claims:
            return
        ha = self.ha
        cache = ha.cache
        settings = ha.settings
        applied = [0]

        def apply(item: Tuple[Any, Tuple[Any, BceInfo, float]], now: float,
                  out: List[Any]) -> None:
            hoa, (claimant, bce, received) = item
            held = cache.get(hoa)
            if held is None or held.primary != dead or held.sequence != bce.sequence \
                    or claimant not in ha.peers:
                return
            lifetime = seconds(bce.lifetime)
            expires = received + lifetime
            if expires <= now:
                return
            old = duties_of(settings, held)
            b = cache.store(hoa, bce.care_of_address, bce.flags, bce.sequence, lifetime,
                            expires, bce.prefixes, claimant, None, now, held)
            transition(hoa, old, duties_of(settings, b), out)
            applied[0] += 1

        def done(now: float, out: List[Any]) -> None:
            ha.counters["claims-applied"] += applied[0]

        # In slices (a survivor's whole share may have been refused); queued before this home
        # agent's own take-over, which then finds those copies naming their claimant.
        ha.work.add(list(claims.items()), apply, now, out, name="claims", done=done)

    def forget_claims(self, holder: Any) -> None:
        """``holder`` said HELLO: it is live, and the claims refused on its bindings were
        wrong (or it restarted): forget them."""
        self.claims.pop(holder, None)

    def sweep(self, peer: Any, since: float, now: float, out: List[Any]) -> None:
        """A bulk answer from ``peer`` is complete: copies naming it that the answer did not
        refresh are gone at the primary."""
        ha = self.ha
        cache = ha.cache
        # Every entry of the cache is an item (picked in the slices: a bounded scan per
        # slice, none of it in this call); only stale copies naming ``peer`` are removed.
        snapshot = list(cache)
        key = address_int(peer)
        removed = [0]

        def remove(b: Binding, now: float, out: List[Any]) -> None:
            p = b.primary
            if p is None or b.touched >= since or address_int(p) != key \
                    or cache.get(b.home_address) is not b:
                return  # not a copy of ``peer``, or refreshed or taken since the answer ended
            cache.remove(b.home_address)
            ha.tombstones.bury(b.home_address, b.sequence, now)
            transition(b.home_address, duties_of(ha.settings, b), (None, False), out)
            removed[0] += 1

        copied = self.bulk_copied.pop(peer, 0)

        def done(now: float, out: List[Any]) -> None:
            out.append(Event(EventName.BULK_SYNC_COMPLETE, peer=peer, removed=removed[0],
                             copied=copied))

        ha.work.add(snapshot, remove, now, out, name="sweep", done=done)

    # -- BIA -------------------------------------------------------------------------------

    def bia(self, inb: Inbound, bia: BindingInfoAck, now: float, out: List[Any]) -> None:
        """A BIA from a peer: it acknowledges one of our BIUs (or an address hand-back)."""
        ha = self.ha
        if not ha.peer_check(inb, out):
            return
        ha.counters["bia-received"] += 1
        if ha.takeover.enabled:
            address = handback_address(bia)
            if address is not None:
                ha.takeover.confirmed(inb.src, bia.identifier, address, out)
                return
        o = ha.sync.acknowledge(inb.src, bia, now, out)
        if o is None:
            ha.counters["bia-unmatched"] += 1
        elif o.marker:
            ha.peers.bulk_delivered(inb.src)
        elif bia.status >= 128:
            out.append(Event(EventName.BIU_REJECTED, peer=inb.src, status=bia.status,
                             home_addresses=tuple(bce.home_address
                                                  for bce, _ in o.entries.values())))

    # -- BIR -------------------------------------------------------------------------------

    def bir(self, inb: Inbound, bir: BindingInfoRequest, now: float, out: List[Any]) -> None:
        """A BIR from a peer: a bulk request, a request for one binding, or (address
        take-over) a hand-back request."""
        ha = self.ha
        if not ha.peer_check(inb, out):
            return
        ha.counters["bir-received"] += 1
        sender = inb.src
        if ha.takeover.enabled:
            wanted = handback_address(bir)
            if wanted is not None:
                hand_back(ha, sender, bir.identifier, wanted, now, out)
                return
        if sender not in ha.peers:
            ha.drop(out, "bir-from-dead-peer", inb)
            return
        hoa = bir.home_address
        cache = ha.cache
        if hoa == UNSPECIFIED:
            if ha.sync.repeated_bulk(sender, bir.identifier, now):
                # Sent before our answer (or its end marker) reached the requester.
                ha.counters["bir-repeated"] += 1
                return
            # Copies naming the requester go back to it too: a home agent that asks for
            # everything has lost its state (restart), those were its primaries. It holds
            # none of ours until it acknowledges the end of the answer (halist).
            ha.peers.lost_state(sender)
            ha.sync.answer_bulk_scan(sender, bir.identifier, list(cache), now, out)
            return
        if hoa is not None:
            b = cache.get(hoa)
        elif bir.prefix is not None:
            b = cache.lookup_prefix(bir.prefix.network_address)
            if b is not None and not any(bir.prefix.subnet_of(p) for p in b.prefixes):
                b = None
        else:
            ha.drop(out, "malformed-bir", inb)
            return
        if b is not None and b.primary is None:
            ha.sync.answer_single(sender, bir.identifier, b, now, out)
