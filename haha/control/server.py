"""The control protocol: one JSON object per line over a stream (usually a UNIX socket).

Request: ``{"cmd": "status" | "bindings" | "peers" | "counters" | "help" | <command>,
...arguments}``. Response: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
A malformed request, an unknown command or an argument the command does not take
(:mod:`haha.control.commands`, by the target's role) gets an error response, reaches nothing,
and the connection stays usable; lines longer than 64 KiB are refused (the connection is closed).

A large answer does not hold the reactor: a target with ``binding_rows()`` (an iterator of the
rows ``bindings`` answers) has its ``bindings`` answer converted and written in slices of
``STREAM_SLICE`` rows, one slice per turn of the reactor (a home agent with 100,000 bindings
took seconds to build and encode its answer in one turn, long enough for its peers to declare
it dead). The bytes are the same line of JSON; answers on one connection keep their order.

``memory`` (:mod:`haha.control.memory`) is answered by the server itself, for the whole process,
to targets of haha's roles: with allocation tracing on, its snapshot runs in a thread
(``ControlFactory.in_thread``) so the reactor goes on meanwhile; each control socket keeps its
own mark.
"""

import json
from typing import Any, Iterator, Optional, cast

from twisted.internet import defer, task, threads
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from ..interfaces import IControllable
from ..logging import logger
from . import memory
from .commands import PROCESS, QUERIES, Command, check, for_role
from .jsonvalue import jsonable

log = logger("haha.control")

_UNKNOWN = object()

#: Rows of a streamed ``bindings`` answer converted and written per turn of the reactor: about
#: 3 ms of a home agent's CPU (1,000 rows took about 30, a stall its probe counted).
STREAM_SLICE = 250


class _Rows:
    """An answer to write in slices: the iterator of its rows."""

    def __init__(self, rows: Iterator[Any]) -> None:
        self.rows = rows


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    _replies: Any = None

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted hook
        d = defer.maybeDeferred(self._dispatch, line)
        d.addCallback(lambda result: {"ok": True, "result": result})
        d.addErrback(self._failed)
        d.addCallback(self._queue_reply)

    def _queue_reply(self, response: dict[str, Any]) -> None:
        # One chain per connection: an answer being streamed delays the next one.
        if self._replies is None:
            self._replies = defer.succeed(None)
        self._replies.addCallback(lambda _: self._reply(response))
        self._replies.addErrback(self._reply_failed)

    def _reply_failed(self, failure: Failure) -> None:
        log.failure("writing a control answer failed", failure)
        if self.transport is not None:
            self.transport.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: N802 - Twisted hook
        self._reply({"ok": False, "error": "request longer than 64 KiB"})
        if self.transport is not None:
            self.transport.loseConnection()

    def _dispatch(self, line: bytes) -> Any:
        try:
            request = json.loads(line)
        except ValueError:
            raise ValueError("request is not JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            raise ValueError('request must be an object with a "cmd" string')
        factory = cast(ControlFactory, self.factory)
        target = factory.target
        cmd = request.pop("cmd")
        commands = factory.commands()
        if commands is not None:
            check(commands, cmd, request)
        if cmd == "help":
            return [c.as_json() for c in commands or ()]
        if cmd in PROCESS and commands is not None:
            memory.parse_arguments(request)  # a mistake is answered at once
            trim = getattr(target, "allocator_trim", None)  # haha.alloctrim, if it has one
            if not memory.tracemalloc.is_tracing():
                return memory.report(request, factory.marks, trim)
            return factory.in_thread(memory.report, request, factory.marks, trim)
        if cmd in QUERIES:
            rows = getattr(target, "binding_rows", None) if cmd == "bindings" else None
            if rows is not None:
                return _Rows(rows())
            return getattr(target, cmd)()
        return target.command(cmd, request)

    def _failed(self, failure: Failure) -> dict[str, Any]:
        if failure.check(ValueError, KeyError, TypeError):
            return {"ok": False, "error": str(failure.value)}
        log.failure("control request failed", failure)
        return {"ok": False, "error": "internal error (see the daemon's log)"}

    def _reply(self, response: dict[str, Any]) -> Optional[defer.Deferred[Any]]:
        if isinstance(response.get("result"), _Rows):
            return self._stream(response["result"].rows)
        self.sendLine(json.dumps(jsonable(response)).encode())
        return None

    def _stream(self, rows: Iterator[Any]) -> Optional[defer.Deferred[Any]]:
        """Write ``{"ok": true, "result": [...]}`` and a newline, ``STREAM_SLICE`` rows per
        turn of the reactor after the first (module docstring); a Deferred fired when all is
        written (None when the answer fitted in the first slice: written at once)."""
        rows = iter(rows)
        first = [json.dumps(jsonable(row)) for _, row in zip(range(STREAM_SLICE), rows)]
        if len(first) < STREAM_SLICE:
            self.sendLine(b'{"ok": true, "result": [' + ", ".join(first).encode() + b"]}")
            return None
        assert self.transport is not None  # answering a line it received
        write = self.transport.write
        write(b'{"ok": true, "result": [' + ", ".join(first).encode())

        def slices() -> Iterator[None]:
            separator = b", "
            chunk: list[str] = []
            for row in rows:
                chunk.append(json.dumps(jsonable(row)))
                if len(chunk) >= STREAM_SLICE:
                    write(separator + ", ".join(chunk).encode())
                    separator, chunk = b", ", []
                    yield None
            if chunk:
                write(separator + ", ".join(chunk).encode())
            write(b"]}" + self.delimiter)

        return self.factory.cooperate(slices()).whenDone()


class ControlFactory(Factory):
    protocol = ControlProtocol
    #: Runs a streamed answer's slices (the reactor's cooperator; a test gives its own).
    cooperate = staticmethod(task.cooperate)
    #: Runs ``memory``'s snapshot away from the reactor's thread (a Deferred of its result).
    in_thread: Any = staticmethod(threads.deferToThread)

    def __init__(self, target: IControllable) -> None:
        self.target = target
        self._commands: tuple[Command, ...] | None = None
        self._resolved = False
        #: This socket's ``memory mark=yes`` (haha.control.memory.report).
        self.marks: dict[str, memory.Mark] = {}

    def commands(self) -> tuple[Command, ...] | None:
        """The target's commands (by the role its status names; None for a role not in
        :mod:`haha.control.commands`, whose requests then go through unchecked)."""
        if not self._resolved:
            self._commands = for_role(self.target.status().get("role"))
            self._resolved = True
        return self._commands
