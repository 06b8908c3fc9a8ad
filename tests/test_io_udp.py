"""UdpTransport: IPv6 packets in UDP datagrams (tier 2; one test on real loopback sockets)."""

from ipaddress import IPv6Address, IPv6Network

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from zope.interface.verify import verifyObject

from haha.interfaces import IMobilityTransport
from haha.io.udp import UdpTransport
from haha.wire.ipv6 import build_packet

HA = IPv6Address("2001:db8:1::1")
COA = IPv6Address("2001:db8:20::5")
HOME = IPv6Address("2001:db8:1::100")


class _Port:
    def __init__(self):
        self.written = []

    def write(self, data, addr):
        self.written.append((data, addr))

    def stopListening(self):
        return None

    def getHost(self):
        return type("H", (), {"host": "::1", "port": 4000})()


class _Reactor(MemoryReactor):
    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.port = _Port()
        self.protocol = protocol
        return self.port


def _started(**kw):
    r = _Reactor()
    t = UdpTransport(r, **kw)
    got = []
    t.start(got.append)
    return t, r, got


def test_provides_the_transport_interface():
    """UdpTransport provides IMobilityTransport."""
    assert verifyObject(IMobilityTransport, UdpTransport(_Reactor()))


def test_static_map_learning_and_unknown_destinations():
    """A packet goes to its destination's static endpoint; an arriving packet teaches its
    fixed-header source (the care-of address, not the Home Address option); unknown
    destinations are counted drops; multicast fans out to the static peers."""
    t, r, got = _started(peers={HA: ("::1", 5001)})
    to_ha = build_packet(COA, HA, 135, bytes(16), home_address=HOME)
    t.send(to_ha)
    assert r.port.written == [(to_ha, ("::1", 5001))]
    back = build_packet(HA, COA, 135, bytes(16), routing_address=HOME)
    t.send(back)
    assert t.counters["no_route"] == 1
    r.protocol.datagramReceived(to_ha, ("::1", 6000))
    assert got == [to_ha]
    assert t.learned == {COA: ("::1", 6000)} and HOME not in t.learned
    t.send(back)
    assert r.port.written[-1] == (back, ("::1", 6000))
    ra = build_packet(HA, IPv6Address("ff02::1"), 58, bytes(16))
    t.send(ra)
    assert r.port.written[-1] == (ra, ("::1", 5001))


def test_learning_never_overrides_static_and_is_bounded():
    """A static peer stays where the configuration put it; learned entries are bounded, oldest
    forgotten first; learning can be switched off."""
    t, r, _ = _started(peers={HA: ("::1", 5001)}, max_learned=2)
    r.protocol.datagramReceived(build_packet(HA, COA, 59, b""), ("::1", 7777))
    assert t.endpoint_for(HA) == ("::1", 5001)
    for i in range(3):
        src = IPv6Address(f"2001:db8:20::{i + 10}")
        r.protocol.datagramReceived(build_packet(src, HA, 59, b""), ("::1", 7000 + i))
    assert list(t.learned) == [IPv6Address("2001:db8:20::11"), IPv6Address("2001:db8:20::12")]
    t2, r2, _ = _started(learn=False)
    r2.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 7000))
    assert t2.learned == {}


def test_learning_by_octets_moves_counts_and_skips_the_unspecified_source():
    """Learned entries are kept by the source's 16 octets: a node heard again from a new UDP
    endpoint is counted once more and answered there, one heard again from the same endpoint
    is not counted again but becomes the most recently heard, the unspecified source is never
    learned, and ``learned`` is a copy keyed by address (changing it changes nothing)."""
    t, r, _ = _started(max_learned=2)
    other = IPv6Address("2001:db8:20::6")
    r.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 7000))
    r.protocol.datagramReceived(build_packet(other, HA, 59, b""), ("::1", 7001))
    r.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 7000))
    assert t.counters["learned"] == 2
    assert list(t.learned) == [other, COA]  # COA heard last
    r.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 7002))
    assert t.counters["learned"] == 3 and t.learned[COA] == ("::1", 7002)
    back = build_packet(HA, COA, 135, bytes(16), routing_address=HOME)
    t.send(back)
    assert r.port.written[-1] == (back, ("::1", 7002))
    assert t.endpoint_for(COA) == ("::1", 7002)
    r.protocol.datagramReceived(build_packet(IPv6Address("::"), HA, 59, b""), ("::1", 7003))
    assert IPv6Address("::") not in t.learned and t.counters["learned"] == 3
    t.learned.clear()
    assert t.endpoint_for(other) == ("::1", 7001)


