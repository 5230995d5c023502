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

from dataclasses import replace
from datetime import UTC, datetime

from clients.api import ProvenanceClient
from clients.device.disk import atomic_write, read_device_file
from clients.device.export import C2paExport
from clients.device.folder import DeviceFolder
from clients.device.queue import QueueFolder
from clients.device.signing import SigningFolder
from clients.device.state import DeviceState
from clients.device.sync import SyncingFolder
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import ConfigError
from provenance.core.registry import certificate_enrollment_proof


class DeviceHome(SyncingFolder, SigningFolder, QueueFolder, DeviceFolder, C2paExport):
    """A device's key, state and queue on disk (see module docstring)."""

    # ---------------------------------------------------------------- enrollment

    def enroll(
        self, client: ProvenanceClient, token: str, passphrase: bytes, certificate_pem: str = ""
    ) -> DeviceState:
        """Enroll this device's key with a one-time token from an operator (or a
        certificate from the server's enrollment authority); keep the X.509 chain the
        server returns, used to export captures with Content Credentials."""
        key = self.load_key(passphrase)
        if token:
            device, chain = client.enroll(
                token,
                key.public_key,
                sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()),
                certificate_pem,
            )
        else:  # bound to this server's log and to now: useless to replay elsewhere
            log_key, _ = client.log_key()
            now = datetime.now(UTC).replace(microsecond=0)
            pop = certificate_enrollment_proof(key, log_key, now)
            device, chain = client.enroll(
                "", key.public_key, pop, certificate_pem, log_key=log_key, signed_at=now
            )
        if device.device_id != key.key_id:
            raise ConfigError("the server enrolled a different key id than this device's")
        if token:
            log_key, _ = client.log_key()
        if chain:
            atomic_write(self.cert_path, chain.encode())
        state = replace(self.state(), server=client.address, log_key=log_key)
        self.save_state(state)
        return state

    def certificate(self) -> bytes:
        """The device's X.509 chain (PEM); ConfigError when it has none."""
        try:
            return read_device_file(self.cert_path)
        except FileNotFoundError as e:
            authority = "a server that runs an enrollment authority (`prov serve --ca DIR`)"
            if self._enrolled():
                raise ConfigError(
                    "this device has no certificate: it enrolled where no enrollment authority"
                    " ran, and a key enrolls once; for C2PA exports make a new key"
                    " (`prov device init --home NEW_FOLDER`, or --force to replace this one)"
                    f" and enroll it with {authority}"
                ) from e
            raise ConfigError(f"this device has no certificate: enroll with {authority}") from e

    def _enrolled(self) -> bool:
        """Whether the device's state names the server it enrolled with (False when the
        state cannot be read: the caller's error is about the certificate)."""
        try:
            return bool(self.state().server)
        except (ConfigError, OSError):
            return False
