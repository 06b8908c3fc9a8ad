"""The numbering profile, the checksum and the codec's error contract.

The profile (docs/protocol.md section 1) gives the draft's messages and options their numbers; every
value can be overridden, and a value that reuses a taken number is refused with a clear error.
"""

import os
from ipaddress import IPv6Address

import pytest

from haha.wire import DEFAULT_PROFILE, NumberProfile, ProfileError, WireError
from haha.wire import checksum as ck
from haha.wire import errors, icmpv6, ipv6, mh, options


def test_default_profile_is_haha_00():
    """The defaults are docs/protocol.md section 1's: MH types 200-204, IP Address option 200, BCE
    Information option 201, Mobile Network Prefix option 6."""
    p = DEFAULT_PROFILE
    assert (p.name, p.hello, p.bir, p.biu, p.bia, p.hasr) == ("haha-00", 200, 201, 202, 203, 204)
    assert (p.opt_ip_address, p.opt_bce_info, p.opt_mnp) == (200, 201, 6)


def test_every_value_can_be_overridden():
    """Each number of the profile takes another free value."""
    p = NumberProfile.make(name="lab", hello=240, bir=241, biu=242, bia=243, hasr=244,
                           opt_ip_address=240, opt_bce_info=241)
    assert (p.hello, p.bir, p.biu, p.bia, p.hasr) == (240, 241, 242, 243, 244)
    assert (p.opt_ip_address, p.opt_bce_info) == (240, 241)


@pytest.mark.parametrize("values, words", [
    ({"bir": 200}, ["bir = 200", "reuses", "hello"]),
    ({"opt_bce_info": 200}, ["opt_bce_info = 200", "reuses", "opt_ip_address"]),
    ({"opt_bce_info": 0xA}, ["opt_bce_info = 10", "IANA-assigned", "0-70"]),
    ({"hello": 5}, ["hello = 5", "IANA-assigned", "0-23"]),
    ({"hasr": 12}, ["hasr = 12", "IANA-assigned"]),
    ({"opt_mnp": 3}, ["opt_mnp = 3", "assigned"]),
    ({"hello": 256}, ["hello = 256", "0-255"]),
    ({"bia": "203"}, ["bia = '203'", "integer"]),
    ({"opt_ip_address": 1}, ["opt_ip_address = 1"]),
    ({"helo": 200}, ["unknown number 'helo'", "hello"]),
])
def test_taken_or_invalid_numbers_are_refused_clearly(values, words):
    """Reusing a number of the profile, an IANA-assigned number (the draft's 0xa for the BCE
    option included), an out-of-range value or an unknown key raises ProfileError naming the
    key, the value and the reason."""
    with pytest.raises(ProfileError) as e:
        NumberProfile.make(**values)
    for w in words:
        assert w in str(e.value)


def test_checksum_matches_rfc1071_word_by_word():
    """checksum()/verify() agree with a plain RFC 1071 loop over the pseudo-header and data,
    for even and odd lengths."""
    def textbook(src, dst, nh, data):
        buf = src + dst + len(data).to_bytes(4, "big") + bytes(3) + bytes((nh,)) + data
        if len(buf) % 2:
            buf += b"\x00"
        s = 0
        for i in range(0, len(buf), 2):
            s += int.from_bytes(buf[i:i + 2], "big")
            s = (s & 0xFFFF) + (s >> 16)
        return ~s & 0xFFFF

    rnd = os.urandom
    for n in list(range(0, 20)) + [63, 64, 1000]:
        # the checksum field first (at an even offset, as in every header), then n octets
        src, dst, data = rnd(16), rnd(16), bytearray(bytes(2) + rnd(n))
        c = ck.checksum(src, dst, 135, bytes(data))
        assert c == textbook(src, dst, 135, bytes(data))
        a, b = IPv6Address(src), IPv6Address(dst)
        assert ck.checksum_ip(a, b, 135, bytes(data)) == c
        data[:2] = c.to_bytes(2, "big")
        assert ck.verify(src, dst, 135, bytes(data))
        assert ck.verify_ip(a, b, 135, bytes(data))
        data[-1] ^= 0x01
        assert not ck.verify(src, dst, 135, bytes(data))


def test_wire_error_has_a_known_reason():
    """WireError carries one of the documented reasons (so drops can be counted by reason)
    and refuses an undocumented one."""
    e = WireError(errors.TRUNCATED, "short")
    assert e.reason == "truncated" and "short" in str(e)
    assert isinstance(e, ValueError)
    with pytest.raises(AssertionError):
        WireError("no-such-reason")


HA = IPv6Address("2001:db8:1::1")


