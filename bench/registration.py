"""Benchmark of one home agent's whole pipeline per Binding Update, in process, with ESP.

What `bench/scale.py` measures across processes, without the sockets: a
:class:`haha.endpoint.HomeAgentEndpoint` with the daemon's parts (user-space ESP, a node group
key deriving each node's SAs on its first packet, the security policy, admission sized for the
burst as `bench/scale.py` sizes it, two live peers with their own endpoints answering the
BIUs) receives complete IPv6 packets that haha's own mobile nodes built
(:class:`haha.endpoint.MobileNodeEndpoint`, ESP and all). The home agent's CPU time
(``time.process_time`` around its calls only: the nodes and the peers are not counted) per
Binding Update received, for three kinds of update:

- ``first``: each node's first Binding Update (the node's SAs derived on first contact, a new
  binding, a BIU to each peer, the BA encoded and protected);
- ``new_number``: a retransmission with a new sequence number, as deployed nodes send it (RFC
  6275 11.8; haha's node did it too): a refresh of the binding, a BIU to each peer, the BA;
- ``same_number``: a retransmission carrying the number just accepted (haha's node now):
  answered again from the binding, with nothing stored and nothing sent to the peers.

The measured home agent runs behind the Twisted adapter as in the daemon
(:class:`haha.protocol.HomeAgentAdapter` with a recording transport, the latency metrics
attached, events published to haha's logger at the default level, a sequence store in a
temporary directory as the daemon keeps in its state directory), with a clock that runs its
delayed calls between slices of 256 packets, as the UDP transport's slices do.

Baseline ``esp_and_decode``: the same first packets only parsed, authenticated and decrypted
(``unprotect`` on a database that holds the nodes' SAs already) and decoded: the part of the
path that no change outside ESP and the codec can remove, in the same unit, in the same run.
Baseline ``echo``: a bare Twisted UDP echo (the one ``bench/scale.py`` measures, in a process
of its own on loopback) answering as many datagrams of a Binding Update's size, its CPU time
per datagram from ``/proc`` (the issue's goal: at most 4x that per Binding Update). The echo
pays a ``recvfrom`` and a ``sendto`` per datagram; the home agent here pays neither, so its
ratio to the echo understates the daemon's by those two system calls.

Case ``udp_receive``: the same for a datagram received, which the in-process cases hand to the
adapter directly: CPU per datagram of one :class:`haha.io.udp.UdpTransport` read of as many
Binding Update-sized datagrams from as many care-of addresses, queued on its socket (recvmsg,
the input queue, the learned map), against bare ``recvmsg`` calls (baseline ``bare_recvmsg``).

Case ``udp_send``: what the daemon adds per datagram it sends, which the in-process cases do not
pay: CPU per :meth:`haha.io.udp.UdpTransport.send` of a Binding Acknowledgement-sized packet to
a static peer on loopback, against a bare ``sendto`` of the same packet (baseline
``bare_sendto``), best of five runs of ``--send-datagrams`` each.

Case ``switch_request``: what a survivor pays per Home Agent Switch Request to a node it never
heard from (50,000 of them leave a survivor when the primary of 100,000 nodes dies): the node's
SA pair derived from the node group key and installed, the request encoded, sealed and given
its IPv6 header, per request, ``--switch-requests`` of them to as many nodes; baseline
``sealed_again``: the same requests sent again once the SAs exist. With ``--baseline-tree``
the other tree's haha is measured by this file's code too (its own bench has no such case).

``--cipher-cache N`` sizes the measured home agent's cache of AES-GCM contexts (4,096 by
default, as in the daemon): with fewer contexts than nodes every packet rebuilds its SA's
context, as at 100,000 nodes.
Each case is the best of ``rounds`` alternating runs (the machine is shared). ``--baseline-tree
DIR`` runs, after each round, one round of ``DIR``'s own bench/registration.py (another
checkout: the code before a change) and reports its figure per case beside this tree's, and
the ratio: a before/after under the same load. ``--profile``
prints a cProfile of the home agent's calls during one round instead (``HAHA_PROF_SORT``,
``HAHA_PROF_N``: the sort key and the number of rows). ``--steps`` prints instead, for each
case, the home agent's time per Binding Update in each step of its path (:data:`STEPS`:
CPU time of each step's calls, inclusive, measured by wrappers that add a microsecond or two
per call: two readings of the CPU clock), what is left outside them, and the peers' time handling
what the measured home agent sent them (their BIUs).
"""

