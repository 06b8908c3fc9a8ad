"""Benchmark: a home agent's memory per primary binding, per copy and per configured node.

Everything runs the daemon's own code path in one measured process: a ``HomeAgentService``
built from configuration text (ESP, a node-group key, one peer home agent with its pair key,
a sequence file, admission sized as ``bench/scale.py`` does, null backend) under a
``task.Clock``, fed complete IPv6 packets through a transport that hands them over in memory.

- ``primary``: N mobile nodes each send one ESP-protected Binding Update (Home Address option,
  their SAs derived from the group key, as ``twistd haha-mn`` would) to the measured home
  agent, ha1, which derives each node's SA pair, registers it and copies it to its peer;
- ``copy``: N other nodes register with the peer, ha2, which copies them to ha1 in Binding
  Information Updates.

The peer ha2 and the nodes live in a second process (the nodes' SAs and ha2's bindings would
otherwise count), connected by a pipe and run in lock step with the measured one: every 50 ms
of simulated time ha1's packets to ha2 go over, ha2 and new nodes' packets come back. ha2 is a
real ``HomeAgentService`` too, so HELLOs, BIUs and BIAs flow both ways as between daemons.

- ``trim``: with both held, one ``malloc_trim(0)`` (what the daemon calls after a burst,
  ``haha.alloctrim``): how long it holds the process and how much resident memory it gives
  back; then again with N datagrams' worth of freed fragments in the C allocator's heap (how
  reading with ``recvmsg`` left it after a burst): the longest walk a trim has to make;
- ``configured``: a home agent configured with ``node-key-dir`` holding N key files (one per
  node, as ``haha-lab load --node-keys files`` writes them), against one without; also its
  start-up time (building the service, which reads every file, until it serves).

Each figure is the growth over a baseline measured in the same process just before: the home
agent built, started, its peer alive, no binding (``primary``); the same with N primaries
(``copy``); a home agent with no node key (``configured``). RSS (``/proc/self/statm``, the
pages the process holds) and Python allocations (``tracemalloc``) are measured in separate
runs, since tracing costs memory of its own. Prints one JSON object (``bench``, ``results``);
``--quick`` runs 1,000 nodes (a smoke test: half a megabyte of growth is within what the
allocator holds in reserve, so its RSS figures can even come out negative; read the
``tracemalloc`` ones); the default is 10,000 and 100,000. At 10,000 nodes the cipher cache's
4,096 contexts (``[security] cipher-cache``) still weigh about 1 KB per primary binding.
"""

import argparse
import gc
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from ipaddress import IPv6Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.task import Clock  # noqa: E402
from zope.interface import implementer  # noqa: E402

from haha.interfaces import IMobilityTransport  # noqa: E402

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:1::2")
#: Node i of the primary phase has home address FIRST + i, of the copy phase FIRST + OFFSET + i.
FIRST = int(IPv6Address("2001:db8:1::1:0"))
OFFSET = 1 << 32
COA = int(IPv6Address("2001:db8:21::"))
STEP = 0.05  # simulated seconds between exchanges with the peer process
RATE = 10000  # new nodes a simulated second

HA_TEXT = """\
[home-agent]
address = {address}
home-prefix = 2001:db8:1::/64
configuration = separate-links
home-interface = eth0
preference = {preference}
lifetime = 30
hello-interval = 1
boot-wait = 1
max-binding-lifetime = 3600
router-advertisements = no
[peers]
static = {peer}
[peer-keys]
{peer} = {dir}/pair.key
[security]
sequence-file = {dir}/{name}.seq
{security}
[log]
level = warn
"""


@implementer(IMobilityTransport)
class Handover:
    """A transport holding what the service sends until the bench takes it."""

    def __init__(self) -> None:
        self.receiver = None
        self.sent: list[bytes] = []
        self.counters: dict[str, int] = {}

    def start(self, receiver):
        self.receiver = receiver

    def send(self, packet, interface=None):
        self.sent.append(packet)

    def stop(self):
        self.receiver = None

    def take(self) -> list[bytes]:
        sent, self.sent = self.sent, []
        return sent


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(trace: bool) -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if trace else _rss()


