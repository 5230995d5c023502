"""Mutation testing of the trusted core with mutmut; writes docs/mutants.md.

Usage: python scripts/mutants.py [--keep] [--report-only] [--max-children N] [NAME...]

The modules mutated and the fast unit tests run against them are listed under
``[tool.mutmut]`` in pyproject.toml (the only place that names them). mutmut runs in a
staging copy of the project, ``build/mutants/work/``, so the working tree is never touched
(``shared`` is linked inside it: mutmut runs the tests in its ``mutants/`` folder, and they
find fixtures in ../shared). Afterwards the score per module and every surviving mutant,
with its diff and the reason it is left alive (`REASONS` below), go to docs/mutants.md and
build/mutants/report.json.

Score = (killed + timed out + crashed) / mutants; a mutant no test covers counts as surviving. The
behaviour score leaves out survivors that only change the wording of prose in a string
literal (messages and verdict reasons). Exits 1 when the behaviour score is under
`TARGET`, when a survivor that changes code has no reason written down, or when some
mutants were not run (an interrupted run, or NAME globs that left others out).

Without --keep every mutant is tested afresh (about 3,100; 11 minutes on 2 cores).
--keep reuses the staging copy: a mutant keeps its "killed" verdict while the source of
its function is unchanged (mutmut's per-function hash); every other mutant (survived, no
tests, not run, or in a changed function) is tested again, against a freshly rebuilt map
of which tests reach which function. NAME globs (with --keep) test only the mutants they
match and keep every other verdict.
--report-only rewrites the report from the last run.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tokenize
import tomllib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "build" / "mutants"
WORK = STAGE / "work"
REPORT = ROOT / "docs" / "mutants.md"
#: Lowest acceptable score over the trusted core.
TARGET = 0.90
_COPY = ("provenance", "clients", "detector", "tests", "pyproject.toml")
#: mutmut's verdicts that count as killed: a test failed, timed out, or the test process
#: crashed (a NULL pointer handed to libsodium: "segfault", exit -11 or -9).
_KILLED = {"killed", "timeout", "segfault"}

#: Why a surviving mutant is left alive, keyed by the mutated line (stripped) as
#: `mutmut show` prints it after "+", or by "FUNCTION: line" (FUNCTION as in the mutant's
#: name, e.g. "NoteVerifierǁ__init__") where the line alone is ambiguous. Equivalent
#: mutants change no behaviour any input can observe; the others are named for what they
#: would take to kill.
MESSAGE_REASON = (
    "message text: the wording of an error message or a verdict reason; tests pin the"
    " words that carry meaning, not every letter"
)
_CODEC = "equivalent: Python's codec names are case-insensitive"
REASONS: dict[str, str] = {
    **dict.fromkeys(
        (
            f"perceptual_hash: {line}"
            for line in (
                "or not 0 <= quality < 100",
                "or not 1 <= quality <= 100",
                "or not 0 < quality <= 100",
                "or not (math.isfinite(timestamp_seconds) and timestamp_seconds > 0)",
                "or not (math.isfinite(timestamp_seconds) and timestamp_seconds >= 1)",
            )
        ),
        "equivalent: the fast check only sends a value at the edge to _check_soft, which"
        " accepts a valid one as the constructor does; only the speed changes",
    ),
    **dict.fromkeys(
        (
            f"pdq_hashes: if not {check}:"
            for check in ("1 <= quality <= 100", "0 < quality <= 100", "0 <= quality < 100")
        ),
        "equivalent: the range check only sends a quality at the edge (0 or 100) to"
        " _check_soft, which accepts it, so the same hashes are built; only the speed changes",
    ),
    **dict.fromkeys(
        (
            f"pdq_hashes: _check_soft(PDQ_ALGORITHM, bytes(PDQ_HASH_SIZE), quality, {t})"
            "  # raises, saying why"
            for t in ("None", "1.0")
        ),
        "equivalent: _check_soft is reached here only with a quality out of range, and checks"
        " the quality before the timestamp: the same BindingError whatever the timestamp",
    ),
    **dict.fromkeys(
        (
            f"for (level, left_index), left in zip(keys, _read(get_nodes, keys), {tail}):"
            for tail in ("strict=None", "strict=False", "")
        ),
        "equivalent: _read has already checked that the reader answered one hash per key",
    ),
    "want = (start << height).bit_count()": (
        "equivalent: a right-edge subtree's start has no bits below `height`, so shifting"
        " it either way keeps its number of one bits"
    ),
    **dict.fromkeys(
        (
            f"x = (u * pow(v, 3, {m}) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P"
            for m in ("None", "")
        ),
        "equivalent: v**3 without the modulus is reduced by the final `% _P` (only slower)",
    ),
    **dict.fromkeys(
        (
            f"x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, {m}), (_P - 5) // 8, _P)) % _P"
            for m in ("None", "")
        ),
        "equivalent: u * v**7 without the modulus is reduced by the outer pow's modulus",
    ),
    **dict.fromkeys(
        ("if x | 1 != sign:", "if x & 2 != sign:", "if x & 1 == sign:", "x = _P + x"),
        "equivalent: the sign bit only chooses between P and -P (or P + p, the same residue),"
        " and `[8]P` is the identity exactly when `[8](-P)` is; the decoded point serves the"
        " small-order check and nothing else",
    ),
    "for _ in range(4):": (
        "equivalent: the torsion subgroup has order 8 and no point of order 16 exists, so"
        " [16]P is the identity exactly when [8]P is"
    ),
    "found = None": "equivalent: None and False are both false where `found` is tested",
    "NoteVerifierǁ__init__: raise KeyMaterialError(None) from e": (
        "unreachable: check_public_key has already refused every key that"
        " Ed25519PublicKey.from_public_bytes would refuse"
    ),
    "pdq_distance=None if (m.median_distance is None) and False else"
    " int(round(m.median_distance)),": (
        "equivalent: a matched video always has matched frames, so a median distance"
    ),
    "return secrets.token_urlsafe(None)": (
        "equivalent: token_urlsafe(None) draws its default of 32 bytes, which is TOKEN_BYTES"
    ),
    # provenance/core/merkle.py
    **dict.fromkeys(
        (
            f"for key, value in zip(keys, hashes, {tail}):"
            for tail in ("strict=None", "strict=False", "")
        ),
        "equivalent: the line before has refused a reader that answers a different number"
        " of hashes than keys, so zip's strictness never comes into play",
    ),
    "return _node_path_plan(index, 0, size, with_seed=None)": (
        "equivalent: with_seed is only tested for truth, and None is false like False"
    ),
    **dict.fromkeys(
        (
            "shift = ((end - start) | -(end - start)).bit_length() - 1  # level of the seed node",
            "level = ((end - start) | -(end - start)).bit_length() - 1",
        ),
        "equivalent: for x > 0, x | -x == -(x & -x), and int.bit_length ignores the sign",
    ),
    **dict.fromkeys(
        (
            "shift = ((end - start) & -(end + start)).bit_length() - 1  # level of the seed node",
            "level = ((end - start) & -(end + start)).bit_length() - 1",
        ),
        "equivalent: the range has passed _check_subtree, so start is 0 or a multiple of a"
        " power of two >= end - start; end + start = (end - start) + 2 * start then has the"
        " same lowest set bit as end - start and no other bit in common with it, so the AND"
        " still isolates that bit (checked for every subtree of trees up to 200 leaves)",
    ),
    "own_border = max(0, border - ((end - 2) >> height).bit_count())": (
        "equivalent: this branch has end - 1 > start, and height is the bit length of"
        " (end - 1) ^ start, so end - 1 has bit height - 1 set; subtracting 1 more borrows"
        " nothing above it and (end - 2) >> height == (end - 1) >> height"
    ),
    "return _Plan(None, 0, 0)": (
        "equivalent: _read answers [] for no keys (None included) without calling the"
        " reader, so the proof is [] either way"
    ),
    "return _Plan([], 1, 0)": (
        "equivalent: with no keys every slice of the hashes is empty and no fold happens,"
        " so the proof is [] either way"
    ),
    "return _Plan(list(reversed(subtree_decomposition(0, start))), 0, 1)": (
        "equivalent: folding a run of one hash gives that hash, so the proof is the same"
        " list (start > 0 here, so there is at least one key)"
    ),
    **dict.fromkeys(
        (
            f"found = dict(zip(keys, _read(get_nodes, keys), {tail}))"
            for tail in ("strict=None", "strict=False", "")
        ),
        "equivalent: _read has already refused a reader that answers a different number of"
        " hashes than keys, so zip's strictness never comes into play",
    ),
    **dict.fromkeys(
        (
            f"r: _fold([found[k] for k in tiling]) for r, tiling in zip(ranges, tilings, {tail})"
            for tail in ("strict=None", "strict=False", "")
        ),
        "equivalent: `tilings` is made from `ranges`, one tiling per range, so the two"
        " always have the same length",
    ),
    **dict.fromkeys(
        (
            "width = start & -start if start else 2 << (remaining.bit_length() - 1)",
            "width = start & -start if start else 1 << (remaining.bit_length() + 1)",
        ),
        "equivalent, only slower: the loop below halves `width` until it fits the remaining"
        " leaves, which brings any larger power of two back to the same width",
    ),
    # provenance/core/registry.py
    r'return f"{log_key}\n{utc_iso(signed_at, micro=None)}\n".encode()': (
        "equivalent: utc_iso tests `micro` only for truth, and None is false like False"
    ),
    # provenance/log/checkpoint.py
    "fd = os.open(leftover, os.O_RDONLY & os.O_NOFOLLOW | os.O_NONBLOCK)": (
        "equivalent in what is removed: a link is then opened through, but the samestat"
        " check sees that the name is not the file opened and leaves it (only opening the"
        " link's target, say a device, differs)"
    ),
    # provenance/core/keys.py
    "assert spec is not None or spec.origin is not None  # PyNaCl is a dependency": (
        "equivalent: PyNaCl is a dependency, so `spec` is never None and the `or` passes"
        " where the `and` does (an extension module's spec.origin is its file)"
    ),
    "fn.argtypes = None": (
        "equivalent for every message this program verifies (claims, key events, enrollment"
        " proofs and sidecar claims, all capped far under 2 GiB): without argtypes ctypes"
        " passes the bytes as char * all the same, and the length as a C int, which"
        " libsodium's unsigned long long reads as the same value under 2 GiB"
    ),
}


def _stage(keep: bool) -> None:
    """Copy the project into the staging folder (fresh unless ``keep``).

    copy2 keeps modification times: mutmut regenerates the mutants of a file only when
    the file is newer than its mutants in ``mutants/``."""
    if WORK.exists() and not keep:
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in _COPY:
        src, dst = ROOT / name, WORK / name
        if dst.is_dir():  # a mirror: drop files deleted or moved since the last run
            shutil.rmtree(dst)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    link = WORK / "shared"  # the tests run in WORK/mutants and look for ../shared
    if not link.exists():
        link.symlink_to((ROOT.parent / "shared").resolve())


def _mutmut(*args: str, check: bool = True, stream: bool = False) -> str:
    """Run mutmut in the staging copy (its output shown as it goes when ``stream``)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    exe = Path(sys.executable).with_name("mutmut")
    proc = subprocess.run(
        [str(exe), *args], cwd=WORK, env=env, capture_output=not stream, text=True, errors="replace"
    )
    if check and proc.returncode != 0:
        sys.stderr.write((proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:])
        raise SystemExit(f"mutmut {' '.join(args)} failed ({proc.returncode})")
    return proc.stdout or ""


