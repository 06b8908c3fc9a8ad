"""haha-ctl and the control server's command table: every command in help, unknown commands and
arguments refused before they reach the daemon, tables for people and JSON for machines, watch,
and the peer count that agrees with the peer list during boot."""

import io
import json
import threading

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from haha.control import cli
from haha.control.commands import ALL, HOME_AGENT, MOBILE_NODE, check
from haha.control.server import ControlFactory
from haha.interfaces import IControllable
from test_service import HAS, HOA, Network


@implementer(IControllable)
class Recorder:
    """A daemon stand-in of a given role that records every command it is asked."""

    def __init__(self, role="home-agent"):
        self.role = role
        self.asked = []

    def status(self):
        return {"role": self.role, "state": "serving", "uptime": 12.25,
                "live_peers": ["2001:db8:1::2"], "anycast": None}

    def bindings(self):
        return [{"home_address": "2001:db8:1::100", "care_of": "2001:db8:20::100",
                 "primary": "2001:db8:1::1", "copy": False, "prefixes": []},
                {"home_address": "2001:db8:1::200", "care_of": "2001:db8:21::1",
                 "primary": "2001:db8:1::2", "copy": True, "prefixes": ["2001:db8:100::/48"]}]

    def peers(self):
        return [{"address": "2001:db8:1::2", "preference": 8}]

    def counters(self):
        return {"peers_now": 1, "bu_received": 3}

    def command(self, name, arguments):
        self.asked.append((name, arguments))
        return {"done": name}


def talk(target, *requests):
    proto = ControlFactory(target).buildProtocol(None)
    tr = StringTransport()
    proto.makeConnection(tr)
    for r in requests:
        proto.dataReceived(json.dumps(r).encode() + b"\n")
    return [json.loads(x) for x in tr.value().splitlines()]


# -- the server refuses what the role does not take ----------------------------------------------


def test_unknown_arguments_are_refused_and_reach_nothing():
    """`drain x=1` is an error, not a drain: the target is never asked; so is a query with
    arguments, a missing required argument and an argument of another command."""
    target = Recorder()
    out = talk(target, {"cmd": "drain", "x": "1"}, {"cmd": "status", "verbose": "1"},
               {"cmd": "switch"}, {"cmd": "switch", "home-address": "2001:db8:1::100",
                                   "care-of": "2001:db8:20::1"},
               {"cmd": "preference", "value": 5})
    assert [o["ok"] for o in out] == [False] * 5
    assert out[0]["error"] == "drain takes no arguments (got x)"
    assert out[1]["error"] == "status takes no arguments (got verbose)"
    assert out[2]["error"].startswith("switch needs home-address=")
    assert "unknown argument 'care-of'" in out[3]["error"]
    assert "must be a string" in out[4]["error"]
    assert target.asked == []


def test_commands_of_the_other_role_are_unknown():
    """A home agent refuses `move`, a mobile node refuses `drain`; each error lists every
    command the daemon does know."""
    ha, mn = Recorder("home-agent"), Recorder("mobile-node")
    (out,) = talk(ha, {"cmd": "move", "care-of": "2001:db8:20::1"})
    assert out["error"] == ("unknown command 'move'; known: "
                            + ", ".join(c.name for c in HOME_AGENT))
    (out,) = talk(mn, {"cmd": "drain"})
    assert out["error"].startswith("unknown command 'drain'; known: status,")
    assert "move" in out["error"] and "home" in out["error"]
    assert ha.asked == [] and mn.asked == []
    (ok,) = talk(mn, {"cmd": "move", "care-of": "2001:db8:20::1"})
    assert ok == {"ok": True, "result": {"done": "move"}}


def test_help_answers_every_command_of_the_role():
    """`help` lists exactly the role's commands, with usage and summary."""
    (out,) = talk(Recorder("home-agent"), {"cmd": "help"})
    assert [c["command"] for c in out["result"]] == [c.name for c in HOME_AGENT]
    assert {"command": "switch", "usage": "switch home-address=ADDRESS [target=ADDRESS]",
            "summary": HOME_AGENT[5].summary} in out["result"]
    (out,) = talk(Recorder("mobile-router"), {"cmd": "help"})
    assert [c["command"] for c in out["result"]] == [c.name for c in MOBILE_NODE]


def test_a_target_of_unknown_role_is_not_second_guessed():
    """An embedding's own IControllable (a role haha does not know) gets its commands as they
    come: the table only applies to haha's roles."""
    target = Recorder("gateway")
    (out,) = talk(target, {"cmd": "reboot", "now": "yes"})
    assert out["ok"] is True and target.asked == [("reboot", {"now": "yes"})]


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    yield n
    n.stop_all()


