"""The mobile node / mobile router machine: every (state, input) pair of its transition table,
then the behaviours RFC 6275 11, RFC 3963 and draft 6 ask for, with a fake clock."""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

import pytest

from haha.core import mobilenode as mnm
from haha.core.effects import (
    AnnounceHome,
    Event,
    Inbound,
    LeaveComplete,
    Send,
    SendIcmp,
    TunnelDown,
    TunnelUp,
)
from haha.core.mobilenode import TRANSITIONS, InvalidTransition, MobileNode
from haha.core.settings import MobileNodeSettings
from haha.wire.icmpv6 import DhaadReply, DhaadRequest
from haha.wire.mh import (
    BA_R,
    BU_H,
    BU_R,
    BindingAck,
    BindingError,
    BindingRefreshRequest,
    BindingUpdate,
    HaSwitchRequest,
    HomeAgentSwitch,
)
from haha.wire.options import (
    IPADDR_HOME_AGENT,
    AlternateCareOfAddress,
    BindingRefreshAdvice,
    IpAddress,
    MobileNetworkPrefix,
)

PREFIX = N("2001:db8:1::/64")
HOA = A("2001:db8:1::10")
HA1 = A("2001:db8:1::1")
HA2 = A("2001:db8:1::2")
HA3 = A("2001:db8:1::3")
COA = A("2001:db8:99::1")
COA2 = A("2001:db8:99::2")
ANYCAST = A("2001:db8:1:0:fdff:ffff:ffff:fffe")


def node(home_agents=(HA1, HA2), **kw):
    s = MobileNodeSettings(home_address=HOA, home_prefix=PREFIX, home_agents=home_agents, **kw)
    return MobileNode(s, random.Random(3))


def sends(out, kind=None):
    return [e for e in out if type(e) in (Send, SendIcmp)
            and (kind is None or type(e.message) is kind)]


def only(items):
    assert len(items) == 1, items
    return items[0]


def ba(m, status=0, lifetime=100, flags=0, src=None, seq=None, options=()):
    """A BA as the home agent the node last wrote to would send it."""
    msg = BindingAck(status, m.sequence if seq is None else seq, lifetime, flags, options)
    return Inbound(msg, src or m.target, m.care_of or HOA, None,
                   HOA if m.care_of is not None else None, src or m.target)


def hasr(desired, src=HA1):
    opts = (IpAddress(IPADDR_HOME_AGENT, desired),) if desired is not None else ()
    return Inbound(HaSwitchRequest(opts), src, COA, None, HOA, src)


def dhaad_reply(m, addresses=(HA2, HA1)):
    return Inbound(DhaadReply(m._dhaad_id or 1, tuple(addresses)), HA1, m.care_of)


# -- putting a node in every state --------------------------------------------------------------


def in_state(state):
    """A node in ``state`` (reached through the public entry points) and the current time."""
    if state == "idle":
        return node(), 0.0
    if state == "home":
        m = node()
        m.start(0.0)
        return m, 0.0
    if state == "discovering":
        m = node(home_agents=())
        m.start(0.0, COA)
        return m, 0.0
    m = node()
    m.start(0.0, COA)
    if state == "registering":
        return m, 0.0
    m.receive(ba(m), 0.5)
    if state == "registered":
        return m, 0.5
    if state == "refreshing":
        t = m.next_deadline()
        m.tick(t)
        return m, t
    if state == "switching":
        m.receive(hasr(HA2), 1.0)
        return m, 1.0
    if state == "deregistering":
        m.return_home(1.0)
        return m, 1.0
    raise AssertionError(state)


def input_for(m, event):
    """Keyword arguments of a plausible instance of ``event`` for node ``m``."""
    if event in (mnm.START_AWAY, mnm.MOVE):
        return {"care_of": COA2}
    if event == mnm.BA:
        return {"inbound": ba(m)}
    if event == mnm.SWITCH:
        return {"inbound": hasr(HA2)}
    if event == mnm.DHAAD_REPLY:
        return {"inbound": dhaad_reply(m)}
    if event == mnm.BRR:
        return {"inbound": Inbound(BindingRefreshRequest(), HA1, COA, None, HOA, HA1)}
    if event == mnm.BE:
        return {"inbound": Inbound(BindingError(2, HOA), HA1, COA)}
    return {}


