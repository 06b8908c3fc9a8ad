"""Known-answer tests for ESP with AES-GCM (RFC 4106) from published test vectors.

Source: D. McGrew, "Test Cases for the use of Galois/Counter Mode (GCM) and Galois Message
Authentication Code (GMAC) in IPsec ESP", draft-mcgrew-gcm-test-01 (March 2009), section 4. Each
case gives key, SPI, sequence number, nonce (salt || IV), the ESP plaintext (payload, padding,
Pad Length, Next Header) and the complete ESP packet (SPI, sequence, IV, ciphertext, ICV).

Used here: the AES-GCM cases with 32-bit sequence numbers, numbered as in the draft -- case 2
(AES-128), case 3 (AES-256), case 7 (AES-192), case 12 (AES-128, sequence number 2^32-1) -- plus
case 4, whose SPI 0 is reserved (RFC 4303 2.1) and must be refused. The cases with 64-bit
extended sequence numbers are not used: haha does not implement ESN (docs/security.md).

The Linux ``rfc4106(gcm(aes))`` key blob is ``key || salt``; the first 4 octets of each case's
nonce are the salt, the last 8 the IV carried in the packet.
"""

import pytest

from haha.security import SecurityError
from haha.security.errors import SecurityConfigError
from haha.security.esp import SEQ_MAX, InboundSA, OutboundSA
from haha.security.keys import split_sa_blob

H = bytes.fromhex


def _hex(s):
    return H("".join(s.split()))


# (case, key, spi, seq, nonce, plaintext, packet) -- draft-mcgrew-gcm-test-01 section 4.
CASES = [
    (
        2,
        "feffe9928665731c6d6a8f9467308308",
        0x0000A5F8, 0x0000000A, "cafebabefacedbaddecaf888",
        """4500003e698f000080114dccc0a80102 c0a801010a980035002a2343b2d00100
           00010000000000000373697009637962 65726369747902646b00000100010001""",
        """0000a5f80000000afacedbaddecaf888 deb22cd9b07c72c16e3a65beeb8df304
           a5a5897d33ae530f1ba76d5d114d2a5c 3de81827c10e9a4f51330d0eec416642
           cfbb85a5b47e48a4ec3b9ba95d918bd1 83b70d3aa8bc6ee4c309e9d85a41ad4a""",
    ),
    (
        3,
        "abbccddef00112233445566778899aababbccddef00112233445566778899aab",
        0x4A2CBFE3, 0x00000002, "112233440102030405060708",
        """4500003069a6400080062690c0a80102 9389155e0a9e008b2dc57ee000000000
           7002400020bf0000020405b401010402 01020201""",
        """4a2cbfe3000000020102030405060708 ff425c9b724599df7a3bcd510194e00d
           6a78107f1b0b1cbf06efae9d65a5d763 748a637985771d347f0545659f14e99d
           ef842d8eb335f4eecfdbf831824b4c49 15956c96""",
    ),
    (
        7,
        "feffe9928665731c6d6a8f9467308308feffe9928665731c",
        0x0000A5F8, 0x0000000A, "cafebabefacedbaddecaf888",
        """45000028a4ad4000400678800a01038f 0a010612802306b8cb712602dd6bb03e
           501016d075680001""",
        """0000a5f80000000afacedbaddecaf888 a5b1f8066029aea40e598b8122de0242
           0938b3ab33f828e687b8858b5bfbdbd0 315b27452144cc7795457b9652037f53
           18027b5b4cd7a636""",
    ),
    (
        12,
        "7d773d00c144c525ac619d18c84a3f47",
        0x335467AE, 0xFFFFFFFF, "d966426743457e9182443bc6",
        "01020201",
        """335467aeffffffff43457e9182443bc6 437f866bcb3f699fe9b0822bac961c45
           04bef270""",
    ),
]
IDS = [f"case{c[0]}" for c in CASES]


def _parts(case):
    _n, key, spi, seq, nonce, plain, packet = case
    nonce = H(nonce)
    plain = _hex(plain)
    pad, next_header = plain[-2], plain[-1]
    payload = plain[: len(plain) - 2 - pad]
    return H(key), spi, seq, nonce[:4], nonce[4:], payload, next_header, _hex(packet)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_protect_reproduces_the_published_packet(case):
    """An outbound SA with the case's key, salt, SPI, sequence number and IV produces exactly
    the draft's ESP packet: padding, AAD (SPI || sequence), nonce (salt || IV) and ICV agree."""
    key, spi, seq, salt, iv, payload, nh, packet = _parts(case)
    sa = OutboundSA(spi, key, salt, seq=seq - 1, iv_mask=int.from_bytes(iv, "big") ^ seq)
    assert sa.seal(nh, payload) == packet


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unprotect_accepts_the_published_packet(case):
    """An inbound SA with the case's key and salt authenticates and decrypts the draft's packet
    to its payload and next header."""
    key, spi, seq, salt, _iv, payload, nh, packet = _parts(case)
    sa = InboundSA(spi, key, salt)
    assert sa.open(packet) == (nh, payload, seq)
    assert sa.top == seq


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_linux_key_blob_is_key_then_salt(case):
    """The Linux rfc4106 key blob (key || salt, 20/28/36 octets) splits into the AES key and the
    4-octet salt that reproduce the published packet."""
    key, spi, seq, salt, iv, payload, nh, packet = _parts(case)
    k, s = split_sa_blob(key + salt)
    assert (k, s) == (key, salt)
    sa = OutboundSA(spi, k, s, seq=seq - 1, iv_mask=int.from_bytes(iv, "big") ^ seq)
    assert sa.seal(nh, payload) == packet


def test_case_12_is_the_last_packet_an_sa_may_send():
    """Case 12 carries sequence number 2^32-1: after it the SA refuses to send (no wrap,
    RFC 4303 3.3.3) and the refusal consumes nothing."""
    key, spi, seq, salt, iv, payload, nh, packet = _parts(CASES[-1])
    assert seq == SEQ_MAX
    sa = OutboundSA(spi, key, salt, seq=seq - 1, iv_mask=int.from_bytes(iv, "big") ^ seq)
    assert sa.seal(nh, payload) == packet
    assert sa.remaining == 0
    for _ in range(2):
        with pytest.raises(SecurityError) as e:
            sa.seal(nh, payload)
        assert e.value.reason == "seq-exhausted"
    assert sa.seq == SEQ_MAX


def test_case_4_spi_zero_is_refused():
    """Case 4 uses SPI 0, which RFC 4303 2.1 reserves and forbids on the wire: both halves of an
    SA refuse it."""
    with pytest.raises(SecurityConfigError):
        OutboundSA(0, bytes(16), bytes(4))
    with pytest.raises(SecurityConfigError):
        InboundSA(0, bytes(16), bytes(4))
