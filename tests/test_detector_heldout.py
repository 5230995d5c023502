"""The shipped default model scored on shared fixtures it never trained on.

`detector/weights/default-trainfiles.json` lists every file that trained the weights
(fixtures and recipe images, written by `scripts/detector_candidates.py ship`). The
default model's protocol holds out whole sources (`detector.data.is_held_out_source`: 30%
of repositories, or fixture groups without one); the fixture images of those sources are
scored here as served. The floors are set a little under the figures measured when the
weights shipped (docs/detector.md), so a broken or swapped model, a calibration that
flags real photos, or a split that leaks cannot pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from detector.calibrate import likely_generated
from detector.data import is_held_out_source, load_samples, source_of
from detector.metrics import roc_auc
from detector.policy import score_files
from detector.registry import load_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SETS = [FIXTURES / "detector", FIXTURES / "detector_more"]
DEMO_SAMPLES = ROOT / "clients" / "samples"

#: Floors for the held-out fixture sources, as served (files as they are, re-encoded as
#: the weights say): version 7 (version 6's network and score) measured AUC 0.841 on these
#: 237 images with this test's secret (0.843 with the band-policy secret), 3 of 116 real
#: photos and 6 of 121 generated images `likely generated` (version 6, whose band had no
#: noise term: 3 and 12; version 5: AUC 0.865, 1 and 6; version 4: 0.892, 1 and 7).
#: Version 6 ranks these fixtures worse and the recipe's held-out sources better
#: (docs/detector.md, version 6). The floors did not move for version 7.
MIN_AUC = 0.83
#: Most real held-out photos allowed at or above threshold_high.
MAX_REAL_FLAGGED = 0.05
#: Fewest generated held-out images at or above threshold_high: a model (or calibration)
#: that never says "likely generated" fails here.
MIN_GENERATED_FLAGGED = 0.02


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_shipped_model_on_held_out_fixtures() -> None:
    model = load_model("default")
    listed = json.loads((ROOT / "detector/weights/default-trainfiles.json").read_text())
    trained = set(listed["trained_on"])
    samples = load_samples(SETS)
    rel = {s.path: str(s.path.relative_to(FIXTURES)) for s in samples}
    held = [s for s in samples if is_held_out_source(s)]
    # The files `make demo` shows never train: what it shows is generalisation.
    demo = {_sha(p) for p in DEMO_SAMPLES.iterdir() if p.is_file()}
    demo_files = {rel[s.path] for s in samples if _sha(s.path) in demo}
    assert len(demo_files) == 4 and not demo_files & trained
    # The recorded fixture files are exactly those of the sources the protocol trains on
    # (less the demo's), and the whole list has the size the weights' metadata states.
    assert {r for r in trained if not r.startswith("detector-data/")} == {
        rel[s.path] for s in samples if not is_held_out_source(s)
    } - demo_files
    assert len(trained) == model.meta.training["summary"]["train_images"]
    # Held out means held out: no shared source and no identical file.
    assert not {source_of(s) for s in samples if rel[s.path] in trained} & {
        source_of(s) for s in held
    }
    train_sha = {_sha(s.path) for s in samples if rel[s.path] in trained}
    assert not train_sha & {_sha(s.path) for s in held}
    assert len(held) > 150 and {s.label for s in held} == {0, 1}

    scored, skipped = score_files(model, held, b"held-out-test", model.meta.preprocess.crops)
    assert len(skipped) <= 10, skipped
    labels = np.array([s.sample.label for s in scored])
    logits = np.array([s.logit for s in scored])
    cal = model.meta.calibration
    # "likely generated" as served: version 7's band asks clean images for more evidence.
    flagged = likely_generated(cal, logits, np.array([s.noise for s in scored]))
    auc = roc_auc(labels, logits)
    real_rate = float(flagged[labels == 0].mean())
    assert auc >= MIN_AUC, f"held-out AUC {auc:.3f} < {MIN_AUC}"
    assert real_rate <= MAX_REAL_FLAGGED, f"{real_rate:.1%} of held-out real photos flagged"
    gen_rate = float(flagged[labels == 1].mean())
    assert gen_rate >= MIN_GENERATED_FLAGGED, f"only {gen_rate:.1%} of held-out generated flagged"
