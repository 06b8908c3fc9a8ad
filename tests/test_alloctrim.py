"""Giving freed memory back to the system (haha.alloctrim): malloc_trim once a deep backlog has
drained, never more often than its interval, off by configuration, a no-op without glibc, bad
values refused with file, section, key and line, and shown by ``haha-ctl memory``."""

from ipaddress import IPv6Address

import pytest
from twisted.internet.task import Clock

from haha import alloctrim
from haha.alloctrim import AllocatorTrim
from haha.config import ConfigError, MemoryConfig, home_agent_from_text
from haha.control import memory
from haha.io.rxqueue import SHRINK_AFTER, InputQueue
from haha.wire.ipv6 import build_packet
from test_config import BASE as CONFIG_BASE

HA = IPv6Address("2001:db8:1::1")

BASE = CONFIG_BASE + """\
[transport]
kind = udp
udp-listen = 127.0.0.1:7001
"""


class FakeLibrary:
    """A C library whose ``malloc_trim`` records its pad arguments."""

    def __init__(self):
        self.calls = []

    def malloc_trim(self, pad):
        self.calls.append(pad)
        return 1


def _trim(clock=None, library=None, rss=(200, 150), **kw):
    """A trim on ``clock`` with a fake library and an RSS that shrinks by 50 at each call."""
    sizes = list(rss) * 100
    lib = FakeLibrary() if library is None else library
    t = AllocatorTrim(clock or Clock(), library=lib, rss=lambda: sizes.pop(0),
                      wall=lambda: 1234.5, **kw)
    return t, lib


def _esp(i, seq=1):
    src = IPv6Address(int(IPv6Address("2001:db8:20::1")) + i)
    return build_packet(src, HA, 50, (0x10000 + i).to_bytes(4, "big")
                        + seq.to_bytes(4, "big") + bytes(16))


def test_a_request_trims_on_the_next_turn_and_records_the_call():
    """A request does not trim inside the caller (the input queue's slice): the call comes on
    the reactor's next turn, with the configured pad, and its duration, reason, time and the
    memory it released are kept for ``haha-ctl memory`` and the counters."""
    clock = Clock()
    t, lib = _trim(clock, pad=4096)
    t.request("backlog drained")
    assert lib.calls == []
    clock.advance(0)
    assert lib.calls == [4096]
    r = t.report()
    assert r["runs"] == 1 and r["released"] == 50 and r["due"] is False
    assert r["last"]["reason"] == "backlog drained" and r["last"]["at"] == 1234.5
    assert r["last"]["released"] == 50 and r["last"]["ms"] >= 0
    assert t.counters()["allocator-trim.runs"] == 1
    assert t.counters()["allocator-trim.released-octets"] == 50


def test_requests_within_the_interval_fold_into_one_call_at_its_end():
    """However often it is asked, the library is called at most once per interval: requests
    after a call wait until the interval since it has passed, and all those made meanwhile
    become one call."""
    clock = Clock()
    t, lib = _trim(clock, interval=10.0)
    t.request("backlog drained")
    clock.advance(0)
    assert len(lib.calls) == 1
    clock.advance(2)
    for _ in range(5):
        t.request("backlog drained")
    clock.advance(7.9)
    assert len(lib.calls) == 1 and t.report()["due"] is True
    clock.advance(0.1)
    assert len(lib.calls) == 2
    assert t.deferred == 5 and t.requests == 6
    clock.advance(20)
    t.request("again")  # long after: at once again
    clock.advance(0)
    assert len(lib.calls) == 3 and t.last["reason"] == "again"


class Held:
    """The allocator's figures with a ``free_held`` a test sets."""

    def __init__(self):
        self.free_held = 0

    def __call__(self):
        return {"free_held": self.free_held}


def test_a_growth_of_the_freed_memory_held_trims_at_the_next_look():
    """Without any burst, the look every interval trims once the allocator's freed memory has
    grown by the threshold since the last trim, and not again until it grows by as much
    more; a look within the interval of a trim does not trim."""
    clock, held = Clock(), Held()
    t, lib = _trim(clock, interval=10.0, threshold=1000, figures=held)
    t.startService()
    clock.advance(10)
    assert lib.calls == [] and t.checks == 1
    held.free_held = 999
    clock.advance(10)
    assert lib.calls == []
    held.free_held = 1000
    clock.advance(10)
    assert len(lib.calls) == 1 and t.last["reason"] == "freed memory held grew by 1000 octets"
    held.free_held = 1500  # the base is now 1000
    clock.advance(10)
    assert len(lib.calls) == 1
    held.free_held = 2000
    t.request("backlog drained")
    clock.advance(0)
    assert len(lib.calls) == 2
    held.free_held = 3000  # the base 2000: grown by 1000, but a trim ran 0 s ago
    clock.advance(9)
    assert len(lib.calls) == 2 and t.checks == 4
    clock.advance(10)
    assert len(lib.calls) == 3 and t.checks == 5
    t.stopService()
    held.free_held = 10**9
    clock.advance(100)
    assert len(lib.calls) == 3 and t.checks == 5


