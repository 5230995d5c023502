"""A deadline for one whole exchange over HTTP (`Cutoff`), wherever it then waits:
connecting, the status line, the headers or the body. The socket timeout alone bounds
each read, so a server dripping its answer a byte at a time within it holds the caller
for as long as it likes (an audit for days: http.client takes 100 header lines of 64 KiB
each). A tiled log's fetches (`provenance.log.tiledir`), the timestamp authority's
exchange (`provenance.c2pa.timestamp`) and the witness client's
(`provenance.witness.client`) each run under one. Here, below the log layer, because the
pure core opens no connection (as `provenance.cli.files`)."""

from __future__ import annotations

import contextlib
import socket
import threading


class Cutoff:
    """The deadline of one exchange, ``seconds`` from entering the ``with`` block: when
    it passes, `expired` is set and every socket handed to `watch` is shut down, so a read
    blocked on it returns at once (an error, or the end of the stream: test `expired`
    after the exchange, as an answer cut mid-body may look complete)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True

    def __enter__(self) -> Cutoff:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket) -> None:
        """Shut ``sock`` down when the deadline passes (at once if it has)."""
        with self._lock:
            self._sockets.append(sock)
            if self.expired.is_set():
                self._shut(sock)

    def create_connection(
        self,
        address: tuple[str, int],
        timeout: float | None = None,
        source_address: tuple[str, int] | None = None,
    ) -> socket.socket:
        """A TCP connection to ``address`` (host, port) as `socket.create_connection`
        makes it (each address the name has, in turn, each connect under ``timeout``
        seconds), each socket watched from before its connect, so that the deadline or
        `cut` ends a connect still in progress at once (a peer that never completes the
        handshake: a dropped SYN), not after ``timeout`` as a plain connect:
        ``shutdown(2)`` of a socket still connecting aborts the connect (Linux). The
        name lookup before (``getaddrinfo(3)``) is not cut. For
        `http.client.HTTPConnection`'s ``_create_connection``
        (`provenance.witness.client`). Raises OSError as `socket.create_connection`
        does; ConnectionAbortedError when cut before any connect."""
        host, port = address
        error: OSError | None = None
        for family, kind, proto, _, where in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            if self.expired.is_set():
                break
            sock = socket.socket(family, kind, proto)
            try:
                self.watch(sock)
                sock.settimeout(timeout)
                if source_address is not None:
                    sock.bind(source_address)
                sock.connect(where)
            except OSError as e:
                sock.close()
                error = e
                continue
            return sock
        if self.expired.is_set():
            raise ConnectionAbortedError(f"cut while connecting to {host}:{port}")
        raise error or OSError(f"no address for {host}:{port}")

    def cut(self) -> None:
        """End the exchange now, as if the deadline had passed (`expired` set, every
        watched socket shut down): for a caller stopping (`provenance.witness.client
        .Cosigner.close`), which must not wait out the deadline."""
        self._timer.cancel()
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            self.expired.set()
            for sock in self._sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        # the plain socket's shutdown, also for a TLS one: ssl's own drops its state
        # first, and the read blocked in another thread would then raise ValueError
        with contextlib.suppress(OSError):  # closed already
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
