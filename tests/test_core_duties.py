"""Forwarding duties per binding and the effects between two sets of duties (draft 3)."""

from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

from haha.core.cache import Binding
from haha.core.duties import ForwardingRoute, duties_of, transition
from haha.core.effects import InstallRoute, ProxyNd, RemoveRoute
from haha.core.settings import HomeAgentSettings

HOA = A("2001:db8:1::10")
COA = A("2001:db8:99::1")
PEER = A("2001:db8:1::2")


def settings(kind):
    return HomeAgentSettings(address="2001:db8:1::1", home_prefix="2001:db8:1::/64", kind=kind)


def binding(primary=None, prefixes=()):
    return Binding(HOA, COA, 0xC000, 1, 400, 100.0, prefixes, primary,
                   A("2001:db8:1::1") if primary is None else None)


def test_home_link_primary_tunnels_and_proxies_copies_do_nothing():
    """With a home link only the primary intercepts (proxy ND) and tunnels (draft 3.1)."""
    for kind in ("home-link", "separate-links"):
        s = settings(kind)
        route, proxy = duties_of(s, binding(prefixes=(N("2001:db8:100::/48"),)))
        assert route == ForwardingRoute(HOA, COA, A("2001:db8:1::1"),
                                        (N("2001:db8:100::/48"),), True)
        assert proxy is True
        assert duties_of(s, binding(primary=PEER)) == (None, False)


def test_without_home_link_everybody_forwards_nobody_proxies():
    """Without a home link copies forward too, from this home agent's address (draft 3.2)."""
    s = settings("no-home-link")
    assert duties_of(s, binding()) == (ForwardingRoute(HOA, COA, A("2001:db8:1::1"), (), True),
                                       False)
    assert duties_of(s, binding(primary=PEER)) == (
        ForwardingRoute(HOA, COA, A("2001:db8:1::1"), (), False), False)


def test_transitions_emit_only_what_changes():
    """Gaining, losing and keeping duties: install/remove/proxy only for the differences."""
    s = settings("home-link")
    none = (None, False)
    primary = duties_of(s, binding())
    out = []
    transition(HOA, none, primary, out)
    assert out == [InstallRoute(primary[0]), ProxyNd(HOA, True)]
    out = []
    transition(HOA, primary, primary, out)
    assert out == []
    out = []
    transition(HOA, primary, none, out)
    assert out == [RemoveRoute(HOA), ProxyNd(HOA, False)]
