"""The SA database: construction from specs, peer identities (HA address; a mobile node's home
address, also behind its care-of address), source binding, SPI collisions between derived SAs,
and the ISecurityAssociations contract."""

from ipaddress import IPv6Address

import pytest
from zope.interface.verify import verifyObject

from haha.interfaces import ISecurityAssociations
from haha.security import SaSpec, SecurityAssociationDatabase, SecurityError
from haha.security.errors import SecurityConfigError
from haha.security.keys import derive_pair
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import BindingUpdate, decode_mh, encode_mh
from haha.wire.numbers import IPPROTO_ESP, IPPROTO_MH

HA1 = IPv6Address("2001:db8:1::1")
HA1_HAHA = IPv6Address("2001:db8:f::1")
HA2 = IPv6Address("2001:db8:2::1")
HOME = IPv6Address("2001:db8:100::42")
COA = IPv6Address("2001:db8:77::9")
SECRET = bytes(range(32, 64))
K, S = bytes(16), bytes(4)


def test_database_provides_the_interface():
    """The database is a verified ISecurityAssociations."""
    assert verifyObject(ISecurityAssociations, SecurityAssociationDatabase())


def test_from_specs_refuses_clashes_and_builds_nothing():
    """A second outbound or inbound SA for one peer, one inbound SPI for one source twice, and
    a peer with two roles are configuration errors naming the peer and SPI."""
    cases = [
        [SaSpec(HA2, "out", 300, K, S), SaSpec(HA2, "out", 301, K, S)],
        [SaSpec(HA2, "in", 300, K, S), SaSpec(HA2, "in", 301, K, S)],
        [SaSpec(HA2, "in", 300, K, S), SaSpec(HA1, "in", 300, K, S, sources=(HA2,))],
        [SaSpec(HA2, "out", 300, K, S), SaSpec(HA2, "in", 301, K, S, role="mobile-node")],
    ]
    for specs in cases:
        with pytest.raises(SecurityConfigError) as e:
            SecurityAssociationDatabase.from_specs(specs)
        assert str(HA2) in str(e.value) or str(HA1) in str(e.value)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(peer="192.0.2.1"), "IPv6"),
        (dict(direction="both"), "direction"),
        (dict(spi=255), "256"),
        (dict(spi=2**32), "256"),
        (dict(key=bytes(15)), "16, 24 or 32"),
        (dict(salt=bytes(3)), "4 octets"),
        (dict(role="router"), "role"),
    ],
)
def test_spec_validation(kwargs, fragment):
    """Each field of an SaSpec is checked with an error naming what is wrong (never the key)."""
    args = dict(peer=HA2, direction="out", spi=300, key=bytes(range(16)), salt=S)
    args.update(kwargs)
    with pytest.raises(SecurityConfigError) as e:
        SaSpec(**args)
    assert fragment in str(e.value)
    assert bytes(range(16)).hex() not in str(e.value)


def test_peers_are_found_by_address_object_or_text():
    """protect, has_peer and role_of accept an IPv6Address or its text; unknown or malformed
    peers have no SA."""
    db = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, HA2))
    assert db.has_peer(HA2) and db.has_peer(str(HA2)) and not db.has_peer(HA1)
    assert not db.has_peer("not an address")
    assert db.role_of("2001:db8:2::1") == "home-agent" and db.role_of(HA1) is None
    assert db.peers() == frozenset({HA2})
    db.protect(str(HA2), 135, b"x")
    with pytest.raises(SecurityError) as e:
        db.protect("junk", 135, b"x")
    assert e.value.reason == "no-sa"


def test_mobile_node_sa_binds_to_the_home_address_not_the_care_of_address():
    """A BU sent from the care-of address with a Home Address option is accepted on the node's
    SA when the caller passes Packet.source (the home address); checking it against the outer
    source (the care-of address) is a wrong source. The MH checksum uses the home address."""
    ha = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, HOME, "mobile-node"))
    mn = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HOME, HA1, "home-agent"))
    bu = BindingUpdate(7, 0xC000, 100)
    esp = mn.protect(HA1, IPPROTO_MH, encode_mh(bu, HOME, HA1))
    wire = build_packet(COA, HA1, IPPROTO_ESP, esp, home_address=HOME)
    pkt = parse_packet(wire)
    assert (pkt.src, pkt.source, pkt.next_header) == (COA, HOME, IPPROTO_ESP)
    with pytest.raises(SecurityError) as e:
        ha.unprotect(pkt.src, pkt.payload)
    assert e.value.reason == "wrong-source"
    peer, nh, payload = ha.unprotect(pkt.source, pkt.payload)
    assert (peer, nh) == (HOME, IPPROTO_MH)
    assert decode_mh(payload, pkt.source, pkt.destination) == bu
    assert ha.role_of(peer) == "mobile-node"


