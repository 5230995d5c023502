"""A child process's piped output read to its end on a thread, so the child never blocks.

A pipe holds 64 KiB on Linux: a child that writes more to a stream nobody reads stops at
its next write, for good. A test server's stderr (its log) was piped and read only after
the server stopped, so a chatty server (gRPC's traces, a warning per request) hung once
its log passed 64 KiB: its calls went unanswered until they timed out. `Drained` reads
such a stream as the child writes it, keeping the start and the end of what it read (for
a test's assertions and failure messages) in bounded memory; `Lines` also hands out the
lines of a stdout that a test reads (a server's address lines). `drain` puts both streams
of a child to them, and `next_line`, `logged` and `finish` read them (or the pipe itself,
where nothing drains it) as ``readline``, ``stderr.read`` and ``communicate`` did.
tests/test_pipes_drained.py fails a test that starts a child with a pipe left unread.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import subprocess
import threading
import weakref
from collections import deque
from typing import IO

#: Characters `Drained` keeps of the start of a stream, and as many of its end.
KEPT_CHARS = 1 << 20
#: Characters read at a time: a line, or this much of a longer one.
_READ_CHARS = 1 << 16


class Drained:
    """Reads the text stream ``stream`` (a child's stdout or stderr, piped) to its end on
    a daemon thread, then closes it. Keeps its first ``keep`` characters and its last
    ``keep`` (`text`); what falls between is counted, not kept."""

    def __init__(self, stream: IO[str], keep: int = KEPT_CHARS) -> None:
        self._stream = stream
        self._keep = keep
        self._lock = threading.Lock()
        self._head: list[str] = []
        self._head_chars = 0
        self._tail: deque[str] = deque()
        self._tail_chars = 0
        self._dropped = 0
        # the text stream itself is read: what it read ahead before the drain began comes
        # first, and its lines end as its ``readline`` ends them (universal newlines).
        # Reading the bytes under it lost both. What is not UTF-8 reads as U+FFFD (a
        # strict decode error would end the reading, and the child would block); where
        # the stream was read from before, its errors cannot be set, and the bytes under
        # it are read from a decode error on (`_read`)
        with contextlib.suppress(AttributeError, io.UnsupportedOperation):
            stream.reconfigure(errors="replace")  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._read, name="drain", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            try:
                while chunk := self._stream.readline(_READ_CHARS):
                    self._add(chunk)
            except UnicodeDecodeError:  # strict: the bytes under it, from here on
                raw: IO[bytes] | None = getattr(self._stream, "buffer", None)
                if raw is not None:
                    self._add("\ufffd")  # what the failed read had taken
                    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
                    while data := raw.readline(_READ_CHARS):
                        self._add(decode(data))
                    self._add(decode(b"", final=True))
        except (OSError, ValueError):  # closed under us: what was read is kept
            pass
        finally:
            self._stream.close()

    def _add(self, chunk: str) -> None:
        if not chunk:
            return
        with self._lock:
            room = self._keep - self._head_chars
            if room > 0:
                self._head.append(chunk[:room])
                self._head_chars += min(room, len(chunk))
                chunk = chunk[room:]
                if not chunk:
                    return
            self._tail.append(chunk)
            self._tail_chars += len(chunk)
            while self._tail_chars - len(self._tail[0]) >= self._keep:
                gone = self._tail.popleft()
                self._tail_chars -= len(gone)
                self._dropped += len(gone)

    def wait(self, timeout: float = 20) -> bool:
        """Wait up to ``timeout`` seconds for the end of the stream (the child exited, or
        closed it); True once it came."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def text(self) -> str:
        """What was read so far: all of it up to twice ``keep`` characters, else the first
        and the last ``keep`` with a line counting the characters left out between."""
        with self._lock:
            head, tail = "".join(self._head), "".join(self._tail)
            dropped = self._dropped
        if dropped:
            return f"{head}\n[... {dropped:,} characters left out ...]\n{tail}"
        return head + tail


class Lines(Drained):
    """`Drained` that also hands out what it reads line by line, in order (`next_line`):
    a child's stdout whose lines a test waits for. Lines not taken yet are held up to
    ``keep`` characters; past that a line, and every line after it, is only kept in
    `text`: `next_line` hands out the lines held, then fails, never a later line after
    a gap (a test reading lines in order would see a stream without those between)."""

    def __init__(self, stream: IO[str], keep: int = KEPT_CHARS) -> None:
        self._ready = threading.Condition()
        self._queue: deque[str] = deque()
        self._queued_chars = 0
        self._overflowed = False
        self._ended = False
        super().__init__(stream, keep)

    def _read(self) -> None:
        try:
            super()._read()
        finally:
            with self._ready:
                self._ended = True
                self._ready.notify_all()

    def _add(self, chunk: str) -> None:
        super()._add(chunk)
        if not chunk:
            return
        with self._ready:
            if self._overflowed or self._queued_chars + len(chunk) > self._keep:
                self._overflowed = True
                self._ready.notify_all()
                return
            self._queue.append(chunk)
            self._queued_chars += len(chunk)
            self._ready.notify_all()

    def next_line(self, timeout: float | None = None) -> str | None:
        """The next line not taken yet (with its newline), waiting up to ``timeout``
        seconds (None: for ever) for it: "" once the stream ended, None on timeout.
        Raises AssertionError once the lines held are taken, where later ones were not
        held (see the class docstring)."""
        with self._ready:
            if not self._ready.wait_for(
                lambda: self._queue or self._ended or self._overflowed, timeout
            ):
                return None
            if not self._queue and self._overflowed:
                raise AssertionError(
                    f"the child's stdout went on past the {self._keep:,} characters of"
                    " lines not taken that are held: its lines from there were not held"
                    f" (its stdout: {self.text()[-2000:]!r})"
                )
            if not self._queue:
                return ""
            line = self._queue.popleft()
            self._queued_chars -= len(line)
            return line

    def rest(self) -> str:
        """The lines not taken yet, all taken now (call it after the end of the stream);
        the whole `text` where some could not be held."""
        with self._ready:
            rest, self._queue, self._queued_chars = "".join(self._queue), deque(), 0
            overflowed = self._overflowed
        return self.text() if overflowed else rest


#: The drained streams of each child given to `drain_stdout` or `drain_stderr`.
_OUT: weakref.WeakKeyDictionary[subprocess.Popen[str], Lines] = weakref.WeakKeyDictionary()
_ERR: weakref.WeakKeyDictionary[subprocess.Popen[str], Drained] = weakref.WeakKeyDictionary()


def drain_stdout(proc: subprocess.Popen[str]) -> Lines:
    """``proc``'s piped stdout, read from now on as it is written (`Lines`);
    ``proc.stdout`` is set to None, leaving the stream to the reader: read its lines with
    `next_line` (or `tests.conftest.read_line`)."""
    assert proc.stdout is not None, "the child's stdout was not piped"
    lines = _OUT[proc] = Lines(proc.stdout)
    proc.stdout = None
    return lines


def drain_stderr(proc: subprocess.Popen[str]) -> Drained:
    """``proc``'s piped stderr, read from now on as it is written, so a child that logs
    more than a pipe holds (64 KiB) is never blocked; ``proc.stderr`` is set to None,
    leaving the stream to the reader (`logged`). Before, servers' stderr was read only
    once they stopped: one that logged 64 KiB stopped answering."""
    assert proc.stderr is not None, "the child's stderr was not piped"
    log = _ERR[proc] = Drained(proc.stderr)
    proc.stderr = None
    return log


def drain(proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
    """Drain each of ``proc``'s piped streams (`drain_stdout`, `drain_stderr`); ``proc``."""
    if proc.stdout is not None:
        drain_stdout(proc)
    if proc.stderr is not None:
        drain_stderr(proc)
    return proc


def next_line(proc: subprocess.Popen[str], timeout: float | None = None) -> str | None:
    """The next line of ``proc``'s stdout (`Lines.next_line`: "" at its end, None past
    ``timeout`` seconds); from the pipe itself where it is not drained (then ``timeout``
    is not kept: a read waits for its line)."""
    lines = _OUT.get(proc)
    if lines is not None:
        return lines.next_line(timeout)
    assert proc.stdout is not None, "the child's stdout was not piped"
    return proc.stdout.readline()


def logged(proc: subprocess.Popen[str]) -> str:
    """``proc``'s stderr: what the drain read so far (all of it once ``proc`` exited,
    waiting up to 20 s for its end); else the rest of the pipe, read to its end; "" where
    it was not piped."""
    log = _ERR.get(proc)
    if log is None:
        return proc.stderr.read() if proc.stderr is not None else ""
    if proc.poll() is not None:
        log.wait()
    return log.text()


def finish(proc: subprocess.Popen[str], timeout: float | None = None) -> tuple[str, str]:
    """``proc.communicate(timeout=timeout)`` for a child whose streams are drained: wait
    for its exit (TimeoutExpired past ``timeout`` seconds, the child left running), then
    (what its stdout had that was not taken, its whole stderr)."""
    out = err = ""
    if proc.stdout is not None or proc.stderr is not None:  # one stream left piped
        piped_out, piped_err = proc.communicate(timeout=timeout)
        out, err = piped_out or "", piped_err or ""
    else:
        proc.wait(timeout)
    if (lines := _OUT.get(proc)) is not None:
        lines.wait()
        out = lines.rest()
    if proc in _ERR:
        err = logged(proc)
    return out, err
