"""Start-up checks, and the one line a daemon that cannot start prints.

What the operating system would refuse later, deep inside a socket call or ``nft``, is checked
before anything is opened, and said in the operator's words: which interface does not exist,
that ``nft`` is missing, that root or ``CAP_NET_ADMIN`` is needed, which port is taken, which
directory is missing or not writable, that the same configuration runs already.
:func:`check_home_agent` and :func:`check_mobile_node` raise :class:`~haha.errors.StartupError`
(``cause``; ``fix``); ``HomeAgentService.build`` and ``MobileNodeService.build`` call them for
the parts they build from the configuration. Failures that still happen while a service starts
are turned into the same exception by :func:`explain` (the :func:`translated` decorator), so an
embedder catches one type.

``twistd haha`` and ``twistd haha-mn`` (:mod:`haha.tap`) print a :class:`StartupError` or a
:class:`~haha.inifile.ConfigError` as one line on standard error, log it, and exit with status
2: raised by ``makeService`` (before ``twistd`` daemonises) directly, raised by
``privilegedStartService``/``startService`` through :func:`exit_on_failure`.
"""

import errno
import functools
import os
import shutil
import socket
import stat
import sys
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

from .errors import StartupError
from .inifile import ConfigError
from .logging import logger
from .io.raw import pid_alive
from .statedir import ensure_directory

if TYPE_CHECKING:
    from .config import HomeAgentConfig, MobileNodeConfig

F = TypeVar("F", bound=Callable[..., Any])

log = logger("haha.startup")

#: ``<linux/capability.h>``
CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}

#: Mode of a runtime directory the daemon creates for its control socket.
RUNTIME_DIRECTORY_MODE = 0o750


# -- checks -------------------------------------------------------------------------------------


def check_home_agent(config: "HomeAgentConfig", transport: bool = True, backend: bool = True
                     ) -> None:
    """Raise :class:`StartupError` when ``config`` cannot start here; ``transport`` and
    ``backend`` say whether those are built from the configuration (not passed in)."""
    if backend:  # first: "runs already" explains a taken port or socket too
        from .service import kernel_state_path

        check_state_file(kernel_state_path(config))
    names = []
    if transport and config.transport.kind == "raw":
        names += [(n, "[transport] interfaces") for n in config.transport.interfaces]
    if config.home_interface and ((transport and config.transport.kind == "raw") or
                                  (backend and config.backend.name != "null")):
        names.append((config.home_interface, "[home-agent] home-interface"))
    _check_system(config, names, raw=transport and config.transport.kind == "raw",
                  admin=backend and config.backend.name in ("tun", "netlink"),
                  what="backend " + config.backend.name)
    if transport and config.transport.kind == "udp":
        _check_udp(config)
    _check_control(config)
    _check_sequence_file(config)


def check_mobile_node(config: "MobileNodeConfig", transport: bool = True, tunnel: bool = True
                      ) -> None:
    """:func:`check_home_agent` for a mobile node (``tunnel``: built from the configuration)."""
    names = []
    raw = transport and config.transport.kind == "raw"
    if raw:
        names += [(n, "[transport] interfaces") for n in config.transport.interfaces]
    if config.interface and raw:
        names.append((config.interface, "[mobile-node] interface"))
    _check_system(config, names, raw=raw,
                  admin=tunnel and config.backend.name in ("tun", "netlink"),
                  what=f"the {config.backend.name} tunnel")
    if transport and config.transport.kind == "udp":
        _check_udp(config)
    _check_control(config)
    _check_sequence_file(config)


