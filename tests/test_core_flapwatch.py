"""A home address registered from two care-of addresses in turn raises a rate-limited alarm.

Driven through the home agent machine: Binding Updates for one home address alternate between
two care-of addresses (two nodes sharing a home address and key); a node that simply moves,
or moves back once, raises nothing.
"""

import random
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

from haha.core import flapwatch
from haha.core.effects import Event, Inbound
from haha.core.flapwatch import FlapWatch
from haha.core.homeagent import HomeAgent
from haha.core.settings import HomeAgentSettings
from haha.wire.mh import BU_A, BU_H, BindingUpdate
from haha.wire.options import AlternateCareOfAddress

ME = A("2001:db8:1::1")
HOA = A("2001:db8:1::10")
COA1, COA2, COA3 = A("2001:db8:99::1"), A("2001:db8:98::1"), A("2001:db8:97::1")


def _ha():
    s = HomeAgentSettings(address=ME, home_prefix=N("2001:db8:1::/64"), boot_wait=0)
    ha = HomeAgent(s, random.Random(1))
    ha.start(0.0)
    return ha


def _bu(ha, seq, coa, now, hoa=HOA):
    bu = BindingUpdate(seq, BU_A | BU_H, 100, (AlternateCareOfAddress(coa),))
    return ha.receive(Inbound(bu, coa, ME, hoa, None, hoa), now)


def _alarms(out):
    return [e for e in out if type(e) is Event and e.name == "address-conflict"]


def test_two_care_ofs_in_turn_raise_one_alarm_then_hold_back():
    """Refreshes alternating between two care-of addresses every 30 s: the third flip raises
    one alarm naming both; later flips within the alarm interval are only counted."""
    ha = _ha()
    alarms = []
    for i in range(10):
        alarms += _alarms(_bu(ha, i + 1, COA1 if i % 2 == 0 else COA2, 30.0 * i))
    assert len(alarms) == 1
    a = alarms[0].fields
    assert a["home_address"] == HOA and {a["care_of"], a["other_care_of"]} == {COA1, COA2}
    assert ha.counters["care-of-flips"] == 8
    assert ha.counters["address-conflict-suppressed"] == 8 - flapwatch.FLIPS
    # after the alarm interval, a new alarm
    later = flapwatch.ALARM_INTERVAL + 30.0 * 10
    out = _bu(ha, 11, COA2, later) + _bu(ha, 12, COA1, later + 30)
    assert len(_alarms(out)) == 1


def test_moving_and_coming_back_is_no_conflict():
    """A node that moves on (A, B, C) or goes back once (A, B, A) or flips slower than the
    window raises nothing."""
    ha = _ha()
    out = []
    for i, coa in enumerate((COA1, COA2, COA3, COA1, COA2, COA3)):
        out += _bu(ha, i + 1, coa, 10.0 * i)
    assert _alarms(out) == [] and ha.counters["care-of-flips"] == 0
    slow = flapwatch.WINDOW + 1
    for i in range(8):
        out += _bu(ha, 20 + i, COA1 if i % 2 else COA2, 100 + slow * i)
    assert _alarms(out) == []


def test_alarms_for_many_home_addresses_are_capped_and_memory_bounded():
    """Many flipping home addresses at once: at most ALARM_BURST alarms, the rest counted; at
    most TRACKED home addresses remembered."""
    from collections import Counter
    counters = Counter()
    w = FlapWatch(counters)
    out = []
    for k in range(50):
        hoa = A(int(HOA) + k)
        coas = [COA1, COA2]
        for i in range(flapwatch.FLIPS + 1):  # the first move starts tracking: FLIPS flips
            w.moved(hoa, coas[i % 2], coas[(i + 1) % 2], 1.0, out)
    assert len(_alarms(out)) == flapwatch.ALARM_BURST
    assert counters["address-conflict-suppressed"] == 50 - flapwatch.ALARM_BURST
    for k in range(flapwatch.TRACKED + 100):
        w.moved(A(int(HOA) + 1000 + k), COA1, COA2, 2.0, out)
    assert len(w) == flapwatch.TRACKED


def test_claims_at_two_home_agents_are_seen_through_the_copies():
    """One node registers here from COA1, the other at peer P2 from COA2 (its BIUs update our
    copy): the alternation between our registrations and P2's copies raises the alarm too."""
    from haha.wire.mh import BindingInfoUpdate, HaHello
    from haha.wire.options import BceInfo
    p2 = A("2001:db8:1::2")
    s = HomeAgentSettings(address=ME, home_prefix=N("2001:db8:1::/64"), boot_wait=0,
                          peers=(p2,))
    ha = HomeAgent(s, random.Random(1))
    ha.start(0.0)
    ha.receive(Inbound(HaHello(1, 0, 3600, 10, 64, p2), p2, ME, None, None, p2), 0.0)
    out = []
    seq = 1
    for i in range(5):
        out += _bu(ha, seq, COA1, 60.0 * i)
        seq += 1
        biu = BindingInfoUpdate(i + 1, (BceInfo(HOA, COA2, BU_H | BU_A, seq, 25, ()),))
        out += ha.receive(Inbound(biu, p2, ME, None, None, p2), 60.0 * i + 30)
        seq += 1
    assert len(_alarms(out)) == 1
    assert ha.counters["care-of-flips"] >= flapwatch.FLIPS
