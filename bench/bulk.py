"""Benchmark of bulk work: take-over, bulk answer and mass expiry, in the core and in the daemon.

Cases (one JSON object on stdout, in the shape of the other benchmarks of bench/):

- ``stall_take_over``, ``stall_bulk_answer``, ``stall_expiry``: the longest reactor stall, in
  milliseconds, while one home agent (the real ``HomeAgentAdapter`` on the real Twisted reactor,
  null backend, a transport that answers every BIU with a BIA through ``packet_received``, no
  ESP) takes over the N copies of a dead peer, answers a bulk BIR for the N bindings (until the
  end marker is acknowledged), and expires all N at once (the adapter's clock is moved past
  their lifetime). A probe ``LoopingCall`` every 5 ms records the longest gap between two of its
  calls, less its interval, in CPU time of this process (``value``: the work the reactor did
  without a break, which a busy shared machine cannot inflate) and in wall-clock time
  (``wall_ms``, which includes other processes holding the CPU). The home agent runs as
  ``twistd haha`` runs it: in slices, with the ``GcFreezer``. Baseline ``unsliced``: the same
  phases on the same reactor with ``work.size = None`` and no freezer (every job at once, the
  daemon before this change). Goal
  (issue 11): under 50 ms at N = 100,000 in every phase.
- ``bulk_answer_core``: CPU seconds (``time.process_time``) for the core alone to answer a bulk
  BIR for N bindings, every BIU acknowledged as it leaves, until the end marker is
  acknowledged. Baseline ``bce_floor``: building the same N BCE Information options and
  nothing else. Goal: under 10 s at N = 1,000,000 (``n`` says what was run).

``--quick`` uses N = 5,000 for the stalls and 100,000 for the core answer (under 30 s); the
full run uses 100,000 and 1,000,000 (about 1 GB of memory for the latter).
"""

import argparse
import gc
import json
import os
import random
import sys
import time
from ipaddress import IPv6Address, IPv6Network

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import defer, task  # noqa: E402

from haha.backends.null import NullBackend  # noqa: E402
from haha.core.effects import Inbound, Send  # noqa: E402
from haha.core.homeagent import HomeAgent  # noqa: E402
from haha.core.settings import HomeAgentSettings  # noqa: E402
from haha.core.seqnum import units_ceil  # noqa: E402
from haha.gcfreeze import GcFreezer  # noqa: E402
from haha.protocol import HomeAgentAdapter  # noqa: E402
from haha.security.policy import SecurityPolicy  # noqa: E402
from haha.wire.ipv6 import build_packet  # noqa: E402
from haha.wire.mh import (  # noqa: E402
    BU_A,
    BU_H,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
    HaHello,
    encode_mh,
)
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_MH  # noqa: E402
from haha.wire.options import IPADDR_HOME_ADDRESS, BceInfo, IpAddress  # noqa: E402

PREFIX = IPv6Network("2001:db8:1::/64")
HA = IPv6Address("2001:db8:1::1")
DEAD = IPv6Address("2001:db8:1::2")  # the peer that dies (its copies are taken over)
ASKER = IPv6Address("2001:db8:1::3")  # the peer that asks for everything
HOA_BASE = int(IPv6Address("2001:db8:1::1:0"))
COA_BASE = int(IPv6Address("2001:db8:99::"))
PROBE = 0.005


def settings():
    return HomeAgentSettings(address=HA, home_prefix=PREFIX, peers=(DEAD, ASKER), boot_wait=0,
                             max_binding_lifetime=3600, hello_interval=1.0, ha_lifetime=3)


def fill_copies(ha, n, now):
    """``n`` copies naming DEAD as primary, stored as a BIU from it would store them."""
    store = ha.cache.store
    for i in range(n):
        store(IPv6Address(HOA_BASE + i), IPv6Address(COA_BASE + i), BU_H | BU_A, 1, 800,
              now + 800, (), DEAD, None, now)


def fill_primaries(ha, n, now):
    store = ha.cache.store
    for i in range(n):
        store(IPv6Address(HOA_BASE + i), IPv6Address(COA_BASE + i), BU_H | BU_A, 1, 800,
              now + 800, (), None, HA, now)


