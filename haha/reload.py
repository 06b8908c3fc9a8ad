"""SIGHUP: re-read a home agent's configuration and apply what may change while it runs.

What routing daemons do on SIGHUP. Applied at once:

- mobile node keys (``[node-keys]``, ``node-key-dir``): a node added is served (its SA pair is
  derived when it first shows up, as at start-up), a node removed loses its pair (its binding,
  if any, lives until its lifetime ends: it can no longer refresh it), a node whose key file
  now holds another secret is re-keyed (its pair derived again from the new secret);
- peer keys (``[peer-keys]``) of the peers already configured: a changed secret re-keys the
  pair (with this run's boot epoch).

Everything else (peers added or removed, addresses, timers, transport, backend...) takes effect
at the next restart; the log line names what differs. A file that does not load is refused as
at start-up (its located one-line error is logged) and the daemon runs on unchanged.
"""

from collections.abc import Callable, Sequence
from typing import Any

from .config import HomeAgentConfig
from .logging import logger
from .security import keys as _keys
from .security.keyring import load_located as _secret, node_key_files
from .security.sadb import HOME_AGENT, MOBILE_NODE, SaSpec, SecurityAssociationDatabase

log = logger("haha.reload")

#: Fields compared to say what needs a restart (security is handled by keys).
_RESTART_FIELDS = ("address", "haha_address", "home_prefix", "configuration", "home_interface",
                   "preference", "lifetime", "hello_interval", "max_binding_lifetime",
                   "boot_wait", "take_over", "drain_on_stop", "drain_timeout", "drain_mode",
                   "switch_message", "implicit_mode", "mobile_router_support",
                   "router_advertisements", "router_lifetime", "mobile_routers", "peers",
                   "authorised", "discovery", "backend", "numbers", "transport", "control",
                   "log_level")


def _same_keys(sadb: SecurityAssociationDatabase, specs: Sequence[SaSpec]) -> bool:
    rows = {(r["direction"], r["spi"]) for r in sadb.describe()
            if r["peer"] == str(specs[0].peer)}
    return rows == {(s.direction, f"0x{s.spi:08x}") for s in specs}


def _reload_configured(sadb: SecurityAssociationDatabase, group: Any,
                       nodes: dict[Any, bytes], summary: dict[str, list[str]]) -> None:
    """The configured nodes of the home agent's node group (haha.security.nodegroup) become
    ``nodes``: a node removed or re-keyed loses its SAs, derived again on its next contact
    (re-keyed) or never (removed)."""
    old = group.configured()
    for hoa in sorted(set(old) - set(nodes)):
        sadb.remove_peer(hoa)
        summary["nodes-removed"].append(str(hoa))
    for hoa, secret in sorted(nodes.items()):
        if hoa not in old:
            summary["nodes-added"].append(str(hoa))
        elif old[hoa] != secret:
            sadb.remove_peer(hoa)
            summary["rekeyed"].append(str(hoa))
    group.set_configured(nodes)


def reload_home_agent(service: Any, load: Callable[[str], HomeAgentConfig]
                      ) -> dict[str, list[str]]:
    """Re-read ``service.config.path`` with ``load`` and apply the keys (module docstring).
    Returns a summary dict (also logged). Raises ConfigError when the file does not load or a
    key file cannot be read; nothing is changed then."""
    old = service.config
    new = load(old.path)
    summary: dict[str, list[str]] = {"nodes-added": [], "nodes-removed": [], "rekeyed": [],
                                     "restart-needed": []}
    sadb = service.sadb
    if sadb is not None and new.security.mode == old.security.mode == "esp":
        epoch = getattr(sadb, "epoch", None)
        # Read every secret first: a bad file changes nothing.
        nodes = {hoa: _secret(kf, "mobile node key") for hoa, kf in node_key_files(new).items()}
        peers = {p: _secret(kf, "peer key") for p, kf in new.security.peer_keys.items()
                 if p in old.peers}
        group = getattr(service.adapter, "node_group", None)
        current: set[Any] = set()
        if group is not None:  # the group derives nodes' pairs on first contact
            _reload_configured(sadb, group, nodes, summary)
            nodes = {}
        else:
            current = {p for p in sadb.peers() if sadb.role_of(p) == MOBILE_NODE}
        for hoa in sorted(current - set(nodes)):
            sadb.remove_peer(hoa)
            summary["nodes-removed"].append(str(hoa))
        for hoa, secret in sorted(nodes.items()):
            specs = _keys.derive_pair(secret, old.address, hoa, MOBILE_NODE)
            if hoa in current:
                if _same_keys(sadb, specs):
                    continue
                sadb.remove_peer(hoa)
                summary["rekeyed"].append(str(hoa))
            else:
                summary["nodes-added"].append(str(hoa))
            for spec in specs:
                sadb.add(spec)
        # The raw transport knows a configured peer by its inbound SPI (docs/io.md, "Input
        # queues"); other transports have no update_peer.
        update_peer = getattr(service.transport, "update_peer", None)
        for peer, secret in sorted(peers.items()):
            specs = _keys.derive_pair(secret, old.haha_address, peer, HOME_AGENT, epoch=epoch)
            if sadb.has_peer(peer) and _same_keys(sadb, specs):
                continue
            sadb.remove_peer(peer)
            for spec in specs:
                sadb.add(spec)
            if update_peer is not None:
                update_peer(peer, [s.spi for s in specs if s.direction == "in"])
            summary["rekeyed"].append(str(peer))
    for name in _RESTART_FIELDS:
        if getattr(old, name) != getattr(new, name):
            summary["restart-needed"].append(name.replace("_", "-"))
    if old.security.mode != new.security.mode or set(old.security.peer_keys) != set(
            new.security.peer_keys):
        summary["restart-needed"].append("security")
    log.info("SIGHUP: {path} re-read: nodes added {added}, removed {removed}, re-keyed "
             "{rekeyed}; needs a restart to apply: {restart}", path=old.path,
             added=summary["nodes-added"] or "none", removed=summary["nodes-removed"] or "none",
             rekeyed=summary["rekeyed"] or "none",
             restart=summary["restart-needed"] or "nothing")
    return summary


__all__ = ["node_key_files", "reload_home_agent"]
