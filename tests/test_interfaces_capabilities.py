"""Optional capabilities are declared interfaces, and the daemon asks with ``providedBy``.

- The built-in objects provide the capabilities they have (``verifyObject`` on instances, so
  attributes such as ``counters`` and ``sequence_store`` are checked too).
- An object that merely has a method of the same name, without declaring the capability, is
  not called: the decision is the declaration, not an accident of naming.
"""

from collections import Counter
from ipaddress import IPv6Address, IPv6Network

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from haha.backends.addresses import hold_address
from haha.backends.netlink import NetlinkBackend
from haha.backends.netsys import FakeNetlink
from haha.backends.null import NullBackend
from haha.backends.tun import MobileTunnel, TunBackend
from haha.core.effects import HoldAddress
from haha.interfaces import (
    IAddressHolder,
    IAnycastJoin,
    ICounterSource,
    IDecapsulator,
    IForwardingBackend,
    IHomeAnnouncer,
    IKernelTunnels,
    IKnownSpi,
    IMobileTunnel,
    IMobilityTransport,
    ISecurityAssociations,
    ISequencePersistence,
    IStartStop,
    ITieredLimiter,
)
from haha.io.memory import MemoryHub
from haha.io.raw import RawTransport
from haha.io.system import FakeSystem

A = IPv6Address
HA = A("2001:db8:1::1")


class _Sender:
    counters = {}

    def send(self, packet, interface=None):
        pass


def test_built_in_objects_provide_their_capabilities(tmp_path):
    """Each built-in provides, as an instance, every capability the daemon asks it for."""
    from haha.security.admission import Admission
    from haha.security.policy import SecurityPolicy
    from haha.security.ratelimit import RateLimiter
    from haha.security.sadb import SecurityAssociationDatabase
    from haha.security.seqstore import SequenceStore

    system = FakeSystem()
    raw = RawTransport(MemoryReactor(), system=system)
    for interface in (IMobilityTransport, IAnycastJoin, IKernelTunnels, ICounterSource):
        verifyObject(interface, raw)
    nl = FakeNetlink(system=system)
    tun = TunBackend(MemoryReactor(), _Sender(), netlink=nl, system=system)
    for interface in (IForwardingBackend, IDecapsulator, IAddressHolder):
        verifyObject(interface, tun)
    for backend in (NetlinkBackend(netlink=nl), NullBackend()):
        verifyObject(IForwardingBackend, backend)
        verifyObject(IAddressHolder, backend)
    mobile = MobileTunnel(MemoryReactor(), _Sender(), netlink=nl, system=system)
    for interface in (IMobileTunnel, IStartStop, IDecapsulator, IHomeAnnouncer):
        verifyObject(interface, mobile)
    sadb = SecurityAssociationDatabase(sequence_store=SequenceStore(str(tmp_path / "x.seq")))
    for interface in (ISecurityAssociations, ISequencePersistence, IKnownSpi, ICounterSource):
        verifyObject(interface, sadb)
    verifyObject(ITieredLimiter, Admission())
    for source in (Admission(), RateLimiter(), SecurityPolicy(), sadb.sequence_store,
                   MemoryHub(Clock()).endpoint(HA)):
        verifyObject(ICounterSource, source)


class _LookAlikeBackend(NullBackend):
    """A backend with hold_address/release_address methods, but declaring only
    IForwardingBackend (a third party's that happens to use the names)."""

    def __init__(self):
        super().__init__()
        self.called = []

    def hold_address(self, address, interface):
        self.called.append(("hold", address))

    def release_address(self, address, interface=None):
        self.called.append(("release", address))



def test_address_holding_follows_the_declaration():
    """A HoldAddress duty reaches a backend that declares IAddressHolder (on the home link or
    as a route) and is counted as unsupported, without a call, for one that does not."""
    from zope.interface import implementer_only

    @implementer_only(IForwardingBackend)  # not NullBackend's IAddressHolder
    class Undeclared(_LookAlikeBackend):
        pass

    counters = Counter()
    undeclared = Undeclared()
    hold_address(undeclared, HoldAddress(HA, True, on_link=True), "eth0", counters)
    assert counters["duty.unsupported"] == 1 and undeclared.called == []
    declared = NullBackend()
    hold_address(declared, HoldAddress(HA, True, on_link=True), "eth0", counters)
    assert declared.held == {HA: "eth0"}
    hold_address(declared, HoldAddress(HA, True, on_link=False), "eth0", counters)
    hold_address(declared, HoldAddress(HA, False, on_link=False), "eth0", counters)
    assert declared.held == {} and counters["duty.unsupported"] == 1


