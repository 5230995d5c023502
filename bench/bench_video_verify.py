"""VerifyFile of a video through a real `prov serve` with the detector: wall time and the
server's CPU seconds per call, for the code of one or two checkouts, alternated.

Issue 15: a verify that asks for the detector decoded the video once for its soft
bindings and once more for the detector's frames; the unsigned video of a server that
holds video claims is decoded again by the dense pass that looks for trimmed clips. This
bench verifies three cases against a fresh server on the code of each checkout given
(``--code``, default this one; ``--old`` adds another, e.g. /work/main, run alternately
round by round in the same window):

- signed: the signed sample clip (SIGNED_ORIGINAL) with the detector;
- unsigned: a real 720p clip nobody signed (UNSIGNED: 1 Hz, dense pass) with the detector
  (``--unsigned`` names another, e.g. a longer one);
- unsigned, no detector: the same clip without it (the control: no change expected).

Server CPU is the server process and its descendants (the pre-started decoder process
and its reaped decoding children, the C2PA readers), user + system, over each case's
calls. The detector runs on the CPU (``--detector-device cpu``), as on a machine without
a GPU. With ``--old``, also writes old/new rate ratios (bench/results.py).

Usage: python bench/bench_video_verify.py [--old /work/main] [--rounds 3] [--calls 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from prov_server import prov_command, start, stopping  # bench/prov_server.py, next to this script
from results import Ratio, write_results  # bench/results.py, next to this script

from clients.api import ProvenanceClient
from clients.cli import main as prov

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "clients" / "samples" / "fabric_pattern.mp4"
UNSIGNED = ROOT.parent / "shared" / "fixtures" / "phash" / "video" / "doorknob-hd-no-bar.mp4"
ADMIN = "bench-admin-token-0123456789"
#: (case name, which file, detector asked)
CASES = (
    ("signed+detect", "signed", True),
    ("unsigned+detect", "unsigned", True),
    ("unsigned, no detect", "unsigned", False),
)


@dataclass(frozen=True)
class Sample:
    """Per-call medians of one case on one code checkout in one round (seconds)."""

    wall_s: float
    server_cpu_s: float


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its live descendants, with the
    reaped children of each descendant (not of the root: those would be counted twice
    once a descendant exits, and none exits during a measured call)."""
    root = psutil.Process(pid)
    t = root.cpu_times()
    total = t.user + t.system
    for child in root.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += c.user + c.system + c.children_user + c.children_system
    return float(total)


def start_server(code: Path, work: Path) -> tuple[subprocess.Popen[str], str]:
    """``prov serve`` on the code of checkout ``code``, with the detector on the CPU."""
    command = prov_command("serve", "--db", str(work / "b.db"), "--listen", "127.0.0.1:0")
    return start(
        [*command, "--detector", "--detector-device", "cpu"],
        cwd=code,
        env={"PYTHONPATH": str(code), "PROV_ADMIN_TOKEN": ADMIN},
    )


def one_round(code: Path, calls: int, unsigned: Path) -> dict[str, Sample]:
    """A fresh server on ``code``: enroll, sign the clip, warm up, then ``calls`` verifies
    of each case (``unsigned``: the video nobody signed)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ.update(PROV_HOME=str(work / "dev"), PROV_PASSPHRASE="bench")
        proc, address = start_server(code, work)
        with stopping(proc):
            os.environ["PROV_SERVER"] = address
            assert prov(["device", "init"]) == 0
            with ProvenanceClient(address, admin_token=ADMIN) as c:
                token, _ = c.create_enrollment_token()
            assert prov(["device", "enroll", "--token", token]) == 0
            files = {"signed": Path(shutil.copy(CLIP, work / "clip.mp4")), "unsigned": unsigned}
            assert prov(["sign", str(files["signed"])]) == 0
            out: dict[str, Sample] = {}
            with ProvenanceClient(address) as c:
                for _, which, detect in CASES:  # warm-up: imports, the model's first batch
                    c.verify_file(files[which], detect=detect)
                for name, which, detect in CASES:
                    walls, cpus = [], []
                    for _ in range(calls):
                        cpu0, t0 = tree_cpu(proc.pid), time.perf_counter()
                        report = c.verify_file(files[which], detect=detect)
                        walls.append(time.perf_counter() - t0)
                        cpus.append(tree_cpu(proc.pid) - cpu0)
                        assert report.status.value == (
                            "SIGNED_ORIGINAL" if which == "signed" else "UNSIGNED"
                        ), report.reasons
                        assert (report.detector or {}).get("score") is not None or not detect
                    out[name] = Sample(statistics.median(walls), statistics.median(cpus))
            return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--code", type=Path, default=ROOT, help="checkout whose server is measured")
    ap.add_argument("--old", type=Path, help="a second checkout, measured alternately")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3, help="verifies per case per round")
    ap.add_argument("--unsigned", type=Path, default=UNSIGNED, help="the unsigned video")
    args = ap.parse_args()
    codes = {"new": args.code.resolve()}
    if args.old:
        codes = {"old": args.old.resolve(), **codes}
    runs: dict[str, list[dict[str, Sample]]] = {k: [] for k in codes}
    for r in range(args.rounds):
        for label, code in codes.items():
            runs[label].append(one_round(code, args.calls, args.unsigned))
            print(
                f"round {r + 1} {label}: "
                + ", ".join(
                    f"{n} {s.wall_s * 1e3:.0f} ms wall / {s.server_cpu_s * 1e3:.0f} ms CPU"
                    for n, s in runs[label][-1].items()
                ),
                flush=True,
            )
    print(f"medians of {args.rounds} rounds x {args.calls} calls (ms per verify)")
    med = {
        label: {
            name: Sample(
                statistics.median(s[name].wall_s for s in rounds),
                statistics.median(s[name].server_cpu_s for s in rounds),
            )
            for name, _, _ in CASES
        }
        for label, rounds in runs.items()
    }
    rows = []
    for name, _, _ in CASES:
        line = f"  {name:<22}" + "".join(
            f" {label}: {m[name].wall_s * 1e3:6.0f} wall {m[name].server_cpu_s * 1e3:6.0f} CPU"
            for label, m in med.items()
        )
        print(line)
        if "old" in med:
            old, new = med["old"][name], med["new"][name]
            rows.append(
                Ratio(f"video verify {name}, new", 1 / new.wall_s, "old", 1 / old.wall_s, "calls/s")
            )
            rows.append(
                Ratio(
                    f"video verify {name}, new, per CPU-s",
                    1 / new.server_cpu_s,
                    "old",
                    1 / old.server_cpu_s,
                    "calls/CPU-s",
                )
            )
    if rows:
        write_results("bench_video_verify", rows, f"{args.rounds} rounds x {args.calls} calls")


if __name__ == "__main__":
    main()
