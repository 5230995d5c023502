"""Idle HTTP connections from one client do not shut the others out: `prov web` and `prov
witness serve` raise their open-file limit (RLIMIT_NOFILE) from the soft to the hard
limit at start, as `prov serve` does (tests/test_grpc_connections.py). Their
--max-connections bounds the descriptors connections take, but an operator may set it
above the soft limit (commonly 1,024, systemd's default for a service); then one client
allowed that many (--connections-per-client) took every descriptor, and the server
accepted nobody else. Real servers on loopback, started with a low soft limit; 127.0.0.1
and ::1 are two client addresses of a server on [::]."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from provenance.log.checkpoint import generate_log_key
from tests.conftest import cli_process, closed_port, read_line

#: The soft limit the server is started under (its hard limit stays as it is).
SOFT_LIMIT = 256
#: Idle connections one client holds: more than the soft limit, fewer than the caps.
HELD = SOFT_LIMIT + 44
CAPS = ["--max-connections", "1000", "--connections-per-client", "1000"]


def _command(which: str, tmp_path: Path) -> tuple[list[str], str, str, int]:
    """The command line of the server ``which``, the line prefix its address follows, a
    path it answers without any other service and its status there."""
    if which == "web":
        command = ["web", "--server", closed_port(), "--listen", "[::]:0"]
        return command, "web on ", "/openapi.json", 200
    log_key = generate_log_key(tmp_path / "log.pem", "log.example/log").verifier_key()
    command = ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--log-key", log_key]
    command += ["--state", str(tmp_path / "state"), "--name", "w.example/w", "--listen", "[::]:0"]
    return command, "witness on ", "/", 404  # it serves POST /add-checkpoint only


@pytest.mark.parametrize("which", ["web", "witness"])
def test_idle_connections_past_the_soft_open_file_limit_do_not_shut_others_out(
    tmp_path: Path, which: str
) -> None:
    """One address holds more idle connections (nothing sent) than the server's soft
    open-file limit; another address is still answered."""
    command, ready, path, expected = _command(which, tmp_path)
    command += [*CAPS, "--header-seconds", "120"]
    proc = cli_process(command, soft_open_files=SOFT_LIMIT)
    held: list[socket.socket] = []
    try:
        port = int(read_line(proc, ready).rpartition(":")[2].strip("/"))
        for _ in range(HELD):
            held.append(socket.create_connection(("127.0.0.1", port)))
        try:
            with urllib.request.urlopen(f"http://[::1]:{port}{path}", timeout=20) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        assert status == expected
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
