"""The web page must not relay a verdict whose evidence is of other bytes. A hostile or
broken gRPC service (or a relay between `prov web` and it) can answer photo B with the
genuine, logged report of photo A; `prov verify` refuses that (`clients.cited`), and so
must the page and the JSON API: 502 naming the problem, never the forged verdict. With a
pinned log key (`prov web --log-key`, `PROV_LOG_KEY`) the cited claim's receipt is also
checked, as `prov verify --log-key` does, and ``evidence_checked`` says "log-key".
A real `prov serve`, a real hostile gRPC relay on a real port in front of it
(`tests.test_cited_binding._forger`), a real `prov web` process, uploads over HTTP."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.log.checkpoint import generate_log_key
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from tests.conftest import SAMPLES, Cli, ServerProc, sign_sample, start_web
from tests.conftest import relay as relay_server
from tests.test_cited_binding import (
    LOOKUP,
    _big_c2pa_png,
    _forger,
    _genuine_answer,
    server_answer,
)
from tests.test_derived_binding import _forged_for, _resized
from tests.test_verify_log_key import _invented_claim
from tests.test_web_browser import CHROMEDRIVER, CHROMIUM, SHOTS, _driver, _verify_here

#: What the page shows of a report (its log entry's link): absent from an error page.
REPORT_MARK = 'id="log-entry-link"'


@contextmanager
def _web(server: str, *extra: str) -> Iterator[httpx.Client]:
    web = start_web(server, *extra)
    try:
        with httpx.Client(base_url=web.address, timeout=120) as http:
            yield http
    finally:
        web.stop()


def _upload(http: httpx.Client, path: Path, page: bool = False) -> httpx.Response:
    files = {"file": (path.name, path.read_bytes())}
    return http.post("/verify" if page else "/api/v1/verify", files=files, params={"detect": "0"})


def _refused(r: httpx.Response, words: str, *hidden: str) -> None:
    """A 502 BAD_GATEWAY JSON error whose message holds ``words`` and none of ``hidden``."""
    assert r.status_code == 502, (r.status_code, r.text)
    error = r.json()["error"]
    assert (error["code"], error["status"]) == (502, "BAD_GATEWAY"), error
    assert words in error["message"], error
    assert "status" not in r.json(), r.json()
    for h in hidden:
        assert h not in error["message"], (h, error)


def _refused_page(r: httpx.Response, words: str) -> None:
    text = html.unescape(r.text)
    assert r.status_code == 502, (r.status_code, text)
    assert words in " ".join(text.split()), text
    assert REPORT_MARK not in text, text


@pytest.mark.parametrize("file_hash", ["as_sent_for_a", "rewritten_to_b"])
def test_the_page_refuses_a_verdict_citing_other_bytes(
    enrolled: Cli, server: ServerProc, tmp_path: Path, file_hash: str
) -> None:
    """(h-web53: before, the page and the API answered B 200 SIGNED_ORIGINAL with A's
    evidence.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
    forged = _genuine_answer(server.address, a)
    if file_hash == "rewritten_to_b":
        forged.evidence.file_sha256 = hashlib.sha256(b.read_bytes()).digest()
    said = "answered for other bytes" if file_hash == "as_sent_for_a" else "a claim of other bytes"
    for relay in _forger(server.address, forged.SerializeToString()):
        with _web(relay) as http:
            _refused(_upload(http, b), said, relay, server.address)
            _refused_page(_upload(http, b, page=True), said)
            r = http.post("/matches/byContent", content=b.read_bytes())
            _refused(r, said, relay, server.address)
            if file_hash == "rewritten_to_b":
                continue
            # the honest answer for A itself (the relay answers A's own report): shown
            r = _upload(http, a)
            assert r.status_code == 200 and r.json()["status"] == "SIGNED_ORIGINAL", r.text
            assert r.json()["evidence_checked"] is None, r.json()
            page = _upload(http, a, page=True)
            assert page.status_code == 200 and REPORT_MARK in page.text, page.text


def test_a_large_c2pa_upload_citing_other_bytes_is_refused_after_its_stripped_hash(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A file with Content Credentials, larger than the 8 MiB the page holds before it
    relays: the claim cited binds neither its bytes nor its bytes without the manifest
    store, which the page hashes from its bounded spool of the upload (the message names
    that hash)."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    big = _big_c2pa_png(tmp_path, 12 * 1024**2)
    forged = _genuine_answer(server.address, a)
    forged.evidence.file_sha256 = hashlib.sha256(big.read_bytes()).digest()
    for relay in _forger(server.address, forged.SerializeToString()):
        with _web(relay) as http:
            _refused(_upload(http, big), "without its Content Credentials")


@pytest.mark.parametrize("status", ["DERIVED", "REVOKED_KEY"])
def test_a_derived_answer_for_an_unrelated_photo_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path, status: str
) -> None:
    """The genuine DERIVED answer of a resized copy of the signed rocket photo, relayed as
    the answer for the unrelated cat photo (its own file hash, so only the soft binding
    can tell): 502 from the API and the page, naming the PDQ distance found, as `prov
    verify` refuses it (`clients.derived.check_derived`; h-webderived53: before, 200
    with the forged verdict). The honest answer for the copy itself, through the same
    relay, is still 200 DERIVED."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    copy = _resized(a, tmp_path / "rocket_small.jpg")
    cat = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    genuine = server_answer(server.address, copy)
    forged = _forged_for(genuine, cat, pb.Verdict.Value(status))
    said = "past the match threshold of 31"
    for relay in _forger(server.address, forged):
        with _web(relay) as http:
            _refused(_upload(http, cat), said, relay, server.address)
            _refused_page(_upload(http, cat, page=True), said)
            r = http.post("/matches/byContent", content=cat.read_bytes())
            _refused(r, said, relay, server.address)
    honest = _forged_for(genuine, copy, pb.DERIVED)
    for relay in _forger(server.address, honest):
        with _web(relay) as http:
            r = _upload(http, copy)
            assert r.status_code == 200 and r.json()["status"] == "DERIVED", r.text
            page = _upload(http, copy, page=True)
            assert page.status_code == 200 and REPORT_MARK in page.text, page.text


def test_an_honest_c2pa_capture_is_shown(ca_server: ServerProc, cli: Cli, tmp_path: Path) -> None:
    """`prov sign --c2pa` embeds a manifest store after signing: the claim binds the file
    without it, so the page must hash the upload's stripped bytes to see the claim binds
    it (a check on the bytes as sent alone would refuse every such capture)."""
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    rc, out, err = cli("sign", "--c2pa", str(photo))
    assert rc == 0, (out, err)
    with _web(ca_server.address) as http:
        r = _upload(http, photo)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "SIGNED_ORIGINAL", body
    bound = body["evidence"]["claim"]["sha256"]
    assert bound != body["file"]["sha256"], body  # bound without the store


def _log_key(server: ServerProc) -> str:
    with ProvenanceClient(server.address) as c:
        return c.log_key()[0]


@pytest.mark.parametrize("pin", ["flag", "env"])
def test_a_pinned_log_key_checks_the_evidence(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pin: str,
) -> None:
    """`prov web --log-key KEY` (or PROV_LOG_KEY): a claim invented to bind B, cited with
    A's genuine checkpoint and proof, is refused (its inclusion proof does not lead to the
    checkpoint's root); the honest report of A says ``evidence_checked: "log-key"``, the
    object `prov verify --json --log-key` prints. (h-web53: before, no such option: the
    forged claim was shown SIGNED_ORIGINAL and ``evidence_checked`` was always null.)"""
    sign_sample(enrolled, tmp_path, "chelsea.png")  # a second leaf: proofs are not empty
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "grace_hopper.jpg"))
    key = _log_key(server)
    extra: tuple[str, ...] = ("--log-key", key)
    if pin == "env":
        monkeypatch.setenv("PROV_LOG_KEY", key)
        extra = ()
    forged = _genuine_answer(server.address, a)
    _invented_claim(forged, b)
    for relay in _forger(server.address, forged.SerializeToString()):
        with _web(relay) as http:  # unpinned: the invented claim binds B's bytes
            if pin == "flag":
                r = _upload(http, b)
                assert r.status_code == 200 and r.json()["status"] == "SIGNED_ORIGINAL", r.text
        with _web(relay, *extra) as http:
            _refused(_upload(http, b), "inclusion proof", relay, server.address)
            _refused_page(_upload(http, b, page=True), "inclusion proof")
    with _web(server.address, *extra) as http:
        web = _upload(http, a).json()
        page = _upload(http, a, page=True)
    assert web["status"] == "SIGNED_ORIGINAL" and web["evidence_checked"] == "log-key", web
    assert page.status_code == 200 and "with this page's pinned log key" in page.text, page.text
    capsys.readouterr()
    args = ["verify", str(a), "--json", "--no-detect", "--no-sidecar", "--server", server.address]
    rc = prov_main([*args, "--log-key", key])
    cli_doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert rc == 0, cli_doc
    for d in (web, cli_doc):
        d.pop("verified_at")
        d.pop("path")
    assert web == cli_doc


def test_a_pinned_key_the_service_does_not_present_is_warned_of_at_start(
    server: ServerProc, tmp_path: Path
) -> None:
    """A --log-key of another log (a mistake that would make every signed verdict a 502)
    is named at start, on stderr, with the key the service presents; the page starts."""
    other = generate_log_key(tmp_path / "other.pem", "other.example/log").verifier_key()
    web = start_web(server.address, "--log-key", other)
    try:
        wanted = f"presents the log key {_log_key(server)}, not the one pinned with --log-key"
        deadline = time.monotonic() + 30  # the warning comes before the "web on" line
        while wanted not in web.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wanted in web.stderr(), web.stderr()
        assert other in web.stderr(), web.stderr()
    finally:
        web.stop()
    quiet = start_web(server.address, "--log-key", _log_key(server))
    try:
        assert httpx.get(quiet.address + "/", timeout=60).status_code == 200
    finally:
        quiet.stop()
    assert "presents the log key" not in quiet.stderr(), quiet.stderr()


def test_a_log_key_that_is_no_verifier_key_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As `prov verify --log-key`: exit 2 naming the option, before anything starts."""
    rc = prov_main(["web", "--server", "127.0.0.1:1", "--log-key", "not-a-key"])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "--log-key" in err and "not a log verifier key" in err, err


@pytest.mark.slow
def test_the_page_in_a_browser_shows_the_refusal_not_the_verdict(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """Headless Chromium on the page, its script uploading B through the hostile relay:
    the result is this page's own alert (the 502 is one of ours, not a proxy's page) with
    its title and the reason, and no verdict; then A, the relay's honest answer, shows
    its verdict on the same page."""
    from selenium.webdriver.common.by import By

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("headless Chromium is not installed: apt-get install chromium chromium-driver")
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
    forged = _genuine_answer(server.address, a)
    forged.evidence.file_sha256 = hashlib.sha256(b.read_bytes()).digest()
    driver = _driver(tmp_path / "profile", javascript=True)
    try:
        driver.set_page_load_timeout(120)
        for relay in _forger(server.address, forged.SerializeToString()):
            web = start_web(relay)
            try:
                driver.get(web.address + "/")
                shown = _verify_here(driver, b)
                SHOTS.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(SHOTS / "refused-answer.png"))
                alert = driver.find_element(By.CSS_SELECTOR, "#result [role=alert]").text
                assert "The verification service's answer was refused" in alert, shown
                assert "cited a claim of other bytes" in alert, shown
                assert "instead of a report" not in alert, shown  # not taken for a proxy's
                assert not driver.find_elements(By.ID, "status"), shown
                assert "Error" in driver.title, driver.title
            finally:
                web.stop()
        # the same page against an honest service: A's verdict (the form still works)
        web = start_web(server.address)
        try:
            driver.get(web.address + "/")
            _verify_here(driver, b)
            _verify_here(driver, a)
            assert driver.find_element(By.ID, "status").text == "SIGNED_ORIGINAL"
        finally:
            web.stop()
    finally:
        driver.quit()


@pytest.mark.parametrize("file_hash", ["as_sent_for_a", "rewritten_to_b"])
def test_a_lookup_answer_citing_other_bytes_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path, file_hash: str
) -> None:
    """``POST /api/v1/lookup`` sends hashes, not bytes: the claim a verdict cites must bind
    the SHA-256 the query sent (or its ``content_sha256``). A hostile service answering
    B's hash with A's genuine report is refused 502, for the whole batch; A's own hash
    (and a batch holding it and a PDQ-only query) is shown. (Before: 200
    SIGNED_ORIGINAL for B with A's evidence.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
    sha_a = hashlib.sha256(a.read_bytes()).hexdigest()
    sha_b = hashlib.sha256(b.read_bytes()).hexdigest()
    forged = _genuine_answer(server.address, a)
    if file_hash == "rewritten_to_b":
        forged.evidence.file_sha256 = bytes.fromhex(sha_b)
    said = "answered for other bytes" if file_hash == "as_sent_for_a" else "a claim of other bytes"
    for relay in _forger(server.address, forged.SerializeToString()):
        with _web(relay) as http:
            queries: list[dict[str, Any]] = [
                {"ref": "b", "sha256": sha_b},
                {"ref": "a", "sha256": sha_a},
            ]
            _refused(http.post("/api/v1/lookup", json={"queries": queries}), said, relay)
            _refused(
                http.post("/api/v1/lookup", json={"queries": [{"sha256": sha_b}]}), said, relay
            )
            # content_sha256 names B's bytes without a manifest store: still not A's claim
            one = {"sha256": sha_b, "content_sha256": "00" * 32}
            _refused(http.post("/api/v1/lookup", json={"queries": [one]}), said, relay)
            if file_hash == "rewritten_to_b":
                continue
            r = http.post("/api/v1/lookup", json={"queries": [{"ref": "a", "sha256": sha_a}]})
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["status"] == "SIGNED_ORIGINAL", r.json()
    with _web(server.address) as http:  # the honest service: every answer shown
        pdq = {"hash": "f" * 64, "quality": 100}
        queries = [{"ref": "a", "sha256": sha_a}, {"ref": "b", "sha256": sha_b}, {"pdq": [pdq]}]
        r = http.post("/api/v1/lookup", json={"queries": queries})
        assert r.status_code == 200, r.text
        statuses = [x["status"] for x in r.json()["results"]]
        assert statuses[:2] == ["SIGNED_ORIGINAL", "UNSIGNED"], r.json()


class _EarlyAnswer(grpc.GenericRpcHandler):
    """Answers VerifyFile with ``forged`` after reading ``after`` request messages, before
    the upload's end (the rest is never read); relays every other unary call."""

    def __init__(self, real: str, forged: bytes, after: int) -> None:
        self.channel = grpc.insecure_channel(real)
        self.forged, self.after = forged, after

    def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(details.method)
        if method.endswith("/VerifyFile"):

            def upload(requests: Iterator[bytes], context: Any) -> bytes:
                for n, _ in enumerate(requests, 1):
                    if n >= self.after:
                        break
                return self.forged

            return grpc.stream_unary_rpc_method_handler(upload)
        relay: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(method)

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            return bytes(relay(request, timeout=60))

        return grpc.unary_unary_rpc_method_handler(unary)


