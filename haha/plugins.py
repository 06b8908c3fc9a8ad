"""Find backends and discovery strategies by their configuration name.

Plugins are found through ``twisted.plugin.getPlugins`` in the ``twisted.plugins`` package, so a
third party adds one by dropping a ``twisted/plugins/*.py`` file on ``sys.path`` (or installing a
package that ships one). A plugin object provides :class:`~haha.interfaces.IBackendPlugin` or
:class:`~haha.interfaces.IDiscoveryPlugin`; the object it builds is checked with ``verifyObject``
before the daemon uses it, so a broken plugin fails at start-up with its name, not mid-run.
"""

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from twisted.plugin import IPlugin, getPlugins
from zope.interface import implementer
from zope.interface.interface import InterfaceClass
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from .inifile import ConfigError
from .interfaces import IBackendPlugin, IDiscoveryPlugin, IForwardingBackend, IPeerDiscovery

if TYPE_CHECKING:
    from .config import PluginChoice
    from .inifile import Section


def _catalogue(interface: type[Any], package: ModuleType | None = None) -> dict[str, Any]:
    if package is None:
        import twisted.plugins as package
    found: dict[str, Any] = {}
    for plugin in getPlugins(interface, package):
        name = getattr(plugin, "name", None)
        if isinstance(name, str) and name not in found:
            found[name] = plugin
    return found


def backend_plugins(package: ModuleType | None = None) -> dict[str, Any]:
    """``{name: plugin}`` of every installed :class:`IBackendPlugin`."""
    return _catalogue(IBackendPlugin, package)


def discovery_plugins(package: ModuleType | None = None) -> dict[str, Any]:
    """``{name: plugin}`` of every installed :class:`IDiscoveryPlugin`."""
    return _catalogue(IDiscoveryPlugin, package)


def _find(kind: str, choice: "PluginChoice", catalogue: dict[str, Any]) -> Any:
    plugin = catalogue.get(choice.name)
    if plugin is None:
        names = ", ".join(sorted(catalogue)) or "none installed"
        raise choice.error(f"unknown {kind} {choice.name!r}; available: {names}")
    return plugin


def _verified(kind: str, name: str, obj: Any, interface: InterfaceClass) -> Any:
    try:
        verifyObject(interface, obj)
    except Invalid as e:
        raise ConfigError(
            f"{kind} plugin {name!r} built {obj!r}, which does not provide "
            f"{interface.__name__}: {e}"
        ) from None
    return obj


def build_backend(choice: "PluginChoice", reactor: Any, package: ModuleType | None = None
                  ) -> IForwardingBackend:
    """Build the forwarding backend named by ``choice`` (a :class:`haha.config.PluginChoice`)."""
    plugin = _find("backend", choice, backend_plugins(package))
    backend = plugin.build(choice.options, reactor)
    choice.options.check_unused()
    return _verified("backend", choice.name, backend, IForwardingBackend)


def build_discovery(choice: "PluginChoice", reactor: Any, config: Any,
                    package: ModuleType | None = None) -> IPeerDiscovery:
    """Build the peer-discovery strategy named by ``choice``."""
    plugin = _find("discovery", choice, discovery_plugins(package))
    discovery = plugin.build(choice.options, reactor, config)
    choice.options.check_unused()
    return _verified("discovery", choice.name, discovery, IPeerDiscovery)


def _load(kind: str, name: str, target: str) -> Callable[..., Any]:
    """The callable ``"module:attribute"`` of plugin ``name``; a module that is missing or
    fails to import is a :class:`~haha.errors.StartupError` naming the plugin."""
    from importlib import import_module

    from .errors import StartupError

    module, _, attribute = target.partition(":")
    try:
        return getattr(import_module(module), attribute)
    except ImportError as e:
        missing = getattr(e, "name", None)
        cause = f"module {missing} is not installed" if missing and \
            isinstance(e, ModuleNotFoundError) else f"importing {module} failed: {e}"
        raise StartupError(f"{kind} plugin {name!r} ({target}) cannot be loaded: {cause}",
                           f"install the package that provides it, or choose another {kind}"
                           ) from None
    except AttributeError:
        raise StartupError(f"{kind} plugin {name!r}: module {module} has no {attribute!r}",
                           "fix the plugin's factory path or update the package") from None
    except Exception as e:
        raise StartupError(f"{kind} plugin {name!r}: importing {module} failed: "
                           f"{type(e).__name__}: {e}",
                           "fix or reinstall the package that provides it") from None


class _LazyPlugin:
    """A plugin object whose implementation is imported only when it is built, so that
    ``getPlugins`` (which imports every plugin file) stays cheap."""

    def __init__(self, name: str, description: str, factory: str) -> None:
        self.name = name
        self.description = description
        self._factory = factory

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} -> {self._factory}>"


@implementer(IPlugin, IBackendPlugin)
class BackendPlugin(_LazyPlugin):
    """An :class:`IBackendPlugin` built from ``"module:callable(options, reactor)"``."""

    def build(self, options: "Section", reactor: Any) -> Any:
        return _load("backend", self.name, self._factory)(options, reactor)


@implementer(IPlugin, IDiscoveryPlugin)
class DiscoveryPlugin(_LazyPlugin):
    """An :class:`IDiscoveryPlugin` built from ``"module:callable(options, reactor, config)"``."""

    def build(self, options: "Section", reactor: Any, config: Any) -> Any:
        return _load("discovery", self.name, self._factory)(options, reactor, config)
