"""A file written to in place (same size) while `prov verify` sends it, or while `prov
scan` reads it, is never judged on the mix of old and new bytes it was read as: `prov
verify` says "FILE changed while it was being verified ...; verify it again" and exits
15 (1 before cited53), `prov scan` gives the file an error row (or, when it changed during the read-ahead of
small files, reads it again and judges the bytes it then holds).

Before, the server judged the mixed bytes: a signed file being written to read TAMPERED
(exit 13) though neither its old nor its new bytes were tampered with, and a scan row
held the SHA-256 of bytes the file never held.

The change is made by a second thread, in the middle of a read: the file object `prov`
opens (``os.fdopen``, the boundary between our code and the system's) splits its first
large read in two and has the second thread rewrite one byte before the split (already
read) and one after it (not yet read) before it reads on; the small-file read-ahead's
``os.read`` is split the same way. Nothing of ours is replaced; real files, a real
server, the real `prov`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from clients.scan.sources import FileItem
from clients.scan.worker import ScanConfig, process_batch
from tests.conftest import SAMPLES, Cli


class SecondWriter:
    """A second thread that, when asked, rewrites (XOR 0xFF) one byte of ``path`` at each
    of the offsets it is given, in place, so the file keeps its size and inode."""

    def __init__(self, path: Path) -> None:
        self.path, self.offsets = path, list[int]()
        self.go, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.go.wait()
        fd = os.open(self.path, os.O_RDWR)
        try:
            for at in self.offsets:
                os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0xFF]), at)
        finally:
            os.close(fd)
        self.done.set()

    def change_now(self, offsets: list[int]) -> None:
        """Have the second thread change the byte at each of ``offsets``; return once it
        has."""
        self.offsets = offsets
        self.go.set()
        assert self.done.wait(60), "the second writer did not finish"


def _midway_offsets(start: int, n: int) -> list[int]:
    """Where to change a read of ``n`` bytes from ``start`` that is split at its middle:
    one byte already read, one well past any read-ahead buffer."""
    return [start + n // 2 - 4096, start + n // 2 + 65536]


class _Midway(io.BufferedReader):
    """A file object whose first read of at least ``least`` bytes reads half of those it
    asks for that the file holds, has ``writer`` change the file, then reads the rest."""

    def __init__(self, raw: io.FileIO, writer: SecondWriter, least: int) -> None:
        super().__init__(raw)
        self.writer: SecondWriter | None = writer
        self.least = least

    def read(self, size: int | None = -1, /) -> bytes:
        if self.writer is None or size is None or size < self.least:
            return super().read(size)
        writer, self.writer = self.writer, None
        start = self.tell()
        wanted = min(size, os.fstat(self.fileno()).st_size - start)  # the bytes there are
        first = super().read(wanted // 2)
        writer.change_now(_midway_offsets(start, wanted))
        return first + super().read(size - len(first))


def split_reads_of(patch: pytest.MonkeyPatch, path: Path, least: int) -> SecondWriter:
    """Make the first read of at least ``least`` bytes (from offset 0) through a file
    object opened on ``path``'s file (``os.fdopen``) be changed midway by a second
    writer, which is returned; other files open as usual."""
    inode = os.stat(path).st_ino
    writer = SecondWriter(path)
    real = os.fdopen

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        mode = args[0] if args else kwargs.get("mode", "r")
        if mode == "rb" and os.fstat(fd).st_ino == inode and writer.thread.is_alive():
            return _Midway(io.FileIO(fd, "rb"), writer, least)
        return real(fd, *args, **kwargs)

    patch.setattr(os, "fdopen", fdopen)
    return writer


def _padded_photo(path: Path, size: int) -> Path:
    """The Grace Hopper sample (61 KB) followed by zeros up to ``size`` bytes: a JPEG
    whose bytes past its end the changes land in."""
    data = (SAMPLES / "grace_hopper.jpg").read_bytes()
    path.write_bytes(data + bytes(size - len(data)))
    return path


def test_prov_verify_of_a_file_changed_while_sent_says_so_and_exits_15(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo = _padded_photo(tmp_path / "photo.jpg", 3 << 20)  # three upload chunks
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0, err
    with pytest.MonkeyPatch.context() as patch:
        writer = split_reads_of(patch, photo, 1 << 20)
        rc, out, err = enrolled("verify", str(photo), "--no-detect")
    assert writer.done.is_set()  # the change came in the middle of the first chunk
    text = " ".join(err.split())
    assert rc == 15, (rc, out, err)  # EXIT_FILE_CHANGED (1 before cited53)
    assert (
        f"{photo} changed while it was being verified (written to or replaced while it was"
        " read and sent, so the server judged bytes it may never have held): verify it"
        " again once nothing writes it"
    ) in text, text
    assert "Traceback" not in out + err
    # --json: a JSON object on stdout all the same (the second change puts the bytes back)
    with pytest.MonkeyPatch.context() as patch:
        split_reads_of(patch, photo, 1 << 20)
        rc, out, err = enrolled("verify", str(photo), "--json", "--no-detect")
    report = json.loads(out)
    assert (rc, report["status"], report["path"]) == (15, None, str(photo)), (out, err)
    assert report["error"].startswith(f"{photo} changed while it was being verified"), report
    # left alone now, it gets a verdict: twice changed, its bytes are the signed ones again
    rc, out, err = enrolled("verify", str(photo), "--no-detect")
    assert rc == 0 and "SIGNED_ORIGINAL" in out, (rc, out, err)


def _row(path: Path, server: str, sidecar: Path | None = None) -> dict[str, Any]:
    item = FileItem(str(path), str(path), path.stat().st_size, str(sidecar) if sidecar else None)
    (row,) = process_batch([item], ScanConfig(server))
    return row


def test_a_scan_row_of_an_image_changed_while_read_is_an_error(
    enrolled: Cli, tmp_path: Path
) -> None:
    """An image over the read-ahead size (1 MiB), read whole by `measure`."""
    photo = _padded_photo(tmp_path / "photo.jpg", 3 << 19)  # 1.5 MiB
    with pytest.MonkeyPatch.context() as patch:
        writer = split_reads_of(patch, photo, 1 << 20)
        row = _row(photo, enrolled.server)
    assert writer.done.is_set()
    assert row["error"] == (
        "photo.jpg changed while it was scanned (written to or replaced while it was read):"
        " scan it again once nothing writes it"
    ), row
    assert (row["status"], row["sha256"], row["soft_bindings"]) == (None, None, []), row
    left_alone = _row(photo, enrolled.server)
    assert (left_alone["status"], left_alone["error"]) == ("UNSIGNED", None), left_alone


def test_a_small_file_changed_during_the_read_ahead_is_read_again(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A file of at most 1 MiB is read ahead with ``os.read``; one changed during that
    read is read again by `measure`, and its row holds the SHA-256 of the bytes it then
    holds, not of the mix."""
    photo = _padded_photo(tmp_path / "photo.jpg", 1 << 19)  # 512 KiB
    inode, size = os.stat(photo).st_ino, photo.stat().st_size
    writer = SecondWriter(photo)
    real = os.read

    def read(fd: int, n: int) -> bytes:
        if n >= size and not writer.go.is_set() and os.fstat(fd).st_ino == inode:
            first = real(fd, n // 2)  # a short read: the caller reads on
            writer.change_now(_midway_offsets(0, n))
            return first
        return real(fd, n)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "read", read)
        row = _row(photo, enrolled.server)
    assert writer.done.is_set()
    assert row["error"] is None and row["status"] == "UNSIGNED", row
    assert row["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest(), row


def test_a_scan_upload_of_a_file_changed_while_sent_is_an_error_row(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A file with a sidecar that its lookup does not find signed is sent whole to the
    server with its sidecar (as `prov verify` sends it); changed while sent, its row is
    an error, not the server's TAMPERED."""
    photo = _padded_photo(tmp_path / "photo.jpg", 3 << 18)  # 768 KiB
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0, err
    with open(photo, "r+b") as f:  # no longer the signed bytes: the lookup says DERIVED
        f.seek(-1, os.SEEK_END)
        f.write(b"\x01")
    with pytest.MonkeyPatch.context() as patch:
        writer = split_reads_of(patch, photo, 1 << 19)
        row = _row(photo, enrolled.server, photo.with_name(photo.name + ".prov"))
    assert writer.done.is_set()
    assert row["error"] == (
        f"{photo} changed while it was being verified (written to or replaced while it was"
        " read and sent, so the server judged bytes it may never have held): verify it"
        " again once nothing writes it"
    ), row
    assert row["status"] is None, row


def test_prov_sign_of_an_image_changed_while_read_signs_nothing(
    enrolled: Cli, tmp_path: Path
) -> None:
    """`prov sign` reads an image whole, then hashes and decodes the bytes held: changed
    while they were read, they may be a mix the file never held, and a claim of them
    would make the file itself read TAMPERED. Before, it was signed (exit 0)."""
    photo = _padded_photo(tmp_path / "photo.jpg", 3 << 18)  # 768 KiB
    with pytest.MonkeyPatch.context() as patch:
        writer = split_reads_of(patch, photo, 1 << 19)
        rc, out, err = enrolled("sign", str(photo))
    assert writer.done.is_set()
    text = " ".join(err.split())
    assert rc == 1, (rc, out, err)
    assert (
        f"{photo}: not signed: photo.jpg changed while it was being signed (written to or"
        " replaced while it was read); nothing was signed: sign it again once nothing"
        " writes it"
    ) in text, text
    assert not photo.with_name(photo.name + ".prov").exists()
    rc, out, err = enrolled("sign", str(photo))  # left alone now, it is signed
    assert rc == 0 and "signed (#1) and logged" in out, (out, err)


def test_a_scan_row_of_another_file_changed_while_hashed_is_an_error(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A file that is neither image nor video, over the read-ahead size, is hashed in
    1 MiB pieces and not decoded: a write that moves its modification time is seen.
    (Its time is first set an hour back, so that the write moves it whatever the
    timestamps' tick.)"""
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(3 << 20))
    an_hour_ago = data.stat().st_mtime - 3600
    os.utime(data, (an_hour_ago, an_hour_ago))
    with pytest.MonkeyPatch.context() as patch:
        writer = split_reads_of(patch, data, 1 << 20)
        row = _row(data, enrolled.server)
    assert writer.done.is_set()
    assert row["error"] == (
        "data.bin changed while it was scanned (written to or replaced while it was read):"
        " scan it again once nothing writes it"
    ), row
