"""The many-node load generator: thousands of haha's own mobile nodes against real home agents.

:class:`LoadCluster` is a :class:`~.cluster.LocalCluster` without its single mobile node: its
home agents (``twistd -n haha``, UDP transport, ESP, null backend) know ``n_nodes`` mobile nodes
through ``node-key-dir``, and each generator process's care-of prefix through a prefix entry of
``[udp-peers]`` (so a survivor taking a node over can reach it without having heard from it).

:class:`Generator` starts ``workers`` processes (multiprocessing, ``spawn``). Each runs a Twisted
reactor with its share of the nodes: per node one :class:`haha.core.mobilenode.MobileNode`, its
own :class:`haha.protocol.MobileNodeAdapter` (haha's codec, policy and user-space ESP) and SA
database filled on demand by :class:`haha.security.keyring.NodeKeyring` (the daemon's key
derivation),
all behind one UDP socket: :class:`SharedUdp` hands each arriving packet to the node whose
care-of address is its destination. The parent starts every node at one instant (a burst) and
asks the workers for reports: how many nodes are registered and with which home agent, the
latency of each first registration, the CPU the worker used (so a run shows whether the
generator, rather than the home agents, was the bottleneck).

:func:`check_consistency` compares what the home agents report through their control sockets
(``bindings``) with what the nodes believe: each node has exactly one primary, a copy at every
other live home agent, every copy names that primary, and it is the home agent the node is
registered with.

Identities: node ``i`` has home address ``2001:db8:1::1:0 + i`` and, in worker ``w``, care-of
address ``2001:db8:21:w::1 + i``. Its secret is the node-group derivation of the run secret and
its home address (:func:`haha.security.keys.derive_node_secret`): with ``node_keys="group"``
(the default) the home agents hold only the run secret as ``[security] node-group-key``; with
``"files"`` the generator writes one ``HOME-ADDRESS.key`` file per node for their
``node-key-dir`` (what per-node keys cost). The workers derive the same secrets either way.

The echo baseline: :func:`echo_main` is a bare Twisted UDP echo; ``Generator.echo`` makes the
same worker processes send it datagrams of a Binding Update's size, so the home agents' cost per
packet can be compared with the cheapest thing a Twisted process can do with a datagram.

``haha-lab load --nodes N`` (:func:`main`) runs one burst on a 3-home-agent set, checks every
binding and prints a JSON report; ``bench/scale.py`` runs the whole benchmark.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from ipaddress import IPv6Address, IPv6Network

from ..control.cli import request
from ..core.events import EventName
from ..security.keys import derive_node_secret, generate_key_file
from .cluster import HOME_PREFIX, LocalCluster, free_udp_ports

FIRST_HOME = int(IPv6Address("2001:db8:1::1:0"))
CARE_OF_PREFIX = "2001:db8:21:{:x}::/64"
BINDING_LIFETIME = 3600  # the home agents' maximum: no refresh falls inside a benchmark


def home_address(i):
    """The home address of node ``i``."""
    return IPv6Address(FIRST_HOME + i)


def care_of_prefix(worker):
    return IPv6Network(CARE_OF_PREFIX.format(worker))


def node_secret(run_secret, hoa):
    """The 32-octet derivation secret of the node with home address ``hoa``."""
    return derive_node_secret(run_secret, IPv6Address(hoa))


def write_node_keys(directory, run_secret, n_nodes):
    """One ``HOME-ADDRESS.key`` file (mode 0600) per node, for a home agent's node-key-dir."""
    os.makedirs(directory, exist_ok=True)
    for i in range(n_nodes):
        hoa = home_address(i)
        fd = os.open(os.path.join(directory, f"{hoa}.key"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, node_secret(run_secret, hoa).hex().encode() + b"\n")
        finally:
            os.close(fd)


def admission_lines(n_nodes):
    """``[security]`` admission sized for ``n_nodes`` registering at once (what an operator of
    that many nodes configures, docs/scale.md): with a node-group key every node's first Binding
    Update is unauthenticated input from a new source, and the defaults admit 409.6 new
    sources a second (a 10,000-node burst would take 24 s for admission alone)."""
    return [f"max-sources = {max(4096, n_nodes)}", "admit-rate = 20000",
            f"admit-burst = {max(1024, n_nodes)}", "unauthenticated-rate = 20000",
            f"unauthenticated-burst = {max(4000, n_nodes)}"]


def split(n_nodes, workers):
    """``[(first, count)]`` of each worker: the nodes spread as evenly as possible."""
    base, extra = divmod(n_nodes, workers)
    out, first = [], 0
    for w in range(workers):
        count = base + (1 if w < extra else 0)
        out.append((first, count))
        first += count
    return out


# -- the home agents ------------------------------------------------------------------------------


class LoadCluster(LocalCluster):
    """``n_has`` home agents on 127.0.0.1 that know ``n_nodes`` generated mobile nodes.

    ``worker_ports`` are the generator's UDP ports (worker ``w``'s care-of prefix is routed to
    ``worker_ports[w]``); ``run_secret`` derives the node keys (module docstring)."""

    def __init__(self, directory, n_nodes, worker_ports, run_secret, n_has=3, lifetime=3,
                 hello_interval=1.0, boot_wait=1.0, log_level="info", node_keys="group",
                 admission="sized"):
        if node_keys not in ("group", "files"):
            raise ValueError(f"node_keys {node_keys!r} is 'group' or 'files'")
        if admission not in ("sized", "default"):
            raise ValueError(f"admission {admission!r} is 'sized' or 'default'")
        self.node_keys = node_keys
        self.admission = admission
        super().__init__(directory, n_has=n_has, lifetime=lifetime,
                         hello_interval=hello_interval, boot_wait=boot_wait, security="esp",
                         log_level=log_level)
        self.n_nodes = n_nodes
        self.worker_ports = list(worker_ports)
        self.run_secret = run_secret

    @property
    def mobiles(self):
        return []

    def write(self):
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

    def _ha_security(self, ha, others):
        lines = ["[peer-keys]"]
        lines += [f"{h.address} = keys/{min(ha.name, h.name)}-{max(ha.name, h.name)}.key"
                  for h in others]
        lines += ["[security]", "node-key-dir = nodes" if self.node_keys == "files"
                  else "node-group-key = keys/group.key"]
        lines += admission_lines(self.n_nodes) if self.admission == "sized" else []
        return "\n".join(lines) + "\n"

    def _ha_text(self, ha):
        prefixes = "".join(f"{care_of_prefix(w)} = 127.0.0.1:{port}\n"
                           for w, port in enumerate(self.worker_ports))
        return super()._ha_text(ha).replace("[udp-peers]\n", "[udp-peers]\n" + prefixes, 1)

    def ha_named(self, address):
        for ha in self.has:
            if ha.address == str(address):
                return ha
        return None

    # -- observation through the control sockets ----------------------------------------------

    def control(self, name, cmd, timeout=120.0):
        """``cmd``'s result from home agent ``name``, or None while it cannot be reached (a
        large ``bindings`` answer may take a while: the timeout is generous)."""
        n = self.node(name)
        try:
            response = request(n.socket, cmd, timeout=timeout)
        except (OSError, ValueError):
            return None
        return response.get("result") if response.get("ok") else None

    def views(self, names=None):
        """``{ha address: [binding, ...]}`` of every reachable home agent (of ``names``)."""
        out = {}
        for ha in self.has:
            if (names is None or ha.name in names) and ha.running():
                bindings = self.control(ha.name, "bindings")
                if bindings is not None:
                    out[ha.address] = bindings
        return out


def proc_stat(pid):
    """``(cpu seconds, rss octets)`` of process ``pid`` from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (fields 14, 15)
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")  # field 24
    return cpu, rss


class ControlProbe:
    """A thread asking each home agent's control socket for ``status`` every ``interval``
    seconds and keeping the longest answer time per home agent: a daemon whose reactor is
    blocked answers late (the probe's view of the longest stall)."""

    def __init__(self, cluster, interval=0.2):
        self.cluster = cluster
        self.interval = interval
        self.longest = Counter()
        self.unanswered = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def reset(self):
        longest, unanswered = dict(self.longest), dict(self.unanswered)
        self.longest.clear()
        self.unanswered.clear()
        return {"longest_status_s": {k: round(v, 3) for k, v in longest.items()},
                "status_timeouts": unanswered}

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self):
        while not self._stop.wait(self.interval):
            for ha in self.cluster.has:
                if not ha.running() or not os.path.exists(ha.socket):
                    continue
                t = time.monotonic()
                try:
                    request(ha.socket, "status", timeout=10.0)
                except (OSError, ValueError):
                    self.unanswered[ha.name] += 1
                    continue
                self.longest[ha.name] = max(self.longest[ha.name], time.monotonic() - t)


# -- consistency --------------------------------------------------------------------------------


def check_consistency(views, home_addresses, node_homes=None, examples=10):
    """Whether the bindings the home agents report agree (module docstring).

    ``views``: ``{ha address: [binding dict as the control socket's bindings answer]}`` of the
    live home agents; ``home_addresses``: every node's home address; ``node_homes``:
    ``{home address: home agent the node is registered with, or None}`` (optional). Returns
    ``{"consistent": bool, "problems": count, "examples": [text, ...]}``."""
    tables = {str(ha): {b["home_address"]: b for b in bindings}
              for ha, bindings in views.items()}
    problems = []
    for hoa in map(str, home_addresses):
        entries = {ha: table.get(hoa) for ha, table in tables.items()}
        missing = sorted(ha for ha, b in entries.items() if b is None)
        if missing:
            problems.append(f"{hoa}: no binding at {', '.join(missing)}")
            continue
        primaries = {b["primary"] for b in entries.values()}
        if len(primaries) != 1:
            problems.append(f"{hoa}: home agents disagree on the primary: "
                            f"{', '.join(sorted(primaries))}")
            continue
        primary = primaries.pop()
        if primary not in entries:
            problems.append(f"{hoa}: primary {primary} is not a live home agent")
            continue
        wrong = sorted(ha for ha, b in entries.items() if b["copy"] != (ha != primary))
        if wrong:
            problems.append(f"{hoa}: primary/copy role wrong at {', '.join(wrong)}")
            continue
        if node_homes is not None:
            home = node_homes.get(hoa)
            if home != primary:
                problems.append(f"{hoa}: the node is registered with {home}, the home agents "
                                f"say {primary}")
    expected = set(map(str, home_addresses))
    for ha, table in sorted(tables.items()):
        extra = len(set(table) - expected)
        if extra:
            problems.append(f"{ha}: {extra} bindings of unknown nodes")
    return {"consistent": not problems, "problems": len(problems),
            "examples": problems[:examples]}


# -- the generator's worker processes ----------------------------------------------------------


class SharedUdp:
    """One UDP socket for many nodes' adapters: each node gets a :meth:`view` (an
    ``IMobilityTransport`` of its own); arriving packets go to the node whose care-of address
    is the fixed-header destination, the rest are counted (``unknown_destination``)."""

    def __init__(self, reactor, port, peers):
        from ..io.udp import UdpTransport

        self.udp = UdpTransport(reactor, port=port, interface="127.0.0.1", peers=peers,
                                learn=False, receive_buffer=8 << 20, send_buffer=8 << 20)
        self.receivers = {}
        self.counters = self.udp.counters

    def start(self):
        self.udp.start(self._received)

    def stop(self):
        return self.udp.stop()

    def view(self, care_of):
        return _NodeView(self, care_of)

    def _received(self, data):
        receiver = self.receivers.get(bytes(data[24:40]))
        if receiver is None:
            self.counters["unknown_destination"] += 1
            return
        receiver(data)


class _NodeView:
    def __init__(self, shared, care_of):
        self.shared = shared
        self.key = care_of.packed
        self.counters = shared.counters

    def start(self, receiver):
        self.shared.receivers[self.key] = receiver

    def send(self, packet, interface=None):
        self.shared.udp.send(packet)

    def stop(self):
        self.shared.receivers.pop(self.key, None)


class _Worker:
    """What runs in one generator process (:func:`_worker_main`)."""

    def __init__(self, reactor, spec):
        from ..core.mobilenode import MobileNode
        from ..core.settings import MobileNodeSettings
        from ..protocol import MobileNodeAdapter
        from ..security.policy import SecurityPolicy
        from ..security.sadb import SecurityAssociationDatabase
        from ..security.keyring import NodeKeyring
        from ..wire.numbers import DEFAULT_PROFILE

        self.reactor = reactor
        self.index = spec["index"]
        peers = {IPv6Address(a): ("127.0.0.1", p) for a, p in spec["home_agents"]}
        self.shared = SharedUdp(reactor, spec["port"], peers)
        self.has = tuple(peers)
        policy = SecurityPolicy(DEFAULT_PROFILE, "esp", False)
        prefix = care_of_prefix(self.index)
        self.nodes = []
        self.started = {}
        self.registered = {}
        for k in range(spec["count"]):
            i = spec["first"] + k
            hoa = home_address(i)
            care_of = IPv6Address(int(prefix.network_address) + 1 + k)
            settings = MobileNodeSettings(home_address=hoa,
                                          home_prefix=IPv6Network(HOME_PREFIX),
                                          home_agents=self.has, lifetime=spec["lifetime"])
            machine = MobileNode(settings)
            sadb = SecurityAssociationDatabase()
            keyring = NodeKeyring(node_secret(spec["secret"], hoa), hoa, sadb)
            adapter = MobileNodeAdapter(machine, self.shared.view(care_of), reactor,
                                        DEFAULT_PROFILE, policy, sadb, None, None, keyring)
            adapter.observers.append(lambda event, i=i: self._event(i, event))
            self.nodes.append((i, care_of, machine, adapter))

    def _event(self, i, event):
        if event.name == EventName.REGISTERED and i not in self.registered:
            self.registered[i] = self.reactor.seconds() - self.started[i]

    def go(self):
        self.shared.start()
        for i, care_of, machine, adapter in self.nodes:
            adapter.start_transport()
            adapter.running = True
            self.started[i] = self.reactor.seconds()
            adapter._run(machine.start, self.reactor.seconds(), care_of=care_of)
        return {"started": len(self.nodes)}

    def report(self, latencies=False):
        from ..core.mobilenode import REGISTERED

        by_ha = Counter()
        states = Counter()
        core = Counter()
        for _, _, machine, adapter in self.nodes:
            states[machine.state] += 1
            if machine.state == REGISTERED:
                by_ha[machine.home_agent] += 1
            if latencies:
                core.update(machine.counters)
        t = os.times()
        out = {"nodes": len(self.nodes), "registered": states.get(REGISTERED, 0),
               "by_home_agent": {str(k): v for k, v in by_ha.items()}, "states": dict(states),
               "first_registrations": len(self.registered),
               "cpu_s": t.user + t.system, "transport": dict(self.shared.counters),
               "core": dict(core)}
        if latencies:
            out["latencies"] = list(self.registered.values())
        return out

    def homes(self):
        """``{home address: registered home agent or None}`` (None while not registered)."""
        from ..core.mobilenode import REGISTERED

        return {str(machine.settings.home_address):
                str(machine.home_agent) if machine.state == REGISTERED else None
                for _, _, machine, _ in self.nodes}


class _EchoClient:
    """Sends ``count`` datagrams of ``size`` octets to an echo server, ``window`` outstanding
    at a time (a lost one is sent again after ``timeout``), and reports how long it took."""

    def __init__(self, reactor, endpoint, count, size, window=256, timeout=0.5):
        from twisted.internet.protocol import DatagramProtocol

        client = self

        class _P(DatagramProtocol):
            def datagramReceived(self, data, addr):  # noqa: N802 - Twisted hook
                client._answered(data)

        self.reactor = reactor
        self.endpoint = tuple(endpoint)
        self.count = count
        self.size = size
        self.window = window
        self.timeout = timeout
        self.outstanding = {}
        self.next = 0
        self.answers = 0
        self.sent = 0
        self.port = reactor.listenUDP(0, _P(), interface="127.0.0.1")
        from ..io.sockbuf import apply_buffers
        from ..logging import logger
        apply_buffers(self.port.getHandle(), logger("haha.lab.load"), "echo client",
                      8 << 20, 8 << 20)
        from twisted.internet import defer
        self.done = defer.Deferred()
        self._check = None
        self.t0 = reactor.seconds()
        self._check = reactor.callLater(timeout, self._resend)
        self._fill()

    def _send(self, n):
        self.outstanding[n] = self.reactor.seconds()
        self.sent += 1
        self.port.write(n.to_bytes(4, "big") + bytes(self.size - 4), self.endpoint)

    def _fill(self):
        while len(self.outstanding) < self.window and self.next < self.count:
            self._send(self.next)
            self.next += 1
        if not self.outstanding and self.next >= self.count and not self.done.called:
            if self._check is not None and self._check.active():
                self._check.cancel()
            self.port.stopListening()
            self.done.callback({"packets": self.count, "sent": self.sent,
                                "seconds": self.reactor.seconds() - self.t0})

    def _answered(self, data):
        if self.outstanding.pop(int.from_bytes(data[:4], "big"), None) is not None:
            self.answers += 1
            self._fill()

    def _resend(self):
        if self.done.called:
            return
        now = self.reactor.seconds()
        for n, sent in list(self.outstanding.items()):
            if now - sent >= self.timeout:
                self._send(n)
        self._check = self.reactor.callLater(self.timeout / 2, self._resend)


def _worker_main(spec, conn):
    """A generator process: build the nodes, then obey the parent's commands on ``conn``."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner

    from ..logging import configure

    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    configure("error")
    parent = os.getppid()
    worker = _Worker(reactor, spec)

    def answer(result):
        conn.send(("ok", result))

    def poll():
        try:
            waiting = conn.poll()
        except (EOFError, OSError):
            waiting = None
        if waiting is None or not waiting and os.getppid() != parent:
            reactor.stop()  # the parent is gone: nobody will ask again
            return
        while conn.poll():
            try:
                cmd, args = conn.recv()
            except (EOFError, OSError):
                reactor.stop()
                return
            if cmd == "go":
                answer(worker.go())
            elif cmd == "report":
                answer(worker.report(**args))
            elif cmd == "homes":
                answer(worker.homes())
            elif cmd == "echo":
                _EchoClient(reactor, **args).done.addCallback(answer)
            elif cmd == "stop":
                answer({})
                reactor.stop()
                return

    conn.send(("ok", {"ready": len(worker.nodes)}))
    LoopingCall(poll).start(0.01)
    reactor.run()


def echo_main(port, ready):
    """A bare Twisted UDP echo on 127.0.0.1:``port``: the baseline of the benchmark."""
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    from ..io.sockbuf import apply_buffers
    from ..logging import logger

    class Echo(DatagramProtocol):
        def datagramReceived(self, data, addr):  # noqa: N802 - Twisted hook
            self.transport.write(data, addr)

    listening = reactor.listenUDP(port, Echo(), interface="127.0.0.1")
    apply_buffers(listening.getHandle(), logger("haha.lab.load"), "echo", 8 << 20, 8 << 20)
    ready.set()
    reactor.run()


class Generator:
    """``n_nodes`` mobile nodes in ``workers`` processes against ``home_agents`` (a list of
    ``(address, udp port)``, the first preferred); use as a context manager."""

    def __init__(self, n_nodes, workers, home_agents, ports, run_secret,
                 lifetime=BINDING_LIFETIME):
        self.n_nodes = n_nodes
        self.home_addresses = [home_address(i) for i in range(n_nodes)]
        self.specs = [{"index": w, "first": first, "count": count, "port": ports[w],
                       "home_agents": list(home_agents), "secret": run_secret,
                       "lifetime": lifetime}
                      for w, (first, count) in enumerate(split(n_nodes, workers))]
        self.ctx = multiprocessing.get_context("spawn")
        self.processes = []
        self.conns = []

    def __enter__(self):
        for spec in self.specs:
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(target=_worker_main, args=(spec, child), daemon=True)
            p.start()
            child.close()
            self.processes.append(p)
            self.conns.append(parent)
        self._collect(timeout=600)
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        for conn, p in zip(self.conns, self.processes):
            if p.is_alive():
                try:
                    conn.send(("stop", {}))
                except OSError:
                    pass
        for p in self.processes:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        self.processes, self.conns = [], []

    def _collect(self, timeout=120):
        out = []
        for conn, p in zip(self.conns, self.processes):
            deadline = time.monotonic() + timeout
            while not conn.poll(0.1):
                if not p.is_alive():
                    raise RuntimeError(f"generator worker {p.pid} exited with {p.exitcode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"generator worker {p.pid} did not answer")
            status, result = conn.recv()
            out.append(result)
        return out

    def _all(self, cmd, timeout=120, **args):
        for conn in self.conns:
            conn.send((cmd, args))
        return self._collect(timeout)

    def go(self):
        """Start every node (each worker starts its share at once)."""
        self._all("go")

    def report(self, latencies=False):
        """The workers' reports merged (module docstring)."""
        parts = self._all("report", latencies=latencies)
        out = {"nodes": 0, "registered": 0, "first_registrations": 0,
               "by_home_agent": Counter(), "states": Counter(), "transport": Counter(),
               "core": Counter(), "cpu_s": [p["cpu_s"] for p in parts]}
        for p in parts:
            for k in ("nodes", "registered", "first_registrations"):
                out[k] += p[k]
            for k in ("by_home_agent", "states", "transport", "core"):
                out[k].update(p[k])
        if latencies:
            out["latencies"] = sorted(x for p in parts for x in p["latencies"])
        return out

    def homes(self):
        out = {}
        for part in self._all("homes"):
            out.update(part)
        return out

    def echo(self, endpoint, packets, size):
        """Every worker sends its share of ``packets`` datagrams of ``size`` octets to the
        echo server at ``endpoint``; the slowest worker's time."""
        shares = split(packets, len(self.conns))
        for conn, (_, count) in zip(self.conns, shares):
            conn.send(("echo", {"endpoint": list(endpoint), "count": count, "size": size}))
        parts = self._collect(timeout=600)
        return {"packets": packets, "sent": sum(p["sent"] for p in parts),
                "seconds": max(p["seconds"] for p in parts)}


def percentiles(values, points=(50, 90, 99, 100)):
    """``{"p50": ..., ...}`` of ``values`` (sorted or not), in seconds rounded to ms."""
    if not values:
        return {f"p{q}": None for q in points}
    s = sorted(values)
    return {f"p{q}": round(s[min(len(s) - 1, max(0, -(-q * len(s) // 100) - 1))], 3)
            for q in points}


def bu_packet_size():
    """The size of a mobile node's first Binding Update as sent (ESP, Home Address option)."""
    from ..security.sadb import SecurityAssociationDatabase
    from ..security.keyring import NodeKeyring
    from ..wire.ipv6 import build_packet
    from ..wire.mh import BU_A, BU_H, BindingUpdate, encode_mh
    from ..wire.numbers import IPPROTO_ESP, IPPROTO_MH

    hoa, ha, coa = home_address(0), IPv6Address("2001:db8:1::1"), IPv6Address("2001:db8:21::1")
    sadb = SecurityAssociationDatabase()
    NodeKeyring(bytes(32), hoa, sadb).ensure(ha)
    mh = encode_mh(BindingUpdate(1, flags=BU_A | BU_H, lifetime=150), hoa, ha)
    return len(build_packet(coa, ha, IPPROTO_ESP, sadb.protect(ha, IPPROTO_MH, mh),
                            home_address=hoa))


# -- one run ------------------------------------------------------------------------------------


def poll_interval(n_nodes):
    """How often to ask the workers and home agents while waiting: a report walks every node,
    so it is asked for less often with more nodes (the generator must not become the load)."""
    return max(0.05, n_nodes / 100000)


def wait(what, predicate, timeout, interval=0.05):
    """Poll ``predicate`` until true; its value, or TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(interval)


def launch_cluster(directory, n_nodes, workers, run_secret=None, **cluster_args):
    """A written :class:`LoadCluster` with its home agents started (not yet serving), and the
    generator's ports: ``(cluster, ports, run_secret)``."""
    run_secret = run_secret or os.urandom(32)
    ports = free_udp_ports(workers)
    cluster = LoadCluster(directory, n_nodes, ports, run_secret, **cluster_args)
    cluster.write()
    for ha in cluster.has:
        cluster.start(ha.name)
    return cluster, ports, run_secret


def wait_serving(cluster):
    """Wait until every home agent of ``cluster`` serves (loading many node keys takes a
    while: the timeout grows with them)."""
    for ha in cluster.has:
        cluster.wait_for(f"{ha.name} serving", lambda ha=ha: (
            cluster.control(ha.name, "status", timeout=10) or {}).get("state") == "serving",
            timeout=max(60, cluster.n_nodes / 500))


def start_cluster(directory, n_nodes, workers, run_secret=None, **cluster_args):
    """:func:`launch_cluster`, then :func:`wait_serving`."""
    cluster, ports, run_secret = launch_cluster(directory, n_nodes, workers, run_secret,
                                                **cluster_args)
    try:
        wait_serving(cluster)
    except BaseException:
        cluster.kill_all()
        raise
    return cluster, ports, run_secret


def burst(cluster, generator, timeout):
    """Start every node at once; wait until all are registered and every binding is
    consistent on every home agent. Returns the phase's figures."""
    n = generator.n_nodes
    cpu0 = generator.report()["cpu_s"]
    t0 = time.monotonic()
    generator.go()
    try:
        wait("registration of every node", lambda: generator.report()["registered"] == n,
             timeout, interval=poll_interval(n))
    except TimeoutError as e:
        r = generator.report()
        raise TimeoutError(f"{e}: {r['registered']} of {n} registered (by home agent: "
                           f"{dict(r['by_home_agent'])}; states: {dict(r['states'])})") from None
    registered = time.monotonic() - t0

    def settled():
        counts = [cluster.control(ha.name, "status", timeout=30) or {} for ha in cluster.has]
        return all(c.get("bindings") == n for c in counts) and \
            sum(c.get("primaries", 0) for c in counts) == n

    wait("a binding for every node at every home agent", settled, timeout,
         interval=poll_interval(n))
    check = check_consistency(cluster.views(), generator.home_addresses, generator.homes())
    consistent = time.monotonic() - t0
    report = generator.report(latencies=True)
    cpu = [round(b - a, 2) for a, b in zip(cpu0, report["cpu_s"])]
    return {"nodes": n, "registered_s": round(registered, 3),
            "consistent_s": round(consistent, 3), "consistency": check,
            "latency_s": percentiles(report["latencies"]),
            # Each worker's CPU during the phase: far below registered_s each, the generator
            # was waiting for the home agents, not the other way round.
            "generator_cpu_s": cpu,
            "node_counters": dict(report["core"])}


def stop_on_sigterm():
    """SIGTERM unwinds like Ctrl-C, so the daemons and workers started are cleaned up."""
    def handler(signum, frame):
        raise SystemExit(f"terminated by signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def main(argv=None):
    p = argparse.ArgumentParser(prog="haha-lab load", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1000, help="mobile nodes (default 1000)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
                   help="generator processes (default: half the cores)")
    p.add_argument("--has", type=int, default=3, help="home agents (2-9)")
    p.add_argument("--node-keys", choices=("group", "files"), default="group",
                   help="the home agents know the nodes by one node-group key (default) or "
                        "by one key file each")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the burst")
    p.add_argument("--admission", choices=("sized", "default"), default="sized",
                   help="admission of new sources sized for --nodes (default) or the "
                        "daemon's defaults")
    p.add_argument("--dir", help="keep configurations and logs here")
    args = p.parse_args(argv)
    if not 2 <= args.has <= 9:
        p.error("--has must be 2-9")
    if not 1 <= args.nodes <= 1 << 20 or not 1 <= args.workers <= 64:
        p.error("--nodes must be 1..1048576, --workers 1..64")
    directory = args.dir or tempfile.mkdtemp(prefix="haha-load-")
    cluster = None
    stop_on_sigterm()
    try:
        cluster, ports, secret = start_cluster(directory, args.nodes, args.workers,
                                               n_has=args.has, node_keys=args.node_keys,
                                               admission=args.admission)
        has = [(ha.address, ha.port) for ha in cluster.has]
        with Generator(args.nodes, args.workers, has, ports, secret) as generator:
            result = burst(cluster, generator, args.timeout)
        json.dump(result, sys.stdout)
        print()
        return 0 if result["consistency"]["consistent"] else 1
    except (RuntimeError, TimeoutError) as e:
        print(f"haha-lab load: {e}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.kill_all()
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