def test_the_table_matches_what_the_real_services_do(net):
    """Every command of the table is one the real home agent and mobile node carry out (none
    answers "unknown command"), and every command the services know is in the table."""
    net.start()
    ha, mn = net.has[0], net.mn
    args = {"switch": {"home-address": str(HOA), "target": str(HAS[1])},
            "preference": {"value": "7"}, "move": {"care-of": "2001:db8:20::101"}}
    for service, commands in ((ha, HOME_AGENT), (mn, MOBILE_NODE)):
        for c in commands:
            out = talk(service, dict(cmd=c.name, **args.get(c.name, {})))[0]
            assert out["ok"], (c.name, out)
        with pytest.raises(ValueError) as e:
            service.command("no-such-command", {})
        known = str(e.value).split("known: ")[1].split(", ")
        assert set(known) <= {c.name for c in commands}


def test_drain_with_a_stray_argument_leaves_a_real_home_agent_serving(net):
    """The issue's case end to end: `drain x=1` through the control protocol to a real home
    agent changes nothing."""
    net.start()
    ha = net.has[0]
    (out,) = talk(ha, {"cmd": "drain", "x": "1"})
    assert out == {"ok": False, "error": "drain takes no arguments (got x)"}
    net.run(1)
    assert ha.status()["state"] == "serving"
    (out,) = talk(ha, {"cmd": "drain"})
    assert out["ok"] and ha.machine.state != "serving"


def test_peers_now_agrees_with_peers_during_boot_and_after(net):
    """`peers_now` counts the peers `peers` lists: 0 while booting alone (it said 1); a peer
    heard during boot is listed by neither until it is in sync (its answer to our bulk request
    is complete: docs/security.md "Peer liveness"), and both agree at every step; the bulk
    request leaves at the peer's first HELLO, so on this instant network the peer is in sync
    well before the boot wait ends (docs/core.md "Relearning after a restart"); then serving,
    both still count it."""
    ha = net.has[0]
    ha.startService()
    net.run(0.2)
    assert ha.machine.state == "booting"
    assert ha.peers() == [] and ha.counters()["peers_now"] == 0
    net.has[1].startService()
    seen = []
    for _ in range(15):
        net.run(0.1)
        seen.append((ha.machine.state, len(ha.peers()), ha.counters()["peers_now"]))
    assert all(listed == counted for _, listed, counted in seen), seen
    assert ("booting", 1, 1) in seen  # in sync during the boot wait
    net.run(3)
    assert ha.machine.state == "serving"
    assert ha.counters()["peers_now"] == len(ha.peers()) == len(ha.status()["live_peers"]) == 1


# -- the client -----------------------------------------------------------------------------------


def test_help_lists_every_command(capsys):
    """`haha-ctl --help` shows every command of both roles with its usage, and watch."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for c in ALL:
        assert c.usage() in out and c.summary in out
    assert "watch [--interval SECONDS] [--count N]" in out


@pytest.mark.parametrize("argv, message", [
    (["drain", "x=1"], "drain takes no arguments (got x)"),
    (["reboot"], "unknown command 'reboot'; known: status, bindings"),
    (["switch", "target=2001:db8:1::2"], "switch needs home-address="),
    (["switch", "home-address=2001:db8:1::100", "hoa=1"], "unknown argument 'hoa'"),
    (["status", "verbose"], "argument 'verbose' is not key=value"),
    (["preference", "value=1", "value=2"], "argument 'value' given twice"),
    (["watch", "x=1"], "watch takes no key=value arguments"),
    (["watch", "--interval", "0"], "watch needs --interval > 0"),
])
def test_mistakes_are_refused_before_connecting(argv, message, tmp_path, capsys):
    """A command or argument the table refuses exits 2 with the reason, without touching the
    socket (which does not exist here: connecting would say "cannot talk")."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--socket", str(tmp_path / "absent.sock")] + argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "cannot talk" not in err


def test_tables_for_people():
    """Lists of objects become aligned tables with a header, objects name/value lines, empty
    results "(none)"; None is "-", booleans yes/no, lists comma-separated."""
    text = cli.table(Recorder().bindings())
    lines = text.splitlines()
    assert lines[0].split() == ["HOME-ADDRESS", "CARE-OF", "PRIMARY", "COPY", "PREFIXES"]
    assert lines[1].split() == ["2001:db8:1::100", "2001:db8:20::100", "2001:db8:1::1", "no",
                                "-"]
    assert lines[2].split() == ["2001:db8:1::200", "2001:db8:21::1", "2001:db8:1::2", "yes",
                                "2001:db8:100::/48"]
    assert lines[1].index("2001:db8:20::100") == lines[0].index("CARE-OF")
    status = cli.table(Recorder().status()).splitlines()
    assert status[0].split() == ["role", "home-agent"] and status[2].split() == ["uptime", "12.2"]
    assert status[4].split() == ["anycast", "-"]
    assert cli.table([]) == "(none)" and cli.table({}) == "(none)"
    assert cli.table(["2001:db8:1::1", "2001:db8:1::2"]) == "2001:db8:1::1\n2001:db8:1::2"
    assert cli.table({"b": 1, "a": 2}, sort=True).splitlines()[0].split() == ["a", "2"]


