"""twistd and haha plugins: `twistd haha`, `twistd haha-mn`, built-in backends and discovery.

Kept tiny: nothing heavy is imported until a plugin is used. A backend's factory
(``module:build``) takes one :class:`haha.backends.context.BackendContext`.
"""

from twisted.application.service import ServiceMaker

from haha.plugins import BackendPlugin, DiscoveryPlugin

haha = ServiceMaker(
    "haha", "haha.tap", "HAHA home agent (Mobile IPv6 / NEMO, Inter Home Agents Protocol)", "haha"
)
haha_mn = ServiceMaker(
    "haha-mn", "haha.tap_mn", "Mobile IPv6 mobile node / NEMO mobile router", "haha-mn"
)

null_backend = BackendPlugin(
    "null", "records forwarding intent, changes nothing (unprivileged runs, embedding)",
    "haha.backends.null:build",
)
tun_backend = BackendPlugin(
    "tun", "user-space IPv6-in-IPv6 tunnelling through a TUN device (any Linux kernel)",
    "haha.backends.tun:build",
)
netlink_backend = BackendPlugin(
    "netlink", "kernel ip6tnl tunnels, routes and proxy ND through netlink (needs ip6_tunnel)",
    "haha.backends.netlink:build",
)

static_discovery = DiscoveryPlugin(
    "static", "the peers listed in [peers] static (draft 5.4)", "haha.discovery.static:build"
)
dns_discovery = DiscoveryPlugin(
    "dns", "peers from DNS AAAA records, resolved periodically", "haha.discovery.dns:build"
)
link_discovery = DiscoveryPlugin(
    "link", "peers from Router Advertisements with the H flag on the home link",
    "haha.discovery.link:build",
)
