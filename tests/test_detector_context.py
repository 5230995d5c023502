"""Helpers of ``scripts/detector_candidates.py``: the image-context helpers of ``cv``
(`context_rows`, `image_aggregate`, `hidden_stats`), checked against numpy on small
hand-made arrays; Platt scaling per noise band (`_fit_platt_banded`, the ``calib``
policies ``platt_noise2`` / ``platt_noise3``); `_savez`, which must never write through a
link into a shared cache."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from detector.calibrate import fit_platt, sigmoid

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dc() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "detector_candidates", ROOT / "scripts" / "detector_candidates.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["detector_candidates"] = module
    spec.loader.exec_module(module)
    return module


def _features(
    dc: ModuleType, arrays: dict[str, np.ndarray], where: dict[str, dict[int, tuple[int, int]]]
) -> object:
    ft = object.__new__(dc.Features)
    ft.arrays = arrays
    ft.where = where
    return ft


def test_image_aggregate_matches_numpy(dc: ModuleType) -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=23)
    owner = np.array([5] * 9 + [2] * 10 + [7] * 4)
    idx = [2, 5, 9, 7]  # 9 has no patches
    for how, ref in (
        ("mean", np.mean),
        ("median", np.median),
        ("q75", lambda v: np.quantile(v, 0.75)),
        ("trim", lambda v: np.sort(v)[len(v) // 5 : len(v) - len(v) // 5].mean()),
    ):
        out = dc.image_aggregate(values, owner, idx, how)
        assert np.isnan(out[2])
        for k, i in enumerate(idx):
            if i != 9:
                assert out[k] == pytest.approx(ref(values[owner == i]), abs=1e-12), (how, i)
    with pytest.raises(ValueError, match="unknown aggregate"):
        dc.image_aggregate(values, owner, idx, "max")


def test_context_rows_and_hidden_stats(dc: ModuleType) -> None:
    rng = np.random.default_rng(4)
    harm = rng.normal(size=(7, 5)).astype(np.float32)  # image 1: rows 0-2, image 4: rows 3-6
    r50 = rng.normal(size=(2, 5)).astype(np.float32)  # image 4 only
    ft = _features(
        dc, {"harm": harm, "r50": r50}, {"harm": {1: (0, 3), 4: (3, 7)}, "r50": {4: (0, 2)}}
    )
    x, owner = dc.context_rows(ft, ("harm", "r50"), [1, 4], 4, "meanstd")
    assert x.shape == (9, 12) and owner.tolist() == [1, 1, 1, 4, 4, 4, 4, 4, 4]
    assert np.allclose(x[:3, :4], harm[:3, :4])
    assert np.allclose(x[4, 4:8], harm[3:7, :4].mean(0))
    assert np.allclose(x[7, 8:], r50[:, :4].std(0))
    img, img_owner = dc.context_rows(ft, ("harm", "r50"), [1, 4], 4, "image")
    assert img.shape == (3, 8) and img_owner.tolist() == [1, 4, 4]
    assert np.allclose(img[1], np.r_[harm[3:7, :4].mean(0), harm[3:7, :4].std(0)])

    # the hidden layer's statistics: the mean over an image's patches, through the head
    size = dc.SpectralFeatures(64).size + dc.ResidualCooccurrence().size
    size += dc.NormalisedCooccurrence().size
    net = dc._feature_net(size, 6)
    wide = rng.normal(size=(7, size)).astype(np.float32)
    ft = _features(dc, {"harm": wide}, {"harm": {1: (0, 3), 4: (3, 7)}})
    stats, who = dc.hidden_stats(net, ft, ("harm",), [1, 4], size)
    with torch.inference_mode():
        h = net.fc[1](net.fc[0]((torch.from_numpy(wide) - net.feat_mean) / net.feat_std)).numpy()
    assert who.tolist() == [1, 4] and stats.shape == (2, 12)
    assert np.allclose(stats[1, :6], h[3:].mean(0), atol=1e-5)
    assert np.allclose(stats[0, 6:], h[:3].std(0), atol=1e-5)


def _labels(z: np.ndarray, slope: float, rng: np.random.Generator) -> np.ndarray:
    return (rng.random(len(z)) < sigmoid(slope * z)).astype(np.float64)


def test_each_noise_band_gets_its_own_platt_fit(dc: ModuleType) -> None:
    # Clean images (log noise < 0) follow slope 0.5, noisy ones slope 3: one pooled map
    # cannot fit both, a map per half can.
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, 4000)
    noise = np.r_[rng.uniform(-2, -0.1, 2000), rng.uniform(0.1, 2, 2000)]
    y = np.r_[_labels(z[:2000], 0.5, rng), _labels(z[2000:], 3.0, rng)]
    probs = dc._fit_platt_banded(z, y, noise, 2)
    grid = np.array([-2.0, -1.0, 1.0, 2.0])
    clean = probs(grid, np.full(4, -1.0))
    noisy = probs(grid, np.full(4, 1.0))
    assert np.allclose(clean, sigmoid(0.5 * grid), atol=0.06)
    assert np.allclose(noisy, sigmoid(3.0 * grid), atol=0.06)
    a, b = fit_platt(z, y)  # the pooled fit is between the two
    assert not np.allclose(noisy, sigmoid(a * grid + b), atol=0.06)


def test_a_band_too_small_or_of_one_class_takes_the_pooled_fit(dc: ModuleType) -> None:
    rng = np.random.default_rng(4)
    z = rng.normal(0, 2, 600)
    y = _labels(z, 1.0, rng)
    noise = rng.uniform(0, 1, 600)
    y[noise >= np.quantile(noise, 2 / 3)] = 1.0  # the noisiest third: one class only
    probs = dc._fit_platt_banded(z, y, noise, 3)
    a, b = fit_platt(z, y)
    grid = np.linspace(-3, 3, 7)
    assert np.allclose(probs(grid, np.full(7, 0.99)), sigmoid(a * grid + b))
    assert not np.allclose(probs(grid, np.full(7, 0.01)), sigmoid(a * grid + b))


def test_savez_replaces_a_link_and_leaves_its_target(dc: ModuleType, tmp_path: Path) -> None:
    shared = tmp_path / "shared.npz"
    np.savez(shared, a=np.arange(3))
    before = shared.read_bytes()
    link = tmp_path / "mine" / "shared.npz"
    link.parent.mkdir()
    link.symlink_to(shared)
    dc._savez(link, {"a": np.arange(5)})
    assert shared.read_bytes() == before
    assert not link.is_symlink()
    with np.load(link) as z:
        assert list(z["a"]) == [0, 1, 2, 3, 4]


def _patches(dc: ModuleType, cached: dict[str, dict[int, tuple[int, int]]]) -> object:
    pt = object.__new__(dc.Patches)
    every = dc.CONDS + dc.AE_CONDS + dc.AE256_CONDS + dc.LOW_CONDS
    pt.where = {c: cached.get(c, {}) for c in every}
    return pt


def test_a_recipe_refuses_to_train_without_a_part_it_names(dc: ModuleType) -> None:
    """The shipped recipe (`_mixrlc`) with no cached ``low`` or ``clean`` patches stops and
    names the stages to run; before, it trained silently without them (the report of 3
    December)."""
    conds = dc.recipe_conditions(resized=True, low=True, clean=True, mix=True)
    assert set(conds) >= {"harm", "aug", "r50", "low", "clean", "syn", "ae", "ae_real"}
    have = {c: {0: (0, 9)} for c in conds if c not in ("low", "clean")}
    with pytest.raises(SystemExit, match=r"no cached patches of low, clean.*: low clean"):
        _patches(dc, have).require(conds)  # type: ignore[attr-defined]
    _patches(dc, {**have, "low": {0: (0, 9)}, "clean": {3: (0, 9)}}).require(conds)  # type: ignore[attr-defined]
    assert "low" not in dc.recipe_conditions(resized=True, low=False, clean=False, mix=False)


def test_cache_digests_find_a_changed_or_missing_array(dc: ModuleType, tmp_path: Path) -> None:
    np.savez(tmp_path / "patches-000.npz", harm=np.zeros((2, 4), np.uint8), idx=np.arange(2))
    np.savez(tmp_path / "clean.npz", clean=np.ones(3, np.uint8))
    np.savez(tmp_path / "scores-x.npz", harm=np.ones(3))  # an output, not a cache
    before = dc.cache_digests(tmp_path)
    assert set(before) == {"patches-000.npz", "clean.npz"}
    assert dc.cache_differences(before, dc.cache_digests(tmp_path)) == []
    # the same bytes under another dtype or shape are another array
    np.savez(tmp_path / "patches-000.npz", harm=np.zeros((4, 2), np.uint8), idx=np.arange(2))
    (tmp_path / "clean.npz").unlink()
    assert dc.cache_differences(before, dc.cache_digests(tmp_path)) == [
        "clean.npz: missing",
        "patches-000.npz harm: differs",
    ]
