"""Binding Update checks (RFC 6275 9.5.1, 10.3.1, 10.3.2; RFC 3963 6.2): every verdict."""

from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.cache import Binding
from haha.core.registration import (
    DEREGISTER,
    DUPLICATE,
    REGISTER,
    REJECT,
    examine,
    invalid_prefix,
)
from haha.core.settings import HomeAgentSettings
from haha.wire.mh import BU_A, BU_H, BU_R, BindingUpdate
from haha.wire.options import MobileNetworkPrefix

HOA = A("2001:db8:1::10")
MR = A("2001:db8:1::20")
IMPLICIT_MR = A("2001:db8:1::21")
COA = A("2001:db8:99::1")
S = HomeAgentSettings(
    address="2001:db8:1::1", home_prefix="2001:db8:1::/64", max_binding_lifetime=400,
    mobile_routers={MR: [N("2001:db8:100::/40")]},
    implicit_prefixes={IMPLICIT_MR: [N("2001:db8:200::/48")]})


def bu(seq=10, lifetime=50, flags=BU_A | BU_H, prefixes=()):
    return BindingUpdate(seq, flags, lifetime, tuple(MobileNetworkPrefix(p) for p in prefixes))


def held(seq=10, care_of=COA, primary=None, flags=BU_A | BU_H):
    return Binding(HOA, care_of, flags, seq, 200, 100.0, (), primary)


def test_first_registration_accepts_any_sequence_and_caps_the_lifetime():
    """No entry: any sequence is accepted; the lifetime is capped by the configuration."""
    v = examine(S, bu(seq=0xFFFF, lifetime=1000), HOA, COA, None)
    assert (v.action, v.status, v.sequence, v.lifetime) == (REGISTER, 0, 0xFFFF, 100)
    assert examine(S, bu(lifetime=20), HOA, COA, None).lifetime == 20


def test_outside_the_home_prefix_is_132():
    """A home address outside the served prefix: Not home subnet."""
    v = examine(S, bu(), A("2001:db8:2::10"), COA, None)
    assert (v.action, v.status) == (REJECT, 132)


@pytest.mark.parametrize("seq", [10, 9, 10 - 32767 & 0xFFFF])
def test_sequence_not_newer_is_135_carrying_the_last_accepted(seq):
    """Not newer than the entry (modulo 2**16): 135 with the last accepted number."""
    v = examine(S, bu(seq=seq, lifetime=50), HOA, A("2001:db8:99::2"), held(seq=10))
    assert (v.action, v.status, v.sequence) == (REJECT, 135, 10)


def test_sequence_window_applies_to_copies_too():
    """A copy's sequence number counts as well, so the newest registration wins everywhere."""
    v = examine(S, bu(seq=9), HOA, COA, held(seq=10, primary=A("2001:db8:1::2")))
    assert (v.status, v.sequence) == (135, 10)
    assert examine(S, bu(seq=11), HOA, COA, held(seq=10, primary=A("2001:db8:1::2"))).action \
        == REGISTER


def test_same_update_again_is_answered_as_a_duplicate():
    """The network duplicated a Binding Update we accepted: answer it again, change nothing."""
    v = examine(S, bu(seq=10), HOA, COA, held(seq=10))
    assert (v.action, v.status, v.lifetime) == (DUPLICATE, 0, 50)


@pytest.mark.parametrize("lifetime, care_of", [(0, COA), (50, HOA)])
def test_deregistration_by_lifetime_zero_or_care_of_equal_home(lifetime, care_of):
    """Lifetime 0 or care-of = home address deregisters (RFC 6275 10.3.2)..."""
    v = examine(S, bu(seq=11, lifetime=lifetime), HOA, care_of, held(seq=10))
    assert (v.action, v.status) == (DEREGISTER, 0)


def test_deregistration_without_binding_is_133():
    """...and without a binding it is answered 133 (not home agent for this node)."""
    v = examine(S, bu(lifetime=0), HOA, COA, None)
    assert (v.action, v.status) == (REJECT, 133)


def test_mobile_router_explicit_mode():
    """Explicit prefixes must be valid (141) and inside the router's authorised ones (142)."""
    ok = examine(S, bu(flags=BU_A | BU_H | BU_R, prefixes=[N("2001:db8:100:5500::/56")]), MR,
                 COA, None)
    assert (ok.action, ok.prefixes) == (REGISTER, (N("2001:db8:100:5500::/56"),))
    bad = examine(S, bu(flags=BU_A | BU_H | BU_R, prefixes=[N("fe80::/64")]), MR, COA, None)
    assert bad.status == 141
    far = examine(S, bu(flags=BU_A | BU_H | BU_R, prefixes=[N("2001:db8:300::/48")]), MR, COA,
                  None)
    assert far.status == 142


def test_mobile_router_implicit_mode():
    """Without prefixes the configured implicit ones are used; none configured is 143."""
    v = examine(S, bu(flags=BU_A | BU_H | BU_R), IMPLICIT_MR, COA, None)
    assert (v.action, v.prefixes) == (REGISTER, (N("2001:db8:200::/48"),))
    assert examine(S, bu(flags=BU_A | BU_H | BU_R), MR, COA, None).status == 143


def test_mobile_router_not_permitted_is_140():
    """R from a home address that is no router, or with NEMO off: 140."""
    assert examine(S, bu(flags=BU_A | BU_H | BU_R), HOA, COA, None).status == 140
    off = HomeAgentSettings(address="2001:db8:1::1", home_prefix="2001:db8:1::/64", nemo=False,
                            mobile_routers={MR: [N("2001:db8:100::/40")]})
    assert examine(off, bu(flags=BU_A | BU_H | BU_R), MR, COA, None).status == 140


def test_draining_refuses_registrations_but_not_deregistrations():
    """A draining home agent answers 129 to registrations and still accepts deregistration."""
    assert examine(S, bu(), HOA, COA, None, draining=True).status == 129
    assert examine(S, bu(seq=11, lifetime=0), HOA, COA, held(), draining=True).action \
        == DEREGISTER


def test_invalid_prefixes():
    """Zero length, non-global, covering the home prefix or the home agent: invalid."""
    assert invalid_prefix(N("::/0"), S)
    assert invalid_prefix(N("ff00::/8"), S)
    assert invalid_prefix(N("2001:db8::/32"), S)
    assert invalid_prefix(N("2001:db8:1::/64"), S)
    assert invalid_prefix(N("2001:db8:100::/48"), S) is None
