"""Start-up failures: one line on standard error naming the cause and the fix, exit status 2.

Each case is tried as an operator meets it: the real ``twistd -n haha`` / ``twistd -n haha-mn``
as a subprocess (as root, and as ``nobody`` through ``setpriv`` where the case is about
privileges), plus the embedder's view (``build``/``startService`` raise
:class:`haha.errors.StartupError`). Cases that need root are marked ``netns`` (root tier).
"""

import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from haha.config import home_agent_from_text, mobile_node_from_text
from haha.errors import StartupError
from haha.lab.cluster import twistd_command
from haha.security.keys import generate_key_file
from haha.service import HomeAgentService, MobileNodeService
from haha.startup import (
    check_socket_path,
    effective_capabilities,
    endpoint_arguments,
    explain,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SETPRIV = shutil.which("setpriv")
NOBODY = [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups"] if SETPRIV else None

HA = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
configuration = {configuration}
boot-wait = 0
backend = {backend}
{extra}
[security]
{security}
[transport]
{transport}
[control]
{control}
"""

LAB = "mode = none\nlab = yes"


def udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ha_text(configuration="separate-links", backend="null", extra="", security=LAB,
            transport=None, control=""):
    transport = transport or f"kind = udp\nudp-listen = 127.0.0.1:{udp_port()}"
    return HA.format(configuration=configuration, backend=backend, extra=extra,
                     security=security, transport=transport, control=control)


def mn_text(transport=None, control="", security=LAB, extra=""):
    transport = transport or f"kind = udp\nudp-listen = 127.0.0.1:{udp_port()}"
    return (f"[mobile-node]\nhome-address = 2001:db8:1::100\nhome-prefix = 2001:db8:1::/64\n"
            f"home-agent = 2001:db8:1::1\ncare-of-address = 2001:db8:20::1\n{extra}\n"
            f"[security]\n{security}\n[transport]\n{transport}\n[control]\n{control}\n")


@pytest.fixture
def workdir():
    """A directory ``nobody`` can read (pytest's tmp_path is private to root)."""
    d = tempfile.mkdtemp(prefix="haha-startup-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def twistd(directory, text, kind="haha", prefix=(), env=None, options=("-n",), timeout=90):
    """Write ``text`` as the configuration and run twistd on it in ``directory``."""
    conf = os.path.join(directory, f"{kind}.conf")
    with open(conf, "w") as f:
        f.write(text)
    os.chmod(conf, 0o644)
    environment = dict(os.environ)
    environment.update(env or {})
    return subprocess.run([*prefix, *twistd_command(), *options, kind, "--config", conf],
                          cwd=directory, env=environment, capture_output=True, text=True,
                          timeout=timeout)


def one_line(result, name="haha"):
    """The process failed with status 2 and exactly one line on standard error, no
    traceback; return that line."""
    assert result.returncode == 2, (result.returncode, result.stderr, result.stdout[-2000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{name}: "), lines
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def nobody(require_root):
    if NOBODY is None:
        pytest.fail("setpriv (util-linux) is needed to run a daemon as nobody")
    return NOBODY


# -- twistd, one case each ------------------------------------------------------------------------


@pytest.mark.netns
def test_missing_interface_is_named(workdir, require_root):
    """A raw transport on an interface that does not exist names the interface, the key and
    the fix (was: OSError [Errno 19] No such device)."""
    r = twistd(workdir, ha_text(configuration="no-home-link",
                                transport="kind = raw\ninterfaces = nosuch7"))
    line = one_line(r)
    assert "[transport] interfaces: interface nosuch7 does not exist" in line
    assert "ip link" in line
    assert not os.path.exists(os.path.join(workdir, "twistd.pid"))


@pytest.mark.netns
def test_missing_home_interface_of_a_mobile_node_is_named(workdir, require_root):
    """``twistd haha-mn`` names a missing [mobile-node] interface the same way."""
    r = twistd(workdir, mn_text(transport="kind = raw", extra="interface = nosuch8"),
               kind="haha-mn")
    line = one_line(r, "haha-mn")
    assert "[mobile-node] interface: interface nosuch8 does not exist" in line


@pytest.mark.netns
def test_no_nft_on_path(workdir, require_root):
    """Without ``nft`` on PATH the raw transport says to install nftables (was: NftError
    cannot run nft -f -)."""
    empty = os.path.join(workdir, "bin")
    os.mkdir(empty)
    r = twistd(workdir, ha_text(configuration="no-home-link",
                                transport="kind = raw\ninterfaces = lo"), env={"PATH": empty})
    line = one_line(r)
    assert "nft is not on PATH" in line and "nftables" in line


@pytest.mark.netns
def test_raw_transport_without_root_says_root_or_cap_net_admin(workdir, nobody):
    """As nobody, a raw-transport home agent says it needs root or CAP_NET_RAW and
    CAP_NET_ADMIN, and how to run unprivileged (was: nft failed ... Operation not permitted)."""
    r = twistd(workdir, ha_text(configuration="no-home-link",
                                transport="kind = raw\ninterfaces = lo"), prefix=nobody)
    line = one_line(r)
    assert "needs root or CAP_NET_RAW and CAP_NET_ADMIN" in line and "uid 65534" in line
    assert "kind = udp" in line


@pytest.mark.netns
def test_tun_backend_without_cap_net_admin(workdir, nobody):
    """As nobody, the tun backend (a TUN device) says CAP_NET_ADMIN is needed."""
    r = twistd(workdir, ha_text(backend="tun"), prefix=nobody)
    line = one_line(r)
    assert "backend tun needs root or CAP_NET_ADMIN" in line


def test_metrics_port_in_use(workdir):
    """A metrics port another process listens on is named with the key and the fix (was: two
    chained tracebacks); ``twistd haha-mn``."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = twistd(workdir, mn_text(control=f"metrics = tcp:{port}:interface=127.0.0.1"),
                   kind="haha-mn")
    line = one_line(r, "haha-mn")
    assert f"[control] metrics: TCP port {port} on 127.0.0.1 is in use" in line
    assert "choose another port" in line


def test_control_socket_directory_missing(workdir):
    """A control socket in a directory whose parent does not exist either: one line with the
    directory and the mkdir to run (was: FileNotFoundError on the .lock symlink)."""
    missing = os.path.join(workdir, "run", "haha")
    r = twistd(workdir, ha_text(control=f"socket = unix:{missing}/ha1.sock"))
    line = one_line(r)
    assert f"[control] socket: the directory {missing} of the control socket does not exist" \
        in line
    assert f"mkdir -m 0750 {missing}" in line
    assert not os.path.exists(missing)


def test_control_socket_directory_is_created_0750(tmp_path):
    """When its parent exists and is ours, the runtime directory is created with mode 0750
    whatever the umask, and the service builds."""
    run = tmp_path / "run"
    old = os.umask(0)
    try:
        config = home_agent_from_text(ha_text(control=f"socket = unix:{run}/ha1.sock"),
                                      str(tmp_path / "ha.conf"))
        HomeAgentService.build(config)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o750


@pytest.mark.netns
def test_control_socket_directory_not_writable(workdir, nobody):
    """As nobody, a control socket in root's directory: not writable by uid 65534."""
    run = os.path.join(workdir, "run")
    os.mkdir(run, 0o755)
    r = twistd(workdir, ha_text(control=f"socket = unix:{run}/ha1.sock"), prefix=nobody)
    line = one_line(r)
    assert f"the directory {run} of the control socket is not writable by uid 65534" in line


def test_same_configuration_twice(workdir):
    """The second start of a running configuration says it runs already: the UDP port is
    taken (null backend), or the control socket is held by the first process."""
    sock = os.path.join(workdir, "ha1.sock")
    text = ha_text(control=f"socket = unix:{sock}")
    conf = os.path.join(workdir, "first.conf")
    with open(conf, "w") as f:
        f.write(text)
    first = subprocess.Popen([*twistd_command(), "-n", "--pidfile=", "haha", "--config", conf],
                             cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _serving(sock), first)
        line = one_line(twistd(workdir, text, options=("-n", "--pidfile=")))
        assert "[transport] udp-listen: UDP port" in line and "running already" in line
        other_port = ha_text(control=f"socket = unix:{sock}")  # a new UDP port
        line = one_line(twistd(workdir, other_port, options=("-n", "--pidfile=")))
        assert f"the control socket {sock} is in use by a running process (pid {first.pid})" \
            in line and "runs already" in line
    finally:
        first.terminate()
        first.wait(60)


@pytest.mark.netns
def test_same_configuration_twice_with_a_kernel_backend(workdir, require_root):
    """With the tun backend the locked kernel state file says it (the StateBusy message, as
    one line, before any port or socket is tried)."""
    sock = os.path.join(workdir, "ha1.sock")
    text = ha_text(backend="tun", extra="[backend:tun]\ndevice = hahast%d",
                   control=f"socket = unix:{sock}")
    conf = os.path.join(workdir, "haha.conf")
    with open(conf, "w") as f:
        f.write(text)
    first = subprocess.Popen([*twistd_command(), "-n", "--pidfile=", "haha", "--config", conf],
                             cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _serving(sock), first)
        line = one_line(twistd(workdir, text, options=("-n", "--pidfile=")))
        state = os.path.join(workdir, "haha.state")
        assert f"{state} is held by a running process (pid {first.pid})" in line
        assert "runs already" in line
    finally:
        first.terminate()
        first.wait(60)


def _serving(sock):
    """The daemon behind ``sock`` answers (it has started everything)."""
    from haha.control.cli import request

    try:
        return request(sock, "status", timeout=5)["result"]["state"] == "serving"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _wait_for(predicate, process, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, "the first daemon exited"
        assert time.monotonic() < deadline, "the first daemon did not start"
        time.sleep(0.1)


PLUGIN = """\
from haha.plugins import BackendPlugin
missing = BackendPlugin("missing", "its module is not installed", "acme_missing:build")
failing = BackendPlugin("failing", "its module raises on import", "acme_failing:build")
refusing = BackendPlugin("refusing", "its start is refused", "acme_refusing:build")
"""

REFUSING = """\
import errno, os
from haha.backends.null import build as null_build

def build(context):
    backend = null_build(context)
    def start():
        if os.environ.get("ACME") == "bug":
            raise RuntimeError("acme exploded")
        raise PermissionError(errno.EPERM, "Operation not permitted")
    backend.start = start
    return backend
"""


@pytest.fixture
def plugins(workdir):
    """A third-party plugin directory on PYTHONPATH."""
    base = os.path.join(workdir, "site")
    os.makedirs(os.path.join(base, "twisted", "plugins"))
    with open(os.path.join(base, "twisted", "plugins", "acme.py"), "w") as f:
        f.write(PLUGIN)
    with open(os.path.join(base, "acme_failing.py"), "w") as f:
        f.write("import acme_dependency_that_is_not_there\n")
    with open(os.path.join(base, "acme_refusing.py"), "w") as f:
        f.write(REFUSING)
    path = os.pathsep.join([base] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p])
    return {"PYTHONPATH": path}


def test_backend_plugin_module_missing(workdir, plugins):
    """A backend plugin whose module is not installed names the plugin, the module and the
    fix."""
    line = one_line(twistd(workdir, ha_text(backend="missing"), env=plugins))
    assert "backend plugin 'missing' (acme_missing:build) cannot be loaded: module " \
        "acme_missing is not installed" in line
    assert "install the package that provides it, or choose another backend" in line


def test_backend_plugin_module_fails_to_import(workdir, plugins):
    """A plugin module whose own import fails names the module that is missing."""
    line = one_line(twistd(workdir, ha_text(backend="failing"), env=plugins))
    assert "backend plugin 'failing'" in line
    assert "module acme_dependency_that_is_not_there is not installed" in line


def test_discovery_plugin_module_missing(tmp_path):
    """The same for a discovery plugin, as an embedder sees it."""
    from haha.plugins import DiscoveryPlugin

    config = home_agent_from_text(ha_text(), str(tmp_path / "ha.conf"))
    plugin = DiscoveryPlugin("acme", "x", "acme_discovery_missing:build")
    with pytest.raises(StartupError) as e:
        plugin.build(config.discovery.options, None, config)
    assert "discovery plugin 'acme'" in str(e.value)
    assert "module acme_discovery_missing is not installed" in e.value.cause
    assert "choose another discovery" in e.value.fix


def test_failure_in_start_service_is_one_line(workdir, plugins):
    """A failure raised while twistd starts the service (after makeService, inside
    startService) is one line too: a refused operation names root/CAP_NET_ADMIN, and twistd
    has removed its pid file."""
    r = twistd(workdir, ha_text(backend="refusing"), env=plugins)
    line = one_line(r)
    assert "Operation not permitted" in line and "root" in line and "CAP_NET_ADMIN" in line
    assert "cannot start: haha: Operation not permitted" in r.stdout  # logged too
    assert not os.path.exists(os.path.join(workdir, "twistd.pid"))


def test_unknown_failure_in_start_service_keeps_its_traceback_in_the_log(workdir, plugins):
    """An exception with no known cause (a bug) is still one line and status 2 on standard
    error; the traceback goes to the log."""
    r = twistd(workdir, ha_text(backend="refusing"), env=dict(plugins, ACME="bug"))
    line = one_line(r)
    assert "start-up failed: RuntimeError: acme exploded" in line and "the log" in line
    assert "Traceback" in r.stdout and "acme exploded" in r.stdout


def test_key_file_missing(workdir):
    """A missing key file names the file, its line, and how to make one."""
    text = ha_text(security="", extra="[peers]\nstatic = 2001:db8:1::2\n[peer-keys]\n"
                   "2001:db8:1::2 = keys/ha1-ha2.key")
    line = one_line(twistd(workdir, text))
    key = os.path.join(workdir, "keys", "ha1-ha2.key")
    assert f"[peer-keys] 2001:db8:1::2: cannot read key file {key}: No such file" in line
    assert f"python -m haha.security.keys generate {key}" in line


def test_key_file_too_open(workdir):
    """A key file readable by others names the mode and the chmod."""
    key = os.path.join(workdir, "mn.key")
    generate_key_file(key)
    os.chmod(key, 0o644)
    line = one_line(twistd(workdir, mn_text(security="key = mn.key"), kind="haha-mn"),
                    "haha-mn")
    assert f"key file {key} has mode 0644" in line and f"chmod 600 {key}" in line


@pytest.mark.netns
def test_key_file_unreadable(workdir, nobody):
    """As nobody, root's 0600 key file: permission denied, with both uids."""
    key = os.path.join(workdir, "mn.key")
    generate_key_file(key)
    r = twistd(workdir, mn_text(security="key = mn.key"), kind="haha-mn", prefix=nobody)
    line = one_line(r, "haha-mn")
    assert f"cannot read key file {key}: permission denied (this process runs as uid 65534; " \
        "the file belongs to uid 0)" in line


def test_sequence_file_directory_that_cannot_be_created(workdir):
    """A sequence file in a directory that does not exist and cannot be made (its parent is a
    file; a missing directory that can be made is made, statedir): the directory, why, and the
    mkdir."""
    key = os.path.join(workdir, "mn.key")
    generate_key_file(key)
    open(os.path.join(workdir, "plain"), "w").close()
    state = os.path.join(workdir, "plain", "state")
    r = twistd(workdir, mn_text(security=f"key = mn.key\nsequence-file = {state}/mn.seq"),
               kind="haha-mn")
    line = one_line(r, "haha-mn")
    assert f"[security] sequence-file: the directory {state} of {state}/mn.seq does not " \
        "exist and cannot be created (Not a directory)" in line \
        and f"mkdir -m 0750 {state}" in line


@pytest.mark.netns
def test_sequence_file_directory_not_writable(workdir, nobody):
    """As nobody, a sequence file in root's directory: not writable by uid 65534."""
    key = os.path.join(workdir, "mn.key")
    generate_key_file(key)
    os.chown(key, 65534, 65534)
    state = os.path.join(workdir, "state")
    os.mkdir(state, 0o755)
    r = twistd(workdir, mn_text(security=f"key = mn.key\nsequence-file = {state}/mn.seq"),
               kind="haha-mn", prefix=nobody)
    line = one_line(r, "haha-mn")
    assert f"the directory {state} of {state}/mn.seq is not writable by uid 65534" in line


def test_configuration_mistake_is_still_located(workdir):
    """A configuration mistake keeps its located one-line message and status 2."""
    line = one_line(twistd(workdir, "[home-agent]\naddress = nowhere\n"))
    assert "haha.conf:2: [home-agent] address: expected an IPv6 address" in line


def test_daemonised_twistd_fails_before_forking(workdir):
    """``twistd haha`` (daemonising) runs the checks before it forks: the same one line and
    status 2 on the terminal, and no pid file left."""
    missing = os.path.join(workdir, "run", "haha")
    r = twistd(workdir, ha_text(control=f"socket = unix:{missing}/ha1.sock"),
               options=("--pidfile", os.path.join(workdir, "d.pid"),
                        "--logfile", os.path.join(workdir, "d.log")))
    assert "does not exist" in one_line(r)
    assert not os.path.exists(os.path.join(workdir, "d.pid"))


# -- embedders ------------------------------------------------------------------------------------


def test_build_raises_startup_error(tmp_path):
    """An embedder calling build gets StartupError with cause and fix apart."""
    config = mobile_node_from_text(
        mn_text(control=f"socket = unix:{tmp_path}/a/b/mn.sock"), str(tmp_path / "mn.conf"))
    with pytest.raises(StartupError) as e:
        MobileNodeService.build(config)
    assert e.value.cause.endswith(f"the directory {tmp_path}/a/b of the control socket "
                                  "does not exist")
    assert e.value.fix.startswith(f"create it (mkdir -m 0750 {tmp_path}/a/b")
    assert str(e.value) == f"{e.value.cause}; {e.value.fix}"


def test_start_service_raises_startup_error_from_nft(tmp_path):
    """startService turns the raw transport's refused nft into a StartupError naming
    CAP_NET_ADMIN, with the original as its cause."""
    from twisted.internet.testing import MemoryReactorClock

    from haha.io.raw import RawTransport
    from haha.io.system import FakeSystem, NftError

    config = home_agent_from_text(
        ha_text(configuration="no-home-link", transport="kind = raw\ninterfaces = lo"),
        str(tmp_path / "ha.conf"))
    reactor = MemoryReactorClock()
    system = FakeSystem()
    system.nft_fail = "Error: Could not process rule: Operation not permitted"
    transport = RawTransport(reactor, interfaces=["lo"], system=system)
    service = HomeAgentService.build(config, reactor, transport=transport)
    with pytest.raises(StartupError) as e:
        service.startService()
    assert "needs root or CAP_NET_ADMIN" in str(e.value)
    assert isinstance(e.value.__cause__, NftError)
    assert not service.running


def test_state_busy_is_a_startup_error():
    """StateBusy (raised by a backend's start) is caught with StartupError."""
    from haha.backends.common import StateBusy

    assert issubclass(StateBusy, StartupError)


def test_explain_known_and_unknown_causes():
    """explain turns the system's refusals into sentences and leaves a bug alone."""
    from twisted.internet.error import CannotListenError

    from haha.io.system import NftError

    assert "interface does not exist" in str(explain(OSError(errno.ENODEV, "No such device")))
    assert "CAP_NET_RAW" in str(explain(PermissionError(errno.EPERM, "Operation not permitted")))
    assert "apt install nftables" in str(explain(NftError("cannot run nft -f -: [Errno 2]")))
    e = explain(CannotListenError("127.0.0.1", 9101, OSError(errno.EADDRINUSE,
                                                             "Address already in use")))
    assert "cannot listen on 127.0.0.1:9101: Address already in use" in str(e)
    tun = explain(FileNotFoundError(errno.ENOENT, "No such file or directory", "/dev/net/tun"))
    assert "needs the kernel's TUN device" in tun.cause and "modprobe tun" in tun.fix
    assert explain(RuntimeError("bug")) is None
    assert explain(OSError(errno.EADDRNOTAVAIL, "cannot join")) is None


def test_endpoint_arguments():
    """Twisted endpoint strings are split like Twisted does (escaped colons kept)."""
    assert endpoint_arguments("unix:/run/haha/ha1.sock") == ("unix", ["/run/haha/ha1.sock"], {})
    assert endpoint_arguments("unix:address=/a\\:b:mode=660") == \
        ("unix", [], {"address": "/a:b", "mode": "660"})
    assert endpoint_arguments("tcp:9101:interface=127.0.0.1") == \
        ("tcp", ["9101"], {"interface": "127.0.0.1"})


def test_socket_path_existing_directory_is_left_alone(tmp_path):
    """An existing directory is used as it is (its mode is the operator's)."""
    os.chmod(tmp_path, 0o755)
    check_socket_path(str(tmp_path / "x.sock"), "here")
    assert stat.S_IMODE(os.stat(tmp_path).st_mode) == 0o755


def test_effective_capabilities_reads_the_mask(tmp_path):
    """CapEff is read from /proc (None when unreadable)."""
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t0000000000003000\n")
    assert effective_capabilities(str(status)) == 0x3000
    assert effective_capabilities(str(tmp_path / "none")) is None
    assert sys.platform != "linux" or effective_capabilities() is not None


def test_control_socket_path_taken_by_a_file(workdir):
    """A regular file where the control socket goes is named (was: "cannot listen on
    *:b'...': Address already in use")."""
    path = os.path.join(workdir, "ha1.sock")
    open(path, "w").close()
    line = one_line(twistd(workdir, ha_text(control=f"socket = unix:{path}")))
    assert f"[control] socket: {path} exists and is not a socket" in line


@pytest.mark.netns
def test_tun_device_held_by_another_daemon(workdir, require_root):
    """A fixed TUN device name another running daemon holds: the device and the fix, from
    inside startService (after twistd has begun)."""
    name = f"hahast{os.getpid() % 100000}"
    first = os.path.join(workdir, "first.conf")
    with open(first, "w") as f:
        f.write(ha_text(backend="tun", extra=f"[backend:tun]\ndevice = {name}",
                        control=f"socket = unix:{workdir}/first.sock"))
    held = subprocess.Popen([*twistd_command(), "-n", "--pidfile=", "haha", "--config", first],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _serving(f"{workdir}/first.sock"), held)
        second = os.path.join(workdir, "second")
        os.mkdir(second)
        r = twistd(second, ha_text(backend="tun", extra=f"[backend:tun]\ndevice = {name}"))
        line = one_line(r)
        assert f"TUN device {name}: Device or resource busy (another process holds it" in line
        assert "cannot start: haha: TUN device" in r.stdout
    finally:
        held.terminate()
        held.wait(60)


@pytest.mark.netns
def test_anycast_refused_in_a_fresh_namespace(workdir, require_root):
    """In a namespace without IPv6 forwarding the Home-Agents anycast join is refused while
    the service starts: one line with the address, the interface and the fix, status 2."""
    ns = f"hahast{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        r = twistd(workdir, ha_text(configuration="no-home-link",
                                    transport="kind = raw\ninterfaces = lo"),
                   prefix=["ip", "netns", "exec", ns], options=("-n", "--pidfile="))
        line = one_line(r)
        assert "cannot join the Home-Agents anycast address" in line and "on lo" in line
        assert "forwarding" in line
        tables = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"],
                                capture_output=True, text=True, check=True).stdout
        assert "haha" not in tables  # the transport removed its table on the way out
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_kernel_without_ip6_tunnel_is_a_startup_error():
    """The netlink backend's KernelUnsupported (a kernel without ip6_tunnel) is a
    StartupError, so twistd prints its sentence as the one line."""
    from haha.backends.netlink import NO_TUNNEL_MESSAGE, KernelUnsupported

    e = KernelUnsupported(NO_TUNNEL_MESSAGE.format(why="CONFIG_IPV6_TUNNEL is not set"))
    assert explain(e) is e and "use backend = tun" in str(e)


@pytest.mark.netns
def test_pid_file_not_writable_as_nobody(workdir, nobody):
    """As nobody in root's directory, twistd's own pid file cannot be written: one line that
    says so and names --pidfile."""
    sock = f"/tmp/haha-startup-{os.getpid()}.sock"
    try:
        r = twistd(workdir, ha_text(control=f"socket = unix:{sock}"), prefix=nobody)
        line = one_line(r)
        assert f"{workdir}/twistd.pid: Permission denied" in line and "--pidfile" in line
    finally:
        for leftover in (sock, sock + ".lock"):
            if os.path.lexists(leftover):
                os.unlink(leftover)


def test_exit_hook_is_removed_once_the_reactor_runs():
    """The start-up excepthook lives only until the reactor runs (an embedding process keeps
    its own hook afterwards)."""
    from twisted.internet.task import Clock

    from haha.startup import exit_on_failure

    class Reactor(Clock):
        def callWhenRunning(self, f):  # noqa: N802 - Twisted API
            self.when_running = f

    before = sys.excepthook
    reactor = Reactor()
    try:
        hook = exit_on_failure("haha", reactor)
        assert sys.excepthook is hook
        reactor.when_running()
        assert sys.excepthook is before
    finally:
        sys.excepthook = before


@pytest.mark.netns
def test_root_without_cap_net_admin(workdir, require_root):
    """Root whose capability bounding set drops CAP_NET_ADMIN (a restricted unit) is told
    which capability is missing and where to allow it."""
    r = twistd(workdir, ha_text(configuration="no-home-link",
                                transport="kind = raw\ninterfaces = lo"),
               prefix=[SETPRIV, "--bounding-set", "-net_admin"])
    line = one_line(r)
    assert "needs CAP_NET_ADMIN, which this process has not got although it runs as root" \
        in line and "CapabilityBoundingSet=" in line


def test_missing_home_interface_of_a_home_agent(tmp_path):
    """A kernel backend on a home interface that does not exist names [home-agent]
    home-interface (checked before any capability, so also as a non-root user)."""
    from haha.startup import check_home_agent

    config = home_agent_from_text(
        ha_text(configuration="home-link", backend="tun",
                extra="home-interface = nosuch9\n[backend:tun]\ndevice = hahast%d"),
        str(tmp_path / "ha.conf"))
    with pytest.raises(StartupError, match=r"\[home-agent\] home-interface: interface nosuch9 "
                       "does not exist"):
        check_home_agent(config)


def test_what_an_embedder_passes_in_is_not_checked(tmp_path):
    """A transport or backend passed to build is the embedder's: the raw transport's
    interfaces, privileges and nft, and the kernel state lock, are not checked for it."""
    from twisted.internet.testing import MemoryReactorClock

    from haha.backends.null import NullBackend
    from haha.io.memory import MemoryHub

    config = home_agent_from_text(
        ha_text(configuration="no-home-link", backend="tun",
                extra="[backend:tun]\ndevice = hahast%d",
                transport="kind = raw\ninterfaces = nosuch6"), str(tmp_path / "ha.conf"))
    reactor = MemoryReactorClock()
    with pytest.raises(StartupError, match="nosuch6"):
        HomeAgentService.build(config, reactor)
    end = MemoryHub(reactor).endpoint(config.address, name="ha1")
    service = HomeAgentService.build(config, reactor, transport=end, backend=NullBackend())
    assert service.transport is end


def test_daemonised_failure_after_the_fork_is_in_the_log(workdir, plugins):
    """Daemonised, a failure inside startService happens after the fork: twistd's parent
    reports it (its own protocol, status 1) and the log file has our one line; no pid file is
    left behind."""
    logfile = os.path.join(workdir, "d.log")
    r = twistd(workdir, ha_text(backend="refusing"), env=plugins,
               options=("--pidfile", os.path.join(workdir, "d.pid"), "--logfile", logfile))
    assert r.returncode == 1 and "An error has occurred" in r.stderr
    import time

    deadline = time.monotonic() + 30
    while "cannot start: haha: Operation not permitted" not in _read(logfile):
        assert time.monotonic() < deadline, _read(logfile)
        time.sleep(0.1)
    assert "CAP_NET_ADMIN" in _read(logfile)
    assert not os.path.exists(os.path.join(workdir, "d.pid"))


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
