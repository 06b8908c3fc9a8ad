"""docs/configuration.md documents every key the code reads (a test fails on an undocumented key)."""

import os
import re

from twisted.internet.task import Clock

from haha import inifile
from haha.config import home_agent_from_text, mobile_node_from_text
from haha.plugins import backend_plugins, discovery_plugins

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "configuration.md")

HA = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
home-interface = eth0
[security]
mode = none
lab = yes
"""
MN = """\
[mobile-node]
home-address = 2001:db8:1::100
home-prefix = 2001:db8:1::/64
care-of-address = 2001:db8:99::100
[security]
mode = none
lab = yes
"""
# Keys a plugin requires, so that building it reads the rest too.
REQUIRED = {"discovery:dns": "names = has.example.net\n"}


def documented():
    """{section: set of keys} from the '### [section]' blocks of the document."""
    text = open(DOC).read()
    out = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        heading, _, body = block.partition("\n")
        for name in re.findall(r"\[([^\]]+)\]", heading):
            out.setdefault(name, set()).update(re.findall(r"^\| `([^`]+)` \|", body, flags=re.M))
    return out


def read_keys(monkeypatch):
    seen = set()
    original = inifile.Section.raw

    def raw(self, key, default=None, required=False):
        seen.add((self.name, key))
        return original(self, key, default, required)

    monkeypatch.setattr(inifile.Section, "raw", raw)
    return seen


def test_every_key_read_is_documented(monkeypatch):
    """Parse a home agent and a mobile node file and build every plugin: each key any of them
    reads must have a row in its section's table of docs/configuration.md."""
    from haha.backends.context import BackendContext

    seen = read_keys(monkeypatch)
    ha = home_agent_from_text(HA)
    mobile_node_from_text(MN)
    home_agent_from_text(HA + "[transport]\nkind = udp\nudp-listen = 127.0.0.1:1\n")
    for kind, plugins in (("backend", backend_plugins()), ("discovery", discovery_plugins())):
        for name, plugin in sorted(plugins.items()):
            section = f"{kind}:{name}"
            text = HA.replace("[security]", f"{kind} = {name}\n[security]") if kind == "backend" \
                else HA + f"[peers]\ndiscovery = {name}\n"
            text += f"[{section}]\n{REQUIRED.get(section, '')}"
            c = home_agent_from_text(text)
            choice = c.backend if kind == "backend" else c.discovery
            if kind == "backend":
                plugin.build(BackendContext(choice.options, Clock()))
            else:
                plugin.build(choice.options, Clock(), c)
    assert ha.address
    docs = documented()
    missing = sorted(f"[{s}] {k}" for s, k in seen if k not in docs.get(s, set()))
    assert not missing, f"undocumented configuration keys: {missing}"
    assert len(seen) > 30


def test_every_plugin_has_a_section_heading():
    """Each built-in plugin has its own '### [kind:name]' heading, even without keys."""
    docs = documented()
    for kind, plugins in (("backend", backend_plugins()), ("discovery", discovery_plugins())):
        for name in plugins:
            assert f"{kind}:{name}" in docs, f"docs/configuration.md lacks [{kind}:{name}]"
