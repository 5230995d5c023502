"""Calibration of image-level logits and the thresholds of the advisory bands.

Platt scaling (J. Platt, "Probabilistic Outputs for Support Vector Machines", 1999), with
Platt's smoothed targets, fitted by Newton's method on held-out images; band thresholds
are set on the calibrated scores of held-out real and generated images. Pure numpy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from detector.config import Calibration
from provenance.core.errors import DetectorError


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, elementwise, numerically stable; float64 in, float64 out."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """Fit (slope, intercept) of p = sigmoid(slope * logit + intercept).

    logits: (N,) float; labels: (N,) 0/1 with both classes present. Minimises the
    cross-entropy to Platt's targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2), which keeps the
    fit finite when the classes separate. Raises DetectorError if a class is missing.
    """
    x = np.asarray(logits, dtype=np.float64).ravel()
    a, b = _fit_logistic(np.stack([x, np.ones_like(x)], axis=1), labels, iterations)
    return float(a), float(b)


def fit_platt_noise(
    logits: np.ndarray,
    noise: np.ndarray,
    labels: np.ndarray,
    iterations: int = 100,
    one_sided: bool = True,
    ref_quantile: float = 0.5,
) -> tuple[float, float, float, float]:
    """Platt scaling with the image's log noise level as a second input (version 7):
    (slope, intercept, noise_coef, noise_ref) of
    p = sigmoid(slope * logit + intercept + noise_coef * min(noise - noise_ref, 0)).

    logits, noise (`detector.noise.log_noise`), labels: (N,). noise_ref is the
    ref_quantile quantile of the noise levels; one_sided (the served form) moves only
    images cleaner than it, so that a noisy photo is never pushed up; with
    one_sided=False the term is linear, noise_coef * (noise - noise_ref) (measured by
    scripts/detector_candidates.py, not served). The same smoothed targets and Newton's
    method as `fit_platt`. Raises DetectorError if a class is missing, or a logit or
    noise level is NaN or infinite.
    """
    x = np.asarray(logits, dtype=np.float64).ravel()
    n = np.asarray(noise, dtype=np.float64).ravel()
    if bad := int((~np.isfinite(n)).sum()):
        raise DetectorError(
            f"{bad} of {len(n)} held-out noise levels are not finite (NaN or infinite):"
            " nothing to calibrate on"
        )
    ref = float(np.quantile(n, ref_quantile))
    col = np.minimum(n - ref, 0.0) if one_sided else n - ref
    a, b, c = _fit_logistic(np.stack([x, np.ones_like(x), col], axis=1), labels, iterations)
    return float(a), float(b), float(c), ref


def _fit_logistic(design: np.ndarray, labels: np.ndarray, iterations: int) -> np.ndarray:
    """Weights (K,) of sigmoid(design @ w) for design (N, K) (column 0 the logits,
    column 1 the constant, column 2 if any the noise term) fitted to Platt's smoothed
    targets of labels (N,) 0/1 by `fit_logistic`. Raises DetectorError if labels and
    rows differ in number, a class is missing, a logit is NaN or infinite, or the logits
    are all equal (no slope can be fitted: the network tells no image from another)."""
    y = np.asarray(labels).astype(np.int64).ravel()
    if len(y) != len(design):
        raise DetectorError(f"{len(design)} held-out logits but {len(y)} labels")
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise DetectorError("calibration needs held-out images of both classes")
    if bad := int((~np.isfinite(design[:, 0])).sum()):
        raise DetectorError(
            f"{bad} of {len(design)} held-out logits are not finite (NaN or infinite):"
            " nothing to calibrate on"
        )
    if design[:, 0].min() == design[:, 0].max():  # (np.ptp overflows past 0.5 * float max)
        raise DetectorError(
            f"the {len(design)} held-out logits are all equal ({design[0, 0]:g}): the network"
            " tells no image from another, and no calibration slope can be fitted"
        )
    t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    return fit_logistic(design, t, iterations=iterations)


def fit_logistic(
    design: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray | None = None,
    iterations: int = 100,
    intercept: int | None = 1,
) -> np.ndarray:
    """Weights w (K,) float64 minimising the cross-entropy of sigmoid(design @ w) to
    targets (N,) in [0, 1] (each row weighted by weights (N,), default 1), for design
    (N, K) whose column `intercept` is the constant (None: no constant column, as in
    temperature scaling).

    Newton's method with a backtracking line search (Armijo's condition), from w = 0 with
    the intercept (if any) at the targets' log odds: the algorithm of H.-T. Lin, C.-J. Lin and
    R. C. Weng, "A note on Platt's probabilistic outputs for support vector machines"
    (Machine Learning 68, 2007), which converges for inputs of any scale (each Newton
    system is scaled by its diagonal before its 1e-12 ridge, so the ridge does not bias a
    column of tiny values: logits 1e-8 wide fitted a slope 0.55 of the true one before).
    (Plain Newton steps from slope 1 diverged on logits a few units wide: slopes of 1e10,
    either sign.)

    The fit runs on each column divided by the power of two just above its largest
    magnitude (exact), and the weights are divided by the same at the end, so that
    design @ w and the Hessian stay finite for any finite design (held-out logits of
    1e300 overflowed the Hessian and came out as a slope of 0, "ranks backwards").

    Raises DetectorError, before any fitting, for no rows or rows that do not match,
    design values that are NaN or infinite, targets outside [0, 1], and weights that are
    negative, not finite or all 0; after it, when a fitted weight is beyond float64's
    range in the design's units (a column whose values are all subnormal, 1e-320 wide,
    needs a weight of about 1e320).
    """
    design = np.asarray(design, dtype=np.float64)
    t = np.asarray(targets, dtype=np.float64)
    v = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=np.float64)
    if design.ndim != 2 or not len(design) or t.shape != (len(design),) or v.shape != t.shape:
        raise DetectorError(
            "a logistic fit needs design (N, K), targets (N,) and weights (N,) with N >= 1"
            f" rows; got {design.shape}, {t.shape}, {v.shape}"
        )
    if not np.isfinite(design).all():
        raise DetectorError("a logistic fit needs a design of finite values (no NaN or inf)")
    if not (np.isfinite(t).all() and t.min() >= 0 and t.max() <= 1):
        raise DetectorError("a logistic fit needs targets in [0, 1] (no NaN)")
    if not (np.isfinite(v).all() and v.min() >= 0 and v.sum() > 0):
        raise DetectorError("a logistic fit needs finite weights >= 0, not all 0")
    _, e = np.frexp(np.abs(design).max(axis=0))
    w = _newton(np.ldexp(design, -e), t, v, iterations, intercept)
    with np.errstate(over="ignore"):
        out: np.ndarray = np.ldexp(w, -e)
    lost = ~np.isfinite(out) | ((out == 0) & (w != 0))
    if lost.any():
        j = int(np.flatnonzero(lost)[0])
        raise DetectorError(
            f"the weight fitted to column {j} of the design (in calibration, column 0 holds"
            f" the logits) is {w[j]:.3g} * 2**{-e[j]}, beyond float64's range: that column's"
            f" values, at most {np.abs(design[:, j]).max():.3g} in magnitude, need rescaling"
        )
    return out


def _newton(
    design: np.ndarray, t: np.ndarray, v: np.ndarray, iterations: int, intercept: int | None
) -> np.ndarray:
    """`fit_logistic`'s Newton iterations on checked inputs: design (N, K) float64 of
    values at most 1 in magnitude, targets t (N,), row weights v (N,); weights w (K,)."""

    def loss(w: np.ndarray) -> float:
        z = design @ w
        return float(v @ (np.logaddexp(0.0, z) - t * z))  # -[t log p + (1-t) log(1-p)]

    w = np.zeros(design.shape[1])
    if intercept is not None:
        mean = float(np.clip((v @ t) / v.sum(), 1e-6, 1 - 1e-6))
        w[intercept] = np.log(mean / (1.0 - mean))
    f = loss(w)
    for _ in range(iterations):
        p = sigmoid(design @ w)
        grad = design.T @ (v * (p - t))
        hess = design.T @ (design * (v * p * (1.0 - p))[:, None])
        # Jacobi scaling before the ridge, so that the ridge is small against every
        # column's curvature whatever the column's units (logits 1e-8 wide included)
        d = np.sqrt(np.maximum(np.diag(hess), 1e-300))
        step = np.linalg.solve(hess / np.outer(d, d) + 1e-12 * np.eye(len(w)), grad / d) / d
        size = 1.0
        while size >= 1e-10:
            trial = w - size * step
            f_trial = loss(trial)
            if f_trial <= f - 1e-4 * size * float(grad @ step):
                break
            size /= 2
        else:
            break  # no step lowers the loss: at the optimum to float precision
        w, f = trial, f_trial
        if np.abs(size * step).max() < 1e-10 * max(1.0, float(np.abs(w).max())):
            break
    return w


def threshold_at_most(scores: np.ndarray, rate: float) -> float:
    """The smallest threshold t such that the share of scores >= t is at most `rate`:
    just above the (floor(rate * n) + 1)-th highest score. scores: (n,) float, n >= 1.
    Raises DetectorError for no scores."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if len(s) == 0:
        raise DetectorError("no real images to set a threshold on")
    k = int(np.floor(rate * len(s) + 1e-9))
    if k >= len(s):
        return float(s[-1])
    return float(np.nextafter(s[k], np.inf))


