"""Folders nested deeper than tools expect, made and removed one level at a time.

A tree 1,200 levels deep (a scan test's) is walked by nothing recursive here: Python
3.11's `shutil.rmtree` recurses a frame per level and stops with RecursionError past
about 1,000 (pytest's clean-up of old runs' folders uses it), and a path-based removal
fails with "File name too long" once the path passes PATH_MAX (4,096 bytes on Linux).
Both work here from folder descriptors, one or two open at a time.
"""

from __future__ import annotations

import os
from pathlib import Path

#: How a folder is opened to work inside it: never through a symbolic link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def make_chain(root: Path, depth: int, name: str = "a") -> None:
    """Make ``depth`` nested folders ``name`` under the existing folder ``root``, each
    made from its parent's descriptor (the whole path may pass PATH_MAX)."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)


def remove_tree(root: Path) -> None:
    """Remove the folder ``root`` and everything in it, however deep: no recursion and
    no path longer than a name (each folder is emptied from its own descriptor, then
    removed from its parent's, reached by ``..``). Symbolic links are removed, never
    followed. Does nothing if ``root`` does not exist. Raises OSError."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return
    names: list[str] = []  # the folders opened below root, by name
    try:
        while True:
            with os.scandir(fd) as it:
                entries = list(it)
            sub = next((e.name for e in entries if e.is_dir(follow_symlinks=False)), None)
            if sub is not None:
                inner = os.open(sub, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = inner
                names.append(sub)
                continue
            for entry in entries:
                os.unlink(entry.name, dir_fd=fd)
            if not names:
                break
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(root)
