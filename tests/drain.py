"""A child process's piped output read to its end on a thread, so the child never blocks.

A pipe holds 64 KiB on Linux: a child that writes more to a stream nobody reads stops at
its next write, for good. A test server's stderr (its log) was piped and read only after
the server stopped, so a chatty server (gRPC's traces, a warning per request) hung once
its log passed 64 KiB: its calls went unanswered until they timed out. `Drained` reads
such a stream as the child writes it, keeping the start and the end of what it read (for
a test's assertions and failure messages) in bounded memory.
"""

from __future__ import annotations

import codecs
import threading
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
        self._thread = threading.Thread(target=self._read, name="drain", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        # the bytes under the text stream, decoded here with U+FFFD for what is not
        # UTF-8: a strict decode error would end the reading, and the child would block
        raw: IO[bytes] | None = getattr(self._stream, "buffer", None)
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
        try:
            if raw is None:
                while chunk := self._stream.readline(_READ_CHARS):
                    self._add(chunk)
            else:
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
