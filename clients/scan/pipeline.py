"""The scan driver: enumerate, skip what the report already holds, batch, run, record.

``run_scan`` reads the PATH arguments as a stream of items (`clients.scan.sources`), drops
those already in the report (``resume``) or already seen in this run, groups the rest in
batches, hands the batches to an engine (`clients.scan.engines`: the same
`clients.scan.worker.process_batch` in-process, in a local process pool or on Ray),
appends each finished batch's rows to the JSON Lines report (`clients.scan.resume`) and to
the CSV table and summary (`clients.scan.report.ReportWriter`), and at the end writes the
HTML summary.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.files import NotRegularFileError, open_regular
from clients.scan.engines import Engine
from clients.scan.report import ReportWriter, Summary, report_files
from clients.scan.resume import GivenPaths, Journal, RefSet
from clients.scan.runs import runs
from clients.scan.sources import (
    EntryItem,
    Item,
    ScanLimits,
    file_ids,
    iter_items,
    unescape_name,
)
from clients.scan.worker import GC_YOUNG_THRESHOLD, ScanConfig

#: Default items per batch (one Lookup call each). A call costs the server about 1.6 ms
#: and the worker 0.7 ms of CPU whatever its size (gRPC, the pool's task): at 256 files a
#: batch instead of 64, 45-50 us less server CPU per file and 20 us less driver CPU.
DEFAULT_BATCH = 256
#: Archive bytes carried by one batch at most, in bytes (a larger entry goes alone).
BATCH_BYTES = 32 << 20


@dataclass(frozen=True)
class ScanResult:
    """What one run did: rows written (scanned) and the bytes hashed, rows found already in the
    report (skipped), wall time in seconds, and the summary of the whole report."""

    scanned: int
    scanned_bytes: int
    skipped: int
    elapsed_s: float
    summary: Summary
    #: with --log-key (``config.log_key``), rows found in the report whose verdict cites a
    #: logged claim but were not checked with that key (`unchecked_by_key`): written by
    #: an earlier run without it, or with another key, and not scanned again
    unchecked: int = 0


def unchecked_by_key(row: dict[str, Any], log_key: str) -> bool:
    """Whether the report row ``row`` shows a verdict citing a logged claim (SIGNED_ORIGINAL,
    DERIVED; REVOKED_KEY whose claim has a log receipt) whose evidence was not proven
    with the verifier key ``log_key`` (NAME+ID+KEY, as --log-key gives it, checked): its
    ``evidence_checked`` is not "log-key", or its ``log_key`` names another key. A row
    without ``log_key`` (written by a scan that did not record it) proven with
    "log-key" counts as checked."""
    if row.get("error"):
        return False
    if row.get("evidence_checked") == "log-key":
        by = row.get("log_key")
        return by is not None and by != log_key
    status = row.get("status")
    if status in ("SIGNED_ORIGINAL", "DERIVED"):
        return True
    claim = (row.get("evidence") or {}).get("claim") or {}
    return status == "REVOKED_KEY" and bool(claim.get("log"))


#: Items in a scan's first batch at most; each later batch may hold twice as many as the
#: one before, up to the batch size: the first rows come as soon as with small batches
#: (256 files take a worker 0.4 s on an idle core, seconds on a busy machine), and the
#: rest of the scan pays the cost of a call once per full batch.
FIRST_BATCH = 16


def batched(
    items: Iterable[Item],
    size: int,
    max_bytes: int = BATCH_BYTES,
    tail_parts: int | Callable[[], int] = 0,
) -> Iterator[list[Item]]:
    """Lists of at most ``size`` items (the first FIRST_BATCH, each later one at most twice
    the one before) carrying at most ``max_bytes`` of entry bytes; the last items cut into
    about ``tail_parts`` smaller lists (`runs`; a function: asked when the items end)."""
    return runs(
        items,
        size,
        lambda i: i.size if isinstance(i, EntryItem) else 0,
        max_bytes,
        FIRST_BATCH,
        tail_parts=tail_parts,
        min_tail=FIRST_BATCH,
    )


def batched_rows(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Lists of at most ``size`` (at least 1) of ``rows``."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= max(size, 1):
            yield batch
            batch = []
    if batch:
        yield batch


def _fresh(items: Iterable[Item], seen: RefSet) -> Iterator[Item]:
    for item in items:
        if seen.add_new(item.ref):
            yield item


def fetch_bytes(rows: list[dict[str, Any]], limits: ScanLimits) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of the files or archive entries of ``rows`` (for thumbnails), read
    again from their sources one at a time: a folder file by its path, an archive entry by
    one more pass over its outermost archive. The caller drops each image's bytes before
    asking for the next, so memory holds one image (at most ``max_image_bytes``) however
    many rows are asked for: before, all of them were read into one dict first (100
    archive entries of up to 256 MiB each). Rows whose source changed or vanished (or is
    no longer a regular file: a FIFO is not waited on), or whose file grew past
    ``max_image_bytes``, are left out."""
    by_archive: dict[str, set[str]] = {}
    limit = limits.assets.max_image_bytes
    for row in rows:
        if row.get("archive"):
            by_archive.setdefault(row["archive"], set()).add(row["path"])
            continue
        try:  # a FIFO swapped in since the scan is left out, not waited on for ever
            with open_regular(unescape_name(row["path"])) as f:
                # read(n) allocates n bytes first: ask for the file's size, not the limit
                data = f.read(min(os.fstat(f.fileno()).st_size, limit) + 1)
        except (OSError, NotRegularFileError):
            continue
        if len(data) <= limit:
            yield row["path"], data
        del data
    for archive, wanted in by_archive.items():

        def skip(ref: str, w: set[str] = wanted) -> bool:
            return ref not in w

        for item in iter_items([unescape_name(archive)], limits, skip=skip):
            if isinstance(item, EntryItem) and item.ref in wanted:
                ref, data = item.ref, item.data
                del item
                yield ref, data
                del data


