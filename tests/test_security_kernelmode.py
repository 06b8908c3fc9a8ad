"""``kernel-xfrm`` and ``external`` security modes on the host, with the in-memory xfrm seam:
what gets installed (the same SPIs and keys as haha's user-space ESP), removed, reclaimed after
a crash, re-keyed when a peer's boot epoch changes, and how errors are reported; the parsing of
real ``ip xfrm`` listings; the protect/accept seam; the external mode's checks."""

import json
from ipaddress import IPv6Address, IPv6Network

import pytest

from haha.security.errors import SecurityConfigError, SecurityError
from haha.security.keys import derive_pair, derive_sa
from haha.security.kernelmode import (REQID_BASE, ExternalCheck, KernelXfrm, is_haha_reqid,
                                      kernel_pairs)
from haha.security.sadb import HOME_AGENT, MOBILE_NODE, SecurityAssociationDatabase
from haha.security.seqstore import time_floor
from haha.security.xfrm import (FakeXfrm, IpXfrm, XfrmError, XfrmPolicy, XfrmState,
                                parse_policies, parse_states, state_add_line)

LOCAL = IPv6Address("2001:db8:1::1")
PEER = IPv6Address("2001:db8:2::1")
NODE = IPv6Address("2001:db8:100::42")
SECRET = bytes(range(32))
NODE_SECRET = bytes(range(1, 33))
WALL = 1_800_000_000.0


def _pairs():
    return kernel_pairs(LOCAL, [(PEER, SECRET, HOME_AGENT), (NODE, NODE_SECRET, MOBILE_NODE)],
                        wall=WALL)


@pytest.fixture
def kx(tmp_path):
    seam = FakeXfrm()
    return KernelXfrm(seam, LOCAL, _pairs(), str(tmp_path / "xfrm.json"))


def test_installs_the_same_spis_and_keys_as_user_space_esp(kx):
    """Every SA haha's user-space ESP derives for the pairs is in the kernel with the same
    SPI and the same rfc4106 key blob (key || salt), outbound starting at the time floor, all
    tagged with a reqid of haha's range shared with the pair's policies."""
    kx.start()
    seam = kx.seam
    for peer, secret, role in ((PEER, SECRET, HOME_AGENT), (NODE, NODE_SECRET, MOBILE_NODE)):
        out, inb = derive_pair(secret, LOCAL, peer, role)
        assert seam.blob_of(peer, out.spi) == out.key + out.salt
        assert seam.blob_of(LOCAL, inb.spi) == inb.key + inb.salt
        assert seam.sas[(peer, out.spi)].oseq == time_floor(WALL) > 0
        assert seam.sas[(LOCAL, inb.spi)].oseq == 0
    reqids = {s.reqid for s in seam.sas.values()}
    assert all(is_haha_reqid(r) for r in reqids) and len(reqids) == 2
    assert {p.reqid for p in seam.pols.values()} == reqids


def test_policies_require_esp_for_mh_both_ways_and_prefix_discovery_with_nodes(kx):
    """Per home-agent peer: the Mobility Header out and in at level required with an ESP
    template; per mobile node also ICMPv6 146 (in) and 147 (out), as haha's policy requires."""
    kx.start()
    pols = kx.seam.policies()
    assert len(pols) == 2 + 4
    assert all(p.requires_esp() for p in pols)
    mh = {(p.src, p.dst, p.dir) for p in pols if p.proto == 135}
    h = lambda a: IPv6Network(f"{a}/128")  # noqa: E731
    assert mh == {(h(LOCAL), h(PEER), "out"), (h(PEER), h(LOCAL), "in"),
                  (h(LOCAL), h(NODE), "out"), (h(NODE), h(LOCAL), "in")}
    icmp = {(p.icmp_type, p.dir) for p in pols if p.proto == 58}
    assert icmp == {(146, "in"), (147, "out")}


def test_stop_removes_everything_and_the_state_file(kx):
    """After stop the kernel holds none of haha's entries and the state file is gone; a
    second stop is harmless."""
    kx.start()
    assert kx.seam.sas and kx.seam.pols
    kx.stop()
    assert kx.seam.sas == {} and kx.seam.pols == {}
    assert not __import__("os").path.exists(kx.state_path)
    kx.stop()


