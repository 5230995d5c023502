"""Bounded cost per request: the server's limits in one dataclass, and the machinery that
enforces them in the gRPC shell.

`ServerLimits` holds every limit `prov serve` exposes as a flag (the README's "Limits
and errors" table lists them). `UploadGate` admits upload streams (`VerifyFile`,
`DetectFile`) into a fixed number of slots, fewer than the RPC threads, so verifying
uploads can never hold every thread and cheap calls (checkpoints, proofs, health) always
find one; it cuts a stream that goes idle or runs past its deadline (received on the
asyncio event loop, a stalled stream holds no thread), and admits decodes into a
smaller number of slots. `DeviceQuota` meters each device's accepted submissions
(claims and bytes per minute, a sliding window counted in the store so that every
server of a log shares it). `ForgeryPenalty` meters each client's forged submissions
(signatures that do not verify), which no device quota can charge; a client is its IPv4
address or IPv6 /64, as ``prov web`` counts them, not a connection, which a forger
reopens at will: a client past its budget has its submissions refused unverified, each answer held
back a moment, so a flood of forgeries costs the server almost nothing and cannot crowd
the honest submissions out of the log writer's batches.

Refusals are `LimitError` (gRPC RESOURCE_EXHAUSTED) and `UploadTimeoutError`
(DEADLINE_EXCEEDED), decided before the expensive work starts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from provenance import metrics
from provenance.core.buckets import TokenBuckets
from provenance.core.callstop import CALL_POLL_S, CallStop, call_ended
from provenance.core.errors import (
    AuthPenaltyError,
    ConfigError,
    DeadlineError,
    ForgeryPenaltyError,
    LimitError,
    ProvenanceError,
    ReadRateError,
    StorageError,
    StoreUnavailableError,
    UploadTimeoutError,
)
from provenance.core.fair_share import NOTICE_WINDOWS, Notice, client_key, ended_slow, take_victim
from provenance.wire.contract import (
    DEFAULT_ENTRIES_PAGE,
    MAX_ENTRIES_PAGE,
    MAX_LOOKUP_HASHES,
    MAX_LOOKUP_QUERIES,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: RPC threads kept free of uploads whatever the configuration, so cheap calls always run.
MIN_FREE_THREADS = 4
#: The longest wait or deadline a limit in seconds takes (a week).
MAX_SECONDS = 7 * 24 * 3600
#: Seconds the advisory detector may take to score one file, by default: a still image
#: on a CPU takes about a second, a video's 16 frames about 10 (a GPU: milliseconds).
DETECTOR_TIMEOUT_S = 30.0
#: Seconds one VerifyFile's near-duplicate (PDQ) searches may spend in all before a further
#: round of one is left out (`prov serve --verify-search-seconds`;
#: `provenance.server.service.SearchBudget`); the report then says the search was cut
#: short. A search needs more than one round only after a start, near more than 64 entries
#: whose device it has not read yet (a clip of 600 frames near 20,000 claims of one device
#: logged before the start: 10.4 s); an honest search takes one round, never cut.
VERIFY_SEARCH_S = 5.0


#: What one call held by the server costs in memory (grpc core's call state, grpc.aio's
#: task, the request as received), for the small requests of the cheap methods, in
#: bytes: measured 11 KiB (bench/bench_burst.py: 8,000 calls at once of GetCheckpoint and
#: SubmitCapture, +87 MiB of server RSS at the peak). A request's own bytes come on top:
#: a 64 KiB request held about 90 KiB.
PENDING_CALL_BYTES = 11 * 1024

#: Streams (calls) one HTTP/2 connection may have open at once: the server's
#: SETTINGS_MAX_CONCURRENT_STREAMS (``grpc.max_concurrent_streams``). grpc's default is no
#: bound. Measured 5 December (grpcio 1.85, loopback): one connection opening streams
#: that send their headers and never their message (a unary method waiting for its
#: request, which nothing else bounds) grew the server by about 21 KiB a stream, 210 MiB
#: for 10,000 and 543 MiB for 30,000 (not given back after they ended); under this bound,
#: 10,000 such streams grew it by 43 MiB, the rest waiting on the client. Other
#: connections were answered as fast throughout (0.5-0.8 ms). Not lower: a client with
#: more calls in flight on one connection than the bound loses some of them UNAVAILABLE
#: ("RST_STREAM with error code 7", REFUSED_STREAM: grpc does not queue them all on its
#: side), 463 of 3,000 at once here; 2,000 at once were all answered, as the bursts of
#: bench/bench_burst.py (1,000 a connection at 8,000 calls on 8) and
#: tests/test_burst_limits.py are. The bound is a connection's; a client's connections
#: are not counted.
MAX_STREAMS_PER_CONNECTION = 2048

#: Client connections the gRPC server holds open at once, by default (each port: the
#: main one and the health port): ``grpc.max_allowed_incoming_connections``; past it grpc
#: core closes a new connection as soon as it is accepted (the client sees UNAVAILABLE).
#: Streams are bounded per connection only (`MAX_STREAMS_PER_CONNECTION`) and nothing in
#: grpc bounds how long a stream may wait for its request, so without this bound
#: connections that each opened 2,048 streams sending their headers and never their
#: message grew the server without end: measured 5 December (grpcio 1.85.3, loopback, a
#: connection a second) +42 MiB for 1 connection, +422 MiB for 10 and +2,100 MiB for 50.
#: The worst case is about this many x 42 MiB (1,000: about 41 GiB): lower it to what
#: the host's memory allows (`--max-rpc-connections`). Not lower by default: a fleet of
#: devices calling the server directly holds a connection each, and one client's idle
#: connections (300 of them) must not shut the others out (tests/test_grpc_connections).
MAX_RPC_CONNECTIONS = 1000
#: The most ``--max-rpc-connections`` takes (grpc reads the channel argument as a C int;
#: a million connections is past any host's descriptors anyway).
MAX_RPC_CONNECTIONS_CAP = 1_000_000
#: Seconds a client connection may go with no call open before the server closes it
#: (GOAWAY, then the close: ``grpc.max_connection_idle_ms``, which grpc spreads by up to
#: 10% either way), by default. Before, nothing closed one: an idle connection held a
#: descriptor and a place under `MAX_RPC_CONNECTIONS` until its client left. A grpc
#: client reconnects by itself at its next call. A call open, even one waiting for its
#: request, keeps its connection: what bounds those is `MAX_STREAMS_PER_CONNECTION` and
#: `MAX_RPC_CONNECTIONS`, not time. A one-message method's call is handed to grpc.aio's
#: own read, which nothing of ours can time: a time limit needs each such method served
#: as a client stream, its one message read under a timer (tried 5 December on a bare
#: grpc.aio echo, 2,000 calls held by a raw connection were all answered and freed
#: after the timer's 2 s), at about 20 us more server CPU a call (241 -> 261-264 us
#: median, 9 rounds alternated, a loaded machine), a few % of SubmitCapture's; and a
#: client that opens such calls again as they end holds as much as before. Not done.
CONNECTION_IDLE_S = 600.0


def idle_ms(seconds: float) -> int:
    """``grpc.max_connection_idle_ms`` for an idle time of ``seconds`` (more than 0): whole
    milliseconds, at least 1."""
    return max(1, round(seconds * 1000))


@dataclass(frozen=True)
class ServerLimits:
    """Limits of the gRPC shell (`prov serve` flags in brackets).

    rpc_threads: size of the RPC thread pool [--rpc-threads]; max_uploads: upload streams
    (VerifyFile, DetectFile) served at once, the rest refused [--max-uploads]; max_decodes:
    uploads decoded (pixels, frames, C2PA) at once [--max-decodes]; decode_wait_s: how long
    an upload waits for a decode slot before it is refused, seconds
    [--decode-wait-seconds]; upload_idle_s: seconds
    an upload stream may go without a message [--upload-idle-seconds]; upload_deadline_s:
    seconds from the call's start to its last message [--upload-deadline-seconds];
    upload_min_rate: bytes a second an upload must average, once it has run for
    ``upload_idle_s``, to keep its slot while every slot is taken and another upload
    arrives (`UploadGate`) [--upload-min-rate-kb]; 0: none;
    min_chunk_bytes: smallest upload message except the last, and smallest chunk size of a
    sidecar's chunked binding the server hashes chunk by chunk [--min-chunk-kb];
    max_lookups: Lookup calls served at once, each in its own thread outside the RPC
    pool, and as many waiting, in turn per client; the rest refused [--max-lookups];
    max_lookup_queries: files in one Lookup [--max-lookup-queries]; max_lookup_hashes:
    perceptual hashes (video frames) in one Lookup [--max-lookup-hashes]; lookup_s: seconds
    one Lookup may run, counted from its arrival, or less when the caller's deadline is
    sooner [--lookup-seconds]; verify_search_s: seconds one VerifyFile's near-duplicate
    searches may spend in all before a further round is left out and the report says the
    search was cut short (`VERIFY_SEARCH_S`), or less when the caller's deadline is sooner
    [--verify-search-seconds];
    quota_claims_per_minute, quota_bytes_per_minute: accepted submissions and signed-claim
    bytes per device per minute, bursts up to one minute's worth
    [--quota-claims-per-minute, --quota-claim-kb-per-minute]; 0 turns a quota off;
    forgeries_per_minute: submissions with a signature that does not verify, or naming a
    device nobody enrolled, that one client (IPv4 address, IPv6 /64) may send per minute,
    bursts up to one minute's worth, before its submissions are refused
    (`ForgeryPenalty`) [--forgeries-per-minute]; 0: no limit;
    auth_failures_per_minute: failed authentications (admin calls with a wrong or
    missing admin token, refused Enroll calls, Enroll calls answered again) one client
    may make per minute, bursts up
    to one minute's worth, before its admin and Enroll calls are refused unchecked
    (`AuthFailureBudget`) [--auth-failures-per-minute]; 0: no limit;
    device_reads_per_minute: device look-ups (GetDevice) one client may make per minute,
    bursts up to one minute's worth; past it its look-ups wait their turn on the event
    loop, and one that would wait past its deadline (or `READ_WAIT_MAX_S`) is refused
    (`ReadPacer`) [--device-reads-per-minute]; 0: no limit;
    log_reads_per_minute: reads of the log (GetCheckpoint, GetInclusionProof,
    GetConsistencyProof, GetLogKey: one each; GetEntries: one per `ENTRIES_PER_READ`
    entries asked for) one client may make per minute, paced as device look-ups are
    (a `ReadPacer` of its own) [--log-reads-per-minute]; 0: no limit;
    detector_timeout_s: seconds the advisory detector may take to score one file (an
    image, or a video's sampled frames), counted from when scoring starts, or less when the
    call's deadline is sooner; past it the verdict is returned without a score (the block
    says why), the decode slot is given back, and the file's crops still queued are
    dropped [--detector-timeout];
    max_rpc_connections: client connections the server holds open at once, on each of its
    ports (``grpc.max_allowed_incoming_connections``; `MAX_RPC_CONNECTIONS` says why and
    what it bounds) [--max-rpc-connections];
    connection_idle_s: seconds a client connection may go with no call open before it is
    closed, on each port (``grpc.max_connection_idle_ms``; `CONNECTION_IDLE_S`)
    [--connection-idle-seconds];
    max_pending_calls: calls of one method that have arrived and that the event loop has
    not taken up yet, queued by grpc core (``grpc.server.max_pending_requests``, its hard
    limit set to the same, so none is dropped below it) [--max-pending-calls]. Past its
    queue grpc core drops calls, and their clients get a bare CANCELLED that no handler
    sees (counted by /metrics ``prov_grpc_calls_unanswered``, from grpc's channelz); with
    grpc's defaults (grpcio 1.85: random drops from 1,000 pending calls of a method, all
    from 3,000) a burst of 3,000-4,000 calls from one client lost 2-9%.
    The bound: 10,000 small calls hold about 10,000 x `PENDING_CALL_BYTES`, 110 MiB, per
    method flooded (a large request holds its bytes on top, up to the message cap).
    grpc.aio's ``maximum_concurrent_rpcs`` is not used: in grpcio 1.85 a server at that
    limit sometimes refused calls RESOURCE_EXHAUSTED and sometimes left them waiting in
    this queue (2 December: a limit of 4 held by 4 open uploads, in 2 runs of 4 the next
    calls waited until an upload ended).

    Raises ConfigError when a value is out of range or uploads could take every thread.
    """

    rpc_threads: int = 32
    max_uploads: int = 8
    max_decodes: int = 2
    decode_wait_s: float = 10.0
    upload_idle_s: float = 30.0
    upload_deadline_s: float = 600.0
    upload_min_rate: int = 8 * 1024
    min_chunk_bytes: int = 64 * 1024
    max_lookups: int = 4
    max_lookup_queries: int = MAX_LOOKUP_QUERIES
    max_lookup_hashes: int = MAX_LOOKUP_HASHES
    lookup_s: float = 30.0
    verify_search_s: float = VERIFY_SEARCH_S
    quota_claims_per_minute: int = 600
    quota_bytes_per_minute: int = 32 * 1024 * 1024
    forgeries_per_minute: int = 60
    auth_failures_per_minute: int = 20
    device_reads_per_minute: int = 6000
    log_reads_per_minute: int = 6000
    max_pending_calls: int = 10_000
    max_rpc_connections: int = MAX_RPC_CONNECTIONS
    connection_idle_s: float = CONNECTION_IDLE_S
    detector_timeout_s: float = DETECTOR_TIMEOUT_S

    def __post_init__(self) -> None:
        for name in (
            "max_uploads",
            "max_decodes",
            "max_lookups",
            "max_lookup_queries",
            "max_lookup_hashes",
            "max_pending_calls",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.max_rpc_connections <= MAX_RPC_CONNECTIONS_CAP:
            raise ConfigError(
                f"max_rpc_connections must be at least 1 and at most {MAX_RPC_CONNECTIONS_CAP:,},"
                f" got {self.max_rpc_connections}"
            )
        if self.max_uploads > self.rpc_threads - MIN_FREE_THREADS:
            raise ConfigError(
                f"{self.max_uploads} concurrent uploads need at least"
                f" {self.max_uploads + MIN_FREE_THREADS} RPC threads (got {self.rpc_threads}):"
                f" {MIN_FREE_THREADS} are kept for other calls"
            )
        for name in (
            "upload_idle_s",
            "upload_deadline_s",
            "decode_wait_s",
            "lookup_s",
            "verify_search_s",
            "detector_timeout_s",
            "connection_idle_s",
        ):
            # inf would be no limit at all; past MAX_SECONDS a lock's or select's wait
            # raises OverflowError (1e10 s: "timestamp out of range") when it has to wait
            if not 0 < getattr(self, name) <= MAX_SECONDS:
                raise ConfigError(
                    f"{name} must be more than 0 and at most {MAX_SECONDS} seconds (a week),"
                    f" got {getattr(self, name)}"
                )
        for name in (
            "min_chunk_bytes",
            "upload_min_rate",
            "quota_claims_per_minute",
            "quota_bytes_per_minute",
            "forgeries_per_minute",
            "auth_failures_per_minute",
            "device_reads_per_minute",
            "log_reads_per_minute",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} cannot be negative, got {getattr(self, name)}")


@dataclass(eq=False)
class UploadSlot:
    """One upload's hold on an `UploadGate` slot: its client (`peer_client`), when it
    started (`time.monotonic`), whether it is still receiving, how many of the file's
    bytes it has received, and whether another upload took its slot (it is then cut:
    `UploadGate.messages` raises LimitError), and if so for its pace (``slow``, bytes a
    second) rather than its client's share."""

    client: str
    started: float = field(default_factory=time.monotonic)
    receiving: bool = True
    evicted: bool = False
    slow: float | None = None
    #: its client was on notice when it began (`UploadGate`): measured at once
    on_notice: bool = False
    _evict: Callable[[], None] | None = None
    #: bytes of the file received so far (set by the caller: the upload's size)
    received: Callable[[], int] = lambda: 0


