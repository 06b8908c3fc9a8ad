"""Relearning after a restart (issue 11): BIU timeouts on the peer's measured answer time, fast
retransmission of a lost BIU, a window that shrinks when the peer answers late, a repeated bulk
request not answered again, the push to a returning peer in slices, and a restarted home agent
installing the bindings pushed while it boots without one event per entry
(haha.core.sync.outbound, haha.core.sync.inbound)."""

from collections import Counter
from ipaddress import IPv6Address as A

from haha.core.cache import BindingCache
from haha.core.slices import Backlog
from haha.core.sync.outbound import BULK_SLICE, FAST_RETRANSMIT
from haha.testing import Network
from haha.wire.mh import BU_A, BU_H, BindingInfoAck, BindingInfoRequest

from test_core_sync import P2, binding, bius, make

HOA_BASE = int(A("2001:db8:1::1:0"))
COA_BASE = int(A("2001:db8:99::"))


def _send_window(sync, n, now=0.0):
    """``n`` bindings published in a burst and flushed: the BIUs to P2, in sending order."""
    out = []
    for i in range(n):
        sync.publish(binding(i), now, out, batch=True)
    sync.flush(now, out)
    return bius(out, P2)


def test_a_lost_biu_is_sent_again_once_three_later_ones_are_acknowledged():
    """A BIU that FAST_RETRANSMIT later BIUs overtook was lost (the peer answers in order): it
    goes again in the acknowledgement's call, long before its 1 s timer, and only once."""
    sync = make(window=16)
    sync.add_peer(P2)
    sent = _send_window(sync, 24 * 8)
    assert len(sent) == 8
    lost = sent[0].message.identifier
    resent = []
    for k, e in enumerate(sent[1:FAST_RETRANSMIT + 1], 1):
        out = []
        sync.acknowledge(P2, BindingInfoAck(e.message.identifier), 0.01 * k, out)
        resent += [b for b in bius(out) if b.message.identifier == lost]
    assert len(resent) == 1
    assert resent[0].message.entries == sent[0].message.entries
    assert sync.counters["biu-fast-retransmitted"] == 1
    out = []
    sync.acknowledge(P2, BindingInfoAck(sent[FAST_RETRANSMIT + 1].message.identifier), 0.05,
                     out)
    assert not [b for b in bius(out) if b.message.identifier == lost]  # once only


def test_the_first_timeout_follows_the_measured_answer_time():
    """A peer that answers in 3 s (its backlog) is not sent its BIUs again after 1 s: the
    timeout of a new BIU is SRTT + 4 RTTVAR of the measured BIAs; never under the initial 1 s
    for a peer answering in milliseconds."""
    sync = make()
    sync.add_peer(P2)
    now = 0.0
    for i in range(6):
        out = []
        sync.publish(binding(i), now, out)
        (e,) = bius(out)
        now += 3.0
        sync.acknowledge(P2, BindingInfoAck(e.message.identifier), now, [])
    out = []
    sync.publish(binding(99), now, out)
    deadline = sync.next_deadline()
    assert deadline - now >= 3.0
    retransmitted = []
    sync.tick(now + 1.5, retransmitted)
    assert not bius(retransmitted)
    quick = make()
    quick.add_peer(P2)
    for i in range(6):
        out = []
        quick.publish(binding(i), 0.0, out)
        quick.acknowledge(P2, BindingInfoAck(bius(out)[0].message.identifier), 0.001, [])
    quick.publish(binding(99), 1.0, [])
    assert quick.next_deadline() == 2.0


