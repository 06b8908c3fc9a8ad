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


def test_nodes_hold_their_first_home_agents_sas_before_the_burst():
    """Every node of a worker has its SA pair with the home agent it registers with before it
    starts, and none yet with the others (derived on first use, as the daemon's keyring)."""
    w = _worker()
    first, second = IPv6Address(HAS[0][0]), IPv6Address(HAS[1][0])
    for _, _, _, adapter in w.nodes:
        assert adapter.sadb.has_peer(first)
        assert not adapter.sadb.has_peer(second)
        assert adapter.keyring.derived == {first}


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
    in-run baselines (ESP and decoding, a bare Twisted UDP echo) and the UDP send case against
    a bare sendto; it exits with an error unless every first BU was accepted, every resend of
    the same number was answered as a duplicate and every new number registered again."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, os.path.join(root, "bench", "registration.py"),
                          "--nodes", "40", "--rounds", "1", "--echo-datagrams", "20000",
                          "--send-datagrams", "500"],
                         capture_output=True, text=True, timeout=300, check=True)
    doc = json.loads(out.stdout)
    assert doc["bench"] == "registration"
    assert [r["case"] for r in doc["results"]] == ["first", "same_number", "new_number",
                                                   "udp_send"]
    *per_bu, send = doc["results"]
    for r in per_bu:
        assert r["unit"] == "us" and r["value"] > 0 and r["baselines"]["esp_and_decode"] > 0
        assert r["updates"] == 40
        assert r["baselines"]["echo_per_datagram"] > 0 and r["ratio_to_echo"] > 0
    assert send["value"] > 0 and send["baselines"]["bare_sendto"] > 0
