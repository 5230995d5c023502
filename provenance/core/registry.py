"""Device registry rules: enrollment tokens, enrollment checks, submission checks.

Pure functions over values; the store persists and the service orchestrates.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from datetime import datetime, timedelta

from provenance.core.claim_bounds import (
    check_hard_binding,
    check_no_video_fields,
    check_pixels,
    check_required_fields,
    check_video_numbers,
)
from provenance.core.claims import (
    CLAIM_VERSION,
    LOG_ENTRY_FRAMING_BYTES,
    MAX_CLAIM_SOFT_BINDINGS,
    MAX_LOG_ENTRY_BYTES,
    MAX_METADATA_BYTES,
    MAX_PARSED_CLAIM_BYTES,
    MAX_STORED_INT,
    Claim,
    Device,
    SignedClaim,
)
from provenance.core.envelope import (
    PAYLOAD_TYPE_CLAIM,
    PAYLOAD_TYPE_ENROLL,
    PAYLOAD_TYPE_ENROLL_CERTIFICATE,
    sign_payload,
    verify_payload,
)
from provenance.core.errors import (
    AlreadyEnrolledError,
    ClaimError,
    EnrollmentError,
    RevokedKeyError,
    SequenceError,
    SignatureError,
)
from provenance.core.keys import DeviceKey, check_public_key, key_id
from provenance.core.timetext import utc_iso, utc_text

#: Enrollment tokens carry 256 bits of randomness.
TOKEN_BYTES = 32
#: Longest enrollment token an Enroll call may carry (`check_enrollment`): `new_token`
#: makes them 43 characters; a longer one is refused before its proof is checked.
MAX_TOKEN_CHARS = 256
#: The length of a token `new_token` makes: TOKEN_BYTES in unpadded base64url.
_TOKEN_CHARS = -(-TOKEN_BYTES * 4 // 3)


def new_token() -> str:
    """A fresh one-time enrollment token (URL-safe text)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What the store keeps of a token: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode("utf-8")).digest()


#: The most characters of an enrollment token's label, the name its device is kept under
#: in the registry and shown beside in reports, `prov` and the web pages ("desk camera 3").
MAX_LABEL_CHARS = 200
#: The longest an enrollment token stays valid (``ttl_seconds`` of CreateEnrollmentToken,
#: `prov admin enroll-token --ttl`): a one-time credential meant for a device about to
#: enroll; the request's uint32 allowed 136 years. A device enrolled later gets a new token
#: (or enrolls by certificate, which needs none).
MAX_TOKEN_TTL = timedelta(days=30)
#: Unicode general categories refused in a label (Unicode 15, §4.5), each with the words
#: a refusal names it by: control (Cc: tab, newline, escape), format (Cf: bidirectional
#: overrides, zero-width spaces), surrogate, private use, unassigned, line and paragraph
#: separators.
_NOT_IN_LABELS = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
#: ZERO WIDTH NON-JOINER and JOINER (category Cf) are kept between two other characters:
#: Persian and Indic words and emoji sequences are written with them (Unicode 15, §23.2),
#: they reorder nothing, and `provenance.terminal.shown` writes them as they are.
_JOINERS = frozenset("\u200c\u200d")
#: A valid emoji tag sequence (UTS #51 §2.3.3 ED-14a, and its Annex C: the tags of a
#: WAVING BLACK FLAG spell a CLDR unicode_subdivision_id): WAVING BLACK FLAG (U+1F3F4,
#: the base of every such sequence Unicode recommends: the flags of England, Scotland
#: and Wales; Scotland's is U+1F3F4, the tags "gbsct", U+E007F), then a subdivision code
#: in tag characters (category Cf: two lower-case letters or three digits, then one to
#: four lower-case letters or digits) and CANCEL TAG U+E007F. Its tags are kept; a tag
#: character anywhere else is refused as any format character, and so are the other
#: well-formed tag runs (ED-14a takes any of U+E0020-U+E007E, so a label could carry
#: invisible ASCII text after a flag: "ASCII smuggling"). Group 1: the tags and the
#: CANCEL TAG.
_TAG_SEQUENCE = re.compile(
    "\U0001f3f4((?:[\U000e0061-\U000e007a]{2}|[\U000e0030-\U000e0039]{3})"
    "[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,4}\U000e007f)"
)
#: A claim's media type: RFC 6838 section 4.2's type and subtype names, no parameters
#: (what `prov sign` writes: image/jpeg, video/mp4, application/octet-stream).
MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
#: The most characters of a claim's or a Lookup query's ``media_type``: RFC 6838 section
#: 4.2 names a type and a subtype of at most 127 characters each (`check_claim_shape`,
#: `provenance.server.rpc_input.check_query_media_type`; the web API's OpenAPI document
#: states it).
MAX_MEDIA_TYPE_CHARS = 255


