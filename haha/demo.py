"""The demo: a small home-agent network with a mobile node, as real processes, no root needed.

    python -m haha.demo [--has N] [--mobile-router] [--security none] [--dir DIR]

Three ``twistd -n haha`` home agents and one ``twistd -n haha-mn`` mobile node run on 127.0.0.1
(UDP transport, null forwarding backend, ESP with keys generated for the run). The demo shows
the registration, the copies at the peers, a failover when the primary is killed (``kill -9``),
the restarted home agent relearning the binding, and a graceful stop. Everything it prints is
read from the daemons' control sockets.
"""

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import IO

from .lab.cluster import LocalCluster


class Narrator:
    """Writes the scenario's lines with the seconds since it began."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        """One line of narration."""
        self.out.write(f"[{time.monotonic() - self.t0:5.1f}s] {text}\n")
        self.out.flush()

    def table(self, cluster: LocalCluster, home_address: str) -> None:
        """What each home agent holds for ``home_address``."""
        for ha in cluster.has:
            bindings = cluster.ask(ha.name, "bindings")
            if bindings is None:
                self.out.write(f"          {ha.name:4} (not running)\n")
                continue
            for b in bindings:
                if b["home_address"] != home_address:
                    continue
                role = f"copy (primary {b['primary']})" if b["copy"] else "primary"
                prefixes = f" prefixes {', '.join(b['prefixes'])}" if b["prefixes"] else ""
                self.out.write(f"          {ha.name:4} {b['home_address']} -> {b['care_of']}"
                               f"  seq {b['sequence']:5}  {role}{prefixes}\n")
            if not any(b["home_address"] == home_address for b in bindings):
                self.out.write(f"          {ha.name:4} (no binding)\n")


def run(directory: str, n_has: int = 3, security: str = "esp", mobile_router: bool = False,
        out: IO[str] = sys.stdout) -> float:
    """Run the scenario in ``directory``; return the failover time in seconds."""
    say = Narrator(out)
    with LocalCluster(directory, n_has=n_has, security=security,
                      mobile_router=mobile_router) as c:
        hoa = c.mn.address
        first, second = c.has[0], c.has[1]
        say.say(f"starting {n_has} home agents on 127.0.0.1 (UDP transport, null backend, "
                f"security {security}); HA lifetime {c.lifetime} s, HELLO every "
                f"{c.hello_interval:g} s")
        for ha in c.has:
            c.start(ha.name)
        for ha in c.has:
            c.wait_for(f"{ha.name} serving",
                       lambda ha=ha: (c.ask(ha.name, "status") or {}).get("state") == "serving")
        for ha in c.has:
            peers = ", ".join(p["address"] for p in c.ask(ha.name, "peers"))
            say.say(f"{ha.name} {ha.address} serving; live peers: {peers}")
        kind = "mobile router" if mobile_router else "mobile node"
        c.start(c.mn.name)
        c.wait_for("registration",
                   lambda: (c.ask(c.mn.name, "status") or {}).get("home_agent") == first.address)
        say.say(f"{kind} {c.mn.name} (home {hoa}, care-of {c.care_of}) registered with "
                f"{first.name} over ESP" if security == "esp" else
                f"{kind} {c.mn.name} registered with {first.name}")
        c.wait_for("copies at every peer", lambda: len(c.primary_of(hoa)) == n_has)
        say.say("binding caches (synchronised by BIU/BIA):")
        say.table(c, hoa)

        say.say(f"kill -9 {first.name}: no goodbye, its peers must notice on their own")
        killed = time.monotonic()
        c.kill(first.name)
        c.wait_for("re-homing", lambda: (c.ask(c.mn.name, "status") or {}).get("home_agent")
                   not in (None, first.address))
        failover = time.monotonic() - killed
        now_at = c.ask(c.mn.name, "status")["home_agent"]
        say.say(f"{kind} re-registered with {now_at} {failover:.1f} s after the kill "
                f"(take-over by the best-ranked survivor, HASR, new BU)")
        say.table(c, hoa)

        say.say(f"restarting {first.name}: it waits for HELLOs, then asks its peers for their "
                "bindings (bulk BIR)")
        c.start(first.name)
        c.wait_for("relearning", lambda: first.name in c.primary_of(hoa, [first.name]))
        say.table(c, hoa)

        say.say(f"stopping {second.name if now_at == second.address else now_at} gracefully "
                "(SIGTERM): it drains its node to a peer, then says goodbye (HELLO lifetime 0)")
        holder = next(h for h in c.has if h.address == now_at)
        c.stop(holder.name)
        c.wait_for("drained", lambda: (c.ask(c.mn.name, "status") or {}).get("home_agent")
                   not in (None, holder.address))
        say.say(f"{kind} now with {c.ask(c.mn.name, 'status')['home_agent']}")
        say.table(c, hoa)
        c.stop_all()
        say.say("done")
        return failover


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m haha.demo``; an exit status."""
    p = argparse.ArgumentParser(prog="python -m haha.demo", description=__doc__.split("\n")[0])
    p.add_argument("--has", type=int, default=3, help="number of home agents (2-9)")
    p.add_argument("--mobile-router", action="store_true", help="a NEMO mobile router")
    p.add_argument("--security", choices=["esp", "none"], default="esp")
    p.add_argument("--dir", help="keep configurations and logs here (default: a temporary "
                                 "directory, removed afterwards)")
    args = p.parse_args(argv)
    if not 2 <= args.has <= 9:
        p.error("--has must be 2-9")
    directory = args.dir or tempfile.mkdtemp(prefix="haha-demo-")
    try:
        run(directory, args.has, args.security, args.mobile_router)
        if args.dir:
            print(f"configurations and logs: {directory}")
    except (RuntimeError, TimeoutError) as e:
        print(f"haha demo failed: {e}", file=sys.stderr)
        return 1
    finally:
        if args.dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
