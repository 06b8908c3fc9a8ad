"""Shared pytest configuration.

Tier-3 tests (``@pytest.mark.netns``) need root and network namespaces. CI runs as root, so they
run there; elsewhere they fail loudly with the reason rather than being skipped silently, unless
HAHA_NO_NETNS=1 says explicitly that this run does not include them.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HAHA_NO_NETNS") != "1":
        return
    deselected = [i for i in items if i.get_closest_marker("netns")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if not i.get_closest_marker("netns")]


@pytest.fixture
def require_root():
    """Fail (not skip) when a tier-3 test runs without root: CI always has it."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces); set HAHA_NO_NETNS=1 to deselect")
