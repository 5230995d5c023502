"""Prometheus metrics of a server process (`prometheus-client`), served by
``prov serve --metrics-listen HOST:PORT`` at ``/metrics``.

The parts record into these process-wide families as they work (a counter increment or
a histogram observation costs well under a microsecond); `serve_metrics` exposes them.
Requests and latencies by RPC and status code come from one place, the gRPC server
interceptor `MetricsInterceptor` (as Sunlight and grpc's own interceptors do).

| family | what |
| --- | --- |
| ``prov_rpc_requests_total{rpc,code}`` | RPCs answered, by method and gRPC status |
| ``prov_rpc_duration_seconds{rpc,code}`` | RPC latency |
| ``prov_upload_bytes_total{rpc}`` | file bytes received by streaming uploads |
| ``prov_log_appends_total`` | leaves this process appended to the log |
| ``prov_commit_batch_size`` | submissions per group-commit transaction |
| ``prov_commit_duration_seconds`` | one group commit, lock to durable COMMIT |
| ``prov_log_tree_size`` | leaves in the log, as this process last saw it |
| ``prov_index_hashes`` | perceptual hashes in the near-duplicate index |
| ``prov_index_lookup_duration_seconds`` | one near-duplicate search |
| ``prov_detector_queue_depth`` | detector requests waiting for a batch |
| ``prov_detector_batch_size`` | crops per detector forward pass |
| ``prov_c2pa_workers_busy`` | C2PA reader processes reading now |
| ``prov_c2pa_reads_total`` | C2PA reads done by the worker pool |
| ``prov_video_decodes_total`` | video decodes started (one sandboxed decoder child each) |
| ``prov_decode_slots_busy`` | uploads decoded now, each in a decode slot (``--max-decodes``) |
| ``prov_decodes_waiting`` | uploads waiting for a decode slot now |
| ``prov_decode_slot_waits_total{outcome}`` | waits for a decode slot: ``taken`` (the file was decoded), ``refused`` (none freed within ``--decode-wait-seconds``), ``call_ended`` (its caller cancelled it or its deadline passed; the file was not decoded) |
| ``prov_witness_requests_total{witness,outcome}`` | add-checkpoint requests: cosigned, refused, failed |
| ``prov_witness_request_duration_seconds{witness}`` | one witness's answer (with its 409 retries) |
| ``prov_witness_size{witness}`` | the tree size each witness last cosigned |
| ``prov_witness_cosigned_tree_size`` | the newest checkpoint cosigned by the witness quorum |
| ``prov_witness_cosigned_checkpoints_total`` | checkpoints that reached the witness quorum |
| ``prov_auth_refusals_total{rpc}`` | admin and Enroll calls refused unchecked: their client spent its failed-authentication budget |
| ``prov_grpc_calls_unanswered`` | calls grpc core took in that no handler answered: queued now, or dropped |

grpc core drops a call past ``--max-pending-calls`` (``grpc.server.max_pending_requests``)
before any handler or interceptor sees it, and has no hook or Python-visible counter for
that drop (grpcio 1.85: the refusal happens in its request matcher, in C). What it does
count is every call it took in and every call that ended with a status (channelz:
callsStarted, callsSucceeded, callsFailed; a dropped call is in neither of the last
two, a call a handler or grpc itself ended, UNIMPLEMENTED or cancelled, is).
``prov_grpc_calls_unanswered`` is read at each scrape from those counts, less the calls
inside our handlers now: the calls waiting in grpc core's queue at that instant plus every
call dropped so far, so it is the number of drops whenever the server is at rest and an
upper bound on them under load (it can fall as queued calls are taken up). It needs
channelz (``grpc.enable_channelz``, grpc's default) and reads it through grpc's internal
``grpc._cython.cygrpc.channelz_get_servers`` (what the ``grpcio-channelz`` service calls);
without it the family is absent. It counts every gRPC server of the process (one in
``prov serve``; two with ``--health-listen``, whose calls are counted as the service
port's are).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, make_server

import grpc
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from provenance.core.allowed_hosts import (
    AllowedHosts,
    default_host_names,
    malformed_host_message,
    misdirected_message,
)
from provenance.core.errors import ConfigError
from provenance.core.fair_share import client_key, share_victim
from provenance.core.ports import bare_host, host_name, listen_failure, port_number

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

RPC_REQUESTS = Counter(
    "prov_rpc_requests", "RPCs answered, by method and gRPC status code", ["rpc", "code"]
)
RPC_SECONDS = Histogram(
    "prov_rpc_duration_seconds", "RPC latency in seconds", ["rpc", "code"], buckets=_LATENCY
)
UPLOAD_BYTES = Counter(
    "prov_upload_bytes", "File bytes received by streaming uploads", ["rpc"], unit="bytes"
)
APPENDS = Counter("prov_log_appends", "Leaves this process appended to the log")
APPENDS_UNANSWERED = Counter(
    "prov_log_appends_unanswered",
    "Submissions answered UNAVAILABLE, not logged, as the log database did not answer in"
    " time (a lock held, its server stopped)",
)
COMMIT_BATCH = Histogram(
    "prov_commit_batch_size", "Submissions per group-commit transaction", buckets=_SIZES
)
COMMIT_SECONDS = Histogram(
    "prov_commit_duration_seconds", "One group commit, lock to durable COMMIT", buckets=_LATENCY
)
TREE_SIZE = Gauge("prov_log_tree_size", "Leaves in the log, as this process last saw it")
INDEX_HASHES = Gauge("prov_index_hashes", "Perceptual hashes in the near-duplicate index")
NEAR_GROUP_READS = Counter(
    "prov_near_group_reads",
    "Store reads of whose the near-duplicate leaves a search hit are (leaves logged before"
    " this start: each read once, in rounds of a search)",
)
INDEX_WARMING = Gauge(
    "prov_index_warming",
    "1 while the near-duplicate index builds its tables (lookups scan every hash meanwhile)",
)
INDEX_LOOKUP_SECONDS = Histogram(
    "prov_index_lookup_duration_seconds", "One near-duplicate index search", buckets=_LATENCY
)
DETECTOR_QUEUE = Gauge("prov_detector_queue_depth", "Detector requests waiting for a batch")
DETECTOR_BATCH = Histogram(
    "prov_detector_batch_size", "Crops per detector forward pass", buckets=_SIZES
)
DETECTOR_TIMEOUTS = Counter(
    "prov_detector_timeouts",
    "Detector requests given up at their deadline (reports say not scored)",
)
C2PA_BUSY = Gauge("prov_c2pa_workers_busy", "C2PA reader processes reading now")
C2PA_READS = Counter("prov_c2pa_reads", "C2PA reads done by the worker pool")
VIDEO_DECODES = Counter(
    "prov_video_decodes", "Video decodes started (one sandboxed decoder child each)"
)
DECODES_BUSY = Gauge(
    "prov_decode_slots_busy", "Uploads decoded now, each in a decode slot (--max-decodes)"
)
DECODES_WAITING = Gauge("prov_decodes_waiting", "Uploads waiting for a decode slot now")
DECODE_WAITS = Counter(
    "prov_decode_slot_waits",
    "Waits for a decode slot, by outcome: taken (the file was decoded), refused (none"
    " freed within --decode-wait-seconds), call_ended (its caller cancelled it or its"
    " deadline passed while it waited; the file was not decoded)",
    ["outcome"],
)
WITNESS_REQUESTS = Counter(
    "prov_witness_requests",
    "Witness add-checkpoint requests, by witness and outcome (cosigned, refused, failed)",
    ["witness", "outcome"],
)
WITNESS_SECONDS = Histogram(
    "prov_witness_request_duration_seconds",
    "One witness's answer to add-checkpoint, with its 409 retries",
    ["witness"],
    buckets=_LATENCY,
)
WITNESS_SIZE = Gauge("prov_witness_size", "Tree size each witness last cosigned", ["witness"])
COSIGNED_CHECKPOINTS = Counter(
    "prov_witness_cosigned_checkpoints", "Checkpoints that reached the witness quorum"
)
COSIGNED_TREE_SIZE = Gauge(
    "prov_witness_cosigned_tree_size", "Tree size of the newest checkpoint the quorum cosigned"
)
AUTH_REFUSALS = Counter(
    "prov_auth_refusals",
    "Admin and Enroll calls refused unchecked because their client (IPv4 address, IPv6"
    " /64) spent its budget of failed authentications (--auth-failures-per-minute)",
    ["rpc"],
)

READ_REFUSALS = Counter(
    "prov_read_refusals",
    "Device look-ups (GetDevice) and reads of the log (GetCheckpoint, GetInclusionProof,"
    " GetConsistencyProof, GetEntries, GetLogKey) refused because their client (IPv4"
    " address, IPv6 /64) was past --device-reads-per-minute or --log-reads-per-minute and"
    " the call would have waited for its turn past its deadline",
    ["rpc"],
)


log = logging.getLogger(__name__)

#: Calls inside one of our handlers now (`_timed`'s wrappers), for `GrpcCoreCollector`.
_running = 0
_running_lock = threading.Lock()


def _enter() -> None:
    global _running
    with _running_lock:
        _running += 1


def _leave() -> None:
    global _running
    with _running_lock:
        _running -= 1


def channelz_calls() -> tuple[int, int] | None:
    """(calls taken in, calls ended with a status) by every gRPC server of this process,
    from grpc core's channelz (callsStarted; callsSucceeded + callsFailed); None when
    channelz cannot be read (see the module docstring)."""
    try:
        cygrpc: Any = importlib.import_module("grpc._cython.cygrpc")
        started = ended = 0
        start_id = 0
        while True:
            page = json.loads(cygrpc.channelz_get_servers(start_id))
            servers = page.get("server", [])
            for server in servers:
                data = server.get("data", {})
                started += int(data.get("callsStarted", 0))
                ended += int(data.get("callsSucceeded", 0)) + int(data.get("callsFailed", 0))
            if page.get("end", True) or not servers:
                return started, ended
            start_id = 1 + max(int(server["ref"]["serverId"]) for server in servers)
    except Exception as e:  # grpc's internals moved: no figure rather than a wrong one
        log.warning("cannot read grpc channelz for prov_grpc_calls_unanswered: %r", e)
        return None


class GrpcCoreCollector(Collector):
    """``prov_grpc_calls_unanswered`` at each scrape (module docstring)."""

    def collect(self) -> Any:
        calls = channelz_calls()
        if calls is None:
            return
        with _running_lock:
            running = _running
        gauge = GaugeMetricFamily(
            "prov_grpc_calls_unanswered",
            "Calls grpc core took in that no handler answered or runs now: waiting in its"
            " queue, or dropped from it past --max-pending-calls (their clients got a bare"
            " CANCELLED); at rest, the drops so far",
        )
        started, ended = calls
        gauge.add_metric([], max(0, started - ended - running))
        yield gauge


REGISTRY.register(GrpcCoreCollector())


#: Connections the /metrics port serves at once; one more is closed on arrival.
METRICS_MAX_CONNECTIONS = 16
#: Connections one client (`client_key`: an IPv4 address, an IPv6 /64) holds at once, so
#: one host's idle connections leave the others' scrapes room (one more from it is
#: closed on arrival).
METRICS_MAX_PER_ADDRESS = 4
#: Seconds a /metrics connection has to send its request and read the answer (the
#: request's reads and the reply's writes each get what is left of it: before, each write
#: of the answer got the whole timeout left at the request's last read).
METRICS_REQUEST_TIMEOUT_S = 10.0
#: Bytes a /metrics connection may send (its request's line and headers: a scrape's are a
#: few hundred); past it the request is answered 431 and the connection closed. Python's
#: http.server alone took 100 header lines of 64 KiB each, 6.4 MB a connection.
METRICS_MAX_HEAD_BYTES = 16 * 1024


class _HeadTooLong(ConnectionError):
    """A /metrics connection sent more than METRICS_MAX_HEAD_BYTES."""


class _DeadlineSocket(io.RawIOBase):
    """A connection's bytes in, each receive waiting only for what is left of the
    connection's deadline (a client sending a byte now and then cannot hold it open)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._left = METRICS_MAX_HEAD_BYTES + 1  # one more: a head of exactly the cap ends

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the /metrics request took too long")
        if self._left <= 0:
            raise _HeadTooLong
        self._sock.settimeout(left)
        with memoryview(buffer) as view:
            got = self._sock.recv_into(view[: self._left])
        self._left -= got
        return got