def test_a_crashed_runs_leftovers_are_reclaimed_at_the_next_start(tmp_path):
    """A run that died without stop leaves its entries and state file; the next start
    removes exactly those (counted) and installs its own; someone else's unrelated entry is
    left alone."""
    seam = FakeXfrm()
    path = str(tmp_path / "xfrm.json")
    foreign = XfrmState(IPv6Address("2001:db8:9::1"), IPv6Address("2001:db8:9::2"), 0x999,
                        7, bytes(20))
    seam.add_states([foreign])
    KernelXfrm(seam, LOCAL, _pairs(), path).start()  # crashes: no stop
    listed = json.load(open(path))
    assert len(listed["states"]) == 4 and len(listed["policies"]) == 6
    # the next run has only the home-agent peer: the node's leftovers must still go
    nxt = KernelXfrm(seam, LOCAL, kernel_pairs(LOCAL, [(PEER, SECRET, HOME_AGENT)], wall=WALL),
                     path)
    assert nxt.start() == (4, 6)
    assert nxt.counters["kernel-xfrm.reclaimed-states"] == 4
    assert len(seam.sas) == 3 and (foreign.dst, foreign.spi) in seam.sas
    assert len(seam.pols) == 2


def test_tagged_entries_in_the_way_are_reclaimed_without_a_state_file(tmp_path):
    """A leftover with haha's reqid tag that collides with this run's entries is removed even
    when the state file was lost."""
    seam = FakeXfrm()
    KernelXfrm(seam, LOCAL, _pairs(), str(tmp_path / "a.json")).start()
    (tmp_path / "a.json").unlink()
    again = KernelXfrm(seam, LOCAL, _pairs(), str(tmp_path / "a.json"))
    assert again.start() == (4, 6)
    assert len(seam.sas) == 4


def test_someone_elses_entry_in_the_way_stops_the_start_and_is_kept(tmp_path):
    """An untagged SA with the SPI haha needs is not haha's to delete: start fails naming
    it, and nothing is installed or removed."""
    seam = FakeXfrm()
    out, _ = derive_pair(SECRET, LOCAL, PEER)
    seam.add_states([XfrmState(LOCAL, PEER, out.spi, 0, bytes(20))])
    kx = KernelXfrm(seam, LOCAL, _pairs(), str(tmp_path / "x.json"))
    with pytest.raises(SecurityConfigError, match=f"SPI 0x{out.spi:08x} that haha did not"):
        kx.start()
    assert len(seam.sas) == 1 and seam.pols == {}


def test_a_kernel_refusal_is_a_clear_error_and_leaves_nothing(kx):
    """When the kernel refuses an SA (no rfc4106 on a kernel without ESP), start raises an
    error that says so and removes what it had installed; the state file remains for the
    next start to reclaim from."""
    seam = kx.seam
    orig = seam.add_states

    def flaky(states):  # the first two SAs go in, then the kernel refuses
        orig(states[:2])
        raise XfrmError("ip xfrm state add failed: Requested AEAD algorithm not found")

    seam.add_states = flaky
    with pytest.raises(SecurityConfigError, match="AEAD algorithm not found.*esp6"):
        kx.start()
    assert seam.sas == {} and seam.pols == {}
    assert not kx.installed


def test_an_unreadable_state_file_names_the_file(tmp_path):
    """A damaged state file stops the start with its path and what to do."""
    path = tmp_path / "xfrm.json"
    path.write_text("{not json")
    kx = KernelXfrm(FakeXfrm(), LOCAL, _pairs(), str(path))
    with pytest.raises(SecurityConfigError, match=f"state file {path} cannot be read"):
        kx.start()


def test_a_derived_spi_collision_is_refused():
    """Two peers whose derived inbound SPIs collide cannot both be in the kernel (it keys
    inbound SAs by destination and SPI): refused naming both."""
    import haha.security.kernelmode as km

    real = km.derive_sa

    def colliding(secret, sender, receiver, bits=128, epoch=None):
        d = real(secret, sender, receiver, bits, epoch)
        return type(d)(0x4242, d.key, d.salt) if receiver == LOCAL else d

    km.derive_sa = colliding
    try:
        with pytest.raises(SecurityConfigError, match="both 0x00004242"):
            _pairs()
    finally:
        km.derive_sa = real


def _user_space_peer(epoch):
    """The user-space ESP home agent at PEER: its SADB with the pair's epoch-keyed SAs."""
    return SecurityAssociationDatabase.from_specs(derive_pair(SECRET, PEER, LOCAL,
                                                              epoch=epoch))


