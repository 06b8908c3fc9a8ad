"""A home-agent network of real ``twistd`` processes on loopback, without privileges.

:class:`LocalCluster` writes configurations (UDP transport, null backend, ESP with freshly
generated keys), starts ``twistd -n haha`` / ``twistd -n haha-mn`` processes, and watches them
only through what they expose: their control sockets (``haha-ctl``'s protocol) and their log
files. The demo (``python -m haha.demo``) and the process-level tests use it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

from ..control.cli import request
from ..security.keys import generate_key_file
from .timing import scaled

HOME_PREFIX = "2001:db8:1::/64"


def free_udp_ports(n: int) -> list[int]:
    """``n`` distinct UDP ports that were free a moment ago on 127.0.0.1."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def twistd_command() -> list[str]:
    """How to run twistd with this interpreter (the venv's script when there is one)."""
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
            "sys.argv[0] = 'twistd'; run()"]


class Node:
    """One daemon of the cluster: its name, configuration file, control socket, process."""

    def __init__(self, name: str, kind: str, address: str, port: Optional[int],
                 directory: str) -> None:
        self.name = name
        self.kind = kind  # "haha" or "haha-mn"
        self.address = address
        self.port = port
        self.config = os.path.join(directory, f"{name}.conf")
        self.socket = os.path.join(directory, f"{name}.sock")
        self.logfile = os.path.join(directory, f"{name}.log")
        self.env: dict[str, str] = {}  # extra environment (e.g. LD_PRELOAD for a test)
        self.process: Optional[subprocess.Popen[bytes]] = None

    def running(self) -> bool:
        return self.live() is not None

    def live(self) -> Optional[subprocess.Popen[bytes]]:
        """The process while it runs, else None."""
        p = self.process
        return p if p is not None and p.poll() is None else None


