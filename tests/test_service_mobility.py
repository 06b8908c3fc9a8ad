"""The daemons' side of movement and of returning home, and what a home agent tells its backend it
owns (tier 2: services on the in-memory hub with ESP, task.Clock).

- ``move care-of=ADDRESS`` (the control command) re-registers with the new care-of address; the
  primary and the copies at its peers show it, and the node's tunnel follows.
- ``home`` deregisters from the home address (RFC 6275 11.5.4, docs/protocol.md 9): every home agent
  deletes the binding, the primary stops proxying, and the node, once deregistered, announces
  its home address on its interface (unsolicited Neighbour Advertisement with Override).
- ``HomeAgentService.build`` builds the backend from a context holding its :class:`Ownership`
  (home prefix, home interface, addresses, state file beside the sequence file) and the
  daemon's transport.
"""

from ipaddress import IPv6Address, IPv6Network

import pytest
from test_service import HAS, HOA, MN_TEXT, Network
from zope.interface import implementer

from haha.backends.common import Ownership
from haha.config import home_agent_from_text, mobile_node_from_text
from haha.interfaces import IDecapsulator, IHomeAnnouncer, IMobileTunnel
from haha.service import (
    HomeAgentService,
    MobileNodeService,
    backend_ownership,
    kernel_state_path,
)

NEW_COA = IPv6Address("2001:db8:21::100")


@implementer(IMobileTunnel, IDecapsulator, IHomeAnnouncer)
class RecordingTunnel:
    """A mobile node's tunnel that records what the daemon asks of it."""

    def __init__(self):
        self.calls = []
        self.home_address = None

    def set_endpoint(self, home_address, care_of, home_agent, prefixes=(), home_agents=()):
        self.home_address = home_address
        self.calls.append(("set_endpoint", care_of, home_agent))

    def clear(self):
        self.home_address = None
        self.calls.append(("clear",))

    def decapsulate(self, packet):
        return False

    def announce_home(self, home_address, interface):
        assert self.home_address is None, "announced while the tunnel was up"
        self.calls.append(("announce_home", home_address, interface))
        return b"na"


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    n.tunnel = RecordingTunnel()
    text = MN_TEXT.format(keys=tmp_path).replace("lifetime = 60\n",
                                                 "lifetime = 60\ninterface = eth0\n")
    n.mn = MobileNodeService.build(mobile_node_from_text(text, str(tmp_path / "mn.conf")),
                                   n.clock, transport=n.mn_end, tunnel=n.tunnel)
    yield n
    n.stop_all()


def _views(net):
    return {str(s.config.address): s.bindings() for s in net.has}


def test_move_command_re_registers_and_the_copies_follow(net):
    """After ``move care-of=NEW`` the node is registered with ha1 at the new address, ha1's
    primary and ha2/ha3's copies name it, and the tunnel was re-pointed there."""
    net.start()
    assert net.mn.status()["state"] == "registered"
    net.mn_end.add_address(NEW_COA)
    assert net.mn.command("move", {"care-of": str(NEW_COA)}) == {"care_of": str(NEW_COA)}
    net.run(3)
    status = net.mn.status()
    assert (status["state"], status["care_of"], status["home_agent"]) == (
        "registered", str(NEW_COA), str(HAS[0]))
    for address, bindings in _views(net).items():
        (b,) = bindings
        assert (b["care_of"], b["primary"]) == (str(NEW_COA), str(HAS[0])), address
    assert net.tunnel.calls[-1] == ("set_endpoint", NEW_COA, HAS[0])
    assert net.has[0].backend.snapshot()["routes"][0]["care_of"] == str(NEW_COA)
    with pytest.raises(ValueError, match="care-of=ADDRESS"):
        net.mn.command("move", {})


def test_home_command_deregisters_everywhere_then_announces_the_home_address(net):
    """``home``: the tunnel goes down first, the deregistration leaves from the home address,
    every home agent deletes the binding, ha1 stops proxying, and only after the BA the node
    announces its home address on its configured interface."""
    net.start()
    assert net.has[0].backend.snapshot()["proxy_nd"] == [[str(HOA), "eth0"]]
    net.mn_end.add_address(HOA)  # on the home link with its home address
    assert net.mn.command("home", {}) == {"state": "deregistering"}
    assert net.tunnel.calls[-1] == ("clear",)
    net.run(3)
    assert net.mn.status()["state"] == "home"
    assert _views(net) == {str(a): [] for a in HAS}
    assert net.has[0].backend.snapshot()["proxy_nd"] == []
    assert net.tunnel.calls[-1] == ("announce_home", HOA, "eth0")
    assert net.mn.counters()["home-na-sent"] == 1
    c = net.has[0].counters()
    assert c["core.bu-deregistered"] == 1 and c["event.binding-deleted"] == 1


