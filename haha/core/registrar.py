"""Binding Updates at a home agent (RFC 6275 10.3, RFC 3963 6.2), sans-IO.

:class:`Registrar` applies what :func:`haha.core.registration.examine` decides about a Binding
Update: a registration becomes (or refreshes) a primary binding, with its forwarding duties
(:mod:`haha.core.duties`), and goes to every live peer in a BIU (:mod:`haha.core.sync`); a
deregistration deletes the binding, leaves a tombstone (:mod:`haha.core.tombstones`) and is
told to everybody. The Binding Acknowledgement goes back when the node asked for one or the
update was rejected. A booting home agent never gets here (:mod:`haha.core.halifecycle`).
"""

from typing import TYPE_CHECKING, Any, List, Optional

from haha.wire.addresses import address_int
from haha.wire.mh import BA_R, BU_A, BU_H, BU_R, BindingAck, BindingUpdate
from haha.wire.options import AlternateCareOfAddress
from haha.wire.records import maker

from . import registration
from .cache import Binding
from .duties import duties_of, transition
from .effects import Event, Inbound, make_install, make_send
from .events import EventName
from .seqnum import seconds

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .homeagent import HomeAgent

Effects = List[Any]

_ba = maker(BindingAck)


class Registrar:
    """Binding Updates for the home agent ``ha``."""

    def __init__(self, ha: "HomeAgent") -> None:
        self.ha = ha

    def binding_update(self, inb: Inbound, bu: BindingUpdate, now: float,
                       out: Effects) -> None:
        """A Binding Update from a mobile node (a home registration, RFC 6275 10.3.1, or a
        deregistration, 10.3.2): examine it, apply the verdict, answer with a BA when asked
        (or on rejection)."""
        ha = self.ha
        hoa = inb.home_address or inb.src
        flags = bu.flags
        if not flags & BU_H:
            # Not a home registration: correspondent registrations need return routability
            # (RFC 6275 9.5.1), which a home agent without route optimisation discards.
            return ha.drop(out, "not-home-registration", inb)
        # Addresses compared as integers (IPv6Address.__eq__ is a Python call; decoded
        # addresses carry no scope).
        hoa_int = address_int(hoa)
        by = inb.protected_by
        if by is not None and by is not hoa and address_int(by) != hoa_int:
            return ha.drop(out, "sa-mismatch", inb, home_address=hoa)
        care_of = inb.src
        for o in bu.options:
            if type(o) is AlternateCareOfAddress:
                care_of = o.address
                break
        coa_int = address_int(care_of)
        if coa_int != hoa_int and coa_int & ha.home_mask == ha.home_net \
                and bu.lifetime and ha.settings.proxies_nd:
            # A node started on its home link may send a BU or two with a care-of address in
            # the home prefix before it notices it is home (docs/protocol.md 9): no tunnel to the
            # home link, no rejection that would make it give up on this home agent.
            return ha.drop(out, "care-of-in-home-prefix", inb, home_address=hoa)
        held = ha.cache.get(hoa)
        v = registration.examine(ha.settings, bu, hoa, care_of, held, ha.draining)
        action = v.action
        if action == registration.REGISTER:
            self.register(hoa, care_of, bu, v, inb.dst, held, now, out)
        elif action == registration.DEREGISTER:
            assert held is not None  # examine() deregisters only a binding the cache holds
            self.deregister(held, now, out, "deregistered")
            ha.counters["bu-deregistered"] += 1
        elif action == registration.DUPLICATE:
            ha.counters["bu-duplicate"] += 1
        else:
            ha.counters[f"bu-rejected:{v.status}"] += 1
        if flags & BU_A or v.status >= 128:
            routing = inb.home_address if inb.home_address is not None \
                and address_int(inb.home_address) != address_int(inb.src) else None
            ba_flags = BA_R if flags & BU_R and ha.settings.nemo else 0
            out.append(make_send(_ba(v.status, v.sequence, v.lifetime, ba_flags, ()),
                                 inb.dst, inb.src, None, routing, hoa))

    def register(self, hoa: Any, care_of: Any, bu: BindingUpdate, v: Any, local: Any,
                 held: Optional[Binding], now: float, out: Effects) -> None:
        """Store an accepted registration of ``hoa`` at ``care_of`` as a primary binding."""
        ha = self.ha
        lifetime = seconds(v.lifetime)
        expires = now + lifetime
        prefixes = v.prefixes
        moved = held is not None and address_int(held.care_of) != address_int(care_of)
        if moved:
            ha.flaps.moved(hoa, held.care_of, care_of, now, out)  # type: ignore[union-attr]
        same = False
        if held is not None and held.primary is None:
            # A refresh or a move of our own primary: duties change only with the tunnel.
            same = not moved and held.prefixes == prefixes and (
                held.local is local or held.local == local)
            b = ha.cache.store(hoa, care_of, bu.flags, bu.sequence, lifetime, expires,
                               prefixes, None, local, now, held)
            if not same:
                # Still primary, so proxy duty unchanged; the tunnel moved.
                out.append(make_install(duties_of(ha.settings, b)[0]))
                out.append(Event(EventName.BINDING_UPDATED, home_address=hoa, care_of=care_of,
                                 sequence=bu.sequence))
        else:
            previous = held.primary if held is not None else None
            old = duties_of(ha.settings, held)
            b = ha.cache.store(hoa, care_of, bu.flags, bu.sequence, lifetime, expires,
                               prefixes, None, local, now, held)
            transition(hoa, old, duties_of(ha.settings, b), out)
            out.append(Event(EventName.BINDING_CREATED, home_address=hoa, care_of=care_of,
                             sequence=bu.sequence, prefixes=prefixes, previous=previous))
        ha.counters["bu-accepted"] += 1
        if ha.tombstones:
            ha.tombstones.lift(hoa)
        switching = ha.switching
        if switching:
            st = switching.get(hoa)
            if st is not None and st.sequence != bu.sequence:
                switching.answered(hoa, now)  # done; its answer time feeds the timeout
        if same and ha.held_copies.hold(b, now):
            return  # a refresh of our own primary, sent packed later (haha.core.heldcopies)
        ha.sync.publish(b, now, out)

    def deregister(self, held: Binding, now: float, out: Effects, why: str) -> None:
        """Delete the binding ``held`` (``why``: the event's reason) and tell the peers."""
        ha = self.ha
        hoa = held.home_address
        ha.cache.remove(hoa)
        ha.tombstones.bury(hoa, held.sequence, now)
        transition(hoa, duties_of(ha.settings, held), (None, False), out)
        ha.switching.cancel(hoa)
        out.append(Event(EventName.BINDING_DELETED, home_address=hoa, reason=why,
                         primary=held.primary is None))
        # Whoever held it, the deregistration reached this home agent: tell everybody.
        ha.sync.publish(held, now, out, deleted=True)
        ha.check_drained(out)
