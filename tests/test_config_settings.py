"""The core's values are validated once, by the core's settings, and every refusal still
stops start-up with file, section, key and line; the checked settings record is the one the
core runs on."""

from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.config import (
    HOME_AGENT_KEYS,
    MOBILE_NODE_KEYS,
    ConfigError,
    home_agent_from_text,
    mobile_node_from_text,
)
from haha.core.settings import HomeAgentSettings, MobileNodeSettings, SettingsError

BASE = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
home-interface = eth0
[security]
mode = none
lab = yes
"""

NODE = """\
[mobile-node]
home-address = 2001:db8:1::100
home-prefix = 2001:db8:1::/64
home-agent = 2001:db8:1::1
care-of-address = 2001:db8:99::100
[security]
mode = none
lab = yes
"""


def _err(text, node=False):
    with pytest.raises(ConfigError) as e:
        (mobile_node_from_text if node else home_agent_from_text)(text, "x.conf")
    return e.value


@pytest.mark.parametrize("key, value, words", [
    ("preference", "70000", "maximum 65535"),
    ("preference", "-1", "minimum 0"),
    ("lifetime", "0", "minimum 1"),
    ("hello-interval", "0.05", "minimum 0.1"),
    ("hello-misses", "1001", "maximum 1000"),
    ("max-binding-lifetime", "300000", "maximum 262140"),
    ("boot-wait", "4000", "maximum 3600"),
    ("configuration", "mesh", "home-link"),
    ("drain-mode", "everywhere", "spread"),
    ("switch-message", "email", "hasr"),
    ("switch-rate", "0", "minimum 0.1"),
    ("mobile-network-prefixes", ", ".join(f"2001:db8:{i:x}::/48" for i in range(100, 141)),
     "at most 40"),
    ("mobile-network-prefixes", "2001:db8:50::/48, 2001:db8:50::/48", "twice"),
])
def test_home_agent_core_values_are_refused_by_the_settings_and_located(key, value, words):
    """Each core value out of bounds is refused by HomeAgentSettings (one rule) and reported
    at its file, section, key and line with the key's name."""
    text = BASE.replace("home-interface", f"{key} = {value}\nhome-interface")
    e = _err(text)
    assert (e.path, e.section, e.key, e.line) == ("x.conf", "home-agent", key, 4)
    assert words in e.message
    assert "_" not in e.message.split("(")[0].replace("home_agent", "")  # no field names


def test_peers_keys_are_located_in_peers():
    """Core values of [peers] are located there: max-candidates beyond the settings' bound,
    the home agent's own address as a static peer."""
    e = _err(BASE + "[peers]\nmax-candidates = 2000000\n")
    assert (e.section, e.key, e.line) == ("peers", "max-candidates", 9)
    e = _err(BASE.replace("home-interface", "haha-address = 2001:db8:f::1\nhome-interface")
             + "[peers]\nstatic = 2001:db8:1::1\n")
    assert (e.section, e.key, e.line) == ("peers", "static", 10) and "own address" in e.message


def test_mobile_node_core_values_are_located():
    """A mobile node's core values are refused by MobileNodeSettings at their own keys: the
    lifetime bound, a home agent listed twice, a home address outside the home prefix."""
    e = _err(NODE.replace("[security]", "lifetime = 3\n[security]"), node=True)
    assert (e.section, e.key, e.line) == ("mobile-node", "lifetime", 6)
    assert "minimum 4" in e.message
    e = _err(NODE.replace("[security]", "home-agents = 2001:db8:1::2, 2001:db8:1::2\n"
                          "[security]"), node=True)
    assert (e.key, e.line) == ("home-agents", 6) and "twice" in e.message
    e = _err(NODE.replace("home-address = 2001:db8:1::100", "home-address = ff02::1"),
             node=True)
    assert (e.key, e.line) == ("home-address", 2) and "unicast" in e.message


