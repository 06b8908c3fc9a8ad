"""One way to turn the services' answers into JSON values (``haha-ctl``, tests, embedders).

Addresses, prefixes and other objects become their text; tuples become lists; mapping keys
become strings (JSON allows no other key).
"""

from typing import Any

__all__ = ["jsonable"]


def jsonable(value: Any) -> Any:
    """``value`` with every part JSON can carry kept and everything else turned into text."""
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)
