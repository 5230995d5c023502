"""Signed checkpoints: C2SP note format, interoperability with Go's sumdb/note and
sum.golang.org, tampering, and the log key file."""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import os
import re
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import main as prov_main
from provenance.core import merkle
from provenance.core.errors import ConfigError, KeyMaterialError, LogError, SignatureError
from provenance.log.checkpoint import (
    KEY_LEFTOVER_AGE_S,
    MAX_SIGNATURES,
    Checkpoint,
    LogSigner,
    NoteVerifier,
    generate_log_key,
    load_log_signer,
    note_signers,
    open_checkpoint,
    parse_tree_size,
    remove_key_leftovers,
)

# golang.org/x/mod/sumdb/note: the example in the package documentation and note_test.go.
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_NOTE = (
    PETER_TEXT + "\n— PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# The Go checksum database's published key (cmd/go/internal/modfetch/key.go) and a
# checkpoint it served at https://sum.golang.org/latest on 2024-09-23.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n30055305\nmXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n\n"
    "— sum.golang.org "
    "Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFcAAlWFJJYle3EJlDCrQ+y3A8=\n"
)

# The example body of c2sp.org/tlog-checkpoint.
SPEC_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

ORIGIN = "provenance.example/log"
WHEN = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def _root() -> bytes:
    tree = merkle.MemoryTree()
    for i in range(5):
        tree.append(b"claim %d" % i)
    return tree.root()


def _checkpoint(**changes: Any) -> Checkpoint:
    fields: dict[str, Any] = {
        "origin": ORIGIN,
        "size": 5,
        "root_hash": _root(),
        "timestamp": WHEN,
    }
    fields.update(changes)
    return Checkpoint(**fields)


@pytest.fixture(scope="module")
def signer() -> LogSigner:
    return LogSigner(Ed25519PrivateKey.generate(), ORIGIN)


def _peter_signer() -> LogSigner:
    material = base64.b64decode(PETER_SKEY.split("+", 4)[4])
    assert material[0] == 0x01
    return LogSigner(Ed25519PrivateKey.from_private_bytes(material[1:]), "PeterNeumann")


# --- interoperability ----------------------------------------------------------------


def test_go_note_vector_is_reproduced_byte_for_byte() -> None:
    peter = _peter_signer()
    assert peter.verifier_key() == PETER_VKEY
    assert peter.sign_text(PETER_TEXT) == PETER_NOTE


def test_go_note_vector_opens_with_its_verifier_key() -> None:
    verifier = NoteVerifier.from_vkey(PETER_VKEY)
    assert verifier.name == "PeterNeumann" and verifier.key_id.hex() == "c74f20a3"
    assert verifier.open(PETER_NOTE) == PETER_TEXT
    with pytest.raises(SignatureError):
        verifier.open(PETER_NOTE.replace("cryptography", "cryptographY"))


def test_published_sum_golang_org_checkpoint_verifies() -> None:
    verifier = NoteVerifier.from_vkey(SUMDB_VKEY)
    checkpoint = open_checkpoint(SUMDB_NOTE, verifier, origin="go.sum database tree")
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == 30055305
    assert checkpoint.root_hash == base64.b64decode("mXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=")
    assert checkpoint.timestamp is None
    assert checkpoint.body().decode() == SUMDB_NOTE[: SUMDB_NOTE.index("\n\n") + 1]
    # By default the origin must be the key name, which the Go checksum database's is not.
    with pytest.raises(LogError, match="origin"):
        open_checkpoint(SUMDB_NOTE, verifier)
    with pytest.raises(SignatureError):
        open_checkpoint(
            SUMDB_NOTE.replace("30055305", "30055306"), verifier, origin="go.sum database tree"
        )


