"""The detector networks, written with torch.nn only.

Three architectures, each mapping a batch of normalised RGB patches (B, 3, H, W) float32
to one logit per patch (B,) float32 (positive means "generated"):

* `PatchResNet`: this project's small ResNet (He et al. 2016, "Deep Residual Learning")
  over an NPR residual (Tan et al. 2024, "Rethinking the Up-Sampling Operations in
  CNN-based Generative Network for Generalizable Deepfake Detection"), for 64 px patches
  at native resolution. About 0.3 M parameters.
* `TorchvisionResNet50`: torchvision's ResNet-50 layout and parameter names with a
  one-logit ``fc``, as in CNNDetection (Wang et al. 2020, "CNN-generated images are
  surprisingly easy to spot... for now"), so its published ``.pth`` files load by path.
* `NPRResNet`: the NPR repository's network (its ``networks/resnet.py``): the NPR
  residual into a 3x3 stride-2 stem, ResNet-50 ``layer1`` and ``layer2`` only, and a
  512-to-1 ``fc1``, so its published checkpoints load by path.

The layouts of the two published networks follow their repositories' code; the weights
are the user's to supply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def npr_residual(x: torch.Tensor) -> torch.Tensor:
    """Neighbouring pixel relationships: x minus its nearest-neighbour down-up copy.

    x: (B, C, H, W) float. Returns (B, C, H', W') with H', W' the sizes rounded down to
    even. Equal to ``x - interpolate(interpolate(x, 0.5, nearest), 2, nearest)`` of the NPR
    code: each pixel minus the top-left pixel of its 2x2 cell, which exposes the local
    correlations that up-sampling layers leave.
    """
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    up = F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)
    return x - up


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (torchvision parameter names)."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, cin, H, W) -> (B, planes, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        y: torch.Tensor = self.relu(out + identity)  # nn.Module.__call__ is untyped
        return y


class Bottleneck(nn.Module):
    """1x1-3x3-1x1 bottleneck with stride on the 3x3 (torchvision ResNet v1.5 names)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, planes * 4, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, cin, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        y: torch.Tensor = self.relu(out + identity)  # nn.Module.__call__ is untyped
        return y