def test_malformed_and_receiver_errors():
    """Datagrams that are not IPv6 packets are counted and dropped; a failing receiver is
    counted; invalid outbound packets and sends before start are counted."""
    t, r, got = _started()
    r.protocol.datagramReceived(b"\x45" + bytes(50), ("::1", 1))
    r.protocol.datagramReceived(b"\x60" + bytes(10), ("::1", 1))
    assert t.counters["received_malformed"] == 2 and got == []
    t._receiver = lambda p: 1 / 0
    r.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 1))
    assert t.counters["receiver_errors"] == 1
    t.send(b"junk")
    assert t.counters["send_invalid"] == 1
    u = UdpTransport(_Reactor())
    u.send(build_packet(COA, HA, 59, b""))
    assert u.counters["send_not_started"] == 1


def test_prefix_entries_reach_nodes_never_heard_from():
    """A static prefix entry routes every address inside it (longest prefix first) when no
    address entry or learned source claims it, so a home agent can reach a node it never heard
    from; prefixes take no part in multicast fan-out."""
    t, r, _ = _started(peers={HA: ("::1", 5001),
                              IPv6Network("2001:db8:20::/48"): ("::1", 6100),
                              IPv6Network("2001:db8:20:1::/64"): ("::1", 6101)})
    assert t.endpoint_for(COA) == ("::1", 6100)
    assert t.endpoint_for(IPv6Address("2001:db8:20:1::7")) == ("::1", 6101)
    assert t.endpoint_for(IPv6Address("2001:db8:21::1")) is None
    back = build_packet(HA, COA, 135, bytes(16), routing_address=HOME)
    t.send(back)
    assert r.port.written == [(back, ("::1", 6100))]
    # sent as endpoint_for finds it: the longest prefix, and nothing outside every prefix
    inner = build_packet(HA, IPv6Address("2001:db8:20:1::7"), 135, bytes(16))
    t.send(inner)
    assert r.port.written[-1] == (inner, ("::1", 6101))
    t.send(build_packet(HA, IPv6Address("2001:db8:21::1"), 135, bytes(16)))
    assert len(r.port.written) == 2 and t.counters["no_route"] == 1
    del r.port.written[1:]
    r.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 7000))
    assert t.endpoint_for(COA) == ("::1", 7000)  # what was learned is more precise
    ra = build_packet(HA, IPv6Address("ff02::1"), 58, bytes(16))
    t.send(ra)
    assert r.port.written[-1] == (ra, ("::1", 5001)) and len(r.port.written) == 2


def test_bad_peer_map():
    """Peers must be IPv6Address or IPv6Network keys with a valid UDP port."""
    with pytest.raises(TypeError):
        UdpTransport(_Reactor(), peers={"2001:db8::1": ("::1", 1)})
    with pytest.raises(ValueError):
        UdpTransport(_Reactor(), peers={HA: ("::1", 70000)})


@pytest_twisted.inlineCallbacks
def test_round_trip_over_loopback():
    """Two transports on real loopback ports: a BU travels to the HA, which answers the
    mobile node's care-of address it only learned from that BU. The HA's socket buffers are
    the sizes configured."""
    got_ha, got_mn = [], []
    ha = UdpTransport(reactor, receive_buffer=1 << 21, send_buffer=1 << 20)
    ha.start(got_ha.append)
    assert ha.buffers == {"receive": 1 << 21, "send": 1 << 20}  # root: granted as asked
    mn = UdpTransport(reactor)
    mn.start(got_mn.append)
    try:
        mn.add_peer(HA, ha.address)
        bu = build_packet(COA, HA, 135, bytes(16), home_address=HOME)
        mn.send(bu)
        yield _until(lambda: got_ha)
        assert got_ha == [bu]
        ba = build_packet(HA, COA, 135, bytes(16), routing_address=HOME)
        ha.send(ba)
        yield _until(lambda: got_mn)
        assert got_mn == [ba]
    finally:
        yield ha.stop()
        yield mn.stop()


def _until(predicate, timeout=5.0):
    d = defer.Deferred()
    deadline = reactor.seconds() + timeout

    def check():
        if predicate():
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError("timed out"))
        else:
            reactor.callLater(0.005, check)

    check()
    return d


# -- peers first: a burst of node traffic never delays a peer's packet ----------------------

PEER = IPv6Address("2001:db8:1::2")
PEER_ENDPOINT = ("127.0.0.1", 5002)


