"""Golden vectors: every message, option and header, checked byte for byte both ways.

The vectors in tests/vectors/ are assembled field by field from the RFC layouts by
tests/vectors/generate.py (which never imports haha), so these tests catch encoder and decoder
bugs alike.
"""

import importlib.util
import os

import pytest

from haha.wire import WireError, icmpv6, mh

_spec = importlib.util.spec_from_file_location(
    "golden", os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "golden.py")
)
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)

VECTORS = golden.load_all()
IDS = [v.name for v in VECTORS]


def test_vector_files_are_what_the_generator_writes():
    """The committed vector files are exactly the generator's output (none edited by hand,
    none missing, none stale)."""
    gen = golden.generator()
    expected = {v.name: v.text() for v in gen.all_vectors()}
    on_disk = {}
    for fname in os.listdir(golden.VECTOR_DIR):
        if fname.endswith(".txt"):
            with open(os.path.join(golden.VECTOR_DIR, fname)) as f:
                on_disk[fname[:-4]] = f.read()
    assert on_disk == expected


def test_every_message_and_option_has_a_vector():
    """Each message class, option class and ICMPv6 message class appears in some vector."""
    seen = set()

    def walk(obj):
        seen.add(type(obj))
        for value in getattr(obj, "__dataclass_fields__", {}):
            inner = getattr(obj, value)
            for item in inner if isinstance(inner, tuple) else (inner,):
                if hasattr(item, "__dataclass_fields__"):
                    walk(item)

    for v in VECTORS:
        walk(v.expect)
        if v.kind == "packet" and v.expect.next_header in (58, 135):
            seen.add(type(golden.decode(
                golden.GoldenVector(v.name, "mh" if v.expect.next_header == 135 else "icmpv6",
                                    b"", None, v.expect.source, v.expect.destination),
                v.expect.payload,
            )))
    wanted = set(mh.MESSAGE_TYPES) | {
        mh.UnknownMessage,
        golden.options.AlternateCareOfAddress, golden.options.BindingRefreshAdvice,
        golden.options.NonceIndices, golden.options.BindingAuthorizationData,
        golden.options.MobileNetworkPrefix, golden.options.IpAddress, golden.options.BceInfo,
        golden.options.UnknownOption, golden.options.BindingDigest,
        icmpv6.DhaadRequest, icmpv6.DhaadReply, icmpv6.MobilePrefixSolicitation,
        icmpv6.MobilePrefixAdvertisement, icmpv6.RouterAdvertisement, icmpv6.HomeAgentInformation,
        icmpv6.PrefixInformation, icmpv6.AdvertisementInterval, icmpv6.LinkLayerAddress,
        icmpv6.NeighborSolicitation, icmpv6.NeighborAdvertisement, icmpv6.UnknownIcmp,
        golden.ipv6.Packet,
    }
    assert wanted - seen == set()


def test_every_binding_ack_status_has_a_vector_and_a_name():
    """BA statuses 0, 1 and 128-143 (RFC 6275 6.1.8, NEMO 140-143 of RFC 3963 4.2) each have a
    vector and a human name."""
    statuses = {v.expect.status for v in VECTORS if type(v.expect) is mh.BindingAck}
    assert statuses >= {0, 1, *range(128, 144)}
    assert set(mh.BA_STATUS_NAMES) >= {0, 1, *range(128, 144)}


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_decode_gives_the_expected_object(v):
    """decode(vector octets) == the vector's expected object."""
    assert golden.decode(v, v.raw) == v.expect


@pytest.mark.parametrize("v", [v for v in VECTORS if v.direction == "both"],
                         ids=[v.name for v in VECTORS if v.direction == "both"])
def test_encode_gives_the_vector_octets(v):
    """encode(expected object) == the vector octets, byte for byte (padding and checksum
    included)."""
    assert golden.encode(v, v.expect).hex() == v.raw.hex()


@pytest.mark.parametrize("v", [v for v in VECTORS if v.kind == "packet"],
                         ids=[v.name for v in VECTORS if v.kind == "packet"])
def test_packet_payload_checksums_use_home_and_routing_addresses(v):
    """The upper layer of each packet vector verifies with the pseudo-header that
    Packet.source/destination give (home address for a HAO, routing address for an RH2,
    RFC 6275 6.1.1) and fails with the plain IPv6 addresses when those differ."""
    p = golden.decode(v, v.raw)
    if p.next_header not in (58, 135):
        return
    sub = golden.GoldenVector(v.name, "mh" if p.next_header == 135 else "icmpv6", b"", None,
                              p.source, p.destination)
    golden.decode(sub, p.payload)
    if (p.home_address or p.routing_address) is not None:
        plain = golden.GoldenVector(v.name, sub.kind, b"", None, p.src, p.dst)
        with pytest.raises(WireError) as e:
            golden.decode(plain, p.payload)
        assert e.value.reason == "bad-checksum"


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_every_truncation_raises_wire_error(v):
    """Every proper prefix of a vector (up to the end of the packet proper) is refused with
    WireError, and with nothing else."""
    end = len(v.raw)
    if v.kind == "packet":
        end = 40 + int.from_bytes(v.raw[4:6], "big")
    for k in range(end):
        with pytest.raises(WireError):
            golden.decode(v, v.raw[:k])
