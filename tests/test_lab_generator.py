"""The load generator's own cost (issue 11: it must not be the bottleneck of a burst).

Its processes are several by default where the cores allow; each generated node holds its SA
pair with its first home agent before the burst (as a configured node has its keys), so that
the burst measures registering, not the nodes' key derivation; what all nodes of a worker
share (the parsed home prefix, the random source, the logger) is built once.
"""

from ipaddress import IPv6Address

import pytest

from haha.lab import generator, load
from haha.lab.generator import _Worker, default_workers

HAS = [("2001:db8:1::1", 40001), ("2001:db8:1::2", 40002), ("2001:db8:1::3", 40003)]


@pytest.mark.parametrize("cpus, workers", [(1, 1), (2, 2), (3, 2), (4, 2), (8, 4), (16, 8)])
def test_default_workers_are_several_where_the_cores_allow(cpus, workers):
    """Two processes from two cores up (never more than the cores), half the cores from eight
    up: the home agents keep the other half."""
    assert default_workers(cpus) == workers


def test_the_commands_default_to_default_workers(monkeypatch):
    """``haha-lab load`` and bench/scale.py take their --workers default from
    default_workers() (on this machine's cores)."""
    import argparse

    seen = {}
    real = argparse.ArgumentParser.parse_args

    def capture(self, *a, **kw):
        ns = real(self, *a, **kw)
        seen["workers"] = ns.workers
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        load.main(["--nodes", "10"])
    assert seen["workers"] == default_workers() >= 1


def _worker(count=5):
    """A worker built but not started (its socket is opened by ``go``, never here)."""
    from twisted.internet import reactor

    spec = {"index": 0, "first": 0, "count": count, "port": 0, "home_agents": HAS,
            "secret": bytes(range(32)), "lifetime": 3600}
    return _Worker(reactor, spec)


def test_nodes_hold_every_home_agents_sas_before_the_burst():
    """Every node of a worker has its SA pair with every configured home agent before it
    starts, as `twistd haha-mn` derives them at start (mobile_node_security): a switch request
    from a survivor finds the pair there, and a take-over measures no key derivation."""
    w = _worker()
    every = {IPv6Address(a) for a, _ in HAS}
    assert len(every) > 1
    for _, _, _, adapter in w.nodes:
        assert all(adapter.sadb.has_peer(ha) for ha in every)
        assert adapter.keyring.derived == every


def test_nodes_sas_are_the_keyrings_with_their_cipher_contexts_built():
    """The pairs a worker installs are the ones ``NodeKeyring.ensure`` derives (same SPIs and
    keys: what each node seals, a database filled by ensure opens, and the other way round),
    and each SA's cipher context is built before the burst (six per node, none left to build
    on a first packet: a switch request's answer builds none)."""
    from haha.lab.loadnodes import node_secret
    from haha.security.keyring import NodeKeyring
    from haha.security.keys import derive_pair
    from haha.security.sadb import MOBILE_NODE, SecurityAssociationDatabase
    from haha.wire.numbers import IPPROTO_MH

    w = _worker(3)
    for _, _, machine, adapter in w.nodes:
        sadb = adapter.sadb
        assert sadb.ciphers.built == 2 * len(HAS) and len(sadb.ciphers) == 2 * len(HAS)
        hoa = machine.settings.home_address
        reference = SecurityAssociationDatabase()
        keyring = NodeKeyring(node_secret(bytes(range(32)), hoa), hoa, reference)
        for address, _ in HAS:
            keyring.ensure(IPv6Address(address))
        # The same SAs (peer, role, direction, SPI, window...), nothing used yet.
        assert sorted(map(repr, sadb.describe())) == sorted(map(repr, reference.describe()))
        assert len(sadb.describe()) == 2 * len(HAS)
        for address, _ in HAS:
            ha = IPv6Address(address)
            # What each database seals, the home agent's side of the pair opens.
            for db in (sadb, reference):
                ha_side = SecurityAssociationDatabase()
                for spec in derive_pair(node_secret(bytes(range(32)), hoa), ha, hoa,
                                        MOBILE_NODE):
                    ha_side.add(spec)
                esp = db.protect(ha, IPPROTO_MH, b"binding update")
                assert ha_side.unprotect(hoa, esp)[2] == b"binding update"
        assert sadb.ciphers.built == 2 * len(HAS)  # sealing built nothing more


def test_what_the_nodes_share_is_built_once():
    """The nodes of a worker share the home prefix, the random source and the logger; each
    still has its own machine, settings, SA database and home and care-of addresses."""
    w = _worker()
    machines = [m for _, _, m, _ in w.nodes]
    adapters = [a for _, _, _, a in w.nodes]
    assert len({id(m.settings.home_prefix) for m in machines}) == 1
    assert len({id(m.rng) for m in machines}) == 1
    assert len({id(a.log) for a in adapters}) == 1
    assert len({id(a.sadb) for a in adapters}) == len(adapters)
    assert len({m.settings.home_address for m in machines}) == len(machines)
    assert len({care_of for _, care_of, _, _ in w.nodes}) == len(machines)
    assert generator.split(5, 2) == [(0, 3), (3, 2)]


