"""At most one log line per key per interval; the rest only counted.

What unauthenticated input can make the daemon say (a refused discovery proposal, say) must not
let a flood fill the log: :class:`LogThrottle` lets the first line for a key through, then
counts the others until ``interval`` seconds have passed, and reports how many it held back
with the next line it lets through. Keys are bounded (``max_keys``, least recently seen
forgotten first). Time is passed in.
"""

from collections import OrderedDict
from collections.abc import Hashable


class LogThrottle:
    """``allow(key, now)`` returns None (do not log: counted) or the number of lines held back
    for ``key`` since the last one logged (log now, and say so when it is not 0)."""

    def __init__(self, interval: float = 60.0, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.suppressed = 0  # lines held back in total
        self._keys: OrderedDict[Hashable, list] = OrderedDict()  # key -> [time logged, held back since]

    def allow(self, key: Hashable, now: float) -> int | None:
        entry = self._keys.get(key)
        if entry is not None and now < entry[0] + self.interval:
            entry[1] += 1
            self.suppressed += 1
            return None
        held = entry[1] if entry is not None else 0
        self._keys[key] = [now, 0]
        self._keys.move_to_end(key)
        if len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return held
