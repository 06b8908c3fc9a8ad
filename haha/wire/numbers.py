"""Protocol numbers, fixed and configurable.

IANA never assigned numbers to the draft's messages and options, so the five Mobility Header
types and the draft's two mobility options come from a :class:`NumberProfile`. The default
profile ``haha-00`` (``../docs/protocol.md``) keeps clear of every assigned number; the draft's
own ``0xa`` for the BCE Information option collides with an assigned option and is refused.
"""

from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from .errors import ProfileError

# IPv6 next-header values (IANA "Assigned Internet Protocol Numbers").
IPPROTO_HOPOPTS = 0
IPPROTO_IPV6 = 41  # IPv6-in-IPv6 (RFC 2473)
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_MH = 135

# Mobility Header types assigned by IANA and used here.
MH_BRR = 0  # Binding Refresh Request, RFC 6275 6.1.2
MH_HOTI = 1
MH_COTI = 2
MH_HOT = 3
MH_COT = 4
MH_BU = 5  # Binding Update, RFC 6275 6.1.7
MH_BA = 6  # Binding Acknowledgement, RFC 6275 6.1.8
MH_BE = 7  # Binding Error, RFC 6275 6.1.9
MH_HAS = 12  # Home Agent Switch, RFC 5142
#: MH types 0-23 are assigned (IANA "Mobility Header Types").
MH_ASSIGNED = range(0, 24)

# Mobility options assigned by IANA and used here (RFC 6275 6.2, RFC 3963 4.3).
OPT_PAD1 = 0
OPT_PADN = 1
OPT_BRA = 2  # Binding Refresh Advice
OPT_ALT_COA = 3  # Alternate Care-of Address
OPT_NONCE = 4  # Nonce Indices
OPT_AUTH = 5  # Binding Authorization Data
#: Mobility options 0-70 are assigned (IANA "Mobility Options").
OPT_ASSIGNED = range(0, 71)

# The Home Address destination option (RFC 6275 6.3) and type 2 routing header (6.4).
DSTOPT_PAD1 = 0
DSTOPT_PADN = 1
DSTOPT_HOME_ADDRESS = 0xC9
ROUTING_TYPE_2 = 2

# ICMPv6 (RFC 4443, RFC 4861, RFC 6275 6.5-6.8).
ICMP6_PARAM_PROB = 4
ICMP6_ROUTER_SOLICIT = 133
ICMP6_ROUTER_ADVERT = 134
ICMP6_NEIGHBOR_SOLICIT = 135
ICMP6_NEIGHBOR_ADVERT = 136
ICMP6_DHAAD_REQUEST = 144
ICMP6_DHAAD_REPLY = 145
ICMP6_MPS = 146
ICMP6_MPA = 147

# Neighbour Discovery options (RFC 4861 4.6, RFC 6275 7.4/7.5).
ND_OPT_SOURCE_LLADDR = 1
ND_OPT_TARGET_LLADDR = 2
ND_OPT_PREFIX_INFO = 3
ND_OPT_MTU = 5
ND_OPT_ADV_INTERVAL = 7
ND_OPT_HOME_AGENT_INFO = 8


@dataclass(frozen=True)
class NumberProfile:
    """The numbers of the draft's messages and options; every value may be overridden.

    Construct through :meth:`make` (or :func:`profile`), which checks the profile: no value may
    reuse an assigned number of its space (unless ``allow_assigned`` says which) nor another value
    of the profile.
    """

    name: str = "haha-00"
    hello: int = 200  # draft 4.1.1
    bir: int = 201  # draft 4.1.2
    biu: int = 202  # draft 4.1.3
    bia: int = 203  # draft 4.1.4
    hasr: int = 204  # draft 4.1.5
    opt_ip_address: int = 200  # draft 4.2.1 (FMIPv6's IP Address option, new sub-types 3, 4)
    opt_bce_info: int = 201  # draft 4.2.3 (the draft's 0xa collides with an assigned option)
    opt_mnp: int = 6  # RFC 3963 4.3, assigned: the only profile value that may be assigned
    opt_esp_state: int = 202  # haha's extension: ESP state of a node, for address take-over
    opt_binding_digest: int = 203  # haha's extension: anti-entropy digest in HELLO (docs/protocol.md)

    MESSAGE_FIELDS = ("hello", "bir", "biu", "bia", "hasr")
    OPTION_FIELDS = ("opt_ip_address", "opt_bce_info", "opt_mnp", "opt_esp_state",
                     "opt_binding_digest")

    @classmethod
    def make(cls, **values: Any) -> "NumberProfile":
        """Build and check a profile. Raises :class:`ProfileError` naming the offending key."""
        known = {f.name for f in fields(cls)}
        for key in values:
            if key not in known:
                raise ProfileError(f"unknown number {key!r}; known: {', '.join(sorted(known))}")
        p = cls(**values)
        p.check()
        return p

    @cached_property
    def codec_tables(self) -> dict[str, Any]:
        """Lookup tables the codec derives from this profile, filled on first use and kept with
        the profile (not a field: no part of its value, equality or hash)."""
        return {}

    def check(self) -> None:
        """Raise :class:`ProfileError` for a number out of range, reused or assigned."""
        for space, names, assigned, allowed in (
            ("Mobility Header type", self.MESSAGE_FIELDS, MH_ASSIGNED, ()),
            ("mobility option", self.OPTION_FIELDS, OPT_ASSIGNED, ("opt_mnp",)),
        ):
            seen: dict[int, str] = {}
            for key in names:
                value = getattr(self, key)
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                    raise ProfileError(f"{key} = {value!r}: a {space} is an integer 0-255")
                if value in seen:
                    raise ProfileError(
                        f"{key} = {value} reuses the {space} already given to {seen[value]}"
                    )
                if key not in allowed and value in assigned:
                    raise ProfileError(
                        f"{key} = {value} is an IANA-assigned {space} "
                        f"({assigned.start}-{assigned.stop - 1} are taken)"
                    )
                if space == "mobility option" and value in (OPT_PAD1, OPT_PADN):
                    raise ProfileError(f"{key} = {value} is a padding option")
                seen[value] = key
        if self.opt_mnp != 6 and self.opt_mnp in OPT_ASSIGNED:
            raise ProfileError(f"opt_mnp = {self.opt_mnp} is assigned to another option")


DEFAULT_PROFILE = NumberProfile.make()
