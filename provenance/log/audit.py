"""Auditing a log from outside: what a witness or a newsroom runs on a schedule.

The auditor keeps an `AuditState` (the last checkpoint it accepted and the Merkle
frontier at that size). `audit_step` takes the log's newest signed checkpoint, a
consistency proof from the saved size, and the leaf data appended since, and either
returns the new state or raises `LogIntegrityError` naming what is wrong: a bad
signature, a rollback (the tree shrank), a fork (the old tree is not a prefix of the
new one), or entries that do not hash to the signed root (rows edited or deleted).
Without a proof (an audit of the database, whose stored nodes are themselves under
audit) the re-hash proves the consistency, and an observer sees every leaf appended
(`provenance.log.store_audit` compares the stored nodes and checkpoint rows with them).
`KeyHistoryReader` reads the enrollments and revocations out of the same entries, so
the auditor can compare the registry with the log's key history.
Pure: fetching is the caller's job.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from provenance.core import merkle
from provenance.core.claims import Device
from provenance.core.errors import (
    ClaimError,
    LogError,
    LogIntegrityError,
    ProvenanceError,
    ServerEvidenceError,
)
from provenance.core.keyhistory import (
    KeyEvent,
    KeyEventKind,
    KeyState,
    LoggedKeyEvent,
    SignedKeyEvent,
    fold,
    registry_problems,
    verify_key_event,
)
from provenance.core.problems import Problems
from provenance.log.checkpoint import Checkpoint, NoteVerifier, open_checkpoint
from provenance.log.claim_audit import ClaimKeyAuditor
from provenance.wire import convert as wire
from provenance.wire.convert import AuditedEntry
from provenance.wire.jsontext import loads_text

#: The most bytes of a saved audit state read (`AuditState.to_json` writes a few KiB: the
#: key, a checkpoint with its cosignatures, at most 64 frontier hashes).
MAX_AUDIT_STATE_BYTES = 1 << 20


@dataclass(frozen=True)
class AuditState:
    """The last checkpoint an auditor accepted, with the frontier hashes at its size."""

    verifier_key: str
    checkpoint: str
    frontier: tuple[bytes, ...]

    def to_json(self) -> str:
        return (
            json.dumps(
                {
                    "verifier_key": self.verifier_key,
                    "checkpoint": self.checkpoint,
                    "frontier": [h.hex() for h in self.frontier],
                },
                indent=2,
            )
            + "\n"
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> AuditState:
        """Parse a saved state (text, or its bytes: UTF-8 JSON as `to_json` writes it);
        raises LogError when it is damaged, bytes that are not UTF-8 included. An audit
        saves only a checkpoint it verified, with the key that verified it, so a key that
        is no verifier key, or a checkpoint that no longer verifies with it, is damage on
        the auditor's disk, not the log's doing (before, both read as a LOG INTEGRITY
        FAILURE of the log)."""
        try:
            try:
                doc = loads_text(text)
            except RecursionError:
                raise ValueError(
                    "it is nested deeper than Python's stack allows (a saved state is an"
                    " object of three fields)"
                ) from None
            state = cls(
                _text_field(doc, "verifier_key"),
                _text_field(doc, "checkpoint"),
                _hashes_field(doc, "frontier"),
            )
            open_checkpoint(state.checkpoint, NoteVerifier.from_vkey(state.verifier_key))
        except (ValueError, ProvenanceError) as e:
            raise LogError(
                f"audit state file is damaged: {e}; move it away to start the audit afresh"
                " (the next audit then trusts the log's key and tree as first seen)"
            ) from e
        return state


def _field(doc: object, name: str) -> object:
    """Field ``name`` of a saved state ``doc``; raises ValueError, in words, when ``doc``
    is no JSON object or lacks it."""
    if not isinstance(doc, dict):
        raise ValueError("it is not a JSON object (as `prov log audit` writes it)")
    if name not in doc:
        raise ValueError(f"it has no {name}")
    return doc[name]


def _text_field(doc: object, name: str) -> str:
    value = _field(doc, name)
    if not isinstance(value, str):
        raise ValueError(f"its {name} is not a string")
    return value


def _hashes_field(doc: object, name: str) -> tuple[bytes, ...]:
    value = _field(doc, name)
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise ValueError(f"its {name} is not a list of hex strings")
    try:
        return tuple(bytes.fromhex(h) for h in value)
    except ValueError:
        raise ValueError(f"its {name} is not a list of hex strings") from None


def _saved_frontier(state: AuditState, saved: Checkpoint) -> merkle.CompactRange:
    """The frontier ``state`` saved, checked against its signed checkpoint ``saved``:
    the frontier is the auditor's own record, which the signature does not cover, so
    one that does not hash to the saved root (a changed or missing hash) is a damaged
    state file (LogError), never the log's fault. Before, the next audit extended it and
    read an honest log's entries as "edited behind the log's back" (exit 3)."""
    full = "(a full audit, --full, re-hashes every entry and saves a new one)"
    try:
        frontier = merkle.CompactRange.from_hashes(saved.size, list(state.frontier))
    except LogError as e:  # a hash missing or added: said with what to do too
        raise LogError(f"audit state file is damaged: {e} {full}") from e
    if frontier.root() != saved.root_hash:
        raise LogError(
            f"audit state file is damaged: its frontier does not hash to the root of its"
            f" checkpoint of size {saved.size} {full}"
        )
    return frontier


