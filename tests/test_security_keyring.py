"""The daemon's keys from its configuration (haha.security.keyring)."""

from ipaddress import IPv6Address as A

import pytest

from haha.config import home_agent_from_text
from haha.inifile import ConfigError
from haha.security import keys
from haha.security.keyring import (
    NodeKeyring,
    home_agent_sadb,
    load_located,
    node_group,
    node_key_files,
    node_secrets,
)
from haha.security.sadb import HOME_AGENT, SecurityAssociationDatabase

HA = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = separate-links
home-interface = eth0
[security]
sequence-file = {tmp}/ha.seq
node-key-dir = {tmp}/nodes
{extra}"""


def _config(tmp_path, extra=""):
    (tmp_path / "nodes").mkdir(exist_ok=True)
    return home_agent_from_text(HA.format(tmp=tmp_path, extra=extra), str(tmp_path / "ha.conf"))


def test_node_key_dir_and_node_keys_give_one_secret_per_node(tmp_path):
    """Files HOME-ADDRESS.key in node-key-dir are node keys, other files are ignored, and a
    node also listed in [node-keys] takes the [node-keys] file."""
    d = tmp_path / "nodes"
    d.mkdir()
    keys.generate_key_file(str(d / "2001:db8:1::100.key"))
    keys.generate_key_file(str(d / "2001:db8:1::101.key"))
    (d / "README").write_text("not a key")
    own = keys.generate_key_file(str(tmp_path / "own.key"))
    config = _config(tmp_path, f"[node-keys]\n2001:db8:1::101 = {own}\n")
    files = node_key_files(config)
    assert set(files) == {A("2001:db8:1::100"), A("2001:db8:1::101")}
    assert files[A("2001:db8:1::101")].path == own
    secrets = node_secrets(config)
    assert secrets[A("2001:db8:1::101")] == keys.load_secret(own)
    assert secrets[A("2001:db8:1::100")] == keys.load_secret(str(d / "2001:db8:1::100.key"))


def test_badly_named_key_file_is_a_located_error(tmp_path):
    """A .key file in node-key-dir whose name is no address stops start-up at [security]
    node-key-dir."""
    config = _config(tmp_path)
    (tmp_path / "nodes" / "laptop.key").write_text("00" * 32)
    with pytest.raises(ConfigError) as e:
        node_key_files(config)
    assert (e.value.section, e.value.key) == ("security", "node-key-dir")
    assert "HOME-ADDRESS.key" in e.value.message


def test_unreadable_secret_is_located_on_its_key(tmp_path):
    """A key file that holds no secret is reported at the key that named it."""
    config = _config(tmp_path)
    bad = tmp_path / "nodes" / "2001:db8:1::100.key"
    bad.write_text("not hex")
    bad.chmod(0o600)
    with pytest.raises(ConfigError) as e:
        load_located(node_key_files(config)[A("2001:db8:1::100")], "mobile node key")
    assert (e.value.section, e.value.key) == ("security", "node-key-dir")
    assert e.value.message.startswith("mobile node key: ")


def test_home_agent_sadb_reads_the_wall_clock_it_is_given(tmp_path):
    """The SA database is over the sequence file and its boot epoch comes from the wall clock
    passed in (the service passes its own, tests a fixed one); a node key gives no SA at
    start-up: the node group holds the node's secret and derives its pair on first use."""
    keys.generate_key_file(str(tmp_path / "n.key"))
    config = _config(tmp_path, f"[node-keys]\n2001:db8:1::100 = {tmp_path}/n.key\n")
    read = []
    db = home_agent_sadb(config, lambda: read.append(1) or 1_800_000_000.0)
    assert read and not db.has_peer(A("2001:db8:1::100")) and db.epoch is not None
    group = node_group(config)
    assert group.covers(A("2001:db8:1::100")) and not group.covers(A("2001:db8:1::101"))
    assert group.ensure(db, A("2001:db8:1::100")) and db.has_peer(A("2001:db8:1::100"))
    assert db.sequence_store.path == str(tmp_path / "ha.seq")


def test_node_keyring_derives_a_pair_only_for_a_matching_spi():
    """A mobile node derives the pair of an unknown home agent when its ESP's SPI is the one
    derived for that home agent, and not for any other SPI."""
    secret = bytes(range(32))
    hoa, ha = A("2001:db8:1::100"), A("2001:db8:1::2")
    ring = NodeKeyring(secret, hoa, SecurityAssociationDatabase())
    ring.learn(ha, b"\x00\x00\x00\x01" + bytes(20))
    assert not ring.sadb.has_peer(ha)
    spi = keys.derive_sa(secret, ha, hoa).spi
    ring.learn(ha, spi.to_bytes(4, "big") + bytes(20))
    assert ring.sadb.has_peer(ha) and ha in ring.derived
    assert {s.spi for s in keys.derive_pair(secret, hoa, ha, HOME_AGENT)} <= {
        int(r["spi"], 16) for r in ring.sadb.describe()}


