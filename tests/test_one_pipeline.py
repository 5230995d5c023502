"""One verification pipeline (`provenance.server.pipeline`) behind every entry point: the same
file gets the same status from `prov verify` (VerifyFile), `prov scan` (Lookup, then
VerifyFile for what a lookup cannot decide) and the in-process API; and nothing optional
(the detector, a malformed or unrelated sidecar) can block or change the cryptographic
verdict (issue 11, "a verdict always")."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clients.api import ProvenanceClient, Query
from clients.cli import main as prov_main
from provenance.core.binding import PerceptualHash
from provenance.core.claims import SignedClaim, Verdict
from provenance.media.video.transcode import transcode
from provenance.server.pipeline import VerificationPipeline
from provenance.server.rpc import ServerConfig, create_server
from provenance.wire.contract import DENSE_PASS_NEEDS_BYTES
from tests.conftest import ADMIN_TOKEN, PASSPHRASE, SAMPLES
from tests.inproc import Device, InProc, make_claim, sign

PHOTO = SAMPLES / "grace_hopper.jpg"
OTHER_PHOTO = SAMPLES / "rocket.jpg"
CLIP = SAMPLES / "fabric_pattern.mp4"


@dataclass
class Served:
    """The in-process service behind a real gRPC server on a loopback port."""

    inproc: InProc
    pipeline: VerificationPipeline
    address: str
    client: ProvenanceClient


@pytest.fixture
def served(inproc: InProc) -> Iterator[Served]:
    config = ServerConfig(admin_token=ADMIN_TOKEN)
    server, port = create_server("127.0.0.1:0", inproc.service, config)
    address = f"127.0.0.1:{port}"
    client = ProvenanceClient(address)
    yield Served(inproc, VerificationPipeline(inproc.service, config.inspect), address, client)
    client.close()
    server.stop(None)


def _resized_png(src: Path, dst: Path, scale: float = 0.5) -> Path:
    im = Image.open(src).convert("RGB")
    im.resize((int(im.width * scale), int(im.height * scale))).save(dst, "PNG")
    return dst


def _garbage_sidecar(dev: Device) -> SignedClaim:
    good = dev.next_claim()
    return replace(good, claim_bytes=b"\xff\xfe not a claim \x00\x01")


# ---------------------------------------------------------------- issue 11: a verdict always


def test_issue11_medium_garbage_sidecar_beside_a_logged_original_still_gets_its_verdict(
    served: Served,
) -> None:
    dev = served.inproc.enroll()
    served.inproc.log_file(dev, PHOTO)
    garbage = _garbage_sidecar(dev)
    local = served.pipeline.verify_file(PHOTO, garbage)
    assert local.status is Verdict.SIGNED_ORIGINAL
    assert "cannot be read" in local.reasons[-1] and "not used" in local.reasons[-1]
    # the same through the VerifyFile RPC, with chunk hashes asking for a chunked upload
    remote = served.client.verify_file(PHOTO, garbage, chunk_hashes=[b"\x00" * 32])
    assert remote.status is Verdict.SIGNED_ORIGINAL
    assert any("cannot be read" in r for r in remote.reasons)


def test_a_garbage_sidecar_beside_an_unsigned_file_gives_the_verdict_without_it(
    served: Served,
) -> None:
    dev = served.inproc.enroll()
    r = served.pipeline.verify_file(PHOTO, _garbage_sidecar(dev))
    assert r.status is Verdict.UNSIGNED and "not used" in r.reasons[-1]


def test_issue11_medium_unrelated_valid_sidecar_keeps_a_resized_copy_derived(
    served: Served, tmp_path: Path
) -> None:
    dev = served.inproc.enroll()
    served.inproc.log_file(dev, PHOTO)
    other, _ = served.inproc.log_file(dev, OTHER_PHOTO)  # validly signed and logged
    copy = _resized_png(PHOTO, tmp_path / "copy.png")
    alone = served.pipeline.verify_file(copy)
    assert alone.status is Verdict.DERIVED
    with_other = served.pipeline.verify_file(copy, other)
    assert with_other.status is Verdict.DERIVED
    assert with_other.evidence.claim is not None and alone.evidence.claim is not None
    assert with_other.evidence.claim.claim == alone.evidence.claim.claim
    assert with_other.evidence.sidecar_present
    assert "different picture" in with_other.reasons[-1]
    assert served.client.verify_file(copy, other).status is Verdict.DERIVED


def test_an_unrelated_sidecar_beside_an_unsigned_picture_is_still_tampered(
    served: Served, tmp_path: Path
) -> None:
    """The sidecar says it describes this file; nothing logged is near these pixels, so
    the mismatch is the only evidence there is."""
    dev = served.inproc.enroll()
    other, _ = served.inproc.log_file(dev, OTHER_PHOTO)
    r = served.pipeline.verify_file(PHOTO, other)
    assert r.status is Verdict.TAMPERED and "a different picture" in r.reasons[-1]


def test_an_edited_copy_with_its_own_sidecar_is_tampered_not_derived(
    served: Served, tmp_path: Path
) -> None:
    dev = served.inproc.enroll()
    own, _ = served.inproc.log_file(dev, PHOTO)
    copy = _resized_png(PHOTO, tmp_path / "copy.png")
    r = served.pipeline.verify_file(copy, own)
    assert r.status is Verdict.TAMPERED and "a close copy with edits" in r.reasons[-1]


# ---------------------------------------------------------------- what a lookup lacks


def _frames(n: int) -> tuple[PerceptualHash, ...]:
    return tuple(PerceptualHash("pdq", os.urandom(32), 100, float(i)) for i in range(n))


def test_a_lookup_says_which_evidence_needs_the_bytes(served: Served) -> None:
    dev = served.inproc.enroll()
    served.inproc.submit(
        sign(dev.key, make_claim(dev.key, 1, media_type="video/mp4", duration_seconds=1.0))
    )
    video = Query("clip.mp4", os.urandom(32), _frames(5), "video/mp4")
    photo = Query("c2pa.jpg", os.urandom(32), (), "image/jpeg", os.urandom(32))
    got = dict(served.client.lookup([video, photo]))
    assert got["clip.mp4"].status is Verdict.UNSIGNED
    assert any(r.startswith(DENSE_PASS_NEEDS_BYTES) for r in got["clip.mp4"].reasons)
    assert any("Content Credentials" in r for r in got["c2pa.jpg"].reasons)
    assert not any(r.startswith(DENSE_PASS_NEEDS_BYTES) for r in got["c2pa.jpg"].reasons)


def test_a_lookup_of_a_video_says_nothing_when_no_video_is_logged(served: Served) -> None:
    got = served.client.lookup([Query("clip.mp4", os.urandom(32), _frames(5), "video/mp4")])
    assert got[0][1].reasons == ("no signed claim in the log matches these bytes or these pixels",)


# ---------------------------------------------------------------- the detector never blocks


@pytest.fixture(scope="module")
def real_detector() -> Any:
    from detector.infer import Detector
    from detector.serving import ServerDetector

    return ServerDetector(Detector.load(device="cpu", secret=b"\x07" * 32))


@pytest.mark.slow
def test_issue11_high4_detector_cannot_block_the_verdict_of_a_1x1_png_or_a_32x32_mp4(
    served: Served, real_detector: Any, tmp_path: Path
) -> None:
    dev = served.inproc.enroll()
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(tiny)
    clip = tmp_path / "tiny.mp4"
    transcode(CLIP, clip, 32, 32, end_s=2.0, encoder_options={"preset": "ultrafast"})
    pipe = replace(served.pipeline, detector=real_detector)
    for path in (tiny, clip):
        served.inproc.log_file(dev, path)
        r = pipe.verify_file(path, detect=True)
        assert r.status is Verdict.SIGNED_ORIGINAL, (path, r.reasons)
        assert r.detector is not None and r.detector["available"] is False
        assert r.detector["note"].startswith("not scored:") and "64" in r.detector["note"]
    # a real photo is still scored, and a score never changes a status: an unsigned photo
    # stays UNSIGNED, a signed generated image stays SIGNED_ORIGINAL
    photo = pipe.verify_file(PHOTO, detect=True)
    assert photo.status is Verdict.UNSIGNED and photo.detector is not None
    assert 0.0 <= photo.detector["score"] <= 1.0
    generated = SAMPLES / "generated_controlnet.png"
    served.inproc.log_file(dev, generated)
    made = pipe.verify_file(generated, detect=True)
    assert made.status is Verdict.SIGNED_ORIGINAL and made.detector is not None
    assert 0.0 <= made.detector["score"] <= 1.0  # its band does not matter here


def test_a_server_without_a_detector_says_so_and_keeps_the_verdict(served: Served) -> None:
    dev = served.inproc.enroll()
    served.inproc.log_file(dev, PHOTO)
    r = served.client.verify_file(PHOTO, detect=True)
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.detector is not None and r.detector["available"] is False


# ---------------------------------------------------------------- same status everywhere


@dataclass
class Prov:
    """`prov` in this process, pointed at the in-process server."""

    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str]:
        self.capsys.readouterr()
        rc = prov_main(list(args))
        out, err = self.capsys.readouterr()
        assert rc in (0, 10, 11, 12, 13), err
        return rc, out


@pytest.fixture
def prov(
    served: Served,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Prov:
    monkeypatch.setenv("PROV_HOME", str(tmp_path / "device"))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PROV_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("PROV_SERVER", served.address)
    p = Prov(capsys)
    p("device", "init")
    _, token = p("admin", "enroll-token")
    p("device", "enroll", "--token", token.strip())
    return p


@pytest.mark.slow
def test_a_trimmed_clip_and_a_reencoded_photo_read_the_same_everywhere(
    served: Served, prov: Prov, tmp_path: Path
) -> None:
    signed = tmp_path / "signed"
    signed.mkdir()
    photo = Path(shutil.copy(PHOTO, signed / "photo.jpg"))
    clip = Path(shutil.copy(CLIP, signed / "clip.mp4"))
    prov("sign", str(photo), str(clip))
    copies = tmp_path / "copies"
    copies.mkdir()
    buf = io.BytesIO()
    Image.open(photo).convert("RGB").save(buf, "JPEG", quality=60)
    (copies / "photo-q60.jpg").write_bytes(buf.getvalue())
    transcode(
        clip,
        copies / "trimmed.mp4",
        start_s=2.1,
        end_s=5.0,
        crf=23,
        encoder_options={"preset": "ultrafast"},
    )
    names = ["photo-q60.jpg", "trimmed.mp4"]

    verified = {}
    for n in names:
        _, out = prov("verify", str(copies / n), "--json", "--no-detect")
        verified[n] = json.loads(out)["status"]
    report = tmp_path / "scan.jsonl"
    prov("scan", str(copies), "--report", str(report), "--workers", "0")
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    scanned = {Path(r["path"]).name: r["status"] for r in rows}
    in_process = {n: served.pipeline.verify_file(copies / n).status.value for n in names}
    expected = {n: "DERIVED" for n in names}
    assert verified == expected
    assert scanned == expected
    assert in_process == expected


@pytest.mark.slow
def test_the_scanner_uploads_only_what_a_lookup_cannot_decide(
    served: Served, prov: Prov, tmp_path: Path
) -> None:
    """A photo is decided from its hashes; a video the log cannot match from 1 Hz hashes
    while video claims are logged goes through VerifyFile (here: a random clip, UNSIGNED
    either way, whose row then carries no 'needs the bytes' reason)."""
    dev = served.inproc.enroll()
    served.inproc.submit(
        sign(dev.key, make_claim(dev.key, 1, media_type="video/mp4", duration_seconds=1.0))
    )
    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(OTHER_PHOTO, folder / "photo.jpg")
    transcode(
        CLIP, folder / "other.mp4", 64, 64, end_s=1.0, encoder_options={"preset": "ultrafast"}
    )
    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as z:
        z.write(folder / "other.mp4", "archived.mp4")
    report = tmp_path / "scan.jsonl"
    prov(
        "scan", str(folder), str(tmp_path / "clips.zip"), "--report", str(report), "--workers", "0"
    )
    rows = {
        r["path"].rsplit("/", 1)[-1].rsplit("!", 1)[-1]: r
        for r in map(json.loads, report.read_text().splitlines())
    }
    assert rows["photo.jpg"]["status"] == "UNSIGNED"
    video = rows["other.mp4"]
    assert video["status"] == "UNSIGNED"
    assert not any(r.startswith(DENSE_PASS_NEEDS_BYTES) for r in video["reasons"])
    # an archive entry cannot be uploaded: its row says what the lookup could not check
    archived = rows["archived.mp4"]
    assert archived["status"] == "UNSIGNED" and "frames not sampled" in archived["note"]
    assert any(r.startswith(DENSE_PASS_NEEDS_BYTES) for r in archived["reasons"])


# ---------------------------------------------------------------- errors at their source


def test_an_unavailable_c2pa_reader_cannot_block_the_verdict(served: Served) -> None:
    from provenance.c2pa.pool import ReaderPool
    from provenance.media.inspect import InspectConfig

    dev = served.inproc.enroll()
    served.inproc.log_file(dev, PHOTO)
    pool = ReaderPool(workers=1)
    pool.close()  # a reader that cannot run (ConfigError inside)
    pipe = replace(served.pipeline, inspect=InspectConfig(c2pa_pool=pool))
    r = pipe.verify_file(PHOTO)
    assert r.status is Verdict.SIGNED_ORIGINAL
    assert r.c2pa is not None and r.c2pa["error_kind"] == "Unavailable"


def test_a_logged_claim_whose_device_row_vanished_is_a_log_integrity_error(
    served: Served,
) -> None:
    """The fault is the database's: DATA_LOSS (LogIntegrityError), never NOT_FOUND as if the
    file named an unknown device."""
    import sqlite3

    from provenance.core.errors import LogIntegrityError

    dev = served.inproc.enroll()
    served.inproc.log_file(dev, PHOTO)
    with sqlite3.connect(served.inproc.db) as c:
        c.execute("DELETE FROM devices")
    with pytest.raises(LogIntegrityError, match="missing from the registry"):
        served.pipeline.verify_file(PHOTO)
    with pytest.raises(Exception, match="missing from the registry") as e:
        served.client.verify_file(PHOTO)
    assert getattr(e.value, "code", "") == "DATA_LOSS"


def test_an_unreadable_file_is_a_media_error(served: Served, tmp_path: Path) -> None:
    from provenance.core.errors import MediaError

    with pytest.raises(MediaError, match="cannot read"):
        served.pipeline.verify_file(tmp_path / "missing.jpg")


def test_issue11_medium_prov_verify_of_a_logged_original_with_a_garbage_payload_sidecar(
    prov: Prov, tmp_path: Path
) -> None:
    import base64

    photo = Path(shutil.copy(PHOTO, tmp_path / "photo.jpg"))
    prov("sign", str(photo))
    side = Path(f"{photo}.prov")
    doc = json.loads(side.read_text())
    doc["payload"] = base64.b64encode(b"\x0a\xff garbage \x00").decode()
    side.write_text(json.dumps(doc))
    rc, out = prov("verify", str(photo), "--json", "--no-detect")
    report = json.loads(out)
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")
    assert any("cannot be read" in r for r in report["reasons"])
