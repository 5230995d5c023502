"""Bad input through the real server: each gets the right status code and a message a
person understands; the server stays up and the log stays consistent."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.api import ProvenanceClient
from provenance.core.claims import SignedClaim, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import TransportError
from provenance.core.keys import DeviceKey
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from tests.conftest import (
    ADMIN_TOKEN,
    SAMPLES,
    Cli,
    ServerProc,
    enroll_key,
    signed_claim,
    start_server,
)


def _code(exc: pytest.ExceptionInfo[TransportError]) -> str:
    return exc.value.code


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with a tiny body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    out = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
    out += struct.pack(">I", zlib.crc32(chunk))
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    out += struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat))
    return out + b"\x00\x00\x00\x00IEND\xaeB`\x82"


@pytest.fixture
def client(server: ServerProc) -> ProvenanceClient:
    return ProvenanceClient(server.address, admin_token=ADMIN_TOKEN, timeout=20)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """One server for this module's tests that only send what it refuses or read what
    nobody here writes (no enrollment, token or capture): each of them started a server
    of its own, about 2 s. A test that changes the server's state keeps ``server``."""
    srv = start_server(tmp_path_factory.mktemp("grpc-errors") / "prov.db")
    yield srv
    srv.stop()


@pytest.fixture
def shared_client(shared: ServerProc) -> Iterator[ProvenanceClient]:
    with ProvenanceClient(shared.address, admin_token=ADMIN_TOKEN, timeout=20) as c:
        yield c


@pytest.mark.parametrize(
    ("content", "code", "words"),
    [
        (b"", "INVALID_ARGUMENT", "empty file"),
        (b"hello, this is plain text and not a picture\n" * 5, "INVALID_ARGUMENT", "unrecognised"),
        (_png_header(50_000, 50_000), "RESOURCE_EXHAUSTED", "pixels"),
    ],
    ids=["empty", "text", "pixel-bomb"],  # a truncated JPEG is judged: test_corrupt_verdicts
)
def test_bad_files_are_refused_clearly(
    shared_client: ProvenanceClient, tmp_path: Path, content: bytes, code: str, words: str
) -> None:
    f = tmp_path / "upload.jpg"
    f.write_bytes(content)
    with pytest.raises(TransportError) as exc:
        shared_client.verify_file(f)
    assert _code(exc) == code
    assert words in str(exc.value)


def test_oversized_upload_refused(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "small.db", "--max-upload-mb", "1")
    try:
        big = tmp_path / "big.jpg"
        big.write_bytes((SAMPLES / "rocket.jpg").read_bytes() * 12)  # ~1.3 MB
        with ProvenanceClient(srv.address) as c, pytest.raises(TransportError) as exc:
            c.verify_file(big)
        assert _code(exc) == "RESOURCE_EXHAUSTED"
        # in words a reader takes in, with the flag that moves it (h-newuser60; before:
        # "file is 3221225472 bytes; the limit is 2147483648 bytes" for a 3 GiB file)
        said = str(exc.value)
        size = big.stat().st_size
        assert f"file is {size:,} bytes" in said, said
        assert "upload limit of 1,048,576 bytes (1 MiB" in said, said
        assert "prov serve --max-upload-mb" in said, said
    finally:
        srv.stop()


def test_malformed_uploads(shared: ServerProc) -> None:
    chan = grpc.insecure_channel(shared.address)
    stub = rpc.VerificationStub(chan)
    with pytest.raises(grpc.RpcError) as exc:
        stub.VerifyFile(iter([pb.VerifyFileChunk(data=b"\xff\xd8\xff")]), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header" in str(exc.value.details())
    data = (SAMPLES / "rocket.jpg").read_bytes()
    msgs = [
        pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=len(data) + 100)),
        pb.VerifyFileChunk(data=data),
    ]
    with pytest.raises(grpc.RpcError) as exc:
        stub.VerifyFile(iter(msgs), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "truncated upload" in str(exc.value.details())
    msgs[0] = pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=10))
    with pytest.raises(grpc.RpcError) as exc:
        stub.VerifyFile(iter(msgs), timeout=10)
    # more bytes than announced: not "truncated" (h-att41: it said "truncated upload: the
    # header announced 10 bytes, 61306 arrived")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(exc.value.details())
    assert "truncated" not in details, details
    assert "longer than its header announced: 10 bytes announced, " in details
    chan.close()