def _trim(n: int) -> dict | None:
    """One ``malloc_trim(0)`` (haha.alloctrim) at this heap: what it costs (wall clock and CPU)
    and what it gives back (RSS, the allocator's freed memory before and after); then one more
    with the freed fragments of ``n`` datagrams added (``fragmented``); None without glibc's
    ``malloc_trim``."""
    from haha.alloctrim import system_library
    from haha.control.memory import malloc_figures

    library = system_library()
    if library is None:
        return None
    gc.collect()
    before, malloc_before = _rss(), malloc_figures()
    t0, c0 = time.perf_counter(), time.thread_time()
    library.malloc_trim(0)
    seconds, cpu = time.perf_counter() - t0, time.thread_time() - c0
    malloc_after = malloc_figures()
    out = {"ms": seconds * 1e3, "cpu_ms": cpu * 1e3, "rss_before": before,
           "rss_after": _rss(), "malloc_before": malloc_before, "malloc_after": malloc_after}
    # The worst heap a trim walks: one free fragment per datagram of a burst, as reading with
    # recvmsg left them (an 8 KiB block per datagram shrunk to its size, long-lived blocks
    # made in between; haha.io.udp now reads into one buffer), all freed.
    keep, residue = [], []
    for _ in range(n):
        block = bytearray(8192)
        del block[200:]
        residue.append(block)
        keep.append(bytearray(600))
    del residue
    held = malloc_figures()
    t0, c0 = time.perf_counter(), time.thread_time()
    library.malloc_trim(0)
    out["fragmented"] = {"datagrams": n, "free_held": held and held["free_held"],
                         "ms": (time.perf_counter() - t0) * 1e3,
                         "cpu_ms": (time.thread_time() - c0) * 1e3}
    del keep
    return out


def _top(before: "tracemalloc.Snapshot", n: int, lines: int = 30) -> list[str]:
    """The source lines whose allocations grew most since ``before``, per node."""
    gc.collect()
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = tracemalloc.take_snapshot().filter_traces(own).compare_to(
        before.filter_traces(own), "lineno")
    return [f"{d.size_diff / n:8.1f} B  {d.traceback[0].filename.rsplit('/haha/', 1)[-1]}:"
            f"{d.traceback[0].lineno}" for d in diff[:lines]]


def _security(n: int, extra: str) -> str:
    """``[security]``: ``extra`` and admission sized for ``n`` as ``bench/scale.py`` does
    (``max-sources`` at its default, 4,096: the table of unauthenticated sources is bounded by
    that setting, not by the nodes; about 120 octets per tracked source)."""
    from haha.lab.loadcluster import admission_lines

    return "\n".join([extra] + admission_lines(n))


def _service(directory: str, name: str, address: IPv6Address, peer: IPv6Address,
             security: str, clock: Clock, transport: Handover):
    from haha.backends.null import NullBackend
    from haha.config import home_agent_from_text
    from haha.discovery.static import StaticDiscovery
    from haha.service import HomeAgentService

    text = HA_TEXT.format(address=address, peer=peer, dir=directory, name=name,
                          preference=2 if address == HA1 else 1, security=security)
    config = home_agent_from_text(text, os.path.join(directory, f"{name}.conf"))
    return HomeAgentService.build(config, clock, backend=NullBackend(), transport=transport,
                                  discovery=StaticDiscovery(config.peers))


def _dst(packet: bytes) -> IPv6Address:
    return IPv6Address(bytes(packet[24:40]))


# -- the peer process: ha2 and the mobile nodes ------------------------------------------------

def _bu(group_key: bytes, hoa: IPv6Address, coa: IPv6Address, ha: IPv6Address) -> bytes:
    """A node's first Binding Update to ``ha``, ESP-protected under its derived SA pair."""
    from haha.security.keyring import NodeKeyring
    from haha.security.keys import derive_node_secret
    from haha.security.sadb import SecurityAssociationDatabase
    from haha.wire.ipv6 import build_packet
    from haha.wire.mh import BU_A, BU_H, BindingUpdate, encode_mh
    from haha.wire.numbers import IPPROTO_ESP, IPPROTO_MH

    sadb = SecurityAssociationDatabase()
    NodeKeyring(derive_node_secret(group_key, hoa), hoa, sadb).ensure(ha)
    mh = encode_mh(BindingUpdate(1, flags=BU_A | BU_H, lifetime=900), hoa, ha)
    return build_packet(coa, ha, IPPROTO_ESP, sadb.protect(ha, IPPROTO_MH, mh),
                        home_address=hoa)


