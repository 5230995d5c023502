"""A copy whose pixels are too flat for a perceptual hash (an all-black video, a blank
image) is UNSIGNED saying its pixels could not be searched, not that they were searched
and matched nothing (real server, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import Cli, write_video


def _verify(cli: Cli, path: Path) -> tuple[int, dict[str, object]]:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect", "--no-sidecar")
    assert out, err
    report: dict[str, object] = json.loads(out)
    return rc, report


def _one_flat_note(err: str, what: str) -> None:
    """`prov sign` of a file whose every perceptual hash is too flat says once, as a
    note (exit 0), that only exact copies will verify; before, it said nothing."""
    notes = [line for line in err.splitlines() if "too flat to tell copies apart" in line]
    assert len(notes) == 1, err
    assert notes[0].startswith("note: ") and what in notes[0], notes
    assert "only exact copies of this file will verify as signed" in notes[0], notes
    assert "re-encoded copies cannot be recognised" in notes[0], notes


def test_a_textured_image_is_signed_without_the_flat_note(enrolled: Cli, tmp_path: Path) -> None:
    signed = tmp_path / "noise.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), np.uint8)).save(signed)
    rc, _, err = enrolled("sign", str(signed))
    assert rc == 0, err
    assert "too flat" not in err, err


def test_a_reencoded_black_video_says_its_frames_could_not_be_searched(
    enrolled: Cli, tmp_path: Path
) -> None:
    black = [np.zeros((48, 64, 3), np.uint8)] * 3
    signed = tmp_path / "black.mp4"
    write_video(signed, black, fps=1, crf=30)
    rc, _, err = enrolled("sign", str(signed))
    assert rc == 0, err
    _one_flat_note(err, "every sampled frame is")
    copy = tmp_path / "copy.mp4"
    write_video(copy, black, fps=1, crf=40)
    assert copy.read_bytes() != signed.read_bytes()

    rc, report = _verify(enrolled, copy)
    assert (rc, report["status"]) == (11, "UNSIGNED")
    reasons = report["reasons"]
    assert isinstance(reasons, list)
    assert reasons[0] == "no signed claim in the log matches these bytes", reasons
    assert "or these pixels" not in " ".join(reasons)
    assert "every sampled frame is too flat" in reasons[1], reasons
    assert "near copies were not searched" in reasons[1], reasons
    rc, report = _verify(enrolled, signed)  # the signed bytes themselves still verify
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")


def test_a_blank_image_copy_says_its_pixels_could_not_be_searched(
    enrolled: Cli, tmp_path: Path
) -> None:
    signed = tmp_path / "blank.png"
    Image.new("RGB", (120, 90), (128, 128, 128)).save(signed)
    rc, _, err = enrolled("sign", str(signed))
    assert rc == 0, err
    _one_flat_note(err, "the image is")
    copy = tmp_path / "blank.jpg"
    Image.new("RGB", (120, 90), (128, 128, 128)).save(copy, quality=60)

    rc, report = _verify(enrolled, copy)
    assert (rc, report["status"]) == (11, "UNSIGNED")
    reasons = report["reasons"]
    assert isinstance(reasons, list)
    assert reasons[0] == "no signed claim in the log matches these bytes", reasons
    assert "the image is too flat" in reasons[1], reasons
