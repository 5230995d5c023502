"""The gRPC shell around `ProvenanceService`: servicers, limits, admin auth, health,
reflection, and the one mapping from our errors to gRPC status codes.

`create_server(address, service, ...)` returns a started server and its bound port
(bind port 0 in tests); `prov serve` adds signal handling around it.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from provenance import wire
from provenance.dihedral import DIHEDRAL_TURNS
from provenance.errors import (
    AuthError,
    ClaimError,
    DetectorError,
    EnrollmentError,
    KeyMaterialError,
    LogError,
    LogIntegrityError,
    MediaError,
    MediaTooLargeError,
    ProofError,
    ProvenanceError,
    RegistryError,
    RevokedKeyError,
    SequenceError,
    SignatureError,
    StorageError,
    UnknownDeviceError,
)
from provenance.inspect import InspectConfig, Upload
from provenance.pipeline import DetectorBackend, VerificationPipeline, sidecar_chunk_size
from provenance.rpc_input import MalformedRequestInterceptor
from provenance.service import ProvenanceService
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.verify import FileFacts

log = logging.getLogger(__name__)

#: Largest gRPC message either side accepts, in bytes. Uploads travel in 1 MiB chunks.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: Upload chunk size the clients use, in bytes.
UPLOAD_CHUNK_BYTES = 1024 * 1024
#: Most queries in one Lookup call.
MAX_LOOKUP_QUERIES = 1000

# Most specific first: the first matching class decides the status code.
_STATUS: tuple[tuple[type[ProvenanceError], grpc.StatusCode], ...] = (
    (MediaTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (MediaError, grpc.StatusCode.INVALID_ARGUMENT),
    (ClaimError, grpc.StatusCode.INVALID_ARGUMENT),
    (KeyMaterialError, grpc.StatusCode.INVALID_ARGUMENT),
    (SignatureError, grpc.StatusCode.UNAUTHENTICATED),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (UnknownDeviceError, grpc.StatusCode.NOT_FOUND),
    (RevokedKeyError, grpc.StatusCode.PERMISSION_DENIED),
    (EnrollmentError, grpc.StatusCode.PERMISSION_DENIED),
    (SequenceError, grpc.StatusCode.FAILED_PRECONDITION),
    (RegistryError, grpc.StatusCode.FAILED_PRECONDITION),
    (LogIntegrityError, grpc.StatusCode.DATA_LOSS),
    (ProofError, grpc.StatusCode.FAILED_PRECONDITION),
    (LogError, grpc.StatusCode.OUT_OF_RANGE),
    (DetectorError, grpc.StatusCode.UNAVAILABLE),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
)


def status_for(error: ProvenanceError) -> grpc.StatusCode:
    """The gRPC status code for one of our errors (INTERNAL for any other)."""
    for cls, code in _STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


F = TypeVar("F", bound=Callable[..., Any])


def _rpc(fn: F) -> F:
    """Turn our errors into status codes; never let an unexpected error take the server down."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except ProvenanceError as e:
            context.abort(status_for(e), str(e))
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the server logged the details")

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class ServerConfig:
    """Admin credential, input limits and C2PA reading, and the optional detector."""

    admin_token: str | None = None
    inspect: InspectConfig = InspectConfig()
    detector: DetectorBackend | None = None
    max_workers: int = 16


def _require_admin(context: grpc.ServicerContext, token: str | None) -> None:
    if not token:
        raise AuthError("admin operations are disabled: the server has no admin token configured")
    md = dict(context.invocation_metadata())
    got = str(md.get("authorization", ""))
    if not got.startswith("Bearer "):
        raise AuthError("admin credential missing: set PROV_ADMIN_TOKEN")
    if not hmac.compare_digest(got[len("Bearer ") :].encode(), token.encode()):
        raise AuthError("admin credential is wrong")