import argparse
import cProfile
import gc
import json
import os
import pstats
import random
import sys
import tempfile
import time
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

#: The checkout whose haha is measured: this one, or (``--baseline-tree``'s switch requests,
#: measured by this file's code in a process of its own) the one named here.
_TREE = os.environ.get("HAHA_BENCH_TREE")
sys.path.insert(0, _TREE or str(Path(__file__).resolve().parent.parent))

from haha.core.homeagent import HomeAgent  # noqa: E402
from haha.core.mobilenode import MobileNode  # noqa: E402
from haha.core.settings import HomeAgentSettings, MobileNodeSettings  # noqa: E402
from haha.endpoint import HomeAgentEndpoint, MobileNodeEndpoint  # noqa: E402
from haha.security import keys  # noqa: E402
from haha.security.admission import Admission, AdmissionSettings  # noqa: E402
from haha.security.keyring import NodeKeyring  # noqa: E402
from haha.security.nodegroup import NodeGroup  # noqa: E402
from haha.security.policy import SecurityPolicy  # noqa: E402
from haha.security.sadb import HOME_AGENT, SecurityAssociationDatabase  # noqa: E402
from haha.security.seqstore import SequenceStore  # noqa: E402
from haha.wire.ipv6 import parse_packet  # noqa: E402
from haha.wire.mh import decode_mh  # noqa: E402
from haha.wire.numbers import DEFAULT_PROFILE  # noqa: E402

PREFIX = IPv6Network("2001:db8:1::/64")
HAS = (IPv6Address("2001:db8:1::1"), IPv6Address("2001:db8:1::2"),
       IPv6Address("2001:db8:1::3"))
HOA_BASE = int(IPv6Address("2001:db8:1::1:0"))
COA_BASE = int(IPv6Address("2001:db8:21::1"))
PEER_SECRET = bytes(range(32))
GROUP_KEY = bytes(range(32, 64))
SLICE = 256  # packets between two turns of the timers, as the UDP transport's slices


CIPHER_CACHE = 4096  # --cipher-cache


#: The sequence stores' directories, removed when the process ends (a test runs this
#: benchmark dozens of times: each run used to leave one behind in /tmp).
_SCRATCH: list = []


def _scratch() -> str:
    d = tempfile.TemporaryDirectory(prefix="haha-bench-reg-")
    _SCRATCH.append(d)
    return d.name


def _home_agent(address, n_nodes):
    s = HomeAgentSettings(address=address, home_prefix=PREFIX,
                          peers=tuple(a for a in HAS if a != address), boot_wait=0,
                          max_binding_lifetime=3600)
    # A sequence store as the daemon keeps (its state directory), in a directory of its own.
    store = SequenceStore(os.path.join(_scratch(), "seq"))
    sadb = SecurityAssociationDatabase(cipher_cache=CIPHER_CACHE, sequence_store=store)
    for peer in s.peers:
        for spec in keys.derive_pair(PEER_SECRET, address, peer, HOME_AGENT):
            sadb.add(spec)
    # Sized as bench/scale.py sizes it (haha.lab.loadcluster.admission_lines).
    limiter = Admission(AdmissionSettings(
        admit_rate=20000, admit_burst=max(1024, n_nodes),
        unauthenticated_rate=20000, unauthenticated_burst=max(4000, n_nodes)))
    for peer in s.peers:
        limiter.pin(peer)
    return HomeAgentEndpoint(HomeAgent(s, random.Random(str(address))), DEFAULT_PROFILE,
                             SecurityPolicy(DEFAULT_PROFILE), sadb, limiter,
                             node_group=NodeGroup(GROUP_KEY, PREFIX, address))


class _Call:
    """One delayed call of :class:`_Clock`."""

    def __init__(self, when, f, args):
        self.when, self.f, self.args, self.live = when, f, args, True

    def active(self):
        return self.live

    def cancel(self):
        self.live = False

    def getTime(self):  # noqa: N802 - IDelayedCall
        return self.when


class _Clock:
    """The reactor's time and delayed calls, run by :meth:`Set.timers` as a reactor would."""

    def __init__(self, owner):
        self.owner = owner
        self.calls = []

    def seconds(self):
        return self.owner.now

    def callLater(self, delay, f, *args):  # noqa: N802 - IReactorTime
        c = _Call(self.owner.now + delay, f, args)
        self.calls.append(c)
        return c

    def run_due(self):
        due = [c for c in self.calls if c.live and c.when <= self.owner.now]
        self.calls = [c for c in self.calls if c.live and c.when > self.owner.now]
        for c in due:
            c.live = False
            c.f(*c.args)


