"""Mutation testing of the trusted core with mutmut; writes docs/mutants.md.

Usage: python scripts/mutants.py [--keep] [--report-only] [--max-children N]

The modules mutated and the fast unit tests run against them are listed under
``[tool.mutmut]`` in pyproject.toml. mutmut runs in a staging copy of the project,
``build/mutants/work/``, so the working tree is never touched (``shared`` is linked inside
it: mutmut runs the tests in its ``mutants/`` folder, and they find fixtures in ../shared). Afterwards the score per module and every surviving
mutant, with its diff and the reason it is left alive (`REASONS` below), go to
docs/mutants.md and build/mutants/report.json.

Score = (killed + timed out) / mutants; a mutant no test covers counts as surviving.
Exits 1 when the score is under `TARGET`, or when a survivor has no reason written down.
--keep reuses the staging copy and mutmut's results for unchanged code; --report-only
writes the report from the last run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "mutants"
WORK = STAGE / "work"
REPORT = ROOT / "docs" / "mutants.md"
#: Lowest acceptable score over the trusted core.
TARGET = 0.90
_COPY = ("provenance", "clients", "detector", "tests", "pyproject.toml")
_KILLED = {"killed", "timeout"}

#: Why a surviving mutant is left alive, keyed by the mutated line (stripped) as
#: `mutmut show` prints it after "+". Equivalent mutants change no behaviour any input
#: can observe; the others are named for what they would take to kill.
REASONS: dict[str, str] = {
    'type_bytes = payload_type.encode("UTF-8")': "equivalent: codec names are case-insensitive",
}


def _stage(keep: bool) -> None:
    """Copy the project into the staging folder (fresh unless ``keep``)."""
    if WORK.exists() and not keep:
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in _COPY:
        src, dst = ROOT / name, WORK / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    link = WORK / "shared"  # the tests run in WORK/mutants and look for ../shared
    if not link.exists():
        link.symlink_to((ROOT.parent / "shared").resolve())


def _mutmut(*args: str, check: bool = True) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    exe = Path(sys.executable).with_name("mutmut")
    proc = subprocess.run(
        [str(exe), *args], cwd=WORK, env=env, capture_output=True, text=True, errors="replace"
    )
    if check and proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"mutmut {' '.join(args)} failed ({proc.returncode})")
    return proc.stdout


def _module(mutant: str) -> str:
    """provenance.log.merkle.x_root__mutmut_3 -> provenance/log/merkle.py"""
    head = re.split(r"\.x[_ǁ]", mutant, maxsplit=1)[0]
    return head.replace(".", "/") + ".py"


def _changed_line(diff: str) -> tuple[str, str]:
    minus = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("-") and not line.startswith("---")
    ]
    plus = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(minus), " / ".join(plus)


def report(seconds: float | None) -> int:
    """Collect mutmut's results into docs/mutants.md; return the exit status."""
    statuses: dict[str, str] = {}
    for line in _mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status.strip()
    if not statuses:
        raise SystemExit("mutmut reported no mutants: run without --report-only first")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors = []
    for name, status in sorted(statuses.items()):
        per_module[_module(name)][status] += 1
        if status not in _KILLED:
            diff = _mutmut("show", name, check=False)
            old, new = _changed_line(diff)
            survivors.append(
                {
                    "mutant": name,
                    "status": status,
                    "line": old,
                    "mutated": new,
                    "reason": REASONS.get(new, ""),
                    "diff": diff.strip(),
                }
            )
    rows = []
    total = killed = 0
    for module in config["only_mutate"]:
        c = per_module.get(module, Counter())
        n, k = sum(c.values()), sum(c[s] for s in _KILLED)
        total, killed = total + n, killed + k
        rows.append((module, n, k, n - k, k / n if n else 1.0))
    score = killed / total if total else 1.0
    unexplained = [s for s in survivors if not s["reason"]]
    doc = {
        "score": score,
        "target": TARGET,
        "mutants": total,
        "killed": killed,
        "seconds": seconds,
        "tests": config["pytest_add_cli_args_test_selection"],
        "modules": [
            dict(zip(("module", "mutants", "killed", "survived", "score"), r, strict=True))
            for r in rows
        ],
        "survivors": survivors,
    }
    (STAGE / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    REPORT.write_text(_markdown(doc))
    print(
        f"score {score:.1%} ({killed}/{total}); {len(survivors)} survivors, {len(unexplained)} without a reason"
    )
    print(f"report: {REPORT.relative_to(ROOT)}")
    return 0 if score >= TARGET and not unexplained else 1


def _markdown(doc: dict) -> str:
    lines = [
        "# Mutation testing of the trusted core",
        "",
        "Written by `make mutants` (scripts/mutants.py, mutmut"
        f" {_mutmut('--version').split()[-1]}); do not edit by hand: reasons for survivors live"
        " in `REASONS` in the script.",
        "",
        f"**Score: {doc['score']:.1%}** ({doc['killed']} of {doc['mutants']} mutants killed;"
        f" target {doc['target']:.0%}). A mutant counts as killed when a test fails or times"
        " out; one that no test runs counts as surviving."
        + (f" Run time: {doc['seconds'] / 60:.0f} min." if doc["seconds"] else ""),
        "",
        "Tests run against the mutants: " + ", ".join(f"`{t}`" for t in doc["tests"]) + ".",
        "",
        "| module | mutants | killed | survived | score |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m in doc["modules"]:
        lines.append(
            f"| `{m['module']}` | {m['mutants']} | {m['killed']} | {m['survived']} | {m['score']:.1%} |"
        )
    lines += ["", "## Surviving mutants", ""]
    if not doc["survivors"]:
        lines.append("None.")
    for s in doc["survivors"]:
        lines += [
            f"- `{s['mutant']}` ({s['status']}): `{s['line']}` → `{s['mutated']}`  ",
            f"  {s['reason'] or '**no reason written down yet**'}",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="reuse the last run's results")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    parser.add_argument("names", nargs="*", help="only these mutants (globs, with --keep)")
    args = parser.parse_args(argv)
    if args.report_only:
        return report(None)
    _stage(args.keep)
    start = time.monotonic()
    print(
        f"mutmut run in {WORK.relative_to(ROOT)} (this takes a while; see docs/mutants.md)",
        flush=True,
    )
    _mutmut("run", "--max-children", str(args.max_children), *args.names)
    return report(time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())
