"""Soft-binding match of two videos from their sampled frame hashes (vPDQ-style).

Each video is a list of PDQ hashes of frames sampled by time (`provenance.video.decode`).
Following vPDQ (ThreatExchange vpdq/README.md, "Matching"): frames of quality below
min_quality are dropped from both sides; a query frame *matches* when some original frame
is within `threshold` bits (Hamming distance, inclusive); the matched shares are the
fractions of query frames, and of original frames, that match anything on the other side.

Decision rule: the query is a match (a DERIVED copy) when at least MIN_QUERY_SHARE of its
usable frames match, and at least one does. The original's share is not part of the rule,
so that a trimmed clip of a long capture still matches; it is reported as evidence.

Where in the original the query comes from: matching pairs vote for a time offset
(original time - query time), in bins one sampling interval wide; the offset that aligns
the most query frames wins, and the aligned pairs give the original's time range, with the
precision of one sampling interval. vPDQ itself reports no range; the voting is ours.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from provenance.binding import (
    PDQ_HASH_SIZE,
    PDQ_MATCH_THRESHOLD,
    PDQ_MIN_QUALITY,
    PerceptualHash,
)
from provenance.errors import BindingError

#: Share of the query's usable frames that must match for the query to be a match.
MIN_QUERY_SHARE = 0.5
# Pairwise distances are computed in blocks of query rows holding at most this many pairs.
_BLOCK_PAIRS = 1 << 20
# Offset bins examined exactly after the histogram vote.
_CANDIDATE_BINS = 5


@dataclass(frozen=True)
class VideoMatch:
    """How a query video matches an original, frame hash by frame hash.

    matched: the decision (see the module docstring); query_frames, original_frames: usable
    frames (quality >= min_quality) on each side; query_matched_frames,
    original_matched_frames: those within threshold bits of some frame on the other side;
    matched_share_query, matched_share_original: those counts as fractions in [0, 1].
    aligned_frames: query frames matched under the best single time offset; offset_seconds:
    that offset (original time = query time + offset); original_start_s, original_end_s:
    the first and last original frame times, in seconds, of the aligned pairs;
    median_distance: median Hamming distance in bits of the aligned pairs. The last four are
    None when nothing matched. threshold, min_quality: the parameters used.
    """

    matched: bool
    matched_share_query: float
    matched_share_original: float
    query_frames: int
    original_frames: int
    query_matched_frames: int
    original_matched_frames: int
    aligned_frames: int
    offset_seconds: float | None
    original_start_s: float | None
    original_end_s: float | None
    median_distance: float | None
    threshold: int
    min_quality: int


def _usable(hashes: Sequence[PerceptualHash], min_quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) uint64 hash words and (N,) float64 times of frames with quality >= min_quality."""
    kept = [h for h in hashes if h.quality >= min_quality]
    for h in kept:
        if len(h.hash) != PDQ_HASH_SIZE:
            raise BindingError(f"a PDQ hash is {PDQ_HASH_SIZE} bytes, got {len(h.hash)}")
    words = np.frombuffer(b"".join(h.hash for h in kept), dtype=np.uint64).reshape(-1, 4)
    times = np.array([h.timestamp_seconds for h in kept], dtype=np.float64)
    return words, times


def _distances(query: np.ndarray, original: np.ndarray) -> np.ndarray:
    """(Q, O) int Hamming distances in bits between (Q, 4) and (O, 4) uint64 hash words."""
    return np.bitwise_count(query[:, None, :] ^ original[None, :, :]).sum(axis=2, dtype=np.int32)


def _interval(times: np.ndarray) -> float:
    steps = np.diff(np.sort(times))
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else 1.0


