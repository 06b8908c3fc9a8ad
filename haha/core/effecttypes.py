"""Type names for what the machines return: :data:`Effect` is any record of
:mod:`haha.core.effects`, :data:`Effects` the list a machine appends them to."""

from typing import Union

from .effects import (
    AdvertisePrefix,
    AnnounceHome,
    DrainComplete,
    Event,
    HoldAddress,
    InstallRoute,
    LeaveComplete,
    ProxyNd,
    RemoveRoute,
    Send,
    SendIcmp,
    TunnelDown,
    TunnelUp,
)

Effect = Union[Send, SendIcmp, InstallRoute, RemoveRoute, ProxyNd, AdvertisePrefix, HoldAddress,
               TunnelUp, TunnelDown, AnnounceHome, DrainComplete, LeaveComplete, Event]
Effects = list[Effect]