def test_a_peers_new_epoch_replaces_the_kernels_inbound_sa(kx):
    """A user-space peer sends under its boot epoch's keys: the first packet announcing it,
    checked in user space, makes the kernel's inbound SA carry that epoch's keys (same SPI,
    same reqid); later packets of that epoch change nothing; the peer's next run (a later
    generation) replaces it again; a forged announcement and a stale epoch change nothing."""
    kx.start()
    _, inb = derive_pair(SECRET, LOCAL, PEER)
    e1 = (5 << 24) | 0x123
    peer = _user_space_peer(e1)
    assert kx.observe(PEER, peer.protect(LOCAL, 135, b"\x3b" * 16)) is True
    want = derive_sa(SECRET, PEER, LOCAL, epoch=e1)
    assert kx.seam.blob_of(LOCAL, inb.spi) == want.key + want.salt
    assert kx.installed_keys(PEER) == ("epoch", e1)
    assert kx.seam.sas[(LOCAL, inb.spi)].reqid == REQID_BASE + 1 + 0  # PEER sorts first
    assert kx.observe(PEER, peer.protect(LOCAL, 135, b"\x3b" * 16)) is False
    forged = bytearray(_user_space_peer((9 << 24) | 1).protect(LOCAL, 135, b"\x3b" * 16))
    forged[-1] ^= 1
    assert kx.observe(PEER, bytes(forged)) is False
    assert kx.counters["kernel-xfrm.observe-dropped"] == 1
    stale = _user_space_peer((4 << 24) | 7)
    assert kx.observe(PEER, stale.protect(LOCAL, 135, b"\x3b" * 16)) is False
    assert kx.installed_keys(PEER) == ("epoch", e1)
    e2 = (6 << 24) | 0x42
    assert kx.observe(PEER, _user_space_peer(e2).protect(LOCAL, 135, b"\x3b" * 16)) is True
    want = derive_sa(SECRET, PEER, LOCAL, epoch=e2)
    assert kx.seam.blob_of(LOCAL, inb.spi) == want.key + want.salt
    assert kx.counters["kernel-xfrm.epoch-rekeys"] == 2


def test_a_kernel_peers_epoch_free_packets_keep_the_static_sa(kx):
    """A peer that is itself in kernel-xfrm mode sends under the epoch-free keys with a
    random IV mask: its packets are recognised as such and the kernel's SA is not touched;
    when it restarts as a user-space HA, the epoch keys replace the static ones, and back."""
    kx.start()
    out_of_peer, _ = derive_pair(SECRET, PEER, LOCAL)  # what a kernel peer sends with
    from haha.security.esp import OutboundSA

    kernel_peer = OutboundSA(out_of_peer.spi, out_of_peer.key, out_of_peer.salt,
                             seq=1000, iv_mask=0xDEADBEEF12345678)
    assert kx.observe(PEER, kernel_peer.seal(135, b"\x3b" * 16)) is False
    assert kx.installed_keys(PEER) == ("static", 0xDEADBEEF12345678)
    e1 = (5 << 24) | 1
    assert kx.observe(PEER, _user_space_peer(e1).protect(LOCAL, 135, b"\x3b" * 16)) is True
    restarted = OutboundSA(out_of_peer.spi, out_of_peer.key, out_of_peer.salt, seq=5000,
                           iv_mask=0x1111)
    assert kx.observe(PEER, restarted.seal(135, b"\x3b" * 16)) is True
    assert kx.installed_keys(PEER) == ("static", 0x1111)
    assert kx.seam.blob_of(LOCAL, out_of_peer.spi) == out_of_peer.key + out_of_peer.salt


def test_a_failed_rekey_is_counted_and_keeps_the_old_keys(kx):
    """When the kernel refuses the replacement SA the failure is counted and the record of
    what the kernel holds does not change."""
    kx.start()
    kx.seam.fail_next(1)
    assert kx.observe(PEER, _user_space_peer((5 << 24) | 1).protect(LOCAL, 135, b"x" * 8)) \
        is False
    assert kx.counters["kernel-xfrm.rekey-failed"] == 1
    assert kx.installed_keys(PEER) == ("static", None)


