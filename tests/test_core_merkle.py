"""The Merkle math checked exhaustively on every small tree against a naive, literal
RFC 9162 reference (MTH, PATH and SUBPROOF of sections 2.1.1-2.1.4), deterministic and
fast, so a mutation of the optimised code fails a test (docs/mutants.md). The random
large-tree properties are in test_merkle_properties.py."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from provenance.core import merkle
from provenance.core.errors import LogError, ProofError

N = 33  # every tree of up to N leaves: all shapes up to five levels, both edges
ENTRIES = [b"entry %d" % i for i in range(N)]
LEAVES = [merkle.leaf_hash(e) for e in ENTRIES]
TREE = merkle.MemoryTree()
for _e in ENTRIES:
    TREE.append(_e)


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return merkle.node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m: int, leaves: Sequence[bytes], b: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return subproof(m, leaves[:k], b) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def valid_subtrees(size: int) -> list[tuple[int, int]]:
    out = []
    for start in range(size + 1):
        for end in range(start, size + 1):
            span = 1 << (end - start - 1).bit_length() if end > start else 1
            if start == 0 or start == end or start % span == 0:
                out.append((start, end))
    return out


def test_hashes_are_domain_separated() -> None:
    assert merkle.leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert merkle.node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    assert merkle.EMPTY_ROOT == hashlib.sha256(b"").digest()


def test_roots_and_subtree_roots_match_the_rfc() -> None:
    for size in range(N + 1):
        assert merkle.root(size, TREE.get_nodes) == mth(LEAVES[:size])
    for start, end in valid_subtrees(N):
        if start < end:
            assert merkle.subtree_root(start, end, TREE.get_nodes) == mth(LEAVES[start:end])
    with pytest.raises(LogError, match="negative"):
        merkle.root(-1, TREE.get_nodes)
    with pytest.raises(LogError, match="empty"):
        merkle.subtree_root(4, 4, TREE.get_nodes)
    with pytest.raises(LogError, match="not a subtree"):
        merkle.subtree_root(2, 6, TREE.get_nodes)
    with pytest.raises(LogError, match="not a subtree"):
        merkle.subtree_root(5, 3, TREE.get_nodes)


def test_subtree_decomposition_tiles_minimally() -> None:
    for start in range(N):
        for end in range(start, N + 1):
            keys = merkle.subtree_decomposition(start, end)
            covered = [
                i for level, index in keys for i in range(index << level, (index + 1) << level)
            ]
            assert covered == list(range(start, end))
            assert len(keys) <= 2 * max(1, (end - start)).bit_length()
            for level, index in keys:  # each tile is the largest that fits where it starts
                s = index << level
                bigger = 1 << (level + 1)
                assert s % bigger or s + bigger > end
    assert merkle.subtree_decomposition(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert merkle.subtree_decomposition(3, 13) == [(0, 3), (2, 1), (2, 2), (0, 12)]
    with pytest.raises(LogError):
        merkle.subtree_decomposition(-1, 3)
    with pytest.raises(LogError):
        merkle.subtree_decomposition(4, 3)


def test_inclusion_proofs_match_the_rfc_and_verify_only_as_given() -> None:
    for size in range(1, N + 1):
        root = mth(LEAVES[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, TREE.get_nodes)
            assert proof == path(index, LEAVES[:size])
            merkle.verify_inclusion(index, size, LEAVES[index], proof, root)
            assert merkle.root_from_inclusion_proof(index, size, LEAVES[index], proof) == root
            with pytest.raises(ProofError):
                merkle.verify_inclusion(index, size, flip(LEAVES[index]), proof, root)
            for k in range(len(proof)):
                bad = [flip(h) if i == k else h for i, h in enumerate(proof)]
                with pytest.raises(ProofError):
                    merkle.verify_inclusion(index, size, LEAVES[index], bad, root)
            for other in (index - 1, index + 1):
                if 0 <= other < size and path(other, LEAVES[:size]) != proof:
                    with pytest.raises(ProofError):
                        merkle.verify_inclusion(other, size, LEAVES[index], proof, root)
            with pytest.raises(ProofError, match="too long"):
                merkle.verify_inclusion(index, size, LEAVES[index], [*proof, root], root)
            if proof:
                with pytest.raises(ProofError, match="too short"):
                    merkle.verify_inclusion(index, size, LEAVES[index], proof[:-1], root)
        with pytest.raises(LogError):
            merkle.inclusion_proof(size, size, TREE.get_nodes)
        with pytest.raises(ProofError, match="not in a tree"):
            merkle.verify_inclusion(size, size, LEAVES[0], [], root)
    with pytest.raises(LogError):
        merkle.inclusion_proof(-1, 4, TREE.get_nodes)
    with pytest.raises(ProofError, match="leaf hash is 31 bytes"):
        merkle.verify_inclusion(0, 1, bytes(31), [], LEAVES[0])
    with pytest.raises(ProofError, match="element 1 is 33 bytes"):
        merkle.verify_inclusion(0, 4, LEAVES[0], [LEAVES[1], bytes(33)], LEAVES[0])


PATHS = [[path(i, LEAVES[:size]) for i in range(size)] for size in range(N + 1)]


def _recording(reads: list[list[tuple[int, int]]]) -> merkle.NodeReader:
    """`TREE`'s reader, noting each batch of keys read in ``reads``."""

    def reader(keys: Sequence[tuple[int, int]]) -> list[bytes]:
        reads.append(list(keys))
        return TREE.get_nodes(keys)

    return reader


