"""`prov web --log-key KEY` (h-pinkey60): the explorer and the log API check every
checkpoint they read with the pinned key. An honest service under a correct pin is
answered as without one (200), whether the key is given as text, as a file or as
$PROV_LOG_KEY, on an empty log too; a relay that presents the pinned key but signs its
checkpoint with another, or adds a line under the pinned key's name to a note it made,
is a 502. A lookup's verdict (`POST /api/v1/lookup`, `/matches/byBinding`) is held to
the pinned key too (revpin60). A real `prov serve`, real claims of a real device, a real
gRPC relay, a real `prov web`."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.api import ProvenanceClient
from provenance.log.checkpoint import NoteVerifier
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import SAMPLES, Cli, RelayAnswer, ServerProc, relay, sign_sample
from tests.test_web_cited import _web
from tests.test_web_entry_pages import own_key_rollback

_GET_LOG_KEY = "/provenance.v1.Log/GetLogKey"
_GET_CHECKPOINT = "/provenance.v1.Log/GetCheckpoint"


def _real_key(server: ServerProc) -> tuple[str, str]:
    """(verifier key, origin) of the real log of ``server``."""
    with ProvenanceClient(server.address, timeout=60) as c:
        return c.log_key()


@pytest.fixture
def three_entries(enrolled: Cli, server: ServerProc, tmp_path: Path) -> ServerProc:
    """The server with the enrollment and two signed captures logged: entries 0 to 2."""
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")
    return server


def _all_read_200(http: httpx.Client, real: str) -> None:
    """Every page and API route that reads a checkpoint answers 200 on the honest log of
    3 entries, the checkpoint's key the pinned one."""
    rocket = hashlib.sha256((SAMPLES / "rocket.jpg").read_bytes()).hexdigest()
    r = http.get("/api/v1/checkpoint")
    assert r.status_code == 200, r.text
    assert r.json()["log_key"] == real and r.json()["size"] == 3, r.text
    for path, params in [
        ("/api/v1/entries/0", {}),
        ("/api/v1/entries/2", {}),
        ("/api/v1/entries", {"sha256": rocket}),
        ("/api/v1/entries", {"start": "0", "limit": "100"}),
        ("/api/v1/entries", {"start": "3", "limit": "5"}),  # past the end: the size read
        ("/api/v1/proofs/consistency", {"first": "1"}),
        ("/manifests/1", {}),
        ("/log", {}),
        ("/log", {"before": "1"}),
        ("/log/entries/1", {}),
        ("/log/consistency", {"first": "2"}),
    ]:
        r = http.get(path, params=params)
        assert r.status_code == 200, (path, params, r.text)
    assert http.get("/api/v1/entries", params={"start": "3"}).json()["entries"] == []


def test_an_honest_service_under_a_key_file_is_answered_200(
    three_entries: ServerProc, tmp_path: Path
) -> None:
    """--log-key FILE, the key on a line of its own with blanks around it."""
    real, _ = _real_key(three_entries)
    key_file = tmp_path / "log.vkey"
    key_file.write_text(f"\n  {real}  \n")
    with _web(three_entries.address, "--log-key", str(key_file)) as http:
        _all_read_200(http, real)


