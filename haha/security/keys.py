"""Key files, key generation and per-pair SA derivation for manual keying.

Key files
    A key file holds one secret as hexadecimal text (whitespace, an optional ``0x`` and ``#``
    comments are ignored). :func:`load_key_file` refuses a file that is not a regular file, that
    group or others may read or write (any of the bits 077), or that belongs to another user than
    root or the daemon's own; the error names the file and its mode, never its contents.

    Two kinds of secret are used (``docs/security.md``):

    - an **SA blob** ``key || salt`` (20, 28 or 36 octets): exactly the key blob Linux takes in
      ``ip xfrm state ... aead 'rfc4106(gcm(aes))' 0x<blob> 128``; split with
      :func:`split_sa_blob`;
    - a **derivation secret** (16 to 64 octets, 32 by default): one per mobile node shared by the
      home-agent set and the node, or one for the whole home-agent set, from which
      :func:`derive_sa` computes every SA of every pair.

Generating keys
    ``haha-keys generate FILE`` writes a fresh 32-octet secret with mode 0600
    (``--sa-key-bits 128`` writes an SA blob instead, ``--force`` replaces a file).
    ``haha-keys derive --secret FILE --local A --peer B`` prints the derived
    SPIs; ``... xfrm ...`` prints the ``ip xfrm state`` commands for a Linux peer (with keys;
    ``--policies`` adds the ``ip xfrm policy`` lines protecting the Mobility Header).

Derivation (``docs/security.md`` gives it byte by byte)::

    OKM  = HKDF-SHA256(IKM = secret, salt = "haha-esp-sa-v1",
                       info = key_len(1 octet) || sender(16) || receiver(16), L = key_len + 8)
    key  = OKM[0 : key_len]
    salt = OKM[key_len : key_len + 4]
    SPI  = 256 + (uint32_be(OKM[key_len + 4 : key_len + 8]) mod (2^32 - 256))

``sender`` and ``receiver`` are the SA's two identities (a home agent's address, a mobile node's
home address), so the two directions of a pair, and every pair, get unrelated keys, salts and
SPIs, and both ends compute them without configuring any.

Between home agents the sender's **boot epoch** (:mod:`haha.security.epoch`) is mixed in: the
SPI stays as above, the key and salt come from::

    OKM' = HKDF-SHA256(IKM = secret, salt = "haha-esp-epoch-v1",
                       info = key_len || sender || receiver || epoch (8 octets, big endian),
                       L = key_len + 4)

Node groups (``docs/security.md``, "Node groups"): instead of one secret per mobile node in the
home agents' configuration, one *group key* derives each node's secret from its home address::

    node secret = HKDF-SHA256(IKM = group key, salt = "haha-node-secret-v1",
                              info = home address(16), L = 32)

The home agents hold only the group key and derive a node's SAs when it first shows up;
``python -m haha.security.keys node-secret --group-key FILE --home-address A OUT`` writes the
node's own key file.
"""

import argparse
import json
import os
import stat
import sys
from hashlib import sha256
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv6Address

from .errors import KeyFileError, SecurityConfigError
from .esp import KEY_LENGTHS, MIN_SPI, SALT_LEN
from .hkdf import _IPAD, _OPAD, HASH_LEN, HmacKey
from .sadb import HOME_AGENT, ROLES, SaSpec, _address

HKDF_SALT = b"haha-esp-sa-v1"
HKDF_EPOCH_SALT = b"haha-esp-epoch-v1"
NODE_SECRET_SALT = b"haha-node-secret-v1"
SECRET_LENGTHS = range(16, 65)
DEFAULT_SECRET_LEN = 32
SA_BLOB_LENGTHS = tuple(k + SALT_LEN for k in KEY_LENGTHS)
_MAX_FILE = 4096


