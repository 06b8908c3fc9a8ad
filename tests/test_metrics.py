"""The metrics endpoint: real services on the in-memory hub, scraped over HTTP on loopback.

The services run under a task.Clock (test_service.Network: three home agents and a mobile
node, ESP included); each one's real metrics resource is served by the real reactor on
127.0.0.1 and fetched by an HTTP client in a thread, then parsed with prometheus_client's
parser.
"""

import gc
import json
import os
import re
import urllib.error
import urllib.request

import pytest_twisted
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads
from twisted.logger import LogLevel, globalLogPublisher

from haha import logging as haha_logging
from haha.control.metrics import CATALOGUE, HISTOGRAM, classify, metrics_site
from test_service import HAS, HOA, Network

ROOT = os.path.join(os.path.dirname(__file__), "..")
HA1 = {"address": str(HAS[0]), "role": "home-agent"}
HA2 = {"address": str(HAS[1]), "role": "home-agent"}
MN = {"address": str(HOA), "role": "mobile-node"}


class Scraper:
    """Serves the metrics of some services on loopback and scrapes them over HTTP."""

    def __init__(self):
        self.ports = {}

    def serve(self, name, service):
        self.ports[name] = reactor.listenTCP(0, metrics_site(service.metrics),
                                             interface="127.0.0.1")

    def get(self, name, path="/metrics", accept=None):
        """Fires with ``(status, content type, body text)``."""
        port = self.ports[name].getHost().port
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                         headers={"Accept": accept} if accept else {})

        def fetch():
            try:
                with urllib.request.urlopen(request, timeout=10) as r:
                    return r.status, r.headers["content-type"], r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.headers["content-type"], e.read().decode()

        return threads.deferToThread(fetch)

    @defer.inlineCallbacks
    def scrape(self, name):
        """``{(sample name, frozenset of labels): value}`` and ``{family: help}``."""
        status, content_type, text = yield self.get(name)
        assert status == 200 and content_type.startswith("text/plain")
        samples, helps = {}, {}
        for family in text_string_to_metric_families(text):
            helps[family.name] = family.documentation
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        return samples, helps

    @defer.inlineCallbacks
    def close(self):
        for port in self.ports.values():
            yield port.stopListening()


def value(samples, name, base, **labels):
    return samples.get((name, frozenset({**base, **labels}.items())))


@pytest_twisted.inlineCallbacks
def test_scraped_values_move_with_traffic(tmp_path):
    """Before any traffic the gauges and histograms are zero; after the node registers, the
    scrapes show the messages, the binding (primary at ha1, copy at ha2), the peers, and one
    registration (home agent and node side) and synchronisation latency each."""
    net = Network(tmp_path)
    web = Scraper()
    for name, service in (("ha1", net.has[0]), ("ha2", net.has[1]), ("mn", net.mn)):
        web.serve(name, service)
    try:
        before, helps = yield web.scrape("ha1")
        assert value(before, "haha_bindings", HA1, kind="primary") == 0
        assert value(before, "haha_registration_latency_seconds_count", HA1) == 0
        assert value(before, "haha_sync_latency_seconds_count", HA1) == 0
        assert value(before, "haha_state", HA1, state="created") == 1
        net.start()
        ha1, helps = yield web.scrape("ha1")
        ha2, _ = yield web.scrape("ha2")
        mn, mn_helps = yield web.scrape("mn")
    finally:
        yield web.close()
    assert value(ha1, "haha_messages_received_total", HA1, message="BindingUpdate") >= 1
    assert value(ha1, "haha_messages_sent_total", HA1, message="BindingAck") >= 1
    assert value(ha1, "haha_bindings", HA1, kind="primary") == 1
    assert value(ha1, "haha_bindings", HA1, kind="copy") == 0
    assert value(ha2, "haha_bindings", HA2, kind="copy") == 1
    assert value(ha1, "haha_peers", HA1, state="up") == 2
    assert value(ha1, "haha_state", HA1, state="serving") == 1
    assert value(ha1, "haha_registration_latency_seconds_count", HA1) == 1
    assert value(ha1, "haha_sync_latency_seconds_count", HA1) >= 1
    assert value(ha1, "haha_esp_total", HA1, counter="auth-failed") == 0
    assert value(mn, "haha_registered", MN) == 1
    assert value(mn, "haha_registration_latency_seconds_count", MN) == 1
    # The clock moved in 0.1 s steps while the BU was on its way: the node saw 0.1 s.
    assert abs(value(mn, "haha_registration_latency_seconds_sum", MN) - 0.1) < 1e-9
    assert value(mn, "haha_registration_latency_seconds_bucket", MN, le="0.25") == 1
    assert value(mn, "haha_registration_latency_seconds_bucket", MN, le="0.05") == 0
    # Every family has its HELP text from the catalogue; no family outside it.
    for family, text in list(helps.items()) + list(mn_helps.items()):
        if family.endswith("_created"):  # the text format's creation time of a histogram
            family = family[:-8]
        assert family in _families(), family
        assert text == CATALOGUE[_families()[family]][2]


