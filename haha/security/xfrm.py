"""The kernel's IPsec databases (Linux xfrm) behind a small typed seam.

haha's ``kernel-xfrm`` and ``external`` security modes (:mod:`haha.security.kernelmode`) read
and change the kernel's Security Association Database and Security Policy Database only through
an :class:`XfrmSeam`:

- :class:`IpXfrm` runs iproute2's ``ip xfrm`` (optionally ``ip -n NETNS``). Commands that carry
  keys go through ``ip -batch -`` on standard input, never on a command line (which any user can
  read in ``/proc``). Listings are parsed from ``ip xfrm state`` / ``ip xfrm policy``; keys in
  them are never kept.
- :class:`FakeXfrm` is the same contract in memory, for tests on a host without kernel ESP; it
  can be told to fail the next operations.

Only what haha needs is modelled: transport-mode ESP states with an ``rfc4106(gcm(aes))`` key,
and policies whose selector is two prefixes and an upper-layer protocol (with an ICMPv6 type),
with one ESP template.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass, field, replace
from ipaddress import IPv6Address, IPv6Network
from typing import Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple

from .errors import SecurityConfigError

#: Upper-layer protocols by the names ``ip xfrm`` may print instead of numbers.
_PROTO_NAMES = {"ipv6-icmp": 58, "icmpv6": 58, "mobility-header": 135, "mh": 135,
                "esp": 50, "tcp": 6, "udp": 17, "ipv6": 41}
IPPROTO_ANY = 0


class XfrmError(Exception):
    """The kernel (or ``ip``) refused an xfrm operation; the text names the entry, never a
    key."""


@dataclass(frozen=True)
class XfrmState:
    """One ESP SA in transport mode. ``blob`` is the RFC 4106 key blob ``key || salt`` (empty
    in listings read back from the kernel); ``oseq`` the last outbound sequence number already
    used (the next packet carries ``oseq + 1``)."""

    src: IPv6Address
    dst: IPv6Address
    spi: int
    reqid: int = 0
    blob: bytes = field(default=b"", repr=False, compare=False)
    replay_window: int = 64
    oseq: int = 0
    proto: str = "esp"
    mode: str = "transport"

    @property
    def key(self) -> Tuple[IPv6Address, IPv6Address, int]:
        """What identifies the SA in the kernel: destination, SPI (and source)."""
        return (self.src, self.dst, self.spi)


@dataclass(frozen=True)
class XfrmPolicy:
    """One policy: packets ``src`` -> ``dst`` of ``proto`` (0: any; ``icmp_type`` for ICMPv6)
    in direction ``dir`` (``in``, ``out``, ``fwd``) need ESP between ``tmpl_src`` and
    ``tmpl_dst`` (transport mode: unspecified template addresses), under SA ``reqid`` (0: any),
    ``level`` ``required`` or ``use`` (optional). ``has_esp`` False: a policy without an ESP
    template (``allow``/``block``, or AH)."""

    src: IPv6Network
    dst: IPv6Network
    proto: int
    dir: str
    reqid: int = 0
    level: str = "required"
    icmp_type: Optional[int] = None
    tmpl_src: Optional[IPv6Address] = None
    tmpl_dst: Optional[IPv6Address] = None
    has_esp: bool = True
    action: str = "allow"
    priority: int = 0

    @property
    def key(self) -> Tuple[IPv6Network, IPv6Network, int, Optional[int], str]:
        """What identifies the policy in the kernel: its selector and direction."""
        return (self.src, self.dst, self.proto, self.icmp_type, self.dir)

    def requires_esp(self) -> bool:
        """Whether a packet this policy selects is dropped by the kernel unless it was (in) or
        will be (out) protected by ESP."""
        return self.action == "allow" and self.has_esp and self.level == "required"

    def covers(self, src: IPv6Address, dst: IPv6Address, proto: int,
               icmp_type: Optional[int] = None) -> bool:
        """Whether the selector selects a packet ``src`` -> ``dst`` of ``proto``."""
        if src not in self.src or dst not in self.dst:
            return False
        if self.proto not in (IPPROTO_ANY, proto):
            return False
        return self.icmp_type is None or self.icmp_type == icmp_type


class XfrmSeam(Protocol):
    """What :mod:`haha.security.kernelmode` needs of the kernel's xfrm databases."""

    def states(self) -> List[XfrmState]:
        """Every SA (keys left out)."""

    def policies(self) -> List[XfrmPolicy]:
        """Every policy of the main type."""

    def add_states(self, states: Sequence[XfrmState]) -> None:
        """Add SAs (all or, on :class:`XfrmError`, possibly some)."""

    def delete_states(self, states: Sequence[XfrmState]) -> None:
        """Delete SAs by destination, SPI and source; one already gone is no error."""

    def add_policies(self, policies: Sequence[XfrmPolicy]) -> None:
        """Add policies."""

    def delete_policies(self, policies: Sequence[XfrmPolicy]) -> None:
        """Delete policies by selector and direction; one already gone is no error."""


