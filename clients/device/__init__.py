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
    sidecars/index.json
                     each kept sidecar's hard-binding SHA-256 and stat, so `prov sign`
                     finds one for a file's bytes without reading them all
                     (`keptindex.KeptIndex`; checked on each use, rebuilt when damaged)
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
back to an older copy), and no entry is written or moved over another
(`entries._free_name`).

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
queued claim whose only copy is such a file (`leftovers.clean_leftovers`).

Modules, each one job, lowest first (a module imports only those above it; leftovers
names `DeviceFolder` for its types alone):

    disk         the folder's files: bounded read, atomic write, where a sidecar goes
    state        device.json: `DeviceState`, read back checked, written as text
    entries      one queue entry (`QueueEntry`) read back, and the names entries take
    logkey       the log key a device trusts: receipts checked against the pinned key
    measuring    a file's claim fields (`measure`): hard and soft bindings, size, duration
    sidecars     the sidecar already beside a file, and what signing did (`SignedFile`)
    keptindex    the index of the kept sidecars (`KeptIndex`)
    export       C2PA export of a logged capture (`C2paExport.embed_c2pa`)
    leftovers    what a command killed midway left, cleared under the lock
    folder       `DeviceFolder`: the folder's paths, key, state, replacement and lock
    enrollment   `EnrollingFolder`: enrolling the key, the certificate chain kept
    queue        `QueueFolder`: the offline queue, set_aside/ and queuing again
    signing      `SigningFolder.sign_file`: a capture signed, numbered, queued
    sync         `SyncingFolder.sync`: the queue submitted, receipts checked and stored
    home         `DeviceHome`: all of the above in one object, what commands use
"""

# what other modules import, and the types DeviceHome's methods answer (QueueEntry,
# SignedFile, ClaimFields); `_still_the_hashed_bytes`: bench/bench_sign_video.py
from clients.device.disk import (
    MAX_DEVICE_FILE_BYTES,
    SIDECAR_SUFFIX,
    atomic_write,
    default_home,
    read_device_file,
    sidecar_path,
)
from clients.device.entries import (
    MAX_FAILED_ATTEMPTS,
    MAX_QUEUE_ENTRY_BYTES,
    QueueEntry,
    name_sequence,
    read_entries,
    signed_sequence,
)
from clients.device.export import check_embeddable
from clients.device.home import DeviceHome
from clients.device.measuring import ClaimFields, _still_the_hashed_bytes, measure
from clients.device.sidecars import SidecarExistsError, SignedFile
from clients.device.state import SEQUENCE_MARGIN, DeviceState, state_bytes
from clients.device.sync import SyncResult

__all__ = [
    "MAX_DEVICE_FILE_BYTES",
    "MAX_FAILED_ATTEMPTS",
    "MAX_QUEUE_ENTRY_BYTES",
    "SEQUENCE_MARGIN",
    "SIDECAR_SUFFIX",
    "ClaimFields",
    "DeviceHome",
    "DeviceState",
    "QueueEntry",
    "SidecarExistsError",
    "SignedFile",
    "SyncResult",
    "_still_the_hashed_bytes",
    "atomic_write",
    "check_embeddable",
    "default_home",
    "measure",
    "name_sequence",
    "read_device_file",
    "read_entries",
    "sidecar_path",
    "signed_sequence",
    "state_bytes",
]
