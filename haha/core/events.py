"""The names of the events the machines emit, each with the level it is logged at.

An :class:`haha.core.effects.Event` carries a name from :class:`EventName`; the adapter counts
it (``event.<name>``), logs it at the member's :attr:`EventName.level` and passes it to
observers. The members are ``str``-valued (:class:`enum.StrEnum`): a member equals, hashes,
formats and serialises as its name, so code that still compares ``event.name`` with a string,
counters keyed by it and log consumers all see ``binding-created`` either way. An emitter
converts by replacing the string with the member::

    out.append(Event("binding-created", home_address=hoa))          # before
    out.append(Event(EventName.BINDING_CREATED, home_address=hoa))  # after

The table in docs/core.md ("Events") lists every member with its level, fields and meaning;
tests/test_events.py checks that it matches this module and that every member is emitted
somewhere in haha/ (and nothing else is).
"""

from enum import StrEnum


class Level(StrEnum):
    """The log level of an event (a key of :data:`haha.logging.LEVELS`)."""

    DEBUG = "debug"
    INFO = "info"


class EventName(StrEnum):
    """Every event name, with its log level (``EventName.PEER_UP.level``)."""

    level: Level

    def __new__(cls, value: str, level: Level = Level.DEBUG) -> "EventName":
        member = str.__new__(cls, value)
        member._value_ = value
        member.level = level
        return member

    # -- both machines -----------------------------------------------------------------------
    DROPPED = "dropped"
    STATE = "state"

    # -- home agent: lifecycle ---------------------------------------------------------------
    STARTED = "started", Level.INFO
    SERVING = "serving", Level.INFO
    STOPPED = "stopped", Level.INFO
    DRAIN_STARTED = "drain-started", Level.INFO
    DRAIN_COMPLETE = "drain-complete", Level.INFO
    RESUMED = "resumed"
    PREFERENCE = "preference"

    # -- home agent: bindings ----------------------------------------------------------------
    BINDING_CREATED = "binding-created", Level.INFO
    BINDING_UPDATED = "binding-updated"
    BINDING_DELETED = "binding-deleted", Level.INFO
    BINDING_EXPIRED = "binding-expired", Level.INFO
    BINDING_RESTORED = "binding-restored"
    COPY_CREATED = "copy-created"
    PRIMARY_LOST = "primary-lost", Level.INFO
    ADDRESS_CONFLICT = "address-conflict", Level.INFO

    # -- home agent: peers and synchronisation -----------------------------------------------
    PEER_KNOWN = "peer-known"
    PEER_FORGOTTEN = "peer-forgotten"
    PEER_REFUSED = "peer-refused"
    PEER_UP = "peer-up", Level.INFO
    PEER_CHANGED = "peer-changed"
    PEER_RESTARTED = "peer-restarted"
    PEER_DOWN = "peer-down", Level.INFO
    TAKE_OVER = "take-over", Level.INFO
    BULK_SYNC_COMPLETE = "bulk-sync-complete", Level.INFO
    BIU_REJECTED = "biu-rejected"
    ANTI_ENTROPY_REPAIR = "anti-entropy-repair"

    # -- home agent: switching ---------------------------------------------------------------
    SWITCH_REQUESTED = "switch-requested", Level.INFO
    SWITCH_UNANSWERED = "switch-unanswered"
    SWITCH_UNSUPPORTED = "switch-unsupported"

    # -- home agent: address take-over -------------------------------------------------------
    ADDRESS_TAKEN_OVER = "address-taken-over"
    ADDRESS_RELEASED = "address-released"
    ADDRESS_HELD = "address-held"
    ADDRESS_HANDBACK_REQUESTED = "address-handback-requested"
    ADDRESS_HANDBACK_CONFIRMED = "address-handback-confirmed"
    BINDINGS_HANDED_BACK = "bindings-handed-back"

    # -- mobile node -------------------------------------------------------------------------
    REGISTERED = "registered", Level.INFO
    REGISTRATION_REJECTED = "registration-rejected", Level.INFO
    REGISTRATION_TIMEOUT = "registration-timeout"
    DISCOVERY_FAILED = "discovery-failed", Level.INFO
    BINDING_LOST = "binding-lost"
    BINDING_ERROR = "binding-error"
    SWITCH_RECEIVED = "switch-received", Level.INFO
    SWITCH_REFUSED = "switch-refused"
    DEREGISTERED = "deregistered", Level.INFO
    DEREGISTRATION_TIMEOUT = "deregistration-timeout"


#: The names logged at info level; every other event is logged at debug (and still counted).
INFO_EVENTS: frozenset[str] = frozenset(e.value for e in EventName if e.level is Level.INFO)


def level_of(name: str) -> Level:
    """The level ``name`` is logged at; an unknown name (an embedder's own) at debug."""
    try:
        return EventName(name).level
    except ValueError:
        return Level.DEBUG
