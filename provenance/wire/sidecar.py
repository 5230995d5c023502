"""The sidecar file (``FILE.prov``) that travels beside a capture.

A JSON document shaped as a DSSE envelope (payloadType, payload, signatures;
https://github.com/secure-systems-lab/dsse/blob/master/envelope.md) with our
additions: the signer's raw public key, the log receipt once the server has
issued one, and the log's verifier key. Pure: bytes in, values out.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from provenance.core.claims import Claim, Receipt, SignedClaim
from provenance.core.envelope import verify_payload
from provenance.core.errors import ClaimError, SignatureError
from provenance.core.keys import check_public_key, key_id
from provenance.core.merkle import HASH_SIZE
from provenance.wire.convert import decode_claim, decode_receipt, encode_receipt
from provenance.wire.jsontext import loads_text

SIDECAR_FORMAT = "application/vnd.provenance.sidecar.v1+json"
#: Largest sidecar accepted, in bytes.
MAX_SIDECAR_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Sidecar:
    """A signed claim, the signer's 32-byte public key, the receipt if logged, and for
    video the per-chunk leaf hashes (checked against the signed chunk Merkle root before
    use; they let a verifier name a damaged byte range)."""

    signed_claim: SignedClaim
    public_key: bytes
    receipt: Receipt | None = None
    log_verifier_key: str = ""
    chunk_hashes: tuple[bytes, ...] = ()

    @property
    def claim(self) -> Claim:
        """The decoded claim (the signed bytes stay as they are)."""
        return decode_claim(self.signed_claim.claim_bytes)

    def with_receipt(self, receipt: Receipt, log_verifier_key: str = "") -> Sidecar:
        return replace(self, receipt=receipt, log_verifier_key=log_verifier_key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_sidecar(s: Sidecar) -> bytes:
    """Sidecar -> UTF-8 JSON bytes (stable key order, trailing newline)."""
    doc: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "payloadType": s.signed_claim.payload_type,
        "payload": _b64(s.signed_claim.claim_bytes),
        "signatures": [
            {"keyid": s.signed_claim.key_id.hex(), "sig": _b64(s.signed_claim.signature)}
        ],
        "publicKey": _b64(s.public_key),
        "receipt": _b64(encode_receipt(s.receipt)) if s.receipt else None,
        "logVerifierKey": s.log_verifier_key or None,
    }
    if s.chunk_hashes:
        doc["chunkHashes"] = [_b64(h) for h in s.chunk_hashes]
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def decode_sidecar(data: bytes) -> Sidecar:
    """Parse sidecar bytes; raises ClaimError naming what is wrong (over
    MAX_SIDECAR_BYTES, not JSON, nested too deeply, a string holding a lone surrogate,
    fields missing or malformed)."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise ClaimError(f"sidecar is {len(data)} bytes; the limit is {MAX_SIDECAR_BYTES}")
    try:
        doc = loads_text(data)
    except RecursionError as e:  # "[[[[..." deeper than the interpreter's stack allows
        raise ClaimError("sidecar is not valid JSON: nested too deeply") from e
    except ValueError as e:  # not UTF-8 or JSON, an integer of over 4300 digits, a lone surrogate
        raise ClaimError(f"sidecar is not valid JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        raise ClaimError(f"not a provenance sidecar (expected format {SIDECAR_FORMAT!r})")
    try:
        sigs = doc["signatures"]
        if not isinstance(sigs, list) or len(sigs) != 1:
            raise ClaimError("sidecar must carry exactly one signature")
        if not isinstance(sigs[0], dict):
            raise ClaimError(
                "malformed sidecar: the field 'signatures' is not a list of one object"
            )
        payload_type = doc["payloadType"]
        if not isinstance(payload_type, str):
            raise ClaimError("malformed sidecar: the field 'payloadType' is not text")
        signed = SignedClaim(
            payload_type=payload_type,
            claim_bytes=_b64_field(doc["payload"], "payload"),
            key_id=_hex_field(sigs[0]["keyid"], "keyid"),
            signature=_b64_field(sigs[0]["sig"], "sig"),
        )
        public_key = _b64_field(doc["publicKey"], "publicKey")
        receipt = (
            decode_receipt(_b64_field(doc["receipt"], "receipt")) if doc.get("receipt") else None
        )
        chunk_hashes = doc.get("chunkHashes") or []
        if not isinstance(chunk_hashes, list):
            raise ClaimError(
                "malformed sidecar: the field 'chunkHashes' is not a list of base64 text"
            )
        chunks = tuple(_b64_field(h, "chunkHashes") for h in chunk_hashes)
        for i, h in enumerate(chunks):
            if len(h) != HASH_SIZE:  # the server refuses it (rpc_input.check_upload_header)
                raise ClaimError(
                    f"malformed sidecar: chunkHashes[{i}] is {len(h)} bytes; each is a"
                    f" {HASH_SIZE}-byte leaf hash (SHA-256) of one chunk of the video"
                )
    except KeyError as e:  # was "malformed sidecar: KeyError('payload')"
        raise ClaimError(f"malformed sidecar: the field {e.args[0]!r} is missing") from e
    except (TypeError, ValueError, binascii.Error) as e:
        raise ClaimError(f"malformed sidecar: {e}") from e
    except RecursionError as e:
        raise ClaimError("malformed sidecar: its JSON is nested too deeply") from e
    return Sidecar(signed, public_key, receipt, str(doc.get("logVerifierKey") or ""), chunks)


def _b64_field(value: object, name: str) -> bytes:
    """Sidecar field ``name``'s ``value`` decoded from base64; raises ClaimError naming
    the field when it is not base64 text (before: Python's words, "Incorrect padding",
    "argument should be a bytes-like object or ASCII string, not 'int'")."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
    kind = "a list of base64 text" if name == "chunkHashes" else "base64 text"
    raise ClaimError(f"malformed sidecar: the field {name!r} is not {kind}")


def _hex_field(value: object, name: str) -> bytes:
    """Sidecar field ``name``'s ``value`` decoded from hex; raises ClaimError naming the
    field when it is not hex text."""
    if isinstance(value, str):
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise ClaimError(f"malformed sidecar: the field {name!r} is not hex text")


def check_sidecar_key(s: Sidecar) -> None:
    """Check the sidecar's own public key against its claim: the key's id (SHA-256 of
    the raw key) must be the signature's key id and the claim's device id, and the
    signature must verify strictly under it (DSSE PAE, Ed25519).

    Raises KeyMaterialError for a malformed or weak key, SignatureError otherwise. This
    says only that the sidecar is self-consistent; whether the key is enrolled is the
    log's to say (a receipt, or `prov verify`).
    """
    check_public_key(s.public_key)
    kid = key_id(s.public_key)
    if kid != s.signed_claim.key_id:
        raise SignatureError(
            f"the sidecar's public key (key id {kid.hex()[:16]}…) is not the key that signed"
            f" its claim (key id {s.signed_claim.key_id.hex()[:16]}…)"
        )
    if s.claim.device_id != kid:
        raise SignatureError(
            f"the sidecar's claim names device {s.claim.device_id.hex()[:16]}…, not its"
            f" signing key {kid.hex()[:16]}…"
        )
    try:
        verify_payload(
            s.public_key,
            s.signed_claim.payload_type,
            s.signed_claim.claim_bytes,
            s.signed_claim.signature,
        )
    except SignatureError as e:
        raise SignatureError(
            "the sidecar's signature does not verify under its own public key"
        ) from e


def embedded_sidecar(assertion: Mapping[str, Any] | None) -> Sidecar | None:
    """The sidecar a C2PA manifest carries as our provenance assertion's ``evidence``
    (``assertion``: `C2paResult.provenance_assertion`, the ``{"evidence", "checkpoint"}``
    data `provenance.c2pa.writer.embed_manifest` writes): the claim `prov sign --c2pa`
    embedded in the file. None when there is none or it is no sidecar (malformed, over
    MAX_SIDECAR_BYTES, nested too deeply): what the manifest says is then no claim."""
    evidence = assertion.get("evidence") if isinstance(assertion, Mapping) else None
    if not isinstance(evidence, Mapping):
        return None
    try:
        return decode_sidecar(json.dumps(evidence).encode())
    except (ClaimError, ValueError, TypeError, RecursionError):
        return None
