"""`make bench` (bench/run_all.py) runs every bench of PLAN; a script of bench/ that is
neither there nor in its NOT_PLANNED (with the reason) is a bench nobody runs by
accident of omission: bench/bench_cited.py was in neither."""

from __future__ import annotations

import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import run_all  # noqa: E402  # bench/run_all.py, its folder put on the path above


def test_every_bench_script_is_planned_or_said_why_not() -> None:
    planned = [script for script, _, _ in run_all.PLAN]
    scripts = {path.name for path in (ROOT / "bench").glob("*.py")}
    left_out = sorted(scripts - set(planned) - set(run_all.NOT_PLANNED))
    assert not left_out, f"in neither run_all.PLAN nor run_all.NOT_PLANNED: {left_out}"
    assert sorted(set(planned) - scripts) == [], "PLAN names a script that is not in bench/"
    assert sorted(set(run_all.NOT_PLANNED) - scripts) == [], "NOT_PLANNED names no script"
    assert sorted(set(planned) & set(run_all.NOT_PLANNED)) == [], "both planned and not"
    assert len(planned) == len(set(planned)), planned