def _parse_hex(text: str, path: str) -> bytes:
    if "#" not in text and "x" not in text and "X" not in text:
        # The common file (one hexadecimal line): bytes.fromhex skips the whitespace between
        # pairs. Anything it refuses takes the general path below, which explains the error.
        try:
            return bytes.fromhex(text)
        except ValueError:
            pass
    chunks = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        chunks.append("".join(line.split()))
    digits = "".join(chunks)
    if digits[:2] in ("0x", "0X"):
        digits = digits[2:]
    try:
        if len(digits) % 2:
            raise ValueError
        return bytes.fromhex(digits)
    except ValueError:
        raise KeyFileError(
            f"key file {path} is not hexadecimal text ({len(digits)} characters after comments "
            "and spaces are removed; an even number of 0-9a-f is expected)"
        ) from None


def load_key_file(path: str, lengths: Collection[int] | None = None) -> bytes:
    """The octets of the key file at ``path``.

    Raises :class:`KeyFileError` naming the file when it cannot be opened, is not a regular
    file, has any group/other permission bit (mode & 077), belongs to a user other than root or
    the effective user, is not hexadecimal text, or (when ``lengths`` is given) holds a number
    of octets not in ``lengths``.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise KeyFileError(f"cannot open key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"key file {path} has mode {mode:04o}: group and others must have no access "
                f"(run: chmod 600 {path})"
            )
        if st.st_uid not in (0, os.geteuid()):
            raise KeyFileError(
                f"key file {path} belongs to uid {st.st_uid}, neither root nor this process "
                f"(uid {os.geteuid()})"
            )
        data = os.read(fd, _MAX_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_FILE:
        raise KeyFileError(f"key file {path} is larger than {_MAX_FILE} octets")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not ASCII hexadecimal text") from None
    secret = _parse_hex(text, path)
    if lengths is not None and len(secret) not in lengths:
        want = ", ".join(str(n) for n in sorted(set(lengths)))
        if isinstance(lengths, range):
            want = f"{lengths.start}-{lengths.stop - 1}"
        raise KeyFileError(f"key file {path} holds {len(secret)} octets; expected {want}")
    return secret


def load_secret(path: str) -> bytes:
    """A derivation secret (16 to 64 octets) from ``path``; see :func:`load_key_file`."""
    return load_key_file(path, SECRET_LENGTHS)


def split_sa_blob(blob: bytes) -> tuple[bytes, bytes]:
    """``(key, salt)`` from an RFC 4106 key blob ``key || salt`` (20, 28 or 36 octets)."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) not in SA_BLOB_LENGTHS:
        n = len(blob) if isinstance(blob, (bytes, bytearray)) else type(blob).__name__
        raise SecurityConfigError(f"an rfc4106 key blob is 20, 28 or 36 octets, not {n}")
    return bytes(blob[:-SALT_LEN]), bytes(blob[-SALT_LEN:])


def load_sa_blob(path: str) -> tuple[bytes, bytes]:
    """``(key, salt)`` from a key file holding ``key || salt``; see :func:`load_key_file`."""
    return split_sa_blob(load_key_file(path, SA_BLOB_LENGTHS))


def generate_key_file(path: str, size: int = DEFAULT_SECRET_LEN, force: bool = False,
                      rng: Callable[[int], bytes] = os.urandom) -> str:
    """Write ``size`` random octets as hex to a new file ``path`` with mode 0600.

    Refuses to replace an existing file unless ``force``; never follows a symbolic link at
    ``path``. Returns ``path``.
    """
    path = os.fspath(path)
    if not isinstance(size, int) or not 16 <= size <= 64:
        raise SecurityConfigError(f"key size {size!r} is not 16..64 octets")
    if force:
        try:
            if stat.S_ISDIR(os.lstat(path).st_mode):
                raise KeyFileError(f"{path} is a directory")
            os.unlink(path)
        except FileNotFoundError:
            pass
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file {path} exists (use --force to replace it)") from None
    except OSError as e:
        raise KeyFileError(f"cannot create key file {path}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        body = rng(size).hex()
        text = (
            f"# haha ESP key material, {size} octets, hexadecimal; keep mode 0600\n{body}\n"
        )
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


@dataclass(frozen=True)
class DerivedSa:
    """The keying of one direction of a pair, as :func:`derive_sa` computes it."""

    spi: int
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)


