"""``prov log ...`` and ``prov receipt ...``: the auditor's and witness's commands."""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clients.defaults import default_home, default_server
from clients.files import NotRegularFileError, read_bounded
from clients.interrupt import ctrl_c_notes, how_stopped, terminate_as_interrupt
from clients.options import (
    HomeOpt,
    ServerOpt,
    UsageError,
    WitnessOpt,
    WitnessQuorumOpt,
    WitnessUrlOpt,
    existing,
    folder_to_fill,
    in_existing_folder,
    nonempty_file_path,
    nonempty_path,
    nonempty_place,
    verifier_key,
    witness_quorum_of,
)
from clients.report import counted
from provenance.core.claims import Device, Receipt, SignedClaim
from provenance.core.errors import (
    ClaimError,
    ConfigError,
    LogError,
    LogIntegrityError,
    MediaError,
    MediaTooLargeError,
    NoWitnessesError,
    ProvenanceError,
    ServerEvidenceError,
    SignatureError,
    TileMissingError,
    TransportError,
    WitnessQuorumError,
)
from provenance.log.audit import (
    MAX_AUDIT_STATE_BYTES,
    AuditState,
    KeyHistoryReader,
    audit_step,
    enrolled_past,
)
from provenance.log.checkpoint import (
    DEFAULT_KEY_SUFFIX,
    DEFAULT_ORIGIN,
    MEMO_SUFFIX,
    Checkpoint,
    NoteVerifier,
    load_log_signer,
    memo_path,
    not_a_signed_note,
    note_signers,
    open_checkpoint,
    parse_tree_size,
)
from provenance.log.claim_audit import ClaimKeyAuditor
from provenance.log.receipt import verify_receipt
from provenance.log.tiledir import (
    ExportResult,
    export_tiles,
    exported_size,
    fetcher,
    location_problem,
)
from provenance.log.tiles import CHECKPOINT_PATH, audit_tiles
from provenance.log.tlogproof import (
    FILE_SUFFIX,
    MAX_PROOF_BYTES,
    decode_tlog_proof,
    encode_tlog_proof,
    is_tlog_proof,
)
from provenance.terminal import SafeConsole, clipped_line, shown, shown_line, transient_bar
from provenance.wire.convert import decode_log_entry
from provenance.wire.sidecar import (
    MAX_SIDECAR_BYTES,
    Sidecar,
    check_sidecar_key,
    decode_sidecar,
    encode_sidecar,
)
from provenance.witness import check_quorum

if TYPE_CHECKING:
    # loaded where a command uses them: gRPC (`clients.api`) where it calls a server, the
    # device's code (`clients.device`) where it reads a device folder, the server's store
    # where it reads a database (before, at the top: `prov log --help` took 1.1 s)
    from clients.api import ProvenanceClient
    from provenance.store import Store

log_app = typer.Typer(
    help="The transparency log: its verifier key, audits (consistency, re-hashed entries,"
    " key history) and C2SP tlog-tiles export.",
    no_args_is_help=True,
)
receipt_app = typer.Typer(
    help="A sidecar's log receipt: verify it offline with the log's public key, export it"
    " as a C2SP tlog-proof, refresh it to the newest witness-cosigned checkpoint.",
    no_args_is_help=True,
)
out = SafeConsole(soft_wrap=True)
err = SafeConsole(stderr=True, soft_wrap=True)


@log_app.command("key")
def log_key(
    server: ServerOpt = default_server(),
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the key from the server's log key file instead of asking the server.",
            callback=existing,
            dir_okay=False,
        ),
    ] = None,
    origin: Annotated[
        str | None,
        typer.Option(
            help="The log's name (`prov serve --origin`), with --key-file. Default: the name"
            " in the checkpoint the server last signed with that key, kept beside it"
            f" (KEY{MEMO_SUFFIX}), else the name kept in the log's database (--db, or DB"
            f" when KEY is `prov serve`'s default DB{DEFAULT_KEY_SUFFIX}); with none of"
            " them (a log with no entry yet, its key copied away) the command refuses.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            callback=existing_db,
            help="With --key-file: read the log's name from its database (the SQLite file of"
            " `prov serve --db`, or its postgresql:// URL; read only), for a log with no"
            " entry yet whose key file has no checkpoint beside it.",
        ),
    ] = None,
) -> None:
    """Print the log's public verifier key (note format NAME+ID+KEY)."""
    if key_file is not None:
        load_log_signer(key_file, origin or DEFAULT_ORIGIN)  # a bad key file first (exit 1)
        name = origin if origin is not None else _log_origin(key_file, db)
        vkey = load_log_signer(key_file, name).verifier_key()
        # exact for a file or a pipe (`> log.vkey`, read by --log-key: a log named with an
        # invisible character needs its very name); escaped on a
        # terminal, where a bidirectional override would turn the line
        print(shown(vkey) if sys.stdout.isatty() else vkey)
        return
    if origin is not None or db is not None:
        raise UsageError("--origin and --db go with --key-file (the server names its own log)")
    from clients.api import ProvenanceClient

    with ProvenanceClient(server) as c:
        vkey, _ = c.log_key()
    print(shown(vkey))  # the server's answer


#: Most bytes of KEY.checkpoint read for the log's name (a checkpoint with its
#: cosignatures is well under 1 KiB).
_MEMO_MAX_BYTES = 64 * 1024


def _log_origin(key_file: Path, db: str | None) -> str:
    """The name of the log ``key_file`` signs: from its database ``db`` when given; else
    from the newest checkpoint a server signed with it (`_signed_origin`); else from the
    SQLite database beside a default key file (``DB.logkey.pem``). Raises UsageError
    (exit 2) saying what to pass when none of them tells (a log with no entry yet whose
    key was copied away from its database)."""
    if db is not None:
        return _stored_origin(db)
    signed = _signed_origin(key_file)
    if signed is not None:
        return signed
    beside = key_file.name.removesuffix(DEFAULT_KEY_SUFFIX)
    if beside and beside != key_file.name and key_file.with_name(beside).is_file():
        return _stored_origin(str(key_file.with_name(beside)))
    raise UsageError(
        f"cannot tell the name of the log {key_file} signs: there is no checkpoint signed"
        f" with it beside it ({memo_path(key_file)}; a log with no entry yet has none) and"
        " no database beside it. Pass --origin NAME, the `prov serve --origin` the log was"
        f" started with (the default is {DEFAULT_ORIGIN}; the server prints it at start,"
        ' "log key: NAME+..."), or --db DB, the log\'s database (`prov serve --db`)'
    )


def _stored_origin(db: str) -> str:
    """The log's name kept in its database ``db`` (read only). Raises ConfigError when the
    database has none (no server has started on it), else as `_open_read_only`."""
    store = _open_read_only(db)
    try:
        name = store.get_meta("origin")
    finally:
        store.close()
    if name is None:
        raise ConfigError(f"the database {db} names no log yet: no server has started on it")
    return name


def _signed_origin(key_file: Path) -> str | None:
    """The log's name in the newest checkpoint a server signed with ``key_file``, from the
    copy it keeps beside the key (`memo_path`), when that copy's signature verifies with
    the key under that name; else None (a log with no entry yet, a key copied without
    it)."""
    try:
        note = read_bounded(memo_path(key_file), _MEMO_MAX_BYTES).decode("utf-8")
        name = note.split("\n", 1)[0]
        signer = load_log_signer(key_file, name)
        open_checkpoint(note, NoteVerifier.from_vkey(signer.verifier_key()), origin=name)
    except (OSError, UnicodeDecodeError, ProvenanceError):  # no copy, or none to trust
        return None
    return name


