"""Forwarding backends (:class:`haha.interfaces.IForwardingBackend`, see ``docs/io.md``).

- :mod:`.null`: records intent, changes nothing.
- :mod:`.tun`: user-space RFC 2473 tunnelling through a TUN device (any kernel); also the mobile
  node's end of the tunnel (:class:`~.tun.MobileTunnel`).
- :mod:`.netlink`: the kernel's ip6tnl tunnels (needs ip6_tunnel; refuses clearly without it).
- :mod:`.netsys`: the netlink seam (pyroute2) and its in-memory twin.
- :mod:`.context`: :class:`~.context.BackendContext`, what a backend plugin's factory receives
  (its section, the reactor, the daemon's transport and ownership, the OS seams); backends are
  built from it in one step.
"""
