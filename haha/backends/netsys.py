"""The netlink seam of the forwarding backends (STYLE.md 10): routes, rules, addresses, proxy
ND entries, links, sysctls.

:class:`Pyroute2Netlink` does it through pyroute2 (optionally inside a named network namespace);
:class:`FakeNetlink` keeps the same state in dictionaries for unit tests and for embedders that
want a backend to run without privileges. Both raise :class:`NetlinkFailure` with a sentence
naming the operation when the system refuses.

pyroute2's synchronous API runs its own asyncio loop inside each call: fine under Twisted's
default (epoll/poll/select) reactors, not under the asyncio reactor.
"""

import socket
from ipaddress import IPv6Address, IPv6Interface, IPv6Network

from ..io.system import in_netns

NTF_PROXY = 0x08
NUD_PERMANENT = 0x80
IFA_F_NODAD = 0x02
RTPROT_STATIC = 4


class NetlinkFailure(RuntimeError):
    """A netlink operation failed; ``errno`` is the kernel's error number when known."""

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno


def _mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":")) if text else b""


class Pyroute2Netlink:
    """Real netlink calls in namespace ``netns`` (``None``: the current one)."""

    def __init__(self, netns=None):
        from pyroute2 import IPRoute  # heavy import, only when really used

        self.netns = netns
        self._ipr = IPRoute(netns=netns) if netns else IPRoute()

    def close(self):
        self._ipr.close()

    def _do(self, what, func, *args, **kw):
        try:
            return func(*args, **kw)
        except Exception as e:  # pyroute2 raises NetlinkError, OSError, ValueError...
            code = getattr(e, "code", None) or getattr(e, "errno", None)
            raise NetlinkFailure(f"{what}: {e}", code) from None

    def index(self, name):
        found = self._do(f"look up {name}", self._ipr.link_lookup, ifname=name)
        if not found:
            raise NetlinkFailure(f"no interface named {name}")
        return found[0]

    def link_info(self, name):
        idx = self.index(name)
        link = self._do(f"read {name}", self._ipr.get_links, idx)[0]
        addrs = []
        for a in self._do(f"read addresses of {name}", self._ipr.get_addr,
                          family=socket.AF_INET6, index=idx):
            addrs.append(IPv6Address(a.get_attr("IFA_ADDRESS")))
        return {"index": idx, "mac": _mac_bytes(link.get_attr("IFLA_ADDRESS")),
                "mtu": link.get_attr("IFLA_MTU"), "up": bool(link["flags"] & 1),
                "addresses": addrs}

    def link_set(self, name, up=None, mtu=None):
        kw = {}
        if up is not None:
            kw["state"] = "up" if up else "down"
        if mtu is not None:
            kw["mtu"] = mtu
        self._do(f"set {name} {kw}", self._ipr.link, "set", index=self.index(name), **kw)

    def _route_kw(self, dst, dev, table, metric, kind, proto):
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

    def route_replace(self, dst, dev=None, table=None, metric=None, kind="unicast", proto=None):
        self._do(f"route replace {dst} dev {dev} table {table}", self._ipr.route, "replace",
                 **self._route_kw(dst, dev, table, metric, kind, proto))

    def route_delete(self, dst, dev=None, table=None, metric=None, kind="unicast", proto=None):
        self._do(f"route delete {dst} dev {dev} table {table}", self._ipr.route, "del",
                 **self._route_kw(dst, dev, table, metric, kind, proto))

    def neigh_proxy_add(self, address, dev):
        self._do(f"proxy ND for {address} on {dev}", self._ipr.neigh, "replace",
                 dst=str(address), ifindex=self.index(dev), family=socket.AF_INET6,
                 flags=NTF_PROXY, state=NUD_PERMANENT)

    def neigh_proxy_delete(self, address, dev):
        self._do(f"remove proxy ND for {address} on {dev}", self._ipr.neigh, "del",
                 dst=str(address), ifindex=self.index(dev), family=socket.AF_INET6,
                 flags=NTF_PROXY)

    def address_add(self, interface, dev):
        iface = IPv6Interface(interface)
        self._do(f"add {iface} to {dev}", self._ipr.addr, "replace", index=self.index(dev),
                 address=str(iface.ip), prefixlen=iface.network.prefixlen,
                 family=socket.AF_INET6, flags=IFA_F_NODAD)

    def address_delete(self, interface, dev):
        iface = IPv6Interface(interface)
        self._do(f"remove {iface} from {dev}", self._ipr.addr, "del", index=self.index(dev),
                 address=str(iface.ip), prefixlen=iface.network.prefixlen,
                 family=socket.AF_INET6)

    def rule_add(self, src, table, priority):
        src = IPv6Network(src)
        self._do(f"rule from {src} table {table}", self._ipr.rule, "add",
                 family=socket.AF_INET6, src=str(src.network_address),
                 src_len=src.prefixlen, table=table, priority=priority)

    def rule_delete(self, src, table, priority):
        src = IPv6Network(src)
        self._do(f"delete rule from {src} table {table}", self._ipr.rule, "del",
                 family=socket.AF_INET6, src=str(src.network_address),
                 src_len=src.prefixlen, table=table, priority=priority)

    def ip6tnl_add(self, name, local, remote):
        """An ``ip6tnl`` link in mode ip6ip6 without a Tunnel Encapsulation Limit option."""
        self._do(f"create ip6tnl {name}", self._ipr.link, "add", ifname=name, kind="ip6tnl",
                 ip6tnl_local=str(local), ip6tnl_remote=str(remote), ip6tnl_proto=41,
                 ip6tnl_flags=0x1)  # IP6_TNL_F_IGN_ENCAP_LIMIT

    def link_delete(self, name):
        self._do(f"delete {name}", self._ipr.link, "del", index=self.index(name))

    def sysctl_get(self, key):
        with in_netns(self.netns):
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                return f.read().strip()

    def sysctl_set(self, key, value):
        try:
            with in_netns(self.netns):
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(f"{value}\n")
        except OSError as e:
            raise NetlinkFailure(f"sysctl {key}={value}: {e}", e.errno) from None


