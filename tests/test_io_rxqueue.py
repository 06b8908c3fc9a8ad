"""The input queue both transports share (haha.io.rxqueue): superseded packets, bounds, peers
first on the raw transport, kernel drops (tier 2; one test on real loopback sockets)."""

import struct
from collections import Counter
from ipaddress import IPv6Address

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactor, MemoryReactorClock

from haha.io import bpf
from haha.io.raw import RawTransport
from haha.io.rxqueue import InputQueue, esp_offset
from haha.io.sockbuf import SO_RXQ_OVFL
from haha.io.system import FakeSystem
from haha.io.udp import UdpTransport
from haha.wire.ipv6 import build_packet
from test_io_udp import _turn, _until

HA = IPv6Address("2001:db8:1::1")
PEER = IPv6Address("2001:db8:1::2")
PEER_SPI = 0x1234ABCD


def node(i):
    return IPv6Address(f"2001:db8:20::{i + 1:x}")


def esp(src, seq, spi=None, body=16, dst=HA, **kw):
    """An IPv6 packet from ``src`` carrying ESP with ``spi`` (the node's own by default) and
    sequence number ``seq``: the queue looks at nothing else."""
    spi = 0x10000 + int(src) % 0xFFFF if spi is None else spi
    return build_packet(src, dst, 50, struct.pack("!II", spi, seq) + bytes(body), **kw)


def _queue(**kw):
    got = []
    q = InputQueue(lambda data, meta: got.append((data, meta)), None, **kw)
    return q, got


def _drain(q):
    q.run()


# -- superseded packets --------------------------------------------------------------------


def test_a_retransmission_takes_the_place_of_its_waiting_copy():
    """A node's packet under ESP arriving while its earlier copy (same source, SPI, length)
    still waits replaces that copy in its place in the queue: processed once, the newer one,
    before the packets that arrived after the first copy; the dropped copy is counted."""
    q, got = _queue()
    a1, b1, a2, a3 = esp(node(0), 1), esp(node(1), 7), esp(node(0), 2), esp(node(0), 3)
    q.put(a1, "m1")
    q.put(b1, "m2")
    q.put(a2, "m3")
    q.put(a3, "m4")
    assert len(q.queue) == 2 and q.counters["superseded"] == 2
    _drain(q)
    assert got == [(a3, "m4"), (b1, "m2")]


def test_an_older_or_repeated_copy_arriving_late_is_the_one_dropped():
    """Of two copies the higher ESP sequence number is kept: one sent earlier that arrives
    later (reordered), and an exact repeat (a replay the SA would refuse anyway), are dropped
    and counted; the waiting newer one stays."""
    q, got = _queue()
    a5, a3 = esp(node(0), 5), esp(node(0), 3)
    q.put(a5, 1)
    q.put(a3, 2)
    q.put(a5, 3)
    assert q.counters["superseded"] == 2
    _drain(q)
    assert got == [(a5, 1)]


def test_what_is_never_superseded():
    """Only the same sender, SA and length supersede: another SPI, another length (a different
    message from the same node), another source, another UDP endpoint, a packet without ESP, a
    configured peer's packets (its SA carries many different messages) and everything with
    supersede off are all processed."""
    q, got = _queue()
    q.exempt = frozenset({PEER.packed})
    packets = [
        (esp(node(0), 1), None), (esp(node(0), 2, spi=0x999), None),
        (esp(node(0), 3, body=24), None), (esp(node(1), 4), None),
        (esp(node(0), 5), ("::1", 6000)), (esp(node(0), 6), ("::1", 6001)),
        (build_packet(node(0), HA, 135, bytes(16)), None),
        (build_packet(node(0), HA, 135, bytes(16)), None),
        (esp(PEER, 1, spi=PEER_SPI), None), (esp(PEER, 2, spi=PEER_SPI), None),
    ]
    for data, endpoint in packets:
        q.put(data, None, endpoint)
    _drain(q)
    assert len(got) == len(packets) and q.counters["superseded"] == 0
    off, got_off = _queue(supersede=False)
    for seq in (1, 2, 3):
        off.put(esp(node(0), seq), seq)
    _drain(off)
    assert [m for _, m in got_off] == [1, 2, 3] and off.counters["superseded"] == 0


def test_a_copy_already_processed_is_not_superseded():
    """Once a packet has been handed on, the next one from the same sender is queued again
    (nothing is dropped for a packet no longer waiting)."""
    q, got = _queue()
    q.put(esp(node(0), 1), 1)
    _drain(q)
    q.put(esp(node(0), 2), 2)
    _drain(q)
    assert [m for _, m in got] == [1, 2] and q.counters["superseded"] == 0


