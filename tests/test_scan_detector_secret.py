"""`prov scan --detect`'s local crop secret (`clients.scan.cli._detector_secret`): made
in PROV_HOME only where the local detector can run (torch installed); without torch the
server's detector scores with the server's secret, and the scan neither makes nor reads
a file of its own (before, once the secret's code moved to the stdlib-only
`detector.secret`, its import no longer failed without torch: the file was made, and a
damaged one stopped a scan that never scores locally)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from clients.scan.cli import SCAN_SECRET_NAME, _detector_secret


def test_without_torch_no_secret_is_made_or_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROV_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails, as uninstalled
    damaged = tmp_path / SCAN_SECRET_NAME
    damaged.write_bytes(b"short")
    damaged.chmod(0o644)  # short and open to others: refused, were it read
    assert _detector_secret(True) == b""
    assert damaged.read_bytes() == b"short"


def test_with_torch_the_secret_is_made_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("PROV_HOME", str(tmp_path))
    secret = _detector_secret(True)
    assert len(secret) == 32
    made = tmp_path / SCAN_SECRET_NAME
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert _detector_secret(True) == secret
    assert _detector_secret(False) == b""
