"""Process level: real `twistd -n haha` / `twistd -n haha-mn` daemons on loopback.

Three home agents and a mobile node (UDP transport, null backend, ESP with generated keys, no
root needed) are observed only through their control sockets: the node registers, its binding
is copied to the other two home agents, `kill -9` of its primary re-homes it to a survivor
within the configured failure time, a restarted home agent relearns the binding, and SIGTERM
drains. Waits poll with deadlines; nothing sleeps and hopes.
"""

import subprocess
import sys
import time

import pytest

from haha.lab.cluster import LocalCluster, twistd_command

pytestmark = [pytest.mark.process, pytest.mark.slow]


def status(c, name):
    return c.ask(name, "status") or {}


def test_cluster_registration_failover_relearning_and_drain(tmp_path):
    """The whole life of a home-agent network, through the processes' control interfaces."""
    with LocalCluster(tmp_path, n_has=3, lifetime=3, hello_interval=1.0) as c:
        for ha in c.has:
            c.start(ha.name)
        for ha in c.has:
            c.wait_for(f"{ha.name} serving", lambda ha=ha: status(c, ha.name).get("state") == "serving")
        c.start("mn1")
        c.wait_for("registration", lambda: status(c, "mn1").get("home_agent") == "2001:db8:1::1")
        hoa = "2001:db8:1::100"
        caches = c.wait_for("copies", lambda: (lambda v: v if len(v) == 3 else None)(
            c.primary_of(hoa)))
        assert caches == {"ha1": ("2001:db8:1::1", False), "ha2": ("2001:db8:1::1", True),
                          "ha3": ("2001:db8:1::1", True)}

        killed = time.monotonic()
        c.kill("ha1")
        # Failure time: the HA lifetime (3 s) plus one HELLO interval and the switch round
        # trip; the deadline allows generous scheduling slack on a loaded machine.
        c.wait_for("re-homing", lambda: status(c, "mn1").get("home_agent") == "2001:db8:1::2",
                   timeout=3 + 1 + 6)
        failover = time.monotonic() - killed
        assert failover < 10
        assert c.primary_of(hoa) == {"ha2": ("2001:db8:1::2", False),
                                     "ha3": ("2001:db8:1::2", True)}

        c.start("ha1")
        c.wait_for("ha1 relearning", lambda: c.primary_of(hoa, ["ha1"]).get("ha1") ==
                   ("2001:db8:1::2", True))
        # The survivors push ha1's copy as soon as they hear it again (docs/core.md,
        # "Resynchronisation"), so the copy may arrive before ha1's own bulk request completes.
        c.wait_for("ha1's bulk synchronisation", lambda: c.ask("ha1", "counters").get(
            "event.bulk-sync-complete", 0) >= 1)

        c.stop("ha2")  # SIGTERM: drain to a peer, then goodbye
        c.wait_for("drain", lambda: status(c, "mn1").get("home_agent") in
                   ("2001:db8:1::1", "2001:db8:1::3"))
        # twistd re-raises the signal that stopped it; the log shows the stop was orderly.
        assert c.node("ha2").process.returncode in (0, -15)
        log = open(c.node("ha2").logfile).read()
        assert "drain-started primaries=1" in log and "home agent 2001:db8:1::2 stopped" in log
        # Each line names the home agent that wrote it (docs/design.md, "Embedding").
        assert "[haha.home-agent#info 2001:db8:1::2] drain-started primaries=1" in log
        c.wait_for("goodbye seen", lambda: [p["address"] for p in c.ask("ha3", "peers")] ==
                   ["2001:db8:1::1"], timeout=2)
        c.stop_all()
        assert all(n.process.returncode in (0, -15) for n in c.nodes)


def test_bad_config_stops_twistd_with_a_located_error(tmp_path):
    """`twistd haha` with a broken file exits non-zero, printing file, line, section and key."""
    conf = tmp_path / "bad.conf"
    conf.write_text("[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
                    "preferense = 3\n")
    r = subprocess.run(twistd_command() + ["-n", "--pidfile=", "haha", "--config", str(conf)],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0
    assert f"{conf}:4: [home-agent] preferense: unknown key; did you mean 'preference'?" in \
        r.stderr


def test_demo_runs(tmp_path):
    """The README's first command (python -m haha.demo) runs the scenario to the end."""
    r = subprocess.run([sys.executable, "-m", "haha.demo", "--dir", str(tmp_path / "demo")],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    for line in ("registered with ha1 over ESP", "copy (primary 2001:db8:1::1)",
                 "re-registered with 2001:db8:1::2", "done"):
        assert line in r.stdout
