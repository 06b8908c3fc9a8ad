"""Classic BPF (the ``SO_ATTACH_FILTER`` dialect) for the AF_PACKET receiver of :mod:`haha.io.raw`.

Three small pieces, written for haha and nothing else:

- :class:`Assembler`: builds a program from named instructions and labels, resolving forward
  jumps and refusing a conditional jump further than 255 instructions (the ``jt``/``jf`` fields
  are 8 bits) or a backward one (classic BPF has no loops).
- :func:`mobility_filter`: the program haha attaches. It sees an IPv6 packet from its fixed
  header on (an ``AF_PACKET``/``SOCK_DGRAM`` socket strips the link layer), refuses our own
  outgoing copies (``PACKET_OUTGOING``), optionally keeps only packets whose destination is one
  of a set of addresses (or multicast), walks a bounded number of Hop-by-Hop, Destination
  Options and Routing headers and accepts the packet when the chain ends in a Mobility Header
  (135), ESP (50), IPv6-in-IPv6 (41) or one of a set of ICMPv6 types.
- :func:`run`: a pure-Python interpreter of the same instruction set, used by the tests (next
  to the kernel itself, in a network namespace) and by the in-memory socket fake.

Instruction layout: ``struct sock_filter { u16 code; u8 jt; u8 jf; u32 k; }`` (linux/filter.h).
"""

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address

# Instruction classes, sizes, modes, operations and sources (linux/bpf_common.h).
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
W, H, B = 0x00, 0x08, 0x10
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0)
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
K, X = 0x00, 0x08
RET_A = 0x10
TAX, TXA = 0x00, 0x80

#: Ancillary data offsets (linux/filter.h): ``SKF_AD_OFF + SKF_AD_PKTTYPE`` loads skb->pkt_type.
SKF_AD_OFF = -0x1000
SKF_AD_PKTTYPE = 4
#: sll_pkttype / skb->pkt_type values (linux/if_packet.h).
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)

#: ICMPv6 types every mobility receiver wants: Router Advertisement (RFC 4861, with RFC 6275
#: 7.1's H flag), DHAAD request/reply and Mobile Prefix Solicitation/Advertisement (RFC 6275 6.5-6.8).
DEFAULT_ICMP_TYPES = frozenset({134, 144, 145, 146, 147})
#: Neighbour Solicitation/Advertisement, for a daemon that answers proxy ND itself.
ND_ICMP_TYPES = frozenset({135, 136})
#: Upper layers that are always mobility traffic: IPv6-in-IPv6, ESP, Mobility Header.
MOBILITY_PROTOCOLS = (41, 50, 135)
#: Extension headers the filter walks (RFC 8200 4): Hop-by-Hop, Routing, Destination Options.
WALKED_HEADERS = (0, 43, 60)
#: A returned length this large keeps the whole packet.
ACCEPT_ALL = 0x40000

_INSN = struct.Struct("=HBBI")
_MASK = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Insn:
    """One ``struct sock_filter``."""

    code: int
    jt: int = 0
    jf: int = 0
    k: int = 0


class BpfError(ValueError):
    """A program that cannot be assembled (undefined label, jump out of range, too long)."""


