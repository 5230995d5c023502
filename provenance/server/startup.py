"""Start-up checks of the stored log against its newest signed checkpoint.

Always (O(log n) reads): the checkpoint's signature, the head of the log against the
checkpoint's size, and the root computed from the stored Merkle nodes against the
checkpoint's root. Then, by default, only the leaves appended since the last *verified
mark* are re-hashed: the mark is a note signed with the log key, kept in the store,
saying "leaves [0, N) were re-hashed at start and fold to root R". Its frontier (the
stored perfect-subtree hashes of [0, N)) must still give R, and the leaves from N on are
re-hashed onto that frontier and must give the checkpoint's root; a mark beyond the
log's head means the database was rolled back. A running server moves the mark
forward now and then (`advance_mark`), so a restart re-hashes little. A full re-hash (``rehash="all"``,
``prov serve --full-check``) stays available, as does ``prov log audit`` from outside.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from dataclasses import dataclass
from typing import Literal

from provenance.core import merkle
from provenance.core.errors import LogError, LogIntegrityError, ProvenanceError
from provenance.log.checkpoint import Checkpoint, LogSigner, NoteVerifier, open_checkpoint
from provenance.log.leaf_audit import column_differences, difference_line
from provenance.store import IndexRow, Store, stored_as

log = logging.getLogger(__name__)

#: The store's meta key holding the signed verified mark.
MARK_KEY = "verified_mark"
_MARK_KIND = "verified-mark"


@dataclass(frozen=True)
class StartupCheck:
    """What the start-up check did: log ``size``, leaves re-hashed from ``rehashed_from``
    (None: none), and how long it took in seconds."""

    size: int
    rehashed_from: int | None
    seconds: float


def check_index_row(row: IndexRow) -> None:
    """The columns the store indexes a leaf by must say what its entry says
    (`leaf_audit.column_differences`, which `prov log audit --db` shares); raises
    LogIntegrityError naming the first column that differs."""
    idx = row[0]
    try:
        differ = column_differences(row)
    except ProvenanceError as e:
        raise LogIntegrityError(f"log entry {idx} does not decode: {e}") from e
    except TypeError as e:  # a column of the wrong type
        raise LogIntegrityError(f"the log database is damaged: {e}") from e
    if differ:
        raise LogIntegrityError(
            f"the index columns of log entry {idx} differ from the entry"
            f" ({difference_line(idx, *differ[0])}): the database was edited behind the"
            " log's back"
        )


def sign_mark(signer: LogSigner, size: int, root: bytes) -> str:
    """The verified mark for leaves [0, size) folding to ``root``, as a signed note
    (its second line is not a number, so it can never pass for a checkpoint)."""
    return signer.sign_text(
        f"{signer.name}\n{_MARK_KIND}\n{size}\n{base64.b64encode(root).decode()}\n"
    )


def open_mark(note: str, verifier: NoteVerifier) -> tuple[int, bytes]:
    """(size, root) of a verified mark; raises LogIntegrityError when it does not verify."""
    try:
        lines = verifier.open(note).split("\n")
        if len(lines) != 5 or lines[1] != _MARK_KIND or lines[4]:
            raise LogError("not a verified mark")
        size, root = int(lines[2]), base64.b64decode(lines[3], validate=True)
    except (ProvenanceError, ValueError, binascii.Error) as e:
        raise LogIntegrityError(f"the stored verified mark does not verify: {e}") from e
    return size, root


def check_log_at_start(
    store: Store,
    signer: LogSigner,
    verifier: NoteVerifier,
    rehash: Literal["all", "new", "none"] = "new",
) -> StartupCheck:
    """Check the stored log (see module docstring); then store a new verified mark.

    Raises LogIntegrityError naming what differs.
    """
    t0 = time.perf_counter()
    with store.append() as txn:  # the head and checkpoint as one consistent view
        size = txn.tree_size()
        latest = txn.latest_checkpoint()
        if latest is None:
            if size:
                raise LogIntegrityError(f"log has {size} leaves but no signed checkpoint")
            return StartupCheck(0, None, time.perf_counter() - t0)
        cp = _open_latest(latest, verifier)
        if cp.size != size:
            raise LogIntegrityError(
                f"the database holds {size} leaves but the latest signed checkpoint says"
                f" {cp.size}: rows were added or deleted behind the log's back"
            )
        try:
            stored_root = merkle.root(size, txn.get_nodes)
        except LogIntegrityError:  # a node row the store names
            raise
        except LogError as e:
            raise LogIntegrityError(f"stored Merkle nodes are damaged: {e}") from e
    if stored_root != cp.root_hash:
        raise LogIntegrityError("stored Merkle nodes do not match the signed checkpoint root")
    if rehash == "none":
        return StartupCheck(size, None, time.perf_counter() - t0)
    start = _rehash(store, signer, verifier, cp, from_mark=rehash == "new")
    took = time.perf_counter() - t0
    log.info("log checked at start: %d leaves, re-hashed from %d in %.3f s", size, start, took)
    return StartupCheck(size, start, took)


def advance_mark(store: Store, signer: LogSigner, verifier: NoteVerifier) -> int:
    """Re-hash the leaves appended since the verified mark, up to the newest checkpoint,
    and move the mark there (a running server does this now and then, so a restart has
    little left to re-hash). Returns the new mark's size; raises LogIntegrityError."""
    latest = store.latest_checkpoint()
    if latest is None:
        return 0
    cp = _open_latest(latest, verifier)
    _rehash(store, signer, verifier, cp, from_mark=True)
    return cp.size


