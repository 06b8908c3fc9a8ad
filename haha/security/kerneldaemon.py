"""The daemon's side of the kernel ESP modes: a transport and an SA-database stand-in.

The adapter (:mod:`haha.protocol`, or the endpoint pipeline) speaks to an SA database
(``protect``/``unprotect``/``role_of``/``knows``) and to a transport of complete IPv6 packets.
With ``[security] mode = kernel-xfrm`` or ``external`` two stand-ins put the kernel's ESP behind
those same calls, so the pipeline does not change:

- :class:`KernelSadb`: ``protect`` returns the Mobility Header unchanged (after
  :class:`~haha.security.kernelmode.KernelEsp` checked that a kernel policy will protect it), so
  the adapter builds a packet with next header 50 around a *plain* Mobility Header; the
  transport knows that in these modes such a packet is a message for the kernel to protect.
  ``unprotect`` accepts what the transport delivered as protected (a kernel policy required ESP
  for it) and names the peer.
- :class:`KernelEspTransport` wraps the raw transport. Out: a "next header 50" packet goes as
  its Mobility Header through an ``IPPROTO_MH`` socket from its source address, so the kernel's
  policy applies and ESP is added; every other packet goes through the raw transport as
  before. In: the Mobility Header comes only from that socket, i.e. after the kernel's xfrm
  checks; a message a kernel policy required ESP for is handed up as next header 50 (to
  :class:`KernelSadb`), any other as a plain Mobility Header (which haha's policy then judges:
  a Binding Error passes, a HELLO is refused). From the packet socket, the Mobility Header is
  dropped (it has not been through the kernel) and ESP goes to
  :meth:`~haha.security.kernelmode.KernelXfrm.observe` (peers' boot epochs). The raw
  transport's netfilter guard leaves ESP and the Mobility Header to the kernel.

At :meth:`KernelEspTransport.start` the kernel's entries are installed (kernel-xfrm) or checked
(external, then every ``external-check-interval`` seconds); at :meth:`stop` they are removed.
"""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv6Address
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from ..errors import StartupError
from ..interfaces import (
    IAnycastJoin,
    IKernelTunnels,
    IKnownSpi,
    IMobilityTransport,
    ISecurityAssociations,
    ITunnelFastPath,
    provide_what_inner_provides,
)
from ..logging import class_logger
from ..wire.errors import WireError
from ..wire.ipv6 import build_packet, parse_packet
from .errors import UNPROTECTED, SecurityConfigError, SecurityError
from .kernelmode import IPPROTO_MH, ExternalCheck, KernelEsp, KernelXfrm

IPPROTO_ESP = 50
_PKTINFO = struct.Struct("16sI")

Mode = Union[KernelXfrm, ExternalCheck]


@implementer(ISecurityAssociations, IKnownSpi)
class KernelSadb:
    """An SA-database stand-in for the adapter when the kernel does ESP (module docstring).
    ``locals_`` maps each peer to this end's address in its pair, ``roles`` each peer to its
    role."""

    epoch = None

    def __init__(self, esp: KernelEsp, local: IPv6Address,
                 locals_: Dict[IPv6Address, IPv6Address], roles: Dict[IPv6Address, str]
                 ) -> None:
        self.esp = esp
        self.local = local
        self.locals = dict(locals_)
        self.roles = dict(roles)
        self.counters: Dict[str, int] = {}

    def _local(self, peer: IPv6Address) -> IPv6Address:
        return self.locals.get(peer, self.local)

    def protect(self, peer: IPv6Address, next_header: int, payload: bytes,
                local: Optional[IPv6Address] = None) -> bytes:
        """The message itself, for the kernel to protect; ``SecurityError('no-sa')`` when no
        kernel policy would."""
        src = local if local is not None else self._local(peer)
        return self.esp.protect(src, peer, next_header, payload)[1]

    def unprotect(self, source: IPv6Address, esp: bytes) -> Tuple[IPv6Address, int, bytes]:
        """``(peer, 135, message)`` for a message the kernel delivered under a policy that
        required ESP (``esp`` is that message: the kernel has removed ESP already)."""
        if not self.esp.protected(source, self._local(source), IPPROTO_MH):
            raise SecurityError(UNPROTECTED, "no kernel policy required ESP for it", peer=source)
        return source, IPPROTO_MH, esp

    def knows(self, esp: bytes) -> bool:
        """Every "ESP" packet that reaches the adapter was verified by the kernel."""
        return True

    def role_of(self, peer: IPv6Address) -> Optional[str]:
        return self.roles.get(peer)

    def has_peer(self, peer: IPv6Address) -> bool:
        return peer in self.roles

    def peers(self) -> List[IPv6Address]:
        return list(self.roles)

    def flush(self) -> None:
        """Nothing to write: the kernel holds the sequence numbers."""

    def describe(self) -> List[Dict[str, Any]]:
        return [{"peer": str(p), "role": r, "esp": "kernel"} for p, r in self.roles.items()]


