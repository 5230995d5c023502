"""Merkle tree math of the transparency log (RFC 9162 section 2.1), over stored hashes.

Hashing: a leaf is SHA-256(0x00 || entry), an interior node SHA-256(0x01 || left || right),
and a tree of n > 1 leaves splits at the largest power of two smaller than n.

Storage model: a store keeps only the hashes of *perfect* subtrees. The node
``(level, index)`` covers the leaves ``[index * 2**level, (index + 1) * 2**level)``; it
exists once all of those leaves are appended and never changes after. Any root or proof
of any tree size is a fold of O(log n) such nodes: the functions here first work out which
``(level, index)`` keys they need, read them through one batched `NodeReader` call (one
SQL query in a database store), then hash. They never rebuild a tree.

Verification follows RFC 9162 2.1.3.2 (inclusion) and 2.1.4.2 (consistency). Proofs for
a subtree ``[start, end)`` of a larger tree follow the subtree proofs of
transparency-dev/merkle (``proof.SubtreeInclusion``, ``proof.SubtreeConsistency``), the
ones draft-ietf-plants-merkle-tree-certs uses. Every verification failure raises
`ProofError` with a message naming what failed; misuse of the generating functions
(an index past the tree, a reader that answers wrongly) raises `LogError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from provenance.core.errors import LogError, ProofError

HASH_SIZE = 32
"""Bytes in every hash of the tree (SHA-256)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the empty tree: SHA-256 of the empty string (RFC 9162 2.1.1)."""

NodeKey = tuple[int, int]
"""``(level, index)`` of a perfect subtree: leaves ``[index << level, (index + 1) << level)``."""

NewNode = tuple[int, int, bytes]
"""``(level, index, hash)`` of a perfect subtree completed by an append."""

NodeReader = Callable[[Sequence[NodeKey]], Sequence[bytes]]
"""Batched read of stored perfect-subtree hashes: one 32-byte hash per key, in key order."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(entry: bytes) -> bytes:
    """Hash of a log entry as a leaf: SHA-256(0x00 || entry), 32 bytes."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an interior node from its children's hashes: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# --- decomposition into perfect subtrees ------------------------------------------------


def subtree_decomposition(start: int, end: int) -> list[NodeKey]:
    """The perfect subtrees that tile the leaf range ``[start, end)``, left to right.

    Each step takes the largest perfect subtree that starts at the current leaf and fits
    in the range, which for ``start == 0`` is exactly the left-hand subtrees the RFC 9162
    MTH recursion splits off (sizes strictly decreasing), and in general the minimal tiling
    (sizes rising, then falling). At most ``2 * log2(end - start) + 2`` keys.

    Raises LogError if not ``0 <= start <= end``.
    """
    if not 0 <= start <= end:
        raise LogError(f"[{start}, {end}) is not a range of leaves")
    keys: list[NodeKey] = []
    while start < end:
        remaining = end - start
        width = start & -start if start else 1 << (remaining.bit_length() - 1)
        while width > remaining:
            width >>= 1
        level = width.bit_length() - 1
        keys.append((level, start >> level))
        start += width
    return keys


def _read(get_nodes: NodeReader, keys: Sequence[NodeKey]) -> list[bytes]:
    """One batched read of ``keys``, checked for count and hash size (LogError otherwise)."""
    if not keys:
        return []
    hashes = list(get_nodes(keys))
    if len(hashes) != len(keys):
        raise LogError(f"node reader answered {len(hashes)} hashes for {len(keys)} keys")
    for key, value in zip(keys, hashes, strict=True):
        if len(value) != HASH_SIZE:
            raise LogError(f"stored node {key} is {len(value)} bytes, want {HASH_SIZE}")
    return hashes


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Hash of a tiling given left to right with decreasing sizes: fold from the right."""
    acc = hashes[-1]
    for value in reversed(hashes[:-1]):
        acc = node_hash(value, acc)
    return acc


def root(size: int, get_nodes: NodeReader) -> bytes:
    """Root hash (32 bytes) of the tree of the first ``size`` leaves; one batched read.

    Raises LogError if ``size`` is negative or the reader fails.
    """
    if size < 0:
        raise LogError(f"tree size {size} is negative")
    if size == 0:
        return EMPTY_ROOT
    return _fold(_read(get_nodes, subtree_decomposition(0, size)))