class _DeadlineWriter(io.BufferedIOBase):
    """A connection's answer out, each send waiting only for what is left of the
    connection's deadline; ``stalled(True)`` while a send waits for the client to read
    (the kernel's send buffer full), ``stalled(False)`` once it goes on, so a client that
    reads its answer slowly or never can have its slot taken (`_MetricsServer`)."""

    def __init__(
        self, sock: socket.socket, deadline: float, stalled: Callable[[bool], None]
    ) -> None:
        super().__init__()
        self._sock = sock
        self._deadline = deadline
        self._stalled = stalled

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        """Send all of ``data`` (whole writes: wsgiref's handler expects them); raises
        TimeoutError past the deadline, ConnectionError when the client or a newcomer
        taking its slot ends the connection."""
        with memoryview(data) as view, view.cast("B") as out:
            sent = 0
            while sent < len(out):
                left = self._deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the /metrics answer was not read in time")
                self._sock.settimeout(0)
                try:
                    sent += self._sock.send(out[sent:])
                    continue
                except BlockingIOError:
                    pass
                self._stalled(True)
                try:
                    self._sock.settimeout(left)
                    sent += self._sock.send(out[sent:])
                finally:
                    self._stalled(False)
            return sent


class _QuietServerHandler(ServerHandler):
    """wsgiref's handler, but an answer cut at its deadline (TimeoutError) or by its
    client or a newcomer (a reset, a broken pipe) logs nothing: before, wsgiref printed a
    whole traceback for each, so clients that never read their answer flooded the log."""

    def log_exception(self, exc_info: Any) -> None:
        if not isinstance(exc_info[1], (TimeoutError, ConnectionError)):
            super().log_exception(exc_info)


