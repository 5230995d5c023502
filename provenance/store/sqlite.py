"""The SQLite backend: one database file, the embedded default.

WAL mode with ``synchronous=FULL``: a transaction is durable (its WAL frames fsynced)
when ``COMMIT`` returns, and a submission is acknowledged only after that. The schema
is versioned with ``PRAGMA user_version``; migrations run in order at open. With
``exclusive`` (a server), an exclusive lock on ``DB.lock`` refuses a second server on
the same file: SQLite's log has one writing process.

One writer connection under a lock; one reader connection per thread. A server's store
(``exclusive``) copies the WAL back into the file on a checkpoint thread of its own
(``PRAGMA wal_checkpoint(PASSIVE)`` every ``CHECKPOINT_INTERVAL_S``), so a group commit
only appends to the WAL and fsyncs it; the writer checkpoints by itself only when the WAL
outgrows ``WAL_CHECKPOINT_PAGES`` pages, and cuts the -wal file back to
``WAL_SIZE_LIMIT_BYTES`` when it starts the WAL over. Both begin once the server's start is accepted
(`SqliteStore.started`); until then nothing of the WAL is copied into the file, not even
as the store closes, so a refused start leaves the file and its -wal as it found them.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from provenance.core.errors import (
    ConfigError,
    LogError,
    LogIntegrityError,
    ProvenanceError,
    StorageError,
    StoreNotAnsweringError,
    StoreUnavailableError,
)
from provenance.core.files import file_kind
from provenance.store.sql import (
    _LEAF_COLS,
    PUBLIC_DAMAGED,
    PUBLIC_FULL,
    PUBLIC_UNUSABLE,
    SqlStore,
    public_not_answered,
    read_only_schema,
)

#: Seconds a statement waits for the database's write lock while another process holds it
#: (SQLite's busy timeout): a backup tool's ``BEGIN IMMEDIATE``, an operator's ``BEGIN
#: EXCLUSIVE``, a second writer. Past it the call fails with StoreNotAnsweringError.
BUSY_TIMEOUT_S = 30.0

log = logging.getLogger(__name__)

#: Migration 6: one loosening row per this many leaves (an index page holds 90 to 240
#: entries).
LOOSEN_EVERY = 32

#: Migration 6 (statements split at ';'): free space in the pages of the claim, leaf and
#: file hash indexes. CREATE INDEX
#: (migration 5, a VACUUM, a log bulk-built) fills every page, so each append's random
#: insert into each of them split a full page, writing about 2 pages to the WAL instead
#: of 1 (6.4 WAL pages per leaf at 10^7 leaves, 954 per commit of 150). Rows with
#: random hashes, one per `LOOSEN_EVERY` leaves (3 to 8 per index page), are inserted
#: (each splits the full page it lands in, leaving its neighbours about 3/4 full, as
#: appends leave an index) and deleted again in the same transaction: the log's rows
#: and answers are unchanged. 7 s at 10^6 leaves, 2.5 minutes at 10^7 (measured here).
#: Also run on a log bulk-built for the benches (`bench/biglog.py`).
INDEX_ROOM = f"""
WITH RECURSIVE n(i) AS (
    SELECT 1 UNION ALL SELECT i + 1 FROM n
    WHERE i < (SELECT COALESCE(MAX(idx) - MIN(idx), 0) / {LOOSEN_EVERY} FROM leaves)
)
INSERT INTO leaves({_LEAF_COLS})
SELECT -i, randomblob(32), randomblob(32), x'', 0, randomblob(32), 0, 0, x'' FROM n;
DELETE FROM leaves WHERE idx < 0
"""

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE devices (
        device_id BLOB PRIMARY KEY,
        public_key BLOB NOT NULL UNIQUE,
        label TEXT NOT NULL DEFAULT '',
        enrolled_at INTEGER NOT NULL,
        last_sequence INTEGER NOT NULL DEFAULT 0,
        last_claim_hash BLOB NOT NULL DEFAULT x'',
        revoked_at INTEGER,
        revocation_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE enrollment_tokens (
        token_hash BLOB PRIMARY KEY,
        label TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        device_id BLOB
    );
    CREATE TABLE leaves (
        idx INTEGER PRIMARY KEY,
        leaf_hash BLOB NOT NULL,
        claim_hash BLOB NOT NULL UNIQUE,
        device_id BLOB NOT NULL,
        sequence INTEGER NOT NULL,
        file_sha256 BLOB NOT NULL,
        integrated_at INTEGER NOT NULL,
        chain_linked INTEGER NOT NULL,
        entry BLOB NOT NULL,
        receipt BLOB NOT NULL
    );
    CREATE INDEX leaves_file_sha256 ON leaves(file_sha256);
    CREATE INDEX leaves_leaf_hash ON leaves(leaf_hash);
    CREATE TABLE soft_hashes (
        leaf_idx INTEGER NOT NULL,
        algorithm TEXT NOT NULL,
        hash BLOB NOT NULL,
        quality INTEGER NOT NULL,
        timestamp_seconds REAL NOT NULL
    );
    CREATE INDEX soft_hashes_leaf ON soft_hashes(leaf_idx);
    CREATE TABLE nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        size INTEGER PRIMARY KEY,
        note TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    """,
    # 2: an X.509 chain (PEM) per device, issued or accepted at enrollment, for C2PA export
    2: """
    ALTER TABLE devices ADD COLUMN certificate_pem TEXT NOT NULL DEFAULT ''
    """,
    # 3: key history in the log: which leaves are enrollments (kind 1) and revocations
    # (kind 2) of which device (an index; the entries themselves are the truth)
    3: """
    CREATE TABLE key_events (
        leaf_idx INTEGER PRIMARY KEY,
        device_id BLOB NOT NULL,
        kind INTEGER NOT NULL
    );
    CREATE INDEX key_events_device ON key_events(device_id, kind)
    """,
    # 4: receipts are rebuilt on demand (the entry, the first checkpoint covering the leaf
    # and an inclusion proof from the nodes), no longer stored whole. The file shrinks by
    # about 1 KB per capture after a VACUUM.
    # 4 also adds the near-duplicate index's packs (`provenance.index.packs`).
    4: """
    ALTER TABLE leaves DROP COLUMN receipt;
    CREATE TABLE index_packs (
        first INTEGER PRIMARY KEY,
        next INTEGER NOT NULL,
        ids BLOB NOT NULL,
        words BLOB NOT NULL,
        video INTEGER NOT NULL
    )
    """,
    # 5: the leaf and file hash indexes keyed by the first 8 bytes of the hash (`HASH_KEY`
    # in store/sql.py) instead of all 32: 2.7x smaller (at 10^6 leaves 17 MB each instead
    # of 46), so more of them stays cached and an append reads fewer of their pages; a
    # lookup matches the key, then the full hash. Dropped first, so the new indexes reuse
    # the old ones' pages. At 10^7 leaves this takes a few minutes, once.
    5: """
    DROP INDEX leaves_leaf_hash;
    DROP INDEX leaves_file_sha256;
    CREATE INDEX leaves_leaf_key ON leaves(substr(leaf_hash, 1, 8));
    CREATE INDEX leaves_file_key ON leaves(substr(file_sha256, 1, 8))
    """,
    # 6: free space in the pages of the claim, leaf and file hash indexes (`INDEX_ROOM`)
    6: INDEX_ROOM,
}
SCHEMA_VERSION = max(_MIGRATIONS)
#: The newest migration that changed tables or columns (6 only fills index pages
#: differently): a file of this schema or newer, opened read-only, reads as the newest.
TABLES_VERSION = 5
#: Page cache of the writer connection, KiB (SQLite's default is 2 MiB).
WRITER_CACHE_KIB = 128 * 1024
#: WAL pages after which the writer checkpoints by itself (SQLite's default is 1,000).
WAL_CHECKPOINT_PAGES = 16_384
#: Bytes the -wal file is cut back to when the writer starts the WAL over after a whole
#: checkpoint (``PRAGMA journal_size_limit``; SQLite's default keeps the file at the
#: largest it ever grew: 200,000 appends with two readers left 81.7 MiB beside a 46 MiB
#: database, and a burst under a long read, more). The writer's checkpoint point in
#: 4 KiB pages, so a WAL within it is never cut.
WAL_SIZE_LIMIT_BYTES = WAL_CHECKPOINT_PAGES * 4096
#: Seconds between the checkpoint thread's passes.
CHECKPOINT_INTERVAL_S = 0.5
#: Seconds between two log lines of one lasting checkpoint failure.
CHECKPOINT_WARN_EVERY_S = 60


