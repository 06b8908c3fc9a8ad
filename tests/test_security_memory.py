"""An SA is cheap (haha.security.esp, "Memory"): cipher contexts live in a bounded LRU cache,
an SA whose context was evicted still seals and opens byte-identically with its replay window
intact, and the per-SA state holds no closure or context of its own."""

import os
import tracemalloc
from ipaddress import IPv6Address

import pytest

from haha.config import home_agent_from_text
from haha.inifile import ConfigError
from haha.security import SecurityAssociationDatabase, SecurityError
from haha.security.esp import CipherCache, InboundSA, OutboundSA
from haha.security.errors import AUTH_FAILED, REPLAY, SecurityConfigError
from haha.security.keyring import home_agent_sadb
from haha.security.keys import derive_node_secret, derive_pair
from haha.security.seqstore import SequenceStore
from haha.wire.numbers import IPPROTO_MH

HA = IPv6Address("2001:db8:1::1")
GROUP = bytes(range(32))


def node(i):
    return IPv6Address(int(IPv6Address("2001:db8:1::1:0")) + i)


def fixed_rng(n):
    return b"\x5a" * n


def pairs(count, capacity, store=None):
    """A home agent's database and the nodes' own ones, ``count`` nodes, the home agent's
    cipher cache holding ``capacity`` contexts."""
    ha = SecurityAssociationDatabase(rng=fixed_rng, cipher_cache=capacity, sequence_store=store)
    nodes = []
    for i in range(count):
        secret = derive_node_secret(GROUP, node(i))
        for spec in derive_pair(secret, HA, node(i), "mobile-node"):
            ha.add(spec)
        mn = SecurityAssociationDatabase(rng=fixed_rng)
        for spec in derive_pair(secret, node(i), HA):
            mn.add(spec)
        nodes.append(mn)
    return ha, nodes


def test_the_cache_bound_holds_and_evicts_the_least_recently_used():
    """With 40 nodes talking both ways, the home agent never holds more than its 8 contexts;
    the SA used last keeps its context, the one used longest ago lost it."""
    ha, nodes = pairs(40, 8)
    for rnd in range(3):
        for i, mn in enumerate(nodes):
            _, _, payload = ha.unprotect(node(i), mn.protect(HA, IPPROTO_MH, b"bu %d" % rnd))
            assert payload == b"bu %d" % rnd
            assert mn.unprotect(HA, ha.protect(node(i), IPPROTO_MH, b"ba"))[2] == b"ba"
            assert len(ha.ciphers) <= 8
    assert ha.ciphers.evicted > 0 and ha.ciphers.built == ha.ciphers.evicted + 8
    last_out = ha._out[int(node(39))]
    first_out = ha._out[int(node(0))]
    assert last_out._crypt is not None and first_out._crypt is None
    # using the oldest again brings it back and pushes out the now least recently used
    ha.protect(node(0), IPPROTO_MH, b"x")
    assert first_out._crypt is not None and len(ha.ciphers) == 8


def test_an_sa_used_since_it_was_loaded_outlives_one_that_was_not():
    """The clock approximation of least recently used: with room for three contexts, loading a
    fourth evicts the oldest SA that was not used since it was loaded, not the oldest one."""
    ha, nodes = pairs(4, 3)
    outs = [ha._out[int(node(i))] for i in range(4)]
    for i in range(3):
        ha.protect(node(i), IPPROTO_MH, b"load")
    ha.protect(node(0), IPPROTO_MH, b"used again")  # the oldest, but used since
    ha.protect(node(3), IPPROTO_MH, b"a fourth")
    assert [sa._crypt is not None for sa in outs] == [True, False, True, True]
    assert ha.ciphers.evicted == 1


def test_an_evicted_sa_seals_byte_identically():
    """The same SA stream sealed with a cache of one context (rebuilt for nearly every packet)
    and with a cache that never evicts gives the same bytes, packet for packet."""
    small, _ = pairs(5, 1)
    large, _ = pairs(5, 1000)
    for rnd in range(4):
        for i in range(5):
            a = small.protect(node(i), IPPROTO_MH, b"payload %d %d" % (rnd, i))
            b = large.protect(node(i), IPPROTO_MH, b"payload %d %d" % (rnd, i))
            assert a == b
    assert small.ciphers.evicted >= 15 and large.ciphers.evicted == 0


