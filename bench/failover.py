"""Benchmark: how long a correspondent's ping stops when a home agent's daemon is killed.

Real daemons in network namespaces (:func:`haha.lab.failover.measure`; needs root): three home
agents with address take-over on a shared home link (ESP), a mobile node that obeys no switch
request, a correspondent pinging it every 0.1 s; ha1's daemon gets SIGKILL. Cases: HELLO every
1 s and every 0.1 s, a peer dead after 3 missed HELLOs. The value is the longest silence of the
ping around the kill (seconds); the baselines, measured in the same run, are the time from the
kill until the survivor's control socket shows the dead peer's address held (polled every
20 ms), and the configured detection time. Goal (issue 10): under 1 s at 0.1 s.

Without root it prints the cases as skipped. ``--quick`` is accepted (each case is one
fail-over, about 30 s).
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.lab import topology  # noqa: E402
from haha.lab.failover import measure  # noqa: E402

CASES = ((1.0, 3, 3), (0.1, 1, 3))  # (hello-interval, lifetime, hello-misses)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.parse_args()
    results = []
    for interval, lifetime, misses in CASES:
        case = f"ping interruption, kill -9 of the home agent, HELLO every {interval:g} s"
        if os.geteuid() != 0:
            results.append({"case": case, "skipped": "needs root (network namespaces)"})
            continue
        with tempfile.TemporaryDirectory(prefix="hb", dir="/tmp") as d:
            r = measure(d, topology.shared_home_link, lifetime=lifetime,
                        hello_interval=interval, hello_misses=misses)
        results.append({"case": case, "metric": "interruption", "unit": "s",
                        "value": round(r["gap"], 3),
                        "baselines": {"kill to address held": round(r["held"], 3),
                                      "configured detection": round(r["detection"], 3)}})
    print(json.dumps({"bench": "failover", "results": results}))


if __name__ == "__main__":
    main()
