"""The PostgreSQL backend: one database shared by several `prov serve` processes.

psycopg 3 with a `psycopg_pool.ConnectionPool` (autocommit connections for reads).
Appends are serialised by the database: each group-commit transaction first takes
``pg_advisory_xact_lock(APPEND_LOCK)``, which PostgreSQL releases only once the
transaction has committed (or rolled back), so the next writer, in any process, reads
a head that includes it. ``COMMIT`` returns after the WAL is flushed (the default
``synchronous_commit=on``), so an acknowledged submission is durable.

The schema mirrors the SQLite one (same tables and columns; BYTEA for blobs, BIGINT for
integers; the same indexes, the file hash key index with the log index after the key as
SQLite's has the rowid, see migration 5); its version is kept in ``schema_version`` and
migrations run under another advisory lock, so servers starting together do not race.
"""

from __future__ import annotations

import logging
import os
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from functools import partial
from typing import Any, Self

import psycopg
import psycopg_pool
from psycopg_pool.base import AttemptWithBackoff

from provenance.core.buckets import FewLines
from provenance.core.errors import (
    ConfigError,
    LogError,
    LogIntegrityError,
    ProvenanceError,
    StorageError,
    StoreNotAnsweringError,
    StoreRefusedError,
    StoreUnavailableError,
)
from provenance.store.sql import (
    _LEAF_COLS,
    HASH_KEY,
    PUBLIC_DAMAGED,
    PUBLIC_FAILED,
    PUBLIC_FULL,
    PUBLIC_REFUSED,
    PUBLIC_UNUSABLE,
    Conn,
    Cursor,
    SqlStore,
    _limit,
    public_not_answered,
    read_only_schema,
)

#: Advisory lock keys (any 64-bit numbers no other user of the database takes).
APPEND_LOCK = 0x70726F765F6C6F67  # "prov_log"
MIGRATE_LOCK = 0x70726F765F736368  # "prov_sch"
#: Seconds a session may sit inside a transaction without a statement before PostgreSQL
#: ends it (see `PostgresStore`).
IDLE_IN_TRANSACTION_S = 60.0
#: Seconds at most between the pool's tries to replace a connection while the database
#: cannot be reached (see `_Pool`).
RECONNECT_DELAY_MAX_S = 2.0
#: Seconds between two lines of one kind that psycopg_pool writes (`FewLines`): while the
#: database cannot be reached it wrote a WARNING line for each connection it lost and for
#: each try to replace each one, 2.8 lines a second for as long as the outage lasted.
POOL_LOG_EVERY_S = 60.0
#: Seconds a call waits for a pooled connection (the pool reconnecting meanwhile while the
#: database cannot be reached) before it fails with StorageError.
CONNECTION_WAIT_S = 30.0
#: TCP keepalive of the store's connections (libpq ``keepalives_idle``,
#: ``keepalives_interval``, ``keepalives_count``; seconds, seconds, probes) and
#: ``tcp_user_timeout`` (seconds data sent may stay unacknowledged): a connection whose
#: database vanished without a word (a host lost, a failover, a NAT or firewall that
#: dropped its state) fails within about 25 s instead of when the system's keepalive gives
#: up (2 hours and more): the group-commit writer, waiting on such a connection for the
#: append lock or a COMMIT's answer, held every submission of its server that long (each
#: "did not confirm within 30 s"). A URL's own values of these are kept (`_tcp_options`).
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
TCP_USER_TIMEOUT_S = 30
#: The shortest and longest ``connection_wait_s`` (`prov serve --db-connect-wait`): a
#: shorter wait fails calls on a busy pool, a longer one holds a call (and a stopping
#: server's threads) for as long as an outage lasts.
CONNECTION_WAIT_MIN_S = 0.1
CONNECTION_WAIT_MAX_S = 600.0
#: Seconds a read whose caller can do without it waits for a pooled connection (a quota
#: count, `provenance.server.limits.DeviceQuota`, which then decides on the counts the
#: server holds): while the database cannot be reached it failed only after
#: `CONNECTION_WAIT_S`, and with it every capture through `prov serve`, 30 s into an
#: outage, before reaching the writer that waits the outage out.
QUICK_READ_WAIT_S = 1.0
#: Seconds a call waiting for a pooled connection goes without looking whether the
#: database refused the pool's last try to connect (`_Pool.refused`): then it fails at
#: once (StoreRefusedError) instead of waiting out its `CONNECTION_WAIT_S`.
REFUSED_POLL_S = 0.5