def test_decapsulation_follows_the_declaration():
    """Inbound IPv6-in-IPv6 goes to a decapsulator that declares IDecapsulator; one that
    only has a ``decapsulate`` method is not called and the packet is dropped and counted
    (``tunnel-without-backend``)."""
    from haha.core.homeagent import HomeAgent
    from haha.core.settings import HomeAgentSettings
    from haha.protocol import HomeAgentAdapter
    from haha.security.policy import SecurityPolicy
    from haha.wire.ipv6 import build_packet
    from haha.wire.numbers import IPPROTO_IPV6

    class LookAlike:
        def __init__(self):
            self.got = []

        def decapsulate(self, packet):
            self.got.append(packet)
            return True

    @implementer(IDecapsulator)
    class Declared(LookAlike):
        pass

    machine = HomeAgent(HomeAgentSettings(address=HA, home_prefix=IPv6Network("2001:db8:1::/64")))
    inner = build_packet(A("2001:db8:1::100"), A("2001:db8:30::1"), 59, b"")
    data = build_packet(A("2001:db8:20::5"), HA, IPPROTO_IPV6, inner)
    for backend, delivered in ((LookAlike(), False), (Declared(), True)):
        adapter = HomeAgentAdapter(machine, _Sender(), Clock(), machine.settings.numbers,
                                   SecurityPolicy(mode="none", lab=True), backend=backend)
        adapter.running = True
        adapter.packet_received(data)
        assert (backend.got == [data]) is delivered
        assert adapter.counters["tunnelled-in"] == int(delivered)
        assert adapter.counters["dropped.tunnel-without-backend"] == int(not delivered)


def test_anycast_is_joined_only_through_a_declared_capability():
    """The service joins the Home-Agents anycast address through a transport declaring
    IAnycastJoin; a transport with a look-alike ``join_anycast`` is left alone."""
    from haha.config import home_agent_from_text
    from haha.discovery.static import StaticDiscovery
    from haha.service import HomeAgentService

    text = ("[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
            "home-interface = eth0\nboot-wait = 0\ndrain-on-stop = no\n"
            "[security]\nmode = none\nlab = yes\n")
    reactor = MemoryReactorClock()
    cfg = home_agent_from_text(text, "ha.conf")
    hub = MemoryHub(reactor)
    for declared in (False, True):
        end = hub.endpoint(A(f"2001:db8:1::{1 + declared}"))
        joined = []

        def join(address, interface, joined=joined):
            joined.append((address, interface))

        end.join_anycast = join
        end.leave_anycast = lambda address, interface: None
        if declared:
            from zope.interface import alsoProvides
            alsoProvides(end, IAnycastJoin)
        s = HomeAgentService.build(cfg, reactor, backend=NullBackend(), transport=end,
                                   discovery=StaticDiscovery(cfg.peers))
        s.startService()
        expected = [(A("2001:db8:1::fdff:ffff:ffff:fffe"), "eth0")] if declared else []
        assert joined == expected
        assert s.status()["anycast"] == ([str(a) for a in expected[0]] if declared else None)
        s.stopService()


@pytest.mark.parametrize("declared", [False, True])
def test_kernel_tunnels_are_asked_for_only_through_a_declared_capability(declared):
    """The netlink backend's start asks the transport to leave IPv6-in-IPv6 to the kernel
    when the transport declares IKernelTunnels, and not when it only has the method."""

    class Transport(_Sender):
        asked = []

        def leave_tunnels_to_kernel(self, enabled=True):
            self.asked.append(enabled)

    transport = implementer(IKernelTunnels)(Transport)() if declared else Transport()
    transport.asked = []
    nl = FakeNetlink()
    nl.load_ip6_tunnel()
    b = NetlinkBackend(transport=transport, netlink=nl, kernel_config=lambda: "")
    b.start()
    assert transport.asked == ([True] if declared else [])
    b.stop()


def test_a_forwarding_wrapper_can_declare_what_it_wraps():
    """A transport wrapper that forwards to the raw transport (through ``__getattr__``)
    provides the raw transport's optional capabilities once it declares them with
    provide_what_inner_provides, and only those the wrapped object has."""
    from haha.interfaces import provide_what_inner_provides

    @implementer(IMobilityTransport)
    class Wrapper:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

    raw = RawTransport(MemoryReactor(), system=FakeSystem())
    plain = Wrapper(raw)
    assert not IAnycastJoin.providedBy(plain)  # a method found by forwarding is not enough
    wrapped = provide_what_inner_provides(Wrapper(raw), raw, IAnycastJoin, IKernelTunnels,
                                          IDecapsulator)
    assert IAnycastJoin.providedBy(wrapped) and IKernelTunnels.providedBy(wrapped)
    assert not IDecapsulator.providedBy(wrapped)  # the raw transport does not decapsulate
    verifyObject(IAnycastJoin, wrapped)
    memory = MemoryHub(Clock()).endpoint(HA)
    assert not IAnycastJoin.providedBy(
        provide_what_inner_provides(Wrapper(memory), memory, IAnycastJoin))