def test_esp_is_found_behind_the_home_address_option_and_the_routing_header():
    """A Binding Update carries ESP behind a Destination Options header (Home Address
    option), a Binding Acknowledgement behind a type 2 routing header: both are found and
    superseded. A header chain cut short, or longer than four extension headers, is not."""
    bu = esp(node(0), 1, home_address=IPv6Address("2001:db8:1::100"))
    assert esp_offset(bu) == 40 + 24
    ba = esp(HA, 1, dst=node(0), routing_address=IPv6Address("2001:db8:1::100"))
    assert esp_offset(ba) == 40 + 24
    assert esp_offset(build_packet(node(0), HA, 135, bytes(16))) == -1
    assert esp_offset(bu[:40 + 24 + 7]) == -1  # no room for SPI and sequence number
    assert esp_offset(bu[:40 + 4]) == -1
    deep = bytearray(build_packet(node(0), HA, 60, bytes((60, 0)) + bytes(6)))
    chain = b"".join(bytes((60, 0)) + bytes(6) for _ in range(4)) + bytes((50, 0)) + bytes(6)
    assert esp_offset(bytes(deep[:40]) + chain + bytes(16)) == -1
    q, got = _queue()
    q.put(bu, 1)
    q.put(esp(node(0), 2, home_address=IPv6Address("2001:db8:1::100")), 2)
    _drain(q)
    assert [m for _, m in got] == [2] and q.counters["superseded"] == 1


def test_the_backlog_and_each_source_are_bounded():
    """At most ``max_backlog`` packets wait and at most ``max_per_source`` from one source;
    more are dropped and counted; a retransmission that supersedes a waiting copy needs no
    room; a source's share is freed as its packets are processed."""
    q, got = _queue(max_backlog=5, max_per_source=2)
    for i in range(3):  # one source, no ESP: two wait, the third is dropped
        q.put(build_packet(node(0), HA, 135, bytes(16)), ("a", i))
    assert q.counters["dropped_source_backlog"] == 1
    for i in range(1, 5):
        q.put(esp(node(i), 1), ("b", i))
    assert q.counters["dropped_backlog"] == 1 and len(q.queue) == 5
    q.put(esp(node(1), 2), ("b", "newer"))
    assert q.counters["superseded"] == 1 and len(q.queue) == 5
    _drain(q)
    assert len(got) == 5 and ("b", "newer") in [m for _, m in got]
    q.put(build_packet(node(0), HA, 135, bytes(16)), ("a", 9))
    assert q.counters["dropped_source_backlog"] == 1 and len(q.queue) == 1
    with pytest.raises(ValueError):
        InputQueue(lambda d, m: None, None, max_per_source=0)
    with pytest.raises(ValueError):
        InputQueue(lambda d, m: None, None, max_backlog=0)


# -- the raw transport: peers first, no priority for a claimed source ----------------------


def _raw(peers, cost=0.001, **kw):
    """A started RawTransport on the fake system whose receiver takes ``cost`` seconds of a
    fake clock per packet; returns (transport, packet socket, reader, received)."""
    now = [0.0]
    r = MemoryReactorClock()
    t = RawTransport(r, system=FakeSystem({"eth0": 2}), table="haha_test_q", interfaces=["eth0"],
                     peers=peers, timer=lambda: now[0], **kw)
    got = []

    def receiver(data):
        now[0] += cost
        got.append((data, t.last_interface))

    t.start(receiver)
    return t, t._system.packet_sockets[0], next(iter(r.readers)), got, r


def test_raw_a_peer_hello_behind_thousands_of_binding_updates_is_handled_first():
    """The raw transport reads what is queued in the kernel into its input queue: a peer's
    HELLO (ESP from the peer's address under the peer's SPI) behind 2,000 Binding Updates is
    handed over first, with its interface named; the Binding Updates follow in slices of
    ``slice_seconds`` (20 packets at 1 ms each), and every packet arrives."""
    t, sock, reader, got, r = _raw({PEER: {PEER_SPI}})
    hello = esp(PEER, 1, spi=PEER_SPI)
    for i in range(2000):
        assert sock.inject(esp(node(i), 1))
    assert sock.inject(hello)
    reader.doRead()
    assert got[0] == (hello, "eth0")
    assert len(got) == 1 + 20
    while t.input.queue:
        _turn(r)
    assert len(got) == 2001 and t.counters["received_from_peers"] == 1
    assert 90 <= t.counters["slices_deferred"] <= 110


def test_raw_each_read_is_bounded_and_a_deep_hello_waits_only_a_few_slices():
    """Each readiness reads at most ``read_bytes`` (256 KiB: 4,096 packets of 64 octets): a
    HELLO 10,000 packets deep is found by the third read, having waited behind three slices
    of node traffic (60 packets), not 10,000."""
    t, sock, reader, got, r = _raw({PEER: {PEER_SPI}})
    hello = esp(PEER, 1, spi=PEER_SPI)
    for i in range(10000):
        sock.inject(esp(node(i), 1))
    sock.inject(hello)
    reads = 0
    while (hello, "eth0") not in got:
        before = len(sock.queue)
        reader.doRead()
        reads += 1
        assert before - len(sock.queue) <= 256 * 1024 // len(hello) + 1
        _turn(r)
    assert reads == 3 and got.index((hello, "eth0")) <= 3 * 20


