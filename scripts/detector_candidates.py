"""Train and compare detector candidates under one source-held-out, harmonised evaluation.

Stages (each resumable, results under ``.cache/detector-candidates/``, git-ignored):

``cache``
    Decode every image once (the recipe images built by ``scripts/build_detector_data.py``
    and the shared fixtures) and cut 64 px patches: ``harm`` (centre crop 256 px, JPEG q90:
    the harmonised condition, every image re-encoded the same way), ``j75`` (the same at
    q75), ``r50`` (0.5x bilinear, then q90), ``aug`` (a random `Augment` variant: crop,
    resize, blur, JPEG 65-100; both classes) and, for real photos, ``syn`` and ``syn_aug``
    (the centre crop through a random up-sampling decoder, `detector.fakes`, redrawn per
    image; then q90 / `Augment`).
``ae``
    For real photos of training sources only, a 128 px centre crop through the tiny
    FLUX.2 autoencoder (`detector.fakes.TinyAutoencoder`), then q90 (``ae``) and a random
    JPEG quality 65-100 (``ae_aug``), beside the untouched crop at the same qualities
    (``ae_real``, ``ae_real_aug``): aligned pairs.
``ae256``
    The same images' 256 px centre crops through the autoencoder, 9 patches each, with no
    re-encode (``aer``, ``aer_real``) and at q90 (``ae9``, ``ae9_real``) (`stage_ae256`;
    the ``cv`` variants ``aeraw``, ``ae256``, ``aeplus``).
``low``
    Every real photo of the training sources as a low-light, high-ISO capture (``low``,
    `low_patches`), for recipes with the low-light captures (``_mixrl``, ship ``--low``).
``clean``
    Every training-source image, both classes, as a clean, strongly downscaled copy
    (``clean``, `clean_patches`), for recipes with them (``_mixrlc``, ship ``--clean``).
    A recipe refuses to train when a condition it names has no cached patch
    (`Patches.require`): the shipped recipe needs ``cache``, ``ae``, ``low`` and ``clean``.
``run``
    Train the candidates and score them with the same protocol (below), writing
    ``detector/weights/eval-candidates.json``.
``lofo``
    The ``run`` candidate that retrains the shipped model's recipe (`SHIPPED_RECIPES`),
    written with the model's id, version and tensor hash to
    ``detector/weights/eval-lofo.json`` (`stage_lofo`; eval-candidates.json untouched),
    with the library versions that made it; ``--extra-seeds 1,2`` retrains it with other
    MLP seeds and records how far each figure moves (``seed_runs``), and a digest of every
    cached array (``cache``, `cache_digests`).
``cache-check``
    Compare the cache with the digests a report recorded (``--report``, default the
    leave-one-family-out report): exit 1 and one line per array that differs or is missing.
``demo``
    The bands the demo's images get from the shipped model under 12 server secrets
    (`stage_demo`), written to ``detector/weights/eval-demo.json``.
``cv``
    Grouped cross-validation of recipes on the training sources only (`stage_cv`),
    writing ``detector/weights/eval-cv.json`` and the out-of-fold logits. Variants with
    ``noise`` add the log noise level of each patch or of its image as an input
    (`noise_columns`; every cached patch's level is kept in ``noise.npz``). Variants with
    ``context`` give each patch its image's mean (and std) patch features or train an
    image-level head on them (`context_rows`), ``hidhead`` a logistic on the mean and std
    of the MLP's hidden layer over the image (`hidden_stats`), ``aggregate`` another
    image logit than the mean patch logit (`image_aggregate`).
``noise``
    Compare noise-level-aware calibrations and band rules on those out-of-fold logits
    (`stage_noise`) and fit the shape of version 7's band term (``pooled_term``, read by
    ``scripts/recalibrate_detector.py --noise-cv``).
``calib``
    Compare calibrations (`CALIB_POLICIES`) on those out-of-fold logits (`stage_calib`).
``scales``
    Every training-source image at one more scale, both classes (``rsc``, for the ``cv``
    variants that name it).

Protocol: real photos are split by source repository (recipe rows) or group (fixtures):
30% of the sources (SHA-256 of the name, salt "det-eval") are test sources in every fold
and never trained on. Generator families are held out one at a time
(leave-one-family-out): a candidate that trains on generated images is retrained per
fold without the held-out family (and without every repository that holds it); one that
trains only on real photos and their fakes is trained once. Every image is scored on its
``harm`` patches (mean patch logit); ``j75`` and ``r50`` give the robustness figures.

Usage::

    nice -n 19 timeout 3000 python scripts/detector_candidates.py cache
    nice -n 19 timeout 3000 python scripts/detector_candidates.py ae --max-images 400
    nice -n 19 python scripts/detector_candidates.py low     # ~1 min
    nice -n 19 python scripts/detector_candidates.py clean   # ~1 min
    nice -n 19 timeout 3000 python scripts/detector_candidates.py run
    nice -n 10 python scripts/detector_candidates.py lofo --extra-seeds 1,2  # ~4-5 min a seed
    python scripts/detector_candidates.py cache-check   # the cache the report was made from?
    nice -n 10 python scripts/detector_candidates.py demo    # ~20 s
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from torch.nn import functional as F

from detector.calibrate import calibrate, fit_platt
from detector.config import ModelMeta, Preprocess
from detector.data import Sample, in_split, load_image, load_samples, source_of
from detector.data import is_held_out_source as is_test_source
from detector.fakes import UPSAMPLERS, TinyAutoencoder, random_upsampler
from detector.features import patch_logits, to_input
from detector.metrics import roc_auc
from detector.model import (
    HybridDetector,
    NormalisedCooccurrence,
    PatchResNet,
    ResidualCooccurrence,
    SpectralFeatures,
    SpectralLogistic,
)
from detector.registry import load_model
from detector.train import TrainConfig, train_network
from detector.transforms import (
    CONDITIONS,
    Augment,
    center_crop,
    clean_downscale,
    cut_patches,
    grid_positions,
    harmonise,
    jpeg_roundtrip,
    low_light_capture,
    resize,
)
from detector.weights import save_weights
from provenance.core.argtypes import positive_ints
from provenance.core.errors import MediaError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = (ROOT.parent / "shared" / "fixtures").resolve()
DATA = [ROOT / ".cache" / "detector-data", FIXTURES / "detector", FIXTURES / "detector_more"]
#: The candidates' cache; DETECTOR_CANDIDATES_CACHE names another (e.g. a folder of links to
#: a shared cache beside one's own new files: `_savez` never writes through a link).
CACHE = Path(os.environ.get("DETECTOR_CANDIDATES_CACHE", ROOT / ".cache" / "detector-candidates"))
DEMO_SAMPLES = ROOT / "clients" / "samples"
PATCH = 64
CHUNK = 200


def _savez(path: Path, arrays: dict[str, Any]) -> None:
    """``np.savez`` of named arrays (numpy's stub types ``**kwds`` against its own
    ``allow_pickle`` keyword, so each call site would need a cast). A link at path is
    replaced by a new file, never written through (a linked cache stays as it was)."""
    if path.is_symlink():
        path.unlink()
    np.savez(path, **arrays)


def samples() -> list[Sample]:
    """Every image of the recipe data and the two fixture sets, in a fixed order."""
    return load_samples(DATA)


def demo_indices(all_samples: list[Sample]) -> set[int]:
    """Indices of the images whose bytes equal a file `make demo` shows
    (clients/samples/): they neither train nor test any candidate, so that what the demo
    shows is generalisation (the cat, Grace Hopper and the rocket are also fixture files,
    and the generated sample a fixture tile)."""
    demo = {p.stat().st_size: p.read_bytes() for p in DEMO_SAMPLES.iterdir() if p.is_file()}
    digests = {hashlib.sha256(b).hexdigest() for b in demo.values()}
    return {
        i
        for i, s in enumerate(all_samples)
        if s.path.stat().st_size in demo
        and hashlib.sha256(s.path.read_bytes()).hexdigest() in digests
    }


def _grid(rgb: np.ndarray, count: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cut_patches(rgb, grid_positions(h, w, PATCH, count), PATCH)


def _random(rgb: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    h, w = rgb.shape[:2]
    pos = [
        (int(rng.integers(0, w - PATCH + 1)), int(rng.integers(0, h - PATCH + 1)))
        for _ in range(count)
    ]
    return cut_patches(rgb, pos, PATCH)


def cache_chunk(items: list[tuple[int, Sample]], out: Path) -> int:
    """Patches of one chunk of images into out (npz); returns the number skipped."""
    aug = Augment(crop=256, min_side=PATCH)
    arrays: dict[str, list[np.ndarray]] = {
        k: [] for k in ("idx", "harm", "j75", "r50", "aug", "syn", "syn_aug")
    }
    skipped = 0
    empty = np.zeros((0, PATCH, PATCH, 3), np.uint8)
    for i, s in items:
        try:
            rgb = load_image(s.path).rgb
        except MediaError:
            skipped += 1
            continue
        if min(rgb.shape[:2]) < PATCH:
            skipped += 1
            continue
        rng = np.random.default_rng([7, i])
        r50 = CONDITIONS["harmonised_resize50"](rgb)
        arrays["idx"].append(np.array([i]))
        arrays["harm"].append(_grid(CONDITIONS["harmonised"](rgb), 9))
        arrays["j75"].append(_grid(CONDITIONS["harmonised_jpeg75"](rgb), 9))
        arrays["r50"].append(_grid(r50, 4) if min(r50.shape[:2]) >= PATCH else empty)
        arrays["aug"].append(_random(aug(rgb, rng), 8, rng))
        crop = center_crop(rgb, 256)
        crop = np.ascontiguousarray(crop[: crop.shape[0] // 2 * 2, : crop.shape[1] // 2 * 2])
        if s.label == 0:
            fake = random_upsampler(crop, UPSAMPLERS[i % len(UPSAMPLERS)], i)
            arrays["syn"].append(_grid(jpeg_roundtrip(fake, 90), 9))
            arrays["syn_aug"].append(_random(aug(fake, rng), 8, rng))
        else:
            arrays["syn"].append(empty)
            arrays["syn_aug"].append(empty)
    _savez(
        out,
        {
            **{k: np.concatenate(v) if v else empty for k, v in arrays.items() if k != "idx"},
            "idx": np.concatenate(arrays["idx"]) if arrays["idx"] else np.zeros(0, int),
            **{f"n_{k}": np.array([len(a) for a in v]) for k, v in arrays.items() if k != "idx"},
        },
    )
    return skipped


def stage_cache() -> None:
    """Run the ``cache`` stage (chunks already written are kept)."""
    all_samples = samples()
    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    for c in range(0, len(all_samples), CHUNK):
        out = CACHE / f"patches-{c // CHUNK:03d}.npz"
        if out.is_file():
            continue
        items = list(enumerate(all_samples))[c : c + CHUNK]
        skipped = cache_chunk(items, CACHE / f"tmp-{c // CHUNK:03d}.npz")
        (CACHE / f"tmp-{c // CHUNK:03d}.npz").rename(out)
        print(
            f"  cached {min(c + CHUNK, len(all_samples))}/{len(all_samples)} "
            f"({skipped} skipped, {time.monotonic() - start:.0f} s)",
            file=sys.stderr,
        )


def stage_ae(max_images: int) -> None:
    """Run the ``ae`` stage on up to max_images real photos of training sources, spread
    over the sources (round robin)."""
    all_samples = samples()
    by_source: dict[str, list[int]] = {}
    for i, s in enumerate(all_samples):
        if s.label == 0 and not is_test_source(s):
            by_source.setdefault(source_of(s), []).append(i)
    order: list[int] = []
    lists = [v for _, v in sorted(by_source.items())]
    while len(order) < max_images and any(lists):
        for v in lists:
            if v and len(order) < max_images:
                order.append(v.pop(0))

    def pairs(i: int, crop: np.ndarray, fake: np.ndarray) -> dict[str, np.ndarray]:
        q = int(np.random.default_rng([11, i]).integers(65, 101))
        return {
            "ae": _grid(jpeg_roundtrip(fake, 90), 4),
            "ae_aug": _grid(jpeg_roundtrip(fake, q), 4),
            "ae_real": _grid(jpeg_roundtrip(crop, 90), 4),
            "ae_real_aug": _grid(jpeg_roundtrip(crop, q), 4),
        }

    _autoencoder_stage(all_samples, order, CACHE / "ae.npz", 128, 4, pairs)


def _autoencoder_stage(
    all_samples: list[Sample],
    order: list[int],
    out: Path,
    size: int,
    count: int,
    pairs: Callable[[int, np.ndarray, np.ndarray], dict[str, np.ndarray]],
) -> None:
    """The images of order whose shorter side is at least size px: the size px centre
    crop through the tiny FLUX.2 autoencoder, and pairs(image index, crop, reconstruction)
    (each (size, size, 3) uint8) -> {condition: (count, 64, 64, 3) uint8 patches}, kept in
    out with the image indices (``idx``); resumes from out, saves every 20 images."""
    done: dict[str, list[np.ndarray]] = {"idx": []}
    if out.is_file():
        with np.load(out) as z:
            done = {
                k: list(z[k]) if k == "idx" else list(z[k].reshape(-1, count, PATCH, PATCH, 3))
                for k in z.files
            }
    have = {int(i) for i in done["idx"]}
    ae = TinyAutoencoder.load()
    start = time.monotonic()
    for n, i in enumerate(order):
        if i in have:
            continue
        try:
            rgb = load_image(all_samples[i].path).rgb
        except MediaError:
            continue
        if min(rgb.shape[:2]) < size:
            continue
        crop = np.ascontiguousarray(center_crop(rgb, size))
        with torch.inference_mode():
            fake = ae.reconstruct(crop)
        done["idx"].append(np.array(i, dtype=np.int64))
        for k, v in pairs(i, crop, fake).items():
            done.setdefault(k, []).append(v)
        if n % 20 == 19 or n == len(order) - 1:
            _savez(out, {k: np.stack(v) for k, v in done.items()})
            print(
                f"  reconstructed {len(done['idx'])} of {n + 1} ({time.monotonic() - start:.0f} s)",
                file=sys.stderr,
            )


def _transformed_patches(
    rgb: np.ndarray,
    side: int,
    transform: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    seed: list[int],
) -> np.ndarray:
    """9 grid patches of rgb's centre `side` px through transform (seeded), harmonised
    (centre crop 256, JPEG q90); (0, ...) if the result is under a patch."""
    crop = np.ascontiguousarray(center_crop(rgb, side))
    out = harmonise(transform(crop, np.random.default_rng(seed)))
    if min(out.shape[:2]) < PATCH:
        return np.zeros((0, PATCH, PATCH, 3), np.uint8)
    return _grid(out, 9)


def low_patches(rgb: np.ndarray, i: int) -> np.ndarray:
    """The ``low`` patches of image i: its centre 640 px through `low_light_capture`
    (seeded by i), harmonised, 9 grid patches."""
    return _transformed_patches(rgb, 640, low_light_capture, [23, i])


def clean_patches(rgb: np.ndarray, i: int) -> np.ndarray:
    """The ``clean`` patches of image i: its centre 1,024 px through `clean_downscale`
    (seeded by i), harmonised, 9 grid patches."""
    return _transformed_patches(rgb, 1024, clean_downscale, [29, i])


def scaled_patches(rgb: np.ndarray, i: int) -> np.ndarray:
    """The ``rsc`` patches of image i: its centre 512 px resized (Pillow bilinear,
    antialiased) by a factor drawn log-uniformly from 0.3-0.85 (seeded by i; other scales
    than the 0.5x of ``r50``), then JPEG q90; up to 4 grid patches ((0, ...) if under a
    patch)."""
    scale = float(np.exp(np.random.default_rng([31, i]).uniform(np.log(0.3), np.log(0.85))))
    out = jpeg_roundtrip(resize(np.ascontiguousarray(center_crop(rgb, 512)), scale), 90)
    if min(out.shape[:2]) < PATCH:
        return np.zeros((0, PATCH, PATCH, 3), np.uint8)
    return _grid(out, 4)


def derived_stage(
    cond: str, order: list[int], patches_of: Callable[[np.ndarray, int], np.ndarray]
) -> None:
    """Cut the patches of condition ``cond`` (``patches_of(rgb, index)``) of the images
    ``order`` into <cond>.npz (idx, cond, n_<cond>); unreadable or too small images are
    left out."""
    all_samples = samples()
    idx, parts = [], []
    start = time.monotonic()
    for n, i in enumerate(order):
        try:
            rgb = load_image(all_samples[i].path).rgb
        except MediaError:
            continue
        if min(rgb.shape[:2]) < PATCH:
            continue
        p = patches_of(rgb, i)
        if len(p):
            idx.append(i)
            parts.append(p)
        if n % 100 == 99:
            print(
                f"  {cond} {n + 1}/{len(order)} ({time.monotonic() - start:.0f} s)", file=sys.stderr
            )
    _savez(
        CACHE / f"{cond}.npz",
        {
            "idx": np.array(idx),
            cond: np.concatenate(parts),
            f"n_{cond}": np.array([len(p) for p in parts]),
        },
    )


def stage_low() -> None:
    """Run the ``low`` stage: every real photo of the training sources as a low-light,
    high-ISO capture (`low_patches`), into low.npz."""
    order = [i for i, s in enumerate(samples()) if s.label == 0 and not is_test_source(s)]
    derived_stage("low", order, low_patches)


def stage_clean() -> None:
    """Run the ``clean`` stage: every image of the training sources (both classes, no
    demo file) as a clean, strongly downscaled copy (`clean_patches`), into clean.npz."""
    all_samples = samples()
    demo = demo_indices(all_samples)
    order = [i for i, s in enumerate(all_samples) if not is_test_source(s) and i not in demo]
    derived_stage("clean", order, clean_patches)


def stage_scales() -> None:
    """Run the ``scales`` stage: every image of the training sources (both classes, no
    demo file) at one other scale (`scaled_patches`), into rsc.npz."""
    all_samples = samples()
    demo = demo_indices(all_samples)
    order = [i for i, s in enumerate(all_samples) if not is_test_source(s) and i not in demo]
    derived_stage("rsc", order, scaled_patches)


def stage_ae256() -> None:
    """The ``ae256`` stage: for the real photos of the ``ae`` stage (same images) that are
    at least 256 px on a side, the 256 px centre crop (the crop ``harm`` patches come
    from) through the tiny FLUX.2 autoencoder, and 9 grid patches of the reconstruction
    and of the untouched crop, both **without** any JPEG re-encode (``aer``,
    ``aer_real``) and both at q90 (``ae9``, ``ae9_real``): aligned pairs whose two
    classes get the same post-processing. Written to ``ae256.npz``."""
    all_samples = samples()
    with np.load(CACHE / "ae.npz") as z:
        order = [int(i) for i in z["idx"]]

    def pairs(i: int, crop: np.ndarray, fake: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "aer": _grid(fake, 9),
            "aer_real": _grid(crop, 9),
            "ae9": _grid(jpeg_roundtrip(fake, 90), 9),
            "ae9_real": _grid(jpeg_roundtrip(crop, 90), 9),
        }

    _autoencoder_stage(all_samples, order, CACHE / "ae256.npz", 256, 9, pairs)


# --------------------------------------------------------------------------- run stage

CONDS = ("harm", "aug", "j75", "r50", "syn", "syn_aug")
AE_CONDS = ("ae", "ae_aug", "ae_real", "ae_real_aug")
#: Stage ``ae256``: 256 px reconstructions without a re-encode (aer) and at q90 (ae9).
AE256_CONDS = ("aer", "aer_real", "ae9", "ae9_real")
LOW_CONDS = ("low", "clean", "rsc")
#: The stage that caches each condition's patches (`cache` caches those of CONDS).
STAGE_OF = {
    **{c: "cache" for c in CONDS},
    **{c: "ae" for c in AE_CONDS},
    **{c: "ae256" for c in AE256_CONDS},
    "low": "low",
    "clean": "clean",
    "rsc": "scales",
}


def recipe_conditions(
    *, resized: bool, low: bool, clean: bool, mix: bool, ae256: bool = False
) -> tuple[str, ...]:
    """The cached conditions a recipe of `stage_run` / `stage_ship` trains on, by its flags
    (the candidate name's ``_mixrlc...`` letters, or ship's ``--resized --low --clean
    --mix``)."""
    conds = ["harm", "aug"] + ["r50"] * resized + ["low"] * low + ["clean"] * clean
    if mix:
        conds += ["syn", "syn_aug", *(("ae9", "ae9_real") if ae256 else AE_CONDS)]
    return tuple(conds)


class Patches:
    """The cached patches: for condition c and image index i, ``get(c, i)`` is an
    (n, 64, 64, 3) uint8 array (n = 0 where none)."""

    def __init__(self) -> None:
        every = CONDS + AE_CONDS + AE256_CONDS + LOW_CONDS
        self.data: dict[str, list[np.ndarray]] = {c: [] for c in every}
        self.where: dict[str, dict[int, tuple[int, int]]] = {c: {} for c in every}
        for path in sorted(CACHE.glob("patches-*.npz")):
            with np.load(path) as z:
                for c in CONDS:
                    arr, counts = z[c], z[f"n_{c}"]
                    base = sum(len(a) for a in self.data[c])
                    bounds = np.cumsum([0, *counts])
                    for i, a, b in zip(z["idx"], bounds[:-1], bounds[1:], strict=True):
                        self.where[c][int(i)] = (base + int(a), base + int(b))
                    self.data[c].append(arr)
        if (CACHE / "ae.npz").is_file():
            with np.load(CACHE / "ae.npz") as z:
                for c in AE_CONDS:
                    arr = z[c]
                    self.data[c].append(arr.reshape(-1, PATCH, PATCH, 3))
                    for k, i in enumerate(z["idx"]):
                        self.where[c][int(i)] = (k * arr.shape[1], (k + 1) * arr.shape[1])
        if (CACHE / "ae256.npz").is_file():
            with np.load(CACHE / "ae256.npz") as z:
                for c in AE256_CONDS:
                    self.data[c].append(z[c].reshape(-1, PATCH, PATCH, 3))
                    for k, i in enumerate(z["idx"]):
                        self.where[c][int(i)] = (k * 9, (k + 1) * 9)
        for c in LOW_CONDS:  # one file per condition, of some images only
            if (CACHE / f"{c}.npz").is_file():
                with np.load(CACHE / f"{c}.npz") as z:
                    bounds = np.cumsum([0, *z[f"n_{c}"]])
                    for i, a, b in zip(z["idx"], bounds[:-1], bounds[1:], strict=True):
                        self.where[c][int(i)] = (int(a), int(b))
                    self.data[c].append(z[c])
        self.arrays = {
            c: np.concatenate(v) if v else np.zeros((0, PATCH, PATCH, 3), np.uint8)
            for c, v in self.data.items()
        }
        del self.data

    def images(self) -> list[int]:
        """Indices of the images that were cached."""
        return sorted(self.where["harm"])

    def require(self, conds: tuple[str, ...]) -> None:
        """Refuse (SystemExit naming the stages to run) when any of ``conds`` has no cached
        patch at all: a recipe must never train silently without one of its parts (the
        caches rebuilt on 3 December lacked low.npz and clean.npz, and that day's
        leave-one-family-out report trained version 7's recipe without them)."""
        missing = [c for c in dict.fromkeys(conds) if not self.where[c]]
        if missing:
            stages = " ".join(dict.fromkeys(STAGE_OF[c] for c in missing))
            raise SystemExit(
                f"no cached patches of {', '.join(missing)} in {CACHE}: run"
                f" `python scripts/detector_candidates.py <stage>` for each of: {stages}"
            )

    def get(self, cond: str, i: int) -> np.ndarray:
        a, b = self.where[cond].get(i, (0, 0))
        return self.arrays[cond][a:b]

    def stack(self, conds: tuple[str, ...], idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(patches (N, 64, 64, 3), image index of each (N,)) over conds and images."""
        parts, owner = [], []
        for c in conds:
            for i in idx:
                p = self.get(c, i)
                parts.append(p)
                owner.append(np.full(len(p), i))
        return np.concatenate(parts), np.concatenate(owner)


def fixed_features(
    patches: np.ndarray,
    feats: SpectralFeatures | ResidualCooccurrence | NormalisedCooccurrence | MinMaxCooccurrence,
) -> np.ndarray:
    """Fixed features (`SpectralFeatures` or `ResidualCooccurrence`) of patches
    (N, 64, 64, 3) uint8 -> (N, F) float32."""
    pre = Preprocess(patch_size=PATCH)
    out = []
    with torch.inference_mode():
        for a in range(0, len(patches), 2048):
            x = to_input(torch.from_numpy(np.ascontiguousarray(patches[a : a + 2048])), pre)
            out.append(feats(x).numpy())
    return np.concatenate(out) if out else np.zeros((0, feats.size), np.float32)


def _feature_net(size: int, hidden: int = 0) -> SpectralLogistic:
    """The `SpectralLogistic` whose features have `size` columns: spectral, + the
    co-occurrences, + the noise-normalised co-occurrences (+ `MinMaxCooccurrence`, or + one
    or two log noise levels (`patch_noise`): then only its head and standardisation are
    sized for them, for ``cv``'s scoring of cached features; its forward pass does not
    compute them)."""
    spectral = SpectralFeatures(PATCH).size
    co = spectral + ResidualCooccurrence().size
    norm = co + NormalisedCooccurrence().size
    # + MinMaxCooccurrence, or + the log noise level of the crop and/or its image, or
    # the image context of `context_rows` (two or three times the features)
    if size in (norm + MinMaxCooccurrence().size, norm + 1, norm + 2, 2 * norm, 3 * norm):
        net = SpectralLogistic(PATCH, cooccurrence=True, hidden=hidden, normalised=True)
        net.register_buffer("feat_mean", torch.zeros(size))
        net.register_buffer("feat_std", torch.ones(size))
        net.fc = (
            torch.nn.Sequential(
                torch.nn.Linear(size, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)
            )
            if hidden
            else torch.nn.Linear(size, 1)
        )
        return net
    if size not in (spectral, co, norm):
        raise ValueError(f"no feature set has {size} columns")
    return SpectralLogistic(PATCH, cooccurrence=size >= co, hidden=hidden, normalised=size > co)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> SpectralLogistic:
    """A `SpectralLogistic` whose standardisation and linear layer are fitted on features
    x (N, F) with labels y (N,), classes weighted equally (L-BFGS, L2 penalty l2). F is
    the spectral size, or that plus the co-occurrence size (``cooccurrence=True``)."""
    net = _feature_net(x.shape[1])
    mean, std = x.mean(0), x.std(0) + 1e-6
    net.feat_mean.copy_(torch.from_numpy(mean))
    net.feat_std.copy_(torch.from_numpy(std))
    xs = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).float()
    w = torch.where(yt > 0, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
    opt = torch.optim.LBFGS(net.fc.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = net.fc(xs).squeeze(1)
        loss = (w * F.binary_cross_entropy_with_logits(z, yt, reduction="none")).mean()
        loss = loss + l2 * weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    weight = next(p for n, p in net.fc.named_parameters() if n == "weight")
    opt.step(closure)  # type: ignore[no-untyped-call]
    return net.eval()


def fit_mlp(
    x: np.ndarray,
    y: np.ndarray,
    hidden: int = 64,
    epochs: int = 3,
    weight_decay: float = 1e-2,
    dropout: float = 0.2,
    seed: int = 0,
) -> SpectralLogistic:
    """A `SpectralLogistic` with an MLP head (``hidden`` units) fitted on per-patch
    features x (N, F) with labels y (N,): AdamW, one-cycle learning rate peaking at 2e-3,
    batch 256, the positive class weighted to balance the classes, dropout on the
    standardised features while training. Seeded: the same data give the same weights."""
    torch.manual_seed(seed)
    net = _feature_net(x.shape[1], hidden)
    mean, std = x.mean(0), x.std(0) + 1e-6
    net.feat_mean.copy_(torch.from_numpy(mean))
    net.feat_std.copy_(torch.from_numpy(std))
    xs = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).float()
    opt = torch.optim.AdamW(net.fc.parameters(), lr=2e-3, weight_decay=weight_decay)
    steps = epochs * -(-len(xs) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    pos_weight = (1 - yt.mean()) / yt.mean()
    net.fc.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xs), generator=gen)
        for a in range(0, len(xs), 256):
            b = perm[a : a + 256]
            z = net.fc(F.dropout(xs[b], dropout, training=True)).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(z, yt[b], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
    return net.eval()


def merge_heads(nets: list[SpectralLogistic]) -> SpectralLogistic:
    """One `SpectralLogistic` whose logit is the mean of the logits of nets (MLP heads of
    H units fitted on the same features, e.g. with other seeds): an MLP of len(nets) * H
    units, the first layers stacked and the last ones averaged, so a seed ensemble is
    served by the existing architecture (``hidden`` = len(nets) * H)."""

    def layers(net: SpectralLogistic) -> tuple[torch.nn.Linear, torch.nn.Linear]:
        fc = net.fc
        assert isinstance(fc, torch.nn.Sequential)
        a, b = fc[0], fc[2]
        assert isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.Linear)
        return a, b

    first = nets[0]
    if len(nets) == 1:
        return first
    assert all(torch.equal(n.feat_mean, first.feat_mean) for n in nets)
    heads = [layers(n) for n in nets]
    out = _feature_net(first.feat_mean.numel(), heads[0][0].out_features * len(nets))
    out.feat_mean.copy_(first.feat_mean)
    out.feat_std.copy_(first.feat_std)
    into, last = layers(out)
    with torch.no_grad():
        into.weight.copy_(torch.cat([a.weight for a, _ in heads]))
        into.bias.copy_(torch.cat([a.bias for a, _ in heads]))
        last.weight.copy_(torch.cat([b.weight for _, b in heads], 1) / len(nets))
        last.bias.copy_(torch.stack([b.bias for _, b in heads]).mean(0))
    return out.eval()


def _cached_features(
    patches: Patches,
    path: Path,
    feats: SpectralFeatures | ResidualCooccurrence | NormalisedCooccurrence | MinMaxCooccurrence,
) -> dict[str, np.ndarray]:
    """Features of every cached patch by condition, computed once and kept in path; a
    condition cached later (``low``) keeps its features beside it in
    ``<stem>+<condition>.npz``, so path itself is written only once."""
    arrays: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            arrays = {c: z[c] for c in z.files}
    start = time.monotonic()
    fresh = not arrays
    for c, a in patches.arrays.items():
        extra = path.with_name(f"{path.stem}+{c}.npz")
        if c in arrays and len(arrays[c]) == len(a):
            continue
        if extra.is_file():
            with np.load(extra) as z:
                if len(z[c]) == len(a):
                    arrays[c] = z[c]
                    continue
        arrays[c] = fixed_features(a, feats)
        print(f"  {path.name}: {c} ({time.monotonic() - start:.0f} s)", file=sys.stderr)
        if not fresh:
            _savez(extra, {c: arrays[c]})
    if fresh:
        _savez(path, arrays)
    return arrays


class MinMaxCooccurrence(torch.nn.Module):
    """More of the spatial rich model (Fridrich and Kodovsky 2012), measured by ``cv``
    only (variant ``v5_clean_minmax``; not served): co-occurrences of triples of

    * the minimum and the maximum of the horizontal and vertical first-order residuals at
      each pixel (SRM's "minmax" residuals; step 1, clipped to [-2, 2]; 125 + 125 bins);
    * the 3x3 "KB" residual, x convolved with [[-1, 2, -1], [2, -4, 2], [-1, 2, -1]] / 4
      (step 2; 125 bins),

    along rows and columns pooled, on the luminance in pixel units, Hellinger (square
    root of shares). Input (B, 3, P, P) normalised pixels; output (B, 375) float32."""

    def __init__(self, scale: float = 255.0 * 0.25) -> None:
        super().__init__()
        self.scale = scale

    @property
    def size(self) -> int:
        """The number of features."""
        return 375

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, P, P) -> (B, size) float32."""
        from detector.model import _hist, _quantise

        triples = ResidualCooccurrence._triples
        y = (x.float() * self.scale).mean(1)
        dh = y[:, 1:-1, 2:] - y[:, 1:-1, 1:-1]
        dv = y[:, 2:, 1:-1] - y[:, 1:-1, 1:-1]
        c = y[:, 1:-1, 1:-1]
        kb = (
            -y[:, :-2, :-2]
            - y[:, :-2, 2:]
            - y[:, 2:, :-2]
            - y[:, 2:, 2:]
            + 2 * (y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:])
            - 4 * c
        ) / 4
        out = []
        for r, step in ((torch.minimum(dh, dv), 1.0), (torch.maximum(dh, dv), 1.0), (kb, 2.0)):
            q = _quantise(r, step, 2)
            out.append(_hist(torch.cat([triples(q, 2), triples(q, 1)], 1), 125))
        return torch.cat(out, 1).sqrt()


class Features:
    """Spectral features of every cached patch (and, with cooccurrence, the residual
    co-occurrence features beside them; with normalised, the noise-normalised ones after
    those; with minmax, `MinMaxCooccurrence` last), computed once (features.npz,
    features-cooc.npz, features-norm.npz, features-minmax.npz)."""

    def __init__(
        self,
        patches: Patches,
        cooccurrence: bool = False,
        normalised: bool = False,
        minmax: bool = False,
    ) -> None:
        self.arrays = _cached_features(patches, CACHE / "features.npz", SpectralFeatures(PATCH))
        if cooccurrence:
            co = _cached_features(patches, CACHE / "features-cooc.npz", ResidualCooccurrence())
            self.arrays = {c: np.concatenate([a, co[c]], 1) for c, a in self.arrays.items()}
        if normalised:
            no = _cached_features(patches, CACHE / "features-norm.npz", NormalisedCooccurrence())
            self.arrays = {c: np.concatenate([a, no[c]], 1) for c, a in self.arrays.items()}
        if minmax:
            mm = _cached_features(patches, CACHE / "features-minmax.npz", MinMaxCooccurrence())
            self.arrays = {c: np.concatenate([a, mm[c]], 1) for c, a in self.arrays.items()}
        self.where = patches.where

    def stack(
        self, conds: tuple[str, ...], idx: list[int], patches: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(image-level features (N, F): the mean over each image's patches, one row per
        image and condition that has patches; the image index of each row (N,)). For a
        linear model the mean feature's logit is the mean patch logit, as served. With
        ``patches``, one row per patch instead (for a nonlinear head)."""
        rows, owner = [], []
        for c in conds:
            for i in idx:
                a, b = self.where[c].get(i, (0, 0))
                if b > a:
                    rows.append(self.arrays[c][a:b] if patches else self.arrays[c][a:b].mean(0))
                    owner.extend([i] * (b - a) if patches else [i])
        size = self.arrays["harm"].shape[1]
        if not rows:
            return np.zeros((0, size), np.float32), np.array(owner)
        return (np.concatenate(rows) if patches else np.stack(rows)), np.array(owner)


def patch_noise(patches: Patches) -> dict[str, np.ndarray]:
    """Immerkær's noise sigma (`detector.noise.crop_noise`, 0-255 grey levels) of every
    cached patch by condition: (n,) float64 per condition, in the order of
    ``patches.arrays``; computed once and kept in noise.npz."""
    from detector.noise import crop_noise

    path = CACHE / "noise.npz"
    arrays: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            arrays = {c: z[c] for c in z.files}
    fresh = False
    for c, a in patches.arrays.items():
        if c in arrays and len(arrays[c]) == len(a):
            continue
        parts = [crop_noise(a[k : k + 4096]) for k in range(0, len(a), 4096)]
        arrays[c] = np.concatenate(parts) if parts else np.zeros(0)
        fresh = True
    if fresh:
        _savez(path, arrays)
    return arrays


def noise_columns(
    sigma: dict[str, np.ndarray],
    where: dict[str, dict[int, tuple[int, int]]],
    conds: tuple[str, ...],
    idx: list[int],
    mode: str,
) -> np.ndarray:
    """The log noise level beside each patch, in the row order of ``Features.stack(conds,
    idx, patches=True)``: (N, 1) for mode "crop" (the patch's own level) or "image" (the
    median over its image's patches of the same condition, as served), (N, 2) for "both";
    floored at `detector.noise.NOISE_FLOOR` before the log."""
    from detector.noise import NOISE_FLOOR

    cols = []
    for c in conds:
        for i in idx:
            a, b = where[c].get(i, (0, 0))
            if b <= a:
                continue
            own = np.log(np.maximum(sigma[c][a:b], NOISE_FLOOR))
            img = np.full(b - a, np.log(max(float(np.median(sigma[c][a:b])), NOISE_FLOOR)))
            cols.append(
                {"crop": own[:, None], "image": img[:, None], "both": np.c_[own, img]}[mode]
            )
    width = 2 if mode == "both" else 1
    return np.concatenate(cols).astype(np.float32) if cols else np.zeros((0, width), np.float32)


def context_rows(
    ft: Features, conds: tuple[str, ...], idx: list[int], width: int, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Features with their image's context, for ``cv``'s image-context variants; rows in
    the order of ``Features.stack(conds, idx)`` (conditions outer, images inner), the
    first ``width`` columns of each patch's features. Modes:

    * "mean" / "meanstd": one row per patch, its own features then the mean (and the
      standard deviation) of the features of its image's patches of the same condition:
      (N, 2 * width) or (N, 3 * width); a crop judged against its image (as served it
      would be the image's 64 crops).
    * "image": one row per image and condition, the mean then the standard deviation of
      its patches' features: (M, 2 * width), for an image-level head.

    Returns (rows float32, image index of each row)."""
    out, owner = [], []
    for c in conds:
        for i in idx:
            a, b = ft.where[c].get(i, (0, 0))
            if b <= a:
                continue
            block = ft.arrays[c][a:b, :width]
            mean, std = block.mean(0), block.std(0)
            if mode == "image":
                out.append(np.r_[mean, std][None])
                owner.append(i)
                continue
            parts = [block, np.broadcast_to(mean, block.shape)]
            if mode == "meanstd":
                parts.append(np.broadcast_to(std, block.shape))
            out.append(np.concatenate(parts, 1))
            owner.extend([i] * (b - a))
    size = {"mean": 2, "meanstd": 3, "image": 2}[mode] * width
    if not out:
        return np.zeros((0, size), np.float32), np.array(owner, int)
    return np.concatenate(out).astype(np.float32), np.array(owner, int)


def image_aggregate(
    values: np.ndarray, owner: np.ndarray, idx: list[int], how: str = "mean"
) -> np.ndarray:
    """Per-image aggregate of per-patch logits in the order of idx (NaN where none):
    "mean" (as served), "median", "trim" (mean of what is left after dropping the lowest
    and the highest fifth, rounded down), "q75" (the 75th percentile)."""
    if how == "mean":
        return image_means(values, owner, idx)
    out = np.full(len(idx), np.nan)
    order = np.argsort(owner, kind="stable")
    vs, os_ = values[order], owner[order]
    starts = np.searchsorted(os_, idx, "left")
    ends = np.searchsorted(os_, idx, "right")
    for k, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if b <= a:
            continue
        v = np.sort(vs[a:b])
        if how == "median":
            out[k] = float(np.median(v))
        elif how == "q75":
            out[k] = float(np.quantile(v, 0.75))
        elif how == "trim":
            cut = len(v) // 5
            out[k] = float(v[cut : len(v) - cut].mean())
        else:
            raise ValueError(f"unknown aggregate {how!r}")
    return out


def hidden_stats(
    net: SpectralLogistic, ft: Features, conds: tuple[str, ...], idx: list[int], width: int
) -> tuple[np.ndarray, np.ndarray]:
    """For ``cv``'s image head on the MLP's hidden layer: one row per image and condition
    (conditions outer, images inner), the mean then the standard deviation over the
    image's patches of the hidden units (after the GELU) of net's MLP head: (M, 2H)
    float32, and the image index of each row (M,)."""
    fc = net.fc
    assert isinstance(fc, torch.nn.Sequential)
    first = fc[0]
    assert isinstance(first, torch.nn.Linear)
    rows, owner = [], []
    for c in conds:
        x, own = ft.stack((c,), idx, patches=True)
        if not len(x):
            continue
        with torch.inference_mode():
            xs = (
                torch.from_numpy(np.ascontiguousarray(x[:, :width])) - net.feat_mean
            ) / net.feat_std
            h = fc[1](first(xs.float())).numpy().astype(np.float64)
        starts = np.r_[0, np.flatnonzero(own[1:] != own[:-1]) + 1]
        counts = np.diff(np.r_[starts, len(own)])[:, None]
        mean = np.add.reduceat(h, starts) / counts
        var = np.maximum(np.add.reduceat(h * h, starts) / counts - mean * mean, 0)
        rows.append(np.c_[mean, np.sqrt(var)])
        owner.append(own[starts])
    if not rows:
        return np.zeros((0, 2 * first.out_features), np.float32), np.zeros(0, int)
    return np.concatenate(rows).astype(np.float32), np.concatenate(owner)


def fit_image_head(x: np.ndarray, y: np.ndarray, l2: float) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic regression on rows x (N, F) with labels y (N,), standardised, classes
    weighted equally, L2 penalty l2 (L-BFGS); returns the function from rows to logits."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xs = torch.from_numpy((x - mean) / std).float()
    yt = torch.from_numpy(y).float()
    w = torch.where(yt > 0, 0.5 / yt.mean(), 0.5 / (1 - yt.mean()))
    lin = torch.nn.Linear(x.shape[1], 1)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        z = lin(xs).squeeze(1)
        loss = (w * F.binary_cross_entropy_with_logits(z, yt, reduction="none")).mean()
        loss = loss + l2 * lin.weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]

    def logits(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            z = lin(torch.from_numpy((rows - mean) / std).float()).squeeze(1)
        return np.asarray(z.numpy(), np.float64)

    return logits


def image_means(values: np.ndarray, owner: np.ndarray, idx: list[int]) -> np.ndarray:
    """Mean of per-patch values by image, in the order of idx (NaN where none)."""
    out = np.full(len(idx), np.nan)
    pos = {i: k for k, i in enumerate(idx)}
    sums = np.zeros(len(idx))
    counts = np.zeros(len(idx))
    for v, o in zip(values, owner, strict=True):
        sums[pos[int(o)]] += v
        counts[pos[int(o)]] += 1
    out[counts > 0] = sums[counts > 0] / counts[counts > 0]
    return out


def train_cnn(
    patches: np.ndarray, labels: np.ndarray, epochs: int, seed: int, widths: tuple[int, ...]
) -> PatchResNet:
    """A PatchResNet trained on patches (N, 64, 64, 3) uint8 with labels (N,)."""
    config = TrainConfig(epochs=epochs, seed=seed, widths=widths, batch_size=128)  # type: ignore[arg-type]
    torch.manual_seed(seed)
    net = PatchResNet("npr", widths)  # type: ignore[arg-type]
    train_network(net, patches, labels, config, Preprocess(patch_size=PATCH), torch.device("cpu"))
    return net


def cnn_logits(net: torch.nn.Module, patches: np.ndarray) -> np.ndarray:
    return patch_logits(net, patches, Preprocess(patch_size=PATCH), torch.device("cpu"))


def stage_run(args: argparse.Namespace) -> None:
    """Train every candidate, score each with the protocol, write the report."""
    all_samples = samples()
    pt = Patches()
    chosen = set(args.candidates.split(","))
    # Spectral features only when a spectral candidate runs (computing them takes minutes).
    ft: Any = Features(pt) if any(c.startswith("spec") for c in chosen) else None
    ft_co: Any = Features(pt, True) if any(c.startswith("spco") for c in chosen) else None
    ft_cn: Any = Features(pt, True, True) if any(c.startswith("spcn") for c in chosen) else None
    demo = demo_indices(all_samples)
    idx = [i for i in pt.images() if i not in demo]
    test_real = [i for i in idx if all_samples[i].label == 0 and is_test_source(all_samples[i])]
    train_real = [
        i for i in idx if all_samples[i].label == 0 and not is_test_source(all_samples[i])
    ]
    gen = [i for i in idx if all_samples[i].label == 1]
    families = sorted({all_samples[i].family for i in gen})
    kind = {all_samples[i].family: all_samples[i].kind for i in gen}
    repos_of: dict[str, set[str]] = {}
    for i in gen:
        repos_of.setdefault(all_samples[i].family, set()).add(source_of(all_samples[i]))
    eval_idx = test_real + gen
    labels = np.array([all_samples[i].label for i in eval_idx])
    ae_idx = sorted(pt.where["ae"])
    report: dict[str, Any] = {
        "candidates": {},
        "protocol": __doc__.split("Protocol: ")[1].split("\n\n")[0],
    }
    report["data"] = {
        "test_real_images": len(test_real),
        "test_real_sources": len({source_of(all_samples[i]) for i in test_real}),
        "train_real_images": len(train_real),
        "generated_images": len(gen),
        "families": {f: sum(all_samples[i].family == f for i in gen) for f in families},
        "aligned_pairs": len(ae_idx),
    }

    def fold_train_gen(held: set[str]) -> list[int]:
        """Generated training images for a fold holding out the families in held."""
        banned = set().union(*(repos_of[f] for f in held))
        return [
            i
            for i in gen
            if all_samples[i].family not in held and source_of(all_samples[i]) not in banned
        ]

    def score_once(name: str, logit_of: Any, seconds: float, notes: str) -> None:
        """Score a candidate trained once (no generated images) on every condition."""
        cond_scores = {}
        for cond in ("harm", "j75", "r50"):
            cond_scores[cond] = logit_of(cond, eval_idx)
        report["candidates"][name] = summarise(name, cond_scores, seconds, notes)

    def summarise(
        name: str, cond_scores: dict[str, np.ndarray], seconds: float, notes: str
    ) -> dict[str, Any]:
        _savez(CACHE / f"scores-{name}.npz", {"idx": np.array(eval_idx), **cond_scores})
        fam = np.array([all_samples[i].family for i in eval_idx])
        out: dict[str, Any] = {"train_seconds": round(seconds, 1), "notes": notes, "families": {}}
        for cond, sc in cond_scores.items():
            ok = ~np.isnan(sc)
            out[f"pooled_auc_{cond}"] = roc_auc(labels[ok], sc[ok])
            for f in families:
                sel = ok & ((labels == 0) | (fam == f))
                if (fam[sel] == f).sum() >= 5:
                    out["families"].setdefault(
                        f, {"kind": kind[f], "n": int((fam[sel] == f).sum())}
                    )
                    out["families"][f][cond] = roc_auc(labels[sel], sc[sel])
        for k in ("gan", "diffusion", "other"):
            rows = [v for v in out["families"].values() if v["kind"] == k and v["n"] >= 10]
            for cond in cond_scores:
                vals = [v[cond] for v in rows if cond in v]
                out[f"mean_auc_{k}_{cond}"] = float(np.mean(vals)) if vals else None
        out["drop_j75"] = out["pooled_auc_harm"] - out["pooled_auc_j75"]
        out["drop_r50"] = out["pooled_auc_harm"] - out["pooled_auc_r50"]
        print(
            f"{name}: pooled AUC harm {out['pooled_auc_harm']:.3f} "
            f"j75 {out['pooled_auc_j75']:.3f} r50 {out['pooled_auc_r50']:.3f}; GAN "
            f"{out['mean_auc_gan_harm']}, diffusion {out['mean_auc_diffusion_harm']} "
            f"({seconds:.0f} s) {notes}",
            file=sys.stderr,
        )
        return out

    def spectral_once(
        pos: tuple[str, ...], neg_conds: tuple[str, ...], neg_idx: list[int], pos_idx: list[int]
    ) -> SpectralLogistic:
        xn, _ = ft.stack(neg_conds, neg_idx)
        xp, _ = ft.stack(pos, pos_idx)
        return fit_logistic(np.concatenate([xn, xp]), np.r_[np.zeros(len(xn)), np.ones(len(xp))])

    def spectral_scores(
        net: SpectralLogistic, cond: str, ids: list[int], ft: Any = ft
    ) -> np.ndarray:
        # Per patch, then the mean patch logit per image, as served (for a linear head
        # the same as the logit of the mean features).
        x, owner = ft.stack((cond,), ids, patches=True)
        with torch.inference_mode():
            z = net.fc((torch.from_numpy(x) - net.feat_mean) / net.feat_std).squeeze(1).numpy()
        return image_means(z, owner, ids)

    widths: tuple[int, ...] = args.widths

    def cnn_scores(net: torch.nn.Module, cond: str, ids: list[int]) -> np.ndarray:
        x, owner = pt.stack((cond,), ids)
        return image_means(cnn_logits(net, x), owner, ids)

    # (d) spectral floor and (c) multi-family training, retrained per fold. The spectral
    # models hold out one family per fold; the CNNs hold out a group of families per fold
    # (args.folds groups, families dealt round robin in order of size) to fit the CPU.
    pos_of = {i: k for k, i in enumerate(eval_idx)}
    by_size = sorted(families, key=lambda f: -report["data"]["families"][f])
    groups = [set(by_size[k :: args.folds]) for k in range(args.folds)]

    def fold_features(
        held: set[str],
        mix: bool,
        ft: Any,
        resized: bool = False,
        patches: bool = False,
        low: bool = False,
        clean: bool = False,
        famw: bool = False,
        ae256: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        # ae256: the aligned pairs of stage ae256 at q90 (ae9) instead of stage ae's;
        # resized: the 0.5x copies of the training images too, both classes; patches:
        # one row per patch (for the MLP head) instead of per image; low: the real
        # photos' low-light captures too; clean: the clean downscaled copies, both classes;
        # famw: the generated rows redrawn (with replacement, as many) so that every
        # generator family, and the fakes as one group, weighs the same.
        conds = ("harm", "aug", "r50") if resized else ("harm", "aug")
        xn, _ = ft.stack(conds + (("low",) if low else ()), train_real, patches)
        x, owner = ft.stack(conds, fold_train_gen(held), patches)
        pos, tags = [x], [all_samples[int(o)].family for o in owner]
        if clean:
            xn = np.concatenate([xn, ft.stack(("clean",), train_real, patches)[0]])
            x, owner = ft.stack(("clean",), fold_train_gen(held), patches)
            pos, tags = pos + [x], tags + [all_samples[int(o)].family for o in owner]
        if mix:
            pos += [ft.stack(("syn", "syn_aug"), train_real, patches)[0]]
            fake, real = (("ae9",), ("ae9_real",)) if ae256 else (AE_CONDS[:2], AE_CONDS[2:])
            pairs = sorted(pt.where[fake[0]])
            pos += [ft.stack(fake, pairs, patches)[0]]
            xn = np.concatenate([xn, ft.stack(real, pairs, patches)[0]])
        xp = np.concatenate(pos)
        if famw:
            tags += ["fake"] * (len(xp) - len(tags))
            inv = np.unique(tags, return_inverse=True)[1]
            w = 1.0 / np.bincount(inv)[inv]
            draw = np.random.default_rng([37, len(held), len(xp)])
            xp = xp[draw.choice(len(xp), len(xp), p=w / w.sum())]
        return np.concatenate([xn, xp]), np.r_[np.zeros(len(xn)), np.ones(len(xp))]

    def fit_fold(
        held: set[str],
        mix: bool,
        ft: Any,
        resized: bool,
        mlp: bool,
        low: bool,
        clean: bool,
        famw: bool = False,
        ae256: bool = False,
    ) -> SpectralLogistic:
        if mlp:
            data = fold_features(held, mix, ft, resized, True, low, clean, famw, ae256)
            return fit_mlp(*data, hidden=args.hidden, seed=args.seed)
        return fit_logistic(*fold_features(held, mix, ft, resized, False, low), l2=args.l2)

    def fold_patches(held: set[str], mix: bool) -> tuple[np.ndarray, np.ndarray]:
        xn = [pt.stack(("harm", "aug"), train_real)[0]]
        xp = [pt.stack(("harm", "aug"), fold_train_gen(held))[0]]
        if mix:
            xp += [
                pt.stack(("syn", "syn_aug"), train_real)[0],
                pt.stack(("ae", "ae_aug"), ae_idx)[0],
            ]
            xn += [pt.stack(("ae_real", "ae_real_aug"), ae_idx)[0]]
        n, p = np.concatenate(xn), np.concatenate(xp)
        return np.concatenate([n, p]), np.r_[np.zeros(len(n)), np.ones(len(p))]

    for name in (
        "spec_gen",
        "spec_mix",
        "spco_gen",
        "spco_mix",
        "spco_mixr",
        "spco_mixr_mlp",
        "spcn_mixrl",
        "spcn_mixrl_mlp",
        "spcn_mixrlc_mlp",
        "spcn_mixrlcw_mlp",
        "spcn_mixrlca_mlp",
        "cnn_gen",
        "cnn_mix",
    ):
        if name not in chosen:
            continue
        t0 = time.monotonic()
        mix = "_mix" in name
        resized = "_mixr" in name
        low = "_mixrl" in name
        clean = "_mixrlc" in name
        famw = "_mixrlcw" in name
        ae256 = "_mixrlca" in name
        mlp = name.endswith("_mlp")
        spectral = name.startswith("sp")
        pt.require(recipe_conditions(resized=resized, low=low, clean=clean, mix=mix, ae256=ae256))
        fts = {"spco": ft_co, "spcn": ft_cn}.get(name[:4], ft)
        cond_scores = {c: np.full(len(eval_idx), np.nan) for c in ("harm", "j75", "r50")}
        folds = [{f} for f in families] if spectral else groups
        for held in folds:
            ids = [i for i in gen if all_samples[i].family in held]
            score: Any
            if spectral:
                net: Any = fit_fold(held, mix, fts, resized, mlp, low, clean, famw, ae256)
                score = lambda c, ids, net=net, f=fts: spectral_scores(net, c, ids, f)  # noqa: E731
            else:
                net = train_cnn(*fold_patches(held, mix), args.epochs, 0, widths)
                score = lambda c, ids, net=net: cnn_scores(net, c, ids)  # noqa: E731
            for c in cond_scores:
                cond_scores[c][[pos_of[i] for i in ids]] = score(c, ids)
            if not spectral:  # real test photos: the mean over the fold models
                for c in cond_scores:
                    cond_scores[c][: len(test_real)] = np.nan_to_num(
                        cond_scores[c][: len(test_real)]
                    ) + score(c, test_real) / len(folds)
            print(
                f"  {name}: fold {sorted(held)[:3]} ({time.monotonic() - t0:.0f} s)",
                file=sys.stderr,
            )
        if spectral:  # real test photos: the model trained on every family
            net = fit_fold(set(), mix, fts, resized, mlp, low, clean, famw, ae256)
            for c in cond_scores:
                cond_scores[c][: len(test_real)] = spectral_scores(net, c, test_real, fts)
        report["candidates"][name] = summarise(
            name,
            cond_scores,
            time.monotonic() - t0,
            (
                "spectral LR"
                if name.startswith("spec")
                else "spectral + co-occurrence"
                + (" + noise-normalised co-occurrence" if name.startswith("spcn") else "")
                + (f" MLP ({args.hidden} hidden units)" if mlp else " LR")
                if spectral
                else f"PatchResNet {widths}, {args.epochs} epochs"
            )
            + ", real vs generated of the other families"
            + (" + synthetic-upsampler and autoencoder fakes" if mix else "")
            + (" + 0.5x copies" if resized else "")
            + (" + low-light captures of the training real photos" if low else "")
            + (" + clean downscaled copies, both classes" if clean else "")
            + (" + every generator family (and the fakes) weighing the same" if famw else "")
            + (" (autoencoder pairs: 256 px crops, q90, stage ae256)" if ae256 else ""),
        )
    for name, pos_c, neg_c, src in (
        ("spec_syn", ("syn", "syn_aug"), ("harm", "aug"), train_real),
        ("spec_ae", ("ae", "ae_aug"), ("ae_real", "ae_real_aug"), ae_idx),
    ):
        if name in chosen:
            t0 = time.monotonic()
            net = spectral_once(pos_c, neg_c, src, src)
            score_once(
                name,
                lambda c, ids, net=net: spectral_scores(net, c, ids),
                time.monotonic() - t0,
                f"spectral LR, {neg_c} vs {pos_c}",
            )
    for name, pos_c, neg_c, src in (
        ("cnn_syn", ("syn", "syn_aug"), ("harm", "aug"), train_real),
        ("cnn_ae", ("ae", "ae_aug"), ("ae_real", "ae_real_aug"), ae_idx),
    ):
        if name in chosen:
            t0 = time.monotonic()
            xn, _ = pt.stack(neg_c, src)
            xp, _ = pt.stack(pos_c, src)
            net = train_cnn(
                np.concatenate([xn, xp]),
                np.r_[np.zeros(len(xn)), np.ones(len(xp))],
                args.epochs,
                0,
                widths,
            )
            secs = time.monotonic() - t0
            score_once(
                name,
                lambda c, ids, net=net: cnn_scores(net, c, ids),
                secs,
                f"PatchResNet {widths}, {args.epochs} epochs, {neg_c} vs {pos_c}",
            )
            torch.save(net.state_dict(), CACHE / f"{name}.pt")
    if "old_default" in chosen:  # the weights shipped before, on the images it never saw
        t0 = time.monotonic()
        old_model = load_model("default", args.baseline)
        seen = set(json.loads(Path(args.baseline_trainfiles).read_text())["trained_on"])
        unseen = [i for i in eval_idx if recipe_key(all_samples[i]) not in seen]

        def old_scores(c: str, ids: list[int]) -> np.ndarray:
            out = np.full(len(ids), np.nan)
            keep = [k for k, i in enumerate(ids) if i in set(unseen)]
            out[keep] = cnn_scores(old_model.net, c, [ids[k] for k in keep])
            return out

        score_once("old_default", old_scores, time.monotonic() - t0, "default version 2")
    # Ensembles: the members' image logits, each divided by its spread over all test
    # images (no labels used), averaged.
    for combo in filter(None, args.ensembles.split(",")):
        members = combo.split("+")
        files = [CACHE / f"scores-{m}.npz" for m in members]
        if not all(f.is_file() for f in files):
            continue
        cond_scores = {}
        for cond in ("harm", "j75", "r50"):
            parts = []
            for f in files:
                with np.load(f) as z:
                    if list(z["idx"]) != eval_idx:
                        break
                    parts.append(z[cond] / np.nanstd(z["harm"]))
            if len(parts) == len(files):  # every member scored the same rows
                cond_scores[cond] = np.mean(parts, axis=0)
        if len(cond_scores) == 3:
            report["candidates"][combo] = summarise(combo, cond_scores, 0.0, "ensemble")
    path = Path(args.report)
    if path.is_file():  # candidates run separately accumulate
        old = json.loads(path.read_text())
        report["candidates"] = {**old.get("candidates", {}), **report["candidates"]}
    path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


#: The ``run`` candidate that retrains, per fold, the recipe of each shipped model version
#: (``default`` 6 and 7 share one network; 7 changed only the band rule), keyed by the
#: recipe flags recorded in the weights' ``training.recipe``.
SHIPPED_RECIPES = {
    ("spcn", "mlp", "--mix", "--resized", "--low", "--clean"): "spcn_mixrlc_mlp",
}
#: Goals of issue 14 that a leave-one-family-out report can show (harmonised AUC floors,
#: robustness drops at most).
LOFO_GOALS = {"gan_mean_min": 0.90, "diffusion_mean_min": 0.85, "drop_max": 0.05}
#: The data flags of ``ship`` (each adds training rows; `stage_ship`).
_SHIP_FLAGS = ("mix", "resized", "low", "clean")


def shipped_candidate(recipe: str) -> str:
    """The ``run`` candidate that retrains the recipe recorded in a model's weights.

    recipe: ``training.recipe`` of the weights' JSON (the ``ship`` command line).
    Raises SystemExit (exit 2) when no candidate reproduces it: a leave-one-family-out
    report of another recipe must not be written as the shipped model's.
    """
    words = recipe.split()

    def after(flag: str) -> str:
        return words[words.index(flag) + 1] if flag in words else ""

    for (model, head, *flags), name in SHIPPED_RECIPES.items():
        if after("--model") == model and after("--head") == head and all(f in words for f in flags):
            extra = {w for w in words if w.startswith("--") and w[2:] in _SHIP_FLAGS} - set(flags)
            if not extra:
                return name
    print(f"lofo: no run candidate reproduces the shipped recipe {recipe!r}", file=sys.stderr)
    raise SystemExit(2)


def lofo_report(
    run: dict[str, Any], name: str, meta: dict[str, Any], command: str
) -> dict[str, Any]:
    """eval-lofo.json: one candidate's leave-one-family-out figures, labelled by the model.

    run: the ``run`` report holding candidate ``name``; meta: the shipped weights' JSON
    (``detector/weights/<id>.json``); command: the command line that made the report.
    Families with fewer than 10 generated images are listed but left out of the means and
    minima, as ``run`` leaves them out of its means.
    """
    cand = run["candidates"][name]
    conds = {"harm": "harmonised", "j75": "harmonised_jpeg75", "r50": "harmonised_resize50"}
    families = {
        f: {"kind": v["kind"], "n": v["n"], **{conds[c]: v.get(c) for c in conds}}
        for f, v in sorted(cand["families"].items())
    }
    summary: dict[str, Any] = {}
    for kind in ("gan", "diffusion", "other"):
        rows = {f: v for f, v in families.items() if v["kind"] == kind and v["n"] >= 10}
        for cond in conds.values():
            vals = {f: v[cond] for f, v in rows.items() if v[cond] is not None}
            low = min(vals, key=lambda f: vals[f]) if vals else None
            summary[f"{kind}_{cond}"] = {
                "families": len(vals),
                "mean": float(np.mean(list(vals.values()))) if vals else None,
                "min": vals[low] if low else None,
                "min_family": low,
            }
    pooled = {conds[c]: cand[f"pooled_auc_{c}"] for c in conds}
    drops = {"jpeg75": cand["drop_j75"], "resize50": cand["drop_r50"]}
    gan, diff = summary["gan_harmonised"]["mean"], summary["diffusion_harmonised"]["mean"]
    return {
        "model": {
            "model_id": meta["model_id"],
            "version": meta["version"],
            "tensors_sha256": meta["tensors_sha256"],
            "recipe": meta["training"]["recipe"],
            "candidate": name,
        },
        "protocol": (
            f"Leave one generator family out of the recipe of {meta['model_id']} version "
            f"{meta['version']} (scripts/detector_candidates.py run candidate {name}): the "
            "recipe is retrained per fold without the held-out family and without every "
            "repository holding it, and scores that family's images; the test real photos "
            "(sources held out by detector.data.in_split(source, 0.3, 'det-eval'), never "
            "trained on) are scored by the recipe trained on every family. Images: mean "
            "patch logit over their harm patches (centre crop 256, JPEG q90), and the same "
            "after JPEG q75 (j75) and a 0.5x bilinear resize (r50). The shipped tensors "
            "themselves were trained on every family and are not what is scored here; "
            "their held-out per-origin rates are in eval-bands-default.json. The features "
            "are those of the caches on the machine that ran it (data: their counts; "
            "shipped_training_summary: the counts the shipped tensors were trained on; "
            "earlier_runs: this recipe's other runs). " + run["protocol"]
        ),
        "command": command,
        "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "train_seconds": cand["train_seconds"],
        "data": run["data"],
        "pooled_auc": pooled,
        "auc_drop": drops,
        "summary": summary,
        "goals": {
            **LOFO_GOALS,
            "gan_met": gan is not None and gan >= LOFO_GOALS["gan_mean_min"],
            "diffusion_met": diff is not None and diff >= LOFO_GOALS["diffusion_mean_min"],
            "jpeg75_drop_met": drops["jpeg75"] <= LOFO_GOALS["drop_max"],
            "resize50_drop_met": drops["resize50"] <= LOFO_GOALS["drop_max"],
        },
        "families": families,
    }


def environment() -> dict[str, str]:
    """The versions that decide a run's figures: Python, numpy, Pillow, torch and the
    machine's platform string, as written into the evaluation reports."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def cache_digests(folder: Path) -> dict[str, dict[str, str]]:
    """Per cache file of ``folder`` (every ``*.npz`` but the ``scores-*`` outputs), per
    array: the first 16 hex digits of the SHA-256 of its dtype, shape and bytes. Written
    into the leave-one-family-out report (``cache``) so that a rebuilt cache can be
    compared with the one that made the figures (`stage_cache_check`)."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(folder.glob("*.npz")):
        if path.name.startswith("scores-"):
            continue
        with np.load(path) as z:
            out[path.name] = {
                k: hashlib.sha256(
                    f"{z[k].dtype.str}{z[k].shape}".encode() + np.ascontiguousarray(z[k]).tobytes()
                ).hexdigest()[:16]
                for k in sorted(z.files)
            }
    return out


def cache_differences(
    recorded: dict[str, dict[str, str]], now: dict[str, dict[str, str]]
) -> list[str]:
    """What differs between two `cache_digests`, one line per file or array, for the
    arrays a report recorded (a file or array only in ``now`` is not a difference)."""
    lines = []
    for name, arrays in sorted(recorded.items()):
        if name not in now:
            lines.append(f"{name}: missing")
            continue
        lines += [
            f"{name} {k}: " + ("missing" if k not in now[name] else "differs")
            for k, d in sorted(arrays.items())
            if now[name].get(k) != d
        ]
    return lines


def stage_cache_check(args: argparse.Namespace) -> int:
    """Compare the cache with the digests a report recorded (``--report``, default the
    leave-one-family-out report): 0 when every recorded array is there unchanged, else 1
    and one line per difference."""
    report = Path(args.report or ROOT / "detector" / "weights" / "eval-lofo.json")
    recorded = json.loads(report.read_text()).get("cache")
    if not recorded:
        raise SystemExit(f"{report} records no cache digests (written before they were)")
    lines = cache_differences(recorded["arrays"], cache_digests(CACHE))
    for line in lines:
        print(line)
    total = sum(len(a) for a in recorded["arrays"].values())
    print(
        f"{total - len(lines)} of {total} arrays as recorded in {report.name} ({CACHE})",
        file=sys.stderr,
    )
    return 1 if lines else 0


def seed_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each seed's headline figures from `lofo_report` outputs (each with a ``seed``), and
    their range over the seeds (min, max) per figure: pooled AUC, GAN / diffusion / other
    family means (harmonised) and the q75 / 0.5x drops."""

    def figures(r: dict[str, Any]) -> dict[str, float]:
        s = r["summary"]
        return {
            "pooled_auc": r["pooled_auc"]["harmonised"],
            "gan_mean": s["gan_harmonised"]["mean"],
            "diffusion_mean": s["diffusion_harmonised"]["mean"],
            "other_mean": s["other_harmonised"]["mean"],
            "drop_jpeg75": r["auc_drop"]["jpeg75"],
            "drop_resize50": r["auc_drop"]["resize50"],
        }

    per = {str(r["seed"]): figures(r) for r in runs}
    keys = next(iter(per.values())).keys()
    return {
        "seeds": per,
        "range": {
            k: [min(p[k] for p in per.values()), max(p[k] for p in per.values())] for k in keys
        },
    }


def stage_lofo(args: argparse.Namespace) -> None:
    """Leave one family out of the shipped model's recipe; write eval-lofo.json.

    Reads ``detector/weights/<model-id>.json``, finds the ``run`` candidate that retrains
    its recipe (`shipped_candidate`), runs it into ``<cache>/lofo-run.json`` (not into
    eval-candidates.json) and writes `lofo_report` to ``--report`` (default
    ``detector/weights/eval-lofo.json``).
    """
    weights = ROOT / "detector" / "weights"
    meta = json.loads((weights / f"{args.model_id}.json").read_text())
    name = shipped_candidate(meta["training"]["recipe"])
    words = meta["training"]["recipe"].split()
    hidden = int(words[words.index("--hidden") + 1]) if "--hidden" in words else args.hidden
    run_path = CACHE / "lofo-run.json"
    report = args.report or str(weights / "eval-lofo.json")
    command = "python scripts/detector_candidates.py lofo" + (
        f" --model-id {args.model_id}" if args.model_id != "default" else ""
    )
    command += f" --seed {args.seed}" if args.seed else ""
    command += f" --extra-seeds {','.join(map(str, args.extra_seeds))}" if args.extra_seeds else ""

    def retrain(seed: int) -> dict[str, Any]:
        """The recipe's leave-one-family-out run with MLP seed `seed`, as `lofo_report`."""
        run_path.unlink(missing_ok=True)
        stage_run(
            argparse.Namespace(
                **{
                    **vars(args),
                    "candidates": name,
                    "ensembles": "",
                    "hidden": hidden,
                    "report": str(run_path),
                    "seed": seed,
                }
            )
        )
        return {**lofo_report(json.loads(run_path.read_text()), name, meta, command), "seed": seed}

    out = retrain(args.seed)
    out["environment"] = environment()
    # The same recipe retrained with other MLP seeds on the same caches: how far the seed
    # alone moves each figure (the headline above is seed args.seed).
    runs = [out, *(retrain(seed) for seed in args.extra_seeds)]
    out["seed_runs"] = seed_runs(runs)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]  # at the end: 1, 5, 15 min
    # what the figures were made from, to compare a rebuilt cache with (stage cache-check)
    out["cache"] = {"folder": str(CACHE), "arrays": cache_digests(CACHE)}
    # The same recipe's earlier runs (other caches, other days), for comparison.
    cands = weights / "eval-candidates.json"
    earlier = json.loads(cands.read_text())["candidates"] if cands.is_file() else {}
    out["earlier_runs"] = {
        f"eval-candidates.json {k}": {
            "gan_harmonised_mean": v["mean_auc_gan_harm"],
            "diffusion_harmonised_mean": v["mean_auc_diffusion_harm"],
            "pooled_auc_harmonised": v["pooled_auc_harm"],
            "notes": v["notes"],
        }
        for k, v in earlier.items()
        if k in (name, f"{name}_rerun")
    }
    out["shipped_training_summary"] = meta["training"]["summary"]
    Path(report).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {report}: {out['summary']['gan_harmonised']}", file=sys.stderr)


#: The still images `make demo` verifies (clients/demo.py), by what the demo expects.
DEMO_IMAGES = {
    "generated_controlnet.png": "generated",
    "chelsea.png": "real",
    "grace_hopper.jpg": "real",
    "rocket.jpg": "real",
}


def stage_demo(args: argparse.Namespace) -> None:
    """Score the demo's images as a server does, under 12 server secrets; eval-demo.json.

    Each file of `DEMO_IMAGES` is decoded as the server decodes it
    (`provenance.media.image.decode_image`) and scored by ``--model-id`` with the file's
    SHA-256 as request key (as `provenance.server.pipeline` does), once per secret
    SHA-256("prov-demo-<k>"), k = 0..11: `make demo` starts a server with a fresh database,
    hence a fresh random secret, so the band it shows is one of these draws. Written to
    ``--report`` (default ``detector/weights/eval-demo.json``) with the model's id,
    version and tensor hash.
    """
    from detector.infer import Detector
    from provenance.media.image import decode_image

    meta = json.loads((ROOT / "detector" / "weights" / f"{args.model_id}.json").read_text())
    files = {}
    for name, truth in DEMO_IMAGES.items():
        data = (DEMO_SAMPLES / name).read_bytes()
        rgb, key = decode_image(data).rgb, hashlib.sha256(data).digest()
        rows = []
        for k in range(12):
            secret = hashlib.sha256(f"prov-demo-{k}".encode()).digest()
            with Detector.load(args.model_id, device="cpu", secret=secret) as det:
                rows.append(det.score_image(rgb, key))
        bands = [r.band for r in rows]
        files[name] = {
            "truth": truth,
            "score_min": min(r.score for r in rows),
            "score_max": max(r.score for r in rows),
            "bands": {b: bands.count(b) for b in sorted(set(bands))},
        }
        print(f"demo {name}: {files[name]}", file=sys.stderr)
    out = {
        "model": {
            "model_id": meta["model_id"],
            "version": meta["version"],
            "tensors_sha256": meta["tensors_sha256"],
        },
        "thresholds": {
            "high": meta["calibration"]["threshold_high"],
            "low": meta["calibration"]["threshold_low"],
        },
        "protocol": stage_demo.__doc__,
        "command": "python scripts/detector_candidates.py demo",
        "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "files": files,
    }
    report = args.report or str(ROOT / "detector" / "weights" / "eval-demo.json")
    Path(report).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


#: Conditions whose out-of-fold image logits `stage_cv` keeps (cv-oof-<variant>.npz).
OOF_CONDS = ("harm", "j75", "r50", "low", "clean")

CV_VARIANTS: dict[str, dict[str, Any]] = {
    # name -> fold_cv_data / fit_mlp settings; "v5" is version 5's recipe.
    "v5": {},
    "v5_nolow": {"low": False},
    "v5_low2x": {"low_repeat": 2},
    "v5_wd1e-1": {"weight_decay": 1e-1},
    "v5_drop0.4": {"dropout": 0.4},
    "v5_ep5": {"epochs": 5},
    "v5_h32": {"hidden": 32},
    "v5_clean": {"clean": True},
    "v5_clean_ep5": {"clean": True, "epochs": 5},
    "v5_cleanreal": {"clean": "real"},
    "v5_cleanreal_ep5": {"clean": "real", "epochs": 5},
    "v5_clean_minmax": {"clean": True, "minmax": True},
    "v5_clean_seeds3": {"clean": True, "seeds": 3},
    "v5_clean_rsc": {"clean": True, "rsc": True},
    "v5_clean_seed1": {"clean": True, "seed_offset": 1},
    "v5_clean_seed2": {"clean": True, "seed_offset": 2},
    "v5_clean_r50x2": {"clean": True, "r50_repeat": 2},
    "v5_clean_rsc_r50x2": {"clean": True, "rsc": True, "r50_repeat": 2},
    "v5_clean_nofakes": {"clean": True, "nofakes": True},
    "v5_clean_famw": {"clean": True, "famw": True},
    "v5_clean_famw_seed1": {"clean": True, "famw": True, "seed_offset": 1},
    "v5_clean_famw_seed2": {"clean": True, "famw": True, "seed_offset": 2},
    "v5_clean_famw_rsc": {"clean": True, "famw": True, "rsc": True},
    "v5_clean_seed0": {"clean": True},
    # Image context (`context_rows`, `image_aggregate`), 3 seeds each: each patch's own
    # features beside the mean (ctxmean) or the mean and std (ctxstd) of its image's
    # patches of the same condition; an image-level head on the mean and std of an
    # image's patch features (img: MLP, 30 epochs over the far fewer rows; imglog:
    # L-BFGS logistic); the recipe's patch logits aggregated by a median, a trimmed mean
    # or the 75th percentile instead of the mean.
    **{
        f"v5_clean_{name}{f'_seed{s}' if s else ''}": {"clean": True, **extra, "seed_offset": s}
        for name, extra in (
            ("ctxmean", {"context": "mean"}),
            ("ctxstd", {"context": "meanstd"}),
            ("img", {"context": "image", "epochs": 30}),
            ("imglog", {"context": "image", "head": "logistic", "l2": 1e-2}),
            ("hidhead", {"hidhead": 1e-3}),
            ("median", {"aggregate": "median"}),
            ("trim", {"aggregate": "trim"}),
            ("q75", {"aggregate": "q75"}),
        )
        for s in range(3)
    },
    # The log noise level (detector/noise.py) as a trained input of the MLP, per patch:
    # of the crop itself ("crop"), of its image (the median over the image's patches of
    # the same condition, as served: "image"), or both.
    **{
        f"v5_clean_noise{mode}{f'_seed{s}' if s else ''}": {
            "clean": True,
            "noise": mode,
            "seed_offset": s,
        }
        for mode in ("crop", "image", "both")
        for s in range(3)
    },
    # Aligned autoencoder fakes of stage ae256 (256 px centre crops, 9 patches each)
    # instead of the ae stage's (128 px, q90 / random JPEG): without a re-encode between
    # the decoder and the patch, both classes (aeraw); at q90, both classes (ae256: the
    # crop size alone); the raw or q90 pairs beside the ae stage's (aeplus, ae256plus).
    **{
        f"v5_clean_{name}{f'_seed{s}' if s else ''}": {"clean": True, **extra, "seed_offset": s}
        for name, extra in (
            ("aeraw", {"ae_pairs": (("aer",), ("aer_real",))}),
            ("ae256", {"ae_pairs": (("ae9",), ("ae9_real",))}),
            ("aeplus", {"ae_extra": (("aer",), ("aer_real",))}),
            ("ae256plus", {"ae_extra": (("ae9",), ("ae9_real",))}),
        )
        for s in range(3)
    },
}


def cv_folds(
    all_samples: list[Sample], idx: list[int], folds: int
) -> list[tuple[set[int], set[int]]]:
    """Grouped folds over the training side: (held-out real image ids, held-out generated
    ids) per fold. Real photos by source (SHA-256 of the source, salt "det-cv", modulo
    folds); generator families dealt by size, round robin, into folds, and a fold's
    training side loses every repository that holds one of its families."""
    real = [i for i in idx if all_samples[i].label == 0]
    gen = [i for i in idx if all_samples[i].label == 1]
    size: dict[str, int] = {}
    for i in gen:
        size[all_samples[i].family] = size.get(all_samples[i].family, 0) + 1
    by_size = sorted(size, key=lambda f: (-size[f], f))
    fam_fold = {f: k % folds for k, f in enumerate(by_size)}

    def src_fold(i: int) -> int:
        digest = hashlib.sha256(b"det-cv" + source_of(all_samples[i]).encode()).digest()
        return int.from_bytes(digest[:8], "big") % folds

    return [
        (
            {i for i in real if src_fold(i) == k},
            {i for i in gen if fam_fold[all_samples[i].family] == k},
        )
        for k in range(folds)
    ]


def stage_cv(args: argparse.Namespace) -> None:
    """Grouped cross-validation of version-5-style recipes on the training sources only
    (no test source, no demo file): for each variant of ``--variants`` (`CV_VARIANTS`) and
    each of ``--folds`` folds (`cv_folds`), an MLP on spectral + co-occurrence +
    noise-normalised features is trained on the other folds (their real photos, their
    low-light captures, the generated images of the other folds' families outside the
    held-out families' repositories, the synthetic and autoencoder fakes of their real
    photos) and scores the held-out fold (mean patch logit per image): AUC harmonised,
    JPEG q75 and 0.5x; the share of the held-out real photos' low-light captures at or
    over the fold's 5% threshold of its real photos; the share of its generated images
    over it. The out-of-fold harmonised logits then choose a calibration (Platt,
    temperature, Platt with each source weighted equally) by grouped ECE: fitted on the
    other folds' logits, measured on the fold. Report: detector/weights/eval-cv.json."""
    from detector.calibrate import sigmoid, threshold_at_most
    from detector.metrics import expected_calibration_error

    all_samples = samples()
    pt = Patches()
    names = list(filter(None, args.variants.split(",")))
    minmax = any(CV_VARIANTS[n].get("minmax") for n in names)
    ft = Features(pt, True, True, minmax)
    full = ft.arrays["harm"].shape[1]
    width = base = full - (MinMaxCooccurrence().size if minmax else 0)
    demo = demo_indices(all_samples)
    idx = [i for i in pt.images() if not is_test_source(all_samples[i]) and i not in demo]
    folds = cv_folds(all_samples, idx, args.folds)
    gen_all = [i for i in idx if all_samples[i].label == 1]
    repos_of: dict[str, set[str]] = {}
    for i in gen_all:
        repos_of.setdefault(all_samples[i].family, set()).add(source_of(all_samples[i]))
    path = ROOT / "detector" / "weights" / "eval-cv.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    report["protocol"] = stage_cv.__doc__
    report["folds"] = [
        {
            "real": len(r),
            "generated": len(g),
            "families": sorted({all_samples[i].family for i in g}),
        }
        for r, g in folds
    ]
    report.setdefault("variants", {})

    noisy = [CV_VARIANTS[n]["noise"] for n in names if CV_VARIANTS[n].get("noise")]
    sigma = patch_noise(pt) if noisy else {}
    mode = ""

    ctx = ""  # image context (`context_rows`): "", "mean", "meanstd" or "image"
    agg = "mean"  # how an image's patch logits become its logit (`image_aggregate`)

    def rows(conds: tuple[str, ...], ids: list[int]) -> np.ndarray:
        if ctx:
            return context_rows(ft, conds, ids, width, ctx)[0]
        x = ft.stack(conds, ids, True)[0][:, :width]
        return np.c_[x, noise_columns(sigma, ft.where, conds, ids, mode)] if mode else x

    head: list[Callable[[np.ndarray], np.ndarray]] = []  # the image head of "hidhead"
    patch_z: dict[int, np.ndarray] = {}  # out-of-fold harm patch logits of each image

    def scores(net: SpectralLogistic, cond: str, ids: list[int]) -> np.ndarray:
        if head:
            hx, howner = hidden_stats(net, ft, (cond,), ids, width)
            return image_aggregate(head[0](hx), howner, ids)
        if ctx:
            x, owner = context_rows(ft, (cond,), ids, width, ctx)
        else:
            x, owner = ft.stack((cond,), ids, patches=True)
            x = x[:, :width]
        if mode:
            x = np.c_[x, noise_columns(sigma, ft.where, (cond,), ids, mode)]
        x = np.ascontiguousarray(x, dtype=np.float32)
        with torch.inference_mode():
            z = net.fc((torch.from_numpy(x) - net.feat_mean) / net.feat_std).squeeze(1).numpy()
        if cond == "harm":  # each image's own patch logits, for crop-level calibration
            patch_z.update({i: z[owner == i] for i in ids})
        return image_aggregate(z, owner, ids, agg)

    for name in names:
        v = {"low": True, "low_repeat": 1, "hidden": args.hidden, **CV_VARIANTS[name]}
        width = full if v.get("minmax") else base
        mode = v.get("noise", "")
        ctx, agg = v.get("context", ""), v.get("aggregate", "mean")
        ae_pairs = v.get("ae_pairs", (("ae", "ae_aug"), ("ae_real", "ae_real_aug")))
        pt.require(
            ("harm", "aug", "r50", "syn", "syn_aug", *ae_pairs[0], *ae_pairs[1])
            + ("low",) * bool(v["low"])
            + ("rsc",) * bool(v.get("rsc"))
            + ("clean",) * bool(v.get("clean"))
            + tuple(c for part in v.get("ae_extra", ()) for c in part)
        )
        t0 = time.monotonic()
        oof: dict[int, float] = {}
        oof_by: dict[str, dict[int, float]] = {c: {} for c in OOF_CONDS}
        per_fold = []
        for k, (test_real, test_gen) in enumerate(folds):
            held = {all_samples[i].family for i in test_gen}
            banned = set().union(*(repos_of[f] for f in held))
            real = sorted(i for i in idx if all_samples[i].label == 0 and i not in test_real)
            gen = sorted(
                i for i in gen_all if i not in test_gen and source_of(all_samples[i]) not in banned
            )
            # Which aligned autoencoder pairs (fakes, their untouched crops) train it.
            ae_fake, ae_real = v.get("ae_pairs", (("ae", "ae_aug"), ("ae_real", "ae_real_aug")))
            ae = [i for i in real if i in pt.where[ae_fake[0]]]
            neg = [rows(("harm", "aug", "r50"), real), rows(ae_real, ae)]
            neg += [rows(("low",), real)] * (v["low_repeat"] if v["low"] else 0)
            pos = [rows(("harm", "aug", "r50"), gen), rows(("syn", "syn_aug"), real)]
            pos += [rows(ae_fake, ae)]
            if v.get("ae_extra"):  # more aligned pairs beside those
                extra = [i for i in real if i in pt.where[v["ae_extra"][0][0]]]
                neg.append(rows(v["ae_extra"][1], extra))
                pos.append(rows(v["ae_extra"][0], extra))
            neg += [rows(("r50",), real)] * (v.get("r50_repeat", 1) - 1)
            pos += [rows(("r50",), gen)] * (v.get("r50_repeat", 1) - 1)
            if v.get("rsc"):  # other scales than 0.5x, both classes
                neg.append(rows(("rsc",), real))
                pos.append(rows(("rsc",), gen))
            if v.get("clean"):  # True: both classes; "real": real photos only
                neg.append(rows(("clean",), real))
                if v["clean"] is True:
                    pos.append(rows(("clean",), gen))
            if v.get("nofakes"):  # no synthetic-upsampler and autoencoder fakes
                neg = [rows(("harm", "aug", "r50"), real)]
                neg += [rows(("low",), real)] * (v["low_repeat"] if v["low"] else 0)
                pos = [rows(("harm", "aug", "r50"), gen)]
                if v.get("clean"):
                    neg.append(rows(("clean",), real))
                    pos.append(rows(("clean",), gen))
            n, p = np.concatenate(neg), np.concatenate(pos)
            if v.get("famw"):  # every generator family (and each kind of fake) weighs the same
                first = [
                    all_samples[int(o)].family
                    for o in ft.stack(("harm", "aug", "r50"), gen, True)[1]
                ]
                last = [all_samples[int(o)].family for o in ft.stack(("clean",), gen, True)[1]]
                tags = first + ["fake"] * (len(p) - len(first) - len(last)) + last  # pos's order
                fam, inv = np.unique(tags, return_inverse=True)
                w = 1.0 / np.bincount(inv)[inv]
                draw = np.random.default_rng([37, k, v.get("seed_offset", 0)])
                p = p[draw.choice(len(p), len(p), p=w / w.sum())]
            xy = np.concatenate([n, p]), np.r_[np.zeros(len(n)), np.ones(len(p))]
            if v.get("head") == "logistic":  # an image-level linear head (ctx "image")
                net = fit_logistic(*xy, l2=v.get("l2", 1e-3))
            else:
                net = merge_heads(
                    [
                        fit_mlp(
                            *xy,
                            hidden=v["hidden"],
                            epochs=v.get("epochs", 3),
                            weight_decay=v.get("weight_decay", 1e-2),
                            dropout=v.get("dropout", 0.2),
                            seed=seed + v.get("seed_offset", 0),
                        )
                        for seed in range(v.get("seeds", 1))
                    ]
                )
            head.clear()
            if v.get("hidhead"):  # a logistic on the mean and std of the hidden layer
                specs = [
                    (0, ("harm", "aug", "r50", "low", "clean"), real),
                    (0, ("ae_real", "ae_real_aug"), ae),
                    (1, ("harm", "aug", "r50", "clean"), gen),
                    (1, ("syn", "syn_aug"), real),
                    (1, ("ae", "ae_aug"), ae),
                ]
                parts = [(hidden_stats(net, ft, c, ids, width)[0], lab) for lab, c, ids in specs]
                hx = np.concatenate([a for a, _ in parts])
                hy = np.concatenate([np.full(len(a), lab, np.float64) for a, lab in parts])
                head.append(fit_image_head(hx, hy, v["hidhead"]))
            tr, tg = sorted(test_real), sorted(test_gen)
            for cond in OOF_CONDS:  # every condition's out-of-fold logit (NaN where none)
                oof_by[cond].update(
                    {i: float(x) for i, x in zip(tr + tg, scores(net, cond, tr + tg), strict=True)}
                )
            fold: dict[str, Any] = {}
            for cond in ("harm", "j75", "r50"):
                sr, sg = scores(net, cond, tr), scores(net, cond, tg)
                ok_r, ok_g = sr[~np.isnan(sr)], sg[~np.isnan(sg)]
                fold[f"auc_{cond}"] = roc_auc(
                    np.r_[np.zeros(len(ok_r)), np.ones(len(ok_g))], np.r_[ok_r, ok_g]
                )
                if cond == "harm":
                    oof.update({i: float(x) for i, x in zip(tr + tg, np.r_[sr, sg], strict=True)})
                    t = threshold_at_most(ok_r, 0.05)
                    for c in ("low", "clean"):  # the fold's real photos so transformed
                        sc = scores(net, c, tr)
                        fold[f"{c}_flagged"] = float(np.mean(sc[~np.isnan(sc)] >= t))
                    fold["generated_flagged"] = float(np.mean(ok_g >= t))
                    for kind in ("gan", "diffusion", "other"):
                        mine = np.array([all_samples[i].kind == kind for i in tg])
                        if mine.sum() >= 10:
                            fold[f"auc_{kind}"] = roc_auc(
                                np.r_[np.zeros(len(ok_r)), np.ones(int(mine.sum()))],
                                np.r_[ok_r, sg[mine]],
                            )
            per_fold.append(fold)
            print(f"  cv {name}: fold {k} {fold} ({time.monotonic() - t0:.0f} s)", file=sys.stderr)
        out: dict[str, Any] = {
            "settings": v,
            "seconds": round(time.monotonic() - t0, 1),
            "folds": per_fold,
            **{
                m: float(np.mean([f[m] for f in per_fold if m in f]))
                for m in sorted({m for f in per_fold for m in f})
            },
        }
        out["drop_j75"] = out["auc_harm"] - out["auc_j75"]
        out["drop_r50"] = out["auc_harm"] - out["auc_r50"]
        # Calibration, chosen on the out-of-fold logits as the band policy fits it: within
        # each fold (one model), each source's images calibrated by a fit made without
        # that source; the ECE of those predictions, averaged over the folds.
        ids = sorted(i for i in oof if not np.isnan(oof[i]))
        _savez(
            CACHE / f"cv-oof-{name}.npz",
            {
                "idx": np.array(ids),
                "logit": np.array([oof[i] for i in ids]),
                "fold": np.array(
                    [next(k for k, (r, g) in enumerate(folds) if i in r or i in g) for i in ids]
                ),
                **{f"logit_{c}": np.array([oof_by[c][i] for i in ids]) for c in OOF_CONDS},
                "patch_harm": np.concatenate([patch_z.get(i, np.zeros(0)) for i in ids]),
                "patch_owner": np.concatenate(
                    [np.full(len(patch_z.get(i, ())), i) for i in ids]
                ).astype(np.int64),
            },
        )
        z = np.array([oof[i] for i in ids])
        y = np.array([all_samples[i].label for i in ids])
        fold_of = np.array(
            [next(k for k, (r, g) in enumerate(folds) if i in r or i in g) for i in ids]
        )
        src = np.array([source_of(all_samples[i]) for i in ids])
        ece: dict[str, list[float]] = {"platt": [], "temperature": [], "platt_sources": []}
        for k in range(len(folds)):
            fz, fy, fs = z[fold_of == k], y[fold_of == k], src[fold_of == k]
            probs = {m: np.zeros(len(fz)) for m in ece}
            for one in set(fs):
                fit, test = fs != one, fs == one
                if fy[fit].min() == fy[fit].max():
                    continue
                a, b = fit_platt(fz[fit], fy[fit])
                probs["platt"][test] = sigmoid(a * fz[test] + b)
                probs["temperature"][test] = sigmoid(_fit_slope(fz[fit], fy[fit]) * fz[test])
                a, b = _fit_platt_weighted(fz[fit], fy[fit], fs[fit])
                probs["platt_sources"][test] = sigmoid(a * fz[test] + b)
            for m in ece:
                ece[m].append(expected_calibration_error(fy, probs[m]))
        out["calibration_cv_ece"] = {m: float(np.mean(e)) for m, e in ece.items()}
        report["variants"][name] = out
        print(
            f"cv {name}: AUC {out['auc_harm']:.3f} j75 {out['auc_j75']:.3f} r50 "
            f"{out['auc_r50']:.3f}; low light flagged {out['low_flagged']:.3f}, clean "
            f"{out.get('clean_flagged', float('nan')):.3f}, "
            f"generated flagged {out['generated_flagged']:.3f}; ECE "
            f"{out['calibration_cv_ece']} ({out['seconds']:.0f} s)",
            file=sys.stderr,
        )
        path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


#: Calibrations that `stage_noise` compares: how the log noise level enters.
NOISE_POLICIES = (
    "platt",
    "platt_linear",
    "platt_clean",
    "platt_clean_q25",
    "platt_clean_cv",
    "band_clean_cv",
)


def fit_noise_policy(
    policy: str,
    z: np.ndarray,
    noise: np.ndarray,
    y: np.ndarray,
    origins: list[str],
    term: tuple[float, float] | None = None,
) -> tuple[
    Callable[[np.ndarray, np.ndarray], np.ndarray],
    Callable[[np.ndarray, np.ndarray], np.ndarray],
    float,
]:
    """A calibration of image logits z (N,) with log noise levels (N,) and labels (N,):
    ``platt`` (no noise term, version 6), ``platt_linear`` (Platt with a linear term in the
    log noise, `fit_platt_noise` with one_sided=False), ``platt_clean`` and
    ``platt_clean_q25`` (the one-sided term of version 7: only images cleaner than the
    median, or the 25th percentile, of the noise levels move); ``platt_clean_cv``: the
    one-sided term's shape fixed to ``term`` (ratio, ref: fitted on other data), Platt
    fitted around it (`calibrate`'s noise_term); ``band_clean_cv``: version 6's
    calibration and threshold for the score, and the one-sided term of ``term`` only in
    the band: "likely generated" when Platt's logit + slope * ratio * min(noise - ref, 0)
    reaches the logit of threshold_high, so that only images cleaner than ref need more
    evidence and no image is flagged that version 6 would not flag. Returns
    (probabilities of (logits, noise levels), "likely generated" of the same, the noise
    coefficient)."""
    from detector.calibrate import (
        apply,
        fit_platt_noise,
        likely_generated,
        real_threshold,
        sigmoid,
    )

    if policy in ("platt", "band_clean_cv"):
        cal = calibrate(z, y, origins=origins, noise_term=term if policy != "platt" else None)
        return (
            (lambda lz, ln: apply(cal, lz)),
            (lambda lz, ln: likely_generated(cal, lz, ln)),
            cal.noise_coef,
        )
    if policy == "platt_clean_cv":
        assert term is not None
        ratio, ref = term
        a, b = fit_platt(z + ratio * np.minimum(noise - ref, 0.0), y)
        c = a * ratio
    else:
        a, b, c, ref = fit_platt_noise(
            z,
            noise,
            y,
            one_sided=policy != "platt_linear",
            ref_quantile=0.25 if policy.endswith("q25") else 0.5,
        )
    linear = policy == "platt_linear"

    def probs(lz: np.ndarray, ln: np.ndarray) -> np.ndarray:
        return sigmoid(a * lz + b + c * (ln - ref if linear else np.minimum(ln - ref, 0.0)))

    real = [o for o, v in zip(origins, y, strict=True) if v == 0]
    high = real_threshold(probs(z, noise)[y == 0], real, 0.05)

    def flag(lz: np.ndarray, ln: np.ndarray) -> np.ndarray:
        out: np.ndarray = probs(lz, ln) >= high
        return out

    return probs, flag, c


def stage_noise(args: argparse.Namespace) -> None:
    """Compare noise-level-aware calibrations (`NOISE_POLICIES`) on the out-of-fold logits
    of ``cv`` (cv-oof-<variant>.npz, training sources only), as the band policy is fitted:
    within each fold (one model), each source's images are judged by a calibration and
    thresholds fitted on the fold's other sources' images as they are (harm); the rates
    are those of that source's real photos (harm), of their clean downscaled copies and
    low-light captures, and of the generated images (and their clean copies); the ECE of
    those probabilities; AUC of the fold's calibrated logit under harm, JPEG q75 and 0.5x
    (each condition's own noise level). Means over the folds into eval-cv.json under
    ``noise_policies``."""
    from detector.calibrate import fit_platt_noise
    from detector.metrics import expected_calibration_error
    from detector.noise import log_noise

    all_samples = samples()
    pt = Patches()
    path = ROOT / "detector" / "weights" / "eval-cv.json"
    report: dict[str, Any] = json.loads(path.read_text())
    for name in filter(None, args.variants.split(",")):
        with np.load(CACHE / f"cv-oof-{name}.npz") as z:
            ids, fold_of = [int(i) for i in z["idx"]], z["fold"]
            logit = {c: z[f"logit_{c}"] for c in OOF_CONDS}
        noise = {
            c: np.array([log_noise(pt.get(c, i)) if len(pt.get(c, i)) else np.nan for i in ids])
            for c in OOF_CONDS
        }
        y = np.array([all_samples[i].label for i in ids])
        src = np.array([source_of(all_samples[i]) for i in ids])
        origin = [all_samples[i].origin for i in ids]
        kind = np.array([all_samples[i].kind for i in ids])
        out: dict[str, Any] = {
            "noise_by_class": {
                c: {
                    "real_median": float(np.nanmedian(noise[c][y == 0])),
                    "generated_median": float(np.nanmedian(noise[c][y == 1])),
                }
                for c in OOF_CONDS
            }
        }
        for policy in NOISE_POLICIES:
            folds: list[dict[str, float]] = []
            for k in sorted(set(fold_of.tolist())):
                f = fold_of == k
                fz, fn, fy, fs = logit["harm"][f], noise["harm"][f], y[f], src[f]
                fo = [o for o, m in zip(origin, f, strict=True) if m]
                # platt_clean_cv: the term's shape from the other folds' logits (pooled).
                slope, _, coef, ref = fit_platt_noise(logit["harm"][~f], noise["harm"][~f], y[~f])
                term = (coef / slope, ref)
                prob = np.full(len(fz), np.nan)
                flags: dict[str, list[bool]] = {}
                for one in sorted(set(fs.tolist())):
                    fit, test = fs != one, fs == one
                    if fy[fit].min() == fy[fit].max():
                        continue
                    probs, flag, _ = fit_noise_policy(
                        policy,
                        fz[fit],
                        fn[fit],
                        fy[fit],
                        [o for o, m in zip(fo, fit, strict=True) if m],
                        term,
                    )
                    for c in ("harm", "clean", "low"):
                        lz, ln = logit[c][f][test], noise[c][f][test]
                        ok = ~np.isnan(lz) & ~np.isnan(ln)
                        p = probs(lz[ok], ln[ok])
                        if c == "harm":
                            prob[np.flatnonzero(test)[ok]] = p
                        for cls, lab in (("real", 0), ("generated", 1)):
                            mine = fy[test][ok] == lab
                            hit = flag(lz[ok], ln[ok])[mine]
                            flags.setdefault(f"{cls}_{c}", []).extend(hit.tolist())
                ok = ~np.isnan(prob)
                row = {
                    f"{key}_flagged": float(np.mean(v)) for key, v in flags.items() if len(v) >= 10
                }
                row["ece"] = expected_calibration_error(fy[ok], prob[ok])
                whole, _, used = fit_noise_policy(policy, fz, fn, fy, fo, term)
                for c in ("harm", "j75", "r50"):
                    lz, ln = logit[c][f], noise[c][f]
                    ok = ~np.isnan(lz) & ~np.isnan(ln)
                    p = whole(lz[ok], ln[ok])
                    row[f"auc_{c}"] = roc_auc(fy[ok], p)
                    if c == "harm":
                        fk = kind[f][ok]
                        for kd in ("gan", "diffusion"):
                            sel = (fy[ok] == 0) | (fk == kd)
                            if (fk[fy[ok] == 1] == kd).sum() >= 10:
                                row[f"auc_{kd}"] = roc_auc(fy[ok][sel], p[sel])
                row["noise_coef"] = used
                folds.append(row)
            out[policy] = {
                m: float(np.mean([r[m] for r in folds if m in r]))
                for m in sorted({m for r in folds for m in r})
            }
            out[policy]["folds"] = folds
            print(f"noise {name} {policy}: {out[policy]}", file=sys.stderr)
        # The term's shape fitted on every fold's out-of-fold logits: what a shipped
        # calibration would fix (scripts/recalibrate_detector.py --noise-ratio/--noise-ref).
        slope, _, coef, ref = fit_platt_noise(logit["harm"], noise["harm"], y)
        out["pooled_term"] = {"ratio": coef / slope, "ref": ref}
        report.setdefault("noise_policies", {})[name] = out
        report["noise_protocol"] = stage_noise.__doc__
        path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


def fit_platt_unseen(
    logits: np.ndarray,
    labels: np.ndarray,
    groups: list[str],
    offset: bool = True,
    iterations: int = 100,
) -> tuple[float, float]:
    """Platt scaling corrected for sources the fit never saw: (slope, intercept) of
    p = sigmoid(slope * logit + intercept).

    Plain Platt scaling (`fit_platt`) is fitted on the very sources it calibrates; a new
    source's images are shifted against them, so its probabilities come out too sure. Here
    every image first gets a source-held-out calibrated logit z_i = a_g * logit_i + b_g
    from a Platt fit made without its group g (leave one group out); a second Platt fit of
    (z, labels) gives (k, c), and the result is k * (a * logit + b) + c with (a, b) the
    Platt fit on every image: the stacked "Platt on out-of-fold scores" of Platt (1999,
    section 2.2) with source repositories as the folds. offset=False fits k alone (c = 0).
    A group whose removal leaves one class keeps the all-image fit's logit.

    logits, labels: (N,) float and 0/1; groups: (N,) source names, at least two distinct.
    Measured by ``calib`` (not served). Raises DetectorError if a class is missing.
    """
    x = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    g = np.asarray(list(groups))
    a, b = fit_platt(x, y, iterations)
    z = a * x + b
    for one in np.unique(g):
        rest = g != one
        if y[rest].min() == y[rest].max():
            continue
        ga, gb = fit_platt(x[rest], y[rest], iterations)
        z[~rest] = ga * x[~rest] + gb
    k, c = fit_platt(z, y, iterations) if offset else (_fit_slope(z, y), 0.0)
    return k * a, k * b + c


def fit_platt_bounded(
    logits: np.ndarray, labels: np.ndarray, steps: int = 3000
) -> tuple[float, float, float, float]:
    """Platt scaling with asymptotes: (slope, intercept, floor, ceiling) of
    p = floor + (ceiling - floor) * sigmoid(slope * logit + intercept), 0 <= floor < 0.5 <
    ceiling <= 1 (the four-parameter logistic; a "robust logistic regression" in which a
    share of labels contradicts any logit, Pregibon 1982 / Copas 1988).

    Plain Platt scaling lets a high enough logit reach a probability near 1; when whole
    real sources score like generated ones (and generated families like real photos) the
    top and bottom of the scale are over-confident. The ceiling and floor cap that.
    Maximum likelihood on Platt's smoothed targets, by Adam (learning rate 0.05, `steps`
    steps) from the Platt fit and asymptotes 0.01 / 0.99; deterministic.
    logits, labels: (N,) float and 0/1. Measured by ``calib`` (not served). Raises
    DetectorError if a class is missing.
    """
    from detector.calibrate import sigmoid

    x = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(np.int64).ravel()
    a0, b0 = fit_platt(x, y)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    t = np.where(y == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    # floor = 0.5 * sigmoid(u), ceiling = 1 - 0.5 * sigmoid(v)
    w = np.array([a0, b0, np.log(0.02 / 0.98), np.log(0.02 / 0.98)])
    m, v2 = np.zeros(4), np.zeros(4)
    for k in range(1, steps + 1):
        s = sigmoid(w[0] * x + w[1])
        su, sv = sigmoid(np.array([w[2]]))[0], sigmoid(np.array([w[3]]))[0]
        lo, hi = 0.5 * su, 1.0 - 0.5 * sv
        p = np.clip(lo + (hi - lo) * s, 1e-9, 1 - 1e-9)
        d = (p - t) / (p * (1.0 - p)) / len(x)
        ds = d * (hi - lo) * s * (1.0 - s)
        grad = np.array(
            [
                ds @ x,
                ds.sum(),
                (d * (1.0 - s)).sum() * 0.5 * su * (1.0 - su),
                -(d * s).sum() * 0.5 * sv * (1.0 - sv),
            ]
        )
        m = 0.9 * m + 0.1 * grad
        v2 = 0.999 * v2 + 0.001 * grad**2
        w = w - 0.05 * (m / (1 - 0.9**k)) / (np.sqrt(v2 / (1 - 0.999**k)) + 1e-8)
    su, sv = sigmoid(w[2:])
    return float(w[0]), float(w[1]), float(0.5 * su), float(1.0 - 0.5 * sv)


#: Calibrations that `stage_calib` compares (`fit_platt_unseen`, `fit_platt_bounded`).
CALIB_POLICIES = (
    "platt",
    "platt_bounded",
    "platt_unseen",
    "platt_unseen_k",
    "temperature",
    "platt_noise2",
    "platt_noise3",
    "platt_crops",
)


def _fit_platt_banded(
    z: np.ndarray, y: np.ndarray, noise: np.ndarray, bands: int
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Platt scaling per noise band: the fit's images split at the quantiles of their log
    noise level (`image_log_noise`) into `bands` bands, one slope and offset each (the
    pooled fit where a band has under 20 images or one class); a test image takes the fit
    of the band its own level falls in. Returns probabilities of (logits, log levels)."""
    from detector.calibrate import sigmoid

    edges = np.quantile(noise, np.linspace(0, 1, bands + 1)[1:-1])
    pooled = fit_platt(z, y)
    fits = []
    for k in range(bands):
        m = np.searchsorted(edges, noise) == k
        ok = m.sum() >= 20 and 0 < y[m].sum() < m.sum()
        fits.append(fit_platt(z[m], y[m]) if ok else pooled)

    def probs(x: np.ndarray, n: np.ndarray) -> np.ndarray:
        band = np.searchsorted(edges, n)
        a = np.array([fits[b][0] for b in band])
        b = np.array([fits[b][1] for b in band])
        return np.asarray(sigmoid(a * x + b), dtype=np.float64)

    return probs


def image_log_noise(ids: list[int]) -> np.ndarray:
    """The log of each image's noise level as served (`detector/noise.py`: the median of
    its ``harm`` patches' Immerkær sigmas, floored at 0.1 grey levels), from noise.npz and
    the patch caches' counts: (len(ids),) float64; NaN where an image has no patches."""
    with np.load(CACHE / "noise.npz") as z:
        sigma = z["harm"]
    level: dict[int, float] = {}
    base = 0
    for path in sorted(CACHE.glob("patches-*.npz")):
        with np.load(path) as z:
            counts, idx = z["n_harm"], z["idx"]
        bounds = base + np.cumsum([0, *counts])
        for i, a, b in zip(idx, bounds[:-1], bounds[1:], strict=True):
            if b > a:
                level[int(i)] = float(np.log(max(float(np.median(sigma[a:b])), 0.1)))
        base = int(bounds[-1])
    return np.array([level.get(i, np.nan) for i in ids])


def _calib_fit(
    policy: str, z: np.ndarray, y: np.ndarray, src: np.ndarray, noise: np.ndarray
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The probabilities of `policy` (`CALIB_POLICIES`) fitted on logits z, labels y,
    sources src and log noise levels noise (all (N,)), as a function of (logits, log
    noise levels)."""
    from detector.calibrate import sigmoid

    if policy == "platt_bounded":
        a, b, lo, hi = fit_platt_bounded(z, y)
        return lambda x, n: lo + (hi - lo) * sigmoid(a * x + b)
    if policy.startswith("platt_noise"):
        return _fit_platt_banded(z, y, noise, int(policy[-1]))
    if policy == "platt":
        a, b = fit_platt(z, y)
    elif policy == "temperature":
        a, b = _fit_slope(z, y), 0.0
    else:
        a, b = fit_platt_unseen(z, y, list(src), offset=policy == "platt_unseen")
    return lambda x, n: sigmoid(a * x + b)


def stage_calib(args: argparse.Namespace) -> None:
    """Compare calibrations (`CALIB_POLICIES`) on the out-of-fold logits of ``cv``
    (cv-oof-<variant>.npz, training sources only), as the band policy is fitted: within
    each fold (one model), each source's images are judged by a calibration fitted on the
    fold's other sources (so ``platt_unseen`` nests a second leave-one-source-out inside
    the fit); ECE, log loss and Brier score of those probabilities, means over the folds.
    ``ece_if_calibrated``: the mean ECE of the same probabilities against labels drawn
    from them (200 draws), the floor a perfectly calibrated score would show on a fold of
    that size. ``platt_noise2`` / ``platt_noise3``: Platt per band of the image's log
    noise level (halves / thirds of the fit's images; `_fit_platt_banded`).
    ``platt_crops``: Platt fitted on the fit images' crop (patch) logits, each labelled as
    its image, applied to the mean crop logit as served (OOF files written by ``cv`` since
    session 25 only). Into eval-cv.json under ``calibration_policies``."""
    from detector.calibrate import sigmoid
    from detector.metrics import expected_calibration_error

    all_samples = samples()
    path = ROOT / "detector" / "weights" / "eval-cv.json"
    report: dict[str, Any] = json.loads(path.read_text())
    rng = np.random.default_rng(0)
    for name in filter(None, args.variants.split(",")):
        with np.load(CACHE / f"cv-oof-{name}.npz") as z:
            ids, fold_of, logit = [int(i) for i in z["idx"]], z["fold"], z["logit_harm"]
            crops = (z["patch_harm"], z["patch_owner"]) if "patch_harm" in z.files else None
        y = np.array([all_samples[i].label for i in ids])
        # crop -> its image's position in ids (platt_crops; OOF files from before have none)
        crop_of = np.searchsorted(ids, crops[1]) if crops is not None else np.zeros(0, int)
        src = np.array([source_of(all_samples[i]) for i in ids])
        noise = image_log_noise(ids)
        out: dict[str, Any] = {}
        for policy in CALIB_POLICIES:
            if policy == "platt_crops" and crops is None:
                continue
            rows = []
            for k in sorted(set(fold_of.tolist())):
                f = fold_of == k
                fz, fy, fs, fn = logit[f], y[f], src[f], noise[f]
                where = np.flatnonzero(f)
                prob = np.full(len(fz), np.nan)
                for one in sorted(set(fs.tolist())):
                    fit, test = fs != one, fs == one
                    if fy[fit].min() == fy[fit].max():
                        continue
                    if policy == "platt_crops":  # Platt on the fit images' crop logits
                        assert crops is not None
                        chosen = np.zeros(len(ids), bool)
                        chosen[where[fit]] = True
                        mine = chosen[crop_of]
                        a, b = fit_platt(crops[0][mine], y[crop_of[mine]])
                        prob[test] = sigmoid(a * fz[test] + b)
                        continue
                    fitted = _calib_fit(policy, fz[fit], fy[fit], fs[fit], fn[fit])
                    prob[test] = fitted(fz[test], fn[test])
                ok = ~np.isnan(prob)
                p, t = np.clip(prob[ok], 1e-6, 1 - 1e-6), fy[ok]
                floor = [
                    expected_calibration_error((rng.random(len(p)) < p).astype(int), p)
                    for _ in range(200)
                ]
                rows.append(
                    {
                        "ece": expected_calibration_error(t, p),
                        "log_loss": float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))),
                        "brier": float(np.mean((p - t) ** 2)),
                        "ece_if_calibrated": float(np.mean(floor)),
                        "images": int(ok.sum()),
                    }
                )
            out[policy] = {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
            out[policy]["folds"] = rows
            print(f"calib {name} {policy}: {out[policy]}", file=sys.stderr)
        report.setdefault("calibration_policies", {})[name] = out
        report["calibration_protocol"] = stage_calib.__doc__
        path.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


def _fit_slope(z: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling: the slope a of sigmoid(a * z), no intercept, minimising the
    cross-entropy (Guo et al. 2017), by `detector.calibrate.fit_logistic`."""
    from detector.calibrate import fit_logistic

    return float(fit_logistic(np.asarray(z, dtype=np.float64)[:, None], y, intercept=None)[0])


def _fit_platt_weighted(z: np.ndarray, y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """Platt scaling with every group (source) weighing the same in the cross-entropy
    (to the 0/1 labels), by `detector.calibrate.fit_logistic`."""
    from detector.calibrate import fit_logistic

    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    a, b = fit_logistic(np.stack([z, np.ones_like(z)], 1), y, 1.0 / counts[inverse])
    return float(a), float(b)


def stage_ship(args: argparse.Namespace) -> None:
    """Train the chosen model on every training-side image (the 70% of sources the
    protocol never tests on) and save it with its training-file list; the band policy is
    fitted afterwards by ``scripts/recalibrate_detector.py`` on the held-out 30%."""
    all_samples = samples()
    pt = Patches()
    pt.require(
        recipe_conditions(resized=args.resized, low=args.low, clean=args.clean, mix=args.mix)
    )
    ft = Features(pt, args.model in ("spco", "spcn"), args.model == "spcn")
    demo = demo_indices(all_samples)
    idx = [i for i in pt.images() if not is_test_source(all_samples[i]) and i not in demo]
    real = [i for i in idx if all_samples[i].label == 0]
    gen = [i for i in idx if all_samples[i].label == 1]
    ae_idx = [i for i in sorted(pt.where["ae"]) if i in set(real)]
    widths: tuple[int, ...] = args.widths
    t0 = time.monotonic()

    def data(ids: list[int], feats: bool, patches: bool = False) -> tuple[np.ndarray, np.ndarray]:
        # feats: fixed features (image means, or per patch with patches); else pixels.
        def stack(conds: tuple[str, ...], ids: list[int]) -> np.ndarray:
            rows: np.ndarray = (ft.stack(conds, ids, patches) if feats else pt.stack(conds, ids))[0]
            return rows

        keep = set(ids)
        r = [i for i in real if i in keep]
        g = [i for i in gen if i in keep]
        a = [i for i in ae_idx if i in keep]
        conds = ("harm", "aug", "r50") if args.resized else ("harm", "aug")
        neg = [stack(conds + (("low",) if args.low else ()), r)]
        neg += [stack(("ae_real", "ae_real_aug"), a)]
        pos = [stack(conds, g)]
        if args.clean:  # both classes
            neg += [stack(("clean",), r)]
            pos += [stack(("clean",), g)]
        if args.mix:
            pos += [stack(("syn", "syn_aug"), r), stack(("ae", "ae_aug"), a)]
        n, p = np.concatenate(neg), np.concatenate(pos)
        return np.concatenate([n, p]), np.r_[np.zeros(len(n)), np.ones(len(p))]

    net: torch.nn.Module
    kwargs: dict[str, Any]
    if args.model in ("spectral", "spco", "spcn"):
        kwargs = {"patch": PATCH}
        if args.head == "mlp":
            net = fit_mlp(*data(idx, True, patches=True), hidden=args.hidden)
            kwargs["hidden"] = args.hidden
        else:
            net = fit_logistic(*data(idx, True), l2=args.l2)
        if args.model in ("spco", "spcn"):
            kwargs["cooccurrence"] = True
        if args.model == "spcn":
            kwargs["normalised"] = True
        arch = "spectral_logistic"
    elif args.model == "cnn":
        net = train_cnn(*data(idx, False), args.epochs, 0, widths)
        kwargs, arch = {"residual": "npr", "widths": list(widths)}, "patch_resnet"
    else:
        # The two branches train on 80% of the training sources; the mixing weights are
        # fitted on the image logits of the other 20%.
        val = [i for i in idx if in_split(source_of(all_samples[i]), 0.2, "det-mix")]
        fit_ids = [i for i in idx if i not in set(val)]
        hybrid = HybridDetector("npr", widths, PATCH)  # type: ignore[arg-type]
        hybrid.cnn = train_cnn(*data(fit_ids, False), args.epochs, 0, widths)
        hybrid.spectral = fit_logistic(*data(fit_ids, True))
        x, owner = pt.stack(("harm",), val)
        pre = Preprocess(patch_size=PATCH)
        cols = [
            image_means(patch_logits(m, x, pre, torch.device("cpu")), owner, val)
            for m in (hybrid.cnn, hybrid.spectral)
        ]
        y = torch.tensor([all_samples[i].label for i in val], dtype=torch.float32)
        z = torch.tensor(np.stack(cols, 1), dtype=torch.float32)
        mix = torch.nn.Linear(2, 1)
        opt = torch.optim.LBFGS(mix.parameters(), max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(mix(z).squeeze(1), y)
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        opt.step(closure)  # type: ignore[no-untyped-call]
        hybrid.mix.load_state_dict(mix.state_dict())
        print(
            f"  mix weights {mix.weight.data.tolist()} bias {mix.bias.item():.3f}", file=sys.stderr
        )
        net, arch = hybrid.eval(), "hybrid"
        kwargs = {"residual": "npr", "widths": list(widths), "patch": PATCH}
    seconds = time.monotonic() - t0
    trained = sorted(recipe_key(all_samples[i]) for i in idx)
    test = [i for i in pt.images() if is_test_source(all_samples[i]) and i not in demo]
    x, owner = pt.stack(("harm",), test)
    logits = image_means(
        patch_logits(net, x, Preprocess(patch_size=PATCH), torch.device("cpu")), owner, test
    )
    labels = np.array([all_samples[i].label for i in test])
    summary = {
        "train_images": len(trained),
        "train_real": len(real),
        "train_generated": len(gen),
        "aligned_pairs": len(ae_idx),
        "train_seconds": round(seconds, 1),
        "held_out_images": len(test),
        "held_out_auc_harmonised": roc_auc(labels, logits),
    }
    meta = ModelMeta(
        model_id=args.model_id,
        version=args.version,
        arch=arch,
        arch_kwargs=kwargs,
        # Served files are re-encoded as the training images were (q90), so that a PNG
        # and a JPEG reach the features through the same encoder.
        preprocess=Preprocess(patch_size=PATCH, crops=64, jpeg_quality=args.serve_jpeg),
        calibration=calibrate(logits, labels),
        training={
            "recipe": f"scripts/detector_candidates.py ship --model {args.model}"
            + (f" --head mlp --hidden {args.hidden}" if args.head == "mlp" else f" --l2 {args.l2}")
            + (" --mix" if args.mix else "")
            + (" --resized" if args.resized else "")
            + (" --low" if args.low else "")
            + (" --clean" if args.clean else "")
            + f" --epochs {args.epochs} --widths {','.join(map(str, args.widths))}",
            "split": "sources held out: detector.data.in_split(repo or group, 0.3, 'det-eval')",
            "harmonisation": "harm: centre crop 256, JPEG q90; aug: random crop 256, "
            "p=0.15 downscale 0.5-0.9, p=0.2 blur 0.3-1.5 px, JPEG 65-100; both classes"
            + ("; r50: centre crop 256, 0.5x bilinear, JPEG q90" if args.resized else "")
            + (
                "; low (real photos only): centre 640 through "
                "detector.transforms.low_light_capture, then harm"
                if args.low
                else ""
            )
            + (
                "; clean (both classes): centre 1,024 through "
                "detector.transforms.clean_downscale, then harm"
                if args.clean
                else ""
            ),
            "summary": summary,
            "torch": torch.__version__,
        },
    )
    out = Path(args.out)
    meta = save_weights(out, net, meta)
    out.with_suffix(".json").write_text(
        json.dumps({**asdict(meta), "training": meta.training}, indent=2, sort_keys=True) + "\n"
    )
    (out.parent / f"{args.model_id}-trainfiles.json").write_text(
        json.dumps({"model": args.model_id, "trained_on": trained}, indent=0) + "\n"
    )
    print(f"wrote {out}: {summary}", file=sys.stderr)


def recipe_key(s: Sample) -> str:
    """The name of a sample in a training-file list (see scripts/recalibrate_detector.py)."""
    if s.path.is_relative_to(FIXTURES):
        return str(s.path.relative_to(FIXTURES))
    return "detector-data/" + str(s.path.relative_to(DATA[0]))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "stage",
        choices=(
            "cache",
            "ae",
            "ae256",
            "low",
            "clean",
            "scales",
            "run",
            "lofo",
            "cache-check",
            "demo",
            "cv",
            "noise",
            "calib",
            "ship",
        ),
    )
    ap.add_argument(
        "--model",
        choices=("spectral", "spco", "spcn", "cnn", "hybrid"),
        default="hybrid",
        help="ship: spectral (FFT) features, spco (+ co-occurrences), spcn (+ noise-normalised"
        " co-occurrences), a CNN or the hybrid",
    )
    ap.add_argument(
        "--low",
        action="store_true",
        help="ship: add the low-light captures of the real photos (stage low)",
    )
    ap.add_argument("--mix", action="store_true", help="ship: add the synthetic fakes")
    ap.add_argument(
        "--clean",
        action="store_true",
        help="ship: add the clean downscaled copies of both classes (stage clean)",
    )
    ap.add_argument(
        "--head",
        choices=("lr", "mlp"),
        default="lr",
        help="ship, spectral/spco: a linear head (L2 --l2) or an MLP head (--hidden units)",
    )
    ap.add_argument(
        "--resized", action="store_true", help="ship: add the 0.5x copies (r50), both classes"
    )
    ap.add_argument(
        "--serve-jpeg",
        type=int,
        default=90,
        help="ship: JPEG quality the server re-encodes each image at before cropping (0: none)",
    )
    ap.add_argument("--out", default=str(ROOT / "detector" / "weights" / "default.safetensors"))
    ap.add_argument(
        "--model-id", default="default", help="ship: the id to save; lofo, demo: the model"
    )
    ap.add_argument(
        "--report",
        help="run: the report to write or extend (default detector/weights/eval-candidates.json);"
        " lofo: the leave-one-family-out report (default detector/weights/eval-lofo.json);"
        " demo: the demo's bands (default detector/weights/eval-demo.json)",
    )
    ap.add_argument("--version", default="3")
    ap.add_argument("--max-images", type=int, default=400, help="ae: real photos to reconstruct")
    ap.add_argument("--candidates", default="spec_gen,spec_syn,spec_ae,cnn_syn,cnn_ae")
    ap.add_argument("--ensembles", default="", help="e.g. spec_gen+cnn_ae,spec_gen+spec_ae")
    ap.add_argument("--baseline", type=Path, help="old_default: the weights to compare")
    ap.add_argument("--baseline-trainfiles", type=Path, help="old_default: its training files")
    ap.add_argument("--l2", type=float, default=1e-3, help="L2 penalty of the logistic regression")
    ap.add_argument(
        "--hidden", type=int, default=64, help="hidden units of the MLP head (_mlp, --mlp)"
    )
    ap.add_argument("--folds", type=int, default=4, help="folds of cv; family groups of the CNN")
    ap.add_argument("--variants", default="v5", help="cv: comma-separated CV_VARIANTS names")
    ap.add_argument("--epochs", type=int, default=2, help="CNN epochs")
    ap.add_argument(
        "--widths", type=positive_ints, default="16,32,64,128", help="PatchResNet widths"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="run, lofo: the MLP heads' seed (initial weights, batch order); 0 is the shipped one",
    )
    ap.add_argument(
        "--extra-seeds",
        type=positive_ints,
        default=(),
        help="lofo: also retrain with these MLP seeds (e.g. 1,2) and record each seed's "
        "figures and their range (seed_runs)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.stage == "cache":
        stage_cache()
    elif args.stage == "ae256":
        stage_ae256()
    elif args.stage == "ae":
        stage_ae(args.max_images)
    elif args.stage == "low":
        stage_low()
    elif args.stage == "clean":
        stage_clean()
    elif args.stage == "run":
        if not args.report:
            args.report = str(ROOT / "detector" / "weights" / "eval-candidates.json")
        stage_run(args)
    elif args.stage == "lofo":
        stage_lofo(args)
    elif args.stage == "cache-check":
        return stage_cache_check(args)
    elif args.stage == "demo":
        stage_demo(args)
    elif args.stage == "cv":
        stage_cv(args)
    elif args.stage == "noise":
        stage_noise(args)
    elif args.stage == "scales":
        stage_scales()
    elif args.stage == "calib":
        stage_calib(args)
    else:
        stage_ship(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