def _lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


#: How `_lock_file` opens DB.lock: made if missing, never blocking (a FIFO), no tty taken.
_LOCK_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _lock_not_regular(path: Path, kind: str) -> ConfigError:
    """The error for a database lock file ``path`` that is ``kind`` ("a FIFO (named
    pipe)", `provenance.core.files.file_kind`), not a regular file."""
    return ConfigError(
        f"the database lock file {path} is {kind}, not a regular file: move it away (the"
        " server makes a new one)"
    )


#: The files SQLite keeps beside a database ``DB`` (``DB-wal``, ``DB-shm``, ``DB-journal``).
_COMPANIONS = ("-wal", "-shm", "-journal")

#: The first 16 bytes of every SQLite 3 database file (sqlite.org/fileformat2.html):
#: a file that starts so and that SQLite cannot read is a damaged database, one that
#: does not is no SQLite database at all.
SQLITE_HEADER = b"SQLite format 3\x00"

#: How Python's sqlite3 says a text value is not UTF-8 (it has no SQLite error code).
_NOT_UTF8 = re.compile(r"Could not decode to UTF-8 column '([^']*)'")


def _error_code(e: BaseException) -> int:
    """SQLite's primary result code of ``e`` (SQLITE_CORRUPT, ...); 0 when it has none."""
    return (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF


def is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` is a regular file starting with `SQLITE_HEADER`; False when it
    cannot be read (a FIFO or a device is not opened)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except OSError:
        return False


def _check_companions(db: Path) -> None:
    """Raise ConfigError when a file SQLite keeps beside the database ``db``
    (`_COMPANIONS`) is there but no regular file (a link is judged by what it leads to):
    a FIFO at DB-journal held SQLite's open of it (its hot-journal check) for good, in C,
    deaf to SIGTERM; one at DB-shm ended in "disk I/O error", the database blamed; one at
    DB-wal was taken for the WAL. Nothing is opened."""
    for suffix in _COMPANIONS:
        path = Path(f"{db}{suffix}")
        try:
            mode = path.stat().st_mode
        except OSError:  # not there (SQLite makes it), or SQLite's open says why not
            continue
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"{path} is {file_kind(mode)}, not a regular file: SQLite keeps the"
                f" database's {suffix.lstrip('-')} file there; move it away"
            )


def _open_lock(path: Path, flags: int) -> int:
    """Open the database lock file ``path`` with ``flags`` (O_NONBLOCK among them) and
    return its descriptor, refusing anything there but a regular file. Raises
    FileNotFoundError when it is missing (and ``flags`` lack O_CREAT), ConfigError for
    anything not a regular file or that cannot be opened."""
    try:
        # O_NONBLOCK: a FIFO there held the open for a peer that never came (until a
        # signal); now ENXIO (write end), or judged below (read end, or a writer there)
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if isinstance(e, FileNotFoundError) and not flags & os.O_CREAT:
            raise  # the caller's to judge: no lock file, no server
        if e.errno == errno.ENXIO:
            raise _lock_not_regular(path, "a FIFO (named pipe)") from e
        raise ConfigError(f"cannot open the database lock file {path}: {e.strerror}") from e
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _lock_not_regular(path, file_kind(mode))
    return fd


def _lock_file(db: Path) -> IO[bytes]:
    """Hold an exclusive lock on ``DB.lock`` until the handle is closed: the log has one
    writer, so a second server on the same database is refused. Raises ConfigError."""
    path = _lock_path(db)
    handle = os.fdopen(_open_lock(path, _LOCK_FLAGS), "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        handle.close()
        raise ConfigError(
            f"another server is already using {db} (lock {path} is held); run one server per"
            " database (several servers need PostgreSQL)"
        ) from e
    return handle


def held_by_a_server(db: Path) -> bool:
    """Whether a running server (an exclusive `SqliteStore`) holds the database ``db``:
    its ``DB.lock`` is locked (flock). Never blocks: raises ConfigError, as the server's
    start does (`_open_lock`), when the lock file is no regular file (a FIFO there held
    the open until Ctrl-C) or cannot be opened."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        handle = os.fdopen(_open_lock(_lock_path(db), flags), "rb")
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _holds_bytes(path: Path) -> bool:
    """Whether ``path`` is a file holding at least one byte."""
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def _file_id(path: Path) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at ``path``; None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class SqliteStore(SqlStore):
    """The database file (see module docstring). Raises `LogError` when the file is not
    ours or its schema is newer than this code, ConfigError when ``exclusive`` and
    another server holds it.

    ``read_only`` (an audit): every connection opens the file with SQLite's ``mode=ro``
    and ``query_only``, sets no journal mode and runs no migration (an older schema is
    described in ``outdated``); a write raises StorageError. SQLite creates the WAL's
    -wal and -shm files even for such a reader; `close` has SQLite remove them again
    when they were not there before and no other connection uses them."""

    shared = False

    def __init__(self, path: Path, *, exclusive: bool = False, read_only: bool = False) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self.read_only = read_only
        _check_companions(self.path)  # before SQLite opens them: a FIFO held its open
        # whether the WAL's files were absent when this store opened the file
        self._wal_absent = not self._wal_files()
        # whether they were, for a read-only store (`close` removes them again)
        self._no_wal = read_only and self._wal_absent
        #: whether a -wal holding anything was beside the file before this store opened
        #: it (one a connection of this store made cannot be a stray one: `_malformed`)
        self._wal_found = _holds_bytes(Path(f"{self.path}-wal"))
        self._lock = _lock_file(self.path) if exclusive else None
        #: the files of a new database this exclusive store made, seen absent while it
        #: held the lock (so no other server can have made them): `discard` removes them
        files = [self.path] + [Path(f"{self.path}{s}") for s in _COMPANIONS]
        new = exclusive and not os.path.lexists(self.path)
        self._made = [p for p in files if not os.path.lexists(p)] if new else []
        #: whether this store created the database file (see `discard`)
        self.created = bool(self._made)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        # guards `_readers` only: a thread's first read must not wait for the writer,
        # which holds `_write_lock` while SQLite's write lock is another process's (a
        # backup tool's BEGIN IMMEDIATE: up to the 30 s busy timeout)
        self._readers_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        #: a server's read-only hold on a file that was there, opened first and closed
        #: last until its start is accepted (`_hold_file`)
        self._guard = self._hold_file() if exclusive and not new else None
        try:
            self._writer = self._connect()
            #: the file the writer opened (st_dev, st_ino): each write checks the path
            #: still names it (`_check_file`)
            self._file = _file_id(self.path)
            self._stop = threading.Event()
            self._checkpointer: threading.Thread | None = None
            self._holding = False  # see below
            self._checkpoint_passes = 0  # `_checkpoint_loop`
            if read_only:
                self._check_schema()
                return
            # the writer's page cache: random inserts into the hash indexes (claim, leaf,
            # file) then read from memory at 10^6 entries instead of from the file
            self._writer.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            # a batch dirties a page per leaf in each hash index: copying them back into the
            # file after every commit would double the commit's work (see module docstring).
            # A server's store copies nothing back until its start is accepted (`started`):
            # a -wal found beside the file may not be this file's (a stale one beside a
            # restored copy, another log's), and a start refused on what it holds must
            # leave both as found (before: the refusal itself copied it in, and the file
            # that had the newer log was lost).
            self._holding = exclusive
            self._writer.execute(
                f"PRAGMA wal_autocheckpoint={0 if exclusive else WAL_CHECKPOINT_PAGES}"
            )
            if not exclusive:
                self._writer.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self._migrate()
        except BaseException:
            writer: sqlite3.Connection | None = getattr(self, "_writer", None)
            if writer is not None:
                writer.close()
            if self._guard is not None:
                self._guard.close()
            self._leave_wal_as_found()
            for p in self._made:  # a new database that failed to open: not left half made
                p.unlink(missing_ok=True)
            if self._lock is not None:
                self._lock.close()
            raise

    # ---------------------------------------------------------------- plumbing

    def _connect(self, *, reading: bool = False) -> sqlite3.Connection:
        """A connection to the file (read-only for a ``read_only`` store). Raises LogError
        when it cannot be opened; ``reading`` (a reading thread's first connection, made
        during a call), StoreUnavailableError instead: the file was there when the store
        opened, so it is gone for now (its folder moved away, a volume unmounted, no file
        descriptor left), not a wrong request; before, LogError reached callers as
        OUT_OF_RANGE. Either way the caller is told `PUBLIC_UNUSABLE`, no path. A reading
        connection is opened ``mode=rw``: a file deleted under the server is an error
        (before, it was opened read-write-create, and made a new, empty log at the path)."""
        if self.read_only:
            return self._connect_read_only()
        try:
            conn = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=rw" if reading else self.path,
                uri=reading,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_S,
            )
        except sqlite3.Error as e:
            raise self._unopened(e, reading) from e
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            # closed now, while a server's hold (`_hold_file`) still keeps SQLite from
            # copying the -wal into the file as it closes (before: left to the garbage
            # collector, it closed last, and a stale -wal replaced the newer file's pages)
            conn.close()
            unreadable = None if reading else self._unreadable(e)
            raise (unreadable or self._unopened(e, reading)) from e
        return conn

    def _unopened(self, e: sqlite3.Error, reading: bool) -> LogError | StoreUnavailableError:
        """The error for a connection SQLite would not open or set up: for ``reading`` (a
        reading thread's, during a call) StoreUnavailableError, else LogError; callers are
        told `PUBLIC_UNUSABLE`, no path."""
        why = f"cannot open database {self.path}: {e}"
        if reading:
            return StoreUnavailableError(why, public=PUBLIC_UNUSABLE)
        return LogError(why, public=PUBLIC_UNUSABLE)

    def _malformed(self, e: Exception) -> LogIntegrityError | None:
        """The LogIntegrityError (exit 3: `prov serve` refusing its start, `prov log
        audit --db` and `prov log export-tiles`) for a file SQLite calls malformed
        (SQLITE_CORRUPT: at the open, or in a read), or calls no database
        (SQLITE_NOTADB) though it starts with `SQLITE_HEADER` (a file cut short, its
        header's page size overwritten); None for any other error, a file of other
        bytes included (`_unreadable`: no provenance database). Most often a stray -wal
        beside it (an earlier run's, restored with the folder), which SQLite reads as
        the file's own whoever wrote it, so its older pages over the newer file's do
        not hold together: the message names the -wal when one holding anything was
        there before this store opened the file (an empty one a connection of this
        store made is nobody's stray), and says what to do. Until `started`, nothing
        of the -wal is copied into the file (`_hold_file`)."""
        code = _error_code(e)
        if code != sqlite3.SQLITE_CORRUPT and not (
            code == sqlite3.SQLITE_NOTADB and is_sqlite_file(self.path)
        ):
            return None
        name = self.path.name
        if self._wal_found:
            return LogIntegrityError(
                f"the database {self.path} is damaged, or the {name}-wal beside it is not"
                f" its own: SQLite cannot read the two together ({e}); both are left as"
                f" found. If {name}-wal is a stray one (an earlier run's, copied back with"
                f" a restored folder), move {name}-wal and {name}-shm away and try again;"
                " else restore the newest backup",
                public=PUBLIC_DAMAGED,
            )
        return LogIntegrityError(
            f"the database {self.path} is damaged: SQLite cannot read it ({e}); it is left"
            " as found: restore the newest backup",
            public=PUBLIC_DAMAGED,
        )

    def _unreadable(self, e: Exception) -> ProvenanceError | None:
        """The error for a file SQLite cannot read as a database at the open or the
        schema check: a damaged database (`_malformed`, exit 3), or LogError (exit 1)
        "not a provenance database" for a file that is no SQLite database at all
        (SQLITE_NOTADB, no `SQLITE_HEADER`: random bytes, another program's file);
        None for any other error."""
        malformed = self._malformed(e)
        if malformed is not None or _error_code(e) != sqlite3.SQLITE_NOTADB:
            return malformed
        return LogError(
            f"{self.path} is not a provenance database: it is no SQLite database ({e})",
            public=PUBLIC_UNUSABLE,
        )

    def _hold_file(self) -> sqlite3.Connection | None:
        """A ``mode=ro`` connection to a file that was there, for a server's store: opened
        before its other connections and closed after them all until the start is
        accepted (`started`). SQLite's last connection to a WAL database to close copies
        the -wal into the file; one that may not write cannot, and while it holds the file
        the others' closes cannot either, so a refused start leaves the file and the -wal
        as found. Its first read takes SQLite's lock on the file; a read that fails (a
        file SQLite calls malformed) leaves it held all the same. None when the file
        cannot be opened so (nothing to keep then)."""
        try:
            conn = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
        except sqlite3.Error as e:
            log.debug("%s: no read-only hold on it (%s)", self.path, e)
            return None
        try:
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as e:  # the writer's open says what is wrong
            log.debug("%s: its first read-only read failed (%s)", self.path, e)
        return conn

    def _connect_read_only(self, flags: str = "mode=ro") -> sqlite3.Connection:
        """A ``mode=ro`` connection; on read-only media (a read-only mount, a folder it may
        not write) a WAL database without a -wal file cannot be opened so, as SQLite must
        create its -shm: it is then opened ``immutable`` (a server writing it through
        another, writable mount would have created the -wal first). One with a -wal but
        no -shm there raises LogError saying so: SQLite can read the -wal's transactions
        only through a -shm (sqlite.org/wal.html, "Read-Only Databases")."""
        try:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?{flags}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_S,
            )
            conn.execute("PRAGMA query_only=ON")
        except sqlite3.Error as e:
            raise LogError(f"cannot open database {self.path} read-only: {e}") from e
        wal = self._wal_files()
        if flags == "mode=ro" and self.path.is_file() and len(wal) < 2:
            try:
                conn.execute("PRAGMA user_version").fetchone()  # the file's first read
            except sqlite3.DatabaseError as e:  # "file is not a database" too (no subclass)
                if (
                    isinstance(e, sqlite3.OperationalError)
                    and e.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CANTOPEN
                ):
                    conn.close()
                    if not wal:
                        return self._connect_read_only("mode=ro&immutable=1")
                    # a -wal without its -shm (a backup that left the -shm out): opened
                    # immutable, its committed transactions would silently go missing
                    raise LogError(
                        f"cannot read {self.path} where it is: it has a {wal[0].name} file"
                        f" (transactions not yet copied into the database) but no"
                        f" {self.path.name}-shm, and SQLite cannot create one in this"
                        f" read-only place to read them; copy {self.path.name} and"
                        f" {wal[0].name} together to a writable folder and audit the copy"
                    ) from e
                # any other error is the schema check's to report
        return conn

    def _check_schema(self) -> None:
        """A read-only store's schema check: newer than this code or none at all raise
        LogError; older sets ``outdated``."""
        try:
            (version,) = self._writer.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError as e:
            unreadable = self._unreadable(e)
            raise (unreadable or LogError(f"{self.path} is not a provenance database: {e}")) from e
        self.outdated = read_only_schema(
            SCHEMA_VERSION if TABLES_VERSION <= version <= SCHEMA_VERSION else version,
            SCHEMA_VERSION,
            str(self.path),
            f"`prov serve --db {self.path}` migrates it when it starts (copy the file first"
            " to keep the old one)",
        )

    def _classify(self, e: Exception) -> ProvenanceError | None:
        """Our error for ``e``: its message names the file and gives SQLite's words, for
        the operator; its ``public`` message, for the server's callers, neither
        (`ProvenanceError`)."""
        if not isinstance(e, sqlite3.DatabaseError):
            return None
        not_utf8 = _NOT_UTF8.match(str(e))
        if not_utf8:  # SQLite keeps any bytes an edit casts to text; Python reads UTF-8
            return LogIntegrityError(
                f"the log database {self.path} is damaged: a row's {not_utf8[1]} column"
                " holds text that is not UTF-8, which no writer stores: the row was edited"
                " behind the log's back",
                public=PUBLIC_DAMAGED,
            )
        if getattr(e, "sqlite_errorcode", 0) & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            return StorageError(
                f"the server's storage refused the write ({e}): the disk is full or failing;"
                " nothing was recorded, retry later",
                public=PUBLIC_FULL,
            )
        if getattr(e, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
            return StoreNotAnsweringError(
                f"the database {self.path} did not answer in {BUSY_TIMEOUT_S:g} s: another"
                f" process holds its write lock ({e})",
                BUSY_TIMEOUT_S,
                public=public_not_answered(BUSY_TIMEOUT_S),
            )
        if isinstance(e, sqlite3.OperationalError):
            if self.read_only and self.outdated:
                return StorageError(f"{e}: {self.outdated}", public=PUBLIC_UNUSABLE)
            return StorageError(
                f"the database {self.path} cannot be used now: {e}", public=PUBLIC_UNUSABLE
            )
        malformed = self._malformed(e) if self._holding or self.read_only else None
        return malformed or LogIntegrityError(
            f"the log database is damaged: {e}", public=PUBLIC_DAMAGED
        )

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(reading=True)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        yield conn

    @contextmanager
    def _write(self, wait_s: float | None = None) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT on the writer connection; COMMIT returning means
        durable (WAL, synchronous=FULL). Rolls back on any error. ``wait_s`` is unused:
        the file is always there."""
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                self._check_file()
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite rolls back by itself on a full disk
                    conn.execute("ROLLBACK")
                raise

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """`SqlStore.latest_checkpoint`, after the writer's check that the path still
        names the file opened (`_check_file`; raises StoreUnavailableError otherwise).
        It is the read the server's probe of the database makes (`StoreReads`): before,
        the probe's open connection went on reading a file deleted or moved away, and the
        health check said SERVING, reads answered from the file that was gone, until a
        capture was tried. Now the health check says NOT_SERVING, the callers' reads are
        refused UNAVAILABLE, and GetCheckpoint serves the checkpoint held, until the file
        is back."""
        self._check_file()
        return super().latest_checkpoint()

    def _check_file(self) -> None:
        """Raise StoreUnavailableError (the transaction is rolled back) when the path no
        longer names the file the writer opened: deleted, its folder moved, or replaced
        (a restore copied over it). Before, the writer's open connection went on writing
        into the file that was gone, and callers got receipts for captures that no
        restart would find. One stat (a few us) a transaction; the writer tries again
        (an outage) until the file is back."""
        if self._file is not None and _file_id(self.path) != self._file:
            raise StoreUnavailableError(
                f"the database file {self.path} is gone (deleted, its folder moved, or"
                " replaced) under the running server: nothing was written; put it back, or"
                " restart the server on the right file",
                public=PUBLIC_UNUSABLE,
            )

    def _lock_appends(self, c: object) -> None:
        """BEGIN IMMEDIATE already holds SQLite's one write lock."""

    def _migrate(self) -> None:
        with self._write_lock:
            try:
                (version,) = self._writer.execute("PRAGMA user_version").fetchone()
            except sqlite3.DatabaseError as e:
                why = self._unreadable(e) or LogError(
                    f"{self.path} is not a provenance database: {e}"
                )
                raise why from e
            if version > SCHEMA_VERSION:
                raise LogError(
                    f"{self.path} has schema version {version}; this program knows up to"
                    f" {SCHEMA_VERSION}: upgrade the program"
                )
            pending = sorted(m for m in _MIGRATIONS if m > version)
            if version and pending:  # an existing log, not a new file
                log.info(
                    "%s: migrating schema %d to %d; rebuilding its indexes takes minutes on a"
                    " large log (at 10^7 entries migration 5 about 5 min, 6 about 2.5): let it finish",
                    self.path, version, pending[-1],
                )  # fmt: skip
            started = time.monotonic()
            for v in pending:
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _MIGRATIONS[v].split(";"):
                        if stmt.strip():
                            self._writer.execute(stmt)
                    self._writer.execute(f"PRAGMA user_version = {v}")
                    self._writer.execute("COMMIT")
                except BaseException:
                    # not after the COMMIT itself: a Ctrl-C that lands as it returns (the
                    # migration committed) made ROLLBACK raise "no transaction is active",
                    # a traceback and exit 1 in place of the interrupt's one line and 130
                    if self._writer.in_transaction:
                        self._writer.execute("ROLLBACK")
                    raise
            if version and pending:
                log.info("%s: migrated in %.1f s", self.path, time.monotonic() - started)

    def _checkpoint_loop(self) -> None:
        """Copy committed WAL frames into the database file, never blocking the writer.
        A failure is logged when it starts, when its words change and every
        `CHECKPOINT_WARN_EVERY_S` while it lasts, and its end once (before: a line every
        pass, two a second for as long as a disk stayed full, into logs that may share
        that disk). `_checkpoint_passes` counts the passes made."""
        conn = self._connect()
        failing: str | None = None  # the failure last logged, while it lasts
        warned = 0.0
        try:
            while not self._stop.wait(CHECKPOINT_INTERVAL_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:  # the writer checkpoints by itself meanwhile
                    now = time.monotonic()
                    if str(e) != failing or now - warned >= CHECKPOINT_WARN_EVERY_S:
                        log.warning(
                            "WAL checkpoint of %s failed: %s (said again if it lasts %d s)",
                            self.path, e, CHECKPOINT_WARN_EVERY_S,
                        )  # fmt: skip
                        failing, warned = str(e), now
                else:
                    if failing is not None:
                        log.info("WAL checkpoint of %s works again", self.path)
                        failing = None
                self._checkpoint_passes += 1
        finally:
            conn.close()

    def started(self) -> None:
        """`Store.started`: the server's start-up checks passed; the WAL is copied into the
        database file from now on (at `WAL_CHECKPOINT_PAGES` by the writer, every
        `CHECKPOINT_INTERVAL_S` by a thread of its own), and the -wal file is cut back to
        `WAL_SIZE_LIMIT_BYTES` when the writer starts it over after a whole checkpoint
        (set only now, though it could cut nothing before: the WAL starts over only once
        a checkpoint copied all of it)."""
        with self._write_lock:
            if not self._holding:
                return
            self._holding = False
            if self._guard is not None:
                self._guard.close()
                self._guard = None
            self._writer.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._writer.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def stop_waiting(self) -> None:
        """`Store.stop_waiting`: a SQLite file is always there, nothing waits for it."""

    def close(self) -> None:
        self._close_connections()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if self._no_wal and self._wal_files():
            self._remove_wal()

    def discard(self) -> None:
        """Close after a failed server start, removing the database files this store
        created (`created`; none when the file was there before or the store is not
        ``exclusive``) while it still holds the lock, so they cannot be another server's.
        The lock file itself stays: another server may have it open, and one that locked
        it after a removal would run beside a third that made a new one."""
        self._close_connections()
        self._leave_wal_as_found()
        for path in self._made:
            path.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _close_connections(self) -> None:
        """Stop the checkpoint thread and close every connection (not the lock). Before
        `started`, a read-only connection closes last, so the WAL is not copied into the
        file on close (SQLite's last connection checkpoints, unless it may not write)."""
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        with self._write_lock, self._readers_lock:
            last = None
            if self._holding:
                last, self._guard = self._guard or self._last_reader(), None
            try:
                self._writer.close()
                for conn in self._readers:
                    conn.close()
                self._readers.clear()
            finally:
                if last is not None:
                    last.close()
        self._local = threading.local()

    def _last_reader(self) -> sqlite3.Connection | None:
        """A ``mode=ro`` connection holding the database open while the others close
        (`_close_connections`), or None when none can be opened (nothing to keep then:
        the file is gone or unreadable)."""
        try:
            conn = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as e:
            log.debug("%s: no read-only connection to close last (%s)", self.path, e)
            return None
        return conn

    def _leave_wal_as_found(self) -> None:
        """After a refused open or start, its connections closed: remove the -wal and
        -shm files SQLite made for them when there were none before and they hold
        nothing of this store's (a read-only store writes nothing; a server's refused
        start may have written a migration into its -wal, which then stays as the
        refusal left it), by `_remove_wal` (SQLite's own locks keep them while another
        process has them open). Before, a refused audit, export or start on a damaged
        file left an empty -wal and a -shm beside it."""
        wal = Path(f"{self.path}-wal")
        if not self._wal_absent or self._made or not self._wal_files():
            return
        if self.read_only or not _holds_bytes(wal):
            self._remove_wal()

    def _wal_files(self) -> list[Path]:
        """The WAL's -wal and -shm files that exist beside the database."""
        return [p for p in (Path(f"{self.path}-wal"), Path(f"{self.path}-shm")) if p.exists()]

    def _remove_wal(self) -> None:
        """Leave the folder as a read-only store found it: the last connection to a WAL
        database to close deletes the -wal and -shm files, which a ``mode=ro`` one may not
        do, so a read-write connection that writes nothing (``query_only``) opens and
        closes. SQLite's own locks keep the files while any other connection (a server
        started meanwhile) has them open; frames such a server left when it stopped are
        checkpointed into the file first, as any next open would; without write access
        the files stay."""
        try:
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True)
            try:
                conn.execute("PRAGMA query_only=ON")
                conn.execute("PRAGMA user_version").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as e:  # not ours to write: the empty files stay, harmless
            log.debug("%s: its empty -wal/-shm files stay (%s)", self.path, e)
