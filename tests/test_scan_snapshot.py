"""`prov scan` of a video on disk reads the file twice: its SHA-256 through the open
file, then the frame hashes (PDQ of 1 Hz samples) in the decoder, which opens the file by
name. A file replaced or written to between the two reads gets a row that says so, with
no SHA-256, no frame hashes and no verdict. Before, the row held the SHA-256 of one set of
bytes and the frame hashes of another, and was looked up as if they were one file's.

The change is made as in tests/test_sign_snapshot.py: the decoder's sniffing open of
the path (the first read of the second pass), wrapped, changes the file, then the real
open runs; nothing of ours is left out. Real clips, a real server for the rows."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from clients.scan.hashing import measure
from clients.scan.sources import FileItem
from clients.scan.worker import ScanConfig, process_batch
from provenance.core.errors import FileChangedError
from provenance.media.assets import AssetLimits
from tests.conftest import FIXTURES, SAMPLES, ServerProc
from tests.test_sign_snapshot import change_when_decoded

OTHER = FIXTURES / "phash" / "video" / "doorknob-hd-no-bar.mp4"
HOW = ["replace", "append", "overwrite", "overwrite unseen"]


def _clip(tmp_path: Path) -> tuple[Path, Path, FileItem]:
    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))
    other = Path(shutil.copy(OTHER, tmp_path / "other.mp4"))
    return clip, other, FileItem(str(clip), str(clip), clip.stat().st_size)


@pytest.mark.parametrize("how", HOW)
def test_a_video_changed_between_the_hash_and_the_frames_is_not_measured(
    tmp_path: Path, how: str
) -> None:
    clip, other, item = _clip(tmp_path)
    with pytest.MonkeyPatch.context() as patch:
        changed = change_when_decoded(patch, how, clip, other)
        with pytest.raises(FileChangedError) as e:
            measure(item, AssetLimits())
    assert changed == [how]  # the change came between the two reads
    assert str(e.value) == (
        f"{clip.name} changed while it was scanned (replaced or written to between the"
        " hash of its bytes and the hashes of its frames): scan it again once nothing"
        " writes it"
    )
    # left alone now, it is measured: the SHA-256 of the bytes it holds, and frames
    m = measure(item, AssetLimits())
    assert m.sha256 == hashlib.sha256(clip.read_bytes()).digest() and m.soft, m


def test_the_row_of_a_changed_video_says_so_and_holds_no_hashes(
    tmp_path: Path, server: ServerProc
) -> None:
    clip, other, item = _clip(tmp_path)
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    still = FileItem(str(photo), str(photo), photo.stat().st_size)
    with pytest.MonkeyPatch.context() as patch:
        change_when_decoded(patch, "overwrite", clip, other)
        row, photo_row = process_batch([item, still], ScanConfig(server.address))
    assert row["error"].startswith(f"{clip.name} changed while it was scanned"), row
    assert (row["status"], row["sha256"], row["soft_bindings"]) == (None, None, []), row
    assert (photo_row["status"], photo_row["error"]) == ("UNSIGNED", None), photo_row
