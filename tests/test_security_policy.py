"""The security policy: which messages must arrive in ESP, from which kind of peer and from a
known source; drops counted by reason; `security = none` only with the lab flag and a loud
warning."""

import pytest

from haha.security import SecurityPolicy
from haha.security.errors import SecurityConfigError, SecurityError
from haha.wire.numbers import (
    ICMP6_DHAAD_REPLY,
    ICMP6_DHAAD_REQUEST,
    ICMP6_MPA,
    ICMP6_MPS,
    ICMP6_ROUTER_ADVERT,
    IPPROTO_ICMPV6,
    IPPROTO_IPV6,
    IPPROTO_MH,
    NumberProfile,
)

MH, ICMP = IPPROTO_MH, IPPROTO_ICMPV6
P = NumberProfile()
HAHA = [P.hello, P.bir, P.biu, P.bia]
FROM_HA = HAHA + [P.hasr, 12, 6, 0]  # + HAS, BA, BRR
ESP_REQUIRED = [(MH, t, "home-agent") for t in FROM_HA] + [
    (MH, 5, "mobile-node"), (ICMP, ICMP6_MPS, "mobile-node"), (ICMP, ICMP6_MPA, "home-agent")]
OPEN = [(MH, 7), (MH, 1), (MH, 150), (ICMP, ICMP6_DHAAD_REQUEST), (ICMP, ICMP6_DHAAD_REPLY),
        (ICMP, ICMP6_ROUTER_ADVERT), (ICMP, 1), (IPPROTO_IPV6, None), (17, None)]


@pytest.mark.parametrize("nh, t, role", ESP_REQUIRED)
def test_protected_messages(nh, t, role):
    """HELLO/BIR/BIU/BIA/HASR/HAS/BA/BRR (from a home agent), BU and MPS (from a mobile node)
    and MPA are processed only in ESP, on an SA of the right role, from a known source."""
    pol = SecurityPolicy()
    assert pol.must_protect(nh, t)
    assert pol.decide(nh, t, True, True, role).process
    other = "mobile-node" if role == "home-agent" else "home-agent"
    assert pol.decide(nh, t, False, True, role).reason == "unprotected"
    assert pol.decide(nh, t, True, True, other).reason == "wrong-peer"
    assert pol.decide(nh, t, True, True, None).reason == "wrong-peer"
    assert pol.decide(nh, t, True, False, role).reason == "unknown-source"
    assert pol.counters == {"unprotected": 1, "wrong-peer": 2, "unknown-source": 1}


@pytest.mark.parametrize("nh, t", OPEN)
def test_unprotected_messages_allowed(nh, t):
    """BE, other and unknown MH types, DHAAD, Neighbour Discovery, other ICMPv6, tunnelled
    packets and other protocols need neither ESP nor a known source, and are not protected on
    the way out."""
    pol = SecurityPolicy()
    assert not pol.must_protect(nh, t)
    for protected in (False, True):
        for known in (False, True):
            assert pol.decide(nh, t, protected, known).process
    assert pol.counters == {"unprotected": 0, "wrong-peer": 0, "unknown-source": 0}


def test_haha_messages_follow_the_profile_numbers():
    """The draft's messages are found under the profile's numbers, not fixed ones."""
    prof = NumberProfile.make(hello=230, bir=231, biu=232, bia=233, hasr=234)
    pol = SecurityPolicy(prof)
    assert pol.decide(MH, 232, False, True).reason == "unprotected"
    assert pol.decide(MH, P.biu, False, True).process  # 202 is just an unknown type here
    names = {r["message"]: r["type"] for r in pol.describe()}
    assert names["BIU"] == 232 and names["HASR"] == 234


def test_security_none_needs_the_lab_flag():
    """`security = none` without the explicit lab flag is refused with an error saying why;
    an unknown mode is refused too."""
    with pytest.raises(SecurityConfigError, match="lab"):
        SecurityPolicy(mode="none")
    with pytest.raises(SecurityConfigError, match="lab"):
        SecurityPolicy(mode="none", lab="yes")
    with pytest.raises(SecurityConfigError, match="expected one of"):
        SecurityPolicy(mode="ipsec")
    assert SecurityPolicy().warning is None


def test_lab_mode_waives_esp_but_not_the_source_check():
    """In lab mode nothing is protected on the way out, unprotected HAHA messages from known
    home agents are processed, unknown sources are still dropped, and the policy carries the
    loud start-up warning."""
    pol = SecurityPolicy(mode="none", lab=True)
    w = pol.warning
    assert "SECURITY DISABLED" in w and "WITHOUT IPsec" in w and "lab" in w
    for nh, t, _role in ESP_REQUIRED:
        assert not pol.must_protect(nh, t)
        assert pol.decide(nh, t, False, True).process
        assert pol.decide(nh, t, False, False).reason == "unknown-source"
    assert pol.counters["unknown-source"] == len(ESP_REQUIRED)


def test_decision_can_raise():
    """A drop decision raises a SecurityError with its reason on request; a process one not."""
    pol = SecurityPolicy()
    pol.decide(MH, 5, True, True, "mobile-node").raise_if_dropped()
    with pytest.raises(SecurityError) as e:
        pol.decide(MH, 5, False, True).raise_if_dropped()
    assert e.value.reason == "unprotected"