class UploadGate:
    """Admission of upload streams, their idle timeout and deadline, and slots for decodes.

    Uploads are received on the asyncio server's event loop, where a stalled stream
    holds no thread; a decode (run in the RPC thread pool) waits for one of
    ``max_decodes`` slots.

    The ``max_uploads`` slots are shared fairly between clients (`peer_client`: an IPv4
    address, an IPv6 /64): a lone client may take them all, but when they are all taken
    and an upload arrives from a client holding at least two fewer than the client
    holding the most, the upload of that client still receiving that has received the
    fewest bytes (the newest of those) is cut (LimitError, "try again") and its slot goes
    to the newcomer; a client's last upload is never cut for its share. Before, one
    client's 8 streams, each sending 64 KiB every 29 s (18 KiB/s in all), held every slot
    for their 600 s and again, and every other caller, the web front-end's uploads
    included, was refused.
    The fewest bytes, not the newest: the web front-end relays all its users' uploads as
    one client, and a large file it relayed was its newest upload still receiving
    whenever the small ones it started later had arrived, so every newcomer from another
    address cut it (retried, it was the newest again); the upload that has received the
    least loses the least work.

    Failing that, the newcomer takes the slot of the slowest upload still receiving that
    has run for more than ``upload_idle_s`` and averaged under ``upload_min_rate`` bytes
    a second since its start, whoever's it is. Before, the shares alone let a client with
    8 addresses (8 IPv4 addresses, or 8 IPv6 /64s: a home's /56 has 256) hold every slot
    with one stalled stream each, 64 KiB every 20 s (26 KiB/s in all), and every other
    upload, the web front-end's included, was refused for their 600 s and again; now each
    slot costs it ``upload_min_rate`` (64 KiB/s for all 8 at the default 8 KiB/s). The
    default is a quarter of the 32 KiB/s the web front-end asks of its own uploaders: at
    32, 9 honest clients uploading at 25 KiB/s (a phone on 200 kbit/s) into 8 slots cut
    each other about 140 times in 800 s and finished 26 uploads against 80 with the rule
    off (a simulation at 1/100 time scale, 2 runs); an upload slower than the floor still
    loses its slot whenever the server is full.

    Starting again does not restart that clock: a client whose stream averaged under
    ``upload_min_rate`` (after its first second; cancelled, cut or whole: `_note`) is on
    notice for `NOTICE_WINDOWS` idle windows, and its uploads begun meanwhile are
    measured at once (`take_victim`'s ``on_notice``). Before, 2 clients each cancelling
    a stalled stream and starting another every 1.5 s, within a 2 s window, held both
    slots of a server for as long as they kept it up.
    """

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self._decodes = threading.BoundedSemaphore(limits.max_decodes)
        self._lock = threading.Lock()  # a slot is taken on the loop, given back in a thread
        self._held = 0  # slots taken (an evicted upload's counts for its successor)
        self._slots: dict[str, list[UploadSlot]] = {}  # each client's, oldest first
        self._notice = Notice()  # clients whose upload ended unfinished under the pace
        # uploads refused a slot waiting for one to be given back (`wait_release`)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def _victim(self, client: str) -> UploadSlot | None:
        """Of the client holding the most slots, when that is at least two more than
        ``client`` holds, the upload still receiving that has received the fewest bytes
        (the newest of those); else the slowest upload under the minimum pace (its
        ``slow`` set to its pace); else None (`take_victim`). Under ``_lock``."""
        found = take_victim(
            self._slots.values(),
            len(self._slots.get(client, ())),
            time.monotonic(),
            self.limits.upload_idle_s,
            self.limits.upload_min_rate,
            arriving=lambda s: s.receiving and not s.evicted,
            received=lambda s: s.received(),
            started=lambda s: s.started,
            on_notice=lambda s: s.on_notice,
        )
        if found is None:
            return None
        victim, pace = found
        victim.slow = pace  # None when taken by share
        return victim

    def _note(self, slot: UploadSlot) -> None:
        """Put ``slot``'s client on notice if its stream, ending now or losing its slot,
        averaged under the pace (`ended_slow`). Under ``_lock``.

        Whole or not: grpc.aio ends a stream its client cancelled as if it were whole,
        so a slow stream whose client cancels it counts the same as one that ends, and
        so does an honest upload slower than the pace (it loses the idle window's grace
        for its client's next uploads, no more)."""
        now = time.monotonic()
        lim = self.limits
        age = now - slot.started
        if ended_slow(True, slot.received(), age, lim.upload_min_rate, lim.upload_idle_s):
            self._notice.put(slot.client, now, now + NOTICE_WINDOWS * lim.upload_idle_s)

    @contextmanager
    def upload(self, client: str = "") -> Iterator[UploadSlot]:
        """Hold an upload slot for the block, for ``client`` (`peer_client`); raises
        LimitError when all are taken and none can be taken from a client holding more
        (see the class docstring)."""
        slot = UploadSlot(client)
        with self._lock:
            slot.on_notice = self._notice.on(client, time.monotonic())
            victim = None
            if self._held >= self.limits.max_uploads:
                victim = self._victim(client)
                if victim is None:
                    raise LimitError(
                        f"the server is already receiving {self.limits.max_uploads} uploads,"
                        " its limit (--max-uploads): try again shortly"
                    )
                victim.evicted = True  # its slot is this upload's now
                self._note(victim)
                self._slots[victim.client].remove(victim)
                if not self._slots[victim.client]:
                    del self._slots[victim.client]
            else:
                self._held += 1
            self._slots.setdefault(client, []).append(slot)
        if victim is not None and victim._evict is not None:
            victim._evict()
        try:
            yield slot
        finally:
            waiters = []
            with self._lock:
                if not slot.evicted:
                    self._held -= 1
                    mine = self._slots[client]
                    mine.remove(slot)
                    if not mine:
                        del self._slots[client]
                    waiters, self._waiters = self._waiters, []
            for loop, fut in waiters:  # given back in a pool thread, or on the loop
                try:
                    loop.call_soon_threadsafe(_wake, fut)
                except RuntimeError:  # that loop is closed: nobody waits
                    pass

    async def wait_release(self, timeout: float) -> None:
        """Return once an upload slot is given back (at once if one is free), or after
        ``timeout`` seconds, whichever is first. Call on the event loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._held < self.limits.max_uploads:
                return
            self._waiters.append((loop, fut))
        try:
            await asyncio.wait([fut], timeout=timeout)
        finally:
            with self._lock:
                if (loop, fut) in self._waiters:
                    self._waiters.remove((loop, fut))

    async def messages(
        self, requests: AsyncIterator[Any], slot: UploadSlot | None = None
    ) -> AsyncGenerator[Any, None]:
        """The stream's messages, each within ``upload_idle_s`` of the one before and all
        within ``upload_deadline_s`` of the call's start. Raises UploadTimeoutError when a
        message is late (the caller aborts the call with DEADLINE_EXCEEDED), LimitError
        when another client's upload took ``slot`` (see `upload`).

        The timer runs only while the stream is awaited: the caller may await other
        things between messages (`VerificationServicer` waits for the hashing to catch
        up); it closes the generator when it stops early (`contextlib.aclosing`)."""
        lim = self.limits
        loop = asyncio.get_running_loop()
        end = loop.time() + lim.upload_deadline_s
        it = aiter(requests)
        # one timer, moved on by each message (no task per message); at a time of the
        # loop's clock, as `reschedule` takes it (asyncio.timeout would take it as a
        # delay: the first message's wait had no limit)
        timer = asyncio.timeout_at(min(end, loop.time() + lim.upload_idle_s))
        waiting = False  # awaiting the next message: the timer may fire now

        def evict() -> None:
            if waiting:  # else the check before the next wait sees it
                timer.reschedule(loop.time())

        if slot is not None:
            slot._evict = evict

        def cut() -> LimitError:
            why = (
                f"this upload averaged {slot.slow / 1024:.1f} KiB/s, under the server's"
                f" minimum of {lim.upload_min_rate / 1024:g} KiB/s (--upload-min-rate-kb),"
                " so another upload took its slot: send it faster, or try again later"
                if slot is not None and slot.slow is not None
                else "this client held the most, so another client's upload took one:"
                " try again shortly"
            )
            return LimitError(
                f"upload cut: the server's {lim.max_uploads} upload slots (--max-uploads)"
                f" are all taken and {why}"
            )

        try:
            async with timer:
                while True:
                    if slot is not None and slot.evicted:
                        raise cut()
                    waiting = True
                    try:
                        msg = await anext(it)
                    except StopAsyncIteration:
                        break
                    finally:
                        waiting = False
                    # paused while the caller has the message: else it cancelled whatever
                    # the caller awaited then, and grpc.aio answers a handler ending in
                    # CancelledError with no status: its client waited for its deadline
                    timer.reschedule(None)
                    yield msg
                    timer.reschedule(min(end, loop.time() + lim.upload_idle_s))
            # the stream may end in the loop turn between the cut and its timer: its slot
            # is the newcomer's now, so it must not go on to be decoded beside it
            if slot is not None and slot.evicted:
                raise cut()
        except TimeoutError as e:
            if slot is not None and slot.evicted:
                raise cut() from e
            if loop.time() < end - 1e-3:
                raise UploadTimeoutError(
                    f"upload idle for more than {lim.upload_idle_s:g} s"
                    " (--upload-idle-seconds): send the file without pauses"
                ) from e
            raise UploadTimeoutError(
                f"upload still arriving after {lim.upload_deadline_s:g} s,"
                " the server's limit per upload (--upload-deadline-seconds)"
            ) from e
        finally:
            if slot is not None:
                slot.receiving = False
                with self._lock:
                    self._note(slot)
                slot._evict = None

    @contextmanager
    def decode(self, time_left: float | None, call: CallStop | None = None) -> Iterator[None]:
        """Hold a decode slot for the block, waiting up to ``decode_wait_s`` (or
        ``time_left``, the seconds left of the call's deadline, if less); raises
        LimitError when none frees up. ``call``: the call the decode is for (None: none):
        its wait gives up as soon as the call ends (cancelled by its caller, or its
        deadline passed), and a slot taken for a call that has ended is given back at
        once; both raise DeadlineError and the file is not decoded. Before, a call
        cancelled while it waited decoded its file anyway once a slot was free, holding
        the slot for nobody. Counted by /metrics (``prov_decode_slot_waits_total``).
        Blocks: call from a pool thread."""
        lim = self.limits
        wait = lim.decode_wait_s if time_left is None else min(time_left, lim.decode_wait_s)
        with metrics.DECODES_WAITING.track_inprogress():
            taken = self._take_decode(time.monotonic() + max(0.0, wait), call)
        if call is not None and call.over():
            if taken:
                self._decodes.release()
            metrics.DECODE_WAITS.labels("call_ended").inc()
            raise call_ended("while it waited for a decode slot", "its file was not decoded")
        if not taken:
            metrics.DECODE_WAITS.labels("refused").inc()
            raise LimitError(
                f"the server is decoding {lim.max_decodes} files, its limit"
                f" (--max-decodes), and none finished within {wait:.0f} s: try again shortly"
            )
        metrics.DECODE_WAITS.labels("taken").inc()
        try:
            with metrics.DECODES_BUSY.track_inprogress():
                yield
        finally:
            self._decodes.release()

    def _take_decode(self, until: float, call: CallStop | None) -> bool:
        """Take a decode slot, waiting until ``until`` (time.monotonic) at most, or,
        looking every `CALL_POLL_S`, until ``call`` has ended; whether one was taken."""
        while True:
            left = until - time.monotonic()
            step = left if call is None else min(left, CALL_POLL_S)
            if self._decodes.acquire(timeout=max(0.0, step)):
                return True
            if left <= step or (call is not None and call.ended.is_set()):
                return False


class QuotaStore(Protocol):
    """Where servers sharing a log count each device's submissions (`provenance.store`)."""

    def add_quota_usage(
        self, window: int, usage: Sequence[tuple[bytes, int, int]], keep_from: int
    ) -> None: ...

    def quota_usage(self, device_id: bytes, windows: Sequence[int]) -> list[tuple[int, int]]: ...


#: Seconds between flushes of a server's counts to the store, and how long a device's
#: count read from the store is reused: other servers' submissions show within about 2x.
QUOTA_SYNC_S = 1.0


class DeviceQuota:
    """Per-device quotas: claims and signed-claim bytes per minute, counted in the store
    so that every server of a log (several `prov serve` over one PostgreSQL) shares them.

    A sliding-window counter (as in Cloudflare's and nginx's rate limiters): the count
    of the current minute plus the previous minute's weighted by the part of it still
    inside the last 60 s. `admit` refuses a device at its quota, counting the
    submissions it has in flight in this server (held until `settle`); `settle` counts a
    logged submission here at once and in the store within QUOTA_SYNC_S (a thread
    flushes the counts; each device's stored count is read at most once per
    QUOTA_SYNC_S). Only verified submissions are charged, so nobody can spend another
    device's quota with forged requests. ``store`` None counts in this process only;
    ``clock`` returns seconds since the epoch.
    """

    def __init__(
        self,
        limits: ServerLimits,
        store: QuotaStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._per_min = (limits.quota_claims_per_minute, limits.quota_bytes_per_minute)
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        # (device, minute) -> [claims, bytes] counted here and not yet in the store
        self._pending: dict[tuple[bytes, int], list[int]] = {}
        # (device, minute) -> [claims, bytes] counted here since the stored count was read
        self._local: dict[tuple[bytes, int], list[int]] = {}
        self._stored: dict[bytes, tuple[float, list[tuple[int, int]]]] = {}
        # device -> (submissions, bytes) admitted here and not yet settled
        self._held: dict[bytes, tuple[int, int]] = {}
        self._flusher: threading.Thread | None = None
        self._closed = threading.Event()
        # the flusher's last flush failed because the store could not be reached: `close`
        # does not wait for it once more
        self._unreachable: StoreUnavailableError | None = None

    def _used(
        self, device_id: bytes, now: float, fresh: list[tuple[int, int]] | None
    ) -> tuple[float, float]:
        """(claims, bytes) the device used in the 60 s before ``now``, its stored count
        replaced by ``fresh`` when given (just read from the store). Call locked."""
        minute = int(now // 60)
        windows = (minute - 1, minute)
        stored = self._stored.get(device_id, (0.0, [(0, 0), (0, 0)]))[1]
        if fresh is not None:
            stored = fresh
            self._stored[device_id] = (now, stored)
            for w in windows:  # counted here since: what is not in the store yet
                pending = self._pending.get((device_id, w))
                if pending is None:
                    self._local.pop((device_id, w), None)
                else:
                    self._local[(device_id, w)] = list(pending)
        counts = []
        for w, (c, b) in zip(windows, stored, strict=True):
            here = self._local.get((device_id, w), [0, 0])
            counts.append((c + here[0], b + here[1]))
        weight = 1.0 - (now % 60) / 60
        return (
            counts[0][0] * weight + counts[1][0],
            counts[0][1] * weight + counts[1][1],
        )

    def reads_store(self, device_id: bytes) -> bool:
        """Whether `admit` of this device would read the store now (its stored count is
        older than QUOTA_SYNC_S): an asyncio caller then runs it off the event loop."""
        if self._store is None or not any(self._per_min):
            return False
        with self._lock:
            at = self._stored.get(device_id, (-1e18, None))[0]
        return self._clock() - at > QUOTA_SYNC_S

    def admit(self, device_id: bytes, size: int) -> None:
        """Hold room for one submission of ``size`` bytes from the device until `settle`
        is called with its outcome; raises LimitError when its count in the last minute
        plus the submissions it has in flight here leave no room (StorageError when the
        store fails; while it cannot be reached, the counts this server holds decide).
        Before: checked, not held, so a burst of a device's concurrent submissions all
        passed before any was counted (40 at once against a quota of 5 were all logged)."""
        per_claims, per_bytes = self._per_min
        if not (per_claims or per_bytes):
            return
        now = self._clock()
        # the store read (when the stored count is older than QUOTA_SYNC_S) without `_lock`
        # held: a read that waits (PostgreSQL busy, a new SQLite reader while another
        # process holds the write lock) must not hold up `admit` and `settle` of other
        # devices on the event loop
        fresh = None
        if self._store is not None and self.reads_store(device_id):
            minute = int(now // 60)
            try:
                fresh = self._store.quota_usage(device_id, (minute - 1, minute))
            except StoreUnavailableError:
                # the database cannot be reached (the store waits briefly for it): the
                # counts held here decide, the stored count last read and what this
                # server counted and holds since; read again after QUOTA_SYNC_S. Nothing
                # is logged before the database is back (the writer waits for it), and a
                # device still has at most its quota in flight here
                with self._lock:
                    at, last = self._stored.get(device_id, (now, [(0, 0), (0, 0)]))
                    # the last count read, its minutes moved to the current two
                    moved = {0: last, 1: [last[1], (0, 0)]}.get(minute - int(at // 60))
                    self._stored[device_id] = (now, moved or [(0, 0), (0, 0)])
        with self._lock:  # counted, checked and held at once
            claims, nbytes = self._used(device_id, now, fresh)
            held = self._held.get(device_id, (0, 0))
            if per_claims and claims + held[0] + 1 > per_claims:
                raise LimitError(
                    f"device {device_id.hex()[:16]} sent more than {per_claims} claims in a"
                    " minute, its quota (--quota-claims-per-minute): retry later"
                )
            if per_bytes and nbytes + held[1] + min(size, per_bytes) > per_bytes:
                raise LimitError(
                    f"device {device_id.hex()[:16]} sent more than {per_bytes / 1024:.0f} KiB"
                    " of claims in a minute, its quota (--quota-claim-kb-per-minute): retry"
                    " later"
                )
            self._held[device_id] = (held[0] + 1, held[1] + size)

    def settle(self, device_id: bytes, size: int, logged: bool) -> None:
        """The outcome of a submission `admit` let in: its held room is given back, and it
        is counted when ``logged`` (a new claim the log took; not a replay, not one the
        log refused)."""
        if not any(self._per_min):
            return
        with self._lock:
            claims, nbytes = self._held.pop(device_id, (1, size))
            if claims > 1:
                self._held[device_id] = (claims - 1, nbytes - size)
        if logged:
            self._charge(device_id, size)

    def _charge(self, device_id: bytes, size: int) -> None:
        """Count one accepted claim of ``size`` bytes for the device."""
        if not any(self._per_min):
            return
        with self._lock:
            key = (device_id, int(self._clock() // 60))
            if self._store is None and key not in self._local:  # no flush prunes them
                for old in [k for k in self._local if k[1] < key[1] - 1]:
                    del self._local[old]
            for counts in (self._local, self._pending) if self._store else (self._local,):
                c = counts.setdefault(key, [0, 0])
                c[0] += 1
                c[1] += size
            if self._store is not None and self._flusher is None and not self._closed.is_set():
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="quota-flush", daemon=True
                )
                self._flusher.start()

    def flush(self) -> None:
        """Add the counts not yet stored to the store (and drop counters older than the
        previous minute). Raises StorageError when the store fails (the counts are kept
        for the next flush)."""
        if self._store is None:
            return
        now = self._clock()
        minute = int(now // 60)
        with self._lock:
            pending, self._pending = self._pending, {}
            for key in [k for k in self._local if k[1] < minute - 1]:
                del self._local[key]
            for dev in [d for d, (at, _) in self._stored.items() if now - at > 120]:
                del self._stored[dev]
        by_window: dict[int, list[tuple[bytes, int, int]]] = {}
        for (device_id, w), (c, b) in pending.items():
            by_window.setdefault(w, []).append((device_id, c, b))
        try:
            for w, usage in sorted(by_window.items()):
                self._store.add_quota_usage(w, usage, keep_from=minute - 1)
        except BaseException:
            with self._lock:  # not lost: added again by the next flush
                for key, (c, b) in pending.items():
                    counts = self._pending.setdefault(key, [0, 0])
                    counts[0] += c
                    counts[1] += b
            raise

    def _flush_loop(self) -> None:
        while not self._closed.wait(QUOTA_SYNC_S):
            try:
                self.flush()
                self._unreachable = None
            except ProvenanceError as e:
                self._unreachable = e if isinstance(e, StoreUnavailableError) else None
                if not self._closed.is_set():
                    log.warning("device quota counts not stored yet: %s", e)

    def stop_flushing(self) -> None:
        """Start no more periodic flushes (a server stopping: one started in a database
        outage waits 30 s for a connection); `close` still stores what is counted."""
        self._closed.set()

    def close(self) -> None:
        """Stop the flushing thread and store what is counted (call before the store
        closes; a store that fails now loses at most QUOTA_SYNC_S of counts). When the
        flusher's last flush found the store unreachable (a database outage), the counts
        are not tried once more: each try waits for a connection (30 s with PostgreSQL),
        and a server stopping in an outage waited for two."""
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join()
        if self._unreachable is not None:
            log.warning("device quota counts not stored: %s", self._unreachable)
            return
        try:
            self.flush()
        except ProvenanceError as e:
            log.warning("device quota counts not stored: %s", e)


#: How long a refused submission of a penalised connection waits before its answer, in
#: seconds (less when the call's deadline is sooner): a client flooding forgeries with n
#: calls in flight gets at most n answers per FORGERY_HOLD_S, so refusing it costs the
#: server little, while an honest client that retries after ``retry_after_s`` never waits.
#: The same for an admin or Enroll call of a client out of its `AuthFailureBudget`.
FORGERY_HOLD_S = 1.0
#: Clients whose forgery counts are kept; the least recently charged go first.
FORGERY_PEERS_KEPT = 4096


def _wake(waiter: asyncio.Future[None]) -> None:
    """Let a waiter look again: a submission waiting for a forgery token (its timer ran
    out), an upload waiting for a slot (`UploadGate.wait_release`)."""
    if not waiter.done():
        waiter.set_result(None)


def _wake_first(queue: deque[asyncio.Future[None]]) -> None:
    """Wake the oldest submission of ``queue`` still waiting (taking it off the queue)."""
    while queue:
        waiter = queue.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


def peer_client(peer: str) -> str:
    """The client a gRPC peer (``context.peer()``: ``ipv4:192.0.2.1:5000``,
    ``ipv6:[2001:db8::1]:5000``, percent-encoded or not) is counted as: its address's
    `provenance.web.guard.client_key` (an IPv4 address, an IPv6 /64), without the port,
    since a forger opens a new connection (a new port) whenever it likes. Any other peer
    (``unix:...``) as it is."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer
    host = urllib.parse.unquote(rest).rpartition(":")[0]
    return client_key(host[1:-1] if host.startswith("[") else host)


class AuthFailureBudget:
    """Per client (`peer_client`: an IPv4 address or an IPv6 /64, all its connections
    together), a token bucket of failed authentications: ``per_minute`` tokens, refilled
    at ``per_minute`` a minute; each admin call refused for its admin token (wrong or
    missing) and each Enroll refused (a wrong, spent or expired enrollment token, a proof
    of possession or certificate that does not check, a malformed key) takes one
    (`failed`), and so does each Enroll answered again (`answered_again`: a replay of a
    logged enrollment, or the device's retry, answered as the first was; it logs
    nothing, but its proof (and chain) were checked and the registry read, about 1 ms of
    server CPU: unmetered, one client replaying one captured request, 64 calls in
    flight, got 809 answers a second and delayed honest token enrollments from 2.6 to
    91 ms, p50). A client with no whole token left has its admin and Enroll calls refused
    unchecked (`admit`: AuthPenaltyError, RESOURCE_EXHAUSTED, with the seconds to wait;
    the servicer holds each answer back `FORGERY_HOLD_S`), counted by /metrics ``prov_auth_refusals_total{rpc}``; its other calls, and every
    other client, are served as before. So guessing admin or enrollment tokens goes at
    ``per_minute`` guesses a minute per client, however fast the server answers, and so
    do replayed enrollments (a device retrying after a lost answer sends a few).

    Charged after the check (the check is cheap): calls of one client in flight together
    can overshoot the budget by their number (at most --rpc-threads); the debt is then
    waited off. Thread-safe (the registry's handlers run in the RPC thread pool)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._buckets = TokenBuckets(per_minute, clock)

    def admit(self, peer: str, rpc: str) -> str:
        """The client of gRPC ``peer`` (`peer_client`), to charge with `failed` if the
        call fails authentication. Raises AuthPenaltyError when it has no failure left
        (``rpc``: the method's name, for the metric)."""
        client = peer_client(peer)
        wait = self._buckets.wait(client)
        if wait:
            metrics.AUTH_REFUSALS.labels(rpc).inc()
            raise AuthPenaltyError(
                "this client address failed authentication, or had an enrollment answered"
                f" again, more than {self.per_minute} times in a minute (a wrong admin"
                " token, refused enrollments, replayed ones; the server's limit,"
                " --auth-failures-per-minute): its admin and Enroll calls are refused for"
                f" {wait:.1f} s; check the admin token (PROV_ADMIN_TOKEN) or the enrollment"
                " token, and do not resend an enrollment that was answered",
                wait,
            )
        return client

    def failed(self, client: str) -> None:
        """Charge ``client`` (from `admit`) one failed authentication."""
        self._buckets.take(client, always=True)

    def answered_again(self, client: str) -> None:
        """Charge ``client`` (from `admit`) one Enroll answered again (a replay of a logged
        enrollment: checked, nothing changed), as a failed authentication."""
        self._buckets.take(client, always=True)


#: The longest a read (a device look-up, a read of the log) waits for its client's turn
#: (`ReadPacer`), in seconds; one that would wait longer is refused, so a client holds at
#: most this many seconds' worth of reads waiting.
READ_WAIT_MAX_S = 30.0
#: Entries of a GetEntries page that cost one log read (`entries_cost`). Measured 4
#: December (bench/bench_log_reads.py, one client, 64 calls in flight, 2 shared cores):
#: a page of 1,000 claim entries took about 2.4 ms of server CPU per answer, a
#: checkpoint 0.47 ms, an inclusion or consistency proof 0.95 ms (the honest caller's
#: calls included); so a page of 1,000 costs 5 reads,
#: the server's default page of 100 (and `prov web`'s listings) one.
ENTRIES_PER_READ = 200


def entries_cost(limit: int) -> int:
    """The log reads a GetEntries request asking for ``limit`` entries costs: one per
    `ENTRIES_PER_READ` entries of the page it may get (``limit`` capped at
    `MAX_ENTRIES_PAGE`; 0 asks for `DEFAULT_ENTRIES_PAGE`), at least one. Charged for the
    entries asked for, before the read, so a flood's cost is decided before the work is
    done (a page asked past the log's end costs as much: ask for what is there)."""
    page = min(limit or DEFAULT_ENTRIES_PAGE, MAX_ENTRIES_PAGE)
    return max(1, -(-page // ENTRIES_PER_READ))


class ReadPacer:
    """Per client (`peer_client`: an IPv4 address or an IPv6 /64, all its connections
    together), a token bucket of reads: ``per_minute`` tokens, refilled at ``per_minute``
    a minute; each read takes its cost (one, or a GetEntries page's `entries_cost`). Two
    in a server: device look-ups (GetDevice, --device-reads-per-minute) and the log's
    reads (--log-reads-per-minute), each with a bucket per client. A read that finds too
    few tokens waits on the event loop (holding no thread) until they have refilled
    behind those its client's earlier reads took, so a client with many in flight is
    answered at ``per_minute`` a minute and an auditor reading every device or entry of
    a large log is slowed, never refused. One that would wait past its call's deadline or
    `READ_WAIT_MAX_S` is refused (`admit`: ReadRateError, RESOURCE_EXHAUSTED, with the
    seconds to wait), its answer held back `FORGERY_HOLD_S` (less when the deadline is
    sooner), counted by /metrics ``prov_read_refusals_total{rpc}``. So a client keeping n
    calls in flight gets at most ``per_minute`` / 60 reads' worth of answers plus n
    refusals a second. Before, unmetered, every read ran in the RPC pool as fast as the
    server could answer: one client flooding GetDevice with 64 in flight got 2,300
    answers a second, and honest submissions from another address went from 1.7 to 6.2
    ms (p50, bench/bench_enroll_replays.py); flooding GetEntries pages of 1,000, from 2.0
    to 22 ms (bench/bench_log_reads.py). ``reads``: what is counted, for the refusal's
    message ("device look-ups"); ``flag``: the `prov serve` flag that sets
    ``per_minute``. Used on the event loop."""

    def __init__(
        self,
        per_minute: int,
        reads: str,
        flag: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self._reads = reads
        self._flag = flag
        self._buckets = TokenBuckets(per_minute, clock)

    async def admit(self, peer: str, rpc: str, time_left: float | None, cost: int = 1) -> None:
        """Return when the read of gRPC ``peer`` costing ``cost`` tokens may run (at once
        while its client has them). Raises ReadRateError, after holding the answer back,
        when it would wait past ``time_left`` seconds (None: no deadline) or
        `READ_WAIT_MAX_S` (``rpc``: the method's name, for the metric)."""
        if self.per_minute <= 0:
            return
        client = peer_client(peer)
        wait = self._buckets.wait(client, cost)
        most = READ_WAIT_MAX_S if time_left is None else min(READ_WAIT_MAX_S, time_left)
        if wait > most:
            metrics.READ_REFUSALS.labels(rpc).inc()
            hold = FORGERY_HOLD_S if time_left is None else min(FORGERY_HOLD_S, time_left / 2)
            await asyncio.sleep(hold)
            raise ReadRateError(
                f"this client address made more than {self.per_minute} {self._reads} in a"
                f" minute (the server's limit, {self._flag}): its next {rpc} would wait"
                f" {wait:.1f} s for its turn, past the call's deadline; send fewer at once"
                " or allow a longer deadline",
                wait,
            )
        wait = self._buckets.take(client, always=True, cost=cost)
        if wait:
            await asyncio.sleep(wait)


class ForgeryPenalty:
    """Per client (`peer_client` of gRPC's peer: an IPv4 address or an IPv6 /64, every
    connection from it together), a token bucket of forged submissions: ``per_minute``
    tokens, refilled at ``per_minute`` a minute; each submission refused with
    SignatureError, or with UnknownDeviceError (a device id nobody enrolled: each costs
    a store read, and a forger can draw new ids at will), takes one.

    The token is taken *before* the store read or the signature check is paid for:
    `admit` reserves one for each submission in flight and `settle` gives it back when
    the submission turns out not to be a forgery. So a client whose tokens are all
    reserved or spent has its next submissions wait for one of its calls in flight to
    settle (an honest burst larger than the budget is served, a few calls at a time),
    and once nothing of it is in flight and no token is left, they are refused
    unverified (ForgeryPenaltyError): a burst of any number of concurrent forgeries costs
    at most ``per_minute`` verifications (before: every call in flight was verified
    before the first was counted).

    A device quota cannot meter forgeries (anyone may name any device, so charging the
    named device would let a forger use up an honest device's quota); a connection
    cannot either (a forger opens a fresh one, with a fresh budget, at will); an address
    is what the forger cannot change cheaply. Honest devices behind the same address
    (a NAT) share its budget, and at most ``per_minute`` of their submissions are
    checked at once. Used on the event loop's thread only (no lock)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = per_minute / 60.0
        self._cap = float(per_minute)
        self._clock = clock
        # client -> (tokens, clock() when counted), in the order last charged
        self._peers: dict[str, tuple[float, float]] = {}
        # client -> submissions admitted and not yet settled (each holds a token)
        self._inflight: dict[str, int] = {}
        # client -> submissions waiting for a token, oldest first
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}
        # gRPC peer (address and port: one per connection) -> its client, as parsed
        self._clients: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        """Whether forgeries are metered at all (``per_minute`` > 0)."""
        return self._rate > 0

    def _tokens(self, peer: str, now: float) -> float:
        tokens, at = self._peers.get(peer, (self._cap, now))
        return min(self._cap, tokens + (now - at) * self._rate)

    def _refusal(self, client: str, tokens: float) -> ForgeryPenaltyError:
        wait = (1.0 - tokens) / self._rate
        return ForgeryPenaltyError(
            f"this client address sent more than {self._cap:.0f} submissions in a minute whose"
            " signatures did not verify or whose device is not enrolled (the server's limit,"
            f" --forgeries-per-minute); its submissions are refused for {wait:.1f} s: check"
            " the device key that signs them and that the device is enrolled",
            wait,
        )

    async def admit(self, peer: str, time_left: float | None = None) -> str | None:
        """Reserve a token for one submission from ``peer`` before it is read or verified;
        returns the client to `settle` with once its outcome is known (None when the
        penalty is off). While the client's tokens are all reserved by its submissions
        in flight, waits (at most ``time_left`` seconds; None: as long as calls of it are
        in flight) for one to settle or a token to refill. Raises ForgeryPenaltyError
        when the client has no token left and nothing in flight, DeadlineError when the
        wait runs out with calls of it still in flight (they may all be honest)."""
        if not self._rate:
            return None
        client = self._clients.get(peer)
        if client is None:  # a new connection: parsed once (4 us), not on every call
            if len(self._clients) >= FORGERY_PEERS_KEPT:
                self._clients.clear()
            client = self._clients[peer] = peer_client(peer)
        loop = asyncio.get_running_loop()
        give_up = None if time_left is None else loop.time() + time_left
        while True:
            now = self._clock()
            tokens = self._tokens(client, now)
            inflight = self._inflight.get(client, 0)
            if tokens - inflight >= 1.0:
                self._inflight[client] = inflight + 1
                return client
            left = None if give_up is None else give_up - loop.time()
            if not inflight:
                raise self._refusal(client, tokens - inflight)
            if left is not None and left <= 0:
                # its calls in flight may all be honest: no forgery is counted, none said
                raise DeadlineError(
                    f"the call's deadline passed while {inflight} submissions from this"
                    " client address were being checked, the most the server checks at once"
                    " per address (--forgeries-per-minute): send fewer at once or allow a"
                    " longer deadline"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            queue = self._waiters.setdefault(client, deque())
            queue.append(waiter)
            refill = (1.0 + inflight - tokens) / self._rate  # until a token is free anyway
            timer = loop.call_later(refill if left is None else min(refill, left), _wake, waiter)
            try:
                await waiter  # woken (and taken off the queue) by `settle`, or by the timer
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    # woken, then cancelled before it ran: the token it was woken for
                    # goes to the next waiting call, which would sleep to its timer
                    _wake_first(queue)
                raise
            finally:
                timer.cancel()
                if not waiter.done():  # this call was cancelled
                    waiter.cancel()
                if waiter in queue:
                    queue.remove(waiter)
                if not queue and self._waiters.get(client) is queue:
                    del self._waiters[client]

    def settle(self, client: str | None, forged: bool) -> None:
        """The outcome of a submission `admit` let in for ``client``: ``forged`` (its
        signature did not verify, its device is not enrolled, or it never finished: the
        server stopping; a call its client gave up on is settled once the submission it
        left behind finishes) spends the reserved token; otherwise it is given back."""
        if client is None:
            return
        left = self._inflight.get(client, 1) - 1
        if left:
            self._inflight[client] = left
        else:
            self._inflight.pop(client, None)
        if forged:
            self._spend(client)
        queue = self._waiters.get(client)
        if not queue:
            return
        # with nothing left in flight every waiter must look again (to be refused, or
        # admitted by a refilled token); a token given back admits one waiter
        for _ in range(len(queue) if not left else 0 if forged else 1):
            _wake_first(queue)
        if not queue:
            del self._waiters[client]

    def _spend(self, client: str) -> None:
        now = self._clock()
        tokens = self._tokens(client, now) - 1.0
        self._peers.pop(client, None)
        self._peers[client] = (tokens, now)
        if len(self._peers) > FORGERY_PEERS_KEPT:
            del self._peers[next(iter(self._peers))]


#: Reads `FairReads` queues for one client (`peer_client`) at most; more are refused.
FAIR_READS_PER_CLIENT = 1024
#: Reads `FairReads` queues for all clients together at most; more are refused.
FAIR_READS_QUEUED = 16 * 1024


class _Read:
    """One queued read of `FairReads`: the function, and the caller's future on its loop."""

    __slots__ = ("fn", "loop", "future")

    def __init__(
        self, fn: Callable[[], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future


def _settle_read(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the caller's loop: hand a read's outcome to its future (unless it gave up)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class FairReads:
    """Blocking reads (store look-ups) run in ``workers`` threads of their own, taken from
    per-client queues in turn (round robin over the clients that have reads waiting), so
    a client with many reads waiting delays another client's read by at most one read
    per busy thread and per other waiting client, not by its whole queue (before: one
    FIFO thread, where an honest device's replay waited behind a flood of distinct
    replays, p50 1.3 -> 116 ms). A client is `peer_client` of the gRPC peer (an IPv4
    address or IPv6 /64), as for `ForgeryPenalty`: a flood cannot buy more turns with
    more connections. Each client queues at most ``per_client`` reads and all clients
    together ``in_all``; past its own bound `run` raises LimitError at once. With all
    ``in_all`` taken, a client with fewer reads waiting than the longest queue less one
    still gets its read queued: the longest queue's newest read makes room, its caller
    refused with LimitError (longest queue drop, as fq_codel's; before: every other
    client refused while a flood from ``in_all / per_client`` addresses, 16, an IPv6
    /60, held the queue); a client as long as the longest is refused. So no queue grows
    without bound, and a flood from fewer than ``in_all`` clients cannot shut another
    client out; one from ``in_all`` clients (16,384 IPv6 /64s, one /50) holding a read
    each can, for as long as it holds them (each is a call in flight). A caller that stops
    waiting (cancelled: its timeout) leaves the queue; a read already running finishes
    in its thread and its result is dropped. Thread-safe; callers may be on any event
    loop."""

    def __init__(
        self,
        workers: int,
        name: str,
        per_client: int = FAIR_READS_PER_CLIENT,
        in_all: int = FAIR_READS_QUEUED,
    ) -> None:
        if workers < 1 or per_client < 1 or in_all < 1:
            raise ConfigError("FairReads needs at least one worker and room for one read")
        self._per_client = per_client
        self._in_all = in_all
        self._lock = threading.Condition(threading.Lock())
        # client -> its reads waiting, oldest first; dict order is the turn order
        self._queues: dict[str, deque[_Read]] = {}
        self._queued = 0
        # queue length -> the clients with that many reads waiting (insertion-ordered),
        # and the longest length: the queue that makes room when all are taken
        self._by_length: dict[int, dict[str, None]] = {}
        self._longest = 0
        self._closed = False
        # gRPC peer (address and port: one per connection) -> its client, as parsed
        self._clients: dict[str, str] = {}
        self._name = name
        self._workers = workers
        # started with the first read (a service whose start fails leaves no thread)
        self._threads: list[threading.Thread] = []

    def _client(self, peer: str) -> str:
        client = self._clients.get(peer)
        if client is None:  # a new connection: parsed once, not on every read
            if len(self._clients) >= FORGERY_PEERS_KEPT:
                self._clients.clear()
            client = self._clients[peer] = peer_client(peer)
        return client

    def _resized(self, client: str, before: int, after: int) -> None:
        """Book ``client``'s queue going from ``before`` reads to ``after`` (lock held)."""
        if before:
            same = self._by_length[before]
            del same[client]
            if not same:
                del self._by_length[before]
        if after:
            self._by_length.setdefault(after, {})[client] = None
            self._longest = max(self._longest, after)
        while self._longest and self._longest not in self._by_length:
            self._longest -= 1

    def _make_room(self, mine: int) -> None:
        """All ``in_all`` slots are taken and a client with ``mine`` reads waiting asks for
        one (lock held): drop the newest read of the longest queue, its caller refused
        with LimitError, when that queue is longer than ``mine + 1``; else raise
        LimitError."""
        if self._longest <= mine + 1:
            raise LimitError(
                f"{self._queued} replays of already logged claims are waiting to be read,"
                " the most the server queues: submit it again later"
            )
        victim = next(iter(self._by_length[self._longest]))
        queue = self._queues[victim]
        dropped = queue.pop()
        self._queued -= 1
        self._resized(victim, len(queue) + 1, len(queue))
        refused = LimitError(
            f"{self._queued} replays of already logged claims are waiting to be read, the"
            " most the server queues, and this client address has the most of them: send"
            " fewer at once"
        )
        try:
            dropped.loop.call_soon_threadsafe(_settle_read, dropped.future, None, refused)
        except RuntimeError:  # the caller's loop is closed: nobody waits for it
            pass

    async def run(self, peer: str, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread, in ``peer``'s turn (``peer``: gRPC's
        ``context.peer()``; "" for a caller without one, all such callers one client);
        returns its result or raises its error. Raises LimitError when the client already
        has ``per_client`` reads queued, or all clients ``in_all`` and none has more than
        this one plus one (nothing is queued), also when this read was queued and then
        dropped to make room for another client's (`_make_room`); StorageError when the
        reads were closed (the server stopping)."""
        loop = asyncio.get_running_loop()
        read = _Read(fn, loop, loop.create_future())
        with self._lock:
            client = self._client(peer)
            queue = self._queues.get(client)
            if self._closed:
                raise StorageError("the server is stopping: submit it again later")
            if queue is not None and len(queue) >= self._per_client:
                raise LimitError(
                    f"this client address has {len(queue)} replays of already logged claims"
                    " waiting to be read, the most the server queues per address: send fewer"
                    " at once"
                )
            if self._queued >= self._in_all:
                self._make_room(0 if queue is None else len(queue))
            if not self._threads:
                self._threads = [
                    threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                    for i in range(self._workers)
                ]
                for t in self._threads:
                    t.start()
            if queue is None:
                queue = self._queues[client] = deque()
            queue.append(read)
            self._queued += 1
            self._resized(client, len(queue) - 1, len(queue))
            self._lock.notify()
        try:
            return await read.future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            with self._lock:  # still waiting: leave the queue (a running read goes on)
                queue = self._queues.get(client)
                if queue is not None and read in queue:
                    queue.remove(read)
                    self._queued -= 1
                    self._resized(client, len(queue) + 1, len(queue))
                    if not queue:
                        del self._queues[client]
            raise

    def _next(self) -> _Read | None:
        """The next read, the first waiting client's oldest (the client's turn then goes
        to the back); None once closed."""
        with self._lock:
            while not self._queues and not self._closed:
                self._lock.wait()
            if self._closed:
                return None
            client = next(iter(self._queues))
            queue = self._queues.pop(client)
            read = queue.popleft()
            self._queued -= 1
            self._resized(client, len(queue) + 1, len(queue))
            if queue:
                self._queues[client] = queue
            return read

    def _work(self) -> None:
        while (read := self._next()) is not None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = read.fn()
            except BaseException as e:  # handed to the caller, whatever it is
                error = e
            try:
                read.loop.call_soon_threadsafe(_settle_read, read.future, result, error)
            except RuntimeError:  # the caller's loop is closed: nobody waits for it
                pass

    def close(self) -> None:
        """Stop the workers after their reads in progress; callers still waiting get
        StorageError. Idempotent."""
        with self._lock:
            self._closed = True
            waiting = [r for q in self._queues.values() for r in q]
            self._queues.clear()
            self._queued = 0
            self._by_length.clear()
            self._longest = 0
            self._lock.notify_all()
            started = list(self._threads)
        for t in started:
            t.join()
        for r in waiting:
            gone = StorageError("the server is stopping: submit it again later")
            try:
                r.loop.call_soon_threadsafe(_settle_read, r.future, None, gone)
            except RuntimeError:
                pass
