"""The in-memory fake: the `Store` interface over dictionaries, for fast in-process tests
(in the manner of python-tuf's repository simulator). Nothing survives `close`; an
append transaction works on copies and replaces the state only when it ends cleanly.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import datetime

import numpy as np

from provenance.core.binding import PDQ_HASH_SIZE, PDQ_MIN_QUALITY, PerceptualHash
from provenance.core.claims import Device
from provenance.core.errors import (
    AlreadyEnrolledError,
    EnrollmentError,
    LogError,
    UnknownDeviceError,
)
from provenance.core.registry import enrolled_already, merged_revocation
from provenance.store import (
    QUOTA_PREFIX,
    HashPack,
    IndexRow,
    LeafRecord,
    NewKeyLeaf,
    NewLeaf,
    SoftRow,
    add_usage,
    parse_usage,
    quota_key,
    storable_text,
    to_us,
)


@dataclass(frozen=True)
class _Token:
    label: str
    expires: datetime
    used: bool = False
    #: the device id of the key whose enrollment spent it
    device_id: bytes | None = None


@dataclass
class _State:
    """The store's tables. Only these containers change: what they hold is immutable
    (frozen dataclasses, bytes, str, tuples) and is replaced, never changed in place, so
    a copy of each container (`_copy`) is a snapshot a transaction can change alone."""

    meta: dict[str, str] = field(default_factory=dict)
    devices: dict[bytes, Device] = field(default_factory=dict)
    certificates: dict[bytes, str] = field(default_factory=dict)
    tokens: dict[bytes, _Token] = field(default_factory=dict)
    leaves: list[LeafRecord] = field(default_factory=list)
    soft: list[tuple[int, PerceptualHash]] = field(default_factory=list)
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)
    checkpoints: dict[int, str] = field(default_factory=dict)
    #: (leaf index, device id, kind) of key-history leaves
    key_events: list[tuple[int, bytes, int]] = field(default_factory=list)
    packs: dict[int, HashPack] = field(default_factory=dict)


def _copy(state: _State) -> _State:
    """A copy of ``state`` that shares no container with it (its elements, immutable, are
    shared): what a transaction works on, so that readers see none of it until it ends
    cleanly and an error leaves the store as it was. Before, a deep copy, which also
    copied every leaf, node and device: 90 ms a transaction at 2,000 leaves, 0.8 s at
    20,000, about 700 times this copy's cost (bench/bench_memory_append.py)."""
    return _State(**{f.name: copy.copy(getattr(state, f.name)) for f in fields(_State)})


def _nodes(state: _State, keys: Sequence[tuple[int, int]]) -> list[bytes]:
    missing = [k for k in keys if k not in state.nodes]
    if missing:
        raise LogError(f"log database is missing Merkle nodes {missing[:4]}")
    return [state.nodes[k] for k in keys]


def _latest(state: _State) -> tuple[int, str] | None:
    if not state.checkpoints:
        return None
    size = max(state.checkpoints)
    return size, state.checkpoints[size]


def _enroll(
    state: _State, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str
) -> Device:
    label = device.label
    storable_text(certificate_pem, "device certificate chain")
    token = None
    if token_hash is not None:
        token = state.tokens.get(token_hash)
        if token is None:
            raise EnrollmentError("unknown enrollment token")
        if token.used:
            spent_on = state.devices.get(device.device_id)
            if spent_on is not None and token.device_id == device.device_id:
                raise AlreadyEnrolledError(
                    "this enrollment token was already used",
                    spent_on,
                    state.certificates.get(device.device_id, ""),
                    token_spent_on_it=True,
                )
            raise EnrollmentError("this enrollment token was already used")
        if now > token.expires:
            raise EnrollmentError(f"this enrollment token expired at {token.expires}")
        label = token.label or label
    found = state.devices.get(device.device_id)
    if found is not None:
        raise enrolled_already(found, state.certificates.get(device.device_id, ""))
    if token is not None and token_hash is not None:
        state.tokens[token_hash] = replace(token, used=True, device_id=device.device_id)
    stored = Device(device.device_id, device.public_key, now, label=label)
    state.devices[device.device_id] = stored
    state.certificates[device.device_id] = certificate_pem
    return stored


