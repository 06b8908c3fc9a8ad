"""Signal handling and SIGHUP re-reading (haha.durability, haha.reload), without processes.

Signals are delivered through a fake ``signal`` module and a fake reactor (``callFromThread``
runs at once, ``stop`` is recorded). The re-read runs against a home agent service built from a
file on disk: node keys added, removed and changed are applied, other changes are named as
needing a restart, and a file or key that does not load changes nothing.
"""

import signal as real_signal
from collections import Counter
from ipaddress import IPv6Address

import pytest
from twisted.internet.task import Clock

from haha.backends.null import NullBackend
from haha.config import load_home_agent
from haha.discovery.static import StaticDiscovery
from haha.durability import daemon_signals, install_signal_handlers
from haha.inifile import ConfigError
from haha.io.memory import MemoryHub
from haha.reload import reload_home_agent
from haha.security.keys import generate_key_file
from haha.service import HomeAgentService


class FakeSignals:
    SIGHUP, SIGUSR1, SIGUSR2, SIGALRM, SIGQUIT = (
        real_signal.SIGHUP, real_signal.SIGUSR1, real_signal.SIGUSR2, real_signal.SIGALRM,
        real_signal.SIGQUIT)
    SIG_DFL = real_signal.SIG_DFL

    def __init__(self, current=None):
        self.handlers = {}
        self.current = current or {}

    def getsignal(self, number):
        return self.current.get(number, self.SIG_DFL)

    def signal(self, number, handler):
        self.handlers[number] = handler

    def deliver(self, number):
        self.handlers[number](number, None)


class FakeReactor:
    def __init__(self):
        self.stopped = 0

    def callFromThread(self, f, *a):  # noqa: N802 - Twisted name
        f(*a)

    def stop(self):
        self.stopped += 1


class FakeService:
    def __init__(self):
        self.adapter = type("A", (), {"counters": Counter()})()


def test_each_handled_signal_does_what_the_table_says():
    """SIGHUP calls the re-read, SIGUSR1/SIGUSR2/SIGALRM are counted and ignored, SIGQUIT
    stops the reactor (the service then drains as for SIGTERM)."""
    signals, reactor, service = FakeSignals(), FakeReactor(), FakeService()
    reloads = []
    installed = install_signal_handlers(service, reactor, lambda: reloads.append(1), signals)
    assert set(installed) == {signals.SIGHUP, signals.SIGUSR1, signals.SIGUSR2, signals.SIGALRM,
                              signals.SIGQUIT}
    signals.deliver(signals.SIGHUP)
    signals.deliver(signals.SIGUSR2)
    signals.deliver(signals.SIGUSR1)
    signals.deliver(signals.SIGALRM)
    assert reloads == [1] and reactor.stopped == 0
    signals.deliver(signals.SIGQUIT)
    assert reactor.stopped == 1
    c = service.adapter.counters
    assert (c["signal.SIGHUP"], c["signal.SIGUSR1"], c["signal.SIGUSR2"], c["signal.SIGALRM"],
            c["signal.SIGQUIT"]) == (1, 1, 1, 1, 1)


def test_a_failing_reread_is_counted_and_does_not_escape():
    """An exception inside the re-read is logged and counted; the handler returns normally."""
    signals, service = FakeSignals(), FakeService()

    def boom():
        raise RuntimeError("x")

    install_signal_handlers(service, FakeReactor(), boom, signals)
    signals.deliver(signals.SIGHUP)
    assert service.adapter.counters["reload-failed"] == 1


def test_twistds_own_sigusr1_is_left_alone():
    """When twistd already handles SIGUSR1 (log rotation), it is not replaced."""
    signals = FakeSignals({real_signal.SIGUSR1: object()})
    installed = install_signal_handlers(FakeService(), FakeReactor(), None, signals)
    assert real_signal.SIGUSR1 not in installed and real_signal.SIGHUP in installed


