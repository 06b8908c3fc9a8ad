"""The netlink seam of the forwarding backends (docs/io.md): routes, rules, addresses, proxy
ND entries, links, sysctls.

Everything haha installs carries the routing protocol number :data:`RTPROT_HAHA` (routes:
``rtm_protocol``; rules: ``FRA_PROTOCOL``; proxy neighbour entries: ``NDA_PROTOCOL``), so that a
later run recognises what a crashed one left (``haha.backends.common``, docs/io.md "State left
behind"). The ``*_dump`` methods list what the kernel holds, with that number.

:class:`Pyroute2Netlink` does it through pyroute2 (optionally inside a named network namespace);
:class:`FakeNetlink` keeps the same state in dictionaries for unit tests and for embedders that
want a backend to run without privileges. Both raise :class:`NetlinkFailure` with a sentence
naming the operation when the system refuses.

pyroute2's synchronous API runs its own asyncio loop inside each call: fine under Twisted's
default (epoll/poll/select) reactors, not under the asyncio reactor.
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address, IPv6Interface, IPv6Network
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

from zope.interface import implementer

from ..interfaces import INetlink
from ..io.system import in_netns

NTF_PROXY = 0x08
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
RTPROT_STATIC = 4
#: The routing protocol number haha tags its routes, policy rules and proxy neighbour entries
#: with (rtnetlink ``rtm_protocol``, ``FRA_PROTOCOL``, ``NDA_PROTOCOL``; values above
#: RTPROT_STATIC are not interpreted by the kernel). 72 ("H") is assigned to nobody in Linux's
#: rtnetlink.h or iproute2's rt_protos; ``ip route show proto 72`` lists haha's routes.
RTPROT_HAHA = 72
#: Route types (rtnetlink ``rtm_type``) by number, for :meth:`Pyroute2Netlink.route_dump`.
ROUTE_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
               6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
MAIN_TABLE = 254
FIB_RULE_INVERT = 0x2  # fib_rule_hdr flags: the rule matches what its selectors do not


#: A route destination: a network, or its text (``"2001:db8::1/128"``).
Destination = Union[IPv6Network, str]
#: A tunnel end point: an address, or its text (``"::"``).
Address = Union[IPv6Address, str]


class NetlinkFailure(RuntimeError):
    """A netlink operation failed; ``errno`` is the kernel's error number when known."""

    def __init__(self, message: str, errno: Optional[int] = None) -> None:
        super().__init__(message)
        self.errno = errno


def _mac_bytes(text: Optional[str]) -> bytes:
    return bytes(int(x, 16) for x in text.split(":")) if text else b""


