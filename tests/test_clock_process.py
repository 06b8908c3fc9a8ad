"""Process level: real twistd home agents whose wall clock steps by +2 h and -6 h.

Each home agent of a loopback cluster runs under libfaketime (Debian's ``faketime`` package,
installed by ``./dev``) with ``FAKETIME_TIMESTAMP_FILE``: writing ``+2h`` or ``-6h`` to the file
steps that process's ``CLOCK_REALTIME`` at once, while ``FAKETIME_DONT_FAKE_MONOTONIC=1`` leaves
``CLOCK_MONOTONIC`` alone, which is what an NTP step or ``date -s`` does to a daemon. On the wall
clock, +2 h on the primary fired every deadline (its peers and the node's binding expired) and
-6 h stalled its HELLOs (the peers took its node over); the daemons must notice nothing.
"""

import glob
import os
import time

import pytest

from haha.lab.cluster import LocalCluster

pytestmark = [pytest.mark.process, pytest.mark.slow]

LIBFAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1")) + \
    sorted(glob.glob("/usr/lib/faketime/libfaketime.so.1"))
HOA = "2001:db8:1::100"
HA1 = "2001:db8:1::1"


def _status(c, name):
    return c.ask(name, "status") or {}


def _events(c, name, *names):
    counters = c.ask(name, "counters") or {}
    return {n: counters.get(f"event.{n}", 0) for n in names}


def test_wall_clock_steps_change_no_binding_and_no_primary(tmp_path):
    """+2 h then -6 h on the primary's wall clock (and -6 h on a second home agent) leave every
    binding, the primary, the peers and the node's registration as they were."""
    if not LIBFAKETIME:  # fail, never skip: ./dev installs Debian's faketime
        pytest.fail("libfaketime is not installed (Debian package faketime; ./dev installs it)")
    with LocalCluster(tmp_path, n_has=3, lifetime=3, hello_interval=1.0) as c:
        steps = {}
        for ha in c.has:
            rc = tmp_path / f"{ha.name}.faketime"
            rc.write_text("+0\n")
            steps[ha.name] = rc
            ha.env = {"LD_PRELOAD": LIBFAKETIME[0], "FAKETIME_TIMESTAMP_FILE": str(rc),
                      "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
        for ha in c.has:
            c.start(ha.name)
        for ha in c.has:
            c.wait_for(f"{ha.name} serving",
                       lambda ha=ha: _status(c, ha.name).get("state") == "serving")
        c.start("mn1")
        c.wait_for("registration", lambda: _status(c, "mn1").get("home_agent") == HA1)
        expected = {"ha1": (HA1, False), "ha2": (HA1, True), "ha3": (HA1, True)}
        c.wait_for("copies", lambda: c.primary_of(HOA) == expected)
        peers = {ha.name: sorted(p["address"] for p in c.ask(ha.name, "peers")) for ha in c.has}
        watched = ("binding-expired", "binding-deleted", "peer-down", "take-over")
        before = {ha.name: _events(c, ha.name, *watched) for ha in c.has}

        def unchanged():
            assert c.primary_of(HOA) == expected
            assert _status(c, "mn1").get("home_agent") == HA1
            for ha in c.has:
                assert sorted(p["address"] for p in c.ask(ha.name, "peers")) == peers[ha.name]
                assert _events(c, ha.name, *watched) == before[ha.name], ha.name

        for name, step in (("ha1", "+2h"), ("ha1", "-6h"), ("ha2", "-6h")):
            steps[name].write_text(step + "\n")
            # Three peer lifetimes: a stalled HELLO timer would have made the peers declare the
            # stepped home agent dead (and take its node over), a fired one would have expired
            # its peers and the binding at once.
            deadline = time.monotonic() + 3 * c.lifetime
            while time.monotonic() < deadline:
                unchanged()
                time.sleep(0.5)
        for name in ("ha1", "ha2"):
            with open(c.node(name).logfile) as f:
                log = f.read()
            assert "binding-expired" not in log and "peer-down" not in log
        assert os.path.exists(c.node("ha1").logfile)
        c.stop_all()
