"""Queue entries on disk: one claim queued or set aside (`QueueEntry`), read back
without trusting it, and the names entries and sidecars are kept under."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from clients.device.disk import SIDECAR_SUFFIX
from clients.files import read_bounded
from provenance.core.envelope import verify_payload
from provenance.core.errors import ProvenanceError
from provenance.core.keys import DeviceKey
from provenance.wire.jsontext import json_kind, loads_text
from provenance.wire.sidecar import MAX_SIDECAR_BYTES, Sidecar, decode_sidecar, encode_sidecar

MAX_FAILED_ATTEMPTS = 3


#: Largest queue entry read, in bytes (a sidecar, escaped, plus a few fields).
MAX_QUEUE_ENTRY_BYTES = 4 * MAX_SIDECAR_BYTES


#: Largest ``attempts`` count a queue entry is read with: the largest whole number every
#: JSON reader keeps exact. Failed attempts are counted on every sync, so a device
#: offline for years may count many; a count past this, negative, or not a whole number
#: was written by no sync (an edit, a damaged file) and is not trusted (`_read_entry`).
MAX_ATTEMPTS_COUNT = 2**53 - 1


#: A second copy `_free_name` made of an entry whose name was taken.
_COPY_NAME = re.compile(r"[0-9]+-[0-9]+\.json")


def _entry_of(sidecar: Sidecar, folder: Path) -> QueueEntry | None:
    """The entry in ``folder`` (the queue or set_aside/) holding ``sidecar``'s claim."""
    for entry in read_entries(folder):
        if entry.sidecar is not None and entry.sidecar.signed_claim == sidecar.signed_claim:
            return entry
    return None


@dataclass(frozen=True)
class QueueEntry:
    """One queued (or set-aside) claim.

    file: the entry's JSON file; sequence: the claim's sequence (from the file name);
    sidecar: the signed claim with its key (None when the entry cannot be read, then
    ``problem`` says why); sidecar_path: where the capture's sidecar belongs; attempts,
    last_error, last_attempt (ISO 8601 UTC): failed submissions so far; set_aside_at:
    when it was set aside ("" while queued); damage: what is wrong with its bookkeeping
    when the claim itself is sound (an ``attempts`` out of range, `_attempts`).
    """

    file: Path
    sequence: int
    sidecar: Sidecar | None
    sidecar_path: Path | None
    attempts: int = 0
    last_error: str = ""
    last_attempt: str = ""
    set_aside_at: str = ""
    problem: str = ""
    raw: str = ""
    damage: str = ""

    @property
    def label(self) -> str:
        """The capture's file name (the entry's name when it cannot be read)."""
        if self.sidecar_path is None:
            return self.file.name
        return self.sidecar_path.name.removesuffix(SIDECAR_SUFFIX)

    def to_json(self) -> bytes:
        """The entry's file content (an unreadable entry keeps its original text)."""
        doc: dict[str, object] = {
            "sidecar_path": str(self.sidecar_path) if self.sidecar_path else None,
            "sidecar": encode_sidecar(self.sidecar).decode() if self.sidecar else None,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_attempt": self.last_attempt,
        }
        if self.set_aside_at:
            doc["set_aside_at"] = self.set_aside_at
        if self.problem:
            doc["problem"] = self.problem
            doc["raw"] = self.raw
        return json.dumps(doc).encode()

    def summary(self) -> dict[str, object]:
        """What `prov device show` prints for this entry."""
        out: dict[str, object] = {
            "sequence": self.sequence,
            "file": str(self.sidecar_path.with_name(self.label)) if self.sidecar_path else None,
            "attempts": self.attempts,
            "last_error": self.last_error
            or (f"queue entry cannot be read: {self.problem}" if self.problem else None),
            "last_attempt": self.last_attempt or None,
        }
        if self.set_aside_at:
            out["set_aside_at"] = self.set_aside_at
        if self.damage:
            out["damaged"] = self.damage
        out["entry"] = str(self.file)
        return out


