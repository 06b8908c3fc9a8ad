"""The load generator's home agents, and what watches them (:mod:`haha.lab.load`).

:class:`LoadCluster` is a :class:`~.cluster.LocalCluster` without its single mobile node: its
home agents (``twistd -n haha``, UDP transport, ESP, null backend) know ``n_nodes`` mobile nodes
through ``node-key-dir`` or a node-group key, and each generator process's care-of prefix
through a prefix entry of ``[udp-peers]`` (so a survivor taking a node over can reach it
without having heard from it). :class:`ControlProbe` measures how late their control sockets
answer; :func:`proc_stat` reads a process's CPU time and memory.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Container, Sequence
from typing import Any, TypedDict

from ..control.cli import request
from ..security.keys import generate_key_file
from .cluster import LocalCluster, Node
from .consistency import BindingView
from .loadnodes import care_of_prefix, write_node_keys


def admission_lines(n_nodes: int) -> list[str]:
    """``[security]`` admission sized for ``n_nodes`` registering at once (what an operator of
    that many nodes configures, docs/scale.md): with a node-group key every node's first Binding
    Update is unauthenticated input from a new source, and the defaults admit 409.6 new
    sources a second (a 10,000-node burst would take 24 s for admission alone).

    ``max-sources`` stays at its default (4,096): a node is an unauthenticated source only
    until its first Binding Update has derived its SAs, and everything it sends after that is
    charged to its SA (``authenticated-*``), so a tracked source per node (about 120 octets
    each, kept for good) would serve nobody."""
    return ["admit-rate = 20000",
            f"admit-burst = {max(1024, n_nodes)}", "unauthenticated-rate = 20000",
            f"unauthenticated-burst = {max(4000, n_nodes)}"]


def take_over_lines(share: str, n_nodes: int) -> list[str]:
    """``[home-agent]`` lines for the take-over of ``n_nodes`` (docs/scale.md, "Take-over"):
    ``take-over-share`` ('split': every survivor takes its share, 'first': the first-ranked
    survivor takes all) and, when split, switch requests paced for that many nodes (each
    survivor tells its share within a few seconds; the daemon's default of 4,000 a second
    would take 12.5 s for 50,000)."""
    lines = [f"take-over-share = {share}"]
    if share == "split":
        lines.append(f"switch-rate = {max(4000, n_nodes // 5)}")
    return lines


#: The BIU size between the load cluster's home agents: loopback carries any size, so the
#: largest a Mobility Header allows (docs/configuration.md, ``sync-mtu``): 41 bindings per BIU
#: instead of the 24 of the 1,280-octet default.
SYNC_MTU = 2100


class ClusterOptions(TypedDict, total=False):
    """:class:`LoadCluster`'s optional arguments, for the functions that pass them on."""

    n_has: int
    lifetime: int
    hello_interval: float
    boot_wait: float
    log_level: str
    node_keys: str
    admission: str
    take_over_share: str
    ha_env: dict[str, str]


