"""The load generator's node identities (:mod:`haha.lab.load`, module docstring "Identities").

Node ``i`` has home address ``2001:db8:1::1:0 + i`` and, in worker ``w``, a care-of address in
``2001:db8:21:w::/64``. Its secret is the node-group derivation of the run secret and its home
address (:func:`haha.security.keys.derive_node_secret`); :func:`write_node_keys` writes the same
secrets as one key file per node for a home agent's ``node-key-dir``.
"""

from __future__ import annotations

import os
from ipaddress import IPv6Address, IPv6Network

from ..security.keys import derive_node_secret

FIRST_HOME = int(IPv6Address("2001:db8:1::1:0"))
CARE_OF_PREFIX = "2001:db8:21:{:x}::/64"
BINDING_LIFETIME = 3600  # the home agents' maximum: no refresh falls inside a benchmark


def home_address(i: int) -> IPv6Address:
    """The home address of node ``i``."""
    return IPv6Address(FIRST_HOME + i)


def care_of_prefix(worker: int) -> IPv6Network:
    """The /64 the care-of addresses of worker ``worker``'s nodes are taken from."""
    return IPv6Network(CARE_OF_PREFIX.format(worker))


def node_secret(run_secret: bytes, hoa: IPv6Address | str) -> bytes:
    """The 32-octet derivation secret of the node with home address ``hoa``."""
    return derive_node_secret(run_secret, IPv6Address(hoa))


def write_node_keys(directory: str | os.PathLike[str], run_secret: bytes, n_nodes: int) -> None:
    """One ``HOME-ADDRESS.key`` file (mode 0600) per node, for a home agent's node-key-dir."""
    os.makedirs(directory, exist_ok=True)
    for i in range(n_nodes):
        hoa = home_address(i)
        fd = os.open(os.path.join(directory, f"{hoa}.key"),
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, node_secret(run_secret, hoa).hex().encode() + b"\n")
        finally:
            os.close(fd)


def split(n_nodes: int, workers: int) -> list[tuple[int, int]]:
    """``[(first, count)]`` of each worker: the nodes spread as evenly as possible."""
    base, extra = divmod(n_nodes, workers)
    out, first = [], 0
    for w in range(workers):
        count = base + (1 if w < extra else 0)
        out.append((first, count))
        first += count
    return out
