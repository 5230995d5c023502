"""Domain objects of the signed-capture path: claims, signed claims, receipts, devices.

These are plain typed dataclasses; their protobuf encoding lives in `provenance.wire.convert`
alone. A claim is serialized once on the device and the exact bytes travel in a
`SignedClaim`; verification never re-serializes a decoded claim.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from provenance.core.binding import PerceptualHash

CLAIM_VERSION = 1
#: Largest metadata map a claim may carry, in bytes of keys plus values (UTF-8).
MAX_METADATA_BYTES = 4096
#: Largest number of perceptual hashes (sampled video frames) of one file in a query or
#: an inspection: a video of up to 68 minutes at 1 Hz.
MAX_SOFT_BINDINGS = 4096
#: Largest number of soft bindings (sampled video frames) in one claim: 1,000 PDQ hashes
#: (about 52 bytes each) keep its log entry within `MAX_LOG_ENTRY_BYTES`; a device samples
#: a longer video more sparsely (`clients.device`).
MAX_CLAIM_SOFT_BINDINGS = 1000
#: Longest video a claim describes, in seconds (one day): its duration and the time of
#: every sampled frame are at most this. `prov sign` takes at most `MAX_SOFT_BINDINGS`
#: samples at 1 Hz (68 minutes of video without gaps); a video whose frames span longer
#: (days between them, or a last frame that lasts days) it refuses, and the log refuses a
#: claim that states more (`provenance.core.claim_bounds`).
MAX_VIDEO_SECONDS = 86_400
#: Largest log entry (a signed claim or key event with its integration time), in bytes:
#: C2SP tlog-tiles entry bundles prefix each entry with a big-endian uint16 length, so a
#: larger one could never be published as tiles.
MAX_LOG_ENTRY_BYTES = 0xFFFF
#: Bytes a log entry adds to its signed claim's fields (payload type, claim, key id,
#: signature): protobuf tags and lengths, and the integration time (an upper bound).
LOG_ENTRY_FRAMING_BYTES = 40
#: Most bytes of a claim a caller offers (a submission, a sidecar sent with a file) that
#: are parsed at all: a larger one is refused from its length before protobuf reads it (a
#: map of metadata entries parses in time that grows faster than its size here: 230 KB
#: in 14 ms, 950 KB in 155 ms, 7.7 MB in 3-11 s, then each entry became a Python
#: object). Above `MAX_LOG_ENTRY_BYTES`, so that a long video's claim from an older
#: `prov sign` (4,096 frames, 213 KB, logged before that bound) still reads.
MAX_PARSED_CLAIM_BYTES = 256 * 1024
#: Largest value of an integer claim field that the log stores (sequence, sizes, counts):
#: a signed 64-bit integer, what SQLite INTEGER and PostgreSQL BIGINT hold.
MAX_STORED_INT = 2**63 - 1


@dataclass(frozen=True)
class HardBinding:
    """Cryptographic binding to exact bytes.

    sha256: 32-byte SHA-256 of the whole file. For chunked media (video) also the
    chunk size in bytes, the number of chunks and the RFC 9162 Merkle root over the
    chunks' leaf hashes; zero/empty for images.
    """

    sha256: bytes
    chunk_size: int = 0
    chunk_count: int = 0
    chunk_merkle_root: bytes = b""


@dataclass(frozen=True)
class Claim:
    """What a device asserts about one capture (DESIGN.md, "The signed claim").

    Times are timezone-aware UTC datetimes; sizes in bytes; width/height in pixels;
    duration in seconds; orientation the image file's EXIF orientation tag (1..8, 0 when
    it states none). Soft bindings are of the pixels as displayed (orientation applied).
    """

    device_id: bytes
    sequence: int
    captured_at: datetime
    media_type: str
    size_bytes: int
    hard_binding: HardBinding
    soft_bindings: tuple[PerceptualHash, ...] = ()
    width: int = 0
    height: int = 0
    duration_seconds: float = 0.0
    prev_claim_hash: bytes = b""
    metadata: Mapping[str, str] = field(default_factory=dict)
    frame_sample_rate: float = 0.0
    version: int = CLAIM_VERSION
    orientation: int = 0


@dataclass(frozen=True)
class SignedClaim:
    """Claim bytes with an Ed25519 signature over PAE(payload_type, claim_bytes).

    claim_bytes are the exact serialized claim the device signed; key_id is the
    SHA-256 of the signer's raw public key; signature is 64 bytes.
    """

    payload_type: str
    claim_bytes: bytes
    key_id: bytes
    signature: bytes

    @property
    def claim_hash(self) -> bytes:
        """SHA-256 of the claim bytes: what the next claim's prev_claim_hash names."""
        return hashlib.sha256(self.claim_bytes).digest()


@dataclass(frozen=True)
class Receipt:
    """The log's answer to a submission, verifiable offline with the log's key.

    leaf_index: 0-based position in the log; integrated_at: the server's time;
    checkpoint: a C2SP signed note whose tree contains the leaf; inclusion_proof:
    RFC 9162 audit path (32-byte hashes); log_entry: the leaf data bytes.
    """

    leaf_index: int
    integrated_at: datetime
    checkpoint: str
    inclusion_proof: tuple[bytes, ...]
    log_entry: bytes


@dataclass(frozen=True)
class Device:
    """An enrolled device key and its state in the registry."""

    device_id: bytes
    public_key: bytes
    enrolled_at: datetime
    last_sequence: int = 0
    last_claim_hash: bytes = b""
    revoked_at: datetime | None = None
    revocation_reason: str = ""
    label: str = ""

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class TimeFlag:
    """One implausible time in a claim (`provenance.core.timecheck`): ``code`` names the rule
    (e.g. "captured_after_server_time") and ``detail`` is a sentence a person can read."""

    code: str
    detail: str


class Verdict(StrEnum):
    """The five verdicts of DESIGN.md; the value is the name used in JSON and on the wire."""

    SIGNED_ORIGINAL = "SIGNED_ORIGINAL"
    DERIVED = "DERIVED"
    TAMPERED = "TAMPERED"
    REVOKED_KEY = "REVOKED_KEY"
    UNSIGNED = "UNSIGNED"
