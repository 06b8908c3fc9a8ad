"""Benchmark of the wire codec: encode+decode operations per second, one case per message type.

One operation is the full path a home agent runs for a signalling packet, both ways:

- ``value`` (haha): ``encode_mh``/``encode_icmpv6`` (checksum included) -> ``build_packet`` ->
  ``parse_packet`` -> ``decode_mh``/``decode_icmpv6`` (checksum verified) -> a message object.
- baseline ``struct`` (the floor): the same bytes built with one precompiled ``struct.Struct``
  per case whose layout (fixed fields, padding, options at their offsets) is known in advance,
  the same checksum arithmetic (``haha.wire.checksum.checksum``/``verify``, the packed-address
  flavour of what the codec calls) computed and patched in, the 40-octet IPv6
  header (and Home Address option / type 2 routing header where the case has one) packed in
  front; then the IPv6 header unpacked, the checksum verified with the same function and the
  Mobility Header / ICMPv6 fields unpacked into a tuple of ints and 16-octet ``bytes`` at their
  known offsets. No objects, no validation, no option walking, no IPv6Address: the least work
  that produces and reads those bytes in Python. The bench checks that the floor's bytes equal
  the codec's, so both do the same work.
- baseline ``scapy`` (types scapy knows): ``bytes(IPv6(...)/[ext headers]/Layer(...))`` (scapy
  computes the checksum) and ``IPv6(raw)`` to dissect it, the same message and addresses.

The codec keeps a bounded cache of decoded prefixes (``haha/wire/options.py``); repeating one
message, this bench always hits it, as refreshes of the same mobile router do. Nothing else is
cached: addresses, messages and packets are built anew every time.

Prints one JSON object (``{"bench": "codec", "results": [...]}``); every value is operations per
second of the process's CPU time (``time.process_time``), the best of many short rounds in which
codec, floor and scapy take turns, all measured in the same run. ``--quick`` keeps the run
under 30 seconds.
"""

import argparse
import json
import os
import struct
import sys
import time
from ipaddress import IPv6Address as A
from ipaddress import IPv6Network as N

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.wire import checksum as ck  # noqa: E402
from haha.wire.icmpv6 import DhaadReply, DhaadRequest, decode_icmpv6, encode_icmpv6  # noqa: E402
from haha.wire.ipv6 import build_packet, parse_packet  # noqa: E402
from haha.wire.mh import (  # noqa: E402
    BA_K,
    BA_R,
    BU_A,
    BU_H,
    BU_R,
    BindingAck,
    BindingError,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingRefreshRequest,
    BindingUpdate,
    HaHello,
    HaSwitchRequest,
    HomeAgentSwitch,
    decode_mh,
    encode_mh,
)
from haha.wire.options import (  # noqa: E402
    AlternateCareOfAddress,
    BceInfo,
    BindingRefreshAdvice,
    IpAddress,
    MobileNetworkPrefix,
)

HA = A("2001:db8:1::1")
HA2 = A("2001:db8:5::1")
HOA = A("2001:db8:1::100")
COA = A("2001:db8:2::5")
MNP = N("2001:db8:100::/48")

_IP6 = struct.Struct("!IHBB16s16s")
_DST_HAO = struct.Struct("!BB BBBB BB16s".replace(" ", ""))  # next, len 2, PadN(2), HAO
_RH2 = struct.Struct("!BBBBI16s")


def _case(name, message, src, dst, proto, floor_fmt, floor_values, hao=None, rh2=None, scapy=None):
    return {
        "name": name,
        "message": message,
        "src": src,
        "dst": dst,
        "proto": proto,
        "floor": struct.Struct(floor_fmt),
        "floor_values": floor_values,
        "hao": hao,
        "rh2": rh2,
        "scapy": scapy,
    }


def _p(a):
    return a.packed


