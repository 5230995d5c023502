"""Enrolling a device key with a server (a one-time token, or a certificate from its
enrollment authority), pinning its log key, and the certificate chain kept for C2PA
exports."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from clients.api import ProvenanceClient
from clients.device.disk import atomic_write, read_device_file
from clients.device.folder import DeviceFolder
from clients.device.state import DeviceState
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import ConfigError
from provenance.core.registry import certificate_enrollment_proof


class EnrollingFolder(DeviceFolder):
    """A device folder that enrolls its key and keeps its certificate."""

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
