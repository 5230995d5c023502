"""Step counts for tests of an algorithm's order: an offset that counts the comparisons
made with it, so that a test asserts how many steps a search takes rather than how long
it runs (speed is a bench's job; these machines are noisy)."""

from __future__ import annotations


class CountedOffset(int):
    """An int that adds one to ``CountedOffset.comparisons`` whenever it is compared
    with ``<`` (what `bisect` and a walk over sorted offsets both do)."""

    comparisons = 0

    def __lt__(self, other: object) -> bool:
        assert isinstance(other, int)
        CountedOffset.comparisons += 1
        return int(self) < int(other)
