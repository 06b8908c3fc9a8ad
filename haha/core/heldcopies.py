"""Refreshes of a home agent's own primaries held back while it has switch requests out,
sans-IO.

A take-over hands a survivor thousands of nodes at once, and each node re-registers with it
once told: a new sequence number and lifetime, the same care-of address. The peers' copies of
those bindings already name this home agent (the take-over's own BIUs said so), so what such a
refresh changes at a peer is the copy's sequence number and lifetime, nothing that decides who
is primary or where traffic goes. Sent as each registration is accepted, the refreshes left in
BIUs of a few entries each (whatever queued between two acknowledgements): at 10,000 and
30,000 nodes a BIU, its ESP both ways and its BIA for every four to six nodes, about a fifth of
a survivor's packets while it was still telling nodes to switch.

While the home agent has switch requests outstanding (:attr:`HeldCopies.active`), a
registration that only refreshes a primary it already held (same care-of address, same
prefixes, same local address) is held here instead, newest state per node; at most
:data:`HOLD` seconds after the first one was held, or at the first tick after the last switch
request is done, every held refresh still current goes to the peers in one batch, packed
into full BIUs (``sync_mtu``). Anything else a registration or deletion publishes is sent as
before, at once; a held refresh overtaken by it (the binding deleted, or primary elsewhere
now) is dropped when released, and one still primary here is sent as the binding now is.
"""

from typing import Any, Callable, Dict, List, Optional

#: Seconds a refresh may be held at most (from the first refresh held in a batch).
HOLD = 0.25


class HeldCopies:
    """Refreshes of primaries waiting to be sent to the peers (module docstring). ``active()``
    says whether refreshes are held now; ``counters`` counts the ones sent in batches
    (``copies-held``)."""

    __slots__ = ("active", "counters", "due", "_held")

    def __init__(self, active: Callable[[], bool], counters: Any) -> None:
        self.active = active
        self.counters = counters
        #: When the held refreshes leave at the latest (None: nothing held).
        self.due: Optional[float] = None
        self._held: Dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self._held)

    def __bool__(self) -> bool:
        return bool(self._held)

    def __contains__(self, home_address: object) -> bool:
        return home_address in self._held

    def hold(self, binding: Any, now: float) -> bool:
        """Hold the refresh of primary ``binding`` if refreshes are held now; False: send it
        as usual."""
        if not self.active():
            return False
        self._held[binding.home_address] = binding
        if self.due is None:
            self.due = now + HOLD
        return True

    def release(self, now: float, cache: Any, sync: Any, out: List[Any],
                force: bool = False) -> int:
        """Send the held refreshes when due (``HOLD`` passed, or nothing holds them any more;
        ``force``: now): each binding still primary here, as it is now, queued for every peer
        and sent packed (``sync.flush``). Returns how many were sent."""
        held = self._held
        if not held:
            self.due = None
            return 0
        if not force and self.active() and self.due is not None and now < self.due:
            return 0
        self._held = {}
        self.due = None
        sent = 0
        publish = sync.publish
        for home_address in held:
            b = cache.get(home_address)
            if b is None or b.primary is not None:
                continue  # deleted since (told to everybody then), or another's primary now
            publish(b, now, out, batch=True)
            sent += 1
        if sent:
            sync.flush(now, out)
            self.counters["copies-held"] += sent
        return sent

    def clear(self) -> None:
        """Forget everything held (the home agent stops)."""
        self._held.clear()
        self.due = None
