"""Stock-kernel tier: real daemons, one doing ESP in the kernel, the other in user space.

The separate-links lab topology (draft 3.1 Figure 4: static peers, HELLO over router r) with
two home agents from :class:`haha.lab.deploy.NetnsDeployment`: ha1 with haha's user-space ESP,
ha2 with ``[security] mode = kernel-xfrm`` (or ``external``, its SAs and policies installed by
the test as an IKE daemon would). They must become live peers of each other (HELLO, which only
counts when ESP-protected, both ways), synchronise (Binding Information Request, Update and
Acknowledgement) after a mobile node registers with ha1, and ha2's kernel must have carried
the ESP (its xfrm counters and the daemon's ``kernel-esp.*`` counters).
"""

import os
import subprocess
from ipaddress import IPv6Address

import pytest

from haha.lab.deploy import NetnsDeployment
from haha.lab.topology import separate_links
from haha.security.keys import _xfrm_commands, derive_sa, load_secret

pytestmark = [pytest.mark.netns, pytest.mark.process, pytest.mark.slow,
              pytest.mark.stock_kernel, pytest.mark.kernel_esp]


class _Deployment(NetnsDeployment):
    """ha2 in a kernel ESP mode; everything else as the lab writes it."""

    def __init__(self, *args, mode, **kw):
        super().__init__(*args, **kw)
        self.mode = mode

    def home_agent_text(self, ha):
        text = super().home_agent_text(ha)
        if ha.name == "ha2":
            text += f"\n[security]\nmode = {self.mode}\n"
        return text


def _counters(d, name):
    return d.ask(name, "counters") or {}


def _xfrm(topo, node, what):
    return subprocess.run(["ip", "netns", "exec", topo.ns(node), "ip", "-s", "xfrm", what],
                          capture_output=True, text=True).stdout


def _run(tmp_path, mode, after_ha1=None, crash=None):
    topo = separate_links(n_has=2, n_mns=1)
    d = _Deployment(topo, tmp_path, mode=mode)
    try:
        topo.create()
        d.write()
        d.start("ha1")
        d.wait_for("ha1 up", lambda: d.ask("ha1", "status"), timeout=30)
        if after_ha1 is not None:
            after_ha1(d, topo)
        d.start("ha2")
        for ha in d.has:
            d.wait_for(f"{ha.name} serving", lambda ha=ha: (d.ask(ha.name, "status") or {})
                       .get("state") == "serving", timeout=30)
        for ha in d.has:
            other = next(h.signalling for h in d.has if h is not ha)
            d.wait_for(f"{ha.name}'s peer", lambda ha=ha, other=other: [
                p["address"] for p in d.ask(ha.name, "peers") or []] == [other], timeout=20)
        first = d.has[0]
        d.start(d.mn.name)
        d.wait_for("registration with ha1", lambda: (d.ask(d.mn.name, "status") or {})
                   .get("home_agent") == first.address, timeout=30)
        expected = {h.name: (first.signalling, h is not first) for h in d.has}
        d.wait_for("ha2's copy", lambda: d.primary_of(d.mn.address) == expected, timeout=20)
        c1, c2 = _counters(d, "ha1"), _counters(d, "ha2")
        state = _xfrm(topo, "ha2", "state")
        if crash:
            # SIGKILL leaves the entries; the next start reclaims them and serves again
            d.kill("ha2")
            assert _xfrm(topo, "ha2", "state").count("proto esp") == 4
            d.start("ha2")
            d.wait_for("ha2 serving again", lambda: (d.ask("ha2", "status") or {})
                       .get("state") == "serving", timeout=30)
            d.wait_for("ha2's peer again", lambda: [p["address"] for p in d.ask(
                "ha2", "peers") or []] == [first.signalling], timeout=20)
            crash.update(_counters(d, "ha2"))
        d.stop("ha2")
        after = _xfrm(topo, "ha2", "state"), _xfrm(topo, "ha2", "policy")
        return c1, c2, state, after
    finally:
        d.kill_all()
        topo.destroy()