class _Transport:
    """What the measured home agent sends: kept for the peers and the nodes."""

    def __init__(self):
        self.sent = []

    def send(self, packet, interface=None):
        self.sent.append(packet)


class _Backend:
    """The null backend's duties, without its bookkeeping."""

    def install(self, route):
        pass

    def remove(self, home_address):
        pass

    def proxy_nd_start(self, address, interface):
        pass

    proxy_nd_stop = proxy_nd_start


class Set:
    """Three home agents exchanging packets in memory; the first (measured) runs as a daemon
    does: behind the Twisted adapter (:class:`haha.protocol.HomeAgentAdapter`: effects carried
    out, timer re-armed, events published to the log and the latency metrics)."""

    def __init__(self, n_nodes):
        from haha.control.metrics import ServiceMetrics
        from haha.logging import logger
        from haha.protocol import HomeAgentAdapter

        self.now = 0.0
        self.eps = {a: _home_agent(a, n_nodes) for a in HAS}
        ep = self.eps[HAS[0]]
        self.clock = _Clock(self)
        self.transport = _Transport()
        self.adapter = HomeAgentAdapter(ep.machine, self.transport, self.clock, ep.profile,
                                        ep.policy, ep.sadb, ep.limiter, backend=_Backend(),
                                        node_group=ep.node_group,
                                        log=logger("haha.home-agent", HAS[0]))
        self.ha = self.adapter.endpoint
        self.eps[HAS[0]] = self.ha
        ServiceMetrics(lambda: self.adapter.counters, list,
                       {"role": "home-agent", "address": str(HAS[0])}).attach(self.adapter)
        self.cpu = 0.0
        self.to_nodes = []
        self.adapter.running = True
        self.adapter.call(self.ha.machine.start, self.now)
        for other in HAS[1:]:
            self.eps[other].start(self.now)
        for _ in range(5):  # HELLOs: every peer live
            self.now += 0.5
            self.timers()
            self.pump(measure=False)

    def timers(self):
        t0 = time.process_time()
        self.clock.run_due()
        self.cpu += time.process_time() - t0
        for ep in self.eps.values():
            if ep is self.ha:
                continue
            due = ep.next_timer()
            if due is not None and due <= self.now:
                ep.handle_timer(self.now)

    def _sent(self, ep):
        if ep is self.ha:
            sent, self.transport.sent = self.transport.sent, []
            return [(IPv6Address(d[24:40]), d) for d in sent]
        out = [(d.destination, d.data) for d in ep.datagrams_to_send()]
        ep.outbox.clear()
        return out

    def pump(self, measure=True):
        """Deliver what the home agents sent to each other until nothing is sent."""
        moved = True
        while moved:
            moved = False
            for ep in self.eps.values():
                for destination, data in self._sent(ep):
                    target = self.eps.get(destination)
                    if target is None:
                        self.to_nodes.append(data)
                        continue
                    moved = True
                    if target is self.ha:
                        t0 = time.process_time()
                        self.adapter.packet_received(data)
                        if measure:
                            self.cpu += time.process_time() - t0
                    else:
                        target.receive(data, self.now)

    def burst(self, packets):
        """The measured home agent's CPU seconds for ``packets`` (and the peers' answers)."""
        self.cpu = 0.0
        receive = self.adapter.packet_received
        for i in range(0, len(packets), SLICE):
            self.now += 0.001
            t0 = time.process_time()
            for data in packets[i:i + SLICE]:
                receive(data)
            self.cpu += time.process_time() - t0
            self.timers()
            self.pump()
        self.timers()
        self.pump()
        return self.cpu


