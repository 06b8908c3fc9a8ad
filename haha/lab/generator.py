"""The load generator's processes: thousands of haha's own mobile nodes (:mod:`haha.lab.load`).

:class:`Generator` starts ``workers`` processes (multiprocessing, ``spawn``). Each runs a Twisted
reactor with its share of the nodes: per node one :class:`haha.core.mobilenode.MobileNode`, its
own :class:`haha.protocol.MobileNodeAdapter` (haha's codec, policy and user-space ESP) and SA
database filled on demand by :class:`haha.security.keyring.NodeKeyring` (the daemon's key
derivation), all behind one UDP socket: :class:`SharedUdp` hands each arriving packet to the
node whose care-of address is its destination. The parent starts every node at one instant (a
burst) and asks the workers for reports: how many nodes are registered and with which home
agent, the latency of each first registration, the CPU the worker used (so a run shows whether
the generator, rather than the home agents, was the bottleneck).

What a worker adds around the nodes is kept lean, so that the generator measures the home
agents rather than itself (``bench/nodecost.py`` measures a worker's CPU per node and step):
the nodes' timers share one :class:`haha.lab.timerwheel.TimerWheel` (one reactor call for all,
instead of a ``DelayedCall`` per node in the reactor's heap); the shared socket looks at a
packet's destination octets only, and sends without address objects or queues; the nodes
retransmit and refresh with jitter (:data:`RETRANSMIT_JITTER`), so that nodes started together
do not retransmit together; the counts the parent asks for every few tenths of a second
(registered nodes, per home agent, per state) are kept from the nodes' state events instead of
walking every node (keyed by the home agents' integers), and the home agents each event
names are made text only in a report; each node's SAs with every configured home agent are
derived, their cipher contexts built, before the burst (on first use they would be built in
the middle of the take-over a benchmark times).
With :data:`PROFILE_ENV` set, each worker writes a cProfile of each phase.

Collections. A worker holds 50,000 nodes' machines, SAs and timers: millions of objects the
garbage collector tracks. Left alone, its full collections took 4 to 5.5 s each on this
2-core machine at 100,000 nodes (two of them in the middle of a take-over, while the
survivors' switch requests waited in the worker's socket), so the worker freezes its heap every
second as the daemon does (:class:`haha.gcfreeze.GcFreezer`) and runs the daemon's stall probe
(:class:`haha.stallprobe.StallProbe`); each report carries the probe's figures, collections
included (``reactor``), and the parent's merges each worker's longest collection and those of
50 ms or more (``gc_longest_ms``, ``gc_pauses_over_50ms``).

The echo baseline: :func:`echo_main` is a bare Twisted UDP echo; :meth:`Generator.echo` makes
the same worker processes send it datagrams of a Binding Update's size
(:func:`bu_packet_size`), so the home agents' cost per packet can be compared with the cheapest
thing a Twisted process can do with a datagram.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import random
import time
from collections import Counter
from functools import partial
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv6Address, IPv6Network
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event as ProcessEvent
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import ILogObserver, LogEvent
from zope.interface import implementer

from ..core.effects import Event
from ..core.events import EventName
from ..interfaces import IMobilityTransport
from ..logging import logger
from ..wire.addresses import address_int
from .cluster import HOME_PREFIX
from .loadnodes import BINDING_LIFETIME, care_of_prefix, home_address, node_secret, split

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.udp import Port

    from ..gcfreeze import GcFreezer
    from ..stallprobe import StallProbe

#: The generated nodes' ``retransmit_jitter`` and ``refresh_jitter``
#: (:class:`haha.core.settings.MobileNodeSettings`): started at one instant, they would otherwise
#: all retransmit at the same instants.
RETRANSMIT_JITTER = 0.25
REFRESH_JITTER = 0.1

#: Where a worker's shared socket sends the packets of a home agent: ``(host, UDP port)``.
Endpoint = tuple[str, int]


class WorkerSpec(TypedDict):
    """What the parent tells a worker process to build (pickled to it at the start)."""

    index: int  # the worker's number: its care-of prefix (haha.lab.loadnodes)
    first: int  # its nodes are first .. first + count - 1
    count: int
    port: int  # its UDP port (the home agents route its care-of prefix there)
    home_agents: list[tuple[str, int]]  # (address, UDP port), the first preferred
    secret: bytes  # the run secret the node secrets derive from
    lifetime: int  # the Binding Updates' lifetime, seconds


class WorkerReport(TypedDict):
    """One worker's :meth:`_Worker.report`."""

    nodes: int
    registered: int
    by_home_agent: dict[str, int]  # registered nodes per home agent address
    states: dict[str, int]  # nodes per mobile-node state
    first_registrations: int
    cpu_s: float  # the worker process's CPU time so far
    transport: dict[str, int]  # the shared socket's counters
    core: dict[str, int]  # the nodes' core counters summed (with latencies only)
    latencies: NotRequired[list[float]]  # seconds to each first registration
    #: The worker's reactor: the stall probe's ``report()`` (its garbage collections among
    #: them) and the objects frozen out of the collector (module docstring, "Collections").
    reactor: dict[str, Any]


