"""The operating-system seams and the capability interfaces are checked against every object that
claims them: the real ones (:class:`LinuxSystem`, :class:`Pyroute2Netlink`, a real socket) and
every fake (haha.io.system, haha.backends.netsys, haha.testing, the tests' own), with
``verifyObject`` and, stricter, the exact parameter lists, so a fake cannot drift from the
interface the real object implements."""

import importlib
import inspect
import pkgutil
import socket
import sys
from pathlib import Path

import pytest
from zope.interface import Interface, implementedBy, implementer
from zope.interface.exceptions import Invalid
from zope.interface.interface import Method
from zope.interface.verify import verifyClass, verifyObject

import haha
import haha.interfaces as interfaces
from haha.backends.netsys import FakeNetlink, Pyroute2Netlink
from haha.interfaces import (
    INetlink,
    IPacketSocket,
    IRawSocket,
    ISystem,
    ITunFile,
)
from haha.io.system import (
    FakePacketSocket,
    FakeRawSocket,
    FakeSystem,
    FakeTunFile,
    LinuxSystem,
    _Fd,
)

TESTS = Path(__file__).parent
#: Every interface haha declares (the contracts module is the one place they live).
ALL = [v for v in vars(interfaces).values()
       if isinstance(v, type(Interface)) and v.__module__ == interfaces.__name__]


def signature_mismatches(interface, implementation):
    """Differences between each method of ``interface`` and the one ``implementation`` (a
    class or an instance) has: the positional parameter names in order, which of them are
    required, the defaults of the others, ``*args``/``**kwargs``. Empty when they agree.
    Methods the implementation does not have are reported too (verifyObject's job, repeated
    here so that this check stands alone)."""
    found = []
    for name in interface.names(all=True):
        spec = interface[name]
        if not isinstance(spec, Method):
            continue
        member = getattr(implementation, name, None)
        if member is None:
            found.append(f"{name}: missing")
            continue
        try:
            parameters = list(inspect.signature(member).parameters.values())
        except (TypeError, ValueError):  # a builtin (a real socket's method): not inspectable
            continue
        if inspect.isclass(implementation) and not isinstance(
                inspect.getattr_static(implementation, name), (staticmethod, classmethod)):
            parameters = parameters[1:]  # self
        want = spec.getSignatureInfo()
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        positional = tuple(p.name for p in parameters if p.kind in kinds)
        required = tuple(p.name for p in parameters
                         if p.kind in kinds and p.default is inspect.Parameter.empty)
        optional = {p.name: p.default for p in parameters
                    if p.kind in kinds and p.default is not inspect.Parameter.empty}
        varargs = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)
        kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
        got = (positional, required, optional, varargs, kwargs)
        expected = (want["positional"], want["required"], want["optional"],
                    bool(want["varargs"]), bool(want["kwargs"]))
        if got != expected:
            found.append(f"{name}: {positional}/{optional} is not the interface's "
                         f"{want['positional']}/{want['optional']}")
    return found


def check(interface, obj):
    verifyObject(interface, obj)
    assert signature_mismatches(interface, obj) == [], (interface.__name__, type(obj).__name__)


def test_the_real_system_and_its_twin_provide_the_system_seam():
    """LinuxSystem (built without touching the system) and FakeSystem both provide ISystem
    with the same parameter lists."""
    check(ISystem, LinuxSystem())
    check(ISystem, LinuxSystem(netns="nowhere"))
    check(ISystem, FakeSystem())


def test_the_real_sockets_and_their_fakes_provide_the_socket_seams():
    """What the real system returns (Python sockets, the TUN descriptor wrapper) and what the
    fake returns (FakePacketSocket, FakeRawSocket, FakeTunFile) provide the same interfaces;
    the fakes as made by FakeSystem itself."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:  # the class AF_PACKET and
        verifyObject(IPacketSocket, s, tentative=True)             # raw sockets are too
        verifyObject(IRawSocket, s, tentative=True)
    check(ITunFile, _Fd(-1))
    system = FakeSystem()
    check(IPacketSocket, system.packet_socket("eth0"))
    check(IRawSocket, system.raw_socket())
    tun, _ = system.open_tun("t%d")
    check(ITunFile, tun)
    for fake, interface in ((FakePacketSocket, IPacketSocket), (FakeRawSocket, IRawSocket),
                            (FakeTunFile, ITunFile)):
        assert interface.implementedBy(fake)


def test_the_real_netlink_and_its_twin_provide_the_netlink_seam():
    """Pyroute2Netlink (a netlink socket in this namespace, closed again) and FakeNetlink
    provide INetlink with the same parameter lists; FakeNetlink's extra helpers (add_link,
    load_ip6_tunnel) are its own."""
    real = Pyroute2Netlink()
    try:
        check(INetlink, real)
    finally:
        real.close()
    check(INetlink, FakeNetlink())


def _modules():
    """haha's modules and the tests' own (the tests' fakes live there)."""
    for info in pkgutil.walk_packages(haha.__path__, "haha."):
        if info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)
    sys.path.insert(0, str(TESTS))
    try:
        for path in sorted(TESTS.glob("test_*.py")):
            if path.stem == Path(__file__).stem:
                continue
            yield importlib.import_module(path.stem)
    finally:
        sys.path.remove(str(TESTS))