def test_proofs_of_a_range_are_the_rfc_paths_from_one_read() -> None:
    """`inclusion_proofs` gives each leaf of every range of every small tree exactly its
    RFC 9162 PATH, from one batched read of distinct nodes (none when no leaf has a
    sibling); for a batch just appended (``end == size``) it reads only the frontier of
    ``[0, start)`` and nodes that appending the batch completed (what the writer holds in
    memory)."""
    for size in range(N + 1):
        root = mth(LEAVES[:size])
        for start in range(size + 1):
            for end in range(start, size + 1):
                reads: list[list[tuple[int, int]]] = []
                proofs = merkle.inclusion_proofs(start, end, size, _recording(reads))
                assert proofs == PATHS[size][start:end], (start, end, size)
                assert len(reads) == (1 if end > start and size > 1 else 0)
                keys = reads[0] if reads else []
                assert len(set(keys)) == len(keys)
                if end == size:
                    frontier = set(merkle.subtree_decomposition(0, start))
                    for level, index in keys:
                        completed = (index + 1) << level > start  # by appending the batch
                        assert (level, index) in frontier or completed, (level, index)
        for i, proof in enumerate(merkle.inclusion_proofs(0, size, size, TREE.get_nodes)):
            merkle.verify_inclusion(i, size, LEAVES[i], proof, root)
    for start, end, size in [(-1, 0, 1), (0, 2, 1), (2, 1, 3), (0, 0, -1), (1, 0, 0)]:
        with pytest.raises(
            LogError, match=rf"^leaves \[{start}, {end}\) are not in a tree of size {size}$"
        ):
            merkle.inclusion_proofs(start, end, size, TREE.get_nodes)
    with pytest.raises(LogError, match="^node reader answered 1 hashes for 2 keys$"):
        merkle.inclusion_proofs(0, 1, 3, lambda keys: [LEAVES[0]])


def test_consistency_proofs_match_the_rfc_and_verify_only_as_given() -> None:
    for size2 in range(1, N + 1):
        root2 = mth(LEAVES[:size2])
        for size1 in range(1, size2 + 1):
            root1 = mth(LEAVES[:size1])
            proof = merkle.consistency_proof(size1, size2, TREE.get_nodes)
            assert proof == subproof(size1, LEAVES[:size2], True)
            merkle.verify_consistency(size1, size2, proof, root1, root2)
            # and the same as a subtree consistency from [0, size1)
            assert merkle.subtree_consistency_proof(0, size1, size2, TREE.get_nodes) == proof
            merkle.verify_subtree_consistency(0, size1, size2, proof, root1, root2)
            with pytest.raises(ProofError):
                merkle.verify_consistency(size1, size2, proof, flip(root1), root2)
            with pytest.raises(ProofError):
                merkle.verify_consistency(size1, size2, proof, root1, flip(root2))
            for k in range(len(proof)):
                bad = [flip(h) if i == k else h for i, h in enumerate(proof)]
                with pytest.raises(ProofError):
                    merkle.verify_consistency(size1, size2, bad, root1, root2)
            if size1 < size2:
                with pytest.raises(ProofError):
                    merkle.verify_consistency(size1, size2, [*proof, root2], root1, root2)
                with pytest.raises(ProofError):
                    merkle.verify_consistency(size1, size2, proof[:-1], root1, root2)
    with pytest.raises(ProofError, match="not empty"):
        merkle.verify_consistency(3, 3, [LEAVES[0]], LEAVES[0], LEAVES[0])
    with pytest.raises(ProofError, match="roots differ"):
        merkle.verify_consistency(3, 3, [], LEAVES[0], LEAVES[1])
    with pytest.raises(ProofError, match="empty tree"):
        merkle.verify_consistency(0, 3, [], merkle.EMPTY_ROOT, LEAVES[0])
    with pytest.raises(ProofError, match="no consistency"):
        merkle.verify_consistency(4, 3, [], LEAVES[0], LEAVES[1])
    with pytest.raises(ProofError, match="no consistency"):
        merkle.verify_consistency(-1, 3, [], LEAVES[0], LEAVES[1])
    with pytest.raises(ProofError, match="is empty"):
        merkle.verify_consistency(3, 4, [], LEAVES[0], LEAVES[1])
    for bad_sizes in ((0, 3), (4, 3), (-1, 2)):
        with pytest.raises(LogError):
            merkle.consistency_proof(*bad_sizes, TREE.get_nodes)


