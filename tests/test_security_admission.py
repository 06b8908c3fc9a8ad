"""Admission that spoofing cannot starve (issue 9): authenticated traffic has its own budget,
unauthenticated input a per-source and a global one, answers to it a global one; never a
group or :: as source. Unit tests of :mod:`haha.security.admission`, then whole services on the
in-memory hub with real ESP (the Network of test_service)."""

import random
from ipaddress import IPv6Address as A

import pytest

from haha.config import ConfigError, home_agent_from_text
from haha.core.effects import Send
from haha.security.admission import Admission, AdmissionSettings
from haha.security.errors import SecurityConfigError
from haha.wire.ipv6 import build_packet
from haha.wire.mh import BindingError, UnknownMessage, encode_mh
from haha.wire.numbers import IPPROTO_ESP, IPPROTO_MH

from test_service import COA, HA_TEXT, HAS, HOA, Network


def test_authenticated_budget_is_not_the_sources():
    """A source whose unauthenticated budget is spent still gets its authenticated traffic
    through: the two budgets are separate."""
    adm = Admission(AdmissionSettings(source_rate=1, source_burst=5))
    src = HAS[1]
    assert sum(adm.unauthenticated(src, 0.0) for _ in range(100)) == 5
    assert all(adm.authenticated(src, 0.0) for _ in range(1000))
    assert adm.counters["rate-limited"] == 95 and adm.counters["authenticated-budget"] == 0


def test_unauthenticated_input_has_one_global_budget():
    """Spoofed sources cannot add up past the global unauthenticated budget, however many
    there are; it refills at its rate."""
    adm = Admission(AdmissionSettings(unauthenticated_rate=10, unauthenticated_burst=50,
                                      admit_rate=1e6, admit_burst=1e6, max_sources=100000))
    admitted = sum(adm.unauthenticated(A(f"2001:db8:66::{i:x}"), 0.0) for i in range(1000))
    assert admitted == 50 and adm.counters["unauthenticated-budget"] == 950
    assert adm.unauthenticated(A("2001:db8:67::1"), 1.0)


def test_authenticated_peers_each_have_their_own_bucket():
    """One authenticated peer using up its budget does not touch another's."""
    adm = Admission(AdmissionSettings(authenticated_rate=1, authenticated_burst=3))
    assert [adm.authenticated(HAS[1], 0.0) for _ in range(4)] == [True] * 3 + [False]
    assert adm.authenticated(HAS[2], 0.0)
    assert adm.authenticated(HAS[1], 1.0)
    adm.forget(HAS[1])
    assert adm.authenticated(HAS[1], 1.0)


def test_answer_budget():
    """Answers to unauthenticated input: burst, then the rate."""
    adm = Admission(AdmissionSettings(answer_rate=2, answer_burst=4))
    assert sum(adm.answer(0.0) for _ in range(10)) == 4
    assert sum(adm.answer(1.0) for _ in range(10)) == 2
    assert adm.counters["answer-budget"] == 14


@pytest.mark.parametrize("field", ["answer_rate", "authenticated_burst", "max_sources"])
def test_bad_settings_are_refused(field):
    """Zero or negative budgets are configuration errors."""
    with pytest.raises(SecurityConfigError):
        AdmissionSettings(**{field: 0})


def test_configuration_keys(tmp_path):
    """[security] admission keys and [peers] max-candidates reach the settings; a bad value
    names its section and key."""
    key = tmp_path / "k"
    from haha.security.keys import generate_key_file
    generate_key_file(str(key))
    text = HA_TEXT.format(address=HAS[0], preference=1, keys=tmp_path, peers=HAS[1],
                          peer_keys=f"{HAS[1]} = {key}").replace(
        "2001:db8:1::100 = ", "#").replace("[peers]\n", "[peers]\nmax-candidates = 5\n")
    sec = ("[security]\nmax-sources = 99\nadmit-rate = 5000\nadmit-burst = 9\n"
           "unauthenticated-rate = 7\n"
           "authenticated-burst = 11\nanswer-rate = 3\nanswer-burst = 4\n")
    c = home_agent_from_text(text + sec, str(tmp_path / "ha.conf"))
    a = c.security.admission
    assert (a.max_sources, a.admit_rate, a.admit_burst, a.unauthenticated_rate,
            a.authenticated_burst, a.answer_rate, a.answer_burst) == (99, 5000, 9, 7, 11, 3, 4)
    assert c.max_candidates == 5
    with pytest.raises(ConfigError) as e:
        home_agent_from_text(text + "[security]\nanswer-rate = 0\n", str(tmp_path / "ha.conf"))
    assert "answer-rate" in str(e.value) and "security" in str(e.value)


