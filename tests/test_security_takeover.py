"""ESP for address take-over (haha.security.takeover, SecurityAssociationDatabase.add_local):
the holder of a dead home agent's address speaks with its mobile nodes on the dead one's SAs,
above the high-water mark the synchronisation carried, refuses replays below the dead one's top,
and a returning home agent continues past the holder's numbers."""

from ipaddress import IPv6Address as A

import pytest

from haha.core.effects import HoldAddress
from haha.security import SecurityAssociationDatabase
from haha.security.errors import REPLAY, TOO_OLD, SecurityError, SecurityConfigError
from haha.security.keys import derive_pair
from haha.security.sadb import HOME_AGENT, MOBILE_NODE
from haha.security.takeover import MARGIN, TakeoverKeys
from haha.wire.mh import BindingInfoUpdate
from haha.wire.numbers import IPPROTO_MH
from haha.wire.options import BceInfo, EspState

HA1 = A("2001:db8:1::a1")  # the address that moves
HA2 = A("2001:db8:1::a2")
HOA = A("2001:db8:1::100")
COA = A("2001:db8:99::1")
NODE_SECRET = bytes(range(32))
PAYLOAD = b"\x3b\x01\x05\x00" + bytes(12)


def home_agent(address):
    return SecurityAssociationDatabase.from_specs(
        derive_pair(NODE_SECRET, address, HOA, MOBILE_NODE))


def node():
    """The mobile node: pairs with both home agent addresses (its keyring derives them)."""
    return SecurityAssociationDatabase.from_specs(
        [*derive_pair(NODE_SECRET, HOA, HA1, HOME_AGENT)])


def entry():
    return BceInfo(HOA, COA, 0xA000, 7, 10)


def test_local_sa_is_used_for_its_address_and_the_own_one_otherwise():
    """add_local: protect(..., local=HA1) seals with the (HA1, node) SA, which the node
    opens as HA1's; without local (or another local) the own SA is used; remove_local
    forgets it; a second add for the same pair is refused."""
    ha2 = home_agent(HA2)
    for spec in derive_pair(NODE_SECRET, HA1, HOA, MOBILE_NODE):
        ha2.add_local(spec, HA1)
    mn = node()
    peer, nh, data = mn.unprotect(HA1, ha2.protect(HOA, IPPROTO_MH, PAYLOAD, HA1))
    assert (peer, nh, data) == (HA1, IPPROTO_MH, PAYLOAD)
    with pytest.raises(SecurityError):  # HA2's own SA is not HA1's
        mn.unprotect(HA1, ha2.protect(HOA, IPPROTO_MH, PAYLOAD))
    # Inbound: the node's packet to HA1 opens at ha2 as the node's.
    assert ha2.unprotect(HOA, mn.protect(HA1, IPPROTO_MH, PAYLOAD))[0] == HOA
    with pytest.raises(SecurityConfigError):
        ha2.add_local(derive_pair(NODE_SECRET, HA1, HOA, MOBILE_NODE)[0], HA1)
    ha2.remove_local(HA1)
    assert not ha2.has_local(HA1, HOA)
    with pytest.raises(SecurityError):
        ha2.unprotect(HOA, mn.protect(HA1, IPPROTO_MH, PAYLOAD))


def test_survivor_continues_above_the_dead_home_agents_high_water():
    """ha1 sent the node 100 packets and announced its numbers in a BIU; ha2, holding ha1's
    address, seals above them (the node accepts) and refuses the node's old packets replayed
    to it. Without the announced numbers the node would drop ha2's packets as replays, so a
    holder that learned none derives nothing."""
    ha1, mn = home_agent(HA1), node()
    old_bu = None
    for _ in range(100):
        mn.unprotect(HA1, ha1.protect(HOA, IPPROTO_MH, PAYLOAD))
        old_bu = mn.protect(HA1, IPPROTO_MH, PAYLOAD)
        ha1.unprotect(HOA, old_bu)
    keys1 = TakeoverKeys(ha1, HA1, {HOA: NODE_SECRET})
    options = keys1.options([entry()])
    assert options == (EspState(HOA, HA1, 100 + MARGIN, 100),)

    # Without the numbers: the same keys from sequence number 1 are replays to the node, so a
    # holder that learned nothing derives nothing.
    naive = home_agent(HA2)
    for spec in derive_pair(NODE_SECRET, HA1, HOA, MOBILE_NODE):
        naive.add_local(spec, HA1)
    for _ in range(10):
        with pytest.raises(SecurityError) as e:
            mn.unprotect(HA1, naive.protect(HOA, IPPROTO_MH, PAYLOAD, HA1))
        assert e.value.reason in (REPLAY, TOO_OLD)
    uninformed = TakeoverKeys(home_agent(HA2), HA2, {HOA: NODE_SECRET})
    uninformed.apply(HoldAddress(HA1, True))
    assert not uninformed.sadb.has_local(HA1, HOA)

    ha2 = home_agent(HA2)
    keys2 = TakeoverKeys(ha2, HA2, {HOA: NODE_SECRET})
    keys2.learn(BindingInfoUpdate(1, (entry(),), options).options)
    keys2.apply(HoldAddress(HA1, True))
    assert mn.unprotect(HA1, ha2.protect(HOA, IPPROTO_MH, PAYLOAD, HA1))[0] == HA1
    with pytest.raises(SecurityError) as e:
        ha2.unprotect(HOA, old_bu)  # a captured Binding Update replayed to the new holder
    assert e.value.reason in (REPLAY, TOO_OLD)
    assert ha2.unprotect(HOA, mn.protect(HA1, IPPROTO_MH, PAYLOAD))[0] == HOA


