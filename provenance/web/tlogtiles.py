"""Read-only serving of a C2SP tlog-tiles directory (from `prov log export-tiles`).

Under ``/tlog/`` (the log's tiles prefix): ``checkpoint`` as ``text/plain; charset=utf-8``
with a few seconds of caching (tlog-tiles "Checkpoints": mutable), full tiles and entry
bundles ``tile/<L>/<N>`` / ``tile/entries/<N>`` as ``application/octet-stream``, cached
for a year and ``immutable`` (tlog-tiles "Merkle Tree", "Log entries"), partial tiles
``.../<N>.p/<W>`` for a minute (they are superseded by the full tile). A partial tile or
bundle the directory lacks is cut from the next wider one there, or the full one: the
export writes only the partial tiles of the sizes it exported, but tlog-tiles "Partial
Tiles" says "Logs MUST serve partial tiles corresponding to tree sizes for which a
checkpoint was produced", and the log signs a checkpoint per batch (receipts carry them);
the first ``W`` hashes or entries of a wider tile are the tile of width ``W``, since the
log only appends. A tile file whose size cannot be a tile of its path (`tiles.file_bounds`:
a hash tile of ``W`` hashes is ``W * 32`` bytes, a bundle of ``W`` entries ``2 * W`` to
``W * 65,537``; a bundle also by its length prefixes), or a wider one a tile is cut from
that is no tile of its width, is
damaged on the server: it is read no further than its bound and a byte, and answered 500
in words (`DamagedTileError`), logged at most every `DAMAGED_LOG_EVERY_S`; so is a
``checkpoint`` file that is there but no signed note (cut short, over a note's 1 MiB, no
regular file, unreadable: `_checkpoint_body`), and a tile path there that is no regular
file (a FIFO, a folder, a link to a device: never opened) or cannot be opened (a link that
loops: `_served_size`), and a partial tile to be cut from a wider one in a ``<N>.p``
folder that cannot be listed, with no full tile to cut it from (`_source`), while a file
not there is a 404. Before, it
was served whole, whatever its size (a 512 MiB file was read into memory and sent). Entry bundles
are gzipped for clients that accept it (tlog-tiles "Log entries": SHOULD be compressed),
up to `GZIP_MAX_BYTES` (a larger one, of large entries, is sent as it is: compressing it
at each request cost more CPU than it saved bytes). Only canonical
tile paths are answered (`provenance.log.tiles.parse_path`), so no other file of the
directory can be named; anything else is 404.

Each client (`provenance.core.fair_share.client_key`: an IPv4 address, an IPv6 /64) may
have `TILE_BYTES_PER_CLIENT` bytes of tiles in flight at once (`TileShares`), or one tile
of any size when it has none: a tile is in flight from its read until its socket has
taken all but the last of it (the body goes out in `SEND_CHUNK` pieces, each once the
socket's buffer has room). A request past that waits for the client's own tiles to go,
up to `TILE_WAIT_S`, then gets 429 with ``Retry-After: TILE_RETRY_AFTER_S``. So a client
(on any number of connections or addresses of its /64) has one share of the file workers,
of the sending and of the memory holding answers, however many tiles it asks for at once;
it does not bound how fast one client with a fast link fetches tile after tile.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from provenance.cli.files import open_regular_fd
from provenance.core.buckets import Every
from provenance.core.errors import LogError
from provenance.core.fair_share import client_key
from provenance.log import tiles
from provenance.log.checkpoint import MAX_NOTE_BYTES, Checkpoint, not_a_signed_note
from provenance.log.tiledir import (
    NotRegularFileError,
    OutsideFolderError,
    outside_folder,
    read_tile_file,
)

PREFIX = "/tlog"
"""URL prefix of the tiled log: ``/tlog/checkpoint``, ``/tlog/tile/...``."""

CHECKPOINT_CACHE = "public, max-age=5"
PARTIAL_CACHE = "public, max-age=60"
FULL_CACHE = "public, max-age=31536000, immutable"
#: A 404 is not kept by caches: a tile or checkpoint not there now is written as the log
#: grows (a client that read a newer checkpoint asks for it at once), and a cached 404,
#: even for the checkpoint's 5 s, would hide it; a 404 costs the server one failed open.
NOT_FOUND_CACHE = "no-store"


log = logging.getLogger(__name__)

#: Seconds between two log lines saying a tile file is damaged (`DamagedTileError`): a
#: client asking for it again and again does not flood the log.
DAMAGED_LOG_EVERY_S = 60.0


class DamagedTileError(Exception):
    """A tile file of the served folder that cannot be the tile its path names: its size
    is outside `tiles.file_bounds`, or a wider tile to cut a narrower one from is no tile
    of its width; or its checkpoint file, there but no signed note (`_checkpoint_body`).
    ``file``: the file; ``rel``: its path in the folder; ``what``: what is wrong with it,
    in words ("is 96 bytes, and a tile of 5 hashes is 160 bytes")."""

    def __init__(self, file: Path, rel: str, what: str) -> None:
        super().__init__(f"{file} {what}")
        self.file = file
        self.rel = rel
        self.what = what


def _check_size(file: Path, rel: str, size: int, tile: tiles.Tile, bundle: bool) -> None:
    """Raise DamagedTileError unless ``size`` bytes fit the file ``file`` of ``tile`` (its
    bundle when ``bundle``), at ``rel`` in the served folder (`tiles.file_bounds`); a size
    past the bound is said as "more than" it (a bounded read stops one byte past it)."""
    fewest, most = tiles.file_bounds(tile, bundle)
    if fewest <= size <= most:
        return
    said = f"{size:,} bytes" if size != most + 1 else f"more than {most:,} bytes"
    raise DamagedTileError(file, rel, f"is {said}, and {tiles.file_bounds_said(tile, bundle)}")


def _damaged(path: str, damage: DamagedTileError, gate: Every) -> Response:
    """500 for the tile (or checkpoint) at ``path`` whose file is damaged on the server
    (``damage``), logged unless ``gate`` had a line of its kind (tile, checkpoint) in the
    last `DAMAGED_LOG_EVERY_S`. A 500, not a 404: a client takes a 404 for a tile the log
    does not have (for a partial tile it tries the full one, then reports the log as
    failing to serve it; for the checkpoint, no tiled log at that place), and 200 with
    the file for the log's own failure (a tile of the wrong size); the file is the
    server's fault, to retry later, and no cache keeps the answer (``no-store``)."""
    kind = "checkpoint" if path == tiles.CHECKPOINT_PATH else "tile"
    if gate.due(f"damaged {kind}"):
        log.warning(
            "the %s file %s %s: answered 500 to GET /tlog/%s; delete it and run `prov log"
            " export-tiles` into the folder again to write it anew (one such line every"
            " %g s at most: `prov log audit --tiles` checks every file)",
            kind, damage.file, damage.what, path, DAMAGED_LOG_EVERY_S,
        )  # fmt: skip
    whose = "its file" if damage.rel == path else f"it is cut from {damage.rel}, whose file"
    return Response(
        f"/tlog/{path} is damaged on this server: {whose} {damage.what}; the server's"
        " operator is told so in its log; try again later\n",
        500,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": NOT_FOUND_CACHE},
    )


