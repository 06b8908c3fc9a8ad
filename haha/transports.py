"""The configured transport, and where a home agent joins its Home-Agents anycast address.

Service glue (:mod:`haha.service` starts what these build): the raw transport or the UDP
development transport of ``[transport]``, not started, with the configured peers whose packets
come first (:func:`priority_peers`), and the ``(address, interface)`` of the anycast membership
DHAAD needs (RFC 6275 10.5).
"""

from __future__ import annotations

from ipaddress import IPv6Address
from typing import TYPE_CHECKING, Any, Union

from .core.homeagent import home_agents_anycast

if TYPE_CHECKING:
    from .config import HomeAgentConfig, MobileNodeConfig
    from .io.raw import RawTransport
    from .io.udp import UdpTransport

AnyConfig = Union["HomeAgentConfig", "MobileNodeConfig"]

__all__ = ["anycast_membership", "build_transport", "priority_peers"]


def build_transport(config: AnyConfig, reactor: Any,
                    home_interface: str | None = None) -> UdpTransport | RawTransport:
    """The configured transport (not started)."""
    t = config.transport
    if t.kind == "udp":
        from .io.udp import UdpTransport

        assert t.udp_listen is not None, "haha.config requires udp-listen with kind = udp"
        host, port = t.udp_listen
        return UdpTransport(reactor, port=port, interface=host, peers=t.udp_peers,
                            max_learned=t.udp_learned, receive_buffer=t.receive_buffer,
                            send_buffer=t.send_buffer, max_backlog=t.max_backlog,
                            max_per_source=t.max_per_source, supersede=t.supersede)
    from .io.raw import RawTransport

    return RawTransport(reactor, interfaces=list(t.interfaces) or None,
                        default_interface=home_interface, receive_buffer=t.receive_buffer,
                        peers=priority_peers(config), max_backlog=t.max_backlog,
                        max_per_source=t.max_per_source, supersede=t.supersede)


def priority_peers(config: AnyConfig) -> dict[IPv6Address, frozenset[int] | None]:
    """The raw transport's configured peers (docs/io.md, "Input queues"): a home agent's
    ``[peers] static`` and ``[peer-keys]`` addresses, each with the SPI of its inbound SA
    (``[security] mode = esp``: derived from the pair's secret as the SA database derives it,
    so a stranger claiming a peer's address gets no priority) or ``None`` (``mode = none``:
    nothing but the address exists to tell a peer by). Empty for a mobile node and in the
    kernel ESP modes, where the Mobility Header comes from the kernel's own socket after its
    checks, not through this queue."""
    from .config import HomeAgentConfig

    if not isinstance(config, HomeAgentConfig):
        return {}
    peers, keys, mode = config.peers, config.security.peer_keys, config.security.mode
    if mode == "none":
        return {p: None for p in (*peers, *keys)}
    if mode != "esp":
        return {}
    from .security.keyring import load_located
    from .security.keys import derive_pair
    from .security.sadb import HOME_AGENT

    out: dict[IPv6Address, frozenset[int] | None] = {p: frozenset() for p in peers}
    local = config.haha_address
    for peer, key_file in keys.items():
        _, inbound = derive_pair(load_located(key_file, "peer key"), local, peer, HOME_AGENT)
        out[peer] = frozenset((inbound.spi,))
    return out


def anycast_membership(config: HomeAgentConfig) -> tuple[IPv6Address, str]:
    """``(address, interface)``: where a home agent joins the Home-Agents anycast address of
    its home prefix (RFC 6275 10.5, RFC 2526), so that Dynamic Home Agent Address Discovery
    requests reach it (docs/io.md, "DHAAD on real links").

    On a home link (``home-interface``) the kernel must answer Neighbour Solicitations for the
    address there, or the home link's router cannot deliver a request at all. Without a home
    link the address lies inside the home prefix that routing brings to whichever home agent
    advertises it; joining it on ``lo`` only makes the kernel take the request as local (and
    drop the unknown ICMPv6 type silently) instead of answering it with Destination
    Unreachable from the backend's ``unreachable`` prefix route."""
    return home_agents_anycast(config.home_prefix), config.home_interface or "lo"
