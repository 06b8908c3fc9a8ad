"""Benchmark: the floor, the least CPU any CPython home agent spends per Binding Update with ESP.

The issue's goal is a home agent's registration cost at most 4x a bare Twisted UDP echo per
packet. This measures, in the same run as that echo, a home agent reduced to what no CPython
home agent can leave out, so that the distance between the two says how far 4x is reachable at
all in Python. Each case runs a server in a process of its own (Twisted's default reactor, a UDP
port on 127.0.0.1, the socket buffers the load lab gives the echo) and reports the CPU that
process used per datagram answered, read from ``/proc`` (user + system, as the echo baseline of
``bench/registration.py`` and ``bench/scale.py``):

- ``echo``: :func:`haha.lab.generator.echo_main`, the bare echo (the baseline);
- ``refresh``: :class:`FloorHomeAgent` answering Binding Updates from nodes whose SA pair it
  holds, with their AES-GCM contexts built: per datagram it receives the datagram through
  Twisted; checks the one packet shape a node away from home sends (IPv6 header, Destination
  Options with PadN and a Home Address option, ESP; Payload Length against the datagram);
  looks up the SA by SPI and checks the home address is its peer; the RFC 4303 anti-replay
  check, AES-GCM open and the window moved; the trailer (padding 1, 2, 3.., pad length, next
  header 135); the Mobility Header's payload protocol, length, type and RFC 6275 6.1.1
  checksum over the pseudo-header; the Binding Update's fixed fields (sequence, flags,
  lifetime) and every mobility option's type and length; one dict lookup of the binding, the
  RFC 6275 9.5.1 sequence-number test (mod 2^16) and its update (sequence, care-of address,
  lifetime); the Binding Acknowledgement (status, K flag, sequence, lifetime, PadN, checksum)
  from a template; AES-GCM seal under the outbound SA (sequence number, IV from it and a
  per-SA mask, RFC 4303 padding); the IPv6 header and type 2 routing header; ``write``;
- ``first``: the same for a node's first contact: its SA pair derived from the group key (the
  node group of ``docs/security.md``, :meth:`haha.security.keys.GroupKdf.pair_keys`) and both
  AES-GCM contexts built before the packet is opened, kept only once it authenticated.

Every datagram is a real Binding Update, built by haha's mobile node code (its keyring, codec
and ESP), and every round opens and decodes answers with haha's code (``sadb.unprotect``,
``decode_mh``): a floor that answered wrongly would stop the run. Per round a new server
(new SAs, empty windows), the echo receiving the same datagrams; each case the best of
``--rounds``, alternating.

What the floor leaves out, all of which haha's home agent does and a deployed one must: the
general header walk (any other layout: a deployed agent needs a path for it, taken here by no
packet), admission budgets per source and peer, the security policy by message type, Binding
Updates with other flags (NEMO, deregistration, the home registration checks of RFC 6275
10.3.1 beyond the sequence number), binding lifetimes and their expiry, synchronising the
binding with the peer home agents (the Binding Information Update per peer), proxy Neighbour
Discovery and tunnel duties, events, logs, metrics, durable sequence numbers, Binding Errors,
and answers refused by a budget. It is a floor, not a home agent.

Prints one JSON object (``--quick``: fewer datagrams and rounds).
"""

import argparse
import json
import os
import struct
import sys
from ipaddress import IPv6Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GROUP_KEY = bytes(range(32, 64))
HOME_AGENT = IPv6Address("2001:db8:1::1")
FIRST_HOA = int(IPv6Address("2001:db8:1::1:0"))
FIRST_COA = int(IPv6Address("2001:db8:21::1"))
LIFETIME = 150  # 4-second units: 600 s
NODES = 1000  # nodes of the refresh case (each sends datagrams / NODES updates)

_HEAD = struct.Struct("!II")
_HEAD_IV = struct.Struct("!IIQ")
_BU_FIXED = struct.Struct("!HHH")
_BA = struct.Struct("!HBBHH")  # checksum, status, flags, sequence, lifetime (MH offset 4)
_PADS = tuple(bytes(range(1, 256))[:n] for n in range(256))
_MIN_ESP = 8 + 8 + 2 + 16
#: The first octets of a Binding Update's Destination Options header as a node sends it
#: (RFC 6275 6.3): next header ESP, 24 octets, PadN of 4 octets, Home Address option.
_DSTOPTS = bytes((50, 2, 1, 2, 0, 0, 0xC9, 16))
#: The ESP trailer of a 16-octet Mobility Header: padding 1, 2, pad length 2, next header 135.
_BA_TAIL = bytes((1, 2, 2, 135))


