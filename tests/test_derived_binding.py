"""A hostile or broken server must not make `prov verify` read an unrelated file as a copy
of a signed capture: a DERIVED verdict (or a near REVOKED_KEY) rests on the cited claim's
soft binding (PDQ of the photo, or of a video's sampled frames) being within the match
threshold of the file's own, and the client computes the file's hashes itself with the
server's code and checks it (`clients.derived`). A real `prov serve`, a real hostile gRPC
relay in front of it that swaps VerifyFile and Lookup answers (tests/test_cited_binding.py's
`_forger`), real files, the real CLI; an honest DERIVED through the real server still reads
DERIVED, exit 10."""

from __future__ import annotations

import hashlib
import json
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from clients.derived import NOT_CHECKED_HERE
from provenance.core.claims import MAX_SOFT_BINDINGS
from provenance.media.video.transcode import transcode
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import SAMPLES, Cli, ServerProc, relay, sign_sample, start_web, write_video
from tests.test_cited_binding import LOOKUP, _forger, _scan_here, _verify, server_answer

FAST = {"preset": "ultrafast"}


def _resized(photo: Path, out: Path, scale: float = 0.6, quality: int = 70) -> Path:
    """``photo`` resized by ``scale`` and re-encoded as JPEG at ``quality``, as `make demo`
    makes its DERIVED copy."""
    img = Image.open(photo).convert("RGB")
    size = (round(img.width * scale), round(img.height * scale))
    img.resize(size, Image.Resampling.LANCZOS).save(out, "JPEG", quality=quality)
    return out


def _forged_for(genuine: pb.VerificationReport, other: Path, status: int) -> bytes:
    """``genuine`` (a DERIVED answer) made the answer for ``other``: its file hash
    rewritten to ``other``'s (so the report names the bytes sent) and its status
    ``status``."""
    forged = pb.VerificationReport()
    forged.CopyFrom(genuine)
    forged.status = status  # type: ignore[assignment]
    forged.evidence.file_sha256 = hashlib.sha256(other.read_bytes()).digest()
    return bytes(forged.SerializeToString())


@pytest.mark.parametrize("status", ["DERIVED", "REVOKED_KEY"])
def test_a_derived_answer_for_an_unrelated_photo_is_refused(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: str,
) -> None:
    """The genuine DERIVED answer of a resized copy of the signed rocket photo, relayed as
    the answer for the unrelated cat photo (its own file hash, so only the soft binding
    can tell): refused, exit 3, naming the PDQ distance found (h-derived53: before, exit
    10, "DERIVED"; a near REVOKED_KEY, exit 12). The honest answer for the copy itself,
    through the same relay and through the real server, still reads DERIVED."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    copy = _resized(a, tmp_path / "rocket_small.jpg")
    cat = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    genuine = server_answer(server.address, copy)
    assert genuine.status == pb.DERIVED, genuine
    forged = _forged_for(genuine, cat, pb.Verdict.Value(status))
    for address in _forger(server.address, forged):
        for extra in ((), ("--json",)):
            rc, out, err = _verify(capsys, str(cat), "--server", address, *extra)
            assert rc == 3, (extra, rc, out, err)
            assert "SERVER EVIDENCE REFUSED:" in err and "Traceback" not in err, err
            assert f"answered {status}" in err and "bits (PDQ)" in err, err
            assert "past the match threshold of 31" in err, err
            if "--json" in extra:
                assert '"status": null' in out and "bits (PDQ)" in out, out
    honest = _forged_for(genuine, copy, pb.DERIVED)  # the copy's own answer, as it came
    for address in _forger(server.address, honest):
        rc, out, err = _verify(capsys, str(copy), "--server", address)
        assert rc == 10 and "DERIVED" in out, (rc, out, err)
    rc, out, err = _verify(capsys, str(copy), "--server", server.address)
    assert rc == 10 and "DERIVED" in out, (rc, out, err)


def test_an_honest_rotated_copy_still_reads_derived(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy turned 90 degrees and re-encoded matches through PDQ's dihedral hashes, as
    the server found it: the client's check tries the same 8 turns."""
    a, _ = sign_sample(enrolled, tmp_path, "grace_hopper.jpg")
    turned = tmp_path / "hopper_turned.jpg"
    Image.open(a).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(turned, quality=80)
    rc, out, err = _verify(capsys, str(turned), "--server", server.address, "--json")
    assert rc == 10, (rc, out, err)
    report = json.loads(out)
    assert report["status"] == "DERIVED" and report["evidence"]["pdq_transform"], report