class RegistryServicer(rpc.DeviceRegistryServicer):
    def __init__(self, service: ProvenanceService, config: ServerConfig) -> None:
        self.s = service
        self.c = config

    @_rpc
    def CreateEnrollmentToken(self, request: Any, context: grpc.ServicerContext) -> Any:
        _require_admin(context, self.c.admin_token)
        ttl = timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None
        token, expires = (
            self.s.create_enrollment_token(ttl, request.label)
            if ttl
            else self.s.create_enrollment_token(label=request.label)
        )
        return pb.CreateEnrollmentTokenResponse(token=token, expires_at=wire.ts_to_pb(expires))

    @_rpc
    def Enroll(self, request: Any, context: grpc.ServicerContext) -> Any:
        d, chain = self.s.enroll(
            request.token,
            bytes(request.public_key),
            bytes(request.proof_of_possession),
            request.certificate_chain_pem,
        )
        return pb.EnrollResponse(device=wire.device_to_pb(d), certificate_chain_pem=chain)

    @_rpc
    def Revoke(self, request: Any, context: grpc.ServicerContext) -> Any:
        _require_admin(context, self.c.admin_token)
        if not request.reason.strip():
            raise ClaimError("a revocation needs a reason")
        when = (
            wire.ts_from_pb(request.effective_at, "the revocation time")
            if request.HasField("effective_at")
            else None
        )
        d = self.s.revoke(bytes(request.device_id), request.reason, when)
        return pb.RevokeResponse(device=wire.device_to_pb(d))

    @_rpc
    def GetDevice(self, request: Any, context: grpc.ServicerContext) -> Any:
        return wire.device_to_pb(self.s.get_device(bytes(request.device_id)))


