"""A small attacker for the namespace tests (tests/test_e2e_attacks_netns.py).

Run inside a namespace on the home link (``ip netns exec NS python scapy_attacker.py ...``).
Packets are built with scapy (a test dependency, an independent encoder) and sent, paced to a
rate, through an AF_PACKET socket on ``--iface``, so any source address can be forged. Prints
one JSON object: packets sent, sends that failed (not counted as sent), seconds taken, the
rate reached.

    ra   --src fe80::66 --address 2001:db8:1::66 --preference 65535 --lifetime 600
    ra   --src random --address random --prefix 2001:db8:1::/64 --count 3000 --rate 1000
    esp  --src 2001:db8:1::2 --dst 2001:db8:1::1 --dst-mac 02:.. --rate 2000 --seconds 8
"""

import argparse
import ipaddress
import json
import random
import socket
import sys
import time

from scapy.layers.inet6 import (
    ICMPv6NDOptPrefixInfo,
    ICMPv6ND_RA,
    IPv6,
)
from scapy.layers.l2 import Ether
from scapy.layers.inet6 import ICMPv6NDOptHAInfo
from scapy.layers.ipsec import ESP


def _mac(iface):
    with open(f"/sys/class/net/{iface}/address") as f:
        return f.read().strip()


def _src(src, rng):
    """``src``, or a random link-local address for ``random``."""
    if src != "random":
        return src
    return str(ipaddress.IPv6Address((0xFE80 << 112) | rng.randrange(1, 1 << 64)))


def _ras(a):
    rng = random.Random(a.seed)
    net = ipaddress.IPv6Network(a.prefix)
    src_mac = _mac(a.iface)
    out = []
    for _ in range(a.count if a.address == "random" else 1):
        if a.address == "random":
            address = str(net[rng.randrange(0x1000, 1 << 32)])
        else:
            address = a.address
        pkt = (Ether(src=src_mac, dst="33:33:00:00:00:01")
               / IPv6(src=_src(a.src, rng), dst="ff02::1", hlim=255)
               / ICMPv6ND_RA(H=1, routerlifetime=a.router_lifetime)
               / ICMPv6NDOptHAInfo(pref=a.preference, lifetime=a.lifetime)
               / ICMPv6NDOptPrefixInfo(prefix=address, prefixlen=64, R=1, L=1, A=0))
        out.append(bytes(pkt))
    if a.address != "random":
        out = out * a.count
    return out


def _esps(a):
    rng = random.Random(a.seed)
    src_mac = _mac(a.iface)
    out = []
    for _ in range(min(4096, int(a.rate * a.seconds) or 1)):
        pkt = (Ether(src=src_mac, dst=a.dst_mac) / IPv6(src=a.src, dst=a.dst)
               / ESP(spi=rng.randrange(1, 1 << 32), seq=rng.randrange(1 << 32),
                     data=rng.randbytes(48)))
        out.append(bytes(pkt))
    return out


def _send(iface, packets, rate, total):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    start = time.monotonic()
    sent = failed = 0
    n = len(packets)
    while sent < total:
        due = start + sent / rate if rate else start
        now = time.monotonic()
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        # Send what is due now in one go (bounded), so the pace holds at high rates.
        burst = min(total - sent, max(1, int((now - start) * rate) - sent if rate else 64), 256)
        for _ in range(burst):
            try:
                s.send(packets[sent % n])
            except OSError:  # ENOBUFS under load: the packet is lost, as on a wire
                failed += 1
            sent += 1
    took = time.monotonic() - start
    sent -= failed
    return {"sent": sent, "failed": failed, "seconds": round(took, 3),
            "rate": round(sent / took, 1) if took else None}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=("ra", "esp"))
    p.add_argument("--iface", default="eth0")
    p.add_argument("--src", required=True)
    p.add_argument("--dst")
    p.add_argument("--dst-mac")
    p.add_argument("--address", default="random")
    p.add_argument("--prefix", default="2001:db8:1::/64")
    p.add_argument("--preference", type=int, default=0)
    p.add_argument("--lifetime", type=int, default=600)
    p.add_argument("--router-lifetime", type=int, default=0)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.kind == "ra":
        packets = _ras(a)
        total = len(packets)
    else:
        packets = _esps(a)
        total = int(a.rate * a.seconds)
    json.dump(_send(a.iface, packets, a.rate, total), sys.stdout)
    print()


if __name__ == "__main__":
    main()