@pytest.mark.parametrize("size", [2, 3, 4, 5, 6, 7, 8, 21])
def test_subtree_proofs_verify_for_every_subtree_and_fail_when_changed(size: int) -> None:
    root = mth(LEAVES[:size])
    for start, end in valid_subtrees(size):
        if start == end:
            assert merkle.subtree_consistency_proof(start, end, size, TREE.get_nodes) == []
            merkle.verify_subtree_consistency(start, end, size, [], merkle.EMPTY_ROOT, root)
            with pytest.raises(ProofError):
                merkle.verify_subtree_consistency(start, end, size, [], LEAVES[0], root)
            with pytest.raises(ProofError):
                merkle.verify_subtree_consistency(
                    start, end, size, [LEAVES[0]], merkle.EMPTY_ROOT, root
                )
            continue
        sub = mth(LEAVES[start:end])
        proof = merkle.subtree_consistency_proof(start, end, size, TREE.get_nodes)
        merkle.verify_subtree_consistency(start, end, size, proof, sub, root)
        with pytest.raises(ProofError):
            merkle.verify_subtree_consistency(start, end, size, proof, flip(sub), root)
        with pytest.raises(ProofError):
            merkle.verify_subtree_consistency(start, end, size, proof, sub, flip(root))
        for k in range(len(proof)):
            bad = [flip(h) if i == k else h for i, h in enumerate(proof)]
            with pytest.raises(ProofError):
                merkle.verify_subtree_consistency(start, end, size, bad, sub, root)
        with pytest.raises(ProofError):
            merkle.verify_subtree_consistency(start, end, size, [*proof, root], sub, root)
        if proof:
            with pytest.raises(ProofError):
                merkle.verify_subtree_consistency(start, end, size, proof[:-1], sub, root)
        for index in range(start, end):
            ip = merkle.subtree_inclusion_proof(index, start, end, TREE.get_nodes)
            assert ip == path(index - start, LEAVES[start:end])
            merkle.verify_subtree_inclusion(index, start, end, LEAVES[index], ip, sub)
            with pytest.raises(ProofError):
                merkle.verify_subtree_inclusion(index, start, end, LEAVES[index], ip, flip(sub))
        with pytest.raises(LogError, match=f"leaf index {end} is not in subtree"):
            merkle.subtree_inclusion_proof(end, start, end, TREE.get_nodes)
        with pytest.raises(ProofError, match="not in subtree"):
            merkle.verify_subtree_inclusion(end, start, end, LEAVES[0], [], sub)
    if size != 21:
        return
    with pytest.raises(LogError, match="not a subtree"):
        merkle.subtree_inclusion_proof(3, 2, 6, TREE.get_nodes)
    with pytest.raises(LogError, match="not in a tree of size"):
        merkle.subtree_consistency_proof(0, 8, 7, TREE.get_nodes)
    with pytest.raises(ProofError, match="not in a tree of size"):
        merkle.verify_subtree_consistency(0, 8, 7, [], root, root)
    with pytest.raises(ProofError, match="not a subtree"):
        merkle.verify_subtree_consistency(2, 6, 8, [], root, root)
    with pytest.raises(ProofError, match="not a subtree"):
        merkle.verify_subtree_inclusion(3, 2, 6, LEAVES[3], [], root)
    with pytest.raises(ProofError, match="whole tree but the proof is not empty"):
        merkle.verify_subtree_consistency(0, size, size, [root], root, root)
    with pytest.raises(ProofError, match="whole tree but the hashes differ"):
        merkle.verify_subtree_consistency(0, size, size, [], flip(root), root)


def _all_levels() -> list[dict[tuple[int, int], bytes]]:
    """For each size, every perfect-subtree hash of its first leaves (from the reference)."""
    nodes = {
        (level, index): mth(LEAVES[index << level : (index + 1) << level])
        for level in range(N.bit_length())
        for index in range(N >> level)
    }
    return [{k: v for k, v in nodes.items() if (k[1] + 1) << k[0] <= size} for size in range(N + 1)]


