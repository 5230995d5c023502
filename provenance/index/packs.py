"""The near-duplicate index kept in the store as packs, so a server starts without
decoding a row per hash.

A pack (`provenance.store.HashPack`) holds the usable PDQ hashes of ``PACK_LEAVES``
consecutive leaves as two arrays (leaf ids and hash words) and whether any of those
leaves has video frame hashes. Stored, both are little-endian 64-bit integers (the ids;
the values of each hash's four big-endian words), so a load reads them in place. Leaves never change once appended, so a full pack never
changes either: a running server writes the packs that became full (`write_packs`, from
its upkeep thread), and a start (`load_index`) reads the packs from leaf 0 on (a few
large blobs: about 40 bytes per hash, 0.4 GB at 10^7) and only the leaves after the last
pack row by row. The hashes a start loads are every usable hash of the log: a search
never misses a capture, before or after the index's tables are built
(`provenance.index.mih.MihIndex.warming`).

Packs are derived from the soft-hash rows (neither is covered by the signed tree). Each
pack's SHA-256 (`pack_digest`: over its leaf range, video flag and arrays) is kept in the
store's meta table beside it; a pack whose digest is missing or differs, or that is not
shaped as packs are (a gap, ids outside its range or out of order, a size mismatch), is
not used: the leaves from it on are read row by row (and the pack written again), and a
warning says so. The digest catches a pack damaged on disk or half-written, not an
operator who rewrites the pack and its digest (or the rows): `prov log audit --db`
compares both with the logged entries (`provenance.index.audit`).
"""

from __future__ import annotations

import hashlib
import logging
import struct
from dataclasses import dataclass

import numpy as np

from provenance.store import HashPack, Store

log = logging.getLogger(__name__)

#: Leaves per pack (at one image hash per leaf, a pack is about 2.6 MB).
PACK_LEAVES = 1 << 16
#: Meta key of the digest of the pack starting at a leaf (`pack_digest`).
DIGEST_KEY = "index_pack_sha256:{first}"


def pack_digest(p: HashPack) -> str:
    """Hex SHA-256 (FIPS 180-4) of a pack as stored: first and next leaf and video flag
    (little-endian int64, int64, byte), then the ids as little-endian int64 and the hash
    words' values as little-endian uint64 (the stored blobs' bytes)."""
    h = hashlib.sha256(struct.pack("<qqB", p.first, p.next, int(p.video)))
    h.update(np.ascontiguousarray(p.ids.astype("<i8", copy=False)).data)
    h.update(np.ascontiguousarray(p.words.astype("<u8", copy=False)).data)
    return h.hexdigest()


@dataclass(frozen=True)
class LoadedIndex:
    """What `load_index` read: every usable hash of leaves [0, size), in ``parts`` (the
    stored packs, then ``tail``: the leaves after them, read row by row)."""

    parts: list[HashPack]
    tail: HashPack
    #: leaves covered by stored packs (tail.first)
    packed: int

    @property
    def hashes(self) -> int:
        return sum(len(p.ids) for p in self.parts)

    @property
    def video(self) -> bool:
        return any(p.video for p in self.parts)


def _sound(p: HashPack, first: int) -> bool:
    ids = p.ids
    return (
        p.first == first
        and p.next == first + PACK_LEAVES
        and len(ids) == len(p.words)
        and (len(ids) == 0 or (int(ids[0]) >= p.first and int(ids[-1]) < p.next))
        and bool(np.all(ids[1:] >= ids[:-1]))
    )


def load_index(store: Store, size: int) -> LoadedIndex:
    """Every usable PDQ hash of leaves [0, size): stored packs from leaf 0 on while they
    are sound, match their digests and are within ``size``, then the soft-hash rows of the rest. The arrays are
    not copied again (at 10^7 hashes they take 0.4 GB).

    Raises StorageError or LogIntegrityError from the store.
    """
    parts: list[HashPack] = []
    packed = 0
    for p in store.stored_packs(0):
        if p.next > size:
            break
        if not _sound(p, packed):
            why = "is not shaped as a pack"
        elif store.get_meta(DIGEST_KEY.format(first=p.first)) != pack_digest(p):
            why = "does not match its stored SHA-256 (damaged, or written before digests)"
        else:
            why = ""
        if why:
            log.warning(
                "the near-duplicate index pack at leaf %d %s; reading leaves %d to %d row by row",
                p.first,
                why,
                packed,
                size,
            )
            break
        parts.append(p)
        packed = p.next
    tail = store.hash_pack(packed, size)
    return LoadedIndex([*parts, tail], tail, packed)


def write_packs(store: Store, covered: int, size: int, tail: HashPack | None = None) -> int:
    """Store the packs that are full in a log of ``size`` leaves after the ``covered``
    leaves already packed; the hashes come from ``tail`` (the `LoadedIndex.tail` covering
    [covered, size)) where given, else from the soft-hash rows. Returns the leaves now
    covered by packs; each pack's digest is stored after it (a crash between the two
    leaves a pack without one, which the next start rebuilds). Raises StorageError from
    the store.
    """
    while covered + PACK_LEAVES <= size:
        first, nxt = covered, covered + PACK_LEAVES
        if tail is not None:
            lo, hi = np.searchsorted(tail.ids, [first, nxt])
            # the video flag is the tail's: the service only uses it for the whole log
            pack = HashPack(first, nxt, tail.ids[lo:hi], tail.words[lo:hi], tail.video)
        else:
            pack = store.hash_pack(first, nxt)
        store.put_pack(pack)
        store.set_meta(DIGEST_KEY.format(first=first), pack_digest(pack))
        covered = nxt
    return covered
