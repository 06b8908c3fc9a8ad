"""An in-memory network of home agents and mobile nodes, for haha's tests and for embedders.

:class:`Network` connects :class:`~haha.core.homeagent.HomeAgent` and
:class:`~haha.core.mobilenode.MobileNode` machines by address and carries **encoded** packets
between them. Each node runs the pipeline the daemon runs (:mod:`haha.endpoint`): every message
is encoded, protected with ESP where the policy requires it, built into an IPv6 packet, carried
as bytes, and on arrival parsed, admitted, authenticated, decoded and checked against the
security policy before its machine sees it; so the codec, ESP and the policy are exercised end to
end, and a packet the daemon would drop is dropped here too (``counters["dropped"]``, and each
node's endpoint counts the reason).

On a ``secured`` network (the default) the keys are those of a deployment with one peer key
and a node group (docs/security.md): one secret derived from the seed keys every pair of home
agents (by their signalling addresses), a node group key gives every mobile node its secret
and every home agent derives the node's SAs on first contact; address take-over carries its
ESP state as the daemon does. A restarted home agent gets fresh SAs with everyone (the daemon
keeps its sequence numbers on disk instead). ``secured=False`` runs the lab policy
(``security = none``): nothing is protected, the known-source checks stay. ``admission``
(:class:`haha.security.admission.AdmissionSettings`) gives every node the daemon's admission
budgets; without it nothing is rate limited.

Everything is deterministic: one clock (``network.now``), one seeded :class:`random.Random`
for the links, and per-machine generators derived from the seed and the node's name. Links
between two nodes (per direction) can lose, duplicate and reorder packets, add latency, or be
cut by a partition. ``run_until``, ``run_for`` and ``run_until_idle`` advance time, delivering
packets and firing the machines' timers in order.

Forwarding effects are applied to a :class:`ForwardingRecorder` per node (what a backend would
hold now) and events are kept with their time, so tests can assert on both.

Typical use::

    net = Network(seed=1)
    has = net.add_home_agents(3)
    mn = net.add_mobile_node("mn1", home_agents=[has[0].address])
    net.run_for(20)                     # boot wait, HELLOs
    mn.start("2001:db8:99::1")
    net.run_until_idle(timeout=60)
    assert net.identical_caches()
"""

import hashlib
import heapq
import random
from collections import Counter
from ipaddress import IPv6Address, IPv6Network
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from haha.core.effects import (
    AdvertisePrefix,
    Event,
    HoldAddress,
    InstallRoute,
    ProxyNd,
    RemoveRoute,
    TunnelDown,
    TunnelUp,
)
from haha.core.homeagent import HomeAgent
from haha.core.mobilenode import MobileNode
from haha.core.settings import HomeAgentSettings, MobileNodeSettings
from haha.endpoint import Datagram, HomeAgentEndpoint
from haha.nodeendpoint import NodeEndpoint
from haha.security import keys as _keys
from haha.security.admission import Admission, AdmissionSettings
from haha.security.nodegroup import NodeGroup, NodeSecrets
from haha.security.policy import SecurityPolicy
from haha.security.sadb import HOME_AGENT, SecurityAssociationDatabase
from haha.security.takeover import TakeoverKeys
from haha.wire.numbers import DEFAULT_PROFILE

__all__ = ["ForwardingRecorder", "HomeAgentNode", "Link", "MobileNodeNode", "Network"]

HOME_PREFIX = IPv6Network("2001:db8:1::/64")


