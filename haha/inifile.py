"""A small INI reader that remembers where every value came from.

``configparser`` forgets line numbers; an operator needs "ha1.conf:12: [home-agent] preference: ...".
This reader keeps, for every key, the file and line it was read from, and hands out typed values
through :class:`Section`, whose getters raise :class:`ConfigError` naming file, section, key and
line. Keys not consumed by anyone are reported as unknown (with a suggestion), so a typo never
passes silently.

Syntax: ``[section]`` headers, ``key = value`` lines, ``#`` or ``;`` comments on their own line or
after whitespace, indented continuation lines appended to the previous value. Keys are
case-sensitive (they may be IPv6 addresses); ``=`` is the only separator.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar
from ipaddress import AddressValueError, IPv6Address, IPv6Network, NetmaskValueError

T = TypeVar("T")
D = TypeVar("D")


class ConfigError(Exception):
    """A configuration mistake, located. ``str()`` is one line an operator can act on."""

    def __init__(self, message: str, path: str | None = None, section: str | None = None,
                 key: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = path
        self.section = section
        self.key = key
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.path is not None:
            where.append(f"{self.path}:{self.line}" if self.line else str(self.path))
        if self.section is not None:
            where.append(f"[{self.section}]" + (f" {self.key}" if self.key else ""))
        prefix = ": ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


@dataclass(frozen=True)
class Value:
    text: str
    line: int


_SECTION = re.compile(r"^\[\s*([^\]]+?)\s*\]\s*(?:[#;].*)?$")
_COMMENT = re.compile(r"\s+[#;].*$")

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


def parse_ini(text: str, path: str = "<config>") -> dict[str, Section]:
    """Parse ``text`` into ``{section: Section}`` (sections in file order)."""
    sections: dict[str, Section] = {}
    current: Section | None = None
    last_key: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if raw[0] in " \t" and current is not None and last_key is not None:
            old = current._values[last_key]
            current._values[last_key] = Value(
                (old.text + " " + _COMMENT.sub("", stripped)).strip(), old.line
            )
            continue
        m = _SECTION.match(stripped)
        if m:
            name = m.group(1)
            if name in sections:
                raise ConfigError(
                    f"section [{name}] appears twice (first at line {sections[name].line})",
                    path, name, None, number,
                )
            current = sections[name] = Section(name, path, number)
            last_key = None
            continue
        if "=" not in stripped:
            raise ConfigError(f"expected 'key = value' or '[section]', got {stripped!r}",
                              path, current.name if current else None, None, number)
        if current is None:
            raise ConfigError("a key before any [section]", path, None, None, number)
        key, _, value = stripped.partition("=")
        key = key.strip()
        value = _COMMENT.sub("", value).strip()
        if not key:
            raise ConfigError("empty key", path, current.name, None, number)
        if key in current._values:
            raise ConfigError(
                f"key given twice (first at line {current._values[key].line})",
                path, current.name, key, number,
            )
        current._values[key] = Value(value, number)
        last_key = key
    return sections


def read_ini(path: str) -> dict[str, Section]:
    """Read and parse the file at ``path``; an unreadable file is a :class:`ConfigError`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read configuration: {e.strerror}", path) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e}", path) from None
    return parse_ini(text, path)


