"""Event names are defined once (haha.core.events), documented once (docs/core.md, "Events"),
and the two agree with what the code emits: every documented event is emitted somewhere in
haha/, every emitted event is documented, each at the documented level."""

import ast
import json
import os
import re

from haha.core.effects import Event
from haha.core.events import INFO_EVENTS, EventName, Level, level_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "core.md")
ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (debug|info) \|")


def documented():
    """{name: level} from the table of docs/core.md's "Events" section."""
    with open(DOC) as f:
        text = f.read()
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} documented twice"
            rows[m.group(1)] = m.group(2)
    return rows


def _member(node):
    """``EventName.X``'s value when ``node`` is that expression, else None."""
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "EventName"):
        return EventName[node.attr].value
    return None


def emitted_in(source):
    """The event names ``source`` passes as first argument to ``Event(...)``: string literals
    as themselves, ``EventName.X`` members as their value, a module-level name bound once to
    such a member (``_STATE = EventName.STATE``, read once on a hot path) as that value;
    anything else as ``<dynamic>``."""
    tree = ast.parse(source)
    aliases, rebound = {}, set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            value = _member(node.value)
            if value is None or name in aliases:
                rebound.add(name)
            else:
                aliases[name] = value
    for node in ast.walk(tree):  # an alias assigned anywhere else is not one
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and node not in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            rebound.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Global):
            rebound.update(node.names)
    for name in rebound:
        aliases.pop(name, None)
    names = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "Event" and node.args):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.add(arg.value)
        elif _member(arg) is not None:
            names.add(_member(arg))
        elif isinstance(arg, ast.Name) and arg.id in aliases:
            names.add(aliases[arg.id])
        else:
            names.add("<dynamic>")
    return names


def emitted():
    """{name: [files]} for every event emitted in haha/."""
    found = {}
    for top, dirs, files in os.walk(os.path.join(ROOT, "haha")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(top, name)
                with open(path) as f:
                    for event in emitted_in(f.read()):
                        found.setdefault(event, []).append(os.path.relpath(path, ROOT))
    return found


def test_every_documented_event_is_emitted():
    """Each name in the documentation's table is emitted by some ``Event(...)`` in haha/."""
    missing = sorted(set(documented()) - set(emitted()))
    assert missing == []


def test_every_emitted_event_is_documented_and_defined():
    """Each ``Event(...)`` in haha/ names a documented event that EventName defines, by a
    literal or a member (never a computed name the check could not see)."""
    found = emitted()
    unknown = {name: files for name, files in found.items() if name not in documented()}
    assert unknown == {}
    assert {name for name in found if name not in {e.value for e in EventName}} == set()


def literal_emitters(source):
    """``(line, name)`` of each ``Event(...)`` in ``source`` whose name is a string literal."""
    return [(node.lineno, node.args[0].value) for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == "Event" and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)]


