"""A sidecar whose receipt does not verify (written by an older version that took a
proxy's or a broken server's answer as the receipt, and dropped the claim from the
queue) made `prov sign` say "already signed (#1) and logged at leaf 3; not signed
again": the file was never looked at again, though its claim may never have been
logged. Now `prov sign` checks an existing sidecar's receipt with the log key this
device pinned, and when it does not verify says so and queues the sidecar's own claim
again (its old sidecar copied aside first), so the log's answer decides: the real
receipt when it holds the claim, else it logs it or refuses it, said as any refusal.
Real `prov serve`, real keys, the real CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients.device import DeviceHome
from provenance.core.claims import Receipt
from provenance.wire.sidecar import decode_sidecar, encode_sidecar
from tests.conftest import Cli, closed_port
from tests.photos import noise_photo

pytestmark = pytest.mark.slow  # starts `prov serve`

#: What an older version wrote as the receipt of a forged answer (tests/test_hostile_receipt.py)
FORGED = Receipt(3, datetime.fromtimestamp(1_800_000_000, UTC), "garbage\n", (), b"")


def _damage(photo: Path) -> Path:
    """Put the old bug's forged receipt into ``photo``'s sidecar; returns the sidecar."""
    side = photo.with_name(photo.name + ".prov")
    sidecar = decode_sidecar(side.read_bytes())
    side.write_bytes(encode_sidecar(sidecar.with_receipt(FORGED, sidecar.log_verifier_key)))
    return side


def _said(out: str, err: str) -> str:
    return " ".join((out + err).split())


def test_a_logged_claim_with_a_damaged_receipt_gets_its_real_receipt(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The claim is in the log; the sidecar's receipt is the forged one and the device no
    longer queues the claim (the old bug): signing again queues the claim from the
    sidecar, whose submission gets the log's receipt (a duplicate), not a second claim."""
    photo = noise_photo(tmp_path, "p.png", 1)
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "logged at leaf 1" in out, (out, err)
    side = _damage(photo)
    damaged = side.read_bytes()
    rc, out, err = enrolled("sign", str(photo))
    said = _said(out, err)
    assert "not signed again" not in said, said
    assert "receipt does not verify with the log key pinned at enrollment" in said, said
    assert f"kept as {side}.bak" in said, said
    assert rc == 0 and "already signed (#1) and logged at leaf 1" in said, said
    assert (tmp_path / f"{side.name}.bak").read_bytes() == damaged
    sidecar = decode_sidecar(side.read_bytes())
    assert sidecar.receipt is not None and sidecar.receipt.leaf_index == 1
    assert DeviceHome(enrolled.home).pending() == []
    rc, out, err = enrolled("verify", str(photo), "--no-detect")
    assert rc == 0 and "SIGNED_ORIGINAL" in out, (out, err)


def test_offline_the_claim_stays_queued_and_the_next_sign_says_nothing_more(
    enrolled: Cli, tmp_path: Path
) -> None:
    """With the server unreachable the claim queued again stays queued: the sidecar then
    holds no receipt (the damaged one is kept aside once), and a later `prov sign` finds
    it queued as any other; `prov device sync` logs it."""
    photo = noise_photo(tmp_path, "p.png", 2)
    assert enrolled("sign", str(photo))[0] == 0
    side = _damage(photo)
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    said = _said(out, err)
    assert rc == 4 and "queued" in said and "does not verify" in said, said
    assert decode_sidecar(side.read_bytes()).receipt is None
    assert len(DeviceHome(enrolled.home).pending()) == 1
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    said = _said(out, err)
    assert rc == 4 and "does not verify" not in said and "queued" in said, said
    assert not (tmp_path / f"{side.name}.bak2").exists()
    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 1 of 1" in out, (out, err)
    assert decode_sidecar(side.read_bytes()).receipt is not None


