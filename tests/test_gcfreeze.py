"""The daemon freezes its heap every second so full garbage collections stay small.

``GcFreezer`` under task.Clock calls ``gc.freeze()`` at start and every interval (objects alive
then are no longer examined by collections); ``twistd haha`` (``tap.makeService``) installs it
under the home agent service.
"""

import gc
import socket

from twisted.internet.task import Clock

from haha import tap
from haha.gcfreeze import GcFreezer
from test_tap import HA, free_port


def test_freezes_at_start_and_every_interval():
    """Objects created before a freeze are in the permanent generation after it; the count of
    freezes follows the clock; stopping stops it and unfreezes."""
    clock = Clock()
    f = GcFreezer(interval=1.0, clock=clock)
    try:
        f.startService()
        assert f.freezes == 1
        before = gc.get_freeze_count()
        lists = [[i] for i in range(1000)]  # tracked objects
        clock.advance(1.0)
        assert f.freezes == 2
        assert gc.get_freeze_count() >= before + len(lists)
        assert f.counters()["gc-freezes"] == 2
        f.stopService()
        assert gc.get_freeze_count() == 0  # given back when the service stops
        clock.advance(5.0)
        assert f.freezes == 2
    finally:
        gc.unfreeze()


def test_twistd_home_agent_runs_the_freezer(tmp_path):
    """makeService for a home agent puts a GcFreezer under the returned service."""
    conf = tmp_path / "ha.conf"
    conf.write_text(HA.format(port=free_port(socket.SOCK_DGRAM), sock=tmp_path / "c.sock",
                              mport=free_port()))
    o = tap.Options()
    o.parseOptions(["--config", str(conf)])
    service = tap.makeService(o)
    assert [type(s) for s in service if isinstance(s, GcFreezer)] == [GcFreezer]
