"""Text arguments that are not UTF-8 (a byte the terminal's encoding could not decode
reaches Python as a lone surrogate): `prov admin revoke --reason` and `prov admin
enroll-token --label` are sent to the server and stored (SQLite or PostgreSQL TEXT), so
such a value is a usage error naming the option, not a UnicodeEncodeError traceback.

A file name that is not UTF-8 (``caf\\xe9.jpg`` made under Latin-1) reaches Python with a
lone surrogate too: printed to a stdout that encodes strictly (PYTHONIOENCODING=utf-8:strict,
as Python sets it under a locale like en_US.UTF-8), `prov sign` wrote the sidecar and then
died with a traceback (exit 1). The byte is shown as its escape (``\\xe9``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ADMIN_TOKEN, ROOT, SAMPLES, Cli, ServerProc


def _prov(*args: bytes | str, server: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "PROV_SERVER": server}
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_undecodable_reason_and_label_are_usage_errors(server: ServerProc) -> None:
    device_id = "ab" * 32
    done = _prov("admin", "revoke", device_id, "--reason", b"lost \xff", server=server.address)
    said = " ".join(done.stderr.decode(errors="replace").replace("│", " ").split())
    assert done.returncode == 2 and "Traceback" not in said, said
    assert "--reason" in said and "not valid UTF-8" in said, said
    done = _prov("admin", "enroll-token", "--label", b"cam\xe9ra", server=server.address)
    said = " ".join(done.stderr.decode(errors="replace").replace("│", " ").split())
    assert done.returncode == 2 and "Traceback" not in said, said
    assert "--label" in said and "not valid UTF-8" in said, said
    done = _prov("admin", "enroll-token", "--label", "caméra", server=server.address)
    assert done.returncode == 0, done.stderr  # the same label in UTF-8 is taken


def test_a_file_name_not_utf8_is_printed_escaped_to_a_strict_stdout(
    enrolled: Cli, tmp_path: Path
) -> None:
    """`prov sign`, `verify`, `detect` and `receipt export` name the file (or its sidecar):
    each exits as it would for any name, its output valid UTF-8, the byte 0xE9 shown as
    ``\\xe9``, on a stdout that refuses lone surrogates."""
    photo = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    shutil.copyfile(SAMPLES / "rocket.jpg", photo)
    shown = f"{tmp_path}/caf\\xe9.jpg"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "COLUMNS": "400"}
    runs: list[tuple[list[str | bytes], str, int]] = [
        (["sign", photo], f"{shown}: signed (#1)", 0),
        (["verify", photo], f"{shown}", 0),
        (["detect", photo], f"{shown}: not scored:", 1),  # this server runs no detector
        (["receipt", "export", photo + b".prov"], f"wrote {shown}.tlog-proof", 0),
    ]
    for args, says, exit_code in runs:
        done = subprocess.run(
            [sys.executable, "-m", "clients.cli", *args],
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
        out, err = done.stdout.decode(), done.stderr.decode()  # strict: valid UTF-8
        assert done.returncode == exit_code and "Traceback" not in err, (args, out, err)
        assert says in out, (args, out, err)
