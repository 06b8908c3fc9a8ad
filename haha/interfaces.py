"""The contracts between haha's layers.

Every seam where the operating system, the network or a third party plugs in is a small
zope.interface here. Built-in implementations declare ``@implementer`` and are checked with
``verifyObject`` in the tests; plugins are checked by :mod:`haha.plugins` when they are loaded.

Addresses are :class:`ipaddress.IPv6Address`, prefixes :class:`ipaddress.IPv6Network`, packets
``bytes`` holding a complete IPv6 packet (fixed header, extension headers, upper layer).
"""

from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface


class IMobilityTransport(Interface):
    """The packet I/O seam: complete IPv6 packets in and out.

    Implementations: raw IPv6 sockets plus an AF_PACKET receiver (``haha.io.raw``), IPv6 packets
    carried in UDP datagrams between loopback ports for unprivileged runs (``haha.io.udp``), and
    an in-memory network for tests and embedders (``haha.testing``).

    Outbound packets are already complete (extension headers, ESP, checksums): the transport only
    delivers them. Inbound, it hands every packet that may concern mobility signalling or the
    tunnel (Mobility Header, ESP, ICMPv6 types 144-147 and Router Advertisements, IPv6-in-IPv6) to
    the receiver; the receiver parses and drops what it does not want. Errors of the operating
    system are logged and counted by the transport, never raised to the caller.
    """

    def start(receiver):
        """Begin delivering inbound packets to ``receiver(packet: bytes)``."""

    def send(packet, interface=None):
        """Send one complete IPv6 packet (``bytes``). Never raises for network errors.
        ``interface`` names the link for link-local and multicast destinations (transports
        without interfaces ignore it)."""

    def stop():
        """Stop receiving and release sockets. May return a Deferred."""

    counters = Attribute("A mapping of counter name to int (sent, received, send_errors, ...).")


class IForwardingBackend(Interface):
    """The forwarding plane: what the kernel (or user space) must do for the bindings.

    The core computes the duties per binding (tunnel or not, proxy ND or not, prefix routes) and
    calls these methods with exactly what to install and remove. ``install`` is idempotent: calling
    it again for the same home address replaces (refreshes) the previous state.
    """

    name = Attribute("The backend's configuration name, e.g. 'netlink', 'tun', 'null'.")

    def capabilities():
        """A frozenset of strings among 'tunnel', 'proxy-nd', 'prefix-route', 'userspace'."""

    def start():
        """Prepare devices and tables. May return a Deferred; raise on an unusable system."""

    def stop():
        """Remove everything this backend installed. May return a Deferred."""

    def install(route):
        """Forward packets for ``route`` (a :class:`haha.core.duties.ForwardingRoute`): the home
        address and mobile network prefixes through a bidirectional tunnel between
        ``route.local`` and ``route.care_of``."""

    def remove(home_address):
        """Stop forwarding for ``home_address`` and its prefixes; unknown addresses are ignored."""

    def proxy_nd_start(address, interface):
        """Defend ``address`` on the home link ``interface`` with proxy Neighbour Discovery and
        send an unsolicited Neighbour Advertisement for it."""

    def proxy_nd_stop(address, interface):
        """Stop defending ``address``."""

    def advertise_prefix(prefix):
        """Attract traffic for ``prefix`` (the aggregated home prefix, configurations without a
        home link or with a HAHA address)."""

    def withdraw_prefix(prefix):
        """Stop attracting traffic for ``prefix``."""

    def snapshot():
        """A JSON-serialisable description of what is installed now (for the control interface
        and tests)."""


class IPeerListener(Interface):
    """What a discovery strategy reports to."""

    def peer_appeared(address, source):
        """``address`` (IPv6Address) may be a home agent; ``source`` names the strategy."""

    def peer_disappeared(address, source):
        """``address`` is no longer reported by ``source``."""


class IPeerDiscovery(Interface):
    """A way to learn candidate peer home agents.

    Discovery only proposes: every peer must still be on the configured authorisation list and
    have keys before the home agent talks to it ("as like BGP", draft section 1).
    """

    name = Attribute("The strategy's configuration name, e.g. 'static', 'dns', 'link'.")

    def start(listener):
        """Begin reporting peers to ``listener`` (an :class:`IPeerListener`)."""

    def stop():
        """Stop reporting. May return a Deferred."""


class ISecurityAssociations(Interface):
    """IPsec ESP transport mode (RFC 4303) for signalling, in user space.

    ``protect`` and ``unprotect`` work on the part of the packet after the IPv6 header and the
    extension headers that stay in clear (Home Address option, type 2 routing header).
    """

    def protect(peer, next_header, payload):
        """Return the ESP header, encrypted ``payload`` and trailer for the outbound SA towards
        ``peer`` (a home agent's address or a mobile node's home address). Raise
        :class:`haha.security.SecurityError` when there is no usable SA."""

    def unprotect(source, esp):
        """Authenticate and decrypt ``esp`` (bytes starting at the SPI). Return
        ``(peer, next_header, payload)`` where ``peer`` is the identity bound to the SA. Raise
        :class:`haha.security.SecurityError` (with a ``reason``) for anything that must be
        dropped: unknown SPI, replay, authentication failure, bad padding, wrong source.
        ``source`` is the address the packet speaks for: the home address of a Home Address
        option when there is one (a mobile node's SA is bound to its home address, not its
        care-of address), else the IPv6 source -- ``haha.wire.ipv6.Packet.source``."""

    def has_peer(peer):
        """Whether an outbound SA exists for ``peer``."""

    counters = Attribute("A mapping of drop reason to count.")


class IBackendPlugin(IPlugin):
    """A forwarding backend that a configuration selects by name (``backend = NAME``)."""

    name = Attribute("The name used in the configuration file.")
    description = Attribute("One line for listings and error messages.")

    def build(options, reactor):
        """Return an :class:`IForwardingBackend`. ``options`` is the backend's own configuration
        section (a :class:`haha.config.Section`)."""


class IDiscoveryPlugin(IPlugin):
    """A peer-discovery strategy that a configuration selects by name (``discovery = NAME``)."""

    name = Attribute("The name used in the configuration file.")
    description = Attribute("One line for listings and error messages.")

    def build(options, reactor, config):
        """Return an :class:`IPeerDiscovery`. ``options`` is the strategy's own configuration
        section, ``config`` the whole home agent configuration."""


class IRouterAdvertisementListener(Interface):
    """Optional: a discovery strategy that wants the Router Advertisements the daemon receives on
    the home link (RFC 6275 10.5.1: home agents on one link learn each other from them)."""

    def router_advertisement(source, advertisement):
        """``advertisement`` (a :class:`haha.wire.icmpv6.RouterAdvertisement`) arrived from the
        link-local ``source``."""


class IControllable(Interface):
    """What the operator interface (``haha-ctl``, the metrics endpoint) may ask of a daemon.

    Every method returns JSON-serialisable data (or a Deferred firing with it) and raises
    ``ValueError`` with an operator-readable message for a bad request.
    """

    def status():
        """A mapping describing the daemon (role, addresses, state, uptime, ...)."""

    def bindings():
        """A list of mappings, one per binding (primary and copies for a home agent)."""

    def peers():
        """A list of mappings, one per known peer home agent (home agents only)."""

    def counters():
        """A flat mapping of counter name to number (for metrics)."""

    def command(name, arguments):
        """Run an operator command (e.g. 'switch', 'drain'); ``arguments`` is a mapping."""
