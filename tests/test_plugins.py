"""Plugin lookup: built-ins by name, unknown names listed, a third-party plugin from a folder."""

import sys
import textwrap

import pytest
import twisted.plugins
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from haha.config import ConfigError, home_agent_from_text
from haha.interfaces import IBackendPlugin, IDiscoveryPlugin
from haha.plugins import backend_plugins, build_backend, build_discovery, discovery_plugins

BASE = """\
[home-agent]
address = 2001:db8:1::1
home-prefix = 2001:db8:1::/64
home-interface = eth0
{extra}
[security]
mode = none
lab = yes
"""


def test_builtin_plugins_provide_their_interfaces():
    """Every built-in backend and discovery plugin is found and provides its interface."""
    backends = backend_plugins()
    discoveries = discovery_plugins()
    assert {"null", "tun", "netlink"} <= set(backends)
    assert {"static", "dns", "link"} <= set(discoveries)
    for p in backends.values():
        verifyObject(IBackendPlugin, p)
    for p in discoveries.values():
        verifyObject(IDiscoveryPlugin, p)


def test_unknown_backend_lists_available_names():
    """An unknown backend name stops start-up, located, listing the names that exist."""
    c = home_agent_from_text(BASE.format(extra="backend = nosuch"), "ha.conf")
    with pytest.raises(ConfigError) as e:
        build_backend(c.backend, Clock())
    msg = str(e.value)
    assert msg.startswith("ha.conf:5: [home-agent] backend: unknown backend 'nosuch'")
    assert "netlink" in msg and "null" in msg and "tun" in msg


def test_unknown_discovery_lists_available_names():
    """An unknown discovery strategy is refused the same way."""
    c = home_agent_from_text(BASE.format(extra="") + "[peers]\ndiscovery = mdns\n", "ha.conf")
    with pytest.raises(ConfigError) as e:
        build_discovery(c.discovery, Clock(), c)
    assert "unknown discovery 'mdns'" in str(e.value) and "static" in str(e.value)


def test_static_discovery_built_from_config():
    """The static strategy reports exactly [peers] static."""
    c = home_agent_from_text(BASE.format(extra="") + "[peers]\nstatic = 2001:db8:1::2 2001:db8:1::3\n")
    d = build_discovery(c.discovery, Clock(), c)
    seen = []

    class L:
        def peer_appeared(self, a, source):
            seen.append((str(a), source))

        def peer_disappeared(self, a, source):
            raise AssertionError("static peers never disappear")

    d.start(L())
    assert seen == [("2001:db8:1::2", "static"), ("2001:db8:1::3", "static")]


FACTORIES = {
    # The factory as documented now: one BackendContext, everything in it.
    "context": """
        def build(context):
            return AcmeBackend(context.options, context.transport)
    """,
    # The signature before the context (still loads, with a deprecation warning).
    "legacy": """
        def build(options, reactor):
            return AcmeBackend(options)
    """,
    # Neither signature: refused, naming what haha calls it with.
    "wrong": """
        def build(options, reactor, config):
            return AcmeBackend(options)
    """,
}


def _third_party(tmp_path, good=True, factory="context"):
    pkg = tmp_path / "acme_haha"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(f"""
        from zope.interface import implementer
        from haha.interfaces import IForwardingBackend

        @implementer(IForwardingBackend)
        class AcmeBackend:
            name = "acme"
            transport = None
            def __init__(self, options, transport=None):
                self.table = options.get_int("table", 100)
                self.transport = transport
            def capabilities(self): return frozenset({{"tunnel"}})
            def start(self): pass
            def stop(self): pass
            def install(self, route): pass
            def remove(self, home_address): pass
            def proxy_nd_start(self, address, interface): pass
            def proxy_nd_stop(self, address, interface): pass
            def advertise_prefix(self, prefix): pass
            def withdraw_prefix(self, prefix): pass
            {"def snapshot(self): return {'table': self.table}" if good else ""}
    """) + textwrap.dedent(FACTORIES[factory]))
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "acme_backend.py").write_text(textwrap.dedent("""
        from haha.plugins import BackendPlugin
        acme = BackendPlugin("acme", "Acme forwarding appliance", "acme_haha:build")
    """))
    return str(plugins)