class Nodes:
    """``n`` of haha's mobile nodes, each with its endpoint, ESP and node-group secret."""

    def __init__(self, n):
        self.eps = []
        for i in range(n):
            hoa = IPv6Address(HOA_BASE + i)
            m = MobileNode(MobileNodeSettings(home_address=hoa, home_prefix=PREFIX,
                                              home_agents=(HAS[0],), lifetime=3600),
                           random.Random(i))
            sadb = SecurityAssociationDatabase()
            ring = NodeKeyring(keys.derive_node_secret(GROUP_KEY, hoa), hoa, sadb)
            self.eps.append(MobileNodeEndpoint(m, DEFAULT_PROFILE, SecurityPolicy(DEFAULT_PROFILE),
                                               sadb, keyring=ring))

    def start(self, now):
        """Every node's first Binding Update."""
        out = []
        for i, ep in enumerate(self.eps):
            ep.start(now, care_of=IPv6Address(COA_BASE + i))
            out.extend(d.data for d in ep.datagrams_to_send())
            ep.outbox.clear()
        return out

    def retransmit(self, now):
        """Every node's retransmission (its timer), as its machine builds it."""
        out = []
        for ep in self.eps:
            due = ep.next_timer()
            ep.handle_timer(max(now, due))
            out.extend(d.data for d in ep.datagrams_to_send())
            ep.outbox.clear()
        return out

    def resend_with(self, now, same):
        """Every node's Binding Update once more, with the same sequence number (``same``)
        or the next one, whatever the machine's own retransmission does."""
        from haha.core.effects import Send
        from haha.wire.mh import BindingUpdate

        out = []
        for ep in self.eps:
            m = ep.machine
            m.sequence = m.sequence if same else (m.sequence + 1) & 0xFFFF
            bu = BindingUpdate(m.sequence, 0x8000 | 0x4000, 900, ())
            ep.apply([Send(bu, m.care_of, HAS[0], home_address=m.home_address,
                           protect=HAS[0])], now)
            out.extend(d.data for d in ep.datagrams_to_send())
            ep.outbox.clear()
        return out


def esp_and_decode(packets, n):
    """The baseline: parse, unprotect and decode each packet with the SAs already there."""
    ha = _home_agent(HAS[0], n)
    group = ha.node_group
    sadb = ha.sadb
    for i in range(n):
        group.ensure(sadb, IPv6Address(HOA_BASE + i))
    t0 = time.process_time()
    for data in packets:
        p = parse_packet(data)
        _, _, payload = sadb.unprotect(p.source, p.payload)
        decode_mh(payload, p.source, p.destination, DEFAULT_PROFILE)
    return time.process_time() - t0


def echo_baseline(packets):
    """CPU microseconds per datagram of a bare Twisted UDP echo (module docstring), and the
    datagrams answered."""
    from haha.lab.generator import bu_packet_size, drive_server, echo_main

    cpu, answers = drive_server(echo_main, (), [bytes(bu_packet_size())] * packets)
    answered = len(answers)
    if not answered:
        raise SystemExit("the echo server answered nothing")
    if cpu < 3 / os.sysconf("SC_CLK_TCK"):  # /proc counts CPU in ticks (10 ms)
        raise SystemExit(f"the echo used {cpu:.3f} s of CPU for {answered} datagrams: too few "
                         "to measure, raise --echo-datagrams")
    return 1e6 * cpu / answered, answered


def udp_send(count):
    """``(us per UdpTransport.send, us per bare sendto)`` to a socket on loopback."""
    import socket

    from twisted.internet import reactor

    from haha.io.udp import UdpTransport
    from haha.wire.ipv6 import build_packet

    sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sink.bind(("::1", 0))
    port = sink.getsockname()[1]
    transport = UdpTransport(reactor, peers={HAS[1]: ("::1", port)})
    transport.start(lambda data: None)
    packet = build_packet(HAS[0], HAS[1], 50, bytes(76))
    bare = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)

    def drain():
        while True:
            try:
                sink.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return

    def timed(send):
        best = None
        for _ in range(5):
            t0 = time.process_time()
            for _ in range(count):
                send()
            cpu = time.process_time() - t0
            best = cpu if best is None else min(best, cpu)
            drain()
        return 1e6 * best / count

    try:
        via = timed(lambda: transport.send(packet))
        direct = timed(lambda: bare.sendto(packet, ("::1", port)))
    finally:
        transport.stop()
        sink.close()
        bare.close()
    if transport.counters["sent"] != 5 * count:
        raise SystemExit(f"udp_send: {dict(transport.counters)}")
    return via, direct


