"""Checking a log database's stored tree against the tree an audit re-hashes.

The server builds every inclusion and consistency proof, and every tile, from the stored
perfect-subtree hashes (the ``nodes`` rows, `provenance.core.merkle`), and puts in each
receipt the stored checkpoint row that first covered the leaf. Neither is covered by the
signed root: a node row edited behind the log's back makes the server serve proofs that
do not verify, and a checkpoint row moved to another size receipts whose checkpoint does
not hold their leaf, while every entry still hashes to the signed root.

`TreeAuditor` is fed the nodes of the audit's re-hash as `provenance.log.audit.audit_step`
appends its leaves (`observe`) and compares, `CHUNK` leaves at a time, every stored node the new
leaves complete with the recomputed one (one range read per level), and each checkpoint
row as the tree reaches its size: its note verifies with the log key, is of the row's
size, and is signed over the root the entries hash to. `finish` compares the last range
and lists node rows no tree of the log's size has. Memory: one chunk's nodes (about
2 * `CHUNK` hashes) and one page of checkpoint rows, whatever the log size.
"""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Iterator

from provenance.core import merkle
from provenance.core.errors import ProvenanceError
from provenance.core.problems import MAX_PROBLEMS, Problems
from provenance.log.checkpoint import MAX_NOTE_BYTES, NoteVerifier, open_checkpoint
from provenance.log.leaf_audit import LeafAuditor
from provenance.store import Store

#: Leaves whose completed nodes are compared at once.
CHUNK = 8192
_level = operator.itemgetter(0)
_index_hash = operator.itemgetter(1, 2)


def _node(level: object, index: object) -> str:
    """How a node is named: its level, index and, for integers, the leaves it covers."""
    if isinstance(level, int) and isinstance(index, int) and 0 <= level < 64 and index >= 0:
        return (
            f"Merkle node at level {level}, index {index}"
            f" (leaves [{index << level}, {(index + 1) << level}))"
        )
    return f"Merkle node at level {level}, index {index}"


def _shown(value: object) -> str:
    """A stored hash as a person reads it: its first 8 bytes in hex, its length when not
    32, or the type of a value that is no blob."""
    if isinstance(value, bytes):
        size = "" if len(value) == merkle.HASH_SIZE else f" ({len(value)} bytes)"
        return f"{value.hex()[:16]}...{size}"
    if isinstance(value, str):
        return f"the text {value[:40]!r}, not a hash"
    return f"the number {value!r}, not a hash"


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


