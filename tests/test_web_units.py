"""Fast checks of the web layer's pure parts: the upload rate limit, the error
mapping, and the page's formatting helpers."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

from provenance.core.errors import (
    MediaError,
    MediaTooLargeError,
    ProvenanceError,
    StorageError,
    TransportError,
)
from provenance.web.errors import WebError, error_body, error_headers, http_status
from provenance.web.logviews import is_number, parse_hash, parse_index
from provenance.web.present import download_name, human_bytes, timeline_plot, verdict
from provenance.web.ratelimit import RateLimiter
from provenance.web.upload import UploadLimits, timed_body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_allows_a_burst_then_refills() -> None:
    clock = Clock()
    limiter = RateLimiter(3, clock=clock)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(WebError) as e:
        limiter.check("a")
    assert e.value.code == "RATE_LIMITED" and e.value.retry_after == 20
    limiter.check("b")  # other clients are not affected
    clock.now = 20.0
    limiter.check("a")  # one token back after 60/3 s
    with pytest.raises(WebError):
        limiter.check("a")


def test_rate_limit_off_and_bounded() -> None:
    RateLimiter(0).check("x")
    limiter = RateLimiter(1, clock=Clock(), max_clients=2)
    for name in ("a", "b", "c"):
        limiter.check(name)
    limiter.check("a")  # "a" was forgotten (least recently seen): a fresh bucket
    with pytest.raises(WebError):
        limiter.check("c")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MediaError("bad"), 400),
        (MediaTooLargeError("big"), 413),
        (TransportError("down", "UNAVAILABLE"), 503),
        (TransportError("no", "NOT_FOUND"), 404),
        (TransportError("who", "UNAUTHENTICATED"), 401),
        (TransportError("big", "RESOURCE_EXHAUSTED"), 413),
        (TransportError("1001 queries; send fewer per call", "RESOURCE_EXHAUSTED"), 413),
        (
            TransportError("already receiving 8 uploads: try again shortly", "RESOURCE_EXHAUSTED"),
            503,
        ),
        (WebError("slow down", "RATE_LIMITED", 5), 429),
        (TransportError("?", "SOMETHING_NEW"), 500),
    ],
)
def test_error_mapping(error: ProvenanceError, code: int) -> None:
    assert http_status(error) == code
    assert error_body(error)["error"]["code"] == code


def test_presentation_helpers() -> None:
    assert download_name("../../etc/pass wd<>.jpg") == "etc_pass_wd_.jpg.report.json"
    assert download_name("") == "file.report.json"
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(12) == "12 bytes"
    assert verdict("DERIVED").tone == "info" and verdict("NEW").title == "NEW"
    frames = [{"timestamp_seconds": 0.0, "score": 0.0}, {"timestamp_seconds": 4.0, "score": 1.0},
              {"timestamp_seconds": 2.0, "score": None}]  # fmt: skip
    plot = timeline_plot({"timeline": frames, "threshold_low": 0.295, "threshold_high": 0.885})
    assert plot is not None and plot.unscored == 1 and len(plot.dots) == 2
    (x0, y0, _, _), (x1, y1, _, _) = plot.dots
    assert x0 < x1 and y0 > y1  # later frames to the right, higher scores higher up
    # the band thresholds are drawn where a frame of that score would sit, never at 0.5
    (yh, lh, th), (yl, ll, tl) = plot.levels
    assert (lh, th, ll, tl) == ("0.885", "high", "0.295", "low")
    assert y1 < yh < yl < y0 and abs(yh - (y1 + (y0 - y1) * (1 - 0.885))) < 0.2
    # a block without thresholds (an older server): no lines rather than guessed ones
    bare = timeline_plot({"timeline": frames})
    assert bare is not None and bare.levels == ()
    assert timeline_plot(None) is None and timeline_plot({"timeline": []}) is None


def test_the_revoked_key_meaning_covers_a_claim_never_logged() -> None:
    """A sidecar claim that was never logged, whose key is revoked now, reads REVOKED_KEY
    (`provenance.core.verify`, rule 1); the page's sentence said only "revoked when the
    claim was logged", which such a claim never was."""
    meaning = verdict("REVOKED_KEY").meaning
    assert "when the claim was logged" in meaning and "never logged" in meaning


