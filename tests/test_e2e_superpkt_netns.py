"""Tier 3: real daemons with ``super-packets = yes`` in every ``[backend:tun]`` (the lab's
shared home link, two home agents, ESP): TCP to and from the node's home address crosses
the tunnel as super-packets through ha1, and again through ha2 after ha1's SIGKILL (the
take-over installs the route, and the super-packet path follows it), bytes intact."""

from ipaddress import IPv6Address

import pytest

from haha.lab import topology
from haha.lab.deploy import NetnsDeployment
from haha.lab.timing import scaled
from tcptransfer import expected, transfer

PORT = 5204
SIZE = 4 << 20



def _transfer(topo, receiver, address, sender, source=None):
    return transfer(topo, receiver, address, sender, PORT, SIZE, source, timeout=90)


def _super(d, name):
    """(sent whole, received whole) by ``name``'s tunnel so far."""
    c = (d.ask(name, "forwarding") or {}).get("counters", {})
    return c.get("super_sent", 0), c.get("super_received", 0)


def _both_ways(d, ha):
    """4 MB down to the home address and 4 MB up from it, intact, through ``ha``, which
    sent and received super-packets during it."""
    topo = d.topology
    home = IPv6Address(d.mn.address)
    before = _super(d, ha)
    assert _transfer(topo, d.mn.name, home, "cn") == expected(SIZE)
    assert _transfer(topo, "cn", topo.address("cn"), d.mn.name, home) == expected(SIZE)
    after = _super(d, ha)
    assert after[0] > before[0] and after[1] > before[1], (ha, before, after)


@pytest.mark.netns
def test_daemons_carry_tcp_as_super_packets_through_a_take_over(tmp_path, require_root):
    """The daemons read the option, open their tunnel sockets and guard rules, and carry TCP
    whole both ways through ha1 and, after ha1 is killed, through ha2."""
    topo = topology.shared_home_link(n_has=2, n_mns=1)
    d = NetnsDeployment(topo, tmp_path, log_level="info",
                        tun_options=["super-packets = yes"])
    try:
        topo.create()
        d.write()
        for ha in d.has:
            d.start(ha.name)
        for ha in d.has:
            d.wait_for(f"{ha.name} serving", lambda ha=ha: (d.ask(ha.name, "status") or {})
                       .get("state") == "serving", timeout=scaled(30))
        d.start(d.mn.name)
        d.wait_for("registration with ha1", lambda: (d.ask(d.mn.name, "status") or {})
                   .get("home_agent") == d.has[0].address, timeout=scaled(30))
        assert (d.ask("ha1", "forwarding") or {}).get("super_packets") is True
        _both_ways(d, "ha1")
        d.kill("ha1")
        d.wait_for("re-registration with ha2", lambda: (d.ask(d.mn.name, "status") or {})
                   .get("home_agent") == d.has[1].address, timeout=scaled(d.lifetime + 20))
        _both_ways(d, "ha2")
        for name in ("ha2", d.mn.name):
            c = d.ask(name, "counters") or {}
            assert not c.get("tunnel-failed") and not c.get("effect-failed"), (name, c)
    finally:
        d.kill_all()
        topo.destroy()