# -- ip xfrm command lines ---------------------------------------------------------------------


def _selector(p: XfrmPolicy) -> str:
    text = f"src {p.src} dst {p.dst}"
    if p.proto != IPPROTO_ANY:
        text += f" proto {p.proto}"
        if p.icmp_type is not None:
            text += f" type {p.icmp_type}"
    return text


def state_add_line(s: XfrmState) -> str:
    """The ``ip -batch`` line adding ``s`` (it contains the key)."""
    if len(s.blob) not in (20, 28, 36):
        raise SecurityConfigError(f"SA {s.src} -> {s.dst} spi 0x{s.spi:08x}: an rfc4106 key "
                                  "blob is 20, 28 or 36 octets")
    line = (f"xfrm state add src {s.src} dst {s.dst} proto esp spi 0x{s.spi:08x} "
            f"reqid {s.reqid} mode transport replay-window {s.replay_window}")
    if s.oseq:
        line += f" replay-oseq {s.oseq}"
    return line + f" aead rfc4106(gcm(aes)) 0x{s.blob.hex()} 128"


def state_delete_line(s: XfrmState) -> str:
    """The ``ip -batch`` line deleting ``s``."""
    return f"xfrm state delete src {s.src} dst {s.dst} proto esp spi 0x{s.spi:08x}"


def policy_add_line(p: XfrmPolicy) -> str:
    """The ``ip -batch`` line adding ``p`` (transport-mode ESP template)."""
    tsrc = p.tmpl_src if p.tmpl_src is not None else "::"
    tdst = p.tmpl_dst if p.tmpl_dst is not None else "::"
    return (f"xfrm policy add {_selector(p)} dir {p.dir} priority {p.priority} "
            f"tmpl src {tsrc} dst {tdst} proto esp reqid {p.reqid} mode transport "
            f"level {p.level}")


def policy_delete_line(p: XfrmPolicy) -> str:
    """The ``ip -batch`` line deleting ``p``."""
    return f"xfrm policy delete {_selector(p)} dir {p.dir}"


# -- parsing ``ip xfrm state`` / ``ip xfrm policy`` ------------------------------------------