def test_the_page_says_an_embedded_claim_was_no_sidecar_file() -> None:
    """A claim read from the file's C2PA manifest (``evidence.claim_embedded``) is checked as
    a sidecar is; the page's Sidecar row said "sent with the file", which none was."""
    import re

    import jinja2

    from provenance.web import present
    from provenance.web.app import PACKAGE

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True)
    present.install(env)
    file = {"media_type": "image/jpeg", "size": 10, "sha256": "00"}
    rows = {}
    for embedded in (False, True):
        ev = {"sidecar_present": True, "claim_embedded": embedded}
        page = env.get_template("_report.html").render(
            report={"status": "TAMPERED", "evidence": ev, "file": file}, filename="x.jpg"
        )
        found = re.search(r'id="sidecar-state">([^<]*)<', page)
        assert found is not None
        rows[embedded] = found.group(1)
    assert rows[False] == "sent with the file"
    assert rows[True].startswith("none; the claim embedded in the file&#39;s Content Credentials")


def test_video_plot_draws_the_band_thresholds_not_half() -> None:
    """The video's score plot marks where the bands start (the block's thresholds), as
    the crop overlay does: a line at 0.5 read as "half generated" (the walker's finding)."""
    import jinja2

    from provenance.web import present
    from provenance.web.app import PACKAGE

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True)
    present.install(env)
    frames = [{"timestamp_seconds": t, "score": s} for t, s in [(0.0, 0.2), (1.0, 0.9)]]
    block = {"available": True, "band": "uncertain", "score": 0.55, "band_low": 0.4,
             "band_high": 0.7, "model_id": "default", "model_version": "7", "crops": [],
             "timeline": frames, "threshold_low": 0.295, "threshold_high": 0.885}  # fmt: skip
    file = {"media_type": "video/mp4", "size": 10, "sha256": "00"}
    page = env.get_template("_report.html").render(
        report={"status": "UNSIGNED", "evidence": {}, "detector": block, "file": file},
        filename="v.mp4",
    )
    plot = page[page.index('<figure class="plot">') : page.index("</figure>", page.index("plot"))]
    assert plot.count('class="plot-level plot-high"') == 1 and ">0.885<" in plot
    assert plot.count('class="plot-level plot-low"') == 1 and ">0.295<" in plot
    assert ">.5<" not in plot and "likely generated range starts (0.885)" in plot


def test_multipart_headers_are_bounded() -> None:
    from python_multipart.multipart import MultipartParser

    from provenance.web.upload import MAX_HEADER, _Form, _write

    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
    for extra in (10, 100 * MAX_HEADER):
        form = _Form(max_file_bytes=1024)
        parser = MultipartParser(b"b", form.callbacks())
        with pytest.raises(
            WebError, match="headers are longer|header line .* is longer than|malformed"
        ):
            _write(parser, head + b"x" * (MAX_HEADER + extra) + b'"\r\n\r\n')
    form = _Form(max_file_bytes=1024)
    parser = MultipartParser(b"b", form.callbacks())
    with pytest.raises(WebError, match="malformed"):
        _write(parser, b"--b\r\nnot a header line at all\x00\r\n\r\n")


def test_multipart_form_fields_and_file() -> None:
    from python_multipart.multipart import MultipartParser

    from provenance.web.upload import _Form

    form = _Form(max_file_bytes=10)
    parser = MultipartParser(b"b", form.callbacks())
    parser.write(
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="C:\\\\dir\\\\a.jpg"\r\n\r\n'
        b"0123456789\r\n--b--\r\n"
    )
    assert form.ended and form.file_done and form.filename == "a.jpg"
    assert form.take(1) == b"0123456789" and form.sidecar() is None
    big = _Form(max_file_bytes=4)
    parser = MultipartParser(b"b", big.callbacks())
    with pytest.raises(WebError) as e:
        parser.write(b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n0123456789')
    assert e.value.code == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64, 10_000])
