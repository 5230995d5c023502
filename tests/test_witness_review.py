"""A second look at the witness as an attacker: checkpoints it must not cosign, keys it
must not silently drop, and a state folder lock nobody can jam it with. Real `prov
witness serve` processes on loopback ports, real keys, real files and locks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import ROOT, post_checkpoint, read_line, witness_serve

from provenance.core import merkle
from provenance.log.checkpoint import Checkpoint, generate_log_key


def _serve(tmp_path: Path, *log_keys: str) -> subprocess.Popen[str]:
    args = [a for k in log_keys for a in ("--log-key", k)]
    return subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "witness", "serve", "--key",
         str(tmp_path / "witness.pem"), *args, "--state", str(tmp_path / "wstate"),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def test_a_size_0_checkpoint_must_have_the_empty_root(tmp_path: Path) -> None:
    """The tree of size 0 has one root, SHA-256 of the empty string (RFC 9162 2.1.1).
    The witness cosigned a log-signed checkpoint of size 0 with any root and kept it as
    its state: a cosigned checkpoint no tree can have. It is now 400, malformed; the
    true empty tree is still cosigned."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/empty")
    with witness_serve(tmp_path, log.verifier_key()) as (url, _):
        bogus = log.sign(Checkpoint("log.test/empty", 0, bytes(32)))
        status, text = post_checkpoint(url, f"old 0\n\n{bogus}")
        assert status == 400 and "size 0 has the empty root" in text, (status, text)
        assert not list((tmp_path / "wstate").glob("*.json"))  # nothing saved
        empty = log.sign(Checkpoint("log.test/empty", 0, merkle.EMPTY_ROOT))
        status, text = post_checkpoint(url, f"old 0\n\n{empty}")
        assert status == 200 and text.startswith("— witness.test/w1 "), (status, text)


def test_two_different_keys_for_one_log_are_a_usage_error(tmp_path: Path) -> None:
    """A second --log-key of the same origin silently replaced the first, so the
    witness checked a key its operator may not have meant (a log's old key after a
    rotation, or a pasted wrong one). Two different keys of one log are now a usage
    error naming the log; the same key twice is still fine."""
    first = generate_log_key(tmp_path / "a.pem", "log.test/twice").verifier_key()
    second = generate_log_key(tmp_path / "b.pem", "log.test/twice").verifier_key()
    proc = _serve(tmp_path, first, second)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, err
    said = " ".join(err.replace("│", " ").split())  # Typer's usage-error box
    assert "two different log keys for the log 'log.test/twice'" in said, err
    proc = _serve(tmp_path, first, first)
    try:
        assert read_line(proc, "witness on ").startswith("http://127.0.0.1:")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
