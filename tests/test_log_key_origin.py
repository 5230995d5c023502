"""`prov log key --key-file KEY` prints the verifier key of the log that key signs: under
the name (`prov serve --origin`) the log's checkpoints carry. A real `prov serve`."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.conftest import ADMIN_TOKEN, start_server

ORIGIN = "newsroom.example/log"


def _log_one_entry(address: str) -> None:
    """An enrollment: a log entry, so the server signs a checkpoint."""
    with grpc.insecure_channel(address) as channel:
        stub = rpc.DeviceRegistryStub(channel)
        token = stub.CreateEnrollmentToken(
            pb.CreateEnrollmentTokenRequest(label="x"),
            metadata=[("authorization", f"Bearer {ADMIN_TOKEN}")],
            timeout=30,
        ).token
        key = DeviceKey.generate()
        pop = sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
        stub.Enroll(
            pb.EnrollRequest(token=token, public_key=key.public_key, proof_of_possession=pop),
            timeout=30,
        )


def test_the_key_file_of_a_named_log_prints_that_logs_verifier_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """deploy.md told an operator that `prov log key --key-file /etc/prov/log.pem` prints
    the key auditors pin; for a log named with `prov serve --origin`, it printed the key
    under the default name, with another key id, which verifies none of the log's
    checkpoints (a newcomer's finding). The checkpoint the server remembers beside its key
    (KEY.checkpoint) names the log; an --origin given still wins."""
    db = tmp_path / "p.db"
    srv = start_server(db, "--origin", ORIGIN)
    try:
        with ProvenanceClient(srv.address) as c:
            want, _ = c.log_key()
        _log_one_entry(srv.address)
        memo = Path(f"{db}.logkey.pem.checkpoint")
        deadline = time.monotonic() + 30
        while not memo.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        srv.stop()
    assert memo.exists()
    key = f"{db}.logkey.pem"
    capsys.readouterr()
    assert prov_main(["log", "key", "--key-file", key]) == 0
    assert capsys.readouterr().out.strip() == want
    assert want.startswith(f"{ORIGIN}+")
    assert prov_main(["log", "key", "--key-file", key, "--origin", "other.example/log"]) == 0
    assert capsys.readouterr().out.startswith("other.example/log+")


def test_the_key_file_of_an_empty_named_log_prints_that_logs_verifier_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log with no entry yet has no signed checkpoint beside its key: `prov log key
    --key-file KEY` printed the key under the default name, silently wrong for a log
    started with --origin (a reviewer's finding). The name is read from the database
    (`--db`, or the SQLite file beside a default KEY = DB.logkey.pem); with neither, the
    command refuses and says what to pass."""
    db = tmp_path / "p.db"
    srv = start_server(db, "--origin", ORIGIN)
    try:
        with ProvenanceClient(srv.address) as c:
            want, _ = c.log_key()
    finally:
        srv.stop()
    key = Path(f"{db}.logkey.pem")
    assert not Path(f"{key}.checkpoint").exists()
    assert want.startswith(f"{ORIGIN}+")
    capsys.readouterr()
    assert prov_main(["log", "key", "--key-file", str(key)]) == 0
    assert capsys.readouterr().out.strip() == want
    # a key copied elsewhere: no database beside it, no checkpoint
    copied = tmp_path / "elsewhere" / "log.pem"
    copied.parent.mkdir()
    copied.write_bytes(key.read_bytes())
    copied.chmod(0o600)
    assert prov_main(["log", "key", "--key-file", str(copied)]) == 2
    said = capsys.readouterr().err
    assert "--origin" in said and "--db" in said and str(copied) in said
    assert prov_main(["log", "key", "--key-file", str(copied), "--db", str(db)]) == 0
    assert capsys.readouterr().out.strip() == want
    assert prov_main(["log", "key", "--key-file", str(copied), "--origin", ORIGIN]) == 0
    assert capsys.readouterr().out.strip() == want


def test_origin_and_db_without_a_key_file_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking the server, --origin was silently ignored (the server names its own log):
    it is now a usage error before any call, as --db is."""
    db = tmp_path / "p.db"
    db.write_bytes(b"")
    for extra in (["--origin", ORIGIN], ["--db", str(db)]):
        assert prov_main(["log", "key", "--server", "127.0.0.1:1", *extra]) == 2
        assert "go with --key-file" in " ".join(capsys.readouterr().err.split())


def test_a_key_file_named_only_the_default_suffix_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key file named ``.logkey.pem`` (what `prov serve --db ''` would name it) has no
    database name before the suffix: `prov log key --key-file` raised ValueError ("Invalid
    name ''", a traceback, exit 1) looking for the database beside it (a review). It is
    told to pass --origin or --db, as any key with nothing beside it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / ".logkey.pem"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    assert prov_main(["log", "key", "--key-file", str(key)]) == 2
    assert "Pass --origin NAME" in " ".join(capsys.readouterr().err.split())


def test_a_server_started_without_origin_takes_the_databases_name_without_a_warning(
    tmp_path: Path,
) -> None:
    """deploy.md's step 3 starts every server without --origin (the log was named at step
    2); each then logged "WARNING ... database log origin is 'newsroom.example/log'; using
    it, not 'media-provenance.local/log'" at every start, as if misconfigured (a newcomer
    following the doc). Only an --origin given that differs is warned of."""
    db = tmp_path / "p.db"
    start_server(db, "--origin", ORIGIN).stop()
    srv = start_server(db)
    try:
        with ProvenanceClient(srv.address) as c:
            _, origin = c.log_key()
    finally:
        srv.stop()
    assert origin == ORIGIN
    assert "database log origin" not in srv.stderr(), srv.stderr()
    srv = start_server(db, "--origin", "other.example/log")
    srv.stop()
    assert f"database log origin is '{ORIGIN}'; using it, not 'other.example/log'" in (
        srv.stderr()
    ), srv.stderr()