def _read_entry(file: Path) -> QueueEntry:
    """One queue entry from disk; an unreadable one comes back with ``problem`` set (and
    its text in ``raw``, so setting it aside keeps it)."""
    stem = file.name.removesuffix(".json")
    seq = int(stem) if stem.isascii() and stem.isdigit() else 0  # not "²" (ValueError), "٣"
    try:
        raw = read_bounded(file, MAX_QUEUE_ENTRY_BYTES, "queue entry")
    except (OSError, ProvenanceError) as e:
        return QueueEntry(
            file,
            seq,
            None,
            None,
            problem=str(e.strerror or e) if isinstance(e, OSError) else str(e),
        )
    text = raw.decode("utf-8", "backslashreplace")
    try:
        doc = loads_text(raw, file_names=True)  # sidecar_path: a name as the OS gave it
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError) as e:
        return QueueEntry(file, seq, None, None, problem=f"not valid JSON ({e})", raw=text)
    attempts, damage = _attempts(doc.get("attempts"))
    known = partial(
        QueueEntry,
        attempts=attempts,
        damage=damage,
        last_error=str(doc.get("last_error") or ""),
        last_attempt=str(doc.get("last_attempt") or ""),
        set_aside_at=str(doc.get("set_aside_at") or ""),
    )
    if doc.get("problem"):  # an unreadable entry set aside before
        return known(file, seq, None, None, problem=str(doc["problem"]), raw=str(doc.get("raw")))
    try:
        sidecar = decode_sidecar(str(doc["sidecar"]).encode())
        side_path = Path(str(doc["sidecar_path"]))
        seq = seq or sidecar.claim.sequence
    except (KeyError, ProvenanceError) as e:
        return known(file, seq, None, None, problem=f"malformed entry ({e})", raw=text)
    return known(file, seq, sidecar, side_path)


def _attempts(value: object) -> tuple[int, str]:
    """The ``attempts`` count of a queue entry as read, and what is wrong with it ("" when
    nothing). A count no sync writes (negative, past `MAX_ATTEMPTS_COUNT`, ``true``, text,
    a fraction) is damaged and not trusted: it is read as `MAX_FAILED_ATTEMPTS` - 1, so
    one more server failure on the entry sets it aside. Before, a negative count (an
    edit) defeated that limit: the entry was retried for ever and held back every later
    capture. A missing count (an entry from an older version) is 0."""
    if value is None:
        return 0, ""
    if type(value) is int and 0 <= value <= MAX_ATTEMPTS_COUNT:
        return value, ""
    read = MAX_FAILED_ATTEMPTS - 1
    shown = json.dumps(value) if isinstance(value, int | float | str) else json_kind(value)
    return read, (
        f"its attempts {shown} is out of range (a sync writes a whole number from 0 to"
        f" {MAX_ATTEMPTS_COUNT}): the entry was edited or damaged. Its signed claim is"
        f" sound and still submitted; the count is read as {read}, so one more server"
        f" failure sets it aside (the limit is {MAX_FAILED_ATTEMPTS})"
    )


def signed_sequence(sidecar: Sidecar, key: DeviceKey) -> int:
    """The sequence of ``sidecar``'s claim when ``key`` signed it (its signature
    verifies under the key); 0 when not: bytes damaged since, or a claim naming this key
    that it never signed (its sequence, however far ahead, is no number this key used)."""
    signed = sidecar.signed_claim
    if signed.key_id != key.key_id:
        return 0
    try:
        verify_payload(key.public_key, signed.payload_type, signed.claim_bytes, signed.signature)
        return sidecar.claim.sequence
    except ProvenanceError:
        return 0


def name_sequence(name: str) -> int:
    """The sequence a queue, set_aside/ or sidecars/ file name gives
    (``000000000007.json``, ``000000000007-2.json`` from `_free_name`,
    ``000000000007.prov``); 0 for any other name, and for a number no claim has (a
    claim's sequence is a uint64)."""
    stem = name.split(".", 1)[0].split("-", 1)[0]
    seq = int(stem) if stem.isascii() and stem.isdigit() else 0
    return seq if seq < 2**64 else 0


def _free_name(path: Path) -> Path:
    """``path`` when nothing is there, else the first free ``STEM-2.json``,
    ``STEM-3.json``, ... beside it: an entry is never written or moved over another
    (two claims of one sequence, from a folder put back over a newer one, are both
    kept; the log takes one and the other is set aside with the reason)."""
    n = 1
    target = path
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return target


def read_entries(folder: Path) -> list[QueueEntry]:
    """The entries in ``folder``, in sequence order (then by name: `_free_name`'s)."""
    if not folder.is_dir():
        return []
    entries = [_read_entry(f) for f in folder.glob("*.json")]
    return sorted(entries, key=lambda e: (e.sequence, e.file.name))