def test_spec_example_body_parses_and_round_trips() -> None:
    checkpoint = Checkpoint.parse_body(SPEC_BODY)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.root_hash.hex() == (
        "0ac5186a91863e8e1d90c808014aa89bf5da8e3ee1d9f07630f0378f68f1ab62"
    )
    assert checkpoint.body().decode() == SPEC_BODY


# --- our checkpoints -------------------------------------------------------------------


def test_body_layout_with_time_line() -> None:
    root = _root()
    expected = f"{ORIGIN}\n5\n{base64.b64encode(root).decode()}\ntime 2026-11-29T12:00:00Z\n"
    assert _checkpoint().body() == expected.encode()
    later = _checkpoint(timestamp=WHEN + timedelta(microseconds=1500))
    assert later.body().decode().endswith("\ntime 2026-11-29T12:00:00.001500Z\n")
    assert Checkpoint.parse_body(later.body().decode()) == later
    assert _checkpoint(timestamp=None).body().count(b"\n") == 3


def test_sign_and_open_round_trip(signer: LogSigner) -> None:
    checkpoint = _checkpoint()
    note = signer.sign(checkpoint)
    text, _, signature_line = note.rpartition("\n\n")
    assert text + "\n" == checkpoint.body().decode()
    assert signature_line.startswith(f"— {ORIGIN} ") and signature_line.endswith("\n")
    blob = base64.b64decode(signature_line.split(" ")[2])
    expected_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + signer.public_key).digest()[:4]
    assert blob[:4] == expected_id == signer.key_id and len(blob) == 68

    vkey = signer.verifier_key()
    name, key_hash, material = vkey.split("+", 2)
    assert (name, key_hash) == (ORIGIN, expected_id.hex())
    assert base64.b64decode(material) == b"\x01" + signer.public_key
    assert open_checkpoint(note, NoteVerifier.from_vkey(vkey)) == checkpoint


def test_timestamps_must_be_utc(signer: LogSigner) -> None:
    tokyo = WHEN.astimezone(timezone(timedelta(hours=9)))
    with pytest.raises(LogError, match="UTC"):
        _checkpoint(timestamp=tokyo)
    with pytest.raises(LogError, match="UTC"):
        _checkpoint(timestamp=datetime(2026, 11, 29, 12, 0, 0))
    opened = open_checkpoint(
        signer.sign(_checkpoint()), NoteVerifier.from_vkey(signer.verifier_key())
    )
    assert opened.timestamp == tokyo


def test_tampered_body_fails(signer: LogSigner) -> None:
    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    note = signer.sign(_checkpoint())
    for old, new in [
        ("\n5\n", "\n6\n"),
        ("12:00:00Z", "12:00:01Z"),
        (ORIGIN + "\n", ORIGIN + "x\n"),
    ]:
        assert old in note
        with pytest.raises(SignatureError, match="does not verify"):
            open_checkpoint(note.replace(old, new, 1), verifier)


def test_wrong_key_fails(signer: LogSigner) -> None:
    impostor = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    with pytest.raises(SignatureError, match="no signature"):
        open_checkpoint(impostor.sign(_checkpoint()), NoteVerifier.from_vkey(signer.verifier_key()))


def test_truncated_signature_fails(signer: LogSigner) -> None:
    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    note = signer.sign(_checkpoint())
    head, blob = note[:-1].rsplit(" ", 1)
    raw = base64.b64decode(blob)
    short = head + " " + base64.b64encode(raw[:-1]).decode() + "\n"
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.open(short)
    with pytest.raises(LogError, match="base64"):
        verifier.open(head + " " + blob[:-3] + "\n")
    with pytest.raises(LogError, match="too short"):
        verifier.open(head + " " + base64.b64encode(raw[:4]).decode() + "\n")