def test_a_refused_replacement_puts_the_previous_keys_back(kx):
    """When the kernel takes the old SA out but refuses the new one, the old one (the keys
    of the epoch it had) is installed again, so the pair keeps working."""
    kx.start()
    _, inb = derive_pair(SECRET, LOCAL, PEER)
    e1 = (5 << 24) | 1
    assert kx.observe(PEER, _user_space_peer(e1).protect(LOCAL, 135, b"x" * 8))
    before = kx.seam.blob_of(LOCAL, inb.spi)
    orig = kx.seam.add_states
    refused = []

    def refuse_once(states):
        if not refused:
            refused.append(1)
            raise XfrmError("ip xfrm state add failed: No buffer space available")
        orig(states)

    kx.seam.add_states = refuse_once
    assert kx.observe(PEER, _user_space_peer((6 << 24) | 2).protect(LOCAL, 135, b"x" * 8)) \
        is False
    assert kx.seam.blob_of(LOCAL, inb.spi) == before
    assert kx.installed_keys(PEER) == ("epoch", e1)
    assert kx.counters["kernel-xfrm.rekey-failed"] == 1


def test_user_space_receiver_accepts_a_kernel_senders_epoch_free_packets():
    """haha's user-space ESP (epoch-keyed inbound SA of a home-agent pair) accepts what a
    kernel-xfrm peer sends -- the epoch-free keys, IV = sequence number XOR a random mask --
    with replay protection, and still refuses a forgery."""
    out, inb = derive_pair(SECRET, PEER, LOCAL, epoch=(3 << 24) | 5)
    mine = SecurityAssociationDatabase.from_specs([out, inb])
    kout, _ = derive_pair(SECRET, LOCAL, PEER)
    from haha.security.esp import OutboundSA

    kernel = OutboundSA(kout.spi, kout.key, kout.salt, seq=100, iv_mask=0xABCDEF0123456789)
    first = kernel.seal(135, b"hello-mh")
    assert mine.unprotect(LOCAL, first)[1:] == (135, b"hello-mh")
    assert mine.unprotect(LOCAL, kernel.seal(135, b"second"))[2] == b"second"
    with pytest.raises(SecurityError, match="already received|replay"):
        mine.unprotect(LOCAL, first)
    forged = bytearray(kernel.seal(135, b"third"))
    forged[-1] ^= 1
    with pytest.raises(SecurityError):
        mine.unprotect(LOCAL, bytes(forged))


def test_kernel_esp_protect_and_accept_follow_the_installed_policies(kx):
    """The seam both pipelines call: before start nothing may leave (no policy); after it a
    Mobility Header to the peer passes unchanged, one to an unknown address is refused; a
    Mobility Header from the peer counts as protected, one from a stranger or an ICMPv6 type
    without a policy does not."""
    with pytest.raises(SecurityError, match="no kernel policy"):
        kx.esp.protect(LOCAL, PEER, 135, b"mh")
    kx.start()
    assert kx.esp.protect(LOCAL, PEER, 135, b"mh") == (135, b"mh")
    with pytest.raises(SecurityError) as e:
        kx.esp.protect(LOCAL, IPv6Address("2001:db8:9::9"), 135, b"mh")
    assert e.value.reason == "no-sa"
    assert kx.esp.protected(PEER, LOCAL, 135)
    assert kx.esp.unprotect(NODE, LOCAL, 58, b"mps", icmp_type=146) == (58, b"mps")
    assert not kx.esp.protected(IPv6Address("2001:db8:9::9"), LOCAL, 135)
    assert not kx.esp.protected(NODE, LOCAL, 58, icmp_type=128)
    with pytest.raises(SecurityError) as e:
        kx.esp.unprotect(PEER, LOCAL, 58, b"echo", icmp_type=128)
    assert e.value.reason == "unprotected"
    assert kx.esp.counters["kernel-esp.unprotected-in"] == 3
    kx.stop()
    assert not kx.esp.protected(PEER, LOCAL, 135)


def _ike(seam, a, b, level="required", priority=0):
    """What an IKE daemon installs between a and b: SAs and policies, its own reqid."""
    n = int(b) & 0xFFFF
    seam.add_states([XfrmState(a, b, 0x10000 + n, 1, bytes(20)),
                     XfrmState(b, a, 0x20000 + n, 1, bytes(20))])
    net = lambda x: IPv6Network(f"{x}/128")  # noqa: E731
    seam.add_policies([XfrmPolicy(net(a), net(b), 0, "out", 1, level, priority=priority),
                       XfrmPolicy(net(b), net(a), 0, "in", 1, level, priority=priority)])


