"""twistd wiring: the plugin file stays cheap, Options, makeService, metrics and control served."""

import socket
import subprocess
import sys
import urllib.request

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.python import usage

from haha import tap, tap_mn
from haha.service import HomeAgentService, MobileNodeService

HA = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = separate-links
boot-wait = 0
[security]
mode = none
lab = yes
[transport]
kind = udp
udp-listen = 127.0.0.1:{port}
[control]
socket = unix:{sock}
metrics = tcp:{mport}:interface=127.0.0.1
"""


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_plugin_file_import_is_cheap():
    """Importing twisted/plugins/haha_plugin.py (done by every getPlugins) loads neither the
    daemon, the core, the codec nor the cryptography package."""
    code = ("import sys; import twisted.plugins.haha_plugin; "
            "heavy = [m for m in ('haha.service', 'haha.core', 'haha.wire', 'cryptography', "
            "'pyroute2', 'haha.security') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_options_require_config():
    """--config is mandatory for both tap names."""
    for module in (tap, tap_mn):
        with pytest.raises(usage.UsageError, match="--config"):
            module.Options().parseOptions([])
        o = module.Options()
        o.parseOptions(["--config", "x.conf"])
        assert o["config"] == "x.conf"


def test_make_service_builds_from_the_file(tmp_path):
    """makeService only loads the file and calls build: the result is the embeddable service."""
    conf = tmp_path / "ha.conf"
    conf.write_text(HA.format(port=free_port(socket.SOCK_DGRAM), sock=tmp_path / "c.sock",
                              mport=free_port()))
    o = tap.Options()
    o.parseOptions(["--config", str(conf)])
    assert isinstance(tap.makeService(o), HomeAgentService)
    mn = tmp_path / "mn.conf"
    mn.write_text("[mobile-node]\nhome-address = 2001:db8:1::100\nhome-prefix = 2001:db8:1::/64\n"
                  "care-of-address = 2001:db8:20::1\n[security]\nmode = none\nlab = yes\n"
                  "[transport]\nkind = udp\nudp-listen = 127.0.0.1:1\n")
    o = tap_mn.Options()
    o.parseOptions(["--config", str(mn)])
    assert isinstance(tap_mn.makeService(o), MobileNodeService)


def test_make_service_exits_with_the_located_error(tmp_path, capsys):
    """A broken file exits with status 2 and the one-line message on standard error."""
    conf = tmp_path / "ha.conf"
    conf.write_text("[home-agent]\naddress = nowhere\n")
    o = tap.Options()
    o.parseOptions(["--config", str(conf)])
    with pytest.raises(SystemExit) as e:
        tap.makeService(o)
    assert e.value.code == 2
    assert f"haha: {conf}:2: [home-agent] address: expected an IPv6 address" in \
        capsys.readouterr().err


def test_a_refused_start_reaches_the_caller_and_leaves_the_transport_stopped(tmp_path):
    """A start the system refuses (here the netlink backend on a kernel without ip6_tunnel)
    reaches the caller as a StartupError naming the reason and leaves the transport stopped;
    under twistd the start-up hook turns it into one line and status 2 (tests/test_startup.py
    runs that with real twistd processes)."""
    from haha.backends.netlink import KernelUnsupported
    from haha.errors import StartupError

    conf = tmp_path / "ha.conf"
    conf.write_text(HA.format(port=free_port(socket.SOCK_DGRAM), sock=tmp_path / "c.sock",
                              mport=free_port()).replace("boot-wait = 0", "boot-wait = 0\n"
                                                         "backend = netlink"))
    o = tap.Options()
    o.parseOptions(["--config", str(conf)])
    svc = tap.makeService(o)

    def refuse():
        raise KernelUnsupported("the netlink backend needs ip6_tunnel")

    svc.backend.start = refuse
    with pytest.raises(StartupError) as e:
        svc.startService()
    assert "the netlink backend needs ip6_tunnel" in str(e.value)
    assert svc.transport._port is None  # the service stopped its transport


@pytest_twisted.inlineCallbacks
def test_metrics_and_control_are_served(tmp_path):
    """A started home agent serves Prometheus text on its metrics endpoint and answers its
    control socket."""
    from haha.config import load_home_agent
    from haha.control.cli import request

    mport = free_port()
    sock = str(tmp_path / "c.sock")
    conf = tmp_path / "ha.conf"
    conf.write_text(HA.format(port=free_port(socket.SOCK_DGRAM), sock=sock, mport=mport))
    service = HomeAgentService.build(load_home_agent(str(conf)), reactor)
    service.startService()
    try:
        body = yield threads.deferToThread(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read())
        answer = yield threads.deferToThread(request, sock, "status")
    finally:
        yield service.stopService()
    text = body.decode()
    assert 'haha_bindings{address="2001:db8:1::1",kind="primary",role="home-agent"} 0.0' in text
    assert "# HELP haha_bindings " in text
    assert answer["ok"] and answer["result"]["state"] == "serving"
