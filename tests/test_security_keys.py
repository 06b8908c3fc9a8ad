"""Key files, the key generator and HKDF derivation of per-pair SAs (haha.security.keys).

Key files with any group/other permission are refused with an error naming the file and mode;
the generator writes mode 0600 from the shell; the derivation matches an independent RFC 5869
HKDF written here from the RFC and the construction documented in docs/security.md, and both
ends of a pair derive matching SAs without configuring SPIs.
"""

import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
from ipaddress import IPv6Address

import pytest

from haha.security import SecurityAssociationDatabase
from haha.security.errors import KeyFileError, SecurityConfigError
from haha.security.keys import (
    derive_pair,
    derive_sa,
    generate_key_file,
    load_sa_blob,
    load_secret,
    main,
)

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")
MN = IPv6Address("2001:db8:100::42")
SECRET = bytes(range(32))


def _write(path, text, mode):
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o610, 0o601, 0o777])
def test_group_or_other_access_is_refused_naming_file_and_mode(tmp_path, mode):
    """Any permission bit for group or others makes start-up refuse the key file, with an error
    that names the file and its mode and says how to fix it, and never shows the key."""
    f = _write(tmp_path / "ha.key", SECRET.hex() + "\n", mode)
    with pytest.raises(KeyFileError) as e:
        load_secret(f)
    msg = str(e.value)
    assert str(f) in msg and f"{mode:04o}" in msg and "chmod 600" in msg
    assert SECRET.hex() not in msg


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_files_load(tmp_path, mode):
    """Mode 0600 and 0400 files load; whitespace, a 0x prefix and # comments are ignored."""
    text = "# comment\n0x" + SECRET[:16].hex() + "  \n " + SECRET[16:].hex() + " # tail\n"
    f = _write(tmp_path / "ha.key", text, mode)
    assert load_secret(f) == SECRET


@pytest.mark.parametrize(
    "text, fragment",
    [("zz" * 16, "not hexadecimal"), ("abc", "not hexadecimal"), ("00" * 15, "15 octets"),
     ("00" * 65, "65 octets"), ("", "0 octets")],
)
def test_malformed_key_files_are_refused_without_echoing_them(tmp_path, text, fragment):
    """Non-hex text, an odd number of digits and a wrong length are refused, naming the file."""
    f = _write(tmp_path / "bad.key", text, 0o600)
    with pytest.raises(KeyFileError) as e:
        load_secret(f)
    assert fragment in str(e.value) and str(f) in str(e.value)
    if text:
        assert text not in str(e.value)


def test_missing_file_directory_and_foreign_owner(tmp_path):
    """A missing file, a directory and a file owned by another (non-root) user are refused."""
    with pytest.raises(KeyFileError, match="cannot open"):
        load_secret(tmp_path / "nope.key")
    d = tmp_path / "dir"
    d.mkdir(mode=0o700)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_secret(d)
    f = _write(tmp_path / "other.key", SECRET.hex(), 0o600)
    if os.geteuid() == 0:
        os.chown(f, 12345, 12345)
        with pytest.raises(KeyFileError, match="uid 12345"):
            load_secret(f)


def test_sa_blob_files_give_key_and_salt(tmp_path):
    """An SA key file holds the Linux rfc4106 blob key || salt (20, 28 or 36 octets)."""
    for n in (16, 24, 32):
        blob = bytes(range(n + 4))
        f = _write(tmp_path / f"sa{n}.key", blob.hex(), 0o600)
        assert load_sa_blob(f) == (blob[:n], blob[n:])
    f = _write(tmp_path / "sa.key", "00" * 32, 0o600)
    with pytest.raises(KeyFileError, match="32 octets"):
        load_sa_blob(f)


def test_generator_writes_mode_0600_and_refuses_to_overwrite(tmp_path):
    """generate_key_file writes fresh random hex with mode 0600 even under a permissive umask,
    refuses an existing file unless forced, and never follows a symbolic link."""
    old = os.umask(0)
    try:
        f = generate_key_file(tmp_path / "a.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    first = load_secret(f)
    assert len(first) == 32
    with pytest.raises(KeyFileError, match="exists"):
        generate_key_file(f)
    generate_key_file(f, force=True)
    assert load_secret(f) != first
    target = tmp_path / "target"
    os.symlink(target, tmp_path / "link.key")
    with pytest.raises(KeyFileError):
        generate_key_file(tmp_path / "link.key")
    assert not target.exists()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "haha.security.keys", *args],
                          capture_output=True, text=True, timeout=60)


def test_shell_generator_and_derive(tmp_path):
    """`python -m haha.security.keys generate FILE` makes a 0600 key file usable at once;
    `--sa-key-bits` makes an rfc4106 blob; `derive` prints the pair's SPIs and no key."""
    f = tmp_path / "mn.key"
    r = _cli("generate", str(f))
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    secret = load_secret(f)
    r = _cli("generate", str(tmp_path / "sa.key"), "--sa-key-bits", "256")
    assert r.returncode == 0 and len(load_sa_blob(tmp_path / "sa.key")[0]) == 32
    r = _cli("generate", str(f))
    assert r.returncode == 2 and "exists" in r.stderr
    r = _cli("derive", "--secret", str(f), "--local", str(HA1), "--peer", str(MN))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["spi_out"] == f"0x{derive_sa(secret, HA1, MN).spi:08x}"
    assert out["spi_in"] == f"0x{derive_sa(secret, MN, HA1).spi:08x}"
    assert secret.hex() not in r.stdout
    os.chmod(f, 0o644)
    r = _cli("derive", "--secret", str(f), "--local", str(HA1), "--peer", str(MN))
    assert r.returncode == 2 and "0644" in r.stderr