class Assembler:
    """Collects instructions with symbolic jump targets, then :meth:`assemble` resolves them.

    Jump targets are label names or ``None`` (fall through to the next instruction).
    """

    MAX_INSNS = 4096  # BPF_MAXINSNS

    def __init__(self) -> None:
        #: (code, jt, jf, k); jt, jf and (for JA) k may be labels
        self._items: list[tuple[int, str | None, str | None, int | str]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> "Assembler":
        if name in self._labels:
            raise BpfError(f"label {name!r} defined twice")
        self._labels[name] = len(self._items)
        return self

    def _emit(self, code: int, jt: str | None = None, jf: str | None = None,
              k: int | str = 0) -> "Assembler":
        self._items.append((code, jt, jf, k))
        return self

    # loads and stores
    def ld_abs(self, offset: int, size: int = W) -> "Assembler":
        return self._emit(LD | size | ABS, k=offset & _MASK)

    def ld_ind(self, offset: int, size: int = B) -> "Assembler":
        return self._emit(LD | size | IND, k=offset & _MASK)

    def ld_ancillary(self, which: int) -> "Assembler":
        return self._emit(LD | W | ABS, k=(SKF_AD_OFF + which) & _MASK)

    def ld_mem(self, slot: int) -> "Assembler":
        return self._emit(LD | MEM, k=slot)

    def ldx_imm(self, value: int) -> "Assembler":
        return self._emit(LDX | W | IMM, k=value & _MASK)

    def st(self, slot: int) -> "Assembler":
        return self._emit(ST, k=slot)

    def alu(self, op: int, value: int) -> "Assembler":
        return self._emit(ALU | op | K, k=value & _MASK)

    def alu_x(self, op: int) -> "Assembler":
        return self._emit(ALU | op | X)

    def tax(self) -> "Assembler":
        return self._emit(MISC | TAX)

    # jumps and returns
    def jeq(self, value: int, jt: str | None = None, jf: str | None = None) -> "Assembler":
        return self._emit(JMP | JEQ | K, jt, jf, value & _MASK)

    def jge(self, value: int, jt: str | None = None, jf: str | None = None) -> "Assembler":
        return self._emit(JMP | JGE | K, jt, jf, value & _MASK)

    def ld_len(self) -> "Assembler":
        return self._emit(LD | W | LEN)

    def jset(self, value: int, jt: str | None = None, jf: str | None = None) -> "Assembler":
        return self._emit(JMP | JSET | K, jt, jf, value & _MASK)

    def ja(self, target: str) -> "Assembler":
        return self._emit(JMP | JA, k=target)

    def ret(self, value: int) -> "Assembler":
        return self._emit(RET | K, k=value & _MASK)

    def assemble(self) -> tuple[Insn, ...]:
        """The program as a tuple of :class:`Insn`."""
        if len(self._items) > self.MAX_INSNS:
            raise BpfError(f"program of {len(self._items)} instructions, at most {self.MAX_INSNS}")
        out: list[Insn] = []
        for pc, (code, jt, jf, k) in enumerate(self._items):
            t = f = 0
            if code == JMP | JA:
                k = self._offset(pc, k, 0xFFFFFFFF)
            elif code & 0x07 == JMP:
                t, f = self._offset(pc, jt, 255), self._offset(pc, jf, 255)
            assert isinstance(k, int)
            out.append(Insn(code, t, f, k))
        return tuple(out)

    def _offset(self, pc: int, target: int | str | None, limit: int) -> int:
        if target is None:
            return 0
        if not isinstance(target, str) or target not in self._labels:
            raise BpfError(f"undefined label {target!r}")
        off = self._labels[target] - pc - 1
        if off < 0:
            raise BpfError(f"backward jump to {target!r} at instruction {pc}")
        if off > limit:
            raise BpfError(f"jump to {target!r} at instruction {pc} spans {off} > {limit}")
        return off


def pack(program: Iterable[Insn]) -> bytes:
    """The bytes of the ``struct sock_filter`` array (native byte order)."""
    return b"".join(_INSN.pack(i.code, i.jt, i.jf, i.k) for i in program)


def unpack(data: bytes) -> tuple[Insn, ...]:
    """Inverse of :func:`pack`."""
    if len(data) % _INSN.size:
        raise BpfError(f"{len(data)} octets is not a whole number of instructions")
    return tuple(Insn(*t) for t in _INSN.iter_unpack(data))


def mobility_filter(icmp_types: Iterable[int] = DEFAULT_ICMP_TYPES,
                    addresses: Iterable[IPv6Address] | None = None, max_headers: int = 4,
                    protocols: Iterable[int] = MOBILITY_PROTOCOLS) -> tuple[Insn, ...]:
    """The classic BPF program that lets only mobility traffic reach Python.

    ``protocols``: the upper layers accepted (default :data:`MOBILITY_PROTOCOLS`; without 41
    when the kernel decapsulates IPv6-in-IPv6 itself, ``netlink`` backend).

    ``addresses`` (IPv6Address values): when given, only packets whose fixed-header destination
    is one of them or is multicast (ff00::/8) pass. ``max_headers`` bounds how many
    Hop-by-Hop/Destination Options/Routing headers are walked before giving up.
    """
    icmp_types = sorted(set(icmp_types))
    for t in icmp_types:
        if not 0 <= t <= 255:
            raise BpfError(f"ICMPv6 type {t} out of range")
    if not 1 <= max_headers <= 8:
        raise BpfError(f"max_headers {max_headers} out of range 1-8")
    a = Assembler()
    # Early refusals return in place: a jump to the far "reject" could exceed 255.
    a.ld_ancillary(SKF_AD_PKTTYPE).jeq(PACKET_OUTGOING, None, "not_outgoing").ret(0)
    a.label("not_outgoing")
    a.ld_len().jge(40, None, "short")
    a.ld_abs(0, B).alu(AND, 0xF0).jeq(0x60, "ipv6", None)
    a.label("short").ret(0)
    a.label("ipv6")
    if addresses is not None:
        a.ld_abs(24, B).jeq(0xFF, None, "addr0").ja("chain")  # multicast destination
        a.label("addr0")
        for n, addr in enumerate(sorted(set(addresses))):
            words = struct.unpack("!4I", addr.packed)
            nxt = f"addr{n + 1}"
            for i, w in enumerate(words):
                a.ld_abs(24 + 4 * i, W).jeq(w, None, nxt)
            a.ja("chain")
            a.label(nxt)
        a.ret(0)
        a.label("chain")
    a.ld_abs(6, B).ldx_imm(40)
    for n in range(max_headers + 1):
        for proto in protocols:
            a.jeq(proto, "accept")
        a.jeq(58, "icmp")
        if n == max_headers:
            break
        a.jeq(WALKED_HEADERS[0], "ext%d" % n)
        a.jeq(WALKED_HEADERS[1], "ext%d" % n)
        a.jeq(WALKED_HEADERS[2], "ext%d" % n, "reject")
        # X: offset of this extension header; its next header goes to M[0], its length
        # ((Hdr Ext Len + 1) * 8, RFC 8200 4.3-4.6) moves X to the next header.
        a.label("ext%d" % n)
        a.ld_ind(0, B).st(0)
        a.ld_ind(1, B).alu(ADD, 1).alu(LSH, 3).alu_x(ADD).tax()
        a.ld_mem(0)
    a.ja("reject")
    a.label("icmp")
    a.ld_ind(0, B)
    for t in icmp_types:
        a.jeq(t, "accept")
    a.label("reject")
    a.ret(0)
    a.label("accept")
    a.ret(ACCEPT_ALL)
    return a.assemble()


def run(program: Sequence[Insn], packet: bytes, pkttype: int = PACKET_HOST) -> int:
    """Interpret ``program`` on ``packet`` as the kernel would; return the accepted length.

    An out-of-range packet load or a division by zero ends the program with 0, like the kernel.
    Only the ancillary load of ``SKF_AD_PKTTYPE`` is supported.
    """
    a = x = 0
    mem = [0] * 16
    pc = 0
    n = len(packet)
    size_of = {W: 4, H: 2, B: 1}
    while True:
        if pc >= len(program):
            raise BpfError("program runs off its end")
        i = program[pc]
        code, k = i.code, i.k
        cls = code & 0x07
        pc += 1
        if cls in (LD, LDX):
            mode, size = code & 0xE0, code & 0x18
            if mode == IMM:
                val = k
            elif mode == MEM:
                val = mem[k]
            elif mode == LEN:
                val = n
            elif mode in (ABS, IND) and cls == LD:
                off = (k + (x if mode == IND else 0)) & _MASK
                if mode == ABS and off >= (SKF_AD_OFF & _MASK):
                    if off != (SKF_AD_OFF + SKF_AD_PKTTYPE) & _MASK:
                        raise BpfError(f"unsupported ancillary load {off - (1 << 32)}")
                    val = pkttype
                else:
                    w = size_of[size]
                    if off + w > n:
                        return 0
                    val = int.from_bytes(packet[off:off + w], "big")
            elif mode == MSH and cls == LDX:
                if k >= n:
                    return 0
                val = (packet[k] & 0x0F) * 4
            else:
                raise BpfError(f"bad load 0x{code:02x}")
            if cls == LD:
                a = val
            else:
                x = val
        elif cls == ST:
            mem[k] = a
        elif cls == STX:
            mem[k] = x
        elif cls == ALU:
            op = code & 0xF0
            src = x if code & X else k
            if op == ADD:
                a = (a + src) & _MASK
            elif op == SUB:
                a = (a - src) & _MASK
            elif op == MUL:
                a = (a * src) & _MASK
            elif op in (DIV, MOD):
                if src == 0:
                    return 0
                a = a // src if op == DIV else a % src
            elif op == OR:
                a |= src
            elif op == AND:
                a &= src
            elif op == LSH:
                a = (a << src) & _MASK if src < 32 else 0
            elif op == RSH:
                a = a >> src if src < 32 else 0
            elif op == NEG:
                a = (-a) & _MASK
            elif op == XOR:
                a ^= src
            else:
                raise BpfError(f"bad ALU op 0x{code:02x}")
        elif cls == JMP:
            op = code & 0xF0
            if op == JA:
                pc += k
                continue
            src = x if code & X else k
            if op == JEQ:
                taken = a == src
            elif op == JGT:
                taken = a > src
            elif op == JGE:
                taken = a >= src
            elif op == JSET:
                taken = bool(a & src)
            else:
                raise BpfError(f"bad jump 0x{code:02x}")
            pc += i.jt if taken else i.jf
        elif cls == RET:
            return a if code & 0x18 == RET_A else k
        elif cls == MISC:
            if code & 0xF8 == TXA:
                a = x
            else:
                x = a