def _entries(c: ProvenanceClient, start: int, end: int, server: str) -> Iterator[bytes]:
    """The leaf data of entries ``start`` to ``end`` - 1, read a GetEntries page at a time
    from the server at ``server`` (``c``), each page from where the one before said the
    next starts. Raises LogIntegrityError when the server finds its own store damaged
    (DATA_LOSS), ServerEvidenceError (`_page_refused`) when a page holds more entries than
    asked for or its ``next`` is not where the page ends, TransportError otherwise. An
    empty page ends the entries: the audit then says how many the checkpoint holds."""
    from clients.api import page_problem  # gRPC loaded only where a command calls a server

    pos = start
    while pos < end:
        asked = min(1000, end - pos)
        try:
            got, nxt = c.entries(pos, asked)
        except TransportError as e:
            if e.code == "DATA_LOSS":  # the server itself found its store damaged
                raise LogIntegrityError(str(e)) from e
            raise
        if not got:
            return
        if (problem := page_problem(pos, asked, len(got), nxt)) is not None:
            raise ServerEvidenceError(f"the server at {server} {_page_refused(problem)}")
        yield from got
        pos = nxt


def _page_refused(problem: str) -> str:
    """The refusal of a GetEntries page after what the server did (``problem``,
    `clients.api.page_problem`: more entries than asked for, or pages that serve entries
    again or skip them). Before, a page whose ``next`` fell short was followed, the
    entries it served again re-hashed as more of the log's, and the audit said "the log
    served more entries than its checkpoint's N"; one past its end, "entries were
    deleted"."""
    return (
        f"{problem}; its paging is broken or hostile, which says nothing of the log: audit"
        " another copy (--tiles, --db) or ask the server's operator; nothing was saved"
    )


@log_app.command("audit")
def audit(
    state: Annotated[
        Path,
        typer.Option(
            help="File holding the last checkpoint this auditor accepted (and the log key):"
            " the first audit creates it; give the same file to every later audit, which"
            " proves the log still extends that checkpoint.",
            parser=nonempty_file_path,
        ),
    ],
    server: ServerOpt = default_server(),
    tiles: Annotated[
        str | None,
        typer.Option(
            help="Audit a C2SP tlog-tiles copy of the log instead of the server: an http(s)://"
            " prefix or a directory (from `prov log export-tiles`). Needs --log-key or a STATE.",
            parser=nonempty_place,
        ),
    ] = None,
    log_key: Annotated[
        str | None,
        typer.Option(
            help="Pin the log's verifier key (text or file). Default: the key saved in STATE, else the server's (trust on first use).",
            callback=verifier_key,
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            callback=existing_db,
            help="Audit the log's database directly (the SQLite file of `prov serve --db`, or"
            " its postgresql:// URL; read only) instead of the server: also check each leaf row's"
            " columns (leaf hash, claim hash, device, sequence, file hash, time) against its"
            " entry, and every stored Merkle node and checkpoint row of the re-hashed entries"
            " against the tree they hash to; with --full, also every soft-hash row and near-duplicate index pack"
            " against the logged entries. Each leaf's chain_linked (whether a claim links to its"
            " device's previous one) is judged again from the entries in log order. Needs"
            " --log-key or a STATE.",
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full/--incremental",
            help="Re-hash every entry from the start (catches edited or deleted old rows), or only the entries added since the saved checkpoint (faster on big logs).",
        ),
    ] = True,
) -> None:
    """Fetch the newest checkpoint, prove it consistent with the saved one, re-hash the
    entries against it, and save it; with --full (the default), also replay the enrollments and
    revocations logged, compare every device's registry row with them, and verify every
    logged claim's device signature under a key they enrolled for its device. Exit 3 on a
    fork, a rollback, a changed log key, entries edited or deleted behind the log's back,
    a registry row that differs from the logged key history (an edited, back-dated or
    deleted revocation or enrollment), or a claim that history does not cover (signed by
    no key it enrolled, before its key's enrollment or after its revocation); with --db, also on a leaf row's column that differs
    from its entry, or a stored Merkle node or checkpoint row that differs from the
    re-hashed tree (edited, deleted or added);
    exit 1 when the server is unreachable."""
    in_existing_folder(state, "--state")
    if state.is_dir():  # was exit 1, "error: Is a directory: DIR"
        raise typer.BadParameter(
            f"{state} is a folder; name the file that keeps this auditor's last checkpoint"
            f" (created on the first audit), e.g. --state {state / 'audit-state.json'}",
            param_hint="--state",
        )
    if not os.access(state.parent, os.W_OK | os.X_OK):  # was: the whole audit, then exit 1
        raise typer.BadParameter(
            f"cannot write to the folder {state.parent} (the audit saves its state there"
            " after checking the log); name a file in a folder you can write",
            param_hint="--state",
        )
    if tiles is not None and db is not None:
        raise UsageError(
            "give one of --tiles and --db: each audits its own copy of the log (without"
            " either, the server's)"
        )
    if tiles is not None and (problem := location_problem(tiles)) is not None:
        raise typer.BadParameter(problem, param_hint="--tiles")  # a typo, not a lost log
    saved = _saved_state(state)
    if tiles is not None:
        _audit_tiles(tiles, state, saved, log_key, full)
        return
    if db is not None:
        _audit_db(db, state, saved, log_key, full)
        return
    from clients.api import ProvenanceClient

    with ProvenanceClient(server) as c:
        server_vkey, _ = c.log_key()
        vkey = (
            _read_key_text(log_key) if log_key else (saved.verifier_key if saved else server_vkey)
        )
        if saved is None and log_key is None:
            err.print(f"first audit: trusting the server's log key {server_vkey}")
        if server_vkey != vkey:  # the trusted key named by where it came from
            trusted = "the --log-key given" if log_key else f"the key saved in {state}"
            afresh = (
                ""
                if log_key
                else f"; {state} is unchanged; if that log was replaced on purpose, audit the"
                " new one with another --state file (its first audit trusts the key the"
                " server presents)"
            )
            raise LogIntegrityError(
                f"the server {'presents' if log_key else 'now presents'} log key {server_vkey},"
                f" not {trusted}, {vkey}: another log, or the log's key changed{afresh}"
            )
        note = _server_checkpoint(c, server, state, saved)
        new_size = _note_size(note, "the server's checkpoint")
        old_size = 0
        proof: list[bytes] = []
        if saved is not None:
            old_size = _note_size(saved.checkpoint, f"the checkpoint saved in {state}")
            if 0 < old_size < new_size:
                proof = c.consistency_proof(old_size, new_size)
        start = 0 if (full or saved is None) else old_size
        claims = ClaimKeyAuditor() if start == 0 else None
        # no key_events table to compare online: no row kept an event
        history = KeyHistoryReader(claims, rows=False) if start == 0 else None
        # a bar on stderr (a terminal's only), as with --db: 10^6 entries take minutes
        with transient_bar(err) as bar:
            task = bar.add_task("re-hashing entries", total=new_size - start)

            def counted() -> Iterator[bytes]:
                for i, entry in enumerate(_entries(c, start, new_size, server)):
                    if i % 1_000 == 0:
                        bar.update(task, completed=i)
                    yield entry

            entries = counted()
            new_state, cp, checked = audit_step(
                saved,
                vkey,
                note,
                proof,
                history.tap(entries) if history else entries,
                from_start=start == 0,
                proof_from=f"the server at {server}",
            )
            if claims is not None:  # the claims left waiting for a backfilled key
                claims.finish(lambda first, end: _entries(c, first, end, server))
        if history is not None:
            history.compare_registry(_server_device(c))
    _atomic_write(state, new_state.to_json().encode())
    out.print(_log_ok(saved, old_size, cp.size, checked))
    if history is None or claims is None:
        out.print("key history and claims: not checked (--incremental reads only the new entries)")
        return
    if history.problems:
        more = f"\n  ... and {history.more} more" if history.more else ""
        raise LogIntegrityError(
            "KEY HISTORY: the registry differs from the enrollments and revocations in the"
            " log:\n  " + "\n  ".join(history.problems) + more
        )
    out.print(_key_history_ok(history))
    _claims_ok(claims)


