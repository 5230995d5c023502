"""Cutting a stream into consecutive runs bounded by count and by a per-item weight."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def runs(
    items: Iterable[T], max_count: int, weight: Callable[[T], int], max_weight: int
) -> Iterator[list[T]]:
    """Consecutive lists of ``items``, each of at most ``max_count`` items whose weights add
    up to at most ``max_weight`` (an item heavier than ``max_weight`` forms a run alone)."""
    run: list[T] = []
    held = 0
    for item in items:
        w = weight(item)
        if run and (len(run) >= max_count or held + w > max_weight):
            yield run
            run, held = [], 0
        run.append(item)
        held += w
    if run:
        yield run