def test_a_request_that_is_no_valid_message_is_refused_in_plain_words(server: ServerProc) -> None:
    """Bytes that are not a valid protobuf message of a method's request type: an
    INVALID_ARGUMENT naming the method and the message type, in our words. Before, the
    details carried protobuf's parse text ("Error parsing message with type
    'provenance.v1.GetEntriesRequest'"); a SignedClaim whose claim bytes do not parse
    said the same of 'provenance.v1.Claim'."""
    calls = [
        ("/provenance.v1.Log/GetEntries", "GetEntriesRequest", False),
        ("/provenance.v1.Captures/SubmitCapture", "SubmitCaptureRequest", False),
        ("/provenance.v1.DeviceRegistry/GetDevice", "GetDeviceRequest", False),
        ("/grpc.health.v1.Health/Check", "HealthCheckRequest", False),
        ("/provenance.v1.Verification/VerifyFile", "VerifyFileChunk", True),
    ]
    with grpc.insecure_channel(server.address) as channel:
        for method, kind, streaming in calls:
            try:
                if streaming:
                    upload: grpc.StreamUnaryMultiCallable[bytes, bytes]
                    upload = channel.stream_unary(method)
                    upload(iter([b"\x0a\x03\x0a\x01\xff"]), timeout=20)  # a name not UTF-8
                else:
                    raw: grpc.UnaryUnaryMultiCallable[bytes, bytes]
                    raw = channel.unary_unary(method)
                    raw(b"\xff\xff\xff\xff", timeout=20)
            except grpc.RpcError as e:
                code, details = e.code(), str(e.details())
            else:
                raise AssertionError(f"{method} answered bytes that are no message")
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, code, details)
            assert details == (
                f"malformed request to {method}: its bytes are not a valid {kind} message"
                " (protobuf's encoding of one is damaged, cut short, or holds text that is"
                " not UTF-8)"
            ), details
    client = ProvenanceClient(server.address, admin_token=ADMIN_TOKEN, timeout=20)
    key = enroll_key(client)
    with pytest.raises(TransportError) as exc:
        client.submit(SignedClaim(PAYLOAD_TYPE_CLAIM, b"\xff\xff\xff", key.key_id, b"\x00" * 64))
    said = str(exc.value)
    assert _code(exc) == "INVALID_ARGUMENT" and "Error parsing" not in said, said
    assert "malformed claim: its bytes are not a valid Claim message" in said, said


def test_consistency_sizes_no_proof_runs_between_are_said_plainly(server: ServerProc) -> None:
    """GetConsistencyProof between sizes no proof runs between names the field and says
    why. Before: "no consistency proof from size 0 to size 1", "first size 5 is larger
    than second size 1" (second_size 0 asks for the latest) and "tree size 7 is beyond
    the log's size 1" (which of the two sizes?)."""
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN, timeout=20) as client:
        enroll_key(client)  # the log holds its enrollment: size 1
    with grpc.insecure_channel(server.address) as channel:
        log = rpc.LogStub(channel)
        for first, second, words in [
            (0, 1, "first_size must be at least 1: a consistency proof starts from a tree of"),
            (5, 0, "first_size 5 is past the log's size 1"),
            (1, 7, "second_size 7 is past the log's size 1"),
        ]:
            with pytest.raises(grpc.RpcError) as exc:
                log.GetConsistencyProof(
                    pb.GetConsistencyProofRequest(first_size=first, second_size=second), timeout=20
                )
            assert words in str(exc.value.details()), exc.value.details()


