"""The checks a home agent applies to a Binding Update (RFC 6275 9.5.1, 10.3.1, 10.3.2;
RFC 3963 6.2), as one pure function.

:func:`examine` looks at a decoded Binding Update, the home and care-of addresses it was sent
for, the entry the cache already holds and the home agent's settings, and returns a
:class:`Verdict`: register, deregister, answer a duplicate again, or reject with a status.
Order of the checks: home subnet (132), sequence window (135, carrying the last accepted
number), mobile router operation (140-143), draining (129), deregistration of an unknown
binding (133). The home agent applies the verdict; nothing here changes state.
"""

from enum import StrEnum
from ipaddress import IPv6Address, IPv6Network
from typing import TYPE_CHECKING, NamedTuple

from haha.wire.mh import (
    BA_ACCEPTED,
    BA_FORWARDING_SETUP_FAILED,
    BA_INVALID_PREFIX,
    BA_MR_NOT_PERMITTED,
    BA_NOT_HOME_AGENT,
    BA_NOT_HOME_SUBNET,
    BA_PREFIX_NOT_AUTHORIZED,
    BA_PROHIBITED,
    BA_SEQUENCE_OUT_OF_WINDOW,
    BU_R,
    BindingUpdate,
)

from haha.wire.addresses import address_int

from .seqnum import newer, units

if TYPE_CHECKING:
    from .cache import Binding
    from .settings import HomeAgentSettings


class Action(StrEnum):
    """What the home agent is to do with a Binding Update."""

    REGISTER = "register"
    DEREGISTER = "deregister"
    DUPLICATE = "duplicate"
    REJECT = "reject"


REGISTER = Action.REGISTER
DEREGISTER = Action.DEREGISTER
DUPLICATE = Action.DUPLICATE
REJECT = Action.REJECT


class Verdict(NamedTuple):
    """``action`` is one of REGISTER, DEREGISTER, DUPLICATE, REJECT; ``status`` the BA status;
    ``sequence`` the BA's sequence number (the last accepted one for 135); ``lifetime`` the
    granted lifetime in 4-second units; ``prefixes`` the mobile network prefixes to forward.
    (A named tuple, immutable like the frozen dataclass it was and built in a third of the
    time: one per Binding Update.)"""

    action: Action
    status: int
    sequence: int
    lifetime: int = 0
    prefixes: tuple[IPv6Network, ...] = ()


def invalid_prefix(prefix: IPv6Network, settings: "HomeAgentSettings") -> str | None:
    """Why ``prefix`` cannot be a Mobile Network Prefix (RFC 3963 141), or None."""
    if prefix.prefixlen == 0:
        return "zero length"
    a = prefix.network_address
    if a.is_multicast or a.is_link_local or a.is_loopback or a.is_unspecified or a.is_site_local:
        return "not a global unicast prefix"
    if settings.home_prefix.subnet_of(prefix):
        return "covers the home prefix"
    if settings.address in prefix:
        return "holds the home agent address"
    return None


def authorised(prefix: IPv6Network, home_address: IPv6Address,
               settings: "HomeAgentSettings") -> bool:
    """Whether mobile router ``home_address`` may register ``prefix`` (RFC 3963 6.2)."""
    for allowed in settings.mobile_routers.get(home_address, ()):
        if prefix.subnet_of(allowed):
            return True
    return prefix in settings.implicit_prefixes.get(home_address, ())


def examine(settings: "HomeAgentSettings", bu: BindingUpdate, home_address: IPv6Address,
            care_of: IPv6Address, held: "Binding | None", draining: bool = False) -> Verdict:
    """The :class:`Verdict` on Binding Update ``bu`` for ``home_address`` at ``care_of``.

    ``held`` is the cache entry of the home address (primary or copy) or None.
    """
    seq = bu.sequence
    # Addresses compared as integers: IPv6Address's __eq__ and IPv6Network's __contains__ are
    # Python calls, several per Binding Update (decoded addresses carry no scope).
    home = settings.home_prefix
    if type(home_address) is not IPv6Address:
        return Verdict(REJECT, BA_NOT_HOME_SUBNET, seq)
    hoa = address_int(home_address)
    if hoa & address_int(home.netmask) != address_int(home.network_address):
        return Verdict(REJECT, BA_NOT_HOME_SUBNET, seq)
    coa = address_int(care_of)
    deregistration = bu.lifetime == 0 or coa == hoa
    if held is not None:
        if seq == held.sequence and held.primary is None and address_int(held.care_of) == coa \
                and held.flags == bu.flags and not deregistration:
            # The same Binding Update again (duplicated by the network): answer it again.
            return Verdict(DUPLICATE, BA_ACCEPTED, seq, units(held.lifetime), held.prefixes)
        if not newer(seq, held.sequence):
            return Verdict(REJECT, BA_SEQUENCE_OUT_OF_WINDOW, held.sequence)
    if deregistration:
        if held is None:
            return Verdict(REJECT, BA_NOT_HOME_AGENT, seq)
        return Verdict(DEREGISTER, BA_ACCEPTED, seq)
    prefixes: tuple[IPv6Network, ...] = ()
    if bu.flags & BU_R:
        if not settings.nemo or (home_address not in settings.mobile_routers
                                 and home_address not in settings.implicit_prefixes):
            return Verdict(REJECT, BA_MR_NOT_PERMITTED, seq)
        prefixes = bu.prefixes
        if prefixes:
            for p in prefixes:
                if invalid_prefix(p, settings):
                    return Verdict(REJECT, BA_INVALID_PREFIX, seq)
            for p in prefixes:
                if not authorised(p, home_address, settings):
                    return Verdict(REJECT, BA_PREFIX_NOT_AUTHORIZED, seq)
        else:
            prefixes = settings.implicit_prefixes.get(home_address, ())
            if not prefixes:
                return Verdict(REJECT, BA_FORWARDING_SETUP_FAILED, seq)
    if draining:
        return Verdict(REJECT, BA_PROHIBITED, seq)
    cap = units(settings.max_binding_lifetime)
    life = bu.lifetime if bu.lifetime < cap else cap
    return Verdict(REGISTER, BA_ACCEPTED, seq, life, prefixes)
