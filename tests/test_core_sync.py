"""BIU reliability towards peers: identifiers, back-off, coalescing, window, bulk answers with
their end marker, BIR retransmission (docs/protocol.md 6.1, 6.3, 6.5)."""

import random
from collections import Counter
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

from haha.core.cache import Binding
from haha.core.settings import HomeAgentSettings
from haha.core.sync import Sync
from haha.wire.mh import BindingInfoAck, BindingInfoRequest, BindingInfoUpdate
from haha.wire.options import BceInfo, IpAddress, MobileNetworkPrefix

P2 = A("2001:db8:1::2")
P3 = A("2001:db8:1::3")


def make(window=64, mtu=1280):
    s = HomeAgentSettings(address="2001:db8:1::1", home_prefix="2001:db8:1::/64",
                          peers=[P2, P3], biu_window=window, sync_mtu=mtu)
    sync = Sync(s, random.Random(7), Counter())
    return sync


def binding(i, seq=1, expires=400.0, prefixes=()):
    return Binding(A(0x20010DB8000100000000000000001000 + i), A("2001:db8:99::1"), 0xC000,
                   seq, 400, expires, prefixes)


def bius(out, dst=None):
    return [e for e in out if type(e.message) is BindingInfoUpdate
            and (dst is None or e.dst == dst)]


def test_publish_reaches_every_live_peer_with_one_message():
    """One change goes to every live peer, protected by each peer's SA, as one message."""
    sync = make()
    sync.add_peer(P2)
    sync.add_peer(P3)
    out = []
    sync.publish(binding(1), 0.0, out)
    sent = bius(out)
    assert [e.dst for e in sent] == [P2, P3] and [e.protect for e in sent] == [P2, P3]
    assert sent[0].message is sent[1].message
    (bce,) = sent[0].message.entries
    assert (bce.sequence, bce.lifetime) == (1, 100)
    assert sent[0].message.identifier != 0


