"""Benchmark: what the metrics cost a home agent, per Binding Update and per scrape.

``bu``: Binding Updates per second through a whole ``HomeAgentService`` (parse, policy, decode,
core, Binding Acknowledgement encoded and sent on the in-memory hub; lab mode, so no ESP),
with the metrics attached (the message tap and the latency tracker, as every service runs) and,
as the baseline in the same run, the same service with them detached. Each round sends one BU
for each of 2 000 home addresses, with a fresh sequence number (a refresh of each binding).

``tracker``: the latency tracker alone (what the metrics add to each Binding Update: the BU
in, the BA out, one histogram observation), in microseconds, against the baseline of a whole
Binding Update through the service without metrics: on a loaded machine this share is steadier
than the difference of two rates.

``scrape``: ``/metrics`` expositions per second of that home agent (2 000 bindings, its ~60
counters, three histograms), against the baseline ``haha-ctl counters`` answer (the same
counters as JSON).

Rounds alternate ours and the baseline, and the median of the rounds is reported, so a busy
machine slows both alike. Prints one JSON object; ``--quick`` keeps it under 30 s.
"""

import argparse
import json
import os
import statistics
import sys
import time
from ipaddress import IPv6Address

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet.task import Clock  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402

from haha.backends.null import NullBackend  # noqa: E402
from haha.config import home_agent_from_text  # noqa: E402
from haha.discovery.static import StaticDiscovery  # noqa: E402
from haha.io.memory import MemoryHub  # noqa: E402
from haha.service import HomeAgentService  # noqa: E402
from haha.wire.ipv6 import build_packet  # noqa: E402
from haha.wire.mh import BindingAck, BindingUpdate, encode_mh  # noqa: E402
from haha.wire.numbers import IPPROTO_MH  # noqa: E402

HA = IPv6Address("2001:db8:1::1")
COA = IPv6Address("2001:db8:20::1")
CONFIG = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = separate-links
home-interface = eth0
boot-wait = 0
router-advertisements = no
[security]
mode = none
lab = yes
rate-burst = 1000000
"""


def _service(path):
    clock = Clock()
    hub = MemoryHub(clock)
    config = home_agent_from_text(CONFIG, path)
    service = HomeAgentService.build(config, clock, backend=NullBackend(),
                                     transport=hub.endpoint(HA),
                                     discovery=StaticDiscovery(config.peers))
    service.startService()
    return service, clock


def _packets(nodes, sequence):
    out = []
    for i in range(nodes):
        hoa = IPv6Address(int(HA) + 0x1000 + i)
        bu = encode_mh(BindingUpdate(sequence, lifetime=250), hoa, HA)
        out.append(build_packet(COA, HA, IPPROTO_MH, bu, home_address=hoa))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (under 30 s)")
    args = p.parse_args(argv)
    # Lab mode (no ESP: the cost measured is the metrics') warns loudly at every start.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    rounds, nodes, scrapes = (7, 2000, 200) if args.quick else (21, 2000, 1000)

    ours, _ = _service("/tmp/haha-bench-metrics-a.conf")
    bare, _ = _service("/tmp/haha-bench-metrics-b.conf")
    bare.adapter.message_taps.clear()
    bare.adapter.observers[:] = [bare._observe]  # the tracker's observer removed
    batches = [_packets(nodes, r + 1) for r in range(rounds + 1)]

    def feed(service, packets):
        receive = service.adapter.packet_received
        t = time.perf_counter()
        for packet in packets:
            receive(packet)
        return len(packets) / (time.perf_counter() - t)

    feed(ours, batches[0])  # create the bindings: every round after is a refresh
    feed(bare, batches[0])
    runs = {"ours": [], "bare": []}
    for r in range(1, rounds + 1):
        order = (("ours", ours), ("bare", bare)) if r % 2 else (("bare", bare), ("ours", ours))
        for name, service in order:  # alternate which goes first
            runs[name].append(feed(service, batches[r]))
    counted = ours.metrics.registry.get_sample_value(
        "haha_registration_latency_seconds_count", ours.metrics.labels)
    assert counted == nodes * (rounds + 1), counted
    assert len(ours.machine.cache) == nodes

    tracker = ours.metrics.tracker
    bu, ba = BindingUpdate(1, lifetime=250), BindingAck(0, 1, lifetime=250)
    hoas = [IPv6Address(int(HA) + 0x1000 + i) for i in range(nodes)]
    tracker_runs = []
    for _ in range(rounds):
        t = time.perf_counter()
        for hoa in hoas:
            tracker.message("in", bu, hoa, 1.0)
            tracker.message("out", ba, hoa, 1.001)
        tracker_runs.append((time.perf_counter() - t) / nodes * 1e6)

    scrape_runs = {"ours": [], "counters-json": []}
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(scrapes):
            ours.metrics.exposition()
        scrape_runs["ours"].append(scrapes / (time.perf_counter() - t))
        t = time.perf_counter()
        for _ in range(scrapes):
            json.dumps(ours.counters())
        scrape_runs["counters-json"].append(scrapes / (time.perf_counter() - t))
    size = len(ours.metrics.exposition()[0])

    med = {k: statistics.median(v) for k, v in runs.items()}
    smed = {k: statistics.median(v) for k, v in scrape_runs.items()}
    result = {
        "bench": "metrics",
        "results": [
            {
                "case": f"Binding Update -> Binding Ack through HomeAgentService ({nodes} "
                        "bindings, lab mode, in-memory hub)",
                "metric": "Binding Updates per second with the metrics attached",
                "unit": "BU/s",
                "value": round(med["ours"]),
                "baselines": {"without-metrics": round(med["bare"])},
            },
            {
                "case": "metrics overhead per Binding Update",
                "metric": "1 - ours/without-metrics, median of rounds",
                "unit": "fraction",
                "value": round(statistics.median(
                    1 - o / b for o, b in zip(runs["ours"], runs["bare"])), 4),
                "baselines": {},
            },
            {
                "case": "latency tracker per Binding Update (BU in, BA out, one observation)",
                "metric": "microseconds per Binding Update, median of rounds",
                "unit": "us",
                "value": round(statistics.median(tracker_runs), 2),
                "baselines": {"bu-without-metrics": round(1e6 / med["bare"], 1)},
            },
            {
                "case": f"/metrics exposition ({size} octets, {nodes} bindings)",
                "metric": "scrapes per second (text format, without HTTP)",
                "unit": "scrapes/s",
                "value": round(smed["ours"]),
                "baselines": {"counters-json": round(smed["counters-json"])},
            },
        ],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
