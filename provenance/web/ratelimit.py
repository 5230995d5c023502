"""A per-client rate limit on uploads: a token bucket per client address.

Each client may start ``per_minute`` uploads in a burst, then one more every
``60 / per_minute`` seconds. The table of clients is bounded (least recently seen
dropped first), so a flood of addresses cannot grow memory without limit.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from provenance.web.errors import WebError

#: Most client addresses remembered at once.
MAX_CLIENTS = 10_000


class RateLimiter:
    """Token buckets keyed by client address. ``per_minute`` <= 0 disables the limit;
    ``clock`` returns seconds (monotonic), a parameter so tests need not sleep."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._max = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        """Take one token for ``client``; raises WebError (RATE_LIMITED, with the
        seconds to wait) when its bucket is empty."""
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = self._clock()
        with self._lock:
            tokens, seen = self._buckets.pop(client, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - seen) * rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = max(1, math.ceil((1.0 - tokens) / rate))
                raise WebError(
                    f"too many uploads from {client}: at most {self.per_minute} a minute;"
                    f" try again in {wait} s",
                    "RATE_LIMITED",
                    retry_after=wait,
                )
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