#: The state each handled pair leads to (with the inputs of ``input_for``).
EXPECTED = {
    ("idle", "start-away"): "registering",
    ("idle", "start-home"): "home",
    ("home", "move"): "registering",
    ("discovering", "return-home"): "home",
    ("discovering", "switch"): "discovering",  # HA2 is not in its (empty) list: DHAAD
    ("discovering", "move"): "discovering",
    ("discovering", "dhaad-reply"): "registering",
    ("discovering", "retransmit"): "discovering",
    ("discovering", "expire"): "discovering",
    ("registering", "return-home"): "deregistering",
    ("registering", "switch"): "registering",
    ("registering", "move"): "registering",
    ("registering", "ba"): "registered",
    ("registering", "retransmit"): "registering",
    ("registered", "return-home"): "deregistering",
    ("registered", "switch"): "switching",
    ("registered", "move"): "refreshing",
    ("registered", "brr"): "refreshing",
    ("registered", "refresh"): "refreshing",
    ("registered", "expire"): "registering",
    ("refreshing", "return-home"): "deregistering",
    ("refreshing", "switch"): "switching",
    ("refreshing", "move"): "refreshing",
    ("refreshing", "ba"): "registered",
    ("refreshing", "retransmit"): "refreshing",
    ("refreshing", "expire"): "registering",
    ("switching", "return-home"): "deregistering",
    ("switching", "switch"): "switching",
    ("switching", "move"): "switching",
    ("switching", "ba"): "registered",
    ("switching", "retransmit"): "switching",
    ("switching", "expire"): "switching",
    ("deregistering", "move"): "refreshing",  # the binding is still there
    ("deregistering", "ba"): "home",
    ("deregistering", "retransmit"): "deregistering",
    ("deregistering", "expire"): "home",
    ("discovering", "leave"): "idle",  # nothing registered: stops at once
    ("registering", "leave"): "idle",
    ("registered", "leave"): "deregistering",
    ("refreshing", "leave"): "deregistering",
    ("switching", "leave"): "deregistering",
}


def test_the_transition_table_is_total():
    """Every (state, input) pair has an entry: a handler, IGNORE or INVALID."""
    assert set(TRANSITIONS) == {(s, i) for s in mnm.STATES for i in mnm.INPUTS}
    for entry in TRANSITIONS.values():
        assert entry in (mnm.IGNORE, mnm.INVALID) or callable(getattr(MobileNode, entry))


@pytest.mark.parametrize("state, event", sorted(TRANSITIONS))
def test_every_state_and_input(state, event):
    """Each pair does what the table says: INVALID raises and changes nothing, IGNORE changes
    nothing and emits nothing, a handler reaches the expected state (STOP: idle; BE: same)."""
    m, now = in_state(state)
    assert m.state == state
    entry = TRANSITIONS[(state, event)]
    kw = input_for(m, event)
    if entry == mnm.INVALID:
        with pytest.raises(InvalidTransition):
            m.dispatch(event, now, **kw)
        assert m.state == state
        return
    out = m.dispatch(event, now, **kw)
    if entry == mnm.IGNORE:
        assert out == [] and m.state == state
        assert m.counters[f"ignored:{state}:{event}"] == 1
        return
    if event == mnm.STOP:
        expected = "idle"
    elif event == mnm.BE:
        expected = state
    else:
        expected = EXPECTED[(state, event)]
    assert m.state == expected
    if expected != state:
        assert [e for e in out if type(e) is Event and e.name == "state"][-1].fields == {
            "old": state, "new": expected, "input": event}


# -- registration --------------------------------------------------------------------------------


def test_binding_update_form():
    """The BU goes from the care-of address with a Home Address option, A|H, an Alternate
    Care-of Address option, the lifetime in 4-second units, protected towards the HA."""
    m = node(lifetime=600)
    e = only(sends(m.start(0.0, COA)))
    assert (e.src, e.dst, e.home_address, e.routing_address, e.protect) == (COA, HA1, HOA, None,
                                                                           HA1)
    bu = e.message
    assert bu.flags == 0xC000 and bu.lifetime == 150
    assert bu.options == (AlternateCareOfAddress(COA),)


def _retransmissions(m, count):
    """The times and Binding Updates of ``m``'s first ``count`` sends (started at 0)."""
    out = m.start(0.0, COA)
    times, bus = [0.0], [only(sends(out)).message]
    while len(times) < count:
        t = m.next_deadline()
        times.append(t)
        bus.append(only(sends(m.tick(t))).message)
    return times, bus


