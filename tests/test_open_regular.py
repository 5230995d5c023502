"""`provenance.cli.files.open_regular_fd`, the one open of a path that must be a regular
file (open56): what is not one is refused without ever being opened for reading, and the
file judged is the file read, for every caller.

Before: `open_regular` (and through it `clients.files`, the C2PA writer, the tiled log,
the witness), the log key's load and the scan's small reads opened the path (without
blocking) and then refused a FIFO or device by ``fstat``: opened once, which acts on some
devices (a watchdog starts, a tape rewinds) and wakes a FIFO's waiting writer. The C2PA
reader judged the path by ``stat`` first, so a symbolic link swapped to a FIFO between
that ``stat`` and its open was opened all the same.

Whether a FIFO was opened is read from the kernel's own record, an inotify ``IN_OPEN``
event on it (queued within the open call, so read after it without waiting); devices
cannot be made here (mknod needs root), a FIFO stands for them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from clients.files import NotRegularFileError
from clients.files import open_regular as open_untrusted
from clients.scan.hashing import _read_small
from provenance.c2pa import ReaderPool, read_c2pa
from provenance.cli.files import open_regular, open_regular_fd
from provenance.core.errors import ConfigError, MediaError
from provenance.log.checkpoint import load_log_signer
from tests.conftest import FIXTURES, ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="inotify and O_PATH are Linux's")

#: A JPEG whose C2PA manifest reads Valid without trust anchors.
PHOTO = FIXTURES / "c2pa" / "generated" / "gen_ed25519_capture.jpg"
#: inotify(7): the file was opened.
IN_OPEN = 0x20


class Opens:
    """How many times the file ``path`` was opened since the last `count`, by anyone
    (inotify ``IN_OPEN``; an ``O_PATH`` open is none)."""

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(path), IN_OPEN) < 0:
            pytest.skip(f"no inotify here: {os.strerror(ctypes.get_errno())}")

    def count(self) -> int:
        """Events since the last call (16 bytes each: these watches name no file)."""
        n = 0
        while True:
            try:
                n += len(os.read(self.fd, 4096)) // 16
            except BlockingIOError:
                return n


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[tuple[Path, Opens]]:
    """A FIFO with no writer and the count of its opens; skipped where the kernel reports
    an ``O_PATH`` open as one (before Linux 5.x's fsnotify left those out)."""
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    opens = Opens(path)
    os.close(os.open(path, os.O_PATH))
    if opens.count():
        pytest.skip("this kernel reports O_PATH opens to inotify")
    yield path, opens
    os.close(opens.fd)


KIND = "a FIFO (named pipe), not a regular file"


@pytest.mark.parametrize("via", ["named", "link"])
def test_a_fifo_is_refused_without_being_opened(
    tmp_path: Path, fifo: tuple[Path, Opens], via: str
) -> None:
    """A FIFO, named or behind a symbolic link, given to each opener: refused with its
    own message (the scan's small read: None), and opened by none. Before: every one but
    the C2PA reader (which judged the path by ``stat`` first) opened it once."""
    target, opens = fifo
    path = target if via == "named" else tmp_path / "link.jpg"
    if via == "link":
        path.symlink_to(target)
    calls: dict[str, tuple[Callable[[], object], type[Exception]]] = {
        "open_regular_fd": (lambda: open_regular_fd(path, NotRegularFileError), MediaError),
        "open_regular": (lambda: open_regular(path, ValueError), ValueError),
        "clients.files": (lambda: open_untrusted(path), NotRegularFileError),
        "log key": (lambda: load_log_signer(path, "origin"), ConfigError),
        "c2pa reader": (lambda: read_c2pa(str(path), "image/jpeg"), MediaError),
        "scan read": (lambda: _read_small(str(path), 1 << 20), Exception),
    }
    said: dict[str, tuple[str, int]] = {}
    for name, (call, error) in calls.items():  # each counted alone: inotify merges repeats
        try:
            outcome = repr(call())
        except error as e:
            outcome = str(e)
        said[name] = (outcome, opens.count())
    assert said == {
        "open_regular_fd": ("a FIFO (named pipe)", 0),
        "open_regular": (f"{path} is {KIND}", 0),
        "clients.files": (f"{path} is {KIND}", 0),
        "log key": (f"log key file {path} is {KIND}", 0),
        "c2pa reader": (f"cannot read {str(path)!r}: it is {KIND}", 0),
        "scan read": ("None", 0),
    }


def test_a_link_swapped_to_a_fifo_once_looked_at_is_never_opened(
    tmp_path: Path, fifo: tuple[Path, Opens], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symbolic link to a photo, swapped to the FIFO right after the C2PA reader first
    looks at it (its ``stat`` or its open): the photo it judged is the one read, and the
    FIFO is never opened. Before: the reader's ``stat`` saw the photo, its open then
    opened the FIFO and refused it ("cannot read ...: it is a FIFO (named pipe)")."""
    target, opens = fifo
    photo, link = tmp_path / "photo.jpg", tmp_path / "link.jpg"
    shutil.copy(PHOTO, photo)
    link.symlink_to(photo)
    swapped: list[str] = []

    def after(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(p: Any, *args: Any, **kwargs: Any) -> Any:
            out = real(p, *args, **kwargs)
            if not swapped and isinstance(p, str | os.PathLike) and os.fspath(p) == str(link):
                swapped.append(real.__name__)
                os.replace(_link_to(target, tmp_path), link)
            return out

        return call

    with ReaderPool(workers=1) as pool:
        monkeypatch.setattr(os, "stat", after(os.stat))
        monkeypatch.setattr(os, "open", after(os.open))
        result = read_c2pa(str(link), "image/jpeg", pool=pool)
        monkeypatch.undo()
    assert swapped and os.readlink(link) == str(target)  # the swap was made
    assert (result.present, result.validation_state) == (True, "Valid"), result
    assert opens.count() == 0


def _link_to(target: Path, folder: Path) -> Path:
    """A new symbolic link to ``target`` in ``folder``, to be renamed over another."""
    new = folder / "new-link"
    new.symlink_to(target)
    return new


def test_a_regular_file_is_opened_blocking_with_its_size(tmp_path: Path) -> None:
    """A regular file, also behind a symbolic link: its descriptor reads in blocking mode
    (the reader's worker relies on it) and its ``fstat`` gives the size checked; a
    missing path is an OSError naming the path, not /proc's name for a descriptor."""
    path, link = tmp_path / "f.bin", tmp_path / "link"
    path.write_bytes(b"12345")
    link.symlink_to(path)
    for p in (path, link):
        fd, st = open_regular_fd(p, ValueError)
        try:
            assert (os.get_blocking(fd), st.st_size, os.read(fd, 10)) == (True, 5, b"12345")
            assert os.path.samestat(st, os.stat(path))
        finally:
            os.close(fd)
    with pytest.raises(FileNotFoundError) as gone:
        open_regular_fd(tmp_path / "gone", ValueError)
    assert gone.value.filename == str(tmp_path / "gone")  # as os.open names it


#: The child for `test_an_unreadable_file_names_its_path`: a file of mode 0000 in a
#: folder it makes that anyone may pass through, opened by a user that may not read it
#: (root's child takes uid 65534 for it: root reads any file); prints the OSError.
_UNREADABLE = """
import os, sys, tempfile
from provenance.cli.files import open_regular_fd
folder = tempfile.mkdtemp()
path = os.path.join(folder, "secret")
try:
    os.chmod(folder, 0o711)
    with open(path, "wb") as f:
        f.write(b"x")
    os.chmod(path, 0)
    if os.geteuid() == 0:
        os.seteuid(65534)
    try:
        open_regular_fd(path, ValueError)
    except OSError as e:
        print(type(e).__name__, e.filename == path, str(e) == f"[Errno 13] Permission denied: {path!r}")
finally:
    if os.geteuid() != os.getuid():
        os.seteuid(os.getuid())
    os.remove(path)
    os.rmdir(folder)
"""


def test_an_unreadable_file_names_its_path() -> None:
    """A file this user may not read: PermissionError naming the path given, as an open
    of the path names it (the open that reads goes through /proc/self/fd/N, a name that
    must not show). In a child, which root's drops to another user for it."""
    child = subprocess.run(
        [sys.executable, "-c", _UNREADABLE],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (child.returncode, child.stdout) == (0, "PermissionError True True\n"), child.stderr


@contextmanager
def _fed(target: Path, opens: Opens) -> Iterator[list[int]]:
    """``target`` (a FIFO) held open for writing with 4 KiB in it, so that an opener that
    reads it (the code before revopen56's fixes) neither waits in open() nor, once it has
    read them, for more: a thread closes the writer as soon as the FIFO is opened (its
    inotify ``IN_OPEN``; 120 s at most), which ends what it reads. Yields a list that
    holds, once left, the opens seen (0 when nothing opened it)."""
    writer = os.open(target, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    os.write(writer, b"\0" * 4096)
    opens.count()  # the test's own open
    wake_r, wake_w = os.pipe()
    seen: list[int] = []

    def close_once_opened() -> None:
        ready, _, _ = select.select([opens.fd, wake_r], [], [], 120)
        seen.append(opens.count() if opens.fd in ready else 0)
        os.close(writer)

    watcher = threading.Thread(target=close_once_opened, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        os.write(wake_w, b"x")
        watcher.join()
        seen.append(opens.count())
        os.close(wake_r)
        os.close(wake_w)


def test_the_frame_sampler_refuses_a_fifo_without_opening_it(fifo: tuple[Path, Opens]) -> None:
    """`provenance.media.video.decode.sample_frames` reads a video's first bytes by name
    after its caller opened the file and hashed it whole (`prov scan`, `prov sign`, the
    near-copy check of `prov verify`): a FIFO renamed over the video meanwhile is refused
    as every other opener refuses it, and never opened. Before: opened for reading with
    a blocking ``open`` (with no writer, the scan's worker or ``prov sign`` then waited in
    it for good: a scan's `measure` of a video swapped so, tried, never returned); here
    the test feeds the FIFO (`_fed`), so the old open returned: MediaError "not an MP4,
    MOV, WebM or Matroska video: its format is not recognised", the FIFO opened once)."""
    from provenance.media.video.decode import sample_frames

    target, opens = fifo
    with _fed(target, opens) as seen, pytest.raises(MediaError) as refused:
        sample_frames(target)
    assert (str(refused.value), sum(seen)) == (f"{target} is {KIND}", 0)


def test_the_decode_budget_note_refuses_a_fifo_without_opening_it(
    fifo: tuple[Path, Opens],
) -> None:
    """`provenance.media.budget.decode_budget_problem` reads an image's header by name
    after ``prov sign`` has signed (and submitted) it: a FIFO renamed over the image
    meanwhile gives no note ("": no header read) and is never opened. Before: Pillow
    opened it with a blocking ``open`` (with no writer, ``prov sign`` waited in it for
    good); here the test feeds the FIFO (`_fed`), so the old open returned "", the FIFO
    opened once."""
    from provenance.media.budget import decode_budget_problem

    target, opens = fifo
    with _fed(target, opens) as seen:
        problem = decode_budget_problem(target, "image/jpeg")
    assert (problem, sum(seen)) == ("", 0)
