"""Status codes are defined once, as int enums (haha.wire.status): the numbers are the RFC's
and the draft's, the codec's constants are the members themselves, and a member behaves as its
number on the wire and in comparisons with a decoded (plain int) status."""

import json
from ipaddress import IPv6Address

import pytest

from haha.wire import mh
from haha.wire.status import BindingAckStatus, BindingErrorStatus, BindingInfoAckStatus

SRC, DST = IPv6Address("2001:db8:1::1"), IPv6Address("2001:db8:20::100")


def test_numbers_are_the_rfcs():
    """RFC 6275 6.1.8 (BA), RFC 3963 4.2 (NEMO BA), RFC 6275 6.1.9 (BE), draft 4.1.4 (BIA)."""
    assert BindingAckStatus.ACCEPTED == 0 and BindingAckStatus.ACCEPTED_PREFIX_DISCOVERY == 1
    assert [s.value for s in BindingAckStatus][2:] == list(range(128, 144))
    assert BindingAckStatus.SEQUENCE_OUT_OF_WINDOW == 135
    assert BindingAckStatus.MR_NOT_PERMITTED == 140
    assert BindingAckStatus.FORWARDING_SETUP_FAILED == 143
    assert (BindingErrorStatus.UNKNOWN_HAO_BINDING, BindingErrorStatus.UNKNOWN_MH_TYPE) == (1, 2)
    assert [s.value for s in BindingInfoAckStatus] == [0, 128, 129, 130]


@pytest.mark.parametrize("prefix, enum", [("BA_", BindingAckStatus),
                                          ("BE_", BindingErrorStatus),
                                          ("BIA_", BindingInfoAckStatus)])
def test_the_codec_constants_are_the_members(prefix, enum):
    """Every ``BA_*``/``BE_*``/``BIA_*`` status constant of haha.wire.mh is the member of the
    same name (no second definition that could drift), and every member has its constant."""
    flags = {"BA_K", "BA_R", "BA_P", "BA_T", "BA_B", "BA_STATUS_NAMES"}
    constants = {name: value for name, value in vars(mh).items()
                 if name.startswith(prefix) and name not in flags and name.isupper()}
    assert {name[len(prefix):] for name in constants} == set(enum.__members__)
    for name, value in constants.items():
        assert value is enum[name[len(prefix):]], name
    assert mh.BA_STATUS_NAMES == {s.value: s.description for s in BindingAckStatus}


def test_descriptions_and_rejection():
    """Each member is described; 128 and above reject; an unknown number is named, not an
    error (a peer may send a value this version does not know)."""
    assert BindingAckStatus.NOT_HOME_AGENT.description == "not home agent for this mobile node"
    assert not BindingAckStatus.ACCEPTED.rejected and BindingAckStatus.PROHIBITED.rejected
    assert BindingInfoAckStatus.REJECTED_OLDER.rejected
    assert not BindingInfoAckStatus.SYNCHRONISED.rejected
    assert BindingAckStatus.describe(129) == "administratively prohibited"
    assert BindingAckStatus.describe(200) == "unknown status 200"
    assert all(s.description for e in (BindingAckStatus, BindingErrorStatus,
                                        BindingInfoAckStatus) for s in e)


def test_a_member_is_its_number():
    """A message built with a member encodes to the same bytes as one built with the number,
    decodes to a plain int equal to the member, and formats and serialises as the number."""
    with_member = mh.BindingAck(BindingAckStatus.SEQUENCE_OUT_OF_WINDOW, 7, 10)
    with_int = mh.BindingAck(135, 7, 10)
    data = mh.encode_mh(with_member, SRC, DST)
    assert data == mh.encode_mh(with_int, SRC, DST)
    decoded = mh.decode_mh(data, SRC, DST)
    assert type(decoded.status) is int
    assert decoded.status == BindingAckStatus.SEQUENCE_OUT_OF_WINDOW and decoded == with_member
    assert f"{BindingAckStatus.PROHIBITED}" == "129" and str(BindingErrorStatus(2)) == "2"
    assert json.dumps({"status": BindingInfoAckStatus.REJECTED}) == '{"status": 128}'
    be = mh.BindingError(BindingErrorStatus.UNKNOWN_MH_TYPE, SRC)
    assert mh.decode_mh(mh.encode_mh(be, DST, SRC), DST, SRC).status == 2
