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

from provenance.log.checkpoint import generate_log_key
from tests.conftest import Cli, sign_sample, start_server


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


def test_refresh_against_another_log_says_the_sidecar_is_kept_and_what_to_do(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A receipt refreshed at an address that now serves another log (each `make web`
    starts a new one) is refused, exit 3 as a log integrity failure; seen failing first,
    the message said only "the server at A presents log key X, not the receipt's Y",
    neither that the sidecar is unchanged nor how its receipt is still checked."""
    photo, _ = sign_sample(enrolled, tmp_path)
    sidecar = photo.with_name(photo.name + ".prov")
    before = sidecar.read_bytes()
    rc, key, err = enrolled("log", "key", "--server", enrolled.server)
    assert rc == 0, err
    other = start_server(tmp_path / "other.db")
    try:
        rc, out, err = enrolled("receipt", "refresh", str(sidecar), "--server", other.address)
    finally:
        other.stop()
    said = " ".join((out + err).split())
    assert rc == 3 and "LOG INTEGRITY FAILURE" in said, said
    assert f"not the receipt's {key.strip()}: another log, or the log's key changed" in said
    assert f"{sidecar} is unchanged" in said, said
    assert f"prov receipt verify {sidecar} --log-key {key.strip()}" in said, said
    assert "prov sign --force" in said, said
    assert sidecar.read_bytes() == before


def test_refresh_with_a_log_key_the_server_does_not_present_names_that_key_as_given(
    enrolled: Cli, tmp_path: Path
) -> None:
    """With --log-key naming a third log's key (not the receipt's), the refusal called
    it "the receipt's", said to check the receipt offline with it (which fails), and,
    asked of the receipt's own log, that the log was another or replaced (seen failing
    first). It is named as the --log-key given; at the receipt's own log, the likely
    fault is said; at another log, the offline check names the key the sidecar names."""
    photo, _ = sign_sample(enrolled, tmp_path)
    sidecar = photo.with_name(photo.name + ".prov")
    rc, key, err = enrolled("log", "key", "--server", enrolled.server)
    assert rc == 0, err
    third = generate_log_key(tmp_path / "third.pem", "third.example/log").verifier_key()
    rc, out, err = enrolled("receipt", "refresh", str(sidecar), "--log-key", third)
    said = " ".join((out + err).split())
    assert rc == 3 and "LOG INTEGRITY FAILURE" in said, said
    assert f"not the receipt's {third}" not in said and "another log" not in said, said
    assert f"not the --log-key given, {third}" in said, said
    assert "is the --log-key right?" in said, said
    other = start_server(tmp_path / "other.db")
    try:
        rc, out, err = enrolled(
            "receipt", "refresh", str(sidecar), "--server", other.address, "--log-key", third
        )
    finally:
        other.stop()
    said = " ".join((out + err).split())
    assert rc == 3 and f"not the --log-key given, {third}: another log" in said, said
    assert f"prov receipt verify {sidecar} --log-key {key.strip()}" in said, said
    rc, out, err = enrolled("receipt", "verify", str(sidecar), "--log-key", key.strip())
    assert rc == 0, (out, err)  # as it says
