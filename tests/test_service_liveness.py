"""The service's side of peer liveness (issue 9): discovery proposals without a key are
refused with one log line per discovery source per minute, counted, and never reach the core."""

from ipaddress import IPv6Address as A

import pytest
from twisted.logger import globalLogPublisher

from test_service import Network


@pytest.fixture
def net(tmp_path):
    n = Network(tmp_path)
    n.start()
    yield n
    n.stop_all()


def test_unkeyed_proposals_are_counted_and_logged_once_a_minute(net):
    """300 proposals of unkeyed addresses from 'link' in two minutes: all refused and counted,
    two warning lines (the second says how many were held back), nothing known to the core."""
    ha1 = net.has[0]
    lines = []

    def observer(event):
        if "has no key" in event.get("log_format", ""):
            lines.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        for i in range(300):
            ha1.peer_appeared(A(f"2001:db8:1::9:{i:x}"), "link")
            net.clock.advance(0.4)
    finally:
        globalLogPublisher.removeObserver(observer)
    c = ha1.counters()
    assert c["peer-refused.no-key"] == 300
    assert len(lines) == 2 and lines[1]["held"] == 150
    assert c["log-lines-suppressed"] == 298
    assert not any(ha1.machine.is_known_peer(A(f"2001:db8:1::9:{i:x}")) for i in range(300))