LEVELS = _all_levels()


def test_appending_completes_exactly_the_new_perfect_subtrees() -> None:
    for index in range(N):
        nodes = merkle.perfect_nodes_for_append(index, LEAVES[index], TREE.get_nodes)
        before, after = LEVELS[index], LEVELS[index + 1]
        new = {k: v for k, v in after.items() if k not in before}
        assert [(lvl, i) for lvl, i, _ in nodes] == sorted(new)
        assert {(lvl, i): h for lvl, i, h in nodes} == new
    for start in range(N):
        for stop in range(start, N + 1):
            nodes = merkle.append_batch(start, LEAVES[start:stop], TREE.get_nodes)
            expected = {k: v for k, v in LEVELS[stop].items() if k not in LEVELS[start]}
            assert {(lvl, i): h for lvl, i, h in nodes} == expected
            assert len(nodes) == len(expected)
    with pytest.raises(LogError, match="negative"):
        merkle.perfect_nodes_for_append(-1, LEAVES[0], TREE.get_nodes)
    with pytest.raises(LogError, match="31 bytes"):
        merkle.perfect_nodes_for_append(0, bytes(31), TREE.get_nodes)
    with pytest.raises(LogError, match="negative"):
        merkle.append_batch(-1, [LEAVES[0]], TREE.get_nodes)
    assert merkle.append_batch(-1, [], TREE.get_nodes) == []


def test_compact_range_builds_the_same_roots() -> None:
    frontier = merkle.CompactRange()
    assert frontier.size == 0 and frontier.hashes == () and frontier.root() == merkle.EMPTY_ROOT
    for size in range(1, N + 1):
        frontier.append(LEAVES[size - 1])
        assert frontier.size == size and frontier.root() == mth(LEAVES[:size])
        keys = merkle.subtree_decomposition(0, size)
        assert frontier.hashes == tuple(TREE.get_nodes(keys))
        again = merkle.CompactRange.from_hashes(size, list(frontier.hashes))
        assert again.root() == frontier.root() and again.size == size
    with pytest.raises(LogError, match="has 2 hashes, got 1"):
        merkle.CompactRange.from_hashes(5, [LEAVES[0]])
    with pytest.raises(LogError, match="negative"):
        merkle.CompactRange.from_hashes(-1, [])
    with pytest.raises(LogError, match="frontier hash is 31 bytes"):
        merkle.CompactRange.from_hashes(1, [bytes(31)])
    with pytest.raises(LogError, match="31 bytes"):
        merkle.CompactRange().append(bytes(31))


def test_readers_that_answer_wrongly_are_caught() -> None:
    with pytest.raises(LogError, match="answered 1 hashes for 2 keys"):
        merkle.root(3, lambda keys: [LEAVES[0]])
    with pytest.raises(LogError, match=r"stored node \(1, 0\) is 31 bytes"):
        merkle.root(3, lambda keys: [bytes(31), LEAVES[2]])
    with pytest.raises(LogError, match="not a complete subtree"):
        TREE.get_nodes([(6, 0)])
    with pytest.raises(LogError, match="not a complete subtree"):
        TREE.get_nodes([(0, N)])
    with pytest.raises(LogError, match="not a complete subtree"):
        TREE.get_nodes([(-1, 0)])
    with pytest.raises(LogError, match="not a complete subtree"):
        TREE.get_nodes([(0, -1)])
    assert TREE.size == N and TREE.root() == mth(LEAVES)
    assert merkle.MemoryTree().root() == merkle.EMPTY_ROOT
    with pytest.raises(LogError):
        merkle.MemoryTree().append_leaf_hash(bytes(31))


def test_proof_errors_name_what_failed() -> None:
    root = mth(LEAVES[:8])
    with pytest.raises(LogError, match="no consistency proof from size 0 to size 3"):
        merkle.consistency_proof(0, 3, TREE.get_nodes)
    with pytest.raises(ProofError, match="consistency proof element 0 is 31 bytes"):
        merkle.verify_consistency(3, 8, [bytes(31)], root, root)
    with pytest.raises(
        ProofError, match=r"subtree consistency proof for \[4, 8\) has 0 hashes, want 1"
    ):
        merkle.verify_subtree_consistency(4, 8, 8, [], mth(LEAVES[4:8]), root)
    sub = mth(LEAVES[4:8])
    proof = merkle.subtree_inclusion_proof(5, 4, 8, TREE.get_nodes)
    with pytest.raises(
        ProofError, match=r"inclusion proof of leaf 5 leads to .* of subtree \[4, 8\)"
    ):
        merkle.verify_subtree_inclusion(5, 4, 8, LEAVES[5], proof, flip(sub))


