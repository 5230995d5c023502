"""The storage interface of the log and the registry, and the choice of backend.

`Store` is a `typing.Protocol` (in the manner of python-tuf's ``FetcherInterface`` and
Tessera's storage drivers): the service, the group-commit writer and the start-up
checks talk to it only; SQL lives in the backends.

- `provenance.store.sqlite`: one SQLite file (WAL, ``synchronous=FULL``), the embedded
  default; one server per file (an exclusive lock on ``DB.lock``).
- `provenance.store.postgres`: a PostgreSQL database (psycopg 3 with a connection pool);
  several servers share it, their appends serialised by an advisory lock held for each
  group-commit transaction.
- `provenance.store.memory`: dictionaries in this process, for fast in-process tests.

`open_store(target)` picks the backend: ``postgresql://...`` (or ``postgres://``) a
PostgreSQL database, ``:memory:`` the in-memory fake, anything else a SQLite file path.

The Merkle tree is stored as the hashes of its *perfect* subtrees, key (level, index)
covering leaves [index * 2**level, (index + 1) * 2**level), so roots and proofs need
O(log n) reads and a restart never rebuilds the tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np

from provenance.core.binding import PerceptualHash
from provenance.core.claims import Device, SignedClaim
from provenance.core.errors import ClaimError, ConfigError
from provenance.core.keyhistory import KeyEvent, SignedKeyEvent

__all__ = [
    "AppendTxn",
    "HashPack",
    "IndexRow",
    "LeafRecord",
    "NewKeyLeaf",
    "NewLeaf",
    "Store",
    "from_us",
    "is_postgres_url",
    "open_store",
    "storable_text",
    "stored_as",
    "to_us",
]


def storable_text(value: str, what: str) -> str:
    """``value``, a text field a store keeps (a token's label, a revocation reason, a
    device's certificate chain), when every backend can keep it: PostgreSQL's text
    cannot hold the NUL character (U+0000). Raises ClaimError (INVALID_ARGUMENT) naming
    ``what`` otherwise, on every backend alike; before, PostgreSQL's refusal was taken
    for a damaged database (DATA_LOSS "the log database is damaged") and SQLite kept it."""
    if "\x00" in value:
        raise ClaimError(
            f"the {what} holds a NUL character (U+0000), which the log's database cannot"
            " store: send it without one"
        )
    return value


def stored_as(value: object) -> str:
    """How a message names a value read from a log row that holds something no writer
    stores there (a row edited behind the log's back; SQLite keeps whatever type an
    edit writes): ``text``, ``the number 32``, ``NULL``, ``31 bytes``, else its type's
    name. Never the value's text itself, which may be long or hold control characters."""
    if isinstance(value, str):
        return "text"
    if value is None:
        return "NULL"
    if isinstance(value, bool | int | float):
        return f"the number {value!r}"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{len(value)} bytes"
    return type(value).__name__


#: The Unix epoch, timezone-aware UTC.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    """UTC datetime -> integer microseconds since the Unix epoch, exactly (integer
    arithmetic: through a float, times after about 2255 lost microseconds, and the last
    microsecond of 9999 read back as year 10000, a ValueError)."""
    return (when - _EPOCH) // _US


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch -> timezone-aware UTC datetime, exactly."""
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class LeafRecord:
    """One stored log leaf and what the store indexes about it."""

    index: int
    leaf_hash: bytes
    claim_hash: bytes
    device_id: bytes
    sequence: int
    file_sha256: bytes
    integrated_at: datetime
    chain_linked: bool
    entry: bytes


@dataclass(frozen=True)
class NewLeaf:
    """A leaf to append. Its receipt is not stored: `provenance.log.receipt.build_receipt`
    rebuilds it from the entry, the checkpoint that first covered it and the tree."""

    leaf_hash: bytes
    signed_claim: SignedClaim
    device_id: bytes
    sequence: int
    file_sha256: bytes
    integrated_at: datetime
    chain_linked: bool
    entry: bytes
    soft_bindings: tuple[PerceptualHash, ...]


#: A leaf's stored columns as the start-up check and `prov log audit --db` read them,
#: undecoded: (index, leaf hash, claim hash, device id, sequence, file SHA-256,
#: integration time in microseconds since the epoch, entry, chain_linked as 0 or 1).
IndexRow = tuple[int, bytes, bytes, bytes, int, bytes, int, bytes, int]


#: A stored soft-hash row: (leaf index, algorithm, hash, quality, frame time in seconds).
SoftRow = tuple[int, str, bytes, int, float]


@dataclass(frozen=True)
class NewKeyLeaf:
    """A key-history leaf to append (`provenance.core.keyhistory`): stored in the leaves table
    with sequence 0 and no file hash, and indexed by device in ``key_events``."""

    leaf_hash: bytes
    signed: SignedKeyEvent
    event: KeyEvent
    integrated_at: datetime
    entry: bytes