class GeneratorReport(TypedDict):
    """:meth:`Generator.report`: the workers' reports merged, ``cpu_s`` per worker."""

    nodes: int
    registered: int
    first_registrations: int
    by_home_agent: Counter[str]
    states: Counter[str]
    transport: Counter[str]
    core: Counter[str]
    cpu_s: list[float]
    latencies: NotRequired[list[float]]  # sorted
    gc_longest_ms: list[float]  # per worker: its longest garbage collection so far
    gc_pauses_over_50ms: list[int]  # per worker: its collections of 50 ms or more so far


class PhaseReport(TypedDict):
    """:meth:`_Worker.phase`: seconds from the phase's start until each registered node was
    told by its home agent (``told``: a switch request from it, or a registration with it,
    whichever came first) and until it registered with it (``registered``); nodes registered
    with a home agent that told them nothing since the mark (``untold``), nodes registered
    with the same home agent at the mark and at the end, told nothing (``unmoved``: the phase
    did not concern them), and nodes not registered (``unregistered``)."""

    told: list[float]
    registered: list[float]
    untold: int
    unregistered: int
    unmoved: int


class EchoResult(TypedDict):
    """What sending datagrams to the echo server took: ``packets`` answered, ``sent`` in all
    (with the ones sent again), ``seconds`` from the first to the last answer."""

    packets: int
    sent: int
    seconds: float


