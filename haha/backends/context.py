"""What a forwarding backend is built from: :class:`BackendContext`.

A backend plugin's factory receives one context and returns a complete backend
(:class:`haha.interfaces.IBackendPlugin`): the daemon sets nothing on it afterwards. The context
carries everything the daemon can give a backend, and a backend takes what it needs:

- ``options``: the backend's own configuration section (``[backend:NAME]``, a
  :class:`haha.inifile.Section` with located getters; keys the factory does not read are reported
  as unknown once it returns);
- ``reactor``: the Twisted reactor (``addReader``/``removeReader``, ``callLater``, ``seconds``);
- ``transport``: the daemon's :class:`~haha.interfaces.IMobilityTransport` (the backend sends
  its unsolicited Neighbour Advertisements and user-space tunnel packets through it), or None
  where there is none (a listing, a check of the configuration);
- ``ownership``: the :class:`~haha.backends.common.Ownership` of what this daemon may install in
  the kernel, so that its next run recognises what a crash left (None: nothing is reclaimed);
- ``config``: the whole daemon configuration, for a backend that needs more than its section
  (None for an embedder that builds a backend alone);
- ``log``: a :class:`twisted.logger.Logger` carrying the daemon's identity, or None (the
  backend's own);
- ``netlink`` and ``system``: the operating-system seams (:class:`~haha.interfaces.INetlink`,
  :class:`~haha.interfaces.ISystem`); None means the real ones in the current network
  namespace. Tests and embedders pass the in-memory twins
  (:class:`haha.backends.netsys.FakeNetlink`, :class:`haha.io.system.FakeSystem`).

The record is frozen and checks its fields when made: a wrong type is a ``TypeError`` naming the
field, before any backend sees it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from twisted.logger import Logger

from ..inifile import Section
from ..interfaces import IMobilityTransport, INetlink, ISystem
from .common import Ownership


def _check(field: str, value: object, interface: Any) -> None:
    if value is not None and not interface.providedBy(value):
        raise TypeError(f"BackendContext.{field}: {value!r} does not provide "
                        f"{interface.__name__}")


@dataclass(frozen=True)
class BackendContext:
    """Everything a backend plugin's factory is given (module docstring)."""

    options: Section
    reactor: Any
    transport: Optional[IMobilityTransport] = None
    ownership: Optional[Ownership] = None
    config: Any = None
    log: Optional[Logger] = None
    netlink: Optional[INetlink] = None
    system: Optional[ISystem] = None

    def __post_init__(self) -> None:
        if self.options is None:
            raise TypeError("BackendContext.options: a backend needs its configuration section "
                            "(an empty one when it has no keys)")
        for name in ("get_str", "get_int", "get_bool", "check_unused"):
            if not callable(getattr(self.options, name, None)):
                raise TypeError(f"BackendContext.options: {self.options!r} is not a "
                                f"configuration section (no {name})")
        if self.ownership is not None and not isinstance(self.ownership, Ownership):
            raise TypeError(f"BackendContext.ownership: {self.ownership!r} is not an Ownership")
        _check("transport", self.transport, IMobilityTransport)
        _check("netlink", self.netlink, INetlink)
        _check("system", self.system, ISystem)

    def evolve(self, **changes: Any) -> BackendContext:
        """A copy with ``changes`` (checked the same way)."""
        return replace(self, **changes)


__all__ = ["BackendContext"]
