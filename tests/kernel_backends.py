"""The home agents' forwarding backends the end-to-end tests run with, and what each counts.

``tun`` tunnels in user space on any kernel and counts its own packets; ``netlink`` uses the
kernel's ip6tnl (``ip6_tunnel``: the stock-kernel tier) and its work shows only in the kernel's
link statistics of its tunnels. Tests parametrised with :data:`BACKENDS` carry the marker
``ip6_tunnel`` for ``netlink``, which ``conftest.py`` deselects on a kernel without the driver;
:data:`BACKENDS_IN_TIER` adds ``stock_kernel``, which selects the run for the tier by default.
"""

import pytest

#: ``tun`` runs on every kernel; ``netlink`` only where the kernel has ip6_tunnel. Neither is in
#: the stock-kernel tier's default selection: the full tier (``./dev stock-kernel -m
#: "stock_kernel or ip6_tunnel"``) runs these ``netlink`` runs too.
BACKENDS = [pytest.param("tun", id="tun"),
            pytest.param("netlink", id="netlink", marks=pytest.mark.ip6_tunnel)]
#: The same, with the ``netlink`` run in the tier's default selection (marker ``stock_kernel``):
#: every draft-3 kind of home network (shared home link, separate links, no home link) and NEMO,
#: what fits CI's time budget (about 70 s each under emulation on an idle machine).
BACKENDS_IN_TIER = [pytest.param("tun", id="tun"),
                    pytest.param("netlink", id="netlink",
                                 marks=[pytest.mark.ip6_tunnel, pytest.mark.stock_kernel])]


def tunnel_counts(snapshot):
    """``(encapsulated, decapsulated)`` of a home agent's ``forwarding`` snapshot: the tun
    backend's own counters, or the sums over the netlink backend's kernel tunnels."""
    if snapshot.get("name") == "netlink":
        packets = snapshot.get("tunnel_packets", {}).values()
        return (sum(p["encapsulated"] for p in packets), sum(p["decapsulated"] for p in packets))
    counters = snapshot.get("counters", {})
    return counters.get("encapsulated", 0), counters.get("decapsulated", 0)
