"""The time at which a C2PA export's signing certificate is judged, and whether it was
valid then.

C2PA 2.1, section 14.6 ("Validating the signing credential") judges the signer's
certificate at the time of a trusted RFC 3161 timestamp when the signature carries one,
and at the current time otherwise; so without a timestamp every export reads
``signingCredential.expired`` once the device certificate runs out. Our exports can
prove their time two independent ways, tried in this order:

1. **RFC 3161 timestamp** (``sigTst2``, `provenance.c2pa.timestamp`): a token over this
   exact claim signature, from a TSA that chains to a configured TSA root. It dates the
   C2PA signature itself. Failing that, a timestamp the C2PA reader trusted itself
   (``timeStamp.trusted``: a TSA on c2pa-rs's own list, or a v1 ``sigTst``): the reader
   already judged the signer at its time, which no clock changes. c2pa-rs checks that
   token's chain against the signers' anchors too and not its extended key usage, so it
   is used only when its signer has id-kp-timeStamping (not, say, the device's own
   certificate stamping its own signature).
2. **Log receipt**: the manifest's ``org.provenance.claim`` assertion carries our signed
   claim and its receipt. When the receipt verifies against the log's key (signed
   checkpoint, RFC 9162 inclusion proof), the claim is by the key in the C2PA signer's
   certificate, and it binds this file's content, the log's ``integrated_at`` proves
   the device key had signed this content by then. It dates the capture's claim, which
   the exporter signs before the manifest (docs/c2pa.md).
3. **Current time** (`SigningTimePolicy.clock`), as every C2PA validator does.

A source that is present but fails (a forged or foreign token, an untrusted TSA, a
receipt for other content or another log) is never used silently: its reason is kept
in `SigningTime.problems` and the next source is tried.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from provenance.c2pa.container import content_sha256
from provenance.c2pa.result import C2paResult
from provenance.c2pa.timestamp import (
    ClaimSignature,
    TsaTrust,
    read_claim_signature,
    timestamping_signer,
    verify_token,
)
from provenance.core.errors import (
    ClaimError,
    ConfigError,
    ProofError,
    ProvenanceError,
    TimestampError,
)
from provenance.core.keys import key_id
from provenance.log.checkpoint import NoteVerifier
from provenance.log.receipt import verify_receipt
from provenance.wire.sidecar import decode_sidecar

#: Failure code of a signer certificate outside its validity at the time used (C2PA 2.1, 15.3).
EXPIRED_CODE = "signingCredential.expired"
#: Failure code of a signer certificate not yet valid at the time used.
INVALID_CODE = "signingCredential.invalid"
#: Largest file whose signing time is assessed, bytes (it is read whole, and hashed for
#: the receipt check; the same bound as the server's image limit).
SIGNING_TIME_MAX_BYTES = 256 << 20
#: Codes that leave the state "Valid" (the signer is merely not on a trust list).
_NOT_FAILURES = frozenset({"signingCredential.untrusted"})


class TimeSource(StrEnum):
    """Where the signing time came from."""

    TIMESTAMP = "timestamp"
    LOG_RECEIPT = "log_receipt"
    CURRENT_TIME = "current_time"


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SigningTimePolicy:
    """What a verifier trusts for signing time.

    tsa_trust: roots of the trusted timestamp authorities (None: no token is trusted);
    log_verifier: the log's checkpoint key (None: receipts are not checked); clock: the
    current time (timezone-aware), injected so tests can move it.
    """

    tsa_trust: TsaTrust | None = None
    log_verifier: NoteVerifier | None = None
    clock: Callable[[], datetime] = _utcnow


@dataclass(frozen=True)
class SigningTime:
    """The time a C2PA signature is judged at, and the certificate's validity then.

    source: which proof gave the time; time: that time (UTC); description: says so in
    words ("time from RFC 3161 timestamp by <TSA>", "time from the log receipt",
    "current time"); tsa: the TSA's name for a timestamp; not_before, not_after: the
    signer certificate's validity (UTC); certificate_valid: every certificate of the
    x5chain was within its validity at ``time``; problems: why a proof present in the
    file was not used (forged token, untrusted TSA, bad receipt).
    """

    source: TimeSource
    time: datetime
    description: str
    not_before: datetime
    not_after: datetime
    certificate_valid: bool
    tsa: str | None = None
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the ``signing_time`` object of the ``c2pa`` block."""
        return {
            "source": self.source.value,
            "time": self.time.isoformat(),
            "description": self.description,
            "tsa": self.tsa,
            "certificate_not_before": self.not_before.isoformat(),
            "certificate_not_after": self.not_after.isoformat(),
            "certificate_valid": self.certificate_valid,
            "problems": list(self.problems),
        }


