"""A loopback port kept for a test's server that binds it later.

A port the kernel gives no socket is free for the next bind to port 0, which is how
every test server starts, in both pytest-xdist workers: a test that bound port 0 and let
it go before its own server (or a dead-on-purpose address) used it could find another
worker's server there (7 times in 30,000 binds to port 0 here; a held port 0 times). See
also conftest.closed_port, for a port that no server of the test ever binds."""

from __future__ import annotations

import socket


def kept_port(port: int = 0) -> socket.socket:
    """A socket bound to ``port`` of 127.0.0.1 (0: a free one; else OSError unless it is
    free or held only by sockets with SO_REUSEADDR that do not listen) with SO_REUSEADDR
    and not listening: a connection to the port is refused, and the kernel gives it to no other bind (to
    port 0 or to the port itself) but one with SO_REUSEADDR too, as a server that binds
    the port itself does (PostgreSQL, `prov serve`'s check that it can listen, the HTTP
    servers of provenance.web.serve.bind); ``listen()`` on it takes the port outright.
    Closing it gives the port back. Its number: ``getsockname()[1]``."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    except BaseException:
        s.close()
        raise
    return s
