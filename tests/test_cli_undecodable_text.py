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

from provenance.terminal import quoted_path
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


def test_a_missing_file_name_not_utf8_is_named_with_its_byte(tmp_path: Path) -> None:
    """A usage error about a path that is not UTF-8 (a FILE that does not exist, or one
    whose folder on the way is a file) names it with the byte that did not decode as
    ``\\xe9``, as every other line of `prov` writes such a name, not with the lone
    surrogate Python holds for it (``\\udce9``); exit 2, found before any call."""
    photo = os.fsencode(tmp_path) + b"/caf\xe9.jpg"
    shutil.copyfile(SAMPLES / "rocket.jpg", photo)
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "COLUMNS": "400"}
    runs: list[tuple[list[str | bytes], bytes, str]] = [
        (["verify"], os.fsencode(tmp_path) + b"/nop\xe9.jpg", "does not exist"),
        (["sign"], os.fsencode(tmp_path) + b"/nop\xe9.jpg", "does not exist"),
        (["verify"], photo + b"/x\xff.jpg", "cannot be followed: not a directory"),
    ]
    for command, path, says in runs:
        done = subprocess.run(
            [sys.executable, "-m", "clients.cli", *command, path, "--server", "127.0.0.1:1"],
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=120,
        )
        err = done.stderr.decode()  # strict: valid UTF-8
        name = path.decode("ascii", "backslashreplace")  # b"\xe9" as the text \xe9
        assert done.returncode == 2 and "Traceback" not in err, (command, err)
        assert f"path '{name}' {says}" in err, (command, err)
        assert "\\udc" not in err, (command, err)


def test_quoted_path_writes_undecoded_bytes_as_python_writes_bytes() -> None:
    """`quoted_path`: ``repr`` of the name, each lone surrogate of a byte that did not
    decode written ``\\xNN``; a backslash in the name stays escaped (``\\\\udce9`` is the
    name's own text, not a byte), and controls and bidirectional overrides are escaped."""
    assert quoted_path("caf\udce9.jpg") == "'caf\\xe9.jpg'"
    assert quoted_path("a\\udce9") == "'a\\\\udce9'"
    assert quoted_path("a\\\udce9") == "'a\\\\\\xe9'"
    assert quoted_path("x\u202egpj.exe") == "'x\\u202egpj.exe'"
    assert quoted_path("it's\n") == '"it\'s\\n"'
    assert quoted_path("\ud83d") == "'\\ud83d'"  # not a byte that did not decode
