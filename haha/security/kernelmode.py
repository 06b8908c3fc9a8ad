"""``[security] mode = kernel-xfrm`` and ``mode = external``: the kernel does ESP.

In both modes haha sends the Mobility Header in the clear to its socket and the kernel's IPsec
(xfrm) protects it; on the way in, the kernel decrypts and verifies, and delivers the plain
Mobility Header. What haha must then know is whether a message it reads *was* protected. The
answer is the kernel's policy: a packet selected by an inbound policy with an ESP template at
``level required`` is dropped by the kernel unless it arrived in ESP under an SA matching the
template (``XfrmInTmplMismatch``), so whatever the kernel delivers under such a policy was
protected. :class:`KernelEsp` is that check, and its outbound twin, behind the same small
interface for either pipeline (``docs/security.md``, "Kernel ESP").

- **kernel-xfrm** (:class:`KernelXfrm`): haha installs, for every pair whose keys it derives
  (:mod:`haha.security.keys`: the same SPIs, keys and salts as its user-space ESP), the two SAs
  and the policies that make the kernel protect the Mobility Header both ways (and, with a
  mobile node, Mobile Prefix Solicitation/Advertisement, ICMPv6 146/147). Every entry carries a
  ``reqid`` in haha's range (:data:`REQID_BASE`), and what was installed is written to a state
  file before it is installed, so a run that crashed leaves nothing a later start does not
  reclaim. :meth:`KernelXfrm.stop` removes everything.

  Boot epochs: the kernel's IV is the sequence number XOR a random mask of its own, so an SA in
  the kernel cannot announce an epoch. Outbound, haha installs the pair's epoch-free keys
  (user-space peers accept them, :class:`haha.security.epoch.EpochInboundSA`), starting above
  earlier runs' sequence numbers (the time floor, :func:`haha.security.seqstore.time_floor`).
  Inbound, the peer's epoch is learned from its ESP: :meth:`KernelXfrm.observe` is given every
  ESP packet the transport sees, checks one that announces an epoch other than the installed
  keys' under the user-space machinery (budget, ICV, stale runs refused), and when it is
  authentic replaces the kernel's inbound SA with that epoch's keys. The kernel dropped that
  first packet; the next one passes.

- **external** (:class:`ExternalCheck`): an IKE daemon installs SAs and policies; haha installs
  nothing and checks, at start-up and periodically, that each configured peer has an SA each
  way and an ESP-requiring policy each way for the Mobility Header.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .epoch import EpochInboundSA
from .errors import NO_SA, UNPROTECTED, SecurityConfigError, SecurityError
from .keys import derive_sa
from .sadb import HOME_AGENT, MOBILE_NODE
from .seqstore import time_floor
from .xfrm import XfrmError, XfrmPolicy, XfrmSeam, XfrmState

#: haha's reqids: ``REQID_BASE + n`` for the n-th pair (1..65535). The tag says an entry is
#: haha's; the state file says which run installed it.
REQID_BASE = 0x68610000
REQID_MASK = 0xFFFF0000
MAX_PAIRS = 0xFFFF
IPPROTO_MH = 135
IPPROTO_ICMPV6 = 58
ICMP_MPS, ICMP_MPA = 146, 147
STATE_VERSION = 1
_HEAD = struct.Struct("!IIQ")  # SPI, sequence number, IV
_MIN_ESP = 8 + 8 + 2 + 16


def is_haha_reqid(reqid: int) -> bool:
    """Whether ``reqid`` is in haha's tagged range."""
    return reqid & REQID_MASK == REQID_BASE and reqid != REQID_BASE


def _host(a: IPv6Address) -> IPv6Network:
    return IPv6Network(f"{a}/128")


@dataclass(frozen=True)
class KernelPair:
    """One peer's entries as the kernel gets them: the outbound and inbound SA (epoch-free
    keys), the policies, and, for a home agent, what follows its epochs."""

    peer: IPv6Address
    role: str
    reqid: int
    out_state: XfrmState
    in_state: XfrmState
    policies: Tuple[XfrmPolicy, ...]
    key_bits: int = 128
    secret: bytes = field(default=b"", repr=False, compare=False)
    #: this end's address in the pair (None: the KernelXfrm's ``local``)
    local: Optional[IPv6Address] = None


