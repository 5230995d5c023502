"""The fields of a report row read back on ``prov scan --resume``, checked before they
feed the CSV and HTML reports (`clients.scan.report`).

A resumed row is text from disk: an edit or a damaged disk may give a field a value no
scan writes. Each field the reports read is checked here, and `row_problem` says in words
which one is wrong and what it should be ("its detector.score is NaN: a number from 0 to
1, or null"). Before, such values were taken as they were: a detector score of NaN or 7.5
ranked first among the unsigned images of the HTML page ("nan", "7.500"), -3 below the
images without a score, 4,000 digits ended in an OverflowError traceback; a video's
coverage that is text, or a revocation time that is a number, ended the scan in a
traceback drawing the page, after all its work. A field left out counts as null (rows of
older scans, rows written by hand); fields the reports do not read are not checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from provenance.core.claims import Verdict

#: Largest size a row may give, in bytes: a file's size on disk is an ``off_t`` (2^63-1).
MAX_ROW_SIZE = 2**63 - 1
#: Largest log leaf index a row may give (the log counts its leaves in an int64).
MAX_LEAF_INDEX = 2**63 - 1
#: Bits in a PDQ hash: the largest distance between two hashes, and threshold.
PDQ_BITS = 256
#: The kinds of row a scan writes (`clients.scan.hashing.Measured`, `rows.error_row`).
KINDS = ("media", "file", "sidecar", "empty", "refused")
#: Digits of a number shown whole in an error message (a longer one is counted).
_DIGITS_SHOWN = 30

#: What is wrong with a field: its name (``evidence.claim.log.leaf_index``), its value,
#: and what it should be, in words (`row_problem` adds "or null" but for a list's item).
Problem = tuple[str, object, str]
#: A field's check: (its value, never None: null passes before; its name) -> the problem,
#: or None when the value is fine.
Check = Callable[[object, str], "Problem | None"]


def shown_value(value: object) -> str:
    """``value`` (a row's field, as JSON gave it) in an error message, short."""
    if isinstance(value, float) and math.isinf(value):
        return "infinite" if value > 0 else "minus infinity"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int) and not isinstance(value, bool):
        digits = len(str(abs(value)))
        if digits > _DIGITS_SHOWN:
            return f"a number of {digits:,} digits"
    shown = json.dumps(value)
    return shown if len(shown) <= 2 * _DIGITS_SHOWN else shown[:_DIGITS_SHOWN] + "..."


def _text(value: object, at: str) -> Problem | None:
    return None if isinstance(value, str) else (at, value, "text")


def _bool(value: object, at: str) -> Problem | None:
    return None if isinstance(value, bool) else (at, value, "true or false")


def _whole(low: int, high: int, what: str = "") -> Check:
    """A whole number from ``low`` to ``high`` (``what``: its words, if not these)."""
    words = what or f"a whole number from {low:,} to {high:,}"

    def check(value: object, at: str) -> Problem | None:
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return None
        return at, value, words

    return check


def _number(low: float, high: float) -> Check:
    """A finite number from ``low`` to ``high``."""
    words = f"a number from {low:g} to {high:g}"

    def check(value: object, at: str) -> Problem | None:
        # NaN fails the comparisons, infinity is out of range; a whole number is compared
        # as it is (exactly: float() of 4,000 digits overflows)
        if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
            return None
        return at, value, words

    return check


def _one_of(names: tuple[str, ...]) -> Check:
    words = f"one of {', '.join(names)}"

    def check(value: object, at: str) -> Problem | None:
        return None if isinstance(value, str) and value in names else (at, value, words)

    return check


def _fields(checks: dict[str, Check]) -> Check:
    """An object whose fields named in ``checks`` pass them (each may be null or left out)."""
    named = tuple(checks.items())

    def check(value: object, at: str) -> Problem | None:
        if not isinstance(value, dict):
            return at, value, "an object"
        for name, field_check in named:
            inner = value.get(name)
            if inner is not None:
                problem = field_check(inner, f"{at}.{name}" if at else name)
                if problem is not None:
                    return problem
        return None

    return check


