"""The daemon makes its state directory (where the sequence file lives) when nothing else did:
mode 0750 whatever the umask, parents included; an existing directory keeps its mode; a
directory that cannot be made stops start-up with the file, section and key."""

import os

import pytest
from twisted.internet.task import Clock

from haha.backends.null import NullBackend
from haha.config import home_agent_from_text
from haha.discovery.static import StaticDiscovery
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
    with pytest.raises(ConfigError) as e:
        build(tmp_path, tmp_path / "file" / "haha" / "ha1.seq")
    text = str(e.value)
    assert "ha1.conf" in text and "[security] sequence-file" in text
    assert "cannot create the state directory" in text and "Not a directory" in text
