"""Binding synchronisation between home agents (draft 5.1, 5.2; docs/protocol.md 6.1-6.6), in
and out in one place: :mod:`.outbound` keeps what this home agent owes each peer (BIUs, bulk
answers, BIRs, retransmission), :mod:`.inbound` applies what the peers send (BIU, BIA, BIR)."""

from .inbound import SyncReceiver
from .outbound import (
    SINGLE_RETRIES,
    UNSPECIFIED,
    Outstanding,
    PeerSync,
    Request,
    Sync,
    entry_size,
)

__all__ = ["SINGLE_RETRIES", "UNSPECIFIED", "Outstanding", "PeerSync", "Request", "Sync",
           "SyncReceiver", "entry_size"]