@pytest.fixture
def plugin_path(monkeypatch):
    """Make a folder's twisted/plugins visible the way sys.path entries are at import."""
    def add(tmp_path, good=True, factory="context"):
        folder = _third_party(tmp_path, good, factory)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.setattr(twisted.plugins, "__path__", [folder] + list(twisted.plugins.__path__))
        return folder
    yield add
    for m in [m for m in sys.modules if m.startswith(("acme_haha", "twisted.plugins.acme"))]:
        del sys.modules[m]


def test_third_party_backend_selected_by_name(tmp_path, plugin_path):
    """A plugin dropped into another folder's twisted/plugins is selected by a config file,
    gets its own [backend:acme] section, and is verified on load."""
    plugin_path(tmp_path)
    conf = tmp_path / "ha.conf"
    conf.write_text(BASE.format(extra="backend = acme") + "[backend:acme]\ntable = 42\n")
    from haha.config import load_home_agent
    c = load_home_agent(str(conf))
    backend = build_backend(c.backend, Clock())
    assert type(backend).__name__ == "AcmeBackend" and backend.snapshot() == {"table": 42}


def test_third_party_unknown_option_is_located(tmp_path, plugin_path):
    """A key the plugin did not read is reported in the plugin's own section."""
    plugin_path(tmp_path)
    c = home_agent_from_text(
        BASE.format(extra="backend = acme") + "[backend:acme]\ntabel = 42\n", "ha.conf")
    with pytest.raises(ConfigError) as e:
        build_backend(c.backend, Clock())
    assert (e.value.section, e.value.key, e.value.line) == ("backend:acme", "tabel", 10)


def test_broken_third_party_plugin_refused(tmp_path, plugin_path):
    """A plugin whose object lacks part of the interface fails at load, naming the plugin."""
    plugin_path(tmp_path, good=False)
    c = home_agent_from_text(BASE.format(extra="backend = acme"), "ha.conf")
    with pytest.raises(ConfigError) as e:
        build_backend(c.backend, Clock())
    assert "backend plugin 'acme'" in str(e.value) and "snapshot" in str(e.value)


def test_third_party_backend_receives_the_context(tmp_path, plugin_path):
    """A third-party factory is called with one BackendContext: its own section and the
    daemon's transport arrive together, in the one call that builds the backend."""
    from haha.backends.context import BackendContext
    from haha.io.memory import MemoryHub

    plugin_path(tmp_path)
    c = home_agent_from_text(
        BASE.format(extra="backend = acme") + "[backend:acme]\ntable = 42\n", "ha.conf")
    transport = MemoryHub(Clock()).endpoint(c.address)
    backend = build_backend(c.backend, BackendContext(c.backend.options, Clock(),
                                                      transport=transport))
    assert backend.snapshot() == {"table": 42} and backend.transport is transport


def test_third_party_backend_with_the_earlier_signature_still_loads(tmp_path, plugin_path):
    """A factory written as build(options, reactor) is called that way, with a deprecation
    warning naming the new signature; it is given the transport as the daemon did before the
    context (its ``transport`` slot was None), so it keeps working unchanged."""
    from haha.backends.context import BackendContext
    from haha.io.memory import MemoryHub

    plugin_path(tmp_path, factory="legacy")
    c = home_agent_from_text(
        BASE.format(extra="backend = acme") + "[backend:acme]\ntable = 7\n", "ha.conf")
    transport = MemoryHub(Clock()).endpoint(c.address)
    with pytest.warns(DeprecationWarning, match=r"build\(options, reactor\).*BackendContext"):
        backend = build_backend(c.backend, BackendContext(c.backend.options, Clock(),
                                                          transport=transport))
    assert backend.snapshot() == {"table": 7} and backend.transport is transport


def test_third_party_backend_with_another_signature_is_refused(tmp_path, plugin_path):
    """A factory that takes neither one context nor (options, reactor) stops start-up with a
    sentence naming the plugin and the signature haha calls, before anything is built."""
    from haha.errors import StartupError

    plugin_path(tmp_path, factory="wrong")
    c = home_agent_from_text(BASE.format(extra="backend = acme"), "ha.conf")
    with pytest.raises(StartupError) as e:
        build_backend(c.backend, Clock())
    assert "backend plugin 'acme'" in str(e.value)
    assert "build(context: haha.backends.context.BackendContext)" in str(e.value)
    assert "BackendContext argument" in e.value.fix