def test_an_evicted_sa_still_opens_and_keeps_its_replay_window():
    """A packet accepted before its SA's context was evicted is still a replay afterwards;
    a fresh packet still opens; a packet forged under another key still fails."""
    ha, nodes = pairs(3, 1)
    first = nodes[0].protect(HA, IPPROTO_MH, b"one")
    second = nodes[0].protect(HA, IPPROTO_MH, b"two")
    assert ha.unprotect(node(0), second)[2] == b"two"
    ha.unprotect(node(1), nodes[1].protect(HA, IPPROTO_MH, b"evicts node 0"))
    assert ha._in_peer[node(0)]._crypt is None
    with pytest.raises(SecurityError) as e:
        ha.unprotect(node(0), second)
    assert e.value.reason == REPLAY
    assert ha.unprotect(node(0), first)[2] == b"one"  # inside the window, not seen yet
    with pytest.raises(SecurityError) as e:
        ha.unprotect(node(0), first)
    assert e.value.reason == REPLAY
    for _ in range(5):
        forged = bytearray(nodes[2].protect(HA, IPPROTO_MH, b"x"))  # sequence number 5
    forged[:4] = first[:4]  # node 0's SPI, node 2's key
    with pytest.raises(SecurityError) as e:
        ha.unprotect(node(0), bytes(forged))
    assert e.value.reason == AUTH_FAILED
    assert ha.counters[REPLAY] == 2 and ha._in_peer[node(0)].top == 2


def test_removed_sas_leave_the_cache():
    """Removing a peer drops its contexts: the cache never keeps a removed SA alive."""
    ha, nodes = pairs(2, 100)
    ha.unprotect(node(0), nodes[0].protect(HA, IPPROTO_MH, b"x"))
    ha.protect(node(0), IPPROTO_MH, b"y")
    assert len(ha.ciphers) == 2
    ha.remove_peer(node(0))
    assert len(ha.ciphers) == 0


def test_sequence_reservations_need_no_object_per_sa(tmp_path):
    """Every SA of a sequence store shares its two callbacks (no closure, no entry name per
    SA), and a reservation still lands under the SA's own entry."""
    store = SequenceStore(tmp_path / "s.seq", block=4)
    ha, nodes = pairs(3, 10, store)
    outs = [ha._out[int(node(i))] for i in range(3)]
    ins = [ha._in_peer[node(i)] for i in range(3)]
    assert len({id(sa._reserve) for sa in outs}) == 1
    assert len({id(sa._advance) for sa in ins}) == 1
    for _ in range(6):
        ha.protect(node(1), IPPROTO_MH, b"x")
        ha.unprotect(node(1), nodes[1].protect(HA, IPPROTO_MH, b"y"))
    spi_out, spi_in = outs[1].spi, ins[1].spi
    assert store.get(f"out {node(1)} 0x{spi_out:08x}") >= 6
    assert store.get(f"in {node(1)} 0x{spi_in:08x}") == 4
    assert store.get(f"out {node(0)} 0x{outs[0].spi:08x}") == 0


def test_an_sa_pair_costs_under_700_octets_without_its_context():
    """The Python objects an SA pair keeps in a database (two SAs, their keys, table entries)
    stay small once the pair's contexts were evicted: under 700 octets a pair (the SAs with
    an AES-GCM context each and two closures took over 1.5 KB of Python objects, plus about
    5 KB of OpenSSL state)."""
    ha = SecurityAssociationDatabase(rng=fixed_rng, cipher_cache=1)
    specs = [spec for i in range(2000)
             for spec in derive_pair(derive_node_secret(GROUP, node(i)), HA, node(i),
                                     "mobile-node")]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for spec in specs:
        ha.add(spec)
    per_pair = (tracemalloc.get_traced_memory()[0] - before) / 2000
    tracemalloc.stop()
    assert per_pair < 700, per_pair


def test_cipher_cache_size_is_checked():
    """A cache of no context is refused with a clear error."""
    with pytest.raises(SecurityConfigError, match="cipher cache"):
        CipherCache(0)
    with pytest.raises(SecurityConfigError, match="cipher cache"):
        SecurityAssociationDatabase(cipher_cache=-1)


def test_standalone_sas_share_a_default_cache():
    """SAs made outside a database (tools, tests) use the module's default cache and work."""
    key, salt = os.urandom(16), os.urandom(4)
    out = OutboundSA(0x1234, key, salt)
    inb = InboundSA(0x1234, key, salt)
    assert inb.open(out.seal(IPPROTO_MH, b"hello"))[1] == b"hello"
    assert out._ciphers is inb._ciphers