def pair_policies(local: IPv6Address, peer: IPv6Address, role: str,
                  reqid: int) -> Tuple[XfrmPolicy, ...]:
    """The policies protecting what haha's security policy (:mod:`haha.security.policy`)
    requires in ESP between ``local`` and ``peer``: the Mobility Header both ways; with a
    mobile node also Mobile Prefix Solicitation in and Advertisement out."""
    def pol(src: IPv6Address, dst: IPv6Address, proto: int, way: str,
            icmp: Optional[int] = None) -> XfrmPolicy:
        return XfrmPolicy(_host(src), _host(dst), proto, way, reqid, "required", icmp,
                          src, dst)

    out = [pol(local, peer, IPPROTO_MH, "out"), pol(peer, local, IPPROTO_MH, "in")]
    if role == MOBILE_NODE:
        out += [pol(peer, local, IPPROTO_ICMPV6, "in", ICMP_MPS),
                pol(local, peer, IPPROTO_ICMPV6, "out", ICMP_MPA)]
    return tuple(out)


def kernel_pairs(local: IPv6Address, peers: Sequence[Tuple[IPv6Address, bytes, str]],
                 key_bits: int = 128, replay_window: int = 64, wall: float = 0.0,
                 locals_: Optional[Dict[IPv6Address, IPv6Address]] = None
                 ) -> List[KernelPair]:
    """The kernel entries for ``peers`` (``(address, derivation secret, role)``; a mobile
    node's address is its home address), in a stable order with reqids ``REQID_BASE + 1...``.
    ``locals_`` maps a peer to this end's address in its pair when that is not ``local`` (a
    home agent's HAHA address for its peers). Outbound SAs start at the time floor of Unix
    time ``wall``."""
    if len(peers) > MAX_PAIRS:
        raise SecurityConfigError(f"kernel-xfrm supports at most {MAX_PAIRS} pairs, "
                                  f"not {len(peers)}")
    oseq = time_floor(wall)
    out = []
    seen = set()
    for n, (peer, secret, role) in enumerate(sorted(peers, key=lambda p: int(p[0])), 1):
        if peer in seen:
            raise SecurityConfigError(f"peer {peer} is configured twice")
        seen.add(peer)
        reqid = REQID_BASE + n
        me = (locals_ or {}).get(peer, local)
        o = derive_sa(secret, me, peer, key_bits)
        i = derive_sa(secret, peer, me, key_bits)
        out.append(KernelPair(
            peer, role, reqid,
            XfrmState(me, peer, o.spi, reqid, o.key + o.salt, replay_window, oseq),
            XfrmState(peer, me, i.spi, reqid, i.key + i.salt, replay_window),
            pair_policies(me, peer, role, reqid), key_bits, bytes(secret), me))
    spis: Dict[Tuple[IPv6Address, int], IPv6Address] = {}
    for p in out:
        k = (p.in_state.dst, p.in_state.spi)
        if k in spis:  # the kernel keys inbound SAs by destination and SPI only
            raise SecurityConfigError(
                f"the derived inbound SPIs of {spis[k]} and {p.peer} are both "
                f"0x{p.in_state.spi:08x}: the kernel cannot hold both (configure another "
                "secret for one of them)")
        spis[k] = p.peer
    return out


# -- the protect/accept seam ------------------------------------------------------------------


def effective(policies: Sequence[XfrmPolicy], way: str, src: IPv6Address, dst: IPv6Address,
              proto: int, icmp_type: Optional[int] = None) -> Optional[XfrmPolicy]:
    """The policy the kernel applies to a packet (lowest priority value first, then the
    order listed), or None."""
    best: Optional[XfrmPolicy] = None
    for p in policies:
        if p.dir == way and p.covers(src, dst, proto, icmp_type):
            if best is None or p.priority < best.priority:
                best = p
    return best


