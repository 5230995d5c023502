"""The enrollment authority key's passphrase (and the admin token) stay in `prov serve`
alone: the processes it starts to parse untrusted files (the C2PA reader workers, the
video frame decoder) are isolated so that a parser bug cannot reach the server's
secrets, and they used to inherit the whole environment, $PROV_CA_PASSPHRASE included,
which with the key file (same user) is the authority itself. Real server, real
children, their /proc/PID/environ read."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from clients.api import ProvenanceClient
from provenance.c2pa.authority import init_authority
from tests.conftest import ADMIN_TOKEN, FIXTURES, SAMPLES, start_server

PASSPHRASE = "ca passphrase that must stay in the server"


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            todo += [int(c) for c in children]
            found += [int(c) for c in children]
    return found


def test_children_of_prov_serve_never_see_the_ca_passphrase_or_admin_token(
    tmp_path: Path,
) -> None:
    init_authority(tmp_path / "ca", now=datetime.now(UTC), passphrase=PASSPHRASE.encode())
    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))
    srv = start_server(
        tmp_path / "prov.db", "--ca", str(tmp_path / "ca"), env={"PROV_CA_PASSPHRASE": PASSPHRASE}
    )
    try:
        with ProvenanceClient(srv.address) as client:
            client.verify_file(FIXTURES / "c2pa" / "generated" / "gen_ed25519_capture.jpg")
            client.verify_file(clip)
        children = _descendants(srv.proc.pid)
        assert children, "the server started no reader or decoder"
        for pid in children:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            names = {entry.split(b"=", 1)[0] for entry in environ}
            assert b"PROV_CA_PASSPHRASE" not in names, pid
            assert b"PROV_ADMIN_TOKEN" not in names, pid
            assert not any(PASSPHRASE.encode() in e or ADMIN_TOKEN.encode() in e for e in environ)
    finally:
        srv.stop()
