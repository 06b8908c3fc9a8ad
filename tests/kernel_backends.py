"""The home agents' forwarding backends the end-to-end tests run with, and what each counts.

``tun`` tunnels in user space on any kernel and counts its own packets; ``netlink`` uses the
kernel's ip6tnl (``ip6_tunnel``: the stock-kernel tier) and its work shows only in the kernel's
link statistics of its tunnels. Tests parametrised with :data:`BACKENDS` carry the marker
``ip6_tunnel`` for ``netlink``, which ``conftest.py`` deselects on a kernel without the driver.
"""

import pytest

BACKENDS = [pytest.param("tun", id="tun"),
            pytest.param("netlink", id="netlink", marks=pytest.mark.ip6_tunnel)]


def tunnel_counts(snapshot):
    """``(encapsulated, decapsulated)`` of a home agent's ``forwarding`` snapshot: the tun
    backend's own counters, or the sums over the netlink backend's kernel tunnels."""
    if snapshot.get("name") == "netlink":
        packets = snapshot.get("tunnel_packets", {}).values()
        return (sum(p["encapsulated"] for p in packets), sum(p["decapsulated"] for p in packets))
    counters = snapshot.get("counters", {})
    return counters.get("encapsulated", 0), counters.get("decapsulated", 0)