class _MetricsHandler(WSGIRequestHandler):
    """One request per connection, read and answered within METRICS_REQUEST_TIMEOUT_S;
    nothing logged."""

    timeout = METRICS_REQUEST_TIMEOUT_S  # the socket's first timeout (connect to first read)

    def setup(self) -> None:
        super().setup()
        deadline = time.monotonic() + METRICS_REQUEST_TIMEOUT_S
        self.rfile.close()
        self.rfile = io.BufferedReader(_DeadlineSocket(self.connection, deadline))
        server: _MetricsServer = self.server  # type: ignore[assignment]  # always ours
        sock = self.connection
        self.wfile = _DeadlineWriter(sock, deadline, lambda on: server.stalled(sock, on))

    def handle(self) -> None:
        """Read and answer the request; one whose head runs past METRICS_MAX_HEAD_BYTES is
        answered 431 (RFC 6585 section 5) and closed."""
        try:
            self._handle_one()
        except _HeadTooLong:
            if not hasattr(self, "request_version"):  # cut within the request line
                self.request_version = "HTTP/1.0"
            self._refuse(
                431,
                f"the request's line and headers are over {METRICS_MAX_HEAD_BYTES:,} bytes:"
                " a scrape needs a few hundred",
            )

    def _handle_one(self) -> None:
        """`WSGIRequestHandler.handle` (Python 3.11-3.13) with `_QuietServerHandler`."""
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.requestline = ""
            self.request_version = ""
            self.command = ""
            self.send_error(414)
            return
        if not self.parse_request():  # an error code has been sent
            return
        handler = _QuietServerHandler(
            self.rfile,
            cast("IO[bytes]", self.wfile),  # a _DeadlineWriter (`setup`)
            self.get_stderr(),
            self.get_environ(),
            multithread=False,
        )
        handler.request_handler = self  # type: ignore[attr-defined]  # wsgiref's backpointer
        handler.run(self.server.get_app())  # type: ignore[attr-defined]  # a WSGIServer

    def parse_request(self) -> bool:
        """Parse the request's line and headers; from here on the connection is being
        answered, so no newcomer takes its slot (`_MetricsServer`). A request whose Host
        the server's `AllowedHosts` refuses is answered 421 here (400 when that Host, or
        a second one, is no host name), and the metrics are not read: a DNS-rebinding page
        at its attacker's name is same-origin with this port to a visitor's browser."""
        parsed = super().parse_request()
        server: _MetricsServer = self.server  # type: ignore[assignment]  # always ours
        server.answering(self.connection)
        if not parsed:
            return False
        hosts = self.headers.get_all("Host") or []
        if len(hosts) > 1:
            self._refuse(400, "the request has more than one Host header (RFC 9112 section 3.2)")
            return False
        unchecked = self._unchecked_host(hosts)
        if unchecked:
            self._refuse(400, unchecked)
            return False
        if server.allowed.allows(hosts[0] if hosts else None):
            return True
        if host_name(hosts[0]) is None:  # no name to allow: the client's error
            self._refuse(400, malformed_host_message(hosts[0]))
        else:
            self._refuse(
                421,
                misdirected_message(
                    hosts[0],
                    "--metrics-allowed-hosts",
                    "prov serve, prov web and prov witness serve, for their --metrics-listen port",
                ),
            )
        return False

    def _unchecked_host(self, hosts: list[str]) -> str:
        """Why a request's Host cannot be checked (its 400 message), or "": HTTP/0.9 (no
        headers), HTTP/1.1 or later with no Host (RFC 9112 section 3.2), a field name
        with white space before its colon ("Host : x", which proxies may read as Host;
        section 5.1) or a line the header parser could not read ("Host\t: x", skipped
        with the lines after it). Before, each was answered as a request with no Host, 200."""
        if self.request_version == "HTTP/0.9":
            return "HTTP/0.9 requests are not answered: send HTTP/1.1 with a Host header"
        if self.headers.defects or any(name != name.strip() for name in self.headers.keys()):
            return (
                "a header name has white space before its colon (RFC 9112 section 5.1): is it Host?"
            )
        if not hosts and self.request_version != "HTTP/1.0":
            return f"an {self.request_version} request needs a Host header (RFC 9112 section 3.2)"
        return ""

    def _refuse(self, code: int, message: str) -> None:
        """Answer ``code`` with ``message`` as plain text (no body to a HEAD), the
        connection then closed."""
        body = (message + "\n").encode()
        self.close_connection = True
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Connection", "close")
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  # the base's name
        """Log nothing."""


