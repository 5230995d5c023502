"""The store interface on every backend (SQLite, PostgreSQL, in-memory), through the
real service in-process: registry, appends, reads, verdicts, restart and the start-up
check; two services over one PostgreSQL database; database failures as StorageError."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from provenance import wire
from provenance.binding import PerceptualHash
from provenance.claims import Claim, HardBinding, SignedClaim, Verdict
from provenance.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.errors import LogIntegrityError, SequenceError, StorageError
from provenance.keys import DeviceKey
from provenance.log import merkle
from provenance.log.checkpoint import open_checkpoint
from provenance.service import ProvenanceService, ServiceConfig
from provenance.startup import MARK_KEY
from provenance.verify import FileFacts


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "sqlite":
        return tmp_path / "prov.db"
    if request.param == "memory":
        return ":memory:"
    return str(request.getfixturevalue("pg_url"))


def _service(db: Path | str, tmp_path: Path, **kw: object) -> ProvenanceService:
    return ProvenanceService(ServiceConfig(db=db, log_key=tmp_path / "log.pem", **kw))  # type: ignore[arg-type]


def _enroll(s: ProvenanceService) -> DeviceKey:
    key = DeviceKey.generate()
    token, _ = s.create_enrollment_token()
    s.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    return key


def _claim(key: DeviceKey, seq: int, pdq: bytes | None = None) -> SignedClaim:
    soft = (PerceptualHash("pdq", pdq, 100),) if pdq is not None else ()
    claim = Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=datetime.now(UTC),
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(sha256=os.urandom(32)),
        soft_bindings=soft,
    )
    data = wire.encode_claim(claim)
    return SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )


def _near(pdq: bytes, bits: int) -> bytes:
    """``pdq`` with its first ``bits`` bits flipped."""
    out = bytearray(pdq)
    for i in range(bits):
        out[i // 8] ^= 0x80 >> (i % 8)
    return bytes(out)


def _verdict(s: ProvenanceService, signed: SignedClaim, pdq: bytes | None = None) -> Verdict:
    claim = wire.decode_claim(signed.claim_bytes)
    sha = claim.hard_binding.sha256 if pdq is None else os.urandom(32)
    soft = (PerceptualHash("pdq", pdq, 100),) if pdq is not None else ()
    return s.verify(FileFacts(sha, 10, "image/jpeg", soft_bindings=soft)).status


def test_service_on_every_backend(db: Path | str, tmp_path: Path) -> None:
    s = _service(db, tmp_path)
    try:
        key = _enroll(s)
        pdq = os.urandom(32)
        claims = [_claim(key, i + 1, pdq if i == 0 else None) for i in range(5)]
        receipts = [s.submit(c).receipt for c in claims]
        assert [r.leaf_index for r in receipts] == [1, 2, 3, 4, 5]  # 0: the enrollment
        assert s.submit(claims[2]).duplicate
        with pytest.raises(SequenceError):
            s.submit(_claim(key, 3))
        cp = open_checkpoint(s.latest_checkpoint(), s.verifier)
        assert cp.size == s.store.tree_size() == 6
        for r in receipts:
            idx, size, proof, lh = s.inclusion_proof(0, index=r.leaf_index)
            merkle.verify_inclusion(idx, size, lh, proof, cp.root_hash)
        entries, nxt = s.entries(2, 2)
        assert nxt == 4 and [merkle.leaf_hash(e) for e in entries] == [
            merkle.leaf_hash(r.log_entry) for r in receipts[1:3]
        ]
        assert _verdict(s, claims[1]) is Verdict.SIGNED_ORIGINAL
        assert _verdict(s, claims[0], _near(pdq, 6)) is Verdict.DERIVED
        assert _verdict(s, claims[0], _near(pdq, 100)) is Verdict.UNSIGNED
        assert s.advance_verified_mark() == 6
        s.submit(_claim(key, 6))  # after the mark: re-hashed at the next start
        dev = s.revoke(key.key_id, "lost", None)
        assert dev.revoked and s.get_device(key.key_id).revocation_reason == "lost"
    finally:
        s.close()
    if db == ":memory:":
        return
    again = _service(db, tmp_path)  # restart: re-hashes only what came after the mark
    try:
        # the claim and the revocation came after the mark
        assert again.startup.size == 8 and again.startup.rehashed_from == 6
        assert _verdict(again, claims[0], _near(pdq, 6)) is Verdict.DERIVED
        mark = again.store.get_meta(MARK_KEY)
        assert mark is not None
        again.store.set_meta(MARK_KEY, mark[:-6] + "AAAA=\n")  # a forged mark
    finally:
        again.close()
    with pytest.raises(LogIntegrityError, match="verified mark does not verify"):
        _service(db, tmp_path)
    full = _service(db, tmp_path, full_check=True)  # the full re-hash replaces it
    try:
        assert full.startup.rehashed_from == 0
    finally:
        full.close()
    last = _service(db, tmp_path)
    assert last.startup.rehashed_from == 8
    last.close()


def test_two_services_share_one_postgresql_log(pg_url: str, tmp_path: Path) -> None:
    a = _service(pg_url, tmp_path)
    b = _service(pg_url, tmp_path)
    try:
        keys = [_enroll(a) for _ in range(4)]
        pdq = os.urandom(32)
        first = _claim(keys[0], 1, pdq)
        a.submit(first)
        deadline = time.monotonic() + 1.0
        while _verdict(b, first, _near(pdq, 5)) is not Verdict.DERIVED:
            assert time.monotonic() < deadline, "server B did not see A's capture within 1 s"
            time.sleep(0.05)
        assert _verdict(b, first) is Verdict.SIGNED_ORIGINAL
        got: list[int] = []
        lock = threading.Lock()

        def burst(k: DeviceKey, seq0: int) -> None:
            for i in range(20):
                s = (a, b)[i % 2]
                r = s.submit(_claim(k, seq0 + i)).receipt
                with lock:
                    got.append(r.leaf_index)

        threads = [threading.Thread(target=burst, args=(k, 2 if k is keys[0] else 1)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(got) == list(range(5, 85))  # after 4 enrollments and the first claim
        cp = open_checkpoint(b.latest_checkpoint(), b.verifier)
        assert cp.size == 85
        assert merkle.root(85, a.store.get_nodes) == cp.root_hash
    finally:
        a.close()
        b.close()


def test_unreachable_postgresql_is_a_storage_error() -> None:
    from provenance.store.postgres import PostgresStore

    with pytest.raises(StorageError, match=r"cannot connect to .*nobody:\*\*\*@.*refused"):
        PostgresStore("postgresql://nobody:secret@127.0.0.1:9/none", connect_timeout_s=1)


def test_a_log_cut_back_behind_the_verified_mark_is_refused(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "prov.db"
    s = _service(db, tmp_path)
    key = _enroll(s)
    for i in range(4):
        s.submit(_claim(key, i + 1))
    assert s.advance_verified_mark() == 5  # the enrollment and 4 claims
    s.close()
    with sqlite3.connect(db) as c:  # the newest leaf and its checkpoint vanish together
        c.execute("DELETE FROM leaves WHERE idx=4")
        c.execute("DELETE FROM checkpoints WHERE size=5")
    with pytest.raises(LogIntegrityError, match="rolled back"):
        _service(db, tmp_path)
