"""The provenance service without the wire: registry, submissions, log, verification.

`ProvenanceService` owns the store, the log signer, the group-commit writer and the
in-memory perceptual-hash index. The gRPC layer (`provenance.server.rpc`) converts
messages and calls these methods; tests and benchmarks can call them directly.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from provenance import metrics
from provenance.c2pa.authority import (
    Authority,
    accept_device_certificate,
    issue_device_certificate,
)
from provenance.core import merkle
from provenance.core.binding import PDQ_HASH_SIZE, PerceptualHash, pdq_hashes
from provenance.core.claims import Claim, Device, Receipt, SignedClaim
from provenance.core.errors import (
    AlreadyEnrolledError,
    ClaimError,
    ConfigError,
    DeadlineError,
    EnrollmentError,
    KeyMaterialError,
    LeafNotFoundError,
    LogError,
    LogIntegrityError,
    ProvenanceError,
    StorageError,
    WitnessError,
)
from provenance.core.keyhistory import (
    KeyEvent,
    KeyEventKind,
    KeySigner,
    KeyState,
    LoggedKeyEvent,
    SignedKeyEvent,
    admin_key,
    in_force,
    registry_problems,
    replay,
    sign_key_event,
    verify_key_event,
)
from provenance.core.keys import CHECKED_KEYS_CACHED
from provenance.core.registry import (
    answer_enrollment_again,
    check_certificate_enrollment,
    check_claim_counts,
    check_claim_length,
    check_claim_shape,
    check_enrollment,
    check_label,
    check_token_ttl,
    new_token,
    token_hash,
)
from provenance.core.timecheck import (
    check_revocation_reason,
    check_revocation_time,
    with_time_flags,
)
from provenance.core.verify import (
    MAX_EXACT_CLAIMS,
    FileFacts,
    LoggedClaim,
    VerificationReport,
    decide,
)
from provenance.index.mih import MihIndex, searchable
from provenance.index.packs import load_index, write_packs
from provenance.log.checkpoint import DEFAULT_KEY_SUFFIX as DEFAULT_KEY_SUFFIX  # was here
from provenance.log.checkpoint import (
    DEFAULT_ORIGIN,
    MAX_KEY_NAME_BYTES,
    LogSigner,
    NoteVerifier,
    generate_log_key,
    load_log_signer,
    memo_path,
    remove_key_leftovers,
)
from provenance.log.receipt import build_receipt, verify_receipt
from provenance.server.limits import VERIFY_SEARCH_S as VERIFY_SEARCH_S
from provenance.server.limits import FairReads
from provenance.server.rollback import (
    CheckpointMemo,
    check_not_rolled_back,
    remember_checkpoint,
    with_lost_receipt,
)
from provenance.server.startup import advance_mark, check_log_at_start
from provenance.server.store_reads import StoreReads
from provenance.server.writer import (
    MAX_HELD,
    Appended,
    GroupCommitWriter,
    KeyAppended,
    Outcome,
    PendingClaim,
    PendingKeyEvent,
    check_entry_size,
)
from provenance.store import KEY_HISTORY_META, AppendTxn, LeafRecord, Store, open_store
from provenance.store.sql import PUBLIC_DAMAGED as DAMAGED
from provenance.store.sqlite import SqliteStore
from provenance.terminal import quoted
from provenance.wire import convert as wire
from provenance.wire.contract import DEFAULT_ENTRIES_PAGE, MAX_ENTRIES_PAGE
from provenance.witness import WitnessStatus
from provenance.witness.client import DEFAULT_TIMEOUT_S, Cosigner, WitnessSpec

log = logging.getLogger(__name__)

DEFAULT_TOKEN_TTL = timedelta(hours=24)


@functools.lru_cache(maxsize=4096)
def _checked_key_event(data: bytes) -> tuple[SignedKeyEvent, datetime, KeyEvent]:
    """Decode a key-history log entry and verify its signature, once per distinct entry
    (every verdict on a device reads its key history; the bytes decide the answer, so the
    cache cannot change one). Raises ClaimError, SignatureError (ProvenanceError)."""
    signed, at = wire.decode_entry(data)
    if not isinstance(signed, SignedKeyEvent):
        raise ClaimError("it is a claim, not a key event")
    verify_key_event(signed)
    return signed, at, wire.decode_key_event(signed.event_bytes)


def _logged_key_event(idx: int, device_id: bytes, data: bytes) -> LoggedKeyEvent:
    """Log entry ``idx``, indexed as a key event of ``device_id``, decoded and checked.

    Raises LogIntegrityError when it does not decode, its signature does not verify, or
    it names another device: the fault is the database's."""
    try:
        signed, at, ev = _checked_key_event(data)
    except ProvenanceError as e:
        raise LogIntegrityError(
            f"key-history entry {idx} of device {device_id.hex()} is damaged: {e}",
            public=f"key-history entry {idx} of device {device_id.hex()} does not decode or verify: {DAMAGED}",
        ) from e
    if ev.device_id != device_id:
        raise LogIntegrityError(
            f"key-history entry {idx} is indexed under device {device_id.hex()} but"
            " names another: the database was edited behind the log's back"
        )
    return LoggedKeyEvent(idx, at, signed, ev)


#: Most video frame hashes of one query searched in the near-duplicate index.
MAX_QUERY_FRAMES = 600
#: Most entries of one device among a query hash's 16 index answers, and among a file's 8
#: near candidates (the nearest of that device's): one device, however many claims it
#: logs (a static-scene video claim carries 1,000 copies of a photo's code), cannot fill
#: the places and hide another device's near copy from the verdict. A device's claims
#: that its key's revocation covers (logged at or after it) are a second group with
#: places of its own: a thief's claims do not take those of the device's earlier captures.
#: Places are filled round-robin over the groups, in the order of each group's best entry
#: (every group's best before any group's second): hiding an entry from the 8 candidates
#: takes 8 other groups each with an entry ranked ahead of it (before: 2 groups of 4).
NEAR_PER_DEVICE = 4
#: A query hash's places in the near-duplicate index's answer (`_search_grouped`).
NEAR_PLACES = 16
#: Answers a search asks for each query hash: its nearest, at most NEAR_PER_DEVICE of a
#: group. These hold the round-robin's NEAR_PLACES (`_round_robin`): an entry past them
#: has a group's entries ahead of it from at least NEAR_PLACES groups.
NEAR_SEARCHED = NEAR_PLACES * NEAR_PER_DEVICE
#: Answers the codes searched again with more than NEAR_SEARCHED hold at most in one round
#: while a search learns whose the leaves it hits are (`ProvenanceService._search_grouped`:
#: leaves logged before this start, once): such a code gets twice its previous answers
#: while they fit (about 20 MB of answers), the others NEAR_SEARCHED each (what the first
#: codes learn settles theirs). So a round holds up to this plus NEAR_SEARCHED a code (the
#: first round: NEAR_SEARCHED a code, a 4,096-hash video's 262,144).
GROUP_ROUND_ANSWERS = 1 << 17
#: Device keys a server keeps for signature checks (about 200 bytes each).
DEVICE_KEYS_CACHED = CHECKED_KEYS_CACHED
#: Threads reading the receipts of replays (`FairReads`). One: a second measured no gain
#: on SQLite (a read is about 60 us; the flood's CPU, not the reader, is the bottleneck)
REPLAY_READERS = 1


#: How long a server waits for a new log key file another process is still writing in
#: place (`_load_log_key`), in seconds.
LOG_KEY_WAIT_S = 5.0


def _load_log_key(path: Path, origin: str) -> LogSigner:
    """`load_log_signer`, waiting up to LOG_KEY_WAIT_S for a key file written less than
    that long ago that holds no key yet: one a process is still writing in place (ours
    appear whole, `generate_log_key`; a copy or an older server may not). Raises as
    `load_log_signer`."""
    deadline = time.monotonic() + LOG_KEY_WAIT_S
    while True:
        try:
            return load_log_signer(path, origin)
        except KeyMaterialError:
            try:
                young = time.time() - path.stat().st_mtime < LOG_KEY_WAIT_S
            except OSError:
                young = False
            if not young or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


#: Seconds that a submission whose call carries no deadline waits for the log's
#: confirmation (`prov serve --submit-wait`; `provenance.server.rpc.submit_wait`); a call
#: with a deadline waits until just before it, so that a capture sent with a long
#: deadline waits out a database outage (the writer tries its batch again until the
#: database answers) and one with a short deadline is still answered in time.
SUBMIT_WAIT_S = 30.0

#: The shortest and longest ``submit_wait_s`` (`prov serve --submit-wait`).
SUBMIT_WAIT_MIN_S = 0.1
SUBMIT_WAIT_MAX_S = 600.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServiceConfig:
    """Where the service keeps its state and what it trusts.

    db: the store (`provenance.store.open_store`): a SQLite file path, or
    ``postgresql://USER@HOST:PORT/DB`` shared by several servers; log_key: the log's
    Ed25519 private key (PEM, mode 0600; created on first start), the same file for
    every server of one log; None only with the in-memory store (``:memory:``), whose
    key is drawn at start and kept in memory (ConfigError otherwise); origin: the log's
    name in its checkpoints (None: the name the database holds, else `DEFAULT_ORIGIN`;
    one given that differs from the database's is warned of, and the database's used);
    verify_on_start: re-hash the leaves appended since the last verified mark and
    compare with the signed checkpoint; full_check: re-hash every leaf instead (O(n)
    hashing, O(log n) memory); authority: the enrollment authority
    (`prov admin ca init`, loaded by `provenance.c2pa.authority.load_authority`) that
    certifies enrolled keys for C2PA export, or None;
    follow_interval_s: how often a server over a shared store reads the other servers'
    appends into its near-duplicate index; mark_interval_s: how often the running server
    re-hashes what was appended and moves the verified mark (`provenance.server.startup`);
    admin_token: the admin credential, from which the admin key that signs logged
    enrollments (by token) and revocations is derived (`keyhistory.admin_key`); without
    one, the log key signs them.
    witnesses: the witness policy whose cosignatures the server requests after each
    commit (`provenance.witness.client`), witness_quorum: how many must cosign a
    checkpoint (0: all), witness_timeout_s: per request, witness_interval_s: least time
    between two cosigning rounds.
    max_queued_claims: submissions the log's writer holds at most before it refuses new
    claims (`GroupCommitWriter`, ``max_held``); db_connect_wait_s: with PostgreSQL, how
    long a call waits for a pooled connection (`PostgresStore`, ``connection_wait_s``;
    None: its default); db_answer_wait_s: with PostgreSQL, how long a call waits for a
    lock held on the log's tables and a write for the database's answer (`PostgresStore`,
    ``answer_wait_s``; None: its default); submit_wait_s: how long a capture's call waits at least for the
    log's confirmation (`SUBMIT_WAIT_S` by default; the call's deadline when later).
    """

    db: Path | str
    log_key: Path | None
    origin: str | None = None
    verify_on_start: bool = True
    authority: Authority | None = None
    full_check: bool = False
    follow_interval_s: float = 0.25
    mark_interval_s: float = 60.0
    admin_token: str | None = None
    witnesses: tuple[WitnessSpec, ...] = ()
    witness_quorum: int = 0
    witness_timeout_s: float = DEFAULT_TIMEOUT_S
    witness_interval_s: float = 0.0
    max_queued_claims: int = MAX_HELD
    db_connect_wait_s: float | None = None
    db_answer_wait_s: float | None = None
    submit_wait_s: float = SUBMIT_WAIT_S


