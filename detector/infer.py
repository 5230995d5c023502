"""Scoring images: the advisory report, keyed crops, batched inference on GPU or CPU.

For each image the detector scores `Preprocess.crops` square crops cut at native
resolution, at positions drawn from HMAC(secret, request key) (see `detector.crops`).
Each crop's logit goes through the weights' calibration to a calibrated logit z; the image
score is sigmoid(mean z). The band [band_low, band_high] is
sigmoid(mean z -/+ 1.96 * std(z) / sqrt(n)) (`spread`): the spread the score would have
over other crop draws. It says nothing about generators the model never saw; the score
is advisory.

All crops of all concurrent requests go through one `BatchQueue`: on CUDA it
waits up to `max_wait_s` (default 5 ms) to fill batches of `max_batch` crops, runs them
channels-last under bf16 autocast; on CPU it runs what is queued at once, in float32.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detector.bands import LIKELY_GENERATED as LIKELY_GENERATED
from detector.bands import NO_TRACES as NO_TRACES
from detector.bands import UNCERTAIN as UNCERTAIN
from detector.batching import BatchQueue
from detector.calibrate import noise_offset
from detector.crops import plan_crops
from detector.features import harmonise, patch_logits, prepare_network, sized
from detector.noise import log_noise
from detector.registry import LoadedModel, load_model
from provenance.core.errors import DetectorError, DetectorTimeoutError, MediaError
from provenance.media.assets import AssetLimits, detector_rgb
from provenance.media.budget import DEFAULT_DECODE_BUDGET_BYTES
from provenance.media.image import DEFAULT_MAX_PIXELS

ADVISORY = (
    "Advisory only: this score estimates whether the pixels carry traces of a generative "
    "model. It never proves that an image is authentic, nor that it is fake; only a "
    "signature check can show where a file came from."
)
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
    model_version: which weights; crops: what was looked at; threshold_low,
    threshold_high: the weights' band thresholds (probabilities: NO_TRACES below the
    first, LIKELY_GENERATED from the second); threshold_high_noise_aware: the weights
    have version 7's noise term (clean images need a higher score for LIKELY_GENERATED);
    advisory: the caveat.
    """

    score: float
    band_low: float
    band_high: float
    band: str
    model_id: str
    model_version: str
    crops: tuple[DetectorCrop, ...]
    threshold_low: float
    threshold_high: float
    threshold_high_noise_aware: bool
    advisory: str = ADVISORY
    #: The band's noise term for this image (`detector.calibrate.noise_offset`; 0 or
    #: negative, 0 without one): what `Detector.band_of` added. Not part of `to_dict`.
    noise_offset: float = 0.0

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
            "threshold_low": self.threshold_low,
            "threshold_high": self.threshold_high,
            "threshold_high_noise_aware": self.threshold_high_noise_aware,
            "advisory": self.advisory,
        }


