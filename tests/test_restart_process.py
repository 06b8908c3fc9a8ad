"""Process level: a real twistd home agent killed and started again without its sequence file.

ha1 sends HELLOs every 0.25 s, so after 20 s its peers' anti-replay windows are far past the 64
numbers a fresh run starting at 1 could reach: before boot epochs, its peers dropped it as too
old for good. Started again with no sequence file (and no kernel state), it is a live peer of
both others again within moments, they count the new epoch, and it relearns the node's binding
from them. A damaged sequence file stops twistd with one located line naming the reset command.
"""

import os
import subprocess
import time

import pytest

from haha.lab.cluster import LocalCluster, twistd_command

pytestmark = [pytest.mark.process, pytest.mark.slow]

HA1 = "2001:db8:1::1"
HOA = "2001:db8:1::100"


def _status(c, name):
    return c.ask(name, "status") or {}


def _peers(c, name):
    return [p["address"] for p in (c.ask(name, "peers") or [])]


def test_restart_without_sequence_file_rejoins_on_its_own(tmp_path):
    """kill -9, sequence file deleted, start: both peers list ha1 again and follow its epoch;
    none counts a too-old packet from the new run; ha1 relearns the binding."""
    with LocalCluster(tmp_path, n_has=3, lifetime=3, hello_interval=0.25) as c:
        for ha in c.has:
            c.start(ha.name)
        for ha in c.has:
            c.wait_for(f"{ha.name} serving",
                       lambda ha=ha: _status(c, ha.name).get("state") == "serving")
        c.start("mn1")
        c.wait_for("registration", lambda: _status(c, "mn1").get("home_agent") == HA1)
        c.wait_for("many HELLOs", lambda: (c.ask("ha2", "counters") or {}).get(
            "received.HaHello", 0) > 150, timeout=60)
        c.kill("ha1")
        c.wait_for("ha1 down at ha2", lambda: HA1 not in _peers(c, "ha2"), timeout=10)
        os.unlink(os.path.join(c.directory, "ha1.seq"))
        too_old = {n: (c.ask(n, "counters") or {}).get(
            "securityassociationdatabase.too-old", 0) for n in ("ha2", "ha3")}
        started = time.monotonic()
        c.start("ha1")
        c.wait_for("ha1 live at ha2 and ha3",
                   lambda: HA1 in _peers(c, "ha2") and HA1 in _peers(c, "ha3"), timeout=15)
        print(f"rejoined {time.monotonic() - started:.2f} s after the process was started "
              "(interpreter start-up included)")
        for n in ("ha2", "ha3"):
            counters = c.ask(n, "counters")
            assert counters["securityassociationdatabase.epoch-switched"] == 1
            assert counters["securityassociationdatabase.too-old"] == too_old[n]
        c.wait_for("ha1 relearns the binding",
                   lambda: c.primary_of(HOA, ["ha1"]).get("ha1") is not None)
        c.stop_all()


def test_damaged_sequence_file_stops_twistd_with_the_way_forward(tmp_path):
    """`twistd haha` with a truncated sequence file exits non-zero, printing one line with the
    configuration file, section, key, and the reset command."""
    with LocalCluster(tmp_path, n_has=2) as c:
        seq = os.path.join(c.directory, "ha1.seq")
        with open(seq, "w") as f:
            f.write('{"epoch-generation": 21')
        r = subprocess.run(twistd_command() + ["-n", "--pidfile=", "haha", "--config",
                                               c.node("ha1").config],
                           capture_output=True, text=True, timeout=60, cwd=c.directory)
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.startswith("haha:")]
    assert len(lines) == 1
    assert "[security] sequence-file" in lines[0]
    assert f"python -m haha.security.seqstore reset {seq}" in lines[0]
