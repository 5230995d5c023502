"""How `read_c2pa` opens a path: once, refusing what is not a regular file without
waiting on it, and reading only through that descriptor, only the bytes its size check
saw (c2paopen55).

Before: a FIFO given to `read_c2pa` blocked it for good in the open of the walk that
counts boxes and chunks (or, with no media type, the worker until the reader's time
limit); /dev/zero, whose size reads as 0, passed the size check and the worker read it
until its memory limit (4 GiB by default, in 3.3 s). The size was checked by
``os.stat`` of the path, the walk opened the path again and the worker a third time: a
file grown, cut or swapped meanwhile was read past the limit, or another file's
manifest was reported.

The FIFO and device cases run in a child process with a deadline (a hang is a failed
test, not a stuck suite); the swapped, grown and cut files are changed by a real pool
at the one moment between the checks and the worker's read (`_Changing`), so each case
happens every time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from provenance.c2pa import C2paLimits, ReaderPool, read_c2pa
from provenance.core.errors import FileChangedError, MediaError
from tests.conftest import ADMIN_TOKEN, FIXTURES, ROOT, start_server

_GENERATED = FIXTURES / "c2pa" / "generated"
#: A JPEG whose C2PA manifest reads Valid without trust anchors.
PHOTO = _GENERATED / "gen_ed25519_capture.jpg"
#: A JPEG without a manifest store.
PLAIN = _GENERATED / "gen_reencoded_stripped.jpg"

#: The child: read_c2pa on argv[1] (media type argv[2], "" for none), then print what
#: came of it. A reader time limit past the test's deadline, so a read that waits on a
#: FIFO fails the test by its deadline; 1 GiB of worker memory, so a read of /dev/zero
#: (before) ends there.
_CHILD = """
import sys
from provenance.c2pa import C2paLimits, ReaderPool, read_c2pa
from provenance.core.errors import MediaError
limits = C2paLimits(timeout_s=600, memory_bytes=1 << 30)
with ReaderPool() as pool:
    try:
        result = read_c2pa(sys.argv[1], sys.argv[2] or None, limits=limits, pool=pool)
    except MediaError as e:
        print(f"refused: {e} | {e.public}")
    else:
        print(f"read: {result.error_kind}: {result.error}")
"""

#: The child for the writes of `prov sign --c2pa` (`DeviceHome.embed_c2pa`): what is
#: read of argv[1] before the C2PA reader is asked (the file's own manifest) and what
#: the writer reads to embed one; both refuse before any key or claim is used.
_CHILD_EMBED = """
import sys
from pathlib import Path
from clients.device.export import _own_manifest
from provenance.c2pa.writer import embed_manifest
from provenance.core.errors import MediaError
path = Path(sys.argv[1])
for what, call in (
    ("own", lambda: _own_manifest(path, "image/jpeg", None, b"")),
    ("embed", lambda: embed_manifest(path, path, "image/jpeg", None, b"", {}, None)),
):
    try:
        call()
    except MediaError as e:
        print(f"{what} refused: {e}")
"""

#: Seconds a child may take: importing the project and starting one reader worker take
#: 1-3 s here; a read that waits on a FIFO never ends.
DEADLINE_S = 60


def _child(code: str, *args: str) -> str:
    """Run ``code`` in a Python child (in its own process group, with the reader worker
    it starts) and return its standard output; the whole group is killed, and the test
    failed, when it runs past `DEADLINE_S`."""
    return _run([sys.executable, "-c", code, *args])


def _run(argv: list[str]) -> str:
    """`_child` of the command line ``argv``."""
    child = subprocess.Popen(
        argv,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PROV_ADMIN_TOKEN": ADMIN_TOKEN},
        stdout=subprocess.PIPE,  # pipes: drained by communicate below
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)  # the child and its reader worker
        child.communicate()
        pytest.fail(f"{argv[2:]} did not end in {DEADLINE_S} s (blocked on a file)")
    assert child.returncode == 0, err
    return out.strip()


@pytest.mark.parametrize("media_type", ["image/jpeg", ""])
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path, media_type: str) -> None:
    """A FIFO with no writer: refused at once, whether a walk (a media type given) or
    only the worker (none) would read it. Before: blocked for good in the walk's open,
    or in the worker's until the reader's time limit."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    said = _child(_CHILD, str(fifo), media_type)
    kind = "it is a FIFO (named pipe), not a regular file"
    assert said == f"refused: cannot read {str(fifo)!r}: {kind} | cannot read the asset: {kind}"


