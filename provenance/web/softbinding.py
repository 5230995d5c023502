"""The C2PA Soft Binding Resolution API, answered from the log's PDQ index.

Shapes follow the C2PA Soft Binding Resolution API (OpenAPI "C2PA Soft Binding
Resolution API" 1.0.0: ``/matches/byBinding`` GET and POST, ``/matches/byContent``
POST, ``/manifests/{manifestId}`` GET, ``/services/supportedAlgorithms`` GET). What
differs, and why:

- the one fingerprint algorithm is ``pdq`` (the name our claims use; PDQ is not on
  the C2PA soft binding algorithm list); a binding ``value`` is the base64 of the 32
  hash bytes, and the query is taken as of full quality (a bare hash has none);
- a manifest id is a log index, and ``/manifests/{id}`` answers that log entry (the
  signed claim, its device, an inclusion proof checked against the signed checkpoint)
  as JSON: this log holds signed claims, not C2PA manifest stores;
- ``hintAlg``/``hintValue`` (byContent) and ``returnActiveManifest`` (manifests) are
  accepted and ignored, so a client sending the API's optional parameters gets its
  answer, where any other query parameter is a 400 (`reads`); ``returnActiveManifest``
  must still be a boolean (true or false; another value is a 400);
- the service's lookup returns the nearest signed capture only, so ``matches`` holds
  at most one entry whatever ``maxResults`` says: any whole number from 1 below 2^63
  is taken (the API sets no maximum, and a larger cap costs nothing here), a value
  outside that range is a 400.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from clients.api import ProvenanceClient, Query
from clients.report import report_to_json
from provenance.core.binding import PDQ_ALGORITHM, PDQ_HASH_SIZE, PerceptualHash
from provenance.core.verify import VerificationReport
from provenance.web import logviews
from provenance.web.api import (
    NO_SHA256,
    check_lookup_cited,
    client_address,
    flag,
    json_errors,
    json_work,
    metered,
    read_json,
    reads,
    state,
)
from provenance.web.errors import WebError

#: PDQ hashes have 256 bits; a similarity score of 100 means identical hashes.
PDQ_BITS = 256


def _alg(alg: Any) -> None:
    """Raises WebError unless ``alg`` names PDQ."""
    if not isinstance(alg, str) or alg.lower() != PDQ_ALGORITHM:
        raise WebError(
            f"unsupported soft binding algorithm {str(alg)[:60]!r}: this service answers"
            f" {PDQ_ALGORITHM!r} (see /services/supportedAlgorithms)"
        )


def _max_results(request: Request) -> int:
    """The ``maxResults`` query parameter (default 10): a cap on the matches answered, any
    whole number from 1 below 2^63 (the C2PA API sets no maximum; the answer here holds
    one match at most, so a larger cap costs nothing); raises WebError (400) otherwise."""
    return logviews.parse_index(request.query_params.get("maxResults", "10"), "maxResults", 1)


def _binding(value: Any, in_query: bool = False) -> PerceptualHash:
    """A base64 PDQ hash (32 bytes) as a query hash of full quality: base64 or base64url,
    its ``=`` padding optional (base64url usually drops it); ``in_query``: from a URL's
    query, where a ``+`` written as it is reads as a space (no base64 character), so a
    space is read as ``+``. Before, both were "value is not valid base64"."""
    if not isinstance(value, str):
        raise WebError("value must be a base64 string")
    text = value.replace(" ", "+") if in_query else value
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise WebError(
            "value is not base64 (A-Z, a-z, 0-9 and + /, or - _ of base64url; its = padding"
            f" may be left out): a PDQ binding is {PDQ_HASH_SIZE} bytes, 43 characters"
        ) from e
    if len(raw) != PDQ_HASH_SIZE:
        raise WebError(f"a PDQ binding is {PDQ_HASH_SIZE} bytes, the value decodes to {len(raw)}")
    return PerceptualHash(PDQ_ALGORITHM, raw, 100)


def _matches(report: VerificationReport, limit: int) -> dict[str, Any]:
    """``{"matches": [{"manifestId", "similarityScore"}]}`` from a report whose claim
    is a logged capture matched by its bytes or pixels."""
    out = report_to_json(report)
    claim = out["evidence"]["claim"]
    matched = out["status"] in {"SIGNED_ORIGINAL", "DERIVED", "REVOKED_KEY"}
    if not matched or claim is None or "log" not in claim or limit < 1:
        return {"matches": []}
    distance = out["evidence"]["pdq_distance"]
    score = 100 if distance is None else round(100 * (PDQ_BITS - distance) / PDQ_BITS)
    return {"matches": [{"manifestId": str(claim["log"]["leaf_index"]), "similarityScore": score}]}


async def _by_hash(request: Request, alg: Any, value: Any, in_query: bool = False) -> Response:
    """Matches for one PDQ binding, from the service's lookup, in its client's turn
    (`json_work`), as POST /api/v1/lookup: before, binding lookups went to the service
    on the routes' shared threads, and while 16 connections of one address asked for
    bindings, another address's one-query lookup waited for 13-25 of their answers
    (tests/test_lookup_fairness.py)."""
    _alg(alg)
    limit = _max_results(request)
    query = Query("binding", NO_SHA256, (_binding(value, in_query),))
    web = state(request)
    report = await json_work(request, _looked_up, web.client, query, web.config.log_key)
    return JSONResponse(_matches(report, limit))


def _looked_up(
    client: ProvenanceClient, query: Query, pinned: str | None = None
) -> VerificationReport:
    """The service's Lookup answer for one binding's ``query``, checked as ``POST
    /api/v1/lookup`` checks its answers (`check_lookup_cited`: one result; a near copy's
    verdict must cite a claim whose PDQ hashes match the binding's; with ``pinned``, the
    key pinned with ``prov web --log-key``, its receipt must verify with it). Raises
    ServerEvidenceError (502) naming "the binding" (unchecked, a hostile service's DERIVED for an
    unrelated hash would be a match, and two results for the one binding a 500)."""
    found = client.lookup([query])
    check_lookup_cited([query], found, client.address, lambda i, q: "the binding", pinned)
    return found[0][1]


@json_errors
@reads("alg", "value", "maxResults")
async def by_binding_get(request: Request) -> Response:
    """``GET /matches/byBinding?alg=pdq&value=B64[&maxResults=N]``."""
    q = request.query_params
    if "value" not in q or "alg" not in q:
        raise WebError("give the query parameters alg and value")
    return await _by_hash(request, q["alg"], q["value"], in_query=True)


@json_errors
@reads("maxResults")
async def by_binding_post(request: Request) -> Response:
    """``POST /matches/byBinding`` with ``{"alg": "pdq", "value": B64}``."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise WebError('send {"alg": "pdq", "value": "<base64>"}')
    return await _by_hash(request, body.get("alg"), body.get("value"))


