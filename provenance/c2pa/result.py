"""The C2PA block of a verification report, built from the native reader's JSON.

Pure: the reader's validation state and manifest-store JSON (c2pa-rs ``Reader::json``
shape: ``active_manifest``, ``manifests``, ``validation_status``, ``validation_results``)
in, a `C2paResult` out. The JSON comes from a parser that read untrusted data, so every
field is type-checked and anything of an unexpected shape is treated as absent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provenance.c2pa.signing_time import SigningTime

#: Label of the assertion that carries our signed claim, receipt and log checkpoint.
PROVENANCE_ASSERTION_LABEL = "org.provenance.claim"
#: Success code c2pa-rs records when the signing certificate chains to a configured anchor.
TRUSTED_CODE = "signingCredential.trusted"
#: Success code c2pa-rs records when the signature's timestamp comes from a TSA it trusts.
TIMESTAMP_TRUSTED_CODE = "timeStamp.trusted"


@dataclass(frozen=True)
class C2paAction:
    """One entry of a ``c2pa.actions`` assertion of the active manifest.

    action: e.g. "c2pa.created"; digital_source_type: an IPTC URI or None;
    software_agent: the agent's name or None.
    """

    action: str
    digital_source_type: str | None = None
    software_agent: str | None = None


@dataclass(frozen=True)
class C2paIngredient:
    """An ingredient of the active manifest: its title, relationship and media type."""

    title: str | None
    relationship: str | None
    media_type: str | None


@dataclass(frozen=True)
class C2paResult:
    """What the C2PA reader found in one file.

    present: a manifest store was found and parsed. validation_state: the reader's
    "Trusted" / "Valid" / "Invalid", None when nothing was read. validation_codes: the
    ``code`` of every ``validation_status`` entry, in the reader's order (one per
    manifest for a repeated failure). signer / signer_org: common name and organization
    of the signing certificate; signing_alg: e.g. "Ed25519"; signed_at: the RFC 3161
    time as the reader prints it, or None. trusted_anchor: the active manifest's signer
    chains to an anchor the operator configured. provenance_assertion: the data of our
    `PROVENANCE_ASSERTION_LABEL` assertion, as decoded JSON, or None. signing_time: the
    time the signer's certificate was judged at and its source (RFC 3161 timestamp, log
    receipt, current time; `provenance.c2pa.signing_time`), None when not assessed;
    signing_time_error: why it could not be assessed; timestamp_trusted: the reader
    reported ``timeStamp.trusted`` for the active manifest (not in `to_dict`). error_kind and
    error: why nothing could be read ("Remote", "Other", "NotSupported", "Verify",
    "Timeout", "Crashed", "TooLarge", ...) and the message in words, without the kind
    before it; both None when the file was read or simply carries no manifest.
    """

    present: bool
    validation_state: str | None = None
    validation_codes: tuple[str, ...] = ()
    signer: str | None = None
    signer_org: str | None = None
    signing_alg: str | None = None
    signed_at: str | None = None
    claim_generator: str | None = None
    actions: tuple[C2paAction, ...] = ()
    ingredients: tuple[C2paIngredient, ...] = ()
    trusted_anchor: bool = False
    provenance_assertion: Mapping[str, Any] | None = None
    error_kind: str | None = None
    error: str | None = None
    signing_time: SigningTime | None = None
    signing_time_error: str | None = None
    timestamp_trusted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: the `c2pa` object of ``prov verify --json``."""
        return {
            "present": self.present,
            "validation_state": self.validation_state,
            "validation_codes": list(self.validation_codes),
            "signer": self.signer,
            "signer_org": self.signer_org,
            "signing_alg": self.signing_alg,
            "signed_at": self.signed_at,
            "claim_generator": self.claim_generator,
            "actions": [
                {
                    "action": a.action,
                    "digital_source_type": a.digital_source_type,
                    "software_agent": a.software_agent,
                }
                for a in self.actions
            ],
            "ingredients": [
                {"title": i.title, "relationship": i.relationship, "media_type": i.media_type}
                for i in self.ingredients
            ],
            "trusted_anchor": self.trusted_anchor,
            "provenance_assertion": self.provenance_assertion,
            "error_kind": self.error_kind,
            "error": self.error,
            "signing_time": self.signing_time.to_dict() if self.signing_time else None,
            "signing_time_error": self.signing_time_error,
        }