# -- core bulk answer ----------------------------------------------------------------------------


def bulk_answer_core(n):
    ha = HomeAgent(settings(), random.Random(1))
    ha.start(0.0)
    ha.receive(Inbound(HaHello(1, 0, 65535, 10, 64, ASKER), ASKER, HA, None, None, ASKER), 0.0)
    fill_primaries(ha, n, 0.0)
    bir = BindingInfoRequest(77, (IpAddress(IPADDR_HOME_ADDRESS, IPv6Address(0)),))
    gc.collect()
    t0 = time.process_time()
    out = ha.receive(Inbound(bir, ASKER, HA, None, None, ASKER), 1.0)
    carried = 0
    marker = False
    receive, tick, work = ha.receive, ha.tick, ha.work
    while True:
        acks = []
        for e in out:
            if type(e) is Send and type(e.message) is BindingInfoUpdate:
                carried += len(e.message.entries)
                if e.message.identifier == 77 and not e.message.entries:
                    marker = True
                acks.append(Inbound(BindingInfoAck(e.message.identifier), ASKER, HA, None,
                                    None, ASKER))
        out = []
        for a in acks:
            out += receive(a, 1.0)
        if work.pending():
            out += tick(1.0)
        if not out and not work.pending():
            break
    elapsed = time.process_time() - t0
    if not marker or carried != n:
        raise SystemExit(f"bulk_answer_core: {carried} bindings carried of {n}, marker {marker}")
    bindings = list(ha.cache)
    del ha
    gc.collect()
    t0 = time.process_time()
    for b in bindings:
        BceInfo(b.home_address, b.care_of, b.flags, b.sequence, units_ceil(b.expires - 1.0),
                b.prefixes)
    floor = time.process_time() - t0
    return {"case": "bulk_answer_core", "metric": "cpu_seconds", "unit": "s",
            "value": round(elapsed, 3), "baselines": {"bce_floor": round(floor, 3)},
            "n": n, "goal": 10.0 if n >= 1_000_000 else None}


# -- stalls on the real reactor ------------------------------------------------------------------


class OffsetClock:
    """The reactor's time plus an offset, so a phase can jump past every lifetime."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.offset = 0.0

    def seconds(self):
        return self.reactor.seconds() + self.offset

    def callLater(self, delay, f, *a, **kw):
        return self.reactor.callLater(delay, f, *a, **kw)


class AckingTransport:
    """Counts packets; answers each BIU to ASKER with a BIA, through the adapter, later."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.adapter = None
        self.sent = 0
        self.biu = DEFAULT_PROFILE.biu

    def start(self, receiver):
        pass

    def stop(self):
        pass

    def send(self, packet, interface=None):
        self.sent += 1
        if packet[6] == IPPROTO_MH and packet[42] == self.biu and packet[24:40] == ASKER.packed:
            ident = int.from_bytes(packet[46:48], "big")
            bia = encode_mh(BindingInfoAck(ident), ASKER, HA, DEFAULT_PROFILE)
            self.reactor.callLater(0, self.adapter.packet_received,
                                   build_packet(ASKER, HA, IPPROTO_MH, bia))


class Probe:
    """Fires every PROBE seconds and keeps the longest gap between two fires, less PROBE: in
    wall-clock time (``worst``) and in this process's CPU time (``worst_cpu``, which leaves out
    the time other processes of a busy machine held the CPU)."""

    def __init__(self):
        self.last = None
        self.worst = 0.0
        self.worst_cpu = 0.0
        self.loop = task.LoopingCall(self.tick)

    def tick(self):
        t, c = time.perf_counter(), time.process_time()
        if self.last is not None:
            self.worst = max(self.worst, t - self.last[0] - PROBE)
            self.worst_cpu = max(self.worst_cpu, c - self.last[1])
        self.last = (t, c)

    def reset(self):
        self.last = (time.perf_counter(), time.process_time())
        self.worst = 0.0
        self.worst_cpu = 0.0


def hello(adapter, peer, lifetime, seq):
    msg = encode_mh(HaHello(seq, 0, lifetime, 10, 64, peer), peer, HA, DEFAULT_PROFILE)
    adapter.packet_received(build_packet(peer, HA, IPPROTO_MH, msg))