def subtree_root(start: int, end: int, get_nodes: NodeReader) -> bytes:
    """Hash of the subtree of leaves ``[start, end)`` (a valid subtree, see below).

    Valid subtrees are those of transparency-dev/merkle: ``start`` is a multiple of the
    smallest power of two ``>= end - start``, so the hash equals MTH(D[start:end]).
    Raises LogError for an invalid or empty range.
    """
    _check_subtree(start, end, LogError)
    if start == end:
        raise LogError(f"[{start}, {end}) is empty")
    return _fold(_read(get_nodes, subtree_decomposition(start, end)))


# --- appending ---------------------------------------------------------------------------


def _check_leaf_hash(value: bytes, what: str = "leaf hash") -> None:
    if len(value) != HASH_SIZE:
        raise LogError(f"{what} is {len(value)} bytes, want {HASH_SIZE}")


def perfect_nodes_for_append(index: int, leaf_hash: bytes, get_nodes: NodeReader) -> list[NewNode]:
    """Nodes completed by appending leaf ``index``: ``(0, index, leaf)`` then its ancestors.

    Appending leaf ``index`` completes one node per trailing one bit of ``index`` (plus the
    leaf itself); each needs the stored left sibling, all read in one batched call.
    Raises LogError for a negative index, a leaf hash not 32 bytes, or a failing reader.
    """
    if index < 0:
        raise LogError(f"leaf index {index} is negative")
    _check_leaf_hash(leaf_hash)
    keys: list[NodeKey] = []
    level = 0
    while (index >> level) & 1:
        keys.append((level, (index >> level) - 1))
        level += 1
    nodes: list[NewNode] = [(0, index, leaf_hash)]
    acc = leaf_hash
    for (level, left_index), left in zip(keys, _read(get_nodes, keys), strict=True):
        acc = node_hash(left, acc)
        nodes.append((level + 1, left_index >> 1, acc))
    return nodes


def append_batch(
    start_index: int, leaf_hashes: Iterable[bytes], get_nodes: NodeReader
) -> list[NewNode]:
    """Nodes completed by appending ``leaf_hashes`` as leaves ``start_index, start_index+1...``.

    Reads only the frontier of the existing tree (at most log2(start_index)+1 hashes, one
    batched call); nodes made inside the batch are taken from memory. Returns every new
    node, leaves included, in creation order. Raises LogError as `perfect_nodes_for_append`.
    """
    hashes = list(leaf_hashes)
    if not hashes:
        return []
    if start_index < 0:
        raise LogError(f"leaf index {start_index} is negative")
    frontier = CompactRange.from_hashes(
        start_index, _read(get_nodes, subtree_decomposition(0, start_index))
    )
    nodes: list[NewNode] = []
    for value in hashes:
        nodes.extend(frontier.append(value))
    return nodes


