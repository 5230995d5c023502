"""Checking the near-duplicate index's derived data against the signed log.

The soft-hash rows and the index packs (`provenance.index.packs`) are not covered by the
signed Merkle tree: an operator, or a disk fault, that edits them could make a
re-encoded copy of a logged photo read UNSIGNED instead of DERIVED without any entry
changing. The entries are covered by the tree, so an audit that has re-hashed them
against a signed checkpoint (`provenance.log.audit.audit_step`) can rebuild what the rows and
packs must hold and compare: `IndexAuditor` is fed each entry as the audit decodes it and
compares, range by range, every soft-hash row (``ROW_SPAN`` leaves per read) and every
stored pack (`index_packs.PACK_LEAVES` leaves) with the soft bindings of the logged claims. Memory
is bounded by one pack's hashes (about 2.6 MB) and one row span, whatever the log size.
"""

from __future__ import annotations

from itertools import groupby

import numpy as np

from provenance.core.binding import PDQ_ALGORITHM, PDQ_HASH_SIZE, PDQ_MIN_QUALITY
from provenance.core.errors import ClaimError, LogIntegrityError
from provenance.core.problems import Problems
from provenance.index import packs as index_packs
from provenance.store import HashPack, SoftRow, Store
from provenance.wire.convert import AuditedEntry

#: Leaves whose soft-hash rows are read and compared at once.
ROW_SPAN = 4096
#: No leaf index reaches this (SQLite and PostgreSQL integers are 64-bit).
_END = 1 << 62


def _usable(r: SoftRow) -> bool:
    return r[1] == PDQ_ALGORITHM and r[3] >= PDQ_MIN_QUALITY and len(r[2]) == PDQ_HASH_SIZE


def _show(rows: list[SoftRow]) -> str:
    return ", ".join(f"{a} {h.hex()[:16]}... q{q} t{t:g}" for _, a, h, q, t in rows) or "no rows"


class IndexAuditor(Problems):
    """Compares a store's soft-hash rows and index packs with the logged entries fed to it
    in index order from leaf 0 (`feed`), then `finish`. ``problems`` holds one
    sentence per mismatch (at most MAX_PROBLEMS, then a count)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        super().__init__()
        self.packs_checked = 0
        self.rows_checked = 0
        self._next = 0
        self._rows: list[SoftRow] = []
        self._ids: list[int] = []
        self._hashes: list[bytes] = []
        self._video = False
        self._packs = store.stored_packs(0)
        self._pack: HashPack | None = next(self._packs, None)

    def feed(self, index: int, fields: AuditedEntry | ClaimError) -> None:
        """Take leaf ``index`` (the next one) as its entry reads (`wire.audited_entry`,
        decoded once for all the audit's checks; or the ClaimError of leaf data that is no
        log entry); compare a range once it is complete. An entry that does not decode is
        a problem, its rows unknown: the audit's re-hash of the leaves judges it (before,
        its ClaimError stopped the audit with exit 1 ahead of that re-hash). Raises
        StorageError or LogIntegrityError from the store."""
        if index != self._next:
            raise LogIntegrityError(f"the log served leaf {index} where leaf {self._next} was due")
        rows = None if isinstance(fields, ClaimError) else fields.soft_rows
        if rows is None:
            error = fields if isinstance(fields, ClaimError) else fields.error
            self._note(
                f"log entry {index} is no log entry, so its soft-hash rows are unknown: {error}"
            )
            rows = []
        self._rows += rows
        for r in rows:
            self._video |= r[4] > 0
            if _usable(r):
                self._ids.append(index)
                self._hashes.append(r[2])
        self._next = index + 1
        if self._next % ROW_SPAN == 0:
            self._check_rows(self._next - ROW_SPAN, self._next)
        if self._next % index_packs.PACK_LEAVES == 0:
            self._check_packs(self._next)

    def finish(self) -> None:
        """Compare the last, partial range, and report rows or packs past the last leaf."""
        size = self._next
        self._check_rows(size - size % ROW_SPAN, _END)
        self._check_packs(_END)

    def _check_rows(self, start: int, stop: int) -> None:
        stored = self.store.soft_hash_rows(start, stop)
        logged = sorted(self._rows)
        self._rows = []
        self.rows_checked += len(stored)
        if stored == logged:
            return
        want = {k: list(g) for k, g in groupby(logged, key=lambda r: r[0])}
        have = {k: list(g) for k, g in groupby(stored, key=lambda r: r[0])}
        for leaf in sorted(want.keys() | have.keys()):
            w, h = want.get(leaf, []), have.get(leaf, [])
            if w == h:
                continue
            where = f"leaf {leaf}" if leaf < self._next else f"leaf {leaf} (past the log's end)"
            self._note(
                f"soft-hash rows of {where}: the database holds ({_show(h)}); the logged"
                f" entry has ({_show(w)})"
            )

    def _check_packs(self, stop: int) -> None:
        """Compare the stored packs that start before ``stop`` (a pack boundary or _END)."""
        first = stop - index_packs.PACK_LEAVES
        while self._pack is not None and self._pack.first < stop:
            p = self._pack
            self._pack = next(self._packs, None)
            if p.first != first or p.next != stop:
                self._note(
                    f"index pack at leaf {p.first} covers leaves [{p.first}, {p.next}); the"
                    f" log's {self._next} leaves have a pack only for [{first}, {stop})"
                    if stop != _END
                    else f"index pack at leaf {p.first} covers leaves [{p.first}, {p.next}),"
                    f" past the log's {self._next} leaves"
                )
                continue
            self.packs_checked += 1
            self._compare_pack(p)
        self._ids, self._hashes, self._video = [], [], False

    def _compare_pack(self, p: HashPack) -> None:
        where = f"index pack [{p.first}, {p.next})"
        ids = np.array(self._ids, dtype=np.int64)
        words = np.frombuffer(b"".join(self._hashes), dtype=">u8").astype(np.uint64)
        words = words.reshape(-1, 4)
        if self._video and not p.video:  # True beyond its range is harmless (see write_packs)
            self._note(f"{where}: its video flag is off; its logged entries hold video frames")
        if p.ids.shape != ids.shape or p.words.shape != words.shape:
            self._note(
                f"{where}: holds {len(p.ids)} leaf ids and {len(p.words)} hashes; the logged"
                f" entries have {len(ids)} usable PDQ hashes"
            )
            return
        bad = np.flatnonzero((p.ids != ids) | np.any(p.words != words, axis=1))
        for i in bad[:3]:
            got = p.words[i].astype(">u8").tobytes().hex()
            self._note(
                f"{where}, hash {i}: the pack holds leaf {int(p.ids[i])} hash {got[:16]}...;"
                f" the log has leaf {int(ids[i])} hash {self._hashes[i].hex()[:16]}..."
            )
        if len(bad) > 3:
            self._note(f"{where}: {len(bad) - 3} more hashes differ")
