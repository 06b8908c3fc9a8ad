"""Tier 3: UDP with partial checksums through the user-space tunnel with offloaded TUNs
(``super-packets = yes``), docs/io.md "Partial checksums left to the kernel".

The correspondent's veth leaves UDP checksums partial; the home agent's TUN, opened with
offloads, hands them over so. The home agent must not sum them in Python: it writes each as
a tunnel packet back to its TUN behind a ``NEEDS_CSUM`` header pointing at the inner
checksum, and the kernel forwards it; the node's packet socket sees it still partial and the
node writes the inner packet to its own TUN behind ``NEEDS_CSUM``. The datagrams arrive
intact, every header written points the kernel at the inner UDP checksum with the
pseudo-header sum in the field (so what the kernel or a network card completes is right),
and the other way (the node's own datagrams, completed at the node) the correspondent's
kernel, which verifies UDP checksums, accepts every one.

Topology and parts: tests/tunpair.py (ha1 runs a RawTransport + TunBackend, mn1 a
RawTransport + MobileTunnel, both in this process).
"""

import hashlib
import struct
import subprocess
import sys
from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from haha.io.offload import VNET_HDR
from haha.lab.timing import scaled
from tunpair import user_space_tunnel

HOME = IPv6Address("2001:db8:1::100")
PORT = 5204
COUNT = 400
SIZE = 1400

RECEIVER = r"""
import hashlib, socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(float(sys.argv[3]))
print("ready", flush=True)
seen = set()
try:
    while True:
        d = s.recv(65535)
        if d == b"end":
            break
        if d == b"warm":
            continue
        seen.add(hashlib.sha256(d).hexdigest())
except socket.timeout:
    pass
print(len(seen), flush=True)
for h in sorted(seen):
    print(h)
"""

SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
source = sys.argv[5] if len(sys.argv) > 5 else None
if source:
    s.bind((source, 0))
s.connect((sys.argv[1], int(sys.argv[2])))
count, size = int(sys.argv[3]), int(sys.argv[4])
for _ in range(10):  # neighbour discovery on the way first (it queues only a few packets)
    try:
        s.send(b"warm")
    except OSError:
        pass
    time.sleep(0.1)
for i in range(count):
    s.send(i.to_bytes(4, "big") * (size // 4))
    if i % 20 == 19:
        time.sleep(0.005)
for _ in range(5):  # the receiver stops at the first; later ones may be refused
    time.sleep(0.2)
    try:
        s.send(b"end")
    except OSError:
        break
"""


def _datagram_digests():
    return {hashlib.sha256(i.to_bytes(4, "big") * (SIZE // 4)).hexdigest()
            for i in range(COUNT)}


def _udp(topo, receiver, address, sender, source=None):
    """Send COUNT datagrams from ``sender`` to ``address`` in ``receiver``; the set of
    digests received."""
    rx = topo.popen(receiver, [sys.executable, "-c", RECEIVER, str(address), str(PORT),
                               str(scaled(10))], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "ready"
        argv = [sys.executable, "-c", SENDER, str(address), str(PORT), str(COUNT), str(SIZE)]
        topo.run(sender, argv + ([str(source)] if source else []))
        out, _ = rx.communicate(timeout=scaled(60))
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    lines = out.split()
    return set(lines[1:])


def _word_sum(data):
    """One's complement sum of 16-bit words, word by word (independent of haha.io.offload)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _completed_ok(vnet, buffers):
    """Do what the kernel does with a ``NEEDS_CSUM`` write (sum from ``csum_start`` to the end
    over the field as it is, store the complement at ``csum_start + csum_offset``), then
    check the innermost UDP checksum against its pseudo-header (RFC 8200 8.1). True when it
    is a correct UDP packet afterwards."""
    flags, gso, _, _, start, offset = VNET_HDR.unpack(vnet)
    packet = bytearray(b"".join(bytes(b) for b in buffers))
    if flags != 1 or gso != 0 or offset != 6:
        return False
    at = start + offset
    packet[at:at + 2] = struct.pack("!H", 0xFFFF - _word_sum(packet[start:]))
    ip = start - 40  # the UDP header follows the innermost IPv6 header directly here
    if packet[ip] >> 4 != 6 or packet[ip + 6] != 17:
        return False
    udp = packet[start:]
    pseudo = packet[ip + 8:ip + 40] + struct.pack("!IxxxB", len(udp), 17)
    return _word_sum(pseudo + udp) == 0xFFFF and struct.unpack_from("!H", udp, 4)[0] == len(udp)


def _watch_partial_writes(tun, seen):
    """Record, for each write of a packet with a partial checksum (``NEEDS_CSUM`` without
    GSO), whether the kernel's completion yields a correct UDP checksum (the first 100)."""
    real = tun.write_offloaded

    def write(vnet, buffers):
        if len(seen) < 100 and VNET_HDR.unpack(vnet)[0] == 1 and not VNET_HDR.unpack(vnet)[1]:
            seen.append(_completed_ok(vnet, buffers))
        return real(vnet, buffers)
    tun.write_offloaded = write


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_partial_udp_checksums_left_to_the_kernel(require_root):
    """UDP datagrams from the correspondent (partial checksums) reach the home address intact
    without a checksum summed in Python at either end: the home agent sent them as tunnel
    packets through its TUN (``encap_partial``), the node wrote them to its TUN still partial
    (``decap_partial``), and every header written makes the kernel complete the inner UDP
    checksum correctly; the node's datagrams back all pass the correspondent's checksum
    verification."""
    with user_space_tunnel(super_packets=True) as t:
        topo, backend, tunnel, mn_tx = t.topo, t.backend, t.tunnel, t.mn_tx
        cn_addr = topo.address("cn")
        ha_writes, mn_writes = [], []
        _watch_partial_writes(backend.tun, ha_writes)
        _watch_partial_writes(tunnel.tun, mn_writes)
        t.route(HOME)

        down = yield deferToThread(_udp, topo, "mn1", HOME, "cn")
        wanted = _datagram_digests()
        assert down <= wanted, "a datagram arrived damaged"
        assert len(down) >= COUNT * 9 // 10, (len(down), backend.snapshot(),
                                               tunnel.snapshot(), dict(mn_tx.counters))
        # the home agent left them partial, for its kernel: none summed in Python
        assert backend.counters["encap_partial"] >= len(down), backend.snapshot()
        assert backend.tun.counters["partial_whole"] >= len(down), backend.snapshot()
        assert not backend.tun.counters["gso_segments"], backend.snapshot()
        assert ha_writes and all(ha_writes), ha_writes
        # ...and so did the node, behind its TUN
        assert tunnel.counters["decap_partial"] >= len(down), tunnel.snapshot()
        assert mn_tx.counters["checksum_left_partial"] >= len(down), mn_tx.counters
        assert not mn_tx.counters["checksum_completed"], mn_tx.counters
        assert mn_writes and all(mn_writes), mn_writes

        up = yield deferToThread(_udp, topo, "cn", cn_addr, "mn1", HOME)
        # the correspondent's kernel verified every checksum: a wrong one is never received
        assert up <= wanted
        assert len(up) >= COUNT * 9 // 10, (len(up), backend.snapshot(), tunnel.snapshot())
