"""Stock-kernel tier: a ``kernel-xfrm`` home agent and an ``external`` one against haha's
user-space ESP, on a kernel with ESP.

Two namespaces on one veth link. Namespace ``user`` is a home agent with haha's user-space ESP
(:class:`~haha.security.sadb.SecurityAssociationDatabase`, epoch-keyed between home agents as the
daemon builds it): complete packets out through a raw socket, in through AF_PACKET. Namespace
``kernel`` is a home agent whose ESP the kernel does:

- ``kernel-xfrm``: :class:`~haha.security.kernelmode.KernelXfrm` installs the pair's SAs and
  policies with ``ip xfrm`` (:class:`~haha.security.xfrm.IpXfrm`); the Mobility Header goes out
  in the clear through an ``IPPROTO_MH`` socket and comes in the same way, judged by
  :class:`~haha.security.kernelmode.KernelEsp`; ESP the namespace's AF_PACKET socket sees goes to
  ``observe`` (the peer's boot epoch);
- ``external``: the test installs the SAs and policies as an IKE daemon would, and
  :class:`~haha.security.kernelmode.ExternalCheck` finds them (and names what is removed).

HELLO, BIR and BIU go both ways.
"""

import select
import socket
import time
from ipaddress import IPv6Address

import pytest

from haha.io.system import in_netns
from haha.lab.timing import scaled
from haha.lab.topology import Topology
from haha.security.errors import SecurityConfigError
from haha.security.kernelmode import ExternalCheck, KernelXfrm, kernel_pairs
from haha.security.keys import _xfrm_commands, derive_pair
from haha.security.sadb import HOME_AGENT, SecurityAssociationDatabase
from haha.security.xfrm import IpXfrm
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import (BindingInfoRequest, BindingInfoUpdate, HaHello, decode_mh,
                          encode_mh)

pytestmark = [pytest.mark.netns, pytest.mark.stock_kernel, pytest.mark.kernel_esp]

USER = IPv6Address("2001:db8:7::1")
KERNEL = IPv6Address("2001:db8:7::2")
SECRET = bytes(range(32))
IPPROTO_MH = 135
ETH_P_IPV6 = 0x86DD


@pytest.fixture
def pair(require_root):
    t = Topology()
    t.add_node("user").add_node("kernel")
    t.add_link("l", ("user", "eth0", [f"{USER}/64"]), ("kernel", "eth0", [f"{KERNEL}/64"]))
    t.create()
    try:
        yield t
    finally:
        t.destroy()


def _messages(sender):
    return [HaHello(sequence=1, preference=10, lifetime=30, interval=5, prefix_length=64,
                    home_agent=sender),
            BindingInfoRequest(identifier=7),
            BindingInfoUpdate(identifier=8),
            HaHello(sequence=2, preference=10, lifetime=30, interval=5, prefix_length=64,
                    home_agent=sender)]


def _packet_socket(topo, node):
    with in_netns(topo.ns(node)):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IPV6))
        s.bind(("eth0", ETH_P_IPV6))
    return s


def _esp_from(sock, source, timeout=5.0):
    """The ESP payload of the next packet from ``source`` on an AF_PACKET socket, or None."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        data, addr = sock.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        packet = parse_packet(data)
        if packet.src == source and packet.next_header == 50:
            return packet.payload


class _UserEnd:
    """haha's user-space ESP home agent."""

    def __init__(self, topo, sadb):
        self.sadb = sadb
        with in_netns(topo.ns("user")):
            self.out = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.into = _packet_socket(topo, "user")

    def send(self, mh, protect=True):
        if protect:
            esp = self.sadb.protect(KERNEL, IPPROTO_MH, mh)
            data = build_packet(USER, KERNEL, 50, esp)
        else:
            data = build_packet(USER, KERNEL, IPPROTO_MH, mh)
        self.out.sendto(data, (str(KERNEL), 0))

    def receive(self):
        esp = _esp_from(self.into, KERNEL)
        assert esp is not None, "no ESP packet from the kernel's end"
        peer, nh, payload = self.sadb.unprotect(KERNEL, esp)
        assert peer == KERNEL and nh == IPPROTO_MH
        return payload

    def close(self):
        self.out.close()
        self.into.close()


class _KernelEnd:
    """The kernel's ESP: the Mobility Header in the clear on an IPPROTO_MH socket, each
    message judged by ``esp`` (a KernelEsp), ESP seen on the link given to ``observe``."""

    def __init__(self, topo, esp, observe=None):
        self.esp = esp
        self.observe = observe
        with in_netns(topo.ns("kernel")):
            self.sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
        self.seen = _packet_socket(topo, "kernel")

    def send(self, mh):
        nh, payload = self.esp.protect(KERNEL, USER, IPPROTO_MH, mh)
        # the kernel sums the checksum of an IPPROTO_MH socket's messages
        self.sock.sendto(bytes(payload[:4]) + b"\0\0" + bytes(payload[6:]), (str(USER), 0))

    def pump(self, timeout=1.0):
        """Hand the ESP seen on the link to ``observe``; whether it replaced an SA."""
        esp = _esp_from(self.seen, USER, timeout)
        return esp is not None and self.observe is not None and self.observe(USER, esp)

    def receive(self, timeout=5.0):
        """The next Mobility Header the kernel delivered, or None; raises if the kernel
        delivered one that no policy required to be protected."""
        ready, _, _ = select.select([self.sock], [], [], scaled(timeout))
        if not ready:
            return None
        data, addr = self.sock.recvfrom(65535)
        source = IPv6Address(addr[0].split("%")[0])
        nh, payload = self.esp.unprotect(source, KERNEL, IPPROTO_MH, data)
        return payload

    def close(self):
        self.sock.close()
        self.seen.close()


