"""Real daemons in a lab topology: configurations written for it, ``twistd`` run in its namespaces.

:class:`NetnsDeployment` takes a built :class:`haha.lab.topology.Topology` (one of the standard
ones: ``shared_home_link``, ``separate_links``, ``no_home_link``) and writes, for each of its home
agents, a home agent configuration of the matching draft section 3 kind (raw transport, the
``tun`` backend or, with ``backend="netlink"``, the kernel's ip6tnl, ESP with keys generated for
the run) and one for a mobile node or NEMO mobile router on
the visited link (raw transport, ``tun`` backend or, with ``mn_backend="netlink"``, the kernel's
ip6tnl, care-of address from the topology). Each daemon
runs as ``ip netns exec NS twistd -n --pidfile= --logfile=LOG haha|haha-mn --config FILE`` and is
observed, as :class:`haha.lab.cluster.LocalCluster` does, only through its control socket and its
log file.

Configuration per topology kind:

- ``shared-home-link`` (draft 3.1 Figure 1): ``configuration = home-link`` on ``eth0``, peers from
  Router Advertisements (``discovery = link``, ``authorised`` = the home prefix), proxy ND.
- ``separate-links`` (draft 3.1 Figure 4): ``configuration = separate-links``, the HA address on
  the home interface ``eth1``, the HAHA address on the transit link ``eth0``; static peers by
  HAHA address, HELLO over r.
- ``no-home-link`` (draft 3.2 Figure 5): ``configuration = no-home-link``, the HAHA address on
  loopback is the address mobile nodes register with; static peers, HELLO, every HA advertises
  the home prefix and forwards from its copies.

In ``no-home-link`` the home prefix reaches a home agent only by routing. In a deployment a
routing daemon redistributes the ``unreachable`` route the backend installs; in the lab,
:meth:`NetnsDeployment.route_prefix` stands in for it: it asks every home agent's control socket
what its backend advertises and points router ``r``'s route for the home prefix at those that
answer (one next hop or several, equal cost). A daemon killed with ``kill -9`` leaves its kernel
route behind, so a routing daemon that only redistributed kernel routes would keep attracting
traffic to it; the stand-in follows the daemons, as a routing session with the daemon (or BFD)
would.

With ``address_takeover=True`` (:mod:`haha.core.addrtakeover`) the topology's address of each home
agent becomes its signalling (HAHA) address and the daemon is given a service address
(:func:`service_address`) that it adds itself and that moves to the survivor when it dies: on the
shared home link with unsolicited NAs; in the other configurations as a /128 route, which
:meth:`NetnsDeployment.route_held` points router r at (the stand-in for the routing daemon that
redistributes the route, as ``route_prefix`` is for the home prefix). ``obey_switch=False``
makes the mobile node answer switch requests with Binding Error 2, like deployed stacks;
``esp=False`` runs without ESP (``[security] mode = none``, lab only).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, Optional

from ..security.keys import generate_key_file
from .cluster import DaemonGroup, Node, twistd_command

if TYPE_CHECKING:
    from .topology import Topology

HOME_ADDRESS = IPv6Address("2001:db8:1::100")
ROUTER_HOME_ADDRESS = IPv6Address("2001:db8:1::200")
MOBILE_NETWORK = IPv6Network("2001:db8:100::/48")
#: The address the mobile router gives itself inside its mobile network prefix (on loopback):
#: what the correspondent reaches through the tunnel.
MOBILE_NETWORK_HOST = IPv6Address("2001:db8:100::1")

#: The home agents' forwarding backends a deployment can use: ``tun`` on any kernel,
#: ``netlink`` (the kernel's ip6tnl) on a kernel with ``ip6_tunnel`` (the stock-kernel tier).
BACKENDS = ("tun", "netlink")

KINDS = {"shared-home-link": "home-link", "separate-links": "separate-links",
         "no-home-link": "no-home-link"}


def service_address(kind: str, index: int) -> IPv6Address:
    """The moving home agent address of home agent ``index`` (1-based) with address take-over:
    ``2001:db8:1::a<i>`` on a home link, ``2001:db8:2::a<i>`` without one."""
    return IPv6Address(f"2001:db8:{2 if kind == 'no-home-link' else 1}::a{index}")


class Daemon(Node):
    """One daemon of a deployment: :class:`haha.lab.cluster.Node` plus its namespace and the
    addresses it uses."""

    def __init__(self, name: str, kind: str, address: IPv6Address | str, directory: str,
                 netns: str, signalling: IPv6Address | str | None = None) -> None:
        super().__init__(name, kind, str(address), None, directory)
        self.netns = netns
        self.signalling = str(signalling or address)


class NetnsDeployment(DaemonGroup):
    """Home agents and one mobile node (or router) of ``topology`` as real daemons.

    ``directory`` holds the configurations, keys, logs and control sockets (keep its path short:
    a Unix socket path has at most 107 octets). Home agent i has preference ``10 * (N + 1 - i)``
    (ha1 is preferred). ``lifetime``/``hello_interval``/``boot_wait`` set how fast a dead home
    agent is noticed. ``mobile_router=True`` makes the mobile node a NEMO mobile router in
    explicit mode registering :data:`MOBILE_NETWORK`. ``dhaad=True`` configures the mobile node
    without any home agent (no ``home-agent``/``home-agents``): it finds them with Dynamic Home
    Agent Address Discovery (RFC 6275 11.4.1) through the Home-Agents anycast address.
    ``drain_mode`` (``spread``, ``best``, ``discover``) sets the home agents' ``drain-mode``;
    ``mn_lifetime`` the binding lifetime the node asks for; ``hello_misses`` the home
    agents' fast failure detection. ``address_takeover``,
    ``obey_switch`` and ``esp``: see the module docstring. ``backend`` (:data:`BACKENDS`) is
    the home agents' forwarding backend; ``mn_backend`` (:data:`BACKENDS`) the mobile node's
    tunnel: ``tun`` in user space (the default), ``netlink`` the kernel's ip6tnl.
    """

    has: Sequence[Daemon]
    directory: str

    def __init__(self, topology: Topology, directory: str | os.PathLike[str],
                 lifetime: int = 3, hello_interval: float = 1.0, boot_wait: float = 1.0,
                 mobile_router: bool = False, mobile: str = "mn1", log_level: str = "debug",
                 dhaad: bool = False, drain_mode: Optional[str] = None,
                 address_takeover: bool = False, obey_switch: bool = True, esp: bool = True,
                 mn_lifetime: int = 60, hello_misses: int = 0, backend: str = "tun",
                 mn_backend: str = "tun", tun_options: Sequence[str] = ()) -> None:
        kind = topology.info.get("kind")
        if kind not in KINDS:
            raise ValueError(f"no deployment for topology kind {kind!r}")
        self.topology = topology
        self.kind = kind
        self.configuration = KINDS[kind]
        self.directory = str(directory)
        self.lifetime = lifetime
        self.hello_interval = hello_interval
        self.boot_wait = boot_wait
        self.mobile_router = mobile_router
        self.dhaad = dhaad
        self.drain_mode = drain_mode
        self.address_takeover = address_takeover
        self.obey_switch = obey_switch
        self.esp = esp
        self.mn_lifetime = mn_lifetime
        self.hello_misses = hello_misses
        if backend not in BACKENDS:
            raise ValueError(f"no deployment for backend {backend!r} (one of {BACKENDS})")
        self.backend = backend
        if mn_backend not in BACKENDS:
            raise ValueError(f"no mobile node tunnel {mn_backend!r} (one of {BACKENDS})")
        self.mn_backend = mn_backend
        #: Extra ``key = value`` lines of every daemon's ``[backend:tun]`` (the home agents'
        #: with ``backend = tun``, and the node's).
        self.tun_options = tuple(tun_options)
        self.log_level = log_level
        self.home_prefix = IPv6Network(topology.info["home_prefix"])
        haha = topology.info.get("haha", {})
        names = sorted(topology.info["has"], key=lambda n: int(n[2:]))
        if address_takeover:
            self.has = [Daemon(n, "haha", service_address(kind, int(n[2:])), self.directory,
                               topology.ns(n), haha.get(n, topology.info["has"][n]))
                        for n in names]
        else:
            self.has = [Daemon(n, "haha", IPv6Address(topology.info["has"][n]), self.directory,
                               topology.ns(n), haha.get(n)) for n in names]
        self.mn = Daemon("mr1" if mobile_router else "mn1", "haha-mn",
                         ROUTER_HOME_ADDRESS if mobile_router else HOME_ADDRESS,
                         self.directory, topology.ns(mobile))
        self.mobile_node = mobile
        self.care_of = IPv6Address(topology.info["care_of"][mobile])

    @property
    def mobiles(self) -> list[Node]:
        return [self.mn]

    def node(self, name: str) -> Daemon:
        """Daemon ``name`` (every node of a deployment is a :class:`Daemon`)."""
        for n in [*self.has, self.mn]:
            if n.name == name:
                return n
        raise KeyError(name)

    def command(self, n: Node) -> list[str]:
        assert isinstance(n, Daemon)  # every node of a deployment runs in its namespace
        return ["ip", "netns", "exec", n.netns] + twistd_command() + [
            "-n", "--pidfile=", f"--logfile={n.logfile}", n.kind, "--config", n.config]

    def __enter__(self) -> NetnsDeployment:
        self.write()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    # -- configuration ----------------------------------------------------------------------

    def write(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        keys = os.path.join(self.directory, "keys")
        if os.path.isdir(keys):
            shutil.rmtree(keys)
        os.makedirs(keys)
        for a in self.has:
            for b in self.has:
                if a.name < b.name:
                    generate_key_file(os.path.join(keys, f"{a.name}-{b.name}.key"))
        generate_key_file(os.path.join(keys, "mn.key"))
        for ha in self.has:
            with open(ha.config, "w") as f:
                f.write(self.home_agent_text(ha))
        with open(self.mn.config, "w") as f:
            f.write(self.mobile_text())

    def preference(self, ha: Daemon) -> int:
        return 10 * (len(self.has) + 1 - self.has.index(ha) - 1)

    def home_agent_text(self, ha: Daemon) -> str:
        others = [h for h in self.has if h is not ha]
        kind = self.configuration
        lines = [
            f"# {ha.name} of a NetnsDeployment (haha.lab.deploy) in {ha.netns}: "
            f"{self.kind}, raw transport, {self.backend} backend, ESP.",
            "[home-agent]",
            f"address = {ha.address}",
            f"home-prefix = {self.home_prefix}",
            f"configuration = {kind}",
            f"preference = {self.preference(ha)}",
            f"lifetime = {self.lifetime}",
            f"hello-interval = {self.hello_interval}",
            f"boot-wait = {self.boot_wait}",
            f"drain-timeout = {self.lifetime}",
            f"backend = {self.backend}",
        ]
        if ha.signalling != ha.address:
            lines.append(f"haha-address = {ha.signalling}")
        if self.drain_mode is not None:
            lines.append(f"drain-mode = {self.drain_mode}")
        if self.address_takeover:
            lines.append("address-takeover = yes")
        if self.hello_misses:
            lines.append(f"hello-misses = {self.hello_misses}")
        interfaces = ["eth0"]
        if kind == "home-link":
            lines.append("home-interface = eth0")
        elif kind == "separate-links":
            home = self.topology.info.get("home_interface", "eth1")
            lines.append(f"home-interface = {home}")
            interfaces.append(home)
        if self.backend == "tun":
            lines += ["", "[backend:tun]", "device = haha0", *self.tun_options]
        lines += ["", "[peers]"]
        if kind == "home-link" and not self.address_takeover:
            # Draft 5.4 / docs/protocol.md 6.8: on one home link the HAs learn each other from
            # Router Advertisements, not from a configured list.
            lines += ["discovery = link", f"authorised = {self.home_prefix}"]
        else:
            lines.append("static = " + " ".join(h.signalling for h in others))
        if self.mobile_router:
            lines += ["", "[mobile-routers]", f"{self.mn.address} = {MOBILE_NETWORK}"]
        if self.esp:
            lines += ["", "[peer-keys]"]
            lines += [f"{h.signalling} = keys/{min(ha.name, h.name)}-{max(ha.name, h.name)}.key"
                      for h in others]
            lines += ["", "[node-keys]", f"{self.mn.address} = keys/mn.key"]
        else:
            lines += ["", "[security]", "mode = none", "lab = yes"]
        lines += ["", "[transport]", "kind = raw", "interfaces = " + ", ".join(interfaces)]
        lines += ["", "[control]", f"socket = unix:{ha.socket}"]
        lines += ["", "[log]", f"level = {self.log_level}", ""]
        return "\n".join(lines)

    def mobile_text(self) -> str:
        first, rest = self.has[0], self.has[1:]
        lines = [
            f"# The mobile {'router' if self.mobile_router else 'node'} of a NetnsDeployment "
            f"in {self.mn.netns}.",
            "[mobile-node]",
            f"home-address = {self.mn.address}",
            f"home-prefix = {self.home_prefix}",
        ]
        if not self.dhaad:
            lines.append(f"home-agent = {first.address}")
            if rest:
                lines.append("home-agents = " + " ".join(h.address for h in rest))
        lines += [f"care-of-address = {self.care_of}", "interface = eth0",
                  f"lifetime = {self.mn_lifetime}"]
        if not self.obey_switch:
            lines.append("obey-switch = no")
        if self.mobile_router:
            lines += ["mobile-router = yes", f"prefixes = {MOBILE_NETWORK}"]
        security = ["key = keys/mn.key"] if self.esp else ["mode = none", "lab = yes"]
        lines += [f"backend = {self.mn_backend}", ""]
        if self.mn_backend == "tun":
            lines += ["[backend:tun]", "device = hahamn0", *self.tun_options, ""]
        lines += ["[security]", *security, "",
                  "[transport]", "kind = raw", "interfaces = eth0", "",
                  "[control]", f"socket = unix:{self.mn.socket}", "",
                  "[log]", f"level = {self.log_level}", ""]
        return "\n".join(lines)

    # -- the network around the daemons -------------------------------------------------------

    def add_mobile_network_host(self) -> IPv6Address:
        """Give the mobile router an address inside its mobile network prefix (on its loopback:
        this kernel has no dummy interfaces), standing for a host of the mobile network."""
        self.topology.run(self.mobile_node, ["ip", "-6", "addr", "add",
                                             f"{MOBILE_NETWORK_HOST}/128", "dev", "lo", "nodad"])
        return MOBILE_NETWORK_HOST

    def advertisers(self) -> list[Daemon]:
        """The home agents whose backend currently advertises the home prefix, by their
        control sockets (a dead daemon advertises nothing)."""
        out = []
        for ha in self.has:
            snapshot = self.ask(ha.name, "forwarding")
            if snapshot and str(self.home_prefix) in snapshot.get("prefixes", ()):
                out.append(ha)
        return out

    def route_prefix(self, via: Optional[Sequence[str]] = None) -> list[str]:
        """Point router r's route for the home prefix at ``via`` (home agent names), or at
        every home agent advertising it (module docstring); return the names used."""
        t = self.topology
        chosen = [self.node(n) for n in via] if via is not None else self.advertisers()
        if not chosen:
            t.run("r", ["ip", "-6", "route", "del", str(self.home_prefix)], check=False)
            return []
        hops = [self._next_hop(ha) for ha in chosen]
        if len(hops) == 1:
            argv = ["ip", "-6", "route", "replace", str(self.home_prefix), "via", hops[0]]
        else:
            argv = ["ip", "-6", "route", "replace", str(self.home_prefix)]
            for h in hops:
                argv += ["nexthop", "via", h]
        t.run("r", argv)
        return [ha.name for ha in chosen]

    def holders(self) -> dict[str, Daemon]:
        """{held address: home agent} as the live daemons' backends report it."""
        out = {}
        for ha in self.has:
            snapshot = self.ask(ha.name, "forwarding")
            for address, _ in (snapshot or {}).get("held", ()):
                out[address] = ha
        return out

    def route_held(self) -> dict[str, str]:
        """Without a shared home link: point router r's /128 route for every held service
        address at the home agent holding it (the stand-in for the routing daemon that
        redistributes the /128 route; module docstring). Returns ``{address: name}``."""
        if self.configuration == "home-link":
            return {}
        t = self.topology
        held = self.holders()
        for ha in self.has:
            holder = held.get(ha.address)
            if holder is None:
                t.run("r", ["ip", "-6", "route", "del", f"{ha.address}/128"], check=False)
            else:
                t.run("r", ["ip", "-6", "route", "replace", f"{ha.address}/128", "via",
                            self._next_hop(holder)])
        return {a: h.name for a, h in held.items()}

    def _next_hop(self, ha: Daemon) -> str:
        """r's next hop towards home agent ``ha``: its address on its transit link."""
        return str(self.topology.address(ha.name, link=f"t{ha.name[2:]}"))


__all__ = ["NetnsDeployment", "Daemon", "BACKENDS", "HOME_ADDRESS", "ROUTER_HOME_ADDRESS", "MOBILE_NETWORK",
           "MOBILE_NETWORK_HOST"]
