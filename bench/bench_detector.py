"""CPU throughput of the default detector against a bare forward pass of its network.

Both measured in the same run on the same threads:

1. bare: the default network's forward pass on random (B, 3, P, P) float tensors, no
   decoding, no crop planning, no queue (the ceiling).
2. end to end: `Detector.score_images` on decoded fixture images (keyed crop plans,
   crop cutting, uint8 -> normalised float, the batching queue, calibration, reports),
   one caller with 8 images per call, then 8 concurrent callers with one image each.

Prints patches/s and the ratio of each to the bare pass.

Usage: python bench/bench_detector.py [--seconds 5] [--threads N] [--batch 256]
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import torch

from detector.data import load_image
from detector.infer import Detector

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def _rate(fn, seconds: float) -> float:
    """Calls fn (which returns a patch count) until `seconds` pass; patches per second."""
    fn()  # warm-up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        n += fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--batch", type=int, default=256, help="patches per forward pass")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    files = sorted((FIXTURES / "detector" / "real").rglob("*.jpg"))[:4]
    files += sorted((FIXTURES / "detector" / "generated").rglob("*.png"))[:4]
    images = [load_image(p).rgb for p in files]
    keys = [p.name.encode() for p in files]

    with Detector.load("default", device="cpu", secret=b"bench", max_batch=args.batch) as det:
        member = det.members[0]  # the same network object the detector runs
        net, pre = member.net, member.meta.preprocess
        crops = pre.crops
        x = torch.randn(args.batch, 3, pre.patch_size, pre.patch_size)

        def bare() -> int:
            with torch.inference_mode():
                net(x)
            return args.batch

        def one_caller() -> int:
            det.score_images(images, keys)
            return len(images) * crops

        def concurrent() -> int:
            threads = [
                threading.Thread(target=det.score_image, args=(im, k))
                for im, k in zip(images, keys, strict=True)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return len(images) * crops

        r_bare = _rate(bare, args.seconds)
        r_one = _rate(one_caller, args.seconds)
        r_conc = _rate(concurrent, args.seconds)
        # Bare again, so drift in the machine's load shows up as a spread.
        r_bare2 = _rate(bare, args.seconds)

    print(
        f"detector default model, CPU, {torch.get_num_threads()} torch threads, "
        f"{pre.patch_size} px patches, {crops} crops/image, batch {args.batch}"
    )
    print(
        f"  bare forward pass (random tensors): {r_bare:8.0f} patches/s "
        f"(again at the end: {r_bare2:.0f})"
    )
    print(
        f"  score_images, 1 caller x {len(images)} images: {r_one:8.0f} patches/s "
        f"= {r_one / r_bare:.2f} x bare  ({r_one / crops:.1f} images/s)"
    )
    print(
        f"  score_image, {len(images)} concurrent callers: {r_conc:8.0f} patches/s "
        f"= {r_conc / r_bare:.2f} x bare  ({r_conc / crops:.1f} images/s)"
    )
    assert np.isfinite([r_bare, r_one, r_conc]).all()


if __name__ == "__main__":
    main()