def _both_ways(user, kernel):
    for message in _messages(USER):
        mh = encode_mh(message, USER, KERNEL)
        user.send(mh)
        assert kernel.receive() == mh
    for message in _messages(KERNEL):
        mh = encode_mh(message, KERNEL, USER)
        kernel.send(mh)
        payload = user.receive()
        assert payload == mh and decode_mh(payload, KERNEL, USER) == message


def _xfrm_count(topo):
    out = topo.run("kernel", ["ip", "xfrm", "state"]).stdout
    pol = topo.run("kernel", ["ip", "xfrm", "policy"]).stdout
    return out.count("proto esp"), pol.count("dir ")


def test_kernel_xfrm_home_agent_and_user_space_esp_home_agent(pair, tmp_path):
    """kernel-xfrm against user-space ESP with boot epochs: the first HELLO of the user-space
    peer's epoch is dropped by the kernel and, seen on the link, makes haha replace the
    kernel's inbound SA with that epoch's keys; from then on HELLO, BIR and BIU pass both ways
    (the kernel's epoch-free packets are accepted by the user-space SA); an unprotected
    Mobility Header from the peer is never delivered; stop removes every entry; a second run
    after a crash reclaims the first one's entries."""
    epoch = (1 << 30) << 24 | 0x5A5A5A
    sadb = SecurityAssociationDatabase.from_specs(
        derive_pair(SECRET, USER, KERNEL, HOME_AGENT, epoch=epoch))
    state = str(tmp_path / "xfrm.json")
    kx = KernelXfrm(IpXfrm(netns=pair.ns("kernel")), KERNEL,
                    kernel_pairs(KERNEL, [(USER, SECRET, HOME_AGENT)], wall=time.time()), state)
    kx.start()
    assert _xfrm_count(pair) == (2, 2)
    user, kernel = _UserEnd(pair, sadb), _KernelEnd(pair, kx.esp, kx.observe)
    try:
        first = encode_mh(_messages(USER)[0], USER, KERNEL)
        user.send(first)
        assert kernel.pump() is True  # the epoch's keys are in the kernel now
        assert kernel.receive(timeout=0.5) is None  # the first one was dropped there
        assert kx.installed_keys(USER) == ("epoch", epoch)
        user.send(encode_mh(BindingInfoRequest(identifier=1), USER, KERNEL), protect=False)
        assert kernel.receive(timeout=1.0) is None  # plain MH: the policy requires ESP
        _both_ways(user, kernel)
    finally:
        user.close()
        kernel.close()
    # a crash: the entries stay; the next run reclaims them from the state file
    again = KernelXfrm(IpXfrm(netns=pair.ns("kernel")), KERNEL,
                       kernel_pairs(KERNEL, [(USER, SECRET, HOME_AGENT)], wall=time.time()),
                       state)
    assert again.start() == (2, 2)
    assert _xfrm_count(pair) == (2, 2)
    again.stop()
    assert _xfrm_count(pair) == (0, 0)


def test_external_home_agent_with_ike_installed_sas_and_user_space_peer(pair):
    """external: with SAs and policies installed by the test as an IKE daemon would (its own
    reqid, no haha tag), the start-up check passes and HELLO, BIR and BIU go both ways against
    a user-space ESP peer; when the IKE daemon's inbound policy goes, the periodic check names
    it and counts it."""
    for line in _xfrm_commands(SECRET, KERNEL, USER, 128, policies=True):
        pair.run("kernel", ["sh", "-c", line])
    ext = ExternalCheck(IpXfrm(netns=pair.ns("kernel")), KERNEL, [USER])
    ext.require()
    sadb = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, USER, KERNEL))
    user, kernel = _UserEnd(pair, sadb), _KernelEnd(pair, ext.esp)
    try:
        _both_ways(user, kernel)
    finally:
        user.close()
        kernel.close()
    pair.run("kernel", ["ip", "xfrm", "policy", "delete", "src", f"{USER}/128", "dst",
                        f"{KERNEL}/128", "proto", "135", "dir", "in"])
    problems = ext.check()
    assert len(problems) == 1 and "dir in" in problems[0]
    assert ext.counters["external.missing-policy"] == 1
    with pytest.raises(SecurityConfigError, match="no policy requiring ESP"):
        ext.require()
