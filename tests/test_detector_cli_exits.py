"""`prov detector train` and `prov detector eval` exit as every command does (README,
"Exit codes"): 1 with one ``error: ...`` line when the work could not be done (data
without images, a training split without both classes), 2 only for a usage error found
before any work (a --data path that does not exist, an unknown --model or --families).
Before, every error of theirs exited 2 and named its exception class."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from tests.conftest import ROOT

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
REAL_IMAGE = FIXTURES / "detector" / "real" / "pypi" / "imgaug_quokka.jpg"


def _prov(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stderr (whitespace joined, as Rich wraps at 80 columns) of `prov`."""
    capsys.readouterr()
    rc = prov_main([*args, "--no-progress"])
    return rc, " ".join(capsys.readouterr().err.split())


def test_data_without_images_could_not_be_done_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "set"
    (empty / "real").mkdir(parents=True)
    for command in ("train", "eval"):
        out = tmp_path / f"{command}.out"
        rc, err = _prov(capsys, "detector", command, "--data", str(empty), "--out", str(out))
        assert rc == 1, (command, err)
        assert err.startswith("error: ") and err.count("error:") == 1, (command, err)
        assert f"{empty}: no LABELS.tsv and no images" in err, (command, err)
        assert "DetectorError" not in err and "Usage" not in err, (command, err)
        assert not out.exists()


def test_a_run_failing_midway_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Training on real images alone reads them, then finds the split lacks a class."""
    labels = tmp_path / "LABELS.tsv"
    labels.write_text(f"file\tlabel\tgenerator\tsource\n{REAL_IMAGE}\treal\t-\tq\n")
    weights = tmp_path / "w.safetensors"
    args = ("detector", "train", "--data", str(labels), "--out", str(weights), "--epochs", "1")
    rc, err = _prov(capsys, *args)
    assert rc == 1, err
    assert err.startswith("error: the training split has 0 real and 0 generated images"), err
    assert "DetectorError" not in err and not weights.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--data", "/nonexistent/set"], "/nonexistent/set"),
        (["--model", "nope"], "unknown detector model 'nope'"),
        (["--model", "npr"], "needs its published checkpoint"),
        (["--families", "nope"], "no generated images of families ['nope']"),
    ],
)
def test_usage_errors_still_exit_2(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "LABELS.tsv"
    labels.write_text(f"file\tlabel\tgenerator\tsource\n{REAL_IMAGE}\treal\t-\tq\n")
    data = [] if "--data" in args else ["--data", str(labels)]
    out = tmp_path / "report.json"
    rc, err = _prov(capsys, "detector", "eval", *data, *args, "--out", str(out))
    assert rc == 2, err
    assert says in err and "Usage:" in err and "DetectorError" not in err, err
    assert not out.exists()


def test_an_error_is_one_line_however_long(tmp_path: Path) -> None:
    """An ``error:`` line is written whole, not wrapped at Rich's 80 columns, when stderr
    is no terminal and COLUMNS is unset (a script reads it line by line). Before, a data
    folder named by a path of 120 characters gave ``error:`` alone on a line, then the
    path in two. A child process: Rich reads COLUMNS when the console is made, and the
    tests set it to 400."""
    empty = tmp_path / ("d" * 120)
    (empty / "real").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES"}}
    run = subprocess.run(
        [sys.executable, "-c", "from clients.cli import main; raise SystemExit(main())"]
        + ["detector", "eval", "--data", str(empty), "--no-progress"],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert run.returncode == 1, run.stderr
    want = f"error: {empty}: no LABELS.tsv and no images under real/ and generated/\n"
    assert run.stderr == want, run.stderr