class _KernelSocket:
    """The socket under a listening port: ``recvmsg`` takes the datagrams queued "in the
    kernel" one by one, in arrival order, and says when there is none left."""

    def __init__(self):
        self.kernel = []
        self.options = {}

    def setsockopt(self, level, option, value):
        self.options[(level, option)] = value

    def recvmsg_into(self, buffers, ancsize=0):
        if not self.kernel:
            raise BlockingIOError()
        data, addr = self.kernel.pop(0)
        (buffer,) = buffers
        n = min(len(data), len(buffer))
        buffer[:n] = data[:n]
        return n, [], 0, addr


class _ReadablePort(_Port):
    """A listening port with a socket the transport reads itself."""

    def __init__(self, protocol):
        super().__init__()
        self.protocol = protocol
        self.socket = _KernelSocket()

    @property
    def kernel(self):
        return self.socket.kernel

    @kernel.setter
    def kernel(self, value):
        self.socket.kernel = value


class _ClockReactor(MemoryReactorClock):
    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.port = _ReadablePort(protocol)
        return self.port


def _turn(r):
    """One turn of the reactor: the calls due now, not the ones they schedule (Clock.advance
    would run those too)."""
    due = [c for c in r.getDelayedCalls() if c.getTime() <= r.seconds()]
    for c in due:
        r.calls.remove(c)
        c.func(*c.args, **c.kw)


def _node_packet(i):
    return build_packet(IPv6Address(f"2001:db8:20::{i + 1:x}"), HA, 135, bytes(16))


def _busy_transport(cost=0.001, **kw):
    """A transport whose receiver takes ``cost`` seconds of a fake clock per packet."""
    r = _ClockReactor()
    now = [0.0]
    t = UdpTransport(r, peers={PEER: PEER_ENDPOINT}, timer=lambda: now[0], **kw)
    got = []

    def receiver(data):
        now[0] += cost
        got.append(data)

    t.start(receiver)
    return t, r, got


def test_a_peer_packet_is_processed_before_a_backlog_of_node_packets():
    """A peer's HELLO queued in the kernel behind 5,000 Binding Updates is handed to the home
    agent first, and the backlog is processed in slices of at most ``slice_seconds`` (20 ms
    here, 20 packets at 1 ms each), each returning to the reactor; every packet arrives."""
    t, r, got = _busy_transport(read_bytes=1 << 20)  # one read takes the whole queue
    hello = build_packet(PEER, HA, 135, b"hello" + bytes(11))
    r.port.kernel = [(_node_packet(i), ("127.0.0.1", 6000)) for i in range(5000)]
    r.port.kernel.append((hello, PEER_ENDPOINT))
    r.port.doRead()
    assert got[0] == hello
    assert len(got) == 1 + 20 and len(t.queue) == 4980
    # A second HELLO arriving while the backlog is being worked off waits one slice at most.
    _turn(r)
    r.port.kernel.append((hello, PEER_ENDPOINT))
    r.port.doRead()
    assert got[-1] == hello and len(got) == 1 + 40 + 1
    while t.queue:
        _turn(r)
    assert len(got) == 5002 and got.count(hello) == 2
    assert t.counters["received"] == 5002 and 200 <= t.counters["slices_deferred"] < 250


def test_each_read_is_bounded_and_a_deep_peer_packet_still_waits_only_a_few_slices():
    """A sender faster than the reads must not keep one read going (the reactor would block
    while the excess is dropped): each readiness reads at most ``read_bytes`` (256 KiB here,
    4,681 packets of 56 octets). A HELLO 20,000 packets deep is found by the fifth read, having
    waited behind five slices of node traffic (100 packets), not 20,000."""
    t, r, got = _busy_transport()
    hello = build_packet(PEER, HA, 135, b"hello" + bytes(11))
    r.port.kernel = [(_node_packet(i), ("127.0.0.1", 6000)) for i in range(20000)]
    r.port.kernel.append((hello, PEER_ENDPOINT))
    reads = 0
    while hello not in got:
        before = len(r.port.kernel)
        r.port.doRead()
        reads += 1
        assert before - len(r.port.kernel) <= 256 * 1024 // 56 + 1
        _turn(r)
    assert reads == 5 and got.index(hello) <= 5 * 20 + 5
    with pytest.raises(ValueError):
        UdpTransport(_ClockReactor(), read_bytes=0)