class FakeNetlink:
    """The same operations on dictionaries. ``links`` maps names to dicts like
    :meth:`Pyroute2Netlink.link_info` returns; ``ip6tnl_error`` is what creating an ip6tnl
    link fails with (by default what this project's kernel answers). ``system``: a
    :class:`haha.io.system.FakeSystem` whose TUN devices appear here as links once opened."""

    def __init__(self, links=None, system=None):
        self.system = system
        self.links = {}
        for name, info in (links or {"eth0": {}}).items():
            self.add_link(name, **info)
        self.routes = {}  # (dst, table) -> dict(dev, metric, kind, proto)
        self.proxies = set()  # (address, dev)
        self.addresses = set()  # (IPv6Interface, dev)
        self.rules = set()  # (src network, table, priority)
        self.tunnels = {}
        self.sysctls = {}
        self.ip6tnl_error = NetlinkFailure("create ip6tnl: (95, 'Operation not supported')", 95)
        self.closed = False
        self.log = []

    def add_link(self, name, index=None, mac=b"\x02\x00\x00\x00\x00\x01", mtu=1500, up=True,
                 addresses=()):
        self.links[name] = {"index": index or len(self.links) + 1, "mac": mac, "mtu": mtu,
                            "up": up, "addresses": [IPv6Address(a) for a in addresses]}

    def close(self):
        self.closed = True

    def _need(self, name):
        if name not in self.links and self.system is not None and name in self.system.tuns:
            self.add_link(name, mac=b"", up=False)
        if name not in self.links:
            raise NetlinkFailure(f"no interface named {name}", 19)
        return self.links[name]

    def index(self, name):
        return self._need(name)["index"]

    def link_info(self, name):
        return dict(self._need(name))

    def link_set(self, name, up=None, mtu=None):
        link = self._need(name)
        if up is not None:
            link["up"] = up
        if mtu is not None:
            link["mtu"] = mtu

    def route_replace(self, dst, dev=None, table=None, metric=None, kind="unicast", proto=None):
        if dev is not None:
            self._need(dev)
        self.routes[(IPv6Network(dst), table)] = {"dev": dev, "metric": metric, "kind": kind,
                                                  "proto": proto}
        self.log.append(("route_replace", str(dst), dev, table))

    def route_delete(self, dst, dev=None, table=None, metric=None, kind="unicast", proto=None):
        if self.routes.pop((IPv6Network(dst), table), None) is None:
            raise NetlinkFailure(f"route delete {dst}: no such route", 3)
        self.log.append(("route_delete", str(dst), dev, table))

    def neigh_proxy_add(self, address, dev):
        self._need(dev)
        self.proxies.add((IPv6Address(address), dev))

    def neigh_proxy_delete(self, address, dev):
        key = (IPv6Address(address), dev)
        if key not in self.proxies:
            raise NetlinkFailure(f"remove proxy ND for {address}: no such entry", 2)
        self.proxies.discard(key)

    def address_add(self, interface, dev):
        self._need(dev)
        self.addresses.add((IPv6Interface(interface), dev))
        self.links[dev]["addresses"].append(IPv6Interface(interface).ip)

    def address_delete(self, interface, dev):
        key = (IPv6Interface(interface), dev)
        if key not in self.addresses:
            raise NetlinkFailure(f"remove {interface}: no such address", 99)
        self.addresses.discard(key)
        self.links[dev]["addresses"].remove(key[0].ip)

    def rule_add(self, src, table, priority):
        self.rules.add((IPv6Network(src), table, priority))

    def rule_delete(self, src, table, priority):
        key = (IPv6Network(src), table, priority)
        if key not in self.rules:
            raise NetlinkFailure(f"delete rule from {src}: no such rule", 2)
        self.rules.discard(key)

    def ip6tnl_add(self, name, local, remote):
        if self.ip6tnl_error is not None:
            raise self.ip6tnl_error
        self.tunnels[name] = (IPv6Address(local), IPv6Address(remote))
        self.add_link(name)

    def link_delete(self, name):
        self._need(name)
        del self.links[name]
        self.tunnels.pop(name, None)

    def sysctl_get(self, key):
        return str(self.sysctls.get(key, "0"))

    def sysctl_set(self, key, value):
        self.sysctls[key] = str(value)
