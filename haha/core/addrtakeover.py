"""Address take-over: mobile nodes that obey no switch request survive a home agent's death, sans-IO.

With ``address_takeover`` the home agent address (the one mobile nodes register with) belongs to
the service, not to one machine, the way VRRP moves a router's address: when a peer dies, the
first-ranked live home agent (the one that takes over its bindings, docs/protocol.md 6.6) also holds
the dead peer's home agent address, so the node's next Binding Update and its reverse tunnel
reach a live home agent without the node knowing. How the address is held is the backend's
business (:class:`~haha.core.effects.HoldAddress`): with a shared home link ('home-link') the
address goes on the home interface and unsolicited Neighbour Advertisements move it; otherwise
('separate-links', 'no-home-link') a /128 route tagged with haha's routing protocol number
attracts it through the operator's routing.

Each home agent holds its *own* address only after an authenticated hand-back, never by
racing a holder:

1. at start it sends every known peer a hand-back request: a BIR carrying one IP Address option
   of sub-type 3 (Home Agent Address) with its home agent address, ESP-protected like every
   HA<->HA message;
2. a peer that holds the address stops holding it, turns the bindings it served from that
   address into copies naming the requester and sends them to it in BIUs naming it as the
   primary (the requester restores them), then confirms with a BIA carrying the same option; a
   peer that does not hold it confirms at once;
3. the requester holds its address when every peer has confirmed, or, at the end of the boot
   wait, for peers that never showed a HELLO (they cannot be holding it), or once a peer that
   has not confirmed is declared dead. Requests are retransmitted with the BIU back-off,
   without limit.

A holder's HELLOs name the addresses it holds for others (IP Address options of sub-type 3), so
that when it dies those move with its own. Whether an address is held by two live home agents is
checked after every step of random kills and restarts in ``tests/test_core_addrtakeover.py``; an
address whose owner died before the first-ranked home agent started is not known to it, and
nobody holds it until the owner returns.

Two more things serve nodes that ignore switch requests: a Binding Error with status 2
(unrecognised MH type) in answer to a switch request marks the node as not supporting it (no
more requests: :attr:`AddressTakeover.unswitchable`); and a copy that expires is kept for
take-over for the HA lifetime after its expiry (:meth:`AddressTakeover.linger`), since a
primary that died stops refreshing its copies before its peers can declare it dead.
"""

import random
from collections import deque
from collections.abc import Collection, Iterable, MutableMapping
from ipaddress import IPv6Address
from typing import Literal

from haha.wire.mh import BindingInfoAck, BindingInfoRequest, HaHello
from haha.wire.options import IPADDR_HOME_AGENT, IpAddress

from .cache import Binding, BindingCache
from .effects import Event, HoldAddress, Send
from .effecttypes import Effects
from .events import EventName
from .settings import HOME_LINK, HomeAgentSettings


def handback_address(message: BindingInfoRequest | BindingInfoAck) -> IPv6Address | None:
    """The address a hand-back BIR or BIA names (its IP Address option of sub-type 3), or
    None when ``message`` is an ordinary BIR/BIA."""
    for o in message.options:
        if type(o) is IpAddress and o.subtype == IPADDR_HOME_AGENT:
            return o.address
    return None


class _Request:
    __slots__ = ("identifier", "timeout", "next_at")

    def __init__(self, identifier: int, timeout: float, next_at: float) -> None:
        self.identifier = identifier
        self.timeout = timeout
        self.next_at = next_at