def test_timers_run_between_slices_of_a_backlog():
    """The reactor's due timers (sending a HELLO, checking liveness) run between two slices of
    node traffic, not after the whole backlog."""
    t, r, got = _busy_transport()
    r.port.kernel = [(_node_packet(i), ("127.0.0.1", 6000)) for i in range(1000)]
    fired = []
    r.port.doRead()
    r.callLater(0, lambda: fired.append(len(got)))
    while t.queue:
        _turn(r)
    assert fired and fired[0] <= 40


def test_only_the_peer_endpoint_gets_priority_and_the_backlog_is_bounded():
    """A packet claiming a peer's source but arriving from another UDP endpoint waits its turn
    like any node's; beyond ``max_backlog`` unprocessed packets the rest are counted and
    dropped (as the kernel would drop them); a full node backlog never drops a peer's packet."""
    t, r, got = _busy_transport(max_backlog=10)
    forged = build_packet(PEER, HA, 135, b"forged" + bytes(10))
    hello = build_packet(PEER, HA, 135, b"hello" + bytes(11))
    r.port.kernel = [(_node_packet(i), ("127.0.0.1", 6000)) for i in range(9)]
    r.port.kernel += [(forged, ("127.0.0.1", 6666))]
    r.port.kernel += [(_node_packet(i), ("127.0.0.1", 6000)) for i in range(9, 15)]
    r.port.kernel += [(hello, PEER_ENDPOINT)]
    r.port.doRead()
    while t.queue:
        r.advance(0)
    assert got[0] == hello and got.index(forged) == 10
    assert t.counters["dropped_backlog"] == 6 and len(got) == 11
    with pytest.raises(ValueError):
        UdpTransport(_ClockReactor(), max_backlog=0)


def test_datagrams_are_read_into_one_buffer_and_copied_out_at_their_own_size():
    """Each datagram is read into the transport's one buffer (``recvmsg_into``; the socket's
    ``recvmsg``, which makes an 8 KiB object per datagram and leaves the C allocator's heap
    fragmented after a burst, is never called) and handed over as bytes of its own length
    that later reads into the same buffer do not change: a long packet then a short one
    arrive as sent; an empty datagram is counted as malformed."""
    t, r, got = _busy_transport(read_bytes=1 << 20)

    def no_recvmsg(*args):
        raise AssertionError("recvmsg called")

    r.port.socket.recvmsg = no_recvmsg
    long = build_packet(IPv6Address("2001:db8:20::1"), HA, 135, bytes(range(200)))
    short = build_packet(IPv6Address("2001:db8:20::2"), HA, 135, b"\xff" * 8)
    r.port.kernel = [(long, ("127.0.0.1", 6000)), (short, ("127.0.0.1", 6000)),
                     (b"", ("127.0.0.1", 6000))]
    r.port.doRead()
    while t.queue:
        _turn(r)
    assert got == [long, short] and all(type(p) is bytes for p in got)
    assert t.counters["received_malformed"] == 1


class _Socket:
    """A socket's sendto, recording or failing with ``fail`` (an OSError) once."""

    def __init__(self):
        self.sent = []
        self.fail = None

    def setsockopt(self, *args):  # SO_RXQ_OVFL at start
        pass

    def sendto(self, data, addr):
        if self.fail is not None:
            e, self.fail = self.fail, None
            raise e
        self.sent.append((data, addr))


class _SocketPort(_Port):
    def __init__(self):
        super().__init__()
        self.socket = _Socket()


class _SocketReactor(_Reactor):
    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        self.port = _SocketPort()
        self.protocol = protocol
        return self.port


def test_a_host_is_checked_by_twisted_once_then_written_to_directly():
    """The first datagram to a host goes through Twisted's Port.write (which refuses
    hostnames and the wrong address family); later ones, to any port of that host, are one
    sendto of the packet object itself (no copy), counted as sent; a bytearray packet is sent
    as bytes."""
    import errno

    r = _SocketReactor()
    t = UdpTransport(r, peers={HA: ("::1", 5001), IPv6Network("2001:db8:20::/64"): ("::1", 5002)})
    t.start(lambda data: None)
    to_ha = build_packet(COA, HA, 135, bytes(16), home_address=HOME)
    t.send(to_ha)
    assert r.port.written == [(to_ha, ("::1", 5001))] and r.port.socket.sent == []
    t.send(to_ha)
    to_node = build_packet(HA, COA, 135, bytes(16), routing_address=HOME)
    t.send(bytearray(to_node))  # a prefix entry, the same host
    assert r.port.socket.sent == [(to_ha, ("::1", 5001)), (to_node, ("::1", 5002))]
    assert r.port.socket.sent[0][0] is to_ha and type(r.port.socket.sent[1][0]) is bytes
    assert len(r.port.written) == 1 and t.counters["sent"] == 3
    r.port.socket.fail = OSError(errno.ENOBUFS, "No buffer space available")
    t.send(to_ha)
    assert t.counters["send_errors"] == 1 and t.counters["sent"] == 3
    r.port.socket.fail = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    t.send(to_ha)  # as Port.write: ignored without a connection
    assert t.counters["send_errors"] == 1 and t.counters["sent"] == 4


