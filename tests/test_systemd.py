"""The shipped systemd unit: it verifies, and the daemon runs under its restrictions.

``systemd-analyze verify`` checks the unit as shipped (with ``/opt/haha/venv/bin/twistd``
present in a private mount namespace, so nothing is installed on the host). Then the shipped
example ``ha1.conf`` runs from a wheel installed at ``/opt/haha/venv`` the way the unit starts
it, under the unit's restrictions rebuilt by hand: a network namespace with ``eth0``
(haha.lab.topology), a private mount namespace where everything is read-only (``ProtectSystem=
strict``) but ``/run/haha`` (``RuntimeDirectory=``) and an empty ``/var/lib`` (the daemon makes
``/var/lib/haha`` itself), and the capability bounding set reduced to CAP_NET_ADMIN and
CAP_NET_RAW with ``setpriv``. Twisted's plugin cache is prepared once after install, as
docs/operations.md says, and the daemon's log then has no "Unable to write to plugin cache";
without that step a read-only install logs it (the check can fail).
"""

import configparser
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from haha.lab import topology
from haha.security.keys import generate_key_file
from test_packaging import build_wheel, fresh_venv, pip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(ROOT, "conf", "systemd", "haha@.service")
VENV = "/opt/haha/venv"
CAP_NET_ADMIN, CAP_NET_RAW = 12, 13



def unit():
    """The unit's [Service] and [Unit] sections (repeated keys keep the last value)."""
    p = configparser.ConfigParser(interpolation=None, strict=False)
    p.optionxform = str
    p.read(UNIT)
    return p


def test_unit_declares_runtime_state_and_only_two_capabilities():
    """ExecStart runs the venv's twistd (no /usr/bin/env lookup), the control socket and state
    directories are the unit's, and the capabilities are exactly CAP_NET_ADMIN CAP_NET_RAW."""
    s = unit()["Service"]
    assert s["ExecStart"].split()[0] == f"{VENV}/bin/twistd"
    assert "haha --config /etc/haha/%i.conf" in s["ExecStart"]
    assert s["RuntimeDirectory"] == "haha" and s["StateDirectory"] == "haha"
    assert s["RuntimeDirectoryMode"] == "0750" and s["StateDirectoryMode"] == "0750"
    assert s["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert s["AmbientCapabilities"].split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert s["ProtectSystem"] == "strict" and s["NoNewPrivileges"] == "yes"
    assert "ReadWritePaths" not in s


def in_private_opt(script):
    """Run ``script`` (sh) in a private mount namespace whose /opt is an empty tmpfs (from /,
    so that the checkout is not the current directory)."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-ec",
         "mount --make-rprivate /; mount -t tmpfs tmpfs /opt; " + script],
        capture_output=True, text=True, timeout=120, cwd="/",
        env=dict(os.environ, SYSTEMD_LOG_TARGET="console"))


@pytest.mark.netns
@pytest.mark.slow
def test_systemd_analyze_verifies_the_shipped_unit(require_root, tmp_path):
    """`systemd-analyze verify` accepts the unit as shipped, with no warning, once the venv's
    twistd exists; the same check rejects it when the venv is missing."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    ok = in_private_opt(f"mkdir -p {VENV}/bin; ln -s {shlex.quote(twistd)} {VENV}/bin/twistd; "
                        f"systemd-analyze verify {shlex.quote(UNIT)}")
    assert ok.returncode == 0 and ok.stderr.strip() == "", ok.stderr
    missing = in_private_opt(f"systemd-analyze verify {shlex.quote(UNIT)}")
    assert missing.returncode != 0 and f"{VENV}/bin/twistd" in missing.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory)


def install_at_opt(tmp_path, wheel):
    """The wheel in a venv made for /opt/haha/venv (bind-mounted there later), with a twistd
    script like the one pip writes for Twisted; its dependencies come from this environment."""
    env = str(tmp_path / "venv")
    python = fresh_venv(env)
    pip("--python", python, "install", "--no-deps", wheel)
    with open(os.path.join(env, "bin", "twistd"), "w") as f:
        f.write(f"#!{VENV}/bin/python\nimport sys\nfrom twisted.scripts.twistd import run\n"
                "sys.exit(run())\n")
    os.chmod(os.path.join(env, "bin", "twistd"), 0o755)
    return env


def plugin_caches(env):
    site = subprocess.run([os.path.join(env, "bin", "python"), "-c",
                           "import twisted.plugins as p; print('\\n'.join(p.__path__))"],
                          capture_output=True, text=True, check=True, cwd="/").stdout.split()
    return [os.path.join(d, "dropin.cache") for d in site if os.path.isdir(d)]


