"""`prov scan`, `prov sign` and the server sample a video's frames under one cap on the
number of 1 Hz samples (`provenance.core.claims.MAX_SOFT_BINDINGS`), so a video one of
them hashes the others hash too: a real 61-minute video (32x32 at 1 fps, 3,700 frames)
through scan's measure and through the server's inspection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clients.scan.hashing import measure
from clients.scan.sources import FileItem
from provenance.core.claims import MAX_SOFT_BINDINGS
from provenance.media.assets import AssetLimits
from provenance.media.inspect import InspectConfig, Upload, inspect_upload
from tests.conftest import write_video

#: One frame a second for 61 minutes 40 s: more than the hour scan capped at before
SECONDS = 3700


@pytest.fixture(scope="module")
def hour_long(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v") / "hour.mp4"
    rng = np.random.default_rng(11)
    tiles = [rng.integers(0, 256, (32, 32, 3), np.uint8) for _ in range(8)]
    write_video(path, (tiles[i % len(tiles)] for i in range(SECONDS)), fps=1, crf=30)
    return path


def test_scan_hashes_the_frames_the_server_hashes(hour_long: Path) -> None:
    """Before, scan sampled at most 3,600 frames (the decoder's default) where `prov
    sign` and the server take 4,096: this video's row was 'more than 3600 frames would
    be sampled at 1 Hz (a video longer than 3,600 s): looked up by SHA-256 only', kind
    file, while the server hashed its 3,700 frames."""
    assert SECONDS <= MAX_SOFT_BINDINGS
    size = hour_long.stat().st_size
    row = measure(FileItem("hour.mp4", str(hour_long), size), AssetLimits())
    cfg = InspectConfig()
    with Upload(cfg.limits.max_bytes) as upload:
        upload.write(hour_long.read_bytes())
        server = inspect_upload(upload, cfg, False).facts.soft_bindings
    assert row.note is None or "looked up by SHA-256 only" not in row.note, row.note
    assert row.kind == "media"
    assert len(server) == SECONDS
    assert row.soft == server
