"""Configuration: every kind of mistake stops with file, section, key and line."""

import os
from ipaddress import IPv6Network

import pytest

from haha.config import (
    ConfigError,
    home_agent_from_text,
    load_home_agent,
    load_mobile_node,
    mobile_node_from_text,
)
from haha.inifile import parse_ini

BASE = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
home-interface = eth0
[security]
mode = none
lab = yes
"""


def ha(text, path="ha.conf"):
    return home_agent_from_text(text, path)


def err(text, path="ha.conf", node=False):
    with pytest.raises(ConfigError) as e:
        (mobile_node_from_text if node else home_agent_from_text)(text, path)
    return e.value


def test_minimal_home_agent_defaults():
    """A minimal file gives the documented defaults."""
    c = ha(BASE)
    assert str(c.address) == "2001:db8:1::1"
    assert c.haha_address == c.address
    assert c.configuration == "home-link"
    assert (c.preference, c.lifetime, c.hello_interval) == (0, 1800, 10.0)
    assert c.backend.name == "null" and c.discovery.name == "static"
    assert c.numbers.hello == 200 and c.numbers.opt_bce_info == 201
    assert c.transport.kind == "raw"


def test_missing_required_key_is_located():
    """A missing required key names the section and its header line."""
    e = err("[home-agent]\naddress = 2001:db8:1::1\n")
    assert (e.path, e.section, e.key, e.line) == ("ha.conf", "home-agent", "home-prefix", 1)
    assert "required" in str(e) and str(e).startswith("ha.conf:1:")


def test_bad_address_is_located():
    """A malformed address names its key and line."""
    e = err("[home-agent]\nhome-prefix = 2001:db8:1::/64\naddress = 2001:db8::zz\n")
    assert (e.section, e.key, e.line) == ("home-agent", "address", 3)
    assert "IPv6 address" in e.message


def test_prefix_with_host_bits_refused():
    """A prefix with host bits set is refused rather than silently masked."""
    e = err("[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::1/64\n")
    assert (e.key, e.line) == ("home-prefix", 3)


def test_prefix_mismatch():
    """On a home link the HA address must be on the home prefix."""
    e = err("[home-agent]\naddress = 2001:db8:2::1\nhome-prefix = 2001:db8:1::/64\n")
    assert (e.key, e.line) == ("address", 2) and "outside" in e.message


def test_no_home_link_allows_outside_address():
    """Without a home link (draft 3.2) the address is a HAHA address anywhere."""
    c = ha("[home-agent]\naddress = 2001:db8:ff::1\nhome-prefix = 2001:db8:1::/64\n"
           "configuration = no-home-link\n[security]\nmode = none\nlab = yes\n")
    assert c.configuration == "no-home-link" and c.haha_address == c.address


def test_unknown_key_suggests():
    """A typo is an unknown key, with the closest known key suggested."""
    e = err(BASE.replace("[security]", "prefrence = 3\n[security]"))
    assert e.key == "prefrence" and "did you mean 'preference'" in e.message and e.line == 5


def test_unknown_section_suggests():
    """A misspelt section is refused with a suggestion."""
    e = err(BASE + "[peer]\nstatic = 2001:db8:1::2\n")
    assert e.section == "peer" and "did you mean [peers]" in e.message and e.line == 8


def test_duplicate_key_and_section():
    """A key or a section given twice is an error naming both lines."""
    e = err(BASE + "[security]\n")
    assert "twice" in e.message and e.line == 8
    e = err(BASE.replace("home-prefix", "address = 2001:db8:1::2\nhome-prefix"))
    assert e.key == "address" and "first at line 2" in e.message


def test_out_of_range_integer():
    """Numbers out of range are refused with the range."""
    e = err(BASE.replace("[security]", "preference = 70000\n[security]"))
    assert e.key == "preference" and "65535" in e.message


def test_hello_interval_must_be_below_lifetime():
    """HELLOs slower than the lifetime would make peers flap: refused."""
    e = err(BASE.replace("[security]", "lifetime = 5\nhello-interval = 5\n[security]"))
    assert e.key == "hello-interval"


def test_security_none_needs_lab_flag():
    """security = none without lab = yes stops start-up."""
    e = err(BASE.replace("lab = yes\n", ""))
    assert (e.section, e.key) == ("security", "mode") and "lab = yes" in e.message


def test_static_peer_needs_key_under_esp():
    """With ESP every static peer needs a key file."""
    e = err("[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
            "[peers]\nstatic = 2001:db8:1::2\n")
    assert (e.section, e.key, e.line) == ("peers", "static", 5)


def test_peer_cannot_be_self():
    """Listing the home agent's own address as a peer is a mistake."""
    e = err(BASE + "[peers]\nstatic = 2001:db8:1::1\n")
    assert e.key == "static" and "own address" in e.message


