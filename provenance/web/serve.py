"""Running the web app: bind the HTTP socket first (so a port in use is a clear error
and port 0 reports the port it got), then serve it with uvicorn, in this thread
(``prov web``) or a background thread beside the gRPC server (``prov serve --http``)."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import uvicorn
from starlette.types import ASGIApp

from provenance.cli.options import SIGNAL_POLL_S, stop_signals
from provenance.core.allowed_hosts import AllowedHosts, default_host_names
from provenance.core.buckets import FewLines
from provenance.core.errors import ConfigError
from provenance.core.ports import listen_failure
from provenance.web.app import WebConfig, create_app
from provenance.web.guard import DEFAULT_LIMITS, HttpLimits, guarded_protocol
from provenance.web.logviews import is_number
from provenance.web.proxies import TrustedProxies


def bind(address: str, option: str = "--listen") -> tuple[socket.socket, str]:
    """A listening TCP socket on ``address`` (HOST:PORT, port 0 picks one; from the flag
    ``option``), with TCP_NODELAY, and the address it is bound to. Raises ConfigError
    when it cannot be bound, naming ``option`` (`listen_failure`)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not is_number(port) or int(port) > 65535:
        raise ConfigError(f"listen address {address!r} is not HOST:PORT (port 0-65535)")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it (Linux): uvicorn writes a response's headers and
    # body separately, and with Nagle's algorithm the body waited for the client's
    # delayed ACK, about 40 ms per answer on a kept-alive connection (measured on
    # `prov web`: GET /tlog/checkpoint median 45 ms without, /api/v1/checkpoint 57 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(listen_failure(address, option, e)) from e
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    return sock, f"{shown}:{bound}"


@dataclass
class WebServer:
    """A running web server: its address and how to stop it."""

    address: str
    server: uvicorn.Server
    thread: threading.Thread | None = None
    #: the start-up line saying which Host names it answers (`allowed_hosts_line`)
    hosts_line: str = ""

    def stop(self) -> None:
        """Ask the server to finish its requests and stop; wait for the thread."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


#: Seconds between two log lines of a kind any client can cause at will, one per request
#: (`ClientNoise`).
CLIENT_NOISE_EVERY_S = 60.0
#: uvicorn's warnings that one request of a client causes (its h11 protocol): a head h11
#: cannot parse, an upgrade to a protocol it does not speak (WebSocket included: the
#: advice that follows it is dropped, `NO_WEBSOCKET_ADVICE`), one connection past its
#: concurrency limit.
UVICORN_CLIENT_WARNINGS = frozenset(
    {
        "Invalid HTTP request received.",
        "Unsupported upgrade request.",
        "Exceeded concurrency limit.",
    }
)
#: How uvicorn's second line after an ignored upgrade begins: advice to install a WebSocket
#: library, wrong for servers that speak no WebSocket by design (`uvicorn_server`: ws="none").
NO_WEBSOCKET_ADVICE = "No supported WebSocket library detected"
#: Loggers `ClientNoise` is installed on: uvicorn's (only the messages above) and
#: python-multipart's parser, whose every warning is about the form a client sent
#: (the page answers it 400 with the same words).
CLIENT_NOISE_LOGGERS = ("uvicorn.error", "python_multipart.multipart")


class ClientNoise(FewLines):
    """Lets through at most one log record of each kind a client causes at will (see
    `CLIENT_NOISE_LOGGERS`) every ``every`` seconds (``clock``: monotonic seconds), the
    one let through saying how many were left out since the last (`FewLines`). Before,
    each such request wrote a WARNING line: one client on loopback wrote 2,000 lines in
    1.2 s. Kinds: uvicorn's messages as they are (a few fixed strings), one for all of
    python-multipart's (its messages hold the offending bytes)."""

    def __init__(
        self, every: float = CLIENT_NOISE_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(every, "as any client can cause one with a request", clock)

    def filter(self, record: logging.LogRecord) -> bool:
        """`FewLines.filter`, and never uvicorn's advice to install a WebSocket library,
        which follows each ignored upgrade: these servers speak no WebSocket by design."""
        if record.name == "uvicorn.error" and str(record.msg).startswith(NO_WEBSOCKET_ADVICE):
            return False
        return super().filter(record)

    def kind(self, record: logging.LogRecord) -> str | None:
        """uvicorn's client warnings by message, python-multipart's as one; None else."""
        if record.name == "uvicorn.error":
            return str(record.msg) if record.msg in UVICORN_CLIENT_WARNINGS else None
        return record.name


_CLIENT_NOISE = ClientNoise()


def quiet_client_noise() -> None:
    """Install the process's `ClientNoise` filter on `CLIENT_NOISE_LOGGERS` (once)."""
    for name in CLIENT_NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if _CLIENT_NOISE not in logger.filters:
            logger.addFilter(_CLIENT_NOISE)


def uvicorn_server(app: ASGIApp, limits: HttpLimits, keep_alive: int = 10) -> uvicorn.Server:
    """A uvicorn server for ``app`` (HTTP/1.1 with h11) with ``limits`` on every
    connection (`provenance.web.guard`): the witness and the web app share it. With
    ``limits.trusted_proxies``, a request from one of them counts as from the client its
    X-Forwarded-For names (`provenance.web.proxies.TrustedProxies`). The warnings any
    client can cause, one a request, are written once a minute (`quiet_client_noise`).
    ``keep_alive``: seconds an idle kept-alive connection stays open."""
    if limits.trusted_proxies:
        app = TrustedProxies(app, limits.trusted_proxies)
    quiet_client_noise()
    return uvicorn.Server(
        uvicorn.Config(
            app,
            http=guarded_protocol(limits),
            log_level="warning",
            # no handlers of uvicorn's own: its records reach the root logger, written as
            # every other line (`clients.cli.configure_logging`, README's PROV_LOG_LEVEL)
            log_config=None,
            access_log=False,
            server_header=False,
            # No page speaks WebSocket. With uvicorn's default ("auto") an upgrade request
            # was handed to its WebSocket protocol, which answered a bare 403 and left the
            # connection counted against its client for ever (`provenance.web.guard`):
            # 32 requests shut an address out. Now the upgrade is ignored (RFC 9110 7.8).
            ws="none",
            # The per-client shares count the peer address; X-Forwarded-For only from
            # --trusted-proxy peers, read from the right (`TrustedProxies`), never uvicorn's.
            proxy_headers=False,
            timeout_keep_alive=keep_alive,
            # the guard refuses connections beyond the cap with a clear 503 first
            limit_concurrency=limits.max_connections + 1,
            # h11's bound on an incomplete event: the guard's head bound comes first
            h11_max_incomplete_event_size=limits.max_head_bytes,
        )
    )


def web_limits(config: WebConfig, limits: HttpLimits) -> HttpLimits:
    """``limits`` with the body rules of uploads (`WebConfig`) plus a margin, so an
    upload's own clearer 408 comes first and the guard only backs it up."""
    margin = 5.0
    return replace(
        limits,
        body_idle_seconds=config.upload_idle_seconds + margin,
        body_grace_seconds=config.upload_grace_seconds + margin,
        body_min_rate=config.upload_min_rate,
    )


def _server(config: WebConfig, limits: HttpLimits = DEFAULT_LIMITS) -> uvicorn.Server:
    return uvicorn_server(create_app(config), web_limits(config, limits))


def bound_config(config: WebConfig, address: str) -> WebConfig:
    """``config`` for a page bound to ``address`` (HOST:PORT, as `bind` returns it): its
    ``allowed_hosts`` with the `default_host_names` of HOST added."""
    names = default_host_names(address.rpartition(":")[0])
    return replace(config, allowed_hosts=tuple(dict.fromkeys((*config.allowed_hosts, *names))))


def allowed_hosts_line(config: WebConfig) -> str:
    """The start-up line saying which Host names the page answers (`AllowedHosts.describe`)."""
    return AllowedHosts(config.allowed_hosts).describe()


def start_web(listen: str, config: WebConfig, limits: HttpLimits = DEFAULT_LIMITS) -> WebServer:
    """Serve the web app on ``listen`` from a background thread (``prov serve
    --http``), each connection under ``limits``. Raises ConfigError naming --http when
    the address cannot be bound."""
    sock, address = bind(listen, "--http")
    config = bound_config(config, address)
    server = _server(config, limits)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="web", daemon=True
    )
    thread.start()
    return WebServer(address, server, thread, allowed_hosts_line(config))


