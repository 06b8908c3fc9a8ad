"""HAHA_WAIT_SCALE: the one factor every lab wait is multiplied by (the stock-kernel tier sets 10)."""

import pytest

from haha.lab import timing
from haha.lab.cluster import DaemonGroup


def test_unset_is_one(monkeypatch):
    """Without the variable the lab's waits are the written ones."""
    monkeypatch.delenv("HAHA_WAIT_SCALE", raising=False)
    assert timing.wait_scale() == 1.0 and timing.scaled(7) == 7


def test_factor_multiplies(monkeypatch):
    """HAHA_WAIT_SCALE=10 makes a 3 s wait 30 s."""
    monkeypatch.setenv("HAHA_WAIT_SCALE", "10")
    assert timing.scaled(3) == 30


@pytest.mark.parametrize("text", ["0", "-1", "ten", "nan", "inf"])
def test_bad_values_are_refused_by_name(monkeypatch, text):
    """A factor that is not a positive number stops with the variable's name and value."""
    monkeypatch.setenv("HAHA_WAIT_SCALE", text)
    with pytest.raises(ValueError, match=f"HAHA_WAIT_SCALE={text!r}"):
        timing.wait_scale()


def test_daemon_group_waits_are_scaled(monkeypatch):
    """DaemonGroup.wait_for's timeout is scaled: with a factor of 4 a 0.05 s wait for a
    predicate that never holds reports 0.2 s."""
    monkeypatch.setenv("HAHA_WAIT_SCALE", "4")
    group = DaemonGroup()
    with pytest.raises(TimeoutError, match=r"no thing after 0\.2 s"):
        group.wait_for("thing", lambda: False, timeout=0.05, interval=0.01)