def test_submission_errors(client: ProvenanceClient) -> None:
    key = enroll_key(client)
    first = signed_claim(key, 1, sha=b"\x11" * 32)
    receipt, dup = client.submit(first)
    assert (receipt.leaf_index, dup) == (1, False)  # leaf 0: the enrollment

    again, dup = client.submit(first)  # a replay gets the same receipt back
    assert dup is True and again == receipt

    with pytest.raises(TransportError) as exc:  # sequence does not advance
        client.submit(signed_claim(key, 1, sha=b"\x22" * 32))
    assert _code(exc) == "FAILED_PRECONDITION" and "sequence" in str(exc.value)

    bad = signed_claim(key, 2)
    with pytest.raises(TransportError) as exc:
        client.submit(SignedClaim(bad.payload_type, bad.claim_bytes, bad.key_id, b"\x00" * 64))
    assert _code(exc) == "UNAUTHENTICATED" and "signature" in str(exc.value)

    with pytest.raises(TransportError) as exc:
        client.submit(signed_claim(DeviceKey.generate(), 1))
    assert _code(exc) == "NOT_FOUND" and "not enrolled" in str(exc.value)

    with pytest.raises(TransportError) as exc:
        client.submit(SignedClaim(PAYLOAD_TYPE_CLAIM, b"\xff\xff\xff", key.key_id, b"\x00" * 64))
    assert _code(exc) == "INVALID_ARGUMENT" and "malformed claim" in str(exc.value)

    client.revoke(key.key_id, "lost on assignment")
    with pytest.raises(TransportError) as exc:
        client.submit(signed_claim(key, 2, prev=first.claim_hash))
    assert _code(exc) == "PERMISSION_DENIED" and "revoked" in str(exc.value)


def test_enrollment_errors(client: ProvenanceClient, server: ServerProc) -> None:
    key = DeviceKey.generate()
    token, _ = client.create_enrollment_token()
    with pytest.raises(TransportError) as exc:  # proof of possession by another key
        client.enroll(
            token,
            key.public_key,
            sign_payload(DeviceKey.generate(), PAYLOAD_TYPE_ENROLL, token.encode()),
        )
    assert _code(exc) == "PERMISSION_DENIED" and "proof of possession" in str(exc.value)
    small_order = (1).to_bytes(32, "little")  # the identity point: order 1
    with pytest.raises(TransportError) as exc:
        client.enroll(token, small_order, b"\x00" * 64)
    assert _code(exc) == "INVALID_ARGUMENT" and "small" in str(exc.value)
    client.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    other = DeviceKey.generate()
    with pytest.raises(TransportError) as exc:  # one-time token
        client.enroll(
            token, other.public_key, sign_payload(other, PAYLOAD_TYPE_ENROLL, token.encode())
        )
    assert _code(exc) == "PERMISSION_DENIED" and "already used" in str(exc.value)
    with pytest.raises(TransportError) as exc:
        client.enroll(
            "no-such-token",
            other.public_key,
            sign_payload(other, PAYLOAD_TYPE_ENROLL, b"no-such-token"),
        )
    assert _code(exc) == "PERMISSION_DENIED" and "unknown" in str(exc.value)

    with (
        ProvenanceClient(server.address, admin_token="wrong") as c,
        pytest.raises(TransportError) as exc,
    ):
        c.create_enrollment_token()
    assert _code(exc) == "UNAUTHENTICATED" and "wrong" in str(exc.value)
    chan = grpc.insecure_channel(server.address)
    with pytest.raises(grpc.RpcError) as rexc:
        rpc.DeviceRegistryStub(chan).Revoke(
            pb.RevokeRequest(device_id=key.key_id, reason="x"), timeout=10
        )
    assert rexc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    chan.close()


