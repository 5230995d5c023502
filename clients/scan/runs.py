"""Cutting a stream into consecutive runs bounded by count and by a per-item weight."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def runs(
    items: Iterable[T],
    max_count: int,
    weight: Callable[[T], int],
    max_weight: int,
    first_count: int | None = None,
) -> Iterator[list[T]]:
    """Consecutive lists of ``items``, each of at most ``max_count`` items whose weights add
    up to at most ``max_weight`` (an item heavier than ``max_weight`` forms a run alone).
    With ``first_count``, the first run holds at most that many items and each later one
    at most twice as many as the one before, up to ``max_count``."""
    run: list[T] = []
    held = 0
    count = max_count if first_count is None else max(1, min(first_count, max_count))
    for item in items:
        w = weight(item)
        if run and (len(run) >= count or held + w > max_weight):
            yield run
            run, held = [], 0
            count = min(max_count, 2 * count)
        run.append(item)
        held += w
    if run:
        yield run
