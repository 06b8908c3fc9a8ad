"""``twistd haha-mn --config mn1.conf``: wiring only (see :mod:`haha.tap`)."""

from twisted.application.service import MultiService

from .tap import Options as _Options
from .tap import load_mobile_node, make


class Options(_Options):
    longdesc = "Run a Mobile IPv6 mobile node or NEMO mobile router configured by FILE."


def makeService(options: _Options) -> MultiService:  # noqa: N802 - twistd hook
    return make("haha-mn", load_mobile_node, "MobileNodeService", options)
