"""The type checker runs with the suite: mypy (with the mypy-zope plugin, so ``@implementer``
classes are checked against their interfaces) finds no error in haha/, and the modules listed
as fully typed in setup.cfg give every function a type."""

import configparser
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "setup.cfg")


def mypy(tmp_path, *args):
    """Run mypy with the project's configuration, its cache under ``tmp_path``."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", CONFIG,
         "--cache-dir", str(tmp_path / "mypy-cache"), "--no-error-summary", *args],
        capture_output=True, text=True, cwd=ROOT)


def strict_modules():
    """The modules setup.cfg declares fully typed (``disallow_untyped_defs = True``)."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return [section[len("mypy-"):] for section in parser.sections()
            if section.startswith("mypy-haha")
            and parser.getboolean(section, "disallow_untyped_defs", fallback=False)]


@pytest.mark.slow
def test_mypy_finds_no_error_in_haha(tmp_path):
    """``mypy haha`` (setup.cfg's [mypy] configuration, mypy-zope plugin) reports nothing."""
    r = mypy(tmp_path, "haha")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == "", r.stdout


def test_the_check_fails_on_a_type_error(tmp_path):
    """The same invocation does report an error: a wrong argument type and an object that does
    not provide the interface it claims (what mypy-zope adds) both fail."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from zope.interface import Interface, implementer\n"
        "class IThing(Interface):\n"
        "    def run(count: int) -> None: ...\n"
        "@implementer(IThing)\n"
        "class Thing:\n"
        "    pass\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n"
        "double('two')\n")
    r = mypy(tmp_path, str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'Argument 1 to "double" has incompatible type "str"' in r.stdout, r.stdout
    assert "'Thing' is missing following 'IThing' interface members: run" in r.stdout, r.stdout


def test_strict_modules_exist():
    """Every module setup.cfg lists as fully typed exists, so the list cannot name a module
    that was moved away (and so silently check nothing)."""
    modules = strict_modules()
    assert modules, "setup.cfg lists no fully typed module"
    for module in modules:
        path = os.path.join(ROOT, *module.split("."))
        assert os.path.exists(path + ".py") or os.path.isdir(path), module


@pytest.mark.slow
def test_strict_modules_are_fully_typed(tmp_path):
    """Each module listed as fully typed has a type on every function: checked with
    ``--disallow-untyped-defs`` on the command line too, so a section whose flag mypy did not
    apply (a misspelt name) would still fail here."""
    modules = strict_modules()
    args = []
    for module in modules:
        args += ["-m", module]
    r = mypy(tmp_path, "--follow-imports=silent", "--disallow-untyped-defs",
             "--disallow-incomplete-defs", *args)
    assert r.returncode == 0, r.stdout + r.stderr


#: Modules of haha/ not yet fully typed. The list only shrinks: a module typed later moves to
#: setup.cfg's strict list (and out of here), and a new module starts out typed.
NOT_YET_TYPED: set[str] = set()


def package_modules():
    """Every module of haha/ by dotted name (a package by its own name)."""
    out = set()
    for top, dirs, files in os.walk(os.path.join(ROOT, "haha")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(top, name), ROOT)[:-3].replace(os.sep, ".")
                out.add(rel[:-len(".__init__")] if rel.endswith(".__init__") else rel)
    return out


def test_every_module_is_fully_typed_but_the_listed_few():
    """setup.cfg lists every module of haha/ as fully typed except NOT_YET_TYPED, and none of
    those is listed (so the exception list cannot outlive the typing it waits for)."""
    modules, strict = package_modules(), set(strict_modules())
    assert "haha.core.homeagent" in modules and "haha" in modules
    assert modules - strict == NOT_YET_TYPED
    assert not NOT_YET_TYPED & strict
