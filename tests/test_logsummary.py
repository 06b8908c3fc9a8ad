"""Per-binding info log lines are summarised under a burst (haha.logsummary): a few each
second at info, the rest at debug, and one summary line per second saying how many."""

from ipaddress import IPv6Address as A

import pytest
from twisted.logger import LogLevel

from haha.core.effects import Event
from haha.logsummary import BurstSummary

from tests.test_protocol_glue import adapter


def test_a_few_per_second_then_held_back_and_taken_for_the_summary():
    """The first ``per_second`` events of each name in a window are admitted, the rest held
    back and counted per name; a new window admits again; take() empties the tally."""
    s = BurstSummary(per_second=3, window=1.0)
    assert [s.admit("binding-created", 10.0) for _ in range(5)] == [True] * 3 + [False] * 2
    assert s.admit("binding-deleted", 10.5)  # its own allowance
    assert not s.admit("binding-created", 10.9)
    assert s.pending() and s.take() == [("binding-created", 3)] and not s.pending()
    assert s.admit("binding-created", 11.0)  # the next window
    assert s.held_back == 3
    with pytest.raises(ValueError):
        BurstSummary(window=0)


def test_a_burst_of_binding_events_logs_ten_lines_and_one_summary():
    """1,000 binding-created events in one second: 10 at info, 990 at debug (still there when
    debug is on, and all counted and passed to observers), then one info line with the count."""
    a, clock, logged = adapter()
    seen = []
    a.observers.append(seen.append)
    del logged[:]
    for i in range(1000):
        a.event(Event("binding-created", home_address=A(f"2001:db8:1::{i + 16:x}")))
    per_level = [e["log_level"] for e in logged if e.get("event") == "binding-created"]
    assert per_level.count(LogLevel.info) == 10 and per_level.count(LogLevel.debug) == 990
    assert a.counters["event.binding-created"] == 1000 and len(seen) == 1000
    clock.advance(1.0)
    (summary,) = [e for e in logged if e.get("summarised")]
    assert summary["log_level"] == LogLevel.info
    assert (summary["event"], summary["count"]) == ("binding-created", 990)
    # Events that are not per binding are never held back.
    for _ in range(50):
        a.event(Event("peer-up", peer=A("2001:db8:1::2")))
    assert [e["log_level"] for e in logged if e.get("event") == "peer-up"] == [LogLevel.info] * 50
