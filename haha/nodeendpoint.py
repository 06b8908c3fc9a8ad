"""The mobile node's pipeline with a short path for the packets a node lives on (issue 11).

Nearly everything a registered node receives is one shape: a home agent's Binding
Acknowledgement or switch request, sent to the care-of address with a type 2 routing header
naming the home address, inside ESP under an SA the node holds (RFC 6275 6.4, 11.3.1). A load
generator runs thousands of nodes in one process and pays for every layer of
:meth:`haha.endpoint.Endpoint.receive` per packet; :class:`NodeEndpoint` recognises that shape
from a few octets and runs the same steps, in the same order, with the same counters and
drops, without the general header walk and the indirections around ESP:

- the packet must be exactly: IPv6 fixed header, a type 2 routing header of 24 octets with
  Segments Left 1, then ESP, Payload Length within the packet, a source that is neither
  multicast nor unspecified, and an SPI the SA database knows. Anything else (another
  layout, a Home Address option, an unknown SPI, a damaged header) goes to the general path
  before anything is counted, so it is handled exactly as before;
- from there: the node's keyring (only for a source without SAs), the SA database's
  ``unprotect`` (a failure counted and charged to the strangers' budget, as before), the
  authenticated peer's budget, the Mobility Header or ICMPv6 decoder, the security policy,
  the machine, the effects: the general path's calls (its ``_decode`` and ``_to_machine``
  among them), not copies of them.

What a node sends takes the general path: a Binding Update's packet built on a head kept per
destination saved about 1.5 us when sent again and cost as much on the first to a destination
(a take-over's), measured in one process against the general path.

``tests/test_nodeendpoint.py`` runs both paths over packets from real home agent pipelines,
each field of the fixed shape damaged in turn, truncations and random octets, and compares
counters, output, the machine's state and the SA databases afterwards.
"""

from .core.effects import make_inbound
from .endpoint import MobileNodeEndpoint
from .security.errors import SecurityError
from .wire.addresses import address_at
from .wire.ipv6 import Packet
from .wire.mh import BindingInfoUpdate
from .wire.numbers import (
    ICMP6_ROUTER_ADVERT,
    IPPROTO_ESP,
    IPPROTO_ICMPV6,
    IPPROTO_ROUTING,
    ROUTING_TYPE_2,
)

__all__ = ["NodeEndpoint"]

_UNSPECIFIED = bytes(16)
#: The octets 40-43 of the shape: the routing header's Next Header (ESP), Hdr Ext Len (2: 24
#: octets), Routing Type (2), Segments Left (1).
_RH2_ESP = bytes((IPPROTO_ESP, 2, ROUTING_TYPE_2, 1))
#: Where the ESP header starts in that shape.
_ESP_AT = 64


class NodeEndpoint(MobileNodeEndpoint):
    """:class:`haha.endpoint.MobileNodeEndpoint` with the short path of the module docstring;
    every other packet, and every other entry point, is the parent's."""

    def receive(self, data: bytes, now: float) -> None:
        """One complete inbound IPv6 packet, at ``now``: the short path for the shape of the
        module docstring, the general one for anything else."""
        sadb = self.sadb
        n = len(data)
        if sadb is None or type(data) is not bytes or n < _ESP_AT + 4 \
                or data[6] != IPPROTO_ROUTING \
                or data[40:44] != _RH2_ESP or data[0] >> 4 != 6:
            return super().receive(data, now)
        end = 40 + ((data[4] << 8) | data[5])
        first = data[8]
        if end > n or end < _ESP_AT or first == 0xFF \
                or not first and data[8:24] == _UNSPECIFIED:
            return super().receive(data, now)
        esp = data[_ESP_AT:end]
        knows = getattr(sadb, "knows", None)
        if knows is None or not knows(esp):
            return super().receive(data, now)
        # The addresses parse_packet reads for this shape (no Home Address option: the source
        # is the fixed header's, the destination the routing header's).
        src = address_at(data, 8)
        routing = address_at(data, 48)
        self._now = now
        counters = self.counters
        counters["packets-received"] += 1
        # Endpoint.receive from here, for ESP under a known SA (its order and its drops).
        keyring = self.keyring
        if keyring is not None and not keyring.sadb.has_peer(src):
            keyring.learn(src, esp)
        try:
            protected_by, nh, payload = sadb.unprotect(src, esp)
        except SecurityError as e:
            self._drop(e.reason, src=src, spi=e.spi)
            self._admit(src, now)  # a failure counts against the strangers
            return None
        if not self._admit_peer(protected_by, now):
            return self._drop("rate-limited-peer", peer=protected_by)
        decoded = self._decode(nh, payload, src, routing, src)
        if decoded is None:
            return None
        message, mtype = decoded
        decision = self.policy.decide(nh, mtype, True, True, sadb.role_of(protected_by))
        if not decision.process:
            return self._drop(decision.reason, src=src, message=type(message).__name__)
        if nh == IPPROTO_ICMPV6 and mtype == ICMP6_ROUTER_ADVERT:
            # RFC 4861 6.1.2, checked as the general path checks it.
            if data[7] != 255 or not src.is_link_local:
                return self._drop("bad-router-advertisement", src=src)
            vtf = int.from_bytes(data[:4], "big")
            self.router_advertisement(
                Packet(src, address_at(data, 24), IPPROTO_ESP, esp, data[7], None, routing,
                       (vtf >> 20) & 0xFF, vtf & 0xFFFFF), message)
        counters["received." + type(message).__name__] += 1
        if self.takeover_keys is not None and type(message) is BindingInfoUpdate:
            self.takeover_keys.learn(message.options)
        for tap in self.message_taps:
            tap("in", message, src, now)
        self._to_machine(make_inbound(message, src, address_at(data, 24), None, routing,
                                      protected_by), now)
        return None