class _InboundSA:
    __slots__ = ("peer", "decrypt", "salt", "top", "bits")

    def __init__(self, peer, decrypt, salt):
        self.peer, self.decrypt, self.salt, self.top, self.bits = peer, decrypt, salt, 0, 1


class _OutboundSA:
    __slots__ = ("spi", "encrypt", "salt", "seq", "mask")

    def __init__(self, spi, encrypt, salt, mask):
        self.spi, self.encrypt, self.salt, self.seq, self.mask = spi, encrypt, salt, 0, mask


def floor_main(port, ready, derive_on_contact, preinstalled):
    """The floor's server (module docstring) on 127.0.0.1:``port``: with ``derive_on_contact``
    a node's pair is derived at its first packet; ``preinstalled`` nodes (0..n-1) have theirs
    from the start, contexts built."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    from haha.io.sockbuf import apply_buffers
    from haha.logging import logger
    from haha.security.keys import GroupKdf

    kdf = GroupKdf(GROUP_KEY)
    local = HOME_AGENT.packed
    local_int = int(HOME_AGENT)
    inbound = {}  # SPI -> _InboundSA
    outbound = {}  # packed home address -> _OutboundSA
    bindings = {}  # packed home address -> [sequence, care-of address, lifetime]
    urandom = os.urandom
    from_bytes = int.from_bytes
    head_iv = _HEAD_IV.pack
    unpack_head = _HEAD.unpack_from
    unpack_bu = _BU_FIXED.unpack_from
    pack_ba = _BA.pack
    dstopts = _DSTOPTS
    pads = _PADS
    ba_tail = _BA_TAIL
    ba_head = b"\x3b\x01\x06\x00"  # payload proto 59, 16 octets, type BA, reserved
    ba_pad = b"\x01\x02\x00\x00"  # PadN to the 8-octet multiple
    drops = {"shape": 0, "sa": 0, "replay": 0, "auth": 0, "trailer": 0, "mh": 0,
             "sequence": 0}

    def install(hoa):
        out_spi, out_keys, in_spi, in_keys = kdf.pair_keys(local, hoa, 16)
        sa_in = _InboundSA(hoa, AESGCM(in_keys[:16]).decrypt, in_keys[16:])
        sa_out = _OutboundSA(out_spi, AESGCM(out_keys[:16]).encrypt, out_keys[16:],
                             from_bytes(urandom(8), "big"))
        return in_spi, sa_in, sa_out

    for i in range(preinstalled):
        hoa = IPv6Address(FIRST_HOA + i).packed
        spi, sa_in, sa_out = install(hoa)
        inbound[spi] = sa_in
        outbound[hoa] = sa_out

    class Floor(DatagramProtocol):
        def datagramReceived(self, data, addr):  # noqa: N802 - Twisted hook
            n = len(data)
            if n < 64 + _MIN_ESP or data[0] >> 4 != 6 or data[6] != 60 \
                    or data[40:48] != dstopts or 40 + ((data[4] << 8) | data[5]) != n:
                drops["shape"] += 1
                return
            hoa = data[48:64]
            spi, seq = unpack_head(data, 64)
            sa = inbound.get(spi)
            fresh = None
            if sa is None:
                if not derive_on_contact:
                    drops["sa"] += 1
                    return
                in_spi, sa, sa_out = install(hoa)
                if in_spi != spi:
                    drops["sa"] += 1
                    return
                fresh = sa_out
            elif sa.peer != hoa:
                drops["sa"] += 1
                return
            top = sa.top
            if seq <= top and (top - seq >= 64 or (sa.bits >> (top - seq)) & 1):
                drops["replay"] += 1
                return
            try:
                plain = sa.decrypt(sa.salt + data[72:80], data[80:], data[64:72])
            except InvalidTag:
                drops["auth"] += 1
                return
            if fresh is not None:  # authenticated: kept
                inbound[spi] = sa
                outbound[hoa] = fresh
            if seq > top:
                shift = seq - top
                sa.bits = ((sa.bits << shift) | 1) & 0xFFFFFFFFFFFFFFFF if shift < 64 else 1
                sa.top = seq
            else:
                sa.bits |= 1 << (top - seq)
            pad = plain[-2]
            end = -2 - pad
            if plain[end:-2] != pads[pad] or plain[-1] != 135:
                drops["trailer"] += 1
                return
            mh = plain[:end]
            m = len(mh)
            # RFC 6275 6.1.1: payload proto 59, length, type BU (5), checksum over the
            # pseudo-header (home address, home agent, length, 135).
            if m < 12 or mh[0] != 59 or (mh[1] + 1) << 3 != m or mh[2] != 5 \
                    or (from_bytes(hoa, "big") + local_int + m + 135
                        + from_bytes(mh, "big")) % 0xFFFF:
                drops["mh"] += 1
                return
            sequence, _flags, lifetime = unpack_bu(mh, 6)
            at = 12
            while at < m:  # mobility options: Pad1, or type, length, value within the MH
                if mh[at] == 0:
                    at += 1
                    continue
                if at + 2 > m or at + 2 + mh[at + 1] > m:
                    drops["mh"] += 1
                    return
                at += 2 + mh[at + 1]
            binding = bindings.get(hoa)
            if binding is None:
                bindings[hoa] = [sequence, data[8:24], lifetime]
            else:
                newer = (sequence - binding[0]) & 0xFFFF  # RFC 6275 9.5.1: modulo 2^16
                if not newer or newer >= 0x8000:
                    drops["sequence"] += 1
                    return
                binding[0] = sequence
                binding[1] = data[8:24]
                binding[2] = lifetime
            # The Binding Acknowledgement: status 0, its sequence and lifetime, PadN; the
            # checksum from home agent to home address (RFC 6275 6.1.1).
            fixed = pack_ba(0, 0, 0, sequence, lifetime)
            rest = (local_int + from_bytes(hoa, "big") + 16 + 135
                    + from_bytes(ba_head + fixed + ba_pad, "big")) % 0xFFFF
            ba = ba_head + pack_ba(0xFFFF - rest if rest else 0, 0, 0, sequence, lifetime) \
                + ba_pad
            out = outbound[hoa]
            oseq = out.seq = out.seq + 1
            esp_head = head_iv(out.spi, oseq, oseq ^ out.mask)
            esp = esp_head + out.encrypt(out.salt + esp_head[8:], ba + ba_tail, esp_head[:8])
            self.transport.write(
                b"\x60\x00\x00\x00" + (24 + len(esp)).to_bytes(2, "big") + b"\x2b\x40"
                + local + data[8:24] + b"\x32\x02\x02\x01\x00\x00\x00\x00" + hoa + esp, addr)

    port_ = reactor.listenUDP(port, Floor(), interface="127.0.0.1", maxPacketSize=8192)
    apply_buffers(port_.getHandle(), logger("haha.lab.load"), "floor", 8 << 20, 8 << 20)
    ready.set()
    reactor.run()


def binding_updates(first_contact, count):
    """``count`` Binding Update datagrams built by haha's mobile node code: from ``count``
    nodes once each (``first_contact``), else from :data:`NODES` nodes in turn, each with its
    sequence number rising."""
    from haha.security.keyring import NodeKeyring
    from haha.security.keys import derive_node_secret
    from haha.security.sadb import SecurityAssociationDatabase
    from haha.wire.ipv6 import build_packet
    from haha.wire.mh import BU_A, BU_H, BindingUpdate, encode_mh
    from haha.wire.numbers import IPPROTO_ESP, IPPROTO_MH

    nodes = count if first_contact else min(NODES, count)
    made = []
    for i in range(nodes):
        hoa = IPv6Address(FIRST_HOA + i)
        sadb = SecurityAssociationDatabase()
        NodeKeyring(derive_node_secret(GROUP_KEY, hoa), hoa, sadb).ensure(HOME_AGENT)
        made.append((hoa, IPv6Address(FIRST_COA + i), sadb))
    packets = []
    for k in range(count):
        hoa, coa, sadb = made[k % nodes]
        mh = encode_mh(BindingUpdate(1 + k // nodes, flags=BU_A | BU_H,
                                     lifetime=LIFETIME), hoa, HOME_AGENT)
        packets.append(build_packet(coa, HOME_AGENT, IPPROTO_ESP,
                                    sadb.protect(HOME_AGENT, IPPROTO_MH, mh), home_address=hoa))
    return packets


def check_answers(answers, sample=200):
    """Open and decode the first ``sample`` answers with haha's code (each node's pair derived
    afresh: every round's server starts its sequence numbers again); raises on one that is not
    an accepted Binding Acknowledgement. Returns the acknowledgements."""
    from haha.security.keyring import NodeKeyring
    from haha.security.keys import derive_node_secret
    from haha.security.sadb import SecurityAssociationDatabase
    from haha.wire.ipv6 import parse_packet
    from haha.wire.mh import BindingAck, decode_mh

    acks = []
    for data in answers[:sample]:
        p = parse_packet(data)
        hoa = p.destination  # the type 2 routing header's home address
        sadb = SecurityAssociationDatabase()
        NodeKeyring(derive_node_secret(GROUP_KEY, hoa), hoa, sadb).ensure(HOME_AGENT)
        _, nh, payload = sadb.unprotect(p.source, p.payload)
        ba = decode_mh(payload, p.source, p.destination)
        if type(ba) is not BindingAck or ba.status != 0 or ba.lifetime != LIFETIME:
            raise SystemExit(f"the floor answered {ba!r}")
        acks.append(ba)
    return acks


def serve_and_measure(target, args, packets, check, need_cpu=True):
    """``(CPU microseconds per datagram answered, answers)`` of a server ``target(port,
    ready, *args)`` in a process of its own, sent ``packets`` in windows of 64 (never more in
    flight than the buffers hold); every datagram must be answered, and with ``check`` the
    answers are checked (:func:`check_answers`). ``need_cpu``: refuse a run too short for
    ``/proc``'s clock ticks (a test's few datagrams are not a measurement)."""
    from haha.lab.generator import drive_server

    cpu, answers = drive_server(target, args, packets)
    if len(answers) != len(packets):
        raise SystemExit(f"{len(answers)} of {len(packets)} datagrams answered")
    if need_cpu and cpu < 3 / os.sysconf("SC_CLK_TCK"):  # /proc counts CPU in ticks (10 ms)
        raise SystemExit(f"{cpu:.3f} s of CPU for {len(answers)} datagrams: too few to "
                         "measure, raise --datagrams")
    if check:
        check_answers(answers)
    return 1e6 * cpu / len(answers), answers


def main(argv=None):
    from haha.lab.generator import echo_main

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datagrams", type=int, default=30000, help="datagrams per case and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; the best of each case is kept")
    ap.add_argument("--quick", action="store_true", help="5,000 datagrams, 2 rounds")
    args = ap.parse_args(argv)
    if args.quick:
        args.datagrams, args.rounds = 5000, 2
    if args.datagrams < NODES:
        ap.error(f"--datagrams must be at least {NODES}")
    refresh = binding_updates(False, args.datagrams)
    first = binding_updates(True, args.datagrams)
    best = {}
    for _ in range(args.rounds):
        for case, target, targs, packets, check in (
                ("echo", echo_main, (), refresh, False),
                ("refresh", floor_main, (False, NODES), refresh, True),
                ("first", floor_main, (True, 0), first, True)):
            us, _ = serve_and_measure(target, targs, packets, check)
            best[case] = min(best.get(case, us), us)
    echo = round(best["echo"], 2)
    results = [{"case": "echo", "metric": "cpu_per_datagram", "unit": "us",
                "value": echo, "datagrams": args.datagrams}]
    for case in ("refresh", "first"):
        value = round(best[case], 2)
        results.append({"case": case, "metric": "floor_cpu_per_binding_update", "unit": "us",
                        "value": value, "baselines": {"echo_per_datagram": echo},
                        "ratio_to_echo": round(value / echo, 2),
                        "datagrams": args.datagrams})
    print(json.dumps({"bench": "floor", "loadavg": os.getloadavg()[0], "rounds": args.rounds,
                      "results": results}))


if __name__ == "__main__":
    main()
