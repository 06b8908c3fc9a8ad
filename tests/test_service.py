"""Services under task.Clock on the in-memory hub: the whole daemon path, ESP included.

Three HomeAgentServices and a MobileNodeService are built from configuration text with keys
generated per test, wired to one MemoryHub (so every packet is really encoded, protected,
parsed and authenticated), and driven by a task.Clock.
"""

from ipaddress import IPv6Address

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from haha.backends.null import NullBackend
from haha.config import home_agent_from_text, mobile_node_from_text
from haha.discovery.static import StaticDiscovery
from haha.interfaces import IControllable
from haha.io.memory import MemoryHub
from haha.security.keys import generate_key_file
from haha.service import HomeAgentService, MobileNodeService
from haha.wire.ipv6 import build_packet
from haha.wire.mh import BindingUpdate, encode_mh
from haha.wire.numbers import IPPROTO_MH

A = IPv6Address
HAS = [A(f"2001:db8:1::{i}") for i in (1, 2, 3)]
HOA = A("2001:db8:1::100")
COA = A("2001:db8:20::100")

HA_TEXT = """\
[home-agent]
address = {address}
home-prefix = 2001:db8:1::/64
configuration = separate-links
home-interface = eth0
preference = {preference}
lifetime = 3
hello-interval = 1
boot-wait = 1
drain-timeout = 5
router-advertisements = no
[peers]
static = {peers}
[peer-keys]
{peer_keys}
[node-keys]
2001:db8:1::100 = {keys}/mn.key
"""

MN_TEXT = """\
[mobile-node]
home-address = 2001:db8:1::100
home-prefix = 2001:db8:1::/64
home-agent = 2001:db8:1::1
home-agents = 2001:db8:1::2 2001:db8:1::3
care-of-address = 2001:db8:20::100
lifetime = 60
[security]
key = {keys}/mn.key
"""


class Network:
    def __init__(self, tmp_path):
        self.clock = Clock()
        self.hub = MemoryHub(self.clock)
        keys = tmp_path
        for a in range(1, 4):
            for b in range(a + 1, 4):
                generate_key_file(str(keys / f"ha{a}{b}.key"))
        generate_key_file(str(keys / "mn.key"))
        self.has = []
        self.ends = []
        self.configs = []
        for i, address in enumerate(HAS, 1):
            others = [j for j in range(1, 4) if j != i]
            text = HA_TEXT.format(
                address=address, preference=10 - i, keys=keys,
                peers=" ".join(str(HAS[j - 1]) for j in others),
                peer_keys="\n".join(f"{HAS[j - 1]} = {keys}/ha{min(i, j)}{max(i, j)}.key"
                                    for j in others))
            config = home_agent_from_text(text, str(tmp_path / f"ha{i}.conf"))
            self.configs.append(config)
            end = self.hub.endpoint(address, name=f"ha{i}")
            self.ends.append(end)
            self.has.append(HomeAgentService.build(
                config, self.clock, backend=NullBackend(), transport=end,
                discovery=StaticDiscovery(config.peers)))
        self.mn_end = self.hub.endpoint(COA, name="mn")
        self.mn = MobileNodeService.build(
            mobile_node_from_text(MN_TEXT.format(keys=keys), str(tmp_path / "mn.conf")),
            self.clock, transport=self.mn_end)

    def run(self, seconds, step=0.1):
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def stop_all(self):
        """Stop every service still running, letting each drain (fixtures' clean-up)."""
        for s in self.has + [self.mn]:
            if s.running:
                s.stopService()
                self.run(6)

    def start(self):
        for s in self.has:
            s.startService()
        self.run(1.5)
        self.mn.startService()
        self.run(1.0)


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    yield n
    n.stop_all()


def test_services_provide_the_control_interface(net):
    """Both services provide IControllable (the control socket and metrics use it)."""
    verifyObject(IControllable, net.has[0])
    verifyObject(IControllable, net.mn)


