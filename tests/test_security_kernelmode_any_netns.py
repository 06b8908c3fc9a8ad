"""kernel-xfrm on whatever kernel runs the tests (netns tier, also without kernel ESP): the
start either installs every entry or fails with the kernel's reason and leaves nothing."""

import time
from ipaddress import IPv6Address

import pytest

from haha.lab.topology import Topology
from haha.security.errors import SecurityConfigError
from haha.security.kernelmode import KernelXfrm, kernel_pairs
from haha.security.sadb import HOME_AGENT
from haha.security.xfrm import IpXfrm

pytestmark = [pytest.mark.netns]

A = IPv6Address("2001:db8:7::1")
B = IPv6Address("2001:db8:7::2")
SECRET = bytes(range(32))


def _count(topo):
    return (topo.run("b", ["ip", "xfrm", "state"]).stdout.count("proto esp"),
            topo.run("b", ["ip", "xfrm", "policy"]).stdout.count("dir "))


def test_kernel_xfrm_start_installs_all_or_fails_clearly_leaving_nothing(require_root, tmp_path):
    """With ESP in the kernel, start installs both SAs and both policies and stop removes
    them; without it (this project's CI kernel), start fails naming the kernel's reason with
    the esp6 hint, and neither SA nor policy is left behind, nor after a second try."""
    t = Topology()
    t.add_node("a").add_node("b")
    t.add_link("l", ("a", "eth0", [f"{A}/64"]), ("b", "eth0", [f"{B}/64"]))
    t.create()
    try:
        esp = t.run("b", ["ip", "xfrm", "state", "add", "src", str(B), "dst", str(A), "proto",
                          "esp", "spi", "0x100", "mode", "transport", "aead",
                          "rfc4106(gcm(aes))", "0x" + "00" * 20, "128"], check=False)
        t.run("b", ["ip", "xfrm", "state", "flush"])
        for _ in range(2):
            kx = KernelXfrm(IpXfrm(netns=t.ns("b")), B,
                            kernel_pairs(B, [(A, SECRET, HOME_AGENT)], wall=time.time()),
                            str(tmp_path / "x.json"))
            if esp.returncode == 0:
                kx.start()
                assert _count(t) == (2, 2)
                kx.stop()
            else:
                with pytest.raises(SecurityConfigError,
                                   match="AEAD algorithm not found.*esp6"):
                    kx.start()
            assert _count(t) == (0, 0)
    finally:
        t.destroy()