class TreeAuditor(Problems):
    """Compares a store's Merkle nodes and checkpoint rows with the tree re-hashed from
    leaf ``start`` on (`observe`, as the audit's `Observer`, then `finish`), trusting
    ``verifier`` (the log key); hands each chunk's re-hashed leaf hashes to ``leaves``,
    which compares them with the leaves table's (`LeafAuditor.compare_leaf_hashes`).
    ``problems`` holds one sentence per mismatch (at most `MAX_PROBLEMS`, then ``more``
    counts them); ``nodes_checked`` and ``checkpoints_checked`` count the rows found to
    match."""

    def __init__(
        self,
        store: Store,
        verifier: NoteVerifier,
        start: int,
        leaves: LeafAuditor | None = None,
    ) -> None:
        self.store = store
        self.leaves = leaves
        self.verifier = verifier
        super().__init__()
        self.nodes_checked = 0
        self.checkpoints_checked = 0
        self._done = start
        self._made: list[merkle.NewNode] = []
        # a row of size `start` was checked by the audit that reached it (or is the empty
        # tree's, when start is 0)
        self._rows: Iterator[tuple[int, str]] = store.checkpoint_rows(
            start if start == 0 else start + 1
        )
        self._row = next(self._rows, None)

    def observe(self, frontier: merkle.CompactRange, made: list[merkle.NewNode]) -> int:
        """`provenance.log.audit.Observer`: take the nodes ``made`` since the last call
        (the list is kept), compare the checkpoint rows of the frontier's size and a
        chunk once it is complete; returns the next size to be called at (the next row's
        or chunk's end). Raises StorageError from the store."""
        self._made += made
        size = frontier.size
        if self._row is not None and self._row[0] <= size:
            self._checkpoints(frontier)
        if size % CHUNK == 0:
            self._compare(size)
        chunk_end = size - size % CHUNK + CHUNK
        return chunk_end if self._row is None else min(self._row[0], chunk_end)

    def finish(self, size: int, newest_row: int) -> None:
        """The re-hash ended at ``size`` leaves, the size of the newest checkpoint's note,
        which the database keeps in a row of size ``newest_row``: compare the last,
        partial chunk and the checkpoint rows up to ``newest_row`` (the newest row of
        another size than its note's included; a row past ``size`` holding a note of
        its own size is newer than the tree audited, not compared), and list the node
        rows outside the tree. Rows a server still appending writes meanwhile are told
        from added ones by the log's size read after them (a node is stored with its
        leaves, and the log only grows). Raises StorageError from the store."""
        self._compare(size)
        while self._row is not None and self._row[0] <= newest_row:
            row_size, note = self._row
            self._row = next(self._rows, None)
            self._checkpoint(row_size, note, None)
        outside = self.store.nodes_outside(size, MAX_PROBLEMS + 1)
        now = self.store.tree_size() if outside else size
        for level, index in outside:
            if isinstance(level, int) and isinstance(index, int) and 0 <= level < 63:
                if index >= 0 and (index + 1) << level <= now:
                    continue  # appended since the audit's checkpoint
            self._note(
                f"Merkle node at level {level}, index {index} is not in the log's tree of"
                f" {size} leaves (a row added behind the log's back)"
            )

    def _checkpoints(self, frontier: merkle.CompactRange) -> None:
        while self._row is not None and self._row[0] <= frontier.size:
            size, note = self._row
            self._row = next(self._rows, None)
            if size == frontier.size:
                self._checkpoint(size, note, frontier.root())
            else:  # only a size no tree reaches: none below the first leaf
                self._checkpoint(size, note, merkle.EMPTY_ROOT if size == 0 else None)

    def _as_written(self, size: int, note: str, root: bytes) -> bool:
        """Whether ``note`` is, as the log writes it, the checkpoint of ``size`` leaves and
        root ``root``: its body's origin (the key's name), size and root, an optional time
        line, and one signature line, the log key's (its name and key id). A string
        comparison and a base64 decode, about 1 us: the signature is not verified (an
        Ed25519 verification, about 110 us here, would be 6 times the re-hash of an entry
        on a log that signs a checkpoint per entry)."""
        body = f"{self.verifier.name}\n{size}\n{_b64(root)}\n"
        if len(note) > MAX_NOTE_BYTES:  # `open_checkpoint` says so, unread
            return False
        split = note.rfind("\n\n")
        if not note.startswith(body) or split < len(body) - 1:
            return False
        extension = note[len(body) : split + 1]
        if extension and not (extension.startswith("time ") and extension.count("\n") == 1):
            return False
        # the log's one line and nothing else (any other line, which readers may refuse:
        # `split_note`'s bounds, is left to `open_checkpoint`)
        line = note[split + 2 :]
        prefix = f"\u2014 {self.verifier.name} "
        if not line.startswith(prefix) or line.find("\n") != len(line) - 1:
            return False
        try:
            raw = binascii.a2b_base64(line[len(prefix) : -1], strict_mode=True)
        except binascii.Error:
            return False
        return len(raw) == 68 and raw[:4] == self.verifier.key_id

    def _checkpoint(self, size: int, note: str, root: bytes | None) -> None:
        """Compare the checkpoint row of ``size`` holding ``note`` with the re-hashed tree
        whose root at ``size`` is ``root`` (None: no tree has that size): `_as_written`,
        else the note verified and parsed, to say what differs."""
        if root is not None and self._as_written(size, note, root):
            self.checkpoints_checked += 1
            return
        try:
            cp = open_checkpoint(note, self.verifier)
        except ProvenanceError as e:
            self._note(
                f"checkpoint row of size {size}: its note does not verify with the log key: {e}"
            )
            return
        if cp.size != size:
            self._note(
                f"checkpoint row of size {size} holds the signed checkpoint of size {cp.size}"
                " (the row was moved, or its note replaced): receipts rebuilt from it would"
                " carry a checkpoint of another size than the server took it for"
            )
            return
        if root is None:  # newer than the note audited (whose row has a larger size)
            return
        if cp.root_hash != root:
            self._note(
                f"FORK: the checkpoint of size {size} is signed over root {_b64(cp.root_hash)},"
                f" but the log's first {size} entries hash to root {_b64(root)}"
            )
            return
        self.checkpoints_checked += 1

    def _compare(self, stop: int) -> None:
        """Compare the stored nodes completed by leaves [done, stop) with the ones made:
        one range read per level, compared as a whole (a list comparison in C) unless
        it differs."""
        start, made = self._done, self._made
        self._done, self._made = stop, []
        made.sort(key=_level)  # stable: each level's nodes stay in index order
        pos, level = 0, 0
        while stop >> level > start >> level:
            first, end = start >> level, stop >> level
            want = list(map(_index_hash, made[pos : pos + end - first]))
            pos += end - first
            if level == 0 and self.leaves is not None:
                self.leaves.compare_leaf_hashes(first, want)
            have = self.store.node_hashes(level, first, end)
            if have == want:
                self.nodes_checked += len(have)
            else:
                self._differences(level, want, have)
            level += 1

    def _differences(
        self, level: int, want: list[tuple[int, bytes]], have: list[tuple[object, object]]
    ) -> None:
        """Name each node of ``level`` where the stored rows ``have`` differ from the
        made ones ``want`` (index, hash)."""
        stored: dict[object, object] = dict(have)
        first = want[0][0]
        for i, w in want:
            if i not in stored:
                self._note(
                    f"{_node(level, i)} is missing from the database: the server cannot serve a proof through it"
                )
            elif stored[i] != w:
                self._note(
                    f"{_node(level, i)}: the database holds {_shown(stored[i])}; the"
                    f" logged entries hash to {w.hex()[:16]}...: a proof served through it"
                    " would not verify"
                )
            else:
                self.nodes_checked += 1
        for k, _ in have:
            if not (isinstance(k, int) and first <= k < first + len(want)):
                self._note(
                    f"Merkle node at level {level}, index {k} is not in the log's tree (a row"
                    " added behind the log's back)"
                )