def test_retransmission_back_off_resends_the_same_binding_update():
    """First registration: 1.5 s, doubling to 32 s and staying there (with no attempt limit,
    RFC 6275 11.8); each retransmission is the same message, sequence number included, so a
    home agent that accepted a queued copy answers it without registering again."""
    m = node(registration_attempts=0)
    times, bus = _retransmissions(m, 9)
    assert [b - a for a, b in zip(times, times[1:])] == [1.5, 3, 6, 12, 24, 32, 32, 32]
    assert len(set(bus)) == 1 and m.counters["bu-retransmitted"] == 8


def test_a_refresh_is_retransmitted_from_one_second_with_its_number():
    """A refresh starts at INITIAL_BINDACK_TIMEOUT (1 s) and doubles; its retransmissions carry
    the refresh's own number, one above the registration's."""
    m = node(registration_attempts=0)
    m.start(0.0, COA)
    registered = m.sequence
    m.receive(ba(m, lifetime=100), 0.5)
    t = m._refresh_at
    refresh = only(sends(m.tick(t))).message
    first_retransmission = m.next_deadline()
    again = only(sends(m.tick(first_retransmission))).message
    second = m.next_deadline()
    assert refresh.sequence == (registered + 1) % 65536 and again == refresh
    assert (first_retransmission - t, second - first_retransmission) == (1.0, 2.0)


def test_retransmission_with_new_sequence_numbers_when_configured():
    """``retransmit_same_sequence = False``: each retransmission carries a new sequence number,
    as deployed nodes do (docs/protocol.md 9), on the same back-off."""
    m = node(registration_attempts=0, retransmit_same_sequence=False)
    times, bus = _retransmissions(m, 9)
    assert [b - a for a, b in zip(times, times[1:])] == [1.5, 3, 6, 12, 24, 32, 32, 32]
    seqs = [bu.sequence for bu in bus]
    assert all((b - a) % 65536 == 1 for a, b in zip(seqs, seqs[1:]))


def test_a_move_during_retransmission_starts_a_new_number():
    """The retransmitted message is the attempt's own: after a move the next BU names the new
    care-of address under a new number, and a BA for the old number is stale."""
    m = node()
    m.start(0.0, COA)
    first = m.sequence
    m.tick(1.5)
    assert m.sequence == first
    out = m.move(COA2, 2.0)
    bu = only(sends(out)).message
    assert bu.sequence == (first + 1) % 65536 and bu.options == (AlternateCareOfAddress(COA2),)
    m.receive(ba(m, seq=first), 2.1)
    assert m.state == "registering" and m.counters["dropped:ba-stale"] == 1


def test_a_135_for_the_resent_number_goes_on_with_the_next():
    """A strict RFC 6275 9.5.1 home agent answers a retransmission of an accepted number with
    135 carrying that number: the node sends the next one and completes with its BA."""
    m = node()
    m.start(0.0, COA)
    n = m.sequence
    m.tick(1.5)
    out = m.receive(ba(m, status=135, seq=n), 1.6)
    assert only(sends(out)).message.sequence == (n + 1) % 65536
    m.receive(ba(m), 1.7)
    assert m.state == "registered"


def test_settings_refuse_a_retransmission_mode_that_is_not_a_flag():
    """``retransmit_same_sequence`` is true or false; anything else names the field."""
    with pytest.raises(ValueError, match="retransmit_same_sequence"):
        MobileNodeSettings(home_address=HOA, home_prefix=PREFIX, retransmit_same_sequence="yes")


def test_accepted_ba_brings_the_tunnel_up_and_schedules_the_refresh():
    """An accepted BA (right source, routing header, sequence) makes the node registered with
    a tunnel; it refreshes at 95% of the granted lifetime, or earlier on Binding Refresh
    Advice, with INITIAL_BINDACK_TIMEOUT."""
    m = node()
    m.start(0.0, COA)
    out = m.receive(ba(m, lifetime=100), 1.0)
    assert TunnelUp(HOA, COA, HA1, ()) in out
    assert m.state == "registered" and m.expires == 401.0 and m._refresh_at == 381.0
    out = m.tick(381.0)
    assert m.state == "refreshing" and only(sends(out)).dst == HA1
    assert m.next_deadline() == 382.0
    m2 = node()
    m2.start(0.0, COA)
    m2.receive(ba(m2, lifetime=100, options=(BindingRefreshAdvice(10),)), 1.0)
    assert m2._refresh_at == 41.0


