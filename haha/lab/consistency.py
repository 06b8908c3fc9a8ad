"""Whether the bindings the home agents report agree with each other and with the nodes.

:func:`check_consistency` compares what the home agents report through their control sockets
(``bindings``) with what the nodes believe: each node has exactly one primary, a copy at every
other live home agent, every copy names that primary, and it is the home agent the node is
registered with (the load generator's check, :mod:`haha.lab.load`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv6Address
from typing import TypedDict


class BindingView(TypedDict):
    """The fields of one row of a control socket's ``bindings`` answer the check reads (the
    answer carries more)."""

    home_address: str
    primary: str
    copy: bool


class Consistency(TypedDict):
    """:func:`check_consistency`'s verdict: the problems found, the first few in words."""

    consistent: bool
    problems: int
    examples: list[str]


def check_consistency(views: Mapping[str, Sequence[BindingView]],
                      home_addresses: Sequence[IPv6Address | str],
                      node_homes: Mapping[str, str | None] | None = None,
                      examples: int = 10) -> Consistency:
    """Whether the bindings the home agents report agree (module docstring).

    ``views``: ``{ha address: [binding dict as the control socket's bindings answer]}`` of the
    live home agents; ``home_addresses``: every node's home address; ``node_homes``:
    ``{home address: home agent the node is registered with, or None}`` (optional). Returns
    ``{"consistent": bool, "problems": count, "examples": [text, ...]}``."""
    tables = {str(ha): {b["home_address"]: b for b in bindings}
              for ha, bindings in views.items()}
    problems: list[str] = []
    for hoa in map(str, home_addresses):
        found = {ha: table.get(hoa) for ha, table in tables.items()}
        missing = sorted(ha for ha, b in found.items() if b is None)
        if missing:
            problems.append(f"{hoa}: no binding at {', '.join(missing)}")
            continue
        entries = {ha: b for ha, b in found.items() if b is not None}
        primaries = {b["primary"] for b in entries.values()}
        if len(primaries) != 1:
            problems.append(f"{hoa}: home agents disagree on the primary: "
                            f"{', '.join(sorted(primaries))}")
            continue
        primary = primaries.pop()
        if primary not in entries:
            problems.append(f"{hoa}: primary {primary} is not a live home agent")
            continue
        wrong = sorted(ha for ha, b in entries.items() if b["copy"] != (ha != primary))
        if wrong:
            problems.append(f"{hoa}: primary/copy role wrong at {', '.join(wrong)}")
            continue
        if node_homes is not None:
            home = node_homes.get(hoa)
            if home != primary:
                problems.append(f"{hoa}: the node is registered with {home}, the home agents "
                                f"say {primary}")
    expected = set(map(str, home_addresses))
    for ha, table in sorted(tables.items()):
        extra = len(set(table) - expected)
        if extra:
            problems.append(f"{ha}: {extra} bindings of unknown nodes")
    return {"consistent": not problems, "problems": len(problems),
            "examples": problems[:examples]}
