"""The load generator's timer wheel (haha.lab.timerwheel): many adapters' timers on one
reactor call, never early, at most one slot late, in order, cancellable, failures contained."""

import pytest
from twisted.internet.task import Clock

from haha.lab.timerwheel import TimerWheel


def _wheel(resolution=0.01):
    clock = Clock()
    clock.advance(1000.0)
    return clock, TimerWheel(clock, resolution)


def test_a_timer_never_fires_early_and_at_most_one_slot_late():
    """Each of many timers runs once the reactor's time has reached its deadline, and no later
    than one slot (resolution) after it."""
    clock, wheel = _wheel()
    fired = {}
    delays = [0.001 * k for k in range(1, 400, 7)] + [1.0, 1.5, 3.0]
    start = clock.seconds()
    for d in delays:
        wheel.callLater(d, lambda d=d: fired.setdefault(d, clock.seconds()))
    while len(fired) < len(delays):
        clock.advance(0.001)
        assert clock.seconds() - start < 5
    for d in delays:
        late = fired[d] - (start + d)
        assert -1e-9 <= late <= 0.01 + 0.0011, (d, late)


def test_many_timers_hold_one_reactor_call():
    """10,000 timers over 100 slots keep exactly one delayed call in the reactor (the earliest
    slot's), and the calls of one slot run in the order they were asked for."""
    clock, wheel = _wheel()
    order = []
    for k in range(10000):
        wheel.callLater(0.5 + (k % 100) * 0.01, order.append, k)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.5 + 0.0101)  # the first slot: due at 0.5, run within one slot
    assert order == list(range(0, 10000, 100))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(2)
    assert sorted(order) == list(range(10000)) and wheel.counters["fired"] == 10000
    assert clock.getDelayedCalls() == []


def test_an_earlier_timer_rearms_the_reactor_call():
    """A timer earlier than every one held moves the reactor call forward (the later slot's
    timers still run at their time)."""
    clock, wheel = _wheel()
    seen = []
    wheel.callLater(5.0, seen.append, "late")
    wheel.callLater(0.2, seen.append, "early")
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == pytest.approx(clock.seconds() + 0.2, abs=0.011)
    clock.advance(0.21)
    assert seen == ["early"]
    clock.advance(5)
    assert seen == ["early", "late"]


def test_cancelled_and_fired_timers_are_inactive_and_do_not_run():
    """cancel() keeps a timer from running (cancelling twice or after it ran changes
    nothing); active() is true only while it is pending."""
    clock, wheel = _wheel()
    seen = []
    a = wheel.callLater(1.0, seen.append, "a")
    b = wheel.callLater(1.0, seen.append, "b")
    assert a.active() and b.active()
    a.cancel()
    a.cancel()
    assert not a.active()
    clock.advance(1.1)
    assert seen == ["b"] and not b.active()
    b.cancel()
    assert not b.active() and seen == ["b"]


def test_zero_delay_calls_run_once_after_the_turn_in_order():
    """callLater(0, ...) calls wait for the reactor's next turn, all of them on one reactor
    call, in the order asked; one asked while they run is not run by the same call (it comes
    after them)."""
    clock, wheel = _wheel()
    seen = []
    for k in range(5):
        wheel.callLater(0, seen.append, k)
    wheel.callLater(0, lambda: wheel.callLater(0, seen.append, "next turn"))
    assert seen == [] and len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert seen == [0, 1, 2, 3, 4, "next turn"]
    assert wheel.counters["fired"] == 7 and clock.getDelayedCalls() == []


def test_a_failing_call_is_counted_and_the_others_run():
    """A call that raises is counted (failed) and logged; the rest of its slot still runs."""
    clock, wheel = _wheel()
    seen = []

    def boom():
        raise RuntimeError("boom")

    wheel.callLater(0.5, seen.append, 1)
    wheel.callLater(0.5, boom)
    wheel.callLater(0.5, seen.append, 2)
    clock.advance(0.6)
    assert seen == [1, 2] and wheel.counters["failed"] == 1


def test_resolution_must_be_positive():
    """A slot of zero or negative length is refused."""
    with pytest.raises(ValueError):
        TimerWheel(Clock(), 0)


def test_a_timer_asked_for_while_a_slot_runs_waits_for_its_own_slot():
    """A call made by a firing timer (an adapter re-arming for its next deadline) lands in a
    later slot and runs there, never in the slot being run and never early; the wheel then
    holds nothing (len counts pending and cancelled timers until their slot)."""
    clock, wheel = _wheel()
    seen = []
    start = clock.seconds()

    def first():
        seen.append(("first", clock.seconds()))
        wheel.callLater(0.001, lambda: seen.append(("second", clock.seconds())))
    wheel.callLater(0.5, first)
    cancelled = wheel.callLater(0.7, seen.append, "never")
    cancelled.cancel()
    assert len(wheel) == 2
    clock.advance(0.5 + 0.0101)
    assert [name for name, _ in seen] == ["first"]
    clock.advance(0.0101)
    assert [name for name, _ in seen] == ["first", "second"]
    assert seen[1][1] >= seen[0][1] + 0.001 and seen[0][1] >= start + 0.5
    clock.advance(1)
    assert len(wheel) == 0 and clock.getDelayedCalls() == []


def test_due_timers_wait_while_input_waits_to_be_read():
    """With read_first set, due timers run only once it reports everything read: while it
    answers False they wait a turn at a time (counted), never dropped, then run in order."""
    clock, wheel = _wheel()
    fired = []
    answers = [False, False, True]
    seen = []  # timers fired when read_first was asked, each time

    def read_first():
        seen.append(len(fired))
        return answers.pop(0) if answers else True

    wheel.read_first = read_first
    wheel.callLater(0.5, fired.append, 1)
    wheel.callLater(0.5, fired.append, 2)
    clock.advance(0.49)
    assert seen == [] and fired == []
    clock.advance(0.03)  # due: asked three times (two turns waited), then both run
    assert seen == [0, 0, 0] and fired == [1, 2]
    assert wheel.counters["waited-for-input"] == 2
    assert len(clock.getDelayedCalls()) == 0


def test_an_answer_read_first_cancels_the_retransmission_due():
    """What the hook is for: an answer waiting in the socket when a node's retransmission is
    due is read first; the node cancels its timer on the answer, so it never retransmits.
    Without the hook the same timer fires."""
    for hooked in (True, False):
        clock, wheel = _wheel()
        sent = []
        timer = wheel.callLater(1.0, sent.append, "retransmission")
        socket = ["answer"]  # what the shared socket holds when the timer is due

        def read_first():
            while socket:
                socket.pop()
                timer.cancel()  # the node's answer arrived: its timer is cancelled
            return True

        if hooked:
            wheel.read_first = read_first
        clock.advance(1.02)
        assert sent == ([] if hooked else ["retransmission"])
