"""``prov scan``: the command function, registered by `clients.cli` on its Typer app."""

from __future__ import annotations

import importlib.util
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from clients.api import default_server
from clients.device import default_home
from clients.interrupt import ctrl_c_notes, how_stopped, terminate_as_interrupt
from clients.options import (
    ServerOpt,
    UsageError,
    existing,
    in_existing_folder,
    nonempty_path,
    verifier_key,
)
from clients.scan.engines import Engine, LocalEngine, RayEngine
from clients.scan.pipeline import DEFAULT_BATCH, run_scan
from clients.scan.progress import ScanProgress, summary_note, summary_table, summary_title
from clients.scan.report import (
    EVIDENCE_REFUSED,
    csv_path,
    html_path,
    legend,
    report_files,
    written_by_scan,
)
from clients.scan.resume import holds_rows
from clients.scan.worker import ScanConfig
from provenance.core.errors import DetectorError, TransportError
from provenance.core.files import file_kind, os_failure
from provenance.terminal import SafeConsole, shown_line
from provenance.wire.contract import MAX_LOOKUP_QUERIES


class EngineName(StrEnum):
    local = "local"
    ray = "ray"


def make_engine(name: EngineName, workers: int | None) -> Engine:
    """The engine named on the command line; workers None means one per CPU core."""
    if name == EngineName.ray:
        return RayEngine(workers)
    return LocalEngine((os.cpu_count() or 1) if workers is None else workers)


