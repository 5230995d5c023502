"""An in-process harness: `ProvenanceService` on a temporary SQLite store, called directly
(no gRPC, no subprocess), with real Ed25519 keys, real claims and a settable clock.

Each test gets a fresh service in ``tmp_path`` in a few tens of milliseconds; the
subprocess tests in the other files keep covering the wire and the CLI.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from clients.device import measure
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding, SignedClaim
from provenance.core.claims import Device as Registered
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.writer import Appended
from provenance.wire import convert as wire

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    """A clock the test moves by hand (UTC)."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


def sign(key: DeviceKey, claim: Claim, payload_type: str = PAYLOAD_TYPE_CLAIM) -> SignedClaim:
    """``claim`` serialized once and signed with ``key`` under ``payload_type``."""
    data = wire.encode_claim(claim)
    return SignedClaim(payload_type, data, key.key_id, sign_payload(key, payload_type, data))


#: The PDQ hash of a picture of one colour (quality 0: the near-duplicate index skips it),
#: what a made-up image claim carries as its soft binding (DESIGN.md: a claim of an image
#: states one; `provenance.core.claim_bounds.missing_fields`).
FLAT_PDQ = PerceptualHash("pdq", bytes(32), 0)


def make_claim(key: DeviceKey, seq: int, **fields: Any) -> Claim:
    """A claim by ``key`` with sequence ``seq`` for a made-up 10-byte 4x3 JPEG (random
    SHA-256 unless ``hard_binding`` is given; the PDQ hash of a flat picture, `FLAT_PDQ`);
    any field can be overridden."""
    base = Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=T0,
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(os.urandom(32)),
        soft_bindings=(FLAT_PDQ,),
        width=4,
        height=3,
    )
    return replace(base, **fields)


@dataclass
class Device:
    """An enrolled key and its chain state (last sequence and claim hash)."""

    key: DeviceKey
    seq: int = 0
    last: bytes = b""
    logged: list[SignedClaim] = field(default_factory=list)

    @property
    def device_id(self) -> bytes:
        return self.key.key_id

    def next_claim(self, **fields: Any) -> SignedClaim:
        """The next claim in this device's chain (sequence + 1, prev = last claim hash)."""
        self.seq += 1
        signed = sign(self.key, make_claim(self.key, self.seq, prev_claim_hash=self.last, **fields))
        self.last = signed.claim_hash
        return signed

    def claim_for_file(self, path: Path, metadata: Mapping[str, str] | None = None) -> SignedClaim:
        """The next claim, measured on a real file as `prov sign` measures it."""
        fields, _ = measure(path)
        return self.next_claim(metadata=dict(metadata or {}), **fields)


@dataclass
class InProc:
    """A service on ``tmp_path / "prov.db"`` and its clock."""

    service: ProvenanceService
    clock: Clock
    db: Path

    def enroll(self) -> Device:
        """A fresh device key enrolled with a one-time token."""
        key = DeviceKey.generate()
        token, _ = self.service.create_enrollment_token()
        pop = sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
        self.service.enroll(token, key.public_key, pop)
        return Device(key)

    def submit(self, signed: SignedClaim) -> Appended:
        return self.service.submit(signed)

    def log_file(self, dev: Device, path: Path) -> tuple[SignedClaim, Appended]:
        """Sign ``path`` on ``dev`` and log the claim."""
        signed = dev.claim_for_file(path)
        return signed, self.service.submit(signed)

    def reopen(self) -> None:
        """Close the service and open a new one on the same files (a restart)."""
        self.service.close()
        self.service = ProvenanceService(self.service.config, self.clock)


def open_inproc(tmp_path: Path, clock: Clock | None = None, store: str = "sqlite") -> InProc:
    """A fresh service in ``tmp_path`` (close it with ``.service.close()``) over a SQLite
    file, or with ``store="memory"`` over the in-memory store (lost on close)."""
    clock = clock or Clock()
    db = tmp_path / "prov.db"
    target: Path | str = db if store == "sqlite" else ":memory:"
    cfg = ServiceConfig(db=target, log_key=tmp_path / "log.key")
    return InProc(ProvenanceService(cfg, clock), clock, db)


def device_record(key: DeviceKey, now: datetime, revoked_at: datetime | None = None) -> Registered:
    """The registry record of ``key``, enrolled a day before ``now``, revoked at
    ``revoked_at`` (reason "lost") when given."""
    return Registered(
        key.key_id,
        key.public_key,
        now - timedelta(days=1),
        revoked_at=revoked_at,
        revocation_reason="lost" if revoked_at else "",
    )


def flip_bits(h: PerceptualHash, bits: int) -> PerceptualHash:
    """``h`` with its first ``bits`` bits flipped (a copy ``bits`` bits away)."""
    b = bytearray(h.hash)
    for i in range(bits):
        b[i // 8] ^= 1 << (i % 8)
    return PerceptualHash(h.algorithm, bytes(b), h.quality, h.timestamp_seconds)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
