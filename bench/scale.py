"""Benchmark: a home-agent set under many mobile nodes, real daemons end to end.

Three ``twistd -n haha`` home agents (UDP transport on loopback, ESP, null backend, HA lifetime
3 s, HELLO every second) and the load generator of ``haha.lab.load``: worker processes each
running many of haha's own mobile node machines (codec, user-space ESP, the daemons' key
derivation). Every figure is read from outside: the control sockets, the workers' reports, and
``/proc/PID/stat`` of the daemons.

The baseline, measured in the same run: a bare Twisted UDP echo (one process answering
datagrams of a Binding Update's size on loopback), driven by the same generator processes with
as many datagrams as there are nodes (at least 20,000).

Cases:

- ``burst``: every node started at one instant; time until all are registered and every copy
  is consistent on every home agent (each node exactly one primary, copies at the others naming
  it, the node registered with it): until every home agent's ``status`` counts a binding for
  every node, the check that follows passing (``checked_s`` is when it ended: it asks every
  home agent and worker for everything, about 18 s at 100,000 nodes); false peer-downs (no
  home agent died) counted. Baseline: the echo's time for the same number of datagrams.
- ``cpu``: CPU of the three daemons during the burst per Binding Update received, and as a
  ratio to the echo's CPU per datagram: from the burst until every home agent counts every
  binding. The consistency check that follows asks each home agent for every binding through
  its control socket; its CPU is reported apart (``check_cpu_s``, and ``primary_with_check_us``
  as the figures before counted it).
- ``kill``: ``kill -9`` of the primary of every node; time until every binding is primary at a
  survivor and every node has been told by it; apart, until every node is registered with
  exactly one survivor and until the survivors agree (``consistent_s``: as in ``restart``, the
  counts reached if the first check passes, else when the passing check began). Baseline: the
  measured failure detection (until both survivors have counted a peer-down).
- ``restart``: the killed home agent started again; time from serving until it holds a
  consistent copy of every binding: until its ``status`` counts every binding (``held_s``),
  if the consistency check that follows passes at once, else until the passing check began;
  ``checked_s`` is when the check ended (it asks every home agent and worker for everything:
  seconds at 10,000 nodes, which the value counted before). Baseline: its start-up time
  (process start to serving).
- ``memory``: RSS per configured node (a home agent knowing N nodes against one knowing none,
  both serving, before any registration), per primary binding and per copy (RSS growth of the
  primary and of a copy holder during the burst: after the consistency check, and
  ``per_primary_held``/``per_copy_held`` when every home agent held every binding, before the
  check asked them for everything). ``raw.memory.split`` has, per binding, what the primary
  and a copy holder's C allocator holds in use and holds freed (``haha-ctl memory``); with
  ``--trace-memory`` (the home agents started with ``PYTHONTRACEMALLOC=1``: slower, more
  memory, so not a run for the other figures) also the growth of what Python holds, and of
  each of the 40 allocation sites that grew most. ``raw.memory.after_burst`` has the
  allocator's figures and the trims (``haha.alloctrim``) after the check; with
  ``--memory-settle S`` the RSS per binding is measured again S seconds later
  (``per_primary_settled``, ``per_copy_settled``, ``raw.memory.after_settle``): what the home
  agents keep once the trims due after the burst have run.

Each case also reports the longest ``status`` answer of the control sockets during its phase
(a blocked reactor answers late, and so does one waiting for a CPU held by other processes),
and from each home agent's own stall probe (a 10 ms timer measuring its reactor's work without
a break in CPU time) the longest stall and the number of stalls of 50 ms or more. ``--quick`` runs 1,000 nodes (20 s on the shared 2-core
machine at load 3.5, 45 s at load 6, most of it daemons starting); the default is 10,000 nodes and ``--nodes
100000`` the issue's goal. ``--ha-lifetime`` sets the home agents' failure detection time (3 s by
default); ``--timeout`` bounds each phase (docs/scale.md has the figures). Prints one JSON
object.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.control.cli import request  # noqa: E402
from haha.lab import load  # noqa: E402
from haha.lab.cluster import free_udp_ports  # noqa: E402
from haha.lab.generator import default_workers  # noqa: E402

HA_LIFETIME = 3


def _cpu(cluster, names=None):
    return {ha.name: load.proc_stat(ha.process.pid)[0] for ha in cluster.has
            if ha.running() and (names is None or ha.name in names)}


def _rss(node):
    return load.proc_stat(node.process.pid)[1]


def _counter_sum(cluster, key, names=None):
    total = 0
    for ha in cluster.has:
        if ha.running() and (names is None or ha.name in names):
            total += (cluster.control(ha.name, "counters") or {}).get(key, 0)
    return total


def _counter_read(cluster, name, key, timeout=120):
    """One counter of home agent ``name``, asked until it answers (a missed answer must not
    read as zero)."""
    counters = load.wait(f"{name}'s counters", lambda: cluster.control(name, "counters"),
                         timeout, 0.1)
    return counters.get(key, 0)


def echo_baseline(generator, packets, size):
    ctx = multiprocessing.get_context("spawn")
    port = free_udp_ports(1)[0]
    ready = ctx.Event()
    server = ctx.Process(target=load.echo_main, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the echo server did not start")
        cpu0 = load.proc_stat(server.pid)[0]
        result = generator.echo(("127.0.0.1", port), packets, size)
        cpu = load.proc_stat(server.pid)[0] - cpu0
    finally:
        server.kill()
        server.join()
    result["cpu_s"] = cpu
    result["us_per_packet"] = cpu / packets * 1e6
    return result


class Run:
    """One benchmark run; each phase fills ``out[phase]``. A phase that does not finish within
    ``timeout`` is recorded as failed with what the nodes and home agents showed at that
    moment, and the later phases are not run."""

    def __init__(self, directory, n_nodes, workers, timeout, ha_lifetime=HA_LIFETIME,
                 node_keys="group", admission="sized", take_over_share="split",
                 profile=None, phases=("burst", "kill", "restart"), profile_until="served",
                 trace_memory=False, memory_settle=0.0):
        self.trace_memory = trace_memory
        self.memory_settle = memory_settle
        self.profile = profile
        self.profile_until = profile_until
        self.phases = phases
        self.ha_lifetime = ha_lifetime
        self.node_keys = node_keys
        self.admission = admission
        self.take_over_share = take_over_share
        self.directory = directory
        self.n = n_nodes
        self.workers = workers
        self.timeout = timeout
        self.secret = os.urandom(32)
        self.out = {"nodes": n_nodes, "workers": workers, "ha_lifetime": ha_lifetime,
                    "node_keys": node_keys, "admission": admission,
                    "take_over_share": take_over_share, "trace_memory": trace_memory}
        self.interval = load.poll_interval(n_nodes)

    def __call__(self):
        started = time.monotonic()
        self.cluster, ports, _ = load.launch_cluster(
            os.path.join(self.directory, "set"), self.n, self.workers, self.secret,
            lifetime=self.ha_lifetime, node_keys=self.node_keys, admission=self.admission,
            take_over_share=self.take_over_share,
            ha_env={"PYTHONTRACEMALLOC": "1"} if self.trace_memory else {})
        # Memory per configured node is measured against a home agent of the same
        # configuration knowing no node, started alongside.
        empty = None
        try:
            empty, _, _ = load.launch_cluster(os.path.join(self.directory, "empty"), 0,
                                              self.workers, self.secret, n_has=2,
                                              lifetime=self.ha_lifetime,
                                              node_keys=self.node_keys,
                                              admission=self.admission)
            load.wait_serving(empty)
            self.rss_empty = _rss(empty.has[0])
            empty.kill_all()
            load.wait_serving(self.cluster)
        except BaseException:
            self.cluster.kill_all()
            if empty is not None:
                empty.kill_all()
            raise
        self.out["startup_s"] = round(time.monotonic() - started, 2)
        self.probe = load.ControlProbe(self.cluster).start()
        try:
            self.memory_baseline()
            has = [(ha.address, ha.port) for ha in self.cluster.has]
            with load.Generator(self.n, self.workers, has, ports, self.secret) as generator:
                self.generator = generator
                size = load.bu_packet_size()
                echo = echo_baseline(generator, max(self.n, 20000), size)
                self.out["echo"] = dict(echo, size=size)
                for phase in (getattr(self, name) for name in self.phases):
                    self.probe.reset()
                    name = phase.__name__
                    try:
                        self.out[name] = phase()
                    except TimeoutError as e:
                        self.out[name] = {"failed": str(e).splitlines()[0],
                                          "state": self.state()}
                        break
                    self.out[name]["probe"] = self.probe.reset()
        finally:
            self.probe.stop()
            self.cluster.kill_all()
        return self.out

    def state(self):
        r = self.generator.report()
        return {"registered": r["registered"], "by_home_agent": dict(r["by_home_agent"]),
                "states": dict(r["states"]),
                "home_agents": {ha.name: {k: (self.cluster.control(ha.name, "status", 30) or {})
                                          .get(k) for k in ("state", "bindings", "primaries")}
                                for ha in self.cluster.has if ha.running()},
                "peer_downs": _counter_sum(self.cluster, "event.peer-down"),
                "rate_limited": _counter_sum(self.cluster, "dropped.rate-limited")}

    def memory_baseline(self):
        """RSS of each of our home agents knowing every node, serving, before any
        registration, against :attr:`rss_empty`."""
        self.rss_configured = {ha.name: _rss(ha) for ha in self.cluster.has}
        self.out["memory"] = {
            "rss_empty": self.rss_empty, "rss_configured": self.rss_configured["ha1"],
            "per_configured_node": round((self.rss_configured["ha1"] - self.rss_empty)
                                         / self.n)}
        # What the primary (ha1) and a copy holder (ha2) say of their memory (haha-ctl
        # memory), with tracing a mark to take the growth of every allocation site from.
        self.memory_before = {name: self._memory(name, mark=self.trace_memory)
                              for name in ("ha1", "ha2")}

    def _memory(self, name, **arguments):
        """Home agent ``name``'s ``memory`` answer (None when it did not answer)."""
        args = {k: "yes" if v is True else str(v) for k, v in arguments.items() if v}
        try:
            answer = request(self.cluster.node(name).socket, "memory", args, timeout=300)
        except (OSError, ValueError):
            return None
        return answer.get("result") if answer.get("ok") else None

    def memory_split(self, rss_held, answers_held):
        """The burst's memory per binding at the primary (ha1) and a copy holder (ha2), from
        the RSS and the ``memory`` answers taken when every home agent held every binding,
        before the consistency check: RSS growth, what of it the C allocator holds freed, and
        with tracing the growth of what Python holds, per allocation site (``--trace-memory``,
        docs/scale.md)."""
        out = {}
        for name in ("ha1", "ha2"):
            before, held = self.memory_before.get(name) or {}, answers_held.get(name) or {}
            entry = {"rss_growth_per_binding": round(
                (rss_held[name] - self.rss_configured[name]) / self.n)}
            m0, m1 = before.get("malloc"), held.get("malloc")
            if m0 and m1:
                entry["malloc_in_use_growth_per_binding"] = round(
                    (m1["in_use"] - m0["in_use"]) / self.n)
                entry["malloc_free_held_growth_per_binding"] = round(
                    (m1["free_held"] - m0["free_held"]) / self.n)
                entry["malloc_free_held"] = m1["free_held"]
            entry["trim"] = held.get("trim")  # haha.alloctrim: the calls so far
            growth = held.get("growth")
            if growth:
                entry["traced_growth_per_binding"] = round(growth["traced"] / self.n)
                entry["tracing_overhead"] = held.get("tracing_overhead")
                entry["sites_per_binding"] = [
                    [r["site"], round(r["size"] / self.n, 1), round(r["count"] / self.n, 2)]
                    for r in growth["sites"]]
            out[name] = entry
        return out

    def burst(self):
        c = self.cluster
        cpu0 = _cpu(c)
        profilers = self._profile([ha.name for ha in c.has], "burst")
        held = {}

        def on_held():  # every home agent counts every binding: the check follows
            held["cpu"] = _cpu(c)
            _stop_profilers(profilers)
            held["rss"] = {ha.name: _rss(ha) for ha in c.has}
            held["memory"] = {name: self._memory(name, top=40 if self.trace_memory else 0)
                              for name in ("ha1", "ha2")}
        try:
            phase = load.burst(c, self.generator, self.timeout, on_held)
        finally:
            _stop_profilers(profilers)
        cpu1 = _cpu(c)
        phase["binding_updates"] = {ha.name: (c.control(ha.name, "counters") or {}).get(
            "received.BindingUpdate", 0) for ha in c.has}
        # The burst's CPU until every home agent held every binding; the consistency check
        # that follows (the benchmark asking each home agent for every binding) apart.
        phase["ha_cpu_s"] = {k: round(held["cpu"][k] - cpu0[k], 3) for k in cpu1}
        phase["check_cpu_s"] = {k: round(cpu1[k] - held["cpu"][k], 3) for k in cpu1}
        phase["peer_downs"] = _counter_sum(c, "event.peer-down")
        phase["rate_limited"] = _counter_sum(c, "dropped.rate-limited")
        rss = {ha.name: _rss(ha) for ha in c.has}
        self.out["memory"].update(
            per_primary=round((rss["ha1"] - self.rss_configured["ha1"]) / self.n),
            per_copy=round((rss["ha2"] - self.rss_configured["ha2"]) / self.n),
            per_primary_held=round((held["rss"]["ha1"] - self.rss_configured["ha1"]) / self.n),
            per_copy_held=round((held["rss"]["ha2"] - self.rss_configured["ha2"]) / self.n),
            split=self.memory_split(held["rss"], held["memory"]))
        # After the check: what the C allocator holds and the trims (haha.alloctrim) by then.
        self._memory_after("after_burst")
        if self.memory_settle:
            # What the home agents keep once left alone (--memory-settle): the trims due
            # after the burst (at most one per [memory] trim-interval) have run.
            time.sleep(self.memory_settle)
            rss = {ha.name: _rss(ha) for ha in c.has}
            self.out["memory"].update(
                settle_s=self.memory_settle,
                per_primary_settled=round((rss["ha1"] - self.rss_configured["ha1"]) / self.n),
                per_copy_settled=round((rss["ha2"] - self.rss_configured["ha2"]) / self.n))
            self._memory_after("after_settle")
        return phase

    def _memory_after(self, key):
        """The rss, malloc and trim figures of the primary and a copy holder now, under
        ``raw.memory[key]``."""
        for name in ("ha1", "ha2"):
            answer = self._memory(name) or {}
            self.out["memory"].setdefault(key, {})[name] = {
                k: answer.get(k) for k in ("rss", "malloc", "trim")}

    def _consistent(self, names=None):
        result = load.check_consistency(self.cluster.views(names),
                                        self.generator.home_addresses, self.generator.homes())
        return result if result["consistent"] else None

    def kill(self):
        """kill -9 of ha1, the primary of every node. Measured: failure detection (both
        survivors counted a peer-down); every binding primary at a survivor (the survivors'
        primaries add up to the node count; the strict check follows); every node's first
        switch request sent (the survivors' first transmissions add up to the node count;
        None if a node re-registered before its request left); every node told by the
        survivor it ends registered with (its switch request received, or a registration with
        it, whichever first: the generator's record of each node); every node registered with
        a survivor; the survivors consistent."""
        c, first = self.cluster, self.cluster.has[0]
        survivors = [ha.name for ha in c.has if ha is not first]
        before = {s: _counter_read(c, s, "event.peer-down") for s in survivors}
        downs0 = sum(before.values())
        traffic0 = {s: _traffic(c, s) for s in survivors}
        report0 = self.generator.report()
        gen0 = report0["cpu_s"]
        cpu0 = _cpu(c, survivors)
        self.generator.mark()
        wall0 = time.time()
        t0 = time.monotonic()
        c.kill(first.name)
        # The phase's stall figures begin at the kill: a look at the primary in the moments
        # before (reading the counters above) would list it among the phase's home agents.
        self.probe.reset()
        profilers = self._profile(survivors, "kill")
        timeline = CpuTimeline(dict(
            [(s, c.node(s).process.pid) for s in survivors]
            + [(f"generator{i}", p.pid) for i, p in enumerate(self.generator.processes)]),
            t0).start()

        def detected():  # each survivor has declared a peer down since the kill
            timeline.sample()
            return all(_counter_read(c, s, "event.peer-down") > before[s] for s in survivors)

        try:
            load.wait("failure detection", detected, self.timeout, self.interval)
        except BaseException:
            timeline.stop()
            raise
        detection = time.monotonic() - t0
        seen = {}

        def served():
            timeline.sample()
            if "primaries" not in seen:
                counts = [(c.control(s, "status", 30) or {}).get("primaries") for s in survivors]
                if None not in counts and sum(counts) == self.n:
                    seen["primaries"] = time.monotonic() - t0
                else:
                    # Nothing else is asked until then: the generator's report waits for
                    # its busy workers (seconds once the switch requests flood them), and
                    # asked in the same loop it delayed the next look at the survivors.
                    return False
            if "switch_requests" not in seen:
                # Every node's first switch request has left its survivor: what "told" takes
                # beyond this is the path and the generator.
                firsts = 0
                for s in survivors:
                    k = c.control(s, "counters", 30) or {}
                    firsts += k.get("core.switch-sent", 0) - k.get("core.switch-retransmitted", 0)
                if firsts >= self.n:
                    seen["switch_requests"] = time.monotonic() - t0
                    if self.profile_until == "sent":
                        _stop_profilers(profilers)
            if "registered" not in seen:
                r = self.generator.report()
                if r["registered"] == self.n and not r["by_home_agent"].get(first.address):
                    seen["registered"] = time.monotonic() - t0
                    # CPU and messages until then, before the consistency check (which asks
                    # each survivor for everything) adds its own
                    seen["cpu"] = _cpu(c, survivors)
                    seen["traffic"] = {s: _traffic(c, s) for s in survivors}
            return "primaries" in seen and "registered" in seen

        try:
            load.wait("every binding primary at a survivor and every node registered with one",
                      served, self.timeout, min(0.2, self.interval))
        finally:
            timeline.stop()
            _stop_profilers(profilers)
        split = {s: profile_split(os.path.join(self.profile, f"kill-{s}.txt"))
                 for s in survivors} if profilers else None

        def held():  # every survivor counts a binding for every node
            return all((c.control(s, "status", 30) or {}).get("bindings") == self.n
                       for s in survivors)
        load.wait("every survivor holding a binding for every node", held, self.timeout,
                  min(0.2, self.interval))
        held_at = time.monotonic() - t0
        # As in restart: the check's own duration (it asks for everything) is not convergence;
        # the value is when the state it found consistent was there (the counts reached, if
        # the first check passes; else when the passing check began).
        attempts = []

        def consistent_now():
            attempts.append(time.monotonic() - t0)
            return self._consistent(survivors)
        check = load.wait("a consistent set of survivors", consistent_now,
                          self.timeout, max(0.5, self.interval))
        checked = time.monotonic() - t0
        consistent = max(held_at, seen["registered"]) if len(attempts) == 1 else attempts[-1]
        cpu1 = _cpu(c, survivors)
        report1 = self.generator.report()
        gen1 = report1["cpu_s"]
        phase = self.generator.phase(wall0)
        told = load.percentiles(phase["told"])
        moved = load.percentiles(phase["registered"])
        told_s = told["p100"] if not phase["untold"] else None
        sent_s = seen.get("switch_requests")
        # The CPU each survivor and generator process used from detection until every node
        # was told (and until every first switch request had left): on a machine shared with
        # other work, wall-clock times vary with the load; the CPU the phase needed varies far
        # less, and told_s on an idle 2-core machine is about detected_s + its total / 2.
        # Nodes whose retransmissions to the dead home agent went unanswered may have gone
        # to a survivor of their own accord before it detected the death: told (or every
        # request sent) before detection used no CPU after it.
        cpu_told = timeline.between(detection, max(told_s, detection)) \
            if told_s is not None else None
        cpu_sent = timeline.between(detection, max(sent_s, detection)) \
            if sent_s is not None else None
        return {"detected_s": round(detection, 3), "primaries_s": round(seen["primaries"], 3),
                "told_s": told_s,
                "switch_requests_sent_s": sent_s,
                "cpu_detected_to_told_s": cpu_told,
                "cpu_detected_to_told_total_s": None if cpu_told is None
                else round(sum(cpu_told.values()), 2),
                "cpu_detected_to_sent_s": cpu_sent,
                "served_and_told_s": None if told_s is None
                else round(max(seen["primaries"], told_s), 3),
                "told_percentiles_s": told, "untold": phase["untold"],
                "unmoved": phase["unmoved"],
                "reregistered_percentiles_s": moved,
                "served_s": round(seen["registered"], 3),
                "consistent_s": round(consistent, 3), "check_attempts": len(attempts),
                "checked_s": round(checked, 3), "consistency": check,
                "peer_downs": _counter_sum(c, "event.peer-down", survivors) - downs0,
                "switch_sent": {s: _counter_read(c, s, "core.switch-sent") for s in survivors},
                "switch_retransmitted": {s: _counter_read(c, s, "core.switch-retransmitted")
                                         for s in survivors},
                "taken_over": {s: _counter_read(c, s, "core.taken-over") for s in survivors},
                "switch_answer_queued": {s: _counter_read(c, s, "core.switch-answer-queued")
                                         for s in survivors},
                "generator_drops": generator_drops(report0, report1),
                "ha_cpu_s": {k: round(cpu1[k] - cpu0[k], 2) for k in cpu1},
                "ha_cpu_until_served_s": {k: round(seen["cpu"][k] - cpu0[k], 2)
                                          for k in seen["cpu"]},
                "traffic_until_served": {s: {k: seen["traffic"][s][k] - traffic0[s][k]
                                             for k in TRAFFIC} for s in survivors},
                "generator_cpu_s": [round(b - a, 2) for a, b in zip(gen0, gen1)],
                # The load generator's own collections (haha.lab.generator, "Collections"):
                # a worker paused by one does not read the survivors' switch requests.
                "generator_gc_pauses_over_50ms": [
                    b - a for a, b in zip(report0["gc_pauses_over_50ms"],
                                          report1["gc_pauses_over_50ms"])],
                "generator_gc_longest_ms_so_far": report1["gc_longest_ms"],
                "profile_split": split, "profile_until": self.profile_until if split else None}

    def _profile(self, names, phase):
        """With ``--profile DIR``: a py-spy recorder on each home agent of ``names`` for this
        phase (raw collapsed stacks, ``DIR/PHASE-NAME.txt``; native frames left out)."""
        if not self.profile:
            return []
        os.makedirs(self.profile, exist_ok=True)
        spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        procs = []
        for ha in self.cluster.has:
            if ha.name in names:
                path = os.path.join(self.profile, f"{phase}-{ha.name}.txt")
                procs.append(subprocess.Popen(
                    [spy, "record", "--format", "raw", "--rate", "200", "-o", path,
                     "--pid", str(ha.process.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return procs

    def restart(self):
        """The killed home agent started again, relearning every binding."""
        c, first = self.cluster, self.cluster.has[0]
        t0 = time.monotonic()
        c.start(first.name)
        c.wait_for("restarted home agent serving", lambda: (c.control(
            first.name, "status", 10) or {}).get("state") == "serving",
            timeout=max(60, self.n / 500), interval=0.05)
        serving = time.monotonic() - t0
        load.wait("the restarted home agent holding every binding", lambda: (
            c.control(first.name, "status", 30) or {}).get("bindings") == self.n,
            self.timeout, self.interval)
        held = time.monotonic() - t0 - serving
        # The check asks every home agent for every binding and every worker for its nodes:
        # seconds at 10,000 nodes, far more at 100,000. Its own duration is not relearning:
        # the phase's value is when the state it found consistent was there (when the count
        # was reached, if the first check passes; else when the passing check began).
        attempts = []

        def consistent():
            attempts.append(time.monotonic() - t0 - serving)
            return self._consistent()
        check = load.wait("consistency with the restarted home agent", consistent,
                          self.timeout, max(0.5, self.interval))
        return {"serving_s": round(serving, 3),
                "relearned_s": round(held if len(attempts) == 1 else attempts[-1], 3),
                "held_s": round(held, 3), "check_attempts": len(attempts),
                "checked_s": round(time.monotonic() - t0 - serving, 3), "consistency": check}


#: The generator's socket counters of packets lost before a node saw them: the kernel's
#: drops for want of buffer (haha.lab.generator.SharedUdp.kernel_drops) and packets for no
#: node of the worker.
GENERATOR_DROPS = ("kernel_drops", "unknown_destination")


def generator_drops(before, after):
    """What the generator's sockets dropped between two reports, per counter (a switch
    request dropped there is a node never told: counted, not lost silently)."""
    return {k: after["transport"].get(k, 0) - before["transport"].get(k, 0)
            for k in GENERATOR_DROPS}


class CpuTimeline:
    """CPU seconds of named processes (``{name: pid}``), sampled (:meth:`sample`) at times
    counted from ``t0`` (``time.monotonic``): what each used between two instants of a phase
    (:meth:`between`, from the first samples at or after each). :meth:`start` samples every
    ``every`` seconds in a thread until :meth:`stop`: the phase's own polls ask busy control
    sockets and could leave seconds between two samples, so that the CPU "until sent" and
    "until told" read the same sample."""

    def __init__(self, pids, t0, every=0.05):
        self.pids = dict(pids)
        self.t0 = t0
        self.every = every
        self.samples = []  # (seconds after t0, {name: cpu seconds})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        def run():
            while not self._stop.wait(self.every):
                self.sample()
        self._thread = threading.Thread(target=run, name="cpu-timeline", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def sample(self):
        cpu = {}
        for name, pid in self.pids.items():
            try:
                cpu[name] = load.proc_stat(pid)[0]
            except OSError:  # gone: its last sample stands
                cpu[name] = self.samples[-1][1].get(name, 0.0) if self.samples else 0.0
        with self._lock:
            self.samples.append((time.monotonic() - self.t0, cpu))

    def at(self, t):
        """The first sample at or after ``t`` (the last one if none is)."""
        with self._lock:
            samples = sorted(self.samples, key=lambda x: x[0])
        for when, cpu in samples:
            if when >= t:
                return cpu
        return samples[-1][1]

    def between(self, a, b):
        """``{name: CPU seconds used between a and b}``, to 10 ms."""
        start, end = self.at(a), self.at(b)
        return {name: round(end[name] - start[name], 2) for name in end}


def _stop_profilers(procs):
    """End the py-spy recorders of :meth:`Run._profile` (SIGINT: each writes its file); a
    second call does nothing more."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


#: Where a survivor's time goes in the kill phase (``--profile``): each py-spy sample (a stack
#: of the reactor's thread while it was not idle: on a busy machine this includes waiting for
#: a CPU) goes to the first category whose test its stack passes. The timer's work (the home
#: agent's tick) is split by what it ran; what the tick queued is sealed and sent in the same
#: timer call ("timer: seal and send": switch requests, and the BIUs of take-over slices and
#: of held copies; "node SA derived for a switch request" apart).
PROFILE_SPLIT = (
    ("stall probe", lambda f: "StallProbe._run" in f),
    ("control socket", lambda f: any(x.startswith(("ControlProtocol", "ControlServer",
                                                   "_Streamer", "Control")) for x in f)),
    ("reading the socket", lambda f: "UdpTransport._read" in f
     and "Adapter.packet_received" not in f),
    ("peers: HELLOs", lambda f: "Peering.hello" in f or "Peering.send_hellos" in f),
    ("peers: BIUs/BIAs in (copies)", lambda f: "InputQueue._peers_first" in f),
    ("take-over slices", lambda f: "Backlog.run" in f or "take_over.<locals>.take" in f),
    ("switch requests: core tick", lambda f: "SwitchRequests.tick" in f),
    ("held copies released", lambda f: "HeldCopies.release" in f),
    ("timer: node SA derived for a switch request", lambda f: "Adapter._fire" in f
     and "NodeGroup.ensure" in f),
    ("timer: seal and send (switch requests, BIUs)", lambda f: "Adapter._fire" in f
     and ("Endpoint.apply" in f or "Adapter._carry_out" in f)),
    ("timer: other", lambda f: "Adapter._fire" in f),
    ("node traffic: ESP in", lambda f: "InputQueue._process" in f
     and "Endpoint.unprotect" in f),
    ("node traffic: core (registration)", lambda f: "InputQueue._process" in f
     and "HomeAgent.receive" in f),
    ("node traffic: answers sealed and sent", lambda f: "InputQueue._process" in f
     and ("Endpoint.apply" in f or "Adapter._carry_out" in f)),
    ("node traffic: other", lambda f: "InputQueue._process" in f),
    ("other", lambda f: True),
)


def profile_split(path):
    """``{category: share of the samples}`` of one py-spy raw file (:data:`PROFILE_SPLIT`),
    with ``samples`` the total."""
    counts = dict.fromkeys((name for name, _ in PROFILE_SPLIT), 0)
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit():
                continue
            frames = {x.split(" (")[0] for x in stack.split(";")}
            for name, test in PROFILE_SPLIT:
                if test(frames):
                    counts[name] += int(n)
                    break
            total += int(n)
    out = {k: round(v / total, 3) for k, v in counts.items() if v} if total else {}
    out["samples"] = total
    return out


#: The counters of a survivor's messages the kill phase reports (until every node registered
#: with a survivor): what it sent and received per node taken over.
TRAFFIC = ("core.switch-sent", "core.bu-accepted", "core.biu-sent", "received.BindingUpdate",
           "received.BindingInfoUpdate", "received.BindingInfoAck", "received.HaHello",
           "core.copies-held", "core.anti-entropy-repairs", "core.bir-received", "core.bu-duplicate",
           "udptransport.superseded", "udptransport.answered_dropped",
           "udptransport.slices_held", "udptransport.kernel_drops",
           "udptransport.dropped_backlog", "udptransport.dropped_source_backlog",
           "core.switch-answer-queued")


def _traffic(cluster, name):
    counters = load.wait(f"{name}'s counters", lambda: cluster.control(name, "counters"),
                         120, 0.1)
    return {k: counters.get(k, 0) for k in TRAFFIC}


def _failed(o, phase):
    return "failed" in o.get(phase, {"failed": "not run"})


def results(o):
    n, e = o["nodes"], o["echo"]
    out = []
    b = o["burst"]
    echo_s_for_n = e["seconds"] * n / e["packets"]
    burst_case = {"case": f"registration burst, {n} nodes, 3 home agents (UDP, ESP)",
                  "metric": "seconds from the burst until every node is registered and every "
                            "copy consistent", "unit": "s",
                  "baselines": {"echo-same-datagrams": float(f"{echo_s_for_n:.3g}")}}
    if _failed(o, "burst"):
        out.append(dict(burst_case, value=None, failed=b["failed"], state=b["state"]))
    else:
        bus = sum(b["binding_updates"].values())
        cpu_per_bu = sum(b["ha_cpu_s"].values()) / max(1, bus) * 1e6
        primary = b["ha_cpu_s"]["ha1"] / max(1, b["binding_updates"]["ha1"]) * 1e6
        # As the figures before the check was taken apart counted it (docs/scale.md).
        check = b.get("check_cpu_s", {}).get("ha1", 0.0)
        primary_with_check = (b["ha_cpu_s"]["ha1"] + check) \
            / max(1, b["binding_updates"]["ha1"]) * 1e6
        out += [
            dict(burst_case, value=b["consistent_s"] if b["consistency"]["consistent"] else None,
                 consistent=b["consistency"]["consistent"], registered_s=b["registered_s"],
                 checked_s=b["checked_s"],
                 latency_s=b["latency_s"], false_peer_downs=b["peer_downs"],
                 rate_limited=b["rate_limited"], binding_updates_received=bus,
                 generator_cpu_s=b["generator_cpu_s"],
                 longest_status_s=b["probe"]["longest_status_s"],
                 **_stalls(b["probe"])),
            {"case": f"daemon CPU per Binding Update during the burst ({n} nodes)",
             "metric": "microseconds of the three daemons' CPU per Binding Update received",
             "unit": "us", "value": round(cpu_per_bu, 1),
             "baselines": {"echo-per-datagram": round(e["us_per_packet"], 2)},
             "primary_only_us": round(primary, 1),
             "primary_with_check_us": round(primary_with_check, 1),
             "check_cpu_s": b.get("check_cpu_s")},
            {"case": "daemon CPU per Binding Update / echo CPU per datagram",
             "metric": "ratio", "unit": "x", "value": round(cpu_per_bu / e["us_per_packet"], 1),
             "baselines": {}, "primary_only": round(primary / e["us_per_packet"], 1)},
            {"case": "memory per binding", "metric": "RSS growth during the burst per binding",
             "unit": "octets", "value": o["memory"]["per_primary"],
             "baselines": {"per-copy": o["memory"]["per_copy"]},
             "per_primary_held": o["memory"].get("per_primary_held"),
             "per_copy_held": o["memory"].get("per_copy_held"),
             "per_primary_settled": o["memory"].get("per_primary_settled"),
             "per_copy_settled": o["memory"].get("per_copy_settled"),
             "trace_memory": o.get("trace_memory", False)},
        ]
    k = o.get("kill", {"failed": "not run (an earlier phase failed)"})
    kill_case = {"case": f"kill -9 of the primary of {n} nodes",
                 "metric": "seconds until every binding is primary at a survivor and every "
                           "node has been told by it (switch request received, or registered "
                           "with it)", "unit": "s"}
    if _failed(o, "kill"):
        out.append(dict(kill_case, value=None, baselines={}, failed=k["failed"],
                        state=k.get("state")))
    else:
        out.append(dict(kill_case, value=k["served_and_told_s"],
                        baselines={"failure-detection": k["detected_s"]},
                        primaries_s=k["primaries_s"], told_s=k["told_s"],
                        switch_requests_sent_s=k["switch_requests_sent_s"],
                        cpu_detected_to_told_s=k["cpu_detected_to_told_s"],
                        cpu_detected_to_told_total_s=k["cpu_detected_to_told_total_s"],
                        untold=k["untold"], registered_with_survivor_s=k["served_s"],
                        reregistered_s=k["reregistered_percentiles_s"]["p100"],
                        consistent_s=k["consistent_s"],
                        consistent=k["consistency"]["consistent"], peer_downs=k["peer_downs"],
                        generator_drops=k["generator_drops"],
                        generator_gc_pauses_over_50ms=k["generator_gc_pauses_over_50ms"],
                        peer_downs_expected=2,
                        longest_status_s=k["probe"]["longest_status_s"],
                 **_stalls(k["probe"])))
    r = o.get("restart", {"failed": "not run (an earlier phase failed)"})
    restart_case = {"case": f"restarted home agent relearning {n} bindings",
                    "metric": "seconds from serving until it holds a consistent copy of every "
                              "binding", "unit": "s"}
    if _failed(o, "restart"):
        out.append(dict(restart_case, value=None, baselines={}, failed=r["failed"],
                        state=r.get("state")))
    else:
        out.append(dict(restart_case, value=r["relearned_s"],
                        baselines={"start-up-to-serving": r["serving_s"]},
                        consistent=r["consistency"]["consistent"],
                        held_s=r.get("held_s"), checked_s=r.get("checked_s"),
                        longest_status_s=r["probe"]["longest_status_s"],
                 **_stalls(r["probe"])))
    out.append({"case": f"memory per configured node ({n} nodes, {o['node_keys']} keys)",
                "metric": "RSS delta",
                "unit": "octets", "value": o["memory"]["per_configured_node"],
                "baselines": {"rss-without-nodes": o["memory"]["rss_empty"]}})
    return out


def _stalls(probe):
    """A phase's reactor stalls, from each home agent's own probe (``status``'s ``reactor``,
    docs/operations.md): the longest (ms, 0 when none reached 10 ms), how many were 50 ms
    or more (the goal: none), and how many garbage collections paused it 50 ms or more."""
    return {"longest_stall_ms": probe.get("longest_stall_ms", {}),
            "stalls_over_50ms": probe.get("stalls_over_50ms", {}),
            "gc_pauses_over_50ms": probe.get("gc_pauses_over_50ms", {})}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 nodes")
    p.add_argument("--nodes", type=int, help="mobile nodes (default 10,000; 1,000 with "
                                             "--quick; 100,000 is the issue's goal)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="generator processes (default: several where the cores allow, "
                        "haha.lab.generator.default_workers)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per phase")
    p.add_argument("--ha-lifetime", type=int, default=HA_LIFETIME,
                   help="the home agents' lifetime (failure detection time), seconds")
    p.add_argument("--node-keys", choices=("group", "files"), default="group",
                   help="one node-group key for every node (default) or one key file each")
    p.add_argument("--admission", choices=("sized", "default"), default="sized",
                   help="the home agents' admission of new sources sized for the burst "
                        "(default, haha.lab.loadcluster.admission_lines) or the daemon's "
                        "defaults")
    p.add_argument("--take-over-share", choices=("split", "first"), default="split",
                   help="the survivors each take over their share of the dead one's nodes "
                        "(default) or the first-ranked takes all "
                        "(haha.lab.loadcluster.take_over_lines)")
    p.add_argument("--dir", help="keep configurations and logs here")
    p.add_argument("--profile", metavar="DIR",
                   help="record each home agent with py-spy during the burst, until every "
                        "home agent holds every binding, and each survivor during the kill "
                        "phase, until --profile-until (raw collapsed stacks in DIR, "
                        "PHASE-NAME.txt)")
    p.add_argument("--profile-until", choices=("served", "sent"), default="served",
                   help="with --profile: stop recording when every node is registered with a "
                        "survivor (served) or when every first switch request has left (sent)")
    p.add_argument("--split", nargs="+", metavar="FILE",
                   help="only print where the time of each py-spy raw profile FILE went "
                        "(PROFILE_SPLIT), as JSON, and run nothing")
    p.add_argument("--trace-memory", action="store_true",
                   help="start the home agents with allocation tracing (PYTHONTRACEMALLOC=1) "
                        "and record the primary's and a copy holder's allocation sites that "
                        "grew in the burst, per binding (raw.memory.split); tracing costs "
                        "memory and CPU: such a run's other figures are not comparable")
    p.add_argument("--memory-settle", type=float, default=0.0, metavar="SECONDS",
                   help="after the burst's check, wait SECONDS and measure the RSS per binding "
                        "again (per_primary_settled: what the home agents keep once the trims "
                        "due after the burst ran, haha.alloctrim; 12 covers the default "
                        "[memory] trim-interval)")
    p.add_argument("--phases", default="burst,kill,restart",
                   help="the phases to run, in order (comma-separated; kill and restart need "
                        "the burst before them)")
    args = p.parse_args(argv)
    if args.split:
        print(json.dumps({path: profile_split(path) for path in args.split}))
        return
    phases = tuple(args.phases.split(","))
    unknown = [x for x in phases if x not in ("burst", "kill", "restart")]
    if unknown or not phases or phases[0] != "burst":
        p.error(f"--phases: burst first, then kill and/or restart (got {args.phases!r})")
    n = args.nodes or (1000 if args.quick else 10000)
    directory = args.dir or tempfile.mkdtemp(prefix="haha-bench-scale-")
    load.stop_on_sigterm()
    try:
        o = Run(directory, n, args.workers, args.timeout, args.ha_lifetime, args.node_keys,
                args.admission, args.take_over_share, args.profile, phases,
                args.profile_until, args.trace_memory, args.memory_settle)()
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps({"bench": "scale", "results": results(o), "raw": o}))


if __name__ == "__main__":
    main()
