"""The control protocol: one JSON object per line over a stream (usually a UNIX socket).

Request: ``{"cmd": "status" | "bindings" | "peers" | "counters" | <command>, ...arguments}``.
Response: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``. A malformed
request gets an error response and the connection stays usable; lines longer than 64 KiB are
refused (the connection is closed).
"""

import json

from twisted.internet import defer
from twisted.internet.protocol import Factory
from ..logging import logger
from twisted.protocols.basic import LineOnlyReceiver

log = logger("haha.control")

QUERIES = ("status", "bindings", "peers", "counters")


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
        if cmd in QUERIES:
            return getattr(target, cmd)()
        return target.command(cmd, request)

    def _failed(self, failure):
        if failure.check(ValueError, KeyError, TypeError):
            return {"ok": False, "error": str(failure.value)}
        log.failure("control request failed", failure)
        return {"ok": False, "error": "internal error (see the daemon's log)"}

    def _reply(self, response):
        self.sendLine(json.dumps(response, default=str).encode())


class ControlFactory(Factory):
    protocol = ControlProtocol

    def __init__(self, target):
        self.target = target