def test_the_window_halves_when_the_peer_answers_late_and_grows_back():
    """A BIA later than the target (an eighth of ha_lifetime) halves the peer's window, once
    per round trip; BIAs in time grow it back to sync-window."""
    sync = make(window=16)  # ha_lifetime 35 s: target 4.375 s
    sync.add_peer(P2)
    peer = sync.peers[P2]
    sent = _send_window(sync, 24 * 40)
    assert len(sent) == 16 and sync.window(peer) == 16
    out = []
    sync.acknowledge(P2, BindingInfoAck(sent[0].message.identifier), 5.0, out)
    assert sync.window(peer) == 8
    assert len(bius(out)) == 0  # 15 outstanding, window 8: nothing more leaves
    for e in sent[1:]:
        sync.acknowledge(P2, BindingInfoAck(e.message.identifier), 5.0, [])
    assert sync.window(peer) == 8  # the same round trip: halved once
    now = 5.0
    while peer.pending or peer.outstanding:
        for o in list(peer.outstanding.values()):
            now += 0.01
            sync.acknowledge(P2, BindingInfoAck(o.identifier), now, [])
    assert sync.window(peer) > 8
    for _ in range(200):
        out = []
        sync.publish(binding(1000), now, out)
        for e in bius(out):
            sync.acknowledge(P2, BindingInfoAck(e.message.identifier), now + 0.01, [])
        now += 0.02
    assert sync.window(peer) == 16


def test_a_repeated_bulk_request_is_not_answered_again():
    """Once the end marker of a bulk answer is acknowledged, a BIR with the same identifier
    (sent before the marker reached the requester) is a repeat for biu_max_timeout seconds;
    a new identifier, or the same much later, is a new request."""
    sync = make(window=64)
    sync.add_peer(P2)
    out = []
    sync.answer_bulk(P2, 4242, [binding(i) for i in range(50)], 0.0, out)
    assert sync.repeated_bulk(P2, 4242, 0.0)  # being answered
    while bius(out):
        nxt = []
        for e in bius(out):
            sync.acknowledge(P2, BindingInfoAck(e.message.identifier), 0.1, nxt)
        out = nxt
    assert not sync.busy()
    assert sync.repeated_bulk(P2, 4242, 5.0)
    assert not sync.repeated_bulk(P2, 4243, 5.0)
    assert not sync.repeated_bulk(P2, 4242, 0.1 + 32.5)


def test_the_push_to_a_returning_peer_runs_in_slices():
    """Sync.push queues a bulk answer's slice of entries per call, not the whole cache in the
    call that saw the peer come back; run to its end it sends every primary once, and a
    binding deleted meanwhile is not sent."""
    sync = make(window=4096)
    sync.add_peer(P2)
    cache = BindingCache()
    for i in range(3 * BULK_SLICE):
        b = binding(i)
        cache.store(b.home_address, b.care_of, b.flags, b.sequence, b.lifetime, b.expires, (),
                    None, None, 0.0)
    sync.work = Backlog()
    sync.cache = cache
    out = []
    sync.push(P2, list(cache), 0.0, out)
    first = sum(len(e.message.entries) for e in bius(out))
    assert 0 < first <= BULK_SLICE and sync.work.pending()
    cache.remove(binding(3 * BULK_SLICE - 1).home_address)
    while sync.work.pending():
        sync.work.run(0.0, out)
    carried = [e.home_address for m in bius(out) for e in m.message.entries]
    assert len(carried) == len(set(carried)) == 3 * BULK_SLICE - 1


def _restart_scenario(n, losses=()):
    """Three home agents; ha1 dies and is declared dead; ha2 and ha3 hold ``n`` bindings
    (each primary for half, a copy of the other half); ha1 restarts, with ``losses`` (sender,
    receiver, loss rate) on those links. Returns the network."""
    net = Network(seed=3)
    ha1, ha2, ha3 = net.add_home_agents(3, sync_mtu=2100, hello_interval=1.0, ha_lifetime=3,
                                        boot_wait=1.0, max_binding_lifetime=3600,
                                        take_over_share="split")
    net.run_for(3.0)
    net.kill("ha1")
    net.run_for(5.0)
    for mine, ha, other in ((0, ha2, ha3), (1, ha3, ha2)):
        m = ha.machine
        for i in range(n):
            primary = None if i % 2 == mine else other.machine.identity
            m.cache.store(A(HOA_BASE + i), A(COA_BASE + i), BU_H | BU_A, 1, 3600,
                          net.now + 3600, (), primary, m.address if primary is None else None,
                          net.now)
    for a, b, loss in losses:
        net.link(a, b).loss = loss
    net.start("ha1")
    return net