def udp_receive(count):
    """``(us per datagram through UdpTransport's read, us per bare recvmsg)``: ``count``
    Binding Update-sized datagrams from ``count`` care-of addresses queued on the transport's
    socket, then one read of all of them (recvmsg, the input queue, the learned map, handed to
    a receiver that keeps nothing) against reading them with recvmsg alone; best of five."""
    import socket

    from haha.io.udp import UdpTransport
    from haha.wire.ipv6 import build_packet

    from twisted.internet import reactor as real

    class _Now:  # a reactor with no callLater: the input queue processes a read at once
        def listenUDP(self, port, protocol, interface, maxPacketSize):  # noqa: N802
            return real.listenUDP(port, protocol, interface=interface,
                                  maxPacketSize=maxPacketSize)

    transport = UdpTransport(_Now(), interface="::1", receive_buffer=64 << 20,
                             read_bytes=1 << 30)
    received = []
    transport.start(lambda data: received.append(None))
    port = transport.address[1]
    sock = transport._port.socket
    packets = [build_packet(IPv6Address(COA_BASE + i), HAS[0], 50, bytes(76))
               for i in range(count)]
    sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)

    def fill():
        for p in packets:
            sender.sendto(p, ("::1", port))
        time.sleep(0.1)

    def bare():
        while True:
            try:
                sock.recvmsg(8192, 64)
            except BlockingIOError:
                return

    best = {}
    try:
        for _ in range(5):
            for name, read in (("transport", lambda: transport._read(sock)), ("bare", bare)):
                fill()
                t0 = time.process_time()
                read()
                cpu = time.process_time() - t0
                best[name] = min(best.get(name, cpu), cpu)
    finally:
        transport.stop()
        sender.close()
    if len(received) != 5 * count or transport.counters["kernel_drops"]:
        raise SystemExit(f"udp_receive: {len(received)} of {5 * count} read, "
                         f"{dict(transport.counters)}")
    return 1e6 * best["transport"] / count, 1e6 * best["bare"] / count


def switch_requests(n, rounds=3):
    """``(us per switch request sealed to a node first seen here, us per the same request
    sealed again)``: a survivor's endpoint (as the measured home agent, node group key, cipher
    cache of ``--cipher-cache``) sends ``n`` Home Agent Switch Requests to ``n`` nodes it holds
    no SA with (each: the pair derived and installed, the request encoded, sealed, given its
    IPv6 header and type 2 routing header), then the same ``n`` again (the SAs in place, a
    context rebuilt from the kept keys where the cache evicted it); best of ``rounds``, a new
    endpoint each."""
    from haha.core.effects import Send
    from haha.wire.mh import HaSwitchRequest
    from haha.wire.options import IPADDR_HOME_AGENT, IpAddress

    survivor = HAS[1]
    message = HaSwitchRequest((IpAddress(IPADDR_HOME_AGENT, survivor, 128),))
    sends = [Send(message, survivor, IPv6Address(COA_BASE + i),
                  routing_address=IPv6Address(HOA_BASE + i), protect=IPv6Address(HOA_BASE + i))
             for i in range(n)]
    best = [None, None]
    for _ in range(rounds):
        ep = _home_agent(survivor, n)
        gc.collect()
        for k in range(2):
            t0 = time.process_time()
            for send in sends:
                ep.send_mh(send)
            cpu = time.process_time() - t0
            best[k] = cpu if best[k] is None else min(best[k], cpu)
        if len(ep.outbox) != 2 * n:
            raise SystemExit(f"switch_requests: {len(ep.outbox)} of {2 * n} sealed, "
                             f"{dict(ep.counters)}")
    return 1e6 * best[0] / n, 1e6 * best[1] / n


def baseline_switch_requests(tree, n):
    """:func:`switch_requests` of ``tree``'s haha (this file's code, a process of its own)."""
    import subprocess

    env = dict(os.environ, HAHA_BENCH_TREE=tree, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--switch-requests-only",
                          str(n), "--cipher-cache", str(CIPHER_CACHE)],
                         cwd=tree, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"--baseline-tree {tree}: switch requests failed: "
                         f"{out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def one_round(n):
    """``{case: HA CPU seconds}`` for one home agent set and ``n`` fresh nodes."""
    nodes = Nodes(n)
    first = nodes.start(0.0)
    s = Set(n)
    # The nodes' first BUs were built at 0; the home agents' clock is a little later.
    out = {"first": s.burst(first)}
    accepted = s.ha.machine.counters["bu-accepted"]
    if accepted != n:
        raise SystemExit(f"first: {accepted} of {n} accepted ({dict(s.ha.counters)})")
    out["same_number"] = s.burst(nodes.resend_with(s.now, same=True))
    if s.ha.machine.counters["bu-duplicate"] != n:
        raise SystemExit(f"same_number: {s.ha.machine.counters['bu-duplicate']} duplicates")
    out["new_number"] = s.burst(nodes.resend_with(s.now, same=False))
    if s.ha.machine.counters["bu-accepted"] != 2 * n:
        raise SystemExit(f"new_number: {s.ha.machine.counters['bu-accepted']} accepted")
    out["esp_and_decode"] = esp_and_decode(first, n)
    return out


