"""The OpenAPI 3.1 description of the JSON API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from provenance.core.registry import MAX_MEDIA_TYPE_CHARS, MEDIA_TYPE

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: (
            "bad input (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE), a query"
            " parameter the endpoint does not read among them"
        ),
        404: "not found (NOT_FOUND)",
        408: "the upload stalled (nothing arrived for the idle timeout)",
        413: "this request is over a size or pixel limit (RESOURCE_EXHAUSTED)",
        415: "the body was sent with a Content-Encoding (UNSUPPORTED_ENCODING): send it as is",
        429: (
            "this client is over one of its limits (RATE_LIMITED): uploads a minute (prov web"
            " --uploads-per-minute) or at once, reads of the log and registry a minute"
            " (--reads-per-minute), or JSON body bytes held at once; see Retry-After"
        ),
        502: (
            "the service's answer was refused (BAD_GATEWAY), as `prov verify` refuses it: its"
            " report is of other bytes, or cites a claim of other bytes, or a near copy's"
            " verdict cites a claim whose PDQ hashes do not match the file's (a lookup: the"
            " query's; /matches/byBinding: the binding's), or a lookup's verdict is none an"
            " honest service gives one (TAMPERED, UNSIGNED citing or listing a claim,"
            " REVOKED_KEY citing none), or (prov web"
            " --log-key) its receipt does not verify with the pinned log key, or a page of"
            " the log it sent says its next page starts elsewhere than where it ends"
            " (skipping or repeating entries), holds more entries than asked for, or is"
            " empty before the size of the log's signed checkpoint (or past index 0 of a"
            " log it says is empty), or a checkpoint it sent does not verify with the log"
            " key it presents (prov web --log-key: with the pinned log key, whatever key it"
            " presents), or its latest checkpoint is older than one this page verified"
            " before (a rollback; or it says the log is empty after one), another tree of"
            " the same size, or a newer one its consistency proof does not prove to extend"
            " it (a fork); the message says which; or its answer was larger than the 8 MiB"
            " a reply may hold, or was no reply of this service (it did not parse, a report"
            " had no verdict)"
        ),
        503: (
            "the service is unreachable or busy (UNAVAILABLE), or (an upload) this page's"
            " upload slots are all taken; see Retry-After"
        ),
        504: "the service did not answer within prov web --service-timeout (DEADLINE_EXCEEDED);"
        " see Retry-After",
    }
    return {str(c): _json(ERROR, text[c]) for c in sorted(set(codes))}


#: What every route that calls the service may answer besides its own refusals: the
#: service's evidence refused (502), the service unreachable or busy (503), no answer
#: within ``--service-timeout`` (504); tests/test_openapi_statuses.py sends each route.
SERVICE = (502, 503, 504)
#: A metered read of the log or registry (`provenance.web.api.metered`, 429) that calls
#: the service (503, 504); the routes whose checkpoint or entries are checked add 502.
READ = (429, 503, 504)
#: A route that reads a request body (`provenance.web.api.json_body`, an upload): a bad
#: body, one that stalls (408), one over its size (413), one with a content coding
#: (415), its client over its uploads or JSON bytes (429).
BODY = (400, 408, 413, 415, 429)


def _query(name: str, description: str, required: bool = False, kind: str = "string") -> Any:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": kind}}  # fmt: skip


def _path(name: str, description: str, kind: str = "string") -> Any:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": kind}}  # fmt: skip


def _get(summary: str, params: list[Any], ok: str, *codes: int) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            "responses": {"200": _json({"type": "object"}, ok), **_errors(*codes)},
        }
    }


#: A lookup query's ``media_type`` as a JSON Schema pattern: empty or
#: `provenance.core.registry.MEDIA_TYPE`, the whole string (the service's ``fullmatch``).
#: ``$(?!\n)`` ends it in both dialects that read it: ECMA-262, JSON Schema's own, where
#: ``$`` is the end, and Python's ``re.search`` (the jsonschema package), where a bare
#: ``$`` also matches before a final newline, so "image/jpeg\n" passed the pattern and
#: got a 400. (``\Z`` is no end in ECMA-262: there it is the letter Z.)
MEDIA_TYPE_PATTERN = f"^(|{MEDIA_TYPE.pattern})$(?!\\n)"

MULTIPART = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "sidecar": {
                    "type": "string",
                    "format": "binary",
                    "description": "the file's FILE.prov sidecar; send it before `file`"
                    " when the file is over 8 MiB",
                },
                "file": {"type": "string", "format": "binary"},
            },
        }
    }
}

LOOKUP = {
    "type": "object",
    "required": ["queries"],
    "additionalProperties": False,
    "properties": {
        "queries": {
            "type": "array",
            "minItems": 1,
            "description": "one query at least; at most the service's lookup limit (1000 by"
            " default)",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "ref": {"type": "string", "description": "echoed back"},
                    "sha256": {"type": "string", "description": "the file's SHA-256, hex"},
                    "content_sha256": {
                        "type": "string",
                        "description": "SHA-256 without a C2PA manifest store, hex",
                    },
                    "media_type": {
                        "type": "string",
                        "maxLength": MAX_MEDIA_TYPE_CHARS,
                        "pattern": MEDIA_TYPE_PATTERN,
                        "description": "the file's media type, RFC 6838 type/subtype without"
                        " parameters (image/jpeg, video/mp4), empty or left out when unknown;"
                        f" at most {MAX_MEDIA_TYPE_CHARS} characters. Relayed to the service:"
                        " a video/... query's PDQ hashes are matched as frames in time"
                        " order, not one by one; one that is no media type is a 400",
                    },
                    "pdq": {
                        "type": "array",
                        "description": "PDQ hashes (video: one per sampled frame, in time order)",
                        "items": {
                            "type": "object",
                            "required": ["hash"],
                            "additionalProperties": False,
                            "properties": {
                                "hash": {"type": "string", "description": "64 hex digits"},
                                "quality": {"type": "integer", "minimum": 0, "maximum": 100},
                                "timestamp_seconds": {"type": "number", "minimum": 0},
                            },
                        },
                    },
                },
            },
        }
    },
}

MATCHES = {
    "type": "object",
    "properties": {
        "matches": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["manifestId"],
                "properties": {
                    "manifestId": {"type": "string", "description": "a log index"},
                    "similarityScore": {"type": "integer", "minimum": 0, "maximum": 100},
                },
            },
        }
    },
}


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI 3.1 document (a JSON-able dict)."""
    index = _path("index", "log index, from 0", "integer")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Media provenance HTTP API",
            "version": "1.0.0",
            "description": "Verify files against the signed-capture log, read the log"
            " (RFC 9162 proofs, C2SP checkpoints), and resolve PDQ soft bindings"
            " (C2PA Soft Binding Resolution API). Cryptography decides the verdict;"
            " the detector block is advisory.",
        },
        "paths": {
            "/api/v1/verify": {
                "post": {
                    "summary": "Verify a file (the object `prov verify --json` prints)",
                    "parameters": [
                        _query("detect", "ask for the advisory detector (default true)")
                    ],
                    "requestBody": {"required": True, "content": MULTIPART},
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Report"}, "the report"),
                        **_errors(*BODY, *SERVICE),
                    },
                }
            },
            "/api/v1/lookup": {
                "post": {
                    "summary": "Look files up by their hashes (as `prov scan` does)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": LOOKUP}},
                    },
                    "responses": {
                        "200": _json({"type": "object"}, "{results: [{ref, ...report}]}"),
                        **_errors(*BODY, *SERVICE),
                    },
                }
            },
            "/api/v1/checkpoint": _get(
                "The latest signed checkpoint and the log key",
                [],
                "checkpoint; `cosigned`: the newest checkpoint the service's witnesses"
                " cosigned (null when it has no witnesses): its note, size and quorum, its"
                " log signature checked, and `unverified_names`, the cosigners' key names"
                " as the note carries them, not checked (this page has no witness keys)",
                400,
                404,
                *READ,
                502,
            ),
            "/api/v1/entries": _get(
                "The entries of a file by its SHA-256, or a page of the log from `start`"
                " (sha256 with start or limit: 400)",
                [
                    _query("sha256", "the file's SHA-256, hex"),
                    _query("start", "first index of a page (without sha256)", False, "integer"),
                    _query(
                        "limit", "entries in a page, from 1 to 100 (default 100)", False, "integer"
                    ),
                ],
                "{entries: [...]} by sha256; {start, entries: [...]} for a page, `limit`"
                " entries from `start` (fewer only at the end of the log: the page reads on"
                " over the service's GetEntries pages, which it cuts to fit a reply), so the"
                " next page starts at `start` plus the entries held",
                400,
                404,
                *READ,
                502,
            ),
            "/api/v1/entries/{index}": _get(
                "A log entry: claim, device, inclusion proof checked against the checkpoint",
                [index],
                "the entry",
                400,
                404,
                *READ,
                502,
            ),
            "/api/v1/proofs/inclusion": _get(
                "An inclusion proof (RFC 9162 2.1.3)",
                [
                    _query("index", "log index", True, "integer"),
                    _query(
                        "tree_size",
                        "tree size, at least index+1 (left out: the latest signed checkpoint's,"
                        " held to the newest this page verified, and the proof checked"
                        " against its root: root_hash, verified)",
                        False,
                        "integer",
                    ),
                ],
                "the proof",
                400,
                *READ,
            ),
            "/api/v1/proofs/consistency": _get(
                "A consistency proof (RFC 9162 2.1.4), checked when first_root is given",
                [
                    _query("first", "first tree size", True, "integer"),
                    _query(
                        "second",
                        "second tree size, at least first and 1 (left out: the latest)",
                        False,
                        "integer",
                    ),
                    _query("first_root", "root hash trusted at the first size, hex"),
                ],
                "the proof",
                400,
                404,
                *READ,
                502,
            ),
            "/api/v1/devices/{device_id}": _get(
                "A device: key, label, enrolled, revoked (time and reason)",
                [_path("device_id", "SHA-256 of the device's public key, hex")],
                "the device",
                400,
                404,
                *READ,
            ),
            "/matches/byBinding": {
                **_get(
                    "C2PA soft binding resolution by a PDQ hash",
                    [
                        _query("alg", "pdq", True),
                        _query(
                            "value",
                            "base64 (or base64url, = padding optional) of the 32 PDQ hash bytes",
                            True,
                        ),
                        _query("maxResults", "most matches", False, "integer"),
                    ],
                    "matches",
                    400,
                    *SERVICE,
                ),
                "post": {
                    "summary": "C2PA soft binding resolution (JSON body {alg, value})",
                    "parameters": [_query("maxResults", "most matches", False, "integer")],
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object"}}}
                    },
                    "responses": {
                        "200": _json(MATCHES, "matches"),
                        **_errors(*BODY, *SERVICE),
                    },
                },
            },
            "/matches/byContent": {
                "post": {
                    "summary": "C2PA soft binding resolution by the file itself",
                    "parameters": [
                        _query("alg", "pdq"),
                        _query("maxResults", "", False, "integer"),
                        _query("hintAlg", "a soft binding algorithm to aid the match (ignored)"),
                        _query("hintValue", "its value, base64 (ignored)"),
                    ],
                    "requestBody": {
                        "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}
                    },
                    "responses": {
                        "200": _json(MATCHES, "matches"),
                        **_errors(*BODY, *SERVICE),
                    },
                }
            },
            "/manifests/{manifestId}": _get(
                "The log entry a manifest id (log index) names, as JSON",
                [
                    _path("manifestId", "a log index"),
                    _query(
                        "returnActiveManifest",
                        "the C2PA API's choice of the active manifest or the whole store;"
                        " ignored: the answer is the log entry either way",
                        False,
                        "boolean",
                    ),
                ],
                "the entry",
                400,
                404,
                *READ,
                502,
            ),
            "/services/supportedAlgorithms": _get(
                "Soft binding algorithms answered", [], "{watermarks, fingerprints}", 400
            ),
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "code": {"type": "integer"},
                                "status": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Report": {
                    "type": "object",
                    "required": ["status", "reasons", "file", "evidence"],
                    "properties": {
                        "status": {
                            "enum": [
                                "SIGNED_ORIGINAL",
                                "DERIVED",
                                "TAMPERED",
                                "REVOKED_KEY",
                                "UNSIGNED",
                            ]
                        },
                        "status_basis": {
                            "type": "string",
                            "description": "what decides the status (cryptographic evidence:"
                            " signatures, hashes, the signed log; for DERIVED, only of the"
                            " signed capture, the copy's link to it being a perceptual"
                            " match; for UNSIGNED, that no capture signed by a key in good"
                            " standing and logged was found, so nothing is"
                            " proven either way), never the detector",
                        },
                        "path": {"type": "string"},
                        "reasons": {"type": "array", "items": {"type": "string"}},
                        "file": {"type": "object"},
                        "evidence": {
                            "type": "object",
                            "description": "claim: the claim the status rests on;"
                            " other_claims: the other logged claims of the same exact bytes,"
                            " best-standing first (not revoked, then log index);"
                            " near_search_cut: the search for signed near copies stopped"
                            " at the server's time budget after near_search_seconds, so"
                            " the verdict rests on the near copies found by then (a near"
                            " copy is then DERIVED or UNSIGNED, never REVOKED_KEY)",
                        },
                        "c2pa": {"type": "object"},
                        "detector": {"type": "object", "description": "advisory only"},
                        "verified_at": {"type": "string"},
                        "evidence_checked": {
                            "type": ["string", "null"],
                            "description": "log-key: the cited claim's receipt verified"
                            " here with the log key pinned by `prov web --log-key` (as"
                            " `prov verify --log-key`); null: not checked here (the claim's"
                            " binding of the uploaded bytes always is: else 502)",
                        },
                        "pixels_checked": {
                            "type": ["boolean", "null"],
                            "description": "a near copy's verdict (DERIVED, a near"
                            " REVOKED_KEY): true when the upload's own PDQ hashes, computed"
                            " here, matched the cited claim's (else 502); false when the"
                            " upload is over this page's image limits (100 megapixels,"
                            " 256 MiB by default; under `prov serve --http`, the"
                            " service's own) or a video's decoder ran out of memory"
                            " here, so the match is the service's word (a reason says"
                            " so); null for any other verdict",
                        },
                    },
                },
            }
        },
    }