def test_raw_a_forged_peer_source_gets_no_priority():
    """A packet claiming a peer's address gets no priority without the peer's SPI: a plain
    Mobility Header and ESP under another SPI from the peer's address wait their turn behind
    the node traffic read before them; only the genuine one goes first. Without ESP keys
    (``None``) the configured address is all there is and suffices; with no peers configured
    everything is processed in arrival order."""
    t, sock, reader, got, r = _raw({PEER: {PEER_SPI}})
    plain = build_packet(PEER, HA, 135, b"forged" + bytes(10))
    wrong = esp(PEER, 9, spi=PEER_SPI + 1)
    genuine = esp(PEER, 1, spi=PEER_SPI)
    for i in range(30):
        sock.inject(esp(node(i), 1))
    for p in (plain, wrong, genuine):
        sock.inject(p)
    reader.doRead()
    while t.input.queue:
        _turn(r)
    order = [d for d, _ in got]
    assert order[0] == genuine and order.index(plain) == 31 and order.index(wrong) == 32
    t2, sock2, reader2, got2, _ = _raw({PEER: None})
    for i in range(30):
        sock2.inject(esp(node(i), 1))
    sock2.inject(plain)
    reader2.doRead()
    assert got2[0][0] == plain
    t3, sock3, reader3, got3, r3 = _raw({})
    for i in range(30):
        sock3.inject(esp(node(i), 1))
    sock3.inject(genuine)
    reader3.doRead()
    while t3.input.queue:
        _turn(r3)
    assert got3[-1][0] == genuine and t3.counters["received_from_peers"] == 0
    t.set_peers({PEER: None})
    assert t._is_peer(plain)
    with pytest.raises(TypeError):
        t.set_peers({"2001:db8:1::2": None})


def test_raw_a_node_retransmission_while_queued_is_processed_once():
    """Binding Updates a node sent again while its first copy still waited in the raw
    transport's queue are processed once (the last copy, in the first one's place), the
    others counted as superseded; a peer's packets under one SA are all processed."""
    t, sock, reader, got, r = _raw({PEER: {PEER_SPI}})
    for i in range(50):
        sock.inject(esp(node(i), 1))
    for seq in range(2, 12):
        sock.inject(esp(node(40), seq))
    for seq in range(1, 4):
        sock.inject(esp(PEER, seq, spi=PEER_SPI))
    reader.doRead()
    while t.input.queue:
        _turn(r)
    from_node_40 = [d for d, _ in got if d[8:24] == node(40).packed]
    assert from_node_40 == [esp(node(40), 11)] and t.counters["superseded"] == 10
    assert len(got) == 50 + 3
    order = [d for d, _ in got]
    assert order.index(esp(node(40), 11)) == 3 + 40  # the first copy's place


def test_raw_tunnelled_packets_are_handed_over_at_once_and_bounded_per_read():
    """IPv6-in-IPv6 for a user-space tunnel does not enter the queue: it is handed over as it
    is read, at most 64 a readiness, while signalling read with it waits for the queue."""
    t, sock, reader, got, r = _raw({})
    tunnelled = []
    t.set_tunnel_receiver(tunnelled.append)
    inner = build_packet(node(0), IPv6Address("2001:db8:99::1"), 59, b"")
    for i in range(100):
        sock.inject(build_packet(node(0), HA, 41, inner))
    reader.doRead()
    assert len(tunnelled) == 64 and t.counters["tunnelled"] == 64
    reader.doRead()
    assert len(tunnelled) == 100 and got == []


def test_raw_kernel_drops_are_counted_from_so_rxq_ovfl():
    """Every packet socket has SO_RXQ_OVFL on; the drop count its control messages carry
    (cumulative per socket) becomes ``kernel_drops``: only what grew is added."""
    t, sock, reader, got, r = _raw({})
    assert sock.options[(1, SO_RXQ_OVFL)] == 1
    counts = iter([0, 5, 5, 12])
    plain_recvmsg = sock.recvmsg

    def recvmsg(n, ancbufsize=0):
        data, anc, flags, addr = plain_recvmsg(n, ancbufsize)
        return data, anc + [(1, SO_RXQ_OVFL, struct.pack("=I", next(counts)))], flags, addr

    sock.recvmsg = recvmsg
    for i in range(4):
        sock.inject(esp(node(i), 1))
    reader.doRead()
    assert t.counters["kernel_drops"] == 12 and len(got) == 4


def test_raw_stop_forgets_what_waits():
    """Stopping the transport drops what still waits in the queue and the scheduled slice:
    nothing reaches the receiver afterwards."""
    t, sock, reader, got, r = _raw({})
    for i in range(100):
        sock.inject(esp(node(i), 1))
    reader.doRead()
    assert t.input.queue and r.getDelayedCalls()
    t.stop()
    assert not t.input.queue and not [c for c in r.getDelayedCalls() if c.active()]
    assert len(got) == 20