def test_bas_that_do_not_match_are_ignored():
    """A BA from another address, without the routing header, or for an older BU, is
    dropped (docs/protocol.md 9)."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m, src=HA2), 0.1)
    good = ba(m)
    m.receive(Inbound(good.message, HA1, COA, None, None, HA1), 0.1)
    m.receive(ba(m, seq=(m.sequence - 1) % 65536), 0.1)
    assert m.state == "registering"
    assert m.counters["dropped:ba-wrong-source"] == 1
    assert m.counters["dropped:ba-without-routing-header"] == 1
    assert m.counters["dropped:ba-stale"] == 1


def test_status_135_resends_above_the_number_the_ha_holds():
    """135 carries the last accepted number: the node resends with that number + 1."""
    m = node()
    m.start(0.0, COA)
    out = m.receive(ba(m, status=135, seq=40000), 0.2)
    assert only(sends(out)).message.sequence == 40001 and m.state == "registering"


@pytest.mark.parametrize("status", [129, 131, 132, 133, 140, 142, 143])
def test_rejection_tries_the_next_home_agent_then_discovers(status):
    """Status >= 128 (other than 135) gives up on that home agent: the next configured one is
    tried, then DHAAD."""
    m = node()
    m.start(0.0, COA)
    out = m.receive(ba(m, status=status), 0.2)
    assert only(sends(out)).dst == HA2 and m.state == "registering"
    out = m.receive(ba(m, status=status), 0.3)
    req = only(sends(out))
    assert type(req.message) is DhaadRequest and req.dst == ANYCAST and m.state == "discovering"


def test_mobile_router_needs_r_in_the_ba():
    """A mobile router sends R and its prefixes (explicit mode); a BA without R means the home
    agent does not serve routers: try the next one."""
    m = node(mobile_router=True, prefixes=[N("2001:db8:100::/48")])
    bu = only(sends(m.start(0.0, COA))).message
    assert bu.flags & BU_R and MobileNetworkPrefix(N("2001:db8:100::/48")) in bu.options
    m.receive(ba(m), 0.1)
    assert m.state == "registering" and m.target == HA2
    out = m.receive(ba(m, flags=BA_R), 0.2)
    assert TunnelUp(HOA, COA, HA2, (N("2001:db8:100::/48"),)) in out


def test_lifetime_zero_in_an_accepted_ba_is_a_failure():
    """A registration granted 0 seconds is no registration."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=0), 0.1)
    assert m.target == HA2 and m.state == "registering"


def test_registration_attempts_limit_moves_on():
    """With a limit, a home agent that never answers is given up after N BUs."""
    m = node(registration_attempts=2)
    m.start(0.0, COA)
    m.tick(1.5)
    out = m.tick(4.5)
    assert only(sends(out)).dst == HA2
    assert [e for e in out if type(e) is Event and e.name == "registration-timeout"]


def test_binding_lost_when_the_refresh_goes_unanswered():
    """If the lifetime runs out while refreshing, the tunnel goes down and the node registers
    again from scratch."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=10), 0.0)
    out = []
    while m.state != "registering":
        out = m.tick(m.next_deadline())
    assert TunnelDown(HOA) in out and m.home_agent is None and m.target == HA1


def test_move_while_registered_refreshes_with_the_new_care_of():
    """A new care-of address is registered with the same home agent (1 s first timeout)."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.move(COA2, 5.0)
    e = only(sends(out))
    assert (e.src, e.message.options[0]) == (COA2, AlternateCareOfAddress(COA2))
    assert m.next_deadline() == 6.0
    out = m.receive(ba(m), 5.5)
    assert TunnelUp(HOA, COA2, HA1, ()) in out


# -- switching (draft 5.3 / 6.1, RFC 5142) ----------------------------------------------------------


def test_hasr_naming_a_known_home_agent_switches_at_once():
    """A HASR naming a global address in the Home Agent list: BU to it right away; the old
    tunnel stays until the new home agent accepts."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.receive(hasr(HA2), 1.0)
    e = only(sends(out))
    assert e.dst == HA2 and m.state == "switching" and m.tunnel.home_agent == HA1
    assert m.next_deadline() == 2.5
    out = m.receive(ba(m), 1.2)
    assert TunnelUp(HOA, COA, HA2, ()) in out and m.home_agent == HA2


def test_hasr_naming_an_unknown_home_agent_or_none_starts_dhaad():
    """Unknown or absent desired home agent: DHAAD, then the best of the reply other than the
    home agent that asked (RFC 6275 11.4.1 retries with back-off)."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.receive(hasr(A("2001:db8:1::9")), 1.0)
    assert type(only(sends(out)).message) is DhaadRequest and m.state == "discovering"
    out = m.receive(dhaad_reply(m, (HA1, HA3, HA2)), 1.1)
    assert only(sends(out)).dst == HA3 and m.state == "switching"
    m2 = node()
    m2.start(0.0, COA)
    m2.receive(ba(m2), 0.0)
    m2.receive(hasr(None), 1.0)
    assert m2.state == "discovering"


