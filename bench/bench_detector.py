"""CPU throughput of the default detector against a bare forward pass of its network.

Both measured in the same run on the same threads:

1. bare: the default network's forward pass on random (B, 3, P, P) float tensors in
   channels-last memory, no decoding, no crop planning, no queue (the ceiling).
2. end to end: `Detector.score_images` on decoded fixture images (keyed crop plans,
   crop cutting, uint8 -> normalised float, the batching queue, calibration, version
   7's noise level of the crops, reports),
   one caller with 8 images per call, then 8 concurrent callers with one image each.

3. per CPU-second: the bare pass of the default network counted in process CPU time,
   which a machine shared with other jobs disturbs less than wall time.
4. CPU training: the default model (versions 6 and 7, one network: a small MLP head on
   fixed features; version 4 was a logistic regression) trains in two steps, the features of every training patch
   and the fit of the head (AdamW for the MLP, L-BFGS for a linear head). Both are
   measured here, in this process's CPU time: the features of random patches (per
   CPU-second, against the bare pass), and a short fit of a freshly initialised copy
   of the default's head (the recipe's optimiser: AdamW, one-cycle learning rate, batch
   256, dropout 0.2 on the inputs; `--fit-rows` rows of features, one epoch) in rows per
   CPU-second, against the inference pass of the same head over the same rows. The
   shipped recipe's training CPU time is estimated from these rates and its patch
   count (from the weights' image counts) and printed beside the wall time its ship
   stage recorded.

Prints patches/s and the ratio of each to its baseline; writes out/bench/detector.json.

Usage: python bench/bench_detector.py [--seconds 3] [--rounds 3] [--threads N] [--fit-rows N]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from results import Ratio, write_results  # bench/results.py, next to this script

if TYPE_CHECKING:
    import torch

    from detector.model import SpectralLogistic

# torch, and the detector modules that import it, are imported after the arguments are
# read (2-3 s): `--help` and a usage error answer at once, before it.

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def _rate(fn: Callable[[], int], seconds: float) -> float:
    """Calls fn (which returns a patch count) until `seconds` pass; patches per second."""
    fn()  # warm-up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        n += fn()
    return n / (time.perf_counter() - start)


def _cpu_rate(fn: Callable[[], int], seconds: float) -> float:
    """Like _rate, in patches per second of this process's CPU time."""
    fn()
    start, n = time.process_time(), 0
    while time.process_time() - start < seconds:
        n += fn()
    return n / (time.process_time() - start)