def _check_system(config: "HomeAgentConfig | MobileNodeConfig",
                  names: Iterable[tuple[str, str]], raw: bool, admin: bool, what: str) -> None:
    for name, key in names:
        check_interface(name, f"{config.path}: {key}")
    missing: list[str] = []
    if raw:
        missing += ["CAP_NET_RAW", "CAP_NET_ADMIN"]
    elif admin:
        missing += ["CAP_NET_ADMIN"]
    have = effective_capabilities()
    missing = [c for c in dict.fromkeys(missing)
               if have is not None and not have & (1 << CAPABILITIES[c])]
    if missing:
        needs = "the raw transport (raw sockets, a netfilter table)" if raw else what
        if os.geteuid() == 0:
            raise StartupError(
                f"{needs} needs {' and '.join(missing)}, which this process has not got "
                "although it runs as root: its capability bounding set drops "
                f"{'them' if len(missing) > 1 else 'it'}",
                "allow them (systemd: CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW)")
        raise StartupError(
            f"{needs} needs root or {' and '.join(missing)}, and this process (uid "
            f"{os.geteuid()}) has not got {'them' if len(missing) > 1 else 'it'}",
            "run it as root, or grant the capabilities (systemd: AmbientCapabilities="
            "CAP_NET_ADMIN CAP_NET_RAW), or use [transport] kind = udp with backend = null "
            "for an unprivileged run")
    if raw and shutil.which("nft") is None:
        raise StartupError(
            "nft is not on PATH (the raw transport installs a netfilter table with it)",
            "install nftables (Debian: apt install nftables) or add its directory to PATH")


def check_interface(name: str, where: str) -> None:
    """The interface ``name`` exists (in this network namespace)."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        raise StartupError(f"{where}: interface {name} does not exist",
                           "name an existing interface (ip link lists them) or create it "
                           "before starting") from None


def effective_capabilities(status: str = "/proc/self/status") -> int | None:
    """The effective capability mask of this process, None when it cannot be read."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _check_sequence_file(config: "HomeAgentConfig | MobileNodeConfig") -> None:
    """The directory of the ESP sequence file (and the kernel state record beside it)."""
    path = config.security.sequence_file
    if config.security.mode == "none" or not path:
        return
    where = f"{config.path}: [security] sequence-file"
    directory = os.path.dirname(os.path.abspath(path))
    try:
        ensure_directory(directory)  # made with mode 0750 where no unit made it (statedir)
    except OSError as e:
        raise StartupError(
            f"{where}: the directory {directory} of {path} does not exist and cannot be "
            f"created ({e.strerror})",
            f"create it (mkdir -m 0750 {directory}; systemd: StateDirectory=) or choose "
            "another place") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(
            f"{where}: the directory {directory} of {path} is not writable by uid "
            f"{os.geteuid()}", "run the daemon as the directory's owner or make it writable")


def _check_udp(config: "HomeAgentConfig | MobileNodeConfig") -> None:
    if config.transport.udp_listen is None:
        return
    host, port = config.transport.udp_listen
    _check_port(socket.SOCK_DGRAM, host, port, f"{config.path}: [transport] udp-listen")


def _check_control(config: "HomeAgentConfig | MobileNodeConfig") -> None:
    for key, description in (("socket", config.control.socket),
                             ("metrics", config.control.metrics)):
        if description:
            check_endpoint(description, f"{config.path}: [control] {key}")


