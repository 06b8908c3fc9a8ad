"""Prometheus metrics of one daemon, through ``prometheus_client``, served by twisted.web.

Each service owns a :class:`ServiceMetrics` with its **own** ``CollectorRegistry`` (never the
process-wide default), so several home agents and mobile nodes in one process do not collide.
It holds:

- the daemon's counters (``IControllable.counters()``, the same numbers ``haha-ctl counters``
  shows), read at each scrape and exposed as ``_total`` counter families with HELP text: a
  counter name such as ``sent.BindingAck`` becomes ``haha_messages_sent_total{message=
  "BindingAck"}`` (:func:`classify`; :data:`CATALOGUE` lists every family);
- gauges read from the state machine at each scrape (bindings by kind, peers by state, state);
- histograms of registration latency, synchronisation latency (BIU sent to BIA received) and
  take-over duration, fed by a :class:`haha.control.timing.LatencyTracker` attached to the
  adapter (:meth:`ServiceMetrics.attach`).

Every sample carries the labels ``role`` and ``address`` of its daemon. ``GET /metrics``
(:class:`MetricsResource`) answers in the Prometheus text format, or OpenMetrics when the
scraper asks for it; scrapes are logged at debug level. docs/metrics.md documents every metric.
"""

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard, Union

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web import http
from twisted.web.server import Request, Site

from ..core import homeagent as _ha, mobilenode as _mn
from ..logging import logger
from .timing import LatencyTracker

if TYPE_CHECKING:
    from ..core.effects import Event
    from ..core.homeagent import HomeAgent
    from ..core.mobilenode import MobileNode
    from ..protocol import Adapter

#: What a gauges callable returns: ``[(family, value or {label: value})]``.
Gauges = list[tuple[str, Union[float, dict[str, float]]]]


COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

#: Every metric family: name -> (type, extra label or None, HELP text).
CATALOGUE = {
    "haha_messages_sent_total": (
        COUNTER, "message", "Signalling messages sent, by message type."),
    "haha_messages_received_total": (
        COUNTER, "message",
        "Signalling messages received and accepted by the security policy, by message type."),
    "haha_packets_received_total": (
        COUNTER, None, "Packets handed to the daemon by its transport."),
    "haha_packets_dropped_total": (
        COUNTER, "reason", "Inbound packets dropped before the state machine, by reason."),
    "haha_send_failures_total": (
        COUNTER, "reason", "Messages that could not be sent, by reason."),
    "haha_events_total": (
        COUNTER, "event", "Events of the protocol state machine, by name."),
    "haha_forwarding_duties_total": (
        COUNTER, "duty", "Forwarding changes handed to the backend or tunnel, by kind."),
    "haha_core_total": (
        COUNTER, "counter", "Counters kept by the protocol state machine, by name."),
    "haha_esp_total": (
        COUNTER, "counter", "ESP (security association database) counters, by name."),
    "haha_policy_total": (
        COUNTER, "counter", "Security policy refusals, by reason."),
    "haha_rate_limiter_total": (
        COUNTER, "counter", "Rate limiter counters, by name."),
    "haha_transport_total": (
        COUNTER, "counter", "Transport counters (packets, errors), by name."),
    "haha_core_failures_total": (
        COUNTER, None, "Failures inside the state machine (logged with their traceback)."),
    "haha_effect_failures_total": (
        COUNTER, None, "Effects (sends, forwarding changes) whose execution failed."),
    "haha_tunnelled_packets_total": (
        COUNTER, None, "IPv6-in-IPv6 packets received and handed to the backend or tunnel."),
    "haha_tunnel_failures_total": (
        COUNTER, None, "Tunnelled packets whose decapsulation failed."),
    "haha_peers_refused_total": (
        COUNTER, "reason", "Peers proposed by discovery and refused, by reason."),
    "haha_home_announcements_total": (
        COUNTER, "result",
        "Mobile node back home: Neighbour Advertisements of its home address, by result."),
    "haha_metrics_failures_total": (
        COUNTER, None, "Latency measurements that failed (logged with their traceback)."),
    "haha_reactor_total": (
        COUNTER, "counter",
        "Reactor stall probe: its runs, and the stalls at or over 10, 50, 100 and 500 ms."),
    "haha_other_total": (
        COUNTER, "counter", "Counters of the daemon without a family of their own, by name."),
    "haha_bindings": (
        GAUGE, "kind", "Bindings in the cache: primary (served here) or copy (of a peer)."),
    "haha_peers": (
        GAUGE, "state", "Peer home agents: up (in the home agent list) or down (known, silent)."),
    "haha_state": (
        GAUGE, "state", "The daemon's protocol state (1 for the current one)."),
    "haha_reactor_longest_seconds": (
        GAUGE, "kind",
        "Reactor stall probe, since start: the longest stall (the reactor's own work without "
        "a break) and the longest delay of its timer (wall clock)."),
    "haha_registered": (
        GAUGE, None, "Mobile node: 1 while registered with a home agent."),
    "haha_registration_latency_seconds": (
        HISTOGRAM, None,
        "Home agent: Binding Update received to Binding Acknowledgement sent. Mobile node: "
        "first Binding Update of a registration to the acknowledgement accepting it."),
    "haha_sync_latency_seconds": (
        HISTOGRAM, None,
        "Binding Information Update sent to its Binding Information Acknowledgement."),
    "haha_takeover_seconds": (
        HISTOGRAM, None,
        "Taking over a failed peer's mobile nodes until each has registered here again."),
}

