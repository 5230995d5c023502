"""A second look at the witness as an attacker: checkpoints it must not cosign, keys it
must not silently drop, and a state folder lock nobody can jam it with. Real `prov
witness serve` processes on loopback ports, real keys, real files and locks."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.core import merkle
from provenance.core.errors import ConfigError
from provenance.log.checkpoint import Checkpoint, generate_log_key
from provenance.witness import LOCK_FILE, OWNER_FILE, Witness
from tests.conftest import ROOT, post_checkpoint, read_line, witness_serve
from tests.drain import drain, finish
from tests.stopping import ended


def _serve(tmp_path: Path, *log_keys: str) -> subprocess.Popen[str]:
    args = [a for k in log_keys for a in ("--log-key", k)]
    return drain(subprocess.Popen(
        [sys.executable, "-m", "clients.cli", "witness", "serve", "--key",
         str(tmp_path / "witness.pem"), *args, "--state", str(tmp_path / "wstate"),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    ))  # fmt: skip


def test_a_size_0_checkpoint_must_have_the_empty_root(tmp_path: Path) -> None:
    """The tree of size 0 has one root, SHA-256 of the empty string (RFC 9162 2.1.1).
    The witness cosigned a log-signed checkpoint of size 0 with any root and kept it as
    its state: a cosigned checkpoint no tree can have. It is now 422 (tlog-witness); the
    true empty tree is still cosigned."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/empty")
    with witness_serve(tmp_path, log.verifier_key()) as (url, _):
        bogus = log.sign(Checkpoint("log.test/empty", 0, bytes(32)))
        status, text = post_checkpoint(url, f"old 0\n\n{bogus}")
        assert status == 422 and "size 0 has the empty root" in text, (status, text)
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
    rc, _, err = ended(_serve(tmp_path, first, second), timeout=90)
    assert rc == 2, err
    said = " ".join(err.replace("│", " ").split())  # Typer's usage-error box
    assert "two different log keys for the log 'log.test/twice'" in said, err
    proc = _serve(tmp_path, first, first)
    try:
        assert read_line(proc, "witness on ").startswith("http://127.0.0.1:")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("kind", ["fifo", "folder", "symlink"])
def test_a_lock_file_that_is_not_a_regular_file_is_refused_at_start(
    tmp_path: Path, kind: str
) -> None:
    """The state folder's lock file was opened with open(path, "a"): a FIFO there made
    `prov witness serve` hang at start for ever (no reader), a symbolic link was
    followed (a file elsewhere created or appended to), a folder gave a bare 'Is a
    directory'. Each is now refused at start, exit 1, naming the lock file."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/lock").verifier_key()
    state = tmp_path / "wstate"
    state.mkdir()
    target = tmp_path / "elsewhere"
    if kind == "fifo":
        os.mkfifo(state / LOCK_FILE)
    elif kind == "folder":
        (state / LOCK_FILE).mkdir()
    else:
        (state / LOCK_FILE).symlink_to(target)
    rc, _, err = ended(_serve(tmp_path, log), timeout=90)
    assert rc == 1, err
    assert f"the witness lock file {state / LOCK_FILE}" in " ".join(err.split()), err
    assert not target.exists()


def test_a_lock_held_by_a_hung_process_is_answered_503_not_waited_on_for_ever(
    tmp_path: Path,
) -> None:
    """Another process of the same state folder that holds the lock and hangs (stopped,
    stuck on a dead disk) made every add-checkpoint wait for ever, each holding one of
    the server's worker threads: the witness was jammed. A request now waits at most
    `lock_wait_s`, then is answered 503 and saves nothing; once the holder dies (the
    kernel drops its flock) the witness cosigns again."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/hung")
    signer = generate_log_key(tmp_path / "w.pem", "witness.test/w1")
    state = tmp_path / "wstate"
    witness = Witness(signer, [log.verifier_key()], state, lock_wait_s=0.5)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, time\n"
         f"f = open({str(state / LOCK_FILE)!r}, 'a')\n"
         "fcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,  # pipes: one short line, read here
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        note = log.sign(Checkpoint("log.test/hung", 1, bytes(32)))
        answer = witness.add_checkpoint(f"old 0\n\n{note}".encode())
        assert answer.status == 503 and "stayed locked" in answer.body, answer
        assert witness.latest("log.test/hung") is None
    finally:
        holder.kill()
        holder.wait()
    answer = witness.add_checkpoint(f"old 0\n\n{note}".encode())
    assert answer.status == 200, answer
    latest = witness.latest("log.test/hung")
    assert latest is not None and latest.size == 1


def test_the_lock_file_is_checked_when_the_witness_is_made(tmp_path: Path) -> None:
    """The library refuses the same: a `Witness` over a folder whose lock file is a
    symbolic link raises ConfigError and creates nothing at the link's target."""
    signer = generate_log_key(tmp_path / "w.pem", "witness.test/w1")
    log = generate_log_key(tmp_path / "log.pem", "log.test/lib").verifier_key()
    state = tmp_path / "wstate"
    state.mkdir()
    (state / LOCK_FILE).symlink_to(tmp_path / "target")
    with pytest.raises(ConfigError, match="is a symbolic link"):
        Witness(signer, [log], state)
    assert not (tmp_path / "target").exists()