#: Seconds a call of the store waits at most for a lock held by another session (libpq
#: ``lock_timeout``: a ``LOCK TABLE`` or ``VACUUM FULL`` or ``ALTER TABLE`` of a table it
#: uses, a row it writes, the log's append lock) and, for a statement of a read or of a
#: write transaction, the time past which it is given up while its database holds the
#: connection open without a word (a stopped server, `ANSWER_BACKSTOP_S` later;
#: `_Watchdog`); then a wait for a pooled connection too (`_Pool.silent_since`); `prov
#: serve --db-answer-wait`. Before, such a wait had no end: the group-commit writer held
#: every submission of its server, and a stopping server, for as long as the lock was
#: held, and each read on a stopped server waited for its caller's deadline.
ANSWER_WAIT_S = 10.0
ANSWER_WAIT_MIN_S = 0.5
ANSWER_WAIT_MAX_S = 600.0
#: Seconds past ``answer_wait_s`` that a statement's connection is cut when the database
#: has not answered it (`_Watchdog`): a lock wait ends at ``answer_wait_s`` by the
#: database's own ``lock_timeout`` (the connection kept); this is for a database that
#: answers nothing at all (its processes stopped, SIGSTOP; a hung storage), which no
#: setting of its own can end.
ANSWER_BACKSTOP_S = 2.0
#: Seconds a stopping server (`PostgresStore.stop_waiting`) waits at most for a
#: statement's answer, and for the pool's threads when it closes.
STOPPING_ANSWER_S = 2.0

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE devices (
        device_id BYTEA PRIMARY KEY,
        public_key BYTEA NOT NULL UNIQUE,
        label TEXT NOT NULL DEFAULT '',
        enrolled_at BIGINT NOT NULL,
        last_sequence BIGINT NOT NULL DEFAULT 0,
        last_claim_hash BYTEA NOT NULL DEFAULT '',
        revoked_at BIGINT,
        revocation_reason TEXT NOT NULL DEFAULT '',
        certificate_pem TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE enrollment_tokens (
        token_hash BYTEA PRIMARY KEY,
        label TEXT NOT NULL DEFAULT '',
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at BIGINT,
        device_id BYTEA
    );
    CREATE TABLE leaves (
        idx BIGINT PRIMARY KEY,
        leaf_hash BYTEA NOT NULL,
        claim_hash BYTEA NOT NULL UNIQUE,
        device_id BYTEA NOT NULL,
        sequence BIGINT NOT NULL,
        file_sha256 BYTEA NOT NULL,
        integrated_at BIGINT NOT NULL,
        chain_linked INTEGER NOT NULL,
        entry BYTEA NOT NULL,
        receipt BYTEA NOT NULL
    );
    CREATE INDEX leaves_file_sha256 ON leaves(file_sha256);
    CREATE INDEX leaves_leaf_hash ON leaves(leaf_hash);
    CREATE TABLE soft_hashes (
        leaf_idx BIGINT NOT NULL,
        algorithm TEXT NOT NULL,
        hash BYTEA NOT NULL,
        quality INTEGER NOT NULL,
        timestamp_seconds DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX soft_hashes_leaf ON soft_hashes(leaf_idx);
    CREATE TABLE nodes (
        level INTEGER NOT NULL,
        idx BIGINT NOT NULL,
        hash BYTEA NOT NULL,
        PRIMARY KEY (level, idx)
    );
    CREATE TABLE checkpoints (
        size BIGINT PRIMARY KEY,
        note TEXT NOT NULL,
        created_at BIGINT NOT NULL
    );
    """,
    # 2: key history in the log (see the SQLite migration 3)
    2: """
    CREATE TABLE key_events (
        leaf_idx BIGINT PRIMARY KEY,
        device_id BYTEA NOT NULL,
        kind INTEGER NOT NULL
    );
    CREATE INDEX key_events_device ON key_events(device_id, kind)
    """,
    # 3: receipts are rebuilt on demand, no longer stored whole (as SQLite's migration 4),
    # and the near-duplicate index's packs
    3: """
    ALTER TABLE leaves DROP COLUMN receipt;
    CREATE TABLE index_packs (
        first BIGINT PRIMARY KEY,
        next BIGINT NOT NULL,
        ids BYTEA NOT NULL,
        words BYTEA NOT NULL,
        video INTEGER NOT NULL
    )
    """,
    # 4: the leaf and file hash indexes keyed by the hashes' first 8 bytes (as SQLite's
    # migration 5)
    4: """
    DROP INDEX leaves_leaf_hash;
    DROP INDEX leaves_file_sha256;
    CREATE INDEX leaves_leaf_key ON leaves(substr(leaf_hash, 1, 8));
    CREATE INDEX leaves_file_key ON leaves(substr(file_sha256, 1, 8))
    """,
    # 5: the file hash key index also ordered by log index, so the exact-claims read
    # (`PostgresStore._first_leaves`: each hash's first leaves by index, ORDER BY idx
    # LIMIT n) stops after n rows instead of reading and sorting every leaf of the hash;
    # it serves every use of the key-only index it replaces. ANALYZE: the planner has
    # the new expression's statistics at once (without them it estimates 0.5% of the
    # leaves per key and prefers reading them all, then sorting). IF [NOT] EXISTS: an
    # index an operator made by hand is kept. CREATE INDEX blocks appends (not reads)
    # while it builds: 1.2 s for 10^6 leaves here.
    5: """
    CREATE INDEX IF NOT EXISTS leaves_file_key_idx ON leaves(substr(file_sha256, 1, 8), idx);
    DROP INDEX IF EXISTS leaves_file_key;
    ANALYZE leaves
    """,
}
SCHEMA_VERSION = max(_MIGRATIONS)


def session_options(
    url: str, idle_in_transaction_s: float, read_only: bool, lock_wait_s: float | None = None
) -> str:
    """libpq ``options`` for the store's sessions: idle_in_transaction_session_timeout
    (and lock_timeout, ``lock_wait_s``, when given), then the URL's own ``options`` (else the PGOPTIONS environment variable, which libpq
    reads only when none is given), so an operator's search_path, statement_timeout or
    own idle timeout are kept (a later ``-c`` wins), then, for a read-only store,
    default_transaction_read_only=on. Without the merge, the store's options replaced the
    URL's: a log kept in schema ``prov`` (``?options=-c search_path=prov``) was opened as a
    new empty log in ``public``."""
    idle_ms = max(1, round(idle_in_transaction_s * 1000))
    try:
        given = psycopg.conninfo.conninfo_to_dict(url).get("options")
    except psycopg.ProgrammingError:
        given = None  # a malformed URL: the connection reports it
    own = given if given is not None else os.environ.get("PGOPTIONS", "")
    parts = [f"-c idle_in_transaction_session_timeout={idle_ms}"]
    if lock_wait_s is not None:
        parts.append(f"-c lock_timeout={max(1, round(lock_wait_s * 1000))}")
    parts.append(str(own).strip())
    if read_only:
        parts.append("-c default_transaction_read_only=on")
    return " ".join(p for p in parts if p)


def _tcp_options(url: str, connect_timeout_s: float | None = None) -> dict[str, int]:
    """The keepalive and ``tcp_user_timeout`` connection parameters (`KEEPALIVE_IDLE_S`
    ...) that the URL does not set itself (libpq ignores them on a Unix socket), and
    ``connect_timeout`` when given: a database server whose processes are stopped takes
    a connection into its listen queue and never answers it, so the pool's tries to
    connect waited for good, each holding one of its threads."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        given = {}  # a malformed URL: the connection reports it
    ours = {
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_S,
        "keepalives_interval": KEEPALIVE_INTERVAL_S,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_S * 1000,
    }
    if connect_timeout_s is not None:
        ours["connect_timeout"] = max(2, round(connect_timeout_s))
    return {k: v for k, v in ours.items() if k not in given}


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


#: SQLSTATEs of a server going away or not yet taking sessions: admin_shutdown,
#: crash_shutdown, cannot_connect_now (shutting down, starting up, in recovery).
_GONE = frozenset({"57P01", "57P02", "57P03"})


def _unreachable(e: Exception) -> bool:
    """Whether ``e`` says the database cannot be reached now, not that a statement failed:
    no pooled connection within the wait (the pool failing to connect meanwhile), a
    connection refused or lost (libpq's own errors carry no SQLSTATE; class 08 is
    PostgreSQL's connection exceptions), or a server shutting down or starting up."""
    if isinstance(e, psycopg_pool.PoolTimeout):
        return True
    if not isinstance(e, psycopg.OperationalError):
        return False
    state = e.sqlstate
    return state is None or state.startswith("08") or state in _GONE


#: libpq's words for a server refusing the login (PostgreSQL sends these with FATAL at
#: connection time; libpq gives no SQLSTATE for a failed connection, psycopg's
#: ``sqlstate`` is None, so the message is all there is): authentication failed (password,
#: SCRAM, md5, peer, ident), a role that does not exist or may not log in, no pg_hba.conf
#: entry, no CONNECT right, a database that does not exist, no password given.
_REFUSED = re.compile(
    r"authentication failed|role \"[^\"]*\" does not exist|is not permitted to log in"
    r"|no pg_hba\.conf entry|permission denied for database|database \"[^\"]*\" does not exist"
    r"|no password supplied|password is required"
)


def _refusal(e: BaseException) -> str | None:
    """The server's reason when ``e`` is a refused login (`_REFUSED`), else None: not an
    outage, a configuration to fix."""
    if not isinstance(e, psycopg.OperationalError):
        return None
    text = str(e)
    if _REFUSED.search(text) is None:
        return None
    why = text.split("FATAL:", 1)[-1].strip()
    return re.sub(r"\s+", " ", why)


def _dropped(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle pooled connection was closed by the server. An idle connection's
    socket has nothing to read unless the server closed it or sent a notice, so only then
    is the server asked (an empty query, one round trip); a connection the server dropped
    silently (a network cut) is found by the call that uses it, as before."""
    if conn.closed or conn.broken:
        return True
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
    if not poller.poll(0):
        return False
    try:
        conn.execute("")
    except psycopg.Error:
        return True
    return False


log = logging.getLogger(__name__)

_POOL_LINES = FewLines(
    POOL_LOG_EVERY_S,
    "as the pool writes one for each connection it loses and each try to reconnect",
)


def quiet_pool_lines() -> None:
    """Install the process's `FewLines` filter on psycopg_pool's logger (once)."""
    logger = logging.getLogger("psycopg.pool")
    if _POOL_LINES not in logger.filters:
        logger.addFilter(_POOL_LINES)


class _Attempt(AttemptWithBackoff):
    """psycopg_pool's reconnection backoff (1 s, doubling, with jitter) with its delay
    capped at `RECONNECT_DELAY_MAX_S`."""

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, RECONNECT_DELAY_MAX_S)


class _Pool(psycopg_pool.ConnectionPool):
    """A connection pool that, while the database is down, tries to reconnect every
    `RECONNECT_DELAY_MAX_S` at most (until ``reconnect_timeout``, as before). psycopg_pool
    doubles the delay after each failed try (1, 2, 4, ... 128 s): once PostgreSQL was back
    from an outage, calls kept waiting for the next try, up to half the outage again
    (measured: back 18 s into an outage, the first call answered 10.7 s later). Once a
    try succeeds after failed ones, one line says the database answers again.

    Each try to connect is seen through the pool's public ``connection_class``: a
    `psycopg.Connection` class made for this pool (`_watched`) whose ``connect`` reports
    how it went (`_connect_failed`, `_connected`). The delay between tries has no public
    setting (psycopg_pool 3.3 keeps it in `AttemptWithBackoff`'s constants), so
    ``_add_connection`` is still overridden for it alone; tests/test_postgres_reconnect.py
    measures the delay, and fails should a psycopg_pool release drop that hook."""

    def __init__(self, url: str, location: str, **kwargs: Any) -> None:
        self.location = location
        self._outage_lock = threading.Lock()
        # (monotonic time of the first failed try, failed tries) since the last success
        self._outage: tuple[float, int] | None = None
        #: the server's reason when it refused the last try to connect (`_refusal`: a
        #: wrong password, a missing role), None once a try succeeds
        self.refused: str | None = None
        #: monotonic time since when the database leaves the store's statements
        #: unanswered (one was cut, `_Watchdog`, and none answered since), None once one
        #: is answered or a connection is made: a call waiting for a connection meanwhile
        #: gives up after ``answer_wait_s`` (`PostgresStore._pooled`)
        self.silent_since: float | None = None
        # the connections this pool opened: `open_connections` counts those not closed
        self._made_here: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        super().__init__(url, connection_class=_watched(self), **kwargs)

    def failing(self) -> bool:
        """Whether the pool's last try to connect failed (the database cannot be reached,
        or refuses the login): a call waiting for a connection may wait in vain."""
        return self._outage is not None or self.refused is not None

    def open_connections(self) -> int:
        """Connections this pool opened that are not closed (idle or in use): while one
        is, a call waiting for a connection may get it once it is given back, whatever
        the database answers new logins."""
        return sum(1 for conn in list(self._made_here) if not conn.closed)

    def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        super()._add_connection(attempt or _Attempt(timeout=self.reconnect_timeout), growing)

    def _connect_failed(self, e: Exception) -> None:
        """A try to connect failed with ``e`` (psycopg_pool logs it, `quiet_pool_lines`)."""
        self.refused = _refusal(e)
        with self._outage_lock:
            since, tries = self._outage or (time.monotonic(), 0)
            self._outage = (since, tries + 1)

    def _connected(self, conn: psycopg.Connection[Any]) -> None:
        """A try to connect made ``conn``: after failed tries, one line saying the
        database answers again."""
        self.refused = None
        self.silent_since = None
        self._made_here.add(conn)
        with self._outage_lock:
            outage, self._outage = self._outage, None
        if outage is not None:  # a WARNING, as the failures: a log kept at WARNING shows both
            log.warning(
                "the database %s answers again, %.1f s after the first of %d failed"
                " connection tries",
                self.location,
                time.monotonic() - outage[0],
                outage[1],
            )


def _watched(pool: _Pool) -> type[psycopg.Connection[Any]]:
    """A `psycopg.Connection` class whose ``connect`` tells ``pool`` (held weakly) how
    each try went: the pool's ``connection_class``, through which it makes every
    connection."""
    owner = weakref.ref(pool)

    class Watched(psycopg.Connection[Any]):
        @classmethod
        def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
            try:
                conn = super().connect(conninfo, **kwargs)
            except Exception as e:
                if (watcher := owner()) is not None:
                    watcher._connect_failed(e)
                raise
            if (watcher := owner()) is not None:
                watcher._connected(conn)
            return conn

    return Watched


class _Watch:
    """One lease of a pooled connection that `_Watchdog` watches: while a statement of it
    is out (``deadline`` set, monotonic), the seconds since it was sent (``since``); once
    cut, ``cut`` and ``waited`` (seconds the statement went unanswered). ``hurried``:
    whether a stopping server cuts it sooner (`_Watchdog.hurry`): reads are, the log
    writer's transactions are not (a capture being committed when the server stops is
    logged, or told "not confirmed" at the writer's own bound)."""

    __slots__ = ("conn", "hurried", "deadline", "since", "cut", "waited")

    def __init__(self, conn: psycopg.Connection[Any], hurried: bool = True) -> None:
        self.conn = conn
        self.hurried = hurried
        self.deadline: float | None = None
        self.since = 0.0
        self.cut = False
        self.waited = 0.0


def _cut(conn: psycopg.Connection[Any]) -> None:
    """Shut the socket of ``conn`` down (both ways) from another thread: the call blocked
    on it wakes at once with a closed connection (libpq: "server closed the connection
    unexpectedly"), which the pool then discards. A shutdown through a duplicate of the
    descriptor acts on the socket itself; nothing of libpq's is touched from here."""
    try:
        fd = conn.pgconn.socket
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg.Error):
        return  # the socket closed meanwhile: no statement waits on it, nothing to cut


class _Watchdog:
    """Cuts the connection of a statement the database has not answered by its deadline
    (`_cut`): one thread for the store, started at the first `start`, waiting until the
    nearest deadline. Each statement is timed alone (`start` when it is sent, `stop` when
    it is answered), so what a transaction does between its statements, and what it
    waited before it began, is not counted: before, the clock ran from a write
    transaction's start, and a write that had waited most of the bound for the log's
    append lock (another server's write holding it) was cut while it wrote. A lease is
    stopped before its connection returns to the pool, and a cut happens under the same
    lock, so a connection back in the pool is never cut."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._out: set[_Watch] = set()
        self._thread: threading.Thread | None = None
        # monotonic time by which every statement is cut (`hurry`; inf: none)
        self._latest = float("inf")

    def start(self, watch: _Watch, seconds: float) -> None:
        """A statement of ``watch``'s connection is sent: cut it in ``seconds`` unless
        `stop` comes first."""
        with self._cond:
            watch.since = time.monotonic()
            watch.deadline = watch.since + seconds
            if watch.hurried:
                watch.deadline = min(watch.deadline, self._latest)
            self._out.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="pg-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def hurry(self, seconds: float) -> None:
        """The server stops: every statement of a ``hurried`` lease out now, and every one
        sent from now on, is cut ``seconds`` from now at the latest (`STOPPING_ANSWER_S`);
        the log writer's keep their own bound."""
        with self._cond:
            self._latest = time.monotonic() + seconds
            for watch in self._out:
                if watch.hurried and watch.deadline is not None:
                    watch.deadline = min(watch.deadline, self._latest)
            self._cond.notify()

    def stop(self, watch: _Watch) -> None:
        """The statement was answered (or failed): no cut."""
        with self._cond:
            self._out.discard(watch)
            watch.deadline = None

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for watch in [w for w in self._out if w.deadline is not None and w.deadline <= now]:
                    self._out.discard(watch)
                    watch.deadline = None
                    watch.cut = True
                    watch.waited = now - watch.since
                    _cut(watch.conn)
                nearest = min((w.deadline for w in self._out if w.deadline), default=None)
                self._cond.wait(None if nearest is None else max(0.0, nearest - now))


class _PgConn:
    """A psycopg connection speaking the shared SQL's ``?`` placeholders; with ``watch``
    (a function timing a statement, `PostgresStore._answered`), each statement is timed."""

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        watch: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.conn = conn
        self._watch = watch or nullcontext

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        with self._watch():
            return self.conn.execute(sql.replace("?", "%s"), args or None)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._watch(), self.conn.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)


