"""The store interface on every backend (SQLite, PostgreSQL, in-memory), through the
real service in-process: registry, appends, reads, verdicts, restart and the start-up
check; two services over one PostgreSQL database; database failures as StorageError."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from provenance.c2pa.authority import init_authority, issue_device_certificate
from provenance.core import merkle
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, HardBinding, Receipt, SignedClaim, Verdict
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import (
    ClaimError,
    EnrollmentError,
    LogIntegrityError,
    SequenceError,
    StorageError,
)
from provenance.core.keys import DeviceKey
from provenance.core.registry import certificate_enrollment_proof
from provenance.core.verify import FileFacts
from provenance.log.checkpoint import open_checkpoint
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.startup import MARK_KEY
from provenance.wire import convert as wire


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    if request.param == "sqlite":
        return tmp_path / "prov.db"
    if request.param == "memory":
        return ":memory:"
    return str(request.getfixturevalue("pg_url"))


def _service(db: Path | str, tmp_path: Path, **kw: Any) -> ProvenanceService:
    return ProvenanceService(ServiceConfig(db=db, log_key=tmp_path / "log.pem", **kw))


def _enroll(s: ProvenanceService) -> DeviceKey:
    key = DeviceKey.generate()
    token, _ = s.create_enrollment_token()
    s.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    return key


def _claim(key: DeviceKey, seq: int, pdq: bytes | None = None) -> SignedClaim:
    soft = (PerceptualHash("pdq", pdq if pdq is not None else bytes(32), 100 if pdq else 0),)
    claim = Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=datetime.now(UTC),
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(sha256=os.urandom(32)),
        soft_bindings=soft,
        width=4,
        height=3,
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


def test_text_with_a_nul_is_refused_alike_on_every_backend(db: Path | str, tmp_path: Path) -> None:
    """A token label or a revocation reason holding a NUL character (U+0000) is a
    ClaimError (INVALID_ARGUMENT) naming the field on every backend, and nothing is
    changed: PostgreSQL's text cannot hold one, and its refusal was a LogIntegrityError
    (DATA_LOSS "the log database is damaged"; a revocation's failed its whole group
    commit, which the writer then retried one by one), while SQLite kept the NUL."""
    s = _service(db, tmp_path)
    try:
        with pytest.raises(
            ClaimError, match=r"enrollment token's label holds a control character \(U\+0000\)"
        ):
            s.create_enrollment_token(label="night\x00shift")
        key = _enroll(s)
        s.submit(_claim(key, 1))
        # refused for its control character before the store (all of them)
        with pytest.raises(
            ClaimError, match=r"revocation reason holds a control character \(U\+0000\)"
        ):
            s.revoke(key.key_id, "lost\x00", None)
        assert not s.get_device(key.key_id).revoked
        assert s.submit(_claim(key, 2)).receipt.leaf_index == 2  # nothing else logged
    finally:
        s.close()


def _answered_once(s: ProvenanceService, enroll: Callable[[], tuple[Any, str]]) -> tuple[Any, str]:
    """``enroll`` called 4 times at once (one writer batch, mostly) and once after: the
    answer, the same to all 5, and one log entry appended."""
    size = s.store.tree_size()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: enroll(), range(4)))
    answers.append(enroll())
    assert answers == [answers[0]] * 5, answers
    assert s.store.tree_size() == size + 1
    return answers[0]


def _refused_once_revoked(
    s: ProvenanceService, key_id: bytes, enroll: Callable[[], tuple[Any, str]]
) -> None:
    """After the key's revocation, ``enroll`` is refused, naming it."""
    s.revoke(key_id, "lost", None)
    with pytest.raises(EnrollmentError, match="revoked at"):
        enroll()