def test_a_signature_line_repeated_is_one_signature(signer: LogSigner) -> None:
    """The log's line repeated up to the note limit still opens (it is checked once: see
    bench/bench_note_open.py); a second line of the log's key that differs from the
    first must still verify, or the note is refused; over the limit, it is malformed."""
    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    note = signer.sign(_checkpoint())
    line = note.rpartition("\n\n")[2]
    assert open_checkpoint(note + line * (MAX_SIGNATURES - 1), verifier) == _checkpoint()
    head, blob = line[:-1].rsplit(" ", 1)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    other = f"{head} {base64.b64encode(bytes(raw)).decode()}\n"
    for bad in (note + other, note + line + other + line):
        with pytest.raises(SignatureError, match="does not verify"):
            open_checkpoint(bad, verifier)
    with pytest.raises(LogError, match="more than 100"):
        open_checkpoint(note + line * MAX_SIGNATURES, verifier)


def test_other_signatures_are_ignored(signer: LogSigner) -> None:
    witness = LogSigner(Ed25519PrivateKey.generate(), "witness.example/w1")
    note = signer.sign(_checkpoint())
    cosigned = note + witness.sign_text(_checkpoint().body().decode()).rpartition("\n\n")[2]
    assert cosigned.count("\n— ") == 2
    checkpoint = open_checkpoint(cosigned, NoteVerifier.from_vkey(signer.verifier_key()))
    assert checkpoint == _checkpoint()
    assert (
        NoteVerifier.from_vkey(witness.verifier_key()).open(cosigned)
        == _checkpoint().body().decode()
    )
    # A signature by an unknown key, even an invalid one, does not matter ...
    stranger = "— stranger.example " + base64.b64encode(b"\x00" * 68).decode() + "\n"
    assert open_checkpoint(note + stranger, NoteVerifier.from_vkey(signer.verifier_key()))
    # ... but a failing one that claims to be by the verifier's key rejects the note.
    forged = f"— {ORIGIN} " + base64.b64encode(signer.key_id + b"\x00" * 64).decode() + "\n"
    with pytest.raises(SignatureError, match="does not verify"):
        open_checkpoint(note + forged, NoteVerifier.from_vkey(signer.verifier_key()))


@pytest.mark.parametrize(
    "note",
    [
        "no blank line\n— a b\n",
        "text\n\n— name AAAAAAA=",
        "text\n\n- name AAAAAAAA\n",
        "text\n\n— name\n",
        "text\n\n— na+me AAAAAAAA\n",
        "text\x07\n\n— name AAAAAAAA\n",
        "text\n\n" + "— name AAAAAAAA\n" * 101,
    ],
    ids=[
        "no-blank-line",
        "no-final-newline",
        "not-em-dash",
        "no-signature",
        "plus-in-name",
        "control-char",
        "too-many-signatures",
    ],
)
def test_malformed_notes_are_log_errors(note: str) -> None:
    with pytest.raises(LogError) as caught:
        NoteVerifier.from_vkey(PETER_VKEY).open(note)
    assert not isinstance(caught.value, SignatureError)


@pytest.mark.parametrize(
    "body",
    [
        "origin\n5\n",
        "origin\n05\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n-5\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n5\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "origin\n5\n" + base64.b64encode(bytes(32)).decode().rstrip("=") + "\n",
        "origin\n5\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
        "origin\n5\n" + base64.b64encode(bytes(32)).decode() + "\nextra line\n",
        "origin\n5\n"
        + base64.b64encode(bytes(32)).decode()
        + "\ntime 2026-11-29T12:00:00.000000Z\n",
        "origin\n5\n" + base64.b64encode(bytes(32)).decode() + "\ntime 2026-11-29 12:00:00Z\n",
        "origin\n5\n" + base64.b64encode(bytes(32)).decode() + "\ntime 2026-02-30T12:00:00Z\n",
        "origin\n5\n" + base64.b64encode(bytes(32)).decode(),
    ],
    ids=[
        "short",
        "leading-zero",
        "negative",
        "root-31-bytes",
        "unpadded-root",
        "empty-line",
        "unknown-extension",
        "non-canonical-time",
        "bad-time",
        "impossible-date",
        "no-newline",
    ],
)
def test_malformed_bodies_are_log_errors(body: str) -> None:
    with pytest.raises(LogError):
        Checkpoint.parse_body(body)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpjZHVjUDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
    ids=["two-parts", "wrong-id", "upper-hex", "wrong-type", "short-key", "space", "no-name"],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(LogError):
        NoteVerifier.from_vkey(vkey)


