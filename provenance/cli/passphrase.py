"""Where a key file's passphrase comes from: a file named by an option, an environment
variable, or a hidden prompt in a terminal, in that order. The device key's
(``PROV_PASSPHRASE``) and the enrollment authority's (``PROV_CA_PASSPHRASE``,
``--passphrase-file`` of `prov admin ca init`, ``--ca-passphrase-file`` of `prov serve`)
are read here alike. A passphrase is never shown, not even one byte of it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from provenance.cli.files import read_capped
from provenance.cli.options import UsageError
from provenance.core.errors import ConfigError
from provenance.terminal import SafeConsole

err = SafeConsole(stderr=True, soft_wrap=True)

#: The environment variable holding the enrollment authority key's passphrase.
CA_PASSPHRASE_ENV = "PROV_CA_PASSPHRASE"
#: Said of a passphrase holding a byte that is not UTF-8 (the byte itself is never shown).
NOT_UTF8_PASSPHRASE = (
    "the passphrase is not valid UTF-8 text (a byte this terminal's encoding could not"
    " decode): type it in a UTF-8 terminal"
)
#: Longest passphrase file read, in bytes (a passphrase, not a file named by mistake).
MAX_PASSPHRASE_FILE_BYTES = 4096


def empty_passphrase(what: str) -> str:
    """Said before the prompt comes again after an empty answer (``what``: the key, as
    "the device key")."""
    return f"the passphrase cannot be empty: {what} is encrypted with it"


def from_variable(env: str) -> bool:
    """Whether `read_passphrase` without a file takes the passphrase from the environment
    variable ``env`` (set and not empty) rather than from the prompt."""
    return bool(os.environ.get(env))


def read_passphrase(
    *,
    env: str,
    what: str,
    prompt: str,
    file: Path | None = None,
    file_flag: str = "",
    confirm: bool = False,
) -> bytes:
    """The passphrase of ``what`` (words for messages: "the device key"): the contents of
    ``file`` (its last line ending dropped; named ``file_flag`` in messages) when given,
    else the environment variable ``env`` when set and not empty, else typed at a hidden
    ``prompt``, asked again (saying why) while the answer is empty; ``confirm``: typed
    twice, asked again from the start when the two differ. UTF-8 text as bytes.

    Raises UsageError (exit 2) for a file that cannot be read, is empty, too long or not
    UTF-8, a variable that is empty without a terminal or not UTF-8, or no source at all
    (no file, no variable, no terminal)."""
    if file is not None:
        return _from_file(file, file_flag)
    value = os.environ.get(env)
    if value:
        try:
            return value.encode()
        except UnicodeEncodeError:  # a byte that is not UTF-8; never shown, not even its place
            raise UsageError(f"{env}: {NOT_UTF8_PASSPHRASE}") from None
    if not sys.stdin.isatty():
        alternatives = f"{file_flag} FILE, " if file_flag else ""
        if value is not None:  # set, but to nothing
            raise UsageError(
                f"{env} is set but empty: set it to {what}'s passphrase, or"
                f" {'give ' + alternatives + 'or ' if file_flag else ''}unset it and run in a"
                " terminal to be prompted"
            )
        raise UsageError(
            f"no passphrase: {'give ' + alternatives if file_flag else ''}set {env} or run in"
            " a terminal to be prompted"
        )

    def ask(text: str) -> str:
        while True:
            try:
                answer = str(typer.prompt(text, hide_input=True, default="", show_default=False))
            except UnicodeDecodeError:  # its message shows the byte and its place: not said
                err.print(NOT_UTF8_PASSPHRASE, highlight=False)
                continue
            if answer:
                return answer
            err.print(empty_passphrase(what), highlight=False)

    while True:
        typed = ask(prompt)
        if not confirm or ask("Repeat for confirmation") == typed:
            return typed.encode()
        err.print("the two passphrases differ; type it again", highlight=False)


def _from_file(file: Path, flag: str) -> bytes:
    """A passphrase file's text, one line ending at its end dropped. Raises UsageError."""
    try:
        raw = read_capped(file, MAX_PASSPHRASE_FILE_BYTES, "passphrase file")
    except ConfigError as e:
        raise UsageError(f"{flag}: {e}") from None
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raise UsageError(f"{flag}: {file} is empty: write the passphrase in it")
    try:
        raw.decode()
    except UnicodeDecodeError:
        raise UsageError(f"{flag}: {file}: {NOT_UTF8_PASSPHRASE}") from None
    return raw
