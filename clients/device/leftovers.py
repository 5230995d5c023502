"""What a command killed midway left in the device folder, cleared by the next that
takes its lock: stray temporary files (a queue entry or certificate whose only copy one
is put in place), and duplicate copies of an entry."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from clients.device.disk import _TEMP_NAME, read_device_file
from clients.device.entries import (
    _COPY_NAME,
    QueueEntry,
    _entry_of,
    _free_name,
    _read_entry,
    read_entries,
)
from provenance.cli.atomicfile import fsync_folder, process_gone
from provenance.core.errors import ConfigError, KeyMaterialError

if TYPE_CHECKING:
    from clients.device.folder import DeviceFolder


def clean_leftovers(home: DeviceFolder, since: float) -> None:
    """Clear what a command killed midway left in the device folder, holding its lock
    (taken at ``since``, seconds since the epoch), saying on stderr what was done.

    Stray temporary files of `atomic_write` (named exactly ``.prov-tmp-PID-RANDOM``,
    regular files, last written before ``since`` or by a process no longer running
    (`_writer_gone`: a file dated ahead of ``since`` by a clock set back since stayed
    until the clock caught up, a queued claim in it with it): every command writes
    the folder only holding its lock, so such a file's writer is gone) in the folder, queue/,
    set_aside/ and sidecars/. Each is a copy of a file still in place, or cut short,
    and is removed, but for two kinds whose only copy it can be: a complete queue
    entry whose claim no entry holds (killed between writing a new entry and renaming
    it: its sequence was already reserved) goes into the queue, and a certificate
    chain (whole, certifying this device's key) while the device has none (killed in
    `enroll`) goes to its place.

    Duplicates (`_drop_duplicates`): a set-aside copy of a claim still queued (killed
    between setting an entry aside and removing it from the queue) is removed, so the
    queued copy is submitted again; of several copies of one claim in one folder
    (``NAME-2.json``), the first is kept. Nothing is done when the folder cannot be
    written (each step is skipped on its own OSError); nothing queued is lost."""
    removed, recovered = 0, []
    for folder in (home.root, home.queue_dir, home.set_aside_dir, home.sidecar_dir):
        try:
            names = [n for n in os.listdir(folder) if _TEMP_NAME.fullmatch(n)]
        except OSError:  # no such folder
            continue
        for name in names:
            path = folder / name
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode):
                    continue  # not a file of ours
                if st.st_mtime >= since and not _writer_gone(name):
                    continue  # written since the lock was taken, by a live process
                if folder == home.queue_dir and (seq := _recover_entry(home, path)):
                    recovered.append(seq)
                elif folder == home.root and _recover_certificate(home, path):
                    print(f"{home.cert_path}: recovered from {name}", file=sys.stderr)
                else:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    for seq in recovered:
        print(
            f"{home.queue_dir}: recovered claim #{seq} from a temporary file a command"
            " killed midway left; `prov device sync` submits it",
            file=sys.stderr,
        )
    if removed:
        print(
            f"{home.root}: removed {removed} stray temporary file{'s' if removed > 1 else ''}"
            " a command killed midway left (each a copy of a file still in place, or"
            " cut short)",
            file=sys.stderr,
        )
    with contextlib.suppress(OSError):
        _drop_duplicates(home)


def _recover_entry(home: DeviceFolder, path: Path) -> int:
    """Put the temporary file ``path`` in the queue when it is a complete queue entry
    whose claim neither the queue nor set_aside/ holds; returns its sequence (0 when
    not: it is then a copy, or cut short). Raises OSError."""
    entry = _read_entry(path)
    if entry.sidecar is None:
        return 0
    if any(_entry_of(entry.sidecar, f) for f in (home.queue_dir, home.set_aside_dir)):
        return 0
    seq = entry.sidecar.claim.sequence
    os.replace(path, _free_name(home.queue_dir / f"{seq:012d}.json"))
    fsync_folder(home.queue_dir)
    return seq


def _recover_certificate(home: DeviceFolder, path: Path) -> bool:
    """Put the temporary file ``path`` in the certificate's place when the device has
    none and it holds a whole certificate chain whose leaf certifies this device's
    key (when the state cannot be read to say which key: any whole chain); whether
    it did. Before, any file beginning as a chain was put in place: one cut short (a
    crash before the write reached the disk) or another key's (a device replaced
    since) became the certificate every `prov sign --c2pa` then failed on. Raises
    OSError."""
    from cryptography import x509

    from provenance.c2pa.writer import check_leaf_key

    if os.path.lexists(home.cert_path):
        return False
    chain = read_device_file(path)
    if not chain.rstrip().endswith(b"-----END CERTIFICATE-----"):
        return False  # cut short between two certificates
    try:
        x509.load_pem_x509_certificates(chain)  # cut short within one: not read
    except ValueError:
        return False
    with contextlib.suppress(ConfigError):  # no state to say which key: whole is enough
        key = bytes.fromhex(home.state().public_key)
        try:
            check_leaf_key(chain, key)
        except KeyMaterialError:
            return False
    os.replace(path, home.cert_path)
    fsync_folder(home.root)
    return True


def _drop_duplicates(home: DeviceFolder) -> None:
    """Remove set-aside copies of a claim still queued, and all copies but the first
    of one claim in one folder (see `clean_leftovers`), saying how many on stderr.
    Read only when there can be any: a name in both folders, or a ``NAME-N.json``
    (`_free_name`). Raises OSError."""
    names = {}
    for folder in (home.queue_dir, home.set_aside_dir):
        with contextlib.suppress(OSError):  # no such folder
            names[folder] = set(os.listdir(folder))
    queued, aside = names.get(home.queue_dir, set()), names.get(home.set_aside_dir, set())
    if not queued & aside and not any(_COPY_NAME.fullmatch(n) for n in queued | aside):
        return
    held: set[tuple[bytes, bytes]] = set()
    dropped = 0

    def first_names_first(entry: QueueEntry) -> tuple[int, bool, str]:
        return entry.sequence, bool(_COPY_NAME.fullmatch(entry.file.name)), entry.file.name

    entries = [
        *sorted(read_entries(home.queue_dir), key=first_names_first),
        *sorted(read_entries(home.set_aside_dir), key=first_names_first),
    ]
    for entry in entries:
        if entry.sidecar is None:
            continue  # an unreadable entry is nobody's copy
        signed = entry.sidecar.signed_claim
        if (signed.claim_bytes, signed.signature) in held:
            entry.file.unlink()
            dropped += 1
        held.add((signed.claim_bytes, signed.signature))
    if dropped:
        print(
            f"{home.root}: removed {dropped} duplicate cop{'ies' if dropped > 1 else 'y'}"
            " of claims still queued or set aside under another name (a command killed"
            " midway: a claim still queued is submitted again, not left set aside)",
            file=sys.stderr,
        )


def _writer_gone(name: str) -> bool:
    """Whether the process that wrote the temporary file ``name`` (`_TEMP_NAME`: the pid
    is its first number) is not running (`process_gone`)."""
    return process_gone(int(name.split("-")[2]))