@pytest.mark.parametrize("how", ["device", "link", "folder"])
def test_a_device_or_folder_is_refused_before_it_is_read(tmp_path: Path, how: str) -> None:
    """/dev/zero (named, or behind a symbolic link: judged by what it points to) and a
    folder are refused, saying what they are. Before: /dev/zero, of size 0 by ``stat``,
    passed the size limit and the worker read zeros until its memory limit ("read:
    MemoryLimit"); a folder was "Is a directory"."""
    path = {"device": Path("/dev/zero"), "link": tmp_path / "zero.jpg", "folder": tmp_path}[how]
    if how == "link":
        path.symlink_to("/dev/zero")
    kind = "a folder" if how == "folder" else "a device"
    said = _child(_CHILD, str(path), "image/jpeg")
    assert said.startswith(f"refused: cannot read {str(path)!r}: it is {kind}, not a regular"), said


def test_prov_sign_c2pa_reads_refuse_a_fifo(tmp_path: Path) -> None:
    """What `prov sign --c2pa` reads of a capture before and while it embeds a manifest
    (a file swapped for a FIFO after it was signed): refused, naming the FIFO. Before:
    both reads blocked for good (``read_bytes``, ``open``)."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    said = _child(_CHILD_EMBED, str(fifo)).splitlines()
    assert said == [
        f"{what} refused: {fifo} is a FIFO (named pipe), not a regular file"
        for what in ("own", "embed")
    ], said


def test_prov_scan_gives_fifos_and_devices_a_row_each(tmp_path: Path) -> None:
    """`prov scan` of a folder holding a FIFO and a link to /dev/zero beside a photo,
    and of a FIFO and a link to /dev/zero named as PATHs: a row each saying why, the
    photo checked, the scan ended (it refused these before they reach the reader
    already; this keeps it so). A link inside a folder is not followed."""
    folder = tmp_path / "desk"
    folder.mkdir()
    shutil.copy(PHOTO, folder / "photo.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "named.jpg")
    (tmp_path / "named-zero.jpg").symlink_to("/dev/zero")
    report = tmp_path / "scan.jsonl"
    named = [str(tmp_path / "named.jpg"), str(tmp_path / "named-zero.jpg")]
    server = start_server(tmp_path / "prov.db")
    try:
        _run(
            [sys.executable, "-m", "clients.cli", "scan", str(folder), *named]
            + ["--report", str(report), "--server", server.address, "--workers", "0"]
        )
    finally:
        server.stop()
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert rows["photo.jpg"]["status"] == "UNSIGNED", rows
    assert rows["zero.jpg"]["error"] == "symbolic link: not followed", rows["zero.jpg"]
    for name in ("pipe.jpg", "named.jpg", "named-zero.jpg"):
        assert "not a regular file" in rows[name]["error"], rows[name]


class _Changing(ReaderPool):
    """A real one-worker pool that runs ``change`` (a write to the file being read) when
    `read_c2pa` asks it to read, after its size check and walk: the window in which a
    file swapped, grown or cut by another program escaped them."""

    def __init__(self, change: Callable[[], None]) -> None:
        super().__init__(workers=1)
        self._change = change

    def read(self, **request: Any) -> Any:
        self._change()
        return super().read(**request)


def _read_changed(path: Path, change: Callable[[], None]) -> Any:
    """`read_c2pa` of ``path`` (a copy of PHOTO) as a JPEG, at a byte limit of PHOTO's
    size, ``change`` made to it between the checks and the worker's read."""
    shutil.copy(PHOTO, path)
    with _Changing(change) as pool:
        limits = C2paLimits(max_bytes=PHOTO.stat().st_size)
        return read_c2pa(path, "image/jpeg", limits=limits, pool=pool)


def test_a_file_grown_after_the_size_check_is_read_only_to_the_size_checked(
    tmp_path: Path,
) -> None:
    """1 MiB appended to a file at the byte limit once it passed the check: the worker
    reads the bytes checked, no more (the manifest's hash of the file still holds).
    Before: it read the grown file past the limit ("assertion.dataHash.mismatch")."""
    path = tmp_path / "photo.jpg"

    def grow() -> None:
        with path.open("ab") as f:
            f.write(bytes(1 << 20))

    result = _read_changed(path, grow)
    assert result.validation_state == "Valid", result
    assert "assertion.dataHash.mismatch" not in result.validation_codes, result


def test_a_file_swapped_after_the_checks_is_not_the_one_read(tmp_path: Path) -> None:
    """Another file renamed over the path after the checks: the file checked is the one
    read (its descriptor). Before: the worker opened the path again and reported the
    other file (here: no manifest at all)."""
    path = tmp_path / "photo.jpg"

    def swap() -> None:
        other = tmp_path / "other.jpg"
        shutil.copy(PLAIN, other)
        os.replace(other, path)

    result = _read_changed(path, swap)
    assert (result.present, result.validation_state) == (True, "Valid"), result