def test_a_map_entry_is_located_on_its_own_line():
    """A refused [mobile-routers] entry is located on that entry's key and line."""
    text = BASE + "[mobile-routers]\n2001:db8:1::100 = 2001:db8:100::/48\n" \
        "2001:db8:9::100 = 2001:db8:101::/48\n"
    e = _err(text)
    assert (e.section, e.key, e.line) == ("mobile-routers", "2001:db8:9::100", 10)
    assert "outside" in e.message


def test_the_settings_refusal_is_the_configuration_error():
    """The message of a located error is the settings' own refusal, field names turned into
    key names: one rule, stated once."""
    with pytest.raises(SettingsError) as direct:
        HomeAgentSettings(address="2001:db8:1::1", home_prefix="2001:db8:1::/64",
                          address_takeover=True)
    e = _err(BASE.replace("home-interface", "address-takeover = yes\nhome-interface"))
    assert e.message == direct.value.detail.replace("haha_address", "haha-address")
    assert e.key == "address-takeover"


def test_every_settings_field_read_from_a_file_is_in_the_key_table():
    """The tables that locate settings errors name real fields of the settings records."""
    ha_fields = set(HomeAgentSettings.__dataclass_fields__)
    mn_fields = set(MobileNodeSettings.__dataclass_fields__)
    assert set(HOME_AGENT_KEYS) <= ha_fields and set(MOBILE_NODE_KEYS) <= mn_fields


def test_configuration_carries_the_settings_the_core_runs_on():
    """The parsed configuration holds the core's checked settings record, under the key
    names too, and the service's machines run on that very record (no second translation)."""
    from twisted.internet.testing import MemoryReactorClock

    from haha.io.memory import MemoryHub
    from haha.service import HomeAgentService, MobileNodeService

    c = home_agent_from_text(BASE.replace("home-interface", "lifetime = 60\nhome-interface")
                             + "[mobile-routers]\n2001:db8:1::100 = 2001:db8:100::/48\n")
    assert isinstance(c.settings, HomeAgentSettings)
    assert c.lifetime == c.settings.ha_lifetime == 60
    assert c.configuration == c.settings.kind == "home-link"
    assert c.settings.haha_address is None and c.haha_address == c.address
    assert c.settings.implicit_prefixes == {
        IPv6Address("2001:db8:1::100"): (IPv6Network("2001:db8:100::/48"),)}
    reactor = MemoryReactorClock()
    hub = MemoryHub(reactor)
    service = HomeAgentService.build(c, reactor, transport=hub.endpoint(c.address))
    assert service.machine.settings is c.settings
    n = mobile_node_from_text(NODE)
    assert isinstance(n.settings, MobileNodeSettings)
    node = MobileNodeService.build(n, reactor, transport=hub.endpoint(n.home_address))
    assert node.machine.settings is n.settings


@pytest.mark.parametrize("key, value", [
    ("address", "ff02::1"), ("address", "::1"), ("address", "::"),
    ("haha-address", "ff05::2"), ("haha-address", "::1"),
])
def test_addresses_the_core_refuses_are_located(key, value):
    """A home agent address that is not unicast (multicast, loopback, unspecified) is refused
    once, by the settings, at its key and line: loopback too, which the INI reader's own check
    used to let through to start-up."""
    text = BASE.replace("home-interface", f"{key} = {value}\nhome-interface") \
        if key != "address" else BASE.replace("address = 2001:db8:1::1", f"address = {value}")
    e = _err(text)
    assert (e.section, e.key) == ("home-agent", key) and "unicast" in e.message
    assert e.line == (2 if key == "address" else 4)


def test_static_peers_the_core_refuses_are_located():
    """A static peer that is not a unicast address is refused at [peers] static."""
    e = _err(BASE + "[peers]\nstatic = 2001:db8:1::2, ff02::2\n")
    assert (e.section, e.key, e.line) == ("peers", "static", 9) and "unicast" in e.message