@defer.inlineCallbacks
def until(reactor, predicate, timeout=600.0):
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise SystemExit("bulk: a phase did not finish")
        yield task.deferLater(reactor, 0.01, lambda: None)


@defer.inlineCallbacks
def stalls(reactor, n, sliced):
    """The three phases for one home agent; returns {phase: (worst stall ms, seconds)}."""
    clock = OffsetClock(reactor)
    transport = AckingTransport(reactor)
    machine = HomeAgent(settings(), random.Random(1))
    if not sliced:
        machine.work.size = None
    adapter = HomeAgentAdapter(machine, transport, clock, DEFAULT_PROFILE,
                               SecurityPolicy(mode="none", lab=True), backend=NullBackend())
    transport.adapter = adapter
    adapter.running = True
    adapter.apply(machine.start(clock.seconds()))
    hello(adapter, ASKER, 65535, 1)
    hello(adapter, DEAD, 3, 1)
    fill_copies(machine, n, clock.seconds())
    gc.collect()
    freezer = None
    if sliced:
        freezer = GcFreezer()  # as twistd haha runs it
        freezer.startService()
    probe = Probe()
    probe.loop.start(PROBE)
    results = {}

    def phase(name, start_fn, done):
        probe.reset()
        t0 = time.perf_counter()
        start_fn()
        d = until(reactor, done)
        d.addCallback(lambda _: results.__setitem__(
            name, (probe.worst_cpu * 1000, time.perf_counter() - t0, probe.worst * 1000)))
        return d

    def jump(seconds):
        def go():
            clock.offset += seconds
            adapter._rearm()
        return go

    def synced():
        # Everything owed to ASKER delivered (its own bulk request to us is never answered).
        peer = machine.sync.peers.get(ASKER)
        return peer is not None and not (peer.outstanding or peer.pending or peer.answering)

    # DEAD's lifetime (3 s) runs out: the take-over.
    yield phase("take_over", jump(4.0),
                lambda: machine.cache.primary_count == n and not machine.work.pending()
                and synced())
    bir = encode_mh(BindingInfoRequest(77, (IpAddress(IPADDR_HOME_ADDRESS, IPv6Address(0)),)),
                    ASKER, HA, DEFAULT_PROFILE)
    yield phase("bulk_answer",
                lambda: adapter.packet_received(build_packet(ASKER, HA, IPPROTO_MH, bir)),
                lambda: not machine.work.pending() and synced())
    yield phase("expiry", jump(1000.0),
                lambda: len(machine.cache) == 0 and not machine.work.pending() and synced())
    probe.loop.stop()
    if freezer is not None:
        freezer.stopService()
        gc.unfreeze()
    adapter.running = False
    adapter.stop_timer()
    return results


@defer.inlineCallbacks
def stall_cases(reactor, n, out):
    ours = yield stalls(reactor, n, True)
    base = yield stalls(reactor, n, False)
    for name in ("take_over", "bulk_answer", "expiry"):
        out.append({"case": "stall_" + name, "metric": "longest_reactor_stall_cpu",
                    "unit": "ms", "value": round(ours[name][0], 1),
                    "baselines": {"unsliced": round(base[name][0], 1)},
                    "wall_ms": round(ours[name][2], 1),
                    "baseline_wall_ms": {"unsliced": round(base[name][2], 1)},
                    "n": n, "seconds": round(ours[name][1], 2),
                    "baseline_seconds": {"unsliced": round(base[name][1], 2)}, "goal": 50})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run under 30 seconds")
    ap.add_argument("--stall-n", type=int, default=None, help="bindings for the stall cases")
    ap.add_argument("--core-n", type=int, default=None, help="bindings for the core answer")
    args = ap.parse_args(argv)
    stall_n = args.stall_n or (5_000 if args.quick else 100_000)
    core_n = args.core_n or (100_000 if args.quick else 1_000_000)
    results = []

    def run(reactor):
        return stall_cases(reactor, stall_n, results)

    try:
        task.react(run)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    results.append(bulk_answer_core(core_n))
    print(json.dumps({"bench": "bulk", "results": results}))


if __name__ == "__main__":
    main()
