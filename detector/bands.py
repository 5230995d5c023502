"""The detector's bands in words a person reads: the band names, where each band starts
(the served model's thresholds) and which band a single crop's score falls in.

Torch-free (the CLI's verify and the web page import it without the ``detector``
extra). Every function takes a detector block as `DetectorReport.to_dict` and the wire
(`provenance.wire.convert.detector_from_pb`) give it: ``threshold_low`` and
``threshold_high`` (the weights' calibration, `detector.config.Calibration`) and
``threshold_high_noise_aware`` (version 7's noise term, docs/detector.md "Exactly how it
scores" step 5). Blocks from servers older than these fields have none of them; the
functions then say so instead of guessing thresholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LIKELY_GENERATED = "likely generated"
UNCERTAIN = "uncertain"
NO_TRACES = "no generator traces found"

#: What a crop's score is compared with, by tone: "high" at or above threshold_high,
#: "low" under threshold_low, "mid" in between, "unknown" when the block has no thresholds.
CROP_TONES = ("high", "mid", "low", "unknown")


def thresholds(block: Mapping[str, Any]) -> tuple[float, float] | None:
    """(threshold_low, threshold_high) of a detector block, probabilities in [0, 1];
    None when the block carries none (a server or file older than these fields)."""
    low, high = block.get("threshold_low"), block.get("threshold_high")
    if low is None or high is None:
        return None
    return float(low), float(high)


def threshold_words(block: Mapping[str, Any]) -> str:
    """Where the bands start, for an editor: "likely generated from 0.885 (...); no
    generator traces below 0.295; in between: uncertain". Names the noise-aware rule of
    version 7 when the block says the model has one; says the thresholds are unknown
    when the block has none."""
    th = thresholds(block)
    if th is None:
        return "the server did not say where the bands start (an older server)"
    low, high = th
    noise = (
        " (clean, low-noise pictures need a higher score)"
        if block.get("threshold_high_noise_aware")
        else ""
    )
    return (
        f"{LIKELY_GENERATED} from {high:.3f}{noise}; no generator traces below {low:.3f};"
        f" in between: {UNCERTAIN}"
    )


def score_words(block: Mapping[str, Any]) -> str:
    """A scored block's score and its range over other crop draws, as every reader prints
    them: "score 0.298 (0.23-0.37 with other crops)". The range is ``band_low``-``band_high``
    (a 95% interval, docs/detector.md "Exactly how it scores"), not the band label, so the
    words do not call it a band."""
    return (
        f"score {block['score']:.3f}"
        f" ({block['band_low']:.2f}-{block['band_high']:.2f} with other crops)"
    )


def unscored_reason(block: Mapping[str, Any]) -> str:
    """Why an unscored block (``available`` false) has no score, without a leading "not
    scored: " (the server's notes start so; the readers print their own prefix), e.g.
    "this server runs no detector"."""
    note = str(block.get("note") or "no reason given")
    prefix = "not scored: "
    return note[len(prefix) :] if note.lower().startswith(prefix) else note


def crop_tone(score: float, block: Mapping[str, Any]) -> str:
    """The tone of one crop's score (one of `CROP_TONES`) by the image's thresholds: a
    crop is coloured as an image with that score would be banded, without the noise term
    (which is measured on the whole image)."""
    th = thresholds(block)
    if th is None:
        return "unknown"
    low, high = th
    if score >= high:
        return "high"
    if score < low:
        return "low"
    return "mid"
