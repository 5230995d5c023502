"""The tests' PostgreSQL cluster (tests/pgserver.py) keeps its loopback port from the
moment it is chosen until the cluster is removed, also while a test keeps it halted.

A port no socket holds is free for any bind: a server's bind to port 0 (the other
pytest-xdist worker starts them all the time; the kernel gives those odd ports, as it
gave the cluster's) or a bind to the port itself. A socket bound to the cluster's port
without SO_REUSEADDR, between its choice and the postmaster's bind or during a halt,
made the start fail ('could not bind IPv4 address "127.0.0.1": Address already in use'):
the postmaster's SO_REUSEADDR does not reach past such a socket."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import psycopg
import pytest

from tests.pgserver import PgServer, missing_reason


def test_a_halted_cluster_keeps_its_port_and_starts_again_on_it() -> None:
    reason = missing_reason()
    if reason is not None:
        pytest.fail(f"{reason}: apt-get install postgresql (as .ci/run does)")
    pg = PgServer.start()
    try:
        pg.halt("fast")
        # what an outgoing connection's local end would have taken: refused now
        taker = socket.socket()
        try:
            with pytest.raises(OSError) as taken:
                taker.bind(("127.0.0.1", pg.port))
            assert taken.value.errno == errno.EADDRINUSE
        finally:
            taker.close()
        # nothing listens meanwhile: a client is refused, as by a stopped server
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", pg.port), timeout=10).close()
        pg.resume()
        with psycopg.connect(pg.url(), autocommit=True, connect_timeout=30) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pg.stop()
    # removed, the cluster gives its port back: no socket of this process holds it. (Not
    # "a new bind succeeds": the closed connection's TIME_WAIT end, or an outgoing
    # connection of the other pytest-xdist worker given the port, refuses a bind for a
    # while; CI failed so once, "Address already in use".)
    assert _own_sockets_on(pg.port) == []


def _own_sockets_on(port: int) -> list[int]:
    """This process's descriptors of sockets bound to ``port`` (listening, connected, or
    only bound as `tests.ports.kept_port` leaves them, which /proc/net/tcp does not list)."""
    held = []
    for entry in Path("/proc/self/fd").iterdir():
        try:
            is_socket = os.readlink(entry).startswith("socket:[")
        except OSError:  # the descriptor iterdir itself used, closed since
            continue
        if not is_socket:
            continue
        with socket.socket(fileno=os.dup(int(entry.name))) as s:
            if s.family in (socket.AF_INET, socket.AF_INET6) and s.getsockname()[1] == port:
                held.append(int(entry.name))
    return held