def endpoint_arguments(description: str) -> tuple[str, list[str], dict[str, str]]:
    """``(kind, positional, keywords)`` of a Twisted server endpoint string (``\\`` escapes)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in description:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    kind = parts[0].lower()
    args: list[str] = []
    kw: dict[str, str] = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            kw[key] = value
        else:
            args.append(part)
    return kind, args, kw


def check_endpoint(description: str, where: str) -> None:
    """A ``unix:`` endpoint's directory exists (created, mode 0750, when its parent does) and
    is writable, and no running process holds the socket; a ``tcp:`` port is free."""
    kind, args, kw = endpoint_arguments(description)
    if kind == "unix":
        path = kw.get("address") or (args[0] if args else None)
        if path:
            check_socket_path(path, where)
    elif kind in ("tcp", "tcp6"):
        text = kw.get("port") or (args[0] if args else None)
        try:
            port = int(text) if text is not None else None
        except ValueError:
            port = None
        if port is None:
            return  # twistd says what is wrong with the description itself
        host = kw.get("interface", "::" if kind == "tcp6" else "")
        _check_port(socket.SOCK_STREAM, host, port, where)


def check_socket_path(path: str, where: str) -> None:
    """The directory of unix socket ``path`` exists (made when its parent does) and is
    writable, and no running process answers on the socket."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK):
            try:
                os.mkdir(directory, RUNTIME_DIRECTORY_MODE)
                os.chmod(directory, RUNTIME_DIRECTORY_MODE)  # whatever the umask
            except FileExistsError:
                pass
            except OSError as e:
                raise StartupError(f"{where}: cannot create the directory {directory} of the "
                                   f"control socket: {e.strerror}",
                                   f"create it (mkdir -m 0750 {directory})") from None
            else:
                log.info("created the runtime directory {directory} (mode 0750) for the "
                         "control socket", directory=directory)
        else:
            raise StartupError(
                f"{where}: the directory {directory} of the control socket does not exist",
                f"create it (mkdir -m 0750 {directory}; systemd: RuntimeDirectory=) or put "
                "the socket in an existing directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(
            f"{where}: the directory {directory} of the control socket is not writable by "
            f"uid {os.geteuid()}",
            "run the daemon as the directory's owner, make it writable, or put the socket "
            "elsewhere")
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise StartupError(f"{where}: {path} exists and is not a socket",
                           "remove it, or put the control socket elsewhere")
    lock = path + ".lock"  # twisted.internet.unix keeps the listening process's pid here
    try:
        pid = int(os.readlink(lock))
    except (OSError, ValueError):
        return
    if pid != os.getpid() and pid_alive(pid):
        raise StartupError(
            f"{where}: the control socket {path} is in use by a running process (pid {pid}): "
            "this configuration runs already",
            "stop that daemon first, or give this one its own socket")


def _check_port(kind: int, host: str, port: int, where: str) -> None:
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    probe = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Twisted does
        probe.bind((host, port))
    except OSError as e:
        what = "TCP" if kind == socket.SOCK_STREAM else "UDP"
        if e.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{where}: {what} port {port} on {host or '*'} is in use",
                "stop what listens there (ss -lnp shows it; is this configuration running "
                "already?) or choose another port") from None
        if e.errno == errno.EACCES:
            raise StartupError(
                f"{where}: {what} port {port} needs root or CAP_NET_BIND_SERVICE",
                "choose a port above 1023 or grant CAP_NET_BIND_SERVICE") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise StartupError(f"{where}: {host} is not an address of this host",
                               "listen on an address this host has (ip addr lists them)"
                               ) from None
        raise StartupError(f"{where}: cannot listen on {host or '*'}:{port}: {e.strerror}"
                           ) from None
    finally:
        probe.close()


def check_state_file(path: str | None) -> None:
    """No running process holds the kernel state file ``path`` (same daemon started twice)."""
    if not path or not os.path.exists(path):
        return
    import fcntl
    import json

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return  # the backend says what is wrong with it, or starts afresh
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            pid = json.loads(os.pread(fd, 65536, 0)).get("pid")
        except (ValueError, AttributeError, OSError):
            pid = None
        raise StartupError(
            f"{os.path.abspath(path)} is held by a running process (pid {pid}): this "
            "configuration runs "
            "already", "stop that daemon first (a second copy would fight it over the "
            "kernel's routes)") from None
    finally:
        os.close(fd)


# -- failures while starting ----------------------------------------------------------------------