def test_each_refusal_says_which_rule_failed() -> None:
    """Every refusal names the check that failed, with the sizes involved, so a log
    operator can tell a short proof from a wrong root (docs/mutants.md)."""
    root8 = mth(LEAVES[:8])
    with pytest.raises(LogError, match=r"^\[4, 3\) is not a range of leaves$"):
        merkle.subtree_decomposition(4, 3)
    with pytest.raises(LogError, match=r"^\[1, 3\) is not a subtree: start must be a multiple"):
        merkle.subtree_root(1, 3, TREE.get_nodes)
    with pytest.raises(LogError, match=r"^\[2, 6\) is not a subtree"):
        merkle.subtree_consistency_proof(2, 6, 8, TREE.get_nodes)
    with pytest.raises(LogError, match="^leaf index 8 is not in a tree of size 8$"):
        merkle.inclusion_proof(8, 8, TREE.get_nodes)
    # inclusion
    proof = merkle.inclusion_proof(3, 8, TREE.get_nodes)
    with pytest.raises(ProofError, match="^inclusion proof element 1 is 33 bytes, want 32$"):
        merkle.verify_inclusion(3, 8, LEAVES[3], [proof[0], bytes(33)], root8)
    with pytest.raises(
        ProofError,
        match=f"^inclusion proof of leaf 3 leads to root {root8.hex()}, not the root"
        f" {flip(root8).hex()} of the tree of size 8$",
    ):
        merkle.verify_inclusion(3, 8, LEAVES[3], proof, flip(root8))
    # consistency
    root5 = mth(LEAVES[:5])
    proof = merkle.consistency_proof(5, 8, TREE.get_nodes)
    with pytest.raises(
        ProofError,
        match=f"^consistency proof of {len(proof) + 1} hashes from size 5 to 8 is too long$",
    ):
        merkle.verify_consistency(5, 8, [*proof, root8], root5, root8)
    with pytest.raises(
        ProofError,
        match=f"^consistency proof of {len(proof) - 1} hashes from size 5 to 8 is too short$",
    ):
        merkle.verify_consistency(5, 8, proof[:-1], root5, root8)
    with pytest.raises(ProofError, match="^consistency proof does not lead to the root of size 5$"):
        merkle.verify_consistency(5, 8, proof, flip(root5), root8)
    with pytest.raises(ProofError, match="^consistency proof does not lead to the root of size 8$"):
        merkle.verify_consistency(5, 8, proof, root5, flip(root8))
    # subtree consistency: the empty range, an inner range, the proof's elements
    with pytest.raises(ProofError, match=r"^subtree \[3, 3\) is empty but the proof is not$"):
        merkle.verify_subtree_consistency(3, 3, 8, [root8], merkle.EMPTY_ROOT, root8)
    with pytest.raises(ProofError, match=r"^empty subtree \[3, 3\) must have the empty root hash$"):
        merkle.verify_subtree_consistency(3, 3, 8, [], root8, root8)
    with pytest.raises(
        ProofError, match="^subtree consistency proof element 0 is 31 bytes, want 32$"
    ):
        merkle.verify_subtree_consistency(4, 7, 8, [bytes(31)], root8, root8)
    sub = mth(LEAVES[4:7])  # not a perfect subtree, and it ends before the tree does
    proof = merkle.subtree_consistency_proof(4, 7, 8, TREE.get_nodes)
    merkle.verify_subtree_consistency(4, 7, 8, proof, sub, root8)
    with pytest.raises(ProofError, match=r"^subtree consistency proof for \[4, 7\) is empty$"):
        merkle.verify_subtree_consistency(4, 7, 8, [], sub, root8)
    with pytest.raises(
        ProofError,
        match=rf"^subtree consistency proof for \[4, 7\) in a tree of size 8 has 1 hashes,"
        rf" want {len(proof)}$",
    ):
        merkle.verify_subtree_consistency(4, 7, 8, proof[:1], sub, root8)
    with pytest.raises(
        ProofError, match=r"^subtree consistency proof does not lead to the hash of \[4, 7\)$"
    ):
        merkle.verify_subtree_consistency(4, 7, 8, proof, flip(sub), root8)
    with pytest.raises(
        ProofError,
        match=rf"^subtree consistency proof for \[4, 7\) leads to {root8.hex()}, not the root"
        rf" {flip(root8).hex()} of the tree of size 8$",
    ):
        merkle.verify_subtree_consistency(4, 7, 8, proof, sub, flip(root8))
