"""A typed client for the provenance gRPC service.

Every call has a deadline and explicit message-size limits; gRPC failures become
`TransportError` (with the status code name) so callers branch on our errors only.
Files are uploaded in 1 MiB chunks, never read whole.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from clients.cited import check_cited
from clients.defaults import DEFAULT_SERVER as DEFAULT_SERVER  # defined here before
from clients.defaults import default_server as default_server  # defined here before
from clients.derived import check_derived, with_check
from clients.files import open_regular, still_the_file
from provenance.core.binding import PerceptualHash, Sha256Stream
from provenance.core.claims import Device, Receipt, SignedClaim
from provenance.core.errors import (
    ConfigError,
    FileChangedError,
    MediaError,
    ProvenanceError,
    TransportError,
)
from provenance.core.files import file_identity
from provenance.core.ports import bare_host, blank_problem, port_number
from provenance.core.verify import VerificationReport
from provenance.log.checkpoint import NoteVerifier
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from provenance.wire.contract import (
    MAX_MESSAGE_BYTES,
    RECEIVED_KEY,
    RETRY_AFTER_KEY,
    SERVER_ERROR_KEY,
    UPLOAD_CHUNK_BYTES,
)
from provenance.wire.sidecar import Sidecar
from provenance.witness import WitnessStatus

#: What a call on a closed `ProvenanceClient` says (TransportError, CANCELLED).
CLIENT_CLOSED = "this client was closed; open a new ProvenanceClient"
#: Deadline of a small call, in seconds.
DEFAULT_TIMEOUT = 30.0
#: Assumed slowest upload rate when sizing an upload's deadline, in bytes per second.
MIN_UPLOAD_RATE = 5 * 1024 * 1024
#: Extra deadline for verifying a file the server must decode (video frames), seconds.
VERIFY_DECODE_SECONDS = 180.0
#: Slowest link, bytes per second, over which an upload's bytes still on their way to the
#: server when gRPC has taken the last message are waited for (`_AnswerWatch`): the
#: flow-control window and socket buffers hold megabytes (a 6 MB file through a 100 KB/s
#: link: its last message taken after 21 s, the server had it all 39 s later).
SLOW_LINK_RATE = 100_000


def check_address(address: str) -> str:
    """``address`` if it is HOST:PORT with a port in 1..65535 (ASCII digits, see
    `port_number`) and a host (an IPv6 one in brackets, see `bare_host`); raises
    ConfigError; one holding a blank is said so (`blank_problem`)."""
    if (blank := blank_problem(address)) is not None:
        raise ConfigError(f"server address {blank}")
    host, sep, port = address.rpartition(":")
    number = port_number(port)
    if not sep or not bare_host(host) or number is None or not 0 < number < 65536:
        raise ConfigError(
            f"server address {address!r} is not HOST:PORT (port 1-65535; an IPv6 address"
            " in brackets, [::1]:50051)"
        )
    return address


@dataclass(frozen=True)
class Query:
    """One file described by its hashes for `ProvenanceClient.lookup`: ``ref`` is echoed
    back; ``sha256`` 32 bytes; ``soft_bindings`` its PDQ hashes (video: per sampled frame,
    with times); ``content_sha256`` the SHA-256 without a C2PA manifest store, if any;
    ``pdq_dihedral`` an image's PDQ hashes packed, 32 bytes each, at most 8 (its own, then
    those of its 7 rotations and mirror images: `provenance.core.dihedral`, so rotated
    copies are found), all of quality ``pdq_quality`` (0..100), in place of
    ``soft_bindings`` (the server refuses a query with both, or a packed field of another
    length: LookupQuery in proto/provenance/v1/provenance.proto); ``video_turned`` a
    video's frames' 7 rotations and mirror images, packed 32 bytes each, turn by turn, each
    turn the frames of ``soft_bindings`` in order (`provenance.media.video.decode.video_turns`),
    so turned copies of a signed video are found."""

    ref: str
    sha256: bytes
    soft_bindings: tuple[PerceptualHash, ...] = ()
    media_type: str = ""
    content_sha256: bytes = b""
    pdq_dihedral: bytes = b""
    pdq_quality: int = 0
    video_turned: bytes = b""


def _lookup_request(queries: Sequence[Query], per_query_errors: bool) -> pb.LookupRequest:
    """The LookupRequest of ``queries``, its messages added in place (``add``): about two
    thirds of the cost of building each query and soft binding apart and copying it in.
    A photo's 8 hashes go packed in one field (``pdq_dihedral``), not as 8 messages."""
    request = pb.LookupRequest(per_query_errors=per_query_errors)
    add = request.queries.add
    for q in queries:
        m = add(
            ref=q.ref,
            sha256=q.sha256,
            media_type=q.media_type,
            content_sha256=q.content_sha256,
            pdq_dihedral=q.pdq_dihedral,
            pdq_quality=q.pdq_quality,
            video_turned=q.video_turned,
        )
        if q.soft_bindings:
            field = m.soft_bindings
            for h in q.soft_bindings:
                field.add(
                    algorithm=h.algorithm,
                    hash=h.hash,
                    quality=h.quality,
                    timestamp_seconds=h.timestamp_seconds,
                )
    return request