# The HMAC keys of the three salts (RFC 5869 extract keys HMAC with the salt), hashed once.
_SA_SALT = HmacKey(HKDF_SALT)
_EPOCH_SALT = HmacKey(HKDF_EPOCH_SALT)
_NODE_SALT = HmacKey(NODE_SECRET_SALT)
#: ``key_len`` as the one octet that starts ``info``, by key length.
_KLEN = {k: bytes((k,)) for k in KEY_LENGTHS}
#: The zeros that pad a 32-octet HMAC key to SHA-256's block (RFC 2104 2).
_ZEROS = bytes(32)
#: The number of SPIs a derivation picks from (module docstring: 256 .. 2^32 - 1).
_SPI_SPAN = 2**32 - MIN_SPI


def _check_secret(secret: bytes, what: str = "a derivation secret") -> bytes:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) not in SECRET_LENGTHS:
        raise SecurityConfigError(f"{what} is 16 to 64 octets")
    return bytes(secret)


def _check_bits(key_bits: int) -> int:
    if key_bits not in (128, 192, 256) or isinstance(key_bits, bool):
        raise SecurityConfigError(f"key_bits {key_bits!r} is not 128, 192 or 256")
    return key_bits // 8


def _check_epoch(epoch: int) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 1 << 64:
        raise SecurityConfigError(f"epoch {epoch!r} is not a 64-bit unsigned integer")


def spi_of(okm: bytes, klen: int) -> int:
    """The SPI in an SA's OKM (module docstring)."""
    return MIN_SPI + int.from_bytes(okm[klen + 4 : klen + 8], "big") % (2**32 - MIN_SPI)


class SecretKdf:
    """The derivations of one derivation ``secret`` with its PRKs computed once (RFC 5869
    extract), so that each SA costs only its expand: what a pair, a peer or a node group keeps
    for the secret it derives from again and again (a peer's new epochs, an evicted node's
    context). ``epochs``: also the PRK of the epoch salt (keys of a sender's run). Holds the
    PRKs, never the secret; a new secret needs a new object."""

    __slots__ = ("_sa", "_epoch")

    def __init__(self, secret: bytes, epochs: bool = False) -> None:
        secret = _check_secret(secret)
        self._sa = HmacKey(_SA_SALT.digest(secret))
        self._epoch = HmacKey(_EPOCH_SALT.digest(secret)) if epochs else None

    def okm(self, klen: int, sender: bytes, receiver: bytes) -> bytes:
        """The OKM (``key_len + 8`` octets: key, salt, SPI) of the SA from ``sender`` to
        ``receiver`` (16 octets each), ``klen`` 16, 24 or 32."""
        return self._sa.expand(_KLEN[klen] + sender + receiver, klen + 8)

    def epoch_keys(self, klen: int, sender: bytes, receiver: bytes, epoch: int) -> bytes:
        """``key || salt`` of the SA from ``sender`` to ``receiver`` in the sender's run
        ``epoch`` (module docstring); the object must have been made with ``epochs``."""
        prk = self._epoch
        if prk is None:
            raise SecurityConfigError("this SecretKdf was made without epochs")
        return prk.expand(_KLEN[klen] + sender + receiver + epoch.to_bytes(8, "big"), klen + 4)

    def sa(self, sender: IPv6Address, receiver: IPv6Address, key_bits: int = 128,
           epoch: int | None = None) -> DerivedSa:
        """:func:`derive_sa` of this secret."""
        klen = _check_bits(key_bits)
        s = _address(sender, "sender").packed
        r = _address(receiver, "receiver").packed
        if s == r:
            raise SecurityConfigError(f"sender and receiver are both {sender}")
        okm = self.okm(klen, s, r)
        spi = spi_of(okm, klen)
        if epoch is None:
            return DerivedSa(spi, okm[:klen], okm[klen : klen + 4])
        _check_epoch(epoch)
        keys = self.epoch_keys(klen, s, r, epoch)
        return DerivedSa(spi, keys[:klen], keys[klen:])

    def __repr__(self) -> str:  # never the secret
        return "<SecretKdf>"


