"""Per-source rate limiting: a flooding source is held to its budget while other sources'
messages all pass; memory stays bounded under a spoofed-source flood; time is injected."""

from ipaddress import IPv6Address

import pytest

from haha.security import RateLimiter
from haha.security.errors import SecurityConfigError

A = IPv6Address("2001:db8::a")
B = IPv6Address("2001:db8::b")


def test_flooding_source_is_limited_while_another_passes():
    """A sends 1000 packets a second for 10 s, B one every 100 ms: A gets about its rate
    (rate * time + burst), every one of B's packets passes, and only A's are counted."""
    lim = RateLimiter(rate=10, burst=20)
    passed_a = passed_b = sent_b = 0
    for ms in range(10_000):
        now = ms / 1000
        passed_a += lim.allow(A, now)
        if ms % 100 == 0:
            sent_b += 1
            passed_b += lim.allow(B, now)
    assert passed_b == sent_b == 100
    assert 20 + 10 * 9.9 <= passed_a <= 20 + 10 * 10 + 1
    assert lim.counters["rate-limited"] == 10_000 - passed_a


def test_bucket_refills_with_injected_time_up_to_burst():
    """Tokens come back at `rate` per second of the caller's clock, never beyond `burst`, and
    time running backwards gives nothing."""
    lim = RateLimiter(rate=2, burst=3)
    assert [lim.allow(A, 0.0) for _ in range(4)] == [True, True, True, False]
    assert lim.allow(A, 0.5) and not lim.allow(A, 0.5)
    assert not lim.allow(A, 0.1)
    assert [lim.allow(A, 100.0) for _ in range(4)] == [True, True, True, False]


def test_memory_is_bounded_under_spoofed_flood():
    """300 000 packets from as many different sources keep at most max_sources buckets; new
    sources are admitted at admit_rate, and a pinned peer keeps passing throughout."""
    lim = RateLimiter(rate=1, burst=2, max_sources=100, admit_rate=50, admit_burst=10)
    lim.pin(B)
    admitted = 0
    passed_b = 0
    for i in range(300_000):
        now = i / 30_000  # 10 s of flood at 30k packets/s
        admitted += lim.allow(IPv6Address(0x20010DB8 << 96 | i), now)
        assert len(lim) <= 101
        if i % 30_000 == 0:
            passed_b += lim.allow(B, now)
    assert passed_b == 10
    assert 10 + 50 * 9 <= admitted <= 10 + 50 * 10 + 1


def test_tracked_sources_keep_their_budget_when_admission_is_exhausted():
    """When the admission bucket is empty, sources already tracked still get their own tokens;
    only untracked ones are refused."""
    lim = RateLimiter(rate=1, burst=5, max_sources=10, admit_rate=1, admit_burst=1)
    assert lim.allow(A, 0.0)
    assert not lim.allow(B, 0.0)  # admission used up by A
    assert all(lim.allow(A, 0.0) for _ in range(4))
    assert lim.allow(B, 1.0)


def test_least_recently_used_source_is_evicted_first():
    """With room for two, touching A keeps it while B (least recently used) is forgotten: B
    comes back with a fresh bucket, A keeps its spent one."""
    lim = RateLimiter(rate=0.001, burst=1, max_sources=2, admit_rate=1000, admit_burst=1000)
    c = IPv6Address("2001:db8::c")
    assert lim.allow(A, 0) and lim.allow(B, 0)
    assert not lim.allow(A, 0)  # A touched: now most recent
    assert lim.allow(c, 0)  # evicts B
    assert len(lim) == 2
    assert lim.allow(B, 0)  # fresh bucket for B (evicts A)
    lim.unpin(A)


@pytest.mark.parametrize("kwargs", [dict(rate=0), dict(burst=-1), dict(rate=True),
                                    dict(max_sources=0), dict(admit_rate=0), dict(rate="5")])
def test_bad_parameters_are_refused(kwargs):
    """Zero, negative or non-numeric limits are configuration errors."""
    with pytest.raises(SecurityConfigError):
        RateLimiter(**kwargs)