def test_registration_is_copied_to_the_peers_over_esp(net):
    """The node registers with ha1 over ESP; ha2 and ha3 hold copies naming ha1 as primary."""
    net.start()
    assert net.mn.status()["state"] == "registered"
    assert net.mn.status()["home_agent"] == str(HAS[0])
    views = [s.bindings() for s in net.has]
    assert [v[0]["primary"] for v in views] == [str(HAS[0])] * 3
    assert [v[0]["copy"] for v in views] == [False, True, True]
    c = net.has[0].counters()
    assert c["received.BindingUpdate"] >= 1 and c["sent.BindingAck"] >= 1
    assert c["securityassociationdatabase.auth-failed"] == 0
    # Every signalling packet on the hub was ESP (next header 50 after the header chain).
    assert all(p[6] in (50, 43, 60) for _, p, _ in net.hub.log)


def test_crashed_primary_is_taken_over(net):
    """ha1 vanishes without a word: after its lifetime the best survivor (ha2) takes the node
    over from its copy and the node re-registers with it; ha3 follows."""
    net.start()
    net.ends[0].stop()  # a crash: no goodbye, nothing more sent or received
    net.has[0].adapter.running = False
    net.has[0].adapter.stop_timer()
    net.run(6)
    assert net.mn.status()["home_agent"] == str(HAS[1])
    assert net.has[1].bindings()[0]["copy"] is False
    assert net.has[2].bindings()[0]["primary"] == str(HAS[1])
    assert net.has[1].counters()["event.take-over"] == 1


def test_graceful_stop_drains_then_says_goodbye(net):
    """Stopping ha1 moves its node to a peer first (HASR), then a HELLO with lifetime 0 makes
    the peers drop ha1 at once, not after its lifetime."""
    net.start()
    d = net.has[0].stopService()
    net.run(3)
    assert d.called
    assert net.mn.status()["home_agent"] in (str(HAS[1]), str(HAS[2]))
    assert [p["address"] for p in net.has[1].peers()] == [str(HAS[2])]
    assert net.has[0].counters()["sent.HaSwitchRequest"] >= 1


def test_unprotected_and_forged_signalling_is_dropped(net):
    """A BU in clear and a BU under a bogus SPI are dropped and counted; nothing changes."""
    net.start()
    ha = net.has[0]
    before = ha.bindings()
    rogue = net.hub.endpoint(A("2001:db8:20::666"), name="rogue")
    rogue.start(lambda p: None)
    bu = encode_mh(BindingUpdate(1, lifetime=100), A("2001:db8:1::999"), HAS[0])
    rogue.send(build_packet(A("2001:db8:20::666"), HAS[0], IPPROTO_MH, bu,
                            home_address=A("2001:db8:1::999")))
    rogue.send(build_packet(A("2001:db8:20::666"), HAS[0], 50, b"\x00\x00\x10\x00" + bytes(40),
                            home_address=A("2001:db8:1::999")))
    rogue.send(build_packet(A("2001:db8:20::666"), HAS[0], IPPROTO_MH, bu)[:50])  # cut short
    net.run(0.5)
    c = ha.counters()
    assert c["dropped.unprotected"] == 1
    assert c["dropped.unknown-spi"] == 1
    assert c["dropped.malformed-truncated"] == 1
    assert ha.bindings() == before


def test_operator_switch_and_drain_commands(net):
    """The control commands move a node to a named home agent and drain a home agent."""
    net.start()
    result = net.has[0].command("switch", {"home-address": str(HOA), "target": str(HAS[2])})
    assert result["target"] == str(HAS[2])
    net.run(2)
    assert net.mn.status()["home_agent"] == str(HAS[2])
    net.has[2].command("drain", {})
    net.run(3)
    assert net.has[2].status()["primaries"] == 0
    assert net.mn.status()["home_agent"] in (str(HAS[0]), str(HAS[1]))
    with pytest.raises(ValueError, match="unknown command"):
        net.has[0].command("explode", {})
    with pytest.raises(ValueError, match="missing"):
        net.has[0].command("switch", {})