@implementer(IReadDescriptor)
class _MhReader:
    def __init__(self, sock: socket.socket, on_read: Callable[[], None]) -> None:
        self.sock = sock
        self._on_read = on_read

    def fileno(self) -> int:
        return self.sock.fileno()

    def doRead(self) -> None:  # noqa: N802 - Twisted
        self._on_read()

    def connectionLost(self, reason: object) -> None:  # noqa: N802 - Twisted
        pass

    def logPrefix(self) -> str:  # noqa: N802 - Twisted
        return "kernel-esp-mh"


@implementer(IMobilityTransport)
class KernelEspTransport:
    """The raw transport with the kernel doing ESP (module docstring). Attributes it does not
    have are the inner transport's (``leave_tunnels_to_kernel``, ``join_anycast``, ...)."""

    log = class_logger()

    def __init__(self, inner: Any, mode: Mode, reactor: Any,
                 check_interval: float = 60.0, open_socket: Optional[Callable[[], Any]] = None
                 ) -> None:
        self.inner = inner
        self.mode = mode
        self.esp: KernelEsp = mode.esp
        self.reactor = reactor
        self.check_interval = check_interval
        self._open_socket = open_socket or self._mh_socket
        self._receiver: Optional[Callable[[bytes], None]] = None
        self._sock: Any = None
        self._reader: Optional[_MhReader] = None
        self._loop: Optional[LoopingCall] = None
        # What the inner transport can do, this one can (through __getattr__): declared, so
        # that providedBy answers as for the raw transport (anycast, kernel tunnels, fast path).
        provide_what_inner_provides(self, inner, IAnycastJoin, IKernelTunnels, ITunnelFastPath)
        self.own_counters: Dict[str, int] = {
            "kernel-esp.received": 0, "kernel-esp.received-plain": 0, "kernel-esp.sent": 0,
            "kernel-esp.send-errors": 0, "kernel-esp.send-refused-extension-headers": 0,
            "kernel-esp.link-mh-dropped": 0, "kernel-esp.link-esp-seen": 0}

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    @property
    def counters(self) -> Dict[str, int]:
        out = dict(self.inner.counters)
        out.update(self.own_counters)
        out.update(self.mode.counters)
        out.update(self.esp.counters)
        return out

    # -- lifecycle

    @staticmethod
    def _mh_socket() -> socket.socket:
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, IPPROTO_MH)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        return s

    def start(self, receiver: Callable[[bytes], None]) -> None:
        """Install (kernel-xfrm) or check (external) the kernel's entries, then receive."""
        try:
            if isinstance(self.mode, KernelXfrm):
                self.mode.start()
            else:
                self.mode.require()
        except SecurityConfigError as e:
            raise StartupError(str(e), "see docs/security.md, \"Kernel ESP\"") from None
        try:
            self._sock = self._open_socket()
            self.inner.start(self._from_link)
            self.inner.leave_esp_to_kernel(True)
        except Exception:
            self._close()
            if isinstance(self.mode, KernelXfrm):
                self.mode.stop()
            raise
        self._receiver = receiver
        self._reader = _MhReader(self._sock, self._read_mh)
        self.reactor.addReader(self._reader)
        if isinstance(self.mode, ExternalCheck):
            self._loop = LoopingCall(self._check)
            self._loop.clock = self.reactor
            self._loop.start(self.check_interval, now=False)

    def _close(self) -> None:
        if self._reader is not None:
            self.reactor.removeReader(self._reader)
            self._reader = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def stop(self) -> Any:
        """Stop receiving, remove haha's kernel entries (kernel-xfrm)."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._close()
        self._receiver = None
        result = self.inner.stop()
        if isinstance(self.mode, KernelXfrm):
            try:
                self.mode.stop()
            except Exception as e:
                self.log.error("cannot remove the kernel's SAs and policies: {error} (the next "
                               "start reclaims them)", error=str(e))
        return result

    def _check(self) -> None:
        assert isinstance(self.mode, ExternalCheck)
        for problem in self.mode.check():
            self.log.warn("security mode external: {problem}", problem=problem)

    # -- in

    def _from_link(self, data: bytes) -> None:
        """A packet from the packet socket (before the kernel)."""
        receiver = self._receiver
        if receiver is None:
            return
        try:
            packet = parse_packet(data)
        except WireError:
            receiver(data)  # the adapter counts and drops it as before
            return
        if packet.next_header == IPPROTO_ESP:
            self.own_counters["kernel-esp.link-esp-seen"] += 1
            if isinstance(self.mode, KernelXfrm):
                self.mode.observe(packet.source, packet.payload)
            return
        if packet.next_header == IPPROTO_MH:
            self.own_counters["kernel-esp.link-mh-dropped"] += 1
            return
        receiver(data)

    def _read_mh(self) -> None:
        for _ in range(64):
            try:
                data, anc, _flags, addr = self._sock.recvmsg(65535, 64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.log.warn("kernel ESP socket: {error}", error=str(e))
                return
            self.deliver_mh(data, IPv6Address(addr[0].split("%")[0]), _destination(anc))

    def deliver_mh(self, data: bytes, src: IPv6Address, dst: Optional[IPv6Address]) -> None:
        """A Mobility Header the kernel delivered from ``src`` to ``dst``."""
        if self._receiver is None or dst is None:
            return
        if self.esp.protected(src, dst, IPPROTO_MH):
            self.own_counters["kernel-esp.received"] += 1
            self._receiver(build_packet(src, dst, IPPROTO_ESP, data))
        else:
            self.own_counters["kernel-esp.received-plain"] += 1
            self._receiver(build_packet(src, dst, IPPROTO_MH, data))

    # -- out

    def send(self, packet: bytes, interface: Optional[str] = None) -> None:
        try:
            parsed = parse_packet(packet)
        except WireError:
            self.inner.send(packet, interface)
            return
        if parsed.next_header != IPPROTO_ESP:
            self.inner.send(packet, interface)
            return
        if parsed.home_address is not None or parsed.routing_address is not None:
            # a mobile node away from home: the kernel would need mip6 (docs/security.md)
            self.own_counters["kernel-esp.send-refused-extension-headers"] += 1
            return
        mh = bytes(parsed.payload[:4]) + b"\0\0" + bytes(parsed.payload[6:])  # kernel sums
        anc = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, _PKTINFO.pack(parsed.src.packed, 0))]
        try:
            self._sock.sendmsg([mh], anc, 0, (str(parsed.dst), 0))
        except OSError as e:
            self.own_counters["kernel-esp.send-errors"] += 1
            self.log.warn("cannot send a Mobility Header to {dst} through the kernel's ESP: "
                          "{error}", dst=parsed.dst, error=str(e))
            return
        self.own_counters["kernel-esp.sent"] += 1


def _destination(ancillary: Iterable[Tuple[int, int, bytes]]) -> Optional[IPv6Address]:
    for level, kind, value in ancillary:
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO and \
                len(value) >= _PKTINFO.size:
            return IPv6Address(value[:16])
    return None


__all__ = ["KernelEspTransport", "KernelSadb"]


def kernel_esp_for(config: Any, transport: Any, reactor: Any,
                   peer_secrets: Dict[IPv6Address, bytes],
                   node_secrets: Dict[IPv6Address, bytes], wall: float,
                   seam: Any = None) -> Tuple[KernelSadb, KernelEspTransport]:
    """The SA-database stand-in and the transport of a home agent whose ``[security] mode``
    is ``kernel-xfrm`` or ``external``. ``peer_secrets``/``node_secrets``: the loaded keys
    (kernel-xfrm); ``wall``: Unix time (the outbound time floor); ``seam``: the xfrm seam
    (``ip xfrm`` by default)."""
    from .sadb import HOME_AGENT, MOBILE_NODE
    from .xfrm import IpXfrm
    from .kernelmode import kernel_pairs

    sec = config.security
    if not hasattr(transport, "leave_esp_to_kernel"):
        raise StartupError(f"security mode {sec.mode} needs the raw transport ([transport] "
                           "kind = raw): the kernel's IPsec cannot protect UDP-carried packets")
    if getattr(config, "address_takeover", False):
        raise StartupError(f"security mode {sec.mode} cannot continue a dead peer's SAs "
                           "(address-takeover = yes): use mode = esp for address take-over")
    haha_address, me = config.haha_address, config.address
    seam = seam if seam is not None else IpXfrm()
    mode: Mode
    if sec.mode == "kernel-xfrm":
        hosts = list(peer_secrets)
        nodes = list(node_secrets)
    else:
        hosts = list(config.peers)
        nodes = list(sec.node_keys)
    locals_ = {p: haha_address for p in hosts}
    locals_.update({n: me for n in nodes})
    roles = {p: HOME_AGENT for p in hosts}
    roles.update({n: MOBILE_NODE for n in nodes})
    if sec.mode == "kernel-xfrm":
        peers = [(p, s, HOME_AGENT) for p, s in peer_secrets.items()]
        peers += [(n, s, MOBILE_NODE) for n, s in node_secrets.items()]
        try:
            pairs = kernel_pairs(me, peers, wall=wall, locals_=locals_)
        except SecurityConfigError as e:
            raise StartupError(str(e)) from None
        mode = KernelXfrm(seam, me, pairs, sec.xfrm_state_file)
    else:
        mode = ExternalCheck(seam, me, hosts + nodes, locals_)
    sadb = KernelSadb(mode.esp, me, locals_, roles)
    return sadb, KernelEspTransport(transport, mode, reactor, sec.external_check_interval)


__all__ += ["kernel_esp_for"]
