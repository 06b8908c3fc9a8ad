"""Network-namespace labs for demos, tier-3 tests and benchmarks.

- :mod:`.topology`: :class:`~.topology.Topology` (nodes, links, routes as data; ``ip`` builds
  and removes them) and the standard topologies ``shared_home_link``, ``separate_links``,
  ``no_home_link``.
- :mod:`.ping`: ICMPv6 echo from inside a namespace, without the ``ping`` binary.
- :mod:`.cluster`: daemons as processes watched through their control sockets
  (``DaemonGroup``), and ``LocalCluster``: an unprivileged one on loopback (UDP transport).
- :mod:`.deploy`: ``NetnsDeployment``: real daemons (raw transport, tun backend, ESP) in a
  standard topology's namespaces.
- :mod:`.capture`: ``tcpdump`` in a namespace and an independent IPv6 header-chain walker.
- :mod:`.cli`: the ``haha-lab`` command.
"""
