"""`prov web`'s ``POST /api/v1/lookup`` and ``/matches/byBinding`` hold a near copy's
answer to the query's PDQ hashes by the service's rule (lookupderived60): the real
`prov serve`'s honest answers pass (rotations sent, several hashes, video frames, odd or
empty media types, the threshold's edge, exact and near REVOKED_KEY), and its genuine
answers for other hashes or another media kind, asked by a real relay that rewrites the
query (revlookup60), are a 502. A real `prov web` in front; no mocks."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from provenance.media.assets import AssetLimits, image_pdq
from provenance.media.video.decode import sample_frames
from provenance.media.video.transcode import transcode
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import Cli, ServerProc, relay, sign_sample
from tests.test_cited_binding import LOOKUP, _forger, server_answer
from tests.test_derived_binding import FAST, _resized, _unrelated_video
from tests.test_web_cited import _web


def _hashes(path: Path) -> tuple[list[bytes], int]:
    """``path``'s 8 dihedral PDQ hashes (its own first) and their quality."""
    return image_pdq(path.read_bytes(), AssetLimits())


def _pdq(hashes: list[bytes], quality: int) -> list[dict[str, Any]]:
    return [{"hash": h.hex(), "quality": quality} for h in hashes]


def _flipped(h: bytes, bits: int) -> bytes:
    """``h`` with its first ``bits`` bits flipped."""
    n = int.from_bytes(h, "big") ^ (((1 << bits) - 1) << (len(h) * 8 - bits))
    return n.to_bytes(len(h), "big")


def _statuses(http: httpx.Client, queries: list[dict[str, Any]]) -> list[str]:
    r = http.post("/api/v1/lookup", json={"queries": queries})
    assert r.status_code == 200, r.text
    return [x["status"] for x in r.json()["results"]]


def test_honest_near_answers_to_a_lookup_pass(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A rotated copy sent with its 8 dihedral hashes as its `pdq` list, a resized copy by
    SHA-256 and PDQ, a query of odd or empty media type, hashes exactly at the threshold
    (31 bits: DERIVED; 32: UNSIGNED), the signed file itself by SHA-256 and PDQ: each the
    real service's answer, 200."""
    a, device_id = sign_sample(enrolled, tmp_path, "grace_hopper.jpg")
    turned = tmp_path / "hopper_turned.jpg"
    Image.open(a).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(turned, quality=80)
    small = _resized(a, tmp_path / "hopper_small.jpg")
    own, q = _hashes(a)
    rot, rq = _hashes(turned)
    sm, sq = _hashes(small)
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, turned, small)}
    with _web(server.address) as http:
        queries = [
            {"ref": "rot1", "pdq": _pdq(rot[:1], rq)},
            {"ref": "rot8", "pdq": _pdq(rot, rq), "sha256": sha[turned.name]},
            {"ref": "small", "pdq": _pdq(sm[:1], sq), "sha256": sha[small.name]},
            {"ref": "odd", "pdq": _pdq(sm[:1], sq), "media_type": "Video/MP4"},
            {"ref": "vid", "pdq": _pdq(sm[:1], sq), "media_type": "video/mp4"},
            {"ref": "empty", "pdq": _pdq(sm[:1], sq), "media_type": ""},
            {"ref": "jpeg", "pdq": _pdq(sm[:1], sq), "media_type": "image/jpeg"},
            {"ref": "at31", "pdq": _pdq([_flipped(own[0], 31)], 100)},
            {"ref": "at32", "pdq": _pdq([_flipped(own[0], 32)], 100)},
            {"ref": "low", "pdq": _pdq(sm[:1], 49)},
            {"ref": "exact", "pdq": _pdq(own[:1], q), "sha256": sha[a.name]},
            {"ref": "many", "pdq": _pdq([_flipped(own[0], 120), sm[0], rot[0]], 100)},
        ]
        refs = [x["ref"] for x in queries]
        near = {"rot8", "small", "odd", "empty", "jpeg", "at31", "many"}
        want = {r: "DERIVED" if r in near else "UNSIGNED" for r in refs}
        want["exact"] = "SIGNED_ORIGINAL"
        assert dict(zip(refs, _statuses(http, queries), strict=True)) == want
        binding = base64.b64encode(_flipped(own[0], 31)).decode()
        r = http.get("/matches/byBinding", params={"alg": "pdq", "value": binding})
        assert r.status_code == 200 and len(r.json()["matches"]) == 1, r.text
        odd = {"ref": "p", "pdq": _pdq(sm[:1], sq), "media_type": "image/jpeg; charset=x"}
        r = http.post("/api/v1/lookup", json={"queries": [odd]})
        assert r.status_code == 400, r.text
        rc, out, err = enrolled(
            "admin", "revoke", device_id, "--reason", "R", "--since", "2026-01-01T00:00:00Z"
        )
        assert rc == 0, (out, err)
        revoked = {r: "REVOKED_KEY" if s != "UNSIGNED" else s for r, s in want.items()}
        assert dict(zip(refs, _statuses(http, queries), strict=True)) == revoked
        r = http.get("/matches/byBinding", params={"alg": "pdq", "value": binding})
        assert r.status_code == 200 and len(r.json()["matches"]) == 1, r.text
        exact = [{"ref": "x", "sha256": sha[a.name]}]
        assert _statuses(http, exact) == ["REVOKED_KEY"]


