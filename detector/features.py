"""The input transform and the batched forward pass shared by training, evaluation and
inference.

Patches travel as uint8 (B, P, P, 3) arrays up to the device, where they become
normalised float32 (B, 3, P, P); on CUDA the input is channels-last and the forward pass
runs under bf16 autocast, on CPU in float32. The residual (NPR) transform is part of the
network itself (see `detector.model`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from detector.config import Preprocess
from detector.transforms import jpeg_roundtrip
from provenance.core.errors import MediaError

#: Most pixels a side of a JPEG image libjpeg writes (JPEG_MAX_DIMENSION in jmorecfg.h;
#: the format itself allows 65535, ITU T.81 B.2.2).
JPEG_MAX_SIDE = 65500


def sized(rgb: np.ndarray, video: bool = False) -> str:
    """The size of ``rgb`` (H, W, 3) as an error begins with it: "image is WxH pixels", or
    for a video's frame "the video's frames are WxH pixels"."""
    h, w = rgb.shape[:2]
    subject = "the video's frames are" if video else "image is"
    return f"{subject} {w}x{h} pixels"


def harmonise(rgb: np.ndarray, preprocess: Preprocess, video: bool = False) -> np.ndarray:
    """The decoded image (H, W, 3) uint8 as the network sees it before cropping:
    re-encoded as JPEG at ``preprocess.jpeg_quality`` (Pillow, 4:2:0) when that is set,
    else unchanged. Deterministic, so the same file keeps the same score. Raises MediaError
    when it must be re-encoded and a side exceeds JPEG_MAX_SIDE (speaking of the video's
    frames when ``video``)."""
    if preprocess.jpeg_quality:
        h, w = rgb.shape[:2]
        if max(h, w) > JPEG_MAX_SIDE:
            raise MediaError(
                f"{sized(rgb, video)}; the detector re-encodes images as JPEG, which"
                f" allows at most {JPEG_MAX_SIDE} on each side"
            )
        return jpeg_roundtrip(rgb, preprocess.jpeg_quality)
    return rgb


def to_input(patches: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """uint8 patches (B, P, P, 3) on any device -> normalised float32 (B, 3, P, P)."""
    # In place, on the one float copy: (v / 255 - mean) / std.
    x = patches.permute(0, 3, 1, 2).float().div_(255.0)
    x.sub_(torch.tensor(preprocess.mean, device=x.device).view(1, 3, 1, 1))
    x.div_(torch.tensor(preprocess.std, device=x.device).view(1, 3, 1, 1))
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def prepare_network(net: nn.Module, device: torch.device) -> nn.Module:
    """Move net to device (channels-last memory format on CUDA)."""
    net.to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs omit memory_format; Module.to accepts it
    return net


@torch.inference_mode()
def patch_logits(
    net: nn.Module,
    patches: np.ndarray,
    preprocess: Preprocess,
    device: torch.device,
    batch_size: int = 512,
) -> np.ndarray:
    """Logits (N,) float32 of patches (N, P, P, 3) uint8, in batches of batch_size."""
    out = []
    for i in range(0, len(patches), batch_size):
        x = to_input(
            torch.from_numpy(np.ascontiguousarray(patches[i : i + batch_size])).to(device),
            preprocess,
        )
        with autocast(device):
            out.append(net(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)
