"""Soft-binding match of two videos from their sampled frame hashes (vPDQ-style).

Each video is a list of PDQ hashes of frames sampled by time (`provenance.media.video.decode`).
As in vPDQ (ThreatExchange vpdq/README.md, "Matching"), frames of quality below
min_quality are dropped from both sides, and two frames match when their Hamming distance
is at most `threshold` bits. vPDQ's two shares are reported as they are: the fractions of
query frames, and of original frames, that match any frame on the other side.

They are not the decision, because samples of the same footage taken at different instants
need not match: in the handheld vPDQ test videos, frames 1/30 s apart already differ by a
median 38-40 bits (more than the threshold of 31), so a 1 Hz sample of a clip cut between
two of the original's 1 Hz samples can miss every one of them. The decision therefore
aligns the two in time:

1. Matching pairs vote for an offset (original time - query time) in bins one sampling
   interval wide; the few best bins are refined to the median offset of their pairs.
2. Under an offset, an original frame is *covered* when a query frame presented within one
   query sampling interval of the same instant matches it. The window is the original's
   stretch that the query spans (query first..last frame time + offset).
3. The best offset covers the most original frames. `coverage` is the covered share of the
   usable original frames inside the window; the query is a match (a DERIVED copy) when
   coverage >= MIN_COVERAGE and at least one frame is covered.

So a verifier hashes every frame of the file under test (`QUERY_RATE_HZ`), while a claim
carries a sparse sample (1 Hz by default): whatever the cut, the query then holds the very
frames the claim sampled (re-encoded), or, after a frame-rate change, their neighbours. A
trimmed clip covers the original frames of its stretch only, and `original_start_s`,
`original_end_s` name that stretch to one original sampling interval.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from provenance.core.binding import (
    PDQ_HASH_SIZE,
    PDQ_MATCH_THRESHOLD,
    PDQ_MIN_QUALITY,
    PerceptualHash,
)
from provenance.core.errors import BindingError

#: Share of the original's usable frames, within the stretch the query spans, that must be
#: covered for the query to match.
MIN_COVERAGE = 0.5
#: Sampling rate, in frames per second, at which verifiers hash a query video: every frame
#: of footage up to 60 fps.
QUERY_RATE_HZ = 60.0
# Pairwise distances are computed in blocks of query rows holding at most this many pairs.
_BLOCK_PAIRS = 1 << 20
# Rounding slack of time comparisons, in seconds (timestamps are often in milliseconds).
_TIME_SLACK = 1e-3
# Offset bins refined and scored exactly after the vote.
_CANDIDATE_BINS = 5


@dataclass(frozen=True)
class VideoMatch:
    """How a query video matches an original, frame hash by frame hash.

    matched: the decision (module docstring). coverage: covered share of window_frames, the
    usable original frames inside the stretch the query spans under the best offset;
    aligned_frames: how many of them are covered. offset_seconds: that offset (original time
    = query time + offset); original_start_s, original_end_s: first and last covered
    original frame times in seconds; median_distance: median Hamming distance in bits of the
    covering pairs. These four are None when nothing matched.
    query_frames, original_frames: usable frames (quality >= min_quality) on each side;
    query_matched_frames, original_matched_frames: those within threshold bits of any frame
    on the other side, whatever the time; matched_share_query, matched_share_original:
    those as fractions in [0, 1] (vPDQ's two percentages / 100). threshold, min_quality:
    the parameters used.
    """

    matched: bool
    coverage: float
    window_frames: int
    aligned_frames: int
    offset_seconds: float | None
    original_start_s: float | None
    original_end_s: float | None
    median_distance: float | None
    matched_share_query: float
    matched_share_original: float
    query_frames: int
    original_frames: int
    query_matched_frames: int
    original_matched_frames: int
    threshold: int
    min_quality: int


@dataclass(frozen=True)
class _Side:
    words: np.ndarray  # (N, 4) uint64 hash words
    times: np.ndarray  # (N,) float64 seconds
    interval: float  # median sampling interval, seconds


def _usable(hashes: Sequence[PerceptualHash], min_quality: int) -> _Side:
    kept = sorted(
        (h for h in hashes if h.quality >= min_quality), key=lambda h: h.timestamp_seconds
    )
    for h in kept:
        if len(h.hash) != PDQ_HASH_SIZE:
            raise BindingError(f"a PDQ hash is {PDQ_HASH_SIZE} bytes, got {len(h.hash)}")
    words = np.frombuffer(b"".join(h.hash for h in kept), dtype=np.uint64).reshape(-1, 4)
    times = np.array([h.timestamp_seconds for h in kept], dtype=np.float64)
    steps = np.diff(times)
    steps = steps[steps > 0]
    return _Side(words, times, float(np.median(steps)) if steps.size else 1.0)


def _distances(query: np.ndarray, original: np.ndarray) -> np.ndarray:
    """(Q, O) int32 Hamming distances in bits between (Q, 4) and (O, 4) uint64 hash words."""
    bits = np.bitwise_count(query[:, None, :] ^ original[None, :, :])
    distances: np.ndarray = bits.sum(axis=2, dtype=np.int32)
    return distances


@dataclass(frozen=True)
class _Alignment:
    offset: float
    window: int
    pairs: list[tuple[int, int, int]]  # (original index, query index, distance), covered


def _align(q: _Side, o: _Side, offset: float, tolerance: float, threshold: int) -> _Alignment:
    """Cover the original's frames with query frames presented within tolerance seconds of
    the same instant under offset; the window is the query's span shifted by offset."""
    margin = q.interval / 2 + _TIME_SLACK
    first, last = q.times[0] + offset - margin, q.times[-1] + offset + margin
    tolerance += _TIME_SLACK
    pairs = []
    window = 0
    for i, t in enumerate(o.times):
        if not first <= t <= last:
            continue
        window += 1
        lo = np.searchsorted(q.times, t - offset - tolerance, side="left")
        hi = np.searchsorted(q.times, t - offset + tolerance, side="right")
        if lo == hi:
            continue
        d = _distances(o.words[i : i + 1], q.words[lo:hi])[0]
        j = int(np.argmin(d))
        if d[j] <= threshold:
            pairs.append((i, int(lo) + j, int(d[j])))
    return _Alignment(offset, window, pairs)


def _runs(ordered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of the sorted array ``ordered`` and how often each occurs:
    ``np.unique(ordered, return_counts=True)`` by its sort order. NumPy 2.4's
    ``np.unique`` hashes: 0.4-0.9 s for 600,000 keys (one 600-frame query against an
    original of 1,000 frames of one static scene) where a sort and this take 0.07 s."""
    if not len(ordered):
        return ordered, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.diff(np.append(starts, len(ordered)))


def match_video(
    query: Sequence[PerceptualHash],
    original: Sequence[PerceptualHash],
    threshold: int = PDQ_MATCH_THRESHOLD,
    min_quality: int = PDQ_MIN_QUALITY,
    min_coverage: float = MIN_COVERAGE,
) -> VideoMatch:
    """Compare the sampled frame hashes of a query video with those of an original.

    query, original: PDQ hashes with timestamp_seconds set (e.g. `VideoInfo.frames[i].pdq`
    of the file under test, sampled at QUERY_RATE_HZ, and a claim's soft bindings), in any
    order. threshold: largest matching Hamming distance in bits; min_quality: lowest usable
    PDQ quality (0..100); min_coverage: the decision threshold. Cost: O(Q * O) 256-bit
    comparisons, in blocks of about a million pairs. Raises BindingError on a hash that is
    not 32 bytes.
    """
    q, o = _usable(query, min_quality), _usable(original, min_quality)
    n_q, n_o = len(q.times), len(o.times)
    q_matched = np.zeros(n_q, dtype=bool)
    o_matched = np.zeros(n_o, dtype=bool)
    width = max(q.interval, o.interval)
    votes: Counter[int] = Counter()
    rows = max(1, _BLOCK_PAIRS // max(1, n_o))
    for start in range(0, n_q if n_o else 0, rows):
        close = _distances(q.words[start : start + rows], o.words) <= threshold
        q_matched[start : start + rows] = close.any(axis=1)
        o_matched |= close.any(axis=0)
        qi, oi = np.nonzero(close)
        bins = np.floor((o.times[oi] - q.times[start + qi]) / width).astype(np.int64)
        # One vote per (bin, original frame): key = bin * n_o + original index.
        keys = _runs(np.sort(bins * n_o + oi))[0]
        bin_ids, counts = _runs(keys // n_o)  # sorted already
        for b, c in zip(bin_ids.tolist(), counts.tolist(), strict=True):
            votes[b] += c

    best = _best_alignment(q, o, votes, width, threshold)
    n_q_matched, n_o_matched = int(q_matched.sum()), int(o_matched.sum())
    common: dict[str, Any] = dict(
        matched_share_query=n_q_matched / n_q if n_q else 0.0,
        matched_share_original=n_o_matched / n_o if n_o else 0.0,
        query_frames=n_q,
        original_frames=n_o,
        query_matched_frames=n_q_matched,
        original_matched_frames=n_o_matched,
        threshold=threshold,
        min_quality=min_quality,
    )
    if best is None or not best.pairs:
        return VideoMatch(
            matched=False,
            coverage=0.0,
            window_frames=best.window if best else 0,
            aligned_frames=0,
            offset_seconds=None,
            original_start_s=None,
            original_end_s=None,
            median_distance=None,
            **common,
        )
    coverage = len(best.pairs) / best.window
    times = [float(o.times[i]) for i, _, _ in best.pairs]
    return VideoMatch(
        matched=coverage >= min_coverage,
        coverage=coverage,
        window_frames=best.window,
        aligned_frames=len(best.pairs),
        offset_seconds=best.offset,
        original_start_s=min(times),
        original_end_s=max(times),
        median_distance=float(np.median([d for _, _, d in best.pairs])),
        **common,
    )


def _best_alignment(
    q: _Side, o: _Side, votes: Counter[int], width: float, threshold: int
) -> _Alignment | None:
    """The offset covering the most original frames (ties: higher coverage, then the offset
    nearest zero), among the best-voted bins refined to the median offset of their pairs."""
    if not votes:
        return None
    # Smooth over neighbouring bins (a true offset can straddle a boundary).
    smoothed = {b: votes[b] + max(votes.get(b - 1, 0), votes.get(b + 1, 0)) for b in votes}
    candidates = sorted(smoothed, key=lambda b: (-smoothed[b], abs(b)))[:_CANDIDATE_BINS]
    best: _Alignment | None = None
    for b in candidates:
        rough = _align(q, o, (b + 0.5) * width, width, threshold)
        if not rough.pairs:
            continue
        offset = float(np.median([o.times[i] - q.times[j] for i, j, _ in rough.pairs]))
        fine = _align(q, o, offset, q.interval, threshold)
        if best is None or _score(fine) > _score(best):
            best = fine
    return best


def _score(a: _Alignment) -> tuple[int, float, float]:
    return len(a.pairs), len(a.pairs) / max(1, a.window), -abs(a.offset)
