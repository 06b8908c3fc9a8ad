"""The Binding Information Update's fast paths (``options.encode_entries`` and
``options.decode_entries``) give exactly what the general option encoder and decoder give:
the same octets, the same objects, and for bad input the same WireError (reason and message)."""

from ipaddress import IPv4Address, IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from haha.wire import DEFAULT_PROFILE, NumberProfile, WireError
from haha.wire import options as O
from haha.wire.mh import BindingInfoUpdate, decode_mh, encode_mh

LAB = NumberProfile.make(name="lab", opt_ip_address=210, opt_bce_info=211, opt_mnp=212)
PROFILES = st.sampled_from([DEFAULT_PROFILE, LAB])
u16 = st.integers(0, 0xFFFF)
addresses = st.integers(0, 2**128 - 1).map(IPv6Address)
networks = st.builds(lambda a, n: IPv6Network((a, n), strict=False), addresses,
                     st.integers(0, 128))
bce = st.builds(O.BceInfo, addresses, addresses, u16, u16, u16,
                st.lists(networks, max_size=3).map(tuple))
others = st.one_of(
    st.builds(O.BindingRefreshAdvice, u16),
    st.builds(O.MobileNetworkPrefix, networks),
    st.builds(O.IpAddress, st.integers(0, 255), addresses, st.integers(0, 128)),
    st.builds(O.UnknownOption, st.integers(100, 150), st.binary(max_size=20)),
)


class _Address(IPv6Address):
    """An IPv6Address subclass, which the encoders refuse."""


class _Network(IPv6Network):
    """An IPv6Network subclass, which the encoders refuse."""


#: Entries the fast encoder must hand over: fields out of range, IPv4 addresses, subclasses,
#: a prefix that is not an IPv6Network, an option that is not a BceInfo.
odd_entries = st.one_of(
    st.builds(O.BceInfo, addresses, st.just(_Address("2001:db8::9")), u16, u16, u16),
    st.builds(O.BceInfo, addresses, addresses, u16, u16, u16,
              st.just((_Network("2001:db8::/32"),))),
    st.builds(O.BceInfo, addresses, addresses, st.integers(0x10000, 0x20000), u16, u16),
    st.builds(O.BceInfo, st.just(IPv4Address("192.0.2.1")), addresses, u16, u16, u16),
    st.builds(O.BceInfo, addresses, addresses, u16, u16, u16, st.just(("2001:db8::/32",))),
    st.builds(O.BceInfo, addresses, addresses, u16, u16, u16, st.just(tuple(
        IPv6Network(f"2001:db8:{i:x}::/48") for i in range(256)))),
    others,
)


def _outcome(fn, *args):
    try:
        return "ok", fn(*args)
    except WireError as e:
        return "error", e.reason, str(e)


def _general_encode(entries, options, offset, profile):
    return O.encode_options((*entries, *options), offset, profile)


def _general_decode(data, pos, end, table, profile):
    entries, rest = [], []
    for o in O.decode_options(data, pos, end, table, profile):
        (entries if type(o) is O.BceInfo else rest).append(o)
    return tuple(entries), tuple(rest)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.one_of(bce, bce, odd_entries), max_size=4).map(tuple),
       options=st.lists(others, max_size=3).map(tuple), offset=st.integers(6, 40),
       profile=PROFILES)
def test_encoder_matches_the_general_encoder(entries, options, offset, profile):
    """Any entries and options at any starting offset: the same octets, or the same error."""
    assert _outcome(O.encode_entries, entries, options, offset, profile) == _outcome(
        _general_encode, entries, options, offset, profile)


def _option_starts(data):
    """Offsets of the options (padding included) from offset 8, as far as they can be walked
    (inserted padding may have split an option)."""
    starts, pos = [], 8
    while pos < len(data):
        starts.append(pos)
        if data[pos] == 0:
            pos += 1
        elif pos + 1 < len(data):
            pos += 2 + data[pos + 1]
        else:
            break
    return starts or [8]