def derive_sa(secret: bytes, sender: IPv6Address | str, receiver: IPv6Address | str,
              key_bits: int = 128, epoch: int | None = None) -> DerivedSa:
    """The SPI, AES key and RFC 4106 salt of the SA carrying packets from ``sender`` to
    ``receiver`` (IPv6 addresses), derived from ``secret`` (module docstring); with ``epoch``
    (a 64-bit integer) the key and salt are the sender's run's."""
    _check_secret(secret)
    _check_bits(key_bits)
    s = _address(sender, "sender")
    r = _address(receiver, "receiver")
    if s == r:
        raise SecurityConfigError(f"sender and receiver are both {s}")
    if epoch is not None:
        _check_epoch(epoch)
    return SecretKdf(secret, epochs=epoch is not None).sa(s, r, key_bits, epoch)


class GroupKdf:
    """A node group's key with its PRK computed once (RFC 5869 extract of the group key):
    :meth:`node_secret` is :func:`derive_node_secret` for one HMAC. Holds the PRK, never the
    group key; a new group key needs a new object."""

    __slots__ = ("_prk",)

    def __init__(self, group_key: bytes) -> None:
        self._prk = HmacKey(_NODE_SALT.digest(_check_secret(group_key, "a node group key")))

    def node_secret(self, home_address: bytes) -> bytes:
        """The secret (32 octets: one HMAC block) of the node whose packed home address is
        ``home_address``."""
        return self._prk.expand(home_address, DEFAULT_SECRET_LEN)

    def pair_keys(self, local: bytes, home_address: bytes, klen: int
                  ) -> tuple[int, bytes, int, bytes]:
        """``derive_pair_keys(SecretKdf(self.node_secret(home_address)), local, home_address,
        klen)``: the pair between ``local`` and the node at ``home_address`` (packed
        addresses), outbound (to the node) first, in one pass. The same HMACs (the node
        secret, its PRK under the SA salt, the two expands), written out so that none is a
        call of its own and the last one consumes the PRK's key blocks instead of copying
        them: about half the time of the composed calls, on every node's first contact with
        a home agent of its group. ``klen`` is 16, 24 or 32."""
        okm_len = klen + 8
        if okm_len > HASH_LEN:  # two blocks of OKM (AES-256): the general expand
            return derive_pair_keys(SecretKdf(self.node_secret(home_address)), local,
                                    home_address, klen)
        prk = self._prk
        # node secret = HKDF-Expand(group PRK, info = home address, L = 32): one block
        h = prk._inner.copy()
        h.update(home_address + b"\x01")
        o = prk._outer.copy()
        o.update(h.digest())
        # the pair's PRK = HKDF-Extract(salt "haha-esp-sa-v1", node secret)
        h = _SA_SALT._inner.copy()
        h.update(o.digest())
        o = _SA_SALT._outer.copy()
        o.update(h.digest())
        # its HMAC key blocks (a 32-octet key padded with zeros to the 64-octet block)
        block = o.digest() + _ZEROS
        inner = sha256(block.translate(_IPAD))
        outer = sha256(block.translate(_OPAD))
        length = _KLEN[klen]
        h = inner.copy()
        h.update(length + local + home_address + b"\x01")
        o = outer.copy()
        o.update(h.digest())
        out = o.digest()
        inner.update(length + home_address + local + b"\x01")
        outer.update(inner.digest())
        inb = outer.digest()
        end = klen + 4
        return (MIN_SPI + int.from_bytes(out[end:okm_len], "big") % _SPI_SPAN, out[:end],
                MIN_SPI + int.from_bytes(inb[end:okm_len], "big") % _SPI_SPAN, inb[:end])

    def __repr__(self) -> str:  # never the key
        return "<GroupKdf>"


#: GroupKdf by group key, for derive_node_secret: a caller deriving many nodes' secrets from
#: one key (the load generator, the tools) computes its PRK once. Keyed by the key itself, so a
#: changed key never meets another key's PRK; a few keys at most (emptied beyond that).
_GROUP_KDFS: dict[bytes, GroupKdf] = {}
_GROUP_KDFS_MAX = 8


