"""Tier 3: TCP through the user-space tunnel with super-packets (``super-packets = yes``):
the entry point sends a TUN's TCP super-packet whole, its checksum completed, in one tunnel
packet the kernel fragments; the exit point's kernel reassembles it and haha writes it to its
TUN as one GSO packet. 8 MB each way (correspondent -> home address, home address ->
correspondent) arrive intact with the option on and off; with it on, the super-packet path
carried them and every super-packet left with a correct TCP checksum.

Topology and parts: tests/tunpair.py (haha.lab.shared_home_link; ha1 runs a RawTransport +
TunBackend, mn1 a RawTransport + MobileTunnel, both in this process).
"""

import struct
import subprocess
from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from haha.io.offload import VNET_HDR
from haha.io.superpkt import KernelSum, python_segment_sum
from tcptransfer import expected, transfer
from tunpair import user_space_tunnel

HOME = IPv6Address("2001:db8:1::100")
PORT = 5203
SIZE = 8 << 20



def _expected():
    return expected(SIZE)


def _transfer(topo, receiver, address, sender, source=None):
    return transfer(topo, receiver, address, sender, PORT, SIZE, source)


def _word_sum(data):
    """One's complement sum of 16-bit words, word by word (independent of haha.io.offload)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _tcp_checksum_ok(inner):
    """The TCP segment after the 40-octet IPv6 header of ``inner`` sums to all ones with
    its pseudo-header (RFC 8200 8.1)."""
    seg = inner[40:]
    pseudo = inner[8:40] + struct.pack("!IxxxB", len(seg), 6)
    return _word_sum(pseudo + seg) == 0xFFFF


def _watch_sends(sock, seen):
    """Check the inner TCP checksum of every super-packet ``sock`` sends (the first 50)."""
    real = sock.send

    def send(source, destination, buffers):
        if len(seen) < 50:
            seen.append(_tcp_checksum_ok(b"".join(bytes(b) for b in buffers)))
        return real(source, destination, buffers)
    sock.send = send


def _watch_gso_writes(tun, mtu, seen):
    """Check each GSO write's virtio_net_hdr (segments that fit ``mtu``, checksum asked of
    the kernel over the TCP header) and the pseudo-header sum in the field (writes of packets
    whose checksum is left partial, not GSO, are test_io_partial_netns.py's)."""
    real = tun.write_offloaded

    def write(vnet, buffers):
        if len(seen) < 50 and VNET_HDR.unpack(vnet)[1]:
            flags, gso, hdr_len, gso_size, start, offset = VNET_HDR.unpack(vnet)
            packet = b"".join(bytes(b) for b in buffers)
            seg = packet[40:]
            pseudo = _word_sum(packet[8:40] + struct.pack("!IxxxB", len(seg), 6))
            field = struct.unpack_from("!H", packet, 56)[0]
            seen.append(flags == 1 and gso == 4 and start == 40 and offset == 16 and
                        hdr_len == 40 + (packet[52] >> 4) * 4 and
                        hdr_len + gso_size == mtu and len(packet) > mtu and
                        field % 0xFFFF == pseudo % 0xFFFF)
        return real(vnet, buffers)
    tun.write_offloaded = write


def _icmp_errors(topo):
    """ICMPv6 Destination Unreachable and Parameter Problem messages received so far by the
    home agent's and the node's kernels (``/proc/net/snmp6`` of their namespaces): what one
    tunnel end's kernel answers reaches the other (the Out counters count a message before
    netfilter may drop it)."""
    out = {}
    for node in ("ha1", "mn1"):
        lines = topo.run(node, ["cat", "/proc/net/snmp6"]).stdout.splitlines()
        table = dict(line.split()[:2] for line in lines if line.strip())
        out[node] = (int(table["Icmp6InDestUnreachs"]), int(table["Icmp6InParmProblems"]))
    return out


@pytest.mark.netns
@pytest.mark.parametrize("super_packets", [False, True], ids=["off", "on"])
@pytest_twisted.inlineCallbacks
def test_tcp_both_ways_with_and_without_super_packets(require_root, super_packets):
    """8 MB of TCP from the correspondent to the home address and 8 MB back from the home
    address arrive intact through the user-space tunnel, with super-packets off (nothing goes
    the new way, the guard has no fragment rule) and on (the home agent and the node each
    sent super-packets whole with correct TCP checksums, and each wrote the other's to its
    TUN as GSO packets the kernel accepted); no ICMPv6 error (Destination Unreachable,
    Parameter Problem) reached either end meanwhile."""
    with user_space_tunnel(super_packets=super_packets) as t:
        topo, ha_tx, backend, tunnel = t.topo, t.ha_tx, t.backend, t.tunnel
        cn_addr = topo.address("cn")
        sums, gso = [], []
        if super_packets:
            for end in (backend, tunnel):
                _watch_sends(end.tunnel_socket, sums)
                _watch_gso_writes(end.tun, end.mtu, gso)

        t.route(HOME)

        errors = _icmp_errors(topo)
        down = yield deferToThread(_transfer, topo, "mn1", HOME, "cn")
        assert down == _expected(), (backend.snapshot(), tunnel.snapshot())
        up = yield deferToThread(_transfer, topo, "cn", cn_addr, "mn1", HOME)
        assert up == _expected(), (backend.snapshot(), tunnel.snapshot())

        # no ICMPv6 error about a (reassembled) tunnel packet reached either tunnel end
        assert _icmp_errors(topo) == errors, (errors, _icmp_errors(topo))
        ruleset = ha_tx._ruleset()
        if not super_packets:
            assert backend.tunnel_socket is None and tunnel.tunnel_socket is None
            assert not backend.counters["super_sent"] and not tunnel.counters["super_sent"]
            assert "frag" not in ruleset
            return
        assert "exthdr frag exists" in ruleset
        # download: the home agent sent super-packets whole, the node wrote them as GSO
        assert backend.counters["super_sent"] > 0, backend.snapshot()
        assert tunnel.counters["super_received"] > 0, tunnel.snapshot()
        # upload: the node sent its own whole, the home agent wrote them for the kernel to
        # segment and forward
        assert tunnel.counters["super_sent"] > 0, tunnel.snapshot()
        assert backend.counters["super_received"] > 0, backend.snapshot()
        assert sums and all(sums), sums
        assert gso and all(gso), gso
        # the checksums were summed by the kernel (the loopback sockets), not in Python
        assert backend.kernel_sum.counters["sums"] > 0, backend.snapshot()
        assert tunnel.kernel_sum.counters["sums"] > 0, tunnel.snapshot()
        assert not backend.tunnel_socket.counters["send_errors"]
        assert not tunnel.tunnel_socket.counters["send_errors"]
        # reassembled packets never reached the packet socket as well (no double delivery)
        assert not ha_tx.counters["received_malformed"]


@pytest.mark.netns
def test_kernel_sum_agrees_with_python_on_this_kernel(require_root):
    """In a fresh namespace (loopback up), the kernel's sums of random segments, even and
    odd, up to a whole super-packet, are the segments' own sums as Python computes them."""
    import os

    name = f"hahasum{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        ks = KernelSum(netns=name)
        ks.start()
        try:
            assert ks.running
            for n in (32, 33, 1388, 1401, 40000, 65475):
                segment = os.urandom(n)
                assert ks(segment) == python_segment_sum(segment), n
                assert ks(memoryview(segment)) == python_segment_sum(segment), n
            assert ks.counters["sums"] == 12 and ks.counters["mismatch"] == 0
        finally:
            ks.stop()
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
