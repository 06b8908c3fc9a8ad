"""Stock-kernel tier: haha's user-space ESP against the Linux kernel's ESP (xfrm), both ways.

Two namespaces on one veth link. Namespace ``haha`` is a home agent's end as haha runs it: a
:class:`~haha.security.sadb.SecurityAssociationDatabase` with the pair's SAs derived from one
secret, complete packets sent through a raw socket and received through AF_PACKET. Namespace
``kernel`` is a peer whose SAs and policies are the lines ``python -m haha.security.keys xfrm
--policies`` prints for it, run as they are with ``ip``: its kernel (``esp6``,
``rfc4106(gcm(aes))``) protects and verifies, and an ``IPPROTO_MH`` raw socket sends and
receives the Mobility Header in the clear. HAHA messages (Home Agent HELLO, Binding Information
Request) go both ways, for each AES key size, several in a row (sequence numbers, replay
window), and each side checks the other's ICV and checksum: the kernel silently drops an ESP
packet whose ICV fails and a Mobility Header whose checksum fails, and haha raises.
"""

import os
import select
import socket
import subprocess
import sys
import time
from ipaddress import IPv6Address

import pytest

from haha.io.system import in_netns
from haha.lab.timing import scaled
from haha.lab.topology import Topology
from haha.security.keys import derive_pair, generate_key_file, load_secret
from haha.security.sadb import SecurityAssociationDatabase
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import BindingInfoRequest, HaHello, decode_mh, encode_mh

pytestmark = [pytest.mark.netns, pytest.mark.stock_kernel, pytest.mark.kernel_esp]

HAHA = IPv6Address("2001:db8:7::1")
KERNEL = IPv6Address("2001:db8:7::2")
IPPROTO_MH = 135
ETH_P_IPV6 = 0x86DD


@pytest.fixture
def pair(require_root):
    t = Topology()
    t.add_node("haha").add_node("kernel")
    t.add_link("l", ("haha", "eth0", [f"{HAHA}/64"]), ("kernel", "eth0", [f"{KERNEL}/64"]))
    t.create()
    try:
        yield t
    finally:
        t.destroy()


def _keys_cli(*argv):
    done = subprocess.run([sys.executable, "-m", "haha.security.keys", *argv],
                          capture_output=True, text=True, timeout=scaled(60))
    assert done.returncode == 0, done.stderr
    return done.stdout


def _messages(n):
    """n distinct HAHA messages: HELLOs and Binding Information Requests."""
    out = []
    for i in range(n):
        if i % 2:
            out.append(BindingInfoRequest(identifier=100 + i))
        else:
            out.append(HaHello(sequence=i, preference=10, lifetime=30, interval=5,
                               prefix_length=64, home_agent=HAHA))
    return out


class _HahaEnd:
    """haha's side: raw socket out, AF_PACKET in, user-space ESP."""

    def __init__(self, topo, sadb):
        self.sadb = sadb
        with in_netns(topo.ns("haha")):
            self.out = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.into = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                      socket.htons(ETH_P_IPV6))
            self.into.bind(("eth0", ETH_P_IPV6))

    def send(self, mh):
        esp = self.sadb.protect(KERNEL, IPPROTO_MH, mh)
        self.out.sendto(build_packet(HAHA, KERNEL, 50, esp), (str(KERNEL), 0))

    def receive(self, timeout=5.0):
        """The (next header, payload) of the next ESP packet from the kernel's end."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "no ESP packet from the kernel's end"
            ready, _, _ = select.select([self.into], [], [], left)
            if not ready:
                continue
            data, addr = self.into.recvfrom(65535)
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            packet = parse_packet(data)
            if packet.src == KERNEL and packet.next_header == 50:
                peer, nh, payload = self.sadb.unprotect(packet.src, packet.payload)
                assert peer == KERNEL
                return nh, payload

    def close(self):
        self.out.close()
        self.into.close()


class _KernelEnd:
    """The kernel's side: an IPPROTO_MH raw socket; xfrm does ESP."""

    def __init__(self, topo):
        with in_netns(topo.ns("kernel")):
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)

    def send(self, mh):
        self.sock.sendto(mh, (str(HAHA), 0))

    def receive(self, timeout=5.0):
        ready, _, _ = select.select([self.sock], [], [], scaled(timeout))
        assert ready, "the kernel delivered no Mobility Header"
        data, addr = self.sock.recvfrom(65535)
        assert IPv6Address(addr[0]) == HAHA
        return data

    def close(self):
        self.sock.close()


