"""The Binding Information Update's fast path (``options.encode_entries``) gives exactly what
the general option encoder gives: the same octets, and for bad input the same WireError
(reason and message)."""

from ipaddress import IPv4Address, IPv6Address, IPv6Network

from hypothesis import given, settings
from hypothesis import strategies as st

from haha.wire import DEFAULT_PROFILE, NumberProfile, WireError
from haha.wire import options as O

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


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.one_of(bce, bce, odd_entries), max_size=4).map(tuple),
       options=st.lists(others, max_size=3).map(tuple), offset=st.integers(6, 40),
       profile=PROFILES)
def test_encoder_matches_the_general_encoder(entries, options, offset, profile):
    """Any entries and options at any starting offset: the same octets, or the same error."""
    assert _outcome(O.encode_entries, entries, options, offset, profile) == _outcome(
        _general_encode, entries, options, offset, profile)

