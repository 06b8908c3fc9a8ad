"""Static checks: no undefined names, unused imports or unused variables anywhere (pyflakes)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pyflakes_is_clean():
    """pyflakes finds nothing in haha/, tests/, bench/, fuzz/ and twisted/plugins/."""
    paths = [os.path.join(ROOT, p) for p in ("haha", "tests", "bench", "fuzz", "twisted")]
    r = subprocess.run([sys.executable, "-m", "pyflakes", *paths], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