def test_learning_keeps_the_highest_numbers():
    """Late or retransmitted BIUs never lower what was learned."""
    keys = TakeoverKeys(home_agent(HA2), HA2, {HOA: NODE_SECRET})
    keys.learn((EspState(HOA, HA1, 500, 40),))
    keys.learn((EspState(HOA, HA1, 300, 60),))
    assert keys.state[(HOA, HA1)] == (500, 60)


def test_returning_home_agent_continues_past_the_holders_numbers():
    """ha2 held ha1's address and used its SAs; at the hand-back it releases them and the
    BIUs giving the bindings back carry its last numbers; ha1, restarted from its own
    (lower) numbers, moves past them and the node accepts its packets again."""
    ha1, mn = home_agent(HA1), node()
    mn.unprotect(HA1, ha1.protect(HOA, IPPROTO_MH, PAYLOAD))
    ha2 = home_agent(HA2)
    keys2 = TakeoverKeys(ha2, HA2, {HOA: NODE_SECRET})
    keys2.learn(TakeoverKeys(ha1, HA1, {HOA: NODE_SECRET}).options([entry()]))
    keys2.apply(HoldAddress(HA1, True))
    for _ in range(MARGIN + 50):
        mn.unprotect(HA1, ha2.protect(HOA, IPPROTO_MH, PAYLOAD, HA1))
    keys2.apply(HoldAddress(HA1, False))
    assert not ha2.has_local(HA1, HOA)
    given_back = keys2.options([entry()])
    # ha1 announced 1 + MARGIN; ha2 sent MARGIN + 50 above it, and announces MARGIN more.
    assert EspState(HOA, HA1, 1 + 3 * MARGIN + 50, 0) in given_back
    restarted = home_agent(HA1)  # its sequence store had 1
    restarted.protect(HOA, IPPROTO_MH, PAYLOAD)
    with pytest.raises(SecurityError):
        mn.unprotect(HA1, restarted.protect(HOA, IPPROTO_MH, PAYLOAD))
    keys1 = TakeoverKeys(restarted, HA1, {HOA: NODE_SECRET})
    keys1.learn(given_back)
    assert mn.unprotect(HA1, restarted.protect(HOA, IPPROTO_MH, PAYLOAD))[0] == HA1


def test_own_address_needs_no_derivation():
    """Holding its own address changes nothing in the SA database."""
    sadb = home_agent(HA1)
    keys = TakeoverKeys(sadb, HA1, {HOA: NODE_SECRET})
    keys.apply(HoldAddress(HA1, True))
    assert keys.counters["sas-derived"] == 0 and not sadb.has_local(HA1, HOA)


def test_adapter_adds_esp_state_to_bius_and_learns_it_from_peers():
    """The home agent adapter appends ESP State options to every BIU it sends (and protects
    messages sent from a held address with that address's SA); a protected BIU received
    from a peer teaches its numbers."""
    from ipaddress import IPv6Network

    from twisted.internet.task import Clock

    from haha.core.effects import Send
    from haha.core.homeagent import HomeAgent
    from haha.core.settings import HomeAgentSettings
    from haha.protocol import HomeAgentAdapter
    from haha.security.policy import SecurityPolicy
    from haha.wire.ipv6 import build_packet, parse_packet
    from haha.wire.mh import BindingAck, decode_mh, encode_mh
    from haha.wire.numbers import IPPROTO_ESP

    peer = A("2001:db8:f::2")
    me = A("2001:db8:f::1")
    peer_secret = bytes(32)
    sadb = SecurityAssociationDatabase.from_specs(
        [*derive_pair(NODE_SECRET, HA2, HOA, MOBILE_NODE), *derive_pair(peer_secret, me, peer)])
    theirs = SecurityAssociationDatabase.from_specs(derive_pair(peer_secret, peer, me))
    sent = []

    class Transport:
        def send(self, packet, interface=None):
            sent.append(packet)

    machine = HomeAgent(HomeAgentSettings(address=HA2, haha_address=me,
                                          home_prefix=IPv6Network("2001:db8:1::/64"),
                                          peers=(peer,), address_takeover=True))
    adapter = HomeAgentAdapter(machine, Transport(), Clock(), machine.settings.numbers,
                               SecurityPolicy(), sadb)
    adapter.takeover_keys = TakeoverKeys(sadb, HA2, {HOA: NODE_SECRET})
    adapter.send_mh(Send(BindingInfoUpdate(9, (entry(),)), me, peer, protect=peer))
    p = parse_packet(sent[-1])
    _, _, payload = theirs.unprotect(me, p.payload)
    biu = decode_mh(payload, me, peer)
    assert biu.options == (EspState(HOA, HA2, MARGIN, 0),)
    # Received: learned.
    adapter.running = True
    news = encode_mh(BindingInfoUpdate(10, (entry(),), (EspState(HOA, HA1, 777, 55),)),
                     peer, me)
    adapter.packet_received(build_packet(peer, me, IPPROTO_ESP,
                                         theirs.protect(me, IPPROTO_MH, news)))
    assert adapter.takeover_keys.state[(HOA, HA1)] == (777, 55)
    # Holding HA1 derives its SAs; a BA sent from HA1 uses them, above 777.
    adapter.takeover_keys.apply(HoldAddress(HA1, True))
    adapter.send_mh(Send(BindingAck(0, 7, 10), HA1, COA, routing_address=HOA, protect=HOA))
    mn = node()
    p = parse_packet(sent[-1])
    assert mn.unprotect(HA1, p.payload)[0] == HA1
    assert int.from_bytes(p.payload[4:8], "big") == 778
