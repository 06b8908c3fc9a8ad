"""Socket buffers: the size asked for is granted (past net.core.rmem_max with CAP_NET_ADMIN),
a capped grant is logged with the sysctl to raise, and the larger queue really holds a burst
that the kernel's default queue drops."""

import os
import socket

import pytest

from haha.io import sockbuf
from haha.logging import logger

BURST = 3000
DATAGRAM = bytes(200)


def _pair():
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    rx.bind(("::1", 0))
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    return rx, tx


def _burst_received(rx, tx):
    """Send BURST datagrams while nobody reads, then count what the queue kept."""
    for _ in range(BURST):
        tx.sendto(DATAGRAM, rx.getsockname())
    rx.setblocking(False)
    got = 0
    while True:
        try:
            rx.recv(2048)
        except BlockingIOError:
            return got
        got += 1


def test_a_large_receive_buffer_holds_a_burst_the_default_drops():
    """3,000 datagrams sent before one is read: the kernel's default queue keeps a fraction;
    with 8 MiB granted by SO_RCVBUFFORCE (root here) every one is kept."""
    if os.geteuid() != 0:
        pytest.fail("needs root (CAP_NET_ADMIN grants the buffer past net.core.rmem_max)")
    rx, tx = _pair()
    with rx, tx:
        default = _burst_received(rx, tx)
    rx, tx = _pair()
    with rx, tx:
        granted, limit = sockbuf.set_buffer(rx, "receive", 8 << 20)
        assert (granted, limit) == (8 << 20, None)
        assert _burst_received(rx, tx) == BURST
    assert default < BURST


class _CappedSocket:
    """A socket whose forcing options are refused (no CAP_NET_ADMIN) and whose plain options
    are capped at 1 MiB, as the kernel does with net.core.rmem_max."""

    def __init__(self):
        self.sizes = {}

    def setsockopt(self, level, option, value):
        if option in (sockbuf.SO_RCVBUFFORCE, sockbuf.SO_SNDBUFFORCE):
            raise PermissionError(1, "Operation not permitted")
        self.sizes[option] = min(value, 1 << 20) * 2

    def getsockopt(self, level, option):
        return self.sizes[option]


def test_a_capped_grant_is_reported_with_the_sysctl_to_raise():
    """Without CAP_NET_ADMIN the plain option is used; the grant is what the kernel reports
    halved, and the warning names the sysctl."""
    seen = []
    log = logger("haha.test-sockbuf")
    log.observer = seen.append
    sock = _CappedSocket()
    got = sockbuf.apply_buffers(sock, log, "UDP transport", receive=4 << 20, send=1 << 16)
    assert got == {"receive": 1 << 20, "send": 1 << 16}
    warned = [e for e in seen if e.get("limit")]
    assert [e["limit"] for e in warned] == ["net.core.rmem_max"]
    assert sockbuf.set_buffer(sock, "send", 0) == (None, None)