def test_an_honest_service_under_prov_log_key_is_answered_200(
    three_entries: ServerProc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$PROV_LOG_KEY, the key's text with a newline after it (as `$(prov log key)` is not,
    but a copied line may be)."""
    real, _ = _real_key(three_entries)
    monkeypatch.setenv("PROV_LOG_KEY", real + "\n")
    with _web(three_entries.address) as http:
        _all_read_200(http, real)


def test_an_empty_log_under_a_pinned_key_is_no_502(server: ServerProc) -> None:
    """Nothing logged yet: /log is 200 (the empty explorer), the checkpoint 404 saying
    the log is empty, a listing 200 with no entries, as without a pin."""
    real, _ = _real_key(server)
    for args in [(), ("--log-key", real)]:
        with _web(server.address, *args) as http:
            assert http.get("/log").status_code == 200, args
            r = http.get("/api/v1/checkpoint")
            assert r.status_code == 404 and "empty" in r.text, (args, r.text)
            r = http.get("/api/v1/entries", params={"start": "0"})
            assert r.status_code == 200 and r.json()["entries"] == [], (args, r.text)


def _presenting(real: str, note: Callable[[str], str]) -> dict[str, RelayAnswer]:
    """A relay's answers: GetLogKey the pinned (real) key, GetCheckpoint ``note`` of the
    real log's note."""
    origin = real.split("+", 1)[0]

    def log_key(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.GetLogKeyResponse(verifier_key=real, origin=origin)
        return bytes(answer.SerializeToString())

    def checkpoint(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        genuine = pb.GetCheckpointResponse.FromString(forward(request)).checkpoint
        return bytes(pb.GetCheckpointResponse(checkpoint=note(genuine)).SerializeToString())

    return {_GET_LOG_KEY: log_key, _GET_CHECKPOINT: checkpoint}


def _own_rollback(real: str, server: ServerProc) -> Callable[[str], str]:
    """A checkpoint of the real log's first 2 entries under its origin, signed by a key
    of the relay's own (`own_key_rollback`)."""
    forged = own_key_rollback(server)[3]
    return lambda genuine: forged


def _with_forged_line(real: str, server: ServerProc) -> Callable[[str], str]:
    """The relay's own rollback note (`_own_rollback`) with a second signature line under
    the pinned key's name and id, its signature the genuine one over the real note's
    body (so over other content)."""
    own = _own_rollback(real, server)
    key_id = NoteVerifier.from_vkey(real).key_id

    def note(genuine: str) -> str:
        body, sigs = genuine.split("\n\n", 1)
        blob = next(
            base64.b64decode(line.rsplit(" ", 1)[1])
            for line in sigs.splitlines()
            if base64.b64decode(line.rsplit(" ", 1)[1])[:4] == key_id
        )
        name = real.split("+", 1)[0]
        line = f"\u2014 {name} {base64.b64encode(blob).decode()}\n"
        return own(genuine) + line

    return note


@pytest.mark.parametrize("forge", [_own_rollback, _with_forged_line], ids=["own-key", "two-lines"])
def test_a_relay_presenting_the_pinned_key_but_signing_with_another_is_502(
    three_entries: ServerProc, forge: Callable[[str, ServerProc], Callable[[str], str]]
) -> None:
    """The relay answers GetLogKey with the pinned key, its checkpoint signed by a key of
    its own (and, "two-lines", a line under the pinned key's name whose signature is the
    log's over another body): every checkpoint read is a 502 naming the pinned key."""
    real, _ = _real_key(three_entries)
    answers = _presenting(real, forge(real, three_entries))
    with relay(three_entries.address, answers) as address, _web(address, "--log-key", real) as http:
        for path, params in [
            ("/api/v1/checkpoint", {}),
            ("/api/v1/entries/0", {}),
            ("/api/v1/entries", {"start": "3"}),
            ("/api/v1/proofs/consistency", {"first": "1"}),
            ("/manifests/0", {}),
            ("/log", {}),
            ("/log/entries/0", {}),
        ]:
            r = http.get(path, params=params)
            assert r.status_code == 502, (path, r.text)
            assert "pinned with --log-key" in r.text, (path, r.text)


def _lookup_body(path: Path) -> dict[str, Any]:
    """A lookup of ``path`` by its SHA-256 and its PDQ hash, as an API client sends it,
    and one of unrelated bytes (UNSIGNED, nothing to prove)."""
    from provenance.media.assets import AssetLimits, image_pdq

    hashes, quality = image_pdq(path.read_bytes(), AssetLimits())
    return {
        "queries": [
            {
                "ref": "rocket",
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "pdq": [{"hash": hashes[0].hex(), "quality": quality}],
            },
            {"ref": "unsigned", "sha256": "ab" * 32},
        ]
    }


def test_a_lookup_verdict_is_checked_with_the_pinned_key(
    three_entries: ServerProc, tmp_path: Path
) -> None:
    """`POST /api/v1/lookup` and `/matches/byBinding` under --log-key: the receipt of the
    claim each verdict cites must verify with the pinned key, as an upload's must and as
    `prov scan --log-key` checks its lookups (--log-key's help: "a verdict whose evidence
    does not verify is answered 502"). Under another log's key: 502 naming it; under the
    real one: 200, SIGNED_ORIGINAL and a match. (Before revpin60: 200 under another log's
    key, the service's receipts relayed unchecked.)"""
    from provenance.log.checkpoint import generate_log_key
    from provenance.media.assets import AssetLimits, image_pdq

    real, origin = _real_key(three_entries)
    other = tmp_path / "other"
    other.mkdir()
    wrong = generate_log_key(other / "key.pem", origin).verifier_key()
    body = _lookup_body(SAMPLES / "rocket.jpg")
    hashes, _ = image_pdq((SAMPLES / "rocket.jpg").read_bytes(), AssetLimits())
    binding = {"alg": "pdq", "value": base64.b64encode(hashes[0]).decode()}
    with _web(three_entries.address, "--log-key", wrong) as http:
        r = http.post("/api/v1/lookup", json=body)
        assert r.status_code == 502, r.text
        said = " ".join(r.json()["error"]["message"].split())
        assert "queries[0]" in said and wrong.split("+")[1] in said, said
        r = http.get("/matches/byBinding", params=binding)
        assert r.status_code == 502, r.text
    with _web(three_entries.address, "--log-key", real) as http:
        r = http.post("/api/v1/lookup", json=body)
        assert r.status_code == 200, r.text
        got = [x["status"] for x in r.json()["results"]]
        assert got == ["SIGNED_ORIGINAL", "UNSIGNED"], r.text
        r = http.get("/matches/byBinding", params=binding)
        assert r.status_code == 200 and r.json()["matches"], r.text


def test_the_openapi_document_lists_502_where_a_checkpoint_is_read() -> None:
    """Each API route whose checkpoint a relay's own key makes a 502 (above) lists 502 in
    the OpenAPI document. (Before revpin60, `/manifests/{manifestId}` listed 200, 400 and
    404 alone.)"""
    from provenance.web.openapi import openapi_document

    paths = openapi_document()["paths"]
    for path in [
        "/api/v1/checkpoint",
        "/api/v1/entries",
        "/api/v1/entries/{index}",
        "/api/v1/proofs/consistency",
        "/manifests/{manifestId}",
    ]:
        assert "502" in paths[path]["get"]["responses"], (path, paths[path]["get"]["responses"])