def cases():
    """The messages, each with its struct layout for the floor (offsets from the MH start)."""
    c = []
    c.append(_case(
        "BRR", BindingRefreshRequest(), HA, HOA, 135,
        "!BBBBHH",  # header, Reserved
        (59, 0, 0, 0, 0, 0),
        scapy=lambda L, I: I(src=str(HA), dst=str(HOA)) / L.MIP6MH_BRR(),
    ))
    c.append(_case(
        "BU", BindingUpdate(0x1234, BU_A | BU_H, 150, (AlternateCareOfAddress(COA),)),
        COA, HA, 135,
        "!BBBBHHHH BB BB16s".replace(" ", ""),  # fixed, PadN(0), Alt CoA at 14
        (59, 3, 5, 0, 0, 0x1234, BU_A | BU_H, 150, 1, 0, 3, 16, _p(COA)),
        hao=HOA,
        scapy=lambda L, I: I(src=str(COA), dst=str(HA)) / L.IPv6ExtHdrDestOpt(
            options=[L.HAO(hoa=str(HOA))]) / L.MIP6MH_BU(
            seq=0x1234, flags="AH", mhtime=150, options=[L.MIP6OptAltCoA(acoa=str(COA))]),
    ))
    c.append(_case(
        "BA", BindingAck(0, 0x1234, 150, BA_K | BA_R, (BindingRefreshAdvice(140),)),
        HA, COA, 135,
        "!BBBBHBBHH BBH".replace(" ", ""),  # fixed, BRA at 12
        (59, 1, 6, 0, 0, 0, BA_K | BA_R, 0x1234, 150, 2, 2, 140),
        rh2=HOA,
        scapy=lambda L, I: I(src=str(HA), dst=str(COA)) / L.IPv6ExtHdrRouting(
            type=2, addresses=[str(HOA)], segleft=1) / L.MIP6MH_BA(
            status=0, flags="KR", seq=0x1234, mhtime=150,
            options=[L.MIP6OptBRAdvice(rinter=140)]),
    ))
    c.append(_case(
        "BE", BindingError(1, HOA), HA, COA, 135,
        "!BBBBHBB16s".replace(" ", ""),
        (59, 2, 7, 0, 0, 1, 0, _p(HOA)),
        scapy=lambda L, I: I(src=str(HA), dst=str(COA)) / L.MIP6MH_BE(status=1, ha=str(HOA)),
    ))
    c.append(_case(
        "HAS", HomeAgentSwitch((HA2,)), HA, HOA, 135,
        "!BBBBHBB16s".replace(" ", ""),
        (59, 2, 12, 0, 0, 1, 0, _p(HA2)),
    ))
    c.append(_case(
        "HELLO", HaHello(7, 10, 1800, 5, 64, HA, (MobileNetworkPrefix(MNP),)), HA, HA2, 135,
        "!BBBBHHHHHBB16s BBBB BBBB16s".replace(" ", ""),  # fixed, PadN(2), MNP at 36
        (59, 6, 200, 0, 0, 7, 10, 1800, 5, 0, 64, _p(HA), 1, 2, 0, 0, 6, 18, 0, 48,
         MNP.network_address.packed),
    ))
    c.append(_case(
        "BIR", BindingInfoRequest(0x4242, (IpAddress(4, HOA),)), HA, HA2, 135,
        "!BBBBHH BBBB BBBB16s".replace(" ", ""),  # PadN(2), IP Address at 12
        (59, 3, 201, 0, 0, 0x4242, 1, 2, 0, 0, 200, 18, 4, 128, _p(HOA)),
    ))
    c.append(_case(
        "BIU", BindingInfoUpdate(0x4242, (BceInfo(HOA, COA, BU_A | BU_H | BU_R, 9, 140, (MNP,)),)),
        HA, HA2, 135,
        "!BBBBHH BB BB16s16sHHHBB BBBB16s".replace(" ", ""),  # PadN(0), BCE at 10, MNP at 52
        (59, 8, 202, 0, 0, 0x4242, 1, 0, 201, 40, _p(HOA), _p(COA), BU_A | BU_H | BU_R, 9, 140,
         1, 0, 6, 18, 0, 48, MNP.network_address.packed),
    ))
    c.append(_case(
        "BIA", BindingInfoAck(0x4242, 0), HA2, HA, 135,
        "!BBBBHHHH BBBB".replace(" ", ""),  # fixed, PadN(2)
        (59, 1, 203, 0, 0, 0x4242, 0, 0, 1, 2, 0, 0),
    ))
    c.append(_case(
        "HASR", HaSwitchRequest((IpAddress(3, HA2),)), HA, COA, 135,
        "!BBBBHH BBBB BBBB16s".replace(" ", ""),  # PadN(2), IP Address at 12
        (59, 3, 204, 0, 0, 0, 1, 2, 0, 0, 200, 18, 3, 128, _p(HA2)),
        rh2=HOA,
    ))
    c.append(_case(
        "DHAAD request", DhaadRequest(0x77, True), COA, A("2001:db8:1::fdff:ffff:ffff:fffe"), 58,
        "!BBHHH", (144, 0, 0, 0x77, 0x8000),
        scapy=lambda L, I: I(src=str(COA), dst="2001:db8:1::fdff:ffff:ffff:fffe")
        / L.ICMPv6HAADRequest(id=0x77, R=1),
    ))
    c.append(_case(
        "DHAAD reply", DhaadReply(0x77, (HA, HA2), True), HA, COA, 58,
        "!BBHHH16s16s", (145, 0, 0, 0x77, 0x8000, _p(HA), _p(HA2)),
        scapy=lambda L, I: I(src=str(HA), dst=str(COA))
        / L.ICMPv6HAADReply(id=0x77, R=1, addresses=[str(HA), str(HA2)]),
    ))
    return c


