"""The daemon makes its state directory (where the sequence file lives) when nothing else did:
mode 0750 whatever the umask, parents included; an existing directory keeps its mode; a
directory that cannot be made stops start-up with the file, section and key."""

import os

import pytest
from twisted.internet.task import Clock

from haha.backends.null import NullBackend
from haha.config import home_agent_from_text
from haha.discovery.static import StaticDiscovery
from haha.errors import StartupError
from haha.inifile import ConfigError
from haha.io.memory import MemoryHub
from haha.security.keys import generate_key_file
from haha.service import HomeAgentService
from haha.statedir import ensure_directory
from test_service import HA_TEXT, HAS


def build(tmp_path, sequence_file):
    for name in ("ha12.key", "ha13.key", "mn.key"):
        if not (tmp_path / name).exists():
            generate_key_file(str(tmp_path / name))
    text = HA_TEXT.format(address=HAS[0], preference=9, keys=tmp_path,
                          peers=f"{HAS[1]} {HAS[2]}",
                          peer_keys=f"{HAS[1]} = {tmp_path}/ha12.key\n"
                                    f"{HAS[2]} = {tmp_path}/ha13.key")
    text += f"[security]\nsequence-file = {sequence_file}\n"
    config = home_agent_from_text(text, str(tmp_path / "ha1.conf"))
    clock = Clock()
    return HomeAgentService.build(config, clock, backend=NullBackend(),
                                  transport=MemoryHub(clock).endpoint(HAS[0]),
                                  discovery=StaticDiscovery(config.peers))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_missing_state_directory_is_made_0750(tmp_path, umask):
    """/var/lib/haha-like nested directories that do not exist are made, the last one 0750."""
    state = tmp_path / "var" / "lib" / "haha"
    old = os.umask(umask)
    try:
        service = build(tmp_path, state / "ha1.seq")
    finally:
        os.umask(old)
    assert state.is_dir() and os.stat(state).st_mode & 0o777 == 0o750
    service.startService()
    service.stopService()
    assert (state / "ha1.seq").exists()


def test_existing_state_directory_keeps_its_mode(tmp_path):
    """A directory the operator (or systemd's StateDirectory=) made is not re-moded."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chmod(state, 0o700)
    build(tmp_path, state / "ha1.seq")
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert ensure_directory(str(state)) is False


def test_state_directory_that_cannot_be_made_is_a_located_error(tmp_path):
    """A path under a regular file cannot become a directory: start-up stops with file,
    section, key and the reason, and nothing is made."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StartupError) as e:  # the start-up checks (haha.startup) run first
        build(tmp_path, tmp_path / "file" / "haha" / "ha1.seq")
    text = str(e.value)
    assert "ha1.conf" in text and "[security] sequence-file" in text
    assert "cannot be created" in text and "Not a directory" in text
    assert not (tmp_path / "file").is_dir()


def with_control(tmp_path, socket):
    """A home agent configuration whose [control] socket is ``socket``."""
    for name in ("ha12.key", "mn.key"):
        if not (tmp_path / name).exists():
            generate_key_file(str(tmp_path / name))
    text = HA_TEXT.format(address=HAS[0], preference=9, keys=tmp_path, peers=HAS[1],
                          peer_keys=f"{HAS[1]} = {tmp_path}/ha12.key")
    return home_agent_from_text(text + f"[control]\nsocket = {socket}\n",
                                str(tmp_path / "ha1.conf"))


def test_control_socket_directory_is_made_0750(tmp_path):
    """`socket = unix:DIR/ha1.sock` with DIR missing (the /run/haha of the examples, run
    without systemd): the daemon makes DIR with mode 0750 and listens there."""
    from haha.service import _runtime_directory

    run = tmp_path / "run" / "haha"
    for spec in (f"unix:{run}/ha1.sock", f"unix:address={run}/ha1.sock:mode=660"):
        config = with_control(tmp_path, spec)
        _runtime_directory(config)
        assert run.is_dir() and os.stat(run).st_mode & 0o777 == 0o750
        run.rmdir()


def test_unix_socket_path_reads_the_endpoint_forms():
    """Only unix: endpoints name a file; both the short and the address= form are read."""
    from haha.statedir import unix_socket_path

    assert unix_socket_path("unix:/run/haha/ha1.sock") == "/run/haha/ha1.sock"
    assert unix_socket_path("unix:address=/run/x.sock:mode=660:lockfile=1") == "/run/x.sock"
    assert unix_socket_path("unix:/run/a\\:b.sock:mode=600") == "/run/a:b.sock"
    assert unix_socket_path("tcp:9101:interface=127.0.0.1") is None


def test_control_socket_directory_that_cannot_be_made_is_a_located_error(tmp_path):
    """A socket under a regular file: start-up stops naming [control] socket."""
    from haha.service import _runtime_directory

    (tmp_path / "file").write_text("x")
    config = with_control(tmp_path, f"unix:{tmp_path}/file/haha/ha1.sock")
    with pytest.raises(ConfigError, match=r"\[control\] socket.*cannot create the directory"):
        _runtime_directory(config)