def test_an_answer_before_the_whole_upload_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A service that answers an upload of A followed by 24 MiB more with A's genuine
    report, after reading its first few blocks, answered for bytes it was not all sent:
    502, on the API, the page and ``/matches/byContent``; the same relay's answer for A
    alone, after reading all of it, is shown."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    longer = tmp_path / "longer.jpg"
    longer.write_bytes(a.read_bytes() + bytes(24 * 1024**2))
    forged = _genuine_answer(server.address, a).SerializeToString()
    relay_server = grpc.server(futures.ThreadPoolExecutor(4))
    handler = _EarlyAnswer(server.address, forged, 3)
    relay_server.add_generic_rpc_handlers((handler,))
    relay = f"127.0.0.1:{relay_server.add_insecure_port('127.0.0.1:0')}"
    relay_server.start()
    try:
        with _web(relay) as http:
            said = "before it was sent the whole file"
            _refused(_upload(http, longer), said, relay, server.address)
            _refused_page(_upload(http, longer, page=True), said)
            r = http.post("/matches/byContent", content=longer.read_bytes())
            _refused(r, said, relay, server.address)
            handler.after = 10**6  # reads to the end: A's own report, shown
            r = _upload(http, a)
            assert r.status_code == 200 and r.json()["status"] == "SIGNED_ORIGINAL", r.text
    finally:
        relay_server.stop(None)
        handler.channel.close()


