"""Video through the real CLI and server: a signed clip, re-encoded, trimmed, damaged,
truncated, padded and fake copies, each with the right verdict or error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from clients.api import ProvenanceClient
from provenance.core.claims import Verdict
from provenance.media.video.transcode import transcode
from tests.conftest import SAMPLES, Cli, ServerProc

CLIP = SAMPLES / "fabric_pattern.mp4"


def _verify(cli: Cli, path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect", *extra)
    assert out, err
    return rc, json.loads(out)


@pytest.fixture
def signed_clip(enrolled: Cli, tmp_path: Path) -> Path:
    clip = Path(shutil.copy(CLIP, tmp_path / "clip.mp4"))
    rc, out, err = enrolled("sign", str(clip))
    assert rc == 0 and "logged at leaf 1" in out, err  # leaf 0: the enrollment
    return clip


def test_signed_video_and_its_copies(signed_clip: Path, enrolled: Cli, tmp_path: Path) -> None:
    side = json.loads(Path(f"{signed_clip}.prov").read_text())
    assert side["chunkHashes"], "video sidecars list their chunk hashes"
    rc, report = _verify(enrolled, signed_clip)
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")
    claim = report["evidence"]["claim"]
    assert claim["media_type"] == "video/mp4" and 6.5 < claim["duration_seconds"] < 7.5
    # what the claim sampled: a long video's is sparser (the reason of a copy says it too)
    assert (claim["frames"], claim["frame_sample_rate"]) == (7, 1.0)
    rc, out, _ = enrolled("verify", str(signed_clip), "--json")  # detector asked, none running
    det = json.loads(out)["detector"]
    assert det["available"] is False and "timeline carries no scores" in det["note"]
    assert [f["score"] for f in det["timeline"]] == [None] * 7
    assert det["timeline"][1]["timestamp_seconds"] == 1.0

    small = tmp_path / "small.mp4"
    transcode(signed_clip, small, 180, 320, crf=34, encoder_options={"preset": "ultrafast"})
    rc, report = _verify(enrolled, small)
    assert (rc, report["status"]) == (10, "DERIVED")
    vm = report["evidence"]["video_match"]
    assert vm["matched"] and vm["coverage"] >= 0.5
    assert vm["original_start_s"] <= 1.0 and vm["original_end_s"] >= 5.5

    clip = tmp_path / "trimmed.mp4"
    transcode(
        signed_clip, clip, start_s=2.1, end_s=5.0, crf=23, encoder_options={"preset": "ultrafast"}
    )
    rc, report = _verify(enrolled, clip)
    assert (rc, report["status"]) == (10, "DERIVED")
    vm = report["evidence"]["video_match"]
    assert 1.5 <= vm["original_start_s"] <= 3.5 and 3.5 <= vm["original_end_s"] <= 5.5
    assert 1.5 <= vm["offset_seconds"] <= 2.7


def test_damaged_copies(
    signed_clip: Path, enrolled: Cli, tmp_path: Path, server: ServerProc
) -> None:
    sidecar = str(signed_clip) + ".prov"
    data = signed_clip.read_bytes()

    flipped = tmp_path / "flipped.mp4"
    at = len(data) // 2
    flipped.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :])
    rc, report = _verify(enrolled, flipped, "--sidecar", sidecar)
    assert (rc, report["status"]) == (13, "TAMPERED")
    ranges = report["evidence"]["damaged_ranges"]
    assert len(ranges) == 1
    assert ranges[0]["first_byte"] <= at <= ranges[0]["last_byte"]
    assert ranges[0]["last_byte"] - ranges[0]["first_byte"] + 1 <= 1 << 20

    padded = tmp_path / "padded.mp4"
    padded.write_bytes(data + b"\x00garbage appended" * 100)
    rc, report = _verify(enrolled, padded, "--sidecar", sidecar)
    assert (rc, report["status"]) == (13, "TAMPERED")
    assert report["evidence"]["damaged_ranges"][-1]["last_byte"] == len(padded.read_bytes()) - 1
    rc, report = _verify(enrolled, padded)  # no sidecar: the same frames, other bytes
    assert (rc, report["status"]) == (10, "DERIVED")

    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    rc, report = _verify(enrolled, truncated, "--sidecar", sidecar)
    assert (rc, report["status"]) == (13, "TAMPERED")
    # without it, judged on its bytes as `prov scan` judges it (before: INVALID_ARGUMENT)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 400)
    for damaged in (truncated, fake):
        with ProvenanceClient(server.address) as c:
            judged = c.verify_file(damaged)
        assert judged.status is Verdict.UNSIGNED, judged
        assert judged.reasons[-1].startswith("could not decode the video: "), judged
