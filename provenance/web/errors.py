"""HTTP errors: one mapping from our errors (and the service's gRPC status names) to
HTTP status codes, and the JSON error body every endpoint answers with.

The mapping mirrors the gRPC one (README, "Limits and errors") and Google's
HTTP-gRPC table (google/rpc/code.proto): INVALID_ARGUMENT, FAILED_PRECONDITION and
OUT_OF_RANGE -> 400, UNAUTHENTICATED -> 401, PERMISSION_DENIED -> 403, NOT_FOUND -> 404,
RESOURCE_EXHAUSTED -> 413 for a size, count or pixel limit and 503 when the service
says it is busy (see `status_name`), 502 BAD_GATEWAY when it is gRPC's own (no sentence
of the service's: an answer over the client's 8 MiB receive limit); INTERNAL that is not
the service's own sentence (an answer that is no reply of this service, a report without
a verdict, a log key that is no verifier key, gRPC's own INTERNAL) -> 502 BAD_GATEWAY,
its text (naming the service's address) logged, never shown, a stalled upload -> 408, a body with a content coding (UNSUPPORTED_ENCODING) -> 415, rate limited -> 429,
UNAVAILABLE -> 503, DEADLINE_EXCEEDED -> 504, DATA_LOSS and INTERNAL -> 500; an answer
of the service refused as its evidence does not hold (ServerEvidenceError:
`clients.cited`) -> 502 BAD_GATEWAY.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from starlette.responses import JSONResponse

from clients.api import CANNOT_REACH
from provenance.core.buckets import Every
from provenance.core.errors import (
    ClaimError,
    ConfigError,
    MediaError,
    MediaTooLargeError,
    ProvenanceError,
    ServerEvidenceError,
    TransportError,
)
from provenance.terminal import shown_line

#: HTTP status for each gRPC status code name.
HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 413,
    "CLIENT_TIMEOUT": 408,
    "RATE_LIMITED": 429,
    "UNSUPPORTED_ENCODING": 415,
    "CANCELLED": 499,
    "BAD_GATEWAY": 502,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
    "UNIMPLEMENTED": 501,
    "DATA_LOSS": 500,
    "INTERNAL": 500,
    "UNKNOWN": 500,
}


class WebError(ProvenanceError):
    """A request the web layer refuses itself. ``code`` is a gRPC-style status name
    (a key of `HTTP_STATUS`); ``retry_after`` seconds, for 429 and 503 answers."""

    def __init__(self, message: str, code: str = "INVALID_ARGUMENT", retry_after: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


#: The service's RESOURCE_EXHAUSTED covers both "too large" and "busy, try again" (its
#: `LimitError`); the gRPC status carries no detail telling them apart, so a message
#: asking to retry marks a busy service (503 with Retry-After), anything else a size (413).
#: One that gRPC raised itself (``from_grpc``: the service's answer was over the client's
#: receive limit, or over the service's own send limit) is the service's fault: 502, said
#: as `GRPC_FAILURE_TEXT`, the address and sizes kept for the operator's log.
_RETRY_WORDS = re.compile(r"\b(try again|retry)\b", re.IGNORECASE)
BUSY_RETRY_AFTER = 5


#: Characters of a query parameter's name or value an error quotes (a query may hold 16 KiB).
SHOWN_PARAM = 40


def quoted(text: str, most: int = SHOWN_PARAM) -> str:
    """``text`` from a client as an error quotes it: in single quotes, its controls and
    bidirectional marks written as escapes (`provenance.terminal.shown_line`), cut to
    ``most`` characters with ``...`` after."""
    return f"'{shown_line(text[:most])}'" + ("..." if len(text) > most else "")


def status_name(error: ProvenanceError) -> str:
    """The gRPC-style status name of one of our errors."""
    if isinstance(error, TransportError) and error.from_grpc and error.code == "INTERNAL":
        return "BAD_GATEWAY"  # an answer that is no reply of this service: the service's fault
    if isinstance(error, TransportError) and error.code == "RESOURCE_EXHAUSTED":
        if error.from_grpc:  # gRPC's limit, no sentence of the service's: an answer too large
            return "BAD_GATEWAY"
        return "UNAVAILABLE" if _RETRY_WORDS.search(str(error)) else error.code
    if isinstance(error, WebError | TransportError):
        return error.code
    if isinstance(error, ServerEvidenceError):
        return "BAD_GATEWAY"
    if isinstance(error, MediaTooLargeError):
        return "RESOURCE_EXHAUSTED"
    if isinstance(error, MediaError | ClaimError | ConfigError):
        return "INVALID_ARGUMENT"
    return "INTERNAL"


def http_status(error: ProvenanceError) -> int:
    """The HTTP status code for one of our errors (500 for an unknown status name)."""
    return HTTP_STATUS.get(status_name(error), 500)


log = logging.getLogger(__name__)

#: What a visitor is told when the gRPC service cannot be reached (`message`).
UNREACHABLE_TEXT = f"{CANNOT_REACH} behind this page right now; try again in a few seconds"
#: Seconds between two log lines saying the service cannot be reached, so a flood of
#: requests while it is down does not flood the log.
UNREACHABLE_LOG_EVERY_S = 60.0
_log_gate = Every(UNREACHABLE_LOG_EVERY_S)  # one line per kind of failure


#: What a visitor is told when the service kept a call waiting past its deadline
#: (``prov web --service-timeout``; formatted with the seconds waited).
NO_ANSWER_TEXT = "the verification service did not answer within {:g} s; try again"

#: What a visitor is told when a call to the service failed with gRPC's own text (no
#: sentence from our server: another service on its port, a proxy's failure; `message`).
GRPC_FAILURE_TEXT = (
    "the service behind this page did not answer as expected; the page's operator can"
    " read why in its log"
)


def _log_unreachable(text: str, said: str = UNREACHABLE_TEXT) -> None:
    """Log ``text``, told to visitors as ``said``, unless a line told as ``said`` was
    logged in the last `UNREACHABLE_LOG_EVERY_S`."""
    if _log_gate.due(said):
        log.warning("%s (said to visitors as %r; logged at most every %g s)",
                    text, said, UNREACHABLE_LOG_EVERY_S)  # fmt: skip


def message(error: ProvenanceError) -> str:
    """The error's text for a person, without the client's trailing `` [STATUS]``
    (the status is reported beside it). A service that cannot be reached is said without
    its address and gRPC's own failure text (`UNREACHABLE_TEXT`: both are the operator's,
    logged here at most every `UNREACHABLE_LOG_EVERY_S`, never a visitor's); a call that
    failed with gRPC's own text (``from_grpc``) is said as `GRPC_FAILURE_TEXT`, the text
    logged the same way; one whose wait for the service ran out (``waited_s``) as
    `NO_ANSWER_TEXT`, logged the same way. Any other error is said by its ``public``
    text: one raised with ``public=`` (a store's or detector's, its message naming the
    server's internals) never shows that message, logged the same way instead."""
    text = str(error)
    if isinstance(error, TransportError) and error.waited_s is not None:
        said = NO_ANSWER_TEXT.format(error.waited_s)
        _log_unreachable(text, said)
        return said
    if isinstance(error, TransportError) and text.startswith(CANNOT_REACH):
        _log_unreachable(text)
        return UNREACHABLE_TEXT
    if isinstance(error, TransportError) and error.from_grpc:
        _log_unreachable(text, GRPC_FAILURE_TEXT)
        return GRPC_FAILURE_TEXT
    if error.hides_detail:  # its message names the server's internals: the log's
        _log_unreachable(text, error.public)
        return error.public
    suffix = f" [{getattr(error, 'code', '')}]"
    return text[: -len(suffix)] if text.endswith(suffix) else text


def error_body(error: ProvenanceError) -> dict[str, Any]:
    """``{"error": {"code": 413, "status": "RESOURCE_EXHAUSTED", "message": "..."}}``:
    the shape of Google's JSON errors, the message written for a person."""
    return {
        "error": {
            "code": http_status(error),
            "status": status_name(error),
            "message": message(error),
        }
    }


def error_headers(error: ProvenanceError) -> dict[str, str]:
    """``Retry-After`` for rate-limited, busy and unavailable answers: every 503 from
    the service's status carries one (`BUSY_RETRY_AFTER` seconds), the service
    unreachable as well as busy, as README and the OpenAPI description say, and every
    504 (the service kept a call waiting past ``--service-timeout``) as well.
    ``Accept-Encoding: identity`` for a body refused for its content coding (415: RFC
    9110 section 15.5.16 names the codings that would have been read)."""
    retry = getattr(error, "retry_after", 0)
    if (
        not retry
        and isinstance(error, TransportError)
        and status_name(error) in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    ):
        retry = BUSY_RETRY_AFTER
    if status_name(error) == "UNSUPPORTED_ENCODING":
        return {"Accept-Encoding": "identity"}
    return {"Retry-After": str(retry)} if retry else {}


def error_response(error: ProvenanceError) -> JSONResponse:
    """The JSON answer to a failed API request."""
    return JSONResponse(error_body(error), http_status(error), headers=error_headers(error))
