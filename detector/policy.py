"""The band policy: thresholds that protect real photos, fitted and checked by source.

The "likely generated" threshold is chosen on real photos from sources the model never
trained on, so that at most `target_fpr` of them reach it in total **and** within every
origin (camera JPEGs, scans, phone photos, resized copies...) that has at least
`min_origin_images` images. Its rate on *unseen* sources is estimated by leaving one
source repository out at a time: the threshold is refitted without that repository's
photos and applied to them; the pooled and per-origin rates of these held-out
predictions are what the report states. Between the two thresholds the band says
"uncertain".

Scores are taken exactly as the server takes them (`score_files`): the file's pixels at
native resolution, `Preprocess.crops` keyed stratified crops (`detector.crops`), the
mean crop logit per image. Pure numpy apart from `score_files`.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from detector.calibrate import apply, calibrate, likely_generated
from detector.config import Calibration
from detector.crops import plan_crops
from detector.data import Sample, load_image
from detector.features import harmonise, patch_logits, prepare_network
from detector.metrics import average_precision, expected_calibration_error, roc_auc
from detector.noise import log_noise
from detector.registry import LoadedModel
from provenance.core.errors import DetectorError, MediaError


@dataclass(frozen=True)
class Scored:
    """One image scored as served: its sample, the raw logit of each crop (n,) and the
    log noise level of those crops (`detector.noise.log_noise`)."""

    sample: Sample
    crop_logits: np.ndarray
    noise: float

    @property
    def logit(self) -> float:
        """The image-level raw logit: the mean over crops."""
        return float(self.crop_logits.mean())


def score_files(
    model: LoadedModel,
    samples: Sequence[Sample],
    secret: bytes,
    crops: int,
    device: torch.device | None = None,
    progress: Callable[[int, int], None] | None = None,
    known_logits: Mapping[str, np.ndarray] | None = None,
) -> tuple[list[Scored], list[str]]:
    """Score each file as the server does: crops keyed by (secret, SHA-256 of the file),
    `crops` of them, at native resolution. Returns (scored, "path: reason" for files that
    cannot be decoded or are under the patch size). Each image's log noise level is
    measured on the same crops. known_logits: crop logits already computed for these
    secret and crops, by file path (str); those files only get their noise level."""
    device = device or torch.device("cpu")
    prepare_network(model.net, device)
    pre = model.meta.preprocess
    out: list[Scored] = []
    skipped: list[str] = []
    for i, s in enumerate(samples):
        if progress is not None:
            progress(i, len(samples))
        try:
            key = hashlib.sha256(s.path.read_bytes()).digest()
            rgb = load_image(s.path).rgb
        except (OSError, MediaError) as e:
            skipped.append(f"{s.path}: {e}")
            continue
        h, w = rgb.shape[:2]
        if min(h, w) < pre.patch_size:
            skipped.append(f"{s.path}: {w}x{h} is under {pre.patch_size} px")
            continue
        plan = plan_crops(secret, key, w, h, pre.patch_size, crops)
        rgb = harmonise(rgb, pre)
        patches = np.stack([rgb[c.y : c.y + c.size, c.x : c.x + c.size] for c in plan])
        known = (known_logits or {}).get(str(s.path))
        logits = known if known is not None else patch_logits(model.net, patches, pre, device)
        out.append(Scored(s, logits, log_noise(patches)))
    if progress is not None:
        progress(len(samples), len(samples))
    return out, skipped


def rates_by(keys: Sequence[str], flagged: np.ndarray) -> dict[str, dict[str, float]]:
    """key -> {"images": n, "flagged": share flagged} (sorted by key)."""
    by: dict[str, list[bool]] = defaultdict(list)
    for k, f in zip(keys, flagged, strict=True):
        by[k].append(bool(f))
    return {k: {"images": len(v), "flagged": float(np.mean(v))} for k, v in sorted(by.items())}


def fit_band_policy(
    scored: Sequence[Scored],
    target_fpr: float = 0.05,
    target_miss: float = 0.10,
    min_origin_images: int = 10,
    noise_term: tuple[float, float] | None = None,
) -> tuple[Calibration, dict[str, Any]]:
    """Platt scaling and band thresholds from images that the model never trained on,
    with the leave-one-source-out report described in the module docstring.

    scored: real and generated images (both needed), with `Sample.repo` naming their
    source. noise_term: (ratio, ref) of the band's noise term
    (`detector.calibrate.likely_generated`, version 7), chosen by cross-validation on
    training sources; the flags then use each image's noise level. Returns (calibration, report). Raises DetectorError if a class is missing or
    the model ranks the images backwards.
    """
    labels = np.array([s.sample.label for s in scored])
    logits = np.array([s.logit for s in scored])
    if labels.min() == labels.max():
        raise DetectorError("the band policy needs real and generated images")
    origins = [s.sample.origin for s in scored]
    repos = [s.sample.repo for s in scored]
    levels = np.array([s.noise for s in scored])
    calibration = calibrate(
        logits, labels, target_fpr, target_miss, origins, min_origin_images, noise_term
    )
    probs = apply(calibration, logits)
    flagged = likely_generated(calibration, logits, levels)
    real = labels == 0
    # Leave one source out: each repository's images judged by thresholds (and a Platt
    # fit) made without it.
    held_flag = np.zeros(len(scored), dtype=bool)
    held_prob = np.zeros(len(scored))
    held_low = np.zeros(len(scored), dtype=bool)
    for repo in sorted(set(repos)):
        mine = np.array([r == repo for r in repos])
        rest = ~mine
        if labels[rest].min() == labels[rest].max():
            raise DetectorError(f"without {repo} only one class is left")
        c = calibrate(
            logits[rest],
            labels[rest],
            target_fpr,
            target_miss,
            [o for o, m in zip(origins, rest, strict=True) if m],
            min_origin_images,
            noise_term,
        )
        p = apply(c, logits)
        held_flag[mine] = likely_generated(c, logits[mine], levels[mine])
        held_low[mine] = p[mine] < c.threshold_low
        held_prob[mine] = p[mine]
    gen_fams = [s.sample.family for s in scored]
    report = {
        "images": int(len(labels)),
        "real": int(real.sum()),
        "generated": int((~real).sum()),
        "sources": len(set(repos)),
        "auc": roc_auc(labels, probs),
        "ap": average_precision(labels, probs),
        "fitted_on_all": {
            "real_flagged": float(flagged[real].mean()),
            "generated_flagged": float(flagged[~real].mean()),
        },
        "leave_one_source_out": {
            "real_flagged": float(held_flag[real].mean()),
            "real_no_traces": float(held_low[real].mean()),
            "generated_flagged": float(held_flag[~real].mean()),
            "generated_no_traces": float(held_low[~real].mean()),
            "ece": expected_calibration_error(labels, held_prob),
            "auc": roc_auc(labels, held_prob),
            "real_by_origin": rates_by(
                [o for o, r in zip(origins, real, strict=True) if r], held_flag[real]
            ),
            "real_by_source": rates_by(
                [o for o, r in zip(repos, real, strict=True) if r], held_flag[real]
            ),
            "generated_by_family": rates_by(
                [f for f, r in zip(gen_fams, real, strict=True) if not r], held_flag[~real]
            ),
        },
    }
    return calibration, report
