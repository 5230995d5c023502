"""Multi-index hashing (MIH) for exact radius search over 256-bit PDQ hashes.

Norouzi, Punjani and Fleet, "Fast Search in Hamming Space with Multi-Index Hashing"
(CVPR 2012). Each 256-bit code is cut into ``m = 16`` substrings of 16 bits. If two codes
differ in at most ``r`` bits, by the pigeonhole principle at least one of their 16
substrings differs in at most ``r // 16`` bits. So a query probes, in each of the 16
substring tables, every bucket within ``r // 16`` bits of its own substring (17 buckets
per table for the PDQ threshold r = 31), collects the candidates, and checks each by its
full Hamming distance. The result is the same set as an exhaustive scan: recall 1.0 by
construction (tested against `provenance.index.pdq_index.PdqIndex`), with only the candidates
touched instead of every registered code.

Tables are compressed sparse rows: for substring j, the row numbers sorted by that
substring (int32) and the start of each of the 65,536 buckets. Codes added after the last
build sit in a pending list that is scanned exhaustively; the tables are rebuilt when the
pending list outgrows ``max(REBUILD_MIN_PENDING, built // REBUILD_FRACTION)`` rows, so a
stream of additions costs an amortised O(16 log) per code and a search scans at most a
sixteenth of the registry linearly. Memory: about 100 bytes per code (the code as four
uint64 words and sixteen uint16 substrings, its id, and 16 int32 table entries).

`MihIndex` offers the interface of `PdqIndex` (add, add_many, search, __len__) and gives
identical answers, ties in distance in the order codes were added. Thread-safe: searches
read an immutable snapshot; a rebuild replaces it under the lock. `add_arrays` takes codes
as NumPy arrays (a server's start-up loads 10^6 and more at once, `provenance.index.packs`).

A rebuild of more than ``BACKGROUND_BUILD`` codes runs on a background thread (about 4 s
per 10^6 codes on a loaded 2-core machine): meanwhile the index is *warming*
(`MihIndex.warming`) and searches scan the codes not yet in tables exhaustively, in
slices of ``SCAN_SLICE`` rows. A search never misses a registered code; while warming it
is only slower (about 0.07 s per 10^6 codes scanned).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from provenance import metrics
from provenance.core.binding import (
    PDQ_HASH_SIZE,
    PDQ_MATCH_THRESHOLD,
    PDQ_MIN_QUALITY,
    PerceptualHash,
)

#: Number of substrings a 256-bit code is cut into.
SUBSTRINGS = 16
#: Bits per substring.
SUBSTRING_BITS = 256 // SUBSTRINGS
_BUCKETS = 1 << SUBSTRING_BITS
#: Seconds a table build takes per code, for estimates (about 4 s per 10^6 codes on a
#: loaded 2-core machine).
BUILD_SECONDS_PER_CODE = 4e-6
#: Codes a search scans linearly per second, for estimates: about 0.07 s per 10^6 codes
#: on an idle core, taken 3 times slower (a loaded machine).
SCAN_CODES_PER_SECOND = 5_000_000
#: Pending (not yet indexed) codes tolerated before a rebuild, at least.
REBUILD_MIN_PENDING = 4096
#: ... and at most this fraction (1/REBUILD_FRACTION) of the indexed codes.
REBUILD_FRACTION = 16
#: Largest per-substring radius probed; beyond it (max_distance >= 64) a search scans all.
MAX_PROBE_RADIUS = 3
#: Rebuilds of more codes than this run on a background thread (the index is warming).
BACKGROUND_BUILD = 1 << 17
#: Rows scanned at once by an exhaustive pass (bounds its temporary memory to ~40 MB).
SCAN_SLICE = 1 << 20
#: A probe that would gather more table entries than this fraction of the codes scans all
#: codes instead (a gathered entry costs several times a scanned code).
_DENSE_FRACTION = 0.25

log = logging.getLogger(__name__)

_POPCOUNT16 = np.bitwise_count(np.arange(_BUCKETS, dtype=np.uint16))


def searchable(h: PerceptualHash) -> bool:
    """Whether the index can match ``h``: a PDQ hash of PDQ_MIN_QUALITY or more."""
    return h.algorithm == "pdq" and h.quality >= PDQ_MIN_QUALITY and len(h.hash) == PDQ_HASH_SIZE


@dataclass(frozen=True)
class _Tables:
    """An immutable snapshot of the index.

    words: (n, 4) uint64, the indexed codes as big-endian words; ids: (n,) int64;
    order: (SUBSTRINGS, n) int32, row numbers sorted by each substring;
    starts: (SUBSTRINGS, 65537) int64, bucket v of substring j is
    order[j, starts[j, v]:starts[j, v + 1]]; pending_words (p, 4) uint64 and
    pending_ids (p,) int64: codes added since the tables were built, scanned exhaustively.
    """

    words: np.ndarray
    ids: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    pending_words: np.ndarray
    pending_ids: np.ndarray

    @property
    def size(self) -> int:
        return len(self.ids) + len(self.pending_ids)


_NO_WORDS = np.zeros((0, 4), dtype=np.uint64)
_NO_IDS = np.zeros((0,), dtype=np.int64)


def _build(words: np.ndarray, ids: np.ndarray) -> _Tables:
    n = len(ids)
    chunks = words.astype(">u8").view(">u2").astype(np.uint16)  # (n, 16), most significant first
    order = np.empty((SUBSTRINGS, n), dtype=np.int32)
    starts = np.empty((SUBSTRINGS, _BUCKETS + 1), dtype=np.int64)
    starts[:, 0] = 0
    for j in range(SUBSTRINGS):
        col = chunks[:, j]
        order[j] = np.argsort(col, kind="stable")  # a radix sort for uint16
        np.cumsum(np.bincount(col, minlength=_BUCKETS), out=starts[j, 1:])
    return _Tables(words, ids, order, starts, _NO_WORDS, _NO_IDS)


class MihIndex:
    """Registered PDQ hashes, each tagged with an integer id (the log leaf index).

    Same interface and answers as `provenance.index.pdq_index.PdqIndex`; see the module
    docstring for the algorithm and its cost.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables = _build(_NO_WORDS, _NO_IDS)
        self._pending_codes: list[bytes] = []
        self._pending_ids: list[int] = []
        self._pending_arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self._builder: threading.Thread | None = None
        self._build_started = 0.0  # time.monotonic() when the background build began
        self._build_codes = 0  # codes that build puts in tables
        self._built = threading.Condition(self._lock)

    @property
    def warming(self) -> bool:
        """Whether tables are being built in the background (searches scan meanwhile)."""
        with self._lock:
            return self._builder is not None

    def scan_load(self) -> tuple[int, float]:
        """(codes every search scans linearly now: those not yet in tables; seconds until
        the background build in progress should end, an estimate at
        BUILD_SECONDS_PER_CODE, at least 1.0; 0.0 when no build runs)."""
        with self._lock:
            arrays = sum(len(ids) for ids, _ in self._pending_arrays)
            pending = len(self._tables.pending_ids) + len(self._pending_ids) + arrays
            if self._builder is None:
                return pending, 0.0
            spent = time.monotonic() - self._build_started
            return pending, max(1.0, self._build_codes * BUILD_SECONDS_PER_CODE - spent)

    def prepare(self) -> None:
        """Fold what was added into the snapshot now, starting a table build when due (in
        the background when large), so the first search does not wait for it."""
        with self._lock:
            self._snapshot()

    def wait_warm(self, timeout: float | None = None) -> bool:
        """Fold what is pending and wait until no background build runs; True when warm."""
        with self._lock:
            self._snapshot()
            return self._built.wait_for(lambda: self._builder is None, timeout)

    def __len__(self) -> int:
        with self._lock:
            arrays = sum(len(ids) for ids, _ in self._pending_arrays)
            return self._tables.size + len(self._pending_ids) + arrays

    def add(self, ident: int, h: PerceptualHash) -> None:
        """Register ``h`` under ``ident``; hashes below PDQ_MIN_QUALITY are skipped."""
        self.add_many([(ident, h)])

    def add_many(self, items: Iterable[tuple[int, PerceptualHash]]) -> None:
        """Register many (id, hash) pairs; hashes below PDQ_MIN_QUALITY are skipped."""
        codes, ids = [], []
        for ident, h in items:
            if searchable(h):
                codes.append(h.hash)
                ids.append(ident)
        if not ids:
            return
        with self._lock:
            self._fold_lists()
            self._pending_codes.extend(codes)
            self._pending_ids.extend(ids)

    def add_arrays(self, ids: np.ndarray, words: np.ndarray) -> None:
        """Register usable codes at once: ``ids`` (n,) int64, ``words`` (n, 4) uint64
        big-endian words (the caller filtered out codes below PDQ_MIN_QUALITY, as
        `provenance.store.HashPack` holds them). Raises ValueError on mismatched shapes."""
        if words.ndim != 2 or words.shape[1] != 4 or len(ids) != len(words):
            raise ValueError(f"codes of shape {words.shape} for {len(ids)} ids")
        if not len(ids):
            return
        with self._lock:
            self._fold_lists()
            self._pending_arrays.append(
                (np.ascontiguousarray(ids, np.int64), np.ascontiguousarray(words, np.uint64))
            )

    def _fold_lists(self) -> None:
        """Move codes added one by one into the array queue (keeps the order of additions);
        under the lock."""
        if self._pending_ids:
            words = np.frombuffer(b"".join(self._pending_codes), dtype=">u8").astype(np.uint64)
            self._pending_arrays.append(
                (np.asarray(self._pending_ids, dtype=np.int64), words.reshape(-1, 4))
            )
            self._pending_codes.clear()
            self._pending_ids.clear()

    def _snapshot(self) -> _Tables:
        """Fold pending codes into the snapshot (rebuilding tables when due: inline when
        small, else on a background thread); under the lock."""
        self._fold_lists()
        t = self._tables
        if self._pending_arrays:
            pending_words = np.vstack([t.pending_words, *(w for _, w in self._pending_arrays)])
            pending_ids = np.concatenate([t.pending_ids, *(i for i, _ in self._pending_arrays)])
            self._pending_arrays.clear()
            t = _Tables(t.words, t.ids, t.order, t.starts, pending_words, pending_ids)
            self._tables = t
        due = len(t.pending_ids) > max(REBUILD_MIN_PENDING, len(t.ids) // REBUILD_FRACTION)
        if not due or self._builder is not None:
            return t
        if t.size <= BACKGROUND_BUILD:
            t = _build(
                np.vstack([t.words, t.pending_words]), np.concatenate([t.ids, t.pending_ids])
            )
            self._tables = t
            return t
        self._builder = threading.Thread(
            target=self._build_in_background, args=(t,), name="mih-build", daemon=True
        )
        self._build_started, self._build_codes = time.monotonic(), t.size
        self._builder.start()
        return t

    def _build_in_background(self, t: _Tables) -> None:
        """Build tables of every code in ``t`` and install them; codes added meanwhile
        stay pending."""
        t0 = time.perf_counter()
        try:
            built = _build(
                np.vstack([t.words, t.pending_words]), np.concatenate([t.ids, t.pending_ids])
            )
        except MemoryError:  # searches keep scanning; the next fold tries again
            log.exception("near-duplicate index: building tables of %d codes failed", t.size)
            with self._lock:
                self._builder = None
                self._built.notify_all()
            return
        with self._lock:
            now = self._tables  # only this thread replaces the tables while it runs
            taken = len(t.pending_ids)
            self._tables = _Tables(
                built.words,
                built.ids,
                built.order,
                built.starts,
                now.pending_words[taken:],
                now.pending_ids[taken:],
            )
            self._builder = None
            self._built.notify_all()
        log.info(
            "near-duplicate index: tables of %d codes built in %.1f s",
            len(built.ids),
            time.perf_counter() - t0,
        )

    def search(
        self, query: PerceptualHash, max_distance: int = PDQ_MATCH_THRESHOLD, limit: int = 16
    ) -> list[tuple[int, int]]:
        """Ids within ``max_distance`` bits of ``query``, as (distance, id), nearest first
        (ties in the order the codes were added), each id once at its nearest code (one log
        entry's many copies of a code do not crowd out others), at most ``limit`` of them.

        A query of quality below PDQ_MIN_QUALITY matches nothing. Searches of a non-empty
        index are timed in INDEX_LOOKUP_SECONDS (a scan sends 8 hashes per photo: timing
        the immediate answers too cost more than answering them).
        """
        return self.search_many((query,), max_distance, limit)[0]

    def search_many(
        self,
        queries: Sequence[PerceptualHash],
        max_distance: int = PDQ_MATCH_THRESHOLD,
        limit: int = 16,
    ) -> list[list[tuple[int, int]]]:
        """`search` of each of ``queries``, in order, against one snapshot of the index
        (taken once under the lock: a Lookup's thousands of hashes pay for it once), the
        queries searched together (`_search_block`: one gather and one distance pass for
        the candidates of many queries instead of a dozen NumPy calls per query). Each
        query is timed in INDEX_LOOKUP_SECONDS as the block's time over its queries."""
        return self.search_codes(
            [q.hash if searchable(q) else None for q in queries], max_distance, limit
        )

    def search_codes(
        self,
        codes: Sequence[bytes | None],
        max_distance: int = PDQ_MATCH_THRESHOLD,
        limit: int = 16,
        share: Share | None = None,
    ) -> list[list[tuple[int, int]]]:
        """`search_many` of raw 32-byte PDQ codes, each already known usable (a PDQ hash of
        quality PDQ_MIN_QUALITY or more), None for a hash that is not (it matches nothing):
        the server's Lookup searches a photo's 7 turned hashes from its packed field without
        building a PerceptualHash of each. ``share``, when given: (group_of, most): each
        query's answer holds at most ``most`` ids of one group (``group_of`` maps an int64
        array of ids to their int64 groups), the nearest of each group's ids; others take
        the places they would have filled."""
        with self._lock:
            t = self._snapshot()
        if t.size == 0:  # nothing to find (an empty log): no query checked
            return [[] for _ in codes]
        usable = [c is not None and max_distance >= 0 for c in codes]
        if not any(usable):
            return [[] for _ in codes]
        start = time.perf_counter()
        wanted = [c for c, ok in zip(codes, usable, strict=True) if ok and c is not None]
        found = iter(_search_block(t, wanted, max_distance, limit, share))
        out = [next(found) if ok else [] for ok in usable]
        each = (time.perf_counter() - start) / len(wanted)
        for _ in wanted:
            metrics.INDEX_LOOKUP_SECONDS.observe(each)
        return out


#: A search's per-group share: (the group of each id, for ids (n,) int64 -> (n,) int64;
#: at most this many ids of one group in each query's answer). The server's groups are
#: devices: one device's many entries near a code do not crowd out another's.
Share = tuple[Callable[[np.ndarray], np.ndarray], int]


#: Candidate rows (or query x pending-code pairs) checked in one NumPy pass, at most
#: (bounds the temporary memory of a block of queries to about 12 MB; blocks of 2^16 to
#: 2^19 rows searched equally fast at 10^6 codes).
GATHER_ROWS = 1 << 17


def _distances(x: np.ndarray) -> np.ndarray:
    """The bits set in each code of ``x`` (..., 4) uint64, as uint16 (..., ): four column
    sums, about 3.5 times faster than NumPy's sum over the short last axis."""
    count = np.bitwise_count(x)
    d: np.ndarray = count[..., 0].astype(np.uint16)
    for j in (1, 2, 3):
        d += count[..., j]
    return d


def _probe_runs(
    t: _Tables, raw: bytes, nq: int, radius: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of the ``nq`` query codes in ``raw``: the runs of ``t.order.ravel()`` its
    probes read (bucket starts as flat positions and lengths, shape (nq, runs)) and its
    candidate count (nq,)."""
    n = len(t.ids)
    masks = np.nonzero(_POPCOUNT16 <= radius)[0]
    q16 = np.frombuffer(raw, dtype=">u2").astype(np.int64).reshape(nq, SUBSTRINGS)
    probes = q16[:, :, None] ^ masks  # (nq, 16, len(masks)) buckets
    table = np.arange(SUBSTRINGS)[:, None]
    lo = t.starts[table, probes]
    lengths = (t.starts[table, probes + 1] - lo).reshape(nq, -1)
    flat = (table * n + lo).reshape(nq, -1)
    return flat, lengths, lengths.sum(axis=1)


#: Distances two 256-bit codes can be apart: 0..256.
_DISTANCES = 257


def _nearest(
    q: np.ndarray,
    pos: np.ndarray,
    d: np.ndarray,
    limit: int,
    t: _Tables,
    share: Share | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hits (query, position, distance), sorted by query, distance and position, each
    query's hits of one id (log entry) cut to its first (nearest, then first added: a
    row found twice through two tables is one of these), and each query's first
    ``limit`` kept. Applied to each batch of hits as it is found, so that a search holds
    at most ``limit`` hits per query and batch, however many codes lie near it: before,
    every hit was kept until the end, and 4,096 copies of one code (one video claim's
    frames of a static scene) times a Lookup's 4,096 hashes near it held 16.8 million
    hits, about 1.7 GB at its peak (40,960 copies: 16.6 GB, 208 s). One hit per id: a
    claim's 1,000 copies of a photo's code filled all 16 places and pushed other entries
    near the photo out of the answer. With ``share`` (group_of, most), each query's ids
    of one group are cut to their first ``most`` too, before the ``limit``: one device's
    many entries near a code filled the places likewise. Cutting each batch so keeps the
    answer exact: a hit a batch drops has ``most`` distinct ids of its group (or ``limit``
    ids) ahead of it in the batch, each as near or nearer in the whole search."""
    if not len(q):
        return q, pos, d
    rows, qs = int(pos.max()) + 1, int(q.max()) + 1
    if len(q) > limit:  # a run of one query's hits of one id: its nearest (linear, no sort)
        ids = _ids_at(t, pos)
        change = (q[1:] != q[:-1]) | (ids[1:] != ids[:-1])
        starts = np.concatenate(([0], np.nonzero(change)[0] + 1))
        if len(starts) < len(q):  # a claim's codes are added, so found, one after another
            best = np.minimum.reduceat(d.astype(np.int64) * rows + pos, starts)
            q = q[starts]
            d, pos = np.divmod(best, rows)
    if qs * _DISTANCES * rows < 1 << 62:  # one int64 key each, sorted (several times faster)
        key = np.sort((q.astype(np.int64) * _DISTANCES + d) * rows + pos)
        q, rest = np.divmod(key, _DISTANCES * rows)
        d, pos = np.divmod(rest, rows)
    else:
        order = np.lexsort((pos, d, q))
        q, pos, d = q[order], pos[order], d[order]
    if len(q) > 1:  # the first hit of each (query, id) in that order stays
        ids = _ids_at(t, pos)
        group = np.lexsort((ids, q))  # stable: each (query, id)'s hits in sorted order
        gq, gi = q[group], ids[group]
        first = np.ones(len(q), dtype=bool)
        first[1:] = (gq[1:] != gq[:-1]) | (gi[1:] != gi[:-1])
        kept = np.zeros(len(q), dtype=bool)
        kept[group[first]] = True
        q, pos, d = q[kept], pos[kept], d[kept]
        if share is not None and len(q) > share[1]:  # each query's first ``most`` of a group
            g = np.asarray(share[0](ids[kept]), dtype=np.int64)
            group = np.lexsort((g, q))  # stable: each (query, group)'s hits in sorted order
            gq, gg = q[group], g[group]
            first = np.ones(len(q), dtype=bool)
            first[1:] = (gq[1:] != gq[:-1]) | (gg[1:] != gg[:-1])
            at = np.arange(len(q))
            rank = at - np.maximum.accumulate(np.where(first, at, 0))
            kept = np.zeros(len(q), dtype=bool)
            kept[group[rank < share[1]]] = True
            q, pos, d = q[kept], pos[kept], d[kept]
    if len(q) > limit:  # each query's rank among its own hits: the first ``limit`` stay
        starts = np.searchsorted(q, q, side="left")
        kept = np.arange(len(q)) - starts < limit
        q, pos, d = q[kept], pos[kept], d[kept]
    return q, pos, d


def _ids_at(t: _Tables, pos: np.ndarray) -> np.ndarray:
    """The ids of positions ``pos`` of snapshot ``t`` (table rows, then n + pending rows)."""
    n = len(t.ids)
    if not len(pos) or pos.max() < n:  # table rows only (a full scan's, most searches')
        table: np.ndarray = t.ids[pos].astype(np.int64, copy=False)
        return table
    if pos.min() >= n:  # pending rows only
        pending: np.ndarray = t.pending_ids[pos - n].astype(np.int64, copy=False)
        return pending
    ids = np.empty(len(pos), dtype=np.int64)
    indexed = pos < n
    ids[indexed] = t.ids[pos[indexed]]
    ids[~indexed] = t.pending_ids[pos[~indexed] - n]
    return ids


def _keep(
    into: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]],
    hits: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Append one batch of `_nearest` hits to the three lists of ``into``."""
    for kept, part in zip(into, hits, strict=True):
        kept.append(part)


def _search_block(
    t: _Tables, codes: list[bytes], max_distance: int, limit: int, share: Share | None = None
) -> list[list[tuple[int, int]]]:
    """`MihIndex.search` of each of ``codes`` (usable 32-byte codes) in the non-empty
    snapshot ``t``: the answers of one query at a time, found together. Hits are
    collected as (query, position, distance), positions being table rows (the order codes
    were added) then n + pending rows; sorted by query, distance and position, with the
    hits of one id after its first dropped, and cut at ``limit``."""
    nq, n = len(codes), len(t.ids)
    raw = b"".join(codes)
    qw = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(nq, 4)
    hit_q: list[np.ndarray] = []
    hit_pos: list[np.ndarray] = []
    hit_d: list[np.ndarray] = []

    radius = max_distance // SUBSTRINGS
    full = np.full(nq, n > 0)  # queries that scan every table row
    if n and radius <= MAX_PROBE_RADIUS:
        flat, lengths, totals = _probe_runs(t, raw, nq, radius)
        full = totals > _DENSE_FRACTION * n
        probing = np.nonzero(~full)[0]
        ends = np.cumsum(totals[probing])
        a = 0
        while a < len(probing):  # blocks of queries of at most GATHER_ROWS candidates
            before = int(ends[a - 1]) if a else 0
            b = max(a + 1, int(np.searchsorted(ends, before + GATHER_ROWS, side="right")))
            block = probing[a:b]
            a = b
            counts = totals[block]  # candidates of each query of the block, in a row
            total = int(counts.sum())
            if not total:
                continue
            runs, starts = lengths[block].ravel(), flat[block].ravel()
            used = runs > 0
            runs, starts = runs[used], starts[used]
            pos = np.repeat(starts - (np.cumsum(runs) - runs), runs) + np.arange(total)
            rows = np.take(t.order.ravel(), pos)
            x = np.take(t.words, rows, axis=0)
            x ^= np.repeat(qw[block], counts, axis=0)
            d = _distances(x)
            near = np.nonzero(d <= max_distance)[0]
            _keep(
                (hit_q, hit_pos, hit_d),
                _nearest(
                    block[np.searchsorted(np.cumsum(counts), near, side="right")],
                    rows[near].astype(np.int64),
                    d[near],
                    limit,
                    t,
                    share,
                ),
            )
    for k in np.nonzero(full)[0]:  # probing would not beat a full scan: every table row
        for lo in range(0, n, SCAN_SLICE):
            d = _distances(t.words[lo : lo + SCAN_SLICE] ^ qw[k])
            rows = np.nonzero(d <= max_distance)[0]
            # the nearest of each id, then each query's nearest ``limit`` (at most a
            # slice's hits held: SCAN_SLICE)
            _keep(
                (hit_q, hit_pos, hit_d),
                _nearest(np.full(len(rows), k), rows + lo, d[rows], limit, t, share),
            )
    pending = len(t.pending_ids)
    step = max(1, GATHER_ROWS // max(pending, 1))  # queries per pass over a slice
    for lo in range(0, pending, SCAN_SLICE):  # codes added after the tables: scanned
        words = t.pending_words[lo : lo + SCAN_SLICE]
        for a in range(0, nq, step):
            d = _distances(words[None, :, :] ^ qw[a : a + step, None, :])
            # every hit of the pass (at most its step x slice distances, about GATHER_ROWS),
            # cut to the nearest of each id, then each query's nearest ``limit``
            near_q, near_k = np.nonzero(d <= max_distance)
            _keep(
                (hit_q, hit_pos, hit_d),
                _nearest(near_q + a, near_k + n + lo, d[near_q, near_k], limit, t, share),
            )
    q, pos, d = _nearest(
        np.concatenate(hit_q) if hit_q else np.zeros(0, np.int64),
        np.concatenate(hit_pos) if hit_pos else np.zeros(0, np.int64),
        np.concatenate(hit_d) if hit_d else np.zeros(0, np.int64),
        limit,
        t,
        share,
    )
    ids = _ids_at(t, pos)
    bounds = np.searchsorted(q, np.arange(nq + 1)).tolist()
    dl, il = d.tolist(), ids.tolist()
    return [
        list(zip(dl[a:b], il[a:b], strict=True))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