def test_raw_without_a_reactor_clock_everything_is_processed_at_once():
    """With a reactor that cannot schedule (no IReactorTime) a read's packets are all
    processed before the read returns."""
    system = FakeSystem({"eth0": 2})
    r = MemoryReactor()
    t = RawTransport(r, system=system, table="haha_test_q2", interfaces=["eth0"])
    got = []
    t.start(got.append)
    for i in range(300):
        system.packet_sockets[0].inject(esp(node(i), 1), pkttype=bpf.PACKET_HOST)
    next(iter(r.readers)).doRead()
    assert len(got) == 300


# -- the UDP transport: supersession keyed by the UDP endpoint too, kernel drops ------------


def test_udp_retransmissions_are_superseded_per_udp_endpoint():
    """On the UDP transport the same source and SPI from two UDP endpoints are two senders
    (both processed); from one endpoint the retransmission supersedes its waiting copy."""
    from test_io_udp import _busy_transport

    t, r, got = _busy_transport()
    first, again = esp(node(0), 1), esp(node(0), 2)
    r.port.kernel = [(esp(node(9), 1), ("127.0.0.1", 6001)) for _ in range(1)]
    r.port.kernel += [(first, ("127.0.0.1", 6000)), (first, ("127.0.0.1", 6002)),
                      (again, ("127.0.0.1", 6000))]
    r.port.doRead()
    while t.queue:
        _turn(r)
    assert got == [esp(node(9), 1), again, first]
    assert t.counters["superseded"] == 1


@pytest_twisted.inlineCallbacks
def test_udp_kernel_drops_over_loopback():
    """A real UDP socket with a small receive buffer: datagrams sent faster than the reactor
    reads are dropped by the kernel, and the next datagram read brings their number
    (SO_RXQ_OVFL): ``kernel_drops`` is exactly what was sent and never received."""
    got = []
    ha = UdpTransport(reactor, receive_buffer=4096)
    ha.start(got.append)
    mn = UdpTransport(reactor)
    mn.start(lambda p: None)
    try:
        mn.add_peer(HA, ha.address)
        packet = esp(node(0), 1, dst=HA, body=400)
        for i in range(300):  # no reactor turn in between: the kernel queue overflows
            mn.send(esp(node(i), 1, dst=HA, body=400))
        yield _until(lambda: got)
        yield _sleep(0.2)
        first = len(got)
        assert first < 300
        mn.send(packet)
        yield _until(lambda: len(got) > first)
        assert ha.counters["kernel_drops"] == 301 - len(got)
    finally:
        yield ha.stop()
        yield mn.stop()


def _sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def test_the_queue_shares_the_transport_counters():
    """The queue counts into the transport's own counters (what ``haha-ctl counters`` shows
    as ``udptransport.*`` and ``rawtransport.*``)."""
    counters = Counter()
    q = InputQueue(lambda d, m: None, None, counters=counters)
    q.put(esp(node(0), 1), None)
    q.put(esp(node(0), 2), None)
    assert counters["superseded"] == 1


# -- the raw transport the service builds: peers from the configuration ---------------------


def _ha_config(tmp_path, me, peer, mode="esp"):
    from haha.config import home_agent_from_text

    keys = f"[peer-keys]\n{peer} = {tmp_path}/pair.key\n" if mode == "esp" else ""
    security = f"sequence-file = {me}.seq\n" if mode == "esp" else "lab = yes\n"
    text = (f"[home-agent]\naddress = {me}\nhome-prefix = 2001:db8:1::/64\n"
            f"home-interface = eth0\n[peers]\nstatic = {peer}\n"
            f"[security]\nmode = {mode}\n" + security + keys)
    return home_agent_from_text(text, str(tmp_path / f"{me}.conf"))


