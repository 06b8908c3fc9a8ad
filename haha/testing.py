"""An in-memory network of home agents and mobile nodes, for haha's tests and for embedders.

:class:`Network` connects :class:`~haha.core.homeagent.HomeAgent` and
:class:`~haha.core.mobilenode.MobileNode` machines by address and carries **encoded** packets
between them: every message goes through ``encode_mh``/``encode_icmpv6`` and ``build_packet``,
and back through ``parse_packet`` and ``decode_mh``/``decode_icmpv6``, so the codec is exercised
end to end. ESP is left out: on a ``secured`` network a message sent with ``protect`` arrives
marked ``protected_by`` the sender's identity (a home agent's source address, a mobile node's
home address), as the security layer would mark it.

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

import heapq
import random
from ipaddress import IPv6Address, IPv6Network

from haha.core.effects import (
    AdvertisePrefix,
    Event,
    HoldAddress,
    Inbound,
    InstallRoute,
    ProxyNd,
    RemoveRoute,
    Send,
    SendIcmp,
    TunnelDown,
    TunnelUp,
)
from haha.core.homeagent import HomeAgent
from haha.core.mobilenode import MobileNode
from haha.core.settings import HomeAgentSettings, MobileNodeSettings
from haha.wire.errors import WireError
from haha.wire.icmpv6 import decode_icmpv6, encode_icmpv6
from haha.wire.ipv6 import build_packet, parse_packet
from haha.wire.mh import decode_mh, encode_mh
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_ICMPV6, IPPROTO_MH

__all__ = ["ForwardingRecorder", "HomeAgentNode", "Link", "MobileNodeNode", "Network"]

HOME_PREFIX = IPv6Network("2001:db8:1::/64")


class ForwardingRecorder:
    """Applies forwarding effects the way a backend would and keeps the result.

    ``routes``: home address -> :class:`~haha.core.duties.ForwardingRoute`; ``proxied``: the
    addresses defended by proxy ND; ``advertised``: prefixes advertised; ``held``: home agent
    addresses held (address take-over; packets to them reach this node); ``tunnel``: a mobile
    node's :class:`~haha.core.effects.TunnelUp` (or None); ``log``: every effect applied.
    """

    def __init__(self):
        self.routes = {}
        self.proxied = set()
        self.advertised = set()
        self.held = set()
        self.tunnel = None
        self.log = []

    def apply(self, effect):
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

    def clear(self):
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

    def __init__(self, loss=0.0, duplicate=0.0, reorder=0.0, latency=0.001):
        self.loss = loss
        self.duplicate = duplicate
        self.reorder = reorder
        self.latency = latency


class _Node:
    def __init__(self, network, name, machine):
        self.network = network
        self.name = name
        self.machine = machine
        self.alive = True
        self.events = []  # (time, Event)
        self.forwarding = ForwardingRecorder()
        self.incarnation = 0
        self.started = False
        self._token = 0

    def identity_for(self, src):
        """The SA identity a receiver sees (``protected_by``) for a protected packet this node
        sends from ``src`` (each kind of node defines it: HomeAgentNode, MobileNodeNode)."""
        raise NotImplementedError(f"{type(self).__name__} must define identity_for")

    def addresses(self):
        """The addresses packets reach this node at (each kind of node defines them)."""
        raise NotImplementedError(f"{type(self).__name__} must define addresses")

    def events_named(self, name):
        return [e for _, e in self.events if e.name == name]

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}{'' if self.alive else ' (dead)'}>"


class HomeAgentNode(_Node):
    """A home agent on the network; ``machine`` is its :class:`HomeAgent`."""

    @property
    def address(self):
        return self.machine.address

    @property
    def identity(self):
        return self.machine.identity

    def identity_for(self, src):
        return src

    def addresses(self):
        m = self.machine
        if m.settings.address_takeover:
            # The home agent address is reached wherever it is held (address take-over).
            return {m.identity} | self.forwarding.held
        return {m.address, m.identity}

    def snapshot(self):
        return self.machine.snapshot()

    def drain(self):
        return self.network._call(self, lambda now: self.machine.drain(now))

    def resume(self):
        return self.network._call(self, lambda now: self.machine.resume(now))

    def switch(self, home_address, desired=None):
        return self.network._call(
            self, lambda now: self.machine.switch(IPv6Address(home_address), now,
                                                  None if desired is None else IPv6Address(desired)))

    def stop(self):
        return self.network._call(self, lambda now: self.machine.stop(now))


class MobileNodeNode(_Node):
    """A mobile node or router on the network; ``machine`` is its :class:`MobileNode`."""

    @property
    def home_address(self):
        return self.machine.home_address

    def identity_for(self, src):
        return self.machine.home_address

    def addresses(self):
        m = self.machine
        return {m.care_of} if m.care_of is not None else {m.home_address}

    def start(self, care_of=None):
        coa = None if care_of is None else IPv6Address(care_of)
        return self.network._call(self, lambda now: self.machine.start(now, coa))

    def move(self, care_of):
        return self.network._call(self, lambda now: self.machine.move(IPv6Address(care_of), now))

    def return_home(self):
        return self.network._call(self, lambda now: self.machine.return_home(now))

    def stop(self):
        return self.network._call(self, lambda now: self.machine.stop(now))


class Network:
    """The in-memory network. ``seed`` fixes every random choice; ``secured`` marks protected
    messages as authenticated; ``latency`` is the default one-way delay."""

    def __init__(self, seed=0, secured=True, latency=0.001, profile=DEFAULT_PROFILE, start=0.0):
        self.seed = seed
        self.rng = random.Random(f"haha-network/{seed}")
        self.secured = secured
        self.profile = profile
        self.now = float(start)
        self.default = Link(latency=latency)
        self.nodes = {}
        self.links = {}
        self.blocked = set()
        self.counters = {"sent": 0, "delivered": 0, "lost": 0, "duplicated": 0,
                         "partitioned": 0, "no-route": 0, "dead": 0, "undecodable": 0}
        self._queue = []
        self._seq = 0
        self._in_flight = 0
        self._owners = {}

    # -- building ------------------------------------------------------------------------------

    def _rng_for(self, name, incarnation):
        return random.Random(f"haha-node/{self.seed}/{name}/{incarnation}")

    def add_home_agent(self, name, settings, start=True):
        """Add a home agent with ``settings`` (a HomeAgentSettings); started at once unless
        ``start`` is False (then call :meth:`start`)."""
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists")
        node = HomeAgentNode(self, name, HomeAgent(settings, self._rng_for(name, 0)))
        node.alive = False
        self.nodes[name] = node
        if start:
            self.start(name)
        return node

    def add_home_agents(self, count, home_prefix=HOME_PREFIX, names=None, start=True,
                        **overrides):
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

    def add_mobile_node(self, name, settings=None, **fields):
        """Add a mobile node (not started: call its ``start``). Either ``settings`` or the
        MobileNodeSettings fields as keywords (``home_prefix`` defaults to 2001:db8:1::/64)."""
        if name in self.nodes:
            raise ValueError(f"a node named {name!r} exists")
        if settings is None:
            fields.setdefault("home_prefix", HOME_PREFIX)
            settings = MobileNodeSettings(**fields)
        node = MobileNodeNode(self, name, MobileNode(settings, self._rng_for(name, 0)))
        self.nodes[name] = node
        self._own(node)
        return node

    def start(self, name):
        """Start (or restart, with empty state) home agent ``name``."""
        node = self.nodes[name]
        if node.alive:
            raise RuntimeError(f"{name} is running")
        if node.started:
            node.machine = HomeAgent(node.machine.settings,
                                     self._rng_for(name, node.incarnation + 1))
            node.incarnation += 1
            node.forwarding.clear()
        node.alive = True
        node.started = True
        self._own(node)
        self._call(node, lambda now: node.machine.start(now))
        return node

    def kill(self, name):
        """Node ``name`` stops dead: no more packets in or out, no timers, no goodbye."""
        node = self.nodes[name]
        node.alive = False
        node._token += 1
        for a in node.addresses():
            if self._owners.get(a) is node:
                del self._owners[a]

    # -- links -------------------------------------------------------------------------------

    def link(self, a, b):
        """The :class:`Link` from node ``a`` to node ``b`` (names), created on first use."""
        key = (a, b)
        if key not in self.links:
            d = self.default
            self.links[key] = Link(d.loss, d.duplicate, d.reorder, d.latency)
        return self.links[key]

    def set_links(self, group_a, group_b, both=True, **conditions):
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

    def partition(self, group_a, group_b):
        """Cut every link between ``group_a`` and ``group_b``, both directions."""
        for a in group_a:
            for b in group_b:
                self.blocked.add((a, b))
                self.blocked.add((b, a))

    def heal(self):
        """Remove every partition."""
        self.blocked.clear()

    # -- carrying packets ------------------------------------------------------------------------

    def _own(self, node):
        for a, n in list(self._owners.items()):
            if n is node:
                del self._owners[a]
        if node.alive or isinstance(node, MobileNodeNode):
            for a in node.addresses():
                self._owners[a] = node

    def _resolve(self, address):
        node = self._owners.get(address)
        if node is not None:
            return node
        serving = [n for n in self.nodes.values()
                   if isinstance(n, HomeAgentNode) and n.alive and n.machine.anycast == address]
        if serving:
            return serving[self.rng.randrange(len(serving))]
        return None

    def _transmit(self, sender, packet, protected, dst):
        self.counters["sent"] += 1
        target = self._resolve(dst)
        if target is None:
            self.counters["no-route"] += 1
            return
        if (sender.name, target.name) in self.blocked:
            self.counters["partitioned"] += 1
            return
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
                                         (target.name, packet, protected)))

    def _encode(self, node, effect):
        if type(effect) is Send:
            src, dst = effect.src, effect.dst
            payload = encode_mh(effect.message, effect.home_address or src,
                                effect.routing_address or dst, self.profile)
            packet = build_packet(src, dst, IPPROTO_MH, payload,
                                  home_address=effect.home_address,
                                  routing_address=effect.routing_address)
            protected = node.identity_for(src) if effect.protect is not None else None
            return packet, protected, dst
        payload = encode_icmpv6(effect.message, effect.src, effect.dst)
        return build_packet(effect.src, effect.dst, IPPROTO_ICMPV6, payload), None, effect.dst

    def _apply(self, node, effects):
        for effect in effects:
            kind = type(effect)
            if kind is Send or kind is SendIcmp:
                packet, protected, dst = self._encode(node, effect)
                self._transmit(node, packet, protected if self.secured else None, dst)
            elif kind is Event:
                node.events.append((self.now, effect))
            else:
                node.forwarding.apply(effect)
        self._own(node)
        self._schedule(node)

    def _call(self, node, fn):
        if not node.alive and isinstance(node, HomeAgentNode):
            raise RuntimeError(f"{node.name} is not running")
        effects = fn(self.now)
        self._apply(node, effects)
        return effects

    def _schedule(self, node):
        node._token += 1
        if not node.alive:
            return
        t = node.machine.next_deadline()
        if t is not None:
            self._seq += 1
            heapq.heappush(self._queue, (max(t, self.now), self._seq, "tick",
                                         (node.name, node._token)))

    def _deliver(self, name, packet, protected):
        node = self.nodes[name]
        if not node.alive:
            self.counters["dead"] += 1
            return
        try:
            p = parse_packet(packet)
            if p.next_header == IPPROTO_MH:
                msg = decode_mh(p.payload, p.source, p.destination, self.profile)
            elif p.next_header == IPPROTO_ICMPV6:
                msg = decode_icmpv6(p.payload, p.src, p.dst)
            else:
                raise WireError("unsupported", f"next header {p.next_header}")
        except WireError:
            self.counters["undecodable"] += 1
            return
        self.counters["delivered"] += 1
        inbound = Inbound(msg, p.src, p.dst, p.home_address, p.routing_address, protected)
        self._apply(node, node.machine.receive(inbound, self.now))

    # -- running -------------------------------------------------------------------------------

    def step(self):
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
                self._apply(node, node.machine.tick(self.now))
        return True

    def run_until(self, when):
        """Process everything scheduled up to time ``when``; the clock ends at ``when``."""
        while self._queue and self._queue[0][0] <= when:
            self.step()
        self.now = max(self.now, when)

    def run_for(self, seconds):
        self.run_until(self.now + seconds)

    def idle(self):
        """No packet in flight and no machine waiting for an answer."""
        if self._in_flight:
            return False
        return not any(n.alive and n.machine.busy() for n in self.nodes.values())

    def run_until_idle(self, timeout):
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

    def run_until_true(self, predicate, timeout):
        """Run until ``predicate()`` holds (checked between events); TimeoutError otherwise."""
        deadline = self.now + timeout
        while not predicate():
            if not self._queue or self._queue[0][0] > deadline:
                self.now = deadline
                raise TimeoutError(f"condition not met after {timeout} s")
            self.step()

    # -- observing -------------------------------------------------------------------------------

    def home_agents(self, alive=True):
        return [n for n in self.nodes.values()
                if isinstance(n, HomeAgentNode) and (n.alive or not alive)]

    def mobile_nodes(self):
        return [n for n in self.nodes.values() if isinstance(n, MobileNodeNode)]

    def caches(self):
        """``{home agent name: snapshot}`` of the live home agents."""
        return {n.name: n.snapshot() for n in self.home_agents()}

    def identical_caches(self):
        """True when every live home agent holds exactly the same bindings (same care-of
        address, sequence, flags, prefixes and primary)."""
        snaps = list(self.caches().values())
        return all(s == snaps[0] for s in snaps[1:])

    def primaries(self):
        """``{home address: [names of live home agents holding it as primary]}``."""
        out = {}
        for n in self.home_agents():
            for b in n.machine.cache:
                if b.primary is None:
                    out.setdefault(b.home_address, []).append(n.name)
        return out
