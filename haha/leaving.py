"""A mobile node that stops deregisters first, within a bounded wait (Twisted glue).

:func:`deregister` asks the machine to ``leave`` (a Binding Update with lifetime 0 from where
the node is, RFC 6275 11.7.1, when a home agent holds its binding) and waits until the machine
is out of ``deregistering`` (the Binding Acknowledgement came, or it gave up) or ``timeout``
seconds have passed, whichever is first, so a stopping node is neither left registered at its
home agent for the rest of the lifetime nor held up by a home agent that does not answer.
"""

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from .core.effects import Event
from .core.events import EventName
from .core.mobilenode import DEREGISTERING, MobileNode

if TYPE_CHECKING:
    from .protocol import MobileNodeAdapter

#: How long a stopping node waits for the Binding Acknowledgement of its deregistration: longer
#: than one retransmission (INITIAL_BINDACK_TIMEOUT, 1 s), short enough for a service manager.
LEAVE_TIMEOUT = 1.5


def deregister(adapter: "MobileNodeAdapter", machine: MobileNode, clock: IReactorTime,
               timeout: float = LEAVE_TIMEOUT) -> defer.Deferred[bool]:
    """Deregister through ``adapter``; a Deferred firing True when acknowledged (or nothing
    was registered), False when ``timeout`` ran out first."""
    adapter._run(machine.leave, clock.seconds())
    if machine.state != DEREGISTERING:
        return defer.succeed(True)
    done: defer.Deferred[bool] = defer.Deferred()

    def observe(event: Event) -> None:
        if event.name == EventName.STATE and event["old"] == DEREGISTERING and not done.called:
            adapter.counters["leave-acknowledged"] += 1
            done.callback(True)

    def give_up() -> None:
        if not done.called:
            adapter.counters["leave-timed-out"] += 1
            done.callback(False)

    adapter.observers.append(observe)
    call = clock.callLater(timeout, give_up)

    def cleanup(result: bool) -> bool:
        adapter.observers.remove(observe)
        if call.active():
            call.cancel()
        return result

    return done.addBoth(cleanup)


__all__ = ["LEAVE_TIMEOUT", "deregister"]