class ForwardingRecorder:
    """Applies forwarding effects the way a backend would and keeps the result.

    ``routes``: home address -> :class:`~haha.core.duties.ForwardingRoute`; ``proxied``: the
    addresses defended by proxy ND; ``advertised``: prefixes advertised; ``held``: home agent
    addresses held (address take-over; packets to them reach this node); ``tunnel``: a mobile
    node's :class:`~haha.core.effects.TunnelUp` (or None); ``log``: every effect applied.
    """

    def __init__(self) -> None:
        self.routes: Dict[IPv6Address, Any] = {}
        self.proxied: Set[IPv6Address] = set()
        self.advertised: Set[IPv6Network] = set()
        self.held: Set[IPv6Address] = set()
        self.tunnel: Optional[TunnelUp] = None
        self.log: List[Any] = []

    def apply(self, effect: Any) -> bool:
        """Apply one forwarding effect; returns True if ``effect`` was one."""
        kind = type(effect)
        if kind is InstallRoute:
            self.routes[effect.route.home_address] = effect.route
        elif kind is RemoveRoute:
            self.routes.pop(effect.home_address, None)
        elif kind is ProxyNd:
            (self.proxied.add if effect.on else self.proxied.discard)(effect.address)
        elif kind is AdvertisePrefix:
            (self.advertised.add if effect.on else self.advertised.discard)(effect.prefix)
        elif kind is HoldAddress:
            (self.held.add if effect.on else self.held.discard)(effect.address)
        elif kind is TunnelUp:
            self.tunnel = effect
        elif kind is TunnelDown:
            self.tunnel = None
        else:
            return False
        self.log.append(effect)
        return True

    def clear(self) -> None:
        """Forget everything (the node restarted)."""
        self.routes.clear()
        self.proxied.clear()
        self.advertised.clear()
        self.held.clear()
        self.tunnel = None


class Link:
    """Conditions of one direction between two nodes: ``loss`` and ``duplicate`` are
    probabilities, ``reorder`` the largest extra delay (seconds, uniform) added to each packet,
    ``latency`` the base delay."""

    __slots__ = ("loss", "duplicate", "reorder", "latency")

    def __init__(self, loss: float = 0.0, duplicate: float = 0.0, reorder: float = 0.0,
                 latency: float = 0.001) -> None:
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.latency = latency


class _Node:
    def __init__(self, network: "Network", name: str, machine: Any) -> None:
        self.network = network
        self.name = name
        self.machine = machine
        self.alive = True
        self.events: List[Tuple[float, Any]] = []  # (time, Event)
        self.forwarding = ForwardingRecorder()
        self.incarnation = 0
        self.started = False
        self._token = 0
        #: The node's :class:`haha.endpoint.Endpoint`: its packet pipeline (ESP, policy...).
        self.endpoint: Any = None

    @property
    def counters(self) -> Counter:
        """The endpoint's counters (packets received, dropped by reason, sent...)."""
        return self.endpoint.counters

    def addresses(self) -> Set[IPv6Address]:
        """The addresses packets reach this node at (each kind of node defines them)."""
        raise NotImplementedError(f"{type(self).__name__} must define addresses")

    def events_named(self, name: str) -> List[Any]:
        """The events called ``name`` this node emitted, oldest first."""
        return [e for _, e in self.events if e.name == name]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}{'' if self.alive else ' (dead)'}>"


class HomeAgentNode(_Node):
    """A home agent on the network; ``machine`` is its :class:`HomeAgent`."""

    @property
    def address(self) -> IPv6Address:
        """The home agent address."""
        return self.machine.address

    @property
    def identity(self) -> IPv6Address:
        """The signalling (HAHA) address."""
        return self.machine.identity

    def addresses(self) -> Set[IPv6Address]:
        m = self.machine
        if m.settings.address_takeover:
            # The home agent address is reached wherever it is held (address take-over).
            return {m.identity} | self.forwarding.held
        return {m.address, m.identity}

    def snapshot(self) -> Any:
        """The machine's binding cache snapshot."""
        return self.machine.snapshot()

    def drain(self) -> Optional[list]:
        """Drain the home agent (its mobile nodes switch away)."""
        return self.network._call(self, lambda now: self.machine.drain(now))

    def resume(self) -> Optional[list]:
        """Serve again after a drain."""
        return self.network._call(self, lambda now: self.machine.resume(now))

    def switch(self, home_address: Any, desired: Any = None) -> Optional[list]:
        """Ask the node at ``home_address`` to switch (to ``desired`` if given)."""
        return self.network._call(
            self, lambda now: self.machine.switch(IPv6Address(home_address), now,
                                                  None if desired is None else IPv6Address(desired)))

    def stop(self) -> Optional[list]:
        """Stop the machine (a goodbye, not a kill)."""
        return self.network._call(self, lambda now: self.machine.stop(now))


