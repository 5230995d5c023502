"""Token buckets keyed by client: ``per_minute`` tokens in a burst, refilled at
``per_minute`` a minute. Used by `prov web`'s upload rate (`provenance.web.ratelimit`)
and by the server's budgets of failed authentications and of reads
(`provenance.server.limits`).

The table of clients is bounded (the least recently charged dropped first), so a flood
of addresses cannot grow memory without limit; a dropped client starts full again.
Thread-safe; the clock is a parameter (seconds, monotonic), so tests need not sleep.
`Every` is the same idea for log lines: at most one per key and interval; `FewLines` is a
logging filter built on it, saying how many lines it left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

#: Most clients remembered at once.
MAX_CLIENTS = 10_000


class TokenBuckets:
    """One token bucket per client key (`provenance.core.fair_share.client_key`).
    ``per_minute`` <= 0: no limit (every call finds a token)."""

    def __init__(
        self,
        per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max = max_clients
        # client -> (tokens, clock() when counted), least recently charged first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def _level(self, client: str, now: float) -> float:
        tokens, seen = self._buckets.get(client, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + (now - seen) * self._rate)

    def _cost(self, cost: float) -> float:
        """``cost`` tokens, at most a full bucket (a bucket never holds more)."""
        return min(cost, float(self.per_minute))

    def wait(self, client: str, cost: float = 1.0) -> float:
        """Seconds until ``client`` has ``cost`` tokens (0.0: it has them now; a cost over
        ``per_minute`` counts as ``per_minute``); takes none."""
        if self.per_minute <= 0:
            return 0.0
        cost = self._cost(cost)
        with self._lock:
            tokens = self._level(client, self._clock())
        return 0.0 if tokens >= cost else (cost - tokens) / self._rate

    def take(self, client: str, always: bool = False, cost: float = 1.0) -> float:
        """Take ``cost`` tokens (one by default; over ``per_minute`` counts as
        ``per_minute``) from ``client``'s bucket: 0.0 when they were there; else the
        seconds until they will be, and none is taken unless ``always`` (the bucket then
        goes below zero, down to at most one minute's worth of debt, so a client that
        goes on waits longer)."""
        if self.per_minute <= 0:
            return 0.0
        cost = self._cost(cost)
        now = self._clock()
        with self._lock:
            tokens = self._level(client, now)
            self._buckets.pop(client, None)
            wait = 0.0 if tokens >= cost else (cost - tokens) / self._rate
            if not wait or always:
                tokens = max(tokens - cost, -float(self.per_minute))
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return wait


class Every:
    """At most one "yes" per key every ``seconds`` (monotonic clock): a gate for log lines
    that a flood of requests would otherwise repeat (`provenance.web.errors`, the
    witness's damaged state). Thread-safe; keys are kept for the process's life, so use
    few (a kind of failure, a state file)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._last: dict[object, float] = {}
        self._lock = threading.Lock()

    def due(self, key: object) -> bool:
        """True (and the key's time restarted) when ``key`` had no "yes" in the last
        ``seconds``, else False."""
        with self._lock:
            now = self._clock()
            last = self._last.get(key)
            if last is not None and now - last < self.seconds:
                return False
            self._last[key] = now
            return True


class FewLines(logging.Filter):
    """A logging filter that lets through at most one record of each kind every ``every``
    seconds (``clock``: monotonic seconds), the one let through saying how many were
    left out since the last, and why (``why``, ending the sentence "lines of this kind
    are written at most once every N s, ..."). Installed on the loggers whose lines come
    one per request or one per retry: prov web's client noise
    (`provenance.web.serve.ClientNoise`), the PostgreSQL pool during an outage
    (`provenance.store.postgres`). `kind` says a record's kind: here its logger and
    message template (``msg`` before its arguments) for WARNING and above, None (always
    let through) below."""

    def __init__(self, every: float, why: str, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every = every
        self.why = why
        self._gate = Every(every, clock)
        self._left_out: dict[str, int] = {}
        self._lock = threading.Lock()

    def kind(self, record: logging.LogRecord) -> str | None:
        """The kind of ``record`` whose lines are limited; None: always written."""
        if record.levelno < logging.WARNING:
            return None
        return f"{record.name}: {record.msg}"

    def filter(self, record: logging.LogRecord) -> bool:
        """True for a record to write (its message then notes the ones left out)."""
        kind = self.kind(record)
        if kind is None:
            return True
        with self._lock:
            if not self._gate.due(kind):
                self._left_out[kind] = self._left_out.get(kind, 0) + 1
                return False
            left_out = self._left_out.pop(kind, 0)
        note = f"{left_out:,} more like it left out since the last; " if left_out else ""
        record.msg = (
            f"{record.getMessage()} ({note}lines of this kind are written at most once"
            f" every {self.every:g} s, {self.why})"
        )
        record.args = None
        return True