HA_TEXT = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = separate-links
home-interface = eth0
preference = {preference}
router-advertisements = no
[peers]
static = 2001:db8:1::2
[peer-keys]
2001:db8:1::2 = {keys}/peer.key
[node-keys]
{nodes}
"""

MN1, MN2 = IPv6Address("2001:db8:1::100"), IPv6Address("2001:db8:1::101")


@pytest.fixture
def ha(tmp_path):
    for name in ("peer", "mn1", "mn2", "mn1-new"):
        generate_key_file(str(tmp_path / f"{name}.key"))
    path = tmp_path / "ha.conf"

    def write(nodes, preference=5):
        path.write_text(HA_TEXT.format(preference=preference, keys=tmp_path, nodes="\n".join(
            f"{a} = {tmp_path}/{k}.key" for a, k in nodes)))

    write([(MN1, "mn1")])
    clock = Clock()
    hub = MemoryHub(clock)
    config = load_home_agent(str(path))
    service = HomeAgentService.build(config, clock, backend=NullBackend(),
                                     transport=hub.endpoint(config.address),
                                     discovery=StaticDiscovery(config.peers))
    service.write = write
    return service


def _nodes(service):
    """The configured nodes the home agent serves (their pairs are derived on first contact,
    haha.security.nodegroup)."""
    return sorted(str(p) for p in service.adapter.node_group.configured())


def _spis(service, peer):
    return sorted(r["spi"] for r in service.sadb.describe() if r["peer"] == str(peer))


def test_reread_adds_removes_and_rekeys_nodes(ha):
    """A node added to [node-keys] is served (its SAs derived when it shows up), a node
    removed loses its SAs and is no longer served, a node whose key file changed loses the
    SAs of its old key and gets pairs of the new one; the summary says so."""
    group = ha.adapter.node_group
    assert group.ensure(ha.sadb, MN1) and ha.sadb.has_peer(MN1)  # MN1 has spoken
    ha.write([(MN1, "mn1"), (MN2, "mn2")])
    s = reload_home_agent(ha, load_home_agent)
    assert s["nodes-added"] == [str(MN2)] and _nodes(ha) == [str(MN1), str(MN2)]
    assert group.ensure(ha.sadb, MN2) and ha.sadb.has_peer(MN2)
    before = _spis(ha, MN1)
    ha.write([(MN1, "mn1-new")])
    s = reload_home_agent(ha, load_home_agent)
    assert s["nodes-removed"] == [str(MN2)] and s["rekeyed"] == [str(MN1)]
    assert _nodes(ha) == [str(MN1)]
    assert not ha.sadb.has_peer(MN2) and not group.covers(MN2)
    assert not group.ensure(ha.sadb, MN2)  # a removed node's pair is never derived again
    assert not ha.sadb.has_peer(MN1)  # the old key's SAs are gone
    assert group.ensure(ha.sadb, MN1) and _spis(ha, MN1) != before
    assert s["restart-needed"] == []


def test_reread_names_what_needs_a_restart(ha):
    """A changed preference is not applied, and is named."""
    ha.write([(MN1, "mn1")], preference=7)
    s = reload_home_agent(ha, load_home_agent)
    assert s["restart-needed"] == ["preference"]
    assert ha.machine.preference == 5


def test_a_broken_file_or_key_changes_nothing(ha, tmp_path):
    """A configuration error, or a node key file that cannot be read, raises ConfigError (the
    daemon logs it) and leaves every SA as it was."""
    rows = ha.sadb.describe()
    nodes = ha.adapter.node_group.configured()
    ha.write([(MN1, "mn1"), (MN2, "missing")])
    with pytest.raises(ConfigError, match="missing.key"):
        reload_home_agent(ha, load_home_agent)
    (tmp_path / "ha.conf").write_text("[home-agent]\npreferense = 1\n")
    with pytest.raises(ConfigError):
        reload_home_agent(ha, load_home_agent)
    assert ha.sadb.describe() == rows and ha.adapter.node_group.configured() == nodes


def test_daemon_sighup_logs_a_refused_file_and_runs_on(ha, tmp_path):
    """The daemon's SIGHUP: a refused file is counted as reload-refused, nothing raised."""
    signals = FakeSignals()
    (tmp_path / "ha.conf").write_text("[home-agent]\npreferense = 1\n")
    daemon_signals(ha, FakeReactor(), load_home_agent, signals)
    signals.deliver(signals.SIGHUP)
    assert ha.adapter.counters["reload-refused"] == 1
    assert ha.adapter.counters["signal.SIGHUP"] == 1


def test_twistd_wiring_installs_the_handlers_once_running(tmp_path, monkeypatch):
    """haha.tap.make (twistd's makeService) builds the service and schedules daemon_signals for
    when the reactor runs (after twistd's own set-up, so its SIGUSR1 is seen)."""
    from twisted.internet import reactor

    from haha import clock, tap
    from haha.durability import daemon_signals as wanted

    generate_key_file(str(tmp_path / "peer.key"))
    path = tmp_path / "ha.conf"
    path.write_text(HA_TEXT.format(preference=5, keys=tmp_path, nodes="")
                    + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:9\n")
    scheduled = []
    monkeypatch.setattr(clock, "use_monotonic_time", lambda r: r)
    monkeypatch.setattr(reactor, "callWhenRunning", lambda *a: scheduled.append(a))
    service = tap.make("haha", tap.load_home_agent, "HomeAgentService", {"config": str(path)})
    # Two calls are scheduled: the start-up failure hook's removal (haha.startup) and this.
    ours = [a for a in scheduled if a[0] is wanted]
    assert len(ours) == 1
    f, built, r, loader = ours[0]
    assert (f, built, r, loader) == (wanted, service, reactor, tap.load_home_agent)


def test_reread_rekeys_a_peer_whose_key_changed_with_this_runs_epoch(ha, tmp_path):
    """A configured peer's key file holding a new secret re-keys that pair (new SPIs); the new
    outbound SA still announces this run's boot epoch, which status shows."""
    before = _spis(ha, "2001:db8:1::2")
    generate_key_file(str(tmp_path / "peer.key"), force=True)
    s = reload_home_agent(ha, load_home_agent)
    assert s["rekeyed"] == ["2001:db8:1::2"] and _spis(ha, "2001:db8:1::2") != before
    packet = ha.sadb.protect(IPv6Address("2001:db8:1::2"), 135, b"x")
    iv, seq = int.from_bytes(packet[8:16], "big"), int.from_bytes(packet[4:8], "big")
    assert f"{iv ^ seq:016x}" == ha.status()["boot_epoch"]


def test_a_rekeyed_peer_keeps_its_priority_on_the_raw_transport(ha, tmp_path):
    """A SIGHUP that re-keys a configured peer tells the transport the new SPI of the peer's
    inbound SA, by which the raw transport puts the peer's packets first (docs/io.md, "Input
    queues"); an unchanged peer key tells it nothing."""
    told = []
    ha.transport.update_peer = lambda peer, spis: told.append((peer, list(spis)))
    reload_home_agent(ha, load_home_agent)
    assert told == []
    generate_key_file(str(tmp_path / "peer.key"), force=True)
    s = reload_home_agent(ha, load_home_agent)
    peer = IPv6Address("2001:db8:1::2")
    inbound = [int(r["spi"], 16) for r in ha.sadb.describe()
               if r["peer"] == str(peer) and r["direction"] == "in"]
    assert s["rekeyed"] == [str(peer)] and told == [(peer, inbound)]
