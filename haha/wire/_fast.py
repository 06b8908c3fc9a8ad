"""The codec's only speed shortcuts, each beside the plain code it stands in for.

Everything else in :mod:`haha.wire` is plain Python; the three helpers here are the measured
exceptions (``bench/wire_fast.py`` runs every one against its plain form and prints the ratios):

- :func:`address_at` builds an :class:`~ipaddress.IPv6Address` from 16 octets of a packet by
  filling the two slots CPython's :mod:`ipaddress` keeps (``_ip``, ``_scope_id``); plain:
  ``IPv6Address(int.from_bytes(...))``, which validates an integer the decoder already knows is
  in range.
- :func:`address_int` reads an address's integer from that slot; plain: ``int(address)``, a
  Python-level ``__int__`` call.
- :func:`maker` returns a constructor for a frozen, slotted dataclass that stores the fields
  through the slots' member descriptors (generated once per class); plain: the class itself,
  whose ``__init__`` stores each field through ``object.__setattr__``.

The shortcuts are used only when a self-check at import shows that they build the same objects
as the plain code (equal in value, hash and text); otherwise, or when the environment variable
``HAHA_WIRE_PLAIN`` is set to a non-empty value other than ``0``, the plain forms are used.
``tests/test_wire_fast.py`` runs the codec both ways over a corpus and compares bytes and
records. Code outside :mod:`haha.wire` never imports this module: it uses the public helpers
of :mod:`haha.wire.addresses` and the records' own constructors.
"""

import os
from dataclasses import fields
from ipaddress import IPv6Address
from operator import attrgetter
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_from_bytes = int.from_bytes


# --- the plain forms ----------------------------------------------------------------------------


def plain_address_at(data: bytes, off: int) -> IPv6Address:
    """The address in ``data[off:off + 16]`` through the public constructor."""
    return IPv6Address(_from_bytes(data[off : off + 16], "big"))


def plain_address_int(address: IPv6Address) -> int:
    """The 128-bit integer of ``address`` through the public API."""
    return int(address)


def plain_maker(cls: Callable[..., T]) -> Callable[..., T]:
    """The class's own constructor (takes every field positionally, in declaration order)."""
    return cls


# --- the shortcuts --------------------------------------------------------------------------------


def _slot_address_at(data: bytes, off: int) -> IPv6Address:
    a = object.__new__(IPv6Address)
    a._ip = _from_bytes(data[off : off + 16], "big")  # type: ignore[attr-defined]
    a._scope_id = None  # type: ignore[attr-defined]
    return a


_slot_address_int: Callable[[IPv6Address], int] = attrgetter("_ip")


def _slot_maker(cls: Callable[..., T]) -> Callable[..., T]:
    if not hasattr(cls, "__slots__") or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} is not a slotted dataclass without __post_init__")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    env: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    o = _new(_cls)"]
    for name in names:
        env[f"_set_{name}"] = getattr(cls, name).__set__
        lines.append(f"    _set_{name}(o, {name})")
    lines.append("    return o")
    exec("\n".join(lines), env)  # noqa: S102 - fixed source built from field names
    make: Callable[..., T] = env["make"]
    make.__doc__ = f"Build a {cls.__name__} from all its fields (decoders only)."
    return make


def _shortcuts_agree() -> bool:
    """Whether the slot-filling shortcuts give what the public API gives on this Python."""
    try:
        probe = bytes(range(1, 17))
        slow, fast = plain_address_at(probe, 0), _slot_address_at(probe, 0)
        return (
            fast == slow and hash(fast) == hash(slow) and str(fast) == str(slow)
            and fast.packed == probe and _slot_address_int(slow) == int(slow)
            and _slot_address_int(IPv6Address("::1")) == 1
        )
    except (AttributeError, TypeError):  # an ipaddress without those slots
        return False


def plain_requested(environ: "os._Environ[str] | dict[str, str]" = os.environ) -> bool:
    """Whether ``HAHA_WIRE_PLAIN`` asks for the plain forms."""
    return environ.get("HAHA_WIRE_PLAIN", "") not in ("", "0")


#: True when the shortcuts below are in use (False: plain forms, by request or self-check).
FAST: bool = not plain_requested() and _shortcuts_agree()

address_at: Callable[[bytes, int], IPv6Address]
address_int: Callable[[IPv6Address], int]
maker: Callable[[Callable[..., Any]], Callable[..., Any]]
if FAST:
    address_at, address_int, maker = _slot_address_at, _slot_address_int, _slot_maker
else:
    address_at, address_int, maker = plain_address_at, plain_address_int, plain_maker