def derive_node_secret(group_key: bytes, home_address: IPv6Address | str) -> bytes:
    """The derivation secret of the mobile node at ``home_address`` in the node group keyed by
    ``group_key`` (module docstring): 32 octets. The key's PRK is computed once per key
    (:class:`GroupKdf`)."""
    key = _check_secret(group_key, "a node group key")
    kdf = _GROUP_KDFS.get(key)
    if kdf is None:
        if len(_GROUP_KDFS) >= _GROUP_KDFS_MAX:
            _GROUP_KDFS.clear()
        kdf = _GROUP_KDFS[key] = GroupKdf(key)
    return kdf.node_secret(_address(home_address, "home address").packed)


def derive_pair_keys(kdf: SecretKdf, local: bytes, peer: bytes, klen: int
                     ) -> tuple[int, bytes, int, bytes]:
    """``(outbound SPI, key || salt, inbound SPI, key || salt)`` of the pair between ``local``
    and ``peer`` (packed addresses), both directions from one PRK: what a node group installs
    for a node, without :class:`SaSpec` objects."""
    out = kdf.okm(klen, local, peer)
    inb = kdf.okm(klen, peer, local)
    end = klen + 4
    return spi_of(out, klen), out[:end], spi_of(inb, klen), inb[:end]


def derive_pair(secret: bytes, local: IPv6Address | str, peer: IPv6Address | str,
                role: str = HOME_AGENT, key_bits: int = 128,
                sources: Iterable[IPv6Address] = (), epoch: int | None = None
                ) -> tuple[SaSpec, SaSpec]:
    """The two :class:`SaSpec` (outbound to ``peer``, inbound from it) of a pair, derived from
    ``secret``. ``local`` is this node's identity (its home agent address, or a mobile node's
    home address), ``peer`` the other end's, ``role`` what the peer is.

    With ``epoch`` (this run's boot epoch, :mod:`haha.security.epoch`) the outbound SA is keyed
    by it and the inbound SA follows the peer's epochs (its ``rekey``)."""
    if role not in ROLES:
        raise SecurityConfigError(f"role {role!r} is not one of {', '.join(ROLES)}")
    if epoch is not None:
        _check_epoch(epoch)
    local_address = _address(local, "sender")
    peer_address = _address(peer, "receiver")
    if local_address == peer_address:
        raise SecurityConfigError(f"sender and receiver are both {local_address}")
    # One PRK for both directions (and, with epochs, for every later epoch of the peer).
    kdf = SecretKdf(secret, epochs=epoch is not None)
    out = kdf.sa(local_address, peer_address, key_bits, epoch)
    inb = kdf.sa(peer_address, local_address, key_bits)
    if epoch is None:
        return (
            SaSpec(peer_address, "out", out.spi, out.key, out.salt, role=role),
            SaSpec(peer_address, "in", inb.spi, inb.key, inb.salt, role=role, sources=tuple(sources)),
        )

    def rekey(peer_epoch: int | None) -> tuple[bytes, bytes]:
        d = kdf.sa(peer_address, local_address, key_bits, peer_epoch)
        return d.key, d.salt

    # rekey(None) is the epoch-free pair a kernel-xfrm peer sends with (haha.security.epoch)
    rekey.static = True  # type: ignore[attr-defined]

    return (
        SaSpec(peer_address, "out", out.spi, out.key, out.salt, role=role, epoch=epoch),
        SaSpec(peer_address, "in", inb.spi, inb.key, inb.salt, role=role, sources=tuple(sources),
               rekey=rekey),
    )


# -- command line -----------------------------------------------------------------------------


