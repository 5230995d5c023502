"""`prov device sync` on a device folder that cannot be written (a read-only file system,
or one owned by another user) once the server took the claims: each claim is logged, its
receipt written beside its file, and the sync says that its queue entry stays and goes on
with the next claim (exit 0: everything queued was logged); the next sync where the folder can be written finds them logged
(the same receipts) and empties the queue. Before, the first claim's entry that could not
be removed stopped the whole sync with "error: Read-only file system" and no word that
the claim was logged, the rest not submitted. Real `prov serve`, the real CLI in a child
process whose mount namespace (``unshare -m``, needs root, as tests/conftest.py's
`run_in_netns`) sees the device folder read-only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from provenance.wire.sidecar import decode_sidecar
from tests.conftest import ROOT, Cli, closed_port


def test_a_read_only_device_folder_still_syncs_each_claim_and_says_what_stays(
    enrolled: Cli, tmp_path: Path
) -> None:
    photos = []
    for i in range(2):
        photos.append(tmp_path / f"p{i}.png")
        Image.effect_noise((96, 96), 40 + i).convert("RGB").save(photos[-1])
    rc, _, err = enrolled("sign", "--server", closed_port(), *map(str, photos))  # queued
    assert rc == 4, err
    home = str(enrolled.home)
    read_only = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", read_only, "sh", home, "true"])
    if probe.returncode != 0:
        pytest.fail("no mount namespace to make the device folder read-only in (needs root)")
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", read_only, "sh", home,
         sys.executable, "-m", "clients.cli", "device", "sync", "--server", enrolled.server],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 0, said  # every claim was logged
    assert "submitted 2 of 2" in done.stdout, said
    assert said.count("its queue entry could not be removed") == 2, said
    assert "Traceback" not in said, said
    for photo in photos:
        assert decode_sidecar(Path(f"{photo}.prov").read_bytes()).receipt is not None

    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 2 of 2" in out, (out, err)
    assert not any((enrolled.home / "queue").iterdir())
