"""The configuration that travels with a detector's weights.

In the manner of timm's ``PretrainedCfg``: a weights file carries the architecture, the
input transform (patch size, normalisation, crops per image), the calibration fitted on
held-out data, and a description of the training data, so a score can always be traced to
the model and data that made it. Everything here is plain values, serialised to JSON in
the safetensors metadata (see `detector.weights`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from provenance.core.errors import DetectorError
from provenance.wire.jsontext import loads_text

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How pixels become network input.

    patch_size: side of the square crops, in pixels, cut at native resolution (the image
    is never resized). crops: crops scored per image. mean, std: per-channel RGB
    normalisation applied to values in [0, 1]. jpeg_quality: 1-100 to re-encode the whole
    decoded image as JPEG at that quality (Pillow, 4:2:0) before the crops are cut, as the
    training images were (every file then reaches the network through the same encoder,
    whatever its format); 0 for none.
    """

    patch_size: int = 64
    crops: int = 16
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)
    jpeg_quality: int = 0


@dataclass(frozen=True)
class Calibration:
    """Maps a network's image-level logit to a probability, and probabilities to bands.

    Platt scaling (Platt 1999): p = sigmoid(slope * logit + intercept), fitted on held-out
    images. An image's logit is the mean of its crops' logits.
    threshold_high: probability at or above which the band is "likely generated" (chosen
    so that at most `target_fpr` of held-out real images reach it). threshold_low:
    probability below which the band is "no generator traces found" (chosen so that at
    most `target_miss` of held-out generated images fall below it); never above
    threshold_high. fitted: False for weights that came without held-out calibration
    (external checkpoints), whose "probability" is the raw sigmoid.
    noise_coef, noise_ref (version 7): the band's noise term. An image whose log noise
    level n (`detector.noise.log_noise`, natural log of grey levels 0-255, on the crops the
    network sees) is under noise_ref is "likely generated" only if
    sigmoid(slope * logit + intercept + noise_coef * (n - noise_ref)) >= threshold_high:
    clean photos need more evidence. The score itself does not change. noise_coef 0 (the
    default, and every weights file written before version 7) leaves it out.
    """

    slope: float = 1.0
    intercept: float = 0.0
    threshold_low: float = 0.2
    threshold_high: float = 0.8
    target_fpr: float = 0.05
    target_miss: float = 0.10
    fitted: bool = False
    held_out_images: int = 0
    noise_coef: float = 0.0
    noise_ref: float = 0.0


@dataclass(frozen=True)
class ModelMeta:
    """Identity and provenance of one set of weights.

    model_id: registry name of the model family (e.g. "default"). version: the weights'
    version string. arch: network name in `detector.model.ARCHITECTURES`; arch_kwargs: its
    keyword arguments. training: free description of the data and arguments that made the
    weights (JSON-compatible). tensors_sha256: SHA-256 over the tensors (see
    `detector.weights.tensors_digest`), empty for external checkpoints.
    """

    model_id: str
    version: str
    arch: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess = field(default_factory=Preprocess)
    calibration: Calibration = field(default_factory=Calibration)
    training: dict[str, Any] = field(default_factory=dict)
    tensors_sha256: str = ""

    def to_json(self) -> str:
        """Serialise to a JSON string (sorted keys, so equal metadata gives equal text)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Parse what `to_json` wrote. Raises DetectorError on malformed metadata."""
        try:
            raw = loads_text(text)
            pre = raw.pop("preprocess")
            pre["mean"] = tuple(pre["mean"])
            pre["std"] = tuple(pre["std"])
            return cls(
                preprocess=Preprocess(**pre),
                calibration=Calibration(**raw.pop("calibration")),
                **raw,
            )
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            raise DetectorError(f"malformed detector metadata: {e}") from e
