"""Content Credentials through the real server and CLI: export with `prov sign --c2pa`,
read back as Trusted with our authority as anchor, tampering caught by both lines of
evidence, third-party and hostile files handled."""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import av
import c2pa
import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID, ObjectIdentifier
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from clients.api import ProvenanceClient
from provenance.c2pa.authority import init_authority, issue_device_certificate, load_authority
from provenance.c2pa.container import MAX_BMFF_BOXES, bmff_box_count
from provenance.c2pa.reader import C2paTrust, read_c2pa
from provenance.c2pa.writer import DIGITAL_CAPTURE, embed_manifest
from provenance.core.claims import HardBinding
from provenance.core.errors import TransportError
from provenance.core.keys import DeviceKey
from provenance.core.video_binding import chunk_merkle_root, hash_chunked
from provenance.wire import convert as wire
from tests.conftest import FIXTURES, SAMPLES, Cli, ServerProc, start_server

HOSTILE = [
    "third_party/c2pa-rs/malformed/nested_moov_1000.mp4",
    "third_party/c2pa-rs/malformed/tiff_poc.tiff",
    "third_party/c2pa-rs/malformed/riff_bomb_1000.wav",
    "third_party/c2pa-rs/malformed/id3v23_compression_underflow.mp3",
]


def _verify(cli: Cli, path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = cli("verify", str(path), "--json", "--no-detect", *extra)
    assert out, err
    return rc, json.loads(out)


@pytest.mark.parametrize("name", ["grace_hopper.jpg", "chelsea.png", "fabric_pattern.mp4"])
def test_sign_c2pa_reads_back_trusted_and_tamper_breaks_both(
    ca_server: ServerProc, cli: Cli, tmp_path: Path, name: str
) -> None:
    photo = Path(shutil.copy(SAMPLES / name, tmp_path / name))
    original = photo.read_bytes()
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 0 and "C2PA manifest embedded" in out, err
    assert photo.read_bytes() != original  # the manifest is in the file now

    rc, report = _verify(cli, photo)
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")
    c2pa = report["c2pa"]
    assert c2pa["validation_state"] == "Trusted" and c2pa["trusted_anchor"] is True
    assert any(a["action"] == "c2pa.created" for a in c2pa["actions"])
    assert c2pa["provenance_assertion"]["checkpoint"].startswith("media-provenance.local/log\n")
    assert report["file"]["content_sha256"] == report["evidence"]["claim"]["sha256"]
    # the claim's size is of the bytes without the manifest, as the verifier measures them
    assert not any("size_bytes" in r for r in report["reasons"]), report["reasons"]

    desk = tmp_path / "desk"
    desk.mkdir()
    bare = Path(shutil.copy(photo, desk / name))  # no sidecar: found by content hash
    rc, report = _verify(cli, bare)
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")
    rc, _, err = cli("scan", str(desk), "--report", str(tmp_path / "scan.jsonl"), "--workers", "0")
    assert rc == 0, err
    (row,) = [json.loads(x) for x in (tmp_path / "scan.jsonl").read_text().splitlines()]
    assert row["status"] == "SIGNED_ORIGINAL"  # the scanner agrees with prov verify

    data = bytearray(photo.read_bytes())
    at = len(data) // 2 if name.endswith(".mp4") else -200  # in the media data, not a header
    data[at] ^= 0x01
    photo.write_bytes(bytes(data))
    rc, report = _verify(cli, photo)
    assert (rc, report["status"]) == (13, "TAMPERED")
    assert report["c2pa"]["validation_state"] == "Invalid"


def test_an_edited_export_without_its_sidecar_is_tampered_by_its_embedded_claim(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """DESIGN.md, "The verdict": TAMPERED when "a sidecar or embedded claim is present but
    the bytes or signature do not match". The claim `prov sign --c2pa` embeds travels with
    the file; an edited copy without the sidecar read DERIVED before (its pixels are a near
    copy of the logged capture) and the embedded claim was never looked at. `prov verify`
    and `prov scan` of a folder agree."""
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "hopper.jpg"))
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 0 and "C2PA manifest embedded" in out, err
    desk = tmp_path / "desk"
    desk.mkdir()
    data = bytearray(photo.read_bytes())
    data[-200] ^= 0x01  # in the scan data, after the manifest store
    edited = desk / "hopper.jpg"
    edited.write_bytes(bytes(data))
    (desk / "unedited.jpg").write_bytes(photo.read_bytes())

    rc, report = _verify(cli, edited)
    assert (rc, report["status"]) == (13, "TAMPERED")
    assert report["evidence"]["hash_match"] is False
    assert report["evidence"]["claim"]["signature_valid"] is True
    assert any("embedded in its Content Credentials" in r for r in report["reasons"])
    assert report["evidence"]["claim_embedded"] is True  # not a sidecar file (gRPC: field 16)
    assert report["c2pa"]["validation_state"] == "Invalid"  # the other line of evidence
    rc, report = _verify(cli, desk / "unedited.jpg")
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")
    assert report["evidence"]["claim_embedded"] is True
    assert not any("sidecar" in r for r in report["reasons"])  # nothing to explain

    rc, _, err = cli("scan", str(desk), "--report", str(tmp_path / "scan.jsonl"), "--workers", "0")
    assert rc == 0, err
    rows = [json.loads(x) for x in (tmp_path / "scan.jsonl").read_text().splitlines()]
    status = {Path(r["path"]).name: r["status"] for r in rows}
    assert status == {"hopper.jpg": "TAMPERED", "unedited.jpg": "SIGNED_ORIGINAL"}