def read_only_logging_plugin_scan(env):
    """Scan Twisted's plugins from /opt/haha/venv with every file system read-only, logging to
    standard output as twistd does; return the output."""
    code = ("import sys; from twisted.logger import globalLogBeginner, textFileLogObserver; "
            "globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)]); "
            "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))")
    r = in_private_opt(f"mkdir -p {VENV}; mount --bind {shlex.quote(env)} {VENV}; "
                       f"mount -o remount,bind,ro /; mount -o remount,bind,ro {VENV}; "
                       f"exec {VENV}/bin/python -c {shlex.quote(code)}")
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.netns
@pytest.mark.slow
def test_plugin_cache_prepared_at_install_silences_read_only_starts(require_root, tmp_path,
                                                                     wheel):
    """Without the install step a read-only venv logs "Unable to write to plugin cache"; after
    `twistd --help` (run once by the installer, docs/operations.md) it logs nothing of it."""
    env = install_at_opt(tmp_path, wheel)
    for cache in plugin_caches(env):
        if os.path.exists(cache):
            os.unlink(cache)
    assert "Unable to write to plugin cache" in read_only_logging_plugin_scan(env)
    prepared = subprocess.run([os.path.join(env, "bin", "python"), os.path.join(env, "bin",
                               "twistd"), "--help"], capture_output=True, text=True, timeout=60,
                              cwd="/")
    assert prepared.returncode == 0, prepared.stderr
    assert "Unable to write to plugin cache" not in read_only_logging_plugin_scan(env)


def capability_bounding_set(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)


@pytest.mark.netns
@pytest.mark.slow
def test_example_home_agent_runs_under_the_units_restrictions(require_root, tmp_path,
                                                              wheel):
    """conf/ha1.conf as shipped, started by the unit's ExecStart from /opt/haha/venv with only
    CAP_NET_ADMIN and CAP_NET_RAW and a read-only file system: it serves (raw transport, TUN
    backend, netfilter guard, metrics), answers haha-ctl on /run/haha/ha1.sock, makes
    /var/lib/haha with mode 0750 for its sequence file, and logs no traceback and no plugin
    cache warning; SIGTERM stops it."""
    env = install_at_opt(tmp_path, wheel)
    subprocess.run([os.path.join(env, "bin", "python"), os.path.join(env, "bin", "twistd"),
                    "--help"], capture_output=True, check=True, timeout=60, cwd="/")
    etc = tmp_path / "etc"
    (etc / "keys").mkdir(parents=True)
    shutil.copy(os.path.join(ROOT, "conf", "ha1.conf"), etc / "ha1.conf")
    for k in ("ha1-ha2", "ha1-ha3", "mn1", "mr1"):
        generate_key_file(str(etc / "keys" / f"{k}.key"))
    argv = shlex.split(unit()["Service"]["ExecStart"].replace("%i", "ha1").replace(
        "/etc/haha/ha1.conf", str(etc / "ha1.conf")))
    ctl = os.path.join(os.path.dirname(sys.executable), "haha-ctl")

    topo = topology.Topology()
    topo.add_node("ha1").add_node("r")
    topo.add_link("home", ("ha1", "eth0", ["2001:db8:1::1/64"]),
                  ("r", "eth0", ["2001:db8:1::ff/64"]))
    with topo.create():
        script = (
            "mount --make-rprivate /; "
            f"mount -t tmpfs tmpfs /opt; mkdir -p {VENV}; mount --bind {shlex.quote(env)} {VENV}; "
            "mount -t tmpfs tmpfs /run; mkdir -m 0750 /run/haha; "  # RuntimeDirectory=haha
            "mount -t tmpfs tmpfs /var/lib; "  # no StateDirectory=: the daemon makes it
            f"mount -o remount,bind,ro /; mount -o remount,bind,ro {VENV}; "  # ProtectSystem
            "exec setpriv --bounding-set -all,+net_admin,+net_raw "
            "--inh-caps -all,+net_admin,+net_raw --ambient-caps -all,+net_admin,+net_raw "
            "--no-new-privs -- " + " ".join(shlex.quote(a) for a in argv))
        daemon = subprocess.Popen(["ip", "netns", "exec", topo.ns("ha1"), "unshare", "-m", "sh",
                                   "-ec", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, cwd="/")  # as systemd
        inside = ["nsenter", "-t", str(daemon.pid), "-m", "-n", "--"]
        try:
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and daemon.poll() is None:
                r = subprocess.run(inside + [ctl, "--socket", "/run/haha/ha1.sock", "--json",
                                             "status"], capture_output=True, text=True,
                                   timeout=30)
                if r.returncode == 0:
                    status = json.loads(r.stdout)
                    if status["state"] == "serving":
                        break
                time.sleep(0.3)
            assert daemon.poll() is None, daemon.stdout.read()
            assert status and status["state"] == "serving", status
            assert capability_bounding_set(daemon.pid) == (1 << CAP_NET_ADMIN) | (1 << CAP_NET_RAW)
            state = subprocess.run(inside + ["stat", "-c", "%a %F", "/var/lib/haha",
                                             "/var/lib/haha/ha1.seq"],
                                   capture_output=True, text=True, timeout=30)
            assert state.stdout.splitlines() == ["750 directory", "600 regular file"], state
            written = subprocess.run(inside + ["touch", f"{VENV}/x", str(etc / "x")],
                                     capture_output=True, text=True, timeout=30)
            assert written.returncode != 0 and "Read-only file system" in written.stderr
            metrics = subprocess.run(inside + [sys.executable, "-c",
                                     "import urllib.request as u; print(u.urlopen("
                                     "'http://127.0.0.1:9101/metrics', timeout=10).read()"
                                     ".decode())"], capture_output=True, text=True, timeout=30)
            assert "haha_" in metrics.stdout, metrics.stderr
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                out = daemon.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                daemon.kill()
                out = daemon.communicate()[0]
    assert daemon.returncode in (0, -signal.SIGTERM), out
    assert "Traceback" not in out, out
    assert "Unable to write to plugin cache" not in out, out
    assert "home agent 2001:db8:1::1 stopped" in out, out