def test_retransmission_backs_off_to_the_cap_and_stops_on_bia():
    """Unacknowledged BIUs go again after 1, 2, 4... up to 32 s, with the same identifier and
    the remaining lifetime; the BIA stops them."""
    sync = make()
    sync.add_peer(P2)
    out = []
    sync.publish(binding(1, expires=400.0), 0.0, out)
    ident = bius(out)[0].message.identifier
    times = []
    now = 0.0
    while len(times) < 8:
        now = sync.next_deadline()
        out = []
        sync.tick(now, out)
        (e,) = bius(out)
        assert e.message.identifier == ident
        times.append(now)
    assert [b - a for a, b in zip(times, times[1:])] == [2, 4, 8, 16, 32, 32, 32]
    assert bius(out)[0].message.entries[0].lifetime == -(-(400 - now) // 4)
    assert sync.acknowledge(P2, BindingInfoAck(ident), now, []).identifier == ident
    assert sync.next_deadline() is None and not sync.busy()
    assert sync.acknowledge(P2, BindingInfoAck(ident), now, []) is None


def test_newer_change_supersedes_the_binding_in_flight():
    """A binding is carried by one outstanding BIU per peer: a newer change takes it out of
    the older one (dropped when empty), so no retransmission carries stale state."""
    sync = make()
    sync.add_peer(P2)
    out = []
    sync.publish(binding(1, seq=1), 0.0, out)
    first = bius(out)[0].message.identifier
    out = []
    sync.publish(binding(1, seq=2), 0.5, out)
    second = bius(out)[0].message.identifier
    assert first not in sync.peers[P2].outstanding and second in sync.peers[P2].outstanding
    out = []
    sync.tick(1.6, out)
    (e,) = bius(out)
    assert e.message.identifier == second and e.message.entries[0].sequence == 2


def test_window_coalesces_and_packs_pending_changes():
    """Beyond the window, changes wait (newest state only) and leave packed up to the MTU
    when acknowledgements free the window."""
    sync = make(window=1)
    sync.add_peer(P2)
    out = []
    for i in range(60):
        sync.publish(binding(i), 0.0, out)
    sync.publish(binding(5, seq=9), 0.0, out)
    (first,) = bius(out)
    assert len(sync.peers[P2].pending) == 59
    out = []
    sync.acknowledge(P2, BindingInfoAck(first.message.identifier), 0.1, out)
    (packed,) = bius(out)
    entries = packed.message.entries
    assert len(entries) == (1280 - 85) // 48
    assert [b.sequence for b in entries if b.home_address == binding(5).home_address] == [9]


def test_a_burst_leaves_packed_at_the_timer_due_at_once():
    """During a burst (``coalesce_after`` BIUs outstanding to a peer) further changes are
    not sent one BIU each: they wait for the timer, due at the same instant (a driver runs it
    after the packets of that instant), and leave packed up to the MTU, every peer getting
    every change once. With ``coalesce_after = 0`` each change leaves at once, as before."""
    sync = make()
    sync.add_peer(P2)
    sync.add_peer(P3)
    out = []
    for i in range(200):
        sync.publish(binding(i), 5.0, out)
    assert len(bius(out, P2)) == 4 and len(bius(out, P3)) == 4
    assert sync.next_deadline() == 5.0
    sync.tick(5.0, out)
    per_biu = (1280 - 85) // 48
    for peer in (P2, P3):
        sent = bius(out, peer)
        assert len(sent) == 4 + -(-196 // per_biu)
        carried = [e.home_address for m in sent for e in m.message.entries]
        assert sorted(carried) == sorted(binding(i).home_address for i in range(200))
    assert sync.next_deadline() == 5.0 + 1.0  # the first retransmission, nothing else due
    eager = make()
    eager.coalesce_after = 0
    eager.add_peer(P2)
    out = []
    for i in range(200):
        eager.publish(binding(i), 5.0, out)
    assert len(bius(out, P2)) == 64  # the window, then packed as acknowledgements free it


def test_entries_with_prefixes_take_more_room():
    """A mobile router's entry counts its Mobile Network Prefix options against the MTU."""
    sync = make(window=1)
    sync.add_peer(P2)
    out = []
    prefixes = tuple(N(f"2001:db8:{0x100 + k:x}::/48") for k in range(4))
    for i in range(30):
        sync.publish(binding(i, prefixes=prefixes), 0.0, out)
    out2 = []
    sync.acknowledge(P2, BindingInfoAck(bius(out)[0].message.identifier), 0.1, out2)
    assert len(bius(out2)[0].message.entries) == (1280 - 85) // (48 + 4 * 24)


def test_bulk_answer_ends_with_a_marker_after_everything_is_acknowledged():
    """A bulk answer queues every binding; the end marker (no entries, the request's
    identifier) leaves only once all of them are acknowledged, and is itself reliable."""
    sync = make(window=2)
    sync.add_peer(P2)
    out = []
    assert sync.answer_bulk(P2, 4242, [binding(i) for i in range(100)], 0.0, out)
    assert not sync.answer_bulk(P2, 4242, [], 0.0, [])  # a retransmitted BIR is ignored
    seen = 0
    marker = None
    pending = bius(out)
    while pending:
        e = pending.pop(0)
        if not e.message.entries:
            marker = e
            break
        seen += len(e.message.entries)
        out = []
        sync.acknowledge(P2, BindingInfoAck(e.message.identifier), 0.1, out)
        pending += bius(out)
    assert seen == 100 and marker.message.identifier == 4242
    out = []
    sync.tick(1.2, out)
    assert [e.message.identifier for e in bius(out)] == [4242]
    sync.acknowledge(P2, BindingInfoAck(4242), 1.3, [])
    assert not sync.busy()


def test_empty_bulk_answer_is_just_the_marker():
    """A home agent without primaries answers a bulk request with the end marker alone."""
    sync = make()
    sync.add_peer(P2)
    out = []
    sync.answer_bulk(P2, 77, [], 0.0, out)
    (e,) = bius(out)
    assert (e.message.identifier, e.message.entries) == (77, ())


def test_single_answer_copies_the_request_identifier():
    """A single BIR is answered with a BIU carrying its identifier (draft 5.2)."""
    sync = make()
    sync.add_peer(P2)
    out = []
    sync.answer_single(P2, 99, binding(3), 0.0, out)
    (e,) = bius(out)
    assert e.message.identifier == 99 and len(e.message.entries) == 1
    assert not sync.answer_single(P3, 99, binding(3), 0.0, [])  # not a live peer


def test_requests_are_retransmitted_and_closed_by_their_answer():
    """A bulk BIR (home address ::) goes again until its end marker arrives; a single one gives
    up after three retransmissions."""
    sync = make()
    sync.add_peer(P2)
    out = []
    r = sync.request(P2, None, 0.0, out)
    (bir,) = [e.message for e in out]
    assert type(bir) is BindingInfoRequest and bir.home_address == A("::")
    assert sync.request(P2, None, 0.0, []) is r  # one bulk request at a time
    out = []
    sync.tick(1.0, out)
    assert [e.message.identifier for e in out] == [r.identifier]
    chunk = BceInfo(binding(1).home_address, A("2001:db8:99::1"), 0xC000, 1, 100)
    assert sync.answered(P2, BindingInfoUpdate(r.identifier, (chunk,))) is None
    done = sync.answered(P2, BindingInfoUpdate(r.identifier))
    assert done is r and not sync.busy()
    single = sync.request(P2, N("2001:db8:100::/48"), 10.0, out := [])
    assert type(out[0].message.options[0]) is MobileNetworkPrefix
    now = 10.0
    sent = 0
    while sync.next_deadline() is not None:
        now = sync.next_deadline()
        o = []
        sync.tick(now, o)
        sent += len(o)
    assert sent == 3 and single.identifier not in sync.peers[P2].requests
    one = sync.request(P2, A("2001:db8:1::10"), now, out := [])
    assert out[0].message.options == (IpAddress(4, A("2001:db8:1::10"), 128),)
    assert sync.answered(P2, BindingInfoUpdate(one.identifier, ())) is one


def test_dead_peer_is_forgotten():
    """Dropping a peer forgets everything owed to it; its timers no longer fire."""
    sync = make()
    sync.add_peer(P2)
    sync.publish(binding(1), 0.0, [])
    sync.request(P2, None, 0.0, [])
    sync.drop_peer(P2)
    assert sync.next_deadline() is None and not sync.busy()
    out = []
    sync.tick(100.0, out)
    assert out == [] and sync.request(P2, None, 0.0, []) is None
