"""The I/O edge of C2SP tlog-tiles: export a store's log to a directory, read one back.

`export_tiles` writes the layout of `provenance.log.tiles` (c2sp.org/tlog-tiles, "APIs")
for the store's newest checkpoint: the hash tiles and entry bundles that are new, then
the checkpoint last, each file through a temporary name and an atomic rename, and the
tiles flushed to disk before the checkpoint is written, so a reader (or a web server
serving the directory) never sees a torn file or a checkpoint whose tiles are missing,
even after a crash. Full tiles and bundles never change once written, so a repeated
export only adds what the log appended since (tlog-tiles: full tiles are immutable),
and writes again any file past the folder's checkpoint that is already there: one an
export renamed in before a crash stopped it ahead of its flush may have lost its bytes.

`fetcher` opens a tiled log by directory path or ``http(s)://`` prefix for
`provenance.log.tiles.audit_tiles`.
"""

from __future__ import annotations

import functools
import gzip
import http.client
import os
import string
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from provenance.cli.atomicfile import remove_leftovers, temp_names_of, write_atomically
from provenance.cli.cutoff import Cutoff
from provenance.cli.files import open_regular
from provenance.cli.urls import PREFIX, REDIRECT, url_problem, url_refusal, url_scheme
from provenance.core import merkle
from provenance.core.errors import (
    ConfigError,
    LogError,
    LogIntegrityError,
    TileMissingError,
    TransportError,
)
from provenance.core.files import naming
from provenance.core.networds import OverBudget, exchange_failure, metered_response
from provenance.log import tiles
from provenance.log.checkpoint import MAX_NOTE_BYTES, Checkpoint, not_a_signed_note
from provenance.terminal import clipped_line, quoted

if TYPE_CHECKING:  # the web reads tiles without the store layer (test_web_units)
    from provenance.store import Store

MAX_FILE_BYTES = tiles.TILE_WIDTH * (2 + tiles.MAX_ENTRY_SIZE)
"""Largest file of a tiled log: a full entry bundle of 256 entries of 65,535 bytes. The
checkpoint's own bound is a signed note's, `MAX_NOTE_BYTES` (`most_bytes`)."""

SHOWN_TARGET_CHARS = 200
"""Characters of a server's redirect target or reason phrase an error repeats (escaped,
cut: `clipped_line`; before, all of a line of up to 64 KiB)."""

FETCH_TIMEOUT_S = 30.0
"""Seconds to wait for any byte of a file over HTTP."""

GZIP_FEED_BYTES = (64, 1 << 16)
"""Bytes of a gzip body given to a member's inflater at first, and at most at a time (the
feed doubles between): a member's end leaves the rest of what it was given to copy as
the next one's start, so that copy stays within twice the member's own size (or 64
bytes), and the body is read in linear time whatever its member count (RFC 1952 2.2;
bgzip sends one member per 64 KiB block). Before, the rest of the whole body was copied
at each member's end: 838,000 empty members in a 16 MiB body cost minutes of CPU."""

FILE_DEADLINE_S = 300.0
"""Seconds one file over HTTP may take in all (a server dripping bytes within
`FETCH_TIMEOUT_S` of each other would otherwise hold an audit forever)."""


@dataclass(frozen=True)
class ExportResult:
    """What one export did: the tree size exported, and files written (not already there);
    ``signed`` False when the store has no signed checkpoint yet (nothing exported, no
    `checkpoint` file written)."""

    size: int
    tiles_written: int
    bundles_written: int
    signed: bool = True


