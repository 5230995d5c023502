"""Run every fuzz target for a bounded time and report executions and crashes.

    python -m tests.fuzz.run [--seconds S] [--jobs J] [--workdir DIR] [NAME ...]

Builds the seed corpus (`seeds.py`) into WORKDIR/corpus/NAME (default ``.fuzz``, git
ignored; inputs the fuzzer finds interesting stay there for the next run), then runs
`harness.py` NAME for S seconds each (default: the FUZZ_SECONDS environment variable,
else 60), J targets at once (default: FUZZ_JOBS, else 1; each fuzzer is one process on
one core, so J up to the number of idle cores gives each target the same time and
executions in 1/J of the wall time). A crashing input is written to WORKDIR/crashes/NAME/ and
the log to WORKDIR/logs/NAME.log. Prints executions per target, writes them to
WORKDIR/report.json, and exits 1 if any target crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypedDict

from tests.fuzz.seeds import MAX_LEN, SEEDS, build

ROOT = Path(__file__).resolve().parents[2]
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.M)
_STAT_RUNS = re.compile(r"^stat::number_of_executed_units: (\d+)", re.M)


class TargetResult(TypedDict):
    """What `run_one` reports for one target (also a row of WORKDIR/report.json)."""

    target: str
    executions: int
    seconds: float
    corpus_files: int
    ok: bool
    returncode: int
    crashes: list[str]
    log_tail: str


def run_one(name: str, seconds: int, work: Path) -> TargetResult:
    """Fuzz one target for ``seconds``; returns its figures (and the crash file, if any)."""
    corpus, crashes, logs = work / "corpus" / name, work / "crashes" / name, work / "logs"
    crashes.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    cmd = [
        sys.executable,
        "-m",
        "tests.fuzz.harness",
        name,
        str(corpus),
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN[name]}",
        f"-artifact_prefix={crashes}/",
        "-timeout=30",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, errors="replace")
    elapsed = time.monotonic() - start
    log = proc.stdout + proc.stderr
    (logs / f"{name}.log").write_text(log)
    runs = _DONE.search(log) or _STAT_RUNS.search(log)
    new = sorted(str(p) for p in set(crashes.iterdir()) - before)
    return {
        "target": name,
        "executions": int(runs.group(1)) if runs else 0,
        "seconds": round(elapsed, 1),
        "corpus_files": len(list(corpus.iterdir())),
        "ok": proc.returncode == 0 and not new,
        "returncode": proc.returncode,
        "crashes": new,
        "log_tail": "" if proc.returncode == 0 else log[-4000:],
    }


_EPILOG = """\
examples:
  python -m tests.fuzz.run                          # every target, $FUZZ_SECONDS each (make fuzz)
  python -m tests.fuzz.run --seconds 600 sidecar    # one target for 10 minutes
  python -m tests.fuzz.run --seconds 30 --jobs 2    # two targets at once (CI, 2 cores)

A crashing input is written to WORKDIR/crashes/TARGET/ (.fuzz/crashes/TARGET/ by default) and
each target's log to WORKDIR/logs/TARGET.log; once the crash is fixed, copy its input to
tests/data/fuzz/TARGET/, where tests/test_fuzz_regressions.py replays it.
Exit 0 when no target crashed, 1 when one did, 2 on a usage error."""


def _from_env(parser: argparse.ArgumentParser, name: str, default: int) -> int:
    """The whole number in environment variable ``name``, else ``default``; a value that is
    not one is the parser's usage error (exit 2), not a traceback."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        parser.error(f"${name} must be a whole number, not {text!r}")


def main(argv: list[str] | None = None) -> int:
    # prog: as the README runs it (argparse's default is the script's file name, run.py,
    # which cannot be run from the repository root)
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz.run",
        description=__doc__.split("\n\n")[0],
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("names", nargs="*", help=f"targets (default: all of {', '.join(SEEDS)})")
    parser.add_argument(
        "--seconds",
        type=int,
        default=_from_env(parser, "FUZZ_SECONDS", 60),
        help="seconds per target (default: $FUZZ_SECONDS, else 60)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=_from_env(parser, "FUZZ_JOBS", 1),
        help="targets fuzzed at once, one core each (default: $FUZZ_JOBS, else 1)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / ".fuzz",
        help="corpus, crashes, logs and report.json (default: .fuzz in the repository root)",
    )
    args = parser.parse_args(argv)
    names = args.names or list(SEEDS)
    unknown = set(names) - set(SEEDS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; choose from {', '.join(SEEDS)}")
    if args.jobs < 1:
        parser.error(f"--jobs must be 1 or more, not {args.jobs}")
    seeds = build(args.workdir / "corpus", names)

    def fuzz(name: str) -> TargetResult:
        print(f"fuzzing {name} for {args.seconds} s ({seeds[name]} seeds)...", flush=True)
        result = run_one(name, args.seconds, args.workdir)
        status = "ok" if result["ok"] else f"CRASH {result['crashes'] or result['returncode']}"
        print(f"  {name}: {result['executions']:>10,} executions  {status}", flush=True)
        if not result["ok"]:
            print(result["log_tail"], file=sys.stderr, flush=True)
        return result

    # each target's fuzzer is a child process of its own (own corpus, crash and log
    # folders), so threads here only wait on them; results keep the targets' order
    with ThreadPoolExecutor(max_workers=min(args.jobs, len(names))) as pool:
        results = list(pool.map(fuzz, names))
    total = sum(r["executions"] for r in results)
    print(f"total: {total:,} executions, {sum(not r['ok'] for r in results)} crashed")
    report = {"seconds_per_target": args.seconds, "total_executions": total, "targets": results}
    (args.workdir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