def test_registration_benchmark_runs_and_checks_what_it_measured():
    """bench/registration.py on a few nodes prints its JSON shape: three cases per BU with the
    in-run baselines (ESP and decoding, a bare Twisted UDP echo), the UDP send and receive
    cases against a bare sendto and recvmsg, and a survivor's switch requests to nodes first
    seen there against the same requests sealed again; it exits with an error unless every first BU was accepted, every resend of
    the same number was answered as a duplicate and every new number registered again."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "registration.py"),
                          "--nodes", "40", "--rounds", "1", "--echo-datagrams", "20000",
                          "--send-datagrams", "500", "--switch-requests", "40"],
                         capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(out.stdout)
    assert doc["bench"] == "registration"
    assert [r["case"] for r in doc["results"]] == ["first", "same_number", "new_number",
                                                   "udp_send", "udp_receive", "switch_request"]
    *per_bu, send, receive, switch = doc["results"]
    assert receive["value"] > 0 and receive["baselines"]["bare_recvmsg"] > 0
    assert switch["requests"] == 40 and switch["value"] > switch["baselines"]["sealed_again"] > 0
    for r in per_bu:
        assert r["unit"] == "us" and r["value"] > 0 and r["baselines"]["esp_and_decode"] > 0
        assert r["updates"] == 40
        assert r["baselines"]["echo_per_datagram"] > 0 and r["ratio_to_echo"] > 0
    assert send["value"] > 0 and send["baselines"]["bare_sendto"] > 0


def _nodecost():
    """bench/nodecost.py as a module (its Run drives one worker in process)."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                        "nodecost.py")
    spec = importlib.util.spec_from_file_location("bench_nodecost", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_worker_registers_switches_and_its_counts_match_every_machine():
    """A worker's nodes, driven in process against real home-agent pipelines (bench/nodecost.py
    asserts each step: one retransmission per node, every node registered, one Binding Update
    per switch request, every node with the survivor at the end); the counts its reports
    take from the state events equal a walk over every machine at each step, and every timer
    went through the worker's one timer wheel (the reactor holds one call for it); homes() says
where each node is registered as its machine does."""
    nodecost = _nodecost()
    run = nodecost.Run(40)
    w = run.worker
    seen = []
    real = run._deliver

    def deliver(packets):
        real(packets)
        states, by_ha = w.walk()
        seen.append((+w.states == +states, +w.by_home_agent == +by_ha))
    run._deliver = deliver
    figures = run()
    assert set(figures) == set(nodecost.STEPS) and all(v >= 0 for v in figures.values())
    assert seen and all(a and b for a, b in seen), seen
    assert w.report()["by_home_agent"] == {HAS[1][0]: 40}
    assert w.report(latencies=True)["states"] == {"registered": 40}
    assert len(run.reactor.real.getDelayedCalls()) == 1
    assert w.clock.counters["fired"] > 0
    # homes() (what the consistency check reads) against each machine, read afresh.
    assert w.homes() == {str(m.settings.home_address): str(m.home_agent)
                         for _, _, m, _ in w.nodes}
    w.nodes[0][2].state = "switching"
    assert w.homes()[str(w.nodes[0][2].settings.home_address)] is None
    assert _worker(3).homes() == {str(load.home_address(i)): None for i in range(3)}


def test_the_shared_socket_sends_to_the_home_agent_of_the_destination():
    """A node's packet leaves the shared socket for the UDP endpoint of its destination home
    agent; a destination that is no home agent is counted (no_route) and not sent, a send
    error counted (send_errors) and never raised, and nothing is sent before start."""
    from twisted.internet.testing import MemoryReactor

    from haha.lab.generator import SharedUdp

    peers = {IPv6Address(a): ("127.0.0.1", p) for a, p in HAS}
    shared = SharedUdp(MemoryReactor(), 0, peers)
    view = shared.view(IPv6Address("2001:db8:21::1"))

    def packet(destination):
        return bytes(8) + bytes(16) + IPv6Address(destination).packed + b"payload"

    view.send(packet(HAS[0][0]))
    assert shared.counters["send_not_started"] == 1
    sent = []
    shared._sendto = lambda data, endpoint: sent.append((data, endpoint))
    view.send(packet(HAS[1][0]))
    view.send(packet("2001:db8:1::99"))
    assert sent == [(packet(HAS[1][0]), ("127.0.0.1", HAS[1][1]))]
    assert shared.counters["sent"] == 1 and shared.counters["no_route"] == 1

    def full(data, endpoint):
        raise BlockingIOError(11, "full")
    shared._sendto = full
    view.send(packet(HAS[2][0]))
    assert shared.counters["send_errors"] == 1 and shared.counters["sent"] == 1


def test_nodecost_benchmark_prints_its_json_shape():
    """bench/nodecost.py on a few nodes prints every step's CPU per node with the in-run
    floor (the codec and ESP of one registration) as baseline, and the ratio case."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "nodecost.py"),
                          "--nodes", "30", "--rounds", "1"],
                         capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(out.stdout)
    assert doc["bench"] == "nodecost" and doc["nodes"] == 30
    cases = [r["case"] for r in doc["results"]]
    assert cases[:-1] == list(_nodecost().STEPS)
    for r in doc["results"][:-1]:
        assert r["unit"] == "us" and r["value"] >= 0 and r["baselines"]["floor"] > 0
    assert doc["results"][-1]["value"] > 0


def test_a_worker_profiles_its_phases_only_when_asked(tmp_path):
    """With HAHA_LAB_PROFILE naming a directory a worker writes a cProfile per phase there
    (readable by pstats, named after the phase and the worker); without it nothing is
    profiled or written."""
    import pstats

    from haha.lab.generator import _PhaseProfile

    p = _PhaseProfile(str(tmp_path), 3)
    p.start()
    sum(range(1000))
    p.dump("burst")
    stats = pstats.Stats(str(tmp_path / "burst-3.prof"))
    assert stats.total_calls > 0
    p.dump("end")  # not started again: nothing more
    assert sorted(f.name for f in tmp_path.iterdir()) == ["burst-3.prof"]
    off = _PhaseProfile(None, 0)
    off.start()
    off.dump("burst")
    assert off.profile is None and sorted(f.name for f in tmp_path.iterdir()) == ["burst-3.prof"]


def test_the_shared_socket_reports_the_kernels_drops():
    """A worker's report carries the datagrams the kernel dropped on its socket for want of
    room (kernel_drops, from /proc/net/udp): none on an idle socket, more than none once the
    receive buffer overflowed while nobody read; nothing known before the socket is open."""
    import socket

    from twisted.internet import reactor

    from haha.lab.generator import SharedUdp

    shared = SharedUdp(reactor, 0, {IPv6Address(HAS[0][0]): ("127.0.0.1", HAS[0][1])})
    assert shared.kernel_drops() is None
    shared.start()
    try:
        assert shared.kernel_drops() == 0
        handle = shared.port.getHandle()
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(500):
                sender.sendto(bytes(200), ("127.0.0.1", shared.port.getHost().port))
        finally:
            sender.close()
        assert shared.kernel_drops() > 0
    finally:
        shared.stop()


def test_the_shared_socket_drains_what_waits_within_its_budget():
    """drain() reads and delivers every datagram waiting in the socket and answers True once
    it is empty; with no time left it stops after one and answers False (the rest stays for
    later); before the socket is open there is nothing to read (True)."""
    import socket

    from twisted.internet import reactor

    from haha.lab.generator import SharedUdp

    shared = SharedUdp(reactor, 0, {IPv6Address(HAS[0][0]): ("127.0.0.1", HAS[0][1])})
    assert shared.drain() is True
    got = []
    dst = IPv6Address("2001:db8:20::7")
    shared.start()
    try:
        shared.receivers[dst.packed] = got.append
        port = shared.port.getHost().port
        packet = bytes(24) + dst.packed + bytes(40)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for k in range(5):
                sender.sendto(packet + bytes([k]), ("127.0.0.1", port))
            assert shared.drain(budget=0.0) is False
            assert len(got) == 1
            assert shared.drain() is True
            assert [p[-1] for p in got] == [0, 1, 2, 3, 4]
            assert shared.drain() is True and len(got) == 5
        finally:
            sender.close()
    finally:
        shared.stop()


def test_a_watched_worker_freezes_its_heap_and_its_reports_carry_its_collections():
    """A generator worker holds millions of tracked objects; unfrozen, its full collections
    took 4-5.5 s at 100,000 nodes, in the middle of a take-over. Watched (as every worker
    process is), it freezes its heap at once and every second after (as the daemon does), and
    each report carries its stall probe's figures: collections by generation, the longest,
    the objects frozen. The parent's report merges each worker's longest collection and its
    collections of 50 ms or more."""
    import gc

    from twisted.internet.task import Clock

    w = _worker(3)
    assert w.report()["reactor"] == {}  # not watched: nothing to say
    clock = Clock()
    gc.unfreeze()
    try:
        w.watch(clock)
        assert w.freezer.freezes == 1 and gc.get_freeze_count() > 0
        clock.advance(1.0)
        assert w.freezer.freezes == 2
        gc.collect()
        reactor = w.report()["reactor"]
        assert reactor["gc"]["collections"][2] >= 1
        assert reactor["gc_frozen"] == gc.get_freeze_count() > 0
    finally:
        w.freezer.stopService()
        w.probe.stopService()
    assert gc.get_freeze_count() == 0  # stopping gives the objects back to the collector

    parent = generator.Generator(4, 2, HAS, [0, 0], bytes(32))
    parts = []
    for longest, over in (([1.0, 2.0, 70.0], [0, 0, 1]), ([0.5, 0.0, 3.0], [0, 0, 0])):
        part = w.report()
        part["reactor"] = {"gc": {"longest_ms": longest, "pauses_over_50ms": over}}
        parts.append(part)
    parent._all = lambda cmd, timeout=120, **args: parts
    merged = parent.report()
    assert merged["gc_longest_ms"] == [70.0, 3.0] and merged["gc_pauses_over_50ms"] == [1, 0]
