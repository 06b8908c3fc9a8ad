"""Tier 3: address take-over with real daemons in network namespaces (haha.core.addrtakeover).

The mobile node behaves like the deployed stacks: it answers HASR with Binding Error status 2
(``obey-switch = no``) and knows one home agent only. Three home agents run with
``address-takeover = yes``: each holds a service address of its own (haha.lab.deploy's
``service_address``) after the hand-back exchange. The correspondent pings the node's home
address (or a host of the mobile router's network) every 0.1 s while ha1's daemon is killed with
SIGKILL; the survivor takes over ha1's bindings and ha1's address, and the ping resumes within
the failure-detection time (the HA lifetime) plus 1 s, without the node ever registering
elsewhere: its home agent stays ha1's address and it sends no DHAAD request. Shared home link
(the address moves with unsolicited NAs), then no home link and separate links (the address
moves as a /128 route; ``route_held`` stands in for the routing daemon), with and without ESP,
and a mobile router's prefix.
"""

import threading
import time

import pytest

from haha.lab import topology
from haha.lab.deploy import MOBILE_NETWORK, NetnsDeployment
from haha.lab.ping import ping

pytestmark = [pytest.mark.netns, pytest.mark.process, pytest.mark.slow]

INTERVAL = 0.1
MN_LIFETIME = 12  # the node refreshes about 11.4 s after registering


def status(d, name):
    return d.ask(name, "status") or {}


class Pinger(threading.Thread):
    """The correspondent's echo requests, one every INTERVAL, with the times answered."""

    def __init__(self, netns, target):
        super().__init__(daemon=True)
        self.netns, self.target = netns, target
        self.answered = []
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            started = time.monotonic()
            try:
                if ping(self.netns, self.target, attempts=1, interval=INTERVAL):
                    self.answered.append(started)
            except OSError:  # no route for a moment (r's routes follow the daemons)
                pass
            left = INTERVAL - (time.monotonic() - started)
            if left > 0:
                time.sleep(left)

    def gap_around(self, when):
        """Seconds between the last answer before ``when`` and the first one after it."""
        before = [t for t in self.answered if t <= when]
        after = [t for t in self.answered if t > when]
        assert before and after, ("no answer before or after the kill", len(before), len(after))
        return after[0] - before[-1]


class Router(threading.Thread):
    """Keeps router r's /128 routes on whoever holds each service address, and (no home
    link) its home prefix route on the live advertisers: the lab's stand-in for the routing
    daemon's redistribution, polling every 0.1 s."""

    def __init__(self, d):
        super().__init__(daemon=True)
        self.d = d
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                self.d.route_held()
                if self.d.configuration == "no-home-link":
                    self.d.route_prefix()
            except Exception:  # a daemon being killed may refuse one question
                pass
            time.sleep(0.1)


def run_case(tmp_path, make, esp=True, mobile_router=False):
    topo = make(n_has=3, n_mns=1)
    d = NetnsDeployment(topo, tmp_path, address_takeover=True, obey_switch=False, esp=esp,
                        mobile_router=mobile_router, mn_lifetime=MN_LIFETIME)
    router = Router(d)
    try:
        topo.create()
        d.write()
        target = d.mn.address
        if mobile_router:
            target = str(d.add_mobile_network_host())
            topo.run("r", ["ip", "-6", "route", "replace", str(MOBILE_NETWORK), "via",
                           d.mn.address])
        for ha in d.has:
            d.start(ha.name)
        for ha in d.has:
            d.wait_for(f"{ha.name} holds its address", lambda ha=ha: [ha.address, None] in [
                [a, None] for a, _ in (d.ask(ha.name, "forwarding") or {}).get("held", ())],
                timeout=30)
        router.start()
        d.start(d.mn.name)
        first = d.has[0]
        d.wait_for("registration with ha1", lambda: status(d, d.mn.name).get("state") ==
                   "registered", timeout=30)
        d.wait_for("copies at every peer", lambda: d.primary_of(d.mn.address) == {
            h.name: (first.signalling, h is not first) for h in d.has}, timeout=15)
        pinger = Pinger(topo.ns("cn"), target)
        pinger.start()
        d.wait_for("ping through ha1", lambda: len(pinger.answered) >= 5, timeout=15)
        acks = d.ask(d.mn.name, "counters").get("received.BindingAck", 0)
        killed = time.monotonic()
        d.kill(first.name)
        d.wait_for("ha1's address held by ha2", lambda: d.holders().get(first.address) is
                   d.has[1], timeout=d.lifetime + 10)
        d.wait_for("ping resumed", lambda: any(t > killed for t in pinger.answered),
                   timeout=d.lifetime + 10)
        time.sleep(1.0)
        pinger.done.set()
        pinger.join()
        gap = pinger.gap_around(killed)
        print(f"{make.__name__} esp={esp} mobile_router={mobile_router}: ping interrupted "
              f"{gap:.2f} s (lifetime {d.lifetime} s)")
        assert gap <= d.lifetime + 1.0 + INTERVAL, gap
        # The node never moved: same home agent address, no discovery, switch refused.
        s = status(d, d.mn.name)
        assert s.get("home_agent") == first.address and s.get("state") == "registered"
        mn = d.ask(d.mn.name, "counters")
        assert not mn.get("sent.DhaadRequest")
        assert mn.get("core.switch-refused", 0) >= 1, mn
        # Its next Binding Update, sent to ha1's address, is accepted by ha2 (answered from
        # that address, protected with ha1's SAs when ESP is on).
        d.wait_for("the node's refresh acknowledged", lambda: d.ask(d.mn.name, "counters").get(
            "received.BindingAck", 0) > acks, timeout=MN_LIFETIME + 10)
        (own,) = d.ask(d.mn.name, "bindings")
        sequence = own["sequence"]
        (b,) = [b for b in d.ask("ha2", "bindings") if b["home_address"] == d.mn.address]
        assert b["sequence"] == sequence and not b["copy"], (b, sequence)
        assert status(d, d.mn.name).get("home_agent") == first.address
        return d, gap
    finally:
        router.done.set()
        d.kill_all()
        topo.destroy()


@pytest.mark.parametrize("esp", [True, False], ids=["esp", "clear"])
def test_shared_home_link_address_moves_with_the_bindings(tmp_path, require_root, esp):
    """Draft 3.1 Figure 1: ha2 adds ha1's address on the home link with an unsolicited NA;
    the node's tunnel and BUs reach ha2 (with ESP: protected with ha1's SAs)."""
    run_case(tmp_path, topology.shared_home_link, esp=esp)


@pytest.mark.parametrize("esp", [True, False], ids=["esp", "clear"])
def test_no_home_link_address_moves_as_a_route(tmp_path, require_root, esp):
    """Draft 3.2: ha2 holds ha1's address as a /128 route (protocol 72) that r follows."""
    run_case(tmp_path, topology.no_home_link, esp=esp)


@pytest.mark.parametrize("esp", [True, False], ids=["esp", "clear"])
def test_separate_links_address_moves_as_a_route(tmp_path, require_root, esp):
    """Draft 3.1 Figure 4: the same across home links joined at layer 2."""
    run_case(tmp_path, topology.separate_links, esp=esp)


def test_mobile_router_prefix_survives(tmp_path, require_root):
    """A NEMO mobile router's prefix (with ESP): the correspondent reaches a host of the
    mobile network across ha1's SIGKILL, through ha2 holding ha1's address."""
    run_case(tmp_path, topology.shared_home_link, mobile_router=True)