def test_server_survives_and_stays_consistent(
    client: ProvenanceClient, server: ServerProc, tmp_path: Path, cli: Cli
) -> None:
    key = enroll_key(client)
    client.submit(signed_claim(key, 1))
    for junk in (b"", b"\x00" * 1000, _png_header(60_000, 60_000)):
        f = tmp_path / "junk.bin"
        f.write_bytes(junk)
        with pytest.raises(TransportError):
            client.verify_file(f)
    f.write_bytes(b"\xff\xd8\xff\xe0garbage")  # a damaged JPEG: judged on its bytes
    assert client.verify_file(f).status is Verdict.UNSIGNED
    chan = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(chan).Check(  # type: ignore[attr-defined]  # stub declares no methods
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    chan.close()
    rc, out, err = cli("log", "audit", "--state", str(tmp_path / "state.json"))
    assert rc == 0, err
    assert "has 2 entries" in out  # the enrollment and the claim


def _raw_upload(server: ServerProc, messages: list[bytes]) -> grpc.RpcError | bytes:
    """The reply (serialized bytes) or the error of a VerifyFile call sending ``messages``
    as they are (hand-built wire bytes, no protobuf on the client)."""
    with grpc.insecure_channel(server.address) as chan:
        call = chan.stream_unary(
            "/provenance.v1.Verification/VerifyFile",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        try:
            reply: bytes = call(iter(messages), timeout=20)
        except grpc.RpcError as e:
            return e
        return reply


def test_upload_messages_protobuf_refuses_are_refused(shared: ServerProc) -> None:
    """A data-only upload message whose length is a varint of more than 5 bytes (padded
    with 0x80s, as protobuf's decoder refuses) is refused as protobuf would refuse it, not
    read past it by the fast path; the same bytes with a 5-byte length are accepted."""
    data = (SAMPLES / "rocket.jpg").read_bytes()
    header = pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=len(data)))

    def padded(n: int) -> bytes:  # len(data) as an n-byte varint (non-canonical past 3)
        size, out = len(data), b""
        for _ in range(n - 1):
            out += bytes((0x80 | (size & 0x7F),))
            size >>= 7
        return b"\x12" + out + bytes((size,)) + data

    assert pb.VerifyFileChunk.FromString(padded(5)).data == data
    for n in (5, 6, 10):
        if n > 5:
            with pytest.raises(Exception):  # noqa: B017 - protobuf's DecodeError
                pb.VerifyFileChunk.FromString(padded(n))
        got = _raw_upload(shared, [header.SerializeToString(), padded(n)])
        if n == 5:
            assert isinstance(got, bytes), got
            report = pb.VerificationReport.FromString(got)
            assert report.evidence.file_sha256 == hashlib.sha256(data).digest()
        else:
            assert isinstance(got, grpc.RpcError)
            assert got.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid VerifyFileChunk message" in str(got.details())


def test_an_upload_message_of_neither_header_nor_data_is_named_as_such(
    shared: ServerProc,
) -> None:
    """After the header, an empty message, or one whose field 2 has the wrong wire type
    (protobuf keeps it as an unknown field), carries no data: the error says so rather
    than calling it a second header."""
    header = pb.VerifyFileChunk(header=pb.VerifyFileHeader()).SerializeToString()
    for empty in (b"", b"\x10\x05"):
        got = _raw_upload(shared, [header, empty])
        assert isinstance(got, grpc.RpcError)
        assert got.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "upload message 1 carries neither a header nor data" in str(got.details())
    got = _raw_upload(shared, [header, header])
    assert isinstance(got, grpc.RpcError) and "second header" in str(got.details())


def test_a_zero_byte_data_message_before_the_last_is_named_with_its_size(
    shared: ServerProc,
) -> None:
    """A data message explicitly carrying 0 bytes (field 2, length 0) followed by more data
    is refused naming its real size, 0 bytes (it was once reported as 1)."""
    header = pb.VerifyFileChunk(header=pb.VerifyFileHeader()).SerializeToString()
    got = _raw_upload(shared, [header, b"\x12\x00", b"\x12\x01x"])
    assert isinstance(got, grpc.RpcError)
    assert got.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "upload message 1 carried 0 bytes" in str(got.details()), got.details()


def test_a_device_id_that_is_not_32_bytes_is_malformed(shared: ServerProc) -> None:
    """GetDevice and Revoke name a device by its 32-byte id: any other length is a
    malformed request (INVALID_ARGUMENT saying so), not an unknown device. Before, an
    empty id got NOT_FOUND "device  is not enrolled" and a 1 MiB one was looked up in the
    store and echoed back as 1,000 hex digits."""
    channel = grpc.insecure_channel(shared.address)
    stub = rpc.DeviceRegistryStub(channel)
    admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
    for raw in (b"", b"\x01" * 31, b"\x01" * 33, b"x" * (1 << 20)):
        with pytest.raises(grpc.RpcError) as got:
            stub.GetDevice(pb.GetDeviceRequest(device_id=raw), timeout=20)
        assert got.value.code() is grpc.StatusCode.INVALID_ARGUMENT, got.value.details()
        assert got.value.details() == (
            f"a device id is 32 bytes (the SHA-256 of the device's public key), got {len(raw)}"
        )
        with pytest.raises(grpc.RpcError) as got:
            stub.Revoke(pb.RevokeRequest(device_id=raw, reason="lost"), timeout=20, metadata=admin)
        assert got.value.code() is grpc.StatusCode.INVALID_ARGUMENT, got.value.details()
    with pytest.raises(grpc.RpcError) as got:  # a well-formed id nobody enrolled
        stub.GetDevice(pb.GetDeviceRequest(device_id=b"\x01" * 32), timeout=20)
    assert got.value.code() is grpc.StatusCode.NOT_FOUND
    channel.close()


