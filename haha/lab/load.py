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

The parts: :mod:`haha.lab.loadnodes` (identities and node keys), :mod:`haha.lab.loadcluster`
(the home agents and their probe), :mod:`haha.lab.generator` (the worker processes and the echo
baseline), :mod:`haha.lab.consistency` (the check); every name stays importable from here.

``haha-lab load --nodes N`` (:func:`main`) runs one burst on a 3-home-agent set, checks every
binding and prints a JSON report; ``bench/scale.py`` runs the whole benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypedDict, TypeVar, Unpack

from .cluster import free_udp_ports
from .consistency import BindingView, Consistency, check_consistency
from .generator import (EchoResult, Generator, GeneratorReport, SharedUdp, WorkerReport,
                        WorkerSpec, _EchoClient, _NodeView, _Worker, _worker_main,
                        bu_packet_size, default_workers, echo_main)
from .loadcluster import (ClusterOptions, ControlProbe, LoadCluster, ProbeReport,
                          admission_lines, proc_stat)
from .loadnodes import (BINDING_LIFETIME, CARE_OF_PREFIX, FIRST_HOME, care_of_prefix,
                        home_address, node_secret, split, write_node_keys)

__all__ = [
    "BINDING_LIFETIME", "CARE_OF_PREFIX", "FIRST_HOME", "BindingView", "BurstResult",
    "ClusterOptions", "Consistency", "ControlProbe", "EchoResult", "Generator",
    "GeneratorReport", "LoadCluster", "ProbeReport", "SharedUdp", "WorkerReport",
    "WorkerSpec", "_EchoClient", "_NodeView", "_Worker", "_worker_main", "admission_lines",
    "bu_packet_size", "burst", "care_of_prefix", "check_consistency", "echo_main",
    "home_address", "launch_cluster", "main", "node_secret", "percentiles", "poll_interval",
    "proc_stat", "split", "start_cluster", "stop_on_sigterm", "wait", "wait_serving",
    "write_node_keys"]

T = TypeVar("T")


class BurstResult(TypedDict):
    """:func:`burst`'s figures: seconds until every node was registered and until every
    binding was consistent (every home agent counting a binding for every node, the check
    that follows passing), until that check ended, the check, registration latency
    percentiles, each worker's CPU seconds during the phase, the nodes' core counters
    summed."""

    nodes: int
    registered_s: float
    consistent_s: float
    checked_s: float
    consistency: Consistency
    latency_s: dict[str, float | None]
    generator_cpu_s: list[float]
    node_counters: dict[str, int]


def percentiles(values: Sequence[float],
                points: Sequence[int] = (50, 90, 99, 100)) -> dict[str, float | None]:
    """``{"p50": ..., ...}`` of ``values`` (sorted or not), in seconds rounded to ms."""
    if not values:
        return {f"p{q}": None for q in points}
    s = sorted(values)
    return {f"p{q}": round(s[min(len(s) - 1, max(0, -(-q * len(s) // 100) - 1))], 3)
            for q in points}


# -- one run ------------------------------------------------------------------------------------


def poll_interval(n_nodes: int) -> float:
    """How often to ask the workers and home agents while waiting: a report walks every node,
    so it is asked for less often with more nodes (the generator must not become the load)."""
    return max(0.05, n_nodes / 100000)


def wait(what: str, predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Poll ``predicate`` until true; its value, or TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout} s")
        time.sleep(interval)


def launch_cluster(directory: str | os.PathLike[str], n_nodes: int, workers: int,
                   run_secret: bytes | None = None, **cluster_args: Unpack[ClusterOptions]
                   ) -> tuple[LoadCluster, list[int], bytes]:
    """A written :class:`LoadCluster` with its home agents started (not yet serving), and the
    generator's ports: ``(cluster, ports, run_secret)``."""
    run_secret = run_secret or os.urandom(32)
    ports = free_udp_ports(workers)
    cluster = LoadCluster(directory, n_nodes, ports, run_secret, **cluster_args)
    cluster.write()
    for ha in cluster.has:
        cluster.start(ha.name)
    return cluster, ports, run_secret


def wait_serving(cluster: LoadCluster) -> None:
    """Wait until every home agent of ``cluster`` serves (loading many node keys takes a
    while: the timeout grows with them)."""
    for ha in cluster.has:
        cluster.wait_for(f"{ha.name} serving", lambda ha=ha: (
            cluster.control(ha.name, "status", timeout=10) or {}).get("state") == "serving",
            timeout=max(60, cluster.n_nodes / 500))


def start_cluster(directory: str | os.PathLike[str], n_nodes: int, workers: int,
                  run_secret: bytes | None = None, **cluster_args: Unpack[ClusterOptions]
                  ) -> tuple[LoadCluster, list[int], bytes]:
    """:func:`launch_cluster`, then :func:`wait_serving`."""
    cluster, ports, run_secret = launch_cluster(directory, n_nodes, workers, run_secret,
                                                **cluster_args)
    try:
        wait_serving(cluster)
    except BaseException:
        cluster.kill_all()
        raise
    return cluster, ports, run_secret


def burst(cluster: LoadCluster, generator: Generator, timeout: float,
          on_held: Callable[[], object] | None = None) -> BurstResult:
    """Start every node at once; wait until all are registered and every binding is
    consistent on every home agent. Returns the phase's figures. ``on_held``, when given, is
    called once every home agent counts a binding for every node, before the consistency
    check (which asks each of them for everything): a caller measuring the home agents' CPU
    takes it there, so the check's own cost is not counted as the burst's."""
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

    def settled() -> bool:
        counts: list[dict[str, Any]] = [  # the status answers (JSON objects)
            cluster.control(ha.name, "status", timeout=30) or {} for ha in cluster.has]
        return all(c.get("bindings") == n for c in counts) and \
            sum(c.get("primaries", 0) for c in counts) == n

    wait("a binding for every node at every home agent", settled, timeout,
         interval=poll_interval(n))
    held = time.monotonic() - t0
    if on_held is not None:
        on_held()
    # The check asks every home agent for every binding and every worker for its nodes (about
    # 18 s at 100,000 nodes): its own duration is not convergence. The value is when the
    # state it then finds consistent was there, the instant every count was reached; the
    # check's end is reported apart (checked_s).
    check = check_consistency(cluster.views(), generator.home_addresses, generator.homes())
    checked = time.monotonic() - t0
    report = generator.report(latencies=True)
    cpu = [round(b - a, 2) for a, b in zip(cpu0, report["cpu_s"])]
    return {"nodes": n, "registered_s": round(registered, 3),
            "consistent_s": round(held, 3), "checked_s": round(checked, 3),
            "consistency": check,
            "latency_s": percentiles(report["latencies"]),
            # Each worker's CPU during the phase: far below registered_s each, the generator
            # was waiting for the home agents, not the other way round.
            "generator_cpu_s": cpu,
            "node_counters": dict(report["core"])}


def stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the daemons and workers started are cleaned up."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(f"terminated by signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """``haha-lab load``: one burst, its figures as JSON on standard output; an exit status
    (1 when the bindings are not consistent or the run failed)."""
    p = argparse.ArgumentParser(prog="haha-lab load", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, default=1000, help="mobile nodes (default 1000)")
    p.add_argument("--workers", type=int, default=default_workers(),
                   help="generator processes (default: several where the cores allow, "
                        "haha.lab.generator.default_workers)")
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
        has = cluster.udp_endpoints()
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