def test_extra_sources_of_a_home_agent():
    """An inbound SA may accept a peer HA's second address (its HAHA address) as well."""
    (out, inb) = derive_pair(SECRET, HA2, HA1, sources=(HA1_HAHA,))
    ha2 = SecurityAssociationDatabase.from_specs([out, inb])
    ha1 = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, HA2))
    assert ha2.unprotect(HA1_HAHA, ha1.protect(HA2, 135, b"a"))[0] == HA1
    assert ha2.unprotect(HA1, ha1.protect(HA2, 135, b"b"))[0] == HA1


def test_colliding_spis_of_different_peers_are_told_apart_by_source():
    """Derived SPIs are 32-bit hashes, so two peers' inbound SAs may share one; the database
    accepts that when their sources differ and picks the SA by source."""
    a, b = IPv6Address("2001:db8::a"), IPv6Address("2001:db8::b")
    ka, kb = bytes(range(16)), bytes(range(1, 17))
    db = SecurityAssociationDatabase.from_specs(
        [SaSpec(a, "in", 4096, ka, S), SaSpec(b, "in", 4096, kb, S, role="mobile-node")]
    )
    sa_a = SecurityAssociationDatabase.from_specs([SaSpec(HA1, "out", 4096, ka, S)])
    sa_b = SecurityAssociationDatabase.from_specs([SaSpec(HA1, "out", 4096, kb, S)])
    assert db.unprotect(b, sa_b.protect(HA1, 135, b"from b")) == (b, 135, b"from b")
    assert db.unprotect(a, sa_a.protect(HA1, 135, b"from a")) == (a, 135, b"from a")
    with pytest.raises(SecurityError) as e:
        db.unprotect(HA2, sa_a.protect(HA1, 135, b"x"))
    assert e.value.reason == "wrong-source"
    with pytest.raises(SecurityError) as e:  # a's packet claiming to be b's: b's key fails it
        db.unprotect(b, sa_a.protect(HA1, 135, b"x"))
    assert e.value.reason == "auth-failed"
    db.remove_peer(a)
    assert db.unprotect(b, sa_b.protect(HA1, 135, b"again"))[0] == b
    with pytest.raises(SecurityError):
        db.unprotect(a, sa_a.protect(HA1, 135, b"gone"))


def test_remove_peer_forgets_both_directions():
    """After remove_peer the peer has no outbound SA, its inbound SPI is unknown, and it may be
    added again (for example with new keys or another role)."""
    ha1 = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, HA2))
    ha2 = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA2, HA1))
    p = ha2.protect(HA1, 135, b"x")
    ha1.remove_peer(HA2)
    ha1.remove_peer("2001:db8::dead")
    assert not ha1.has_peer(HA2) and ha1.describe() == []
    with pytest.raises(SecurityError) as e:
        ha1.unprotect(HA2, p)
    assert e.value.reason == "unknown-spi"
    for spec in derive_pair(SECRET, HA1, HA2, role="mobile-node"):
        ha1.add(spec)
    assert ha1.role_of(HA2) == "mobile-node"


def test_describe_shows_state_without_keys():
    """describe() lists each SA's peer, role, direction, SPI and sequence state, never keys."""
    specs = derive_pair(SECRET, HA1, HA2)
    db = SecurityAssociationDatabase.from_specs(specs)
    db.protect(HA2, 135, b"x")
    rows = {r["direction"]: r for r in db.describe()}
    assert rows["out"]["seq"] == 1 and rows["out"]["spi"] == f"0x{specs[0].spi:08x}"
    assert rows["in"]["top"] == 0 and rows["in"]["window"] == 64
    text = str(rows)
    for s in specs:
        assert s.key.hex() not in text and s.salt.hex() not in text


@pytest.mark.parametrize("peer", [5, None, 2**127, "not an address", 1.5])
def test_what_is_not_a_peers_address_finds_no_sa(peer):
    """A value that is no peer's address (an IPv4 number, None, another IPv6 number, junk text,
    a float) finds no SA: protect refuses with no-sa (counted once), unprotect refuses, and the
    database still serves the real peer afterwards."""
    db = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, HA2))
    peer_db = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA2, HA1))
    esp = peer_db.protect(HA1, IPPROTO_MH, b"payload!")
    assert not db.has_peer(peer) and db.role_of(peer) is None
    with pytest.raises(SecurityError) as e:
        db.protect(peer, IPPROTO_MH, b"x")
    assert e.value.reason == "no-sa" and db.counters["no-sa"] == 1
    with pytest.raises((SecurityError, SecurityConfigError)):
        db.unprotect(peer, esp)
    assert db.unprotect(HA2, esp) == (HA2, IPPROTO_MH, b"payload!")


def test_an_address_given_as_its_integer_or_packed_octets_is_that_address():
    """ipaddress reads a large integer or 16 octets as an IPv6 address, and so does the
    database: such a value names the same peer as the address object."""
    db = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, HA2))
    assert db.has_peer(int(HA2)) and db.has_peer(HA2.packed)
    assert db.role_of(int(HA2)) == "home-agent"
    assert len(db.protect(HA2.packed, IPPROTO_MH, b"x")) > 8
