"""Benchmark: the tun backend's user-space data path, per packet, in this process.

Cases: encapsulating a packet read from the TUN (lookup + RFC 2473 header + send to a
recording transport) and decapsulating one (parse + no-open-relay checks + TUN write to the
fake), with 1000 bindings installed; and the mobility BPF filter in the pure-Python interpreter
(used by tests and the socket fake; the kernel runs the real one), against ``parse_packet``.
Baseline for the tunnel cases: ``build_packet`` alone on the same packet (the least work any
encapsulation must do), measured in the same run, same unit.

Super-packets (docs/io.md "Super-packets"), in megabytes per CPU-second of this process: a
64 KB GSO read from the TUN sent whole (checksum completed in Python, and by the kernel's
loopback sum when this process may open it: root) against the same read cut into segments
and each tunnelled (the default path with offloads); and a reassembled 64 KB super-packet
verified and written to the TUN as GSO against the same bytes arriving as 45 tunnelled
segments.

Partial checksums (docs/io.md "Partial checksums left to the kernel"), in us of CPU per
1,400-octet UDP packet: left to the kernel against completed in Python, at both ends.
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
from haha.io.offload import VNET_HDR
from haha.io.superpkt import TunnelSocket, complete_tcp_checksum, pseudo_sum
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


class _NullSocket:
    """A protocol-41 socket that sends nowhere."""

    def setsockopt(self, *args):
        pass

    def sendmsg(self, buffers, ancillary, flags, address):
        return 0

    def fileno(self):
        return -1

    def close(self):
        pass


def _mb_per_cpu_second(func, n, octets):
    t0 = time.process_time()
    for _ in range(n):
        func()
    return n * octets / 1e6 / max(time.process_time() - t0, 1e-9)


def _super_cases(n):
    """The super-packet cases (module docstring)."""
    system = FakeSystem()
    home = IPv6Address("2001:db8:1::100")
    coa = IPv6Address("2001:db8:20::5")
    b = TunBackend(MemoryReactor(), _Sink(), netlink=FakeNetlink(system=system), system=system,
                   super_packets=True)
    b.tunnel_socket = TunnelSocket(MemoryReactor(), 64, opener=_NullSocket)
    kernel = b.kernel_sum
    b.kernel_sum = None
    b._start_super = lambda: b.tunnel_socket.start(lambda *a: None)  # no raw transport here
    b.start()
    b.tun.gso_receiver = b._gso_from_tun
    b.install(ForwardingRoute(home, coa, HA, (), True))
    tcp = bytearray(build_packet(CN, home, 6, bytes(20) + bytes(range(256)) * 254))
    tcp[52] = 5 << 4  # TCP data offset: 20 octets
    tcp[56:58] = pseudo_sum(bytes(tcp))
    frame = VNET_HDR.pack(1, 4, 60, 1400, 40, 16) + bytes(tcp)
    octets = len(tcp) - 60
    file = b.tun.file

    def entry():
        file.queue.append(frame)
        b.tun.doRead()

    whole_py = _mb_per_cpu_second(entry, n, octets)
    b.tun.gso_receiver = None
    cut = _mb_per_cpu_second(entry, n, octets)
    b.tun.gso_receiver = b._gso_from_tun
    whole_kernel = exit_kernel = None
    if kernel is not None:
        kernel.start()
    inner = bytearray(build_packet(home, CN, 6, bytes(20) + bytes(range(256)) * 254))
    inner[52] = 5 << 4
    inner[56:58] = b"\0\0"
    inner[56:58] = complete_tcp_checksum(bytes(inner))
    inner = bytes(inner)

    def exit_whole():
        b._from_tunnel_socket(coa.packed, HA.packed, inner)
        file.written.clear()
        file.written_vnet.clear()

    segments = [build_packet(coa, HA, 41, build_packet(home, CN, 17, bytes(1400)))
                for _ in range(octets // 1400 + 1)]

    def exit_cut():
        for p in segments:
            b.decapsulate(p)
        file.written.clear()
        file.written_vnet.clear()

    exit_py = _mb_per_cpu_second(exit_whole, n, octets)
    per_packet = _mb_per_cpu_second(exit_cut, n, octets)
    if kernel is not None and kernel.running:
        b.kernel_sum = kernel
        whole_kernel = _mb_per_cpu_second(entry, n, octets)
        exit_kernel = _mb_per_cpu_second(exit_whole, n, octets)
        assert kernel.counters["sums"] >= 2 * n, dict(kernel.counters)
        kernel.stop()
    assert b.counters["super_sent"] and b.counters["super_received"], dict(b.counters)
    unit = "MB per CPU-second"
    out = [
        {"case": "super-packet entry: 64 KB GSO read sent whole, checksum in Python",
         "metric": "rate", "unit": unit, "value": round(whole_py, 1),
         "baselines": {"cut into segments, each tunnelled": round(cut, 1)}},
        {"case": "super-packet exit: 64 KB verified (Python) and written as GSO",
         "metric": "rate", "unit": unit, "value": round(exit_py, 1),
         "baselines": {"the same octets as tunnelled 1,400-octet packets": round(per_packet, 1)}},
    ]
    if whole_kernel is not None and exit_kernel is not None:
        out.insert(1, {"case": "super-packet entry: 64 KB GSO read sent whole, kernel sum",
                       "metric": "rate", "unit": unit, "value": round(whole_kernel, 1),
                       "baselines": {"cut into segments, each tunnelled": round(cut, 1)}})
        out.append({"case": "super-packet exit: 64 KB verified (kernel sum), written as GSO",
                    "metric": "rate", "unit": unit, "value": round(exit_kernel, 1),
                    "baselines": {"the same octets as tunnelled 1,400-octet packets":
                                  round(per_packet, 1)}})
    return out


def _cpu_us(func, n):
    t0 = time.process_time()
    for _ in range(n):
        func()
    return (time.process_time() - t0) * 1e6 / n


def _partial_cases(n):
    """Partial checksums (docs/io.md "Partial checksums left to the kernel"), in us of this
    process's CPU per 1,400-octet UDP packet: a TUN read with a partial checksum left to the
    kernel (written back as a tunnel packet behind NEEDS_CSUM) against the same read
    completed in Python and tunnelled, and against a finished packet on a TUN without
    offloads; at the exit, a partial tunnel packet written behind NEEDS_CSUM against the
    same one completed (the raw transport's completion) and decapsulated."""
    from haha.io.offload import complete_partial_checksum
    system = FakeSystem()
    home = IPv6Address("2001:db8:1::100")
    coa = IPv6Address("2001:db8:20::5")
    b = TunBackend(MemoryReactor(), _Sink(), netlink=FakeNetlink(system=system), system=system,
                   super_packets=True)
    b.tunnel_socket = TunnelSocket(MemoryReactor(), 64, opener=_NullSocket)
    b.kernel_sum = None
    b._start_super = lambda: b.tunnel_socket.start(lambda *a: None)  # no raw transport here
    b.start()
    b.install(ForwardingRoute(home, coa, HA, (), True))
    udp = build_packet(CN, home, 17, bytes(8) + bytes(range(256)) * 5 + bytes(120))
    frame = VNET_HDR.pack(1, 0, 0, 0, 40, 6) + udp
    file = b.tun.file
    # writes cost nothing here (the fake's bookkeeping would be measured otherwise): only
    # haha's Python is compared, each case's system calls being the kernel's
    file.write = file.writev = len
    hook = b.tun.partial_receiver
    assert hook is not None

    def entry():
        file.queue.append(frame)
        b.tun.doRead()

    left = _cpu_us(entry, n)
    b.tun.partial_receiver = None
    summed = _cpu_us(entry, n)
    b.tun.partial_receiver = hook
    plain = TunBackend(MemoryReactor(), _Sink(), netlink=FakeNetlink(system=system),
                       system=system)
    plain.start()
    plain.tun.file.write = plain.tun.file.writev = len
    plain.install(ForwardingRoute(home, coa, HA, (), True))

    def entry_plain():
        plain.tun.file.queue.append(udp)
        plain.tun.doRead()

    finished = _cpu_us(entry_plain, n)
    tunnelled = build_packet(coa, HA, 41, build_packet(home, CN, 17, bytes(1408)))

    def exit_left():
        b._decapsulate_partial(tunnelled)

    def exit_summed():
        b.decapsulate(complete_partial_checksum(tunnelled) or tunnelled)

    out_left = _cpu_us(exit_left, n)
    out_summed = _cpu_us(exit_summed, n)
    assert b.counters["encap_partial"] and b.counters["decap_partial"], dict(b.counters)
    unit = "us of CPU per packet"
    return [
        {"case": "partial UDP read (1,400 octets) left to the kernel, written back to the TUN",
         "metric": "cpu", "unit": unit, "value": round(left, 2),
         "baselines": {"completed in Python and tunnelled": round(summed, 2),
                       "a finished packet, TUN without offloads": round(finished, 2)}},
        {"case": "partial tunnel packet decapsulated behind NEEDS_CSUM",
         "metric": "cpu", "unit": unit, "value": round(out_left, 2),
         "baselines": {"completed (as the raw transport does), then decapsulated":
                       round(out_summed, 2)}},
    ]


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
    # the last binding installed (the earlier choice, ::17ff, had none: both tunnel cases
    # measured the way a packet without a binding is dropped)
    home = IPv6Address("2001:db8:1::13e7")
    coa = IPv6Address("2001:db8:20::13e7")
    down = build_packet(CN, home, 17, bytes(960))
    up = build_packet(coa, HA, 41, build_packet(home, CN, 17, bytes(960)))
    baseline = _rate(lambda: build_packet(HA, coa, 41, down), n)
    enc = _rate(lambda: b._from_tun(down), n)
    written = b.tun.file.written

    def dec():
        b.decapsulate(up)
        written.clear()

    decr = _rate(dec, n)
    assert b.counters["encapsulated"] and b.counters["decapsulated"], dict(b.counters)
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
    ] + _super_cases(max(50, n // 400)) + _partial_cases(max(1000, n // 10))}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