class PostgresStore(SqlStore):
    """The database at ``url`` (``postgresql://USER@HOST:PORT/DB``), see module docstring.

    ``max_connections``: the pool's size (RPC threads + writer + index follower).
    ``idle_in_transaction_s``: PostgreSQL ends a session of this store that sits this long
    inside a transaction without a statement (``idle_in_transaction_session_timeout``),
    rolling it back: a server frozen or cut off while it holds the append lock releases it
    to the other servers of the database then, not when TCP keepalive gives up (hours).
    A group commit runs its statements milliseconds apart.
    ``connection_wait_s``: how long a call waits for a pooled connection before it fails
    with StorageError (while the database cannot be reached the pool reconnects meanwhile),
    `CONNECTION_WAIT_MIN_S` to `CONNECTION_WAIT_MAX_S` (ConfigError otherwise).
    ``answer_wait_s``: how long a call waits for a lock another session holds (PostgreSQL's
    ``lock_timeout``, set for the store's sessions unless the URL sets its own), and, plus
    `ANSWER_BACKSTOP_S`, how long one statement of a read or a write may go unanswered
    before its connection is cut (`_Watchdog`, for a database that answers nothing at
    all); either way the call fails with StoreNotAnsweringError, its transaction rolled
    back; after such a cut, a call waiting for a pooled connection gives up after
    ``answer_wait_s`` too (`_pooled`). `ANSWER_WAIT_MIN_S` to `ANSWER_WAIT_MAX_S`. A
    read-only store (an audit) waits for locks as long as they are held, and its reads
    are never cut.
    Raises StorageError when the database cannot be reached within ``connect_timeout_s``,
    LogError when its schema is newer than this code.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 24,
        connect_timeout_s: float = 15.0,
        read_only: bool = False,
        idle_in_transaction_s: float = IDLE_IN_TRANSACTION_S,
        connection_wait_s: float = CONNECTION_WAIT_S,
        answer_wait_s: float = ANSWER_WAIT_S,
    ) -> None:
        if not ANSWER_WAIT_MIN_S <= answer_wait_s <= ANSWER_WAIT_MAX_S:
            raise ConfigError(
                f"a wait for the database's answer of {answer_wait_s:g} s: it must be"
                f" {ANSWER_WAIT_MIN_S:g} to {ANSWER_WAIT_MAX_S:g} s"
            )
        if not CONNECTION_WAIT_MIN_S <= connection_wait_s <= CONNECTION_WAIT_MAX_S:
            raise ConfigError(
                f"a wait for a database connection of {connection_wait_s:g} s: it must be"
                f" {CONNECTION_WAIT_MIN_S:g} to {CONNECTION_WAIT_MAX_S:g} s"
            )
        self.location = redact(url)
        self.read_only = read_only
        self._max_connections = max_connections
        # `stop_waiting` was called: a wait for a connection gives up while the pool fails
        self._stopping = threading.Event()
        self._quick_wait_s = min(QUICK_READ_WAIT_S, connection_wait_s)
        self.answer_wait_s = answer_wait_s
        self._watchdog = _Watchdog()
        try:  # one plain connection first: libpq's own reason when the database is not there
            conninfo = psycopg.conninfo.make_conninfo(url, **_tcp_options(url))
            psycopg.connect(conninfo, connect_timeout=max(1, int(connect_timeout_s))).close()
        except psycopg.Error as e:
            raise StorageError(f"cannot connect to {self.location}: {e}") from e
        quiet_pool_lines()
        self._pool = _Pool(
            url,
            self.location,
            min_size=1,
            max_size=max_connections,
            # read-only (an audit): every transaction of the session is READ ONLY
            kwargs={
                "autocommit": True,
                "options": session_options(
                    url, idle_in_transaction_s, read_only, None if read_only else answer_wait_s
                ),
                **_tcp_options(url, answer_wait_s),
            },
            timeout=connection_wait_s,
            open=False,
            name="provenance",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except psycopg_pool.PoolTimeout as e:
            self._pool.close()
            raise StorageError(
                f"cannot connect to {self.location} within {connect_timeout_s:.0f} s:"
                " is PostgreSQL running, and does the database exist?"
            ) from e
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def _classify(self, e: Exception) -> ProvenanceError | None:
        """Our error for ``e``: its message names the database (`redact`ed URL) and
        gives PostgreSQL's words, for the operator; its ``public`` message, for the
        server's callers, neither (`ProvenanceError`)."""
        why = self._pool.refused if isinstance(e, psycopg_pool.PoolTimeout) else _refusal(e)
        if why is not None:
            return StoreRefusedError(
                f"the database {self.location} refuses this server's login ({why}): check"
                " the user and password in the database URL, and that the role exists and"
                " may log in; nothing can be read or written until then",
                public=PUBLIC_REFUSED,
            )
        if isinstance(e, psycopg.errors.LockNotAvailable):
            return StoreNotAnsweringError(
                f"the log database did not answer in {self.answer_wait_s:g} s"
                f" ({self.location}: a lock it needs is held by another session, a LOCK"
                " TABLE, VACUUM FULL or ALTER TABLE on a table of the log, or the log's"
                " append lock); try again",
                self.answer_wait_s,
                public=public_not_answered(self.answer_wait_s),
            )
        if isinstance(e, psycopg.errors.DiskFull):
            return StorageError(
                f"the database {self.location} cannot grow: {e}", public=PUBLIC_FULL
            )
        if _unreachable(e):
            return StoreUnavailableError(
                f"the database {self.location} cannot be used now: {e}", public=PUBLIC_UNUSABLE
            )
        if isinstance(e, psycopg.OperationalError):
            return StorageError(
                f"the database {self.location} cannot be used now: {e}", public=PUBLIC_UNUSABLE
            )
        if isinstance(e, psycopg.DataError | psycopg.IntegrityError):
            return LogIntegrityError(f"the log database is damaged: {e}", public=PUBLIC_DAMAGED)
        if isinstance(e, psycopg.Error):
            return StorageError(f"the database {self.location} failed: {e}", public=PUBLIC_FAILED)
        return None

    @contextmanager
    def _connection(self, wait_s: float | None = None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection that the server has not closed: one it dropped (a restart,
        a failover, pg_terminate_backend) is closed here, so the pool discards it, and
        the next is taken. Without this each dead pooled connection failed one call.
        ``wait_s``: how long to wait for one (None: ``connection_wait_s``)."""
        wait = self._pool.timeout if wait_s is None else wait_s
        for tries in range(self._max_connections + 1):
            with ExitStack() as stack:
                conn = self._pooled(stack, wait)
                if tries < self._max_connections and _dropped(conn):
                    conn.close()  # the pool discards a closed connection when it comes back
                    continue
                yield conn  # all dropped: a fresh one, unchecked
                return

    def _pooled(self, stack: ExitStack, wait: float) -> psycopg.Connection[Any]:
        """A connection from the pool, given back when ``stack`` closes; waits ``wait``
        seconds at most, looking every `REFUSED_POLL_S` whether the database refused the
        pool's last try to connect (then PoolTimeout at once, `_classify` saying why), or
        whether the server stops while the pool cannot connect (`stop_waiting`: then
        PoolTimeout at once, where a wait of 30 s kept a stopping server 28 s).
        Before, a wrong password or a role gone counted as an outage: each call waited
        its whole wait, and the writer tried its batch again for ever.
        While the database leaves the store's statements unanswered (`_Pool.silent_since`:
        its server stopped, so it answers no new connection either), the wait ends after
        ``answer_wait_s`` with StoreNotAnsweringError: before, a read that found no open
        connection waited ``wait`` (30 s), longer than most callers' deadlines."""
        began = time.monotonic()
        until = began + wait
        while True:
            left = until - time.monotonic()
            try:
                return stack.enter_context(
                    self._pool.connection(timeout=max(0.001, min(left, REFUSED_POLL_S)))
                )
            except psycopg_pool.PoolTimeout:
                # refused, and no open connection to wait for (h-rev41b: a password
                # changed with the server's sessions still open failed every call that
                # waited 0.5 s for a busy one)
                if self._pool.refused is not None and not self._pool.open_connections():
                    raise
                if self._stopping.is_set() and self._pool.failing():
                    raise psycopg_pool.PoolTimeout(
                        "the server is stopping, and no connection could be made"
                    ) from None
                if (
                    self._pool.silent_since is not None
                    and time.monotonic() - began >= self.answer_wait_s
                ):
                    raise StoreNotAnsweringError(
                        f"the log database did not answer in {self.answer_wait_s:g} s"
                        f" ({self.location} left the store's statements unanswered, and"
                        " answers no new connection either: its server stopped or stalled);"
                        " try again",
                        self.answer_wait_s,
                        public=public_not_answered(self.answer_wait_s),
                    ) from None
                if time.monotonic() >= until:
                    raise psycopg_pool.PoolTimeout(
                        f"couldn't get a connection after {wait:.2f} sec"
                    ) from None

    def _sent(self, watch: _Watch | None) -> None:
        """A statement of ``watch``'s lease is sent (`_Watchdog.start`; None: unwatched)."""
        if watch is not None:
            self._watchdog.start(watch, self.answer_wait_s + ANSWER_BACKSTOP_S)

    def _done(self, watch: _Watch | None) -> None:
        """The statement `_sent` ended: answered (the database answers: `_pooled` waits as
        long as before again), or cut (`_pooled` gives up on a connection sooner)."""
        if watch is None:
            return
        self._watchdog.stop(watch)
        if watch.cut:
            self._pool.silent_since = self._pool.silent_since or time.monotonic()
        else:
            self._pool.silent_since = None

    @contextmanager
    def _answered(self, watch: _Watch) -> Iterator[None]:
        """One statement of ``watch``'s lease, timed (`_sent`, `_done`)."""
        self._sent(watch)
        try:
            yield
        finally:
            self._done(watch)

    def _watch(self, conn: psycopg.Connection[Any], hurried: bool = True) -> _Watch | None:
        """A watch over a lease of ``conn`` (``hurried``: see `_Watch`); None for a
        read-only store (an audit), which waits for its answers as long as they take."""
        return None if self.read_only else _Watch(conn, hurried)

    @contextmanager
    def _read(self, wait_s: float | None = None) -> Iterator[Conn]:
        """A connection for reads (autocommit), waiting ``wait_s`` at most for it (None:
        ``connection_wait_s``). Each statement the database leaves unanswered
        ``answer_wait_s`` + `ANSWER_BACKSTOP_S` (its server stopped or stalled, its
        connection open) has its connection cut (`_Watchdog`), and the read fails with
        StoreNotAnsweringError; a lock wait ends at ``answer_wait_s`` (``lock_timeout``,
        `_classify`). Before, such a read waited as long as the database was stopped:
        each Lookup, proof and checkpoint until its caller's deadline."""
        with self._connection(wait_s) as conn:
            watch = self._watch(conn)
            try:
                yield _PgConn(conn, None if watch is None else partial(self._answered, watch))
            except psycopg.Error as e:
                if watch is None or not watch.cut:
                    raise
                raise StoreNotAnsweringError(
                    f"the log database did not answer in {watch.waited:.0f} s"
                    f" ({self.location} holds the connection open but answers nothing: its"
                    " server stopped or stalled); nothing was read: try again",
                    watch.waited,
                    public=public_not_answered(watch.waited, "nothing was read: try again"),
                ) from e

    def _quick_read(self) -> AbstractContextManager[Conn]:
        """`_read` waiting `QUICK_READ_WAIT_S` at most for a connection."""
        return self._read(self._quick_wait_s)

    @contextmanager
    def _write(self, wait_s: float | None = None, watched: bool = True) -> Iterator[Conn]:
        """A write transaction, READ COMMITTED whatever the database's or the URL's
        ``default_transaction_isolation``: each statement sees what committed before it,
        so a group commit reads the head after the append lock is granted. Under
        REPEATABLE READ or SERIALIZABLE (an operator's default) the snapshot was the lock
        statement's, taken before it waited: with another server's commit in between,
        the batch wrote leaves and nodes over that commit's and its claims failed with
        "the log database is damaged: duplicate key value ..." (tests/test_pg_isolation.py).
        ``watched``: a statement of the transaction (its BEGIN and COMMIT included) still
        unanswered ``answer_wait_s`` + `ANSWER_BACKSTOP_S` after it was sent has its
        connection cut (`_Watchdog`), and the transaction fails with
        StoreNotAnsweringError (``committing`` when it waited for its COMMIT's answer);
        the time between statements, and a wait for the append lock that was granted,
        do not count. A migration is not watched (an index built over a large log takes
        minutes)."""
        with self._connection(wait_s) as conn:
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
            watch = self._watch(conn, hurried=False) if watched else None
            committing = False
            try:
                self._sent(watch)  # BEGIN
                with conn.transaction():
                    self._done(watch)
                    try:
                        yield _PgConn(
                            conn, None if watch is None else partial(self._answered, watch)
                        )
                        committing = True
                    finally:
                        self._sent(watch)  # COMMIT, or ROLLBACK
            except psycopg.Error as e:
                if watch is None or not watch.cut:
                    raise
                if committing:
                    raise StoreNotAnsweringError(
                        f"the database {self.location} did not confirm a commit in"
                        f" {watch.waited:.0f} s: it holds the connection open but answers"
                        " nothing (its server stopped or stalled); the commit may have been"
                        " made",
                        watch.waited,
                        committing=True,
                        public=f"the log database did not confirm a write in"
                        f" {watch.waited:.3g} s; it may have been made: send it again",
                    ) from e
                raise StoreNotAnsweringError(
                    f"the database {self.location} did not answer in {watch.waited:.0f} s: it"
                    " holds the connection open but answers nothing (its server stopped or"
                    " stalled)",
                    watch.waited,
                    public=public_not_answered(watch.waited),
                ) from e
            finally:
                self._done(watch)

    def _first_leaves(self, hashes: Sequence[bytes], limit: int) -> tuple[str, list[Any]]:
        """`SqlStore._first_leaves` for PostgreSQL: per hash, a LATERAL read of the file key
        index (migration 5: key, then log index) in index order, stopping after ``limit``
        leaves. The hashes come as one array that the planner cannot see into, so it
        estimates a hash's leaves from the number of distinct keys (a few) whatever the
        hash: with the values visible, a flooded hash's statistics made it choose reading
        the whole log in index order (the primary key) and filtering, or reading every
        leaf of the hash and sorting them, both growing with the flood or the log."""
        key = HASH_KEY.format("file_sha256")
        sql = (
            "SELECT l.* FROM unnest((SELECT ?::bytea[])) AS q(h) CROSS JOIN LATERAL"
            f" (SELECT {_LEAF_COLS} FROM leaves WHERE {key} = {HASH_KEY.format('q.h')}"
            f" AND file_sha256 = q.h ORDER BY idx{_limit(limit)}) AS l"
        )
        return sql, [list(hashes)]

    def _lock_appends(self, c: Conn) -> None:
        c.execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))

    def _migrate(self) -> None:
        if self.read_only:
            self._check_schema()
            return
        with self._errors(), self._write(watched=False) as c:
            # servers starting together wait for each other's migrations, however long
            c.execute("SET LOCAL lock_timeout = 0")
            c.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATE_LOCK,))
            c.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = c.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = int(row[0] or 0)
            if version > SCHEMA_VERSION:
                raise LogError(
                    f"{self.location} has schema version {version}; this program knows up to"
                    f" {SCHEMA_VERSION}: upgrade the program"
                )
            started = time.monotonic()
            for v in sorted(m for m in _MIGRATIONS if m > version):
                for stmt in _MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT INTO schema_version(version) VALUES (?)", (v,))
        if 0 < version < SCHEMA_VERSION:  # an upgrade (committed), not a new database
            log.info(
                "%s: schema migrated from version %d to %d in %.1f s",
                self.location,
                version,
                SCHEMA_VERSION,
                time.monotonic() - started,
            )

    def _check_schema(self) -> None:
        """A read-only store's schema check: newer than this code or none at all raise
        LogError; older sets ``outdated``."""
        with self._errors():
            try:
                with self._read() as c:
                    row = c.execute("SELECT MAX(version) FROM schema_version").fetchone()
            except psycopg.errors.UndefinedTable as e:
                raise LogError(f"{self.location} holds no provenance log: {e}") from e
        self.outdated = read_only_schema(
            int(row[0] or 0),
            SCHEMA_VERSION,
            self.location,
            "`prov serve --db URL` migrates it when it starts",
        )

    def started(self) -> None:
        """`Store.started`: PostgreSQL writes its own files; nothing is held back."""

    def stop_waiting(self) -> None:
        """`Store.stop_waiting`: from now on a wait for a pooled connection gives up
        within `REFUSED_POLL_S` while the pool's tries to connect fail (a database
        outage); while they succeed, a busy pool is waited for as before. A read the
        database has not answered `STOPPING_ANSWER_S` from now is cut (its caller told
        as when ``--db-answer-wait`` passes); a write transaction keeps its own bound (a
        capture being committed is logged and counted, or told "not confirmed" at
        ``--db-answer-wait``, never a receipt: tests/test_postgres_outage.py), and `close` waits `STOPPING_ANSWER_S` at
        most for the pool's threads (one connecting to a stopped server waits for
        libpq's connect_timeout; they are daemon threads). Before, a stopped database held
        the server's exit for the bound of a statement out (the log upkeep's, 12 s at
        the default ``--db-answer-wait``) then 5 s for the pool: 14.1 s measured."""
        self._stopping.set()
        self._watchdog.hurry(STOPPING_ANSWER_S)

    def close(self) -> None:
        self._pool.close(timeout=STOPPING_ANSWER_S if self._stopping.is_set() else 5.0)
