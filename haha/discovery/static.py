"""Static peers: the home agents listed in ``[peers] static`` (draft 5.4: "manually configured")."""

from ipaddress import IPv6Address
from typing import Any, Iterable, Optional

from zope.interface import implementer

from ..inifile import Section
from ..interfaces import IPeerDiscovery, IPeerListener


@implementer(IPeerDiscovery)
class StaticDiscovery:
    """Reports every configured peer once, at start; never withdraws one."""

    name = "static"

    def __init__(self, peers: Iterable[IPv6Address]) -> None:
        self.peers = tuple(peers)
        self._listener: Optional[IPeerListener] = None

    def start(self, listener: IPeerListener) -> None:
        self._listener = listener
        for p in self.peers:
            listener.peer_appeared(p, self.name)

    def stop(self) -> None:
        self._listener = None


def build(options: Section, reactor: Any, config: Any) -> StaticDiscovery:
    """Plugin factory: ``[discovery:static]`` takes no keys; the peers are ``[peers] static``."""
    return StaticDiscovery(config.peers)
