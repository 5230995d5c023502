"""End to end through the real CLI and a real `prov serve` process on loopback:
enroll, sign, verify every verdict, JSON output, exit codes."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

from PIL import Image

from tests.conftest import SAMPLES, Cli


def _reencode(src: Path, dst: Path, scale: float = 0.75, quality: int = 80) -> Path:
    img = Image.open(src).convert("RGB")
    img = img.resize((int(img.width * scale), int(img.height * scale)), Image.Resampling.LANCZOS)
    img.save(dst, "JPEG", quality=quality)
    return dst


def _edit_pixels(src: Path, dst: Path) -> Path:
    """A copy of ``src`` with a few pixels changed, saved in the same format."""
    img = Image.open(src).convert("RGB")
    for x in range(10, 20):
        img.putpixel((x, 10), (255, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    dst.write_bytes(buf.getvalue())
    return dst


def test_sign_and_verify_all_verdicts(enrolled: Cli, tmp_path: Path) -> None:
    photo = tmp_path / "hopper.jpg"
    shutil.copy(SAMPLES / "grace_hopper.jpg", photo)
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0, err
    assert "logged at leaf 1" in out  # leaf 0: the device's enrollment
    sidecar = json.loads(Path(str(photo) + ".prov").read_text())
    assert sidecar["receipt"], "the receipt is stored in the sidecar"

    rc, out, _ = enrolled("verify", str(photo), "--json", "--no-detect")
    report = json.loads(out)
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")
    assert report["evidence"]["claim"]["log"]["leaf_index"] == 1
    assert report["evidence"]["claim"]["signature_valid"] is True
    assert report["evidence"]["claim"]["receipt_verified"] is True

    # the same bytes without the sidecar are still found by their SHA-256
    bare = shutil.copy(photo, tmp_path / "bare.jpg")
    rc, out, _ = enrolled("verify", str(bare), "--json", "--no-detect")
    assert (rc, json.loads(out)["status"]) == (0, "SIGNED_ORIGINAL")

    derived = _reencode(photo, tmp_path / "derived.jpg")
    rc, out, _ = enrolled("verify", str(derived), "--json", "--no-detect")
    report = json.loads(out)
    assert (rc, report["status"]) == (10, "DERIVED")
    assert 0 <= report["evidence"]["pdq_distance"] <= 31

    tampered = _edit_pixels(photo, tmp_path / "tampered.jpg")
    rc, out, _ = enrolled(
        "verify", str(tampered), "--sidecar", str(photo) + ".prov", "--json", "--no-detect"
    )
    report = json.loads(out)
    assert (rc, report["status"]) == (13, "TAMPERED")
    assert report["evidence"]["hash_match"] is False

    unsigned = shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png")
    rc, out, _ = enrolled("verify", str(unsigned), "--json", "--no-detect")
    assert (rc, json.loads(out)["status"]) == (11, "UNSIGNED")

    rc, out, _ = enrolled("verify", str(photo), "--no-detect")
    assert rc == 0 and "SIGNED_ORIGINAL" in out and "leaf 1" in out