def open_trusted(note: str, verifier: NoteVerifier, what: str) -> Checkpoint:
    """Open a checkpoint or raise LogIntegrityError (a bad signature is an integrity failure)."""
    try:
        return open_checkpoint(note, verifier)
    except ProvenanceError as e:
        raise LogIntegrityError(f"{what} checkpoint does not verify with the log key: {e}") from e


#: Sees the tree an audit re-hashes: called with the frontier and the nodes completed
#: since its last call (`merkle.CompactRange.append`, in order), once before the first
#: leaf, then each time the tree reaches the size it returned last, and once at the end;
#: it returns the next size it wants to see (past the current one). Between calls the
#: audit only collects the nodes: no call per leaf.
Observer = Callable[[merkle.CompactRange, list[merkle.NewNode]], int]


def _unobserved(frontier: merkle.CompactRange, made: list[merkle.NewNode]) -> int:
    """The `Observer` of an audit that has none: the nodes collected are dropped."""
    return frontier.size + 4096


def audit_step(
    state: AuditState | None,
    verifier_key: str,
    new_note: str,
    consistency: list[bytes] | None,
    entries: Iterable[bytes],
    from_start: bool = False,
    observe: Observer | None = None,
    proof_from: str = "the log",
) -> tuple[AuditState, Checkpoint, int]:
    """Advance the audit from ``state`` (None: first audit) to ``new_note``, trusting
    only the log key ``verifier_key`` (note vkey format).

    ``consistency`` proves the saved tree is a prefix of the new one (empty on a first
    audit); None: the re-hash itself proves it, for an auditor that reads the entries
    from a copy it trusts no proof from (a database whose stored nodes are under audit):
    from the saved frontier, or from the start with the root at the saved size compared
    on the way. ``entries`` are the leaf data up to the new size, starting at the saved
    size, or at 0 on a first audit or when ``from_start`` (a full re-hash, which also
    catches edits to entries audited before). ``observe`` sees the nodes of every leaf
    appended (the stored tree's check, `provenance.log.store_audit`). Returns (new state, new
    checkpoint, entries checked). Raises LogIntegrityError on any inconsistency; a
    ``consistency`` proof that does not verify is a FORK, unless the re-hash from the start
    (``from_start``) passes through the saved root at the saved size: then the proof is
    wrong, not the log, and ServerEvidenceError names ``proof_from`` (who sent it) instead
    of a FORK.
    """
    verifier = NoteVerifier.from_vkey(verifier_key)
    new = open_trusted(new_note, verifier, "the newest")
    start = 0
    frontier = merkle.CompactRange()
    old_size, old_root = -1, b""  # without a proof: the root a re-hash must pass through
    wrong_proof = ""  # why the consistency proof given failed, when the re-hash decides
    if state is not None:
        old = open_trusted(state.checkpoint, verifier, "the saved")
        if new.size < old.size:
            raise LogIntegrityError(
                f"ROLLBACK: the log now claims {new.size} entries, fewer than the {old.size}"
                " it signed before"
            )
        if new.size == old.size and new.root_hash != old.root_hash:
            raise LogIntegrityError(
                f"FORK: two different signed roots for the same size {new.size}"
            )
        if new.size > old.size and old.size > 0 and consistency is not None:
            try:
                merkle.verify_consistency(
                    old.size, new.size, consistency, old.root_hash, new.root_hash
                )
            except LogError as e:
                if not from_start:  # no re-hash of the saved tree to tell
                    raise LogIntegrityError(
                        f"FORK: the tree of size {old.size} seen before is not a prefix of the"
                        f" new tree of size {new.size}: {e}"
                    ) from e
                wrong_proof = str(e)
        if not from_start:
            start = old.size
            frontier = _saved_frontier(state, old)
        elif consistency is None or wrong_proof:
            old_size, old_root = old.size, old.root_hash
    forked = False
    observe = observe or _unobserved
    made: list[merkle.NewNode] = []
    stop = observe(frontier, made)
    size = frontier.size
    for entry in entries:
        if size >= new.size:
            raise LogIntegrityError(f"the log served more entries than its checkpoint's {new.size}")
        made += frontier.append(merkle.leaf_hash(entry))
        size += 1
        if size == stop:
            stop, made = observe(frontier, made), []
        if size == old_size:
            forked = frontier.root() != old_root
    observe(frontier, made)
    checked = size - start
    if frontier.size != new.size:
        raise LogIntegrityError(
            f"the log served {frontier.size - start} entries from index {start}; its signed"
            f" checkpoint says there are {new.size - start}: entries were deleted"
        )
    if frontier.root() != new.root_hash:
        raise LogIntegrityError(
            "the log's entries do not hash to its signed root: entries were edited behind the"
            " log's back"
        )
    if forked:  # the entries are the new tree's: the saved root is of another tree
        raise LogIntegrityError(
            f"FORK: the tree of size {old_size} seen before is not a prefix of the new tree of"
            f" size {new.size}: its first {old_size} entries hash to another root"
        )
    if wrong_proof:
        raise ServerEvidenceError(
            f"the consistency proof from size {old_size} to {new.size} that {proof_from}"
            f" sent does not verify ({wrong_proof}), but every entry re-hashed from the"
            f" start shows the tree of size {old_size} seen before is a prefix of the new"
            " one: a wrong proof, not a fork of the log; nothing was saved"
        )
    return AuditState(verifier_key, new_note, frontier.hashes), new, checked


