"""The reactor stall probe (haha.stallprobe): what it counts, on a real reactor, and in a home
agent's ``status`` and ``counters``."""

import time

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from haha.stallprobe import StallProbe


class _Times:
    """Fake monotonic, CPU and wall clocks moved by hand."""

    def __init__(self):
        self.mono = self.cpu = 0.0
        self.wall = 1_000_000.0

    def probe(self, reactor, **kw):
        return StallProbe(reactor, monotonic=lambda: self.mono, cpu=lambda: self.cpu,
                          wall=lambda: self.wall, **kw)


def test_a_stall_is_the_lateness_the_reactor_spent_working():
    """A run 80 ms late after 90 ms of the reactor's CPU (busy all along) is an 80 ms stall;
    80 ms late after 3 ms of CPU (the process waited for a CPU, or blocked in a call) is a
    3 ms stall, though 80 ms late. Each bound's counter counts the stalls at or over it."""
    clock, t = Clock(), _Times()
    p = t.probe(clock)
    p.observe(0.080, 0.090)
    assert p.longest_stall == pytest.approx(0.080) and p.longest_late == pytest.approx(0.080)
    p.observe(0.200, 0.003)
    assert p.longest_stall == pytest.approx(0.080)
    assert p.longest_late == pytest.approx(0.200)
    assert p.over == {10: 1, 50: 1, 100: 0, 500: 0}
    c = p.counters()
    assert c["reactor.stalls-over-50ms"] == 1 and c["reactor.stalls-over-100ms"] == 0
    assert c["reactor.probe-runs"] == 2
    [(family, values)] = p.gauges()
    assert family == "haha_reactor_longest_seconds"
    assert values == {"stall": pytest.approx(0.080), "late": pytest.approx(0.200)}


def test_only_stalls_over_10ms_are_kept_with_their_time():
    """``recent`` keeps (wall time, stall ms, late ms) of runs with a stall of 10 ms or more,
    the last ``keep`` of them (bench/scale.py's probe takes a phase's from them)."""
    clock, t = Clock(), _Times()
    p = t.probe(clock, keep=3)
    for i, (late, cpu) in enumerate([(0.005, 0.02), (0.030, 0.001), (0.012, 0.05),
                                     (0.020, 0.03), (0.060, 0.07), (0.011, 0.02)]):
        t.wall = 100.0 + i
        p.observe(late, cpu)
    assert [r[0] for r in p.recent] == [103.0, 104.0, 105.0]  # runs 2 .. 5, the last 3 kept
    report = p.report()
    assert report["recent"][1] == [104.0, 60.0, 60.0]


def test_the_timer_runs_every_interval_and_stops_with_its_service():
    """Started, the probe is due every interval and measures each run against when it was due
    (the clocks are those given); stopped, no call of it is left on the reactor."""
    clock, t = Clock(), _Times()
    p = t.probe(clock, interval=0.01)
    p.startService()
    for step in (0.01, 0.01, 0.01):
        t.mono += step + 0.030
        t.cpu += 0.025
        clock.advance(step)
    assert p.runs == 3
    assert p.longest_late == pytest.approx(0.030) and p.longest_stall == pytest.approx(0.025)
    p.stopService()
    assert clock.getDelayedCalls() == []
    with pytest.raises(ValueError, match="positive"):
        StallProbe(clock, interval=0)


def test_garbage_collections_are_timed_per_generation():
    """Each collection is counted in its generation with its pause; pauses of 50 ms or more
    are counted apart; started, the probe times the collector's real collections (a forced
    full one is a generation-2 collection), and stopped it no longer does."""
    import gc
    clock, t = Clock(), _Times()
    p = t.probe(clock)
    p.gc_pause(0, 0.001)
    p.gc_pause(2, 0.080)
    p.gc_pause(2, 0.020)
    assert p.gc_collections == [1, 0, 2] and p.gc_over_50ms == [0, 0, 1]
    assert p.report()["gc"]["longest_ms"] == [1.0, 0.0, 80.0]
    assert p.counters()["reactor.gc2-pauses-over-50ms"] == 1
    real = StallProbe(clock)
    real.startService()
    gc.collect()
    assert real.gc_collections[2] == 1
    real.stopService()
    gc.collect()
    assert real.gc_collections[2] == 1