def test_node_key_files_fast_paths_read_what_the_general_ones_do(tmp_path):
    """Key files without comments (read with bytes.fromhex) and names parsed with inet_pton
    give the same secrets and addresses as the general paths; a name that is no address, or
    a file that is no hexadecimal, is still refused with its located error."""
    (tmp_path / "nodes").mkdir()
    secret = bytes(range(32))
    texts = [secret.hex() + "\n", " ".join(f"{b:02x}" for b in secret) + "\n",
             "# comment\n" + secret.hex() + "\n", "0x" + secret.hex()]
    for i, text in enumerate(texts):
        path = tmp_path / "nodes" / f"2001:db8:1:0:0:0:0:{i + 1:x}.key"
        path.write_text(text)
        path.chmod(0o600)
    config = _config(tmp_path)
    got = node_secrets(config)
    assert got == {A(f"2001:db8:1::{i + 1:x}"): secret for i in range(len(texts))}
    bad = tmp_path / "nodes" / "2001:db8:1::9.key"
    bad.write_text("a" * 63 + "\n")
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match="not hexadecimal"):
        node_secrets(config)
    bad.unlink()
    (tmp_path / "nodes" / "not-an-address.key").write_text(secret.hex())
    with pytest.raises(ConfigError, match="HOME-ADDRESS.key"):
        node_key_files(config)


@pytest.mark.parametrize("how", ["ensure", "learn"])
def test_node_keyring_installs_what_adding_the_derived_specs_installs(how, tmp_path):
    """A pair installed by ensure or by learn (a taken-over node) is the pair the SaSpecs of
    derive_pair make: the same SAs in describe(), the same octets sealed with the same IV
    mask, each opened by the other database, and the same sequence numbers reserved in a
    sequence store."""
    from haha.security.seqstore import SequenceStore

    secret = bytes(range(7, 39))
    hoa, ha = A("2001:db8:1::100"), A("2001:db8:1::2")
    ring_db = SecurityAssociationDatabase(
        rng=lambda n: bytes(range(n)), sequence_store=SequenceStore(str(tmp_path / "a.seq")))
    ring = NodeKeyring(secret, hoa, ring_db)
    if how == "ensure":
        ring.ensure(ha)
    else:
        ring.learn(ha, keys.derive_sa(secret, ha, hoa).spi.to_bytes(4, "big") + bytes(20))
    ref_store = SequenceStore(str(tmp_path / "b.seq"))
    reference = SecurityAssociationDatabase(rng=lambda n: bytes(range(n)),
                                            sequence_store=ref_store)
    for spec in keys.derive_pair(secret, hoa, ha, HOME_AGENT):
        reference.add(spec)
    assert ring.derived == {ha}
    assert sorted(map(repr, ring_db.describe())) == sorted(map(repr, reference.describe()))
    assert ring_db.protect(ha, 135, b"binding update") == reference.protect(ha, 135,
                                                                              b"binding update")
    ha_side = SecurityAssociationDatabase()
    for spec in keys.derive_pair(secret, ha, hoa, "mobile-node"):
        ha_side.add(spec)
    esp = ha_side.protect(hoa, 135, b"switch request")
    assert ring_db.unprotect(ha, esp)[2] == b"switch request"
    assert reference.unprotect(ha, esp)[2] == b"switch request"
    assert ring_db.sequence_store._data == ref_store._data


def test_node_keyring_learn_derives_the_secrets_prk_once(monkeypatch):
    """Learning a home agent that took the node over computes the secret's PRK once for the
    SPI test and the pair (it used to compute it twice, and the inbound keys twice)."""
    made = []
    real = keys.SecretKdf

    def counting(*args, **kw):
        made.append(1)
        return real(*args, **kw)

    secret = bytes(range(32))
    hoa, ha = A("2001:db8:1::100"), A("2001:db8:1::2")
    spi = keys.derive_sa(secret, ha, hoa).spi
    monkeypatch.setattr(keys, "SecretKdf", counting)
    ring = NodeKeyring(secret, hoa, SecurityAssociationDatabase())
    ring.learn(ha, spi.to_bytes(4, "big") + bytes(20))
    assert ring.sadb.has_peer(ha) and len(made) == 1
    ring.learn(A("2001:db8:1::3"), spi.to_bytes(4, "big") + bytes(20))  # not its SPI
    assert not ring.sadb.has_peer(A("2001:db8:1::3")) and len(made) == 2


def test_node_keyring_learns_nothing_from_a_packet_naming_its_own_home_address():
    """ESP claiming to come from the node's own home address explains no SPI: learn installs
    nothing and raises nothing (it used to raise the derivation's 'sender and receiver are
    both' error out of the receive path)."""
    secret = bytes(range(32))
    hoa = A("2001:db8:1::100")
    ring = NodeKeyring(secret, hoa, SecurityAssociationDatabase())
    ring.learn(hoa, b"\x00\x00\x01\x00" + bytes(20))
    assert not ring.sadb.has_peer(hoa) and not ring.derived


def test_node_keyring_builds_contexts_at_first_use_unless_told_or_taken_over():
    """ensure builds no cipher context (a node with several configured home agents holds
    contexts only for those it talks to), ensure(prime=True) builds both (a load generator,
    before its burst), and learn builds both (the packet that taught it is opened and answered
    at once)."""
    secret = bytes(range(32))
    hoa, ha = A("2001:db8:1::100"), A("2001:db8:1::2")
    for how, built in (("ensure", 0), ("prime", 2), ("learn", 2)):
        ring = NodeKeyring(secret, hoa, SecurityAssociationDatabase())
        if how == "learn":
            ring.learn(ha, keys.derive_sa(secret, ha, hoa).spi.to_bytes(4, "big") + bytes(20))
        else:
            ring.ensure(ha, prime=how == "prime")
        assert ring.sadb.has_peer(ha) and ring.sadb.ciphers.built == built, how