# Run inside the staging copy, with mutmut's own helpers (what `mutmut results` and `mutmut
# show` use), in one process. _MUTANTS walks every mutant: (key, status, hash of its function).
_MUTANTS = """
import json
from pathlib import Path
from mutmut.__main__ import walk_mutatable_files
from mutmut.mutation.data import SourceFileMutationData
from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code
from mutmut.utils.format_utils import mangled_name_from_mutant_name

def mutants():
    for path in walk_mutatable_files():
        if not Path("mutants", str(path) + ".meta").exists():
            continue
        m = SourceFileMutationData(path=path)
        m.load()
        for name, code in m.exit_code_by_key.items():
            func = mangled_name_from_mutant_name(name).rpartition(".")[2]
            yield path, m, name, code, m.hash_by_function_name.get(func)
"""
# Every mutant's status, function hash, and the diff of each one not killed.
_COLLECT = (
    _MUTANTS
    + """
out = {}
for path, m, name, code, func_hash in mutants():
    status = status_by_exit_code[code]
    skip = status in ("killed", "timeout", "not checked")
    diff = "" if skip else get_diff_for_mutant(name, path=path)
    out[name] = [str(path), status, diff, func_hash]
print(json.dumps(out))
"""
)
# Before a --keep run: forget every verdict but "killed" / "timed out" / "segfault", so
# that survivors, mutants without tests and unrun ones are tested again (against the tests
# as they are now), and print the function hash of each verdict kept. mutmut itself
# re-tests the mutants of every function whose source changed. mutmut's own invalidation on a change
# of its settings reads the fingerprint in mutmut-stats.json, which a --keep run rebuilds,
# so it is done here: new timeouts forget the timed-out verdicts (reached under another
# limit), new test arguments every verdict.
_RESET = (
    _MUTANTS
    + """
from mutmut.configuration import config
old = {}
for saved in ("mutants/mutmut-stats.json", "../fingerprint.json"):
    try:
        old = json.load(open(saved))["config_fingerprint"]
        break
    except (OSError, ValueError, KeyError):
        pass
new = config().config_fingerprint()
json.dump({"config_fingerprint": new}, open("../fingerprint.json", "w"))
changed = {group for group in new if old.get(group) != new[group]}
kept = {}
for path, m, name, code, func_hash in mutants():
    status = None if code is None else status_by_exit_code[code]
    if changed & {"test_execution", "test_selection"} or status not in (
        None, "killed", "timeout", "segfault"
    ):
        m.exit_code_by_key[name] = None
    elif status == "timeout" and "timeout" in changed:
        m.exit_code_by_key[name] = None
    elif status is not None:
        kept[name] = func_hash
    m.save()
print(json.dumps(kept))
"""
)