def _frames(path: Path) -> list[dict[str, Any]]:
    """``path``'s 1 Hz frames' PDQ hashes as a lookup's `pdq` list, with their times."""
    return [
        {
            "hash": f.pdq.hash.hex(),
            "quality": f.pdq.quality,
            "timestamp_seconds": f.pdq.timestamp_seconds,
        }
        for f in sample_frames(path).frames
    ]


def test_honest_video_answers_to_a_lookup_pass(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A transcoded copy of a signed video, its frames sent with their times as a video's,
    as an image's (odd casing, none, an image type) and one frame alone: the real
    service's DERIVED answers, 200."""
    video, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    small = tmp_path / "fabric_small.mp4"
    transcode(video, small, 180, 320, crf=34, encoder_options=FAST)
    frames = _frames(small)
    queries = [
        {"ref": "vid", "pdq": frames, "media_type": "video/mp4"},
        {"ref": "odd", "pdq": frames, "media_type": "Video/MP4"},
        {"ref": "none", "pdq": frames},
        {"ref": "img", "pdq": frames[2:3], "media_type": "image/jpeg"},
        {"ref": "one", "pdq": frames[2:3], "media_type": "video/mp4"},
    ]
    with _web(server.address) as http:
        got = _statuses(http, queries)
    assert got == ["DERIVED"] * 5, got


def _rewriting(
    server: str, softs: list[dict[str, Any]], media_type: str | None = None
) -> AbstractContextManager[str]:
    """A relay in front of ``server`` that forwards each Lookup query with its PDQ hashes
    replaced by ``softs`` (and its media type by ``media_type`` unless None): the real
    service's genuine answer, but for other hashes than the query's."""

    def lookup(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked = pb.LookupRequest.FromString(request)
        for q in asked.queries:
            del q.soft_bindings[:]
            for s in softs:
                q.soft_bindings.add(
                    algorithm="pdq",
                    hash=bytes.fromhex(s["hash"]),
                    quality=s["quality"],
                    timestamp_seconds=s.get("timestamp_seconds", 0.0),
                )
            if media_type is not None:
                q.media_type = media_type
        return forward(bytes(asked.SerializeToString()))

    return relay(server, {LOOKUP: lookup})


def _refused_502(r: httpx.Response, words: str) -> None:
    assert r.status_code == 502, r.text
    assert words in r.json()["error"]["message"], r.json()


def test_the_service_answer_for_other_hashes_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A relay forwarding the query with other hashes than it sent: the rotated copy's 8
    for its one (the service matches only the turns a query sends), the signed hash 31
    bits off for the query's 32 bits off: the genuine DERIVED answer is of other hashes,
    502."""
    a, _ = sign_sample(enrolled, tmp_path, "grace_hopper.jpg")
    turned = tmp_path / "hopper_turned.jpg"
    Image.open(a).convert("RGB").transpose(Image.Transpose.ROTATE_90).save(turned, quality=80)
    own, _ = _hashes(a)
    rot, rq = _hashes(turned)
    cases = [
        (_pdq(rot, rq), {"ref": "rot1", "pdq": _pdq(rot[:1], rq)}),
        (
            _pdq([_flipped(own[0], 31)], 100),
            {"ref": "at32", "pdq": _pdq([_flipped(own[0], 32)], 100)},
        ),
        (_pdq(own[:1], 100), {"ref": "low", "pdq": _pdq(own[:1], 49)}),
    ]
    for softs, query in cases:
        with _rewriting(server.address, softs) as address, _web(address) as http:
            r = http.post("/api/v1/lookup", json={"queries": [query]})
            _refused_502(r, f"(ref '{query['ref']}'): the server answered DERIVED citing a claim")


def test_a_video_answer_for_other_frames_or_another_kind_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A relay forwarding a video query with a signed video's copy's frames for the
    unrelated frames it sent, or as an image's, or an image query as a video's: 502."""
    video, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    small = tmp_path / "fabric_small.mp4"
    transcode(video, small, 180, 320, crf=34, encoder_options=FAST)
    frames = _frames(small)
    cat = _frames(_unrelated_video(tmp_path / "cat.mp4"))
    mixed = [{**frames[2], "timestamp_seconds": 0.0}, *cat[1:]]
    with _web(server.address) as http:  # as the real service matches them
        kinds = [{"ref": "v", "pdq": mixed, "media_type": k} for k in ("video/mp4", "image/jpeg")]
        assert _statuses(http, kinds) == ["UNSIGNED", "DERIVED"]
    cases = [
        (frames, None, {"ref": "cat", "pdq": cat, "media_type": "video/mp4"}),
        (frames, "video/mp4", {"ref": "img", "pdq": cat[:1], "media_type": "image/jpeg"}),
        (mixed, "image/jpeg", {"ref": "mixed", "pdq": mixed, "media_type": "video/mp4"}),
    ]
    for softs, kind, query in cases:
        with _rewriting(server.address, softs, kind) as address, _web(address) as http:
            r = http.post("/api/v1/lookup", json={"queries": [query]})
            _refused_502(r, f"(ref '{query['ref']}'): the server answered DERIVED citing a claim")


def test_a_binding_answer_for_another_hash_is_refused_and_documented(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """``/matches/byBinding`` for a hash 32 bits from a signed photo's, through a relay
    that asks the service for one 31 bits off: 502, GET and POST; the hash 31 bits off
    itself (base64url, unpadded) still matches. Its OpenAPI description lists the 502
    (lookupderived60 made it one; before revlookup60, GET listed 400 alone, POST 400 and
    415)."""
    a, _ = sign_sample(enrolled, tmp_path, "grace_hopper.jpg")
    own, _ = _hashes(a)
    near = _flipped(own[0], 31)
    far = base64.b64encode(_flipped(own[0], 32)).decode()
    with _rewriting(server.address, _pdq([near], 100)) as address, _web(address) as http:
        said = "the binding: the server answered DERIVED citing a claim"
        _refused_502(http.get("/matches/byBinding", params={"alg": "pdq", "value": far}), said)
        _refused_502(http.post("/matches/byBinding", json={"alg": "pdq", "value": far}), said)
        value = base64.urlsafe_b64encode(near).decode().rstrip("=")
        r = http.get("/matches/byBinding", params={"alg": "pdq", "value": value})
        assert r.status_code == 200 and len(r.json()["matches"]) == 1, r.text
        doc = http.get("/openapi.json").json()["paths"]["/matches/byBinding"]
        for method in ("get", "post"):
            assert "502" in doc[method]["responses"], (method, doc[method]["responses"])


def test_a_near_revoked_answer_flagged_exact_is_held_to_the_bytes(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """The genuine near REVOKED_KEY answer for a resized copy of a photo whose key was
    revoked, relayed with ``hash_match`` set (as if it were of the exact bytes) for
    another file's SHA-256 with the copy's PDQ hash, or for the copy's PDQ hash alone:
    502, held to the bytes (the claim binds neither); as it came (a near match), for the
    copy's hash: 200 REVOKED_KEY."""
    a, device_id = sign_sample(enrolled, tmp_path, "grace_hopper.jpg")
    small = _resized(a, tmp_path / "hopper_small.jpg")
    rc, out, err = enrolled(
        "admin", "revoke", device_id, "--reason", "R", "--since", "2026-01-01T00:00:00Z"
    )
    assert rc == 0, (out, err)
    genuine = server_answer(server.address, small)
    assert genuine.status == pb.REVOKED_KEY and not genuine.evidence.hash_match, genuine
    sm, sq = _hashes(small)
    other = hashlib.sha256(b"another file").digest()
    for sent, query in (
        (other, {"ref": "other", "sha256": other.hex(), "pdq": _pdq(sm[:1], sq)}),
        (bytes(32), {"ref": "bare", "pdq": _pdq(sm[:1], sq)}),
    ):
        for exact in (True, False):
            forged = pb.VerificationReport()
            forged.CopyFrom(genuine)
            forged.evidence.file_sha256 = sent
            forged.evidence.hash_match = exact
            for address in _forger(server.address, bytes(forged.SerializeToString())):
                with _web(address) as http:
                    r = http.post("/api/v1/lookup", json={"queries": [query]})
                    if exact:
                        _refused_502(r, "the server cited a claim of other bytes")
                    else:
                        assert r.status_code == 200, r.text
                        assert r.json()["results"][0]["status"] == "REVOKED_KEY", r.text


def _answering(server: str, forged: dict[str, bytes]) -> AbstractContextManager[str]:
    """A relay in front of ``server`` that forwards each Lookup and puts, in place of the
    service's answer for a query whose ref is a key of ``forged``, that report (bytes of
    a VerificationReport); the other answers pass as they came."""

    def lookup(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.LookupResponse.FromString(forward(request))
        for result in answer.results:
            if result.ref in forged:
                result.report.CopyFrom(pb.VerificationReport.FromString(forged[result.ref]))
        return bytes(answer.SerializeToString())

    return relay(server, {LOOKUP: lookup})


def test_a_lookup_answered_tampered_or_unsigned_citing_a_claim_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """An honest service never answers a lookup (hashes alone: no bytes, no sidecar)
    TAMPERED, nor UNSIGNED citing a claim or listing one as also signed, nor REVOKED_KEY
    citing none (`clients.cited.check_lookup_verdict`). A relay answering so with the
    signed photo's genuine claim, for another file's SHA-256 or the photo's own: 502
    naming the query (lookupcite60: before, 200 with the verdict and the claim shown).
    The real service's UNSIGNED and SIGNED_ORIGINAL answers through the same relay: 200."""
    a, _ = sign_sample(enrolled, tmp_path, "grace_hopper.jpg")
    genuine = server_answer(server.address, a)
    assert genuine.status == pb.SIGNED_ORIGINAL and genuine.evidence.HasField("claim"), genuine
    own = hashlib.sha256(a.read_bytes()).digest()
    other = hashlib.sha256(b"another file").digest()

    def forged(status: int, sent: bytes, cited: bool = True, also: bool = False) -> bytes:
        f = pb.VerificationReport()
        f.CopyFrom(genuine)
        f.status = status  # type: ignore[assignment]
        f.evidence.file_sha256 = sent
        f.evidence.hash_match = status != pb.REVOKED_KEY
        if also:
            f.evidence.other_claims.add().CopyFrom(genuine.evidence.claim)
        if not cited:
            f.evidence.ClearField("claim")
        return bytes(f.SerializeToString())

    cases = {
        "tampered": (forged(pb.TAMPERED, other), other, "answered TAMPERED to a lookup"),
        "tampered-own": (forged(pb.TAMPERED, own), own, "answered TAMPERED to a lookup"),
        "unsigned": (forged(pb.UNSIGNED, other), other, "answered UNSIGNED citing a claim"),
        "unsigned-also": (
            forged(pb.UNSIGNED, own, cited=False, also=True),
            own,
            "answered UNSIGNED listing 1 claim as also signed",
        ),
        "revoked": (
            forged(pb.REVOKED_KEY, other, cited=False),
            other,
            "answered REVOKED_KEY citing no claim",
        ),
    }
    with (
        _answering(server.address, {ref: c[0] for ref, c in cases.items()}) as address,
        _web(address) as http,
    ):
        for ref, (_, sent, words) in cases.items():
            r = http.post("/api/v1/lookup", json={"queries": [{"ref": ref, "sha256": sent.hex()}]})
            _refused_502(r, f"(ref '{ref}'): the server {words}")
        honest = [{"ref": "plain", "sha256": other.hex()}, {"ref": "signed", "sha256": own.hex()}]
        assert _statuses(http, honest) == ["UNSIGNED", "SIGNED_ORIGINAL"]