def _declaring_classes():
    """Every class in haha and the tests that declares one of haha's interfaces."""
    seen = {}
    for module in _modules():
        for value in vars(module).values():
            if inspect.isclass(value) and value.__module__ == module.__name__:
                declared = [i for i in implementedBy(value).flattened() if i in ALL]
                if declared:
                    seen[f"{value.__module__}.{value.__qualname__}"] = (value, declared)
        # classes defined inside test functions are not reachable here; the ones that
        # matter (RecordingTunnel, ...) are at module level
    return seen


def test_every_class_declaring_an_interface_matches_it():
    """Every class in haha and in the tests that declares one of haha's interfaces (seams,
    capabilities, forwarding backend, transport, ...) has each declared method with the
    interface's exact parameter list: a fake with a missing method or a different signature
    fails here."""
    classes = _declaring_classes()
    assert {"haha.io.system.FakeSystem", "haha.backends.netsys.FakeNetlink",
            "haha.io.system.LinuxSystem", "haha.backends.netsys.Pyroute2Netlink",
            "haha.backends.tun.MobileTunnel", "haha.io.raw.RawTransport",
            "test_service_mobility.RecordingTunnel"} <= set(classes)
    problems = {}
    for name, (cls, declared) in sorted(classes.items()):
        for interface in declared:
            try:
                verifyClass(interface, cls)
            except Invalid as e:
                problems[f"{name} {interface.__name__}"] = [str(e)]
                continue
            found = signature_mismatches(interface, cls)
            if found:
                problems[f"{name} {interface.__name__}"] = found
    assert problems == {}


# -- the checks themselves fail when they should ------------------------------------------------


class _DriftedNetlink(FakeNetlink):
    def route_replace(self, dst, dev=None, table=None, metric=None, proto=None):  # no kind
        pass


class _RenamedSystem(FakeSystem):
    def open_tun(self, device):  # was: name
        pass


class _StricterSystem(FakeSystem):
    def packet_socket(self, interface):  # the interface made required
        pass


def test_the_check_fails_for_a_drifted_fake():
    """A fake that lost a parameter, renamed one or made an optional one required is caught;
    so is one that lacks a method (verifyObject)."""
    with pytest.raises(Invalid):  # one positional parameter fewer: verifyObject sees it
        verifyObject(INetlink, _DriftedNetlink())
    assert signature_mismatches(INetlink, _DriftedNetlink())
    assert signature_mismatches(ISystem, _RenamedSystem())
    assert signature_mismatches(ISystem, _RenamedSystem)
    assert signature_mismatches(ISystem, _StricterSystem())

    @implementer(ITunFile)
    class NoWrite:
        def fileno(self):
            return -1

        def read(self, n):
            return b""

        def writev(self, buffers):
            return 0

        def close(self):
            pass

    with pytest.raises(Invalid, match="write"):
        verifyObject(ITunFile, NoWrite())
    assert signature_mismatches(ITunFile, NoWrite()) == ["write: missing"]


def test_every_seam_is_declared_by_a_real_object_and_a_fake():
    """Each seam interface has both a real implementation and an in-memory one declaring it,
    so both sides are in the sweep above (the real sockets are Python's own, checked by
    instance above)."""
    classes = _declaring_classes()
    for seam in (ISystem, INetlink, ITunFile):
        holders = {name for name, (_, declared) in classes.items() if seam in declared}
        assert any("Fake" in n for n in holders), seam.__name__
        assert any("Fake" not in n for n in holders), seam.__name__
