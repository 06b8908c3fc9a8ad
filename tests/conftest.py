"""Shared pytest configuration.

Tier-3 tests (``@pytest.mark.netns``) need root and network namespaces. CI runs as root, so they
run there; elsewhere they fail loudly with the reason rather than being skipped silently, unless
HAHA_NO_NETNS=1 says explicitly that this run does not include them.

Tests marked ``ip6_tunnel`` (the ``netlink`` backend end to end) need the kernel's IPv6-in-IPv6
tunnel driver, those marked ``kernel_esp`` its ESP; on a kernel built without them they are
deselected, and the stock-kernel tier
(``./dev stock-kernel``: Debian's kernel in QEMU, ``haha.lab.vm``) runs them with the tests
marked ``stock_kernel``.
"""

import os

import pytest
from hypothesis import settings

# Property tests check behaviour, not speed (speed is measured by bench/): hypothesis's
# per-example wall-clock deadline would only fail them on a busy machine.
settings.register_profile("haha", deadline=None)
settings.load_profile("haha")


#: Markers of tests that need a kernel feature, and the build option that provides it.
KERNEL_FEATURES = {"ip6_tunnel": "CONFIG_IPV6_TUNNEL", "kernel_esp": "CONFIG_INET6_ESP"}


def _missing_kernel_features():
    """The markers of :data:`KERNEL_FEATURES` whose option this kernel is built without."""
    from haha.backends.netlink import read_kernel_config

    config = read_kernel_config()
    if config is None:
        return set()
    return {m for m, option in KERNEL_FEATURES.items() if f"# {option} is not set" in config}


def _deselect(config, items, drop):
    deselected = [i for i in items if drop(i)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if not drop(i)]


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HAHA_NO_NETNS") == "1":
        _deselect(config, items, lambda i: i.get_closest_marker("netns"))
    # The netlink backend's end-to-end runs need the kernel's ip6_tunnel, the xfrm interop
    # tests its ESP: on a kernel built without them (this project's) they are deselected
    # (counted in the summary), and the stock-kernel tier (./dev stock-kernel) runs them.
    if any(i.get_closest_marker(m) for i in items for m in KERNEL_FEATURES):
        missing = _missing_kernel_features()
        _deselect(config, items, lambda i: any(i.get_closest_marker(m) for m in missing))


@pytest.fixture
def require_root():
    """Fail (not skip) when a tier-3 test runs without root: CI always has it."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces); set HAHA_NO_NETNS=1 to deselect")


@pytest.fixture(autouse=True)
def _haha_log_level_kept():
    """Every test finds haha's log level as the one before it left it: a test that runs a
    benchmark in process (bench/nodecost.py sets 'error', as a generator worker does) used to
    leave it so, and later tests that watch warnings saw none, depending on the order."""
    from haha.logging import configure, level_of

    before = level_of()
    yield
    if level_of() != before:
        configure(before)
