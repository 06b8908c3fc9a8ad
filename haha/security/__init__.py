"""Security for haha's signalling: ESP with AES-GCM, manual keys, policy and rate limiting.

The draft requires every HAHA message and every BU/BA/HASR to travel in IPsec ESP and a home
agent to drop messages from unknown sources silently. This package does that in user space:

- :mod:`haha.security.esp`: ESP transport mode (RFC 4303) with AES-GCM (RFC 4106), byte for byte
  what Linux's ``rfc4106(gcm(aes))`` sends and accepts;
- :mod:`haha.security.sadb`: the SA database (:class:`SecurityAssociationDatabase`, an
  ``ISecurityAssociations``) built from :class:`SaSpec` records;
- :mod:`haha.security.keys`: key files (mode 0600, checked), generation
  (``python -m haha.security.keys generate FILE``) and HKDF derivation of per-pair SAs;
- :mod:`haha.security.policy`: which messages must arrive protected and from whom;
- :mod:`haha.security.ratelimit`: per-source token buckets in bounded memory;
- :mod:`haha.security.admission`: separate budgets for authenticated and unauthenticated input,
  and for what the daemon answers to the latter.

``docs/security.md`` explains the choices and how to reproduce the key derivation.
"""

from typing import Any

from .admission import Admission, AdmissionSettings
from .errors import REASONS, KeyFileError, SecurityConfigError, SecurityError
from .policy import Decision, SecurityPolicy
from .ratelimit import RateLimiter
from .sadb import HOME_AGENT, MOBILE_NODE, SaSpec, SecurityAssociationDatabase

__all__ = [
    "Admission",
    "AdmissionSettings",
    "REASONS",
    "HOME_AGENT",
    "MOBILE_NODE",
    "Decision",
    "KeyFileError",
    "RateLimiter",
    "SaSpec",
    "SecurityAssociationDatabase",
    "SecurityConfigError",
    "SecurityError",
    "SecurityPolicy",
    "derive_pair",
    "derive_sa",
    "load_key_file",
    "load_sa_blob",
    "load_secret",
    "generate_key_file",
]

_KEYS = {"derive_pair", "derive_sa", "load_key_file", "load_sa_blob", "load_secret",
         "generate_key_file"}


def __getattr__(name: str) -> Any:
    # haha.security.keys is imported on first use, so that ``python -m haha.security.keys``
    # does not find it already imported by this package.
    if name in _KEYS:
        from . import keys

        return getattr(keys, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
