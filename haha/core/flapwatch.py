"""An alarm for a home address claimed from two care-of addresses in turn (sans-IO).

Two nodes configured with one home address and one key both register: each refresh moves the
binding to the other's care-of address, both nodes see their BAs and report "registered", and
traffic goes to whichever refreshed last. Nothing in RFC 6275 forbids a node to move back and
forth, so this is no reason to refuse a registration, but it is one to tell the operator.

:class:`FlapWatch` is told each care-of change of a binding (``moved``), whether a registration
here or a peer's BIU made it (the two nodes may register with different home agents). A change back to the
care-of address the binding had before the last change, less than :data:`WINDOW` seconds after
that change, is a *flip* (counted as ``care-of-flips``). :data:`FLIPS` flips in a row raise the
alarm: an ``address-conflict`` event naming the home address and both care-of addresses, at most
once per home address per :data:`ALARM_INTERVAL` and at most :data:`ALARM_BURST` at once for
all home addresses together (refilled at one per second); alarms held back are counted as
``address-conflict-suppressed``. It remembers at most :data:`TRACKED` home addresses, those that
changed most recently.
"""

from collections import OrderedDict
from collections.abc import MutableMapping
from ipaddress import IPv6Address

from .effects import Event
from .effecttypes import Effects
from .events import EventName

#: A change back within this many seconds of the previous change is a flip.
WINDOW = 600.0
#: Flips in a row that raise the alarm (A -> B -> A -> B -> A: the node at A is not alone).
FLIPS = 3
#: At most one alarm per home address in this many seconds.
ALARM_INTERVAL = 300.0
#: Alarms for all home addresses together: this many at once, then one per second.
ALARM_BURST = 10
#: Home addresses remembered (least recently changed forgotten first).
TRACKED = 4096


class _Track:
    __slots__ = ("care_of", "previous", "changed", "flips", "alarmed")

    def __init__(self, care_of: IPv6Address, previous: IPv6Address, changed: float) -> None:
        self.care_of = care_of
        self.previous = previous
        self.changed = changed
        self.flips = 0
        self.alarmed: float | None = None


class FlapWatch:
    """Care-of flips per home address (module docstring). ``counters`` is the machine's."""

    def __init__(self, counters: MutableMapping[str, int]) -> None:
        self.counters = counters
        self._tracks: OrderedDict[IPv6Address, _Track] = OrderedDict()
        self._tokens = float(ALARM_BURST)
        self._stamp: float | None = None

    def __len__(self) -> int:
        return len(self._tracks)

    def moved(self, home_address: IPv6Address, old: IPv6Address, new: IPv6Address, now: float,
              out: Effects) -> None:
        """The binding of ``home_address`` moved from care-of ``old`` to ``new`` at ``now``."""
        tracks = self._tracks
        t = tracks.get(home_address)
        if t is None or t.care_of != old:
            t = _Track(new, old, now)
            tracks[home_address] = t
            tracks.move_to_end(home_address)
            if len(tracks) > TRACKED:
                tracks.popitem(last=False)
            return
        tracks.move_to_end(home_address)
        if new == t.previous and now - t.changed < WINDOW:
            t.flips += 1
            self.counters["care-of-flips"] += 1
        else:
            t.flips = 0
        t.previous, t.care_of, t.changed = old, new, now
        if t.flips >= FLIPS:
            self._alarm(home_address, t, now, out)

    def _alarm(self, home_address: IPv6Address, t: _Track, now: float, out: Effects) -> None:
        if t.alarmed is not None and now - t.alarmed < ALARM_INTERVAL:
            self.counters["address-conflict-suppressed"] += 1
            return
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(float(ALARM_BURST), self._tokens + now - self._stamp)
        self._stamp = now
        if self._tokens < 1:
            self.counters["address-conflict-suppressed"] += 1
            return
        self._tokens -= 1
        t.alarmed = now
        self.counters["address-conflict"] += 1
        out.append(Event(EventName.ADDRESS_CONFLICT, home_address=home_address,
                         care_of=t.care_of, other_care_of=t.previous, flips=t.flips))


__all__ = ["FlapWatch", "WINDOW", "FLIPS", "ALARM_INTERVAL", "ALARM_BURST", "TRACKED"]
