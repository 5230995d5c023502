"""Checking each logged claim against the key history the same log holds.

The server logs a claim only when its device signature verifies under the key its
registry gives the device (`registry.check_claim_signature`) and that key is not revoked
at the claim's integration time (`registry.check_not_revoked`). The log's key history
(enrollments and revocations, `provenance.log.audit.KeyHistoryReader`) says the same of
every device, so an auditor can hold each claim to it: `ClaimKeyAuditor` verifies every
claim's signature, with the server's own check, under a key the log enrolled for the
claim's device, wherever in the log that enrollment is (a log upgraded to key history
holds its backfilled enrollments after the claims they cover). A live enrollment (one
not marked ``backfilled``, which the migration sets on every entry it writes, inside the
signed event) must also come before the claims it covers, and no claim may follow a live
revocation of its device in the log with an integration time at or after the revoked
time (the server refuses those). A backfilled event's place says nothing of when the
key was enrolled or revoked, so only its key counts.

The audit streams the entries once: a claim whose device has an enrollment before it is
judged there. One whose device has none yet (a backfilled log's claims before the
backfill) waits: the span from the first to the last such claim is read again
(`finish`), when every enrollment is known. Memory: the enrolled keys and the earliest
live revocation of each device, and two leaf indexes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from provenance.core.claims import SignedClaim
from provenance.core.errors import ClaimError, ProvenanceError
from provenance.core.keyhistory import KeyEventKind, LoggedKeyEvent
from provenance.core.registry import check_claim_signature
from provenance.wire import convert as wire

#: Problems listed in full; more are counted.
MAX_PROBLEMS = 20

#: A key the log enrolled for a device: (raw public key, the enrollment's leaf index,
#: whether it was backfilled).
Enrolled = tuple[bytes, int, bool]


def _device(device: bytes) -> str:
    return f"device {device.hex()[:16]}..."


class ClaimKeyAuditor:
    """Holds every logged claim to the log's key history. Fed in log order from leaf 0:
    `key_event` with each key event read (`KeyHistoryReader` does), `claim` with each
    claim entry; then `finish` with a reader of the entries again. ``problems`` holds one
    sentence per claim that fails (at most `MAX_PROBLEMS`, then ``more`` counts them);
    ``claims_checked`` counts the claims that pass."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.more = 0
        self.claims_checked = 0
        self._keys: dict[bytes, list[Enrolled]] = {}
        self._revoked: dict[bytes, datetime] = {}  # the earliest live revocation seen so far
        self._waiting: tuple[int, int] | None = None  # [first, last] claim left to `finish`

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more += 1

    def key_event(self, le: LoggedKeyEvent) -> None:
        """Take the key event of leaf ``le.index`` (its signature verified already)."""
        ev = le.event
        if ev.kind is KeyEventKind.ENROLLMENT:
            self._keys.setdefault(ev.device_id, []).append((ev.public_key, le.index, ev.backfilled))
        elif not ev.backfilled:
            at = ev.effective_at
            self._revoked[ev.device_id] = min(at, self._revoked.get(ev.device_id, at))

    def claim(self, index: int, entry: bytes) -> None:
        """Judge the claim entry ``entry`` of leaf ``index``: its revocation now, its key
        now when an enrollment of its device came before it, else in `finish`. An entry
        that does not decode is a problem."""
        try:
            signed, device, at = _read_claim(entry)
        except ClaimError as e:
            self._problem(f"log entry {index} is no claim that decodes: {e}")
            return
        revoked = self._revoked.get(device)
        if revoked is not None and at >= revoked:
            self._problem(
                f"log entry {index}: the claim of {_device(device)} was integrated after its"
                " key's revocation, logged before it (the server refuses such a claim)"
            )
            return
        before = [k for k in self._keys.get(device, ()) if k[1] < index]
        if not before:
            first = index if self._waiting is None else self._waiting[0]
            self._waiting = (first, index)
            return
        self._judge(index, signed, device, before)

    def _judge(self, index: int, signed: SignedClaim, device: bytes, keys: list[Enrolled]) -> None:
        """Verify the claim of leaf ``index`` under ``keys``, its device's enrollments that
        may cover it; a problem unless one verifies it."""
        for public_key, _, _ in keys:
            try:
                check_claim_signature(signed, public_key)
            except ProvenanceError:
                continue
            self.claims_checked += 1
            return
        self._problem(
            f"log entry {index}: the claim's device signature does not verify under any key"
            f" the log's key history enrolled for {_device(device)} (signed by a key never"
            " enrolled: the server logged a claim it should have refused)"
        )

    def finish(self, reread: Callable[[int, int], Iterable[bytes]]) -> None:
        """Judge the claims left waiting for their key: ``reread(first, end)`` yields the
        entries of leaves [first, end) again. A claim verified only by a live enrollment
        logged after it is a problem (its key was not enrolled when it was logged); one
        whose device the log never enrolled, too."""
        if self._waiting is None:
            return
        first, last = self._waiting
        self._waiting = None
        for index, entry in enumerate(reread(first, last + 1), first):
            try:
                if wire.is_key_event_entry(entry):
                    continue
                signed, device, _ = _read_claim(entry)
            except ClaimError:
                continue  # named on the first reading
            keys = self._keys.get(device, [])
            if any(k[1] < index for k in keys):
                continue  # judged on the first reading
            if not keys:
                self._problem(
                    f"log entry {index}: the log's key history never enrolled"
                    f" {_device(device)}, whose claim it holds"
                )
                continue
            backfilled = [k for k in keys if k[2]]
            if backfilled:
                self._judge(index, signed, device, backfilled)
            else:
                self._problem(
                    f"log entry {index}: the claim of {_device(device)} was logged before"
                    f" its key's enrollment (log entry {keys[0][1]})"
                )


def _read_claim(entry: bytes) -> tuple[SignedClaim, bytes, datetime]:
    """(signed claim, its device id, integration time, UTC) of a claim entry; raises
    ClaimError when it does not decode."""
    signed, at = wire.decode_log_entry(entry)
    return signed, wire.decode_claim(signed.claim_bytes).device_id, at
