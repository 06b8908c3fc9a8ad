"""Property tests: every message, option, ICMPv6 message and packet survives encode/decode.

Hypothesis draws values over each field's whole range; ``decode(encode(x)) == x`` must hold, and
the encoding must always be a whole number of 8-octet units with a valid checksum.
"""

from ipaddress import IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from haha.wire import DEFAULT_PROFILE, NumberProfile
from haha.wire import icmpv6 as I
from haha.wire import mh as M
from haha.wire import options as O
from haha.wire.checksum import verify_ip
from haha.wire.ipv6 import Packet, build_packet, parse_packet

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
addresses = st.integers(0, 2**128 - 1).map(IPv6Address)


@st.composite
def networks(draw):
    plen = draw(st.integers(0, 128))
    return IPv6Network((draw(addresses), plen), strict=False)


_KNOWN_OPTIONS = {0, 1, 2, 3, 4, 5, DEFAULT_PROFILE.opt_mnp, DEFAULT_PROFILE.opt_ip_address,
                  DEFAULT_PROFILE.opt_bce_info, DEFAULT_PROFILE.opt_binding_digest,
                  DEFAULT_PROFILE.opt_esp_state}

plain_options = st.one_of(
    st.builds(O.BindingRefreshAdvice, u16),
    st.builds(O.AlternateCareOfAddress, addresses),
    st.builds(O.NonceIndices, u16, u16),
    st.builds(O.BindingAuthorizationData, st.binary(min_size=0, max_size=24)),
    st.builds(O.MobileNetworkPrefix, networks()),
    st.builds(O.IpAddress, u8, addresses, st.integers(0, 128)),
    st.builds(O.BindingDigest, st.integers(0, (1 << 32) - 1), st.integers(0, (1 << 64) - 1)),
    st.builds(O.EspState, addresses, addresses, u32, u32),
    st.builds(O.UnknownOption, u8.filter(lambda t: t not in _KNOWN_OPTIONS),
              st.binary(max_size=30)),
)
bce = st.builds(O.BceInfo, addresses, addresses, u16, u16, u16,
                st.lists(networks(), max_size=3).map(tuple))
any_options = st.lists(st.one_of(plain_options, bce), max_size=5).map(tuple)

messages = st.one_of(
    st.builds(M.BindingRefreshRequest, any_options),
    st.builds(M.BindingUpdate, u16, u16, u16, any_options),
    st.builds(M.BindingAck, u8, u16, u16, u8, any_options),
    st.builds(M.BindingError, u8, addresses, any_options),
    st.builds(M.HomeAgentSwitch, st.lists(addresses, max_size=6).map(tuple), any_options),
    st.builds(M.HaHello, u16, u16, u16, u16, st.integers(0, 128), addresses, any_options),
    st.builds(M.BindingInfoRequest, u16, any_options),
    st.builds(M.BindingInfoUpdate, u16, st.lists(bce, max_size=4).map(tuple),
              st.lists(plain_options, max_size=3).map(tuple)),
    st.builds(M.BindingInfoAck, u16, u16, any_options),
    st.builds(M.HaSwitchRequest, any_options),
    st.builds(M.UnknownMessage,
              u8.filter(lambda t: t not in (0, 5, 6, 7, 12, 200, 201, 202, 203, 204)),
              st.integers(0, 20).flatmap(lambda k: st.binary(min_size=8 * k + 2,
                                                             max_size=8 * k + 2))),
)

nd_options = st.one_of(
    st.builds(I.HomeAgentInformation, u16, u16),
    st.builds(I.PrefixInformation, addresses, st.integers(0, 128), u8, u32, u32),
    st.builds(I.AdvertisementInterval, u32),
    st.builds(I.Mtu, u32),
    st.builds(I.LinkLayerAddress, st.sampled_from([1, 2]), st.binary(min_size=6, max_size=6)),
    st.builds(I.UnknownNdOption, u8.filter(lambda t: t not in (1, 2, 3, 5, 7, 8)),
              st.integers(0, 4).map(lambda k: bytes(8 * k + 6))),
)
nd_list = st.lists(nd_options, max_size=5).map(tuple)

