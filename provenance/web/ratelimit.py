"""Per-client rate limits of `prov web`: a token bucket per client address
(`provenance.core.buckets.TokenBuckets`), one table for uploads (--uploads-per-minute)
and one for the pages and API calls that read the log or the device registry
(--reads-per-minute).

Each client may make ``per_minute`` of them in a burst, then one more every
``60 / per_minute`` seconds. The table of clients is bounded (least recently seen
dropped first), so a flood of addresses cannot grow memory without limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from provenance.core.buckets import MAX_CLIENTS, TokenBuckets
from provenance.web.errors import WebError


class RateLimiter(TokenBuckets):
    """Token buckets keyed by client address. ``per_minute`` <= 0 disables the limit;
    ``clock`` returns seconds (monotonic), a parameter so tests need not sleep;
    ``what``: what is counted, for the refusal's message ("uploads"); ``flag``: the
    option that sets ``per_minute``, named in the message when given."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
        what: str = "uploads",
        flag: str = "",
    ) -> None:
        super().__init__(per_minute, clock, max_clients)
        self.what = what
        self.flag = flag

    def check(self, client: str) -> None:
        """Take one token for ``client``; raises WebError (RATE_LIMITED, with the
        seconds to wait) when its bucket is empty."""
        wait = self.take(client)
        if wait:
            seconds = max(1, math.ceil(wait))
            limit = f" (this server's limit, {self.flag})" if self.flag else ""
            raise WebError(
                f"too many {self.what} from {client}: at most {self.per_minute} a minute"
                f"{limit}; try again in {seconds} s",
                "RATE_LIMITED",
                retry_after=seconds,
            )