@dataclass
class _UploadWatch:
    """What `ProvenanceClient._watched_upload`'s stream found once it ended: short, (bytes
    read, size announced) when the file ended before its size; changed, whether the file
    was written to or replaced while it was sent (`clients.files.still_the_file`)."""

    short: tuple[int, int] | None = None
    changed: bool = False
    sha256: bytes = b""  # of the bytes sent, once all were sent
    #: the file's `provenance.core.files.file_identity` when it was opened to be sent
    identity: tuple[int, int, int, int] | None = None


class ProvenanceClient:
    """Calls to one server. ``admin_token`` is sent as a bearer credential on admin calls.
    ``reconnect_s``: the longest wait between attempts to reach a server that is not
    answering (None: gRPC's own backoff, growing to 120 s), for a long-lived client such
    as the web page, which would otherwise answer 503 for a minute or more after its
    service came back.

    Each client connects on its own (a local subchannel pool): gRPC otherwise shares one
    connection per address among all the channels of a process, with its state, so a new
    client to an address where another client's calls were refused answered its first
    call at once with that client's "Connection refused" until the other's next try, up
    to 120 s later, also when a server listened there by then."""

    def __init__(
        self,
        address: str,
        admin_token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        reconnect_s: float | None = None,
    ) -> None:
        self.address = check_address(address)
        self.admin_token = admin_token
        self.timeout = timeout
        options: list[tuple[str, int]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if reconnect_s is not None:
            most = max(1, round(reconnect_s * 1000))
            options += [
                ("grpc.initial_reconnect_backoff_ms", min(1000, most)),
                ("grpc.max_reconnect_backoff_ms", most),
            ]
        self._channel = grpc.insecure_channel(address, options=options)
        self._registry = rpc.DeviceRegistryStub(self._channel)
        self._captures = rpc.CapturesStub(self._channel)
        self._verification = rpc.VerificationStub(self._channel)
        self._log = rpc.LogStub(self._channel)
        self._closed = False

    @property
    def _who(self) -> str:
        """This server, as an error about its answer names it."""
        return f"the server at {self.address}"

    def close(self) -> None:
        """Close the connection. A call made afterwards, and one under way that this cuts
        short, raises TransportError (CANCELLED) saying this client was closed."""
        self._closed = True
        self._channel.close()

    def _check_open(self) -> None:
        """Raise TransportError (CANCELLED) if this client was closed (else gRPC's bare
        ValueError, "Cannot invoke RPC on closed channel!"); marked ``from_grpc`` like
        gRPC's own failures: no sentence of the server's, so the web keeps it the
        operator's."""
        if self._closed:
            raise TransportError(CLIENT_CLOSED, "CANCELLED", from_grpc=True)

    def _failed(self, e: grpc.RpcError, timeout: float | None) -> TransportError:
        """`_transport_error` of ``e``, but for a call cut short by this client's own
        `close` (CANCELLED once closed), which says so rather than blame the server."""
        if self._closed and getattr(e, "code", lambda: None)() == grpc.StatusCode.CANCELLED:
            return TransportError(
                f"the call to {self._who} was cancelled: this client was closed while it"
                " ran; open a new ProvenanceClient",
                "CANCELLED",
                from_grpc=True,
            )
        return _transport_error(e, self.address, timeout)

    def __enter__(self) -> ProvenanceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: Any, request: Any, admin: bool = False, timeout: float | None = None
    ) -> Any:
        md = []
        if admin:
            if not self.admin_token:
                raise TransportError(
                    "this is an admin command: set PROV_ADMIN_TOKEN to the server's admin token",
                    "UNAUTHENTICATED",
                )
            md.append(("authorization", f"Bearer {self.admin_token}"))
        timeout = timeout or self.timeout
        self._check_open()
        try:
            return method(request, timeout=timeout, metadata=md or None)
        except grpc.RpcError as e:
            raise self._failed(e, timeout) from e
        except ValueError:  # gRPC's own, the channel closed since `_check_open`
            self._check_open()
            raise

    # ---------------------------------------------------------------- registry

    def create_enrollment_token(
        self, ttl_seconds: int = 0, label: str = ""
    ) -> tuple[str, datetime]:
        r = self._call(
            self._registry.CreateEnrollmentToken,
            pb.CreateEnrollmentTokenRequest(ttl_seconds=ttl_seconds, label=label),
            admin=True,
        )
        return r.token, wire.ts_from_pb(r.expires_at)

    def enroll(
        self,
        token: str,
        public_key: bytes,
        proof_of_possession: bytes,
        certificate_pem: str = "",
        log_key: str = "",
        signed_at: datetime | None = None,
    ) -> tuple[Device, str]:
        """Enroll a key; returns the device and its X.509 chain (PEM, "" when none).
        A certificate enrollment (no token) names the log (``log_key``, its verifier key)
        and the time (``signed_at``, UTC) its proof signs
        (`provenance.core.registry.certificate_enrollment_proof`)."""
        r = self._call(
            self._registry.Enroll,
            pb.EnrollRequest(
                token=token,
                public_key=public_key,
                proof_of_possession=proof_of_possession,
                certificate_chain_pem=certificate_pem,
                log_key=log_key,
                signed_at=wire.ts_to_pb(signed_at),
            ),
        )
        return wire.device_from_pb(r.device), r.certificate_chain_pem

    def revoke(
        self, device_id: bytes, reason: str, effective_at: datetime | None = None
    ) -> tuple[Device, bool]:
        """Revoke a device key from ``effective_at`` (None: the server's now); returns
        (the device after the call, already_revoked): already_revoked is True when the
        key was already revoked at or before that time, so the server logged nothing and
        the device holds the standing revocation (a Revoke is idempotent)."""
        r = self._call(
            self._registry.Revoke,
            pb.RevokeRequest(
                device_id=device_id, reason=reason, effective_at=wire.ts_to_pb(effective_at)
            ),
            admin=True,
        )
        return wire.device_from_pb(r.device), r.already_revoked

    def get_device(self, device_id: bytes) -> Device:
        return wire.device_from_pb(
            self._call(self._registry.GetDevice, pb.GetDeviceRequest(device_id=device_id))
        )

    # ---------------------------------------------------------------- captures

    def submit(self, signed: SignedClaim) -> tuple[Receipt, bool]:
        """Submit a signed claim; returns (receipt, duplicate)."""
        r = self._call(
            self._captures.SubmitCapture,
            pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed)),
        )
        return wire.receipt_from_pb(r.receipt), r.duplicate

    # ---------------------------------------------------------------- verification

    def _upload(
        self,
        path: Path,
        header: pb.VerifyFileHeader,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[Iterator[pb.VerifyFileChunk], float]:
        """The chunk stream for ``path`` (header first) and a deadline sized to it, as
        `_watched_upload` makes them (for callers that send the stream themselves)."""
        stream, timeout, _ = self._watched_upload(path, header, progress)
        return stream, timeout

    def _watched_upload(
        self,
        path: Path,
        header: pb.VerifyFileHeader,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[Iterator[pb.VerifyFileChunk], float, _UploadWatch]:
        """The chunk stream for ``path`` (header first), a deadline sized to it, and an
        `_UploadWatch` that says, once the stream has ended, whether the file got shorter
        or changed while it was sent (`_sent` says so); ``progress(sent, size)`` is
        called as each chunk is taken (in gRPC's thread).

        The file is opened here (a FIFO or device raises NotRegularFileError at once,
        never blocks) and exactly the size found then is sent, so a file growing during
        the upload cannot make it endless. The bytes sent are hashed as they go; once all
        are sent, the file must still be the one opened, as ``fstat`` found it then, and
        still hold bytes of that hash (`clients.files.still_the_file`, a second read of
        the file): else a writer changed it while it was read, the server judged bytes
        the file may never have held, and the watch's ``changed`` is set. Raises
        MediaError if it cannot be opened; TransportError (CANCELLED) if this client was
        closed.
        """
        self._check_open()
        try:
            f = open_regular(path)
        except OSError as e:
            raise MediaError(f"cannot read {path}: {e.strerror or e}") from e
        before = os.fstat(f.fileno())
        size = before.st_size
        header.filename = path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        header.size_bytes = size
        watch = _UploadWatch(identity=file_identity(before))

        def chunks() -> Iterator[pb.VerifyFileChunk]:
            with f:
                yield pb.VerifyFileChunk(header=header)
                left = size
                sent = Sha256Stream()
                while left > 0 and (block := f.read(min(UPLOAD_CHUNK_BYTES, left))):
                    left -= len(block)
                    sent.update(block)
                    yield pb.VerifyFileChunk(data=block)
                    if progress is not None:
                        progress(size - left, size)
                if left > 0:
                    watch.short = (size - left, size)
                else:
                    watch.sha256 = sent.digest()
                    try:
                        watch.changed = not still_the_file(path, f, before, watch.sha256)
                    except OSError:  # the bytes sent cannot be confirmed
                        watch.changed = True

        return chunks(), self.timeout + VERIFY_DECODE_SECONDS + size / MIN_UPLOAD_RATE, watch

    def _sent(
        self,
        method: Any,
        path: Path,
        upload: tuple[Iterator[pb.VerifyFileChunk], float, _UploadWatch],
        doing: str = "verified",
    ) -> Any:
        """The answer of ``method`` to the `_watched_upload` of ``path``. Raises
        TransportError as `_call`, but for a file that got shorter while it was sent,
        which is said so (before, the server's "truncated upload: the header announced N
        bytes, M arrived", which reads as a network fault), and FileChangedError for a
        file changed while it was sent, whatever the server answered: "FILE changed
        while it was being verified" (``doing``: "scored" for DetectFile; before, the
        server's verdict on bytes the file may never have held, such as TAMPERED for a
        signed file being written to). A server that keeps a message waiting, or has
        not said it has the whole file (`RECEIVED_KEY`), for the client's timeout (that,
        plus the time the bytes sent take over a `SLOW_LINK_RATE` link) is given up on
        then (DEADLINE_EXCEEDED, "did not answer within N s"), and its decoding gets
        `VERIFY_DECODE_SECONDS` more from that word (`_AnswerWatch`;
        before, only the call's deadline: 219 s for a photo to a server that never
        answered)."""
        stream, timeout, watch = upload
        answers = _AnswerWatch(self.timeout, self.timeout + VERIFY_DECODE_SECONDS)

        def offered() -> Iterator[pb.VerifyFileChunk]:
            for message in stream:
                yield from _offered(answers, message)
            answers.sent_all()

        try:
            try:
                call = method.future(offered(), timeout=timeout)
                answer = answers.result(call, self.address)
            except grpc.RpcError as e:
                raise self._failed(e, timeout) from e
            except ValueError:  # gRPC's own, the channel closed since `_watched_upload`
                self._check_open()
                raise
        except TransportError as e:
            if watch.short is None:
                raise
            read, size = watch.short
            raise TransportError(
                f"{path} got shorter while it was sent ({read:,} of its {size:,} bytes were"
                " read): it is being written or was cut; send it again once it is complete",
                e.code,
            ) from None
        if watch.changed:
            raise FileChangedError(
                f"{path} changed while it was being {doing} (written to or replaced while"
                " it was read and sent, so the server judged bytes it may never have held):"
                f" {'verify' if doing == 'verified' else 'send'} it again once nothing writes it"
            )
        return answer

    def verify_file(
        self,
        path: Path,
        sidecar: SignedClaim | None = None,
        detect: bool = False,
        chunk_hashes: Sequence[bytes] = (),
        receipt: Receipt | None = None,
        public_key: bytes = b"",
        progress: Callable[[int, int], None] | None = None,
    ) -> VerificationReport:
        """Upload ``path`` in chunks and return the server's report (``chunk_hashes``: a
        video sidecar's chunk list, so the server can name damaged byte ranges;
        ``receipt``: the sidecar's log receipt, so a log rollback can be named;
        ``public_key``: the raw key the sidecar carries, so a sidecar whose key the log
        has not enrolled can be told apart from a bad signature; ``progress(sent,
        size)``: called as the bytes go out). Raises ServerEvidenceError when the verdict
        rests on a claim that does not bind the bytes sent (`clients.cited.check_cited`),
        or a near copy's verdict on a claim whose soft binding does not match the file's
        pixels as hashed here (`clients.derived.check_derived`: only for such a verdict).
        A near copy's verdict is returned with ``pixels_checked`` True (matched here), or
        False and a last reason saying it was not checked here when the file is over this
        client's own limits (`clients.derived.with_check`, `NOT_CHECKED_HERE`)."""
        upload = self._watched_upload(
            path,
            pb.VerifyFileHeader(
                sidecar=wire.signed_to_pb(sidecar) if sidecar else None,
                detect=detect,
                chunk_hashes=list(chunk_hashes),
                sidecar_receipt=wire.receipt_to_pb(receipt) if sidecar and receipt else None,
                sidecar_public_key=public_key if sidecar else b"",
            ),
            progress,
        )
        report = wire.report_from_pb(
            self._sent(self._verification.VerifyFile, path, upload), self._who
        )
        check_cited(report, upload[2].sha256, path, self.address, identity=upload[2].identity)
        # over this client's limits: the server's word, marked (pixels_checked False)
        return with_check(report, check_derived(report, upload[2].sha256, path, self.address))

    def verify_with_sidecar(
        self,
        path: Path,
        sidecar: Sidecar | None,
        detect: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> VerificationReport:
        """`verify_file` with a whole FILE.prov sidecar (None: without one): its claim, the
        public key it carries, its receipt and a video's chunk hashes, as `prov verify`
        and `prov scan` send them. Raises as `verify_file`."""
        if sidecar is None:
            return self.verify_file(path, None, detect=detect, progress=progress)
        return self.verify_file(
            path,
            sidecar.signed_claim,
            detect=detect,
            chunk_hashes=sidecar.chunk_hashes,
            receipt=sidecar.receipt,
            public_key=sidecar.public_key,
            progress=progress,
        )

    def verify_stream(
        self,
        blocks: Iterable[bytes],
        filename: str,
        timeout: float,
        size: int = 0,
        sidecar: SignedClaim | None = None,
        detect: bool = False,
        chunk_hashes: Sequence[bytes] = (),
        flush_bytes: int = UPLOAD_CHUNK_BYTES,
        public_key: bytes = b"",
        receipt: Receipt | None = None,
        on_call: Callable[[grpc.Future[Any]], None] | None = None,
        answer_s: float | None = None,
        work_s: float | None = None,
    ) -> VerificationReport:
        """Verify a file whose bytes arrive from ``blocks`` (any sizes), so nothing holds
        the whole file. Bytes go out as soon as ``flush_bytes`` have gathered, in messages
        of at most `UPLOAD_CHUNK_BYTES` and at least ``flush_bytes`` (but the last): a
        slow source keeps the stream from going idle while the service's minimum message
        size (64 KiB by default) holds. ``size``: the file's length in bytes when known,
        else 0; ``timeout``: the call's deadline in seconds. Used by the web front-end,
        which relays uploads without storing them; ``public_key`` and ``receipt``: the
        raw key and the log receipt the sidecar carries, as in `verify_file`; ``on_call``: called with the call once
        it starts, so another thread may ``cancel()`` it (then ``blocks`` may simply
        end: nothing more is sent); ``answer_s``: the longest the server may keep the
        call waiting, in seconds (None: only ``timeout``): to take a message ready to go
        (time waiting for ``blocks`` is not counted, so a slow source is no stall), and
        after the last one, to say it has received the whole file (`RECEIVED_KEY`; that,
        plus the time the bytes sent take over a `SLOW_LINK_RATE` link);
        past it the call is cancelled, DEADLINE_EXCEEDED with ``waited_s`` set; ``work_s``
        (with ``answer_s``): the longest to wait for the answer once the server said it
        has the whole file (else once the whole file is sent), seconds (None: only ``timeout``, which counts from the call's start and
        so must allow for the slowest upload), past it the same. Raises
        TransportError with the server's status code name (CANCELLED when the call was
        cancelled)."""
        watch = _AnswerWatch(answer_s, work_s) if answer_s else None

        def chunks() -> Iterator[pb.VerifyFileChunk]:
            header = pb.VerifyFileHeader(
                filename=filename,
                size_bytes=size,
                sidecar=wire.signed_to_pb(sidecar) if sidecar else None,
                detect=detect,
                chunk_hashes=list(chunk_hashes),
                sidecar_receipt=wire.receipt_to_pb(receipt) if sidecar and receipt else None,
                sidecar_public_key=public_key if sidecar else b"",
            )
            yield from _offered(watch, pb.VerifyFileChunk(header=header))
            pending = bytearray()
            for block in blocks:
                pending += block
                while len(pending) >= flush_bytes:
                    n = min(len(pending), UPLOAD_CHUNK_BYTES)
                    yield from _offered(watch, pb.VerifyFileChunk(data=bytes(pending[:n])))
                    del pending[:n]
            if pending:
                yield from _offered(watch, pb.VerifyFileChunk(data=bytes(pending)))
            if watch is not None:
                watch.sent_all()

        self._check_open()
        try:
            call = self._verification.VerifyFile.future(chunks(), timeout=timeout)
        except ValueError:  # gRPC's own, the channel closed since `_check_open`
            self._check_open()
            raise
        if on_call is not None:
            on_call(call)
        try:
            if watch is None:
                return wire.report_from_pb(call.result(), self._who)
            return wire.report_from_pb(watch.result(call, self.address), self._who)
        except grpc.FutureCancelledError as e:
            raise TransportError("the upload was cancelled", "CANCELLED") from e
        except grpc.RpcError as e:
            raise self._failed(e, timeout) from e

    def detect_file(self, path: Path) -> dict[str, Any]:
        """Upload ``path`` and return only the server's advisory detector block."""
        upload = self._watched_upload(path, pb.VerifyFileHeader(detect=True))
        return wire.detector_from_pb(
            self._sent(self._verification.DetectFile, path, upload, "scored")
        )

    def lookup(self, queries: Sequence[Query]) -> list[tuple[str, VerificationReport]]:
        """Batch lookup by hashes; returns (ref, report) pairs. At most 1000 queries a call;
        video frames are matched in time order. Raises TransportError when the server
        refuses the call, also for one query it cannot answer (see `lookup_each`)."""
        r = self._call(self._verification.Lookup, _lookup_request(queries, False))
        return [(x.ref, wire.report_from_pb(x.report, self._who)) for x in r.results]

    def lookup_each(
        self, queries: Sequence[Query]
    ) -> list[tuple[str, VerificationReport | TransportError]]:
        """`lookup` with an answer per query: a query the server cannot answer (a
        malformed hash, more than 4096 hashes, a damaged log record) gets a TransportError
        in its place, its ``code`` the status the whole call would have failed with
        (INVALID_ARGUMENT, DATA_LOSS), and the others their reports. Raises TransportError
        when the server refuses the whole call (limits, time budget, unreachable)."""
        return [
            (ref, r if isinstance(r, TransportError) else wire.report_from_pb(r, self._who))
            for ref, r in self.lookup_wire(queries)
        ]

    def lookup_wire(
        self, queries: Sequence[Query]
    ) -> list[tuple[str, pb.VerificationReport | TransportError]]:
        """`lookup_each` with each report as the server sent it (a protobuf message, not
        converted): for callers that read a few fields of many reports (``prov scan``)."""
        r = self._call(self._verification.Lookup, _lookup_request(queries, True))
        return [
            (
                x.ref,
                TransportError(f"the server could not look it up: {x.error}", x.error_code)
                if x.error
                else x.report,
            )
            for x in r.results
        ]

    # ---------------------------------------------------------------- log

    def checkpoint(self, timeout: float | None = None) -> str:
        """The newest signed checkpoint (C2SP note text); ``timeout``: the call's deadline
        in seconds (None: the client's). Raises TransportError (OUT_OF_RANGE: an empty
        log)."""
        req = pb.GetCheckpointRequest()
        return str(self._call(self._log.GetCheckpoint, req, timeout=timeout).checkpoint)

    def cosigned_checkpoint(self) -> tuple[str, int, list[WitnessStatus]]:
        """(the newest checkpoint the server's witness quorum cosigned, "" when none yet;
        the server's quorum; each witness's status). TransportError FAILED_PRECONDITION
        when the server requests no cosignatures."""
        r = self._call(self._log.GetCheckpoint, pb.GetCheckpointRequest(cosigned=True))
        statuses = [WitnessStatus(w.name, w.url, w.size, w.problem) for w in r.witnesses]
        return str(r.checkpoint), int(r.quorum), statuses

    def log_key(self, timeout: float | None = None) -> tuple[str, str]:
        """(verifier key, origin) of the log; ``timeout``: the call's deadline in seconds
        (None: the client's). Raises TransportError (INTERNAL) when the server's answer
        is no verifier key (an empty answer: not a provenance server)."""
        r = self._call(self._log.GetLogKey, pb.GetLogKeyRequest(), timeout=timeout)
        try:
            NoteVerifier.from_vkey(r.verifier_key)
        except ProvenanceError as e:
            raise TransportError(
                f"{self._who} answered a log key that is no verifier key ({e}): is it a"
                " provenance server?",
                "INTERNAL",
                from_grpc=True,  # the server's fault, its address the operator's
            ) from None
        return r.verifier_key, r.origin

    def consistency_proof(
        self, first: int, second: int, timeout: float | None = None
    ) -> list[bytes]:
        """The service's RFC 9162 consistency proof (hashes of 32 bytes) from the tree of
        ``first`` entries to that of ``second`` (0: the latest), unchecked; ``timeout``:
        the call's deadline in seconds (None: the client's). Raises TransportError."""
        r = self._call(
            self._log.GetConsistencyProof,
            pb.GetConsistencyProofRequest(first_size=first, second_size=second),
            timeout=timeout,
        )
        return [bytes(p) for p in r.proof]

    def inclusion_proof(
        self, tree_size: int, leaf_index: int | None = None, leaf_hash: bytes | None = None
    ) -> tuple[int, int, list[bytes], bytes]:
        req = pb.GetInclusionProofRequest(tree_size=tree_size)
        if leaf_index is not None:
            req.leaf_index = leaf_index
        else:
            req.leaf_hash = leaf_hash or b""
        r = self._call(self._log.GetInclusionProof, req)
        return r.leaf_index, r.tree_size, [bytes(p) for p in r.proof], bytes(r.leaf_hash)

    def entries(
        self, start: int, limit: int = 100, timeout: float | None = None
    ) -> tuple[list[bytes], int]:
        """A GetEntries page: (up to ``limit`` entries' leaf data from index ``start``, the
        index its next page starts at), as the server sent it; ``timeout``: the call's
        deadline in seconds (None: the client's). Raises TransportError."""
        req = pb.GetEntriesRequest(start=start, limit=limit)
        r = self._call(self._log.GetEntries, req, timeout=timeout)
        return [bytes(e) for e in r.entries], r.next


def page_problem(pos: int, asked: int, held: int, nxt: int) -> str | None:
    """What is wrong with a GetEntries page of ``held`` (at least 1) entries from index
    ``pos``, asked for at most ``asked``, whose next page starts at index ``nxt``; None
    when nothing is. More entries than asked for: "sent 4 entries where at most 3 were
    asked for" (before, with ``next`` counting the entries asked for, "pages overlap",
    though no page had come before; with it counting those sent, taken). Else a ``next``
    that is not ``pos + held`` (the page's end) serves entries again or skips them, as
    "sent pages of the log that do not follow on from each other: its page holding
    entries 0 to 2 says the next starts at 4, not 3: skipping entry 3" (in a reader's
    words: before, "sent a GetEntries page of ...", the RPC's name shown to a web
    visitor). `ProvenanceClient.entries` answers the page as the server sent it; each
    reader that pages checks it: `prov log audit`, the web explorer."""
    if held > asked:
        return (
            f"sent {held} entries where at most {asked} {'was' if asked == 1 else 'were'} asked for"
        )
    last = pos + held - 1
    if nxt == last + 1:
        return None
    sent = (
        "sent pages of the log that do not follow on from each other: its page holding"
        f" {span(pos, last)} says the next starts at {nxt}, not {last + 1}"
    )
    if nxt <= last:
        return f"{sent}: it would serve {span(nxt, last)} again (pages overlap)"
    return f"{sent}: skipping {span(last + 1, nxt - 1)}"


def span(first: int, last: int) -> str:
    """The words for entries ``first`` to ``last``: "entry 2", "entries 0 to 2"."""
    return f"entry {first}" if first == last else f"entries {first} to {last}"


_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

#: Seconds between two looks at an upload call `_AnswerWatch` watches.
WATCH_STEP_S = 0.25


class _AnswerWatch:
    """How long the server has kept one upload call waiting (`verify_stream`'s
    ``answer_s``): since gRPC was handed a message it has not yet asked past (flow
    control: the server is not taking what is sent), or since the last message without
    the server saying it has received the file (`RECEIVED_KEY` in its initial metadata;
    other metadata is no receipt) or answering, plus the time the bytes handed to gRPC
    take over a `SLOW_LINK_RATE` link (gRPC has taken a message once it is in the
    flow-control window and socket buffers, megabytes over a slow link, not once the
    server has it: before, 30 s flat, and a 6 MB upload through a 100 KB/s link was given
    up while its bytes still arrived); or, with ``work_s``, since the server said it has
    the file (else the last message) without an answer."""

    def __init__(self, answer_s: float, work_s: float | None = None) -> None:
        self.answer_s = answer_s
        self.work_s = work_s
        self._offered: float | None = None  # a message handed to gRPC, not yet taken
        self._sent_all: float | None = None
        self._received = threading.Event()
        self._received_at: float | None = None
        self._bytes = 0  # handed to gRPC so far

    def offer(self, pending: bool, size: int = 0) -> None:
        """A message of ``size`` bytes was handed to gRPC (``pending``), or gRPC asked for
        the next one."""
        self._offered = time.monotonic() if pending else None
        self._bytes += size

    def sent_all(self) -> None:
        """gRPC asked past the last message: the server has it all but the end."""
        self._sent_all = time.monotonic()

    def _stalled(self) -> float | None:
        """The limit (seconds) the server has kept the call waiting past, else None."""
        now = time.monotonic()
        if self._offered is not None and now - self._offered > self.answer_s:
            return self.answer_s
        if self._sent_all is None:
            return None
        if not self._received.is_set():
            # a whole second for each SLOW_LINK_RATE bytes (a second's part, answer_s's)
            arriving = self.answer_s + self._bytes // SLOW_LINK_RATE
            return arriving if now - self._sent_all > arriving else None
        since = max(self._sent_all, self._received_at or self._sent_all)
        if self.work_s is not None and now - since > self.work_s:
            return self.work_s
        return None

    def result(self, call: Any, address: str) -> Any:
        """``call``'s answer, waiting while the server keeps up (see the class); raises
        grpc's errors, and TransportError (DEADLINE_EXCEEDED, ``waited_s``) when the
        server kept the call waiting longer than ``answer_s`` or ``work_s`` (see the class),
        the call then cancelled."""

        def received() -> None:
            said = call.initial_metadata()  # returns once it came, or the call ended
            if any(key == RECEIVED_KEY for key, _ in said or ()):
                self._received_at = time.monotonic()
                self._received.set()

        threading.Thread(target=received, name="upload-received", daemon=True).start()
        while True:
            try:
                return call.result(timeout=WATCH_STEP_S)
            except grpc.FutureTimeoutError:
                if (waited := self._stalled()) is not None:
                    call.cancel()
                    raise TransportError(
                        f"the server at {address} did not answer within {waited:g} s",
                        "DEADLINE_EXCEEDED",
                        waited_s=waited,
                    ) from None


def _offered(watch: _AnswerWatch | None, message: Any) -> Iterator[Any]:
    """Yield ``message`` to gRPC, ``watch`` timing how long it takes to ask for the next."""
    if watch is not None:
        watch.offer(True, message.ByteSize())
    yield message
    if watch is not None:
        watch.offer(False)


def _trailing(e: grpc.RpcError) -> dict[str, str]:
    """The failed call's trailing metadata (empty when there is none)."""
    trailing: Any = e.trailing_metadata() if hasattr(e, "trailing_metadata") else None
    return {str(k): str(v) for k, v in trailing or ()}


def _retry_after(trailing: dict[str, str]) -> float | None:
    """Seconds the server asked the client to wait (`RETRY_AFTER_KEY`), else None."""
    try:
        value = float(trailing[RETRY_AFTER_KEY])
    except (KeyError, ValueError):
        return None
    return value if 0 <= value < float("inf") else None


#: How the error of a call that found no server begins (`_transport_error`).
CANNOT_REACH = "cannot reach the server"


#: The status details grpc gives a call whose answer did not parse as the reply expected.
_UNREADABLE_ANSWER = "Exception deserializing response"

#: The status details grpc gives a call whose answer was over this client's
#: `MAX_MESSAGE_BYTES` (its size, then the cap): grpc's words, not a server's.
_OVERSIZED_ANSWER = re.compile(r"CLIENT: Received message larger than max \((\d+) vs\. \d+\)")


def _transport_error(
    e: grpc.RpcError, address: str, timeout: float | None = None
) -> TransportError:
    """Our error for a failed call: the server's own sentence when it sent one (its code
    kept, so `is_unreachable` still says UNAVAILABLE and DEADLINE_EXCEEDED are worth a
    retry), else "cannot reach the server" (DEADLINE_EXCEEDED: ``waited_s`` is the call's
    ``timeout``, seconds); gRPC's own text for another code is kept, marked ``from_grpc``
    (no sentence of our server's came with it)."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    trailing = _trailing(e)
    # our server's own error (`SERVER_ERROR_KEY`), not gRPC failing to reach it in time
    if code == grpc.StatusCode.INTERNAL and (details or "").startswith(_UNREADABLE_ANSWER):
        return TransportError(
            f"the server at {address} answered with a message that is no reply of this"
            " service: is it a provenance server?",
            code.name,
            from_grpc=True,  # no sentence of the server's: its address is the operator's
        )
    oversized = _OVERSIZED_ANSWER.search(details or "")
    if (
        code == grpc.StatusCode.RESOURCE_EXHAUSTED
        and oversized
        and SERVER_ERROR_KEY not in trailing
    ):
        return TransportError(
            f"the server at {address} answered with a message of {int(oversized[1]):,}"
            f" bytes, more than the {MAX_MESSAGE_BYTES:,} a reply may hold: is it a"
            " provenance server?",
            code.name,
            from_grpc=True,  # gRPC's limit, said in our words: the server's fault, not ours
        )
    if code == grpc.StatusCode.CANCELLED and SERVER_ERROR_KEY not in trailing:
        # not ours: grpc core dropped the call (past --max-pending-calls) or the server
        # stopped; its only text is a bare "CANCELLED" (the web keeps it the operator's)
        return TransportError(
            f"the server at {address} ended the call without an answer (CANCELLED): it is"
            " stopping, or too busy to take more calls now; try again in a moment",
            code.name,
            from_grpc=True,
        )
    if code in _UNREACHABLE and SERVER_ERROR_KEY not in trailing:
        waited = timeout if code == grpc.StatusCode.DEADLINE_EXCEEDED else None
        return TransportError(
            f"{CANNOT_REACH} at {address} ({code.name}: {details})", code.name, waited_s=waited
        )
    return TransportError(
        f"{details} [{code.name}]",
        code.name,
        _retry_after(trailing),
        from_grpc=SERVER_ERROR_KEY not in trailing,
    )


def is_unreachable(error: TransportError) -> bool:
    """True when the server could not be reached, or answered that it cannot serve the call
    now (UNAVAILABLE, DEADLINE_EXCEEDED): worth queueing and retrying."""
    return error.code in {c.name for c in _UNREACHABLE}
