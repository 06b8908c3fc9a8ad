"""Static peers: the home agents listed in ``[peers] static`` (draft 5.4: "manually configured")."""

from zope.interface import implementer

from ..interfaces import IPeerDiscovery


@implementer(IPeerDiscovery)
class StaticDiscovery:
    """Reports every configured peer once, at start; never withdraws one."""

    name = "static"

    def __init__(self, peers):
        self.peers = tuple(peers)
        self._listener = None

    def start(self, listener):
        self._listener = listener
        for p in self.peers:
            listener.peer_appeared(p, self.name)

    def stop(self):
        self._listener = None


def build(options, reactor, config):
    """Plugin factory: ``[discovery:static]`` takes no keys; the peers are ``[peers] static``."""
    return StaticDiscovery(config.peers)