def _in_stage(code: str) -> Any:
    """Run one of the snippets above in the staging copy; its JSON output."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=WORK, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"cannot read mutmut's results: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def _collect() -> dict[str, list[str]]:
    return dict(_in_stage(_COLLECT))


def _prepare_keep(reset: bool) -> dict[str, str]:
    """Set up a --keep run; returns the function hash of each verdict kept.

    ``reset``: forget the verdicts other than killed (not needed when NAME globs are given:
    mutmut tests the named mutants whatever their verdict, and keeps the others').

    mutmut 3.8 keeps a verdict while the source of the mutant's function is unchanged, but
    updates its map of which tests reach which function only for new tests: an old test
    that now calls a new or changed function is missed, and the mutants there would run
    against too few tests (or none). So the map is rebuilt (one traced run of the tests),
    and only killed verdicts are kept.
    """
    stats = WORK / "mutants" / "mutmut-stats.json"
    if not stats.exists() and not (STAGE / "fingerprint.json").exists():
        print(
            f"--keep: no earlier run in {WORK.relative_to(ROOT)} to reuse, so every mutant"
            " is tested (about 11 minutes on 2 cores); later --keep runs take minutes",
            flush=True,
        )
        return {}  # no run to keep: mutmut tests every mutant
    kept = dict(_in_stage(_RESET)) if reset else {}
    stats.unlink(missing_ok=True)
    return kept


def _changed(diff: str) -> tuple[str, str]:
    """The original and the mutated line(s) of a mutant's diff."""
    lines = diff.splitlines()
    old = [x[1:].strip() for x in lines if x.startswith("-") and not x.startswith("---")]
    new = [x[1:].strip() for x in lines if x.startswith("+") and not x.startswith("+++")]
    return " / ".join(old), " / ".join(new)


def _strings(line: str) -> list[tuple[int, str]] | None:
    """The line's tokens with string literals marked (None if it does not tokenize alone)."""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(line).readline))
    except (tokenize.TokenError, SyntaxError):
        return None
    return [(t.type, t.string) for t in toks if t.type not in (tokenize.NL, tokenize.NEWLINE)]