def run_web(
    listen: str, config: WebConfig, announce: bool = True, limits: HttpLimits = DEFAULT_LIMITS
) -> None:
    """Serve the web app on ``listen`` until SIGINT/SIGTERM (``prov web``), each
    connection under ``limits``; prints ``web on http://HOST:PORT`` once bound, and
    "shutting down", "web stopped" when signalled (`serve_until_signalled`). Raises
    ConfigError when the address cannot be bound. The line after says which Host names
    it answers (`allowed_hosts_line`)."""
    sock, address = bind(listen)
    config = bound_config(config, address)
    ready = f"web on http://{address}\n{allowed_hosts_line(config)}" if announce else None
    serve_until_signalled(_server(config, limits), sock, "web", ready)


def serve_until_signalled(
    server: uvicorn.Server, sock: socket.socket, what: str, ready: str | None = None
) -> None:
    """Run ``server`` on the bound ``sock`` until SIGINT (unless the process has it
    ignored, a shell's background job: `provenance.cli.options.stop_signals`) or SIGTERM,
    then stop it as `prov serve` stops: print "shutting down", let the requests in flight
    finish (a second signal cuts them short) and print "WHAT stopped"; the command then
    exits 0.
    ``ready``, when given, is printed once the handlers are set (a signal after it stops
    cleanly). uvicorn run in the main thread re-raises the signal once it has shut down:
    SIGTERM (systemd's stop) then killed the process (exit 143, no message) and SIGINT
    ended in a KeyboardInterrupt; here it runs in a thread (where uvicorn sets no
    handlers) while this thread waits for the signal. Raises ConfigError when the server
    stops by itself (it could not start).

    The handler only sets attributes, and this thread waits in `time.sleep`: a handler
    runs in this thread between two bytecodes, also while this thread holds a lock, so
    one that set a `threading.Event` this thread was waiting on (as before) could block
    for good on the Event's own lock, taken by `Event.wait` around its wait: "shutting
    down" was never printed and the process outlived SIGTERM (once in a CI run, 4
    December)."""
    signals: list[int] = []  # the signals received, appended by the handler (no lock)

    def on_signal(signum: int, frame: object) -> None:
        if signals:  # a second signal: stop waiting for requests in flight
            server.force_exit = True
        signals.append(signum)

    # SIGINT left ignored in a shell's background job (`stop_signals`)
    previous = {sig: signal.signal(sig, on_signal) for sig in stop_signals()}
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=what)
    try:
        thread.start()
        if ready is not None:
            print(ready, flush=True)
        while thread.is_alive() and not signals:
            time.sleep(SIGNAL_POLL_S)
        if not signals:
            raise ConfigError(f"the {what} server stopped by itself (see the messages above)")
        print("shutting down", flush=True)
        server.should_exit = True
        thread.join()
    finally:
        if thread.is_alive():  # an exception above: do not leave the server running
            server.should_exit = server.force_exit = True
            thread.join(timeout=10)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{what} stopped", flush=True)
