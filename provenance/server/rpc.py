"""The gRPC shell around `ProvenanceService`: servicers, limits, admin auth, health,
reflection, and the one mapping from our errors to gRPC status codes.

`create_server(address, service, ...)` returns a started server and its bound port
(bind port 0 in tests); `prov serve` adds signal handling around it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import inspect
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import ExitStack, aclosing, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar, cast

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from provenance import metrics
from provenance.core import merkle
from provenance.core.binding import PDQ_ALGORITHM, PDQ_HASH_SIZE, PerceptualHash
from provenance.core.buckets import Every
from provenance.core.callstop import CallStop
from provenance.core.claims import MAX_CLAIM_SOFT_BINDINGS, MAX_SOFT_BINDINGS, Receipt, SignedClaim
from provenance.core.dihedral import DIHEDRAL_HASHES, DIHEDRAL_TURNS
from provenance.core.errors import (
    AuthError,
    AuthPenaltyError,
    BusyError,
    ClaimError,
    DeadlineError,
    DecoderUnavailableError,
    DetectorError,
    EnrollmentError,
    ForgeryPenaltyError,
    IndexLoadingError,
    KeyMaterialError,
    LeafNotFoundError,
    LimitError,
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
    StoreUnavailableError,
    UnknownDeviceError,
    UploadTimeoutError,
    WitnessError,
)
from provenance.core.fair_turns import FairTurns, Refusal
from provenance.core.verify import FileFacts, VerificationReport
from provenance.index.mih import SCAN_CODES_PER_SECOND
from provenance.media.assets import check_image_size
from provenance.media.image import SNIFF_BYTES, sniff_media_type
from provenance.media.inspect import InspectConfig, Upload
from provenance.server.grpc_noise import quiet_cancelled_calls
from provenance.server.health_port import HealthChecks, add_port, start_health_server
from provenance.server.limits import (
    FORGERY_HOLD_S,
    MAX_STREAMS_PER_CONNECTION,
    AuthFailureBudget,
    DeviceQuota,
    ForgeryPenalty,
    ReadPacer,
    ServerLimits,
    UploadGate,
    UploadSlot,
    entries_cost,
    idle_ms,
    peer_client,
)
from provenance.server.pipeline import (
    DetectorBackend,
    VerificationPipeline,
    claimed_chunk_size,
    sidecar_chunk_size,
    unlocated_note,
)
from provenance.server.rpc_input import (
    MalformedRequestInterceptor,
    check_query_media_type,
    check_upload_header,
)
from provenance.server.rpc_probes import ProbeBudget
from provenance.server.service import ProvenanceService
from provenance.server.writer import Appended
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from provenance.wire.contract import (
    MAX_MESSAGE_BYTES,
    RECEIVED_KEY,
    RETRY_AFTER_KEY,
    SERVER_ERROR_KEY,
)

log = logging.getLogger(__name__)

#: Room kept in a reply for its framing, in bytes: replies must fit MAX_MESSAGE_BYTES.
REPLY_MARGIN_BYTES = 64 * 1024

# Most specific first: the first matching class decides the status code.
_STATUS: tuple[tuple[type[ProvenanceError], grpc.StatusCode], ...] = (
    (UploadTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (DeadlineError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (LimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (MediaTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (MediaError, grpc.StatusCode.INVALID_ARGUMENT),
    (ClaimError, grpc.StatusCode.INVALID_ARGUMENT),
    (KeyMaterialError, grpc.StatusCode.INVALID_ARGUMENT),
    (SignatureError, grpc.StatusCode.UNAUTHENTICATED),
    (AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (UnknownDeviceError, grpc.StatusCode.NOT_FOUND),
    (LeafNotFoundError, grpc.StatusCode.NOT_FOUND),
    (RevokedKeyError, grpc.StatusCode.PERMISSION_DENIED),
    (EnrollmentError, grpc.StatusCode.PERMISSION_DENIED),
    (SequenceError, grpc.StatusCode.FAILED_PRECONDITION),
    (RegistryError, grpc.StatusCode.FAILED_PRECONDITION),
    (LogIntegrityError, grpc.StatusCode.DATA_LOSS),
    (WitnessError, grpc.StatusCode.FAILED_PRECONDITION),
    (ProofError, grpc.StatusCode.FAILED_PRECONDITION),
    (LogError, grpc.StatusCode.OUT_OF_RANGE),
    (DetectorError, grpc.StatusCode.UNAVAILABLE),
    (DecoderUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (StorageError, grpc.StatusCode.UNAVAILABLE),
    (IndexLoadingError, grpc.StatusCode.UNAVAILABLE),
)


def _outcome_read(done: asyncio.Future[Any]) -> None:
    """Mark a finished job's outcome as read (see `VerificationServicer._uploaded`)."""
    if not done.cancelled():
        done.exception()


