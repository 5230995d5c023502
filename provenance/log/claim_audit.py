"""Checking each logged claim against the key history the same log holds.

The server logs a claim only when its device signature verifies under the key its
registry gives the device (`registry.check_claim_signature`) and that key is not revoked
at the claim's integration time (`registry.check_not_revoked`). The log's key history
(enrollments and revocations, `provenance.log.audit.KeyHistoryReader`) says the same of
every device, so an auditor can hold each claim to it: `ClaimKeyAuditor` verifies every
claim's signature, with the server's own check, under a key the log enrolled for the
claim's device, wherever in the log that enrollment is (a log upgraded to key history
holds its backfilled enrollments after the claims they cover). The claim's signature
envelope must name its device's key id (the server refuses one that names another key,
and so does a verifier, so the audit fails it too). A live enrollment (one
not marked ``backfilled``, which the migration sets on every entry it writes, inside the
signed event) must also come before the claims it covers, and no claim may follow a live
revocation of its device in the log with an integration time at or after the revoked
time (the server refuses those). A backfilled event's place says nothing of when the
key was enrolled or revoked, so only its key counts.

The audit streams the entries once: a claim whose device has an enrollment before it is
judged there. One whose device has none yet (a backfilled log's claims before the
backfill) waits: the span from the first to the last such claim is read again
(`finish`), when every enrollment is known. Only a key whose SHA-256 is the device id
counts for a device (the server derives the id so), so a device has one key however
often the log enrolls it. Memory: each device's key, first enrollment and earliest live
revocation, two leaf indexes and two hashes.

The second read is checked against the first, whose entries the audit re-hashed to the
signed checkpoint: a chain hash over every entry read (`read`) from the first waiting
claim on, its value at the last, which the entries read again must reproduce (a log
with no claim waiting hashes nothing more). Taken as served, a server answering the second read with
the enrollment's entry in place of a claim of a device the log never enrolled would
pass the audit (exit 0) that fails against the log itself (exit 3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from provenance.core.claims import SignedClaim
from provenance.core.errors import ClaimError, ProvenanceError, ServerEvidenceError
from provenance.core.keyhistory import KeyEventKind, LoggedKeyEvent
from provenance.core.keys import key_id
from provenance.core.problems import Problems
from provenance.core.registry import check_claim_signature
from provenance.core.timetext import utc_text
from provenance.wire import convert as wire

#: What the log enrolled for a device: (its raw public key, the leaf index of its first
#: enrollment, whether any enrollment of it was backfilled).
Enrolled = tuple[bytes, int, bool]


def _device(device: bytes) -> str:
    return f"device {device.hex()[:16]}..."


class ClaimKeyAuditor(Problems):
    """Holds every logged claim to the log's key history. Fed in log order from leaf 0:
    `read` with every entry, then `key_event` with each key event read
    (`KeyHistoryReader` does), `claim` with each claim entry; then `finish` with a reader
    of the entries again. ``problems`` holds one
    sentence per claim that fails (at most `MAX_PROBLEMS`, then ``more`` counts them);
    ``claims_checked`` counts the claims that pass."""

    def __init__(self) -> None:
        super().__init__()
        self.claims_checked = 0
        self._keys: dict[bytes, Enrolled] = {}
        # the earliest live revocation seen so far: (its time, its leaf index)
        self._revoked: dict[bytes, tuple[datetime, int]] = {}
        self._waiting: tuple[int, int] | None = None  # [first, last] claim left to `finish`
        self._chain = bytes(32)  # over every entry `read` from the first waiting claim on
        self._at_last = bytes(32)  # the chain at the last waiting claim

    def read(self, index: int, entry: bytes) -> None:
        """Take entry ``index`` (leaf data) into the chain hash the second read is checked
        against once a claim waits (`claim` starts it); every entry, in log order from
        leaf 0, before `key_event` or `claim`."""
        if self._waiting is not None:
            self._chain = _chained(self._chain, entry)

    def key_event(self, le: LoggedKeyEvent) -> None:
        """Take the key event of leaf ``le.index`` (its signature verified already)."""
        ev = le.event
        if ev.kind is KeyEventKind.ENROLLMENT:
            if key_id(ev.public_key) != ev.device_id:
                self._note(
                    f"log entry {le.index} enrolls for {_device(ev.device_id)} a key whose"
                    f" SHA-256 is {key_id(ev.public_key).hex()[:16]}..., not the device id"
                    " (the server derives a device's id from its key): no claim counts on it"
                )
                return
            had = self._keys.get(ev.device_id)
            if had is None:
                self._keys[ev.device_id] = (ev.public_key, le.index, ev.backfilled)
            elif ev.backfilled and not had[2]:
                self._keys[ev.device_id] = (had[0], had[1], True)
        elif not ev.backfilled:
            at = ev.effective_at
            earlier = self._revoked.get(ev.device_id)
            if earlier is None or at < earlier[0]:
                self._revoked[ev.device_id] = (at, le.index)

    def claim(self, index: int, entry: bytes) -> None:
        """Judge the claim entry ``entry`` of leaf ``index``: its revocation now, its key
        now when an enrollment of its device came before it, else in `finish`. An entry
        that does not decode is a problem."""
        try:
            signed, device, at = _read_claim(entry)
        except ClaimError as e:
            self._note(f"log entry {index} is no claim that decodes: {e}")
            return
        if signed.key_id != device:
            self._note(
                f"log entry {index}: the claim of {_device(device)}: its signature envelope"
                f" names the key id {signed.key_id.hex()[:16]}..., not its device's: the"
                " server should have refused it"
            )
            return
        keys = self._keys.get(device)
        waits = keys is None or keys[1] > index
        revoked = self._revoked.get(device)
        if revoked is not None and at >= revoked[0]:
            self._note(
                f"log entry {index}: the claim of {_device(device)} was integrated at"
                f" {utc_text(at)}, when its key was revoked (from {utc_text(revoked[0])},"
                f" log entry {revoked[1]}, logged before the claim): the server should have"
                " refused it"
            )
            return
        if waits:
            if self._waiting is None:  # the chain starts here (`read` took it before)
                self._chain = _chained(bytes(32), entry)
            first = index if self._waiting is None else self._waiting[0]
            self._waiting = (first, index)
            self._at_last = self._chain
            return
        assert keys is not None
        self._judge(index, signed, device, keys[0])

    def _judge(self, index: int, signed: SignedClaim, device: bytes, public_key: bytes) -> None:
        """Verify the claim of leaf ``index`` under ``public_key``, the key the log
        enrolled for its device; a problem unless it verifies."""
        try:
            check_claim_signature(signed, public_key)
        except ProvenanceError:
            self._note(
                f"log entry {index}: the claim's device signature does not verify under the"
                f" key the log's key history enrolled for {_device(device)} (signed by a key"
                " never enrolled: the server logged a claim it should have refused)"
            )
            return
        self.claims_checked += 1

    def finish(self, reread: Callable[[int, int], Iterable[bytes]]) -> None:
        """Judge the claims left waiting for their key: ``reread(first, end)`` yields the
        entries of leaves [first, end) again. A claim verified only by a live enrollment
        logged after it is a problem (its key was not enrolled when it was logged); one
        whose device the log never enrolled, too. Raises ServerEvidenceError when the
        entries read again are not those `read` the first time (`_reread`)."""
        if self._waiting is None:
            return
        first, last = self._waiting
        self._waiting = None
        for index, entry in enumerate(self._reread(reread(first, last + 1), first, last), first):
            try:
                if wire.is_key_event_entry(entry):
                    continue
                signed, device, _ = _read_claim(entry)
            except ClaimError:
                continue  # named on the first reading
            if signed.key_id != device:
                continue  # named on the first reading
            keys = self._keys.get(device)
            if keys is None:
                self._note(
                    f"log entry {index}: the log's key history never enrolled"
                    f" {_device(device)}, whose claim it holds"
                )
            elif keys[1] < index:
                continue  # judged on the first reading
            elif keys[2]:
                self._judge(index, signed, device, keys[0])
            else:
                self._note(
                    f"log entry {index}: the claim of {_device(device)} was logged before"
                    f" its key's enrollment (log entry {keys[1]})"
                )

    def _reread(self, entries: Iterable[bytes], first: int, last: int) -> Iterator[bytes]:
        """``entries`` (leaves ``first`` to ``last`` read again) as they come, checked
        against the chain hash of the first read once they have all come. Raises
        ServerEvidenceError then when they differ or are not all there: the judgments
        made on them meanwhile are void (no claim may be judged on other bytes than those
        re-hashed to the signed checkpoint)."""
        chain, count = bytes(32), 0
        for entry in entries:
            chain, count = _chained(chain, entry), count + 1
            yield entry
        if count != last - first + 1 or chain != self._at_last:
            span = f"entry {first}" if first == last else f"entries {first} to {last}"
            raise ServerEvidenceError(
                f"log {span}, read again for the claim check, came back other than re-hashed"
                f" to the signed checkpoint the first time ({count} of {last - first + 1}"
                " read): the second read served other entries than the first; nothing was"
                " saved"
            )


def _chained(chain: bytes, entry: bytes) -> bytes:
    """The chain hash after ``entry``: SHA-256 of ``chain`` and the entry's SHA-256."""
    return hashlib.sha256(chain + hashlib.sha256(entry).digest()).digest()


def _read_claim(entry: bytes) -> tuple[SignedClaim, bytes, datetime]:
    """(signed claim, its device id, integration time, UTC) of a claim entry; raises
    ClaimError when it does not decode."""
    signed, at = wire.decode_log_entry(entry)
    return signed, wire.decode_claim(signed.claim_bytes).device_id, at
