"""The control protocol: one JSON object per line over a stream (usually a UNIX socket).

Request: ``{"cmd": "status" | "bindings" | "peers" | "counters" | "help" | <command>,
...arguments}``. Response: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
A malformed request, an unknown command or an argument the command does not take
(:mod:`haha.control.commands`, by the target's role) gets an error response, reaches nothing,
and the connection stays usable; lines longer than 64 KiB are refused (the connection is closed).
"""

import json
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure

from ..interfaces import IControllable
from ..logging import logger
from .commands import QUERIES, Command, check, for_role
from .jsonvalue import jsonable

log = logger("haha.control")


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted hook
        d = defer.maybeDeferred(self._dispatch, line)
        d.addCallback(lambda result: {"ok": True, "result": result})
        d.addErrback(self._failed)
        d.addCallback(self._reply)

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
        if cmd in QUERIES:
            return getattr(target, cmd)()
        return target.command(cmd, request)

    def _failed(self, failure: Failure) -> dict[str, Any]:
        if failure.check(ValueError, KeyError, TypeError):
            return {"ok": False, "error": str(failure.value)}
        log.failure("control request failed", failure)
        return {"ok": False, "error": "internal error (see the daemon's log)"}

    def _reply(self, response: dict[str, Any]) -> None:
        self.sendLine(json.dumps(jsonable(response)).encode())


class ControlFactory(Factory):
    protocol = ControlProtocol

    def __init__(self, target: IControllable) -> None:
        self.target = target
        self._commands: tuple[Command, ...] | None = None
        self._resolved = False

    def commands(self) -> tuple[Command, ...] | None:
        """The target's commands (by the role its status names; None for a role not in
        :mod:`haha.control.commands`, whose requests then go through unchecked)."""
        if not self._resolved:
            self._commands = for_role(self.target.status().get("role"))
            self._resolved = True
        return self._commands
