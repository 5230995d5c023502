"""The JSON Lines report as the scan's journal: append rows durably, resume from it.

A row is appended (written through to the operating system) once its batch is done, so
after a crash of the scan, Ctrl-C or SIGKILL the report holds every finished row and at
most one partial last line. The file is fsynced on a helper thread, one fsync at a time
covering every row written before it starts, and once more on close: the scan never waits
for the disk, and after a power loss only the rows of the last fsync or two are missing
(they are scanned again on ``--resume``). `Journal`
cuts that partial line, and the refs of the rows present are skipped on ``--resume``:
nothing finished is scanned again and no row appears twice. Refs are remembered as
16-byte BLAKE2b digests (about 90 bytes each in memory, whatever the path length), so a
report of 10^7 rows costs about 1 GB of memory to resume; the chance that two of 10^7
refs share a digest is below 10^-24.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from clients.scan.rowcheck import row_problem
from clients.scan.sources import LIST_SUFFIXES, escape_name, unescape_name
from provenance.core.errors import ConfigError
from provenance.core.files import naming
from provenance.terminal import shown_line
from provenance.wire.jsontext import loads_text

#: One row as compact JSON: `json.dumps` with these separators builds a new encoder
#: for every call. A row is a tree the scan built (no container in it twice), so the
#: encoder skips its check for circular references (same text, 5.0 -> 4.65 us a row).
_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_ENCODE = _ENCODER.encode
#: The C encoder that `_ENCODER.encode` makes anew for each row (CPython's `_json`; None
#: without it), made once: called on a row it gives the row's text in pieces, the same
#: text (5.9-6.1 -> 4.9-5.0 us a row with the joins, measured 5 December).
_MAKE_C_ENCODER: Callable[..., Callable[[Any, int], Iterable[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None
)
_C_ENCODE = (
    None
    if _MAKE_C_ENCODER is None
    else _MAKE_C_ENCODER(
        None,  # no check for circular references
        _ENCODER.default,
        json.encoder.encode_basestring_ascii,  # ensure_ascii
        None,  # no indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        True,  # allow_nan
    )
)


def encode_lines(rows: list[dict[str, Any]]) -> str:
    """``rows`` as JSON Lines: each row's compact JSON (as `_ENCODE` writes it) and a
    newline."""
    if _C_ENCODE is None:
        return "".join(_ENCODE(r) + "\n" for r in rows)
    pieces: list[str] = []
    for r in rows:
        pieces += _C_ENCODE(r, 0)
        pieces.append("\n")
    return "".join(pieces)


def _digest(ref: str) -> bytes:
    return hashlib.blake2b(ref.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class RefSet:
    """A set of refs, stored as 16-byte digests. The digest of the ref last asked about is
    kept, so the usual sequence (``ref in s``, then `add_new`) hashes each ref once."""

    def __init__(self) -> None:
        self._digests: set[bytes] = set()
        self._last: tuple[str, bytes] = ("", _digest(""))

    def __len__(self) -> int:
        return len(self._digests)

    def _of(self, ref: str) -> bytes:
        if self._last[0] != ref:
            self._last = (ref, _digest(ref))
        return self._last[1]

    def __contains__(self, ref: object) -> bool:
        return isinstance(ref, str) and self._of(ref) in self._digests

    def add(self, ref: str) -> None:
        self._digests.add(self._of(ref))

    def add_new(self, ref: str) -> bool:
        """Add ``ref``; True if it was not in the set before."""
        d = self._of(ref)
        if d in self._digests:
            return False
        self._digests.add(d)
        return True


#: PATH arguments up to which a resume checks each one for rows of its own (`GivenPaths`).
PER_PATH_CHECK = 64


class GivenPaths:
    """Whether report rows could come from the PATH arguments of this run, as given: a row
    of ``PATH`` itself, of a file in folder ``PATH`` (``PATH/...``) or of an archive
    member (``PATH!...``). A list file names files by its own lines, so with one among
    the arguments any row could: `could_match` is then always True."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self._lists = any(p.lower().endswith(LIST_SUFFIXES) and os.path.isfile(p) for p in paths)
        refs = [escape_name(p) for p in paths]
        self._exact = frozenset(refs)
        self._prefixes = tuple(prefix for r in refs for prefix in (os.path.join(r, ""), r + "!"))
        self.rows = 0
        self.matched = False
        self.example = ""
        # each PATH's own match, while few are given (a shell glob may give thousands: then
        # only the whole set's): the PATHs no row has matched yet, by their ref
        self._unseen: dict[str, str] | None = (
            dict(zip(refs, paths, strict=True)) if len(refs) <= PER_PATH_CHECK else None
        )
        self._unseen_prefixes = self._prefixes

    def could_match(self, row_path: str) -> bool:
        """Whether a row of path ``row_path`` (as the report holds it) could be of a file
        under these paths (always, with a list file among them)."""
        self._see(row_path)  # a row --retry-errors takes out is of its PATH too
        return self._lists or row_path in self._exact or row_path.startswith(self._prefixes)

    def add(self, row_path: str) -> None:
        """Count one row of the report, its path as it holds it."""
        self.rows += 1
        if not self.example:
            self.example = row_path
        if not self.matched:
            self.matched = row_path in self._exact or row_path.startswith(self._prefixes)
        self._see(row_path)

    def _see(self, row_path: str) -> None:
        """Mark the PATHs that a row of path ``row_path`` is under as matched."""
        unseen = self._unseen
        if unseen and (row_path in unseen or row_path.startswith(self._unseen_prefixes)):
            for ref in list(unseen):
                if row_path == ref or row_path.startswith((os.path.join(ref, ""), ref + "!")):
                    del unseen[ref]
            self._unseen_prefixes = tuple(
                prefix for r in unseen for prefix in (os.path.join(r, ""), r + "!")
            )

    def mismatch(self, report: Path) -> str:
        """A warning when the report holds rows and none of them could come from these
        paths (so every file will be scanned again); or, up to PER_PATH_CHECK paths, when
        some of them have no row there (new to this scan, or spelled otherwise: their files
        are scanned again; before, no word while one PATH matched); else ""."""
        if not self.rows or self._lists:
            return ""
        if self.matched:
            unseen = list(self._unseen.values()) if self._unseen else []
            if not unseen:
                return ""
            shown = ", ".join(map(shown_line, unseen[:3])) + (", ..." if unseen[3:] else "")
            return (
                f"warning: no row in {shown_line(str(report))} is of a file under {shown}"
                f" ({len(unseen)} of the {len(self.paths)} paths given): new to this scan, or"
                " spelled otherwise than the scan that wrote the report spelled them (rows"
                f" are matched by their path as given; it holds e.g. {shown_line(self.example)}),"
                " their files are scanned now; if they were scanned before, stop (Ctrl-C) and"
                " give them as then"
            )
        shown = ", ".join(map(shown_line, self.paths[:3])) + (", ..." if self.paths[3:] else "")
        return (
            f"warning: none of the {self.rows:,} rows in {shown_line(str(report))} is of a file under the"
            f" paths given ({shown}): rows are matched by their path as given, spelled the"
            f" same (the report holds e.g. {shown_line(self.example)}), so every file will be"
            " scanned again; to skip them, stop (Ctrl-C) and give the paths as the first scan did"
        )


