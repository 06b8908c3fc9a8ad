"""haha-ctl: ask a running daemon through its control socket.

    haha-ctl --socket /run/haha/ha1.sock status
    haha-ctl --socket /run/haha/ha1.sock bindings
    haha-ctl --socket /run/haha/ha1.sock switch home-address=2001:db8:1::100 target=2001:db8:1::2
    haha-ctl --socket /run/haha/ha1.sock drain
    haha-ctl --socket /run/haha/ha1.sock --json counters
    haha-ctl --socket /run/haha/ha1.sock watch

Arguments are ``key=value`` pairs; a command that is not in the table below, or an argument the
command does not take, is refused before anything is sent. Output is a table for people, or with
``--json`` the daemon's JSON result. ``watch`` redraws status, peers and bindings every
``--interval`` seconds (``--count N`` stops after N views; ``--json`` prints one JSON object per
view). The exit status is 0 on success, 1 when the daemon refused the request, 2 for a usage
mistake or when the daemon could not be reached.
"""

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, Protocol

from .commands import ALL, HOME_AGENT, MOBILE_NODE, check

WATCH = "watch"


def request(path: str, cmd: str, arguments: Mapping[str, str] | None = None,
            timeout: float = 10.0) -> Any:
    """Send one request to the control socket at ``path``; return the decoded response."""
    message = dict(arguments or {})
    message["cmd"] = cmd
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps(message).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)


# -- tables ---------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def _grid(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def table(result: Any, sort: bool = False) -> str:
    """``result`` (a dict, a list of rows or a value) as aligned text."""
    """``result`` as text: a list of objects is a table with a header row, an object is
    name/value lines, a list of plain values is one per line, anything else its text."""
    if isinstance(result, dict):
        items = sorted(result.items()) if sort else list(result.items())
        if not items:
            return "(none)"
        return _grid([(str(k), _cell(v)) for k, v in items])
    if isinstance(result, list):
        if not result:
            return "(none)"
        if all(isinstance(r, dict) for r in result):
            columns = []
            for r in result:
                columns += [k for k in r if k not in columns]
            header = [c.upper().replace("_", "-") for c in columns]
            return _grid([header] + [[_cell(r.get(c)) for c in columns] for r in result])
        return "\n".join(_cell(r) for r in result)
    return _cell(result)


def _octets(value: Any) -> str:
    """An octet count as people read it (``1,234,567 (1.2 MiB)``); anything else as it is."""
    if isinstance(value, bool) or not isinstance(value, int):
        return _cell(value)
    scaled, unit = float(abs(value)), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if scaled < 1024 or unit == "GiB":
            break
        scaled /= 1024
    sign = "-" if value < 0 else ""
    return f"{value:,}" if unit == "B" else f"{value:,} ({sign}{scaled:.1f} {unit})"


_MEMORY_OCTETS = ("rss", "rss_peak", "rss_anon", "rss_file", "traced", "traced_peak",
                  "tracing_overhead")


def memory_text(result: Mapping[str, Any]) -> str:
    """``memory``'s answer (haha.control.memory) for people: the figures, then the top
    allocation sites and their growth since the mark as tables."""
    lines = [(k, _octets(v) if k in _MEMORY_OCTETS else _cell(v)) for k, v in result.items()
             if k not in ("top", "growth", "malloc", "trim")]
    malloc = result.get("malloc")
    if malloc:
        lines += [(f"malloc.{k}", _octets(v)) for k, v in malloc.items()]
    trim = result.get("trim")
    if trim:  # haha.alloctrim: the last call flattened, its time in UTC
        lines += [(f"trim.{k}", _octets(v) if k == "released" else _cell(v))
                  for k, v in trim.items() if k != "last"]
        for k, v in (trim.get("last") or {"": "never"}).items():
            if k == "at":
                v = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(v))
            lines.append((f"trim.last.{k}".rstrip("."),
                          _octets(v) if k.startswith(("rss", "released")) else _cell(v)))
    parts = [_grid(lines)]
    growth = result.get("growth")
    for title, rows in (("top allocation sites", result.get("top")),
                        ("growth since the mark (traced "
                         f"{_octets((growth or {}).get('traced'))}, "
                         f"RSS {_octets((growth or {}).get('rss'))})",
                         (growth or {}).get("sites"))):
        if rows is not None:
            parts.append(f"{title}:\n" + (_grid([("SIZE", "COUNT", "SITE")] + [
                (f"{r['size']:,}", f"{r['count']:,}", r["site"]) for r in rows])
                if rows else "(none)"))
    return "\n\n".join(parts)


class _Described(Protocol):
    @property
    def summary(self) -> str: ...

    def usage(self) -> str: ...


def _commands_text(commands: Iterable[_Described]) -> str:
    return _grid([(c.usage(), c.summary) for c in commands])


