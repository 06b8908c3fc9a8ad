"""Settings of the core machines: defaults, conversions and refusals naming the field."""

from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.core.settings import HomeAgentSettings, MobileNodeSettings, SettingsError

HA = dict(address="2001:db8:1::1", home_prefix="2001:db8:1::/64")


def test_home_agent_defaults_and_conversions():
    """Strings become addresses and prefixes, mappings are frozen, sequences become tuples."""
    s = HomeAgentSettings(**HA, peers=["2001:db8:2::1"],
                          mobile_routers={"2001:db8:1::50": ["2001:db8:50::/48"]})
    assert s.address == IPv6Address("2001:db8:1::1")
    assert s.home_prefix == IPv6Network("2001:db8:1::/64")
    assert s.peers == (IPv6Address("2001:db8:2::1"),)
    assert s.mobile_routers[IPv6Address("2001:db8:1::50")] == (IPv6Network("2001:db8:50::/48"),)
    with pytest.raises(TypeError):
        s.mobile_routers[IPv6Address("2001:db8:1::51")] = ()
    assert s.signalling_address == s.address
    assert s.proxies_nd and not s.advertises_prefix


def test_haha_address_is_the_signalling_address():
    """With a HAHA address, peers know the home agent by it (draft section 2)."""
    s = HomeAgentSettings(**HA, haha_address="2001:db8:ff::1", kind="no-home-link")
    assert s.signalling_address == IPv6Address("2001:db8:ff::1")
    assert s.advertises_prefix and not s.proxies_nd


@pytest.mark.parametrize(
    "key, value",
    [
        ("kind", "mesh"),
        ("address", "10.0.0.1"),
        ("address", "ff02::1"),
        ("home_prefix", "2001:db8:1::1/64"),
        ("preference", 70000),
        ("preference", -1),
        ("preference", 1.5),
        ("ha_lifetime", 0),
        ("hello_interval", 0),
        ("hello_interval", 0.05),
        ("boot_wait", 3601),
        ("hello_prefixes", [f"2001:db8:{i:x}::/48" for i in range(100, 141)]),
        ("hello_prefixes", ["2001:db8:50::/48", "2001:db8:50::/48"]),
        ("max_binding_lifetime", 300000),
        ("peers", ["2001:db8:1::1"]),
        ("peers", ["2001:db8:2::1", "2001:db8:2::1"]),
        ("peers", "2001:db8:2::1"),
        ("mobile_routers", {"2001:db8:9::1": ["2001:db8:50::/48"]}),
        ("biu_max_timeout", 0.5),
        ("drain", "everywhere"),
        ("switch_message", "email"),
        ("take_over", "yes"),
        ("numbers", "haha-00"),
    ],
)
def test_home_agent_refusals_name_the_field(key, value):
    """Every bad value is refused with a SettingsError whose ``field`` is the key."""
    with pytest.raises(SettingsError) as e:
        HomeAgentSettings(**{**HA, key: value})
    assert e.value.field.startswith(key)


def test_mobile_node_settings():
    """A mobile node's home address must be in its home prefix; only routers have prefixes."""
    m = MobileNodeSettings(home_address="2001:db8:1::10", home_prefix="2001:db8:1::/64",
                           home_agents=["2001:db8:1::1"])
    assert m.home_agents == (IPv6Address("2001:db8:1::1"),)
    with pytest.raises(SettingsError) as e:
        MobileNodeSettings(home_address="2001:db8:2::10", home_prefix="2001:db8:1::/64")
    assert e.value.field == "home_address"
    with pytest.raises(SettingsError) as e:
        MobileNodeSettings(home_address="2001:db8:1::10", home_prefix="2001:db8:1::/64",
                           prefixes=["2001:db8:50::/48"])
    assert e.value.field == "prefixes"
    with pytest.raises(SettingsError) as e:
        MobileNodeSettings(home_address="2001:db8:1::10", home_prefix="2001:db8:1::/64",
                           refresh_fraction=1.0)
    assert e.value.field == "refresh_fraction"


def test_a_peer_may_be_neither_of_the_home_agents_own_addresses():
    """With a HAHA address of its own, the home agent address is refused as a peer too."""
    for own in ("2001:db8:1::1", "2001:db8:ff::1"):
        with pytest.raises(SettingsError) as e:
            HomeAgentSettings(**HA, haha_address="2001:db8:ff::1", peers=[own])
        assert e.value.field == "peers" and own in e.value.detail