class AddressTakeover:
    """The address side of take-over for one home agent (module docstring).

    ``settings`` is the home agent's :class:`~haha.core.settings.HomeAgentSettings`,
    ``rng`` and ``counters`` are the home agent's. Methods append effects to ``out``.
    """

    def __init__(self, settings: HomeAgentSettings, rng: random.Random,
                 counters: MutableMapping[str, int]) -> None:
        self.settings = settings
        self.rng = rng
        self.counters = counters
        self.enabled = settings.address_takeover
        self.on_link = settings.kind == HOME_LINK
        self.address = settings.address
        self.identity: IPv6Address = settings.signalling_address
        #: Peer signalling address -> the home agent address it announced (HELLO, RA).
        self.announced: dict[IPv6Address, IPv6Address] = {}
        #: Address held for a dead peer -> that peer's signalling address.
        self.held: dict[IPv6Address, IPv6Address] = {}
        #: Peer signalling address -> the addresses it said it holds for others (its HELLOs).
        self.held_by: dict[IPv6Address, tuple[IPv6Address, ...]] = {}
        #: Whether this home agent holds its own address.
        self.own = False
        #: Home addresses whose node answered a switch request with Binding Error status 2.
        self.unswitchable: set[IPv6Address] = set()
        self._waiting: dict[IPv6Address, _Request] = {}  # peer -> _Request (hand-back asked, not yet confirmed)
        self._lingering: dict[IPv6Address, tuple[Binding, float]] = {}  # home address -> (binding, until)
        self._linger_queue: deque[tuple[float, IPv6Address]] = deque()  # (until, home address)

    # -- life cycle ----------------------------------------------------------------------

    def start(self, peers: Collection[IPv6Address], now: float, out: Effects) -> None:
        """Ask every peer in ``peers`` (signalling addresses) for our address back."""
        if not self.enabled:
            return
        for peer in sorted(peers, key=int):
            timeout = self.settings.biu_initial_timeout
            r = self._waiting[peer] = _Request(self.rng.getrandbits(16) or 1, timeout,
                                               now + timeout)
            self._send_request(peer, r, out)
        out.append(Event(EventName.ADDRESS_HANDBACK_REQUESTED, address=self.address,
                         peers=tuple(sorted(peers, key=int))))
        self._maybe_hold_own(out)

    def boot_over(self, live: Collection[IPv6Address], out: Effects) -> None:
        """The boot wait ended: peers not in ``live`` never showed up and hold nothing."""
        if not self.enabled:
            return
        for peer in list(self._waiting):
            if peer not in live:
                del self._waiting[peer]
        self._maybe_hold_own(out)

    def stop(self, out: Effects) -> None:
        """Let go of every address held (a clean stop: the survivors take them over)."""
        if not self.enabled:
            return
        for address in sorted(self.held, key=int):
            out.append(HoldAddress(address, False, self.on_link))
        self.held.clear()
        if self.own:
            self.own = False
            out.append(HoldAddress(self.address, False, self.on_link))
        self._waiting.clear()

    # -- peers -------------------------------------------------------------------------------

    def peer_seen(self, peer: IPv6Address, home_agent: IPv6Address | None) -> None:
        """Remember the home agent address ``peer`` announces."""
        if home_agent is not None and home_agent != self.address:
            self.announced[peer] = home_agent

    def peer_hello(self, peer: IPv6Address, hello: HaHello) -> None:
        """Remember what ``peer``'s HELLO says it holds for others (IP Address options of
        sub-type 3): if it dies, those move too."""
        if self.enabled:
            self.held_by[peer] = tuple(o.address for o in hello.options if type(o) is IpAddress
                                       and o.subtype == IPADDR_HOME_AGENT)

    def hello_options(self) -> tuple[IpAddress, ...]:
        """IP Address options (sub-type 3) naming the addresses held for dead peers."""
        return tuple(IpAddress(IPADDR_HOME_AGENT, a, 128) for a in sorted(self.held, key=int))

    def peer_gone(self, peer: IPv6Address, out: Effects) -> None:
        """``peer`` is dead: it will not confirm a hand-back (whatever it held of ours, its
        host keeps until its next start reclaims it)."""
        if self._waiting.pop(peer, None) is not None:
            self._maybe_hold_own(out)

    def take_over(self, dead: IPv6Address, live: Collection[IPv6Address],
                  out: Effects) -> IPv6Address | None:
        """This home agent ranks first after ``dead`` died (``live``: the live peers): hold the
        home agent address of every known peer that is not live. Returns the dead peer's
        address (the bindings taken over are served from it), or None."""
        if not self.enabled:
            return None
        theirs = {a for p, a in self.announced.items() if p in live}
        wanted = [(a, p) for p, a in self.announced.items() if p not in live]
        # What dead peers held for others (their last HELLOs) moves with them.
        wanted += [(a, p) for p, held in self.held_by.items() if p not in live for a in held]
        for address, peer in sorted(wanted, key=lambda x: (int(x[0]), int(x[1]))):
            if address in self.held or address in theirs or address == self.address:
                continue
            self.held[address] = peer
            self.counters["address-taken-over"] += 1
            out.append(HoldAddress(address, True, self.on_link))
            out.append(Event(EventName.ADDRESS_TAKEN_OVER, address=address, peer=peer))
        announced = self.announced.get(dead)
        return announced if announced in self.held else None

    # -- the hand-back exchange ----------------------------------------------------------

    def _send_request(self, peer: IPv6Address, r: _Request, out: Effects) -> None:
        bir = BindingInfoRequest(r.identifier, (IpAddress(IPADDR_HOME_AGENT, self.address, 128),))
        out.append(Send(bir, self.identity, peer, protect=peer))
        self.counters["handback-request-sent"] += 1

    def requested(self, peer: IPv6Address, identifier: int, address: IPv6Address,
                  out: Effects) -> IPv6Address | None | Literal[False]:
        """Peer ``peer`` asks for ``address`` back (an authenticated BIR). Returns the address
        released (the caller hands the bindings served from it back, then :meth:`confirm`
        answers), None when it was not held here (confirm all the same), or False when the
        address is not the one ``peer`` announced (dropped, no answer)."""
        if address != self.announced.get(peer, peer):
            self.counters["dropped:handback-not-theirs"] += 1
            out.append(Event(EventName.DROPPED, reason="handback-not-theirs", src=peer,
                             address=address))
            return False
        self.counters["handback-request-received"] += 1
        if self.held.pop(address, None) is None:
            return None
        self.counters["address-released"] += 1
        out.append(HoldAddress(address, False, self.on_link))
        out.append(Event(EventName.ADDRESS_RELEASED, address=address, to=peer))
        return address

    def confirm(self, peer: IPv6Address, identifier: int, address: IPv6Address,
                out: Effects) -> None:
        """Answer a hand-back request of ``peer`` (authenticated BIA naming ``address``)."""
        bia = BindingInfoAck(identifier, 0, (IpAddress(IPADDR_HOME_AGENT, address, 128),))
        out.append(Send(bia, self.identity, peer, protect=peer))

    def confirmed(self, peer: IPv6Address, identifier: int, address: IPv6Address | None,
                  out: Effects) -> None:
        """A hand-back confirmation (authenticated BIA) from ``peer``; one that matches no
        outstanding request is counted (``handback-unmatched``) and ignored."""
        r = self._waiting.get(peer)
        if r is None or r.identifier != identifier or address != self.address:
            self.counters["handback-unmatched"] += 1
            return
        del self._waiting[peer]
        out.append(Event(EventName.ADDRESS_HANDBACK_CONFIRMED, address=address, by=peer))
        self._maybe_hold_own(out)

    def _maybe_hold_own(self, out: Effects) -> None:
        if self._waiting or self.own:
            return
        self.own = True
        out.append(HoldAddress(self.address, True, self.on_link))
        out.append(Event(EventName.ADDRESS_HELD, address=self.address))

    @staticmethod
    def switch_target(switching: Iterable[IPv6Address], cache: BindingCache,
                      care_of: IPv6Address) -> IPv6Address | None:
        """The home address with an outstanding switch request (``switching``) whose binding
        in ``cache`` has ``care_of``, or None."""
        for hoa in switching:
            b = cache.get(hoa)
            if b is not None and b.care_of == care_of:
                return hoa
        return None

    # -- timers ----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if not self._waiting:
            return None
        return min(r.next_at for r in self._waiting.values())

    def tick(self, now: float, out: Effects) -> None:
        maximum = self.settings.biu_max_timeout
        for peer, r in sorted(self._waiting.items(), key=lambda x: int(x[0])):
            if r.next_at <= now:
                r.timeout = min(r.timeout * 2, maximum)
                r.next_at = now + r.timeout
                self._send_request(peer, r, out)
                self.counters["handback-request-retransmitted"] += 1

    # -- expired copies kept for take-over --------------------------------------------------

    def linger(self, binding: Binding, now: float) -> None:
        """Keep expired copy ``binding`` until ``now`` + HA lifetime, for a take-over."""
        until = now + self.settings.ha_lifetime
        self._lingering[binding.home_address] = (binding, until)
        self._linger_queue.append((until, binding.home_address))
        self._prune(now)

    def lingering_of(self, peer: IPv6Address, now: float) -> list[Binding]:
        """Pop and return the kept copies whose primary is ``peer``."""
        self._prune(now)
        found = [b for b, until in self._lingering.values() if b.primary == peer]
        for b in found:
            del self._lingering[b.home_address]
        return found

    def forget(self, home_address: IPv6Address) -> None:
        """``home_address`` has a live binding again (or was deleted): do not revive it."""
        self._lingering.pop(home_address, None)

    def _prune(self, now: float) -> None:
        q = self._linger_queue
        while q and q[0][0] <= now:
            until, hoa = q.popleft()
            entry = self._lingering.get(hoa)
            if entry is not None and entry[1] == until:
                del self._lingering[hoa]
