"""Fast checks of the web layer's pure parts: the upload rate limit, the error
mapping, and the page's formatting helpers."""

from __future__ import annotations

import pytest

from provenance.errors import MediaError, MediaTooLargeError, TransportError
from provenance.web.errors import WebError, error_body, error_headers, http_status
from provenance.web.present import download_name, human_bytes, timeline_plot, verdict
from provenance.web.ratelimit import RateLimiter


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
def test_error_mapping(error: Exception, code: int) -> None:
    assert http_status(error) == code  # type: ignore[arg-type]
    assert error_body(error)["error"]["code"] == code  # type: ignore[arg-type]


def test_presentation_helpers() -> None:
    assert download_name("../../etc/pass wd<>.jpg") == "etc_pass_wd_.jpg.report.json"
    assert download_name("") == "file.report.json"
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(12) == "12 bytes"
    assert verdict("DERIVED").tone == "info" and verdict("NEW").title == "NEW"
    plot = timeline_plot(
        [{"timestamp_seconds": 0.0, "score": 0.0}, {"timestamp_seconds": 4.0, "score": 1.0},
         {"timestamp_seconds": 2.0, "score": None}]
    )  # fmt: skip
    assert plot is not None and plot.unscored == 1 and len(plot.dots) == 2
    (x0, y0, _, _), (x1, y1, _, _) = plot.dots
    assert x0 < x1 and y0 > y1  # later frames to the right, higher scores higher up
    assert timeline_plot(None) is None


def test_multipart_headers_are_bounded() -> None:
    from python_multipart.multipart import MultipartParser

    from provenance.web.upload import MAX_HEADER, _Form, _write

    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="'
    for extra in (10, 100 * MAX_HEADER):
        form = _Form(max_file_bytes=1024)
        parser = MultipartParser(b"b", form.callbacks())  # type: ignore[arg-type]
        with pytest.raises(WebError, match="headers are longer|malformed"):
            _write(parser, head + b"x" * (MAX_HEADER + extra) + b'"\r\n\r\n')
    form = _Form(max_file_bytes=1024)
    parser = MultipartParser(b"b", form.callbacks())  # type: ignore[arg-type]
    with pytest.raises(WebError, match="malformed"):
        _write(parser, b"--b\r\nnot a header line at all\x00\r\n\r\n")


def test_multipart_form_fields_and_file() -> None:
    from python_multipart.multipart import MultipartParser

    from provenance.web.upload import _Form

    form = _Form(max_file_bytes=10)
    parser = MultipartParser(b"b", form.callbacks())  # type: ignore[arg-type]
    parser.write(
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="C:\\\\dir\\\\a.jpg"\r\n\r\n'
        b"0123456789\r\n--b--\r\n"
    )
    assert form.ended and form.file_done and form.filename == "a.jpg"
    assert form.take(1) == b"0123456789" and form.sidecar() is None
    big = _Form(max_file_bytes=4)
    parser = MultipartParser(b"b", big.callbacks())  # type: ignore[arg-type]
    with pytest.raises(WebError) as e:
        parser.write(b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n0123456789')
    assert e.value.code == "RESOURCE_EXHAUSTED"


def test_error_messages_drop_the_clients_status_suffix() -> None:
    body = error_body(TransportError("unsupported format [INVALID_ARGUMENT]", "INVALID_ARGUMENT"))
    assert body["error"] == {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": "unsupported format",
    }


def test_the_web_app_does_not_load_the_server_stack() -> None:
    """The web is a client of the service: importing it loads no server, store or service."""
    import subprocess
    import sys

    code = (
        "import sys, provenance.web.app, provenance.web.serve\n"
        "print([m for m in ('provenance.server', 'provenance.service', 'provenance.store',"
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
