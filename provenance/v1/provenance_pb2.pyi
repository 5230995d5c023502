import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    SIGNED_ORIGINAL: _ClassVar[Verdict]
    DERIVED: _ClassVar[Verdict]
    TAMPERED: _ClassVar[Verdict]
    REVOKED_KEY: _ClassVar[Verdict]
    UNSIGNED: _ClassVar[Verdict]
VERDICT_UNSPECIFIED: Verdict
SIGNED_ORIGINAL: Verdict
DERIVED: Verdict
TAMPERED: Verdict
REVOKED_KEY: Verdict
UNSIGNED: Verdict

class HardBinding(_message.Message):
    __slots__ = ("sha256", "chunk_size", "chunk_count", "chunk_merkle_root")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_MERKLE_ROOT_FIELD_NUMBER: _ClassVar[int]
    sha256: bytes
    chunk_size: int
    chunk_count: int
    chunk_merkle_root: bytes
    def __init__(self, sha256: _Optional[bytes] = ..., chunk_size: _Optional[int] = ..., chunk_count: _Optional[int] = ..., chunk_merkle_root: _Optional[bytes] = ...) -> None: ...

class SoftBinding(_message.Message):
    __slots__ = ("algorithm", "hash", "quality", "timestamp_seconds")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    algorithm: str
    hash: bytes
    quality: int
    timestamp_seconds: float
    def __init__(self, algorithm: _Optional[str] = ..., hash: _Optional[bytes] = ..., quality: _Optional[int] = ..., timestamp_seconds: _Optional[float] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("version", "device_id", "sequence", "captured_at", "media_type", "size_bytes", "width", "height", "duration_seconds", "hard_binding", "soft_bindings", "prev_claim_hash", "metadata", "frame_sample_rate", "orientation")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HARD_BINDING_FIELD_NUMBER: _ClassVar[int]
    SOFT_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    PREV_CLAIM_HASH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    FRAME_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    ORIENTATION_FIELD_NUMBER: _ClassVar[int]
    version: int
    device_id: bytes
    sequence: int
    captured_at: _timestamp_pb2.Timestamp
    media_type: str
    size_bytes: int
    width: int
    height: int
    duration_seconds: float
    hard_binding: HardBinding
    soft_bindings: _containers.RepeatedCompositeFieldContainer[SoftBinding]
    prev_claim_hash: bytes
    metadata: _containers.ScalarMap[str, str]
    frame_sample_rate: float
    orientation: int
    def __init__(self, version: _Optional[int] = ..., device_id: _Optional[bytes] = ..., sequence: _Optional[int] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., media_type: _Optional[str] = ..., size_bytes: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., hard_binding: _Optional[_Union[HardBinding, _Mapping]] = ..., soft_bindings: _Optional[_Iterable[_Union[SoftBinding, _Mapping]]] = ..., prev_claim_hash: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., frame_sample_rate: _Optional[float] = ..., orientation: _Optional[int] = ...) -> None: ...

class SignedClaim(_message.Message):
    __slots__ = ("payload_type", "claim", "key_id", "signature")
    PAYLOAD_TYPE_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    payload_type: str
    claim: bytes
    key_id: bytes
    signature: bytes
    def __init__(self, payload_type: _Optional[str] = ..., claim: _Optional[bytes] = ..., key_id: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("signed_claim", "integrated_at", "key_event")
    SIGNED_CLAIM_FIELD_NUMBER: _ClassVar[int]
    INTEGRATED_AT_FIELD_NUMBER: _ClassVar[int]
    KEY_EVENT_FIELD_NUMBER: _ClassVar[int]
    signed_claim: SignedClaim
    integrated_at: _timestamp_pb2.Timestamp
    key_event: SignedKeyEvent
    def __init__(self, signed_claim: _Optional[_Union[SignedClaim, _Mapping]] = ..., integrated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., key_event: _Optional[_Union[SignedKeyEvent, _Mapping]] = ...) -> None: ...

class KeyEvent(_message.Message):
    __slots__ = ("kind", "device_id", "public_key", "effective_at", "reason", "authorised_by", "backfilled")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[KeyEvent.Kind]
        ENROLLMENT: _ClassVar[KeyEvent.Kind]
        REVOCATION: _ClassVar[KeyEvent.Kind]
    KIND_UNSPECIFIED: KeyEvent.Kind
    ENROLLMENT: KeyEvent.Kind
    REVOCATION: KeyEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUTHORISED_BY_FIELD_NUMBER: _ClassVar[int]
    BACKFILLED_FIELD_NUMBER: _ClassVar[int]
    kind: KeyEvent.Kind
    device_id: bytes
    public_key: bytes
    effective_at: _timestamp_pb2.Timestamp
    reason: str
    authorised_by: str
    backfilled: bool
    def __init__(self, kind: _Optional[_Union[KeyEvent.Kind, str]] = ..., device_id: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., authorised_by: _Optional[str] = ..., backfilled: _Optional[bool] = ...) -> None: ...

class SignedKeyEvent(_message.Message):
    __slots__ = ("event", "signer_public_key", "signature")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SIGNER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    event: bytes
    signer_public_key: bytes
    signature: bytes
    def __init__(self, event: _Optional[bytes] = ..., signer_public_key: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class Receipt(_message.Message):
    __slots__ = ("leaf_index", "integrated_at", "checkpoint", "inclusion_proof", "log_entry")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    INTEGRATED_AT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INCLUSION_PROOF_FIELD_NUMBER: _ClassVar[int]
    LOG_ENTRY_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    integrated_at: _timestamp_pb2.Timestamp
    checkpoint: str
    inclusion_proof: _containers.RepeatedScalarFieldContainer[bytes]
    log_entry: bytes
    def __init__(self, leaf_index: _Optional[int] = ..., integrated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., checkpoint: _Optional[str] = ..., inclusion_proof: _Optional[_Iterable[bytes]] = ..., log_entry: _Optional[bytes] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("device_id", "public_key", "enrolled_at", "last_sequence", "revoked", "revoked_at", "revocation_reason", "label")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ENROLLED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_REASON_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    device_id: bytes
    public_key: bytes
    enrolled_at: _timestamp_pb2.Timestamp
    last_sequence: int
    revoked: bool
    revoked_at: _timestamp_pb2.Timestamp
    revocation_reason: str
    label: str
    def __init__(self, device_id: _Optional[bytes] = ..., public_key: _Optional[bytes] = ..., enrolled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_sequence: _Optional[int] = ..., revoked: _Optional[bool] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revocation_reason: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class CreateEnrollmentTokenRequest(_message.Message):
    __slots__ = ("ttl_seconds", "label")
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    ttl_seconds: int
    label: str
    def __init__(self, ttl_seconds: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class CreateEnrollmentTokenResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("token", "public_key", "proof_of_possession", "certificate_chain_pem", "log_key", "signed_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PROOF_OF_POSSESSION_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    LOG_KEY_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    public_key: bytes
    proof_of_possession: bytes
    certificate_chain_pem: str
    log_key: str
    signed_at: _timestamp_pb2.Timestamp
    def __init__(self, token: _Optional[str] = ..., public_key: _Optional[bytes] = ..., proof_of_possession: _Optional[bytes] = ..., certificate_chain_pem: _Optional[str] = ..., log_key: _Optional[str] = ..., signed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("device", "certificate_chain_pem")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    device: Device
    certificate_chain_pem: str
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ..., certificate_chain_pem: _Optional[str] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("device_id", "reason", "effective_at")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_AT_FIELD_NUMBER: _ClassVar[int]
    device_id: bytes
    reason: str
    effective_at: _timestamp_pb2.Timestamp
    def __init__(self, device_id: _Optional[bytes] = ..., reason: _Optional[str] = ..., effective_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("device", "already_revoked")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_REVOKED_FIELD_NUMBER: _ClassVar[int]
    device: Device
    already_revoked: bool
    def __init__(self, device: _Optional[_Union[Device, _Mapping]] = ..., already_revoked: _Optional[bool] = ...) -> None: ...

class GetDeviceRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: bytes
    def __init__(self, device_id: _Optional[bytes] = ...) -> None: ...

class SubmitCaptureRequest(_message.Message):
    __slots__ = ("signed_claim",)
    SIGNED_CLAIM_FIELD_NUMBER: _ClassVar[int]
    signed_claim: SignedClaim
    def __init__(self, signed_claim: _Optional[_Union[SignedClaim, _Mapping]] = ...) -> None: ...

class SubmitCaptureResponse(_message.Message):
    __slots__ = ("receipt", "duplicate")
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    receipt: Receipt
    duplicate: bool
    def __init__(self, receipt: _Optional[_Union[Receipt, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class VerifyFileHeader(_message.Message):
    __slots__ = ("filename", "size_bytes", "sidecar", "detect", "chunk_hashes", "sidecar_receipt", "sidecar_public_key")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIDECAR_FIELD_NUMBER: _ClassVar[int]
    DETECT_FIELD_NUMBER: _ClassVar[int]
    CHUNK_HASHES_FIELD_NUMBER: _ClassVar[int]
    SIDECAR_RECEIPT_FIELD_NUMBER: _ClassVar[int]
    SIDECAR_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    filename: str
    size_bytes: int
    sidecar: SignedClaim
    detect: bool
    chunk_hashes: _containers.RepeatedScalarFieldContainer[bytes]
    sidecar_receipt: Receipt
    sidecar_public_key: bytes
    def __init__(self, filename: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sidecar: _Optional[_Union[SignedClaim, _Mapping]] = ..., detect: _Optional[bool] = ..., chunk_hashes: _Optional[_Iterable[bytes]] = ..., sidecar_receipt: _Optional[_Union[Receipt, _Mapping]] = ..., sidecar_public_key: _Optional[bytes] = ...) -> None: ...

class VerifyFileChunk(_message.Message):
    __slots__ = ("header", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: VerifyFileHeader
    data: bytes
    def __init__(self, header: _Optional[_Union[VerifyFileHeader, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ClaimEvidence(_message.Message):
    __slots__ = ("signed_claim", "receipt", "device", "signature_valid", "in_log", "chain_linked", "receipt_verified")
    SIGNED_CLAIM_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_VALID_FIELD_NUMBER: _ClassVar[int]
    IN_LOG_FIELD_NUMBER: _ClassVar[int]
    CHAIN_LINKED_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_VERIFIED_FIELD_NUMBER: _ClassVar[int]
    signed_claim: SignedClaim
    receipt: Receipt
    device: Device
    signature_valid: bool
    in_log: bool
    chain_linked: bool
    receipt_verified: bool
    def __init__(self, signed_claim: _Optional[_Union[SignedClaim, _Mapping]] = ..., receipt: _Optional[_Union[Receipt, _Mapping]] = ..., device: _Optional[_Union[Device, _Mapping]] = ..., signature_valid: _Optional[bool] = ..., in_log: _Optional[bool] = ..., chain_linked: _Optional[bool] = ..., receipt_verified: _Optional[bool] = ...) -> None: ...

class Evidence(_message.Message):
    __slots__ = ("file_sha256", "file_size", "media_type", "file_soft_bindings", "claim", "pdq_distance", "pdq_threshold", "sidecar_present", "hash_match", "file_content_sha256", "video_match", "damaged_ranges", "time_flags", "pdq_transform", "other_claims", "claim_embedded", "near_search_cut", "near_search_seconds")
    FILE_SHA256_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILE_SOFT_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    PDQ_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    PDQ_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SIDECAR_PRESENT_FIELD_NUMBER: _ClassVar[int]
    HASH_MATCH_FIELD_NUMBER: _ClassVar[int]
    FILE_CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    VIDEO_MATCH_FIELD_NUMBER: _ClassVar[int]
    DAMAGED_RANGES_FIELD_NUMBER: _ClassVar[int]
    TIME_FLAGS_FIELD_NUMBER: _ClassVar[int]
    PDQ_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    OTHER_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    CLAIM_EMBEDDED_FIELD_NUMBER: _ClassVar[int]
    NEAR_SEARCH_CUT_FIELD_NUMBER: _ClassVar[int]
    NEAR_SEARCH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    file_sha256: bytes
    file_size: int
    media_type: str
    file_soft_bindings: _containers.RepeatedCompositeFieldContainer[SoftBinding]
    claim: ClaimEvidence
    pdq_distance: int
    pdq_threshold: int
    sidecar_present: bool
    hash_match: bool
    file_content_sha256: bytes
    video_match: VideoMatch
    damaged_ranges: _containers.RepeatedCompositeFieldContainer[ByteRange]
    time_flags: _containers.RepeatedCompositeFieldContainer[TimeFlag]
    pdq_transform: str
    other_claims: _containers.RepeatedCompositeFieldContainer[ClaimEvidence]
    claim_embedded: bool
    near_search_cut: bool
    near_search_seconds: float
    def __init__(self, file_sha256: _Optional[bytes] = ..., file_size: _Optional[int] = ..., media_type: _Optional[str] = ..., file_soft_bindings: _Optional[_Iterable[_Union[SoftBinding, _Mapping]]] = ..., claim: _Optional[_Union[ClaimEvidence, _Mapping]] = ..., pdq_distance: _Optional[int] = ..., pdq_threshold: _Optional[int] = ..., sidecar_present: _Optional[bool] = ..., hash_match: _Optional[bool] = ..., file_content_sha256: _Optional[bytes] = ..., video_match: _Optional[_Union[VideoMatch, _Mapping]] = ..., damaged_ranges: _Optional[_Iterable[_Union[ByteRange, _Mapping]]] = ..., time_flags: _Optional[_Iterable[_Union[TimeFlag, _Mapping]]] = ..., pdq_transform: _Optional[str] = ..., other_claims: _Optional[_Iterable[_Union[ClaimEvidence, _Mapping]]] = ..., claim_embedded: _Optional[bool] = ..., near_search_cut: _Optional[bool] = ..., near_search_seconds: _Optional[float] = ...) -> None: ...

class TimeFlag(_message.Message):
    __slots__ = ("code", "detail")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    code: str
    detail: str
    def __init__(self, code: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class VideoMatch(_message.Message):
    __slots__ = ("matched", "coverage", "window_frames", "aligned_frames", "offset_seconds", "original_start_seconds", "original_end_seconds", "median_distance", "matched_share_query", "matched_share_original", "query_frames", "original_frames", "query_matched_frames", "original_matched_frames", "threshold", "min_quality")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_END_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEDIAN_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_SHARE_QUERY_FIELD_NUMBER: _ClassVar[int]
    MATCHED_SHARE_ORIGINAL_FIELD_NUMBER: _ClassVar[int]
    QUERY_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_FRAMES_FIELD_NUMBER: _ClassVar[int]
    QUERY_MATCHED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_MATCHED_FRAMES_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_QUALITY_FIELD_NUMBER: _ClassVar[int]
    matched: bool
    coverage: float
    window_frames: int
    aligned_frames: int
    offset_seconds: float
    original_start_seconds: float
    original_end_seconds: float
    median_distance: float
    matched_share_query: float
    matched_share_original: float
    query_frames: int
    original_frames: int
    query_matched_frames: int
    original_matched_frames: int
    threshold: int
    min_quality: int
    def __init__(self, matched: _Optional[bool] = ..., coverage: _Optional[float] = ..., window_frames: _Optional[int] = ..., aligned_frames: _Optional[int] = ..., offset_seconds: _Optional[float] = ..., original_start_seconds: _Optional[float] = ..., original_end_seconds: _Optional[float] = ..., median_distance: _Optional[float] = ..., matched_share_query: _Optional[float] = ..., matched_share_original: _Optional[float] = ..., query_frames: _Optional[int] = ..., original_frames: _Optional[int] = ..., query_matched_frames: _Optional[int] = ..., original_matched_frames: _Optional[int] = ..., threshold: _Optional[int] = ..., min_quality: _Optional[int] = ...) -> None: ...

class ByteRange(_message.Message):
    __slots__ = ("first_byte", "last_byte")
    FIRST_BYTE_FIELD_NUMBER: _ClassVar[int]
    LAST_BYTE_FIELD_NUMBER: _ClassVar[int]
    first_byte: int
    last_byte: int
    def __init__(self, first_byte: _Optional[int] = ..., last_byte: _Optional[int] = ...) -> None: ...

class DetectorCrop(_message.Message):
    __slots__ = ("x", "y", "width", "height", "score", "timestamp_seconds")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    score: float
    timestamp_seconds: float
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., score: _Optional[float] = ..., timestamp_seconds: _Optional[float] = ...) -> None: ...

class DetectorFrame(_message.Message):
    __slots__ = ("timestamp_seconds", "score", "scored")
    TIMESTAMP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SCORED_FIELD_NUMBER: _ClassVar[int]
    timestamp_seconds: float
    score: float
    scored: bool
    def __init__(self, timestamp_seconds: _Optional[float] = ..., score: _Optional[float] = ..., scored: _Optional[bool] = ...) -> None: ...

class DetectorResult(_message.Message):
    __slots__ = ("available", "note", "score", "band_low", "band_high", "band", "model_id", "model_version", "crops", "timeline", "threshold_low", "threshold_high", "threshold_high_noise_aware")
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    BAND_LOW_FIELD_NUMBER: _ClassVar[int]
    BAND_HIGH_FIELD_NUMBER: _ClassVar[int]
    BAND_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CROPS_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_LOW_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_HIGH_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_HIGH_NOISE_AWARE_FIELD_NUMBER: _ClassVar[int]
    available: bool
    note: str
    score: float
    band_low: float
    band_high: float
    band: str
    model_id: str
    model_version: str
    crops: _containers.RepeatedCompositeFieldContainer[DetectorCrop]
    timeline: _containers.RepeatedCompositeFieldContainer[DetectorFrame]
    threshold_low: float
    threshold_high: float
    threshold_high_noise_aware: bool
    def __init__(self, available: _Optional[bool] = ..., note: _Optional[str] = ..., score: _Optional[float] = ..., band_low: _Optional[float] = ..., band_high: _Optional[float] = ..., band: _Optional[str] = ..., model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., crops: _Optional[_Iterable[_Union[DetectorCrop, _Mapping]]] = ..., timeline: _Optional[_Iterable[_Union[DetectorFrame, _Mapping]]] = ..., threshold_low: _Optional[float] = ..., threshold_high: _Optional[float] = ..., threshold_high_noise_aware: _Optional[bool] = ...) -> None: ...

class C2paAction(_message.Message):
    __slots__ = ("action", "digital_source_type", "software_agent")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DIGITAL_SOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_AGENT_FIELD_NUMBER: _ClassVar[int]
    action: str
    digital_source_type: str
    software_agent: str
    def __init__(self, action: _Optional[str] = ..., digital_source_type: _Optional[str] = ..., software_agent: _Optional[str] = ...) -> None: ...

class C2paIngredient(_message.Message):
    __slots__ = ("title", "relationship", "media_type")
    TITLE_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    title: str
    relationship: str
    media_type: str
    def __init__(self, title: _Optional[str] = ..., relationship: _Optional[str] = ..., media_type: _Optional[str] = ...) -> None: ...

class C2paResult(_message.Message):
    __slots__ = ("present", "validation_state", "validation_codes", "signer", "signer_org", "signing_alg", "signed_at", "claim_generator", "actions", "ingredients", "trusted_anchor", "provenance_assertion_json", "error_kind", "error", "signing_time_json")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_STATE_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_CODES_FIELD_NUMBER: _ClassVar[int]
    SIGNER_FIELD_NUMBER: _ClassVar[int]
    SIGNER_ORG_FIELD_NUMBER: _ClassVar[int]
    SIGNING_ALG_FIELD_NUMBER: _ClassVar[int]
    SIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    CLAIM_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    INGREDIENTS_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_ANCHOR_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_ASSERTION_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SIGNING_TIME_JSON_FIELD_NUMBER: _ClassVar[int]
    present: bool
    validation_state: str
    validation_codes: _containers.RepeatedScalarFieldContainer[str]
    signer: str
    signer_org: str
    signing_alg: str
    signed_at: str
    claim_generator: str
    actions: _containers.RepeatedCompositeFieldContainer[C2paAction]
    ingredients: _containers.RepeatedCompositeFieldContainer[C2paIngredient]
    trusted_anchor: bool
    provenance_assertion_json: str
    error_kind: str
    error: str
    signing_time_json: str
    def __init__(self, present: _Optional[bool] = ..., validation_state: _Optional[str] = ..., validation_codes: _Optional[_Iterable[str]] = ..., signer: _Optional[str] = ..., signer_org: _Optional[str] = ..., signing_alg: _Optional[str] = ..., signed_at: _Optional[str] = ..., claim_generator: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[C2paAction, _Mapping]]] = ..., ingredients: _Optional[_Iterable[_Union[C2paIngredient, _Mapping]]] = ..., trusted_anchor: _Optional[bool] = ..., provenance_assertion_json: _Optional[str] = ..., error_kind: _Optional[str] = ..., error: _Optional[str] = ..., signing_time_json: _Optional[str] = ...) -> None: ...

class VerificationReport(_message.Message):
    __slots__ = ("status", "reasons", "evidence", "detector", "verified_at", "c2pa")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    VERIFIED_AT_FIELD_NUMBER: _ClassVar[int]
    C2PA_FIELD_NUMBER: _ClassVar[int]
    status: Verdict
    reasons: _containers.RepeatedScalarFieldContainer[str]
    evidence: Evidence
    detector: DetectorResult
    verified_at: _timestamp_pb2.Timestamp
    c2pa: C2paResult
    def __init__(self, status: _Optional[_Union[Verdict, str]] = ..., reasons: _Optional[_Iterable[str]] = ..., evidence: _Optional[_Union[Evidence, _Mapping]] = ..., detector: _Optional[_Union[DetectorResult, _Mapping]] = ..., verified_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., c2pa: _Optional[_Union[C2paResult, _Mapping]] = ...) -> None: ...

class LookupQuery(_message.Message):
    __slots__ = ("ref", "sha256", "soft_bindings", "media_type", "content_sha256", "dihedral_soft_bindings", "pdq_dihedral", "pdq_quality", "video_turned")
    REF_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SOFT_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    DIHEDRAL_SOFT_BINDINGS_FIELD_NUMBER: _ClassVar[int]
    PDQ_DIHEDRAL_FIELD_NUMBER: _ClassVar[int]
    PDQ_QUALITY_FIELD_NUMBER: _ClassVar[int]
    VIDEO_TURNED_FIELD_NUMBER: _ClassVar[int]
    ref: str
    sha256: bytes
    soft_bindings: _containers.RepeatedCompositeFieldContainer[SoftBinding]
    media_type: str
    content_sha256: bytes
    dihedral_soft_bindings: _containers.RepeatedCompositeFieldContainer[SoftBinding]
    pdq_dihedral: bytes
    pdq_quality: int
    video_turned: bytes
    def __init__(self, ref: _Optional[str] = ..., sha256: _Optional[bytes] = ..., soft_bindings: _Optional[_Iterable[_Union[SoftBinding, _Mapping]]] = ..., media_type: _Optional[str] = ..., content_sha256: _Optional[bytes] = ..., dihedral_soft_bindings: _Optional[_Iterable[_Union[SoftBinding, _Mapping]]] = ..., pdq_dihedral: _Optional[bytes] = ..., pdq_quality: _Optional[int] = ..., video_turned: _Optional[bytes] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("queries", "per_query_errors")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    PER_QUERY_ERRORS_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[LookupQuery]
    per_query_errors: bool
    def __init__(self, queries: _Optional[_Iterable[_Union[LookupQuery, _Mapping]]] = ..., per_query_errors: _Optional[bool] = ...) -> None: ...

class LookupResult(_message.Message):
    __slots__ = ("ref", "report", "error", "error_code")
    REF_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ref: str
    report: VerificationReport
    error: str
    error_code: str
    def __init__(self, ref: _Optional[str] = ..., report: _Optional[_Union[VerificationReport, _Mapping]] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[LookupResult]
    def __init__(self, results: _Optional[_Iterable[_Union[LookupResult, _Mapping]]] = ...) -> None: ...

class GetCheckpointRequest(_message.Message):
    __slots__ = ("cosigned",)
    COSIGNED_FIELD_NUMBER: _ClassVar[int]
    cosigned: bool
    def __init__(self, cosigned: _Optional[bool] = ...) -> None: ...

class WitnessStatus(_message.Message):
    __slots__ = ("name", "url", "size", "problem")
    NAME_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    PROBLEM_FIELD_NUMBER: _ClassVar[int]
    name: str
    url: str
    size: int
    problem: str
    def __init__(self, name: _Optional[str] = ..., url: _Optional[str] = ..., size: _Optional[int] = ..., problem: _Optional[str] = ...) -> None: ...

class GetCheckpointResponse(_message.Message):
    __slots__ = ("checkpoint", "witnesses", "quorum")
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    WITNESSES_FIELD_NUMBER: _ClassVar[int]
    QUORUM_FIELD_NUMBER: _ClassVar[int]
    checkpoint: str
    witnesses: _containers.RepeatedCompositeFieldContainer[WitnessStatus]
    quorum: int
    def __init__(self, checkpoint: _Optional[str] = ..., witnesses: _Optional[_Iterable[_Union[WitnessStatus, _Mapping]]] = ..., quorum: _Optional[int] = ...) -> None: ...

class GetInclusionProofRequest(_message.Message):
    __slots__ = ("leaf_index", "leaf_hash", "tree_size")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    leaf_hash: bytes
    tree_size: int
    def __init__(self, leaf_index: _Optional[int] = ..., leaf_hash: _Optional[bytes] = ..., tree_size: _Optional[int] = ...) -> None: ...

class GetInclusionProofResponse(_message.Message):
    __slots__ = ("leaf_index", "tree_size", "proof", "leaf_hash")
    LEAF_INDEX_FIELD_NUMBER: _ClassVar[int]
    TREE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    LEAF_HASH_FIELD_NUMBER: _ClassVar[int]
    leaf_index: int
    tree_size: int
    proof: _containers.RepeatedScalarFieldContainer[bytes]
    leaf_hash: bytes
    def __init__(self, leaf_index: _Optional[int] = ..., tree_size: _Optional[int] = ..., proof: _Optional[_Iterable[bytes]] = ..., leaf_hash: _Optional[bytes] = ...) -> None: ...

class GetConsistencyProofRequest(_message.Message):
    __slots__ = ("first_size", "second_size")
    FIRST_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_SIZE_FIELD_NUMBER: _ClassVar[int]
    first_size: int
    second_size: int
    def __init__(self, first_size: _Optional[int] = ..., second_size: _Optional[int] = ...) -> None: ...

class GetConsistencyProofResponse(_message.Message):
    __slots__ = ("first_size", "second_size", "proof")
    FIRST_SIZE_FIELD_NUMBER: _ClassVar[int]
    SECOND_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    first_size: int
    second_size: int
    proof: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, first_size: _Optional[int] = ..., second_size: _Optional[int] = ..., proof: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetEntriesRequest(_message.Message):
    __slots__ = ("start", "limit")
    START_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    start: int
    limit: int
    def __init__(self, start: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class GetEntriesResponse(_message.Message):
    __slots__ = ("entries", "start", "next")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedScalarFieldContainer[bytes]
    start: int
    next: int
    def __init__(self, entries: _Optional[_Iterable[bytes]] = ..., start: _Optional[int] = ..., next: _Optional[int] = ...) -> None: ...

class GetLogKeyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetLogKeyResponse(_message.Message):
    __slots__ = ("verifier_key", "origin")
    VERIFIER_KEY_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    verifier_key: str
    origin: str
    def __init__(self, verifier_key: _Optional[str] = ..., origin: _Optional[str] = ...) -> None: ...
