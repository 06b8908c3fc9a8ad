"""Benchmark: the data plane, from a correspondent to a mobile node's home address through a home
agent, in the lab's shared-home-link topology (root; network namespaces).

Cases, all over the same hops (correspondent -> r -> ha1 on the home link -> r -> the node on
the visited link, and back through ha1):

- ``plain`` (baseline): no daemons; the node has its home address on ``lo`` and plain kernel
  routing carries the traffic the same way: r routes the home address to ha1, and policy rules
  at r send what comes back from ha1 on the home link (and the node's replies) on to the node
  (and back through ha1), so every packet crosses the same links and forwarding hops;
- ``tun``: a real home agent daemon (``backend = tun``, user-space tunnel) and a real mobile
  node daemon (user-space tunnel), registered with ESP;
- ``tun_super``: the same with ``super-packets = yes`` in every daemon's ``[backend:tun]``
  (TCP super-packets cross the tunnel whole as outer fragments, docs/io.md "Super-packets");
- ``netlink``: the same with ``backend = netlink`` (the kernel's ip6tnl) at the home agent and
  at the node, so the whole data path is the kernel's; only on a kernel with ``ip6_tunnel``
  (the stock-kernel tier), otherwise reported with the reason.

Measured per case, in the same run: TCP goodput from the correspondent to the home address
(Mbit/s, one connection, ``--seconds`` long), and UDP packets per second delivered with small
(64-octet payload) and 1,400-octet packets, with the rate the sender offered beside it (the
sender is one Python process sending as fast as it can). ``udp_1400_offered``: 1,400-octet
UDP paced at rising offered rates (``--rates``, packets/s; 0 is as fast as the sender can),
the delivered rate beside each: a data plane that is overloaded should deliver as much as
at its best rate, not less. With daemons, each measurement also gives the CPU time each daemon
spent per packet (UDP) or per megabyte (TCP) delivered: rates depend on what else the machine
runs, CPU per packet much less. Prints one JSON object. ``--quick`` shortens every measurement.

``--baseline-tree DIR`` adds the case ``tun_baseline`` (and ``tun_super_baseline`` when
``tun_super`` is measured): the same daemons running the code of another checkout (``git
archive main | tar -x -C DIR``), measured in the same run, so a change of the data path is
compared with what it replaces under the same load.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from haha.backends.netlink import read_kernel_config  # noqa: E402
from haha.lab import topology  # noqa: E402
from haha.lab.deploy import HOME_ADDRESS, NetnsDeployment  # noqa: E402
from haha.lab.topology import LabError  # noqa: E402

PORT = 5201

RECEIVER = r"""
import socket, sys, time
kind, address, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
if kind == "tcp":
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port)); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); total = 0; first = last = None
    while True:
        data = c.recv(1 << 18)
        if not data:
            break
        now = time.monotonic(); first = first or now; last = now; total += len(data)
    print(total, (last - first) if first else 0.0, flush=True)
else:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:  # past net.core.rmem_max (root): a burst must not be lost in the receiver itself
        s.setsockopt(socket.SOL_SOCKET, 33, 1 << 24)  # SO_RCVBUFFORCE
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    s.bind((address, port)); s.settimeout(seconds + 5)
    print("ready", flush=True)
    n = 0; first = last = None
    try:
        while True:
            s.recv(65535)
            now = time.monotonic(); first = first or now; last = now; n += 1
            s.settimeout(1.0)
    except socket.timeout:
        pass
    print(n, (last - first) if first else 0.0, flush=True)
"""

SENDER = r"""
import socket, sys, time
kind, address, port, seconds, size = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                      float(sys.argv[4]), int(sys.argv[5]))
end = time.monotonic() + seconds
if kind == "tcp":
    s = socket.create_connection((address, port), timeout=20)
    block = bytes(1 << 16); sent = 0
    while time.monotonic() < end:
        s.sendall(block); sent += len(block)
    s.close()
    print(sent, flush=True)
