"""The many-node load generator (haha.lab.load) and the scale benchmark (bench/scale.py).

The consistency check is shown to fail on every kind of disagreement (fakes of the control
sockets' ``bindings`` answers); then a handful of generated nodes register, in two generator
processes, with three real ``twistd -n haha`` daemons, every binding checks out, and the same
check fails when one binding is taken out of a real answer. The benchmark runs end to end on a
few nodes and prints its JSON shape.
"""

import json
import os
import subprocess
import sys

import pytest

from haha.lab import load
from haha.security.keys import load_secret

HA1, HA2, HA3 = "2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"
NODES = [load.home_address(i) for i in range(3)]


def _views(primary=HA1, nodes=NODES):
    def binding(hoa, ha):
        return {"home_address": str(hoa), "primary": primary, "copy": ha != primary,
                "care_of": "2001:db8:21::1", "sequence": 1}
    return {ha: [binding(n, ha) for n in nodes] for ha in (HA1, HA2, HA3)}


def test_consistency_accepts_a_consistent_set():
    """One primary per node, copies naming it everywhere else, nodes registered with it."""
    result = load.check_consistency(_views(), NODES, {str(n): HA1 for n in NODES})
    assert result == {"consistent": True, "problems": 0, "examples": []}


def test_consistency_fails_on_a_missing_binding():
    """A home agent without a copy of one node's binding makes the set inconsistent."""
    views = _views()
    views[HA3] = views[HA3][1:]
    result = load.check_consistency(views, NODES)
    assert not result["consistent"] and result["problems"] == 1
    assert result["examples"] == [f"{NODES[0]}: no binding at {HA3}"]


def test_consistency_fails_on_every_kind_of_disagreement():
    """Two primaries, a dead primary, a wrong role, a node registered elsewhere, and bindings
    of nodes nobody started are each reported."""
    views = _views()
    views[HA2][0] = dict(views[HA2][0], primary=HA2, copy=False)  # two primaries
    views[HA1][1] = dict(views[HA1][1], copy=True)  # the primary calls itself a copy
    result = load.check_consistency(views, NODES, {str(n): HA1 for n in NODES})
    assert result["problems"] == 2
    assert "disagree on the primary" in result["examples"][0]
    assert f"role wrong at {HA1}" in result["examples"][1]

    dead = {HA2: _views(primary=HA1)[HA2], HA3: _views(primary=HA1)[HA3]}
    result = load.check_consistency(dead, NODES)
    assert result["problems"] == 3 and "not a live home agent" in result["examples"][0]

    homes = {str(n): HA1 for n in NODES}
    homes[str(NODES[2])] = HA2
    result = load.check_consistency(_views(), NODES, homes)
    assert result["examples"] == [f"{NODES[2]}: the node is registered with {HA2}, the home "
                                  f"agents say {HA1}"]

    result = load.check_consistency(_views(), NODES[:2])
    assert result["problems"] == 3 and "1 bindings of unknown nodes" in result["examples"][0]