def _write(path: Path, data: bytes, sync: bool = False, cleaned: set[Path] | None = None) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename
    (`write_atomically`; with ``sync``, the file is fsynced before the rename and the
    folder after it), making its folder first. With ``cleaned`` (folders under tile/,
    which only an export writes), a folder not in it is added to it, first removing the
    temporary files of any name an export killed mid-write left there
    (`remove_leftovers`: of a process no longer running). Raises OSError naming
    ``path``."""
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    if cleaned is not None and path.parent not in cleaned:
        remove_leftovers(path.parent)
        cleaned.add(path.parent)
    write_atomically(path, data, sync=sync)


def _drop_partials(full: Path) -> None:
    """Delete the partial versions ``<full>.p/<W>`` of a tile or bundle now written in
    full (tlog-tiles "Partial Tiles": a log MAY delete them; readers fall back to the full
    one, see `provenance.log.tiles.TileNodes`)."""
    folder = full.with_name(full.name + ".p")
    if folder.is_dir():
        for partial in folder.iterdir():
            partial.unlink(missing_ok=True)
        folder.rmdir()


def _leaves_end(tile: tiles.Tile) -> int:
    """One past the last leaf under ``tile`` (each level-L hash covers 256^L leaves):
    the smallest tree size whose export holds it."""
    hashes_end: int = tile.index * tiles.TILE_WIDTH + tile.width
    return hashes_end << (tiles.TILE_HEIGHT * tile.level)  # 256^level leaves a hash


def exported_size(directory: Path) -> int | None:
    """Tree size of the checkpoint already in ``directory`` (its signature not checked),
    or None if it has none: the export there is a whole tiled log of that size, as
    `export_tiles` writes the checkpoint last. Raises ConfigError when it is no
    checkpoint (over `MAX_NOTE_BYTES` too, read no further) or cannot be read."""
    held = _exported_checkpoint(directory)
    return None if held is None else held.size


def _exported_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint already in ``directory`` (its signature not checked), or None if it
    has none; raises as `exported_size`."""
    path = directory / tiles.CHECKPOINT_PATH
    try:
        data = _read_local(path, MAX_NOTE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_NOTE_BYTES:
        raise ConfigError(f"{_too_large(str(path), MAX_NOTE_BYTES)}; is {directory} a tiled log?")
    text = data.decode(errors="replace")
    try:
        return Checkpoint.parse_body(text[: text.rfind("\n\n") + 1])
    except LogError as e:
        raise ConfigError(f"{path} is not a checkpoint ({e}); is {directory} a tiled log?") from e


def _node_rows(store: Store) -> merkle.NodeReader:
    """The store's Merkle node reader for an export: a node row missing (the store's
    LogError, "missing Merkle nodes") raises LogIntegrityError, as an edited one does:
    the nodes of a checkpointed tree are written with its leaves, so one gone was
    deleted behind the log's back (before, exit 1: "error: log database is missing
    Merkle nodes [(0, 3)]", where `prov log audit --db` said LOG INTEGRITY FAILURE)."""

    def read(keys: Sequence[merkle.NodeKey]) -> Sequence[bytes]:
        try:
            return store.get_nodes(keys)
        except LogIntegrityError:
            raise
        except LogError as e:
            raise LogIntegrityError(
                f"{e}: a node row was deleted or damaged; the export stops, no checkpoint written"
            ) from e

    return read


def _check_published(store: Store, size: int, note: str) -> None:
    """Raise LogIntegrityError unless ``note``, the store's newest checkpoint row of tree
    size ``size``, is a signed note (its signature not checked: the log key is not at
    hand) whose body is a checkpoint of ``size`` entries, at most the store's leaves, and
    of the root of the store's tree at that size: the file `export_tiles` publishes as
    the folder's `checkpoint`. Checked before any tile is listed or written (before, a
    damaged row's note was published as it was, and a size column edited to 2^62 had a
    tile listed for each 256 leaves of it first)."""
    leaves = store.tree_size()
    damaged = "its row was edited or damaged; not exporting (nothing was written)"
    if size > leaves:
        raise LogIntegrityError(
            f"the database's newest checkpoint row is of {size:,} entries, but its log holds"
            f" {leaves:,} leaves: {damaged}"
        )
    why, body = not_a_signed_note(note.encode()), None
    if not why:
        try:
            body = Checkpoint.parse_body(note[: note.rfind("\n\n") + 1])
        except LogError as e:
            why = str(e)
    if body is None:
        raise LogIntegrityError(
            f"the database's newest checkpoint row (of {size:,} entries) holds no signed note"
            f" of a checkpoint ({why}): {damaged}"
        )
    if body.size != size:
        raise LogIntegrityError(
            f"the database's newest checkpoint row of {size:,} entries holds a note that is"
            f" of {body.size:,} entries: {damaged}"
        )
    if body.root_hash != merkle.root(size, _node_rows(store)):
        raise LogIntegrityError(
            f"the database's newest checkpoint (of {size:,} entries) has another root hash"
            f" than its log's tree at that size: {damaged}"
        )


def export_tiles(
    store: Store, directory: Path, progress: Callable[[int, int], None] | None = None
) -> ExportResult:
    """Bring the tiled log in ``directory`` up to the store's newest signed checkpoint.

    Writes missing full tiles and bundles, the partial ones of this size, then the
    checkpoint. Each bundle's entries are checked against the tile's leaf hashes before it
    is written. ``progress(done, total)`` is called per level-0 tile. Raises ConfigError
    when ``directory`` holds a checkpoint of a larger tree (another log, or a rollback)
    or one whose root is not the store's tree's at its size (another log's export: its
    tiles kept and this log's added to them failed the audit, before; nothing written),
    or a checkpoint or tile to read that is no regular file (a FIFO, a device: unread),
    LogIntegrityError when the store's entries do not match its Merkle nodes, LogError
    for an entry too large for a bundle (naming its index; no bundle holding it and no
    checkpoint are written), OSError when a file cannot be written, and the store's
    errors. Raises LogIntegrityError, nothing written, when the store's newest
    checkpoint row is damaged (`_check_published`). Removes the temporary files an
    export killed mid-write left in the folders it writes (`_write`), and beside the
    checkpoint those of the checkpoint.
    """
    latest = store.latest_checkpoint()
    if latest is None:
        return ExportResult(0, 0, 0, signed=False)
    size, note = latest
    _check_published(store, size, note)
    held = _exported_checkpoint(directory)
    before = None if held is None else held.size
    if before is not None and before > size:
        raise ConfigError(
            f"{directory} already holds a checkpoint of {before} entries, more than the"
            f" store's {size}: it is another log's export, or this store was rolled back"
        )
    if held is not None and held.root_hash != merkle.root(held.size, _node_rows(store)):
        # its tiles are another tree's: kept under its size, mixed with this log's past
        # it (its partial tiles dropped for this log's full ones), they failed the audit
        held_entries = f"{held.size:,} entr{'y' if held.size == 1 else 'ies'}"
        raise ConfigError(
            f"{directory} holds an export of another log: its checkpoint of {held_entries} has"
            f" another root hash than this database's log at {held_entries} (another log's,"
            " or this one's before it was rebuilt or forked), so its tiles are not this"
            " log's; export into an empty folder, or give the database of the log exported"
            " there"
        )
    all_tiles = tiles.tiles_for_size(size)
    level0 = sum(1 for t in all_tiles if t.level == 0)
    written = bundles = done = 0
    # what an export killed mid-write left: in each folder under tile/ it writes, any
    # temporary file; beside the checkpoint, the checkpoint's own
    cleaned: set[Path] = set()
    remove_leftovers(directory, temp_names_of(directory / tiles.CHECKPOINT_PATH))
    for tile in all_tiles:
        path = directory / tile.path
        data = b""
        # a file past the folder's checkpoint was renamed in unflushed by an export that
        # stopped before its os.sync: after a power cut it may be empty, so it is written
        # again; those the checkpoint covers were flushed before it was written
        flushed = before is not None and _leaves_end(tile) <= before
        if not (flushed and path.exists()):
            data = tiles.tile_hashes(tile, _node_rows(store))
            _write(path, data, cleaned=cleaned)
            written += 1
            if not tile.partial:
                _drop_partials(path)
        if tile.level != 0:
            continue
        bundle_path = directory / tile.entries_path
        if not (flushed and bundle_path.exists()):
            leaves = tiles.split_hashes(data or _read_local(path), tile)
            first = tile.index * tiles.TILE_WIDTH
            rows = store.entries(first, tile.width)
            entries = [entry for _, entry in rows]
            if [i for i, _ in rows] != list(range(first, first + tile.width)) or [
                merkle.leaf_hash(e) for e in entries
            ] != leaves:
                raise LogIntegrityError(
                    f"the store's entries {first}..{first + tile.width - 1} do not hash to its"
                    " Merkle leaves: rows were edited behind the log's back; not exporting"
                )
            _write(bundle_path, tiles.encode_bundle(entries, first), cleaned=cleaned)
            bundles += 1
            if not tile.partial:
                _drop_partials(bundle_path)
        done += 1
        if progress is not None:
            progress(done, level0)
    if written or bundles:
        os.sync()  # one flush for all tiles (an fsync each costs ~10 ms) before the checkpoint
    _write(directory / tiles.CHECKPOINT_PATH, note.encode(), sync=True)
    return ExportResult(size, written, bundles)


def most_bytes(path: str) -> int:
    """Most bytes the tiled log's file ``path`` may hold, and more than are ever read of
    it: the checkpoint is a signed note, of at most `MAX_NOTE_BYTES` (1 MiB; before, up
    to a bundle's 16 MiB of it was read before its size was checked), a tile or an entry
    bundle at most `MAX_FILE_BYTES`."""
    return MAX_NOTE_BYTES if path == tiles.CHECKPOINT_PATH else MAX_FILE_BYTES


class _TooLargeError(LogIntegrityError):
    """A tiled log's file found over the bound ``most`` (bytes) as sent, or once
    ``inflated`` from gzip (`_too_large`)."""

    def __init__(self, message: str, most: int, inflated: bool) -> None:
        super().__init__(message)
        self.most = most
        self.inflated = inflated


def _too_large(what: str, most: int, inflated: bool = False) -> LogIntegrityError:
    """The error for the file ``what`` found over its bound ``most`` (`most_bytes`) as
    sent, or once ``inflated`` from gzip."""
    if most != MAX_NOTE_BYTES:
        if inflated:
            return _TooLargeError(f"{what} inflates past {most} bytes", most, inflated)
        return _TooLargeError(f"{what} is larger than any tiled-log file ({most})", most, inflated)
    verb = "inflates to" if inflated else "is"
    return _TooLargeError(
        f"{what} {verb} more than the {most:,} bytes ({most >> 20} MiB) a signed note may"
        " hold; it was read no further",
        most,
        inflated,
    )


def _read_bounded(data: bytes, what: str, most: int) -> bytes:
    """``data`` when it is at most ``most`` bytes; else LogIntegrityError (`_too_large`)."""
    if len(data) > most:
        raise _too_large(what, most)
    return data


class NotRegularFileError(OSError):
    """A tiled log's file that is a FIFO, a device or a folder (`read_tile_file`)."""


class OutsideFolderError(NotRegularFileError):
    """A tiled log's file whose real path is outside the folder it is served from (a
    symbolic link leading out: `read_tile_file` with ``within``). ``real``: that path."""

    def __init__(self, path: Path, real: str) -> None:
        super().__init__(f"{path} leads outside the tiles folder, to {real}")
        self.real = real


def outside_folder(fd: int, path: Path, within: Path) -> str | None:
    """The real path of the file open as ``fd`` (read from /proc/self/fd, so a link
    swapped in after the open changes nothing; without /proc, ``path`` resolved) when it
    is outside the folder ``within`` (resolved too), else None."""
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(path)
    root = os.path.realpath(within)
    return None if os.path.commonpath([real, root]) == root else real


def read_tile_file(
    path: Path, limit: int = MAX_FILE_BYTES + 1, within: Path | None = None
) -> bytes:
    """At most ``limit`` bytes of the tiled log's file at ``path``, opened without
    blocking: a FIFO held its reader in open() forever (`prov log audit --tiles DIR`;
    `prov web --tiles-dir` on its event loop) and /dev/zero was read without end. Raises
    NotRegularFileError, naming what it is, for anything but a regular file;
    OutsideFolderError, reading nothing, when ``within`` is given and the file opened is
    not in that folder (a symbolic link leading out of a served folder: before, `prov
    web --tiles-dir` served /etc/passwd linked in at tile/entries/001); OSError.
    No more than the file's size and one byte is asked of the read (Python's read(n)
    allocates n bytes at once: 16 MiB for each 8 KiB tile of an audit, before)."""
    with open_regular(path, NotRegularFileError) as handle:
        if (
            within is not None
            and (real := outside_folder(handle.fileno(), path, within)) is not None
        ):
            raise OutsideFolderError(path, real)
        size = os.fstat(handle.fileno()).st_size
        return handle.read() if limit < 0 else handle.read(min(limit, size + 1))


def _read_local(path: Path, limit: int = MAX_FILE_BYTES + 1) -> bytes:
    """A file of a tiled log's folder (to audit it, or one an export wrote before: the
    checkpoint, a tile), at most ``limit`` bytes, opened without blocking (`read_tile_file`: a FIFO there held the reader in open() for good, and a
    link to /dev/zero was read without end). Raises FileNotFoundError when it is not
    there, ConfigError for anything but a regular file or another OSError, naming it."""
    try:
        return read_tile_file(path, limit)
    except NotRegularFileError as e:
        raise ConfigError(f"{e}: a tiled log's folder holds only files") from e
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from e


def _tile_bound(path: str) -> tuple[int, str, str] | None:
    """For the tile or entry bundle at ``path``, the most bytes its file can hold
    (`tiles.file_bounds`: 8,192 for a full hash tile, not a full bundle's 16 MiB), the
    words refusing a file of the folder found past it, and what it is in words, for an
    answer of a server past its bound ("a tile of 256 hashes", `tiles.tile_said`); None for the
    checkpoint or any other path (`most_bytes`)."""
    try:
        bundle, tile = tiles.parse_path(path)
    except LogError:
        return None
    most = tiles.file_bounds(tile, bundle)[1]
    return (
        most,
        f"{path} is more than {most:,} bytes, and {tiles.file_bounds_said(tile, bundle)}:"
        f" the {'bundle' if bundle else 'tile'} was edited or replaced; it was read no further",
        tiles.tile_said(tile, bundle),
    )


def _served_too_large(url: str, a_tile: str, most: int, error: _TooLargeError) -> str:
    """Why the server's answer at ``url``, a tile or bundle (``a_tile``, `tiles.tile_said`) of at
    most ``most`` bytes, was refused past a bound (``error``): the cap that was passed,
    in words. Its gzip body as sent past `gzip_sent_bound`, it names that cap, the
    tile's own bound and what to do (before, every case named only the tile's bound:
    "the server sent more than a tile of 256 hashes can hold (8,192 bytes)" for a gzip
    body of 81,921 bytes)."""
    if error.inflated:
        return (
            f"the server's gzip of {url} inflates past {most:,} bytes, more than {a_tile}"
            " can hold; it was inflated no further"
        )
    if error.most == most:  # as sent, not gzip-encoded (or a cap the same as its bound)
        return (
            f"the server sent more than {a_tile} can hold ({most:,} bytes): {url}; it was"
            " read no further"
        )
    cap = (
        "twice that and 64 KiB"
        if error.most == 2 * most + GZIP_SLACK_BYTES
        else "the most any tiled-log file may be"
    )
    return (
        f"the server sent more than {error.most:,} bytes of gzip for {url}, the most taken"
        f" for {a_tile}, which can hold {most:,} bytes ({cap}: a tile's gzip is at most a"
        " few dozen bytes larger than the tile); it was read no further: the server pads"
        " its gzip, or sends no tile of this log there; tell its operator"
    )


def _dir_fetcher(root: Path) -> tiles.Fetch:
    def fetch(path: str) -> bytes:
        """The file ``path`` of the folder, read no further than its own bound and a
        byte: a tile's or bundle's by its path (`_tile_bound`; before, any tile
        file was read up to a full bundle's 16 MiB before the audit refused it), the
        checkpoint's `most_bytes`."""
        bound = _tile_bound(path)
        most = most_bytes(path) if bound is None else bound[0]
        try:
            data = _read_local(root / path, most + 1)
        except FileNotFoundError as e:
            raise TileMissingError(f"the tiled log in {root} has no {path}") from e
        if bound is not None and len(data) > most:
            raise LogIntegrityError(bound[1])
        return _read_bounded(data, path, most)

    return fetch


def _read_by_deadline(
    response: http.client.HTTPResponse, url: str, deadline_s: float, most: int
) -> bytes:
    """The body of ``response``, read within ``deadline_s`` seconds in all, and no more
    than ``most`` bytes and one. Raises TransportError past the deadline,
    LogIntegrityError over ``most`` (`_too_large`)."""
    deadline = time.monotonic() + deadline_s
    data = bytearray()
    while len(data) <= most:
        if time.monotonic() > deadline:
            raise TransportError(f"{url} took more than {deadline_s:g} s to arrive")
        chunk = response.read1(min(1 << 16, most + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    left = response.length  # what its Content-Length still announced, if it sent one
    if left and len(data) <= most:
        raise TransportError(
            f"{url} ended after {len(data)} of its {len(data) + left} bytes (the connection"
            " closed early); try again"
        )
    return _read_bounded(bytes(data), url, most)


def _fetch_failure(e: BaseException, url: str) -> str:
    """What a failed fetch of ``url`` says to a person: what happened, in words (never
    urllib's '<urlopen error [Errno 111] Connection refused>' or a Python class name)."""
    if isinstance(e, gzip.BadGzipFile | zlib.error | EOFError):
        return f"cannot fetch {url}: its gzip encoding is damaged"
    why = exchange_failure(e, FETCH_TIMEOUT_S)
    if isinstance(e, http.client.HTTPException) and not isinstance(e, ConnectionError):
        why += "; check that the URL is a tiled log's"
    return f"cannot fetch {url}: {why}"


def is_url_location(location: str) -> bool:
    """Whether the tiled log's ``location`` (``--tiles``) is taken for a URL rather than a
    folder: when it starts with a scheme and ``//`` (RFC 3986 section 3.1: letters,
    digits, ``+ - .``, then ``://``), or starts with a scheme and ``:`` or holds ``://``
    and no folder has that name (``http:host``, ``localhost:8080``, `` http://h/``: a
    URL `provenance.cli.urls.url_problem` says what is wrong with)."""
    scheme = url_scheme(location)
    if scheme is not None and location[len(scheme) + 1 :].startswith("//"):
        return True
    return (scheme is not None or "://" in location) and _folder_problem(location) is not None


def location_problem(location: str) -> str | None:
    """Why the tiled log's ``location`` (``--tiles``) names neither a URL prefix that can
    be fetched (`is_url_location`; then `provenance.cli.urls.url_problem` with
    `provenance.cli.urls.PREFIX`, quoted: "'URL': WHY") nor a folder; None when it names
    one. Reads the file system (whether a folder is there); raises nothing."""
    if is_url_location(location):
        problem = url_problem(location, PREFIX)
        return None if problem is None else url_refusal(location, problem)
    return _folder_problem(location)


def _folder_problem(location: str) -> str | None:
    """Why ``location`` names no folder, quoted (`quoted`: escaped, cut to 60 characters,
    its length then said), or None when it names one. A name the file system refuses
    to look up (``File name too long``) is said so, not raised."""
    try:
        if Path(location).is_dir():
            return None
    except OSError as e:
        return (
            f"{quoted(location)} is neither an http(s):// URL nor a folder that can be"
            f" looked at ({e.strerror})"
        )
    return f"{quoted(location)} is neither an http(s):// URL nor a folder"


def followed_url(url: str, target: str) -> str:
    """The URL urllib's redirect handler (`urllib.request.HTTPRedirectHandler`) follows
    from ``url`` when redirected to ``target`` (a Location header as http.client decodes
    it, ISO-8859-1), computed by its steps: the target split and put together again (so
    ``http:////HOST/x``, a path of ``//HOST/x``, becomes ``http://HOST/x``, an empty path
    ``/``), bytes outside the ASCII punctuation %-encoded, then joined to ``url``. What a
    redirect is checked as and named as is what is fetched. Raises ValueError where
    urllib's parser does ("Invalid IPv6 URL")."""
    parts = urllib.parse.urlparse(target)
    if not parts.path and parts.netloc:
        parts = parts._replace(path="/")
    rebuilt = urllib.parse.quote(
        urllib.parse.urlunparse(parts), encoding="iso-8859-1", safe=string.punctuation
    )
    return urllib.parse.urljoin(url, rebuilt)


class _WebOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handler, but a redirect off http(s) (``ftp://``, ``file://``,
    ``data:``) is refused naming its target: urllib itself follows one to ``ftp://``;
    and a redirect's own body is never read: urllib's handler read it whole
    (``fp.read()``) before following it, outside every bound here, so a server
    redirecting each file with a 12 MiB body had all of it read for each (an endless
    one for the file's whole deadline). ``target``: the URL the last redirect followed
    led to (None: none followed), which a failure there names (`_fetch_url`)."""

    def __init__(self) -> None:
        super().__init__()
        self.target: str | None = None

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
    ) -> http.client.HTTPResponse | None:
        """Follow the redirect as urllib does, if its target is an http(s) URL."""
        target = headers["location"] if "location" in headers else headers["uri"]
        if target is not None:
            try:
                newurl = followed_url(req.full_url, target)
                scheme = urllib.parse.urlsplit(newurl).scheme.lower()
            except ValueError as e:  # a target urllib cannot join: "Invalid IPv6 URL"
                newurl, scheme = target.strip(), "http"
                fault: str | None = clipped_line(str(e), SHOWN_TARGET_CHARS // 2)
            else:
                fault = url_problem(newurl, REDIRECT) if scheme in ("http", "https") else None
            if fault is not None:
                fp.close()
                raise TransportError(
                    f"cannot fetch {req.full_url}: it redirects to"
                    f" {clipped_line(newurl, SHOWN_TARGET_CHARS)}, which is no valid URL"
                    f" ({fault}); tell the server's operator"
                )
            if scheme not in ("http", "https"):
                fp.close()
                raise TransportError(  # its target cut: a server's line of up to 64 KiB
                    f"cannot fetch {req.full_url}: it redirects to"
                    f" {clipped_line(newurl, SHOWN_TARGET_CHARS)}, which is not"
                    " followed (a tiled log is fetched over only http:// and https://)"
                )
        fp.close()  # unread: its connection is dropped (urllib keeps none alive)
        self.target = newurl if target is not None else None
        followed: http.client.HTTPResponse | None = super().http_error_302(
            req, fp, code, msg, headers
        )
        return followed

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _CutHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection whose socket its `Cutoff` shuts down at the deadline, whose
    answer is read no further than its `wire_budget` (`metered_response`)."""

    def __init__(
        self, host: str, *, cutoff: Cutoff, most: int = MAX_FILE_BYTES, **kwargs: Any
    ) -> None:
        super().__init__(host, **kwargs)
        self._cutoff = cutoff
        self.response_class = metered_response(most)

    def connect(self) -> None:
        """Connect (over TLS, shake hands too), and hand the socket to the cutoff."""
        super().connect()
        if self.sock is not None:
            self._cutoff.watch(self.sock)


class _CutHTTPSConnection(_CutHTTPConnection, http.client.HTTPSConnection):
    """An HTTPS connection under a `Cutoff` once connected: its TLS handshake, which
    `http.client.HTTPSConnection.connect` makes, is bounded as a whole by the socket
    timeout (CPython's ssl gives the handshake one deadline; tests/test_c2pa_timestamp.py
    drips one a byte at a time)."""


class _CutHandler(urllib.request.AbstractHTTPHandler):
    """urllib's http:// and https:// handlers in one, each connection under one
    `Cutoff`."""

    def __init__(self, cutoff: Cutoff, most: int = MAX_FILE_BYTES) -> None:
        super().__init__()
        self._cutoff = cutoff
        self._most = most

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Open ``req`` on a connection the cutoff watches, its answer metered."""
        return self.do_open(
            functools.partial(_CutHTTPConnection, cutoff=self._cutoff, most=self._most), req
        )

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        """Open ``req`` over TLS (the default context, as urllib's own handler has when
        given none) on a connection the cutoff watches, its answer metered."""
        return self.do_open(
            functools.partial(_CutHTTPSConnection, cutoff=self._cutoff, most=self._most), req
        )

    http_request = https_request = urllib.request.AbstractHTTPHandler.do_request_


def _opener(
    cutoff: Cutoff, most: int = MAX_FILE_BYTES, redirects: _WebOnlyRedirects | None = None
) -> urllib.request.OpenerDirector:
    """urllib's opener for one file of a tiled log (of at most ``most`` bytes): http://
    and https:// only (no ftp, file or data handlers), ``redirects`` (a new
    `_WebOnlyRedirects` by default) in place of its redirect handler, and each connection (redirects too) under ``cutoff``, each
    answer read no further than its `wire_budget`."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        _CutHandler(cutoff, most),
        urllib.request.HTTPDefaultErrorHandler(),
        redirects or _WebOnlyRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


#: Bytes a gzip-encoded tile or bundle may take as sent beyond twice its own bound
#: (`gzip_sent_bound`): gzip's headers and stored blocks make a hash tile, whose hashes
#: do not compress, a few dozen bytes larger than it is.
GZIP_SLACK_BYTES = 64 * 1024


def gzip_sent_bound(most: int) -> int:
    """Most bytes read as sent of a gzip-encoded tile or bundle of at most ``most`` bytes
    inflated: twice that and `GZIP_SLACK_BYTES`, never more than `MAX_FILE_BYTES` (a
    full hash tile's 8,192 bytes: 81,920 sent; a full bundle: 16 MiB, as before for all)."""
    return min(2 * most + GZIP_SLACK_BYTES, MAX_FILE_BYTES)


def _url_fetcher(prefix: str, deadline_s: float = FILE_DEADLINE_S) -> tiles.Fetch:
    base = prefix.rstrip("/") + "/"

    def fetch(path: str) -> bytes:
        """The file ``path`` under the URL, read no further than its own bound and a
        byte, as sent and once inflated: a tile's or bundle's by its path (`_tile_bound`:
        8,192 bytes for a full hash tile; before, up to a full bundle's 16 MiB was taken
        for any tile), the checkpoint's `most_bytes`."""
        url = base + path
        bound = _tile_bound(path)
        most = most_bytes(path) if bound is None else bound[0]
        gzip_most = None if bound is None else gzip_sent_bound(most)
        with Cutoff(deadline_s) as cutoff:
            try:
                data = _fetch_url(url, cutoff, most, gzip_most)
            except _TooLargeError as e:
                if bound is None:
                    raise
                raise LogIntegrityError(_served_too_large(url, bound[2], most, e)) from e
            except TransportError:
                if cutoff.expired.is_set():
                    raise _late(url, deadline_s) from None
                raise
            if cutoff.expired.is_set():  # cut mid-body: what came is not the whole file
                raise _late(url, deadline_s)
            return data

    return fetch


def _late(url: str, deadline_s: float) -> TransportError:
    return TransportError(f"{url} took more than {deadline_s:g} s to arrive")


def _gunzip(data: bytes, url: str, most: int = MAX_FILE_BYTES, whole: bool = False) -> bytes:
    """The file at ``url`` from its gzip-encoded ``data``: every member of the stream
    (RFC 1952 2.2: a gzip file is a series of members, as a server flushing its
    compressor, concatenating files, or bgzip's 64 KiB blocks send; before, the first
    member alone was taken for the file, and a tile sent so was a LOG INTEGRITY FAILURE
    of an intact log), NUL padding after the last ignored (as gzip(1) does). Time and
    copying are linear in ``len(data)`` whatever the member count (`GZIP_FEED_BYTES`).
    Raises LogIntegrityError past ``most`` bytes inflated (inflating no further),
    TransportError for a stream cut short, zlib.error for bytes that are no gzip member.
    ``whole``: ``data`` is all the body its framing announced (a Content-Length, chunks),
    so a stream cut short was cut by the server, not by a connection closed early."""
    out = bytearray()
    view = memoryview(data)
    at = 0  # where the next member starts in data
    first, widest = GZIP_FEED_BYTES
    while True:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        feed = first
        while not inflate.eof:
            if at >= len(data):  # cut short: the server's or a network's, not the log's
                raise TransportError(_gzip_cut(url, len(data), whole))
            chunk = view[at : at + feed]
            at += len(chunk)
            out += inflate.decompress(chunk, most + 1 - len(out))
            if len(out) > most or inflate.unconsumed_tail:
                raise _too_large(url, most, inflated=True)
            feed = min(2 * feed, widest)
        at -= len(inflate.unused_data)  # the next member's start, given with this one's
        if at == len(data) or (data[at] == 0 and data.count(0, at) == len(data) - at):
            return bytes(out)  # the end, or NUL padding to it (counted once: a NUL
            # starts no member, so any other byte after one fails the next's header)


def _gzip_cut(url: str, sent: int, whole: bool) -> str:
    """Why the gzip stream of ``url`` (``sent`` bytes) ending before its end is no file:
    when it is the ``whole`` body its framing announced, the server (or a proxy) cut it,
    and a fetch again gets the same; else the connection may have closed early. (Before,
    the connection was said to have closed early, to try again, in either case.)"""
    if whole:
        return (
            f"cannot fetch {url}: its gzip stream ends before its end, though the server"
            f" sent the whole body it announced ({sent:,} bytes): the server, or a proxy"
            " on the way, cut it; try again later, or tell the server's operator"
        )
    return (
        f"cannot fetch {url}: its gzip stream ended before its end (the connection closed"
        " early); try again"
    )


def _server_says(error: urllib.error.HTTPError) -> str:
    """The first line of the body of the server's error answer ``error``, escaped and cut
    to `SHOWN_TARGET_CHARS` (`clipped_line`); "" when it has none, sent it encoded, or it
    cannot be read. At most 4 x `SHOWN_TARGET_CHARS` bytes of it are read. (`prov web`
    says why: "/tlog/tile/0/000 is damaged on this server: its file is 8,224 bytes, ...;
    try again later".)"""
    encoding = error.headers.get("Content-Encoding", "identity").strip().lower()
    if error.fp is None or encoding not in ("identity", ""):
        return ""
    try:
        head = error.read(4 * SHOWN_TARGET_CHARS)
    except (OSError, http.client.HTTPException):
        return ""
    line = head.decode("utf-8", "replace").split("\n", 1)[0].strip()
    return clipped_line(line, SHOWN_TARGET_CHARS) if line else ""


def _server_failed(url: str, code: int, reason: str, says: str) -> str:
    """The words for the server's failure (HTTP ``code`` ``reason``, 5xx) to serve ``url``,
    with what it ``says`` (`_server_says`) quoted, and to try again later, said once:
    left to the server's words when they end so (`prov web`'s do; before, the line said
    it twice)."""
    quoted = f" (the server says: {says})" if says else ""
    later = says.rstrip(" .!").lower().endswith("try again later")
    return (
        f"cannot fetch {url}: the server failed to serve it (HTTP {code} {reason}), its own"
        f" fault, not the log's{'' if later else '; try again later'}{quoted}"
    )


def _fetch_url(
    url: str, cutoff: Cutoff, most: int = MAX_FILE_BYTES, gzip_most: int | None = None
) -> bytes:
    """The file at ``url``, its connections under ``cutoff``, at most ``most`` bytes as
    sent and once inflated, or ``gzip_most`` (default ``most``) as sent when gzip-encoded
    (no more is read or inflated). Raises TileMissingError (404), TransportError,
    LogIntegrityError (too large)."""
    request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip, identity"})
    sent_most = most if gzip_most is None else gzip_most
    redirects = _WebOnlyRedirects()
    try:
        with _opener(cutoff, max(most, sent_most), redirects).open(
            request, timeout=FETCH_TIMEOUT_S
        ) as response:
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            if encoding == "x-gzip":  # the same as gzip (RFC 9110 8.4.1.3)
                encoding = "gzip"
            if encoding not in ("identity", "", "gzip"):
                # not asked for: its bytes are not the file's (a LOG INTEGRITY FAILURE of
                # an intact log, before); refused unread
                raise TransportError(
                    f"cannot fetch {url}: the server sent it in the encoding"
                    f" {encoding[:40]!r}, which was not asked for (only gzip or none)"
                )
            if encoding != "gzip":
                return _read_by_deadline(response, url, cutoff.seconds, most)
            data = _read_by_deadline(response, url, cutoff.seconds, sent_most)
            # framed by a Content-Length or chunks (all read, or an error was raised),
            # not by the connection's close
            whole = response.chunked or response.length is not None
            return _gunzip(data, url, most, whole)
    except OverBudget as e:
        raise TransportError(f"cannot fetch {url}: {e}") from None
    except urllib.error.HTTPError as e:
        at = _redirected_at(redirects)
        if e.code == 404:
            raise TileMissingError(f"the tiled log does not serve {url} (404){at}") from e
        if str(e.reason).startswith(_WebOnlyRedirects.inf_msg):  # urllib's, three lines
            raise TransportError(
                f"cannot fetch {url}: it redirects in a loop, or more than"
                f" {_WebOnlyRedirects.max_redirections} times"
            ) from e
        reason = clipped_line(str(e.reason), SHOWN_TARGET_CHARS)  # the server's words, cut
        if e.code >= 500:
            failed = _server_failed(url, e.code, reason, _server_says(e))
            raise TransportError(failed + at) from e
        raise TransportError(f"{url}: HTTP {e.code} {reason}{at}") from e
    except (urllib.error.URLError, OSError, http.client.HTTPException, zlib.error) as e:
        raise TransportError(_fetch_failure(e, url) + _redirected_at(redirects)) from e


def _redirected_at(redirects: _WebOnlyRedirects) -> str:
    """Where a failure happened when a redirect was followed, in words to append to its
    message (a 404 or 5xx there is the target's, not the server asked): "" when none
    was followed."""
    if redirects.target is None:
        return ""
    return f" (at {clipped_line(redirects.target, SHOWN_TARGET_CHARS)}, where it was redirected to)"


def fetcher(location: str, deadline_s: float = FILE_DEADLINE_S) -> tiles.Fetch:
    """A `tiles.Fetch` for a tiled log at an ``http://``/``https://`` prefix or a directory;
    each file over HTTP must arrive within ``deadline_s`` seconds (TransportError).

    The fetcher raises LogIntegrityError for a file the log must serve but does not (a
    missing file, HTTP 404, or one over its bound, `most_bytes`: 1 MiB for the
    checkpoint, read no further), TransportError when the
    server cannot be reached, ConfigError when a local file cannot be read. Raises
    ConfigError here when ``location`` is neither a URL nor an existing directory, or
    names no place a tiled log can be read from (`location_problem`).
    """
    if (problem := location_problem(location)) is not None:
        raise ConfigError(problem)
    if is_url_location(location):
        return _url_fetcher(location, deadline_s)
    return _dir_fetcher(Path(location))