class MobileNodeNode(_Node):
    """A mobile node or router on the network; ``machine`` is its :class:`MobileNode`."""

    @property
    def home_address(self) -> IPv6Address:
        """The node's home address."""
        return self.machine.home_address

    def addresses(self) -> Set[IPv6Address]:
        m = self.machine
        return {m.care_of} if m.care_of is not None else {m.home_address}

    def start(self, care_of: Any = None) -> Optional[list]:
        """Start the node at ``care_of`` (None: at home)."""
        coa = None if care_of is None else IPv6Address(care_of)
        return self.network._call(self, lambda now: self.machine.start(now, coa))

    def move(self, care_of: Any) -> Optional[list]:
        """The node moves to ``care_of``."""
        return self.network._call(self, lambda now: self.machine.move(IPv6Address(care_of), now))

    def return_home(self) -> Optional[list]:
        """The node is back home."""
        return self.network._call(self, lambda now: self.machine.return_home(now))

    def stop(self) -> Optional[list]:
        """Stop the machine (a goodbye, not a kill)."""
        return self.network._call(self, lambda now: self.machine.stop(now))


class Network:
    """The in-memory network (module docstring). ``seed`` fixes every random choice (ESP's
    IVs included); ``secured`` runs ESP and the ESP policy (else the lab policy); ``latency``
    is the default one-way delay; ``admission`` (an AdmissionSettings) the nodes' budgets."""

    def __init__(self, seed: Any = 0, secured: bool = True, latency: float = 0.001,
                 profile: Any = DEFAULT_PROFILE, start: float = 0.0,
                 admission: Optional[AdmissionSettings] = None) -> None:
        self.seed = seed
        self.rng = random.Random(f"haha-network/{seed}")
        self.secured = secured
        self.profile = profile
        self.admission = admission
        self.policy = SecurityPolicy(profile) if secured else \
            SecurityPolicy(profile, "none", lab=True)
        #: The peer key of every pair of home agents, and the node group key.
        self.peer_secret = hashlib.sha256(f"haha-network/{seed}/peer-key".encode()).digest()
        self.group_key = hashlib.sha256(f"haha-network/{seed}/node-group".encode()).digest()
        self.now = float(start)
        self.default = Link(latency=latency)
        self.nodes: Dict[str, Any] = {}
        self.links: Dict[Tuple[str, str], Link] = {}
        self.blocked: Set[Tuple[str, str]] = set()
        self.counters = {"sent": 0, "delivered": 0, "lost": 0, "duplicated": 0,
                         "partitioned": 0, "no-route": 0, "dead": 0, "intercepted": 0,
                         "dropped": 0, "undecodable": 0}
        #: ``f(sender, target, packet)`` (node names, bytes) for every packet put on a link,
        #: returning the bytes to carry (changed or not) or None to lose them: an on-path
        #: attacker, or a test's capture.
        self.interceptors: List[Callable[[str, str, bytes], Optional[bytes]]] = []
        self._queue: List[Tuple[float, int, str, Any]] = []
        self._seq = 0
        self._in_flight = 0
        self._owners: Dict[IPv6Address, _Node] = {}

    # -- building ------------------------------------------------------------------------------

    def _rng_for(self, name: str, incarnation: int) -> random.Random:
        return random.Random(f"haha-node/{self.seed}/{name}/{incarnation}")

    def add_home_agent(self, name: str, settings: HomeAgentSettings,
                       start: bool = True) -> HomeAgentNode:
        """Add a home agent with ``settings`` (a HomeAgentSettings); started at once unless
        ``start`` is False (then call :meth:`start`)."""
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists")
        node = HomeAgentNode(self, name, HomeAgent(settings, self._rng_for(name, 0)))
        node.alive = False
        self.nodes[name] = node
        self._home_agent_endpoint(node)
        if start:
            self.start(name)
        return node

    def add_home_agents(self, count: int, home_prefix: Any = HOME_PREFIX,
                        names: Optional[List[str]] = None, start: bool = True,
                        **overrides: Any) -> List[HomeAgentNode]:
        """Add ``count`` home agents at addresses ``<home prefix>::1``, ``::2``... each
        configured with all the others as static peers; ``overrides`` go to every
        HomeAgentSettings (a callable value is called with the index)."""
        names = names or [f"ha{i + 1}" for i in range(count)]
        home_prefix = IPv6Network(home_prefix)  # text accepted
        base = int(home_prefix.network_address)
        addrs = [IPv6Address(base + i + 1) for i in range(count)]
        out = []
        for i, name in enumerate(names):
            kw = {k: (v(i) if callable(v) else v) for k, v in overrides.items()}
            kw.setdefault("peers", tuple(a for a in addrs if a != addrs[i]))
            s = HomeAgentSettings(address=addrs[i], home_prefix=home_prefix, **kw)
            out.append(self.add_home_agent(name, s, start=start))
        return out

    def add_mobile_node(self, name: str, settings: Optional[MobileNodeSettings] = None,
                        **fields: Any) -> MobileNodeNode:
        """Add a mobile node (not started: call its ``start``). Either ``settings`` or the
        MobileNodeSettings fields as keywords (``home_prefix`` defaults to 2001:db8:1::/64)."""
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists")
        if settings is None:
            fields.setdefault("home_prefix", HOME_PREFIX)
            settings = MobileNodeSettings(**fields)
        node = MobileNodeNode(self, name, MobileNode(settings, self._rng_for(name, 0)))
        self.nodes[name] = node
        self._mobile_node_endpoint(node)
        self._own(node)
        return node

    def _limiter(self, peers: Iterable[IPv6Address] = ()) -> Optional[Admission]:
        if self.admission is None:
            return None
        limiter = Admission(self.admission)
        for peer in peers:
            limiter.pin(peer)
        return limiter

    def _sadb(self, node: _Node) -> SecurityAssociationDatabase:
        rng = random.Random(f"haha-esp/{self.seed}/{node.name}/{node.incarnation}")
        return SecurityAssociationDatabase(rng=rng.randbytes)

    def _home_agent_endpoint(self, node: HomeAgentNode) -> None:
        """The home agent's pipeline, with ESP keys as a daemon configured with the network's
        peer key and node group key would have them (module docstring)."""
        m = node.machine
        sadb = group = None
        if self.secured:
            sadb = self._sadb(node)
            group = NodeGroup(self.group_key, m.settings.home_prefix, m.address)
            me = m.identity
            # The configured peers' keys, as a daemon has them (started or not), and every
            # other home agent's on the network.
            others = [o for o in self.home_agents(alive=False)
                      if o is not node and o.endpoint is not None]
            for peer in set(m.settings.peers) | {o.machine.identity for o in others}:
                if peer != me:
                    for spec in _keys.derive_pair(self.peer_secret, me, peer, HOME_AGENT):
                        sadb.add(spec)
            for other in others:
                peer = other.machine.identity
                # A fresh pair on the other side too: this run's sequence numbers start over.
                other.endpoint.sadb.remove_peer(me)
                for spec in _keys.derive_pair(self.peer_secret, peer, me, HOME_AGENT):
                    other.endpoint.sadb.add(spec)
            for mn in self.mobile_nodes():
                mn.endpoint.sadb.remove_peer(m.address)
                mn.endpoint.keyring.derived.discard(m.address)
        node.endpoint = HomeAgentEndpoint(m, self.profile, self.policy, sadb,
                                          self._limiter(m.settings.peers), node_group=group,
                                          contain_failures=False)
        node.endpoint.on_drop = self._dropped
        if sadb is not None and m.settings.address_takeover:  # secured
            node.endpoint.takeover_keys = TakeoverKeys(sadb, m.address, NodeSecrets({}, group))

    def _mobile_node_endpoint(self, node: MobileNodeNode) -> None:
        """The mobile node's pipeline: its secret from the node group key, its SAs with each
        home agent derived on first use (as the daemon's keyring does)."""
        from haha.service import NodeKeyring

        m = node.machine
        sadb = keyring = None
        if self.secured:
            sadb = self._sadb(node)
            secret = _keys.derive_node_secret(self.group_key, m.home_address)
            keyring = NodeKeyring(secret, m.home_address, sadb)
        # The pipeline the node adapter runs (its short path for a home agent's answers).
        node.endpoint = NodeEndpoint(m, self.profile, self.policy, sadb, self._limiter(),
                                     keyring=keyring, contain_failures=False)
        node.endpoint.on_drop = self._dropped

    def _dropped(self, reason: str, fields: Dict[str, Any]) -> None:
        """A node's endpoint dropped a packet (it counts the reason)."""
        self.counters["dropped"] += 1
        if reason.startswith("malformed-"):
            self.counters["undecodable"] += 1

    def start(self, name: str) -> _Node:
        """Start (or restart, with empty state) home agent ``name``."""
        node = self.nodes[name]
        if node.alive:
            raise RuntimeError(f"{name} is running")
        if node.started:
            node.machine = HomeAgent(node.machine.settings,
                                     self._rng_for(name, node.incarnation + 1))
            node.incarnation += 1
            node.forwarding.clear()
            self._home_agent_endpoint(node)
        node.alive = True
        node.started = True
        self._own(node)
        self._call(node, lambda now: node.machine.start(now))
        return node

    def kill(self, name: str) -> None:
        """Node ``name`` stops dead: no more packets in or out, no timers, no goodbye."""
        node = self.nodes[name]
        node.alive = False
        node._token += 1
        for a in node.addresses():
            if self._owners.get(a) is node:
                del self._owners[a]

    # -- links -------------------------------------------------------------------------------

    def link(self, a: str, b: str) -> Link:
        """The :class:`Link` from node ``a`` to node ``b`` (names), created on first use."""
        key = (a, b)
        if key not in self.links:
            d = self.default
            self.links[key] = Link(d.loss, d.duplicate, d.reorder, d.latency)
        return self.links[key]

    def set_links(self, group_a: Iterable[str], group_b: Iterable[str], both: bool = True,
                  **conditions: float) -> None:
        """Set ``conditions`` (loss, duplicate, reorder, latency) on every link from a node of
        ``group_a`` to one of ``group_b`` (and back when ``both``)."""
        for a in group_a:
            for b in group_b:
                if a == b:
                    continue
                pairs = [(a, b), (b, a)] if both else [(a, b)]
                for x, y in pairs:
                    link = self.link(x, y)
                    for k, v in conditions.items():
                        if not hasattr(link, k):
                            raise AttributeError(f"links have no {k!r}")
                        setattr(link, k, v)

    def partition(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Cut every link between ``group_a`` and ``group_b``, both directions."""
        for a in group_a:
            for b in group_b:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def heal(self) -> None:
        """Remove every partition."""
        self.blocked.clear()

    # -- carrying packets ------------------------------------------------------------------------

    def _own(self, node: _Node) -> None:
        for a, n in list(self._owners.items()):
            if n is node:
                del self._owners[a]
        if node.alive or isinstance(node, MobileNodeNode):
            for a in node.addresses():
                self._owners[a] = node

    def _resolve(self, address: IPv6Address) -> Optional[_Node]:
        node = self._owners.get(address)
        if node is not None:
            return node
        serving = [n for n in self.nodes.values()
                   if isinstance(n, HomeAgentNode) and n.alive and n.machine.anycast == address]
        if serving:
            return serving[self.rng.randrange(len(serving))]
        return None

    def _transmit(self, sender: _Node, packet: bytes, dst: IPv6Address) -> None:
        self.counters["sent"] += 1
        target = self._resolve(dst)
        if target is None:
            self.counters["no-route"] += 1
            return
        if (sender.name, target.name) in self.blocked:
            self.counters["partitioned"] += 1
            return
        for intercept in self.interceptors:
            changed = intercept(sender.name, target.name, packet)
            if changed is None:
                self.counters["intercepted"] += 1
                return
            packet = changed
        link = self.links.get((sender.name, target.name), self.default)
        rng = self.rng
        if link.loss and rng.random() < link.loss:
            self.counters["lost"] += 1
            return
        copies = 1
        if link.duplicate and rng.random() < link.duplicate:
            copies = 2
            self.counters["duplicated"] += 1
        for _ in range(copies):
            delay = link.latency + (rng.random() * link.reorder if link.reorder else 0.0)
            self._seq += 1
            self._in_flight += 1
            heapq.heappush(self._queue, (self.now + delay, self._seq, "packet",
                                         (target.name, packet)))

    def _flush(self, node: _Node) -> None:
        """Carry out what ``node``'s endpoint queued: packets onto the links, events into
        ``node.events``, forwarding effects into ``node.forwarding``."""
        for item in node.endpoint.output():
            kind = type(item)
            if kind is Datagram:
                self._transmit(node, item.data, item.destination)
            elif kind is Event:
                node.events.append((self.now, item))
            else:
                node.forwarding.apply(item)  # IPv6-in-IPv6 and RAs: nothing to do here
        self._own(node)
        self._schedule(node)

    def _call(self, node: _Node, fn: Callable[[float], list]) -> Optional[list]:
        if not node.alive and isinstance(node, HomeAgentNode):
            raise RuntimeError(f"{node.name} is not running")
        effects = node.endpoint.call(self.now, fn, self.now)
        self._flush(node)
        return effects

    def _schedule(self, node: _Node) -> None:
        node._token += 1
        if not node.alive:
            return
        t = node.endpoint.next_timer()
        if t is not None:
            self._seq += 1
            heapq.heappush(self._queue, (max(t, self.now), self._seq, "tick",
                                         (node.name, node._token)))

    def _deliver(self, name: str, packet: bytes) -> None:
        node = self.nodes[name]
        if not node.alive:
            self.counters["dead"] += 1
            return
        self.counters["delivered"] += 1
        node.endpoint.receive(packet, self.now)
        self._flush(node)

    def inject(self, name: str, packet: bytes) -> None:
        """Deliver the IPv6 packet ``packet`` (bytes) to node ``name`` now, as if it had
        arrived from the link (a forged or replayed packet), through its whole pipeline."""
        self._deliver(name, bytes(packet))

    # -- running -------------------------------------------------------------------------------

    def step(self) -> bool:
        """Process the next packet or timer; returns False when nothing is scheduled."""
        if not self._queue:
            return False
        t, _, kind, data = heapq.heappop(self._queue)
        if t > self.now:
            self.now = t
        if kind == "packet":
            self._in_flight -= 1
            self._deliver(*data)
        else:
            name, token = data
            node = self.nodes[name]
            if node.alive and token == node._token:
                node.endpoint.handle_timer(self.now)
                self._flush(node)
        return True

    def run_until(self, when: float) -> None:
        """Process everything scheduled up to time ``when``; the clock ends at ``when``."""
        while self._queue and self._queue[0][0] <= when:
            self.step()
        self.now = max(self.now, when)

    def run_for(self, seconds: float) -> None:
        """Process everything scheduled in the next ``seconds``."""
        self.run_until(self.now + seconds)

    def idle(self) -> bool:
        """No packet in flight and no machine waiting for an answer."""
        if self._in_flight:
            return False
        return not any(n.alive and n.machine.busy() for n in self.nodes.values())

    def run_until_idle(self, timeout: float) -> float:
        """Run until :meth:`idle` (checked between events) or ``timeout`` seconds pass; returns
        the time taken. Raises TimeoutError if the network did not settle."""
        start = self.now
        deadline = start + timeout
        while not self.idle():
            if not self._queue or self._queue[0][0] > deadline:
                self.now = deadline
                raise TimeoutError(f"not idle after {timeout} s: "
                                   f"{self._in_flight} packets in flight, busy: "
                                   f"{[n.name for n in self.nodes.values() if n.alive and n.machine.busy()]}")
            self.step()
        return self.now - start

    def run_until_true(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Run until ``predicate()`` holds (checked between events); TimeoutError otherwise."""
        deadline = self.now + timeout
        while not predicate():
            if not self._queue or self._queue[0][0] > deadline:
                self.now = deadline
                raise TimeoutError(f"condition not met after {timeout} s")
            self.step()

    # -- observing -------------------------------------------------------------------------------

    def home_agents(self, alive: bool = True) -> List[HomeAgentNode]:
        """The home agents (only the live ones unless ``alive`` is False)."""
        return [n for n in self.nodes.values()
                if isinstance(n, HomeAgentNode) and (n.alive or not alive)]

    def mobile_nodes(self) -> List[MobileNodeNode]:
        """Every mobile node."""
        return [n for n in self.nodes.values() if isinstance(n, MobileNodeNode)]

    def caches(self) -> Dict[str, Any]:
        """``{home agent name: snapshot}`` of the live home agents."""
        return {n.name: n.snapshot() for n in self.home_agents()}

    def identical_caches(self) -> bool:
        """True when every live home agent holds exactly the same bindings (same care-of
        address, sequence, flags, prefixes and primary)."""
        snaps = list(self.caches().values())
        return all(s == snaps[0] for s in snaps[1:])

    def primaries(self) -> Dict[IPv6Address, List[str]]:
        """``{home address: [names of live home agents holding it as primary]}``."""
        out: Dict[IPv6Address, List[str]] = {}
        for n in self.home_agents():
            for b in n.machine.cache:
                if b.primary is None:
                    out.setdefault(b.home_address, []).append(n.name)
        return out
