"""The test servers' logs are read as they are written: a server that logs more than a
pipe holds (64 KiB on Linux) goes on answering, and its whole log is there for the test.
Before, `start_server` piped its stderr and read it only once the server stopped: a
chatty server stopped at its next write, for good."""

from __future__ import annotations

import io
import re
from pathlib import Path

from clients.api import ProvenanceClient
from tests.conftest import start_server
from tests.drain import Drained

#: What a Linux pipe holds, in bytes.
PIPE_BYTES = 64 << 10
#: gRPC's own tracing, to stderr: about 45 KB a call here, 22 KB to start.
CHATTY = {"GRPC_VERBOSITY": "debug", "GRPC_TRACE": "all"}


def test_a_server_that_logs_more_than_a_pipe_holds_goes_on_answering(tmp_path: Path) -> None:
    """Before, the second call here waited for its deadline (the server blocked writing
    its trace), and the server had to be killed."""
    srv = start_server(tmp_path / "prov.db", env=CHATTY)
    try:
        client = ProvenanceClient(srv.address, timeout=30)
        try:
            for _ in range(5):
                client.log_key()
        finally:
            client.close()
    finally:
        code = srv.stop()
    log = srv.stderr()
    assert code == 0, log[-2000:]
    assert len(log.encode()) > 2 * PIPE_BYTES, len(log)
    assert "near-duplicate index" in log, log[:2000]  # the start of the log is kept


def test_what_is_drained_is_kept_at_both_ends_in_bounded_memory() -> None:
    """Past twice its bound, the first and last characters are kept, the rest counted."""
    stream = io.StringIO("".join(f"line {i:04d}\n" for i in range(1000)))  # 10 characters each
    drained = Drained(stream, keep=110)
    assert drained.wait()
    text = drained.text()
    assert text.startswith("line 0000\nline 0001\n") and text.endswith("line 0999\n"), text
    found = re.fullmatch(r"(.*)\n\[\.\.\. ([\d,]+) characters left out \.\.\.\]\n(.*)", text, re.S)
    assert found is not None, text
    head, dropped, tail = found.group(1), int(found.group(2).replace(",", "")), found.group(3)
    assert len(head) == 110 and 110 <= len(tail) < 120, (len(head), len(tail))
    assert len(head) + dropped + len(tail) == 10_000, text


def test_a_byte_that_is_not_utf8_does_not_stop_the_reading() -> None:
    """A child's log holding a byte that is not UTF-8 (a file name it echoes, say): before,
    the decode error ended the reading there, so the rest of the log was lost and the
    child blocked again once the pipe filled. The byte now reads as U+FFFD and the
    reading goes on to the end."""
    raw = io.BytesIO(b"before \xff\xfe bad bytes\n" + b"after\n" * (PIPE_BYTES // 3))
    drained = Drained(io.TextIOWrapper(raw, encoding="utf-8"))
    assert drained.wait()
    text = drained.text()
    assert text.startswith("before \ufffd\ufffd bad bytes\n"), text[:80]
    assert text.count("after\n") == PIPE_BYTES // 3, text[-80:]