class KernelEsp:
    """ESP done by the kernel, as a pipeline sees it.

    ``protect`` is the identity -- the message goes to the kernel in the clear -- after checking
    that an outbound policy makes the kernel protect it (else ``SecurityError('no-sa')``: it
    would leave unprotected). ``protected`` says whether a message the kernel delivered had to
    arrive in ESP: an inbound policy with an ESP template at level ``required`` selects it.
    ``policies()`` gives the policies to judge by (haha's own in kernel-xfrm mode, the
    kernel's last listing in external mode)."""

    def __init__(self, policies: Callable[[], Sequence[XfrmPolicy]]) -> None:
        self._policies = policies
        self.counters: Dict[str, int] = {"kernel-esp.unprotected-out": 0,
                                         "kernel-esp.unprotected-in": 0}

    def protect(self, src: IPv6Address, dst: IPv6Address, next_header: int, payload: bytes,
                icmp_type: Optional[int] = None) -> Tuple[int, bytes]:
        """``(next_header, payload)`` unchanged, for the kernel to protect."""
        p = effective(self._policies(), "out", src, dst, next_header, icmp_type)
        if p is None or not p.requires_esp():
            self.counters["kernel-esp.unprotected-out"] += 1
            raise SecurityError(NO_SA, "no kernel policy protects it", peer=dst)
        return next_header, payload

    def protected(self, src: IPv6Address, dst: IPv6Address, next_header: int,
                  icmp_type: Optional[int] = None) -> bool:
        """Whether the kernel could only have delivered this message protected."""
        p = effective(self._policies(), "in", src, dst, next_header, icmp_type)
        if p is not None and p.requires_esp():
            return True
        self.counters["kernel-esp.unprotected-in"] += 1
        return False

    def unprotect(self, src: IPv6Address, dst: IPv6Address, next_header: int,
                  payload: bytes, icmp_type: Optional[int] = None) -> Tuple[int, bytes]:
        """``(next_header, payload)`` of a message the kernel delivered under a policy that
        required ESP; ``SecurityError('unprotected')`` otherwise."""
        if not self.protected(src, dst, next_header, icmp_type):
            raise SecurityError(UNPROTECTED, "no kernel policy required ESP for it", peer=src)
        return next_header, payload


# -- kernel-xfrm: install, reclaim, remove, follow epochs --------------------------------------


def _state_entry(s: XfrmState) -> List[object]:
    return [str(s.src), str(s.dst), s.spi]


def _policy_entry(p: XfrmPolicy) -> List[object]:
    return [str(p.src), str(p.dst), p.proto, p.icmp_type, p.dir]