class CapturesServicer(rpc.CapturesServicer):
    def __init__(self, service: ProvenanceService) -> None:
        self.s = service

    @_rpc
    def SubmitCapture(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.HasField("signed_claim"):
            raise ClaimError("the request carries no signed claim")
        res = self.s.submit(wire.signed_from_pb(request.signed_claim))
        return pb.SubmitCaptureResponse(
            receipt=wire.receipt_to_pb(res.receipt), duplicate=res.duplicate
        )


class VerificationServicer(rpc.VerificationServicer):
    def __init__(self, service: ProvenanceService, config: ServerConfig) -> None:
        self.s = service
        self.c = config
        self.p = VerificationPipeline(service, config.inspect, config.detector)

    def _receive(self, request_iterator: Iterator[Any], upload: Upload) -> Any:
        """Read the header and every data chunk into ``upload``; return the header.

        When the header's sidecar claims a chunked (video) binding, the chunk hashes are
        computed as the bytes arrive."""
        it = iter(request_iterator)
        first = next(it, None)
        if first is None or first.WhichOneof("part") != "header":
            raise MediaError("the upload must start with a header message")
        header = first.header
        if header.HasField("sidecar") and header.chunk_hashes:
            chunk = sidecar_chunk_size(wire.signed_from_pb(header.sidecar))
            if chunk:
                upload.hash_chunks(chunk)
        if header.size_bytes > upload.max_bytes:
            raise MediaTooLargeError(
                f"file is {header.size_bytes} bytes; the limit is {upload.max_bytes} bytes"
            )
        for chunk in it:
            if chunk.WhichOneof("part") != "data":
                raise MediaError("a second header arrived in the middle of the upload")
            upload.write(chunk.data)
        if header.size_bytes and upload.size != header.size_bytes:
            raise MediaError(
                f"truncated upload: the header announced {header.size_bytes} bytes,"
                f" {upload.size} arrived"
            )
        return header

    @_rpc
    def VerifyFile(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        with Upload(self.c.inspect.limits.max_bytes) as upload:
            header = self._receive(request_iterator, upload)
            sidecar = wire.signed_from_pb(header.sidecar) if header.HasField("sidecar") else None
            chunks = tuple(bytes(h) for h in header.chunk_hashes)
            receipt = (
                wire.receipt_from_pb(header.sidecar_receipt)
                if sidecar is not None and header.HasField("sidecar_receipt")
                else None
            )
            report = self.p.verify_upload(
                upload, sidecar, chunks, header.detect, context.time_remaining, receipt
            )
        return wire.report_to_pb(report)

    @_rpc
    def DetectFile(self, request_iterator: Iterator[Any], context: grpc.ServicerContext) -> Any:
        with Upload(self.c.inspect.limits.max_bytes) as upload:
            self._receive(request_iterator, upload)
            return wire.detector_to_pb(self.p.detect_upload(upload))

    @_rpc
    def Lookup(self, request: Any, context: grpc.ServicerContext) -> Any:
        if len(request.queries) > MAX_LOOKUP_QUERIES:
            raise ClaimError(
                f"{len(request.queries)} queries in one call; the limit is {MAX_LOOKUP_QUERIES}"
            )
        out = pb.LookupResponse()
        for q in request.queries:
            if len(q.sha256) != 32:
                raise ClaimError(f"query {q.ref!r}: sha256 must be 32 bytes")
            facts = FileFacts(
                sha256=bytes(q.sha256),
                size=0,
                media_type=q.media_type,
                content_sha256=bytes(q.content_sha256),
                soft_bindings=tuple(wire.soft_from_pb(s) for s in q.soft_bindings),
                dihedral_soft_bindings=tuple(
                    wire.soft_from_pb(s) for s in q.dihedral_soft_bindings[:DIHEDRAL_TURNS]
                ),
            )
            out.results.append(
                pb.LookupResult(ref=q.ref, report=wire.report_to_pb(self.p.lookup(facts)))
            )
        return out


class LogServicer(rpc.LogServicer):
    def __init__(self, service: ProvenanceService) -> None:
        self.s = service

    @_rpc
    def GetCheckpoint(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.GetCheckpointResponse(checkpoint=self.s.latest_checkpoint())

    @_rpc
    def GetInclusionProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        which = request.WhichOneof("leaf")
        if which is None:
            raise ClaimError("give a leaf index or a leaf hash")
        idx, size, proof, lh = self.s.inclusion_proof(
            request.tree_size,
            index=request.leaf_index if which == "leaf_index" else None,
            leaf_hash=bytes(request.leaf_hash) if which == "leaf_hash" else None,
        )
        return pb.GetInclusionProofResponse(
            leaf_index=idx, tree_size=size, proof=proof, leaf_hash=lh
        )

    @_rpc
    def GetConsistencyProof(self, request: Any, context: grpc.ServicerContext) -> Any:
        first, second, proof = self.s.consistency_proof(request.first_size, request.second_size)
        return pb.GetConsistencyProofResponse(first_size=first, second_size=second, proof=proof)

    @_rpc
    def GetEntries(self, request: Any, context: grpc.ServicerContext) -> Any:
        entries, nxt = self.s.entries(request.start, request.limit)
        return pb.GetEntriesResponse(entries=entries, start=request.start, next=nxt)

    @_rpc
    def GetLogKey(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.GetLogKeyResponse(
            verifier_key=self.s.signer.verifier_key(), origin=self.s.signer.name
        )


def create_server(
    address: str, service: ProvenanceService, config: ServerConfig
) -> tuple[grpc.Server, int]:
    """Build and start a gRPC server on ``address`` ("host:port"; port 0 picks one).

    Returns (server, bound port). Raises ProvenanceError when the address cannot be bound.
    """
    from provenance import metrics

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="rpc"),
        interceptors=[MalformedRequestInterceptor(), metrics.MetricsInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    rpc.add_DeviceRegistryServicer_to_server(RegistryServicer(service, config), server)
    rpc.add_CapturesServicer_to_server(CapturesServicer(service), server)
    rpc.add_VerificationServicer_to_server(VerificationServicer(service, config), server)
    rpc.add_LogServicer_to_server(LogServicer(service), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [pb.DESCRIPTOR.services_by_name[n].full_name for n in pb.DESCRIPTOR.services_by_name]
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as e:
        raise ProvenanceError(f"cannot listen on {address}: {e}") from e
    if port == 0:
        raise ProvenanceError(f"cannot listen on {address}: the address is in use or invalid")
    server.start()
    return server, port
