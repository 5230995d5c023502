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
   measured here on patches cut from the fixtures (features per CPU-second; fit seconds
   on as many image rows as the shipped model used), and the shipped recipe's training
   CPU time is stated from them.

Prints patches/s and the ratio of each to the bare pass.

Usage: python bench/bench_detector.py [--seconds 3] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import torch
from results import Ratio, write_results  # bench/results.py, next to this script

from detector.data import load_image
from detector.infer import Detector
from detector.model import SpectralLogistic

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def _rate(fn, seconds: float) -> float:
    """Calls fn (which returns a patch count) until `seconds` pass; patches per second."""
    fn()  # warm-up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        n += fn()
    return n / (time.perf_counter() - start)


def _cpu_rate(fn, seconds: float) -> float:
    """Like _rate, in patches per second of this process's CPU time."""
    fn()
    start, n = time.process_time(), 0
    while time.process_time() - start < seconds:
        n += fn()
    return n / (time.process_time() - start)


def _training_cost(
    net: torch.nn.Module, x: torch.Tensor, seconds: float, summary: dict[str, Any]
) -> dict[str, float] | None:
    """CPU cost of training a `SpectralLogistic` default, whose training is the features
    of every training patch, then the fit of its head (an MLP on the patches or a
    logistic regression on their image means). Measured here: the
    features, in patches per CPU-second. The fit is taken from the weights' metadata
    (``train_seconds``, wall time recorded by the ship stage). The recipe's patch count
    is estimated from its image counts: 3 rows per image (harm, aug, r50 or a fake), 9
    patches a row. None for another architecture."""
    if not isinstance(net, SpectralLogistic):
        return None

    def feats() -> int:
        with torch.inference_mode():
            net.raw_features(x)
        return len(x)

    rate = _cpu_rate(feats, seconds)
    images = int(summary.get("train_images", 0)) + int(summary.get("aligned_pairs", 0))
    patches = images * 3 * 9
    fit = float(summary.get("train_seconds", 0.0))
    return {
        "features_per_cpu_s": rate,
        "fit_s": fit,
        "recipe_patches": patches,
        "recipe_cpu_s": patches / rate + fit,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians shown")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
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

        train = _training_cost(net, x, args.seconds, det.model.meta.training.get("summary", {}))

        rates: dict[str, list[float]] = {"bare": [], "one": [], "concurrent": [], "cpu": []}
        for _ in range(args.rounds):  # alternate, so load drift hits all alike
            rates["bare"].append(_rate(bare, args.seconds))
            rates["one"].append(_rate(one_caller, args.seconds))
            rates["concurrent"].append(_rate(concurrent, args.seconds))
            rates["cpu"].append(_cpu_rate(bare, args.seconds))
    med = {k: statistics.median(v) for k, v in rates.items()}
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
    if train:
        print(
            f"  CPU training (default): features {train['features_per_cpu_s']:8.0f} patches per "
            f"CPU-s (measured); fit of the head {train['fit_s']:.1f} s (recorded at ship time); "
            f"the shipped recipe (about {train['recipe_patches']} patches) about "
            f"{train['recipe_cpu_s']:.0f} CPU-s in all"
        )
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
        ],
    )


if __name__ == "__main__":
    main()
