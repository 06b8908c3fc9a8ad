"""Operator notices: a care-of address not assigned here, nodes left behind by a stopping HA."""

from ipaddress import IPv6Address as A
from types import SimpleNamespace

import pytest
from twisted.internet import task
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from haha.config import home_agent_from_text, mobile_node_from_text
from haha.notices import CareOfWatch, local_addresses, report_left_behind
from haha.service import HomeAgentService, MobileNodeService

COA = A("2001:db8:20::1")


def udp_port():
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def logged():
    """``[(level, text)]`` of every haha event published while the test runs."""
    seen = []

    def observe(event):
        if event.get("log_namespace", "").startswith("haha"):
            seen.append((event["log_level"], formatEvent(event)))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def warnings(logged, word):
    return [text for level, text in logged if level == LogLevel.warn and word in text]


def test_local_addresses_parses_if_inet6(tmp_path):
    """/proc/net/if_inet6 lines give the assigned addresses; unreadable gives None."""
    f = tmp_path / "if_inet6"
    f.write_text("00000000000000000000000000000001 01 80 10 80       lo\n"
                 "20010db8002000000000000000000001 02 40 00 80     eth0\n")
    assert local_addresses(str(f)) == {A("::1"), COA}
    assert local_addresses(str(tmp_path / "none")) is None
    assert A("::1") in (local_addresses() or {A("::1")})  # this host's own list has lo


def test_care_of_watch_warns_at_start_then_rate_limited(logged):
    """Missing at start: one warning with the address and the ip command; while it stays
    missing, one more per interval (none in between); once assigned, an info line and no
    more warnings."""
    clock = task.Clock()
    machine = SimpleNamespace(care_of=COA, state="registering")
    have = {A("::1")}
    watch = CareOfWatch(clock, machine, addresses=lambda: have, interval=60, interface="eth1")
    assert watch.start() is watch
    first = warnings(logged, str(COA))
    assert len(first) == 1
    assert "is not assigned on any interface" in first[0]
    assert f"ip -6 addr add {COA}/64 dev eth1" in first[0]
    clock.advance(59)
    assert len(warnings(logged, str(COA))) == 1
    clock.advance(1)
    again = warnings(logged, str(COA))
    assert len(again) == 2 and "still not assigned" in again[1] and "(60 s)" in again[1]
    clock.pump([60] * 10)
    assert len(warnings(logged, str(COA))) == 12
    have.add(COA)
    clock.advance(60)
    assert len(warnings(logged, str(COA))) == 12
    assert any("is assigned now" in text for _, text in logged)
    assert not clock.getDelayedCalls()


def test_care_of_watch_quiet_when_assigned_or_at_home(logged):
    """An assigned care-of address, a node at home or an unreadable list: no warning, no
    timer."""
    clock = task.Clock()
    for care_of, have in ((COA, {COA}), (None, set()), (COA, None)):
        watch = CareOfWatch(clock, SimpleNamespace(care_of=care_of, state="x"),
                            addresses=lambda have=have: have)
        assert watch.start().check() is True
    assert warnings(logged, "care-of") == [] and not clock.getDelayedCalls()


def test_care_of_watch_stop_cancels():
    """stop() cancels the pending re-check."""
    clock = task.Clock()
    watch = CareOfWatch(clock, SimpleNamespace(care_of=COA, state="x"), addresses=set)
    watch.start()
    assert clock.getDelayedCalls()
    watch.stop()
    assert not clock.getDelayedCalls()


MN = """\
[mobile-node]
home-address = 2001:db8:1::100
home-prefix = 2001:db8:1::/64
home-agent = 2001:db8:1::1
care-of-address = 2001:db8:20::1
interface = eth0
[security]
mode = none
lab = yes
[transport]
kind = {kind}
{transport}
"""


def test_mobile_node_service_warns_about_its_care_of_address(logged, tmp_path):
    """A raw-transport mobile node whose care-of address is not on this host warns at start
    (naming its interface), re-checks after a move, and stops its timer on stop; with the UDP
    development transport (care-of addresses are names there) there is no watch."""
    from haha.io.raw import RawTransport
    from haha.io.system import FakeSystem

    config = mobile_node_from_text(MN.format(kind="raw", transport="interfaces = eth0"),
                                   str(tmp_path / "mn.conf"))
    reactor = MemoryReactorClock()
    system = FakeSystem()
    system.interfaces["eth0"] = 2
    transport = RawTransport(reactor, interfaces=["eth0"], system=system)
    service = MobileNodeService.build(config, reactor, transport=transport, tunnel=None)
    service.startService()
    found = warnings(logged, f"care-of address {COA} is not assigned")
    assert found and "dev eth0" in found[0]
    service.move(A("2001:db8:30::1"))
    assert warnings(logged, "care-of address 2001:db8:30::1 is not assigned")
    service.stopService()
    assert not service.care_of_watch._call
    udp = mobile_node_from_text(
        MN.format(kind="udp", transport=f"udp-listen = 127.0.0.1:{udp_port()}"), str(tmp_path / "u.conf"))
    assert MobileNodeService.build(udp, reactor).care_of_watch is None


