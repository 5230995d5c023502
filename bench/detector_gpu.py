"""GPU check of the detector: CPU-vs-GPU score agreement and patches/s by batch size.

On a CUDA machine:

1. Scores the same fixture images with the same secret on the CPU (float32) and on the
   GPU (bf16 autocast, channels-last, the batching queue) and checks that every image
   score agrees within TOLERANCE (absolute, on the calibrated probability) and that the
   bands agree except where a score lies within TOLERANCE of a threshold.
2. Prints the bare forward pass's patches/s at several batch sizes, and end-to-end
   patches/s of `Detector.score_image` with many concurrent callers (the queue batching
   across requests).

Ratios (each against a baseline measured in the same run) are printed and written to
`out/bench/detector_gpu.json`: the GPU's bare forward pass against the CPU's at the same
batch size, and `score_image`'s end-to-end rate (crop planning, harmonisation, batching
queue, calibration) against the GPU's bare forward pass at the queue's batch size.

Exits 0 when the check passes, 1 when scores disagree, and 77 (the conventional "skipped"
status) with a message when no CUDA device is present.

Usage: python bench/detector_gpu.py [--model default] [--images 64] [--seconds 3]
    [--fixtures DIR] [--device cuda] [--batches 64,256,1024,4096] [--queue-batch 1024]
--fixtures: the folder holding `detector/` (default ../shared/fixtures), e.g. a copy
carried to a GPU machine. --device cpu runs the same steps on the CPU (a dry run of the
script on a machine without CUDA: the figures then compare the CPU with itself).
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from results import Ratio, write_results  # bench/results.py, next to this script

if TYPE_CHECKING:
    import torch

# torch, and the detector modules that import it, are imported after the arguments are
# read (2-3 s): `--help` and a usage error answer at once, before it.

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
#: Largest accepted |CPU score - GPU score|: bf16 keeps 8 bits of mantissa, which moves
#: logits by up to about 1%; after the sigmoid the probability moves by less than 0.02.
TOLERANCE = 0.02
BATCH_SIZES = (64, 256, 1024, 4096)
#: The batching queue's batch size on the GPU (`Detector.load(max_batch=...)` below).
QUEUE_BATCH = 1024
#: Batch size of the CPU's bare forward pass, the GPU's first baseline.
CPU_BATCH = 256


def _sync(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_rate(
    net: torch.nn.Module, device: torch.device, patch: int, batch: int, seconds: float
) -> float:
    """Patches/s of net's forward pass on random (batch, 3, patch, patch) float32 input
    on device (channels-last, bf16 autocast on CUDA, as served), over about `seconds`
    (one pass at least)."""
    import torch

    from detector.features import autocast

    x = torch.randn(batch, 3, patch, patch, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast(device):
        for _ in range(3):
            net(x)
        _sync(device)
        start, n = time.perf_counter(), 0
        while True:  # one pass at least: a rate of nothing measured is not 0
            net(x)
            n += batch
            if time.perf_counter() - start >= seconds:
                break
        _sync(device)
    return n / (time.perf_counter() - start)


def _positive_int(text: str) -> int:
    """An option's value as an int >= 1; ValueError (argparse's usage error) otherwise."""
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _positive_ints(text: str) -> list[int]:
    """A comma-separated list of ints >= 1."""
    return [_positive_int(b) for b in text.split(",")]


def _positive_float(text: str) -> float:
    """An option's value as a finite float > 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