def scan(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Folders, zip or tar(.gz/.bz2/.xz) archives, list files (.txt/.lst/.list,"
            " one path a line) or single files.",
            callback=existing,
            parser=nonempty_path,
        ),
    ],
    report: Annotated[
        Path,
        typer.Option(
            "--report",
            help="The JSON Lines report (must end in .jsonl);"
            " OUT.csv and OUT.html are written beside it.",
        ),
    ],
    server: ServerOpt = default_server(),
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the scan recorded in --report (or start it if there is none yet):"
            " every file with a row there, errors included, is skipped. Give the same"
            " PATHs, spelled as before: a path spelled otherwise is scanned again.",
        ),
    ] = False,
    retry_errors: Annotated[
        bool,
        typer.Option(
            help="With --resume: scan again every file whose row in --report is an error"
            " (the server answered no result for it, a read failed on a share, it changed"
            " while read); its old row is taken out first. A file that cannot be read or"
            " decoded for good gets its error row again.",
        ),
    ] = False,
    engine: Annotated[
        EngineName,
        typer.Option(help="local: a process pool; ray: Ray tasks (RAY_ADDRESS or a local Ray)."),
    ] = EngineName.local,
    detect: Annotated[
        bool,
        typer.Option(
            help="Score unsigned images with the advisory detector"
            " (local if installed, else the server's: uploads them); OUT.html then ranks"
            " them by score."
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes (local) or CPUs (local Ray);"
            " default: one per core; 0: in this process.",
            min=0,
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(help="Files per batch (one lookup call each).", min=1, max=MAX_LOOKUP_QUERIES),
    ] = DEFAULT_BATCH,
    log_key: Annotated[
        str | None,
        typer.Option(
            envvar="PROV_LOG_KEY",
            help="The log's verifier key (text or a file holding it; `prov log key` prints"
            " it): as in `prov verify`, the evidence of each verdict citing a logged claim"
            " is checked with it here (signed checkpoint, inclusion proof); a file whose"
            " evidence does not verify gets an error row, and the scan exits 3.",
            callback=verifier_key,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Scan folders and archives: which files are signed originals, derived from signed
    captures, or unsigned. Hashes are sent to the server; a file is uploaded only to
    check its sidecar or to find a trimmed copy of a signed video (as `prov verify`).

    Archives are read as streams, never extracted; hostile entries are refused with a
    reason in the report. Interrupted scans continue with --resume. Exit 0 when the scan
    completed (whatever the verdicts); 3 when it completed but the server's evidence for
    a file did not hold (a claim of other bytes cited, or, with --log-key, a receipt that
    does not verify with that key: rows SERVER EVIDENCE REFUSED; or, with --log-key and
    --resume, rows of an earlier run not checked with it, or with another key); 1 on an
    error, such as a server unreachable for more than a few seconds (rows so far are
    kept: run the same command with --resume). OUT.csv and OUT.html are written when a
    run completes; a scan, new or resumed, refuses (exit 2) an OUT.csv, OUT.csv.part or
    OUT.html that no scan wrote, rather than replace it.
    Details: docs/scan.md.
    """
    if retry_errors and not resume:
        raise UsageError("--retry-errors goes with --resume (a new report has no error rows)")
    err = SafeConsole(stderr=True)

    def say(text: str) -> None:
        err.print(text, highlight=False, soft_wrap=True)

    terminated: list[int] = []  # SIGTERM, once it came
    # from here, before the report is read or the detector secret made: SIGTERM says
    # "terminated (SIGTERM)" and exits 143 (before, it ended the process at once, -15)
    with terminate_as_interrupt(terminated):
        try:
            _check_report(report, resume)  # the arguments first, then the progress bar
            chosen = make_engine(engine, workers)
            secret = _detector_secret(detect)
            pinned = _read_key_text(log_key) if log_key is not None else ""
        except KeyboardInterrupt:
            if not terminated:
                raise
            err.print(how_stopped(terminated)[0] + ": nothing was scanned", highlight=False)
            raise typer.Exit(how_stopped(terminated)[1]) from None
        config = ScanConfig(server=server, detect=detect, detector_secret=secret, log_key=pinned)
        kept = (
            f"the rows so far are kept in {report}; the same command with --resume"
            " continues the scan"
        )
        try:
            # a second Ctrl-C while the first one stops the scan: at once, saying ``kept``
            with ctrl_c_notes(kept, say=say), ScanProgress(err) as progress:
                result = run_scan(
                    [str(p) for p in paths],
                    report,
                    config,
                    chosen,
                    resume=resume,
                    retry_errors=retry_errors,
                    batch_size=batch_size,
                    on_rows=progress.update,
                    on_warning=lambda text: err.print(text, highlight=False, soft_wrap=True),
                )
        except KeyboardInterrupt:
            word, code = how_stopped(terminated)
            err.print(f"{word}: {kept}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None
        except TransportError as e:  # the server unreachable after the retries, or refusing
            raise TransportError(
                f"{e}; the rows so far are kept in {report}; the same command with --resume"
                " continues the scan",
                e.code,
                e.retry_after_s,
                from_grpc=e.from_grpc,
                waited_s=e.waited_s,
            ) from None
        except OSError as e:  # the machine's: a full disk or a file size limit under the report
            err.print(
                f"error: {os_failure(e)}; the rows so far are kept in {report}; the same"
                " command with --resume continues the scan once that is fixed",
                highlight=False,
            )
            raise typer.Exit(1) from None
    out = SafeConsole()
    out.print(summary_title(result, report), soft_wrap=True)  # whole, however long its path
    out.print(summary_table(result, report))
    note = summary_note(result)
    if note:
        out.print(note, highlight=False, soft_wrap=True)
    summary = result.summary
    for line in legend(
        summary.counts,
        where=f"in {html_path(report)}",
        pixels_unchecked=summary.pixels_unchecked,
        over_limits=summary.over_limits,
    ):
        out.print(line, highlight=False, soft_wrap=True)
    out.print(
        f"reports: {report}, {csv_path(report)}, {html_path(report)}",
        highlight=False,
        soft_wrap=True,  # whole: a script reads the paths from it
    )
    refused = result.summary.counts.get(EVIDENCE_REFUSED, 0)
    if refused:  # as `prov verify` exits 3 for one such file
        err.print(
            Text.assemble(
                ("SERVER EVIDENCE REFUSED:", "bold red"),
                f" the server's evidence for {refused} {'file' if refused == 1 else 'files'}"
                f" of the report did not hold (each row's error says why); no verdict is"
                f" shown for {'it' if refused == 1 else 'them'}",
            ),
            soft_wrap=True,
        )
    if result.unchecked:  # rows of an earlier run without this --log-key: not proven
        n = result.unchecked
        err.print(
            Text.assemble(
                ("NOT CHECKED WITH --log-key:", "bold red"),
                f" {n:,} {'row' if n == 1 else 'rows'} of the report, written by an earlier"
                f" run and not scanned again, {'shows' if n == 1 else 'show'} a verdict"
                " citing a logged claim that was not checked with --log-key (its"
                " evidence_checked is not log-key, or its log_key is another key than the"
                " one given);"
                " scan into a new report to check every file with the key",
            ),
            soft_wrap=True,
        )
    if refused or result.unchecked:
        raise typer.Exit(3)


def _read_key_text(value: str) -> str:
    """`provenance.witness.client.read_key_text`, loaded only when --log-key is given."""
    from provenance.witness.client import read_key_text

    return read_key_text(value)


#: The local detector's crop secret, in PROV_HOME (~/.prov).
SCAN_SECRET_NAME = "scan-detector-secret"


def _detector_secret(detect: bool) -> bytes:
    """The crop secret of the local detector (32 bytes), kept in PROV_HOME (default
    ~/.prov) as `SCAN_SECRET_NAME` (mode 0600, made on first use): the same file gets the
    same score in every scan on this account and in every part of a resumed one (before, each
    run drew its own). b"" without --detect, or without torch (the local detector cannot
    load; the server's detector then scores, with the server's secret): no file is made
    or read then. Raises DetectorError if the
    file is unreadable, of the wrong size or readable by others (the message says what to
    do)."""
    if not detect:
        return b""
    # found, not imported (seconds): `detector.secret` itself is stdlib only, so its import
    # no longer tells whether the local detector can load
    if importlib.util.find_spec("torch") is None:
        return b""
    from detector.secret import load_or_create_secret

    home = default_home()
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise DetectorError(f"cannot make {home} for the detector secret: {e.strerror}") from e
    return load_or_create_secret(home / SCAN_SECRET_NAME)


def _check_report(report: Path, resume: bool) -> None:
    """Usage errors (exit 2) of ``--report``, found before the scan starts: not a .jsonl
    name, a folder that does not exist or cannot be written, a folder given as the file,
    a FIFO, device or socket (a FIFO's open for appending waits for a reader: the scan
    blocked for good), an existing report without --resume (unless empty:
    `holds_rows`), or an ``OUT.csv`` or ``OUT.html`` beside it that no scan wrote
    (`written_by_scan`), which the scan would replace when it completes, or an
    ``OUT.csv.part`` (the CSV as the scan writes it, truncated as it starts) that no scan
    wrote (or that cannot be read: said so, with why), or any of the three that is a
    symbolic link (the scan would write its CSV and page through one, into the file it
    leads to, wherever that was): for a new scan and for --resume alike (so a resumed
    one does not replace them; the earlier run's own pass the check). Raises
    typer.BadParameter."""
    if report.suffix != ".jsonl":
        raise typer.BadParameter(
            f"the report is JSON Lines and must end in .jsonl (OUT.csv and OUT.html are"
            f" written beside it), got {report}",
            param_hint="--report",
        )
    folder = in_existing_folder(report, "--report", through_link=True).parent
    if report.is_dir():
        raise typer.BadParameter(f"{report} is a folder; name a file", param_hint="--report")
    if report.exists() and not report.is_file():
        kind = file_kind(report.stat().st_mode)
        raise typer.BadParameter(
            f"{report} is {kind}, not a regular file; name the report file",
            param_hint="--report",
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise typer.BadParameter(
            f"cannot write to the folder {folder} (the report, OUT.csv and OUT.html go there)",
            param_hint="--report",
        )
    if holds_rows(report) and not resume:
        raise typer.BadParameter(
            f"{report} exists: add --resume to continue that scan, or remove it",
            param_hint="--report",
        )
    for out in report_files(report)[1:]:  # OUT.csv, OUT.csv.part, OUT.html (also --resume)
        if out.is_symlink():  # written through (.part, .html) or replaced (.csv): refused
            done = (
                "would replace the link, not the file it leads to"
                if out.suffix == ".csv"
                else "would write through the link into the file it leads to"
            )
            raise typer.BadParameter(
                f"{out} is a symbolic link (to {shown_line(os.readlink(out))}): a scan into {report}"
                f" writes {out.name} and {done}. Move that link away, or name another --report",
                param_hint="--report",
            )
        try:
            ours = written_by_scan(out)
            what = "is not a report of prov scan"
        except OSError as e:  # mode 0000, say: whose it is cannot be told
            ours, what = False, f"cannot be read ({e.strerror or e})"
        if not ours:
            when = (
                f"writes its CSV to {out.name} as it runs"
                if out.suffix == ".part"
                else f"writes {out.name} when it completes"
            )
            raise typer.BadParameter(
                f"{out} exists and {what}: a scan into {report}"
                f" {when}, replacing it. Move that file away, or name another --report",
                param_hint="--report",
            )