def test_external_mode_passes_with_ike_entries_and_names_what_is_missing():
    """External: with SAs both ways and required ESP policies (any protocol, as IKE daemons
    install them) the check is clean and accepts the Mobility Header as protected; without
    them, each missing SA and policy is named and counted, and require() stops the start."""
    seam = FakeXfrm()
    ext = ExternalCheck(seam, LOCAL, [PEER, NODE])
    _ike(seam, LOCAL, PEER)
    problems = ext.check()
    assert len(problems) == 4 and all(str(NODE) in p for p in problems)
    assert ext.counters["external.missing-sa"] == 2
    assert ext.counters["external.missing-policy"] == 2
    with pytest.raises(SecurityConfigError, match=f"no ESP SA {LOCAL} -> {NODE}"):
        ext.require()
    assert ext.esp.protected(PEER, LOCAL, 135)
    assert not ext.esp.protected(NODE, LOCAL, 135)
    _ike(seam, LOCAL, NODE)
    assert ext.check() == []
    ext.require()


def test_external_mode_refuses_optional_or_overridden_policies():
    """A policy at level use (optional) does not make ESP required; neither does a bypass
    policy of higher precedence (lower priority value) in front of a required one."""
    seam = FakeXfrm()
    _ike(seam, LOCAL, PEER, level="use")
    ext = ExternalCheck(seam, LOCAL, [PEER])
    assert any("level use" in p for p in ext.check())
    seam2 = FakeXfrm()
    _ike(seam2, LOCAL, PEER, priority=10)
    net = lambda x: IPv6Network(f"{x}/128")  # noqa: E731
    seam2.pols[("bypass",)] = XfrmPolicy(net(PEER), net(LOCAL), 135, "in", has_esp=False,
                                         priority=1)
    problems = ExternalCheck(seam2, LOCAL, [PEER]).check()
    assert problems == [f"no policy requiring ESP for the Mobility Header {PEER} -> {LOCAL} "
                        f"dir in in the kernel (action allow, no ESP; peer {PEER})"]


def test_external_mode_reports_an_unreadable_kernel():
    """When the kernel's databases cannot be read the check says so and counts it."""
    seam = FakeXfrm()
    seam.states = lambda: (_ for _ in ()).throw(XfrmError("ip xfrm state list failed: x"))
    ext = ExternalCheck(seam, LOCAL, [PEER])
    assert ext.check() == ["cannot read the kernel's xfrm databases: ip xfrm state list "
                           "failed: x"]
    assert ext.counters["external.check-failed"] == 1


STATE_LISTING = """\
src 2001:db8:1::1 dst 2001:db8:2::1
\tproto esp spi 0xc3ac7d9a reqid 1751187457 mode transport
\treplay-window 64 
\taead rfc4106(gcm(aes)) 0xa56ecb187a24e4c169b7aae1dd209d1c48fd6520 128
\tanti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000
\tsel src ::/0 dst ::/0 
src 192.0.2.1 dst 192.0.2.2
\tproto esp spi 0x00000100 reqid 0 mode transport
"""

POLICY_LISTING = """\
src 2001:db8:2::1/128 dst 2001:db8:1::1/128 proto mobility-header 
\tdir in priority 0 ptype main 
\ttmpl src 2001:db8:2::1 dst 2001:db8:1::1
\t\tproto esp reqid 1751187457 mode transport
src 2001:db8:100::42/128 dst 2001:db8:1::1/128 proto ipv6-icmp type 146 
\tdir in priority 5 ptype main 
\ttmpl src :: dst ::
\t\tproto esp reqid 0 mode transport
\t\tlevel use 
src ::/0 dst ::/0 
\tsocket in priority 0 ptype main 
"""


def test_parsing_ip_xfrm_listings():
    """The listings ``ip xfrm`` prints are read back: IPv6 ESP states without their keys
    (IPv4 left out), policies with named protocols, ICMPv6 type, level, reqid, priority,
    template (socket policies left out)."""
    states = parse_states(STATE_LISTING)
    assert states == [XfrmState(LOCAL, PEER, 0xc3ac7d9a, 1751187457)]
    assert states[0].blob == b""
    pols = parse_policies(POLICY_LISTING)
    assert len(pols) == 2
    assert pols[0].proto == 135 and pols[0].dir == "in" and pols[0].requires_esp()
    assert pols[0].tmpl_src == PEER and pols[0].reqid == 1751187457
    assert pols[1].proto == 58 and pols[1].icmp_type == 146 and pols[1].level == "use"
    assert pols[1].priority == 5 and not pols[1].requires_esp()


