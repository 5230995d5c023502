"""Claims bounded in shape at submission: a hard binding the verifier could never match
(a chunk root of the wrong length, chunk size 0 or too large, a chunk count that does not
fit the file size) and soft-binding numbers out of range (frame times of 1e308, a sample
rate of 1e-300) are refused with INVALID_ARGUMENT naming the field, the value and the
rule; what a device's `prov sign` makes is accepted, and entries already in a log that
break these rules still read.

Through a real `prov serve` on a real port, a device key enrolled over gRPC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
from concurrent.futures import Future
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import grpc
import numpy as np
import pytest

from clients.api import ProvenanceClient, Query
from provenance.core.binding import PerceptualHash
from provenance.core.claim_bounds import (
    MAX_FRAME_SAMPLE_RATE,
    MAX_IMAGE_PIXELS,
    MAX_VIDEO_FRAME_PIXELS,
)
from provenance.core.claims import MAX_VIDEO_SECONDS, Claim, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.keys import DeviceKey
from provenance.core.video_binding import MAX_VIDEO_CHUNK
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.writer import PendingClaim, _Item
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from tests.conftest import ADMIN_TOKEN, SAMPLES, Cli, ServerProc, enroll_key, start_server

MIB = 1 << 20
ROOT = bytes(range(32))


def video_claim(key: DeviceKey, seq: int, **changes: Any) -> Claim:
    """A well-formed video claim of a 10,000,000-byte file in 1 MiB chunks (10 of them)."""
    claim = Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=datetime.now(UTC),
        media_type="video/mp4",
        size_bytes=10_000_000,
        hard_binding=HardBinding(
            sha256=hashlib.sha256(b"%d" % seq).digest(),
            chunk_size=MIB,
            chunk_count=10,
            chunk_merkle_root=ROOT,
        ),
        soft_bindings=(
            PerceptualHash("pdq", bytes(range(32)), 90, 0.0),
            PerceptualHash("pdq", bytes(range(1, 33)), 90, 1.0),
        ),
        width=640,
        height=360,
        duration_seconds=2.0,
        frame_sample_rate=1.0,
    )
    return dataclasses.replace(claim, **changes)


def sign(key: DeviceKey, claim: Claim) -> SignedClaim:
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def hb(**fields: Any) -> HardBinding:
    base: dict[str, Any] = {
        "sha256": bytes(32),
        "chunk_size": MIB,
        "chunk_count": 10,
        "chunk_merkle_root": ROOT,
    }
    return HardBinding(**{**base, **fields})


def soft_at(*times: float) -> tuple[PerceptualHash, ...]:
    return tuple(PerceptualHash("pdq", bytes(32), 90, t) for t in times)


def raw_soft(timestamp: float) -> Any:
    """A soft binding as the wire carries it (NaN and infinities included)."""
    return wire.pb.SoftBinding(
        algorithm="pdq", hash=bytes(32), quality=90, timestamp_seconds=timestamp
    )


# (changes to the video claim, what the refusal must say)
REFUSED: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    # longer than RFC 6838's names allow (127 + "/" + 127), as a Lookup's is refused
    # (before, a claim's was logged at any length, 10,006 characters tried)
    (
        {"media_type": "video/" + "x" * 250},
        ("media type is 256 characters", "at most 255", "RFC 6838"),
    ),
    (
        {"size_bytes": 0, "hard_binding": hb(chunk_count=0, chunk_merkle_root=ROOT)},
        ("size_bytes", "missing", "video/mp4"),
    ),
    ({"hard_binding": hb(chunk_merkle_root=bytes(7))}, ("chunk_merkle_root", "7 bytes", "32")),
    ({"hard_binding": hb(chunk_merkle_root=b"")}, ("chunk_merkle_root", "0 bytes", "32")),
    ({"hard_binding": hb(chunk_size=0, chunk_count=5)}, ("chunk_size", " 0", "chunk_count")),
    (
        {"hard_binding": hb(chunk_size=0, chunk_count=0)},
        ("chunk_size", " 0", "chunk_merkle_root"),
    ),
    (
        {"hard_binding": hb(chunk_count=2**63 - 1)},
        ("chunk_count", f"{2**63 - 1}", "10,000,000", "10"),
    ),
    ({"hard_binding": hb(chunk_count=9)}, ("chunk_count", "9", "10,000,000", "10")),
    (
        {"hard_binding": hb(chunk_size=MAX_VIDEO_CHUNK + 1, chunk_count=1)},
        ("chunk_size", f"{MAX_VIDEO_CHUNK + 1:,}", f"{MAX_VIDEO_CHUNK:,}"),
    ),
    (
        {"size_bytes": 0, "hard_binding": hb(chunk_count=1)},
        ("chunk_count", "1", " 0 bytes", "0"),
    ),
    ({"soft_bindings": soft_at(0.0, 1e308)}, ("timestamp_seconds", "1e+308", "86,400")),
    (
        {"soft_bindings": soft_at(0.0, MAX_VIDEO_SECONDS + 1)},
        ("timestamp_seconds", "86401", "86,400"),
    ),
    ({"duration_seconds": 1e308}, ("duration_seconds", "1e+308", "86,400")),
    ({"frame_sample_rate": 1e-300}, ("frame_sample_rate", "1e-300")),
    ({"frame_sample_rate": 1e308}, ("frame_sample_rate", "1e+308", f"{MAX_FRAME_SAMPLE_RATE:g}")),
    # pixel sizes past what the decoders accept (a uint32 on the wire: up to 4,294,967,295)
    ({"width": 2**32 - 1}, ("width", "4,294,967,295", f"{MAX_VIDEO_FRAME_PIXELS:,}", "7680x4320")),
    ({"height": 2**32 - 1}, ("height", "4,294,967,295", f"{MAX_VIDEO_FRAME_PIXELS:,}")),
    ({"width": 7680, "height": 4321}, ("width x height", "33,185,280", "7680x4320")),
    (
        {"media_type": "image/png", "hard_binding": HardBinding(sha256=bytes(32))}
        | {"width": MAX_IMAGE_PIXELS + 1, "height": 1, "duration_seconds": 0.0}
        | {"soft_bindings": soft_at(0.0), "frame_sample_rate": 0.0},
        ("width", f"{MAX_IMAGE_PIXELS + 1:,}", f"{MAX_IMAGE_PIXELS:,}", "image decoder accepts"),
    ),
    (
        {"media_type": "image/png", "hard_binding": HardBinding(sha256=bytes(32))}
        | {"width": 20_000, "height": 20_000, "duration_seconds": 0.0}
        | {"soft_bindings": soft_at(0.0), "frame_sample_rate": 0.0},
        ("width x height", "400,000,000", f"{MAX_IMAGE_PIXELS:,}"),
    ),
    # frame times out of order, or past the duration the claim states
    (
        {"soft_bindings": soft_at(0.0, 1.0, 0.5)},
        ("soft_bindings[2].timestamp_seconds", "0.5", "soft_bindings[1]", "in order"),
    ),
    (
        {"soft_bindings": soft_at(0.0, 3.0)},
        ("soft_bindings[1].timestamp_seconds", " 3 ", "duration_seconds", " 2 "),
    ),
]

# soft bindings the wire carries but a PerceptualHash cannot hold
REFUSED_RAW = [float("nan"), float("inf"), -1.0, -0.5]


def _submit(captures: rpc.CapturesStub, signed: SignedClaim) -> tuple[grpc.StatusCode | None, str]:
    try:
        captures.SubmitCapture(
            wire.pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed)), timeout=30
        )
    except grpc.RpcError as e:
        return e.code(), str(e.details())
    return None, ""


def test_claims_the_verifier_could_never_match_are_refused_on_the_wire(server: ServerProc) -> None:
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as client:
        key = enroll_key(client)
    with grpc.insecure_channel(server.address) as channel:
        captures = rpc.CapturesStub(channel)
        for changes, words in REFUSED:
            code, details = _submit(captures, sign(key, video_claim(key, 1, **changes)))
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (changes, code, details)
            for word in words:
                assert word in details, (changes, details)
            assert "Error" not in details and "Traceback" not in details
        for t in REFUSED_RAW:
            msg = wire.pb.Claim.FromString(wire.encode_claim(video_claim(key, 1)))
            msg.soft_bindings.append(raw_soft(t))
            data = msg.SerializeToString()
            signed = SignedClaim(
                PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
            )
            code, details = _submit(captures, signed)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (t, code, details)
            assert "timestamp_seconds" in details, details
        # what is within the rules is logged: the device was never blocked by the refusals
        accepted = [
            video_claim(key, 1),
            # (an empty file's claim, size_bytes 0 and no chunks, was accepted here: a claim
            # states its file's size now, `missing_fields`, and prov sign signs no empty file)
            video_claim(key, 3, size_bytes=MIB, hard_binding=hb(chunk_count=1)),
            video_claim(key, 4, hard_binding=hb(chunk_size=MAX_VIDEO_CHUNK, chunk_count=1)),
            video_claim(
                key,
                5,
                soft_bindings=soft_at(0.0, MAX_VIDEO_SECONDS),
                duration_seconds=float(MAX_VIDEO_SECONDS),
                frame_sample_rate=0.2,
            ),
            video_claim(
                key,
                6,
                media_type="image/jpeg",
                hard_binding=HardBinding(sha256=bytes(32)),
                soft_bindings=soft_at(0.0),
                duration_seconds=0.0,
                frame_sample_rate=0.0,
            ),
            video_claim(key, 7, width=7680, height=4320, soft_bindings=soft_at(0.0, 2.0)),
            video_claim(key, 8, width=4320, height=7680, soft_bindings=soft_at(1.0, 1.0)),
            video_claim(
                key,
                9,
                media_type="image/png",
                hard_binding=HardBinding(sha256=bytes(32)),
                soft_bindings=soft_at(0.0),
                width=MAX_IMAGE_PIXELS,
                height=1,
                duration_seconds=0.0,
                frame_sample_rate=0.0,
            ),
            video_claim(key, 10, media_type="video/" + "x" * 249),  # 255 characters
        ]
        for claim in accepted:
            code, details = _submit(captures, sign(key, claim))
            assert code is None, (claim, details)


def test_entries_logged_before_the_bounds_still_read(tmp_path: Path) -> None:
    """A log that holds claims these rules now refuse (logged by an older server) still
    serves them: entries, lookups and a log audit read them as before."""
    db = tmp_path / "prov.db"
    service = ProvenanceService(ServiceConfig(db, tmp_path / "log.key"))
    try:
        from provenance.core.envelope import PAYLOAD_TYPE_ENROLL

        key = DeviceKey.generate()
        token, _ = service.create_enrollment_token()
        service.enroll(
            token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
        )
        old = video_claim(
            key,
            1,
            hard_binding=hb(sha256=bytes(32), chunk_merkle_root=bytes(7), chunk_count=2**63 - 1),
            soft_bindings=soft_at(0.0, 1e308),
            duration_seconds=1e308,
        )
        done: Future[Any] = Future()
        service.writer._commit([_Item(PendingClaim(sign(key, old), old), done)])
        assert done.result(timeout=30).receipt.leaf_index == 1
    finally:
        service.close()
    srv = start_server(db, "--log-key", str(tmp_path / "log.key"))
    try:
        with ProvenanceClient(srv.address) as client:
            entries, size = client.entries(0, 10)
            assert len(entries) == size == 2
            ((_, report),) = client.lookup([Query("old", bytes(32))])
            assert report.status.value == "SIGNED_ORIGINAL", report.reasons
        audit = subprocess.run(
            [sys.executable, "-m", "clients.cli", "log", "audit", "--state"]
            + [str(tmp_path / "audit.state"), "--server", srv.address],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        srv.stop()


def _video_with_a_gap(path: Path, gap_seconds: int) -> None:
    """Three 32x32 H.264 frames at 0 s, 1 s and ``gap_seconds`` (a time-lapse with a pause)."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1, options={"crf": "30", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1)
        for pts in (0, 1, gap_seconds):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 256, (32, 32, 3), np.uint8), format="rgb24"
            )
            frame.pts, frame.time_base = pts, Fraction(1, 1)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_prov_sign_never_makes_a_video_claim_the_log_refuses(enrolled: Cli, tmp_path: Path) -> None:
    """A video whose frames span more than a day is refused by `prov sign` itself, in
    words, before anything is signed (its claim would state frame times the log refuses);
    one within the day is signed and logged."""
    far = tmp_path / "far.mp4"
    _video_with_a_gap(far, MAX_VIDEO_SECONDS + 100)
    rc, out, err = enrolled("sign", str(far))
    assert rc == 1, (out, err)
    assert "refused by the server" not in err and "not signed" in err, err
    assert "far.mp4" in err and "86,400" in err and "one day" in err, err
    assert "Traceback" not in err and "Error:" not in err
    assert not list(tmp_path.glob("far.mp4.*")), "nothing is written beside the file"
    near = tmp_path / "near.mp4"
    _video_with_a_gap(near, MAX_VIDEO_SECONDS - 100)
    rc, out, err = enrolled("sign", str(near))
    assert rc == 0, (out, err)


