"""haha: the Inter Home Agents Protocol (draft-wakikawa-mip6-nemo-haha-spec-00) for Mobile IPv6 and NEMO.

Layers, from the bottom: ``haha.wire`` (pure codecs), ``haha.core`` (sans-IO state machines),
``haha.io`` / ``haha.backends`` / ``haha.discovery`` (the operating system behind seams),
``haha.protocol`` and ``haha.service`` (Twisted), ``haha.tap`` and ``twisted/plugins`` (twistd).
"""

__version__ = "0.1.0"
