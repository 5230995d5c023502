"""scripts/mutants.py's judgement of surviving mutants (`make mutants`): which changes
are message text only, which have a reason that follows from their shape, and that every
REASONS entry is specific."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("mutants_script", ROOT / "scripts" / "mutants.py")
assert _spec is not None and _spec.loader is not None
mutants = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = mutants
_spec.loader.exec_module(mutants)

HAMMING = 'return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()'


@pytest.mark.parametrize(
    "new",
    [
        'return (int.from_bytes(a, ) ^ int.from_bytes(b, "big")).bit_count()',
        'return (int.from_bytes(a, "big") ^ int.from_bytes(b, )).bit_count()',
    ],
    ids=["first", "second"],
)
def test_a_dropped_big_endian_argument_is_equivalent_wherever_it_is(new: str) -> None:
    assert mutants._rule_reason(HAMMING, new).startswith("equivalent: int.from_bytes")


def test_other_changes_have_no_rule_reason() -> None:
    assert mutants._rule_reason(HAMMING, HAMMING.replace('"big"', '"little"', 1)) == ""
    assert mutants._rule_reason(HAMMING, HAMMING.replace("^", "&")) == ""
    assert mutants._rule_reason('x.decode("ascii")', 'x.decode("ASCII")') == mutants._CODEC
    assert mutants._rule_reason('x.decode("ascii")', 'x.decode("XXasciiXX")') == ""


def test_message_text_is_prose_in_a_string_literal_only() -> None:
    msg = 'raise LogError("signed note has control characters")'
    assert mutants.is_message_text(msg, 'raise LogError("XXsigned note has control charactersXX")')
    assert mutants.is_message_text(msg, 'raise LogError("SIGNED NOTE HAS CONTROL CHARACTERS")')
    assert not mutants.is_message_text(msg, "raise LogError(None)")
    # a word without spaces is code (a codec, a key, a kind), not prose
    assert not mutants.is_message_text('_check_proof("inclusion", p)', '_check_proof("XX", p)')


def test_every_reason_is_specific() -> None:
    for line, reason in mutants.REASONS.items():
        assert line and reason.startswith(("equivalent", "unreachable")), (line, reason)
        assert len(reason) > 40, line
