"""Training a patch detector, and the whole recipe that produces shippable weights.

`train_network` is the loop: class-balanced sampling of uint8 patches, random flips,
AdamW with a one-cycle learning rate (Smith & Topin 2019), binary cross-entropy on one
logit per patch; bf16 autocast and channels-last on CUDA, the same code on CPU.
`fit` is the recipe behind ``prov detector train``: read the data sets, split by group
into training and calibration images, cut harmonised and augmented patches, train,
calibrate on the held-out images (harmonised condition), and save the weights with their
metadata and, beside them, the resolved arguments as JSON.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from detector.calibrate import calibrate
from detector.config import ModelMeta, Preprocess
from detector.data import PreparedImage, Sample, in_split, load_samples, prepare
from detector.features import autocast, patch_logits, prepare_network, to_input
from detector.metrics import average_precision, roc_auc
from detector.model import build_network
from detector.transforms import Augment
from detector.weights import save_weights
from provenance.core.errors import DetectorError

#: progress(stage, done, total): called as work advances; stage names the step.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a training run; saved beside the weights.

    patch: patch side in pixels. variants / per_variant: augmented variants of each image
    and patches cut from each. eval_crops: grid crops per image for calibration.
    epochs, batch_size, lr, weight_decay: optimisation. widths, residual: the network
    (see `detector.model.PatchResNet`). calibration_fraction: share of groups held out
    for calibration. seed: seeds numpy, torch and the data split's salt.
    """

    patch: int = 64
    variants: int = 3
    per_variant: int = 8
    eval_crops: int = 16
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    residual: str = "npr"
    calibration_fraction: float = 0.2
    seed: int = 0
    augment: Augment = field(default_factory=Augment)