def run_scan(
    paths: list[str],
    report: Path,
    config: ScanConfig,
    engine: Engine,
    resume: bool = False,
    batch_size: int = DEFAULT_BATCH,
    retry_errors: bool = False,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    on_warning: Callable[[str], None] | None = None,
) -> ScanResult:
    """Scan ``paths`` into the JSON Lines ``report`` (CSV and HTML beside it).

    resume: continue the scan recorded in an existing report (else an existing report is
    refused with ConfigError). retry_errors: with ``resume``, scan again the files whose
    rows in the report are errors and could be of files under ``paths`` (their rows are
    taken out first; the others are kept). on_rows: called with each batch's rows once recorded.
    on_warning: called, before any file is scanned, with a warning when the report holds
    rows but none of them could be of a file under ``paths`` as spelled (`GivenPaths`).
    Raises ConfigError for an unusable report, TransportError if the server fails; rows
    recorded before an error or an interruption stay, for ``resume``.
    """
    start = clock()
    scanned = scanned_bytes = 0
    writer: ReportWriter | None = None
    unchecked = 0
    # The objects that exist now (the imports, the caller's) are kept out of the garbage
    # collector's full passes until the scan ends (gc.freeze): the rows in flight brought
    # on a full pass over all ~80,000 of them about every 10^4 files, ~50 ms (5 us a file).
    # Not when the caller froze objects itself: unfreezing would undo that.
    frozen = gc.get_freeze_count() == 0
    if frozen:
        gc.freeze()
    thresholds = gc.get_threshold()  # and young collections made rarer (GC_YOUNG_THRESHOLD)
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, thresholds[0]), *thresholds[1:])

    given = GivenPaths(paths)

    def add_row(row: dict[str, Any]) -> None:
        nonlocal writer, unchecked
        if writer is None:  # once the journal accepted the report: a refused one keeps its CSV
            writer = ReportWriter(report, detect=config.detect)
        writer.add(row)
        if config.log_key and unchecked_by_key(row, config.log_key):  # an earlier run's row
            unchecked += 1
        given.add(row["path"])

    try:
        with Journal(
            report, resume, on_row=add_row, retry_errors=retry_errors, retry_if=given.could_match
        ) as journal:
            if writer is None:
                writer = ReportWriter(report, detect=config.detect)
            seen = journal.done
            skipped = len(seen)
            if on_warning is not None and (warning := given.mismatch(report)):
                on_warning(warning)
            if on_warning is not None and journal.retried:
                rows_word = "row" if journal.retried == 1 else "rows"
                on_warning(
                    f"--retry-errors: {journal.retried:,} error {rows_word} taken out of the"
                    " report; their files are scanned again"
                )
            if on_warning is not None and journal.gone:
                rows_word = (
                    "row kept: its file is" if journal.gone == 1 else "rows kept: their files are"
                )
                on_warning(
                    f"--retry-errors: {journal.gone:,} error {rows_word} gone (not found"
                    " on disk), so not scanned again"
                )
            # the report's own files, when a folder scanned holds them: no rows of their own
            own = file_ids(report_files(report))
            walked = iter_items(paths, config.limits, skip=seen.__contains__, leave_out=own)
            items = _fresh(walked, seen)
            for rows in engine.map(
                batched(items, batch_size, tail_parts=engine.tail_parts), config
            ):
                journal.write(rows)
                scanned_bytes += writer.add_rows(rows)
                scanned += len(rows)
                if on_rows is not None:
                    on_rows(rows)
            # entries the walk did not find again: their rows were taken out (--retry-errors)
            for held in batched_rows(journal.held_back(), batch_size):
                journal.write(held)
                for row in held:
                    add_row(row)
            if on_warning is not None and journal.gone_entries:
                rows_word = (
                    "row kept: its archive entry is"
                    if journal.gone_entries == 1
                    else "rows kept: their archive entries are"
                )
                on_warning(
                    f"--retry-errors: {journal.gone_entries:,} error {rows_word} gone (no longer"
                    " in the archive), so not scanned again"
                )
        summary = writer.finish(
            lambda rows: fetch_bytes(rows, config.limits), config.limits.assets.max_pixels
        )
    finally:
        if writer is not None:
            writer.discard()
        gc.set_threshold(*thresholds)
        if frozen:
            gc.unfreeze()
    return ScanResult(scanned, scanned_bytes, skipped, clock() - start, summary, unchecked)