@pytest.mark.parametrize("kw", [{"threshold": 0}, {"enabled": False}])
def test_no_look_without_a_threshold_or_when_off(kw):
    """``trim-threshold = 0`` or ``trim = no``: the allocator's figures are never looked at."""
    clock, held = Clock(), Held()
    held.free_held = 10**9
    looked = []
    t, lib = _trim(clock, figures=lambda: looked.append(1) or held(), **kw)
    t.startService()
    clock.advance(1000)
    assert lib.calls == [] and looked == [] and t.checks == 0


def test_disabled_never_calls_the_library():
    """``trim = no``: requests are counted as ignored and nothing is called."""
    clock = Clock()
    t, lib = _trim(clock, enabled=False)
    for _ in range(3):
        t.request("backlog drained")
    clock.advance(100)
    assert lib.calls == [] and t.ignored == 3 and t.runs == 0
    assert t.report()["enabled"] is False


def test_without_malloc_trim_it_is_a_no_op_said_once_at_debug():
    """A C library without ``malloc_trim`` (not glibc): every request ignored, one debug line
    in the log saying why, the report says it is not available."""
    from twisted.logger import Logger

    events = []
    clock = Clock()
    t = AllocatorTrim(clock, library=None)
    t.log = Logger(observer=events.append)
    t.request("backlog drained")
    t.request("backlog drained")
    clock.advance(100)
    said = [e for e in events if "malloc_trim" in e.get("log_format", "")]
    assert len(said) == 1 and said[0]["log_level"].name == "debug"
    assert t.ignored == 2 and t.runs == 0 and t.available is False
    assert t.trim("by hand") is None


def test_the_real_library_is_found_on_glibc_and_a_call_works():
    """On glibc the process's own ``malloc_trim`` is found and can be called (its answer is 0
    or 1); elsewhere :func:`system_library` says None."""
    import ctypes

    try:
        ctypes.CDLL(None).malloc_trim
    except AttributeError:
        assert alloctrim.system_library() is None
        return
    lib = alloctrim.system_library()
    assert lib is not None and lib.malloc_trim(0) in (0, 1)
    clock = Clock()
    t = AllocatorTrim(clock)
    assert t.trim("test")["rss_after"] > 0


@pytest.mark.parametrize("kw", [{"interval": 0.5}, {"interval": 1e6}, {"pad": -1},
                                {"threshold": -1}])
def test_bad_settings_are_refused(kw):
    """An interval outside 1 s .. 1 day or a negative pad is refused by the class too."""
    with pytest.raises(ValueError):
        AllocatorTrim(Clock(), library=FakeLibrary(), **kw)