def _layer(
    block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    layers: list[nn.Module] = [block(cin, planes, stride)]
    layers += [block(planes * block.expansion, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PatchResNet(nn.Module):
    """This project's patch classifier.

    residual: "npr" (the NPR residual of the input, see `npr_residual`) or "none".
    widths: channels of the stride-2 stem and of the four stages (a BasicBlock each; the
    first at the stem's resolution, each later one halving it). Input (B, 3, H, W) with
    H, W >= 32; output (B,) logits.
    """

    def __init__(
        self, residual: str = "npr", widths: tuple[int, int, int, int] = (16, 32, 64, 128)
    ) -> None:
        super().__init__()
        if residual not in ("npr", "none"):
            raise ValueError(f"unknown residual {residual!r}")
        self.residual = residual
        w = tuple(widths)
        self.conv1 = _conv3x3(3, w[0], stride=2)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _layer(BasicBlock, w[0], w[0], 1, 1)
        self.layer2 = _layer(BasicBlock, w[0], w[1], 1, 2)
        self.layer3 = _layer(BasicBlock, w[1], w[2], 1, 2)
        self.layer4 = _layer(BasicBlock, w[2], w[3], 1, 2)
        self.fc = nn.Linear(w[3], 1)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) normalised pixels -> (B, widths[3]) pooled features."""
        if self.residual == "npr":
            x = npr_residual(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """features: (B, widths[3]) -> (B,) logits."""
        logits: torch.Tensor = self.fc(features)
        return logits.squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B,) logits."""
        return self.forward_head(self.forward_features(x))


class TorchvisionResNet50(nn.Module):
    """ResNet-50 with torchvision's parameter names and a 2048-to-1 ``fc`` (CNNDetection).

    Input (B, 3, H, W) normalised with the ImageNet mean and std, H, W >= 32; output (B,)
    logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _layer(Bottleneck, 64, 64, 3, 1)
        self.layer2 = _layer(Bottleneck, 256, 128, 4, 2)
        self.layer3 = _layer(Bottleneck, 512, 256, 6, 2)
        self.layer4 = _layer(Bottleneck, 1024, 512, 3, 2)
        self.fc = nn.Linear(2048, 1)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B, 2048) pooled features."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B,) logits."""
        logits: torch.Tensor = self.fc(self.forward_features(x))
        return logits.squeeze(1)


class NPRResNet(nn.Module):
    """The NPR detector's network with its parameter names.

    Input (B, 3, H, W) normalised with the ImageNet mean and std, H, W even and >= 32;
    the NPR residual is scaled by 2/3 as in the original; output (B,) logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _layer(Bottleneck, 64, 64, 3, 1)
        self.layer2 = _layer(Bottleneck, 256, 128, 4, 2)
        self.fc1 = nn.Linear(512, 1)
        _init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B, 512) pooled features."""
        x = self.conv1(npr_residual(x) * (2.0 / 3.0))
        x = self.maxpool(self.relu(self.bn1(x)))
        x = self.layer2(self.layer1(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B,) logits."""
        logits: torch.Tensor = self.fc1(self.forward_features(x))
        return logits.squeeze(1)


def _fold_pool(n: int, bins: int) -> torch.Tensor:
    """(bins, n) averaging matrix of the folded frequencies 0..n//2 of an n-point FFT
    (frequency k and n - k are one), the last bin holding only the Nyquist line."""
    m = torch.zeros(bins, n)
    half = n // 2
    for k in range(n):
        f = min(k, n - k)
        m[bins - 1 if f == half else min(f * (bins - 1) // half, bins - 2), k] = 1.0
    return m / m.sum(1, keepdim=True)


class SpectralFeatures(nn.Module):
    """Fixed spectral statistics of a patch (no trained parameters).

    Input (B, 3, P, P) normalised pixels, P even. The luminance's high-pass residual
    (pixel minus its 3x3 mean), Hann-windowed, gives a log power spectrum
    (Durall et al. 2020, "Watch your Up-Convolution"; Dzanic et al. 2020, "Fourier spectrum
    discrepancies in deep network generated images"). Output (B, F) float32 with
    F = grid**2 + radial + 4 + 6: the spectrum folded to non-negative frequencies and
    averaged on a grid x grid partition (the last row and column are the Nyquist lines,
    where 2x up-sampling leaves its peaks); a radial profile; the excess of the Nyquist
    and half-Nyquist lines over their neighbours, both directions; per-channel residual
    log-energy and the three cross-channel residual correlations.
    """

    window: torch.Tensor
    pool: torch.Tensor
    ring: torch.Tensor

    def __init__(self, patch: int = 64, grid: int = 9, radial: int = 16) -> None:
        super().__init__()
        self.patch, self.grid, self.radial = patch, grid, radial
        w = torch.hann_window(patch, periodic=False)
        self.register_buffer("window", torch.outer(w, w), persistent=False)
        self.register_buffer("pool", _fold_pool(patch, grid), persistent=False)
        half = patch // 2
        k = torch.arange(patch)
        f = torch.minimum(k, patch - k).float()
        r = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2) / (half * 2**0.5)
        idx = (r * radial).long().clamp(max=radial - 1).flatten()
        ring = torch.zeros(radial, patch * patch)
        ring[idx, torch.arange(patch * patch)] = 1.0
        self.register_buffer(
            "ring", ring / ring.sum(1, keepdim=True).clamp(min=1), persistent=False
        )

    @property
    def size(self) -> int:
        """F, the number of features."""
        return self.grid**2 + self.radial + 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B, F) float32."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            res = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
            gray = res.mean(1)
            spec = torch.fft.fft2(gray * self.window)
            power = torch.log(spec.real**2 + spec.imag**2 + 1e-6)  # (B, P, P)
            grid = self.pool @ power @ self.pool.T  # (B, g, g)
            radial = power.flatten(1) @ self.ring.T  # (B, radial)
            h = self.patch // 2
            rows = power.mean(2)  # (B, P): mean over the other axis
            cols = power.mean(1)
            lines = torch.stack(
                [
                    rows[:, h] - rows[:, h - 2 : h].mean(1),
                    cols[:, h] - cols[:, h - 2 : h].mean(1),
                    rows[:, h // 2] - (rows[:, h // 2 - 2] + rows[:, h // 2 + 2]) / 2,
                    cols[:, h // 2] - (cols[:, h // 2 - 2] + cols[:, h // 2 + 2]) / 2,
                ],
                1,
            )
            flat = res.flatten(2)  # (B, 3, P*P)
            energy = torch.log(flat.pow(2).mean(2) + 1e-6)
            z = flat - flat.mean(2, keepdim=True)
            z = z / (z.pow(2).mean(2, keepdim=True).sqrt() + 1e-4)
            corr = torch.stack(
                [(z[:, a] * z[:, b]).mean(1) for a, b in ((0, 1), (0, 2), (1, 2))], 1
            )
            return torch.cat([grid.flatten(1), radial, lines, energy, corr], 1)


def _hist(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """(B, N) whole-number codes in [0, bins), float32 -> (B, bins) float32 share of each
    code. (Codes stay float until the one conversion: exact while B * bins < 2**24.)"""
    b, n = codes.shape
    offset = torch.arange(b, device=codes.device, dtype=codes.dtype).unsqueeze(1) * bins
    counts = torch.bincount((codes + offset).flatten().long(), minlength=b * bins)
    return counts.view(b, bins).float() / max(n, 1)


def _quantise(r: torch.Tensor, step: float, t: int) -> torch.Tensor:
    """Residual r (pixel units) -> whole-number codes round(r / step) clipped to [-t, t],
    shifted to [0, 2t], as float32."""
    return torch.round(r * (1.0 / step)).clamp_(-t, t).add_(t)


class ResidualCooccurrence(nn.Module):
    """Co-occurrences of quantised noise residuals of a patch (no trained parameters).

    In the manner of SPAM and the spatial rich model of steganalysis (Pevny, Bas and
    Fridrich 2010, "Steganalysis by Subtractive Pixel Adjacency Matrix"; Fridrich and
    Kodovsky 2012, "Rich Models for Steganalysis of Digital Images"), computed on the
    luminance in pixel units (input (B, 3, P, P) normalised pixels times `scale`):

    * first-order differences along rows and columns, rounded and clipped to [-2, 2],
      and the joint histogram of three consecutive ones (125 bins, both directions
      pooled);
    * second-order differences (x[i-1] - 2 x[i] + x[i+1], step 2), the same (125 bins);
    * up-sampling periodicity (Tan et al. 2024, NPR: a 2x up-sampler makes a pixel's
      relation to its 2x2-cell neighbours differ from that to the next cell): the
      histograms of first-order differences (clipped to [-4, 4]) at even and at odd
      positions, ordered by their energy so that the crop's phase does not matter
      (18 bins), and the log energy ratio between phases for periods 2, 4 and 8 along
      rows and columns (6);
    * colour: the joint histogram of the first-order differences of R - G and B - G
      (25 bins), where camera demosaicing leaves its correlations.

    Histograms are shares, square-rooted (Hellinger). Output (B, 299) float32.
    """

    def __init__(self, scale: float = 255.0 * 0.25) -> None:
        super().__init__()
        self.scale = scale

    @property
    def size(self) -> int:
        """The number of features."""
        return 125 + 125 + 18 + 6 + 25

    @staticmethod
    def _triples(q: torch.Tensor, axis: int) -> torch.Tensor:
        """(B, H, W) codes in [0, 5) -> (B, N) codes of three consecutive along axis."""
        n = q.shape[axis]
        a = q.narrow(axis, 0, n - 2)
        b = q.narrow(axis, 1, n - 2)
        c = q.narrow(axis, 2, n - 2)
        return (a * 25 + b * 5 + c).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B, size) float32."""
        with torch.autocast(x.device.type, enabled=False):
            x = x.float() * self.scale
            y = x.mean(1)  # (B, P, P) luminance
            dh, dv = y[:, :, 1:] - y[:, :, :-1], y[:, 1:, :] - y[:, :-1, :]
            sh = y[:, :, :-2] - 2 * y[:, :, 1:-1] + y[:, :, 2:]
            sv = y[:, :-2, :] - 2 * y[:, 1:-1, :] + y[:, 2:, :]
            first = _hist(
                torch.cat(
                    [
                        self._triples(_quantise(dh, 1.0, 2), 2),
                        self._triples(_quantise(dv, 1.0, 2), 1),
                    ],
                    1,
                ),
                125,
            )
            second = _hist(
                torch.cat(
                    [
                        self._triples(_quantise(sh, 2.0, 2), 2),
                        self._triples(_quantise(sv, 2.0, 2), 1),
                    ],
                    1,
                ),
                125,
            )
            # Phase histograms: differences between columns 2k and 2k+1 (inside a cell)
            # and between 2k+1 and 2k+2 (across cells), rows alike.
            even = torch.cat([dh[:, :, 0::2].flatten(1), dv[:, 0::2, :].flatten(1)], 1)
            odd = torch.cat([dh[:, :, 1::2].flatten(1), dv[:, 1::2, :].flatten(1)], 1)
            he, ho = _hist(_quantise(even, 1.0, 4), 9), _hist(_quantise(odd, 1.0, 4), 9)
            swap = (even.abs().mean(1) < odd.abs().mean(1)).unsqueeze(1)
            phase = torch.cat([torch.where(swap, ho, he), torch.where(swap, he, ho)], 1)
            ratios = []
            for d, axis in ((dh, 2), (dv, 1)):
                e = d.abs().mean(3 - axis)  # (B, n): mean |d| per column (rows) position
                for period in (2, 4, 8):
                    n = e.shape[1] // period * period
                    by_phase = e[:, :n].reshape(e.shape[0], -1, period).mean(1) + 1e-3
                    ratios.append(torch.log(by_phase.max(1).values / by_phase.min(1).values))
            c1, c2 = x[:, 0] - x[:, 1], x[:, 2] - x[:, 1]
            colour = _hist(
                torch.cat(
                    [
                        (
                            _quantise(c1[:, :, 1:] - c1[:, :, :-1], 1.0, 2) * 5
                            + _quantise(c2[:, :, 1:] - c2[:, :, :-1], 1.0, 2)
                        ).flatten(1),
                        (
                            _quantise(c1[:, 1:] - c1[:, :-1], 1.0, 2) * 5
                            + _quantise(c2[:, 1:] - c2[:, :-1], 1.0, 2)
                        ).flatten(1),
                    ],
                    1,
                ),
                25,
            )
            hists = torch.cat([first, second, phase], 1).sqrt()
            return torch.cat([hists, torch.stack(ratios, 1), colour.sqrt()], 1)


class NormalisedCooccurrence(nn.Module):
    """`ResidualCooccurrence`'s first- and second-order co-occurrences with the residual
    divided by the patch's own noise level (no trained parameters).

    The fixed one-grey-level step of `ResidualCooccurrence` measures how *much* noise a
    patch has as well as its structure, so a clean real photo (downscaled, denoised,
    defocused) reads like a smooth generated one. Here the first and second differences
    of the luminance (pixel units) are divided by sigma, the median of the patch's
    absolute first differences (floored at 0.5 grey levels), before the same rounding,
    clipping to [-2, 2] (steps 1 and 2) and joint histograms of three consecutive ones
    (125 + 125 bins, Hellinger): the shape of the residual's distribution, not its
    amplitude (the normalisation of the rich-model residuals in Fridrich and Kodovsky
    2012 and of noise-level estimation by the median absolute deviation, Donoho 1995).
    Input (B, 3, P, P) normalised pixels times `scale`; output (B, 250) float32.
    """

    def __init__(self, scale: float = 255.0 * 0.25) -> None:
        super().__init__()
        self.scale = scale

    @property
    def size(self) -> int:
        """The number of features."""
        return 125 + 125

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B, size) float32."""
        triples = ResidualCooccurrence._triples
        with torch.autocast(x.device.type, enabled=False):
            # The whole-number pixel values back (the default preprocessing maps p to
            # (p / 255 - 0.5) / 0.25 = (p - 127.5) / scale): ratios to sigma fall on
            # rounding boundaries, where float error would otherwise decide.
            p = torch.round(x.float() * self.scale + 127.5)
            y = p.mean(1)  # (B, P, P) luminance, pixel units
            dh, dv = y[:, :, 1:] - y[:, :, :-1], y[:, 1:, :] - y[:, :-1, :]
            sh = y[:, :, :-2] - 2 * y[:, :, 1:-1] + y[:, :, 2:]
            sv = y[:, :-2, :] - 2 * y[:, 1:-1, :] + y[:, 2:, :]
            sigma = torch.cat([dh.abs().flatten(1), dv.abs().flatten(1)], 1).median(1).values
            sigma = sigma.clamp(min=0.5)[:, None, None]
            first = _hist(
                torch.cat(
                    [
                        triples(_quantise(dh / sigma, 1.0, 2), 2),
                        triples(_quantise(dv / sigma, 1.0, 2), 1),
                    ],
                    1,
                ),
                125,
            )
            second = _hist(
                torch.cat(
                    [
                        triples(_quantise(sh / sigma, 2.0, 2), 2),
                        triples(_quantise(sv / sigma, 2.0, 2), 1),
                    ],
                    1,
                ),
                125,
            )
            return torch.cat([first, second], 1).sqrt()


class SpectralLogistic(nn.Module):
    """Logistic regression on `SpectralFeatures` (and, with ``cooccurrence``, the
    `ResidualCooccurrence` features beside them; with ``normalised``, the
    `NormalisedCooccurrence` features after those): standardised features (stored mean
    and std, fitted with the weights) into one linear logit. With ``hidden`` > 0 the head is a
    small MLP instead (Linear(F, hidden), GELU, Linear(hidden, 1)). Input (B, 3, P, P);
    output (B,)."""

    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(
        self,
        patch: int = 64,
        grid: int = 9,
        radial: int = 16,
        cooccurrence: bool = False,
        hidden: int = 0,
        normalised: bool = False,
    ) -> None:
        super().__init__()
        self.features = SpectralFeatures(patch, grid, radial)
        self.cooccurrence = ResidualCooccurrence() if cooccurrence else None
        self.normalised = NormalisedCooccurrence() if normalised else None
        n = self.features.size + (self.cooccurrence.size if self.cooccurrence else 0)
        n += self.normalised.size if self.normalised else 0
        self.register_buffer("feat_mean", torch.zeros(n))
        self.register_buffer("feat_std", torch.ones(n))
        self.fc: nn.Module = (
            nn.Linear(n, 1)
            if hidden <= 0
            else nn.Sequential(nn.Linear(n, hidden), nn.GELU(), nn.Linear(hidden, 1))
        )

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B, F) features before standardisation."""
        feats: torch.Tensor = self.features(x)
        if self.cooccurrence is not None:
            feats = torch.cat([feats, self.cooccurrence(x)], 1)
        if self.normalised is not None:
            feats = torch.cat([feats, self.normalised(x)], 1)
        return feats

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B, F) standardised features."""
        feats: torch.Tensor = (self.raw_features(x) - self.feat_mean) / self.feat_std
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B,) logits."""
        dtype = next(self.fc.parameters()).dtype
        logits: torch.Tensor = self.fc(self.forward_features(x).to(dtype))
        return logits.squeeze(1)


class HybridDetector(nn.Module):
    """A `PatchResNet` and a `SpectralLogistic` whose logits are combined by a stacked
    linear layer (`mix`: 2 weights and a bias). Input (B, 3, P, P); output (B,) logits."""

    def __init__(
        self,
        residual: str = "npr",
        widths: tuple[int, int, int, int] = (16, 32, 64, 128),
        patch: int = 64,
        grid: int = 9,
        radial: int = 16,
    ) -> None:
        super().__init__()
        self.cnn = PatchResNet(residual, widths)
        self.spectral = SpectralLogistic(patch, grid, radial)
        self.mix = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B,) logits."""
        both = torch.stack([self.cnn(x).float(), self.spectral(x).float()], 1)
        logits: torch.Tensor = self.mix(both.to(self.mix.weight.dtype))
        return logits.squeeze(1)


#: Architecture name -> constructor taking the keyword arguments stored in ModelMeta.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "patch_resnet": PatchResNet,
    "cnndetection_resnet50": TorchvisionResNet50,
    "npr_resnet50": NPRResNet,
    "spectral_logistic": SpectralLogistic,
    "hybrid": HybridDetector,
}


def build_network(arch: str, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate an architecture by name with freshly initialised weights.

    Raises KeyError for an unknown name (callers turn it into a DetectorError).
    """
    kwargs = dict(arch_kwargs or {})
    if "widths" in kwargs:
        kwargs["widths"] = tuple(kwargs["widths"])
    return ARCHITECTURES[arch](**kwargs)