@dataclass(eq=False)
class _Held:
    """One /metrics connection's slot: its socket, whether its request is still being
    read, whether its answer waits on its client to read (`_DeadlineWriter`), and
    whether a newcomer took its slot (`_MetricsServer`)."""

    sock: socket.socket
    reading: bool = True
    stalled: bool = False
    cut: bool = False


class _MetricsServer(ThreadingWSGIServer):
    """prometheus_client's thread-per-connection server with at most
    METRICS_MAX_CONNECTIONS threads, METRICS_MAX_PER_ADDRESS of them for one client
    (`client_key`: an IPv4 address, an IPv6 /64), so idle or slow clients cannot take
    the process's threads and memory, nor one host every slot from the scraper
    (prometheus_client's own server starts a thread per connection and waits on each
    forever). One connection more from a client at its cap is closed at once. When every
    slot is taken, a newcomer from a client holding at least two fewer than the client
    holding the most takes the slot of that client's newest connection still sending its
    request or waiting for it to read its answer (`share_victim`), which is shut down;
    else it is closed at once. Otherwise four addresses with four idle connections each
    (renewed every 10 s) would keep every scrape closed on arrival, and so would
    connections that send a whole request and read none of a large answer."""

    #: The Host names answered (`serve_metrics` sets them; others get 421).
    allowed = AllowedHosts()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._held = 0
        self._per_client: dict[str, list[_Held]] = {}  # oldest first
        self._by_socket: dict[socket.socket, _Held] = {}
        self._lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _take(self, host: str, sock: socket.socket) -> bool:
        with self._lock:
            mine = self._per_client.get(host, [])
            if len(mine) >= METRICS_MAX_PER_ADDRESS:
                return False
            if self._held >= METRICS_MAX_CONNECTIONS:
                victim = share_victim(
                    self._per_client.values(),
                    len(mine),
                    arriving=lambda h: h.reading or h.stalled,
                    received=lambda h: 0,
                )
                if victim is None:
                    return False
                self._forget(victim)  # its slot is this connection's now
                victim.cut = True
                try:
                    victim.sock.shutdown(socket.SHUT_RDWR)  # its read ends: its thread leaves
                except OSError:
                    pass
            else:
                self._held += 1
            held = _Held(sock)
            self._per_client.setdefault(host, []).append(held)
            self._by_socket[sock] = held
            return True

    def _forget(self, held: _Held) -> None:
        """Drop ``held`` from the per-client lists (the lock held)."""
        for host, holds in self._per_client.items():
            if held in holds:
                holds.remove(held)
                if not holds:
                    del self._per_client[host]
                return

    def _give(self, sock: socket.socket) -> None:
        with self._lock:
            held = self._by_socket.pop(sock, None)
            if held is None or held.cut:
                return  # a cut connection's slot went to its newcomer
            self._forget(held)
            self._held -= 1

    def answering(self, sock: socket.socket) -> None:
        """The request on ``sock`` has been read: its slot is no longer taken by share."""
        with self._lock:
            held = self._by_socket.get(sock)
            if held is not None:
                held.reading = False

    def stalled(self, sock: socket.socket, on: bool) -> None:
        """The answer on ``sock`` waits for its client to read (``on``), or goes on: while
        it waits, its slot may be taken by share."""
        with self._lock:
            held = self._by_socket.get(sock)
            if held is not None:
                held.stalled = on

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._take(client_key(str(client_address[0])), request):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._give(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._give(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection cut at its deadline (TimeoutError) or by its client (a reset, a
        broken pipe) is how slow and gone clients end, so nothing is logged; anything
        else gets socketserver's traceback on stderr. Before, every slow client cut
        printed one: a slowloris client could flood the process's log."""
        if not isinstance(sys.exc_info()[1], (TimeoutError, ConnectionError)):
            super().handle_error(request, client_address)


def process_registry() -> CollectorRegistry:
    """A registry of this process's own runtime alone: CPU, memory, open files (the
    ``process_*`` families), the Python version (``python_info``) and its garbage
    collector (``python_gc_*``), for processes that serve none of the ``prov_*``
    families above (`prov web`, `prov witness serve`): the default registry would
    publish every one of those families at zero there."""
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


def metrics_hosts(listen: str, allowed: tuple[str, ...] = ()) -> AllowedHosts:
    """The Host names the /metrics port on ``listen`` (HOST:PORT) answers: ``allowed``
    and `default_host_names` of HOST (besides addresses and localhost, always)."""
    bound = listen.rpartition(":")[0]
    return AllowedHosts(tuple(dict.fromkeys((*allowed, *default_host_names(bound)))))


def serve_metrics(
    listen: str, registry: CollectorRegistry = REGISTRY, allowed: tuple[str, ...] = ()
) -> int:
    """Serve ``/metrics`` of ``registry`` (by default every family of this module and the
    process's runtime; `process_registry`: the runtime alone) on ``listen`` (HOST:PORT,
    port 0 picks one) from a daemon
    thread; returns the bound port. At most METRICS_MAX_CONNECTIONS connections are
    served at once (METRICS_MAX_PER_ADDRESS from one client: an IPv4 address, an IPv6
    /64), each within
    METRICS_REQUEST_TIMEOUT_S. Requests for a Host name other than an IP address,
    localhost, ``listen``'s host name, this machine's name or ``allowed``
    (``--metrics-allowed-hosts``, `parse_allowed_hosts` forms) get 421
    (`metrics_hosts`). Raises ConfigError when it cannot listen."""
    host, sep, port = listen.rpartition(":")
    bare = bare_host(host)
    number = port_number(port)
    if not sep or bare is None or number is None or number > 65535:
        raise ConfigError(
            f"--metrics-listen {listen!r} is not HOST:PORT (port 0-65535; an IPv6 address"
            " in brackets, [::1]:9464)"
        )
    addr = bare or "0.0.0.0"
    try:
        found = socket.getaddrinfo(addr, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family = found[0][0]

        class Server(_MetricsServer):
            address_family = family

        httpd = make_server(
            addr, number, make_wsgi_app(registry), Server, handler_class=_MetricsHandler
        )
    except OSError as e:
        raise ConfigError(listen_failure(listen, "--metrics-listen", e)) from e
    httpd.allowed = metrics_hosts(listen, allowed)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return int(httpd.server_port)


def _code(code: Any, unset: str) -> str:
    """The name of a status code (``unset`` when the handler set none)."""
    return unset if code is None else str(code.name)


#: A call cancelled this close to its deadline (seconds) counts as DEADLINE_EXCEEDED: the
#: client's own timer ends it a little before the server's (7-8 ms on loopback, idle).
DEADLINE_SLACK_S = 0.25


def _ended(context: Any, error: BaseException) -> str:
    """The status code of an asyncio handler that raised ``error``: the one it set
    (context.abort), else, when grpc cancelled it, DEADLINE_EXCEEDED (its deadline
    passed, or is within DEADLINE_SLACK_S) or CANCELLED (its client went away); UNKNOWN
    otherwise."""
    code = context.code()
    if code is not None or not isinstance(error, asyncio.CancelledError):
        return _code(code, "UNKNOWN")
    left = context.time_remaining()
    return "DEADLINE_EXCEEDED" if left is not None and left <= DEADLINE_SLACK_S else "CANCELLED"


class _Recorder:
    """A sync handler's context that remembers the status code it set (the asyncio
    server's context for sync handlers cannot report it)."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.code: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code = code
        self._context.abort(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code
        self._context.set_code(code)


#: The (counter, histogram) children of each (rpc, code) met so far: `labels` validates
#: and locks on every call (about 3 µs each); a bounded set (methods x status codes).
_CHILDREN: dict[tuple[str, str], tuple[Any, Any]] = {}


def _record(rpc: str, code: str, t0: float) -> None:
    children = _CHILDREN.get((rpc, code))
    if children is None:
        children = RPC_REQUESTS.labels(rpc, code), RPC_SECONDS.labels(rpc, code)
        _CHILDREN[(rpc, code)] = children
    children[0].inc()
    children[1].observe(time.perf_counter() - t0)


def _timed(behavior: Callable[..., Any], rpc: str) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):  # asyncio streaming replies (reflection)

        async def stream_async(request: Any, context: Any) -> AsyncIterator[Any]:
            t0 = time.perf_counter()
            code = "UNKNOWN"
            _enter()
            try:
                async for reply in behavior(request, context):
                    yield reply
                code = _code(context.code(), "OK")
            except BaseException as e:  # context.abort raises after setting the code
                code = _ended(context, e)
                raise
            finally:
                _leave()
                _record(rpc, code, t0)

        return stream_async
    if inspect.iscoroutinefunction(behavior):

        async def handle_async(request: Any, context: Any) -> Any:
            t0 = time.perf_counter()
            code = "UNKNOWN"
            _enter()
            try:
                reply = await behavior(request, context)
                code = _code(context.code(), "OK")
                return reply
            except BaseException as e:  # context.abort raises after setting the code
                code = _ended(context, e)
                raise
            finally:
                _leave()
                _record(rpc, code, t0)

        return handle_async

    def handle(request: Any, context: Any) -> Any:
        t0 = time.perf_counter()
        code = "UNKNOWN"
        recorder = _Recorder(context)
        _enter()
        try:
            reply = behavior(request, recorder)
            code = _code(recorder.code, "OK")
            return reply
        except Exception:  # context.abort raises after setting the code
            code = _code(recorder.code, "UNKNOWN")
            raise
        finally:
            _leave()
            _record(rpc, code, t0)

    return handle


def _counted(requests: Iterator[Any], rpc: str) -> Iterator[Any]:
    counter = UPLOAD_BYTES.labels(rpc)
    for message in requests:
        data = getattr(message, "data", None)
        if isinstance(data, bytes | memoryview) and data:
            counter.inc(len(data))
        yield message


async def _counted_async(requests: AsyncIterator[Any], rpc: str) -> AsyncIterator[Any]:
    counter = UPLOAD_BYTES.labels(rpc)
    async for message in requests:
        data = getattr(message, "data", None)
        if isinstance(data, bytes | memoryview) and data:
            counter.inc(len(data))
        yield message


def _streamed(behavior: Callable[..., Any], rpc: str) -> Callable[..., Any]:
    """A client-streaming behavior whose upload bytes are counted, sync or async alike."""
    if inspect.iscoroutinefunction(behavior):

        async def inner_async(requests: Any, context: Any) -> Any:
            return await behavior(_counted_async(requests, rpc), context)

        return _timed(inner_async, rpc)
    return _timed(lambda it, ctx: behavior(_counted(it, rpc), ctx), rpc)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC and its latency by method and status code; counts upload bytes
    of client-streaming methods. For the asyncio server; handlers may be sync or async."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        rpc = str(handler_call_details.method).rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_timed(handler.unary_unary, rpc))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=_streamed(handler.stream_unary, rpc))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_timed(handler.unary_stream, rpc))
        return handler._replace(stream_stream=_timed(handler.stream_stream, rpc))