def test_a_leaf_hash_that_is_not_32_bytes_is_malformed(shared: ServerProc) -> None:
    """GetInclusionProof by leaf hash: any length but 32 bytes is a malformed request
    (INVALID_ARGUMENT saying so), as a device id of the wrong length is. Before, an empty
    or 1 MiB hash was looked up in the store and answered OUT_OF_RANGE "no such leaf in
    the log"."""
    channel = grpc.insecure_channel(shared.address)
    stub = rpc.LogStub(channel)
    for raw in (b"", b"\x01" * 31, b"x" * (1 << 20)):
        with pytest.raises(grpc.RpcError) as got:
            stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_hash=raw), timeout=20)
        assert got.value.code() is grpc.StatusCode.INVALID_ARGUMENT, got.value.details()
        assert "a leaf hash is 32 bytes" in str(got.value.details())
        assert f"got {len(raw)}" in str(got.value.details())
    channel.close()


@pytest.mark.parametrize(
    ("label", "words"),
    [
        ("x" * 100_000, "100,000 characters; at most 200"),
        ("desk\x1b[2Jcamera", "control character (U+001B) at character 5"),
        ("cam\u202eera", "format character (U+202E) at character 4"),
    ],
    ids=["100k-characters", "escape", "bidi-override"],
)
def test_an_enrollment_token_label_too_long_or_with_controls_is_refused(
    client: ProvenanceClient, label: str, words: str
) -> None:
    """A token's label, kept as the device's name in the registry and shown beside it in
    reports and on the web pages, is at most 200 printable characters: more, or a
    control or format character, is INVALID_ARGUMENT saying which. Before: a label of
    100,000 characters (or one holding an escape sequence) was stored as given."""
    with pytest.raises(TransportError) as exc:
        client.create_enrollment_token(label=label)
    assert _code(exc) == "INVALID_ARGUMENT" and words in str(exc.value), str(exc.value)
    token, _ = client.create_enrollment_token(label="d\u00e9sk camera 3 " + "x" * 186)
    assert token  # 200 characters, accented: accepted
    token, _ = client.create_enrollment_token(
        label="\u062f\u0648\u0631\u0628\u06cc\u0646\u200c\u0647\u0627"
    )
    assert token  # Persian 'cameras', a zero-width non-joiner inside: accepted


def test_a_leaf_hash_the_log_does_not_hold_is_not_found(shared: ServerProc) -> None:
    """GetInclusionProof by a well-formed leaf hash that no entry has: NOT_FOUND saying
    no entry with that leaf hash is in the log (the README's table: an unknown leaf is
    not found, not an index out of range). Before: OUT_OF_RANGE "no such leaf in the
    log"."""
    channel = grpc.insecure_channel(shared.address)
    stub = rpc.LogStub(channel)
    wanted = b"\xab" * 32
    with pytest.raises(grpc.RpcError) as got:
        stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_hash=wanted), timeout=20)
    assert got.value.code() is grpc.StatusCode.NOT_FOUND, got.value.details()
    assert got.value.details() == f"no entry with the leaf hash {wanted.hex()} is in the log"
    channel.close()


