"""HELLO carries the configured Mobile Network Prefixes (draft 4.1.1) and peers record them.

From the configuration key ``[home-agent] mobile-network-prefixes`` to the core's settings, into
every HELLO as Mobile Network Prefix options, and into the receiving home agent's Home Agent
list (what ``haha-ctl peers`` shows).
"""

from ipaddress import IPv6Network

import pytest

from haha.config import ConfigError, home_agent_from_text
from haha.core.homeagent import HomeAgent
from haha.core.settings import HomeAgentSettings
from haha.service import home_agent_settings
from haha.testing import Network
from haha.wire.mh import HaHello

BASE = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
home-interface = eth0
{extra}
[security]
mode = none
lab = yes
"""

MNPS = (IPv6Network("2001:db8:100::/48"), IPv6Network("2001:db8:200::/56"))


def test_key_reaches_the_settings():
    """The key is parsed as a list of prefixes and becomes the settings' hello_prefixes;
    without it there are none."""
    c = home_agent_from_text(BASE.format(
        extra="mobile-network-prefixes = 2001:db8:100::/48, 2001:db8:200::/56"), "ha.conf")
    assert c.mobile_network_prefixes == MNPS
    assert home_agent_settings(c).hello_prefixes == MNPS
    plain = home_agent_from_text(BASE.format(extra=""), "ha.conf")
    assert home_agent_settings(plain).hello_prefixes == ()


@pytest.mark.parametrize("value,words", [
    ("2001:db8:100::/48, 2001:db8:100::/48", "twice"),
    (", ".join(f"2001:db8:{i:x}::/48" for i in range(100, 141)), "at most 40"),
    ("not-a-prefix", ""),
])
def test_bad_values_are_located(value, words):
    """A duplicate, too many prefixes, or something not a prefix stops start-up naming the
    file, section, key and line."""
    with pytest.raises(ConfigError) as e:
        home_agent_from_text(BASE.format(extra=f"mobile-network-prefixes = {value}"), "ha.conf")
    err = e.value
    assert (err.path, err.section, err.key, err.line) == (
        "ha.conf", "home-agent", "mobile-network-prefixes", 5)
    assert words in err.message


def test_hello_carries_the_prefixes():
    """Every HELLO the core sends lists the configured prefixes as MNP options."""
    s = HomeAgentSettings(address="2001:db8:1::1", home_prefix="2001:db8:1::/64",
                          peers=["2001:db8:1::2"], hello_prefixes=MNPS)
    out = HomeAgent(s).start(0.0)
    hellos = [e.message for e in out if type(getattr(e, "message", None)) is HaHello]
    assert hellos and all(h.prefixes == MNPS for h in hellos)


def test_peers_record_the_prefixes():
    """In the in-memory network, each home agent's list records the prefixes its peer
    announces."""
    net = Network(seed=3)
    has = net.add_home_agents(2, boot_wait=0, hello_interval=1.0, ha_lifetime=3,
                              hello_prefixes=lambda i: MNPS[i:i + 1])
    net.run_for(2.5)
    assert has[0].machine.peers.get(has[1].identity).prefixes == MNPS[1:]
    assert has[1].machine.peers.get(has[0].identity).prefixes == MNPS[:1]
