"""Coverage-guided fuzzing (atheris) of the inbound signalling path: ESP unprotect, then the
Mobility Header decoder. Not part of the test suite.

    pip install atheris
    python fuzz/fuzz_esp_mh.py -runs=200000 CORPUS_DIR   # a bounded run
    python fuzz/fuzz_esp_mh.py -max_total_time=60        # or a time budget

The first input octet picks the mode: even -- the rest is an ESP packet as received (after a
known SPI when bit 1 is set); odd -- the rest is the *plaintext* of an authentic packet,
encrypted here with the receiver's key under the next four octets as sequence number, so the
fuzzer reaches the padding checks and the MH decoder behind authentication; odd with bit 2 set
-- the rest is a Mobility Header whose Header Len and checksum the harness fixes (and pads to 8
octets) before adding a valid ESP trailer, so the fuzzer explores the message bodies and
options rather than the checksum. Anything but SecurityError or WireError escaping is a crash.
"""

import struct
import sys
from ipaddress import IPv6Address

import atheris

with atheris.instrument_imports():
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from haha.security import SaSpec, SecurityAssociationDatabase, SecurityError
    from haha.wire.checksum import checksum
    from haha.wire.errors import WireError
    from haha.wire.mh import decode_mh
    from haha.wire.numbers import IPPROTO_MH

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")
KEY = bytes(range(100, 116))
SALT = b"salt"
SPI = 0x00001000
AEAD = AESGCM(KEY)


def _fixed_mh(body):
    """``body`` as a Mobility Header with a right Header Len and checksum, plus ESP trailer."""
    mh = bytearray(body[:2040].ljust(8, b"\0"))
    mh += bytes(-len(mh) % 8)
    mh[1] = len(mh) // 8 - 1
    mh[4:6] = b"\0\0"
    mh[4:6] = checksum(HA2.packed, HA1.packed, IPPROTO_MH, bytes(mh)).to_bytes(2, "big")
    pad = -(len(mh) + 2) % 4
    return bytes(mh) + bytes(range(1, pad + 1)) + bytes((pad, IPPROTO_MH))


def one_input(data):
    if not data:
        return
    mode, rest = data[0], data[1:]
    db = SecurityAssociationDatabase.from_specs([SaSpec(HA2, "in", SPI, KEY, SALT)])
    if mode & 1:
        seq = int.from_bytes(rest[:4].ljust(4, b"\0"), "big")
        plain = rest[4:]
        if mode & 4:
            plain = _fixed_mh(plain)
        head = struct.pack("!II", SPI, seq)
        iv = struct.pack("!Q", seq)
        esp = head + iv + AEAD.encrypt(SALT + iv, plain, head)
    elif mode & 2:
        esp = struct.pack("!I", SPI) + rest
    else:
        esp = rest
    try:
        _peer, nh, payload = db.unprotect(HA2, esp)
        if nh == IPPROTO_MH:
            decode_mh(payload, HA2, HA1)
    except (SecurityError, WireError):
        pass


def main():
    atheris.instrument_all()  # what instrument_imports missed (already imported submodules)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()  # libFuzzer prints "Done N runs" when -runs or -max_total_time ends it


if __name__ == "__main__":
    main()
