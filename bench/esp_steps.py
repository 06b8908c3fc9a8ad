"""Benchmark: where the time of an ESP protect + unprotect goes, step by step.

``bench/esp.py`` compares haha's protect + unprotect of a Binding Information Update with the
bare AES-GCM calls. This bench splits the difference into cumulative steps, each doing the
previous step's work plus one layer, all on the same 104-octet BIU in the same run:

1. ``aesgcm``: ``AESGCM.encrypt`` + ``decrypt`` (as bench/esp.py's baseline);
2. ``framing-floor``: plus the unavoidable ESP byte handling -- header and IV packing, nonce
   and AAD slicing, the trailer, stripping it -- with no checks and no state (bench/esp.py's
   floor);
3. ``sa``: ``OutboundSA.seal`` + ``InboundSA.open``: plus what makes it ESP in one SA --
   sequence numbers and their limit, the IV, the next header and length checks, the
   anti-replay window, the padding check, the authenticated-packet count -- and one Python
   call per direction;
4. ``database``: ``SecurityAssociationDatabase.protect`` + ``unprotect`` (what haha runs and
   bench/esp.py measures): plus the SA lookup by peer and by SPI, the source check, the drop
   counters and one more call per direction.

Every ``value`` is nanoseconds of process CPU time per operation (one protect + one unprotect),
the median of rounds in which the steps take turns; ``baselines`` gives step 1 (``aesgcm``) and
the step before, so ``value - baselines["previous"]`` is what the step adds. Prints one JSON
object; ``--quick`` keeps it under 30 s.
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from haha.security import SecurityAssociationDatabase  # noqa: E402
from haha.security.esp import InboundSA, OutboundSA  # noqa: E402
from haha.security.keys import derive_pair  # noqa: E402
from haha.wire.numbers import IPPROTO_MH  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from esp import HA1, HA2, _biu  # noqa: E402


def steps():
    """``[(name, what it adds, loop(n))]``, cumulative, on the same BIU."""
    biu = _biu()
    secret = os.urandom(32)
    out_spec = next(s for s in derive_pair(secret, HA1, HA2) if s.direction == "out")
    in_spec = next(s for s in derive_pair(secret, HA2, HA1) if s.direction == "in")
    assert (out_spec.spi, out_spec.key) == (in_spec.spi, in_spec.key)

    aead = AESGCM(out_spec.key)
    enc, dec = aead.encrypt, aead.decrypt
    nonce, aad = os.urandom(12), os.urandom(8)

    def bare(n):
        for _ in range(n):
            dec(nonce, enc(nonce, biu, aad), aad)

    head_iv = struct.Struct("!IIQ")
    salt = out_spec.salt
    pad = -(len(biu) + 2) % 4
    trailer = bytes(range(1, pad + 1)) + bytes((pad, IPPROTO_MH))

    def floor(n):
        for seq in range(1, n + 1):
            head = head_iv.pack(0x1234, seq, seq)
            esp = head + enc(salt + head[8:], biu + trailer, head[:8])
            plain = dec(salt + esp[8:16], esp[16:], esp[:8])
            plain[: len(plain) - 2 - plain[-2]]

    sealer = OutboundSA(out_spec.spi, out_spec.key, out_spec.salt, peer=HA2)
    opener = InboundSA(in_spec.spi, in_spec.key, in_spec.salt, peer=HA1)
    seal, open_ = sealer.seal, opener.open
    assert open_(seal(IPPROTO_MH, biu))[:2] == (IPPROTO_MH, biu)

    def sa(n):
        for _ in range(n):
            open_(seal(IPPROTO_MH, biu))

    sender = SecurityAssociationDatabase.from_specs([out_spec])
    receiver = SecurityAssociationDatabase.from_specs([in_spec])
    protect, unprotect = sender.protect, receiver.unprotect
    assert unprotect(HA1, protect(HA2, IPPROTO_MH, biu)) == (HA1, IPPROTO_MH, biu)

    def database(n):
        for _ in range(n):
            unprotect(HA1, protect(HA2, IPPROTO_MH, biu))

    return [
        ("aesgcm", "AESGCM.encrypt + decrypt", bare),
        ("framing-floor", "ESP byte handling, no checks, no state", floor),
        ("sa", "OutboundSA.seal + InboundSA.open: sequence numbers, IV, checks, anti-replay "
               "window, padding check", sa),
        ("database", "SecurityAssociationDatabase.protect + unprotect: SA lookup, source "
                     "check, drop counters", database),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (under 30 s)")
    args = p.parse_args(argv)
    rounds, per_round = (9, 10000) if args.quick else (31, 40000)
    todo = steps()
    runs = {name: [] for name, _, _ in todo}
    for _ in range(rounds):
        for name, _, loop in todo:
            t = time.process_time()
            loop(per_round)
            runs[name].append((time.process_time() - t) / per_round * 1e9)
    med = {k: statistics.median(v) for k, v in runs.items()}
    results = []
    previous = None
    for name, what, _ in todo:
        baselines = {"aesgcm": round(med["aesgcm"])}
        if previous is not None:
            baselines["previous"] = round(med[previous])
        results.append({
            "case": f"{name}: {what}",
            "metric": "CPU time per protect+unprotect of a "
                      f"{len(_biu())}-octet BIU (AES-128-GCM, ICV 16), median of {rounds} rounds",
            "unit": "ns",
            "value": round(med[name]),
            "baselines": baselines,
        })
        previous = name
    print(json.dumps({"bench": "esp_steps", "results": results}))


if __name__ == "__main__":
    main()
