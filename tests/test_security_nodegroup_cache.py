"""What a node group and a pair keep between derivations is never stale: a node's pair is
derived once on first contact (its two cipher contexts built from those keys), an evicted
node's contexts are rebuilt from one derivation of the pair with the right keys for the right
node, a re-keyed configured node or another group key gets its own keys, and a peer's new
epoch is followed with that epoch's keys even when its context was evicted in between."""

import os

import pytest
from ipaddress import IPv6Address, IPv6Network

from haha.security import keys
from haha.security.epoch import new_epoch
from haha.security.errors import SecurityError
from haha.security.nodegroup import NodeGroup
from haha.security.sadb import HOME_AGENT, MOBILE_NODE, SecurityAssociationDatabase

GROUP = bytes(range(32))
PREFIX = IPv6Network("2001:db8:1::/64")
HA = IPv6Address("2001:db8:1::1")
NODES = [IPv6Address(f"2001:db8:1::{i:x}") for i in range(0x100, 0x106)]
PAYLOAD = b"\x3b" + bytes(15)


def _node_db(secret, hoa):
    return SecurityAssociationDatabase.from_specs(keys.derive_pair(secret, hoa, HA, HOME_AGENT))


def _reference(group_key, hoa):
    """``(out key || salt, in key || salt)`` of the home agent's pair with ``hoa``, derived
    from scratch with derive_pair."""
    out, inb = keys.derive_pair(keys.derive_node_secret(group_key, hoa), HA, hoa, MOBILE_NODE)
    return out.key + out.salt, inb.key + inb.salt


def _counting(group):
    calls = []
    real = group.pair_keys

    def pair_keys(hoa):
        calls.append(hoa)
        return real(hoa)

    group.pair_keys = pair_keys
    return calls


def test_first_contact_derives_the_pair_once_and_builds_both_contexts_from_it():
    """admit derives the node's pair once: the packet is opened and the answer sealed with
    contexts built from those keys, with no second derivation (rederived stays 0)."""
    group = NodeGroup(GROUP, PREFIX, HA)
    calls = _counting(group)
    sadb = SecurityAssociationDatabase()
    node = _node_db(keys.derive_node_secret(GROUP, NODES[0]), NODES[0])
    esp = node.protect(HA, 135, PAYLOAD)
    spi = int.from_bytes(esp[:4], "big")
    assert group.admit(sadb, NODES[0], spi, lambda: sadb.unprotect(NODES[0], esp))[0] == NODES[0]
    answer = sadb.protect(NODES[0], 135, PAYLOAD)
    assert node.unprotect(HA, answer)[1:] == (135, PAYLOAD)
    assert calls == [NODES[0]] and group.rederived == 0 and sadb.ciphers.built == 2


def test_evicted_nodes_are_rebuilt_with_their_own_keys_one_derivation_per_pair():
    """With room for one context, six nodes taking turns (BU in, BA out) have both contexts
    rebuilt at every turn: every packet opens on both sides, and each rebuilt pair costs one
    derivation (the second direction's keys were held from the first) when the SAs keep no
    keys (keep_keys off)."""
    group = NodeGroup(GROUP, PREFIX, HA, keep_keys=False)
    sadb = SecurityAssociationDatabase(cipher_cache=1)
    nodes = {h: _node_db(keys.derive_node_secret(GROUP, h), h) for h in NODES}
    for h in NODES:
        group.ensure(sadb, h)
    calls = _counting(group)
    for _ in range(3):
        for h, node in nodes.items():
            assert sadb.unprotect(h, node.protect(HA, 135, PAYLOAD))[0] == h
            assert node.unprotect(HA, sadb.protect(h, 135, PAYLOAD))[1:] == (135, PAYLOAD)
    assert group.rederived == 2 * 3 * len(NODES)
    assert len(calls) == 3 * len(NODES)


def test_held_keys_serve_only_the_same_node_and_direction():
    """The keys held from one rebuild are handed out only for the other direction of the same
    node: asking for another node, or the same direction again, derives afresh and gets that
    node's own keys."""
    group = NodeGroup(GROUP, PREFIX, HA)
    a, b = NODES[0], NODES[1]
    want_a, want_b = _reference(GROUP, a), _reference(GROUP, b)
    assert group.keys_of(a, False) == want_a[1]  # holds a's outbound
    assert group.keys_of(b, True) == want_b[0]  # another node: not a's
    assert group.keys_of(b, True) == want_b[0]  # the same direction again: b's outbound
    assert group.keys_of(b, False) == want_b[1]
    assert group.keys_of(a, True) == want_a[0]


