"""Refit a shipped detector's calibration and band thresholds on images it never trained on.

Held-out images: every image built by `scripts/build_detector_data.py` and every image
of the shared fixtures that is not listed in `detector/weights/<model>-trainfiles.json`
(the files that trained the weights, written when they were trained; their count is
checked against the weights' metadata). The band policy is fitted on the held-out recipe
images; the held-out fixture images are an independent check.

Each image is scored as the server scores it (`detector.policy.score_files`, `--crops`
keyed stratified crops); `detector.policy.fit_band_policy` fits Platt scaling and the
thresholds (at most 5% of real photos "likely generated", pooled and per origin) and
estimates the rates on unseen sources by leaving one repository out at a time. With
`--noise-cv VARIANT` the band gets version 7's noise term, its shape taken from the
cross-validation on training sources (`eval-cv.json`), never from these images; each
image's noise level is measured on the same crops (cached beside the scores). The
report goes to `detector/weights/eval-bands-<model>.json`; with `--write` the weights are
re-saved with the new calibration and crop count (the tensors are unchanged).

Usage::

    nice -n 19 python scripts/recalibrate_detector.py --model default --noise-cv v5_clean \
        --write --version 7

Exit codes: 0 done, 1 the policy could not be fitted, 2 bad arguments or missing data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from detector.calibrate import apply, likely_generated
from detector.data import Sample, is_held_out_source, load_samples
from detector.metrics import average_precision, expected_calibration_error, roc_auc
from provenance.core.errors import ProvenanceError

# torch, and the detector modules that import it, are imported after the arguments are
# read (2-3 s): `--help` and a usage error answer at once, before it.

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = (ROOT.parent / "shared" / "fixtures").resolve()
WEIGHTS = ROOT / "detector" / "weights"
SECRET = b"prov-detector-band-policy"


def sample_key(s: Sample, data: Path) -> str:
    """How a training-file list names a sample: its path relative to the shared fixtures,
    or ``detector-data/`` + its path relative to the built recipe data."""
    if s.path.is_relative_to(FIXTURES):
        return str(s.path.relative_to(FIXTURES))
    return "detector-data/" + str(s.path.relative_to(data))


def split_trained(model: str, samples: list[Sample], data: Path) -> tuple[list[Sample], set[str]]:
    """(samples the model never trained on, the training-file keys) from the list
    ``detector/weights/<model>-trainfiles.json`` written when the weights were trained."""
    listed = json.loads((WEIGHTS / f"{model}-trainfiles.json").read_text())
    trained = set(listed["trained_on"])
    return [s for s in samples if sample_key(s, data) not in trained], trained


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="registry model to recalibrate")
    ap.add_argument(
        "--data", type=Path, default=ROOT / ".cache" / "detector-data", help="built recipe data"
    )
    ap.add_argument(
        "--fixtures",
        type=Path,
        nargs="*",
        default=[FIXTURES / "detector", FIXTURES / "detector_more"],
        help="the fixture sets the model was trained on (its held-out split is used)",
    )
    ap.add_argument("--crops", type=int, default=64, help="crops per image, as served")
    ap.add_argument("--target-fpr", type=float, default=0.05)
    ap.add_argument("--min-origin-images", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument(
        "--noise-cv",
        metavar="VARIANT",
        help="give the band its noise term (version 7), the shape fitted by cross-validation "
        "on training sources: detector/weights/eval-cv.json noise_policies.VARIANT.pooled_term "
        "(scripts/detector_candidates.py noise --variants VARIANT)",
    )
    ap.add_argument("--write", action="store_true", help="re-save the weights")
    ap.add_argument(
        "--version", default=None, help="version string of the re-saved weights (default: same)"
    )
    args = ap.parse_args(argv)
    import torch

    from detector.policy import Scored, fit_band_policy, rates_by, score_files
    from detector.registry import load_model
    from detector.weights import save_weights

    torch.set_num_threads(args.threads)
    if not (args.data / "LABELS.tsv").is_file():
        print(
            f"error: {args.data}/LABELS.tsv missing; run scripts/build_detector_data.py",
            file=sys.stderr,
        )
        return 2
    noise_term = None
    if args.noise_cv:
        try:
            cv = json.loads((WEIGHTS / "eval-cv.json").read_text())
            term = cv["noise_policies"][args.noise_cv]["pooled_term"]
            noise_term = (float(term["ratio"]), float(term["ref"]))
        except (OSError, ValueError, KeyError) as e:
            print(
                f"error: no noise term for {args.noise_cv!r} in eval-cv.json ({e}); run "
                f"scripts/detector_candidates.py noise --variants {args.noise_cv}",
                file=sys.stderr,
            )
            return 2
    loaded = load_model(args.model)
    every = load_samples([args.data]) + load_samples(args.fixtures)
    held, trained = split_trained(args.model, every, args.data)
    summary = loaded.meta.training.get("summary", {})
    if summary.get("train_images") not in (None, len(trained)):
        print(
            f"error: {len(trained)} training files are listed but the weights say "
            f"{summary['train_images']}: the held-out split is unknown",
            file=sys.stderr,
        )
        return 2
    if len(every) - len(held) != len(trained):
        print(
            f"error: {len(trained)} training files are listed but {len(every) - len(held)} "
            "of them were found: the data changed, the held-out split is unknown",
            file=sys.stderr,
        )
        return 2
    recipe = [s for s in held if not s.path.is_relative_to(FIXTURES)]
    samples = held
    cache = (
        ROOT
        / ".cache"
        / "detector-scores"
        / (f"{args.model}-{loaded.meta.tensors_sha256[:12]}-{args.crops}.json")
    )
    known: dict[str, list[float]] = json.loads(cache.read_text()) if cache.is_file() else {}
    # Each file's log noise level on the same crops (it does not depend on the network).
    pre = loaded.meta.preprocess
    noise_cache = cache.with_name(f"noise-q{pre.jpeg_quality}-p{pre.patch_size}-{args.crops}.json")
    levels: dict[str, float] = json.loads(noise_cache.read_text()) if noise_cache.is_file() else {}
    todo = [s for s in samples if str(s.path) not in known or str(s.path) not in levels]
    start = time.monotonic()

    skipped: list[str] = []
    cache.parent.mkdir(parents=True, exist_ok=True)
    for i in range(0, len(todo), 100):  # the caches are saved as scoring goes
        new, skip = score_files(
            loaded,
            todo[i : i + 100],
            SECRET,
            args.crops,
            known_logits={p: np.array(v, dtype=np.float32) for p, v in known.items()},
        )
        skipped += skip
        known.update({str(sc.sample.path): sc.crop_logits.tolist() for sc in new})
        levels.update({str(sc.sample.path): sc.noise for sc in new})
        cache.write_text(json.dumps(known))
        noise_cache.write_text(json.dumps(levels))
        done = min(i + 100, len(todo))
        print(f"  scored {done}/{len(todo)} ({time.monotonic() - start:.0f} s)", file=sys.stderr)
    scored = [
        Scored(s, np.array(known[str(s.path)], dtype=np.float32), levels[str(s.path)])
        for s in samples
        if str(s.path) in known
    ]
    in_recipe = {str(s.path) for s in recipe}
    # Fixture images of held-out sources only: the demo's files (clients/samples/) are not
    # trained on either, but their fixture group is a training source.
    fixture_held = [
        s for s in scored if str(s.sample.path) not in in_recipe and is_held_out_source(s.sample)
    ]
    try:
        cal, report = fit_band_policy(
            [s for s in scored if str(s.sample.path) in in_recipe],
            args.target_fpr,
            min_origin_images=args.min_origin_images,
            noise_term=noise_term,
        )
    except ProvenanceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    # The fixtures' held-out split takes no part in the fit: an independent check.
    fy = np.array([s.sample.label for s in fixture_held])
    fl = np.array([s.logit for s in fixture_held])
    fp = apply(cal, fl)
    ff = likely_generated(cal, fl, np.array([s.noise for s in fixture_held]))
    fixture_check = {
        "images": len(fixture_held),
        "auc": roc_auc(fy, fp),
        "ap": average_precision(fy, fp),
        "ece": expected_calibration_error(fy, fp),
        "real_flagged": float(ff[fy == 0].mean()),
        "generated_flagged": float(ff[fy == 1].mean()),
        "real_by_origin": rates_by(
            [s.sample.origin for s in fixture_held if s.sample.label == 0], ff[fy == 0]
        ),
        "generated_by_family": rates_by(
            [s.sample.family for s in fixture_held if s.sample.label == 1], ff[fy == 1]
        ),
    }
    out = {
        "protocol": "band policy on images the model never trained on; leave one source "
        "repository out for the held-out rates (detector/policy.py, "
        "scripts/recalibrate_detector.py)",
        "model": args.model,
        "tensors_sha256": loaded.meta.tensors_sha256,
        "crops": args.crops,
        "secret": SECRET.decode(),
        "condition": "as served: files as they are, native resolution, keyed stratified crops",
        "recipe_images": len(recipe),
        "fixture_held_out_check": fixture_check,
        "skipped": skipped,
        "calibration": asdict(cal),
        "training_calibration": json.loads((WEIGHTS / f"{args.model}.json").read_text()).get(
            "training_calibration", asdict(loaded.meta.calibration)
        ),
        **report,
    }
    (WEIGHTS / f"eval-bands-{args.model}.json").write_text(
        json.dumps(out, indent=1, sort_keys=True) + "\n"
    )
    loso = report["leave_one_source_out"]
    print(
        f"{args.model}: {report['images']} held-out images from {report['sources']} sources, "
        f"AUC {report['auc']:.3f}; threshold_high {cal.threshold_high:.3f}, "
        f"threshold_low {cal.threshold_low:.3f}; unseen-source real flagged "
        f"{loso['real_flagged']:.3f}, generated flagged {loso['generated_flagged']:.3f}, "
        f"ECE {loso['ece']:.3f}; fixture held-out check: AUC {fixture_check['auc']:.3f}, "
        f"real flagged {fixture_check['real_flagged']:.3f}, generated flagged "
        f"{fixture_check['generated_flagged']:.3f}"
    )
    if args.write:
        meta = replace(
            loaded.meta,
            version=args.version or loaded.meta.version,
            calibration=cal,
            preprocess=replace(loaded.meta.preprocess, crops=args.crops),
            training={
                **loaded.meta.training,
                "band_policy": f"eval-bands-{args.model}.json",
                "band_noise_term": {
                    "ratio": noise_term[0] if noise_term else 0.0,
                    "ref": noise_term[1] if noise_term else 0.0,
                    "chosen_by": f"eval-cv.json noise_policies.{args.noise_cv}.pooled_term "
                    "(scripts/detector_candidates.py noise: training sources only)"
                    if noise_term
                    else "none",
                },
            },
        )
        meta = save_weights(WEIGHTS / f"{args.model}.safetensors", loaded.net, meta)
        beside = WEIGHTS / f"{args.model}.json"
        saved = json.loads(beside.read_text())
        saved["training_calibration"] = saved.get("training_calibration", saved["calibration"])
        saved["calibration"] = asdict(cal)
        saved["crops"] = args.crops
        saved["band_policy"] = f"eval-bands-{args.model}.json"
        saved["band_noise_term"] = meta.training["band_noise_term"]
        saved["tensors_sha256"] = meta.tensors_sha256
        saved["version"] = meta.version
        beside.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        print(f"wrote {WEIGHTS / (args.model + '.safetensors')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
