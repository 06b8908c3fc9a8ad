"""Benchmark: the load generator's CPU per node and per step, in process (issue 11).

What `bench/scale.py` reports as each generator process's CPU seconds per phase, taken apart:
one generator worker (:class:`haha.lab.generator._Worker`, exactly as a worker process builds
it: haha's own :class:`~haha.core.mobilenode.MobileNode`, its
:class:`~haha.protocol.MobileNodeAdapter` with user-space ESP and an SA database filled by the
daemon's :class:`~haha.security.keyring.NodeKeyring`, the shared socket's dispatch) on a
simulated reactor (a real reactor's timers on a simulated time; no socket: what the nodes
send is captured where the socket's ``sendto`` would be, what they receive enters where the
datagram read from the socket would), against home agents that are real
:class:`haha.endpoint.HomeAgentEndpoint` pipelines with the run's node-group key (their CPU is
not counted: ``time.process_time`` around the worker's calls only). Steps, each in
microseconds of the worker's CPU per node:

- ``start``: every node started (its first Binding Update encoded, protected and sent, its
  retransmission timer armed), then the reactor's turn;
- ``retransmit``: 1.9 s later (after the first timeout, jittered or not), no answer yet:
  every node's retransmission timer fires and it sends its Binding Update again;
- ``registered``: the home agent's Binding Acknowledgement delivered to every node (dispatch,
  ESP, decoding, the machine, events and the generator's record, the timer re-armed for the
  refresh);
- ``report``: one of the reports the parent asks for while it waits (every 0.1 s at 10,000
  nodes: how many registered, with which home agent);
- ``switched``: a survivor's Home Agent Switch Request delivered to every node (the node's SA
  pair with the survivor derived on first use, a Binding Update to it);
- ``reregistered``: the survivor's acknowledgement delivered;
- ``bookkeeping``: the generator's own questions once (``report`` with latencies, ``mark``,
  ``phase``, ``homes``), per node.

Baseline ``floor``, in the same run and unit: per node, the codec and ESP alone of one
registration (a Binding Update encoded, protected and built into a packet; an
acknowledgement parsed, unprotected and decoded), what no change outside ESP and the codec
can remove. Prints one JSON object; ``--profile STEP`` prints a cProfile of that step instead
(and writes it to the file named by ``HAHA_NODECOST_PROFILE`` when set).
"""

import argparse
import cProfile
import gc
import json
import os
import pstats
import random
import sys
import time
from ipaddress import IPv6Address, IPv6Network
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from twisted.internet.interfaces import IReactorTime, IReactorUDP  # noqa: E402
from zope.interface import implementer  # noqa: E402

from haha.core.effects import Send  # noqa: E402
from haha.core.homeagent import HomeAgent  # noqa: E402
from haha.core.settings import HomeAgentSettings  # noqa: E402
from haha.endpoint import HomeAgentEndpoint  # noqa: E402
from haha.lab.cluster import HOME_PREFIX  # noqa: E402
from haha.lab.generator import _Worker  # noqa: E402
from haha.security.nodegroup import NodeGroup  # noqa: E402
from haha.security.policy import SecurityPolicy  # noqa: E402
from haha.security.sadb import SecurityAssociationDatabase  # noqa: E402
from haha.wire.ipv6 import build_packet, parse_packet  # noqa: E402
from haha.wire.mh import (BU_A, BU_H, BindingUpdate, HaSwitchRequest,  # noqa: E402
                          decode_mh, encode_mh)
from haha.wire.numbers import DEFAULT_PROFILE, IPPROTO_ESP, IPPROTO_MH  # noqa: E402
from haha.wire.options import IPADDR_HOME_AGENT, AlternateCareOfAddress, IpAddress  # noqa: E402

SECRET = bytes(range(32))
HAS = [("2001:db8:1::1", 40001), ("2001:db8:1::2", 40002), ("2001:db8:1::3", 40003)]
STEPS = ("start", "retransmit", "registered", "report", "switched", "reregistered",
         "bookkeeping")


