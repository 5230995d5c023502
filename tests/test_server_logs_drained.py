"""The test servers' logs are read as they are written: a server that logs more than a
pipe holds (64 KiB on Linux) goes on answering, and its whole log is there for the test.
Before, `start_server` piped its stderr and read it only once the server stopped: a
chatty server stopped at its next write, for good."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from tests.conftest import read_line, start_server
from tests.drain import Drained, Lines, drain, drain_stdout, finish

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


#: A child that prints its ready line, then twice what a pipe holds, then a last line.
CHATTY_STDOUT = (
    "import sys\n"
    "print('listening on 127.0.0.1:1', flush=True)\n"
    f"sys.stdout.writelines('x' * 99 + '\\n' for _ in range({2 * PIPE_BYTES // 100}))\n"
    "print('done')\n"
)


def test_a_child_that_prints_more_than_a_pipe_holds_after_its_ready_line_ends() -> None:
    """A test reads a server's stdout up to its address line and no further: before,
    its stdout stayed a pipe nobody read, so a child that printed 64 KiB more stopped at
    its next write for good (here: it never exited). Its stdout is now drained, its
    lines still read in order by `read_line`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHATTY_STDOUT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    drain(proc)
    try:
        assert read_line(proc, "listening on ") == "127.0.0.1:1"
        assert proc.wait(timeout=30) == 0
        assert read_line(proc, "done") == "done"
        out, err = finish(proc)
        assert (out, err) == ("", "")
    finally:
        proc.kill()
        proc.wait()


def test_lines_are_handed_out_in_order_and_the_rest_is_kept() -> None:
    lines = Lines(io.StringIO("a\nb\nc\n"))
    assert lines.wait()
    assert [lines.next_line(1), lines.next_line(1)] == ["a\n", "b\n"]
    assert lines.rest() == "c\n" and lines.next_line(1) == ""
    assert lines.text() == "a\nb\nc\n"


def test_finish_reads_a_drained_stdout_beside_a_piped_stderr() -> None:
    """`finish` of a child whose stdout alone is drained: before, its stdout came back
    empty (communicate saw no stdout to read)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # pipes: one line, read by finish
        text=True,
    )
    drain_stdout(proc)
    assert finish(proc, timeout=60) == ("out\n", "err\n")


def test_lines_read_before_the_drain_began_and_crlf_lines_read_as_the_pipe_gave_them() -> None:
    """A stdout drained once a test has read from it: the lines its text stream had
    already read ahead are handed out too, and lines end as that stream ends them
    (universal newlines: CRLF read as LF), as ``readline`` gave them. Before, the drain
    read the bytes under the text stream: "next" here, read ahead with "ready", was lost
    (next_line gave ""), and a line ending in CRLF came back with its CR."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.write('ready\\nnext\\r\\nlast\\n')"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.wait(timeout=60) == 0
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        lines = drain_stdout(proc)
        assert [lines.next_line(20), lines.next_line(20), lines.next_line(20)] == [
            "next\n",
            "last\n",
            "",
        ]
    finally:
        proc.kill()
        proc.wait()


def test_a_byte_that_is_not_utf8_does_not_stop_a_stream_read_from_before() -> None:
    """A stream read from before the drain began (its errors can no longer be set to
    replace): at a byte that is not UTF-8 the reading goes on to the end, in the bytes
    under it (what the failed read had taken, up to a chunk of the stream, is lost)."""
    start = b"first\n" + (b"x" * 99 + b"\n") * 300  # more than the stream reads ahead
    raw = io.BytesIO(start + b"before \xff\xfe bad bytes\n" + b"after\n" * (PIPE_BYTES // 3))
    stream = io.TextIOWrapper(raw, encoding="utf-8")
    assert stream.readline() == "first\n"
    drained = Drained(stream)
    assert drained.wait()
    text = drained.text()
    assert text.startswith("x" * 99) and text.endswith("after\n" * 100), text[-80:]
    assert "\ufffd" in text and text.count("after\n") > PIPE_BYTES // 3 - 2000, text[-80:]


def test_lines_past_what_is_held_are_never_handed_out_after_a_gap() -> None:
    """Lines not taken past ``keep`` characters are not held: the next line handed out
    after them would skip them, so a test reading lines in order (or looking for one
    that never comes) would see a stream without them. Before: "line 2" was dropped and
    "line 3" handed out after "line 1". Now the held lines come, then a clear failure."""
    r, w = os.pipe()
    lines = Lines(os.fdopen(r, "r"), keep=25)  # two lines of 10 characters held
    try:
        os.write(w, b"line 0000\nline 0001\nline 0002\n")
        deadline = time.monotonic() + 20
        while "line 0002" not in lines.text() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lines.next_line(1) == "line 0000\n"
        os.write(w, b"line 0003\n")
        os.close(w)
        w = -1
        assert lines.wait()
        assert lines.next_line(1) == "line 0001\n"
        with pytest.raises(AssertionError, match=r"not held .*line 0002"):
            lines.next_line(1)
    finally:
        if w >= 0:
            os.close(w)
