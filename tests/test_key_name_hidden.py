"""Note key names with control, format and other invisible characters (c2sp.org/signed-note
allows any non-empty name without Unicode spaces or '+': "log\\u202egro.elpmaxe" is one,
and reads "logexample.org"). A name this program makes or is configured with (`prov serve
--origin`, `prov witness serve --name`, a `--witness` key, a key it generates or signs
with) is refused, the character named by its code point; a name read from another's note
or key is taken as the spec takes it and shown escaped in messages. Before (keyname56),
each of these names was taken, and a message repeated a read name's characters as they
were."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import main as prov_main
from clients.cosigned import policy_key
from clients.logcmd import _checked_receipt
from provenance.core.claims import Receipt, SignedClaim
from provenance.core.errors import LogError, SignatureError
from provenance.log.checkpoint import (
    Checkpoint,
    LogSigner,
    NoteVerifier,
    check_own_key_name,
    generate_log_key,
    key_id,
    split_note,
)
from provenance.witness import cosigner_vkey
from provenance.witness.client import parse_witness_option

#: (character, how the refusal names it): each class the spec lets through.
HIDDEN = [
    ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),  # a bidirectional override
    ("\u202a", "U+202A LEFT-TO-RIGHT EMBEDDING"),  # an embedding
    ("\u2067", "U+2067 RIGHT-TO-LEFT ISOLATE"),  # an isolate
    ("\u2069", "U+2069 POP DIRECTIONAL ISOLATE"),
    ("\u200e", "U+200E LEFT-TO-RIGHT MARK"),  # the direction marks
    ("\u200f", "U+200F RIGHT-TO-LEFT MARK"),
    ("\x7f", "U+007F (a control character)"),  # DEL
    ("\x80", "U+0080 (a control character)"),  # C1 controls
    ("\x9b", "U+009B (a control character)"),
    ("\u200b", "U+200B ZERO WIDTH SPACE"),  # other format characters (Cf)
    ("\ufeff", "U+FEFF ZERO WIDTH NO-BREAK SPACE"),
    ("\u2060", "U+2060 WORD JOINER"),
    ("\u3164", "U+3164 HANGUL FILLER"),  # draws nothing (escaped by the terminal too)
]
HOSTILE = "log\u202egro.elpmaxe"
"""A name that reads "logexample.org"."""


def _named(char: str) -> str:
    return f"example.org/lo{char}g"


def _flat(text: str) -> str:
    return " ".join(re.sub("[\u2500-\u257f]", " ", text).split())


def _prov(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = prov_main(list(args))
    got = capsys.readouterr()
    return rc, _flat(got.out + got.err)


@pytest.mark.parametrize(("char", "said"), HIDDEN)
def test_a_key_name_of_ours_with_a_hidden_character_is_refused(
    tmp_path: Path, char: str, said: str
) -> None:
    name = _named(char)
    for make in (
        lambda: check_own_key_name(name),
        lambda: generate_log_key(tmp_path / "log.pem", name),
    ):
        with pytest.raises(LogError) as caught:
            make()
        assert said in str(caught.value) and "visible characters" in str(caught.value)
        assert char not in str(caught.value)  # the name is quoted escaped
    assert not (tmp_path / "log.pem").exists()


@pytest.mark.parametrize(("char", "said"), [HIDDEN[0], HIDDEN[7]])
def test_a_log_made_under_such_a_name_before_keeps_signing(char: str, said: str) -> None:
    """Refused where a log is made, not where one is loaded: a database named so before
    the check still starts, since every reader takes its checkpoints (the spec allows
    the name), unlike a name over `MAX_KEY_NAME_BYTES`."""
    name = _named(char)
    signer = LogSigner(Ed25519PrivateKey.generate(), name)
    note = signer.sign(Checkpoint(name, 1, bytes(32)))
    assert NoteVerifier.from_vkey(signer.verifier_key()).open(note).startswith(name + "\n")


def test_the_spec_allows_what_we_refuse_and_a_visible_name_of_any_script_is_ours() -> None:
    """Other scripts, accents and emoji stay ours; a space or '+' stays refused as before."""
    for name in ("caf\u00e9.example/log", "\u0645\u062b\u0627\u0644/log", "\U0001f600.example"):
        check_own_key_name(name)
    for name in ("a b", "a+b", "", "a\u0085b"):
        with pytest.raises(LogError, match="is not a note key name"):
            check_own_key_name(name)


@pytest.mark.parametrize(("char", "said"), [HIDDEN[0], HIDDEN[6], HIDDEN[7], HIDDEN[9]])
def test_names_we_give_with_a_hidden_character_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], char: str, said: str
) -> None:
    """`prov serve --origin` and a new witness's `prov witness serve --name`: exit 2
    naming the character, nothing written."""
    name = _named(char)
    # each command also has a later check that fails: were the name taken, the command
    # would stop there (another message) instead of starting to serve
    db = str(tmp_path / "p.db")
    rc, text = _prov(capsys, "serve", "--origin", name, "--db", db, "--db-connect-wait", "0")
    assert rc == 2 and "--origin" in text and said in text, text
    log = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    witness = ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--state", str(tmp_path / "s")]
    rc, text = _prov(capsys, *witness, "--log-key", log, "--name", name, "--listen", "192.0.2.1:0")
    assert rc == 2 and "--name" in text and said in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.pem"]


@pytest.mark.parametrize(("char", "said"), [HIDDEN[0], HIDDEN[9]])
def test_names_others_gave_are_taken_as_the_spec_allows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], char: str, said: str
) -> None:
    """A witness's key configured here (`prov serve --witness URL=KEY`, `prov verify` /
    `receipt verify --witness`) names the witness's operator's choice, and a witness whose
    key was made under such a name before keeps its name (it is part of the verifier key
    its logs were given): taken as c2sp.org/signed-note allows, shown escaped."""
    name = _named(char)
    vkey = cosigner_vkey(name, Ed25519PrivateKey.generate().public_key().public_bytes_raw())
    assert policy_key(vkey) == vkey
    assert parse_witness_option(f"http://127.0.0.1:8090={vkey}").vkey == vkey
    # an existing witness key: the name passes, the start stops at the address (exit 1)
    log = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    generate_log_key(tmp_path / "w.pem", "witness.example/w1")
    witness = ["witness", "serve", "--key", str(tmp_path / "w.pem"), "--state", str(tmp_path / "s")]
    rc, text = _prov(capsys, *witness, "--log-key", log, "--name", name, "--listen", "192.0.2.1:0")
    assert rc == 1 and "192.0.2.1" in text and said not in text, text


def _vkey(name: str, public: bytes) -> str:
    """A log verifier key of ``name`` (which `LogSigner` no longer makes)."""
    material = base64.b64encode(b"\x01" + public).decode()
    return f"{name}+{key_id(name, public).hex()}+{material}"


def test_a_hidden_name_read_from_a_note_is_taken_and_shown_escaped() -> None:
    """A signature line of another's note named ``HOSTILE`` is a line the spec allows:
    passed over as a line by an unknown key. A message naming it writes the override
    as ``\\u202e`` (before: the character itself, which turned the rest of the line)."""
    signer = LogSigner(Ed25519PrivateKey.generate(), "example.org/log")
    note = signer.sign(Checkpoint("example.org/log", 5, bytes(32)))
    line = f"\u2014 {HOSTILE} {base64.b64encode(bytes(68)).decode()}\n"
    assert [s.name for s in split_note(note + line)[1]][1] == HOSTILE
    assert NoteVerifier.from_vkey(signer.verifier_key()).open(note + line)
    short = f"\u2014 {HOSTILE} {base64.b64encode(bytes(3)).decode()}\n"
    with pytest.raises(LogError) as caught:
        split_note(note + short)
    assert "log\\u202egro.elpmaxe" in str(caught.value) and "\u202e" not in str(caught.value)
    # a verifier key of that name (a server's, a sidecar's) is taken, and named escaped
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    hostile = NoteVerifier.from_vkey(_vkey(HOSTILE, raw))
    with pytest.raises(SignatureError) as refused:
        hostile.open(note)
    assert "log\\u202egro.elpmaxe" in str(refused.value) and "\u202e" not in str(refused.value)


def test_receipt_verify_names_a_hidden_signer_escaped() -> None:
    """`prov receipt verify` with another log's key names the keys that signed the
    receipt's checkpoint: one named ``HOSTILE`` is written escaped (before: as it was)."""
    log = "example.org/log"
    note = LogSigner(Ed25519PrivateKey.generate(), log).sign(Checkpoint(log, 1, bytes(32)))
    note += f"\u2014 {HOSTILE} {base64.b64encode(bytes(68)).decode()}\n"
    receipt = Receipt(0, datetime.now(UTC), note, (), b"")
    other = LogSigner(Ed25519PrivateKey.generate(), "other.example/log").verifier_key()
    with pytest.raises(SignatureError) as caught:
        _checked_receipt(receipt, SignedClaim("", b"", b"", b""), other)
    said = str(caught.value)
    assert "it is signed by" in said and "log\\u202egro.elpmaxe+" in said, said
    assert "\u202e" not in said, said
