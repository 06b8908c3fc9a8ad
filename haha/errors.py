"""The one exception of a daemon that cannot start: :class:`StartupError`.

Every start-up check (:mod:`haha.startup`) raises it, and the failures of building or starting
a service that have a known cause are turned into it, so an embedder calling
``HomeAgentService.build(...)`` or ``startService()`` catches one type, and ``twistd haha`` /
``twistd haha-mn`` print it as one line and exit with status 2.
"""


class StartupError(Exception):
    """The daemon cannot start. ``cause`` says what is wrong, ``fix`` what to do about it;
    ``str()`` is the one line an operator reads."""

    def __init__(self, cause: str, fix: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.cause}; {self.fix}" if self.fix else self.cause


__all__ = ["StartupError"]