#: Counter names that are a family (and labels) of their own.
_EXACT = {
    "packets-received": ("haha_packets_received_total", None),
    "core-failed": ("haha_core_failures_total", None),
    "effect-failed": ("haha_effect_failures_total", None),
    "tunnelled-in": ("haha_tunnelled_packets_total", None),
    "tunnel-failed": ("haha_tunnel_failures_total", None),
    "home-na-sent": ("haha_home_announcements_total", "sent"),
    "home-na-no-interface": ("haha_home_announcements_total", "no-interface"),
    "metrics-failed": ("haha_metrics_failures_total", None),
}
#: Counter name prefixes (up to the first dot) and their family; the rest is the label.
_PREFIXES = {
    "sent": "haha_messages_sent_total",
    "received": "haha_messages_received_total",
    "dropped": "haha_packets_dropped_total",
    "send-failed": "haha_send_failures_total",
    "event": "haha_events_total",
    "duty": "haha_forwarding_duties_total",
    "core": "haha_core_total",
    "securityassociationdatabase": "haha_esp_total",
    "securitypolicy": "haha_policy_total",
    "ratelimiter": "haha_rate_limiter_total",
    "peer-refused": "haha_peers_refused_total",
    "reactor": "haha_reactor_total",
}

#: Histogram buckets (seconds). Registration at a home agent is processing time (ms); at a
#: mobile node it includes round trips and retransmissions (seconds).
REGISTRATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0, 30.0, 60.0)
SYNC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0)
TAKEOVER_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

#: States a gauge shows, so that every state is present (0) and queries need no absent().
HOME_AGENT_STATES = (_ha.CREATED, _ha.BOOTING, _ha.SERVING, _ha.DRAINING, _ha.STOPPED)
MOBILE_NODE_STATES = (_mn.IDLE, _mn.HOME, _mn.DISCOVERING, _mn.REGISTERING, _mn.REGISTERED,
                      _mn.REFRESHING, _mn.SWITCHING, _mn.DEREGISTERING)


def _one_hot(states: Iterable[str], current: str) -> dict[str, float]:
    out: dict[str, float] = {s: int(current == s) for s in states}
    out.setdefault(str(current), 1)
    return out


def classify(name: str) -> tuple[str, str | None]:
    """``(family, label value or None)`` of the daemon counter ``name``."""
    exact = _EXACT.get(name)
    if exact is not None:
        return exact
    prefix, dot, rest = name.partition(".")
    if dot:
        family = _PREFIXES.get(prefix)
        if family is None and prefix.endswith("transport"):
            family = "haha_transport_total"
        if family is not None:
            return family, rest
    return "haha_other_total", name


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Family:
    """Builds one family at scrape time with the daemon's labels in front."""

    def __init__(self, name: str, labels: Mapping[str, str]) -> None:
        kind, extra, text = CATALOGUE[name]
        self.extra = extra
        self.base = labels
        names = list(labels) + ([extra] if extra else [])
        cls = CounterMetricFamily if kind == COUNTER else GaugeMetricFamily
        self.family = cls(name, text, labels=names)

    def add(self, value: float, label: str | None = None) -> None:
        values: list[Any] = list(self.base.values()) + ([label] if self.extra else [])
        self.family.add_metric(values, float(value))


class _DaemonCollector:
    """The counters and gauges of one daemon, read when scraped."""

    def __init__(self, counters: Callable[[], Mapping[str, object]], gauges: Callable[[], Gauges],
                 labels: Mapping[str, str]) -> None:
        self.counters = counters
        self.gauges = gauges
        self.labels = labels

    def collect(self) -> Iterator[Any]:
        families: dict[str, _Family] = {}

        def family(name: str) -> _Family:
            f = families.get(name)
            if f is None:
                f = families[name] = _Family(name, self.labels)
            return f

        for name, value in sorted(self.counters().items()):
            # *_now are the gauges below under their own names; text is not a number.
            if not _is_number(value) or name.endswith("_now"):
                continue
            fam, label = classify(name)
            family(fam).add(value, label)
        for fam, values in self.gauges():
            if isinstance(values, dict):
                for label, value in values.items():
                    family(fam).add(value, label)
            else:
                family(fam).add(values)
        for f in families.values():
            yield f.family


