"""The fields DESIGN.md ("The signed claim") says a claim carries, by media type: a size;
for an image its width, height and a PDQ hash; for a video its duration and the PDQ
hashes of sampled frames. A NEW claim that leaves one out is refused (INVALID_ARGUMENT
over gRPC, naming the field); an entry an older server logged without one still
verifies, audits and reopens, and its report says what it lacks."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from clients.device.measuring import measure
from provenance.core.binding import PerceptualHash
from provenance.core.claim_bounds import missing_fields
from provenance.core.claims import HardBinding, SignedClaim, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.errors import ClaimError
from provenance.core.verify import FileFacts
from provenance.server.writer import PendingClaim
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from tests.conftest import ADMIN_TOKEN, SAMPLES, ServerProc, enroll_key
from tests.inproc import InProc, make_claim, sign

PHOTO = SAMPLES / "grace_hopper.jpg"
PDQ = PerceptualHash("pdq", bytes(range(32)), 100)
FRAMES = (PerceptualHash("pdq", bytes(range(32)), 100, 0.0),)

#: An image claim as the user built it by hand: no width, no height, no PDQ hash.
NONE_STATED: dict[str, Any] = {"width": 0, "height": 0, "soft_bindings": ()}
#: (fields of a new claim that leaves one out, the field the refusal names)
LACKING: list[tuple[dict[str, Any], str]] = [
    ({"width": 0}, "width"),
    ({"height": 0}, "height"),
    ({"soft_bindings": ()}, "soft_bindings"),
    ({"size_bytes": 0}, "size_bytes"),
    ({"media_type": "video/mp4", "duration_seconds": 0.0, "soft_bindings": FRAMES}, "duration"),
    ({"media_type": "video/mp4", "duration_seconds": 3.0, "soft_bindings": ()}, "soft_bindings"),
]


def _photo_claim_fields() -> dict[str, Any]:
    fields, _ = measure(PHOTO)
    return dict(fields)


@pytest.mark.parametrize(("fields", "named"), LACKING)
def test_a_new_claim_lacking_a_design_field_is_refused_naming_it(
    inproc: InProc, fields: dict[str, Any], named: str
) -> None:
    dev = inproc.enroll()
    size = inproc.service.store.tree_size()
    base = {"width": 640, "height": 480, "soft_bindings": (PDQ,)}
    with pytest.raises(ClaimError, match=f"the claim's {named}"):
        inproc.submit(dev.next_claim(**{**base, **fields}))
    assert inproc.service.store.tree_size() == size


def test_a_hand_built_image_claim_is_invalid_argument_over_grpc(server: ServerProc) -> None:
    """The user's report: an image/jpeg claim with no width, height or PDQ hash was
    logged and verified SIGNED_ORIGINAL."""
    details = _refused_over_grpc(
        server, hard_binding=HardBinding(hashlib.sha256(b"x").digest()), **NONE_STATED
    )
    assert "width" in details and "image/jpeg" in details, details


def _refused_over_grpc(server: ServerProc, **fields: Any) -> str:
    """The details of the INVALID_ARGUMENT a new key's first claim of ``fields``
    (`make_claim`'s) gets from SubmitCapture."""
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN, timeout=20) as client:
        key = enroll_key(client)
    claim = make_claim(key, 1, **fields)
    req = pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(sign(key, claim)))
    with grpc.insecure_channel(server.address) as chan, pytest.raises(grpc.RpcError) as exc:
        rpc.CapturesStub(chan).SubmitCapture(req, timeout=20)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return str(exc.value.details())


def test_our_device_client_measures_every_design_field() -> None:
    photo = _photo_claim_fields()
    assert photo["width"] > 0 and photo["height"] > 0 and photo["soft_bindings"]
    assert photo["size_bytes"] == PHOTO.stat().st_size
    video, _ = measure(SAMPLES / "fabric_pattern.mp4")
    assert video["duration_seconds"] > 0 and video["soft_bindings"]
    assert video["width"] > 0 and video["height"] > 0 and video["size_bytes"] > 0


def test_a_photo_signed_by_our_client_is_accepted(inproc: InProc) -> None:
    dev = inproc.enroll()
    signed, appended = inproc.log_file(dev, PHOTO)
    assert not missing_fields(wire.decode_claim(signed.claim_bytes))
    assert appended.receipt.leaf_index >= 0


