"""The home agent's life cycle as an explicit, total table (sans-IO).

States (:class:`HAState`): ``created -> booting -> serving <-> draining -> stopped``. While
booting (draft 5.4 "SHOULD wait") the home agent listens to HELLOs and learns bindings but does
not serve mobile nodes; ``serving`` and ``draining`` are the two states that serve (a draining
home agent refuses new registrations and asks its mobile nodes to switch away).

Inputs (:class:`HAInput`) are the operator and discovery calls, the timers (``tick``, and
``boot-over`` when the boot wait ends) and one input per kind of message the home agent can
receive (``other`` for every message type it has no use for).

:data:`TRANSITIONS` maps every (state, input) pair to one :class:`Entry`:

- :data:`ACCEPT`: the handler named runs; the state after it is one of ``next`` (the machine
  checks it: an input that moves the machine anywhere else is a bug, raised as
  :class:`TableViolation`);
- :data:`REFUSE`: an operator call that the state does not allow: :class:`NotServing` is
  raised and nothing changes;
- :data:`DROP`: a message the state has no use for: counted as ``dropped:<reason>``, an
  ``Event(EventName.DROPPED)`` returned, nothing else;
- :data:`IGNORE`: nothing to do (a timer before start or after stop); no effect.

The table is total (a test walks every pair against the machine) and is the only place the
life cycle is written down: :class:`haha.core.homeagent.HomeAgent` changes state only through
it.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Dict, FrozenSet, Optional, Tuple

from haha.wire.icmpv6 import DhaadRequest, RouterAdvertisement
from haha.wire.mh import (
    BindingError,
    BindingInfoAck,
    BindingInfoRequest,
    BindingInfoUpdate,
    BindingUpdate,
    HaHello,
    UnknownMessage,
)


class HAState(StrEnum):
    """Life-cycle state of a home agent (equal to its lower-case name as a string)."""

    CREATED = "created"
    BOOTING = "booting"
    SERVING = "serving"
    DRAINING = "draining"
    STOPPED = "stopped"


class HAInput(StrEnum):
    """Everything that can happen to a home agent."""

    # operator and discovery calls
    START = "start"
    STOP = "stop"
    DRAIN = "drain"
    RESUME = "resume"
    SWITCH = "switch"
    SET_PREFERENCE = "set-preference"
    ADD_PEER = "add-peer"
    REMOVE_PEER = "remove-peer"
    REQUEST_BINDING = "request-binding"
    # timers
    TICK = "tick"
    BOOT_OVER = "boot-over"
    # messages
    BU = "bu"
    HELLO = "hello"
    BIU = "biu"
    BIA = "bia"
    BIR = "bir"
    DHAAD = "dhaad"
    RA = "ra"
    BE = "be"
    UNKNOWN_MH = "unknown-mh"
    OTHER = "other"


class NotServing(RuntimeError):
    """An operator request that the home agent cannot honour in its current state."""


class TableViolation(AssertionError):
    """A handler left the machine in a state its table entry does not allow (a bug)."""


ACCEPT = "accept"
REFUSE = "refuse"
DROP = "drop"
IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class Entry:
    """What one input does in one state: ``kind`` is :data:`ACCEPT` (``handler`` names the
    :class:`~haha.core.homeagent.HomeAgent` method, ``next`` the states it may leave the
    machine in), :data:`REFUSE`, :data:`DROP` (``reason`` is counted) or :data:`IGNORE`."""

    kind: str
    handler: Optional[str] = None
    next: FrozenSet[HAState] = frozenset()
    reason: Optional[str] = None


#: The message type each message input stands for (any other type is :attr:`HAInput.OTHER`).
MESSAGE_INPUTS: Dict[type, HAInput] = {
    BindingUpdate: HAInput.BU,
    HaHello: HAInput.HELLO,
    BindingInfoUpdate: HAInput.BIU,
    BindingInfoAck: HAInput.BIA,
    BindingInfoRequest: HAInput.BIR,
    DhaadRequest: HAInput.DHAAD,
    RouterAdvertisement: HAInput.RA,
    BindingError: HAInput.BE,
    UnknownMessage: HAInput.UNKNOWN_MH,
}

#: The handler of each message input in a state that serves it.
MESSAGE_HANDLERS: Dict[HAInput, str] = {
    HAInput.BU: "_on_bu",
    HAInput.HELLO: "_on_hello",
    HAInput.BIU: "_on_biu",
    HAInput.BIA: "_on_bia",
    HAInput.BIR: "_on_bir",
    HAInput.DHAAD: "_on_dhaad",
    HAInput.RA: "_on_ra",
    HAInput.BE: "_on_be",
    HAInput.UNKNOWN_MH: "_on_unknown",
}

RUNNING = frozenset({HAState.BOOTING, HAState.SERVING, HAState.DRAINING})
SERVES = frozenset({HAState.SERVING, HAState.DRAINING})


def _accept(handler: str, *next_states: HAState) -> Entry:
    return Entry(ACCEPT, handler, frozenset(next_states))


def _table() -> Dict[Tuple[HAState, HAInput], Entry]:
    S, I = HAState, HAInput
    refuse = Entry(REFUSE)
    t: Dict[Tuple[HAState, HAInput], Entry] = {}
    for s in S:
        stay = (s,)
        running = s in RUNNING
        # Operator and discovery calls that every state accepts (they change no state).
        t[(s, I.SET_PREFERENCE)] = _accept("_set_preference_call", *stay)
        t[(s, I.ADD_PEER)] = _accept("_add_peer", *stay)
        t[(s, I.REMOVE_PEER)] = _accept("_remove_peer", *stay)
        t[(s, I.REQUEST_BINDING)] = _accept("_request_binding", *stay)
        t[(s, I.START)] = refuse
        t[(s, I.DRAIN)] = refuse
        t[(s, I.RESUME)] = refuse
        t[(s, I.SWITCH)] = _accept("_switch_call", *stay) if s in SERVES else refuse
        t[(s, I.STOP)] = _accept("_stop", S.STOPPED)
        t[(s, I.TICK)] = _accept("_tick", *stay) if running else Entry(IGNORE)
        if s is S.BOOTING:  # the boot wait may end in this tick
            t[(s, I.TICK)] = _accept("_tick", S.BOOTING, S.SERVING)
        t[(s, I.BOOT_OVER)] = Entry(IGNORE)
        for i, handler in MESSAGE_HANDLERS.items():
            t[(s, i)] = _accept(handler, *stay) if running else Entry(DROP, reason="not-running")
        t[(s, I.OTHER)] = Entry(DROP, reason="unexpected" if running else "not-running")
    t[(S.CREATED, I.START)] = _accept("_start", S.BOOTING, S.SERVING)
    t[(S.CREATED, I.STOP)] = _accept("_stop_unstarted", S.STOPPED)
    t[(S.STOPPED, I.STOP)] = _accept("_stop_unstarted", S.STOPPED)
    t[(S.BOOTING, I.BOOT_OVER)] = _accept("_boot_over", S.SERVING)
    # A booting home agent learns (HELLO, BIU, BIA, BIR) but serves no mobile node.
    t[(S.BOOTING, I.BU)] = Entry(DROP, reason="booting")
    t[(S.BOOTING, I.DHAAD)] = Entry(DROP, reason="dhaad-not-served")
    t[(S.SERVING, I.DRAIN)] = _accept("_drain", S.DRAINING)
    t[(S.DRAINING, I.RESUME)] = _accept("_resume", S.SERVING)
    return t


#: Every (state, input) pair: an :class:`Entry`.
TRANSITIONS: Dict[Tuple[HAState, HAInput], Entry] = _table()