def logistic(x: float) -> float:
    """1 / (1 + exp(-x)) of one float, in [0, 1] for any x but NaN, +-inf included,
    without overflow (exp is only taken of -|x|)."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def spread(zs: np.ndarray) -> tuple[float, float]:
    """(mean, half) of calibrated logits zs (n,) float64, finite, n >= 1: their mean
    and the half-width of its 95% band, 1.959964 * std(zs, ddof=1) / sqrt(n) (0 for n = 1).

    Both are computed on zs divided by the power of two just above max |zs| and scaled
    back: exact, so the same bits as on zs itself, but logits near float64's limit
    (1e300) neither overflow np.std's squares nor warn. Either may round to +-inf past
    float64's limit (half: a band wider than float64, then [0, 1]); never NaN."""
    _, e = np.frexp(np.abs(zs).max())
    u = np.ldexp(zs, -e)
    half = _Z95 * float(u.std(ddof=1)) / math.sqrt(len(u)) if len(u) > 1 else 0.0
    with np.errstate(over="ignore"):
        return float(np.ldexp(u.mean(), e)), float(np.ldexp(half, e))


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Detector:
    """A loaded detector with its batching worker.

    Thread-safe: score_* may be called from many threads at once; their crops share
    batches. Call close() (or use it as a context manager) to stop the worker.
    model: the loaded network and its metadata; threshold_low / threshold_high: the band
    thresholds in use (the weights' calibration).
    """

    def __init__(
        self,
        model: LoadedModel,
        device: torch.device,
        secret: bytes,
        max_batch: int = 256,
        max_wait_s: float | None = None,
    ) -> None:
        self.model = model
        self.model_id = model.meta.model_id
        self.model_version = model.meta.version
        self.device = device
        self._secret = secret
        cal = model.meta.calibration
        self.threshold_low = cal.threshold_low
        self.threshold_high = cal.threshold_high
        wait = max_wait_s if max_wait_s is not None else (0.005 if device.type == "cuda" else 0.0)
        prepare_network(model.net, device)
        pre = model.meta.preprocess

        def run(rows: np.ndarray) -> np.ndarray:
            return patch_logits(model.net, rows, pre, device, max_batch)

        self._queue = BatchQueue(run, max_batch, wait)

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
        Reports carry the weights' own model id (a weights file names its own model, e.g.
        a larger one trained on a GPU). Raises DetectorError if the model, its weights or
        the device cannot be loaded.
        """
        try:
            dev = torch.device(device) if device else default_device()
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise DetectorError(f"device {device!r} requested but CUDA is not available")
        except RuntimeError as e:
            raise DetectorError(f"bad device {device!r}: {e}") from e
        return cls(
            load_model(name, weights),
            dev,
            secret if secret is not None else os.urandom(32),
            max_batch,
            max_wait_s,
        )

    def close(self) -> None:
        """Finish queued work and stop the batching worker."""
        self._queue.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def score_image(
        self, rgb: np.ndarray, request_key: bytes, timeout_s: float | None = None
    ) -> DetectorReport:
        """Score one image: rgb (H, W, 3) uint8, H and W >= MIN_SIDE pixels.

        request_key: bytes identifying the request (e.g. the file's SHA-256); with the
        secret it fixes the crops. timeout_s: as in `score_images`. Raises MediaError for
        a wrong shape or dtype or a too small image, DetectorError if the model fails,
        DetectorTimeoutError past timeout_s.
        """
        return self.score_images([rgb], [request_key], timeout_s)[0]

    def score_images(
        self,
        images: Sequence[np.ndarray],
        request_keys: Sequence[bytes],
        timeout_s: float | None = None,
        video: bool = False,
    ) -> list[DetectorReport]:
        """Score several images (each as in score_image) in shared batches; ``video``: they
        are a video's frames, and an error about their size says so.

        timeout_s: seconds the whole call may take (None: no limit). Past it the call
        raises DetectorTimeoutError and cancels its crops still queued, so they are never
        run (the batch already running on the device cannot be stopped and is left to
        finish); it also raises at once, queuing nothing, when the batch in hand has been
        running longer than timeout_s (a stuck device: later calls do not each wait out
        their deadline behind it)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        if len(images) != len(request_keys):
            raise DetectorError(f"{len(images)} images but {len(request_keys)} request keys")
        pre = self.model.meta.preprocess
        cal = self.model.meta.calibration
        plans = [
            plan_crops(self._secret, key, rgb.shape[1], rgb.shape[0], pre.patch_size, pre.crops)
            for rgb, key in zip((_check_rgb(im, video) for im in images), request_keys, strict=True)
        ]
        # The crops of all images, one request per crop shape (crops of images smaller
        # than the patch are smaller).
        rows = [
            rgb[c.y : c.y + c.size, c.x : c.x + c.size]
            for rgb, plan in zip((harmonise(im, pre, video) for im in images), plans, strict=True)
            for c in plan
        ]
        # Each image's log noise level on the same crops, where the band uses it.
        offsets = [0.0] * len(plans)
        if cal.noise_coef:
            starts = np.cumsum([0, *(len(p) for p in plans)])
            offsets = [
                float(noise_offset(cal, log_noise(np.stack(rows[a:b]))))
                for a, b in zip(starts[:-1], starts[1:], strict=True)
            ]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, r in enumerate(rows):
            by_shape.setdefault(r.shape, []).append(i)
        if timeout_s is not None and deadline is not None:
            self._check_in_time(timeout_s, deadline, len(rows))
        pending = [
            (idx, self._queue.submit(np.stack([rows[i] for i in idx]))) for idx in by_shape.values()
        ]
        logits = np.zeros(len(rows), np.float32)
        try:
            for idx, fut in pending:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                logits[idx] = fut.result(timeout=left)
        except DetectorError:
            raise
        except TimeoutError:  # (concurrent.futures.TimeoutError is TimeoutError)
            for _, fut in pending:
                fut.cancel()  # dropped unless already taken into a batch
            raise DetectorTimeoutError(
                f"the detector did not answer within {timeout_s:g} s ({len(rows)} crops)"
            ) from None
        except Exception as e:  # a torch failure on the worker thread
            raise DetectorError(
                f"detector inference failed: {e}",  # torch's words: the operator's
                public="detector inference failed; the server logged why",
            ) from e
        reports = []
        taken = 0
        for plan, offset in zip(plans, offsets, strict=True):
            xs = logits[taken : taken + len(plan)].astype(np.float64)
            taken += len(plan)
            if not np.all(np.isfinite(xs)):
                raise DetectorError("the model produced a non-finite score")
            with np.errstate(over="ignore", invalid="ignore"):
                zs = cal.slope * xs + cal.intercept
            if not np.all(np.isfinite(zs)):
                x = float(xs[~np.isfinite(zs)][0])
                raise DetectorError(
                    f"the weights' calibration (slope {cal.slope:.3g}, intercept"
                    f" {cal.intercept:.3g}) takes the network's logit {x:.3g} beyond float64's"
                    " range: the calibration is unusable"
                )
            crops = tuple(
                DetectorCrop(c.x, c.y, c.size, c.size, logistic(float(z)))
                for c, z in zip(plan, zs, strict=True)
            )
            reports.append(self._report(zs, crops, offset))
        return reports

    def _check_in_time(self, timeout_s: float, deadline: float, crops: int) -> None:
        """Before queuing ``crops`` crops: raise DetectorTimeoutError when the call's
        ``deadline`` (`time.monotonic`) has passed while cutting them, or when the batch in
        hand has run longer than timeout_s."""
        if time.monotonic() >= deadline:
            raise DetectorTimeoutError(
                f"the detector did not answer within {timeout_s:g} s (preparing its"
                f" {crops} crops took longer)"
            )
        busy = self._queue.running_for()
        if busy > timeout_s:
            raise DetectorTimeoutError(
                f"the detector has been running one batch for {busy:.0f} s, longer than its"
                f" {timeout_s:g} s deadline (a stuck device?)"
            )

    def score_bytes(
        self,
        data: bytes,
        request_key: bytes | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_decode_bytes: int | None = DEFAULT_DECODE_BUDGET_BYTES,
    ) -> DetectorReport:
        """Decode an encoded image at full size and score it.

        The decode keeps the server's rule (`provenance.media.assets.detector_rgb`):
        ``max_decode_bytes`` (bytes; None: no budget) bounds its memory, estimated from
        the header. request_key defaults to the SHA-256 of data. Raises MediaError /
        MediaTooLargeError for undecodable, oversized or too small images,
        DecodeBudgetError (a MediaTooLargeError) over the budget.
        """
        limits = AssetLimits(
            max_bytes=max(len(data), 1),
            max_image_bytes=max(len(data), 1),
            max_pixels=max_pixels,
            max_decode_bytes=max_decode_bytes,
        )
        rgb = detector_rgb(data, limits)
        return self.score_image(
            rgb, request_key if request_key is not None else hashlib.sha256(data).digest()
        )

    def band_of(self, mean_z: float, noise_offset: float = 0.0) -> str:
        """The band of an image whose score is sigmoid(mean_z) (mean_z: the mean
        calibrated crop logit): LIKELY_GENERATED if sigmoid(mean_z + noise_offset) >=
        threshold_high (noise_offset: the band's noise term, `detector.calibrate.
        noise_offset`, 0 or negative: clean images need more evidence), NO_TRACES if the
        score < threshold_low, else UNCERTAIN. The same rule as
        `detector.calibrate.likely_generated`, which the band policy is fitted with."""
        if logistic(mean_z + noise_offset) >= self.threshold_high:
            return LIKELY_GENERATED
        if logistic(mean_z) < self.threshold_low:
            return NO_TRACES
        return UNCERTAIN

    def _report(
        self, zs: np.ndarray, crops: tuple[DetectorCrop, ...], offset: float
    ) -> DetectorReport:
        mean, half = spread(zs)
        return DetectorReport(
            score=logistic(mean),
            band_low=logistic(mean - half),
            band_high=logistic(mean + half),
            band=self.band_of(mean, offset),
            model_id=self.model_id,
            model_version=self.model_version,
            crops=crops,
            threshold_low=self.threshold_low,
            threshold_high=self.threshold_high,
            threshold_high_noise_aware=self.model.meta.calibration.noise_coef != 0,
            noise_offset=offset,
        )


def _check_rgb(rgb: np.ndarray, video: bool = False) -> np.ndarray:
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
            f"{sized(rgb, video)}; the detector needs at least {MIN_SIDE} on each side"
        )
    return rgb