def _open_latest(latest: tuple[int, str], verifier: NoteVerifier) -> Checkpoint:
    size, note = latest
    try:
        cp = open_checkpoint(note, verifier)
    except ProvenanceError as e:
        raise LogIntegrityError(f"latest stored checkpoint does not verify: {e}") from e
    if cp.size != size:
        raise LogIntegrityError(
            f"the checkpoint stored for size {size} says {cp.size}: the database was edited"
        )
    return cp


def _rehash(
    store: Store, signer: LogSigner, verifier: NoteVerifier, cp: Checkpoint, from_mark: bool
) -> int:
    """Re-hash leaves [mark or 0, cp.size), compare with ``cp``'s root, store the new
    mark; returns where re-hashing started."""
    size = cp.size
    rng = merkle.CompactRange()
    marked = store.get_meta(MARK_KEY)
    mark_size = 0
    if marked is not None and not from_mark:
        try:  # a full re-hash proves the log and replaces a damaged mark
            mark_size = open_mark(marked, verifier)[0]
        except LogIntegrityError:
            log.warning("the stored verified mark does not verify; a full re-hash replaces it")
    if from_mark and marked is not None:
        mark_size, mark_root = open_mark(marked, verifier)
        if mark_size > size:
            raise LogIntegrityError(
                f"the log was verified up to {mark_size} leaves but now holds {size}: the"
                " database was rolled back (restored from an older copy?)"
            )
        try:
            keys = merkle.subtree_decomposition(0, mark_size)
            rng = merkle.CompactRange.from_hashes(mark_size, store.get_nodes(keys))
        except LogIntegrityError:  # a node row the store names
            raise
        except LogError as e:
            raise LogIntegrityError(f"stored Merkle nodes are damaged: {e}") from e
        if rng.root() != mark_root:
            raise LogIntegrityError(
                f"stored Merkle nodes below the verified mark ({mark_size} leaves) were changed"
            )
    start = rng.size
    for row in store.iter_index_rows(start):
        index, leaf_hash, entry = row[0], row[1], row[7]
        if index >= size:
            break
        if not isinstance(entry, bytes):
            raise LogIntegrityError(
                f"log entry {index} is stored as {stored_as(entry)}, not bytes: the database"
                " was edited behind the log's back"
            )
        lh = merkle.leaf_hash(entry)
        if lh != leaf_hash:
            raise LogIntegrityError(f"log entry {index} was modified (its leaf hash differs)")
        if index != rng.size:
            raise LogIntegrityError(
                f"log entry {rng.size} is missing: it was deleted behind the log's back"
            )
        check_index_row(row)
        rng.append(lh)
    if rng.size != size:
        raise LogIntegrityError(
            f"log entry {rng.size} is missing: it was deleted behind the log's back"
        )
    if rng.root() != cp.root_hash:
        raise LogIntegrityError(
            "log entries do not hash to the signed checkpoint root: the database was edited"
        )
    if mark_size < size:
        store.set_meta(MARK_KEY, sign_mark(signer, size, cp.root_hash))
    return start
