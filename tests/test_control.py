"""The operator interface: JSON-lines control protocol, haha-ctl, and the metrics page."""

import json
import os
import threading

import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from haha.control import cli
from haha.control.metrics import ServiceMetrics
from haha.control.server import ControlFactory
from haha.interfaces import IControllable


@implementer(IControllable)
class Target:
    def __init__(self):
        self.commands = []

    def status(self):
        return {"role": "home-agent", "state": "serving"}

    def bindings(self):
        return [{"home_address": "2001:db8:1::100", "primary": True}]

    def peers(self):
        return []

    def counters(self):
        return {"bu_received": 3, "dropped.bad-checksum": 1, "bindings_now": 1, "label": "x"}

    def command(self, name, arguments):
        if name != "switch":
            raise ValueError(f"unknown command {name!r}")
        self.commands.append(arguments)
        return defer.succeed({"switched": arguments["home-address"]})


def talk(lines):
    target = Target()
    proto = ControlFactory(target).buildProtocol(None)
    tr = StringTransport()
    proto.makeConnection(tr)
    for line in lines:
        proto.dataReceived(line + b"\n")
    return target, [json.loads(x) for x in tr.value().splitlines()], tr


def test_queries_and_commands():
    """Queries return the target's data; commands get their arguments; errors are answers."""
    target, out, _ = talk([
        b'{"cmd": "status"}',
        b'{"cmd": "switch", "home-address": "2001:db8:1::100"}',
        b'{"cmd": "reboot"}',
        b"not json",
        b'["cmd"]',
        b'{"cmd": "bindings"}',
    ])
    assert out[0] == {"ok": True, "result": {"role": "home-agent", "state": "serving"}}
    assert out[1] == {"ok": True, "result": {"switched": "2001:db8:1::100"}}
    assert out[2]["ok"] is False and out[2]["error"].startswith("unknown command 'reboot'")
    assert out[3] == {"ok": False, "error": "request is not JSON"}
    assert out[4]["ok"] is False and "object" in out[4]["error"]
    assert out[5]["result"][0]["primary"] is True
    assert target.commands == [{"home-address": "2001:db8:1::100"}]


def test_overlong_request_closes_connection():
    """A request longer than 64 KiB is refused and the connection closed."""
    _, out, tr = talk([b'{"cmd": "' + b"x" * 70000 + b'"}'])
    assert out == [{"ok": False, "error": "request longer than 64 KiB"}]
    assert tr.disconnecting


def test_metrics_text_format():
    """Counters become _total families with HELP text and the daemon's labels; a counter
    without a family keeps its name as a label; *_now (gauges) and non-numbers are left out."""
    metrics = ServiceMetrics(Target().counters, lambda: [("haha_registered", 1)],
                             {"role": "mobile-node", "address": "2001:db8:1::100"})
    body, content_type = metrics.exposition()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert ('haha_other_total{address="2001:db8:1::100",counter="bu_received",'
            'role="mobile-node"} 3.0') in text
    assert ('haha_packets_dropped_total{address="2001:db8:1::100",reason="bad-checksum",'
            'role="mobile-node"} 1.0') in text
    assert "# HELP haha_packets_dropped_total Inbound packets dropped" in text
    assert "# TYPE haha_packets_dropped_total counter" in text
    assert 'haha_registered{address="2001:db8:1::100",role="mobile-node"} 1.0' in text
    assert "bindings_now" not in text and '"x"' not in text


@pytest_twisted.inlineCallbacks
def test_haha_ctl_against_a_real_socket(tmp_path, capsys):
    """haha-ctl talks to a control socket served by the reactor (blocking client in a thread)."""
    path = str(tmp_path / "ctl.sock")
    results = {}
    listening = yield UNIXServerEndpoint(reactor, path).listen(ControlFactory(Target()))
    done = defer.Deferred()

    def client():
        results["status"] = cli.main(["--socket", path, "--json", "status"])
        # a mobile node's command: haha-ctl sends it, the home agent refuses it
        results["refused"] = cli.main(["--socket", path, "move", "care-of=2001:db8:20::1"])
        reactor.callFromThread(done.callback, None)

    threading.Thread(target=client, daemon=True).start()
    yield done
    yield listening.stopListening()
    out, err = capsys.readouterr()
    assert results == {"status": 0, "refused": 1}
    assert json.loads(out[: out.index("}") + 1]) == {"role": "home-agent", "state": "serving"}
    assert "unknown command 'move'" in err
    assert cli.main(["--socket", os.path.join(str(tmp_path), "absent.sock"), "status"]) == 2


class _ManyBindings(Target):
    def __init__(self, n):
        super().__init__()
        self.n = n
        self.taken = 0

    def binding_rows(self):
        for i in range(self.n):
            self.taken += 1
            yield {"home_address": f"2001:db8:1::1:{i:x}", "primary": "2001:db8:1::1"}


def test_a_large_bindings_answer_is_streamed_in_slices_in_order():
    """A target with binding_rows has its bindings answer written STREAM_SLICE (250) rows per
    turn of the reactor after the first slice (a smaller answer is written at once) (a home
    agent answering 100,000 bindings in one turn went silent long enough to be declared dead;
    1,000 rows a turn still stalled it 30 ms): after one turn only the first slice is built;
    the finished line is the same JSON; an answer asked next on the connection comes after it,
    whole."""
    from twisted.internet.task import Clock, Cooperator
    from haha.control.server import STREAM_SLICE
    assert STREAM_SLICE == 250

    clock = Clock()
    target = _ManyBindings(5500)
    factory = ControlFactory(target)
    factory.cooperate = Cooperator(scheduler=lambda f: clock.callLater(0, f),
                                   terminationPredicateFactory=lambda: lambda: True).cooperate
    proto = factory.buildProtocol(None)
    tr = StringTransport()
    proto.makeConnection(tr)
    proto.dataReceived(b'{"cmd": "bindings"}\n{"cmd": "status"}\n')
    turns = 0
    while clock.getDelayedCalls():
        turns += 1
        assert target.taken <= STREAM_SLICE * (turns + 1)
        assert b"\n" not in tr.value() or target.taken == 5500
        for call in clock.getDelayedCalls():  # one turn: not the calls it schedules
            clock.calls.remove(call)
            call.func(*call.args, **call.kw)
    assert turns >= 5500 // STREAM_SLICE
    first, second = [json.loads(x) for x in tr.value().splitlines()]
    assert first["ok"] and [r["home_address"] for r in first["result"]] == [
        f"2001:db8:1::1:{i:x}" for i in range(5500)]
    assert second == {"ok": True, "result": {"role": "home-agent", "state": "serving"}}