class LoadCluster(LocalCluster):
    """``n_has`` home agents on 127.0.0.1 that know ``n_nodes`` generated mobile nodes.

    ``worker_ports`` are the generator's UDP ports (worker ``w``'s care-of prefix is routed to
    ``worker_ports[w]``); ``run_secret`` derives the node keys (:mod:`haha.lab.loadnodes`);
    ``ha_env`` is added to every home agent's environment (``PYTHONTRACEMALLOC=1`` for
    ``haha-ctl memory``'s allocation sites)."""

    def __init__(self, directory: str | os.PathLike[str], n_nodes: int,
                 worker_ports: Sequence[int], run_secret: bytes, n_has: int = 3,
                 lifetime: int = 3, hello_interval: float = 1.0, boot_wait: float = 1.0,
                 log_level: str = "info", node_keys: str = "group",
                 admission: str = "sized", take_over_share: str = "split",
                 ha_env: dict[str, str] | None = None) -> None:
        if node_keys not in ("group", "files"):
            raise ValueError(f"node_keys {node_keys!r} is 'group' or 'files'")
        if admission not in ("sized", "default"):
            raise ValueError(f"admission {admission!r} is 'sized' or 'default'")
        if take_over_share not in ("first", "split"):
            raise ValueError(f"take_over_share {take_over_share!r} is 'first' or 'split'")
        self.node_keys = node_keys
        self.admission = admission
        self.take_over_share = take_over_share
        super().__init__(directory, n_has=n_has, lifetime=lifetime,
                         hello_interval=hello_interval, boot_wait=boot_wait, security="esp",
                         log_level=log_level)
        for ha in self.has:
            ha.env.update(ha_env or {})
        self.n_nodes = n_nodes
        self.worker_ports = list(worker_ports)
        self.run_secret = run_secret

    @property
    def mobiles(self) -> list[Node]:
        """None: the generator's nodes are not daemons of the cluster."""
        return []

    def write(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        keys = os.path.join(self.directory, "keys")
        os.makedirs(keys, exist_ok=True)
        for a in self.has:
            for b in self.has:
                if a.name < b.name:
                    generate_key_file(os.path.join(keys, f"{a.name}-{b.name}.key"), force=True)
        if self.node_keys == "files":
            write_node_keys(os.path.join(self.directory, "nodes"), self.run_secret, self.n_nodes)
        else:
            generate_key_file(os.path.join(keys, "group.key"), len(self.run_secret), force=True,
                              rng=lambda n: self.run_secret)
        for ha in self.has:
            with open(ha.config, "w") as f:
                f.write(self._ha_text(ha))

    def _ha_security(self, ha: Node, others: Sequence[Node]) -> str:
        lines = ["[peer-keys]"]
        lines += [f"{h.address} = keys/{min(ha.name, h.name)}-{max(ha.name, h.name)}.key"
                  for h in others]
        lines += ["[security]", "node-key-dir = nodes" if self.node_keys == "files"
                  else "node-group-key = keys/group.key"]
        lines += admission_lines(self.n_nodes) if self.admission == "sized" else []
        return "\n".join(lines) + "\n"

    def _ha_text(self, ha: Node) -> str:
        prefixes = "".join(f"{care_of_prefix(w)} = 127.0.0.1:{port}\n"
                           for w, port in enumerate(self.worker_ports))
        take_over = "".join(line + "\n" for line in take_over_lines(self.take_over_share,
                                                                     self.n_nodes)
                            + [f"sync-mtu = {SYNC_MTU}"])
        return super()._ha_text(ha).replace("[udp-peers]\n", "[udp-peers]\n" + prefixes, 1) \
            .replace("backend = null\n", "backend = null\n" + take_over, 1)

    def ha_named(self, address: object) -> Node | None:
        """The home agent whose address is ``address`` (text or an address), or None."""
        for ha in self.has:
            if ha.address == str(address):
                return ha
        return None

    def udp_endpoints(self) -> list[tuple[str, int]]:
        """``(address, UDP port)`` of every home agent, the first preferred (what
        :class:`~.generator.Generator` takes)."""
        out = []
        for ha in self.has:
            if ha.port is None:
                raise RuntimeError(f"{ha.name} has no UDP port")
            out.append((ha.address, ha.port))
        return out

    # -- observation through the control sockets ----------------------------------------------

    def control(self, name: str, cmd: str, timeout: float = 120.0) -> Any:
        """``cmd``'s result from home agent ``name`` (the JSON value its control socket
        answers, whose shape depends on ``cmd``), or None while it cannot be reached (a
        large ``bindings`` answer may take a while: the timeout is generous)."""
        n = self.node(name)
        try:
            response = request(n.socket, cmd, timeout=timeout)
        except (OSError, ValueError):
            return None
        return response.get("result") if response.get("ok") else None

    def views(self, names: Container[str] | None = None) -> dict[str, list[BindingView]]:
        """``{ha address: [binding, ...]}`` of every reachable home agent (of ``names``)."""
        out: dict[str, list[BindingView]] = {}
        for ha in self.has:
            if (names is None or ha.name in names) and ha.running():
                bindings: list[BindingView] | None = self.control(ha.name, "bindings")
                if bindings is not None:
                    out[ha.address] = bindings
        return out


def proc_stat(pid: int) -> tuple[float, int]:
    """``(cpu seconds, rss octets)`` of process ``pid`` from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24
    return cpu, rss


class ProbeReport(TypedDict):
    """What :meth:`ControlProbe.reset` returns, per home agent name: the longest ``status``
    answer time (seconds, to the ms), the number of requests not answered, and from the
    daemon's own stall probe (``status``'s ``reactor``, :mod:`haha.stallprobe`) the longest
    stall of its reactor (ms; 0 when none reached 10 ms), the stalls of 50 ms or more, and
    the garbage collections that paused it 50 ms or more (every generation)."""

    longest_status_s: dict[str, float]
    status_timeouts: dict[str, int]
    longest_stall_ms: dict[str, float]
    stalls_over_50ms: dict[str, int]
    gc_pauses_over_50ms: dict[str, int]


class ControlProbe:
    """A thread asking each home agent's control socket for ``status`` every ``interval``
    seconds and keeping, per home agent, the longest answer time (a daemon whose reactor is
    blocked, or which waits for a CPU, answers late) and the stalls its own probe timer saw
    since the last reset (``status``'s ``reactor.recent``: each stall over 10 ms with its
    time, read often enough that none is missed)."""

    def __init__(self, cluster: LocalCluster, interval: float = 0.2) -> None:
        self.cluster = cluster
        self.interval = interval
        self.longest: defaultdict[str, float] = defaultdict(float)  # seconds
        self.unanswered: Counter[str] = Counter()
        self.stall: defaultdict[str, float] = defaultdict(float)  # ms
        self.over_50: Counter[str] = Counter()
        self._since = time.time()
        self._seen: dict[str, float] = {}  # the newest stall's time taken, per home agent
        # each home agent's count of long collections at its first answer of the phase, now
        self._gc_first: dict[str, int] = {}
        self._gc_now: dict[str, int] = {}
        self._lock = threading.Lock()  # the thread's polls against reset's
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ControlProbe:
        self._thread.start()
        return self

    def reset(self) -> ProbeReport:
        """The figures since the last reset (or the start), and start afresh. Each running
        home agent is asked once more first, so a phase shorter than the interval has its
        stalls too."""
        self._poll()
        with self._lock:
            return self._take()

    def _take(self) -> ProbeReport:
        report: ProbeReport = {
            "longest_status_s": {k: round(v, 3) for k, v in self.longest.items()},
            "status_timeouts": dict(self.unanswered),
            "longest_stall_ms": dict(self.stall), "stalls_over_50ms": dict(self.over_50),
            "gc_pauses_over_50ms": {k: v - self._gc_first.get(k, v)
                                    for k, v in self._gc_now.items()}}
        # the next phase counts from where this one ended
        self._gc_first = dict(self._gc_now)
        self.longest.clear()
        self.unanswered.clear()
        self.stall.clear()
        self.over_50.clear()
        self._since = time.time()
        return report

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def note_stalls(self, name: str, status: Any) -> None:
        """Take the stalls of a ``status`` answer's ``reactor.recent`` newer than the last
        reset and than those already taken from ``name``."""
        reactor = (status or {}).get("reactor") or {}
        recent = reactor.get("recent") or ()
        long_gcs = sum((reactor.get("gc") or {}).get("pauses_over_50ms") or ())
        if long_gcs < self._gc_now.get(name, 0):
            self._gc_first[name] = 0  # restarted (its counts begin again): all of this phase
        self._gc_first.setdefault(name, long_gcs)
        self._gc_now[name] = long_gcs
        after = max(self._since, self._seen.get(name, 0.0))
        for when, stall_ms, _late_ms in recent:
            if when <= after:
                continue
            self._seen[name] = max(self._seen.get(name, 0.0), when)
            self.stall[name] = max(self.stall[name], stall_ms)
            if stall_ms >= 50:
                self.over_50[name] += 1
        self.stall.setdefault(name, 0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def _poll(self) -> None:
        for ha in self.cluster.has:
            if not ha.running() or not os.path.exists(ha.socket):
                continue
            t = time.monotonic()
            try:
                answer = request(ha.socket, "status", timeout=10.0)
            except (OSError, ValueError):
                with self._lock:
                    self.unanswered[ha.name] += 1
                continue
            with self._lock:
                self.longest[ha.name] = max(self.longest[ha.name], time.monotonic() - t)
                if isinstance(answer, dict) and answer.get("ok"):
                    self.note_stalls(ha.name, answer.get("result"))
