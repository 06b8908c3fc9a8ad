"""The daemon's directories, created when missing: state (ESP sequence numbers, kernel state)
and runtime (the control socket).

Under systemd, ``StateDirectory=haha`` and ``RuntimeDirectory=haha`` make ``/var/lib/haha`` and
``/run/haha`` before the daemon starts; run any other way, the daemon makes the directory of its
``sequence-file`` and of its ``[control] socket`` itself, mode 0750 (owner all, group read,
others nothing), with the parents it lacks. A directory that exists is left as it is: its mode
is the operator's (or systemd's) choice.
"""

import os
import re

STATE_MODE = 0o750


def ensure_directory(path: str, mode: int = STATE_MODE) -> bool:
    """Make ``path`` (and missing parents) with ``mode`` unless it exists; True if it made it.
    Raises OSError when it cannot (the caller names the configuration key)."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=mode)
    os.chmod(path, mode)  # the umask narrowed what makedirs gave; say exactly what we mean
    return True


def unix_socket_path(endpoint: str) -> str | None:
    """The file of a ``unix:`` server endpoint description (``unix:/run/haha/ha1.sock`` or
    ``unix:address=/run/haha/ha1.sock:mode=660``), or None for another kind of endpoint."""
    if not endpoint.startswith("unix:"):
        return None
    parts = re.split(r"(?<!\\):", endpoint[len("unix:"):])
    for part in parts:
        if part.startswith("address="):
            return part[len("address="):].replace("\\:", ":")
    first = parts[0]
    return None if "=" in first else first.replace("\\:", ":")