class Section:
    """One ``[section]`` with typed, located getters. Every getter marks its key as used."""

    def __init__(self, name: str, path: str = "<config>", line: int | None = None,
                 values: dict[str, Value] | None = None) -> None:
        self.name = name
        self.path = path
        self.line = line
        self._values: dict[str, Value] = dict(values or {})
        self._used: set[str] = set()

    @classmethod
    def empty(cls, name: str, path: str = "<config>") -> Section:
        return cls(name, path)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def keys(self) -> list[str]:
        return list(self._values)

    def items(self) -> list[tuple[str, str]]:
        """(key, text) pairs, marking every key used (for free-form sections such as maps)."""
        self._used.update(self._values)
        return [(k, v.text) for k, v in self._values.items()]

    def error(self, key: str | None, message: str) -> ConfigError:
        v = self._values.get(key) if key is not None else None
        return ConfigError(message, self.path, self.name, key, v.line if v else self.line)

    def raw(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        v = self._values.get(key)
        self._used.add(key)
        if v is None:
            if required:
                raise ConfigError("required key is missing", self.path, self.name, key, self.line)
            return default
        return v.text

    def _get(self, key: str, default: D, required: bool, convert: Callable[[str], T]) -> T | D:
        text = self.raw(key, None, required)
        if text is None:
            return default
        try:
            return convert(text)
        except ConfigError:
            raise
        except (ValueError, TypeError) as e:
            raise self.error(key, f"{e} (got {text!r})") from None

    def get_str(self, key: str, default: D = None, required: bool = False,  # type: ignore[assignment]
                choices: Iterable[str] | None = None) -> str | D:
        def conv(t: str) -> str:
            if choices is not None and t not in choices:
                raise ValueError(f"expected one of {', '.join(choices)}")
            return t
        return self._get(key, default, required, conv)

    def get_int(self, key: str, default: D = None, required: bool = False,  # type: ignore[assignment]
                minimum: int | None = None, maximum: int | None = None) -> int | D:
        def conv(t: str) -> int:
            try:
                n = int(t, 0)
            except ValueError:
                raise ValueError("expected an integer") from None
            if (minimum is not None and n < minimum) or (maximum is not None and n > maximum):
                raise ValueError(f"expected an integer from {minimum} to {maximum}")
            return n
        return self._get(key, default, required, conv)

    def get_float(self, key: str, default: D = None,  # type: ignore[assignment]
                  required: bool = False, minimum: float | None = None,
                  maximum: float | None = None) -> float | D:
        def conv(t: str) -> float:
            try:
                n = float(t)
            except ValueError:
                raise ValueError("expected a number") from None
            if n != n or (minimum is not None and n < minimum) or (
                maximum is not None and n > maximum
            ):
                raise ValueError(f"expected a number from {minimum} to {maximum}")
            return n
        return self._get(key, default, required, conv)

    def get_bool(self, key: str, default: D = None,  # type: ignore[assignment]
                 required: bool = False) -> bool | D:
        def conv(t: str) -> bool:
            low = t.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected yes or no")
        return self._get(key, default, required, conv)

    def get_address(self, key: str, default: D = None,  # type: ignore[assignment]
                    required: bool = False, unicast: bool = True) -> IPv6Address | D:
        """An IPv6 address; ``unicast=False`` reads its syntax only, for a value whose owner
        (the core's settings) checks what it may be."""
        return self._get(key, default, required, parse_address if unicast else parse_ipv6)

    def get_prefix(self, key: str, default: D = None,  # type: ignore[assignment]
                   required: bool = False) -> IPv6Network | D:
        return self._get(key, default, required, parse_prefix)

    def get_addresses(self, key: str, default: tuple[IPv6Address, ...] = (),
                      required: bool = False, unicast: bool = True) -> tuple[IPv6Address, ...]:
        """A list of IPv6 addresses (``unicast`` as in :meth:`get_address`)."""
        parse = parse_address if unicast else parse_ipv6
        return self._get(key, default, required, lambda t: tuple(map(parse, split_list(t))))

    def get_prefixes(self, key: str, default: tuple[IPv6Network, ...] = (),
                     required: bool = False) -> tuple[IPv6Network, ...]:
        return self._get(key, default, required, lambda t: tuple(map(parse_prefix, split_list(t))))

    def get_list(self, key: str, default: tuple[str, ...] = (),
                 required: bool = False) -> tuple[str, ...]:
        return self._get(key, default, required, lambda t: tuple(split_list(t)))

    def unused(self) -> list[str]:
        return [k for k in self._values if k not in self._used]

    def check_unused(self, known: Iterable[str] | None = None) -> None:
        """Raise for the first key nobody read, suggesting the closest known key."""
        for key in self.unused():
            choices = list(known) if known is not None else sorted(self._used)
            close = difflib.get_close_matches(key, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise self.error(key, f"unknown key{hint}")


def split_list(text: str) -> list[str]:
    return [p for p in re.split(r"[,\s]+", text.strip()) if p]


def parse_ipv6(text: str) -> IPv6Address:
    """An IPv6 address, by its syntax only."""
    try:
        return IPv6Address(text.strip())
    except AddressValueError:
        raise ValueError("expected an IPv6 address") from None


def parse_address(text: str) -> IPv6Address:
    """A unicast IPv6 address (not multicast, not unspecified)."""
    a = parse_ipv6(text)
    if a.is_multicast or a.is_unspecified:
        raise ValueError("expected a unicast IPv6 address")
    return a


def parse_prefix(text: str) -> IPv6Network:
    try:
        return IPv6Network(text.strip(), strict=True)
    except (AddressValueError, NetmaskValueError):
        raise ValueError("expected an IPv6 prefix such as 2001:db8:1::/64") from None
    except ValueError:
        raise ValueError("expected an IPv6 prefix with no host bits set") from None
