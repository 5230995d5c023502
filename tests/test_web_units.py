"""Fast checks of the web layer's pure parts: the upload rate limit, the error
mapping, and the page's formatting helpers."""

from __future__ import annotations

import pytest

from provenance.errors import MediaError, MediaTooLargeError, TransportError
from provenance.web.errors import WebError, error_body, http_status
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