def test_third_party_credentials_are_their_own_evidence(server: ServerProc, cli: Cli) -> None:
    signed = FIXTURES / "c2pa" / "third_party" / "public-testfiles" / "adobe-20220124-C.jpg"
    rc, report = _verify(cli, signed)
    assert (rc, report["status"]) == (11, "UNSIGNED")
    assert report["c2pa"]["validation_state"] == "Valid"
    assert "signingCredential.untrusted" in report["c2pa"]["validation_codes"]
    assert any("Content Credentials" in r for r in report["reasons"])


def test_hostile_files_never_take_the_server_down(server: ServerProc, cli: Cli) -> None:
    with ProvenanceClient(server.address) as c:
        for rel in HOSTILE:
            try:
                report = c.verify_file(FIXTURES / "c2pa" / rel)
            except TransportError as e:
                assert e.code in {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}, e
            else:
                assert report.status.value == "UNSIGNED"
    chan = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(chan).Check(  # type: ignore[attr-defined]  # stub declares no methods
        health_pb2.HealthCheckRequest(), timeout=10
    )
    chan.close()
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert server.proc.poll() is None


def test_plain_photo_has_no_credentials(server: ServerProc, cli: Cli, tmp_path: Path) -> None:
    img = tmp_path / "plain.jpg"
    Image.open(SAMPLES / "rocket.jpg").save(img, "JPEG", quality=90)
    rc, report = _verify(cli, img)
    assert (rc, report["status"]) == (11, "UNSIGNED")
    assert report["c2pa"]["present"] is False and report["c2pa"]["error"] is None