def test_invalid_checkpoints_and_names_are_refused(signer: LogSigner) -> None:
    with pytest.raises(LogError):
        _checkpoint(size=-1)
    with pytest.raises(LogError):
        _checkpoint(root_hash=bytes(31))
    with pytest.raises(LogError):
        _checkpoint(origin="two\nlines")
    with pytest.raises(LogError, match="key name"):
        signer.sign(_checkpoint(origin="another.example/log"))
    with pytest.raises(LogError, match="note key name"):
        LogSigner(Ed25519PrivateKey.generate(), "has space")


# --- the key file ----------------------------------------------------------------------


def test_generated_key_file_is_private_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    created = generate_log_key(path, ORIGIN)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    loaded = load_log_signer(path, ORIGIN)
    assert loaded.verifier_key() == created.verifier_key()
    note = loaded.sign(_checkpoint())
    assert open_checkpoint(note, NoteVerifier.from_vkey(created.verifier_key())) == _checkpoint()
    with pytest.raises(ConfigError, match="already exists"):
        generate_log_key(path, ORIGIN)
    assert load_log_signer(path, ORIGIN).verifier_key() == created.verifier_key()


@pytest.mark.parametrize("code", [errno.EPERM, errno.EOPNOTSUPP])
def test_a_key_is_made_where_the_file_system_has_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """FAT and CIFS refuse link(2) (EPERM): the key is written in place, still created
    exclusively and private (before: "cannot create log key file ...: Operation not
    permitted", so `prov serve` could not start there). The refusal is the kernel's,
    stood in for by os.link raising it: no such file system can be mounted unprivileged."""

    def no_link(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "link", no_link)
    path = tmp_path / "log.key"
    created = generate_log_key(path, ORIGIN)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_log_signer(path, ORIGIN).verifier_key() == created.verifier_key()
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]  # no temporary file left
    with pytest.raises(ConfigError, match="already exists"):
        generate_log_key(path, ORIGIN)
    assert load_log_signer(path, ORIGIN).verifier_key() == created.verifier_key()


