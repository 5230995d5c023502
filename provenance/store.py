"""SQLite persistence: devices, enrollment tokens, log leaves, Merkle nodes, checkpoints.

One database file in WAL mode with ``synchronous=FULL``: a transaction is durable
(its WAL frames fsynced) when ``COMMIT`` returns, and a submission is acknowledged
only after that. The schema is versioned with ``PRAGMA user_version``; migrations
run in order at open.

The Merkle tree is stored as the hashes of its *perfect* subtrees (table ``nodes``,
key (level, index), covering leaves [index * 2**level, (index + 1) * 2**level)), so
roots and proofs need O(log n) reads and restart never rebuilds the tree.

Only one thread writes (the server's group-commit writer); readers use their own
connections per thread.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from provenance.binding import PerceptualHash
from provenance.claims import Device, SignedClaim
from provenance.errors import (
    EnrollmentError,
    LogError,
    LogIntegrityError,
    ProvenanceError,
    StorageError,
    UnknownDeviceError,
)

SCHEMA_VERSION = 2

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
}


F = TypeVar("F", bound=Callable[..., Any])


def _damage_is_integrity_error(fn: F) -> F:
    """Reading log rows: a value of the wrong type (a blob turned into text, say) means
    the database was edited behind the log's back; raise LogIntegrityError, not a crash."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (sqlite3.DatabaseError, TypeError, ValueError) as e:
            raise LogIntegrityError(f"the log database is damaged: {e}") from e

    return wrapper  # type: ignore[return-value]