def default_workers(cpus: int | None = None) -> int:
    """How many generator processes to start by default on a machine with ``cpus`` cores (the
    machine's own when None): several where the cores allow, never more than there are cores,
    and at most half of them from four cores up (the home agents need the rest): 1 core 1, 2
    cores 2, 4 cores 2, 8 cores 4."""
    n = cpus if cpus is not None else (os.cpu_count() or 1)
    return max(1, min(n, max(2, n // 2)))


# -- the worker processes -----------------------------------------------------------------------


#: Receive buffer asked per node of a worker (octets): the kernel books about 830 octets per
#: signalling packet queued on loopback (twice the size asked is the budget), so this holds
#: about two packets per node, every node's switch request and its Binding Acknowledgement
#: arriving while the worker is busy (a take-over tells every node within seconds).
RECEIVE_BUFFER_PER_NODE = 1024


def receive_buffer_for(nodes: int) -> int:
    """The receive buffer of a worker's shared socket for ``nodes`` nodes: at least 8 MiB."""
    return max(8 << 20, nodes * RECEIVE_BUFFER_PER_NODE)


class SharedUdp:
    """One UDP socket for many nodes' adapters: each node gets a :meth:`view` (an
    ``IMobilityTransport`` of its own); arriving packets go to the node whose care-of address
    is the fixed-header destination, the rest are counted (``unknown_destination``).

    Lean on purpose (the generator must not be the load): a packet is looked at only as far
    as the dispatch needs, its destination's 16 octets (the receiving node parses it), and a
    packet sent goes to the UDP endpoint of its destination's 16 octets (the home agents),
    with no address object, queue or copy on either path. What :class:`haha.io.udp.UdpTransport`
    adds for a daemon (peers first, superseding, learning, prefixes) has no use here: every
    datagram is a home agent's answer to one node.
    """

    def __init__(self, reactor: IReactorUDP, port: int,
                 peers: Mapping[IPv6Address, Endpoint], nodes: int = 0) -> None:
        self.reactor = reactor
        self.port_number = port
        #: Where packets to each home agent go, by its address's 16 octets.
        self.endpoints: dict[bytes, Endpoint] = {a.packed: (str(h), int(p))
                                                 for a, (h, p) in peers.items()}
        #: The receive buffer asked (:func:`receive_buffer_for` the worker's nodes).
        self.receive_buffer = receive_buffer_for(nodes)
        self.receivers: dict[bytes, Callable[[bytes], object]] = {}
        self.counters: Counter[str] = Counter()
        self.port: Any = None  # twisted.internet.udp.Port once started
        self._sendto: Callable[[bytes, Endpoint], object] | None = None
        #: What the kernel granted of each buffer once started (haha.io.sockbuf.apply_buffers).
        self.buffers: dict[str, int | None] = {}

    def start(self) -> None:
        """Listen (a receive buffer sized for the nodes, :func:`receive_buffer_for`, and 8 MiB
        to send: a burst answers thousands of nodes at once)."""
        from ..io.sockbuf import apply_buffers

        shared = self

        class _Protocol(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
                shared._received(data)

        self.port = self.reactor.listenUDP(self.port_number, _Protocol(),
                                           interface="127.0.0.1", maxPacketSize=8192)
        handle = self.port.getHandle()
        self.buffers = apply_buffers(handle, logger("haha.lab.load"), "generator",
                                     self.receive_buffer, 8 << 20)
        self._sendto = handle.sendto

    def stop(self) -> Deferred[None] | None:
        """Stop listening (a Deferred while the port closes)."""
        self._sendto = None
        if self.port is not None:
            port, self.port = self.port, None
            stopped: Deferred[None] | None = port.stopListening()
            return stopped
        return None

    def view(self, care_of: IPv6Address) -> _NodeView:
        """The transport of the node at ``care_of``."""
        return _NodeView(self, care_of)

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel has dropped on the socket for want of room in its receive
        buffer (the ``drops`` of its line in ``/proc/net/udp``, found by the socket's inode:
        nothing to count per packet); None before :meth:`start` or where that is unknown."""
        if self.port is None:
            return None
        try:
            inode = str(os.fstat(self.port.fileno()).st_ino)
            with open("/proc/net/udp") as table:
                for line in table:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] == inode:
                        return int(fields[12])
        except (OSError, ValueError):
            return None
        return None

    def drain(self, budget: float = 0.05) -> bool:
        """Read and deliver the datagrams waiting in the socket, for at most ``budget``
        seconds: True once it is empty (or not listening), False when the time ran out first
        (the nodes' timers wait for it, :mod:`haha.lab.timerwheel`)."""
        port = self.port
        if port is None:
            return True
        recv = port.getHandle().recv
        received = self._received
        clock = time.perf_counter
        deadline = clock() + budget
        while True:
            try:
                data = recv(8192)
            except BlockingIOError:
                return True
            except OSError:  # nothing to read after all; the reactor's own reading goes on
                self.counters["drain_errors"] += 1
                return True
            received(data)
            if clock() >= deadline:
                return False

    def _received(self, data: bytes) -> None:
        receiver = self.receivers.get(data[24:40])
        if receiver is None:
            self.counters["unknown_destination"] += 1
            return
        self.counters["received"] += 1
        receiver(data)

    def send(self, packet: bytes, interface: str | None = None) -> None:
        """Send one IPv6 packet to its destination's home agent (errors counted, never
        raised: the node retransmits)."""
        endpoint = self.endpoints.get(packet[24:40])
        if endpoint is None:
            self.counters["no_route"] += 1
            return
        sendto = self._sendto
        if sendto is None:
            self.counters["send_not_started"] += 1
            return
        try:
            sendto(packet, endpoint)
        except OSError:  # a full send buffer (BlockingIOError) among them: lost, retransmitted
            self.counters["send_errors"] += 1
        else:
            self.counters["sent"] += 1


@implementer(IMobilityTransport)
class _NodeView:
    """One node's share of a :class:`SharedUdp`: what it receives is what arrives for its
    care-of address; what it sends goes out of the shared socket."""

    def __init__(self, shared: SharedUdp, care_of: IPv6Address) -> None:
        self.shared = shared
        self.key = care_of.packed
        self.counters = shared.counters
        self._send = shared.send

    def start(self, receiver: Callable[[bytes], object]) -> None:
        self.shared.receivers[self.key] = receiver

    def send(self, packet: bytes, interface: str | None = None) -> None:
        self._send(packet)

    def stop(self) -> None:
        self.shared.receivers.pop(self.key, None)


# What _Worker._event looks for, read once (an enum member read from its class costs a tenth
# of a microsecond; the nodes raise two events a step).
_STATE = EventName.STATE
_REGISTERED = EventName.REGISTERED
_SWITCH_RECEIVED = EventName.SWITCH_RECEIVED
_REGISTERED_STATE = "registered"


def _key(home_agent: IPv6Address | None) -> int | None:
    """What a worker counts a home agent by: its address's integer (hashed in C; an
    ``IPv6Address`` hashes in Python, twice per count)."""
    return None if home_agent is None else address_int(home_agent)


def _text(key: object) -> str:
    """A :func:`_key` as the reports write it: the address's text (``"None"`` for None)."""
    return str(IPv6Address(key)) if type(key) is int else str(key)


class _Worker:
    """What runs in one generator process (:func:`_worker_main`)."""

    def __init__(self, reactor: IReactorTime, spec: WorkerSpec) -> None:
        from ..core.mobilenode import MobileNode
        from ..core.settings import MobileNodeSettings
        from ..protocol import MobileNodeAdapter
        from ..security.keyring import NodeKeyring
        from ..security.policy import SecurityPolicy
        from ..security.sadb import SecurityAssociationDatabase
        from ..wire.numbers import DEFAULT_PROFILE

        from .timerwheel import TimerWheel

        self.reactor = reactor
        #: Installed by :meth:`watch` (the worker process; tests build workers without).
        self.probe: "StallProbe | None" = None
        self.freezer: "GcFreezer | None" = None
        #: The nodes' timers: one reactor call for all of them (:mod:`haha.lab.timerwheel`).
        self.clock = TimerWheel(reactor)
        self.index = spec["index"]
        self.first = spec["first"]
        peers = {IPv6Address(a): ("127.0.0.1", p) for a, p in spec["home_agents"]}
        self.shared = SharedUdp(IReactorUDP(reactor), spec["port"], peers, spec["count"])
        # The nodes' timers run only once the socket holds nothing more for them (a node's
        # answer read before its retransmission is due: haha.lab.timerwheel).
        self.clock.read_first = self.shared.drain
        self.has = tuple(peers)
        policy = SecurityPolicy(DEFAULT_PROFILE, "esp", False)
        prefix = care_of_prefix(self.index)
        self.nodes: list[tuple[int, IPv6Address, MobileNode, MobileNodeAdapter]] = []
        self.started: dict[int, float] = {}
        self.registered: dict[int, float] = {}  # node: seconds to its first registration
        # What the nodes share is built once: the parsed home prefix, one random source for
        # their first sequence numbers, the quiet logger.
        home_prefix = IPv6Network(HOME_PREFIX)
        rng = random.Random()
        log = logger("haha.mobile-node")
        base = int(prefix.network_address) + 1
        # Since the last mark() (a phase such as a take-over): per node, in order, what it was
        # told and where it registered, as (wall-clock time, "told" or "registered", home
        # agent): "told" is a switch request naming that home agent (or sent by it when it
        # names none).
        # The home agents are kept as the events carry them (made text only in a report).
        self.mark_at: float | None = None
        self.since_mark: dict[int, list[tuple[float, str, object]]] = {}
        self.at_mark: dict[int, object] = {}
        # Kept up to date from the nodes' state events, so that the parent's frequent
        # questions (how many registered, with whom) cost nothing per node: nodes per state,
        # registered nodes per home agent, and the home agent each registered node counts for.
        self.states: Counter[str] = Counter({"idle": spec["count"]})
        self.by_home_agent: Counter[object] = Counter()
        self.counted: dict[int, object] = {}
        for k in range(spec["count"]):
            i = spec["first"] + k
            hoa = home_address(i)
            care_of = IPv6Address(base + k)
            # Every node starts at one instant: jittered retransmissions (and refreshes) keep
            # them from retransmitting in lockstep (docs/configuration.md).
            settings = MobileNodeSettings(home_address=hoa, home_prefix=home_prefix,
                                          home_agents=self.has, lifetime=spec["lifetime"],
                                          retransmit_jitter=RETRANSMIT_JITTER,
                                          refresh_jitter=REFRESH_JITTER)
            machine = MobileNode(settings, rng)
            sadb = SecurityAssociationDatabase()
            secret = node_secret(spec["secret"], hoa)
            keyring = NodeKeyring(secret, hoa, sadb)
            # A node has its SAs with every configured home agent before it registers, as
            # `twistd haha-mn` derives them at start (mobile_node_security): derived now, so
            # that the burst and a take-over measure registering, not the nodes' key
            # derivation; their cipher contexts too (built otherwise on each SA's first
            # packet, twice in a node's answer to a switch request: about 4 us each, for
            # about 2.7 KB each held from the start, 16 KB per node).
            for ha in self.has:
                keyring.ensure(ha, prime=True)
            adapter = MobileNodeAdapter(machine, self.shared.view(care_of), self.clock,
                                        DEFAULT_PROFILE, policy, sadb, None, None, keyring,
                                        log=log)
            adapter.observers.append(partial(self._event, i))
            self.nodes.append((i, care_of, machine, adapter))

    def _event(self, i: int, event: Event) -> None:
        name = event.name
        if name == _STATE:
            fields = event.fields
            old, new = fields["old"], fields["new"]
            states = self.states
            states[old] -= 1
            states[new] += 1
            if old == _REGISTERED_STATE:
                self.by_home_agent[self.counted.pop(i, None)] -= 1
            elif new == _REGISTERED_STATE:
                ha = self.counted[i] = _key(self.nodes[i - self.first][2].home_agent)
                self.by_home_agent[ha] += 1
        elif name == _REGISTERED:
            registered = self.registered
            if i not in registered:
                registered[i] = self.reactor.seconds() - self.started[i]
            if self.mark_at is not None:
                self.since_mark.setdefault(i, []).append(
                    (time.time(), "registered", event.fields.get("home_agent")))
        elif name == _SWITCH_RECEIVED and self.mark_at is not None:
            fields = event.fields
            named = fields.get("desired") or fields.get("src")
            self.since_mark.setdefault(i, []).append((time.time(), "told", named))

    def mark(self) -> dict[str, float]:
        """Start recording what each node is told and where it registers (a phase begins);
        ``{"mark": wall-clock time}``."""
        from ..core.mobilenode import REGISTERED

        self.mark_at = time.time()
        self.since_mark = {}
        # Where each node was registered at the mark: one still there at the end was not
        # moved by the phase (nothing to tell it).
        self.at_mark = {i: m.home_agent if m.state == REGISTERED else None
                        for i, _, m, _ in self.nodes}
        return {"mark": self.mark_at}

    def phase(self, since: float) -> PhaseReport:
        """Per node registered now, when (wall-clock seconds after ``since``) it was first told
        by the home agent it is registered with and when it first registered with it since
        the last :meth:`mark` (:class:`PhaseReport`)."""
        from ..core.mobilenode import REGISTERED

        told: list[float] = []
        moved: list[float] = []
        untold = unregistered = unmoved = 0
        at_mark = self.at_mark
        for i, _, machine, _ in self.nodes:
            if machine.state != REGISTERED:
                unregistered += 1
                continue
            final = machine.home_agent
            t_told = t_moved = None
            for t, kind, ha in self.since_mark.get(i, ()):
                if ha != final:
                    continue
                if t_told is None:
                    t_told = t  # told by it, or registered with it first: told either way
                if kind == "registered" and t_moved is None:
                    t_moved = t
            if t_told is None:
                if at_mark.get(i) == final:
                    unmoved += 1  # registered there before the phase: nothing to tell
                else:
                    untold += 1
            else:
                told.append(t_told - since)
            if t_moved is not None:
                moved.append(t_moved - since)
        return {"told": told, "registered": moved, "untold": untold,
                "unregistered": unregistered, "unmoved": unmoved}

    def go(self) -> dict[str, int]:
        """Start every node now; ``{"started": count}``."""
        self.shared.start()
        seconds = self.reactor.seconds
        for i, care_of, machine, adapter in self.nodes:
            adapter.start_transport()
            adapter.running = True
            self.started[i] = now = seconds()
            adapter.call(machine.start, now, care_of=care_of)
        return {"started": len(self.nodes)}

    def walk(self) -> tuple[Counter[str], Counter[object]]:
        """Nodes per state and registered nodes per home agent, read from every machine."""
        from ..core.mobilenode import REGISTERED

        by_ha: Counter[object] = Counter()
        states: Counter[str] = Counter()
        for _, _, machine, _ in self.nodes:
            states[machine.state] += 1
            if machine.state == REGISTERED:
                by_ha[_key(machine.home_agent)] += 1
        return states, by_ha

    def report(self, latencies: bool = False) -> WorkerReport:
        """This worker's figures: without ``latencies`` from the counts the nodes' state
        events keep (the parent asks often), with them (once a phase) from a walk over every
        node, which adds the nodes' core counters and each first registration's latency."""
        from ..core.mobilenode import REGISTERED

        core: Counter[str] = Counter()
        if latencies:
            states, by_ha = self.walk()
            for _, _, machine, _ in self.nodes:
                core.update(machine.counters)
        else:
            states = +self.states
            by_ha = +self.by_home_agent
        t = os.times()
        transport = dict(self.shared.counters)
        drops = self.shared.kernel_drops()
        if drops is not None:
            transport["kernel_drops"] = drops
        transport["timers_waited_for_input"] = self.clock.counters["waited-for-input"]
        out: WorkerReport = {
            "nodes": len(self.nodes), "registered": states.get(REGISTERED, 0),
            "by_home_agent": {_text(k): v for k, v in by_ha.items()}, "states": dict(states),
            "first_registrations": len(self.registered),
            "cpu_s": t.user + t.system, "transport": transport,
            "core": dict(core), "reactor": self.reactor_report()}
        if latencies:
            out["latencies"] = list(self.registered.values())
        return out

    def reactor_report(self) -> dict[str, Any]:
        """The stall probe's report and the objects frozen (empty before :meth:`watch`)."""
        if self.probe is None:
            return {}
        out = self.probe.report()
        out["gc_frozen"] = gc.get_freeze_count()
        return out

    def watch(self, reactor: IReactorTime) -> None:
        """Keep this process's garbage collections small and timed (module docstring,
        "Collections"): freeze the heap every second, as the daemon does, and run a stall
        probe, whose report (collections included) :meth:`report` carries."""
        from ..gcfreeze import GcFreezer
        from ..stallprobe import StallProbe

        self.freezer = GcFreezer(clock=reactor)
        self.freezer.startService()
        self.probe = StallProbe(reactor)
        self.probe.startService()

    def homes(self) -> dict[str, str | None]:
        """``{home address: registered home agent or None}`` (None while not registered)."""
        from ..core.mobilenode import REGISTERED

        # Asked every half second while the parent waits for consistency: the home
        # addresses' text is made once per worker, each home agent's once per call.
        texts = self.__dict__.get("_home_texts")
        if texts is None or len(texts) != len(self.nodes):
            texts = self._home_texts = [str(m.settings.home_address) for _, _, m, _ in self.nodes]
        names: dict[object, str] = {}
        out: dict[str, str | None] = {}
        for text, (_, _, machine, _) in zip(texts, self.nodes):
            if machine.state == REGISTERED:
                ha = machine.home_agent
                name = names.get(ha)
                if name is None:
                    name = names[ha] = str(ha)
                out[text] = name
            else:
                out[text] = None
        return out


class _EchoClient:
    """Sends ``count`` datagrams of ``size`` octets to an echo server, ``window`` outstanding
    at a time (a lost one is sent again after ``timeout``), and reports how long it took."""

    def __init__(self, reactor: IReactorTime, endpoint: Sequence[str | int], count: int,
                 size: int, window: int = 256, timeout: float = 0.5) -> None:
        from twisted.internet.protocol import DatagramProtocol

        client = self

        class _P(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
                client._answered(data)

        self.reactor = reactor
        host, port = endpoint
        self.endpoint = (str(host), int(port))
        self.count = count
        self.size = size
        self.window = window
        self.timeout = timeout
        self.outstanding: dict[int, float] = {}  # datagram number: when last sent
        self.next = 0
        self.answers = 0
        self.sent = 0
        # getHandle and write are udp.Port's, beyond IListeningPort
        self.port = cast("Port", IReactorUDP(reactor).listenUDP(0, _P(), interface="127.0.0.1",
                                                                  maxPacketSize=8192))
        from ..io.sockbuf import apply_buffers
        from ..logging import logger
        apply_buffers(self.port.getHandle(), logger("haha.lab.load"), "echo client",
                      8 << 20, 8 << 20)
        from twisted.internet import defer
        self.done: Deferred[EchoResult] = defer.Deferred()
        self._check: IDelayedCall | None = None
        self.t0 = reactor.seconds()
        self._check = reactor.callLater(timeout, self._resend)
        self._fill()

    def _send(self, n: int) -> None:
        self.outstanding[n] = self.reactor.seconds()
        self.sent += 1
        self.port.write(n.to_bytes(4, "big") + bytes(self.size - 4), self.endpoint)

    def _fill(self) -> None:
        while len(self.outstanding) < self.window and self.next < self.count:
            self._send(self.next)
            self.next += 1
        if not self.outstanding and self.next >= self.count and not self.done.called:
            if self._check is not None and self._check.active():
                self._check.cancel()
            self.port.stopListening()
            self.done.callback({"packets": self.count, "sent": self.sent,
                                "seconds": self.reactor.seconds() - self.t0})

    def _answered(self, data: bytes) -> None:
        if self.outstanding.pop(int.from_bytes(data[:4], "big"), None) is not None:
            self.answers += 1
            self._fill()

    def _resend(self) -> None:
        if self.done.called:
            return
        now = self.reactor.seconds()
        for n, sent in list(self.outstanding.items()):
            if now - sent >= self.timeout:
                self._send(n)
        self._check = self.reactor.callLater(self.timeout / 2, self._resend)


@implementer(ILogObserver)
class _Discard:
    """Twisted's global log observer in a worker: nothing (haha's own logging reports
    errors)."""

    def __call__(self, event: LogEvent) -> None:
        pass


#: With this variable naming a directory, each worker profiles itself (cProfile) and writes
#: ``burst-W.prof`` (from ``go`` to the first ``mark``) and ``end-W.prof`` (from the last mark to
#: its stop: a kill and a restart) there, ``W`` its index; read them with :mod:`pstats`.
PROFILE_ENV = "HAHA_LAB_PROFILE"


class _PhaseProfile:
    """A worker's optional profile per phase (:data:`PROFILE_ENV`): nothing without a
    directory."""

    def __init__(self, directory: str | None, index: int) -> None:
        self.directory = directory
        self.index = index
        self.profile: Any = None

    def start(self) -> None:
        if self.directory:
            import cProfile

            self.profile = cProfile.Profile()
            self.profile.enable()

    def dump(self, phase: str) -> None:
        if self.profile is not None and self.directory:
            self.profile.disable()
            self.profile.dump_stats(os.path.join(self.directory, f"{phase}-{self.index}.prof"))
            self.profile = None


def _worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """A generator process: build the nodes, then obey the parent's commands on ``conn``."""
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall
    from twisted.logger import globalLogBeginner

    from ..logging import configure

    globalLogBeginner.beginLoggingTo([_Discard()], redirectStandardIO=False)
    configure("error")
    parent = os.getppid()
    worker = _Worker(reactor, spec)
    worker.watch(reactor)
    profiler = _PhaseProfile(os.environ.get(PROFILE_ENV), spec["index"])

    def answer(result: object) -> None:
        conn.send(("ok", result))

    def poll() -> None:
        try:
            waiting: bool | None = conn.poll()
        except (EOFError, OSError):
            waiting = None
        if waiting is None or not waiting and os.getppid() != parent:
            reactor.stop()  # the parent is gone: nobody will ask again
            return
        while conn.poll():
            try:
                cmd: str
                args: dict[str, Any]  # the command's keyword arguments, as the parent sent them
                cmd, args = conn.recv()
            except (EOFError, OSError):
                reactor.stop()
                return
            if cmd == "go":
                profiler.start()
                answer(worker.go())
            elif cmd == "report":
                answer(worker.report(**args))
            elif cmd == "homes":
                answer(worker.homes())
            elif cmd == "mark":
                profiler.dump("burst")
                profiler.start()
                answer(worker.mark())
            elif cmd == "phase":
                answer(worker.phase(**args))
            elif cmd == "echo":
                _EchoClient(reactor, **args).done.addCallback(answer)
            elif cmd == "stop":
                answer({})
                reactor.stop()
                return

    conn.send(("ok", {"ready": len(worker.nodes)}))
    LoopingCall(poll).start(0.01)
    reactor.run()
    profiler.dump("end")


def echo_main(port: int, ready: ProcessEvent) -> None:
    """A bare Twisted UDP echo on 127.0.0.1:``port``: the baseline of the benchmark."""
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    from ..io.sockbuf import apply_buffers
    from ..logging import logger

    class Echo(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
            if self.transport is not None:  # always, once listening
                self.transport.write(data, addr)

    # 8192 is every reactor's default; IReactorUDP declares the argument without one.
    listening = cast("Port", IReactorUDP(reactor).listenUDP(port, Echo(), interface="127.0.0.1",
                                                             maxPacketSize=8192))
    apply_buffers(listening.getHandle(), logger("haha.lab.load"), "echo", 8 << 20, 8 << 20)
    ready.set()
    reactor.run()


def drive_server(target: Callable[..., None], args: tuple[Any, ...],
                 packets: Sequence[bytes]) -> tuple[float, list[bytes]]:
    """Run a UDP server ``target(port, ready, *args)`` (:func:`echo_main`, or a benchmark's
    own) in a process of its own on 127.0.0.1, send it ``packets`` in windows of 64 (never
    more in flight than the buffers hold), and return the server's CPU seconds meanwhile and
    the answers read (a window stops at the first answer not back within 1 s: the caller
    decides whether every datagram had to be answered)."""
    import socket

    from .cluster import free_udp_ports
    from .loadcluster import proc_stat

    ctx = multiprocessing.get_context("spawn")
    port = free_udp_ports(1)[0]
    ready = ctx.Event()
    server = ctx.Process(target=target, args=(port, ready) + args, daemon=True)
    server.start()
    pid = cast(int, server.pid)  # set by start()
    answers: list[bytes] = []
    try:
        if not ready.wait(60):
            raise SystemExit("the server did not start")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.connect(("127.0.0.1", port))
            cpu0 = proc_stat(pid)[0]
            at = 0
            while at < len(packets):
                window = packets[at:at + 64]
                at += len(window)
                for data in window:
                    sock.send(data)
                for _ in window:
                    try:
                        answers.append(sock.recv(4096))
                    except socket.timeout:
                        break
            cpu = proc_stat(pid)[0] - cpu0
    finally:
        server.kill()
        server.join()
    return cpu, answers


# -- the parent's side ----------------------------------------------------------------------------


class Generator:
    """``n_nodes`` mobile nodes in ``workers`` processes against ``home_agents`` (a list of
    ``(address, udp port)``, the first preferred); use as a context manager."""

    def __init__(self, n_nodes: int, workers: int, home_agents: Sequence[tuple[str, int]],
                 ports: Sequence[int], run_secret: bytes,
                 lifetime: int = BINDING_LIFETIME) -> None:
        self.n_nodes = n_nodes
        self.home_addresses = [home_address(i) for i in range(n_nodes)]
        self.specs: list[WorkerSpec] = [
            {"index": w, "first": first, "count": count, "port": ports[w],
             "home_agents": list(home_agents), "secret": run_secret, "lifetime": lifetime}
            for w, (first, count) in enumerate(split(n_nodes, workers))]
        self.ctx = multiprocessing.get_context("spawn")
        self.processes: list[SpawnProcess] = []
        self.conns: list[Connection] = []

    def __enter__(self) -> Generator:
        for spec in self.specs:
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(target=_worker_main, args=(spec, child), daemon=True)
            p.start()
            child.close()
            self.processes.append(p)
            self.conns.append(parent)
        self._collect(timeout=600)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker (killed if it does not stop within 10 s)."""
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

    def _collect(self, timeout: float = 120) -> list[Any]:
        """Each worker's answer, in worker order: unpickled from its pipe, so typed only by
        the command asked (each caller says which)."""
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

    def _all(self, cmd: str, timeout: float = 120, **args: object) -> list[Any]:
        for conn in self.conns:
            conn.send((cmd, args))
        return self._collect(timeout)

    def go(self) -> None:
        """Start every node (each worker starts its share at once: with 100,000 nodes on a
        busy machine that alone may take minutes)."""
        self._all("go", timeout=900)

    def report(self, latencies: bool = False) -> GeneratorReport:
        """The workers' reports merged (module docstring)."""
        parts: list[WorkerReport] = self._all("report", latencies=latencies)
        out: GeneratorReport = {
            "nodes": 0, "registered": 0, "first_registrations": 0,
            "by_home_agent": Counter(), "states": Counter(), "transport": Counter(),
            "core": Counter(), "cpu_s": [p["cpu_s"] for p in parts],
            "gc_longest_ms": [max((p["reactor"].get("gc") or {}).get("longest_ms") or [0.0])
                              for p in parts],
            "gc_pauses_over_50ms": [sum((p["reactor"].get("gc") or {}).get("pauses_over_50ms")
                                        or ()) for p in parts]}
        for p in parts:
            out["nodes"] += p["nodes"]
            out["registered"] += p["registered"]
            out["first_registrations"] += p["first_registrations"]
            out["by_home_agent"].update(p["by_home_agent"])
            out["states"].update(p["states"])
            out["transport"].update(p["transport"])
            out["core"].update(p["core"])
        if latencies:
            out["latencies"] = sorted(x for p in parts for x in p["latencies"])
        return out

    def mark(self) -> None:
        """Every worker starts recording what its nodes are told and where they register."""
        self._all("mark")

    def phase(self, since: float) -> PhaseReport:
        """The workers' :meth:`_Worker.phase` merged: ``since`` is a wall-clock time
        (``time.time()``) after the last :meth:`mark`, such as a home agent's kill."""
        parts: list[PhaseReport] = self._all("phase", since=since)
        return {"told": sorted(x for p in parts for x in p["told"]),
                "registered": sorted(x for p in parts for x in p["registered"]),
                "untold": sum(p["untold"] for p in parts),
                "unregistered": sum(p["unregistered"] for p in parts),
                "unmoved": sum(p["unmoved"] for p in parts)}

    def homes(self) -> dict[str, str | None]:
        """Every node's ``{home address: registered home agent or None}``."""
        out: dict[str, str | None] = {}
        parts: list[dict[str, str | None]] = self._all("homes")
        for part in parts:
            out.update(part)
        return out

    def echo(self, endpoint: Endpoint, packets: int, size: int) -> EchoResult:
        """Every worker sends its share of ``packets`` datagrams of ``size`` octets to the
        echo server at ``endpoint``; the slowest worker's time."""
        shares = split(packets, len(self.conns))
        for conn, (_, count) in zip(self.conns, shares):
            conn.send(("echo", {"endpoint": list(endpoint), "count": count, "size": size}))
        parts: list[EchoResult] = self._collect(timeout=600)
        return {"packets": packets, "sent": sum(p["sent"] for p in parts),
                "seconds": max(p["seconds"] for p in parts)}


def bu_packet_size() -> int:
    """The size of a mobile node's first Binding Update as sent (ESP, Home Address option)."""
    from ..security.keyring import NodeKeyring
    from ..security.sadb import SecurityAssociationDatabase
    from ..wire.ipv6 import build_packet
    from ..wire.mh import BU_A, BU_H, BindingUpdate, encode_mh
    from ..wire.numbers import IPPROTO_ESP, IPPROTO_MH

    hoa, ha, coa = home_address(0), IPv6Address("2001:db8:1::1"), IPv6Address("2001:db8:21::1")
    sadb = SecurityAssociationDatabase()
    NodeKeyring(bytes(32), hoa, sadb).ensure(ha)
    mh = encode_mh(BindingUpdate(1, flags=BU_A | BU_H, lifetime=150), hoa, ha)
    return len(build_packet(coa, ha, IPPROTO_ESP, sadb.protect(ha, IPPROTO_MH, mh),
                            home_address=hoa))
