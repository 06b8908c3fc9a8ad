"""Benchmark of relearning: a restarted home agent asks its peers for every binding.

Three home agents of haha's in-memory network (the daemon's endpoint: the real codec, ESP and
security policy, one peer key) with ``sync-mtu`` 2,100 as the load cluster has it. ``ha2`` and
``ha3`` hold N bindings between them (each primary for half, holding a copy of the other's
half, as after a split take-over); ``ha1``, which they declared dead (as after the kill phase
of bench/scale.py), starts again with nothing and relearns all N: its peers push it their
primaries when they see it again and answer its bulk requests (boot wait 1 s, HELLO every
second, HA lifetime 3 s, as in the load cluster).

The network charges every packet and timer to its home agent's CPU: each home agent works
through its input one packet at a time, and what it sends leaves when the work that sent it is
done, after the time it took in this process (``time.process_time``), times ``--slowdown`` (a
home agent with a fifth of a core on a loaded machine is ``--slowdown 5``). So a home agent that
takes longer to answer than a sender's retransmission timer sees the retransmissions arrive
while it still works through the originals, as the daemon on a busy machine does. A timer due
while its home agent is busy runs before the packets that waited with it (the reactor runs
due timers before reading its sockets). The survivors' caches are frozen for the garbage
collector, as the daemon's ``GcFreezer`` would have them.

Cases (one JSON object on stdout, in the shape of the other benchmarks of bench/):

- ``relearn``: seconds of simulated time from ``ha1``'s start until it holds a copy of every
  binding (``value``; ``relearned_s``: from its serving, 0 when it had them all before), with
  what led to it in ``raw``: when each survivor's first and last BIU to it left and its end
  marker was acknowledged (from serving), the largest number of its BIUs outstanding to ``ha1`` (against ``sync-window``), the
  acknowledgements' round-trip times (median, 90th percentile, largest), BIUs sent and
  retransmitted, entries applied and rejected at ``ha1`` (more than N: some came twice),
  bulk requests sent and retransmitted, peer-downs after ``ha1`` served, each home agent's CPU
  and ``ha1``'s CPU per copy installed. Baseline ``cpu_s``: the CPU seconds ``ha1`` spent
  (times ``--slowdown``, the floor of the value if nothing else held it up).

``--profile`` prints ``ha1``'s cProfile (top functions by own time) to stderr.
"""

import argparse
import cProfile
import gc
import heapq
import json
import os
import pstats
import sys
import time
from ipaddress import IPv6Address

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.testing import Network  # noqa: E402
from haha.wire.mh import BU_A, BU_H  # noqa: E402

HOA_BASE = int(IPv6Address("2001:db8:1::1:0"))
COA_BASE = int(IPv6Address("2001:db8:99::"))


class TimedNetwork(Network):
    """The in-memory network with each home agent's processing time charged (module
    docstring): a packet or timer for a busy node waits until it is free."""

    def __init__(self, slowdown: float = 1.0, **kw):
        super().__init__(**kw)
        self.slowdown = slowdown
        self.busy_until = {}
        self.cpu = {}
        self._held = None
        self.profiles = {}

    def _transmit(self, sender, packet, dst):
        if self._held is not None:
            self._held.append((sender, packet, dst))
            return
        super()._transmit(sender, packet, dst)

    def step(self):
        if not self._queue:
            return False
        t, seq, kind, data = self._queue[0]
        name = data[0]
        free = self.busy_until.get(name, 0.0)
        if free > t:
            heapq.heappop(self._queue)
            self._seq += 1
            # What waited for a busy node is taken in the order it became due (a timer, a
            # slice of bulk work, a packet), as the reactor alternates between its due timers
            # and a slice of its sockets: ordered by that time, then by arrival. (A timer
            # rescheduled after every packet and placed behind the packets waiting with it
            # never ran; placed before them, slices of bulk work kept the packets waiting.)
            if kind == "tick":
                # The network schedules a node's timer at max(due, now) after each packet:
                # its order is the time it was due, not the time it was rescheduled.
                due_at = self.nodes[name].endpoint.next_timer()
                due = (t if due_at is None else min(t, due_at)) + self._seq * 1e-12
            elif isinstance(seq, float):
                due = seq
            else:
                due = t + self._seq * 1e-12
            heapq.heappush(self._queue, (free, due, kind, data))
            return True
        self._held = []
        prof = self.profiles.get(name)
        t0 = time.process_time()
        if prof is not None:
            prof.enable()
        try:
            super().step()
        finally:
            if prof is not None:
                prof.disable()
            cost = time.process_time() - t0
            held, self._held = self._held, None
        self.cpu[name] = self.cpu.get(name, 0.0) + cost
        done = self.now + cost * self.slowdown
        self.busy_until[name] = done
        saved = self.now
        self.now = done
        try:
            for args in held:
                super()._transmit(*args)
        finally:
            self.now = saved
        return True


def fill(ha, mine, theirs, other, n, now):
    """``ha`` primary for the indices ``mine``, holding copies naming ``other`` of ``theirs``."""
    store = ha.cache.store
    for i in range(n):
        primary = None if i % 2 == mine else other
        store(IPv6Address(HOA_BASE + i), IPv6Address(COA_BASE + i), BU_H | BU_A, 1, 3600,
              now + 3600, (), primary, ha.address if primary is None else None, now)


