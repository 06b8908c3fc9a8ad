"""The null backend records intent and changes nothing (tier 1)."""

from ipaddress import IPv6Address, IPv6Network

import pytest
from zope.interface.verify import verifyObject

from haha.backends.null import NullBackend
from haha.core.duties import ForwardingRoute
from haha.interfaces import IForwardingBackend

HOME = IPv6Address("2001:db8:1::100")
R = ForwardingRoute(HOME, IPv6Address("2001:db8:20::5"), IPv6Address("2001:db8:1::1"),
                    (IPv6Network("2001:db8:99::/48"),), True)


def test_provides_the_backend_interface():
    """NullBackend provides IForwardingBackend."""
    assert verifyObject(IForwardingBackend, NullBackend())


def test_snapshot_is_the_recorded_intent():
    """install/remove, proxy ND and prefixes show up in snapshot() (JSON-ready) and history;
    refresh replaces; stop forgets everything."""
    b = NullBackend()
    b.start()
    b.install(R)
    b.install(R)
    b.proxy_nd_start(HOME, "eth0")
    b.advertise_prefix(IPv6Network("2001:db8:1::/64"))
    snap = b.snapshot()
    assert snap["routes"] == [{"home_address": str(HOME), "care_of": "2001:db8:20::5",
                               "local": "2001:db8:1::1", "prefixes": ["2001:db8:99::/48"],
                               "primary": True}]
    assert snap["proxy_nd"] == [[str(HOME), "eth0"]]
    assert snap["prefixes"] == ["2001:db8:1::/64"]
    b.remove(HOME)
    b.remove(HOME)
    b.proxy_nd_stop(HOME, "eth0")
    b.withdraw_prefix(IPv6Network("2001:db8:1::/64"))
    assert b.snapshot()["routes"] == [] and b.snapshot()["proxy_nd"] == []
    assert [h[0] for h in b.history][:3] == ["start", "install", "install"]
    b.install(R)
    b.stop()
    assert b.snapshot()["routes"] == []


def test_bad_route_is_refused():
    """A route whose fields are not addresses/networks is refused and changes nothing."""
    b = NullBackend()
    with pytest.raises(TypeError):
        b.install(ForwardingRoute("2001:db8::1", R.care_of, R.local))
    with pytest.raises(TypeError):
        b.install(ForwardingRoute(HOME, R.care_of, R.local, ("2001:db8::/48",)))
    assert b.routes == {}


def test_history_is_bounded():
    """history keeps only the last HISTORY calls: a daemon with backend = null that registers
    nodes for ever does not grow by one entry per call (the routes themselves are kept)."""
    from haha.backends.null import HISTORY

    b = NullBackend()
    for i in range(HISTORY + 500):
        b.install(ForwardingRoute(IPv6Address(int(HOME) + i), R.care_of, R.local))
    assert len(b.history) == HISTORY
    assert b.history[-1][1].home_address == IPv6Address(int(HOME) + HISTORY + 499)
    assert len(b.routes) == HISTORY + 500