@implementer(IReactorTime, IReactorUDP)
class _Reactor:
    """A real reactor's timers (``callLater``'s heap of ``DelayedCall``, run by
    ``runUntilCurrent``, as a worker process's reactor runs them) on a simulated time; it is
    never run and opens no socket (the worker's ``start`` is replaced)."""

    def __init__(self):
        from twisted.internet.selectreactor import SelectReactor

        self.now = 1000.0
        self.real = SelectReactor()
        self.real.seconds = lambda: self.now
        self.seconds = self.real.seconds
        self.callLater = self.real.callLater

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):  # noqa: N802
        raise AssertionError("the benchmark opens no socket")

    def advance(self, dt):
        self.now += dt
        self.real.runUntilCurrent()


def _home_agent(address):
    s = HomeAgentSettings(address=IPv6Address(address), home_prefix=IPv6Network(HOME_PREFIX),
                          boot_wait=0, max_binding_lifetime=3600)
    ep = HomeAgentEndpoint(HomeAgent(s, random.Random(address)), DEFAULT_PROFILE,
                           SecurityPolicy(DEFAULT_PROFILE), SecurityAssociationDatabase(),
                           node_group=NodeGroup(SECRET, IPv6Network(HOME_PREFIX),
                                                IPv6Address(address)))
    ep.start(0.0)
    ep.output()
    return ep


class Run:
    """One worker of ``n`` nodes through every step (module docstring)."""

    def __init__(self, n):
        from haha.logging import configure

        configure("error")  # as a worker process (haha.lab.generator._worker_main)
        self.n = n
        self.reactor = _Reactor()
        spec = {"index": 0, "first": 0, "count": n, "port": 0, "home_agents": HAS,
                "secret": SECRET, "lifetime": 3600}
        self.worker = _Worker(self.reactor, spec)  # type: ignore
        self.sent = []
        shared = self.worker.shared
        shared.start = lambda: None
        sent = self.sent
        if hasattr(shared, "udp"):
            # The code before the lean shared socket: its UdpTransport's own paths both ways,
            # only the system calls replaced (as for the code after it).
            class _Port:
                def write(self, packet, endpoint):
                    sent.append(packet)

            udp = shared.udp
            udp._port = _Port()
            udp._receiver = shared._received
            addr = ("127.0.0.1", HAS[0][1])

            def received(data):
                udp._enqueue(data, addr)
                udp.input.run()
            self.received = received
        else:
            shared._sendto = lambda packet, endpoint: sent.append(packet)
            self.received = shared._received
        self.has = {IPv6Address(a): _home_agent(a) for a, _ in HAS}
        self.cpu = {}

    def _measure(self, step, f, profile=None):
        gc.collect()
        if profile == step:
            prof = cProfile.Profile()
            prof.enable()
        t0 = time.process_time()
        f()
        self.cpu[step] = time.process_time() - t0
        if profile == step:
            prof.disable()
            if os.environ.get("HAHA_NODECOST_PROFILE"):
                prof.dump_stats(os.environ["HAHA_NODECOST_PROFILE"])
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(30)

    def _turn(self, dt=0.0):
        self.reactor.advance(dt)

    def _to_home_agents(self, packets):
        """The home agents' answers to ``packets`` (not measured)."""
        now = self.reactor.seconds()
        out = []
        for data in packets:
            ep = self.has[IPv6Address(data[24:40])]
            ep.receive(data, now)
            out += [d.data for d in ep.datagrams_to_send()]
            ep.outbox.clear()
        return out

    def _deliver(self, packets):
        received = self.received
        for data in packets:
            received(data)
        self._turn()

    def _switch_requests(self, survivor):
        """What ``survivor`` sends each node when it takes it over (not measured)."""
        ep = self.has[survivor]
        now = self.reactor.seconds()
        out = []
        for _, care_of, machine, _ in self.worker.nodes:
            hoa = machine.home_address
            msg = HaSwitchRequest((IpAddress(IPADDR_HOME_AGENT, survivor, 128),))
            ep.apply([Send(msg, survivor, care_of, routing_address=hoa, protect=hoa)], now)
            out += [d.data for d in ep.datagrams_to_send()]
            ep.outbox.clear()
        return out

    def __call__(self, profile=None):
        w = self.worker
        self._measure("start", lambda: (w.go(), self._turn()), profile)
        first = list(self.sent)
        self.sent.clear()
        self._measure("retransmit", lambda: self._turn(1.9), profile)
        assert len(self.sent) == self.n, f"{len(self.sent)} retransmissions for {self.n} nodes"
        self.sent.clear()
        acks = self._to_home_agents(first)
        self._measure("registered", lambda: self._deliver(acks), profile)
        assert w.report()["registered"] == self.n
        self._measure("report", lambda: [w.report() for _ in range(10)], profile)
        self.cpu["report"] /= 10
        survivor = IPv6Address(HAS[1][0])
        w.mark()
        requests = self._switch_requests(survivor)
        self._measure("switched", lambda: self._deliver(requests), profile)
        updates = list(self.sent)
        self.sent.clear()
        assert len(updates) == self.n, f"{len(updates)} Binding Updates after the requests"
        acks = self._to_home_agents(updates)
        self._measure("reregistered", lambda: self._deliver(acks), profile)
        r = w.report()
        assert r["by_home_agent"] == {str(survivor): self.n}, r["by_home_agent"]

        def bookkeeping():
            w.report(latencies=True)
            w.mark()
            w.phase(time.time())
            w.homes()
        self._measure("bookkeeping", bookkeeping, profile)
        return {step: self.cpu[step] / self.n * 1e6 for step in STEPS}


