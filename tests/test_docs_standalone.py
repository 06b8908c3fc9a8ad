"""The documentation stands alone: nothing in the repository (README, docs/, conf/, code and test
comments) cites a file that users do not have, and every relative link of a Markdown file
points at a file of the repository."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache"}
TEXT = (".py", ".md", ".txt", ".conf", ".cfg", ".toml", ".service", ".json", ".sh")
# Notes kept outside the repository while haha was written; spelled in pieces so that this file
# does not cite them itself.
SHARED = "sha" + "red"
OUTSIDE = re.compile(r"\b(?:%s)\.md\b|\.\./%s\b|/work/%s\b|\b%s/spec\b"
                     % ("|".join(("PROTO" + "COL", "STY" + "LE", "ARCHI" + "TECTURE")),
                        SHARED, SHARED, SHARED))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_files():
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith(TEXT) or name in ("dev", "run"):
                yield os.path.join(top, name)


def test_no_citation_of_files_outside_the_repository():
    """No file names the notes that are not part of the repository."""
    found = []
    for path in repository_files():
        with open(path, errors="replace") as f:
            for n, line in enumerate(f, 1):
                if OUTSIDE.search(line):
                    found.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_the_check_finds_a_citation():
    """The pattern does catch the forms a citation takes."""
    for text in ("see " + "PROTO" + "COL.md 3.6", "(" + "STY" + "LE.md 10)",
                 "ARCHI" + "TECTURE.md, x", "../" + SHARED + "/x", "/work/" + SHARED + "/spec"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search("docs/protocol.md 6.6")


def test_markdown_links_point_into_the_repository():
    """Every relative link in a Markdown file names a file or directory that exists here."""
    broken = []
    for path in repository_files():
        if not path.endswith(".md"):
            continue
        with open(path) as f:
            text = f.read()
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), target.split("#")[0]))
            if not resolved.startswith(ROOT + os.sep) or not os.path.exists(resolved):
                broken.append(f"{os.path.relpath(path, ROOT)}: {target}")
    assert broken == []