def test_key_file_permissions(tmp_path):
    """Key files readable by group or others, or unreadable, stop start-up."""
    key = tmp_path / "ha2.key"
    key.write_text("00" * 32)
    os.chmod(key, 0o644)
    text = ("[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
            "[peers]\nstatic = 2001:db8:1::2\n[peer-keys]\n2001:db8:1::2 = ha2.key\n"
            "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n")
    conf = tmp_path / "ha1.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_home_agent(str(conf))
    assert (e.value.section, e.value.key, e.value.line) == ("peer-keys", "2001:db8:1::2", 7)
    assert "0644" in e.value.message and "chmod 600" in e.value.message
    os.chmod(key, 0o600)
    c = load_home_agent(str(conf))
    assert c.security.peer_keys[c.peers[0]].path == str(key)
    os.unlink(key)
    with pytest.raises(ConfigError) as e:
        load_home_agent(str(conf))
    assert "cannot read key file" in e.value.message and e.value.line == 7


def test_unreadable_config_file(tmp_path):
    """A missing configuration file is a located error, not a traceback."""
    with pytest.raises(ConfigError) as e:
        load_home_agent(str(tmp_path / "nope.conf"))
    assert "cannot read configuration" in str(e.value)


def test_numbers_profile_override_and_refusal():
    """[numbers] overrides the profile; a taken or reused number is refused and located."""
    c = ha(BASE + "[numbers]\nhello = 210\nopt-bce-info = 220\n")
    assert c.numbers.hello == 210 and c.numbers.opt_bce_info == 220
    e = err(BASE + "[numbers]\nhello = 201\n")
    assert (e.section, e.key, e.line) == ("numbers", "hello", 9) and "reuses" in e.message
    e = err(BASE + "[numbers]\nopt-bce-info = 10\n")
    assert e.key == "opt-bce-info" and "assigned" in e.message


def test_mobile_routers_map():
    """[mobile-routers] maps home addresses to authorised prefixes, each checked."""
    c = ha(BASE + "[mobile-routers]\n2001:db8:1::100 = 2001:db8:100::/48, 2001:db8:101::/48\n")
    (hoa, prefixes), = c.mobile_routers.items()
    assert str(hoa) == "2001:db8:1::100" and [str(p) for p in prefixes] == [
        "2001:db8:100::/48", "2001:db8:101::/48"]
    e = err(BASE + "[mobile-routers]\n2001:db8:9::100 = 2001:db8:100::/48\n")
    assert e.key == "2001:db8:9::100" and "outside" in e.message
    e = err(BASE + "[mobile-routers]\n2001:db8:1::100 = 2001:db8:100::1/48\n")
    assert e.key == "2001:db8:1::100" and e.line == 9


def test_plugin_section_for_other_plugin_refused():
    """A [backend:X] section while backend = Y is almost certainly a mistake."""
    e = err(BASE + "[backend:tun]\ndevice = haha0\n")
    assert e.section == "backend:tun" and "backend = null" in e.message


def test_raw_transport_on_a_home_link_needs_its_interface():
    """Proxy ND and RAs need the home interface: a home-link HA on raw sockets must name it."""
    e = err("[home-agent]\naddress = 2001:db8:1::1\nhome-prefix = 2001:db8:1::/64\n"
            "[security]\nmode = none\nlab = yes\n")
    assert (e.section, e.key) == ("home-agent", "home-interface")