def _families():
    """Parsed family name -> catalogue name (the parser strips counters' _total)."""
    out = {}
    for name, (kind, _, _) in CATALOGUE.items():
        out[name[:-6] if name.endswith("_total") else name] = name
    return out


@pytest_twisted.inlineCallbacks
def test_takeover_duration_and_peer_down_are_scraped(tmp_path):
    """ha1 crashes; ha2 takes its node over and the node registers with it: ha2's scrape shows
    one take-over, lasting from the take-over to the node's new registration, and ha1 as a
    peer down."""
    net = Network(tmp_path)
    web = Scraper()
    net.hub.latency = 0.05  # one way, so that the re-registration takes time
    web.serve("ha2", net.has[1])
    try:
        net.start()
        before, _ = yield web.scrape("ha2")
        net.ends[0].stop()  # a crash: no goodbye
        net.has[0].adapter.running = False
        net.has[0].adapter.stop_timer()
        net.run(6)
        after, _ = yield web.scrape("ha2")
    finally:
        yield web.close()
    assert net.mn.status()["home_agent"] == str(HAS[1])
    assert value(before, "haha_takeover_seconds_count", HA2) == 0
    assert value(after, "haha_takeover_seconds_count", HA2) == 1
    # The switch request to the node and its Binding Update back: two trips of 0.05 s, each
    # delivered at the next 0.1 s step of the test's clock.
    assert abs(value(after, "haha_takeover_seconds_sum", HA2) - 0.2) < 1e-9
    assert value(after, "haha_events_total", HA2, event="take-over") == 1
    assert value(after, "haha_peers", HA2, state="down") == 1
    assert value(after, "haha_peers", HA2, state="up") == 1
    assert value(after, "haha_bindings", HA2, kind="primary") == 1


@pytest_twisted.inlineCallbacks
def test_scrapes_are_logged_at_debug_only(tmp_path):
    """A scrape logs one debug event naming the daemon (and nothing at info or above: no
    access log line)."""
    net = Network(tmp_path)
    web = Scraper()
    web.serve("ha1", net.has[0])
    events = []
    globalLogPublisher.addObserver(events.append)
    haha_logging.configure("debug")
    try:
        yield web.scrape("ha1")
        yield web.scrape("ha1")
    finally:
        haha_logging.configure("info")
        globalLogPublisher.removeObserver(events.append)
        yield web.close()
    scrapes = [e for e in events if e.get("log_namespace") == "haha.metrics"]
    assert len(scrapes) == 2
    assert all(e["log_level"] == LogLevel.debug and e["address"] == str(HAS[0])
               for e in scrapes)
    loud = [e for e in events if e.get("log_level", LogLevel.info) >= LogLevel.info]
    assert loud == []


