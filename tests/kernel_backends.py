"""The home agents' forwarding backends the end-to-end tests run with, and what each counts.

``tun`` tunnels in user space on any kernel and counts its own packets; ``netlink`` uses the
kernel's ip6tnl (``ip6_tunnel``: the stock-kernel tier) and its work shows only in the kernel's
link statistics of its tunnels. Tests parametrised with :data:`BACKENDS` carry the marker
``ip6_tunnel`` for ``netlink``, which ``conftest.py`` deselects on a kernel without the driver,
and ``stock_kernel``, which selects them for the tier.
"""

import pytest

#: ``tun`` runs on every kernel (the stock-kernel tier leaves it to the host run, for time);
#: ``netlink`` only where the kernel has ip6_tunnel, and is part of the tier.
BACKENDS = [pytest.param("tun", id="tun"),
            pytest.param("netlink", id="netlink",
                         marks=[pytest.mark.ip6_tunnel, pytest.mark.stock_kernel])]
#: The same, with the ``tun`` run in the stock-kernel tier too (one representative test per
#: module, so that the tier also shows the user-space tunnel on a stock kernel).
BACKENDS_BOTH_IN_TIER = [pytest.param("tun", id="tun", marks=pytest.mark.stock_kernel),
                         BACKENDS[1]]


def tunnel_counts(snapshot):
    """``(encapsulated, decapsulated)`` of a home agent's ``forwarding`` snapshot: the tun
    backend's own counters, or the sums over the netlink backend's kernel tunnels."""
    if snapshot.get("name") == "netlink":
        packets = snapshot.get("tunnel_packets", {}).values()
        return (sum(p["encapsulated"] for p in packets), sum(p["decapsulated"] for p in packets))
    counters = snapshot.get("counters", {})
    return counters.get("encapsulated", 0), counters.get("decapsulated", 0)
