"""The passphrase prompt in a real terminal (a pseudo-terminal): an empty answer is
refused with one line saying why before the prompt comes again (before: the prompt came
again without a word); the confirmation must match. The real CLI in a child process. And
no passphrase is asked when the command would fail for another reason (no key, or a key
that `device init` would not replace)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from tests.conftest import ROOT, SAMPLES, closed_port

#: The line said before the prompt comes again after an empty answer.
EMPTY = "the passphrase cannot be empty: the device key is encrypted with it"


class Terminal:
    """A child process on a pseudo-terminal: what it wrote, and typing into it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal is its stdin, stdout, stderr and /dev/tty
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, *argv], env)
        self.seen = ""

    def expect(self, text: str, timeout: float = 60) -> str:
        """Read until ``text`` has been written (a prompt: the child then waits for
        input, its terminal flushed); returns everything written since the last call."""
        deadline = time.monotonic() + timeout
        while text not in self.seen and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child closed the terminal
                    break
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        assert text in self.seen, (text, self.seen)
        got, _, self.seen = self.seen.partition(text)
        return got + text

    def type(self, line: str) -> None:
        os.write(self.fd, line.encode() + b"\n")

    def finish(self) -> tuple[int, str]:
        """Wait for the child to end: its exit code, and what it wrote since `expect`."""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status), self.seen


def test_an_empty_passphrase_is_refused_with_the_reason(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PROV_PASSPHRASE", "PROV_HOME")}
    env.update(COLUMNS="200", TERM="dumb", NO_COLOR="1")  # plain text, one line each
    home = tmp_path / "device"
    term = Terminal(["-m", "clients.cli", "device", "init", "--home", str(home)], env)
    prompt, again = "Device key passphrase: ", "Repeat for confirmation: "
    term.expect(prompt)
    term.type("")
    said = term.expect(prompt)
    assert said.strip().splitlines() == [EMPTY, prompt.strip()], said
    term.type("secret one")
    term.expect(again)
    term.type("")  # an empty confirmation: the same line, the confirmation again
    assert term.expect(again).strip().splitlines() == [EMPTY, again.strip()]
    term.type("secret two")  # differs: asked again from the start
    said = term.expect(prompt)
    assert "the two passphrases differ" in said, said
    term.type("secret one")
    term.expect(again)
    term.type("secret one")
    rc, said = term.finish()
    assert rc == 0 and f"device key created in {home}" in said, said
    assert (home / "device_key.pem").is_file()


def test_no_passphrase_is_asked_for_a_key_that_is_missing_or_would_be_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov sign` / `device enroll` without a key, and `device init` over an existing key,
    say so before asking for a passphrase (before: "no passphrase: set PROV_PASSPHRASE
    ..." without a terminal, or a prompt, and only then the real reason)."""
    monkeypatch.delenv("PROV_PASSPHRASE", raising=False)  # no terminal either: stdin is not one
    home = tmp_path / "device"
    photo = tmp_path / "a.jpg"
    photo.write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    server = ("--server", closed_port(), "--home", str(home))
    for args in (("sign", str(photo)), ("device", "enroll", "--token", "T")):
        capsys.readouterr()
        rc = prov_main([*args, *server])
        err = capsys.readouterr().err
        assert rc == 1 and "no device key at" in err and "prov device init" in err, (args, err)
    monkeypatch.setenv("PROV_PASSPHRASE", "pw")
    assert prov_main(["device", "init", "--home", str(home)]) == 0
    monkeypatch.delenv("PROV_PASSPHRASE")
    capsys.readouterr()
    rc = prov_main(["device", "init", "--home", str(home)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 1 and "a device key already exists" in err and "--force" in err, err


def test_an_empty_passphrase_variable_is_named_without_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """PROV_PASSPHRASE set to nothing (``PROV_PASSPHRASE= prov device init`` in a script):
    the error says it is empty (before: "no passphrase: set PROV_PASSPHRASE ...", though it
    was set); a usage error, exit 2 (before: 1), no key made. Unset, without a terminal,
    it is the same usage error."""
    monkeypatch.setenv("PROV_PASSPHRASE", "")  # no terminal either: stdin is not one
    home = tmp_path / "device"
    capsys.readouterr()
    rc = prov_main(["device", "init", "--home", str(home)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "PROV_PASSPHRASE is set but empty" in err, err
    assert not (home / "device_key.pem").exists()
    monkeypatch.delenv("PROV_PASSPHRASE")
    rc = prov_main(["device", "init", "--home", str(home)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and "no passphrase: set PROV_PASSPHRASE or run in a terminal" in err, err
    assert not (home / "device_key.pem").exists()


def test_a_wrong_passphrase_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov sign` with the wrong PROV_PASSPHRASE: exit 1 and one line that says it once
    (before: "cannot decrypt the private key (wrong passphrase or corrupt PEM): Incorrect
    password, could not decrypt key"). Nothing is signed."""
    home = tmp_path / "device"
    monkeypatch.setenv("PROV_PASSPHRASE", "the right one")
    assert prov_main(["device", "init", "--home", str(home)]) == 0
    photo = tmp_path / "rocket.jpg"
    photo.write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    monkeypatch.setenv("PROV_PASSPHRASE", "a wrong one")
    capsys.readouterr()
    rc = prov_main(["sign", "--home", str(home), "--server", closed_port(), str(photo)])
    err = capsys.readouterr().err
    assert (rc, err) == (
        1,
        "error: cannot decrypt the private key: the passphrase is wrong, or the key file is"
        " damaged\n",
    ), err
    assert not (tmp_path / "rocket.jpg.prov").exists()