def _not_found(what: str) -> Response:
    return Response(
        f"{what} not found\n",
        404,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": NOT_FOUND_CACHE},
    )


#: Tile files read (and bundles compressed) at once, on worker threads; more wait.
FILE_WORKERS = 2


#: Largest entry bundle sent gzip-compressed, in bytes: a full bundle of large entries
#: (up to 16 MiB) took 0.38 s of CPU per request to compress, for 16% less to send.
GZIP_MAX_BYTES = 1 << 20


#: Tile bytes one client may have in flight at once (`TileShares`): 512 hash tiles, or a
#: few bundles of small entries; a larger tile (a bundle of large entries, up to 16 MiB)
#: is still served, alone.
TILE_BYTES_PER_CLIENT = 4 << 20
#: Seconds a request past its client's share waits for the share to come free before it
#: is refused (429): the client's tiles are then served one after another, and a client
#: that asks again at once costs a waiting connection (at most --connections-per-client
#: of them), not a refusal's work each time.
TILE_WAIT_S = 5.0
#: The ``Retry-After`` (seconds) of that 429.
TILE_RETRY_AFTER_S = 1
#: Bytes of a tile handed to the socket at a time; each piece waits while the socket's
#: buffer is full, so a client that reads slowly holds its own share, not the server's
#: memory and sending.
SEND_CHUNK = 256 * 1024