class KeyHistoryReader(Problems):
    """Reads the key-history entries (enrollments, revocations) out of the leaf data an
    audit re-hashes (`tap`, or `read` where the audit decoded each entry already),
    checking each one's signature; `problems` names entries that do not decode or verify
    (at most `MAX_PROBLEMS`, then ``more`` counts them: a hostile log may hold millions).
    ``claims`` (read from leaf 0) is handed every key event and every claim entry read,
    to hold the claims to the key history.

    Each event is folded as it is read into what the audit's end needs, never kept:
    ``states``, each device's `keyhistory.KeyState` as `keyhistory.replay` makes it (in the
    order of each device's first event), to compare with the registry (`compare_registry`);
    ``enrollments`` and ``revocations``, counts; and `logged_rows`, each event's (leaf
    index, device id, kind) in compact arrays (about 17 bytes an event) for the
    ``key_events`` rows' check, unless ``rows`` is False (the online audit, which has no
    such table to check: then nothing is kept an event). Keeping every event, its signed bytes and
    decoded fields, would take about 925 bytes an event, 1 GiB for 10^6 devices."""

    def __init__(self, claims: ClaimKeyAuditor | None = None, *, rows: bool = True) -> None:
        super().__init__()
        self._rows = rows
        self.states: dict[bytes, KeyState] = {}
        self.enrollments = 0
        self.revocations = 0
        self._indices = array("q")
        self._kinds = bytearray()
        self._devices: list[bytes] = []  # each the key of ``states``: one object a device
        self.claims = claims

    def tap(self, entries: Iterable[bytes], start: int = 0) -> Iterator[bytes]:
        """Yield ``entries`` (leaf data from index ``start``) unchanged, reading each."""
        for index, entry in enumerate(entries, start):
            self._read(index, entry)
            yield entry

    def read(self, index: int, entry: bytes, fields: AuditedEntry | ClaimError) -> None:
        """Read leaf ``index`` whose leaf data ``entry`` the audit decoded already
        (``fields``: `wire.audited_entry`, or the ClaimError of data that is no log
        entry): only a key event is decoded further."""
        if self.claims is not None:
            self.claims.read(index, entry)
        if isinstance(fields, ClaimError):
            self._problem(index, fields)
        elif fields.key_event:
            self._read_event(index, entry)
        elif self.claims is not None and fields.error is None:  # else named already
            self.claims.claim(index, entry)

    def _read(self, index: int, entry: bytes) -> None:
        if self.claims is not None:
            self.claims.read(index, entry)
        try:
            key_event = wire.is_key_event_entry(entry)
        except ProvenanceError as e:
            self._problem(index, e)
            return
        if key_event:
            self._read_event(index, entry)
        elif self.claims is not None:
            self.claims.claim(index, entry)

    def _read_event(self, index: int, entry: bytes) -> None:
        try:
            read = _verified_event(entry)
        except ProvenanceError as e:
            self._problem(index, e)
            return
        if read is None:
            return
        event, integrated_at, got = read
        state = fold(self.states, index, event)
        if event.kind is KeyEventKind.ENROLLMENT:
            self.enrollments += 1
        else:
            self.revocations += 1
        if self._rows:
            self._indices.append(index)
            self._kinds.append(int(event.kind))
            self._devices.append(state.device_id)
        if self.claims is not None:
            self.claims.key_event(LoggedKeyEvent(index, integrated_at, got, event))

    def _problem(self, index: int, e: ProvenanceError) -> None:
        self._note(f"log entry {index} is not a valid claim or key event: {e}")

    def logged_rows(self) -> Iterator[tuple[int, bytes, int]]:
        """(leaf index, device id, kind as `KeyEventKind`'s number) of each key event read,
        in leaf order: what the ``key_events`` rows should say. Raises ValueError when the
        reader was made with ``rows=False``."""
        if not self._rows:
            raise ValueError("this key-history reader kept no rows (made with rows=False)")
        return zip(self._indices, self._devices, self._kinds, strict=True)

    def compare_registry(
        self,
        find_device: Callable[[bytes], Device | None],
        registry: Iterable[bytes] = (),
        enrolled_later: Callable[[bytes], bool] | None = None,
    ) -> None:
        """Compare each device's registry row (as ``find_device`` reports it: None when
        there is none) with the state its logged history gives: each difference (an
        edited, back-dated or deleted enrollment or revocation) noted as a problem
        (`keyhistory.registry_problems`), after those of the entries read, in a bound of
        their own: up to `MAX_PROBLEMS` listed however many entries did not read (before,
        20 unreadable entries left no room for a deleted revocation's sentence, only a
        count), the rest counted in ``more``.

        ``registry``, the device id of every registry row (streamed: `Store.device_ids`),
        names, in the same bound, each row of a device the log holds no enrollment of (a
        row added behind the log's back, from which the server accepts claims), unless
        ``enrolled_later(device id)`` says an enrollment of it is logged past the audited
        checkpoint (a server enrolling while audited). Looking up only the devices the log
        names would let such a row pass."""
        found = Problems()
        for device_id, state in self.states.items():
            for text in registry_problems(state, find_device(device_id)):
                found._note(text)
        for device_id in registry:
            if device_id in self.states or (enrolled_later and enrolled_later(device_id)):
                continue
            found._note(
                f"device {device_id.hex()} is in the registry but the log holds no"
                " enrollment of it: added behind the log's back"
            )
        self.problems += found.problems
        self.more += found.more


