"""What keeps a daemon honest when its disk or its process is in trouble (service glue).

- :func:`boot_epoch_for`: this run's boot epoch (:mod:`haha.security.epoch`), its generation
  recorded in the sequence file before the first packet; a failed record is logged, not fatal.
- :func:`watch_store`: a sequence file that cannot be written (full disk, I/O error, read-only
  file system) is said once -- one error line and the ``sequencestore.failing`` gauge -- while
  the daemon serves on from memory; the first write that succeeds again says so too.
- :func:`install_signal_handlers`: what ``twistd`` leaves to the default action. SIGHUP re-reads
  the configuration and applies what can change at run time (:mod:`haha.reload`); SIGUSR2 and
  SIGALRM (and SIGUSR1 unless twistd uses it) are logged and ignored; SIGQUIT stops the daemon like SIGTERM (drain, goodbye, clean-up). SIGTERM
  and SIGINT are the reactor's own (logged by Twisted, then the service stops and drains).
  ``docs/operations.md`` lists what the operator sees for each.
"""

import signal
import time
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any

from .logging import logger
from .security.epoch import boot_epoch, generation_of

if TYPE_CHECKING:
    from .security.seqstore import SequenceStore

log = logger("haha.durability")


def watch_store(store: "SequenceStore") -> "SequenceStore":
    """Log a failing sequence file once per run of failures, and its recovery."""

    def failed(error: BaseException) -> None:
        log.error("cannot write the ESP sequence file {path}: {error}; serving on from memory "
                  "(sequence numbers stay unique; a crash before the disk is writable again is "
                  "covered by the boot epoch, docs/operations.md)",
                  path=store.path, error=getattr(error, "strerror", None) or str(error))

    def recovered() -> None:
        log.info("the ESP sequence file {path} is written again (after {n} failed writes)",
                 path=store.path, n=store.counters["write-failed"])

    store.on_failure = failed
    store.on_recovery = recovered
    return store


def boot_epoch_for(store: "SequenceStore | None", wall: float | None = None) -> int:
    """This run's boot epoch, recorded in ``store`` when it can be (logged either way)."""
    epoch, recorded = boot_epoch(store, time.time() if wall is None else wall)
    if store is not None and not recorded:
        log.warn("boot epoch {epoch:016x} not recorded in {path}: the next run takes its "
                 "generation from the clock", epoch=epoch, path=store.path)
    else:
        log.info("boot epoch {epoch:016x} (generation {generation})", epoch=epoch,
                 generation=generation_of(epoch))
    return epoch


#: Signals whose default action would end the process silently, and what haha does instead.
HANDLED = ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGQUIT")
#: Of those, the ones handled only when nobody else has (twistd handles SIGUSR1 when it logs to
#: a file).
IF_DEFAULT = ("SIGUSR1",)


def install_signal_handlers(service: Any, reactor: Any,
                            reload: Callable[[], object] | None = None,
                            signals: ModuleType = signal) -> list[int]:
    """Handle :data:`HANDLED` for ``service`` (which has ``adapter.counters``). ``reload`` is
    called (in the reactor thread) on SIGHUP; without one SIGHUP is logged and ignored.
    ``signals`` is the :mod:`signal` module (a fake in tests). Returns the signal numbers."""
    counters = service.adapter.counters

    def hangup() -> None:
        counters["signal.SIGHUP"] += 1
        if reload is None:
            log.info("SIGHUP: nothing to re-read; ignored")
            return
        log.info("SIGHUP: re-reading the configuration")
        try:
            reload()
        except Exception:
            counters["reload-failed"] += 1
            log.failure("SIGHUP: re-reading the configuration failed; running as before")

    def ignored(name: str) -> None:
        counters[f"signal.{name}"] += 1
        log.info("{signal} received: ignored (SIGHUP re-reads the configuration, SIGTERM stops)",
                 signal=name)

    def quit_() -> None:
        counters["signal.SIGQUIT"] += 1
        log.warn("SIGQUIT received: stopping as for SIGTERM (drain, goodbye, clean-up)")
        reactor.stop()

    actions: dict[str, Callable[[], None]] = {"SIGHUP": hangup, "SIGQUIT": quit_}
    for name in ("SIGUSR1", "SIGUSR2", "SIGALRM"):
        actions[name] = (lambda n: lambda: ignored(n))(name)
    installed: list[int] = []
    for name in HANDLED:
        number = getattr(signals, name, None)
        if number is None:
            continue
        if name in IF_DEFAULT and signals.getsignal(number) != signals.SIG_DFL:
            continue  # twistd's own (SIGUSR1 re-opens its log file)

        def handler(signum: int, frame: FrameType | None,
                    action: Callable[[], None] = actions[name]) -> None:
            # Runs between two bytecodes of whatever the reactor was doing: hand over.
            reactor.callFromThread(action)

        signals.signal(number, handler)
        installed.append(number)
    log.info("signal handlers installed: {names}", names=" ".join(
        signals.Signals(n).name if hasattr(signals, "Signals") else str(n) for n in installed))
    return installed


def daemon_signals(service: Any, reactor: Any, loader: Callable[[str], Any],
                   signals: ModuleType = signal) -> list[int]:
    """What ``twistd haha``/``haha-mn`` install once the reactor runs: a home agent re-reads
    its configuration on SIGHUP (:func:`haha.reload.reload_home_agent`); a mobile node logs
    SIGHUP and ignores it."""
    if getattr(service, "sadb", False) is False:  # a mobile node
        return install_signal_handlers(service, reactor, None, signals)
    from .inifile import ConfigError
    from .reload import reload_home_agent

    def reload() -> None:
        try:
            reload_home_agent(service, loader)
        except ConfigError as e:
            service.adapter.counters["reload-refused"] += 1
            log.error("SIGHUP: {error}; running on with the configuration loaded before",
                      error=str(e))

    return install_signal_handlers(service, reactor, reload, signals)


__all__ = ["HANDLED", "boot_epoch_for", "daemon_signals", "install_signal_handlers",
           "watch_store"]