def test_xfrm_commands_reproduce_the_derived_sas(tmp_path):
    """`xfrm` prints one `ip xfrm state add` per direction whose aead blob is key || salt of
    the derived SA and whose SPI is the derived SPI; it warns on stderr that keys follow."""
    f = tmp_path / "s.key"
    generate_key_file(f)
    secret = load_secret(f)
    r = _cli("xfrm", "--secret", str(f), "--local", str(HA1), "--peer", str(HA2))
    assert r.returncode == 0 and "secret keys" in r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, (s, d) in zip(lines, ((HA1, HA2), (HA2, HA1))):
        sa = derive_sa(secret, s, d)
        assert f"src {s} dst {d} proto esp spi 0x{sa.spi:08x} mode transport" in line
        assert f"aead 'rfc4106(gcm(aes))' 0x{(sa.key + sa.salt).hex()} 128" in line


def test_xfrm_policies_protect_the_mobility_header_both_ways(tmp_path):
    """`xfrm --policies` adds, after the two states, an outbound and an inbound policy for
    protocol 135 between the two addresses whose templates are the states' ESP in transport
    mode; without it no policy line is printed."""
    f = tmp_path / "s.key"
    generate_key_file(f)
    r = _cli("xfrm", "--secret", str(f), "--local", str(HA1), "--peer", str(HA2), "--policies")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4 and all(x.startswith("ip xfrm state add") for x in lines[:2])
    assert lines[2] == (f"ip xfrm policy add src {HA1}/128 dst {HA2}/128 proto 135 dir out "
                        f"tmpl src {HA1} dst {HA2} proto esp mode transport")
    assert lines[3] == (f"ip xfrm policy add src {HA2}/128 dst {HA1}/128 proto 135 dir in "
                        f"tmpl src {HA2} dst {HA1} proto esp mode transport")


def _hkdf_rfc5869(ikm, salt, info, length):
    """HKDF-SHA256 written from RFC 5869 section 2, independent of the cryptography package."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, t, i = b"", b"", 1
    while len(okm) < length:
        t = hmac.new(prk, t + info + bytes((i,)), hashlib.sha256).digest()
        okm += t
        i += 1
    return okm[:length]


@pytest.mark.parametrize(
    "sender, receiver, bits, spi, key, salt",
    [
        (HA1, HA2, 128, 0xC3AC7D9A, "a56ecb187a24e4c169b7aae1dd209d1c", "48fd6520"),
        (HA2, HA1, 128, 0xC2FEA04F, "2f7f1503e73ecbea1deb9e9c81257875", "9c3ecfed"),
        (HA1, MN, 256, 0xDF2B9B1F,
         "80d6cca3d5ada7f4a1c464ebb2947971199e16e1e12a674f43e6c9ecd5808d67", "5ae5857e"),
    ],
)
def test_derivation_matches_the_documented_construction(sender, receiver, bits, spi, key, salt):
    """derive_sa equals the construction of docs/security.md computed with an independent HKDF
    (these vectors are printed there for other implementations)."""
    klen = bits // 8
    okm = _hkdf_rfc5869(SECRET, b"haha-esp-sa-v1",
                        bytes((klen,)) + sender.packed + receiver.packed, klen + 8)
    want_spi = 256 + int.from_bytes(okm[klen + 4:], "big") % (2**32 - 256)
    d = derive_sa(SECRET, sender, receiver, bits)
    assert (d.spi, d.key, d.salt) == (want_spi, okm[:klen], okm[klen:klen + 4])
    assert (d.spi, d.key.hex(), d.salt.hex()) == (spi, key, salt)


def test_both_ends_derive_matching_sas_and_talk():
    """A home agent and a mobile node holding the same per-node secret derive matching SAs
    (the HA's outbound is the node's inbound and back) without configuring SPIs, and messages
    pass both ways; a second HA of the set derives different keys and SPIs for the node."""
    ha = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, HA1, MN, "mobile-node"))
    mn = SecurityAssociationDatabase.from_specs(derive_pair(SECRET, MN, HA1, "home-agent"))
    assert mn.unprotect(HA1, ha.protect(MN, 135, b"BA")) == (HA1, 135, b"BA")
    assert ha.unprotect(MN, mn.protect(HA1, 135, b"BU")) == (MN, 135, b"BU")
    assert ha.role_of(MN) == "mobile-node" and mn.role_of(HA1) == "home-agent"
    other = derive_pair(SECRET, HA2, MN, "mobile-node")
    mine = derive_pair(SECRET, HA1, MN, "mobile-node")
    assert {s.spi for s in other}.isdisjoint({s.spi for s in mine})
    assert {s.key for s in other}.isdisjoint({s.key for s in mine})


def test_derivation_refuses_bad_input():
    """Secrets outside 16-64 octets, unknown key sizes, equal or non-IPv6 addresses and unknown
    roles are refused with a configuration error."""
    for args in ((b"short", HA1, HA2), (SECRET, HA1, HA1), (SECRET, "192.0.2.1", HA2),
                 (SECRET, "nonsense", HA2)):
        with pytest.raises(SecurityConfigError):
            derive_sa(*args)
    with pytest.raises(SecurityConfigError):
        derive_sa(SECRET, HA1, HA2, key_bits=100)
    with pytest.raises(SecurityConfigError):
        derive_pair(SECRET, HA1, HA2, role="router")
    assert main(["derive", "--secret", "/nonexistent", "--local", "::1", "--peer", "::2"]) == 2