def test_emitters_name_events_by_member():
    """Event names are written once, in EventName: every ``Event(...)`` in haha/ names a
    member, never a string literal (a literal bypasses the type checker and the enum)."""
    found = []
    for top, dirs, files in os.walk(os.path.join(ROOT, "haha")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(top, name)
                with open(path) as f:
                    found += [(os.path.relpath(path, ROOT), line, event)
                              for line, event in literal_emitters(f.read())]
    assert found == []


def test_the_literal_scan_finds_literals_only():
    """The scan used above reports a literal name with its line, and neither a member nor
    another class's call."""
    source = ("out.append(Event(EventName.PEER_UP, peer=p))\n"
              "out.append(Event('peer-down', peer=p))\n"
              "threading.Event()\n"
              "Other('peer-up')\n")
    assert literal_emitters(source) == [(2, "peer-down")]


def test_the_documentation_and_the_enum_agree():
    """The table lists exactly EventName's members, each at the level the enum gives it."""
    assert documented() == {e.value: e.level.value for e in EventName}


def test_the_drifted_names_are_gone():
    """``switched`` (logged at info, never emitted) and ``copy-deleted`` (documented, never
    emitted) are neither defined nor documented: a mobile node's switch is ``switch-received``
    then ``registered``; a copy that goes is ``binding-deleted``/``binding-expired`` with
    ``primary`` false."""
    for name in ("switched", "copy-deleted"):
        assert name not in {e.value for e in EventName}
        assert name not in documented()
        assert name not in INFO_EVENTS
    assert EventName.SWITCH_RECEIVED.level is Level.INFO


def test_the_scan_sees_literals_members_and_computed_names():
    """The source scan used above finds a literal, a member, and flags a computed name."""
    source = ("out.append(Event('peer-up', peer=p))\n"
              "out.append(Event(EventName.TAKE_OVER, count=1))\n"
              "out.append(Event(name))\n"
              "threading.Event()\n")
    assert emitted_in(source) == {"peer-up", "take-over", "<dynamic>"}


def test_the_scan_follows_a_module_level_alias_of_a_member_and_nothing_else():
    """A module-level ``_UP = EventName.PEER_UP`` passed to Event is peer-up; a name bound
    to a member and assigned again (at module level or in a function), or a local, stays
    ``<dynamic>``."""
    source = ("_UP = EventName.PEER_UP\n"
              "_TWICE = EventName.TAKE_OVER\n"
              "_TWICE = EventName.PEER_DOWN\n"
              "_CHANGED = EventName.STATE\n"
              "def f(out, x):\n"
              "    global _CHANGED\n"
              "    _CHANGED = x\n"
              "    local = EventName.REGISTERED\n"
              "    out.append(Event(_UP, peer=1))\n")
    assert emitted_in(source) == {"peer-up"}
    for name in ("_TWICE", "_CHANGED", "local"):
        assert emitted_in(source + f"    out.append(Event({name}))\n") == {"peer-up",
                                                                             "<dynamic>"}


def test_members_are_their_names():
    """A member equals, hashes, formats and serialises as its string, so emitters, counters,
    observers comparing ``event.name == "..."`` and JSON log consumers see no difference
    between ``Event("peer-up")`` and ``Event(EventName.PEER_UP)``."""
    member = EventName.PEER_UP
    assert member == "peer-up" and hash(member) == hash("peer-up")
    assert f"{member}" == "peer-up" and str(member) == "peer-up"
    assert "event." + member == "event.peer-up"
    assert json.dumps({"event": member}) == '{"event": "peer-up"}'
    assert Event(member, peer=1) == Event("peer-up", peer=1)
    assert hash(Event(member, peer=1)) == hash(Event("peer-up", peer=1))
    assert {Event(member).name: 1}["peer-up"] == 1


def test_levels():
    """INFO_EVENTS holds exactly the info-level members (as plain strings); level_of answers
    for any name, an unknown one (an embedder's own event) at debug."""
    assert INFO_EVENTS == {e.value for e in EventName if e.level is Level.INFO}
    assert all(type(name) is str for name in INFO_EVENTS)
    assert "binding-created" in INFO_EVENTS and "binding-updated" not in INFO_EVENTS
    assert level_of("peer-down") is Level.INFO
    assert level_of("copy-created") is Level.DEBUG
    assert level_of("my-own-event") is Level.DEBUG


def test_the_adapter_logs_every_event_at_its_level():
    """The Twisted adapter takes its levels from EventName: at level info, exactly the
    info-level members are published (at info), each counted and observed either way."""
    from twisted.logger import LogLevel, globalLogPublisher

    from haha import logging as hlog
    from haha.protocol import Adapter

    published = []
    globalLogPublisher.addObserver(published.append)
    try:
        hlog.configure("info")
        from twisted.internet.task import Clock

        a = Adapter(machine=None, transport=None, clock=Clock(), profile=None, policy=None)
        a.log = hlog.logger("haha.test-events")
        for member in EventName:
            a.event(Event(member))
    finally:
        globalLogPublisher.removeObserver(published.append)
        hlog.configure("info")
    logged = {e["event"]: e["log_level"] for e in published
              if e.get("log_namespace") == "haha.test-events"}
    assert logged == {name: LogLevel.info for name in INFO_EVENTS}
    assert all(a.counters[f"event.{member}"] == 1 for member in EventName)
