"""The detector as the gRPC server uses it: images and video frames, one loaded model.

`ServerDetector` implements `provenance.server.rpc.DetectorBackend`. A video is scored frame
by frame on the frames the server sampled; the aggregate is the mean of the frames'
calibrated scores in logit space with a 95% band across frames (as `Detector` does
across crops), banded with the model's held-out thresholds, and the block keeps the
per-frame timeline. Every block says it is advisory.

Same file, same band: the crop draws are keyed by the server's secret and the file's
SHA-256, and `load_or_create_secret` (`detector.secret`) keeps the secret in a file
beside the database, so calls before and after a restart score the same crops; the servers of one PostgreSQL
database share theirs through the database (`shared_secret`), so every server of it
scores a file alike.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.infer import Detector, logistic, spread
from detector.secret import load_or_create_secret


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class ServerDetector:
    """Scores uploads for verification reports (thread-safe: the model batches requests)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def score_image(
        self, rgb: np.ndarray, request_key: bytes, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """rgb: (H, W, 3) uint8; request_key: bytes naming the request (crop draws);
        timeout_s: seconds it may take (None: no limit), past them DetectorTimeoutError
        (`Detector.score_images`)."""
        return self.detector.score_image(rgb, request_key, timeout_s).to_dict()

    def score_video(
        self,
        frames: Sequence[tuple[float, np.ndarray]],
        request_key: bytes,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """frames: (timestamp in seconds, (H, W, 3) uint8 pixels), in time order;
        timeout_s: as in `score_image`, for all the frames together.

        Returns the aggregate block with a ``timeline`` of {"timestamp_seconds", "score"}
        and the crops of every frame (with their timestamps)."""
        if not frames:
            return {"available": False, "note": "no video frame could be decoded for the detector"}
        keys = [request_key + struct.pack(">d", t) for t, _ in frames]
        reports = self.detector.score_images(
            [rgb for _, rgb in frames], keys, timeout_s, video=True
        )
        zs = np.array([_logit(r.score) for r in reports])
        mean, half = spread(zs)
        # The band's noise term of the frames, averaged as their logits are.
        offset = float(np.mean([r.noise_offset for r in reports]))
        first = reports[0].to_dict()
        return {
            **first,
            "score": logistic(mean),
            "band_low": logistic(mean - half),
            "band_high": logistic(mean + half),
            "band": self.detector.band_of(mean, offset),
            "crops": [
                {**vars(c), "timestamp_seconds": t}
                for (t, _), r in zip(frames, reports, strict=True)
                for c in r.crops
            ],
            "timeline": [
                {"timestamp_seconds": t, "score": r.score}
                for (t, _), r in zip(frames, reports, strict=True)
            ],
        }


def server_detector(
    name: str = "default",
    device: str | None = None,
    secret_file: Path | None = None,
    secret: bytes | None = None,
) -> ServerDetector:
    """Load registry model ``name`` for serving (CUDA when available, else the CPU).

    secret: the crop secret (e.g. `shared_secret`); else secret_file, where it lives (see
    `load_or_create_secret`), so a file gets the same score on every call and across
    restarts; neither draws a random secret per process (scores then differ between
    processes). Raises DetectorError."""
    if secret is None and secret_file is not None:
        secret = load_or_create_secret(secret_file)
    return ServerDetector(Detector.load(name, device=device, secret=secret))
