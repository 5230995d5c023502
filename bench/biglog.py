"""Big logs for the store benches, built directly in the store in large batches and cached.

`cached_log(leaves)` returns a SQLite log of ``leaves`` leaves as an honest server logs
them, and its log key: first the token enrollments of 1,000 devices with real Ed25519
keys (key-history entries signed by the log key, the admin key of a server started without
``--admin-token``; registry rows and the ``key_events`` index as the writer leaves them),
then realistic captures (an image claim with a PDQ hash, width/height, the device chain
link, signed by its device's key: `prov log audit` verifies every one); a signed
checkpoint every ``PER_CHECKPOINT`` leaves, as group commit leaves them; a verified mark
at the head. The file is kept in
``out/biglog/`` (git-ignored) and reused while the schema and the recipe are unchanged.
The rows go in with batched SQL and no journal, and the secondary indexes are built once
at the end (sorted, from the schema's own definitions), then given room in their pages
as SQLite migration 6 gives a log's (`INDEX_ROOM`): 10^6 leaves take a few minutes,
10^7 about 12 minutes of CPU (41 minutes at ``nice -n 19`` on a loaded 2-core machine;
8.75 GB), measured before the claims were signed. Signing adds one Ed25519 signature a
claim (`envelope.sign_payload`, 22-25 us): 10^5 leaves took 4.9 s of CPU instead of 2.5,
10^6 49.5 s (78 s wall at load average 3-4; docs/performance.md, 7 December). The
server's start-up checks and a full `prov log audit --db` accept the result.

`build_log(store, signer, leaves)` builds the same log in a SQLite or PostgreSQL store.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from provenance.core import merkle
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Claim, Device, HardBinding, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, sign_payload
from provenance.core.keyhistory import KeyEvent, KeyEventKind, KeySigner, sign_key_event
from provenance.core.keys import DeviceKey
from provenance.core.registry import check_claim_signature
from provenance.log.checkpoint import Checkpoint, LogSigner, generate_log_key, load_log_signer
from provenance.server.startup import MARK_KEY, sign_mark
from provenance.store import KEY_HISTORY_META, NewKeyLeaf, to_us
from provenance.store.sql import SqlStore
from provenance.store.sqlite import INDEX_ROOM, SCHEMA_VERSION, SqliteStore
from provenance.wire import convert as wire

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "out" / "biglog"
ORIGIN = "bench.local/log"
#: Leaves per signed checkpoint (a group-commit batch under load).
PER_CHECKPOINT = 64
DEVICES = 1000
#: Bump when the recipe changes, so cached files are rebuilt (3: a device's first claim
#: is stored not chain-linked, as the writer stores it; `prov log audit --db` checks it;
#: 4: real device keys, their enrollments logged first, every claim signed).
RECIPE = 4


class _Template:
    """Real encoded claims and log entries made fast: one claim and entry encoded, then the
    per-capture fields (device, sequence, SHA-256, PDQ hash, previous claim hash,
    signature) written over the marker bytes at their offsets. Sequences start at
    2**14 so their varint is always 3 bytes."""

    SEQ0 = 1 << 14

    def __init__(self, now: datetime) -> None:
        dev, sha, pdq, prev, sig = (bytes([b]) * 32 for b in (0xD1, 0x5A, 0x9D, 0x7E, 0x51))
        claim = Claim(
            dev, self.SEQ0, now, "image/jpeg", 3_000_000, HardBinding(sha),
            (PerceptualHash("pdq", pdq, 100),), 4032, 3024, prev_claim_hash=prev,
        )  # fmt: skip
        cb = wire.encode_claim(claim)
        seq = bytes([0x80, 0x80, 0x01])  # varint(2**14)
        self.claim = cb
        self.at = {
            k: cb.index(v) for k, v in (("dev", dev), ("sha", sha), ("pdq", pdq), ("prev", prev))
        }
        self.at["seq"] = cb.index(seq, self.at["dev"] + 32)
        entry = wire.encode_log_entry(SignedClaim(PAYLOAD_TYPE_CLAIM, cb, dev, sig * 2), now)
        self.entry_bytes = entry
        self.claim_at = entry.index(cb)
        self.key_at = entry.index(dev, self.claim_at + len(cb))
        self.sig_at = entry.index(sig * 2)

    def make(self, dev: bytes, seq: int, sha: bytes, pdq: bytes, prev: bytes) -> bytes:
        """The claim bytes of one capture."""
        c = bytearray(self.claim)
        at = self.at
        c[at["dev"] : at["dev"] + 32] = dev
        c[at["sha"] : at["sha"] + 32] = sha
        c[at["pdq"] : at["pdq"] + 32] = pdq
        c[at["prev"] : at["prev"] + 32] = prev
        c[at["seq"] : at["seq"] + 3] = bytes(
            [0x80 | (seq & 0x7F), 0x80 | ((seq >> 7) & 0x7F), seq >> 14]
        )
        return bytes(c)

    def entry(self, c: bytes, dev: bytes, sig: bytes) -> bytes:
        """The log entry of the claim bytes ``c`` of device ``dev``, signed ``sig``."""
        e = bytearray(self.entry_bytes)
        e[self.claim_at : self.claim_at + len(c)] = c
        e[self.key_at : self.key_at + 32] = dev
        e[self.sig_at : self.sig_at + 64] = sig
        return bytes(e)


def _enroll(
    store: SqlStore, signer: LogSigner, keys: list[DeviceKey], now: datetime
) -> tuple[list[tuple[int, bytes]], list[bytes]]:
    """Enroll ``keys`` with one-time tokens as the writer does: a registry row each, and a
    key-history leaf (leaves 0, 1, ...) signed by the admin key, which is the log key of a
    server started without ``--admin-token``; the key history marked as kept from leaf 0.
    (index, leaf hash) of each leaf, and each device id."""
    admin = KeySigner(signer.public_key, signer.sign_message)
    leaves, devs = [], []
    for i, key in enumerate(keys):
        tok = i.to_bytes(32, "big")
        store.add_token(tok, "", now, now.replace(year=now.year + 1))
        ev = KeyEvent(
            KeyEventKind.ENROLLMENT, key.key_id, now, key.public_key, authorised_by="token"
        )
        signed = sign_key_event(admin, wire.encode_key_event(ev))
        entry = wire.encode_key_event_entry(signed, now)
        leaves.append(NewKeyLeaf(merkle.leaf_hash(entry), signed, ev, now, entry))
        devs.append(store.enroll(tok, Device(key.key_id, key.public_key, now), now).device_id)
    with store.append() as txn:
        txn.insert_key_events(0, leaves)
    store.set_meta(KEY_HISTORY_META, "0")
    return [(i, lf.leaf_hash) for i, lf in enumerate(leaves)], devs


def build_log(
    store: SqlStore, signer: LogSigner, leaves: int, batch: int = 20_000, devices: int = DEVICES
) -> None:
    """Fill the empty database ``store`` with a log of ``leaves`` leaves by batched SQL (the
    rows the writer would write; see module docstring): ``devices`` enrollments (fewer when
    ``leaves`` is smaller), then claims signed by the enrolled keys."""
    rng = random.Random(leaves)
    now = datetime.now(UTC)
    now_us = to_us(now)
    store.set_meta("origin", signer.name)
    store.set_meta("log_verifier_key", signer.verifier_key())
    keys = [DeviceKey.from_private_bytes(rng.randbytes(32)) for _ in range(min(devices, leaves))]
    enrolled, devs = _enroll(store, signer, keys, now)
    key_of = {k.key_id: k for k in keys}
    state = {d: (_Template.SEQ0 - 1, rng.randbytes(32)) for d in devs}
    tpl = _Template(now)
    frontier = merkle.CompactRange()
    nodes: list[merkle.NewNode] = []
    cps: list[tuple[int, str, int]] = []
    for idx, lh in enrolled:
        nodes += frontier.append(lh)
        if (idx + 1) % PER_CHECKPOINT == 0 or idx + 1 == leaves:
            size = idx + 1
            note = signer.sign(Checkpoint(signer.name, size, frontier.root(), now))
            cps.append((size, note, now_us))
    with store.append() as txn:
        txn.put_nodes(nodes)
        txn.c.executemany("INSERT INTO checkpoints(size, note, created_at) VALUES (?,?,?)", cps)
    t0 = time.perf_counter()
    sha256 = hashlib.sha256
    first = len(enrolled)
    for start in range(first, leaves, batch):
        rows, soft, nodes, cps = [], [], [], []
        for idx in range(start, min(leaves, start + batch)):
            dev = devs[rng.randrange(len(devs))]
            seq, prev = state[dev]
            r = rng.randbytes(64)
            cb = tpl.make(dev, seq + 1, r[:32], r[32:64], prev)
            entry = tpl.entry(cb, dev, sign_payload(key_of[dev], PAYLOAD_TYPE_CLAIM, cb))
            ch = sha256(cb).digest()
            state[dev] = (seq + 1, ch)
            lh = sha256(b"\0" + entry).digest()
            # a device's first claim follows sequence 2**14 - 1, not the 0 it enrolled
            # with: not linked, as the writer judges it (`registry.chain_link`)
            linked = int(seq >= _Template.SEQ0)
            rows.append((idx, lh, ch, dev, seq + 1, r[:32], now_us, linked, entry))
            soft.append((idx, "pdq", r[32:64], 100, 0.0))
            nodes += frontier.append(lh)
            if (idx + 1) % PER_CHECKPOINT == 0 or idx + 1 == leaves:
                size = idx + 1
                note = signer.sign(Checkpoint(signer.name, size, frontier.root(), now))
                cps.append((size, note, now_us))
        if start == first:  # the template makes what the real encoder makes
            for row in rows[:3]:
                signed, at = wire.decode_log_entry(row[-1])
                claim = wire.decode_claim(signed.claim_bytes)
                assert at == now and signed.claim_hash == row[2], "template broke"
                assert (claim.device_id, claim.sequence) == (row[3], row[4])
                assert claim.hard_binding.sha256 == row[5]
                check_claim_signature(signed, key_of[claim.device_id].public_key)
        with store.append() as txn:
            c = txn.c
            c.executemany(
                "INSERT INTO leaves(idx, leaf_hash, claim_hash, device_id, sequence,"
                " file_sha256, integrated_at, chain_linked, entry) VALUES (?,?,?,?,?,?,?,?,?)",
                rows,
            )
            c.executemany(
                "INSERT INTO soft_hashes(leaf_idx, algorithm, hash, quality, timestamp_seconds)"
                " VALUES (?,?,?,?,?)",
                soft,
            )
            txn.put_nodes(nodes)
            c.executemany("INSERT INTO checkpoints(size, note, created_at) VALUES (?,?,?)", cps)
            c.executemany(
                "UPDATE devices SET last_sequence=?, last_claim_hash=? WHERE device_id=?",
                [(seq, ch, d) for d, (seq, ch) in state.items() if seq >= _Template.SEQ0],
            )
        done = start + len(rows)
        rate = done / (time.perf_counter() - t0)
        print(
            f"\r  building a log of {leaves:,}: {done:,} ({rate:,.0f}/s)", end="", file=sys.stderr
        )
    print(file=sys.stderr)
    store.set_meta(MARK_KEY, sign_mark(signer, leaves, frontier.root()))


def cached_schema(name: str, leaves: int) -> int | None:
    """The schema of the cached log of ``leaves`` captures named ``name``
    (log-LEAVES-sSCHEMA-rRECIPE.db), or None when ``name`` is not one: the schema in
    ASCII digits only (a bare ``\\d`` also took "٣", which `int` reads as 3)."""
    m = re.fullmatch(rf"log-{leaves}-s([0-9]{{1,9}})-r{RECIPE}\.db", name, re.ASCII)
    return int(m.group(1)) if m else None


def _migrated(leaves: int, db: Path, key: Path) -> bool:
    """Make ``db`` (schema `SCHEMA_VERSION`) from the newest cached log of ``leaves``
    captures under an older schema, if there is one: a copy migrated as `prov serve`
    migrates it (at 10^7 a few minutes instead of the build's 40). The older file stays."""
    older = [
        (schema, p)
        for p in CACHE.glob(f"log-{leaves}-s*-r{RECIPE}.db")
        if (schema := cached_schema(p.name, leaves)) is not None
        and schema < SCHEMA_VERSION
        and p.with_suffix(".logkey.pem").exists()
    ]
    if not older:
        return False
    _, src = max(older)
    tmp = db.with_suffix(".migrating.db")
    print(f"  migrating a copy of {src.name} to schema {SCHEMA_VERSION}", file=sys.stderr)
    shutil.copyfile(src, tmp)
    SqliteStore(tmp).close()  # runs the migrations; the WAL is checkpointed at close
    shutil.copyfile(src.with_suffix(".logkey.pem"), key)
    key.chmod(0o600)  # a log key readable by others is refused
    os.replace(tmp, db)
    return True


def cached_log(leaves: int) -> tuple[Path, Path]:
    """(SQLite file, log key) of a log of ``leaves`` captures, built once and cached (or
    migrated from a cached log of an older schema)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"log-{leaves}-s{SCHEMA_VERSION}-r{RECIPE}"
    db, key = stem.with_suffix(".db"), stem.with_suffix(".logkey.pem")
    if db.exists() and key.exists() or _migrated(leaves, db, key):
        return db, key
    tmp = stem.with_suffix(".building.db")
    for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), key):
        p.unlink(missing_ok=True)
    signer = generate_log_key(key, ORIGIN)
    store = SqliteStore(tmp)
    w = store._writer
    w.execute("PRAGMA synchronous=OFF")  # a bench fixture: durability not needed
    w.execute("PRAGMA journal_mode=OFF")  # nor a journal: a failed build is started over
    w.execute(f"PRAGMA cache_size=-{min(2_000_000, 200_000 + leaves // 5)}")  # KiB
    # the secondary indexes are built once at the end (sorted, not 10^7 random inserts;
    # the same definitions, read back from the schema)
    indexes = w.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        w.execute(f"DROP INDEX {name}")
    try:
        build_log(store, signer, leaves)
        t0 = time.perf_counter()
        for _, sql in indexes:
            w.execute(sql)
        for stmt in INDEX_ROOM.split(";"):  # room in their pages, as migration 6 leaves
            w.execute(stmt)
        print(f"  indexes built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        w.execute("PRAGMA journal_mode=WAL")
    finally:
        store.close()
    os.replace(tmp, db)
    return db, key


def signer_of(key: Path) -> LogSigner:
    return load_log_signer(key, ORIGIN)