def holds_rows(path: Path) -> bool:
    """Whether ``path`` exists and is not empty. An empty report (a scan that failed before
    its first row: the server was down) holds nothing to lose or resume, so a new scan may
    take it over without --resume."""
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _cut_partial_line(path: Path) -> None:
    """Truncate the file after its last newline (a row cut by a crash is dropped)."""
    with path.open("rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            block = f.read(step)
            nl = block.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
        if pos != end:
            f.truncate(pos)
            f.flush()
            os.fsync(f.fileno())


#: Bytes of held-back entry rows (`Journal.held_back`) kept in memory before a temporary
#: file takes them.
HELD_IN_MEMORY = 8 * 1024 * 1024


def on_disk(row: dict[str, Any]) -> bool:
    """Whether the file of a report ``row`` is still there: its ``archive`` (an entry's
    outermost archive) or else its ``path``, the escapes of its ref undone
    (`unescape_name`); a link counts, broken or not (the walk names it in a row)."""
    return os.path.lexists(unescape_name(row.get("archive") or row["path"]))


class _Rewrite:
    """The report without its error rows (`Journal` with ``retry_errors``): the rows kept
    are copied to a temporary file beside it (created exclusively, so never through a
    link made there), which `finish` fsyncs and renames over the report (a
    crash leaves the report as it was, or without its error rows: their files are
    scanned again either way). Raises OSError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.retry.tmp")
        self._file: IO[bytes] = self.tmp.open("xb")

    def write(self, line: bytes) -> None:
        self._file.write(line)

    def discard(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self, replace: bool) -> None:
        """Put the copy in the report's place when ``replace``, else drop it."""
        if not replace:
            self.discard()
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.tmp, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class Journal:
    """The report file, opened for appending.

    ``resume=False`` refuses an existing report that holds anything (ConfigError: a
    finished scan is not overwritten by accident; an empty one is taken over, `holds_rows`); ``resume=True`` reads the refs of its rows into ``done``
    after cutting a partial last line, handing each row to ``on_row`` (if given) as it
    is read; with ``retry_errors`` too, the rows holding an ``error`` are taken out of
    the report (counted in ``retried``), so their files are scanned again: those whose
    path ``retry_if`` (if given) accepts, the others kept (a file under no PATH of this
    run would not be scanned again: its row would be lost), and of those the rows of files
    no longer on disk kept too (counted in ``gone``: no walk finds them). The rows of
    archive entries taken out so are held back: those the walk did not find again (the
    archive is there, the entry is not) are `held_back` once it is done. Raises
    ConfigError if the file cannot be used.
    """

    def __init__(
        self,
        path: Path,
        resume: bool,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        retry_errors: bool = False,
        retry_if: Callable[[str], bool] | None = None,
    ) -> None:
        self.path = path
        self.done = RefSet()
        #: error rows taken out of the report for their files to be scanned again
        self.retried = 0
        #: error rows kept, though ``retry_errors``, as their files are gone (`on_disk`)
        self.gone = 0
        #: held-back entry rows `held_back` wrote again, their entries gone from the archive
        self.gone_entries = 0
        #: the lines of the archive entries' rows taken out (`held_back`)
        self._held = tempfile.SpooledTemporaryFile(max_size=HELD_IN_MEMORY)
        exists = holds_rows(path)
        if exists and not resume:
            raise ConfigError(f"{path} exists: add --resume to continue that scan, or remove it")
        try:
            if exists:
                _cut_partial_line(path)
                # the file the report is: one linked from another folder is rewritten
                # there, the link kept (renamed over the link, the copy would replace it)
                real = Path(os.path.realpath(path))
                for leftover in real.parent.glob(f".{glob.escape(real.name)}.*.retry.tmp"):
                    leftover.unlink(missing_ok=True)  # of a --retry-errors killed mid-copy
                kept = _Rewrite(real) if retry_errors else None
                with path.open("rb") as f:
                    for n, line in enumerate(f, 1):
                        # a row of another shape (an edit, a damaged disk) is named by its
                        # line: before, one whose path was no text, or whose fields the
                        # CSV flattens had other types, ended in a traceback (AttributeError,
                        # TypeError); the line is UTF-8, not guessed (NULs read as UTF-32)
                        try:
                            row = loads_text(line)
                            if not isinstance(row, dict):
                                raise TypeError("not an object with a text path")
                            # each field the reports read: a NaN score, a size of
                            # 1e999 upset them (`clients.scan.rowcheck`)
                            problem = row_problem(row)
                            if problem is not None:
                                raise ValueError(problem)
                            if kept is not None:
                                if row.get("error") is not None and (
                                    retry_if is None or retry_if(row["path"])
                                ):
                                    if on_disk(row):
                                        self.retried += 1
                                        if row.get("archive"):
                                            self._held.write(line.rstrip(b"\n") + b"\n")
                                        continue
                                    self.gone += 1
                                kept.write(line)
                            self.done.add(row["path"])
                            if on_row is not None:
                                on_row(row)
                        except (
                            ValueError,
                            KeyError,
                            TypeError,
                            AttributeError,
                            RecursionError,
                        ) as e:
                            if kept is not None:
                                kept.discard()
                            raise ConfigError(
                                f"{path} line {n} is not a scan report row: {e}"
                            ) from e
                if kept is not None:
                    kept.finish(replace=self.retried > 0)
            self._file: IO[str] = path.open("a", encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot open the report {path}: {e.strerror or e}") from e
        self._syncer = ThreadPoolExecutor(1, thread_name_prefix="journal-fsync")
        self._sync: Future[None] | None = None

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows, hand them to the operating system, and start an fsync unless one is
        running (the next write or `close` covers these rows then). Raises OSError when
        writing fails or an earlier fsync failed."""
        if not rows:
            return
        with naming(self.path):
            self._file.write(encode_lines(rows))
            self._file.flush()
            if self._sync is None or self._sync.done():
                if self._sync is not None:
                    self._sync.result()
                self._sync = self._syncer.submit(os.fsync, self._file.fileno())

    def held_back(self) -> Iterator[dict[str, Any]]:
        """After the walk: the rows of archive entries that ``retry_errors`` took out and
        the walk did not find again (its ref not in ``done``: the archive is still on disk
        but holds the entry no longer), each counted in ``gone_entries`` and added to
        ``done``; the caller writes them back. Before, such a row was lost. Not called
        when the scan stops early (its entries are scanned by the next --resume)."""
        self._held.seek(0)
        for line in self._held:
            row = loads_text(line)
            if row["path"] not in self.done:
                self.done.add(row["path"])
                self.gone_entries += 1
                yield row

    def close(self) -> None:
        """Wait for the running fsync, fsync once more and close. Raises OSError as
        `write`, naming the report (closing flushes what a failed write left buffered, and
        fails again on a full disk: that error, which replaces the first, names it too)."""
        try:
            with naming(self.path):
                if self._sync is not None:
                    self._sync.result()
                self._file.flush()
                os.fsync(self._file.fileno())
        finally:
            self._held.close()
            self._syncer.shutdown()
            with naming(self.path):
                self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
