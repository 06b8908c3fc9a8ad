"""Tier 3: address take-over with real daemons in network namespaces (haha.core.addrtakeover).

The mobile node behaves like the deployed stacks: it answers HASR with Binding Error status 2
(``obey-switch = no``) and knows one home agent only. Three home agents run with
``address-takeover = yes``: each holds a service address of its own (haha.lab.deploy's
``service_address``) after the hand-back exchange. The correspondent pings the node's home
address (or a host of the mobile router's network) every 0.1 s while ha1's daemon is killed with
SIGKILL (haha.lab.failover.measure); the survivor takes over ha1's bindings and ha1's address,
and the ping resumes within the failure-detection time (the HA lifetime, or hello-misses x
hello-interval) plus 1 s, without the node ever registering elsewhere: its home agent stays
ha1's address and it sends no DHAAD request, and its next Binding Update (to ha1's address) is
accepted by ha2. Shared home link (the address moves with unsolicited NAs), then no home link
and separate links (the address moves as a /128 route), with and without ESP; a node using
DHAAD in each configuration; a mobile router's prefix; fast failure detection (0.1 s HELLOs,
dead after 3 missed); and the hand-back to a restarted home agent. About 6 minutes.
"""

import pytest

from haha.lab import topology
from haha.lab.failover import INTERVAL, measure

pytestmark = [pytest.mark.netns, pytest.mark.process, pytest.mark.slow]

MN_LIFETIME = 12  # the node refreshes about 11.4 s after registering


def node_stayed(d, before):
    """The node never moved and its own refresh went through ha2 (with ESP: on ha1's SAs)."""
    first = d.has[0]
    status = d.ask(d.mn.name, "status")
    assert status["home_agent"] == first.address and status["state"] == "registered"
    mn = d.ask(d.mn.name, "counters")
    assert mn.get("sent.DhaadRequest", 0) == before.get("sent.DhaadRequest", 0), (before, mn)
    assert mn.get("core.switch-refused", 0) >= 1, mn
    acks = mn.get("received.BindingAck", 0)
    d.wait_for("the node's refresh acknowledged", lambda: d.ask(d.mn.name, "counters").get(
        "received.BindingAck", 0) > acks, timeout=MN_LIFETIME + 10)
    (own,) = d.ask(d.mn.name, "bindings")
    (b,) = [b for b in d.ask("ha2", "bindings") if b["home_address"] == d.mn.address]
    assert b["sequence"] == own["sequence"] and not b["copy"], (b, own)
    assert d.ask(d.mn.name, "status")["home_agent"] == first.address


def run_case(tmp_path, make, after=node_stayed, **kw):
    r = measure(tmp_path, make, mn_lifetime=MN_LIFETIME, after=after, **kw)
    print(f"{make.__name__} {kw}: ping interrupted {r['gap']:.2f} s "
          f"(detection {r['detection']:.2f} s)")
    assert r["gap"] <= r["detection"] + 1.0 + INTERVAL, r
    return r


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


@pytest.mark.parametrize("make", [topology.shared_home_link, topology.no_home_link,
                                  topology.separate_links],
                         ids=["shared-home-link", "no-home-link", "separate-links"])
def test_node_using_dhaad(tmp_path, require_root, make):
    """A node that found ha1 by DHAAD (no configured home agent): the same, and it sends no
    further DHAAD request after the kill."""
    run_case(tmp_path, make, dhaad=True)


def test_mobile_router_prefix_survives(tmp_path, require_root):
    """A NEMO mobile router's prefix (with ESP): the correspondent reaches a host of the
    mobile network across ha1's SIGKILL, through ha2 holding ha1's address."""
    run_case(tmp_path, topology.shared_home_link, mobile_router=True)


def test_fast_failure_detection_on_the_shared_home_link(tmp_path, require_root):
    """HELLO every 0.1 s, dead after 3 missed: the ping resumes within 0.3 s + 1 s."""
    run_case(tmp_path, topology.shared_home_link, lifetime=1, hello_interval=0.1,
             hello_misses=3)


def test_restarted_home_agent_gets_its_address_back_by_hand_back(tmp_path, require_root):
    """After the take-over ha1 starts again (as systemd would): it first removes the address
    its killed run left on the home link, holds its address only once ha2 has released it,
    gets the node's binding back as its primary, and the node's next Binding Update (ESP,
    continuing past ha2's sequence numbers) is accepted by ha1."""

    def comes_back(d, before):
        node_stayed(d, before)
        first, second = d.has[0], d.has[1]
        run = d.topology.run
        leftover = run("ha1", ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
        assert f"{first.address}/128" in leftover  # what kill -9 left behind
        d.start(first.name)
        d.wait_for("ha1 holds its address again", lambda: d.holders().get(first.address) is
                   first, timeout=30)
        assert first.address not in [a for a, h in d.holders().items() if h is second]
        d.wait_for("ha1 primary again", lambda: d.primary_of(d.mn.address).get("ha1") ==
                   (first.signalling, False), timeout=15)
        with open(d.node("ha1").logfile) as f:
            log = f.read()
        log = log[log.rindex("tun backend started"):]  # the second run only
        assert "removed a leftover of an earlier run: held address" not in log  # before...
        assert "removed a leftover of an earlier run: held address" in d.tail("ha1", 400)
        confirmed = log.index(f"address-handback-confirmed address={first.address} "
                              f"by={second.signalling}")
        assert confirmed < log.index(f"holding {first.address}")
        acks = d.ask(d.mn.name, "counters").get("received.BindingAck", 0)
        d.wait_for("the node's refresh acknowledged by ha1", lambda: d.ask(
            d.mn.name, "counters").get("received.BindingAck", 0) > acks,
            timeout=MN_LIFETIME + 10)
        (own,) = d.ask(d.mn.name, "bindings")
        (b,) = [b for b in d.ask("ha1", "bindings") if b["home_address"] == d.mn.address]
        assert b["sequence"] == own["sequence"] and not b["copy"]

    run_case(tmp_path, topology.shared_home_link, after=comes_back)
