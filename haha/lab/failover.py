"""How long a correspondent's ping stops when a home agent's daemon is killed (address take-over).

:func:`measure` builds a standard topology (:mod:`haha.lab.topology`) with three home agents
running ``address-takeover = yes`` and a mobile node (or router) that answers switch requests
with Binding Error 2, like the deployed stacks (:class:`haha.lab.deploy.NetnsDeployment`);
the correspondent pings the node's home address (or a host of the mobile network) every 0.1 s;
ha1's daemon is killed with SIGKILL; the result is the longest silence around the kill and
what the node did meanwhile. The tier-3 test (``tests/test_e2e_addrtakeover_netns.py``) and
``bench/failover.py`` use it. Needs root.

Outside a shared home link the service addresses move as /128 routes: a thread here stands in
for the routing daemon (:meth:`~haha.lab.deploy.NetnsDeployment.route_held`, and
``route_prefix`` for the home prefix without a home link), polling every 0.1 s.
"""

import threading
import time
from collections.abc import Callable
from typing import Any

from .deploy import MOBILE_NETWORK, NetnsDeployment
from .ping import ping
from .topology import Topology

INTERVAL = 0.1


class Pinger(threading.Thread):
    """The correspondent's echo requests, one every :data:`INTERVAL`, with the times of the
    ones answered."""

    def __init__(self, netns: str | None, target: str) -> None:
        super().__init__(daemon=True)
        self.netns, self.target = netns, target
        self.answered: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
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

    def gap_around(self, when: float) -> float:
        """Seconds between the last answer before ``when`` and the first one after it."""
        before = [t for t in self.answered if t <= when]
        after = [t for t in self.answered if t > when]
        if not before or not after:
            raise AssertionError(f"no answer before or after the kill: {len(before)} before, "
                                 f"{len(after)} after")
        return after[0] - before[-1]


class Router(threading.Thread):
    """Keeps router r's /128 routes on whoever holds each service address and (no home link)
    its home prefix route on the live advertisers: the stand-in for redistribution."""

    def __init__(self, d: NetnsDeployment) -> None:
        super().__init__(daemon=True)
        self.d = d
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.d.route_held()
                if self.d.configuration == "no-home-link":
                    self.d.route_prefix()
            except Exception:  # a daemon being killed may refuse one question
                pass
            time.sleep(0.1)


def _status(d: NetnsDeployment, name: str) -> dict[str, Any]:
    return d.ask(name, "status") or {}


def measure(directory: str, make: Callable[..., Topology], esp: bool = True,
            mobile_router: bool = False, lifetime: int = 3, hello_interval: float = 1.0,
            hello_misses: int = 0, mn_lifetime: int = 12, dhaad: bool = False,
            after: Callable[[NetnsDeployment, Any], object] | None = None) -> dict[str, Any]:
    """Run one fail-over in topology ``make`` (a :mod:`haha.lab.topology` function) and return
    ``{"gap": seconds of silence, "detection": seconds configured, "held": seconds from the
    kill until ha2's control socket shows ha1's address held (polled every 20 ms), ...}``.
    ``dhaad``: the node finds its home agent by DHAAD instead of a configured address. ``after(d)``, when given, runs
    after the ping resumed, before everything is torn down (a test's further checks), with the
    node's counters from just before the kill: ``after(d, counters)``."""
    topo = make(n_has=3, n_mns=1)
    d = NetnsDeployment(topo, directory, address_takeover=True, obey_switch=False, esp=esp,
                        mobile_router=mobile_router, mn_lifetime=mn_lifetime,
                        lifetime=lifetime, hello_interval=hello_interval,
                        hello_misses=hello_misses, boot_wait=max(1.0, 2 * hello_interval), dhaad=dhaad)
    detection = hello_misses * hello_interval if hello_misses else lifetime
    router = Router(d)
    pinger = None
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
            d.wait_for(f"{ha.name} holds its address", lambda ha=ha: d.holders().get(
                ha.address) is ha, timeout=30)
        router.start()
        d.start(d.mn.name)
        first = d.has[0]
        d.wait_for("registration with ha1", lambda: _status(d, d.mn.name).get("state") ==
                   "registered", timeout=30)
        d.wait_for("copies at every peer", lambda: d.primary_of(d.mn.address) == {
            h.name: (first.signalling, h is not first) for h in d.has}, timeout=15)
        pinger = Pinger(topo.ns("cn"), target)
        pinger.start()
        d.wait_for("ping through ha1", lambda: len(pinger.answered) >= 5, timeout=15)
        before = d.ask(d.mn.name, "counters")
        killed = time.monotonic()
        d.kill(first.name)
        d.wait_for("ha1's address held by ha2", lambda: d.holders().get(first.address) is
                   d.has[1], timeout=detection + 10, interval=0.02)
        held = time.monotonic() - killed
        d.wait_for("ping resumed", lambda: any(t > killed for t in pinger.answered),
                   timeout=detection + 10)
        time.sleep(1.0)
        pinger.done.set()
        pinger.join()
        result = {"gap": pinger.gap_around(killed), "detection": detection, "held": held,
                  "configuration": d.configuration, "esp": esp,
                  "mobile_router": mobile_router}
        if after is not None:
            after(d, before)
        return result
    finally:
        router.done.set()
        if pinger is not None:
            pinger.done.set()
        d.kill_all()
        topo.destroy()
