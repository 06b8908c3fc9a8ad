"""Every life-cycle state of the home agent machine against every input it can get: each
message kind, the timers, and each operator or discovery call (docs/core.md). The machine's
table (haha.core.halifecycle.TRANSITIONS) is walked pair by pair against the machine's
behaviour and against the expectations written here independently of it."""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core.effects import Event, Inbound, Send, SendIcmp
from haha.core import halifecycle as hl
from haha.core.halifecycle import TRANSITIONS, HAInput, HAState, TableViolation
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


def machine(state, **kw):
    s = HomeAgentSettings(address=ME, home_prefix="2001:db8:1::/64", peers=[P2],
                          authorised_peer_prefixes=[N("2001:db8:1::/64")],
                          **{"boot_wait": 10, **kw})
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



#: The message inputs and a message of each kind (``other``: one a home agent has no use for).
MESSAGE_OF = {HAInput.BU: "bu", HAInput.HELLO: "hello", HAInput.BIU: "biu",
              HAInput.BIA: "bia", HAInput.BIR: "bir", HAInput.DHAAD: "dhaad", HAInput.RA: "ra",
              HAInput.BE: "be", HAInput.UNKNOWN_MH: "unknown", HAInput.OTHER: "ba"}
MESSAGES = ("bu", "ba", "be", "hasr", "unknown", "hello", "biu", "bia", "bir", "dhaad", "ra")
CALL_OF = {HAInput.TICK: "tick", HAInput.START: "start", HAInput.STOP: "stop",
           HAInput.DRAIN: "drain", HAInput.RESUME: "resume", HAInput.SWITCH: "switch",
           HAInput.SET_PREFERENCE: "set_preference", HAInput.ADD_PEER: "add_peer",
           HAInput.REMOVE_PEER: "remove_peer", HAInput.REQUEST_BINDING: "request_binding"}
CALLS = tuple(CALL_OF.values())

#: Operator calls refused (NotServing) per state; every other call is accepted.
REFUSED = {
    "created": {"drain", "resume", "switch"},
    "booting": {"start", "drain", "resume", "switch"},
    "serving": {"start", "resume"},
    "draining": {"start", "drain"},
    "stopped": {"start", "drain", "resume", "switch"},
}

#: Where an accepted life-cycle call leaves the machine (with boot_wait > 0); every other
#: accepted input leaves the state as it was.
AFTER = {"start": "booting", "stop": "stopped", "drain": "draining", "resume": "serving"}

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


def expected_outcome(state, kind):
    expected = MESSAGE_OUTCOME[kind]
    if isinstance(expected, dict):
        expected = expected.get(state, "dropped:not-running")
    if state in ("created", "stopped"):
        expected = "dropped:not-running"
    return expected


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


def test_the_table_is_total():
    """Every (state, input) pair has exactly one entry; an accepted one names a method of
    HomeAgent and the states it may lead to, a dropped one a reason."""
    assert set(TRANSITIONS) == {(s, i) for s in HAState for i in HAInput}
    assert {s.value for s in HAState} == set(STATES)
    for (state, i), entry in TRANSITIONS.items():
        assert entry.kind in (hl.ACCEPT, hl.REFUSE, hl.DROP, hl.IGNORE)
        if entry.kind == hl.ACCEPT:
            assert callable(getattr(HomeAgent, entry.handler)) and entry.next
        if entry.kind == hl.DROP:
            assert entry.reason and i in MESSAGE_OF
        if entry.kind == hl.REFUSE:
            assert i in CALL_OF


def test_the_table_matches_the_expectations():
    """The table, read on its own, says what this file expects: the refusals, the state each
    life-cycle call leads to, and each message's drop reason."""
    for (state, i), entry in TRANSITIONS.items():
        if i in CALL_OF:
            name = CALL_OF[i]
            assert (entry.kind == hl.REFUSE) == (name in REFUSED[state]), (state, i)
            if entry.kind == hl.ACCEPT and name in AFTER:
                assert AFTER[name] in entry.next
            elif entry.kind == hl.ACCEPT and name != "tick":
                assert entry.next == {HAState(state)}
        elif i in MESSAGE_OF:
            expected = expected_outcome(state, MESSAGE_OF[i])
            # A Binding Error is dropped by its handler unless it answers a switch request.
            if isinstance(expected, str) and expected.startswith("dropped:") \
                    and (i is not HAInput.BE or expected == "dropped:not-running"):
                assert entry.kind == hl.DROP and entry.reason == expected[8:], (state, i)
            else:
                assert entry.kind == hl.ACCEPT and entry.next == {HAState(state)}
    assert TRANSITIONS[(HAState.BOOTING, HAInput.BOOT_OVER)].next == {HAState.SERVING}
    assert TRANSITIONS[(HAState.CREATED, HAInput.TICK)].kind == hl.IGNORE


