"""haha-ctl: ask a running daemon through its control socket.

    haha-ctl --socket /run/haha/ha1.sock status
    haha-ctl --socket /run/haha/ha1.sock bindings
    haha-ctl --socket /run/haha/ha1.sock switch home-address=2001:db8:1::100 target=2001:db8:1::2
    haha-ctl --socket /run/haha/ha1.sock drain

Arguments are ``key=value`` pairs. Output is the JSON result, pretty-printed; the exit status is
0 on success, 1 when the daemon refused the request, 2 when it could not be reached.
"""

import argparse
import json
import socket
import sys


def request(path, cmd, arguments=None, timeout=10.0):
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


def main(argv=None):
    p = argparse.ArgumentParser(prog="haha-ctl", description=__doc__.split("\n")[0])
    p.add_argument("--socket", "-s", required=True, help="control socket path")
    p.add_argument("command", help="status, bindings, peers, counters, switch, drain, ...")
    p.add_argument("arguments", nargs="*", help="key=value pairs")
    args = p.parse_args(argv)
    kv = {}
    for a in args.arguments:
        k, sep, v = a.partition("=")
        if not sep:
            p.error(f"argument {a!r} is not key=value")
        kv[k] = v
    try:
        response = request(args.socket, args.command, kv)
    except (OSError, ValueError) as e:
        print(f"haha-ctl: cannot talk to {args.socket}: {e}", file=sys.stderr)
        return 2
    if not response.get("ok"):
        print(f"haha-ctl: {response.get('error')}", file=sys.stderr)
        return 1
    json.dump(response.get("result"), sys.stdout, indent=2, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
