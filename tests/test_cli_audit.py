"""`prov log audit` says the same thing online (the server) and offline (``--db``, the
server's database) about the same log: one wording for the log's size, the entries
re-hashed, the consistency with the saved checkpoint and the key history. A real server,
a real device, the server's real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from clients.device import DeviceHome
from provenance.c2pa.authority import issue_device_certificate, load_authority
from provenance.core import merkle
from provenance.core.claims import Device
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import Checkpoint, generate_log_key
from provenance.store import open_store
from tests.conftest import PASSPHRASE, Cli, ServerProc, sign_sample, start_server


def _audit(cli: Cli, *args: str) -> list[str]:
    rc, out, err = cli("log", "audit", *args)
    assert rc == 0, out + err
    return out.splitlines()


def test_online_and_database_audits_word_the_same_log_alike(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    _, device_id = sign_sample(enrolled, tmp_path)
    rc, _, err = enrolled("admin", "revoke", device_id, "--reason", "lost")
    assert rc == 0, err
    rc, vkey, err = enrolled("log", "key")
    assert rc == 0, err
    online = tmp_path / "online.json"
    offline = ("--db", str(server.db), "--log-key", vkey.strip())
    # checks only the database audit makes: its leaf rows, stored tree, near-duplicate index
    own = (
        "leaf rows OK: the columns of 3 leaves and 2 key_events rows match their entries",
        "Merkle nodes OK: 4 stored nodes and 3 checkpoints match",
        "near-duplicate index OK",
    )
    for _ in range(2):  # a first audit, then one against the saved checkpoint
        by_server = _audit(enrolled, "--state", str(online))
        by_db = _audit(enrolled, "--state", str(tmp_path / "offline.json"), *offline)
        assert [line for line in by_db if not line.startswith(own)] == by_server, (
            by_server,
            by_db,
        )
        assert all(any(line.startswith(o) for line in by_db) for o in own), by_db
        assert "key history OK: 1 enrollment and 1 revocation in the log" in by_server[1]
    # the second audit found a saved checkpoint, and says the new one is consistent with it
    assert by_server[0] == (
        "log OK: unchanged at 3 entries; 3 entries re-hashed; consistent with the saved checkpoint"
    )
    # counts read as English: one tile, one entry bundle (before: "1 tiles", "1 entry bundles")
    tiles = tmp_path / "tiles"
    rc, out, err = enrolled("log", "export-tiles", str(tiles), "--db", str(server.db))
    assert rc == 0 and f"exported 3 entries to {tiles}: 1 tile and 1 entry bundle written" in out
    by_tiles = _audit(
        enrolled, "--state", str(tmp_path / "t.json"), "--tiles", str(tiles), *offline[2:]
    )
    assert by_tiles == [
        "tiled log OK: has 3 entries; 1 tile and 3 entries checked against the signed root"
    ], by_tiles


def test_an_audit_against_another_logs_key_names_where_that_key_came_from(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A first audit given the wrong --log-key was told "the server now presents log key
    X, not the trusted Y", as if the log had changed its key; it names the --log-key (or
    the STATE file) the trusted key came from. Still exit 3: the audit cannot tell a
    wrong key from a swapped one."""
    rc, vkey, err = enrolled("log", "key")
    assert rc == 0, err
    vkey = vkey.strip()
    other_signer = generate_log_key(tmp_path / "other.pem", vkey.split("+")[0])
    other = other_signer.verifier_key()
    state = tmp_path / "s.json"
    rc, _, err = enrolled("log", "audit", "--state", str(state), "--log-key", other)
    text = " ".join(err.split())
    assert rc == 3 and not state.exists(), err
    assert (
        f"LOG INTEGRITY FAILURE: the server presents log key {vkey}, not the --log-key"
        f" given, {other}: another log, or the log's key changed"
    ) in text, text
    # a STATE saved with another key (and a checkpoint it verified): that file is named
    note = other_signer.sign(Checkpoint(other_signer.name, 0, merkle.EMPTY_ROOT))
    state.write_text(json.dumps({"verifier_key": other, "checkpoint": note, "frontier": []}))
    rc, _, err = enrolled("log", "audit", "--state", str(state))
    text = " ".join(err.split())
    assert rc == 3 and f"now presents log key {vkey}, not the key saved in {state}" in text, text
    # and what to do (seen failing first: the message ended at "the log's key changed"):
    # a log replaced on purpose (each `make web` starts a new one) is audited afresh
    assert (
        f"{state} is unchanged; if that log was replaced on purpose, audit the new one"
        " with another --state file"
    ) in text, text


