"""A TUN device as a Twisted reader/writer of whole IPv6 packets.

``/dev/net/tun`` opened with ``TUNSETIFF`` and ``IFF_TUN | IFF_NO_PI``: every ``read`` is one
packet the kernel routed into the device, every ``write`` one packet handed back to the kernel,
with no packet-information prefix. The device is opened through the OS seam
(:class:`haha.io.system.LinuxSystem`, or :class:`~haha.io.system.FakeSystem` whose
:class:`~haha.io.system.FakeTunFile` lets a test inject and inspect packets). Bringing the link
up, its MTU and routes belong to the forwarding backend (netlink), not here.

``start(receiver, offload=True)`` opens the device with ``IFF_VNET_HDR`` and accepts partial
checksums and TCPv6 GSO (``TUNSETOFFLOAD``): the kernel hands over a TCP super-packet of up to
64 KB in one read instead of segmenting it first, and :func:`haha.io.offload.segments` cuts it
into wire-sized packets with finished checksums for the receiver. Writes then carry an empty
virtio_net_hdr in front (gathered with ``writev``, the packet not copied).
"""

import errno as _errno
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.python.failure import Failure
from ..logging import class_logger
from zope.interface import implementer

from .offload import (VIRTIO_NET_HDR_F_NEEDS_CSUM, VNET_HDR_LEN, VNET_NONE, OffloadError,
                      segments)
from .system import TUN_F_CSUM, TUN_F_TSO6, LinuxSystem

READ_BURST = 64
MAX_PACKET = 65575
#: What user space accepts from the kernel with ``offload``: partial checksums, TCPv6 GSO.
OFFLOADS = TUN_F_CSUM | TUN_F_TSO6
#: Write failures logged at most this often (seconds); the rest are only counted, so that a
#: flood of failures costs no more than the failures themselves.
LOG_INTERVAL = 1.0