def _machine(primaries, peers=()):
    bindings = [SimpleNamespace(home_address=A(f"2001:db8:1::{100 + i}"))
                for i in reversed(range(primaries))]
    me = A("2001:db8:1::1")
    return SimpleNamespace(
        identity=me, cache=SimpleNamespace(primaries=lambda: bindings),
        ranked=lambda: [(me, 10)] + [(A(p), 5) for p in peers])


def test_report_left_behind_without_live_peer(logged):
    """No live peer: a warning with the count and the first five home addresses in order."""
    assert report_left_behind(_machine(7)) == (7, [])
    [text] = warnings(logged, "stopping with no live peer")
    assert "7 mobile node(s) are left without a home agent" in text
    assert "(2001:db8:1::100, 2001:db8:1::101, 2001:db8:1::102, 2001:db8:1::103, " \
        "2001:db8:1::104 and 2 more)" in text


def test_report_left_behind_with_peers_or_nothing(logged):
    """Live peers: an info line naming them (they take the nodes over); no primaries:
    nothing at all."""
    assert report_left_behind(_machine(2, ["2001:db8:1::2"])) == (2, [A("2001:db8:1::2")])
    assert warnings(logged, "stopping") == []
    assert any("live peers 2001:db8:1::2 hold copies" in t for _, t in logged)
    logged.clear()
    assert report_left_behind(_machine(0)) == (0, [])
    assert logged == []


HA = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = separate-links
boot-wait = 0
drain-timeout = 3
[security]
mode = none
lab = yes
[transport]
kind = udp
udp-listen = 127.0.0.1:{port}
"""


def test_stopping_home_agent_names_the_nodes_it_leaves(logged, tmp_path):
    """A home agent with a primary binding and no peer stops (after its drain timeout) with
    the warning naming the node."""
    config = home_agent_from_text(HA.format(port=udp_port()), str(tmp_path / "ha.conf"))
    from haha.io.memory import MemoryHub

    reactor = MemoryReactorClock()
    end = MemoryHub(reactor).endpoint(config.address, name="ha1")
    service = HomeAgentService.build(config, reactor, transport=end)
    service.startService()
    hoa = A("2001:db8:1::100")
    service.machine.cache.store(hoa, COA, 0, 1, 600, reactor.seconds() + 600, (), None,
                                config.address, reactor.seconds())
    d = service.stopService()
    reactor.advance(3)
    assert d.called
    [text] = warnings(logged, "stopping with no live peer")
    assert "1 mobile node(s) are left without a home agent" in text and str(hoa) in text


@pytest.mark.netns
def test_real_mobile_node_warns_in_a_fresh_namespace(tmp_path, require_root):
    """``twistd -n haha-mn`` on the raw transport, in a namespace where its care-of address
    is not assigned, logs the warning at start (and keeps running: it is not a failure)."""
    import os
    import subprocess
    import time

    from haha.lab.cluster import twistd_command

    ns = f"hahant{os.getpid()}"
    conf = tmp_path / "mn.conf"
    conf.write_text(MN.format(kind="raw", transport="interfaces = lo").replace(
        "interface = eth0", "interface = lo"))
    log = tmp_path / "mn.log"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with open(log, "w") as out:
            p = subprocess.Popen(["ip", "netns", "exec", ns, *twistd_command(), "-n",
                                  "--pidfile=", "haha-mn", "--config", str(conf)],
                                 stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "is not assigned on any interface" not in log.read_text():
                assert p.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            p.terminate()
            p.wait(60)
        text = log.read_text()
        assert f"care-of address {COA} is not assigned on any interface" in text
        assert f"ip -6 addr add {COA}/64 dev lo" in text and "Traceback" not in text
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_real_home_agent_stopping_alone_names_its_node(tmp_path):
    """A lone ``twistd -n haha`` (no peer running) with a registered mobile node, stopped
    with SIGTERM: after its drain timeout its log names the node it leaves behind."""
    from haha.lab.cluster import LocalCluster

    with LocalCluster(tmp_path, n_has=1, lifetime=3, hello_interval=1.0) as c:
        ha = c.has[0]
        c.start(ha.name)
        c.wait_for("serving", lambda: (c.ask(ha.name, "status") or {}).get("state") ==
                   "serving")
        c.start(c.mn.name)
        c.wait_for("registration", lambda: (c.ask(c.mn.name, "status") or {}).get(
            "home_agent") == ha.address)
        c.kill(c.mn.name)  # gone: the drain cannot move it, the timeout ends the wait
        c.stop(ha.name, timeout=60)
        text = c.tail(ha.name, lines=200)
    assert "stopping with no live peer: 1 mobile node(s) are left without a home agent" in text
    assert c.mn.address in text.split("stopping with no live peer")[1]
