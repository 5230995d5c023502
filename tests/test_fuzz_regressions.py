"""Inputs that once crashed a parser under the fuzzer (tests/fuzz/, `make fuzz`), kept
as data files in tests/data/fuzz/TARGET/, and every seed of the fuzz corpus: each
must give a `ProvenanceError` or a value, never another exception."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.seeds import MAX_LEN, SEEDS
from tests.fuzz.targets import TARGETS, run_target

DATA = Path(__file__).resolve().parent / "data" / "fuzz"
CASES = sorted(DATA.glob("*/*"))


def test_every_case_names_a_target() -> None:
    assert CASES, f"no regression inputs under {DATA}"
    assert {p.parent.name for p in CASES} <= set(TARGETS)


@pytest.mark.parametrize("path", CASES, ids=[f"{p.parent.name}/{p.name}" for p in CASES])
def test_crashing_input_is_now_refused_cleanly(path: Path) -> None:
    run_target(path.parent.name, path.read_bytes())


@pytest.mark.parametrize("name", list(SEEDS))
def test_seed_corpus_is_accepted(name: str) -> None:
    """Every seed runs through its target cleanly and fits the fuzzer's input size."""
    for seed in SEEDS[name]():
        assert len(seed) <= MAX_LEN[name]
        run_target(name, seed)


def test_an_audit_state_nested_too_deeply_is_a_log_error() -> None:
    """Found by reading the parser (h-fuzz): json.loads raised RecursionError."""
    from provenance.core.errors import LogError
    from provenance.log.audit import AuditState

    with pytest.raises(LogError, match="audit state file is damaged"):
        AuditState.from_json("[" * 200_000)


def test_the_fuzz_runner_names_itself_as_it_is_run(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m tests.fuzz.run --help` (the README's way to run one target) said
    "usage: run.py", a name that cannot be run from the repository root, and its errors
    "run.py: error: ..."; it names the module, and its help gives examples and where the
    crashes and logs go."""
    from tests.fuzz.run import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: python -m tests.fuzz.run "), text
    assert "run.py" not in text, text
    assert "python -m tests.fuzz.run --seconds 600 sidecar" in text, text
    assert ".fuzz/crashes/" in text, text
    with pytest.raises(SystemExit) as refused:
        main(["no-such-target"])
    assert refused.value.code == 2
    assert "python -m tests.fuzz.run: error: unknown targets" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["FUZZ_SECONDS", "FUZZ_JOBS"])
def test_a_fuzz_setting_that_is_not_a_number_is_a_usage_error(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make fuzz FUZZ_SECONDS=1m` was a ValueError traceback from the defaults; it is
    argparse's usage error (exit 2) naming the variable and its value."""
    from tests.fuzz.run import main

    monkeypatch.setenv(name, "1m")
    with pytest.raises(SystemExit) as refused:
        main(["--help"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert f"${name} must be a whole number, not '1m'" in err, err