@dataclass(frozen=True)
class HashPack:
    """The near-duplicate index's view of the leaves [first, next): their usable PDQ hashes
    (algorithm "pdq", quality >= PDQ_MIN_QUALITY, 32 bytes) as arrays, and whether any of
    their soft hashes is a video frame's (`provenance.index.packs`).

    ids: (n,) int64 leaf indexes, non-decreasing, in [first, next); words: (n, 4) uint64,
    each hash as four big-endian 64-bit words.
    """

    first: int
    next: int
    ids: np.ndarray
    words: np.ndarray
    video: bool


class AppendTxn(Protocol):
    """One append transaction: it holds the log's append lock (no other writer, in any
    process, appends until it ends), reads see everything committed before it, and its
    writes become durable together when it commits, or not at all."""

    def tree_size(self) -> int:
        """Leaves in the log (the head: MAX(index) + 1, never a count)."""
        ...

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """(tree size, signed note) of the newest checkpoint, or None."""
        ...

    def checkpoint_covering(self, index: int) -> tuple[int, str] | None:
        """(tree size, signed note) of the first checkpoint whose tree holds leaf ``index``
        (the one its receipt was issued with), or None."""
        ...

    def leaves_by_claim_hash(self, claim_hashes: Sequence[bytes]) -> dict[bytes, LeafRecord]:
        """The logged leaves among these claim hashes, by claim hash (one read)."""
        ...

    def find_devices(self, device_ids: Sequence[bytes]) -> dict[bytes, Device]:
        """The enrolled devices among these ids, by id (one read)."""
        ...

    def revocation_entries(self, device_ids: Sequence[bytes]) -> list[tuple[int, bytes, bytes]]:
        """(leaf index, device id, leaf data) of the revocations logged for any of these
        devices, in log order (one read; almost always none)."""
        ...

    def key_event_kinds(self, device_ids: Sequence[bytes]) -> set[tuple[bytes, int]]:
        """(device id, kind as `KeyEventKind`'s number) of each kind of key event logged
        for any of these devices (one read): what a key-history backfill skips."""
        ...

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        """Perfect-subtree hashes (level, index) in the order asked; LogError if missing."""
        ...

    def put_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None: ...

    def put_checkpoint(self, size: int, note: str, now: datetime) -> None: ...

    def insert_leaves(self, start: int, leaves: Sequence[NewLeaf]) -> None:
        """Leaves start, start+1, ... with their soft hashes and device sequence state."""
        ...

    def enroll(
        self, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str
    ) -> Device:
        """`Store.enroll` inside this transaction."""
        ...

    def revoke(self, device_id: bytes, effective_at: datetime, reason: str) -> Device:
        """`Store.revoke` inside this transaction."""
        ...

    def all_devices(self) -> list[Device]:
        """Every registry row, oldest enrollment first."""
        ...

    def insert_key_events(self, start: int, leaves: Sequence[NewKeyLeaf]) -> None:
        """Key-history leaves start, start+1, ..., indexed by device."""
        ...


