"""The control command `memory` (haha.control.memory): the process's RSS always, allocation sites
with their growth since a mark when tracing is on, a clear answer when it is off, bad arguments
refused, the snapshot taken away from the reactor's thread, and haha-ctl's table of it."""

import gc
import json
import os
import threading
import tracemalloc

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.testing import StringTransport

from haha.control import cli, memory
from haha.control.server import ControlFactory
from test_ctl import Recorder, serve_and_run, talk


@pytest.fixture
def tracing():
    """Allocation tracing on for the test (left as it was: a run under PYTHONTRACEMALLOC keeps
    it)."""
    was = tracemalloc.is_tracing()
    if not was:
        tracemalloc.start()
    yield
    if not was:
        tracemalloc.stop()


@pytest.fixture
def not_tracing():
    """Allocation tracing off for the test, restored after."""
    was = tracemalloc.is_tracing()
    if was:
        tracemalloc.stop()
    yield
    if was:
        tracemalloc.start()


HERE = memory.site_name(os.path.abspath(__file__))


def _allocate(n, size):
    """``n`` distinct buffers of ``size`` octets, all made on one line (returned with it)."""
    line = _allocate.__code__.co_firstlineno + 3
    return [bytearray(size) for _ in range(n)], f"{HERE}:{line}"


def _allocate_elsewhere(n, size):
    """As :func:`_allocate`, on another line."""
    line = _allocate_elsewhere.__code__.co_firstlineno + 3
    return [bytes(size) for _ in range(n)], f"{HERE}:{line}"


def _site(rows, site):
    (row,) = [r for r in rows if r["site"] == site] or [None]
    return row


def test_tracing_off_answers_rss_and_says_how_to_turn_it_on(not_tracing):
    """Without tracing: the process's RSS (as /proc says), its peak, Python's block count and
    the C allocator's figures; `tracing: false` with the hint naming PYTHONTRACEMALLOC; no
    sites; and a mark, which needs tracing, is refused rather than silently ignored."""
    out = memory.report({}, {})
    with open("/proc/self/statm") as f:
        rss_now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    assert out["tracing"] is False and "PYTHONTRACEMALLOC=1" in out["hint"]
    assert 0.5 * rss_now < out["rss"] < 2 * rss_now
    assert out["rss_peak"] >= out["rss"] and out["rss_anon"] > 0
    assert out["python_blocks"] > 1000
    assert "top" not in out and "growth" not in out
    if out["malloc"] is not None:  # glibc 2.33 and later
        assert out["malloc"]["in_use"] > 0 and out["malloc"]["free_held"] >= 0
    with pytest.raises(ValueError, match="mark=yes needs allocation tracing"):
        memory.report({"mark": "yes"}, {})


def test_top_sites_name_the_line_that_allocated(tracing):
    """With tracing on, 2,000 buffers of 1,000 octets made on one line are the top site, named
    `file:line` relative to the path, with their size and count; `by=file` groups them with
    the file's other allocations; `top` bounds the rows."""
    held, site = _allocate(2000, 1000)
    out = memory.report({"top": "5"}, {})
    assert out["tracing"] is True and out["traced"] >= 2000 * 1000
    assert len(out["top"]) == 5
    row = _site(out["top"], site)
    assert row is not None and row["count"] >= 2000 and 2000 * 1000 <= row["size"] < 2200 * 1000
    by_file = memory.report({"by": "file", "top": "50"}, {})
    assert _site(by_file["top"], HERE)["size"] >= row["size"]
    assert all(":" not in r["site"].rsplit("/", 1)[-1] for r in by_file["top"])
    del held


def test_growth_since_the_mark_shows_what_grew_and_what_was_freed(tracing):
    """`mark=yes` keeps the grouped figures; the next answer's `growth` has the site that
    allocated since (size and count as differences), a site freed since the mark as a
    negative size, and the traced total's growth; an answer grouped otherwise than the mark
    says so instead of comparing lines with files."""
    old, old_site = _allocate(1000, 2000)
    marks = {}
    first = memory.report({"mark": "yes"}, marks)
    assert first["marked"] is True and "growth" not in first
    del old
    gc.collect()
    new, new_site = _allocate(3000, 500)  # the same line: 2,000,000 freed, 1,500,000 made
    more, more_site = _allocate_elsewhere(4000, 700)
    out = memory.report({"top": "50"}, marks)
    grew = _site(out["growth"]["sites"], more_site)
    assert grew is not None and 4000 * 700 <= grew["size"] < 4000 * 800 and grew["count"] >= 4000
    same = _site(out["growth"]["sites"], new_site)
    assert same is not None and -420_000 < same["size"] < -340_000 and same["count"] >= 3900
    assert old_site == new_site
    assert out["growth"]["traced"] > 2_000_000
    other = memory.report({"by": "file"}, marks)
    assert other["growth"] is None and "by=line" in other["hint"]
    del new, more


@pytest.mark.parametrize("arguments, error", [
    ({"top": "0"}, "top='0' must be a number from 1 to 1000"),
    ({"top": "1001"}, "top='1001'"),
    ({"top": "ten"}, "top='ten'"),
    ({"by": "function"}, "by='function' must be one of line, file"),
    ({"mark": "maybe"}, "mark='maybe' must be yes or no"),
])
def test_bad_arguments_are_refused(arguments, error):
    """Each bad value gets an error naming it, with tracing off or on."""
    with pytest.raises(ValueError, match=error.replace("(", r"\(")):
        memory.report(arguments, {})


