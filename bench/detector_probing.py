"""How much do keyed crops slow down an attacker who edits a generated image until the
detector stops calling it "likely generated"? (issue 14, item 4)

Targets: generated images of the shared fixtures' held-out split (never trained on) that
the shipped default model, as served, does not already call "no generator traces found"
(those it calls "likely generated" first, then the highest-scoring "uncertain" ones). The
attacker's goal is the next band down: out of "likely generated", or from "uncertain" to
"no generator traces found". Three attacks, each within an L-infinity budget of 4/255
around the target (pixels stay uint8):

* black-box random search, against the server as it is (crops keyed by a secret and the
  SHA-256 of each submitted PNG, so every edit moves the crops) and against fixed crops
  (the same key for every query): each query proposes, from the best image so far, one
  of: a random +-4/255 sign pattern on a random square, JPEG re-encoding (q 90/75/60),
  a 0.9x or 0.75x resize and back, or Gaussian noise (sigma 2/255), projected back into
  the budget; it keeps the proposal if the score went down. Counted: queries until the
  image leaves its starting band and until "no generator traces found";
* white-box PGD with expectation over transformation (EOT): the weights ship in the
  package, so an attacker can take gradients, averaged over random crop draws (the
  secret does not matter to an average); 10 signed-gradient steps of 1/255, then the
  result is scored as the server scores it. (Quantised histogram features, such as the
  residual co-occurrences of version 4, pass no gradient: PGD then works through the
  model's differentiable features only.)

Writes JSON (default `detector/weights/eval-probing.json`) and prints a summary. CPU only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.crops import plan_crops  # noqa: E402
from detector.data import load_image, load_samples  # noqa: E402
from detector.features import to_input  # noqa: E402
from detector.infer import (  # noqa: E402
    LIKELY_GENERATED,
    NO_TRACES,
    UNCERTAIN,
    Detector,
    DetectorReport,
)

FIXTURES = ROOT.parent / "shared" / "fixtures"
EPS = 4
#: Bands in order; an attack succeeds when the band goes down.
RANK = {NO_TRACES: 0, UNCERTAIN: 1, LIKELY_GENERATED: 2}


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _project(x: np.ndarray, x0: np.ndarray) -> np.ndarray:
    lo = np.clip(x0.astype(np.int16) - EPS, 0, 255)
    hi = np.clip(x0.astype(np.int16) + EPS, 0, 255)
    return np.clip(x.astype(np.int16), lo, hi).astype(np.uint8)


def _propose(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    kind = rng.integers(0, 4)
    if kind == 0:  # random sign square
        s = int(rng.integers(8, max(9, min(h, w) // 2)))
        y0, x0 = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        out = x.astype(np.int16)
        out[y0 : y0 + s, x0 : x0 + s] += (rng.choice([-EPS, EPS], (1, 1, 3))).astype(np.int16)
        return np.clip(out, 0, 255).astype(np.uint8)
    img = Image.fromarray(x)
    if kind == 1:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.choice([90, 75, 60])))
        return np.asarray(Image.open(buf).convert("RGB"))
    if kind == 2:
        f = float(rng.choice([0.9, 0.75]))
        small = img.resize((max(1, int(w * f)), max(1, int(h * f))), Image.Resampling.BILINEAR)
        return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR))
    noise = rng.normal(0, 2.0, x.shape)
    return np.clip(x + noise, 0, 255).astype(np.uint8)


def random_search(
    det: Detector, x0: np.ndarray, keyed: bool, queries: int, seed: int
) -> dict[str, object]:
    """Greedy random search (keeps an edit that lowers the score); returns queries to
    leave the starting band and to reach "no generator traces found" (None if never) and
    the final score. Bands are the reports' own (version 7's band also weighs the image's
    noise level, so a band is not a function of the score alone)."""

    def report(x: np.ndarray) -> DetectorReport:
        key = hashlib.sha256(_png(x)).digest() if keyed else b"fixed crops"
        return det.score_image(x, key)

    rng = np.random.default_rng(seed)
    best, best_r = x0, report(x0)
    first = best_r
    leave = reach = None
    for q in range(1, queries + 1):
        cand = _project(_propose(best, rng), x0)
        r = report(cand)
        if r.score < best_r.score:
            best, best_r = cand, r
        # Out of "likely generated", or out of "uncertain" (= into "no generator traces").
        if leave is None and RANK[best_r.band] < RANK[first.band]:
            leave = q
        if reach is None and best_r.band == NO_TRACES:
            reach = q
            break
    # What the server (keyed crops) says of the final image.
    served = det.score_image(best, hashlib.sha256(_png(best)).digest())
    return {
        "start_band": first.band,
        "start": first.score,
        "final": best_r.score,
        "served_final": served.score,
        "served_final_band": served.band,
        "queries_to_leave_band": leave,
        "queries_to_no_traces": reach,
    }


def eot_pgd(det: Detector, x0: np.ndarray, steps: int, draws: int, seed: int) -> DetectorReport:
    """White-box PGD with EOT over random stratified crop draws; returns the server's
    report on the result."""
    net, pre = det.model.net, det.model.meta.preprocess
    for prm in net.parameters():
        prm.requires_grad_(False)
    h, w = x0.shape[:2]
    base = torch.from_numpy(x0.astype(np.float32))
    delta = torch.zeros_like(base, requires_grad=True)
    for step in range(steps):
        plan = plan_crops(os.urandom(16) + bytes([seed, step]), b"eot", w, h, pre.patch_size, draws)
        x = (base + delta).clamp(0, 255)
        crops = torch.stack([x[c.y : c.y + c.size, c.x : c.x + c.size] for c in plan])
        logit = net(to_input(crops, pre)).mean()  # to_input: values in [0, 255]
        logit.backward()
        grad = delta.grad
        if grad is None:  # backward() fills it: delta requires grad and feeds the logit
            raise RuntimeError("no gradient reached the perturbation")
        with torch.no_grad():
            delta -= grad.sign()  # 1/255 per step
            delta.clamp_(-EPS, EPS)
        delta.grad = None
    adv = (base + delta.detach()).round().clamp(0, 255).numpy().astype(np.uint8)
    adv = _project(adv, x0)
    return det.score_image(adv, hashlib.sha256(_png(adv)).digest())


def _band_kept(band: str, row: dict[str, Any]) -> bool:
    """Whether band is still the target's starting band (or above it)."""
    return RANK[band] >= RANK[row["keyed"]["start_band"]]