def test_configured_peers_come_first_only_under_their_own_sa(tmp_path):
    """The service's raw transport knows each configured peer by its address and the SPI of
    its inbound SA, derived from the pair's secret exactly as the SA database derives it: a
    HELLO the peer sealed with its real SA goes ahead of 500 Binding Updates, a packet from the
    peer's address sealed under another key does not. With ``mode = none`` the address alone
    is the peer; a mobile node's transport has no peers."""
    from haha.security.keys import generate_key_file
    from haha.service import home_agent_sadb
    from haha.transports import priority_peers

    generate_key_file(str(tmp_path / "pair.key"))
    generate_key_file(str(tmp_path / "other.key"))
    config = _ha_config(tmp_path, HA, PEER)
    peers = priority_peers(config)
    mine = home_agent_sadb(config)
    inbound = [row for row in mine.describe() if row["peer"] == str(PEER)
               and row["direction"] == "in"]
    assert peers == {PEER: frozenset({int(inbound[0]["spi"], 16)})}
    theirs = home_agent_sadb(_ha_config(tmp_path, PEER, HA))
    hello = build_packet(PEER, HA, 50, theirs.protect(HA, 135, bytes(16)))
    (tmp_path / "pair.key").write_bytes((tmp_path / "other.key").read_bytes())
    stranger = home_agent_sadb(_ha_config(tmp_path, PEER, HA))
    forged = build_packet(PEER, HA, 50, stranger.protect(HA, 135, bytes(16)))
    t, sock, reader, got, r = _raw(peers)
    for i in range(500):
        sock.inject(esp(node(i), 1))
    sock.inject(forged)
    sock.inject(hello)
    reader.doRead()
    while t.input.queue:
        _turn(r)
    order = [d for d, _ in got]
    assert order[0] == hello and order.index(forged) == 501
    assert priority_peers(_ha_config(tmp_path, HA, PEER, mode="none")) == {PEER: None}
    from haha.config import mobile_node_from_text

    mn = mobile_node_from_text("[mobile-node]\nhome-address = 2001:db8:1::100\n"
                               "home-prefix = 2001:db8:1::/64\ncare-of-address = 2001:db8:99::1\n"
                               "[security]\nmode = none\nlab = yes\n")
    assert priority_peers(mn) == {}


def test_raw_update_peer_replaces_one_peer():
    """``update_peer`` adds or replaces one configured peer's SPIs and leaves the others."""
    other = IPv6Address("2001:db8:1::3")
    t, sock, reader, got, r = _raw({PEER: {PEER_SPI}, other: None})
    t.update_peer(PEER, [7])
    assert t._is_peer(esp(PEER, 1, spi=7)) and not t._is_peer(esp(PEER, 1, spi=PEER_SPI))
    assert t._is_peer(build_packet(other, HA, 135, bytes(16)))


def test_the_queue_and_kernel_drop_counters_are_in_haha_ctl_counters():
    """A home agent's ``counters`` (what ``haha-ctl counters`` prints and /metrics serves)
    include the transport's queue and kernel-drop counters, 0 before anything happened, so a
    monitor sees them from the start."""
    from twisted.internet.task import Clock

    from haha.backends.null import NullBackend
    from haha.config import home_agent_from_text
    from haha.service import HomeAgentService

    config = home_agent_from_text(
        "[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
        "home-interface = eth0\n[security]\nmode = none\nlab = yes\n"
        "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n", "ha.conf")
    service = HomeAgentService.build(config, Clock(), backend=NullBackend())
    counters = service.counters()
    for name in ("kernel_drops", "superseded", "dropped_backlog", "dropped_source_backlog"):
        assert counters[f"udptransport.{name}"] == 0
    service.transport.counters["kernel_drops"] += 3
    assert service.counters()["udptransport.kernel_drops"] == 3


def test_udp_static_peers_are_never_superseded():
    """On the UDP transport a static peer's address is exempt from supersession wherever its
    packets wait (a peer's SA carries many different messages of one length), including one
    added later with ``add_peer``; a node's copies are superseded."""
    from test_io_udp import PEER_ENDPOINT, _busy_transport

    t, r, got = _busy_transport()
    other = IPv6Address("2001:db8:1::3")
    t.add_peer(other, ("127.0.0.1", 5003))
    peer_copies = [esp(PEER, seq, spi=PEER_SPI) for seq in (1, 2)]
    elsewhere = [esp(PEER, seq, spi=PEER_SPI) for seq in (3, 4)]  # from another endpoint
    later = [esp(other, seq, spi=7) for seq in (1, 2)]
    r.port.kernel = ([(p, PEER_ENDPOINT) for p in peer_copies]
                     + [(p, ("127.0.0.1", 6666)) for p in elsewhere]
                     + [(p, ("127.0.0.1", 5003)) for p in later]
                     + [(esp(node(0), seq), ("127.0.0.1", 6000)) for seq in (1, 2)])
    r.port.doRead()
    while t.queue:
        _turn(r)
    assert got == peer_copies + later + elsewhere + [esp(node(0), 2)]
    assert t.counters["superseded"] == 1

def test_the_peers_queue_is_bounded_too():
    """The peers' queue holds at most ``max_backlog`` packets too (one read could bring more):
    the rest are counted and dropped."""
    q, got = _queue(max_backlog=3)
    for seq in range(1, 6):
        q.put_peer(esp(PEER, seq, spi=PEER_SPI), seq)
    assert q.counters["dropped_backlog"] == 2 and q.counters["received_from_peers"] == 3
    _drain(q)
    assert [m for _, m in got] == [1, 2, 3]


# -- urgent work of the receiver before node traffic (a take-over) ------------------------------


