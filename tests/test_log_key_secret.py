"""A private key given where a verifier key belongs (`--log-key` with the log key file
`prov serve` keeps, ``provenance.db.logkey.pem``, instead of `prov log key`'s line) is
refused without printing it: the error names the mistake and the command that prints
the verifier key, and no line of the key's PEM text reaches the terminal.

Before: `prov log audit --log-key provenance.db.logkey.pem` answered "verifier key
'-----BEGIN PRIVATE KEY-----\\nMC4C...' is not <name>+<key id>+<key>", the log's signing
key whole on stderr (and in any CI log that kept it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provenance.core.errors import LogError
from provenance.log.checkpoint import NoteVerifier
from provenance.witness import parse_cosigner_vkey
from tests.conftest import ROOT


def _pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def _secret_lines(pem: str) -> list[str]:
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def test_audit_with_the_private_key_file_does_not_print_it(tmp_path: Path) -> None:
    pem = _pem()
    key_file = tmp_path / "provenance.db.logkey.pem"
    key_file.write_text(pem)
    (tmp_path / "tiles").mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "log",
            "audit",
            "--state",
            str(tmp_path / "state.json"),
            "--tiles",
            str(tmp_path / "tiles"),
            "--log-key",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    out = r.stdout + r.stderr
    assert r.returncode in (1, 2), out
    for secret in _secret_lines(pem):
        assert secret not in out, out
    assert "private key" in out and "prov log key" in out, out


@pytest.mark.parametrize("parse", [NoteVerifier.from_vkey, parse_cosigner_vkey])
def test_no_part_of_a_pem_key_is_echoed(parse: object) -> None:
    # a PEM body holding '+' splits into three parts: no part of it may be echoed either
    for _ in range(20):
        pem = _pem()
        with pytest.raises(LogError) as caught:
            parse(pem)  # type: ignore[operator]
        for secret in _secret_lines(pem):
            for i in range(0, len(secret) - 8, 8):
                assert secret[i : i + 12] not in str(caught.value), str(caught.value)
