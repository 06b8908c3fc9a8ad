"""Peers from DNS: AAAA records of configured names, resolved periodically (twisted.names).

A name such as ``home-agents.example.net`` holding one AAAA record per home agent lets an operator
add a home agent without touching every configuration. Discovery only proposes: a peer must still
fall inside ``[peers] authorised`` and have a key (draft section 1, "as like BGP").

A failed lookup keeps the last answer (a DNS outage must not make every peer disappear); a name
whose answer no longer lists an address withdraws it: a candidate that is not live is forgotten,
a live peer stays until its protected HELLOs stop (DNS is not authenticated).
"""

from ipaddress import IPv6Address
from typing import Any, Iterable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface import implementer

from ..inifile import Section
from ..interfaces import IPeerDiscovery, IPeerListener
from ..logging import logger

log = logger("haha.discovery.dns")


@implementer(IPeerDiscovery)
class DnsDiscovery:
    """Resolve ``names`` every ``interval`` seconds through ``resolver`` (an IResolver)."""

    name = "dns"

    def __init__(self, names: Iterable[str], resolver: Any, clock: IReactorTime,
                 interval: float = 60.0) -> None:
        self.names = tuple(names)
        self.resolver = resolver
        self.clock = clock
        self.interval = interval
        self.lookups = 0
        self.failures = 0
        self._answers: dict[str, frozenset[IPv6Address]] = {n: frozenset() for n in self.names}
        self._listener: Optional[IPeerListener] = None
        self._call: Optional[IDelayedCall] = None

    def start(self, listener: IPeerListener) -> None:
        self._listener = listener
        self._poll()

    def stop(self) -> None:
        self._listener = None
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def current(self) -> frozenset[IPv6Address]:
        """Every address currently reported."""
        return frozenset().union(*self._answers.values()) if self._answers else frozenset()

    def _poll(self) -> None:
        self._call = None
        if self._listener is None:
            return
        for n in self.names:
            self.lookups += 1
            d = self.resolver.lookupIPV6Address(n)
            d.addCallbacks(self._answered, self._failed, callbackArgs=(n,), errbackArgs=(n,))
        self._call = self.clock.callLater(self.interval, self._poll)

    def _answered(self, result: tuple[list[Any], list[Any], list[Any]], name: str) -> None:
        answers = result[0]  # (answers, authority, additional) of twisted.names
        found = set()
        for rr in answers:
            if rr.type == dns.AAAA:
                try:
                    found.add(IPv6Address(rr.payload.address))
                except ValueError:
                    continue
        self._update(name, frozenset(found))

    def _failed(self, failure: Failure, name: str) -> None:
        self.failures += 1
        log.warn("DNS lookup of {name} failed: {why}", name=name,
                 why=failure.getErrorMessage())

    def _update(self, name: str, found: frozenset[IPv6Address]) -> None:
        if self._listener is None:
            return
        before = self.current()
        self._answers[name] = found
        after = self.current()
        for a in sorted(after - before):
            self._listener.peer_appeared(a, self.name)
        for a in sorted(before - after):
            self._listener.peer_disappeared(a, self.name)


def build(options: Section, reactor: Any, config: Any) -> DnsDiscovery:
    """Plugin factory. ``[discovery:dns]``: ``names`` (required), ``interval`` (s, default 60),
    ``servers`` (HOST:PORT list; default: the system resolver)."""
    from twisted.names import client

    names = options.get_list("names", required=True)
    if not names:
        raise options.error("names", "at least one DNS name is needed")
    interval = options.get_float("interval", 60.0, minimum=1, maximum=86400)
    servers = options.get_list("servers")
    parsed = []
    for s in servers:
        host, _, port = s.rpartition(":")
        if not host or not port.isdigit():
            raise options.error("servers", f"expected HOST:PORT, got {s!r}")
        parsed.append((host.strip("[]"), int(port)))
    resolver = client.Resolver(resolv=None if parsed else "/etc/resolv.conf",
                               servers=parsed or None, reactor=reactor)
    return DnsDiscovery(names, resolver, reactor, interval)
