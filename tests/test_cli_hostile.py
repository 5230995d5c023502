"""The client side of issue 11's small items, through the real CLI: sizes checked
before reading, and usage errors (exit 2, a clean message) instead of tracebacks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from clients.device import DeviceHome
from tests.conftest import ADMIN_TOKEN, PASSPHRASE, ROOT, ServerProc, start_server
from tests.memory import prov_in_child


def _flat(text: str) -> str:
    """A usage error's text without the box Typer draws around it (and its line breaks)."""
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = start_server(tmp_path_factory.mktemp("srv") / "prov.db")
    yield s
    s.stop()


@pytest.fixture
def env(srv: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "device"
    for k, v in {
        "PROV_HOME": str(home),
        "PROV_PASSPHRASE": PASSPHRASE,
        "PROV_ADMIN_TOKEN": ADMIN_TOKEN,
        "PROV_SERVER": srv.address,
    }.items():
        monkeypatch.setenv(k, v)
    return home


def test_sign_checks_size_before_reading(env: Path, tmp_path: Path) -> None:
    """Measured in a child process (`tests.memory`: tracemalloc counts every thread)."""
    assert prov_main(["device", "init"]) == 0
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:  # starts like a JPEG; 300 MiB of holes (no disk used)
        f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
        f.truncate(300 << 20)
    rc, peak, err = prov_in_child(["sign", str(big)], tmp_path)
    assert rc == 1 and "limit for images" in err, err
    assert peak < 32 << 20, f"{peak} bytes allocated to refuse a 300 MiB image"
    assert DeviceHome(env).state().last_sequence == 0  # refused before a sequence was used


def test_ttl_negative_is_a_usage_error(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = prov_main(["admin", "enroll-token", "--ttl", "-5"])
    assert rc == 2 and "--ttl" in capsys.readouterr().err


def test_ttl_over_30_days_is_a_usage_error(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The server refuses more (`MAX_TOKEN_TTL`); said before any call. Before: 136 years."""
    rc = prov_main(["admin", "enroll-token", "--ttl", "2592001"])
    err = _flat(capsys.readouterr().err)
    assert rc == 2 and "--ttl" in err and "2592000" in err, err


@pytest.mark.parametrize(
    ("label", "words"),
    [("x" * 201, "201 characters; at most 200"), ("cam\x07", "control character (U+0007)")],
    ids=["201-characters", "bell"],
)
def test_an_enroll_token_label_the_server_refuses_is_a_usage_error(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    label: str, words: str,
) -> None:  # fmt: skip
    """`prov admin enroll-token --label` says what the server would refuse (INVALID_ARGUMENT,
    the same words) before calling it: here no server listens. Before: sent as given."""
    monkeypatch.setenv("PROV_SERVER", "127.0.0.1:1")
    rc = prov_main(["admin", "enroll-token", "--label", label])
    err = _flat(capsys.readouterr().err)
    assert rc == 2 and "--label" in err and words in err, err


def test_audit_state_in_missing_folder_is_a_usage_error(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "no" / "such" / "state.json"
    rc = prov_main(["log", "audit", "--state", str(state)])
    err = _flat(capsys.readouterr().err)
    assert rc == 2 and "does not exist" in err and "--state" in err, err
    assert not state.parent.exists()


def test_serve_db_in_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "missing" / "prov.db"
    run = subprocess.run(  # a child: a regression that serves must not hang the suite
        [sys.executable, "-m", "clients.cli", "serve", "--db", str(db), "--listen"]
        + ["127.0.0.1:0", "--no-detector"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    assert run.returncode == 2, run.stderr
    assert "--db" in run.stderr and "does not exist" in _flat(run.stderr)
    assert "Traceback" not in run.stderr and not db.parent.exists()
