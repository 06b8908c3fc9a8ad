"""A helper for tests running on the real reactor (pytest-twisted): wait for a condition."""

from twisted.internet import defer, reactor

from haha.lab.timing import scaled


def wait_for(predicate, timeout=5.0, what="condition", interval=0.01):
    """A Deferred that fires when ``predicate()`` holds, or fails after ``timeout`` seconds
    (multiplied by ``HAHA_WAIT_SCALE``, :mod:`haha.lab.timing`)."""
    timeout = scaled(timeout)
    d = defer.Deferred()
    deadline = reactor.seconds() + timeout

    def check():
        if predicate():
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError(f"timed out waiting for {what}"))
        else:
            reactor.callLater(interval, check)

    check()
    return d