def test_a_rekeyed_configured_node_never_gets_its_old_keys():
    """A configured node whose secret changes (SIGHUP) gets keys of its new secret, even
    when the other half of its pair under the old secret was held."""
    old, new = os.urandom(32), os.urandom(32)
    hoa = NODES[2]
    group = NodeGroup(GROUP, PREFIX, HA, configured={hoa: old})
    group.keys_of(hoa, False)  # holds the outbound keys under the old secret
    group.set_configured({hoa: new})
    out, _ = keys.derive_pair(new, HA, hoa, MOBILE_NODE)
    assert group.keys_of(hoa, True) == out.key + out.salt


def test_each_group_key_derives_its_own_nodes():
    """Two groups with different keys (a group key changed at a restart) derive each node
    from their own key: nothing computed for one key is reused for the other."""
    other = os.urandom(32)
    g1, g2 = NodeGroup(GROUP, PREFIX, HA), NodeGroup(other, PREFIX, HA)
    for h in NODES[:3]:
        assert g1.pair_keys(h)[1] == _reference(GROUP, h)[0]
        assert g2.pair_keys(h)[1] == _reference(other, h)[0]
        assert g1.secret(h) == keys.derive_node_secret(GROUP, h) != g2.secret(h)


def test_a_peers_new_epochs_are_followed_with_their_own_keys_through_evictions():
    """A peer home agent restarting three times (three epochs) is followed each time, with a
    cipher cache of one context evicted between packets: the receiver never opens a packet
    under a previous epoch's keys or context, and an earlier run's packet stays refused."""
    secret = bytes(range(7, 39))
    peer = IPv6Address("2001:db8:2::1")
    receiver = SecurityAssociationDatabase.from_specs(
        keys.derive_pair(secret, HA, peer, epoch=new_epoch(1.8e9, 0, lambda n: b"\1" * n)),
        cipher_cache=1)
    other = SecurityAssociationDatabase.from_specs(keys.derive_pair(secret, HA, NODES[0]),
                                                   cipher_cache=1)
    old = None
    for run in range(1, 4):
        epoch = new_epoch(1.8e9 + run, 0, lambda n, r=run: bytes([r]) * n)
        sender = SecurityAssociationDatabase.from_specs(
            keys.derive_pair(secret, peer, HA, epoch=epoch))
        for _ in range(2):
            esp = sender.protect(HA, 135, PAYLOAD)
            assert receiver.unprotect(peer, esp)[1:] == (135, PAYLOAD)
            receiver.ciphers.drop(receiver._in_peer[peer])  # evicted between packets
            other.protect(NODES[0], 135, PAYLOAD)
        if old is not None:
            try:
                receiver.unprotect(peer, old)
            except Exception as e:
                assert getattr(e, "reason", None) in ("stale-epoch", "replay", "too-old")
            else:
                raise AssertionError("an earlier run's packet was accepted")
        old = sender.protect(HA, 135, PAYLOAD)
    assert receiver.counters["epoch-switched"] == 2


def _pair_args(hoa, secret=None):
    out, inb = keys.derive_pair(secret or keys.derive_node_secret(GROUP, hoa), HA, hoa,
                                MOBILE_NODE)
    return out, inb, (out.spi, out.key + out.salt, inb.spi, inb.key + inb.salt)


def test_adding_a_derived_pair_equals_adding_its_two_specs(tmp_path):
    """add_derived_pair leaves the database as add of the two SaSpecs does (SAs, SPIs,
    roles, sequence numbers reserved in the sequence store), and the SAs carry packets both
    ways."""
    from haha.security.seqstore import SequenceStore

    hoa = NODES[0]
    out, inb, (o_spi, o_keys, i_spi, i_keys) = _pair_args(hoa)
    a = SecurityAssociationDatabase(sequence_store=SequenceStore(str(tmp_path / "a"), block=8))
    b = SecurityAssociationDatabase(sequence_store=SequenceStore(str(tmp_path / "b"), block=8))
    a.add(out)
    a.add(inb)
    b.add_derived_pair(hoa, MOBILE_NODE, o_spi, o_keys, i_spi, i_keys, prime=True)
    assert a.describe() == b.describe() and b.role_of(hoa) == MOBILE_NODE
    assert a.state_of(hoa) == b.state_of(hoa)
    node = _node_db(keys.derive_node_secret(GROUP, hoa), hoa)
    for _ in range(10):  # past the store's block: reservations work the same
        assert b.unprotect(hoa, node.protect(HA, 135, PAYLOAD))[0] == hoa
        assert node.unprotect(HA, b.protect(hoa, 135, PAYLOAD))[0] == HA
    assert b.ciphers.built == 2


