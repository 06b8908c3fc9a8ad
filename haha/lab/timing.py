"""One factor for every wait of the lab: ``HAHA_WAIT_SCALE``.

Under emulation (the stock-kernel tier runs in QEMU without KVM) everything is about ten times
slower than on the host: daemons take 15-30 s to start. Every timeout of :mod:`haha.lab` (and of
the tier-3 tests, through :func:`scaled`) is multiplied by this one factor, read from the
environment here and nowhere else; it is 1 unless ``HAHA_WAIT_SCALE`` says otherwise
(``haha.lab.vm`` sets it in the guest). Only upper bounds are scaled: a wait that is met early
returns early, so a large factor costs nothing on a fast machine.
"""

import os

ENVIRONMENT = "HAHA_WAIT_SCALE"


def wait_scale() -> float:
    """The factor from ``HAHA_WAIT_SCALE`` (a positive number; 1 when unset). A value that is not
    a positive number raises ValueError naming the variable."""
    text = os.environ.get(ENVIRONMENT, "").strip()
    if not text:
        return 1.0
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"{ENVIRONMENT}={text!r}: not a positive number")
    return value


def scaled(seconds: float) -> float:
    """``seconds`` multiplied by :func:`wait_scale`."""
    return seconds * wait_scale()