def test_a_key_link_refused_otherwise_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link refused for another reason (a full disk) is not retried in place."""

    def full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", full)
    with pytest.raises(ConfigError, match="No space left"):
        generate_log_key(tmp_path / "log.key", ORIGIN)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660])
def test_key_file_open_to_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "log.key"
    generate_log_key(path, ORIGIN)
    path.chmod(mode)
    with pytest.raises(LogError, match="chmod 600"):
        load_log_signer(path, ORIGIN)


def test_bad_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_log_signer(tmp_path / "missing.key", ORIGIN)
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyMaterialError):
        load_log_signer(garbage, ORIGIN)
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_key.chmod(0o600)
    with pytest.raises(KeyMaterialError, match="Ed25519"):
        load_log_signer(ec_key, ORIGIN)


def test_a_key_file_that_is_a_folder_is_named_not_its_descriptor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov serve --log-key DIR` said "error: Is a directory: 12": os.fdopen's error,
    naming the descriptor it was given. Now the file is checked before, as a FIFO is: a
    ConfigError naming the path and what it is; the command refuses a folder as a usage
    error (exit 2) before it opens anything."""
    folder = tmp_path / "keys"
    folder.mkdir()
    with pytest.raises(ConfigError, match=f"log key file {folder} is a folder, not a regular"):
        load_log_signer(folder, ORIGIN)
    capsys.readouterr()
    serve = ["serve", "--db", ":memory:", "--log-key", str(folder), "--listen", "127.0.0.1:0"]
    assert prov_main([*serve, "--no-detector"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{folder} is a folder" in err and "Is a directory" not in err, err


# --- leftovers of a killed key writer --------------------------------------------------


def _planted(path: Path, mtime: int = 1_000_000_000, mode: int = 0o600) -> Path:
    """A file at ``path`` last changed at ``mtime`` (whole seconds, so ages are exact)."""
    path.write_bytes(b"a private key")
    path.chmod(mode)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
    return path


def test_leftover_copies_of_the_key_are_removed_only_when_old_unlocked_and_ours(
    tmp_path: Path,
) -> None:
    """`remove_key_leftovers` removes exactly the old, unlocked, regular files of this user
    named like `generate_log_key`'s temporary copy, and says which; it leaves every
    other name, a young copy (by the clock it is given), a link, a directory, a FIFO, a
    copy a live writer locks and (as root) another user's copy."""
    key = tmp_path / "k.db.logkey.pem"
    then = 1_000_000_000
    old = _planted(tmp_path / ".k.db.logkey.pem.0123456789abcdef.tmp", then)
    kept = [
        _planted(tmp_path / name, then)
        for name in (
            ".k.db.logkey.pem.0123456789abcde.tmp",  # 15 hex digits
            ".k.db.logkey.pem.0123456789abcdef0.tmp",  # 17
            ".k.db.logkey.pem.0123456789ABCDEF.tmp",  # not lowercase
            ".k.db.logkey.pem.0123456789abcdef.tmp.bak",
            "x.k.db.logkey.pem.0123456789abcdef.tmp",
            "k.db.logkey.pem.0123456789abcdef.tmp",  # no leading dot
            ".kXdbXlogkeyXpem.0123456789abcdef.tmp",  # the key's dots are literal
            ".other.pem.0123456789abcdef.tmp",
            ".k.db.logkey.pem.checkpoint.0123456789abcdef.tmp",
        )
    ]
    (tmp_path / ".k.db.logkey.pem.00000000000000d1.tmp").mkdir()
    os.mkfifo(tmp_path / ".k.db.logkey.pem.00000000000000f1.tmp")
    target = _planted(tmp_path / "target.pem", then)
    (tmp_path / ".k.db.logkey.pem.00000000000000e1.tmp").symlink_to(target)
    everything = sorted(p.name for p in tmp_path.iterdir())  # before `other`

    # young by the clock given: one second short of the age
    assert remove_key_leftovers(key, now=then + KEY_LEFTOVER_AGE_S - 1) == []
    # a live writer holds its lock (flock: per open file, so in this process too); the
    # copies after it are still looked at
    other = _planted(tmp_path / ".k.db.logkey.pem.2222222222222222.tmp", then)
    with open(old, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert remove_key_leftovers(key, now=then + KEY_LEFTOVER_AGE_S) == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == everything
    # exactly the age: removed, and nothing else
    assert remove_key_leftovers(key, now=then + KEY_LEFTOVER_AGE_S) == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(everything) - {old.name})
    assert all(p.read_bytes() == b"a private key" for p in [*kept, target])
    # without a clock, now: an old copy goes, a young one stays
    old = _planted(old, then)
    young = _planted(tmp_path / ".k.db.logkey.pem.1111111111111111.tmp", int(time.time()))
    assert remove_key_leftovers(key) == [old]
    assert young.exists()
    if os.geteuid() == 0:  # only root can give a file away
        os.chown(_planted(old, then), 4242, 4242)
        assert remove_key_leftovers(key, now=then + KEY_LEFTOVER_AGE_S) == []
        assert old.exists()
    # another pattern replaces the default one
    memo = _planted(tmp_path / ".k.db.logkey.pem.checkpoint.tmp4242", then)
    removed = remove_key_leftovers(
        key, now=then + KEY_LEFTOVER_AGE_S, names=r"\.k\.db\.logkey\.pem\.checkpoint\.tmp[0-9]+"
    )
    assert removed == [memo] and not memo.exists() and young.exists()
    # a directory that cannot be listed has no leftovers
    assert remove_key_leftovers(tmp_path / "missing" / "k.pem") == []


@pytest.mark.parametrize(
    "kind",
    ["young", "directory", "fifo", "link", "locked", "vanished", "replaced"]
    # another user's copy: only root can give a file away (CI runs as root)
    + (["stranger"] if os.geteuid() == 0 else []),
)
def test_a_leftover_left_alone_does_not_stop_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """Whatever is left alone (a young copy, a directory, a FIFO, a link, a locked copy,
    another user's, one gone or replaced between its checks and its removal: a race
    with another process, stood in for by os.fstat doing it), the copies listed after it
    are still removed. Each case is run with the two names swapped, so that the one left
    alone is listed first in one of the two runs, whatever order the directory lists."""
    then = 1_000_000_000
    now = then + KEY_LEFTOVER_AGE_S
    fstat = os.fstat
    names = (".k.pem.aaaaaaaaaaaaaaaa.tmp", ".k.pem.bbbbbbbbbbbbbbbb.tmp")
    for run, (alone_name, free_name) in enumerate((names, names[::-1])):
        folder = tmp_path / str(run)
        folder.mkdir()
        alone, free = folder / alone_name, _planted(folder / free_name, then)
        if kind == "young":
            _planted(alone, int(now))
        elif kind == "directory":
            alone.mkdir()
        elif kind == "fifo":
            os.mkfifo(alone)
        elif kind == "link":
            alone.symlink_to(_planted(folder / "target", then))
        elif kind == "stranger":
            os.chown(_planted(alone, then), 4242, 4242)
        else:
            _planted(alone, then)
        inode = alone.lstat().st_ino

        def racing(fd: int, inode: int = inode, alone: Path = alone) -> os.stat_result:
            st = fstat(fd)
            if st.st_ino == inode and kind == "vanished":
                alone.unlink()
            elif st.st_ino == inode and kind == "replaced":
                _planted(alone.with_name("new"), then).rename(alone)
            return st

        monkeypatch.setattr(os, "fstat", racing)
        with open(alone, "rb") if kind == "locked" else open(free, "rb") as held:
            if kind == "locked":
                fcntl.flock(held, fcntl.LOCK_EX)
            assert remove_key_leftovers(folder / "k.pem", now=now) == [free], kind
        assert (kind == "vanished") is not os.path.lexists(alone)


def test_the_key_writers_copy_is_named_for_remove_key_leftovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary copy `generate_log_key` writes (0600, the whole key) has the name
    `remove_key_leftovers` removes once its writer is gone: a killed writer's copy does
    not stay for good."""
    path = tmp_path / "log.key"
    seen: list[tuple[Path, int, bytes]] = []

    def full(src: str | Path, dst: str | Path) -> None:
        seen.append((Path(src), os.stat(src).st_mode & 0o777, Path(src).read_bytes()))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", full)
    with pytest.raises(
        ConfigError, match=f"^cannot create log key file {re.escape(str(path))}: No space left"
    ):
        generate_log_key(path, ORIGIN)
    ((copy, mode, pem),) = seen
    assert copy.parent == tmp_path and mode == 0o600
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert list(tmp_path.iterdir()) == []
    _planted(copy, 1_000_000_000)  # what a writer killed at its link leaves
    assert remove_key_leftovers(path, now=1_000_000_000 + KEY_LEFTOVER_AGE_S) == [copy]


def test_a_key_is_made_though_its_copy_vanished_and_not_over_a_racers_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A temporary copy removed by someone else once linked does not fail the new key;
    a key file that another process made between the check and the link is kept, and
    the refusal says so."""
    link = os.link
    path = tmp_path / "log.key"

    def link_then_lose_copy(src: str | Path, dst: str | Path) -> None:
        link(src, dst)
        os.unlink(src)

    monkeypatch.setattr(os, "link", link_then_lose_copy)
    made = generate_log_key(path, ORIGIN)
    assert load_log_signer(path, ORIGIN).verifier_key() == made.verifier_key()
    assert [p.name for p in tmp_path.iterdir()] == ["log.key"]

    racer = tmp_path / "raced.key"

    def racer_first(src: str | Path, dst: str | Path) -> None:
        Path(dst).write_bytes(b"the racer's key")
        link(src, dst)

    monkeypatch.setattr(os, "link", racer_first)
    with pytest.raises(
        ConfigError,
        match=f"^log key file {re.escape(str(racer))} already exists; not overwriting it$",
    ):
        generate_log_key(racer, ORIGIN)
    assert racer.read_bytes() == b"the racer's key"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.key", "raced.key"]


def test_note_signers_names_each_signature_line(signer: LogSigner) -> None:
    witness = LogSigner(Ed25519PrivateKey.generate(), "witness.example/w1")
    note = signer.sign(_checkpoint())
    cosigned = note + witness.sign_text(_checkpoint().body().decode()).rpartition("\n\n")[2]
    assert note_signers(cosigned) == [
        f"{ORIGIN}+{signer.key_id.hex()}",
        f"witness.example/w1+{witness.key_id.hex()}",
    ]
    with pytest.raises(LogError, match="does not start with"):
        note_signers(note + "not a signature\n")


def test_opaque_extensions_are_taken_when_asked(signer: LogSigner) -> None:
    body = _checkpoint(timestamp=None).body().decode() + "an extension\nanother one\n"
    note = signer.sign_text(body)
    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    assert open_checkpoint(note, verifier, opaque_extensions=True) == _checkpoint(timestamp=None)
    with pytest.raises(LogError, match="^unknown checkpoint extension lines"):
        open_checkpoint(note, verifier)


def test_sizes_up_to_a_uint64_are_taken(signer: LogSigner) -> None:
    top = 2**64 - 1
    assert parse_tree_size(str(top)) == top
    assert _checkpoint(size=top).size == top
    assert Checkpoint.parse_body(_checkpoint(size=top).body().decode()).size == top
    with pytest.raises(
        LogError, match=f"^old size {top + 1} is more than a uint64 holds \\(at most 2\\^64 - 1\\)$"
    ):
        parse_tree_size(str(top + 1), "old size")
    with pytest.raises(
        LogError,
        match=f"^checkpoint size {top + 1} is more than a uint64 \\(at most 2\\^64 - 1\\)$",
    ):
        _checkpoint(size=top + 1)
    body = _checkpoint().body().decode().replace("\n5\n", f"\n{top + 1}\n")
    with pytest.raises(LogError, match=f"^checkpoint size {top + 1} is more than a uint64 holds"):
        Checkpoint.parse_body(body)
    with pytest.raises(LogError, match="^checkpoint size '05' is not a decimal"):
        Checkpoint.parse_body(_checkpoint().body().decode().replace("\n5\n", "\n05\n"))


def test_a_repeated_signature_line_is_verified_once(signer: LogSigner) -> None:
    """The same line repeated is one Ed25519 verification, however often it is repeated
    (counted on the verifier's key)."""

    class Counting:
        def __init__(self, key: Any) -> None:
            self.key, self.calls = key, 0

        def verify(self, signature: bytes, data: bytes) -> None:
            self.calls += 1
            self.key.verify(signature, data)

    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    counting = Counting(verifier._public_key)
    verifier._public_key = counting  # type: ignore[assignment]
    note = signer.sign(_checkpoint())
    line = note.rpartition("\n\n")[2]
    assert verifier.open(note + line * 9) == _checkpoint().body().decode()
    assert counting.calls == 1
