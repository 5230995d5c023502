"""clients.scan.runs: the one cutter behind scan batches and Lookup parts."""

from __future__ import annotations

from clients.scan.runs import runs


def test_runs_are_bounded_by_count_and_weight() -> None:
    items = [1, 1, 5, 1, 1, 1, 9, 1]
    got = list(runs(items, max_count=3, weight=lambda x: x, max_weight=6))
    assert got == [[1, 1], [5, 1], [1, 1], [9], [1]]
    assert [x for r in got for x in r] == items


def test_runs_of_nothing_and_of_weightless_items() -> None:
    assert list(runs([], 3, lambda x: x, 1)) == []
    assert list(runs("abcdefg", 3, lambda _: 0, 0)) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]


def test_runs_may_start_small_and_double() -> None:
    got = [len(r) for r in runs(range(100), 32, lambda _: 0, 0, first_count=4)]
    assert got == [4, 8, 16, 32, 32, 8]
    got = [len(r) for r in runs(range(10), 3, lambda _: 0, 0, first_count=16)]
    assert got == [3, 3, 3, 1]  # never more than max_count
    # the weight bound still cuts a run short; the next run still doubles the count
    assert list(runs([1, 1, 5, 1, 1, 1, 1], 8, lambda x: x, 5, first_count=2)) == [
        [1, 1],
        [5],
        [1, 1, 1, 1],
    ]
