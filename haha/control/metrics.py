"""Metrics in the Prometheus text exposition format, served by twisted.web.

``GET /metrics`` returns every counter of the daemon (``IControllable.counters()``) as
``haha_<name>{role="...",address="..."} <value>``; names are sanitised to the metric grammar.
"""

import re

from twisted.web.resource import Resource
from twisted.web.server import Site

_BAD = re.compile(r"[^a-zA-Z0-9_]")


def render_metrics(counters, labels):
    label = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    lines = []
    for name in sorted(counters):
        value = counters[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric = "haha_" + _BAD.sub("_", name)
        lines.append(f"# TYPE {metric} gauge" if name.endswith(("_now", "_count")) else
                     f"# TYPE {metric} counter")
        lines.append(f"{metric}{{{label}}} {value}")
    return "\n".join(lines) + "\n"


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, target, labels):
        super().__init__()
        self.target = target
        self.labels = labels

    def render_GET(self, request):  # noqa: N802 - twisted.web hook
        if request.path != b"/metrics":
            request.setResponseCode(404)
            return b"not found: try /metrics\n"
        request.setHeader(b"content-type", b"text/plain; version=0.0.4")
        return render_metrics(self.target.counters(), self.labels).encode()


def metrics_site(target, labels):
    return Site(MetricsResource(target, labels))
