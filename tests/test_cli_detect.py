"""`prov detect` through a real server: a file that could not be scored gets its error
and no "advisory only" footer (the footer qualifies a score; before, it followed the
error as if one had been given)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from clients.cli import main as prov_main
from tests.conftest import SAMPLES, Cli

SAMPLE_NAMES = ("rocket.jpg", "chelsea.png")

FOOTER = "advisory only"


def test_an_error_alone_gets_no_advisory_footer(cli: Cli, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("caption: launch\n")
    rc, out, err = cli("detect", str(notes))
    assert rc == 1 and f"{notes}:" in err, (out, err)
    assert FOOTER not in out + err, out


def test_nothing_scored_exits_1(cli: Cli, tmp_path: Path) -> None:
    """A run that scored no file is not a success: this test server runs no detector, so
    each image is "not scored" and the command exits 1, saying so under the per-file lines
    (before: exit 0, as if every file had a score). `--json` exits the same."""
    photos = [Path(shutil.copy(SAMPLES / name, tmp_path / name)) for name in SAMPLE_NAMES]
    rc, out, err = cli("detect", *map(str, photos))
    assert rc == 1, (out, err)
    assert all(f"{p}: not scored: this server runs no detector" in out for p in photos), out
    assert "error: no file was scored (2 of 2 not scored)" in err, err
    rc, out, err = cli("detect", "--json", str(photos[0]))
    assert rc == 1 and json.loads(out)["results"][0]["available"] is False, (out, err)


def test_a_file_that_cannot_be_scored_here_exits_1_not_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov detect --local` (and `prov detector detect`, the same code) exits 1 when a
    file cannot be scored, as every command that could not do its work; 2 is for usage
    errors found before any work (before: 2, and an empty line where the advisory footer
    goes, with no score to qualify)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("caption: launch\n")
    capsys.readouterr()
    rc = prov_main(["detect", "--local", "--seed", "1", "--device", "cpu", str(notes)])
    cap = capsys.readouterr()
    assert rc == 1, (cap.out, cap.err)
    assert f"{notes}: " in cap.err and "error: no file was scored" in cap.err, cap.err
    assert cap.out == "", cap.out
    # a plain message after the file's name, as other commands print; no exception class
    # (before: "notes.txt: MediaError: unrecognized format: ...")
    said = " ".join(cap.err.split())  # Rich wraps at 80 columns
    assert f"{notes}: unrecognized format: looks like text" in said, said
    # a model that cannot load: one plain line too (before: "error: DetectorError: ...")
    rc = prov_main(["detect", "--local", "--model", "npr", str(notes)])
    said = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and said.startswith("error: model 'npr' needs its published checkpoint"), said
    assert "Error:" not in said, said


def test_an_empty_file_is_named_and_said_to_be_empty(cli: Cli, tmp_path: Path) -> None:
    """An empty (0-byte) file: its line names it and says it is empty and that there is
    nothing to score, asked of the server or run here (before: the server's "empty file:
    there is nothing to sign or verify [INVALID_ARGUMENT]", after an upload of nothing;
    --local: "MediaError: empty file")."""
    empty = tmp_path / "IMG_0001.jpg"
    empty.touch()
    for local in ([], ["--local", "--seed", "1", "--device", "cpu"]):
        rc, out, err = cli("detect", *local, str(empty))
        assert rc == 1, (local, out, err)
        assert f"{empty}: empty file (0 bytes): nothing to score\n" in err, (local, err)
        assert "sign or verify" not in err and "MediaError" not in err, (local, err)


def test_local_detection_keeps_the_server_s_decode_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov detect --local` decodes under the same budget as the server and `prov scan
    --detect` (`provenance.media.assets.detector_rgb`): a JPEG whose full-size decode needs
    more than 384 MiB (16 bytes a pixel: 6400x4800, 468 MiB) and a PNG whose decode does
    (16 with its PDQ hash: 6000x4500, 411 MiB) are not scored, with the reason, and a small one still is.
    Before (h-sign50), it decoded any image of up to 100 MP at full size: a 100 MP
    baseline JPEG peaked at 1.7 GB, as did a 10000x10000 progressive one."""
    big = tmp_path / "big.jpg"
    Image.new("RGB", (6400, 4800), (90, 120, 150)).save(big, "JPEG", quality=50)
    png = tmp_path / "big.png"
    Image.new("RGB", (6000, 4500), (90, 120, 150)).save(png, "PNG")
    small = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    capsys.readouterr()
    args = ["detect", "--local", "--json", "--seed", "1", "--device", "cpu"]
    rc = prov_main([*args, str(big), str(png), str(small)])
    got = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert rc == 1, got
    note = got["big.jpg"]["error"]
    assert "6400x4800 image at full size needs about 468 MiB" in note, note
    assert "decode budget of 384 MiB" in note, note
    note = got["big.png"]["error"]
    assert "image is 6000x4500: decoding it needs about 411 MiB" in note, note
    assert "band" in got["rocket.jpg"], got


def test_local_detection_reads_no_special_file_nor_an_oversized_one(tmp_path: Path) -> None:
    """`prov detector detect` and `prov detect --local` read each file through
    `provenance.cli.files.open_regular` and refuse an image over the image limit (256 MiB,
    `prov serve --max-image-mb`'s default) from its size, unread: each such file is named
    with why, the others are still scored, exit 1. Before, both read each
    file whole (``Path.read_bytes``): a FIFO held `prov detector detect` for good, a link to
    /dev/zero read until memory ran out (MemoryError at 2.9 GB under a 4 GB ulimit), and a
    2 GiB sparse image was read whole (2.4 GB peak RSS) and scored; `prov detect --local`
    stopped the whole run at a FIFO, scoring nothing. Real files, a real FIFO, the real
    `prov` in a child process."""
    import os
    import subprocess
    import sys

    from provenance.media.assets import DEFAULT_MAX_IMAGE_BYTES
    from tests.conftest import ROOT

    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    huge = tmp_path / "huge.jpg"  # a real JPEG, then a hole: sparse, no disk taken
    huge.write_bytes(photo.read_bytes())
    os.truncate(huge, DEFAULT_MAX_IMAGE_BYTES + 1)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    local = ("--seed", "1", "--device", "cpu")
    for command, files in (
        (("detector", "detect"), (fifo, zero, huge, photo)),
        (("detect", "--local"), (fifo, huge, photo)),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "clients.cli", *command, "--json", *local, *map(str, files)],
            capture_output=True,
            text=True,
            timeout=600,  # a safety net: before, the FIFO held it for good
            cwd=ROOT,
            env={**os.environ, "COLUMNS": "400"},
        )
        assert run.returncode == 1, (command, run.stdout, run.stderr)
        got = {Path(r["file"]).name: r for r in json.loads(run.stdout)["results"]}
        assert got[fifo.name]["error"] == f"{fifo} is a FIFO (named pipe), not a regular file"
        if zero in files:
            assert got[zero.name]["error"] == f"{zero} is a device, not a regular file", got
        assert got[huge.name]["error"] == (
            f"image is {DEFAULT_MAX_IMAGE_BYTES + 1} bytes;"
            f" the limit for images is {DEFAULT_MAX_IMAGE_BYTES} bytes"
        ), got
        assert "band" in got[photo.name] and "Traceback" not in run.stderr, (got, run.stderr)