def explain(error: BaseException) -> StartupError | None:
    """The :class:`StartupError` for an exception raised while building or starting a
    daemon, or None when its cause is not known (a bug: keep the traceback)."""
    from twisted.internet.error import CannotListenError

    from .io.system import NftError

    if isinstance(error, StartupError):
        return error
    if isinstance(error, NftError):
        text = str(error)
        if text.startswith("cannot run"):
            return StartupError(f"{text} (the raw transport installs a netfilter table)",
                                "install nftables (Debian: apt install nftables) or add it "
                                "to PATH")
        if "not permitted" in text or "Permission denied" in text:
            return StartupError(f"{text}: installing the netfilter table needs root or "
                                "CAP_NET_ADMIN", "run as root or grant CAP_NET_ADMIN")
        return StartupError(text)
    if isinstance(error, CannotListenError):
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        where = os.fsdecode(error.port) if isinstance(error.port, (bytes, str)) else \
            f"{error.interface or '*'}:{error.port}"
        return StartupError(f"cannot listen on {where}: {reason}",
                            "stop what holds it (is this configuration running already?) "
                            "or change [control]")
    if isinstance(error, OSError):
        what = f"{error.filename}: " if error.filename else ""
        reason = error.strerror or str(error)
        if error.errno == errno.ENODEV:
            return StartupError(f"{what}{reason}: a configured interface does not exist",
                                "check [transport] interfaces and home-interface against "
                                "ip link")
        if error.errno in (errno.EPERM, errno.EACCES) and not error.filename:
            return StartupError(f"{reason}: raw sockets, TUN devices and netfilter need root "
                                "or CAP_NET_RAW and CAP_NET_ADMIN",
                                "run as root or grant the capabilities")
        if error.errno == errno.EADDRINUSE:
            return StartupError(f"{reason}: an address or port this daemon listens on is "
                                "taken", "is this configuration running already?")
        if error.filename == "/dev/net/tun":
            return StartupError(f"{what}{reason}: the tun backend needs the kernel's TUN "
                                "device", "load it (modprobe tun) or, in a container, pass "
                                "the device in (--device /dev/net/tun)")
        if error.filename:
            return StartupError(f"{what}{reason}")
    return None


def translated(method: F) -> F:
    """Decorate a start-up method: a failure :func:`explain` knows is raised as its
    :class:`StartupError` (the original is its ``__cause__``); anything else unchanged."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except (StartupError, ConfigError):
            raise
        except Exception as e:
            error = explain(e)
            if error is None:
                raise
            raise error from e
    return cast(F, wrapper)


# -- twistd ---------------------------------------------------------------------------------------


def report(name: str, error: object, stream: IO[str] | None = None, logged: bool = True
           ) -> str:
    """Write ``name: error`` as one line on ``stream`` (the process's real standard error,
    which twistd does not redirect) and, when ``logged``, log it (not before twistd has begun
    logging: Twisted would print a critical event on standard error a second time)."""
    line = " ".join(f"{name}: {error}".split())
    if logged:
        log.critical("cannot start: {error}", error=line)
    stream = stream if stream is not None else sys.__stderr__
    if stream is not None:
        stream.write(line + "\n")
        stream.flush()
    return line


def exit_on_failure(name: str, reactor: Any = None
                    ) -> Callable[[type[BaseException], BaseException, TracebackType | None], Any]:
    """Make an exception that escapes twistd's start of the application (our service's
    ``privilegedStartService``/``startService``, run before the reactor) end the process with
    one line and status 2 instead of a traceback. twistd has removed its pid file and told a
    daemonising parent by then. The hook is a ``sys.excepthook`` for the start only: it is
    removed once ``reactor`` runs."""
    if reactor is None:
        from twisted.internet import reactor
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> Any:
        if not isinstance(value, Exception):
            return previous(kind, value, tb)
        error: object = value if isinstance(value, ConfigError) else explain(value)
        if error is None and isinstance(value, OSError):  # the system refused: say so
            error = value.strerror and value.filename and f"{value.filename}: {value.strerror}" \
                or value.strerror or str(value)
        if isinstance(value, OSError) and str(value.filename or "").endswith(".pid"):
            error = (f"{value.filename}: {value.strerror} (twistd's pid file); run twistd in a "
                     "directory this user can write, or give it --pidfile PATH (--pidfile= "
                     "for none)")
        if error is None:
            from twisted.python.failure import Failure

            log.failure("start-up failed", Failure(value, kind, tb))
            error = (f"start-up failed: {kind.__name__}: {value} (not a known cause: the "
                     "traceback is in the log; please report it)")
        report(name, error)
        for stream in (sys.__stdout__, sys.stdout):
            try:
                if stream is not None:
                    stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        os._exit(2)

    def started() -> None:
        if sys.excepthook is hook:
            sys.excepthook = previous

    sys.excepthook = hook
    reactor.callWhenRunning(started)
    return hook


__all__ = ["StartupError", "check_home_agent", "check_mobile_node", "check_endpoint",
           "check_interface", "check_socket_path", "check_state_file", "effective_capabilities",
           "endpoint_arguments", "explain", "exit_on_failure", "report", "translated"]
