"""HKDF-SHA256 on hashlib (haha.security.hkdf) and the derivations built on it (haha.security.keys):
RFC 5869's SHA-256 test vectors, and the same octets as ``cryptography``'s HKDF, the previous
implementation of every derivation, over many random inputs."""

import hmac
import random
from ipaddress import IPv6Address

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from haha.security import keys
from haha.security.errors import SecurityConfigError
from haha.security.hkdf import HmacKey, expand, extract, hkdf, hmac_sha256

# RFC 5869 Appendix A, the SHA-256 cases: (IKM, salt, info, L, PRK, OKM).
A1 = ("0b" * 22, "000102030405060708090a0b0c", "f0f1f2f3f4f5f6f7f8f9", 42,
      "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5",
      "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
A2 = (bytes(range(0x00, 0x50)).hex(), bytes(range(0x60, 0xB0)).hex(),
      bytes(range(0xB0, 0x100)).hex(), 82,
      "06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244",
      "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
      "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
      "cc30c58179ec3e87c14c01d5c1f3434f1d87")
A3 = ("0b" * 22, "", "", 42,
      "19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04",
      "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")


def _crypto_hkdf(ikm, salt, info, length):
    """The derivation haha used before: cryptography's HKDF object."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


@pytest.mark.parametrize("case", [A1, A2, A3], ids=["A.1", "A.2", "A.3"])
def test_rfc5869_sha256_test_vectors(case):
    """extract, expand and hkdf reproduce RFC 5869's PRK and OKM for test cases A.1-A.3
    (A.2: inputs longer than a block, a three-block output; A.3: empty salt and info)."""
    ikm, salt, info, length, prk, okm = (bytes.fromhex(x) if isinstance(x, str) else x
                                         for x in case)
    assert extract(salt, ikm) == prk
    assert expand(prk, info, length) == okm
    assert hkdf(ikm, salt, info, length) == okm
    assert HmacKey(prk).expand(info, length) == okm


def test_hmac_and_hkdf_equal_the_standard_library_and_cryptography_on_random_input():
    """Over 600 random keys (0 to 150 octets: shorter, equal to and longer than the 64-octet
    block), messages and lengths (1 to 200 octets), HmacKey and hmac_sha256 equal
    hmac.digest, and hkdf equals cryptography's HKDF."""
    rng = random.Random(5869)
    for _ in range(600):
        key = rng.randbytes(rng.randrange(0, 151))
        msg = rng.randbytes(rng.randrange(0, 100))
        want = hmac.digest(key, msg, "sha256")
        assert HmacKey(key).digest(msg) == want
        assert hmac_sha256(key, msg) == want
        ikm = rng.randbytes(rng.randrange(1, 80))
        length = rng.randrange(1, 201)
        assert hkdf(ikm, key, msg, length) == _crypto_hkdf(ikm, key, msg, length)


def test_one_key_serves_many_messages_unchanged():
    """An HmacKey copies its precomputed states: digesting one message does not change the
    digest of the next (the same key, used for every node of a group)."""
    k = HmacKey(b"group")
    first = k.digest(b"a")
    k.digest(b"b" * 100)
    assert k.digest(b"a") == first == hmac.digest(b"group", b"a", "sha256")


def test_expand_refuses_what_rfc5869_does_not_define():
    """A PRK shorter than HashLen, an output above 255 * HashLen, a negative length and a key
    that is not bytes are refused; the longest output is 255 blocks."""
    with pytest.raises(ValueError):
        expand(bytes(31), b"", 10)
    with pytest.raises(ValueError):
        HmacKey(bytes(32)).expand(b"", -1)
    with pytest.raises(TypeError):
        HmacKey("not bytes")
    with pytest.raises(ValueError):
        expand(bytes(32), b"", 255 * 32 + 1)
    assert len(expand(bytes(32), b"", 255 * 32)) == 255 * 32


# -- the derivations of haha.security.keys, against the previous implementation ---------------


def _old_derive_sa(secret, sender, receiver, key_bits=128, epoch=None):
    klen = key_bits // 8
    s, r = IPv6Address(sender).packed, IPv6Address(receiver).packed
    okm = _crypto_hkdf(secret, keys.HKDF_SALT, bytes((klen,)) + s + r, klen + 8)
    spi = 256 + int.from_bytes(okm[klen + 4:klen + 8], "big") % (2**32 - 256)
    if epoch is None:
        return spi, okm[:klen], okm[klen:klen + 4]
    okm = _crypto_hkdf(secret, keys.HKDF_EPOCH_SALT,
                       bytes((klen,)) + s + r + epoch.to_bytes(8, "big"), klen + 4)
    return spi, okm[:klen], okm[klen:]


def _old_node_secret(group_key, hoa):
    return _crypto_hkdf(group_key, keys.NODE_SECRET_SALT, IPv6Address(hoa).packed, 32)


def _random_address(rng):
    return IPv6Address(rng.getrandbits(128))


def test_derivations_equal_the_previous_implementation_on_random_inputs():
    """derive_sa (with and without an epoch, 128/192/256-bit keys), derive_pair (both
    directions, and its rekey for later epochs), derive_node_secret, GroupKdf and
    derive_pair_keys give exactly what cryptography's HKDF gave, for 300 random secrets (16 to
    64 octets), address pairs and epochs: keys configured today keep working."""
    rng = random.Random(11)
    for _ in range(300):
        secret = rng.randbytes(rng.randrange(16, 65))
        a, b = _random_address(rng), _random_address(rng)
        bits = rng.choice((128, 192, 256))
        epoch = rng.getrandbits(64)
        d = keys.derive_sa(secret, a, b, bits)
        assert (d.spi, d.key, d.salt) == _old_derive_sa(secret, a, b, bits)
        d = keys.derive_sa(secret, a, b, bits, epoch)
        assert (d.spi, d.key, d.salt) == _old_derive_sa(secret, a, b, bits, epoch)
        out, inb = keys.derive_pair(secret, a, b, key_bits=bits)
        assert (out.spi, out.key, out.salt) == _old_derive_sa(secret, a, b, bits)
        assert (inb.spi, inb.key, inb.salt) == _old_derive_sa(secret, b, a, bits)
        out, inb = keys.derive_pair(secret, a, b, key_bits=bits, epoch=epoch)
        assert (out.spi, out.key, out.salt) == _old_derive_sa(secret, a, b, bits, epoch)
        later = rng.getrandbits(64)
        assert inb.rekey(later) == _old_derive_sa(secret, b, a, bits, later)[1:]
        assert inb.rekey(None) == _old_derive_sa(secret, b, a, bits)[1:]
        assert keys.derive_node_secret(secret, a) == _old_node_secret(secret, a)
        assert keys.GroupKdf(secret).node_secret(a.packed) == _old_node_secret(secret, a)
        klen = bits // 8
        spi_o, km_o, spi_i, km_i = keys.derive_pair_keys(keys.SecretKdf(secret), a.packed,
                                                         b.packed, klen)
        old_o, old_i = _old_derive_sa(secret, a, b, bits), _old_derive_sa(secret, b, a, bits)
        assert (spi_o, km_o) == (old_o[0], old_o[1] + old_o[2])
        assert (spi_i, km_i) == (old_i[0], old_i[1] + old_i[2])


def test_a_rekey_follows_each_new_epoch_with_its_own_keys():
    """derive_pair's rekey keeps the pair secret's PRKs, never a previous epoch's keys: each
    epoch asked gets the keys derived for that epoch, different from the others."""
    secret = bytes(range(32))
    a, b = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
    _, inb = keys.derive_pair(secret, a, b, epoch=1)
    seen = set()
    for epoch in (5, 6, 5 << 32, 7):
        got = inb.rekey(epoch)
        assert got == _old_derive_sa(secret, b, a, 128, epoch)[1:]
        seen.add(got)
    assert len(seen) == 4


def test_a_secret_kdf_without_epochs_refuses_epoch_keys_and_checks_its_inputs():
    """SecretKdf refuses an epoch derivation it was not made for, a bad secret, a bad key size
    and a pair with the same address at both ends, as derive_sa does."""
    kdf = keys.SecretKdf(bytes(32))
    a, b = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
    with pytest.raises(SecurityConfigError, match="without epochs"):
        kdf.sa(a, b, epoch=3)
    with pytest.raises(SecurityConfigError):
        keys.SecretKdf(bytes(15))
    with pytest.raises(SecurityConfigError):
        kdf.sa(a, b, key_bits=64)
    with pytest.raises(SecurityConfigError):
        kdf.sa(a, a)
    with pytest.raises(SecurityConfigError):
        keys.GroupKdf(bytes(65))
    assert "00" * 16 not in repr(kdf) + repr(keys.GroupKdf(bytes(32))) + repr(HmacKey(bytes(32)))


def test_node_secrets_follow_a_changed_group_key():
    """derive_node_secret keeps each group key's PRK: alternating between keys (more of them
    than it keeps) every secret is the one of the key asked for, never another key's."""
    rng = random.Random(3)
    group_keys = [rng.randbytes(32) for _ in range(12)]
    hoa = IPv6Address("2001:db8:1::100")
    for _ in range(3):
        for k in group_keys + group_keys[::-1]:
            assert keys.derive_node_secret(k, hoa) == _old_node_secret(k, hoa)


def test_group_pair_keys_in_one_pass_equal_the_composed_derivation():
    """GroupKdf.pair_keys (the node secret, its PRK and both directions written out in one
    pass) gives exactly the composed derivation's SPIs and keys (derive_pair_keys of the node
    secret), and cryptography's HKDF's, for 300 random group keys, addresses and key sizes
    (AES-256's two-block OKM included): a node group's SAs are the same after the change."""
    rng = random.Random(12)
    for _ in range(300):
        group_key = rng.randbytes(rng.randrange(16, 65))
        local, hoa = _random_address(rng), _random_address(rng)
        bits = rng.choice((128, 192, 256))
        klen = bits // 8
        kdf = keys.GroupKdf(group_key)
        got = kdf.pair_keys(local.packed, hoa.packed, klen)
        secret = kdf.node_secret(hoa.packed)
        assert got == keys.derive_pair_keys(keys.SecretKdf(secret), local.packed, hoa.packed,
                                            klen)
        old_o = _old_derive_sa(_old_node_secret(group_key, hoa), local, hoa, bits)
        old_i = _old_derive_sa(_old_node_secret(group_key, hoa), hoa, local, bits)
        assert got == (old_o[0], old_o[1] + old_o[2], old_i[0], old_i[1] + old_i[2])
