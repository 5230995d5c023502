"""The device SDK: a key in an encrypted file, the per-device sequence and hash chain,
signing captures into sidecars, and an on-disk queue so no signed capture is lost.

Layout of the device home (``PROV_HOME``, default ``~/.prov``)::

    device_key.pem   the Ed25519 private key, encrypted PKCS#8 PEM (mode 0600; PBKDF2 at
                     600,000 iterations, `provenance.core.keyfile`)
    device.json      device id, enrolled server, last sequence, last claim hash
    device.json.damaged-TIME
                     a damaged device.json set aside by `prov device repair`, which
                     rebuilt it (`clients.device_repair`)
    queue/           signed claims not yet acknowledged by the log, one JSON each, named
                     by sequence (``000000000001.json``), with attempts and last error
    set_aside/       queued claims the server refused for good, with the reason (kept:
                     a signed capture is never deleted; ``prov device sync
                     --retry-set-aside`` queues them again)
    sidecars/        sidecars that could not be written beside their file (folder gone,
                     name too long, read-only), named by sequence
    replaced/ID/     a device replaced by a new key (`prov device init --force`): all the
                     above but its key, a device folder of its own
    .init-new/       a replacement decided but not finished (`prov device init` killed
                     midway): the next command finishes it first (`DeviceHome.init`)

Order of writes when signing (each file written atomically and fsynced): the state
(sequence reserved) first, then the queue entry, then the sidecar. A crash can leave
a gap in the sequence, never a reused number, and never a signed claim that is not
queued. A crash between the queue entry and the sidecar leaves a queued claim without its
sidecar: signing the same bytes for the same sidecar path again reuses that claim
(`DeviceHome.sign_file`), so it is not signed and logged twice. A new claim is numbered
past every claim the folder holds as well (`DeviceHome._numbering`: a device.json put
back to an older copy), and no entry is written or moved over another (`_free_name`).

The queue never jams: an entry is the signed claim itself, so it is submitted whether
or not the media file, its folder or its sidecar still exist; an entry the server
refuses for good (`PERMANENT_CODES`), or fails on `MAX_FAILED_ATTEMPTS` times, or that
cannot be read, is moved to ``set_aside/`` with the reason and the rest goes on; a
transient refusal (quota, unknown device, server unreachable) stops the sync with the
entry and everything after it still queued, because the log takes a device's claims in
sequence order and submitting a later claim first would make the earlier one refused
for ever.

A command killed midway can leave temporary files of `atomic_write` and duplicate copies
of an entry; the next command that holds the folder's lock clears them, recovering a
queued claim whose only copy is such a file (`DeviceHome._clean_leftovers`).
"""

from __future__ import annotations

from clients.device.enrollment import EnrollingFolder
from clients.device.export import C2paExport
from clients.device.folder import DeviceFolder
from clients.device.queue import QueueFolder
from clients.device.signing import SigningFolder
from clients.device.sync import SyncingFolder


class DeviceHome(
    EnrollingFolder, SyncingFolder, SigningFolder, QueueFolder, DeviceFolder, C2paExport
):
    """A device's key, state and queue on disk (see module docstring)."""