def test_returning_home_without_an_interface_says_so(net, tmp_path):
    """A node configured without ``interface`` cannot announce its home address: counted and
    logged, the deregistration itself is unaffected."""
    net.mn = MobileNodeService.build(
        mobile_node_from_text(MN_TEXT.format(keys=tmp_path), str(tmp_path / "mn.conf")),
        net.clock, transport=net.mn_end, tunnel=net.tunnel)
    net.start()
    net.mn_end.add_address(HOA)
    net.mn.command("home", {})
    net.run(3)
    assert net.mn.status()["state"] == "home"
    assert net.mn.counters()["home-na-no-interface"] == 1
    assert not any(c[0] == "announce_home" for c in net.tunnel.calls)


HA_CONF = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = home-link
home-interface = eth0
haha-address = 2001:db8:11::1
[peers]
static = 2001:db8:12::1
[security]
{security}
"""


def test_home_agent_backend_is_told_what_it_owns(tmp_path):
    """build() gives a kernel backend (one with an ``ownership`` slot) its Ownership: home
    prefix, home interface, both addresses, and a state file beside the sequence file; in lab
    mode beside the configuration."""
    (tmp_path / "lib").mkdir()
    config = home_agent_from_text(
        HA_CONF.format(security="mode = none\nlab = yes\nsequence-file = lib/x.seq"),
        str(tmp_path / "ha1.conf"))
    assert kernel_state_path(config) == str(tmp_path / "ha1.state")  # lab: no sequence file
    own = backend_ownership(config)
    assert own == Ownership(IPv6Network("2001:db8:1::/64"), "eth0",
                            frozenset({IPv6Address("2001:db8:1::1"),
                                       IPv6Address("2001:db8:11::1")}),
                            str(tmp_path / "ha1.state"))

    from haha.backends.context import BackendContext
    from haha.backends.null import NullBackend
    from haha.io.memory import MemoryHub
    from twisted.internet.task import Clock

    given = []

    def factory(context):
        given.append(context)
        return NullBackend()

    reactor = Clock()
    transport = MemoryHub(reactor).endpoint(config.address)
    service = HomeAgentService.build(config, reactor=reactor, transport=transport,
                                     discovery=object(), backend_factory=factory)
    [context] = given
    assert isinstance(context, BackendContext) and service.backend is not None
    assert context.ownership == own and context.transport is transport
    assert context.reactor is reactor and context.options is config.backend.options
    # the backend's log lines carry the daemon's address (several daemons in one process)
    assert context.log.namespace == "haha.backends.null"
    assert context.log.observer.identity == str(config.address)


def test_state_file_sits_beside_the_sequence_file(tmp_path):
    """With ESP the state file is the sequence file's name with ``.state``."""
    key = tmp_path / "peer.key"
    from haha.security.keys import generate_key_file

    generate_key_file(str(key))
    config = home_agent_from_text(
        HA_CONF.format(security="sequence-file = ha1-esp.seq") + f"[peer-keys]\n"
        f"2001:db8:12::1 = {key}\n", str(tmp_path / "ha1.conf"))
    assert kernel_state_path(config) == str(tmp_path / "ha1-esp.state")


def test_a_second_home_agent_with_the_same_configuration_is_refused(tmp_path):
    """While the state file is held (the same configuration running), start fails with a
    sentence naming the holder, the backend opened nothing and the transport is stopped
    again; once it is free the service starts and its backend records the run."""
    from twisted.internet.testing import MemoryReactorClock

    from haha.backends.common import StateBusy, StateFile
    from haha.backends.netsys import FakeNetlink
    from haha.backends.tun import TunBackend
    from haha.discovery.static import StaticDiscovery
    from haha.io.memory import MemoryHub
    from haha.io.system import FakeSystem

    config = home_agent_from_text(HA_CONF.format(security="mode = none\nlab = yes"),
                                  str(tmp_path / "ha1.conf"))
    reactor = MemoryReactorClock()
    system = FakeSystem()
    nl = FakeNetlink({"eth0": {"addresses": [IPv6Address("fe80::1")]}}, system=system)
    end = MemoryHub(reactor).endpoint(config.address)
    built = []

    def factory(context):  # what the tun plugin does, with the in-memory seams
        built.append(TunBackend(context.reactor, context.transport, netlink=nl, system=system,
                                ownership=context.ownership))
        return built[-1]

    service = HomeAgentService.build(config, reactor=reactor, transport=end,
                                     discovery=StaticDiscovery(config.peers),
                                     backend_factory=factory)
    [backend] = built
    holder = StateFile(kernel_state_path(config))
    holder.acquire()
    holder.write({"pid": 4242})
    with pytest.raises(StateBusy, match="pid 4242"):
        service.startService()
    assert not end.running and not backend.running and not system.tuns
    holder.release(remove=False)
    service.startService()
    assert backend.running and backend.state is not None
    service.stopService()
    assert not (tmp_path / "ha1.state").exists()