def check_token_ttl(ttl: timedelta) -> None:
    """Raises ClaimError unless ``ttl`` (an enrollment token's life) is more than zero and
    at most `MAX_TOKEN_TTL`."""
    most = int(MAX_TOKEN_TTL.total_seconds())
    if not timedelta(0) < ttl <= MAX_TOKEN_TTL:
        raise ClaimError(
            f"an enrollment token's time to live of {int(ttl.total_seconds()):,} s is out of"
            f" range: at most {most:,} s ({MAX_TOKEN_TTL.days} days), more than 0 (0 in the"
            " request: the server's default, 24 h). Make a new token for a device enrolled"
            " later"
        )


def check_label(label: str) -> None:
    """Raises ClaimError unless ``label`` is at most `MAX_LABEL_CHARS` characters of valid
    UTF-8 text with no control, format, private-use or unassigned character, nor a line
    or paragraph separator (Unicode categories `_NOT_IN_LABELS`; a zero-width joiner or
    non-joiner between two characters is kept, `_JOINERS`, and so are the tags of a
    valid emoji tag sequence such as a flag of Scotland, `_TAG_SEQUENCE`), so that
    a name shown beside a device can neither fill a report nor rewrite the terminal
    showing it (an escape sequence, a bidirectional override). Before, a label of 100,000 characters
    was kept as given."""
    try:
        label.encode()
    except UnicodeEncodeError as e:  # a lone surrogate: a byte a terminal could not decode
        raise ClaimError(
            f"the enrollment token's label is not valid UTF-8 text (character {e.start + 1}"
            " is an undecodable byte): type it in a UTF-8 terminal"
        ) from e
    if len(label) > MAX_LABEL_CHARS:
        raise ClaimError(
            f"the enrollment token's label is {len(label):,} characters; at most"
            f" {MAX_LABEL_CHARS} are kept (a short name for the device, such as"
            " 'desk camera 3')"
        )
    if (bad := unprintable(label)) is not None:
        raise ClaimError(
            f"the enrollment token's label holds {bad}: give a name of printable characters"
        )


def unprintable(text: str) -> str | None:
    """The first character of ``text`` that a label may not hold (`check_label`'s rule:
    Unicode categories `_NOT_IN_LABELS`, joiners between two characters and emoji tag
    sequences kept), in words: "a control character (U+001B) at character 3"; None
    when there is none."""
    tags = {i for m in _TAG_SEQUENCE.finditer(text) for i in range(m.start(1), m.end(1))}
    for i, ch in enumerate(text):
        if i in tags or (ch in _JOINERS and 0 < i < len(text) - 1):
            continue
        kind = _NOT_IN_LABELS.get(unicodedata.category(ch))
        if kind is not None:
            return f"{kind} (U+{ord(ch):04X}) at character {i + 1}"
    return None