# -- commands -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    shared = [c for c in HOME_AGENT if c in MOBILE_NODE]
    sections: tuple[tuple[str, Sequence[_Described]], ...] = (
        ("commands of every daemon", shared),
                ("commands of a home agent", [c for c in HOME_AGENT if c not in shared]),
                ("commands of a mobile node or mobile router",
                 [c for c in MOBILE_NODE if c not in shared]),
                ("haha-ctl's own command", [_WatchCommand]))
    epilog = "\n\n".join(f"{title}:\n" + _indent(_commands_text(commands))
                         for title, commands in sections)
    epilog += ("\n\nexit status: 0 done, 1 refused by the daemon, "
               "2 usage mistake or daemon unreachable")
    p = argparse.ArgumentParser(prog="haha-ctl", description=__doc__.split("\n")[0],
                                epilog=epilog, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--socket", "-s", required=True, help="control socket path")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--interval", type=float, default=2.0,
                   help="watch: seconds between views (default 2)")
    p.add_argument("--count", type=int, default=None,
                   help="watch: stop after this many views (default: until interrupted)")
    p.add_argument("command", help="one of the commands below")
    p.add_argument("arguments", nargs="*", help="key=value pairs")
    return p


class _WatchCommand:
    name = WATCH
    summary = "status, peers and bindings, redrawn every --interval seconds"

    @staticmethod
    def usage() -> str:
        return "watch [--interval SECONDS] [--count N]"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    kv = {}
    for a in args.arguments:
        k, sep, v = a.partition("=")
        if not sep or not k:
            p.error(f"argument {a!r} is not key=value")
        if k in kv:
            p.error(f"argument {k!r} given twice")
        kv[k] = v
    if args.command == WATCH:
        if kv:
            p.error(f"watch takes no key=value arguments (got {', '.join(kv)})")
        if args.interval <= 0 or (args.count is not None and args.count < 1):
            p.error("watch needs --interval > 0 and --count >= 1")
        return watch(args.socket, args.interval, args.count, args.json)
    try:
        check(ALL, args.command, kv)
    except ValueError as e:
        p.error(f"{e}, watch" if str(e).startswith("unknown command") else str(e))
    try:
        response = request(args.socket, args.command, kv)
    except (OSError, ValueError) as e:
        print(f"haha-ctl: cannot talk to {args.socket}: {e}", file=sys.stderr)
        return 2
    if not response.get("ok"):
        print(f"haha-ctl: {response.get('error')}", file=sys.stderr)
        return 1
    try:
        _print(args, response.get("result"))
    except BrokenPipeError:  # `haha-ctl ... | grep -q x` closed the pipe early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print(args: argparse.Namespace, result: Any) -> None:
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        print()
    elif args.command == "help":
        print(_grid([(c["usage"], c["summary"]) for c in result]))
    elif args.command == "memory":
        print(memory_text(result))
    else:
        print(table(result, sort=args.command == "counters"))
    sys.stdout.flush()


def snapshot(path: str) -> dict[str, Any]:
    """Status, peers and bindings of the daemon at ``path``, asked one after the other."""
    view = {}
    for name in ("status", "peers", "bindings"):
        response = request(path, name)
        if not response.get("ok"):
            raise ValueError(response.get("error"))
        view[name] = response["result"]
    return view


def render_view(path: str, view: Mapping[str, Any], now: float) -> str:
    status = view["status"]
    lines = [f"haha-ctl watch {path}  {time.strftime('%H:%M:%S', time.localtime(now))}", "",
             table(status), "", f"peers ({len(view['peers'])})", table(view["peers"]), "",
             f"bindings ({len(view['bindings'])})", table(view["bindings"])]
    return "\n".join(lines)


def watch(path: str, interval: float, count: int | None = None, as_json: bool = False,
          out: IO[str] | None = None, sleep: Callable[[float], object] = time.sleep,
          clock: Callable[[], float] = time.time) -> int:
    """Show ``path``'s daemon every ``interval`` seconds until ``count`` views (or Ctrl-C). An
    unreachable daemon is shown as such and asked again (a restart is part of the view); the exit
    status is 2 when the last view could not be had."""
    out = out or sys.stdout
    clear = "\x1b[H\x1b[2J" if not as_json and out.isatty() else ""
    shown = 0
    error = None
    try:
        while count is None or shown < count:
            now = clock()
            try:
                view = snapshot(path)
                error = None
            except (OSError, ValueError) as e:
                view, error = None, f"cannot talk to {path}: {e}"
            if as_json:
                out.write(json.dumps({"time": now, "error": error, **(view or {})},
                                     sort_keys=True) + "\n")
            else:
                out.write(clear + (render_view(path, view, now) if view else
                                   f"haha-ctl watch {path}: {error}") + "\n")
                if not clear:
                    out.write("\n")
            out.flush()
            shown += 1
            if count is None or shown < count:
                sleep(interval)
    except KeyboardInterrupt:
        pass
    return 2 if error else 0


if __name__ == "__main__":
    sys.exit(main())