def test_sign_c2pa_of_a_queued_claim_fails_and_says_how_to_finish(
    ca_server: ServerProc, cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov sign --c2pa` with the server away queues the claim but cannot embed the
    manifest (it holds the receipt): exit 1 saying what to do (before: exit 0, so a
    script took the file for exported). Doing what it says embeds it."""
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    ca_server.stop()
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 1 and "queued" in out, (out, err)
    assert "C2PA manifest not embedded" in err and "run `prov sign --c2pa`" in err, err
    assert photo.read_bytes() == (SAMPLES / "grace_hopper.jpg").read_bytes()
    again = start_server(ca_server.db, "--ca", str(tmp_path / "ca"))  # on a new port
    monkeypatch.setenv("PROV_SERVER", again.address)
    cli.server = again.address
    try:
        assert cli("device", "sync")[0] == 0
        rc, out, err = cli("sign", "--c2pa", str(photo))
        assert rc == 0 and "C2PA manifest embedded" in out, (out, err)
        rc, report = _verify(cli, photo)
        assert (rc, report["c2pa"]["validation_state"]) == (0, "Trusted")
    finally:
        again.stop()


def test_sign_c2pa_twice_keeps_the_manifest(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """A second `prov sign --c2pa` of a file already exported is a no-op that says so and
    exits 0 (before: exit 1, "C2PA manifest not embedded: ... already carries a C2PA
    manifest store", though the manifest was the one this claim's first run wrote)."""
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    assert cli("sign", "--c2pa", str(photo))[0] == 0
    exported = photo.read_bytes()
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 0, (out, err)
    assert f"{photo}: already signed (#1) and logged at leaf 1" in out, out
    assert f"{photo}: C2PA manifest already embedded for this claim; left as it is" in out
    assert photo.read_bytes() == exported
    rc, report = _verify(cli, photo)
    assert (rc, report["c2pa"]["validation_state"]) == (0, "Trusted")


def test_sign_c2pa_never_takes_another_signers_manifest_for_its_own(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """A manifest that validates and carries this sidecar's claim (a sidecar is public)
    but is signed by another key, certified by another authority under this device's
    own id, is not "already embedded": exit 1, the file left as it is (before: exit 0,
    "C2PA manifest already embedded for this claim", the stranger's manifest kept as if
    this device had signed it)."""
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    assert cli("sign", str(photo))[0] == 0  # logged, no manifest yet
    sidecar = Path(f"{photo}.prov")
    rc, shown, err = cli("device", "show")
    assert rc == 0, err
    device_id = json.loads(shown)["device_id"]
    other = init_authority(tmp_path / "other-ca", now=datetime.now(UTC))
    stranger = DeviceKey.generate()
    chain = issue_device_certificate(other, stranger.public_key, device_id, now=datetime.now(UTC))
    embed_manifest(
        photo, photo, "image/jpeg", stranger, chain, json.loads(sidecar.read_bytes()), None
    )
    planted = photo.read_bytes()
    assert read_c2pa(photo, "image/jpeg").validation_state == "Valid"
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 1, (out, err)
    assert "already embedded" not in out, out
    assert "photo.jpg: C2PA manifest not embedded" in err, err
    assert "not signed by this device" in err, err
    assert photo.read_bytes() == planted


def test_sign_c2pa_batch_goes_on_past_a_file_with_a_manifest(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    first = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "first.jpg"))
    assert cli("sign", "--c2pa", str(first))[0] == 0  # first.jpg now carries a manifest
    adobe = FIXTURES / "c2pa" / "third_party" / "public-testfiles" / "adobe-20220124-C.jpg"
    other = Path(shutil.copy(adobe, tmp_path / "other.jpg"))  # another tool's manifest
    later = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "later.jpg"))
    rc, out, err = cli("sign", "--c2pa", str(first), str(other), str(later))
    assert rc == 1, (out, err)  # one file failed ...
    assert "other.jpg: C2PA manifest not embedded" in err
    assert "already carries another C2PA manifest store (not this claim's)" in err, err
    assert other.read_bytes() == adobe.read_bytes()  # never replaced
    # first.jpg's sidecar still binds it (the claim covers the bytes without the manifest
    # store): not signed again, so no second claim is logged for it; its manifest is
    # this claim's and stays
    assert f"{first}: already signed (#1) and logged at leaf 1" in out, out
    assert f"{first}: C2PA manifest already embedded for this claim" in out, out
    assert f"{later}: C2PA manifest embedded" in out  # ... and the batch went on
    rc, report = _verify(cli, later)
    assert (rc, report["c2pa"]["validation_state"]) == (0, "Trusted")


#: An extended key usage no C2PA reader accepts by default (a private arc).
CUSTOM_EKU = "1.3.6.1.4.1.99999.1"


def _signed_with_custom_eku(ca: Path, out: Path) -> None:
    """``out``: rocket.jpg with a C2PA manifest whose signer, certified by the authority
    in ``ca``, carries only `CUSTOM_EKU` (signed straight with c2pa, told of the EKU)."""
    authority = load_authority(ca)
    key = DeviceKey.generate()
    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "custom-eku")]))
        .issuer_name(authority.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=10))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )  # digitalSignature only
        .add_extension(x509.ExtendedKeyUsage([ObjectIdentifier(CUSTOM_EKU)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.private_key.public_key()),
            critical=False,
        )
        .sign(authority.private_key, None)
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + authority.certificate_pem
    settings = {
        "trust": {"trust_anchors": authority.certificate_pem.decode(), "trust_config": CUSTOM_EKU}
    }
    signer = c2pa.Signer.from_callback(key.sign, c2pa.C2paSigningAlg.ED25519, chain.decode(), None)
    manifest = {"claim_generator_info": [{"name": "test", "version": "1"}], "assertions": []}
    output = io.BytesIO()
    with signer, c2pa.Builder(manifest, context=c2pa.Context.from_dict(settings)) as b:
        b.add_action({"action": "c2pa.created", "digitalSourceType": DIGITAL_CAPTURE})
        b.sign(signer, "image/jpeg", io.BytesIO((SAMPLES / "rocket.jpg").read_bytes()), output)
    out.write_bytes(output.getvalue())


def test_c2pa_trust_config_applies_to_the_ca_root(
    server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """`prov serve --ca DIR --c2pa-trust-config CFG` (no --c2pa-trust-anchors) reads with
    CFG's extra EKUs under the --ca root: a signer carrying only such an EKU reads
    Trusted (before: CFG was silently dropped, and the file read Invalid)."""
    server.stop()
    ca = tmp_path / "ca"
    assert cli("admin", "ca", "init", "--dir", str(ca), "--no-passphrase")[0] == 0
    photo = tmp_path / "custom.jpg"
    _signed_with_custom_eku(ca, photo)
    root = (ca / "ca.cert.pem").read_bytes()
    assert read_c2pa(photo, "image/jpeg", trust=C2paTrust(root)).validation_state == "Invalid"
    config = tmp_path / "store.cfg"
    config.write_text(f"// our cameras' EKU\n{CUSTOM_EKU}\n")
    srv = start_server(tmp_path / "ca.db", "--ca", str(ca), "--c2pa-trust-config", str(config))
    try:
        cli.server = srv.address
        rc, out, err = cli("verify", str(photo), "--json", "--no-detect", "--server", srv.address)
        assert out, err
        c2pa_result = json.loads(out)["c2pa"]
        assert c2pa_result["validation_state"] == "Trusted", c2pa_result
        assert c2pa_result["trusted_anchor"] is True
    finally:
        srv.stop()


def test_sign_c2pa_keeps_the_files_mode(ca_server: ServerProc, cli: Cli, tmp_path: Path) -> None:
    """The manifest is embedded by writing a new file and renaming it over the capture:
    that file was made by `mkstemp`, mode 0600, so a photo others could read (0644, a
    web server's, a shared folder's) was readable by its owner alone after `prov sign
    --c2pa`. The capture keeps its mode."""
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "shared.jpg"))
    photo.chmod(0o664)
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 0 and "C2PA manifest embedded" in out, err
    assert oct(photo.stat().st_mode & 0o777) == oct(0o664)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".shared.jpg.")]


def _repeated(src: Path, dst: Path, times: int) -> None:
    """``src``'s video stream ``times`` times over in one MP4 (its packets copied, not
    re-encoded; each repeat starts on the key frame the source starts on)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        packets = [(p, p.pts, p.dts) for p in inp.demux(stream) if p.dts is not None]
        step = packets[1][2] - packets[0][2]
        span = max(pts for _, pts, _ in packets if pts is not None) + step
        for k in range(times):
            for p, pts, dts in packets:
                p.pts = None if pts is None else pts + k * span
                p.dts = dts + k * span
                p.stream = copy
                out.mux(p)


def _edited_export(cli: Cli, tmp_path: Path) -> tuple[Path, Path, int]:
    """(a 12.8 MB MP4 exported by `prov sign --c2pa`, its copy in a folder of its own
    with four bytes of its media data flipped, the offset of the first of them)."""
    video = tmp_path / "long.mp4"
    _repeated(FIXTURES / "phash" / "video" / "pattern-hd-no-bar.mp4", video, 6)
    rc, out, err = cli("sign", "--c2pa", str(video))
    assert rc == 0 and "C2PA manifest embedded" in out, err
    data = bytearray(video.read_bytes())
    at = len(data) // 2  # in the media data, far from the manifest box
    assert data.index(b"mdat") < at < data.rindex(b"moov")
    data[at : at + 4] = bytes(b ^ 0xFF for b in data[at : at + 4])
    desk = tmp_path / "desk"
    desk.mkdir()
    edited = desk / "edited.mp4"  # no sidecar beside it
    edited.write_bytes(bytes(data))
    return video, edited, at


def _names_the_edit(report: dict[str, Any], at: int, size: int) -> str:
    """The reason of a TAMPERED ``report`` that names the damaged range holding the four
    bytes edited at ``at`` of a ``size``-byte file (less than a tenth of it named)."""
    assert report["status"] == "TAMPERED"
    ranges = [(r["first_byte"], r["last_byte"]) for r in report["evidence"]["damaged_ranges"]]
    assert any(a <= at and at + 3 <= b for a, b in ranges), (at, ranges)
    named = sum(b - a + 1 for a, b in ranges)
    assert named < size // 10, (named, size, ranges)
    said = f"bytes {ranges[0][0]:,}-{ranges[0][1]:,} differ from the signed file"
    assert any(r.startswith(said) for r in report["reasons"]), report["reasons"]
    return said


def test_an_edited_c2pa_export_checked_with_its_sidecar_names_the_damaged_chunk(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """A `--c2pa` MP4 whose media data was edited, checked with its sidecar: TAMPERED
    and the damaged range lies around the edit. The sidecar's chunk hashes are those of
    the signed bytes (manifest box not yet in), so the upload's chunks are hashed with the
    box stripped and the ranges mapped back to the upload's offsets. Before: every chunk
    of the upload was shifted by the box, and the whole file was named."""
    video, edited, at = _edited_export(cli, tmp_path)
    sidecar = Path(f"{video}.prov")
    assert sidecar.exists()
    rc, report = _verify(cli, edited, "--sidecar", str(sidecar))
    assert rc == 13
    _names_the_edit(report, at, edited.stat().st_size)


def test_an_edited_c2pa_export_without_its_sidecar_names_the_damaged_chunk(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """The same edited `--c2pa` MP4 checked without its sidecar: the claim `prov sign
    --c2pa` embeds carries the sidecar's chunk hashes (``chunkHashes`` in the
    `org.provenance.claim` assertion), so the damaged range is named as with the sidecar,
    in the same words and JSON fields. C2PA's own binding cannot say it: c2pa-rs writes a
    `c2pa.hash.bmff.v3` hash of the whole file, without a ``merkle`` list. Before: TAMPERED
    with no range at all ("the file's bytes differ from the bytes the signed sidecar claim
    covers (SHA-256)" and nothing about where)."""
    video, edited, at = _edited_export(cli, tmp_path)
    with c2pa.Reader("video/mp4", io.BytesIO(video.read_bytes())) as reader:
        manifest = json.loads(reader.json())
    assertions = {
        a["label"]: a["data"]
        for a in manifest["manifests"][manifest["active_manifest"]]["assertions"]
    }
    assert "merkle" not in assertions["c2pa.hash.bmff.v3"]  # a whole-file hash only
    listed = assertions["org.provenance.claim"]["evidence"]["chunkHashes"]
    assert len(listed) == 13  # 12.2 MiB of media in 1 MiB chunks
    rc, report = _verify(cli, edited)
    assert rc == 13 and report["evidence"]["claim_embedded"] is True
    said = _names_the_edit(report, at, edited.stat().st_size)
    rc, out, _ = cli("verify", str(edited), "--no-detect")
    assert rc == 13 and said in " ".join(out.split()), out
    rc, report = _verify(cli, video)  # the unedited export names nothing
    assert (rc, report["status"]) == (0, "SIGNED_ORIGINAL")
    assert report["evidence"]["damaged_ranges"] == []


def test_an_embedded_claim_whose_signature_fails_names_no_damaged_range(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """Anyone can write a C2PA manifest. One embeds this device's claim altered to bind
    64 KiB chunks, the listed hash of chunk 4 changed and the chunk root rebuilt to match,
    the device's signature kept (it no longer verifies), in a file edited elsewhere:
    TAMPERED (a bad signature under an enrolled key), but no byte range is named from a
    chunk list the device never signed. Before: "bytes 279,046-344,581, 1,065,478-1,131,013
    differ from the signed file (65,536-byte chunks)", the first range the forger's (the
    offsets move by a few bytes with the manifest's size)."""
    video = Path(
        shutil.copy(FIXTURES / "phash" / "video" / "pattern-hd-no-bar.mp4", tmp_path / "v.mp4")
    )
    rc, _, err = cli("sign", str(video))
    assert rc == 0, err
    evidence = json.loads(Path(f"{video}.prov").read_bytes())
    claim = wire.decode_claim(base64.b64decode(evidence["payload"]))
    leaves = list(hash_chunked(video.read_bytes(), 64 * 1024).chunk_hashes)
    leaves[4] = bytes(32)
    binding = HardBinding(
        claim.hard_binding.sha256, 64 * 1024, len(leaves), chunk_merkle_root(leaves)
    )
    forged = wire.encode_claim(replace(claim, hard_binding=binding))
    evidence["payload"] = base64.b64encode(forged).decode()
    evidence["chunkHashes"] = [base64.b64encode(h).decode() for h in leaves]
    other = init_authority(tmp_path / "other-ca", now=datetime.now(UTC))
    stranger = DeviceKey.generate()
    chain = issue_device_certificate(
        other, stranger.public_key, claim.device_id.hex(), now=datetime.now(UTC)
    )
    desk = tmp_path / "desk"
    desk.mkdir()
    planted = desk / "planted.mp4"
    embed_manifest(video, planted, "video/mp4", stranger, chain, evidence, None)
    data = bytearray(planted.read_bytes())
    data[len(data) // 2] ^= 0xFF  # edited too, so no logged claim holds these bytes
    planted.write_bytes(bytes(data))

    rc, report = _verify(cli, planted)
    assert (rc, report["status"]) == (13, "TAMPERED")
    assert report["evidence"]["claim_embedded"] is True
    assert report["evidence"]["claim"]["signature_valid"] is False
    assert report["evidence"]["damaged_ranges"] == [], report["reasons"]
    assert not any("differ from the signed file" in r for r in report["reasons"])


def _fragmented(path: Path, frames: int) -> None:
    """A 64x64 H.264 fragmented MP4 (as OBS or a browser's MediaRecorder write) of
    ``frames`` key frames, each its own fragment (about 7 boxes apiece)."""
    with av.open(str(path), "w", options={"movflags": "frag_keyframe+empty_moov"}) as out:
        stream = out.add_stream("libx264", rate=30, options={"g": "1", "preset": "ultrafast"})
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            picture = np.full((64, 64, 3), i % 256, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode())


def test_sign_c2pa_of_a_long_fragmented_mp4_says_why_and_what_to_do(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """A fragmented MP4 of 700 fragments (4,927 boxes, over the 4,096 that a C2PA
    manifest is embedded in here): the claim is signed and logged, and the refusal to
    embed says why (the box count and the limit) and what to do (sign without --c2pa:
    the claim's hard binding covers the file's bytes) as a failure (exit 1), the claim
    kept. Before: "a BMFF file of more
    than 4,096 boxes, the limit here: not walked"."""
    video = tmp_path / "recording.mp4"
    _fragmented(video, 700)
    assert bmff_box_count(video.read_bytes(), 10_000) == 4_927
    rc, out, err = cli("sign", "--c2pa", str(video))
    said = " ".join(err.split())
    assert rc == 1 and "C2PA manifest not embedded" in said, said
    assert "not walked" not in said
    assert f"more than {MAX_BMFF_BOXES:,} boxes" in said, said
    assert "sign such files without --c2pa" in said and "hard binding" in said, said
    assert Path(f"{video}.prov").exists()  # the claim itself is made
