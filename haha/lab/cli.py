"""``haha-lab``: build, describe and remove the standard network-namespace topologies.

    haha-lab show KIND            print the topology as JSON (nothing is created)
    haha-lab up KIND --tag TAG    create it (namespaces haha-TAG-<node>) and print it
    haha-lab down KIND --tag TAG  remove it
    haha-lab ping KIND --tag TAG NODE ADDRESS
    haha-lab load [--nodes N] [--workers W] [--has H]

KIND is one of shared-home-link, separate-links, no-home-link; --has and --mns size it.
``load`` needs no privileges: N generated mobile nodes register at once with H real home agents
on loopback, and every binding is checked (haha.lab.load; ``haha-lab load --help``).
"""

import argparse
import json
import sys
from collections.abc import Sequence

from .ping import ping
from .topology import TOPOLOGIES, LabError


def main(argv: Sequence[str] | None = None) -> int:
    """``haha-lab {show,up,down,ping} KIND`` or ``haha-lab load ...``; an exit status."""
    args_in = sys.argv[1:] if argv is None else list(argv)
    if args_in[:1] == ["load"]:
        from .load import main as load

        return load(args_in[1:])
    p = argparse.ArgumentParser(prog="haha-lab", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["show", "up", "down", "ping"])
    p.add_argument("kind", choices=sorted(TOPOLOGIES))
    p.add_argument("rest", nargs="*", help="for ping: NODE ADDRESS")
    p.add_argument("--tag", default="lab")
    p.add_argument("--has", type=int, default=2)
    p.add_argument("--mns", type=int, default=1)
    args = p.parse_intermixed_args(args_in)
    topo = TOPOLOGIES[args.kind](n_has=args.has, n_mns=args.mns, tag=args.tag)
    try:
        if args.command == "up":
            topo.create()
        elif args.command == "down":
            topo.destroy()
            return 0
        elif args.command == "ping":
            if len(args.rest) != 2:
                p.error("ping needs NODE ADDRESS")
            n = ping(topo.ns(args.rest[0]), args.rest[1])
            print("reply" if n else "no reply")
            return 0 if n else 1
    except (LabError, OSError, KeyError) as e:
        print(f"haha-lab: {e}", file=sys.stderr)
        return 1
    json.dump(topo.describe(), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