class CompactRange:
    """Merkle frontier of a tree: the hashes of `subtree_decomposition` ``(0, size)``.

    At most log2(size)+1 hashes, enough to append further leaves and to compute the root,
    so a whole log can be re-hashed and checked against a checkpoint in O(log n) memory.
    """

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """The frontier of a tree of ``size`` leaves from its decomposition hashes.

        ``hashes`` are those of ``subtree_decomposition(0, size)``, in that order (one per
        set bit of ``size``). Raises LogError on a wrong count or hash size.
        """
        if size < 0:
            raise LogError(f"tree size {size} is negative")
        if len(hashes) != size.bit_count():
            raise LogError(
                f"a frontier of size {size} has {size.bit_count()} hashes, got {len(hashes)}"
            )
        for value in hashes:
            _check_leaf_hash(value, "frontier hash")
        frontier = cls()
        frontier._size = size
        frontier._hashes = list(hashes)
        return frontier

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The frontier hashes, largest subtree first."""
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[NewNode]:
        """Append one leaf hash (32 bytes); returns the nodes it completes, leaf first."""
        _check_leaf_hash(leaf_hash)
        index = self._size
        acc = leaf_hash
        nodes: list[NewNode] = [(0, index, acc)]
        level = 0
        while (index >> level) & 1:
            acc = node_hash(self._hashes.pop(), acc)
            level += 1
            nodes.append((level, index >> level, acc))
        self._hashes.append(acc)
        self._size = index + 1
        return nodes

    def root(self) -> bytes:
        """Root hash of the tree of the leaves appended so far (EMPTY_ROOT when none)."""
        return _fold(self._hashes) if self._hashes else EMPTY_ROOT


class MemoryTree:
    """An in-memory log: every perfect-subtree hash, kept as one list per level.

    ``levels[l][i]`` is node ``(l, i)``; ``levels[0]`` is the list of leaf hashes. Serves
    the `NodeReader` protocol through `get_nodes`, so it is the baseline the store and the
    benchmarks compare with. Memory: about 2 * size hashes.
    """

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0])

    def append(self, entry: bytes) -> int:
        """Append an entry (hashed as a leaf); returns its leaf index."""
        return self.append_leaf_hash(leaf_hash(entry))

    def append_leaf_hash(self, leaf_hash: bytes) -> int:
        """Append a 32-byte leaf hash; returns its leaf index. Raises LogError on bad size."""
        _check_leaf_hash(leaf_hash)
        levels = self._levels
        index = len(levels[0])
        levels[0].append(leaf_hash)
        acc, position, level = leaf_hash, index, 0
        while position & 1:
            acc = node_hash(levels[level][position - 1], acc)
            position >>= 1
            level += 1
            if level == len(levels):
                levels.append([])
            levels[level].append(acc)
        return index

    def get_nodes(self, keys: Sequence[NodeKey]) -> list[bytes]:
        """`NodeReader`: the hashes of ``keys``. Raises LogError for a node not yet complete."""
        levels = self._levels
        hashes = []
        for level, index in keys:
            if not (0 <= level < len(levels) and 0 <= index < len(levels[level])):
                raise LogError(f"node {(level, index)} is not a complete subtree of the tree")
            hashes.append(levels[level][index])
        return hashes

    def root(self) -> bytes:
        """Root hash of the whole tree."""
        return root(self.size, self.get_nodes)


# --- proof generation --------------------------------------------------------------------


def _check_subtree(start: int, end: int, error: type[LogError]) -> None:
    """Raise ``error`` unless ``[start, end)`` is a subtree (transparency-dev isSubtreeValid).

    ``start <= end`` and, unless ``start`` is 0 or the range empty, ``start`` is a multiple
    of the smallest power of two ``>= end - start``.
    """
    if not 0 <= start <= end:
        raise error(f"[{start}, {end}) is not a subtree: want 0 <= start <= end")
    if start == 0 or start == end:
        return
    span = 1 << (end - start - 1).bit_length()
    if start % span:
        raise error(f"[{start}, {end}) is not a subtree: start must be a multiple of {span}")


class _Plan:
    """Which nodes make up a proof, and which consecutive run of them folds into one hash.

    ``keys[fold_begin:fold_end]`` (right to left, smallest first) tile an incomplete
    ("ephemeral") subtree at the right edge of the tree; the proof carries their fold.
    """

    __slots__ = ("keys", "fold_begin", "fold_end")

    def __init__(self, keys: list[NodeKey], fold_begin: int, fold_end: int) -> None:
        self.keys = keys
        self.fold_begin = fold_begin
        self.fold_end = fold_end

    def shifted(self, start: int) -> _Plan:
        """The same plan for a subtree moved right to begin at leaf ``start``."""
        keys = [(level, index + (start >> level)) for level, index in self.keys]
        return _Plan(keys, self.fold_begin, self.fold_end)

    def build(self, get_nodes: NodeReader) -> list[bytes]:
        """Read all keys in one batch and assemble the proof hashes."""
        hashes = _read(get_nodes, self.keys)
        begin, end = self.fold_begin, self.fold_end
        proof = hashes[:begin]
        if end > begin:
            acc = hashes[begin]
            for value in hashes[begin + 1 : end]:
                acc = node_hash(value, acc)
            proof.append(acc)
        proof.extend(hashes[end:])
        return proof


def _node_path_plan(index: int, level: int, size: int, with_seed: bool) -> _Plan:
    """Nodes proving that node ``(level, index)`` is in the tree of ``size`` leaves.

    In order: the node itself when ``with_seed``; its siblings up to the level where its
    path leaves the right edge of the tree (the "fork"); the tiling of leaves right of the
    fork, folded into one hash; the tiling of leaves left of the fork, bottom up. Requires
    ``(index + 1) << level <= size``. (transparency-dev/merkle proof.nodes.)
    """
    inner = (index ^ (size >> level)).bit_length() - 1
    fork_level, fork_index = level + inner, index >> inner
    begin, end = fork_index << fork_level, (fork_index + 1) << fork_level
    keys: list[NodeKey] = [(level, index)] if with_seed else []
    keys.extend((level + i, (index >> i) ^ 1) for i in range(inner))
    fold_begin = len(keys)
    keys.extend(reversed(subtree_decomposition(end, size)))
    fold_end = len(keys)
    keys.extend(reversed(subtree_decomposition(0, begin)))
    return _Plan(keys, fold_begin, fold_end)


def _inclusion_plan(index: int, size: int) -> _Plan:
    if not 0 <= index < size:
        raise LogError(f"leaf index {index} is not in a tree of size {size}")
    return _node_path_plan(index, 0, size, with_seed=False)


def _subtree_consistency_plan(start: int, end: int, size: int) -> _Plan:
    _check_subtree(start, end, LogError)
    if end > size:
        raise LogError(f"subtree [{start}, {end}) is not in a tree of size {size}")
    if start == end or (start == 0 and end == size):
        return _Plan([], 0, 0)
    if end == size:
        # The subtree's root is on the right edge: only its left neighbours are needed.
        return _Plan(list(reversed(subtree_decomposition(0, start))), 0, 0)
    # Prove the rightmost perfect subtree of [start, end); the verifier knows it already
    # when it is the whole range.
    level = ((end - start) & -(end - start)).bit_length() - 1
    perfect = (end - start) == 1 << level
    return _node_path_plan((end - 1) >> level, level, size, with_seed=not perfect)


def inclusion_proof(index: int, size: int, get_nodes: NodeReader) -> list[bytes]:
    """RFC 9162 2.1.3.1 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Hashes bottom up, at most ceil(log2(size)); one batched read of at most 2*log2(size)
    nodes. Raises LogError unless ``0 <= index < size``, or if the reader fails.
    """
    return _inclusion_plan(index, size).build(get_nodes)


def inclusion_proofs(start: int, end: int, size: int, get_nodes: NodeReader) -> list[list[bytes]]:
    """The RFC 9162 2.1.3.1 inclusion proofs of leaves ``start .. end - 1`` in the tree of
    ``size`` leaves, as `inclusion_proof` gives each, with the work shared: one walk down
    the PATH recursion visiting only subtrees that hold one of the leaves, and one batched
    read of the siblings' nodes. For a batch just appended (``end == size``) those are the
    frontier of ``[0, start)`` and nodes that appending the batch completed, so a group
    commit proves its leaves from memory. O(end - start + log size) hashes and reads, against
    O((end - start) log size) for one `inclusion_proof` per leaf.

    Raises LogError unless ``0 <= start <= end <= size``, or if the reader fails.
    """
    if not 0 <= start <= end <= size:
        raise LogError(f"leaves [{start}, {end}) are not in a tree of size {size}")
    paths: list[list[tuple[int, int]]] = []  # per leaf: sibling ranges, top down

    def walk(lo: int, hi: int, path: list[tuple[int, int]]) -> None:
        if hi - lo == 1:
            paths.append(path)
            return
        mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))
        if start < mid:
            walk(lo, mid, [*path, (mid, hi)])
        if end > mid:
            walk(mid, hi, [*path, (lo, mid)])

    if start == end:
        return []
    walk(0, size, [])
    ranges = list(dict.fromkeys(r for path in paths for r in path))
    tilings = [subtree_decomposition(lo, hi) for lo, hi in ranges]
    keys = list(dict.fromkeys(k for tiling in tilings for k in tiling))
    found = dict(zip(keys, _read(get_nodes, keys), strict=True))
    value = {
        r: _fold([found[k] for k in tiling]) for r, tiling in zip(ranges, tilings, strict=True)
    }
    return [[value[r] for r in reversed(path)] for path in paths]


def consistency_proof(size1: int, size2: int, get_nodes: NodeReader) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof from the tree of ``size1`` leaves to ``size2``.

    Empty when the sizes are equal. One batched read. Raises LogError unless
    ``0 < size1 <= size2`` (a proof from the empty tree is not defined).
    """
    if not 0 < size1 <= size2:
        raise LogError(f"no consistency proof from size {size1} to size {size2}")
    return _subtree_consistency_plan(0, size1, size2).build(get_nodes)


