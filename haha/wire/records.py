"""Constructors for the codec's frozen dataclasses, kept importable for older callers.

:func:`maker` returns the class's ordinary constructor: outside the codec, records are built
plainly. The decoders' faster construction is private to :mod:`haha.wire` (its ``_fast``
module, measured by ``bench/wire_fast.py``).
"""

from typing import Callable, TypeVar

T = TypeVar("T")


def maker(cls: Callable[..., T]) -> Callable[..., T]:
    """A ``make(field1, field2, ...)`` for the dataclass ``cls``: its own constructor, which
    takes every field positionally in declaration order. New code calls the class itself."""
    return cls
