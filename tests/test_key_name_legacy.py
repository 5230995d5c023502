"""A log made under a note key name with an invisible character before keyname56 (the
spec allows it; `prov serve --origin` now refuses it): its database still starts with
`prov serve` and serves checkpoints that verify under that name, and the server writes
the name escaped where it prints it (its start's "log key:" line), as it does every
other name that is not plain text (before revkey56: the override itself, which turned
the rest of the line)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import NoteVerifier, generate_log_key, open_checkpoint
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.terminal import shown_line
from tests.conftest import ROOT, read_line, start_server

HOSTILE = "log\u202egro.elpmaxe"
"""A name that reads "logexample.org"."""
FILLED = "example.org/lo\u3164g"
"""A name with a HANGUL FILLER, which draws nothing (`repr` keeps it)."""


def _legacy_database(folder: Path, origin: str) -> tuple[Path, str]:
    """A SQLite database whose log is named ``origin`` with one entry (a device's
    enrollment), made as a server made one before names were held to `check_own_key_name`
    (the key file carries no name); (its path, its log's verifier key)."""
    db, key = folder / "prov.db", folder / "prov.db.logkey.pem"
    generate_log_key(key, "example.org/log")
    service = ProvenanceService(ServiceConfig(db=db, log_key=key, origin=origin))
    try:
        token, _ = service.create_enrollment_token()
        device = DeviceKey.generate()
        pop = sign_payload(device, PAYLOAD_TYPE_ENROLL, token.encode())
        service.enroll(token, device.public_key, pop)
        vkey = service.signer.verifier_key()
    finally:
        service.close()
    return db, vkey


@pytest.mark.parametrize(("name", "char"), [(HOSTILE, "\u202e"), (FILLED, "\u3164")])
def test_a_database_named_with_an_invisible_character_starts_and_shows_it_escaped(
    tmp_path: Path, name: str, char: str
) -> None:
    """Its start's "log key:" line and its log's warning that the database names the log
    otherwise than --origin write the character escaped (before revkey56: the line the
    override itself, the warning, a repr, HANGUL FILLER itself)."""
    db, vkey = _legacy_database(tmp_path, name)
    assert vkey.startswith(name + "+")
    srv = start_server(db, "--origin", "example.org/log")  # another name: the warning
    try:
        said = read_line(srv.proc, "log key: ")
        assert said == shown_line(vkey) != vkey, ascii(said)
        with ProvenanceClient(srv.address) as client:
            note = client.checkpoint()
            served_key, origin = client.log_key()
        assert (served_key, origin) == (vkey, name)
        checkpoint = open_checkpoint(note, NoteVerifier.from_vkey(vkey), origin=name)
        assert checkpoint.size >= 1
    finally:
        srv.stop()
    log = srv.stderr()
    assert "database log origin is" in log and char not in log, ascii(log)


def _on_a_terminal(args: list[str]) -> str:
    """What ``python -m clients.cli ARGS`` writes to its stdout when that is a terminal
    (a pseudo-terminal; stderr piped apart), once it exits."""
    main, child = os.openpty()
    errors = tempfile.TemporaryFile()  # not a pipe: nothing reads it until the exit
    proc = subprocess.Popen(
        [sys.executable, "-m", "clients.cli", *args],
        stdout=child,
        stderr=errors,
        cwd=ROOT,
    )
    os.close(child)
    got = b""
    try:
        while chunk := os.read(main, 4096):
            got += chunk
    except OSError as e:  # EIO: the terminal's other end was closed (the child exited)
        if e.errno != errno.EIO:
            raise
    finally:
        os.close(main)
    proc.wait(timeout=120)
    errors.seek(0)
    with errors:
        assert proc.returncode == 0, errors.read()
    return got.decode()


def test_log_key_of_such_a_database_is_escaped_on_a_terminal_and_exact_in_a_file(
    tmp_path: Path,
) -> None:
    """`prov log key --key-file KEY --db DB` writes the exact key to a file or a pipe (`>
    log.vkey`, what `--log-key` then reads: an escape there would be another name) and
    escapes the override on a terminal (before revkey56: the override itself there)."""
    db, vkey = _legacy_database(tmp_path, HOSTILE)
    args = ["log", "key", "--key-file", f"{db}.logkey.pem", "--db", str(db)]
    piped = subprocess.run(
        [sys.executable, "-m", "clients.cli", *args], capture_output=True, cwd=ROOT, timeout=120
    )
    assert piped.returncode == 0 and piped.stdout.decode() == vkey + "\n", piped
    shown = _on_a_terminal(args).strip()
    assert shown == vkey.replace("\u202e", "\\u202e"), ascii(shown)
