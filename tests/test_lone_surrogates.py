"""JSON from outside (a sidecar, a lookup body) may spell a lone UTF-16 surrogate as an
escape (``"\\ud800"``): Python's json module takes it into a str that no UTF-8 encoder
can write, so it must be refused where the JSON is read, as any malformed input is.
Before, such a sidecar's ``payloadType`` reached the protobuf or PAE encoder: `prov
verify --sidecar` and `prov receipt verify` ended in a UnicodeEncodeError traceback,
the web form's `sidecar` field got a 500, and a lookup's ``ref`` a 500. Real `prov
serve`, `prov web`, the real CLI, keys and sample photo."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from provenance.wire.jsontext import loads_text
from tests.conftest import SAMPLES, Cli, ServerProc, start_web

LONE = "\\ud800"  # as it stands in the JSON text: a backslash escape, not a character


def _signed_with_bad_sidecar(enrolled: Cli, tmp_path: Path) -> tuple[Path, Path]:
    """(photo, sidecar): the photo signed and logged, and a copy of its sidecar whose
    payloadType is a lone surrogate escape."""
    photo = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    rc, _, err = enrolled("sign", str(photo))
    assert rc == 0, err
    text = Path(f"{photo}.prov").read_text()
    payload_type = json.loads(text)["payloadType"]
    bad = tmp_path / "bad.prov"
    bad.write_text(text.replace(f'"{payload_type}"', f'"{LONE}"'))
    assert LONE in bad.read_text()
    return photo, bad


def test_a_sidecar_holding_a_lone_surrogate_is_no_usable_sidecar(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo, bad = _signed_with_bad_sidecar(enrolled, tmp_path)
    rc, out, err = enrolled("verify", str(photo), "--sidecar", str(bad), "--no-detect")
    assert rc == 2 and "--sidecar" in err and "not a usable sidecar" in err, err
    assert "surrogate" in err and out == ""
    rc, out, err = enrolled("log", "key")
    assert rc == 0, err
    rc, _, err = enrolled("receipt", "verify", str(bad), "--log-key", out.strip())
    assert rc == 2 and "surrogate" in err, err
    # found beside the file: left out with a reason, the file judged on its own bytes
    shutil.copy(bad, f"{photo}.prov")
    rc, out, err = enrolled("verify", str(photo), "--no-detect", "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["status"] == "SIGNED_ORIGINAL", (out, err)
    assert any("not used" in r and "surrogate" in r for r in doc["reasons"]), doc["reasons"]


def test_the_web_refuses_lone_surrogates_with_a_400(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    photo, bad = _signed_with_bad_sidecar(enrolled, tmp_path)
    web = start_web(server.address)
    try:
        files = {
            "sidecar": ("photo.jpg.prov", bad.read_bytes()),
            "file": ("photo.jpg", photo.read_bytes()),
        }
        r = httpx.post(f"{web.address}/api/v1/verify", files=files, timeout=120)
        assert r.status_code == 400, r.text
        assert "not a usable sidecar" in r.text and "surrogate" in r.text, r.text
        sha = "a" * 64
        for field in ("ref", "media_type"):
            body = f'{{"queries": [{{"sha256": "{sha}", "{field}": "x{LONE}"}}]}}'
            r = httpx.post(
                f"{web.address}/api/v1/lookup",
                content=body.encode(),
                headers={"content-type": "application/json"},
                timeout=60,
            )
            assert r.status_code == 400, (field, r.text)
            assert "surrogate" in r.json()["error"]["message"], r.text
        # a surrogate pair is a character: still taken
        body = f'{{"queries": [{{"sha256": "{sha}", "ref": "\\ud83d\\ude00"}}]}}'
        r = httpx.post(f"{web.address}/api/v1/lookup", content=body.encode(), timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["ref"] == "\U0001f600", r.text
    finally:
        web.stop()


def test_a_number_too_long_to_convert_is_named_without_the_interpreter_s_advice(
    server: ServerProc,
) -> None:
    """A JSON integer of more digits than Python converts (4,300) is malformed JSON in
    our words (review att36; before: the 400 passed on Python's "use
    sys.set_int_max_str_digits() to increase the limit", advice for the server's code,
    not for the client)."""
    sha, long = "a" * 64, "1" * 5000
    body = (
        f'{{"queries": [{{"sha256": "{sha}", "pdq": [{{"hash": "{sha}", "quality": {long}}}]}}]}}'
    )
    with pytest.raises(ValueError, match="a number of 5,000 digits") as e:
        loads_text(body.encode())
    assert "sys." not in str(e.value)
    web = start_web(server.address)
    try:
        r = httpx.post(f"{web.address}/api/v1/lookup", content=body.encode(), timeout=60)
    finally:
        web.stop()
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        "the body is not valid JSON: a number of 5,000 digits, more than the 4,300 a JSON"
        " number may have here"
    ), r.text


def test_bytes_that_are_not_utf8_are_named_in_our_words() -> None:
    """JSON bytes that are not UTF-8 are malformed JSON said in our words, naming the byte
    and where it stands (h-att41; before, Python's codec message, "'utf-8' codec can't
    decode byte 0xff in position 6: invalid start byte", reached `prov verify --sidecar`,
    the web form's `sidecar` field and the lookup API)."""
    for data, byte, at in ((b'{"a":"\xff\xfe"}', "0xff", 6), (b'\xef\xbb\xbf["\xc3"]', "0xc3", 5)):
        with pytest.raises(ValueError) as e:
            loads_text(data)
        said = str(e.value)
        assert said == f"the text is not UTF-8 (byte {byte} at offset {at})", said
