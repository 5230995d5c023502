"""Signed checkpoints of the log in the C2SP formats (c2sp.org/signed-note, /tlog-checkpoint).

A checkpoint body is ``origin\\nsize\\nbase64(root)\\n`` followed by optional extension
lines. C2SP defines no extension for time, so this log uses exactly one of its own:

    time 2026-11-29T12:00:00Z

the signing time in RFC 3339 UTC, with ``.ffffff`` microseconds only when they are not
zero (one spelling per instant). Bodies with any other extension line are refused.

A signed note is the body, a blank line, and signature lines
``— <key name> base64(key id || Ed25519 signature)``; the key id is the first four bytes of
SHA-256(key name || 0x0A || 0x01 || public key), and a verifier key is written
``<name>+<hex key id>+base64(0x01 || public key)`` (golang.org/x/mod/sumdb/note). Opening a
note ignores signatures by other keys, as the spec requires. A note is bounded before it
is read: at most `MAX_NOTE_BYTES`, `MAX_SIGNATURES` lines, a key name of at most
`MAX_KEY_NAME_BYTES` and a signature of at most `MAX_SIGNATURE_BASE64` characters of
base64, a line by an unknown key too (a hostile log or witness cannot make a reader
decode or hold megabytes; messages quote at most 60 characters of a field).

Errors: a malformed note, body or key string raises LogError; a missing or failing
signature raises SignatureError; unusable key files raise ConfigError, KeyMaterialError
or (for loose file permissions) LogError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import secrets
import stat
import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from provenance.cli.atomicfile import create_atomically, remove_leftovers
from provenance.cli.files import open_regular_fd
from provenance.core.errors import ConfigError, KeyMaterialError, LogError, SignatureError
from provenance.core.keys import check_public_key
from provenance.terminal import UNSAFE_IN_LINE, clipped_line, quoted, shown_line

ROOT_HASH_SIZE = 32
"""Bytes in a root hash (SHA-256)."""

SIGNATURE_TYPE_ED25519 = 0x01
"""Signature type byte of Ed25519 in c2sp.org/signed-note."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size: a uint64 (tlog-checkpoint; Go's readers parse it as one)."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (the spec asks verifiers for a limit of >= 16)."""

MAX_KEY_NAME_BYTES = 256
"""Longest note key name, in UTF-8 bytes (c2sp.org/signed-note sets none; names are
schema-less URLs such as ``media-provenance.local/log``, a few dozen bytes)."""

MAX_SIGNATURE_BASE64 = 8192
"""Most characters of a signature line's base64 (key id and signature: 6,144 bytes). An
Ed25519 signature is 68 bytes with its key id (92 characters), a timestamped cosignature
76 (104), an ML-DSA-87 one, the largest post-quantum kind the spec foresees ("nearly
5kB"), 4,631 (6,176)."""

MAX_NOTE_BYTES = 1 << 20
"""Most bytes (UTF-8) of a whole signed note: `MAX_SIGNATURES` lines of the longest name
and signature (8,454 bytes each) and a text of 150 KiB fit; a checkpoint of this log with
its 15 cosignatures is under 2 KiB."""

MAX_KEY_FILE_BYTES = 64 << 10
"""Largest log or witness key file read (`load_log_signer`; `generate_log_key` writes an
Ed25519 PKCS#8 PEM of 119 bytes)."""

_EM_DASH = "\u2014"
_TIME_PREFIX = "time "
#: A tree size: a uint64 in decimal (at most 20 digits), no leading zeros.
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?Z")
_KEY_ID_RE = re.compile(r"[0-9a-f]{8}")
# a control character other than newline (U+0000..U+001F but U+000A)
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f]")


def _has_control(text: str) -> bool:
    return _CONTROL_RE.search(text) is not None


