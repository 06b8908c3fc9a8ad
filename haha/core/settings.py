"""Everything the sans-IO machines need to know, as frozen dataclasses.

:class:`HomeAgentSettings` configures a :class:`haha.core.homeagent.HomeAgent`,
:class:`MobileNodeSettings` a :class:`haha.core.mobilenode.MobileNode`; every field is
documented where it is declared. Construction checks every value and raises
:class:`SettingsError` naming the field, so a bad configuration never reaches a machine. These
checks are the only ones on the core's values: ``haha.config`` builds these records from the INI
keys and reports their refusals at the key's file, section and line. Mappings are frozen
(``types.MappingProxyType``) and sequences become tuples.

Times are in seconds (``float`` allowed); lifetimes on the wire (4-second units) are converted by
:mod:`haha.wire.lifetime`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv6Address, IPv6Network
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from haha.wire.lifetime import MAX_SECONDS, MAX_UNITS
from haha.wire.numbers import DEFAULT_PROFILE, NumberProfile

#: Configuration kinds (draft section 3).
HOME_LINK = "home-link"  # 3.1 figures 1 and 2: every home agent on one home link
SEPARATE_LINKS = "separate-links"  # 3.1 figures 3 and 4: home links joined at layer 2
NO_HOME_LINK = "no-home-link"  # 3.2: virtual home link, every HA advertises the home prefix
KINDS = (HOME_LINK, SEPARATE_LINKS, NO_HOME_LINK)

#: What a draining home agent asks its mobile nodes to do (see ``HomeAgentSettings.drain``).
DRAIN_SPREAD = "spread"
DRAIN_BEST = "best"
DRAIN_DISCOVER = "discover"
DRAIN_MODES = (DRAIN_SPREAD, DRAIN_BEST, DRAIN_DISCOVER)

#: How a home agent tells a mobile node to switch.
SWITCH_HASR = "hasr"  # the draft's Home Agent Switch Request (4.1.5)
SWITCH_RFC5142 = "rfc5142"  # RFC 5142 Home Agent Switch (MH type 12)
SWITCH_MESSAGES = (SWITCH_HASR, SWITCH_RFC5142)
#: The largest ``sync_mtu``: a Mobility Header's length field counts 8-octet units in one
#: octet (RFC 6275 6.1.1), so a BIU's Mobility Header is at most 2,048 octets; with the IPv6
#: header (40), ESP's worst case (37) and room for an IP Address option naming a primary, 2,100.
MAX_SYNC_MTU = 2100
# Who takes over a dead peer's mobile nodes (HomeAgentSettings.take_over_share).
TAKE_OVER_FIRST = "first"  # the first-ranked live home agent takes every one
TAKE_OVER_SPLIT = "split"  # every live home agent takes its share, decided by home address
TAKE_OVER_SHARES = (TAKE_OVER_FIRST, TAKE_OVER_SPLIT)

MAX_LIFETIME_UNITS = MAX_UNITS  # a 16-bit lifetime in units of 4 s (RFC 6275 6.1.7)


#: At most this many Mobile Network Prefix options in a HELLO (24 octets each: the HELLO stays
#: well inside the minimum MTU with ESP).
MAX_HELLO_PREFIXES = 40


class SettingsError(ValueError):
    """A setting that cannot be used; ``field`` names it (``name[key]`` for one entry of a
    mapping), ``detail`` says why."""

    def __init__(self, field_name: str, detail: str) -> None:
        self.field = field_name
        self.detail = detail
        super().__init__(f"{field_name}: {detail}")


def _address(name: str, value: Any, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, str):
        try:
            value = IPv6Address(value)
        except ValueError as e:
            raise SettingsError(name, str(e)) from None
    if not isinstance(value, IPv6Address):
        raise SettingsError(name, f"{value!r} is not an IPv6 address")
    if value.is_unspecified or value.is_multicast or value.is_loopback:
        raise SettingsError(name, f"{value} is not a unicast address")
    return value


def _network(name: str, value: Any) -> IPv6Network:
    if isinstance(value, str):
        try:
            value = IPv6Network(value)
        except ValueError as e:
            raise SettingsError(name, str(e)) from None
    if not isinstance(value, IPv6Network):
        raise SettingsError(name, f"{value!r} is not an IPv6 prefix")
    return value


def _addresses(name: str, values: Any) -> tuple[IPv6Address, ...]:
    if isinstance(values, (str, IPv6Address)):
        raise SettingsError(name, "expected a sequence of addresses")
    out = tuple(_address(name, v) for v in values)
    if len(set(out)) != len(out):
        raise SettingsError(name, "an address is listed twice")
    return out


def _networks(name: str, values: Any) -> tuple[IPv6Network, ...]:
    if isinstance(values, (str, IPv6Network)):
        raise SettingsError(name, "expected a sequence of prefixes")
    return tuple(_network(name, v) for v in values)


def _prefix_map(name: str,
                mapping: Any) -> Mapping[IPv6Address, tuple[IPv6Network, ...]]:
    out: dict[IPv6Address, tuple[IPv6Network, ...]] = {}
    for k, v in dict(mapping).items():
        a = _address(name, k)
        if a in out:
            raise SettingsError(name, f"{a} is listed twice")
        out[a] = _networks(f"{name}[{a}]", v)
    return MappingProxyType(out)


def _number(name: str, value: Any, low: float | None = None, high: float | None = None,
            integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(name, f"{value!r} is not a number")
    if integer and not isinstance(value, int):
        raise SettingsError(name, f"{value!r} is not an integer")
    if low is not None and value < low:
        raise SettingsError(name, f"{value} is below the minimum {low}")
    if high is not None and value > high:
        raise SettingsError(name, f"{value} is above the maximum {high}")
    return value


def _choice(name: str, value: Any, choices: Iterable[str]) -> Any:
    if value not in choices:
        raise SettingsError(name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _flag(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise SettingsError(name, f"{value!r} is not true or false")
    return value


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class HomeAgentSettings:
    """The configuration of one home agent (RFC 6275 10, RFC 3963 6, draft 5)."""

    #: The home agent address: the address mobile nodes send Binding Updates to and learn from
    #: DHAAD, HELLO's "Home Agent Address" and the tunnel end point. With ``kind =
    #: 'no-home-link'`` this is the HAHA address (draft 3.2: mobile nodes register with it).
    address: IPv6Address
    #: The home prefix served (home addresses must lie inside it; RFC 6275 10.3.1 answers 132
    #: otherwise). Its length goes into HELLO's Prefix Length, its /64 into the anycast address.
    home_prefix: IPv6Network
    #: Configuration kind, draft section 3: 'home-link' (3.1 figures 1/2, one shared home link),
    #: 'separate-links' (3.1 figures 3/4, home links joined at layer 2) or 'no-home-link' (3.2).
    #: With a home link the primary defends home addresses by proxy ND; without one every home
    #: agent advertises the home prefix and forwards from its copies too.
    kind: str = HOME_LINK
    #: The HAHA address (draft section 2): the address used for all HA<->HA signalling (HELLO,
    #: BIR, BIU, BIA) and the identity peers know this home agent by. None: ``address``.
    haha_address: IPv6Address | None = None
    #: Home Agent Preference, an unsigned 16-bit value as the codec encodes it (draft 4.1.1;
    #: higher is preferred); sent in HELLO, used to rank home agents (docs/protocol.md 6.6) and to
    #: order DHAAD replies. Keep it above ``drain_preference`` so a draining peer sorts last.
    preference: int = 0
    #: Home Agent Lifetime in seconds (1..65535) sent in HELLO: peers declare this home agent
    #: dead when it passes without a HELLO (docs/protocol.md 6.6). Keep it a few HELLO intervals.
    ha_lifetime: int = 35
    #: Seconds between periodic HELLOs (draft 5.4 "MUST periodically send"); a HELLO is also
    #: sent at once when preference, lifetime or draining state change.
    hello_interval: float = 10.0
    #: Fast failure detection: a peer silent for this many HELLO intervals (this home agent's
    #: ``hello_interval``; every home agent of the prefix should use the same) is dead, even
    #: before its HA lifetime runs out (HELLO's lifetime has whole seconds only). 0: the HA
    #: lifetime alone decides.
    hello_misses: int = 0
    #: Whether to send HELLOs. Draft 5.4 says HELLO SHOULD NOT be used between home agents on
    #: the same link (they use Router Advertisements); set False there.
    send_hello: bool = True
    #: Upper bound in seconds on the lifetime granted to a binding (RFC 6275 10.3.1 lets the
    #: home agent shorten it). At most 262140 (65535 units of 4 s).
    max_binding_lifetime: int = 3600
    #: Static peers: the HAHA (signalling) addresses of the other home agents serving the same
    #: home prefix (draft 5.4: "MUST know other Home Agents ... manually configured"). Static
    #: peers are always authorised.
    peers: tuple[IPv6Address, ...] = ()
    #: Prefixes inside which a peer proposed by discovery (``HomeAgent.add_peer``, or a Router
    #: Advertisement with the H flag) is accepted; peers outside them and outside ``peers`` are
    #: refused ("as like BGP", draft 1). Empty: only static peers.
    authorised_peer_prefixes: tuple[IPv6Network, ...] = ()
    #: At most this many discovered (non-static) peers are held as candidates
    #: (:mod:`haha.core.candidates`): discovery is unauthenticated, its proposals are bounded.
    max_candidates: int = 64
    #: Whether mobile routers (R flag, RFC 3963) are served at all; False answers 140.
    nemo: bool = True
    #: Mobile routers: home address -> the Mobile Network Prefixes it is authorised to register
    #: (RFC 3963 6.2). A Binding Update with the R flag from a home address not listed here is
    #: answered 140; an explicit prefix outside the listed ones 142.
    mobile_routers: Mapping[IPv6Address, tuple[IPv6Network, ...]] = field(default_factory=dict)
    #: Implicit mode (RFC 3963 5.2, 6.2): home address -> the prefixes installed when a mobile
    #: router registers without Mobile Network Prefix options. Missing: answered 143.
    implicit_prefixes: Mapping[IPv6Address, tuple[IPv6Network, ...]] = field(
        default_factory=dict)
    #: Seconds to listen to peers' HELLOs after start before serving mobile nodes and asking
    #: each live peer for its bindings (draft 5.4 "SHOULD wait"; docs/protocol.md 6.5). Should exceed
    #: ``hello_interval``. 0 serves at once.
    boot_wait: float = 15.0
    #: BIU retransmission back-off (docs/protocol.md 6.3): first timeout and the cap, in seconds.
    #: Also used for BIR retransmission.
    biu_initial_timeout: float = 1.0
    biu_max_timeout: float = 32.0
    #: How many BIUs may be unacknowledged towards one peer; further changes are coalesced and
    #: sent, several bindings per BIU, as acknowledgements come back.
    biu_window: int = 64
    #: Packet size (octets) a BIU must fit, IPv6 header and ESP overhead included; at most
    #: :data:`MAX_SYNC_MTU` (a Mobility Header is at most 2,048 octets).
    sync_mtu: int = 1280
    #: Whether the first-ranked live home agent takes over a dead peer's mobile nodes from its
    #: copies (docs/protocol.md 6.6).
    take_over: bool = True
    #: Who takes a dead peer's nodes over: 'first' (the first-ranked live home agent, all of
    #: them) or 'split' (every live home agent its share, :func:`haha.core.switching.share_of`
    #: the home address over the ranked live home agents: each share is decided without
    #: negotiation, and the take-over and its switch requests run on every survivor at once).
    #: Every home agent of a set must use the same value.
    take_over_share: str = TAKE_OVER_FIRST
    #: Address take-over (:mod:`haha.core.addrtakeover`): the home agent that takes over a dead
    #: peer's nodes also holds its home agent address, so nodes that obey no switch request
    #: keep working; this home agent holds its own ``address`` itself, after an authenticated
    #: hand-back from whoever holds it. Every home agent of the prefix must enable it.
    address_takeover: bool = False
    #: What a draining home agent asks its mobile nodes to do: 'spread' (HASR naming the live
    #: peers in turn, best ranked first), 'best' (HASR naming the best-ranked live peer) or
    #: 'discover' (HASR without a desired home agent: the nodes run DHAAD).
    drain: str = DRAIN_SPREAD
    #: The preference advertised while draining, so peers rank this home agent last (in
    #: take-over ranking and in their DHAAD replies). 0 is the lowest value.
    drain_preference: int = 0
    #: How to tell a mobile node to switch: 'hasr' (draft 4.1.5) or 'rfc5142' (MH type 12).
    switch_message: str = SWITCH_HASR
    #: First transmissions of switch requests per second: a take-over of many nodes is spread
    #: over time instead of leaving in one burst (retransmissions then stay spread, jittered).
    switch_rate: float = 4000.0
    #: The longest the back-off after unanswered switch requests may delay a request's first
    #: retransmission, in seconds (unless the measured answer time is longer: that is kept).
    #: The back-off doubles up to ``biu_max_timeout`` while nothing is answered; with this a
    #: lost first request is still repeated within seconds. A request whose node has a packet
    #: waiting in the input queue (answered, only not yet processed: the service asks the
    #: transport) is not repeated then.
    switch_retransmit_cap: float = 4.0
    #: Answer DHAAD requests (RFC 6275 10.5) sent to the home prefix's Home-Agents anycast
    #: address or to ``address``.
    dhaad: bool = True
    #: Defence in depth: drop unprotected HAHA messages in the core as well (the security
    #: policy normally drops them before; draft 5.2 "MUST be ignored").
    peer_protection_required: bool = False
    #: Prefixes announced as Mobile Network Prefix options in HELLO (draft 4.1.1 "if available").
    hello_prefixes: tuple[IPv6Network, ...] = ()
    #: The numbering profile of the draft's messages (docs/protocol.md 1); the core does not encode,
    #: this is carried for the adapter and the in-memory network.
    numbers: NumberProfile = DEFAULT_PROFILE

    def __post_init__(self) -> None:
        _set(self, "address", _address("address", self.address))
        _set(self, "home_prefix", _network("home_prefix", self.home_prefix))
        _choice("kind", self.kind, KINDS)
        _set(self, "haha_address", _address("haha_address", self.haha_address, optional=True))
        _number("preference", self.preference, 0, 0xFFFF, integer=True)
        _number("ha_lifetime", self.ha_lifetime, 1, 65535, integer=True)
        _number("hello_interval", self.hello_interval, 0.1, 65535)
        _flag("send_hello", self.send_hello)
        _number("max_candidates", self.max_candidates, 0, 1 << 20, integer=True)
        _number("hello_misses", self.hello_misses, 0, 1000, integer=True)
        _number("max_binding_lifetime", self.max_binding_lifetime, 4, MAX_SECONDS,
                integer=True)
        _set(self, "peers", _addresses("peers", self.peers))
        for own in {self.address, self.signalling_address}:
            if own in self.peers:
                raise SettingsError("peers", f"{own} is this home agent's own address")
        _set(self, "authorised_peer_prefixes",
             _networks("authorised_peer_prefixes", self.authorised_peer_prefixes))
        _flag("nemo", self.nemo)
        _set(self, "mobile_routers", _prefix_map("mobile_routers", self.mobile_routers))
        _set(self, "implicit_prefixes", _prefix_map("implicit_prefixes", self.implicit_prefixes))
        for name in ("mobile_routers", "implicit_prefixes"):
            for hoa in getattr(self, name):
                if hoa not in self.home_prefix:
                    raise SettingsError(f"{name}[{hoa}]", f"mobile router home address {hoa} "
                                        f"is outside the home prefix {self.home_prefix}")
        _number("boot_wait", self.boot_wait, 0, 3600)
        _number("biu_initial_timeout", self.biu_initial_timeout, 0.001)
        _number("biu_max_timeout", self.biu_max_timeout, self.biu_initial_timeout)
        _number("biu_window", self.biu_window, 1, 4096, integer=True)
        _number("sync_mtu", self.sync_mtu, 1280, MAX_SYNC_MTU, integer=True)
        _flag("take_over", self.take_over)
        _choice("take_over_share", self.take_over_share, TAKE_OVER_SHARES)
        _flag("address_takeover", self.address_takeover)
        if self.address_takeover and self.haha_address in (None, self.address):
            raise SettingsError("address_takeover", "needs a haha_address of its own (the home "
                                "agent address moves, the signalling address stays)")
        _choice("drain", self.drain, DRAIN_MODES)
        _number("drain_preference", self.drain_preference, 0, 0xFFFF, integer=True)
        _choice("switch_message", self.switch_message, SWITCH_MESSAGES)
        _number("switch_rate", self.switch_rate, 0.1, 1e7)
        _number("switch_retransmit_cap", self.switch_retransmit_cap, 0.001, 3600)
        _flag("dhaad", self.dhaad)
        _flag("peer_protection_required", self.peer_protection_required)
        _set(self, "hello_prefixes", _networks("hello_prefixes", self.hello_prefixes))
        if len(self.hello_prefixes) > MAX_HELLO_PREFIXES:
            raise SettingsError("hello_prefixes", f"{len(self.hello_prefixes)} prefixes; a "
                                f"HELLO carries at most {MAX_HELLO_PREFIXES}")
        if len(set(self.hello_prefixes)) != len(self.hello_prefixes):
            raise SettingsError("hello_prefixes", "a prefix is listed twice")
        if not isinstance(self.numbers, NumberProfile):
            raise SettingsError("numbers", f"{self.numbers!r} is not a NumberProfile")

    @property
    def signalling_address(self) -> IPv6Address:
        """The address used towards peers: the HAHA address, else the home agent address."""
        return self.haha_address or self.address

    @property
    def advertises_prefix(self) -> bool:
        """Without a home link every home agent advertises the home prefix (draft 3.2)."""
        return self.kind == NO_HOME_LINK

    @property
    def proxies_nd(self) -> bool:
        """With a home link the primary defends home addresses by proxy ND (draft 3.1)."""
        return self.kind != NO_HOME_LINK


@dataclass(frozen=True)
class MobileNodeSettings:
    """The configuration of one mobile node or mobile router (RFC 6275 11, RFC 3963 5)."""

    #: The home address.
    home_address: IPv6Address
    #: The home prefix (for the Home-Agents anycast address of DHAAD, RFC 6275 11.4.1).
    home_prefix: IPv6Network
    #: Home agent addresses to register with, in order of preference. Empty: discover them with
    #: DHAAD. Also the initial Home Agent list for HASR (draft 5.3 "already recorded").
    home_agents: tuple[IPv6Address, ...] = ()
    #: A mobile router (R flag, RFC 3963) rather than a host.
    mobile_router: bool = False
    #: Mobile Network Prefixes sent in explicit mode (RFC 3963 4.3). Empty with
    #: ``mobile_router``: implicit mode, the home agent knows the prefixes.
    prefixes: tuple[IPv6Network, ...] = ()
    #: Binding lifetime requested, in seconds (the home agent may grant less).
    lifetime: int = 3600
    #: RFC 6275 13 InitialBindackTimeoutFirstReg: the first retransmission timeout of a first
    #: registration with a home agent.
    first_timeout: float = 1.5
    #: RFC 6275 12 INITIAL_BINDACK_TIMEOUT: the first retransmission timeout of a refresh,
    #: a new care-of address or a deregistration.
    initial_timeout: float = 1.0
    #: RFC 6275 12 MAX_BINDACK_TIMEOUT: the back-off cap; retransmission continues at this rate.
    max_timeout: float = 32.0
    #: Give up on a home agent after this many unanswered Binding Updates and try the next one
    #: (or DHAAD): 6 is once the back-off has reached its cap (about 80 s for a first
    #: registration), so a node whose home agent died unseen finds a live one. 0: never give
    #: up (RFC 6275 11.8 allows retrying at the capped rate forever).
    registration_attempts: int = 6
    #: Retransmit a Binding Update with the sequence number it first carried (RFC 6275 11.8:
    #: the node retransmits the message): a home agent that accepted a queued copy answers the
    #: retransmission from its binding, without registering it again (docs/core.md,
    #: "Registration"). False: every retransmission carries a new number, as the deployed
    #: nodes of docs/protocol.md 9 do (each one then costs the home agent a registration).
    retransmit_same_sequence: bool = True
    #: Each Binding Update retransmission timeout is drawn from [T, T * (1 + jitter)], T the
    #: RFC 6275 11.8 value (the back-off doubles T, not the drawn value): never sooner than the
    #: RFC's timeout, and nodes that sent together (a load generator's burst, nodes woken by
    #: one event) do not retransmit together. 0 (the default): exactly T. At most 1.
    retransmit_jitter: float = 0.0
    #: The refresh is due at a point drawn from [R * (1 - jitter), R], R the refresh time
    #: (``refresh_fraction`` of the granted lifetime, or the Binding Refresh Advice): never
    #: later, so that bindings granted together are not refreshed together. 0: exactly R.
    #: At most 0.5.
    refresh_jitter: float = 0.0
    #: RFC 6275 12 INITIAL_DHAAD_TIMEOUT and DHAAD_RETRIES.
    dhaad_timeout: float = 3.0
    dhaad_retries: int = 4
    #: Refresh the binding when this fraction of the granted lifetime has passed (about 95% is
    #: what deployed nodes do, docs/protocol.md 9), or earlier if Binding Refresh Advice says so.
    refresh_fraction: float = 0.95
    #: Send an Alternate Care-of Address option in every Binding Update (deployed nodes do).
    alternate_care_of: bool = True
    #: Obey switch requests (HASR, RFC 5142 Home Agent Switch). False answers them with a
    #: Binding Error, status 2 (unrecognised MH type), as the deployed mobile node stacks do.
    obeys_switch: bool = True
    #: The numbering profile (the HASR's MH type comes from it); carried for the adapter.
    numbers: NumberProfile = DEFAULT_PROFILE

    def __post_init__(self) -> None:
        _set(self, "home_address", _address("home_address", self.home_address))
        _set(self, "home_prefix", _network("home_prefix", self.home_prefix))
        if self.home_address not in self.home_prefix:
            raise SettingsError("home_address", f"home address {self.home_address} is outside "
                                f"the home prefix {self.home_prefix}")
        _set(self, "home_agents", _addresses("home_agents", self.home_agents))
        _flag("mobile_router", self.mobile_router)
        _flag("retransmit_same_sequence", self.retransmit_same_sequence)
        _set(self, "prefixes", _networks("prefixes", self.prefixes))
        if self.prefixes and not self.mobile_router:
            raise SettingsError("prefixes", "only a mobile router has Mobile Network Prefixes "
                                "(mobile_router)")
        _number("lifetime", self.lifetime, 4, MAX_SECONDS, integer=True)
        _number("first_timeout", self.first_timeout, 0.001)
        _number("initial_timeout", self.initial_timeout, 0.001)
        _number("max_timeout", self.max_timeout,
                max(self.first_timeout, self.initial_timeout))
        _number("registration_attempts", self.registration_attempts, 0, integer=True)
        _number("dhaad_timeout", self.dhaad_timeout, 0.001)
        _number("dhaad_retries", self.dhaad_retries, 0, 64, integer=True)
        _number("retransmit_jitter", self.retransmit_jitter, 0.0, 1.0)
        _number("refresh_jitter", self.refresh_jitter, 0.0, 0.5)
        _number("refresh_fraction", self.refresh_fraction, 0.1, 1.0)
        if self.refresh_fraction >= 1.0:
            raise SettingsError("refresh_fraction", "must be below 1 (refresh before expiry)")
        _flag("alternate_care_of", self.alternate_care_of)
        _flag("obeys_switch", self.obeys_switch)
        if not isinstance(self.numbers, NumberProfile):
            raise SettingsError("numbers", f"{self.numbers!r} is not a NumberProfile")
