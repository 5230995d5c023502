"""What a person watching a scan sees: a live progress line and a final summary table."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from clients.scan.pipeline import ScanResult
from clients.scan.report import EMPTY, ERROR, EVIDENCE_REFUSED, SIDECAR, hashed_bytes, row_key
from provenance.core.claims import Verdict

_ORDER = [v.value for v in Verdict] + [ERROR, EVIDENCE_REFUSED, EMPTY, SIDECAR]

#: Redraws of the progress line per second. Rich's default of 10 cost a scan about 17 ms
#: of CPU per second (its refresh thread drawing the line, in the driver, which shares
#: the cores with the workers and the server); at 2, about 7 ms (measured on a terminal
#: console with a batch of 256 rows every 65 ms, as a 2-worker scan of small JPEGs).
REFRESH_PER_SECOND = 2


def _mb(n: int) -> float:
    return n / 1e6


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


class ScanProgress:
    """A live line on ``console``: files, files/s, MB/s and the count of each verdict in
    this run. Use as a context manager; feed it each batch's rows with `update`. On a
    console that is not a terminal (stderr sent to a file or a pipe) nothing is drawn
    live: the final line is written once, whole (not cut to the console's width), with
    its newline."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._console = console
        self._live = console.is_terminal
        self._progress = Progress(
            SpinnerColumn(),
            # the total is not known: the bar only pulses, so it gives way to the counts,
            # which fold onto a second line rather than be cut at the terminal's width
            BarColumn(bar_width=10),
            TimeElapsedColumn(),
            TextColumn("{task.description}", table_column=Column(ratio=1, overflow="fold")),
            console=console,
            refresh_per_second=REFRESH_PER_SECOND,
        )
        self._task = self._progress.add_task("starting", total=None)
        self._start = clock()
        self.files = 0
        self.bytes = 0
        self.counts: Counter[str] = Counter()

    def __enter__(self) -> ScanProgress:
        self._start = self._clock()
        if self._live:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            if not self.files:  # the last frame says so, not "starting"
                self._progress.update(self._task, description=self.describe())
            self._progress.stop()
        else:
            self._console.print(self.describe(), soft_wrap=True, highlight=False)

    def describe(self) -> str:
        """The progress text: 'N files  F files/s  M MB/s  STATUS n ...'; 'no files
        scanned in this run' while there are none (before, "0 files  0.0 files/s": a rate
        of no work, which read as a stalled scan)."""
        if not self.files:
            return "no files scanned in this run"
        dt = max(self._clock() - self._start, 1e-9)
        counts = "  ".join(f"{k} {self.counts[k]}" for k in _ORDER if self.counts[k])
        return (
            f"{_files(self.files)}  {self.files / dt:.1f} files/s  {_mb(self.bytes) / dt:.1f} MB/s"
            f"  {counts}"
        )

    def update(self, rows: list[dict[str, Any]]) -> None:
        self.files += len(rows)
        self.bytes += sum(hashed_bytes(r) for r in rows)
        self.counts.update(row_key(r) for r in rows)
        self._progress.update(self._task, description=self.describe())


def summary_title(result: ScanResult, report: Path) -> Text:
    """The line above `summary_table`: the report, its files and bytes. A line of its own:
    as the table's title it was folded to the table's width ("scan report scan.jsonl (16"
    over "files, 1.4 MB)"), a long report path over several lines. Text: the path is not
    markup."""
    s = result.summary
    return Text(f"scan report {report} ({_files(s.rows)}, {_mb(s.bytes):,.1f} MB)", style="bold")


def summary_table(result: ScanResult, report: Path) -> Table:
    """The final table: counts per verdict over the whole report, then this run's figures."""
    s = result.summary
    t = Table()
    t.add_column("status")
    t.add_column("files", justify="right")
    for key in _ORDER:
        if s.counts.get(key):
            t.add_row(key, str(s.counts[key]))
    dt = max(result.elapsed_s, 1e-9)
    t.add_section()
    t.add_row("scanned in this run", str(result.scanned))
    if result.skipped:
        t.add_row("already in the report (resumed)", str(result.skipped))
    if result.scanned:  # a rate of no work (0.0 files/s) read as a stall: `summary_note`
        t.add_row("files/s", f"{result.scanned / dt:.1f}")
        t.add_row("MB/s", f"{_mb(result.scanned_bytes) / dt:.1f}")
    return t


def summary_note(result: ScanResult) -> str | None:
    """The line under `summary_table` when this run scanned no file: a resumed scan with
    nothing left ("nothing left to scan: all N files were already in the report", and how
    to scan its error rows again), or paths that hold no file; None when it scanned some."""
    if result.scanned:
        return None
    if not result.skipped:
        return "no files found in the paths given"
    n = result.skipped
    note = (
        "nothing left to scan: "
        + ("the 1 file was" if n == 1 else f"all {n} files were")
        + " already in the report"
    )
    errors = result.summary.counts.get(ERROR, 0) + result.summary.counts.get(EVIDENCE_REFUSED, 0)
    if errors:
        rows = "row" if errors == 1 else "rows"
        note += f" (--retry-errors scans its {errors} error {rows} again)"
    return note