def _prov(*args: str, tty: str) -> subprocess.CompletedProcess[str]:
    """`prov ARGS` in a child process; Rich takes TTY_COMPATIBLE=1 for a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TTY_COMPATIBLE": tty},
    )


def test_an_online_audit_shows_its_progress_on_a_terminal(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """`prov log audit` against the server re-hashes every entry, minutes at 10^6: on a
    terminal it shows a bar as the --db audit does (before: nothing until the end)."""
    sign_sample(enrolled, tmp_path)
    args = ["log", "audit", "--state", str(tmp_path / "s.json"), "--server", server.address]
    for tty, bar in (("1", True), ("0", False)):
        (tmp_path / "s.json").unlink(missing_ok=True)
        run = _prov(*args, tty=tty)
        assert run.returncode == 0 and "log OK: has " in run.stdout, run.stderr
        assert ("re-hashing entries" in run.stderr) is bar, run.stderr


def test_audits_and_exports_write_nothing_to_stderr_off_a_terminal(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """Off a terminal (cron, a pipe) an audit that passed, a tile export and a verdict
    leave stderr empty: Rich's transient bar still wrote an empty line there, so cron
    mailed every scheduled `prov log audit`."""
    photo, _ = sign_sample(enrolled, tmp_path)
    rc, vkey, _ = enrolled("log", "key")
    state, db = str(tmp_path / "s.json"), str(server.db)
    key = ("--log-key", vkey.strip())
    online = ("log", "audit", "--state", state, "--server", server.address, *key)
    for args in (
        online,
        online,  # a second audit: against the saved checkpoint
        ("log", "audit", "--state", str(tmp_path / "d.json"), "--db", db, *key),
        ("log", "export-tiles", str(tmp_path / "tiles"), "--db", db),
        ("verify", str(photo), "--no-detect", "--server", server.address),
    ):
        run = _prov(*args, tty="0")
        assert run.returncode == 0 and run.stdout, (args, run.stderr)
        assert run.stderr == "", (args, run.stderr)


def test_a_saved_size_that_is_not_ascii_digits_is_one_error_line(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A state file whose saved checkpoint has a size int() does not take ("²") or takes
    though it is no C2SP size (a fullwidth "３"): exit 1 with one line naming the file
    (before: a ValueError traceback for "²"; "３" was read as 3)."""
    sign_sample(enrolled, tmp_path)
    state = tmp_path / "audit.json"
    _audit(enrolled, "--state", str(state))
    doc = json.loads(state.read_text())
    for size in ("\u00b2", "\uff13"):
        lines = doc["checkpoint"].split("\n")
        lines[1] = size
        state.write_text(json.dumps({**doc, "checkpoint": "\n".join(lines)}))
        rc, out, err = enrolled("log", "audit", "--state", str(state))
        assert (rc, out) == (1, ""), (out, err)
        # its checkpoint no longer verifies with the key saved beside it: a damaged state
        # (before this was checked on reading it: "the tree size of the checkpoint saved in
        # STATE '²' is not a decimal ...")
        assert err.startswith("error: audit state file is damaged: "), err
        assert err.count("\n") == 1, err


