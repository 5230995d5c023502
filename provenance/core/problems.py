"""The problems an audit reports: a bounded list of sentences, then a count.

Each of the audits that compare a store or a log with what it should hold (the tree,
the leaf columns, the key-history rows, the claims, the near-duplicate index) names
what it found wrong in one sentence a person reads; a damaged or hostile log can hold
millions of such faults, so only the first `MAX_PROBLEMS` are kept and the rest counted.
"""

from __future__ import annotations

#: Problems listed in full; more are counted.
MAX_PROBLEMS = 20


class Problems:
    """``problems``: the first `MAX_PROBLEMS` sentences noted (`_note`), in order;
    ``more``: how many were noted beyond them. The auditors inherit it."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.more = 0

    def _note(self, text: str) -> None:
        """Note one problem, ``text`` a sentence; kept while fewer than `MAX_PROBLEMS`
        are, else counted in ``more``."""
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self.more += 1