# -- whole services on the in-memory hub -------------------------------------------------------


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    n.start()
    yield n
    n.stop_all()


def _esp_junk(rng, src, dst):
    body = rng.randbytes(4) + rng.randbytes(60)
    return build_packet(src, dst, IPPROTO_ESP, body)


def _flood(net, target, src, seconds, rate=2000, step=0.001, seed=9):
    """ESP with random SPIs from ``src`` to ``target`` at ``rate`` packets/s, spread over
    ``step`` seconds of the clock so that real packets meet an emptied source bucket."""
    rng = random.Random(seed)
    per_step = round(rate * step)
    for _ in range(round(seconds / step)):
        for _ in range(per_step):
            target.adapter.packet_received(_esp_junk(rng, src, target.config.address))
        net.clock.advance(step)


def test_esp_flood_spoofing_a_peer_does_not_lose_the_peer(net):
    """2,000 packets/s of ESP with random SPIs from ha2's address for 8 s (three times the
    3 s HA lifetime) at ha1: ha2's real HELLOs still authenticate and are admitted, ha1 never
    declares ha2 dead, takes nothing over, and the flood is dropped (unknown SPI or
    rate-limited)."""
    ha1, ha2 = net.has[0], net.has[1]
    hellos = ha1.adapter.counters["received.HaHello"]
    _flood(net, ha1, HAS[1], 8)
    c = ha1.adapter.counters
    assert c["event.peer-down"] == 0 and c["event.take-over"] == 0
    assert c["received.HaHello"] - hellos >= 2 * 7  # both peers, every second
    assert HAS[1] in [A(p["address"]) for p in ha1.peers()]
    assert c["dropped.unknown-spi"] + c["dropped.rate-limited"] == 16000
    assert ha2.counters().get("event.take-over", 0) == 0


def test_esp_flood_spoofing_a_node_does_not_stop_its_registration(net):
    """ESP junk from the node's care-of address at 2,000/s for 10 s while the node
    re-registers every half second (20 Binding Updates): every one authenticates, is
    admitted and accepted, although its source's unauthenticated budget is spent."""
    ha1 = net.has[0]
    accepted = ha1.machine.counters["bu-accepted"]
    sent = net.mn.adapter.counters["sent.BindingUpdate"]
    received = ha1.adapter.counters["received.BindingUpdate"]
    for i in range(20):
        net.mn.move(COA)
        _flood(net, ha1, COA, 0.5, seed=i)
    assert ha1.adapter.counters["dropped.rate-limited"] > 15000
    n = net.mn.adapter.counters["sent.BindingUpdate"] - sent
    assert n >= 20
    assert ha1.adapter.counters["received.BindingUpdate"] - received == n
    assert ha1.machine.counters["bu-accepted"] - accepted == n
    assert net.mn.status()["state"] == "registered"


def test_binding_errors_have_a_global_budget(net):
    """Unknown MH types from 1,000 spoofed sources at one instant: at most answer-burst (200)
    Binding Errors leave, the rest are counted as refused."""
    ha1 = net.has[0]
    before = len(net.hub.log)
    for i in range(1000):
        src = A(f"2001:db8:66::{i:x}")
        mh = encode_mh(UnknownMessage(99, bytes(2)), src, HAS[0], ha1.config.numbers)
        ha1.adapter.packet_received(build_packet(src, HAS[0], IPPROTO_MH, mh))
    sent = [p for _, p, _ in net.hub.log[before:] if p[6] == IPPROTO_MH
            and A(p[8:24]) == HAS[0] and A(p[24:40]).exploded.startswith("2001:0db8:0066")]
    assert len(sent) == 200
    assert ha1.adapter.counters["send-refused.answer-budget"] == 800