@pytest.mark.parametrize("encode", [
    lambda: mh.encode_mh(mh.BindingUpdate(70000), HA, HA),
    lambda: mh.encode_mh(mh.BindingError(1, "2001:db8::1"), HA, HA),
    lambda: mh.encode_mh(mh.HaHello(1, 1, 1, 1, 129, HA), HA, HA),
    lambda: mh.encode_mh(mh.BindingUpdate(1, options=(options.MobileNetworkPrefix(
        __import__("ipaddress").IPv4Network("10.0.0.0/8")),)), HA, HA),
    lambda: mh.encode_mh(mh.BindingUpdate(1, options=(options.UnknownOption(1, b""),)), HA, HA),
    lambda: mh.encode_mh(mh.BindingUpdate(1, options=(options.UnknownOption(3, b""),)), HA, HA),
    lambda: mh.encode_mh(mh.BindingUpdate(1, options=(options.UnknownOption(99, bytes(256)),)),
                         HA, HA),
    lambda: mh.encode_mh(mh.UnknownMessage(5, bytes(2)), HA, HA),
    lambda: mh.encode_mh(mh.UnknownMessage(99, bytes(3)), HA, HA),
    lambda: mh.encode_mh(mh.BindingInfoAck(1, 1, tuple(options.UnknownOption(99, bytes(200))
                                                       for _ in range(11))), HA, HA),
    lambda: mh.encode_mh("not a message", HA, HA),
    lambda: mh.encode_mh(mh.BindingRefreshRequest(), "2001:db8::1", HA),
    lambda: icmpv6.encode_icmpv6(icmpv6.DhaadRequest(-1), HA, HA),
    lambda: icmpv6.encode_icmpv6(icmpv6.UnknownIcmp(144), HA, HA),
    lambda: icmpv6.encode_icmpv6(icmpv6.RouterAdvertisement(options=(
        icmpv6.LinkLayerAddress(1, b"\x01\x02"),)), HA, HA),
    lambda: icmpv6.encode_icmpv6(icmpv6.MobilePrefixAdvertisement(1, options=(
        icmpv6.PrefixInformation(HA, 200),)), HA, HA),
    lambda: ipv6.build_packet(HA, HA, 135, b"", traffic_class=256),
    lambda: ipv6.build_packet(HA, HA, 135, b"", flow_label=1 << 20),
    lambda: ipv6.build_packet(HA, HA, 135, bytes(70000)),
    lambda: ipv6.build_packet(HA, HA, 135, "text"),
    lambda: ipv6.build_packet(HA, HA, 300, b""),
])
def test_encoders_refuse_bad_values_with_wire_error(encode):
    """Values that do not fit their fields (or would not decode back the same) raise
    WireError from the encoders, never another exception and never wrong bytes."""
    with pytest.raises(WireError):
        encode()


def test_fast_addresses_equal_public_ones():
    """addresses.address_at/address_int (the shortcuts the decoders use) give exactly what the
    public ipaddress API gives: equal, same hash, same text, same packed form."""
    from haha.wire.addresses import address_at, address_int, packed

    for _ in range(200):
        raw = os.urandom(16)
        a, b = address_at(b"xx" + raw, 2), IPv6Address(raw)
        assert (a, hash(a), str(a), a.packed, type(a)) == (b, hash(b), str(b), raw, IPv6Address)
        assert address_int(b) == int(b) and packed(b) == raw


def test_records_maker_builds_the_same_objects():
    """records.maker builds, for every frozen dataclass of the codec, an instance equal to (and
    with the same repr and hash as) the one its constructor builds."""
    import dataclasses

    from haha.wire.records import maker

    for module in (mh, options, icmpv6, ipv6):
        for cls in vars(module).values():
            if (isinstance(cls, type) and dataclasses.is_dataclass(cls)
                    and cls.__module__ == module.__name__):
                values = [f"v{i}" for i in range(len(dataclasses.fields(cls)))]
                a, b = maker(cls)(*values), cls(*values)
                assert (type(a), a, repr(a), hash(a)) == (type(b), b, repr(b), hash(b))
                with pytest.raises(dataclasses.FrozenInstanceError):
                    setattr(a, dataclasses.fields(cls)[0].name, 1)


def test_checksum_of_parts_equals_checksum_of_the_whole():
    """checksum_ip_parts (used by the MH encoder to skip a concatenation) equals checksum_ip of
    the concatenated parts, odd last part included."""
    a, b = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")
    for sizes in ([4, 2, 10], [4, 2, 11], [2, 0, 1], [6], [6, 7]):
        parts = [os.urandom(k) for k in sizes]
        whole = b"".join(parts)
        assert ck.checksum_ip_parts(a, b, 135, len(whole), *parts) == ck.checksum_ip(a, b, 135,
                                                                                      whole)