def _peer(conn, directory: str, n: int) -> None:
    with open(os.path.join(directory, "group.hex")) as f:
        group_key = bytes.fromhex(f.read())
    clock = Clock()
    transport = Handover()
    svc = _service(directory, "ha2", HA2, HA1,
                   _security(n, f"node-group-key = {directory}/group.key"), clock, transport)
    svc.startService()
    machine = svc.adapter.machine
    made = {"ha1": 0, "ha2": 0}
    while True:
        msg = conn.recv()
        if msg is None:
            break
        packets, for_ha1, for_ha2 = msg
        clock.advance(STEP)
        for p in packets:
            transport.receiver(p)
        out = []
        for _ in range(for_ha2):
            i = OFFSET + made["ha2"]
            made["ha2"] += 1
            transport.receiver(_bu(group_key, IPv6Address(FIRST + i), IPv6Address(COA + i),
                                   HA2))
        for _ in range(for_ha1):
            i = made["ha1"]
            made["ha1"] += 1
            out.append(_bu(group_key, IPv6Address(FIRST + i), IPv6Address(COA + i), HA1))
        out.extend(p for p in transport.take() if _dst(p) == HA1)
        cache = machine.cache
        conn.send((out, cache.primary_count, len(cache) - cache.primary_count))
    svc.stopService()
    conn.close()


# -- the measured process ----------------------------------------------------------------------

def bindings(n: int, trace: bool) -> dict:
    """Bytes per primary and per copy at ``n`` of each (module docstring)."""
    from haha.security.keys import generate_key_file

    directory = tempfile.mkdtemp(prefix="haha-memory-")
    group = os.urandom(32)
    generate_key_file(os.path.join(directory, "group.key"), rng=lambda k: group)
    with open(os.path.join(directory, "group.hex"), "w") as f:
        f.write(group.hex())
    generate_key_file(os.path.join(directory, "pair.key"))
    if trace:
        tracemalloc.start()
    clock = Clock()
    transport = Handover()
    svc = _service(directory, "ha1", HA1, HA2,
                   _security(n, f"node-group-key = {directory}/group.key"), clock, transport)
    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    peer = ctx.Process(target=_peer, args=(there, directory, n), daemon=True)
    peer.start()
    svc.startService()
    cache = svc.adapter.machine.cache
    state = {"peer_primaries": 0, "peer_copies": 0}

    def step(for_ha1: int = 0, for_ha2: int = 0) -> None:
        clock.advance(STEP)
        here.send(([p for p in transport.take() if _dst(p) == HA2], for_ha1, for_ha2))
        packets, state["peer_primaries"], state["peer_copies"] = here.recv()
        for p in packets:
            transport.receiver(p)

    def run_until(done, sent_per_step, total, which) -> float:
        sent = 0
        start = clock.seconds()
        for _ in range(int(600 / STEP)):
            k = min(sent_per_step, total - sent)
            sent += k
            step(**{which: k})
            if sent == total and done():
                for _ in range(int(2 / STEP)):  # let the last BIUs and BIAs settle
                    step()
                return clock.seconds() - start
        raise SystemExit(f"memory bench: not done after 600 simulated seconds "
                         f"(primaries {cache.primary_count}, bindings {len(cache)}, "
                         f"peer {state})")

    for _ in range(int(4 / STEP)):  # boot wait, HELLOs both ways
        step()
    per_step = int(RATE * STEP)
    base = _measure(trace)
    snap = tracemalloc.take_snapshot() if trace else None
    t0 = time.process_time()
    run_until(lambda: cache.primary_count == n and state["peer_copies"] == n, per_step, n,
              "for_ha1")
    cpu_primaries = time.process_time() - t0
    with_primaries = _measure(trace)
    top_primary = _top(snap, n) if snap is not None else []
    snap = tracemalloc.take_snapshot() if trace else None
    run_until(lambda: len(cache) - cache.primary_count == n, per_step, n, "for_ha2")
    with_copies = _measure(trace)
    top_copy = _top(snap, n) if snap is not None else []
    snap = None
    trim = None if trace else _trim(n)
    counters = svc.counters()
    here.send(None)
    peer.join(60)
    svc.stopService()
    if trace:
        tracemalloc.stop()
    shutil.rmtree(directory, ignore_errors=True)
    return {"nodes": n, "method": "tracemalloc" if trace else "rss", "baseline": base,
            "with_primaries": with_primaries, "with_copies": with_copies,
            "per_primary": (with_primaries - base) / n,
            "per_copy": (with_copies - with_primaries) / n,
            "cpu_per_primary_us": cpu_primaries / n * 1e6,
            "top_per_primary": top_primary, "top_per_copy": top_copy, "trim": trim,
            "auth_failed": counters.get("securityassociationdatabase.auth-failed", 0)}


