"""The configured transport, and where a home agent joins its Home-Agents anycast address.

Service glue (:mod:`haha.service` starts what these build): the raw transport or the UDP
development transport of ``[transport]``, not started, and the ``(address, interface)`` of the
anycast membership DHAAD needs (RFC 6275 10.5).
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

__all__ = ["anycast_membership", "build_transport"]


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
                            send_buffer=t.send_buffer)
    from .io.raw import RawTransport

    return RawTransport(reactor, interfaces=list(t.interfaces) or None,
                        default_interface=home_interface, receive_buffer=t.receive_buffer)


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
