"""Benchmark: what boot epochs cost a receiving home agent, per inbound ESP packet.

- ``epoch-open``: ``unprotect`` of a genuine packet on an epoch-keyed SA (the epoch read from
  the IV, then the usual checks); baseline ``plain-open``: the same on an SA without epochs.
- ``new-epoch-try``: a packet announcing a later generation under a wrong key, on an SA with
  an unlimited budget of tries -- the receiver derives that epoch's keys (HKDF-SHA256) and
  fails the ICV; baseline ``forged-same-epoch``: a forged packet under the current epoch (ICV
  fails, nothing derived).
- ``forged-new-epoch-flood``: the same packets through the SA database with the default budget
  (10 tries at once, 5 a second): what a flood of them costs per packet once the budget is
  spent.

Rounds alternate ours and the baselines; medians are reported. Prints one JSON object;
``--quick`` keeps it under 30 s.
"""

import argparse
import json
import os
import statistics
import sys
import time
from ipaddress import IPv6Address

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.security import SecurityAssociationDatabase, SecurityError  # noqa: E402
from haha.security.epoch import EpochInboundSA, new_epoch  # noqa: E402
from haha.security.esp import OutboundSA  # noqa: E402
from haha.security.keys import derive_pair, derive_sa  # noqa: E402

HA1 = IPv6Address("2001:db8:1::1")
HA2 = IPv6Address("2001:db8:2::1")


def _rate(fn, packets):
    t = time.perf_counter()
    for p in packets:
        fn(p)
    return (time.perf_counter() - t) / len(packets) * 1e6  # us per packet


def _refused(db):
    def unprotect(p):
        try:
            db.unprotect(HA1, p)
        except SecurityError:
            return
        raise AssertionError("a forged packet was accepted")
    return unprotect


def _refused_sa(sa):
    def open_(p):
        try:
            sa.open(p)
        except SecurityError:
            return
        raise AssertionError("a forged packet was accepted")
    return open_


def _rekey(secret):
    def rekey(epoch):
        d = derive_sa(secret, HA1, HA2, epoch=epoch)
        return d.key, d.salt
    return rekey


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds (under 30 s)")
    args = p.parse_args(argv)
    rounds, per_round = (7, 3000) if args.quick else (21, 20000)
    secret = os.urandom(32)
    epoch = new_epoch(time.time())
    payload = os.urandom(64)
    results = {k: [] for k in ("epoch-open", "plain-open", "new-epoch-try",
                               "forged-same-epoch", "forged-new-epoch-flood")}
    spi = derive_sa(secret, HA1, HA2).spi
    for _ in range(rounds):
        tx = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA1, HA2, epoch=epoch))
        rx = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA2, HA1, epoch=1))
        ptx = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA1, HA2))
        prx = SecurityAssociationDatabase.from_specs(derive_pair(secret, HA2, HA1))
        rx.unprotect(HA1, tx.protect(HA2, 135, payload))  # learn the epoch
        genuine = [tx.protect(HA2, 135, payload) for _ in range(per_round)]
        plain = [ptx.protect(HA2, 135, payload) for _ in range(per_round)]
        wrong = os.urandom(16), os.urandom(4)
        later = [OutboundSA(spi, *wrong, iv_mask=epoch + ((i + 1) << 24), seq=i).seal(
            135, payload) for i in range(per_round // 10)]
        same = [OutboundSA(spi, *wrong, iv_mask=epoch, seq=per_round + i).seal(135, payload)
                for i in range(per_round // 10)]
        results["epoch-open"].append(_rate(lambda q: rx.unprotect(HA1, q), genuine))
        results["plain-open"].append(_rate(lambda q: prx.unprotect(HA1, q), plain))
        unlimited = EpochInboundSA(spi, _rekey(secret), epoch=epoch, peer=HA1,
                                   tries=1e12, burst=1e12)
        results["new-epoch-try"].append(_rate(_refused_sa(unlimited), later))
        results["forged-same-epoch"].append(_rate(_refused(rx), same))
        results["forged-new-epoch-flood"].append(_rate(_refused(rx), later))
    med = {k: round(statistics.median(v), 2) for k, v in results.items()}
    print(json.dumps({
        "benchmark": "epoch", "unit": "us per inbound packet", "rounds": rounds,
        "per_round": per_round, "median": med,
        "epoch_overhead_genuine": round(med["epoch-open"] / med["plain-open"], 2),
        "new_epoch_try_vs_forged": round(med["new-epoch-try"] / med["forged-same-epoch"], 2),
        "flood_vs_forged": round(med["forged-new-epoch-flood"] / med["forged-same-epoch"], 2),
    }))


if __name__ == "__main__":
    main()