def codec_op(case):
    msg, src, dst, hao, rh2 = case["message"], case["src"], case["dst"], case["hao"], case["rh2"]
    mh = case["proto"] == 135
    csrc = hao or src
    cdst = rh2 or dst

    def op():
        payload = encode_mh(msg, csrc, cdst) if mh else encode_icmpv6(msg, csrc, cdst)
        pkt = build_packet(src, dst, 135 if mh else 58, payload, 64, hao, rh2)
        p = parse_packet(pkt)
        if mh:
            return decode_mh(p.payload, p.source, p.destination)
        return decode_icmpv6(p.payload, p.source, p.destination)

    return op


def floor_op(case):
    fl = case["floor"]
    values = case["floor_values"]
    proto = case["proto"]
    size = fl.size
    hao, rh2 = case["hao"], case["rh2"]
    src, dst = case["src"].packed, case["dst"].packed
    csrc = hao.packed if hao else src
    cdst = rh2.packed if rh2 else dst
    cks_at = 2 if proto == 58 else 4
    checksum, verify = ck.checksum, ck.verify
    ip6, dsthao, rh2s = _IP6, _DST_HAO, _RH2

    def op():
        body = bytearray(fl.pack(*values))
        struct.pack_into("!H", body, cks_at, checksum(csrc, cdst, proto, body))
        ext = b""
        nh = proto
        if hao:
            ext = dsthao.pack(nh, 2, 1, 2, 0, 0, 0xC9, 16, csrc)
            nh = 60
        if rh2:
            ext = rh2s.pack(nh, 2, 2, 1, 0, cdst) + ext
            nh = 43
        pkt = ip6.pack(0x60000000, len(ext) + size, nh, 64, src, dst) + ext + body
        # -- decode --
        _v, plen, nh, _h, s, d = ip6.unpack_from(pkt)
        off = 40
        hs, hd = s, d
        while nh in (43, 60):
            if nh == 43:
                hd = pkt[off + 8 : off + 24]
            else:
                hs = pkt[off + 8 : off + 24]
            nh = pkt[off]
            off += (pkt[off + 1] + 1) * 8
        up = pkt[off : 40 + plen]
        if not verify(hs, hd, nh, up):
            raise ValueError("checksum")
        return fl.unpack(up)

    return op


def floor_bytes(case):
    """The floor's upper-layer bytes (to check it builds what the codec builds)."""
    fl = case["floor"]
    body = bytearray(fl.pack(*case["floor_values"]))
    csrc = (case["hao"] or case["src"]).packed
    cdst = (case["rh2"] or case["dst"]).packed
    struct.pack_into("!H", body, 2 if case["proto"] == 58 else 4,
                     ck.checksum(csrc, cdst, case["proto"], body))
    return bytes(body)


def scapy_op(case):
    import scapy.layers.inet6 as L  # test/bench dependency only: never imported by haha/
    from scapy.layers.inet6 import IPv6

    build = case["scapy"]

    def op():
        return IPv6(bytes(build(L, IPv6)))

    return op


def _time(op, n):
    # CPU time of this process, not wall-clock time: on a machine shared with other jobs the
    # wall clock also counts their time slices, which would make the ratios random.
    t0 = time.process_time()
    for _ in range(n):
        op()
    return time.process_time() - t0


def rates(ops, repeats):
    """Operations per second of each ``(op, n)``: the best of ``repeats`` rounds, the ops taking
    turns within each round so that a busy moment of the machine hits them alike."""
    best = [float("inf")] * len(ops)
    for _ in range(repeats):
        for i, (op, n) in enumerate(ops):
            best[i] = min(best[i], _time(op, n) / n)
    return [1.0 / b for b in best]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (under 30 s)")
    ap.add_argument("--case", action="append", help="run only this case (repeatable)")
    args = ap.parse_args(argv)
    n, n_scapy, repeats = (1000, 40, 12) if args.quick else (2000, 100, 30)
    results = []
    for case in cases():
        if args.case and case["name"] not in args.case:
            continue
        mh = case["proto"] == 135
        csrc = case["hao"] or case["src"]
        cdst = case["rh2"] or case["dst"]
        ours = (encode_mh if mh else encode_icmpv6)(case["message"], csrc, cdst)
        if ours != floor_bytes(case):
            raise SystemExit(f"{case['name']}: struct floor bytes differ from the codec's\n"
                             f"  codec {ours.hex()}\n  floor {floor_bytes(case).hex()}")
        op = codec_op(case)
        if op() != case["message"]:
            raise SystemExit(f"{case['name']}: codec round trip differs")
        fop = floor_op(case)
        fop()
        ops = [(op, n), (fop, n)]
        if case["scapy"] is not None:
            sop = scapy_op(case)
            sop()
            ops.append((sop, n_scapy))
        measured = rates(ops, repeats)
        baselines = {"struct": round(measured[1])}
        if case["scapy"] is not None:
            baselines["scapy"] = round(measured[2])
        results.append({
            "case": case["name"],
            "metric": "encode+decode of a complete IPv6 packet",
            "unit": "ops/s",
            "value": round(measured[0]),
            "baselines": baselines,
        })
    print(json.dumps({"bench": "codec", "results": results}))


if __name__ == "__main__":
    main()