def configured(n: int, trace: bool) -> dict:
    """Bytes per configured node with ``n`` node key files, and the start-up time."""
    from haha.lab.loadnodes import write_node_keys
    from haha.security.keys import generate_key_file

    directory = tempfile.mkdtemp(prefix="haha-memory-")
    generate_key_file(os.path.join(directory, "pair.key"))
    write_node_keys(os.path.join(directory, "nodes"), os.urandom(32), n)
    if trace:
        tracemalloc.start()
    out = {"nodes": n, "method": "tracemalloc" if trace else "rss"}
    # A first service, not measured: imports and first-use caches are not the nodes'.
    services = [_service(directory, "warm-up", HA1, HA2, _security(n, ""), Clock(), Handover())]
    for label, security in (("baseline", ""), ("configured", f"node-key-dir = {directory}/nodes")):
        before = _measure(trace)
        clock = Clock()
        t0 = time.perf_counter()
        c0 = time.process_time()
        svc = _service(directory, label, HA1, HA2, _security(n, security), clock, Handover())
        svc.startService()
        out[f"{label}_startup_s"] = time.perf_counter() - t0
        out[f"{label}_startup_cpu_s"] = time.process_time() - c0
        services.append(svc)  # kept alive: what it holds is what is measured
        out[label] = _measure(trace) - before
    out["per_node"] = (out["configured"] - out["baseline"]) / n
    if trace:
        tracemalloc.stop()
    shutil.rmtree(directory, ignore_errors=True)
    return out


def _child(kind: str, n: int, trace: bool) -> dict:
    cmd = [sys.executable, __file__, "--run", kind, "--nodes", str(n)]
    if trace:
        cmd.append("--trace")
    done = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    result: dict = json.loads(done.stdout)
    return result


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 nodes only")
    p.add_argument("--nodes", type=int, action="append",
                   help="node counts (repeatable; default 10,000 and 100,000)")
    p.add_argument("--no-trace", action="store_true", help="RSS only (no tracemalloc runs)")
    p.add_argument("--run", choices=("bindings", "configured"), help=argparse.SUPPRESS)
    p.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.run:
        n = args.nodes[0]
        print(json.dumps((bindings if args.run == "bindings" else configured)(n, args.trace)))
        return
    counts = args.nodes or ([1000] if args.quick else [10000, 100000])
    methods = (False,) if args.no_trace else (False, True)
    raw = []
    results = []
    for n in counts:
        for trace in methods:
            b = _child("bindings", n, trace)
            c = _child("configured", n, trace)
            raw += [b, c]
            m = b["method"]
            results.append({"case": f"per primary binding, {n:,} nodes ({m})",
                            "metric": "bytes of growth per primary binding", "unit": "B",
                            "value": round(b["per_primary"]),
                            "baselines": {"home agent with its peer, no binding":
                                          b["baseline"]}})
            results.append({"case": f"per copy, {n:,} copies ({m})",
                            "metric": "bytes of growth per Binding Cache Copy", "unit": "B",
                            "value": round(b["per_copy"]),
                            "baselines": {f"home agent with {n:,} primaries":
                                          b["with_primaries"]}})
            if b.get("trim"):
                t = b["trim"]
                results.append({"case": f"malloc_trim(0) with {n:,} primaries and copies",
                                "metric": "milliseconds one call holds the process "
                                          "(wall clock; cpu_ms: its CPU)", "unit": "ms",
                                "value": round(t["ms"], 2), "cpu_ms": round(t["cpu_ms"], 2),
                                "released_per_binding": round(
                                    (t["rss_before"] - t["rss_after"]) / (2 * n)),
                                "baselines": {"rss before": t["rss_before"]}})
                f = t["fragmented"]
                results.append({"case": f"malloc_trim(0) with {n:,} primaries and copies and "
                                        f"the freed fragments of {n:,} datagrams",
                                "metric": "milliseconds one call holds the process "
                                          "(wall clock; cpu_ms: its CPU)", "unit": "ms",
                                "value": round(f["ms"], 2), "cpu_ms": round(f["cpu_ms"], 2),
                                "baselines": {"free_held": f["free_held"]}})
            results.append({"case": f"per configured node, {n:,} node-key files ({m})",
                            "metric": "bytes of growth per configured node", "unit": "B",
                            "value": round(c["per_node"]),
                            "baselines": {"home agent without node keys": c["baseline"]}})
            if not trace:
                results.append({"case": f"start-up with {n:,} node-key files",
                                "metric": "seconds from building the service to serving",
                                "unit": "s", "value": round(c["configured_startup_s"], 3),
                                "baselines": {"without node keys":
                                              round(c["baseline_startup_s"], 3)}})
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(json.dumps({"bench": "memory", "loadavg": load, "results": results, "raw": raw}))


if __name__ == "__main__":
    main()
