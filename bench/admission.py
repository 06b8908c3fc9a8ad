"""Benchmark: what a forged packet costs a home agent's adapter (issue 9's floods).

A home agent adapter (core machine, ESP policy, SA database of one peer, the admission of
``haha.security.admission``, a transport that discards) is fed, through ``packet_received``:

- ``unknown-spi``: ESP with random SPIs spoofing the peer's address (what the flood of the
  namespace test sends): parse, SPI look-up, unauthenticated budget, drop;
- ``forged-known-spi``: ESP under the peer's real SPI with a fresh sequence number and a forged
  body: parse, SPI look-up, one AES-GCM check that fails, unauthenticated budget, drop;
- ``hello``: a real protected HELLO from the peer (each with its own sequence number), all the
  way through the core.

Baseline, measured in the same run on the same bytes: ``parse`` -- ``parse_packet`` alone, the
floor any packet pays. Rounds alternate the cases; the median is reported. Budgets are set so
that nothing is refused for lack of budget (the cost of the checks, not of an early refusal).
Prints one JSON object; ``--quick`` keeps it under 30 s.
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
from ipaddress import IPv6Address

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet.task import Clock  # noqa: E402

from haha.core.homeagent import HomeAgent  # noqa: E402
from haha.core.settings import HomeAgentSettings  # noqa: E402
from haha.protocol import HomeAgentAdapter  # noqa: E402
from haha.security import SecurityAssociationDatabase  # noqa: E402
from haha.security.admission import Admission, AdmissionSettings  # noqa: E402
from haha.security.keys import derive_pair  # noqa: E402
from haha.security.policy import SecurityPolicy  # noqa: E402
from haha.wire.ipv6 import build_packet, parse_packet  # noqa: E402
from haha.wire.mh import HaHello, encode_mh  # noqa: E402
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_ESP, IPPROTO_MH  # noqa: E402

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:1::2")


class _Discard:
    def send(self, packet):
        pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (under 30 s)")
    args = p.parse_args(argv)
    rounds, per_round = (7, 4000) if args.quick else (21, 20000)

    secret = os.urandom(32)
    sadb = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA1, HA2))
    peer = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA2, HA1))
    machine = HomeAgent(HomeAgentSettings(address=HA1, home_prefix="2001:db8:1::/64",
                                          peers=[HA2], boot_wait=0), random.Random(1))
    clock = Clock()
    big = 1e12
    admission = Admission(AdmissionSettings(
        source_rate=big, source_burst=big, admit_rate=big, admit_burst=big,
        unauthenticated_rate=big, unauthenticated_burst=big, authenticated_rate=big,
        authenticated_burst=big))
    adapter = HomeAgentAdapter(machine, _Discard(), clock, DEFAULT_PROFILE,
                               SecurityPolicy(DEFAULT_PROFILE), sadb, admission)
    adapter.running = True
    adapter.apply(machine.start(0.0))

    rng = random.Random(7)
    total = rounds * per_round
    junk = [build_packet(HA2, HA1, IPPROTO_ESP, rng.randbytes(4) + rng.randbytes(76))
            for _ in range(1024)]
    real = peer.protect(HA1, IPPROTO_MH, encode_mh(HaHello(1, 0, 30, 10, 64, HA2), HA2, HA1))
    forged = [build_packet(HA2, HA1, IPPROTO_ESP, real[:4] + (1 << 31 | i).to_bytes(4, "big")
                           + rng.randbytes(len(real) - 8)) for i in range(1024)]
    hellos = [build_packet(HA2, HA1, IPPROTO_ESP, peer.protect(
        HA1, IPPROTO_MH, encode_mh(HaHello(1 + i % 60000, 0, 30, 10, 64, HA2), HA2, HA1)))
        for i in range(total)]
    hello_iter = iter(hellos)
    receive = adapter.packet_received

    def feed(packets):
        def run(n):
            for i in range(n):
                receive(packets[i & 1023])
        return run

    def feed_hellos(n):
        for _ in range(n):
            receive(next(hello_iter))

    def parse(packets):
        def run(n):
            for i in range(n):
                parse_packet(packets[i & 1023])
        return run

    cases = {
        "unknown-spi": (feed(junk), parse(junk)),
        "forged-known-spi": (feed(forged), parse(forged)),
        "hello": (feed_hellos, parse(hellos[:1024])),
    }
    runs = {name: ([], []) for name in cases}
    for _ in range(rounds):
        for name, (ours, floor) in cases.items():
            for fn, sink in ((ours, runs[name][0]), (floor, runs[name][1])):
                t = time.perf_counter()
                fn(per_round)
                sink.append((time.perf_counter() - t) / per_round * 1e6)
    c = adapter.counters
    assert c["dropped.unknown-spi"] >= rounds * per_round, dict(c)
    assert c["dropped.auth-failed"] >= rounds * per_round, dict(c)
    assert c["received.HaHello"] >= rounds * per_round * 0.99, dict(c)
    results = []
    for name, (ours, floor) in runs.items():
        results.append({
            "case": name, "metric": "time per packet through packet_received",
            "unit": "us", "value": round(statistics.median(ours), 2),
            "baselines": {"parse": round(statistics.median(floor), 2)},
        })
    print(json.dumps({"bench": "admission", "results": results}))


if __name__ == "__main__":
    main()
