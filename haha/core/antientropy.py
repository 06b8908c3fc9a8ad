"""Anti-entropy between home agents: binding digests in HELLO (docs/protocol.md, "Binding
digests").

Synchronisation pushes every change to every live peer, retransmitting until acknowledged; what
it cannot see is a peer that was never told (one side declared the other dead while the other
never doubted it, then the link healed) or state lost some other way. So each HELLO carries a
:class:`~haha.wire.options.BindingDigest`: the count of the sender's primary bindings and the XOR
of their 64-bit digests, which the binding cache keeps up to date with every change. A receiver
computes the same pair over its copies naming the sender as primary. The two differ briefly in
normal operation (a BIU still on its way; a copy outlives its primary by up to one 4-second
lifetime unit), so only a difference that every HELLO has shown for :attr:`AntiEntropy.delay`
seconds counts; the receiver then asks the sender for all its bindings (a bulk BIR), whose
answer refreshes what is stale and sweeps what the sender no longer holds. At most one repair
per peer every :attr:`AntiEntropy.holdoff` seconds, so continuous churn costs a bounded amount.
"""

from ipaddress import IPv6Address

#: A binding digest: (count of primary bindings, XOR of their 64-bit digests).
Digest = tuple[int, int]

#: Seconds a difference must persist (seen in every HELLO) before a repair: longer than a
#: lifetime unit (4 s) plus the first BIU retransmissions.
DELAY = 10.0
#: Seconds between two repairs of the same peer.
HOLDOFF = 60.0


class AntiEntropy:
    """When to repair each peer's copies (module docstring). Memory: two entries per peer."""

    def __init__(self, delay: float = DELAY, holdoff: float = HOLDOFF) -> None:
        self.delay = delay
        self.holdoff = holdoff
        self._since: dict[IPv6Address, float] = {}  # peer -> when its digests started to disagree with our copies
        self._repaired: dict[IPv6Address, float] = {}  # peer -> when we last asked it for everything

    def heard(self, peer: IPv6Address, theirs: Digest | None, mine: Digest,
              now: float) -> bool:
        """A HELLO from ``peer`` carried ``theirs`` (``(count, digest)``, or None when it sends
        no digest); ``mine`` is the pair over our copies naming it. True when it is time to ask
        ``peer`` for all its bindings."""
        if theirs is None or theirs == mine:
            self._since.pop(peer, None)
            return False
        since = self._since.setdefault(peer, now)
        if now - since < self.delay:
            return False
        last = self._repaired.get(peer)
        if last is not None and now - last < self.holdoff:
            return False
        self._repaired[peer] = now
        del self._since[peer]
        return True

    def forget(self, peer: IPv6Address) -> None:
        """``peer`` is dead or gone: start afresh when it returns."""
        self._since.pop(peer, None)
        self._repaired.pop(peer, None)
