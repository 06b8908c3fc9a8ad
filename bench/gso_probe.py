"""Probe (root): can user space hand the kernel a tunnelled TCP super-packet?

The `tun` backend's TCP throughput is bounded by how many packets the kernel handles per
megabyte (docs/io.md "Super-packets"). Plain routing carries a TCP flow as GSO super-packets of
up to 64 KB from the sender to the receiver: veths and forwarding keep them whole. A user-space
tunnel could only do the same if it could write an IPv6-in-IPv6 packet whose inner TCP payload
is a super-packet and have the kernel keep it whole or segment it. The only interfaces user
space has for that are a TUN opened with ``IFF_VNET_HDR`` (and a packet socket with
``PACKET_VNET_HDR``, which takes the same header), and a ``virtio_net_hdr`` has no
IPv6-in-IPv6 GSO type.

This probe writes, into a TUN in a fresh namespace that forwards out of a veth to a second
namespace, (1) a plain TCPv6 super-packet and (2) the same super-packet inside an
IPv6-in-IPv6 header, both marked ``gso_type`` TCPv6 with ``NEEDS_CSUM``, and counts what an
AF_PACKET socket on the far veth sees: the frames of each kind and their sizes. A control case
(3) writes a small IPv6-in-IPv6 packet without GSO; case (4) sends the tunnelled super-packet
with the same header through a packet socket (``PACKET_VNET_HDR``) bound to the near veth,
without forwarding, and case (5) the plain one that way (its control). JSON on standard output.

    python bench/gso_probe.py
"""

import fcntl
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.io.offload import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE,  # noqa: E402
                             VIRTIO_NET_HDR_GSO_TCPV6, VNET_HDR)
from haha.io.system import (IFF_NO_PI, IFF_TUN, IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO6,  # noqa: E402
                            TUNSETIFF, TUNSETOFFLOAD, in_netns)

ETH_P_IPV6 = 0x86DD
SOL_PACKET, PACKET_VNET_HDR = 263, 15
PAYLOAD = bytes(range(256)) * 80  # 20,480 octets: 15 segments of 1,400
GSO_SIZE = 1400


def _ip(*argv):
    subprocess.run(("ip",) + argv, check=True, capture_output=True)


def _addr(text):
    return socket.inet_pton(socket.AF_INET6, text)


def _ipv6(payload_len, next_header, src, dst):
    return struct.pack("!IHBB", 6 << 28, payload_len, next_header, 64) + src + dst


def _tcp(payload):
    # data offset 5 words, flags ACK|PSH, window 65535; checksum left to the kernel (NEEDS_CSUM)
    return struct.pack("!HHIIBBHHH", 40000, 5001, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload


def _cases():
    tun_src, far = _addr("fd01::5"), _addr("fd00::2")
    cn, home = _addr("2001:db8:30::10"), _addr("2001:db8:1::100")
    segment = _tcp(PAYLOAD)
    plain = _ipv6(len(segment), 6, tun_src, far) + segment
    inner = _ipv6(len(segment), 6, cn, home) + segment
    tunnelled = _ipv6(len(inner), 41, tun_src, far) + inner
    small_inner = _ipv6(20 + 100, 6, cn, home) + _tcp(PAYLOAD[:100])
    small = _ipv6(len(small_inner), 41, tun_src, far) + small_inner
    gso = VIRTIO_NET_HDR_GSO_TCPV6
    tunnelled_gso = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, 14 + 80 + 20, GSO_SIZE,
                                  14 + 80, 16) + tunnelled
    plain_gso = VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, 14 + 40 + 20, GSO_SIZE, 14 + 40,
                              16) + plain
    return [
        ("plain_tcp_gso_packet_socket", 6, plain_gso, len(plain)),
        ("ip6ip6_tcp_gso_packet_socket", 41, tunnelled_gso, len(tunnelled)),
        ("plain_tcp_gso", 6, VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, 40 + 20, GSO_SIZE,
                                           40, 16) + plain, len(plain)),
        ("ip6ip6_tcp_gso", 41, VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso, 80 + 20, GSO_SIZE,
                                             80, 16) + tunnelled, len(tunnelled)),
        ("ip6ip6_small_control", 41, VNET_HDR.pack(0, VIRTIO_NET_HDR_GSO_NONE, 0, 0, 0, 0)
         + small, len(small)),
    ]


def _probe(tag, name, proto, frame, size):
    a, b = f"gsoA{tag}", f"gsoB{tag}"
    for ns in (a, b):
        _ip("netns", "add", ns)
    try:
        _ip("link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b)
        for ns, dev, addr in ((a, "va", "fd00::1/64"), (b, "vb", "fd00::2/64")):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", addr, "dev", dev, "nodad")
            _ip("-n", ns, "link", "set", dev, "up")
        _ip("netns", "exec", a, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        with in_netns(b):
            rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
            rx.bind(("vb", ETH_P_IPV6))
        with in_netns(a):
            tun = os.open("/dev/net/tun", os.O_RDWR)
            fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", b"gso0",
                                                    IFF_TUN | IFF_NO_PI | IFF_VNET_HDR))
            fcntl.ioctl(tun, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO6)
        _ip("-n", a, "link", "set", "gso0", "up")
        # neighbour resolved before the write, so nothing waits in the neighbour queue
        _ip("-n", a, "neigh", "replace", "fd00::2", "lladdr", _mac(b, "vb"), "dev", "va",
            "nud", "permanent")
        seen = []
        refused = None
        stop = threading.Event()

        def listen():
            rx.settimeout(0.2)
            while not stop.is_set():
                try:
                    data = rx.recv(70000)
                except socket.timeout:
                    continue
                if len(data) > 14 + 40 and data[14 + 6] == proto:
                    seen.append(len(data) - 14)
        listener = threading.Thread(target=listen)
        listener.start()
        time.sleep(0.3)
        if name.endswith("_packet_socket"):
            # the same header on a packet socket bound to the veth itself: no forwarding
            with in_netns(a):
                tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IPV6))
                tx.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                tx.bind(("va", ETH_P_IPV6))
            ether = (bytes.fromhex(_mac(b, "vb").replace(":", ""))
                     + bytes.fromhex(_mac(a, "va").replace(":", "")) + struct.pack("!H", ETH_P_IPV6))
            header, packet = frame[:VNET_HDR.size], frame[VNET_HDR.size:]
            try:
                tx.send(header + ether + packet)
            except OSError as e:
                refused = e.strerror
            tx.close()
        else:
            os.write(tun, frame)
        time.sleep(1.0)
        stop.set()
        listener.join()
        os.close(tun)
        rx.close()
        return {"case": name, "written_octets": size, "frames_at_far_end": len(seen),
                "octets_at_far_end": sum(seen), "frame_sizes": seen[:50],
                "refused": refused,
                "outcome": ("kept whole" if seen == [size] else
                            "segmented" if len(seen) > 1 else
                            "lost" if not seen else "changed")}
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _mac(ns, dev):
    out = subprocess.run(["ip", "-n", ns, "-o", "link", "show", dev], check=True,
                         capture_output=True, text=True).stdout
    return out.split("link/ether", 1)[1].split()[0]


def main():
    if os.geteuid() != 0:
        sys.exit("gso_probe.py needs root (namespaces, TUN, packet sockets)")
    tag = os.getpid()
    results = [_probe(tag, *case) for case in _cases()]
    print(json.dumps({"bench": "gso_probe", "kernel": platform.release(),
                      "results": results}))


if __name__ == "__main__":
    main()
