"""Cutting a stream into consecutive runs bounded by count and by a per-item weight."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

#: Runs held back to be re-cut into the tail's parts (`runs`' ``tail_parts``).
TAIL_RUNS = 2


def runs(
    items: Iterable[T],
    max_count: int,
    weight: Callable[[T], int],
    max_weight: int,
    first_count: int | None = None,
    tail_parts: int | Callable[[], int] = 0,
    min_tail: int = 16,
) -> Iterator[list[T]]:
    """Consecutive lists of ``items``, each of at most ``max_count`` items whose weights add
    up to at most ``max_weight`` (an item heavier than ``max_weight`` forms a run alone).
    With ``first_count``, the first run holds at most that many items and each later one
    at most twice as many as the one before, up to ``max_count``.

    With ``tail_parts`` (more than 1), the items of the last TAIL_RUNS runs are cut again
    into about that many runs of equal count (at least ``min_tail`` items each, both bounds
    kept), so that the workers sharing the runs end together instead of one
    finishing a whole run while the others have nothing left (`prov scan` passes twice
    its workers). The stream is then read TAIL_RUNS runs ahead of what was yielded, runs
    that weigh at most TAIL_RUNS x ``max_weight`` in all (a heavier run is yielded at
    once, as one item over ``max_weight`` cannot be cut). ``tail_parts`` may be a function,
    asked when the stream ends (a Ray cluster's CPUs are known once it is joined, after the
    stream started): the runs are then held back as for a number, and go on uncut if it
    gives 1 or less."""
    cut = _runs(items, max_count, weight, max_weight, first_count)
    if not callable(tail_parts) and tail_parts <= 1:
        yield from cut
        return
    held: list[tuple[list[T], int]] = []  # runs held back, each with its weight
    held_weight = 0
    for run in cut:
        run_weight = sum(map(weight, run))
        held.append((run, run_weight))
        held_weight += run_weight
        # at most TAIL_RUNS runs of at most TAIL_RUNS x max_weight in all: a run heavier
        # than that (one item over max_weight, such as a 256 MiB image in an archive)
        # goes on at once, not held in memory for a cut that cannot split it
        while held and (len(held) > TAIL_RUNS or held_weight > TAIL_RUNS * max_weight):
            first, first_weight = held.pop(0)
            held_weight -= first_weight
            yield first
    parts = tail_parts() if callable(tail_parts) else tail_parts
    if parts <= 1:
        for run, _ in held:
            yield run
        return
    rest = [item for run, _ in held for item in run]
    if rest:
        count = min(max_count, max(min_tail, math.ceil(len(rest) / parts)))
        yield from _runs(rest, count, weight, max_weight, None)


def _runs(
    items: Iterable[T],
    max_count: int,
    weight: Callable[[T], int],
    max_weight: int,
    first_count: int | None,
) -> Iterator[list[T]]:
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
