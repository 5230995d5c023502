"""A per-client rate limit on uploads: a token bucket per client address
(`provenance.core.buckets.TokenBuckets`).

Each client may start ``per_minute`` uploads in a burst, then one more every
``60 / per_minute`` seconds. The table of clients is bounded (least recently seen
dropped first), so a flood of addresses cannot grow memory without limit.
"""

from __future__ import annotations

import math

from provenance.core.buckets import TokenBuckets
from provenance.web.errors import WebError


class RateLimiter(TokenBuckets):
    """Token buckets keyed by client address. ``per_minute`` <= 0 disables the limit;
    ``clock`` returns seconds (monotonic), a parameter so tests need not sleep."""

    def check(self, client: str) -> None:
        """Take one token for ``client``; raises WebError (RATE_LIMITED, with the
        seconds to wait) when its bucket is empty."""
        wait = self.take(client)
        if wait:
            seconds = max(1, math.ceil(wait))
            raise WebError(
                f"too many uploads from {client}: at most {self.per_minute} a minute;"
                f" try again in {seconds} s",
                "RATE_LIMITED",
                retry_after=seconds,
            )