def test_two_witness_servers_of_one_state_folder_share_one_state(tmp_path: Path) -> None:
    """Two `prov witness serve` processes of one --state folder (two ports, or a restart
    overlapping the old process) must act as one witness: what one cosigned, the other
    reads from the folder before it answers, so a client still at the old size is
    refused by both (409 with the size cosigned), and the tree grows through either."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/two")
    tree = merkle.MemoryTree()

    def grow(n: int) -> str:
        for _ in range(n):
            tree.append(os.urandom(16))
        return log.sign(Checkpoint("log.test/two", tree.size, tree.root()))

    def body(old: int, note: str) -> str:
        proof = merkle.consistency_proof(old, tree.size, tree.get_nodes) if old else []
        return "\n".join([f"old {old}", *(base64.b64encode(h).decode() for h in proof)]) + (
            f"\n\n{note}"
        )

    with (
        witness_serve(tmp_path, log.verifier_key()) as (first, key),
        witness_serve(tmp_path, log.verifier_key()) as (second, same_key),
    ):
        assert first != second and key == same_key
        note = grow(3)
        assert post_checkpoint(first, body(0, note))[0] == 200
        assert post_checkpoint(second, body(0, note)) == (409, "3\n")
        note = grow(2)
        assert post_checkpoint(second, body(3, note))[0] == 200
        assert post_checkpoint(first, body(3, note)) == (409, "5\n")
        note = grow(1)
        assert post_checkpoint(first, body(5, note))[0] == 200


def test_a_second_witness_of_another_key_is_refused_the_state_folder(tmp_path: Path) -> None:
    """Two `prov witness serve` of one --state folder act as one witness (above); a
    witness of another key or name given that folder started silently and took the other
    witness's state for its own (a reviewer's finding): it answered 409 with sizes it never
    checked, then cosigned on from there, so a quorum of the two was one view, not two. It
    is now refused at start, exit 1, naming the witness the folder belongs to, whether that
    one is running or not; the same witness still starts on it."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/own").verifier_key()
    with witness_serve(tmp_path, log) as (_, first_key):
        other = subprocess.Popen(
            [sys.executable, "-m", "clients.cli", "witness", "serve", "--key",
             str(tmp_path / "other.pem"), "--log-key", log, "--state", str(tmp_path / "wstate"),
             "--name", "witness.test/w2", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        out, err = finish(drain(other), timeout=90)
        said = " ".join(err.split())
        assert other.returncode == 1, (out, err)
        assert "witness on" not in out and "Traceback" not in err, err
        assert f"{tmp_path / 'wstate'} holds the state of the witness {first_key}" in said, err
        assert "its own --state" in said, err
    with witness_serve(tmp_path, log) as (url, key):  # the folder's own witness, again
        assert url.startswith("http://127.0.0.1:") and key == first_key


def test_the_owner_file_is_written_then_its_folder_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`OWNER_FILE` names the witness a state folder belongs to: its rename is durable
    only once the folder is fsynced (after a power cut a folder without it is claimed by
    whichever witness starts first). The real `os.fsync` runs; only recorded."""
    signer = generate_log_key(tmp_path / "w.pem", "witness.test/w1")
    log = generate_log_key(tmp_path / "log.pem", "log.test/lib").verifier_key()
    state = tmp_path / "wstate"
    synced: list[bool] = []  # each fsync of the state folder: was the owner file in it?
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode) and os.path.samestat(st, os.stat(state)):
            synced.append((state / OWNER_FILE).exists())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    witness = Witness(signer, [log], state)
    witness.close()
    assert (state / OWNER_FILE).read_text() == witness.vkey() + "\n"
    assert True in synced, synced


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty"),
        (b"\n  \n", "is empty"),
        (b"\xff\xfe\x00garbage", "is not a witness's verifier key"),
        (b"garbage\n", "is not a witness's verifier key"),
    ],
)
def test_an_empty_or_garbled_owner_file_is_said_so(
    tmp_path: Path, content: bytes, said: str
) -> None:
    """A `OWNER_FILE` emptied or garbled by hand was read as the name of another
    witness: "the state of the witness  (named in ...)". It is said for what it is, with
    what to do."""
    signer = generate_log_key(tmp_path / "w.pem", "witness.test/w1")
    log = generate_log_key(tmp_path / "log.pem", "log.test/lib").verifier_key()
    state = tmp_path / "wstate"
    state.mkdir()
    (state / OWNER_FILE).write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        Witness(signer, [log], state)
    text = str(caught.value)
    assert f"{state / OWNER_FILE} {said}" in text, text
    assert "remove the file" in text and "--state" in text, text
    assert (state / OWNER_FILE).read_bytes() == content  # left for the operator to judge
