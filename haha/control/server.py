"""The control protocol: one JSON object per line over a stream (usually a UNIX socket).

Request: ``{"cmd": "status" | "bindings" | "peers" | "counters" | "help" | <command>,
...arguments}``. Response: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
A malformed request, an unknown command or an argument the command does not take
(:mod:`haha.control.commands`, by the target's role) gets an error response, reaches nothing,
and the connection stays usable; lines longer than 64 KiB are refused (the connection is closed).
"""

import json

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from ..logging import logger
from .commands import QUERIES, check, for_role
from .jsonvalue import jsonable

log = logger("haha.control")

_UNKNOWN = object()


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 65536

    def lineReceived(self, line):  # noqa: N802 - Twisted hook
        d = defer.maybeDeferred(self._dispatch, line)
        d.addCallback(lambda result: {"ok": True, "result": result})
        d.addErrback(self._failed)
        d.addCallback(self._reply)

    def lineLengthExceeded(self, line):  # noqa: N802 - Twisted hook
        self._reply({"ok": False, "error": "request longer than 64 KiB"})
        self.transport.loseConnection()

    def _dispatch(self, line):
        try:
            request = json.loads(line)
        except ValueError:
            raise ValueError("request is not JSON") from None
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            raise ValueError('request must be an object with a "cmd" string')
        target = self.factory.target
        cmd = request.pop("cmd")
        commands = self.factory.commands()
        if commands is not None:
            check(commands, cmd, request)
        if cmd == "help":
            return [c.as_json() for c in commands or ()]
        if cmd in QUERIES:
            return getattr(target, cmd)()
        return target.command(cmd, request)

    def _failed(self, failure):
        if failure.check(ValueError, KeyError, TypeError):
            return {"ok": False, "error": str(failure.value)}
        log.failure("control request failed", failure)
        return {"ok": False, "error": "internal error (see the daemon's log)"}

    def _reply(self, response):
        self.sendLine(json.dumps(jsonable(response)).encode())


class ControlFactory(Factory):
    protocol = ControlProtocol

    def __init__(self, target):
        self.target = target
        self._commands = _UNKNOWN

    def commands(self):
        """The target's commands (by the role its status names; None for a role not in
        :mod:`haha.control.commands`, whose requests then go through unchecked)."""
        if self._commands is _UNKNOWN:
            self._commands = for_role(self.target.status().get("role"))
        return self._commands