def is_message_text(old: str, new: str) -> bool:
    """True when a mutant changes only the wording of prose inside string literals (an
    error message or a verdict reason), not code: mutmut's "XX..XX" and case mutations of
    a literal holding words separated by spaces."""
    a, b = _strings(old), _strings(new)
    if a is None or b is None or len(a) != len(b):
        return False
    diffs = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    return bool(diffs) and all(
        x[0] == tokenize.STRING and y[0] == tokenize.STRING and " " in x[1] for x, y in diffs
    )


def _rule_reason(old: str, new: str) -> str:
    """A reason that follows from the shape of the change alone, or ""."""
    big = ', "big")'
    at = old.find(big)
    while at >= 0:  # each occurrence in turn: mutmut drops one argument per mutant
        if new == old[:at] + ", )" + old[at + len(big) :]:
            return 'equivalent: int.from_bytes defaults to "big" byte order (Python >= 3.11)'
        at = old.find(big, at + 1)
    for codec in ('"utf-8"', '"ascii"'):
        if codec in old and new == old.replace(codec, codec.upper()):
            return _CODEC
    return ""


def report(run: dict[str, Any] | None) -> int:
    """Collect mutmut's results into docs/mutants.md; return the exit status.

    ``run`` describes the run just made (``seconds``, ``started``, ``kept``: the function
    hash of each verdict kept from the previous run); None keeps the last run's figures.
    """
    results = _collect()
    if not results:
        raise SystemExit("mutmut reported no mutants: run without --report-only first")
    last = STAGE / "report.json"
    if run is not None:
        kept = run.pop("kept")
        run["reused"] = sum(1 for k, h in kept.items() if k in results and results[k][3] == h)
    elif last.exists():
        run = json.loads(last.read_text()).get("run")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    survivors = []
    for name, (path, status, diff, _) in sorted(results.items()):
        if status == "not checked":  # not run yet (an interrupted or partial run)
            per_module[path]["not_run"] += 1
            continue
        killed = status in _KILLED
        old, new = _changed(diff) if not killed else ("", "")
        message = not killed and is_message_text(old, new)
        per_module[path]["mutants"] += 1
        per_module[path]["killed"] += killed
        per_module[path]["message"] += message
        if not killed:
            func = re.split(r"\.x[_ǁ]", name, maxsplit=1)[-1].rsplit("__mutmut_", 1)[0]
            reason = REASONS.get(f"{func}: {new}") or REASONS.get(new) or _rule_reason(old, new)
            reason = reason or (MESSAGE_REASON if message else "")
            survivors.append(
                {
                    "mutant": name,
                    "status": status,
                    "line": old,
                    "mutated": new,
                    "message_text": message,
                    "reason": reason,
                }
            )
    rows: list[dict[str, Any]] = []
    for module in config["only_mutate"]:
        c = per_module.get(module, Counter())
        n, k, msg = c["mutants"], c["killed"], c["message"]
        rows.append(
            {
                "module": module,
                "not_run": c["not_run"],
                "mutants": n,
                "killed": k,
                "survived": n - k,
                "message_text_survived": msg,
                "score": k / n if n else 1.0,
                "behaviour_score": k / (n - msg) if n - msg else 1.0,
            }
        )
    total = sum(r["mutants"] for r in rows)
    all_killed = sum(r["killed"] for r in rows)
    all_message = sum(r["message_text_survived"] for r in rows)
    not_run = sum(r["not_run"] for r in rows)
    score = all_killed / total if total else 1.0
    behaviour = all_killed / (total - all_message) if total - all_message else 1.0
    unexplained = [s for s in survivors if not s["reason"]]
    doc = {
        "score": score,
        "behaviour_score": behaviour,
        "target": TARGET,
        "mutants": total,
        "killed": all_killed,
        "message_text_survived": all_message,
        "not_run": not_run,
        "explained": len(survivors) - len(unexplained),
        "run": run,
        "tests": config["pytest_add_cli_args_test_selection"],
        "modules": rows,
        "survivors": survivors,
    }
    (STAGE / "report.json").write_text(json.dumps(doc, indent=2) + "\n")
    REPORT.write_text(_markdown(doc))
    print(
        f"score {score:.1%} ({all_killed}/{total}); behaviour score {behaviour:.1%} (without"
        f" {all_message} message-text survivors); {len(unexplained)} survivors without a reason"
    )
    if not_run:
        print(f"{not_run} mutants were not run (an interrupted run): run again with --keep")
    if run:
        print(f"{_run_line(run, total)}")
    print(f"report: {REPORT.relative_to(ROOT)}")
    return 0 if behaviour >= TARGET and not unexplained and not not_run else 1


