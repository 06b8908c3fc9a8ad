"""Pure codecs for everything haha sends or receives: no sockets, reactor, clock or logging.

- :mod:`.mh`: Mobility Header messages (RFC 6275, RFC 3963, RFC 5142, the draft's five).
- :mod:`.options`: mobility options.
- :mod:`.ipv6`: the IPv6 header chain (Home Address option, type 2 routing header).
- :mod:`.icmpv6`: DHAAD, Mobile Prefix Solicitation/Advertisement, Router Advertisement.
- :mod:`.numbers`: fixed numbers and the configurable :class:`NumberProfile`.

Every decoder raises :class:`WireError` and nothing else for malformed input.
"""

from .errors import ProfileError, WireError
from .numbers import DEFAULT_PROFILE, NumberProfile

__all__ = ["DEFAULT_PROFILE", "NumberProfile", "ProfileError", "WireError"]
