"""Submitting the queue to the log (`SyncingFolder.sync`): oldest first, each receipt
checked with the pinned log key and stored in its sidecar; refusals set aside, a
transient failure stopping the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from clients.api import ProvenanceClient, is_unreachable
from clients.device.disk import SIDECAR_SUFFIX, atomic_write
from clients.device.entries import MAX_FAILED_ATTEMPTS, QueueEntry
from clients.device.logkey import _check_receipt, _key_label, pinned_key_differs
from clients.device.queue import QueueFolder
from clients.device.state import SEQUENCE_MARGIN
from clients.files import read_bounded
from provenance.core.claims import Receipt
from provenance.core.errors import ConfigError, ProvenanceError, TransportError
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar, encode_sidecar

#: gRPC status names of a refusal that no retry can change: the entry is set aside.
PERMANENT_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "FAILED_PRECONDITION",
        "OUT_OF_RANGE",
        "ALREADY_EXISTS",
    }
)


#: gRPC status names of a server failure on one entry: set aside after
#: MAX_FAILED_ATTEMPTS tries, so one entry the server cannot digest does not hold back
#: every later capture. Any other code (RESOURCE_EXHAUSTED, NOT_FOUND, UNAVAILABLE, ...)
#: leaves the entry queued and is retried by the next sync.
ENTRY_FAILURE_CODES = frozenset({"INTERNAL", "UNKNOWN"})


#: Codes of a sync stopped before a claim was sent, by the server's log key
#: (`DeviceHome.check_log_key`): the server's, not a claim's; the claims stay queued.
LOG_KEY_CODES = frozenset({"LOG_KEY_CHANGED", "LOG_KEY_UNREAD"})


@dataclass
class SyncResult:
    """What a sync did: receipts by claim hash; entries set aside as refused for good,
    by claim hash (with the reason); unreadable entries set aside, by entry file name;
    notes (a sidecar kept in the device folder, ...) by claim hash; and why it stopped
    early: the server unreachable, or a transient refusal (``deferred``; with
    ``not_enrolled`` when it is that the server has no such device enrolled, and
    ``key_changed`` when it answers another log key than the pinned one, ``key_unread``
    when its log key could not be read: in both, no claim was sent); ``revoked``: a claim was refused because the device's key is revoked."""

    logged: dict[bytes, Receipt] = field(default_factory=dict)
    refused: dict[bytes, str] = field(default_factory=dict)
    set_aside: dict[str, str] = field(default_factory=dict)
    notes: dict[bytes, str] = field(default_factory=dict)
    unreachable: str | None = None
    deferred: str | None = None
    not_enrolled: bool = False
    key_changed: bool = False
    key_unread: bool = False
    revoked: bool = False


