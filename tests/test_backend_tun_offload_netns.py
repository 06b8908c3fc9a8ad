"""Tier 3: TCP through the tun backend with TUN offloads: the home agent's TUN hands over
TCP super-packets (GSO), haha cuts them into segments, and the mobile node's kernel accepts
every one (checksums, sequence numbers, lengths): the bytes arrive intact.

Topology and parts: tests/tunpair.py (haha.lab.shared_home_link; ha1 runs a RawTransport +
TunBackend, mn1 a RawTransport + MobileTunnel, both in this process).
"""

from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tcptransfer import expected, transfer
from tunpair import decapsulating, user_space_tunnel

HOME = IPv6Address("2001:db8:1::100")
PORT = 5202
SIZE = 8 << 20



def _transfer(topo):
    return transfer(topo, "mn1", HOME, "cn", PORT, SIZE)


@pytest.mark.netns
@pytest_twisted.inlineCallbacks
def test_tcp_through_offloaded_tun_arrives_intact(require_root):
    """8 MB of TCP from the correspondent to the home address cross the user-space tunnel
    intact while the home agent's TUN delivers GSO super-packets (gso_reads > 0) that haha
    segments, and the node's TUN is written with virtio headers."""
    with user_space_tunnel(decapsulating, offload=True) as t:
        topo, backend, tunnel = t.topo, t.backend, t.tunnel
        t.route(HOME)

        n, digest = yield deferToThread(_transfer, topo)
        assert (n, digest) == expected(SIZE), (n, backend.snapshot(), tunnel.snapshot())
        assert backend.tun.offload and tunnel.tun.offload
        assert backend.tun.counters["gso_reads"] > 0, backend.snapshot()
        assert backend.tun.counters["gso_segments"] > backend.tun.counters["gso_reads"]
        assert tunnel.counters["decapsulated"] >= SIZE // 1500
        assert not backend.tun.counters["offload_errors"]
        assert not tunnel.tun.counters["offload_errors"]
