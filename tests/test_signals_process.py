"""Process level: real twistd home agents and signals.

SIGHUP re-reads the configuration (a mobile node key added is applied, a broken file is
refused and the daemon runs on; a mobile node logs it and runs on), SIGUSR2 is logged and
ignored, SIGQUIT and SIGINT stop the
daemon like SIGTERM: a log line, the node drained to the peer, the control socket removed, the
sequence file flushed. Nothing here ends a daemon without a line in its log.
"""

import json
import os
import signal

import pytest

from haha.lab.cluster import LocalCluster
from haha.security.keys import generate_key_file

pytestmark = [pytest.mark.process, pytest.mark.slow]

HA1, HA2 = "2001:db8:1::1", "2001:db8:1::2"


def _status(c, name):
    return c.ask(name, "status") or {}


def _log(c, name):
    with open(c.node(name).logfile) as f:
        return f.read()


def _started(c):
    for ha in c.has:
        c.start(ha.name)
    for ha in c.has:
        c.wait_for(f"{ha.name} serving", lambda ha=ha: _status(c, ha.name).get("state") ==
                   "serving")
    c.start("mn1")
    c.wait_for("registration", lambda: _status(c, "mn1").get("home_agent") == HA1)
    c.wait_for("signal handlers", lambda: "signal handlers installed" in _log(c, "ha1"))


def test_sighup_rereads_keys_and_survives_a_broken_file(tmp_path):
    """SIGHUP: the daemon lives on, applies a mobile node key added to [node-keys], and a
    configuration with an error is refused in one logged line while the old one keeps
    serving."""
    with LocalCluster(tmp_path, n_has=2, lifetime=3, hello_interval=1.0) as c:
        _started(c)
        ha1 = c.node("ha1")
        generate_key_file(str(tmp_path / "keys" / "mn2.key"))
        text = open(ha1.config).read().replace(
            "[node-keys]\n", "[node-keys]\n2001:db8:1::101 = keys/mn2.key\n")
        with open(ha1.config, "w") as f:
            f.write(text)
        ha1.process.send_signal(signal.SIGHUP)
        c.wait_for("re-read", lambda: "nodes added ['2001:db8:1::101']" in _log(c, "ha1"))
        assert ha1.running()
        assert (c.ask("ha1", "counters") or {}).get("signal.SIGHUP") == 1
        with open(ha1.config, "w") as f:
            f.write(text.replace("preference = 9", "preferense = 9"))
        ha1.process.send_signal(signal.SIGHUP)
        c.wait_for("refusal", lambda: "running on with the configuration loaded before" in
                   _log(c, "ha1"))
        assert "preferense: unknown key" in _log(c, "ha1")
        assert ha1.running() and _status(c, "ha1").get("state") == "serving"
        assert _status(c, "mn1").get("home_agent") == HA1
        ha1.process.send_signal(signal.SIGUSR2)
        c.wait_for("SIGUSR2 logged", lambda: "SIGUSR2 received: ignored" in _log(c, "ha1"))
        assert ha1.running()
        mn = c.node("mn1")
        mn.process.send_signal(signal.SIGHUP)
        c.wait_for("mobile node SIGHUP logged",
                   lambda: "SIGHUP: nothing to re-read; ignored" in _log(c, "mn1"))
        assert mn.running() and (c.ask("mn1", "counters") or {}).get("signal.SIGHUP") == 1
        assert (c.ask("mn1", "counters") or {}).get("sequencestore.failing") == 0
        c.stop_all()


@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT])
def test_quit_and_interrupt_drain_and_clean_up(tmp_path, sig):
    """SIGQUIT and SIGINT stop the primary as SIGTERM does: a log line, its node drained to
    the peer, the control socket gone, the sequence file flushed and readable."""
    with LocalCluster(tmp_path, n_has=2, lifetime=3, hello_interval=1.0) as c:
        _started(c)
        ha1 = c.node("ha1")
        ha1.process.send_signal(sig)
        ha1.process.wait(timeout=30)
        log = _log(c, "ha1")
        name = signal.Signals(sig).name
        assert (f"{name} received: stopping" in log) or (f"Received {name}" in log)
        assert "drain-started primaries=1" in log and f"home agent {HA1} stopped" in log
        c.wait_for("drained", lambda: _status(c, "mn1").get("home_agent") == HA2)
        assert not os.path.exists(ha1.socket) and not os.path.lexists(ha1.socket + ".lock")
        seq = os.path.join(c.directory, "ha1.seq")
        data = json.load(open(seq))
        assert any(k.startswith("in ") for k in data)  # the flush at the clean stop
        c.stop_all()
