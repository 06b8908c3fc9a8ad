"""What both kernel-facing backends do the same way: proxy ND, the unsolicited Neighbour
Advertisement, the advertised home prefix, sysctls restored at stop, netlink failures counted,
and the leftovers of a crashed run recognised and removed at the next start.

Proxy ND uses the kernel (``net.ipv6.conf.<if>.proxy_ndp`` + a proxy neighbour entry); on
take-over one unsolicited NA goes to all-nodes (RFC 6275 10.4.1, RFC 4861 7.2.6: Target = the
home address, Target Link-layer Address = ours, S=0, O=1, R=0 unless ``router_flag``; source our
link-local address, Hop Limit 255). ``advertise_prefix`` installs the aggregated home prefix as
an ``unreachable`` route with a high metric: the route a routing daemon (BIRD, FRR)
redistributes to attract the prefix; home addresses with a binding have more specific routes and
win, the others get ICMPv6 Destination Unreachable from this home agent.

State left behind (docs/io.md). ``kill -9`` ends the process but not what it put in the kernel:
the proxy neighbour entries and the prefix route stay (the TUN device and the routes into it go
with the process's file descriptor, the nft table is removed by the next start of the
transport). So every route and proxy entry haha installs carries the routing protocol number
:data:`~haha.backends.netsys.RTPROT_HAHA`, and a backend given an :class:`Ownership` (the
daemon does that) removes at start, before it installs anything, what a previous run of the
*same* daemon left: proxy entries with haha's number on the home interface for addresses inside
the home prefix, and haha's ``unreachable`` route for exactly the home prefix (the netlink
backend adds its leftover tunnels). Entries of anyone else (another protocol number, another
interface, another prefix) are never touched. Each removal is logged and counted
(``leftovers_removed``).

The ownership's state file (a small JSON file beside the ESP sequence file) makes "the same
daemon" exact: it is locked (``flock``) while the daemon runs, so a second daemon started with
the same configuration is refused before it removes anything of the first one's; it records the
run's scope (prefix, interface, addresses, routing table), so a restart after a configuration
change still finds the previous run's leftovers; and it keeps the sysctl values found before
the first change, so a run after a crash restores the original values at its stop rather than
the ones the crashed run set. The kernel releases the lock when the process dies; a clean stop
deletes the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Dict, List, Optional, Set

from ..errors import StartupError
from ..logging import class_logger
from .addresses import AddressHolding
from .proxyset import ProxiedSet
from ..wire.icmpv6 import NA_O, NA_R, LinkLayerAddress, NeighborAdvertisement, encode_icmpv6
from ..wire.ipv6 import build_packet
from ..wire.numbers import IPPROTO_ICMPV6, ND_OPT_TARGET_LLADDR
from .netsys import RTPROT_HAHA, NetlinkFailure, Pyroute2Netlink


@dataclass(frozen=True)
class Ownership:
    """What one home agent daemon may install in the kernel, so that its next run recognises
    the leftovers: proxy entries on ``interface`` (None: none) for addresses inside ``prefix``,
    the ``unreachable`` route for ``prefix``, kernel tunnels whose local end is one of
    ``addresses``. ``state_file`` (optional) is locked while the daemon runs and records the
    scope (module docstring)."""

    prefix: IPv6Network
    interface: str | None = None
    addresses: frozenset = field(default_factory=frozenset)
    state_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, IPv6Network):
            raise TypeError(f"prefix {self.prefix!r} is not an IPv6Network")
        if self.interface is not None and (not isinstance(self.interface, str)
                                           or not self.interface):
            raise TypeError(f"interface {self.interface!r} is not a name")
        object.__setattr__(self, "addresses", frozenset(self.addresses))
        for a in self.addresses:
            if not isinstance(a, IPv6Address):
                raise TypeError(f"address {a!r} is not an IPv6Address")


@dataclass(frozen=True)
class Scope:
    """One run's kernel footprint: an :class:`Ownership` plus the backend's routing table."""

    prefix: IPv6Network
    interface: Optional[str]
    addresses: frozenset
    table: Optional[int]

    def to_json(self) -> Dict[str, Any]:
        return {"prefix": str(self.prefix), "interface": self.interface,
                "addresses": sorted(str(a) for a in self.addresses), "table": self.table}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Scope:
        """The scope a state file recorded; ValueError/TypeError/KeyError when malformed."""
        table = data["table"]
        if table is not None and (isinstance(table, bool) or not isinstance(table, int)):
            raise TypeError(f"table {table!r}")
        interface = data["interface"]
        if interface is not None and not isinstance(interface, str):
            raise TypeError(f"interface {interface!r}")
        return cls(IPv6Network(data["prefix"]), interface,
                   frozenset(IPv6Address(a) for a in data["addresses"]), table)


class StateBusy(StartupError, RuntimeError):
    """Another live process holds the state file: the same daemon is running already."""


class StateFile:
    """The locked JSON record of one daemon's kernel footprint (module docstring). The lock
    is held on the open file for the life of the process; the record is rewritten in place
    (not replaced) so the lock stays on the one file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fd: Optional[int] = None

    def acquire(self) -> Optional[Dict[str, Any]]:
        """Lock the file (creating it); return what the previous run recorded (a dict), or
        None when there is no readable record. Raises :class:`StateBusy` when a live process
        holds it, OSError when the file cannot be opened."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            text = os.pread(fd, 65536, 0)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            try:
                pid = json.loads(text).get("pid")
            except (ValueError, AttributeError):
                pid = None
            raise StateBusy(
                f"{self.path} is held by a running process (pid {pid}): this daemon's "
                "configuration is running already; stop that one first") from None
        self._fd = fd
        text = os.pread(fd, 1 << 20, 0)
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            raise ValueError(f"{self.path} is not JSON") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.path} does not hold an object")
        return data

    def write(self, data: Dict[str, Any]) -> None:
        """Replace the record (fsynced) while holding the lock. The file is rewritten in place
        (the lock is on it), so a full disk must not leave half a record: a longer record first
        grows the file with spaces after the old one (still valid JSON if that fails half-way),
        then overwrites space already allocated; a shorter record is padded with spaces instead
        of truncating; short writes are continued. An OSError leaves the earlier record
        readable."""
        fd = self._locked()
        blob = json.dumps(data, sort_keys=True).encode()
        size = os.fstat(fd).st_size
        if len(blob) < size:
            blob += b" " * (size - len(blob))
        elif len(blob) > size:
            self._pwrite_all(b" " * (len(blob) - size), size)
        self._pwrite_all(blob, 0)
        os.fsync(fd)

    def _locked(self) -> int:
        if self._fd is None:
            raise RuntimeError(f"{self.path} is not held: acquire() it first")
        return self._fd

    def _pwrite_all(self, blob: bytes, offset: int) -> None:
        fd = self._locked()
        view = memoryview(blob)
        while view:
            n = os.pwrite(fd, view, offset)
            if not n:
                raise OSError(errno.ENOSPC, f"no progress writing {self.path}")
            view = view[n:]
            offset += n

    def release(self, remove: bool) -> None:
        """Unlock; ``remove`` deletes the file first (a clean stop leaves nothing)."""
        if self._fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


ALL_NODES = IPv6Address("ff02::1")


class LinkDuties(AddressHolding):
    """Mixin. The host class provides ``_netlink`` (a netlink seam or None for the real one),
    ``transport``, ``counters``, ``table``, ``prefix_metric``, ``router_flag`` and calls
    :meth:`_init_link_duties`, :meth:`_claim` at start before installing anything, and
    :meth:`_stop_link_duties`. ``ownership`` (an :class:`Ownership`, set before start, None:
    nothing is reclaimed; given to the host's constructor) says what a previous run of the
    same daemon may have left."""

    log = class_logger()
    _netlink: Any
    transport: Any
    counters: Counter[str]
    table: Optional[int]
    prefix_metric: Optional[int]
    router_flag: bool

    @property
    def netlink(self) -> Any:
        """The netlink seam, the real one (pyroute2) made on first use."""
        if self._netlink is None:
            self._netlink = Pyroute2Netlink()
        return self._netlink

    def _init_link_duties(self, ownership: Optional[Ownership] = None,
                          log: Any = None) -> None:
        """``log``: a Logger carrying the daemon's identity, instead of the class's own."""
        if ownership is not None and not isinstance(ownership, Ownership):
            raise TypeError(f"ownership {ownership!r} is not an Ownership")
        if log is not None:
            self.log = log
        self.proxied: ProxiedSet[str] = ProxiedSet()  # (address, interface) pairs
        self.prefixes: Set[IPv6Network] = set()
        self._saved_sysctls: Dict[str, str] = {}
        self.ownership = ownership
        self._state: Optional[StateFile] = None

    def _stop_link_duties(self) -> None:
        self._release_held()
        for address, interface in list(self.proxied):
            self.proxy_nd_stop(address, interface)
        for prefix in list(self.prefixes):
            self.withdraw_prefix(prefix)
        for key, value in list(self._saved_sysctls.items()):
            self._nl(f"restore {key}", self.netlink.sysctl_set, key, value)
        self._saved_sysctls.clear()
        if self._state is not None:
            self._state.release(remove=True)
            self._state = None

    # -- leftovers of an earlier run (module docstring) ----------------------------------------

    @property
    def state(self) -> Optional[StateFile]:
        """The :class:`StateFile` this run holds, or None. (A test simulates ``kill -9`` by
        dropping the backend after ``state.release(remove=False)``: the kernel closes the
        file, and so the lock, when a process dies.)"""
        return self._state

    def _scope(self) -> Scope:
        o = self.ownership
        if o is None:
            raise RuntimeError("no ownership: this backend reclaims nothing")
        return Scope(o.prefix, o.interface, o.addresses, self.table)

    def _claim(self) -> int:
        """Lock the ownership's state file, remove the leftovers of the previous run of this
        daemon (its recorded scope and the current one), carry over the sysctl values it
        found, and record this run. Raises :class:`StateBusy` when the daemon runs already.
        Returns the number of leftovers removed."""
        if self.ownership is None:
            return 0
        scopes = [self._scope()]
        path = self.ownership.state_file
        if path is not None:
            state = StateFile(path)
            try:
                previous = state.acquire()  # StateBusy goes up: refuse to start
            except (OSError, ValueError) as e:
                previous = None
                if state.held:  # unreadable record: start afresh, still locked
                    self.log.warn("ignoring the unreadable kernel state record: {error}",
                                  error=str(e))
                else:
                    self.log.warn("cannot keep kernel state in {path}: {error}; leftovers "
                                  "of a crash are still recognised by protocol {proto}, but "
                                  "a second start of this daemon is not refused",
                                  path=path, error=str(e), proto=RTPROT_HAHA)
            self._state = state if state.held else None
            if previous is not None:
                try:
                    old = Scope.from_json(previous["scope"])
                    sysctls = {str(k): str(v) for k, v in previous.get("sysctls", {}).items()}
                except (KeyError, TypeError, ValueError, AttributeError) as e:
                    self.log.warn("ignoring the malformed kernel state record {path}: {error}",
                                  path=path, error=repr(e))
                else:
                    if old not in scopes:
                        scopes.append(old)
                    self._reclaim_held(previous.get("held"))
                    for key, value in sysctls.items():
                        self._saved_sysctls.setdefault(key, value)
                    self.log.info("an earlier run (pid {pid}) did not stop cleanly: "
                                  "reclaiming what it left", pid=previous.get("pid"))
        removed = self._reclaim(scopes)
        self._save_state()
        return removed

    def _release(self) -> None:
        """Give the state file up after a start that failed (nothing of this run installed)."""
        if self._state is not None:
            self._state.release(remove=True)
            self._state = None
        self._saved_sysctls.clear()

    def _save_state(self) -> None:
        if self._state is None:
            return
        try:
            self._state.write({"pid": os.getpid(), "scope": self._scope().to_json(),
                               "sysctls": dict(self._saved_sysctls),
                               "held": self._held_json()})
        except OSError as e:
            self.counters["state_errors"] += 1
            self.log.warn("cannot write the kernel state record: {error}", error=str(e))

    def _leftover(self, what: str) -> None:
        self.counters["leftovers_removed"] += 1
        self.log.info("removed a leftover of an earlier run: {what}", what=what)

    def _reclaim(self, scopes: List[Scope]) -> int:
        """Remove haha-tagged proxy entries and prefix routes inside ``scopes`` that this run
        does not hold; returns how many were removed."""
        before = self.counters["leftovers_removed"]
        nl = self.netlink
        try:
            proxies = nl.neigh_proxy_dump()
        except NetlinkFailure as e:
            proxies = []
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot list proxy neighbour entries: {error}", error=str(e))
        for address, dev, proto in proxies:
            if proto != RTPROT_HAHA or (address, dev) in self.proxied:
                continue
            if not any(s.interface == dev and address in s.prefix for s in scopes):
                continue
            if self._nl(f"remove leftover proxy ND for {address}", nl.neigh_proxy_delete,
                        address, dev):
                self._leftover(f"proxy ND entry for {address} on {dev}")
        for table in dict.fromkeys(s.table for s in scopes):
            try:
                routes = nl.route_dump(table=table, proto=RTPROT_HAHA)
            except NetlinkFailure as e:
                self.counters["netlink_errors"] += 1
                self.log.warn("cannot list routes: {error}", error=str(e))
                continue
            mine = {s.prefix for s in scopes if s.table == table}
            for r in routes:
                dst = r["dst"]
                if r["kind"] != "unreachable" or dst not in mine or (
                        table == self.table and dst in self.prefixes):
                    continue
                if self._nl(f"remove leftover route {dst}", nl.route_delete, dst,
                            table=table, metric=r["metric"], kind="unreachable",
                            proto=RTPROT_HAHA):
                    self._leftover(f"unreachable route {dst} (table {table or 'main'}, "
                                   f"metric {r['metric']})")
        self._reclaim_more(scopes)
        return self.counters["leftovers_removed"] - before

    def _reclaim_more(self, scopes: List[Scope]) -> None:
        """What a backend leaves besides proxy entries and prefix routes (hook)."""

    def _nl(self, what: str, func: Callable[..., Any], *args: Any, **kw: Any) -> bool:
        """A netlink call whose failure is logged and counted, never raised."""
        try:
            func(*args, **kw)
            return True
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("{what} failed: {error}", what=what, error=str(e), errno=e.errno)
            return False

    def _set_sysctl(self, key: str, value: str) -> None:
        """Set a sysctl, remembering its first value for :meth:`_stop_link_duties` (in the
        state record too, before the change)."""
        if key not in self._saved_sysctls:
            self._saved_sysctls[key] = self.netlink.sysctl_get(key)
            self._save_state()
        self.netlink.sysctl_set(key, value)

    def proxy_nd_start(self, address: IPv6Address, interface: str) -> None:
        if not isinstance(address, IPv6Address):
            raise TypeError(f"{address!r} is not an IPv6Address")
        if not isinstance(interface, str) or not interface:
            raise TypeError(f"interface {interface!r} is not a name")
        key = f"net.ipv6.conf.{interface}.proxy_ndp"
        try:
            self._set_sysctl(key, "1")
        except NetlinkFailure as e:
            self.counters["netlink_errors"] += 1
            self.log.warn("cannot enable proxy_ndp on {interface}: {error}",
                          interface=interface, error=str(e))
        if self._nl(f"proxy ND for {address}", self.netlink.neigh_proxy_add, address, interface,
                    proto=RTPROT_HAHA):
            self.proxied.add((address, interface))
        self.send_unsolicited_na(address, interface)

    def proxy_nd_stop(self, address: IPv6Address, interface: str) -> None:
        if (address, interface) not in self.proxied:
            return
        self.proxied.discard((address, interface))
        self._nl(f"stop proxy ND for {address}", self.netlink.neigh_proxy_delete, address,
                 interface)

    def send_unsolicited_na(self, address: IPv6Address, interface: str) -> Optional[bytes]:
        """One unsolicited NA to all-nodes for ``address`` with our link-layer address
        (RFC 6275 10.4.1, RFC 4861 7.2.6). Returns the packet sent, or None."""
        if self.transport is None:
            self.counters["na_errors"] += 1
            self.log.warn("no transport to send the NA for {address}", address=str(address))
            return None
        try:
            info = self.netlink.link_info(interface)
        except NetlinkFailure as e:
            self.counters["na_errors"] += 1
            self.log.warn("no link information for {interface}: {error}", interface=interface,
                          error=str(e))
            return None
        addrs = info.get("addresses") or []
        src = next((a for a in addrs if a.is_link_local), addrs[0] if addrs else None)
        if src is None or not info.get("mac"):
            self.counters["na_errors"] += 1
            self.log.warn("{interface} has no address or link-layer address for an NA",
                          interface=interface)
            return None
        flags = NA_O | (NA_R if self.router_flag else 0)
        na = NeighborAdvertisement(address, flags,
                                   (LinkLayerAddress(ND_OPT_TARGET_LLADDR, info["mac"]),))
        packet = build_packet(src, ALL_NODES, IPPROTO_ICMPV6, encode_icmpv6(na, src, ALL_NODES),
                              hop_limit=255)
        self.transport.send(packet, interface=interface)
        self.counters["unsolicited_na"] += 1
        return packet

    def advertise_prefix(self, prefix: IPv6Network) -> None:
        if not isinstance(prefix, IPv6Network):
            raise TypeError(f"{prefix!r} is not an IPv6Network")
        if prefix in self.prefixes:
            return
        if self._nl(f"advertise {prefix}", self.netlink.route_replace, prefix, table=self.table,
                    metric=self.prefix_metric, kind="unreachable", proto=RTPROT_HAHA):
            self.prefixes.add(prefix)

    def withdraw_prefix(self, prefix: IPv6Network) -> None:
        if prefix not in self.prefixes:
            return
        self.prefixes.discard(prefix)
        self._nl(f"withdraw {prefix}", self.netlink.route_delete, prefix, table=self.table,
                 metric=self.prefix_metric, kind="unreachable", proto=RTPROT_HAHA)

