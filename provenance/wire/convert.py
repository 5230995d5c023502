"""The one place where domain objects meet protobuf messages.

Nothing else in the project imports ``*_pb2``. Decoding untrusted bytes or messages
raises `ClaimError` with a message a person can act on, and nothing else: no protobuf
``DecodeError``, no ``ValueError`` from an out-of-range timestamp, no `BindingError`
from a malformed soft binding.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from provenance.core.binding import PDQ_HASH_SIZE, PerceptualHash, pdq_hashes, perceptual_hash
from provenance.core.claims import (
    MAX_LOG_ENTRY_BYTES,
    MAX_PARSED_CLAIM_BYTES,
    Claim,
    Device,
    HardBinding,
    Receipt,
    SignedClaim,
    TimeFlag,
    Verdict,
)
from provenance.core.dihedral import DIHEDRAL_HASHES
from provenance.core.errors import BindingError, ClaimError, TransportError
from provenance.core.keyhistory import KeyEvent, KeyEventKind, SignedKeyEvent
from provenance.core.verify import (
    ClaimEvidence,
    Evidence,
    FileFacts,
    VerificationReport,
)
from provenance.core.video_match import VideoMatch
from provenance.v1 import provenance_pb2 as pb
from provenance.wire.jsontext import loads_text

__all__ = ["pb"]


# ---------------------------------------------------------------- times


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# the range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z
_TS_MIN_S = -62_135_596_800
_TS_MAX_S = 253_402_300_799


def ts_to_pb(when: datetime | None) -> Timestamp | None:
    """UTC datetime -> Timestamp (None stays None): whole seconds since the epoch rounded
    down and the microseconds as nanos, as `Timestamp.FromDatetime` gives (by timedelta
    arithmetic, about 5x faster: a Lookup reply carries one per file)."""
    if when is None:
        return None
    if when.tzinfo is None:  # a naive time is local time, as astimezone() reads it
        when = when.astimezone(UTC)
    since = when - _EPOCH
    return Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def ts_from_pb(t: Timestamp, what: str = "timestamp") -> datetime:
    """Timestamp -> timezone-aware UTC datetime.

    Raises ClaimError when it lies outside 0001-01-01 .. 9999-12-31 (the range of
    google.protobuf.Timestamp and of Python's datetime) or its nanos are not 0..999999999.
    """
    seconds, nanos = t.seconds, t.nanos
    if _TS_MIN_S <= seconds <= _TS_MAX_S and 0 <= nanos < 1_000_000_000:
        # what Timestamp.ToDatetime(tzinfo=UTC) gives, without its checks and conversion
        # (a submission decodes one on the event loop)
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    raise ClaimError(
        f"{what} is out of range ({seconds} s, {nanos} ns): a time must lie between"
        " 0001-01-01 and 9999-12-31 UTC"
    )


def _parse(msg_type: Any, data: bytes, what: str) -> Any:
    msg = msg_type()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:  # its text names protobuf's parser: "Error parsing message ..."
        raise ClaimError(
            f"malformed {what}: its bytes are not a valid {msg_type.DESCRIPTOR.name} message"
            " (protobuf's encoding of one is damaged, cut short, or holds text that is not"
            " UTF-8)"
        ) from e
    return msg


# ---------------------------------------------------------------- claims


def soft_fields(h: PerceptualHash) -> dict[str, Any]:
    """The fields of ``h``'s wire SoftBinding, by name: what a repeated SoftBinding field
    of a message being built takes at about two thirds of the cost of a SoftBinding."""
    return {
        "algorithm": h.algorithm,
        "hash": h.hash,
        "quality": h.quality,
        "timestamp_seconds": h.timestamp_seconds,
    }


def soft_to_pb(h: PerceptualHash) -> pb.SoftBinding:
    return pb.SoftBinding(**soft_fields(h))


def softs_from_pb(ms: Iterable[pb.SoftBinding]) -> tuple[PerceptualHash, ...]:
    """Wire soft bindings -> PerceptualHashes, built in one comprehension (a scan's Lookup
    sends 8 a photo; a call per hash cost 1.5 us a file more, measured 2 December) by
    `perceptual_hash` (the constructor's checks without the dataclass ``__init__``: 8
    hashes 26 -> 19 us, measured 4 December at load 7); raises ClaimError when a field is
    out of range (algorithm, hash size, quality, frame time)."""
    try:
        return tuple(
            [
                perceptual_hash(m.algorithm, bytes(m.hash), m.quality, m.timestamp_seconds)
                for m in ms
            ]
        )
    except BindingError as e:
        raise ClaimError(f"malformed soft binding: {e}") from e


def pdq_dihedral_split(packed: bytes, quality: int) -> tuple[tuple[PerceptualHash, ...], bytes]:
    """`pdq_dihedral_from_pb`'s first hash (none when ``packed`` is empty) and the rest of
    ``packed`` as it came (the turns, 32 bytes each), with the same checks and errors: the
    server's Lookup builds an object of the turns only for a file that has a candidate.
    Raises ClaimError as `pdq_dihedral_from_pb`."""
    if len(packed) % PDQ_HASH_SIZE or len(packed) > DIHEDRAL_HASHES * PDQ_HASH_SIZE:
        pdq_dihedral_from_pb(packed, quality)  # raises, saying why
    return pdq_dihedral_from_pb(packed[:PDQ_HASH_SIZE], quality), packed[PDQ_HASH_SIZE:]


def pdq_dihedral_from_pb(packed: bytes, quality: int) -> tuple[PerceptualHash, ...]:
    """A LookupQuery's ``pdq_dihedral`` and ``pdq_quality`` as PerceptualHashes: the image's
    own hash first, then its turns in `provenance.core.dihedral.TRANSFORMS` order (at most
    DIHEDRAL_HASHES in all; empty when the field is). Raises ClaimError on a length that is
    not a whole number of 32-byte hashes or holds more than 8, or a quality outside 0..100."""
    if len(packed) % PDQ_HASH_SIZE or len(packed) > DIHEDRAL_HASHES * PDQ_HASH_SIZE:
        raise ClaimError(
            f"pdq_dihedral must hold whole {PDQ_HASH_SIZE}-byte PDQ hashes, at most"
            f" {DIHEDRAL_HASHES} ({DIHEDRAL_HASHES * PDQ_HASH_SIZE} bytes), got {len(packed)} bytes"
        )
    try:
        return pdq_hashes(packed, quality)
    except BindingError as e:
        raise ClaimError(f"malformed soft binding: {e}") from e


def encode_claim(claim: Claim) -> bytes:
    """Serialize a claim once, deterministically; these bytes are what gets signed."""
    msg = pb.Claim(
        version=claim.version,
        device_id=claim.device_id,
        sequence=claim.sequence,
        captured_at=ts_to_pb(claim.captured_at),
        media_type=claim.media_type,
        size_bytes=claim.size_bytes,
        width=claim.width,
        height=claim.height,
        duration_seconds=claim.duration_seconds,
        hard_binding=pb.HardBinding(
            sha256=claim.hard_binding.sha256,
            chunk_size=claim.hard_binding.chunk_size,
            chunk_count=claim.hard_binding.chunk_count,
            chunk_merkle_root=claim.hard_binding.chunk_merkle_root,
        ),
        soft_bindings=[soft_to_pb(h) for h in claim.soft_bindings],
        prev_claim_hash=claim.prev_claim_hash,
        metadata=dict(claim.metadata),
        frame_sample_rate=claim.frame_sample_rate,
        orientation=claim.orientation,
    )
    return msg.SerializeToString(deterministic=True)


def decode_claim(data: bytes) -> Claim:
    """Parse claim bytes; raises ClaimError when they are not a claim."""
    return claim_from_message(claim_message(data))


def decode_offered_claim(data: bytes) -> Claim:
    """`decode_claim` of a claim a caller offers rather than one the log holds (a sidecar
    sent with a file): raises ClaimError, before it is parsed, when it is over
    `MAX_PARSED_CLAIM_BYTES`, which no logged claim is (one 7.7 MB sidecar claim of
    600,000 metadata entries held the GIL 1.3-3.1 s, parsed and converted)."""
    if len(data) > MAX_PARSED_CLAIM_BYTES:
        raise ClaimError(
            f"its claim is {len(data):,} bytes; a claim is at most"
            f" {MAX_PARSED_CLAIM_BYTES:,} (a log entry at most {MAX_LOG_ENTRY_BYTES:,}), so"
            " it was not read"
        )
    return decode_claim(data)


def claim_message(data: bytes) -> pb.Claim:
    """Claim bytes parsed into their protobuf message, no field converted yet (what a
    submission's counts are read from before: `registry.check_claim_counts`); raises
    ClaimError when they are not a claim message."""
    message: pb.Claim = _parse(pb.Claim, data, "claim")
    return message


def claim_from_message(m: pb.Claim) -> Claim:
    """`claim_message`'s message as a Claim; raises ClaimError when a required field is
    missing or a field is out of range."""
    for name, words in (
        ("captured_at", "the device's UTC time of the capture"),
        ("hard_binding", "the SHA-256 of the file's bytes"),
    ):
        if not m.HasField(name):  # the message named neither (before: "capture time or ...")
            raise ClaimError(
                f"malformed claim: the claim's {name} is missing; every claim states {words}"
                ' (DESIGN.md, "The signed claim")'
            )
    hb = m.hard_binding
    return Claim(
        version=m.version,
        device_id=bytes(m.device_id),
        sequence=m.sequence,
        captured_at=ts_from_pb(m.captured_at, "the claim's capture time"),
        media_type=m.media_type,
        size_bytes=m.size_bytes,
        width=m.width,
        height=m.height,
        duration_seconds=m.duration_seconds,
        hard_binding=HardBinding(
            sha256=bytes(hb.sha256),
            chunk_size=hb.chunk_size,
            chunk_count=hb.chunk_count,
            chunk_merkle_root=bytes(hb.chunk_merkle_root),
        ),
        soft_bindings=softs_from_pb(m.soft_bindings),
        prev_claim_hash=bytes(m.prev_claim_hash),
        metadata=dict(m.metadata) if m.metadata else {},
        frame_sample_rate=m.frame_sample_rate,
        orientation=m.orientation,
    )


def signed_to_pb(s: SignedClaim) -> pb.SignedClaim:
    return pb.SignedClaim(
        payload_type=s.payload_type, claim=s.claim_bytes, key_id=s.key_id, signature=s.signature
    )


def signed_from_pb(m: pb.SignedClaim) -> SignedClaim:
    return SignedClaim(
        payload_type=m.payload_type,
        claim_bytes=bytes(m.claim),
        key_id=bytes(m.key_id),
        signature=bytes(m.signature),
    )


# ---------------------------------------------------------------- log


def encode_log_entry(
    s: SignedClaim, integrated_at: datetime, at_pb: Timestamp | None = None
) -> bytes:
    """The leaf data of the log: the signed claim plus the server's integration time.
    ``at_pb``: ``ts_to_pb(integrated_at)`` made once for a batch of entries sharing it."""
    return pb.LogEntry(
        signed_claim=signed_to_pb(s), integrated_at=at_pb or ts_to_pb(integrated_at)
    ).SerializeToString(deterministic=True)


#: The columns a leaf is indexed by, from its entry: (claim hash, device id, sequence,
#: file SHA-256, integration time in microseconds since the epoch).
EntryColumns = tuple[bytes, bytes, int, bytes, int]
#: A claim's soft binding as the store keeps it: (leaf index, algorithm, hash, quality,
#: frame time in seconds).
SoftBindingRow = tuple[int, str, bytes, int, float]


def log_entry_columns(data: bytes) -> EntryColumns:
    """(claim hash, device id, sequence, file SHA-256, integration time in microseconds
    since the epoch) of leaf data, from the raw protobuf fields without building a claim
    or a datetime: what the store indexes a leaf by, for the start-up check.

    A key-history entry is indexed by (its event hash, device id, 0, no file hash, time).
    Raises ClaimError when the bytes are not a log entry or its claim does not parse.
    """
    e = _parse(pb.LogEntry, data, "log entry")
    if e.HasField("key_event"):
        return _key_event_columns(e)
    return _claim_columns(e, _parse(pb.Claim, e.signed_claim.claim, "claim"))


def _at_us(e: pb.LogEntry) -> int:
    """A log entry's integration time in microseconds (-1 for one no writer makes)."""
    t = e.integrated_at
    return t.seconds * 1_000_000 + t.nanos // 1000 if t.nanos % 1000 == 0 else -1


def _key_event_columns(e: pb.LogEntry) -> EntryColumns:
    k = e.key_event
    event = _parse(pb.KeyEvent, k.event, "key event")
    signed = SignedKeyEvent(bytes(k.event), bytes(k.signer_public_key), bytes(k.signature))
    return signed.event_hash, bytes(event.device_id), 0, b"", _at_us(e)


def _claim_columns(e: pb.LogEntry, c: pb.Claim) -> EntryColumns:
    # protobuf hands out bytes and ints already: no conversion per field
    claim_hash = hashlib.sha256(e.signed_claim.claim).digest()
    return claim_hash, c.device_id, c.sequence, c.hard_binding.sha256, _at_us(e)


class AuditedEntry(NamedTuple):
    """What `prov log audit --db` compares a leaf's rows with, read out of its entry by one
    parse (`audited_entry`), for every check of the leaf to share.

    ``columns``: as `log_entry_columns` (None when the claim or key event does not
    parse); ``soft_rows``: the soft-hash rows the store must hold for the leaf, its
    claim's soft bindings (none for a key event; None when the claim does not parse);
    ``prev_claim_hash``: the claim's link to its device's previous claim (empty for a key
    event); ``key_event``: whether the entry is key history; ``error``: why ``columns``
    (and for a claim ``soft_rows``) is unknown."""

    columns: EntryColumns | None
    soft_rows: list[SoftBindingRow] | None
    prev_claim_hash: bytes
    key_event: bool
    error: ClaimError | None


def audited_entry(index: int, data: bytes) -> AuditedEntry:
    """`AuditedEntry` of leaf ``index`` whose leaf data is ``data``: one protobuf parse of
    the entry and one of its claim (or key event), nothing validated beyond them (the
    entry is covered by the tree the audit verifies). Raises ClaimError when ``data`` is
    no log entry; a claim or key event that does not parse is the result's ``error``."""
    e = _parse(pb.LogEntry, data, "log entry")
    if e.HasField("key_event"):
        try:
            return AuditedEntry(_key_event_columns(e), [], b"", True, None)
        except ClaimError as err:
            return AuditedEntry(None, [], b"", True, err)
    try:
        c = _parse(pb.Claim, e.signed_claim.claim, "claim")
    except ClaimError as err:
        return AuditedEntry(None, None, b"", False, err)
    soft = [(index, s.algorithm, s.hash, s.quality, s.timestamp_seconds) for s in c.soft_bindings]
    return AuditedEntry(_claim_columns(e, c), soft, c.prev_claim_hash, False, None)


def decode_log_entry(data: bytes) -> tuple[SignedClaim, datetime]:
    """Leaf data of a claim -> (signed claim, integration time); raises ClaimError when
    malformed or when the leaf is a key-history entry (`decode_entry` reads both)."""
    got, integrated_at = decode_entry(data)
    if isinstance(got, SignedKeyEvent):
        raise ClaimError("this log entry is a key-history entry (enrollment or revocation)")
    return got, integrated_at


def decode_entry(data: bytes) -> tuple[SignedClaim | SignedKeyEvent, datetime]:
    """Leaf data -> (signed claim or signed key event, integration time); raises
    ClaimError when malformed. A leaf with ``key_event`` set is key history; every other
    leaf (all leaves written before key history existed) is a claim."""
    m = _parse(pb.LogEntry, data, "log entry")
    at = ts_from_pb(m.integrated_at, "the integration time")
    if m.HasField("key_event"):
        if m.HasField("signed_claim"):
            raise ClaimError("a log entry holds both a claim and a key event")
        k = m.key_event
        return SignedKeyEvent(bytes(k.event), bytes(k.signer_public_key), bytes(k.signature)), at
    return signed_from_pb(m.signed_claim), at


def is_key_event_entry(data: bytes) -> bool:
    """Whether leaf data is a key-history entry (one protobuf parse, nothing converted:
    what an audit asks of every entry); raises ClaimError when malformed."""
    return bool(_parse(pb.LogEntry, data, "log entry").HasField("key_event"))


def encode_key_event_entry(signed: SignedKeyEvent, integrated_at: datetime) -> bytes:
    """The leaf data of a key-history entry: the signed key event and the server's
    integration time (`provenance.core.keyhistory`)."""
    return pb.LogEntry(
        key_event=pb.SignedKeyEvent(
            event=signed.event_bytes,
            signer_public_key=signed.signer_public_key,
            signature=signed.signature,
        ),
        integrated_at=ts_to_pb(integrated_at),
    ).SerializeToString(deterministic=True)


def encode_key_event(ev: KeyEvent) -> bytes:
    """A `KeyEvent` serialized once, to be signed (`keyhistory.sign_key_event`)."""
    return pb.KeyEvent(
        kind=cast(pb.KeyEvent.Kind, int(ev.kind)),
        device_id=ev.device_id,
        public_key=ev.public_key,
        effective_at=ts_to_pb(ev.effective_at),
        reason=ev.reason,
        authorised_by=ev.authorised_by,
        backfilled=ev.backfilled,
    ).SerializeToString(deterministic=True)


def decode_key_event(data: bytes) -> KeyEvent:
    """Signed KeyEvent bytes -> `KeyEvent`; raises ClaimError when malformed or of an
    unknown kind."""
    m = _parse(pb.KeyEvent, data, "key event")
    try:
        kind = KeyEventKind(m.kind)
    except ValueError as e:
        raise ClaimError(f"key event of unknown kind {m.kind}") from e
    return KeyEvent(
        kind=kind,
        device_id=bytes(m.device_id),
        effective_at=ts_from_pb(m.effective_at, "the key event's time"),
        public_key=bytes(m.public_key),
        reason=m.reason,
        authorised_by=m.authorised_by,
        backfilled=m.backfilled,
    )


def receipt_to_pb(r: Receipt) -> pb.Receipt:
    return pb.Receipt(
        leaf_index=r.leaf_index,
        integrated_at=ts_to_pb(r.integrated_at),
        checkpoint=r.checkpoint,
        inclusion_proof=list(r.inclusion_proof),
        log_entry=r.log_entry,
    )


def receipt_from_pb(m: pb.Receipt) -> Receipt:
    return Receipt(
        leaf_index=m.leaf_index,
        integrated_at=ts_from_pb(m.integrated_at, "the receipt's integration time"),
        checkpoint=m.checkpoint,
        inclusion_proof=tuple(bytes(p) for p in m.inclusion_proof),
        log_entry=bytes(m.log_entry),
    )


def encode_receipt(r: Receipt) -> bytes:
    return receipt_to_pb(r).SerializeToString(deterministic=True)


def decode_receipt(data: bytes) -> Receipt:
    """Receipt bytes -> Receipt; raises ClaimError when malformed."""
    return receipt_from_pb(_parse(pb.Receipt, data, "receipt"))


# ---------------------------------------------------------------- registry


def device_to_pb(d: Device) -> pb.Device:
    return pb.Device(
        device_id=d.device_id,
        public_key=d.public_key,
        enrolled_at=ts_to_pb(d.enrolled_at),
        last_sequence=d.last_sequence,
        revoked=d.revoked,
        revoked_at=ts_to_pb(d.revoked_at),
        revocation_reason=d.revocation_reason,
        label=d.label,
    )


def device_from_pb(m: pb.Device) -> Device:
    return Device(
        device_id=bytes(m.device_id),
        public_key=bytes(m.public_key),
        enrolled_at=ts_from_pb(m.enrolled_at),
        last_sequence=m.last_sequence,
        revoked_at=ts_from_pb(m.revoked_at) if m.revoked else None,
        revocation_reason=m.revocation_reason,
        label=m.label,
    )


# ---------------------------------------------------------------- reports


def report_to_pb(r: VerificationReport) -> pb.VerificationReport:
    """Domain report -> wire report (the detector dict maps onto DetectorResult)."""
    return pb.VerificationReport(**report_fields(r))


#: The verification time `report_fields` converted last and its Timestamp: a Lookup's
#: reports share one time (the message being built copies the Timestamp in).
_last_verified_at: tuple[datetime | None, Timestamp | None] = (None, None)


def report_fields(r: VerificationReport) -> dict[str, Any]:
    """The fields of ``r``'s wire VerificationReport, by name, its evidence as a dict: what
    a message being built takes (a Lookup's result) without building the report and its
    evidence first and copying them in (about half the cost)."""
    global _last_verified_at
    when, verified_at = _last_verified_at  # one read: Lookup threads share it
    if when != r.verified_at or when is None:
        verified_at = ts_to_pb(r.verified_at)
        _last_verified_at = (r.verified_at, verified_at)
    ev = r.evidence
    file = ev.file
    evidence: dict[str, Any] = {
        "file_sha256": file.sha256,
        "media_type": file.media_type,
        "file_soft_bindings": [soft_fields(h) for h in file.soft_bindings],
        "pdq_distance": -1 if ev.pdq_distance is None else ev.pdq_distance,
        "pdq_threshold": ev.pdq_threshold,
    }
    # the fields most reports leave at their defaults are given only when set (the same
    # message: proto3 fields without presence; each name given costs the message's
    # constructor about 0.1 us)
    if file.size:
        evidence["file_size"] = file.size
    if ev.sidecar_present:
        evidence["sidecar_present"] = True
    if ev.hash_match:
        evidence["hash_match"] = True
    if file.content_sha256:
        evidence["file_content_sha256"] = file.content_sha256
    if ev.damaged_ranges:
        evidence["damaged_ranges"] = [
            {"first_byte": a, "last_byte": b} for a, b in ev.damaged_ranges
        ]
    if ev.time_flags:
        evidence["time_flags"] = [{"code": f.code, "detail": f.detail} for f in ev.time_flags]
    if ev.pdq_transform:
        evidence["pdq_transform"] = ev.pdq_transform
    if ev.claim_embedded:
        evidence["claim_embedded"] = True
    if ev.near_search_cut:
        evidence["near_search_cut"] = True
        evidence["near_search_seconds"] = ev.near_search_seconds
    if ev.video_match is not None:
        evidence["video_match"] = video_match_to_pb(ev.video_match)
    if ev.claim is not None:
        evidence["claim"] = claim_evidence_to_pb(ev.claim)
    if ev.other_claims:
        evidence["other_claims"] = [claim_evidence_to_pb(c) for c in ev.other_claims]
    out = {
        "status": pb.Verdict.Value(r.status.value),
        "reasons": [*r.reasons, *file.notes],
        "evidence": evidence,
        "verified_at": verified_at,
    }
    if r.detector is not None:
        out["detector"] = detector_to_pb(r.detector)
    if r.c2pa is not None:
        out["c2pa"] = c2pa_to_pb(r.c2pa)
    return out


def claim_evidence_to_pb(c: ClaimEvidence) -> pb.ClaimEvidence:
    """Domain claim evidence -> wire message (a report's ``claim`` or one of its
    ``other_claims``)."""
    return pb.ClaimEvidence(
        signed_claim=signed_to_pb(c.signed_claim),
        receipt=receipt_to_pb(c.receipt) if c.receipt else None,
        device=device_to_pb(c.device) if c.device else None,
        signature_valid=c.signature_valid,
        in_log=c.in_log,
        chain_linked=c.chain_linked,
        receipt_verified=c.receipt_verified,
    )


def claim_evidence_from_pb(c: pb.ClaimEvidence) -> ClaimEvidence:
    """Wire claim evidence -> domain; raises ClaimError when its claim does not decode."""
    signed = signed_from_pb(c.signed_claim)
    return ClaimEvidence(
        signed_claim=signed,
        claim=decode_claim(signed.claim_bytes),
        device=device_from_pb(c.device) if c.HasField("device") else None,
        receipt=receipt_from_pb(c.receipt) if c.HasField("receipt") else None,
        signature_valid=c.signature_valid,
        in_log=c.in_log,
        chain_linked=c.chain_linked,
        receipt_verified=c.receipt_verified,
    )


_VIDEO_OPTIONAL = ("offset_seconds", "original_start_s", "original_end_s", "median_distance")
_VIDEO_PB_NAME = {
    "offset_seconds": "offset_seconds",
    "original_start_s": "original_start_seconds",
    "original_end_s": "original_end_seconds",
    "median_distance": "median_distance",
}
_VIDEO_PLAIN = (
    "matched",
    "coverage",
    "window_frames",
    "aligned_frames",
    "matched_share_query",
    "matched_share_original",
    "query_frames",
    "original_frames",
    "query_matched_frames",
    "original_matched_frames",
    "threshold",
    "min_quality",
)


def video_match_to_pb(m: VideoMatch) -> pb.VideoMatch:
    msg = pb.VideoMatch(**{k: getattr(m, k) for k in _VIDEO_PLAIN})
    for k in _VIDEO_OPTIONAL:
        if getattr(m, k) is not None:
            setattr(msg, _VIDEO_PB_NAME[k], getattr(m, k))
    return msg


def video_match_from_pb(msg: pb.VideoMatch) -> VideoMatch:
    opt: dict[str, Any] = {
        k: getattr(msg, _VIDEO_PB_NAME[k]) if msg.HasField(_VIDEO_PB_NAME[k]) else None
        for k in _VIDEO_OPTIONAL
    }
    return VideoMatch(**{k: getattr(msg, k) for k in _VIDEO_PLAIN}, **opt)


def c2pa_to_pb(d: dict[str, Any]) -> pb.C2paResult:
    """A C2PA block (`C2paResult.to_dict()` shape) -> wire message."""
    assertion = d.get("provenance_assertion")
    return pb.C2paResult(
        present=bool(d.get("present")),
        validation_state=d.get("validation_state") or "",
        validation_codes=list(d.get("validation_codes") or ()),
        signer=d.get("signer") or "",
        signer_org=d.get("signer_org") or "",
        signing_alg=d.get("signing_alg") or "",
        signed_at=d.get("signed_at") or "",
        claim_generator=d.get("claim_generator") or "",
        actions=[
            pb.C2paAction(
                action=a.get("action") or "",
                digital_source_type=a.get("digital_source_type") or "",
                software_agent=a.get("software_agent") or "",
            )
            for a in d.get("actions") or ()
        ],
        ingredients=[
            pb.C2paIngredient(
                title=i.get("title") or "",
                relationship=i.get("relationship") or "",
                media_type=i.get("media_type") or "",
            )
            for i in d.get("ingredients") or ()
        ],
        trusted_anchor=bool(d.get("trusted_anchor")),
        provenance_assertion_json=json.dumps(assertion, sort_keys=True) if assertion else "",
        error_kind=d.get("error_kind") or "",
        error=d.get("error") or d.get("content_hash_error") or "",
        signing_time_json=json.dumps(
            d.get("signing_time") or {"error": d["signing_time_error"]}, sort_keys=True
        )
        if d.get("signing_time") or d.get("signing_time_error")
        else "",
    )


def c2pa_from_pb(m: pb.C2paResult) -> dict[str, Any]:
    """Wire message -> the `c2pa` object of ``prov verify --json`` (absent strings are null).
    Raises ValueError when its JSON text fields do not parse (`loads_text`: a key named
    twice in an object included)."""
    return {
        "present": m.present,
        "validation_state": m.validation_state or None,
        "validation_codes": list(m.validation_codes),
        "signer": m.signer or None,
        "signer_org": m.signer_org or None,
        "signing_alg": m.signing_alg or None,
        "signed_at": m.signed_at or None,
        "claim_generator": m.claim_generator or None,
        "actions": [
            {
                "action": a.action,
                "digital_source_type": a.digital_source_type or None,
                "software_agent": a.software_agent or None,
            }
            for a in m.actions
        ],
        "ingredients": [
            {
                "title": i.title or None,
                "relationship": i.relationship or None,
                "media_type": i.media_type or None,
            }
            for i in m.ingredients
        ],
        "trusted_anchor": m.trusted_anchor,
        "provenance_assertion": loads_text(m.provenance_assertion_json)
        if m.provenance_assertion_json
        else None,
        "error_kind": m.error_kind or None,
        "error": m.error or None,
        **_signing_time_from_pb(m.signing_time_json),
    }


def _signing_time_from_pb(text: str) -> dict[str, Any]:
    """``signing_time`` and ``signing_time_error`` of the C2PA block from their wire JSON."""
    doc = loads_text(text) if text else None
    if isinstance(doc, dict) and set(doc) == {"error"}:
        return {"signing_time": None, "signing_time_error": doc["error"]}
    return {"signing_time": doc if isinstance(doc, dict) else None, "signing_time_error": None}


def _timeline_to_pb(d: dict[str, Any]) -> list[pb.DetectorFrame]:
    return [
        pb.DetectorFrame(
            timestamp_seconds=float(f["timestamp_seconds"]),
            score=float(f.get("score") or 0.0),
            scored=f.get("score") is not None,
        )
        for f in d.get("timeline", ())
    ]


def _timeline_from_pb(m: pb.DetectorResult) -> dict[str, Any]:
    if not m.timeline:
        return {}
    return {
        "timeline": [
            {
                "timestamp_seconds": f.timestamp_seconds,
                "score": round(f.score, 6) if f.scored else None,
            }
            for f in m.timeline
        ]
    }


def detector_to_pb(d: dict[str, Any]) -> pb.DetectorResult:
    """A detector block (DetectorReport.to_dict() shape, or {"available": False, "note": ...});
    video blocks add a ``timeline`` of {"timestamp_seconds", "score" (None: not scored)}."""
    if not d.get("available", True):
        return pb.DetectorResult(
            available=False, note=str(d.get("note", "")), timeline=_timeline_to_pb(d)
        )
    return pb.DetectorResult(
        timeline=_timeline_to_pb(d),
        available=True,
        note=str(d.get("advisory", d.get("note", ""))),
        score=float(d["score"]),
        band_low=float(d["band_low"]),
        band_high=float(d["band_high"]),
        band=str(d["band"]),
        model_id=str(d["model_id"]),
        model_version=str(d["model_version"]),
        threshold_low=float(d.get("threshold_low", 0.0)),
        threshold_high=float(d.get("threshold_high", 0.0)),
        threshold_high_noise_aware=bool(d.get("threshold_high_noise_aware", False)),
        crops=[
            pb.DetectorCrop(
                x=int(c["x"]),
                y=int(c["y"]),
                width=int(c["width"]),
                height=int(c["height"]),
                score=float(c["score"]),
                timestamp_seconds=float(c.get("timestamp_seconds", 0.0)),
            )
            for c in d.get("crops", ())
        ],
    )


def detector_from_pb(m: pb.DetectorResult) -> dict[str, Any]:
    if not m.available:
        return {"available": False, "note": m.note, **_timeline_from_pb(m)}
    return {
        **_timeline_from_pb(m),
        "available": True,
        "advisory": m.note,
        "score": round(m.score, 6),
        "band_low": round(m.band_low, 6),
        "band_high": round(m.band_high, 6),
        "band": m.band,
        "model_id": m.model_id,
        "model_version": m.model_version,
        "crops": [
            {
                "x": c.x,
                "y": c.y,
                "width": c.width,
                "height": c.height,
                "score": round(c.score, 6),
                **({"timestamp_seconds": c.timestamp_seconds} if c.timestamp_seconds else {}),
            }
            for c in m.crops
        ],
        # Servers older than the threshold fields send 0 for both: leave them out.
        **(
            {
                "threshold_low": round(m.threshold_low, 6),
                "threshold_high": round(m.threshold_high, 6),
                "threshold_high_noise_aware": m.threshold_high_noise_aware,
            }
            if m.threshold_high > 0
            else {}
        ),
    }


#: The verdicts a report may carry, by wire value (not VERDICT_UNSPECIFIED, no verdict).
_VERDICTS = {v: Verdict(k) for k, v in pb.Verdict.items() if v != pb.VERDICT_UNSPECIFIED}


def verdict_from_pb(status: int, server: str = "the server") -> Verdict:
    """The verdict of a wire report's ``status``. Raises TransportError (INTERNAL: the
    answer of ``server``, refused) for none (0: an empty report, as a stranger's gRPC
    service or a proxy may send) or one this client does not know (a newer server's)."""
    if status in _VERDICTS:
        return _VERDICTS[status]
    if status == 0:
        said = "no verdict: is it a provenance server?"
    else:
        said = (
            f"verdict {status}, which this client does not know: a newer server's verdict"
            " (update prov to read it), or no provenance server"
        )
    # from_grpc: no sentence of the server's; ``server`` names its address, the operator's
    raise TransportError(f"{server} answered a report with {said}", "INTERNAL", from_grpc=True)


def report_from_pb(m: pb.VerificationReport, server: str = "the server") -> VerificationReport:
    """Wire report -> domain report (used by clients to render text and JSON). Raises
    TransportError for a report without a verdict this client knows (`verdict_from_pb`,
    naming ``server``)."""
    e = m.evidence
    facts = FileFacts(
        sha256=bytes(e.file_sha256),
        size=e.file_size,
        media_type=e.media_type,
        soft_bindings=softs_from_pb(e.file_soft_bindings),
        content_sha256=bytes(e.file_content_sha256),
    )
    claim_ev = claim_evidence_from_pb(e.claim) if e.HasField("claim") else None
    return VerificationReport(
        status=verdict_from_pb(m.status, server),
        reasons=tuple(m.reasons),
        evidence=Evidence(
            file=facts,
            claim=claim_ev,
            sidecar_present=e.sidecar_present,
            hash_match=e.hash_match,
            pdq_distance=None if e.pdq_distance < 0 else e.pdq_distance,
            pdq_threshold=e.pdq_threshold,
            video_match=video_match_from_pb(e.video_match) if e.HasField("video_match") else None,
            damaged_ranges=tuple((r.first_byte, r.last_byte) for r in e.damaged_ranges),
            time_flags=tuple(TimeFlag(f.code, f.detail) for f in e.time_flags),
            pdq_transform=e.pdq_transform,
            other_claims=tuple(claim_evidence_from_pb(c) for c in e.other_claims),
            claim_embedded=e.claim_embedded,
            near_search_cut=e.near_search_cut,
            near_search_seconds=e.near_search_seconds,
        ),
        verified_at=ts_from_pb(m.verified_at),
        detector=detector_from_pb(m.detector) if m.HasField("detector") else None,
        c2pa=c2pa_from_pb(m.c2pa) if m.HasField("c2pa") else None,
    )
