"""clients.scan.runs: the one cutter behind scan batches and Lookup parts."""

from __future__ import annotations

from collections.abc import Iterator

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


def test_the_last_runs_are_cut_into_tail_parts() -> None:
    # 10^4 files at 256 a batch: the last two runs (256 + 32 files) become 4 of 72, so
    # no worker of 2 is left holding a whole batch while the other has nothing to do
    got = [len(r) for r in runs(range(10_000), 256, lambda _: 0, 0, 16, tail_parts=4)]
    assert got[:5] == [16, 32, 64, 128, 256]
    assert got[-5:] == [256, 72, 72, 72, 72]
    assert sum(got) == 10_000
    assert [x for r in runs(range(300), 256, lambda _: 0, 0, 16, tail_parts=4) for x in r] == list(
        range(300)
    )
    # never under min_tail items a part (a Lookup call costs the same whatever its size)
    assert [len(r) for r in runs(range(40), 256, lambda _: 0, 0, tail_parts=4)] == [16, 16, 8]
    # nor over max_count (a --batch-size under min_tail)
    assert [len(r) for r in runs(range(5), 2, lambda _: 0, 0, tail_parts=4)] == [2, 2, 1]
    # the weight bound still holds in the tail
    tail = list(runs([5, 5, 5, 5, 5, 5], 4, lambda x: x, 10, tail_parts=2, min_tail=1))
    assert all(sum(r) <= 10 for r in tail) and sum(map(len, tail)) == 6


def test_the_tail_cut_reads_ahead_at_most_twice_the_weight_bound() -> None:
    # An archive's images of up to 256 MiB are held in memory, each heavier than the
    # 32 MiB a batch carries and so a run alone: holding back two such runs for the
    # tail's cut read 2 x 256 MiB further ahead. The runs held back weigh at most twice
    # the bound (two batches' worth); a heavier one goes on at once
    read: list[int] = []

    def stream(weights: list[int]) -> Iterator[int]:
        for w in weights:
            read.append(w)
            yield w

    for weights in ([1000] * 10, [10] * 30 + [1000] * 5 + [10] * 30, [1] * 200):
        read.clear()
        yielded: list[int] = []
        ahead = []  # weight read but not yet yielded, as each run is yielded
        for run in runs(stream(weights), 256, lambda w: w, 32, 16, tail_parts=4):
            yielded += run
            ahead.append(sum(read) - sum(yielded))
        assert yielded == weights
        # at most 2 x 32 held back for the cut, beside the run being handed on and the
        # item read to end it (before: two runs of 1,000 held back, 3,000 read ahead)
        assert max(ahead) <= 2 * 32 + 2 * max(weights), (weights[:3], ahead)


def test_the_tail_parts_may_be_known_only_when_the_stream_ends() -> None:
    """A Ray cluster's CPUs are known once it is joined, after the stream has started: the
    count is asked for when the stream ends (10^4 items, 256 a run: the same cut as an
    int of 4 gives), and the last runs go on uncut if it is 1 or less."""
    asked: list[int] = []

    def stream() -> Iterator[int]:
        yield from range(10_000)
        asked.append(len(asked))

    def parts() -> int:
        assert asked, "asked for before the stream ended"
        return 4

    got = [len(r) for r in runs(stream(), 256, lambda _: 0, 0, 16, tail_parts=parts)]
    assert got[-5:] == [256, 72, 72, 72, 72]
    assert sum(got) == 10_000
    uncut = [len(r) for r in runs(range(10_000), 256, lambda _: 0, 0, 16, tail_parts=lambda: 0)]
    assert uncut == [len(r) for r in runs(range(10_000), 256, lambda _: 0, 0, 16)]
