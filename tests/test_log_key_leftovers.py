"""A `prov serve` killed while it wrote a new log key leaves a copy of the key under a
temporary name (``.NAME.<16 hex>.tmp``, 0600) beside the key file; the next start
removes such copies, and only those that are ours to remove: our exact name pattern, a
regular file of this user, older than `KEY_LEFTOVER_AGE_S`, and not locked by a live
writer. A real writer process killed mid-way (`generate_log_key` stopped at its link,
then SIGKILL), planted leftovers, and a real `prov serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from provenance.log.checkpoint import KEY_LEFTOVER_AGE_S, remove_key_leftovers
from provenance.server.rollback import remember_checkpoint
from tests.conftest import ROOT, start_server

#: a writer that stops at its hard link, the temporary copy written, synced and locked
_STOPPED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from provenance.log import checkpoint

    def stop(*args, **kwargs):
        print("written", flush=True)
        time.sleep(600)

    os.link = stop
    checkpoint.generate_log_key(Path(sys.argv[1]), "log.example/test")
    """
)


def _age(path: Path, seconds: float) -> None:
    """Set ``path``'s times ``seconds`` into the past (not following a link)."""
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_killed_writers_copy_is_kept_while_it_lives_and_removed_at_the_next_start(
    tmp_path: Path,
) -> None:
    db = tmp_path / "k.db"
    key = tmp_path / "k.db.logkey.pem"
    writer = subprocess.Popen(
        [sys.executable, "-c", _STOPPED_WRITER, str(key)],
        stdout=subprocess.PIPE,  # pipes: one short line, read here
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "written\n"
        (copy,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert copy.name.startswith(".k.db.logkey.pem.") and copy.stat().st_mode & 0o777 == 0o600
        _age(copy, 2 * KEY_LEFTOVER_AGE_S)
        # old enough, but its writer lives and holds its lock: kept
        assert remove_key_leftovers(key) == [] and copy.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert copy.exists() and not key.exists()  # what a killed start leaves

    # planted beside it: none of them ours to remove
    young = tmp_path / ".k.db.logkey.pem.0123456789abcdef.tmp"
    young.write_bytes(b"young")
    others = [
        tmp_path / ".k.db.logkey.pem.xyz.tmp",  # not 16 hex digits
        tmp_path / ".k.db.logkey.pem.0123456789abcdef.tmp.bak",
        tmp_path / ".other.pem.0123456789abcdef.tmp",  # another file's pattern
        tmp_path / "k.db.logkey.pem.0123456789abcdef.tmp",  # no leading dot
    ]
    for p in others:
        p.write_bytes(b"not ours")
        _age(p, 2 * KEY_LEFTOVER_AGE_S)
    target = tmp_path / "elsewhere.pem"
    target.write_bytes(b"a file a link points at")
    link = tmp_path / ".k.db.logkey.pem.fedcba9876543210.tmp"
    link.symlink_to(target)
    _age(target, 2 * KEY_LEFTOVER_AGE_S)
    _age(link, 2 * KEY_LEFTOVER_AGE_S)

    server = start_server(db)
    try:
        assert key.exists()  # the start made its key
    finally:
        assert server.stop() == 0
    assert not copy.exists()  # the killed writer's copy: removed
    assert f"removed {copy}" in server.stderr()
    assert young.exists() and link.is_symlink() and target.exists()
    assert all(p.exists() for p in others)


def test_the_checkpoint_memo_is_written_afresh_and_killed_starts_copies_removed(
    tmp_path: Path,
) -> None:
    """The remembered checkpoint (``KEY.checkpoint``) is written through a new file of a
    random name, created exclusively and never through a link: a link planted at the
    name an older version used (``.NAME.tmp<pid>``, predictable) is not written through
    (before: its target truncated and overwritten, and the link renamed over the memo).
    The copies killed starts left (one per process before, ``.NAME.tmp<pid>``; now
    ``.NAME.<16 hex>.tmp``) are removed by the next real `prov serve` once old, young
    ones and other names kept (before: kept for good)."""
    memo = tmp_path / "m.pem.checkpoint"
    target = tmp_path / "victim.txt"
    target.write_text("not the memo's")
    (tmp_path / f".m.pem.checkpoint.tmp{os.getpid()}").symlink_to(target)
    remember_checkpoint(memo, "a checkpoint\n")
    assert target.read_text() == "not the memo's"
    assert memo.read_text() == "a checkpoint\n" and not memo.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".m.pem")) == [
        f".m.pem.checkpoint.tmp{os.getpid()}"  # nothing of the write left
    ]

    db = tmp_path / "k.db"
    prefix = ".k.db.logkey.pem.checkpoint"
    old = [tmp_path / f"{prefix}.tmp4242", tmp_path / f"{prefix}.0123456789abcdef.tmp"]
    kept = [
        tmp_path / f"{prefix}.tmp4243",  # young
        tmp_path / f"{prefix}.tmpx1",  # not a pid
        tmp_path / ".k.db.logkey.pem.tmp4244",  # another file's
    ]
    for p in old + kept:
        p.write_text("a killed start's copy")
        _age(p, 0 if p == kept[0] else 2 * KEY_LEFTOVER_AGE_S)
    server = start_server(db)
    try:
        assert (tmp_path / "k.db.logkey.pem").exists()
    finally:
        assert server.stop() == 0
    err = server.stderr()
    assert not any(p.exists() for p in old), err
    assert all(f"removed {p}" in err for p in old), err
    assert all(p.exists() for p in kept)


def test_prov_witness_serve_removes_a_killed_starts_copy_of_its_key(tmp_path: Path) -> None:
    """`prov witness serve` writes its new key as `prov serve` writes a log key (a 0600
    temporary copy, then linked into place), so a start killed in between leaves a
    private-key copy beside the key; the next start removes it, with a warning, as `prov
    serve` does (before: kept for good, a second copy of the witness's private key)."""
    from provenance.log.checkpoint import generate_log_key
    from tests.conftest import witness_serve

    log_vkey = generate_log_key(tmp_path / "log.pem", "log.example/test").verifier_key()
    copy = tmp_path / ".witness.pem.0123456789abcdef.tmp"
    copy.write_bytes(b"a private key's copy")
    copy.chmod(0o600)
    _age(copy, 2 * KEY_LEFTOVER_AGE_S)
    stderr: list[str] = []
    with witness_serve(tmp_path, log_vkey, stderr):
        assert not copy.exists()
    assert f"removed {copy}" in stderr[0], stderr