class DaemonGroup:
    """Daemons started as processes and observed only through their control sockets and log
    files. Subclasses set :attr:`has` (home agents) and :attr:`mobiles` (mobile nodes or
    routers), write the configurations, and may override :meth:`command` (how a daemon's
    command line is wrapped, e.g. in ``ip netns exec``)."""

    directory: str | None = None
    has: Sequence["Node"] = ()

    @property
    def mobiles(self) -> Sequence[Node]:
        """The mobile nodes or routers (each subclass says which)."""
        return ()

    @property
    def nodes(self) -> list[Node]:
        return list(self.has) + list(self.mobiles)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def command(self, n: Node) -> list[str]:
        """The command line that runs daemon ``n`` (twistd in the foreground, no pidfile)."""
        return twistd_command() + ["-n", "--pidfile=", f"--logfile={n.logfile}", n.kind,
                                   "--config", n.config]

    # -- processes --------------------------------------------------------------------------

    def start(self, name: str) -> Node:
        n = self.node(name)
        if os.path.exists(n.socket):
            os.unlink(n.socket)
        argv = self.command(n)
        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env.update(n.env)
        n.process = subprocess.Popen(argv, cwd=self.directory, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return n

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.node(name).live()
        if p is not None:
            p.send_signal(sig)
            p.wait(timeout=scaled(30))

    def stop(self, name: str, timeout: float = 30) -> None:
        """SIGTERM (twistd stops the service: drain, goodbye) and wait for the exit."""
        p = self.node(name).live()
        if p is not None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM every daemon at once, then wait for each (drains overlap)."""
        running = [p for p in (n.live() for n in self.nodes) if p is not None]
        for p in running:
            p.send_signal(signal.SIGTERM)
        for p in running:
            try:
                p.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    def kill_all(self) -> None:
        """SIGKILL every daemon still running and reap it (the clean-up path)."""
        for n in self.nodes:
            p = n.live()
            if p is not None:
                p.kill()
                p.wait()
            if n.process is not None and n.process.stderr is not None:
                n.process.stderr.close()

    # -- observation ------------------------------------------------------------------------

    def ask(self, name: str, cmd: str, **arguments: str) -> Any:
        """The control interface's answer (``result``), or None while it cannot be reached."""
        n = self.node(name)
        try:
            response = request(n.socket, cmd, arguments, timeout=scaled(5.0))
        except (OSError, ValueError):
            return None
        if not response.get("ok"):
            raise RuntimeError(f"{name} refused {cmd}: {response.get('error')}")
        return response["result"]

    def wait_for(self, what: str, predicate: Callable[..., Any], timeout: float = 30.0,
                 interval: float = 0.1) -> Any:
        """Poll ``predicate()`` until it returns a true value; raise with ``what`` and the logs'
        tails at ``timeout`` (multiplied by :func:`haha.lab.timing.wait_scale`). A daemon that
        exits meanwhile fails at once."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            for n in self.nodes:
                if n.process is not None and n.process.poll() not in (None, 0, -9, -15):
                    raise RuntimeError(f"{n.name} exited with {n.process.returncode} while "
                                       f"waiting for {what}:\n{self.tail(n.name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout} s\n" + "\n".join(
                    self.tail(n.name) for n in self.nodes))
            time.sleep(interval)

    def tail(self, name: str, lines: int = 25) -> str:
        n = self.node(name)
        try:
            with open(n.logfile) as f:
                text = f.readlines()[-lines:]
        except OSError:
            text = []
        err = b""
        if n.process is not None and n.process.poll() is not None and n.process.stderr:
            err = n.process.stderr.read() or b""
        return f"--- {name} ---\n" + "".join(text) + err.decode(errors="replace")

    def primary_of(self, home_address: str, names: Optional[Sequence[str]] = None
                   ) -> dict[str, tuple[str, bool]]:
        """{ha name: (primary, copy)} of ``home_address`` as each reachable HA reports it."""
        out = {}
        for ha in self.has:
            if names is not None and ha.name not in names:
                continue
            bindings = self.ask(ha.name, "bindings")
            if bindings is None:
                continue
            for b in bindings:
                if b["home_address"] == home_address:
                    out[ha.name] = (b["primary"], b["copy"])
        return out


class LocalCluster(DaemonGroup):
    """``n_has`` home agents and one mobile node (or router) on 127.0.0.1.

    Home agent i has address 2001:db8:1::i and preference 10 - i (ha1 is preferred); the mobile
    node 2001:db8:1::100 starts at care-of 2001:db8:20::100 registered with ha1. ``lifetime``
    and ``hello_interval`` set how fast a dead home agent is noticed; ``log_level`` is the
    daemons' ``[log] level``.
    """

    directory: str

    def __init__(self, directory: str | os.PathLike[str], n_has: int = 3, lifetime: int = 3,
                 hello_interval: float = 1.0, boot_wait: float = 1.0, security: str = "esp",
                 mobile_router: bool = False, log_level: str = "debug") -> None:
        self.directory = str(directory)
        self.log_level = log_level
        self.lifetime = lifetime
        self.hello_interval = hello_interval
        self.boot_wait = boot_wait
        self.security = security
        self.mobile_router = mobile_router
        ports = free_udp_ports(n_has + 1)
        self.has = [Node(f"ha{i}", "haha", f"2001:db8:1::{i}", ports[i - 1], self.directory)
                    for i in range(1, n_has + 1)]
        self.mn = Node("mr1" if mobile_router else "mn1", "haha-mn", "2001:db8:1::100",
                       ports[-1], self.directory)
        self.care_of = "2001:db8:20::100"

    @property
    def mobiles(self) -> list[Node]:
        return [self.mn]

    def __enter__(self) -> LocalCluster:
        self.write()
        return self

    # -- configuration ----------------------------------------------------------------------

    def write(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        keys = os.path.join(self.directory, "keys")
        os.makedirs(keys, exist_ok=True)
        if self.security == "esp":
            for a in self.has:
                for b in self.has:
                    if a.name < b.name:
                        generate_key_file(os.path.join(keys, f"{a.name}-{b.name}.key"),
                                          force=True)
            generate_key_file(os.path.join(keys, "mn.key"), force=True)
        for ha in self.has:
            with open(ha.config, "w") as f:
                f.write(self._ha_text(ha))
        with open(self.mn.config, "w") as f:
            f.write(self._mn_text())

    def _ha_security(self, ha: Node, others: Sequence[Node]) -> str:
        if self.security == "none":
            return "[security]\nmode = none\nlab = yes\n"
        lines = ["[peer-keys]"]
        lines += [f"{h.address} = keys/{min(ha.name, h.name)}-{max(ha.name, h.name)}.key"
                  for h in others]
        lines += ["[node-keys]", f"{self.mn.address} = keys/mn.key"]
        return "\n".join(lines) + "\n"

    def _mn_security(self) -> str:
        if self.security == "none":
            return "[security]\nmode = none\nlab = yes\n"
        return "[security]\nkey = keys/mn.key\n"

    def _ha_text(self, ha: Node) -> str:
        others = [h for h in self.has if h is not ha]
        udp = "\n".join(f"{h.address} = 127.0.0.1:{h.port}" for h in others)
        mr = f"[mobile-routers]\n{self.mn.address} = 2001:db8:100::/48\n" \
            if self.mobile_router else ""
        index = self.has.index(ha) + 1
        return f"""\
# {ha.name} of a LocalCluster (haha.lab.cluster): UDP transport on loopback, null backend.
[home-agent]
address = {ha.address}
home-prefix = {HOME_PREFIX}
configuration = separate-links
preference = {10 - index}
lifetime = {self.lifetime}
hello-interval = {self.hello_interval}
boot-wait = {self.boot_wait}
drain-timeout = {self.lifetime}
backend = null

[peers]
static = {" ".join(h.address for h in others)}

{mr}{self._ha_security(ha, others)}
[transport]
kind = udp
udp-listen = 127.0.0.1:{ha.port}

[udp-peers]
{udp}
{self.care_of} = 127.0.0.1:{self.mn.port}

[control]
socket = unix:{ha.socket}

[log]
level = {self.log_level}
"""

    def _mn_text(self) -> str:
        udp = "\n".join(f"{h.address} = 127.0.0.1:{h.port}" for h in self.has)
        mr = "mobile-router = yes\nprefixes = 2001:db8:100::/48\n" if self.mobile_router else ""
        return f"""\
# The mobile {"router" if self.mobile_router else "node"} of a LocalCluster.
[mobile-node]
home-address = {self.mn.address}
home-prefix = {HOME_PREFIX}
home-agent = {self.has[0].address}
home-agents = {" ".join(h.address for h in self.has[1:])}
care-of-address = {self.care_of}
lifetime = 60
{mr}
{self._mn_security()}
[transport]
kind = udp
udp-listen = 127.0.0.1:{self.mn.port}

[udp-peers]
{udp}

[control]
socket = unix:{self.mn.socket}

[log]
level = {self.log_level}
"""