class SyncingFolder(QueueFolder):
    """A device folder whose queued claims are submitted to its server."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        #: the client last asked for its server's log key, and its answer (`_served_key`)
        self._served: tuple[ProvenanceClient, str] | None = None

    def check_log_key(self, client: ProvenanceClient) -> str:
        """The log key receipts from ``client``'s server are verified with: the one pinned
        in device.json (`DeviceState.log_key`), once the server answered that same key;
        the server's when none is pinned yet (a device enrolled before keys were pinned:
        `submit_one` pins it with the first receipt that verifies). The server is asked
        once per `DeviceHome` and client (`_served_key`), before any claim is sent.
        Raises TransportError, no claim sent: ``LOG_KEY_CHANGED`` when the server answers
        another key than the pinned one (`pinned_key_differs`), ``LOG_KEY_UNREAD`` when
        its key cannot be read (a transient stop, never counted against a claim), or as
        `ProvenanceClient.log_key` when the server is unreachable."""
        served = self._served_key(client)
        state = self.state()
        if state.log_key and served != state.log_key:
            raise TransportError(
                pinned_key_differs(client.address, state.log_key, served, state.server),
                "LOG_KEY_CHANGED",
            )
        return state.log_key or served

    def _served_key(self, client: ProvenanceClient) -> str:
        """The log key ``client``'s server answers, asked once per `DeviceHome` and client:
        a `prov sign` of many files syncs after each, and a sync submits many claims, all
        on one client (before: one GetLogKey call per claim). An answer that is no key,
        or a refusal, is raised as ``LOG_KEY_UNREAD`` (the claims stay queued, none set
        aside for it: none was sent); unreachable, as it came."""
        if self._served is not None and self._served[0] is client:
            return self._served[1]
        try:
            served, _ = client.log_key()
        except TransportError as e:
            if is_unreachable(e):
                raise
            raise TransportError(
                f"the log key of the server at {client.address} could not be read ({e}), so"
                " no claim was sent",
                "LOG_KEY_UNREAD",
            ) from None
        self._served = (client, served)
        return served

    def submit_one(self, client: ProvenanceClient, entry: QueueEntry) -> tuple[Receipt, str]:
        """Submit one queued claim; on success store the receipt in its sidecar and drop
        the entry from the queue.

        The sidecar beside the file is rewritten only when it still describes this claim
        (or is gone while its folder exists); when it cannot be written (folder deleted,
        name too long), or now holds another claim (the file signed again since), the
        sidecar with the receipt is kept in ``sidecars/``. Returns the
        receipt and a note on where the sidecar went ("" when beside the file), or that
        the entry stays queued because the device folder cannot be written (the next
        sync's replay gets the same receipt). Before the claim is sent, the server's log
        key is checked against the one pinned in device.json (`check_log_key`: asked
        once per run); the receipt must verify with the pinned key. A device without one
        pins the key the server answers once its receipt verifies with it (trust on
        first use, said in the note). Raises TransportError (the entry stays queued;
        ``LOG_KEY_CHANGED``, claim not sent, when the server answers another log key
        than the pinned one).
        """
        assert entry.sidecar is not None and entry.sidecar_path is not None
        vkey = self.check_log_key(client)  # before the claim leaves this device
        pinned = self.state().log_key
        receipt, _ = client.submit(entry.sidecar.signed_claim)
        _check_receipt(client, receipt, entry.sidecar.signed_claim, vkey)
        done = entry.sidecar.with_receipt(receipt, vkey)
        note = self._store_receipt(entry, receipt, done)
        if pinned:
            return receipt, note
        said = self._pin(client.address, vkey)  # enrolled unpinned: trust on first use
        return receipt, f"{said}; {note}" if note else said

    def _pin(self, address: str, vkey: str) -> str:
        """Pin ``vkey``, the log key the server at ``address`` answered with a receipt
        that verifies, in device.json (a device enrolled before keys were pinned); says
        so, or that it could not be written (the next sync pins it)."""
        label = _key_label(vkey)
        try:
            self.save_state(replace(self.state(), log_key=vkey))
        except (OSError, ConfigError) as e:
            return f"the log key {label} could not be pinned ({e}); the next sync tries again"
        return (
            f"pinned the log key {label} that {address} answers (this device had no log key"
            " pinned: it enrolled before keys were pinned, or `prov device repair` could not"
            " recover it): later receipts must verify with it (`prov device show`)"
        )

    def _store_receipt(self, entry: QueueEntry, receipt: Receipt, done: Sidecar) -> str:
        """Write ``done`` (the entry's sidecar with its receipt) and drop the entry from
        the queue, as `submit_one` says; returns its note."""
        assert entry.sidecar is not None and entry.sidecar_path is not None
        side_path = entry.sidecar_path
        note = ""
        try:
            current: Sidecar | None = decode_sidecar(
                read_bounded(side_path, MAX_SIDECAR_BYTES, "sidecar")
            )
        except (OSError, ProvenanceError):
            current = None
        try:
            if current is None or current.signed_claim == entry.sidecar.signed_claim:
                written, problem = self._write_sidecar(entry.sequence, side_path, done)
                if problem:
                    note = f"{problem}; the sidecar with the receipt is kept at {written}"
            else:  # signed again since (the file edited): both sidecars are kept
                self.sidecar_dir.mkdir(parents=True, exist_ok=True)
                kept = self.sidecar_dir / f"{entry.sequence:012d}{SIDECAR_SUFFIX}"
                atomic_write(kept, encode_sidecar(done))
                note = (
                    f"{side_path.name} now holds another claim, left as it is; this claim's"
                    f" sidecar with its receipt is kept at {kept}"
                )
        except OSError as e:  # the device folder cannot be written either: kept queued
            return (
                f"logged at leaf {receipt.leaf_index}, but its sidecar with the receipt"
                f" could not be written ({e.strerror or e}), so its queue entry stays: the"
                " next sync gets the same receipt and writes it"
            )
        try:
            entry.file.unlink(missing_ok=True)
        except OSError as e:  # a read-only device folder: a replay later, not a stop now
            gone = (
                f"logged at leaf {receipt.leaf_index}, but its queue entry could not be"
                f" removed ({e.strerror or e}: {entry.file}); the next sync finds it logged"
                " (the same receipt) and removes it"
            )
            note = f"{note}; {gone}" if note else gone
        return note

    def sync(
        self,
        client: ProvenanceClient,
        progress: Callable[[int, int], None] | None = None,
    ) -> SyncResult:
        """Submit every queued claim, oldest first (the log takes a device's claims in
        sequence order, so earlier queued claims always go before newer ones).

        Per entry: logged (receipt stored, entry removed); refused for good
        (`PERMANENT_CODES`, a local error, `MAX_FAILED_ATTEMPTS` server failures) or
        unreadable: moved to ``set_aside/`` with the reason, and the sync goes on; any
        other failure (server unreachable, quota, unknown device): the attempt and its
        reason are recorded in the entry and the sync stops there, the rest still queued.
        """
        items = self.pending()
        result = SyncResult()
        for i, entry in enumerate(items):
            label = entry.label
            if entry.sidecar is None:
                reason = f"{label}: queue entry cannot be read: {entry.problem}"
                result.set_aside[entry.file.name] = self._aside(entry, reason)
            else:
                ch = entry.sidecar.signed_claim.claim_hash
                if entry.damage:
                    result.notes[ch] = f"{label}: queue entry {entry.file.name}: {entry.damage}"
                try:
                    receipt, note = self.submit_one(client, entry)
                    result.logged[ch] = receipt
                    if note:
                        said = result.notes.get(ch)
                        result.notes[ch] = f"{said}; {note}" if said else f"{label}: {note}"
                except TransportError as e:
                    # the log key is the run's, not this claim's: said without its name
                    reason = str(e) if e.code in LOG_KEY_CODES else f"{label}: {e}"
                    tries = entry.attempts + 1
                    if e.code in PERMANENT_CODES or (
                        e.code in ENTRY_FAILURE_CODES and tries >= MAX_FAILED_ATTEMPTS
                    ):
                        if e.code in ENTRY_FAILURE_CODES:
                            reason += f" (failed {tries} times)"
                        if e.code == "FAILED_PRECONDITION":
                            reason += self._catch_up(client, entry)
                        result.refused[ch] = self._aside(entry, reason)
                        # SubmitCapture's PERMISSION_DENIED: this device's key is revoked
                        result.revoked = result.revoked or e.code == "PERMISSION_DENIED"
                    else:
                        self._record_failure(entry, reason)
                        if is_unreachable(e):
                            result.unreachable = str(e)
                        else:
                            result.deferred = reason
                            # SubmitCapture's NOT_FOUND: the server knows no such device
                            result.not_enrolled = e.code == "NOT_FOUND"
                            result.key_changed = e.code == "LOG_KEY_CHANGED"
                            result.key_unread = e.code == "LOG_KEY_UNREAD"
                        break
                except ProvenanceError as e:  # e.g. a claim this client cannot encode
                    result.refused[ch] = self._aside(entry, f"{label}: {e}")
            if progress:
                progress(i + 1, len(items))
        return result

    def _catch_up(self, client: ProvenanceClient, entry: QueueEntry) -> str:
        """After ``entry`` was refused as not advancing the device's sequence: when the
        log already holds this key's claims up to a sequence at or past the entry's and
        past this folder's last (a folder restored from a backup, or the key used by a
        copy of it elsewhere), number the next claim after the log's last, so one refusal
        is all it costs (before, one per claim the folder was behind); when the folder is
        not behind, the claim is older than the log's last of this key (a file's sidecar
        from a log since replaced, its claim queued again), or the log holds another claim
        of its number (a copy of this folder signing with the same numbers, or this one
        before it was restored from a backup; the log's claim is another, as the log answers
        a claim it holds with its receipt): say which, and to sign the file again (numbered
        past the log's last).
        Returns what to add to the refusal's reason ("" when the log cannot say). A
        log's number more than `SEQUENCE_MARGIN` past the state's is not adopted (said,
        with what to do: `prov device repair --accept-log-sequence`)."""
        assert entry.sidecar is not None
        try:
            device = client.get_device(entry.sidecar.signed_claim.key_id)
        except ProvenanceError:
            return ""
        state = self.state()
        last = device.last_sequence
        if last < entry.sequence:
            return ""
        if last <= state.last_sequence:  # an old claim, or a number a copy used first
            held = (
                f"the log holds later claims of this key (up to sequence {last})"
                if last > entry.sequence
                else f"the log already holds another claim of this key numbered {last} (a"
                " copy of this device folder signing too, or this folder restored from a"
                " backup?)"
            )
            return (
                f"; {held}, so this one can never be logged; sign the file again for a new"
                " claim (`prov sign FILE`)"
            )
        if last > state.last_sequence + SEQUENCE_MARGIN:  # a wrong answer would end the key
            return (
                f"; the log says it holds this key's claims up to sequence {last}, more than"
                f" {SEQUENCE_MARGIN:,} past this device's last ({state.last_sequence}): not"
                " adopted, as a wrong answer (a broken or hostile server) would move the"
                " numbering towards its end, where the key signs nothing more. If the log"
                " does hold them (this key also signing elsewhere), `prov device repair"
                " --accept-log-sequence` takes its number; then sign the file again"
            )
        self.save_state(replace(state, last_sequence=last))
        return (
            f"; this device folder is behind the log, which holds this key's claims up to"
            f" sequence {last} (a folder restored from a backup, or this key also signing"
            f" elsewhere): its next claim is numbered {last + 1}; sign the file again"
        )
