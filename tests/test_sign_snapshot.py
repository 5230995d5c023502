"""`prov sign` of a video reads the file twice: the hard binding through the open file,
then the frame hashes (soft bindings) in the decoder, which opens the file by name. A file
replaced or written to between the two reads is refused: "FILE changed while it was
being signed; nothing was signed" (exit 1), no claim made, no sequence number used.
Before, the claim was signed with the SHA-256 of the first bytes and the frame hashes of
the others.

The change is made at the boundary of the real flow: the decoder's sniffing open of the
path (`provenance.cli.files.open_regular`, the first read of the second pass), wrapped,
replaces or changes the file, then the real open runs; nothing of ours is left out."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

import provenance.media.video.decode as decode
from clients.device import SIDECAR_SUFFIX, DeviceHome, _still_the_hashed_bytes
from provenance.cli.files import open_regular
from tests.conftest import FIXTURES, SAMPLES, Cli, hide_writes

OTHER = FIXTURES / "phash" / "video"


def _change(how: str, clip: Path, other: Path) -> None:
    """Change ``clip`` as a second writer would: ``replace`` renames another video over it
    (a new inode), ``append`` adds bytes to it, ``overwrite`` rewrites one byte of the
    middle of its frames in place (same inode, same size; two of its seven sampled frames
    hash differently). ``overwrite unseen`` is that write on a filesystem whose timestamps
    do not show it (FAT keeps times to 2 s, older kernels to a clock tick): the file's
    ``stat`` and ``fstat`` go on reporting what they did before it."""
    if how == "replace":
        os.replace(other, clip)
    elif how == "append":
        with open(clip, "ab") as f:
            f.write(b"\0" * 4096)
    else:
        middle = clip.stat().st_size // 2
        with open(clip, "r+b") as f:
            byte = os.pread(f.fileno(), 1, middle)
            os.pwrite(f.fileno(), bytes([byte[0] ^ 0xFF]), middle)


def change_when_decoded(patch: pytest.MonkeyPatch, how: str, clip: Path, other: Path) -> list[str]:
    """Make the decoder's first ``open`` of ``clip`` (its sniffing read, the first of the
    second pass) `_change` it ``how`` first; the list returned holds ``how`` once it has.
    ``overwrite unseen`` hides the write from ``stat`` and ``fstat`` (`hide_writes`)."""
    changed: list[str] = []

    def open_after_a_change(file: Any, refuse: type[Exception]) -> BinaryIO:
        if os.fspath(file) == os.fspath(clip) and not changed:
            _change(how, clip, other)
            changed.append(how)
        return open_regular(file, refuse)

    if how == "overwrite unseen":
        hide_writes(patch, clip)
    # the sniff opens through provenance.cli.files.open_regular (a FIFO is never opened)
    patch.setattr(decode, "open_regular", open_after_a_change)
    return changed


@pytest.mark.parametrize("how", ["replace", "append", "overwrite", "overwrite unseen"])
def test_a_video_changed_between_the_hash_and_the_frames_is_not_signed(
    enrolled: Cli, tmp_path: Path, how: str
) -> None:
    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))
    other = Path(shutil.copy(OTHER / "doorknob-hd-no-bar.mp4", tmp_path / "other.mp4"))
    with pytest.MonkeyPatch.context() as patch:
        changed = change_when_decoded(patch, how, clip, other)
        rc, out, err = enrolled("sign", str(clip))
    assert changed == [how]  # the change came between the two reads
    text = " ".join(err.split())
    assert rc == 1, (out, err)
    assert f"{clip}: not signed: {clip.name} changed while it was being signed" in text, text
    assert "; nothing was signed" in text, text
    assert not clip.with_name(clip.name + SIDECAR_SUFFIX).exists()
    home = DeviceHome(enrolled.home)
    assert home.pending() == [] and home.state().last_sequence == 0
    # the same file, left alone now, is signed
    rc, out, err = enrolled("sign", str(clip))
    assert rc == 0 and "signed (#1) and logged" in out, err


@pytest.mark.parametrize("change", ["chmod", "hard link"])
def test_a_change_of_metadata_alone_is_not_a_change_of_the_file(
    tmp_path: Path, change: str
) -> None:
    """A mode change or a new hard link (a backup tool's) while a video is signed leaves
    its bytes as they were, so the file is still signed (review rev38b: the change time
    was part of the identity, and each was refused as "replaced or written to"). The
    identity that stays, device, inode, size and modification time, with the second
    hash through the open file, still catches a file renamed over or written to."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 1000)
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        sha256 = hashlib.sha256(f.read()).digest()
        time.sleep(0.05)  # past the timestamps' tick, so the change time moves
        if change == "chmod":
            os.chmod(path, 0o600)
        else:
            os.link(path, tmp_path / "backup-link.mp4")
        assert os.stat(path).st_ctime_ns != before.st_ctime_ns
        _still_the_hashed_bytes(path, f, before, sha256)
