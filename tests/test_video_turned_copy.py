"""A copy of a signed video that displays turned (a re-encoder dropped its rotation display
matrix, or turned or mirrored the pixels) is DERIVED from it, the report naming the turn,
as a turned copy of a photo is: the verifier hashes each sampled frame's 7 rotations and
mirror images too (`provenance.core.dihedral`). Real `prov serve`, real `prov sign`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from provenance.media.video.decode import sample_frames
from provenance.media.video.transcode import transcode
from tests.conftest import Cli, write_video

FAST = {"preset": "ultrafast"}


def _scenes(path: Path) -> None:
    """Six 1-second scenes of 128x96 blocky noise (distinct, not symmetric)."""
    rng = np.random.default_rng(47)
    tiles = [rng.integers(0, 256, (6, 8, 3), np.uint8) for _ in range(6)]
    write_video(path, (np.repeat(np.repeat(t, 16, 0), 16, 1) for t in tiles), crf=18)


def _display_rotation(path: Path) -> int:
    return sample_frames(path).rotation


def _turned(src: Path, dst: Path, turn: str) -> None:
    """Re-encode ``src`` (its frames as displayed, matrix applied) with the pixels turned."""
    frames = [f.rgb for f in sample_frames(src, keep_rgb_every=1, max_rgb_frames=99).frames]
    assert all(f is not None for f in frames)
    ops = {"mirror": np.fliplr, "rotate_180": lambda a: np.rot90(a, 2)}
    write_video(dst, (np.ascontiguousarray(ops[turn](f)) for f in frames if f is not None), crf=18)


def _verify(cli: Cli, path: Path) -> dict[str, object]:
    _, out, err = cli("verify", str(path), "--json", "--no-detect")
    assert out, err
    report: dict[str, object] = json.loads(out)
    return report


def test_turned_copies_of_a_signed_video_are_derived(enrolled: Cli, tmp_path: Path) -> None:
    plain = tmp_path / "plain.mp4"
    _scenes(plain)
    signed = tmp_path / "signed.mp4"  # stored turned, displayed upright by its matrix
    transcode(plain, signed, rotation=90, encoder_options=FAST, crf=18)
    assert _display_rotation(signed) == 90
    rc, _, err = enrolled("sign", str(signed))
    assert rc == 0, err
    assert _verify(enrolled, signed)["status"] == "SIGNED_ORIGINAL"

    dropped = tmp_path / "dropped.mp4"  # the stored pixels re-encoded, no matrix
    transcode(signed, dropped, encoder_options=FAST, crf=18)
    assert not _display_rotation(dropped)
    mirrored = tmp_path / "mirrored.mp4"
    _turned(signed, mirrored, "mirror")
    upside_down = tmp_path / "upside_down.mp4"
    _turned(signed, upside_down, "rotate_180")

    expected = {
        dropped: "rotated 90 degrees",
        mirrored: "mirrored left to right",
        upside_down: "rotated 180 degrees",
    }
    for copy, words in expected.items():
        report = _verify(enrolled, copy)
        reasons = report["reasons"]
        assert report["status"] == "DERIVED", (copy.name, reasons)
        assert isinstance(reasons, list)
        said = [r for r in reasons if r.startswith("as displayed, this file is the signed video")]
        assert len(said) == 1 and words in said[0], (copy.name, reasons)
