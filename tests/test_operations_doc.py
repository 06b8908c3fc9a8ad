"""docs/operations.md, run: every fenced ``sh`` block, in order, on the host its ``test:`` comment
names, must exit 0.

The hosts are network namespaces of haha.lab's shared home link (ha1, ha2 on the home link, mn1
on the visited link), each with a private mount namespace: /etc is an overlay (writes stay in the
test's directory), /run and /var/lib are empty tmpfs, and /opt is one directory of the test shared
by all hosts (the virtual environment is installed once, on ha1, as the guide says, from the wheel
of this checkout; the rest of what pip needs comes from the package index or pip's cache, so that
block alone runs with the test's network instead of the lab's).

systemd is not running here, so ``systemctl`` and ``journalctl`` are small stand-ins (written
below) that do what the unit says: ``daemon-reload`` runs ``systemd-analyze verify`` on the
installed units, ``start``/``enable --now`` makes the RuntimeDirectory/StateDirectory and starts
the unit's ``ExecStart`` (``%i`` filled in) with the capability bounding set reduced to
CAP_NET_ADMIN and CAP_NET_RAW and /, /etc and /opt read-only, then waits for its control socket;
``stop`` sends SIGTERM and waits; ``journalctl -u`` shows the daemon's output. The guide's
prose steps that are not commands are done by the test where the comment says so: ``then copy
FILES to HOSTS`` (a key carried over a secure channel) and ``after HOST is lost`` (the host
dies: its daemon is killed with SIGKILL, and the block waits until a peer has taken over).
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from haha.lab import topology
from test_packaging import build_wheel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUIDE = os.path.join(ROOT, "docs", "operations.md")
BLOCK = re.compile(r"(?:<!-- test: (?P<note>[^>]*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```",
                   re.S)
HOSTS = ("ha1", "ha2", "mn1")



def blocks(text):
    """(host, then, body) of every fenced shell block; ``then`` is the rest of the note."""
    out = []
    for m in BLOCK.finditer(text):
        if m["lang"] not in ("sh", "shell", "bash", "console"):
            continue
        note = m["note"]
        if note is None:
            raise AssertionError(f"a shell block has no test comment:\n{m['body']}")
        host, _, then = note.partition(",")
        host = host.removeprefix("on ").strip()
        assert host in HOSTS, note
        out.append((host, then.strip(), m["body"]))
    return out


def test_every_shell_block_of_the_guide_says_where_it_runs():
    """The guide's shell blocks all carry a test comment naming a host, and there are blocks
    for each part of the guide (install, keys, first start, watch, drain, recovery, upgrade)."""
    text = open(GUIDE).read()
    found = blocks(text)
    assert len(found) >= 12
    for heading in ("## Install", "## Keys", "## First start", "## Watching a running home agent",
                    "## Draining for maintenance", "## Recovering from a failed home agent",
                    "## Upgrading"):
        assert heading in text
    assert text.count("```") == 2 * len(found)  # no block of another language hides a command


SYSTEMCTL = '''\
#!{python}
"""systemctl as this test needs it (see tests/test_operations_doc.py)."""
import configparser, os, shlex, signal, socket, subprocess, sys, time

STATE = "/run/shim"
UNITS = "/etc/systemd/system"


def unit(name):
    template = name.split("@")[0] + "@.service"
    p = configparser.ConfigParser(interpolation=None, strict=False)
    p.optionxform = str
    p.read(os.path.join(UNITS, template))
    return p["Service"], name.split("@")[1].removesuffix(".service")


def start(name):
    service, instance = unit(name)
    for key, base in (("RuntimeDirectory", "/run"), ("StateDirectory", "/var/lib")):
        if key in service:
            os.makedirs(os.path.join(base, service[key]), mode=0o750, exist_ok=True)
    argv = shlex.split(service["ExecStart"].replace("%i", instance))
    script = ("mount --make-rprivate /; for m in / /etc /opt; do mount -o remount,bind,ro $m; "
              "done; exec setpriv --bounding-set -all,+net_admin,+net_raw "
              "--inh-caps -all,+net_admin,+net_raw --ambient-caps -all,+net_admin,+net_raw "
              "--no-new-privs -- " + " ".join(shlex.quote(a) for a in argv))
    os.makedirs(STATE, exist_ok=True)
    log = open(os.path.join(STATE, name + ".log"), "a")
    p = subprocess.Popen(["unshare", "-m", "sh", "-ec", script], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, cwd="/", start_new_session=True)
    with open(os.path.join(STATE, name + ".pid"), "w") as f:
        f.write(str(p.pid))
    sock = f"/run/haha/{{instance}}.sock"  # answering, not only there (a crash leaves it)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock)
            break
        except OSError:
            pass
        if p.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"{{name}} did not start:\\n" + open(log.name).read())
        time.sleep(0.2)


def stop(name):
    path = os.path.join(STATE, name + ".pid")
    if not os.path.exists(path):
        return
    pid = int(open(path).read())
    os.unlink(path)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 90
    while os.path.exists(f"/proc/{{pid}}") and time.monotonic() < deadline:
        try:
            if open(f"/proc/{{pid}}/stat").read().split()[2] == "Z":
                os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            pass
        time.sleep(0.2)


def verify():
    for name in sorted(os.listdir(UNITS)):
        if name.startswith("haha"):
            r = subprocess.run(["systemd-analyze", "verify", os.path.join(UNITS, name)],
                               capture_output=True, text=True,
                               env=dict(os.environ, SYSTEMD_LOG_TARGET="console"))
            if r.returncode or r.stderr.strip():
                sys.exit(f"systemd-analyze verify {{name}}: {{r.stderr}}")


args = [a for a in sys.argv[1:] if a != "--now"]
if args == ["daemon-reload"]:
    verify()
elif len(args) == 2 and args[0] in ("start", "enable"):
    start(args[1])
elif len(args) == 2 and args[0] == "stop":
    stop(args[1])
elif len(args) == 2 and args[0] == "restart":
    stop(args[1])
    start(args[1])
else:
    sys.exit(f"systemctl stand-in: {{sys.argv[1:]}} is not supported")
'''

JOURNALCTL = '''\
#!{python}
"""journalctl -u UNIT [--no-pager] [-n N]: the unit's output, as the test's systemctl kept it."""
import sys
args = sys.argv[1:]
unit = args[args.index("-u") + 1]
n = int(args[args.index("-n") + 1]) if "-n" in args else 10 ** 9
lines = open(f"/run/shim/{{unit}}.log").read().splitlines()
print("\\n".join(lines[-n:]))
'''


class Hosts:
    """One holder process per host keeps its network and mount namespaces; commands enter
    them with nsenter."""

    def __init__(self, topo, tmp_path):
        self.topo = topo
        self.tmp = tmp_path
        self.holders = {}
        self.bin = tmp_path / "shim"
        self.bin.mkdir()
        for name, text in (("systemctl", SYSTEMCTL), ("journalctl", JOURNALCTL)):
            path = self.bin / name
            path.write_text(text.format(python=sys.executable))
            path.chmod(0o755)
        self.env = dict(os.environ, PATH=f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin")
        (tmp_path / "opt").mkdir()

    def start(self, host):
        up, work = self.tmp / host / "etc-up", self.tmp / host / "etc-work"
        up.mkdir(parents=True)
        work.mkdir()
        script = (f"mount --make-rprivate /; mount -t overlay overlay -o lowerdir=/etc,"
                  f"upperdir={up},workdir={work} /etc; mount -t tmpfs -o mode=0755 tmpfs /run; "
                  f"mount -t tmpfs -o mode=0755 tmpfs /var/lib; "
                  f"mount --bind {shlex.quote(str(self.tmp / 'opt'))} /opt; echo ready; "
                  "exec sleep 100000")
        p = subprocess.Popen(["ip", "netns", "exec", self.topo.ns(host), "unshare", "-m", "sh",
                              "-ec", script], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        self.holders[host] = p

    def run(self, host, body, timeout=600, check=True, input=None):
        # pip fetching dependencies needs the way out the lab's namespaces do not have; such a
        # block starts no daemon, so it runs in the host's mount namespace with our network.
        net = ["-n"] if "systemctl" in body or "pip install" not in body else []
        r = subprocess.run(["nsenter", "-t", str(self.holders[host].pid), "-m", *net,
                            f"--wd={self.tmp / 'work'}", "--", "sh", "-ec", body],
                           capture_output=True, text=True, env=self.env, timeout=timeout,
                           input=input)
        if check:
            assert r.returncode == 0, f"on {host}:\n{body}\n--- stdout\n{r.stdout}\n" \
                                      f"--- stderr\n{r.stderr}"
        return r

    def copy(self, source, files, targets):
        for f in files:
            data = self.run(source, f"cat {shlex.quote(f)}").stdout
            for t in targets:
                self.run(t, f"install -d -m 0750 {shlex.quote(os.path.dirname(f))}; "
                            f"install -m 0600 /dev/stdin {shlex.quote(f)}", input=data)

    def lose(self, host, survivor):
        """``host`` dies: its daemons are killed, then wait until ``survivor`` took over."""
        self.run(host, "for p in /run/shim/*.pid; do kill -9 $(cat $p); rm $p; done")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = self.run(survivor, f"/opt/haha/venv/bin/haha-ctl --socket "
                                   f"/run/haha/{survivor}.sock --json counters", check=False)
            if r.returncode == 0 and json.loads(r.stdout).get("core.taken-over", 0) >= 1:
                return
            time.sleep(1)
        raise AssertionError(f"{survivor} did not take over from {host}")

    def stop_all(self):
        for host, p in self.holders.items():
            self.run(host, "for f in /run/shim/*.pid; do [ -e $f ] && kill -9 $(cat $f); "
                           "done; true", check=False, timeout=60)
            p.send_signal(signal.SIGKILL)
            p.wait()


@pytest.mark.netns
@pytest.mark.slow
def test_the_operations_guide_runs_as_written(require_root, tmp_path, tmp_path_factory):
    """Install from the wheel, keys, first start of two home agents and a mobile node under
    the unit, haha-ctl, metrics, logs, drain and resume, a lost home agent taken over and
    brought back, and a rolling upgrade: each block of docs/operations.md exits 0, in order."""
    found = blocks(open(GUIDE).read())
    (tmp_path / "work").mkdir()
    wheel = build_wheel(tmp_path_factory)
    os.link(wheel, tmp_path / "work" / os.path.basename(wheel))
    topo = topology.shared_home_link(n_has=2, n_mns=1)
    outputs = []
    with topo.create():
        hosts = Hosts(topo, tmp_path)
        try:
            for h in HOSTS:
                hosts.start(h)
            for host, then, body in found:
                m = re.fullmatch(r"after (\w+) is lost", then)
                if m:
                    hosts.lose(m[1], host)
                outputs.append((host, body, hosts.run(host, body).stdout))
                m = re.fullmatch(r"then copy (.+) to (\w+(?: and \w+)*)", then)
                if m:
                    hosts.copy(host, m[1].split(), m[2].split(" and "))
                elif then and not then.startswith("after "):
                    raise AssertionError(f"unknown test comment: {then}")
        finally:
            hosts.stop_all()
    derived = [json.loads(out) for _, body, out in outputs if "haha-keys derive" in body]
    assert len(derived) == 2
    assert derived[0]["spi_out"] == derived[1]["spi_in"]
    assert derived[0]["spi_in"] == derived[1]["spi_out"]
    journal = [out for _, body, out in outputs if body.startswith("journalctl")][0]
    assert "Unable to write to plugin cache" not in journal and "Traceback" not in journal
    assert "home agent 2001:db8:1::1" in journal


def test_the_stand_ins_refuse_what_they_do_not_do(tmp_path):
    """The systemctl stand-in fails on a command it does not implement, so the guide cannot
    come to use one silently."""
    path = tmp_path / "systemctl"
    path.write_text(SYSTEMCTL.format(python=sys.executable))
    r = subprocess.run([sys.executable, str(path), "isolate", "rescue.target"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "not supported" in r.stderr
