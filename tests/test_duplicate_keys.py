"""JSON from outside that names one key twice in an object is refused, naming the key:
RFC 8259 §4 leaves what a reader then does open and I-JSON (RFC 7493 §2.3) forbids it,
so two programs could read one sidecar or lookup two ways. Before, Python's json kept the
last value silently. Real `prov serve`, `prov web`, `prov witness serve`, the real CLI,
keys and sample photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from clients.device import DeviceHome
from clients.scan.resume import Journal
from detector.config import ModelMeta
from detector.registry import REGISTRY
from detector.weights import load_weights
from provenance.core.errors import ConfigError, DetectorError
from provenance.v1 import provenance_pb2 as pb
from provenance.wire.convert import c2pa_from_pb
from provenance.wire.jsontext import loads_text
from tests.conftest import SAMPLES, Cli, ServerProc, sign_sample, start_web


def test_loads_text_names_a_repeated_key_at_any_depth() -> None:
    with pytest.raises(ValueError, match=r"names the key 'c' 2 times.*RFC 8259"):
        loads_text(b'{"a": [1, {"b": {"c": 1, "c": 2}}]}')
    # the same key spelled as an escape is the same key
    with pytest.raises(ValueError, match=r"names the key '\\xe9' 2 times"):
        loads_text('{"\\u00e9": 1, "\u00e9": 1}')
    key = "k" * 9000
    with pytest.raises(ValueError, match=r"names the key 'kkkk.*\.\.\.' 3 times") as e:
        loads_text(f'{{"x": {{"{key}": 1, "{key}": 2, "{key}": 3}}}}')
    assert len(str(e.value)) < 200  # a long key is cut short
    # keys that differ, in objects apart, are no repeat
    assert loads_text(b'[{"a": 1}, {"a": 2}, {"A": 3, "a": 4}]') == [
        {"a": 1},
        {"a": 2},
        {"A": 3, "a": 4},
    ]


def test_a_lookup_body_naming_a_key_twice_gets_a_400(server: ServerProc) -> None:
    """Before, each was answered 200 for the last value: the second query list, the
    second sha256."""
    sha, other = "a" * 64, "b" * 64
    bodies = {
        "queries": f'{{"queries": [], "queries": [{{"sha256": "{sha}"}}]}}',
        "sha256": f'{{"queries": [{{"sha256": "{sha}", "ref": "x", "sha256": "{other}"}}]}}',
    }
    web = start_web(server.address)
    try:
        answers = {
            key: httpx.post(f"{web.address}/api/v1/lookup", content=body.encode(), timeout=60)
            for key, body in bodies.items()
        }
    finally:
        web.stop()
    for key, r in answers.items():
        assert r.status_code == 400, (key, r.text)
        assert r.json()["error"]["message"] == (
            f"the body is not valid JSON: an object names the key '{key}' 2 times, which"
            " readers may take differently (RFC 8259 §4): each key once"
        ), r.text


def test_a_sidecar_naming_a_key_twice_is_no_usable_sidecar(enrolled: Cli, tmp_path: Path) -> None:
    """Before, the sidecar below (a forged payloadType first, the real one last) verified:
    json kept the last value; a reader keeping the first would have read another claim."""
    photo, _ = sign_sample(enrolled, tmp_path)
    text = Path(f"{photo}.prov").read_text()
    bad = tmp_path / "twice.prov"
    bad.write_text(text.replace("{", '{"payloadType": "application/x-other",', 1))
    rc, out, err = enrolled("verify", str(photo), "--sidecar", str(bad), "--no-detect")
    assert rc == 2 and "--sidecar" in err and "not a usable sidecar" in err, (out, err)
    assert "'payloadType' 2 times" in err and out == "", err
    rc, key, err = enrolled("log", "key")
    assert rc == 0, err
    rc, _, err = enrolled("receipt", "verify", str(bad), "--log-key", key.strip())
    assert rc == 2 and "'payloadType' 2 times" in err, err


def test_an_audit_state_naming_a_key_twice_is_damaged(enrolled: Cli, tmp_path: Path) -> None:
    sign_sample(enrolled, tmp_path)
    state = tmp_path / "audit.json"
    rc, _, err = enrolled("log", "audit", "--state", str(state))
    assert rc == 0, err
    doc = json.loads(state.read_text())
    state.write_text(state.read_text().replace("{", '{"checkpoint": "",', 1))
    assert json.loads(state.read_text()) == doc  # what json alone read: the last value
    rc, out, err = enrolled("log", "audit", "--state", str(state))
    assert (rc, out) == (1, ""), (out, err)
    assert "audit state file is damaged" in err and "'checkpoint' 2 times" in err, err


def test_a_reply_field_naming_a_key_twice_is_refused() -> None:
    """The JSON text fields of a C2PA result in a server's reply (what `prov verify`
    reads from the network) go through the same reader."""
    twice = pb.C2paResult(provenance_assertion_json='{"evidence": {}, "evidence": {"a": 1}}')
    with pytest.raises(ValueError, match="'evidence' 2 times"):
        c2pa_from_pb(twice)
    twice = pb.C2paResult(signing_time_json='{"error": "x", "error": "y"}')
    with pytest.raises(ValueError, match="'error' 2 times"):
        c2pa_from_pb(twice)


def _twice(text: str, key: str, value: str) -> str:
    """``text``, a JSON object, with ``"key": value`` first in it too: the same key twice,
    Python's json taking the later (original) value."""
    twice = text.replace("{", f'{{"{key}": {value}, ', 1)
    assert json.loads(twice) == json.loads(text)
    return twice


