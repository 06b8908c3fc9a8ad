"""Benchmark: the codec's speed shortcuts (haha/wire/_fast.py) against their plain forms.

Two parts, measured in the same run:

- ``codec``: whole codec paths run in two child processes, one with the shortcuts and one with
  ``HAHA_WIRE_PLAIN=1`` (the plain forms): a Binding Update with a Home Address option parsed
  and decoded (``parse_packet`` + ``decode_mh``, checksum verified), a Binding Acknowledgement
  encoded and built into a packet, and a Binding Information Update of 30 entries (each with a
  prefix) encoded and decoded. Children alternate round by round, so a busy machine slows both
  alike; each value is the median of the rounds' operations per second.
- ``helpers``: each shortcut against its plain form in this process: building an address from
  16 octets (``address_at``), reading its integer (``address_int``, and for the SA database's
  key the other candidates ``int(address)`` and ``address.packed``, each as a dict lookup),
  building a record (``maker``: a 6-field ``BceInfo``).

Prints one JSON object (``{"bench": "wire_fast", "results": [...]}``); every result has
``value`` (the shortcut), ``baselines.plain`` and ``ratio`` (shortcut over plain: above 1 means
the shortcut is faster). ``--quick`` keeps the run under 30 seconds.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from haha.wire import _fast  # noqa: E402
from haha.wire.ipv6 import build_packet, parse_packet  # noqa: E402
from haha.wire.mh import (  # noqa: E402
    BU_A,
    BU_H,
    BU_R,
    BindingAck,
    BindingInfoUpdate,
    BindingUpdate,
    decode_mh,
    encode_mh,
)
from haha.wire.numbers import IPPROTO_MH  # noqa: E402
from haha.wire.options import AlternateCareOfAddress, BceInfo, MobileNetworkPrefix  # noqa: E402

HA = A("2001:db8:1::1")
HA2 = A("2001:db8:5::1")
HOA = A("2001:db8:1::100")
COA = A("2001:db8:2::5")


def _cases():
    bu = BindingUpdate(7, BU_A | BU_H | BU_R, 100,
                       (AlternateCareOfAddress(COA), MobileNetworkPrefix(N("2001:db8:100::/48"))))
    bu_packet = build_packet(COA, HA, IPPROTO_MH, encode_mh(bu, HOA, HA), home_address=HOA)
    ba = BindingAck(0, 7, 100)
    biu = BindingInfoUpdate(9, tuple(
        BceInfo(A(f"2001:db8:1::{i:x}"), A(f"2001:db8:77::{i:x}"), BU_A | BU_H | BU_R, i, 900,
                (N(f"2001:db8:{i:x}::/48"),))
        for i in range(1, 31)))

    def decode_bu():
        p = parse_packet(bu_packet)
        return decode_mh(p.payload, p.source, p.dst)

    def encode_ba():
        return build_packet(HA, COA, IPPROTO_MH, encode_mh(ba, HA, HOA), routing_address=HOA)

    def biu_both():
        return decode_mh(encode_mh(biu, HA, HA2), HA, HA2)

    return {"decode BU (HAO, ACoA, MNP)": (decode_bu, 2000),
            "encode BA (type 2 routing header)": (encode_ba, 2000),
            "encode+decode BIU of 30 entries": (biu_both, 40)}


def child(seconds):
    """One round in a child process: ``{case: op/s}`` on stdout."""
    out = {}
    for name, (fn, batch) in _cases().items():
        n, t0 = 0, time.process_time()
        while time.process_time() - t0 < seconds:
            for _ in range(batch):
                fn()
            n += batch
        out[name] = n / (time.process_time() - t0)
    print(json.dumps({"fast": _fast.FAST, "ops": out}))


def _run_child(plain, seconds):
    env = dict(os.environ)
    env.pop("HAHA_WIRE_PLAIN", None)
    if plain:
        env["HAHA_WIRE_PLAIN"] = "1"
    got = json.loads(subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", str(seconds)], env=env,
        check=True, capture_output=True, text=True).stdout)
    if got["fast"] == plain:
        raise SystemExit(f"child asked for plain={plain} ran with FAST={got['fast']}")
    return got["ops"]


def _rate(fn, arg_sets, seconds):
    n, t0 = 0, time.process_time()
    while time.process_time() - t0 < seconds:
        for args in arg_sets:
            fn(*args)
        n += len(arg_sets)
    return n / (time.process_time() - t0)


def helpers(rounds, seconds):
    data = bytes(range(64))
    offs = [(data, off) for off in range(0, 48, 3)]
    addrs = [A(2**127 + 7919 * i) for i in range(16)]
    table_int = {int(a): a for a in addrs}
    table_packed = {a.packed: a for a in addrs}
    slot_int, plain_int = _fast._slot_address_int, _fast.plain_address_int
    fields = (HOA, COA, 0xC000, 5, 900, ())
    make_fast, make_plain = _fast._slot_maker(BceInfo), _fast.plain_maker(BceInfo)
    pairs = {
        "address_at (16 octets to IPv6Address)": (
            (_fast._slot_address_at, offs), (_fast.plain_address_at, offs)),
        "address_int (IPv6Address to int)": ((slot_int, [(a,) for a in addrs]),
                                             (plain_int, [(a,) for a in addrs])),
        "SA database key: table[address_int(a)] vs table[int(a)]": (
            (lambda a: table_int[slot_int(a)], [(a,) for a in addrs]),
            (lambda a: table_int[int(a)], [(a,) for a in addrs])),
        "SA database key: table[address_int(a)] vs table[a.packed]": (
            (lambda a: table_int[slot_int(a)], [(a,) for a in addrs]),
            (lambda a: table_packed[a.packed], [(a,) for a in addrs])),
        "maker (6-field BceInfo)": ((make_fast, [fields] * 16), (make_plain, [fields] * 16)),
    }
    out = []
    for name, ((fast, fargs), (plain, pargs)) in pairs.items():
        if [fast(*a) for a in fargs] != [plain(*a) for a in pargs]:
            raise SystemExit(f"{name}: the shortcut and the plain form disagree")
        f, p = [], []
        for _ in range(rounds):
            f.append(_rate(fast, fargs, seconds))
            p.append(_rate(plain, pargs, seconds))
        out.append(_result(name, statistics.median(f), statistics.median(p)))
    return out


def _result(case, fast, plain):
    return {"case": case, "metric": "operations per second (median of rounds)", "unit": "op/s",
            "value": round(fast), "baselines": {"plain": round(plain)},
            "ratio": round(fast / plain, 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a run under 30 seconds")
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return
    rounds, seconds = (3, 0.4) if args.quick else (7, 1.0)
    if not _fast.FAST:
        raise SystemExit("the shortcuts are off here (HAHA_WIRE_PLAIN or a failed self-check)")
    runs = {True: [], False: []}
    for _ in range(rounds):
        for plain in (False, True):
            runs[plain].append(_run_child(plain, seconds))
    results = []
    for case in runs[False][0]:
        fast = statistics.median(r[case] for r in runs[False])
        plain = statistics.median(r[case] for r in runs[True])
        results.append(_result(f"codec: {case}", fast, plain))
    results += helpers(rounds, seconds / 4)
    print(json.dumps({"bench": "wire_fast", "results": results}))


if __name__ == "__main__":
    main()