def _utf8_size(text: str, most: int) -> tuple[int, bool]:
    """(UTF-8 bytes of ``text``, True) when ASCII or at most ``most`` characters (counted
    64 Ki characters at a time: an encoded copy of the whole could take 3 bytes a
    character); else (its characters, False): a lower bound, already over ``most``."""
    if text.isascii():
        return len(text), True
    if len(text) > most:
        return len(text), False
    step = 1 << 16
    size = sum(
        len(text[i : i + step].encode("utf-8", "surrogatepass")) for i in range(0, len(text), step)
    )
    return size, True


def check_key_name(name: str) -> None:
    """Raise LogError unless ``name`` is a note key name (c2sp.org/signed-note "Format":
    non-empty, no Unicode spaces, no '+'; and no C0 control character, which no signed
    note may hold), of at most `MAX_KEY_NAME_BYTES` UTF-8 bytes (checked first: a longer
    one is not scanned, and the message quotes only its start). No more than that: this
    is the check of a name read from another's note or key; a name of ours is held to
    `check_own_key_name`."""
    size, exact = _utf8_size(name, MAX_KEY_NAME_BYTES)
    if size > MAX_KEY_NAME_BYTES:
        unit = "bytes" if exact else "characters"
        raise LogError(
            f"a key name of {size:,} {unit}, more than the {MAX_KEY_NAME_BYTES} bytes a note"
            f" key name may have: {quoted(name)}"
        )
    if not name or "+" in name or any(ch.isspace() for ch in name) or _has_control(name):
        raise LogError(f"{name!r} is not a note key name (non-empty, no spaces, no '+')")


#: Unicode categories of the characters a key name of ours may not hold (`check_own_key_name`):
#: controls (DEL, C1), format characters (bidirectional controls, ZERO WIDTH SPACE, the
#: BYTE ORDER MARK, ...) and lone surrogates (not UTF-8).
_HIDDEN_CATEGORIES = ("Cc", "Cf", "Cs")

#: Characters a key name of ours may not hold that `provenance.terminal.shown_line` shows
#: as they are (`check_own_key_name`): the BRAILLE PATTERN BLANK draws a blank, as the
#: spaces the spec refuses ("example.org\u2800log" reads "example.org log").
_BLANK = "\u2800"


def _hidden_character(name: str) -> str | None:
    """The first character of ``name`` of a `_HIDDEN_CATEGORIES` category or that
    `provenance.terminal.shown_line` writes as an escape (`UNSAFE_IN_LINE`: also HANGUL
    FILLER, COMBINING GRAPHEME JOINER, a variation selector after nothing it selects, the
    other default-ignorable code points, ...) or of `_BLANK`; None when there is none."""
    at = [m.start() for m in UNSAFE_IN_LINE.finditer(name) if len(m.group()) == 1][:1]
    at += [i for i, ch in enumerate(name) if unicodedata.category(ch) in _HIDDEN_CATEGORIES][:1]
    at += [i for i, ch in enumerate(name) if ch in _BLANK][:1]
    return name[min(at)] if at else None


def code_point(ch: str) -> str:
    """``ch`` named as Unicode does: ``U+202E RIGHT-TO-LEFT OVERRIDE``, or for a character
    of no name ``U+0085 (a control character)``, ``U+D800 (a surrogate: not UTF-8)``,
    ``U+E0080 (a character Unicode has not assigned)``."""
    name = unicodedata.name(ch, "")
    if not name:
        kind = {
            "Cc": "a control character",
            "Cs": "a surrogate: not UTF-8",
            "Cn": "a character Unicode has not assigned",
        }
        name = f"({kind.get(unicodedata.category(ch), 'a character of no name')})"
    return f"U+{ord(ch):04X} {name}"