def real_threshold(
    scores: np.ndarray,
    origins: Sequence[str] | None,
    target_fpr: float,
    min_origin_images: int = 10,
) -> float:
    """Threshold on real images' scores (n,) meeting `target_fpr` pooled and, when
    origins (n,) are given, within every origin with at least `min_origin_images` images
    (the strictest of these)."""
    scores = np.asarray(scores, dtype=np.float64)
    t = threshold_at_most(scores, target_fpr)
    by: dict[str, list[float]] = defaultdict(list)
    for o, v in zip(origins or (), scores, strict=False):
        by[o].append(float(v))
    for vals in by.values():
        if len(vals) >= min_origin_images:
            t = max(t, threshold_at_most(np.array(vals), target_fpr))
    return t


def calibrate(
    logits: np.ndarray,
    labels: np.ndarray,
    target_fpr: float = 0.05,
    target_miss: float = 0.10,
    origins: Sequence[str] | None = None,
    min_origin_images: int = 10,
    noise_term: tuple[float, float] | None = None,
) -> Calibration:
    """Platt scaling and band thresholds from held-out images.

    logits: (N,) image-level logits; labels: (N,) 0 real / 1 generated. threshold_high is
    the lowest threshold that at most target_fpr of the held-out real images reach
    (`real_threshold`: with origins (N,) given, also within each origin of at least
    min_origin_images real images); threshold_low is the target_miss quantile of the
    generated images' scores, capped at threshold_high. noise_term (ratio, ref), chosen
    elsewhere (by cross-validation on training sources, `fit_platt_noise`), sets the
    band's noise term (`likely_generated`): noise_coef = slope * ratio, noise_ref = ref;
    it changes neither the score nor the thresholds. A slope that is not positive (a
    network that ranks backwards on held-out data) raises DetectorError rather than
    shipping an inverted score.
    """
    slope, intercept = fit_platt(logits, labels)
    if slope <= 0:
        raise DetectorError(
            f"calibration slope {slope:.3g} <= 0: the model ranks held-out data backwards"
        )
    y = np.asarray(labels).astype(np.int64).ravel()
    probs = sigmoid(slope * np.asarray(logits, dtype=np.float64).ravel() + intercept)
    real_origins = (
        None if origins is None else [o for o, v in zip(origins, y, strict=True) if v == 0]
    )
    high = real_threshold(probs[y == 0], real_origins, target_fpr, min_origin_images)
    low = min(float(np.quantile(probs[y == 1], target_miss)), high)
    ratio, ref = noise_term or (0.0, 0.0)
    return Calibration(
        slope=slope,
        intercept=intercept,
        threshold_low=low,
        threshold_high=high,
        target_fpr=target_fpr,
        target_miss=target_miss,
        fitted=True,
        held_out_images=int(len(y)),
        noise_coef=slope * ratio,
        noise_ref=ref,
    )