def test_rfc5142_home_agent_switch_is_understood():
    """RFC 5142's Home Agent Switch: the listed address if known, else DHAAD."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.receive(Inbound(HomeAgentSwitch((HA2,)), HA1, COA, None, HOA, HA1), 1.0)
    assert only(sends(out)).dst == HA2
    m.receive(ba(m), 1.1)
    out = m.receive(Inbound(HomeAgentSwitch(()), HA2, COA, None, HOA, HA2), 2.0)
    assert type(only(sends(out)).message) is DhaadRequest


def test_switch_requests_are_checked():
    """A switch for another home address, or unprotected from an unknown source, is dropped;
    one naming the current home agent is a no-op."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    m.receive(Inbound(HaSwitchRequest(), HA1, COA, None, A("2001:db8:1::11"), HA1), 1.0)
    m.receive(Inbound(HaSwitchRequest(), A("2001:db8:5::1"), COA, None, HOA, None), 1.0)
    assert m.receive(hasr(HA1), 1.0) == []
    assert m.state == "registered"
    assert m.counters["dropped:switch-wrong-home-address"] == 1
    assert m.counters["dropped:switch-unauthenticated"] == 1
    assert m.counters["switch-already-there"] == 1


def test_a_repeated_switch_request_while_switching_to_that_home_agent_sends_nothing():
    """A switch request repeated while the node's Binding Update to the named home agent is
    still unanswered (queued at a survivor taking many nodes over) adds no Binding Update:
    the node's own retransmission covers a loss; its sequence number stays."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    assert only(sends(m.receive(hasr(HA2), 1.0))).dst == HA2
    sequence = m.sequence
    assert m.receive(hasr(HA2), 2.0) == []
    assert m.state == "switching" and m.sequence == sequence
    assert m.counters["switch-already-underway"] == 1
    out = m.receive(hasr(HA3), 2.1)  # another home agent named: a new request (HA3 is not
    assert type(only(sends(out)).message) is DhaadRequest  # in its list: discovery)


def test_dhaad_retries_then_reports_failure_and_keeps_trying():
    """DHAAD: 3 s doubling; after DHAAD_RETRIES a failure is reported and requests go on at the
    capped interval; unmatched replies are ignored."""
    m = node(home_agents=())
    out = m.start(0.0, COA)
    req = only(sends(out)).message
    assert (only(sends(out)).src, only(sends(out)).dst) == (COA, ANYCAST)
    times = [0.0]
    failed = []
    while len(times) < 7:
        t = m.next_deadline()
        out = m.tick(t)
        times.append(t)
        failed += [e for e in out if type(e) is Event and e.name == "discovery-failed"]
    assert [b - a for a, b in zip(times, times[1:])] == [3, 6, 12, 24, 24, 24]
    assert len(failed) == 1
    m.receive(Inbound(DhaadReply(req.identifier ^ 1, (HA1,)), HA1, COA), 100.0)
    assert m.counters["dropped:dhaad-unmatched"] == 1 and m.state == "discovering"
    m.receive(dhaad_reply(m, ()), 100.0)
    assert m.counters["dhaad-empty"] == 1
    out = m.receive(dhaad_reply(m, (HA3, HA1)), 100.0)
    assert only(sends(out)).dst == HA3 and m.known_home_agents[:2] == [HA3, HA1]


# -- home ------------------------------------------------------------------------------------------


def test_return_home_deregisters_in_the_deployed_form():
    """Back home: BU from the home address, no Home Address option, lifetime 0, Alternate
    Care-of = home address (docs/protocol.md 9); the BA (to the home address) ends it."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.return_home(5.0)
    assert TunnelDown(HOA) in out
    e = only(sends(out))
    assert (e.src, e.dst, e.home_address) == (HOA, HA1, None)
    assert e.message == BindingUpdate(m.sequence, 0x8000 | BU_H, 0,
                                      (AlternateCareOfAddress(HOA),))
    out = m.receive(Inbound(BindingAck(0, m.sequence), HA1, HOA, None, None, HA1), 5.1)
    assert m.state == "home" and m.next_deadline() is None


