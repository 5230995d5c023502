"""The SQL both database backends share: SQLite and PostgreSQL run the same statements
(``?`` placeholders; the PostgreSQL driver rewrites them) over the same tables.

A backend supplies connections (`SqlStore._read`, `SqlStore._write`), the append lock
(`SqlStore._lock_appends`) and the classification of its driver's errors
(`SqlStore._classify`).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from provenance.core.binding import PDQ_HASH_SIZE, PDQ_MIN_QUALITY
from provenance.core.claims import Device
from provenance.core.errors import (
    AlreadyEnrolledError,
    EnrollmentError,
    LogError,
    LogIntegrityError,
    ProvenanceError,
    UnknownDeviceError,
)
from provenance.core.merkle import HASH_SIZE
from provenance.core.registry import enrolled_already, merged_revocation
from provenance.store import (
    QUOTA_PREFIX,
    HashPack,
    IndexRow,
    LeafRecord,
    NewKeyLeaf,
    NewLeaf,
    SoftRow,
    add_usage,
    from_us,
    parse_usage,
    quota_key,
    storable_text,
    stored_as,
    to_us,
)

#: Leaves read per page when iterating the log.
PAGE = 10_000
#: Stored index packs read per query.
PACK_PAGE = 8
#: Leaves whose soft hashes `SqlStore.hash_pack` reads per query (as many as an index
#: pack holds, `provenance.index.packs.PACK_LEAVES`): each statement stays short on a
#: database that answers, which PostgreSQL's watchdog would otherwise cut (a read of 3
#: million rows took 2.5 s, past --db-answer-wait 0.5 + 2 s).
HASH_PACK_PAGE_LEAVES = 1 << 16
#: Checkpoint rows read at once by `SqlStore.checkpoint_rows` (a note is about 250 bytes).
CHECKPOINT_PAGE = 1000
#: The key of the leaf and file hash indexes, SQL over a column's name: the hash's first
#: `HASH_KEY_BYTES` bytes (an index entry a third of the size). A lookup matches the key,
#: which the index finds, and then the full hash (`_by_hash`), so hashes sharing their
#: first bytes are told apart. The indexes' own expression (SQLite migration 5,
#: PostgreSQL migrations 4 and 5) is written out there: the two must stay equal.
HASH_KEY = "substr({}, 1, 8)"
HASH_KEY_BYTES = 8


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    """The part of a DB-API connection the shared SQL uses."""

    def execute(self, sql: str, args: Sequence[Any] = ...) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> Any: ...


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_DEVICE_COLS = (
    "device_id, public_key, label, enrolled_at, last_sequence, last_claim_hash,"
    " revoked_at, revocation_reason"
)
_LEAF_COLS = (
    "idx, leaf_hash, claim_hash, device_id, sequence, file_sha256, integrated_at,"
    " chain_linked, entry"
)


def _reads_log(fn: F) -> F:
    """Reading log rows: a value of the wrong type (a blob turned into text, say) means the
    database was edited behind the log's back; raise LogIntegrityError, not a crash."""

    @functools.wraps(fn)
    def wrapper(self: SqlStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except ProvenanceError:
            raise
        except (TypeError, ValueError) as e:
            raise LogIntegrityError(
                f"the log database is damaged: {e}", public=PUBLIC_DAMAGED
            ) from e

    return cast(F, wrapper)  # wraps() keeps fn's signature


def _text(value: object) -> str:
    """A text column's ``value`` as text: a blob (a registry edited behind the log's back;
    SQLite keeps whatever type is written) decoded as UTF-8, each byte that does not
    decode written as ``\\xff``, as the CLI shows untrusted text (before: Python's
    ``b'\\xff'``). Still text, so a reply carries it and a page shows it."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _device(row: Sequence[Any]) -> Device:
    """The device of a `devices` row. Raises LogIntegrityError naming the row when a value
    is of a type no writer stores (text where a time is, a NULL): the registry was edited
    behind the log's back (before: a ValueError and a traceback from `prov log audit
    --db`)."""
    (device_id, public_key, label, enrolled, last_seq, last_hash, revoked, reason) = row
    try:
        return Device(
            device_id=bytes(device_id),
            public_key=bytes(public_key),
            label=_text(label),
            enrolled_at=from_us(int(enrolled)),
            last_sequence=int(last_seq),
            last_claim_hash=bytes(last_hash),
            revoked_at=None if revoked is None else from_us(int(revoked)),
            revocation_reason=_text(reason),
        )
    except (TypeError, ValueError, OverflowError) as e:
        shown = device_id.hex() if isinstance(device_id, bytes) else repr(device_id)[:80]
        raise LogIntegrityError(
            f"the log database is damaged: the devices row of {shown} holds a value of the"
            f" wrong type ({e})",
            public=PUBLIC_DAMAGED,
        ) from e


def _edited(what: str) -> LogIntegrityError:
    """The error for a log row ``what`` names holding a value no writer stores there."""
    return LogIntegrityError(
        f"the log database is damaged: {what}: the row was edited behind the log's back",
        public=PUBLIC_DAMAGED,
    )


def _blob(value: object, row: str, column: str) -> bytes:
    """The bytes of a blob (bytea) column's ``value`` read from ``row``; raises
    LogIntegrityError naming the row and column for anything else (before: text raised
    Python's "string argument without an encoding", and a number N became N zero
    bytes)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise _edited(f"the {column} column of {row} is stored as {stored_as(value)}, not bytes")


def _integer(value: object, row: str, column: str) -> int:
    """An integer column's ``value`` read from ``row``; raises LogIntegrityError naming
    them for anything else (text, a fraction, NULL)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _edited(f"the {column} column of {row} is stored as {stored_as(value)}, not an integer")


def _node_hash(level: object, index: object, value: object) -> bytes:
    """The hash a `nodes` row (``level``, ``index``) holds; raises LogIntegrityError
    naming the node for anything but 32 bytes."""
    if isinstance(value, bytes | bytearray | memoryview) and len(value) == HASH_SIZE:
        return bytes(value)
    raise _edited(
        f"the Merkle node (level {level}, index {index}) is stored as {stored_as(value)},"
        f" not {HASH_SIZE} bytes"
    )


def _entry(index: int, value: object) -> bytes:
    """The entry a leaves row of log entry ``index`` holds; raises LogIntegrityError
    naming it when it is not bytes."""
    return _blob(value, f"log entry {index}", "entry")


def _note(size: int, value: object) -> str:
    """The signed note a checkpoints row of ``size`` holds: text (a blob decoded as
    `_text` does, as `SqlStore.checkpoint_rows` reads it); raises LogIntegrityError
    naming the row for a number or NULL."""
    if isinstance(value, str | bytes | bytearray | memoryview):
        return _text(value)
    raise _edited(f"the checkpoint row of size {size} holds {stored_as(value)}, not a signed note")


def _leaf(row: Sequence[Any]) -> LeafRecord:
    """The leaf of a `leaves` row (`_LEAF_COLS`). Raises LogIntegrityError naming the
    row and column of a value no writer stores there."""
    index = _integer(row[0], "a leaves row", "idx")
    name = f"log entry {index}"
    return LeafRecord(
        index=index,
        leaf_hash=_blob(row[1], name, "leaf_hash"),
        claim_hash=_blob(row[2], name, "claim_hash"),
        device_id=_blob(row[3], name, "device_id"),
        sequence=_integer(row[4], name, "sequence"),
        file_sha256=_blob(row[5], name, "file_sha256"),
        integrated_at=from_us(_integer(row[6], name, "integrated_at")),
        chain_linked=bool(_integer(row[7], name, "chain_linked")),
        entry=_entry(index, row[8]),
    )


# ------------------------------------------------------------------ statements on a connection


def _by_hash(column: str) -> str:
    """The WHERE clause finding rows whose ``column`` (a hash with a `HASH_KEY` index)
    equals a parameter; its arguments are `_hash_args` of the hash."""
    return f"{HASH_KEY.format(column)}=? AND {column}=?"


def _hash_args(h: bytes) -> tuple[bytes, bytes]:
    return h[:HASH_KEY_BYTES], h


def _chunks(keys: Sequence[bytes], size: int = 500) -> list[list[bytes]]:
    """Distinct ``keys`` in parts small enough for one statement's parameters."""
    uniq = list(dict.fromkeys(keys))
    return [uniq[i : i + size] for i in range(0, len(uniq), size)]


def _marks(part: Sequence[object]) -> str:
    return ", ".join("?" for _ in part)


def _limit(limit: int | None) -> str:
    """A LIMIT clause of ``limit`` rows (an int, written out: never a caller's text), or
    none for None."""
    return "" if limit is None else f" LIMIT {int(limit)}"


def find_device(c: Conn, device_id: bytes) -> Device | None:
    row = c.execute(
        f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id=?", (device_id,)
    ).fetchone()
    return None if row is None else _device(row)


def _device_chain(c: Conn, device_id: bytes) -> str:
    """The X.509 chain stored with the enrolled device ``device_id`` ("" when none)."""
    (chain,) = c.execute(
        "SELECT certificate_pem FROM devices WHERE device_id=?", (device_id,)
    ).fetchone()
    return str(chain)


def enroll(
    c: Conn, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str
) -> Device:
    """`Store.enroll` on a connection inside a write transaction."""
    label = device.label
    storable_text(certificate_pem, "device certificate chain")
    if token_hash is not None:
        row = c.execute(
            "SELECT label, expires_at, used_at, device_id FROM enrollment_tokens"
            " WHERE token_hash=?",
            (token_hash,),
        ).fetchone()
        if row is None:
            raise EnrollmentError("unknown enrollment token")
        token_label, expires, used, spent_by = row
        if used is not None:
            spent_on = find_device(c, device.device_id)
            if (
                spent_on is not None
                and spent_by is not None
                and bytes(spent_by) == device.device_id
            ):
                raise AlreadyEnrolledError(
                    "this enrollment token was already used",
                    spent_on,
                    _device_chain(c, device.device_id),
                    token_spent_on_it=True,
                )
            raise EnrollmentError("this enrollment token was already used")
        if to_us(now) > int(expires):
            raise EnrollmentError(f"this enrollment token expired at {from_us(int(expires))}")
        label = token_label or label
    found = find_device(c, device.device_id)
    if found is not None:
        raise enrolled_already(found, _device_chain(c, device.device_id))
    c.execute(
        f"INSERT INTO devices({_DEVICE_COLS}, certificate_pem)"
        " VALUES (?, ?, ?, ?, 0, ?, NULL, '', ?)",
        (device.device_id, device.public_key, label, to_us(now), b"", certificate_pem),
    )
    if token_hash is not None:
        c.execute(
            "UPDATE enrollment_tokens SET used_at=?, device_id=? WHERE token_hash=?",
            (to_us(now), device.device_id, token_hash),
        )
    found = find_device(c, device.device_id)
    assert found is not None
    return found


def revoke(c: Conn, device_id: bytes, effective_at: datetime, reason: str) -> Device:
    """`Store.revoke` on a connection inside a write transaction."""
    storable_text(reason, "revocation reason")
    d = find_device(c, device_id)
    if d is None:
        raise UnknownDeviceError(f"device {device_id.hex()} is not enrolled")
    when, why = merged_revocation(d, effective_at, reason)
    c.execute(
        "UPDATE devices SET revoked_at=?, revocation_reason=? WHERE device_id=?",
        (to_us(when), why, device_id),
    )
    found = find_device(c, device_id)
    assert found is not None
    return found


def get_nodes(c: Conn, keys: Sequence[tuple[int, int]]) -> list[bytes]:
    """Hashes of perfect subtrees (level, index), in the order asked; LogError if missing."""
    if not keys:
        return []
    found: dict[tuple[int, int], bytes] = {}
    uniq = list(dict.fromkeys(keys))
    for i in range(0, len(uniq), 400):
        part = uniq[i : i + 400]
        where = " OR ".join("(level=? AND idx=?)" for _ in part)
        args = [v for k in part for v in k]
        for level, idx, h in c.execute(
            f"SELECT level, idx, hash FROM nodes WHERE {where}", args
        ).fetchall():
            found[(int(level), int(idx))] = _node_hash(level, idx, h)
    missing = [k for k in uniq if k not in found]
    if missing:
        raise LogError(f"log database is missing Merkle nodes {missing[:4]}")
    return [found[k] for k in keys]


def tree_size(c: Conn) -> int:
    """The head of the log: MAX(idx) + 1 (an index lookup, never a COUNT(*))."""
    (n,) = c.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM leaves").fetchone()
    return int(n)


def latest_checkpoint(c: Conn) -> tuple[int, str] | None:
    row = c.execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    return None if row is None else (int(row[0]), _note(int(row[0]), row[1]))


def checkpoint_covering(c: Conn, index: int) -> tuple[int, str] | None:
    row = c.execute(
        "SELECT size, note FROM checkpoints WHERE size>? ORDER BY size LIMIT 1", (index,)
    ).fetchone()
    return None if row is None else (int(row[0]), _note(int(row[0]), row[1]))


def leaf_by_claim_hash(c: Conn, claim_hash: bytes) -> LeafRecord | None:
    row = c.execute(f"SELECT {_LEAF_COLS} FROM leaves WHERE claim_hash=?", (claim_hash,)).fetchone()
    return None if row is None else _leaf(row)


def _paged(page: Callable[[int], list[T]], key: Callable[[T], int], start: int) -> Iterator[T]:
    """Every item of the pages ``page(start)``, ``page(key(last) + 1)``, ... until one is
    empty."""
    while rows := page(start):
        yield from rows
        start = key(rows[-1]) + 1


class SqlAppend:
    """`AppendTxn` over one connection inside an append transaction."""

    def __init__(self, conn: Conn) -> None:
        self.c = conn

    def tree_size(self) -> int:
        return tree_size(self.c)

    def latest_checkpoint(self) -> tuple[int, str] | None:
        return latest_checkpoint(self.c)

    def checkpoint_covering(self, index: int) -> tuple[int, str] | None:
        return checkpoint_covering(self.c, index)

    def leaves_by_claim_hash(self, claim_hashes: Sequence[bytes]) -> dict[bytes, LeafRecord]:
        out: dict[bytes, LeafRecord] = {}
        for part in _chunks(claim_hashes):
            rows = self.c.execute(
                f"SELECT {_LEAF_COLS} FROM leaves WHERE claim_hash IN ({_marks(part)})", part
            ).fetchall()
            try:
                out.update((r.claim_hash, r) for r in map(_leaf, rows))
            except (TypeError, ValueError) as e:
                raise LogIntegrityError(
                    f"the log database is damaged: {e}", public=PUBLIC_DAMAGED
                ) from e
        return out

    def find_devices(self, device_ids: Sequence[bytes]) -> dict[bytes, Device]:
        out: dict[bytes, Device] = {}
        for part in _chunks(device_ids):
            rows = self.c.execute(
                f"SELECT {_DEVICE_COLS} FROM devices WHERE device_id IN ({_marks(part)})", part
            ).fetchall()
            out.update((d.device_id, d) for d in map(_device, rows))
        return out

    def revocation_entries(self, device_ids: Sequence[bytes]) -> list[tuple[int, bytes, bytes]]:
        out: list[tuple[int, bytes, bytes]] = []
        for part in _chunks(device_ids):
            rows = self.c.execute(
                "SELECT l.idx, k.device_id, l.entry FROM key_events k"
                " JOIN leaves l ON l.idx = k.leaf_idx"
                f" WHERE k.device_id IN ({_marks(part)}) AND k.kind >= 2",
                part,
            ).fetchall()
            try:
                out.extend((int(i), bytes(d), bytes(e)) for i, d, e in rows)
            except (TypeError, ValueError) as e:
                raise LogIntegrityError(
                    f"the log database is damaged: {e}", public=PUBLIC_DAMAGED
                ) from e
        return sorted(out)

    def key_event_kinds(self, device_ids: Sequence[bytes]) -> set[tuple[bytes, int]]:
        out: set[tuple[bytes, int]] = set()
        for part in _chunks(device_ids):
            rows = self.c.execute(
                f"SELECT DISTINCT device_id, kind FROM key_events WHERE device_id IN ({_marks(part)})",
                part,
            ).fetchall()
            try:
                out.update((bytes(d), int(k)) for d, k in rows)
            except (TypeError, ValueError) as e:
                raise LogIntegrityError(
                    f"the log database is damaged: {e}", public=PUBLIC_DAMAGED
                ) from e
        return out

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        return get_nodes(self.c, keys)

    def put_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        self.c.executemany("INSERT INTO nodes(level, idx, hash) VALUES (?, ?, ?)", nodes)

    def put_checkpoint(self, size: int, note: str, now: datetime) -> None:
        self.c.execute(
            "INSERT INTO checkpoints(size, note, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(size) DO UPDATE SET note=excluded.note, created_at=excluded.created_at",
            (size, note, to_us(now)),
        )

    def enroll(
        self, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str
    ) -> Device:
        return enroll(self.c, token_hash, device, now, certificate_pem)

    def revoke(self, device_id: bytes, effective_at: datetime, reason: str) -> Device:
        return revoke(self.c, device_id, effective_at, reason)

    def all_devices(self) -> list[Device]:
        rows = self.c.execute(f"SELECT {_DEVICE_COLS} FROM devices ORDER BY enrolled_at").fetchall()
        return [_device(r) for r in rows]

    def insert_key_events(self, start: int, leaves: Sequence[NewKeyLeaf]) -> None:
        self.c.executemany(
            f"INSERT INTO leaves({_LEAF_COLS}) VALUES (?,?,?,?,0,?,?,0,?)",
            [
                (
                    start + i,
                    lf.leaf_hash,
                    lf.signed.event_hash,
                    lf.event.device_id,
                    b"",
                    to_us(lf.integrated_at),
                    lf.entry,
                )
                for i, lf in enumerate(leaves)
            ],
        )
        self.c.executemany(
            "INSERT INTO key_events(leaf_idx, device_id, kind) VALUES (?, ?, ?)",
            [(start + i, lf.event.device_id, int(lf.event.kind)) for i, lf in enumerate(leaves)],
        )

    def insert_leaves(self, start: int, leaves: Sequence[NewLeaf]) -> None:
        c = self.c
        claim_hashes = [lf.signed_claim.claim_hash for lf in leaves]
        c.executemany(
            f"INSERT INTO leaves({_LEAF_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
            [
                (
                    start + i,
                    lf.leaf_hash,
                    claim_hashes[i],
                    lf.device_id,
                    lf.sequence,
                    lf.file_sha256,
                    to_us(lf.integrated_at),
                    int(lf.chain_linked),
                    lf.entry,
                )
                for i, lf in enumerate(leaves)
            ],
        )
        soft = [
            (start + i, h.algorithm, h.hash, h.quality, h.timestamp_seconds)
            for i, lf in enumerate(leaves)
            for h in lf.soft_bindings
        ]
        if soft:
            c.executemany(
                "INSERT INTO soft_hashes(leaf_idx, algorithm, hash, quality, timestamp_seconds)"
                " VALUES (?,?,?,?,?)",
                soft,
            )
        # each device's newest leaf of the batch (leaves come in chain order)
        last = {
            lf.device_id: (lf.sequence, ch) for lf, ch in zip(leaves, claim_hashes, strict=True)
        }
        c.executemany(
            "UPDATE devices SET last_sequence=?, last_claim_hash=? WHERE device_id=?",
            [(seq, ch, dev) for dev, (seq, ch) in last.items()],
        )


def read_only_schema(version: int, newest: int, location: str, migrate: str) -> str:
    """The schema check of a store opened read-only (never migrated): "" when ``version``
    is ``newest``, else the store's ``outdated`` sentence for an older one (``migrate``
    says how to migrate it). Raises LogError for a newer version, or 0 (no schema)."""
    if version > newest or version == 0:
        raise LogError(
            f"{location} has schema version {version}; this program knows 1 to {newest}"
            + (": upgrade the program" if version else " (it is no provenance database)")
        )
    if version == newest:
        return ""
    return (
        f"the database {location} has schema version {version}, older than this"
        f" program's {newest}, and was opened read-only, so not migrated; {migrate}"
    )


#: What a caller of the server is told when the log database fails
#: (`ProvenanceError.public`): what happened and what to do, never the database's URL or
#: file, nor the driver's words, which the error's own message gives the operator.
PUBLIC_UNUSABLE = "the log database cannot be used now; try again later"
PUBLIC_FULL = (
    "the log database cannot grow (its storage is full or failing); nothing was recorded:"
    " try again later"
)
PUBLIC_DAMAGED = "the log database is damaged; the server's operator can read why in its log"
PUBLIC_FAILED = "the log database failed; try again later"
PUBLIC_REFUSED = (
    "the log database refuses this server's login; nothing can be read or written until"
    " the server's operator fixes its database settings: try again later"
)


def public_not_answered(seconds: float, then: str = "try again") -> str:
    """What a caller is told when the log database did not answer within ``seconds``;
    ``then``: what it should do."""
    return f"the log database did not answer in {seconds:.3g} s; {then}"


class SqlStore(ABC):
    """The `Store` methods, written once over `Conn` (see module docstring)."""

    location: str
    shared: bool
    #: Opened read-only over an older schema (not migrated): a sentence saying so and how
    #: to migrate it; "" when the schema is current. Tables or columns newer than the
    #: database's schema are missing from it.
    outdated: str = ""

    # ---------------------------------------------------------------- backend hooks

    @abstractmethod
    def _read(self) -> AbstractContextManager[Conn]:
        """A connection for reads (autocommit, or its own short transactions)."""

    @abstractmethod
    def _write(self, wait_s: float | None = None) -> AbstractContextManager[Conn]:
        """A connection inside a write transaction that commits on a normal exit;
        ``wait_s`` as `Store.append`'s."""

    def _quick_read(self) -> AbstractContextManager[Conn]:
        """A connection for a read whose caller can do without its answer (a quota count
        to refresh): `_read`, unless the backend waits less for it (PostgreSQL)."""
        return self._read()

    @abstractmethod
    def _lock_appends(self, c: Conn) -> None:
        """Take the log's append lock inside the current write transaction."""

    @abstractmethod
    def _classify(self, e: Exception) -> ProvenanceError | None:
        """Our error for a driver error, or None when ``e`` is not the driver's."""

    @abstractmethod
    def stop_waiting(self) -> None:
        """`Store.stop_waiting`."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection(s) or pool."""

    # ---------------------------------------------------------------- plumbing

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Driver errors -> ours (StorageError, LogIntegrityError, ...)."""
        try:
            yield
        except ProvenanceError:
            raise
        except Exception as e:
            ours = self._classify(e)
            if ours is None:
                raise
            raise ours from e

    @contextmanager
    def append(self, wait_s: float | None = None) -> Iterator[SqlAppend]:
        with self._errors(), self._write(wait_s) as c:
            self._lock_appends(c)
            yield SqlAppend(c)

    @contextmanager
    def _reading(self) -> Iterator[Conn]:
        with self._errors(), self._read() as c:
            yield c

    # ---------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        with self._reading() as c:
            row = c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._errors(), self._write() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value),
            )

    def setdefault_meta(self, key: str, value: str) -> str:
        with self._errors(), self._write() as c:
            c.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING",
                (key, value),
            )
            (stored,) = c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return str(stored)

    # ---------------------------------------------------------------- quotas

    def add_quota_usage(
        self, window: int, usage: Sequence[tuple[bytes, int, int]], keep_from: int
    ) -> None:
        # under the append lock: servers sharing the database add up without lost updates
        with self._errors(), self._write() as c:
            self._lock_appends(c)
            for device_id, claims, nbytes in usage:
                key = quota_key(window, device_id)
                row = c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
                c.execute(
                    "INSERT INTO meta(key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (key, add_usage(None if row is None else str(row[0]), claims, nbytes)),
                )
            c.execute(
                "DELETE FROM meta WHERE key >= ? AND key < ?",
                (QUOTA_PREFIX, quota_key(keep_from)),
            )

    def quota_usage(self, device_id: bytes, windows: Sequence[int]) -> list[tuple[int, int]]:
        out = []
        with self._errors(), self._quick_read() as c:
            for w in windows:
                row = c.execute(
                    "SELECT value FROM meta WHERE key=?", (quota_key(w, device_id),)
                ).fetchone()
                out.append(parse_usage(None if row is None else str(row[0])))
        return out

    # ---------------------------------------------------------------- devices

    def find_device(self, device_id: bytes) -> Device | None:
        with self._reading() as c:
            return find_device(c, device_id)

    def get_device(self, device_id: bytes) -> Device:
        d = self.find_device(device_id)
        if d is None:
            raise UnknownDeviceError(f"device {device_id.hex()} is not enrolled")
        return d

    def add_token(self, token_hash: bytes, label: str, now: datetime, expires: datetime) -> None:
        storable_text(label, "enrollment token's label")
        with self._errors(), self._write() as c:
            c.execute(
                "INSERT INTO enrollment_tokens(token_hash, label, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (token_hash, label, to_us(now), to_us(expires)),
            )

    def enroll(
        self, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str = ""
    ) -> Device:
        with self._errors(), self._write() as c:
            return enroll(c, token_hash, device, now, certificate_pem)

    def device_certificate(self, device_id: bytes) -> str:
        with self._reading() as c:
            row = c.execute(
                "SELECT certificate_pem FROM devices WHERE device_id=?", (device_id,)
            ).fetchone()
        return "" if row is None else str(row[0])

    def revoke(self, device_id: bytes, effective_at: datetime, reason: str) -> Device:
        with self._errors(), self._write() as c:
            return revoke(c, device_id, effective_at, reason)

    def device_ids(self) -> Iterator[bytes]:
        """`Store.device_ids`: `PAGE` ids a statement, each page after the last id read
        (a blob of SQLite's ordering; a row whose id a hand wrote as text or a number,
        which no lookup by id finds, is not among them)."""
        after = b""
        while ids := self._device_id_page(after):
            yield from ids
            after = ids[-1]

    def _device_id_page(self, after: bytes) -> list[bytes]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT device_id FROM devices WHERE device_id>? ORDER BY device_id LIMIT ?",
                (after, PAGE),
            ).fetchall()
        return [bytes(r[0]) for r in rows]

    @_reads_log
    def key_event_entries(self, device_id: bytes) -> list[tuple[int, bytes]]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT l.idx, l.entry FROM key_events k JOIN leaves l ON l.idx = k.leaf_idx"
                " WHERE k.device_id=? ORDER BY k.leaf_idx",
                (device_id,),
            ).fetchall()
        return [(int(i), bytes(e)) for i, e in rows]

    # ---------------------------------------------------------------- log reads

    @_reads_log
    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        with self._reading() as c:
            return get_nodes(c, keys)

    def tree_size(self) -> int:
        with self._reading() as c:
            return tree_size(c)

    def latest_checkpoint(self) -> tuple[int, str] | None:
        """(tree size, signed note) of the newest checkpoint, or None for an empty log."""
        with self._reading() as c:
            return latest_checkpoint(c)

    def checkpoint_covering(self, index: int) -> tuple[int, str] | None:
        with self._reading() as c:
            return checkpoint_covering(c, index)

    @_reads_log
    def leaf_by_claim_hash(self, claim_hash: bytes) -> LeafRecord | None:
        with self._reading() as c:
            return leaf_by_claim_hash(c, claim_hash)

    @_reads_log
    def leaf_by_index(self, index: int) -> LeafRecord | None:
        with self._reading() as c:
            row = c.execute(f"SELECT {_LEAF_COLS} FROM leaves WHERE idx=?", (index,)).fetchone()
        return None if row is None else _leaf(row)

    @_reads_log
    def leaf_by_leaf_hash(self, leaf_hash: bytes) -> LeafRecord | None:
        with self._reading() as c:
            row = c.execute(
                f"SELECT {_LEAF_COLS} FROM leaves WHERE {_by_hash('leaf_hash')}"
                " ORDER BY idx LIMIT 1",
                _hash_args(leaf_hash),
            ).fetchone()
        return None if row is None else _leaf(row)

    @_reads_log
    def leaves_by_file_sha256(self, sha256: bytes, limit: int | None = None) -> list[LeafRecord]:
        if limit is not None:  # the bounded read: one statement shape for one and many
            return self.leaves_by_file_sha256_many([sha256], limit).get(sha256, [])
        with self._reading() as c:
            rows = c.execute(
                f"SELECT {_LEAF_COLS} FROM leaves WHERE {_by_hash('file_sha256')} ORDER BY idx",
                _hash_args(sha256),
            ).fetchall()
        return [_leaf(r) for r in rows]

    @_reads_log
    def leaves_by_file_sha256_many(
        self, hashes: Sequence[bytes], limit: int | None = None
    ) -> dict[bytes, list[LeafRecord]]:
        out: dict[bytes, list[LeafRecord]] = {}
        with self._reading() as c:
            for part in _chunks(hashes, 250):  # keys and hashes: at most 500 parameters
                if limit is None:
                    keys = list(dict.fromkeys(h[:HASH_KEY_BYTES] for h in part))
                    sql = (
                        f"SELECT {_LEAF_COLS} FROM leaves"
                        f" WHERE {HASH_KEY.format('file_sha256')} IN ({_marks(keys)})"
                        f" AND file_sha256 IN ({_marks(part)}) ORDER BY idx"
                    )
                    args = [*keys, *part]
                else:
                    sql, args = self._first_leaves(part, limit)
                for rec in map(_leaf, c.execute(sql, args).fetchall()):
                    out.setdefault(rec.file_sha256, []).append(rec)
        for recs in out.values():
            recs.sort(key=lambda r: r.index)
        return out

    def _first_leaves(self, hashes: Sequence[bytes], limit: int) -> tuple[str, list[Any]]:
        """The statement (and its arguments) reading the first ``limit`` leaves by log
        index of each of ``hashes`` (distinct, at most 250): one bounded range of the file
        key index per hash (SQLite's index entries are ordered by rowid, the log index,
        within a key, so each range stops after ``limit`` rows)."""
        sql = " UNION ALL ".join(
            f"SELECT * FROM (SELECT {_LEAF_COLS} FROM leaves"
            f" WHERE {_by_hash('file_sha256')} ORDER BY idx{_limit(limit)}) AS h{i}"
            for i in range(len(hashes))
        )
        return sql, [a for h in hashes for a in _hash_args(h)]

    def node_hashes(self, level: int, start: int, stop: int) -> list[tuple[object, object]]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT idx, hash FROM nodes WHERE level=? AND idx>=? AND idx<? ORDER BY idx",
                (level, start, stop),
            ).fetchall()
        # (index, hash) tuples as the driver reads them: a blob or bytea as bytes
        return cast(list[tuple[object, object]], rows)

    def nodes_outside(self, size: int, limit: int) -> list[tuple[object, object]]:
        top = size.bit_length()  # the levels of a tree of ``size`` leaves: 0 to top - 1
        # one range of the primary key (level, idx) each; SQLite sorts text after every
        # number, so a level or index turned into text is past every bound
        ranges: list[tuple[str, tuple[int, ...]]] = [("level<?", (0,))]
        for level in range(top):
            ranges += [
                ("level=? AND idx<?", (level, 0)),
                ("level=? AND idx>=?", (level, size >> level)),
            ]
        ranges.append(("level>=?", (top,)))
        found: list[tuple[object, object]] = []
        with self._reading() as c:
            for where, args in ranges:
                found += c.execute(
                    f"SELECT level, idx FROM nodes WHERE {where} ORDER BY level, idx LIMIT ?",
                    (*args, limit),
                ).fetchall()
        return [(level, i) for level, i in found]

    def checkpoint_rows(self, start: int) -> Iterator[tuple[int, str]]:
        return _paged(self._checkpoint_page, lambda r: r[0], start)

    @_reads_log
    def _checkpoint_page(self, start: int) -> list[tuple[int, str]]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT size, note FROM checkpoints WHERE size>=? ORDER BY size LIMIT ?",
                (start, CHECKPOINT_PAGE),
            ).fetchall()
        return [(int(size), _text(note)) for size, note in rows]

    @_reads_log
    def entries(self, start: int, limit: int) -> list[tuple[int, bytes]]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT idx, entry FROM leaves WHERE idx>=? ORDER BY idx LIMIT ?", (start, limit)
            ).fetchall()
        return [(int(i), _entry(int(i), e)) for i, e in rows]

    def key_event_rows(self, start: int) -> Iterator[tuple[int, object, object]]:
        return _paged(self._key_event_page, lambda r: r[0], start)

    def _key_event_page(self, start: int) -> list[tuple[int, object, object]]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT leaf_idx, device_id, kind FROM key_events WHERE leaf_idx>=?"
                " ORDER BY leaf_idx LIMIT ?",
                (start, PAGE),
            ).fetchall()
        # leaf_idx is SQLite's INTEGER PRIMARY KEY, a PostgreSQL bigint: an integer
        return [(int(r[0]), r[1], r[2]) for r in rows]

    def iter_index_rows(self, start: int = 0) -> Iterator[IndexRow]:
        return _paged(self._index_page, lambda r: int(r[0]), start)

    def _index_page(self, start: int) -> list[IndexRow]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT idx, leaf_hash, claim_hash, device_id, sequence, file_sha256,"
                " integrated_at, entry, chain_linked FROM leaves WHERE idx>=? ORDER BY idx"
                " LIMIT ?",
                (start, PAGE),
            ).fetchall()
        return [tuple(r) for r in rows]  # types checked by the caller

    @_reads_log
    def leaf_owners(self, indexes: Sequence[int]) -> list[tuple[int, bytes, datetime]]:
        """`Store.leaf_owners`, a chunk of indexes a statement (by the primary key)."""
        out: list[tuple[int, bytes, datetime]] = []
        with self._reading() as c:
            wanted = sorted(set(indexes))
            for part in (wanted[i : i + 500] for i in range(0, len(wanted), 500)):
                rows = c.execute(
                    f"SELECT idx, device_id, integrated_at FROM leaves WHERE idx IN ({_marks(part)})",
                    part,
                ).fetchall()
                out += [(int(i), bytes(d), from_us(int(t))) for i, d, t in rows]
        out.sort()
        return out

    @_reads_log
    def hash_pack(self, start: int, stop: int) -> HashPack:
        """`Store.hash_pack`, read `HASH_PACK_PAGE_LEAVES` leaves a statement: before, one
        statement over [start, stop), which a server's first start on a large log (or
        one whose packs are damaged) sent over every leaf, and which PostgreSQL's
        watchdog cut as a database that answers nothing
        (`provenance.store.postgres._Watchdog`) at every start."""
        rows: list[Any] = []
        video = False
        with self._reading() as c:
            for first in range(start, stop, HASH_PACK_PAGE_LEAVES):
                end = min(first + HASH_PACK_PAGE_LEAVES, stop)
                rows += c.execute(
                    "SELECT leaf_idx, hash FROM soft_hashes WHERE leaf_idx>=? AND leaf_idx<?"
                    " AND algorithm='pdq' AND quality>=? AND length(hash)=? ORDER BY leaf_idx",
                    (first, end, PDQ_MIN_QUALITY, PDQ_HASH_SIZE),
                ).fetchall()
                if not video:  # a video frame's hash in these leaves
                    found = c.execute(
                        "SELECT 1 FROM soft_hashes WHERE leaf_idx>=? AND leaf_idx<?"
                        " AND timestamp_seconds > 0 LIMIT 1",
                        (first, end),
                    ).fetchone()
                    video = found is not None
        ids = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows))
        words = np.frombuffer(b"".join(bytes(r[1]) for r in rows), dtype=">u8")
        return HashPack(start, stop, ids, words.astype(np.uint64).reshape(-1, 4), video)

    @_reads_log
    def soft_hash_rows(self, start: int, stop: int) -> list[SoftRow]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT leaf_idx, algorithm, hash, quality, timestamp_seconds FROM soft_hashes"
                " WHERE leaf_idx>=? AND leaf_idx<?",
                (start, stop),
            ).fetchall()
        return sorted((int(i), str(a), bytes(h), int(q), float(t)) for i, a, h, q, t in rows)

    def stored_packs(self, start: int) -> Iterator[HashPack]:
        return _paged(self._pack_page, lambda p: p.first, start)

    @_reads_log
    def _pack_page(self, start: int) -> list[HashPack]:
        with self._reading() as c:
            rows = c.execute(
                "SELECT first, next, ids, words, video FROM index_packs WHERE first>=?"
                " ORDER BY first LIMIT ?",
                (start, PACK_PAGE),
            ).fetchall()
        return [
            HashPack(
                int(first),
                int(nxt),
                np.frombuffer(bytes(ids), dtype="<i8").astype(np.int64, copy=False),
                # the words' values, little-endian: read in place, no byte swap
                np.frombuffer(bytes(words), dtype="<u8")
                .astype(np.uint64, copy=False)
                .reshape(-1, 4),
                bool(video),
            )
            for first, nxt, ids, words, video in rows
        ]

    def put_pack(self, pack: HashPack) -> None:
        with self._errors(), self._write() as c:
            c.execute(
                "INSERT INTO index_packs(first, next, ids, words, video) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(first) DO UPDATE SET next=excluded.next, ids=excluded.ids,"
                " words=excluded.words, video=excluded.video",
                (
                    pack.first,
                    pack.next,
                    pack.ids.astype("<i8").tobytes(),
                    pack.words.astype("<u8").tobytes(),
                    int(pack.video),
                ),
            )
