"""`prov serve`'s malloc settings (provenance/server/allocator.py): applied on glibc,
left to the operator when the environment configures malloc."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from provenance.server.allocator import keep_freed_memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")


@glibc
def test_thresholds_are_set_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert keep_freed_memory()
    assert keep_freed_memory()  # again: the same values, accepted again


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"])
def test_an_operators_malloc_environment_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "glibc.malloc.trim_threshold=1048576" if "TUN" in name else "1048576")
    assert not keep_freed_memory()


def test_cycles_are_collected_rarely_and_still_collected() -> None:
    # in a child: freezing and the thresholds are process-wide
    code = """
import gc, weakref
from provenance.server.allocator import GC_YOUNG_THRESHOLD, collect_cycles_rarely
before = gc.get_threshold()
kept = [1]
collect_cycles_rarely()
assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2]), gc.get_threshold()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
assert gone() is not None  # a cycle: not freed by reference counting
gc.collect()
assert gone() is None  # made after the freeze: still collected
print("ok")
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
