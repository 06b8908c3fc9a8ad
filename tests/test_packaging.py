"""Packaging: the wheel, `pip install .` and plain `pip install -e .` each give a working
`twistd haha`, `twistd haha-mn`, `haha-ctl` and `haha-keys` in a fresh virtual environment.

Each fresh environment gets haha alone (``--no-deps``); its dependencies come from the test's own
environment through a path line in a ``.pth`` file (a path line adds a directory, it does not
install anything there), so the tests need no download beyond the build backend, which pip
caches. Commands run from a scratch directory, never the checkout, so the current directory
cannot stand in for an installed file.
"""

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow


def pip(*args, cwd=None):
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                       capture_output=True, text=True, timeout=600, cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def fresh_venv(path):
    """A virtual environment without haha whose interpreter imports this one's dependencies."""
    venv.create(path, with_pip=False)
    python = os.path.join(path, "bin", "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], capture_output=True, text=True,
                             check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    with open(os.path.join(purelib, "_test_deps.pth"), "w") as f:
        f.write("\n".join(sorted(deps)) + "\n")
    return python


def install(path, *what):
    python = fresh_venv(path)
    pip("--python", python, "install", "--no-deps", *what)
    return python


def twistd(python, *args, cwd):
    return subprocess.run([python, "-c", "import sys; from twisted.scripts.twistd import run; "
                           "sys.argv[0] = 'twistd'; run()", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def source_copy(tmp_path_factory):
    """The checkout's files (tracked or new, not ignored) copied, so that builds (which write
    build/ and *.egg-info/ into the source tree) leave the checkout alone."""
    dest = str(tmp_path_factory.mktemp("source"))
    listed = subprocess.run(["git", "-C", ROOT, "ls-files", "-co", "--exclude-standard", "-z"],
                            capture_output=True)
    if listed.returncode != 0:  # not a git checkout (an unpacked sdist): copy it all
        shutil.copytree(ROOT, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            ".venv", "build", "dist", "*.egg-info", "__pycache__", ".git"))
        return dest
    for rel in listed.stdout.decode().split("\0"):
        if rel and os.path.isfile(os.path.join(ROOT, rel)):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, rel), os.path.join(dest, rel), follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return source_copy(tmp_path_factory)


def build_wheel(tmp_path_factory):
    """The wheel of the checkout, built as `pip wheel .` builds it; its path."""
    out = tmp_path_factory.mktemp("wheel")
    pip("wheel", "--no-deps", "-w", str(out), source_copy(tmp_path_factory))
    (name,) = [n for n in os.listdir(out) if n.endswith(".whl")]
    return os.path.join(out, name)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory)


def assert_daemons_and_scripts_work(env, cwd):
    python = os.path.join(env, "bin", "python")
    for plugin, option in (("haha", "--config"), ("haha-mn", "--config")):
        r = twistd(python, plugin, "--help", cwd=cwd)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"twistd [options] {plugin} {option} FILE" in r.stdout
    r = subprocess.run([os.path.join(env, "bin", "haha-ctl"), "--help"], capture_output=True,
                       text=True, timeout=60, cwd=cwd)
    assert r.returncode == 0 and "drain" in r.stdout, r.stdout + r.stderr
    key = os.path.join(cwd, "k.key")
    r = subprocess.run([os.path.join(env, "bin", "haha-keys"), "generate", key],
                       capture_output=True, text=True, timeout=60, cwd=cwd,
                       env={"PATH": "/usr/bin:/bin"})  # no venv activated
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.stat(key).st_mode & 0o777 == 0o600


def test_wheel_installs_twistd_plugins_scripts_examples_and_unit(wheel, tmp_path):
    """The wheel, installed into a fresh venv, makes `twistd haha`/`haha-mn --help`, `haha-ctl`
    and `haha-keys` (without activation) work, and puts the example configurations and the
    systemd unit under share/haha/, identical to the repository's."""
    env = str(tmp_path / "venv")
    install(env, wheel)
    assert_daemons_and_scripts_work(env, str(tmp_path))
    share = os.path.join(env, "share", "haha")
    for rel, src in (("systemd/haha@.service", "conf/systemd/haha@.service"),
                     ("examples/ha1.conf", "conf/ha1.conf"),
                     ("examples/mn1.conf", "conf/mn1.conf"),
                     ("examples/separate-links/ha4.conf", "conf/separate-links/ha4.conf"),
                     ("examples/keys/README.md", "conf/keys/README.md")):
        with open(os.path.join(share, rel)) as a, open(os.path.join(ROOT, src)) as b:
            assert a.read() == b.read(), rel


def test_wheel_carries_no_twisted_plugins_package_init_and_no_tests(wheel):
    """The wheel adds one file to Twisted's plugin directory and never its ``__init__.py``
    (which would shadow Twisted's own plugins); tests, benchmarks and keys stay out."""
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/haha_plugin.py" in names
    assert [n for n in names if n.startswith("twisted/")] == ["twisted/plugins/haha_plugin.py"]
    assert not [n for n in names if n.startswith(("tests/", "bench/", "fuzz/"))]
    assert not [n for n in names if n.endswith(".key")]


def test_plain_pip_install_of_the_source_tree(tmp_path, source):
    """`pip install .` (no wheel built beforehand) gives working plugins and scripts."""
    env = str(tmp_path / "venv")
    install(env, source)
    assert_daemons_and_scripts_work(env, str(tmp_path))


def test_plain_editable_install_finds_the_twistd_plugins(tmp_path, source):
    """Plain `pip install -e .` (no compat mode) makes `twistd haha` and `twistd haha-mn` known:
    the editable install puts the project root on the path, where Twisted finds the plugin."""
    env = str(tmp_path / "venv")
    install(env, "-e", source)
    assert_daemons_and_scripts_work(env, str(tmp_path))
    r = twistd(os.path.join(env, "bin", "python"), "--help", cwd=str(tmp_path))
    assert "Unknown command" not in r.stdout + r.stderr
    assert "haha-mn" in r.stdout and "HAHA home agent" in r.stdout


def test_dev_uses_the_plain_editable_install():
    """`./dev` installs the supported way: plain editable, no deprecated compat mode."""
    text = open(os.path.join(ROOT, "dev")).read()
    assert "-e '.[test]'" in text
    assert "editable_mode" not in text
