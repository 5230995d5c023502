"""Scoring images: the advisory report, keyed crops, batched inference on GPU or CPU.

For each image the detector scores `Preprocess.crops` square crops cut at native
resolution, at positions (and, for an ensemble, by members) drawn from
HMAC(secret, request key) (see `detector.crops`). Each crop's logit goes through its
member's calibration to a calibrated logit z; the image score is sigmoid(mean z). The
band [band_low, band_high] is sigmoid(mean z -/+ 1.96 * std(z) / sqrt(n)): the spread the
score would have over other crop draws. It says nothing about generators the model never
saw; the score is advisory.

All crops of all concurrent requests go through one `BatchQueue` per member: on CUDA it
waits up to `max_wait_s` (default 5 ms) to fill batches of `max_batch` crops, runs them
channels-last under bf16 autocast; on CPU it runs what is queued at once, in float32.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.batching import BatchQueue
from detector.crops import plan_crops
from detector.features import harmonise, patch_logits, prepare_network
from detector.registry import LoadedModel, load_models
from provenance.core.errors import DetectorError, MediaError
from provenance.media.image import DEFAULT_MAX_PIXELS, decode_image

ADVISORY = (
    "Advisory only: this score estimates whether the pixels carry traces of a generative "
    "model. It never proves that an image is authentic, nor that it is fake; only a "
    "signature check can show where a file came from."
)
LIKELY_GENERATED = "likely generated"
UNCERTAIN = "uncertain"
NO_TRACES = "no generator traces found"
#: Smallest image side the detector scores, in pixels.
MIN_SIDE = 64
_Z95 = 1.959964


@dataclass(frozen=True)
class DetectorCrop:
    """A scored crop: top-left (x, y), width and height in pixels of the image, and its
    calibrated score in [0, 1]."""

    x: int
    y: int
    width: int
    height: int
    score: float


@dataclass(frozen=True)
class DetectorReport:
    """The detector's advisory block for one image.

    score: calibrated probability in [0, 1] that the image was generated; band_low,
    band_high: the crop-sampling uncertainty band around it; band: LIKELY_GENERATED,
    UNCERTAIN or NO_TRACES (thresholds fitted on held-out images); model_id,
    model_version: which weights; crops: what was looked at; advisory: the caveat.
    """

    score: float
    band_low: float
    band_high: float
    band: str
    model_id: str
    model_version: str
    crops: tuple[DetectorCrop, ...]
    advisory: str = ADVISORY

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict; crops as a list of dicts."""
        return {
            "score": self.score,
            "band_low": self.band_low,
            "band_high": self.band_high,
            "band": self.band,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "crops": [vars(c).copy() for c in self.crops],
            "advisory": self.advisory,
        }


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Detector:
    """A loaded detector (one model or an ensemble) with its batching workers.

    Thread-safe: score_* may be called from many threads at once; their crops share
    batches. Call close() (or use it as a context manager) to stop the workers.
    members: the loaded models (network and metadata) in ensemble order;
    threshold_low / threshold_high: the band thresholds in use.
    """

    def __init__(
        self,
        model_id: str,
        members: Sequence[LoadedModel],
        device: torch.device,
        secret: bytes,
        max_batch: int = 256,
        max_wait_s: float | None = None,
    ) -> None:
        if not members:
            raise DetectorError("a detector needs at least one model")
        self.model_id = model_id
        self.model_version = "+".join(m.meta.version for m in members)
        self.device = device
        self.members = tuple(members)
        self._secret = secret
        self._sizes = tuple(m.meta.preprocess.patch_size for m in members)
        self._crops = members[0].meta.preprocess.crops
        # Ensemble thresholds: the members' thresholds averaged in logit space.
        cals = [m.meta.calibration for m in members]
        self.threshold_low = _sigmoid(float(np.mean([_logit(c.threshold_low) for c in cals])))
        self.threshold_high = _sigmoid(float(np.mean([_logit(c.threshold_high) for c in cals])))
        wait = max_wait_s if max_wait_s is not None else (0.005 if device.type == "cuda" else 0.0)
        self._queues = []
        for m in self.members:
            prepare_network(m.net, device)

            def run(rows: np.ndarray, m: LoadedModel = m) -> np.ndarray:
                return patch_logits(m.net, rows, m.meta.preprocess, device, max_batch)

            self._queues.append(BatchQueue(run, max_batch, wait))

    @classmethod
    def load(
        cls,
        name: str = "default",
        weights: Path | None = None,
        device: str | None = None,
        secret: bytes | None = None,
        max_batch: int = 256,
        max_wait_s: float | None = None,
    ) -> Detector:
        """Load a registry model (see `detector.registry`) onto device ("cpu", "cuda",
        "cuda:1"; default CUDA if available).

        secret: key of the crop draws; None draws a random one for this process (outputs
        then vary between processes); pass a fixed one for reproducible results.
        Reports carry the weights' own model id (the registry name for an ensemble).
        Raises DetectorError if the model, its weights or the device cannot be loaded.
        """
        try:
            dev = torch.device(device) if device else default_device()
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise DetectorError(f"device {device!r} requested but CUDA is not available")
        except RuntimeError as e:
            raise DetectorError(f"bad device {device!r}: {e}") from e
        members = load_models(name, weights)
        # A weights file names its own model (e.g. a larger one trained on a GPU).
        model_id = members[0].meta.model_id if len(members) == 1 else name
        return cls(
            model_id,
            members,
            dev,
            secret if secret is not None else os.urandom(32),
            max_batch,
            max_wait_s,
        )

    def close(self) -> None:
        """Finish queued work and stop the batching workers."""
        for q in self._queues:
            q.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score_image(self, rgb: np.ndarray, request_key: bytes) -> DetectorReport:
        """Score one image: rgb (H, W, 3) uint8, H and W >= MIN_SIDE pixels.

        request_key: bytes identifying the request (e.g. the file's SHA-256); with the
        secret it fixes the crops. Raises MediaError for a wrong shape or dtype or a too
        small image, DetectorError if the model fails.
        """
        return self.score_images([rgb], [request_key])[0]

    def score_images(
        self, images: Sequence[np.ndarray], request_keys: Sequence[bytes]
    ) -> list[DetectorReport]:
        """Score several images (each as in score_image) in shared batches."""
        if len(images) != len(request_keys):
            raise DetectorError(f"{len(images)} images but {len(request_keys)} request keys")
        plans = [
            plan_crops(self._secret, key, rgb.shape[1], rgb.shape[0], self._sizes, self._crops)
            for rgb, key in zip((_check_rgb(im) for im in images), request_keys, strict=True)
        ]
        # Per member: the crops of all images, one request per crop shape (crops of
        # images smaller than the patch are smaller).
        logits: list[np.ndarray] = []
        pending: list[tuple[int, list[int], Future[np.ndarray]]] = []
        seen: dict[int, list[np.ndarray]] = {}  # JPEG quality -> the images as re-encoded
        for m, queue in enumerate(self._queues):
            pre = self.members[m].meta.preprocess
            if pre.jpeg_quality not in seen:
                seen[pre.jpeg_quality] = [harmonise(im, pre) for im in images]
            rows = [
                rgb[c.y : c.y + c.size, c.x : c.x + c.size]
                for rgb, plan in zip(seen[pre.jpeg_quality], plans, strict=True)
                for c in plan
                if c.member == m
            ]
            by_shape: dict[tuple[int, ...], list[int]] = {}
            for i, r in enumerate(rows):
                by_shape.setdefault(r.shape, []).append(i)
            for idx in by_shape.values():
                pending.append((m, idx, queue.submit(np.stack([rows[i] for i in idx]))))
            logits.append(np.zeros(len(rows), np.float32))
        try:
            for m, idx, fut in pending:
                logits[m][idx] = fut.result()
        except DetectorError:
            raise
        except Exception as e:  # a torch failure on the worker thread
            raise DetectorError(f"detector inference failed: {e}") from e
        taken = [0] * len(self.members)
        reports = []
        for plan in plans:
            crops, zs = [], []
            for c in plan:
                logit = float(logits[c.member][taken[c.member]])
                taken[c.member] += 1
                cal = self.members[c.member].meta.calibration
                z = cal.slope * logit + cal.intercept
                if not math.isfinite(z):
                    raise DetectorError("the model produced a non-finite score")
                zs.append(z)
                crops.append(DetectorCrop(c.x, c.y, c.size, c.size, _sigmoid(z)))
            reports.append(self._report(np.array(zs), tuple(crops)))
        return reports

    def score_bytes(
        self, data: bytes, request_key: bytes | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> DetectorReport:
        """Decode an encoded image (see `provenance.media.image.decode_image`) and score it.

        request_key defaults to the SHA-256 of data. Raises MediaError /
        MediaTooLargeError for undecodable, oversized or too small images.
        """
        rgb = decode_image(data, max_pixels).rgb
        return self.score_image(
            rgb, request_key if request_key is not None else hashlib.sha256(data).digest()
        )

    def _report(self, zs: np.ndarray, crops: tuple[DetectorCrop, ...]) -> DetectorReport:
        mean = float(zs.mean())
        half = _Z95 * float(zs.std(ddof=1)) / math.sqrt(len(zs)) if len(zs) > 1 else 0.0
        score = _sigmoid(mean)
        if score >= self.threshold_high:
            band = LIKELY_GENERATED
        elif score < self.threshold_low:
            band = NO_TRACES
        else:
            band = UNCERTAIN
        return DetectorReport(
            score=score,
            band_low=_sigmoid(mean - half),
            band_high=_sigmoid(mean + half),
            band=band,
            model_id=self.model_id,
            model_version=self.model_version,
            crops=crops,
        )


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if (
        not isinstance(rgb, np.ndarray)
        or rgb.dtype != np.uint8
        or rgb.ndim != 3
        or rgb.shape[2] != 3
    ):
        shape = getattr(rgb, "shape", None)
        raise MediaError(f"expected an (H, W, 3) uint8 RGB array, got {type(rgb).__name__} {shape}")
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise MediaError(
            f"image is {w}x{h} pixels; the detector needs at least {MIN_SIDE} on each side"
        )
    return rgb
