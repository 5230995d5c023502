"""The offline queue of a device folder: signed claims kept in queue/ until the log
takes them, set aside with the reason when it refuses them for good, and queued again on
demand."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from clients.device.disk import SIDECAR_SUFFIX, atomic_write
from clients.device.entries import QueueEntry, _entry_of, _free_name, _read_entry, read_entries
from clients.device.folder import DeviceFolder
from provenance.wire.sidecar import Sidecar, encode_sidecar


class QueueFolder(DeviceFolder):
    """A device folder with its queue: entries written, found, listed, failed, set
    aside and queued again."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        #: queue entry file name -> (its sidecar path, its key id), as `_queued_for`
        #: last read them
        self._queue_index: dict[str, tuple[str, bytes]] = {}

    def _write_sidecar(self, seq: int, side_path: Path, sidecar: Sidecar) -> tuple[Path, str]:
        """Write the sidecar beside its file, else into ``sidecars/`` of the device folder.

        Returns where it was written and why not beside the file ("" when it was).
        Raises OSError only when the device folder itself cannot be written.
        """
        data = encode_sidecar(sidecar)
        try:
            atomic_write(side_path, data)
            return side_path, ""
        except OSError as e:
            problem = f"cannot write {side_path.name}: {e.strerror or e}"
        self.sidecar_dir.mkdir(parents=True, exist_ok=True)
        kept = self.sidecar_dir / f"{seq:012d}{SIDECAR_SUFFIX}"
        atomic_write(kept, data)
        return kept, problem

    def _enqueue(self, seq: int, sidecar: Sidecar, side_path: Path) -> Path:
        self.queue_dir.mkdir(parents=True, exist_ok=True)
        doc = {
            "sidecar_path": str(side_path.absolute()),
            "sidecar": encode_sidecar(sidecar).decode(),
            "attempts": 0,
            "last_error": "",
            "last_attempt": "",
        }
        queued = _free_name(self.queue_dir / f"{seq:012d}.json")
        atomic_write(queued, json.dumps(doc).encode())
        return queued

    def _queued_for(self, side_path: Path, key_id: bytes) -> list[QueueEntry]:
        """The queued claims signed by ``key_id`` whose sidecar belongs at ``side_path``,
        newest first; unreadable entries left out.

        Each entry file is read once per `DeviceHome` (its sidecar path and key id kept
        by file name: an entry keeps its claim and path for as long as it is queued; a
        name taken again by another device's entry, after `prov device init --force`,
        is read again before it is used), so signing n files offline costs n reads of
        the growing queue in all, not n^2/2: measured 0.14 ms a signature with 300
        entries queued, of about 10-26 ms a signature, against 17 ms to read them all."""
        target = str(side_path.absolute())
        try:
            names = [n for n in os.listdir(self.queue_dir) if n.endswith(".json")]
        except OSError:  # no queue yet
            return []
        index = {}
        for name in names:
            known = self._queue_index.get(name)
            if known is None:
                entry = _read_entry(self.queue_dir / name)
                known = (
                    (str(entry.sidecar_path), entry.sidecar.signed_claim.key_id)
                    if entry.sidecar is not None and entry.sidecar_path is not None
                    else ("", b"")
                )
            index[name] = known
        self._queue_index = index
        found = []
        for name in sorted(
            (n for n, seen in index.items() if seen == (target, key_id)), reverse=True
        ):
            entry = _read_entry(self.queue_dir / name)  # again: it may have changed since
            if (
                entry.sidecar is not None
                and str(entry.sidecar_path) == target
                and entry.sidecar.signed_claim.key_id == key_id
            ):
                found.append(entry)
        return found

    def pending(self) -> list[QueueEntry]:
        """Queued claims in sequence order (entries that cannot be read included, with
        their ``problem``; `sync` sets those aside). Reads only the queue folder."""
        return read_entries(self.queue_dir)

    def set_aside(self) -> list[QueueEntry]:
        """Claims set aside (refused for good, or unreadable), with their reasons."""
        return read_entries(self.set_aside_dir)

    def _record_failure(self, entry: QueueEntry, reason: str) -> QueueEntry:
        """Count a failed attempt on a queued entry and remember why (best effort: the
        entry itself is never at risk)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        failed = replace(entry, attempts=entry.attempts + 1, last_error=reason, last_attempt=now)
        # a failed write leaves the entry as it was: still queued, still retried
        with contextlib.suppress(OSError):
            atomic_write(entry.file, failed.to_json())
        return failed

    def _set_entry_aside(self, entry: QueueEntry, reason: str) -> Path:
        """Move a queue entry to ``set_aside/`` with the reason; returns its new path.

        An entry that cannot be read (``sidecar`` None: over the size limit, not JSON,
        a folder, a FIFO, a read error) is moved as it is, byte for byte (its reason is
        the read problem, found again whenever it is listed): nothing of it is lost.
        Raises OSError when it cannot be moved (it then stays queued)."""
        self.set_aside_dir.mkdir(parents=True, exist_ok=True)
        target = _free_name(self.set_aside_dir / entry.file.name)
        if entry.sidecar is None:
            os.replace(entry.file, target)
            return target
        now = datetime.now(UTC).isoformat(timespec="seconds")
        aside = replace(
            entry,
            attempts=entry.attempts + (0 if entry.problem else 1),
            last_error=reason,
            last_attempt=now,
            set_aside_at=now,
        )
        atomic_write(target, aside.to_json())
        entry.file.unlink(missing_ok=True)
        return target

    def _aside(self, entry: QueueEntry, reason: str) -> str:
        """`_set_entry_aside` for `sync`, which goes on either way: ``reason``, with what
        went wrong added when the entry could not be moved (it then stays queued)."""
        try:
            self._set_entry_aside(entry, reason)
        except OSError as e:
            return (
                f"{reason}; it could not be moved to {self.set_aside_dir}"
                f" ({e.strerror or e}) and stays queued"
            )
        return reason

    def retry_set_aside(self) -> int:
        """Queue every set-aside entry again (after the cause was fixed, e.g. a server
        that refused them by mistake); returns how many."""
        moved = 0
        for entry in self.set_aside():
            self.queue_dir.mkdir(parents=True, exist_ok=True)
            os.replace(entry.file, _free_name(self.queue_dir / entry.file.name))
            moved += 1
        return moved

    def unlogged_note(self, sidecar: Sidecar) -> str:
        """What to do about ``sidecar`` holding no receipt, from this device's queue: still
        queued (`prov device sync`), or refused and set aside (with the reason), or
        unknown here. Reads only the queue and set_aside/ folders."""
        if _entry_of(sidecar, self.queue_dir) is not None:
            return "the claim is queued on this device: run `prov device sync`"
        aside = _entry_of(sidecar, self.set_aside_dir)
        if aside is not None:
            return (
                f"the server refused the claim and it was set aside ({aside.last_error});"
                f" it will not be logged as it is (`prov device show` lists it; `prov device"
                " sync --retry-set-aside` once the cause is fixed)"
            )
        return (
            f"the claim was not logged, and the device at {self.root} does not hold it"
            " (another device's? `prov device sync` on the device that signed it)"
        )