def _busy(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@pytest_twisted.inlineCallbacks
def test_on_the_real_reactor_cpu_work_is_a_stall_and_a_blocking_wait_only_a_delay():
    """On the real reactor: a callback computing for 150 ms of CPU is seen as a stall of at
    least 100 ms; one blocked in ``time.sleep`` for 150 ms delays the probe as long but is not
    counted as the reactor's own work."""
    p = StallProbe(reactor)
    p.startService()
    try:
        yield _sleep(0.05)
        reactor.callLater(0, _busy, 0.150)
        yield _sleep(0.3)
        assert p.longest_stall >= 0.100 and p.over[100] >= 1
        busy_stall = p.longest_stall
        p.longest_stall = p.longest_late = 0.0
        reactor.callLater(0, time.sleep, 0.150)
        yield _sleep(0.3)
        assert p.longest_late >= 0.100
        assert p.longest_stall < 0.050 < busy_stall
    finally:
        p.stopService()


def test_a_home_agent_reports_its_probe_in_status_and_counters(tmp_path):
    """A home agent service runs the probe as a child: ``status`` has a ``reactor`` section
    and ``counters`` the ``reactor.*`` counters, and the probe stops with the service."""
    from tests.test_service import Network
    net = Network(tmp_path)
    ha = net.has[0]
    assert isinstance(ha.stall_probe, StallProbe)
    ha.startService()
    net.run(0.5, step=0.01)
    assert ha.stall_probe.runs >= 45
    status = ha.status()["reactor"]
    assert set(status) == {"interval_ms", "longest_stall_ms", "longest_late_ms",
                           "stalls_over_ms", "recent", "gc"}
    counters = ha.counters()
    assert counters["reactor.probe-runs"] == ha.stall_probe.runs
    assert "reactor.stalls-over-50ms" in counters
    text = ha.metrics.registry  # the scrape: counters and gauges in their families
    from prometheus_client import generate_latest
    scraped = generate_latest(text).decode()
    assert 'haha_reactor_total{address="2001:db8:1::1",counter="stalls-over-50ms"' in scraped
    assert 'haha_reactor_longest_seconds{address="2001:db8:1::1",kind="stall"' in scraped
    ha.stopService()
    net.run(6)
    assert not ha.stall_probe.running


def test_the_load_benchmark_takes_each_stall_once_per_phase():
    """``ControlProbe.note_stalls`` (bench/scale.py's per-phase figures): stalls from before
    the phase began are ignored, a stall seen in two ``status`` answers counts once, the
    longest and those of 50 ms or more are reported by ``reset``, which starts a new phase."""
    from haha.lab.loadcluster import ControlProbe
    class NoHomeAgents:
        has = []

    probe = ControlProbe(cluster=NoHomeAgents())
    t0 = probe._since

    def status(*recent, long_gcs=(0, 0, 0)):
        return {"reactor": {"recent": [list(r) for r in recent],
                            "gc": {"pauses_over_50ms": list(long_gcs)}}}

    probe.note_stalls("ha1", status((t0 - 5, 900.0, 900.0), (t0 + 1, 20.0, 25.0),
                                    long_gcs=(0, 0, 4)))
    probe.note_stalls("ha1", status((t0 + 1, 20.0, 25.0), (t0 + 2, 70.0, 80.0),
                                    long_gcs=(0, 1, 6)))
    probe.note_stalls("ha2", status())
    report = probe.reset()
    assert report["longest_stall_ms"] == {"ha1": 70.0, "ha2": 0.0}
    assert report["stalls_over_50ms"] == {"ha1": 1}
    assert report["gc_pauses_over_50ms"] == {"ha1": 3, "ha2": 0}  # 4 before the phase
    probe.note_stalls("ha1", status((t0 + 2, 70.0, 80.0)))  # before the new phase
    assert probe.reset()["longest_stall_ms"] == {"ha1": 0.0}


def test_a_restarted_home_agent_never_counts_negative_collections():
    """A home agent killed and started again in a phase reports its long collections from 0:
    the phase counts the new process's (it had 5 before the restart, 1 since), never the
    negative difference it used to report (-4)."""
    from haha.lab.loadcluster import ControlProbe

    class NoHomeAgents:
        has = []

    probe = ControlProbe(cluster=NoHomeAgents())

    def status(long_gcs):
        return {"reactor": {"recent": [], "gc": {"pauses_over_50ms": [0, 0, long_gcs]}}}

    probe.note_stalls("ha1", status(5))
    probe.reset()
    probe.note_stalls("ha1", status(0))  # the new process
    probe.note_stalls("ha1", status(1))
    assert probe.reset()["gc_pauses_over_50ms"] == {"ha1": 1}