def test_a_device_state_naming_a_key_twice_is_damaged(tmp_path: Path) -> None:
    """``device.json`` read back from disk: before, the last ``device_id`` was taken."""
    home = DeviceHome(tmp_path / "dev")
    home.init(b"pw")
    home.state_path.write_text(_twice(home.state_path.read_text(), "device_id", '"0"'))
    with pytest.raises(ConfigError, match=r"device\.json is damaged: .*'device_id' 2 times"):
        home.state()


def test_a_queue_entry_naming_a_key_twice_is_an_unreadable_entry(tmp_path: Path) -> None:
    """A queued claim's entry read back from disk: before, the last ``sidecar_path`` (where
    the receipt is written) was taken; now the entry is unreadable (set aside by the next
    sync, its text kept), as one that is not JSON is."""
    home = DeviceHome(tmp_path / "dev")
    home.init(b"pw")
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    home.sign_file(home.load_key(b"pw"), photo)
    (entry,) = home.queue_dir.glob("*.json")
    entry.write_text(_twice(entry.read_text(), "sidecar_path", json.dumps(str(tmp_path / "x"))))
    (queued,) = home.pending()
    assert queued.sidecar is None and "'sidecar_path' 2 times" in queued.problem, queued
    assert queued.problem.startswith("not valid JSON"), queued.problem


def test_a_scan_report_row_naming_a_key_twice_is_no_row_to_resume(tmp_path: Path) -> None:
    """``prov scan --resume`` reads the report's rows back to skip their paths: before,
    a row naming ``path`` twice skipped the last one only."""
    report = tmp_path / "scan.jsonl"
    row = json.dumps({"path": "a.jpg", "status": "UNSIGNED"})
    report.write_text(row + "\n" + _twice(row, "path", '"b.jpg"') + "\n")
    with pytest.raises(
        ConfigError, match=r"scan\.jsonl line 2 is not a scan report row: .*'path' 2"
    ):
        Journal(report, resume=True)


def test_detector_metadata_naming_a_key_twice_is_malformed() -> None:
    """A weights file's metadata (`ModelMeta.from_json`; a --weights file may come from
    anywhere): before, the last ``calibration`` (the band thresholds) was taken."""
    shipped = REGISTRY["default"].shipped
    assert shipped is not None
    text = load_weights(shipped)[1].to_json()
    twice = _twice(text, "calibration", "{}")
    with pytest.raises(DetectorError, match=r"malformed detector metadata: .*'calibration' 2"):
        ModelMeta.from_json(twice)
