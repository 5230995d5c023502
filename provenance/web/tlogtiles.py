"""Read-only serving of a C2SP tlog-tiles directory (from `prov log export-tiles`).

Under ``/tlog/`` (the log's tiles prefix): ``checkpoint`` as ``text/plain; charset=utf-8``
with a few seconds of caching (tlog-tiles "Checkpoints": mutable), full tiles and entry
bundles ``tile/<L>/<N>`` / ``tile/entries/<N>`` as ``application/octet-stream``, cached
for a year and ``immutable`` (tlog-tiles "Merkle Tree", "Log entries"), partial tiles
``.../<N>.p/<W>`` for a minute (they are superseded by the full tile). Entry bundles
are gzipped for clients that accept it (tlog-tiles "Log entries": SHOULD be compressed). Only canonical
tile paths are answered (`provenance.log.tiles.parse_path`), so no other file of the
directory can be named; anything else is 404.
"""

from __future__ import annotations

import gzip
from pathlib import Path

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


def routes(directory: Path) -> list[Route]:
    """Routes serving the tiled log in ``directory`` read-only (see module docstring)."""

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
        try:
            body = (directory / path).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return _not_found(f"/tlog/{path}")
        headers = {"Cache-Control": PARTIAL_CACHE if parsed.partial else FULL_CACHE}
        if bundle:
            headers["Vary"] = "Accept-Encoding"
            if "gzip" in request.headers.get("accept-encoding", ""):
                body = gzip.compress(body, compresslevel=6, mtime=0)
                headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="application/octet-stream", headers=headers)

    return [
        Route(f"{PREFIX}/checkpoint", checkpoint, methods=["GET", "HEAD"]),
        Route(f"{PREFIX}/tile/{{rest:path}}", tile, methods=["GET", "HEAD"]),
    ]