@pytest_twisted.inlineCallbacks
def test_openmetrics_on_request_and_404_elsewhere(tmp_path):
    """A scraper asking for OpenMetrics gets it (with # EOF); other paths are 404."""
    net = Network(tmp_path)
    web = Scraper()
    web.serve("ha1", net.has[0])
    try:
        status, content_type, text = yield web.get("ha1", accept="application/openmetrics-text")
        missing, _, body = yield web.get("ha1", path="/")
    finally:
        yield web.close()
    assert status == 200 and content_type.startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF") and "haha_bindings{" in text
    assert missing == 404 and "try /metrics" in body


def test_two_services_have_their_own_registries(tmp_path):
    """Three home agents and a node in one process: each registry holds only its own daemon's
    samples, and nothing of haha is in prometheus_client's global registry."""
    net = Network(tmp_path)
    net.start()
    registries = [s.metrics.registry for s in net.has + [net.mn]]
    assert len({id(r) for r in registries}) == 4
    for service, registry in zip(net.has, registries):
        addresses = {s.labels["address"] for f in registry.collect() for s in f.samples}
        assert addresses == {str(service.config.address)}
    assert not [f for f in REGISTRY.collect() if f.name.startswith("haha_")]


def test_every_counter_name_has_a_family():
    """Each kind of counter name maps to its family and label; anything else to
    haha_other_total with its full name, so no counter is lost."""
    assert classify("sent.BindingAck") == ("haha_messages_sent_total", "BindingAck")
    assert classify("received.HaHello") == ("haha_messages_received_total", "HaHello")
    assert classify("dropped.malformed-truncated") == ("haha_packets_dropped_total",
                                                       "malformed-truncated")
    assert classify("send-failed.no-sa") == ("haha_send_failures_total", "no-sa")
    assert classify("event.take-over") == ("haha_events_total", "take-over")
    assert classify("duty.InstallRoute") == ("haha_forwarding_duties_total", "InstallRoute")
    assert classify("core.bu-rejected:129") == ("haha_core_total", "bu-rejected:129")
    assert classify("securityassociationdatabase.replay") == ("haha_esp_total", "replay")
    assert classify("securitypolicy.unprotected") == ("haha_policy_total", "unprotected")
    assert classify("ratelimiter.rate-limited") == ("haha_rate_limiter_total", "rate-limited")
    assert classify("udptransport.sent") == ("haha_transport_total", "sent")
    assert classify("rawtransport.send_error.ENETUNREACH") == ("haha_transport_total",
                                                               "send_error.ENETUNREACH")
    assert classify("peer-refused.no-key") == ("haha_peers_refused_total", "no-key")
    assert classify("home-na-sent") == ("haha_home_announcements_total", "sent")
    assert classify("packets-received") == ("haha_packets_received_total", None)
    assert classify("core-failed") == ("haha_core_failures_total", None)
    assert classify("something-new") == ("haha_other_total", "something-new")
    assert classify("acme.widgets") == ("haha_other_total", "acme.widgets")


def test_every_counter_of_a_busy_run_is_exposed(tmp_path):
    """After registration and a take-over, every numeric counter haha-ctl shows is in
    the exposition with the same value (except the *_now ones, which are the gauges)."""
    net = Network(tmp_path)
    net.start()
    net.ends[0].stop()
    net.has[0].adapter.running = False
    net.has[0].adapter.stop_timer()
    net.run(6)
    ha = net.has[1]
    exposed = {}
    # No garbage collection between the scrape and haha-ctl's counters: the stall probe
    # counts collections (reactor.gc0-collections), and one in between made them differ.
    gc.disable()
    try:
        for family in ha.metrics.registry.collect():
            if family.type != "counter":
                continue
            extra = CATALOGUE[family.name + "_total"][1]
            for s in family.samples:
                if s.name.endswith("_total"):
                    exposed[(s.name, s.labels[extra] if extra else None)] = s.value
        counters = {k: v for k, v in ha.counters().items() if not k.endswith("_now")}
    finally:
        gc.enable()
    assert len(counters) > 40
    for name, number in counters.items():
        assert exposed[classify(name)] == number, name
    assert len(exposed) == len(counters)


def test_docs_document_every_metric():
    """docs/metrics.md names every family of the catalogue, and only those (with the
    histograms' _bucket/_sum/_count series)."""
    text = open(os.path.join(ROOT, "docs", "metrics.md")).read()
    named = set(re.findall(r"\bhaha_[a-z_]+[a-z]", text))
    for name in CATALOGUE:
        assert f"`{name}`" in text, name
    assert named <= _series(), named - _series()


def _series():
    out = set(CATALOGUE)
    for name, (kind, _, _) in CATALOGUE.items():
        if kind == HISTOGRAM:
            out |= {name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
    return out


def test_grafana_dashboard_queries_existing_metrics():
    """conf/grafana/haha.json is valid JSON; every panel query names only metrics that exist,
    and the three histograms and the binding, peer and drop metrics all have a panel."""
    with open(os.path.join(ROOT, "conf", "grafana", "haha.json")) as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bhaha_[a-z_]+[a-z]", expr))
        assert names, expr
        assert names <= _series(), (expr, names - _series())
        used |= names
    for wanted in ("haha_registration_latency_seconds_bucket", "haha_sync_latency_seconds_bucket",
                   "haha_takeover_seconds_bucket", "haha_bindings", "haha_peers",
                   "haha_packets_dropped_total", "haha_state"):
        assert wanted in used, wanted
    assert all(p.get("title") for p in dashboard["panels"])


def test_a_failing_measurement_does_not_stop_the_daemon(tmp_path):
    """If the latency tracker raises, the failure is counted and logged, and registration
    and synchronisation go on as without metrics."""
    net = Network(tmp_path)

    def broken(*args):
        raise RuntimeError("tracker bug")

    for service in net.has + [net.mn]:
        service.metrics.tracker.message = broken
        service.metrics.tracker.event = broken
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        net.start()
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert net.mn.status()["state"] == "registered"
    assert net.has[1].bindings()[0]["copy"] is True
    c = net.has[0].counters()
    assert c["metrics-failed"] > 0 and c.get("effect-failed", 0) == 0
    assert c.get("core-failed", 0) == 0
    assert any(e.get("log_failure") is not None and e.get("log_namespace") == "haha.metrics"
               for e in events)
    assert net.has[0].metrics.registry.get_sample_value(
        "haha_metrics_failures_total", HA1) == c["metrics-failed"]