def enrolled_past(entries: Iterable[tuple[int, bytes]], device_id: bytes, size: int) -> bool:
    """Whether ``entries`` ((leaf index, leaf data) of the key-history leaves a store
    indexes for ``device_id``: `Store.key_event_entries`) hold, at an index of ``size``
    or more (past the audited checkpoint of ``size`` leaves), a signed enrollment of
    ``device_id`` whose signature verifies: a device a live server enrolled after the
    checkpoint an audit read, whose registry row is written with that entry. An entry
    that does not decode or verify counts as none (the next audit, which reads it, names
    it)."""
    for index, entry in entries:
        if index < size:
            continue
        try:
            read = _verified_event(entry)
        except ProvenanceError:
            continue
        if read and read[0].kind is KeyEventKind.ENROLLMENT and read[0].device_id == device_id:
            return True
    return False


def _verified_event(entry: bytes) -> tuple[KeyEvent, datetime, SignedKeyEvent] | None:
    """The key event of the leaf data ``entry``, its integration time and its signed
    form, the signature verified; None for an entry of a claim. Raises ProvenanceError
    when it does not decode or verify."""
    got, integrated_at = wire.decode_entry(entry)
    if not isinstance(got, SignedKeyEvent):
        return None
    verify_key_event(got)
    return wire.decode_key_event(got.event_bytes), integrated_at, got