def _timed_queue(cost=0.001, **kw):
    """An InputQueue on a MemoryReactorClock whose receiver takes ``cost`` seconds of a fake
    timer per packet; returns (queue, received, reactor)."""
    now = [0.0]
    r = MemoryReactorClock()
    got = []

    def deliver(data, meta):
        now[0] += cost
        got.append(data)

    q = InputQueue(deliver, r.callLater, timer=lambda: now[0], **kw)
    return q, got, r


def test_node_traffic_gets_short_slices_while_the_receiver_has_urgent_work():
    """While ``urgent()`` is true (a home agent taking over) a slice of node traffic lasts
    ``urgent_slice_seconds`` (2 packets at 1 ms each) instead of ``slice_seconds`` (20), and is
    counted; peers' packets still all go first. Once the work is done, slices are full again
    and every packet arrives."""
    q, got, r = _timed_queue()
    busy = [True]
    q.urgent = lambda: busy[0]
    nodes = [esp(node(i), 1) for i in range(100)]
    for p in nodes:
        q.put(p, None)
    hellos = [esp(PEER, k, spi=PEER_SPI) for k in range(1, 4)]
    for h in hellos:
        q.put_peer(h, None)
    q.run()
    assert got == hellos + nodes[:2]
    _turn(r)
    assert got[3:] == nodes[:4] and q.counters["slices_yielded"] == 2
    busy[0] = False
    _turn(r)
    assert len(got) == 3 + 4 + 20
    while q.queue:
        _turn(r)
    assert got == hellos + nodes and q.counters["slices_yielded"] == 2


def test_peer_packets_go_first_in_slices_too():
    """Many peer packets (a restarted home agent's bulk answers: thousands of BIUs) are
    processed in slices of ``slice_seconds`` as well (20 at 1 ms each), each slice counted,
    returning to the reactor between them; node traffic waits until no peer packet does, and
    a peer packet arriving meanwhile still goes before it. Without a reactor every peer
    packet goes at once."""
    q, got, r = _timed_queue()
    nodes = [esp(node(i), 1) for i in range(30)]
    for p in nodes:
        q.put(p, None)
    peers = [esp(PEER, k, spi=PEER_SPI) for k in range(1, 51)]
    for p in peers:
        q.put_peer(p, None)
    q.run()
    assert got == peers[:20] and q.counters["peer_slices_deferred"] == 1
    late = esp(PEER, 99, spi=PEER_SPI)
    q.put_peer(late, None)
    _turn(r)
    assert got == peers[:40] and q.counters["peer_slices_deferred"] == 2
    _turn(r)
    # the last 10 peer packets and the late one, then a full slice of node traffic
    assert got[:51] == peers + [late] and got[51:] == nodes[:20]
    while q.queue:
        _turn(r)
    assert got[51:] == nodes
    at_once, got_at_once = _queue()
    for p in peers:
        at_once.put_peer(p, None)
    at_once.run()
    assert got_at_once == [(p, None) for p in peers]


def test_urgent_work_arriving_with_a_packet_cuts_the_slice_short():
    """A packet whose processing starts urgent work (a BIU, a peer-down) ends the slice it is
    in at ``urgent_slice_seconds`` rather than running the full ``slice_seconds``."""
    q, got, r = _timed_queue()
    flag = [False]
    q.urgent = lambda: flag[0]
    deliver = q._deliver

    def starting(data, meta):
        deliver(data, meta)
        if len(got) == 1:
            flag[0] = True  # the first packet started a take-over

    q._deliver = starting
    for i in range(50):
        q.put(esp(node(i), 1), None)
    q.run()
    assert len(got) == 2 and q.counters["slices_yielded"] == 1


def test_without_a_reactor_urgent_work_does_not_hold_packets_back():
    """A queue without ``call_later`` (everything processed at once) ignores ``urgent``: it
    could not come back for the rest."""
    q, got = _queue()
    q.urgent = lambda: True
    for i in range(30):
        q.put(esp(node(i), 1), None)
    q.run()
    assert len(got) == 30 and not q.queue


def test_holds_says_whether_a_source_has_a_packet_waiting():
    """``holds(source)`` is true exactly while a packet from that fixed-header source waits
    among the other traffic (a node's answer arrived and is not yet processed)."""
    q, got, r = _timed_queue(cost=0.03)
    for i in range(3):
        q.put(esp(node(i), 1), None)
    assert all(q.holds(node(i).packed) for i in range(3)) and not q.holds(node(5).packed)
    q.run()  # one packet (30 ms) per slice
    assert not q.holds(node(0).packed) and q.holds(node(1).packed)


def test_urgent_slice_seconds_is_checked():
    """A non-positive ``urgent_slice_seconds`` is refused naming it; one above
    ``slice_seconds`` is capped at it."""
    with pytest.raises(ValueError, match="urgent_slice_seconds"):
        InputQueue(lambda d, m: None, None, urgent_slice_seconds=0)
    assert InputQueue(lambda d, m: None, None, slice_seconds=0.001,
                      urgent_slice_seconds=0.5).urgent_slice_seconds == 0.001