icmp_messages = st.one_of(
    st.builds(I.DhaadRequest, u16, st.booleans()),
    st.builds(I.DhaadReply, u16, st.lists(addresses, max_size=8).map(tuple), st.booleans()),
    st.builds(I.MobilePrefixSolicitation, u16),
    st.builds(I.MobilePrefixAdvertisement, u16, u16, nd_list),
    st.builds(I.RouterAdvertisement, u8, u8, u16, u32, u32, nd_list),
    st.builds(I.NeighborSolicitation, addresses, nd_list),
    st.builds(I.NeighborAdvertisement, addresses, u32, nd_list),
    st.builds(I.UnknownIcmp, u8.filter(lambda t: t not in (4, 134, 135, 136, 144, 145, 146, 147)),
              u8, st.binary(max_size=40)),
)


@settings(max_examples=400, deadline=None)
@given(messages, addresses, addresses)
def test_mobility_header_round_trip(message, src, dst):
    """Every Mobility Header message (with any options, padding inserted by the encoder) comes
    back equal, in a multiple of 8 octets whose Header Len and checksum are right."""
    data = M.encode_mh(message, src, dst)
    assert len(data) % 8 == 0 and data[1] == len(data) // 8 - 1
    assert verify_ip(src, dst, 135, data)
    assert M.decode_mh(data, src, dst) == message


@settings(max_examples=150, deadline=None)
@given(messages, addresses, addresses, st.sampled_from([220, 230, 250]))
def test_round_trip_under_another_profile(message, src, dst, hello):
    """The round trip holds under a profile that moves HELLO, and the type byte follows it."""
    profile = NumberProfile.make(hello=hello)
    if type(message) is M.UnknownMessage and message.mh_type == hello:
        return
    data = M.encode_mh(message, src, dst, profile)
    assert M.decode_mh(data, src, dst, profile) == message
    if type(message) is M.HaHello:
        assert data[2] == hello


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(plain_options, bce), max_size=6).map(tuple), st.integers(0, 7))
def test_options_alone_round_trip_at_any_offset(opts, offset):
    """encode_options/decode_options round trip from any starting offset, and every option
    lands on its alignment xn+y counted from the start of the Mobility Header."""
    data = bytes(offset) + O.encode_options(opts, offset, DEFAULT_PROFILE)
    assert len(data) % 8 == 0
    table = O.decoders_for(DEFAULT_PROFILE)
    assert O.decode_options(data, offset, len(data), table, DEFAULT_PROFILE) == opts
    # alignment: walk the TLVs and check each known option's position
    align = {2: (2, 0), 3: (8, 6), 4: (2, 0), 5: (8, 2), 6: (8, 4), 200: (8, 4), 201: (8, 2)}
    pos = offset
    while pos < len(data):
        t = data[pos]
        if t == 0:
            pos += 1
            continue
        if t in align:
            x, y = align[t]
            assert pos % x == y, (t, pos)
        pos += 2 + data[pos + 1]


@settings(max_examples=400, deadline=None)
@given(icmp_messages, addresses, addresses)
def test_icmpv6_round_trip(message, src, dst):
    """Every ICMPv6 message (DHAAD, MPS/MPA, RA, NS/NA, unknown) comes back equal, with a
    checksum that verifies."""
    data = I.encode_icmpv6(message, src, dst)
    assert verify_ip(src, dst, 58, data)
    assert I.decode_icmpv6(data, src, dst) == message


@settings(max_examples=300, deadline=None)
@given(addresses, addresses, st.sampled_from([6, 17, 41, 50, 58, 59, 135]),
       st.binary(max_size=200), u8, st.none() | addresses, st.none() | addresses, u8,
       st.integers(0, 0xFFFFF))
def test_packet_round_trip(src, dst, nh, payload, hlim, hao, rh2, tc, flow):
    """build_packet/parse_packet round trip with and without the Home Address option and the
    type 2 routing header."""
    raw = build_packet(src, dst, nh, payload, hlim, hao, rh2, tc, flow)
    assert parse_packet(raw) == Packet(src, dst, nh, payload, hlim, hao, rh2, tc, flow)


@settings(max_examples=200, deadline=None)
@given(messages, addresses, addresses, st.none() | addresses, st.none() | addresses)
def test_message_in_packet_round_trip(message, src, dst, hao, rh2):
    """A message encoded with the pseudo-header of RFC 6275 6.1.1 (home address, routing
    address) and carried in a packet decodes back from Packet.source/destination."""
    payload = M.encode_mh(message, hao or src, rh2 or dst)
    p = parse_packet(build_packet(src, dst, 135, payload, 64, hao, rh2))
    assert M.decode_mh(p.payload, p.source, p.destination) == message