def test_scan_gives_a_derived_lookup_answer_for_an_unrelated_photo_an_error_row(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov scan`'s Lookup answer DERIVED for the unrelated cat photo, citing the rocket
    photo's claim: its row has no status and names the distance; the scan's own hashes are
    used, nothing decoded again (h-derived53: before, a DERIVED row); the scan exits 3, as
    for any row whose server evidence was refused."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    copy = _resized(a, tmp_path / "rocket_small.jpg")
    folder = tmp_path / "photos"
    folder.mkdir()
    cat = Path(shutil.copy(SAMPLES / "chelsea.png", folder / "cat.png"))
    forged = _forged_for(server_answer(server.address, copy), cat, pb.DERIVED)
    report = tmp_path / "scan.jsonl"
    for address in _forger(server.address, forged):
        rc, out, err = _scan_here(capsys, folder, report, address)
        assert rc == 3, (rc, out, err)  # a refused row ends a complete scan with exit 3
        assert "SERVER EVIDENCE REFUSED" in err, err
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    [row] = [r for r in rows if r.get("path", "").endswith("cat.png")]
    assert row["status"] is None and row["evidence_checked"] == "refused", row
    assert "bits (PDQ)" in row["error"] and "answered DERIVED" in row["error"], row


def _unrelated_video(path: Path) -> Path:
    """A 4 s, 1 fps H.264 video of the cat photo panned: frames unrelated to the fabric's."""
    cat = np.asarray(Image.open(SAMPLES / "chelsea.png").convert("RGB"))
    frames = [np.ascontiguousarray(cat[:256, 20 * k : 20 * k + 256]) for k in range(4)]
    write_video(path, frames, fps=1, crf=23)
    return path


def test_a_derived_answer_for_an_unrelated_video_is_refused_and_honest_copies_pass(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The genuine DERIVED answer of a transcoded copy of the signed fabric video, relayed
    for an unrelated video: refused, exit 3, saying how many frames lined up (h-derived53:
    before, exit 10). The transcoded copy and a clip trimmed between the claim's 1 Hz
    samples (found by the server's dense pass, and checked here by the same pass) still
    read DERIVED through the real server."""
    video, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    small = tmp_path / "fabric_small.mp4"
    transcode(video, small, 180, 320, crf=34, encoder_options=FAST)
    trim = tmp_path / "fabric_trim.mp4"
    transcode(video, trim, 180, 320, start_s=2.1, end_s=5.0, crf=30, encoder_options=FAST)
    other = _unrelated_video(tmp_path / "cat.mp4")
    genuine = server_answer(server.address, small)
    assert genuine.status == pb.DERIVED, genuine
    for address in _forger(server.address, _forged_for(genuine, other, pb.DERIVED)):
        rc, out, err = _verify(capsys, str(other), "--server", address)
        assert rc == 3, (rc, out, err)
        assert "SERVER EVIDENCE REFUSED:" in err and "answered DERIVED" in err, err
        assert "sampled frames" in err and "bits (PDQ)" in err, err
    for copy in (small, trim):
        rc, out, err = _verify(capsys, str(copy), "--server", server.address)
        assert rc == 10 and "DERIVED" in out, (copy.name, rc, out, err)


def test_a_cited_claim_of_more_frames_than_any_claim_holds_is_refused_unmatched(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The genuine DERIVED answer of a transcoded copy of the signed fabric video, its
    cited claim padded with filler frames past `MAX_SOFT_BINDINGS` (more than any
    `prov sign` ever put in a claim, so no log holds it): refused, exit 3, naming the
    count, before any frame is compared. Each filler frame costs the client's comparison
    about 1.5 us per frame of the file per turn: 150,000 of them (what 8 MiB holds) kept a
    60-frame file's check busy 105 s (h-revnear53: before, accepted, exit 10)."""
    video, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    small = tmp_path / "fabric_small.mp4"
    transcode(video, small, 180, 320, crf=34, encoder_options=FAST)
    genuine = server_answer(server.address, small)
    assert genuine.status == pb.DERIVED, genuine
    claim = pb.Claim()
    claim.ParseFromString(genuine.evidence.claim.signed_claim.claim)
    filler = bytes(range(32))
    for k in range(MAX_SOFT_BINDINGS + 1 - len(claim.soft_bindings)):
        claim.soft_bindings.add(
            algorithm="pdq", hash=filler, quality=100, timestamp_seconds=1000.0 + k
        )
    forged = pb.VerificationReport()
    forged.CopyFrom(genuine)
    forged.evidence.claim.signed_claim.claim = claim.SerializeToString()
    for address in _forger(server.address, forged.SerializeToString()):
        rc, out, err = _verify(capsys, str(small), "--server", address)
        assert rc == 3, (rc, out, err)
        assert "SERVER EVIDENCE REFUSED:" in err and "answered DERIVED" in err, err
        assert f"{MAX_SOFT_BINDINGS + 1:,} soft bindings" in err, err


def _resized_midstream(
    path: Path, fps: int = 30, seconds: int = 60, first: tuple[int, int] = (1280, 720)
) -> Path:
    """A WebM (VP8) whose first frame is ``first`` (1280x720) and whose other frames are 64x64 blocks
    of noise (a keyframe of a new size one frame in): its header declares 1280x720, its
    1 Hz samples end at 64x64. The dense pass `clients.derived` sizes from that last
    sample (1,800 frames at 30 Hz) is over the sampled-pixel budget by the header's size
    (1,800 x 1280x720 = 1.66 G > 1.2 G pixels), so it cannot run here nor on any server
    (the same bounds, `provenance.media.inspect.resample_dense`); the 1 Hz pass can."""
    import av

    def packets(ctx: Any, frames: list[np.ndarray], start: int) -> list[Any]:
        out: list[Any] = []
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = start + i, Fraction(1, fps)
            out += ctx.encode(frame)
        return out + list(ctx.encode(None))

    rng = np.random.default_rng(54)
    width, height = first
    big = np.ascontiguousarray(np.repeat(rng.integers(0, 255, (height, 1, 3), np.uint8), width, 1))
    small = [
        np.ascontiguousarray(
            np.kron(rng.integers(0, 255, (8, 8, 3), np.uint8), np.ones((8, 8, 1), np.uint8))
        )
        for _ in range(fps * seconds - 1)
    ]
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        second = av.CodecContext.create("libvpx", "w")
        second.width, second.height, second.pix_fmt = 64, 64, "yuv420p"
        second.time_base, second.framerate = Fraction(1, fps), Fraction(fps)
        for packet in packets(stream.codec_context, [big], 0) + packets(second, small, 1):
            packet.stream = stream
            packet.time_base = packet.time_base or Fraction(1, fps)
            out.mux(packet)
    return path


def _fabric_derived_for(enrolled: Cli, server: ServerProc, tmp_path: Path, other: Path) -> bytes:
    """The real server's DERIVED answer for a transcoded copy of the signed fabric video,
    made the answer for ``other`` (`_forged_for`)."""
    video, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    small = tmp_path / "fabric_small.mp4"
    transcode(video, small, 180, 320, crf=34, encoder_options=FAST)
    genuine = server_answer(server.address, small)
    assert genuine.status == pb.DERIVED, genuine
    return _forged_for(genuine, other, pb.DERIVED)


def test_a_derived_answer_whose_dense_check_is_over_budget_is_refused_not_unchecked(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged DERIVED for a video whose 1 Hz frames, hashed here, do not line up with the
    cited claim's, and whose dense pass (run only because they do not) is over the
    decoding budget: refused, exit 3. The file is not over this client's limits (its
    1 Hz pass decoded it) and no server's dense pass could have found the match (its
    bounds are these), so the verdict is no service's honest word; `prov web` answers
    502. (h-revwebimg54: before, exit 10 "not checked here", pixels_checked false, and
    200 DERIVED on the page: the server chose, by its answer alone, to have the check
    skipped.)"""
    other = _resized_midstream(tmp_path / "resized.webm")
    for address in _forger(server.address, _fabric_derived_for(enrolled, server, tmp_path, other)):
        rc, out, err = _verify(capsys, str(other), "--server", address, "--json")
        assert rc == 3, (rc, out, err)
        assert "SERVER EVIDENCE REFUSED:" in err and "answered DERIVED" in err, err
        assert "dense frame pass" in err and "decoding budget" in err, err
        web = start_web(address)
        try:
            with httpx.Client(base_url=web.address, timeout=120) as http:
                files = {"file": (other.name, other.read_bytes())}
                r = http.post("/api/v1/verify", files=files, params={"detect": "0"})
                assert r.status_code == 502 and "dense frame pass" in r.text, r.text
        finally:
            web.stop()


def test_a_server_reason_cannot_set_pixels_checked(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pixels_checked`` is what this client did, not words of the server's: an honest
    DERIVED whose reasons a relay ends with this client's own "not checked here: ..."
    still reads checked (true), here and on the page, as the copy's pixels were hashed
    and matched here. (h-revwebimg54: before, false, read from the last reason's text.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    copy = _resized(a, tmp_path / "rocket_small.jpg")
    genuine = server_answer(server.address, copy)
    assert genuine.status == pb.DERIVED, genuine
    genuine.reasons.append(f"{NOT_CHECKED_HERE}: the server says so")
    for address in _forger(server.address, genuine.SerializeToString()):
        rc, out, err = _verify(capsys, str(copy), "--server", address, "--json")
        assert rc == 10, (rc, out, err)
        assert json.loads(out)["pixels_checked"] is True, out
        web = start_web(address)
        try:
            with httpx.Client(base_url=web.address, timeout=120) as http:
                files = {"file": (copy.name, copy.read_bytes())}
                r = http.post("/api/v1/verify", files=files, params={"detect": "0"})
                assert r.status_code == 200 and r.json()["pixels_checked"] is True, r.text
        finally:
            web.stop()


def test_a_derived_answer_for_a_video_over_the_decoding_budget_is_refused_not_unchecked(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged DERIVED for a video whose 1 Hz pass is over the decoding budget (its
    header declares 600 frames of 1920x1080 to sample: 1.24 G > 1.2 G pixels): refused,
    exit 3. A service's video bounds are these constants (`prov serve` has no flag for
    them), so no service decoded it to find a match; only a decoder out of memory here
    (an environment's limit) leaves the verdict marked not checked. (h-revwebimg54:
    before, exit 10 "not checked here ... the service may have been started with higher
    ones (`prov serve --max-megapixels`, ...)", flags that do not touch videos.)"""
    other = _resized_midstream(tmp_path / "long.webm", fps=1, seconds=600, first=(1920, 1080))
    for address in _forger(server.address, _fabric_derived_for(enrolled, server, tmp_path, other)):
        rc, out, err = _verify(capsys, str(other), "--server", address, "--json")
        assert rc == 3, (rc, out, err)
        assert "SERVER EVIDENCE REFUSED:" in err and "decoding budget" in err, err


def test_a_derived_answer_for_an_image_past_a_structure_limit_is_refused_not_unchecked(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forged DERIVED (the genuine answer of a resized copy of the signed rocket photo)
    for a PNG whose zTXt chunk inflates past 1 MiB: refused, exit 3. That limit is a
    constant of this code (`provenance.media.image.PNG_MAX_TEXT_CHUNK`, a
    StructureLimitError, as a JPEG's scan count is), which every service holds and no
    flag moves, so no service decoded it to find a match. (Since h-client58 made it a
    decoding limit: exit 10, "not checked here ... the service may have been started with
    higher ones (`prov serve --max-megapixels`, ...)", the forged verdict shown.)"""
    from tests.test_png_chunks import _TWO_MIB, _chunk, _with_chunks

    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    genuine = server_answer(server.address, _resized(a, tmp_path / "rocket_small.jpg"))
    assert genuine.status == pb.DERIVED, genuine
    other = tmp_path / "text.png"
    other.write_bytes(_with_chunks(b"", _chunk(b"zTXt", b"k\0\0" + _TWO_MIB)))
    for address in _forger(server.address, _forged_for(genuine, other, pb.DERIVED)):
        rc, out, err = _verify(capsys, str(other), "--server", address)
        assert rc == 3, (rc, out, err)
        assert "SERVER EVIDENCE REFUSED:" in err and "cannot be hashed here" in err, err
        assert "decompresses to more than 1 MiB" in err and "higher ones" not in err, err


def test_scan_refuses_a_lookup_answered_tampered_or_unsigned_citing_a_claim(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov scan`'s Lookup answered, by a relay holding the rocket photo's genuine claim,
    TAMPERED for the cat photo, UNSIGNED citing that claim for the generated image, and
    UNSIGNED listing it as also signed for the rocket's own bytes: none of which an honest
    service answers a lookup (`clients.cited.check_lookup_verdict`). Each row has no
    status, the refusal as its error, and the scan exits 3 (lookupcite60: before, rows
    TAMPERED and UNSIGNED with the claim shown). An unsigned photo's honest answer, through
    the same relay, is still an UNSIGNED row."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    genuine = server_answer(server.address, a)
    assert genuine.status == pb.SIGNED_ORIGINAL and genuine.evidence.HasField("claim"), genuine
    folder = tmp_path / "photos"
    folder.mkdir()
    cat = Path(shutil.copy(SAMPLES / "chelsea.png", folder / "cat.png"))
    made = Path(shutil.copy(SAMPLES / "generated_controlnet.png", folder / "made.png"))
    rocket = Path(shutil.copy(a, folder / "rocket_copy.jpg"))
    rng = np.random.default_rng(60)
    fresh = folder / "fresh.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(fresh)

    def forged(status: int, path: Path, also: bool = False) -> pb.VerificationReport:
        f = pb.VerificationReport()
        f.CopyFrom(genuine)
        f.status = status  # type: ignore[assignment]
        f.evidence.file_sha256 = hashlib.sha256(path.read_bytes()).digest()
        if also:
            f.evidence.other_claims.add().CopyFrom(genuine.evidence.claim)
            f.evidence.ClearField("claim")
        return f

    by_sha = {
        r.evidence.file_sha256: r
        for r in (
            forged(pb.TAMPERED, cat),
            forged(pb.UNSIGNED, made),
            forged(pb.UNSIGNED, rocket, also=True),
        )
    }

    def lookup(request: bytes, context: Any, forward: Any) -> bytes:
        asked = pb.LookupRequest.FromString(request)
        answer = pb.LookupResponse.FromString(forward(request))
        for q, result in zip(asked.queries, answer.results, strict=True):
            if q.sha256 in by_sha:
                result.report.CopyFrom(by_sha[q.sha256])
        return bytes(answer.SerializeToString())

    report = tmp_path / "scan.jsonl"
    with relay(server.address, {LOOKUP: lookup}) as address:
        rc, out, err = _scan_here(capsys, folder, report, address)
    assert rc == 3, (rc, out, err)
    assert "SERVER EVIDENCE REFUSED" in err and "Traceback" not in err, err
    rows = {
        Path(r["path"]).name: r
        for r in (json.loads(line) for line in report.read_text().splitlines() if line.strip())
        if r.get("path")
    }
    for name, words in (
        ("cat.png", "answered TAMPERED to a lookup"),
        ("made.png", "answered UNSIGNED citing a claim"),
        ("rocket_copy.jpg", "answered UNSIGNED listing 1 claim as also signed"),
    ):
        row = rows[name]
        assert row["status"] is None and row["evidence_checked"] == "refused", row
        assert words in row["error"], row
    assert rows["fresh.png"]["status"] == "UNSIGNED" and not rows["fresh.png"].get("error"), rows
