"""The named detector models, and loading them into networks.

| name | what | weights |
| --- | --- | --- |
| default | this project's detector (docs/detector.md), 64 px patches | shipped in detector/weights |
| cnndetection | CNNDetection's ResNet-50 (Wang et al. 2020) | the user's .pth, by path |
| npr | NPR's ResNet (Tan et al. 2024) | the user's .pth, by path |

Published checkpoints come without calibration on held-out data: their score is the raw
sigmoid of the logit, their version says "uncalibrated", and their bands use fixed
thresholds 0.2 / 0.8.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from detector.config import IMAGENET_MEAN, IMAGENET_STD, Calibration, ModelMeta, Preprocess
from detector.model import build_network
from detector.weights import apply_state, load_checkpoint, load_weights
from provenance.core.errors import DetectorError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Input transform of the published ImageNet-initialised ResNets: 224 px crops, ImageNet
#: normalisation (both repositories' test transforms), 4 crops per image.
_IMAGENET_224 = Preprocess(patch_size=224, crops=4, mean=IMAGENET_MEAN, std=IMAGENET_STD)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    shipped: weight files inside the package, for our models. external_arch /
    external_preprocess: architecture and input transform of a published network whose
    checkpoint the user supplies.
    """

    name: str
    description: str
    shipped: Path | None = None
    external_arch: str | None = None
    external_preprocess: Preprocess | None = None


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "default",
            "this project's detector, 64 px patches",
            WEIGHTS_DIR / "default.safetensors",
        ),
        ModelSpec(
            "cnndetection",
            "CNNDetection ResNet-50 (needs --weights)",
            external_arch="cnndetection_resnet50",
            external_preprocess=_IMAGENET_224,
        ),
        ModelSpec(
            "npr",
            "NPR ResNet (needs --weights)",
            external_arch="npr_resnet50",
            external_preprocess=_IMAGENET_224,
        ),
    )
}


@dataclass(frozen=True)
class LoadedModel:
    """A network in eval mode with the metadata that says how to feed and read it."""

    net: nn.Module
    meta: ModelMeta


def _load_ours(path: Path) -> LoadedModel:
    state, meta = load_weights(path)
    try:
        net = build_network(meta.arch, meta.arch_kwargs)
    except (KeyError, TypeError, ValueError) as e:
        raise DetectorError(f"{path}: unknown architecture {meta.arch!r} {meta.arch_kwargs}") from e
    apply_state(net, state, str(path))
    return LoadedModel(net.eval(), meta)


def _load_external(spec: ModelSpec, path: Path) -> LoadedModel:
    assert spec.external_arch is not None and spec.external_preprocess is not None
    state = load_checkpoint(path)
    net = build_network(spec.external_arch)
    if spec.external_arch == "npr_resnet50":
        # NPR's trainer attaches an unused 2048-to-1 `fc`; training-time saves may carry it.
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    apply_state(net, state, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    meta = ModelMeta(
        model_id=spec.name,
        version=f"external-uncalibrated-{digest[:12]}",
        arch=spec.external_arch,
        preprocess=spec.external_preprocess,
        calibration=Calibration(),
        training={"source": str(path), "sha256": digest},
    )
    return LoadedModel(net.eval(), meta)


def model_spec(name: str, weights: Path | None) -> ModelSpec:
    """The registry entry ``name``, checked against the arguments alone (nothing read):
    raises DetectorError for an unknown name, or a published network ("cnndetection",
    "npr") asked for without ``weights``, its checkpoint."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise DetectorError(f"unknown detector model {name!r}; known: {', '.join(REGISTRY)}")
    if spec.external_arch is not None and weights is None:
        raise DetectorError(f"model {name!r} needs its published checkpoint: pass a weights path")
    return spec


def load_model(name: str = "default", weights: Path | None = None) -> LoadedModel:
    """The network of a registry entry.

    weights: for "cnndetection" / "npr", the published checkpoint (required); for our
    models, a weights file to use instead of the shipped one (e.g. a larger model trained
    on a GPU). Raises DetectorError.
    """
    spec = model_spec(name, weights)
    if spec.external_arch is not None:
        assert weights is not None
        _check_weights_file(weights)
        return _load_external(spec, weights)
    path = weights or spec.shipped
    assert path is not None
    _check_weights_file(path)
    return _load_ours(path)


def _check_weights_file(path: Path) -> None:
    """Raises DetectorError unless ``path`` is a regular file (a FIFO or device such as
    /dev/zero would be read without end)."""
    if not path.exists():
        raise DetectorError(f"weights file {path} not found")
    if not path.is_file():
        raise DetectorError(
            f"weights file {path} is not a regular file (a folder, FIFO or device):"
            " give a .safetensors file"
        )