def test_udp_transport_needs_listen():
    """The UDP transport needs udp-listen; peers map addresses to HOST:PORT."""
    e = err(BASE + "[transport]\nkind = udp\n")
    assert (e.section, e.key) == ("transport", "udp-listen")
    c = ha(BASE + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n"
           "[udp-peers]\n2001:db8:1::2 = 127.0.0.1:7002\n")
    assert c.transport.udp_listen == ("127.0.0.1", 7001)
    assert list(c.transport.udp_peers.values()) == [("127.0.0.1", 7002)]
    e = err(BASE + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:x\n")
    assert e.key == "udp-listen"
    c = ha(BASE + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n"
           "[udp-peers]\n2001:db8:20::/48 = 127.0.0.1:7003\n")
    assert c.transport.udp_peers == {IPv6Network("2001:db8:20::/48"): ("127.0.0.1", 7003)}
    e = err(BASE + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n"
            "[udp-peers]\n2001:db8:20::1/48 = 127.0.0.1:7003\n")
    assert (e.section, e.key) == ("udp-peers", "2001:db8:20::1/48")


def test_socket_buffers_and_learned_map_are_configurable():
    """[transport] receive-buffer, send-buffer and udp-learned reach the transport the service
    builds; defaults are sized for many nodes; out-of-range values name the key."""
    from twisted.internet.testing import MemoryReactor

    from haha.service import build_transport

    udp = BASE + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n"
    c = ha(udp)
    assert (c.transport.receive_buffer, c.transport.send_buffer,
            c.transport.udp_learned) == (32 << 20, 0, 262144)
    c = ha(udp + "receive-buffer = 1048576\nsend-buffer = 65536\nudp-learned = 10\n")
    t = build_transport(c, MemoryReactor())
    assert (t.receive_buffer, t.send_buffer, t.max_learned) == (1048576, 65536, 10)
    assert (ha(udp + "receive-buffer = 0\n").transport.receive_buffer) == 0
    e = err(udp + "udp-learned = 0\n")
    assert (e.section, e.key) == ("transport", "udp-learned")
    e = err(udp + "receive-buffer = -1\n")
    assert (e.section, e.key) == ("transport", "receive-buffer")


def test_input_queue_is_configurable_on_both_transports():
    """[transport] max-backlog, max-per-source and supersede reach the input queue of the UDP
    and of the raw transport the service builds; the defaults hold a burst of 100,000 nodes;
    a bad value stops start-up naming section, key and line."""
    from twisted.internet.testing import MemoryReactor

    from haha.service import build_transport

    udp = BASE + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:7001\n"
    t = ha(udp).transport
    assert (t.max_backlog, t.max_per_source, t.supersede) == (131072, 1024, True)
    keys = "max-backlog = 500\nmax-per-source = 7\nsupersede = no\n"
    raw = BASE + "[transport]\nkind = raw\n" + keys
    for text in (udp + keys, raw):
        c = ha(text)
        q = build_transport(c, MemoryReactor(), "eth0").input
        assert (q.max_backlog, q.max_per_source, q.supersede) == (500, 7, False)
    for key, bad in (("max-backlog", "0"), ("max-per-source", "-3"), ("supersede", "maybe")):
        e = err(udp + f"{key} = {bad}\n")
        assert (e.section, e.key, e.line) == ("transport", key, udp.count("\n") + 1)


def test_mobile_node_config():
    """A mobile router's file: prefixes need mobile-router = yes; home address in prefix."""
    text = ("[mobile-node]\nhome-address = 2001:db8:1::100\nhome-prefix = 2001:db8:1::/64\n"
            "home-agent = 2001:db8:1::1\ncare-of-address = 2001:db8:99::100\n"
            "mobile-router = yes\nprefixes = 2001:db8:100::/48\n"
            "[security]\nmode = none\nlab = yes\n")
    c = mobile_node_from_text(text)
    assert c.mobile_router and [str(p) for p in c.prefixes] == ["2001:db8:100::/48"]
    assert c.home_agents == (c.home_agent,)
    e = err(text.replace("mobile-router = yes\n", ""), node=True)
    assert e.key == "prefixes"
    e = err(text.replace("2001:db8:1::100", "2001:db8:2::100"), node=True)
    assert e.key == "home-address" and "outside" in e.message


def test_continuation_and_comments():
    """Indented lines continue a value; comments after whitespace are stripped."""
    s = parse_ini("[a]\nk = one,  # first\n  two ; second\n")
    assert s["a"].get_list("k") == ("one", "two")


def test_shipped_examples_load(tmp_path):
    """Every file under conf/ loads without error once the key files it names are generated
    (no secret is shipped): the examples stay in step with the code."""
    import glob
    import re
    import shutil

    from haha.security.keys import generate_key_file

    here = os.path.join(os.path.dirname(__file__), "..", "conf")
    shutil.copytree(here, tmp_path / "conf", ignore=shutil.ignore_patterns("*.key"))
    files = sorted(glob.glob(str(tmp_path / "conf" / "**" / "*.conf"), recursive=True))
    assert len(files) >= 10, files
    kinds = set()
    for p in files:
        text = open(p).read()
        for rel in re.findall(r"=\s*(\S+\.key)\b", text):
            key = os.path.join(os.path.dirname(p), rel)
            if not os.path.exists(key):
                generate_key_file(key)
        if "[mobile-node]" in text:
            c = load_mobile_node(p)
            kinds.add("mobile-router" if c.mobile_router else "mobile-node")
        else:
            kinds.add(load_home_agent(p).configuration)
    assert kinds == {"home-link", "separate-links", "no-home-link", "mobile-node",
                     "mobile-router"}


def test_address_takeover_and_obey_switch():
    """address-takeover is off by default and needs a haha-address of its own (located error
    otherwise); obey-switch is on by default; both reach the core's settings."""
    from haha.service import home_agent_settings, mobile_node_settings
    assert ha(BASE).address_takeover is False
    e = err(BASE.replace("home-interface", "address-takeover = yes\nhome-interface"))
    assert (e.section, e.key, e.line) == ("home-agent", "address-takeover", 4)
    assert "haha-address" in e.message
    c = ha(BASE.replace("home-interface",
                        "address-takeover = yes\nhaha-address = 2001:db8:f::1\nhome-interface"))
    assert c.address_takeover and home_agent_settings(c).address_takeover
    e = err(BASE.replace("home-interface", "address-takeover = yes\nhaha-address = "
                         "2001:db8:f::1\nhome-interface") + "[peers]\ndiscovery = link\n")
    assert e.key == "address-takeover" and "discovery = link" in e.message
    node = ("[mobile-node]\nhome-address = 2001:db8:1::100\nhome-prefix = 2001:db8:1::/64\n"
            "home-agent = 2001:db8:1::1\ncare-of-address = 2001:db8:99::100\n"
            "[security]\nmode = none\nlab = yes\n")
    assert mobile_node_from_text(node).obeys_switch is True
    c = mobile_node_from_text(node.replace("[security]", "obey-switch = no\n[security]"))
    assert c.obeys_switch is False and mobile_node_settings(c).obeys_switch is False
    e = err(node.replace("[security]", "obey-switch = maybe\n[security]"), node=True)
    assert e.key == "obey-switch"


def test_retransmit_same_sequence():
    """retransmit-same-sequence is on by default, ``no`` reaches the node's settings, anything
    else is a located error naming the key."""
    node = ("[mobile-node]\nhome-address = 2001:db8:1::100\nhome-prefix = 2001:db8:1::/64\n"
            "home-agent = 2001:db8:1::1\ncare-of-address = 2001:db8:99::100\n"
            "[security]\nmode = none\nlab = yes\n")
    assert mobile_node_from_text(node).settings.retransmit_same_sequence is True
    c = mobile_node_from_text(node.replace("[security]", "retransmit-same-sequence = no\n"
                                                         "[security]"))
    assert c.settings.retransmit_same_sequence is False
    e = err(node.replace("[security]", "retransmit-same-sequence = twice\n[security]"), node=True)
    assert (e.section, e.key, e.line) == ("mobile-node", "retransmit-same-sequence", 6)


def test_retransmit_and_refresh_jitter():
    """retransmit-jitter and refresh-jitter are 0 by default (RFC 6275's timers exactly),
    reach the node's settings, and a value out of range or not a number is a located error
    naming the key and its line."""
    node = ("[mobile-node]\nhome-address = 2001:db8:1::100\nhome-prefix = 2001:db8:1::/64\n"
            "home-agent = 2001:db8:1::1\ncare-of-address = 2001:db8:99::100\n"
            "[security]\nmode = none\nlab = yes\n")
    s = mobile_node_from_text(node).settings
    assert (s.retransmit_jitter, s.refresh_jitter) == (0.0, 0.0)
    c = mobile_node_from_text(node.replace("[security]", "retransmit-jitter = 0.25\n"
                                                         "refresh-jitter = 0.1\n[security]"))
    assert (c.settings.retransmit_jitter, c.settings.refresh_jitter) == (0.25, 0.1)
    for key, bad in (("retransmit-jitter", "2"), ("refresh-jitter", "0.9"),
                     ("retransmit-jitter", "lots")):
        e = err(node.replace("[security]", f"{key} = {bad}\n[security]"), node=True)
        assert (e.section, e.key, e.line) == ("mobile-node", key, 6)


def test_take_over_share_and_sync_packing():
    """take-over-share (first by default, split), sync-mtu (1280) and sync-window (64) reach
    the core's settings; a value out of range or an unknown choice stops the start with a
    located error."""
    c = ha(BASE)
    assert (c.settings.take_over_share, c.settings.sync_mtu, c.settings.biu_window) == \
        ("first", 1280, 64)
    c = ha(BASE.replace("home-interface", "take-over-share = split\nsync-mtu = 2100\n"
                        "sync-window = 256\nhome-interface"))
    assert (c.settings.take_over_share, c.settings.sync_mtu, c.settings.biu_window) == \
        ("split", 2100, 256)
    for line, key in (("take-over-share = half", "take-over-share"),
                      ("sync-mtu = 1000", "sync-mtu"), ("sync-mtu = 2101", "sync-mtu"),
                      ("sync-window = 0", "sync-window")):
        e = err(BASE.replace("home-interface", line + "\nhome-interface"))
        assert (e.section, e.key, e.line) == ("home-agent", key, 4)
