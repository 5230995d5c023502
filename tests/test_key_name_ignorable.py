"""Default-ignorable code points that draw nothing and are neither a control nor a format
character (Unicode's DerivedCoreProperties.txt, Default_Ignorable_Code_Point: the Khmer
inherent vowels U+17B4 and U+17B5, which Unicode says not to use, the code points
kept for future invisible characters, U+FFF0-U+FFF8 and U+E0080-U+E0FFF but the variation
selectors, and a Mongolian free variation selector after nothing it selects), and the BRAILLE PATTERN BLANK U+2800, which draws as a space: before revkey56
`check_own_key_name` took each in a key name of ours (`prov serve --origin
"example.org/lo\\U000e0080g"` started a log whose name reads "example.org/log"), and
`shown_line` wrote the ignorable ones as they were. A name read from another's note with
one is still taken (the spec allows it) and shown escaped."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provenance.core.errors import LogError
from provenance.log.checkpoint import (
    Checkpoint,
    LogSigner,
    NoteVerifier,
    check_own_key_name,
    generate_log_key,
    open_checkpoint,
    split_note,
)
from provenance.terminal import shown, shown_line
from provenance.witness import Witness

#: (character, how a refusal names it, its escape), each default ignorable, drawing nothing
IGNORABLE = [
    ("\u17b4", "U+17B4 KHMER VOWEL INHERENT AQ", "\\u17b4"),
    ("\u17b5", "U+17B5 KHMER VOWEL INHERENT AA", "\\u17b5"),
    ("\ufff0", "U+FFF0 (a character Unicode has not assigned)", "\\ufff0"),
    ("\ufff8", "U+FFF8 (a character Unicode has not assigned)", "\\ufff8"),
    ("\U000e0080", "U+E0080 (a character Unicode has not assigned)", "\\U000e0080"),
    ("\U000e01f0", "U+E01F0 (a character Unicode has not assigned)", "\\U000e01f0"),
    ("\U000e0fff", "U+E0FFF (a character Unicode has not assigned)", "\\U000e0fff"),
    # a Mongolian free variation selector after nothing it selects (ASCII)
    ("\u180b", "U+180B MONGOLIAN FREE VARIATION SELECTOR ONE", "\\u180b"),
    ("\u180f", "U+180F MONGOLIAN FREE VARIATION SELECTOR FOUR", "\\u180f"),
]


@pytest.mark.parametrize(("char", "said", "escape"), IGNORABLE)
def test_an_ignorable_character_is_refused_in_a_name_of_ours_and_escaped(
    char: str, said: str, escape: str
) -> None:
    name = f"example.org/lo{char}g"
    with pytest.raises(LogError) as caught:
        check_own_key_name(name)
    assert said in str(caught.value) and char not in str(caught.value), ascii(str(caught.value))
    assert shown_line(name) == shown(name) == f"example.org/lo{escape}g"


def test_a_braille_blank_is_refused_in_a_name_of_ours() -> None:
    """It draws a blank, as the spaces the spec refuses: "example.org\\u2800log" reads
    "example.org log". Shown as it is elsewhere (a file name may have it, visibly)."""
    with pytest.raises(LogError, match="U\\+2800 BRAILLE PATTERN BLANK"):
        check_own_key_name("example.org\u2800log")


@pytest.mark.parametrize(("char", "said", "escape"), IGNORABLE[:1] + IGNORABLE[4:5])
def test_a_name_of_another_s_note_with_one_is_taken(char: str, said: str, escape: str) -> None:
    signer = LogSigner(Ed25519PrivateKey.generate(), "example.org/log")
    note = signer.sign(Checkpoint("example.org/log", 5, bytes(32)))
    other = f"w{char}.example"
    line = f"\u2014 {other} {base64.b64encode(bytes(68)).decode()}\n"
    assert [s.name for s in split_note(note + line)[1]] == ["example.org/log", other]


def test_visible_names_stay_ours() -> None:
    """A Khmer word without the inherent vowels, a variation selector after an emoji, a
    Mongolian letter's free variation selector."""
    for name in (
        "\u1781\u17d2\u1798\u17c2\u179a.example",
        "\u2764\ufe0f.example/log",
        "\u1820\u180b\u1821.example",
    ):
        check_own_key_name(name)
        assert shown_line(name) == name


def test_a_witness_state_file_of_another_log_names_it_escaped(tmp_path: Path) -> None:
    """A state file restored under another log's name holds that log's origin: the error
    the witness logs (and answers 500 for) quotes it with HANGUL FILLER escaped (before
    revkey56: a repr, which kept the filler)."""
    log = generate_log_key(tmp_path / "log.pem", "example.org/log")
    witness = Witness(
        generate_log_key(tmp_path / "w.pem", "witness.example/w1"),
        [log.verifier_key()],
        tmp_path / "state",
    )
    try:
        path = witness._state_path("example.org/log")
        doc = {"origin": "example.org/lo\u3164g", "note": "", "size": 1, "root": ""}
        path.write_text(json.dumps(doc, ensure_ascii=False))
        with pytest.raises(LogError) as caught:
            witness.latest("example.org/log")
    finally:
        witness.close()
    said = str(caught.value)
    assert "another log's state, 'example.org/lo\\u3164g'" in said, ascii(said)


def test_a_log_named_with_an_emoji_sequence_of_another_is_read() -> None:
    """A log named with ZERO WIDTH JOINER inside an emoji sequence (the spec allows it; a
    name of ours may not hold it, a format character): its checkpoints open under that
    name and the name is shown as it is drawn (a guard of revkey56's review, which found
    `prov receipt verify` and `prov verify --log-key` of such a log's receipts working)."""
    name = "\U0001f468\u200d\U0001f469\u200d\U0001f467.example/log"
    signer = LogSigner(Ed25519PrivateKey.generate(), name)
    note = signer.sign(Checkpoint(name, 3, bytes(32)))
    checkpoint = open_checkpoint(note, NoteVerifier.from_vkey(signer.verifier_key()), origin=name)
    assert checkpoint.origin == name and shown_line(name) == name
    with pytest.raises(LogError, match="U\\+200D ZERO WIDTH JOINER"):
        check_own_key_name(name)
