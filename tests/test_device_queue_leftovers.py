"""The queue's own bookkeeping damaged: a hand-edited ``attempts`` out of range (before,
a negative count defeated the limit of `MAX_FAILED_ATTEMPTS` server failures, so one
entry the server cannot digest held back every later capture for good), and what a
command killed midway leaves (stray ``.prov-tmp-*`` files of `atomic_write`, a claim
both queued and set aside, duplicate set-aside copies ``NAME-2.json``). Real keys, a
real `prov serve`, the real CLI; the leftovers are made as a kill at each point leaves
them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clients.device import MAX_FAILED_ATTEMPTS, DeviceHome
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import Cli, closed_port


def _photo(folder: Path, name: str, seed: int) -> Path:
    path = folder / name
    Image.effect_noise((96, 96), 40 + seed).convert("RGB").save(path)
    return path


def _show(cli: Cli) -> dict[str, Any]:
    rc, out, err = cli("device", "show")
    assert rc == 0, err
    shown: dict[str, Any] = json.loads(out)
    return shown


@pytest.mark.parametrize("attempts", [-100, True, "2", 2**80, 1.5])
def test_an_attempts_count_out_of_range_is_read_as_damaged(
    attempts: object, enrolled: Cli, tmp_path: Path
) -> None:
    photo = _photo(tmp_path, "p.png", 0)
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    assert rc == 0 and "queued" in out, (out, err)
    home = DeviceHome(enrolled.home)
    (entry_file,) = home.queue_dir.iterdir()
    doc = json.loads(entry_file.read_text())
    entry_file.write_text(json.dumps({**doc, "attempts": attempts}))

    (entry,) = home.pending()
    # not trusted: one more server failure sets it aside (before: -100 took 103)
    assert entry.attempts == MAX_FAILED_ATTEMPTS - 1, entry
    assert entry.sidecar is not None  # the signed claim itself is sound: still submitted
    (shown,) = _show(enrolled)["queue"]
    assert f"attempts {json.dumps(attempts)} is out of range" in shown["damaged"], shown
    assert "one more server failure sets it aside" in shown["damaged"], shown

    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 1 of 1" in out, (out, err)
    assert "is out of range" in err, err
    assert decode_sidecar(photo.with_name("p.png.prov").read_bytes()).receipt is not None
