"""Embedding: several daemons in one process, told apart by name and in the logs; the
documented example runs; the in-memory helpers take addresses as text."""

import contextlib
import io
import os
import re
import tempfile

import pytest
from twisted.application.service import MultiService
from twisted.logger import formatEventAsClassicLogText, globalLogPublisher

from haha.testing import Network as CoreNetwork
from test_service import HAS, HOA, Network

DESIGN = os.path.join(os.path.dirname(__file__), "..", "docs", "design.md")


def test_services_are_named_after_their_address(tmp_path):
    """Three home agents and a mobile node fit in one MultiService, each found by its name."""
    net = Network(tmp_path)
    app = MultiService()
    for service in net.has + [net.mn]:
        service.setServiceParent(app)
    assert sorted(s.name for s in app) == [f"haha {a}" for a in HAS] + [f"haha-mn {HOA}"]
    assert app.getServiceNamed(f"haha {HAS[1]}") is net.has[1]
    assert app.getServiceNamed(f"haha-mn {HOA}") is net.mn


def test_log_lines_carry_the_daemon_identity(tmp_path):
    """What each daemon's adapter logs carries its address: the field ``identity`` and the
    system twistd's text log shows; two home agents' lines are told apart."""
    net = Network(tmp_path)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        net.start()
    finally:
        globalLogPublisher.removeObserver(events.append)
    mine = [e for e in events if e.get("log_namespace") == "haha.home-agent"]
    by = {}
    for e in mine:
        by.setdefault(e["identity"], []).append(e)
    assert set(by) == {str(a) for a in HAS}
    for address, lines in by.items():
        started = [e for e in lines if e.get("event") == "started"]
        assert len(started) == 1
        text = formatEventAsClassicLogText(started[0])
        assert f"[haha.home-agent#info {address}] started" in text
    created = [e for e in mine if e.get("event") == "binding-created"]
    assert [e["identity"] for e in created] == [str(HAS[0])]
    node = [e for e in events if e.get("log_namespace") == "haha.mobile-node"]
    assert node and {e["identity"] for e in node} == {str(HOA)}
    # The services' own lines (started, ...) carry it too.
    service = [e for e in events if e.get("log_namespace") == "haha.service"]
    assert {e["identity"] for e in service} == {str(a) for a in HAS} | {str(HOA)}


def test_an_explicit_log_system_is_kept():
    """A logger with an identity adds the field but leaves a system the caller chose."""
    from haha.logging import logger

    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        logger("haha.test", "2001:db8:1::9").info("hello", log_system="mine")
        logger("haha.test").info("plain")
    finally:
        globalLogPublisher.removeObserver(events.append)
    tagged, plain = [e for e in events if e.get("log_namespace") == "haha.test"]
    assert tagged["log_system"] == "mine" and tagged["identity"] == "2001:db8:1::9"
    assert "identity" not in plain and plain.get("log_system") is None


def _example():
    text = open(DESIGN).read()
    section = text[text.index("\n## Embedding\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    output = re.search(r"prints\n\n```text\n(.*?)```", section, re.S).group(1)
    return code, output


def test_design_doc_embedding_example_runs(tmp_path, monkeypatch):
    """The example of docs/design.md (two home agents and a mobile node in one
    MultiService on the in-memory hub) runs and prints what the document says it prints."""
    code, expected = _example()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out = io.StringIO()
    namespace = {"__name__": "embedding_example"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/design.md", "exec"), namespace)
    assert out.getvalue() == expected
    stopped = namespace["app"].stopService()  # the home agents drain, then stop
    for _ in range(300):
        namespace["clock"].advance(0.1)
    assert stopped.called and not any(s.running for s in namespace["app"])


def test_core_network_takes_text_addresses():
    """haha.testing's network takes prefixes and addresses as text everywhere it takes them."""
    net = CoreNetwork(seed=3)
    has = net.add_home_agents(2, home_prefix="2001:db8:7::/64")
    assert [str(h.address) for h in has] == ["2001:db8:7::1", "2001:db8:7::2"]
    mn = net.add_mobile_node("mn", home_address="2001:db8:7::100",
                             home_prefix="2001:db8:7::/64", home_agents=["2001:db8:7::1"])
    net.run_for(20)
    mn.start("2001:db8:99::1")
    net.run_until_idle(timeout=60)
    assert str(mn.machine.home_agent) == "2001:db8:7::1"
    has[0].switch("2001:db8:7::100", "2001:db8:7::2")
    net.run_until_idle(timeout=60)
    assert str(mn.machine.home_agent) == "2001:db8:7::2"
    with pytest.raises(ValueError):
        net.add_home_agents(1, home_prefix="2001:db8:7::/200", names=["bad"])
