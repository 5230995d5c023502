"""GPU check of the detector: CPU-vs-GPU score agreement and patches/s by batch size.

On a CUDA machine:

1. Scores the same fixture images with the same secret on the CPU (float32) and on the
   GPU (bf16 autocast, channels-last, the batching queue) and checks that every image
   score agrees within TOLERANCE (absolute, on the calibrated probability) and that the
   bands agree except where a score lies within TOLERANCE of a threshold.
2. Prints the bare forward pass's patches/s at several batch sizes, and end-to-end
   patches/s of `Detector.score_image` with many concurrent callers (the queue batching
   across requests).

Exits 0 when the check passes, 1 when scores disagree, and 77 (the conventional "skipped"
status) with a message when no CUDA device is present.

Usage: python bench/detector_gpu.py [--model default] [--images 64] [--seconds 3]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import torch

from detector.data import load_image
from detector.infer import Detector

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
#: Largest accepted |CPU score - GPU score|: bf16 keeps 8 bits of mantissa, which moves
#: logits by up to about 1%; after the sigmoid the probability moves by less than 0.02.
TOLERANCE = 0.02
BATCH_SIZES = (64, 256, 1024, 4096)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--images", type=int, default=64, help="fixture images compared")
    ap.add_argument("--seconds", type=float, default=3.0, help="time per throughput figure")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            "no CUDA device: the GPU check did not run (CPU scoring is tested by the test suite)",
            file=sys.stderr,
        )
        return 77
    files = sorted((FIXTURES / "detector").rglob("*.png"))[: args.images // 2]
    files += sorted((FIXTURES / "detector").rglob("*.jpg"))[: args.images - len(files)]
    images = [load_image(p).rgb for p in files]
    keys = [p.name.encode() for p in files]
    with Detector.load(args.model, device="cpu", secret=b"gpu-check") as cpu:
        ref = cpu.score_images(images, keys)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    with Detector.load(args.model, device="cuda", secret=b"gpu-check", max_batch=1024) as gpu:
        got = gpu.score_images(images, keys)
        diffs = [abs(a.score - b.score) for a, b in zip(ref, got, strict=True)]
        near = [
            min(abs(a.score - gpu.threshold_low), abs(a.score - gpu.threshold_high)) < TOLERANCE
            for a in ref
        ]
        band_mismatch = sum(
            a.band != b.band and not n for a, b, n in zip(ref, got, near, strict=True)
        )
        ok = max(diffs) <= TOLERANCE and band_mismatch == 0
        print(
            f"CPU vs GPU on {len(images)} images: max |score diff| {max(diffs):.5f}, mean "
            f"{sum(diffs) / len(diffs):.5f} (tolerance {TOLERANCE}); band mismatches away "
            f"from thresholds: {band_mismatch} -> {'PASS' if ok else 'FAIL'}"
        )

        net, pre = gpu.model.net, gpu.model.meta.preprocess
        for bs in BATCH_SIZES:
            x = torch.randn(bs, 3, pre.patch_size, pre.patch_size, device="cuda").contiguous(
                memory_format=torch.channels_last
            )
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                for _ in range(3):
                    net(x)
                torch.cuda.synchronize()
                start, n = time.perf_counter(), 0
                while time.perf_counter() - start < args.seconds:
                    net(x)
                    n += bs
                torch.cuda.synchronize()
            rate = n / (time.perf_counter() - start)
            print(f"  bare forward, batch {bs:5d}: {rate:12.0f} patches/s")

        for callers in (1, 16, 64):
            stop = time.perf_counter() + args.seconds
            counts = [0] * callers

            def work(i: int, stop: float = stop, counts: list[int] = counts) -> None:
                while time.perf_counter() < stop:
                    gpu.score_image(images[i % len(images)], keys[i % len(keys)])
                    counts[i] += pre.crops

            threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            print(
                f"  score_image, {callers:3d} concurrent callers: "
                f"{sum(counts) / (time.perf_counter() - start):10.0f} patches/s"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
