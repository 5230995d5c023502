"""`prov verify --json` of a file whose name is not UTF-8 (a byte the operating system
hands over as a lone surrogate, U+DC80-U+DCFF). Before, the name was written as the
escape ``"\\udce9"``, which no Unicode string holds: strict JSON readers (ours,
`loads_text`; RFC 8259 §8.2) refuse the whole report. Now ``path`` is UTF-8 text with
U+FFFD for each such byte and ``path_bytes_b64`` the exact name; a UTF-8 name is as
before, with no extra field. Real `prov serve`, the real CLI, keys and sample photo."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

from provenance.wire.jsontext import loads_text
from tests.conftest import ROOT, SAMPLES, Cli, ServerProc, closed_port

RAW = b"caf\xe9.jpg"  # Latin-1, as an old camera card or archive may name it


def test_an_undecodable_name_gives_valid_json_with_its_exact_bytes(
    enrolled: Cli, tmp_path: Path
) -> None:
    signed = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "signed.jpg"))
    rc, _, err = enrolled("sign", str(signed))
    assert rc == 0, err
    # renamed after signing: pytest's captured stdout cannot print the name `prov sign`
    # does (a real one takes it with surrogateescape under the C.UTF-8 locale)
    photo = signed.rename(tmp_path / os.fsdecode(RAW))
    Path(f"{signed}.prov").rename(f"{photo}.prov")
    rc, out, err = enrolled("verify", str(photo), "--no-detect", "--json")
    doc = loads_text(out.encode("utf-8"))  # raised ValueError (a lone surrogate) before
    assert rc == 0 and doc["status"] == "SIGNED_ORIGINAL", (out, err)
    assert doc["path"] == str(tmp_path / "caf\ufffd.jpg")
    assert base64.b64decode(doc["path_bytes_b64"]) == os.fsencode(photo)

    # an unusable sidecar beside another such name: its reason names it, as text
    copy = Path(shutil.copy(photo, tmp_path / os.fsdecode(b"\xff.jpg")))
    Path(f"{copy}.prov").write_text("not a sidecar")
    rc, out, err = enrolled("verify", str(copy), "--no-detect", "--json")
    doc = loads_text(out.encode("utf-8"))
    assert rc == 0 and doc["status"] == "SIGNED_ORIGINAL", (out, err)
    assert any("(\ufffd.jpg.prov)" in r and "not used" in r for r in doc["reasons"]), doc

    # the object printed when the server cannot be reached
    rc, out, _ = enrolled("verify", str(photo), "--no-detect", "--json", "--server", closed_port())
    doc = loads_text(out.encode("utf-8"))
    assert rc == 1 and doc["status"] is None and doc["error"], doc
    assert base64.b64decode(doc["path_bytes_b64"]) == os.fsencode(photo)

    # a UTF-8 name: as before, no extra field
    plain = Path(shutil.copy(photo, tmp_path / "café.jpg"))
    rc, out, err = enrolled("verify", str(plain), "--no-detect", "--json")
    doc = loads_text(out.encode("utf-8"))
    assert doc["path"] == str(plain) and "path_bytes_b64" not in doc, doc


def test_the_text_report_writes_an_undecodable_name_escaped(
    server: ServerProc, tmp_path: Path
) -> None:
    """`prov verify` without --json under a locale whose stdout refuses lone surrogates
    (en_US.UTF-8: Python writes stdout 'strict'; here PYTHONIOENCODING=utf-8:strict):
    before, a traceback ("UnicodeEncodeError: ... surrogates not allowed") and exit 1;
    now the report, each byte that is not UTF-8 shown as its escape (``caf\\xe9.jpg``:
    the console never writes raw bytes a terminal could read as controls). A real
    `prov` process against a real server."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / os.fsdecode(RAW)))
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", "verify", str(photo), "--no-detect"],
        capture_output=True,
        cwd=ROOT,
        env=os.environ
        | {"PYTHONIOENCODING": "utf-8:strict", "PROV_SERVER": server.address, "COLUMNS": "200"},
        timeout=120,
    )
    assert b"Traceback" not in done.stderr, done.stderr.decode(errors="replace")
    assert done.returncode == 11, done.stderr.decode(errors="replace")  # UNSIGNED
    assert os.fsencode(photo).replace(b"\xe9", b"\\xe9") in done.stdout, done.stdout


def test_prov_detect_json_of_an_undecodable_name_is_valid_json(cli: Cli, tmp_path: Path) -> None:
    """`prov detect --json`, scored here (--local) and asked of a server (this test
    server runs no detector: each result is an error, naming the file). Before: --local
    wrote the name as ``"caf\\xe9.jpg"``, an escape JSON does not have (json.loads:
    "Invalid \\escape"); the server path wrote ``"\\udce9"``. Now as `prov verify
    --json`: ``file`` with U+FFFD, ``file_bytes_b64`` the exact name."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / os.fsdecode(RAW)))
    for local in (["--local", "--seed", "1", "--device", "cpu"], []):
        rc, out, err = cli("detect", str(photo), "--json", *local)
        (result,) = loads_text(out.encode("utf-8"))["results"]
        assert result["file"] == str(tmp_path / "caf\ufffd.jpg"), (local, out, err)
        assert base64.b64decode(result["file_bytes_b64"]) == os.fsencode(photo), local
        assert ("score" in result) == bool(local), result
    plain = Path(shutil.copy(photo, tmp_path / "café.jpg"))
    rc, out, err = cli("detect", str(plain), "--json", "--local", "--seed", "1", "--device", "cpu")
    (result,) = loads_text(out.encode("utf-8"))["results"]
    assert result["file"] == str(plain) and "file_bytes_b64" not in result, result