def floor(n):
    """Per node, the codec and ESP of one registration alone (module docstring)."""
    from haha.security.keyring import NodeKeyring
    from haha.lab.loadnodes import home_address, node_secret

    ha = IPv6Address(HAS[0][0])
    ha_ep = _home_agent(HAS[0][0])
    nodes = []
    for i in range(n):
        hoa = home_address(i)
        care_of = IPv6Address(int(IPv6Address("2001:db8:21::1")) + i)
        sadb = SecurityAssociationDatabase()
        NodeKeyring(node_secret(SECRET, hoa), hoa, sadb).ensure(ha)
        nodes.append((hoa, care_of, sadb))
    bus = []
    gc.collect()
    t0 = time.process_time()
    for hoa, care_of, sadb in nodes:
        mh = encode_mh(BindingUpdate(1, BU_A | BU_H, 900, (AlternateCareOfAddress(care_of),)),
                       hoa, ha, DEFAULT_PROFILE)
        bus.append(build_packet(care_of, ha, IPPROTO_ESP, sadb.protect(ha, IPPROTO_MH, mh),
                                home_address=hoa))
    send = time.process_time() - t0
    acks = []
    for data in bus:
        ha_ep.receive(data, 0.0)
        acks += [d.data for d in ha_ep.datagrams_to_send()]
        ha_ep.outbox.clear()
    gc.collect()
    t0 = time.process_time()
    for (hoa, care_of, sadb), data in zip(nodes, acks):
        packet = parse_packet(data)
        peer, nh, payload = sadb.unprotect(packet.source, packet.payload)
        decode_mh(payload, packet.source, packet.destination, DEFAULT_PROFILE)
    receive = time.process_time() - t0
    return (send + receive) / n * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=10000, help="nodes in the worker (10,000)")
    p.add_argument("--rounds", type=int, default=2, help="runs; the best of each step is kept")
    p.add_argument("--profile", choices=STEPS, help="print a cProfile of this step instead")
    args = p.parse_args(argv)
    if args.profile:
        Run(args.nodes)(args.profile)
        return
    best = {}
    base = None
    for _ in range(args.rounds):
        for step, us in Run(args.nodes)().items():
            best[step] = min(us, best.get(step, us))
        f = floor(args.nodes)
        base = f if base is None else min(base, f)
    cycle = best["start"] + best["registered"]
    results = [{"case": step, "metric": "worker CPU per node", "unit": "us",
                "value": round(us, 1), "baselines": {"floor": round(base, 1)}}
               for step, us in best.items()]
    results.append({"case": "registration (start + registered)", "metric": "ratio to the floor",
                    "unit": "x", "value": round(cycle / base, 2),
                    "baselines": {"floor_us": round(base, 1)}})
    print(json.dumps({"bench": "nodecost", "nodes": args.nodes,
                      "loadavg": os.getloadavg()[0], "results": results}))


if __name__ == "__main__":
    main()