def _list_of(item: Check) -> Check:
    """A list whose every item passes ``item`` (none of them null)."""

    def check(value: object, at: str) -> Problem | None:
        if not isinstance(value, list):
            return at, value, "a list"
        for k, inner in enumerate(value):
            if inner is None:
                return f"{at}[{k}]", inner, f"no item of {at} is null"
            problem = item(inner, f"{at}[{k}]")
            if problem is not None:
                return problem
        return None

    return check


_PDQ = _whole(0, PDQ_BITS)
_ROW = _fields(
    {
        "archive": _text,
        "kind": _one_of(KINDS),
        "size": _whole(0, MAX_ROW_SIZE, "a size is a whole number of bytes from 0 to 2^63-1"),
        "media_type": _text,
        "sha256": _text,
        "soft_bindings": _list_of(
            _fields({"algorithm": _text, "hash": _text, "quality": _whole(0, 100)})
        ),
        "status": _one_of(tuple(v.value for v in Verdict)),
        "reasons": _list_of(_text),
        "evidence": _fields(
            {
                "pdq_distance": _PDQ,
                "pdq_threshold": _PDQ,
                "video_match": _fields(
                    {
                        "coverage": _number(0, 1),
                        "median_distance": _number(0, PDQ_BITS),
                        "threshold": _PDQ,
                    }
                ),
                "claim": _fields(
                    {
                        "device_id": _text,
                        "captured_at": _text,
                        "log": _fields({"leaf_index": _whole(0, MAX_LEAF_INDEX)}),
                        "device": _fields({"revoked_at": _text, "revocation_reason": _text}),
                    }
                ),
            }
        ),
        "detector": _fields({"score": _number(0, 1), "band": _text, "note": _text}),
        "note": _text,
        "error": _text,
        "evidence_checked": _one_of(("log-key", "refused")),
        "log_key": _text,
        "pixels_checked": _bool,
        "verified_at": _text,
    }
)


#: The verdicts a row's ``pixels_checked`` may be true or false for: a near copy's
#: (`clients.derived.rests_on_soft_binding`; REVOKED_KEY only when not of the exact bytes).
_NEAR_VERDICTS = (Verdict.DERIVED.value, Verdict.REVOKED_KEY.value)


def _pixels_problem(row: dict[str, Any]) -> str | None:
    """Why a row's ``pixels_checked``, true or false, is on a row that is no near copy's
    (another verdict, an error row, a REVOKED_KEY of the exact bytes), or None: no scan
    writes it there, and the reports would show it as a near copy's (the flagged table's
    "match checked", the legend's count of DERIVED or REVOKED_KEY files not checked
    here). Its type is checked before (`_ROW`)."""
    value = row.get("pixels_checked")
    if value is None:
        return None
    status = row.get("status")
    evidence = row.get("evidence") or {}
    exact = status == Verdict.REVOKED_KEY.value and evidence.get("hash_match") is True
    if status in _NEAR_VERDICTS and not exact:
        return None
    what = f"a {status} row" if status is not None else "a row with no verdict"
    if exact:
        what = "a REVOKED_KEY row of the exact bytes (evidence.hash_match true)"
    return (
        f"its pixels_checked is {shown_value(value)}: null for {what}; only a near copy's"
        " row (DERIVED, or REVOKED_KEY of a near match) says it"
    )


def row_problem(row: dict[str, Any]) -> str | None:
    """Why ``row`` (a report line read back, a JSON object) is no row a scan writes, in
    words, or None: ``path`` is text, and each other field the reports read is null, left
    out, or of its kind: ``size`` a whole number of bytes (0 to 2^63-1), ``kind`` and
    ``status`` one of their names, ``detector.score`` and a video's ``coverage`` a number
    from 0 to 1, a PDQ distance or threshold a whole number of bits (0 to 256), a log leaf
    a whole number from 0, a quality 0 to 100, ``pixels_checked`` true or false and only on
    a near copy's row (DERIVED, or REVOKED_KEY whose evidence.hash_match is not true), the
    other fields text, objects or lists as the scan writes them."""
    path = row.get("path")
    if not isinstance(path, str):  # the one field that is never null
        if path is None:
            return "it has no path (the file or archive entry it is the row of)"
        return f"its path is {shown_value(path)}: text"
    problem = _ROW(row, "")
    if problem is None:
        return _pixels_problem(row)
    at, value, words = problem
    null = "" if at.endswith("]") else ", or null"  # an item of a list is never null
    return f"its {at} is {shown_value(value)}: {words}{null}"
