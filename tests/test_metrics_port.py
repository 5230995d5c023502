"""The /metrics port under hostile clients: idle connections (slowloris) and clients that
never read cannot hold the process's threads, and a scrape still gets through."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from provenance import metrics


def _threads() -> int:
    """Threads answering a /metrics connection now (socketserver names them after
    process_request_thread), whatever else of the test session runs."""
    return sum("process_request_thread" in t.name for t in threading.enumerate())


def test_idle_connections_hold_bounded_threads_and_time_out() -> None:
    port = metrics.serve_metrics("127.0.0.1:0")
    before = _threads()
    socks = []
    try:
        for _ in range(200):  # half a request each, never finished (slowloris)
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        time.sleep(0.5)
        held = _threads() - before
        assert held <= metrics.METRICS_MAX_CONNECTIONS, held  # was one thread each: 200
        # each connection is closed once the request deadline has passed
        end = time.monotonic() + metrics.METRICS_REQUEST_TIMEOUT_S + 10
        while _threads() > before and time.monotonic() < end:
            time.sleep(0.2)
        assert _threads() == before
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            assert b"prov_rpc_requests" in r.read()
    finally:
        for s in socks:
            s.close()


def test_a_byte_at_a_time_request_is_cut_at_the_deadline() -> None:
    port = metrics.serve_metrics("127.0.0.1:0")
    s = socket.create_connection(("127.0.0.1", port))
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < metrics.METRICS_REQUEST_TIMEOUT_S + 10:
            try:
                s.sendall(b"X")  # one header byte a second: each read comes in time
            except OSError:
                closed = True
                break
            s.settimeout(1.0)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                pass
        assert closed, "the server kept a trickling request open past its deadline"
        assert time.monotonic() - t0 < metrics.METRICS_REQUEST_TIMEOUT_S + 3
    finally:
        s.close()


def _connect(source: str, port: int) -> socket.socket:
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def test_one_address_cannot_take_every_slot_from_the_scraper() -> None:
    port = metrics.serve_metrics("0.0.0.0:0")
    # one host (127.0.0.2) holds as many idle half-requests as the port serves at once
    socks = [_connect("127.0.0.2", port) for _ in range(metrics.METRICS_MAX_CONNECTIONS)]
    try:
        for s in socks:
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
        time.sleep(0.5)
        scraper = _connect("127.0.0.3", port)  # the scraper, from another address
        try:
            scraper.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            answer = b""
            while chunk := scraper.recv(65536):
                answer += chunk
        finally:
            scraper.close()
        assert answer.startswith(b"HTTP/1.0 200"), answer[:80]  # was b"": closed on arrival
        assert b"prov_rpc_requests" in answer
    finally:
        for s in socks:
            s.close()
