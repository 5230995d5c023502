"""The image's noise level: a covariate of the calibration (docs/detector.md, version 7).

Real photos that are clean (little sensor noise, e.g. strongly downscaled camera JPEGs)
score higher than noisy ones, so one threshold for all lets too many of them reach
"likely generated". The calibration may therefore take the log of the image's noise level
as a second input (`detector.config.Calibration.noise_coef`).

The estimate is J. Immerkær's ("Fast Noise Variance Estimation", Computer Vision and
Image Understanding 64(2), 1996): the luma (ITU-R BT.601 weights, 0-255) convolved with
the 3x3 Laplacian-difference mask [[1, -2, 1], [-2, 4, -2], [1, -2, 1]], whose response
cancels locally linear image content, and sigma = sqrt(pi / 2) / 6 * mean |response|. It
is taken on each crop the network sees (the same pixels, after the same JPEG q90
harmonisation), and the image's level is the median over its crops, so that a few
textured crops do not move it. Pure numpy, exact integer sums: the same bits on every
machine.
"""

from __future__ import annotations

import math

import numpy as np

from provenance.core.errors import DetectorError

#: sqrt(pi / 2) / 6: Immerkær's factor from mean |mask response| to sigma (the mask's
#: squared weights sum to 36).
_FACTOR = math.sqrt(math.pi / 2.0) / 6.0
#: Floor of the noise level before its log, in 0-255 grey levels: a flat crop (sigma 0)
#: gets log(0.1) rather than minus infinity.
NOISE_FLOOR = 0.1


def crop_noise(patches: np.ndarray) -> np.ndarray:
    """Immerkær's noise sigma of each crop, in 0-255 grey levels.

    patches: (N, P, P, 3) uint8 RGB, P >= 3. Returns (N,) float64. Raises DetectorError
    for another shape or dtype.
    """
    if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[3] != 3:
        raise DetectorError(
            f"expected (N, P, P, 3) uint8 crops, got {patches.dtype} {patches.shape}"
        )
    if min(patches.shape[1:3]) < 3:
        raise DetectorError(f"crops of {patches.shape[1]}x{patches.shape[2]} px are under 3 px")
    # In integers, so that every machine gets the same bits: luma * 1000, then
    # [1, -2, 1] along rows and along columns (their outer product is Immerkær's mask).
    x = patches.astype(np.int32)
    y = 299 * x[..., 0] + 587 * x[..., 1] + 114 * x[..., 2]
    r = y[:, :, :-2] - 2 * y[:, :, 1:-1] + y[:, :, 2:]
    r = r[:, :-2, :] - 2 * r[:, 1:-1, :] + r[:, 2:, :]
    total = np.abs(r).sum(axis=(1, 2), dtype=np.int64)
    out: np.ndarray = _FACTOR * total / (1000.0 * r.shape[1] * r.shape[2])
    return out


def log_noise(patches: np.ndarray) -> float:
    """log of the image's noise level: the median of `crop_noise` over its crops
    (N, P, P, 3) uint8, floored at NOISE_FLOOR grey levels. Raises DetectorError for no
    crops or a bad shape."""
    if len(patches) == 0:
        raise DetectorError("no crops to estimate the noise level on")
    return math.log(max(float(np.median(crop_noise(patches))), NOISE_FLOOR))
