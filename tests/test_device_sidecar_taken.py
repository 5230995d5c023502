"""A queued claim logged when its FILE.prov holds another claim by then (the file was
edited and signed again while the first claim waited in the queue): before, the note said
"left as it is" and the first claim's sidecar, now with its receipt, was kept nowhere,
its queue entry deleted. Now it is kept in the device folder's sidecars/ and the note says
where. Real `prov serve`, the real CLI, keys and files."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from provenance.wire.sidecar import decode_sidecar
from tests.conftest import Cli, closed_port


def test_a_logged_claim_whose_sidecar_was_replaced_is_kept_with_its_receipt(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo = tmp_path / "p.png"
    Image.effect_noise((96, 96), 40).convert("RGB").save(photo)
    offline = closed_port()
    rc, _, err = enrolled("sign", "--server", offline, str(photo))  # claim 1 queued
    assert rc == 4, err
    Image.effect_noise((96, 96), 60).convert("RGB").save(photo)  # edited
    rc, out, err = enrolled("sign", "--server", offline, str(photo))  # claim 2 replaces it
    assert rc == 4 and "signed (#2)" in out, (out, err)

    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 2 of 2" in out, (out, err)
    beside = decode_sidecar(photo.with_name("p.png.prov").read_bytes())
    assert beside.claim.sequence == 2 and beside.receipt is not None
    kept = enrolled.home / "sidecars" / "000000000001.prov"
    assert f"kept at {kept}" in err, err
    first = decode_sidecar(kept.read_bytes())
    assert first.claim.sequence == 1 and first.receipt is not None
