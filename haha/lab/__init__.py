"""Network-namespace labs for demos, tier-3 tests and benchmarks.

- :mod:`.topology`: :class:`~.topology.Topology` (nodes, links, routes as data; ``ip`` builds
  and removes them) and the standard topologies ``shared_home_link``, ``separate_links``,
  ``no_home_link``.
- :mod:`.ping`: ICMPv6 echo from inside a namespace, without the ``ping`` binary.
- :mod:`.cli`: the ``haha-lab`` command.
"""
