"""Network-namespace topologies described as data, built and torn down with ``ip`` (iproute2).

A :class:`Topology` is nodes (each a network namespace), links and routes. A link with two
members is a veth pair between their namespaces; a link with more members (or ``bridge=True``)
is a bridge in a namespace of its own that every member joins with a veth pair, so nothing is
created in the caller's namespace. Addresses are added with ``nodad`` and DAD is switched off in
every namespace, so links are usable as soon as :meth:`Topology.create` returns (it waits for
the interfaces to be up). Names are unique per tag (default: process id and a counter), creation
first removes leftovers of the same names, and :meth:`Topology.destroy` (also on ``with`` exit)
deletes the namespaces, which removes every interface in them, and ends processes left in them.
:meth:`Topology.move_interface` carries a node's interface to another bridged link of a built
topology (a mobile node moving to another visited link, or back home).

The standard topologies (HAs on one shared home link, HAs on separate home links joined at
layer 2, HAs without a home link; each with a correspondent and mobile nodes on a visited link)
are the functions at the bottom; the demo and the tier-3 tests use them.
"""

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from ..io.system import in_netns
from .timing import scaled

_counter = itertools.count(1)


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its standard error."""


@dataclass(frozen=True)
class Member:
    """One node's end of a link: interface name inside the node and its addresses."""

    node: str
    ifname: str
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Link:
    name: str
    members: tuple[Member, ...]
    bridge: bool = False


@dataclass(frozen=True)
class Route:
    node: str
    destination: str  # a prefix or "default"
    via: str | None = None
    dev: str | None = None


@dataclass
class Node:
    name: str
    forwarding: bool = False
    loopback_addresses: tuple[str, ...] = ()
    sysctls: dict[str, Any] = field(default_factory=dict)


def _run(argv: Sequence[str], check: bool = True, input: str | None = None
         ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=scaled(60))
    if check and r.returncode:
        raise LabError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def write_sysctl(netns: str | None, key: str, value: object) -> None:
    """Set ``key`` (dotted, e.g. ``net.ipv6.conf.all.forwarding``) inside ``netns``."""
    path = "/proc/sys/" + key.replace(".", "/")
    with in_netns(netns):
        with open(path, "w") as f:
            f.write(f"{value}\n")


def read_sysctl(netns: str | None, key: str) -> str:
    """The value of ``key`` inside ``netns``."""
    path = "/proc/sys/" + key.replace(".", "/")
    with in_netns(netns):
        with open(path) as f:
            return f.read().strip()


