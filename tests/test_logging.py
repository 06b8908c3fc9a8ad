"""Logging costs nothing below its level: an event the level discards is counted and handed to
observers, but its fields are never turned into strings and no log event is built."""

import pytest
from twisted.logger import LogLevel, Logger, globalLogPublisher

from haha import logging as hlog
from haha.core.effects import Event
from haha.protocol import Adapter


class Costly:
    """A field value that counts how often it is turned into a string."""

    def __init__(self):
        self.formatted = 0

    def __str__(self):
        self.formatted += 1
        return "costly"


@pytest.fixture
def published():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)
    hlog.configure("info")


def _adapter():
    a = Adapter(machine=None, transport=None, clock=None, profile=None, policy=None)
    a.log = hlog.logger("haha.test-logging")
    return a


def test_an_event_below_the_level_builds_nothing(published):
    """At level info a debug event is counted and observed, but its fields are not formatted
    and nothing reaches the log publisher."""
    hlog.configure("info")
    a = _adapter()
    observed = []
    a.observers.append(observed.append)
    value = Costly()
    a.event(Event("binding-updated", home_address=value))
    assert value.formatted == 0
    assert a.counters["event.binding-updated"] == 1 and len(observed) == 1
    assert not [e for e in published if e.get("event") == "binding-updated"]


def test_the_same_event_is_logged_with_string_fields_at_level_debug(published):
    """Lowering the level takes effect at once (the threshold cache is emptied) and the event
    is published with its fields as strings, as the JSON observer needs."""
    hlog.configure("info")
    a = _adapter()
    a.event(Event("binding-updated", home_address=Costly()))
    hlog.configure("debug")
    value = Costly()
    a.event(Event("binding-updated", home_address=value))
    logged = [e for e in published if e.get("event") == "binding-updated"]
    assert len(logged) == 1 and logged[0]["home_address"] == "costly"
    assert logged[0]["log_level"] == LogLevel.debug and value.formatted == 1


def test_info_events_and_drops_follow_the_level(published):
    """An info event is published at info; a dropped packet's debug line only at debug."""
    hlog.configure("info")
    a = _adapter()
    a.event(Event("peer-up", peer="2001:db8:1::2"))
    a._drop("bad-checksum", source=Costly())
    assert [e["log_level"] for e in published if e.get("event") == "peer-up"] == [LogLevel.info]
    assert not [e for e in published if e.get("reason") == "bad-checksum"]
    hlog.configure("debug")
    a._drop("bad-checksum", source="x")
    assert [e for e in published if e.get("reason") == "bad-checksum"]


def test_a_logger_with_an_identity_is_filtered_the_same_way(published):
    """A logger tagging its events with the home agent's identity goes through the same level
    filter: below the level its events cost nothing either."""
    hlog.configure("info")
    a = _adapter()
    a.log = hlog.logger("haha.test-logging", identity="2001:db8:1::1")
    value = Costly()
    a.event(Event("binding-updated", home_address=value))
    assert value.formatted == 0
    hlog.configure("debug")
    a.event(Event("binding-updated", home_address=value))
    logged = [e for e in published if e.get("event") == "binding-updated"]
    assert len(logged) == 1 and logged[0]["identity"] == "2001:db8:1::1"


def test_an_embedders_own_logger_is_not_filtered():
    """A Logger that does not publish through haha's level filter is always given the event:
    its own observers decide."""
    hlog.configure("info")
    seen = []
    assert hlog.enabled(Logger(namespace="x", observer=seen.append), LogLevel.debug)
    assert not hlog.enabled(hlog.logger("haha.x"), LogLevel.debug)


def test_level_of_names_what_configure_set():
    """level_of() answers the level configure() set, for every level and per namespace
    (the test suite's fixture restores it from this between tests)."""
    try:
        for name in ("debug", "warn", "error", "info"):
            hlog.configure(name)
            assert hlog.level_of() == name
        hlog.configure("error", namespace="haha.test.level")
        assert hlog.level_of("haha.test.level") == "error" and hlog.level_of() == "info"
    finally:
        hlog.configure("info", namespace="haha.test.level")
        hlog.configure("info")