def test_an_empty_log_is_said_to_be_empty_and_an_emptied_one_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A server that has logged nothing yet has signed no checkpoint (it signs the first
    with its first entry): `prov log audit --db` of its database said "LOG INTEGRITY
    FAILURE: the database ... has no signed checkpoint", exit 3, of that honest log. Now
    it says the log is empty, nothing to audit yet, exit 1, as the online audit does (the
    server's "the log is empty"). A log with no checkpoint where the saved one held
    entries is refused, exit 3, its log emptied or replaced: with --db as before, and
    online, where it was "error: the log is empty" (exit 1) as of a new log."""
    rc, vkey, err = enrolled("log", "key")
    assert rc == 0, err
    saved = tmp_path / "saved.json"
    _audit(enrolled, "--state", str(saved))  # the real log: its enrollment
    key_file = tmp_path / "copy.logkey.pem"  # the same key, without its checkpoint's copy
    key_file.write_bytes(Path(f"{server.db}.logkey.pem").read_bytes())
    key_file.chmod(0o600)
    empty = start_server(tmp_path / "empty.db", "--log-key", str(key_file))
    try:
        online = ("--server", empty.address)
        fresh = tmp_path / "fresh.json"
        rc, out, err = enrolled("log", "audit", "--state", str(fresh), *online)
        assert rc == 1 and "the log is empty" in err, (rc, out, err)
        rc, out, err = enrolled("log", "audit", "--state", str(saved), *online)
        assert rc == 3 and "LOG INTEGRITY FAILURE: " in err, (rc, out, err)
        assert f"the checkpoint saved in {saved} is of 1 entry" in err, err
    finally:
        empty.stop()
    offline = ("--db", str(empty.db), "--log-key", vkey.strip())
    rc, out, err = enrolled("log", "audit", "--state", str(fresh), *offline)
    assert rc == 1, (rc, out, err)
    assert "LOG INTEGRITY" not in err and f"the log in {empty.db} is empty" in err, err
    assert not fresh.exists()
    rc, out, err = enrolled("log", "audit", "--state", str(saved), *offline)
    assert rc == 3 and "LOG INTEGRITY FAILURE: " in err, (rc, out, err)
    assert f"the checkpoint saved in {saved} is of 1 entry" in err, err


def test_the_database_audit_passes_an_honest_registry_of_every_kind(
    cli: Cli, ca_server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry a real server filled every honest way: a token enrollment answered with
    a certificate (``ca_server``), then that device revoked, then a new key made with
    ``prov device init --force`` and enrolled (a new device id; the old row stays), and a
    device enrolled with a certificate chain the authority issued (no token). The
    full ``--db`` audit (h-regextra60: each registry row must have a logged enrollment)
    names no row, while the server runs. Held already when written (revregextra60)."""
    _, first = sign_sample(cli, tmp_path)
    rc, _, err = cli("admin", "revoke", first, "--reason", "lost")
    assert rc == 0, err
    assert cli("device", "init", "--force")[0] == 0
    rc, token, err = cli("admin", "enroll-token")
    assert rc == 0, err
    rc, out, err = cli("device", "enroll", "--token", token.strip())
    assert rc == 0, out + err
    _, second = sign_sample(cli, tmp_path, "grace_hopper.jpg")
    assert second != first
    home = DeviceHome(tmp_path / "certified")
    state, _ = home.init(PASSPHRASE.encode())
    authority = load_authority(tmp_path / "ca", b"the authority's passphrase")
    public_key = bytes.fromhex(state.public_key)
    chain = issue_device_certificate(authority, public_key, state.device_id, now=datetime.now(UTC))
    (tmp_path / "chain.pem").write_bytes(chain)
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    args = ["--home", str(home.root), "--certificate", str(tmp_path / "chain.pem")]
    rc, out, err = cli("device", "enroll", *args)
    assert rc == 0 and f"device {state.device_id} enrolled" in out, out + err
    rc, vkey, err = cli("log", "key")
    assert rc == 0, err
    offline = ("--db", str(ca_server.db), "--log-key", vkey.strip())
    got = _audit(cli, "--state", str(tmp_path / "offline.json"), *offline)
    said = "key history OK: 3 enrollments and 1 revocation in the log; the registry agrees"
    assert said in got and not any("not looked for" in line for line in got), got


def test_the_database_audit_passes_a_registry_upgraded_to_key_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database from before key history (registry rows, one revoked, and no log
    entries), upgraded by a real ``prov serve`` starting on it (each row's enrollment and
    revocation logged, marked backfilled): the full ``--db`` audit names no row as added
    behind the log's back (h-regextra60), the server running or stopped. Held already
    when written (revregextra60)."""
    db = tmp_path / "old.db"
    store = open_store(db)
    now = datetime.now(UTC)
    keys = [DeviceKey.generate() for _ in range(3)]
    try:
        for key in keys:
            store.enroll(None, Device(key.key_id, key.public_key, now), now)
        store.revoke(keys[0].key_id, now, "lost")
    finally:
        store.close()
    signer = generate_log_key(tmp_path / "log.pem", "media-provenance.local/log")
    server = start_server(db, "--log-key", str(tmp_path / "log.pem"))
    args = ["log", "audit", "--db", str(db), "--log-key", signer.verifier_key()]
    said = "key history OK: 3 enrollments and 1 revocation in the log; the registry agrees"
    try:
        for run in ("running", "stopped"):
            rc = prov_main([*args, "--state", str(tmp_path / f"{run}.json")])
            got = capsys.readouterr()
            assert rc == 0 and said in got.out, got.out + got.err
            server.stop()
    finally:
        server.stop()