def baseline_tree_round(tree, n):
    """``{case: us per Binding Update}`` of one round of ``tree``'s own bench/registration.py
    (another checkout of haha: its code, its benchmark) on ``n`` nodes, in a process of its
    own."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=tree)
    script = os.path.join(tree, "bench", "registration.py")
    with open(script) as f:  # a tree from before the switch_request case does not know it
        extra = ["--switch-requests", "0"] if "--switch-requests" in f.read() else []
    out = subprocess.run([sys.executable, script,
                          "--nodes", str(n), "--rounds", "1", "--echo-datagrams", "0",
                          "--send-datagrams", "0", "--cipher-cache", str(CIPHER_CACHE)] + extra,
                         cwd=tree, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"--baseline-tree {tree} failed: {out.stderr.strip()[-2000:]}")
    doc = json.loads(out.stdout)
    return {r["case"]: r["value"] for r in doc["results"]
            if r["metric"] == "ha_cpu_per_binding_update"}


def _log_to_devnull():
    """The daemon's text log (twistd --logfile), written to /dev/null: what the level lets
    through is formatted as in the daemon."""
    from twisted.logger import globalLogBeginner, textFileLogObserver

    devnull = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    globalLogBeginner.beginLoggingTo([textFileLogObserver(devnull)], redirectStandardIO=False)


#: ``--steps``: (name, what is timed). Top-level steps do not nest; ``of`` steps are parts of
#: the step they name.
STEPS = (
    ("parse", "haha.endpoint.parse_packet: the IPv6 header and its extension headers"),
    ("esp_open", "HomeAgentEndpoint.unprotect: SA lookup, node-group derivation on first "
                 "contact, cipher context (re)built, anti-replay, AES-GCM open"),
    ("decode", "haha.endpoint.decode_mh: the Mobility Header and its options"),
    ("policy", "SecurityPolicy.decide and the admission of the SA's peer"),
    ("core", "HomeAgent.receive: examine, registrar, cache store, duties, events made, sync "
             "publish (the BIU queued for each peer)"),
    ("send_mh", "HomeAgentEndpoint.send_mh: encode, ESP seal, IPv6 header (BA, BIUs, BIAs)"),
    ("carry_out", "HomeAgentAdapter._carry_out: the datagrams handed to the transport, the "
                  "events published (log and metrics), the duties (backend)"),
    ("timers", "the delayed calls: sync flush (BIU packing when not sent at once), timer "
               "re-arming"),
)
SUBSTEPS = (
    ("encode", "send_mh", "haha.endpoint.encode_mh"),
    ("esp_seal", "send_mh", "HomeAgentEndpoint.protect"),
    ("build", "send_mh", "haha.endpoint.build_packet"),
    ("events", "carry_out", "HomeAgentAdapter._publish: events to the log and the metrics"),
    ("sync_publish", "core", "Sync.publish: the binding queued or packed for each peer"),
    ("cache_store", "core", "BindingCache.store"),
)


class _Timed:
    """CPU seconds spent in wrapped calls while :attr:`on` (the measured home agent's
    calls only: the peers share the module functions)."""

    def __init__(self):
        self.on = False
        self.spent = {}
        self.restore = []

    def wrap(self, owner, attr, name):
        real = getattr(owner, attr)
        spent = self.spent
        spent[name] = 0.0
        clock = time.process_time

        def timed(*args, **kwargs):
            if not self.on:
                return real(*args, **kwargs)
            t0 = clock()
            try:
                return real(*args, **kwargs)
            finally:
                spent[name] += clock() - t0

        setattr(owner, attr, timed)
        self.restore.append((owner, attr, real))

    def undo(self):
        for owner, attr, real in reversed(self.restore):
            setattr(owner, attr, real)
        self.restore.clear()


def steps(n, case):
    """``{step: us per Binding Update}`` of the measured home agent for ``case``, with
    ``total`` (process time of its calls, the unit of the other cases), ``wrapped_total``
    (CPU time of its calls with the wrappers) and ``peers`` (the peers' time)."""
    import haha.endpoint as endpoint_module

    nodes = Nodes(n)
    packets = nodes.start(0.0)
    s = Set(n)
    if case != "first":
        s.burst(packets)
        packets = nodes.resend_with(s.now, same=case == "same_number")
    t = _Timed()
    ha, adapter = s.ha, s.adapter
    t.wrap(endpoint_module, "parse_packet", "parse")
    t.wrap(ha, "unprotect", "esp_open")
    t.wrap(endpoint_module, "decode_mh", "decode")
    t.wrap(ha.policy, "decide", "policy")
    t.wrap(ha, "_admit_peer", "policy")
    t.wrap(ha.machine, "receive", "core")
    t.wrap(ha, "send_mh", "send_mh")
    t.wrap(adapter, "_carry_out", "carry_out")
    t.wrap(s.clock, "run_due", "timers")
    t.wrap(endpoint_module, "encode_mh", "encode")
    t.wrap(ha, "protect", "esp_seal")
    t.wrap(endpoint_module, "build_packet", "build")
    t.wrap(adapter, "_publish", "events")
    t.wrap(ha.machine.sync, "publish", "sync_publish")
    t.wrap(ha.machine.cache, "store", "cache_store")
    peers = [ep for ep in s.eps.values() if ep is not s.ha]
    peer_time = [0.0]
    for ep in peers:
        real = ep.receive

        def timed_receive(data, now, real=real):
            t0 = time.process_time()
            try:
                return real(data, now)
            finally:
                peer_time[0] += time.process_time() - t0

        ep.receive = timed_receive
    wall = [0.0]
    real_receive = adapter.packet_received

    def measured(data):
        t.on = True
        t0 = time.process_time()
        try:
            return real_receive(data)
        finally:
            wall[0] += time.process_time() - t0
            t.on = False

    adapter.packet_received = measured
    real_run_due = s.clock.run_due

    def run_due():
        t.on = True
        t0 = time.process_time()
        try:
            return real_run_due()
        finally:
            wall[0] += time.process_time() - t0
            t.on = False

    s.clock.run_due = run_due
    try:
        total = s.burst(packets)
    finally:
        t.undo()
    out = {name: 1e6 * v / n for name, v in t.spent.items()}
    top = sum(out[name] for name, _ in STEPS)
    out["outside_steps"] = 1e6 * wall[0] / n - top
    out["wrapped_total"] = 1e6 * wall[0] / n
    out["total"] = 1e6 * total / n
    out["peers"] = 1e6 * peer_time[0] / n
    return {k: round(v, 2) for k, v in out.items()}


def main(argv=None):
    global CIPHER_CACHE
    _log_to_devnull()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer nodes and rounds")
    ap.add_argument("--nodes", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--cipher-cache", type=int, default=CIPHER_CACHE,
                    help="AES-GCM contexts the measured home agent keeps (default 4096)")
    ap.add_argument("--echo-datagrams", type=int, default=50000,
                    help="datagrams for the echo baseline (0: no echo baseline)")
    ap.add_argument("--send-datagrams", type=int, default=20000,
                    help="datagrams per run of the udp_send case (0: not measured)")
    ap.add_argument("--switch-requests", type=int, default=20000,
                    help="switch requests per run of the switch_request case (0: not "
                         "measured)")
    ap.add_argument("--switch-requests-only", type=int, metavar="N",
                    help=argparse.SUPPRESS)  # --baseline-tree's measurement of another tree
    ap.add_argument("--profile", choices=("first", "same_number", "new_number"),
                    help="print a cProfile of the home agent's calls for one case")
    ap.add_argument("--baseline-tree", metavar="DIR",
                    help="another checkout of haha (the code before a change): each round also "
                         "runs its bench/registration.py in a process of its own, and each case "
                         "reports its figure and the ratio to it")
    ap.add_argument("--steps", action="store_true",
                    help="print the home agent's time per step of its path, for each case")
    args = ap.parse_args(argv)
    CIPHER_CACHE = args.cipher_cache
    if args.switch_requests_only:
        print(json.dumps(switch_requests(args.switch_requests_only)))
        return
    n = args.nodes or (1000 if args.quick else 5000)
    rounds = args.rounds or (3 if args.quick else 5)
    if args.steps:
        print(json.dumps({"bench": "registration-steps", "nodes": n, "cipher_cache": CIPHER_CACHE,
                          "loadavg": os.getloadavg()[0], "unit": "us per Binding Update",
                          "steps": {name: what for name, what in STEPS},
                          "substeps": {name: f"part of {of}: {what}"
                                       for name, of, what in SUBSTEPS},
                          "cases": {case: steps(n, case)
                                    for case in ("first", "new_number", "same_number")}},
                         indent=1))
        return
    if args.profile:
        nodes = Nodes(n)
        first = nodes.start(0.0)
        s = Set(n)
        if args.profile != "first":
            s.burst(first)
            first = nodes.resend_with(s.now, same=args.profile == "same_number")
        prof = cProfile.Profile()
        prof.enable()
        s.burst(first)
        prof.disable()
        st = pstats.Stats(prof, stream=sys.stderr).sort_stats(os.environ.get("HAHA_PROF_SORT", "tottime"))
        st.print_stats(int(os.environ.get("HAHA_PROF_N", "40")))
        if os.environ.get("HAHA_PROF_CALLERS"):
            st.print_callers(os.environ["HAHA_PROF_CALLERS"])
        return
    tree = None
    if args.baseline_tree:
        tree = os.path.abspath(args.baseline_tree)
        if not (os.path.isfile(os.path.join(tree, "bench", "registration.py"))
                and os.path.isdir(os.path.join(tree, "haha"))):
            raise SystemExit(f"--baseline-tree {tree}: no bench/registration.py and haha/ there")
    best = {}
    tree_best = {}
    for _ in range(rounds):
        gc.collect()
        for case, cpu in one_round(n).items():
            best[case] = min(best.get(case, cpu), cpu)
        if tree is not None:  # alternating with this tree's rounds: the same load for both
            for case, v in baseline_tree_round(tree, n).items():
                tree_best[case] = min(tree_best.get(case, v), v)
    us = {case: 1e6 * cpu / n for case, cpu in best.items()}
    base = us.pop("esp_and_decode")
    echo = None
    if args.echo_datagrams:
        echo = min(echo_baseline(args.echo_datagrams)[0] for _ in range(2))
    results = []
    for case, v in us.items():
        row = {"case": case, "metric": "ha_cpu_per_binding_update", "unit": "us",
               "value": round(v, 1), "baselines": {"esp_and_decode": round(base, 1)},
               "ratio": round(v / base, 2), "updates": n}
        if echo is not None:
            row["baselines"]["echo_per_datagram"] = round(echo, 2)
            row["ratio_to_echo"] = round(v / echo, 1)
        if case in tree_best:
            row["baselines"]["baseline_tree"] = tree_best[case]
            row["ratio_to_baseline_tree"] = round(v / tree_best[case], 3)
        results.append(row)
    if args.send_datagrams:
        via, direct = udp_send(args.send_datagrams)
        results.append({"case": "udp_send", "metric": "cpu_per_datagram_sent", "unit": "us",
                        "value": round(via, 2), "baselines": {"bare_sendto": round(direct, 2)},
                        "ratio": round(via / direct, 2), "datagrams": args.send_datagrams})
        via, direct = udp_receive(args.send_datagrams)
        results.append({"case": "udp_receive", "metric": "cpu_per_datagram_received",
                        "unit": "us", "value": round(via, 2),
                        "baselines": {"bare_recvmsg": round(direct, 2)},
                        "ratio": round(via / direct, 2), "datagrams": args.send_datagrams})
    if args.switch_requests:
        first, again = switch_requests(args.switch_requests)
        row = {"case": "switch_request", "metric": "cpu_per_switch_request_sealed",
               "unit": "us", "value": round(first, 1),
               "baselines": {"sealed_again": round(again, 1)},
               "ratio": round(first / again, 2), "requests": args.switch_requests}
        if tree is not None:
            before = round(baseline_switch_requests(tree, args.switch_requests)[0], 1)
            row["baselines"]["baseline_tree"] = before  # as the other cases' (rounded)
            row["ratio_to_baseline_tree"] = round(first / before, 3)
        results.append(row)
    doc = {"bench": "registration", "cipher_cache": CIPHER_CACHE,
           "loadavg": os.getloadavg()[0], "results": results}
    if tree is not None:
        doc["baseline_tree"] = tree
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