def _claims_ok(claims: ClaimKeyAuditor) -> None:
    """Print the line of a claim check that passed (online and with --db alike); raises
    LogIntegrityError naming each claim that fails."""
    if claims.problems:
        more = f"\n  ... and {claims.more} more" if claims.more else ""
        raise LogIntegrityError(
            "CLAIMS: logged claims the log's key history does not cover:\n  "
            + "\n  ".join(claims.problems)
            + more
        )
    n = claims.claims_checked
    if n == 1:
        out.print("claims OK: 1 claim verifies under the key the log enrolled for its device")
    else:
        out.print(f"claims OK: {n} claims verify under keys the log enrolled for their devices")


def _server_checkpoint(
    c: ProvenanceClient, server: str, state: Path, saved: AuditState | None
) -> str:
    """The server's newest checkpoint (``c``, at ``server``). Raises LogIntegrityError when
    it says its log is empty (OUT_OF_RANGE) while the checkpoint saved in ``state`` holds
    entries of the log with the same key: before, "error: the log is empty", exit 1, as
    of a log that has logged nothing yet (still so without a saved checkpoint);
    TransportError otherwise."""
    try:
        return c.checkpoint()
    except TransportError as e:
        if e.code != "OUT_OF_RANGE" or saved is None:
            raise
        old = _note_size(saved.checkpoint, f"the checkpoint saved in {state}")
        raise LogIntegrityError(
            f"the server at {server} says its log is empty ({e}), but the checkpoint saved"
            f" in {state} is of {counted(old, 'entry', 'entries')}: its log was emptied or"
            " rolled back, or another log now has its key"
        ) from e


def _note_size(note: str, what: str) -> int:
    """The tree size on the second line of ``what``, a checkpoint note not verified yet
    (0 when it has none). Raises LogError unless it is ASCII digits (`parse_tree_size`)."""
    lines = note.split("\n")
    return parse_tree_size(lines[1], f"the tree size of {what}") if len(lines) > 2 else 0


def _log_ok(saved: AuditState | None, old_size: int, size: int, checked: int) -> str:
    """The line of an audit that passed, the same online and with --db: the log's size
    against the saved checkpoint's, the entries re-hashed, and (with a saved checkpoint)
    that the new one is consistent with it."""
    consistent = "; consistent with the saved checkpoint" if saved is not None else ""
    hashed = counted(checked, "entry", "entries")
    return f"log OK: {_grew(saved, old_size, size)}; {hashed} re-hashed{consistent}"


def _key_history_ok(history: KeyHistoryReader) -> str:
    """The line of a key history check that passed (online and with --db alike)."""
    enrolled = counted(history.enrollments, "enrollment")
    revoked = counted(history.revocations, "revocation")
    return f"key history OK: {enrolled} and {revoked} in the log; the registry agrees"


def _server_device(c: ProvenanceClient) -> Callable[[bytes], Device | None]:
    def find(device_id: bytes) -> Device | None:
        try:
            return c.get_device(device_id)
        except TransportError as e:
            if e.code != "NOT_FOUND":
                raise
            return None

    return find


def _saved_state(state: Path) -> AuditState | None:
    """The audit state saved in ``state``, None before the first audit. A FIFO, device or
    socket, or a file over `MAX_AUDIT_STATE_BYTES`, is a usage error naming --state,
    refused unread (`read_bounded`: before, a FIFO blocked for good and /dev/zero was read
    into memory without end); a damaged state raises LogError (exit 1)."""
    if not state.exists():
        return None
    try:
        data = read_bounded(state, MAX_AUDIT_STATE_BYTES, "audit state")
    except (NotRegularFileError, MediaTooLargeError) as e:
        raise typer.BadParameter(str(e), param_hint="--state") from None
    return AuditState.from_json(data)


def _pinned_key(state: Path, saved: AuditState | None, log_key: str | None, what: str) -> str:
    """The log key an audit of ``what`` (tiles, a database) trusts: --log-key, else the
    one saved in STATE. Raises typer.BadParameter (a usage error, exit 2, as a missing
    `prov receipt verify --log-key`) when neither is given, LogIntegrityError when they
    differ."""
    if log_key:
        vkey = _read_key_text(log_key)
    elif saved is not None:
        vkey = saved.verifier_key
    else:
        raise typer.BadParameter(
            f"missing: auditing {what} needs the log's verifier key (text or a file), e.g."
            " from `prov log key`, until STATE holds it",
            param_hint="--log-key",
        )
    if saved is not None and saved.verifier_key != vkey:
        raise LogIntegrityError(
            f"--log-key {vkey} is not the key {saved.verifier_key} saved in {state}"
        )
    return vkey


def _grew(saved: AuditState | None, old_size: int, size: int) -> str:
    if saved is None:
        return f"has {counted(size, 'entry', 'entries')}"
    if old_size == size:
        return f"unchanged at {counted(size, 'entry', 'entries')}"
    return f"grew from {old_size} to {size}"


def existing_db(db: str | None) -> str | None:
    """``db`` if it is a postgresql:// URL or an existing regular file; else a usage error
    (exit 2, before any work): "no database at DB" when nothing is there, "DB is a FIFO
    (named pipe), not a database file" (a device, a folder, ...) when something else is,
    as `prov serve --db` says. Typer callback of ``--db`` where the database is only read.
    Raises typer.BadParameter."""
    if db is None:
        return db
    from provenance.core.files import file_kind
    from provenance.store import is_postgres_url

    if is_postgres_url(db):
        return db
    try:
        mode = Path(db).stat().st_mode
    except OSError:
        mode = None
    if mode is None:
        problem = f"no database at {db}"
    elif not stat.S_ISREG(mode):
        problem = f"{db} is {file_kind(mode)}, not a database file"
    else:
        return db
    raise typer.BadParameter(
        f"{problem} (give the SQLite file `prov serve --db` uses, or its postgresql:// URL)",
        param_hint="--db",
    )


def _open_read_only(db: str) -> Store:
    """The log's database ``db`` (a SQLite file or a postgresql:// URL) opened read-only and
    never migrated, for commands that only read it (`prov log audit --db`, `prov log
    export-tiles`). Raises ConfigError when the file is missing, else as `open_store`."""
    from provenance.store import is_postgres_url, open_store

    if not is_postgres_url(db) and not Path(db).is_file():
        raise ConfigError(f"no database at {db} (give the file `prov serve --db` uses)")
    return open_store(db, read_only=True)


