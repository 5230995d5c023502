"""`prov receipt refresh` of a receipt from a server that has no witnesses (the default
`prov serve`), with no --witness: exit 14 under "WITNESS POLICY NOT MET: no witness
cosignatures to check: ...", which a newcomer who gave no policy found puzzling. Now it
says plainly that the server has no witnesses, so there is no cosigned checkpoint to
bring the receipt to, that the sidecar is unchanged and its receipt still verifies with
the log's key alone, and what would change that. Exit 14 is kept: the command's own
documented outcome "no cosigned checkpoint covers the receipt", which a script telling
"not cosigned" from a failure (exit 1) relies on. A real `prov serve`, the real CLI."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Cli, sign_sample


def test_refresh_against_a_server_without_witnesses_says_what_happened(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo, _ = sign_sample(enrolled, tmp_path)
    sidecar = photo.with_name(photo.name + ".prov")
    before = sidecar.read_bytes()
    rc, out, err = enrolled("receipt", "refresh", str(sidecar))
    said = " ".join((out + err).split())
    assert rc == 14, said
    assert "WITNESS POLICY NOT MET" not in said, said
    assert f"the server at {enrolled.server} has no witnesses" in said, said
    assert "nothing to refresh" in said and "unchanged" in said, said
    assert f"prov receipt verify {sidecar} --log-key KEY" in said, said
    assert sidecar.read_bytes() == before

    rc, key, err = enrolled("log", "key", "--server", enrolled.server)  # as it says
    assert rc == 0, err
    rc, out, err = enrolled("receipt", "verify", str(sidecar), "--log-key", key.strip())
    assert rc == 0, (out, err)
