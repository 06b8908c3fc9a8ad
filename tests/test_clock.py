"""Monotonic time (haha.clock): a reactor whose wall clock steps by hours keeps every timer.

A real Twisted reactor object (never run, never installed) is driven by hand: its wall clock is
a number the test steps, the monotonic clock another number the test advances, and
``runUntilCurrent`` fires what is due. The controls show that without the switch the same steps
stall or fire the timers, so the tests can fail.
"""

import pytest
from twisted.internet.selectreactor import SelectReactor

from haha.clock import is_monotonic, use_monotonic_time

HOUR = 3600.0


class Clocks:
    """A wall clock that steps and a monotonic clock that only moves forward."""

    def __init__(self):
        self.wall_value = 1.8e9
        self.mono_value = 1000.0

    def wall(self):
        return self.wall_value

    def mono(self):
        return self.mono_value

    def elapse(self, seconds):
        self.wall_value += seconds
        self.mono_value += seconds

    def step(self, seconds):
        self.wall_value += seconds


@pytest.fixture
def reactor_and_clocks():
    clocks = Clocks()
    r = SelectReactor()
    r.seconds = clocks.wall  # a stock reactor measures time with the wall clock
    yield r, clocks
    for call in r.getDelayedCalls():
        call.cancel()
    r.waker.connectionLost(None)


def _schedule(r, delay):
    fired = []
    r.callLater(delay, fired.append, delay)
    return fired


@pytest.mark.parametrize("step", [-6 * HOUR, +2 * HOUR])
def test_wall_clock_steps_neither_stall_nor_fire_timers(reactor_and_clocks, step):
    """After use_monotonic_time, a 5 s timer fires after 5 s whatever the wall clock did."""
    r, clocks = reactor_and_clocks
    use_monotonic_time(r, clocks.mono)
    fired = _schedule(r, 5.0)
    clocks.elapse(1.0)
    clocks.step(step)
    r.runUntilCurrent()
    assert fired == []  # +2 h fires nothing early
    assert 3.9 <= r.timeout() <= 4.0  # the poll sleeps the remaining 4 s, not hours
    clocks.elapse(4.0)
    r.runUntilCurrent()
    assert fired == [5.0]  # -6 h stalls nothing


def test_control_a_wall_clock_reactor_stalls_and_fires_early(reactor_and_clocks):
    """The failure the switch prevents: on the wall clock, -6 h stalls a timer and +2 h fires
    one early."""
    r, clocks = reactor_and_clocks
    stalled = _schedule(r, 5.0)
    clocks.step(-6 * HOUR)
    clocks.elapse(5.0)
    r.runUntilCurrent()
    assert stalled == []
    early = _schedule(r, 60.0)
    clocks.step(+2 * HOUR)
    r.runUntilCurrent()
    assert early == [60.0]


def test_pending_calls_keep_their_remaining_delay(reactor_and_clocks):
    """Calls scheduled before the switch fire after the delay they had left, in order."""
    r, clocks = reactor_and_clocks
    order = []
    r.callLater(3.0, order.append, "b")
    r.callLater(1.0, order.append, "a")
    clocks.elapse(0.5)
    use_monotonic_time(r, clocks.mono)
    clocks.step(-6 * HOUR)
    clocks.elapse(0.5)
    r.runUntilCurrent()
    assert order == ["a"]
    clocks.elapse(1.9)
    r.runUntilCurrent()
    assert order == ["a"]
    clocks.elapse(0.1)
    r.runUntilCurrent()
    assert order == ["a", "b"]


def test_cancelled_calls_in_the_heap_move_too(reactor_and_clocks):
    """A cancelled call still held in the reactor's heap is moved with the others, so the heap
    keeps its order and the live calls fire on time."""
    r, clocks = reactor_and_clocks
    fired = []
    for delay in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0):
        r.callLater(delay, fired.append, delay)
    r.runUntilCurrent()  # moves the new calls into the heap
    doomed = r.callLater(0.5, fired.append, "never")
    r.runUntilCurrent()  # into the heap
    doomed.cancel()  # stays in the heap until it comes up
    assert doomed in r._pendingTimedCalls
    use_monotonic_time(r, clocks.mono)
    assert doomed.seconds == clocks.mono and doomed.time < clocks.mono() + 1
    clocks.step(+2 * HOUR)
    for expected in range(1, 8):
        clocks.elapse(1.0)
        r.runUntilCurrent()
        assert fired == [float(d) for d in range(1, expected + 1)]


def test_reset_and_delay_use_the_monotonic_clock(reactor_and_clocks):
    """DelayedCall.reset after a step counts from monotonic now (a stale wall-clock seconds
    function in a moved call would push it hours away)."""
    r, clocks = reactor_and_clocks
    fired = []
    call = r.callLater(10.0, fired.append, 1)
    use_monotonic_time(r, clocks.mono)
    clocks.step(+2 * HOUR)
    call.reset(2.0)
    clocks.elapse(2.0)
    r.runUntilCurrent()
    assert fired == [1]


def test_switch_is_idempotent_and_reported(reactor_and_clocks):
    """A second switch changes nothing; is_monotonic tells whether a reactor was switched."""
    r, clocks = reactor_and_clocks
    assert not is_monotonic(r, clocks.mono)
    fired = _schedule(r, 2.0)
    use_monotonic_time(r, clocks.mono)
    use_monotonic_time(r, clocks.mono)
    assert is_monotonic(r, clocks.mono)
    clocks.elapse(2.0)
    r.runUntilCurrent()
    assert fired == [2.0]


def test_an_object_without_a_reactor_clock_is_refused():
    """Something that is not a ReactorBase cannot be switched: a clear TypeError."""
    with pytest.raises(TypeError, match="already monotonic"):
        use_monotonic_time(object())


def test_twistd_wiring_switches_the_global_reactor(tmp_path, monkeypatch):
    """haha.tap.make (twistd's makeService) puts the global reactor on the monotonic clock
    before it loads the configuration (recorded, so the test process's reactor is untouched)."""
    from twisted.internet import reactor

    from haha import clock, tap

    switched = []
    monkeypatch.setattr(clock, "use_monotonic_time", switched.append)
    conf = tmp_path / "bad.conf"
    conf.write_text("[home-agent]\n")  # fails to load: only the wiring before it runs
    with pytest.raises(SystemExit):
        tap.make("haha", tap.load_home_agent, "HomeAgentService", {"config": str(conf)})
    assert switched == [reactor]