def _run_line(run: dict[str, Any], total: int) -> str:
    """How long the run took and how much of it was tested rather than reused."""
    line = (
        f"Last run: {run['started']}, {run['seconds'] / 60:.1f} min with"
        f" {run['children']} workers on this machine"
    )
    if run.get("names"):
        names = run["names"]
        line += "; it tested only the mutants matching " + " ".join(f"`{n}`" for n in names[:5])
        line += f" and {len(names) - 5} more globs" if len(names) > 5 else ""
    elif run["reused"]:
        line += (
            f"; {total - run['reused']} mutants tested, {run['reused']} killed verdicts"
            " reused from the run before (`--keep`: their functions are unchanged)"
        )
    return line + "."


def _markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Mutation testing of the trusted core",
        "",
        "Written by `make mutants` (scripts/mutants.py, mutmut"
        f" {_mutmut('--version').split()[-1]}); do not edit by hand: the reasons for"
        " survivors live in `REASONS` in the script.",
        "",
        f"**Behaviour score: {doc['behaviour_score']:.1%}** (target {doc['target']:.0%});"
        f" score over the mutants run: {doc['score']:.1%} ({doc['killed']} of {doc['mutants']}"
        " killed). A mutant counts as killed when a test fails or times out or the test"
        " process crashes; one that no"
        " test runs counts as surviving. The behaviour score leaves out the"
        f" {doc['message_text_survived']} surviving mutants that only change the wording of"
        " prose in a string literal (an error message or a verdict reason), listed last."
        f" {doc['mutants'] - doc['killed']} survived, {doc['explained']} of them with a"
        f" reason written down; {doc['not_run']} not run."
        + (" " + _run_line(doc["run"], doc["mutants"]) if doc["run"] else ""),
        "",
        "Tests run against the mutants: " + ", ".join(f"`{t}`" for t in doc["tests"]) + ".",
        "",
    ]
    if doc["not_run"]:
        lines += [
            f"**Partial run:** {doc['not_run']} mutants were generated but not run (column"
            " *not run*); the scores are over the mutants that were run.",
            "",
        ]
    lines += [
        "| module | mutants run | killed | survived | of which message text | score"
        " | behaviour score | not run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for m in doc["modules"]:
        lines.append(
            f"| `{m['module']}` | {m['mutants']} | {m['killed']} | {m['survived']}"
            f" | {m['message_text_survived']} | {m['score']:.1%} | {m['behaviour_score']:.1%}"
            f" | {m['not_run']} |"
        )
    behaviour = [s for s in doc["survivors"] if not s["message_text"]]
    message = [s for s in doc["survivors"] if s["message_text"]]
    lines += ["", f"## Surviving mutants that change code ({len(behaviour)})", ""]
    for s in behaviour:
        lines += [
            f"- `{s['mutant']}` ({s['status']}): `{s['line']}` → `{s['mutated']}`  ",
            f"  {s['reason'] or '**no reason written down yet**'}",
        ]
    lines += [
        "",
        f"## Surviving mutants that change message text only ({len(message)})",
        "",
        MESSAGE_REASON[0].upper() + MESSAGE_REASON[1:] + ".",
        "",
    ]
    lines += [f"- `{s['mutant']}`: `{s['line']}` → `{s['mutated']}`" for s in message]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0]
        + " A fresh run tests every mutant (about 11 minutes on 2 cores). Exit status 0"
        " when every mutant ran, the behaviour score is at least 90% and every survivor"
        " has a reason; 1 otherwise."
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="reuse the last run: keep the killed verdicts of functions whose source is"
        " unchanged, test every other mutant again (minutes)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="only rewrite the report from the last run"
    )
    parser.add_argument(
        "--max-children",
        type=int,
        default=os.cpu_count() or 1,
        help="mutants tested at once (default: the number of CPUs)",
    )
    parser.add_argument(
        "names",
        nargs="*",
        help="with --keep: test only the mutants matching these globs, e.g."
        " 'provenance.core.verify.*' (the others keep their verdicts)",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        return report(None)
    if args.names and not args.keep:
        parser.error("NAME globs need --keep (a fresh run tests every mutant)")
    _stage(args.keep)
    kept = _prepare_keep(reset=not args.names) if args.keep else {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    start = time.monotonic()
    print(
        f"mutmut run in {WORK.relative_to(ROOT)} (this takes a while; see docs/mutants.md)",
        flush=True,
    )
    try:
        _mutmut("run", "--max-children", str(args.max_children), *args.names, stream=True)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: docs/mutants.md is unchanged; the verdicts so far are kept in"
            f" {WORK.relative_to(ROOT)}: `make mutants MUTANTS_ARGS=--keep` goes on from them",
            file=sys.stderr,
        )
        return 130
    seconds = time.monotonic() - start
    return report(
        {
            "started": started,
            "seconds": seconds,
            "children": args.max_children,
            "names": args.names,
            "kept": kept,
        }
    )


if __name__ == "__main__":
    sys.exit(main())
