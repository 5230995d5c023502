"""Reading and writing detector weights.

Our weights are safetensors files whose metadata holds a `ModelMeta` as JSON under the key
``prov_detector`` (architecture, preprocessing, calibration, training data, version) and a
SHA-256 over the tensors, checked on load. Published checkpoints of CNNDetection and NPR
(PyTorch ``.pth`` pickles, read with ``weights_only=True`` so no code runs) load by path
into the matching architecture of `detector.model`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from detector.config import ModelMeta
from provenance.core.errors import DetectorError

METADATA_KEY = "prov_detector"


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 over the tensors in key order: for each, its name, dtype, shape and
    raw little-endian bytes."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(json.dumps([key, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(path: Path, model: nn.Module, meta: ModelMeta) -> ModelMeta:
    """Write model's state dict and meta (with its tensors digest filled in) to path.

    Returns the meta as written. Raises DetectorError if the file cannot be written.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = replace(meta, tensors_sha256=tensors_digest(state))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"format": "pt", METADATA_KEY: meta.to_json()})
    except OSError as e:
        raise DetectorError(f"cannot write weights to {path}: {e}") from e
    return meta


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and raw metadata of a safetensors file. Raises DetectorError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (
        OSError,
        ValueError,
        RuntimeError,
    ) as e:  # safetensors raises SafetensorError(ValueError)
        raise DetectorError(f"cannot read weights {path}: {e}") from e
    return state, metadata


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], ModelMeta]:
    """Tensors and metadata of weights written by `save_weights`.

    Raises DetectorError if the file is unreadable, carries no detector metadata, or its
    tensors do not match the digest in the metadata.
    """
    state, metadata = read_safetensors(path)
    if METADATA_KEY not in metadata:
        raise DetectorError(
            f"{path} has no {METADATA_KEY!r} metadata; name the architecture to load it "
            "(e.g. the 'cnndetection' or 'npr' model)"
        )
    meta = ModelMeta.from_json(metadata[METADATA_KEY])
    digest = tensors_digest(state)
    if meta.tensors_sha256 and digest != meta.tensors_sha256:
        raise DetectorError(f"{path}: tensors do not match their metadata digest")
    return state, meta


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A bare state dict from a published checkpoint (.pth/.pt pickle or .safetensors).

    Accepts a state dict, or a dict holding one under "model" or "state_dict"
    (CNNDetection saves {"model": ..., "optimizer": ...}); strips a DataParallel
    "module." prefix. Pickles are read with torch.load(weights_only=True). Raises
    DetectorError.
    """
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling refuses anything that is not plain tensors/containers
        raise DetectorError(f"cannot load checkpoint {path}: {e}") from e
    for key in ("model", "state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise DetectorError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in raw.items()}


def apply_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load state into model strictly; names and shapes must match exactly.

    Raises DetectorError listing missing, unexpected and mis-shaped keys (at most 5 each).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = [
            f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape", shapes),
            )
            if items
        ]
        raise DetectorError(f"{source} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
