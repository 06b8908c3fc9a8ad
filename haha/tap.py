"""``twistd haha --config ha1.conf`` and ``twistd haha-mn --config mn1.conf``: wiring only.

The construction lives in :mod:`haha.service` (``HomeAgentService.build``,
``MobileNodeService.build``); a configuration mistake exits with its one-line, located message,
and a start the system refuses (a backend the kernel cannot serve, the same daemon running
already, netlink, nft or socket errors) with one line naming the reason.
"""

import sys

from twisted.python import usage

from .config import ConfigError, load_home_agent, load_mobile_node


class Options(usage.Options):
    synopsis = "--config FILE"
    longdesc = "Run a HAHA home agent (Mobile IPv6 / NEMO) configured by FILE (docs/configuration.md)."
    optParameters = [["config", "c", None, "configuration file"]]

    def postOptions(self):  # noqa: N802 - Twisted hook
        if not self["config"]:
            raise usage.UsageError("--config FILE is required")


def make(name, loader, service, options):
    """Load ``options['config']`` with ``loader`` and build ``service`` from it."""
    from twisted.internet import reactor

    from .logging import configure

    try:
        config = loader(options["config"])
        configure(config.log_level)
        built = getattr(__import__("haha.service", fromlist=[service]), service).build(
            config, reactor)
    except ConfigError as e:
        sys.stderr.write(f"{name}: {e}\n")
        raise SystemExit(2) from None
    _exit_cleanly_when_start_fails(name, built)
    return built


def _startup_errors():
    """What the system can refuse at start (no driver, a running twin, netlink, nft, sockets):
    a daemon reports these in one line, not with a traceback."""
    from .backends.common import StateBusy
    from .backends.netlink import KernelUnsupported
    from .backends.netsys import NetlinkFailure
    from .io.system import NftError

    return (KernelUnsupported, StateBusy, NetlinkFailure, NftError, OSError)


def _exit_cleanly_when_start_fails(name, built):
    """Under twistd only (embedders call ``startService`` themselves and get the exception):
    a start-up refusal by the system exits with status 1 and one line on standard error,
    ``haha: cannot start: <reason>``, instead of twistd's traceback."""
    start = built.startService
    errors = _startup_errors()

    def start_or_exit():
        try:
            start()
        except errors as e:
            sys.stderr.write(f"{name}: cannot start: {e}\n")
            raise SystemExit(1) from None

    built.startService = start_or_exit


def makeService(options):  # noqa: N802 - twistd hook
    return make("haha", load_home_agent, "HomeAgentService", options)


__all__ = ["Options", "makeService", "make", "load_mobile_node"]
