"""HKDF-SHA256 (RFC 5869) and HMAC-SHA256 (RFC 2104) on ``hashlib``, with precomputed keys.

Every SA haha derives costs HMAC computations (:mod:`haha.security.keys`), and a home agent
serving a node group derives a node's SAs whenever the node's cipher context was evicted, so at
100,000 nodes the derivation is paid per packet. ``cryptography``'s ``HKDF`` objects cost about
13 us a derivation; this module computes the same octets in a few microseconds:

- HMAC-SHA256 of key ``K`` is ``H((K' ^ opad) || H((K' ^ ipad) || m))`` with ``K'`` the key
  padded with zeros to the 64-octet block (hashed first when longer, RFC 2104 2).
  :class:`HmacKey` hashes the two padded blocks once and copies the two SHA-256 states for each
  message, so a key used many times (a salt, a group key's PRK, a pair's PRK) costs two
  compression-function runs less per message than a fresh HMAC, and no key schedule at all.
- :func:`extract` and :func:`expand` are RFC 5869 2.2 and 2.3; :func:`hkdf` is both.
  ``hmac.digest(key, msg, "sha256")`` gives the same octets but costs about 4 us a call here
  (OpenSSL looks the digest up by name every time), more than the whole derivation of one SA
  with precomputed keys.

The octets are those of RFC 5869 (``tests/test_security_hkdf.py`` checks its SHA-256 test cases
A.1 to A.3 and equality with ``cryptography``'s HKDF over random inputs).
"""

from hashlib import sha256

__all__ = ["HASH_LEN", "HmacKey", "expand", "extract", "hkdf", "hmac_sha256"]

HASH_LEN = 32  # SHA-256 output, RFC 5869's HashLen
_BLOCK = 64  # SHA-256 block size (RFC 2104's B)
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
#: ``bytes((i,))`` for the expand counter 1..255 (RFC 5869 2.3), made once.
_COUNTER = tuple(bytes((i,)) for i in range(256))
MAX_LENGTH = 255 * HASH_LEN  # RFC 5869 2.3: L <= 255 * HashLen


def _block(key: bytes) -> bytes:
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    return key.ljust(_BLOCK, b"\0")


class HmacKey:
    """HMAC-SHA256 under one ``key``, with the padded key blocks hashed once (module
    docstring). :meth:`digest` is ``hmac.digest(key, message, "sha256")``."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)):
            raise TypeError(f"an HMAC key is bytes, not {type(key).__name__}")
        block = _block(bytes(key))
        self._inner = sha256(block.translate(_IPAD))
        self._outer = sha256(block.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        """HMAC-SHA256 of ``message`` (32 octets)."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def expand(self, info: bytes, length: int) -> bytes:
        """RFC 5869 HKDF-Expand with this key as the PRK: ``length`` octets of OKM."""
        if length <= HASH_LEN:  # one block: the usual case (an SA's key, salt and SPI)
            if length < 0:
                raise ValueError(f"HKDF output length {length} is negative")
            return self.digest(info + b"\x01")[:length]
        if length > MAX_LENGTH:
            raise ValueError(f"HKDF output length {length} is above 255 * 32")
        okm = t = b""
        for i in range(1, -(-length // HASH_LEN) + 1):
            t = self.digest(t + info + _COUNTER[i])
            okm += t
        return okm[:length]

    def __repr__(self) -> str:  # never the key
        return "<HmacKey>"


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key`` used once (RFC 2104)."""
    block = _block(bytes(key))
    return sha256(block.translate(_OPAD)
                  + sha256(block.translate(_IPAD) + message).digest()).digest()


def extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 HKDF-Extract: the PRK (32 octets) of ``ikm`` under ``salt`` (an empty salt is
    HashLen zero octets, which HMAC's zero padding makes the same key)."""
    return hmac_sha256(salt, ikm)


def expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand: ``length`` octets (at most 255 * 32) of OKM from ``prk``."""
    if len(prk) < HASH_LEN:
        raise ValueError(f"an HKDF PRK is at least {HASH_LEN} octets, not {len(prk)}")
    return HmacKey(prk).expand(info, length)


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-SHA256: extract then expand."""
    return HmacKey(extract(salt, ikm)).expand(info, length)