def test_site_names_are_relative_to_the_longest_path_entry():
    """A file under two path entries is named from the longer one; one under none as it is."""
    paths = ("/usr/lib/python3", "/usr/lib/python3/site-packages/")
    assert memory.site_name("/usr/lib/python3/site-packages/haha/x.py", paths) == "haha/x.py"
    assert memory.site_name("/usr/lib/python3/ipaddress.py", paths) == "ipaddress.py"
    assert memory.site_name("<string>", paths) == "<string>"


# -- through the control server ------------------------------------------------------------------


def test_the_server_answers_memory_itself_for_both_roles(not_tracing):
    """`memory` is answered by the server for a home agent and a mobile node without asking
    the target; a bad argument is an error answer; a target of a role haha does not know gets
    the command as it came (the table applies to haha's roles only)."""
    for role in ("home-agent", "mobile-node"):
        target = Recorder(role)
        ok, bad = talk(target, {"cmd": "memory"}, {"cmd": "memory", "top": "none"})
        assert ok["ok"] and ok["result"]["tracing"] is False and ok["result"]["rss"] > 0
        assert bad == {"ok": False, "error": "memory: top='none' must be a number from 1 to "
                                             "1000"}
        assert target.asked == []
    other = Recorder("gateway")
    (out,) = talk(other, {"cmd": "memory"})
    assert out == {"ok": True, "result": {"done": "memory"}}


def test_with_tracing_the_snapshot_runs_through_in_thread_and_marks_are_per_socket(tracing):
    """With tracing on, the server hands `memory` to its `in_thread` runner (the reactor's
    thread pool by default), and a mark made on one control socket is not another's."""
    calls = []

    class Synchronous(ControlFactory):
        @staticmethod
        def in_thread(fn, *args):
            calls.append(fn)
            return defer.maybeDeferred(fn, *args)

    answers = []
    for requests in ([{"cmd": "memory", "mark": "yes"}, {"cmd": "memory"}],
                     [{"cmd": "memory"}]):
        proto = Synchronous(Recorder()).buildProtocol(None)
        tr = StringTransport()
        proto.makeConnection(tr)
        for r in requests:
            proto.dataReceived(json.dumps(r).encode() + b"\n")
        answers.append([json.loads(x) for x in tr.value().splitlines()])
    assert calls == [memory.report] * 3
    (marked, later), (elsewhere,) = answers
    assert marked["result"]["marked"] is True and "growth" in later["result"]
    assert "growth" not in elsewhere["result"]
    assert ControlFactory.in_thread.__name__ == "deferToThread"


@pytest_twisted.inlineCallbacks
def test_haha_ctl_memory_over_a_real_socket(tmp_path, capsys, monkeypatch, tracing):
    """`haha-ctl memory top=3` against a real control socket (the snapshot in the reactor's
    thread pool): the figures as lines, then the top sites as a table of three rows; `--json`
    the answer itself; `mark=yes` then `memory` adds the growth table."""
    seen_threads = []
    real = memory.report

    def recording(arguments, marks, trim=None):
        seen_threads.append(threading.current_thread() is threading.main_thread())
        return real(arguments, marks, trim)

    monkeypatch.setattr(memory, "report", recording)

    def client(path):
        codes = [cli.main(["-s", path, "memory", "top=3"])]
        text = capsys.readouterr().out
        codes.append(cli.main(["-s", path, "--json", "memory", "top=2", "mark=yes"]))
        as_json = capsys.readouterr().out
        codes.append(cli.main(["-s", path, "memory", "top=2"]))
        growth = capsys.readouterr().out
        codes.append(cli.main(["-s", path, "memory", "by=module"]))
        return codes, text, as_json, growth

    codes, text, as_json, growth = yield serve_and_run(tmp_path, Recorder(), client)
    assert codes == [0, 0, 0, 1]
    assert seen_threads == [False, False, False]
    lines = text.splitlines()
    assert lines[0].startswith("rss ") and "MiB)" in lines[0]
    assert any(line.startswith("tracing ") and line.endswith("yes") for line in lines)
    table = text.split("top allocation sites:\n")[1].splitlines()
    assert table[0].split() == ["SIZE", "COUNT", "SITE"] and len(table) == 4
    answer = json.loads(as_json)
    assert answer["marked"] is True and len(answer["top"]) == 2
    assert "growth since the mark (traced " in growth


def test_memory_text_for_tracing_off_has_no_tables():
    """Tracing off, haha-ctl prints the figures and the hint, and no empty site tables."""
    text = cli.memory_text({"rss": 3 * 1024 * 1024, "rss_peak": 4 * 1024 * 1024,
                            "python_blocks": 12, "malloc": {"in_use": 2048, "free_held": 10},
                            "tracing": False, "hint": memory.TRACING_OFF})
    assert text.splitlines() == [
        "rss               3,145,728 (3.0 MiB)",
        "rss_peak          4,194,304 (4.0 MiB)",
        "python_blocks     12",
        "tracing           no",
        "hint              " + memory.TRACING_OFF,
        "malloc.in_use     2,048 (2.0 KiB)",
        "malloc.free_held  10"]
