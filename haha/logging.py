"""Logging through twisted.logger with structured fields, filtered by ``[log] level``.

Every haha logger is made by :func:`logger` and publishes through one filtering observer in
front of the global publisher, so ``[log] level`` (:func:`configure`) applies to haha's events
without touching what twistd or an embedding application logs. Events carry their facts as
fields (``peer``, ``home_address``, ``reason``, ...) so a JSON observer keeps them:
``twistd --logger haha.logging.json_observer haha --config ha1.conf`` writes one JSON object per
event on standard output.

A logger made with an ``identity`` (a home agent's address, a mobile node's home address) tags
each event with it: the field ``identity`` (kept by the JSON observer) and the event's system,
``<namespace>#<level> <identity>``, which twistd's text log shows in brackets, so the lines of
several daemons in one process can be told apart.
"""

import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    jsonFileLogObserver,
)
from zope.interface import implementer

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
          "error": LogLevel.error}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
#: namespace -> the level it shows from; emptied by configure()
_thresholds: dict[str, LogLevel] = {}

# The global publisher itself (it provides ILogObserver); twistd and embedders add their
# observers to it, never replace it.
observer = FilteringLogObserver(globalLogPublisher, [_predicate])


def logger(namespace: str, identity: object = None) -> Logger:
    """A Logger for ``namespace`` (``haha.<part>``) behind the level filter; with
    ``identity``, its events carry it (module docstring)."""
    if identity is None:
        return Logger(namespace=namespace, observer=observer)
    return Logger(namespace=namespace, observer=_Tagging(str(identity)))


@implementer(ILogObserver)
class _Tagging:
    """An observer adding ``identity`` (and a system naming it) before the level filter."""

    def __init__(self, identity: str) -> None:
        self.identity = identity

    def __call__(self, event: dict[str, Any]) -> None:
        event.setdefault("identity", self.identity)
        if event.get("log_system") is None:
            level = event.get("log_level")
            event["log_system"] = (f"{event.get('log_namespace', '-')}"
                                   f"#{getattr(level, 'name', level)} {self.identity}")
        observer(event)


def configure(level: str = "info", namespace: str = "haha") -> None:
    """Show haha events at ``level`` and above."""
    _predicate.setLogLevelForNamespace(namespace, LEVELS[level])
    _thresholds.clear()


def level_of(namespace: str = "haha") -> str:
    """The name of the level ``namespace`` shows events from (what :func:`configure` set)."""
    shown = _predicate.logLevelForNamespace(namespace)
    return next(name for name, lvl in LEVELS.items() if lvl == shown)


def enabled(log: Logger, level: LogLevel) -> bool:
    """Whether ``log`` (a :func:`logger`) would publish an event at ``level``: ask before
    building fields on a hot path, so what the level discards costs one dictionary lookup."""
    if log.observer is not observer and type(log.observer) is not _Tagging:
        return True  # an embedder's own logger: its observers decide
    namespace = log.namespace
    try:
        threshold = _thresholds[namespace]
    except KeyError:
        threshold = _thresholds[namespace] = _predicate.logLevelForNamespace(namespace)
    return level >= threshold


def json_observer() -> ILogObserver:
    """A twistd ``--logger`` factory: one JSON object per event on standard output."""
    return jsonFileLogObserver(sys.stdout)


def class_logger() -> Logger:
    """A Logger to use as a class attribute (its namespace becomes the class's full name)."""
    return Logger(observer=observer)