@implementer(IReadDescriptor)
class TunDevice:
    """``reactor`` provides ``addReader``/``removeReader``; ``name`` may contain ``%d``."""

    log = class_logger()

    def __init__(self, reactor: IReactorFDSet, name: str = "haha%d",
                 system: LinuxSystem | None = None) -> None:
        self._reactor = reactor
        self.requested_name = name
        self.name: str | None = None
        self._system = system if system is not None else LinuxSystem()
        self._file: Any = None  # the open device (a file object, or the fake's)
        self._receiver: Callable[[bytes], object] | None = None
        self.counters: Counter[str] = Counter()
        #: Opened with ``IFF_VNET_HDR`` and the kernel's offloads (``start(offload=True)``).
        self.offload = False
        #: With ``offload``: called first with each GSO read (the ``virtio_net_hdr`` and
        #: the super-packet, uncut); True when it took the read whole (counted
        #: ``gso_whole``), False to have it cut into segments as usual
        #: (:mod:`haha.io.superpkt`).
        self.gso_receiver: Callable[[bytes], bool] | None = None
        #: With ``offload``: called first with each read that is not GSO but has its
        #: checksum left partial (``NEEDS_CSUM``; the ``virtio_net_hdr`` in front); True when
        #: it took the read as it is, the checksum still to be done by the kernel (counted
        #: ``partial_whole``), False to have it completed here as usual (docs/io.md
        #: "Partial checksums left to the kernel").
        self.partial_receiver: Callable[[bytes], bool] | None = None
        self._logged_at: float | None = None

    @property
    def file(self) -> Any:
        """The open device (a :class:`~haha.io.system.FakeTunFile` under the fake)."""
        return self._file

    def start(self, receiver: Callable[[bytes], object], offload: bool = False) -> None:
        """Create/attach the device and deliver each packet read to ``receiver(packet)``;
        ``offload``: with the kernel's offloads (module docstring). Raises ``OSError`` when the
        device cannot be opened."""
        if self._file is not None:
            raise RuntimeError(f"TUN device {self.name} already open")
        if offload:
            self._file, self.name = self._system.open_tun(self.requested_name, vnet_hdr=True)
            try:
                self._system.set_tun_offload(self._file, OFFLOADS)
            except OSError:
                self._file.close()
                self._file = None
                raise
        else:
            self._file, self.name = self._system.open_tun(self.requested_name)
        self.offload = offload
        self._receiver = receiver
        self._reactor.addReader(self)
        self.log.info("TUN device {name} open", name=self.name)

    def stop(self) -> None:
        """Stop reading and close the device (idempotent)."""
        if self._file is None:
            return
        self._reactor.removeReader(self)
        self._receiver = None
        f, self._file = self._file, None
        f.close()

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Hand one packet to the kernel (a slice may be a memoryview, uncopied). Errors are
        counted and logged, never raised."""
        if self.offload:
            return self._write((VNET_NONE, packet))
        return self._write(packet)

    def _write(self, data: Any) -> bool:
        """One write: ``data`` a buffer, or a tuple of buffers gathered with ``writev``."""
        if self._file is None:
            self.counters["write_not_open"] += 1
            return False
        try:
            if isinstance(data, tuple):
                self._file.writev(data)
            else:
                self._file.write(data)
        except OSError as e:
            name = _errno.errorcode.get(e.errno or -1, str(e.errno))
            self.counters["write_errors"] += 1
            self.counters[f"write_error.{name}"] += 1
            now = self._reactor.seconds() if hasattr(self._reactor, "seconds") else None
            if now is None or self._logged_at is None or now - self._logged_at >= LOG_INTERVAL:
                self._logged_at = now
                self.log.warn("TUN {name} write failed: {error} ({count} failures so far)",
                              name=self.name, error=str(e), errno=name,
                              count=self.counters["write_errors"])
            return False
        self.counters["written"] += 1
        return True

    def write_offloaded(self, vnet: bytes, buffers: tuple[bytes | memoryview, ...]) -> bool:
        """Hand one packet made of ``buffers`` to the kernel behind the ``virtio_net_hdr``
        ``vnet`` (a GSO super-packet whose checksum the kernel finishes; needs ``offload``).
        Errors as :meth:`write`."""
        if not self.offload:
            self.counters["write_not_offloaded"] += 1
            return False
        return self._write((vnet,) + buffers)

    # IReadDescriptor

    def fileno(self) -> int:
        return self._file.fileno() if self._file is not None else -1

    def doRead(self) -> None:
        receiver = self._receiver
        if receiver is None:  # set and cleared with the file
            return
        for _ in range(READ_BURST):
            if self._file is None:
                return
            try:
                packet = self._file.read(MAX_PACKET + VNET_HDR_LEN)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as e:
                self.counters["read_errors"] += 1
                self.log.warn("TUN {name} read failed: {error}", name=self.name, error=str(e))
                return
            if not packet:
                return
            self.counters["read"] += 1
            if self.offload:
                hook = self.gso_receiver if len(packet) > 1 and packet[1] else \
                    self.partial_receiver if packet[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM else None
                if hook is not None:
                    try:
                        taken = hook(packet)
                    except Exception:
                        self.counters["receiver_errors"] += 1
                        self.log.failure("TUN {name} receiver failed", name=self.name)
                        continue
                    if taken:
                        self.counters["gso_whole" if len(packet) > 1 and packet[1]
                                      else "partial_whole"] += 1
                        continue
                self._segments(packet)
                continue
            try:
                receiver(packet)
            except Exception:
                self.counters["receiver_errors"] += 1
                self.log.failure("TUN {name} receiver failed", name=self.name)

    def _segments(self, frame: bytes) -> None:
        """Hand each packet of one offloaded read to the receiver."""
        try:
            packets = segments(frame)
        except OffloadError as e:
            self.counters["offload_errors"] += 1
            self.log.warn("TUN {name}: bad offload header: {error}", name=self.name,
                          error=str(e))
            return
        if len(packets) > 1:
            self.counters["gso_reads"] += 1
            self.counters["gso_segments"] += len(packets)
        receiver = self._receiver
        for packet in packets:
            if receiver is None:
                return
            try:
                receiver(packet)
            except Exception:
                self.counters["receiver_errors"] += 1
                self.log.failure("TUN {name} receiver failed", name=self.name)

    def connectionLost(self, reason: Failure) -> None:
        self.counters["read_errors"] += 1
        self.log.error("TUN {name} lost: {reason}", name=self.name,
                       reason=reason.getErrorMessage())

    def logPrefix(self) -> str:
        return f"TunDevice({self.name})"