def test_a_derived_pair_is_refused_as_add_refuses_it_and_changes_nothing():
    """A second pair for a peer, a peer already known in another role, an inbound SPI in use
    for the same source, and bad keys, SPIs, roles or peers are refused with
    SecurityConfigError, and the database is left as it was."""
    import pytest

    from haha.security.errors import SecurityConfigError

    hoa, other = NODES[0], NODES[1]
    _, _, args = _pair_args(hoa)
    db = SecurityAssociationDatabase()
    db.add_derived_pair(hoa, MOBILE_NODE, *args)
    before = db.describe()
    bad = [
        (hoa, MOBILE_NODE, *args),  # a second pair
        (hoa, HOME_AGENT, *args),  # another role
        (other, MOBILE_NODE, args[0] ^ 1, args[1], args[2], args[3]),  # hoa's inbound SPI
        (other, MOBILE_NODE, args[0], args[1][:-1], args[2] ^ 1, args[3]),  # short keys
        (other, MOBILE_NODE, 255, args[1], args[2] ^ 1, args[3]),  # reserved SPI
        (other, "router", args[0], args[1], args[2] ^ 1, args[3]),  # no such role
        (str(other), MOBILE_NODE, args[0], args[1], args[2] ^ 1, args[3]),  # not an address
    ]
    # The third is allowed: hoa's inbound SPI for another peer (derived SPIs may collide; the
    # source tells the SAs apart).
    ok = bad.pop(2)
    for call in bad:
        with pytest.raises(SecurityConfigError):
            db.add_derived_pair(*call)
        assert db.describe() == before
    db.add_derived_pair(*ok)
    assert db.has_peer(other)


def test_kept_keys_rebuild_evicted_contexts_with_no_derivation():
    """With keep_keys (the default) six nodes taking turns through a cache of one context
    rebuild both contexts at every turn from the keys their SAs keep: every packet opens on
    both sides, the group derives each pair once (first contact) and never again."""
    group = NodeGroup(GROUP, PREFIX, HA)
    assert group.keep_keys
    sadb = SecurityAssociationDatabase(cipher_cache=1)
    nodes = {h: _node_db(keys.derive_node_secret(GROUP, h), h) for h in NODES}
    for h in NODES:
        group.ensure(sadb, h)
    calls = _counting(group)
    built = sadb.ciphers.built
    for _ in range(3):
        for h, node in nodes.items():
            assert sadb.unprotect(h, node.protect(HA, 135, PAYLOAD))[0] == h
            assert node.unprotect(HA, sadb.protect(h, 135, PAYLOAD))[1:] == (135, PAYLOAD)
    assert sadb.ciphers.built - built == 2 * 3 * len(NODES)  # every context was rebuilt
    assert calls == [] and group.rederived == 0


def test_kept_keys_are_those_of_the_node_and_direction():
    """Both SAs of a pair keep one object, the outbound key || salt then the inbound one, as
    derived from scratch, and each builds its context from its own half."""
    group = NodeGroup(GROUP, PREFIX, HA)
    sadb = SecurityAssociationDatabase(cipher_cache=1)
    for h in NODES[:3]:
        group.ensure(sadb, h)
    for h in NODES[:3]:
        want_out, want_in = _reference(GROUP, h)
        out, inb = sadb._out[int(h)], sadb._in_peer[h]
        assert out._key is inb._key and out._key == want_out + want_in  # one object per pair
        sadb.ciphers.load(out)  # a cache of one: each load evicts the other half
        assert out._salt == want_out[-4:]
        sadb.ciphers.load(inb)
        assert inb._salt == want_in[-4:]


