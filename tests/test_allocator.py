"""`prov serve`'s malloc settings (provenance/server/allocator.py): applied on glibc,
left to the operator when the environment configures malloc."""

from __future__ import annotations

import platform

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
