"""The heart of haha: sans-IO state machines for home agents and mobile nodes.

No sockets, no reactor, no clock: every entry point takes ``now`` (seconds, a float from any
monotonic clock), randomness comes from an injected :class:`random.Random`, inbound messages
arrive as :class:`~haha.core.effects.Inbound` records holding decoded :mod:`haha.wire`
messages, and everything the machines want done comes back as a list of effects
(:mod:`haha.core.effects`). See ``docs/core.md``.
"""
