"""Benchmark: ESP protect + unprotect of a Binding Information Update, against bare AES-GCM.

One operation is ``protect`` by the sending home agent's SA database plus ``unprotect`` by the
receiving one (anti-replay window, source check, padding check included). Baselines, measured
in the same run on the same bytes: ``aesgcm`` -- the bare ``AESGCM.encrypt`` + ``decrypt``
calls of the cryptography package (same key size, 8-octet AAD, 12-octet nonce) that our ESP
makes once each per operation; ``framing-floor`` -- those calls plus only the unavoidable ESP
byte handling (header and IV packing, trailer, nonce and AAD slicing), with no checks and no
state, to show how much of the gap is Python framing itself.

A third case measures the same operation when the SAs' cipher contexts are not cached
(``evicted``: databases with a cipher cache of one context, alternating between two peers, so
every packet rebuilds its AES-GCM context: what an SA costs after the cipher cache,
``[security] cipher-cache``, evicted it).

Rounds alternate ours and the baselines, and the median of the rounds is reported, so a busy
machine slows all of them alike. Prints one JSON object; ``--quick`` keeps it under 30 s.
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time
from ipaddress import IPv6Address

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from haha.security import SecurityAssociationDatabase  # noqa: E402
from haha.security.keys import derive_pair  # noqa: E402
from haha.wire.mh import BindingInfoUpdate, encode_mh  # noqa: E402
from haha.wire.numbers import IPPROTO_MH  # noqa: E402
from haha.wire.options import BceInfo  # noqa: E402

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")


def _biu():
    entries = tuple(
        BceInfo(IPv6Address(f"2001:db8:100::{i}"), IPv6Address(f"2001:db8:77::{i}"), 0xC000, i,
                900)
        for i in (1, 2)
    )
    return encode_mh(BindingInfoUpdate(4242, entries), HA1, HA2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (under 30 s)")
    args = p.parse_args(argv)
    rounds, per_round = (9, 10000) if args.quick else (31, 50000)

    biu = _biu()
    secret = os.urandom(32)
    sender = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA1, HA2))
    receiver = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA2, HA1))
    key = os.urandom(16)
    aead = AESGCM(key)
    enc, dec = aead.encrypt, aead.decrypt
    nonce, aad = os.urandom(12), os.urandom(8)
    protect, unprotect = sender.protect, receiver.unprotect
    head_iv = struct.Struct("!IIQ")
    salt = os.urandom(4)
    pad = -(len(biu) + 2) % 4
    trailer = bytes(range(1, pad + 1)) + bytes((pad, IPPROTO_MH))
    assert unprotect(HA1, protect(HA2, IPPROTO_MH, biu)) == (HA1, IPPROTO_MH, biu)
    ha3 = IPv6Address("2001:db8:3::1")
    cold_s = SecurityAssociationDatabase.from_specs(
        derive_pair(secret, HA1, HA2) + derive_pair(secret, HA1, ha3), cipher_cache=1)
    cold_r2 = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA2, HA1),
                                                     cipher_cache=1)
    cold_r3 = SecurityAssociationDatabase.from_specs(derive_pair(secret, ha3, HA1),
                                                     cipher_cache=1)

    def ours(n):
        for _ in range(n):
            unprotect(HA1, protect(HA2, IPPROTO_MH, biu))

    def evicted(n):
        for i in range(n):
            if i & 1:
                cold_r3.unprotect(HA1, cold_s.protect(ha3, IPPROTO_MH, biu))
            else:
                cold_r2.unprotect(HA1, cold_s.protect(HA2, IPPROTO_MH, biu))

    def bare(n):
        for _ in range(n):
            dec(nonce, enc(nonce, biu, aad), aad)

    def floor(n):
        for seq in range(1, n + 1):
            head = head_iv.pack(0x1234, seq, seq)
            esp = head + enc(salt + head[8:], biu + trailer, head[:8])
            plain = dec(salt + esp[8:16], esp[16:], esp[:8])
            plain[: len(plain) - 2 - plain[-2]]

    runs = {"ours": [], "aesgcm": [], "framing-floor": [], "evicted": []}
    for _ in range(rounds):
        for name, fn in (("ours", ours), ("aesgcm", bare), ("framing-floor", floor),
                         ("evicted", evicted)):
            t = time.perf_counter()
            fn(per_round)
            runs[name].append(per_round / (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "bench": "esp",
        "results": [
            {
                "case": f"protect+unprotect BIU ({len(biu)} octets, AES-128-GCM, ICV 16)",
                "metric": "operations per second (one protect + one unprotect)",
                "unit": "op/s",
                "value": round(med["ours"]),
                "baselines": {"aesgcm": round(med["aesgcm"]),
                              "framing-floor": round(med["framing-floor"])},
            },
            {
                "case": "slowdown against bare AES-GCM (goal: at most 2)",
                "metric": "aesgcm op/s divided by ours, median of rounds",
                "unit": "ratio",
                "value": round(statistics.median(
                    a / o for a, o in zip(runs["aesgcm"], runs["ours"])), 3),
                "baselines": {"framing-floor": round(statistics.median(
                    a / f for a, f in zip(runs["aesgcm"], runs["framing-floor"])), 3)},
            },
            {
                "case": "protect+unprotect with the SAs' cipher contexts evicted (rebuilt for "
                        "every packet)",
                "metric": "operations per second (one protect + one unprotect)",
                "unit": "op/s",
                "value": round(med["evicted"]),
                "baselines": {"ours (contexts cached)": round(med["ours"])},
            },
        ],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
