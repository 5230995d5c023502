"""The bench and script command lines read numbers in ASCII digits only: a list such as
``--sizes`` or ``--widths`` of other scripts' digits is a usage error (exit 2, naming the
option), not a traceback or a misread number; a cache file named with them is not one."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.core.argtypes import positive_int, positive_ints
from tests.conftest import ROOT

#: `int` refuses "²" (a ValueError traceback before), reads "٥٠٠" as 500 and "１２" as 12,
#: and takes " 1", "1_0"; none is a list of whole numbers from 1 in digits 0-9.
ODD = ("²", "٥٠٠", "１２", "500,٥", " 1", "1_0", "1,,2", "", "0", "-1", "+1", "9" * 5000)


def test_positive_ints_takes_ascii_digits_only() -> None:
    assert positive_ints("500,1000,16") == (500, 1000, 16)
    assert positive_ints("7") == (7,)
    for text in ODD:
        with pytest.raises(argparse.ArgumentTypeError, match="digits 0-9"):
            positive_ints(text)
    assert positive_int("1100") == 1100
    for text in (*ODD, "3,4"):
        with pytest.raises(argparse.ArgumentTypeError, match="digits 0-9"):
            positive_int(text)


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("bench/bench_burst.py", ["--sizes"]),
        ("scripts/detector_candidates.py", ["cv", "--widths"]),
    ],
)
def test_a_list_of_other_scripts_digits_is_a_usage_error(script: str, args: list[str]) -> None:
    for text in ("²", "٥٠٠"):  # before: a ValueError traceback; 500 read and run
        run = subprocess.run(
            [sys.executable, script, *args, text],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert run.returncode == 2, run.stderr
        assert args[-1] in run.stderr and "digits 0-9" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr, run.stderr


def test_a_cache_file_named_with_other_scripts_digits_is_not_a_cached_log() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from biglog import RECIPE, cached_schema

    assert cached_schema(f"log-1000-s12-r{RECIPE}.db", 1000) == 12
    for name in (f"log-1000-s٣-r{RECIPE}.db", f"log-1000-s１２-r{RECIPE}.db"):
        assert cached_schema(name, 1000) is None  # before: schema 3, schema 12
    assert cached_schema(f"log-100-s12-r{RECIPE}.db", 1000) is None


@pytest.mark.parametrize(
    "script",
    ["bench/detector_gpu.py", "bench/bench_detector.py", "scripts/recalibrate_detector.py"],
)
def test_help_and_usage_errors_answer_before_torch_is_imported(script: str) -> None:
    """The detector scripts read their arguments before importing torch (2-3 s): before,
    `--help` and a misspelt option waited for it. ``-X importtime`` lists each module
    imported, on stderr."""
    for args, rc in ((["--help"], 0), (["--no-such-option"], 2)):
        run = subprocess.run(
            [sys.executable, "-X", "importtime", script, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        assert run.returncode == rc, run.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines()}
        assert "torch" not in imported, (args, script)


def _command_line_scripts() -> list[str]:
    """Every file of bench/ and scripts/ that runs as a program (has a ``__main__`` block)."""
    return sorted(
        str(p.relative_to(ROOT))
        for folder in ("bench", "scripts")
        for p in (ROOT / folder).glob("*.py")
        if 'if __name__ == "__main__":' in p.read_text()
    )


@pytest.mark.parametrize("script", _command_line_scripts())
def test_help_teaches_and_runs_nothing(script: str, tmp_path: Path) -> None:
    """``--help`` prints a usage and exits 0, runs nothing and writes nothing. Before,
    five benches ran whole (9-62 s) when asked for help, bench_video_budget.py and
    gen_proto.py wrote into a folder named ``--help``, and web_screenshot.py and
    bench_tiff_ifds.py ended in a traceback."""
    run = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PROV_BENCH_RESULTS": str(tmp_path / "r")},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage:"), run.stdout[:300]
    assert "Traceback" not in run.stderr, run.stderr
    assert list(tmp_path.iterdir()) == [], "--help wrote files"
