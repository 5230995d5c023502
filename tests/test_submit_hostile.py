"""A SubmitCapture of megabytes is refused from its counts before any of its fields is
turned into Python objects: the claim's shape is checked on the server's event loop,
before any signature or device (an unsigned request from anyone), and before,
every soft binding and metadata entry was converted first. Measured 6 December
(h-attack51, a shared 2-core machine): one client sending, one call at a time, a 7.7 MB
claim of 600,000 metadata entries raised another client's GetLogKey p90 from 2.5 ms to
975 ms and its max to 2.5 s (190,000 soft bindings: p99 600 ms); each such call held
the loop 1.3-3.1 s. A real `prov serve`, a real gRPC channel, requests as a hostile
client writes them."""

from __future__ import annotations

import os

import grpc

from provenance.core.claims import (
    MAX_CLAIM_SOFT_BINDINGS,
    MAX_METADATA_BYTES,
    MAX_PARSED_CLAIM_BYTES,
)
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.conftest import ServerProc, refusal


def _claim() -> pb.Claim:
    m = pb.Claim(
        version=1,
        device_id=bytes(32),
        sequence=1,
        media_type="video/mp4",
        size_bytes=10,
        duration_seconds=1.0,
    )
    m.captured_at.seconds = 1_700_000_000
    m.hard_binding.sha256 = os.urandom(32)
    return m


def _refusal(address: str, claim: pb.Claim) -> str:
    """The words of the INVALID_ARGUMENT the server at ``address`` answers ``claim`` with
    (sent unsigned, as anyone can send it)."""
    request = pb.SubmitCaptureRequest(
        signed_claim=pb.SignedClaim(
            payload_type=PAYLOAD_TYPE_CLAIM,
            claim=claim.SerializeToString(),
            key_id=bytes(32),
            signature=bytes(64),
        )
    )
    return refusal(
        address,
        "/provenance.v1.Captures/SubmitCapture",
        request.SerializeToString(),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_soft_bindings_are_counted_before_any_is_converted(server: ServerProc) -> None:
    """The first binding is malformed (a 3-byte hash): converted one by one, as before,
    that is what the server said; counted first, it is the count."""
    claim = _claim()
    claim.soft_bindings.add(algorithm="pdq", hash=b"abc")
    n = 5 * MAX_CLAIM_SOFT_BINDINGS  # 215 KB: parsed (`MAX_PARSED_CLAIM_BYTES`)
    for _ in range(1, n):
        claim.soft_bindings.add(algorithm="pdq", hash=bytes(32), timestamp_seconds=0)
    said = _refusal(server.address, claim)
    assert f"claim has {n} soft bindings; the limit is {MAX_CLAIM_SOFT_BINDINGS}" in said, said


def test_metadata_entries_are_counted_before_any_is_converted(server: ServerProc) -> None:
    """More entries than `MAX_METADATA_BYTES` + 1 cannot fit its bytes (every key but one
    holds a byte at least): refused from their number. Before, every entry was converted
    and then added up ("the claim's metadata is 38890 bytes")."""
    claim = _claim()
    n = 4 * MAX_METADATA_BYTES  # 180 KB: parsed
    for i in range(n):
        claim.metadata[str(i)] = "v"
    said = _refusal(server.address, claim)
    assert f"the claim's metadata has {n:,} entries" in said, said
    assert f"at most {MAX_METADATA_BYTES}" in said, said


def test_a_claim_over_a_log_entry_is_refused_before_its_fields_are_converted(
    server: ServerProc,
) -> None:
    """Within both counts, but its bytes could not be one log entry (a media type of
    70 KB after a malformed binding): the entry's size, from the bytes' lengths, comes
    before the bindings are converted."""
    claim = _claim()
    claim.soft_bindings.add(algorithm="pdq", hash=b"abc")
    claim.media_type = "video/" + "x" * 70_000
    said = _refusal(server.address, claim)
    assert "the claim would make a log entry of about" in said, said


def test_a_claim_of_megabytes_is_refused_from_its_length_before_it_is_parsed(
    server: ServerProc,
) -> None:
    """Over `MAX_PARSED_CLAIM_BYTES` the claim is not parsed: 1.6 MB of metadata entries
    are refused as bytes no log entry holds. Before, protobuf parsed the map (in time that
    grows faster than its size), every entry was converted, then added up ("the claim's
    metadata is ... bytes")."""
    claim = _claim()
    for i in range(150_000):
        claim.metadata[str(i)] = "v"
    assert claim.ByteSize() > MAX_PARSED_CLAIM_BYTES
    said = _refusal(server.address, claim)
    assert "the claim would make a log entry of about" in said, said
    assert "fewer soft bindings or less metadata" in said, said


def test_a_sidecar_claim_of_megabytes_is_not_parsed(server: ServerProc) -> None:
    """VerifyFile's header may carry a sidecar's claim (anyone's, unsigned): over
    `MAX_PARSED_CLAIM_BYTES` it is not parsed, and the verdict says the sidecar cannot be
    read, naming the bound. Before, it was parsed and converted in the verifying thread,
    holding the GIL: one client sending 7.7 MB ones (600,000 metadata entries) one at a
    time raised another client's GetLogKey p90 to 890 ms, max 2.2 s."""
    claim = _claim()
    for i in range(30_000):
        claim.metadata[str(i)] = "v"
    data = claim.SerializeToString()
    assert len(data) > MAX_PARSED_CLAIM_BYTES
    sidecar = pb.SignedClaim(
        payload_type=PAYLOAD_TYPE_CLAIM, claim=data, key_id=bytes(32), signature=bytes(64)
    )
    body = b"not an image, nobody signed it"
    chunks = [
        pb.VerifyFileChunk(
            header=pb.VerifyFileHeader(filename="x.bin", size_bytes=len(body), sidecar=sidecar)
        ),
        pb.VerifyFileChunk(data=body),
    ]
    options = [("grpc.max_receive_message_length", 8 << 20)]
    with grpc.insecure_channel(server.address, options=options) as channel:
        report = rpc.VerificationStub(channel).VerifyFile(iter(chunks), timeout=60)
    said = " ".join(report.reasons)
    assert "a sidecar came with the file but its claim cannot be read" in said, said
    assert f"{len(data):,} bytes" in said and f"{MAX_PARSED_CLAIM_BYTES:,}" in said, said
