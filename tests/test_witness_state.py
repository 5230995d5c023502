"""The witness's answers when its saved state for a log cannot be used: a damaged state
file, and a log whose key in the witness's configuration changed since it cosigned. Real
`prov witness serve` processes on loopback ports, real keys and state files."""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from provenance.core import merkle
from provenance.log.checkpoint import Checkpoint, generate_log_key
from provenance.witness import OWNER_FILE
from tests.conftest import post_checkpoint, witness_serve


def _get(url: str) -> tuple[int, str, str]:
    """(status, body, Content-Type) of GET ``url``, an HTTP error's too."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode(), r.headers["Content-Type"]
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers["Content-Type"]


def _replace(path: Path, kind: str) -> None:
    """Put a FIFO or a link to /dev/zero where the state file ``path`` was."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


#: Damages done to a saved state (its text -> the damaged text, or a function of its path
#: that replaces it) and what the log then says of it: cut short (json's own error), and a
#: key named twice (`loads_text`'s; before, json read the last value: a state the witness
#: never wrote was served as its own).
DAMAGES: dict[str, tuple[Callable[[str], str] | Callable[[Path], None], tuple[str, ...]]] = {
    # not a file of state: a FIFO held every request for that log in open() (and its lock
    # with it), /dev/zero was read until memory ran out, a huge file was read whole; now
    # each is refused unread (a state `_save` writes is a few KiB)
    "a FIFO": (lambda path: _replace(path, "fifo"), ("FIFO",)),
    "a link to /dev/zero": (lambda path: _replace(path, "zero"), ("is a device",)),
    "padded past 1 MiB": (lambda text: text + " " * (1 << 20), ("more than any state",)),
    "cut short": (lambda text: '{"origin": "log.test/dam', ("Expecting", "Unterminated")),
    "a key twice": (lambda text: text.replace("{", '{"size": 7,', 1), ("'size' 2 times",)),
    # sizes no checkpoint has: before, Checkpoint's LogError escaped (Starlette's bare 500
    # and a traceback per request), and int() read true as 1 and 1.5 as 1 (then 409)
    "a negative size": (lambda text: text.replace('"size": 0', '"size": -1'), ("negative",)),
    "a size past uint64": (lambda text: text.replace('"size": 0', f'"size": {2**64}'), ("uint64",)),
    "a size of true": (lambda text: text.replace('"size": 0', '"size": true'), ("whole number",)),
    "a fractional size": (lambda text: text.replace('"size": 0', '"size": 1.5'), ("whole number",)),
    "a size as text": (lambda text: text.replace('"size": 0', '"size": "0"'), ("whole number",)),
    # a note whose tree is not the one saved beside it: before, the monitor endpoint served
    # it, and for a state saved before cosignature lines were kept, cosigned it afresh: a
    # cosignature on a tree head this witness never checked
    # another log's state in this log's file (copied or restored to the wrong name): before,
    # add-checkpoint took it as this log's, so this log's checkpoints were judged against
    # another tree (a fork reported where the file was misplaced; a copy of a log's
    # size-0 state let this log roll back), and the monitor endpoint answered 404
    "another log's state": (
        lambda text: text.replace("log.test/damaged", "log.test/other"),
        ("another log",),
    ),
    "a note of another tree": (
        lambda text: text.replace("damaged\\n0\\n", "damaged\\n1\\n", 1),
        ("not the tree",),
    ),
    "a note of another tree, no line": (
        lambda text: json.dumps(
            {
                k: v.replace("damaged\n0\n", "damaged\n1\n") if k == "note" else v
                for k, v in json.loads(text).items()
                if k != "cosignature"
            }
        ),
        ("not the tree",),
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_state_file_is_a_plain_500_and_one_log_line(tmp_path: Path, damage: str) -> None:
    """A state file that is no JSON (a disk fault, a hand edit) made both endpoints raise
    LogError: Starlette's bare "Internal Server Error" to the client and a traceback in
    the log, per request. Now each answers 500 with one line saying the witness's state
    for that log is damaged (no path, no parser error), and the log names the file and
    the error once, without a traceback."""
    damaged, said = DAMAGES[damage]
    origin = "log.test/damaged"
    log = generate_log_key(tmp_path / "log.pem", origin)
    origin_hash = hashlib.sha256(origin.encode()).hexdigest()
    note = log.sign(Checkpoint(origin, 0, merkle.EMPTY_ROOT))
    stderr: list[str] = []
    with witness_serve(tmp_path, log.verifier_key(), stderr) as (url, _):
        assert post_checkpoint(url, f"old 0\n\n{note}")[0] == 200
        (state,) = (tmp_path / "wstate").glob("*.json")
        text = state.read_text()
        if damage in ("a FIFO", "a link to /dev/zero"):
            cast(Callable[[Path], None], damaged)(state)
        else:
            damaged_text = cast(Callable[[str], str], damaged)(text)
            assert damaged_text != text, "the damage changed nothing"
            state.write_text(damaged_text)
        answers = [
            _get(f"{url}/{origin_hash}/checkpoint"),
            _get(f"{url}/{origin_hash}/checkpoint"),
            (*post_checkpoint(url, f"old 0\n\n{note}"), "text/plain; charset=utf-8"),
        ]
    for status, body, ctype in answers:
        assert status == 500, (status, body)
        assert ctype == "text/plain; charset=utf-8", ctype
        assert body.endswith("\n") and body.count("\n") == 1, body
        assert "state for that log is damaged" in body, body
        assert str(state) not in body and state.name not in body and "JSON" not in body
    (log_text,) = stderr
    assert "Traceback" not in log_text, log_text
    assert log_text.count("witness state") == 1 and str(state) in log_text, log_text
    assert any(words in log_text for words in said), log_text


def test_a_log_whose_key_changed_gets_404_not_an_unsigned_checkpoint(tmp_path: Path) -> None:
    """The witness cosigned a log's checkpoint, then was restarted with a new key for
    that log (a key rotation). The monitor endpoint served the stored checkpoint with the
    log's signature lines filtered by the new key: none, so a checkpoint no verifier can
    check. tlog-witness: the answer "MUST include ... the cosignature from the log key(s)
    that the witness verified"; the witness holds no checkpoint of that log verified
    under its key for it, so 404, as before any cosignature."""
    origin = "log.test/rotated"
    old = generate_log_key(tmp_path / "old.pem", origin)
    new = generate_log_key(tmp_path / "new.pem", origin)
    origin_hash = hashlib.sha256(origin.encode()).hexdigest()
    with witness_serve(tmp_path, old.verifier_key()) as (url, _):
        note = old.sign(Checkpoint(origin, 0, merkle.EMPTY_ROOT))
        assert post_checkpoint(url, f"old 0\n\n{note}")[0] == 200
        status, body, _ = _get(f"{url}/{origin_hash}/checkpoint")
        assert status == 200 and f"\u2014 {origin} " in body, body
    with witness_serve(tmp_path, new.verifier_key()) as (url, _):
        status, body, _ = _get(f"{url}/{origin_hash}/checkpoint")
        assert status == 404, (status, body)
        assert "key" in body, body
        # the new key's checkpoint is then cosigned and served with its line
        note = new.sign(Checkpoint(origin, 0, merkle.EMPTY_ROOT))
        assert post_checkpoint(url, f"old 0\n\n{note}")[0] == 200
        status, body, _ = _get(f"{url}/{origin_hash}/checkpoint")
        assert status == 200 and f"\u2014 {origin} " in body, body


def test_a_state_that_cannot_be_saved_is_a_503_and_nothing_is_cosigned(tmp_path: Path) -> None:
    """Saving the state failed (a full disk; here a real EFBIG, the witness process's
    file size limit, RLIMIT_FSIZE, under the new state file's size): Starlette's bare 500
    and a traceback. Now 503 with Retry-After and one plain line, no cosignature, the
    state before kept (the next checkpoint from it is cosigned) and no temporary file
    left; the file and the error go to the log once."""
    origin = "log.test/full"
    log = generate_log_key(tmp_path / "log.pem", origin)
    origin_hash = hashlib.sha256(origin.encode()).hexdigest()
    empty = log.sign(Checkpoint(origin, 0, merkle.EMPTY_ROOT))
    leaf = merkle.leaf_hash(b"entry")
    big_body = Checkpoint(origin, 1, leaf).body().decode() + "".join(
        f"extension line {i} {'x' * 60}\n" for i in range(120)
    )  # opaque extension lines: an 9 kB note, its state file past the 4 KiB limit
    big = log.sign_text(big_body)
    small = log.sign(Checkpoint(origin, 1, leaf))
    stderr: list[str] = []
    with witness_serve(tmp_path, log.verifier_key(), stderr, max_file_bytes=4096) as (url, _):
        assert post_checkpoint(url, f"old 0\n\n{empty}")[0] == 200
        (state,) = (tmp_path / "wstate").glob("*.json")
        before = state.read_text()
        request = urllib.request.Request(
            f"{url}/add-checkpoint", data=f"old 0\n\n{big}".encode(), method="POST"
        )
        try:
            urllib.request.urlopen(request, timeout=30)
            raise AssertionError("the witness cosigned a checkpoint it did not save")
        except urllib.error.HTTPError as e:
            status, body, headers = e.code, e.read().decode(), e.headers
        assert state.read_text() == before  # the state before, kept
        assert sorted(p.name for p in (tmp_path / "wstate").iterdir()) == [
            ".lock",
            state.name,
            OWNER_FILE,
        ]
        assert _get(f"{url}/{origin_hash}/checkpoint")[1].startswith(f"{origin}\n0\n")
        # the state is still size 0: the next checkpoint from it is cosigned
        code, line = post_checkpoint(url, f"old 0\n\n{small}")
        assert code == 200 and line.startswith("\u2014 witness.test/w1 "), (code, line)
    assert status == 503, (status, body)
    assert headers["Retry-After"] == "60", dict(headers)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert body == (
        "this witness could not save its state (File too large), so it cosigned nothing;"
        " try again later\n"
    ), body
    assert "\u2014" not in body
    (log_text,) = stderr
    assert "Traceback" not in log_text, log_text
    assert log_text.count(f"witness state {state} could not be saved") == 1, log_text


def test_an_origin_hash_sharing_only_the_file_name_is_404_not_damage(tmp_path: Path) -> None:
    """A state file is named by the first 32 hex digits of its log's origin hash. A GET
    of an origin hash whose first 32 digits are a cosigned log's and whose last 32 are
    not (anyone can ask for one) was answered 404 before; the check that a state file
    holds its own log's state then took it as damage: 500 "state for that log is
    damaged" to the asker and an ERROR line naming the healthy file in the witness's
    log. It is the state of another log than the one asked for: 404, nothing logged, and
    the log's own hash is still served."""
    origin = "log.test/named"
    log = generate_log_key(tmp_path / "log.pem", origin)
    origin_hash = hashlib.sha256(origin.encode()).hexdigest()
    other = origin_hash[:32] + "".join("0" if c != "0" else "1" for c in origin_hash[32:])
    stderr: list[str] = []
    with witness_serve(tmp_path, log.verifier_key(), stderr) as (url, _):
        note = log.sign(Checkpoint(origin, 0, merkle.EMPTY_ROOT))
        assert post_checkpoint(url, f"old 0\n\n{note}")[0] == 200
        status, body, _ = _get(f"{url}/{other}/checkpoint")
        assert status == 404, (status, body)
        assert "never cosigned" in body, body
        status, body, _ = _get(f"{url}/{origin_hash}/checkpoint")
        assert status == 200 and f"\u2014 {origin} " in body, body
    assert not any("witness state" in text for text in stderr), stderr
