"""`prov verify` and `prov scan` give a damaged file the same verdict: UNSIGNED (DESIGN.md,
"The verdict": nothing found), resting on its exact bytes, with a reason saying that its
pixels or frames could not be decoded and why, so near copies were not searched. Before,
`prov scan` said UNSIGNED ("looked up by SHA-256 only") and `prov verify` exited 1 with
"error: truncated or corrupt image: the JPEG data ends early [INVALID_ARGUMENT]" for the
same file. A real server, the real CLI."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

from detector.infer import Detector
from detector.serving import ServerDetector
from provenance.core.claims import Verdict
from provenance.media.inspect import Upload
from provenance.server.pipeline import VerificationPipeline
from tests.conftest import SAMPLES, Cli
from tests.inproc import InProc


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _damaged(folder: Path) -> dict[str, str]:
    """Damaged files written into ``folder``: name -> words their reason gives."""
    folder.mkdir()
    jpeg = (SAMPLES / "rocket.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:20_000])
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0))
    (folder / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + b"garbage" * 100)
    clip = (SAMPLES / "fabric_pattern.mp4").read_bytes()
    (folder / "truncated.mp4").write_bytes(clip[:30_000])
    return {
        "truncated.jpg": "the JPEG data ends early",
        "garbage.png": "the PNG data ends early",
        "truncated.mp4": "cannot open the mov container",
    }


def test_a_damaged_file_reads_unsigned_in_verify_and_scan(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "desk"
    damaged = _damaged(folder)
    report = tmp_path / "scan.jsonl"
    rc, out, err = cli("scan", str(folder), "--report", str(report), "--workers", "0")
    assert rc == 0, (out, err)
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    for name, why in damaged.items():
        assert rows[name]["status"] == "UNSIGNED", rows[name]
        rc, out, err = cli("verify", "--json", str(folder / name))
        assert rc == 11, (name, out, err)
        doc = json.loads(out)
        assert doc["status"] == rows[name]["status"] == "UNSIGNED", (name, doc)
        said = " ".join(doc["reasons"])
        assert "near copies were not searched" in said and why in said, (name, said)
        # only its bytes were looked up, and the reasons say no more, as scan's row does
        # (before: "no signed claim in the log matches these bytes or these pixels")
        assert doc["reasons"][0] == "no signed claim in the log matches these bytes", doc
        assert rows[name]["reasons"][0].startswith(doc["reasons"][0] + ";"), rows[name]
        assert "these pixels" not in said, (name, said)
        assert why in " ".join(rows[name]["reasons"]), rows[name]
        rc, out, err = cli("verify", "--no-detect", str(folder / name))
        assert rc == 11 and "UNSIGNED" in out and why in out, (name, out, err)
        assert "these pixels" not in out, (name, out)


def test_the_detector_block_of_a_damaged_image_says_its_pixels_are_missing(
    inproc: InProc, tmp_path: Path
) -> None:
    """With a detector (the shipped model, in-process), a damaged image's report says it
    was not scored because its pixels could not be decoded (before: "the detector scores
    images and video frames only", of a JPEG)."""
    damaged = _damaged(tmp_path / "desk")
    with Detector.load("default", device="cpu", secret=b"s" * 32) as d:
        pipe = VerificationPipeline(inproc.service, detector=ServerDetector(d))
        for name in ("truncated.jpg", "garbage.png"):
            with Upload(1 << 30) as upload:
                upload.write((tmp_path / "desk" / name).read_bytes())
                report = pipe.verify_upload(upload, detect=True)
            assert report.status is Verdict.UNSIGNED, report
            notes = report.evidence.file.notes  # the JSON's reasons end with them
            assert damaged[name] in " ".join(notes), report
            assert report.detector == {
                "available": False,
                "note": "not scored: its pixels could not be decoded (the reasons say why)",
            }, report.detector
