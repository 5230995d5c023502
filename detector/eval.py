"""Leave-one-family-out evaluation, and scoring a fixed model on labelled data.

Protocol of `leave_one_family_out` (everything decided before any test score is seen):

* Real images are split once by group: `real_test_fraction` of groups are test images in
  every fold and are never trained on; the rest are available for training.
* For each generator family F: the test set is all of F's images plus the real test
  images. A model is trained from scratch on the other families' images and the
  remaining real images, minus a calibration split (`TrainConfig.calibration_fraction`
  of groups), on which Platt scaling and the band thresholds are fitted (harmonised
  condition). No threshold or parameter is chosen on the test set.
* Test images are scored under every condition of `detector.transforms.CONDITIONS`;
  reported per fold and condition: ROC AUC, average precision, ECE of the calibrated
  probability, and the share of F's images and of test real images at or above the
  calibration's "likely generated" threshold. Trivial-cue baselines on the same test
  images (container is not JPEG; fewer pixels) show how much the as-is condition can be
  won without looking at pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from detector.calibrate import apply, calibrate
from detector.config import Calibration, Preprocess
from detector.data import PreparedImage, Sample, in_split, prepare
from detector.metrics import average_precision, expected_calibration_error, roc_auc
from detector.train import (
    Progress,
    TrainConfig,
    describe_data,
    image_logits,
    new_network,
    to_jsonable,
    train_network,
)
from detector.transforms import CONDITIONS, Augment
from provenance.core.errors import DetectorError


@dataclass(frozen=True)
class EvalConfig:
    """Leave-one-family-out settings: train holds the per-fold training recipe;
    real_test_fraction the share of real groups kept for testing; families the families
    to hold out (None: every family with a known kind except "unknown")."""

    train: TrainConfig = field(default_factory=TrainConfig)
    real_test_fraction: float = 0.3
    families: tuple[str, ...] | None = None


def _metrics(labels: np.ndarray, logits: np.ndarray, cal: Calibration) -> dict[str, float]:
    probs = apply(cal, logits)
    flagged = probs >= cal.threshold_high
    return {
        "auc": roc_auc(labels, logits),
        "ap": average_precision(labels, logits),
        "ece": expected_calibration_error(labels, probs),
        "generated_flagged": float(flagged[labels == 1].mean()),
        "real_flagged": float(flagged[labels == 0].mean()),
    }


def score_conditions(
    net: nn.Module,
    images: Sequence[PreparedImage],
    preprocess: Preprocess,
    device: torch.device,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """condition -> (labels (n,), image logits (n,)) over the images that have that
    condition (an image too small after a condition is left out of it)."""
    out = {}
    for cond in CONDITIONS:
        have = [im for im in images if cond in im.conditions]
        if have:
            labels = np.array([im.sample.label for im in have])
            out[cond] = (labels, image_logits(net, have, cond, preprocess, device))
    return out


def held_out_families(asked: tuple[str, ...] | None, samples: Sequence[Sample]) -> tuple[str, ...]:
    """The generator families to hold out one at a time: ``asked``, or when None every
    family of the generated ``samples`` but "unknown". Raises DetectorError naming any
    asked family of which ``samples`` hold no generated image, and the known ones."""
    known = {s.family for s in samples if s.label == 1}
    families = asked or tuple(sorted(known - {"unknown"}))
    if set(families) - known:
        raise DetectorError(
            f"no generated images of families {sorted(set(families) - known)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return families


def leave_one_family_out(
    samples: Sequence[Sample],
    config: EvalConfig,
    device: torch.device | None = None,
    progress: Progress | None = None,
    on_fold: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol in the module docstring; returns a JSON-compatible report.

    on_fold(family, fold report) is called as each fold finishes.
    """
    device = device or torch.device("cpu")
    tc = config.train
    start = time.monotonic()
    prepared, skipped = prepare(
        samples,
        tc.augment,
        tc.patch,
        tc.variants,
        tc.per_variant,
        tc.eval_crops,
        tc.seed,
        progress=(lambda d, t: progress("prepare", d, t)) if progress else None,
    )
    preprocess = Preprocess(patch_size=tc.patch, crops=tc.eval_crops)
    real_test = [
        p
        for p in prepared
        if p.sample.label == 0 and in_split(p.sample.group, config.real_test_fraction, "real-test")
    ]
    test_ids = {id(p) for p in real_test}
    families = held_out_families(config.families, [p.sample for p in prepared])
    folds: dict[str, Any] = {}
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {c: [] for c in CONDITIONS}
    for k, family in enumerate(families):
        held = [p for p in prepared if p.sample.family == family]
        pool = [p for p in prepared if p.sample.family != family and id(p) not in test_ids]
        salt = f"calibration-{tc.seed}"
        cal = [p for p in pool if in_split(p.sample.group, tc.calibration_fraction, salt)]
        train = [p for p in pool if not in_split(p.sample.group, tc.calibration_fraction, salt)]
        patches = np.concatenate([p.train_patches for p in train])
        labels = np.concatenate([np.full(len(p.train_patches), p.sample.label) for p in train])
        net, _ = new_network(tc)

        def fold_progress(stage: str, done: int, total: int, k: int = k) -> None:
            if progress is not None:
                progress(f"fold {k + 1}/{len(families)} {stage}", done, total)

        train_network(net, patches, labels, tc, preprocess, device, fold_progress)
        cal_labels = np.array([p.sample.label for p in cal])
        calibration = calibrate(
            image_logits(net, cal, "harmonised", preprocess, device), cal_labels
        )
        test = held + real_test
        scored = score_conditions(net, test, preprocess, device)
        is_jpeg = np.array([p.is_jpeg for p in test])
        pixels = np.array([p.pixels for p in test], dtype=np.float64)
        test_labels = np.array([p.sample.label for p in test])
        folds[family] = {
            "kind": held[0].sample.kind,
            "test_generated": len(held),
            "test_real": len(real_test),
            "train_images": len(train),
            "calibration_images": len(cal),
            "calibration": asdict(calibration),
            "baseline_auc_not_jpeg": roc_auc(test_labels, (~is_jpeg).astype(float)),
            "baseline_auc_fewer_pixels": roc_auc(test_labels, -pixels),
            "conditions": {c: _metrics(y, s, calibration) for c, (y, s) in scored.items()},
        }
        for c, (y, s) in scored.items():
            pooled[c].append((y, apply(calibration, s)))
        if on_fold is not None:
            on_fold(family, folds[family])
    summary: dict[str, Any] = {}
    for cond in CONDITIONS:
        for kind in ("gan", "diffusion", "other"):
            aucs = [
                f["conditions"][cond]["auc"]
                for f in folds.values()
                if f["kind"] == kind and cond in f["conditions"]
            ]
            if aucs:
                summary.setdefault(f"mean_auc_{kind}", {})[cond] = float(np.mean(aucs))
                summary.setdefault(f"min_auc_{kind}", {})[cond] = float(np.min(aucs))
        if pooled[cond]:
            y = np.concatenate([a for a, _ in pooled[cond]])
            p = np.concatenate([b for _, b in pooled[cond]])
            summary.setdefault("pooled_ece", {})[cond] = expected_calibration_error(y, p)
    return {
        "protocol": "leave-one-family-out; see detector/eval.py",
        "config": to_jsonable(asdict(config)),
        "data": describe_data([p.sample for p in prepared]),
        "real_test_images": len(real_test),
        "skipped": skipped,
        "folds": folds,
        "summary": summary,
        "seconds": round(time.monotonic() - start, 1),
        "torch_threads": torch.get_num_threads(),
    }


def evaluate_model(
    net: nn.Module,
    preprocess: Preprocess,
    calibration: Calibration,
    samples: Sequence[Sample],
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Score a trained model on labelled data, per generated family against all real
    images, under every condition. Meaningful only on data the model never saw."""
    device = device or torch.device("cpu")
    prepared, skipped = prepare(
        samples,
        Augment(),
        preprocess.patch_size,
        0,
        0,
        preprocess.crops,
        0,
        progress=(lambda d, t: progress("prepare", d, t)) if progress else None,
    )
    real = [p for p in prepared if p.sample.label == 0]
    fams = sorted({p.sample.family for p in prepared if p.sample.label == 1})
    report: dict[str, Any] = {
        "data": describe_data([p.sample for p in prepared]),
        "skipped": skipped,
        "families": {},
    }
    for fam in fams:
        test = [p for p in prepared if p.sample.family == fam] + real
        scored = score_conditions(net, test, preprocess, device)
        report["families"][fam] = {c: _metrics(y, s, calibration) for c, (y, s) in scored.items()}
    scored = score_conditions(net, prepared, preprocess, device)
    report["all"] = {c: _metrics(y, s, calibration) for c, (y, s) in scored.items()}
    return report
