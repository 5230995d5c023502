"""Training fakes made from real photos: aligned reconstructions and synthetic fingerprints.

Two ways to give a real photo a generator's traces while keeping its content, so that
content and file format cannot be what a detector learns (issue 14):

* `TinyAutoencoder`: the tiny autoencoder distilled from the FLUX.2 VAE whose weights are
  in ``../shared/fixtures/detector_tools/`` (MIT licence, madebyollin/taesd). Encoding and
  decoding a real photo gives an *aligned* fake: the same picture carrying a
  latent-diffusion decoder's fingerprint (Ricker et al. 2024, "AEROBLADE"; Rajan et al.
  2025, "On the Effectiveness of Dataset Alignment for Fake Image Detection"). The network
  is written here from the facts in that folder's README; no code is copied.
* `random_upsampler`: a small randomly initialised up-sampling decoder (transposed
  convolution, pixel shuffle, nearest + conv or bilinear + conv) applied to a 2x
  down-sampled real crop, redrawn for every image, so the detector sees many up-sampling
  fingerprints rather than one (in the spirit of Tan et al. 2024, "Rethinking the
  Up-Sampling Operations in CNN-based Generative Network for Generalizable Deepfake
  Detection").

Both take and return RGB as (H, W, 3) uint8 numpy arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from provenance.core.errors import DetectorError

#: The folder holding ``taef2_encoder.pth`` and ``taef2_decoder.pth``.
TOOLS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "detector_tools"
UPSAMPLERS = ("transposed", "pixel_shuffle", "nearest_conv", "bilinear_conv")


def _conv(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class _Block(nn.Module):
    """conv-ReLU-conv-ReLU-conv plus the input, then ReLU; "pooled" blocks first add a
    1x1 bottleneck of the input (64 -> 256 -> 64 with GroupNorm)."""

    def __init__(self, pooled: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv(64, 64), nn.ReLU(), _conv(64, 64), nn.ReLU(), _conv(64, 64))
        self.pool = (
            nn.Sequential(
                nn.Conv2d(64, 256, 1, bias=False),
                nn.GroupNorm(4, 256),
                nn.ReLU(),
                nn.Conv2d(256, 64, 1, bias=False),
            )
            if pooled
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 64, H, W) -> (B, 64, H, W)."""
        if self.pool is not None:
            x = x + self.pool(x)
        return F.relu(self.conv(x) + x)


class _LatentClamp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class TinyAutoencoder(nn.Module):
    """The FLUX.2 tiny autoencoder: RGB in [0, 1] (B, 3, H, W), H and W multiples of 8,
    to a (B, 32, H/8, W/8) latent and back."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            _conv(3, 64),
            _Block(),
            _conv(64, 64, 2, False),
            *[_Block() for _ in range(3)],
            _conv(64, 64, 2, False),
            *[_Block() for _ in range(3)],
            _conv(64, 64, 2, False),
            *[_Block(pooled=True) for _ in range(3)],
            _conv(64, 32),
        )
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoder = nn.Sequential(
            _LatentClamp(),
            _conv(32, 64),
            nn.ReLU(),
            *[_Block(pooled=True) for _ in range(3)],
            up,
            _conv(64, 64, bias=False),
            *[_Block() for _ in range(3)],
            up,
            _conv(64, 64, bias=False),
            *[_Block() for _ in range(3)],
            up,
            _conv(64, 64, bias=False),
            _Block(),
            _conv(64, 3),
        )

    @classmethod
    def load(cls, tools: Path = TOOLS) -> TinyAutoencoder:
        """The network with the shared weights. Raises DetectorError if they are missing
        or do not match the layout."""
        net = cls()
        try:
            for part in ("encoder", "decoder"):
                state = torch.load(tools / f"taef2_{part}.pth", weights_only=True)
                getattr(net, part).load_state_dict(state)
        except (OSError, RuntimeError) as e:
            raise DetectorError(f"cannot load the tiny autoencoder from {tools}: {e}") from e
        return net.eval()

    @torch.inference_mode()
    def reconstruct(self, rgb: np.ndarray) -> np.ndarray:
        """Encode and decode rgb (H, W, 3) uint8 (H, W multiples of 8) -> (H, W, 3) uint8."""
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
        y = self.decoder(self.encoder(x)).clamp(0, 1)
        out: np.ndarray = (y[0].permute(1, 2, 0) * 255).round().byte().numpy()
        return out


@torch.inference_mode()
def random_upsampler(rgb: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """rgb (H, W, 3) uint8, H and W even, 2x down-sampled (area) and up-sampled again by a
    random decoder of `kind` (one of UPSAMPLERS) drawn from `seed`; a random 3x3 mixing
    convolution and a small random residual follow. Returns (H, W, 3) uint8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    small = F.avg_pool2d(x, 2)
    if kind == "transposed":
        k = int(torch.randint(2, 5, (1,), generator=g)) * 2  # 4, 6 or 8 taps: uneven overlap
        w = torch.rand(3, 1, k, k, generator=g) + 0.2
        # Stride 2: each output phase's taps sum to 1 only on average, so uneven phases
        # leave a strong brightness checkerboard (as early GAN decoders did).
        w = w / w.sum(dim=(1, 2, 3), keepdim=True) * 4
        y = F.conv_transpose2d(small, w, stride=2, padding=(k - 2) // 2, groups=3)
    elif kind == "pixel_shuffle":
        w = torch.zeros(12, 3, 3, 3)
        for c in range(3):
            w[c * 4 : c * 4 + 4, c] = torch.rand(4, 3, 3, generator=g) + 0.2
        w = w / w.sum(dim=(1, 2, 3), keepdim=True)
        y = F.pixel_shuffle(F.conv2d(small, w, padding=1), 2)
    elif kind in ("nearest_conv", "bilinear_conv"):
        mode = "nearest" if kind == "nearest_conv" else "bilinear"
        up = F.interpolate(small, scale_factor=2.0, mode=mode)
        w = torch.rand(3, 1, 3, 3, generator=g) + 0.2
        y = F.conv2d(up, w / w.sum(dim=(1, 2, 3), keepdim=True), padding=1, groups=3)
    else:
        raise DetectorError(f"unknown upsampler {kind!r}; expected one of {UPSAMPLERS}")
    y = y[..., : x.shape[-2], : x.shape[-1]]
    mix = torch.eye(3) * 0.9 + torch.rand(3, 3, generator=g) * 0.1 / 3
    y = torch.einsum("ij,bjhw->bihw", mix / mix.sum(1, keepdim=True), y)
    y = y + 0.01 * torch.tanh(F.conv2d(y, torch.randn(3, 3, 3, 3, generator=g) * 0.3, padding=1))
    out: np.ndarray = (y[0].clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy()
    return out
