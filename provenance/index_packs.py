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
    are sound and within ``size``, then the soft-hash rows of the rest. The arrays are
    not copied again (at 10^7 hashes they take 0.4 GB).

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
    tail = store.hash_pack(packed, size)
    return LoadedIndex([*parts, tail], tail, packed)


def write_packs(store: Store, covered: int, size: int, tail: HashPack | None = None) -> int:
    """Store the packs that are full in a log of ``size`` leaves after the ``covered``
    leaves already packed; the hashes come from ``tail`` (the `LoadedIndex.tail` covering
    [covered, size)) where given, else from the soft-hash rows. Returns the leaves now
    covered by packs. Raises StorageError from the store.
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
        covered = nxt
    return covered