def check_enrollment(public_key: bytes, token: str, proof_of_possession: bytes) -> bytes:
    """Validate an enrollment request; return the device id (key id).

    Raises KeyMaterialError for a malformed, non-canonical or small-order key, and
    EnrollmentError when the token is longer than `MAX_TOKEN_CHARS` (before its proof
    is checked: any key signs any string, and an 8 MB token cost 120 ms of server CPU
    where a real one costs 2) or the proof of possession (a signature over
    PAE(PAYLOAD_TYPE_ENROLL, token)) does not verify.
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise EnrollmentError(
            f"this enrollment token is {len(token):,} characters; a token is at most"
            f" {MAX_TOKEN_CHARS} (`prov admin enroll-token` prints one of {_TOKEN_CHARS}):"
            " give the token as it was printed"
        )
    check_public_key(public_key)
    try:
        verify_payload(public_key, PAYLOAD_TYPE_ENROLL, token.encode("utf-8"), proof_of_possession)
    except SignatureError as e:
        raise EnrollmentError(
            "proof of possession does not verify: the request was not signed by this key"
        ) from e
    return key_id(public_key)


#: How far the time a device signed a certificate enrollment may lie from the server's
#: clock, either way: the request is refused outside it (a device clock off by more
#: must be set right first).
ENROLL_SKEW = timedelta(minutes=5)


def certificate_enrollment_statement(log_key: str, signed_at: datetime) -> bytes:
    """What a device signs to enroll with a certificate (under
    PAYLOAD_TYPE_ENROLL_CERTIFICATE): the note verifier key of the log it enrolls in
    (``<origin>+<key hash>+<key>``, `GetLogKey`) and the time, in whole seconds, each on
    a line: ``"<log_key>\n<YYYY-MM-DDTHH:MM:SSZ>\n"``. Bound to the log, a recorded
    request is refused by every server of another log, even one trusting the same
    enrollment authority; bound to the time, it is refused after `ENROLL_SKEW`.
    ``signed_at``: timezone-aware UTC."""
    return f"{log_key}\n{utc_iso(signed_at, micro=False)}\n".encode()


def certificate_enrollment_proof(key: DeviceKey, log_key: str, signed_at: datetime) -> bytes:
    """The 64-byte proof of possession of a certificate enrollment: ``key``'s signature
    over `certificate_enrollment_statement` (log_key, signed_at)."""
    return sign_payload(
        key,
        PAYLOAD_TYPE_ENROLL_CERTIFICATE,
        certificate_enrollment_statement(log_key, signed_at),
    )


def check_certificate_enrollment(
    public_key: bytes,
    log_key: str,
    signed_at: datetime | None,
    proof_of_possession: bytes,
    our_log_key: str,
    now: datetime,
) -> bytes:
    """Validate the proof of a certificate enrollment made for log ``log_key`` at
    ``signed_at``, received by the server of log ``our_log_key`` at ``now`` (UTC);
    return the device id (key id).

    Raises KeyMaterialError for a malformed, non-canonical or small-order key, and
    EnrollmentError when the request names no log or time (a client older than this
    rule), names another log, was signed more than `ENROLL_SKEW` from ``now``, or its
    proof does not verify over `certificate_enrollment_statement`."""
    check_public_key(public_key)
    if not log_key or signed_at is None:
        raise EnrollmentError(
            "this certificate enrollment names no log or no time: its proof of possession"
            " must sign the log's key and the time (a client older than this server:"
            " upgrade it)"
        )
    if log_key != our_log_key:
        named = log_key if len(log_key) <= 200 and log_key.isprintable() else "unreadable"
        raise EnrollmentError(
            f"this enrollment request was made for another log ({named}), not this"
            f" server's ({our_log_key}): a request made for one server cannot be replayed"
            " to another; enroll with this one"
        )
    if abs(now - signed_at) > ENROLL_SKEW:
        raise EnrollmentError(
            f"this enrollment request was signed at {utc_text(signed_at)}, more than"
            f" {ENROLL_SKEW.total_seconds() / 60:.0f} minutes from the server's time"
            f" ({utc_text(now)}): make a new one, with the device's clock set right"
        )
    try:
        verify_payload(
            public_key,
            PAYLOAD_TYPE_ENROLL_CERTIFICATE,
            certificate_enrollment_statement(log_key, signed_at),
            proof_of_possession,
        )
    except SignatureError as e:
        raise EnrollmentError(
            "proof of possession does not verify: the request was not signed by this key"
            " for this log and time"
        ) from e
    return key_id(public_key)


def answer_enrollment_again(
    enrolled: AlreadyEnrolledError, certificate_pem: str, by_token: bool = False
) -> Device:
    """The answer to an enrollment (its proof of possession already checked) of a key
    the registry holds, ``enrolled``: the device as it stands, when the request is the
    one that enrolled it again (a replay, or the device's retry after a lost answer), so
    the call is idempotent and nothing is logged or stored again. A certificate
    enrollment is that when the key was enrolled with this same chain
    ``certificate_pem`` (from the server's authority); a token enrollment (``by_token``)
    when its one-time token was spent enrolling this same key
    (``enrolled.token_spent_on_it``): the caller holds the token and the key, so it
    learns nothing it did not hold or could not read (the registry row, the chain).

    Raises ``enrolled`` itself when the key was enrolled otherwise (no chain or another
    one; another token, or none), and EnrollmentError, naming the revocation, when the
    key was revoked since: a revoked key never enrolls again."""
    if by_token:
        if not enrolled.token_spent_on_it:
            raise enrolled
    elif not enrolled.certificate_pem or enrolled.certificate_pem != certificate_pem:
        raise enrolled
    device = enrolled.device
    if device.revoked_at is not None:
        raise EnrollmentError(_revoked_enrolls_not(device, device.revoked_at))
    return device


def _revoked_enrolls_not(device: Device, revoked_at: datetime) -> str:
    return (
        f"device {device.device_id.hex()} was enrolled at {utc_text(device.enrolled_at)}"
        f" and its key revoked at {utc_text(revoked_at)}: a revoked key cannot enroll"
        " again; enroll a new key"
    )


def enrolled_already(device: Device, certificate_pem: str) -> AlreadyEnrolledError:
    """What a store raises enrolling a key its registry holds as ``device`` (with the
    chain ``certificate_pem``, "" when none): "device ID is already enrolled", or, when
    its key was revoked, the words `answer_enrollment_again` uses, naming the revocation
    (before, a new token's enrollment of a revoked key was told only that it
    "is already enrolled", as if the key still served)."""
    said = (
        f"device {device.device_id.hex()} is already enrolled"
        if device.revoked_at is None
        else _revoked_enrolls_not(device, device.revoked_at)
    )
    return AlreadyEnrolledError(said, device, certificate_pem)


def check_claim_shape(signed: SignedClaim, claim: Claim) -> None:
    """Structural limits on a submitted claim; raises ClaimError.

    The fields DESIGN.md's data model gives a shape: prev_claim_hash a 32-byte SHA-256
    (or empty), orientation an EXIF orientation (1..8, 0 for none), media_type an RFC 6838
    type/subtype of at most `MAX_MEDIA_TYPE_CHARS` characters; and the fields it lists for the media type must be there: a size, an
    image's width, height and PDQ hash, a video's duration and frame hashes
    (`claim_bounds.check_required_fields`; before, an image/jpeg claim stating none of
    them was logged and verified SIGNED_ORIGINAL); an image's claim states none of a
    video's (a duration, a frame sample rate, frame hashes, a chunked hard binding:
    `claim_bounds.check_no_video_fields`). Only new submissions are held to them.

    Its log entry must fit a C2SP tlog-tiles entry bundle (`MAX_LOG_ENTRY_BYTES`), or the
    log could never be exported as tiles past it.

    Every integer the log stores (sequence, size, chunk count) must fit a signed 64-bit
    integer (`MAX_STORED_INT`): a larger one is refused here, before the writer, so it
    can never fail a commit batch shared with other devices' claims.

    The hard binding must be one the verifier can match, the width and height within what
    the decoders accept, and the video's times (in order, within its duration) and sample
    rate within range (`provenance.core.claim_bounds`).
    """
    if signed.payload_type != PAYLOAD_TYPE_CLAIM:
        raise ClaimError(f"unexpected payload type {signed.payload_type!r}")
    if claim.version != CLAIM_VERSION:
        raise ClaimError(f"claim version {claim.version} is not supported (want {CLAIM_VERSION})")
    if claim.device_id != signed.key_id:
        raise ClaimError("the claim's device id differs from the signing key id")
    if len(claim.hard_binding.sha256) != 32:
        raise ClaimError("the claim's hard binding is not a 32-byte SHA-256")
    if claim.sequence < 1:
        raise ClaimError("claim sequence numbers start at 1")
    if len(claim.prev_claim_hash) not in (0, 32):
        raise ClaimError(
            f"the claim's prev_claim_hash is {len(claim.prev_claim_hash)} bytes; it names the"
            " device's previous claim by its 32-byte SHA-256 (empty when there is none)"
        )
    if not 0 <= claim.orientation <= 8:
        raise ClaimError(
            f"the claim's orientation is {claim.orientation}; an EXIF orientation is 1..8"
            " (0 when the image states none)"
        )
    if len(claim.media_type) > MAX_MEDIA_TYPE_CHARS:
        raise ClaimError(
            f"the claim's media type is {len(claim.media_type):,} characters; at most"
            f" {MAX_MEDIA_TYPE_CHARS} (RFC 6838: a type and a subtype of at most 127 each,"
            " such as image/jpeg)"
        )
    if not MEDIA_TYPE.fullmatch(claim.media_type):
        shown = ascii(claim.media_type[:80]) + ("..." if len(claim.media_type) > 80 else "")
        raise ClaimError(
            f"the claim's media type {shown} is not a media type (RFC 6838 type/subtype,"
            " such as image/jpeg, without parameters)"
        )
    for name, value in (
        ("sequence", claim.sequence),
        ("size_bytes", claim.size_bytes),
        ("hard_binding.chunk_count", claim.hard_binding.chunk_count),
    ):
        if value > MAX_STORED_INT:
            raise ClaimError(
                f"the claim's {name} is {value}; the log stores at most {MAX_STORED_INT} (2^63 - 1)"
            )
    # the count first: the frames' own checks go through each of them
    _check_soft_binding_count(len(claim.soft_bindings))
    check_hard_binding(claim)
    check_pixels(claim)
    check_video_numbers(claim)
    meta = sum(len(k.encode()) + len(v.encode()) for k, v in claim.metadata.items())
    if meta > MAX_METADATA_BYTES:
        raise ClaimError(
            f"the claim's metadata is {meta} bytes; the limit is {MAX_METADATA_BYTES}"
            " (keys and values in UTF-8)"
        )
    _check_entry_size(signed, len(claim.soft_bindings))
    # last: a claim out of every bound above is refused for that first
    check_required_fields(claim)
    check_no_video_fields(claim)


def check_claim_length(signed: SignedClaim) -> None:
    """Raises ClaimError, from the envelope's lengths alone, when the submitted claim is
    over `MAX_PARSED_CLAIM_BYTES`: it could never be one log entry, and is not parsed."""
    if len(signed.claim_bytes) > MAX_PARSED_CLAIM_BYTES:
        _check_entry_size(signed, None)


def check_claim_counts(signed: SignedClaim, soft_bindings: int, metadata_entries: int) -> None:
    """Raises ClaimError when a submitted claim has more soft bindings than
    `MAX_CLAIM_SOFT_BINDINGS`, more metadata entries than its bytes could hold (over
    `MAX_METADATA_BYTES` + 1: every key but one holds a byte at least), or bytes that
    could not make one log entry (`MAX_LOG_ENTRY_BYTES`). Read from the parsed message's
    counts and the envelope's lengths, before any field is converted: the shape of a
    submission is checked on the server's event loop, before its signature, and before
    6 December each of 600,000 metadata entries (7.7 MB) or 190,000 soft bindings was
    converted first, holding the loop 1.3-3.1 s a call (`check_claim_shape` checks the
    same counts again, in its own order)."""
    _check_soft_binding_count(soft_bindings)
    if metadata_entries > MAX_METADATA_BYTES + 1:
        raise ClaimError(
            f"the claim's metadata has {metadata_entries:,} entries; its keys and values"
            f" are at most {MAX_METADATA_BYTES} bytes in all (UTF-8), which no more than"
            f" {MAX_METADATA_BYTES + 1:,} distinct keys fit"
        )
    _check_entry_size(signed, soft_bindings)


def _check_soft_binding_count(count: int) -> None:
    if count > MAX_CLAIM_SOFT_BINDINGS:
        raise ClaimError(
            f"claim has {count} soft bindings; the limit is"
            f" {MAX_CLAIM_SOFT_BINDINGS} (a video of more than {MAX_CLAIM_SOFT_BINDINGS:,} s"
            " signed by an older prov sign: sign it again, the frames are now sampled more"
            " sparsely)"
        )


def _check_entry_size(signed: SignedClaim, soft_bindings: int | None) -> None:
    entry = (
        len(signed.payload_type.encode())
        + len(signed.claim_bytes)
        + len(signed.key_id)
        + len(signed.signature)
        + LOG_ENTRY_FRAMING_BYTES
    )
    if entry > MAX_LOG_ENTRY_BYTES:
        raise ClaimError(
            f"the claim would make a log entry of about {entry:,} bytes; the log holds entries"
            f" of at most {MAX_LOG_ENTRY_BYTES:,} (C2SP tlog-tiles entry bundles): fewer soft"
            " bindings"
            + (f" ({soft_bindings} here)" if soft_bindings is not None else "")
            + " or less metadata"
        )


def check_signature(signed: SignedClaim, device: Device) -> None:
    """Raises SignatureError unless ``signed`` verifies strictly under the device key."""
    check_claim_signature(signed, device.public_key)


def check_claim_signature(
    signed: SignedClaim, public_key: bytes, *, release_gil: bool = False
) -> None:
    """Raises SignatureError unless ``signed`` verifies strictly (`keys.verify_strict`)
    under ``public_key`` (raw 32 bytes), the key of device ``signed.key_id``.
    ``release_gil``: as `keys.verify_strict`."""
    try:
        verify_payload(
            public_key,
            signed.payload_type,
            signed.claim_bytes,
            signed.signature,
            release_gil=release_gil,
        )
    except SignatureError as e:
        raise SignatureError(
            f"the claim's signature does not verify under device {signed.key_id.hex()[:16]}…"
        ) from e


def check_not_revoked(device: Device, now: datetime) -> None:
    """Raises RevokedKeyError when the key's revocation is in force at ``now``."""
    if device.revoked_at is not None and now >= device.revoked_at:
        raise RevokedKeyError(
            f"device {device.device_id.hex()[:16]}… was revoked at"
            f" {utc_text(device.revoked_at)} ({device.revocation_reason});"
            " its claims are no longer accepted"
        )


def chain_link(claim: Claim, last_sequence: int, last_claim_hash: bytes) -> bool:
    """Check the per-device sequence and report whether the hash chain links.

    Raises SequenceError when ``claim.sequence`` does not advance past
    ``last_sequence``. Returns True when the claim directly follows the previous
    logged one (next sequence number and ``prev_claim_hash`` naming it); False when
    there is a gap (visible in evidence, but accepted).
    """
    if claim.sequence <= last_sequence:
        raise SequenceError(
            f"claim sequence {claim.sequence} does not advance past the device's last logged"
            f" sequence {last_sequence}"
        )
    return claim.sequence == last_sequence + 1 and claim.prev_claim_hash == last_claim_hash


def merged_revocation(device: Device, effective_at: datetime, reason: str) -> tuple[datetime, str]:
    """The (time, reason) a device's revocation holds after revoking it at ``effective_at``
    for ``reason``: revoking twice keeps the earlier time, and the reason stays the one
    given with that time, so the two never disagree (DESIGN.md, "Devices")."""
    if device.revoked_at is not None and device.revoked_at <= effective_at:
        return device.revoked_at, device.revocation_reason
    return effective_at, reason
