"""Which signalling must arrive protected, from whom, and what to do with the rest.

``SecurityPolicy.decide(next_header, message_type, protected, source_known, peer_role)`` says
whether an inbound message is processed or dropped, and why. The caller (``haha.protocol``) asks
after decoding and before the core sees the message: ``protected`` is whether it came out of
``ISecurityAssociations.unprotect``, ``peer_role`` the role of that SA's peer
(``SecurityAssociationDatabase.role_of``), ``source_known`` whether the sender is a configured,
authorised peer of the right kind (for HAHA messages: an authorised home agent, draft 5.2 and
5.4). A dropped message is counted here by reason and never answered.

``must_protect(next_header, message_type)`` says whether an outbound message goes in ESP.

The table (``docs/security.md`` gives the reasons):

=========================  ==========  ==============  ============
message                    protected   sender's role   known source
=========================  ==========  ==============  ============
MH HELLO, BIR, BIU, BIA    yes         home agent      yes
MH HASR, HAS (12)          yes         home agent      yes
MH BU (5)                  yes         mobile node     yes
MH BA (6), BRR (0)         yes         home agent      yes
MH BE (7), other MH types  no          any             no
ICMPv6 MPS (146)           yes         mobile node     yes
ICMPv6 MPA (147)           yes         home agent      yes
ICMPv6 DHAAD (144, 145)    no          any             no
other ICMPv6, IPv6-in-IPv6 no          any             no
=========================  ==========  ==============  ============

``security = none`` is a lab mode: ``SecurityPolicy(mode="none", lab=True)``; without
``lab=True`` it is refused. It waives protection (and with it the role check) but not the
known-source check, and :attr:`SecurityPolicy.warning` holds the sentence the daemon must log
loudly at start-up.
"""

from typing import Any, NamedTuple

from zope.interface import implementer

from ..interfaces import ICounterSource

from ..wire.numbers import (
    DEFAULT_PROFILE,
    ICMP6_DHAAD_REPLY,
    ICMP6_DHAAD_REQUEST,
    ICMP6_MPA,
    ICMP6_MPS,
    IPPROTO_ICMPV6,
    IPPROTO_MH,
    MH_BA,
    MH_BE,
    MH_BRR,
    MH_BU,
    MH_HAS,
    NumberProfile,
)
from .errors import (
    UNKNOWN_SOURCE,
    UNPROTECTED,
    WRONG_PEER,
    SecurityConfigError,
    SecurityError,
)
from .sadb import HOME_AGENT, MOBILE_NODE

MODES = ("esp", "none")
POLICY_REASONS = (UNPROTECTED, WRONG_PEER, UNKNOWN_SOURCE)

LAB_WARNING = (
    "SECURITY DISABLED (security = none, lab mode): HAHA messages, Binding Updates, Binding "
    "Acknowledgements and Home Agent Switch Requests are sent and accepted WITHOUT IPsec ESP. "
    "Anyone who can send a packet to this node can forge bindings and take over mobile nodes' "
    "traffic. Never run this outside an isolated lab."
)


class Rule(NamedTuple):
    """What one message type needs: ESP, the sender's SA role (None: any), a known source."""

    protected: bool
    role: str | None = None
    known_source: bool = False
    name: str = ""


class Decision(NamedTuple):
    """``process`` or not; ``reason`` (a :mod:`haha.security.errors` reason) when not."""

    process: bool
    reason: str | None = None

    def raise_if_dropped(self) -> None:
        """Raise the :class:`SecurityError` of a drop decision (for callers that prefer it)."""
        if not self.process:
            assert self.reason is not None, "a drop decision names its reason"
            raise SecurityError(self.reason)


PROCESS = Decision(True)
_OPEN = Rule(False)


