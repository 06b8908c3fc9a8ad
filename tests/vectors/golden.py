"""Loading the golden vectors of this directory (shared by the tests/test_wire_*.py modules).

Each vector file is described in ``tests/vectors/generate.py``. :func:`load_all` returns
:class:`GoldenVector` records with the octets, the pseudo-header addresses, the profile and the
expected object (its ``expect:`` expression evaluated with the names of haha.wire).
"""

import importlib.util
import os
from dataclasses import dataclass
from ipaddress import IPv6Address, IPv6Network

from haha.wire import icmpv6, ipv6, mh, options
from haha.wire.numbers import DEFAULT_PROFILE, NumberProfile

VECTOR_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class GoldenVector:
    name: str
    kind: str
    raw: bytes
    expect: object
    src: IPv6Address = None
    dst: IPv6Address = None
    profile: NumberProfile = DEFAULT_PROFILE
    direction: str = "both"


def _namespace(raw):
    ns = {"A": IPv6Address, "N": IPv6Network, "RAW": raw, "bytes": bytes, "range": range}
    for module in (mh, options, icmpv6, ipv6):
        ns.update({k: v for k, v in vars(module).items() if not k.startswith("_")})
    return ns


def _profile(text):
    values = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        values[key.strip()] = int(value)
    return NumberProfile.make(**values)


def parse(name, text):
    """One vector from its file text."""
    keys = {}
    octets = []
    in_hex = False
    for line in text.splitlines():
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        if in_hex:
            octets.append(bytes.fromhex(body))
        elif body == "hex:":
            in_hex = True
        else:
            key, _, value = line.partition(":")
            keys[key.strip()] = value.strip()
    raw = b"".join(octets)
    return GoldenVector(
        name=name,
        kind=keys["kind"],
        raw=raw,
        expect=eval(keys["expect"], _namespace(raw)),  # noqa: S307 - our own test data
        src=IPv6Address(keys["src"]) if "src" in keys else None,
        dst=IPv6Address(keys["dst"]) if "dst" in keys else None,
        profile=_profile(keys["profile"]) if "profile" in keys else DEFAULT_PROFILE,
        direction=keys.get("direction", "both"),
    )


def load_all():
    out = []
    for fname in sorted(os.listdir(VECTOR_DIR)):
        if fname.endswith(".txt"):
            with open(os.path.join(VECTOR_DIR, fname)) as f:
                out.append(parse(fname[:-4], f.read()))
    return out


def generator():
    """The generator module (tests/vectors/generate.py), imported from its path."""
    spec = importlib.util.spec_from_file_location(
        "haha_vector_generator", os.path.join(VECTOR_DIR, "generate.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode(v, data):
    """Decode ``data`` the way vector ``v`` says it should be decoded."""
    if v.kind == "mh":
        return mh.decode_mh(data, v.src, v.dst, v.profile)
    if v.kind == "icmpv6":
        return icmpv6.decode_icmpv6(data, v.src, v.dst)
    return ipv6.parse_packet(data)


def encode(v, obj):
    """Encode ``obj`` the way vector ``v`` says it was encoded."""
    if v.kind == "mh":
        return mh.encode_mh(obj, v.src, v.dst, v.profile)
    if v.kind == "icmpv6":
        return icmpv6.encode_icmpv6(obj, v.src, v.dst)
    p = obj
    return ipv6.build_packet(p.src, p.dst, p.next_header, p.payload, p.hop_limit, p.home_address,
                             p.routing_address, p.traffic_class, p.flow_label)
