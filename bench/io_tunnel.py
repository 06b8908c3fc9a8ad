"""Benchmark: the tun backend's user-space data path, per packet, in this process.

Cases: encapsulating a packet read from the TUN (lookup + RFC 2473 header + send to a
recording transport) and decapsulating one (parse + no-open-relay checks + TUN write to the
fake), with 1000 bindings installed; and the mobility BPF filter in the pure-Python interpreter
(used by tests and the socket fake; the kernel runs the real one), against ``parse_packet``.
Baseline for the tunnel cases: ``build_packet`` alone on the same packet (the least work any
encapsulation must do), measured in the same run, same unit.
"""

import argparse
import json
import time
from ipaddress import IPv6Address, IPv6Network

from twisted.internet.testing import MemoryReactor

from haha.backends.netsys import FakeNetlink
from haha.backends.tun import TunBackend
from haha.core.duties import ForwardingRoute
from haha.io import bpf
from haha.io.system import FakeSystem
from haha.wire.ipv6 import build_packet, parse_packet

HA = IPv6Address("2001:db8:1::1")
CN = IPv6Address("2001:db8:30::10")


class _Sink:
    def __init__(self):
        self.n = 0

    def send(self, packet, interface=None):
        self.n += 1


def _rate(func, n):
    t0 = time.perf_counter()
    for _ in range(n):
        func()
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    n = 20000 if ap.parse_args().quick else 200000
    system = FakeSystem()
    b = TunBackend(MemoryReactor(), _Sink(), netlink=FakeNetlink(system=system), system=system)
    b.start()
    for i in range(1000):
        b.install(ForwardingRoute(IPv6Address(f"2001:db8:1::{0x1000 + i:x}"),
                                  IPv6Address(f"2001:db8:20::{0x1000 + i:x}"), HA,
                                  (IPv6Network(f"2001:db8:{0x100 + i:x}::/48"),)))
    home = IPv6Address("2001:db8:1::17ff")
    coa = IPv6Address("2001:db8:20::17ff")
    down = build_packet(CN, home, 17, bytes(960))
    up = build_packet(coa, HA, 41, build_packet(home, CN, 17, bytes(960)))
    baseline = _rate(lambda: build_packet(HA, coa, 41, down), n)
    enc = _rate(lambda: b._from_tun(down), n)
    written = b.tun.file.written

    def dec():
        b.decapsulate(up)
        written.clear()

    decr = _rate(dec, n)
    prog = bpf.mobility_filter()
    bu = build_packet(coa, HA, 135, bytes(16), home_address=home)
    filt = _rate(lambda: bpf.run(prog, bu), n // 4)
    parse = _rate(lambda: parse_packet(bu), n // 4)
    out = {"bench": "io_tunnel", "results": [
        {"case": "encapsulate 1000-octet packet, 1000 bindings", "metric": "rate",
         "unit": "packets/s", "value": round(enc), "baselines": {"build_packet only": round(baseline)}},
        {"case": "decapsulate 1000-octet packet, 1000 bindings", "metric": "rate",
         "unit": "packets/s", "value": round(decr), "baselines": {"build_packet only": round(baseline)}},
        {"case": "mobility BPF filter in the Python interpreter (BU with HAO)", "metric": "rate",
         "unit": "packets/s", "value": round(filt),
         "baselines": {"parse_packet of the same packet": round(parse)}},
    ]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
