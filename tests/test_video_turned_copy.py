"""A copy of a signed video that displays turned (a re-encoder dropped its rotation display
matrix, or turned or mirrored the pixels) is DERIVED from it, the report naming the turn,
as a turned copy of a photo is: the verifier hashes each sampled frame's 7 rotations and
mirror images too (`provenance.core.dihedral`). Real `prov serve`, real `prov sign`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clients.api import ProvenanceClient, Query
from clients.report import report_to_json
from clients.scan.hashing import measure
from clients.scan.sources import FileItem
from clients.scan.worker import query
from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash
from provenance.core.errors import TransportError
from provenance.media.assets import AssetLimits
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


def _signed_and_copies(cli: Cli, folder: Path) -> dict[Path, str]:
    """Sign a video stored turned and displayed upright by its rotation matrix; return its
    copies that display turned, each with the words its report must name the turn in."""
    plain = folder / "plain.mp4"
    _scenes(plain)
    signed = folder / "signed.mp4"  # stored turned, displayed upright by its matrix
    transcode(plain, signed, rotation=90, encoder_options=FAST, crf=18)
    assert _display_rotation(signed) == 90
    rc, _, err = cli("sign", str(signed))
    assert rc == 0, err
    assert _verify(cli, signed)["status"] == "SIGNED_ORIGINAL"
    copies = folder / "copies"
    copies.mkdir()
    dropped = copies / "dropped.mp4"  # the stored pixels re-encoded, no matrix
    transcode(signed, dropped, encoder_options=FAST, crf=18)
    assert not _display_rotation(dropped)
    mirrored = copies / "mirrored.mp4"
    _turned(signed, mirrored, "mirror")
    upside_down = copies / "upside_down.mp4"
    _turned(signed, upside_down, "rotate_180")
    return {
        dropped: "rotated 90 degrees clockwise",
        mirrored: "mirrored left to right",
        upside_down: "rotated 180 degrees",
    }


def test_turned_copies_of_a_signed_video_are_derived(enrolled: Cli, tmp_path: Path) -> None:
    for copy, words in _signed_and_copies(enrolled, tmp_path).items():
        _derived_naming(_verify(enrolled, copy), copy.name, words)


def test_scan_finds_turned_copies_by_their_hashes(enrolled: Cli, tmp_path: Path) -> None:
    """`prov scan`'s Lookup carries each frame's turned hashes, so the hashes alone find a
    turned copy (no upload of the file), and the scan agrees with verify."""
    expected = _signed_and_copies(enrolled, tmp_path)
    limits = AssetLimits()
    queries = [query(measure(FileItem(p.name, str(p), p.stat().st_size), limits)) for p in expected]
    assert all(q.video_turned for q in queries)
    with ProvenanceClient(enrolled.server) as client:
        looked_up = dict(client.lookup(queries))
    report = tmp_path / "scan.jsonl"
    rc, _, err = enrolled(
        "scan", str(tmp_path / "copies"), "--report", str(report), "--workers", "0"
    )
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert set(rows) == {copy.name for copy in expected}, (rc, err, rows)
    for copy, words in expected.items():
        found = report_to_json(looked_up[copy.name])
        _derived_naming(found, f"lookup {copy.name}", words)
        _derived_naming(rows[copy.name], f"scan {copy.name}", words)


def _derived_naming(report: dict[str, object], name: str, words: str) -> None:
    reasons = report["reasons"]
    assert report["status"] == "DERIVED", (name, reasons)
    assert isinstance(reasons, list)
    said = [r for r in reasons if r.startswith("as displayed, this file is the signed capture")]
    assert len(said) == 1 and words in said[0], (name, reasons)


def test_a_lookup_with_malformed_turned_frame_hashes_is_refused_saying_why(
    enrolled: Cli, tmp_path: Path
) -> None:
    frame = PerceptualHash(PDQ_ALGORITHM, bytes(range(32)), 100, 0.0)
    sha = bytes(32)
    short = Query("short", sha, (frame,), "video/mp4", video_turned=bytes(32 * 6))
    photo = Query("photo", sha, (frame,), "image/jpeg", video_turned=bytes(32 * 7))
    with ProvenanceClient(enrolled.server) as client:
        answers = dict(client.lookup_each([short, photo]))
    for ref, words in {
        "short": "video_turned must hold 7 PDQ hashes of 32 bytes per frame of soft_bindings"
        " (1 frames: 224 bytes), got 192 bytes",
        "photo": "video_turned is for a video's frames, not for image/jpeg",
    }.items():
        error = answers[ref]
        assert isinstance(error, TransportError), (ref, error)
        assert error.code == "INVALID_ARGUMENT" and words in str(error), (ref, str(error))


def test_the_turned_hashes_leave_the_plain_ones_unchanged(tmp_path: Path) -> None:
    """What a signer hashes (no turns) is what a verifier's dihedral decode hashes first."""
    clip = tmp_path / "clip.mp4"
    _scenes(clip)
    plain, turned = sample_frames(clip), sample_frames(clip, dihedral=True)
    assert all(not f.turned for f in plain.frames)
    assert [f.pdq for f in turned.frames] == [f.pdq for f in plain.frames]
    assert all(len(f.turned) == 7 for f in turned.frames)
    assert all(h.timestamp_seconds == f.timestamp_seconds for f in turned.frames for h in f.turned)
