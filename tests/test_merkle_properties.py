"""Properties of the Merkle math on random trees: proofs from stored nodes verify, and
any changed bit, index or size makes verification fail."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provenance.core import merkle
from provenance.core.errors import LogError, ProofError

MAX_SIZE = 2048
ENTRIES = [b"capture %d" % i for i in range(MAX_SIZE + 1)]
TREE = merkle.MemoryTree()
for _entry in ENTRIES:
    TREE.append(_entry)
LEAVES = [merkle.leaf_hash(e) for e in ENTRIES]

FAST = settings(max_examples=150, deadline=None)


def flip(value: bytes, bit: int) -> bytes:
    """``value`` with bit ``bit`` (taken modulo its length in bits) inverted."""
    bit %= len(value) * 8
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def flipped_each(proof: Sequence[bytes], bit: int) -> list[list[bytes]]:
    """One copy of ``proof`` per element, with that element's bit ``bit`` flipped."""
    return [[flip(h, bit) if i == k else h for i, h in enumerate(proof)] for k in range(len(proof))]


class CountingReader:
    """A NodeReader over TREE that records each batched call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, keys: Sequence[merkle.NodeKey]) -> list[bytes]:
        self.calls.append(len(keys))
        return TREE.get_nodes(keys)


def tree_root(size: int) -> bytes:
    return merkle.root(size, TREE.get_nodes)


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return size, draw(st.integers(0, size - 1))


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(1, size2)), size2


@st.composite
def subtree_in_tree(draw: st.DrawFn) -> tuple[int, int, int]:
    """A valid non-empty subtree [start, end) of a tree of some size: (start, end, size)."""
    size = draw(st.integers(1, MAX_SIZE))
    width = draw(st.integers(1, size))
    span = 1 << (width - 1).bit_length()
    start = span * draw(st.integers(0, (size - width) // span))
    return start, start + width, size


@FAST
@given(size_and_index(), st.integers(0, 255))
def test_inclusion_proofs_verify_and_detect_changes(case: tuple[int, int], bit: int) -> None:
    size, index = case
    reader = CountingReader()
    proof = merkle.inclusion_proof(index, size, reader)
    assert len(reader.calls) <= 1 and sum(reader.calls) <= 2 * size.bit_length()
    assert len(proof) <= (size - 1).bit_length()
    root, leaf = tree_root(size), LEAVES[index]
    merkle.verify_inclusion(index, size, leaf, proof, root)
    assert merkle.root_from_inclusion_proof(index, size, leaf, proof) == root

    for bad in flipped_each(proof, bit):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, leaf, bad, root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, proof, flip(root, bit))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, flip(leaf, bit), proof, root)
    for other in (index - 1, index + 1):
        with pytest.raises(ProofError):
            merkle.verify_inclusion(other, size, leaf, proof, root)
    for other in (size - 1, size + 1):
        if other > index:
            with pytest.raises(ProofError):
                merkle.verify_inclusion(index, other, leaf, proof, tree_root(other))
    if proof:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, size, leaf, proof[:-1], root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, size, leaf, [*proof, root], root)


@FAST
@given(two_sizes(), st.integers(0, 255))
def test_consistency_proofs_verify_and_detect_changes(case: tuple[int, int], bit: int) -> None:
    size1, size2 = case
    reader = CountingReader()
    proof = merkle.consistency_proof(size1, size2, reader)
    assert len(reader.calls) <= 1 and sum(reader.calls) <= 2 * size2.bit_length() + 1
    root1, root2 = tree_root(size1), tree_root(size2)
    merkle.verify_consistency(size1, size2, proof, root1, root2)
    merkle.verify_subtree_consistency(0, size1, size2, proof, root1, root2)

    for bad in flipped_each(proof, bit):
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, size2, bad, root1, root2)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, proof, flip(root1, bit), root2)
    with pytest.raises(ProofError):
        merkle.verify_consistency(size1, size2, proof, root1, flip(root2, bit))
    for other in (size1 - 1, size1 + 1):
        if 0 < other <= MAX_SIZE:
            with pytest.raises(ProofError):
                merkle.verify_consistency(other, size2, proof, tree_root(other), root2)
    for other in (size2 - 1, size2 + 1):
        if 0 < other <= MAX_SIZE:
            with pytest.raises(ProofError):
                merkle.verify_consistency(size1, other, proof, root1, tree_root(other))
    if proof:
        with pytest.raises(ProofError):
            merkle.verify_consistency(size1, size2, proof[:-1], root1, root2)


@FAST
@given(subtree_in_tree(), st.integers(0, 255), st.data())
def test_subtree_proofs_verify_and_detect_changes(
    case: tuple[int, int, int], bit: int, data: st.DataObject
) -> None:
    start, end, size = case
    own = merkle.MemoryTree()
    for entry in ENTRIES[start:end]:
        own.append(entry)
    subtree_hash = merkle.subtree_root(start, end, TREE.get_nodes)
    assert subtree_hash == own.root()
    root = tree_root(size)

    proof = merkle.subtree_consistency_proof(start, end, size, TREE.get_nodes)
    merkle.verify_subtree_consistency(start, end, size, proof, subtree_hash, root)
    for bad in flipped_each(proof, bit):
        with pytest.raises(ProofError):
            merkle.verify_subtree_consistency(start, end, size, bad, subtree_hash, root)
    with pytest.raises(ProofError):
        merkle.verify_subtree_consistency(start, end, size, proof, flip(subtree_hash, bit), root)
    with pytest.raises(ProofError):
        merkle.verify_subtree_consistency(start, end, size, proof, subtree_hash, flip(root, bit))

    index = data.draw(st.integers(start, end - 1))
    proof = merkle.subtree_inclusion_proof(index, start, end, TREE.get_nodes)
    merkle.verify_subtree_inclusion(index, start, end, LEAVES[index], proof, subtree_hash)
    for bad in flipped_each(proof, bit):
        with pytest.raises(ProofError):
            merkle.verify_subtree_inclusion(index, start, end, LEAVES[index], bad, subtree_hash)
    for other in (index - 1, index + 1):
        with pytest.raises(ProofError):
            merkle.verify_subtree_inclusion(other, start, end, LEAVES[index], proof, subtree_hash)


@FAST
@given(st.integers(0, 4096), st.integers(0, 4096))
def test_subtree_decomposition_tiles_the_range(a: int, b: int) -> None:
    start, end = min(a, b), max(a, b)
    keys = merkle.subtree_decomposition(start, end)
    position = start
    for level, index in keys:
        assert index << level == position
        position += 1 << level
    assert position == end
    assert len(keys) <= 2 * max(1, (end - start).bit_length())
    if start == 0:
        levels = [level for level, _ in keys]
        assert levels == sorted(levels, reverse=True) and len(set(levels)) == len(levels)


@FAST
@given(st.integers(0, 300), st.lists(st.integers(1, 40), max_size=8))
def test_append_paths_agree_with_memory_tree(size: int, chunks: list[int]) -> None:
    store: dict[merkle.NodeKey, bytes] = {}

    def reader(keys: Sequence[merkle.NodeKey]) -> list[bytes]:
        return [store[k] for k in keys]

    for index in range(size):
        for level, idx, value in merkle.perfect_nodes_for_append(index, LEAVES[index], reader):
            store[(level, idx)] = value
    frontier = merkle.CompactRange.from_hashes(size, reader(merkle.subtree_decomposition(0, size)))
    position = size
    for chunk in chunks:
        batch = LEAVES[position : position + chunk]
        for level, idx, value in merkle.append_batch(position, batch, reader):
            assert (level, idx) not in store
            store[(level, idx)] = value
        for leaf in batch:
            frontier.append(leaf)
        position += chunk
    assert frontier.size == position and len(frontier.hashes) == position.bit_count()
    assert frontier.root() == tree_root(position)
    assert store == {key: TREE.get_nodes([key])[0] for key in store}
    assert len(store) == sum(position >> level for level in range(position.bit_length()))


def test_empty_tree_and_bad_arguments() -> None:
    assert merkle.root(0, TREE.get_nodes) == merkle.EMPTY_ROOT == merkle.CompactRange().root()
    assert merkle.consistency_proof(5, 5, TREE.get_nodes) == []
    with pytest.raises(LogError):
        merkle.inclusion_proof(5, 5, TREE.get_nodes)
    with pytest.raises(LogError):
        merkle.consistency_proof(0, 5, TREE.get_nodes)
    with pytest.raises(LogError):
        merkle.subtree_inclusion_proof(3, 3, 5, TREE.get_nodes)
    with pytest.raises(LogError):
        TREE.get_nodes([(0, MAX_SIZE + 1)])
    with pytest.raises(LogError):
        TREE.get_nodes([(0, -1)])
    with pytest.raises(LogError):
        merkle.root(4, lambda keys: [b"short"] * len(keys))
    with pytest.raises(ProofError, match="empty tree"):
        merkle.verify_consistency(0, 3, [], merkle.EMPTY_ROOT, tree_root(3))


@st.composite
def leaf_range(draw: st.DrawFn) -> tuple[int, int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    start = draw(st.integers(0, size))
    return start, draw(st.integers(start, size)), size


@FAST
@given(leaf_range())
def test_proofs_of_a_range_are_each_leafs_proof_from_one_read(r: tuple[int, int, int]) -> None:
    start, end, size = r
    reader = CountingReader()
    proofs = merkle.inclusion_proofs(start, end, size, reader)
    assert proofs == [merkle.inclusion_proof(i, size, TREE.get_nodes) for i in range(start, end)]
    assert len(reader.calls) <= 1  # none when no leaf has a sibling
    for i, proof in zip(range(start, end), proofs, strict=True):
        merkle.verify_inclusion(i, size, LEAVES[i], proof, tree_root(size))


@pytest.mark.parametrize(("start", "end", "size"), [(-1, 0, 1), (0, 2, 1), (2, 1, 3)])
def test_proofs_of_a_range_outside_the_tree_are_refused(start: int, end: int, size: int) -> None:
    with pytest.raises(LogError, match="not in a tree"):
        merkle.inclusion_proofs(start, end, size, TREE.get_nodes)