class TileShares:
    """Tile bytes in flight per client (keys: `client_key`), at most ``per_client``
    bytes each, or one tile of any size when the client has none in flight; a request
    past that waits up to ``wait`` seconds for the client's own tiles to be sent. For one
    event loop (no lock); a client is forgotten once it has nothing in flight nor
    waiting, so it holds one entry per client with a tile in flight or waiting. The JSON
    API counts each client's JSON bodies in memory with one too (`api.json_body`)."""

    def __init__(self, per_client: int = TILE_BYTES_PER_CLIENT, wait: float = TILE_WAIT_S) -> None:
        self.per_client = per_client
        self.wait = wait
        self._held: dict[str, int] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    def held(self, client: str) -> int:
        """Bytes ``client`` has in flight now."""
        return self._held.get(client, 0)

    def _fits(self, client: str, size: int) -> bool:
        held = self._held.get(client, 0)
        return not held or held + size <= self.per_client

    async def take(self, client: str, size: int) -> bool:
        """Count ``size`` more bytes in flight for ``client``, once that fits its share
        (waiting up to ``wait`` seconds for its tiles in flight to be sent); False
        (nothing counted) when it still does not fit then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        while not self._fits(client, size):
            left = deadline - loop.time()
            if left <= 0:
                return False
            waiter = loop.create_future()
            waiters = self._waiters.setdefault(client, [])
            waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                pass
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(client, None)
        self._held[client] = self._held.get(client, 0) + size
        return True

    def give(self, client: str, size: int) -> None:
        """Give back ``size`` bytes that `take` counted for ``client``, waking its
        requests that wait (each checks again whether it now fits)."""
        left = self._held.get(client, 0) - size
        if left > 0:
            self._held[client] = left
        else:
            self._held.pop(client, None)
        for waiter in self._waiters.get(client, ()):
            if not waiter.done():
                waiter.set_result(None)


class _ChunkedResponse(Response):
    """A `Response` whose body goes to the server in `SEND_CHUNK` pieces (uvicorn waits
    while its socket's buffer is full before taking each), calling ``done`` once all is
    sent, the client has gone or the sending failed."""

    def __init__(self, body: bytes, done: Callable[[], None], headers: dict[str, str]) -> None:
        super().__init__(body, media_type="application/octet-stream", headers=headers)
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code,
                 "headers": self.raw_headers}
            )  # fmt: skip
            body = bytes(self.body)
            for at in range(0, len(body), SEND_CHUNK):
                piece = body[at : at + SEND_CHUNK]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            self._done()


#: Content codings that are gzip (RFC 9110 section 8.4.1.3: x-gzip is the same).
_GZIP_NAMES = ("gzip", "x-gzip")


def _weight(params: list[str]) -> float:
    """The ``q`` weight among an Accept-Encoding element's ``params`` (1 when none; 0
    when malformed, as a weight that cannot be read accepts nothing)."""
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header value accepts gzip (RFC 9110 section
    12.5.3): ``gzip`` (or ``x-gzip``) with a weight above 0, or else ``*`` with one.
    A coding is its whole token, case-insensitive: ``gzip;q=0`` refuses gzip, and
    ``nogzip`` is another coding (before, any value holding the letters "gzip" was
    answered in gzip)."""
    named: float | None = None
    star: float | None = None
    for element in header.split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        if coding in _GZIP_NAMES:
            named = max(named or 0.0, _weight(params))
        elif coding == "*":
            star = _weight(params)
    if named is not None:
        return named > 0
    return star is not None and star > 0