def test_a_certificate_enrollment_replayed_is_answered_once_on_every_backend(
    db: Path | str, tmp_path: Path
) -> None:
    """The service with an enrollment authority: the same certificate enrollment sent
    again (in one writer batch and after it) gets the first answer and logs one entry;
    after a revocation it is refused, naming it (`registry.answer_enrollment_again`, the
    store's AlreadyEnrolledError carrying the row and its chain on each backend)."""
    now = datetime.now(UTC).replace(microsecond=0)
    authority = init_authority(tmp_path / "ca", now=now)
    s = _service(db, tmp_path, authority=authority)
    try:
        key = DeviceKey.generate()
        chain = issue_device_certificate(authority, key.public_key, key.key_id.hex(), now=now)
        log_key = s.signer.verifier_key()
        proof = certificate_enrollment_proof(key, log_key, now)

        def enroll() -> tuple[Any, str]:
            got, pem = s.enroll("", key.public_key, proof, chain.decode(), log_key, now)
            return got.device, pem

        assert _answered_once(s, enroll)[1] == chain.decode()
        _refused_once_revoked(s, key.key_id, enroll)
    finally:
        s.close()


def test_a_token_enrollment_retried_is_answered_once_on_every_backend(
    db: Path | str, tmp_path: Path
) -> None:
    """The service with an enrollment authority: a token enrollment sent again with the
    same key and token (in one writer batch and after it: the device's retry after a
    lost answer) gets the device and the chain stored with it and logs one entry; the
    token with another key, or a key already enrolled with a new token, is refused as
    before; after the key's revocation the retry is refused, naming it (the store's
    AlreadyEnrolledError.token_spent_on_it on each backend)."""
    now = datetime.now(UTC).replace(microsecond=0)
    s = _service(db, tmp_path, authority=init_authority(tmp_path / "ca", now=now))
    try:
        key = DeviceKey.generate()
        token, _ = s.create_enrollment_token(label="desk")
        proof = sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())

        def enroll() -> tuple[Any, str]:
            got, pem = s.enroll(token, key.public_key, proof)
            return got.device, pem

        device, chain = _answered_once(s, enroll)
        assert device.label == "desk"
        assert chain == s.store.device_certificate(key.key_id) != ""
        size = s.store.tree_size()
        other = DeviceKey.generate()
        with pytest.raises(EnrollmentError, match="already used"):
            s.enroll(
                token, other.public_key, sign_payload(other, PAYLOAD_TYPE_ENROLL, token.encode())
            )
        fresh, _ = s.create_enrollment_token()
        with pytest.raises(EnrollmentError, match="is already enrolled"):
            s.enroll(fresh, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, fresh.encode()))
        assert s.store.tree_size() == size
        _refused_once_revoked(s, key.key_id, enroll)
    finally:
        s.close()


def _edit_row(db: Path | str, sql: str, *values: Any) -> None:
    """Run ``sql`` (``?`` placeholders) on the database behind the service's back."""
    if isinstance(db, Path):
        with sqlite3.connect(db) as con:
            con.execute(sql, values)
        con.close()
        return
    import psycopg

    with psycopg.connect(db, autocommit=True) as pg:
        pg.execute(sql.replace("?", "%s"), values)


def test_a_revoked_key_enrolling_with_a_new_token_is_told_of_its_revocation(
    any_db: Path | str, tmp_path: Path
) -> None:
    """A key enrolled, then revoked, offered with a fresh token is refused naming its
    revocation (the store's AlreadyEnrolledError, `registry.enrolled_already`), on each
    backend; also when the registry row's revocation was deleted behind the log's back,
    the log's revocation counting as it does for a verdict. Nothing is logged."""
    s = _service(any_db, tmp_path)
    try:
        key = _enroll(s)
        s.revoke(key.key_id, "lost", None)
        size = s.store.tree_size()

        def fresh() -> None:
            token, _ = s.create_enrollment_token()
            s.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))

        told = "its key revoked at .*: a revoked key cannot enroll again; enroll a new key"
        with pytest.raises(EnrollmentError, match=told):
            fresh()
        _edit_row(
            any_db,
            "UPDATE devices SET revoked_at=NULL, revocation_reason='' WHERE device_id=?",
            key.key_id,
        )
        assert s.get_device(key.key_id).revoked_at is None  # the edit is in the table
        with pytest.raises(EnrollmentError, match=told):
            fresh()
        assert s.store.tree_size() == size
    finally:
        s.close()


