"""`prov verify` of logged bytes beside a sidecar whose signature does not verify: the
exact bytes decide (SIGNED_ORIGINAL), and both the text and `--json` say that the
sidecar's signature does not verify and that it was ignored. A real server, a real
device key, a real sidecar with one signature byte changed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from provenance.wire.sidecar import decode_sidecar, encode_sidecar
from tests.conftest import Cli, sign_sample

NOTE = "its signature does not verify under the enrolled device key, so it was ignored"


def test_a_bad_signature_sidecar_beside_logged_bytes_is_named(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo, _ = sign_sample(enrolled, tmp_path)
    side = Path(f"{photo}.prov")
    good = decode_sidecar(side.read_bytes())
    sig = bytearray(good.signed_claim.signature)
    sig[5] ^= 0x01
    bad = replace(good, signed_claim=replace(good.signed_claim, signature=bytes(sig)))
    side.write_bytes(encode_sidecar(bad))
    rc, out, err = enrolled("verify", str(photo), "--json", "--no-detect")
    doc = json.loads(out)
    assert rc == 0 and doc["status"] == "SIGNED_ORIGINAL", (out, err)
    # before: no reason mentioned the sidecar at all
    assert any(NOTE in r for r in doc["reasons"]), doc["reasons"]
    rc, text, err = enrolled("verify", str(photo), "--no-detect")
    assert rc == 0 and NOTE in " ".join(text.split()), text
    # the intact sidecar gets no such note
    side.write_bytes(encode_sidecar(good))
    rc, out, err = enrolled("verify", str(photo), "--json", "--no-detect")
    assert rc == 0 and not any("sidecar" in r for r in json.loads(out)["reasons"]), out