def test_never_sent_from_a_group_or_unspecified_source(net):
    """Whatever the machine asks, the adapter sends nothing from a multicast or unspecified
    source."""
    ha1 = net.has[0]
    before = len(net.hub.log)
    for src in (A("ff02::1"), A("::")):
        ha1.adapter.send_mh(Send(BindingError(2, HOA), src, COA))
    assert len(net.hub.log) == before
    assert ha1.adapter.counters["send-refused.bad-source"] == 2


def test_the_source_check_covers_all_of_ff00_8_and_only_it(net):
    """The bad-source test on the address's integer refuses every group (ff00::/8, the
    lowest and highest included) and ::, and lets the addresses next to them through."""
    ha1 = net.has[0]
    before = len(net.hub.log)
    for src in (A("ff00::"), A("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), A("ff0e::1")):
        ha1.adapter.send_mh(Send(BindingError(2, HOA), src, COA))
    assert len(net.hub.log) == before
    assert ha1.adapter.counters["send-refused.bad-source"] == 3
    for src in (A("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), A("::1"), HAS[0]):
        ha1.adapter.send_mh(Send(BindingError(2, HOA), src, COA))
    assert ha1.adapter.counters["send-refused.bad-source"] == 3
    assert ha1.adapter.counters["sent.BindingError"] >= 3


def test_a_forgery_under_a_known_spi_is_charged_to_the_strangers(net):
    """ESP with ha2's real SPI and a fresh sequence number but a forged body: checked first
    (known SPI), fails authentication, and is then charged to the unauthenticated budget of
    its outer source, never to ha2's authenticated bucket; ha2's real HELLOs are charged to
    that bucket."""
    ha1 = net.has[0]
    hello = next(p for src, p, _ in reversed(net.hub.log) if src == "ha2"
                 and p[6] == IPPROTO_ESP and A(p[24:40]) == HAS[0])
    forged = hello[:44] + (0xFFFFFF00).to_bytes(4, "big") + bytes(len(hello) - 48)
    admission = ha1.adapter.limiter
    source_bucket = admission.sources._pinned[int(HAS[1])]  # keyed by the integer too
    auth_bucket = admission.bucket_of(int(HAS[1]))  # keyed by the address's integer
    source_tokens, auth_tokens = source_bucket.tokens, auth_bucket.tokens
    stamp = auth_bucket.stamp
    ha1.adapter.packet_received(forged)
    # Refused unauthenticated: by its ICV, or before it when the IV it carries names an older
    # boot epoch than the SA's (docs/security.md, "Boot epochs").
    c = ha1.adapter.counters
    assert c["dropped.auth-failed"] + c["dropped.stale-epoch"] == 1
    assert source_bucket.tokens == source_tokens - 1
    assert auth_bucket.tokens == auth_tokens
    received = ha1.adapter.counters["received.HaHello"]
    net.run(1.1)
    assert ha1.adapter.counters["received.HaHello"] > received
    assert auth_bucket.stamp > stamp  # the real HELLOs spent from ha2's own bucket


def test_an_sa_peers_budget_is_one_bucket_per_address_value():
    """The authenticated budget of a peer is kept per address value: packets naming the peer
    through different but equal IPv6Address objects spend one bucket (burst 3: the fourth is
    refused), another peer has its own, and forget() by an equal address gives a fresh one."""

    lim = Admission(AdmissionSettings(authenticated_rate=0.1, authenticated_burst=3))
    assert [lim.authenticated(A("2001:db8:1::77"), 0.0) for _ in range(4)] == [True] * 3 + [False]
    assert lim.authenticated(A("2001:db8:1::78"), 0.0)
    lim.forget(A("2001:db8:1::77"))
    assert lim.authenticated(A("2001:db8:1::77"), 0.0)
    assert lim.counters["authenticated-budget"] == 1


def test_admission_pins_and_charges_addresses_whatever_object_names_them():
    """The per-source buckets are keyed by the address's integer: a pinned peer's address is
    never subject to the admission of new sources, whichever IPv6Address object names it, a
    source's packets are charged to one bucket however many objects carry its address, and an
    unpinned address is a new source again."""
    adm = Admission(AdmissionSettings(max_sources=16, admit_rate=0.001, admit_burst=1,
                                      source_rate=0.001, source_burst=2))
    peer, node, other = A("2001:db8::1"), A("2001:db8::100"), A("2001:db8::200")
    adm.pin(peer)
    assert adm.unauthenticated(A(str(node)), 0.0)  # admitted: the one new source allowed
    assert not adm.unauthenticated(other, 0.0)  # no admission left for another new source
    assert adm.unauthenticated(A(str(peer)), 0.0) and adm.unauthenticated(A(str(peer)), 0.0)
    assert not adm.unauthenticated(peer, 0.0)  # its own bucket (burst 2) is spent
    assert adm.unauthenticated(A(str(node)), 0.0)  # the same bucket: its second token
    assert not adm.unauthenticated(node, 0.0)
    assert len(adm) == 2
    adm.unpin(A(str(peer)))
    assert len(adm) == 1 and not adm.unauthenticated(peer, 0.0)  # a new source, no admission


class _KeepEveryBucket:
    """The authenticated budget as it was: one bucket per SA peer, kept for good."""

    def __init__(self, rate, burst):
        from haha.security.ratelimit import _Bucket, spend

        self.rate, self.burst, self.buckets = rate, burst, {}
        self._bucket, self._spend = _Bucket, spend

    def authenticated(self, peer, now):
        bucket = self.buckets.get(int(peer))
        if bucket is None:
            bucket = self.buckets[int(peer)] = self._bucket(self.burst, now)
        return self._spend(bucket, now, self.rate, self.burst)


@pytest.mark.parametrize("seed", range(12))
def test_authenticated_buckets_in_generations_charge_exactly_as_kept_ones(seed):
    """Forgetting authenticated buckets untouched for a refill period changes no answer:
    random traffic from 40 SA peers (bursts, pauses shorter and longer than the refill
    period, rates and bursts of several sizes) gets the same yes/no, packet by packet, as
    buckets kept for good, while far fewer buckets are kept."""
    rng = random.Random(seed)
    rate, burst = rng.choice([(1.0, 3), (10.0, 20), (100.0, 50), (0.5, 1), (7.0, 7)])
    adm = Admission(AdmissionSettings(authenticated_rate=rate, authenticated_burst=burst))
    kept = _KeepEveryBucket(rate, burst)
    peers = [A(f"2001:db8:1::{i + 1:x}") for i in range(40)]
    now, answers = 0.0, []
    for _ in range(1500):
        now += rng.choice([0.0, 0.0, 0.001, 0.05, burst / rate * rng.uniform(0.2, 2.5)])
        peer = rng.choice(peers[:rng.choice([2, 10, 40])])
        for _ in range(rng.choice([1, 1, 2, int(burst) + 2])):
            got = adm.authenticated(A(str(peer)), now)
            assert got == kept.authenticated(peer, now), (seed, now, peer)
            answers.append(got)
    assert True in answers and False in answers  # both outcomes were exercised
    assert adm.counters["authenticated-budget"] == answers.count(False)
    now += 2 * burst / rate * 1.01
    assert adm.authenticated(peers[0], now) == kept.authenticated(peers[0], now)
    assert adm.authenticated_buckets() == 1 and len(kept.buckets) == 40


def test_an_idle_nodes_bucket_is_forgotten_after_two_refill_periods():
    """100,000 nodes each registering once keep 100,000 buckets only while they are recent:
    two refill periods (2 s each by default) later one packet of another peer leaves
    only that peer's bucket; a busy peer's partly spent bucket is carried over a turn of
    the generations, not refilled."""
    adm = Admission()  # 10,000 a second, burst 20,000: a refill period of 2 s
    for i in range(100000):
        assert adm.authenticated(0x20010DB8000100000000000000010000 + i, 0.0)
    assert adm.authenticated_buckets() == 100000
    busy = HAS[1]
    for _ in range(15000):
        adm.authenticated(busy, 1.5)
    adm.authenticated(busy, 2.1)  # the first turn: the nodes' buckets are the older ones
    assert adm.authenticated_buckets() == 100001
    assert 4999 < adm.bucket_of(busy).tokens < 5001 + 0.6 * 10000
    adm.authenticated(busy, 4.2)  # the second: the nodes' buckets are forgotten
    assert adm.authenticated_buckets() == 1
    assert adm.bucket_of(0x20010DB8000100000000000000010000) is None
