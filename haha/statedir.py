"""The daemon's state directory (ESP sequence numbers, kernel state), created when missing.

Under systemd, ``StateDirectory=haha`` makes ``/var/lib/haha`` before the daemon starts; run any
other way, the daemon makes the directory of its ``sequence-file`` itself, mode 0750 (owner
all, group read, others nothing), with the parents it lacks. A directory that exists is left
as it is: its mode is the operator's (or systemd's) choice.
"""

import os

STATE_MODE = 0o750


def ensure_directory(path, mode=STATE_MODE):
    """Make ``path`` (and missing parents) with ``mode`` unless it exists; True if it made it.
    Raises OSError when it cannot (the caller names the configuration key)."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=mode)
    os.chmod(path, mode)  # the umask narrowed what makedirs gave; say exactly what we mean
    return True
