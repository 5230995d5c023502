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

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from clients.device import DeviceHome
from tests.conftest import ADMIN_TOKEN, ROOT, SAMPLES, closed_port, start_server

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
    # what --force does to the old key's claims, in the words of docs/device.md (before
    # h-newuser60: "the old key's device identity is then lost", which read as if its
    # signed captures were lost too)
    assert "its claims stay signed and verifiable" in err, err
    assert f"{home}/replaced/" in err and "identity is then lost" not in err, err


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


#: Said of a device key that the passphrase does not decrypt.
WRONG = "error: cannot decrypt the private key: the passphrase is wrong, or the key file is damaged"


def test_a_wrong_passphrase_is_one_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov sign` and `prov device enroll` with the wrong PROV_PASSPHRASE: exit 1 and one
    line that says it once, and that the passphrase came from the variable (before: "...
    the passphrase is wrong, or the key file is damaged", without a word on where it came
    from; before that: "cannot decrypt the private key (wrong passphrase or corrupt PEM):
    Incorrect password, could not decrypt key"). Nothing is signed."""
    home = tmp_path / "device"
    monkeypatch.setenv("PROV_PASSPHRASE", "the right one")
    assert prov_main(["device", "init", "--home", str(home)]) == 0
    photo = tmp_path / "rocket.jpg"
    photo.write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    monkeypatch.setenv("PROV_PASSPHRASE", "a wrong one")
    where = ("--home", str(home), "--server", closed_port())
    for args in (["sign", *where, str(photo)], ["device", "enroll", *where, "--token", "T"]):
        capsys.readouterr()
        rc = prov_main(args)
        err = capsys.readouterr().err
        assert (rc, err) == (
            1,
            f"{WRONG} (the passphrase came from $PROV_PASSPHRASE: set it to the device key's,"
            " or unset it to be asked)\n",
        ), (args, err)
    assert not (tmp_path / "rocket.jpg.prov").exists()


def test_a_wrong_passphrase_typed_at_the_prompt_says_so(tmp_path: Path) -> None:
    """Typed at the prompt, the wrong passphrase's error says it was typed (before: the
    same words as for one from $PROV_PASSPHRASE, which named neither)."""
    home = tmp_path / "device"
    env = {k: v for k, v in os.environ.items() if k not in ("PROV_PASSPHRASE", "PROV_HOME")}
    env.update(COLUMNS="400", TERM="dumb", NO_COLOR="1")  # plain text, one line each
    made = Terminal(["-m", "clients.cli", "device", "init", "--home", str(home)], env)
    for _ in range(2):
        made.expect(": ")
        made.type("the right one")
    rc, said = made.finish()
    assert rc == 0, said
    photo = tmp_path / "rocket.jpg"
    photo.write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    argv = ["-m", "clients.cli", "sign", "--home", str(home), "--server", closed_port()]
    term = Terminal([*argv, str(photo)], env)
    term.expect("Device key passphrase: ")
    term.type("a wrong one")
    rc, said = term.finish()
    assert rc == 1, said
    assert f"{WRONG} (the passphrase was typed at the prompt: run again and type the device" in (
        " ".join(said.split())
    ), said
    assert not (tmp_path / "rocket.jpg.prov").exists()


#: Said when a passphrase is not UTF-8 text (its bytes are never shown).
NOT_UTF8 = "the passphrase is not valid UTF-8 text"


def test_a_passphrase_that_is_not_utf8_is_refused_without_showing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A passphrase with a byte that is not UTF-8 (typed in a Latin-1 terminal, or in
    PROV_PASSPHRASE) ended in a Python traceback whose last line showed that byte and its
    place in the passphrase ("can't decode byte 0xff in position 0"). Typed: said in
    words, asked again; in the variable: a usage error (exit 2). No key is made."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROV_PASSPHRASE", "PROV_HOME")}
    env.update(COLUMNS="200", TERM="dumb", NO_COLOR="1")
    home = tmp_path / "device"
    term = Terminal(["-m", "clients.cli", "device", "init", "--home", str(home)], env)
    prompt, again = "Device key passphrase: ", "Repeat for confirmation: "
    term.expect(prompt)
    os.write(term.fd, b"s\xffcret\n")
    said = term.expect(prompt)
    assert NOT_UTF8 in said and "Traceback" not in said and "xff" not in said, said
    term.type("secret")
    term.expect(again)
    term.type("secret")
    rc, said = term.finish()
    assert rc == 0 and f"device key created in {home}" in said, said

    other = tmp_path / "other"
    monkeypatch.setenv("PROV_PASSPHRASE", "s\udcffcret")  # the byte 0xff, as Python reads it
    capsys.readouterr()
    rc = prov_main(["device", "init", "--home", str(other)])
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 2 and f"PROV_PASSPHRASE: {NOT_UTF8}" in err, err
    assert "xff" not in err and "\udcff" not in err and "position" not in err, err
    assert not (other / "device_key.pem").exists()


def test_an_enrollment_token_from_the_environment_is_not_on_the_command_line(
    tmp_path: Path,
) -> None:
    """`prov device enroll --token TOKEN` waits at the passphrase prompt with the token in
    its command line, which every user of the machine can read (/proc/PID/cmdline, ps)
    and spend first with a key of their own. $PROV_ENROLL_TOKEN (readable by the same
    user alone) gives it instead (before: ignored, "give --token TOKEN")."""
    srv = start_server(tmp_path / "p.db")
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            token, _ = c.create_enrollment_token()
        home = tmp_path / "device"
        DeviceHome(home).init(b"secret")
        env = {k: v for k, v in os.environ.items() if k not in ("PROV_PASSPHRASE", "PROV_HOME")}
        env.update(COLUMNS="200", TERM="dumb", NO_COLOR="1", PROV_ENROLL_TOKEN=token)
        argv = ["-m", "clients.cli", "device", "enroll", "--home", str(home)]
        term = Terminal([*argv, "--server", srv.address], env)
        term.expect("Device key passphrase: ")
        cmdline = Path(f"/proc/{term.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline and b"enroll" in cmdline
        term.type("secret")
        rc, said = term.finish()
        assert rc == 0 and "enrolled with" in said, said
    finally:
        srv.stop()
