"""bench/detector_gpu.py, the detector's GPU check, keeps working between GPU runs.

It needs a CUDA machine to mean anything, and CI has none; its ``--device cpu`` dry run
takes every step (scoring on two devices, bare forward by batch size, concurrent callers,
the JSON of ratios) on the CPU, so a change that breaks the script fails here and not on
the next, rare GPU machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, SAMPLES

SCRIPT = ROOT / "bench" / "detector_gpu.py"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PROV_BENCH_RESULTS": str(tmp_path)}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_the_dry_run_compares_scores_and_writes_its_ratios(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        *("--device", "cpu", "--images", "4", "--seconds", "0.05"),
        *("--batches", "8,32", "--queue-batch", "16"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "band mismatches away from thresholds: 0 -> PASS" in done.stdout
    report = json.loads((tmp_path / "detector_gpu.json").read_text())
    paths = [row["path"] for row in report["rows"]]
    assert paths == [
        "cpu bare forward, batch 8",
        "cpu bare forward, batch 16",
        "cpu bare forward, batch 32",
        "score_image, 1 callers",
        "score_image, 16 callers",
        "score_image, 64 callers",
    ]
    assert all(row["value"] > 0 and row["baseline"] > 0 for row in report["rows"])
    # The callers' rates are against the queue's batch size, as asked.
    assert {row["baseline_name"] for row in report["rows"][3:]} == {"cpu bare forward, batch 16"}
    assert "PASS" in report["note"]


@pytest.mark.slow
def test_a_measure_shorter_than_one_call_still_counts_one(tmp_path: Path) -> None:
    """Every rate counts one pass at least: a caller thread that starts after its
    measure's end (under load, later than 0.05 s: the dry run above failed once with
    a rate of 0) or a measure shorter than one forward pass wrote a rate of 0."""
    done = _run(
        tmp_path,
        *("--device", "cpu", "--images", "2", "--seconds", "1e-9"),
        *("--batches", "8", "--queue-batch", "8"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads((tmp_path / "detector_gpu.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["value"] > 0 and r["baseline"] > 0 for r in rows), rows


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check runs")
def test_without_cuda_the_check_says_so_and_exits_77(tmp_path: Path) -> None:
    done = _run(tmp_path, "--images", "2")
    assert done.returncode == 77, done.stdout + done.stderr
    assert "no CUDA device" in done.stderr
    assert not (tmp_path / "detector_gpu.json").exists()


def test_a_fixture_folder_without_images_is_a_usage_error(tmp_path: Path) -> None:
    done = _run(tmp_path, "--device", "cpu", "--fixtures", str(tmp_path))
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"no fixture images under {tmp_path / 'detector'}" in done.stderr


@pytest.mark.slow
def test_the_whole_check_fails_when_no_training_run_succeeds(tmp_path: Path) -> None:
    """scripts/gpu_check.sh's dry run on a fixture folder of two images: the score check
    passes, and both training runs fail (too few images to split). Before, the script
    still exited 0 (step 1's status: a GPU check that trained nothing read as passed) and
    copied out/bench/detector_gpu.json, whichever run wrote it, into its OUT folder."""
    fixtures = tmp_path / "fixtures"
    for kind, name in (("real", "rocket.jpg"), ("generated", "chelsea.png")):
        (fixtures / "detector" / kind).mkdir(parents=True)
        (fixtures / "detector" / kind / name).write_bytes((SAMPLES / name).read_bytes())
    out = tmp_path / "out"
    done = subprocess.run(  # from another folder, FIXTURES relative to it (before: exit 2,
        # "can't open file .../bench/detector_gpu.py", as the script ran from the caller's)
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), "fixtures"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=os.environ
        | {"PY": sys.executable, "DEV": "cpu", "OUT": str(out), "EPOCHS": "1"}
        # the bench's bare passes at small batches only: at its default batches up to 4,096
        # patches this test spent 3 minutes on the CPU measuring rates nothing here checks
        | {"BENCH_ARGS": "--batches 64 --queue-batch 64 --seconds 0.2"},
        timeout=600,
    )
    said = done.stdout + done.stderr
    assert "detector_gpu: exit 0" in said, said
    assert "train (small): exit" in said, said
    assert done.returncode == 4, said
    assert "no training run succeeded" in said, said
    assert "PASS" in json.loads((out / "detector_gpu.json").read_text())["note"]


@pytest.mark.parametrize(
    "option, value",
    [
        ("--queue-batch", "0"),  # before: DetectorError traceback, exit 1 ("scores disagree")
        ("--batches", "0,8"),  # before: MKL FFT error traceback, exit 1
        ("--batches", "-4"),  # before: RuntimeError traceback, exit 1
        ("--seconds", "0"),  # before: every rate 0, exit 0
        ("--images", "0"),  # before: "no fixture images under ..."
        ("--images", "-3"),  # before: ran on some images, exit 0
        ("--device", "cuda:x"),  # before: RuntimeError traceback, exit 1
        ("--device", "meta"),  # a device torch parses but cannot score on
    ],
)
def test_options_out_of_range_are_usage_errors(tmp_path: Path, option: str, value: str) -> None:
    """Exit 1 means "scores disagree" (and scripts/gpu_check.sh passes it on): an option
    the check cannot run with is a usage error, exit 2, named, before anything is loaded."""
    done = _run(tmp_path, "--device", "cpu", option, value)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and option in done.stderr, done.stderr


@pytest.mark.parametrize("value", ["", None])
def test_an_empty_or_unset_results_variable_means_out_bench(value: str | None) -> None:
    """PROV_BENCH_RESULTS set but empty (`PROV_BENCH_RESULTS= make bench`, clearing it):
    before, Path("") put every bench's JSON in the current folder."""
    env = {k: v for k, v in os.environ.items() if k != "PROV_BENCH_RESULTS"}
    if value is not None:
        env["PROV_BENCH_RESULTS"] = value
    done = subprocess.run(
        [sys.executable, "-c", "import results; print(results.RESULTS_DIR)"],
        capture_output=True,
        text=True,
        cwd=ROOT / "bench",
        env=env,
        timeout=60,
    )
    assert done.stdout.strip() == str(ROOT / "out" / "bench"), done.stdout + done.stderr