def summarise(
    results: list[dict[str, Any]], thr: dict[str, float], queries: int, seconds: float
) -> dict[str, Any]:
    """The summary of the attacks on the targets in results (rows as main writes them)."""

    def rate(kind: str, key: str) -> float:
        """Share of targets for which the attack reached key (a query count, not None)."""
        return float(np.mean([r[kind][key] is not None for r in results])) if results else 0.0

    def median_q(kind: str, key: str) -> float | None:
        qs = [r[kind][key] for r in results if r[kind][key] is not None]
        return float(np.median(qs)) if qs else None

    return {
        "targets": len(results),
        "queries": queries,
        "linf": f"{EPS}/255",
        "thresholds": thr,
        "start_bands": {
            b: sum(r["keyed"]["start_band"] == b for r in results)
            for b in ("likely generated", "uncertain")
        },
        "keyed_leave_band": rate("keyed", "queries_to_leave_band"),
        "keyed_median_queries": median_q("keyed", "queries_to_leave_band"),
        "fixed_leave_band": rate("fixed", "queries_to_leave_band"),
        "fixed_median_queries": median_q("fixed", "queries_to_leave_band"),
        "keyed_no_traces": rate("keyed", "queries_to_no_traces"),
        "fixed_no_traces": rate("fixed", "queries_to_no_traces"),
        "fixed_final_served_same_band": float(
            np.mean([_band_kept(r["fixed"]["served_final_band"], r) for r in results])
        )
        if results
        else 0.0,
        "eot_pgd_leave_band": float(
            np.mean([not _band_kept(r["eot_pgd_served_band"], r) for r in results])
        )
        if results
        else 0.0,
        "eot_pgd_no_traces": float(
            np.mean([r["eot_pgd_served_band"] == NO_TRACES for r in results])
        )
        if results
        else 0.0,
        "seconds": round(seconds, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=8, help="targets")
    ap.add_argument("--queries", type=int, default=60, help="black-box queries per image")
    ap.add_argument("--max-side", type=int, default=320, help="centre crop of each target")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "detector" / "weights" / "eval-probing.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    trained = set(
        json.loads((ROOT / "detector/weights/default-trainfiles.json").read_text())["trained_on"]
    )
    samples = load_samples([FIXTURES / "detector", FIXTURES / "detector_more"])
    held = [s for s in samples if s.label == 1 and str(s.path.relative_to(FIXTURES)) not in trained]
    start = time.monotonic()
    results = []
    with Detector.load("default", device="cpu", secret=b"probing-bench") as det:
        scored = []
        for s in held:
            rgb = load_image(s.path).rgb
            h, w = rgb.shape[:2]
            m = args.max_side
            y0, x0 = max(0, (h - m) // 2), max(0, (w - m) // 2)
            rgb = np.ascontiguousarray(rgb[y0 : y0 + m, x0 : x0 + m])
            if min(rgb.shape[:2]) < 64:
                continue
            r = det.score_image(rgb, hashlib.sha256(_png(rgb)).digest())
            if r.band != NO_TRACES:
                scored.append((RANK[r.band], r.score, s, rgb))
        scored.sort(key=lambda t: (-t[0], -t[1]))
        targets = [(s, rgb) for _, _, s, rgb in scored[: args.images]]
        for i, (s, rgb) in enumerate(targets):
            row: dict[str, Any] = {"file": str(s.path.relative_to(FIXTURES)), "family": s.family}
            row["keyed"] = random_search(det, rgb, True, args.queries, i)
            row["fixed"] = random_search(det, rgb, False, args.queries, i)
            adv = eot_pgd(det, rgb, 10, 64, i)
            row["eot_pgd_served"], row["eot_pgd_served_band"] = adv.score, adv.band
            results.append(row)
            print(json.dumps(row), flush=True)
            thr = {"high": det.threshold_high, "low": det.threshold_low}
            done = summarise(results, thr, args.queries, time.monotonic() - start)
            args.out.write_text(json.dumps({"summary": done, "images": results}, indent=1) + "\n")
        thr = {"high": det.threshold_high, "low": det.threshold_low}

    summary = summarise(results, thr, args.queries, time.monotonic() - start)
    args.out.write_text(json.dumps({"summary": summary, "images": results}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