def test_the_pixel_bounds_are_the_decoders_own() -> None:
    """A real capture is never refused for its size: the image bound is at least the most
    Pillow decodes (twice its MAX_IMAGE_PIXELS, its hard limit) and the image limit of
    `prov sign` and `prov serve`; the video bound is the video decoder's frame limit."""
    from PIL import Image

    from provenance.media.image import DEFAULT_MAX_PIXELS
    from provenance.media.video.frames import MAX_FRAME_PIXELS

    assert Image.MAX_IMAGE_PIXELS is not None  # None would turn Pillow's limit off
    assert MAX_IMAGE_PIXELS >= 2 * Image.MAX_IMAGE_PIXELS >= DEFAULT_MAX_PIXELS
    assert MAX_VIDEO_FRAME_PIXELS == MAX_FRAME_PIXELS == 7680 * 4320


def test_the_device_sdk_never_signs_a_claim_the_log_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`DeviceHome.sign_file` (what `prov sign` runs) checks the claim it made against the
    log's rules before it keeps it: metadata over the limit, or (from a decoder that
    measured more than the bounds) a width past them, is refused in words, no sequence
    number used and nothing queued or written beside the file. Before, the claim was
    signed and queued, and the log refused it at the next sync."""
    import clients.device.signing as signing
    from clients.device import DeviceHome, measure
    from provenance.core.errors import ClaimError

    home = DeviceHome(tmp_path / "dev")
    home.init(b"pw")
    key = home.load_key(b"pw")
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    with pytest.raises(ClaimError, match=r"metadata is 50\d\d bytes; the limit is 4096"):
        home.sign_file(key, photo, metadata={"note": "x" * 5000})
    measured = measure

    def too_wide(path: Path, limits: Any = None) -> Any:
        fields, chunks = measured(path)
        return {**fields, "width": 2**32 - 1}, chunks

    monkeypatch.setattr(signing, "measure", too_wide)
    with pytest.raises(ClaimError, match=r"width is 4,294,967,295 pixels.*178,956,970"):
        home.sign_file(key, photo)
    assert home.state().last_sequence == 0
    assert not list(home.queue_dir.glob("*")) and not list(tmp_path.glob("rocket.jpg.*"))
    monkeypatch.setattr(signing, "measure", measured)
    assert home.sign_file(key, photo).sidecar.signed_claim.key_id == key.key_id
    assert home.state().last_sequence == 1


def test_a_forced_signature_the_log_refuses_leaves_no_backup(tmp_path: Path) -> None:
    """`sign_file(force=True)` over another device's sidecar copies it to FILE.prov.bak
    before it replaces it; when the log would refuse the new claim nothing is replaced,
    so nothing is copied either. Before: FILE.prov.bak was left beside an untouched
    FILE.prov, though the refusal said nothing was signed."""
    from clients.device import DeviceHome
    from provenance.core.errors import ClaimError

    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    homes = []
    for name in ("a", "b"):
        home = DeviceHome(tmp_path / name)
        home.init(b"pw")
        homes.append((home, home.load_key(b"pw")))
    (a, a_key), (b, b_key) = homes
    a.sign_file(a_key, photo)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ClaimError, match="metadata is"):
        b.sign_file(b_key, photo, metadata={"note": "x" * 5000}, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    signed = b.sign_file(b_key, photo, force=True)  # a claim the log takes: backed up
    assert signed.backup is not None and signed.backup.name == "rocket.jpg.prov.bak"
