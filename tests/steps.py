"""Step counts for tests of an algorithm's order: an offset that counts the comparisons
made with it, so that a test asserts how many steps a search takes rather than how long
it runs (speed is a bench's job; these machines are noisy)."""

from __future__ import annotations


class CountedOffset(int):
    """An int that adds one to ``CountedOffset.comparisons`` whenever it is ordered
    against another with ``<``, ``<=``, ``>`` or ``>=``, on either side (Python tries an
    int subclass's reflected comparison first, so ``start <= offset`` is counted as
    ``offset >= start``): what `bisect` does, and what a walk over sorted offsets does
    however it is written."""

    comparisons = 0

    def _counted(self, other: object) -> int:
        assert isinstance(other, int)
        CountedOffset.comparisons += 1
        return int(other)

    def __lt__(self, other: object) -> bool:
        return int(self) < self._counted(other)

    def __le__(self, other: object) -> bool:
        return int(self) <= self._counted(other)

    def __gt__(self, other: object) -> bool:
        return int(self) > self._counted(other)

    def __ge__(self, other: object) -> bool:
        return int(self) >= self._counted(other)
