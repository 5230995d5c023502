"""Hostile enrollments: a request whose chain is megabytes of PEM is refused from its
size, before a certificate of it is parsed, and one whose token is megabytes from its
length, before its proof is checked. Its proof of possession costs the
sender nothing (any key signs the log's key and the time), so before, anyone could have a
`prov serve --ca` parse a whole 8 MiB chain, 24,767 certificates, about 0.2 s holding
the GIL, only to be told the chain "has 24767 certificates; at most 4" (one client's 16
such calls at once: another client's GetLogKey p99 7 -> 330 ms, max 520 ms). A real
`prov serve --ca`, a real gRPC channel, a chain the server's own authority issued."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import grpc

from clients.api import ProvenanceClient
from clients.device import DeviceHome
from provenance.c2pa.authority import MAX_CHAIN_PEM_BYTES, init_authority
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keys import DeviceKey
from provenance.core.registry import MAX_TOKEN_CHARS, certificate_enrollment_proof
from provenance.v1 import provenance_pb2 as pb
from provenance.wire import convert as wire
from tests.conftest import PASSPHRASE, certified_device, refusal, start_server


def _devices(db: Path) -> int:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(c.execute("SELECT COUNT(*) FROM devices").fetchone()[0])
    finally:
        c.close()


def _refused(address: str, request: pb.EnrollRequest) -> str:
    """The words of the PERMISSION_DENIED the server at ``address`` answers ``request``."""
    return refusal(
        address,
        "/provenance.v1.DeviceRegistry/Enroll",
        request.SerializeToString(),
        grpc.StatusCode.PERMISSION_DENIED,
    )


def test_a_chain_of_megabytes_is_refused_from_its_size_before_it_is_parsed(
    tmp_path: Path,
) -> None:
    init_authority(tmp_path / "ca", now=datetime.now(UTC))
    srv = start_server(tmp_path / "a.db", "--ca", str(tmp_path / "ca"))
    try:
        _, _, chain = certified_device(tmp_path, tmp_path / "ca")
        key = DeviceHome(tmp_path / "dev").load_key(PASSPHRASE.encode())
        # the device's own leaf, issued by this server's authority, again and again
        leaf = chain[: chain.index(b"-----END CERTIFICATE-----") + 26]
        big = leaf * (MAX_CHAIN_PEM_BYTES // len(leaf) + 1)
        with ProvenanceClient(srv.address) as client:
            log_key, _ = client.log_key()
        at = datetime.now(UTC).replace(microsecond=0)
        request = pb.EnrollRequest(
            public_key=key.public_key,
            proof_of_possession=certificate_enrollment_proof(key, log_key, at),
            certificate_chain_pem=big.decode(),
            log_key=log_key,
            signed_at=wire.ts_to_pb(at),
        )
        before = _devices(tmp_path / "a.db")
        said = _refused(srv.address, request)
        assert f"the device certificate chain is {len(big):,} bytes of PEM" in said, said
        assert f"at most {MAX_CHAIN_PEM_BYTES:,}" in said, said
        assert "certificates; at most" not in said, said  # it was never parsed
        assert _devices(tmp_path / "a.db") == before
        # the same key with its chain as issued still enrolls
        with ProvenanceClient(srv.address) as client:
            device, _ = client.enroll(
                "",
                key.public_key,
                certificate_enrollment_proof(key, log_key, at),
                chain.decode(),
                log_key,
                at,
            )
        assert device.device_id == key.key_id
    finally:
        srv.stop()


def test_a_token_of_megabytes_is_refused_from_its_length_before_its_proof_is_checked(
    tmp_path: Path,
) -> None:
    """A one-time token is 43 characters (`registry.new_token`); the proof of
    possession signs it, so a sender with any key could make the server hash and verify
    a megabyte string and then look its hash up: 120 ms of server CPU for an 8 MB token
    against 2 ms for a real one, measured 6 December (h-attack51), answered "unknown
    enrollment token"."""
    srv = start_server(tmp_path / "a.db")
    try:
        key = DeviceKey.generate()
        token = "A" * (1 << 20)
        request = pb.EnrollRequest(
            token=token,
            public_key=key.public_key,
            proof_of_possession=sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()),
        )
        said = _refused(srv.address, request)
        assert f"this enrollment token is {len(token):,} characters" in said, said
        assert f"at most {MAX_TOKEN_CHARS}" in said, said
    finally:
        srv.stop()