def check_own_key_name(name: str) -> None:
    """Raise LogError unless ``name`` is a note key name (`check_key_name`) fit for a key
    this program makes or is configured with (a log's ``--origin``, a witness's ``--name``,
    a ``--witness`` key): also no control, format or other invisible character
    (`_hidden_character`: DEL, C1 controls, bidirectional controls U+202A-U+202E and
    U+2066-U+2069, the marks U+200E and U+200F, ZERO WIDTH SPACE ...), which
    c2sp.org/signed-note allows but which can make a name shown to a person read as
    another ("log\\u202egro.elpmaxe" reads "logexample.org"). The message names the
    character by its code point (`code_point`). Names read from others' notes are held
    to `check_key_name` only, and shown escaped (`provenance.terminal.clipped_line`)."""
    check_key_name(name)
    hidden = _hidden_character(name)
    if hidden is not None:
        raise LogError(
            f"the key name {clipped_line(name, 60)} has {code_point(hidden)}, a control or"
            " invisible character that can make a name shown to a person read as another;"
            " give a name of visible characters only (such as example.org/log)"
        )


def check_note_size(note: str) -> None:
    """Raise LogError when ``note`` is over `MAX_NOTE_BYTES` in UTF-8: checked before
    anything else reads it (a copy is made only of a non-ASCII note within the bound)."""
    size, exact = _utf8_size(note, MAX_NOTE_BYTES)
    if size > MAX_NOTE_BYTES:
        raise LogError(
            f"the signed note is {'' if exact else 'at least '}{size:,} bytes, more than the"
            f" {MAX_NOTE_BYTES:,} a signed note may hold"
        )


def refuse_pem(text: str, what: str) -> None:
    """Raise LogError, echoing none of ``text``, when it is PEM (a key file: a private key
    given where ``what``, a one-line verifier key, belongs); its text is a secret."""
    if "-----BEGIN" in text:
        kind = "a private key" if "PRIVATE KEY" in text else "a PEM file"
        raise LogError(
            f"this is {kind} (PEM text, not repeated here), not a {what}"
            " (<name>+<key id>+<key>, one line): `prov log key --key-file FILE` prints"
            " the verifier key of a log key file, `prov witness serve` a witness's"
        )


def split_vkey(vkey: str, what: str) -> tuple[str, str, str]:
    """(name, key id text, key material) of a verifier key ``<name>+<key id>+<key>``
    (``what`` names it in messages), each part sliced out only within its bound (a key
    from a hostile server may be megabytes): the name at most `MAX_KEY_NAME_BYTES`
    characters (`check_key_name` then counts its bytes), the key id cut at 9 characters
    (8 are taken), the material at most `MAX_SIGNATURE_BASE64` characters of base64 (an
    Ed25519 key's is 44). Raises LogError."""
    first = vkey.find("+")
    second = vkey.find("+", first + 1) if first >= 0 else -1
    if second < 0:
        raise LogError(f"{what} {quoted(vkey)} is not <name>+<key id>+<key>")
    if first > MAX_KEY_NAME_BYTES:
        raise LogError(
            f"a key name of {first:,} characters, more than the {MAX_KEY_NAME_BYTES} bytes a"
            f" note key name may have: {quoted(vkey[:61], length=first)}"
        )
    material = len(vkey) - second - 1
    if material > MAX_SIGNATURE_BASE64:
        raise LogError(
            f"{what} has {material:,} characters of key material, more than the"
            f" {MAX_SIGNATURE_BASE64:,} of any key (an Ed25519 key's are 44)"
        )
    return vkey[:first], vkey[first + 1 : min(second, first + 10)], vkey[second + 1 :]


def key_id(name: str, public_key: bytes) -> bytes:
    """Four-byte note key id: SHA-256(name || 0x0A || 0x01 || 32-byte Ed25519 key)[:4]."""
    material = name.encode() + b"\n" + bytes([SIGNATURE_TYPE_ED25519]) + public_key
    return hashlib.sha256(material).digest()[:4]