def apply(calibration: Calibration, logits: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, (N,) float64, for logits (N,)."""
    return sigmoid(calibration.slope * np.asarray(logits, dtype=np.float64) + calibration.intercept)


def noise_offset(calibration: Calibration, noise: np.ndarray | float) -> np.ndarray:
    """The band's noise term, noise_coef * min(noise - noise_ref, 0), for log noise levels
    (N,) (`detector.noise.log_noise`): 0 for images at least as noisy as noise_ref,
    negative (more evidence needed) for cleaner ones. (N,) float64."""
    n = np.asarray(noise, dtype=np.float64)
    out: np.ndarray = calibration.noise_coef * np.minimum(n - calibration.noise_ref, 0.0)
    return out


def likely_generated(
    calibration: Calibration, logits: np.ndarray, noise: np.ndarray | None = None
) -> np.ndarray:
    """Which images (logits (N,), log noise levels (N,)) are "likely generated":
    sigmoid(slope * logit + intercept + `noise_offset`) >= threshold_high. With
    noise_coef 0 (every weights file before version 7) that is score >= threshold_high;
    otherwise an image cleaner than noise_ref needs a higher score, and no image is
    flagged that the plain rule would not flag. (N,) bool. Raises DetectorError if the
    calibration has a noise term and no noise levels are given."""
    z = calibration.slope * np.asarray(logits, dtype=np.float64) + calibration.intercept
    if calibration.noise_coef:
        if noise is None:
            raise DetectorError("this calibration's band needs each image's noise level")
        z = z + noise_offset(calibration, noise)
    flags: np.ndarray = sigmoid(z) >= calibration.threshold_high
    return flags