def test_deregistration_tries_every_known_home_agent_then_gives_up():
    """Unanswered deregistration: retried up to MAX_BINDACK_TIMEOUT, then with the other known
    home agents (any of them holds the binding), then home anyway."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=0xFFFF), 0.0)
    m.return_home(1.0)
    targets = []
    while m.state == "deregistering":
        targets.append(m.target)
        m.tick(m.next_deadline())
    assert m.state == "home" and m.counters["dereg-sent"] == 12
    assert targets[:6] == [HA1] * 6 and targets[6:] == [HA2] * 6


def test_default_gives_up_on_a_silent_home_agent():
    """By default a home agent that never answers is left after 6 BUs (back-off at its cap)."""
    m = node()
    m.start(0.0, COA)
    while m.target == HA1:
        m.tick(m.next_deadline())
    assert m.counters["bu-sent"] == 7 and m.target == HA2


def test_home_at_start_and_moving_away():
    """Started at home nothing is sent; moving away registers."""
    m = node()
    assert m.start(0.0) == [Event("state", old="idle", new="home", input="start-home")]
    assert only(sends(m.move(COA, 1.0))).dst == HA1


def test_unexpected_messages_are_counted():
    """Messages a mobile node never processes are dropped with an event."""
    m = node()
    out = m.receive(Inbound(BindingUpdate(1), HA1, COA), 0.0)
    assert out[0].name == "dropped" and m.counters["dropped:unexpected"] == 1


def test_dhaad_reply_is_bounded():
    """A reply longer than the minimum MTU allows (77 addresses, RFC 6275 10.5.1) is cut there,
    and the Home Agent list keeps the configured agents plus at most 77 learnt ones however
    many replies arrive (forged replies cannot grow it without bound)."""
    m = node(home_agents=(HA2,))
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    many = tuple(A(f"2001:db8:9::{i:x}") for i in range(1, 201))
    for k in range(3):
        m.receive(hasr(None), 10.0 * k + 1)
        out = m.receive(dhaad_reply(m, many[k * 50:]), 10.0 * k + 1.1)
        assert only(sends(out)).dst == many[k * 50]
        m.receive(ba(m), 10.0 * k + 1.2)
    assert m.known_home_agents[0] == HA2
    assert len(m.known_home_agents) == 1 + 77
    assert set(m.known_home_agents[1:]) <= set(many[:177])


def test_a_ba_for_an_earlier_copy_of_the_registration_in_flight_completes_it():
    """Queueing delay longer than the retransmission interval: the node has sent three BUs
    (three numbers) when the answer to the first arrives. It completes the registration; waiting
    for the newest number would livelock, as every answer arrives one retransmission late."""
    m = node(retransmit_same_sequence=False)  # three numbers in flight, as deployed nodes
    m.start(0.0, COA)
    first = m.sequence
    m.tick(1.5)
    m.tick(4.5)
    assert m._attempts == 3 and m.sequence == (first + 2) % 65536
    out = m.receive(ba(m, seq=first), 5.0)
    assert m.state == "registered" and m.home_agent == HA1
    assert TunnelUp(HOA, COA, HA1, ()) in out
    assert m.counters["dropped:ba-stale"] == 0
    # The next refresh still carries a number above every one sent.
    out = m.tick(m._refresh_at)
    assert only(sends(out)).message.sequence == (first + 3) % 65536


def test_a_ba_for_a_binding_update_with_an_older_care_of_address_is_stale():
    """The numbers sent before a move carried the old care-of address: a BA for one of them
    does not complete the registration of the new one."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.1)
    m.move(COA2, 10.0)
    before = m.sequence
    m.move(A("2001:db8:99::3"), 10.5)
    m.receive(ba(m, seq=before), 11.0)
    assert m.state == "refreshing" and m.counters["dropped:ba-stale"] == 1
    m.receive(ba(m), 11.1)
    assert m.state == "registered" and m.care_of == A("2001:db8:99::3")