def _blocks(text: str) -> List[List[str]]:
    """Entries of an ``ip xfrm`` listing: each starts on a line in column 0, continues on
    indented lines; returned as the tokens of each entry."""
    out: List[List[str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            out.append([])
        if out:
            out[-1].extend(line.split())
    return out


def _after(tokens: List[str], word: str, start: int = 0) -> Optional[str]:
    try:
        i = tokens.index(word, start)
    except ValueError:
        return None
    return tokens[i + 1] if i + 1 < len(tokens) else None


def _proto(text: Optional[str]) -> int:
    if text is None:
        return IPPROTO_ANY
    if text.isdigit():
        return int(text)
    if text.lower() in _PROTO_NAMES:
        return _PROTO_NAMES[text.lower()]
    try:
        return socket.getprotobyname(text)
    except OSError:
        raise XfrmError(f"unknown protocol {text!r} in an ip xfrm listing") from None


def parse_states(text: str) -> List[XfrmState]:
    """The ESP SAs of an ``ip xfrm state`` listing (other protocols are left out; keys are
    never kept)."""
    out = []
    for t in _blocks(text):
        if _after(t, "proto") != "esp":
            continue
        try:
            src = IPv6Address(_after(t, "src") or "")
            dst = IPv6Address(_after(t, "dst") or "")
        except ValueError:
            continue  # an IPv4 SA
        spi = int(_after(t, "spi") or "0", 0)
        reqid_text = _after(t, "reqid") or "0"
        reqid = int(reqid_text.split("(")[0], 0)
        window = int(_after(t, "replay-window") or "0")
        out.append(XfrmState(src, dst, spi, reqid, replay_window=window,
                             mode=_after(t, "mode") or "transport"))
    return out


def _net(text: Optional[str]) -> IPv6Network:
    return IPv6Network(text or "::/0", strict=False)


def parse_policies(text: str) -> List[XfrmPolicy]:
    """The IPv6 policies of an ``ip xfrm policy`` listing (socket policies left out)."""
    out = []
    for t in _blocks(text):
        if not t or t[0] != "src":
            continue
        try:
            src, dst = _net(_after(t, "src")), _net(_after(t, "dst"))
        except ValueError:
            continue  # IPv4
        direction = _after(t, "dir")
        if direction not in ("in", "out", "fwd"):
            continue
        tmpl = t.index("tmpl") if "tmpl" in t else None
        head = t if tmpl is None else t[:tmpl]
        proto = _proto(_after(head, "proto"))
        icmp = _after(head, "type")
        has_esp = False
        reqid = 0
        level = "required"
        tsrc = tdst = None
        if tmpl is not None:
            rest = t[tmpl:]
            has_esp = _after(rest, "proto") == "esp"
            reqid = int((_after(rest, "reqid") or "0").split("(")[0], 0)
            level = _after(rest, "level") or "required"
            s, d = _after(rest, "src"), _after(rest, "dst")
            tsrc = IPv6Address(s) if s not in (None, "::") else None
            tdst = IPv6Address(d) if d not in (None, "::") else None
        out.append(XfrmPolicy(src, dst, proto, direction, reqid, level,
                              int(icmp) if icmp is not None and icmp.isdigit() else None,
                              tsrc, tdst, has_esp, _after(t, "action") or "allow",
                              int(_after(head, "priority") or "0")))
    return out


Runner = Callable[[List[str], Optional[str]], Tuple[int, str, str]]


def _run(argv: List[str], stdin: Optional[str]) -> Tuple[int, str, str]:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


class IpXfrm:
    """:class:`XfrmSeam` through iproute2's ``ip`` (``netns``: run in that named namespace,
    ``ip -n``). ``run(argv, stdin) -> (status, stdout, stderr)`` is replaceable for tests."""

    def __init__(self, netns: Optional[str] = None, ip: str = "ip", run: Runner = _run):
        self._base = [ip] + (["-n", netns] if netns else [])
        self._run = run

    def _list(self, what: str) -> str:
        status, out, err = self._run(self._base + ["xfrm", what, "list"], None)
        if status != 0:
            raise XfrmError(f"ip xfrm {what} list failed: {err.strip()}")
        return out

    def _batch(self, lines: Iterable[str], what: str, ignore_missing: bool = False) -> None:
        lines = list(lines)
        if not lines:
            return
        # -force: go on after a failing line, so one entry already gone does not keep the
        # rest; every failure is still reported on stderr and in the status.
        argv = self._base + ["-force", "-batch", "-"]
        status, _out, err = self._run(argv, "\n".join(lines) + "\n")
        if status == 0:
            return
        problems = [e for e in err.strip().splitlines() if e.strip()]
        if ignore_missing:
            problems = [e for e in problems if not _is_missing(e)]
            if not problems:
                return
        # ip prints "Command failed -:N" after each failing line: keep those with their cause
        raise XfrmError(f"{what} failed: " + "; ".join(problems[:6]))

    def states(self) -> List[XfrmState]:
        return parse_states(self._list("state"))

    def policies(self) -> List[XfrmPolicy]:
        return parse_policies(self._list("policy"))

    def add_states(self, states: Sequence[XfrmState]) -> None:
        self._batch((state_add_line(s) for s in states), "ip xfrm state add")

    def delete_states(self, states: Sequence[XfrmState]) -> None:
        self._batch((state_delete_line(s) for s in states), "ip xfrm state delete",
                    ignore_missing=True)

    def add_policies(self, policies: Sequence[XfrmPolicy]) -> None:
        self._batch((policy_add_line(p) for p in policies), "ip xfrm policy add")

    def delete_policies(self, policies: Sequence[XfrmPolicy]) -> None:
        self._batch((policy_delete_line(p) for p in policies), "ip xfrm policy delete",
                    ignore_missing=True)


def _is_missing(line: str) -> bool:
    low = line.lower()
    return ("no such" in low or "not found" in low or low.startswith("command failed")
            or "esrch" in low or "enoent" in low)


class FakeXfrm:
    """An in-memory :class:`XfrmSeam` that behaves like the kernel where haha relies on it:
    an SA is unique by (destination, SPI), a policy by selector and direction; adding a
    duplicate fails (``File exists``). ``fail_next(n, text)`` makes the next ``n`` changing
    operations fail. ``log`` records every operation."""

    def __init__(self) -> None:
        self.sas: Dict[Tuple[IPv6Address, int], XfrmState] = {}
        self.pols: Dict[Tuple[IPv6Network, IPv6Network, int, Optional[int], str],
                        XfrmPolicy] = {}
        self.log: List[str] = []
        self._fail = 0
        self._fail_text = ""

    def fail_next(self, n: int = 1, text: str = "Operation not supported") -> None:
        self._fail, self._fail_text = n, text

    def _check(self, what: str) -> None:
        self.log.append(what)
        if self._fail > 0:
            self._fail -= 1
            raise XfrmError(f"{what} failed: {self._fail_text}")

    def states(self) -> List[XfrmState]:
        return [replace(s, blob=b"") for s in self.sas.values()]

    def policies(self) -> List[XfrmPolicy]:
        return list(self.pols.values())

    def blob_of(self, dst: IPv6Address, spi: int) -> bytes:
        """The key blob of an SA (the fake keeps it, for tests to compare)."""
        return self.sas[(dst, spi)].blob

    def add_states(self, states: Sequence[XfrmState]) -> None:
        for s in states:
            self._check(f"state add {s.src} {s.dst} 0x{s.spi:08x}")
            state_add_line(s)  # the same validation as the real thing
            if (s.dst, s.spi) in self.sas:
                raise XfrmError(f"state add {s.dst} 0x{s.spi:08x} failed: File exists")
            self.sas[(s.dst, s.spi)] = s

    def delete_states(self, states: Sequence[XfrmState]) -> None:
        for s in states:
            self._check(f"state delete {s.src} {s.dst} 0x{s.spi:08x}")
            self.sas.pop((s.dst, s.spi), None)

    def add_policies(self, policies: Sequence[XfrmPolicy]) -> None:
        for p in policies:
            self._check(f"policy add {p.src} {p.dst} {p.proto} {p.dir}")
            if p.key in self.pols:
                raise XfrmError(f"policy add {p.src} {p.dst} {p.dir} failed: File exists")
            self.pols[p.key] = p

    def delete_policies(self, policies: Sequence[XfrmPolicy]) -> None:
        for p in policies:
            self._check(f"policy delete {p.src} {p.dst} {p.proto} {p.dir}")
            self.pols.pop(p.key, None)


__all__ = ["FakeXfrm", "IpXfrm", "XfrmError", "XfrmPolicy", "XfrmSeam", "XfrmState",
           "parse_policies", "parse_states", "policy_add_line", "state_add_line"]