@implementer(INetlink)
class Pyroute2Netlink:
    """Real netlink calls in namespace ``netns`` (``None``: the current one)."""

    def __init__(self, netns: Optional[str] = None) -> None:
        from pyroute2 import IPRoute  # heavy import, only when really used

        self.netns = netns
        self._ipr = IPRoute(netns=netns) if netns else IPRoute()

    def close(self) -> None:
        self._ipr.close()

    def _do(self, what: str, func: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        try:
            return func(*args, **kw)
        except Exception as e:  # pyroute2 raises NetlinkError, OSError, ValueError...
            code = getattr(e, "code", None) or getattr(e, "errno", None)
            raise NetlinkFailure(f"{what}: {e}", code) from None

    def index(self, name: str) -> int:
        found = self._do(f"look up {name}", self._ipr.link_lookup, ifname=name)
        if not found:
            raise NetlinkFailure(f"no interface named {name}")
        return found[0]

    def link_info(self, name: str) -> Dict[str, Any]:
        idx = self.index(name)
        link = self._do(f"read {name}", self._ipr.get_links, idx)[0]
        addrs = []
        for a in self._do(f"read addresses of {name}", self._ipr.get_addr,
                          family=socket.AF_INET6, index=idx):
            addrs.append(IPv6Address(a.get_attr("IFA_ADDRESS")))
        return {"index": idx, "mac": _mac_bytes(link.get_attr("IFLA_ADDRESS")),
                "mtu": link.get_attr("IFLA_MTU"), "up": bool(link["flags"] & 1),
                "addresses": addrs}

    def link_stats(self, name: str) -> Dict[str, int]:
        """``{"rx_packets": n, "tx_packets": n}`` of link ``name`` (the kernel's counters)."""
        link = self._do(f"read {name}", self._ipr.get_links, self.index(name))[0]
        stats = link.get_attr("IFLA_STATS64") or link.get_attr("IFLA_STATS") or {}
        return {"rx_packets": int(stats.get("rx_packets", 0)),
                "tx_packets": int(stats.get("tx_packets", 0))}

    def link_set(self, name: str, up: Optional[bool] = None, mtu: Optional[int] = None) -> None:
        kw: Dict[str, Any] = {}
        if up is not None:
            kw["state"] = "up" if up else "down"
        if mtu is not None:
            kw["mtu"] = mtu
        self._do(f"set {name} {kw}", self._ipr.link, "set", index=self.index(name), **kw)

    def _route_kw(self, dst: Destination, dev: Optional[str], table: Optional[int],
                  metric: Optional[int], kind: str, proto: Optional[int]) -> Dict[str, Any]:
        kw = {"dst": str(dst), "family": socket.AF_INET6}
        if dev is not None:
            kw["oif"] = self.index(dev)
        if table is not None:
            kw["table"] = table
        if metric is not None:
            kw["priority"] = metric
        if kind != "unicast":
            kw["type"] = kind
        if proto is not None:
            kw["proto"] = proto
        return kw

    def route_replace(self, dst: Destination, dev: Optional[str] = None,
                      table: Optional[int] = None, metric: Optional[int] = None,
                      kind: str = "unicast", proto: Optional[int] = None) -> None:
        self._do(f"route replace {dst} dev {dev} table {table}", self._ipr.route, "replace",
                 **self._route_kw(dst, dev, table, metric, kind, proto))

    def route_delete(self, dst: Destination, dev: Optional[str] = None, table: Optional[int] = None,
                     metric: Optional[int] = None, kind: str = "unicast",
                     proto: Optional[int] = None) -> None:
        self._do(f"route delete {dst} dev {dev} table {table}", self._ipr.route, "del",
                 **self._route_kw(dst, dev, table, metric, kind, proto))

    def neigh_proxy_add(self, address: IPv6Address, dev: str, proto: Optional[int] = None) -> None:
        kw = {} if proto is None else {"NDA_PROTOCOL": proto}
        self._do(f"proxy ND for {address} on {dev}", self._ipr.neigh, "replace",
                 dst=str(address), ifindex=self.index(dev), family=socket.AF_INET6,
                 flags=NTF_PROXY, state=NUD_PERMANENT, **kw)

    def neigh_proxy_delete(self, address: IPv6Address, dev: str) -> None:
        self._do(f"remove proxy ND for {address} on {dev}", self._ipr.neigh, "del",
                 dst=str(address), ifindex=self.index(dev), family=socket.AF_INET6,
                 flags=NTF_PROXY)

    def _names(self) -> Dict[int, str]:
        return {link["index"]: link.get_attr("IFLA_IFNAME")
                for link in self._do("list links", self._ipr.get_links)}

    def neigh_proxy_dump(self) -> List[Tuple[IPv6Address, str, Optional[int]]]:
        """``[(address, interface, protocol or None)]`` of every IPv6 proxy neighbour entry.

        A proxy entry is only listed when the dump request carries NTF_PROXY in its header;
        pyroute2 copies the request's fields into the header only with an explicit
        ``dump_filter`` (which here accepts everything)."""
        names = self._names()
        out = []
        for msg in self._do("list proxy neighbour entries", self._ipr.neigh, "dump",
                            family=socket.AF_INET6, flags=NTF_PROXY,
                            dump_filter=lambda m: True):
            if not msg["flags"] & NTF_PROXY:
                continue
            dev = names.get(msg["ifindex"], str(msg["ifindex"]))
            out.append((IPv6Address(msg.get_attr("NDA_DST")), dev,
                        msg.get_attr("NDA_PROTOCOL")))
        return out

    def route_dump(self, table: Optional[int] = None,
                   proto: Optional[int] = None) -> List[Dict[str, Any]]:
        """The IPv6 routes of ``table`` (None: main), only those of protocol ``proto`` when
        given: dicts with ``dst`` (IPv6Network), ``dev``, ``metric``, ``kind``, ``proto``."""
        want = MAIN_TABLE if table is None else table
        names = self._names()
        out = []
        for msg in self._do(f"list routes of table {want}", self._ipr.get_routes,
                            family=socket.AF_INET6):
            if (msg.get_attr("RTA_TABLE") or msg["table"]) != want:
                continue
            if proto is not None and msg["proto"] != proto:
                continue
            dst = msg.get_attr("RTA_DST") or "::"
            oif = msg.get_attr("RTA_OIF")
            out.append({"dst": IPv6Network(f"{dst}/{msg['dst_len']}"),
                        "dev": names.get(oif) if oif is not None else None,
                        "metric": msg.get_attr("RTA_PRIORITY"),
                        "kind": ROUTE_TYPES.get(msg["type"], str(msg["type"])),
                        "proto": msg["proto"]})
        return out

    def rule_dump(self) -> List[Tuple[IPv6Network, int, int, Optional[int]]]:
        """``[(source network, table, priority, protocol or None)]`` of the IPv6 policy rules
        that select by source."""
        out = []
        for msg in self._do("list rules", self._ipr.get_rules, family=socket.AF_INET6):
            src = msg.get_attr("FRA_SRC")
            if src is None:
                continue
            out.append((IPv6Network(f"{src}/{msg['src_len']}"),
                        msg.get_attr("FRA_TABLE") or msg["table"],
                        msg.get_attr("FRA_PRIORITY"), msg.get_attr("FRA_PROTOCOL")))
        return out

    def ip6tnl_dump(self) -> Dict[str, Tuple[IPv6Address, IPv6Address]]:
        """``{name: (local, remote)}`` of the ip6tnl links (exercised in the stock-kernel
        tier: this project's own kernel has no ip6_tunnel)."""
        out = {}
        for link in self._do("list links", self._ipr.get_links):
            info = link.get_attr("IFLA_LINKINFO")
            if info is None or info.get_attr("IFLA_INFO_KIND") != "ip6tnl":
                continue
            data = info.get_attr("IFLA_INFO_DATA")
            local = data.get_attr("IFLA_IP6TNL_LOCAL") if data is not None else None
            remote = data.get_attr("IFLA_IP6TNL_REMOTE") if data is not None else None
            out[link.get_attr("IFLA_IFNAME")] = (IPv6Address(local or "::"),
                                                 IPv6Address(remote or "::"))
        return out

    def address_add(self, interface: str, dev: str) -> None:
        iface = IPv6Interface(interface)
        self._do(f"add {iface} to {dev}", self._ipr.addr, "replace", index=self.index(dev),
                 address=str(iface.ip), prefixlen=iface.network.prefixlen,
                 family=socket.AF_INET6, flags=IFA_F_NODAD)

    def address_delete(self, interface: str, dev: str) -> None:
        iface = IPv6Interface(interface)
        self._do(f"remove {iface} from {dev}", self._ipr.addr, "del", index=self.index(dev),
                 address=str(iface.ip), prefixlen=iface.network.prefixlen,
                 family=socket.AF_INET6)

    def rule_add(self, src: IPv6Network, table: int, priority: int,
                 proto: Optional[int] = None) -> None:
        src = IPv6Network(src)
        kw = {} if proto is None else {"FRA_PROTOCOL": proto}
        self._do(f"rule from {src} table {table}", self._ipr.rule, "add",
                 family=socket.AF_INET6, src=str(src.network_address),
                 src_len=src.prefixlen, table=table, priority=priority, **kw)

    def rule_delete(self, src: IPv6Network, table: int, priority: int) -> None:
        src = IPv6Network(src)
        self._do(f"delete rule from {src} table {table}", self._ipr.rule, "del",
                 family=socket.AF_INET6, src=str(src.network_address),
                 src_len=src.prefixlen, table=table, priority=priority)

    def steer_add(self, table: int, priority: int, mark: int, proto: Optional[int] = None) -> None:
        """Send what no more specific route claims into ``table``, except packets marked
        ``mark``: rule ``priority`` looks in main without its default route
        (``suppress_prefixlength 0``: link-local, on-link and specific routes still win), rule
        ``priority + 1`` sends every packet not marked ``mark`` to ``table``."""
        kw = {} if proto is None else {"FRA_PROTOCOL": proto}
        self._do(f"rule {priority} lookup main suppress_prefixlength 0", self._ipr.rule, "add",
                 family=socket.AF_INET6, table=MAIN_TABLE, priority=priority,
                 suppress_prefixlen=0, **kw)
        self._do(f"rule {priority + 1} not fwmark {mark} table {table}", self._ipr.rule, "add",
                 family=socket.AF_INET6, table=table, priority=priority + 1, fwmark=mark,
                 fwmask=0xFFFFFFFF, flags=FIB_RULE_INVERT, **kw)

    def steer_delete(self, table: int, priority: int, mark: int) -> None:
        """Remove what :meth:`steer_add` installed."""
        self._do(f"delete rule {priority} suppress_prefixlength 0", self._ipr.rule, "del",
                 family=socket.AF_INET6, table=MAIN_TABLE, priority=priority,
                 suppress_prefixlen=0)
        self._do(f"delete rule {priority + 1} not fwmark {mark}", self._ipr.rule, "del",
                 family=socket.AF_INET6, table=table, priority=priority + 1, fwmark=mark,
                 fwmask=0xFFFFFFFF, flags=FIB_RULE_INVERT)

    def steer_dump(self) -> List[Tuple[int, int, int, Optional[int]]]:
        """``[(table, priority, mark, protocol or None)]``: the :meth:`steer_add` pairs found
        (by their ``not fwmark`` rule, whose priority is ``priority + 1``)."""
        out = []
        for msg in self._do("list rules", self._ipr.get_rules, family=socket.AF_INET6):
            mark = msg.get_attr("FRA_FWMARK")
            if mark is None or not msg["flags"] & FIB_RULE_INVERT:
                continue
            out.append((msg.get_attr("FRA_TABLE") or msg["table"],
                        msg.get_attr("FRA_PRIORITY") - 1, mark, msg.get_attr("FRA_PROTOCOL")))
        return out

    def ip6tnl_add(self, name: str, local: Address, remote: Address,
                   hop_limit: Optional[int] = None, fwmark: Optional[int] = None) -> None:
        """An ``ip6tnl`` link in mode ip6ip6 without a Tunnel Encapsulation Limit option.
        ``hop_limit``: the outer Hop Limit (None: the kernel's default, which copies the inner
        packet's); ``fwmark``: the firewall mark its outer packets are routed with (None:
        none)."""
        kw: Dict[str, Any] = {}
        if hop_limit is not None:
            kw["ip6tnl_ttl"] = hop_limit
        if fwmark is not None:
            kw["ip6tnl_fwmark"] = fwmark
        self._do(f"create ip6tnl {name}", self._ipr.link, "add", ifname=name, kind="ip6tnl",
                 ip6tnl_local=str(local), ip6tnl_remote=str(remote), ip6tnl_proto=41,
                 ip6tnl_flags=0x1, **kw)  # IP6_TNL_F_IGN_ENCAP_LIMIT

    def link_delete(self, name: str) -> None:
        self._do(f"delete {name}", self._ipr.link, "del", index=self.index(name))

    def sysctl_get(self, key: str) -> str:
        with in_netns(self.netns):
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                return f.read().strip()

    def sysctl_set(self, key: str, value: str) -> None:
        try:
            with in_netns(self.netns):
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(f"{value}\n")
        except OSError as e:
            raise NetlinkFailure(f"sysctl {key}={value}: {e}", e.errno) from None


@implementer(INetlink)
class FakeNetlink:
    """The same operations on dictionaries. ``links`` maps names to dicts like
    :meth:`Pyroute2Netlink.link_info` returns; ``ip6tnl_error`` is what creating an ip6tnl
    link fails with (by default what a kernel without ``ip6_tunnel`` answers;
    :meth:`load_ip6_tunnel` models a stock kernel). ``system``: a
    :class:`haha.io.system.FakeSystem` whose TUN devices appear here as links once opened."""

    def __init__(self, links: Optional[Dict[str, Dict[str, Any]]] = None,
                 system: Any = None) -> None:
        self.system = system
        self.links: Dict[str, Dict[str, Any]] = {}
        for name, info in (links or {"eth0": {}}).items():
            self.add_link(name, **info)
        # (dst, table) -> dict(dev, metric, kind, proto)
        self.routes: Dict[Tuple[Any, Optional[int]], Dict[str, Any]] = {}
        self.proxies: Set[Tuple[IPv6Address, str]] = set()  # (address, dev)
        # (address, dev) -> protocol, when one was given
        self.proxy_protocols: Dict[Tuple[IPv6Address, str], int] = {}
        self.addresses: Set[Tuple[IPv6Interface, str]] = set()  # (IPv6Interface, dev)
        self.rules: Set[Tuple[IPv6Network, int, int]] = set()  # (src network, table, priority)
        # (src network, table, priority) -> protocol
        self.rule_protocols: Dict[Tuple[IPv6Network, int, int], Optional[int]] = {}
        # (table, priority, mark) -> protocol (steer_add pairs)
        self.steering: Dict[Tuple[int, int, int], Optional[int]] = {}
        self.tunnels: Dict[str, Tuple[IPv6Address, IPv6Address]] = {}
        # name -> {"hop_limit", "fwmark"} as given to ip6tnl_add
        self.tunnel_options: Dict[str, Dict[str, Optional[int]]] = {}
        self.sysctls: Dict[str, str] = {}
        self.ip6tnl_error: Optional[NetlinkFailure] = NetlinkFailure(
            "create ip6tnl: (95, 'Operation not supported')", 95)
        self.closed = False
        self.log: List[Tuple[Any, ...]] = []

    def add_link(self, name: str, index: Optional[int] = None,
                 mac: bytes = b"\x02\x00\x00\x00\x00\x01", mtu: int = 1500, up: bool = True,
                 addresses: Iterable[Any] = ()) -> None:
        self.links[name] = {"index": index or len(self.links) + 1, "mac": mac, "mtu": mtu,
                            "up": up, "addresses": [IPv6Address(a) for a in addresses],
                            "stats": {"rx_packets": 0, "tx_packets": 0}}

    def close(self) -> None:
        self.closed = True

    def _need(self, name: str) -> Dict[str, Any]:
        if name not in self.links and self.system is not None and name in self.system.tuns:
            self.add_link(name, mac=b"", up=False)
        if name not in self.links:
            raise NetlinkFailure(f"no interface named {name}", 19)
        return self.links[name]

    def index(self, name: str) -> int:
        return self._need(name)["index"]

    def link_info(self, name: str) -> Dict[str, Any]:
        return dict(self._need(name))

    def link_stats(self, name: str) -> Dict[str, int]:
        return dict(self._need(name)["stats"])

    def link_set(self, name: str, up: Optional[bool] = None, mtu: Optional[int] = None) -> None:
        link = self._need(name)
        if up is not None:
            link["up"] = up
        if mtu is not None:
            link["mtu"] = mtu

    def route_replace(self, dst: Destination, dev: Optional[str] = None,
                      table: Optional[int] = None, metric: Optional[int] = None,
                      kind: str = "unicast", proto: Optional[int] = None) -> None:
        if dev is not None:
            self._need(dev)
        self.routes[(IPv6Network(dst), table)] = {"dev": dev, "metric": metric, "kind": kind,
                                                  "proto": proto}
        self.log.append(("route_replace", str(dst), dev, table))

    def route_delete(self, dst: Destination, dev: Optional[str] = None, table: Optional[int] = None,
                     metric: Optional[int] = None, kind: str = "unicast",
                     proto: Optional[int] = None) -> None:
        key = (IPv6Network(dst), table)
        held = self.routes.get(key)
        # As the kernel: a protocol in the request must match the route's.
        if held is None or proto is not None and held["proto"] != proto:
            raise NetlinkFailure(f"route delete {dst}: no such route", 3)
        del self.routes[key]
        self.log.append(("route_delete", str(dst), dev, table))

    def neigh_proxy_add(self, address: IPv6Address, dev: str, proto: Optional[int] = None) -> None:
        self._need(dev)
        key = (IPv6Address(address), dev)
        self.proxies.add(key)
        self.proxy_protocols.pop(key, None)
        if proto is not None:
            self.proxy_protocols[key] = proto

    def neigh_proxy_delete(self, address: IPv6Address, dev: str) -> None:
        key = (IPv6Address(address), dev)
        if key not in self.proxies:
            raise NetlinkFailure(f"remove proxy ND for {address}: no such entry", 2)
        self.proxies.discard(key)
        self.proxy_protocols.pop(key, None)
        self.log.append(("neigh_proxy_delete", str(address), dev))

    def neigh_proxy_dump(self) -> List[Tuple[IPv6Address, str, Optional[int]]]:
        return [(a, d, self.proxy_protocols.get((a, d))) for a, d in sorted(self.proxies)]

    def route_dump(self, table: Optional[int] = None,
                   proto: Optional[int] = None) -> List[Dict[str, Any]]:
        return [{"dst": dst, **{k: v for k, v in r.items()}}
                for (dst, t), r in sorted(self.routes.items(), key=lambda kv: str(kv[0]))
                if t == table and (proto is None or r["proto"] == proto)]

    def rule_dump(self) -> List[Tuple[IPv6Network, int, int, Optional[int]]]:
        return [(s, t, p, self.rule_protocols.get((s, t, p))) for s, t, p in sorted(
            self.rules, key=str)]

    def ip6tnl_dump(self) -> Dict[str, Tuple[IPv6Address, IPv6Address]]:
        return dict(self.tunnels)

    def address_add(self, interface: str, dev: str) -> None:
        self._need(dev)
        self.addresses.add((IPv6Interface(interface), dev))
        self.links[dev]["addresses"].append(IPv6Interface(interface).ip)

    def address_delete(self, interface: str, dev: str) -> None:
        key = (IPv6Interface(interface), dev)
        if key not in self.addresses:
            raise NetlinkFailure(f"remove {interface}: no such address", 99)
        self.addresses.discard(key)
        self.links[dev]["addresses"].remove(key[0].ip)

    def rule_add(self, src: IPv6Network, table: int, priority: int,
                 proto: Optional[int] = None) -> None:
        key = (IPv6Network(src), table, priority)
        if key in self.rules:
            raise NetlinkFailure(f"rule from {src} table {table}: File exists", 17)
        self.rules.add(key)
        if proto is not None:
            self.rule_protocols[key] = proto

    def rule_delete(self, src: IPv6Network, table: int, priority: int) -> None:
        key = (IPv6Network(src), table, priority)
        if key not in self.rules:
            raise NetlinkFailure(f"delete rule from {src}: no such rule", 2)
        self.rules.discard(key)
        self.rule_protocols.pop(key, None)
        self.log.append(("rule_delete", str(key[0]), table, priority))

    def steer_add(self, table: int, priority: int, mark: int, proto: Optional[int] = None) -> None:
        key = (table, priority, mark)
        if key in self.steering:
            raise NetlinkFailure(f"rule {priority + 1} not fwmark {mark}: File exists", 17)
        self.steering[key] = proto
        self.log.append(("steer_add", table, priority, mark))

    def steer_delete(self, table: int, priority: int, mark: int) -> None:
        if self.steering.pop((table, priority, mark), False) is False:
            raise NetlinkFailure(f"delete rule {priority + 1} not fwmark {mark}: no such rule", 2)
        self.log.append(("steer_delete", table, priority, mark))

    def steer_dump(self) -> List[Tuple[int, int, int, Optional[int]]]:
        return [(t, p, m, proto) for (t, p, m), proto in sorted(self.steering.items())]

    def load_ip6_tunnel(self, fallback: bool = True) -> None:
        """Model ``modprobe ip6_tunnel``: ip6tnl links can be made from now on, and (unless
        ``fallback`` is false, as with ``net.core.fb_tunnels_only_for_init_net=1``) the kernel's
        fallback device ``ip6tnl0`` (local ``::``, remote ``::``) exists, as in every namespace
        of a stock kernel."""
        self.ip6tnl_error = None
        if fallback:
            self.tunnels["ip6tnl0"] = (IPv6Address("::"), IPv6Address("::"))
            self.add_link("ip6tnl0", mac=b"", up=False)

    def ip6tnl_add(self, name: str, local: Address, remote: Address,
                   hop_limit: Optional[int] = None, fwmark: Optional[int] = None) -> None:
        if self.ip6tnl_error is not None:
            raise self.ip6tnl_error
        ends = (IPv6Address(local), IPv6Address(remote))
        if name in self.links or ends in self.tunnels.values():
            # as the kernel: ip6tnl links are unique by name and by (local, remote)
            raise NetlinkFailure(f"create ip6tnl {name}: (17, 'File exists')", 17)
        self.tunnels[name] = ends
        self.tunnel_options[name] = {"hop_limit": hop_limit, "fwmark": fwmark}
        self.add_link(name, up=False)
        self.log.append(("ip6tnl_add", name, str(ends[0]), str(ends[1])))

    def link_delete(self, name: str) -> None:
        self._need(name)
        del self.links[name]
        self.tunnels.pop(name, None)
        self.tunnel_options.pop(name, None)
        # as the kernel: a link's addresses go with it
        self.addresses = {(a, d) for a, d in self.addresses if d != name}
        self.log.append(("link_delete", name))
        for key in [k for k, r in self.routes.items() if r["dev"] == name]:
            del self.routes[key]  # as the kernel: a link's routes go with it

    def sysctl_get(self, key: str) -> str:
        return str(self.sysctls.get(key, "0"))

    def sysctl_set(self, key: str, value: str) -> None:
        self.sysctls[key] = str(value)
