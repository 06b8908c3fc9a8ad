"""Every life-cycle state of the home agent machine against every input it can get: each
message type, the timer, and each operator or discovery call (docs/core.md)."""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.effects import Event, Inbound, Send, SendIcmp
from haha.core.homeagent import HomeAgent, NotServing
from haha.core.settings import HomeAgentSettings
from haha.wire.icmpv6 import PI_R, DhaadReply, DhaadRequest, PrefixInformation, RouterAdvertisement
from haha.wire.mh import (
    BU_A,
    BU_H,
    BindingAck,
    BindingError,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingUpdate,
    HaHello,
    HaSwitchRequest,
    UnknownMessage,
)
from haha.wire.options import IPADDR_HOME_ADDRESS, AlternateCareOfAddress, BceInfo, IpAddress

ME = A("2001:db8:1::1")
P2 = A("2001:db8:1::2")
HOA = A("2001:db8:1::10")
COA = A("2001:db8:99::1")
ANYCAST = A("2001:db8:1:0:fdff:ffff:ffff:fffe")
STATES = ("created", "booting", "serving", "draining", "stopped")


def machine(state):
    s = HomeAgentSettings(address=ME, home_prefix="2001:db8:1::/64", peers=[P2],
                          authorised_peer_prefixes=[N("2001:db8:1::/64")], boot_wait=10)
    ha = HomeAgent(s, random.Random(1))
    if state == "created":
        return ha, 0.0
    ha.start(0.0)
    ha.receive(Inbound(HaHello(1, 0, 35, 10, 64, P2), P2, ME, protected_by=P2), 0.0)
    if state == "booting":
        return ha, 1.0
    ha.tick(10.0)
    ha.receive(Inbound(BindingUpdate(1, BU_A | BU_H, 100, (AlternateCareOfAddress(COA),)),
                       COA, ME, HOA, protected_by=HOA), 10.0)
    if state == "serving":
        return ha, 11.0
    ha.drain(11.0)
    if state == "draining":
        return ha, 12.0
    ha.stop(12.0)
    return ha, 13.0


def message(kind):
    if kind == "bu":
        return Inbound(BindingUpdate(2, BU_A | BU_H, 100,
                                     (AlternateCareOfAddress(COA),)), COA, ME, HOA,
                       protected_by=HOA)
    peer = dict(dst=ME, protected_by=P2)
    return {
        "ba": Inbound(BindingAck(0, 1), COA, ME),
        "be": Inbound(BindingError(1, HOA), COA, ME),
        "hasr": Inbound(HaSwitchRequest(), P2, ME, protected_by=P2),
        "unknown": Inbound(UnknownMessage(99, bytes(2)), COA, ME),
        "hello": Inbound(HaHello(2, 0, 35, 10, 64, P2), P2, **peer),
        "biu": Inbound(BindingInfoUpdate(7, (BceInfo(A("2001:db8:1::20"), COA, 0xC000, 1,
                                                     10),)), P2, **peer),
        "bia": Inbound(BindingInfoAck(7), P2, **peer),
        "bir": Inbound(BindingInfoRequest(8, (IpAddress(IPADDR_HOME_ADDRESS, A("::")),)), P2,
                       **peer),
        "dhaad": Inbound(DhaadRequest(9), COA, ANYCAST),
        "ra": Inbound(RouterAdvertisement(options=(PrefixInformation(A("2001:db8:1::3"), 64,
                                                                     flags=PI_R),)),
                      A("fe80::3"), A("ff02::1")),
    }[kind]


MESSAGES = ("bu", "ba", "be", "hasr", "unknown", "hello", "biu", "bia", "bir", "dhaad", "ra")
CALLS = ("tick", "start", "stop", "drain", "resume", "switch", "set_preference", "add_peer",
         "remove_peer", "request_binding")

#: Operator calls refused (NotServing / KeyError) per state; every other pair is accepted.
REFUSED = {
    "created": {"start": False, "drain": True, "resume": True, "switch": True},
    "booting": {"start": True, "drain": True, "resume": True, "switch": True},
    "serving": {"start": True, "resume": True},
    "draining": {"start": True, "drain": True},
    "stopped": {"start": True, "drain": True, "resume": True, "switch": True},
}

#: What a message does per state: 'dropped:<reason>' or a type of effect it must produce.
MESSAGE_OUTCOME = {
    "bu": {"booting": "dropped:booting", "serving": BindingAck, "draining": BindingAck},
    "ba": "dropped:unexpected", "be": "dropped:unexpected", "hasr": "dropped:unexpected",
    "unknown": BindingError, "hello": "peer", "biu": BindingInfoAck, "bia": "bia",
    "bir": BindingInfoUpdate,
    "dhaad": {"booting": "dropped:dhaad-not-served", "serving": DhaadReply,
              "draining": DhaadReply},
    "ra": "ignored",
}


def call(ha, name, now):
    if name == "tick":
        return ha.tick(now)
    if name in ("start", "stop", "drain", "resume"):
        return getattr(ha, name)(now)
    if name == "switch":
        return ha.switch(HOA, now)
    if name == "set_preference":
        return ha.set_preference(9, now)
    if name == "add_peer":
        return ha.add_peer(A("2001:db8:1::4"), now)
    if name == "remove_peer":
        return ha.remove_peer(A("2001:db8:1::4"), now)
    return ha.request_binding(now, home_address=HOA)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", MESSAGES)
def test_every_state_and_message(state, kind):
    """Before start and after stop every message is dropped as not running; otherwise each
    message gets its defined treatment, and nothing raises."""
    ha, now = machine(state)
    assert ha.state == state
    out = ha.receive(message(kind), now)
    expected = MESSAGE_OUTCOME[kind]
    if isinstance(expected, dict):
        expected = expected.get(state, "dropped:not-running")
    if state in ("created", "stopped"):
        expected = "dropped:not-running"
    if isinstance(expected, str) and expected.startswith("dropped:"):
        assert ha.counters[expected] == 1
        assert [e["reason"] for e in out if type(e) is Event and e.name == "dropped"] == [
            expected.split(":", 1)[1]]
        assert not [e for e in out if type(e) in (Send, SendIcmp)]
    elif expected == "peer":
        assert ha.counters.get("dropped:unknown-peer", 0) == 0
        assert ha.peers.get(P2) is not None
    elif expected == "ignored":
        # An RA is never an input to liveness (issue 9): no effect, no peer, counted.
        assert out == [] and A("2001:db8:1::3") not in ha.peers
        assert ha.counters["ignored:ra-not-liveness"] + \
            ha.counters["ignored:not-home-agent-ra"] == 1
    elif expected == "bia":
        assert ha.counters["bia-received"] == 1
    else:
        assert [e for e in out if type(e) in (Send, SendIcmp) and type(e.message) is expected]
    assert ha.state == state


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("name", CALLS)
def test_every_state_and_call(state, name):
    """Operator and discovery calls: refused ones raise (NotServing, or KeyError for a node
    that is not ours) and change nothing; the others return a list of effects."""
    ha, now = machine(state)
    refused = REFUSED[state].get(name)
    if refused:
        with pytest.raises((NotServing, KeyError)):
            call(ha, name, now)
        assert ha.state == state
        return
    out = call(ha, name, now)
    assert isinstance(out, list)
    after = {"start": "booting", "stop": "stopped", "drain": "draining", "resume": "serving"}
    if name in after and state != "stopped":
        assert ha.state == after[name]
    else:
        assert ha.state == state