@json_errors
@reads("alg", "maxResults", "hintAlg", "hintValue")
async def by_content(request: Request) -> Response:
    """``POST /matches/byContent``: the body is the file; matched like an upload. A
    multipart form (the shape `/api/v1/verify` takes) is refused with a message saying
    so, rather than relayed as an unrecognised file format. The API's optional
    ``hintAlg`` and ``hintValue`` are accepted and ignored (one algorithm, the file's own
    PDQ hash, answers here). Raises WebError (400)."""
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        raise WebError(
            "send the file's bytes as the request body (e.g. curl --data-binary @photo.jpg"
            " -H 'content-type: image/jpeg'), not as a form; /api/v1/verify takes a form"
        )
    if "alg" in request.query_params:
        _alg(request.query_params["alg"])
    limit = _max_results(request)
    web = state(request)
    peer = client_address(request)
    web.limiter.check(peer)
    done = await web.relayer.verify_body(request, "content", peer)
    return JSONResponse(_matches(done.report, limit))


@json_errors
@reads("returnActiveManifest")
@metered
async def manifest(request: Request) -> Response:
    """``GET /manifests/{manifestId}``: the log entry a manifest id (index) names. The
    API's optional ``returnActiveManifest`` is accepted and ignored: the answer is the
    log entry either way (there is no manifest store to choose from), but it must be a
    boolean: another value is a 400 naming it (before, ``=banana`` was a 200)."""
    flag(request, "returnActiveManifest", False)
    index = logviews.parse_index(request.path_params["manifest_id"], "manifestId")
    web = state(request)
    view = await run_in_threadpool(logviews.entry_view, web.client, index, web.config.log_key)
    return JSONResponse(view)


@json_errors
@reads()
async def supported(request: Request) -> Response:
    """``GET /services/supportedAlgorithms``: ``pdq`` as the one fingerprint."""
    return JSONResponse({"watermarks": [], "fingerprints": [{"alg": PDQ_ALGORITHM}]})


def routes() -> list[Route]:
    """The Soft Binding Resolution API's routes."""
    return [
        Route("/matches/byBinding", by_binding_get, methods=["GET"]),
        Route("/matches/byBinding", by_binding_post, methods=["POST"]),
        Route("/matches/byContent", by_content, methods=["POST"]),
        Route("/manifests/{manifest_id}", manifest),
        Route("/services/supportedAlgorithms", supported),
    ]
