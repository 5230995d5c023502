"""Review of the embedded-claim check (h-design31): a claim embedded in a file's C2PA
manifest is checked as a sidecar only where a sidecar would be, and never turns off a
search the file would otherwise get."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provenance.c2pa.authority import init_authority, issue_device_certificate
from provenance.c2pa.writer import embed_manifest
from provenance.core.claims import Claim, HardBinding
from provenance.core.keys import DeviceKey
from provenance.media.video.transcode import transcode
from provenance.wire.sidecar import Sidecar, encode_sidecar
from tests.conftest import SAMPLES, Cli, sign_claim

CLIP = SAMPLES / "fabric_pattern.mp4"


def _verify(cli: Cli, path: Path) -> dict[str, Any]:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect")
    assert out, err
    report: dict[str, Any] = json.loads(out)
    return report


def test_a_stranger_claim_embedded_in_a_trimmed_clip_does_not_hide_its_original(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A trimmed copy of a signed clip reads DERIVED (the dense frame pass finds it). The
    same copy carrying a C2PA manifest whose claim is signed by a key this log does not
    know (anyone can make one) read UNSIGNED: the embedded claim stood in for a sidecar
    and a sidecar turned the dense pass off. The claim proves nothing here (it is not
    used), so the verdict must be the one the copy gets without it."""
    clip = Path(shutil.copy(CLIP, tmp_path / "clip.mp4"))
    rc, _, err = enrolled("sign", str(clip))
    assert rc == 0, err
    trimmed = tmp_path / "desk" / "trimmed.mp4"
    trimmed.parent.mkdir()
    transcode(
        clip, trimmed, start_s=2.1, end_s=5.0, crf=23, encoder_options={"preset": "ultrafast"}
    )
    assert _verify(enrolled, trimmed)["status"] == "DERIVED"

    stranger = DeviceKey.generate()  # enrolled nowhere
    claim = Claim(
        device_id=stranger.key_id,
        sequence=1,
        captured_at=datetime.now(UTC),
        media_type="video/mp4",
        size_bytes=trimmed.stat().st_size,
        hard_binding=HardBinding(sha256=b"\x01" * 32),
    )
    sidecar = Sidecar(sign_claim(stranger, claim), stranger.public_key)
    ca = init_authority(tmp_path / "ca", now=datetime.now(UTC))
    chain = issue_device_certificate(
        ca, stranger.public_key, stranger.key_id.hex(), now=datetime.now(UTC)
    )
    planted = tmp_path / "desk" / "planted.mp4"
    embed_manifest(
        trimmed, planted, "video/mp4", stranger, chain, json.loads(encode_sidecar(sidecar)), None
    )
    report = _verify(enrolled, planted)
    assert report["evidence"]["claim_embedded"] is True
    assert report["status"] == "DERIVED", report["reasons"]
    assert any("a key this log does not know" in r for r in report["reasons"])
    rc, _, err = enrolled(
        "scan", str(planted.parent), "--report", str(tmp_path / "scan.jsonl"), "--workers", "0"
    )
    assert rc == 0, err
    rows = [json.loads(x) for x in (tmp_path / "scan.jsonl").read_text().splitlines()]
    assert {Path(r["path"]).name: r["status"] for r in rows} == {
        "trimmed.mp4": "DERIVED",
        "planted.mp4": "DERIVED",
    }