CONF = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = separate-links
home-interface = eth0
[security]
sequence-file = {tmp}/ha.seq
{extra}
"""


def test_cipher_cache_key_reaches_the_database(tmp_path):
    """[security] cipher-cache sizes the home agent's cache; 0 stops start-up with the file,
    section, key and line."""
    config = home_agent_from_text(CONF.format(tmp=tmp_path, extra="cipher-cache = 16"),
                                  str(tmp_path / "ha.conf"))
    assert home_agent_sadb(config, lambda: 1.8e9).ciphers.capacity == 16
    with pytest.raises(ConfigError) as e:
        home_agent_from_text(CONF.format(tmp=tmp_path, extra="cipher-cache = 0"),
                             str(tmp_path / "ha.conf"))
    assert "cipher-cache" in str(e.value) and "ha.conf:8" in str(e.value)


def test_node_group_sas_keep_no_key_and_rederive_it_identically():
    """Without keep_keys a node group's SAs hold the group as their key source, not key
    bytes; once their context was evicted the group derives the keys again, and the packets
    are the same bytes as those of SAs that were never evicted (and open at the nodes)."""
    from ipaddress import IPv6Network

    from haha.security.nodegroup import NodeGroup

    group = NodeGroup(GROUP, IPv6Network("2001:db8:1::/64"), HA, keep_keys=False)
    small = SecurityAssociationDatabase(rng=fixed_rng, cipher_cache=1)
    large, nodes = pairs(4, 1000)
    for i in range(4):
        assert group.ensure(small, node(i))
        assert not isinstance(small._out[int(node(i))]._key, bytes)
        assert not isinstance(small._in_peer[node(i)]._key, bytes)
    for rnd in range(3):
        for i in range(4):
            sealed = small.protect(node(i), IPPROTO_MH, b"ba %d" % rnd)
            assert sealed == large.protect(node(i), IPPROTO_MH, b"ba %d" % rnd)
            assert nodes[i].unprotect(HA, sealed)[2] == b"ba %d" % rnd
            bu = nodes[i].protect(HA, IPPROTO_MH, b"bu %d" % rnd)
            assert small.unprotect(node(i), bu)[2] == b"bu %d" % rnd
    assert group.rederived >= 20 and len(small.ciphers) == 1


def test_a_node_group_pair_costs_under_500_octets():
    """Without keep_keys a node group's SA pair in the database, its context evicted, keeps
    under 500 octets of Python objects (no key bytes, no closures, no context)."""
    _, per_pair = _group_pairs(keep_keys=False)
    assert per_pair < 500, per_pair


def _group_pairs(**group_options):
    """2,000 node-group SA pairs installed (a cache of one context), the group built with
    ``group_options``: the database and the traced octets per pair."""
    from ipaddress import IPv6Network

    from haha.security.nodegroup import NodeGroup

    group = NodeGroup(GROUP, IPv6Network("2001:db8:1::/64"), HA, **group_options)
    ha = SecurityAssociationDatabase(rng=fixed_rng, cipher_cache=1)
    pairs_ = [(node(i), group.pair_keys(node(i))) for i in range(2000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for hoa, keys in pairs_:
        group._install(ha, hoa, keys)
    per_pair = (tracemalloc.get_traced_memory()[0] - before) / 2000
    tracemalloc.stop()
    return ha, per_pair


def test_keep_node_keys_reaches_the_node_group(tmp_path):
    """[security] keep-node-keys (default yes) decides whether the node group's SAs keep
    their keys; a value that is not a boolean stops start-up with the file, key and line."""
    from haha.security.keyring import node_group

    key = tmp_path / "group.key"
    key.write_text(bytes(range(32)).hex() + "\n")
    key.chmod(0o600)
    group = f"node-group-key = {key}"
    config = home_agent_from_text(CONF.format(tmp=tmp_path, extra=group),
                                  str(tmp_path / "ha.conf"))
    assert config.security.keep_node_keys and node_group(config).keep_keys
    config = home_agent_from_text(CONF.format(tmp=tmp_path, extra=group + "\nkeep-node-keys = no"),
                                  str(tmp_path / "ha.conf"))
    assert not node_group(config).keep_keys
    with pytest.raises(ConfigError) as e:
        home_agent_from_text(CONF.format(tmp=tmp_path, extra="keep-node-keys = perhaps"),
                             str(tmp_path / "ha.conf"))
    assert "keep-node-keys" in str(e.value) and "ha.conf:8" in str(e.value)


def test_a_node_group_pair_with_kept_keys_costs_under_600_octets():
    """With keep_keys (the default) a node group's SA pair, its context evicted, keeps its two
    key || salt objects on top of the keyless pair: still under 600 octets."""
    ha, per_pair = _group_pairs()  # the default
    assert isinstance(ha._out[int(node(0))]._key, bytes)
    assert per_pair < 600, per_pair


def test_pair_keys_must_be_two_halves_of_one_length():
    """share_pair_keys refuses what cannot be two key || salt halves (one SA's length, an odd
    or unknown length, not bytes) and keeps the SA's keys unchanged."""
    from haha.security.errors import SecurityConfigError

    out = OutboundSA(0x1234, bytes(16), bytes(4))
    for bad in (bytes(20), bytes(36), bytes(41), bytes(44), bytearray(40), "x" * 40):
        with pytest.raises(SecurityConfigError):
            out.share_pair_keys(bad)
        assert out._key == bytes(20)
    out.share_pair_keys(bytes(range(40)))
    assert out._key == bytes(range(40))
