"""A device folder behind the log (restored from a backup, or its key used by a copy of
the folder elsewhere) numbers its next claims with sequences the log already holds.
Before, each was refused (FAILED_PRECONDITION, set aside) and the device only caught up
by burning one refused capture per claim it was behind: a week-old backup of a camera
that signed 500 captures since cost the next 500. Now the first refusal reads the log's
last sequence for the key (GetDevice), moves the device's numbering past it and says so,
so the next capture is logged and the refused one is signed again by `prov sign`. Real
`prov serve`, the real CLI, keys and files."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import Cli
from tests.photos import noise_photo


def test_a_device_restored_from_a_backup_catches_up_after_one_refusal(
    enrolled: Cli, tmp_path: Path
) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(6)]
    rc, _, err = enrolled("sign", str(photos[0]))
    assert rc == 0, err
    backup = tmp_path / "backup"
    shutil.copytree(enrolled.home, backup)
    rc, _, err = enrolled("sign", *map(str, photos[1:4]))  # sequences 2, 3, 4 logged
    assert rc == 0, err
    shutil.rmtree(enrolled.home)
    shutil.copytree(backup, enrolled.home)  # the device folder as it was at sequence 1

    rc, out, err = enrolled("sign", str(photos[4]))  # numbered 2: the log has it already
    assert rc == 1, (out, err)
    said = out + err
    assert "refused" in said and "behind the log" in said and "sequence 4" in said, said

    rc, out, err = enrolled("sign", str(photos[5]))  # before: numbered 3, refused again
    assert rc == 0 and "logged" in out + err, (out, err)
    rc, out, err = enrolled("sign", str(photos[4]))  # the refused one, signed again
    assert rc == 0 and "logged" in out + err, (out, err)
    for photo in (photos[4], photos[5]):
        rc, out, err = enrolled("verify", str(photo), "--no-detect")
        assert rc == 0 and "SIGNED_ORIGINAL" in out, (out, err)