def _no_checkpoint(db: str, leaves: int, state: Path, saved: AuditState | None) -> LogError:
    """What a database ``db`` holding ``leaves`` log entries and no signed checkpoint is:
    an empty log (none, and no checkpoint saved in ``state``: the server signs its first
    checkpoint with its first entry), a LogError, exit 1; else a LogIntegrityError, exit
    3 (entries no checkpoint signs, or a log emptied since the saved checkpoint). Before,
    an honest empty log was "LOG INTEGRITY FAILURE: the database ... has no signed
    checkpoint" too."""
    if leaves:
        return LogIntegrityError(
            f"the database {db} holds {counted(leaves, 'entry', 'entries')} and no signed"
            " checkpoint"
        )
    if saved is not None:
        old = _note_size(saved.checkpoint, f"the checkpoint saved in {state}")
        return LogIntegrityError(
            f"the database {db} holds no entry and no signed checkpoint, but the checkpoint"
            f" saved in {state} is of {counted(old, 'entry', 'entries')}: its log was"
            " emptied, or this is another log's database"
        )
    return LogError(
        f"the log in {db} is empty: no entry logged yet, so no signed checkpoint (the"
        " server signs the first when it logs its first entry); nothing to audit yet,"
        " nothing was saved"
    )


def _audit_db(
    db: str, state: Path, saved: AuditState | None, log_key: str | None, full: bool
) -> None:
    """`prov log audit --db`: audit the log's database directly. Every leaf row's columns
    of the re-hashed range are compared with its entry (`LeafAuditor`), every stored
    Merkle node and checkpoint row is compared with the re-hashed tree
    (`TreeAuditor`), and the saved checkpoint's consistency is proved by the re-hash, not
    by a proof from the nodes under audit; with --full, also every soft-hash row and
    index pack with the logged entries (`IndexAuditor`), every registry row with the
    logged key history. Each leaf's chain_linked is judged from the claims before it (with
    --incremental, the claim before the audited range a new one names is looked up). Each
    entry is decoded once, by `LeafAuditor.tap`, for all the checks."""
    from provenance.index.audit import IndexAuditor
    from provenance.log.leaf_audit import LeafAuditor
    from provenance.log.store_audit import TreeAuditor
    from provenance.store.sql import SqlStore

    vkey = _pinned_key(state, saved, log_key, "a database")
    store = _open_read_only(db)
    outdated = store.outdated if isinstance(store, SqlStore) else ""
    try:
        latest = store.latest_checkpoint()
        if latest is None:
            raise _no_checkpoint(db, store.tree_size(), state, saved)
        row_size, note = latest
        # the note's size is the one signed; a row of another size is named by the tree check
        size = _note_size(note, f"the newest checkpoint in {db}")
        old_size = _note_size(saved.checkpoint, f"the checkpoint saved in {state}") if saved else 0
        start = 0 if (full or saved is None) else old_size
        leaves = LeafAuditor(start, store.leaf_by_claim_hash)
        tree = TreeAuditor(store, NoteVerifier.from_vkey(vkey), start, leaves)
        # an older schema lacks the tables the key history and index checks read
        index = IndexAuditor(store) if start == 0 and not outdated else None
        # the claims against the key history: read from leaf 0, of a migrated schema
        claims = ClaimKeyAuditor() if index is not None else None
        history = KeyHistoryReader(claims)
        unlogged = False  # the key history not logged yet: see `_key_history_unlogged`
        with transient_bar(err) as bar:
            task = bar.add_task("re-hashing entries", total=size - start)

            def reading() -> Iterator[bytes]:
                # each entry decoded once (by the leaf check) for every check of it
                rows = leaves.tap(store.iter_index_rows(start), size)
                for i, (leaf, entry, fields) in enumerate(rows):
                    if i % 10_000 == 0:
                        bar.update(task, completed=i)
                    if index is not None:
                        index.feed(leaf, fields)
                    history.read(leaf, entry, fields)
                    yield entry

            new_state, cp, checked = audit_step(
                saved,
                vkey,
                note,
                None,
                reading(),
                from_start=start == 0,
                observe=tree.observe,
            )
            tree.finish(cp.size, row_size)
            if not outdated:  # an older schema has no key_events table
                rows = store.key_event_rows(start)
                leaves.compare_key_events(history.logged_rows(), rows, cp.size)
            problems = [f"LEAF ROWS: {p}" for p in leaves.problems]
            problems += [f"STORED TREE: {p}" for p in tree.problems]
            if claims is not None:  # the claims left waiting for a backfilled key
                claims.finish(lambda first, end: _stored_entries(store, first, end))
            if index is not None:
                index.finish()
                unlogged = _key_history_unlogged(store)
                history.compare_registry(
                    store.find_device,
                    () if unlogged else store.device_ids(),
                    lambda d: enrolled_past(store.key_event_entries(d), d, cp.size),
                )
                problems += [f"KEY HISTORY: {p}" for p in history.problems]
                problems += [f"NEAR-DUPLICATE INDEX: {p}" for p in index.problems]
            if claims is not None:
                problems += [f"CLAIMS: {p}" for p in claims.problems]
    finally:
        store.close()
    _atomic_write(state, new_state.to_json().encode())
    out.print(_log_ok(saved, old_size, cp.size, checked))
    if problems:
        more = leaves.more + tree.more + (index.more + history.more if index else 0)
        more += claims.more if claims else 0
        raise LogIntegrityError(
            "the database differs from what the logged entries say (each leaf row's"
            " columns against its entry; Merkle nodes and checkpoint rows against the"
            " re-hashed tree; registry rows against the key"
            " history; soft-hash rows and index packs against the claims' soft bindings;"
            " each claim's signature against the keys the key history enrolled):\n  "
            + "\n  ".join(problems)
            + (f"\n  ... and {more} more mismatches" if more else "")
        )
    columns = counted(leaves.leaves_checked, "leaf", "leaves")
    if not outdated:
        columns += f" and {counted(leaves.key_events_checked, 'key_events row')}"
    out.print(f"leaf rows OK: the columns of {columns} match their entries")
    out.print(
        f"Merkle nodes OK: {tree.nodes_checked} stored nodes and"
        f" {counted(tree.checkpoints_checked, 'checkpoint')} match the re-hashed tree"
    )
    if outdated:
        raise ConfigError(
            f"key history, claims and near-duplicate index: not checked: {outdated}; then"
            " audit again for them"
        )
    if index is None:
        out.print(
            "key history, claims and near-duplicate index: not checked (--incremental reads"
            " only the new entries)"
        )
        return
    out.print(_key_history_ok(history))
    if unlogged:
        out.print(
            "registry rows of devices the log never enrolled: not looked for: the key"
            " history of this database is not logged yet (the first `prov serve` on it"
            " logs an enrollment of every row; then audit again)"
        )
    if claims is not None:
        _claims_ok(claims)
    out.print(
        f"near-duplicate index OK: {index.rows_checked} soft-hash rows and"
        f" {index.packs_checked} index packs match the logged entries"
    )


def _key_history_unlogged(store: Store) -> bool:
    """Whether the key history of ``store`` is not logged yet: no server started on it
    since it was migrated to key history (the first start logs an enrollment, marked
    backfilled, for every registry row). Its rows then have no logged enrollment
    honestly, and are not named. Raises StorageError."""
    from provenance.store import KEY_HISTORY_META

    return store.get_meta(KEY_HISTORY_META) is None


def _stored_entries(store: Store, first: int, end: int) -> Iterator[bytes]:
    """The entries of leaves [first, end) of ``store``, read again in index order (the
    claims a `ClaimKeyAuditor` left waiting). Raises StorageError from the store."""
    for row in store.iter_index_rows(first):
        if row[0] >= end:
            return
        entry = row[7]
        if isinstance(entry, bytes):  # else named by the leaf check
            yield entry


