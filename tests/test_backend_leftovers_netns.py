"""Tier 3: what ``kill -9`` leaves in a real kernel, and the next start of the same daemon
reclaiming exactly that (netlink through pyroute2 in a network namespace).

A child process in the namespace runs a TunBackend the way the daemon does (ownership with a
state file): it routes a home address into its TUN, proxies it on eth0 and advertises the home
prefix, then is killed with SIGKILL. The TUN and its route go with the process; the proxy
neighbour entry and the ``unreachable`` prefix route (both tagged with protocol 72) and the
sysctls stay. A second backend with the same ownership is refused while the child lives; after
the kill it removes the two leftovers and nothing else (untagged entries, other protocols,
another prefix, interface or table), and at its stop restores the sysctl values from before the
crashed run. The same for a mobile node's policy rules. And with real daemons: a home agent
killed with SIGKILL and started again removes its old proxy entry before it serves.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from twisted.internet.testing import MemoryReactor

from haha.backends.common import Ownership, StateBusy
from haha.backends.netsys import Pyroute2Netlink
from haha.backends.tun import MobileTunnel, TunBackend
from haha.io.system import LinuxSystem
from haha.lab.timing import scaled
from haha.lab.topology import Topology, read_sysctl

from ipaddress import IPv6Address, IPv6Network

pytestmark = [pytest.mark.netns]

HA = IPv6Address("2001:db8:1::1")
HOME = IPv6Address("2001:db8:1::100")
PREFIX = IPv6Network("2001:db8:1::/64")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOME_AGENT = """
import sys, time
from ipaddress import IPv6Address as A, IPv6Network as N
from twisted.internet.testing import MemoryReactor
from haha.backends.common import Ownership
from haha.backends.tun import TunBackend
from haha.core.duties import ForwardingRoute

class Tx:
    def send(self, packet, interface=None):
        pass

b = TunBackend(MemoryReactor(), Tx(), tun_name="hahak%d")
b.ownership = Ownership(N("2001:db8:1::/64"), "eth0", frozenset({A("2001:db8:1::1")}),
                        sys.argv[1])
b.start()
b.install(ForwardingRoute(A("2001:db8:1::100"), A("2001:db8:20::5"), A("2001:db8:1::1"), ()))
b.proxy_nd_start(A("2001:db8:1::100"), "eth0")
b.advertise_prefix(N("2001:db8:1::/64"))
print("ready", flush=True)
time.sleep(120)
"""

MOBILE_NODE = """
import time
from ipaddress import IPv6Address as A, IPv6Network as N
from twisted.internet.testing import MemoryReactor
from haha.backends.tun import MobileTunnel

t = MobileTunnel(MemoryReactor(), None, tun_name="hahamk%d")
t.start()
t.set_endpoint(A("2001:db8:1::100"), A("2001:db8:20::5"), A("2001:db8:1::1"),
               prefixes=(N("2001:db8:100::/48"),))
print("ready", flush=True)
time.sleep(120)
"""


class _Tx:
    def send(self, packet, interface=None):
        pass


@pytest.fixture
def lab(require_root):
    t = Topology(tag=f"{os.getpid()}-lo")
    t.add_node("k")
    t.add_node("peer")
    t.add_link("home", ("k", "eth0", [f"{HA}/64"]), ("peer", "eth0", ["2001:db8:1::ff/64"]))
    t.add_link("side", ("k", "eth1", ["2001:db8:9::1/64"]), ("peer", "eth1", ["2001:db8:9::2/64"]))
    t.create()
    children = []
    try:
        yield t, children
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
            child.stdout.close()
        t.destroy()


def _child(t, code, *args):
    """Run ``code`` in node k's namespace; return the process once it printed "ready"."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = t.popen("k", [sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, env=env, text=True)
    line = p.stdout.readline()  # blocks until the child is ready or dies
    assert line.strip() == "ready", line + p.stdout.read()
    return p


def _kill(p):
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=scaled(10))
    assert p.returncode == -signal.SIGKILL


def ip(t, *argv):
    return t.run("k", ["ip", *argv]).stdout


def _proxies(t):
    return sorted(line.strip() for line in ip(t, "-6", "neigh", "show", "proxy").splitlines())


def _routes(t):
    return sorted(line.strip() for line in ip(t, "-6", "route", "show", "table", "all")
                  .splitlines() if "unreachable" in line or "proto 72" in line)


def _wait_gone(t, device, timeout=10.0):
    """The kernel deletes a TUN device once its last file is closed; wait for it."""
    deadline = time.monotonic() + scaled(timeout)
    while device in ip(t, "-o", "link"):
        assert time.monotonic() < deadline, f"{device} still there"
        time.sleep(0.05)