def test_a_file_cut_after_the_checks_is_a_clear_error(tmp_path: Path) -> None:
    """A file cut to half once it passed the checks: FileChangedError, naming the path
    to the user and not to a server's caller. Before: the worker read the half and
    reported the manifest "Invalid" (assertion.dataHash.mismatch), a verdict on bytes
    that were never the file."""
    path = tmp_path / "photo.jpg"
    with pytest.raises(FileChangedError) as cut:
        _read_changed(path, lambda: os.truncate(path, PHOTO.stat().st_size // 2))
    assert str(cut.value).startswith(f"{path} got shorter while it was read: "), cut.value
    assert cut.value.public == (
        "the asset got shorter while it was read (cut or rewritten by another program)"
    )


def test_the_worker_reads_no_more_than_the_size_checked(tmp_path: Path) -> None:
    """The worker's view of the file (`asset_stream`): the first ``size`` bytes of the
    descriptor, whatever the file holds now; its end is ``size`` for a seek from the
    end; a file cut below ``size`` reads short and says where (``short_at``)."""
    from provenance.c2pa.worker import asset_stream  # before: none, the worker opened the path

    path = tmp_path / "asset"
    path.write_bytes(b"a" * 1000)
    fd = os.open(path, os.O_RDONLY)
    try:
        stream, raw = asset_stream(fd, 1000)
        with path.open("ab") as f:
            f.write(b"b" * 100_000)
        assert stream.read() == b"a" * 1000
        assert stream.seek(0, os.SEEK_END) == 1000 and stream.read(10) == b""
        stream.seek(990)
        assert stream.read(100) == b"a" * 10
        assert raw.short_at is None
        os.truncate(path, 600)
        stream, raw = asset_stream(fd, 1000)
        assert stream.read() == b"a" * 600 and raw.short_at == 600
    finally:
        os.close(fd)


def test_a_file_of_no_manifest_and_bytes_still_read(tmp_path: Path) -> None:
    """The reads the change leaves as they were: a file without a manifest, bytes, a
    missing path (its public text without the path)."""
    with ReaderPool(workers=1) as pool:
        assert read_c2pa(PLAIN, "image/jpeg", pool=pool).present is False
        assert read_c2pa(PHOTO.read_bytes(), "image/jpeg", pool=pool).validation_state == "Valid"
        with pytest.raises(MediaError) as gone:
            read_c2pa(tmp_path / "gone.jpg", "image/jpeg", pool=pool)
    assert gone.value.public == "cannot read the asset: No such file or directory"


#: The child for `DeviceHome.embed_c2pa`'s read of the sidecar (argv[2]) of the capture
#: argv[1], before any key, chain or claim is used.
_CHILD_SIDECAR = """
import sys
from pathlib import Path
from clients.device.home import DeviceHome
from provenance.core.errors import MediaError
try:
    DeviceHome(Path(sys.argv[3])).embed_c2pa(None, Path(sys.argv[1]), Path(sys.argv[2]), b"")
except MediaError as e:
    print(f"{type(e).__name__}: {e}")
"""


@pytest.mark.parametrize("how", ["fifo", "large", "folder"])
def test_prov_sign_c2pa_reads_its_sidecar_bounded(tmp_path: Path, how: str) -> None:
    """The sidecar `prov sign --c2pa` reads back to embed it (``FILE.prov``, swapped after
    it was written): a FIFO or folder refused, saying what it is; one over
    MAX_SIDECAR_BYTES refused unread. Before (revc2pa55): ``Path.read_bytes``, which
    blocked for good on a FIFO, read a file of any size whole (then ClaimError "sidecar
    is 4194305 bytes; the limit is 4194304"), and gave a folder's IsADirectoryError to
    `prov sign` as a traceback (no ProvenanceError)."""
    from provenance.wire.sidecar import MAX_SIDECAR_BYTES

    capture = Path(shutil.copy(PLAIN, tmp_path / "photo.jpg"))
    side = tmp_path / "photo.jpg.prov"
    if how == "fifo":
        os.mkfifo(side)
    elif how == "large":
        side.write_bytes(b"{" + b" " * MAX_SIDECAR_BYTES)
    else:
        side.mkdir()
    said = _child(_CHILD_SIDECAR, str(capture), str(side), str(tmp_path / "device"))
    expected = {
        "fifo": f"NotRegularFileError: {side} is a FIFO (named pipe), not a regular file",
        "large": f"MediaTooLargeError: sidecar {side} is over the {MAX_SIDECAR_BYTES}-byte"
        " limit: not read",
        "folder": f"NotRegularFileError: {side} is a folder, not a regular file",
    }[how]
    assert said == expected, said


#: The child for the writer's last check before it renames the export over the source
#: (`embed_manifest`'s `_still_holds`): argv[1], a copy of PLAIN, is replaced by a FIFO
#: while the claim is signed (the device key's `sign`, the one moment after its bytes
#: were read and before that check); the export goes to argv[2].
_CHILD_STILL_HOLDS = """
import os, sys
from datetime import UTC, datetime
from pathlib import Path
from provenance.c2pa.authority import init_authority, issue_device_certificate
from provenance.c2pa.writer import embed_manifest
from provenance.core.errors import MediaError
from provenance.core.keys import DeviceKey
src, dst, ca = (Path(a) for a in sys.argv[1:4])
key = DeviceKey.generate()
now = datetime.now(UTC)
chain = issue_device_certificate(init_authority(ca, now=now), key.public_key, "d", now=now)

class SwappingKey:
    public_key = key.public_key

    def sign(self, message: bytes) -> bytes:
        if not src.with_name("fifo").exists():
            os.mkfifo(src.with_name("fifo"))
            os.replace(src.with_name("fifo"), src)
        return key.sign(message)

try:
    embed_manifest(src, dst, "image/jpeg", SwappingKey(), chain, {}, None)
except MediaError as e:
    print(f"{type(e).__name__}: {e}")
print("written" if dst.exists() else "not written")
"""


def test_the_writers_last_check_refuses_a_fifo_swapped_in(tmp_path: Path) -> None:
    """The source replaced by a FIFO while its manifest is made: FileChangedError,
    nothing written. Before (revc2pa55): the check before the rename (`_still_holds`)
    opened the path with a plain ``open``, which blocked for good on the FIFO."""
    src = Path(shutil.copy(PLAIN, tmp_path / "photo.jpg"))
    said = _child(_CHILD_STILL_HOLDS, str(src), str(tmp_path / "out.jpg"), str(tmp_path / "ca"))
    assert said.splitlines() == [
        "FileChangedError: photo.jpg changed while its C2PA manifest was being made"
        " (replaced or written to after its bytes were read)",
        "not written",
    ], said


def _reader_processes() -> set[int]:
    """The process ids of this process's C2PA reader workers (`provenance.c2pa.worker`):
    those of every pool alive in it, an earlier test's shared one too."""
    me = os.getpid()
    children = Path(f"/proc/{me}/task/{me}/children").read_text().split()
    return {
        int(pid)
        for pid in children
        if b"worker.py" in Path(f"/proc/{pid}/cmdline").read_bytes()  # c2pa/worker.py
    }


def test_a_worker_that_died_idle_is_closed_when_replaced() -> None:
    """A reader worker that died between reads (killed, say, by the kernel's OOM killer)
    is replaced at the next read, which goes on as ever, and its pipes and the socket
    that hands it descriptors are closed then, not left to the garbage collector. Before
    (revc2pa55): the pool dropped it as it was: three ResourceWarnings (its socket, its
    two pipes), the descriptors open until the object was collected."""
    import gc
    import warnings

    others = _reader_processes()  # CI: another test's pool, alive in the same process
    with ReaderPool(workers=1) as pool:
        assert read_c2pa(PHOTO, "image/jpeg", pool=pool).validation_state == "Valid"
        (pid,) = _reader_processes() - others
        os.kill(pid, signal.SIGKILL)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, left for the pool to reap
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            assert read_c2pa(PHOTO, "image/jpeg", pool=pool).validation_state == "Valid"
            gc.collect()
        assert [str(w.message) for w in seen if w.category is ResourceWarning] == []
        (replaced,) = _reader_processes() - others
        assert replaced != pid


class _Flagged(ReaderPool):
    """A real one-worker pool that keeps the status flags (``fcntl`` F_GETFL) of each
    descriptor it is handed, as the worker will read through them."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.flags: list[int] = []

    def read(self, **request: Any) -> Any:
        import fcntl

        self.flags.append(fcntl.fcntl(request["fd"], fcntl.F_GETFL))
        return super().read(**request)


def test_the_descriptor_the_worker_reads_is_blocking(tmp_path: Path) -> None:
    """``O_NONBLOCK``, with which `_opened` opens a path so that a FIFO cannot hold it, is
    cleared before anything is read through the descriptor: on a filesystem that honours
    it for regular files (a FUSE one may answer EAGAIN), the worker's reads and the
    walk's would fail at random. (It held when revc2pa55 tried it; this keeps it.)"""
    pool = _Flagged()
    with pool:
        assert read_c2pa(PHOTO, "image/jpeg", pool=pool).validation_state == "Valid"
        assert read_c2pa(PHOTO, None, pool=pool).validation_state == "Valid"
    assert len(pool.flags) == 2
    assert [f & os.O_NONBLOCK for f in pool.flags] == [0, 0], pool.flags
    assert [f & os.O_ACCMODE for f in pool.flags] == [os.O_RDONLY] * 2, pool.flags