class KernelXfrm:
    """The kernel entries of one home agent (or mobile node) in ``kernel-xfrm`` mode.

    ``start()`` reclaims what an earlier run left (the state file's entries, and tagged entries
    in the way of this run's), then records and installs this run's; ``stop()`` removes them
    and the file. Errors are :class:`SecurityConfigError` naming the entry and the kernel's
    reason; a failed ``start()`` removes what it had installed."""

    def __init__(self, seam: XfrmSeam, local: IPv6Address, pairs: Sequence[KernelPair],
                 state_path: Optional[str] = None,
                 on_epoch: Optional[Callable[[IPv6Address, Optional[int]], None]] = None
                 ) -> None:
        self.seam = seam
        self.local = local
        self.pairs = list(pairs)
        self.state_path = state_path
        self.on_epoch = on_epoch
        self.installed = False
        self.counters: Dict[str, int] = {
            "kernel-xfrm.reclaimed-states": 0, "kernel-xfrm.reclaimed-policies": 0,
            "kernel-xfrm.epoch-rekeys": 0, "kernel-xfrm.rekey-failed": 0,
            "kernel-xfrm.observe-dropped": 0}
        self._by_spi: Dict[int, KernelPair] = {p.in_state.spi: p for p in self.pairs}
        #: peer -> what the kernel's inbound SA is keyed with: ("static", mask) or
        #: ("epoch", epoch)
        self._installed_keys: Dict[IPv6Address, Tuple[str, Optional[int]]] = {}
        self._trackers: Dict[IPv6Address, EpochInboundSA] = {}
        #: peer -> the inbound SA in the kernel (with its key) once it was replaced
        self._installed_sa: Dict[IPv6Address, XfrmState] = {}
        for p in self.pairs:
            if p.role == HOME_AGENT and p.secret:
                self._trackers[p.peer] = self._tracker(p)
        self.esp = KernelEsp(self.policies)

    # -- what is installed

    def policies(self) -> List[XfrmPolicy]:
        """This run's policies (what :class:`KernelEsp` judges by)."""
        return [q for p in self.pairs for q in p.policies] if self.installed else []

    def states(self) -> List[XfrmState]:
        return [s for p in self.pairs for s in (p.out_state, p.in_state)]

    # -- the state file

    def _write_state(self) -> None:
        if self.state_path is None:
            return
        body = {"version": STATE_VERSION, "local": str(self.local),
                "states": [_state_entry(s) for s in self.states()],
                "policies": [_policy_entry(q) for p in self.pairs for q in p.policies]}
        tmp = self.state_path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(body).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)

    def _read_state(self) -> Tuple[List[XfrmState], List[XfrmPolicy]]:
        if self.state_path is None or not os.path.exists(self.state_path):
            return [], []
        try:
            with open(self.state_path) as f:
                body = json.load(f)
            if body.get("version") != STATE_VERSION:
                raise ValueError(f"version {body.get('version')!r}")
            states = [XfrmState(IPv6Address(s), IPv6Address(d), int(spi))
                      for s, d, spi in body["states"]]
            pols = [XfrmPolicy(IPv6Network(s), IPv6Network(d), int(pr), way,
                               icmp_type=None if it is None else int(it))
                    for s, d, pr, it, way in body["policies"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SecurityConfigError(
                f"kernel-xfrm state file {self.state_path} cannot be read ({e}); remove the "
                "entries it lists by hand (ip xfrm state/policy, reqid 0x6861xxxx) and the "
                "file") from None
        return states, pols

    # -- start / stop

    def reclaim(self) -> Tuple[int, int]:
        """Remove an earlier run's entries: those in the state file, and tagged entries in the
        way of this run's (same destination and SPI, same selector). An entry in the way that
        is not haha's is an error: it belongs to someone else. Returns the numbers removed."""
        old_states, old_pols = self._read_state()
        try:
            kstates, kpols = self.seam.states(), self.seam.policies()
        except XfrmError as e:
            raise SecurityConfigError(f"cannot read the kernel's xfrm databases: {e}") from None
        want_s = {(s.dst, s.spi) for s in self.states()}
        want_p = {q.key for p in self.pairs for q in p.policies}
        listed_s = {(s.dst, s.spi) for s in old_states}
        listed_p = {q.key for q in old_pols}
        gone_s, gone_p = [], []
        for s in kstates:
            k = (s.dst, s.spi)
            if k in listed_s or (k in want_s and is_haha_reqid(s.reqid)):
                gone_s.append(s)
            elif k in want_s:
                raise SecurityConfigError(
                    f"the kernel already has an SA to {s.dst} with SPI 0x{s.spi:08x} that haha "
                    f"did not install (reqid {s.reqid}); remove it or change the keys")
        for q in kpols:
            if q.key in listed_p or (q.key in want_p and is_haha_reqid(q.reqid)):
                gone_p.append(q)
            elif q.key in want_p:
                raise SecurityConfigError(
                    f"the kernel already has a policy {q.src} -> {q.dst} proto {q.proto} dir "
                    f"{q.dir} that haha did not install; remove it or use mode = external")
        try:
            self.seam.delete_policies(gone_p)
            self.seam.delete_states(gone_s)
        except XfrmError as e:
            raise SecurityConfigError(f"cannot remove an earlier run's xfrm entries: {e}") \
                from None
        self.counters["kernel-xfrm.reclaimed-states"] += len(gone_s)
        self.counters["kernel-xfrm.reclaimed-policies"] += len(gone_p)
        return len(gone_s), len(gone_p)

    def start(self) -> Tuple[int, int]:
        """Reclaim, record, install. Returns what :meth:`reclaim` removed."""
        reclaimed = self.reclaim()
        try:
            self._write_state()
        except OSError as e:
            raise SecurityConfigError(
                f"cannot write the kernel-xfrm state file {self.state_path}: {e.strerror}") \
                from None
        try:
            self.seam.add_states(self.states())
            self.seam.add_policies([q for p in self.pairs for q in p.policies])
        except XfrmError as e:
            self._remove()
            raise SecurityConfigError(f"cannot install the kernel's SAs and policies: {e} "
                                      "(does this kernel have esp6 and rfc4106(gcm(aes))?)") \
                from None
        self.installed = True
        for p in self.pairs:
            self._installed_keys[p.peer] = ("static", None)
        return reclaimed

    def _remove(self) -> None:
        self.seam.delete_policies([q for p in self.pairs for q in p.policies])
        self.seam.delete_states(self.states())

    def stop(self) -> None:
        """Remove this run's entries and the state file. Idempotent. A failure is raised
        (``XfrmError``) and the file kept, so the next start reclaims what is left."""
        self.installed = False
        self._remove()
        if self.state_path is not None:
            try:
                os.unlink(self.state_path)
            except FileNotFoundError:
                pass

    # -- epochs

    def local_of(self, peer: IPv6Address) -> IPv6Address:
        """This end's address in the pair with ``peer``."""
        for p in self.pairs:
            if p.peer == peer:
                return p.local or self.local
        return self.local

    def role_of(self, peer: IPv6Address) -> Optional[str]:
        """The role of ``peer`` (``home-agent``, ``mobile-node``), None if it has no pair."""
        for p in self.pairs:
            if p.peer == peer:
                return p.role
        return None

    def _tracker(self, p: KernelPair) -> EpochInboundSA:
        secret, local, peer, bits = p.secret, p.local or self.local, p.peer, p.key_bits

        def rekey(epoch: Optional[int]) -> Tuple[bytes, bytes]:
            d = derive_sa(secret, peer, local, bits, epoch)
            return d.key, d.salt

        rekey.static = True  # type: ignore[attr-defined]
        return EpochInboundSA(p.in_state.spi, rekey, epoch=None, peer=peer, role=p.role)

    def observe(self, source: IPv6Address, esp: bytes) -> bool:
        """Look at an ESP packet the transport saw (the kernel handles it too). When it is
        from a home agent and announces keys other than those in the kernel's inbound SA, check
        it in user space (:class:`EpochInboundSA`: budget, ICV, stale runs refused) and, when
        authentic, replace the kernel's SA with the keys it was sent under. Returns whether the
        SA was replaced; a refused packet is counted (``kernel-xfrm.observe-dropped``)."""
        if not self.installed or len(esp) < _MIN_ESP:
            return False
        spi, seq, iv = _HEAD.unpack_from(esp)
        pair = self._by_spi.get(spi)
        if pair is None or pair.peer != source:
            return False
        tracker = self._trackers.get(pair.peer)
        if tracker is None:
            return False
        mask = iv ^ seq
        kind, value = self._installed_keys.get(pair.peer, ("static", None))
        if (kind == "epoch" and value == mask) or (kind == "static" and value == mask):
            return False  # the kernel has these keys
        try:
            tracker.open(esp)
        except SecurityError:
            self.counters["kernel-xfrm.observe-dropped"] += 1
            return False
        if tracker.epoch == mask:
            want: Tuple[str, Optional[int]] = ("epoch", mask)
        else:
            want = ("static", mask)
        if kind == want[0] and (kind == "static" or value == want[1]):
            self._installed_keys[pair.peer] = want
            return False
        return self._replace_inbound(pair, want)

    def _replace_inbound(self, pair: KernelPair, want: Tuple[str, Optional[int]]) -> bool:
        epoch = want[1] if want[0] == "epoch" else None
        me = pair.local or self.local
        d = derive_sa(pair.secret, pair.peer, me, pair.key_bits, epoch)
        new = XfrmState(pair.peer, me, d.spi, pair.reqid, d.key + d.salt,
                        pair.in_state.replay_window)
        old = self._installed_sa.get(pair.peer, pair.in_state)
        try:
            self.seam.delete_states([old])
        except XfrmError:
            self.counters["kernel-xfrm.rekey-failed"] += 1
            return False
        try:
            self.seam.add_states([new])
        except XfrmError:
            self.counters["kernel-xfrm.rekey-failed"] += 1
            try:  # put the keys back that the kernel had, so the pair keeps working
                self.seam.add_states([old])
            except XfrmError:
                pass
            return False
        self._installed_sa[pair.peer] = new
        self._installed_keys[pair.peer] = want
        self.counters["kernel-xfrm.epoch-rekeys"] += 1
        if self.on_epoch is not None:
            self.on_epoch(pair.peer, epoch)
        return True

    def installed_keys(self, peer: IPv6Address) -> Tuple[str, Optional[int]]:
        """What the kernel's inbound SA from ``peer`` is keyed with: ``("static", mask)``
        (the epoch-free keys) or ``("epoch", epoch)``."""
        return self._installed_keys[peer]


# -- external: an IKE daemon's SAs, checked ---------------------------------------------------


class ExternalCheck:
    """``mode = external``: each of ``peers`` needs an ESP SA each way with ``local`` and an
    ESP-requiring policy each way for the Mobility Header. :meth:`check` reads the kernel and
    returns the problems (one sentence each), counting them; :meth:`require` raises them as one
    :class:`SecurityConfigError` (start-up). ``esp`` judges messages by the kernel's policies
    as last read."""

    def __init__(self, seam: XfrmSeam, local: IPv6Address,
                 peers: Sequence[IPv6Address],
                 locals_: Optional[Dict[IPv6Address, IPv6Address]] = None) -> None:
        self.seam = seam
        self.local = local
        self.peers = list(peers)
        self.locals = dict(locals_ or {})
        self._policies: List[XfrmPolicy] = []
        self.counters: Dict[str, int] = {"external.checks": 0, "external.missing-sa": 0,
                                         "external.missing-policy": 0,
                                         "external.check-failed": 0}
        self.esp = KernelEsp(lambda: self._policies)

    def check(self) -> List[str]:
        """The problems found now (empty: every peer is protected both ways)."""
        self.counters["external.checks"] += 1
        try:
            states, policies = self.seam.states(), self.seam.policies()
        except XfrmError as e:
            self.counters["external.check-failed"] += 1
            return [f"cannot read the kernel's xfrm databases: {e}"]
        self._policies = policies
        have = {(s.src, s.dst) for s in states if s.proto == "esp"}
        problems = []
        for peer in self.peers:
            me = self.locals.get(peer, self.local)
            for src, dst in ((me, peer), (peer, me)):
                if (src, dst) not in have:
                    self.counters["external.missing-sa"] += 1
                    problems.append(f"no ESP SA {src} -> {dst} in the kernel (peer {peer})")
            for src, dst, way in ((me, peer, "out"), (peer, me, "in")):
                p = effective(policies, way, src, dst, IPPROTO_MH)
                if p is None or not p.requires_esp():
                    self.counters["external.missing-policy"] += 1
                    what = "none" if p is None else (
                        f"level {p.level}" if p.has_esp else f"action {p.action}, no ESP")
                    problems.append(f"no policy requiring ESP for the Mobility Header {src} -> "
                                    f"{dst} dir {way} in the kernel ({what}; peer {peer})")
        return problems

    def require(self) -> None:
        """:meth:`check`, raising every problem at once."""
        problems = self.check()
        if problems:
            raise SecurityConfigError("security mode external: " + "; ".join(problems))


__all__ = ["ExternalCheck", "KernelEsp", "KernelPair", "KernelXfrm", "REQID_BASE",
           "effective", "is_haha_reqid", "kernel_pairs", "pair_policies"]