def serve_and_run(tmp_path, target, client):
    """Serve ``target`` on a real UNIX socket and run the blocking ``client(path)`` in a thread;
    a Deferred firing with what it returned."""
    path = str(tmp_path / "ctl.sock")
    done = defer.Deferred()

    @defer.inlineCallbacks
    def run():
        port = yield UNIXServerEndpoint(reactor, path).listen(ControlFactory(target))
        result = {}

        def thread():
            try:
                result["value"] = client(path)
            except BaseException as e:  # the test thread reports it
                result["error"] = e
            reactor.callFromThread(finished.callback, None)

        finished = defer.Deferred()
        threading.Thread(target=thread, daemon=True).start()
        yield finished
        yield port.stopListening()
        if "error" in result:
            raise result["error"]
        return result["value"]

    run().chainDeferred(done)
    return done


@pytest_twisted.inlineCallbacks
def test_tables_by_default_json_on_request(tmp_path, capsys):
    """`bindings` prints a table; `--json bindings` the daemon's JSON; `help` the daemon's own
    command list; `counters` sorted name/value lines."""
    def client(path):
        codes = [cli.main(["-s", path, "bindings"])]
        table = capsys.readouterr().out
        codes.append(cli.main(["-s", path, "--json", "bindings"]))
        as_json = capsys.readouterr().out
        codes.append(cli.main(["-s", path, "help"]))
        help_text = capsys.readouterr().out
        codes.append(cli.main(["-s", path, "counters"]))
        counters = capsys.readouterr().out
        return codes, table, as_json, help_text, counters

    codes, table, as_json, help_text, counters = yield serve_and_run(tmp_path, Recorder(), client)
    assert codes == [0, 0, 0, 0]
    assert table.splitlines()[0].startswith("HOME-ADDRESS")
    assert json.loads(as_json) == Recorder().bindings()
    assert [line.split()[0] for line in help_text.splitlines()] == [c.name for c in HOME_AGENT]
    assert counters.splitlines() == ["bu_received  3", "peers_now    1"]


@pytest_twisted.inlineCallbacks
def test_watch_shows_status_peers_and_bindings_each_time(tmp_path):
    """`watch --count 2` draws two views (status, peers, bindings) an interval apart; with
    --json one parseable object per view."""
    sleeps = []

    def client(path):
        out = io.StringIO()
        rc = cli.watch(path, 0.5, count=2, out=out, sleep=sleeps.append)
        js = io.StringIO()
        rc_json = cli.watch(path, 0.5, count=1, as_json=True, out=js, sleep=sleeps.append)
        return rc, out.getvalue(), rc_json, js.getvalue()

    rc, text, rc_json, js = yield serve_and_run(tmp_path, Recorder(), client)
    assert rc == 0 and rc_json == 0 and sleeps == [0.5]
    assert text.count("haha-ctl watch ") == 2
    assert text.count("peers (1)") == 2 and text.count("bindings (2)") == 2
    assert "2001:db8:21::1" in text and "state       serving" in text
    view = json.loads(js)
    assert view["error"] is None and view["peers"] == Recorder().peers()
    assert view["bindings"] == Recorder().bindings() and view["status"]["state"] == "serving"


def test_watch_of_an_unreachable_daemon_says_so_and_keeps_asking(tmp_path):
    """An absent daemon is a line in the view, asked again next time; the exit status is 2."""
    out = io.StringIO()
    path = str(tmp_path / "absent.sock")
    assert cli.watch(path, 1, count=3, out=out, sleep=lambda s: None) == 2
    assert out.getvalue().count(f"haha-ctl watch {path}: cannot talk to {path}") == 3


def test_check_is_the_one_table():
    """The client's check and the table agree: every command of ALL passes with its required
    arguments, and names shared by the two roles take the same arguments in both."""
    for c in ALL:
        check(ALL, c.name, {k: "x" for k, _ in c.required})
    shared = {c.name for c in HOME_AGENT} & {c.name for c in MOBILE_NODE}
    for name in shared:
        (a,) = [c for c in HOME_AGENT if c.name == name]
        (b,) = [c for c in MOBILE_NODE if c.name == name]
        assert a == b


def test_a_reader_that_stops_early_is_not_an_error(monkeypatch, tmp_path):
    """`haha-ctl ... | grep -q serving` closes the pipe after the first match: haha-ctl exits 0
    quietly instead of a BrokenPipeError traceback."""
    class ClosedPipe:
        def __init__(self):
            self.file = open(tmp_path / "out", "w")

        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return self.file.fileno()

    monkeypatch.setattr(cli, "request", lambda *a, **k: {"ok": True, "result": {"a": 1}})
    for argv in (["status"], ["--json", "status"]):
        monkeypatch.setattr("sys.stdout", ClosedPipe())
        assert cli.main(["--socket", "x"] + argv) == 0


def test_the_operations_guide_lists_every_command():
    """docs/operations.md has a row for every command of the table, with its usage and summary
    (a command added to the table and not to the guide fails here)."""
    import os

    guide = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "docs", "operations.md")).read()
    for c in ALL:
        assert f"| `{c.usage()}` |" in guide and f"| {c.summary} |" in guide, c.name