class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _answering_queue(accept, **kw):
    """A queue whose receiver calls ``answered`` for the packets ``accept(data)`` says were
    accepted answers (as the home agent does from within ``deliver``)."""
    clock = _Clock()
    got, opened = [], []

    def deliver(data, meta):
        got.append(data)
        if accept(data):
            opened.append(q.answered(data[8:24]))

    q = InputQueue(deliver, None, timer=clock, **kw)
    return q, got, opened, clock


def test_copies_of_an_accepted_answer_are_dropped_unread_for_the_window():
    """Once the packet being delivered is accepted as an answer, later packets with its
    supersession key (same source, SPI, length) are dropped before anything reads them,
    counted in ``answered_dropped``, for ``answered_window`` seconds; another node's, another
    SPI's or another length's packets still pass, and after the window the same key passes
    again. Without this each late copy was decrypted and answered again."""
    q, got, opened, clock = _answering_queue(lambda data: True, answered_window=3.0)
    first = esp(node(0), 1)
    q.put(first, None)
    _drain(q)
    assert got == [first] and opened == [True]
    late = [esp(node(0), 2), esp(node(0), 3)]
    other = [esp(node(1), 2), esp(node(0), 4, spi=0x999), esp(node(0), 5, body=32)]
    for data in late + other:
        q.put(data, None)
    assert q.counters["answered_dropped"] == 2
    assert list(slot[0] for slot in q.queue) == other
    _drain(q)
    clock.t += 3.0
    after = esp(node(0), 6)
    q.put(after, None)
    assert [slot[0] for slot in q.queue] == [after] and q.counters["answered_dropped"] == 2


def test_only_an_accepted_packet_opens_the_window():
    """A packet the receiver did not accept (a forgery that failed authentication, or not an
    answer) opens no window: its key's next packets are read as before; ``answered`` outside
    a delivery, or naming another source than the packet being delivered, opens none
    either; a window of 0 turns it off."""
    q, got, opened, clock = _answering_queue(lambda data: data[-1] == 1)
    forged = esp(node(0), 1)
    q.put(forged, None)
    _drain(q)
    assert opened == []
    assert not q.answered(node(0).packed)  # not within a delivery
    q.put(esp(node(0), 2), None)
    assert len(q.queue) == 1 and q.counters["answered_dropped"] == 0
    _drain(q)

    def wrong_source(data, meta):
        opened.append(q2.answered(node(9).packed))
    q2 = InputQueue(wrong_source, None, timer=clock)
    q2.put(esp(node(0), 1), None)
    q2.run()
    q2.put(esp(node(0), 2), None)
    assert opened == [False] and len(q2.queue) == 1

    q3, got3, opened3, _ = _answering_queue(lambda data: True, answered_window=0)
    q3.put(esp(node(0), 1), None)
    q3.run()
    q3.put(esp(node(0), 2), None)
    assert opened3 == [False] and len(q3.queue) == 1
    with pytest.raises(ValueError, match="answered_window"):
        InputQueue(lambda d, m: None, None, answered_window=-1)


def test_no_window_for_packets_without_esp_or_from_peers_or_without_supersession():
    """Packets that have no supersession key open no window even when accepted: a plain
    (non-ESP) packet, a packet from a configured peer's address (exempt: its SA carries
    many messages that must all arrive), and any packet with ``supersede`` off; their
    sources' next packets are all read."""
    plain = build_packet(node(0), HA, 135, bytes(24))
    q, got, opened, clock = _answering_queue(lambda data: True)
    q.exempt = frozenset((PEER.packed,))
    for data in (plain, esp(PEER, 1, spi=PEER_SPI)):
        q.put(data, None)
    _drain(q)
    assert opened == [False, False]
    q.put(build_packet(node(0), HA, 135, bytes(24)), None)
    q.put(esp(PEER, 2, spi=PEER_SPI), None)
    assert len(q.queue) == 2 and q.counters["answered_dropped"] == 0
    q2, got2, opened2, _ = _answering_queue(lambda data: True, supersede=False)
    q2.put(esp(node(0), 1), None)
    q2.run()
    q2.put(esp(node(0), 2), None)
    assert opened2 == [False] and len(q2.queue) == 1


def test_answer_windows_are_forgotten_when_they_expire():
    """The windows are bounded in time: each answered key is forgotten once its window has
    passed (looked at when the next window opens), so the table never grows with every node
    ever answered."""
    q, got, opened, clock = _answering_queue(lambda data: True, answered_window=1.0)
    for i in range(100):
        q.put(esp(node(i), 1), None)
    _drain(q)
    assert len(q._answered) == 100
    clock.t += 2.0
    q.put(esp(node(500), 1), None)
    _drain(q)
    assert len(q._answered) == 1 and len(q._answered_order) == 1