def test_a_deregistration_is_completed_by_the_answer_to_an_earlier_copy():
    """The same rule for the deregistration from the home link."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.1)
    m.return_home(5.0)
    first = m.sequence
    m.tick(6.0)
    assert m.sequence != first
    msg = BindingAck(0, first, 0, 0, ())
    m.receive(Inbound(msg, HA1, HOA, None, None, HA1), 6.5)
    assert m.state == "home"


def test_node_that_does_not_obey_switch_answers_binding_error_2_and_stays():
    """obeys_switch=False (like deployed stacks): HASR and RFC 5142's switch are answered with
    a Binding Error, status 2, from the care-of address to the sender; the node keeps its home
    agent and its tunnel."""
    from haha.wire.mh import BE_UNKNOWN_MH_TYPE, BindingError
    m = node(obeys_switch=False)
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    for i, inb in enumerate((hasr(HA2),
                             Inbound(HomeAgentSwitch((HA2,)), HA1, COA, None, HOA, HA1))):
        out = m.receive(inb, 1.0 + i)
        e = only(sends(out))
        assert e.message == BindingError(BE_UNKNOWN_MH_TYPE, HOA)
        assert (e.src, e.dst, e.protect) == (COA, HA1, None)
        assert m.state == "registered" and m.home_agent == HA1
    assert m.counters["switch-refused"] == 2 and m.counters["switch-received"] == 0


def test_back_home_the_core_asks_for_the_home_address_announcement():
    """Coming home is I/O the core asks for (RFC 6275 11.5.4): AnnounceHome once the
    deregistration is acknowledged (after the tunnel is down), AnnounceHome(deregistered=False)
    when the node comes home with nothing to deregister, and none while a stopping node
    deregisters."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.return_home(5.0)
    assert not [e for e in out if type(e) is AnnounceHome]
    out = m.receive(Inbound(BindingAck(0, m.sequence), HA1, HOA, None, None, HA1), 5.1)
    assert [e for e in out if type(e) is AnnounceHome] == [AnnounceHome(HOA, True)]
    # given up on every home agent: home anyway, announced as well
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=0xFFFF), 0.0)
    m.return_home(1.0)
    out = []
    while m.state == "deregistering":
        out += m.tick(m.next_deadline())
    assert [e for e in out if type(e) is AnnounceHome] == [AnnounceHome(HOA, True)]
    # no home agent yet (still discovering one): home at once, nothing to deregister
    m = node(home_agents=())
    m.start(0.0, COA)
    assert m.state == "discovering"
    out = m.return_home(0.5)
    assert m.state == "home" and [e for e in out if type(e) is AnnounceHome] == [
        AnnounceHome(HOA, False)]
    # a stopping node deregisters from its care-of address: it is not home
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.leave(1.0)
    out += m.receive(ba(m, seq=m.sequence, lifetime=0), 1.1)
    assert m.state == "home" and not [e for e in out if type(e) is AnnounceHome]


def test_a_stopping_node_is_told_its_deregistration_is_over():
    """The end of a stopping node's wait is an effect the core returns, once per leave:
    LeaveComplete(True) on the Binding Acknowledgement, LeaveComplete(False) when every home
    agent stayed silent, or when the node moves or is stopped in the middle; nothing when
    nothing was registered (leave stops at once) and never for a node coming home."""
    def leaves(out):
        return [e for e in out if type(e) is LeaveComplete]

    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    out = m.leave(1.0)
    assert not leaves(out) and m.state == "deregistering"
    out = m.receive(ba(m, seq=m.sequence, lifetime=0), 1.1)
    assert leaves(out) == [LeaveComplete(True)]
    # unanswered everywhere: given up
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=0xFFFF), 0.0)
    out = m.leave(1.0)
    while m.state == "deregistering":
        out += m.tick(m.next_deadline())
    assert leaves(out) == [LeaveComplete(False)]
    # cut short by a move, and by a stop
    for cut in (lambda m: m.move(COA2, 1.5), lambda m: m.stop(1.5)):
        m = node()
        m.start(0.0, COA)
        m.receive(ba(m), 0.0)
        m.leave(1.0)
        assert leaves(cut(m)) == [LeaveComplete(False)]
    # nothing registered: leave is a stop, no wait to end
    m = node()
    m.start(0.0, COA)
    assert not leaves(m.leave(0.5)) and m.state == "idle"
    # coming home (not stopping) never ends a leave
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m), 0.0)
    m.return_home(5.0)
    out = m.receive(Inbound(BindingAck(0, m.sequence), HA1, HOA, None, None, HA1), 5.1)
    assert not leaves(out)


def test_retransmission_jitter_stays_within_its_bounds_and_keeps_the_back_off():
    """With ``retransmit_jitter`` each wait before a retransmission lies in [T, T * (1 +
    jitter)], T the RFC 6275 11.8 back-off (1.5 s doubling to 32 s), which doubles T, not the
    drawn value; the message is still the same. Nodes that start at the same instant do not
    retransmit at the same instant, and without jitter they do (the default)."""
    expected = [1.5, 3, 6, 12, 24, 32, 32, 32]
    m = node(registration_attempts=0, retransmit_jitter=0.25)
    times, bus = _retransmissions(m, 9)
    waits = [b - a for a, b in zip(times, times[1:])]
    assert all(t <= w <= t * 1.25 for w, t in zip(waits, expected)), waits
    assert waits != expected and len(set(bus)) == 1
    firsts = []
    for seed in range(20):
        n = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix=PREFIX,
                                          home_agents=(HA1,), retransmit_jitter=0.25),
                       random.Random(seed))
        n.start(0.0, COA)
        firsts.append(n.next_deadline())
    assert all(1.5 <= t <= 1.875 for t in firsts) and len(set(firsts)) == 20
    plain = []
    for seed in range(3):
        n = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix=PREFIX,
                                          home_agents=(HA1,)), random.Random(seed))
        n.start(0.0, COA)
        plain.append(n.next_deadline())
    assert plain == [1.5] * 3