@st.composite
def _areas(draw):
    """A BIU option area as the encoder writes it (from valid entries and options, sometimes
    with Pad1s and PadNs spread in), then possibly spoilt: octets changed, cut short."""
    profile = draw(PROFILES)
    entries = draw(st.lists(bce, max_size=3).map(tuple))
    options = draw(st.lists(others, max_size=2).map(tuple))
    data = bytearray(bytes(8) + O.encode_options((*entries, *options), 8, profile))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(8, len(data)))
        data[at:at] = draw(st.sampled_from([b"\x00", b"\x01\x00", b"\x01\x01\x00",
                                            b"\x01\x03\x00\x00\x00"]))
    starts = _option_starts(data)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 4]))):
        if len(data) > 8:
            # Often a type or length octet (the structure), otherwise any octet.
            if draw(st.booleans()):
                at = draw(st.sampled_from(starts)) + draw(st.integers(0, 1))
            else:
                at = draw(st.integers(8, len(data) - 1))
            if at < len(data):
                data[at] = draw(st.one_of(st.integers(0, 255), st.sampled_from(
                    [0, 1, 2, 18, 20, 40, 42, profile.opt_mnp, profile.opt_bce_info])))
    end = draw(st.integers(8, len(data))) if draw(st.booleans()) else len(data)
    return bytes(data), end, profile


@settings(max_examples=500, deadline=None)
@given(area=_areas())
def test_decoder_matches_the_general_decoder(area):
    """Well-formed, padded, spoilt and truncated option areas: the same entries and other
    options, or the same error."""
    data, end, profile = area
    table = O.decoders_for(profile)
    assert _outcome(O.decode_entries, data, 8, end, table, profile) == _outcome(
        _general_decode, data, 8, end, table, profile)


def test_owed_prefixes_cut_off_or_replaced_are_refused():
    """A BCE Information option promising more prefixes than follow, or followed by another
    option where a prefix is owed, is refused as the general decoder refuses it."""
    entry = O.BceInfo(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), 0x8000, 1, 2,
                      (IPv6Network("2001:db8:100::/48"), IPv6Network("2001:db8:200::/48")))
    good = encode_mh(BindingInfoUpdate(5, (entry,)), IPv6Address("::1"), IPv6Address("::2"))
    table = O.decoders_for(DEFAULT_PROFILE)
    for end in range(8, len(good)):
        assert _outcome(O.decode_entries, good, 8, end, table, DEFAULT_PROFILE) == _outcome(
            _general_decode, good, 8, end, table, DEFAULT_PROFILE)
    swapped = bytearray(good)
    swapped[76] = DEFAULT_PROFILE.opt_ip_address  # the second MNP option becomes an IP Address
    outcome = _outcome(O.decode_entries, bytes(swapped), 8, len(good), table, DEFAULT_PROFILE)
    assert outcome[:2] == ("error", "bad-value")
    assert decode_mh(good, IPv6Address("::1"), IPv6Address("::2")).entries == (entry,)


def test_every_octet_changed_and_every_cut_is_read_as_the_general_decoder_reads_it():
    """BIU option areas with a prefix-less entry and an entry with two prefixes, alone and
    followed by another option (both profiles): every octet set to each telling value (types,
    lengths, counts, 0, 1, 255, its neighbours) and every shorter end gives the general
    decoder's result or error."""
    entries = (
        O.BceInfo(IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2"), 0x8000, 1, 2),
        O.BceInfo(IPv6Address("2001:db8::3"), IPv6Address("2001:db8::4"), 0xC400, 3, 4,
                  (IPv6Network("2001:db8:100::/48"), IPv6Network("2001:db8:200::/56"))),
    )
    for profile, more in ((DEFAULT_PROFILE, ()), (LAB, ()),
                          (DEFAULT_PROFILE, (O.BindingRefreshAdvice(9),))):
        data = bytes(8) + O.encode_options((*entries, *more), 8, profile)
        table = O.decoders_for(profile)
        telling = {0, 1, 2, 3, 18, 19, 20, 21, 40, 41, 42, 255, profile.opt_mnp,
                   profile.opt_bce_info, profile.opt_ip_address}
        for at in range(8, len(data)):
            for value in telling | {(data[at] + 1) & 0xFF, (data[at] - 1) & 0xFF}:
                bad = data[:at] + bytes((value,)) + data[at + 1:]
                assert _outcome(O.decode_entries, bad, 8, len(bad), table, profile) == _outcome(
                    _general_decode, bad, 8, len(bad), table, profile), (at, value)
        for end in range(8, len(data) + 1):
            for cut in (data, data[:end]):  # octets beyond the end, or none
                assert _outcome(O.decode_entries, cut, 8, end, table, profile) == _outcome(
                    _general_decode, cut, 8, end, table, profile), end
