"""Shared fixtures: real servers on loopback ports, real keys, real database files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance import wire
from provenance.claims import Claim, HardBinding, SignedClaim
from provenance.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.keys import DeviceKey

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
SAMPLES = ROOT / "clients" / "samples"
ADMIN_TOKEN = "test-admin-token-0123456789"
PASSPHRASE = "correct horse battery staple"


def enroll_key(client: ProvenanceClient) -> DeviceKey:
    """A fresh device key enrolled through ``client`` (which holds the admin token)."""
    key = DeviceKey.generate()
    token, _ = client.create_enrollment_token()
    client.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    return key


def signed_claim(
    key: DeviceKey, seq: int, sha: bytes | None = None, prev: bytes = b""
) -> SignedClaim:
    """A validly signed claim for a made-up capture (random SHA-256 unless given)."""
    claim = Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=datetime.now(UTC),
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(sha256=sha if sha is not None else os.urandom(32)),
        prev_claim_hash=prev,
    )
    return sign_claim(key, claim)


def sign_claim(key: DeviceKey, claim: Claim) -> SignedClaim:
    """``claim`` serialized once and signed by ``key``, as a device does."""
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


@dataclass
class ServerProc:
    """A `prov serve` child process on a loopback port."""

    proc: subprocess.Popen[str]
    address: str
    db: Path

    def stop(self, sig: int = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_server(db: Path, *extra: str, env: dict[str, str] | None = None) -> ServerProc:
    """Start `prov serve --db DB --listen 127.0.0.1:0` and wait for its address line."""
    full_env = {**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "serve",
            "--db",
            str(db),
            "--listen",
            "127.0.0.1:0",
            "--no-detector",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("listening on "):
            return ServerProc(proc, line.split()[-1], db)
        if not line and proc.poll() is not None:
            raise RuntimeError(
                f"server exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            )
    proc.kill()
    raise RuntimeError("server did not start in 60 s")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    srv = start_server(tmp_path / "prov.db")
    yield srv
    srv.stop()


@dataclass
class Cli:
    """Runs `prov` in-process with a device home and the test credentials."""

    home: Path
    server: str
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = prov_main(list(args))
        cap = self.capsys.readouterr()
        return rc, cap.out, cap.err


@pytest.fixture
def cli(
    tmp_path: Path,
    server: ServerProc,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    home = tmp_path / "device"
    monkeypatch.setenv("PROV_HOME", str(home))
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PROV_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("PROV_SERVER", server.address)
    return Cli(home, server.address, capsys)


@pytest.fixture
def enrolled(cli: Cli) -> Cli:
    """A device initialised and enrolled with the running server."""
    rc, _, err = cli("device", "init")
    assert rc == 0, err
    rc, token, err = cli("admin", "enroll-token", "--label", "test-camera")
    assert rc == 0, err
    rc, _, err = cli("device", "enroll", "--token", token.strip())
    assert rc == 0, err
    return cli