def test_ip_xfrm_keys_go_through_stdin_never_argv():
    """IpXfrm passes the commands that carry keys to ``ip -batch -`` on standard input, in
    the named namespace, and turns a failure into an XfrmError naming the cause; a delete of
    an entry already gone is no error."""
    calls = []

    def run(argv, stdin):
        calls.append((argv, stdin))
        if "delete" in (stdin or ""):
            return 1, "", "Error: No such process\nCommand failed -:1\n"
        return (2, "", "Error: Requested AEAD algorithm not found.\nCommand failed -:1\n")

    ip = IpXfrm(netns="ns1", run=run)
    s = XfrmState(LOCAL, PEER, 0x1234, REQID_BASE + 1, bytes(range(20)), oseq=77)
    with pytest.raises(XfrmError, match="AEAD algorithm not found"):
        ip.add_states([s])
    argv, stdin = calls[0]
    assert argv == ["ip", "-n", "ns1", "-force", "-batch", "-"]
    assert bytes(range(20)).hex() not in " ".join(argv)
    assert stdin == state_add_line(s) + "\n" and "replay-oseq 77" in stdin
    ip.delete_states([s])  # already gone: quiet


def test_a_bad_key_blob_is_refused_before_the_kernel():
    """An SA whose blob is not an rfc4106 key blob is refused naming the SA, never its key."""
    with pytest.raises(SecurityConfigError, match="spi 0x00001234: an rfc4106 key blob"):
        state_add_line(XfrmState(LOCAL, PEER, 0x1234, 0, b"\x01" * 19))


# -- configuration ------------------------------------------------------------------------------

