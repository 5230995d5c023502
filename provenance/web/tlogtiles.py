"""Read-only serving of a C2SP tlog-tiles directory (from `prov log export-tiles`).

Under ``/tlog/`` (the log's tiles prefix): ``checkpoint`` as ``text/plain; charset=utf-8``
with a few seconds of caching (tlog-tiles "Checkpoints": mutable), full tiles and entry
bundles ``tile/<L>/<N>`` / ``tile/entries/<N>`` as ``application/octet-stream``, cached
for a year and ``immutable`` (tlog-tiles "Merkle Tree", "Log entries"), partial tiles
``.../<N>.p/<W>`` for a minute (they are superseded by the full tile). Entry bundles
are gzipped for clients that accept it (tlog-tiles "Log entries": SHOULD be compressed),
up to `GZIP_MAX_BYTES` (a larger one, of large entries, is sent as it is: compressing it
at each request cost more CPU than it saved bytes). Only canonical
tile paths are answered (`provenance.log.tiles.parse_path`), so no other file of the
directory can be named; anything else is 404.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provenance.core.errors import LogError
from provenance.log import tiles

PREFIX = "/tlog"
"""URL prefix of the tiled log: ``/tlog/checkpoint``, ``/tlog/tile/...``."""

CHECKPOINT_CACHE = "public, max-age=5"
PARTIAL_CACHE = "public, max-age=60"
FULL_CACHE = "public, max-age=31536000, immutable"


def _not_found(what: str) -> Response:
    return Response(f"{what} not found\n", 404, media_type="text/plain; charset=utf-8")


#: Tile files read (and bundles compressed) at once, on worker threads; more wait.
FILE_WORKERS = 2


#: Largest entry bundle sent gzip-compressed, in bytes: a full bundle of large entries
#: (up to 16 MiB) took 0.38 s of CPU per request to compress, for 16% less to send.
GZIP_MAX_BYTES = 1 << 20


def _read(path: Path, gzip_ok: bool) -> tuple[bytes, bool]:
    """The file at ``path``, gzip-compressed when ``gzip_ok`` and it is at most
    `GZIP_MAX_BYTES`; and whether it was. Raises OSError."""
    body = path.read_bytes()
    if gzip_ok and len(body) <= GZIP_MAX_BYTES:
        return gzip.compress(body, compresslevel=6, mtime=0), True
    return body, False


def routes(directory: Path) -> list[Route]:
    """Routes serving the tiled log in ``directory`` read-only (see module docstring).
    Tiles and bundles are read and compressed on at most `FILE_WORKERS` worker threads,
    never on the event loop."""
    file_workers = anyio.CapacityLimiter(FILE_WORKERS)

    async def checkpoint(request: Request) -> Response:
        try:
            body = (directory / tiles.CHECKPOINT_PATH).read_bytes()
        except FileNotFoundError:
            return _not_found("checkpoint (the log has not been exported yet)")
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
        gzipped = bundle and "gzip" in request.headers.get("accept-encoding", "")
        try:
            # off the event loop, a few at a time: a full bundle may be 16 MiB, and
            # compressing it took the loop 0.3 s, during which no other request of the
            # web front (pages, API, uploads) was answered
            body, gzipped = await anyio.to_thread.run_sync(
                _read, directory / path, gzipped, limiter=file_workers
            )
        except (FileNotFoundError, NotADirectoryError):
            return _not_found(f"/tlog/{path}")
        headers = {"Cache-Control": PARTIAL_CACHE if parsed.partial else FULL_CACHE}
        if bundle:
            headers["Vary"] = "Accept-Encoding"
            if gzipped:
                headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="application/octet-stream", headers=headers)

    return [
        Route(f"{PREFIX}/checkpoint", checkpoint, methods=["GET", "HEAD"]),
        Route(f"{PREFIX}/tile/{{rest:path}}", tile, methods=["GET", "HEAD"]),
    ]
