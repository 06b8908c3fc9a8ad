"""Interoperability of our ESP with an independent implementation: scapy's
scapy.layers.ipsec.SecurityAssociation with 'AES-GCM' (RFC 4106; its key is key || salt, as
Linux's rfc4106 blob), on complete IPv6 transport-mode packets carrying Mobility Headers,
with and without a Home Address option before the ESP header (RFC 3776's BU layout).

scapy is a test oracle only (GPL): haha itself never imports it. The machine's kernel has no
ESP (no `rfc4106(gcm(aes))` in its crypto API), so this, with the published known-answer
vectors, is how compatibility with Linux's framing is shown here (docs/security.md).
"""

from ipaddress import IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation

from haha.security import SaSpec, SecurityAssociationDatabase
from haha.security.esp import OutboundSA
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import BindingInfoAck, BindingUpdate, encode_mh
from haha.wire.numbers import IPPROTO_ESP, IPPROTO_MH

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")
HOME = IPv6Address("2001:db8:100::42")
COA = IPv6Address("2001:db8:77::9")
SPI = 0x0BADCAFE

keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
salts = st.binary(min_size=4, max_size=4)
valid_mh = st.one_of(
    st.builds(lambda s, f, l: encode_mh(BindingUpdate(s, f, l), HOME, HA1),
              st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(lambda i, s: encode_mh(BindingInfoAck(i, s), HA1, HA2),
              st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
)
# Any upper layer too (ESP does not care); scapy's dissector, though, may trip over random
# bytes under next header 135 when it rebuilds a decrypted packet, so that test uses valid MH.
mh_payloads = st.one_of(valid_mh, st.binary(min_size=0, max_size=300))
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _scapy_sa(key, salt):
    return SecurityAssociation(ESP, spi=SPI, crypt_algo="AES-GCM", crypt_key=key + salt)


def _plain(payload, with_hao):
    if with_hao:
        return build_packet(COA, HA1, IPPROTO_MH, payload, home_address=HOME)
    return build_packet(HA2, HA1, IPPROTO_MH, payload)


@SETTINGS
@given(key=keys, salt=salts, payload=mh_payloads, seq=st.integers(1, 2**32 - 1),
       iv=st.binary(min_size=8, max_size=8), with_hao=st.booleans())
def test_identical_bytes_to_scapy(key, salt, payload, seq, iv, with_hao):
    """With the same key, salt, SPI, sequence number and IV, our complete IPv6 packet is
    byte-for-byte scapy's encryption of the same clear packet (padding, trailer, AAD, nonce,
    ICV; ESP after the Home Address option)."""
    mask = int.from_bytes(iv, "big") ^ seq
    ours_esp = OutboundSA(SPI, key, salt, seq=seq - 1, iv_mask=mask).seal(IPPROTO_MH, payload)
    if with_hao:
        ours = build_packet(COA, HA1, IPPROTO_ESP, ours_esp, home_address=HOME)
    else:
        ours = build_packet(HA2, HA1, IPPROTO_ESP, ours_esp)
    theirs = _scapy_sa(key, salt).encrypt(IPv6(_plain(payload, with_hao)), seq_num=seq, iv=iv)
    assert bytes(theirs) == ours


@SETTINGS
@given(key=keys, salt=salts, payload=valid_mh, with_hao=st.booleans(),
       count=st.integers(1, 4))
def test_scapy_decrypts_ours(key, salt, payload, with_hao, count):
    """Packets our database protects (random IVs, increasing sequence numbers) are
    authenticated and decrypted by scapy to exactly the clear packet."""
    peer = HA1
    db = SecurityAssociationDatabase.from_specs([SaSpec(peer, "out", SPI, key, salt)])
    sa = _scapy_sa(key, salt)
    for _ in range(count):
        esp = db.protect(peer, IPPROTO_MH, payload)
        if with_hao:
            wire = build_packet(COA, HA1, IPPROTO_ESP, esp, home_address=HOME)
        else:
            wire = build_packet(HA2, HA1, IPPROTO_ESP, esp)
        clear = sa.decrypt(IPv6(wire))
        assert bytes(clear) == _plain(payload, with_hao)


@SETTINGS
@given(key=keys, salt=salts, payload=mh_payloads, with_hao=st.booleans(),
       seqs=st.lists(st.integers(1, 2**32 - 1), min_size=1, max_size=4, unique=True))
def test_we_decrypt_scapys(key, salt, payload, with_hao, seqs):
    """Packets scapy encrypts (its random IVs, any sequence numbers in increasing order) are
    accepted by our database, which returns the peer the SA is bound to (the home address for
    a packet carrying a Home Address option), next header 135 and the payload."""
    peer = HOME if with_hao else HA2
    db = SecurityAssociationDatabase.from_specs([SaSpec(peer, "in", SPI, key, salt)])
    sa = _scapy_sa(key, salt)
    for seq in sorted(seqs):
        wire = bytes(sa.encrypt(IPv6(_plain(payload, with_hao)), seq_num=seq))
        pkt = parse_packet(wire)
        assert pkt.next_header == IPPROTO_ESP
        assert db.unprotect(pkt.source, pkt.payload) == (peer, IPPROTO_MH, payload)
