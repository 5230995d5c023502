"""The walk that bounds what the C2PA reader is given (`provenance.c2pa.container.
reader_walk_problem`: BMFF boxes, PNG and WebP chunks, TIFF IFDs) reads a file by
position (`provenance.core.files.FileView`), so a file cut short by another program
while it is walked is a clean error, never a crash by signal.

Before (walk54): `read_c2pa` mapped the file (``mmap``), and a file cut short meanwhile
killed the process with SIGBUS: a server on its own upload spool, `prov device export`
on the user's file. The child program `tests/cut_walk.py` pauses in the middle of the
walk, this test (another process) truncates the real file, and the walk goes on."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provenance.c2pa.container import (
    MAX_BMFF_BOXES,
    MAX_PNG_CHUNKS,
    MAX_TIFF_IFD_UNITS,
    MAX_WEBP_CHUNKS,
    reader_walk_problem,
)
from provenance.c2pa.reader import _opened, _walk_problem
from tests.conftest import FIXTURES, ROOT
from tests.test_bmff_boxes import _webp_with_chunks, _with_boxes
from tests.test_png_chunks import _chunk, _with_empty_chunks
from tests.test_tiff_ifds import _tiff

#: Bytes of each filler chunk or box: headers past the 64 KiB `FileView` keeps at once.
_FILLER = 256 * 1024
_CAPTURE = FIXTURES / "c2pa" / "generated" / "gen_ed25519_capture"
#: Media types by the walk each takes (`reader_walk_problem`).
WALKS = ("video/mp4", "image/png", "image/webp", "image/tiff")


def _png() -> bytes:
    """The generated C2PA PNG capture, 8 private chunks of `_FILLER` bytes after IHDR."""
    data = _CAPTURE.with_suffix(".png").read_bytes()
    after_ihdr = 8 + 12 + 13
    return data[:after_ihdr] + _chunk(b"prVt", bytes(_FILLER)) * 8 + data[after_ihdr:]


def _mp4() -> bytes:
    """The generated C2PA MP4 capture, 8 ``free`` boxes of `_FILLER` bytes after it."""
    free = struct.pack(">I4s", _FILLER, b"free") + bytes(_FILLER - 8)
    return _CAPTURE.with_suffix(".mp4").read_bytes() + free * 8


def _webp() -> bytes:
    """A 64x64 WebP, 8 ``JUNK`` chunks of `_FILLER` bytes after its image chunk."""
    body = _webp_with_chunks(0)[12:] + (struct.pack("<4sI", b"JUNK", _FILLER) + bytes(_FILLER)) * 8
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


#: name: (file bytes, media type), each read to its end by its walk.
_FILES = {
    "png": (_png, "image/png"),
    "mp4": (_mp4, "video/mp4"),
    "webp": (_webp, "image/webp"),
    "tiff": (lambda: _tiff(extra=15_000), "image/tiff"),  # a first IFD of 180 KB
}


def _walk_cut(how: str, path: Path, media_type: str) -> tuple[int, dict[str, Any] | None, str]:
    """(exit status, the JSON line said or None, stderr) of `tests/cut_walk.py` walking
    ``path`` as ``how`` says, the file cut to half its size (by this process) once the
    child has read 2 headers and asks for the third."""
    child = subprocess.Popen(  # pipes: stdout read line by line, then both communicated
        [sys.executable, "-m", "tests.cut_walk", how, str(path), media_type, "3"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    first = child.stdout.readline()
    if first == "walking\n":
        os.truncate(path, path.stat().st_size // 2)
        child.stdin.write("go on\n")
        child.stdin.flush()
    out, err = child.communicate(timeout=120)
    said = (first if first != "walking\n" else "") + out
    return child.returncode, json.loads(said) if said.strip() else None, err


@pytest.mark.parametrize("name", list(_FILES))
def test_a_file_cut_short_while_walked_is_a_clean_error(tmp_path: Path, name: str) -> None:
    """`read_c2pa` on a file cut to half while its boxes, chunks or IFD entries are
    walked: FileChangedError naming the file, how many of its bytes were left, and a
    public text without the path (a server's spool file); before, SIGBUS (-7)."""
    make, media_type = _FILES[name]
    data = make()
    path = tmp_path / f"upload.{name}"
    path.write_bytes(data)
    rc, said, err = _walk_cut("read_c2pa", path, media_type)
    assert rc == 0, (rc, said, err)
    assert said is not None and said.get("error") == "FileChangedError", (said, err)
    assert said["message"].startswith(f"{path} got shorter while it was read: "), said
    assert f"of its {len(data):,} bytes were there" in said["message"], said
    assert str(path) not in said["public"] and str(tmp_path) not in said["public"], said
    assert "got shorter while" in said["public"], said
    assert "Traceback" not in err, err


@pytest.mark.parametrize("name", list(_FILES))
def test_the_same_cut_under_a_mapping_is_a_sigbus(tmp_path: Path, name: str) -> None:
    """The harness does cut the file in the middle of the walk: the same walk over a
    mapping of the file, as `read_c2pa` made it before walk54, is killed by SIGBUS."""
    make, media_type = _FILES[name]
    path = tmp_path / f"upload.{name}"
    path.write_bytes(make())
    rc, said, err = _walk_cut("mapped", path, media_type)
    assert rc == -signal.SIGBUS, (rc, said, err)


def _walked_files(tmp_path: Path) -> list[Path]:
    """Every file of the shared C2PA fixtures and of the c2pa_strip fuzz regressions,
    and files at and over each walk's limit (the only ones it refuses)."""
    made = {
        "boxes-at-limit.mp4": _with_boxes(MAX_BMFF_BOXES),
        "boxes-over-limit.mp4": _with_boxes(MAX_BMFF_BOXES + 1),
        "chunks-at-limit.png": _with_empty_chunks(MAX_PNG_CHUNKS - 3),
        "chunks-over-limit.png": _with_empty_chunks(MAX_PNG_CHUNKS),
        "chunks-at-limit.webp": _webp_with_chunks(MAX_WEBP_CHUNKS - 1),
        "chunks-over-limit.webp": _webp_with_chunks(MAX_WEBP_CHUNKS + 1),
        "ifds-over-limit.tiff": _tiff(extra=MAX_TIFF_IFD_UNITS),
        "subifds.tiff": _tiff(subifds=3, sub_entries=10),
        "bigtiff.tiff": _tiff(subifds=3, sub_entries=10, big=True),
        **{name: make() for name, (make, _) in _FILES.items()},
    }
    for name, data in made.items():
        (tmp_path / name).write_bytes(data)
    shared = [p for p in sorted((FIXTURES / "c2pa").rglob("*")) if p.is_file()]
    fuzzed = sorted((ROOT / "tests" / "data" / "fuzz" / "c2pa_strip").iterdir())
    return [*shared, *fuzzed, *(tmp_path / name for name in made)]


def test_the_walk_by_position_says_what_the_walk_of_the_bytes_says(tmp_path: Path) -> None:
    """For every file below and every walk, `read_c2pa`'s walk of the path (by position)
    gives what the walk of the file's bytes gives; each limit is met at least once."""
    refused = set()
    for path in _walked_files(tmp_path):
        data = path.read_bytes()
        for media_type in WALKS:
            with _opened(str(path)) as view:
                said = _walk_problem(view, media_type)
            assert said == reader_walk_problem(data, media_type), (path, media_type)
            if said is not None:
                refused.add(media_type)
    assert refused == set(WALKS), refused