def run(n, slowdown, window, profile=False, timeout=600.0):
    net = TimedNetwork(slowdown=slowdown, seed=1)
    over = dict(sync_mtu=2100, hello_interval=1.0, ha_lifetime=3, boot_wait=1.0,
                max_binding_lifetime=3600, take_over_share="split")
    if window:
        over["biu_window"] = window
    ha1, ha2, ha3 = net.add_home_agents(3, **over)
    net.run_for(3.0)
    # ha1 dies and is declared dead, as the kill phase of bench/scale.py leaves it
    net.kill("ha1")
    net.run_for(5.0)
    fill(ha2.machine, 0, 1, ha3.machine.identity, n, net.now)
    fill(ha3.machine, 1, 0, ha2.machine.identity, n, net.now)
    # instrument the survivors' outbound sync towards ha1: sends, acknowledgements
    rtts = []
    marks = {}
    peak = {}
    for s in (ha2, ha3):
        sync = s.machine.sync
        sent_at = {}

        def transmit(peer, o, entries, now, out, message=None, _orig=sync._transmit,
                     _name=s.name, _sent=sent_at):
            if peer.address == ha1.machine.identity:
                _sent[o.identifier] = net.now
                m = marks.setdefault(_name, {})
                m.setdefault("first_biu", net.now)
                m["last_biu"] = net.now
                peak[_name] = max(peak.get(_name, 0), len(peer.outstanding) + 1)
            return _orig(peer, o, entries, now, out, message)

        def acknowledge(address, bia, now, out, _orig=sync.acknowledge, _sent=sent_at,
                        _name=s.name):
            o = _orig(address, bia, now, out)
            if o is not None and address == ha1.machine.identity:
                t = _sent.pop(o.identifier, None)
                if t is not None and not getattr(o, "resent", False):
                    rtts.append(net.now - t)
                if o.marker:
                    marks.setdefault(_name, {})["end_acked"] = net.now
            return o
        sync._transmit = transmit
        sync.acknowledge = acknowledge
    gc.freeze()  # as the daemon's GcFreezer would have the survivors' caches
    if profile:
        net.profiles["ha1"] = cProfile.Profile()
    net.cpu.clear()
    start = net.now
    net.start("ha1")
    cache = ha1.machine.cache
    try:
        net.run_until_true(lambda: len(cache) >= n, timeout)
        held_at = net.now
        cpu = dict(net.cpu)  # until every binding was held
        if not ha1.machine.serving:  # every binding held before serving
            net.run_until_true(lambda: ha1.machine.serving, 30)
        served_at = min(t for t, e in ha1.events if e.name == "serving" and t >= start)
        relearned = max(0.0, held_at - served_at)
        from_start = held_at - start
    except TimeoutError:
        relearned = from_start = None
        cpu = dict(net.cpu)
        served_at = min((t for t, e in ha1.events if e.name == "serving" and t >= start),
                        default=start)
    c1 = ha1.machine.counters
    rtts.sort()

    def pct(p):
        return round(rtts[min(len(rtts) - 1, int(p * len(rtts)))], 4) if rtts else None

    raw = {
        "n": n, "slowdown": slowdown, "window": window or ha1.machine.settings.biu_window,
        "started_s": round(served_at - start, 4),
        "from_start_s": None if from_start is None else round(from_start, 3),
        "relearned_s": None if relearned is None else round(relearned, 3),
        "held": len(cache),
        "survivors": {k: {kk: round(vv - served_at, 3) for kk, vv in v.items()}
                      for k, v in marks.items()},
        "peak_outstanding": peak,
        "rtt_s": {"p50": pct(0.5), "p90": pct(0.9), "max": pct(1.0), "samples": len(rtts)},
        "biu_sent": {s.name: s.machine.counters["biu-sent"] for s in (ha2, ha3)},
        "biu_retransmitted": {s.name: s.machine.counters["biu-retransmitted"]
                              for s in (ha2, ha3)},
        "ha1": {k: c1[k] for k in ("biu-received", "biu-entry-applied", "biu-entry-rejected",
                                   "bir-sent", "bir-retransmitted")},
        "cpu_s": {k: round(v, 3) for k, v in cpu.items()},
        "peer_downs": {h.name: sum(1 for t, e in h.events if e.name == "peer-down"
                                   and t >= served_at) for h in (ha1, ha2, ha3)},
        "bulk_answers": {s.name: s.machine.counters.get("slice-items.bulk-answer", 0) // 2
                         for s in (ha2, ha3)},
        "ha1_us_per_copy": round(cpu.get("ha1", 0.0) / max(1, len(cache)) * 1e6, 1),
    }
    if os.environ.get("RELEARN_TRACE"):
        for h in (ha1, ha2, ha3):
            for t, e in h.events:
                if t >= start and e.name not in ("copy-created", "binding-restored"):
                    print(f"{t - served_at:8.3f} {h.name} {e.name} {e.fields}", file=sys.stderr)
            print(h.name, {k: v for k, v in h.machine.counters.items()
                           if "bir" in k or "drop" in k or "bia" in k}, file=sys.stderr)
    if profile:
        st = pstats.Stats(net.profiles["ha1"], stream=sys.stderr)
        st.sort_stats("tottime").print_stats(25)
    return raw


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=20000)
    p.add_argument("--slowdown", type=float, default=1.0)
    p.add_argument("--window", type=int, default=0, help="sync-window (0: the default)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--timeout", type=float, default=600.0)
    a = p.parse_args()
    raw = run(a.nodes, a.slowdown, a.window, a.profile, a.timeout)
    out = {"bench": "relearn", "load": open("/proc/loadavg").read().split()[:3],
           "results": [{"case": f"restarted home agent relearning {a.nodes} bindings "
                                f"(in-memory network, CPU charged x{a.slowdown})",
                        "metric": "simulated seconds from its start until every binding is held",
                        "unit": "s", "value": raw["from_start_s"],
                        "relearned_after_serving_s": raw["relearned_s"],
                        "baselines": {"cpu_s": round(raw["cpu_s"].get("ha1", 0.0) * a.slowdown,
                                                     3)}}],
           "raw": raw}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
