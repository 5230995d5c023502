"""Training fakes (detector/fakes.py) and the spectral branch (detector/model.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detector.fakes import UPSAMPLERS, TinyAutoencoder, random_upsampler
from detector.model import (
    HybridDetector,
    NormalisedCooccurrence,
    ResidualCooccurrence,
    SpectralFeatures,
    SpectralLogistic,
)
from detector.transforms import clean_downscale, low_light_capture
from provenance.core.errors import DetectorError


def _smooth_image(seed: int, size: int = 64) -> np.ndarray:
    """A photo-like smooth RGB image (H, W, 3) uint8: upsampled noise plus fine grain."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, size // 8, size // 8))).float()
    img = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")[0]
    rgb = img.permute(1, 2, 0).numpy() * 200 + 20 + rng.normal(0, 3, (size, size, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def test_tiny_autoencoder_reconstructs_the_same_picture() -> None:
    torch.set_num_threads(1)
    ae = TinyAutoencoder.load()
    rgb = _smooth_image(0)
    out = ae.reconstruct(rgb)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - rgb.astype(int)).mean()
    assert 0 < err < 25, err  # the same picture, not a copy


def test_tiny_autoencoder_missing_weights_is_a_detector_error(tmp_path: Path) -> None:
    with pytest.raises(DetectorError, match="tiny autoencoder"):
        TinyAutoencoder.load(tmp_path)


def test_random_upsamplers_keep_content_and_leave_periodic_traces() -> None:
    rgb = _smooth_image(1)
    feats = SpectralFeatures(64)
    pre = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    base = feats((pre - 0.5) / 0.25)
    for kind in UPSAMPLERS:
        out = random_upsampler(rgb, kind, seed=3)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 25, kind
        assert np.array_equal(out, random_upsampler(rgb, kind, seed=3))  # same seed, same fake
        assert not np.array_equal(out, random_upsampler(rgb, kind, seed=4))  # redrawn
        x = torch.from_numpy(out).permute(2, 0, 1)[None].float() / 255
        # The decoder reshapes the spectrum: some band of the radial log-power profile
        # moves by more than e (losses near Nyquist, or periodic peaks at it).
        radial = slice(feats.grid**2, feats.grid**2 + feats.radial)
        moved = (feats((x - 0.5) / 0.25)[0, radial] - base[0, radial]).abs().max()
        assert moved > 1.0, kind
    with pytest.raises(DetectorError, match="unknown upsampler"):
        random_upsampler(rgb, "magic", 0)


def test_spectral_and_hybrid_networks_shapes() -> None:
    x = torch.randn(4, 3, 64, 64)
    feats = SpectralFeatures(64)
    assert feats(x).shape == (4, feats.size) and torch.isfinite(feats(x)).all()
    assert SpectralLogistic(64)(x).shape == (4,)
    assert HybridDetector(widths=(8, 16, 32, 64))(x).shape == (4,)


def test_residual_cooccurrence_histograms_and_upsampling_phase() -> None:
    co = ResidualCooccurrence()
    rgb = _smooth_image(2)
    x = (torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
    f = co(x)[0]
    assert f.shape == (co.size,) and torch.isfinite(f).all()
    # Hellinger histograms: the squared entries of each histogram sum to one.
    for a, b in ((0, 125), (125, 250), (250, 259), (259, 268), (274, 299)):
        assert float((f[a:b] ** 2).sum()) == pytest.approx(1.0, abs=1e-4), (a, b)
    # A 2x nearest-neighbour up-sampling makes every difference inside a 2x2 cell zero:
    # the period-2 energy ratio (rows and columns) jumps, whatever the crop's phase.
    half = np.ascontiguousarray(rgb[::2, ::2].repeat(2, 0).repeat(2, 1))
    for shift in (0, 1):
        up = np.ascontiguousarray(np.roll(half, shift, axis=(0, 1)))
        xu = (torch.from_numpy(up).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25
        g = co(xu)[0]
        period2 = [268, 271]  # rows, then columns: periods 2, 4, 8 each
        assert (g[period2] > f[period2] + 1.0).all(), (shift, g[268:274], f[268:274])
    # Logistic head with both feature sets.
    net = SpectralLogistic(64, cooccurrence=True)
    assert net(torch.randn(3, 3, 64, 64)).shape == (3,)
    assert net.feat_mean.shape == (SpectralFeatures(64).size + co.size,)


def _noisy(scale: float, seed: int = 3, size: int = 64) -> torch.Tensor:
    """A flat grey patch plus Gaussian noise of `scale` grey levels, normalised input."""
    rng = np.random.default_rng(seed)
    img = np.clip(128 + rng.normal(0, scale, (size, size, 3)), 0, 255).round().astype(np.uint8)
    return (torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25


def test_normalised_cooccurrence_reads_the_shape_of_the_noise_not_its_level() -> None:
    norm, fixed = NormalisedCooccurrence(), ResidualCooccurrence()
    f = norm(_noisy(3.0))[0]
    assert f.shape == (norm.size,) and torch.isfinite(f).all()
    for a, b in ((0, 125), (125, 250)):  # Hellinger histograms
        assert float((f[a:b] ** 2).sum()) == pytest.approx(1.0, abs=1e-4)
    # The same noise at 3x the level: the fixed-step histograms move a lot, the
    # normalised ones little (only the rounding of the pixels differs).
    g = norm(_noisy(9.0))[0]
    fixed_move = (fixed(_noisy(3.0))[0, :250] - fixed(_noisy(9.0))[0, :250]).abs().sum()
    assert (f - g).abs().sum() < 0.25 * fixed_move, ((f - g).abs().sum(), fixed_move)
    # Structure still counts: a 2x nearest up-sampled patch is far from plain noise.
    x = _noisy(6.0)
    up = x[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3)
    assert (norm(up)[0] - norm(x)[0]).abs().sum() > 1.0
    # The head with all three feature sets, linear and MLP.
    for hidden in (0, 16):
        net = SpectralLogistic(64, cooccurrence=True, normalised=True, hidden=hidden)
        assert net(torch.randn(3, 3, 64, 64)).shape == (3,)
        assert net.feat_mean.shape == (SpectralFeatures(64).size + fixed.size + norm.size,)


def test_low_light_capture_is_a_noisy_reproducible_photo() -> None:
    rgb = _smooth_image(4, 128)
    a = low_light_capture(rgb, np.random.default_rng(1))
    b = low_light_capture(rgb, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == rgb.shape and np.array_equal(a, b)
    # Still the same picture, with noise that another draw changes.
    assert np.corrcoef(a.reshape(-1), rgb.reshape(-1))[0, 1] > 0.5
    other = low_light_capture(rgb, np.random.default_rng(2))
    assert np.abs(a.astype(int) - other.astype(int)).mean() > 1.0


def test_clean_downscale_is_smaller_cleaner_and_reproducible() -> None:
    clean = _smooth_image(5, 480)
    noise = np.random.default_rng(0).normal(0, 12, clean.shape)
    noisy = np.clip(clean + noise, 0, 255).astype(np.uint8)
    a = clean_downscale(noisy, np.random.default_rng(3))
    assert np.array_equal(a, clean_downscale(noisy, np.random.default_rng(3)))
    assert a.dtype == np.uint8 and a.shape[2] == 3 and 96 <= min(a.shape[:2]) <= 240
    # The same draw on the noise-free picture: what is left of the sensor noise (std 12
    # grey levels) after the downscale averaged it away.
    left = a.astype(float) - clean_downscale(clean, np.random.default_rng(3))
    assert left.std() < 6
    small = _smooth_image(6, 100)  # never under 96 px a side
    assert min(clean_downscale(small, np.random.default_rng(4)).shape[:2]) >= 96