else:
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.connect((address, port)); block = bytes(size); n = 0; t0 = time.monotonic()
    burst = 256 if not rate else max(1, min(256, int(rate / 1000)))
    while True:
        for _ in range(burst):
            try:
                s.send(block); n += 1
            except OSError:
                pass
        now = time.monotonic()
        if now >= end:
            break
        if rate:
            ahead = t0 + n / rate - now
            if ahead > 0:
                time.sleep(ahead)
    print(n, time.monotonic() - t0, flush=True)
"""


def _measure(topo, kind, seconds, size=0, rate=0):
    """Run the receiver in mn1 and the sender in cn; return the case's numbers."""
    rx = topo.popen("mn1", [sys.executable, "-c", RECEIVER, kind, str(HOME_ADDRESS), str(PORT),
                            str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "ready"
        tx = topo.run("cn", [sys.executable, "-c", SENDER, kind, str(HOME_ADDRESS), str(PORT),
                             str(seconds), str(size), str(rate)])
        out, _ = rx.communicate(timeout=seconds + 30)
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    got, took = out.split()
    if kind == "tcp":
        return {"tcp_mbit_s": round(int(got) * 8 / max(float(took), 1e-9) / 1e6, 1)}
    sent, sent_took = tx.stdout.split()
    return {"offered_pps": round(int(sent) / float(sent_took)),
            "delivered_pps": round(int(got) / max(float(took), 1e-9)) if int(got) else 0,
            "delivered_fraction": round(int(got) / max(int(sent), 1), 3)}


def _cpu_seconds(pids):
    """``(user, system)`` CPU seconds used so far by each process (``/proc/PID/stat``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) / tick, int(fields[12]) / tick)
        except (OSError, IndexError, ValueError):
            pass
    return out


#: Set by ``--profile DIR``: ``(py-spy executable, directory)``; each daemon is sampled during
#: the TCP measurement and the unpaced 1,400-octet UDP one of every case.
PROFILE = None
#: ``--perf``: with ``--profile``, ``perf record`` each daemon as well (kernel symbols).
PERF = False


def _profilers(pids, label, seconds):
    """Start ``py-spy record`` (collapsed stacks, native frames) on every daemon for
    ``seconds``; returns the processes to wait for."""
    if PROFILE is None or not pids:
        return []
    spy, directory = PROFILE
    procs = []
    for name, pid in pids.items():
        out = os.path.join(directory, f"{label}-{name}.txt")
        procs.append(subprocess.Popen([spy, "record", "-p", str(pid), "-d",
                                       str(max(1, int(seconds))), "-r", "250", "--nonblocking",
                                       "-f", "raw", "-o", out],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if PERF:  # the kernel's share, by symbol: perf report -i FILE --sort sym
            procs.append(subprocess.Popen(
                ["perf", "record", "-q", "-F", "499", "-p", str(pid), "-o",
                 os.path.join(directory, f"{label}-{name}.perf.data"), "--", "sleep",
                 str(max(1, int(seconds)))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def _measure_cpu(topo, pids, kind, seconds, size=0, rate=0, profile=None):
    """One measurement; with ``pids`` also the CPU time each daemon spent per packet (UDP) or
    per megabyte (TCP) delivered, and its share spent in the kernel (system time, which
    includes softirq work done in its context): on a shared machine the load-independent
    figures. ``profile``: a label; with ``--profile`` each daemon is sampled meanwhile."""
    before = _cpu_seconds(pids)
    spies = _profilers(pids, profile, seconds) if profile else []
    out = _measure(topo, kind, seconds, size, rate)
    after = _cpu_seconds(pids)
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
    for name in pids:
        if name in before and name in after:
            user = after[name][0] - before[name][0]
            system = after[name][1] - before[name][1]
            used = user + system
            if kind == "tcp":
                mbytes = out["tcp_mbit_s"] / 8 * seconds
                out[f"{name}_cpu_ms_per_mbyte"] = round(used * 1e3 / max(mbytes, 1e-9), 2)
            else:
                packets = out["delivered_pps"] * seconds
                out[f"{name}_cpu_us_per_packet"] = round(used * 1e6 / max(packets, 1e-9), 1)
            out[f"{name}_system_share"] = round(system / used, 2) if used else None
    return out


def _all(topo, seconds, rates, pids=None, case=""):
    """Every measurement of one case; one that fails is reported with its error, not hidden."""
    out = {}
    pids = pids or {}
    for name, kind, size in (("tcp", "tcp", 0), ("udp_64", "udp", 64), ("udp_1400", "udp", 1400)):
        try:
            out[name] = _measure_cpu(topo, pids, kind, seconds, size,
                                     profile=f"{case}-tcp" if kind == "tcp" else None)
        except (LabError, ValueError, AssertionError, subprocess.TimeoutExpired) as e:
            out[name] = {"error": str(e).strip().splitlines()[-1][:300]}
    sweep = out["udp_1400_offered"] = []
    for rate in rates:
        try:
            sweep.append(dict(_measure_cpu(topo, pids, "udp", seconds, 1400, rate,
                                           profile=None if rate else f"{case}-udp-unpaced"),
                              rate=rate))
        except (LabError, ValueError, AssertionError, subprocess.TimeoutExpired) as e:
            sweep.append({"rate": rate, "error": str(e).strip().splitlines()[-1][:300]})
    return out


def _plain(seconds, rates):
    topo = topology.shared_home_link(n_has=1, n_mns=1)
    topo.create()
    try:
        hoa, ha1 = str(HOME_ADDRESS), topo.info["has"]["ha1"]
        coa = topo.info["care_of"]["mn1"]
        topo.run("mn1", ["ip", "-6", "addr", "add", f"{hoa}/128", "dev", "lo", "nodad"])
        topo.run("r", ["ip", "-6", "route", "replace", f"{hoa}/128", "via", ha1])
        # ha1 has the home prefix on link: send the home address back to r instead
        topo.run("ha1", ["ip", "-6", "route", "replace", f"{hoa}/128", "via",
                         str(topology.HOME_PREFIX[0xff])])
        # back from ha1 on the home link: on to the node; the node's replies: back to ha1
        topo.run("r", ["ip", "-6", "route", "replace", f"{hoa}/128", "via", coa, "table", "100"])
        topo.run("r", ["ip", "-6", "rule", "add", "iif", "eth0", "lookup", "100", "pref", "100"])
        topo.run("r", ["ip", "-6", "route", "replace", "default", "via", ha1, "table", "101"])
        topo.run("r", ["ip", "-6", "rule", "add", "iif", "eth2", "from", f"{hoa}/128", "lookup",
                       "101", "pref", "101"])
        topo.run("ha1", ["sysctl", "-qw", "net.ipv6.conf.all.accept_redirects=0"])
        topo.run("ha1", ["sysctl", "-qw", "net.ipv6.conf.all.send_redirects=0"], check=False)
        return _all(topo, seconds, rates)
    finally:
        topo.destroy()


def _daemons(backend, seconds, rates, tree=None, tun_options=(), case=""):
    """One case with real daemons; ``tree``: run them on the code of that checkout;
    ``tun_options``: extra lines of their ``[backend:tun]``."""
    topo = topology.shared_home_link(n_has=1, n_mns=1)
    with tempfile.TemporaryDirectory(prefix="hb-") as directory:
        d = NetnsDeployment(topo, directory, backend=backend, mn_backend=backend,
                            log_level="warn", tun_options=tun_options)
        if tree is not None:
            for daemon in list(d.has) + [d.mn]:
                daemon.env["PYTHONPATH"] = os.path.abspath(tree)
        topo.create()
        try:
            d.write()
            d.start("ha1")
            d.wait_for("ha1 serving", lambda: (d.ask("ha1", "status") or {}).get("state") ==
                       "serving", timeout=30)
            d.start(d.mn.name)
            d.wait_for("registration", lambda: (d.ask(d.mn.name, "status") or {}).get(
                "home_agent") == d.has[0].address, timeout=30)
            pids = {n.name: n.process.pid for n in list(d.has) + [d.mn]
                    if getattr(n, "process", None) is not None}
            out = _all(topo, seconds, rates, pids, case)
            out["ha1_forwarding"] = {k: v for k, v in (d.ask("ha1", "forwarding") or {}).items()
                                     if k in ("counters", "device_counters", "tunnel_packets",
                                              "tunnel_socket_counters")}
            out["mn1_tunnel"] = {k: v for k, v in (d.ask(d.mn.name, "tunnel") or {}).items()
                                 if k in ("counters", "device_counters")}
            for ns, device in (("ha1", "haha0"), (d.mn.name, "hahamn0")):
                try:  # the kernel's drops in front of each TUN (its queue full: not read)
                    stats = json.loads(topo.run(ns, ["ip", "-s", "-j", "link", "show", device])
                                       .stdout)[0]["stats64"]
                    out[f"{ns}_tun_tx"] = {k: stats["tx"][k] for k in ("packets", "dropped")}
                except (LabError, ValueError, KeyError, IndexError) as e:
                    # reported, not silently missing from the output
                    out[f"{ns}_tun_tx"] = {"error": f"{type(e).__name__}: {e}"}
            return out
        finally:
            d.kill_all()
            topo.destroy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1-second measurements")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--rates", default="5000,10000,20000,40000,0",
                    help="offered rates of the 1,400-octet UDP sweep, packets/s (0: unpaced)")
    ap.add_argument("--baseline-tree", default=None, metavar="DIR",
                    help="also measure the tun case with the daemons on the code in DIR")
    ap.add_argument("--cases", default="plain,tun,tun_super,netlink")
    ap.add_argument("--profile", default=None, metavar="DIR",
                    help="sample each daemon with py-spy (collapsed stacks into DIR) during the "
                         "TCP and the unpaced 1,400-octet UDP measurements")
    ap.add_argument("--py-spy", default="py-spy", help="the py-spy executable")
    ap.add_argument("--perf", action="store_true",
                    help="with --profile, also 'perf record' each daemon (kernel symbols)")
    args = ap.parse_args()
    global PROFILE, PERF
    PERF = args.perf
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        PROFILE = (args.py_spy, args.profile)
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    cases = set(args.cases.split(","))
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    if os.geteuid() != 0:
        print(json.dumps({"bench": "forwarding", "error": "needs root (network namespaces)"}))
        return 0
    results = {}
    if "plain" in cases:
        results["plain"] = _plain(seconds, rates)
    if args.baseline_tree and "tun" in cases:
        results["tun_baseline"] = _daemons("tun", seconds, rates, args.baseline_tree,
                                           case="tun_baseline")
    if args.baseline_tree and "tun_super" in cases:
        results["tun_super_baseline"] = _daemons(
            "tun", seconds, rates, args.baseline_tree, tun_options=["super-packets = yes"],
            case="tun_super_baseline")
    if "tun" in cases:
        results["tun"] = _daemons("tun", seconds, rates, case="tun")
    if "tun_super" in cases:
        results["tun_super"] = _daemons("tun", seconds, rates,
                                        tun_options=["super-packets = yes"], case="tun_super")
    if "netlink" in cases:
        config = read_kernel_config()
        if config is not None and "# CONFIG_IPV6_TUNNEL is not set" in config:
            results["netlink"] = {"unavailable": "this kernel has no ip6_tunnel (run it in the "
                                                 "stock-kernel tier: python -m haha.lab.vm)"}
        else:
            results["netlink"] = _daemons("netlink", seconds, rates, case="netlink")
    base = results.get("plain", {}).get("tcp", {}).get("tcp_mbit_s")
    for name in ("tun_baseline", "tun", "tun_super_baseline", "tun_super", "netlink"):
        tcp = results.get(name, {}).get("tcp")
        if tcp and "tcp_mbit_s" in tcp and base:
            results[name]["tcp_fraction_of_plain"] = round(tcp["tcp_mbit_s"] / base, 3)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(json.dumps({"bench": "forwarding", "seconds": seconds, "loadavg": load,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
