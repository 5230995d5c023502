"""A log made under a note key name with an invisible character before keyname56 (the
spec allows it; `prov serve --origin` now refuses it): its database still starts with
`prov serve` and serves checkpoints that verify under that name, and the server writes
the name escaped where it prints it (its start's "log key:" line), as it does every
other name that is not plain text (before revkey56: the override itself, which turned
the rest of the line)."""

from __future__ import annotations

from pathlib import Path

from clients.api import ProvenanceClient
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import NoteVerifier, generate_log_key, open_checkpoint
from provenance.server.service import ProvenanceService, ServiceConfig
from tests.conftest import read_line, start_server

HOSTILE = "log\u202egro.elpmaxe"
"""A name that reads "logexample.org"."""


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


def test_a_database_named_with_an_override_starts_and_its_start_line_is_escaped(
    tmp_path: Path,
) -> None:
    db, vkey = _legacy_database(tmp_path, HOSTILE)
    assert vkey.startswith(HOSTILE + "+")
    srv = start_server(db)
    try:
        said = read_line(srv.proc, "log key: ")
        assert said == vkey.replace("\u202e", "\\u202e"), ascii(said)
        with ProvenanceClient(srv.address) as client:
            note = client.checkpoint()
            served_key, origin = client.log_key()
        assert (served_key, origin) == (vkey, HOSTILE)
        checkpoint = open_checkpoint(note, NoteVerifier.from_vkey(vkey), origin=HOSTILE)
        assert checkpoint.size >= 1
    finally:
        srv.stop()
    assert "\u202e" not in srv.stderr(), ascii(srv.stderr())