def test_the_input_queue_says_when_a_deep_backlog_has_drained():
    """``on_drained`` is called once when a backlog deeper than SHRINK_AFTER has been worked
    off, not while packets still wait, and not for a shallow backlog."""
    got, drained = [], []
    q = InputQueue(lambda data, meta: got.append(data), None)
    q.on_drained = lambda: drained.append(len(q.queue))
    for i in range(SHRINK_AFTER // 2):
        q.put(_esp(i), "m")
    q.run()
    assert drained == []
    for i in range(SHRINK_AFTER + 10):
        q.put(_esp(i, 2), "m")
    q.run()
    assert drained == [0] and len(got) == SHRINK_AFTER // 2 + SHRINK_AFTER + 10
    q.put(_esp(1, 3), "m")
    q.run()
    assert drained == [0]


def _service(text=BASE):
    from haha.backends.null import NullBackend
    from haha.service import HomeAgentService

    clock = Clock()
    service = HomeAgentService.build(home_agent_from_text(text, "ha.conf"), clock,
                                     backend=NullBackend())
    lib = FakeLibrary()
    service.allocator_trim.library = lib
    return service, clock, lib


def _burst(service, clock, n):
    """``n`` node packets through the service's input queue, worked off on ``clock``."""
    q = service.transport.input
    for i in range(n):
        q.put(_esp(i), ("127.0.0.1", 9000))
    q.run()
    for _ in range(1000):
        if not q.queue:
            break
        clock.advance(0)
    assert not q.queue


def test_a_home_agent_trims_once_its_deep_backlog_has_drained():
    """A home agent built from its configuration trims on the turn after a burst's backlog
    drained, not after a shallow one, and at most once per ``trim-interval``; the counters and
    ``haha-ctl memory`` (``trim``) show it."""
    service, clock, lib = _service(BASE + "[memory]\ntrim-interval = 30\n")
    _burst(service, clock, 100)
    clock.advance(0)
    assert lib.calls == []
    _burst(service, clock, SHRINK_AFTER + 1)
    clock.advance(0)
    assert lib.calls == [0]
    clock.advance(5)
    _burst(service, clock, SHRINK_AFTER + 1)
    clock.advance(0)
    assert lib.calls == [0]
    clock.advance(25)
    assert lib.calls == [0, 0]
    assert service.counters()["allocator-trim.runs"] == 2
    answer = memory.report({}, {}, service.allocator_trim)
    assert answer["trim"]["runs"] == 2 and answer["trim"]["last"]["reason"] == "backlog drained"
    assert answer["trim"]["interval_s"] == 30.0


def test_trim_no_in_the_configuration_turns_it_off():
    """``[memory] trim = no``: a drained burst calls nothing; the request is counted as
    ignored."""
    service, clock, lib = _service(BASE + "[memory]\ntrim = no\n")
    _burst(service, clock, SHRINK_AFTER + 1)
    clock.advance(100)
    assert lib.calls == [] and service.counters()["allocator-trim.ignored"] == 1


def test_the_memory_answer_has_trim_only_with_a_trimmer():
    """``memory`` without a trimmer (a mobile node, an embedder's target) says None."""
    assert memory.report({}, {})["trim"] is None


def test_the_control_server_shows_the_targets_trim():
    """The control socket's ``memory`` answer carries the target's ``allocator_trim``
    report."""
    from test_ctl import Recorder, talk

    target = Recorder()
    target.allocator_trim, lib = _trim()
    target.allocator_trim.trim("by hand")
    (out,) = talk(target, {"cmd": "memory"})
    assert out["ok"] and out["result"]["trim"]["last"]["reason"] == "by hand"


def test_configuration_defaults_and_values():
    """Defaults: on, every 10 s at most, pad 0, a look trims at 2 MiB grown; each key
    read."""
    assert home_agent_from_text(BASE).memory == MemoryConfig(True, 10.0, 0, 2 << 20)
    c = home_agent_from_text(BASE + "[memory]\ntrim = no\ntrim-interval = 60\n"
                             "trim-pad = 1048576\ntrim-threshold = 0\n")
    assert c.memory == MemoryConfig(False, 60.0, 1048576, 0)


@pytest.mark.parametrize("line,key", [
    ("trim = maybe", "trim"),
    ("trim-interval = 0.5", "trim-interval"),
    ("trim-interval = soon", "trim-interval"),
    ("trim-pad = -1", "trim-pad"),
    ("trim-threshold = lots", "trim-threshold"),
    ("trim-pads = 1", "trim-pads"),
])
def test_bad_values_are_refused_with_file_section_key_and_line(line, key):
    """A bad value or an unknown key in ``[memory]`` stops with file, section, key, line."""
    with pytest.raises(ConfigError) as e:
        home_agent_from_text(BASE + "[memory]\n" + line + "\n", "ha.conf")
    assert (e.value.path, e.value.section, e.value.key, e.value.line) == \
        ("ha.conf", "memory", key, BASE.count("\n") + 2)


def test_haha_ctl_prints_when_the_trim_last_ran():
    """haha-ctl's text of ``memory`` has the trim's figures and its last call, the time in
    UTC, the octets readable; before any call it says never."""
    from haha.control import cli

    t, _ = _trim()
    text = cli.memory_text({"rss": 10, "malloc": None, "trim": t.report()})
    assert ["trim.last", "never"] in [line.split() for line in text.splitlines()]
    t.trim("backlog drained")
    lines = {line.split()[0]: line.split(None, 1)[1] for line in
             cli.memory_text({"rss": 10, "trim": t.report()}).splitlines()}
    assert lines["trim.runs"] == "1"
    assert lines["trim.last.at"] == "1970-01-01 00:20:34 UTC"
    assert lines["trim.last.reason"] == "backlog drained"
    assert lines["trim.last.released"] == "50"


def test_the_scale_benchmark_records_the_trims_and_the_settled_memory():
    """bench/scale.py --memory-settle: the burst's memory figures have the per-binding RSS
    measured again after the pause, and the primary's and a copy holder's allocator figures
    and trim reports (haha.alloctrim) after the check and after the pause."""
    import json
    import os
    import subprocess
    import sys

    bench = os.path.join(os.path.dirname(__file__), "..", "bench", "scale.py")
    out = subprocess.run([sys.executable, bench, "--nodes", "8", "--workers", "1",
                          "--timeout", "60", "--phases", "burst", "--memory-settle", "0.5"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout)
    memory = report["raw"]["memory"]
    assert memory["settle_s"] == 0.5
    assert isinstance(memory["per_primary_settled"], int)
    assert isinstance(memory["per_copy_settled"], int)
    for key in ("after_burst", "after_settle"):
        for name in ("ha1", "ha2"):
            trim = memory[key][name]["trim"]
            assert trim["enabled"] is True and trim["interval_s"] == 10.0
            assert memory[key][name]["rss"] > 0
    assert "trim" in memory["split"]["ha1"]
    (case,) = [r for r in report["results"] if r["case"] == "memory per binding"]
    assert case["per_primary_settled"] == memory["per_primary_settled"]
