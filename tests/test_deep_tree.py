"""The deep folders tests make are removed by the tests themselves (tests/deep_tree.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.deep_tree import make_chain, remove_tree


def test_a_tree_deeper_than_rmtree_and_path_max_allow_is_removed(tmp_path: Path) -> None:
    """A chain of 2,100 folders (a path of 4,200 bytes, past PATH_MAX, and past Python's
    recursion limit) with files, a symbolic link and a side folder on the way is removed
    whole. Python 3.11's shutil.rmtree stopped with RecursionError and left it: pytest's
    clean-up of old runs' folders, which uses it, then failed on each."""
    depth = 2_100
    assert depth > sys.getrecursionlimit() and 2 * depth > os.pathconf("/", "PC_PATH_MAX")
    root = tmp_path / "d"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("kept")
    make_chain(root, depth // 2)
    middle = os.open(root / ("a/" * 10), os.O_RDONLY)
    try:
        os.mkdir("side", dir_fd=middle)
        os.symlink(tmp_path / "outside.txt", "link", dir_fd=middle)
    finally:
        os.close(middle)
    make_chain(root / ("a/" * 10) / "side", 3)
    deepest = root / ("a/" * (depth // 2))
    make_chain(deepest, depth - depth // 2)  # the path grows past PATH_MAX from here
    remove_tree(root)
    assert not root.exists()
    assert (tmp_path / "outside.txt").read_text() == "kept"
    remove_tree(root)  # gone already: nothing to do