def train_network(
    net: nn.Module,
    patches: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    preprocess: Preprocess,
    device: torch.device,
    progress: Progress | None = None,
) -> nn.Module:
    """Train net in place on patches (N, P, P, 3) uint8 with labels (N,) 0/1.

    Each epoch draws N patches with replacement, each class with equal probability, in
    batches of config.batch_size. Returns net in eval mode. Raises DetectorError if a
    class is missing.
    """
    y = np.asarray(labels).astype(np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() == 0:
        raise DetectorError("training needs patches of both classes")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    weights = torch.tensor(1.0 / counts[y], dtype=torch.float64)
    steps = max(1, len(y) // config.batch_size)
    prepare_network(net, device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, config.lr, total_steps=steps * config.epochs)
    data = torch.from_numpy(patches)
    target = torch.from_numpy(y).float()
    net.train()
    for epoch in range(config.epochs):
        order = torch.multinomial(weights, steps * config.batch_size, True, generator=gen)
        for step in range(steps):
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = data[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            batch[flip] = batch[flip].flip(2)
            x = to_input(batch.to(device), preprocess)
            with autocast(device):
                logits = net(x).float()
            loss = F.binary_cross_entropy_with_logits(logits, target[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            opt.step()
            sched.step()
            if progress is not None:
                progress("train", epoch * steps + step + 1, steps * config.epochs)
    return net.eval()


def image_logits(
    net: nn.Module,
    images: Sequence[PreparedImage],
    condition: str,
    preprocess: Preprocess,
    device: torch.device,
) -> np.ndarray:
    """Image-level logits (len(images),): the mean patch logit of each image's grid crops
    under `condition`."""
    chunks = [im.conditions[condition] for im in images]
    logits = patch_logits(net, np.concatenate(chunks), preprocess, device)
    bounds = np.cumsum([0] + [len(c) for c in chunks])
    return np.array([logits[a:b].mean() for a, b in zip(bounds[:-1], bounds[1:], strict=True)])


def new_network(config: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh PatchResNet for config, its initial weights drawn from config.seed, and the
    arch kwargs that rebuild it."""
    kwargs = {"residual": config.residual, "widths": list(config.widths)}
    torch.manual_seed(config.seed)
    return build_network("patch_resnet", kwargs), kwargs


def describe_data(samples: Sequence[Sample]) -> dict[str, Any]:
    """Counts of images per label and family, for the metadata."""
    fams: dict[str, int] = {}
    for s in samples:
        fams[s.family] = fams.get(s.family, 0) + 1
    return {
        "images": len(samples),
        "generated": sum(s.label for s in samples),
        "real": sum(1 - s.label for s in samples),
        "families": dict(sorted(fams.items())),
    }


def fit(
    sources: Sequence[Path],
    out: Path,
    config: TrainConfig,
    model_id: str = "default",
    version: str = "1",
    device: torch.device | None = None,
    progress: Progress | None = None,
) -> tuple[ModelMeta, dict[str, Any]]:
    """Train, calibrate and save a model from data sets; returns (meta, summary).

    Groups (tiles of one figure) go wholly to training or to calibration. The summary
    holds the held-out AUC on the calibration images (harmonised) and data counts; it is
    also saved with the arguments as JSON next to the weights (out with suffix .json).
    Raises DetectorError (before any training when the training or the calibration
    split lacks a class) / MediaError.
    """
    device = device or torch.device("cpu")
    samples = load_samples(sources)
    prepared, skipped = prepare(
        samples,
        config.augment,
        config.patch,
        config.variants,
        config.per_variant,
        config.eval_crops,
        config.seed,
        conditions=("harmonised",),
        progress=(lambda d, t: progress("prepare", d, t)) if progress else None,
    )
    salt = f"calibration-{config.seed}"
    is_cal = [in_split(p.sample.group, config.calibration_fraction, salt) for p in prepared]
    train_set = [p for p, c in zip(prepared, is_cal, strict=True) if not c]
    cal_set = [p for p, c in zip(prepared, is_cal, strict=True) if c]
    for name, split in (("training", train_set), ("calibration", cal_set)):
        n_gen = sum(p.sample.label for p in split)
        if n_gen == 0 or n_gen == len(split):
            raise DetectorError(
                f"the {name} split has {len(split) - n_gen} real and {n_gen} generated images"
                f" (of {len(prepared)}; calibration_fraction {config.calibration_fraction}"
                " of the groups are held out for calibration): it needs images of both"
                " classes; add images"
            )
    preprocess = Preprocess(patch_size=config.patch, crops=config.eval_crops)
    patches = np.concatenate([p.train_patches for p in train_set])
    labels = np.concatenate([np.full(len(p.train_patches), p.sample.label) for p in train_set])
    net, kwargs = new_network(config)
    train_network(net, patches, labels, config, preprocess, device, progress)
    cal_labels = np.array([p.sample.label for p in cal_set])
    cal_logits = image_logits(net, cal_set, "harmonised", preprocess, device)
    calibration = calibrate(cal_logits, cal_labels)
    summary = {
        "calibration_images": len(cal_set),
        "calibration_auc_harmonised": roc_auc(cal_labels, cal_logits),
        "calibration_ap_harmonised": average_precision(cal_labels, cal_logits),
        "train_images": len(train_set),
        "train_patches": int(len(patches)),
        "skipped": skipped,
    }
    training = {
        "sources": [str(s) for s in sources],
        "data": describe_data([p.sample for p in prepared]),
        "harmonisation": "every training image: random crop <=256 px at any offset, "
        "optional downscale/blur, then JPEG re-encode (Pillow, 4:2:0) at a random quality",
        "config": to_jsonable(asdict(config)),
        "summary": {k: v for k, v in summary.items() if k != "skipped"},
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    meta = ModelMeta(
        model_id=model_id,
        version=version,
        arch="patch_resnet",
        arch_kwargs=kwargs,
        preprocess=preprocess,
        calibration=calibration,
        training=training,
    )
    meta = save_weights(out, net, meta)
    args = {
        "config": to_jsonable(asdict(config)),
        "sources": [str(s) for s in sources],
        "model_id": model_id,
        "version": version,
        "summary": summary,
        "calibration": asdict(calibration),
        "tensors_sha256": meta.tensors_sha256,
    }
    out.with_suffix(".json").write_text(json.dumps(args, indent=2, sort_keys=True) + "\n")
    return meta, summary


def to_jsonable(value: Any) -> Any:
    """Tuples to lists, recursively, so JSON round trips compare equal."""
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value