def _xfrm_commands(secret: bytes, local: IPv6Address | str, peer: IPv6Address | str,
                   key_bits: int, policies: bool = False) -> list[str]:
    """``ip xfrm state`` lines for both directions of the pair; with ``policies`` also the
    ``ip xfrm policy`` lines that make the kernel at ``local`` protect the Mobility Header
    (protocol 135) both ways with them, in transport mode."""
    lines: list[str] = []
    for src, dst in ((local, peer), (peer, local)):
        d = derive_sa(secret, src, dst, key_bits)
        lines.append(
            f"ip xfrm state add src {src} dst {dst} proto esp spi 0x{d.spi:08x} mode transport "
            f"replay-window 64 aead 'rfc4106(gcm(aes))' 0x{(d.key + d.salt).hex()} 128"
        )
    if policies:
        for src, dst, way in ((local, peer, "out"), (peer, local, "in")):
            lines.append(
                f"ip xfrm policy add src {src}/128 dst {dst}/128 proto 135 dir {way} "
                f"tmpl src {src} dst {dst} proto esp mode transport"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``haha-keys {generate,derive,xfrm} ...``; returns an exit status."""
    p = argparse.ArgumentParser(prog="haha-keys",
                                description="haha ESP key files and derived SAs")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="write a new random key file with mode 0600")
    g.add_argument("file")
    size = g.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, default=DEFAULT_SECRET_LEN,
                      help="octets of a derivation secret (16-64, default 32)")
    size.add_argument("--sa-key-bits", type=int, choices=(128, 192, 256),
                      help="write an rfc4106 SA blob (key || 4-octet salt) instead")
    g.add_argument("--force", action="store_true", help="replace an existing file")
    for name, text in (("derive", "print the derived SPIs of a pair (no keys)"),
                       ("xfrm", "print 'ip xfrm state' commands for a Linux peer (WITH keys)")):
        d = sub.add_parser(name, help=text)
        d.add_argument("--secret", required=True, help="derivation secret key file")
        d.add_argument("--local", required=True, help="this end: HA address or home address")
        d.add_argument("--peer", required=True, help="the other end")
        d.add_argument("--key-bits", type=int, choices=(128, 192, 256), default=128)
    n = sub.add_parser("node-secret", help="write a mobile node's key file, derived from its "
                       "node group's key and its home address (mode 0600)")
    n.add_argument("--group-key", required=True, help="the node group's key file")
    n.add_argument("--home-address", required=True, help="the mobile node's home address")
    n.add_argument("file", help="the key file to write (the node's [security] key)")
    n.add_argument("--force", action="store_true", help="replace an existing file")
    sub.choices["xfrm"].add_argument(
        "--policies", action="store_true",
        help="also print 'ip xfrm policy' lines protecting the Mobility Header both ways")
    args = p.parse_args(argv)
    try:
        if args.command == "generate":
            n = args.size if args.sa_key_bits is None else args.sa_key_bits // 8 + SALT_LEN
            if args.sa_key_bits is None and not 16 <= n <= 64:
                raise SecurityConfigError(f"--size {n} is not 16..64 octets")
            generate_key_file(args.file, n, force=args.force)
            print(f"wrote {n} random octets to {args.file} (mode 0600)")
            return 0
        if args.command == "node-secret":
            hoa = _address(args.home_address, "--home-address")
            secret = derive_node_secret(load_secret(args.group_key), hoa)
            generate_key_file(args.file, len(secret), force=args.force,
                              rng=lambda n: secret)
            print(f"wrote the key of {hoa} to {args.file} (mode 0600)")
            return 0
        secret = load_secret(args.secret)
        local = _address(args.local, "--local")
        peer = _address(args.peer, "--peer")
        if args.command == "derive":
            out = derive_sa(secret, local, peer, args.key_bits)
            inb = derive_sa(secret, peer, local, args.key_bits)
            print(json.dumps({"local": str(local), "peer": str(peer), "key_bits": args.key_bits,
                              "spi_out": f"0x{out.spi:08x}", "spi_in": f"0x{inb.spi:08x}"}))
            return 0
        print("# these lines contain secret keys: do not paste them into tickets or logs",
              file=sys.stderr)
        print("\n".join(_xfrm_commands(secret, local, peer, args.key_bits, args.policies)))
        return 0
    except (KeyFileError, SecurityConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