def test_a_damaged_receipt_of_a_claim_still_queued_is_dropped_not_trusted(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The claim is still queued and its sidecar holds a receipt that does not verify:
    the sidecar is put back to the queued claim (the damaged one kept aside) and the
    claim submitted."""
    photo = noise_photo(tmp_path, "p.png", 3)
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    assert rc == 4 and "queued" in out, (out, err)
    side = _damage(photo)
    rc, out, err = enrolled("sign", str(photo))
    said = _said(out, err)
    assert "does not verify" in said and f"kept as {side}.bak" in said, said
    assert rc == 0 and "already signed (#1) and logged at leaf 1" in said, said
    assert DeviceHome(enrolled.home).pending() == []


def test_force_signs_again_keeping_the_damaged_sidecar(enrolled: Cli, tmp_path: Path) -> None:
    photo = noise_photo(tmp_path, "p.png", 4)
    assert enrolled("sign", str(photo))[0] == 0
    side = _damage(photo)
    damaged = side.read_bytes()
    rc, out, err = enrolled("sign", "--force", str(photo))
    said = _said(out, err)
    assert rc == 0 and "signed (#2) and logged at leaf 2" in said, said
    assert (tmp_path / f"{side.name}.bak").read_bytes() == damaged


def test_a_refused_claim_with_a_damaged_receipt_is_said_and_signed_anew_next(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The claim queued again is refused by the log (a later claim of this key was logged
    first, so its sequence no longer advances): it is set aside, said as any refusal
    ("sign the file again for a new claim"), and the next `prov sign` of the file signs
    it anew, as for any refused claim."""
    first = noise_photo(tmp_path, "first.png", 5)
    rc, out, err = enrolled("sign", "--server", closed_port(), str(first))
    assert rc == 4 and "queued" in out, (out, err)
    h = DeviceHome(enrolled.home)
    (entry,) = h.pending()
    kept = entry.file.read_bytes()
    entry.file.unlink()  # the old bug: the claim dropped from the queue ...
    sidecar = decode_sidecar(json.loads(kept)["sidecar"].encode())
    side = first.with_name(first.name + ".prov")
    side.write_bytes(encode_sidecar(sidecar.with_receipt(FORGED)))  # ... its answer kept
    later = noise_photo(tmp_path, "later.png", 6)
    rc, out, err = enrolled("sign", str(later))
    assert rc == 0 and "(#2) and logged" in out, (out, err)
    rc, out, err = enrolled("sign", str(first))
    said = _said(out, err)
    assert "does not verify" in said and "refused by the server" in said, said
    assert rc == 1 and "Traceback" not in said, said
    assert len(h.set_aside()) == 1 and h.pending() == []
    rc, out, err = enrolled("sign", str(first))
    assert rc == 0 and "signed (#3) and logged" in out, (out, err)


def test_a_damaged_receipt_on_a_claim_this_key_did_not_sign_is_left_as_it_is(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The sidecar names this key but its claim's signature does not verify either (its
    bytes damaged too): no claim to submit, nothing rewritten; `prov sign --force` is
    named, exit 2."""
    photo = noise_photo(tmp_path, "p.png", 7)
    assert enrolled("sign", str(photo))[0] == 0
    side = photo.with_name(photo.name + ".prov")
    sidecar = decode_sidecar(side.read_bytes())
    signed = sidecar.signed_claim
    bad = replace(signed, signature=bytes([signed.signature[0] ^ 1]) + signed.signature[1:])
    side.write_bytes(encode_sidecar(replace(sidecar, signed_claim=bad, receipt=FORGED)))
    damaged = side.read_bytes()
    rc, out, err = enrolled("sign", str(photo))
    said = _said(out, err)
    assert rc == 2 and "not signed" in said and "does not verify" in said, said
    assert "prov sign --force" in said and f"{side.name}.bak" in said, said
    assert side.read_bytes() == damaged and not (tmp_path / f"{side.name}.bak").exists()