def test_home_link_with_haha_addresses_greets_peers_with_hello(tmp_path):
    """Draft 3.1 Figure 2: on a home link, home agents with a separate HAHA address cannot
    learn each other from Router Advertisements (those carry the HA address, not the HAHA
    address the peers are keyed and protected by), so they send HELLO between HAHA addresses;
    each sees the other as a live peer."""
    from haha.service import home_agent_settings

    clock = Clock()
    hub = MemoryHub(clock)
    generate_key_file(str(tmp_path / "ha12.key"))
    generate_key_file(str(tmp_path / "mn.key"))
    haha = [A("2001:db8:f::1"), A("2001:db8:f::2")]
    services = []
    for i in (0, 1):
        text = (f"[home-agent]\naddress = {HAS[i]}\nhaha-address = {haha[i]}\n"
                "home-prefix = 2001:db8:1::/64\nconfiguration = home-link\n"
                f"home-interface = eth0\npreference = {10 - i}\nlifetime = 3\n"
                "hello-interval = 1\nboot-wait = 1\nrouter-advertisements = no\n"
                f"[peers]\nstatic = {haha[1 - i]}\n"
                f"[peer-keys]\n{haha[1 - i]} = {tmp_path}/ha12.key\n"
                f"[node-keys]\n2001:db8:1::100 = {tmp_path}/mn.key\n")
        config = home_agent_from_text(text, str(tmp_path / f"ha{i + 1}.conf"))
        assert home_agent_settings(config).send_hello
        services.append(HomeAgentService.build(
            config, clock, backend=NullBackend(), discovery=StaticDiscovery(config.peers),
            transport=hub.endpoint(HAS[i], haha[i], name=f"ha{i + 1}")))
    for s in services:
        s.startService()
    for _ in range(30):
        clock.advance(0.1)
    assert [p["address"] for p in services[0].peers()] == [str(haha[1])]
    assert [p["address"] for p in services[1].peers()] == [str(haha[0])]
    for s in services:
        s.stopService()


class _TunnelRecorder:
    def __init__(self):
        self.endpoints = []

    def set_endpoint(self, home_address, care_of, home_agent, prefixes=(), home_agents=()):
        self.endpoints.append((home_address, care_of, home_agent, tuple(prefixes),
                               frozenset(home_agents)))

    def clear(self):
        self.endpoints.append(None)


def test_mobile_node_tunnel_accepts_every_home_agent_of_its_list(net):
    """The node's tunnel points at the home agent it registered with and is told the whole
    Home Agent list, whose members may all tunnel to it (forwarding from copies, draft 3.2)."""
    recorder = _TunnelRecorder()
    net.mn.adapter.tunnel = recorder
    net.start()
    assert recorder.endpoints[-1] == (HOA, COA, HAS[0], (), frozenset(HAS))


def test_restarted_home_agent_is_heard_again_thanks_to_its_sequence_file(net):
    """ha1 runs long enough to send more than an anti-replay window of packets to each peer,
    crashes, and is started again from the same files: its ESP sequence numbers continue from
    the sequence file, so its peers accept it at once instead of dropping it as too old."""
    net.start()
    net.run(120)  # about 120 HELLOs from ha1 to each peer: well past the 64-packet window
    assert net.has[1].counters()["received.HaHello"] > 100
    net.ends[0].stop()  # crash: no flush, no goodbye
    net.has[0].adapter.running = False
    net.has[0].adapter.stop_timer()
    net.run(6)
    assert [p["address"] for p in net.has[1].peers()] == [str(HAS[2])]
    end = net.hub.endpoint(HAS[0], name="ha1-again")
    again = HomeAgentService.build(net.configs[0], net.clock, backend=NullBackend(),
                                   transport=end, discovery=StaticDiscovery(net.configs[0].peers))
    again.startService()
    net.run(3)
    assert str(HAS[0]) in [p["address"] for p in net.has[1].peers()]
    c = net.has[1].counters()
    assert c["securityassociationdatabase.too-old"] == 0
    assert c["securityassociationdatabase.replay"] == 0
    net.has[0] = again