def test_a_restarted_home_agent_relearns_many_bindings_through_losses():
    """4,000 bindings relearned by a restarted home agent with 5 % of the survivors' packets
    to it lost: every binding held within a few seconds of serving, the lost BIUs repeated by
    fast retransmission rather than each waiting for its timer."""
    n = 4000
    net = _restart_scenario(n, [("ha2", "ha1", 0.05), ("ha3", "ha1", 0.05)])
    ha1 = net.nodes["ha1"]
    net.run_until_true(lambda: ha1.machine.serving, 5)
    served = net.now
    net.run_until_true(lambda: len(ha1.machine.cache) == n, 10)
    assert net.now - served < 3.0
    fast = sum(net.nodes[s].machine.counters["biu-fast-retransmitted"] for s in ("ha2", "ha3"))
    assert fast > 0 and net.counters["lost"] > 0
    net.run_for(5.0)
    assert net.identical_caches()


def test_bindings_pushed_while_booting_make_no_event_each():
    """The survivors push their primaries to a restarted home agent when they see it again,
    before it serves: it installs them without one copy-created event each, and its
    bulk-sync-complete events count every copy."""
    n = 3000
    net = _restart_scenario(n)
    ha1 = net.nodes["ha1"]
    net.run_until_true(lambda: ha1.machine.serving and not ha1.machine.busy(), 15)
    assert len(ha1.machine.cache) == n
    names = Counter(e.name for _, e in ha1.events)
    assert names["copy-created"] < 20  # single-entry BIUs only, if any
    copied = sum(e.fields["copied"] for _, e in ha1.events if e.name == "bulk-sync-complete")
    assert copied + names["copy-created"] == n


def test_a_retransmitted_bulk_request_after_the_answer_starts_nothing():
    """A restarted home agent's bulk request, sent again after its peer has finished
    answering it, is counted as a repeat: the peer sends no second answer."""
    n = 2000
    net = _restart_scenario(n)
    ha1, ha2 = net.nodes["ha1"], net.nodes["ha2"]
    net.run_until_true(lambda: ha1.machine.serving and not ha1.machine.busy(), 15)
    net.run_for(1.0)  # the end marker's acknowledgement reaches ha2
    sent = ha2.machine.counters["biu-sent"]
    peer = ha2.machine.sync.peers[ha1.machine.identity]
    (ident,) = list(peer.answered)
    net._call(ha1, lambda now: _resend_bulk(ha1, ha2.machine.identity, ident, now))
    net.run_for(1.0)
    assert ha2.machine.counters["bir-repeated"] == 1
    assert ha2.machine.counters["biu-sent"] == sent


def _resend_bulk(node, peer, ident, now):
    """Effects of ``node`` sending a bulk BIR with identifier ``ident`` to ``peer``."""
    from haha.core.effects import make_send
    from haha.core.sync.outbound import UNSPECIFIED
    from haha.wire.options import IPADDR_HOME_ADDRESS, IpAddress
    m = node.machine
    return [make_send(BindingInfoRequest(ident, (IpAddress(IPADDR_HOME_ADDRESS, UNSPECIFIED,
                                                                 128),)),
                      m.sync.source, peer, None, None, peer)]



def test_the_relearning_benchmark_runs_and_reports_every_binding_held():
    """bench/relearn.py with a few hundred bindings prints one JSON object whose case holds a
    value and a CPU baseline, the restarted home agent holding every binding, no peer-down."""
    import json
    import os
    import subprocess
    import sys
    bench = os.path.join(os.path.dirname(__file__), "..", "bench", "relearn.py")
    out = subprocess.run([sys.executable, bench, "--nodes", "400", "--slowdown", "3"],
                         capture_output=True, text=True, timeout=120, check=True)
    report = json.loads(out.stdout)
    (case,) = report["results"]
    assert case["value"] is not None and case["value"] > 0 and case["baselines"]["cpu_s"] > 0
    raw = report["raw"]
    assert raw["held"] == 400 and raw["ha1"]["biu-entry-applied"] >= 400
    assert not any(raw["peer_downs"].values())