def home_agent_gauges(machine: "HomeAgent") -> Gauges:
    """The gauges of a :class:`haha.core.homeagent.HomeAgent`."""
    primaries = machine.cache.primary_count
    live = set(machine.peers.entries)
    down = len(set(machine.known_peers) - live)
    return [
        ("haha_bindings", {"primary": primaries, "copy": len(machine.cache) - primaries}),
        ("haha_peers", {"up": len(live), "down": down}),
        ("haha_state", _one_hot(HOME_AGENT_STATES, machine.state)),
    ]


def mobile_node_gauges(machine: "MobileNode") -> Gauges:
    """The gauges of a :class:`haha.core.mobilenode.MobileNode`."""
    return [
        ("haha_registered", int(machine.home_agent is not None)),
        ("haha_state", _one_hot(MOBILE_NODE_STATES, machine.state)),
    ]


class ServiceMetrics:
    """The metrics of one service (module docstring). ``counters`` and ``gauges`` are
    callables read at each scrape (``gauges`` returns ``[(family, value or {label: value})]``);
    ``labels`` the daemon's ``{"role": ..., "address": ...}``."""

    def __init__(self, counters: Callable[[], Mapping[str, object]], gauges: Callable[[], Gauges],
                 labels: Mapping[str, str]) -> None:
        self.labels = dict(labels)
        self.role = self.labels.get("role")
        self.log = logger("haha.metrics", self.labels.get("address"))
        self.registry = CollectorRegistry()
        self.registry.register(_DaemonCollector(counters, gauges, self.labels))
        names = list(self.labels)
        values = list(self.labels.values())

        def histogram(name: str, buckets: Sequence[float]) -> Any:
            h = Histogram(name, CATALOGUE[name][2], names, registry=self.registry,
                          buckets=buckets)
            return h.labels(*values)

        self.registration = histogram("haha_registration_latency_seconds",
                                      REGISTRATION_BUCKETS)
        self.sync: Any = None
        self.takeover: Any = None
        if self.role == "home-agent":
            self.sync = histogram("haha_sync_latency_seconds", SYNC_BUCKETS)
            self.takeover = histogram("haha_takeover_seconds", TAKEOVER_BUCKETS)
        self.tracker = LatencyTracker(
            "home-agent" if self.role == "home-agent" else "mobile-node",
            observe_registration=self.registration.observe,
            observe_sync=self.sync.observe if self.sync else _ignore,
            observe_takeover=self.takeover.observe if self.takeover else _ignore)

    def attach(self, adapter: "Adapter") -> "ServiceMetrics":
        """Measure latencies from ``adapter``'s messages and events (a
        :class:`haha.protocol.Adapter`). A failure of the measurement is logged and counted
        (``metrics-failed``), never passed on: the packet or event is processed as usual."""
        tracker = self.tracker

        def message(direction: str, msg: object, peer: Any, now: float) -> None:
            try:
                tracker.message(direction, msg, peer, now)
            except Exception:
                self._failed(adapter)

        def event(e: "Event") -> None:
            try:
                tracker.event(e, adapter.now())
            except Exception:
                self._failed(adapter)

        adapter.message_taps.append(message)
        adapter.observers.append(event)
        return self

    def _failed(self, adapter: "Adapter") -> None:
        adapter.counters["metrics-failed"] += 1
        self.log.failure("measuring a latency failed")

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """``(body bytes, content type)`` for a scraper sending ``accept``."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _ignore(seconds: float) -> None:
    return None


class MetricsResource(Resource):
    """``GET /metrics`` of one :class:`ServiceMetrics`; anything else is 404."""

    isLeaf = True

    def __init__(self, metrics: ServiceMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 - twisted.web hook
        if request.path != b"/metrics":
            request.setResponseCode(404)
            return b"not found: try /metrics\n"
        accept = request.getHeader(b"accept")
        body, content_type = self.metrics.exposition(accept.decode("latin-1") if accept else None)
        request.setHeader(b"content-type", content_type.encode())
        peer = request.getClientAddress()
        self.metrics.log.debug("metrics of {role} {address} scraped by {client}",
                               role=self.metrics.role,
                               address=self.metrics.labels.get("address"),
                               client=getattr(peer, "host", peer))
        return body


def metrics_site(metrics: ServiceMetrics) -> Site:
    """A twisted.web ``Site`` serving :class:`MetricsResource` (scrapes are not access-logged:
    :class:`MetricsResource` logs them at debug level)."""
    return _QuietSite(MetricsResource(metrics))


class _QuietSite(Site):
    def log(self, request: http.Request) -> None:
        """No access log: :class:`MetricsResource` logs scrapes at debug level."""
