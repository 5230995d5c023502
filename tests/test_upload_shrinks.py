"""A file cut short while it is uploaded (a camera or a copy still writing it, a log
rotation) is said to have got shorter, naming how much of it was sent: not the server's
"truncated upload", which reads as a network fault. A real `prov serve` on a real port,
the real client; the file is cut from the upload's own progress callback, so the cut
comes at a known point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from provenance.wire.contract import UPLOAD_CHUNK_BYTES
from tests.conftest import SAMPLES, ServerProc


def test_a_file_cut_short_while_it_is_sent_says_it_got_shorter(
    server: ServerProc, tmp_path: Path
) -> None:
    """(h-att45c: before, "truncated upload: the header announced 4,271,365 bytes,
    1,572,864 arrived [INVALID_ARGUMENT]", the server's words for a client that sent less
    than it announced.)"""
    photo = tmp_path / "growing.jpg"
    photo.write_bytes((SAMPLES / "rocket.jpg").read_bytes() + bytes(4 * UPLOAD_CHUNK_BYTES))
    size = photo.stat().st_size
    cut_at = UPLOAD_CHUNK_BYTES + UPLOAD_CHUNK_BYTES // 2

    def cut(sent: int, total: int) -> None:
        if sent == UPLOAD_CHUNK_BYTES:  # the first chunk taken: cut the rest short
            os.truncate(photo, cut_at)

    with ProvenanceClient(server.address) as client, pytest.raises(TransportError) as caught:
        client.verify_file(photo, progress=cut)
    said = str(caught.value)
    assert said == (
        f"{photo} got shorter while it was sent ({cut_at:,} of its {size:,} bytes were"
        " read): it is being written or was cut; send it again once it is complete"
    ), said