def test_a_multipart_preamble_is_dropped_whatever_the_pieces(piece: int) -> None:
    """`Preamble` finds the first boundary line however the body is cut into pieces,
    including across a cut, and not where --BOUNDARY is not at a line's start."""
    from provenance.web.formparts import Preamble

    form = b'--XyZ\r\nContent-Disposition: form-data; name="file"\r\n\r\nx\r\n--XyZ--\r\n'
    preambles = [b"", b"\r\n", b"hello --XyZ there\r\n", b"--Xy\r\n", b"a" * 5000 + b"\r\n"]
    # a preamble whose last line ends in LF alone (lenient, as common parsers are)
    preambles += [b"\n", b"hello\n", b"a\r\nb\n", b"a" * 5000 + b"\n"]
    # "---XyZ" is no boundary line: the first one is the closing one (an empty form)
    cases = [(p + form, form) for p in preambles] + [(b"-" + form, b"--XyZ--\r\n")]
    for body, expected in cases:
        skip = Preamble(b"XyZ")
        out = b"".join(skip.feed(body[i : i + piece]) for i in range(0, len(body), piece))
        skip.finish()
        assert out == expected, body[:20]
    skip = Preamble(b"XyZ", limit=100)
    with pytest.raises(WebError, match=r"no boundary line \(--XyZ, .*in its first 100 bytes"):
        for _ in range(0, 200, piece):
            skip.feed(b"y" * piece)
    skip = Preamble(b"XyZ")
    skip.feed(b"no boundary here"[:piece])
    with pytest.raises(WebError, match="no boundary line"):
        skip.finish()
    Preamble(b"XyZ").finish()  # an empty body: the form's own "truncated" error follows


def _first_line_refusal(body: bytes, piece: int) -> str:
    """The WebError `Preamble` refuses ``body`` with, fed in pieces of ``piece`` bytes."""
    from provenance.web.formparts import Preamble

    skip = Preamble(b"XyZ")
    with pytest.raises(WebError) as e:
        for i in range(0, len(body), piece):
            skip.feed(body[i : i + piece])
        skip.finish()
    return str(e.value)


def test_a_first_boundary_line_is_refused_in_the_same_words_whatever_the_pieces() -> None:
    """A first boundary line that goes on past its boundary is named whole (up to its line
    end, or its first 80 bytes), however the body is cut; one whose line ends in LF alone
    is refused for that. Before: the line as far as the piece that held the fault
    ("--XyZj" in pieces of 1, "--XyZjunk" whole), and an LF-only form's line shown with
    the header line after it, as if it went on ("--XyZ\\x0aContent-Disposition...")."""
    rest = b'Content-Disposition: form-data; name="file"\r\n\r\nx\r\n--XyZ--\r\n'
    cases = [
        (b"--XyZjunk\r\n" + rest, r'first boundary line "--XyZjunk" goes on past its boundary'),
        (b"pre\r\n--XyZ --\r\n" + rest, r'first boundary line "--XyZ --" goes on past'),
        (
            b"--XyZ" + b"x" * 5000 + b"\r\n" + rest,
            r'first boundary line "--XyZx{75}\.\.\." goes on',
        ),
        (
            b"--XyZ\n" + rest.replace(b"\r\n", b"\n"),
            r'first boundary line "--XyZ" ends in LF alone: .* end in CRLF',
        ),
        (b"--XyZ \t\n" + rest, r'first boundary line "--XyZ \\x09" ends in LF alone'),
    ]
    for body, words in cases:
        said = {_first_line_refusal(body, piece) for piece in (1, 2, 3, 5, 7, 64, len(body))}
        assert len(said) == 1, said
        assert re.search(words, said.pop()), (body[:20], said)