def status_for(error: ProvenanceError) -> grpc.StatusCode:
    """The gRPC status code for one of our errors (INTERNAL for any other)."""
    for cls, code in _STATUS:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _error_metadata(e: ProvenanceError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata of our error ``e``: its class name, and when to retry if it says."""
    retry: float | None = getattr(e, "retry_after_s", None)
    name = ((SERVER_ERROR_KEY, type(e).__name__),)
    return name if retry is None else (*name, (RETRY_AFTER_KEY, f"{retry:.3f}"))


#: Characters of an error's message sent as the call's status details: they travel in a
#: trailer (percent-encoded), and a client drops trailers over 16 KiB (gRPC's default hard
#: limit) as RESOURCE_EXHAUSTED "Stream removed", so a message echoing a caller's long
#: field (a Lookup's ref) is cut to fit instead.
MAX_DETAILS_CHARS = 1000


#: Seconds between two lines of one kind that `_said` logs: a flood of calls during a
#: database outage would repeat each. A kind is an error's class and its whole message,
#: every word holding a digit left out (`_kind`): before, it was what the caller was
#: told, and a second cause told alike ("no such table: checkpoints" after "no such
#: table: devices", both "the log database cannot be used now") was never logged while
#: the first went on.
HIDDEN_LOG_EVERY_S = 60.0
_hidden_gate = Every(HIDDEN_LOG_EVERY_S)
_NUMBERED_WORD = re.compile(r"\S*\d\S*")


def _kind(e: ProvenanceError) -> tuple[type, str]:
    """The kind of ``e`` for `_hidden_gate`: its class and its message with each word
    that holds a digit (seconds waited, a port, a row's key)
    made ``#``, so one cause is one kind however its numbers vary, and the gate's keys
    stay few."""
    return type(e), _NUMBERED_WORD.sub("#", str(e))


def _said(e: ProvenanceError, call: str) -> str:
    """What a caller of ``call`` is told of our error ``e``: its ``public`` message, which
    names none of the server's internals (a database's URL or file, a driver's words).
    When that leaves out part of the message, the whole message is logged here, once per
    kind (`_kind`) every `HIDDEN_LOG_EVERY_S`, for the operator: the one place errors meet
    callers."""
    if e.hides_detail and _hidden_gate.due(_kind(e)):
        log.warning(
            "%s: %s (the caller was told %r; lines of this kind are logged at most every %g s)",
            call,
            e,
            e.public,
            HIDDEN_LOG_EVERY_S,
        )
    return e.public


def _details(e: ProvenanceError, call: str) -> str:
    """The status details of our error ``e`` in ``call``: what its caller is told
    (`_said`), cut to MAX_DETAILS_CHARS in the middle, so that its end, which says what is
    wrong after the echoed field ("query '/archive/...': sha256 must be 32 bytes"), is
    kept."""
    text = _said(e, call)
    if len(text) <= MAX_DETAILS_CHARS:
        return text
    keep = MAX_DETAILS_CHARS - 60  # room for the note of what was cut
    head, tail = text[: keep // 2], text[len(text) - keep // 2 :]
    cut = len(text) - len(head) - len(tail)
    return f"{head} ... ({cut} of {len(text)} characters left out) ... {tail}"


async def _abort(
    context: grpc.aio.ServicerContext[Any, Any], code: grpc.StatusCode, details: str
) -> None:
    """``context.abort(code, details)``: raises grpc.aio.AbortError, or
    asyncio.CancelledError (which grpc.aio logs at DEBUG only) when grpc core has ended
    the call already, so that its status cannot be sent: an upload's message it refused
    (one that inflates past the message limit, RESOURCE_EXHAUSTED to its client) ends
    the request stream early, and the handler's refusal of what arrived ("truncated
    upload", "the upload must start with a header message") has no call left to answer.
    Before, each such refusal logged "ExecuteBatchError raised in core by servicer
    method" and two tracebacks at ERROR."""
    try:
        await context.abort(code, details)
    except (grpc.aio.AbortError, grpc.aio.UsageError):
        raise
    except Exception as e:  # grpc's ExecuteBatchError (private): no call left to answer
        log.debug("call ended by grpc before its status (%s: %s): %s", code.name, details, e)
        raise asyncio.CancelledError from e


def _rpc(fn: F) -> F:
    """Turn our errors into status codes; never let an unexpected error take the server
    down. Wraps sync handlers (run in the RPC thread pool) and async ones (run on the
    event loop) alike."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper_async(self: Any, request: Any, context: Any) -> Any:
            try:
                return await fn(self, request, context)
            except ProvenanceError as e:
                context.set_trailing_metadata(_error_metadata(e))
                await _abort(context, status_for(e), _details(e, fn.__name__))
            except (asyncio.CancelledError, grpc.aio.AbortError):
                raise
            except Exception:
                log.exception("unexpected error in %s", fn.__name__)
                await _abort(
                    context,
                    grpc.StatusCode.INTERNAL,
                    "internal error; the server logged the details",
                )

        return cast(F, wrapper_async)

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except ProvenanceError as e:
            context.set_trailing_metadata(_error_metadata(e))
            context.abort(status_for(e), _details(e, fn.__name__))
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error; the server logged the details")

    return cast(F, wrapper)  # wraps() keeps fn's signature


@dataclass(frozen=True)
class ServerConfig:
    """Admin credential, input limits and C2PA reading, the optional detector, and the
    limits of the gRPC shell (threads, uploads, decodes, Lookup size, quotas)."""

    admin_token: str | None = None
    inspect: InspectConfig = InspectConfig()
    detector: DetectorBackend | None = None
    limits: ServerLimits = ServerLimits()


def _require_admin(context: grpc.ServicerContext, token: str) -> None:
    """Raise AuthError unless the call carries ``token`` as its bearer credential."""
    md = dict(context.invocation_metadata())
    got = str(md.get("authorization", ""))
    if not got.startswith("Bearer "):
        what = "missing" if not got else "is not a bearer credential"
        raise AuthError(
            f"admin credential {what}: send it as gRPC metadata 'authorization: Bearer TOKEN'"
            " (`prov admin` sends $PROV_ADMIN_TOKEN so)"
        )
    if not hmac.compare_digest(got[len("Bearer ") :].encode(), token.encode()):
        raise AuthError(
            "admin credential is wrong: it is not the admin token this server was started"
            " with (its $PROV_ADMIN_TOKEN or --admin-token-file); `prov admin` sends"
            " $PROV_ADMIN_TOKEN"
        )


#: What an Enroll refused for its credentials raises: a wrong, spent or expired token, a
#: proof of possession or certificate that does not check, a malformed key.
_ENROLL_FAILURES = (EnrollmentError, KeyMaterialError, SignatureError, AuthError)


class RegistryServicer(rpc.DeviceRegistryServicer):
    """Enrollment and the admin calls. A client that fails authentication, or has
    enrollments answered again, too often (`AuthFailureBudget`,
    --auth-failures-per-minute) has its admin and Enroll calls refused unchecked, each
    answer held back a second (`_in_pool`). Device look-ups (GetDevice) wait their
    client's turn past --device-reads-per-minute (`ReadPacer`)."""

    def __init__(
        self, service: ProvenanceService, config: ServerConfig, pool: futures.Executor
    ) -> None:
        self.s = service
        self.c = config
        self.pool = pool
        self.budget = AuthFailureBudget(config.limits.auth_failures_per_minute)
        self.reads = ReadPacer(
            config.limits.device_reads_per_minute, "device look-ups", "--device-reads-per-minute"
        )

    async def _in_pool(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        rpc_name: str,
        body: Callable[[Any, Any], Any],
        request: Any,
    ) -> Any:
        """``body(request, context)`` (a call that authenticates its caller, `_admin` or
        `_authenticating`) run in the RPC pool, once its client is seen to have failures
        left. A client out of them is refused here, on the event loop (AuthPenaltyError),
        its answer held back `FORGERY_HOLD_S` (less when the call's deadline is sooner)
        holding no thread, as a forger's submissions are: with n calls in flight it gets
        at most n answers a second, and its calls leave grpc's queue of the method's
        calls at once. Before, refused in the pool and answered at once, one client
        keeping 1,000 Enroll calls in flight got about 2,500 answers a second, and honest
        token enrollments from another address waited behind them in that queue, p50
        2.6 -> 362 ms; now 2.7 ms (bench/bench_enroll_replays.py). ``body`` checks again
        in the pool, where it charges (its client's calls in flight overshoot the budget
        by at most the pool's threads). An admin call to a server with no admin token is
        not checked here (`_admin` refuses it, uncharged)."""
        if self.c.admin_token or rpc_name == "Enroll":
            try:
                self.budget.admit(context.peer(), rpc_name)
            except AuthPenaltyError:
                left = context.time_remaining()
                await asyncio.sleep(FORGERY_HOLD_S if left is None else min(FORGERY_HOLD_S, left))
                raise
        return await asyncio.get_running_loop().run_in_executor(self.pool, body, request, context)

    def _admin(self, context: grpc.ServicerContext, rpc_name: str) -> None:
        """Let an admin call through, or raise: AuthError when the server has no admin
        token (not charged: nobody guessed anything) or the call's is wrong or missing
        (charged to its client), AuthPenaltyError when its client has no failure left."""
        token = self.c.admin_token
        if not token:
            raise AuthError(
                "admin operations are disabled: the server has no admin token configured"
                " (start it with $PROV_ADMIN_TOKEN or --admin-token-file FILE)"
            )
        with self._authenticating(context, rpc_name):
            _require_admin(context, token)

    @contextmanager
    def _authenticating(
        self,
        context: grpc.ServicerContext,
        rpc_name: str,
        failures: tuple[type[ProvenanceError], ...] = (AuthError,),
    ) -> Iterator[str]:
        """Run a call that authenticates its caller, yielding its client (to charge an
        enrollment answered again, `AuthFailureBudget.answered_again`): refused first
        when the caller's client has spent its failures (AuthPenaltyError); a
        ``failures`` error raised inside is charged to it. An admin call's arguments
        refused after its token checked (ClaimError, ...) are not failures of
        authentication."""
        client = self.budget.admit(context.peer(), rpc_name)
        try:
            yield client
        except failures:
            self.budget.failed(client)
            raise

    @_rpc
    async def CreateEnrollmentToken(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        return await self._in_pool(
            context, "CreateEnrollmentToken", self._create_enrollment_token, request
        )

    def _create_enrollment_token(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._admin(context, "CreateEnrollmentToken")
        ttl = timedelta(seconds=request.ttl_seconds) if request.ttl_seconds else None
        token, expires = (
            self.s.create_enrollment_token(ttl, request.label)
            if ttl
            else self.s.create_enrollment_token(label=request.label)
        )
        return pb.CreateEnrollmentTokenResponse(token=token, expires_at=wire.ts_to_pb(expires))

    @_rpc
    async def Enroll(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._in_pool(context, "Enroll", self._enroll, request)

    def _enroll(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self._authenticating(context, "Enroll", _ENROLL_FAILURES) as client:
            got, chain = self.s.enroll(
                request.token,
                bytes(request.public_key),
                bytes(request.proof_of_possession),
                request.certificate_chain_pem,
                request.log_key,
                (
                    wire.ts_from_pb(request.signed_at, "the enrollment's signing time")
                    if request.HasField("signed_at")
                    else None
                ),
            )
            if got.receipt is None:  # a replay: its checks are paid for, nothing changed
                self.budget.answered_again(client)
        return pb.EnrollResponse(device=wire.device_to_pb(got.device), certificate_chain_pem=chain)

    @_rpc
    async def Revoke(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._in_pool(context, "Revoke", self._revoke, request)

    def _revoke(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._admin(context, "Revoke")
        if not request.reason.strip():
            raise ClaimError("a revocation needs a reason")
        when = (
            wire.ts_from_pb(request.effective_at, "the revocation time")
            if request.HasField("effective_at")
            else None
        )
        got = self.s.revoke_outcome(_device_id(request.device_id), request.reason, when)
        return pb.RevokeResponse(
            device=wire.device_to_pb(got.device), already_revoked=got.receipt is None
        )

    @_rpc
    async def GetDevice(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """A device's registry record, read in the pool once its client's turn has come
        (`ReadPacer`, --device-reads-per-minute)."""
        await self.reads.admit(context.peer(), "GetDevice", context.time_remaining())
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, self._get_device, request
        )

    def _get_device(self, request: Any) -> Any:
        self.s.reads.refuse_unanswered()
        return wire.device_to_pb(self.s.get_device(_device_id(request.device_id)))


#: Bytes of a device id (the SHA-256 of the device's raw public key).
DEVICE_ID_BYTES = 32


def _device_id(raw: bytes) -> bytes:
    """A request's device id; ClaimError (INVALID_ARGUMENT) unless it is 32 bytes. Before,
    an empty or 1 MiB id was looked up and answered NOT_FOUND "device  is not enrolled"
    (or with a 2,000-digit id in the message)."""
    if len(raw) != DEVICE_ID_BYTES:
        raise ClaimError(
            f"a device id is {DEVICE_ID_BYTES} bytes (the SHA-256 of the device's public key),"
            f" got {len(raw)}"
        )
    return bytes(raw)


#: Receipts of recently logged signed claims kept on the event loop, by envelope digest
#: (`envelope_digest`): a replay of one is answered without the writer. About 1 KB each
#: (a receipt), so about 4 MB.
REPLAYS_KEPT = 4096
#: Receipts of replays answered from a read (the envelope logged before), kept apart
#: from `REPLAYS_KEPT` so that a flood of distinct replays evicts only its own kind.
READ_REPLAYS_KEPT = 1024


def envelope_digest(signed: SignedClaim) -> bytes:
    """SHA-256 over the whole signed envelope of ``signed``: payload type, device key id,
    signature and claim bytes, each length-prefixed (8 bytes, big-endian). Two
    submissions with one digest are byte for byte the same envelope, so one whose
    signature the writer verified needs no second check. (The claim hash covers the
    claim bytes only: a replayed claim with another signature is not the same envelope.)
    Returns 32 bytes."""
    h = hashlib.sha256()
    for part in (
        signed.payload_type.encode(),
        signed.key_id,
        signed.signature,
        signed.claim_bytes,
    ):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


#: Seconds between two tries to read a device's key while the database cannot be reached
#: (`CapturesServicer._first_sight_until`); each try itself waits for a connection.
KEY_READ_RETRY_S = 1.0


#: Seconds before a capture's call deadline at which it is answered when the log has not
#: confirmed it (a tenth of the time left when that is less): `submit_wait`.
ANSWER_BEFORE_DEADLINE_S = 1.0


def submit_wait(least: float, left: float | None) -> float:
    """Seconds a capture's call waits for the log's confirmation: ``least`` (`prov serve
    --submit-wait`) with no deadline (``left``, seconds); with one, until
    `ANSWER_BEFORE_DEADLINE_S` before it (a tenth of ``left`` when that is less), also
    when the deadline is sooner than ``least``. Before, it waited until the deadline
    itself (and ``least`` whenever the deadline was sooner), so its answer ("the log did
    not confirm the submission within N s ... submit it again", UNAVAILABLE) never reached
    the caller, whose own deadline came first: "cannot reach the server
    (DEADLINE_EXCEEDED)", while the server was there and its database was not answering
    (the client's default deadline, 30 s, is the default ``least``)."""
    if left is None:
        return least
    return left - min(ANSWER_BEFORE_DEADLINE_S, left / 10)


@dataclass
class _PenaltyToken:
    """A submission's forgery-penalty token (`ForgeryPenalty.admit`'s client), settled
    once: when the claim reached the writer (``with_writer``), as soon as the writer
    verified its signature (`CapturesServicer._checked`) or else by its outcome
    (`CapturesServicer._settle_outcome`); otherwise when the submission's task ends
    (`CapturesServicer._settle_task`). Used on the event loop's thread only."""

    client: str
    with_writer: bool = False
    settled: bool = False


class CapturesServicer(rpc.CapturesServicer):
    """Submissions on the event loop: the checks there are CPU work well under a
    millisecond (the device key was checked at enrollment and is kept once read); every
    store read (a device key not yet known, a quota count to refresh) runs in ``pool``,
    so a slow database (PostgreSQL round trips) never stalls the other calls; the group
    commit is awaited without a thread. A client (IPv4 address, IPv6 /64) that sent too
    many forgeries or unknown device ids (``penalty``) has its submissions refused first,
    each answer held back `FORGERY_HOLD_S`.

    Replays are answered on the loop where they can be: the receipts of the last
    `REPLAYS_KEPT` envelopes the writer verified and logged, and apart from them those
    of the last `READ_REPLAYS_KEPT` replays answered from a read, are kept by envelope
    digest, and a byte-identical envelope gets its receipt back at once (no
    signature check, no store read, no quota check: a replay is never charged); an
    envelope arriving while the same one is still with the writer waits for that
    submission's outcome instead of entering the writer's queue again. So a flood of
    replays of one claim costs the writer at most one verification and one read (before:
    one each, in the honest claims' batches). The receipt is the one the writer returned,
    byte for byte what a replay rebuilt by the writer returns."""

    def __init__(
        self,
        service: ProvenanceService,
        quota: DeviceQuota,
        pool: futures.Executor,
        penalty: ForgeryPenalty,
    ) -> None:
        self.s = service
        self.quota = quota
        self.pool = pool
        self.penalty = penalty
        # envelope digest -> its receipt, oldest first (the event loop's thread only):
        # claims logged by this server, and replays answered from a read
        self._replays: dict[bytes, Any] = {}
        self._read_replays: dict[bytes, Any] = {}
        # envelope digest -> the submission of it now with the writer
        self._in_flight: dict[bytes, asyncio.Future[Any]] = {}

    @_rpc
    async def SubmitCapture(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        client = None  # the forgery penalty's token for this call, taken before any check
        if self.penalty.enabled:
            try:
                client = await self.penalty.admit(context.peer(), context.time_remaining())
            except ForgeryPenaltyError:
                left = context.time_remaining()
                await asyncio.sleep(FORGERY_HOLD_S if left is None else min(FORGERY_HOLD_S, left))
                raise
        # The submission runs on as a task of its own when the call ends early (the
        # client cancels, its deadline passes, its connection drops): the writer checks
        # and logs it anyway, and its token is settled by that outcome, not by the
        # call's end (before: an honest submission logged after its caller gave up spent
        # a forgery token; 60 of them from one address, a stall past their deadlines,
        # and its honest devices were refused as forgers). A forger's cancelled call
        # still spends its token once its signature fails. A claim the writer took is
        # settled by the writer's outcome, not by the end of this call's wait for it
        # (before: a wait that ran out, the database held up, gave the token back before
        # the signature was checked, and the calls waiting for a token went in). About
        # 7 us a call.
        token = None if client is None else _PenaltyToken(client)
        task = asyncio.ensure_future(
            self._submit(request, context.peer(), context.time_remaining(), token)
        )
        if token is not None:
            task.add_done_callback(functools.partial(self._settle_task, token))
        return await asyncio.shield(task)

    def _settle_task(self, token: _PenaltyToken, task: asyncio.Future[Any]) -> None:
        """Give the penalty token of a finished submission back, or spend it: a forgery
        (SignatureError, UnknownDeviceError) or a submission that never finished (the
        server stopping) spends it, any other outcome does not. A claim the writer took
        is left to its outcome (`_settle_outcome`)."""
        if token.with_writer:
            return
        forged = task.cancelled() or isinstance(
            task.exception(), (SignatureError, UnknownDeviceError)
        )
        self._settle_token(token, forged)

    def _settle_outcome(self, token: _PenaltyToken, outcome: object) -> None:
        """`_settle_task` for a claim the writer took, told its ``outcome`` (an
        `Appended`, `JOINED` or the exception it failed with), on the event loop."""
        forged = isinstance(outcome, (SignatureError, UnknownDeviceError, asyncio.CancelledError))
        self._settle_token(token, forged)

    def _settle_token(self, token: _PenaltyToken, forged: bool) -> None:
        if not token.settled:
            token.settled = True
            self.penalty.settle(token.client, forged)

    async def _submit(
        self,
        request: Any,
        peer: str = "",
        left: float | None = None,
        token: _PenaltyToken | None = None,
    ) -> Any:
        """SubmitCapture once its penalty token is held: a replay of a kept envelope is
        answered here, one of an envelope still with the writer shares its outcome
        (``peer``: gRPC's, whose turn a replay's read takes; ``left``: the seconds left
        before the call's deadline, None when it has none; ``token``: its forgery-penalty
        token, handed to the writer's outcome when the claim reaches it).
        Raises SignatureError or UnknownDeviceError for a forgery, other ProvenanceErrors
        for other refusals."""
        if not request.HasField("signed_claim"):
            raise ClaimError("the request carries no signed claim")
        signed = wire.signed_from_pb(request.signed_claim)
        digest = envelope_digest(signed)
        kept = self._replays.get(digest)
        if kept is None:
            kept = self._read_replays.get(digest)
        if kept is not None:
            return pb.SubmitCaptureResponse(receipt=kept, duplicate=True)
        pending = self._in_flight.get(digest)
        if pending is not None:  # the same bytes: the same outcome, as a replay
            first = await asyncio.shield(pending)
            return pb.SubmitCaptureResponse(receipt=first.receipt, duplicate=True)
        outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._in_flight[digest] = outcome
        try:
            reply = await self._submit_new(signed, peer, left, token)
        except BaseException as e:
            del self._in_flight[digest]
            if isinstance(e, asyncio.CancelledError):
                outcome.cancel()
            else:
                outcome.set_exception(e)
                outcome.exception()  # retrieved: only copies waiting on it raise it
            raise
        del self._in_flight[digest]
        # a replay's answer kept apart: a flood of distinct replays (each a read) does not
        # evict the receipts of new claims, whose devices retry lost answers (before: it
        # did, and every such retry became a read waiting its turn)
        room, most = (
            (self._read_replays, READ_REPLAYS_KEPT)
            if reply.duplicate
            else (self._replays, REPLAYS_KEPT)
        )
        if len(room) >= most:  # the oldest kept goes
            del room[next(iter(room))]
        room[digest] = reply.receipt
        outcome.set_result(reply)
        return reply

    async def _submit_new(
        self,
        signed: SignedClaim,
        peer: str = "",
        left: float | None = None,
        token: _PenaltyToken | None = None,
    ) -> Any:
        """A submission whose envelope is neither kept nor in flight: quota, then the
        writer, whose outcome is waited for until just before the call's deadline
        (``left`` seconds; the service's ``submit_wait_s``, `SUBMIT_WAIT_S` by default,
        when there is none: `submit_wait`). Raises as `_submit`."""
        size = len(signed.claim_bytes)
        loop = asyncio.get_running_loop()
        # the wait ends at one time, whatever the reads before the writer took (a quota
        # count read while the database is down waits for a connection)
        until = loop.time() + submit_wait(self.s.config.submit_wait_s, left)
        try:
            if not self.s.knows_device_key(signed.key_id):
                # in one hop off the loop: the device's key first (an unknown device costs
                # that one read, no quota count, one penalty token), then its quota
                await self._first_sight_until(signed, size, left)
            elif self.quota.reads_store(signed.key_id):
                await loop.run_in_executor(self.pool, self.quota.admit, signed.key_id, size)
            else:
                self.quota.admit(signed.key_id, size)
        except LimitError:
            # over its quota: a replay of a logged claim (a device retrying a lost answer)
            # still gets its receipt, as it would below the quota, and so does a retry of
            # a claim the writer holds (it joins it: its room is already held); a new
            # claim is refused
            replayed = await self.s.logged_replay(signed, peer)
            if replayed is None:
                replayed = await self.s.writer.join_async(signed, max(0.0, until - loop.time()))
            if replayed is None:
                raise
            res = replayed
        else:
            # its quota room is held until the writer settles the claim, whether or not
            # this call still waits for it (its wait ran out, the server stopped): before,
            # the room was given back when the wait ended though the writer held the
            # claim, and a device could queue twice its quota a minute in an outage, and
            # a claim logged after its call ended was never counted. Counted once
            # verified and logged (forgeries and replays cost nothing); so is its
            # forgery-penalty token
            if token is not None:
                token.with_writer = True
            res = await self.s.submit_async(
                signed,
                max(0.0, until - loop.time()),
                reads=self.pool,
                peer=peer,
                on_outcome=functools.partial(self._settled, signed.key_id, size, token, loop),
                on_checked=None if token is None else functools.partial(self._checked, token, loop),
            )
        return pb.SubmitCaptureResponse(
            receipt=wire.receipt_to_pb(res.receipt), duplicate=res.duplicate
        )

    def _settled(
        self,
        device_id: bytes,
        size: int,
        token: _PenaltyToken | None,
        loop: asyncio.AbstractEventLoop,
        outcome: object,
    ) -> None:
        """Give back the quota room of a submission the writer (or the service before it)
        settled with ``outcome``, counting it when it logged a new claim, and settle its
        penalty ``token`` on ``loop``; from the writer's threads or the loop."""
        logged = isinstance(outcome, Appended) and not outcome.duplicate
        self.quota.settle(device_id, size, logged=logged)
        if token is not None:
            with suppress(RuntimeError):  # the loop closed: the server stopped
                loop.call_soon_threadsafe(self._settle_outcome, token, outcome)

    def _checked(self, token: _PenaltyToken, loop: asyncio.AbstractEventLoop) -> None:
        """The writer verified the claim's signature (from its thread): its penalty
        ``token`` is given back on ``loop`` then, not at the writer's outcome, which waits
        for the database (before: captures held through an outage kept their address's
        tokens, and its next captures waited for one until their deadline passed)."""
        with suppress(RuntimeError):  # the loop closed: the server stopped
            loop.call_soon_threadsafe(self._settle_token, token, False)

    async def _first_sight_until(self, signed: SignedClaim, size: int, left: float | None) -> None:
        """`_first_sight` in ``pool``, tried again while the database cannot be reached
        and the call's deadline (``left`` seconds; None: none, one try) leaves time for
        another try: each waits for a connection (PostgreSQL: 30 s) while the store
        reconnects. The key of a device not yet seen here is in the database only; its
        revocation is checked by the writer in its transaction, as always. Before: one
        try, and a capture was refused 30 s into an outage whatever its deadline. Not
        tried again once the server stops (it kept the call through the 5 s grace). Raises
        as `_first_sight`; StorageError saying when to retry when the deadline comes
        first."""
        loop = asyncio.get_running_loop()
        until = None if left is None else loop.time() + left
        while True:
            try:
                await loop.run_in_executor(self.pool, self._first_sight, signed, size)
                return
            except StoreUnavailableError as e:
                if until is None or loop.time() + KEY_READ_RETRY_S >= until or self.s.is_stopping:
                    then = "submit the capture again once the database answers (nothing was logged)"
                    raise StoreUnavailableError(
                        f"this device's key could not be read: {e}; {then}",
                        public=f"this device's key could not be read: {e.public}; {then}",
                    ) from e
            await asyncio.sleep(KEY_READ_RETRY_S)

    def _first_sight(self, signed: SignedClaim, size: int) -> None:
        """A submission from a device whose key is not kept (in a pool thread): read the
        key, then admit it to its quota. Raises ClaimError, UnknownDeviceError, LimitError."""
        self.s.read_device_key(signed)
        self.quota.admit(signed.key_id, size)


#: Files of a Lookup found together (one store read, one index search); its time budget
#: is checked between such parts.
LOOKUP_PART_FILES = 32
#: ... and perceptual hashes of a part at most, unless its one file has more: 32 videos of
#: 600 frames near thousands of copies of one code (claims of a static scene) took about
#: 30 s as one part, and a budget of 2 s was first looked at after all of it.
LOOKUP_PART_HASHES = 1024


def _out_of_time(answered: int, files: int, budget: float) -> DeadlineError:
    """The DeadlineError of a Lookup of ``files`` queries that ran out of its ``budget``
    (seconds) after answering ``answered`` of them (between parts, or within one)."""
    return DeadlineError(
        f"the Lookup ran out of time after answering {answered} of {files}"
        f" files (its budget was {budget:.3g} s: the call's deadline or"
        " --lookup-seconds, whichever is sooner): send fewer per call or allow"
        " more time"
    )


def _query_hashes(q: Any) -> int:
    """The perceptual hashes a LookupQuery has searched (as `VerificationServicer._lookup`
    counts them against --max-lookup-hashes)."""
    return (
        len(q.soft_bindings)
        + min(len(q.pdq_dihedral) // PDQ_HASH_SIZE, DIHEDRAL_HASHES)
        + min(len(q.video_turned) // PDQ_HASH_SIZE, DIHEDRAL_TURNS * len(q.soft_bindings))
    )


def lookup_parts(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """The parts of a Lookup whose files have ``sizes`` perceptual hashes each, as (start,
    end) indexes into them: in order, each of at most `LOOKUP_PART_FILES` files and
    `LOOKUP_PART_HASHES` hashes, or of one file that has more."""
    parts: list[tuple[int, int]] = []
    start, held = 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= LOOKUP_PART_FILES or held + size > LOOKUP_PART_HASHES):
            parts.append((start, i))
            start, held = i, 0
        held += size
    if start < len(sizes):
        parts.append((start, len(sizes)))
    return parts


#: The ``retry-after`` (seconds) of a Lookup refused because every place is taken.
LOOKUP_RETRY_AFTER_S = 1.0


def _lookup_refusal(max_lookups: int, why: Refusal) -> BusyError:
    """The answer to a Lookup refused for want of a place (`FairTurns`: ``max_lookups``
    running, in turn per client, and as many waiting)."""
    if why.per_client:
        text = (
            f"this client address already has {why.waiting} Lookup calls waiting for the"
            f" {max_lookups} the server answers at once, the most one address may queue"
            " (--max-lookups): send fewer at once"
        )
    elif why.dropped:
        text = (
            f"{why.queued} Lookup calls were waiting for the {max_lookups} the server answers"
            f" at once (--max-lookups) and this client address had the most of them ("
            f"{why.waiting}): this one made room for another client's; send fewer at once"
        )
    else:
        text = (
            f"the server is already answering {max_lookups} Lookup calls with as many"
            " waiting, its limit (--max-lookups)"
        )
    return BusyError(f"{text}; try again in {LOOKUP_RETRY_AFTER_S:g} s", LOOKUP_RETRY_AFTER_S)


def _turns_left_out(queries: Any, bound: int) -> tuple[dict[int, str], int]:
    """Clears the ``video_turned`` of each of ``queries`` (LookupQuery messages, changed in
    place) whose frames fit ``bound`` (--max-lookup-hashes) but not with their 7 turns
    each: no call could ever search them, and a Lookup of a long video under a bound set
    below the default was refused whole (a split of the call cannot help one file). Its
    frames are still searched; a copy displayed turned is not found. Returns (a note for
    its report by the query's index, how many turned hashes were left out in all). A
    query's turned hashes that fit alone are kept: a call they make too large is refused
    as before, and the caller (`prov scan`) sends fewer per call."""
    notes: dict[int, str] = {}
    dropped = 0
    for i, q in enumerate(queries):
        if not q.video_turned:
            continue
        frames = len(q.soft_bindings)
        turned = min(len(q.video_turned) // PDQ_HASH_SIZE, DIHEDRAL_TURNS * frames)
        if frames > bound or frames + turned <= bound:
            continue
        if len(q.video_turned) != DIHEDRAL_TURNS * PDQ_HASH_SIZE * frames or not (
            q.media_type.startswith("video/")
        ):
            continue  # refused with its query (`_video_turned`), in the same words as ever
        q.ClearField("video_turned")
        dropped += turned
        notes[i] = (
            f"note: the {turned:,} rotated and mirrored hashes of its {frames:,} frames"
            f" (video_turned) were not searched: with them it is {frames + turned:,}"
            f" perceptual hashes, over this server's --max-lookup-hashes of {bound:,}, so a"
            " copy displayed turned is not found by this lookup (the server's operator can"
            f" set --max-lookup-hashes {frames + turned:,} or more)"
        )
    return notes, dropped


def _lookup_facts(q: Any) -> tuple[FileFacts, bytes]:
    """The facts of one LookupQuery, and a photo's 7 turned hashes left packed (b"" for
    none; `ProvenanceService.verify_many`'s ``packed_turns``): its own hash from its packed
    ``pdq_dihedral`` (one field read, not 32; the turns checked, but no PerceptualHash
    built of each), other hashes from ``soft_bindings``. Raises ClaimError on a malformed
    hash, too many, hashes in both fields, or a media type that is none
    (`check_query_media_type`). Each field is read from the message once (a
    read costs about 0.3-0.6 us)."""
    sha256, content, softs = bytes(q.sha256), bytes(q.content_sha256), q.soft_bindings
    packed = q.pdq_dihedral
    if len(sha256) != 32:
        raise ClaimError(f"query {q.ref!r}: sha256 must be 32 bytes, got {len(sha256)}")
    if len(content) not in (0, 32):
        raise ClaimError(
            f"query {q.ref!r}: content_sha256 must be empty or 32 bytes, got {len(content)}"
        )
    if len(softs) > MAX_SOFT_BINDINGS:
        raise ClaimError(
            f"query {q.ref!r} has {len(softs)} perceptual hashes; a query"
            f" holds at most {MAX_SOFT_BINDINGS} (one file's sampled video frames; a claim"
            f" at most {MAX_CLAIM_SOFT_BINDINGS})"
        )
    try:
        check_query_media_type(q.media_type)
        if q.dihedral_soft_bindings:
            raise ClaimError(
                "dihedral_soft_bindings is no longer read: an image's 8 PDQ hashes go packed"
                " in pdq_dihedral (a scanner older than this server sends it: update the scanner)"
            )
        turned: tuple[PerceptualHash, ...] = ()
        left = b""
        if not packed:
            plain = wire.softs_from_pb(softs)
        elif softs:
            raise ClaimError(
                "an image's PDQ hashes go packed in pdq_dihedral or in soft_bindings, not both"
            )
        else:
            plain, left = wire.pdq_dihedral_split(packed, q.pdq_quality)
        if q.video_turned:
            turned = _video_turned(bytes(q.video_turned), plain, q.media_type)
            left = b""
        facts = FileFacts(
            sha256=sha256,
            size=0,
            media_type=q.media_type,
            content_sha256=content,
            soft_bindings=plain,
            dihedral_soft_bindings=turned,
        )
        return facts, left
    except ClaimError as e:
        raise ClaimError(f"query {q.ref!r}: {e}") from e


def _video_turned(
    packed: bytes, frames: tuple[PerceptualHash, ...], media_type: str
) -> tuple[PerceptualHash, ...]:
    """A video query's ``video_turned``: 7 runs of its ``frames``' turned hashes, each of
    its frame's quality and time (`provenance.core.verify.video_runs`). Raises ClaimError
    when the query is not a video's or the length is not 7 hashes a frame."""
    if not media_type.startswith("video/"):
        raise ClaimError(f"video_turned is for a video's frames, not for {media_type or 'a file'}")
    size = DIHEDRAL_TURNS * PDQ_HASH_SIZE * len(frames)
    if len(packed) != size:
        raise ClaimError(
            f"video_turned must hold {DIHEDRAL_TURNS} PDQ hashes of {PDQ_HASH_SIZE} bytes per"
            f" frame of soft_bindings ({len(frames)} frames: {size} bytes), got {len(packed)} bytes"
        )
    return tuple(
        PerceptualHash(
            PDQ_ALGORITHM,
            packed[at : at + PDQ_HASH_SIZE],
            frame.quality,
            frame.timestamp_seconds,
        )
        for at, frame in zip(
            range(0, len(packed), PDQ_HASH_SIZE), frames * DIHEDRAL_TURNS, strict=True
        )
    )


def _caught_up(done: asyncio.Future[None]) -> None:
    if not done.done():  # a cancelled wait, or a second wake
        done.set_result(None)


def _sidecar_receipt(m: Any) -> tuple[Receipt | None, str | None]:
    """A VerifyFile header's ``sidecar_receipt`` (a Receipt message) read, and None; or,
    when it cannot be read (an integration time out of Timestamp's range), None and the
    note its report gets, as a receipt that does not verify gets one
    (`rollback.with_lost_receipt`), so that a damaged sidecar does not cost a logged file
    its verdict."""
    try:
        return wire.receipt_from_pb(m), None
    except ClaimError as e:
        return None, f"note: the sidecar's receipt cannot be read ({e}); not used"


async def _say_received(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Send an upload's initial metadata (`RECEIVED_KEY`: its bytes are all in). Raises
    asyncio.CancelledError, which grpc.aio logs at DEBUG only, when grpc core has ended
    the call already: a message it refused (one that inflates past the message limit,
    "Decompressed message larger than max", RESOURCE_EXHAUSTED to its client) ends the
    request stream as if the client had sent it all, and the call has its status
    (otherwise each such upload would log "unexpected error" and three tracebacks at
    ERROR: grpc's ExecuteBatchError here, then again aborting with INTERNAL)."""
    try:
        await context.send_initial_metadata(((RECEIVED_KEY, "1"),))
    except Exception as e:  # grpc's ExecuteBatchError (private): no call left to answer
        log.debug("upload's call ended by grpc before its answer: %s", e)
        raise asyncio.CancelledError from e


async def _hashed(upload: Upload) -> None:
    """Wait until ``upload``'s hashing threads have caught up to within a message or so
    (`Upload.when_hashed`), the event loop free meanwhile."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:  # on a hashing thread
        with suppress(RuntimeError):  # the loop closed meanwhile (the server stopping)
            loop.call_soon_threadsafe(_caught_up, done)

    upload.when_hashed(wake)
    await done


#: How long an upload refused for want of a slot waits for one to be given back before
#: it is tried once more (and refused if still none is free), s.
ADMISSION_WAIT_S = 0.5


class VerificationServicer(rpc.VerificationServicer):
    """Uploads are received on the event loop (a stalled stream holds no thread) and
    verified in the RPC thread pool; Lookups run in their own pool of ``max_lookups``
    threads."""

    def __init__(
        self, service: ProvenanceService, config: ServerConfig, pool: futures.Executor
    ) -> None:
        self.s = service
        self.c = config
        self.p = VerificationPipeline(
            service, config.inspect, config.detector, config.limits.detector_timeout_s
        )
        self.gate = UploadGate(config.limits)
        self.pool = pool
        self.lookups = futures.ThreadPoolExecutor(
            config.limits.max_lookups, thread_name_prefix="lookup"
        )
        # running (one per lookup thread) and waiting, in turn per client; on the loop only
        self.lookup_turns = FairTurns(
            config.limits.max_lookups,
            functools.partial(_lookup_refusal, config.limits.max_lookups),
            per_client=config.limits.max_lookups,
            in_all=config.limits.max_lookups,
        )

    async def _receive(
        self, requests: AsyncIterator[Any], upload: Upload, slot: UploadSlot | None = None
    ) -> Any:
        """Read the header and every data chunk into ``upload``; return the header.

        Call inside an upload slot (`UploadGate.upload`): the stream is cut when it goes
        idle or runs past its deadline. Messages smaller than ``min_chunk_bytes``, except
        the last, are refused; an image is refused as soon as its type is known and its
        announced or received size passes the image limit. When the header's sidecar
        claims a chunked (video) binding with chunks of at least ``min_chunk_bytes``, the
        chunk hashes are computed as the bytes arrive."""
        async with aclosing(self.gate.messages(requests, slot)) as it:
            return await self._read(it, upload)

    async def _read(self, it: AsyncIterator[Any], upload: Upload) -> Any:
        lim = self.c.limits
        first = await anext(it, None)
        if first is None or first.WhichOneof("part") != "header":
            raise MediaError("the upload must start with a header message")
        header = first.header
        check_upload_header(header)
        upload.expected_bytes = header.size_bytes
        if header.HasField("sidecar") and header.chunk_hashes:
            chunk = sidecar_chunk_size(wire.signed_from_pb(header.sidecar))
            if chunk >= lim.min_chunk_bytes:
                upload.hash_chunks(chunk)
        if header.size_bytes > upload.max_bytes:
            raise MediaTooLargeError(
                f"file is {header.size_bytes:,} bytes, over this server's upload limit of"
                f" {upload.max_bytes:,} bytes ({upload.max_bytes >> 20} MiB: its operator"
                " sets it with `prov serve --max-upload-mb`)"
            )
        image: bool | None = None  # unknown until SNIFF_BYTES have arrived
        short: int | None = None  # size of the previous message when under the minimum
        n = 0
        async for chunk in it:
            n += 1
            part = chunk.WhichOneof("part")
            if part == "header":
                raise MediaError("a second header arrived in the middle of the upload")
            if part is None:  # empty, or only fields this server does not know
                raise MediaError(f"upload message {n} carries neither a header nor data")
            if short is not None:
                raise MediaError(
                    f"upload message {n - 1} carried {short} bytes; every message but the last"
                    f" must carry at least {lim.min_chunk_bytes} bytes (1 MiB is usual)"
                )
            data = chunk.data  # read once: a view of the received bytes (rpc_input.DataChunk)
            if len(data) < lim.min_chunk_bytes:
                short = len(data)
            if upload.hashing_behind:  # wait for the hashing without blocking the loop
                await _hashed(upload)
            upload.write(data)
            if header.size_bytes and upload.size > header.size_bytes:
                # refused as soon as the bytes outrun the header (not "truncated")
                raise MediaError(
                    f"the upload is longer than its header announced: {header.size_bytes}"
                    f" bytes announced, {upload.size} arrived so far"
                )
            if image is None and upload.size >= SNIFF_BYTES:
                image = (sniff_media_type(upload.head(SNIFF_BYTES)) or "").startswith("image/")
            if image:
                check_image_size(max(upload.size, header.size_bytes), self.c.inspect.limits)
        if header.size_bytes and upload.size != header.size_bytes:
            raise MediaError(
                f"truncated upload: the header announced {header.size_bytes} bytes,"
                f" {upload.size} arrived"
            )
        return header

    async def _uploaded(
        self,
        requests: AsyncIterator[Any],
        work: Callable[[Upload, Any, CallStop], T],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> T:
        """Receive an upload from ``context.peer()`` in an upload slot (shared fairly
        between clients: `UploadGate`), say so in initial metadata (`RECEIVED_KEY`: a
        client can tell a service decoding a long video from one that stalled), then
        ``work(upload, header, call)`` in a pool thread, ``call`` the call's deadline and
        end (`CallStop`), which is ended when the call is cancelled (its client gone, its
        deadline passed), so that the work stops (a video's decode: at once, killed;
        before, it ran to the 120 s decoding limit for a caller gone). The thread owns
        the slot and the upload until it finishes, even when the client goes away
        meanwhile, so cancelled calls never pile up past the limits.
        Refused a slot, it tries once more when one is given back, within
        `ADMISSION_WAIT_S`."""
        client = peer_client(context.peer())
        with ExitStack() as held:
            try:
                slot = held.enter_context(self.gate.upload(client))
            except LimitError:
                # a stream its client has just abandoned gives its slot back only once
                # this loop has run grpc's cancellation of it: the client's next upload
                # could arrive first (measured 1-3 ms before; 6 to 8 of 10 refused)
                await self.gate.wait_release(ADMISSION_WAIT_S)
                slot = held.enter_context(self.gate.upload(client))
            upload = held.enter_context(Upload(self.c.inspect.limits.max_bytes))
            slot.received = lambda: upload.size
            header = await self._receive(requests, upload, slot)
            await _say_received(context)
            owned = held.pop_all()
        call = CallStop.within(context.time_remaining())

        def job() -> T:
            with owned:
                return work(upload, header, call)

        done = asyncio.get_running_loop().run_in_executor(self.pool, job)
        # a call cancelled meanwhile (its client gone) leaves the job's outcome to nobody:
        # read it here, or asyncio logs "Future exception was never retrieved" with a
        # traceback at ERROR for an ordinary abandoned upload
        done.add_done_callback(_outcome_read)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            call.end()  # the job stops its decode, then gives the slot back
            raise

    @_rpc
    async def VerifyFile(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        report = await self._uploaded(
            requests,
            lambda upload, header, call: self._verify(upload, header, context.time_remaining, call),
            context,
        )
        return wire.report_to_pb(report)

    def _verify(
        self,
        upload: Upload,
        header: Any,
        time_left: Callable[[], float | None],
        call: CallStop,
    ) -> VerificationReport:
        """The report on a received upload (in a pool thread, inside a decode slot),
        given up when ``call`` ends (`VerificationPipeline.verify_upload`)."""
        with self.gate.decode(time_left(), call):
            sidecar = wire.signed_from_pb(header.sidecar) if header.HasField("sidecar") else None
            chunks = tuple(bytes(h) for h in header.chunk_hashes)
            receipt, unread = (
                _sidecar_receipt(header.sidecar_receipt)
                if sidecar is not None and header.HasField("sidecar_receipt")
                else (None, None)
            )
            key = bytes(header.sidecar_public_key) if sidecar is not None else b""
            report = self.p.verify_upload(
                upload,
                sidecar,
                chunks,
                header.detect,
                time_left,
                receipt,
                key,
                call,
                self.c.limits.verify_search_s,
            )
            if chunks and not upload.chunk_hashes and sidecar is not None:
                report = self._unhashed_chunks(report, sidecar, upload.size)
            if unread is not None:
                report = replace(report, reasons=(*report.reasons, unread))
        return report

    def _unhashed_chunks(
        self, report: VerificationReport, sidecar: SignedClaim, upload_size: int
    ) -> VerificationReport:
        """``report`` with a note when the sidecar's chunks were too small or too many to
        hash (`unlocated_note`), unless its claim binds the file (nothing to locate)."""
        if report.evidence.hash_match:
            return report
        note = unlocated_note(
            "the sidecar's claim",
            claimed_chunk_size(sidecar),
            upload_size,
            self.c.limits.min_chunk_bytes,
        )
        return report if note is None else replace(report, reasons=(*report.reasons, note))

    @_rpc
    async def DetectFile(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        block = await self._uploaded(
            requests,
            lambda upload, _, call: self._detect(upload, context.time_remaining(), call),
            context,
        )
        return wire.detector_to_pb(block)

    def _detect(self, upload: Upload, time_left: float | None, call: CallStop) -> dict[str, Any]:
        """The detector block of a received upload (in a pool thread, in a decode slot),
        given up when ``call`` ends."""
        with self.gate.decode(time_left, call):
            return self.p.detect_upload(upload, time_left, call)

    @_rpc
    async def Lookup(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        lim = self.c.limits
        # the call's time budget, from now (its wait for a turn included): the caller's
        # deadline or --lookup-seconds
        left = context.time_remaining()
        budget = lim.lookup_s if left is None else min(left, lim.lookup_s)
        deadline = time.monotonic() + budget
        # the turn is held until the thread ends, a call cancelled meanwhile included
        return await self.lookup_turns.in_thread(
            peer_client(context.peer()), self.lookups, self._lookup, request, deadline, budget
        )

    def _lookup(self, request: Any, deadline: float, budget: float) -> Any:
        """The Lookup reply (in a lookup thread), given up at ``deadline`` (time.monotonic)
        between parts (`lookup_parts`: LOOKUP_PART_FILES files, LOOKUP_PART_HASHES hashes),
        each part found together (one store read,
        one index search: `VerificationPipeline.lookup_many`). A query that cannot be
        answered fails the call, or with ``per_query_errors`` gets its own result with the
        error. Raises LimitError, DeadlineError, IndexLoadingError, ClaimError,
        LogIntegrityError or StorageError."""
        lim = self.c.limits
        queries = request.queries
        if len(queries) > lim.max_lookup_queries:
            raise LimitError(
                f"{len(queries)} queries in one Lookup; the limit is"
                f" {lim.max_lookup_queries} (--max-lookup-queries): send fewer per call"
            )
        # each searched hash counts, a photo's rotations and mirror images included (a
        # packed field of more than 8 is refused with its query); a video's turned hashes
        # that no call could ever fit are left out, with a note (`_turns_left_out`)
        notes, dropped = _turns_left_out(queries, lim.max_lookup_hashes)
        sizes = [_query_hashes(q) for q in queries]
        hashes = sum(sizes)
        if hashes > lim.max_lookup_hashes:
            left_out = (
                f" (not counting the {dropped} rotated and mirrored hashes of video frames,"
                " video_turned, which are left out when they do not fit)"
                if dropped
                else ""
            )
            raise LimitError(
                f"{hashes} perceptual hashes in one Lookup{left_out}; the limit is"
                f" {lim.max_lookup_hashes} (--max-lookup-hashes): send fewer per call"
            )
        self._check_index_load(hashes, budget)
        self.s.reads.refuse_unanswered()  # a known outage fails the call at once
        out = pb.LookupResponse()
        room = MAX_MESSAGE_BYTES - REPLY_MARGIN_BYTES
        for start, end in lookup_parts(sizes):
            if time.monotonic() >= deadline:
                raise _out_of_time(start, len(queries), budget)
            part = queries[start:end]
            part_notes = {i - start: n for i, n in notes.items() if start <= i < start + len(part)}
            try:
                for result in self._lookup_part(
                    part, request.per_query_errors, out.results, part_notes, deadline
                ):
                    room -= result.ByteSize() + 8  # the field's tag and length
                    if room < 0:
                        raise LimitError(
                            f"the answers to these {len(queries)} queries would not fit in one"
                            f" reply of {MAX_MESSAGE_BYTES} bytes (the answer for a signed"
                            " video carries its claim and receipt): send fewer queries per call"
                        )
            except DeadlineError as e:  # within the part: its search's rounds
                raise _out_of_time(start, len(queries), budget) from e
        return out

    def _lookup_part(
        self,
        part: Sequence[Any],
        per_query_errors: bool,
        results: Any,
        notes: Mapping[int, str],
        deadline: float | None = None,
    ) -> Iterator[Any]:
        """The LookupResults of ``part`` (LookupQuery messages), found together, each
        added to ``results`` (the reply's repeated field: built in place, not copied in)
        and yielded; ``notes`` by a query's index in ``part``, added to its report's
        reasons. A query's error is raised, or with ``per_query_errors`` put in its
        result. DeadlineError when the part's near-duplicate search is still learning
        whose its hits are at ``deadline`` (time.monotonic)."""
        facts: list[FileFacts] = []
        turns: list[bytes] = []
        failed: dict[int, ProvenanceError] = {}
        for i, q in enumerate(part):
            try:
                one, packed = _lookup_facts(q)
                facts.append(replace(one, notes=(notes[i],)) if i in notes else one)
                turns.append(packed)
            except ClaimError as e:
                if not per_query_errors:
                    raise
                failed[i] = e
        found = iter(self.p.lookup_many(facts, turns, deadline))
        for i, q in enumerate(part):
            r = failed.get(i) or next(found)
            if isinstance(r, ProvenanceError):
                if not per_query_errors:
                    raise r
                yield results.add(
                    ref=q.ref, error=_said(r, "Lookup"), error_code=status_for(r).name
                )
            else:
                yield results.add(ref=q.ref, report=wire.report_fields(r))

    def _check_index_load(self, hashes: int, budget: float) -> None:
        """Refuse, before any work, a Lookup whose ``hashes`` perceptual hashes would take
        longer than ``budget`` seconds to search because many of the index's codes are not
        yet in its tables (at the start of a large log, `MihIndex.scan_load`): an exact
        Lookup is still answered. Raises IndexLoadingError (UNAVAILABLE) while the tables
        are being built, DeadlineError otherwise."""
        if not hashes:
            return
        pending, ready_in = self.s.pdq.scan_load()
        scan_s = hashes * pending / SCAN_CODES_PER_SECOND
        if scan_s <= budget:
            return
        if ready_in > 0:
            raise IndexLoadingError(
                f"the near-duplicate index is still loading ({pending:,} perceptual hashes not"
                f" yet in its tables): searching this Lookup's {hashes:,} hashes now would take"
                f" about {scan_s:,.0f} s; retry in {ready_in:.0f} s (Lookups without"
                " perceptual hashes are answered meanwhile)",
                ready_in,
            )
        raise DeadlineError(
            f"searching this Lookup's {hashes:,} perceptual hashes would take about"
            f" {scan_s:,.0f} s, more than its budget of {budget:.3g} s: send fewer per call"
        )


class LogServicer(rpc.LogServicer):
    """The log's reads. Each waits its client's turn past --log-reads-per-minute (one
    `ReadPacer` for them all: a read costs one, a GetEntries page `entries_cost`) on the
    event loop, then runs in the RPC pool."""

    def __init__(
        self, service: ProvenanceService, limits: ServerLimits, pool: futures.Executor
    ) -> None:
        self.s = service
        self.pool = pool
        self.reads = ReadPacer(limits.log_reads_per_minute, "log reads", "--log-reads-per-minute")

    async def _paced(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        rpc_name: str,
        body: Callable[[Any], Any],
        request: Any,
        cost: int = 1,
    ) -> Any:
        """``body(request)`` run in the RPC pool once the caller's client has ``cost``
        log reads (`ReadPacer.admit`; raises ReadRateError when it would wait past the
        call's deadline)."""
        await self.reads.admit(context.peer(), rpc_name, context.time_remaining(), cost)
        return await asyncio.get_running_loop().run_in_executor(self.pool, body, request)

    @_rpc
    async def GetCheckpoint(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._paced(context, "GetCheckpoint", self._checkpoint, request)

    def _checkpoint(self, request: Any) -> Any:
        if not request.cosigned:
            return pb.GetCheckpointResponse(checkpoint=self.s.latest_checkpoint())
        note, quorum, statuses = self.s.cosigned_checkpoint()
        return pb.GetCheckpointResponse(
            checkpoint=note,
            quorum=quorum,
            witnesses=[
                pb.WitnessStatus(name=w.name, url=w.url, size=w.size, problem=w.problem)
                for w in statuses
            ],
        )

    @_rpc
    async def GetInclusionProof(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        return await self._paced(context, "GetInclusionProof", self._inclusion_proof, request)

    def _inclusion_proof(self, request: Any) -> Any:
        self.s.reads.refuse_unanswered()
        which = request.WhichOneof("leaf")
        if which is None:
            raise ClaimError("give a leaf index or a leaf hash")
        if which == "leaf_hash" and len(request.leaf_hash) != merkle.HASH_SIZE:
            raise ClaimError(
                f"a leaf hash is {merkle.HASH_SIZE} bytes (RFC 6962's SHA-256 of 0x00 and the"
                f" entry), got {len(request.leaf_hash)}"
            )
        idx, size, proof, lh = self.s.inclusion_proof(
            request.tree_size,
            index=request.leaf_index if which == "leaf_index" else None,
            leaf_hash=bytes(request.leaf_hash) if which == "leaf_hash" else None,
        )
        return pb.GetInclusionProofResponse(
            leaf_index=idx, tree_size=size, proof=proof, leaf_hash=lh
        )

    @_rpc
    async def GetConsistencyProof(
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Any:
        return await self._paced(context, "GetConsistencyProof", self._consistency_proof, request)

    def _consistency_proof(self, request: Any) -> Any:
        self.s.reads.refuse_unanswered()
        first, second, proof = self.s.consistency_proof(request.first_size, request.second_size)
        return pb.GetConsistencyProofResponse(first_size=first, second_size=second, proof=proof)

    @_rpc
    async def GetEntries(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        """A page of entries, charged for the entries asked for (`entries_cost`)."""
        cost = entries_cost(request.limit)
        return await self._paced(context, "GetEntries", self._entries, request, cost)

    def _entries(self, request: Any) -> Any:
        self.s.reads.refuse_unanswered()
        entries, _ = self.s.entries(request.start, request.limit)
        room = MAX_MESSAGE_BYTES - REPLY_MARGIN_BYTES
        kept = 0  # a page fits one reply (a video claim is large); `next` says where to go on
        for e in entries:
            room -= len(e) + 8
            if room < 0 and kept:
                break
            kept += 1
        return pb.GetEntriesResponse(
            entries=entries[:kept], start=request.start, next=request.start + kept
        )

    @_rpc
    async def GetLogKey(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await self._paced(context, "GetLogKey", self._log_key, request)

    def _log_key(self, request: Any) -> Any:
        return pb.GetLogKeyResponse(
            verifier_key=self.s.signer.verifier_key(), origin=self.s.signer.name
        )


@dataclass(frozen=True)
class _MethodDetails:
    """What an interceptor is told of a method when its handler is wrapped at registration
    (grpc.HandlerCallDetails without a call: no metadata)."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class HandlersWrapped:
    """Stands in for a `grpc.aio` server while the servicers register their methods, then
    registers each method's handler wrapped by ``interceptors`` (the first one outermost,
    as grpc orders them), once for the server's life. Only for interceptors whose handler
    is a function of the method name and the handler they wrap (all of ours:
    `ProbeBudget`, `MalformedRequestInterceptor`, `metrics.MetricsInterceptor`; their wrappers do their
    per-call work when called). Passing them to `grpc.aio.server` instead runs grpc's
    interceptor chain (coroutines, a method lookup) on every call: about 0.05 ms of the
    0.8 ms of server CPU a submission answered from a ready reply costs (measured 2
    December). Every method grpc would find comes registered (the generated
    ``add_*_to_server`` register each service's methods by name and by a generic handler
    of the same methods): both are kept, wrapped."""

    def __init__(self, server: grpc.aio.Server) -> None:
        self._server = server
        self._services: list[tuple[str, dict[str, Any]]] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Ignored: the same methods come by `add_registered_method_handlers`."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        """Keep ``service``'s method handlers (by method name) for `register`."""
        self._services.append((service, dict(handlers)))

    async def register(self, interceptors: Sequence[grpc.aio.ServerInterceptor]) -> None:
        """Register every kept handler on the server, wrapped by ``interceptors``."""
        for service, handlers in self._services:
            wrapped = {}
            for name, handler in handlers.items():
                details = cast(grpc.HandlerCallDetails, _MethodDetails(f"/{service}/{name}"))
                made: Any = handler
                for interceptor in reversed(interceptors):
                    made = await interceptor.intercept_service(
                        functools.partial(_handler_of, made), details
                    )
                wrapped[name] = made
            self._server.add_generic_rpc_handlers(
                (grpc.method_handlers_generic_handler(service, wrapped),)
            )
            self._server.add_registered_method_handlers(service, wrapped)
        self._services = []


# `reflection.enable_server_reflection` registers its asyncio servicer for a grpc.aio
# server only (an isinstance check): this stand-in is one, for registering
grpc.aio.Server.register(HandlersWrapped)


async def _handler_of(handler: Any, details: Any) -> Any:
    return handler


#: Seconds `AioServer.stop` waits for the tasks it cancels to end.
CANCEL_WAIT_S = 5.0


async def _cancel_remaining() -> None:
    """Cancel every other task of the running loop and wait (`CANCEL_WAIT_S` at most) for
    them to end, their exceptions retrieved (none is logged as never retrieved)."""
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me]
    for task in rest:
        task.cancel()
    if not rest:
        return
    done, _ = await asyncio.wait(rest, timeout=CANCEL_WAIT_S)
    for task in done:
        if not task.cancelled():
            task.exception()


class AioServer:
    """A started `grpc.aio` server on its own event-loop thread, stopped from any thread
    the way a `grpc.Server` is (`stop`, `wait_for_termination`)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        server: grpc.aio.Server,
        pools: tuple[futures.ThreadPoolExecutor, ...],
        quota: DeviceQuota,
        health: grpc.aio.Server | None = None,
        close_writer: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._thread = thread
        self._server = server
        self._health = health
        #: the port of ``--health-listen``'s server (None: none)
        self.health_port: int | None = None
        self._pools = pools
        self._quota = quota
        self._close_writer = close_writer
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self, grace: float | None = None) -> threading.Event:
        """Stop serving: calls in flight get ``grace`` seconds (None: none) to finish.
        The health port (``--health-listen``) closes first, so a load balancer stops
        sending calls while those finish. The tasks still on the loop then (a submission
        still waiting on the writer, its call ended: `CapturesServicer.SubmitCapture`) are
        cancelled and awaited (`_cancel_remaining`): their callers got CANCELLED or
        UNAVAILABLE, and a claim already queued to the writer is still its business. Before,
        the loop closed with them pending, and the log said "Task was destroyed but it is
        pending!" for each. Then the log's writer is closed (``close_writer``: what it
        holds is logged or refused, each outcome settling its device's quota room) before
        the quota counts' last flush; before, a claim the writer logged after that flush
        was never counted. Blocks until the server has stopped; returns an event that is
        set."""
        with self._lock:
            if not self._stopped.is_set():
                if self._health is not None:
                    self._call(self._health.stop(None))
                self._quota.stop_flushing()  # no new flush: one may wait 30 s in an outage
                self._call(self._server.stop(grace))
                self._call(_cancel_remaining())
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join()
                self._loop.close()
                for pool in self._pools:
                    pool.shutdown(wait=False, cancel_futures=True)
                if self._close_writer is not None:
                    self._close_writer()  # its outcomes settle the quota rooms it holds
                self._quota.close()
                self._stopped.set()
        return self._stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        """Block until `stop` has finished (or ``timeout`` seconds); True if stopped."""
        return self._stopped.wait(timeout)


def create_server(
    address: str,
    service: ProvenanceService,
    config: ServerConfig,
    health_address: str | None = None,
) -> tuple[AioServer, int]:
    """Build and start a gRPC server on ``address`` ("host:port"; port 0 picks one).

    The server is `grpc.aio` on an event-loop thread of its own: submissions and upload
    streams are served on the loop (no thread per call; `SubmitCapture` awaits the group
    commit), the other RPCs and the verification of received uploads in a pool of
    ``rpc_threads`` threads, Lookups in a pool of ``max_lookups``. The loop is uvloop's
    (libuv) rather than asyncio's own: grpc.aio's per-call work on it (its tasks,
    callbacks and completion-queue wake-ups) costs less, about 10% of the server CPU
    of a submission (measured 2 December, docs/performance.md).

    ``health_address``: also answer grpc.health.v1.Health alone on that address, a port
    of its own for a load balancer's probes (`provenance.server.health_port`; its bound
    port is the server's ``health_port``); None: none.

    Returns (server, bound port). Raises ProvenanceError when an address cannot be bound,
    also when another process listens on it (SO_REUSEPORT is off, so a second server on
    the same port is refused instead of sharing its connections).
    """
    lim = config.limits
    quiet_cancelled_calls()
    pool = futures.ThreadPoolExecutor(max_workers=lim.rpc_threads, thread_name_prefix="rpc")
    verification = VerificationServicer(service, config, pool)
    quota = DeviceQuota(lim, service.store)  # shared by the servers of the store
    loop = uvloop.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-aio", daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int, grpc.aio.Server | None, int | None]:
        server = grpc.aio.server(
            migration_thread_pool=pool,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
                # past it a new connection is closed once accepted: with the bound on
                # streams, what held streams can cost (`MAX_RPC_CONNECTIONS`)
                ("grpc.max_allowed_incoming_connections", lim.max_rpc_connections),
                # a connection with no call open this long is closed (GOAWAY)
                ("grpc.max_connection_idle_ms", idle_ms(lim.connection_idle_s)),
                # grpc core's queue of calls not yet taken up (one per method): past its
                # soft limit it drops calls at random, answered a bare CANCELLED; the hard
                # limit equal to it, nothing is dropped below it (ServerLimits)
                ("grpc.server.max_pending_requests", lim.max_pending_calls),
                ("grpc.server.max_pending_requests_hard_limit", lim.max_pending_calls),
            ],
        )
        wrapping = HandlersWrapped(server)
        registry = cast(grpc.aio.Server, wrapping)  # a stand-in, registered as one
        rpc.add_DeviceRegistryServicer_to_server(RegistryServicer(service, config, pool), registry)
        rpc.add_CapturesServicer_to_server(
            CapturesServicer(service, quota, pool, ForgeryPenalty(lim.forgeries_per_minute)),
            registry,
        )
        rpc.add_VerificationServicer_to_server(verification, registry)
        rpc.add_LogServicer_to_server(LogServicer(service, lim, pool), registry)
        # grpc's asyncio health servicer: a Watch stream waits on the loop (the sync one,
        # run on grpc.aio, held an RPC thread per open stream, also past its client's
        # cancel: 32 streams left every call served in a thread waiting for good)
        health_servicer = HealthChecks()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registry)
        names = [
            pb.DESCRIPTOR.services_by_name[n].full_name for n in pb.DESCRIPTOR.services_by_name
        ]
        for name in ["", *names]:
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        health_servicer.follow(service.ready, ["", *names])
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], registry
        )
        # per-client bounds on reflection and health checks (`ProbeBudget`) outermost
        await wrapping.register(
            [ProbeBudget(), MalformedRequestInterceptor(), metrics.MetricsInterceptor()]
        )
        port = add_port(server, address, "--listen")
        if health_address is None:
            await server.start()
            return server, port, None, None
        try:  # bound before the main port serves: a port taken refuses the start
            probes, health_port = await start_health_server(
                health_address,
                health_servicer,
                lim.max_pending_calls,
                lim.max_rpc_connections,
                lim.connection_idle_s,
            )
        except BaseException:
            await server.stop(None)
            raise
        await server.start()
        return server, port, probes, health_port

    try:
        server, port, probes, health_port = asyncio.run_coroutine_threadsafe(start(), loop).result()
    except BaseException:
        # the health servicer's readiness task (`HealthChecks.follow`) is on the loop:
        # cancelled and awaited before it closes (before: "Task was destroyed but it is
        # pending!" as a start that could not bind its port ended)
        asyncio.run_coroutine_threadsafe(_cancel_remaining(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        pool.shutdown(wait=False)
        verification.lookups.shutdown(wait=False)
        raise
    aio = AioServer(
        loop,
        thread,
        server,
        (pool, verification.lookups),
        quota,
        probes,
        close_writer=service.writer.close,
    )
    aio.health_port = health_port
    return aio, port