def test_kernel_xfrm_home_agent_with_a_user_space_esp_peer(tmp_path):
    """ha2 (kernel-xfrm) and ha1 (user-space ESP) see each other live through protected
    HELLOs, and ha1's Binding Information Update reaches ha2 and is acknowledged; ha2 sent and
    received through the kernel's ESP (its transport's counters), ha1 accepted ha2's
    epoch-free packets; ha2's SAs carried packets; after a SIGKILL ha2's entries stay, its next
    start reclaims them (counted) and it is ha1's peer again; a clean stop removes every
    entry."""
    crash = {"crash": 1}
    c1, c2, state, (state_after, policy_after) = _run(tmp_path, "kernel-xfrm", crash=crash)
    assert c2.get("kernelesptransport.kernel-esp.sent", 0) > 0, c2
    assert c2.get("kernelesptransport.kernel-esp.received", 0) > 0, c2
    assert c2.get("kernelesptransport.kernel-xfrm.epoch-rekeys", 0) >= 1, c2
    assert c2.get("received.HaHello", 0) > 0 and c2.get("received.BindingInfoUpdate", 0) > 0
    assert c1.get("received.HaHello", 0) > 0 and c1.get("received.BindingInfoAck", 0) > 0, c1
    assert "reqid 175118" in state  # haha's tag, 0x6861xxxx
    assert "proto esp" not in state_after and "dir " not in policy_after
    # the run after the SIGKILL reclaimed the 4 SAs and 6 policies (HA pair, node pair)
    assert crash.get("kernelesptransport.kernel-xfrm.reclaimed-states") == 4, crash
    assert crash.get("kernelesptransport.kernel-xfrm.reclaimed-policies") == 6, crash


def test_external_home_agent_with_ike_installed_sas(tmp_path):
    """ha2 (external) with SAs and policies the test installs once ha1 runs, as an IKE daemon
    would: ha2's inbound SA with the keys of ha1's boot epoch (what ha1's user-space ESP sends
    with; an IKE daemon would have negotiated fresh keys with it), its outbound SA with the
    pair's epoch-free keys (which ha1 accepts), and the pair with the mobile node. The start-up
    check passes, HELLOs make them peers both ways, ha1's Binding Information Update reaches
    ha2, and the entries are left in place at stop (they are not haha's)."""
    def ike(d, topo):
        ha1, ha2 = d.has
        secret = load_secret(os.path.join(d.directory, "keys", "ha1-ha2.key"))
        epoch = int((d.ask("ha1", "status") or {})["boot_epoch"], 16)
        a, b = IPv6Address(ha2.signalling), IPv6Address(ha1.signalling)
        out = derive_sa(secret, a, b)
        inb = derive_sa(secret, b, a, epoch=epoch)
        lines = [f"ip xfrm state add src {s} dst {t} proto esp spi 0x{k.spi:08x} mode "
                 f"transport aead 'rfc4106(gcm(aes))' 0x{(k.key + k.salt).hex()} 128"
                 for s, t, k in ((a, b, out), (b, a, inb))]
        lines += _xfrm_commands(secret, a, b, 128, policies=True)[2:]
        node = load_secret(os.path.join(d.directory, "keys", "mn.key"))
        lines += _xfrm_commands(node, ha2.address, d.mn.address, 128, policies=True)
        for line in lines:
            subprocess.run(["ip", "netns", "exec", topo.ns("ha2"), "sh", "-c", line],
                           check=True)

    c1, c2, state, (state_after, policy_after) = _run(tmp_path, "external", ike)
    assert c2.get("kernelesptransport.external.checks", 0) >= 1, c2
    assert c2.get("kernelesptransport.kernel-esp.received", 0) > 0, c2
    assert c2.get("kernelesptransport.kernel-esp.sent", 0) > 0, c2
    assert c2.get("received.BindingInfoUpdate", 0) > 0, c2
    assert c1.get("received.HaHello", 0) > 0, c1
    assert "proto esp" in state_after and "dir " in policy_after