def test_a_datagram_too_large_raises_as_twisted_does():
    """EMSGSIZE from the direct sendto raises Twisted's MessageLengthError, as Port.write
    does, and nothing is counted as sent."""
    import errno

    from twisted.internet.error import MessageLengthError

    r = _SocketReactor()
    t = UdpTransport(r, peers={HA: ("::1", 5001)})
    t.start(lambda data: None)
    to_ha = build_packet(COA, HA, 135, bytes(16), home_address=HOME)
    t.send(to_ha)
    r.port.socket.fail = OSError(errno.EMSGSIZE, "Message too long")
    with pytest.raises(MessageLengthError):
        t.send(to_ha)
    assert t.counters["sent"] == 1


def test_a_source_a_prefix_already_routes_there_is_not_learned():
    """A node inside a prefix entry whose datagram comes from that entry's endpoint is not
    learned (it routes the same without an entry: a load generator's nodes would otherwise
    each hold one); answers to it still go there; one heard from elsewhere is learned, and
    forgotten again when it comes back from the prefix's endpoint, so answers follow it."""
    t, r, got = _started(peers={HA: ("::1", 5001),
                                IPv6Network("2001:db8:20::/48"): ("::1", 6100)})
    for i in range(50):
        node = IPv6Address(f"2001:db8:20::{i + 1:x}")
        r.protocol.datagramReceived(build_packet(node, HA, 59, b""), ("::1", 6100, 0, 0))
    assert len(got) == 50 and t.learned == {} and t.counters["learned"] == 0
    back = build_packet(HA, COA, 135, bytes(16), routing_address=HOME)
    t.send(back)
    assert r.port.written[-1] == (back, ("::1", 6100))
    r.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 7000, 0, 0))
    assert t.learned == {COA: ("::1", 7000)} and t.counters["learned"] == 1
    t.send(back)
    assert r.port.written[-1] == (back, ("::1", 7000))
    r.protocol.datagramReceived(build_packet(COA, HA, 59, b""), ("::1", 6100, 0, 0))
    assert t.learned == {} and t.endpoint_for(COA) == ("::1", 6100)
    t.send(back)
    assert r.port.written[-1] == (back, ("::1", 6100))
    outside = IPv6Address("2001:db8:21::9")  # in no prefix: learned as before
    r.protocol.datagramReceived(build_packet(outside, HA, 59, b""), ("::1", 6100, 0, 0))
    assert t.learned == {outside: ("::1", 6100)}


def test_packets_waiting_and_learned_entries_share_one_endpoint_tuple():
    """Every datagram read brings its own address tuple and host text; the packets waiting in
    the input queue and the learned entries hold one shared ``(host, port)`` per endpoint
    instead, made once (the table of them is bounded)."""
    import haha.io.udp as udp

    t, r, got = _busy_transport(read_bytes=1 << 20, slice_seconds=1.0)
    host = "127.0.0."
    r.port.kernel = [(_node_packet(i), (host + "1", 6000 + i % 2)) for i in range(200)]
    r.port.doRead()
    assert len(got) == 200
    endpoints = {id(ep) for ep in t._learned.values()}
    assert len(t._learned) == 200 and len(endpoints) == 2
    assert {ep for ep in t._learned.values()} == {("127.0.0.1", 6000), ("127.0.0.1", 6001)}
    r.port.kernel = [(_node_packet(i), (host + "1", 6000 + i % 2)) for i in range(200, 300)]
    t.input.slice_seconds = 1e-9  # keep most of them waiting
    r.port.doRead()
    waiting = {id(slot[1]) for slot in t.queue}
    assert len(t.queue) > 50 and waiting <= endpoints
    t._endpoints.clear()
    for i in range(udp.MAX_SHARED_ENDPOINTS + 10):
        t._shared(("127.0.0.1", 10000 + i))
    assert len(t._endpoints) <= udp.MAX_SHARED_ENDPOINTS + 1
