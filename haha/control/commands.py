"""Every control command of each role, with its arguments: one table for help and validation.

The control server refuses a command its target does not know and any argument a command does
not take, before the target sees the request (``drain x=1`` is an error, not a drain);
``haha-ctl`` checks the same table before it connects and prints it in its help. A daemon's
``help`` command answers the table of its own role.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    required: tuple[tuple[str, str], ...] = ()  # (key, placeholder) pairs
    optional: tuple[tuple[str, str], ...] = ()

    def usage(self) -> str:
        """``name key=VALUE [key=VALUE]``, as haha-ctl writes it."""
        words = [self.name] + [f"{k}={v}" for k, v in self.required]
        words += [f"[{k}={v}]" for k, v in self.optional]
        return " ".join(words)

    def as_json(self) -> dict[str, str]:
        """The entry ``help`` answers with."""
        return {"command": self.name, "usage": self.usage(), "summary": self.summary}


_QUERIES = (
    Command("status", "role, state and the main facts of the daemon"),
    Command("bindings", "the binding cache (home agent: primaries and copies)"),
    Command("peers", "the live peer home agents (mobile node: the home agents it knows)"),
    Command("counters", "every counter and gauge (the numbers /metrics serves)"),
    Command("help", "the commands this daemon answers"),
)

#: What the control server answers itself, for the whole process (haha.control.memory).
_PROCESS = (
    Command("memory", "the process's memory; with allocation tracing on, its top allocation "
            "sites and their growth since a mark",
            optional=(("top", "N"), ("by", "line/file"), ("mark", "yes/no"))),
)

HOME_AGENT = _QUERIES + (
    Command("switch", "move a mobile node to a peer (Home Agent Switch Request)",
            required=(("home-address", "ADDRESS"),), optional=(("target", "ADDRESS"),)),
    Command("drain", "hand every primary binding to the peers and accept no new ones"),
    Command("resume", "accept registrations again after a drain"),
    Command("preference", "set this home agent's preference (announced to the peers)",
            required=(("value", "0-65535"),)),
    Command("forwarding", "what the forwarding backend installed"),
) + _PROCESS

MOBILE_NODE = _QUERIES + (
    Command("move", "the node moved: register this care-of address",
            required=(("care-of", "ADDRESS"),)),
    Command("home", "the node is back on its home link: deregister"),
    Command("tunnel", "the node's tunnel: end points, links and the kernel's packet counts"),
) + _PROCESS

ROLES = {"home-agent": HOME_AGENT, "mobile-node": MOBILE_NODE, "mobile-router": MOBILE_NODE}

# Every command of any role; a name shared by two roles takes the same arguments in both.
ALL = tuple({c.name: c for c in HOME_AGENT + MOBILE_NODE}.values())

QUERIES = tuple(c.name for c in _QUERIES if c.name != "help")
#: Commands the control server answers without asking its target.
PROCESS = tuple(c.name for c in _PROCESS)


def for_role(role: str | None) -> tuple[Command, ...] | None:
    """The commands of a daemon whose ``status()["role"]`` is ``role`` (None: unknown role)."""
    return ROLES.get(role) if role is not None else None


def check(commands: tuple[Command, ...], name: str, arguments: Mapping[str, Any]) -> None:
    """Raise ValueError naming the mistake unless ``name`` with ``arguments`` (a dict) is one
    of ``commands``."""
    known = {c.name: c for c in commands}
    command = known.get(name)
    if command is None:
        raise ValueError(f"unknown command {name!r}; known: {', '.join(known)}")
    allowed = {k for k, _ in command.required + command.optional}
    unknown = sorted(set(arguments) - allowed)
    if unknown:
        if not allowed:
            raise ValueError(f"{name} takes no arguments (got {', '.join(unknown)})")
        raise ValueError(f"{name}: unknown argument {unknown[0]!r}; usage: {command.usage()}")
    for key, _ in command.required:
        if not arguments.get(key):
            raise ValueError(f"{name} needs {key}=...; usage: {command.usage()}")
    for key, value in arguments.items():
        if not isinstance(value, str):
            raise ValueError(f"{name}: argument {key} must be a string")