class Store(Protocol):
    """What the service needs from storage. Every method is thread-safe.

    Errors: `StorageError` when the database cannot be reached or written (disk full,
    connection lost); `LogIntegrityError` when stored log rows are damaged;
    `LogError` when a Merkle node is missing; registry errors from enroll and revoke.
    """

    #: A human-readable name of the database (a path, or a URL without its password).
    location: str
    #: Whether other processes may append to the same log (the service then follows
    #: their appends into its in-memory index).
    shared: bool

    def close(self) -> None: ...

    def started(self) -> None:
        """The server's start-up checks passed: from now on the store may write what it
        holds back meanwhile (SQLite: its WAL copied into the database file, so that a
        start refused on a stale -wal beside the file, a rollback or another log's key,
        leaves the file and the -wal as it found them). Backends that hold nothing back
        ignore it."""
        ...

    def stop_waiting(self) -> None:
        """A server stopping: a call waiting for a store it cannot reach (PostgreSQL: a
        pooled connection while the database is down) gives up at once
        (StoreUnavailableError) instead of waiting out its wait; a store that answers is
        used as before. Backends that wait for no connection ignore it."""
        ...

    def append(self, wait_s: float | None = None) -> AbstractContextManager[AppendTxn]:
        """An append transaction (see `AppendTxn`); commits on a normal exit, rolls back
        on an exception. ``wait_s``: how long at most to wait for the store to be reached
        (PostgreSQL: for a pooled connection, then StoreUnavailableError); None: the
        store's own wait; a backend that waits for no connection ignores it. Raises
        StorageError when the commit fails."""
        ...

    # meta
    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def setdefault_meta(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` already has one; return the stored value."""
        ...

    # per-device submission quotas, shared by every server of the store
    def add_quota_usage(
        self, window: int, usage: Sequence[tuple[bytes, int, int]], keep_from: int
    ) -> None:
        """Add (device id, claims, claim bytes) to the devices' counters of minute
        ``window``, atomically with every other server's additions; drop the counters
        of minutes before ``keep_from``."""
        ...

    def quota_usage(self, device_id: bytes, windows: Sequence[int]) -> list[tuple[int, int]]:
        """(claims, claim bytes) counted for the device in each of these minutes."""
        ...

    # registry
    def find_device(self, device_id: bytes) -> Device | None: ...

    def get_device(self, device_id: bytes) -> Device:
        """Raises UnknownDeviceError when no device has this key id."""
        ...

    def add_token(
        self, token_hash: bytes, label: str, now: datetime, expires: datetime
    ) -> None: ...

    def enroll(
        self, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str = ""
    ) -> Device:
        """Record the device in the registry only (the service logs it through the
        writer), spending its one-time token (None: enrolled by a checked certificate),
        atomically. Raises EnrollmentError."""
        ...

    def device_certificate(self, device_id: bytes) -> str: ...

    def revoke(self, device_id: bytes, effective_at: datetime, reason: str) -> Device:
        """Record a revocation in the registry only (the service logs it through the
        writer); revoking twice keeps the earlier time. Raises UnknownDeviceError."""
        ...

    def key_event_entries(self, device_id: bytes) -> list[tuple[int, bytes]]:
        """(leaf index, leaf data) of the key-history leaves logged for ``device_id``, in
        log order."""
        ...

    def device_ids(self) -> Iterator[bytes]:
        """The device id of every registry (``devices``) row, in id order, read in
        pages: for `prov log audit --db` to name a row whose device the log never
        enrolled. A row a server adds meanwhile may or may not be among them."""
        ...

    def key_event_rows(self, start: int) -> Iterator[tuple[int, object, object]]:
        """(leaf index, device id, kind) of every ``key_events`` row from leaf ``start``
        on, in leaf order, read in pages: the values as the database holds them, for
        `provenance.log.leaf_audit` to compare with the logged key history."""
        ...

    # log reads
    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]: ...

    def tree_size(self) -> int: ...

    def node_hashes(self, level: int, start: int, stop: int) -> list[tuple[object, object]]:
        """(index, hash) of every stored node of ``level`` with ``start <= index < stop``,
        in index order: the values as the database holds them (a row edited behind the
        log's back may hold text, or a fraction, where an integer or a hash belongs), for
        `provenance.log.store_audit` to compare with the re-hashed tree."""
        ...

    def nodes_outside(self, size: int, limit: int) -> list[tuple[object, object]]:
        """(level, index) of the stored nodes that no tree of ``size`` leaves has (an
        index past ``size >> level`` or negative, a level past the top or negative),
        values as the database holds them, by level and index: at most ``limit`` from
        each range of the primary key read (negative levels, levels past the top, and
        per level the indexes below 0 and those past the tree), never a scan of every
        node."""
        ...

    def checkpoint_rows(self, start: int) -> Iterator[tuple[int, str]]:
        """(size column, signed note) of every stored checkpoint of size ``start`` or
        more, by size, read in pages."""
        ...

    def latest_checkpoint(self) -> tuple[int, str] | None: ...

    def checkpoint_covering(self, index: int) -> tuple[int, str] | None:
        """See `AppendTxn.checkpoint_covering`."""
        ...

    def leaf_by_claim_hash(self, claim_hash: bytes) -> LeafRecord | None: ...

    def leaf_by_index(self, index: int) -> LeafRecord | None: ...

    def leaf_by_leaf_hash(self, leaf_hash: bytes) -> LeafRecord | None: ...

    def leaves_by_file_sha256(self, sha256: bytes, limit: int | None = None) -> list[LeafRecord]:
        """The leaves whose claim binds the file SHA-256 ``sha256`` (32 bytes), in index
        order; with ``limit``, only the first ``limit`` of them by index (the LIMIT is in
        the query: the read does not grow with the number of leaves past it)."""
        ...

    def leaves_by_file_sha256_many(
        self, hashes: Sequence[bytes], limit: int | None = None
    ) -> dict[bytes, list[LeafRecord]]:
        """`leaves_by_file_sha256` of each of ``hashes`` (32-byte SHA-256s) in one read (a
        statement per 250 hashes): the leaves of each hash found, in index order, by hash
        (with ``limit``, the first ``limit`` by index of each hash); hashes without leaves
        are absent."""
        ...

    def entries(self, start: int, limit: int) -> list[tuple[int, bytes]]:
        """(index, leaf data) of up to ``limit`` leaves from index ``start``, in order."""
        ...

    def iter_index_rows(self, start: int = 0) -> Iterator[IndexRow]:
        """The `IndexRow` of every leaf from index ``start`` on, in index order, read in
        pages (values as the database returns them: a damaged row may hold other types)."""
        ...

    def hash_pack(self, start: int, stop: int) -> HashPack:
        """The `HashPack` of leaves [start, stop), read from the soft-hash rows."""
        ...

    def leaf_owners(self, indexes: Sequence[int]) -> list[tuple[int, bytes, datetime]]:
        """(leaf index, device id, integrated at) of each leaf of ``indexes`` the log holds:
        whose entry each is and when it was logged, in index order, each once (an index
        past the log is left out; a key-history leaf names the device it is about). Read
        for just the leaves a near-duplicate search hits (`provenance.server.service`'s
        share of candidates per group)."""
        ...

    def soft_hash_rows(self, start: int, stop: int) -> list[SoftRow]:
        """Every soft-hash row of leaves [start, stop), sorted (what `provenance.index.audit`
        compares with the logged entries)."""
        ...

    def stored_packs(self, start: int) -> Iterator[HashPack]:
        """The stored packs whose first leaf is ``start`` or later, in order (they are
        derived data: `provenance.index.packs` checks them before use)."""
        ...

    def put_pack(self, pack: HashPack) -> None:
        """Store ``pack``, keyed by its first leaf (replacing one stored there: the pack
        of given leaves is always the same, so servers writing it together agree)."""
        ...


def is_postgres_url(target: str | Path) -> bool:
    """Whether ``target`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_store(
    target: str | Path,
    *,
    exclusive: bool = False,
    read_only: bool = False,
    connection_wait_s: float | None = None,
    answer_wait_s: float | None = None,
) -> Store:
    """Open (creating and migrating if needed) the store ``target`` names.

    ``postgresql://USER@HOST:PORT/DB``: PostgreSQL; ``:memory:``: the in-memory fake;
    else a SQLite file path, which with ``exclusive`` is locked against a second server.
    ``read_only`` (an audit): never write, neither a migration nor anything else (SQLite
    ``mode=ro``; PostgreSQL read-only transactions); an older schema is left as it is and
    described in the store's ``outdated``. ``connection_wait_s``: PostgreSQL's wait for a
    pooled connection (None: `provenance.store.postgres.CONNECTION_WAIT_S`); unused by
    the others. ``answer_wait_s``: PostgreSQL's wait for a lock, and for a statement's
    answer, a read's or a write's (None: `provenance.store.postgres.ANSWER_WAIT_S`).
    Raises ConfigError (PostgreSQL driver missing, another server holds the file),
    StorageError (cannot connect) or LogError (not our database, newer schema).
    """
    if is_postgres_url(target):
        try:
            from provenance.store.postgres import PostgresStore
        except ImportError as e:
            raise ConfigError(
                f"a PostgreSQL database needs psycopg 3 and psycopg-pool ({e});"
                " install media-provenance[postgres]"
            ) from e
        from provenance.store.postgres import ANSWER_WAIT_S, CONNECTION_WAIT_S

        return PostgresStore(
            str(target),
            read_only=read_only,
            connection_wait_s=CONNECTION_WAIT_S if connection_wait_s is None else connection_wait_s,
            answer_wait_s=ANSWER_WAIT_S if answer_wait_s is None else answer_wait_s,
        )
    if str(target) == ":memory:":
        from provenance.store.memory import MemoryStore

        return MemoryStore()
    from provenance.store.sqlite import SqliteStore

    return SqliteStore(Path(target), exclusive=exclusive, read_only=read_only)


#: Prefix of the per-device quota counters in the meta table (minute, then device id).
#: The store's meta key saying the registry's history is in the log (its value: the
#: tree size when it was first logged): set by a server's first start on the database
#: (`provenance.server.service`), read by `prov log audit --db`.
KEY_HISTORY_META = "key_history_since"
QUOTA_PREFIX = "quota/"


def quota_key(window: int, device_id: bytes | None = None) -> str:
    """The meta key of a device's quota counter in minute ``window`` (minutes since the
    epoch, zero-padded so keys sort by minute); without a device, a key that sorts after
    every counter of earlier minutes and before those of ``window``."""
    minute = f"{QUOTA_PREFIX}{window:012d}"
    return minute if device_id is None else f"{minute}/{device_id.hex()}"


def add_usage(old: str | None, claims: int, nbytes: int) -> str:
    """A quota counter's stored value ("claims bytes") with ``claims`` and ``nbytes``
    added."""
    c, b = parse_usage(old)
    return f"{c + claims} {b + nbytes}"


def parse_usage(value: str | None) -> tuple[int, int]:
    """(claims, bytes) of a stored quota counter value (None: (0, 0))."""
    if value is None:
        return 0, 0
    c, b = value.split()
    return int(c), int(b)
