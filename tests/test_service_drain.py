"""A stopping home agent's drain wait: bounded by drain-timeout, and nothing left scheduled."""

from ipaddress import IPv6Address as A

from twisted.internet.testing import MemoryReactorClock

from haha.config import home_agent_from_text
from haha.core.effects import DrainComplete
from haha.io.memory import MemoryHub
from haha.service import HomeAgentService

HA = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = separate-links
boot-wait = 0
drain-timeout = 3
[security]
mode = none
lab = yes
[transport]
kind = udp
udp-listen = 127.0.0.1:1
"""


def _service_with_a_node(tmp_path):
    config = home_agent_from_text(HA, str(tmp_path / "ha.conf"))
    reactor = MemoryReactorClock()
    end = MemoryHub(reactor).endpoint(config.address, name="ha1")
    service = HomeAgentService.build(config, reactor, transport=end)
    service.startService()
    service.machine.cache.store(A("2001:db8:1::100"), A("2001:db8:20::1"), 0, 1, 600,
                                reactor.seconds() + 600, (), None, config.address,
                                reactor.seconds())
    return service, reactor


def test_drain_waits_until_drain_timeout_and_no_longer(tmp_path):
    """With a primary binding and no peer to move it to, the stop waits exactly drain-timeout
    (3 s) before it goes on: not finished just before, finished at it."""
    service, reactor = _service_with_a_node(tmp_path)
    d = service.stopService()
    reactor.advance(2.9)
    assert not d.called
    reactor.advance(0.1)
    assert d.called and service._drained.called


def test_drain_finished_early_cancels_its_timeout(tmp_path):
    """When the last node has left (the core's DrainComplete effect), the stop goes on at once
    and the drain timeout is no longer scheduled."""
    service, reactor = _service_with_a_node(tmp_path)
    drain = service._drain(3)
    assert not drain.called and len(reactor.getDelayedCalls()) >= 1
    before = len(reactor.getDelayedCalls())
    service.adapter.duty(DrainComplete())
    assert drain.called
    assert len(reactor.getDelayedCalls()) == before - 1
    reactor.advance(3)  # the cancelled timeout does not fire on a finished wait
    assert drain.called