HA_CONF = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
home-interface = eth0
[security]
"""


def _conf_error(text, node=False):
    from haha.config import ConfigError, home_agent_from_text, mobile_node_from_text

    with pytest.raises(ConfigError) as e:
        (mobile_node_from_text if node else home_agent_from_text)(text, "/etc/haha/ha1.conf")
    return e.value


def test_config_accepts_the_kernel_modes_with_their_keys():
    """mode = kernel-xfrm and external are accepted for a home agent; kernel-xfrm's state
    file defaults to NAME.xfrm beside the configuration (relative paths from there), external's
    check interval to 60 s; both are configurable and range-checked with file, key and line."""
    from haha.config import SECURITY_MODES, home_agent_from_text

    assert {"kernel-xfrm", "external"} <= set(SECURITY_MODES)
    c = home_agent_from_text(HA_CONF + "mode = kernel-xfrm\n", "/etc/haha/ha1.conf")
    assert c.security.mode == "kernel-xfrm"
    assert c.security.xfrm_state_file == "/etc/haha/ha1.xfrm"
    c = home_agent_from_text(HA_CONF + "mode = kernel-xfrm\nxfrm-state-file = run/x.json\n",
                             "/etc/haha/ha1.conf")
    assert c.security.xfrm_state_file == "/etc/haha/run/x.json"
    c = home_agent_from_text(HA_CONF + "mode = external\nexternal-check-interval = 15\n",
                             "/etc/haha/ha1.conf")
    assert c.security.external_check_interval == 15.0 and c.security.xfrm_state_file is None
    e = _conf_error(HA_CONF + "mode = external\nexternal-check-interval = 0\n")
    assert (e.section, e.key, e.line) == ("security", "external-check-interval", 7)


def test_config_refuses_node_groups_in_kernel_xfrm_and_kernel_modes_on_nodes(tmp_path):
    """A node group key cannot work when the kernel does ESP (its SAs would be derived on the
    first packet, which the kernel has already dropped): refused at node-group-key with the way
    out. A mobile node cannot use the kernel modes."""
    key = tmp_path / "group.key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    e = _conf_error(HA_CONF + f"mode = kernel-xfrm\nnode-group-key = {key}\n")
    assert (e.section, e.key) == ("security", "node-group-key")
    assert "[node-keys]" in e.message
    node = ("[mobile-node]\nhome-address = 2001:db8:1::100\nhome-prefix = 2001:db8:1::/64\n"
            "home-agent = 2001:db8:1::1\ncare-of-address = 2001:db8:99::100\n"
            "[security]\nmode = external\n")
    e = _conf_error(node, node=True)
    assert (e.section, e.key) == ("security", "mode") and "home agents" in e.message


def test_the_daemon_builds_kernel_esp_for_the_kernel_modes(tmp_path):
    """A home agent configured for either mode gets the kernel-ESP stand-ins: the ESP rules of
    mode esp, no user-space SA database, its transport wrapped; kernel-xfrm's pairs are its
    [peer-keys] with the same derived SPIs; the UDP transport is refused (the kernel cannot
    protect UDP-carried packets)."""
    from haha.config import home_agent_from_text
    from haha.errors import StartupError
    from haha.security.kerneldaemon import KernelEspTransport, KernelSadb, kernel_esp_for
    from haha.service import home_agent_sadb, security_policy

    key = tmp_path / "ha2.key"
    key.write_text(SECRET.hex())
    key.chmod(0o600)
    conf = (HA_CONF + "mode = kernel-xfrm\n[peers]\nstatic = 2001:db8:2::1\n"
            f"[peer-keys]\n2001:db8:2::1 = {key}\n")
    c = home_agent_from_text(conf, str(tmp_path / "ha1.conf"))
    assert security_policy(c).mode == "esp" and home_agent_sadb(c) is None

    class Raw:
        counters = {"sent": 0}

        def leave_esp_to_kernel(self, enabled=True):
            pass

    seam = FakeXfrm()
    sadb, transport = kernel_esp_for(c, Raw(), None, {PEER: SECRET}, {}, WALL, seam=seam)
    assert isinstance(sadb, KernelSadb) and isinstance(transport, KernelEspTransport)
    assert isinstance(transport.mode, KernelXfrm)
    out, inb = derive_pair(SECRET, LOCAL, PEER)
    assert [p.out_state.spi for p in transport.mode.pairs] == [out.spi]
    assert transport.mode.state_path == str(tmp_path / "ha1.xfrm")
    assert sadb.role_of(PEER) == HOME_AGENT and sadb.has_peer(PEER)
    ext = home_agent_from_text(conf.replace("kernel-xfrm", "external"), "/etc/haha/ha1.conf")
    _, t2 = kernel_esp_for(ext, Raw(), None, {}, {}, WALL, seam=seam)
    assert isinstance(t2.mode, ExternalCheck) and t2.mode.peers == [PEER]
    with pytest.raises(StartupError, match="raw transport"):
        kernel_esp_for(c, object(), None, {PEER: SECRET}, {}, WALL, seam=seam)


def test_trying_a_kernel_senders_keys_is_under_the_new_epoch_budget():
    """A flood of forged packets with ever new IV masks costs at most the budget of tries in
    ICV checks under the epoch-free keys (10 at once), and is refused as epoch-limited or
    stale-epoch after that; a genuine kernel sender is accepted again once a token is back."""
    from haha.security.epoch import EpochInboundSA
    from haha.security.esp import OutboundSA

    now = [100.0]
    out, inb = derive_pair(SECRET, PEER, LOCAL, epoch=(3 << 24) | 5)
    sa = EpochInboundSA(inb.spi, inb.rekey, epoch=None, peer=LOCAL, clock=lambda: now[0])
    calls = []
    real = sa._static

    class Counting:  # the epoch-free SA, counting its ICV checks
        def authentic(self, esp):
            calls.append(1)
            return real.authentic(esp)

        def _accept(self, esp, seq):
            return real._accept(esp, seq)

    sa._static = Counting()
    wrong = derive_sa(bytes(32), LOCAL, PEER)
    reasons = set()
    for n in range(40):
        forged = OutboundSA(inb.spi, wrong.key, wrong.salt, seq=n, iv_mask=(n + 1) * 0x10001)
        with pytest.raises(SecurityError) as e:
            sa.open(forged.seal(135, b"x" * 8))
        reasons.add(e.value.reason)
    assert len(calls) == 10
    assert "epoch-limited" in reasons
    kout, _ = derive_pair(SECRET, LOCAL, PEER)
    kernel = OutboundSA(kout.spi, kout.key, kout.salt, seq=7, iv_mask=0x77)
    with pytest.raises(SecurityError):
        sa.open(kernel.seal(135, b"genuine"))  # no token left
    now[0] += 1.0
    assert sa.open(kernel.seal(135, b"genuine"))[1] == b"genuine"
    assert sa.static_mask == 0x77