def _file_hashes(facts: FileFacts) -> list[bytes]:
    """The SHA-256 digests a file is logged under: the whole file's, and its content's
    (media bytes without metadata) when it has one."""
    return [facts.sha256] + ([facts.content_sha256] if facts.content_sha256 else [])


def _bounded(recs: Sequence[LeafRecord]) -> tuple[list[LeafRecord], bool]:
    """The first `MAX_EXACT_CLAIMS` of one file hash's leaves (read with one more, in
    index order), and whether there were more."""
    return list(recs[:MAX_EXACT_CLAIMS]), len(recs) > MAX_EXACT_CLAIMS


def _near_choice(groups: Sequence[int], limit: int, video: bool) -> list[int]:
    """The positions (ascending) of a file's near candidates among the leaves its hashes
    hit, given each leaf's group in order of preference (the most votes, then the
    nearest): the ``limit`` picked round-robin over groups (`_round_robin`: each group's
    best before any group's second, at most NEAR_PER_DEVICE of one); for a ``video`` (more
    than one frame votes) also the first ``limit`` in order, at most NEAR_PER_DEVICE of a
    group (`_in_order`): up to 2 x ``limit`` in all. A video's verdict lines frames up in
    time, which votes do not show, and a group's second by votes may be the clip that
    lines up, which the round-robin puts behind every group's first however few their
    votes."""
    chosen = set(_round_robin(groups, limit))
    if video:
        chosen.update(_in_order(groups, limit))
    return sorted(chosen)


def _round_robin(groups: Sequence[int], limit: int) -> list[int]:
    """The positions (ascending) of at most ``limit`` items, given each item's group in
    order of preference, picked round-robin over the groups: every group's first item
    before any group's second, and so on, groups taken in the order of their first item;
    at most NEAR_PER_DEVICE of one group. So one group, or a few (a hostile device's
    claims near a popular photo, and its key's revoked ones), cannot fill the places
    ahead of another group's item unless ``limit`` groups each have an item ahead of it."""
    rank: dict[int, int] = {}
    order: list[tuple[int, int]] = []  # (the item's rank in its group, its position)
    for i, group in enumerate(groups):
        r = rank.get(group, 0)
        rank[group] = r + 1
        if r < NEAR_PER_DEVICE:
            order.append((r, i))
    order.sort()
    return sorted(i for _, i in order[:limit])


def _in_order(groups: Sequence[int], limit: int) -> list[int]:
    """The positions (ascending) of the first ``limit`` items, given each item's group in
    order of preference, at most NEAR_PER_DEVICE of one group: a group's second and later
    items in their place, where `_round_robin` puts them behind every group's first."""
    taken: dict[int, int] = {}
    out: list[int] = []
    for i, group in enumerate(groups):
        if taken.get(group, 0) < NEAR_PER_DEVICE and len(out) < limit:
            taken[group] = taken.get(group, 0) + 1
            out.append(i)
    return out


class SearchBudget:
    """The time one verification's near-duplicate searches may spend in all, rounds of
    `ProvenanceService._search_grouped` counted as they run (the first search, a video's
    dense pass, the searches again after a revocation: `ProvenanceService._near_logged`):
    ``seconds`` (`VERIFY_SEARCH_S`, `prov serve --verify-search-seconds`), at most until
    ``until`` (time.monotonic; None: no end of its own, the call's deadline). A search
    whose further round is due once it is spent stops there and answers the best places
    found by then (`cut` is then set); its first round always runs. ``spent``: seconds
    its searches ran."""

    def __init__(self, seconds: float, until: float | None = None) -> None:
        self.seconds = seconds
        self.until = until
        self.spent = 0.0
        #: a search stopped before its end: its answers may miss entries it did not reach
        #: (kept for a video's dense pass after its 1 Hz frames' search: `verify`)
        self.cut = False

    def deadline(self) -> float:
        """When a search starting now must stop starting rounds (time.monotonic)."""
        end = time.monotonic() + max(0.0, self.seconds - self.spent)
        return end if self.until is None else min(end, self.until)


def _with_notes(report: VerificationReport, notes: list[str]) -> VerificationReport:
    """``report`` with the verification's ``notes`` (each once, in order) added to its
    reasons."""
    if not notes:
        return report
    return replace(report, reasons=(*report.reasons, *dict.fromkeys(notes)))