def test_a_health_check_of_an_unknown_service_names_it_and_those_that_exist(
    shared: ServerProc,
) -> None:
    """grpc.health.v1.Health/Check of a service the server does not have: NOT_FOUND with
    a message naming the service asked for (escaped, as sent by anyone) and the names a
    check may give ("" for the whole server, and each provenance service). Before: NOT_FOUND
    with empty details."""
    chan = grpc.insecure_channel(shared.address)
    check = health_pb2_grpc.HealthStub(chan).Check  # type: ignore[attr-defined]  # stub declares no methods
    for asked in ("provenance.v1.Nope", "bad\x1b[2Jname"):
        with pytest.raises(grpc.RpcError) as got:
            check(health_pb2.HealthCheckRequest(service=asked), timeout=10)
        assert got.value.code() is grpc.StatusCode.NOT_FOUND
        details = str(got.value.details())
        assert "\x1b" not in details, details
        assert "no service" in details and asked.replace("\x1b", "\\x1b") in details, details
        assert '""' in details, details
        for name in pb.DESCRIPTOR.services_by_name.values():
            assert name.full_name in details, details
    reply = check(health_pb2.HealthCheckRequest(service="provenance.v1.Log"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    chan.close()


def test_upload_header_fields_past_their_limits_are_refused(
    shared: ServerProc, tmp_path: Path
) -> None:
    """A header's chunk hash that is not a 32-byte leaf hash, or a file name of more than
    4 KiB, is INVALID_ARGUMENT naming the field and its limit. Before, both were taken
    silently (a 7 MB file name; a 31-byte hash only failed to rebuild the chunk root).
    A long name an honest client sends still gets its report."""
    data = (SAMPLES / "rocket.jpg").read_bytes()
    chan = grpc.insecure_channel(shared.address)
    stub = rpc.VerificationStub(chan)

    def upload(header: pb.VerifyFileHeader) -> pb.VerificationReport:
        msgs = [pb.VerifyFileChunk(header=header), pb.VerifyFileChunk(data=data)]
        report: pb.VerificationReport = stub.VerifyFile(iter(msgs), timeout=60)
        return report

    for hashes, i, n in (([b"\x01" * 31], 0, 31), ([b"\x01" * 32, b""], 1, 0)):
        with pytest.raises(grpc.RpcError) as got:
            upload(pb.VerifyFileHeader(size_bytes=len(data), chunk_hashes=hashes))
        assert got.value.code() is grpc.StatusCode.INVALID_ARGUMENT, got.value.details()
        assert f"chunk_hashes[{i}] is {n} bytes; each is a 32-byte leaf hash" in str(
            got.value.details()
        )
    with pytest.raises(grpc.RpcError) as got:
        upload(pb.VerifyFileHeader(filename="x" * 7_000_000))
    assert got.value.code() is grpc.StatusCode.INVALID_ARGUMENT, got.value.details()
    assert "filename is 7,000,000 bytes; at most 4,096 bytes" in str(got.value.details())
    with pytest.raises(grpc.RpcError) as got:
        upload(pb.VerifyFileHeader(filename="\U0001f4f7" * 1025))  # 4,100 bytes
    assert "filename is 4,100 bytes" in str(got.value.details())
    for name in ("\U0001f4f7" * 1024, "a\nb\x00c.jpg"):  # 4,096 bytes; any name on disk
        assert upload(pb.VerifyFileHeader(filename=name)).evidence.file_sha256
    chan.close()
    # what `prov verify` sends for a name of Linux's longest, 255 bytes
    longest = tmp_path / ("\u00e9" * 127 + ".")
    longest.write_bytes(data)
    with ProvenanceClient(shared.address, timeout=60) as c:
        assert c.verify_file(longest).evidence.file.sha256 == hashlib.sha256(data).digest()


def test_chunk_hashes_without_a_sidecar_are_refused(
    shared_client: ProvenanceClient, tmp_path: Path
) -> None:
    """A header's ``chunk_hashes`` are a video sidecar's chunk list, checked against its
    signed chunk root: sent without the sidecar they are refused, INVALID_ARGUMENT saying
    so, through our client as through a bare one. Before, they were dropped unread and
    the file judged without them (UNSIGNED for an unlogged file), the caller never told."""
    path = tmp_path / "rocket.jpg"
    path.write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    with pytest.raises(TransportError) as got:
        shared_client.verify_file(path, None, chunk_hashes=[b"\x01" * 32] * 2)
    assert got.value.code == "INVALID_ARGUMENT", got.value
    assert "chunk_hashes (2 hashes) but no sidecar" in str(got.value), got.value
    assert shared_client.verify_file(path).status is Verdict.UNSIGNED  # without: judged


@pytest.mark.parametrize("method", ["VerifyFile", "DetectFile"])
def test_an_upload_message_over_the_limit_once_decompressed_logs_no_traceback(
    tmp_path: Path, method: str
) -> None:
    """A gzip-compressed data message that inflates past the 8 MiB message limit is
    refused by grpc core (RESOURCE_EXHAUSTED) after the header was read: the handler sees
    the stream end as if the client had sent it all, and the call may be over already.
    It ends quietly, its slot given back, and the next upload is judged. Before,
    often (a race with grpc core; 12 calls here, so at least one lost
    it): "ERROR ... unexpected error in VerifyFile" and three tracebacks in the log
    (grpc's ExecuteBatchError sending the initial metadata, then
    GRPC_CALL_ERROR_TOO_MANY_OPERATIONS aborting), one set per such call."""
    srv = start_server(tmp_path / "prov.db")
    try:
        msgs = [
            pb.VerifyFileChunk(header=pb.VerifyFileHeader(filename="bomb.jpg")),
            pb.VerifyFileChunk(data=bytes(9 << 20)),  # about 9 KiB gzipped
        ]
        with grpc.insecure_channel(srv.address, compression=grpc.Compression.Gzip) as chan:
            call = getattr(rpc.VerificationStub(chan), method)
            for _ in range(12):
                with pytest.raises(grpc.RpcError) as exc:
                    call(iter(msgs), timeout=60)
                assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.value
        with ProvenanceClient(srv.address, timeout=60) as c:
            report = c.verify_file(SAMPLES / "rocket.jpg")
        assert report.status == Verdict.UNSIGNED
    finally:
        srv.stop()
    log = srv.stderr()
    assert "Traceback" not in log, log
    assert "unexpected error" not in log, log


def test_an_upload_cut_short_by_a_message_over_the_limit_once_decompressed_logs_no_traceback(
    tmp_path: Path,
) -> None:
    """When grpc core refuses an upload's message that inflates past the 8 MiB message
    limit (RESOURCE_EXHAUSTED to its client), the handler sees the request stream end
    early: a header that announced the file's size then finds it truncated, and a header
    message that was itself refused leaves no header. Either refusal goes to a call grpc
    has ended already: it ends quietly, its slot given back, and the next upload is
    judged. Before, each such call logged "Unexpected [ExecuteBatchError]" and two
    tracebacks at ERROR (aborting with the refusal on the ended call)."""
    srv = start_server(tmp_path / "prov.db")
    try:
        sized = pb.VerifyFileHeader(filename="bomb.jpg", size_bytes=9 << 20)
        uploads = (
            [pb.VerifyFileChunk(header=sized), pb.VerifyFileChunk(data=bytes(9 << 20))],
            [pb.VerifyFileChunk(header=pb.VerifyFileHeader(filename="x" * (9 << 20)))],
        )
        with grpc.insecure_channel(srv.address, compression=grpc.Compression.Gzip) as chan:
            stub = rpc.VerificationStub(chan)
            for call in (stub.VerifyFile, stub.DetectFile):
                for msgs in uploads:
                    for _ in range(3):
                        with pytest.raises(grpc.RpcError) as exc:
                            call(iter(msgs), timeout=60)
                        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.value
        with ProvenanceClient(srv.address, timeout=60) as c:
            assert c.verify_file(SAMPLES / "rocket.jpg").status == Verdict.UNSIGNED
    finally:
        srv.stop()
    log = srv.stderr()
    assert "Traceback" not in log, log
    assert "Unexpected" not in log and "unexpected error" not in log, log


def test_a_revoked_key_enrolled_again_with_a_new_token_is_told_of_its_revocation(
    client: ProvenanceClient,
) -> None:
    """A key enrolled, then revoked, offered again with a fresh token is refused
    (PERMISSION_DENIED) naming its revocation and the way on, as a replay of its first
    enrollment is. Before: only "device ID is already enrolled", as if the
    key still served."""
    key = enroll_key(client)
    client.revoke(key.key_id, "lost")
    token, _ = client.create_enrollment_token()
    with pytest.raises(TransportError) as exc:
        client.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    said = str(exc.value)
    assert _code(exc) == "PERMISSION_DENIED", said
    assert f"device {key.key_id.hex()} was enrolled at " in said, said
    assert "its key revoked at " in said and "a revoked key cannot enroll again" in said, said
    assert "enroll a new key" in said, said
    # a key that still serves is told so as before
    token, _ = client.create_enrollment_token()
    other = enroll_key(client)
    with pytest.raises(TransportError) as exc:
        client.enroll(
            token, other.public_key, sign_payload(other, PAYLOAD_TYPE_ENROLL, token.encode())
        )
    assert f"device {other.key_id.hex()} is already enrolled" in str(exc.value), exc.value


def test_a_sidecar_receipt_that_cannot_be_read_is_noted_not_fatal(
    client: ProvenanceClient, server: ServerProc
) -> None:
    """A VerifyFile header whose sidecar receipt holds an integration time no timestamp
    can hold (2^62 s) gets the file's verdict, with a note that the receipt was not
    read, as a receipt that does not verify gets one (before, the whole call
    was refused INVALID_ARGUMENT after the upload: "the receipt's integration time is
    out of range ...", the verdict of a logged file lost over a damaged sidecar)."""
    data = (SAMPLES / "rocket.jpg").read_bytes()
    key = enroll_key(client)
    sidecar = signed_claim(key, 1, sha=hashlib.sha256(data).digest())
    receipt, _ = client.submit(sidecar)
    bad = wire.receipt_to_pb(receipt)
    bad.integrated_at.seconds = 1 << 62
    header = pb.VerifyFileHeader(
        filename="rocket.jpg", sidecar=wire.signed_to_pb(sidecar), sidecar_receipt=bad
    )
    with grpc.insecure_channel(server.address) as chan:
        report = rpc.VerificationStub(chan).VerifyFile(
            iter([pb.VerifyFileChunk(header=header), pb.VerifyFileChunk(data=data)]), timeout=60
        )
    assert report.status == pb.SIGNED_ORIGINAL, report
    notes = [r for r in report.reasons if "the sidecar's receipt cannot be read" in r]
    assert len(notes) == 1, report.reasons
    assert "integration time is out of range (4611686018427387904 s" in notes[0], notes
    assert notes[0].endswith("; not used"), notes


def test_a_revocation_reason_with_control_or_format_characters_is_refused(
    client: ProvenanceClient,
) -> None:
    """A revocation reason is logged for good and shown beside the device's verdicts: one
    holding an escape sequence, a line feed or a bidirectional override is refused
    (INVALID_ARGUMENT, naming the character and where), as a device's label is, and
    nothing is revoked; accents and emoji are kept. Before, all three were
    logged as given."""
    key = enroll_key(client)
    for reason, said in (
        ("lost\x1b[2J", "a control character (U+001B) at character 5"),
        ("lost\nfound", "a control character (U+000A) at character 5"),
        ("\u202elost", "a format character (U+202E) at character 1"),
    ):
        with pytest.raises(TransportError) as exc:
            client.revoke(key.key_id, reason)
        assert _code(exc) == "INVALID_ARGUMENT", exc.value
        assert f"the revocation reason holds {said}: give a reason of printable" in str(
            exc.value
        ), exc.value
    assert not client.get_device(key.key_id).revoked
    device, _ = client.revoke(key.key_id, "perdu à la gare 🚉")
    assert device.revoked and device.revocation_reason == "perdu à la gare 🚉"


def test_a_malformed_message_to_the_reflection_stream_is_invalid_argument(
    tmp_path: Path,
) -> None:
    """grpc's server reflection (a bidirectional stream, not ours) sent bytes that are no
    ServerReflectionRequest is answered INVALID_ARGUMENT in the words every other method
    gets, and the server logs no traceback. Before: UNKNOWN "Unexpected
    <class 'provenance.core.errors.ClaimError'>: ..." and a traceback per call."""
    srv = start_server(tmp_path / "prov.db")
    try:
        path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        with grpc.insecure_channel(srv.address) as chan:
            call = chan.stream_stream(
                path, request_serializer=lambda b: b, response_deserializer=lambda b: b
            )
            for messages in ([b"\xff\xff\xff"], [b"", b"\xff\xff"]):
                with pytest.raises(grpc.RpcError) as exc:
                    list(call(iter(messages), timeout=20))
                assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value
                assert str(exc.value.details()).startswith(
                    f"malformed request to {path}: its bytes are not a valid"
                    " ServerReflectionRequest message"
                ), exc.value
            # a well-formed request is still answered
            listed = list(call(iter([b"\x3a\x00"]), timeout=20))  # list_services: ""
            assert len(listed) == 1 and b"provenance.v1.Verification" in listed[0], listed
    finally:
        srv.stop()
    log = srv.stderr()
    assert "Traceback" not in log, log