def _audit_tiles(
    location: str, state: Path, saved: AuditState | None, log_key: str | None, full: bool
) -> None:
    """`prov log audit --tiles`: audit from the tiles alone (see `audit_tiles`)."""
    vkey = _pinned_key(state, saved, log_key, "tiles")
    files = fetcher(location)

    def fetch(path: str) -> bytes:
        try:
            data = files(path)
        except (TileMissingError, LogIntegrityError) as e:  # missing, or over MAX_FILE_BYTES
            if path != CHECKPOINT_PATH:  # a file the signed checkpoint commits to
                raise
            # nothing signed there: a wrong place, not a broken log (was exit 3)
            raise _no_tiled_log(location, str(e)) from e
        if path == CHECKPOINT_PATH and (why := not_a_signed_note(data)):
            # a site's page for any path, some other file: nothing signed there either
            raise _no_tiled_log(location, f"its checkpoint is not a signed note ({why})")
        return data

    result = audit_tiles(fetch, vkey, saved, full=full)
    _atomic_write(state, result.state.to_json().encode())
    old_size = _note_size(saved.checkpoint, f"the checkpoint saved in {state}") if saved else 0
    out.print(
        f"tiled log OK: {_grew(saved, old_size, result.checkpoint.size)};"
        f" {counted(result.tiles_read, 'tile')} and {counted(result.entries_checked, 'entry', 'entries')}"
        " checked against the signed root"
    )


def _no_tiled_log(location: str, why: str) -> LogError:
    """The error (exit 1, not a LOG INTEGRITY FAILURE) of a --tiles place where nothing
    signed is: no checkpoint there, or one that is no signed note."""
    return LogError(
        f"no tiled log at {location}: {why}. Give the prefix under which `prov log"
        " export-tiles` or `prov web --tiles-dir` serves the files `checkpoint` and"
        " `tile/` (e.g. http://HOST:8080/tlog/ or the export's folder)"
    )


def _export_once(store: Store, directory: Path) -> ExportResult:
    """One `export_tiles` run with a progress bar over the level-0 tiles on stderr."""
    with transient_bar(err) as bar:
        task = bar.add_task("exporting tiles", total=None)
        return export_tiles(store, directory, lambda d, t: bar.update(task, completed=d, total=t))


#: Seconds between two polls of `prov log export-tiles --follow` when --interval is not given.
FOLLOW_INTERVAL_S = 5.0