def b64decode_strict(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4); LogError on anything else."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error) as e:
        raise LogError(f"{what} is not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise LogError(f"{what} is not in canonical base64")
    return raw


def _format_time(moment: datetime) -> str:
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


SHOWN_EXTENSIONS = 3
"""Extension lines a refused checkpoint's message quotes (`_lines_said`)."""


def _lines_said(lines: list[str]) -> str:
    """The extension lines ``lines`` as a message quotes them: the first
    `SHOWN_EXTENSIONS`, each cut to 60 characters (`quoted`), then how many there are in
    all (before, every line in full: a signed 1 MiB note of 400,000 lines took 2 MB of
    stderr)."""
    shown = ", ".join(quoted(line) for line in lines[:SHOWN_EXTENSIONS])
    more = f", ... ({len(lines):,} extension lines in all)" if len(lines) > SHOWN_EXTENSIONS else ""
    return f"[{shown}{more}]"


def _parse_time(text: str) -> datetime:
    if not _TIME_RE.fullmatch(text):
        raise LogError(f"checkpoint time {quoted(text)} is not RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise LogError(f"checkpoint time {quoted(text)} is not a valid date and time") from e
    if _format_time(moment) != text:
        raise LogError(f"checkpoint time {quoted(text)} is not in canonical form")
    return moment


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size (leaves) and root hash, and the signing time.

    ``root_hash`` is 32 bytes; ``timestamp`` is timezone-aware UTC, or None when the body
    carries no time line (checkpoints of other logs). Raises LogError on invalid fields.
    """

    origin: str
    size: int
    root_hash: bytes
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _has_control(self.origin):
            raise LogError(f"checkpoint origin {self.origin!r} is empty or has control characters")
        if self.size < 0:
            raise LogError(f"checkpoint size {self.size} is negative")
        if self.size > MAX_TREE_SIZE:
            raise LogError(f"checkpoint size {self.size} is more than a uint64 (at most 2^64 - 1)")
        if len(self.root_hash) != ROOT_HASH_SIZE:
            raise LogError(f"checkpoint root is {len(self.root_hash)} bytes, want {ROOT_HASH_SIZE}")
        if self.timestamp is not None and self.timestamp.utcoffset() != timedelta(0):
            raise LogError("checkpoint timestamp must be timezone-aware UTC")

    def body(self) -> bytes:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` and the time line if any (UTF-8)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode("ascii")]
        if self.timestamp is not None:
            lines.append(_TIME_PREFIX + _format_time(self.timestamp))
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse_body(cls, text: str, *, opaque_extensions: bool = False) -> Checkpoint:
        """Parse a checkpoint note text (what `body` writes). Raises LogError if malformed.

        By default the only extension line taken is this log's ``time`` line; with
        ``opaque_extensions`` any non-empty extension lines are taken and ignored
        (tlog-checkpoint "Note text": "opaque and OPTIONAL"; the timestamp is then None),
        as a witness of other logs reads their checkpoints."""
        if not text.endswith("\n") or _has_control(text):
            raise LogError("checkpoint text must end with a newline and have no control characters")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise LogError("checkpoint text needs origin, size and root lines, none empty")
        origin, size_text, root_text, *extensions = lines
        size = parse_tree_size(size_text, "checkpoint size")
        root_hash = b64decode_strict(root_text, "checkpoint root")
        timestamp = None
        if extensions and not opaque_extensions:
            if len(extensions) > 1 or not extensions[0].startswith(_TIME_PREFIX):
                raise LogError(f"unknown checkpoint extension lines {_lines_said(extensions)}")
            timestamp = _parse_time(extensions[0][len(_TIME_PREFIX) :])
        return cls(origin, size, root_hash, timestamp)


def parse_tree_size(text: str, what: str = "tree size") -> int:
    """A tree size as C2SP checkpoints and tlog-witness write it: a uint64 in ASCII
    decimal digits (no sign, no leading zeros, at most `MAX_TREE_SIZE`). Python's `int`
    and `str.isdigit` also take other scripts' digits ("٣") and superscripts ("²", which
    `int` then refuses with a ValueError), so every size read from a witness, a client or
    a note goes through here. Raises LogError naming ``what``."""
    if not _SIZE_RE.fullmatch(text):
        raise LogError(
            f"{what} {text[:40]!r} is not a decimal without leading zeros (at most 20"
            " digits); only ASCII digits 0-9 count"
        )
    size = int(text)
    if size > MAX_TREE_SIZE:
        raise LogError(f"{what} {text} is more than a uint64 holds (at most 2^64 - 1)")
    return size


def _raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class LogSigner:
    """Signs checkpoints as the log: an Ed25519 key and its note key name (the origin).
    Raises LogError when the name is not a note key name (`check_key_name`). A name with
    a control or invisible character is refused where a log is made (`generate_log_key`,
    ``--origin``: `check_own_key_name`), not here: a log made under one before keeps
    signing, as every reader takes its checkpoints (c2sp.org/signed-note)."""

    def __init__(self, private_key: Ed25519PrivateKey, name: str) -> None:
        check_key_name(name)
        self._private_key = private_key
        self.name = name
        self.public_key = _raw_public_key(private_key.public_key())
        self.key_id = key_id(name, self.public_key)

    def sign_text(self, text: str) -> str:
        """A signed note of ``text`` (which must end in a newline) with this key's signature."""
        if not text.endswith("\n") or _has_control(text):
            raise LogError("note text must end with a newline and have no control characters")
        signature = self._private_key.sign(text.encode())
        blob = base64.b64encode(self.key_id + signature).decode("ascii")
        return f"{text}\n{_EM_DASH} {self.name} {blob}\n"

    def sign_message(self, message: bytes) -> bytes:
        """A raw 64-byte Ed25519 signature over ``message``: for the signed messages of
        other note formats, such as witness cosignatures (c2sp.org/tlog-cosignature)."""
        return self._private_key.sign(message)

    def sign(self, checkpoint: Checkpoint) -> str:
        """The signed note of ``checkpoint``. Raises LogError if its origin is not our name."""
        if checkpoint.origin != self.name:
            raise LogError(
                f"checkpoint origin {checkpoint.origin!r} is not the key name {self.name!r}"
            )
        return self.sign_text(checkpoint.body().decode())

    def verifier_key(self) -> str:
        """The note verifier key ``<name>+<hex8 key id>+<base64(0x01 || public key)>``."""
        material = base64.b64encode(bytes([SIGNATURE_TYPE_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def __repr__(self) -> str:
        return f"LogSigner({self.verifier_key()!r})"


@dataclass(frozen=True)
class SignatureLine:
    """One signature line of a signed note: key name, 4-byte key id, signature bytes."""

    name: str
    key_id: bytes
    signature: bytes


def _quoted_line(note: str, start: int, end: int) -> str:
    """`quoted` of ``note[start:end]``, slicing out no more than it shows."""
    return quoted(note[start : min(end, start + 61)], length=end - start)


def split_note(note: str) -> tuple[str, list[SignatureLine]]:
    """Split a signed note into its text (ending in a newline) and signature lines, as
    c2sp.org/signed-note reads them: only U+000A ends a line, the text ends at the last
    blank line, every line after it is ``— <name> base64(key id || signature)``, at most
    `MAX_SIGNATURES` of them, and no control character but U+000A anywhere. Nothing is
    verified. Bounds, each checked before what it bounds is copied or decoded: the note
    at most `MAX_NOTE_BYTES`, a key name `MAX_KEY_NAME_BYTES`, a signature
    `MAX_SIGNATURE_BASE64` characters of base64 (a line by an unknown key too: over a
    bound, the whole note is malformed). Messages quote at most 60 characters of a line.
    Raises LogError if malformed."""
    check_note_size(note)
    if _has_control(note):
        raise LogError("signed note has control characters")
    split = note.rfind("\n\n")
    if split < 0:
        raise LogError("signed note has no blank line before its signatures")
    start = split + 2
    if start >= len(note) or not note.endswith("\n"):
        raise LogError("signed note must end with a signature line and a newline")
    count = note.count("\n", start)
    if count > MAX_SIGNATURES:
        raise LogError(f"signed note has {count} signatures, more than {MAX_SIGNATURES}")
    signatures = []
    while start < len(note):  # line by line, each sliced out only once its fields fit
        end = note.index("\n", start)
        if not note.startswith(_EM_DASH + " ", start, end):
            raise LogError(
                f"signature line {_quoted_line(note, start, end)} does not start with '— '"
            )
        space = note.find(" ", start + 2, end)
        if space < 0:
            raise LogError(
                f"signature line {_quoted_line(note, start, end)} is not '— <name> <base64>'"
            )
        name = note[start + 2 : min(space, start + 2 + MAX_KEY_NAME_BYTES + 1)]
        if space - (start + 2) > MAX_KEY_NAME_BYTES:  # its characters: at least its bytes
            raise LogError(
                f"a key name of {space - start - 2:,} characters, more than the"
                f" {MAX_KEY_NAME_BYTES} bytes a note key name may have:"
                f" {quoted(name, length=space - start - 2)}"
            )
        check_key_name(name)
        shown = clipped_line(name, 60)  # a signer's name as the spec allows it, bidi marks too
        if end - space - 1 > MAX_SIGNATURE_BASE64:
            raise LogError(
                f"the signature of {shown} is {end - space - 1:,} characters of base64, more"
                f" than the {MAX_SIGNATURE_BASE64:,} of any signature a note may carry"
            )
        raw = b64decode_strict(note[space + 1 : end], f"signature of {shown}")
        if len(raw) < 5:
            raise LogError(f"signature of {shown} is {len(raw)} bytes, too short")
        signatures.append(SignatureLine(name, raw[:4], raw[4:]))
        start = end + 1
    return note[: split + 1], signatures


def not_a_signed_note(data: bytes) -> str:
    """Why ``data``, a tiled log's `checkpoint`, is no signed note at all (over
    `MAX_NOTE_BYTES`, not UTF-8 text, or not text, a blank line and signature lines:
    c2sp.org/signed-note, `split_note`); empty when it is one, whoever signed it (nothing
    is verified). Read by `prov log audit --tiles` of what a place serves, and by `prov
    web --tiles-dir` of the file it would serve (a damaged one is a 500)."""
    if len(data) > MAX_NOTE_BYTES:  # refused before it is decoded (`split_note`)
        return f"it is {len(data):,} bytes, more than the {MAX_NOTE_BYTES:,} a signed note may hold"
    try:
        split_note(data.decode())
    except UnicodeDecodeError:
        return "it is not UTF-8 text"
    except LogError as e:
        return str(e)
    return ""


def note_signers(note: str) -> list[str]:
    """``NAME+KEYID`` (key id in hex) of each signature line of ``note``, in order, whether
    or not it verifies: what a check against the wrong key can name instead (each name as
    the note has it, which may hold bidirectional and other invisible characters: a
    message shows it through `provenance.terminal.clipped_line`). Raises LogError for a
    malformed note."""
    return [f"{s.name}+{s.key_id.hex()}" for s in split_note(note)[1]]


class NoteVerifier:
    """Verifies note signatures by one Ed25519 key, identified by name and key id."""

    def __init__(self, name: str, public_key: bytes) -> None:
        check_key_name(name)
        check_public_key(public_key)  # small-order keys would accept forged notes
        try:
            self._public_key = Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError as e:
            raise KeyMaterialError(
                f"verifier key of {clipped_line(name, 60)} is not an Ed25519 public key"
            ) from e
        self.name = name
        self.public_key = public_key
        self.key_id = key_id(name, public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex8 key id>+<base64(0x01 || 32-byte key)>``; LogError if malformed.

        The key id must match the one computed from the name and key.
        """
        refuse_pem(vkey, "verifier key")
        name, id_text, material = split_vkey(vkey, "verifier key")
        check_key_name(name)
        if not _KEY_ID_RE.fullmatch(id_text):
            raise LogError(f"verifier key id {id_text!r} is not 8 lowercase hex digits")
        raw = b64decode_strict(material, "verifier key material")
        if len(raw) != 33 or raw[0] != SIGNATURE_TYPE_ED25519:
            raise LogError("verifier key is not an Ed25519 key (type 0x01 and 32 bytes)")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != id_text:
            raise LogError(
                f"verifier key id {id_text} does not match the key ({verifier.key_id.hex()})"
            )
        return verifier

    def open(self, note: str) -> str:
        """Verify ``note`` and return its text (ending in a newline).

        Signatures by other keys (another name or key id) are ignored. Every signature of
        this key must verify; one repeated verbatim is checked once (a public note with
        its log line repeated up to `MAX_SIGNATURES` times cost a witness 100
        verifications). Raises LogError for a malformed note and SignatureError when no
        signature of this key is present or one fails to verify.
        """
        text, signatures = split_note(note)
        verified: set[bytes] = set()
        for line in signatures:
            if line.name != self.name or line.key_id != self.key_id:
                continue
            if line.signature in verified:
                continue
            try:
                self._public_key.verify(line.signature, text.encode())
            except InvalidSignature as e:
                raise SignatureError(
                    f"note signature by {clipped_line(self.name, 60)} does not verify"
                ) from e
            verified.add(line.signature)
        if not verified:
            raise SignatureError(
                f"note has no signature by {clipped_line(self.name, 60)}+{self.key_id.hex()}"
            )
        return text


def open_checkpoint(
    note: str,
    verifier: NoteVerifier,
    *,
    origin: str | None = None,
    opaque_extensions: bool = False,
) -> Checkpoint:
    """Verify a signed checkpoint note and parse its body.

    ``origin`` is the log identity expected on the first line; by default the verifier's
    key name (the C2SP recommendation and what `LogSigner` does). ``opaque_extensions``:
    take any extension lines, ignored (`Checkpoint.parse_body`). Raises SignatureError
    (no valid signature by ``verifier``) or LogError (malformed note or body, or another
    origin: the message quotes at most 60 characters of each).
    """
    text = verifier.open(note)
    checkpoint = Checkpoint.parse_body(text, opaque_extensions=opaque_extensions)
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        raise LogError(f"checkpoint origin {quoted(checkpoint.origin)} is not {quoted(expected)}")
    return checkpoint


def generate_log_key(path: Path, origin: str) -> LogSigner:
    """Create a new Ed25519 log key at ``path`` (unencrypted PKCS#8 PEM, mode 0600).

    The file is created exclusively and never overwritten, and appears whole
    (`create_atomically`): the key is written and synced to a new file of a temporary name beside it, which is then linked
    to ``path`` (a hard link fails when ``path`` exists), so a process that finds ``path``
    reads a complete key (servers starting together on one new shared log: the first
    one's key wins, the others load it). On a file system without hard links (FAT, some
    network shares: link(2) refused with EPERM or ENOTSUP) the key is written in place,
    still created exclusively. Raises ConfigError if it exists (a symbolic link there
    leading to no file included: said so) or cannot be written,
    LogError if ``origin`` is not a valid note key name of ours (`check_own_key_name`).
    """
    check_own_key_name(origin)
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    if path.exists():
        raise ConfigError(f"log key file {path} already exists; not overwriting it")
    if path.is_symlink():  # leading to no file: link(2) would fail as if one were there
        raise ConfigError(
            f"log key file {path} is a symbolic link (to {shown_line(os.readlink(path))})"
            " that leads to no file: a new key is never written through a link; remove the"
            " link, or name the key file itself"
        )
    try:
        # the copy is locked (flock) until it is unlinked: `remove_key_leftovers` leaves it
        # alone; where link(2) is refused (FAT, some network shares) the key is written in
        # place, created exclusively, and a server loading it meanwhile waits for a young
        # key file that holds no key yet (provenance.server.service)
        create_atomically(path, pem, temp_name=lambda: f".{path.name}.{secrets.token_hex(8)}.tmp")
    except FileExistsError as e:
        raise ConfigError(f"log key file {path} already exists; not overwriting it") from e
    except OSError as e:
        raise ConfigError(f"cannot create log key file {path}: {e.strerror}") from e
    return LogSigner(private_key, origin)


#: The log's name (`prov serve --origin`) when none is given.
DEFAULT_ORIGIN = "media-provenance.local/log"
#: The log key file beside a SQLite database DB when `prov serve --log-key` is left out:
#: DB + this suffix.
DEFAULT_KEY_SUFFIX = ".logkey.pem"
#: Suffix of the file beside the log key that holds the newest signed checkpoint (the
#: server's `provenance.server.rollback.CheckpointMemo`; `prov log key` reads the log's
#: name from it).
MEMO_SUFFIX = ".checkpoint"


def memo_path(log_key: Path) -> Path:
    """Where the newest checkpoint signed with ``log_key`` is remembered: the key file's
    name + `MEMO_SUFFIX`, beside it."""
    return log_key.with_name(log_key.name + MEMO_SUFFIX)


#: How old a leftover temporary copy of a log key must be (seconds since its last change)
#: before `remove_key_leftovers` removes it: a live `generate_log_key` holds its copy
#: for milliseconds (and locked); this covers the instant between its creation and its
#: lock, and a writer of an older version, which took no lock.
KEY_LEFTOVER_AGE_S = 60.0


def remove_key_leftovers(
    path: Path, now: float | None = None, names: str | None = None
) -> list[Path]:
    """Remove the temporary copies of the log key ``path`` that a `generate_log_key`
    killed mid-way left beside it (``.NAME.<16 hex digits>.tmp``, mode 0600, each a
    private key: the one it was writing, linked to ``path`` or never used); returns those
    removed. Only that exact name pattern, only a regular file (not a link) owned by this
    user, last changed at least `KEY_LEFTOVER_AGE_S` before ``now`` (``time.time()``
    when None), and only while no process holds its lock (a live writer holds it until
    the copy is gone); anything else is left as it is. A copy that cannot be removed is
    left too (the start goes on: the key itself is ``path``). ``names``: a regular
    expression the whole name must match instead (`rollback.CheckpointMemo`'s
    temporary copies). The checks are `remove_leftovers`'s, its age test instead of a
    process id. Source: flock(2), a lock released when its holder dies."""
    pattern = re.compile(names or rf"\.{re.escape(path.name)}\.[0-9a-f]{{16}}\.tmp")
    when = time.time() if now is None else now
    return remove_leftovers(
        path.parent, pattern, lambda _, st: when - st.st_mtime >= KEY_LEFTOVER_AGE_S
    )


def load_log_signer(path: Path, origin: str, what: str = "log key") -> LogSigner:
    """Load the log key written by `generate_log_key` as a signer named ``origin``;
    ``what`` names the key in messages (a witness's key is made the same way).

    Raises LogError if the file is accessible to group or others (it must be 0600 or
    stricter), ConfigError if it cannot be read or is no regular file (a FIFO or device:
    opened without blocking and refused unread), KeyMaterialError if it holds no
    unencrypted Ed25519 private key (or more than `MAX_KEY_FILE_BYTES`).
    """
    try:  # checked before os.fdopen, which refuses a folder naming the descriptor
        fd, st = open_regular_fd(
            path, lambda kind: ConfigError(f"{what} file {path} is {kind}, not a regular file")
        )
    except OSError as e:
        raise ConfigError(f"cannot open {what} file {path}: {e.strerror}") from e
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise LogError(
                f"{what} file {path} has mode {mode:04o}: group or others may access it; "
                f"run chmod 600 {path}"
            )
        pem = handle.read(MAX_KEY_FILE_BYTES + 1)
    if len(pem) > MAX_KEY_FILE_BYTES:
        raise KeyMaterialError(
            f"{what} file {path} is over {MAX_KEY_FILE_BYTES:,} bytes: no key file this"
            " program writes (about 120 bytes)"
        )
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise KeyMaterialError(f"{what} file {path} holds no readable private key") from e
    if not isinstance(private_key, Ed25519PrivateKey):
        raise KeyMaterialError(f"{what} file {path} does not hold an Ed25519 key")
    return LogSigner(private_key, origin)
