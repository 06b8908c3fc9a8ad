"""Benchmark: what fast failure detection costs one home agent (issue 10).

Ten home agents send each other HELLOs every ``hello-interval``; this measures one of them, with
nine peers, doing everything the daemon does for them except the system calls: each interval
its timer fires (``HomeAgent.tick``), each of its nine HELLOs is encoded, sealed with ESP
(``SecurityAssociationDatabase.protect``) and built into an IPv6 packet; and nine HELLOs from
the peers (sealed beforehand, outside the measurement, as the peers would) are parsed, opened,
decoded and processed (``HomeAgent.receive``). The value is the share of one core used, as
process CPU time over the simulated time, at ``hello-interval`` 0.1 s; the baseline is the same
at 1 s, measured in the same run. Goal (issue 10): under 5 % of a core at 0.1 s.
Prints one JSON object; ``--quick`` simulates fewer seconds.
"""

import argparse
import json
import os
import sys
import time
from ipaddress import IPv6Address, IPv6Network

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.core.effects import Send, make_inbound  # noqa: E402
from haha.core.homeagent import HomeAgent  # noqa: E402
from haha.core.settings import HomeAgentSettings  # noqa: E402
from haha.security import SecurityAssociationDatabase  # noqa: E402
from haha.security.keys import derive_pair  # noqa: E402
from haha.wire.ipv6 import build_packet, parse_packet  # noqa: E402
from haha.wire.mh import HaHello, decode_mh, encode_mh  # noqa: E402
from haha.wire.numbers import IPPROTO_ESP, IPPROTO_MH  # noqa: E402

PREFIX = IPv6Network("2001:db8:1::/64")
N = 10


def run(interval, seconds):
    """CPU seconds one home agent spends on ``seconds`` of HELLOs at ``interval``."""
    sig = [IPv6Address(f"2001:db8:f::{i + 1}") for i in range(N)]
    me, peers = sig[0], sig[1:]
    secret = bytes(range(32))
    mine = SecurityAssociationDatabase.from_specs(
        [s for p in peers for s in derive_pair(secret, me, p)])
    theirs = {p: SecurityAssociationDatabase.from_specs(derive_pair(secret, p, me))
              for p in peers}
    settings = HomeAgentSettings(address=IPv6Address("2001:db8:1::1"), haha_address=me,
                                 home_prefix=PREFIX, peers=tuple(peers), ha_lifetime=1,
                                 hello_interval=interval, hello_misses=3, boot_wait=0)
    ha = HomeAgent(settings)
    ha.start(0.0)
    ticks = int(seconds / interval)
    # The peers' HELLOs, sealed beforehand: their cost is theirs.
    incoming = []
    for k in range(ticks):
        batch = []
        for i, p in enumerate(peers):
            hello = HaHello(k + 1, 10, 1, 1, 64, IPv6Address(f"2001:db8:1::{i + 2}"))
            esp = theirs[p].protect(me, IPPROTO_MH, encode_mh(hello, p, me))
            batch.append(build_packet(p, me, IPPROTO_ESP, esp))
        incoming.append(batch)
    sent = received = 0
    t0 = time.process_time()
    for k in range(ticks):
        now = ha.next_deadline()  # the HELLO timer (peers' expiry lies further ahead)
        for e in ha.tick(now):
            if type(e) is Send:
                data = mine.protect(e.protect, IPPROTO_MH, encode_mh(e.message, e.src, e.dst))
                build_packet(e.src, e.dst, IPPROTO_ESP, data)
                sent += 1
        for packet in incoming[k]:
            p = parse_packet(packet)
            peer, nh, payload = mine.unprotect(p.source, p.payload)
            message = decode_mh(payload, p.source, p.destination)
            ha.receive(make_inbound(message, p.src, p.dst, None, None, peer), now)
            received += 1
    cpu = time.process_time() - t0
    assert len(ha.peers) == N - 1 and sent == ticks * (N - 1), (len(ha.peers), sent)
    return cpu, now, sent, received


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    seconds = 20.0 if ap.parse_args().quick else 200.0
    fast = min(run(0.1, seconds) for _ in range(3))
    slow = min(run(1.0, seconds) for _ in range(3))

    def share(r):
        return round(100.0 * r[0] / r[1], 3)

    print(json.dumps({"bench": "hello", "results": [{
        "case": f"one home agent of {N}, HELLO to and from 9 peers every 0.1 s, ESP",
        "metric": "cpu", "unit": "% of one core", "value": share(fast),
        "goal": "under 5",
        "sent": fast[2], "received": fast[3], "simulated_seconds": round(fast[1], 1),
        "baselines": {"the same every 1 s": share(slow)},
    }]}))


if __name__ == "__main__":
    main()