def test_error_messages_drop_the_clients_status_suffix() -> None:
    body = error_body(TransportError("unsupported format [INVALID_ARGUMENT]", "INVALID_ARGUMENT"))
    assert body["error"] == {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": "unsupported format",
    }


def test_error_messages_are_the_public_text_and_log_the_detail(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error raised with ``public=`` (its message names the server's internals) is
    told to a visitor by its public text; the whole message goes to the log."""
    detail = "cannot open postgresql://prov@db.internal:5432/prov: connection refused"
    error = StorageError(detail, public="the log database cannot be used now")
    with caplog.at_level("WARNING", logger="provenance.web.errors"):
        body = error_body(error)
    assert body["error"]["message"] == "the log database cannot be used now"
    assert "db.internal" not in repr(body)
    assert detail in caplog.text


def test_the_web_app_does_not_load_the_server_stack() -> None:
    """The web is a client of the service: importing it loads no server, store or service."""
    import subprocess
    import sys

    code = (
        "import sys, provenance.web.app, provenance.web.serve\n"
        "print([m for m in ('provenance.server.rpc', 'provenance.server.service', 'provenance.store',"
        " 'sqlite3') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_busy_service_answers_503_with_retry_after() -> None:
    busy = TransportError("the server is decoding 2 files: try again shortly", "RESOURCE_EXHAUSTED")
    assert error_body(busy)["error"]["status"] == "UNAVAILABLE"
    assert error_headers(busy) == {"Retry-After": "5"}
    assert (
        error_headers(TransportError("file is 3 GB; the limit is 2 GB", "RESOURCE_EXHAUSTED")) == {}
    )


# --- hostile requests answered in-process (no service: every request here is refused
# before the web layer would call it) ---


@pytest.fixture
def app_client() -> Iterator[TestClient]:
    from provenance.web.app import WebConfig, create_app

    with TestClient(
        create_app(WebConfig(server="127.0.0.1:9")),
        base_url="http://localhost",  # an allowed Host (the default, testserver, is not)
        raise_server_exceptions=False,
    ) as c:
        yield c


def test_uvicorn_does_not_trust_forwarded_headers() -> None:
    from provenance.web.app import WebConfig
    from provenance.web.serve import _server

    assert _server(WebConfig(server="127.0.0.1:9")).config.proxy_headers is False


@pytest.mark.parametrize(
    "text", ["²", "٣", "1²", "+1", "-1", " ", "", "1_000", "9" * 5000, "1" * 21]
)
def test_indexes_are_ascii_digits_of_bounded_length(text: str) -> None:
    with pytest.raises(WebError):
        parse_index(text)
    assert not is_number(text)


#: Numbers an index parser must refuse though `int` reads them: leading zeros, spaces
#: around (`int` strips them), a trailing newline, underscores, a sign.
NOT_CANONICAL = ["01", "00", "007", " 1", "1 ", " 1 ", "1\n", "\t0", "1_0", "+0", "-0"]


@pytest.mark.parametrize("text", NOT_CANONICAL)
def test_indexes_are_canonical_decimals(text: str) -> None:
    with pytest.raises(WebError, match="without leading zeros"):
        parse_index(text, "start")
    assert [parse_index(t) for t in ("0", "1", "10", str(2**63 - 1))] == [0, 1, 10, 2**63 - 1]
    with pytest.raises(WebError, match="below 2"):
        parse_index(str(2**63))


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/entries/01",
        "/api/v1/entries/%201%20",
        "/api/v1/entries?start=01",
        "/api/v1/entries?start=0&limit=%2010",
        "/api/v1/proofs/inclusion?index=01&tree_size=5",
        "/api/v1/proofs/inclusion?index=1&tree_size=05",
        "/api/v1/proofs/consistency?first=1&second=1_0",
        "/manifests/01",
        "/matches/byBinding?alg=pdq&value=AAAA&maxResults=010",
        "/matches/byBinding?alg=pdq&value=AAAA&maxResults=%201",
    ],
)
def test_numbers_not_in_canonical_form_get_400_saying_so(app_client: TestClient, path: str) -> None:
    r = app_client.get(path)
    assert r.status_code == 400, (path, r.status_code)
    assert "without leading zeros" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize(
    "path", ["/log/entries/01", "/log/consistency?first=01", "/log?before=%2010"]
)
def test_pages_answer_400_to_numbers_not_in_canonical_form(
    app_client: TestClient, path: str
) -> None:
    r = app_client.get(path, follow_redirects=False)
    assert r.status_code == 400, (path, r.status_code)
    assert "without leading zeros" in r.text


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/api/v1/proofs/inclusion", "index is missing: give a whole number from 0 "),
        ("/api/v1/proofs/inclusion?tree_size=3", "index is missing"),
        ("/api/v1/proofs/consistency?second=3", "first is missing: give a whole number from 0 "),
        (
            "/matches/byBinding?alg=pdq&value=AAAA&maxResults=-1",
            "maxResults must be a whole number from 1 below",
        ),
        (
            "/matches/byBinding?alg=pdq&value=AAAA&maxResults=0",
            "maxResults must be a whole number from 1 below",
        ),
    ],
)
def test_a_missing_or_too_small_number_is_named_as_such(
    app_client: TestClient, path: str, words: str
) -> None:
    """A required number left out is called missing, and a number's least value is the
    one the parameter takes (h-att41; before: "index must be a whole number ...; got ''",
    and maxResults=-1 was told "from 0" while 0 was refused as "from 1")."""
    r = app_client.get(path)
    assert r.status_code == 400, (path, r.status_code)
    assert words in r.json()["error"]["message"], r.text


def test_a_consistency_page_without_its_first_size_says_it_is_missing(
    app_client: TestClient,
) -> None:
    r = app_client.get("/log/consistency")
    assert r.status_code == 400 and "the first tree size is missing" in r.text, r.text


@pytest.mark.parametrize(("typed", "index"), [("007", 7), (" 0010 ", 10), ("000", 0)])
def test_the_search_box_sends_a_typed_index_to_its_one_canonical_url(
    app_client: TestClient, typed: str, index: int
) -> None:
    r = app_client.get("/log/find", params={"q": typed}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/log/entries/{index}"


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/v1/proofs/consistency?first=1&first=2&second=3", "first"),
        ("/api/v1/proofs/inclusion?index=1&tree_size=5&index=2", "index"),
        ("/api/v1/entries?start=0&start=1", "start"),
        ("/matches/byBinding?alg=pdq&value=AAAA&value=BBBB", "value"),
        ("/log/consistency?first=1&first=2", "first"),
        ("/log?before=5&before=9", "before"),
    ],
)
def test_a_query_parameter_given_twice_gets_400_naming_it(
    app_client: TestClient, path: str, name: str
) -> None:
    """Which value a repeated parameter means would be a guess (review att36: the last
    one was used silently); no endpoint takes a list in repeated parameters."""
    r = app_client.get(path, follow_redirects=False)
    assert r.status_code == 400, (path, r.status_code, r.text)
    assert f"query parameter {name!r} is given 2 times" in html.unescape(r.text), r.text


@pytest.mark.parametrize(
    "query", ["sha256=" + "ab" * 32 + "&start=5", "sha256=" + "ab" * 32 + "&limit=10"]
)
def test_entries_by_hash_with_a_page_is_400_naming_both(app_client: TestClient, query: str) -> None:
    """``GET /api/v1/entries`` finds a file's entries (sha256) or pages through the log
    (start, limit); given both, which was meant would be a guess (before: the page was
    silently ignored and the file's entries answered)."""
    r = app_client.get(f"/api/v1/entries?{query}")
    assert r.status_code == 400, (query, r.status_code, r.text)
    said = r.json()["error"]["message"]
    assert "give sha256 alone, or start and limit without it" in said, said


def test_hashes_are_strict_hex() -> None:
    good = "ab" * 32
    assert parse_hash(good.upper(), "h") == bytes.fromhex(good)
    for bad in ["ab " * 21 + "a", "٣" * 64, "g" * 64, "0x" + "a" * 62, 123]:
        with pytest.raises(WebError):
            parse_hash(bad, "h")


@pytest.mark.parametrize(("text", "said"), [("a", "got 1 character"), ("ab", "got 2 characters")])
def test_hash_length_error_counts_in_the_right_number(text: str, said: str) -> None:
    """A hash of the wrong length is told how many characters it had, "1 character" for
    one (before: "got 1 characters"), and the text given."""
    with pytest.raises(WebError) as caught:
        parse_hash(text, "h")
    assert str(caught.value).endswith(f"{said}: '{text}'"), str(caught.value)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/entries/²",
        "/api/v1/entries/٣",
        "/api/v1/entries/" + "9" * 5000,
        "/log/entries/²",
        "/log/entries/" + "9" * 5000,
        "/log/find?q=²",
        "/log/find?q=" + "9" * 5000,
        "/log/consistency?first=²",
        "/log/consistency?first=" + "9" * 5000,
        "/api/v1/devices/" + "ab " * 21 + "a",
        "/matches/byBinding?alg=pdq&value=AAAA&maxResults=²",
        "/matches/byBinding?alg=pdq&value=AAAA&maxResults=" + "9" * 5000,
    ],
)
def test_malformed_numbers_and_hashes_get_400(app_client: TestClient, path: str) -> None:
    assert app_client.get(path).status_code == 400


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        (
            "/api/v1/lookup",
            {"queries": [{"sha256": "ab" * 32, "content_sha256": 123}]},
            "content_sha256",
        ),
        ("/api/v1/lookup", {"queries": [{"sha256": 123}]}, "sha256"),
        (
            "/api/v1/lookup",
            {"queries": [{"pdq": [{"hash": "ab" * 32, "quality": True}]}]},
            "quality",
        ),
        ("/api/v1/lookup", {"queries": [{"pdq": [{"hash": 5}]}]}, "hash"),
        ("/matches/byBinding", {"alg": "pdq", "value": 123}, "base64"),
        ("/matches/byBinding", {"alg": ["pdq"], "value": "AAAA"}, "unsupported"),
    ],
)
def test_wrong_json_field_types_get_400(
    app_client: TestClient, path: str, body: object, words: str
) -> None:
    r = app_client.post(path, json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/api/v1/lookup", "/matches/byBinding"])
def test_deeply_nested_json_gets_400(app_client: TestClient, path: str) -> None:
    r = app_client.post(path, content=b"[" * 100_000 + b"]" * 100_000)
    assert r.status_code in (400, 413), r.text
    r = app_client.post(path, content=b"[" * 20_000 + b"]" * 20_000)
    assert r.status_code == 400, r.text
    assert "nested" in r.json()["error"]["message"]


def test_a_long_multipart_boundary_gets_400(app_client: TestClient) -> None:
    b = "x" * 300
    body = (
        f"--{b}\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\nabc\r\n--{b}--\r\n"
    )
    r = app_client.post(
        "/api/v1/verify",
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={b}"},
    )
    assert r.status_code == 400
    assert "boundary" in r.json()["error"]["message"]


def test_wrong_methods_get_405_with_allow(app_client: TestClient) -> None:
    for method, path, allow in [
        ("PATCH", "/api/v1/verify", "POST"),
        ("PUT", "/api/v1/checkpoint", "GET"),
        ("DELETE", "/matches/byContent", "POST"),
    ]:
        r = app_client.request(method, path)
        assert r.status_code == 405, (method, path, r.text)
        assert allow in r.headers["allow"]
        assert r.json()["error"]["status"] == "METHOD_NOT_ALLOWED"
    r = app_client.post("/openapi.json")
    assert r.status_code == 405
    assert "GET" in r.headers["allow"]
    assert r.json()["error"]["status"] == "METHOD_NOT_ALLOWED"  # a JSON path: not a page
    r = app_client.put("/api/v1/nothing")
    assert r.status_code == 404
    assert "no API endpoint" in r.json()["error"]["message"]
    assert app_client.get("/nothing").status_code == 404


class _DripRequest:
    """A request whose body arrives a byte at a time, ``gap`` seconds apart."""

    def __init__(self, gap: float, count: int) -> None:
        self.gap, self.count = gap, count
        self.headers: dict[str, str] = {}  # no Content-Encoding (`check_content_coding`)

    async def stream(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            await asyncio.sleep(self.gap)
            yield b"x"


def _drain(request: _DripRequest, limits: UploadLimits) -> int:
    """The bytes of ``request``'s body `timed_body` lets through under ``limits``."""
    taken = 0

    async def run() -> None:
        nonlocal taken
        async for piece in timed_body(cast("Request", request), limits):
            taken += len(piece)

    asyncio.run(run())
    return taken


def test_a_dripping_upload_runs_out_of_time() -> None:
    limits = UploadLimits(1024, idle_s=5.0, grace_s=0.5, min_rate=1000.0)
    # 1,000 bytes at 20 a second: cut (408, "too slow") before the end; unmetered it
    # would take 50 s and end without an error
    with pytest.raises(WebError) as caught:
        _drain(_DripRequest(0.05, 1000), limits)
    assert http_status(caught.value) == 408
    assert "too slow" in str(caught.value)
    # a stall is still reported as one
    with pytest.raises(WebError, match="stalled"):
        _drain(_DripRequest(1.0, 2), UploadLimits(1024, idle_s=0.2, grace_s=10.0))
    # a body that keeps up finishes
    assert _drain(_DripRequest(0.01, 20), limits) == 20


def test_listen_ports_are_ascii_digits() -> None:
    from provenance.core.errors import ConfigError
    from provenance.web.serve import bind

    for bad in ["127.0.0.1:²", "127.0.0.1:٣", "127.0.0.1:" + "9" * 5000]:
        with pytest.raises(ConfigError):
            bind(bad)


def test_http_sockets_send_without_waiting_for_delayed_acks() -> None:
    """`prov web`, `prov serve --http` and `prov witness serve` bind through `bind`: the
    listening socket, and so every connection it accepts, has TCP_NODELAY (without it a
    kept-alive answer's body waited ~40 ms for the client's delayed ACK)."""
    import socket

    from provenance.web.serve import bind

    listener, address = bind("127.0.0.1:0")
    with listener, socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1]))):
        accepted, _ = listener.accept()
        with accepted:
            for sock in (listener, accepted):
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_signed_file_row_says_a_match_without_the_manifest_is_not_this_file() -> None:
    """A `prov sign --c2pa` export matches its claim by its bytes without the manifest: the
    page showed the file's SHA-256 and, under "Signed file", another one marked "= this
    file" (a newcomer's finding). It now says what equals what."""
    import re

    import jinja2

    from provenance.web import present
    from provenance.web.app import PACKAGE

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True)
    present.install(env)
    claim = {"device_id": "ab" * 32, "sequence": 1, "media_type": "image/jpeg", "size": 9,
             "sha256": "11" * 32, "signature_valid": True, "device": {"label": "cam"}}  # fmt: skip
    marks = {}
    for file_sha, content_sha in (("11" * 32, None), ("22" * 32, "11" * 32)):
        file = {"media_type": "image/jpeg", "size": 10, "sha256": file_sha,
                "content_sha256": content_sha}  # fmt: skip
        page = env.get_template("_report.html").render(
            report={
                "status": "SIGNED_ORIGINAL",
                "evidence": {"hash_match": True, "claim": claim},
                "file": file,
            },
            filename="x.jpg",
        )
        found = re.search(r'<span class="ok">(= this file[^<]*)</span>', page)
        assert found is not None, page
        marks[file_sha] = found.group(1)
    assert marks["11" * 32] == "= this file"
    assert marks["22" * 32] == "= this file without its C2PA manifest"