def _refused(client: str, held: int, shares: TileShares) -> Response:
    """429 for a client whose tiles in flight (``held`` bytes) still filled its share
    after the wait."""
    return Response(
        f"{client} already has {held:,} bytes of tiles in flight, the most one client"
        f" (an IPv4 address, an IPv6 /64) may have at once ({shares.per_client:,} bytes,"
        f" or one tile of any size), and they were not sent within {shares.wait:g} s;"
        f" retry in {TILE_RETRY_AFTER_S} s\n",
        429,
        media_type="text/plain; charset=utf-8",
        headers={"Retry-After": str(TILE_RETRY_AFTER_S)},
    )


def _there(path: Path) -> bool:
    """Whether ``path`` names something in the served folder: False only when nothing is
    there (no such file, a link to nothing, a parent that is no folder); True for a path
    there that cannot be looked at (a link that loops, a folder that may not be entered),
    which is then the server's fault when served (`_served_size`), not a tile the log
    lacks. `Path.exists` took the looping link for nothing there and raised on the rest."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def _source(directory: Path, path: str, tile: tiles.Tile) -> tuple[Path, int]:
    """The file to serve the tile at ``path`` (its tile ``tile``) from, and its width:
    its own file, or for a partial tile the directory lacks, the narrowest wider partial
    one of the same index there, else the full one; whatever is at that path (`_there`:
    a FIFO, a folder, a link that loops, judged when it is served, `_served_size`).
    Raises FileNotFoundError when there is none; DamagedTileError when the folder of
    partial tiles ``<N>.p`` is there but cannot be listed (its mode, no descriptor left)
    and no full tile ``<N>`` is there to cut from: the server's fault, not a tile the log
    lacks (not a 404, as if it held none; and not a 500 beside a full tile, which holds
    the answer)."""
    own = directory / path
    if not tile.partial or _there(own):
        return own, tile.width
    folder = own.parent  # <N>.p
    wider = []
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):  # not there, or no folder: no wider
        names = []
    except OSError as e:  # the full tile, if there, still holds it (its first hashes)
        full = folder.with_name(folder.name.removesuffix(".p"))
        if _there(full):
            return full, tiles.TILE_WIDTH
        rel = folder.relative_to(directory).as_posix()
        raise DamagedTileError(
            own, path, f"cannot be looked for: {rel} cannot be listed ({e.strerror or e})"
        ) from e
    for name in names:
        if _WIDTH_RE.fullmatch(name) and tile.width < int(name) < tiles.TILE_WIDTH:
            wider.append(int(name))
    for width in sorted(wider):
        if _there(folder / str(width)):
            return folder / str(width), width
    full = folder.with_name(folder.name.removesuffix(".p"))
    if _there(full):
        return full, tiles.TILE_WIDTH
    raise FileNotFoundError(path)


_WIDTH_RE = re.compile(r"[1-9][0-9]{0,2}")


def _is_bundle(body: bytes, width: int) -> bool:
    """Whether ``body`` is exactly ``width`` entries, each a big-endian uint16 length and
    its bytes (tlog-tiles "Log entries"), walked by their length prefixes without copying
    any (at most 256 steps, also for a 16 MiB bundle)."""
    at = 0
    for _ in range(width):
        if at + 2 > len(body):
            return False
        at += 2 + int.from_bytes(body[at : at + 2], "big")
    return at == len(body)


def _prefix(body: bytes, source: tiles.Tile, keep: int, bundle: bool) -> bytes:
    """The first ``keep`` hashes (or entries, for a ``bundle``) of the tile ``source``,
    whose file is ``body`` (of a size `_check_size` took). Raises LogError when it is no
    such tile (a bundle whose entries do not fill it)."""
    if bundle:
        return tiles.encode_bundle(tiles.decode_bundle(body, source)[:keep])
    return b"".join(tiles.split_hashes(body, source)[:keep])


def _unservable(file: Path, rel: str, error: OSError) -> DamagedTileError:
    """The damage to say for the file ``file`` (at ``rel`` in the folder) that could not
    be opened or read: ``error``, neither "not there" nor "not a regular file"."""
    return DamagedTileError(file, rel, f"cannot be read ({error.strerror or error})")


def _served_size(file: Path, rel: str, within: Path) -> int:
    """The size in bytes of the regular file ``file`` (at ``rel`` in the served folder),
    judged by `open_regular_fd`, which opens nothing else for reading nor blocks, and
    closed again. Raises FileNotFoundError (or NotADirectoryError) when nothing is there
    (a 404); DamagedTileError when what is there is no regular file (a FIFO, a device, a
    folder: "is a FIFO (named pipe), not a regular file") or cannot be opened (a link
    that loops, a file the server may not read): the server's fault, a 500. Before, a
    FIFO, device or folder there was a 404, as a tile the log lacks, and a looping link
    starlette's bare 500 with a traceback. Raises OutsideFolderError when the regular
    file opened is outside the served folder ``within`` (a link leading out), before its
    size is judged: a 500 "its file is 1,000 bytes" told the client the size of any file
    a link led to."""

    def refuse(kind: str) -> DamagedTileError:
        return DamagedTileError(file, rel, f"is {kind}, not a regular file")

    try:
        fd, status = open_regular_fd(file, refuse)
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as e:
        raise _unservable(file, rel, e) from e
    try:
        real = outside_folder(fd, file, within)
    finally:
        os.close(fd)
    if real is not None:
        raise OutsideFolderError(file, real)
    return status.st_size


def _read_served(file: Path, rel: str, limit: int, within: Path) -> bytes:
    """At most ``limit`` bytes of the regular file ``file`` at ``rel`` in the served
    folder ``within`` (`read_tile_file`: opened without blocking, nothing else opened).
    Raises OutsideFolderError, reading nothing, when the file is outside that folder (a
    symbolic link leading out), FileNotFoundError (or NotADirectoryError) when nothing
    is there, DamagedTileError when what is there is no regular file or cannot be read
    (`_served_size`'s words)."""
    try:
        return read_tile_file(file, limit, within)
    except OutsideFolderError:
        raise
    except NotRegularFileError as e:  # "PATH is a FIFO (named pipe), not a regular file"
        raise DamagedTileError(file, rel, str(e).removeprefix(f"{file} ")) from e
    except (FileNotFoundError, NotADirectoryError):
        raise
    except OSError as e:
        raise _unservable(file, rel, e) from e


def _outside(what: str, error: OutsideFolderError, gate: Every) -> Response:
    """404 for ``what`` (a path under /tlog/) whose file leads outside the served folder
    (``error``): never read out, since a link there may lead anywhere the server can
    read; the real path goes to the log (unless ``gate`` had a line in the last
    `DAMAGED_LOG_EVERY_S`), never to the client."""
    if gate.due("outside"):
        log.warning(
            "%s: answered 404 to GET %s, not served; a tiles folder holds the files"
            " `prov log export-tiles` wrote, no links out of it (one such line every %g s"
            " at most)",
            error, what, DAMAGED_LOG_EVERY_S,
        )  # fmt: skip
    return _not_found(f"{what} (its file leads outside the tiles folder: not served)")


def _read(
    directory: Path,
    file: Path,
    rel: str,
    size: int,
    source: tiles.Tile,
    bundle: bool,
    keep: int,
    gzip_ok: bool,
) -> tuple[bytes, bool]:
    """The tile of width ``keep`` from the file ``file`` (at ``rel`` in the folder
    ``directory``, outside which nothing is read: `_read_served`) of the
    tile ``source`` (its entry bundle when ``bundle``; cut with `_prefix` when narrower),
    whose size was checked to be ``size`` bytes (`_check_size`, the client's share taken
    for it): read no further than that size and a byte, and served only if exactly
    ``size`` bytes came (before, it was read up to its bound and a byte, so a file that
    grew or shrank within its bound since its check was served at another size than its
    share counted, up to 16 MiB more in flight); gzip-compressed when ``gzip_ok`` and it
    is at most `GZIP_MAX_BYTES`; and whether it was. Raises DamagedTileError when the file
    is no tile ``source`` (by its size; a bundle also by its length prefixes, `_is_bundle`),
    changed size while it was read, is no regular file or cannot be
    read (`_read_served`), FileNotFoundError when it is gone, OutsideFolderError."""
    body = _read_served(file, rel, size + 1, directory)
    if len(body) != size:
        came = f"{len(body):,}" if len(body) <= size else f"more than {size:,}"
        raise DamagedTileError(
            file, rel, f"changed while it was read ({size:,} bytes, then {came} bytes)"
        )
    _check_size(file, rel, len(body), source, bundle)
    if bundle and keep == source.width and not _is_bundle(body, source.width):
        # of a size its bounds allow, but a byte added or cut: served 200 (a full one
        # cached for a year) before; one cut from is checked by `_prefix`
        raise DamagedTileError(
            file, rel, f"is not {tiles.entries_said(source.width, 'length-prefixed ')}, as"
            f" {tiles.tile_said(source, bundle)} is"
        )  # fmt: skip
    if keep != source.width:
        try:
            body = _prefix(body, source, keep, bundle)
        except LogError as e:
            raise DamagedTileError(file, rel, f"is no tile of width {source.width} ({e})") from e
    if gzip_ok and len(body) <= GZIP_MAX_BYTES:
        return gzip.compress(body, compresslevel=6, mtime=0), True
    return body, False


def _checkpoint_body(file: Path, within: Path) -> bytes:
    """The served folder's checkpoint file ``file``, read without blocking and no further
    than a signed note's `MAX_NOTE_BYTES` and a byte (before, a 256 MiB file was read
    whole on the event loop). Raises FileNotFoundError (or NotADirectoryError) when none
    is there (a 404: the log has not been exported yet), DamagedTileError when the file
    there is no signed note (`not_a_signed_note`: cut short, empty, over that bound) or
    its text no checkpoint (`Checkpoint.parse_body`: a size that is no number),
    no regular file (a FIFO, a folder), or cannot be read (a link that loops): the
    server's fault, a 500 as for a damaged tile. Before, each of these was a 404, as if
    the log were not there, the 200 of a note cut short, or starlette's bare 500 with a
    traceback. Raises OutsideFolderError, reading nothing, when the file is outside the
    served folder ``within`` (a symbolic link leading out: a 404, its real path logged,
    never told the client)."""
    rel = tiles.CHECKPOINT_PATH
    body = _read_served(file, rel, MAX_NOTE_BYTES + 1, within)
    if len(body) > MAX_NOTE_BYTES:
        raise DamagedTileError(
            file, rel, f"is more than the {MAX_NOTE_BYTES:,} bytes a signed note may hold"
        )
    if why := not_a_signed_note(body):
        raise DamagedTileError(file, rel, f"is no signed note ({why})")
    text = body.decode()  # UTF-8: `not_a_signed_note` decoded it
    try:  # its text (before the blank line), any log's: extension lines taken as opaque
        Checkpoint.parse_body(text[: text.rfind("\n\n") + 1], opaque_extensions=True)
    except LogError as e:  # served 200 before, and an audit's "does not verify", exit 3
        raise DamagedTileError(file, rel, f"is no checkpoint ({e})") from e
    return body


def routes(directory: Path, shares: TileShares | None = None) -> list[Route]:
    """Routes serving the tiled log in ``directory`` read-only (see module docstring).
    Tiles and bundles are read and compressed on at most `FILE_WORKERS` worker threads,
    the checkpoint read on as many more: nothing is
    read on the event loop; each client within its share of ``shares`` (default: a new
    `TileShares` of `TILE_BYTES_PER_CLIENT`)."""
    file_workers = anyio.CapacityLimiter(FILE_WORKERS)
    # threads of their own: a checkpoint read (a few hundred bytes) never waits behind
    # the compression of a 16 MiB bundle (0.3 s each) on the file workers
    checkpoint_workers = anyio.CapacityLimiter(FILE_WORKERS)
    shares = shares if shares is not None else TileShares()
    damaged_log = Every(DAMAGED_LOG_EVERY_S)

    async def checkpoint(request: Request) -> Response:
        try:  # up to 1 MiB: read on a worker thread as tiles are, not on the event loop
            body = await anyio.to_thread.run_sync(
                _checkpoint_body,
                directory / tiles.CHECKPOINT_PATH,
                directory,
                limiter=checkpoint_workers,
            )
        except OutsideFolderError as e:
            return _outside(f"{PREFIX}/checkpoint", e, damaged_log)
        except (FileNotFoundError, NotADirectoryError):
            return _not_found("checkpoint (the log has not been exported yet)")
        except DamagedTileError as e:
            return _damaged(tiles.CHECKPOINT_PATH, e, damaged_log)
        return Response(
            body,
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": CHECKPOINT_CACHE},
        )

    async def tile(request: Request) -> Response:
        path = "tile/" + request.path_params["rest"]
        try:
            bundle, parsed = tiles.parse_path(path)
        except LogError:
            return _not_found(f"/tlog/{path[:200]}")
        gzipped = bundle and accepts_gzip(request.headers.get("accept-encoding", ""))
        client = client_key(request.client.host) if request.client else ""
        try:
            file, width = _source(directory, path, parsed)
            rel = file.relative_to(directory).as_posix()
            source = tiles.Tile(parsed.level, parsed.index, width)
            size = _served_size(file, rel, directory)  # a FIFO, a device: damaged, unopened
            _check_size(file, rel, size, source, bundle)  # before its share is taken
        except OutsideFolderError as e:  # judged before its size: never told
            return _outside(f"{PREFIX}/{path}", e, damaged_log)
        except (FileNotFoundError, NotADirectoryError):
            return _not_found(f"/tlog/{path}")
        except DamagedTileError as e:
            return _damaged(path, e, damaged_log)
        if not await shares.take(client, size):
            return _refused(client, shares.held(client), shares)
        try:
            # off the event loop, a few at a time: a full bundle may be 16 MiB, and
            # compressing it took the loop 0.3 s, during which no other request of the
            # web front (pages, API, uploads) was answered
            body, gzipped = await anyio.to_thread.run_sync(
                _read,
                directory,
                file,
                rel,
                size,
                source,
                bundle,
                parsed.width,
                gzipped,
                limiter=file_workers,
            )
        except OutsideFolderError as e:
            shares.give(client, size)
            return _outside(f"{PREFIX}/{path}", e, damaged_log)
        except (FileNotFoundError, NotADirectoryError):
            shares.give(client, size)
            return _not_found(f"/tlog/{path}")
        except DamagedTileError as e:  # changed since its size was checked, no tile
            shares.give(client, size)
            return _damaged(path, e, damaged_log)
        except BaseException:
            shares.give(client, size)
            raise
        headers = {"Cache-Control": PARTIAL_CACHE if parsed.partial else FULL_CACHE}
        if bundle:
            headers["Vary"] = "Accept-Encoding"
            if gzipped:
                headers["Content-Encoding"] = "gzip"
        return _ChunkedResponse(body, lambda: shares.give(client, size), headers)

    return [
        Route(f"{PREFIX}/checkpoint", checkpoint, methods=["GET", "HEAD"]),
        Route(f"{PREFIX}/tile/{{rest:path}}", tile, methods=["GET", "HEAD"]),
    ]