def test_an_old_entry_without_the_fields_still_verifies_audits_and_reopens(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An entry logged before the rule (handed to the writer as an older server's
    submission path did, without the new check) keeps its SIGNED_ORIGINAL, and the report
    names what the claim lacks; the start-up checks and `prov log audit` accept the log."""
    dev = inproc.enroll()
    data = b"an old capture"
    signed = dev.next_claim(hard_binding=HardBinding(hashlib.sha256(data).digest()), **NONE_STATED)
    claim = wire.decode_claim(signed.claim_bytes)
    assert missing_fields(claim) == ["width", "height", "soft_bindings (a PDQ hash)"]
    inproc.service.writer.submit(PendingClaim(signed, claim, dev.key.public_key))
    inproc.reopen()  # the start-up checks read the log as it is
    facts = FileFacts(hashlib.sha256(data).digest(), len(data), "image/jpeg")
    report = inproc.service.verify(facts, sidecar=None)
    assert report.status is Verdict.SIGNED_ORIGINAL, report.reasons
    note = [r for r in report.reasons if "width, height" in r]
    assert note and "logged before" in note[0], report.reasons
    vkey = inproc.service.signer.verifier_key()
    inproc.service.close()
    capsys.readouterr()
    rc = prov_main(
        ["log", "audit", "--db", str(inproc.db), "--state", str(tmp_path / "a.json"),
         "--log-key", vkey]
    )  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    inproc.reopen()


@pytest.mark.parametrize("field", ["captured_at", "hard_binding"])
def test_a_claim_without_its_capture_time_or_hard_binding_is_refused_naming_it(
    inproc: InProc, field: str
) -> None:
    dev = inproc.enroll()
    msg = wire.pb.Claim.FromString(wire.encode_claim(make_claim(dev.key, 1)))
    msg.ClearField(field)
    data = msg.SerializeToString()
    signed = SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, dev.key.key_id, sign_payload(dev.key, PAYLOAD_TYPE_CLAIM, data)
    )
    with pytest.raises(ClaimError, match=f"the claim's {field} is missing"):
        inproc.submit(signed)


def test_the_signed_bytes_are_kept_never_re_serialized(inproc: InProc) -> None:
    """DESIGN.md: the exact claim bytes are signed and carried. A claim whose bytes are
    not what this code would serialize (a field it does not know, appended by a newer
    device) is logged as it is and verifies SIGNED_ORIGINAL: were it re-serialized, the
    unknown field would be dropped and the signature would no longer verify."""
    dev = inproc.enroll()
    data = b"a capture from a newer device"
    claim = make_claim(dev.key, 1, hard_binding=HardBinding(hashlib.sha256(data).digest()))
    body = wire.encode_claim(claim) + bytes([0xF8, 0x06, 0x01])  # field 111, varint 1
    assert wire.encode_claim(wire.decode_claim(body)) != body
    signed = SignedClaim(
        PAYLOAD_TYPE_CLAIM, body, dev.key.key_id, sign_payload(dev.key, PAYLOAD_TYPE_CLAIM, body)
    )
    appended = inproc.submit(signed)
    assert wire.decode_log_entry(appended.receipt.log_entry)[0].claim_bytes == body
    facts = FileFacts(hashlib.sha256(data).digest(), len(data), "image/jpeg")
    report = inproc.service.verify(facts, sidecar=None)
    assert report.status is Verdict.SIGNED_ORIGINAL, report.reasons
    assert report.evidence.claim is not None
    assert report.evidence.claim.signed_claim.claim_bytes == body


# ------------------------------------------------ a stated size that is not the file's


def test_a_claim_misstating_its_files_size_is_signed_original_with_a_note_naming_both(
    server: ServerProc,
) -> None:
    """A claim's size_bytes is a stated field: the log cannot check it (a submission
    carries the claim, not the file), so the verifier, the first to hold both, says so.
    The bytes are the signed ones (SHA-256), so the verdict stays SIGNED_ORIGINAL. Before,
    a claim stating 1 byte more than the photo it binds verified with no note."""
    fields = {**_photo_claim_fields(), "size_bytes": PHOTO.stat().st_size + 1}
    size = PHOTO.stat().st_size
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN, timeout=30) as client:
        key = enroll_key(client)
        client.submit(sign(key, make_claim(key, 1, **fields)))
        report = client.verify_file(PHOTO, None)
    assert report.status is Verdict.SIGNED_ORIGINAL, report.reasons
    assert [r for r in report.reasons if "size_bytes" in r] == [
        f"note: the claim states size_bytes {size + 1:,}, but this file is {size:,} bytes:"
        " the signed claim misstates the size of the bytes it binds (`prov sign` measures"
        " it); its signature and its SHA-256 of the bytes decide the verdict all the same"
    ], report.reasons


def test_the_size_compared_is_of_the_bytes_the_claim_binds(inproc: InProc) -> None:
    """A claim of a `prov sign --c2pa` export binds the bytes without the manifest store:
    its size is compared with theirs (``content_size``), not the file's; a Lookup, which
    sends no size (0), gets no note."""
    dev = inproc.enroll()
    data = b"the bytes without the manifest store"
    sha = hashlib.sha256(data).digest()
    inproc.submit(dev.next_claim(hard_binding=HardBinding(sha), size_bytes=len(data)))
    exported = FileFacts(
        hashlib.sha256(b"x" + data).digest(), len(data) + 900, "image/jpeg",
        content_sha256=sha, content_size=len(data),
    )  # fmt: skip
    for facts, noted in (
        (exported, False),
        (replace(exported, content_size=len(data) + 1), True),
        (FileFacts(sha, 0, "image/jpeg"), False),
        (FileFacts(sha, len(data) + 2, "image/jpeg"), True),
    ):
        report = inproc.service.verify(facts, sidecar=None)
        assert report.status is Verdict.SIGNED_ORIGINAL, report.reasons
        notes = [r for r in report.reasons if "misstates the size" in r]
        assert bool(notes) is noted, (facts, report.reasons)
    report = inproc.service.verify(replace(exported, content_size=len(data) + 1), sidecar=None)
    assert "this file without its C2PA manifest is" in report.reasons[-1], report.reasons


# ------------------------------------------------ an image's claim stating video fields

#: (fields of a new image claim that states one of a video's, the field the refusal names)
VIDEO_ONLY: list[tuple[dict[str, Any], str]] = [
    ({"duration_seconds": 12.5}, "duration_seconds"),
    (
        {"duration_seconds": 3.0, "soft_bindings": (PDQ, replace(PDQ, timestamp_seconds=1.0))},
        "duration_seconds",
    ),
    ({"frame_sample_rate": 1.0}, "frame_sample_rate"),
    ({"soft_bindings": (PDQ, PerceptualHash("pdq", bytes(32), 100))}, "soft_bindings"),
    (
        {
            "hard_binding": HardBinding(
                bytes(32), chunk_size=4, chunk_count=3, chunk_merkle_root=bytes(32)
            )
        },
        "hard_binding.chunk_size",
    ),
]


@pytest.mark.parametrize(("fields", "named"), VIDEO_ONLY)
def test_a_new_image_claim_stating_a_videos_fields_is_refused_naming_them(
    inproc: InProc, fields: dict[str, Any], named: str
) -> None:
    """DESIGN.md gives a video a duration, frame hashes and a chunked hard binding; an
    image's claim stating them describes no image (before: logged, and its frames'
    hashes all went to the near-duplicate index as one photo's)."""
    dev = inproc.enroll()
    size = inproc.service.store.tree_size()
    base = {"width": 640, "height": 480, "soft_bindings": (PDQ,), "size_bytes": 10}
    with pytest.raises(ClaimError, match=f"the claim's {re.escape(named)}.* image/jpeg") as e:
        inproc.submit(dev.next_claim(**{**base, **fields}))
    assert "a video" in str(e.value), e.value
    assert inproc.service.store.tree_size() == size


def test_an_image_claim_with_a_duration_is_invalid_argument_over_grpc(server: ServerProc) -> None:
    details = _refused_over_grpc(server, duration_seconds=12.5)
    assert "duration_seconds" in details and "image/jpeg" in details, details


def test_an_old_image_entry_stating_a_duration_still_verifies(inproc: InProc) -> None:
    """An entry an older server logged (handed to the writer without the new check) keeps
    its SIGNED_ORIGINAL."""
    dev = inproc.enroll()
    data = b"an old capture with a duration"
    signed = dev.next_claim(
        hard_binding=HardBinding(hashlib.sha256(data).digest()),
        size_bytes=len(data),
        duration_seconds=4.0,
    )
    claim = wire.decode_claim(signed.claim_bytes)
    inproc.service.writer.submit(PendingClaim(signed, claim, dev.key.public_key))
    inproc.reopen()  # the start-up checks read the log as it is
    facts = FileFacts(hashlib.sha256(data).digest(), len(data), "image/jpeg")
    report = inproc.service.verify(facts, sidecar=None)
    assert report.status is Verdict.SIGNED_ORIGINAL, report.reasons