class Topology:
    """Nodes, links and routes; :meth:`create` builds them, :meth:`destroy` removes them."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or f"{os.getpid()}-{next(_counter)}"
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self.routes: list[Route] = []
        #: (link name, link name): bridges joined at layer 2
        self.joins: list[tuple[str, str]] = []
        #: (node, ifname, link): interfaces carried to another link after create
        self.moves: list[tuple[str, str, str]] = []
        self.info: dict[str, Any] = {}  # free-form facts for users (home prefix, HA addresses, ...)
        self.created = False
        #: (node, ifname) -> (namespace, name) of its veth peer, once moved
        self._far: dict[tuple[str, str], tuple[str, str]] = {}

    # -- description ------------------------------------------------------------------------

    def add_node(self, name: str, forwarding: bool = False,
                 loopback_addresses: Iterable[str] = (), **sysctls: Any) -> "Topology":
        """A node (a network namespace) named ``name``."""
        if name in self.nodes:
            raise ValueError(f"node {name!r} defined twice")
        self.nodes[name] = Node(name, forwarding, tuple(loopback_addresses), dict(sysctls))
        return self

    def add_link(self, name: str, *members: tuple[str, str, Sequence[str]],
                 bridge: bool = False) -> "Topology":
        """``members``: ``(node, ifname, [address/prefixlen, ...])`` tuples; two or more, or
        one when ``bridge`` (a segment other bridges are joined to)."""
        ms = []
        for node, ifname, addresses in members:
            if node not in self.nodes:
                raise ValueError(f"link {name!r}: unknown node {node!r}")
            if len(ifname) > 15:
                raise ValueError(f"interface name {ifname!r} longer than 15 characters")
            ms.append(Member(node, ifname, tuple(str(IPv6Interface(a)) for a in addresses)))
        if len(ms) < (1 if bridge else 2):
            raise ValueError(f"link {name!r} needs two members or more (one if bridged)")
        if any(lk.name == name for lk in self.links):
            raise ValueError(f"link {name!r} defined twice")
        self.links.append(Link(name, tuple(ms), bridge or len(ms) > 2))
        return self

    def join_links(self, a: str, b: str) -> "Topology":
        """Join bridged links ``a`` and ``b`` at layer 2 (a veth pair between their bridges):
        the stand-in for the L2 connectivity (e.g. L2TP) between separate home links of draft
        3.1, Figures 3 and 4."""
        links = {lk.name: lk for lk in self.links}
        for name in (a, b):
            if name not in links:
                raise ValueError(f"join: unknown link {name!r}")
            if not links[name].bridge:
                raise ValueError(f"join: link {name!r} is not bridged (bridge=True)")
        if a == b or (a, b) in self.joins or (b, a) in self.joins:
            raise ValueError(f"join: {a!r} and {b!r} cannot be joined (again)")
        self.joins.append((a, b))
        return self

    def add_route(self, node: str, destination: str, via: str | None = None,
                  dev: str | None = None) -> "Topology":
        if node not in self.nodes:
            raise ValueError(f"route: unknown node {node!r}")
        if destination != "default":
            destination = str(IPv6Network(destination))
        self.routes.append(Route(node, destination, str(IPv6Address(via)) if via else None, dev))
        return self

    def ns(self, node: str) -> str:
        """The namespace name of ``node``."""
        if node not in self.nodes:
            raise KeyError(f"unknown node {node!r}")
        return f"haha-{self.tag}-{node}"

    def _link_ns(self, link: Link) -> str:
        return f"haha-{self.tag}-L{link.name}"

    def link_ns(self, name: str) -> str:
        """The namespace holding the bridge of bridged link ``name`` (to capture on it)."""
        for lk in self.links:
            if lk.name == name and lk.bridge:
                return self._link_ns(lk)
        raise KeyError(f"no bridged link {name!r}")

    def namespaces(self) -> list[str]:
        return [self.ns(n) for n in self.nodes] + [
            self._link_ns(lk) for lk in self.links if lk.bridge]

    def address(self, node: str, link: str | None = None) -> IPv6Address:
        """The first address of ``node`` (on ``link`` when given) as IPv6Address."""
        for lk in self.links:
            if link is not None and lk.name != link:
                continue
            for m in lk.members:
                if m.node == node and m.addresses:
                    return IPv6Interface(m.addresses[0]).ip
        if link is None and self.nodes[node].loopback_addresses:
            return IPv6Interface(self.nodes[node].loopback_addresses[0]).ip
        raise KeyError(f"{node!r} has no address" + (f" on {link!r}" if link else ""))

    # -- building ---------------------------------------------------------------------------

    def create(self, ready_timeout: float = 10.0) -> "Topology":
        """Build everything (after removing leftovers of the same names)."""
        self.destroy()
        try:
            for name in self.namespaces():
                _run(["ip", "netns", "add", name])
                # DAD off before any interface appears, so nothing waits "tentative".
                for key in ("net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad"):
                    write_sysctl(name, key, 0)
                _run(["ip", "-n", name, "link", "set", "lo", "up"])
            for node in self.nodes.values():
                ns = self.ns(node.name)
                if node.forwarding:
                    write_sysctl(ns, "net.ipv6.conf.all.forwarding", 1)
                for key, value in node.sysctls.items():
                    write_sysctl(ns, key.replace("__", "."), value)
                for a in node.loopback_addresses:
                    _run(["ip", "-n", ns, "-6", "addr", "add", a, "dev", "lo", "nodad"])
            for lk in self.links:
                self._create_link(lk)
            links = {lk.name: lk for lk in self.links}
            for i, (a, b) in enumerate(self.joins):
                ha, hb = self._link_ns(links[a]), self._link_ns(links[b])
                _run(["ip", "-n", ha, "link", "add", f"j{i}", "type", "veth",
                      "peer", "name", f"j{i}", "netns", hb])
                for hub in (ha, hb):
                    _run(["ip", "-n", hub, "link", "set", f"j{i}", "master", "br0"])
                    _run(["ip", "-n", hub, "link", "set", f"j{i}", "up"])
            for r in self.routes:
                argv = ["ip", "-n", self.ns(r.node), "-6", "route", "replace", r.destination]
                if r.via:
                    argv += ["via", r.via]
                if r.dev:
                    argv += ["dev", r.dev]
                _run(argv)
            self._wait_ready(ready_timeout)
        except Exception:
            self.destroy()
            raise
        self.created = True
        return self

    def _create_link(self, lk: Link) -> None:
        if not lk.bridge:
            a, b = lk.members
            _run(["ip", "-n", self.ns(a.node), "link", "add", a.ifname, "type", "veth",
                  "peer", "name", b.ifname, "netns", self.ns(b.node)])
        else:
            hub = self._link_ns(lk)
            _run(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"])
            # No multicast snooping: MLD state must not delay ND on a fresh bridge.
            _run(["ip", "-n", hub, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
            _run(["ip", "-n", hub, "link", "set", "br0", "up"])
            for i, m in enumerate(lk.members):
                port = f"p{i}"
                _run(["ip", "-n", hub, "link", "add", port, "type", "veth",
                      "peer", "name", m.ifname, "netns", self.ns(m.node)])
                _run(["ip", "-n", hub, "link", "set", port, "master", "br0"])
                _run(["ip", "-n", hub, "link", "set", port, "up"])
        for m in lk.members:
            ns = self.ns(m.node)
            for address in m.addresses:
                _run(["ip", "-n", ns, "-6", "addr", "add", address, "dev", m.ifname, "nodad"])
            _run(["ip", "-n", ns, "link", "set", m.ifname, "up"])

    def _wait_ready(self, timeout: float, pending: Iterable[tuple[str, str]] | None = None
                    ) -> None:
        """Wait until every member interface (or those ``pending``: (namespace, name) pairs)
        is up with carrier and has no tentative address."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        if pending is None:
            pending = [(self.ns(m.node), m.ifname) for lk in self.links for m in lk.members]
        pending = list(pending)
        while pending:
            ns, ifname = pending[0]
            link = _run(["ip", "-n", ns, "-o", "link", "show", ifname]).stdout
            addrs = _run(["ip", "-n", ns, "-6", "-o", "addr", "show", "dev", ifname]).stdout
            if "LOWER_UP" in link and "tentative" not in addrs:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                raise LabError(f"{ifname} in {ns} not ready after {timeout} s: {link} {addrs}")
            time.sleep(0.02)

    def destroy(self) -> None:
        """Remove every namespace of this topology (missing ones are fine). Idempotent."""
        existing = set(_run(["ip", "netns", "list"]).stdout.split())
        for name in self.namespaces():
            if name not in existing:
                continue
            pids = _run(["ip", "netns", "pids", name], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run(["ip", "netns", "del", name], check=False)
        self.created = False
        self.moves = []
        self._far = {}

    def __enter__(self) -> "Topology":
        if not self.created:
            self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _far_end(self, node: str, ifname: str) -> tuple[str, str]:
        """``(namespace, name)`` of the other end of ``node``'s veth ``ifname``."""
        if (node, ifname) in self._far:
            return self._far[(node, ifname)]
        for lk in self.links:
            for i, m in enumerate(lk.members):
                if (m.node, m.ifname) != (node, ifname):
                    continue
                if lk.bridge:
                    return self._link_ns(lk), f"p{i}"
                (other,) = [o for o in lk.members if o is not m]
                return self.ns(other.node), other.ifname
        raise KeyError(f"{node!r} has no interface {ifname!r}")

    def move_interface(self, node: str, ifname: str, link: str, ready_timeout: float = 10.0
                       ) -> None:
        """Carry ``node``'s interface ``ifname`` to bridged link ``link`` of the created
        topology, as a host unplugged from one link and plugged into another (a mobile node
        moving to another visited link, or back to its home link).

        The far end of its veth pair (its port on the old bridge, or the other member's
        interface of a two-member link, which that node loses) leaves the old link and becomes
        a port of ``link``'s bridge. The interface keeps its name, addresses and routes: changing
        them is the moving host's business (:meth:`run` ``ip ...``). Returns when the interface
        has carrier again."""
        if not self.created:
            raise RuntimeError("move_interface needs a created topology")
        target = next((lk for lk in self.links if lk.name == link), None)
        if target is None or not target.bridge:
            raise ValueError(f"move: {link!r} is not a bridged link of this topology")
        ns, far = self._far_end(node, ifname)
        hub = self._link_ns(target)
        port = f"mv{len(self.moves)}"
        # Renamed (while down) before the move, so no name clashes in the bridge's namespace.
        _run(["ip", "-n", ns, "link", "set", far, "down"])
        _run(["ip", "-n", ns, "link", "set", far, "name", port])
        _run(["ip", "-n", ns, "link", "set", port, "netns", hub])
        _run(["ip", "-n", hub, "link", "set", port, "master", "br0"])
        _run(["ip", "-n", hub, "link", "set", port, "up"])
        self._far[(node, ifname)] = (hub, port)
        self.moves.append((node, ifname, link))
        self._wait_ready(ready_timeout, [(self.ns(node), ifname)])

    # -- using ------------------------------------------------------------------------------

    def run(self, node: str, argv: Sequence[str], check: bool = True, input: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside ``node``'s namespace; return the CompletedProcess."""
        return _run(["ip", "netns", "exec", self.ns(node)] + list(argv), check, input)

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside ``node``'s namespace (ended by :meth:`destroy`)."""
        return subprocess.Popen(["ip", "netns", "exec", self.ns(node)] + list(argv), **kw)

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable description (for the CLI and for logs)."""
        return {
            "tag": self.tag,
            "nodes": {n: self.ns(n) for n in self.nodes},
            "links": [{"name": lk.name, "bridge": lk.bridge,
                       "members": [[m.node, m.ifname, list(m.addresses)] for m in lk.members]}
                      for lk in self.links],
            "routes": [[r.node, r.destination, r.via, r.dev] for r in self.routes],
            "joins": [list(j) for j in self.joins],
            "moves": [list(m) for m in self.moves],
            "info": {k: str(v) if not isinstance(v, (list, dict)) else v
                     for k, v in self.info.items()},
        }


# --- the standard topologies --------------------------------------------------------------------
#
# Addresses come from the documentation prefix 2001:db8::/32 (RFC 3849) and exist only inside the
# namespaces. Router "r" joins every routed link; "cn" (correspondent) sits on 2001:db8:30::/64;
# mobile nodes "mn1".. start on the visited link 2001:db8:20::/64 (their care-of addresses).

HOME_PREFIX = IPv6Network("2001:db8:1::/64")
VISITED_PREFIX = IPv6Network("2001:db8:20::/64")
CN_PREFIX = IPv6Network("2001:db8:30::/64")


def _outer(topo: Topology, n_mns: int) -> None:
    topo.add_node("cn")
    topo.add_link("cnl", ("r", "eth1", ["2001:db8:30::ff/64"]), ("cn", "eth0", ["2001:db8:30::10/64"]))
    topo.add_route("cn", "default", via="2001:db8:30::ff")
    mns = []
    for i in range(1, n_mns + 1):
        topo.add_node(f"mn{i}")
        mns.append((f"mn{i}", "eth0", [f"2001:db8:20::{0x10 + i:x}/64"]))
        topo.add_route(f"mn{i}", "default", via="2001:db8:20::ff")
    topo.add_link("visit", ("r", "eth2", ["2001:db8:20::ff/64"]), *mns, bridge=n_mns > 1)
    topo.info.update(cn=IPv6Address("2001:db8:30::10"),
                     care_of={f"mn{i}": f"2001:db8:20::{0x10 + i:x}" for i in range(1, n_mns + 1)})


def shared_home_link(n_has: int = 2, n_mns: int = 1, tag: str | None = None) -> Topology:
    """Draft 3.1 Figure 1: HAs ha1..haN on one home link (a bridge) with router r, which also
    reaches the correspondent's link and the visited link. HA i is 2001:db8:1::i."""
    t = Topology(tag)
    t.add_node("r", forwarding=True)
    members = [("r", "eth0", [f"{HOME_PREFIX[0xff]}/64"])]
    for i in range(1, n_has + 1):
        t.add_node(f"ha{i}", forwarding=True)
        members.append((f"ha{i}", "eth0", [f"{HOME_PREFIX[i]}/64"]))
        t.add_route(f"ha{i}", "default", via=str(HOME_PREFIX[0xff]))
    t.add_link("home", *members, bridge=True)
    _outer(t, n_mns)
    t.info.update(kind="shared-home-link", home_prefix=str(HOME_PREFIX),
                  has={f"ha{i}": str(HOME_PREFIX[i]) for i in range(1, n_has + 1)})
    return t


def separate_links(n_has: int = 2, n_mns: int = 1, tag: str | None = None) -> Topology:
    """Draft 3.1 Figure 4: home agents on separate home links joined at layer 2, each also with
    a HAHA address on its own transit link to router r ("the Internet").

    Home link 1 (a bridge) holds r (2001:db8:1::ff) and ha1; home link 2 holds ha2..haN; the two
    bridges are joined by a veth pair (:meth:`Topology.join_links`), the lab's L2TP. HA i has
    the HA address 2001:db8:1::i on its home interface ``eth1`` and the HAHA address
    2001:db8:1i::1 on its transit link ``eth0`` (2001:db8:1i::/64 towards r, its default route),
    so HA-to-HA signalling crosses r while the home prefix is one broadcast domain: whichever HA
    is primary answers r's Neighbour Solicitations by proxy ND across the join, before and after
    a failover (only one HA intercepts, draft 3.1's "redundant re-routing")."""
    t = Topology(tag)
    t.add_node("r", forwarding=True)
    has, haha = {}, {}
    sites = {1: [("r", "eth0", [f"{HOME_PREFIX[0xff]}/64"])], 2: []}
    for i in range(1, n_has + 1):
        net = IPv6Network(f"2001:db8:1{i}::/64")
        t.add_node(f"ha{i}", forwarding=True)
        t.add_link(f"t{i}", ("r", f"eth{10 + i}", [f"{net[0xff]}/64"]),
                   (f"ha{i}", "eth0", [f"{net[1]}/64"]))
        t.add_route(f"ha{i}", "default", via=str(net[0xff]))
        sites[1 if i == 1 else 2].append((f"ha{i}", "eth1", [f"{HOME_PREFIX[i]}/64"]))
        has[f"ha{i}"] = str(HOME_PREFIX[i])
        haha[f"ha{i}"] = str(net[1])
    t.add_link("home1", *sites[1], bridge=True)
    if sites[2]:
        t.add_link("home2", *sites[2], bridge=True)
        t.join_links("home1", "home2")
    _outer(t, n_mns)
    t.info.update(kind="separate-links", home_prefix=str(HOME_PREFIX), has=has, haha=haha,
                  home_interface="eth1")
    return t


def no_home_link(n_has: int = 2, n_mns: int = 1, tag: str | None = None) -> Topology:
    """Draft 3.2 Figure 5: no home link at all. HA i has only a HAHA address 2001:db8:2::i on
    its loopback, reached over a transit link 2001:db8:1i::/64 to r; r routes each HAHA address
    to its HA and the aggregated (virtual) home prefix 2001:db8:1::/64 to ha1."""
    t = Topology(tag)
    t.add_node("r", forwarding=True)
    has = {}
    for i in range(1, n_has + 1):
        net = IPv6Network(f"2001:db8:1{i}::/64")
        haha = IPv6Address(f"2001:db8:2::{i}")
        t.add_node(f"ha{i}", forwarding=True, loopback_addresses=[f"{haha}/128"])
        t.add_link(f"t{i}", ("r", f"eth{10 + i}", [f"{net[0xff]}/64"]),
                   (f"ha{i}", "eth0", [f"{net[1]}/64"]))
        t.add_route(f"ha{i}", "default", via=str(net[0xff]))
        t.add_route("r", f"{haha}/128", via=str(net[1]))
        has[f"ha{i}"] = str(haha)
    t.add_route("r", str(HOME_PREFIX), via=str(IPv6Network("2001:db8:11::/64")[1]))
    _outer(t, n_mns)
    t.info.update(kind="no-home-link", home_prefix=str(HOME_PREFIX), has=has)
    return t


TOPOLOGIES = {
    "shared-home-link": shared_home_link,
    "separate-links": separate_links,
    "no-home-link": no_home_link,
}