def test_context_must_carry_the_chosen_backends_options():
    """A context built for another section is refused rather than silently handing the
    backend someone else's keys."""
    from haha.backends.context import BackendContext
    from haha.inifile import Section

    c = home_agent_from_text(BASE.format(extra="backend = null"), "ha.conf")
    with pytest.raises(ValueError, match="backend 'null'"):
        build_backend(c.backend, BackendContext(Section("backend:tun"), Clock()))


def test_context_checks_its_fields():
    """Each field of a BackendContext is checked when it is made: a transport, netlink or
    system seam that does not provide its interface, an ownership of the wrong type, or a
    missing section is a TypeError naming the field."""
    from haha.backends.context import BackendContext
    from haha.backends.netsys import FakeNetlink
    from haha.inifile import Section
    from haha.io.system import FakeSystem

    options = Section("backend:x")
    ok = BackendContext(options, Clock(), netlink=FakeNetlink(), system=FakeSystem())
    assert ok.evolve(reactor=None).netlink is ok.netlink
    for field, value in (("transport", object()), ("netlink", FakeSystem()),
                         ("system", FakeNetlink()), ("ownership", "2001:db8::/64")):
        with pytest.raises(TypeError, match=f"BackendContext.{field}"):
            BackendContext(options, Clock(), **{field: value})
    with pytest.raises(TypeError, match="BackendContext.options"):
        BackendContext(None, Clock())
    with pytest.raises(TypeError, match="BackendContext.options"):
        BackendContext({"table": "1"}, Clock())
    with pytest.raises(AttributeError):
        ok.transport = object()  # frozen: nothing is set afterwards


def test_factory_signatures_are_told_apart():
    """A plugin object's own ``build`` (not through BackendPlugin) is called the same way as
    a factory: one parameter, or ``*args``, gets the context; two required parameters get
    ``(options, reactor)`` with a deprecation warning; a required keyword-only parameter or
    three required parameters are refused by name, before the factory runs."""
    from haha.backends.context import BackendContext
    from haha.backends.null import NullBackend
    from haha.errors import StartupError
    from haha.inifile import Section
    from haha.plugins import call_backend_factory

    reactor = Clock()
    context = BackendContext(Section("backend:x"), reactor)
    calls = []

    class Plugin:
        def build(self, context):
            calls.append(("context", context))
            return NullBackend()

    class OldPlugin:
        def build(self, options, reactor):
            calls.append(("legacy", options, reactor))
            return NullBackend()

    def anything(*args):
        calls.append(("args",) + args)
        return NullBackend()

    call_backend_factory("x", Plugin().build, context)
    call_backend_factory("x", anything, context)
    with pytest.warns(DeprecationWarning, match="plugin 'x'"):
        call_backend_factory("x", OldPlugin().build, context)
    assert calls == [("context", context), ("args", context),
                     ("legacy", context.options, reactor)]
    for factory in (lambda *, context: None, lambda a, b, c: None):
        with pytest.raises(StartupError, match="plugin 'x'"):
            call_backend_factory("x", factory, context)
    assert len(calls) == 3


def test_legacy_factory_gets_only_what_it_left_empty():
    """The compatibility path for build(options, reactor) sets ``transport`` and
    ``ownership`` only where the backend has that attribute and it is None, as the daemon did
    before the context: a value the factory chose, or an attribute it does not have, is
    left alone."""
    from ipaddress import IPv6Network

    from haha.backends.common import Ownership
    from haha.backends.context import BackendContext
    from haha.backends.null import NullBackend
    from haha.inifile import Section
    from haha.io.memory import MemoryHub
    from haha.plugins import call_backend_factory

    reactor = Clock()
    own = Ownership(IPv6Network("2001:db8:1::/64"))
    transport = MemoryHub(reactor).endpoint("2001:db8:1::1")
    context = BackendContext(Section("backend:x"), reactor, transport=transport, ownership=own)
    mine = object()

    class Chosen(NullBackend):
        def __init__(self):
            super().__init__()
            self.transport = mine
            self.ownership = None

    with pytest.warns(DeprecationWarning):
        chosen = call_backend_factory("x", lambda options, reactor: Chosen(), context)
        plain = call_backend_factory("x", lambda options, reactor: NullBackend(), context)
    assert chosen.transport is mine and chosen.ownership is own
    assert not hasattr(plain, "transport") and not hasattr(plain, "ownership")
