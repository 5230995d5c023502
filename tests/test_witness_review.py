"""A second look at the witness as an attacker: checkpoints it must not cosign, keys it
must not silently drop, and a state folder lock nobody can jam it with. Real `prov
witness serve` processes on loopback ports, real keys, real files and locks."""

from __future__ import annotations

from pathlib import Path

from conftest import post_checkpoint, witness_serve

from provenance.core import merkle
from provenance.log.checkpoint import Checkpoint, generate_log_key


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