def test_kept_keys_never_serve_a_removed_or_rekeyed_node():
    """A configured node re-keyed at SIGHUP (its SAs removed, as the reload does) opens and
    seals only under its new secret afterwards: its next packet under the new keys is admitted
    with a fresh derivation, one sealed under the old keys no longer opens, and the answer
    opens at a node holding the new keys only."""
    old, new = os.urandom(32), os.urandom(32)
    hoa = NODES[4]
    group = NodeGroup(GROUP, PREFIX, HA, configured={hoa: old})
    sadb = SecurityAssociationDatabase(cipher_cache=1)
    before = _node_db(old, hoa)
    esp = before.protect(HA, 135, PAYLOAD)
    spi = int.from_bytes(esp[:4], "big")
    assert group.admit(sadb, hoa, spi, lambda: sadb.unprotect(hoa, esp))[0] == hoa
    stale = before.protect(HA, 135, PAYLOAD)
    group.set_configured({hoa: new})
    sadb.remove_peer(hoa)
    assert not sadb.has_peer(hoa)
    after = _node_db(new, hoa)
    esp = after.protect(HA, 135, PAYLOAD)
    spi = int.from_bytes(esp[:4], "big")
    assert group.admit(sadb, hoa, spi, lambda: sadb.unprotect(hoa, esp))[0] == hoa
    assert group.derived == 2
    want_out, want_in = keys.derive_pair(new, HA, hoa, MOBILE_NODE)
    assert sadb._out[int(hoa)]._key == want_out.key + want_out.salt + want_in.key + want_in.salt
    with pytest.raises(SecurityError):
        sadb.unprotect(hoa, stale)
    assert after.unprotect(HA, sadb.protect(hoa, 135, PAYLOAD))[1:] == (135, PAYLOAD)
    with pytest.raises(SecurityError):
        before.unprotect(HA, sadb.protect(hoa, 135, PAYLOAD))


def test_the_reload_leaves_no_kept_keys_of_a_removed_or_rekeyed_node():
    """Through the SIGHUP path (haha.reload) with kept keys and configured nodes only: a node
    re-keyed gets SAs of its new secret at its next packet (the old keys' packets are refused),
    a node removed keeps no SA and its packets, under the keys it had, are refused."""
    from collections import defaultdict

    from haha.reload import _reload_configured

    a, b = NODES[0], NODES[1]
    old_a, new_a, secret_b = os.urandom(32), os.urandom(32), os.urandom(32)
    group = NodeGroup(None, PREFIX, HA, configured={a: old_a, b: secret_b})
    sadb = SecurityAssociationDatabase(cipher_cache=1)
    node_a, node_b = _node_db(old_a, a), _node_db(secret_b, b)
    for hoa, node in ((a, node_a), (b, node_b)):
        esp = node.protect(HA, 135, PAYLOAD)
        spi = int.from_bytes(esp[:4], "big")
        assert group.admit(sadb, hoa, spi, lambda: sadb.unprotect(hoa, esp))[0] == hoa
    summary = defaultdict(list)
    _reload_configured(sadb, group, {a: new_a}, summary)
    assert summary["rekeyed"] == [str(a)] and summary["nodes-removed"] == [str(b)]
    assert not sadb.has_peer(a) and not sadb.has_peer(b) and not group.covers(b)
    for hoa, node in ((a, node_a), (b, node_b)):
        with pytest.raises(SecurityError):
            sadb.unprotect(hoa, node.protect(HA, 135, PAYLOAD))
    renewed = _node_db(new_a, a)
    esp = renewed.protect(HA, 135, PAYLOAD)
    spi = int.from_bytes(esp[:4], "big")
    assert group.admit(sadb, a, spi, lambda: sadb.unprotect(a, esp))[0] == a
    assert renewed.unprotect(HA, sadb.protect(a, 135, PAYLOAD))[1:] == (135, PAYLOAD)


@pytest.mark.parametrize("keep_keys", [True, False])
def test_a_pair_installed_to_send_builds_only_the_context_it_sends_with(keep_keys):
    """ensure (a switch request to a node first seen here) derives the pair once and, with
    kept keys, builds only the outbound context: the request is sealed, nothing else enters
    the cipher cache (one context built, not two), and the node's answer is opened with an
    inbound context built from the kept keys, with no second derivation. Without kept keys
    both contexts are built at once (building the inbound one later would derive again)."""
    group = NodeGroup(GROUP, PREFIX, HA, keep_keys=keep_keys)
    calls = _counting(group)
    sadb = SecurityAssociationDatabase()
    node = _node_db(keys.derive_node_secret(GROUP, NODES[0]), NODES[0])
    assert group.ensure(sadb, NODES[0])
    request = sadb.protect(NODES[0], 135, PAYLOAD)
    assert node.unprotect(HA, request)[1:] == (135, PAYLOAD)
    assert sadb.ciphers.built == (1 if keep_keys else 2)
    answer = node.protect(HA, 135, PAYLOAD)
    assert sadb.unprotect(NODES[0], answer) == (NODES[0], 135, PAYLOAD)
    assert calls == [NODES[0]] and group.rederived == 0 and sadb.ciphers.built == 2
