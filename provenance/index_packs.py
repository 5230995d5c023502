"""The near-duplicate index kept in the store as packs, so a server starts without
decoding a row per hash.

A pack (`provenance.store.HashPack`) holds the usable PDQ hashes of ``PACK_LEAVES``
consecutive leaves as two arrays (leaf ids and hash words) and whether any of those
leaves has video frame hashes. Leaves never change once appended, so a full pack never
changes either: a running server writes the packs that became full (`write_packs`, from
its upkeep thread), and a start (`load_index`) reads the packs from leaf 0 on (a few
large blobs: about 40 bytes per hash, 0.4 GB at 10^7) and only the leaves after the last
pack row by row. The hashes a start loads are every usable hash of the log: a search
never misses a capture, before or after the index's tables are built
(`provenance.mih.MihIndex.warming`).

Packs are derived from the soft-hash rows and trusted as they are (neither is covered by
the signed tree); a pack that is not shaped as packs are (a gap, ids outside its range or
out of order, a size mismatch) is not used: the leaves from it on are read row by row,
and a warning says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from provenance.store import HashPack, Store

log = logging.getLogger(__name__)

#: Leaves per pack (at one image hash per leaf, a pack is about 2.6 MB).
PACK_LEAVES = 1 << 16


@dataclass(frozen=True)
class LoadedIndex:
    """What `load_index` read: every usable hash of leaves [0, size) and how."""

    pack: HashPack
    #: leaves covered by stored packs (the rest was read row by row)
    packed: int


def _sound(p: HashPack, first: int) -> bool:
    ids = p.ids
    return (
        p.first == first
        and p.next == first + PACK_LEAVES
        and len(ids) == len(p.words)
        and (len(ids) == 0 or (int(ids[0]) >= p.first and int(ids[-1]) < p.next))
        and bool(np.all(ids[1:] >= ids[:-1]))
    )


def _concat(first: int, nxt: int, parts: list[HashPack]) -> HashPack:
    if not parts:
        return HashPack(first, nxt, np.zeros(0, np.int64), np.zeros((0, 4), np.uint64), False)
    return HashPack(
        first,
        nxt,
        np.concatenate([p.ids for p in parts]),
        np.vstack([p.words for p in parts]),
        any(p.video for p in parts),
    )


def load_index(store: Store, size: int) -> LoadedIndex:
    """Every usable PDQ hash of leaves [0, size): stored packs from leaf 0 on while they
    are sound and within ``size``, then the soft-hash rows of the rest.

    Raises StorageError or LogIntegrityError from the store.
    """
    parts: list[HashPack] = []
    packed = 0
    for p in store.stored_packs(0):
        if p.next > size:
            break
        if not _sound(p, packed):
            log.warning(
                "the near-duplicate index pack at leaf %d is not sound; reading leaves"
                " %d to %d row by row",
                p.first,
                packed,
                size,
            )
            break
        parts.append(p)
        packed = p.next
    if packed < size:
        parts.append(store.hash_pack(packed, size))
    return LoadedIndex(_concat(0, size, parts), packed)


def write_packs(store: Store, covered: int, size: int, loaded: HashPack | None = None) -> int:
    """Store the packs that are full in a log of ``size`` leaves after the ``covered``
    leaves already packed; the hashes come from ``loaded`` (what `load_index` returned,
    covering [0, size)) where given, else from the soft-hash rows. Returns the leaves now
    covered by packs. Raises StorageError from the store.
    """
    while covered + PACK_LEAVES <= size:
        first, nxt = covered, covered + PACK_LEAVES
        if loaded is not None:
            lo, hi = np.searchsorted(loaded.ids, [first, nxt])
            # the video flag is the whole load's: the service only uses it for the whole log
            pack = HashPack(first, nxt, loaded.ids[lo:hi], loaded.words[lo:hi], loaded.video)
        else:
            pack = store.hash_pack(first, nxt)
        store.put_pack(pack)
        covered = nxt
    return covered