def test_home_agent_leftovers_are_reclaimed_by_the_next_run(lab, tmp_path):
    """After SIGKILL the proxy entry and prefix route (protocol 72) stay, the TUN route is
    gone; a second run is refused while the first lives, and after the kill it removes those
    two leftovers only, then restores the sysctls the crashed run changed."""
    t, children = lab
    ns = t.ns("k")
    state = str(tmp_path / "ha.state")
    own = Ownership(PREFIX, "eth0", frozenset({HA}), state)
    forwarding = read_sysctl(ns, "net.ipv6.conf.all.forwarding")
    proxy_ndp = read_sysctl(ns, "net.ipv6.conf.eth0.proxy_ndp")
    child = _child(t, HOME_AGENT, state)
    children.append(child)
    assert _proxies(t) == [f"{HOME} dev eth0 proxy proto 72"]
    assert "2001:db8:1::100 dev hahak0 proto 72 metric 1024 pref medium" in _routes(t)
    nl = Pyroute2Netlink(ns)
    try:
        busy = TunBackend(MemoryReactor(), _Tx(), tun_name="hahak%d", netlink=nl,
                          system=LinuxSystem(ns))
        busy.ownership = own
        with pytest.raises(StateBusy, match=f"pid {child.pid}"):
            busy.start()

        _kill(child)
        _wait_gone(t, "hahak0")
        assert _proxies(t) == [f"{HOME} dev eth0 proxy proto 72"]
        assert _routes(t) == ["unreachable 2001:db8:1::/64 dev lo proto 72 metric 1024 "
                              "pref medium"]
        assert read_sysctl(ns, "net.ipv6.conf.all.forwarding") == "1"
        # Somebody else's entries, all of which must survive the next start.
        for argv in (["neigh", "add", "proxy", "2001:db8:1::77", "dev", "eth0"],
                     ["neigh", "add", "proxy", "2001:db8:1::78", "dev", "eth0", "protocol",
                      "static"],
                     ["neigh", "add", "proxy", "2001:db8:2::5", "dev", "eth0", "protocol", "72"],
                     ["neigh", "add", "proxy", "2001:db8:1::55", "dev", "eth1", "protocol",
                      "72"],
                     ["route", "add", "unreachable", "2001:db8:2::/64", "proto", "72"],
                     ["route", "add", "unreachable", "2001:db8:1::/64", "metric", "2048",
                      "proto", "static"],
                     ["route", "add", "unreachable", "2001:db8:1::/64", "table", "100",
                      "proto", "72"]):
            ip(t, "-6", *argv)
        foreign_proxies = [p for p in _proxies(t) if not p.startswith(f"{HOME} ")]
        foreign_routes = [r for r in _routes(t) if "metric 1024" not in r
                          or "2001:db8:2::" in r or "table 100" in r]

        again = TunBackend(MemoryReactor(), _Tx(), tun_name="hahak%d", netlink=nl,
                           system=LinuxSystem(ns))
        again.ownership = own
        again.start()
        assert again.counters["leftovers_removed"] == 2
        assert _proxies(t) == foreign_proxies and len(foreign_proxies) == 4
        assert _routes(t) == foreign_routes and len(foreign_routes) == 3
        again.stop()
        assert not os.path.exists(state)
        assert read_sysctl(ns, "net.ipv6.conf.all.forwarding") == forwarding
        assert read_sysctl(ns, "net.ipv6.conf.eth0.proxy_ndp") == proxy_ndp
        assert _proxies(t) == foreign_proxies and _routes(t) == foreign_routes
    finally:
        nl.close()


def test_mobile_node_rules_are_reclaimed_by_the_next_run(lab):
    """A killed mobile node's TUN, home address and table route go with it, its policy rules
    (protocol 72) stay; the next MobileTunnel start removes them and keeps an operator's rule
    into the same table."""
    t, children = lab
    ns = t.ns("k")
    child = _child(t, MOBILE_NODE)
    children.append(child)
    _kill(child)
    _wait_gone(t, "hahamk0")
    ip(t, "-6", "rule", "add", "from", "2001:db8:7::/64", "table", "19790", "priority", "1000")

    def rules():
        return sorted(line.split(":", 1)[1].strip() for line in
                      ip(t, "-6", "rule").splitlines() if "19790" in line)

    assert rules() == ["from 2001:db8:100::/48 lookup 19790 proto 72",
                       "from 2001:db8:1::100 lookup 19790 proto 72",
                       "from 2001:db8:7::/64 lookup 19790"]
    nl = Pyroute2Netlink(ns)
    try:
        tunnel = MobileTunnel(MemoryReactor(), _Tx(), tun_name="hahamk%d", netlink=nl,
                              system=LinuxSystem(ns))
        tunnel.start()
        assert rules() == ["from 2001:db8:7::/64 lookup 19790"]
        assert tunnel.counters["leftovers_removed"] == 2
        tunnel.stop()
    finally:
        nl.close()


@pytest.mark.process
@pytest.mark.slow
def test_a_restarted_home_agent_daemon_removes_what_its_killed_run_left(tmp_path, require_root):
    """Real daemons (shared home link, two home agents): ha1, primary for the node, is killed
    with SIGKILL; its proxy entry (protocol 72) stays in its namespace while ha2 takes the node
    over. ha1 started again with the same configuration removes that entry before it serves
    (logged, counted), and the node stays reachable through ha2."""
    from test_e2e_netns import deployment, fail_over, forwarding, reach, register, \
        start_home_agents, status

    from haha.lab import topology

    with deployment(tmp_path, topology.shared_home_link, n_has=2) as (d, caps):
        start_home_agents(d, caps)
        register(d)
        entry = f"{d.mn.address} dev eth0 proxy proto 72"

        def proxies(node):
            return d.topology.run(node, ["ip", "-6", "neigh", "show", "proxy"]).stdout.strip()

        assert proxies("ha1") == entry
        assert os.path.exists(tmp_path / "ha1.state")
        fail_over(d)
        assert proxies("ha1") == entry, "the killed daemon's entry should still be there"
        assert proxies("ha2") == entry

        d.start("ha1")
        d.wait_for("ha1 up again", lambda: status(d, "ha1"), timeout=20)
        assert proxies("ha1") == ""
        assert forwarding(d, "ha1")["counters"]["leftovers_removed"] == 1
        with open(d.node("ha1").logfile) as f:
            log = f.read()
        assert "did not stop cleanly" in log
        assert (f"removed a leftover of an earlier run: proxy ND entry for {d.mn.address} on "
                "eth0") in log
        assert proxies("ha2") == entry
        reach(d, d.mn.address, through="ha2")