class ProvenanceService:
    """See module docstring. ``clock`` returns the current UTC time (injectable for tests)."""

    def __init__(self, config: ServiceConfig, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.clock = clock
        self.store: Store = open_store(
            config.db,
            exclusive=True,
            connection_wait_s=config.db_connect_wait_s,
            answer_wait_s=config.db_answer_wait_s,
        )
        self._device_keys: dict[bytes, bytes] = {}  # see _device_key
        self._device_keys_lock = threading.Lock()
        #: device id -> a sequence number the log holds for it: its last logged one, or
        #: less (other servers of the log append too); see `submit_async`
        self._logged_seq: dict[bytes, int] = {}
        #: the threads that read the receipts of replays (`_logged_replay`), each client
        #: address in turn: a flood of them waits there, not in the RPC pool nor in the
        #: writer's batches, and not ahead of another client's replay
        self._replay_reads = FairReads(REPLAY_READERS, "replay-reads")
        #: files beside a new SQLite database this start made under its lock (the log key
        #: it created, its checkpoint memo): `discard` removes them
        self._made: list[Path] = []
        try:
            if config.log_key is not None and self._new_database():
                new_memo = memo_path(config.log_key)
                self._made += [] if os.path.lexists(new_memo) else [new_memo]
            self.authority = config.authority
            self.signer = self._open_signer()
            self.verifier = NoteVerifier.from_vkey(self.signer.verifier_key())
            #: what the start-up check of the log did
            self.startup = check_log_at_start(
                self.store,
                self.signer,
                self.verifier,
                rehash="all" if config.full_check else "new" if config.verify_on_start else "none",
            )
            # an in-memory store starts empty by design: nothing to remember for it
            self._memo = (
                None
                if str(config.db) == ":memory:" or config.log_key is None
                else CheckpointMemo(memo_path(config.log_key))
            )
            #: whether the database answers reads, and the newest checkpoint held
            #: (`GetCheckpoint` while it does not, the health check)
            self.reads = StoreReads(self.store.latest_checkpoint)
            self._remember_start()
            self.pdq = MihIndex()
            #: each device id seen as a small number; each leaf's group for NEAR_PER_DEVICE
            #: (2 x its device's number, + 1 when its key's revocation covers it; -1 not
            #: known yet: the leaves logged before this start until a search hits them,
            #: -2 no claim's), 4 bytes a leaf, grown with the log; the revocation time
            #: (None: none) each device's groups were set with. Under _groups_lock.
            self._groups_lock = threading.Lock()
            self._device_numbers: dict[bytes, int] = {}
            self._leaf_groups = np.zeros(0, dtype=np.int32)
            self._grouped_revocation: dict[int, datetime | None] = {}
            #: how many times `_forget_groups` forgot a device's groups (a search's answers
            #: cut with the groups before are not cut again, but searched again)
            self._forgotten = 0
            #: whether any video claim is logged (else a dense frame pass cannot match)
            self.has_video = False
            #: leaves [0, _indexed) are in the near-duplicate index
            self._indexed = 0
            #: leaves [0, _packed) are stored as index packs (`provenance.index.packs`)
            self._packed = 0
            self._index_lock = threading.Lock()
            self._load_index()
            #: requests witness cosignatures of new checkpoints, or None without a policy
            self.cosigner = self._start_cosigner()
            self.writer = GroupCommitWriter(
                self.store,
                self.signer,
                clock,
                self._after_commit,
                in_force=self._in_force_rows,
                max_held=config.max_queued_claims,
            )
            self._admin = (
                KeySigner.of(admin_key(config.admin_token))
                if config.admin_token
                else KeySigner(self.signer.public_key, self.signer.sign_message)
            )
            self._log_key_history()
            self._stop = threading.Event()
            self._upkeep = threading.Thread(
                target=self._upkeep_loop, name="log-upkeep", daemon=True
            )
            self._upkeep.start()
            self.store.started()  # the checks passed: the store may write its file
        except BaseException:
            writer: GroupCommitWriter | None = getattr(self, "writer", None)
            if writer is not None:
                writer.close()
            cosigner: Cosigner | None = getattr(self, "cosigner", None)
            if cosigner is not None:
                cosigner.close()
            memo: CheckpointMemo | None = getattr(self, "_memo", None)
            if memo is not None:
                memo.close()
            reads: StoreReads | None = getattr(self, "reads", None)
            if reads is not None:
                reads.close()
            self._discard_files()
            raise

    # ---------------------------------------------------------------- lifecycle

    def _open_signer(self) -> LogSigner:
        stored_origin = self.store.get_meta("origin")
        given = self.config.origin
        origin = stored_origin or given or DEFAULT_ORIGIN
        if stored_origin and given is not None and stored_origin != given:
            log.warning(  # quoted: a name from before check_own_key_name may hold anything
                "database log origin is %s; using it, not %s",
                quoted(stored_origin, MAX_KEY_NAME_BYTES),
                quoted(given, MAX_KEY_NAME_BYTES),
            )
        key_file = self.config.log_key
        if key_file is None:  # an in-memory log: its key lives and dies with it
            if str(self.config.db) != ":memory:":
                raise ConfigError("a log key file is needed for a stored log (--log-key)")
            signer = LogSigner(Ed25519PrivateKey.generate(), origin)
            self.store.setdefault_meta("origin", origin)
            self.store.setdefault_meta("log_verifier_key", signer.verifier_key())
            return signer
        for leftover in remove_key_leftovers(key_file):
            log.warning(
                "removed %s, a copy of the log key left by a start that was killed", leftover
            )
        if not key_file.exists():
            if self.store.tree_size() > 0:
                raise LogError(
                    f"log key {key_file} is missing but the log has entries:"
                    " refusing to start with a new key"
                )
            registered = self.store.get_meta("log_verifier_key")
            # a log with no leaves yet whose key is registered (before: a new key file
            # was made here, then refused below as not this database's key, and left in
            # place of the one to restore). Looked at again: a server starting beside
            # this one on a new shared log writes its key file before registering it.
            if registered is not None and not key_file.exists():
                raise LogError(
                    f"log key {key_file} is missing; this database's log was created with"
                    f" the key {registered}: restore that key file (refusing to start"
                    " with a new key)"
                )
            try:
                generate_log_key(key_file, origin)  # O_EXCL: made by this very start
            except ConfigError:
                if not key_file.exists():
                    raise
                # another server starting on this new shared log made it first: its key
            else:
                if self._new_database():
                    self._made.append(key_file)
        signer = _load_log_key(key_file, origin)
        if stored_origin is None:
            # servers starting together on a new shared database: the first origin wins
            origin = self.store.setdefault_meta("origin", origin)
            signer = load_log_signer(key_file, origin)
        # registered even where the origin was: a server starting beside this one on a
        # new shared log registers the origin, then its key, in two commits (before, a
        # start that read the origin between the two found no key and was refused as
        # 'not the key'); and a start killed between them leaves the origin alone. Never
        # for a log with entries (its key was registered before its first entry): a key
        # registered there would be whichever key file this start was given
        if self.store.tree_size() > 0:
            registered = self.store.get_meta("log_verifier_key")
            if registered is None:
                raise LogError(
                    "this database's log has entries but no registered log key (its meta"
                    f" table is damaged): refusing to register {key_file} for it; restore"
                    " the database from a backup"
                )
        else:
            registered = self.store.setdefault_meta("log_verifier_key", signer.verifier_key())
        if registered != signer.verifier_key():
            raise LogError(f"log key {key_file} is not the key this database was created with")
        return signer

    def _remember_start(self) -> None:
        """Refuse a database behind the newest checkpoint this server signed (kept beside
        the log key, `provenance.server.rollback`); then remember the database's latest
        (and hold it, `StoreReads.saw`)."""
        if self._memo is None:
            self.reads.saw(self.store.latest_checkpoint())
            return
        remembered = check_not_rolled_back(
            self._memo.path, self.verifier, self.store.tree_size(), self.store.get_nodes
        )
        latest = self.store.latest_checkpoint()
        self.reads.saw(latest)
        if latest is not None and (latest[0] > remembered or not self._memo.path.exists()):
            remember_checkpoint(self._memo.path, latest[1])

    def _log_key_history(self) -> None:
        """On the first start of a database that predates key history, log an enrollment
        (and a revocation, where the row has one) for every registry row, marked
        ``backfilled``: from then on the rows are checked against the log. A row edited
        before the upgrade cannot be told from an honest one. The writer logs no backfilled
        event whose kind the log holds already for its device (`writer._logged_kinds`,
        decided under the append lock): servers starting together on one shared database
        each queue every event, and each event is logged once; a start stopped part way
        is finished by the next. Leaving out here a device with any entry, read outside
        the lock, would let two servers starting together both log it, and the later
        commit fail as a damaged database (exit 3)."""
        if self.store.get_meta(KEY_HISTORY_META) is not None:
            return
        with self.store.append() as txn:
            rows = txn.all_devices()
        pending: list[PendingKeyEvent] = []
        for d in rows:
            enrolled = KeyEvent(
                KeyEventKind.ENROLLMENT,
                d.device_id,
                d.enrolled_at,
                public_key=d.public_key,
                authorised_by="backfill",
                backfilled=True,
            )
            events = [enrolled]
            if d.revoked_at is not None:
                events.append(
                    replace(
                        enrolled,
                        kind=KeyEventKind.REVOCATION,
                        effective_at=d.revoked_at,
                        public_key=b"",
                        reason=d.revocation_reason,
                    )
                )
            for ev in events:
                signed = sign_key_event(self._admin, wire.encode_key_event(ev))
                pending.append(PendingKeyEvent(signed, ev, backfill=True))
        # all or nothing: a device whose enrollment alone were logged would never get its
        # revocation backfilled (an entry of the latest time, nanoseconds of the most bytes)
        at = self.clock().replace(microsecond=999_999)
        for p in pending:
            check_entry_size(wire.encode_key_event_entry(p.signed, at), p.event.device_id)
        if pending:
            done = self.writer.submit_key_events(pending)
            logged = {p.event.device_id for p, r in zip(pending, done, strict=True) if r.receipt}
            log.info("logged the key history of %d existing devices", len(logged))
            if before := len({p.event.device_id for p in pending} - logged):
                log.info(
                    "the key history of %d more devices was logged already (by another"
                    " server starting at the same time, or a start stopped part way)",
                    before,
                )
        self.store.setdefault_meta(KEY_HISTORY_META, str(self.store.tree_size()))

    def _start_cosigner(self) -> Cosigner | None:
        """The witness policy's cosigner, already asked to cosign the latest checkpoint."""
        cfg = self.config
        if not cfg.witnesses:
            return None
        cosigner = Cosigner(
            list(cfg.witnesses),
            cfg.witness_quorum or len(cfg.witnesses),
            lambda old, new: merkle.consistency_proof(old, new, self.store.get_nodes),
            self.store.latest_checkpoint,
            timeout_s=cfg.witness_timeout_s,
            interval_s=cfg.witness_interval_s,
        )
        latest = self.store.latest_checkpoint()
        if latest is not None:
            cosigner.submit(*latest)
        return cosigner

    def cosigned_checkpoint(self) -> tuple[str, int, list[WitnessStatus]]:
        """(the newest checkpoint cosigned by the witness quorum, "" when none yet; the
        quorum; each witness's status). Raises WitnessError when the server has no witness
        policy."""
        if self.cosigner is None:
            raise WitnessError(
                "this server requests no witness cosignatures (start it with --witness URL=KEY)"
            )
        return self.cosigner.cosigned() or "", self.cosigner.quorum, self.cosigner.statuses()

    def ready(self) -> bool:
        """Whether the server can serve now, for its health check: the database answers
        reads (`StoreReads.answers`, waiting `PROBE_WAIT_S` at most, probing at most once
        every `PROBE_EVERY_S`) and the log's writer can take captures
        (`GroupCommitWriter.ready`). Call it off the event loop."""
        return self.reads.answers() and self.writer.ready()

    def stopping(self) -> None:
        """A server stopping (`prov serve`'s "shutting down", before its calls' grace):
        the log upkeep starts no new round and the writer waits no more for a store that
        cannot be reached, so that their waits for a database in an outage (30 s each
        with PostgreSQL) overlap the grace instead of following it. Before, the upkeep was
        told only in `close`, after the server stopped, and started another 30 s wait
        meanwhile: a server stopped in an outage took 57 s. The store, too, stops waiting
        for a database it cannot reach (`Store.stop_waiting`), so those waits and the calls'
        end at once: 28 s before, a few now. `close` still follows."""
        self._stop.set()
        self.writer.stop_waiting()
        self.store.stop_waiting()

    @property
    def is_stopping(self) -> bool:
        """Whether `stopping` (or `close`) was called: a call waiting for the database
        should not try again."""
        return self._stop.is_set()

    def close(self) -> None:
        self._close_threads()
        self.store.close()

    def discard(self) -> None:
        """Close after a failed start (`prov serve`), removing the files this start created
        on a new SQLite database: the database, the log key it made (O_EXCL) and the key's
        checkpoint memo, all while the database's lock is still held, so none of them can be
        another server's (its lock file stays, see `SqliteStore.discard`). A PostgreSQL or
        existing database keeps everything: it records the new key's verifier key. A
        failed constructor does the same by itself."""
        self._close_threads()
        self._discard_files()

    def _close_threads(self) -> None:
        self._replay_reads.close()
        self.reads.close()
        self._stop.set()
        self._upkeep.join()
        self.writer.close()
        if self.cosigner is not None:
            self.cosigner.close()
        if self._memo is not None:
            self._memo.close()

    def _new_database(self) -> bool:
        """Whether the store is a SQLite file this start created, its lock held."""
        return isinstance(self.store, SqliteStore) and self.store.created

    def _discard_files(self) -> None:
        """Remove `_made`, then the store's own new files, then release its lock."""
        for path in self._made:
            path.unlink(missing_ok=True)
        if isinstance(self.store, SqliteStore):
            self.store.discard()
        else:
            self.store.close()

    def _after_commit(self, size: int, note: str, appended: list[tuple[int, PendingClaim]]) -> None:
        metrics.APPENDS.inc(len(appended))
        for _, p in appended:
            self._note_logged(p.claim.device_id, p.claim.sequence)
        if self.cosigner is not None:
            self.cosigner.submit(size, note)
        if self._memo is not None:
            self._memo.update(size, note)
        self.reads.saw((size, note))
        with self._index_lock:
            if appended and appended[0][0] == self._indexed:
                self._note_devices([(idx, p.claim.device_id) for idx, p in appended])
                for idx, p in appended:
                    for h in p.claim.soft_bindings:
                        self.pdq.add(idx, h)
                    self.has_video |= p.claim.media_type.startswith("video/")
                self._indexed = size
                self._indexed_metrics()
                return
        try:  # another server appended before this batch: read it all
            self._follow(size)
        except (StorageError, LogError) as e:  # the upkeep thread catches up later
            log.warning("cannot index the log's new entries now: %s", e)

    def _load_index(self) -> None:
        """Load every usable hash of the log into the near-duplicate index at start (stored
        packs, then the rows after them), store the packs that are due, and start building
        the index's tables; searches scan exhaustively until they are built, never missing
        a capture (`provenance.index.mih`)."""
        t0 = time.perf_counter()
        size = self.store.tree_size()
        loaded = load_index(self.store, size)
        for part in loaded.parts:
            self.pdq.add_arrays(part.ids, part.words)
        self.pdq.prepare()
        pdq = self.pdq
        metrics.INDEX_WARMING.set_function(lambda: float(pdq.warming))
        self.has_video = loaded.video
        self._indexed = size
        self._packed = write_packs(self.store, loaded.packed, size, loaded.tail)
        self._indexed_metrics()
        #: seconds the start spent loading the near-duplicate index
        self.index_load_seconds = time.perf_counter() - t0
        log.info(
            "near-duplicate index: %d hashes of %d leaves loaded (%d from packs) in %.2f s%s",
            loaded.hashes,
            size,
            loaded.packed,
            self.index_load_seconds,
            "; building its tables in the background (searches scan meanwhile)"
            if self.pdq.warming
            else "",
        )

    def _follow(self, size: int) -> None:
        """Bring the near-duplicate index up to a log of ``size`` leaves from the store
        (what other servers over the same database appended)."""
        with self._index_lock:
            if size <= self._indexed:
                return
            pack = self.store.hash_pack(self._indexed, size)  # a failed read adds none
            self._note_devices(
                [(i, d) for i, d, _ in self.store.leaf_owners(range(self._indexed, size))]
            )
            self.pdq.add_arrays(pack.ids, pack.words)
            self.has_video |= pack.video
            self._indexed = size
            self._indexed_metrics()

    def _note_devices(self, rows: Sequence[tuple[int, bytes]]) -> None:
        """Record whose (device id) each new leaf of ``rows`` (leaf index, device id) is,
        for the near-duplicate search's NEAR_PER_DEVICE: a claim is logged only while its
        key is not revoked, so its group is its device's first (a device whose groups were
        set with a revocation: not known, read again when a search hits it)."""
        if not rows:
            return
        with self._groups_lock:
            for idx, dev in rows:
                number = self._number(dev)
                revoked = self._grouped_revocation.setdefault(number, None)
                self._set_group(idx, 2 * number if revoked is None else -1)

    def _number(self, device_id: bytes) -> int:
        """The small number of ``device_id`` (given on first sight); under _groups_lock."""
        return self._device_numbers.setdefault(device_id, len(self._device_numbers))

    def _set_group(self, idx: int, group: int) -> None:
        """Set leaf ``idx``'s group, growing the array by an eighth (a search reading
        the old one meanwhile sees what it held); under _groups_lock."""
        arr = self._leaf_groups
        if idx >= len(arr):  # by an eighth: 4.5 bytes a leaf, not 8 (10^7 leaves: 45 MB, not 80)
            grown = np.full(max(idx + 1, len(arr) + len(arr) // 8 + 4096), -1, dtype=np.int32)
            grown[: len(arr)] = arr
            self._leaf_groups = arr = grown
        arr[idx] = group

    def _learn_groups(self, ids: Sequence[int]) -> None:
        """Read the device and log time of leaves ``ids`` whose group is not known (one
        store read for all, `Store.leaf_owners`) and set their groups: their device's, split
        by its key's revocation in force (`device_in_force`, read once per device until
        `_forget_groups`). A leaf the store does not hold is a group of its own (-2)."""
        arr = self._leaf_groups
        unknown = [i for i in ids if i >= len(arr) or arr[i] == -1]
        if not unknown:
            return
        owners = self.store.leaf_owners(unknown)
        metrics.NEAR_GROUP_READS.inc()
        revocations: dict[bytes, datetime | None] = {}
        for dev in {d for _, d, _ in owners}:
            with self._groups_lock:
                number = self._number(dev)
                if number in self._grouped_revocation:
                    revocations[dev] = self._grouped_revocation[number]
                    continue
            row = self.store.find_device(dev)
            revocations[dev] = None if row is None else self.device_in_force(row).revoked_at
        with self._groups_lock:
            for dev, revoked in revocations.items():
                self._grouped_revocation.setdefault(self._number(dev), revoked)
            found = set()
            for idx, dev, at in owners:
                number = self._number(dev)
                revoked = self._grouped_revocation[number]
                self._set_group(idx, 2 * number + int(revoked is not None and at >= revoked))
                found.add(idx)
            for idx in unknown:
                if idx not in found:
                    self._set_group(idx, -2)

    def _forget_groups(self, near: Sequence[LoggedClaim]) -> bool:
        """Whether the groups of a device among ``near`` (candidates read for a verdict)
        were set with another revocation than the one now in force (a key revoked since,
        here or by another server): then that device's leaves are not known again, read
        anew when a search hits them, and the caller searches again."""
        stale = False
        with self._groups_lock:
            for lc in near:
                number = self._device_numbers.get(lc.device.device_id)
                if number is None or number not in self._grouped_revocation:
                    continue
                if self._grouped_revocation[number] != lc.device.revoked_at:
                    arr = self._leaf_groups
                    arr[(arr == 2 * number) | (arr == 2 * number + 1)] = -1
                    del self._grouped_revocation[number]
                    self._forgotten += 1
                    stale = True
        return stale

    def _devices_of(self, ids: np.ndarray) -> np.ndarray:
        """The group of each leaf of ``ids`` (int64), -2 - id for a leaf whose group is
        not known (each its own)."""
        arr = self._leaf_groups
        ids = np.asarray(ids, dtype=np.int64)
        g = np.full(len(ids), -1, dtype=np.int64)
        known = (ids >= 0) & (ids < len(arr))
        g[known] = arr[ids[known]]
        return np.where(g >= 0, g, -2 - ids)

    def _indexed_metrics(self) -> None:
        metrics.TREE_SIZE.set(self._indexed)
        metrics.INDEX_HASHES.set(len(self.pdq))

    def advance_verified_mark(self) -> int:
        """Re-hash what was appended since the verified mark and move it (see
        `provenance.server.startup.advance_mark`); returns the mark's size."""
        return advance_mark(self.store, self.signer, self.verifier)

    def _upkeep_loop(self) -> None:
        """Over a shared store, poll the log's head and index what other servers appended,
        so a capture logged anywhere is found here within about ``follow_interval_s``;
        every ``mark_interval_s``, move the verified mark and store the index packs that
        became full."""
        interval = (
            self.config.follow_interval_s if self.store.shared else self.config.mark_interval_s
        )
        next_mark = time.monotonic() + self.config.mark_interval_s
        while not self._stop.wait(interval):
            try:
                if self.store.shared:
                    size = self.store.tree_size()
                    if size > self._indexed and self.cosigner is not None:
                        # another server appended: its checkpoint is this server's to have
                        # cosigned too (GetCosignedCheckpoint through any server)
                        latest = self.store.latest_checkpoint()
                        if latest is not None:
                            self.cosigner.submit(*latest)
                    self._follow(size)
                if time.monotonic() >= next_mark:
                    self.advance_verified_mark()
                    self._packed = write_packs(self.store, self._packed, self._indexed)
                    next_mark = time.monotonic() + self.config.mark_interval_s
            except (StorageError, LogError) as e:
                log.warning("log upkeep: %s", e)

    # ---------------------------------------------------------------- registry

    def create_enrollment_token(
        self, ttl: timedelta = DEFAULT_TOKEN_TTL, label: str = ""
    ) -> tuple[str, datetime]:
        """A one-time token for `enroll`, valid for ``ttl``. Returns (token, expiry).
        Raises ClaimError for a label `check_label` refuses or a ``ttl`` over
        `MAX_TOKEN_TTL` (`check_token_ttl`)."""
        check_token_ttl(ttl)
        check_label(label)
        now = self.clock()
        token = new_token()
        self.store.add_token(token_hash(token), label, now, now + ttl)
        return token, now + ttl

    def enroll(
        self,
        token: str,
        public_key: bytes,
        proof_of_possession: bytes,
        certificate_pem: str = "",
        log_key: str = "",
        signed_at: datetime | None = None,
    ) -> tuple[KeyAppended, str]:
        """Enroll ``public_key`` (raw 32 bytes); returns the outcome (the device and the
        receipt of its log entry; None when nothing was logged: answered again, below)
        and its X.509 chain.

        With a one-time ``token`` (the proof signs it); or, with no token, by a
        ``certificate_pem`` chain that the server's enrollment authority issued (checked
        here), the proof signing ``log_key`` (this log's verifier key) and ``signed_at``
        (`registry.check_certificate_enrollment`: a request made for another log, or
        signed more than `registry.ENROLL_SKEW` from now, is refused). When the server
        runs an authority and no chain is given, it issues one. A certificate enrollment
        of a key already enrolled with that chain (a replay within the window, or the
        device's retry) is answered with the device as it stands, no receipt and the
        chain, and logs and stores nothing (`registry.answer_enrollment_again`; its
        revocation since is refused, naming it); so is a token enrollment whose token was
        spent enrolling this same key (the device's retry after a lost answer), with the
        chain stored then. Raises KeyMaterialError or EnrollmentError.
        """
        now = self.clock()
        if token:
            device_id = check_enrollment(public_key, token, proof_of_possession)
        else:
            device_id = check_certificate_enrollment(
                public_key,
                log_key,
                signed_at,
                proof_of_possession,
                self.signer.verifier_key(),
                now,
            )
        chain = ""
        if certificate_pem:
            if self.authority is None:
                raise EnrollmentError(
                    "this server runs no enrollment authority to check certificates"
                )
            accept_device_certificate(
                certificate_pem.encode(), public_key, [self.authority.certificate], now=now
            )
            chain = certificate_pem
            found = self.store.find_device(device_id)
            if found is not None:  # a replay, or a retry after a lost answer: no writer
                again = AlreadyEnrolledError(
                    "", self.device_in_force(found), self.store.device_certificate(device_id)
                )
                try:
                    device: Device | None = answer_enrollment_again(again, chain)
                except AlreadyEnrolledError:  # enrolled otherwise: the writer refuses it
                    device = None
                if device is not None:
                    return KeyAppended(device, None), chain
        elif not token:
            raise EnrollmentError("enrollment needs a one-time token or a device certificate")
        elif self.authority is not None:
            chain = issue_device_certificate(
                self.authority, public_key, device_id.hex(), now=now
            ).decode()
        ev = KeyEvent(
            KeyEventKind.ENROLLMENT,
            device_id,
            now,
            public_key=public_key,
            authorised_by="token" if token else "certificate",
        )
        signer = self._admin
        if not token:
            assert self.authority is not None  # a certificate enrollment needs one
            ca = self.authority.private_key
            raw = ca.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            signer = KeySigner(raw, ca.sign)
        got = self.writer.submit_key_event(
            PendingKeyEvent(
                sign_key_event(signer, wire.encode_key_event(ev)),
                ev,
                token_hash(token) if token else None,
                certificate_pem=chain,
            )
        )
        self._remember_key(device_id, public_key)
        if got.receipt is None:  # answered again: the chain it was enrolled with
            chain = self.store.device_certificate(device_id)
        return got, chain

    def revoke(self, device_id: bytes, reason: str, effective_at: datetime | None) -> Device:
        """`revoke_outcome`'s device: the key as revoked (or as it already stood)."""
        return self.revoke_outcome(device_id, reason, effective_at).device

    def revoke_outcome(
        self, device_id: bytes, reason: str, effective_at: datetime | None
    ) -> KeyAppended:
        """Revoke a device key from ``effective_at`` (None: now): the registry row after
        it and the receipt of its log entry. Idempotent: when the log already revokes the
        key at or before that time (the earliest time counts; for None, at or before the
        commit), nothing is logged, the receipt is None and the device is returned as it
        stands (`GroupCommitWriter` decides under the append lock, so concurrent calls log
        one entry, whichever read the clock first). Raises
        ClaimError for a time more than REVOCATION_CLOCK_SKEW ahead of the log's time
        (a revocation takes effect now or earlier) or a reason over
        MAX_REVOCATION_REASON_BYTES (the logged entry must fit a tlog-tiles bundle), and
        UnknownDeviceError for an unknown device. "Now" is the log's time
        (`GroupCommitWriter.log_time`: this clock, or just past the newest checkpoint
        when this clock is behind it)."""
        now = self.writer.log_time()
        check_revocation_time(effective_at, now)
        check_revocation_reason(reason)
        ev = KeyEvent(
            KeyEventKind.REVOCATION,
            device_id,
            effective_at or now,
            reason=reason,
            authorised_by="admin",
        )
        signed = sign_key_event(self._admin, wire.encode_key_event(ev))
        pending = PendingKeyEvent(signed, ev, as_of_now=effective_at is None)
        return self.writer.submit_key_event(pending)

    def get_device(self, device_id: bytes) -> Device:
        """The registry row as stored (`prov log audit` compares it with the log)."""
        return self.store.get_device(device_id)

    def key_state(self, device_id: bytes) -> KeyState | None:
        """What the log's key-history entries say of a device (None: nothing logged).

        Raises LogIntegrityError when a key-history entry indexed for the device does not
        decode, is not a key event of that device, or its signature does not verify."""
        events = [
            _logged_key_event(idx, device_id, data)
            for idx, data in self.store.key_event_entries(device_id)
        ]
        return replay(events).get(device_id)

    @staticmethod
    def _in_force_rows(
        txn: AppendTxn, rows: dict[bytes, Device]
    ) -> dict[bytes, Device | ProvenanceError]:
        """For the writer, inside its append transaction: the registry rows of a batch's
        devices with the revocations the log holds (`keyhistory.in_force`; one read for
        the batch), or the LogIntegrityError of a device whose logged revocation is
        damaged (its claims are refused, the others' go on)."""
        out: dict[bytes, Device | ProvenanceError] = dict(rows)
        events: dict[bytes, list[LoggedKeyEvent]] = {}
        for idx, dev, data in txn.revocation_entries(list(rows)):
            try:
                events.setdefault(dev, []).append(_logged_key_event(idx, dev, data))
            except LogIntegrityError as e:
                out[dev] = e
        for dev, logged in events.items():
            if not isinstance(out[dev], ProvenanceError):
                out[dev] = in_force(rows[dev], replay(logged).get(dev))
        return out

    def device_in_force(self, row: Device, notes: list[str] | None = None) -> Device:
        """The registry row with the revocation the log holds (`keyhistory.in_force`): an
        edited row can make a verdict stricter, never more lenient. Where the row and the
        log disagree, a sentence is added to ``notes`` (and the server's log)."""
        state = self.key_state(row.device_id)
        problems = registry_problems(state, row) if state is not None else []
        if problems:
            log.warning("registry disagrees with the key history: %s", "; ".join(problems))
            if notes is not None:
                notes.extend(
                    f"note: the registry disagrees with the logged key history ({p}); the"
                    " verdict uses the log's revocation"
                    for p in problems
                )
        return in_force(row, state)

    # ---------------------------------------------------------------- submissions

    def submit(self, signed: SignedClaim) -> Appended:
        """Verify and log a signed claim; returns once it is durable.

        A replay of a logged claim returns its original receipt (``duplicate``).
        Raises ClaimError, UnknownDeviceError, SignatureError, RevokedKeyError or
        SequenceError for the claim; StorageError when the store fails or the log does not
        confirm in time, LogIntegrityError when the stored log no longer matches its
        checkpoints (or a logged revocation of the device is damaged).
        """
        claim = self._claim(signed)
        return self.writer.submit(self._pending(signed, claim, self._device_key(signed.key_id)))

    async def submit_async(
        self,
        signed: SignedClaim,
        timeout: float = 30.0,
        reads: Executor | None = None,
        peer: str = "",
        on_outcome: Outcome | None = None,
        on_checked: Callable[[], None] | None = None,
    ) -> Appended:
        """`submit` for an asyncio caller: nothing on the calling (event loop) thread waits
        for the store. The claim's shape is checked there (pure CPU, tens of µs); the
        device's key, when not yet known, is read in ``reads`` (an executor; None: the
        loop's default); the signature is checked by the writer's thread with the GIL
        released (`PendingClaim`), replays and revocation by the writer in its append
        transaction; the wait for the group commit holds no thread. A claim numbered at
        or below the device's last logged sequence this server knows of (from the
        device's row when its key was read, and from the claims it logged) is looked up
        first, in the replay readers (`_logged_replay`; ``peer``, gRPC's
        ``context.peer()``, decides whose turn it is: `FairReads`): a replay of a logged
        envelope gets its receipt without the writer (before: a flood of distinct replays
        took the writer's batches from the honest claims); that read, too, is waited for
        at most ``timeout`` seconds (StorageError after it). Raises as `submit`, and
        LimitError when the peer's address has too many replay reads queued.
        ``on_outcome`` is called once with the outcome (an `Appended`, or the exception):
        by the writer when the claim reaches it, whether or not the caller still waits
        (`GroupCommitWriter.submit_async`), else here (a replay's receipt read, a refusal
        or cancellation before the writer). ``on_checked`` is called (from the writer's
        thread) once the writer verified the claim's signature (`PendingClaim`), which can
        be long before its outcome while the database is away."""
        try:
            ready = await self._for_writer(signed, timeout, reads, peer)
        except BaseException as e:
            if on_outcome is not None:
                on_outcome(e)
            raise
        if isinstance(ready, Appended):
            if on_outcome is not None:
                on_outcome(ready)
            return ready
        if on_checked is not None:
            ready = replace(ready, on_checked=on_checked)
        # a cancelled wait (timeout, client gone) leaves the submission queued; the
        # writer wakes this loop once per batch
        return await self.writer.submit_async(ready, timeout, on_outcome)

    async def _for_writer(
        self, signed: SignedClaim, timeout: float, reads: Executor | None, peer: str
    ) -> Appended | PendingClaim:
        """`submit_async` up to the writer: the claim for it, or the receipt of a replay
        of a logged envelope read without it."""
        claim = self._claim(signed)
        if claim.sequence <= self._logged_seq.get(signed.key_id, 0):
            # at or below a sequence number the log holds for the device: a replay of a
            # logged claim (or a reused number, for the writer to refuse), answered with a
            # read off the writer (an honest new claim is above it: no read)
            try:
                replayed = await asyncio.wait_for(self._read_replay(signed, peer), timeout)
            except TimeoutError:  # the read goes on in its thread; the caller is answered
                raise StorageError(
                    f"the receipt of this already logged claim was not read within"
                    f" {timeout:g} s (the server is busy): submit it again"
                ) from None
            if replayed is not None:
                return replayed
        key = self._device_keys.get(signed.key_id)
        if key is None:
            loop = asyncio.get_running_loop()
            key = await loop.run_in_executor(reads, self._device_key, signed.key_id)
        return self._pending(signed, claim, key)

    async def logged_replay(self, signed: SignedClaim, peer: str = "") -> Appended | None:
        """The receipt of ``signed`` when it is a replay of an envelope the log holds,
        numbered at or below the device's last logged sequence this server knows of
        (`submit_async`), read in the replay thread; None otherwise (no read when the
        number is above). For a submission refused before the writer (a device over its
        quota retrying a lost answer). Raises ClaimError, StorageError,
        LogIntegrityError, LimitError (`FairReads.run`)."""
        if self._claim(signed).sequence > self._logged_seq.get(signed.key_id, 0):
            return None
        return await self._read_replay(signed, peer)

    async def _read_replay(self, signed: SignedClaim, peer: str) -> Appended | None:
        """`_logged_replay` in the replay readers, in ``peer``'s turn (`FairReads`)."""
        return await self._replay_reads.run(peer, functools.partial(self._logged_replay, signed))

    def _logged_replay(self, signed: SignedClaim) -> Appended | None:
        """The receipt of ``signed`` when the log holds this very envelope (the same claim
        with the same signature, verified when it was logged: not checked again), read
        from the store (one leaf, its checkpoint and proof nodes) in the calling thread,
        not the writer's; None when it does not (the writer decides). Raises StorageError,
        LogIntegrityError."""
        rec = self.store.leaf_by_claim_hash(signed.claim_hash)
        if rec is None:
            return None
        try:
            logged, _ = wire.decode_log_entry(rec.entry)
        except ClaimError:  # a damaged entry: the writer's answer, as for any replay
            return None
        if logged != signed:  # another signature of the claim: the writer checks it
            return None
        return Appended(self._receipt(rec), duplicate=True)

    def _note_logged(self, device_id: bytes, sequence: int) -> None:
        """Remember that the log holds ``sequence`` (or more) for the device, for the
        last `DEVICE_KEYS_CACHED` devices."""
        with self._device_keys_lock:
            kept = self._logged_seq.pop(device_id, 0)
            if len(self._logged_seq) >= DEVICE_KEYS_CACHED:  # the oldest noted goes
                self._logged_seq.pop(next(iter(self._logged_seq)), None)
            self._logged_seq[device_id] = max(kept, sequence)

    @staticmethod
    def _claim(signed: SignedClaim) -> Claim:
        """The decoded claim of a submission, within the structural limits; raises
        ClaimError."""
        # measured before it is parsed, counted before anything is converted: this runs
        # on the event loop, before the signature is checked
        check_claim_length(signed)
        message = wire.claim_message(signed.claim_bytes)
        check_claim_counts(signed, len(message.soft_bindings), len(message.metadata))
        claim = wire.claim_from_message(message)
        check_claim_shape(signed, claim)
        return claim

    @staticmethod
    def _pending(signed: SignedClaim, claim: Claim, public_key: bytes) -> PendingClaim:
        """The claim for the writer, which checks its signature under the device's
        ``public_key`` (off the event loop, the GIL released: `PendingClaim`; a forgery is
        refused with SignatureError before any store access), then decides in its
        transaction what needs the log's current state: a replay (the original receipt),
        the revocation in force (registry row and logged revocations), the sequence."""
        return PendingClaim(signed, claim, verify_under=public_key)

    def _device_key(self, device_id: bytes) -> bytes:
        """The public key of an enrolled device (raw 32 bytes), read from the store once
        (or kept when it enrolls here) for the last `DEVICE_KEYS_CACHED` devices. Always
        current: a device id is the SHA-256 of its key, so the key of an id never changes
        (its revocation may, and is never read from here). Raises UnknownDeviceError."""
        key = self._device_keys.get(device_id)
        if key is None:
            row = self.store.get_device(device_id)
            key = row.public_key
            self._remember_key(device_id, key)
            self._note_logged(device_id, row.last_sequence)
        return key

    def knows_device_key(self, device_id: bytes) -> bool:
        """Whether the key of ``device_id`` is kept (a submission then reads no store)."""
        return device_id in self._device_keys

    def read_device_key(self, signed: SignedClaim) -> None:
        """Check the claim's shape, then read and keep its device's key (one store read):
        what a submission from a device whose key is not kept does first, so that an
        unknown device costs that one read and no other (no quota count). Raises
        ClaimError, UnknownDeviceError, StorageError."""
        self._claim(signed)
        self._device_key(signed.key_id)

    def _remember_key(self, device_id: bytes, public_key: bytes) -> None:
        with self._device_keys_lock:
            if len(self._device_keys) >= DEVICE_KEYS_CACHED:  # the oldest kept goes
                self._device_keys.pop(next(iter(self._device_keys)), None)
            self._device_keys[device_id] = public_key

    # ---------------------------------------------------------------- verification

    def _logged(self, rec: LeafRecord, notes: list[str] | None = None) -> LoggedClaim:
        """The logged claim of a leaf, its receipt checked against the log key.

        Raises LogIntegrityError when the entry or its receipt no longer verify: the
        fault is the database's, not the file's."""
        try:
            signed, _ = wire.decode_log_entry(rec.entry)
            receipt = self._receipt(rec)
            verify_receipt(receipt, signed, self.verifier)
            claim = wire.decode_claim(signed.claim_bytes)
        except StorageError:  # an outage, not damage: its own status and public words
            raise
        except ProvenanceError as e:
            said = f"log entry {rec.index} or its receipt does not verify with the log key"
            raise LogIntegrityError(
                f"{said}: the log database is damaged ({e})", public=f"{said}: {DAMAGED}"
            ) from e
        device = self.store.find_device(claim.device_id)
        if device is None:
            raise LogIntegrityError(
                f"the device of log entry {rec.index} is missing from the registry: the log"
                " database is damaged"
            )
        return LoggedClaim(
            signed_claim=signed,
            claim=claim,
            receipt=receipt,
            device=self.device_in_force(device, notes),
            chain_linked=rec.chain_linked,
            receipt_verified=True,
        )

    def verify(
        self,
        facts: FileFacts,
        sidecar: SignedClaim | None = None,
        sidecar_chunk_hashes: tuple[bytes, ...] = (),
        sidecar_receipt: Receipt | None = None,
        sidecar_public_key: bytes = b"",
        budget: SearchBudget | None = None,
    ) -> VerificationReport:
        """The cryptographic verdict on a file described by ``facts`` (and its sidecar).

        A sidecar whose claim does not decode is not used, and the report says so: it can
        neither block the verdict nor change it (a file without it gets the same one). The
        sidecar's ``sidecar_receipt``, when this log signed it for a claim the log no
        longer holds, is reported as a log rollback (`provenance.server.rollback`). At
        most `MAX_EXACT_CLAIMS` logged claims per file hash are examined, the first by log
        index (one more is read, to know of more), and the sidecar's own logged claim when
        it is not among them. ``sidecar_public_key``, the raw key the sidecar carries, only
        words the reason on a sidecar whose key is not enrolled (`decide`). ``budget``
        (None: none) bounds the time of its near-duplicate searches (`SearchBudget`): one
        cut short leaves the exact (SHA-256) and sidecar verdicts as they are, and the
        report says so (`decide`'s ``near_cut_s``: ``Evidence.near_search_cut``, and a
        reason in place of "no signed claim ... matches these pixels"). A ``budget``
        already cut (a video's dense pass after its 1 Hz frames' search was cut) marks
        this report cut too, whether or not its own search is.
        Raises LogIntegrityError when a log record found for the file is damaged, and
        StorageError when the store cannot be read."""
        now = self.clock()
        notes: list[str] = []
        report = self._verify(
            now,
            notes,
            facts,
            sidecar,
            sidecar_chunk_hashes,
            sidecar_receipt,
            sidecar_public_key,
            budget,
        )
        return _with_notes(report, notes)

    def verify_many(
        self,
        many: Sequence[FileFacts],
        packed_turns: Sequence[bytes] = (),
        deadline: float | None = None,
    ) -> list[VerificationReport | LogIntegrityError]:
        """`verify` of each file (no sidecars), in order, with the store read once for all
        of them by SHA-256 (`Store.leaves_by_file_sha256_many`, at most `MAX_EXACT_CLAIMS`
        per hash) and the near-duplicate index searched once for those without an exact
        match (`MihIndex.search_codes`): the Lookup RPC's batch. ``packed_turns``, when
        given, holds for each file (in order) a photo's turned PDQ hashes packed 32 bytes
        each, of its one soft binding's quality (a Lookup's ``pdq_dihedral`` after the
        first hash; b"" for none): they are searched as raw codes and become its
        ``dihedral_soft_bindings`` only for a file with an exact or near candidate (what
        the verdict reads them for), the same answers as with them in the facts, without
        8 objects per photo for the many files with neither. A file whose logged record is
        damaged gets its LogIntegrityError in its place, the others their reports.
        ``deadline`` (time.monotonic, None: none) is checked between the near-duplicate
        search's rounds (`_search_grouped`), those of a search again after a revocation
        (`_near_logged`) included. Raises StorageError when the store cannot be
        read, DeadlineError when the search is still learning whose its hits are at
        ``deadline``."""
        now = self.clock()
        hashes = [_file_hashes(f) for f in many]
        records = self.store.leaves_by_file_sha256_many(
            [h for hs in hashes for h in hs], MAX_EXACT_CLAIMS + 1
        )
        found = [[_bounded(records.get(h, ())) for h in hs] for hs in hashes]
        exact_recs = [[r for recs, _ in per_file for r in recs] for per_file in found]
        exact_more = [any(more for _, more in per_file) for per_file in found]
        turns = packed_turns or [b""] * len(many)
        near_ids = self._near_candidates_many(
            [
                () if recs else f.soft_bindings + f.dihedral_soft_bindings
                for f, recs in zip(many, exact_recs, strict=True)
            ],
            turns=[b"" if recs else t for t, recs in zip(turns, exact_recs, strict=True)],
            frames=[len(f.soft_bindings) for f in many],
            deadline=deadline,
        )
        out: list[VerificationReport | LogIntegrityError] = []
        for f, recs, ids, more, packed in zip(
            many, exact_recs, near_ids, exact_more, turns, strict=True
        ):
            if packed and (recs or ids):  # a candidate: the verdict reads the turns
                f = replace(
                    f,
                    dihedral_soft_bindings=(
                        *f.dihedral_soft_bindings,
                        *pdq_hashes(packed, f.soft_bindings[0].quality),
                    ),
                )
            notes: list[str] = []
            try:
                exact = [self._logged(r, notes) for r in recs]
                near = self._near_logged(
                    ids,
                    f.soft_bindings + f.dihedral_soft_bindings,
                    len(f.soft_bindings),
                    notes,
                    deadline=deadline,
                )
            except LogIntegrityError as e:
                out.append(e)
                continue
            report = decide(f, now, exact=exact, near=near, exact_more=more)
            out.append(_with_notes(with_time_flags(report), notes))
        return out

    def _verify(
        self,
        now: datetime,
        notes: list[str],
        facts: FileFacts,
        sidecar: SignedClaim | None,
        sidecar_chunk_hashes: tuple[bytes, ...],
        sidecar_receipt: Receipt | None,
        sidecar_public_key: bytes = b"",
        budget: SearchBudget | None = None,
    ) -> VerificationReport:
        found = [
            _bounded(self.store.leaves_by_file_sha256(h, MAX_EXACT_CLAIMS + 1))
            for h in _file_hashes(facts)
        ]
        exact_more = any(more for _, more in found)
        exact = [self._logged(r, notes) for recs, _ in found for r in recs]
        unusable = None
        claim = None
        if sidecar is not None:
            try:
                claim = wire.decode_offered_claim(sidecar.claim_bytes)
            except ProvenanceError as e:
                unusable = (
                    f"a sidecar came with the file but its claim cannot be read ({e});"
                    " it was not used"
                )
                sidecar = None
        soft = facts.soft_bindings + facts.dihedral_soft_bindings
        frames = len(facts.soft_bindings)
        # a dense pass's verify: its 1 Hz frames' search was cut. The dense frames'
        # verdict rests on that search too (it found nothing before the dense pass ran,
        # and the dense frames are no superset of its queries), so the mark stays
        earlier = budget is not None and budget.cut
        if budget is not None:
            budget.cut = False  # this verification's searches (`_near_logged` resets it)
        near = (
            []
            if exact
            else self._near_logged(
                self._near_candidates(soft, frames, budget=budget),
                soft,
                frames,
                notes,
                budget=budget,
            )
        )
        if budget is not None:
            budget.cut = budget.cut or earlier
        cut_s = budget.spent if budget is not None and budget.cut else None
        if sidecar is None or claim is None:
            report = with_time_flags(
                decide(facts, now, exact=exact, near=near, exact_more=exact_more, near_cut_s=cut_s)
            )
            return (
                report if unusable is None else replace(report, reasons=(*report.reasons, unusable))
            )
        rec = self.store.leaf_by_claim_hash(sidecar.claim_hash)
        sidecar_row = self.store.find_device(sidecar.key_id)
        sidecar_logged = self._logged(rec, notes) if rec else None
        if (  # a sidecar's logged claim of these bytes is examined even past the bound
            sidecar_logged is not None
            and exact_more
            and all(lc.signed_claim.claim_hash != sidecar.claim_hash for lc in exact)
        ):
            exact.append(sidecar_logged)
        report = with_time_flags(
            decide(
                facts,
                now,
                exact=exact,
                near=near,
                sidecar=sidecar,
                sidecar_claim=claim,
                sidecar_device=(self.device_in_force(sidecar_row, notes) if sidecar_row else None),
                sidecar_logged=sidecar_logged,
                sidecar_chunk_hashes=sidecar_chunk_hashes,
                exact_more=exact_more,
                sidecar_public_key=sidecar_public_key,
                near_cut_s=cut_s,
            )
        )
        if sidecar_receipt is None or rec is not None:
            return report
        size = self.store.tree_size()
        return with_lost_receipt(report, sidecar, sidecar_receipt, self.verifier, size)

    def _near_logged(
        self,
        ids: list[int],
        soft: tuple[PerceptualHash, ...],
        frames: int,
        notes: list[str],
        deadline: float | None = None,
        budget: SearchBudget | None = None,
    ) -> list[LoggedClaim]:
        """The logged claims of near candidates ``ids`` (of ``soft``, whose first ``frames``
        hashes vote: `_near_candidates`), read for the verdict. When a candidate's device
        was grouped with another revocation than the one now in force (`_forget_groups`:
        revoked since), the candidates are found again with its groups read anew, so a
        thief's claims a new revocation covers do not hold the places of the device's
        earlier captures; those searches keep to ``deadline`` and ``budget`` as the first
        (`_search_grouped`: before, they had none, and a device revoked since learnt all
        its leaves' groups again in as many rounds as it took). Raises LogIntegrityError
        for a damaged entry, DeadlineError as `_search_grouped`."""
        for _ in range(3):  # a revocation between two reads: once more; then as it stands
            said: list[str] = []
            near = [
                self._logged(rec, said)
                for idx in ids
                if (rec := self.store.leaf_by_index(idx)) is not None
            ]
            if not self._forget_groups(near):
                break
            if budget is not None:  # the search again replaces the first: its own cut
                budget.cut = False
            ids = self._near_candidates(soft, frames, deadline=deadline, budget=budget)
        notes.extend(said)
        return near

    def _search_grouped(
        self,
        codes: list[bytes | None],
        deadline: float | None = None,
        budget: SearchBudget | None = None,
    ) -> list[list[tuple[int, int]]]:
        """The NEAR_PLACES (16) index answers of each of ``codes``, filled round-robin over
        groups (`_round_robin`: each group's nearest before any group's second, at most
        NEAR_PER_DEVICE of one), nearest first: picked from its NEAR_SEARCHED (64) nearest
        with NEAR_PER_DEVICE a group (`MihIndex.search_codes`' share), which hold them. A
        leaf whose group is not known yet (logged before this start: no scan of the log at
        start) is a group of its own until a search hits it; then the groups of every such
        leaf in the answers still open are read at once (`_learn_groups`) and each open
        answer is cut to the share again (`_share_cut`): it is settled when NEAR_SEARCHED
        answers stay, or when its search had fewer answers than asked (every hit is in
        it). A code not settled is searched again: with twice its previous answers, the
        first codes of the round while all fit `GROUP_ROUND_ANSWERS`, the others with
        NEAR_SEARCHED. So one device's N leaves near a code cost about log2(N / 32) rounds
        once (before: N / 60 rounds, each a search of all N hits: 10^5 planted claims,
        1,668 rounds, 94 s; bench/bench_group_rounds.py). Equal codes (a static scene's
        frames) are searched once. Raises DeadlineError when another round is due at or
        after ``deadline`` (time.monotonic; None: none). With a ``budget`` instead
        (VerifyFile's, `SearchBudget`), a round due once it is spent is not searched: the
        answers not settled are their best places found by then, `SearchBudget.cut` is
        set, and the time the search ran is added to its ``spent``."""
        if budget is None:
            return self._search_rounds(codes, deadline, None)
        t0 = time.monotonic()
        try:
            return self._search_rounds(codes, budget.deadline(), budget)
        finally:
            budget.spent += time.monotonic() - t0

    def _search_rounds(
        self, codes: list[bytes | None], deadline: float | None, budget: SearchBudget | None
    ) -> list[list[tuple[int, int]]]:
        """`_search_grouped`'s rounds, given up at ``deadline``: DeadlineError, or with a
        ``budget`` the places found by then."""
        unique = list(dict.fromkeys(codes))  # a static scene's frames: one code, one search
        if len(unique) < len(codes):
            at = {code: k for k, code in enumerate(unique)}
            answers = self._search_rounds(unique, deadline, budget)
            return [answers[at[code]] for code in codes]
        share = (self._devices_of, NEAR_PER_DEVICE)
        limits = [NEAR_SEARCHED] * len(codes)
        forgotten = self._forgotten
        found = self.pdq.search_codes(codes, limit=NEAR_SEARCHED, share=share)
        done: dict[int, list[tuple[int, int]]] = {}
        rounds = 1
        while True:
            arr = self._leaf_groups
            open_ = [k for k in range(len(codes)) if k not in done]
            unknown = {
                idx for k in open_ for _, idx in found[k] if idx >= len(arr) or arr[idx] == -1
            }
            self._learn_groups(sorted(unknown))
            again: list[int] = []
            #: the best places of each answer not settled, should its search stop here
            partial: dict[int, list[tuple[int, int]]] = {}
            if self._forgotten != forgotten:  # groups forgotten since: these cuts are stale
                again = open_
                partial = {k: found[k][:NEAR_PLACES] for k in open_}
            else:
                ids = np.fromiter(
                    (idx for k in open_ for _, idx in found[k]),
                    dtype=np.int64,
                    count=sum(len(found[k]) for k in open_),
                )
                # every open answer's groups in one read (a Lookup part: thousands of codes)
                arr = self._leaf_groups
                inside = ids < len(arr)
                learning = ~inside
                learning[inside] = arr[ids[inside]] == -1
                groups = self._devices_of(ids).tolist()
                end = 0
                for k in open_:
                    start, end = end, end + len(found[k])
                    cut, settled = (
                        (found[k], False)
                        if learning[start:end].any()
                        else self._share_cut(found[k], limits[k], groups[start:end])
                    )
                    if settled:
                        done[k] = cut
                    else:
                        again.append(k)
                        partial[k] = cut[:NEAR_PLACES]
            if not again:
                return [done[k] for k in range(len(codes))]
            if deadline is not None and time.monotonic() >= deadline:
                if budget is not None:  # VerifyFile: the best found so far, marked cut
                    budget.cut = True
                    return [done[k] if k in done else partial[k] for k in range(len(codes))]
                raise DeadlineError(
                    f"the near-duplicate search ran out of time before its round {rounds + 1},"
                    f" still learning whose the entries near {len(again)} of its"
                    f" {len(codes)} perceptual hashes are"
                )
            rounds += 1
            spent = 0
            for n, k in enumerate(again):
                grown = limits[k]  # groups forgotten: the same answers again
                if self._forgotten == forgotten:
                    grown = min(2 * grown, GROUP_ROUND_ANSWERS)
                if n and spent + grown > GROUP_ROUND_ANSWERS:
                    grown = NEAR_SEARCHED
                limits[k] = grown
                spent += grown
            forgotten = self._forgotten
            for limit in sorted({limits[k] for k in again}):
                ks = [k for k in again if limits[k] == limit]
                listed = self.pdq.search_codes([codes[k] for k in ks], limit=limit, share=share)
                for k, answer in zip(ks, listed, strict=True):
                    found[k] = answer

    @staticmethod
    def _share_cut(
        listed: list[tuple[int, int]], asked: int, groups: Sequence[int]
    ) -> tuple[list[tuple[int, int]], bool]:
        """``listed`` (a search's (distance, leaf) answers, nearest first, ``asked`` at
        most, each leaf's group known: ``groups``, `_devices_of`) cut to NEAR_PER_DEVICE
        places a group, its first
        NEAR_SEARCHED, then its NEAR_PLACES round-robin over groups (`_round_robin`),
        nearest first; and whether that is the answer a search would give now (every leaf
        kept is of a known group, and NEAR_SEARCHED stay or the search had fewer answers
        than asked: a hit it left out is past all it holds, and a group cut before is cut
        the same now; the round-robin's places lie among those, `NEAR_SEARCHED`)."""
        taken: dict[int, int] = {}
        cut: list[tuple[int, int]] = []
        kept: list[int] = []
        for hit, group in zip(listed, groups, strict=True):
            if taken.get(group, 0) < NEAR_PER_DEVICE:
                taken[group] = taken.get(group, 0) + 1
                cut.append(hit)
                kept.append(group)
                if len(cut) == NEAR_SEARCHED:
                    break
        places = [cut[i] for i in _round_robin(kept, NEAR_PLACES)]
        return places, len(cut) == NEAR_SEARCHED or len(listed) < asked

    def _near_candidates(
        self,
        soft: tuple[PerceptualHash, ...],
        frames: int | None = None,
        limit: int = 8,
        deadline: float | None = None,
        budget: SearchBudget | None = None,
    ) -> list[int]:
        """Leaf indexes whose soft bindings are near ``soft``: for one image hash the
        nearest first; for video frames the leaves hit by the most frames first (at most
        MAX_QUERY_FRAMES frames, evenly spread, are searched). The first ``frames`` hashes
        (all when None) each vote; those after them (a photo's turned hashes) vote with
        the first. At most NEAR_PER_DEVICE leaves of one group, round-robin over groups
        (`_round_robin`); a video's (more than one frame votes) also the first ``limit`` in
        order of votes (`_in_order`): up to 2 x ``limit``. ``deadline`` and ``budget`` as
        `_search_grouped` takes them."""
        return self._near_candidates_many(
            [soft],
            limit,
            frames=[len(soft) if frames is None else frames],
            deadline=deadline,
            budget=budget,
        )[0]

    def _near_candidates_many(
        self,
        softs: Sequence[tuple[PerceptualHash, ...]],
        limit: int = 8,
        turns: Sequence[bytes] = (),
        frames: Sequence[int] = (),
        deadline: float | None = None,
        budget: SearchBudget | None = None,
    ) -> list[list[int]]:
        """`_near_candidates` of each file's ``softs``, the index searched once for all;
        ``turns`` (by file, when given): more hashes of each, packed 32 bytes each, of its
        first soft binding's quality (`verify_many`), searched after its ``softs``.
        ``frames`` (by file, when given): how many of its first hashes vote each (the
        rest, a photo's turned hashes, vote as its first): a claim planting the 7 turns
        of a photo's code gains no votes over an honest near copy. Each query hash's index
        answer and each file's candidates hold at most NEAR_PER_DEVICE leaves of one
        group, filled round-robin over groups (`_round_robin`: the most votes, then the
        nearest, of each group before any group's second). A file whose hashes vote as
        more than one frame (a video) also gets the first ``limit`` of them in order of
        votes, at most NEAR_PER_DEVICE a group (`_in_order`), up to 2 x ``limit`` in all: its
        verdict lines frames up in time, which votes do not show, and a group's second by
        votes may be the clip that lines up, which the round-robin puts behind every
        group's first however few their votes. ``deadline`` and ``budget`` as
        `_search_grouped` takes them; raises DeadlineError as it does."""
        if not len(self.pdq):  # an empty log: nothing near anything
            return [[] for _ in softs]
        spread: list[list[bytes | None]] = []
        voters: list[list[int]] = []  # each code's vote: its frame (a turn votes as its own)
        video: list[bool] = []  # more than one frame votes: the verdict lines frames up in time
        for k, soft in enumerate(softs):
            n = len(soft)
            picks: Sequence[int] = range(n)
            if n > MAX_QUERY_FRAMES:
                step = n / MAX_QUERY_FRAMES
                picks = [int(i * step) for i in range(MAX_QUERY_FRAMES)]
                soft = tuple(soft[i] for i in picks)
            codes: list[bytes | None] = [h.hash if searchable(h) else None for h in soft]
            origins = list(picks)
            if turns and (packed := turns[k]):
                ok = bool(soft) and searchable(soft[0])
                codes += [
                    packed[i : i + PDQ_HASH_SIZE] if ok else None
                    for i in range(0, len(packed), PDQ_HASH_SIZE)
                ]
                origins += range(n, n + len(packed) // PDQ_HASH_SIZE)
            own = max(1, frames[k]) if frames else max(1, n)
            video.append(own > 1)
            # frames first, then each turn of the frames in order (a photo: 1 frame)
            voters.append([o if o < own else (o - own) % own for o in origins])
            spread.append(codes)
        found = self._search_grouped([c for codes in spread for c in codes], deadline, budget)
        out: list[list[int]] = []
        end = 0
        for k, codes in enumerate(spread):
            start, end = end, end + len(codes)
            if not any(found[start:end]):  # no hash of this file near any: most files
                out.append([])
                continue
            best: dict[int, int] = {}
            votes: dict[int, set[int]] = {}
            for voter, listed in zip(voters[k], found[start:end], strict=True):
                for dist, idx in listed:
                    best[idx] = min(dist, best.get(idx, dist))
                    votes.setdefault(idx, set()).add(voter)
            ranked = sorted(best, key=lambda i: (-len(votes[i]), best[i]))
            groups = self._devices_of(np.asarray(ranked, dtype=np.int64)).tolist()
            out.append([ranked[i] for i in _near_choice(groups, limit, video[k])])
        return out

    # ---------------------------------------------------------------- log

    def latest_checkpoint(self) -> str:
        """The newest signed checkpoint (C2SP note text): the database's; while it cannot
        answer, the newest this server signed or read (`StoreReads.latest`: signed, maybe
        not the newest when other servers share the database). Raises LogError for an
        empty log, StorageError when the database cannot answer and none is held."""
        latest = self.reads.latest()
        if latest is None:
            raise LogError("the log is empty: no checkpoint yet")
        return latest[1]

    def _size_or_latest(self, size: int) -> int:
        latest = self.store.latest_checkpoint()
        current = latest[0] if latest else 0
        if size == 0:
            return current
        if size > current:
            raise LogError(f"tree size {size} is beyond the log's size {current}")
        return size

    def inclusion_proof(
        self, size: int, index: int | None = None, leaf_hash: bytes | None = None
    ) -> tuple[int, int, list[bytes], bytes]:
        """(leaf index, tree size, proof, leaf hash) for a leaf given by index or hash."""
        size = self._size_or_latest(size)
        if index is not None and index >= size:
            raise LogError(f"leaf {index} is not in the tree of size {size}")
        if index is not None:
            rec = self.store.leaf_by_index(index)
            if rec is None:
                raise LogError(f"leaf {index} is not in the log")
        else:
            wanted = leaf_hash or b""
            rec = self.store.leaf_by_leaf_hash(wanted)
            if rec is None:
                raise LeafNotFoundError(f"no entry with the leaf hash {wanted.hex()} is in the log")
        if rec.index >= size:
            raise LogError(f"leaf {rec.index} is not in the tree of size {size}")
        proof = merkle.inclusion_proof(rec.index, size, self.store.get_nodes)
        return rec.index, size, proof, rec.leaf_hash

    def consistency_proof(self, first: int, second: int) -> tuple[int, int, list[bytes]]:
        """(first, second, proof): an RFC 9162 consistency proof from the tree of ``first``
        entries to that of ``second`` (0: the latest). Raises LogError naming the size
        (the request's first_size, second_size) no proof runs from or to: a first of 0,
        a size past the log's, a second below the first."""
        if first < 1:
            raise LogError(
                "first_size must be at least 1: a consistency proof starts from a tree of at"
                " least one entry (every tree extends the empty one, so from size 0 there is"
                " nothing to prove)"
            )
        latest = self.store.latest_checkpoint()
        current = latest[0] if latest else 0
        if second > current:
            raise LogError(f"second_size {second} is past the log's size {current}")
        if not second and first > current:
            raise LogError(f"first_size {first} is past the log's size {current}")
        second = second or current
        if first > second:
            raise LogError(
                f"second_size {second} is below first_size {first}: a proof runs from the"
                " smaller tree to the larger one"
            )
        return first, second, merkle.consistency_proof(first, second, self.store.get_nodes)

    def entries(self, start: int, limit: int) -> tuple[list[bytes], int]:
        """Leaf data from ``start``, at most ``limit`` (capped at `MAX_ENTRIES_PAGE`, 1000;
        0: `DEFAULT_ENTRIES_PAGE`, 100); returns (entries, next).

        Raises LogError when ``start`` is beyond the latest checkpoint's tree size."""
        limit = max(1, min(limit or DEFAULT_ENTRIES_PAGE, MAX_ENTRIES_PAGE))
        size = self._size_or_latest(0)
        if start > size:
            raise LogError(f"start {start} is beyond the log's size {size}")
        got = self.store.entries(start, limit)
        for want, (idx, _) in enumerate(got, start):
            if idx != want:
                raise LogIntegrityError(
                    f"log entry {want} is missing from the database: it was deleted behind the"
                    " log's back"
                )
        return [e for _, e in got], start + len(got)

    def receipt_for_claim(self, claim_hash: bytes) -> Receipt | None:
        rec = self.store.leaf_by_claim_hash(claim_hash)
        return None if rec is None else self._receipt(rec)

    def _receipt(self, rec: LeafRecord) -> Receipt:
        """The receipt of a stored leaf, rebuilt (`provenance.log.receipt.build_receipt`);
        raises LogIntegrityError when the store cannot back it."""
        covering = self.store.checkpoint_covering(rec.index)
        return build_receipt(
            rec.index, rec.entry, rec.integrated_at, covering, self.store.get_nodes
        )
