"""A mobile node that stops deregisters first, within a bounded wait (Twisted glue).

:func:`deregister` asks the machine to ``leave`` (a Binding Update with lifetime 0 from where
the node is, RFC 6275 11.7.1, when a home agent holds its binding) and waits for the machine's
:class:`~haha.core.effects.LeaveComplete` effect (the Binding Acknowledgement came, or it gave
up) or ``timeout`` seconds, whichever is first, so a stopping node is neither left registered
at its home agent for the rest of the lifetime nor held up by a home agent that does not
answer. It watches no event: the end of the wait is an effect the core returns.
"""

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from .core.mobilenode import DEREGISTERING, MobileNode

if TYPE_CHECKING:
    from .protocol import MobileNodeAdapter

#: How long a stopping node waits for the Binding Acknowledgement of its deregistration: longer
#: than one retransmission (INITIAL_BINDACK_TIMEOUT, 1 s), short enough for a service manager.
LEAVE_TIMEOUT = 1.5


def deregister(adapter: "MobileNodeAdapter", machine: MobileNode, clock: IReactorTime,
               timeout: float = LEAVE_TIMEOUT) -> defer.Deferred[bool]:
    """Deregister through ``adapter``; a Deferred firing True when the deregistration ended
    before ``timeout`` (acknowledged, given up or cut short; nothing was registered), False when
    ``timeout`` ran out first."""
    done = adapter.when_left()
    adapter.call(machine.leave, clock.seconds())
    if machine.state != DEREGISTERING:
        done.addErrback(lambda failure: None)  # not waited for: nothing was registered
        done.cancel()
        return defer.succeed(True)

    def ended(acknowledged: bool) -> bool:
        adapter.counters["leave-acknowledged" if acknowledged else "leave-unanswered"] += 1
        return True

    def timed_out(result: Any, timeout: float) -> bool:
        adapter.counters["leave-timed-out"] += 1
        return False

    done.addCallback(ended)
    # At ``timeout`` the wait is cancelled (timed_out's False) and the stop goes on.
    return done.addTimeout(timeout, clock, onTimeoutCancel=timed_out)


__all__ = ["LEAVE_TIMEOUT", "deregister"]
