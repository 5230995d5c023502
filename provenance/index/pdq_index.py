"""Near-duplicate search over 256-bit PDQ hashes by Hamming distance.

`PdqIndex` keeps every registered hash in a NumPy array of shape (N, 4), dtype
uint64, and answers a query with one vectorised XOR + popcount pass: exact, and
fast enough for ~10^6 hashes per query on one core. Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from provenance.core.binding import PDQ_MATCH_THRESHOLD, PDQ_MIN_QUALITY, PerceptualHash


def _as_words(h: bytes) -> np.ndarray:
    """32-byte hash -> array of shape (4,), dtype uint64 (big-endian words)."""
    return np.frombuffer(h, dtype=">u8").astype(np.uint64)


class PdqIndex:
    """Registered PDQ hashes, each tagged with an integer id (the log leaf index)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._words = np.zeros((0, 4), dtype=np.uint64)
        self._ids = np.zeros((0,), dtype=np.int64)
        self._pending_words: list[np.ndarray] = []
        self._pending_ids: list[int] = []

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids) + len(self._pending_ids)

    def add(self, ident: int, h: PerceptualHash) -> None:
        """Register ``h`` under ``ident``; hashes below PDQ_MIN_QUALITY are skipped."""
        if h.algorithm != "pdq" or h.quality < PDQ_MIN_QUALITY or len(h.hash) != 32:
            return
        with self._lock:
            self._pending_words.append(_as_words(h.hash))
            self._pending_ids.append(ident)

    def add_many(self, items: Iterable[tuple[int, PerceptualHash]]) -> None:
        for ident, h in items:
            self.add(ident, h)

    def _compact(self) -> None:
        if self._pending_ids:
            self._words = np.vstack([self._words, np.stack(self._pending_words)])
            self._ids = np.concatenate([self._ids, np.asarray(self._pending_ids, dtype=np.int64)])
            self._pending_words.clear()
            self._pending_ids.clear()

    def search(
        self, query: PerceptualHash, max_distance: int = PDQ_MATCH_THRESHOLD, limit: int = 16
    ) -> list[tuple[int, int]]:
        """Ids within ``max_distance`` bits of ``query``, as (distance, id), nearest first,
        each id once (at its nearest code; ties in the order the codes were added), at most
        ``limit`` of them.

        A query of quality below PDQ_MIN_QUALITY matches nothing.
        """
        if query.algorithm != "pdq" or query.quality < PDQ_MIN_QUALITY or len(query.hash) != 32:
            return []
        with self._lock:
            self._compact()
            words, ids = self._words, self._ids
        if len(ids) == 0:
            return []
        dist = np.bitwise_count(words ^ _as_words(query.hash)).sum(axis=1)
        hit = np.nonzero(dist <= max_distance)[0]
        order = hit[np.argsort(dist[hit], kind="stable")]
        # one answer per id (log entry), its nearest copy: a claim's many copies of one
        # code would otherwise fill every place and push other entries out
        _, first = np.unique(ids[order], return_index=True)
        order = order[np.sort(first)][:limit]
        return [(int(dist[i]), int(ids[i])) for i in order]