def _xfrm_stats(topo):
    return topo.run("kernel", ["ip", "-s", "xfrm", "state"]).stdout


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_haha_esp_and_kernel_xfrm_both_ways(pair, tmp_path, bits):
    """With the kernel's SAs and policies from ``haha.security.keys xfrm --policies``: five
    HAHA messages protected by haha's user-space ESP are decrypted by the kernel and reach
    its Mobility Header socket byte for byte (checksum intact), and five sent there in the
    clear leave the kernel in ESP that haha's SADB opens and verifies; the kernel's states
    count the packets both ways."""
    secret_file = tmp_path / "pair.key"
    generate_key_file(secret_file)
    secret = load_secret(secret_file)
    lines = _keys_cli("xfrm", "--secret", str(secret_file), "--local", str(KERNEL), "--peer",
                      str(HAHA), "--key-bits", str(bits), "--policies").strip().splitlines()
    assert len(lines) == 4
    for line in lines:
        pair.run("kernel", ["sh", "-c", line])
    sadb = SecurityAssociationDatabase.from_specs(derive_pair(secret, HAHA, KERNEL,
                                                              key_bits=bits))
    haha, kernel = _HahaEnd(pair, sadb), _KernelEnd(pair)
    try:
        for message in _messages(5):
            mh = encode_mh(message, HAHA, KERNEL)
            haha.send(mh)
            assert kernel.receive() == mh
        for message in _messages(5):
            mh = encode_mh(message, KERNEL, HAHA)
            kernel.send(bytes(mh[:4]) + b"\0\0" + bytes(mh[6:]))  # the kernel sums it
            nh, payload = haha.receive()
            assert nh == IPPROTO_MH and payload == mh
            assert decode_mh(payload, KERNEL, HAHA) == message
    finally:
        haha.close()
        kernel.close()
    stats = _xfrm_stats(pair)
    assert stats.count("5(packets)") >= 2, stats  # the kernel's in and out states


def test_kernel_drops_a_forged_icv_and_haha_refuses_one(pair, tmp_path):
    """Tampering shows on both sides: an ESP packet from haha with one ICV bit flipped never
    reaches the kernel's Mobility Header socket (the next, intact one does), and a kernel ESP
    packet with a flipped bit fails haha's authentication (counted ``auth-failed``)."""
    secret_file = tmp_path / "pair.key"
    generate_key_file(secret_file)
    secret = load_secret(secret_file)
    for line in _keys_cli("xfrm", "--secret", str(secret_file), "--local", str(KERNEL),
                          "--peer", str(HAHA), "--policies").strip().splitlines():
        pair.run("kernel", ["sh", "-c", line])
    sadb = SecurityAssociationDatabase.from_specs(derive_pair(secret, HAHA, KERNEL))
    haha, kernel = _HahaEnd(pair, sadb), _KernelEnd(pair)
    try:
        first, second = (encode_mh(m, HAHA, KERNEL) for m in _messages(2))
        esp = bytearray(sadb.protect(KERNEL, IPPROTO_MH, first))
        esp[-1] ^= 1
        haha.out.sendto(build_packet(HAHA, KERNEL, 50, bytes(esp)), (str(KERNEL), 0))
        haha.send(second)
        assert kernel.receive() == second  # the forged one was dropped before it

        kernel.send(encode_mh(_messages(1)[0], KERNEL, HAHA))
        deadline = time.monotonic() + scaled(5)
        while True:
            assert time.monotonic() < deadline, "no ESP packet from the kernel's end"
            data, addr = haha.into.recvfrom(65535)
            packet = parse_packet(data)
            if packet.src == KERNEL and packet.next_header == 50:
                break
        forged = bytearray(packet.payload)
        forged[-1] ^= 1
        with pytest.raises(Exception, match="auth"):
            sadb.unprotect(KERNEL, bytes(forged))
        assert sadb.counters["auth-failed"] == 1
        assert os.path.exists(secret_file)
    finally:
        haha.close()
        kernel.close()