def _pdq_query(ref: str, path: Path, sha256: bool = True) -> dict[str, Any]:
    """A lookup query for ``path`` as an API client makes it: its SHA-256 (unless not
    ``sha256``) and its own PDQ hash, computed with the service's code."""
    from provenance.media.assets import AssetLimits, image_pdq

    hashes, quality = image_pdq(path.read_bytes(), AssetLimits())
    query: dict[str, Any] = {"ref": ref, "pdq": [{"hash": hashes[0].hex(), "quality": quality}]}
    if sha256:
        query["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return query


@pytest.mark.parametrize("status", ["DERIVED", "REVOKED_KEY"])
def test_a_derived_lookup_answer_for_unrelated_hashes_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path, status: str
) -> None:
    """``POST /api/v1/lookup`` for the unrelated cat photo's SHA-256 and PDQ hash, answered
    by a hostile relay with the genuine DERIVED answer of a resized copy of the signed
    rocket photo (its file hash rewritten to the cat's, so only the soft binding can tell):
    502 for the whole batch, naming the query and the distance of the query's PDQ hashes
    from the cited claim's (lookupderived60: before, 200 with the forged verdict). The
    honest answer for the copy's own hashes, through the same relay and from the real
    service (by PDQ alone too), is still 200 DERIVED."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    copy = _resized(a, tmp_path / "rocket_small.jpg")
    cat = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    genuine = server_answer(server.address, copy)
    forged = _forged_for(genuine, cat, pb.Verdict.Value(status))
    cited = wire.report_from_pb(genuine).evidence.claim
    assert cited is not None, genuine
    said = (
        f"queries[1] (ref 'cat'): the server answered {status} citing a claim (device"
        f" {cited.claim.device_id.hex()[:16]}, sequence {cited.claim.sequence}), but the"
        " query's PDQ hashes are"
    )
    cat_query = _pdq_query("cat", cat)
    for relay in _forger(server.address, forged):
        with _web(relay) as http:
            sha_only = {"ref": "none", "sha256": cat_query["sha256"]}
            r = http.post("/api/v1/lookup", json={"queries": [sha_only, cat_query]})
            # the first query sent no PDQ hash: no near copy's verdict can rest on it
            _refused(r, "queries[0] (ref 'none')", relay, server.address)
            _refused(r, "the query sent no PDQ hash", relay, server.address)
            r = http.post("/api/v1/lookup", json={"queries": [cat_query, cat_query]})
            _refused(r, "queries[0] (ref 'cat')", relay)
            # the relay answers each query for the cat's bytes: the first, sent with the
            # copy's PDQ hash, matches the claim cited; the second, with the cat's, does not
            near = {**cat_query, "ref": "near", "pdq": _pdq_query("copy", copy)["pdq"]}
            r = http.post("/api/v1/lookup", json={"queries": [near, cat_query]})
            _refused(r, said, relay, server.address)
            _refused(r, "past the match threshold of 31", relay, server.address)
    honest = _forged_for(genuine, copy, pb.DERIVED)
    for relay in _forger(server.address, honest):
        with _web(relay) as http:
            r = http.post("/api/v1/lookup", json={"queries": [_pdq_query("copy", copy)]})
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["status"] == "DERIVED", r.json()
    with _web(server.address) as http:  # the real service's own answers
        queries = [_pdq_query("copy", copy), _pdq_query("bare", copy, sha256=False)]
        r = http.post("/api/v1/lookup", json={"queries": queries})
        assert r.status_code == 200, r.text
        assert [x["status"] for x in r.json()["results"]] == ["DERIVED", "DERIVED"], r.json()


def test_a_binding_match_for_unrelated_hashes_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """``/matches/byBinding`` (the C2PA Soft Binding Resolution API) asks the service's
    Lookup for one PDQ hash: a hostile relay answering the cat photo's hash with the genuine
    DERIVED answer of a resized copy of the signed rocket photo is refused 502, GET and
    POST, as ``POST /api/v1/lookup`` refuses it (lookupderived60: before, 200 with the
    rocket's log index as a match); so is an answer of two results for the one hash
    (before, a 500). The copy's own hash through the same relay still matches."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    copy = _resized(a, tmp_path / "rocket_small.jpg")
    cat = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    genuine = server_answer(server.address, copy)
    genuine.evidence.file_sha256 = bytes(32)  # what a query by PDQ alone sends
    values = {
        name: base64.b64encode(bytes.fromhex(_pdq_query(name, path)["pdq"][0]["hash"])).decode()
        for name, path in (("cat", cat), ("copy", copy))
    }
    for relay in _forger(server.address, genuine.SerializeToString()):
        with _web(relay) as http:
            said = "the binding: the server answered DERIVED citing a claim"
            binding = {"alg": "pdq", "value": values["cat"]}
            _refused(http.get("/matches/byBinding", params=binding), said, relay)
            _refused(http.post("/matches/byBinding", json=binding), said, relay)
            r = http.get("/matches/byBinding", params={"alg": "pdq", "value": values["copy"]})
            assert r.status_code == 200, r.text
            assert len(r.json()["matches"]) == 1, r.json()

    def twice(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        answer = pb.LookupResponse.FromString(forward(request))
        answer.results.append(answer.results[0])
        return bytes(answer.SerializeToString())

    with relay_server(server.address, {LOOKUP: twice}) as relay:
        with _web(relay) as http:
            r = http.get("/matches/byBinding", params={"alg": "pdq", "value": values["copy"]})
            _refused(r, "answered 2 results for 1 queries", relay)
