"""Checking the columns of a log database's ``leaves`` table against the entries.

Each leaf row copies fields of its entry into columns the server looks it up by: the leaf
hash, the claim hash, the device id and sequence, the file's SHA-256 and the integration
time (`provenance.store.IndexRow`). The signed root covers the entry, not these copies:
an edited ``file_sha256`` makes a logged file read as never signed, an edited
``claim_hash`` or ``leaf_hash`` points a lookup at no entry, while every entry still
hashes to the signed root. `column_differences` names the columns that differ from the
entry (the server's start-up check and the audit share it). `LeafAuditor` decodes every
entry an audit re-hashes once (`tap`, `wire.audited_entry`: the index and key-history
checks are handed the same decoded entry), compares its row's columns with it, and
compares the stored leaf hashes with the ones the re-hash makes (`compare_leaf_hashes`,
called by `provenance.log.store_audit.TreeAuditor` a chunk at a time, so no entry is
hashed twice). It also judges each row's ``chain_linked`` again as the writer did on
append (`chain_link_of`: whether the claim follows its device's previous claim), tracking
each device's last claim in log order (from a later leaf than 0, the claim before it is
looked up by the hash the first one read names: `claims_before`). Memory: one chunk's
stored leaf hashes, and one (sequence, claim hash) per device.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime

from provenance.core.errors import ClaimError, LogIntegrityError
from provenance.core.problems import Problems
from provenance.store import IndexRow, LeafRecord, stored_as
from provenance.wire import convert as wire

#: The columns of `IndexRow` after the leaf hash, in order, as `wire.log_entry_columns`
#: gives them from the entry.
COLUMNS = ("claim_hash", "device_id", "sequence", "file_sha256", "integrated_at")
_hash = operator.itemgetter(1)
#: A device's chain state before its first claim (`provenance.core.claims.Device`).
_ENROLLED = (0, b"")


def column_differences(row: IndexRow) -> list[tuple[str, object, object]]:
    """(column, the value the database holds, the value the entry says) of every column
    of ``row`` (after the leaf hash, which the re-hash checks) that differs from its
    entry; empty when all agree. Compares the entry's raw fields
    (`wire.log_entry_columns`) with the raw columns, without building claims or
    datetimes. Raises ClaimError when the entry does not decode, TypeError when it is not
    bytes."""
    return differences(row, wire.log_entry_columns(row[7]))


def differences(row: IndexRow, fields: wire.EntryColumns) -> list[tuple[str, object, object]]:
    """`column_differences` of ``row`` whose entry's columns are ``fields``, decoded
    already (`wire.audited_entry`, which the audit's other checks share)."""
    stored = row[2:7]
    if fields == stored:
        return []
    return [(c, s, f) for c, s, f in zip(COLUMNS, stored, fields, strict=True) if s != f]


#: A device's (last sequence, last claim hash) before the leaves an audit reads, for the
#: claim of ``sequence`` naming ``prev_claim_hash`` of the device it is called with (device
#: id, sequence, previous claim hash).
Before = Callable[[bytes, int, bytes], tuple[int, bytes]]


def _enrolled(device: bytes, sequence: int, prev_claim_hash: bytes) -> tuple[int, bytes]:
    """`Before` of an audit from leaf 0: no claim of any device before it."""
    return _ENROLLED


def chain_link_of(
    chain: dict[bytes, tuple[int, bytes]], fields: wire.AuditedEntry, before: Before = _enrolled
) -> int | None:
    """The ``chain_linked`` column the writer stores for the leaf whose entry reads
    ``fields``, the leaves before it having left each device's (last sequence, last claim
    hash) in ``chain``, which it updates (a device not in it: as ``before`` says; from
    leaf 0, sequence 0 and an empty hash, as enrolled): 1 when the claim takes the next
    sequence and names its device's previous claim (`registry.chain_link`), 0 when not,
    and 0 for a key event; None when the entry does not decode (its columns are named
    already). Memory: one item per device."""
    columns = fields.columns
    if columns is None:
        return None
    if fields.key_event:
        return 0
    claim_hash, device, sequence = columns[0], columns[1], columns[2]
    prev = fields.prev_claim_hash
    last = chain.get(device)
    if last is None:
        last = before(device, sequence, prev)
    chain[device] = (sequence, claim_hash)
    return int(sequence == last[0] + 1 and prev == last[1])


def claims_before(start: int, find_claim: Callable[[bytes], LeafRecord | None]) -> Before:
    """`Before` of an audit from leaf ``start``, which has not read the claims before it:
    the claim the new one names (``find_claim``, the store's lookup by claim hash), when it
    is a leaf before ``start`` of the same device with the sequence before the new one's,
    is the device's last claim (sequences only grow along the log, so no claim of the
    device can come between); else the claim links to none, as if the device had no
    claim before (a first claim, sequence 1 naming none, still links). One lookup per
    device the audit reads, trusting the rows before ``start`` (an earlier audit's)."""

    def before(device: bytes, sequence: int, prev_claim_hash: bytes) -> tuple[int, bytes]:
        if prev_claim_hash and sequence > 1:
            rec = find_claim(prev_claim_hash)
            if (
                rec is not None
                and rec.index < start
                and rec.device_id == device
                and rec.sequence == sequence - 1
            ):
                return rec.sequence, prev_claim_hash
        return _ENROLLED

    return before


def shown_value(column: str, value: object) -> str:
    """A column's value as a person reads it: a hash's first 8 bytes in hex, a time in
    UTC (with its microseconds), a number, or the type of a value of the wrong type."""
    if isinstance(value, bytes):
        return f"{value.hex()[:16]}..." if value else "nothing (no bytes)"
    if isinstance(value, int) and column == "integrated_at":
        try:
            when = datetime.fromtimestamp(value / 1_000_000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return f"{value} us"
        return f"{when.isoformat(timespec='microseconds')} ({value} us)"
    if isinstance(value, int) and column == "chain_linked" and value in (0, 1):
        return f"{value} ({'linked to' if value else 'not linked to'} its device's previous claim)"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    return f"the number {value!r}"


def difference_line(index: int, column: str, held: object, said: object) -> str:
    """The sentence naming leaf ``index``'s ``column``: what the database holds and what
    the entry says."""
    return (
        f"log entry {index}: its {column} column holds {shown_value(column, held)}; the"
        f" entry says {shown_value(column, said)}"
    )


class LeafAuditor(Problems):
    """Compares the columns of every leaf row fed to it (`tap`, in index order from
    ``start``) with its entry, and the stored leaf hashes with the re-hashed ones
    (`compare_leaf_hashes`). ``problems`` holds one sentence per mismatch (at most
    `MAX_PROBLEMS`, then ``more`` counts them); ``leaves_checked`` counts the rows whose
    columns all match. ``find_claim`` (`Store.leaf_by_claim_hash`) lets an audit from a
    later leaf than 0 judge ``chain_linked`` (`claims_before`); without it only an audit
    from leaf 0 does."""

    def __init__(
        self, start: int, find_claim: Callable[[bytes], LeafRecord | None] | None = None
    ) -> None:
        super().__init__()
        self.leaves_checked = 0
        self._next = start
        self._leaf_hashes: list[object] = []
        self._bad: set[int] = set()  # leaves of this chunk with a problem
        self.key_events_checked = 0
        # each device's (last sequence, last claim hash); from a later leaf than 0, only
        # with a lookup of the claims before it
        self._chain: dict[bytes, tuple[int, bytes]] | None = None
        self._before: Before = _enrolled
        if start == 0 or find_claim is not None:
            self._chain = {}
        if start > 0 and find_claim is not None:
            self._before = claims_before(start, find_claim)

    def _problem(self, index: int, text: str) -> None:
        self._bad.add(index)
        self._note(text)

    def tap(
        self, rows: Iterable[IndexRow], stop: int
    ) -> Iterator[tuple[int, bytes, wire.AuditedEntry | ClaimError]]:
        """(index, leaf data, its `wire.AuditedEntry`, or the ClaimError of an entry that
        is no log entry) of each row before leaf ``stop``: each entry is decoded once, here,
        for the audit's other checks to share; its columns are compared with it on the way
        (its ``chain_linked`` too, each device's previous claim tracked from leaf 0, or
        from the claim before the audit's start that it names, looked up) and its leaf
        hash kept for `compare_leaf_hashes`. Raises
        LogIntegrityError for an entry that is not stored as bytes (the re-hash cannot
        read it) or a leaf missing."""
        chain = self._chain
        for row in rows:
            index, entry = row[0], row[7]
            if index >= stop:
                return
            if not isinstance(entry, bytes):
                raise LogIntegrityError(
                    f"log entry {index} is stored as {stored_as(entry)}, not bytes: the"
                    " database was edited behind the log's back"
                )
            if index != self._next:
                raise LogIntegrityError(
                    f"log entry {self._next} is missing: it was deleted behind the log's back"
                )
            self._next += 1
            self._leaf_hashes.append(row[1])
            try:
                fields: wire.AuditedEntry | ClaimError = wire.audited_entry(index, entry)
            except ClaimError as e:
                fields = e
            if isinstance(fields, ClaimError) or fields.columns is None:
                self._problem(
                    index,
                    f"log entry {index} does not decode, so its columns are unknown:"
                    f" {fields if isinstance(fields, ClaimError) else fields.error}",
                )
            else:
                for column, held, said in differences(row, fields.columns):
                    self._problem(index, difference_line(index, column, held, said))
                linked = None if chain is None else chain_link_of(chain, fields, self._before)
                if linked is not None and row[8] != linked:
                    self._problem(index, difference_line(index, "chain_linked", row[8], linked))
            yield index, entry, fields

    def compare_leaf_hashes(self, first: int, made: list[tuple[int, bytes]]) -> None:
        """Compare the leaf hashes stored for the rows tapped since the last call (leaves
        ``first`` on) with ``made``, the re-hash's (index, leaf hash) of the same leaves,
        and count the leaves of those rows found to match."""
        stored, self._leaf_hashes = self._leaf_hashes, []
        want = list(map(_hash, made))
        if stored != want:
            # as long: the tap stops at a leaf missing, before the re-hash passes it
            pairs = zip(stored, want, strict=False)
            for index, (held, said) in enumerate(pairs, first):
                if held != said:
                    self._problem(index, difference_line(index, "leaf_hash", held, said))
        self.leaves_checked += len(stored) - len(self._bad)
        self._bad = set()

    def compare_key_events(
        self,
        logged: Iterable[tuple[int, bytes, int]],
        rows: Iterable[tuple[int, object, object]],
        stop: int,
    ) -> None:
        """Compare the ``key_events`` rows before leaf ``stop`` (``rows``: leaf index,
        device id, kind, in leaf order) with the key events ``logged`` (the same, read
        from the entries, in leaf order): a row that differs, is missing or names a leaf
        that is no key event is a problem. The server reads a device's key history
        through these rows (`Store.key_event_entries`). Memory: one page of rows."""
        wanted = iter(logged)
        w = next(wanted, None)
        for index, device, kind in rows:
            if index >= stop:
                break
            while w is not None and w[0] < index:
                self._key_problem(w[0], f"is missing; the entry is {_event(w[1], w[2])}")
                w = next(wanted, None)
            if w is None or w[0] != index:
                self._key_problem(
                    index,
                    f"says {_event(device, kind)}; the entry is no key event (a row added"
                    " behind the log's back)",
                )
                continue
            if (device, kind) == (w[1], w[2]):
                self.key_events_checked += 1
            else:
                said = _event(w[1], w[2])
                self._key_problem(index, f"says {_event(device, kind)}; the entry is {said}")
            w = next(wanted, None)
        while w is not None:
            self._key_problem(w[0], f"is missing; the entry is {_event(w[1], w[2])}")
            w = next(wanted, None)

    def _key_problem(self, index: int, text: str) -> None:
        self._note(f"the key_events row of log entry {index} {text}")


def _event(device: object, kind: object) -> str:
    """A key_events row's device and kind as a person reads them."""
    what = {1: "an enrollment", 2: "a revocation"}.get(kind) if isinstance(kind, int) else None
    return f"{what or f'kind {kind!r}'} of device {shown_value('device_id', device)}"