def _fit_rate(net: SpectralLogistic, feats: torch.Tensor, rows: int, epochs: int = 1) -> float:
    """Rows per CPU-second of fitting a fresh copy of net's head: `rows` standardised
    feature rows (feats (B, F) repeated with small noise), random labels, AdamW with the
    recipe's one-cycle schedule (peak 2e-3, weight decay 1e-2), batch 256, dropout 0.2,
    class-weighted loss (scripts/detector_candidates.py ``fit_mlp``)."""
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    head = copy.deepcopy(net.fc)
    for m in head.modules():
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    reps = -(-rows // len(feats))
    xs = feats.float().repeat(reps, 1)[:rows]
    xs = xs + 0.01 * torch.randn_like(xs)
    y = (torch.rand(rows) < 0.5).float()
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-2)
    steps = epochs * -(-rows // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    pos_weight = (1 - y.mean()) / y.mean()
    head.train()
    start = time.process_time()
    for _ in range(epochs):
        perm = torch.randperm(rows)
        for a in range(0, rows, 256):
            b = perm[a : a + 256]
            z = head(F.dropout(xs[b], 0.2, training=True)).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(z, y[b], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
    return rows * epochs / max(time.process_time() - start, 1e-9)


def _head_rate(net: SpectralLogistic, feats: torch.Tensor, rows: int) -> float:
    """Rows per CPU-second of the head's inference pass over the same rows as `_fit_rate`
    (batches of 256, as the fit)."""
    import torch

    reps = -(-rows // len(feats))
    xs = feats.float().repeat(reps, 1)[:rows]
    start = time.process_time()
    with torch.inference_mode():
        for a in range(0, rows, 256):
            net.fc(xs[a : a + 256])
    return rows / max(time.process_time() - start, 1e-9)


def _training_cost(
    net: torch.nn.Module, x: torch.Tensor, rate: float, rows: int, summary: dict[str, Any]
) -> dict[str, float] | None:
    """CPU cost of training a `SpectralLogistic` default, whose training is the features
    of every training patch, then the fit of its head (an MLP on the patches or a
    logistic regression on their image means), both measured here: the features in
    patches per CPU-second (``rate``, measured by the caller), a one-epoch fit of the
    head on `rows` rows in rows per CPU-second (with the head's inference pass on the
    same rows as its baseline). The
    recipe's patch count is estimated from its image counts (train_real,
    train_generated and aligned_pairs of the weights' training summary) and the patches
    `scripts/detector_candidates.py` caches per image: a real photo 56 (harm 9, aug 8,
    r50 4, low 9, clean 9, and its synthetic fakes syn 9, syn_aug 8), a generated image
    30 (harm 9, aug 8, r50 4, clean 9), an aligned autoencoder pair 16 (the cache of 2
    December: 101,963 rows counted with 376 pairs, this estimate 102,914 for the same
    counts); its fit is 3 epochs over them.
    ``train_seconds`` is the wall time its ship stage recorded, quoted beside. None for
    another architecture."""
    import torch

    from detector.model import SpectralLogistic

    if not isinstance(net, SpectralLogistic):
        return None
    with torch.inference_mode():
        std = net.forward_features(x).clone()
    fit_rate = _fit_rate(net, std, rows)
    head_rate = _head_rate(net, std, rows)
    patches = (
        56 * int(summary.get("train_real", 0))
        + 30 * int(summary.get("train_generated", 0))
        + 16 * int(summary.get("aligned_pairs", 0))
    )
    return {
        "features_per_cpu_s": rate,
        "fit_rows_per_cpu_s": fit_rate,
        "head_rows_per_cpu_s": head_rate,
        "recorded_fit_s": float(summary.get("train_seconds", 0.0)),
        "recipe_patches": patches,
        "recipe_fit_cpu_s": 3 * patches / fit_rate,
        "recipe_cpu_s": patches / rate + 3 * patches / fit_rate,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians shown")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--fit-rows", type=int, default=20000, help="rows of the measured fit of the head"
    )
    args = ap.parse_args()
    import torch

    from detector.data import load_image
    from detector.infer import Detector
    from detector.model import SpectralLogistic

    if args.threads:
        torch.set_num_threads(args.threads)
    files = sorted((FIXTURES / "detector" / "real").rglob("*.jpg"))[:4]
    files += sorted((FIXTURES / "detector" / "generated").rglob("*.png"))[:4]
    images = [load_image(p).rgb for p in files]
    keys = [p.name.encode() for p in files]

    with Detector.load("default", device="cpu", secret=b"bench") as det:
        # The same network object the detector runs.
        net, pre = det.model.net, det.model.meta.preprocess
        crops = pre.crops
        batch = len(images) * crops  # the batch one score_images call makes
        # The layout the detector feeds: its NHWC uint8 crops permuted to NCHW are
        # channels-last in memory (oneDNN runs those about 25% faster than plain NCHW).
        x = torch.randn(batch, 3, pre.patch_size, pre.patch_size).contiguous(
            memory_format=torch.channels_last
        )

        def bare() -> int:
            with torch.inference_mode():
                net(x)
            return batch

        def one_caller() -> int:
            det.score_images(images, keys)
            return batch

        def concurrent() -> int:
            threads = [
                threading.Thread(target=det.score_image, args=(im, k))
                for im, k in zip(images, keys, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return batch

        def features() -> int:  # the fixed features alone: what training computes per patch
            with torch.inference_mode():
                if isinstance(net, SpectralLogistic):
                    net.raw_features(x)
            return batch

        rates: dict[str, list[float]] = {
            "bare": [],
            "one": [],
            "concurrent": [],
            "cpu": [],
            "features": [],
        }
        for _ in range(args.rounds):  # alternate, so load drift hits all alike
            rates["bare"].append(_rate(bare, args.seconds))
            rates["one"].append(_rate(one_caller, args.seconds))
            rates["concurrent"].append(_rate(concurrent, args.seconds))
            rates["cpu"].append(_cpu_rate(bare, args.seconds))
            rates["features"].append(_cpu_rate(features, args.seconds))
        med = {k: statistics.median(v) for k, v in rates.items()}
        summary = det.model.meta.training.get("summary", {})
        train = _training_cost(net, x, med["features"], args.fit_rows, summary)
    spread = max(rates["bare"]) / min(rates["bare"])
    print(
        f"detector default model, CPU, {torch.get_num_threads()} torch threads, "
        f"{pre.patch_size} px patches, {crops} crops/image, batches of {batch} patches, "
        f"median of {args.rounds} rounds"
    )
    print(
        f"  bare forward pass (random tensors): {med['bare']:8.0f} patches/s "
        f"(max/min over rounds {spread:.2f})"
    )
    print(
        f"  score_images, 1 caller x {len(images)} images: {med['one']:8.0f} patches/s "
        f"= {med['one'] / med['bare']:.2f} x bare  ({med['one'] / crops:.1f} images/s)"
    )
    print(
        f"  score_image, {len(images)} concurrent callers: {med['concurrent']:8.0f} patches/s "
        f"= {med['concurrent'] / med['bare']:.2f} x bare  ({med['concurrent'] / crops:.1f} images/s)"
    )
    print(f"  per CPU-second, bare: {med['cpu']:8.0f} patches")
    rows: list[Ratio] = []
    if train:
        print(
            f"  CPU training (default): features {train['features_per_cpu_s']:8.0f} patches per "
            f"CPU-s = {train['features_per_cpu_s'] / med['cpu']:.2f} x the bare pass; fit of the "
            f"head {train['fit_rows_per_cpu_s']:8.0f} rows per CPU-s (one epoch of "
            f"{args.fit_rows} rows, measured) = {train['fit_rows_per_cpu_s'] / train['head_rows_per_cpu_s']:.3f}"
            f" x its inference pass ({train['head_rows_per_cpu_s']:.0f} rows per CPU-s)"
        )
        print(
            f"  the shipped recipe (about {train['recipe_patches']} patches, 3 epochs): features "
            f"about {train['recipe_patches'] / train['features_per_cpu_s']:.0f} CPU-s, fit about "
            f"{train['recipe_fit_cpu_s']:.0f} CPU-s, {train['recipe_cpu_s']:.0f} CPU-s in all "
            f"(its ship stage recorded a fit of {train['recorded_fit_s']:.1f} s wall)"
        )
        rows = [
            Ratio(
                "detector features (training), per CPU-s",
                train["features_per_cpu_s"],
                "bare forward pass per CPU-s",
                med["cpu"],
                "patches/s",
            ),
            Ratio(
                "detector head fit (AdamW), per CPU-s",
                train["fit_rows_per_cpu_s"],
                "head inference per CPU-s",
                train["head_rows_per_cpu_s"],
                "rows/s",
            ),
        ]
    write_results(
        "detector",
        [
            Ratio(
                "detector score_images, 1 caller",
                med["one"],
                "bare forward pass",
                med["bare"],
                "patches/s",
            ),
            Ratio(
                "detector score_image, concurrent",
                med["concurrent"],
                "bare forward pass",
                med["bare"],
                "patches/s",
            ),
            *rows,
        ],
        note=(
            f"recipe training estimate {train['recipe_cpu_s']:.0f} CPU-s "
            f"(features {train['recipe_patches'] / train['features_per_cpu_s']:.0f}, "
            f"fit {train['recipe_fit_cpu_s']:.0f})"
            if train
            else ""
        ),
    )


if __name__ == "__main__":
    main()
