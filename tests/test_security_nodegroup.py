"""Node groups: one key for many mobile nodes. A node's secret is derived from the group key
and its home address (the derivation pinned by a vector computed with the RFC 5869 steps by
hand); home agents derive a node's SAs only when a packet from it authenticates, so forgeries
cost a derivation and store nothing; a home agent with only the group key serves a node whose
key file was written by ``haha.security.keys node-secret``, end to end on the in-memory hub."""

import hashlib
import hmac
import os
from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.security import keys
from haha.security.errors import SecurityConfigError, SecurityError
from haha.security.nodegroup import NodeGroup
from haha.security.sadb import HOME_AGENT, SecurityAssociationDatabase

GROUP = bytes(range(32))
PREFIX = IPv6Network("2001:db8:1::/64")
HA = IPv6Address("2001:db8:1::1")
HOA = IPv6Address("2001:db8:1::100")


def _hkdf(ikm, salt, info, length):
    """RFC 5869 2.2 and 2.3, written out with hmac."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, i = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes((i,)), hashlib.sha256).digest()
        okm += block
        i += 1
    return okm[:length]


def test_node_secret_is_hkdf_of_the_group_key_and_home_address():
    """derive_node_secret = HKDF-SHA256(group key, salt "haha-node-secret-v1", info = the 16
    octets of the home address, 32 octets): every node gets its own, unrelated secret."""
    want = _hkdf(GROUP, b"haha-node-secret-v1", HOA.packed, 32)
    assert keys.derive_node_secret(GROUP, HOA) == want
    assert want.hex() == ("d7d12ed37e1718be495e5210865637ed"  # the vector of docs/security.md
                          "6ebaa08cb78915154c76ed487ba3c715")
    assert keys.derive_node_secret(GROUP, IPv6Address("2001:db8:1::101")) != want
    with pytest.raises(SecurityConfigError):
        keys.derive_node_secret(b"short", HOA)


def test_node_secret_command_writes_the_nodes_key_file(tmp_path, capsys):
    """``node-secret`` writes a mode 0600 key file holding the derived secret; it refuses to
    replace a file without --force and names a bad address."""
    group = tmp_path / "group.key"
    keys.generate_key_file(str(group))
    out = tmp_path / "mn.key"
    argv = ["node-secret", "--group-key", str(group), "--home-address", str(HOA), str(out)]
    assert keys.main(argv) == 0
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert keys.load_secret(str(out)) == keys.derive_node_secret(keys.load_secret(str(group)),
                                                                 HOA)
    assert keys.main(argv) == 2
    assert keys.main(argv + ["--force"]) == 0
    assert keys.main(["node-secret", "--group-key", str(group), "--home-address", "nope",
                      str(tmp_path / "x.key")]) == 2
    assert "nope" in capsys.readouterr().err


def _node_packet(secret, hoa=HOA, payload=b"\x3b" + bytes(15)):
    """ESP as the node at ``hoa`` would send it to HA with its derived secret."""
    node = SecurityAssociationDatabase.from_specs(keys.derive_pair(secret, hoa, HA, HOME_AGENT))
    return node.protect(HA, 135, payload)


def test_a_node_is_derived_when_its_first_packet_authenticates():
    """The first packet from a home address of the group installs the pair and is returned;
    the next one finds the pair installed."""
    group = NodeGroup(GROUP, PREFIX, HA)
    sadb = SecurityAssociationDatabase()
    esp = _node_packet(keys.derive_node_secret(GROUP, HOA))
    spi = int.from_bytes(esp[:4], "big")
    peer, nh, _ = group.admit(sadb, HOA, spi, lambda: sadb.unprotect(HOA, esp))
    assert (peer, nh) == (HOA, 135) and sadb.has_peer(HOA) and group.derived == 1
    assert group.admit(sadb, HOA, spi, lambda: None) is None  # known now: not the group's job


def test_forgeries_store_nothing():
    """A packet under a wrong key (right SPI, bad ICV), under another SPI, from outside the
    prefix, or from the home agent itself leaves the database empty."""
    group = NodeGroup(GROUP, PREFIX, HA)
    sadb = SecurityAssociationDatabase()
    good_spi = keys.derive_pair(keys.derive_node_secret(GROUP, HOA), HA, HOA)[1].spi
    forged = bytearray(_node_packet(keys.derive_node_secret(GROUP, HOA)))
    forged[-1] ^= 1
    with pytest.raises(SecurityError):
        group.admit(sadb, HOA, good_spi, lambda: sadb.unprotect(HOA, bytes(forged)))
    assert not sadb.has_peer(HOA)
    assert group.admit(sadb, HOA, good_spi ^ 1, lambda: 1 / 0) is None
    outside = IPv6Address("2001:db8:2::100")
    assert group.admit(sadb, outside, good_spi, lambda: 1 / 0) is None
    assert group.admit(sadb, HA, good_spi, lambda: 1 / 0) is None
    assert not sadb.peers() and group.derived == 0
    assert repr(group).startswith("<NodeGroup 2001:db8:1::/64") and GROUP.hex() not in repr(group)


def test_ensure_derives_for_a_node_the_home_agent_writes_to_first():
    """A home agent taking a node over writes to it before hearing from it: ensure installs
    the pair (once), and the node can read what it is sent."""
    group = NodeGroup(GROUP, PREFIX, HA)
    sadb = SecurityAssociationDatabase()
    assert group.ensure(sadb, HOA) and group.ensure(sadb, HOA) and group.derived == 1
    assert not group.ensure(sadb, IPv6Address("2001:db8:2::1"))
    esp = sadb.protect(HOA, 135, b"\x3b" + bytes(15))
    secret = keys.derive_node_secret(GROUP, HOA)
    node = SecurityAssociationDatabase.from_specs(keys.derive_pair(secret, HOA, HA, HOME_AGENT))
    assert node.unprotect(HA, esp)[0] == HA


@pytest.fixture
def group_net(tmp_path, monkeypatch):
    """test_service's network of three home agents and a node, with the home agents holding
    only a node group key (no per-node key) and the node the key ``node-secret`` wrote."""
    import test_service

    keys.generate_key_file(str(tmp_path / "group.key"))
    (tmp_path / "node").mkdir()
    assert keys.main(["node-secret", "--group-key", str(tmp_path / "group.key"),
                      "--home-address", str(HOA), str(tmp_path / "node" / "mn.key")]) == 0
    ha_text = test_service.HA_TEXT.replace(
        "[node-keys]\n2001:db8:1::100 = {keys}/mn.key\n",
        "[security]\nnode-group-key = {keys}/group.key\n")
    mn_text = test_service.MN_TEXT.replace("key = {keys}/mn.key", "key = {keys}/node/mn.key")
    assert ha_text != test_service.HA_TEXT and mn_text != test_service.MN_TEXT
    monkeypatch.setattr(test_service, "HA_TEXT", ha_text)
    monkeypatch.setattr(test_service, "MN_TEXT", mn_text)
    net = test_service.Network(tmp_path)
    yield net
    net.stop_all()


def test_home_agents_with_only_the_group_key_serve_and_take_over_the_node(group_net):
    """The node registers over ESP with ha1, which derived its pair from the group key when
    the first BU authenticated; after ha1 crashes, ha2 (which never heard from the node) derives
    the pair to send its HASR, and the node re-registers with it."""
    net = group_net
    net.start()
    assert net.mn.status()["state"] == "registered"
    assert net.mn.status()["home_agent"] == str(HAS[0])
    c = net.has[0].counters()
    assert c["node-group-derived"] == 1 and c["received.BindingUpdate"] >= 1
    assert all(p[6] in (50, 43, 60) for _, p, _ in net.hub.log)
    net.ends[0].stop()
    net.has[0].adapter.running = False
    net.has[0].adapter.stop_timer()
    net.run(6)
    assert net.mn.status()["home_agent"] == str(HAS[1])
    assert net.has[1].counters()["event.take-over"] == 1
    assert net.has[1].adapter.node_group.derived == 1


HAS = [IPv6Address(f"2001:db8:1::{i}") for i in (1, 2, 3)]


def test_node_secrets_answer_for_the_group_and_list_only_configured_nodes():
    """NodeSecrets looks a group node's secret up by address (derived), lists only the
    configured nodes (a group has no member list), and never shows a secret."""
    from haha.security.nodegroup import NodeSecrets

    group = NodeGroup(GROUP, PREFIX, HA)
    explicit = {IPv6Address("2001:db8:9::1"): b"\x11" * 32}
    secrets = NodeSecrets(explicit, group)
    assert HOA in secrets and secrets[HOA] == keys.derive_node_secret(GROUP, HOA)
    assert secrets[IPv6Address("2001:db8:9::1")] == b"\x11" * 32
    assert IPv6Address("2001:db8:2::1") not in secrets
    with pytest.raises(KeyError):
        secrets[IPv6Address("2001:db8:2::1")]
    assert list(secrets) == [IPv6Address("2001:db8:9::1")] and len(secrets) == 1
    assert "11" * 8 not in repr(secrets) and GROUP.hex() not in repr(secrets)


def test_address_take_over_derives_a_group_nodes_pair_with_the_held_address():
    """A survivor holding a dead peer's address derives that address's pair with a node of
    the group (whose numbers the dead peer announced), as it would for a configured node."""
    from haha.security.nodegroup import NodeSecrets
    from haha.security.takeover import TakeoverKeys
    from haha.wire.options import EspState

    dead = IPv6Address("2001:db8:1::2")
    group = NodeGroup(GROUP, PREFIX, HA)
    sadb = SecurityAssociationDatabase()
    tk = TakeoverKeys(sadb, HA, NodeSecrets({}, group))
    tk.learn((EspState(HOA, dead, 500, 40),))
    tk.hold(dead)
    assert sadb.has_local(dead, HOA)
    esp = sadb.protect(HOA, 135, b"\x3b" + bytes(15), dead)
    secret = keys.derive_node_secret(GROUP, HOA)
    node = SecurityAssociationDatabase.from_specs(keys.derive_pair(secret, HOA, dead, HOME_AGENT))
    assert node.unprotect(dead, esp)[0] == dead
    tk.release(dead)
    assert not sadb.has_local(dead, HOA)


def test_configured_nodes_are_derived_on_first_contact_and_win_over_the_group():
    """A group holding configured secrets (node-key-dir, [node-keys]) derives a configured
    node's pair from its own secret when its first packet authenticates; without a group key
    it covers nobody else of the prefix; with one, the configured secret wins over the
    derived one. Nothing is derived before a packet comes."""
    own = os.urandom(32)
    only = NodeGroup(None, PREFIX, HA, configured={HOA: own})
    sadb = SecurityAssociationDatabase()
    assert only.covers(HOA) and not only.covers(IPv6Address("2001:db8:1::101"))
    assert not sadb.peers()
    esp = _node_packet(own)
    spi = int.from_bytes(esp[:4], "big")
    peer, nh, _ = only.admit(sadb, HOA, spi, lambda: sadb.unprotect(HOA, esp))
    assert (peer, nh) == (HOA, 135) and only.derived == 1
    other = IPv6Address("2001:db8:1::101")
    assert only.admit(sadb, other, spi, lambda: 1 / 0) is None and not only.ensure(sadb, other)
    with pytest.raises(KeyError):
        only.secret(other)
    both = NodeGroup(GROUP, PREFIX, HA, configured={HOA: own})
    assert both.secret(HOA) == own and both.covers(other)
    assert both.secret(other) == keys.derive_node_secret(GROUP, other)
    assert own.hex() not in repr(both) and "configured=1" in repr(both)


def test_covers_the_prefix_on_its_boundaries_and_nothing_else():
    """covers (integer tests) takes the first and last address of the group's prefix, never
    the home agent's own address, nothing outside the prefix (either side) and nothing that
    is not an IPv6 address (an IPv4 address, a network, a string)."""
    from ipaddress import IPv4Address

    group = NodeGroup(GROUP, PREFIX, HA)
    first, last = PREFIX.network_address, PREFIX.broadcast_address
    assert group.covers(first) and group.covers(last) and group.covers(HOA)
    assert not group.covers(HA)
    assert not group.covers(IPv6Address(int(first) - 1))
    assert not group.covers(IPv6Address(int(last) + 1))
    for other in (IPv4Address("10.0.0.1"), IPv6Network(f"{HOA}/128"), str(HOA), None):
        assert not group.covers(other)
