"""Find backends and discovery strategies by their configuration name.

Plugins are found through ``twisted.plugin.getPlugins`` in the ``twisted.plugins`` package, so a
third party adds one by dropping a ``twisted/plugins/*.py`` file on ``sys.path`` (or installing a
package that ships one). A plugin object provides :class:`~haha.interfaces.IBackendPlugin` or
:class:`~haha.interfaces.IDiscoveryPlugin`; the object it builds is checked with ``verifyObject``
before the daemon uses it, so a broken plugin fails at start-up with its name, not mid-run.

A backend factory receives one :class:`~haha.backends.context.BackendContext` and returns the
complete backend. A factory written for the earlier signature ``build(options, reactor)`` (two
required parameters) still loads: it is called that way, a ``DeprecationWarning`` and a log line
name the change, and the backend gets its transport and ownership set afterwards the way the
daemon did before the context, when it has those attributes and they are None. A factory taking
anything else is refused at start-up with a sentence saying what haha calls it with.
"""

import inspect
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional

from twisted.logger import Logger
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


_log = Logger(namespace="haha.plugins")

#: What a backend factory is called with, for error messages.
CONTEXT_SIGNATURE = "build(context: haha.backends.context.BackendContext)"
LEGACY_SIGNATURE = "build(options, reactor)"


def _arity(func: Callable[..., Any]) -> Optional[int]:
    """How many positional arguments ``func`` requires, or None when it cannot be told (a
    builtin) or it takes any number (``*args``)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = 0
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        if p.kind in positional and p.default is inspect.Parameter.empty:
            required += 1
        elif p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty:
            return -1  # a required keyword: neither signature can call it
    return required


def call_backend_factory(name: str, factory: Callable[..., Any], context: Any) -> Any:
    """Call a backend plugin's factory (or its plugin object's ``build``) with ``context``,
    or with ``(options, reactor)`` when it was written for that earlier signature (module
    docstring). Raises :class:`~haha.errors.StartupError` for any other signature."""
    from .errors import StartupError

    arity = _arity(factory)
    if arity is None or arity == 1:
        return factory(context)
    if arity == 2:
        message = (f"backend plugin {name!r}: {factory!r} takes {LEGACY_SIGNATURE}, the "
                   f"signature from before the backend context; it is called that way for now, "
                   f"and should become {CONTEXT_SIGNATURE} (docs/design.md, \"Extending\")")
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        _log.warn("{message}", message=message)
        backend = factory(context.options, context.reactor)
        _give_legacy(backend, context)
        return backend
    raise StartupError(
        f"backend plugin {name!r}: {factory!r} cannot be called as {CONTEXT_SIGNATURE} "
        f"(nor as the earlier {LEGACY_SIGNATURE})",
        "make the plugin's factory take the one BackendContext argument "
        "(docs/design.md, \"Extending\")")


def _give_legacy(backend: Any, context: Any) -> None:
    """What the daemon did to every backend before the context: set ``transport`` and
    ``ownership`` when the backend has them and they are None. Only for factories with the
    earlier signature, which had no other way to receive them."""
    for field in ("transport", "ownership"):
        if getattr(backend, field, False) is None:
            setattr(backend, field, getattr(context, field))


def build_backend(choice: Any, context: Any, package: Any = None,
                  factory: Optional[Callable[..., Any]] = None) -> Any:
    """Build the forwarding backend named by ``choice`` (a :class:`haha.config.PluginChoice`)
    in one step from ``context`` (a :class:`~haha.backends.context.BackendContext` whose
    ``options`` are the choice's; a bare reactor makes one with nothing else in it), and
    verify that it provides :class:`IForwardingBackend`. ``factory`` (a callable taking the
    context) replaces the plugin the configuration names."""
    from .backends.context import BackendContext

    if not isinstance(context, BackendContext):
        context = BackendContext(choice.options, context)
    elif context.options is not choice.options:
        raise ValueError(f"the backend context carries the options of [{context.options.name}], "
                         f"not those of backend {choice.name!r}")
    if factory is None:
        factory = _find("backend", choice, backend_plugins(package)).build
    backend = call_backend_factory(choice.name, factory, context)
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
    """An :class:`IBackendPlugin` built from ``"module:callable(context)"`` (or the earlier
    ``"module:callable(options, reactor)"``, module docstring)."""

    def build(self, context: Any) -> Any:
        """The backend the factory makes from ``context`` (a
        :class:`~haha.backends.context.BackendContext`)."""
        return call_backend_factory(self.name, _load("backend", self.name, self._factory),
                                    context)


@implementer(IPlugin, IDiscoveryPlugin)
class DiscoveryPlugin(_LazyPlugin):
    """An :class:`IDiscoveryPlugin` built from ``"module:callable(options, reactor, config)"``."""

    def build(self, options: "Section", reactor: Any, config: Any) -> Any:
        return _load("discovery", self.name, self._factory)(options, reactor, config)