def match_video(
    query: Sequence[PerceptualHash],
    original: Sequence[PerceptualHash],
    threshold: int = PDQ_MATCH_THRESHOLD,
    min_quality: int = PDQ_MIN_QUALITY,
    min_query_share: float = MIN_QUERY_SHARE,
) -> VideoMatch:
    """Compare the sampled frame hashes of a query video with those of an original.

    query, original: PDQ hashes with timestamp_seconds set (e.g. a claim's soft bindings,
    or `VideoInfo.frames[i].pdq`), any order. threshold: largest matching Hamming distance
    in bits; min_quality: lowest usable PDQ quality (0..100); min_query_share: the decision
    threshold. Cost: O(Q * O) 256-bit comparisons in blocks of about a million pairs.
    Raises BindingError on a hash that is not 32 bytes.
    """
    q_words, q_times = _usable(query, min_quality)
    o_words, o_times = _usable(original, min_quality)
    n_q, n_o = len(q_times), len(o_times)
    q_matched = np.zeros(n_q, dtype=bool)
    o_matched = np.zeros(n_o, dtype=bool)
    width = max(_interval(q_times), _interval(o_times))
    votes: Counter[int] = Counter()
    rows = max(1, _BLOCK_PAIRS // max(1, n_o))
    for start in range(0, n_q if n_o else 0, rows):
        close = _distances(q_words[start : start + rows], o_words) <= threshold
        q_matched[start : start + rows] = close.any(axis=1)
        o_matched |= close.any(axis=0)
        qi, oi = np.nonzero(close)
        bins = np.floor((o_times[oi] - q_times[start + qi]) / width).astype(np.int64)
        # One vote per (bin, query frame): key = bin * n_q + query index, unique per block.
        keys = np.unique(bins * n_q + start + qi)
        bin_ids, counts = np.unique(keys // n_q, return_counts=True)
        votes.update({int(k): int(c) for k, c in zip(bin_ids, counts, strict=True)})

    best = _best_alignment(q_words, q_times, o_words, o_times, votes, width, threshold)
    n_q_matched, n_o_matched = int(q_matched.sum()), int(o_matched.sum())
    share_q = n_q_matched / n_q if n_q else 0.0
    share_o = n_o_matched / n_o if n_o else 0.0
    common = dict(
        matched=n_q_matched > 0 and share_q >= min_query_share,
        matched_share_query=share_q,
        matched_share_original=share_o,
        query_frames=n_q,
        original_frames=n_o,
        query_matched_frames=n_q_matched,
        original_matched_frames=n_o_matched,
        threshold=threshold,
        min_quality=min_quality,
    )
    if best is None:
        return VideoMatch(aligned_frames=0, offset_seconds=None, original_start_s=None,
                          original_end_s=None, median_distance=None, **common)
    offset, pairs = best
    times = [o_times[o] for _, o, _ in pairs]
    return VideoMatch(
        aligned_frames=len(pairs),
        offset_seconds=offset,
        original_start_s=float(min(times)),
        original_end_s=float(max(times)),
        median_distance=float(np.median([d for _, _, d in pairs])),
        **common,
    )


def _best_alignment(
    q_words: np.ndarray,
    q_times: np.ndarray,
    o_words: np.ndarray,
    o_times: np.ndarray,
    votes: Counter[int],
    width: float,
    threshold: int,
) -> tuple[float, list[tuple[int, int, int]]] | None:
    """The time offset aligning the most query frames, and its (query, original, distance)
    pairs: for each query frame, the closest-in-hash original frame within one sampling
    interval of query time + offset. None when no pair matched."""
    if not votes:
        return None
    # Smooth the histogram over neighbouring bins (a true offset can straddle a boundary),
    # then examine the best few candidate offsets exactly.
    smoothed = {b: votes[b] + max(votes.get(b - 1, 0), votes.get(b + 1, 0)) for b in votes}
    candidates = sorted(smoothed, key=lambda b: (-smoothed[b], abs(b)))[:_CANDIDATE_BINS]
    order = np.argsort(o_times, kind="stable")
    sorted_times = o_times[order]
    best: tuple[float, list[tuple[int, int, int]]] | None = None
    for b in candidates:
        center = (b + 0.5) * width
        pairs = []
        for qi, t in enumerate(q_times):
            lo = np.searchsorted(sorted_times, t + center - width, side="left")
            hi = np.searchsorted(sorted_times, t + center + width, side="right")
            if lo == hi:
                continue
            window = order[lo:hi]
            d = _distances(q_words[qi : qi + 1], o_words[window])[0]
            j = int(np.argmin(d))
            if d[j] <= threshold:
                pairs.append((qi, int(window[j]), int(d[j])))
        if pairs and (best is None or len(pairs) > len(best[1])):
            best = (float(np.median([o_times[o] - q_times[q] for q, o, _ in pairs])), pairs)
    return best
