"""The MH codec's tables follow the profile of each call, even when calls alternate between
profiles (the codec remembers the last profile's tables and must never use them for another)."""

from ipaddress import IPv6Address

from haha.wire import DEFAULT_PROFILE, NumberProfile
from haha.wire.mh import (
    BindingInfoAck,
    UnknownMessage,
    decode_mh,
    encode_mh,
    mh_type_of,
)

LAB = NumberProfile.make(name="lab", hello=240, bir=241, biu=242, bia=243, hasr=244)
SRC, DST = IPv6Address("2001:db8::1"), IPv6Address("2001:db8::2")


def test_alternating_profiles_each_get_their_own_numbers():
    """A BIA encoded under each profile in turn carries that profile's MH type, and decodes as
    a BIA only under the profile it was encoded with (an unknown type under the other)."""
    msg = BindingInfoAck(7)
    for _ in range(3):
        for profile, other in ((DEFAULT_PROFILE, LAB), (LAB, DEFAULT_PROFILE)):
            data = encode_mh(msg, SRC, DST, profile)
            assert data[2] == mh_type_of(msg, profile)
            assert decode_mh(data, SRC, DST, profile) == msg
            assert decode_mh(data, SRC, DST, other) == UnknownMessage(data[2], data[6:])


def test_a_new_profile_object_equal_to_another_is_served_correctly():
    """A freshly made profile with the same numbers as one used before works like it."""
    again = NumberProfile.make(name="lab", hello=240, bir=241, biu=242, bia=243, hasr=244)
    data = encode_mh(BindingInfoAck(9), SRC, DST, LAB)
    assert decode_mh(data, SRC, DST, again) == BindingInfoAck(9)
    assert encode_mh(BindingInfoAck(9), SRC, DST, again) == data
