"""`prov receipt export|verify|refresh --home DIR`: the device folder the receipt commands
ask why a sidecar holds no receipt (queued there, set aside, or unknown), as every other
command's --home ($PROV_HOME, else ~/.prov). The real CLI, a real key and queue; the
server is a closed loopback port, so the signed claim stays queued."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from provenance.log.checkpoint import generate_log_key
from tests.conftest import PASSPHRASE, SAMPLES, Cli, closed_port, sign_sample


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    rc = prov_main(list(args))
    got = capsys.readouterr()
    return rc, " ".join((got.out + got.err).split())


def test_receipt_commands_read_the_device_folder_given_by_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROV_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("PROV_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))  # ~/.prov: another, empty folder
    home = tmp_path / "camera"
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    server = closed_port()
    assert _run(capsys, "device", "init", "--home", str(home))[0] == 0
    rc, text = _run(capsys, "sign", str(photo), "--home", str(home), "--server", server)
    assert rc == 4 and "queued" in text, text
    sidecar = f"{photo}.prov"
    log_key = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    commands = (
        ("receipt", "verify", sidecar, "--log-key", log_key),
        ("receipt", "export", sidecar),
        ("receipt", "refresh", sidecar, "--server", server),
    )
    for args in commands:
        rc, text = _run(capsys, *args, "--home", str(home))
        assert rc == 1 and "the claim is queued on this device" in text, (args, text)
        rc, text = _run(capsys, *args)  # ~/.prov does not hold the claim
        assert rc == 1 and "does not hold it" in text, (args, text)
        monkeypatch.setenv("PROV_HOME", str(home))  # the same folder from the environment
        rc, text = _run(capsys, *args)
        assert rc == 1 and "the claim is queued on this device" in text, (args, text)
        monkeypatch.delenv("PROV_HOME")


def test_receipt_verify_with_another_logs_key_says_so(enrolled: Cli, tmp_path: Path) -> None:
    """A new user who gives another log's key (a second server's, an old database's) is
    told that the receipt is not from that log and which log the sidecar names, not
    "note has no signature by NAME+ID"."""
    photo, _ = sign_sample(enrolled, tmp_path)
    rc, vkey, _ = enrolled("log", "key")
    vkey = vkey.strip()
    other = generate_log_key(tmp_path / "other.pem", vkey.split("+")[0]).verifier_key()
    other_id = "+".join(other.split("+")[:2])
    rc, _, err = enrolled("receipt", "verify", f"{photo}.prov", "--log-key", other)
    text = " ".join(err.split())
    assert rc == 1 and "Traceback" not in err, err
    assert text.startswith(
        f"error: the receipt is not from the log of --log-key {other_id}: its checkpoint"
        f" carries no signature by that key (the sidecar says it was logged by {vkey});"
    ), text
    assert "`prov log key --server HOST:PORT`" in text
    # a tlog-proof records no log key: the keys that signed its checkpoint are named
    rc, _, err = enrolled("receipt", "export", f"{photo}.prov", "--format", "tlog-proof")
    assert rc == 0, err
    proof = photo.with_name(photo.name + ".tlog-proof")
    rc, _, err = enrolled("receipt", "verify", str(proof), "--log-key", other)
    signer = "+".join(vkey.split("+")[:2])
    assert rc == 1 and f"(it is signed by {signer})" in " ".join(err.split()), err
    # the right key still verifies both
    for path in (f"{photo}.prov", str(proof)):
        rc, out, err = enrolled("receipt", "verify", path, "--log-key", vkey)
        assert rc == 0 and " OK: leaf " in out, err


def test_receipt_export_unknown_format_names_the_formats(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--format nope` is a usage error (exit 2) saying plainly which formats exist, not
    Typer's "Value error, 'nope' is not one of 'tlog-proof'"."""
    sidecar = tmp_path / "a.jpg.prov"
    sidecar.write_bytes(b"not read")
    rc, text = _run(capsys, "receipt", "export", str(sidecar), "--format", "nope")
    text = " ".join(text.replace("│", " ").split())  # the error box's side lines
    assert rc == 2, text
    assert "unknown format 'nope'" in text and "the only format is tlog-proof" in text, text
    assert "Value error" not in text and "is not one of" not in text, text


def test_a_sidecars_hostile_log_key_is_not_echoed(enrolled: Cli, tmp_path: Path) -> None:
    """A sidecar handed over for checking names the log that issued it in
    ``logVerifierKey``, unauthenticated: one of 2,000,000 characters with a terminal
    escape. `receipt verify` with another log's key, and `receipt refresh` (which
    compares it with the server's key), refuse it in a message that does not echo it.
    Before: both messages carried it whole (a 2 MB line with the escape)."""
    photo, _ = sign_sample(enrolled, tmp_path)
    rc, vkey, _ = enrolled("log", "key")
    sidecar = Path(f"{photo}.prov")
    doc = json.loads(sidecar.read_text())
    assert doc["logVerifierKey"] == vkey.strip()
    doc["logVerifierKey"] = "\x1b[31m" + "k" * 2_000_000
    sidecar.write_text(json.dumps(doc))
    other = generate_log_key(tmp_path / "other.pem", "other.example/log").verifier_key()
    signer = "+".join(vkey.split("+")[:2])
    for args, said in (
        (("verify", str(sidecar), "--log-key", other), f"(it is signed by {signer})"),
        (("refresh", str(sidecar)), "the sidecar's log key (logVerifierKey) is no verifier key"),
    ):
        rc, out, err = enrolled("receipt", *args)
        assert rc == 1 and "Traceback" not in err, (args, err[:300])
        assert len(out + err) < 2000 and "kkkkkkkkkk" * 10 not in err, (args, err[:300])
        assert "\x1b" not in out + err and said in " ".join(err.split()), (args, err[:300])


def test_receipt_export_never_replaces_what_is_not_a_regular_file(
    enrolled: Cli, tmp_path: Path
) -> None:
    """`--output` naming a FIFO, a device, or a symbolic link to one (``--output
    /dev/stdout``: a link to /proc/self/fd/1) is a usage error (exit 2) naming it, left as
    it is. The proof is written beside its name and renamed over it: that would replace
    the FIFO, and the link itself with a regular file (as root, /dev/stdout of every
    process of the machine)."""
    photo, _ = sign_sample(enrolled, tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    to_fifo, to_device = tmp_path / "to-pipe", tmp_path / "to-null"
    to_fifo.symlink_to(fifo)
    to_device.symlink_to("/dev/null")
    for target, kind in [
        (fifo, "a FIFO (named pipe)"),
        (to_fifo, "a FIFO (named pipe)"),
        (to_device, "a device"),
    ]:
        rc, out, err = enrolled("receipt", "export", f"{photo}.prov", "--output", str(target))
        text = " ".join(err.replace("│", " ").split())
        assert rc == 2 and "Traceback" not in err, (target, out, err)
        assert f"Invalid value for --output: {target} is {kind}, not a regular file" in text, text
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert os.readlink(to_fifo) == str(fifo) and os.readlink(to_device) == "/dev/null"
    # a link to a regular file is replaced by the proof
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    to_file = tmp_path / "to-file"
    to_file.symlink_to(kept)
    rc, out, err = enrolled("receipt", "export", f"{photo}.prov", "--output", str(to_file))
    assert rc == 0 and f"wrote {to_file}" in out, err