def _revoke(state: _State, device_id: bytes, effective_at: datetime, reason: str) -> Device:
    storable_text(reason, "revocation reason")
    d = state.devices.get(device_id)
    if d is None:
        raise UnknownDeviceError(f"device {device_id.hex()} is not enrolled")
    when, why = merged_revocation(d, effective_at, reason)
    d = replace(d, revoked_at=when, revocation_reason=why)
    state.devices[device_id] = d
    return d


def _covering(state: _State, index: int) -> tuple[int, str] | None:
    size = min((s for s in state.checkpoints if s > index), default=None)
    return None if size is None else (size, state.checkpoints[size])


class _MemoryAppend:
    """`AppendTxn` over a private copy of the state."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def tree_size(self) -> int:
        return len(self.state.leaves)

    def latest_checkpoint(self) -> tuple[int, str] | None:
        return _latest(self.state)

    def checkpoint_covering(self, index: int) -> tuple[int, str] | None:
        return _covering(self.state, index)

    def leaves_by_claim_hash(self, claim_hashes: Sequence[bytes]) -> dict[bytes, LeafRecord]:
        want = set(claim_hashes)
        return {r.claim_hash: r for r in self.state.leaves if r.claim_hash in want}

    def find_devices(self, device_ids: Sequence[bytes]) -> dict[bytes, Device]:
        return {d: self.state.devices[d] for d in device_ids if d in self.state.devices}

    def revocation_entries(self, device_ids: Sequence[bytes]) -> list[tuple[int, bytes, bytes]]:
        want = set(device_ids)
        return [
            (i, dev, self.state.leaves[i].entry)
            for i, dev, kind in self.state.key_events
            if dev in want and kind >= 2
        ]

    def key_event_kinds(self, device_ids: Sequence[bytes]) -> set[tuple[bytes, int]]:
        want = set(device_ids)
        return {(dev, kind) for _, dev, kind in self.state.key_events if dev in want}

    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        return _nodes(self.state, keys)

    def put_nodes(self, nodes: Sequence[tuple[int, int, bytes]]) -> None:
        for level, idx, h in nodes:
            self.state.nodes[(level, idx)] = h

    def put_checkpoint(self, size: int, note: str, now: datetime) -> None:
        self.state.checkpoints[size] = note

    def enroll(
        self, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str
    ) -> Device:
        return _enroll(self.state, token_hash, device, now, certificate_pem)

    def revoke(self, device_id: bytes, effective_at: datetime, reason: str) -> Device:
        return _revoke(self.state, device_id, effective_at, reason)

    def all_devices(self) -> list[Device]:
        return sorted(self.state.devices.values(), key=lambda d: d.enrolled_at)

    def insert_key_events(self, start: int, leaves: Sequence[NewKeyLeaf]) -> None:
        if start != len(self.state.leaves):
            raise LogError(f"append at {start} but the log has {len(self.state.leaves)} leaves")
        for i, lf in enumerate(leaves):
            dev = lf.event.device_id
            self.state.leaves.append(
                LeafRecord(
                    start + i,
                    lf.leaf_hash,
                    lf.signed.event_hash,
                    dev,
                    0,
                    b"",
                    lf.integrated_at,
                    False,
                    lf.entry,
                )
            )
            self.state.key_events.append((start + i, dev, int(lf.event.kind)))

    def insert_leaves(self, start: int, leaves: Sequence[NewLeaf]) -> None:
        if start != len(self.state.leaves):
            raise LogError(f"append at {start} but the log has {len(self.state.leaves)} leaves")
        for i, lf in enumerate(leaves):
            self.state.leaves.append(
                LeafRecord(
                    start + i,
                    lf.leaf_hash,
                    lf.signed_claim.claim_hash,
                    lf.device_id,
                    lf.sequence,
                    lf.file_sha256,
                    lf.integrated_at,
                    lf.chain_linked,
                    lf.entry,
                )
            )
            self.state.soft.extend((start + i, h) for h in lf.soft_bindings)
            d = self.state.devices[lf.device_id]
            self.state.devices[lf.device_id] = replace(
                d, last_sequence=lf.sequence, last_claim_hash=lf.signed_claim.claim_hash
            )


class MemoryStore:
    """See module docstring."""

    location = ":memory:"
    shared = False

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.RLock()

    def started(self) -> None:
        """`Store.started`: a memory store holds nothing back."""

    def stop_waiting(self) -> None:
        """`Store.stop_waiting`: a memory store waits for nothing."""

    def close(self) -> None:
        with self._lock:
            self._state = _State()

    @contextmanager
    def append(self, wait_s: float | None = None) -> Iterator[_MemoryAppend]:
        with self._lock:
            work = _copy(self._state)
            yield _MemoryAppend(work)
            self._state = work

    # meta
    def get_meta(self, key: str) -> str | None:
        return self._state.meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._state.meta[key] = value

    def setdefault_meta(self, key: str, value: str) -> str:
        with self._lock:
            return self._state.meta.setdefault(key, value)

    # quotas
    def add_quota_usage(
        self, window: int, usage: Sequence[tuple[bytes, int, int]], keep_from: int
    ) -> None:
        with self._lock:
            meta = self._state.meta
            for device_id, claims, nbytes in usage:
                key = quota_key(window, device_id)
                meta[key] = add_usage(meta.get(key), claims, nbytes)
            oldest = quota_key(keep_from)
            for key in [k for k in meta if k.startswith(QUOTA_PREFIX) and k < oldest]:
                del meta[key]

    def quota_usage(self, device_id: bytes, windows: Sequence[int]) -> list[tuple[int, int]]:
        return [parse_usage(self._state.meta.get(quota_key(w, device_id))) for w in windows]

    # registry
    def find_device(self, device_id: bytes) -> Device | None:
        return self._state.devices.get(device_id)

    def get_device(self, device_id: bytes) -> Device:
        d = self.find_device(device_id)
        if d is None:
            raise UnknownDeviceError(f"device {device_id.hex()} is not enrolled")
        return d

    def add_token(self, token_hash: bytes, label: str, now: datetime, expires: datetime) -> None:
        storable_text(label, "enrollment token's label")
        with self._lock:
            self._state.tokens[token_hash] = _Token(label, expires)

    def enroll(
        self, token_hash: bytes | None, device: Device, now: datetime, certificate_pem: str = ""
    ) -> Device:
        with self._lock:
            return _enroll(self._state, token_hash, device, now, certificate_pem)

    def device_certificate(self, device_id: bytes) -> str:
        return self._state.certificates.get(device_id, "")

    def revoke(self, device_id: bytes, effective_at: datetime, reason: str) -> Device:
        with self._lock:
            return _revoke(self._state, device_id, effective_at, reason)

    def device_ids(self) -> Iterator[bytes]:
        with self._lock:
            ids = sorted(self._state.devices)
        yield from ids

    def key_event_entries(self, device_id: bytes) -> list[tuple[int, bytes]]:
        return [
            (i, self._state.leaves[i].entry)
            for i, dev, _ in list(self._state.key_events)
            if dev == device_id
        ]

    # log reads
    def get_nodes(self, keys: Sequence[tuple[int, int]]) -> list[bytes]:
        return _nodes(self._state, keys)

    def tree_size(self) -> int:
        return len(self._state.leaves)

    def latest_checkpoint(self) -> tuple[int, str] | None:
        return _latest(self._state)

    def checkpoint_covering(self, index: int) -> tuple[int, str] | None:
        return _covering(self._state, index)

    def leaf_by_claim_hash(self, claim_hash: bytes) -> LeafRecord | None:
        return _MemoryAppend(self._state).leaves_by_claim_hash([claim_hash]).get(claim_hash)

    def leaf_by_index(self, index: int) -> LeafRecord | None:
        leaves = self._state.leaves
        return leaves[index] if 0 <= index < len(leaves) else None

    def leaf_by_leaf_hash(self, leaf_hash: bytes) -> LeafRecord | None:
        return next((r for r in self._state.leaves if r.leaf_hash == leaf_hash), None)

    def leaves_by_file_sha256(self, sha256: bytes, limit: int | None = None) -> list[LeafRecord]:
        return self.leaves_by_file_sha256_many([sha256], limit).get(sha256, [])

    def leaves_by_file_sha256_many(
        self, hashes: Sequence[bytes], limit: int | None = None
    ) -> dict[bytes, list[LeafRecord]]:
        wanted = set(hashes)
        out: dict[bytes, list[LeafRecord]] = {}
        for r in self._state.leaves:
            if r.file_sha256 in wanted:
                out.setdefault(r.file_sha256, []).append(r)
        return {h: recs[:limit] for h, recs in out.items()}

    def node_hashes(self, level: int, start: int, stop: int) -> list[tuple[object, object]]:
        nodes = self._state.nodes
        return [(i, nodes[level, i]) for i in range(start, stop) if (level, i) in nodes]

    def nodes_outside(self, size: int, limit: int) -> list[tuple[object, object]]:
        top = size.bit_length()
        taken: dict[object, int] = {}  # per range, as the SQL backends read them
        outside: list[tuple[object, object]] = []
        for level, i in sorted(self._state.nodes):
            if level < 0 or level >= top:
                where: object = level < 0
            elif i < 0 or i >= size >> level:
                where = (level, i < 0)
            else:
                continue
            if taken.get(where, 0) < limit:
                taken[where] = taken.get(where, 0) + 1
                outside.append((level, i))
        return outside

    def checkpoint_rows(self, start: int) -> Iterator[tuple[int, str]]:
        cps = self._state.checkpoints
        yield from [(s, cps[s]) for s in sorted(cps) if s >= start]

    def entries(self, start: int, limit: int) -> list[tuple[int, bytes]]:
        return [(r.index, r.entry) for r in self._state.leaves[max(start, 0) : start + limit]]

    def key_event_rows(self, start: int) -> Iterator[tuple[int, object, object]]:
        yield from sorted(r for r in self._state.key_events if r[0] >= start)

    def iter_index_rows(self, start: int = 0) -> Iterator[IndexRow]:
        yield from [
            (r.index, r.leaf_hash, r.claim_hash, r.device_id, r.sequence, r.file_sha256,
             to_us(r.integrated_at), r.entry, int(r.chain_linked))
            for r in self._state.leaves[start:]
        ]  # fmt: skip

    def leaf_owners(self, indexes: Sequence[int]) -> list[tuple[int, bytes, datetime]]:
        leaves = self._state.leaves
        return [
            (i, leaves[i].device_id, leaves[i].integrated_at)
            for i in sorted(set(indexes))
            if 0 <= i < len(leaves)
        ]

    def hash_pack(self, start: int, stop: int) -> HashPack:
        soft = [(i, h) for i, h in self._state.soft if start <= i < stop]
        usable = [
            (i, h.hash)
            for i, h in soft
            if h.algorithm == "pdq"
            and h.quality >= PDQ_MIN_QUALITY
            and len(h.hash) == PDQ_HASH_SIZE
        ]
        ids = np.array([i for i, _ in usable], dtype=np.int64)
        words = np.frombuffer(b"".join(h for _, h in usable), dtype=">u8").astype(np.uint64)
        video = any(h.timestamp_seconds > 0 for _, h in soft)
        return HashPack(start, stop, ids, words.reshape(-1, 4), video)

    def soft_hash_rows(self, start: int, stop: int) -> list[SoftRow]:
        return sorted(
            (i, h.algorithm, h.hash, h.quality, h.timestamp_seconds)
            for i, h in self._state.soft
            if start <= i < stop
        )

    def stored_packs(self, start: int) -> Iterator[HashPack]:
        yield from [self._state.packs[k] for k in sorted(self._state.packs) if k >= start]

    def put_pack(self, pack: HashPack) -> None:
        with self._lock:
            self._state.packs[pack.first] = pack