@pytest.fixture
def handlers(monkeypatch):
    """Record every table handler the machine runs (each still does its work)."""
    calls = []
    names = {e.handler for e in TRANSITIONS.values() if e.kind == hl.ACCEPT}
    for name in names:
        original = getattr(HomeAgent, name)

        def spy(self, *args, _name=name, _original=original, **kw):
            calls.append(_name)
            return _original(self, *args, **kw)
        monkeypatch.setattr(HomeAgent, name, spy)
    return calls


def drive(ha, i, now):
    """Give ``ha`` input ``i`` the way it happens in operation."""
    if i is HAInput.BOOT_OVER:
        return ha.tick(max(now, 10.0))  # the boot wait (10 s) is over
    if i in CALL_OF:
        return call(ha, CALL_OF[i], now)
    return ha.receive(message(MESSAGE_OF[i]), now)


@pytest.mark.parametrize("state, i", sorted(TRANSITIONS))
def test_every_state_and_input(state, i, handlers):
    """Each pair does what its table entry says: an accepted input runs the handler the
    table names and leaves the machine in one of the states the entry lists; a refused call
    raises NotServing and runs nothing; a dropped message is counted with the entry's reason
    and answered with nothing; an ignored input returns no effect and changes nothing."""
    ha, now = machine(state)
    assert ha.state == state
    del handlers[:]
    entry = TRANSITIONS[(state, i)]
    if entry.kind == hl.REFUSE:
        with pytest.raises(NotServing):
            drive(ha, i, now)
        assert ha.state == state and handlers == []
        return
    out = drive(ha, i, now)
    assert isinstance(out, list)
    if entry.kind == hl.ACCEPT:
        assert entry.handler in handlers
        assert ha.state in entry.next
    elif entry.kind == hl.DROP:
        assert ha.counters["dropped:" + entry.reason] == 1
        assert [e["reason"] for e in out if type(e) is Event and e.name == "dropped"] == [
            entry.reason]
        assert not [e for e in out if type(e) in (Send, SendIcmp)] and handlers == []
        assert ha.state == state
    elif i is HAInput.BOOT_OVER:  # ignored: the tick runs, the boot-over handler does not
        assert "_boot_over" not in handlers and ha.state == state
    else:
        assert out == [] and handlers == [] and ha.state == state


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind", MESSAGES)
def test_every_state_and_message(state, kind):
    """Before start and after stop every message is dropped as not running; otherwise each
    message gets its defined treatment, and nothing raises."""
    ha, now = machine(state)
    assert ha.state == state
    out = ha.receive(message(kind), now)
    expected = expected_outcome(state, kind)
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
    """Operator and discovery calls: refused ones raise NotServing and change nothing; the
    others return a list of effects and lead where AFTER says (or nowhere)."""
    ha, now = machine(state)
    if name in REFUSED[state]:
        with pytest.raises(NotServing):
            call(ha, name, now)
        assert ha.state == state
        return
    out = call(ha, name, now)
    assert isinstance(out, list)
    if name in AFTER and state != "stopped":
        assert ha.state == AFTER[name]
    else:
        assert ha.state == state


def test_start_without_boot_wait_serves_at_once():
    """With no boot wait, start leads straight to serving (the table's other START target)."""
    ha, now = machine("created", boot_wait=0)
    ha.start(now)
    assert ha.state == "serving" and ha.state is HAState.SERVING


def test_booting_ends_by_the_table_when_the_wait_is_over():
    """The boot wait ends on the tick that reaches it, not before: booting -> serving with a
    'serving' event."""
    ha, _ = machine("booting")
    assert ha.tick(9.9) is not None and ha.state == "booting"
    out = ha.tick(10.0)
    assert ha.state == "serving"
    assert [e for e in out if type(e) is Event and e.name == "serving"]


def test_a_handler_that_breaks_the_table_is_caught(monkeypatch):
    """The machine checks each accepted input's resulting state against its entry: a handler
    that leaves the machine elsewhere raises TableViolation instead of going unnoticed."""
    ha, now = machine("serving")
    monkeypatch.setattr(HomeAgent, "_set_preference_call",
                        lambda self, now, out, preference: self._enter(HAState.DRAINING))
    with pytest.raises(TableViolation, match="set-preference in serving left"):
        ha.set_preference(3, now)


def test_states_read_as_their_names():
    """States are an enum and still read as the strings operators and the control socket
    have always seen."""
    ha, _ = machine("draining")
    assert isinstance(ha.state, HAState) and ha.state == "draining"
    assert f"{ha.state}" == "draining" and str(ha.state) == "draining"
    with pytest.raises(NotServing, match="^drain: the home agent is draining$"):
        ha.drain(0.0)