def _device(text: str) -> str:
    """A ``--device`` value: cpu, cuda or cuda:N; ValueError (a usage error) otherwise."""
    if re.fullmatch(r"cpu|cuda(:[0-9]+)?", text) is None:
        raise ValueError(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--images", type=_positive_int, default=64, help="fixture images compared")
    ap.add_argument(
        "--seconds", type=_positive_float, default=3.0, help="time per throughput figure"
    )
    ap.add_argument("--fixtures", type=Path, default=FIXTURES, help="folder holding detector/")
    ap.add_argument(
        "--device", type=_device, default="cuda", help="cuda (default), cuda:N, or cpu (dry run)"
    )
    ap.add_argument(
        "--batches",
        type=_positive_ints,
        default=list(BATCH_SIZES),
        help="bare forward batch sizes, comma-separated (default 64,256,1024,4096)",
    )
    ap.add_argument(
        "--queue-batch",
        type=_positive_int,
        default=QUEUE_BATCH,
        help="the batching queue's batch size",
    )
    args = ap.parse_args()  # a value out of range: exit 2, not 1 (scores disagree)
    import torch

    from detector.data import load_image
    from detector.infer import Detector

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "no CUDA device: the GPU check did not run (CPU scoring is tested by the test suite)",
            file=sys.stderr,
        )
        return 77
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        ap.error(
            f"argument --device: {args.device!r}, but this machine has"
            f" {torch.cuda.device_count()} CUDA device(s)"
        )
    files = sorted((args.fixtures / "detector").rglob("*.png"))[: args.images // 2]
    files += sorted((args.fixtures / "detector").rglob("*.jpg"))[: args.images - len(files)]
    if not files:
        print(f"no fixture images under {args.fixtures / 'detector'}", file=sys.stderr)
        return 2
    images = [load_image(p).rgb for p in files]
    keys = [p.name.encode() for p in files]
    with Detector.load(args.model, device="cpu", secret=b"gpu-check") as cpu:
        ref = cpu.score_images(images, keys)
        pre = cpu.model.meta.preprocess
        cpu_rate = bare_rate(cpu.model.net, cpu.device, pre.patch_size, CPU_BATCH, args.seconds)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    print(f"device: {name}, torch {torch.__version__}")
    print(f"  CPU bare forward, batch {CPU_BATCH:5d}: {cpu_rate:12.0f} patches/s")
    rows: list[Ratio] = []
    with Detector.load(
        args.model, device=str(device), secret=b"gpu-check", max_batch=args.queue_batch
    ) as gpu:
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
        agreement = (
            f"CPU vs {name} on {len(images)} images: max |score diff| {max(diffs):.5f}, mean "
            f"{sum(diffs) / len(diffs):.5f} (tolerance {TOLERANCE}); band mismatches away "
            f"from thresholds: {band_mismatch} -> {'PASS' if ok else 'FAIL'}"
        )
        print(agreement)

        rates = {}
        for bs in sorted({*args.batches, args.queue_batch}):
            rates[bs] = bare_rate(gpu.model.net, device, pre.patch_size, bs, args.seconds)
            print(f"  bare forward, batch {bs:5d}: {rates[bs]:12.0f} patches/s")
            rows.append(
                Ratio(
                    f"{device.type} bare forward, batch {bs}",
                    rates[bs],
                    f"CPU bare forward, batch {CPU_BATCH}",
                    cpu_rate,
                    "patches/s",
                )
            )

        for callers in (1, 16, 64):
            stop = time.perf_counter() + args.seconds
            counts = [0] * callers

            def work(i: int, stop: float = stop, counts: list[int] = counts) -> None:
                while True:  # one call at least, also from a thread started after stop
                    gpu.score_image(images[i % len(images)], keys[i % len(keys)])
                    counts[i] += pre.crops
                    if time.perf_counter() >= stop:
                        break

            threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rate = sum(counts) / (time.perf_counter() - start)
            print(f"  score_image, {callers:3d} concurrent callers: {rate:10.0f} patches/s")
            rows.append(
                Ratio(
                    f"score_image, {callers} callers",
                    rate,
                    f"{device.type} bare forward, batch {args.queue_batch}",
                    rates[args.queue_batch],
                    "patches/s",
                )
            )
    write_results("detector_gpu", rows, note=f"{name}, torch {torch.__version__}; {agreement}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
