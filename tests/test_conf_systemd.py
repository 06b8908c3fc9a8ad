"""The systemd unit shipped in conf/systemd restarts a crashed daemon at once (issue 10: a
crashed home agent's kernel keeps answering for what it held until the next start reclaims
it, so the next start must come at once)."""

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "conf" / "systemd" / "haha@.service"


def test_unit_restarts_always_and_at_once():
    """Restart=always (kill -9 included) with no delay; ExecStart runs the home agent."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["RestartSec"] in ("0", "0s")
    assert " haha --config " in service["ExecStart"]
