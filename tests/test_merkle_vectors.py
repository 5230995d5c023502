"""RFC 9162 Merkle math against the transparency-dev/merkle vectors and pymerkle."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path
from typing import Any

import pytest
from pymerkle import InmemoryTree

from provenance.core import merkle
from provenance.core.errors import ProofError

TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "tlog" / "testdata"
VECTOR_FILES = sorted(TESTDATA.rglob("*.json"))

# The leaves behind the vectors: the RFC 6962 test entries of certificate-transparency
# and transparency-dev/merkle (testonly), whose tree of 8 has the root below.
RFC6962_ENTRIES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
RFC6962_ROOT_8 = bytes.fromhex("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328")


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _b64(text: str) -> bytes:
    return base64.b64decode(text)


def _proof(vector: dict[str, Any]) -> list[bytes]:
    return [_b64(item) for item in vector["proof"] or []]


def _verify(kind: str, v: dict[str, Any]) -> None:
    proof = _proof(v)
    if kind == "inclusion":
        merkle.verify_inclusion(
            v["leafIdx"], v["treeSize"], _b64(v["leafHash"]), proof, _b64(v["root"])
        )
    elif kind == "consistency":
        merkle.verify_consistency(v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
    elif kind == "subtreeinclusion":
        merkle.verify_subtree_inclusion(
            v["leafIdx"], v["start"], v["end"], _b64(v["leafHash"]), proof, _b64(v["root"])
        )
    else:
        assert kind == "subtreeconsistency"
        merkle.verify_subtree_consistency(
            v["start"], v["end"], v["size"], proof, _b64(v["root1"]), _b64(v["root2"])
        )


def test_all_vector_files_are_found() -> None:
    kinds = {p.relative_to(TESTDATA).parts[0] for p in VECTOR_FILES}
    assert len(VECTOR_FILES) == 518
    assert kinds == {"inclusion", "consistency", "subtreeinclusion", "subtreeconsistency"}


@pytest.mark.parametrize(
    "path", VECTOR_FILES, ids=[str(p.relative_to(TESTDATA)) for p in VECTOR_FILES]
)
def test_vector(path: Path) -> None:
    vector = _load(path)
    kind = path.relative_to(TESTDATA).parts[0]
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            _verify(kind, vector)
    else:
        _verify(kind, vector)


def _tree_with(leaves: list[bytes]) -> merkle.MemoryTree:
    tree = merkle.MemoryTree()
    for entry in leaves:
        tree.append(entry)
    return tree


def test_rfc6962_entries_give_the_published_root() -> None:
    assert _tree_with(RFC6962_ENTRIES).root() == RFC6962_ROOT_8


HAPPY_PATHS = [p for p in VECTOR_FILES if p.name.startswith("happy-path")]


@pytest.mark.parametrize(
    "path", HAPPY_PATHS, ids=[str(p.relative_to(TESTDATA)) for p in HAPPY_PATHS]
)
def test_generated_proof_equals_vector(path: Path) -> None:
    """Our proofs, read from stored nodes, are byte for byte the reference proofs."""
    v = _load(path)
    kind = path.relative_to(TESTDATA).parts[0]
    want = _proof(v)
    if kind == "inclusion":
        tree = _tree_with(RFC6962_ENTRIES[: v["treeSize"]])
        got = merkle.inclusion_proof(v["leafIdx"], v["treeSize"], tree.get_nodes)
        assert merkle.root(v["treeSize"], tree.get_nodes) == _b64(v["root"])
    elif kind == "consistency":
        tree = _tree_with(RFC6962_ENTRIES[: v["size2"]])
        if v["size1"] == v["size2"]:
            got = []
        else:
            got = merkle.consistency_proof(v["size1"], v["size2"], tree.get_nodes)
        assert merkle.root(v["size1"], tree.get_nodes) == _b64(v["root1"])
    elif kind == "subtreeinclusion":
        # The reference places the entries at the subtree's first leaf; what comes
        # before it is never read.
        start, end = v["start"], v["end"]
        tree = _tree_with([b"filler"] * start + RFC6962_ENTRIES[: end - start])
        got = merkle.subtree_inclusion_proof(v["leafIdx"], start, end, tree.get_nodes)
        assert merkle.subtree_root(start, end, tree.get_nodes) == _b64(v["root"])
    else:
        tree = _tree_with(RFC6962_ENTRIES[: v["size"]])
        got = merkle.subtree_consistency_proof(v["start"], v["end"], v["size"], tree.get_nodes)
        assert merkle.root(v["size"], tree.get_nodes) == _b64(v["root2"])
    assert got == want


def _pymerkle_tree(entries: list[bytes]) -> InmemoryTree:
    reference = InmemoryTree(algorithm="sha256")
    for entry in entries:
        reference.append_entry(entry)
    return reference


def test_roots_match_pymerkle_for_every_size_up_to_200() -> None:
    rng = random.Random(9162)
    entries = [rng.randbytes(rng.randrange(0, 40)) for _ in range(200)]
    reference = _pymerkle_tree(entries)
    tree = _tree_with(entries)
    for size in range(1, 201):
        assert merkle.root(size, tree.get_nodes) == reference.get_root(size), size


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 127, 128, 129, 200])
def test_inclusion_proofs_match_pymerkle(size: int) -> None:
    rng = random.Random(size)
    entries = [rng.randbytes(rng.randrange(1, 64)) for _ in range(size)]
    reference = _pymerkle_tree(entries)
    tree = _tree_with(entries)
    for index in range(size):
        # pymerkle numbers leaves from 1 and puts the leaf hash first in its path.
        path = reference.prove_inclusion(index + 1, size).serialize()["path"]
        assert path[0] == merkle.leaf_hash(entries[index]).hex()
        got = merkle.inclusion_proof(index, size, tree.get_nodes)
        assert [h.hex() for h in got] == path[1:], (size, index)
