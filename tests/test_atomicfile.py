"""`write_atomically`, the one writer of files that must appear whole or not at all
(device state, keys and sidecars, C2PA exports, tiled-log files, witness state, the
remembered checkpoint): on a real file system, its modes while writing and after, what
a failed write leaves, and the order of its fsyncs and rename. Failures are real ones: a
file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) that fails the write with EFBIG as a
full disk does; the stdlib's `os.fsync` and `os.replace` run, only recorded."""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from provenance.cli.atomicfile import create_atomically, write_atomically


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG in this process (as on a full disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _others(folder: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p not in keep)


def test_a_key_is_0600_while_written_and_after_whatever_the_umask(tmp_path: Path) -> None:
    """A key (mode 0o600) is never readable by others, not even in its temporary file
    before the rename, with no umask to narrow it; the temporary file is in the key's
    folder under the name asked for."""
    key = tmp_path / "device_key.pem"
    seen: list[tuple[str, int]] = []

    def look() -> None:
        seen.extend((p.name, _mode(p)) for p in tmp_path.iterdir())

    with _umask(0):
        write_atomically(
            key, b"secret", mode=0o600, temp_name=lambda: ".k.tmp", before_replace=look
        )
    assert seen == [(".k.tmp", 0o600)]
    assert _mode(key) == 0o600 and key.read_bytes() == b"secret"
    assert _others(tmp_path, key) == []


def test_a_mode_is_narrowed_by_the_umask_as_open_does(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    with _umask(0o077):
        write_atomically(target, b"{}", mode=0o644)
    assert _mode(target) == 0o600
    with _umask(0o022):
        write_atomically(target, b"{}", mode=0o644)
    assert _mode(target) == 0o644


def test_mode_none_keeps_the_replaced_files_bits_exactly(tmp_path: Path) -> None:
    """``mode=None`` (a capture rewritten in place) keeps 0o664 although the umask would
    narrow it, and its temporary file holds no more than that while written; a new file
    gets 0o666 less the umask."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"old")
    photo.chmod(0o664)
    seen: list[int] = []
    with _umask(0o077):
        write_atomically(
            photo,
            b"new",
            mode=None,
            temp_name=lambda: ".photo.tmp",
            before_replace=lambda: seen.append(_mode(tmp_path / ".photo.tmp")),
        )
        assert _mode(photo) == 0o664 and photo.read_bytes() == b"new"
        assert seen == [0o664]
        write_atomically(tmp_path / "fresh.jpg", b"x", mode=None)
    assert _mode(tmp_path / "fresh.jpg") == 0o600


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary_one(
    tmp_path: Path,
) -> None:
    """The disk fills while the new bytes are written: OSError (EFBIG) naming the target,
    not the temporary file; the old file whole; no temporary file left."""
    target = tmp_path / "device.json"
    target.write_bytes(b"the old state")
    with _file_size_limit(4096), pytest.raises(OSError) as failed:
        write_atomically(target, b"x" * 10_000, mode=0o644)
    assert failed.value.errno == errno.EFBIG, failed.value
    assert failed.value.filename == str(target)
    assert target.read_bytes() == b"the old state"
    assert _others(tmp_path, target) == []


def test_a_check_before_the_rename_that_raises_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "photo.jpg"
    target.write_bytes(b"old")

    def refuse() -> None:
        raise ValueError("changed meanwhile")

    with pytest.raises(ValueError, match="changed meanwhile"):
        write_atomically(target, b"new", before_replace=refuse)
    assert target.read_bytes() == b"old"
    assert _others(tmp_path, target) == []


def test_a_taken_temporary_name_is_neither_followed_nor_removed(tmp_path: Path) -> None:
    """A symbolic link planted at the temporary name: the write fails (created
    exclusively, never through a link), the file it points to is untouched, and the link,
    which the writer did not make, is left where it is."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (tmp_path / ".planted.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError) as failed:
        write_atomically(tmp_path / "out", b"data", temp_name=lambda: ".planted.tmp")
    assert failed.value.filename == str(tmp_path / "out")
    assert victim.read_bytes() == b"untouched"
    assert (tmp_path / ".planted.tmp").is_symlink()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("sync", "sync_folder", "expected"),
    [
        (True, True, ["fsync file of 5 bytes", "rename to w.json", "fsync folder"]),
        (True, False, ["fsync file of 5 bytes", "rename to w.json"]),
        (False, True, ["rename to w.json"]),
    ],
)
def test_the_file_is_fsynced_then_renamed_then_its_folder_fsynced(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sync: bool,
    sync_folder: bool,
    expected: list[str],
) -> None:
    """The rename is durable only once the folder is fsynced, and the file must be on disk
    before it is renamed: fsync(file), rename, fsync(folder), in that order (not the
    folder's with ``sync_folder`` False, none with ``sync`` False). The real `os.fsync`
    and `os.replace` run; only recorded."""
    folder = tmp_path / "state"
    folder.mkdir()
    target = folder / "w.json"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            events.append("fsync folder" if os.path.samestat(st, os.stat(folder)) else "other")
        else:
            events.append(f"fsync file of {st.st_size} bytes")
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(f"rename to {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomically(target, b"12345", sync=sync, sync_folder=sync_folder)
    assert events == expected
    assert target.read_bytes() == b"12345"


def test_create_makes_a_private_file_and_never_replaces_one(tmp_path: Path) -> None:
    """`create_atomically` (a log key, the detector's secret): 0600 with no umask to
    narrow it; a file already there is kept, FileExistsError naming it, no copy left."""
    key = tmp_path / "log.pem"
    with _umask(0):
        create_atomically(key, b"first")
    assert _mode(key) == 0o600 and key.read_bytes() == b"first"
    with pytest.raises(FileExistsError) as failed:
        create_atomically(key, b"second")
    assert failed.value.filename == str(key)
    assert key.read_bytes() == b"first"
    assert _others(tmp_path, key) == []


def test_create_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    key = tmp_path / "log.pem"
    with _file_size_limit(4096), pytest.raises(OSError) as failed:
        create_atomically(key, b"x" * 10_000)
    assert failed.value.errno == errno.EFBIG and failed.value.filename == str(key)
    assert _others(tmp_path) == []


def test_create_links_a_synced_locked_copy_then_fsyncs_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy is on disk before it is linked to its name, locked while it exists (so a
    start cleaning up leftovers leaves a live writer's copy alone), and the folder is
    fsynced after: fsync(copy), link, fsync(folder). The real calls run; only recorded."""
    key = tmp_path / "log.pem"
    events: list[str] = []
    real_fsync, real_link = os.fsync, os.link

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append("fsync folder" if stat.S_ISDIR(st.st_mode) else f"fsync {st.st_size} B")
        real_fsync(fd)

    def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        fd = os.open(src, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            events.append("copy not locked")
        except BlockingIOError:
            events.append(f"link {Path(src).name} to {Path(dst).name}")
        finally:
            os.close(fd)
        real_link(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    create_atomically(key, b"12345", temp_name=lambda: ".log.pem.tmp")
    assert events == ["fsync 5 B", "link .log.pem.tmp to log.pem", "fsync folder"]
    assert _others(tmp_path, key) == []
