"""``twistd haha --config ha1.conf`` and ``twistd haha-mn --config mn1.conf``: wiring only.

The construction lives in :mod:`haha.service` (``HomeAgentService.build``,
``MobileNodeService.build``); a configuration mistake, or anything else that keeps the daemon
from starting, exits with status 2 and its one-line message (:mod:`haha.startup`).
"""

import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.python import usage

from .config import ConfigError, load_home_agent, load_mobile_node


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = "Run a HAHA home agent (Mobile IPv6 / NEMO) configured by FILE (docs/configuration.md)."
    optParameters = [["config", "c", None, "configuration file"]]

    def postOptions(self) -> None:  # noqa: N802 - Twisted hook
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")


def make(name: str, loader: Callable[[str], Any], service: str,
         options: usage.Options) -> MultiService:
    """Load ``options['config']`` with ``loader`` and build ``service`` from it. A start-up
    failure, now or when twistd starts the service, is one line on standard error and exit
    status 2 (:mod:`haha.startup`)."""
    from twisted.internet import reactor

    from .clock import use_monotonic_time
    from .logging import configure
    from .startup import StartupError, exit_on_failure, report

    use_monotonic_time(reactor)  # wall-clock steps move no deadline (haha.clock)

    try:
        config = loader(options["config"])
        configure(config.log_level)
        built = getattr(__import__("haha.service", fromlist=[service]), service).build(
            config, reactor)
    except (ConfigError, StartupError) as e:
        report(name, e, sys.stderr, logged=False)
        raise SystemExit(2) from None
    exit_on_failure(name, reactor)
    from .durability import daemon_signals

    reactor.callWhenRunning(daemon_signals, built, reactor, loader)  # SIGHUP, SIGQUIT...
    if service == "HomeAgentService":
        # Full garbage collections stay small however many bindings are held (gcfreeze.py).
        from .gcfreeze import GcFreezer

        GcFreezer().setServiceParent(built)
    return built


def makeService(options: usage.Options) -> MultiService:  # noqa: N802 - twistd hook
    return make("haha", load_home_agent, "HomeAgentService", options)


__all__ = ["Options", "makeService", "make", "load_mobile_node"]