@log_app.command("export-tiles")
def export_tiles_command(
    directory: Annotated[
        Path,
        typer.Argument(
            help="Folder to write the tiled log into (created if missing).",
            parser=nonempty_path,
        ),
    ],
    db: Annotated[
        str,
        typer.Option(
            callback=existing_db,
            help="The log's database: the SQLite file of `prov serve --db`, or its"
            " postgresql:// URL. Read only; the server may keep running.",
        ),
    ],
    follow: Annotated[
        bool,
        typer.Option(
            help="Keep exporting each new checkpoint until stopped: Ctrl-C (exit 130) or"
            " SIGTERM (`kill`, systemd's stop: exit 143, 'terminated (SIGTERM)'), the"
            " folder left at its last checkpoint."
        ),
    ] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            help="Seconds between polls of the database, with --follow (default"
            f" {FOLLOW_INTERVAL_S:g}). Without --follow (one export) it is a usage error.",
            min=0.1,
            show_default=False,
        ),
    ] = None,
    max_polls: Annotated[
        int,
        typer.Option(
            help="With --follow, stop after this many polls of the database, the first"
            " included (N take about N - 1 times --interval; 1: one export, no wait): exit"
            " 0, or 1 when the log still has no signed checkpoint. 0 (the default): no limit,"
            " until stopped (Ctrl-C or SIGTERM). Without --follow (one export) it is a"
            " usage error.",
            min=0,
        ),
    ] = 0,
) -> None:
    """Write the log as C2SP tlog-tiles (c2sp.org/tlog-tiles): `checkpoint`, hash tiles
    `tile/<L>/<N>[.p/<W>]` and entry bundles `tile/entries/<N>[.p/<W>]`, static files any
    tlog client can audit (`prov log audit --tiles DIR`) and any web server can serve.
    Only new files are written; the checkpoint goes last. A log with no signed checkpoint
    yet (no entry logged) exports nothing: exit 1, saying so (with --follow, it waits for
    one, and exits 1 when --max-polls end before one comes)."""
    if max_polls and not follow:  # a forgotten --follow: one export, silently, before
        raise typer.BadParameter(
            f"--max-polls {max_polls} limits the polls of --follow; without --follow there"
            " is one export: add --follow, or leave --max-polls out",
            param_hint="--max-polls",
        )
    if interval is not None and not follow:  # the same: silently no poll at all, before
        raise typer.BadParameter(
            f"--interval {interval:g} sets the wait between the polls of --follow; without"
            " --follow there is one export: add --follow, or leave --interval out",
            param_hint="--interval",
        )
    folder_to_fill(directory, "DIRECTORY")
    store = _open_read_only(db)
    terminated: list[int] = []  # SIGTERM, once it came
    seconds = FOLLOW_INTERVAL_S if interval is None else interval
    # a second signal while it stops (the store's close may wait on the network) ends it
    # at once, saying what the folder holds: the size of the last checkpoint written, "or
    # more" (the export under way may have written its own since); the store is closed
    # inside the block (before, outside it, a second SIGTERM there ended it silently)
    kept = _export_kept(directory, or_more=True)
    with terminate_as_interrupt(terminated), ctrl_c_notes(kept) as keep:
        try:
            _export_polls(
                store, directory, follow, seconds, max_polls,
                lambda size: keep(_export_kept(directory, size, or_more=True)),
            )  # fmt: skip
        except KeyboardInterrupt:
            word, code = how_stopped(terminated)
            err.print(f"{word}: {_export_kept(directory)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None
        finally:
            store.close()


def _export_kept(directory: Path, size: int | None = -1, or_more: bool = False) -> str:
    """What a stopped `prov log export-tiles` leaves in ``directory`` and how to go on: a
    whole tiled log at its checkpoint of ``size`` entries (None: no checkpoint there;
    -1: the one there now, read), ``or_more`` when a newer one may have been written
    since that size was known. True whenever the export stopped (`export_tiles` writes
    the checkpoint last, every tile it needs flushed before it; a partial tile dropped for
    its full one is read from that). Before, it said only "the export in DIR stands at
    its last checkpoint", no size, and nothing after a second signal."""
    if size == -1:
        try:
            size = exported_size(directory)
        except ConfigError:  # no checkpoint of a log there: the export says, or said, why
            return (
                f"the export in {directory} stands at its last checkpoint; the same command"
                " continues it"
            )
    if size is None:
        since = ", or only the one the export had just written" if or_more else ""
        return (
            f"{directory} holds no checkpoint yet{since}; the same command exports the log"
            " into it (what was written there without a checkpoint is written again)"
        )
    more = " or more" if or_more else ""
    return (
        f"{directory} holds a complete tiled log of {counted(size, 'entry', 'entries')}{more}:"
        " its checkpoint and every tile and entry bundle that checkpoint needs; the same"
        " command continues the export"
    )


def _export_polls(
    store: Store,
    directory: Path,
    follow: bool,
    interval: float,
    max_polls: int,
    exported: Callable[[int], None] = lambda size: None,
) -> None:
    """`prov log export-tiles`'s exports: one, or with ``follow`` one each ``interval``
    seconds (``max_polls`` of them, 0: no end); a line for each new size exported, and
    ``exported(size)`` once the folder's checkpoint is of ``size`` entries.
    Raises LogError when the store has no signed checkpoint (with ``follow``: still none
    at the last poll; said once on stderr while it waits)."""
    polls = 0
    last = -1
    while True:
        result = _export_once(store, directory)
        if result.signed:
            exported(result.size)
        if not result.signed:
            if not follow or (max_polls and polls + 1 >= max_polls):
                raise LogError(_unsigned(directory))
            if last == -1:  # said once while it waits
                err.print(f"{_unsigned(directory)}; waiting for one", highlight=False)
                last = -2
        elif result.size != last:
            out.print(_exported_line(result, directory))
            last = result.size
        polls += 1
        if not follow or (max_polls and polls >= max_polls):
            return
        time.sleep(interval)


def _unsigned(directory: Path) -> str:
    """What an export of a store with no signed checkpoint did: nothing."""
    return (
        "the log has no signed checkpoint yet (the server signs the first when it logs"
        f" its first entry): nothing exported, no checkpoint written to {directory}"
    )


def _exported_line(result: ExportResult, directory: Path) -> str:
    """What an export of ``directory`` did: the files it wrote, or that the folder was
    already up to date at that size (before: "0 tiles and 0 entry bundles written")."""
    if result.tiles_written or result.bundles_written or not result.size:
        return (
            f"exported {counted(result.size, 'entry', 'entries')} to {directory}:"
            f" {counted(result.tiles_written, 'tile')} and"
            f" {counted(result.bundles_written, 'entry bundle')} written"
        )
    return (
        f"{directory} is up to date: {counted(result.size, 'entry', 'entries')}, nothing to write"
    )


class ReceiptFormat(StrEnum):
    """Formats `prov receipt export` writes."""

    TLOG_PROOF = "tlog-proof"


def _receipt_format(value: str) -> ReceiptFormat:
    """The `prov receipt export --format` value as a ReceiptFormat. Raises
    typer.BadParameter (a usage error, exit 2) naming the formats that exist: Typer's
    own enum check says "Value error, 'nope' is not one of 'tlog-proof'"."""
    try:
        return ReceiptFormat(value)
    except ValueError:
        names = [f.value for f in ReceiptFormat]
        which = (
            f"the only format is {names[0]}"
            if len(names) == 1
            else "the formats are " + ", ".join(names)
        )
        raise typer.BadParameter(f"unknown format {value!r}; {which}") from None


@receipt_app.command("export")
def receipt_export(
    sidecar: Annotated[
        Path, typer.Argument(help="A FILE.prov sidecar holding a receipt.", callback=existing)
    ],
    format: Annotated[
        ReceiptFormat,
        typer.Option(
            "--format",
            parser=_receipt_format,
            metavar="[tlog-proof]",
            help="c2sp.org/tlog-proof: the standard offline proof format (the only one).",
        ),
    ] = ReceiptFormat.TLOG_PROOF,
    output: Annotated[
        Path | None,
        typer.Option(
            help="The file to write it to, replaced whole (a FIFO or device, /dev/stdout included, is refused). Default: FILE.tlog-proof beside the sidecar."
        ),
    ] = None,
    home: HomeOpt = default_home(),
) -> None:
    """Write the sidecar's receipt as a C2SP tlog-proof: the leaf data (as `extra`), the
    leaf index, the inclusion proof and the signed checkpoint. Anyone checks it with
    `prov receipt verify FILE.tlog-proof --log-key KEY`; the sidecar is left as it is."""
    sc = _read_sidecar(sidecar)
    if sc.receipt is None:
        raise ConfigError(_no_receipt(sidecar, sc, home))
    target = output or sidecar.with_name(sidecar.name.removesuffix(".prov") + FILE_SUFFIX)
    in_existing_folder(target, "--output")
    if target.is_dir():  # was exit 1, "error: Is a directory: DIR"
        raise typer.BadParameter(
            f"{target} is a folder; name the file to write, e.g. --output"
            f" {target / (sidecar.name.removesuffix('.prov') + FILE_SUFFIX)}",
            param_hint="--output",
        )
    from provenance.core.files import file_kind

    try:
        mode: int | None = target.stat().st_mode  # through a link: what it leads to
    except OSError:
        mode = None  # nothing there yet, or a link leading nowhere: the proof is made there
    if mode is not None and not stat.S_ISREG(mode):  # --output /dev/stdout, a FIFO
        raise typer.BadParameter(
            f"{target} is {file_kind(mode)}, not a regular file: the proof is written beside"
            " it and renamed over it, which would replace it (a link, such as /dev/stdout,"
            " with a file); name a file to write, e.g. --output proof.txt",
            param_hint="--output",
        )
    _atomic_write(target, encode_tlog_proof(sc.receipt).encode())
    out.print(f"wrote {shown_line(str(target))} ({format.value}, leaf {sc.receipt.leaf_index})")


def _no_receipt(path: Path, sc: Sidecar, home: Path) -> str:
    """Why the sidecar at ``path`` has no receipt and what to do, as far as the device
    folder ``home`` (--home: $PROV_HOME, else ~/.prov) knows: queued, or refused and set
    aside."""
    from clients.device import DeviceHome

    return f"{path} has no receipt: {DeviceHome(home).unlogged_note(sc)}"


def _read_sidecar(path: Path) -> Sidecar:
    """The sidecar named on the command line. Raises UsageError (exit 2, as for `prov
    verify --sidecar`) when it cannot be read (also a FIFO, a device or a file over
    MAX_SIDECAR_BYTES, which `read_bounded` refuses) or decoded."""
    try:
        data = read_bounded(path, MAX_SIDECAR_BYTES, "sidecar")
    except OSError as e:
        raise UsageError(f"cannot read sidecar {path}: {e.strerror or e}") from e
    except MediaError as e:
        raise UsageError(f"{path} is not a usable sidecar ({e})") from e
    return _decode_named(path, data)


def _decode_named(path: Path, data: bytes) -> Sidecar:
    """`decode_sidecar` of ``data`` read from ``path``. A sidecar named on the command line
    that does not decode is a usage error (UsageError, exit 2, as for `prov verify
    --sidecar`) naming the file; when ``path`` is a media file (the common slip of naming
    the photo instead of its sidecar) it names the sidecar to give."""
    try:
        return decode_sidecar(data)
    except ClaimError as e:
        beside = path.with_name(path.name + ".prov")
        hint = f": give its sidecar, {beside}" if beside.is_file() else ""
        from provenance.media.image import SNIFF_BYTES, sniff_media_type

        kind = sniff_media_type(data[:SNIFF_BYTES])
        if kind is None:
            raise UsageError(f"{path} is not a usable sidecar ({e}){hint}") from None
        raise typer.BadParameter(  # the photo named instead of its sidecar: a usage error
            f"{path} is not a usable sidecar: it is the media file itself ({kind})"
            + (hint or f"; give its sidecar {beside.name} (`prov sign` writes it beside the file)"),
            param_hint="SIDECAR",
        ) from None


@receipt_app.command("verify")
def receipt_verify(
    sidecar: Annotated[
        Path,
        typer.Argument(
            help="A FILE.prov sidecar holding a receipt, or a FILE.tlog-proof (C2SP tlog-proof).",
            callback=existing,
        ),
    ],
    log_key: Annotated[
        str | None,
        typer.Option(
            help="The log's verifier key (text or a file holding it); `prov log key --server"
            " HOST:PORT` prints it. Required.",
            callback=verifier_key,
            show_default=False,
        ),
    ] = None,
    with_sidecar: Annotated[
        Path | None,
        typer.Option(
            "--sidecar",
            help="With a tlog-proof: also check that it proves this sidecar's claim, signed by"
            " the sidecar's key.",
            callback=existing,
        ),
    ] = None,
    witness: WitnessOpt = None,
    witness_quorum: WitnessQuorumOpt = None,
    home: HomeOpt = default_home(),
) -> None:
    """Verify a receipt offline: a sidecar's public key against the claim's key id and
    signature, then the checkpoint signature, leaf and inclusion proof. A tlog-proof is
    verified the same way against the claim in its leaf data. With --witness, also the
    witnesses' cosignatures on its checkpoint (exit 14 below the quorum; a receipt issued
    before its checkpoint was cosigned gets the cosignatures with `prov receipt refresh`).

    Exit codes: 0 the receipt verifies; 1 it does not (another log's key, a failed proof
    or signature) or the sidecar holds no receipt yet; 2 usage errors; 14 below the
    witness quorum."""
    if log_key is None:
        raise typer.BadParameter(
            "missing: a receipt is verified against the log's verifier key; `prov log key"
            " --server HOST:PORT` prints it (as does `prov serve` in its 'log key:' line)",
            param_hint="--log-key",
        )
    from clients.cosigned import policy_keys

    witnesses = policy_keys(witness or [])
    quorum = witness_quorum_of(len(witnesses), witness_quorum)
    try:
        data = read_bounded(sidecar, max(MAX_SIDECAR_BYTES, MAX_PROOF_BYTES), "receipt")
    except OSError as e:
        raise UsageError(f"cannot read {sidecar}: {e.strerror or e}") from e
    except MediaError as e:
        raise UsageError(f"{sidecar} is not a usable sidecar ({e})") from e
    if is_tlog_proof(data) or sidecar.name.endswith(FILE_SUFFIX):  # named one: told why not
        note = _verify_tlog_proof(data, _read_key_text(log_key), with_sidecar)
        _print_witnesses(note, witnesses, quorum)
        return
    sc = _decode_named(sidecar, data)
    if sc.receipt is None:
        raise ConfigError(_no_receipt(sidecar, sc, home))
    check_sidecar_key(sc)
    cp = _checked_receipt(sc.receipt, sc.signed_claim, _read_key_text(log_key), sc.log_verifier_key)
    out.print(
        f"receipt OK: leaf {sc.receipt.leaf_index} of {cp.size} in log {cp.origin},"
        f" logged {sc.receipt.integrated_at:%Y-%m-%d %H:%M:%S} UTC; claim by device"
        f" {sc.signed_claim.key_id.hex()[:16]}… (signature verified with the sidecar's key)",
    )
    try:
        _print_witnesses(sc.receipt.checkpoint, witnesses, quorum)
    except WitnessQuorumError as e:
        raise WitnessQuorumError(
            f"{e} (a receipt is issued before its checkpoint is cosigned: `prov receipt"
            f" refresh {sidecar}` brings it to the newest cosigned checkpoint)"
        ) from e


def _checked_receipt(
    receipt: Receipt, signed: SignedClaim, vkey: str, logged_by: str = ""
) -> Checkpoint:
    """`verify_receipt` against the log key ``vkey`` (`prov receipt verify`). A checkpoint
    without any signature line of that key, from another log or checked with another
    log's key, is said as such in words, naming the log the sidecar says it was logged by
    (``logged_by``, its `log_verifier_key`: unauthenticated, so only a hint) or else the
    keys that did sign it. Raises SignatureError, LogError or ProofError."""
    verifier = NoteVerifier.from_vkey(vkey)
    wanted = f"{verifier.name}+{verifier.key_id.hex()}"
    signers = note_signers(receipt.checkpoint)
    if wanted not in signers:
        by = (
            f"the sidecar says it was logged by {logged_by}"
            if logged_by and logged_by != vkey and _is_verifier_key(logged_by)
            else f"it is signed by {', '.join(clipped_line(s, 80) for s in signers)}"
        )
        raise SignatureError(
            f"the receipt is not from the log of --log-key {wanted}: its checkpoint carries no"
            f" signature by that key ({by}); give the key of the log that issued it (`prov log"
            " key --server HOST:PORT` prints a server's)"
        )
    return verify_receipt(receipt, signed, verifier)


def _is_verifier_key(text: str) -> bool:
    """Whether ``text`` is a note verifier key (`NoteVerifier.from_vkey`, bounded before
    it is split): a sidecar's unauthenticated ``logVerifierKey`` is named in a message
    only then (any text, megabytes or a terminal escape, was echoed whole)."""
    try:
        NoteVerifier.from_vkey(text)
    except ProvenanceError:
        return False
    return True


@receipt_app.command("refresh")
def receipt_refresh(
    sidecar: Annotated[
        Path, typer.Argument(help="A FILE.prov sidecar holding a receipt.", callback=existing)
    ],
    server: ServerOpt = default_server(),
    log_key: Annotated[
        str | None,
        typer.Option(
            help="The log's verifier key (text or file). Default: the sidecar's, else the server's.",
            callback=verifier_key,
        ),
    ] = None,
    witness: WitnessOpt = None,
    witness_quorum: WitnessQuorumOpt = None,
    witness_url: WitnessUrlOpt = None,
    home: HomeOpt = default_home(),
) -> None:
    """Bring the sidecar's receipt up to the server's newest witness-cosigned checkpoint:
    receipts are issued as soon as a capture is durable, before witnesses cosign, so the
    cosignatures come afterwards. The new inclusion proof, the log's signature and the
    consistency of the old and new checkpoints are verified before the sidecar is
    rewritten (atomically); with --witness, also the policy's cosignatures. Exit 14 when
    no cosigned checkpoint covers the receipt yet (each witness's status is printed:
    unreachable, or refused, as for a forked log) or the policy is not met, and when the
    server has no witnesses at all (said so: nothing is cosigned there; the sidecar is
    left as it is, and its receipt still verifies with the log's key alone). With
    --witness-url, the receipt's checkpoint must also be of one append-only log with the
    checkpoint each witness named last cosigned, fetched from it: exit 3 when not (a
    fork), 14 when one cannot be fetched or checked. Exit 3 too (LOG INTEGRITY FAILURE,
    the sidecar left as it is) when the server presents another log key than the
    receipt's (another log: a `make web` run anew) or a checkpoint or proof that does
    not verify with it; 1 when the server cannot be reached; 2 usage errors."""
    from clients.cosigned import needs_policy, policy_keys

    witnesses = policy_keys(witness or [])
    quorum = witness_quorum_of(len(witnesses), witness_quorum)
    needs_policy(witness_url, witnesses)
    with _device_lock(home):  # not between a `prov sign --force`'s read and write
        _refresh(sidecar, server, log_key, witnesses, quorum, home, witness_url or [])


def _read_key_text(value: str) -> str:
    """`provenance.witness.client.read_key_text`, its module (and the metrics and gRPC it
    loads) loaded only when a command reads a key."""
    from provenance.witness.client import read_key_text

    return read_key_text(value)


def _atomic_write(path: Path, data: bytes) -> None:
    """`clients.device.atomic_write`, its module loaded only when a command writes."""
    from clients.device import atomic_write

    atomic_write(path, data)


def _device_lock(home: Path) -> AbstractContextManager[None]:
    """The lock of the device folder ``home`` (`DeviceHome.locked`, which `prov sign`
    holds while it writes sidecars) when that folder exists; else nothing to hold, and
    no folder is made."""
    from clients.device import DeviceHome

    return DeviceHome(home).locked() if home.is_dir() else nullcontext()


def _refresh(
    sidecar: Path,
    server: str,
    log_key: str | None,
    witnesses: list[str],
    quorum: int,
    home: Path,
    witness_urls: list[str],
) -> None:
    """`receipt_refresh` of ``sidecar``: read it, fetch and check the newest cosigned
    checkpoint's proof (each call within the client's deadline), rewrite it; first, the
    receipt's checkpoint proven of one log with each of ``witness_urls``' checkpoints
    (`clients.cosigned.check_witnessed`)."""
    sc = _read_sidecar(sidecar)
    if sc.receipt is None:
        raise ConfigError(_no_receipt(sidecar, sc, home))
    check_sidecar_key(sc)
    from clients.api import ProvenanceClient
    from clients.cosigned import (
        check_witnessed,
        cosigned_receipt,
        cosigner_names,
        witnessed_checkpoints,
    )

    with ProvenanceClient(server) as c:
        server_vkey, _ = c.log_key()
        vkey = _read_key_text(log_key) if log_key else (sc.log_verifier_key or server_vkey)
        if not log_key and not _is_verifier_key(vkey):
            raise LogError(
                f"the sidecar's log key (logVerifierKey) is no verifier key NAME+ID+KEY;"
                f" give the log's key with --log-key (the server at {server} presents"
                f" {server_vkey})"
            )
        if vkey != server_vkey:
            raise LogIntegrityError(
                _another_log(server, server_vkey, vkey, sidecar, sc.log_verifier_key, bool(log_key))
            )
        verifier = NoteVerifier.from_vkey(vkey)
        verify_receipt(sc.receipt, sc.signed_claim, verifier)
        views = witnessed_checkpoints(witness_urls, witnesses, verifier)
        check_witnessed(c, open_checkpoint(sc.receipt.checkpoint, verifier), views)
        try:
            receipt = cosigned_receipt(c, sc.receipt, sc.signed_claim, verifier)
        except NoWitnessesError as e:
            raise NoWitnessesError(_no_witnesses(server, sidecar, bool(witnesses))) from e
    size = open_checkpoint(receipt.checkpoint, verifier).size
    names = ", ".join(cosigner_names(receipt.checkpoint))
    _print_witnesses(receipt.checkpoint, witnesses, quorum)
    if receipt == sc.receipt:
        out.print(
            f"{shown_line(str(sidecar))}: the receipt already carries the newest cosigned"
            " checkpoint"
        )
        return
    _atomic_write(sidecar, encode_sidecar(sc.with_receipt(receipt, vkey)))
    out.print(
        f"{shown_line(str(sidecar))}: receipt of leaf {receipt.leaf_index} now proven against"
        f" checkpoint {size}, with cosignature lines by {names or 'no witness'} (check them with"
        " `prov receipt verify --witness KEY`)",
    )


def _another_log(
    server: str, server_vkey: str, vkey: str, sidecar: Path, named: str, given: bool
) -> str:
    """What `prov receipt refresh` of ``sidecar`` says when the server at ``server``
    presents ``server_vkey``, not ``vkey``, the log key trusted (``given``: the --log-key
    given; else the receipt's, ``named``, the sidecar's logVerifierKey): what is wrong,
    that the sidecar is kept, how its receipt is still checked (with ``named``, the key of
    the log that issued it, when the sidecar names one), and, for a log replaced on
    purpose (each `make web` starts a new one), how its file gets a receipt of the new
    log. A --log-key that is not the key the sidecar names, which the server presents,
    is said to be the likely fault."""
    side = shown_line(str(sidecar))
    if given and named == server_vkey:  # the receipt's own log, asked with another key
        return (
            f"the server at {server} presents log key {server_vkey}, not the --log-key"
            f" given, {vkey}; {side} is unchanged. The server's key is the one {side} names"
            " (logVerifierKey), the key of the log that issued its receipt: is the"
            " --log-key right?"
        )
    trusted = f"the --log-key given, {vkey}" if given else f"the receipt's {vkey}"
    issuer = named if given and named else ("KEY" if given else vkey)
    return (
        f"the server at {server} presents log key {server_vkey}, not {trusted}:"
        f" another log, or the log's key changed; {side} is unchanged. Its receipt is"
        f" still checked offline with the key of the log that issued it: `prov receipt"
        f" verify {side} --log-key {issuer}`. If that log was replaced on purpose (each"
        " `make web` starts a new one), the file's signer can sign it again for the new"
        " log (`prov sign --force FILE`, which keeps the old sidecar as FILE.prov.bak)"
    )


def _no_witnesses(server: str, sidecar: Path, policy: bool) -> str:
    """What `prov receipt refresh` of ``sidecar`` says when the server at ``server``
    has no witnesses (``policy``: --witness was given)."""
    wanted = " A --witness policy cannot be met by this server's receipts." if policy else ""
    return (
        f"the server at {server} has no witnesses (its operator started it without"
        " `--witness URL=KEY`), so no checkpoint of its log is cosigned and there is"
        f" nothing to refresh this receipt to: {shown_line(str(sidecar))} is unchanged. Its"
        " receipt still proves the claim was logged, against the log's own signed"
        f" checkpoint: `prov receipt verify {shown_line(str(sidecar))} --log-key KEY`"
        f" checks it (`prov log key --server {server}` prints KEY).{wanted}"
        " It exits 14 (not cosigned), as while witnesses have yet to cosign: a receipt"
        " cosigned by witnesses needs a server that has them"
    )


def _print_witnesses(note: str, witnesses: list[str], quorum: int) -> None:
    """Check the witness cosignatures on ``note`` (see `check_quorum`) and say who signed."""
    if not witnesses and not quorum:
        return
    signed = check_quorum(note, witnesses, quorum)
    names = ", ".join(f"{c.name} at {c.timestamp:%Y-%m-%d %H:%M:%S} UTC" for c in signed)
    out.print(f"cosigned by {len(signed)} of {len(witnesses)} witnesses: {names or 'none'}")


def _verify_tlog_proof(data: bytes, vkey: str, sidecar: Path | None) -> str:
    """`prov receipt verify FILE.tlog-proof`: see `provenance.log.tlogproof`. Returns the
    proof's checkpoint note."""
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise LogError("the tlog-proof is not UTF-8 text") from e
    receipt = decode_tlog_proof(text)
    signed, _ = decode_log_entry(receipt.log_entry)
    how = "its signature was checked by the log; add --sidecar to check it with the device key"
    if sidecar is not None:
        sc = _read_sidecar(sidecar)
        check_sidecar_key(sc)
        signed = sc.signed_claim
        how = "signature verified with the sidecar's key"
    cp = _checked_receipt(receipt, signed, vkey)
    out.print(
        f"tlog-proof OK: leaf {receipt.leaf_index} of {cp.size} in log {cp.origin},"
        f" logged {receipt.integrated_at:%Y-%m-%d %H:%M:%S} UTC; claim by device"
        f" {signed.key_id.hex()[:16]}… ({how})",
    )
    return receipt.checkpoint