def subtree_inclusion_proof(index: int, start: int, end: int, get_nodes: NodeReader) -> list[bytes]:
    """Inclusion proof of leaf ``index`` in the subtree ``[start, end)`` (transparency-dev).

    The RFC 9162 proof of leaf ``index - start`` in a tree of ``end - start`` leaves, made
    of the nodes of the subtree. Raises LogError for an invalid subtree or index.
    """
    _check_subtree(start, end, LogError)
    if not start <= index < end:
        raise LogError(f"leaf index {index} is not in subtree [{start}, {end})")
    return _inclusion_plan(index - start, end - start).shifted(start).build(get_nodes)


def subtree_consistency_proof(
    start: int, end: int, size: int, get_nodes: NodeReader
) -> list[bytes]:
    """Proof that subtree ``[start, end)`` is part of the tree of ``size`` leaves.

    With ``start == 0`` this is the RFC 9162 consistency proof from ``end`` to ``size``.
    Raises LogError for an invalid subtree or ``end > size``.
    """
    return _subtree_consistency_plan(start, end, size).build(get_nodes)


# --- verification ------------------------------------------------------------------------


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, want {HASH_SIZE}")


def _check_proof(kind: str, proof: Sequence[bytes]) -> None:
    for i, value in enumerate(proof):
        _check_hash(f"{kind} proof element {i}", value)


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 2.1.3.2, before the last compare).

    Raises ProofError for an index outside the tree, a hash not 32 bytes, or a proof of
    the wrong length.
    """
    _check_hash("leaf hash", leaf_hash)
    _check_proof("inclusion", proof)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    fn, sn, acc = index, size - 1, leaf_hash
    for value in proof:
        if sn == 0:
            raise ProofError(
                f"inclusion proof of {len(proof)} hashes is too long for leaf {index} "
                f"in a tree of size {size}"
            )
        if fn & 1 or fn == sn:
            acc = node_hash(value, acc)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            acc = node_hash(acc, value)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"inclusion proof of {len(proof)} hashes is too short for leaf {index} "
            f"in a tree of size {size}"
        )
    return acc


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that leaf ``index`` with hash ``leaf_hash`` is in the tree ``(size, root_hash)``.

    RFC 9162 2.1.3.2. Raises ProofError saying what failed.
    """
    computed = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if computed != root_hash:
        raise ProofError(
            f"inclusion proof of leaf {index} leads to root {computed.hex()}, "
            f"not the root {root_hash.hex()} of the tree of size {size}"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree ``(size1, root1)`` is a prefix of the tree ``(size2, root2)``.

    RFC 9162 2.1.4.2. Equal sizes need an empty proof and equal roots; a proof from the
    empty tree is not defined and fails. Raises ProofError saying what failed.
    """
    _check_proof("consistency", proof)
    if size1 < 0 or size1 > size2:
        raise ProofError(f"no consistency from size {size1} to size {size2}")
    if size1 == 0:
        raise ProofError("a consistency proof from the empty tree is not defined")
    if size1 == size2:
        if proof:
            raise ProofError(f"sizes are equal ({size1}) but the proof is not empty")
        if root1 != root2:
            raise ProofError(f"sizes are equal ({size1}) but the roots differ")
        return
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    if not path:
        raise ProofError(f"consistency proof from size {size1} to {size2} is empty")
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for value in path[1:]:
        if sn == 0:
            raise ProofError(
                f"consistency proof of {len(proof)} hashes from size {size1} to {size2} is too long"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(value, fr)
            sr = node_hash(value, sr)
            while not fn & 1 and fn:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, value)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"consistency proof of {len(proof)} hashes from size {size1} to {size2} is too short"
        )
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}")


def verify_subtree_inclusion(
    index: int,
    start: int,
    end: int,
    leaf_hash: bytes,
    proof: Sequence[bytes],
    subtree_hash: bytes,
) -> None:
    """Check that leaf ``index`` is in the subtree ``[start, end)`` with hash ``subtree_hash``.

    transparency-dev/merkle VerifySubtreeInclusion. Raises ProofError saying what failed.
    """
    _check_subtree(start, end, ProofError)
    if not start <= index < end:
        raise ProofError(f"leaf index {index} is not in subtree [{start}, {end})")
    computed = root_from_inclusion_proof(index - start, end - start, leaf_hash, proof)
    if computed != subtree_hash:
        raise ProofError(
            f"inclusion proof of leaf {index} leads to {computed.hex()}, "
            f"not the hash {subtree_hash.hex()} of subtree [{start}, {end})"
        )


def verify_subtree_consistency(
    start: int,
    end: int,
    size: int,
    proof: Sequence[bytes],
    subtree_hash: bytes,
    root_hash: bytes,
) -> None:
    """Check that subtree ``[start, end)`` with ``subtree_hash`` is in the tree ``(size, root)``.

    transparency-dev/merkle VerifySubtreeConsistency, with the empty range accepted (with
    an empty proof) when ``subtree_hash`` is EMPTY_ROOT, whatever the tree. With
    ``start == 0`` this is a consistency check from size ``end`` to ``size``. Raises
    ProofError saying what failed.
    """
    _check_proof("subtree consistency", proof)
    _check_subtree(start, end, ProofError)
    if end > size:
        raise ProofError(f"subtree [{start}, {end}) is not in a tree of size {size}")
    if start == end:
        if proof:
            raise ProofError(f"subtree [{start}, {end}) is empty but the proof is not")
        if subtree_hash != EMPTY_ROOT:
            raise ProofError(f"empty subtree [{start}, {end}) must have the empty root hash")
        return
    if start == 0 and end == size:
        if proof:
            raise ProofError(f"subtree [0, {size}) is the whole tree but the proof is not empty")
        if subtree_hash != root_hash:
            raise ProofError(f"subtree [0, {size}) is the whole tree but the hashes differ")
        return
    if end == size:
        computed = _root_from_right_edge_subtree(start, end, proof, subtree_hash)
    else:
        computed = _root_from_inner_subtree(start, end, size, proof, subtree_hash)
    if computed != root_hash:
        raise ProofError(
            f"subtree consistency proof for [{start}, {end}) leads to {computed.hex()}, "
            f"not the root {root_hash.hex()} of the tree of size {size}"
        )


def _root_from_right_edge_subtree(
    start: int, end: int, proof: Sequence[bytes], subtree_hash: bytes
) -> bytes:
    """Root from a subtree that ends at the tree's last leaf: fold in its left neighbours."""
    height = ((end - 1) ^ start).bit_length()
    want = (start >> height).bit_count()
    if len(proof) != want:
        raise ProofError(
            f"subtree consistency proof for [{start}, {end}) has {len(proof)} hashes, want {want}"
        )
    acc = subtree_hash
    for value in proof:
        acc = node_hash(value, acc)
    return acc


def _root_from_inner_subtree(
    start: int, end: int, size: int, proof: Sequence[bytes], subtree_hash: bytes
) -> bytes:
    """Root from a subtree that ends before the tree's last leaf; checks ``subtree_hash``.

    The proof is the inclusion proof, in the tree of ``size``, of the rightmost perfect
    subtree of ``[start, end)`` (preceded by that subtree's hash unless it is the whole
    range). Hashes left of the path rebuild the subtree hash; all of them, the root.
    """
    fork = ((end - 1) ^ (size - 1)).bit_length()  # where the paths to end-1 and size-1 part
    border = ((end - 1) >> fork).bit_count()  # left siblings above the fork
    shift = ((end - start) & -(end - start)).bit_length() - 1  # level of the seed node
    inner = fork - shift
    perfect = end - start == 1 << shift
    if perfect:
        seed, rest = subtree_hash, list(proof)
    elif proof:
        seed, rest = proof[0], list(proof[1:])
    else:
        raise ProofError(f"subtree consistency proof for [{start}, {end}) is empty")
    want = (0 if perfect else 1) + inner + border
    if len(proof) != want:
        raise ProofError(
            f"subtree consistency proof for [{start}, {end}) in a tree of size {size} "
            f"has {len(proof)} hashes, want {want}"
        )
    path_bits = (end - 1) >> shift
    if not perfect:
        height = ((end - 1) ^ start).bit_length()
        own_inner = min(height, fork) - shift
        own_border = max(0, border - ((end - 1) >> height).bit_count())
        acc = seed
        for i, value in enumerate(rest[:own_inner]):
            if (path_bits >> i) & 1:
                acc = node_hash(value, acc)
        for value in rest[inner : inner + own_border]:
            acc = node_hash(value, acc)
        if acc != subtree_hash:
            raise ProofError(
                f"subtree consistency proof does not lead to the hash of [{start}, {end})"
            )
    acc = seed
    for i, value in enumerate(rest[:inner]):
        acc = node_hash(acc, value) if not (path_bits >> i) & 1 else node_hash(value, acc)
    for value in rest[inner:]:
        acc = node_hash(value, acc)
    return acc