def test_a_deregistration_is_retransmitted_with_jitter_too():
    """A deregistration (a Binding Update too) waits [1 s, 1.25 s] before its first
    retransmission with ``retransmit_jitter = 0.25``."""
    m = node(retransmit_jitter=0.25)
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=100), 0.5)
    m.return_home(10.0)
    assert m.state == "deregistering" and 11.0 <= m.next_deadline() <= 11.25


def test_refresh_jitter_refreshes_sooner_never_later():
    """With ``refresh_jitter`` the refresh is due between R * (1 - jitter) and R (R: 95 % of
    the granted lifetime, or the Binding Refresh Advice), never after R, so the binding never
    expires for it; the expiry itself is unchanged."""
    times = set()
    for seed in range(30):
        m = MobileNode(MobileNodeSettings(home_address=HOA, home_prefix=PREFIX,
                                          home_agents=(HA1,), refresh_jitter=0.2),
                       random.Random(seed))
        m.start(0.0, COA)
        m.receive(ba(m, lifetime=100), 1.0)
        assert m.expires == 401.0
        assert 1.0 + 380 * 0.8 <= m._refresh_at <= 381.0
        times.add(m._refresh_at)
    assert len(times) == 30
    m = node(refresh_jitter=0.5)
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=100, options=(BindingRefreshAdvice(10),)), 1.0)
    assert 21.0 <= m._refresh_at <= 41.0


@pytest.mark.parametrize("field, value", [("retransmit_jitter", -0.1),
                                          ("retransmit_jitter", 1.5),
                                          ("refresh_jitter", 0.6), ("refresh_jitter", "x")])
def test_settings_refuse_jitter_out_of_range(field, value):
    """Jitter is a number, 0 to 1 for retransmissions and 0 to 0.5 for the refresh; anything
    else names the field."""
    with pytest.raises(ValueError, match=field):
        MobileNodeSettings(home_address=HOA, home_prefix=PREFIX, **{field: value})


def test_timers_due_together_fire_expiry_then_refresh_then_retransmission():
    """tick() fires every timer due, the earliest first, and between timers due at the same
    instant the expiry first, then the refresh, then the retransmission; next_deadline() is
    the earliest set."""
    m = node()
    m.start(0.0, COA)
    m.receive(ba(m, lifetime=100), 1.0)
    assert m.next_deadline() == 381.0
    m._retransmit_at, m._refresh_at, m.expires = 5.0, 5.0, 5.0
    assert m.next_deadline() == 5.0
    assert m._due(5.0) == "expire" and m._due(5.0) == "refresh"
    assert m._due(5.0) == "retransmit" and m._due(5.0) is None
    m._retransmit_at, m._refresh_at, m.expires = 3.0, 4.0, None
    assert m.next_deadline() == 3.0 and m._due(2.9) is None
    assert m._due(10.0) == "retransmit" and m._due(10.0) == "refresh"
    m._retransmit_at = m._refresh_at = m.expires = None
    assert m.next_deadline() is None


def test_a_retransmission_reuses_the_binding_update_record_and_a_new_attempt_does_not():
    """A retransmission hands out the very record first sent (nothing of it changes, so
    nothing is built again); a move starts a new attempt with a new record for the new
    care-of address, which its own retransmissions reuse in turn."""
    m = node(registration_attempts=0)
    first = only(sends(m.start(0.0, COA)))
    again = only(sends(m.tick(m.next_deadline())))
    assert again is first
    moved = only(sends(m.move(COA2, 2.0)))
    assert moved is not first and moved.message.options == (AlternateCareOfAddress(COA2),)
    assert only(sends(m.tick(m.next_deadline()))) is moved
    m2 = node(registration_attempts=0, retransmit_same_sequence=False)
    a = only(sends(m2.start(0.0, COA)))
    b = only(sends(m2.tick(m2.next_deadline())))
    assert b is not a and b.message.sequence == (a.message.sequence + 1) % 65536