def test_two_services_share_one_postgresql_log(pg_url: str, tmp_path: Path) -> None:
    a = _service(pg_url, tmp_path)
    b = _service(pg_url, tmp_path, follow_interval_s=0.05)
    # B's rounds of following the log (its upkeep thread's, every follow_interval_s),
    # counted as they end: a count, not seconds, says when A's capture is due at B
    rounds = [0]
    follow = b._follow

    def counted(size: int) -> None:
        follow(size)
        rounds[0] += 1

    b._follow = counted  # type: ignore[method-assign]  # counts, then does the same
    try:
        keys = [_enroll(a) for _ in range(4)]
        pdq = os.urandom(32)
        first = _claim(keys[0], 1, pdq)
        a.submit(first)
        # the second round to end from now began after the submission: it read it
        due = rounds[0] + 2
        give_up = time.monotonic() + 60  # a hang guard only
        while rounds[0] < due:
            assert time.monotonic() < give_up, f"server B's follower stopped ({rounds[0]})"
            time.sleep(0.05)
        assert _verdict(b, first, _near(pdq, 5)) is Verdict.DERIVED
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


def test_receipts_are_rebuilt_as_issued(db: Path | str, tmp_path: Path) -> None:
    """Receipts are not stored: the one rebuilt from the store (first covering checkpoint,
    inclusion proof from the nodes) is the one the writer issued, byte for byte, across
    concurrent batches; a replay gets it too."""
    s = _service(db, tmp_path)
    try:
        keys = [_enroll(s) for _ in range(4)]
        issued: dict[bytes, tuple[SignedClaim, Receipt]] = {}
        lock = threading.Lock()

        def burst(k: DeviceKey) -> None:
            for i in range(12):
                c = _claim(k, i + 1)
                r = s.submit(c).receipt
                with lock:
                    issued[c.claim_hash] = (c, r)

        threads = [threading.Thread(target=burst, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sizes = {open_checkpoint(r.checkpoint, s.verifier).size for _, r in issued.values()}
        assert len(sizes) > 1  # several batches, several checkpoints
        for ch, (c, r) in issued.items():
            assert s.receipt_for_claim(ch) == r
            again = s.submit(c)
            assert again.duplicate and again.receipt == r
            assert wire.encode_receipt(again.receipt) == wire.encode_receipt(r)
    finally:
        s.close()


def _copy_to_old_layout(src: Path, target: Path | str, receipts: dict[int, bytes]) -> None:
    """The log in ``src`` rewritten in the layout before receipts were rebuilt (SQLite
    schema 2, PostgreSQL schema 1: every leaf with its receipt stored whole)."""
    import sqlite3

    tables = ["meta", "devices", "enrollment_tokens", "soft_hashes", "nodes", "checkpoints"]
    with sqlite3.connect(src) as c:
        rows = {t: c.execute(f"SELECT * FROM {t}").fetchall() for t in tables}
        cols = {t: [r[1] for r in c.execute(f"PRAGMA table_info({t})")] for t in tables}
        leaves = c.execute(
            "SELECT idx, leaf_hash, claim_hash, device_id, sequence, file_sha256,"
            " integrated_at, chain_linked, entry FROM leaves"
        ).fetchall()
    inserts = [
        (
            f"INSERT INTO {t}({', '.join(cols[t])}) VALUES ({', '.join('?' for _ in cols[t])})",
            rows[t],
        )
        for t in tables
        if rows[t]
    ]
    inserts.append(
        (
            f"INSERT INTO leaves VALUES ({', '.join('?' for _ in range(10))})",
            [(*r, receipts[r[0]]) for r in leaves],
        )
    )
    if isinstance(target, Path):
        from provenance.store.sqlite import _MIGRATIONS

        con = sqlite3.connect(target)
        con.executescript(_MIGRATIONS[1] + ";" + _MIGRATIONS[2] + "; PRAGMA user_version = 2;")
        for sql, values in inserts:
            con.executemany(sql, values)
        con.commit()
        con.close()
    else:
        import psycopg

        from provenance.store.postgres import _MIGRATIONS as PG

        with psycopg.connect(target, autocommit=True) as pg:
            pg.execute(PG[1])
            pg.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            pg.execute("INSERT INTO schema_version VALUES (1)")
            for sql, values in inserts:
                pg.cursor().executemany(sql.replace("?", "%s"), values)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_with_stored_receipts_migrates(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A database from before (every receipt stored whole) opens: the migration drops the
    stored receipts, and the rebuilt ones equal them."""
    src = tmp_path / "new.db"
    s = _service(src, tmp_path)
    key = _enroll(s)
    pdq = os.urandom(32)
    claims = [_claim(key, i + 1, pdq if i == 0 else None) for i in range(6)]
    issued = [s.submit(c).receipt for c in claims]
    enrolled = s.store.leaf_by_index(0)  # the enrollment: a leaf with a receipt too
    assert enrolled is not None
    stored = {0: wire.encode_receipt(s._receipt(enrolled))}
    s.close()
    old: Path | str = (
        tmp_path / "old.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    )
    stored |= {r.leaf_index: wire.encode_receipt(r) for r in issued}
    _copy_to_old_layout(src, old, stored)
    m = _service(old, tmp_path)
    try:
        assert m.startup.size == 7
        for c, r in zip(claims, issued, strict=True):
            assert m.receipt_for_claim(c.claim_hash) == r
        assert _verdict(m, claims[3]) is Verdict.SIGNED_ORIGINAL
        assert _verdict(m, claims[0], _near(pdq, 6)) is Verdict.DERIVED
        assert m.submit(_claim(key, 7)).receipt.leaf_index == 7
    finally:
        m.close()


def test_the_near_duplicate_index_starts_from_stored_packs(
    db: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start reads the full packs and only the rows after them; the first start of a
    log without packs stores them; an unsound pack is not used (rows instead): every
    capture is found either way."""
    from provenance.index import packs as index_packs

    monkeypatch.setattr(index_packs, "PACK_LEAVES", 4)
    s = _service(db, tmp_path)
    key = _enroll(s)
    pdqs = [os.urandom(32) for _ in range(10)]
    claims = [_claim(key, i + 1, pdqs[i] if i != 5 else None) for i in range(10)]
    for c in claims:
        s.submit(c)
    if db == ":memory:":
        s._load_index()  # what a restart does, on the same (volatile) store
        assert s._packed == 8 and [p.first for p in s.store.stored_packs(0)] == [0, 4]
        assert _verdict(s, claims[9], _near(pdqs[9], 6)) is Verdict.DERIVED
        s.close()
        return
    s.close()
    for expect_packed in (8, 8):  # the first restart writes the packs, the second reads them
        again = _service(db, tmp_path)
        try:
            assert again._packed == expect_packed and len(again.pdq) == 9
            loaded = index_packs.load_index(again.store, 11)  # leaf 0: the enrollment
            ids = [int(i) for p in loaded.parts for i in p.ids]
            assert loaded.packed == 8 and ids == [1, 2, 3, 4, 5, 7, 8, 9, 10]
            for i in (0, 4, 9):
                assert _verdict(again, claims[i], _near(pdqs[i], 6)) is Verdict.DERIVED
        finally:
            again.close()
    if isinstance(db, Path):  # a pack edited out of shape: not used, rows read instead
        import sqlite3

        with sqlite3.connect(db) as con:
            con.execute("UPDATE index_packs SET ids=? WHERE first=4", (b"\x00" * 8,))
        odd = _service(db, tmp_path)
        try:
            assert odd._packed == 8  # read row by row, then stored again
            assert _verdict(odd, claims[6], _near(pdqs[6], 6)) is Verdict.DERIVED
            assert index_packs.load_index(odd.store, 10).packed == 8
        finally:
            odd.close()


def test_quota_counters_add_up_across_services_and_expire(db: Path | str, tmp_path: Path) -> None:
    """Per-device quota counters (`DeviceQuota`'s shared state): two services on one
    store add to the same minute's count; counters before ``keep_from`` are dropped."""
    a = _service(db, tmp_path)
    shared = isinstance(db, str) and db != ":memory:"  # PostgreSQL: two servers
    b = _service(db, tmp_path) if shared else a
    try:
        dev, other = b"d" * 32, b"o" * 32
        a.store.add_quota_usage(100, [(dev, 2, 300)], keep_from=99)
        b.store.add_quota_usage(100, [(dev, 1, 50), (other, 1, 1)], keep_from=99)
        b.store.add_quota_usage(101, [(dev, 1, 10)], keep_from=100)
        assert a.store.quota_usage(dev, [100, 101]) == [(3, 350), (1, 10)]
        a.store.add_quota_usage(102, [], keep_from=101)
        assert b.store.quota_usage(dev, [100, 101]) == [(0, 0), (1, 10)]
        assert a.store.quota_usage(other, [100]) == [(0, 0)]
    finally:
        a.close()
        if b is not a:
            b.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_edited_index_column_is_refused_at_start(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The start-up check compares the raw entry fields with every indexed column: an edit
    of any of them (or a value of the wrong type) is refused, and the log starts again once
    the row is put back."""
    db: Path | str = (
        tmp_path / "prov.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    )
    s = _service(db, tmp_path)
    key = _enroll(s)
    for i in range(3):
        s.submit(_claim(key, i + 1))
    s.close()
    edits: list[tuple[str, object]] = [
        ("claim_hash", b"\x01" * 32),
        ("device_id", b"\x02" * 32),
        ("sequence", 9),
        ("file_sha256", b"\x03" * 32),
        ("integrated_at", 1),
    ]
    if backend == "sqlite":
        edits.append(("device_id", "text, not bytes"))

    def run(sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        """Runs one statement on the log's database; returns its first row (None if none)."""
        if backend == "sqlite":
            import sqlite3

            with sqlite3.connect(db) as c:
                row: tuple[object, ...] | None = c.execute(sql, args).fetchone()
                return row
        import psycopg

        with psycopg.connect(str(db), autocommit=True) as pg:
            done = pg.execute(sql.replace("?", "%s"), args)
            return done.fetchone() if "SELECT" in sql else None

    for column, value in edits:
        row = run(f"SELECT {column} FROM leaves WHERE idx=1", ())
        assert row is not None
        (old,) = row
        run(f"UPDATE leaves SET {column}=? WHERE idx=1", (value,))
        # re-hashed only from the verified mark: check from 0 as a restart after a crash does
        with pytest.raises(LogIntegrityError, match="index columns|damaged"):
            _service(db, tmp_path, full_check=True)
        run(f"UPDATE leaves SET {column}=? WHERE idx=1", (old,))
    _service(db, tmp_path, full_check=True).close()


def test_leaf_owners_names_each_claim_leafs_device_and_time(db: Path | str, tmp_path: Path) -> None:
    """`Store.leaf_owners`: (index, device, integrated at) of the claim leaves asked for,
    in index order, each once; an index past the log left out (the near-duplicate search
    reads it for just the leaves it hits)."""
    s = _service(db, tmp_path)
    try:
        first, second = _enroll(s), _enroll(s)
        a = s.submit(_claim(first, 1)).receipt.leaf_index
        b = s.submit(_claim(second, 1)).receipt.leaf_index
        got = s.store.leaf_owners([b, a, b, 10_000])
        assert [(i, d) for i, d, _ in got] == [(a, first.key_id), (b, second.key_id)]
        for idx, _, at in got:
            rec = s.store.leaf_by_index(idx)
            assert rec is not None and at == rec.integrated_at
        assert s.store.leaf_owners([]) == []
    finally:
        s.close()