def test_node_keys_and_shares(tmp_path):
    """Node key files hold the secret the workers derive (the home agents load them with the
    daemons' loader, mode 0600), and nodes are spread over workers without gaps."""
    secret = os.urandom(32)
    load.write_node_keys(tmp_path, secret, 3)
    assert sorted(os.listdir(tmp_path)) == sorted(f"{n}.key" for n in NODES)
    for n in NODES:
        assert load_secret(str(tmp_path / f"{n}.key")) == load.node_secret(secret, n)
    assert load.node_secret(secret, NODES[0]) != load.node_secret(secret, NODES[1])
    assert load.split(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert load.percentiles([3, 1, 2, 4]) == {"p50": 2, "p90": 4, "p99": 4, "p100": 4}


@pytest.mark.process
@pytest.mark.slow
def test_generator_registers_every_node_and_the_check_sees_a_loss(tmp_path):
    """Six generated nodes in two worker processes register with three real home agents;
    every binding is consistent on every home agent, with the nodes' own view; removing one
    binding from a real answer makes the check fail; the echo baseline answers every
    datagram."""
    cluster, ports, secret = load.start_cluster(tmp_path, 6, 2)
    try:
        has = [(ha.address, ha.port) for ha in cluster.has]
        with load.Generator(6, 2, has, ports, secret) as generator:
            phase = load.burst(cluster, generator, timeout=60)
            assert phase["consistency"]["consistent"], phase["consistency"]
            homes = generator.homes()
            assert set(homes) == {str(n) for n in generator.home_addresses}
            assert set(homes.values()) == {HA1}
            assert phase["latency_s"]["p100"] is not None
            views = cluster.views()
            views[HA2] = [b for b in views[HA2] if b["home_address"] != str(NODES[1])]
            result = load.check_consistency(views, generator.home_addresses, homes)
            assert result["examples"] == [f"{NODES[1]}: no binding at {HA2}"]
            sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
            import scale

            echo = scale.echo_baseline(generator, 500, load.bu_packet_size())
            assert echo["packets"] == 500 and echo["sent"] >= 500 and echo["cpu_s"] >= 0
    finally:
        cluster.kill_all()


@pytest.mark.process
@pytest.mark.slow
def test_benchmark_runs_end_to_end(tmp_path):
    """bench/scale.py with a few nodes: every case present with a baseline, every phase
    consistent (burst, after kill -9 of the primary, after its restart), each phase with the
    home agents' own stall figures."""
    bench = os.path.join(os.path.dirname(__file__), "..", "bench", "scale.py")
    out = subprocess.run([sys.executable, bench, "--nodes", "8", "--workers", "1",
                          "--timeout", "60"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    assert report["bench"] == "scale"
    cases = {r["case"].split(",")[0].split(" (")[0]: r for r in report["results"]}
    assert len(report["results"]) == 7
    for r in report["results"]:
        assert {"case", "metric", "unit", "value", "baselines"} <= set(r)
    assert cases["registration burst"]["consistent"]
    assert cases["registration burst"]["baselines"]["echo-same-datagrams"] > 0
    assert cases["kill -9 of the primary of 8 nodes"]["consistent"]
    assert cases["restarted home agent relearning 8 bindings"]["consistent"]
    assert report["raw"]["kill"]["detected_s"] > 0, report["raw"]["kill"]
    assert report["raw"]["restart"]["consistency"]["examples"] == []
    # each survivor's messages and CPU until every node was registered with one
    kill = report["raw"]["kill"]
    traffic = kill["traffic_until_served"]
    assert set(traffic) == set(kill["ha_cpu_until_served_s"]) == {"ha2", "ha3"}
    assert sum(t["core.bu-accepted"] for t in traffic.values()) >= 8
    assert sum(t["core.switch-sent"] for t in traffic.values()) >= 1
    # the CPU of each survivor and generator process from detection to every node told
    assert set(kill["cpu_detected_to_told_s"]) == {"ha2", "ha3", "generator0"}
    assert kill["cpu_detected_to_told_total_s"] >= 0
    # every phase has each running home agent's own reactor stalls (haha.stallprobe)
    assert set(cases["registration burst"]["longest_stall_ms"]) == {"ha1", "ha2", "ha3"}
    assert set(cases["kill -9 of the primary of 8 nodes"]["longest_stall_ms"]) == {"ha2", "ha3"}
    assert "stalls_over_50ms" in cases["restarted home agent relearning 8 bindings"]


def test_benchmark_traces_the_home_agents_memory_on_request():
    """bench/scale.py --trace-memory starts real home agents with PYTHONTRACEMALLOC=1: their
    control sockets' `memory` then answers allocation sites, and the burst's split per binding
    of the primary and a copy holder has their growth since the mark taken before the burst
    (haha's own binding cache among them); without the option the split has RSS and the C
    allocator's figures and no sites."""
    bench = os.path.join(os.path.dirname(__file__), "..", "bench", "scale.py")
    reports = []
    for extra in (["--trace-memory"], []):
        out = subprocess.run([sys.executable, bench, "--nodes", "8", "--workers", "1",
                              "--timeout", "60", "--phases", "burst"] + extra,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        reports.append(json.loads(out.stdout)["raw"])
    traced, plain = reports
    assert traced["trace_memory"] is True and plain["trace_memory"] is False
    for name in ("ha1", "ha2"):
        split = traced["memory"]["split"][name]
        assert split["tracing_overhead"] > 0 and "traced_growth_per_binding" in split
        sites = [site for site, _, _ in split["sites_per_binding"]]
        assert len(sites) == 40 and any(s.startswith("haha/core/cache.py:") for s in sites)
        assert "sites_per_binding" not in plain["memory"]["split"][name]
        assert "rss_growth_per_binding" in plain["memory"]["split"][name]


def test_benchmark_phases_are_checked():
    """bench/scale.py's --phases must start with the burst (kill and restart need its
    bindings) and name only known phases: anything else is a usage error before anything
    starts."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import scale

    for phases in ("kill", "burst,nap", ""):
        with pytest.raises(SystemExit) as e:
            scale.main(["--nodes", "8", "--phases", phases])
        assert e.value.code == 2


def test_profile_split_puts_each_sample_in_the_first_matching_category(tmp_path, capsys):
    """bench/scale.py's split of a survivor's py-spy profile: each raw stack's samples go to
    the first category of PROFILE_SPLIT its frames match (a node SA derived under the timer
    apart from sealing, node traffic by its step, peers' packets before node traffic);
    shares add up to 1 and ``--split`` prints them without running anything."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import scale

    base = "<module> (twistd:8);ReactorBase.run (twisted/internet/base.py:686);"
    fire = base + "Adapter._fire (haha/protocol.py:1);Endpoint.handle_timer (haha/endpoint.py:2);"
    node = base + "InputQueue._process (haha/io/rxqueue.py:3);Adapter.packet_received (x:4);"
    lines = [
        fire + "HomeAgent._tick (haha/core/homeagent.py:5);Backlog.run (haha/core/slices.py:6) 7",
        fire + "Endpoint.apply (e:7);Endpoint.send_mh (e:8);NodeGroup.ensure (n:9) 5",
        fire + "Endpoint.apply (e:7);Endpoint.send_mh (e:8);OutboundSA.seal (s:1) 3",
        node + "Endpoint.receive (e:2);HomeAgentEndpoint.unprotect (e:3);"
               "Endpoint.unprotect (e:4) 4",
        node + "Endpoint.receive (e:2);HomeAgent.receive (h:1);Registrar.binding_update (r:1) 6",
        base + "InputQueue._process (q:1);InputQueue._peers_first (q:2);"
               "HomeAgent.receive (h:1) 2",
        base + "StallProbe._run (haha/stallprobe.py:103) 1",
        base + "EPollReactor.doPoll (t:1);UdpTransport._read (haha/io/udp.py:204) 2",
        "garbage line without a count",
    ]
    path = tmp_path / "kill-ha2.txt"
    path.write_text("\n".join(lines) + "\n")
    split = scale.profile_split(str(path))
    assert split["samples"] == 30
    assert split["take-over slices"] == round(7 / 30, 3)
    assert split["timer: node SA derived for a switch request"] == round(5 / 30, 3)
    assert split["timer: seal and send (switch requests, BIUs)"] == round(3 / 30, 3)
    assert split["node traffic: ESP in"] == round(4 / 30, 3)
    assert split["node traffic: core (registration)"] == round(6 / 30, 3)
    assert split["peers: BIUs/BIAs in (copies)"] == round(2 / 30, 3)
    assert split["stall probe"] == round(1 / 30, 3)
    assert split["reading the socket"] == round(2 / 30, 3)
    assert abs(sum(v for k, v in split.items() if k != "samples") - 1) < 0.01
    scale.main(["--split", str(path)])
    assert json.loads(capsys.readouterr().out) == {str(path): split}


def test_cpu_timeline_gives_what_each_process_used_between_two_instants(monkeypatch):
    """bench/scale.py's CpuTimeline (the kill phase's CPU from detection to every node told):
    the CPU each named process used between the first samples at or after two instants,
    the last sample standing for a later instant, a vanished process keeping its last
    figure."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import scale

    clock = {"t": 100.0}
    cpu = {1: 0.0, 2: 5.0}

    def stat(pid):
        if pid not in cpu:
            raise FileNotFoundError(pid)
        return cpu[pid], 0

    monkeypatch.setattr(scale.load, "proc_stat", stat)
    monkeypatch.setattr(scale.time, "monotonic", lambda: clock["t"])
    timeline = scale.CpuTimeline({"ha2": 1, "generator0": 2}, 100.0)
    for t, a, b in ((0.0, 0.0, 5.0), (1.0, 0.5, 5.25), (2.0, 1.25, 6.0), (3.0, 2.0, 6.5)):
        clock["t"] = 100.0 + t
        cpu[1], cpu[2] = a, b
        timeline.sample()
    assert timeline.between(0.5, 2.0) == {"ha2": 0.75, "generator0": 0.75}
    assert timeline.between(0.0, 9.0) == {"ha2": 2.0, "generator0": 1.5}
    del cpu[2]
    clock["t"] = 104.0
    timeline.sample()
    assert timeline.between(3.0, 4.0) == {"ha2": 0.0, "generator0": 0.0}


def test_haha_lab_load_refuses_bad_arguments(capsys):
    """``haha-lab load`` is dispatched to the generator, whose bad arguments stop it with a
    usage error before anything starts."""
    from haha.lab.cli import main

    for argv in (["load", "--nodes", "0"], ["load", "--has", "1"], ["load", "--workers", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    err = capsys.readouterr().err
    assert "haha-lab load" in err and "--has must be 2-9" in err


def test_admission_is_sized_for_the_burst_unless_asked_for_the_defaults(tmp_path):
    """The load cluster's home agents admit a burst of N new sources (node-group keys make
    every first Binding Update unauthenticated input from a new source): the daemon's own
    loader reads admission sized for N, but for the table of tracked sources, left at its
    default (a node is a stranger only until its SAs are derived); with admission="default"
    nothing is set."""
    from haha.config import load_home_agent

    sized = load.LoadCluster(tmp_path / "s", 20000, [40000], os.urandom(32))
    sized.write()
    a = load_home_agent(sized.has[0].config).security.admission
    assert (a.max_sources, a.admit_burst, a.unauthenticated_burst) == (4096, 20000, 20000)
    assert a.admit_rate == a.unauthenticated_rate == 20000
    plain = load.LoadCluster(tmp_path / "d", 20000, [40000], os.urandom(32),
                             admission="default")
    plain.write()
    assert load_home_agent(plain.has[0].config).security.admission in (None, type(a)())
    with pytest.raises(ValueError):
        load.LoadCluster(tmp_path / "x", 1, [40000], b"", admission="lots")


def test_the_old_names_are_the_parts_own():
    """haha.lab.load was split into loadnodes, loadcluster, generator and consistency: every
    name it had is still importable from it and is the very object of the new module (a
    caller of the old names, bench/scale.py included, runs the same code)."""
    from haha.lab import consistency, generator, loadcluster, loadnodes

    parts = {"check_consistency": consistency, "home_address": loadnodes,
             "care_of_prefix": loadnodes, "node_secret": loadnodes, "split": loadnodes,
             "write_node_keys": loadnodes, "BINDING_LIFETIME": loadnodes,
             "LoadCluster": loadcluster, "ControlProbe": loadcluster,
             "admission_lines": loadcluster, "proc_stat": loadcluster,
             "Generator": generator, "SharedUdp": generator, "echo_main": generator,
             "bu_packet_size": generator, "_worker_main": generator, "_Worker": generator}
    for name, module in parts.items():
        assert getattr(load, name) is getattr(module, name), name
    for name in load.__all__:
        assert hasattr(load, name), name
    assert set(parts) <= set(load.__all__)


def test_shared_udp_hands_each_packet_to_the_node_of_its_destination():
    """A worker's shared socket: each node's view is an IMobilityTransport (checked with
    verifyObject); a packet goes to the receiver of the node whose care-of address is its
    destination, and only while that node's view is started; any other destination is
    counted as unknown_destination and given to nobody."""
    from ipaddress import IPv6Address

    from twisted.internet.testing import MemoryReactor
    from zope.interface.verify import verifyObject

    from haha.interfaces import IMobilityTransport
    from haha.lab.generator import SharedUdp

    shared = SharedUdp(MemoryReactor(), 0, {IPv6Address(HA1): ("127.0.0.1", 40000)})
    a, b = IPv6Address("2001:db8:21::1"), IPv6Address("2001:db8:21::2")
    view_a, view_b = shared.view(a), shared.view(b)
    assert verifyObject(IMobilityTransport, view_a)
    got = {a: [], b: []}
    view_a.start(got[a].append)
    view_b.start(got[b].append)

    def packet(destination):
        return bytes(8) + IPv6Address(HA1).packed + destination.packed + b"payload"

    shared._received(packet(b))
    shared._received(packet(a))
    assert got == {a: [packet(a)], b: [packet(b)]}
    shared._received(packet(IPv6Address("2001:db8:21::3")))
    view_a.stop()
    shared._received(packet(a))
    assert got == {a: [packet(a)], b: [packet(b)]}
    assert shared.counters["unknown_destination"] == 2


def test_udp_endpoints_are_the_home_agents_in_preference_order(tmp_path):
    """What the generator is given: every home agent's (address, UDP port), ha1 (the
    preferred) first, each port the one its configuration listens on."""
    cluster = load.LoadCluster(tmp_path, 4, [40000], os.urandom(32), n_has=3)
    endpoints = cluster.udp_endpoints()
    assert [address for address, _ in endpoints] == [HA1, HA2, HA3]
    assert [port for _, port in endpoints] == [ha.port for ha in cluster.has]
    assert all(isinstance(port, int) and 0 < port < 65536 for _, port in endpoints)
    cluster.has[1].port = None
    with pytest.raises(RuntimeError, match="ha2 has no UDP port"):
        cluster.udp_endpoints()


def test_the_take_over_is_split_and_sized_unless_asked_for_first(tmp_path):
    """The load cluster's home agents take a dead peer's nodes over in shares, with switch
    requests paced for the node count and BIUs packed to 2,100 octets; with
    take_over_share="first" the first-ranked survivor takes all at the daemon's rate."""
    from haha.config import load_home_agent

    split = load.LoadCluster(tmp_path / "s", 100000, [40000], os.urandom(32))
    split.write()
    s = load_home_agent(split.has[0].config).settings
    assert (s.take_over_share, s.switch_rate, s.sync_mtu) == ("split", 20000.0, 2100)
    first = load.LoadCluster(tmp_path / "f", 100000, [40000], os.urandom(32),
                             take_over_share="first")
    first.write()
    s = load_home_agent(first.has[0].config).settings
    assert (s.take_over_share, s.switch_rate) == ("first", 4000.0)
    with pytest.raises(ValueError):
        load.LoadCluster(tmp_path / "x", 1, [40000], b"", take_over_share="half")


def test_a_worker_records_when_each_node_is_told_and_registers_again():
    """After a mark, a worker keeps per node the switch requests it received (naming which
    home agent) and its registrations; a node counts as told at the first of "a request
    naming the home agent it ends with" and "registered with it", re-registered at the
    latter; a request naming another home agent does not count; a node registered with a
    home agent that told it nothing since the mark is untold, unless it was registered there
    already at the mark (unmoved)."""
    from types import SimpleNamespace

    from haha.core.effects import Event
    from haha.core.events import EventName
    from haha.core.mobilenode import REGISTERED
    from haha.lab.generator import _Worker

    w = _Worker.__new__(_Worker)
    w.reactor = SimpleNamespace(seconds=lambda: 0.0)
    w.started, w.registered = {0: 0.0, 1: 0.0, 2: 0.0}, {}
    machines = [SimpleNamespace(state=REGISTERED, home_agent=HA2) for _ in range(3)]
    w.nodes = [(i, None, m, None) for i, m in enumerate(machines)]
    machines[2].home_agent = HA3  # registered with HA3 at the mark, then with HA2
    w.mark()
    machines[2].home_agent = HA2
    since = w.mark_at
    w._event(0, Event(EventName.SWITCH_RECEIVED, src=HA3, desired=HA3))  # not its final one
    w._event(0, Event(EventName.SWITCH_RECEIVED, src=HA2, desired=HA2))
    told0 = w.since_mark[0][-1][0]
    w._event(0, Event(EventName.REGISTERED, home_agent=HA2))
    w._event(1, Event(EventName.REGISTERED, home_agent=HA2))  # registered before any request
    report = w.phase(since)
    assert report["untold"] == 1 and report["unregistered"] == 0  # node 2: nothing since
    machines[2].home_agent = HA3  # as if it had stayed where it was at the mark
    assert w.phase(since)["untold"] == 0 and w.phase(since)["unmoved"] == 1
    machines[2].home_agent = HA2
    assert len(report["told"]) == 2 and len(report["registered"]) == 2
    assert abs(min(report["told"]) - (told0 - since)) < 1e-6
    assert all(t >= 0 for t in report["told"] + report["registered"])


def test_a_workers_socket_is_sized_for_its_nodes():
    """A worker's shared socket asks for a receive buffer of 1 KiB per node (about two
    signalling packets each: every node's switch request and acknowledgement arriving while
    the worker is busy), never less than 8 MiB; started, the kernel grants it (root:
    SO_RCVBUFFORCE), and its kernel drop count is read from the start."""
    from ipaddress import IPv6Address

    from twisted.internet import reactor

    from haha.lab.generator import SharedUdp, receive_buffer_for

    assert receive_buffer_for(10) == 8 << 20
    assert receive_buffer_for(50000) == 50000 * 1024
    shared = SharedUdp(reactor, 0, {IPv6Address(HA1): ("127.0.0.1", 40000)}, 50000)
    assert shared.receive_buffer == 50000 * 1024
    shared.start()
    try:
        granted = shared.buffers["receive"]
        if os.geteuid() == 0:
            assert granted >= 50000 * 1024
        assert shared.kernel_drops() == 0
    finally:
        shared.stop()


def test_the_kill_phase_reports_what_the_generators_sockets_dropped():
    """bench/scale.py's kill phase reports, per counter, what the generator's sockets dropped
    during it (kernel drops, packets for no node of the worker): a switch request lost there
    is counted, not silent."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
    import scale

    before = {"transport": {"kernel_drops": 5, "received": 10}}
    after = {"transport": {"kernel_drops": 12, "received": 90, "unknown_destination": 3}}
    assert scale.generator_drops(before, after) == {"kernel_drops": 7,
                                                    "unknown_destination": 3}
