"""A file whose bytes many logged claims bind costs a bounded verification: the store
reads at most `MAX_EXACT_CLAIMS` (+1, to know there are more) claims per file hash, the
first by log index, and only those are checked; the report says so. Real `prov serve`
on SQLite and PostgreSQL, real device keys, real signed claims over gRPC, the real
sample photo; and the store's bounded read itself on every backend."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clients.api import ProvenanceClient, Query
from provenance.core.claims import Device, SignedClaim, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM
from provenance.core.keys import DeviceKey
from provenance.core.verify import EXACT_BOUND_NOTE, MAX_EXACT_CLAIMS, VerificationReport
from provenance.store import NewLeaf, Store
from provenance.store.memory import MemoryStore
from provenance.store.sqlite import SqliteStore
from tests.conftest import ADMIN_TOKEN, SAMPLES, enroll_key, signed_claim, start_server

NOW = datetime(2026, 12, 2, tzinfo=UTC)


class _Signer:
    """A device key and its next sequence number and previous claim hash."""

    def __init__(self, key: DeviceKey) -> None:
        self.key, self.seq, self.prev = key, 1, b""

    def submit(self, c: ProvenanceClient, sha: bytes) -> tuple[SignedClaim, int]:
        """Log a claim of ``sha``; the claim and its log index."""
        signed = signed_claim(self.key, self.seq, sha, self.prev)
        receipt, _ = c.submit(signed)
        self.seq, self.prev = self.seq + 1, signed.claim_hash
        return signed, receipt.leaf_index


def _lookup(c: ProvenanceClient, sha: bytes) -> VerificationReport:
    [(_, report)] = c.lookup([Query("f", sha)])
    return report


def _rests_on(report: VerificationReport) -> int:
    claim = report.evidence.claim
    assert claim is not None and claim.receipt is not None
    return claim.receipt.leaf_index


def test_many_claims_of_one_file_verify_within_the_bound(any_db: Path | str) -> None:
    photo = (SAMPLES / "rocket.jpg").read_bytes()
    x = hashlib.sha256(photo).digest()  # the photo: the flood comes first, then honest
    y = os.urandom(32)  # honest first, then the flood
    z = os.urandom(32)  # exactly the bound of claims: no note
    srv = start_server(any_db)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            honest, flooder = _Signer(enroll_key(c)), _Signer(enroll_key(c))
            _, y_first = honest.submit(c, y)
            x_flood = [flooder.submit(c, x)[1] for _ in range(MAX_EXACT_CLAIMS + 1)]
            y_flood = [flooder.submit(c, y)[1] for _ in range(MAX_EXACT_CLAIMS)]
            for _ in range(MAX_EXACT_CLAIMS):
                flooder.submit(c, z)
            x_honest, x_at = honest.submit(c, x)
            c.revoke(flooder.key.key_id, "flooding", datetime.now(UTC) - timedelta(hours=1))

            # honest claim first: it is examined and decides, whatever follows it
            report = _lookup(c, y)
            assert report.status is Verdict.SIGNED_ORIGINAL
            assert _rests_on(report) == y_first
            assert EXACT_BOUND_NOTE in report.reasons
            others = [o.receipt.leaf_index for o in report.evidence.other_claims if o.receipt]
            assert others == y_flood[:16]

            # exactly the bound: all examined, no note
            report = _lookup(c, z)
            assert report.status is Verdict.REVOKED_KEY
            assert EXACT_BOUND_NOTE not in report.reasons

            # the honest claim past the bound is not examined by a lookup (the note says
            # so); the first claims by log index are, and decide
            report = _lookup(c, x)
            assert report.status is Verdict.REVOKED_KEY
            assert _rests_on(report) == x_flood[0]
            assert EXACT_BOUND_NOTE in report.reasons

            # ... but its sidecar brings it in: the best-standing claim decides
            report = c.verify_file(SAMPLES / "rocket.jpg", sidecar=x_honest)
            assert report.status is Verdict.SIGNED_ORIGINAL, report.reasons
            assert _rests_on(report) == x_at
            assert EXACT_BOUND_NOTE in report.reasons
            assert not any("describes another claim" in r for r in report.reasons)
    finally:
        srv.stop()


DEVICE = b"\xd2" * 32
KEY = os.urandom(8)  # the hashes below share their first 8 bytes (one index key)
FILE_A, FILE_B = (KEY + bytes([b]) * 24 for b in (1, 2))


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return SqliteStore(tmp_path / "prov.db")
    if request.param == "memory":
        return MemoryStore()
    from provenance.store.postgres import PostgresStore

    return PostgresStore(request.getfixturevalue("pg_url"))


def test_the_bounded_read_takes_the_first_leaves_by_index(store: Store) -> None:
    files = [FILE_A, FILE_B, FILE_A, FILE_A, os.urandom(32), FILE_B, FILE_A, FILE_A]
    leaves = [
        NewLeaf(
            os.urandom(32),
            SignedClaim(PAYLOAD_TYPE_CLAIM, os.urandom(40), DEVICE, os.urandom(64)),
            DEVICE,
            seq,
            f,
            NOW,
            False,
            b"entry",
            (),
        )
        for seq, f in enumerate(files, 1)
    ]
    try:
        store.enroll(None, Device(DEVICE, b"\x02" * 32, NOW), NOW)
        with store.append() as txn:  # two appends: rows not written in one go
            txn.insert_leaves(0, leaves[:4])
        with store.append() as txn:
            txn.insert_leaves(4, leaves[4:])

        def indexes(sha: bytes, limit: int | None) -> list[int]:
            return [r.index for r in store.leaves_by_file_sha256(sha, limit)]

        assert indexes(FILE_A, None) == [0, 2, 3, 6, 7]
        assert indexes(FILE_A, 3) == [0, 2, 3]
        assert indexes(FILE_A, 1) == [0]
        assert indexes(FILE_B, 3) == [1, 5]
        assert indexes(KEY + b"\x03" * 24, 3) == []
        many = store.leaves_by_file_sha256_many([FILE_B, FILE_A, KEY + b"\x03" * 24], 2)
        assert {h: [r.index for r in recs] for h, recs in many.items()} == {
            FILE_A: [0, 2],
            FILE_B: [1, 5],
        }
        unbounded = store.leaves_by_file_sha256_many([FILE_A, FILE_B])
        assert [r.index for r in unbounded[FILE_A]] == [0, 2, 3, 6, 7]
    finally:
        store.close()