def test_a_home_agent_service_puts_its_take_over_before_node_traffic():
    """``HomeAgentService.build`` wires the UDP transport's input queue to the machine: the
    queue's ``urgent()`` is true exactly while the home agent has a take-over queued or its
    paced first switch requests are behind (more due than a tick sends), node traffic is
    held meanwhile, and the switch requests ask the queue whether a node's answer is already
    waiting."""
    from twisted.internet.task import Clock

    from haha.backends.null import NullBackend
    from haha.config import home_agent_from_text
    from haha.service import HomeAgentService

    config = home_agent_from_text(
        "[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
        "home-interface = eth0\n[security]\nmode = none\nlab = yes\n"
        "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n", "ha.conf")
    service = HomeAgentService.build(config, Clock(), backend=NullBackend())
    queue, machine = service.transport.input, service.machine
    assert queue.urgent is not None and not queue.urgent() and queue.hold_while_urgent
    machine.work.add(range(10000), lambda item, now, out: None, 0.0, [], name="take-over")
    assert machine.work.has("take-over") and queue.urgent()
    machine.work.clear()
    assert not queue.urgent()
    # A paced first switch request: urgent once a tick's worth is overdue (keeping pace
    # is not urgent), not before, and not once it has left.
    first = machine.switching._first
    first.append((service.adapter.now() + 5.0, node(0)))
    assert not queue.urgent()
    first[0] = (service.adapter.now(), node(0))
    assert machine.switching.first_due(service.adapter.now()) and not queue.urgent()
    pace = machine.switching.slice / machine.settings.switch_rate
    first[0] = (service.adapter.now() - pace, node(0))
    assert queue.urgent()
    first.clear()
    assert not queue.urgent()
    waiting = machine.switching.waiting
    assert waiting is not None and not waiting(node(0))
    queue.put(esp(node(0), 1), None)
    assert waiting(node(0)) and not waiting(node(1))
    # A node's answer to its switch request, accepted while being delivered, opens the
    # queue's window for its copies (InputQueue.answered).
    on_answered = machine.switching.on_answered
    assert on_answered is not None
    calls = []
    queue._deliver = lambda data, meta: calls.append(on_answered(node(0)))
    queue.run()
    assert calls == [True]
    queue.put(esp(node(0), 2), None)
    assert queue.counters["answered_dropped"] == 1 and not queue.queue


def test_a_transport_without_an_input_queue_is_left_as_it_is():
    """A transport with no input queue (an embedder's, kernel ESP's wrapper) gets no
    scheduling hooks, and the home agent's switch requests ask no queue."""
    import random

    from twisted.internet.task import Clock

    from haha.core.homeagent import HomeAgent
    from haha.core.settings import HomeAgentSettings
    from haha.service import _prioritise_take_over

    machine = HomeAgent(HomeAgentSettings(address=HA, home_prefix="2001:db8:1::/64"),
                        random.Random(1))

    class Bare:
        input = None

    _prioritise_take_over(machine, Bare(), Clock())
    assert machine.switching.waiting is None
    q, _ = _queue()
    adapter = type("A", (), {"now": lambda self: 0.0})()
    _prioritise_take_over(machine, type("T", (), {"input": q})(), adapter)
    assert q.urgent is not None and q.urgent() is False
    assert machine.switching.waiting is not None


def test_the_tables_of_a_deep_backlog_are_made_anew_once_it_empties():
    """After a burst of 10,000 node packets (with retransmissions superseded) has been worked
    off, the queue's look-up tables are small again (a dict keeps the size of its fullest
    moment: the two held about 100 octets per packet of the burst for good), and the queue
    still supersedes and bounds per source afterwards; a shallow backlog keeps its tables."""
    import sys

    from haha.io import rxqueue

    q, got = _queue(max_per_source=2)
    for i in range(10000):
        q.put(esp(node(i), 1), "m")
    q.put(esp(node(0), 2), "m")  # superseding its first copy
    deep = sys.getsizeof(q._latest) + sys.getsizeof(q._per_source)
    assert deep > 500_000 and q.counters["superseded"] == 1
    _drain(q)
    assert len(got) == 10000 and got[0][0] == esp(node(0), 2)
    assert sys.getsizeof(q._latest) + sys.getsizeof(q._per_source) < 1000
    q.put(esp(node(1), 5), "m")
    q.put(esp(node(1), 6), "m")  # superseded, as before
    q.put(esp(node(1), 7, body=32), "m")  # another length: a second packet of node 1
    q.put(esp(node(1), 8, body=48), "m")  # a third: past max_per_source
    assert len(q.queue) == 2 and q.counters["superseded"] == 2
    assert q.counters["dropped_source_backlog"] == 1
    _drain(q)
    small, _ = _queue()
    for i in range(rxqueue.SHRINK_AFTER // 2):
        small.put(esp(node(i), 1), "m")
    tables = small._latest, small._per_source
    _drain(small)
    assert (small._latest, small._per_source) == ({}, {})
    assert small._latest is tables[0] and small._per_source is tables[1]