NOT_PRESENT = C2paResult(present=False)


def failed(kind: str, message: str) -> C2paResult:
    """A result for a file whose manifest could not be read: kind names the reason."""
    return C2paResult(present=False, error_kind=kind, error=message)


def result_from_reader(validation_state: str | None, manifest_json: str) -> C2paResult:
    """Build a result from ``Reader.get_validation_state()`` and ``Reader.json()``.

    Raises nothing for odd shapes (they read as absent); a JSON text that does not
    parse gives a failed result of kind "Json".
    """
    try:
        store = json.loads(manifest_json)
    except json.JSONDecodeError as e:
        return failed("Json", f"the reader's manifest JSON does not parse: {e}")
    store = _dict(store)
    active = _dict(_dict(store.get("manifests")).get(_str(store.get("active_manifest")) or ""))
    signature = _dict(active.get("signature_info"))
    assertions = [_dict(a) for a in _list(active.get("assertions"))]
    success = _list(
        _dict(_dict(store.get("validation_results")).get("activeManifest")).get("success")
    )
    provenance = next(
        (a.get("data") for a in assertions if a.get("label") == PROVENANCE_ASSERTION_LABEL),
        None,
    )
    return C2paResult(
        present=True,
        validation_state=_str(validation_state),
        validation_codes=tuple(
            code
            for entry in _list(store.get("validation_status"))
            if (code := _str(_dict(entry).get("code"))) is not None
        ),
        signer=_str(signature.get("common_name")),
        signer_org=_str(signature.get("issuer")),
        signing_alg=_str(signature.get("alg")),
        signed_at=_str(signature.get("time")),
        claim_generator=_claim_generator(active),
        actions=tuple(
            action
            for a in assertions
            if (_str(a.get("label")) or "").startswith("c2pa.actions")
            for entry in _list(_dict(a.get("data")).get("actions"))
            if (action := _action(_dict(entry))) is not None
        ),
        ingredients=tuple(
            C2paIngredient(
                title=_str(i.get("title")),
                relationship=_str(i.get("relationship")),
                media_type=_str(i.get("format")),
            )
            for i in map(_dict, _list(active.get("ingredients")))
        ),
        trusted_anchor=any(_dict(entry).get("code") == TRUSTED_CODE for entry in success),
        timestamp_trusted=any(
            _dict(entry).get("code") == TIMESTAMP_TRUSTED_CODE for entry in success
        ),
        provenance_assertion=provenance if isinstance(provenance, dict) else None,
    )


def _claim_generator(manifest: Mapping[str, Any]) -> str | None:
    """The v1 ``claim_generator`` string, else "name/version" of the first generator info."""
    legacy = _str(manifest.get("claim_generator"))
    if legacy:
        return legacy
    infos = _list(manifest.get("claim_generator_info"))
    if not infos:
        return None
    info = _dict(infos[0])
    name, version = _str(info.get("name")), _str(info.get("version"))
    if name is None:
        return None
    return f"{name}/{version}" if version else name


def _action(entry: Mapping[str, Any]) -> C2paAction | None:
    name = _str(entry.get("action"))
    if name is None:
        return None
    agent = entry.get("softwareAgent")
    return C2paAction(
        action=name,
        digital_source_type=_str(entry.get("digitalSourceType")),
        software_agent=_str(_dict(agent).get("name")) if isinstance(agent, dict) else _str(agent),
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