def _damage_is_integrity_error_gen(fn: F) -> F:
    """The generator form of `_damage_is_integrity_error`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            yield from fn(*args, **kwargs)
        except (sqlite3.DatabaseError, TypeError, ValueError) as e:
            raise LogIntegrityError(f"the log database is damaged: {e}") from e

    return wrapper  # type: ignore[return-value]


def to_us(when: datetime) -> int:
    """UTC datetime -> integer microseconds since the Unix epoch."""
    return int(round(when.timestamp() * 1_000_000))


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch -> timezone-aware UTC datetime."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


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
    receipt: bytes


@dataclass(frozen=True)
class NewLeaf:
    """A leaf to append: everything but its receipt, which the caller fills in."""

    leaf_hash: bytes
    signed_claim: SignedClaim
    device_id: bytes
    sequence: int
    file_sha256: bytes
    integrated_at: datetime
    chain_linked: bool
    entry: bytes
    soft_bindings: tuple[PerceptualHash, ...]


def _storage_error(e: sqlite3.DatabaseError) -> ProvenanceError:
    """Ours for a failed write: StorageError when the disk is full or failing (nothing
    was recorded; retry later), else LogError."""
    code = getattr(e, "sqlite_errorcode", 0) & 0xFF
    if code in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return StorageError(
            f"the server's storage refused the write ({e}): the disk is full or failing;"
            " nothing was recorded, retry later"
        )
    return LogError(f"the database refused the write: {e}")


class Store:
    """The database file. Thread-safe: one writer connection under a lock, one
    reader connection per thread. Raises `LogError` when the file is not ours or
    its schema is newer than this code."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._writer = self._connect()
        self._migrate()

    # ---------------------------------------------------------------- plumbing

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as e:
            raise LogError(f"cannot open database {self.path}: {e}") from e
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _migrate(self) -> None:
        with self._write_lock:
            try:
                (version,) = self._writer.execute("PRAGMA user_version").fetchone()
            except sqlite3.DatabaseError as e:
                raise LogError(f"{self.path} is not a provenance database: {e}") from e
            if version > SCHEMA_VERSION:
                raise LogError(
                    f"{self.path} has schema version {version}; this program knows up to"
                    f" {SCHEMA_VERSION}: upgrade the program"
                )
            for v in range(version + 1, SCHEMA_VERSION + 1):
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    for stmt in _MIGRATIONS[v].split(";"):
                        if stmt.strip():
                            self._writer.execute(stmt)
                    self._writer.execute(f"PRAGMA user_version = {v}")
                    self._writer.execute("COMMIT")
                except BaseException:
                    self._writer.execute("ROLLBACK")
                    raise

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT) on the writer connection.

        COMMIT returning means durable (WAL, synchronous=FULL). Rolls back on any error.
        """
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:  # SQLite rolls back by itself on a full disk
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.DatabaseError):
                    raise _storage_error(e) from e
                raise

    def close(self) -> None:
        with self._write_lock:
            self._writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---------------------------------------------------------------- meta

    def get_meta(self, key: str) -> str | None:
        row = self._reader().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---------------------------------------------------------------- devices

    @staticmethod
    def _device(row: Sequence[object]) -> Device:
        (device_id, public_key, label, enrolled, last_seq, last_hash, revoked, reason) = row
        return Device(
            device_id=bytes(device_id),  # type: ignore[arg-type]
            public_key=bytes(public_key),  # type: ignore[arg-type]
            label=str(label),
            enrolled_at=from_us(int(enrolled)),  # type: ignore[call-overload]
            last_sequence=int(last_seq),  # type: ignore[call-overload]
            last_claim_hash=bytes(last_hash),  # type: ignore[arg-type]
            revoked_at=None if revoked is None else from_us(int(revoked)),  # type: ignore[call-overload]
            revocation_reason=str(reason),
        )

    _DEVICE_COLS = (
        "device_id, public_key, label, enrolled_at, last_sequence, last_claim_hash,"
        " revoked_at, revocation_reason"
    )

    def find_device(
        self, device_id: bytes, conn: sqlite3.Connection | None = None
    ) -> Device | None:
        row = (
            (conn or self._reader())
            .execute(f"SELECT {self._DEVICE_COLS} FROM devices WHERE device_id=?", (device_id,))
            .fetchone()
        )
        return None if row is None else self._device(row)

    def get_device(self, device_id: bytes) -> Device:
        """Raises UnknownDeviceError when no device has this key id."""
        d = self.find_device(device_id)
        if d is None:
            raise UnknownDeviceError(f"device {device_id.hex()} is not enrolled")
        return d

    def add_token(self, token_hash: bytes, label: str, now: datetime, expires: datetime) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO enrollment_tokens(token_hash, label, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)",
                (token_hash, label, to_us(now), to_us(expires)),
            )

    def enroll(
        self, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str = ""
    ) -> Device:
        """Record the device, spending its one-time token (None: enrolled by a certificate
        the caller already checked), atomically.

        Raises EnrollmentError when the token is unknown, spent or expired, or the key
        is already enrolled.
        """
        with self.transaction() as c:
            label = device.label
            if token_hash is not None:
                row = c.execute(
                    "SELECT label, expires_at, used_at FROM enrollment_tokens WHERE token_hash=?",
                    (token_hash,),
                ).fetchone()
                if row is None:
                    raise EnrollmentError("unknown enrollment token")
                token_label, expires, used = row
                if used is not None:
                    raise EnrollmentError("this enrollment token was already used")
                if to_us(now) > int(expires):
                    raise EnrollmentError(
                        f"this enrollment token expired at {from_us(int(expires))}"
                    )
                label = token_label or label
            if self.find_device(device.device_id, c) is not None:
                raise EnrollmentError(f"device {device.device_id.hex()} is already enrolled")
            c.execute(
                f"INSERT INTO devices({self._DEVICE_COLS}, certificate_pem)"
                " VALUES (?, ?, ?, ?, 0, x'', NULL, '', ?)",
                (device.device_id, device.public_key, label, to_us(now), certificate_pem),
            )
            if token_hash is not None:
                c.execute(
                    "UPDATE enrollment_tokens SET used_at=?, device_id=? WHERE token_hash=?",
                    (to_us(now), device.device_id, token_hash),
                )
            found = self.find_device(device.device_id, c)
            assert found is not None
            return found

    def device_certificate(self, device_id: bytes) -> str:
        """The device's X.509 chain (PEM), or "" when it has none."""
        row = (
            self._reader()
            .execute("SELECT certificate_pem FROM devices WHERE device_id=?", (device_id,))
            .fetchone()
        )
        return "" if row is None else str(row[0])

    def revoke(self, device_id: bytes, effective_at: datetime, reason: str) -> Device:
        """Record a revocation (time and reason). Revoking twice keeps the earlier time."""
        with self.transaction() as c:
            d = self.find_device(device_id, c)
            if d is None:
                raise UnknownDeviceError(f"device {device_id.hex()} is not enrolled")
            when = effective_at if d.revoked_at is None else min(d.revoked_at, effective_at)
            c.execute(
                "UPDATE devices SET revoked_at=?, revocation_reason=? WHERE device_id=?",
                (to_us(when), reason, device_id),
            )
            found = self.find_device(device_id, c)
            assert found is not None
            return found

    # ---------------------------------------------------------------- nodes

    @_damage_is_integrity_error
    def get_nodes(
        self, keys: Sequence[tuple[int, int]], conn: sqlite3.Connection | None = None
    ) -> list[bytes]:
        """Hashes of perfect subtrees (level, index), in the order asked.

        Raises LogError when a node is missing (a corrupt or tampered database).
        """
        if not keys:
            return []
        c = conn or self._reader()
        found: dict[tuple[int, int], bytes] = {}
        uniq = list(dict.fromkeys(keys))
        for i in range(0, len(uniq), 400):
            part = uniq[i : i + 400]
            where = " OR ".join("(level=? AND idx=?)" for _ in part)
            args = [v for k in part for v in k]
            for level, idx, h in c.execute(
                f"SELECT level, idx, hash FROM nodes WHERE {where}", args
            ):
                found[(int(level), int(idx))] = bytes(h)
        missing = [k for k in uniq if k not in found]
        if missing:
            raise LogError(f"log database is missing Merkle nodes {missing[:4]}")
        return [found[k] for k in keys]

    def put_nodes(self, c: sqlite3.Connection, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        c.executemany("INSERT INTO nodes(level, idx, hash) VALUES (?, ?, ?)", nodes)

    # ---------------------------------------------------------------- leaves

    def tree_size(self, conn: sqlite3.Connection | None = None) -> int:
        (n,) = (conn or self._reader()).execute("SELECT COUNT(*) FROM leaves").fetchone()
        return int(n)

    def insert_leaves(
        self,
        c: sqlite3.Connection,
        start: int,
        leaves: Sequence[NewLeaf],
        receipts: Sequence[bytes],
    ) -> None:
        """Insert leaves start, start+1, ... with their receipts, soft hashes and the
        devices' new sequence state, inside the caller's transaction."""
        c.executemany(
            "INSERT INTO leaves(idx, leaf_hash, claim_hash, device_id, sequence, file_sha256,"
            " integrated_at, chain_linked, entry, receipt) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    start + i,
                    lf.leaf_hash,
                    lf.signed_claim.claim_hash,
                    lf.device_id,
                    lf.sequence,
                    lf.file_sha256,
                    to_us(lf.integrated_at),
                    int(lf.chain_linked),
                    lf.entry,
                    receipts[i],
                )
                for i, lf in enumerate(leaves)
            ],
        )
        c.executemany(
            "INSERT INTO soft_hashes(leaf_idx, algorithm, hash, quality, timestamp_seconds)"
            " VALUES (?,?,?,?,?)",
            [
                (start + i, h.algorithm, h.hash, h.quality, h.timestamp_seconds)
                for i, lf in enumerate(leaves)
                for h in lf.soft_bindings
            ],
        )
        c.executemany(
            "UPDATE devices SET last_sequence=?, last_claim_hash=? WHERE device_id=?",
            [(lf.sequence, lf.signed_claim.claim_hash, lf.device_id) for lf in leaves],
        )

    _LEAF_COLS = (
        "idx, leaf_hash, claim_hash, device_id, sequence, file_sha256, integrated_at,"
        " chain_linked, entry, receipt"
    )

    @staticmethod
    def _leaf(row: Sequence[object]) -> LeafRecord:
        return LeafRecord(
            index=int(row[0]),  # type: ignore[call-overload]
            leaf_hash=bytes(row[1]),  # type: ignore[arg-type]
            claim_hash=bytes(row[2]),  # type: ignore[arg-type]
            device_id=bytes(row[3]),  # type: ignore[arg-type]
            sequence=int(row[4]),  # type: ignore[call-overload]
            file_sha256=bytes(row[5]),  # type: ignore[arg-type]
            integrated_at=from_us(int(row[6])),  # type: ignore[call-overload]
            chain_linked=bool(row[7]),
            entry=bytes(row[8]),  # type: ignore[arg-type]
            receipt=bytes(row[9]),  # type: ignore[arg-type]
        )

    @_damage_is_integrity_error
    def leaf_by_claim_hash(
        self, claim_hash: bytes, conn: sqlite3.Connection | None = None
    ) -> LeafRecord | None:
        row = (
            (conn or self._reader())
            .execute(f"SELECT {self._LEAF_COLS} FROM leaves WHERE claim_hash=?", (claim_hash,))
            .fetchone()
        )
        return None if row is None else self._leaf(row)

    @_damage_is_integrity_error
    def leaf_by_index(self, index: int) -> LeafRecord | None:
        row = (
            self._reader()
            .execute(f"SELECT {self._LEAF_COLS} FROM leaves WHERE idx=?", (index,))
            .fetchone()
        )
        return None if row is None else self._leaf(row)

    @_damage_is_integrity_error
    def leaf_by_leaf_hash(self, leaf_hash: bytes) -> LeafRecord | None:
        row = (
            self._reader()
            .execute(
                f"SELECT {self._LEAF_COLS} FROM leaves WHERE leaf_hash=? ORDER BY idx LIMIT 1",
                (leaf_hash,),
            )
            .fetchone()
        )
        return None if row is None else self._leaf(row)

    @_damage_is_integrity_error
    def leaves_by_file_sha256(self, sha256: bytes) -> list[LeafRecord]:
        rows = (
            self._reader()
            .execute(
                f"SELECT {self._LEAF_COLS} FROM leaves WHERE file_sha256=? ORDER BY idx", (sha256,)
            )
            .fetchall()
        )
        return [self._leaf(r) for r in rows]

    @_damage_is_integrity_error
    def entries(self, start: int, limit: int) -> list[tuple[int, bytes]]:
        """(index, leaf data) of up to ``limit`` leaves from index ``start``, in order."""
        rows = (
            self._reader()
            .execute(
                "SELECT idx, entry FROM leaves WHERE idx>=? ORDER BY idx LIMIT ?", (start, limit)
            )
            .fetchall()
        )
        return [(int(r[0]), bytes(r[1])) for r in rows]

    @_damage_is_integrity_error_gen
    def iter_leaves(self, batch: int = 10_000) -> Iterator[LeafRecord]:
        """Yield every leaf in index order, read in pages."""
        start = 0
        conn = self._reader()
        while True:
            rows = conn.execute(
                f"SELECT {self._LEAF_COLS} FROM leaves WHERE idx>=? ORDER BY idx LIMIT ?",
                (start, batch),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield self._leaf(row)
            start = int(rows[-1][0]) + 1

    def has_video_claims(self) -> bool:
        """Whether any logged claim has time-stamped soft bindings (sampled video frames)."""
        row = (
            self._reader()
            .execute("SELECT 1 FROM soft_hashes WHERE timestamp_seconds > 0 LIMIT 1")
            .fetchone()
        )
        return row is not None

    @_damage_is_integrity_error_gen
    def iter_soft_hashes(self) -> Iterator[tuple[int, PerceptualHash]]:
        """Yield (leaf index, perceptual hash) for every stored soft binding."""
        for leaf_idx, alg, h, q, ts in self._reader().execute(
            "SELECT leaf_idx, algorithm, hash, quality, timestamp_seconds FROM soft_hashes"
            " ORDER BY leaf_idx"
        ):
            yield int(leaf_idx), PerceptualHash(str(alg), bytes(h), int(q), float(ts))

    # ---------------------------------------------------------------- checkpoints

    def put_checkpoint(self, c: sqlite3.Connection, size: int, note: str, now: datetime) -> None:
        c.execute(
            "INSERT OR REPLACE INTO checkpoints(size, note, created_at) VALUES (?, ?, ?)",
            (size, note, to_us(now)),
        )

    def latest_checkpoint(self, conn: sqlite3.Connection | None = None) -> tuple[int, str] | None:
        """(tree size, signed note) of the newest checkpoint, or None for an empty log."""
        row = (
            (conn or self._reader())
            .execute("SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetchone()
        )
        return None if row is None else (int(row[0]), str(row[1]))


def open_store(path: Path) -> Store:
    """Open (creating if needed) the database at ``path``; raises ProvenanceError."""
    try:
        return Store(path)
    except sqlite3.Error as e:
        raise ProvenanceError(f"cannot use database {path}: {e}") from e