def rules_for(profile: NumberProfile = DEFAULT_PROFILE) -> dict[tuple[int, int], Rule]:
    """The policy table for a numbering profile: ``{(next_header, type): Rule}``."""
    ha = Rule(True, HOME_AGENT, True)
    table = {
        (IPPROTO_MH, profile.hello): ha._replace(name="HELLO"),
        (IPPROTO_MH, profile.bir): ha._replace(name="BIR"),
        (IPPROTO_MH, profile.biu): ha._replace(name="BIU"),
        (IPPROTO_MH, profile.bia): ha._replace(name="BIA"),
        (IPPROTO_MH, profile.hasr): ha._replace(name="HASR"),
        (IPPROTO_MH, MH_HAS): ha._replace(name="HAS"),
        (IPPROTO_MH, MH_BU): Rule(True, MOBILE_NODE, True, "BU"),
        (IPPROTO_MH, MH_BA): ha._replace(name="BA"),
        (IPPROTO_MH, MH_BRR): ha._replace(name="BRR"),
        (IPPROTO_MH, MH_BE): Rule(False, None, False, "BE"),
        (IPPROTO_ICMPV6, ICMP6_MPS): Rule(True, MOBILE_NODE, True, "MPS"),
        (IPPROTO_ICMPV6, ICMP6_MPA): ha._replace(name="MPA"),
        (IPPROTO_ICMPV6, ICMP6_DHAAD_REQUEST): Rule(False, None, False, "DHAAD request"),
        (IPPROTO_ICMPV6, ICMP6_DHAAD_REPLY): Rule(False, None, False, "DHAAD reply"),
    }
    return table


@implementer(ICounterSource)
class SecurityPolicy:
    """The inbound/outbound protection policy (module docstring).

    ``mode`` is ``esp`` (the default) or ``none``; ``none`` needs ``lab=True``. ``counters``
    maps each drop reason to a count.
    """

    def __init__(self, profile: NumberProfile = DEFAULT_PROFILE, mode: str = "esp",
                 lab: bool = False) -> None:
        if mode not in MODES:
            raise SecurityConfigError(f"security = {mode!r}: expected one of {', '.join(MODES)}")
        if mode == "none" and lab is not True:
            raise SecurityConfigError(
                "security = none disables IPsec for all signalling and is only allowed with the "
                "explicit lab flag (lab = true); it must never be used in production"
            )
        self.mode = mode
        self.lab = mode == "none"
        self.profile = profile
        self._rules = rules_for(profile)
        self.counters = dict.fromkeys(POLICY_REASONS, 0)

    @property
    def warning(self) -> str | None:
        """The start-up warning the daemon must log loudly, or None when ESP is enforced."""
        return LAB_WARNING if self.lab else None

    def rule(self, next_header: int, message_type: int) -> Rule:
        """The :class:`Rule` for a message (unlisted messages need nothing)."""
        return self._rules.get((next_header, message_type), _OPEN)

    def must_protect(self, next_header: int, message_type: int) -> bool:
        """Whether an outbound message of this type goes in ESP (never in lab mode)."""
        if self.lab:
            return False
        return self._rules.get((next_header, message_type), _OPEN).protected

    def decide(self, next_header: int, message_type: int, protected: bool, source_known: bool,
               peer_role: str | None = None) -> Decision:
        """Process or drop an inbound message; drops are counted by reason.

        Checks, in order: ESP where required (``unprotected``; waived in lab mode), the role of
        the protecting SA's peer where the message has one (``wrong-peer``; a protected message
        with no role given is refused too), then a known source where required
        (``unknown-source``, which lab mode keeps).
        """
        rule = self._rules.get((next_header, message_type), _OPEN)
        reason = None
        if rule.protected and not self.lab:
            if not protected:
                reason = UNPROTECTED
            elif peer_role != rule.role:
                reason = WRONG_PEER
        if reason is None and rule.known_source and not source_known:
            reason = UNKNOWN_SOURCE
        if reason is None:
            return PROCESS
        self.counters[reason] += 1
        return Decision(False, reason)

    def describe(self) -> list[dict[str, Any]]:
        """The table as a list of dicts (for documentation and the control interface)."""
        return [
            {"next_header": nh, "type": t, "message": r.name, "protected": r.protected,
             "role": r.role, "known_source": r.known_source}
            for (nh, t), r in sorted(self._rules.items())
        ]