def assess_signing_time(
    data: bytes,
    media_type: str,
    result: C2paResult,
    policy: SigningTimePolicy,
) -> SigningTime:
    """Choose the signing time of the file's active C2PA signature (module docstring).

    data: the whole file; media_type: JPEG, PNG, MP4 or MOV; result: what the reader
    found in it (our ``org.provenance.claim`` assertion, and whether the reader itself
    trusted a timestamp: a v1 ``sigTst`` or a TSA on its own list, whose time it then
    judged the signer at; that judgement does not depend on the clock, so it is kept).
    Raises MediaError when the claim signature cannot be found or decoded.
    """
    sig = read_claim_signature(data, media_type)
    problems: list[str] = []
    try:
        found = sig.token()
        if found is not None:
            label, token = found
            if label != "sigTst2":
                raise TimestampError(
                    "the timestamp is a v1 sigTst (over the claim, not the signature);"
                    " only v2 sigTst2 tokens are checked here"
                )
            stamp = verify_token(token, sig.countersign_tbs(), policy.tsa_trust)
            return _judged(
                sig,
                TimeSource.TIMESTAMP,
                stamp.gen_time,
                f"time from RFC 3161 timestamp by {stamp.tsa}",
                problems,
                stamp.tsa,
            )
    except ProvenanceError as e:
        problems.append(f"timestamp not used: {e}")
    reader_time = _reader_timestamp(result)
    if reader_time is not None:
        # c2pa-rs chains a timestamp to its one anchor list (the signers' too) without
        # the timeStamping EKU: a device could date its own signature.
        try:
            found = sig.token()
            if found is None:
                raise TimestampError("the claim signature's header carries no token")
            tsa = timestamping_signer(found[1])
            description = "time from RFC 3161 timestamp trusted by the C2PA reader"
            return _judged(sig, TimeSource.TIMESTAMP, reader_time, description, problems, tsa)
        except ProvenanceError as e:
            problems.append(f"timestamp trusted by the C2PA reader not used: {e}")
    assertion = result.provenance_assertion
    if assertion is not None:
        try:
            logged = _receipt_time(data, media_type, sig, assertion, policy.log_verifier)
            return _judged(
                sig, TimeSource.LOG_RECEIPT, logged, "time from the log receipt", problems
            )
        except ProvenanceError as e:
            problems.append(f"log receipt not used: {e}")
    return _judged(sig, TimeSource.CURRENT_TIME, policy.clock(), "current time", problems)


def apply_signing_time(result: C2paResult, st: SigningTime) -> C2paResult:
    """The reader's result judged at ``st``: ``signingCredential.expired`` (or
    ``.invalid``) is dropped when the certificate was valid at st.time, and added (state
    "Invalid") when it was not; the state is "Valid"/"Trusted" again when no other
    failure code remains. Returns a new result carrying ``signing_time``."""
    codes = [c for c in result.validation_codes if c not in (EXPIRED_CODE, INVALID_CODE)]
    state = result.validation_state
    if st.certificate_valid:
        if state == "Invalid" and all(c in _NOT_FAILURES for c in codes):
            state = "Trusted" if result.trusted_anchor and not codes else "Valid"
    else:
        codes.append(EXPIRED_CODE if st.time > st.not_after else INVALID_CODE)
        state = "Invalid"
    return replace(result, validation_state=state, validation_codes=tuple(codes), signing_time=st)


def _judged(
    sig: ClaimSignature,
    source: TimeSource,
    time: datetime,
    description: str,
    problems: list[str],
    tsa: str | None = None,
) -> SigningTime:
    leaf = sig.chain[0]
    return SigningTime(
        source=source,
        time=time.astimezone(UTC),
        description=description,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        certificate_valid=all(
            c.not_valid_before_utc <= time <= c.not_valid_after_utc for c in sig.chain
        ),
        tsa=tsa,
        problems=tuple(problems),
    )


def _reader_timestamp(result: C2paResult) -> datetime | None:
    """The reader's signing time when it reported ``timeStamp.trusted``, else None."""
    if not result.timestamp_trusted or result.signed_at is None:
        return None
    try:
        when = datetime.fromisoformat(result.signed_at)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _receipt_time(
    data: bytes,
    media_type: str,
    sig: ClaimSignature,
    assertion: Mapping[str, Any],
    verifier: NoteVerifier | None,
) -> datetime:
    """integrated_at of the receipt in our assertion, once it is proven for this file and
    this signer. Raises ProvenanceError saying what does not hold."""
    evidence = assertion.get("evidence")
    if not isinstance(evidence, Mapping):
        raise ClaimError("the manifest's claim assertion carries no evidence")
    try:
        text = json.dumps(evidence).encode()
    except (ValueError, RecursionError) as e:
        raise ClaimError(f"the manifest's claim evidence cannot be re-encoded: {e}") from e
    sidecar = decode_sidecar(text)
    if sidecar.receipt is None:
        raise ClaimError("the manifest's claim carries no log receipt")
    if verifier is None:
        raise ConfigError("no log key is configured to check the receipt")
    if sidecar.signed_claim.key_id != key_id(_raw_ed25519(sig.chain[0])):
        raise ProofError("the logged claim is by another key than the C2PA signer")
    if sidecar.claim.hard_binding.sha256 != content_sha256(data, media_type):
        raise ProofError("the logged claim is for other content than this file")
    verify_receipt(sidecar.receipt, sidecar.signed_claim, verifier)
    return sidecar.receipt.integrated_at


def _raw_ed25519(cert: x509.Certificate) -> bytes:
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ProofError("the C2PA signer's key is not Ed25519, so it is not a device key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def with_signing_time(
    result: C2paResult, data: bytes, media_type: str, policy: SigningTimePolicy
) -> C2paResult:
    """`apply_signing_time` of `assess_signing_time` to a result that found a manifest;
    a claim signature that cannot be read leaves the result as it is, with the reason
    in ``signing_time_error``. Raises nothing on purpose."""
    if not result.present:
        return result
    try:
        st = assess_signing_time(data, media_type, result, policy)
    except ProvenanceError as e:
        return replace(result, signing_time_error=f"signing time not assessed: {e}")
    return apply_signing_time(result, st)
