"""`prov admin ca init` encrypts the enrollment authority's key with a passphrase
(--passphrase-file, $PROV_CA_PASSPHRASE, or a prompt), as a device key is: PBES2,
PBKDF2-HMAC-SHA256 at 600,000 iterations. Before, the command had no such option and
wrote the key unencrypted. `prov serve --ca DIR` decrypts it (--ca-passphrase-file,
$PROV_CA_PASSPHRASE, a prompt); a missing or wrong passphrase is a usage error (exit 2)
saying so; a key written unencrypted keeps working. The real CLI, a real server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from clients.api import ProvenanceClient
from provenance.c2pa.authority import CERT_FILE, KEY_FILE, init_authority, load_authority
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import ConfigError
from provenance.core.keys import DeviceKey
from tests.conftest import ADMIN_TOKEN, ROOT, pbkdf2_iterations, start_server
from tests.test_cli_prompt import Terminal

SECRET = "correct horse battery staple"


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`prov ARGS` in a child process, stdin not a terminal, PROV_CA_PASSPHRASE unset
    unless ``env`` sets it."""
    base = {k: v for k, v in os.environ.items() if k != "PROV_CA_PASSPHRASE"}
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", *args],
        capture_output=True,
        text=True,
        env={**base, "PYTHONPATH": str(ROOT), "COLUMNS": "400", **(env or {})},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    return done.returncode, done.stdout, " ".join(done.stderr.split())


def test_ca_init_encrypts_the_key_at_600000_iterations(tmp_path: Path) -> None:
    """From the variable and from a file: an encrypted PKCS#8 key the same passphrase
    opens; the root certificate on stdout. Neither (and no terminal): exit 2, nothing
    written. --no-passphrase writes it unencrypted, saying so."""
    rc, out, err = _run("admin", "ca", "init", "--dir", str(tmp_path / "a"))
    assert rc == 2 and "no passphrase" in err and "PROV_CA_PASSPHRASE" in err, err
    assert "--passphrase-file" in err and not (tmp_path / "a").exists()

    rc, out, err = _run(
        "admin", "ca", "init", "--dir", str(tmp_path / "a"), env={"PROV_CA_PASSPHRASE": SECRET}
    )
    assert rc == 0 and out.startswith("-----BEGIN CERTIFICATE-----"), err
    pem = (tmp_path / "a" / KEY_FILE).read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert pbkdf2_iterations(pem) == 600_000
    assert load_authority(tmp_path / "a", SECRET.encode()).certificate_pem == out.encode()

    secret_file = tmp_path / "ca.pass"
    secret_file.write_text("from a file\n")
    rc, out, err = _run(
        "admin", "ca", "init", "--dir", str(tmp_path / "b"), "--passphrase-file", str(secret_file)
    )
    assert rc == 0, err
    assert load_authority(tmp_path / "b", b"from a file").certificate_pem == out.encode()

    rc, out, err = _run("admin", "ca", "init", "--dir", str(tmp_path / "c"), "--no-passphrase")
    assert rc == 0 and "not encrypted" in err, err
    assert (tmp_path / "c" / KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")

    # an authority already there: said at once, before any passphrase is asked for
    rc, out, err = _run("admin", "ca", "init", "--dir", str(tmp_path / "a"))
    assert rc == 1 and f"an authority already exists in {tmp_path / 'a'}" in err, err
    assert load_authority(tmp_path / "a", SECRET.encode()).certificate is not None


def _serve_refused(db: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`prov serve ARGS` that must stop with a usage error: its stderr."""
    rc, _, err = _run(
        "serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector", *args, env=env
    )
    assert rc == 2, (rc, err)
    return err


def test_serve_decrypts_the_authority_key_or_says_why_not(tmp_path: Path) -> None:
    """No passphrase: exit 2 naming the encrypted key and where a passphrase is read
    from; a wrong one: exit 2, "the passphrase is wrong"; the right one (variable, file):
    the server starts and a device it enrolls gets a certificate from that authority."""
    ca = tmp_path / "ca"
    env = {"PROV_CA_PASSPHRASE": SECRET}
    assert _run("admin", "ca", "init", "--dir", str(ca), env=env)[0] == 0
    db = tmp_path / "p.db"
    err = _serve_refused(db, "--ca", str(ca))
    assert f"the enrollment authority key in {ca} is encrypted" in err, err
    assert "--ca-passphrase-file" in err and "PROV_CA_PASSPHRASE" in err, err
    err = _serve_refused(db, "--ca", str(ca), env={"PROV_CA_PASSPHRASE": "wrong"})
    assert "the passphrase is wrong" in err and "PROV_CA_PASSPHRASE" in err, err
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("wrong\n")
    err = _serve_refused(db, "--ca", str(ca), "--ca-passphrase-file", str(wrong))
    assert "the passphrase is wrong" in err and "--ca-passphrase-file" in err, err
    assert not db.exists()  # refused before the database was made

    right = tmp_path / "right.pass"
    right.write_text(SECRET + "\n")
    for extra, srv_env in (
        (("--ca-passphrase-file", str(right)), None),
        ((), env),
    ):
        srv = start_server(tmp_path / f"s{len(extra)}.db", "--ca", str(ca), *extra, env=srv_env)
        try:
            with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as client:
                key = DeviceKey.generate()
                token, _ = client.create_enrollment_token()
                pop = sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode())
                _, chain = client.enroll(token, key.public_key, pop)
            leaf = x509.load_pem_x509_certificates(chain.encode())[0]
            assert leaf.issuer == load_authority(ca, SECRET.encode()).certificate.subject
        finally:
            assert srv.stop() == 0


def test_an_unencrypted_authority_keeps_working(tmp_path: Path) -> None:
    """A key written before (unencrypted): `prov serve --ca` starts without a
    passphrase, and one given by file is refused as not needed (exit 2)."""
    init_authority(tmp_path / "ca", now=datetime.now(UTC))
    srv = start_server(tmp_path / "p.db", "--ca", str(tmp_path / "ca"))
    assert srv.stop() == 0
    extra = tmp_path / "x.pass"
    extra.write_text("x\n")
    err = _serve_refused(
        tmp_path / "q.db", "--ca", str(tmp_path / "ca"), "--ca-passphrase-file", str(extra)
    )
    assert "is not encrypted: it needs no passphrase" in err, err


def test_the_passphrase_is_prompted_in_a_terminal(tmp_path: Path) -> None:
    """In a terminal, `ca init` asks for the passphrase twice and `serve --ca` once; a
    wrong one typed is a usage error (exit 2), the right one starts the server."""
    env = {k: v for k, v in os.environ.items() if k != "PROV_CA_PASSPHRASE"}
    env.update(COLUMNS="200", TERM="dumb", NO_COLOR="1")
    ca = tmp_path / "ca"
    term = Terminal(["-m", "clients.cli", "admin", "ca", "init", "--dir", str(ca)], env)
    term.expect("Authority key passphrase: ")
    term.type(SECRET)
    term.expect("Repeat for confirmation: ")
    term.type(SECRET)
    rc, said = term.finish()
    assert rc == 0 and "enrollment authority created" in said, said
    assert load_authority(ca, SECRET.encode()).certificate is not None

    serve = ["-m", "clients.cli", "serve", "--db", str(tmp_path / "p.db"), "--no-detector"]
    serve += ["--listen", "127.0.0.1:0", "--ca", str(ca)]
    term = Terminal(serve, env)
    term.expect("Enrollment authority key passphrase: ")
    term.type("wrong")
    rc, said = term.finish()
    # TERM=dumb: Rich draws the error box 80 columns wide whatever COLUMNS says, so the
    # message wraps where the temporary path ends; read it as one line
    assert rc == 2 and "the passphrase is wrong" in " ".join(re.findall(r"[^\s│]+", said)), said
    term = Terminal(serve, env)
    term.expect("Enrollment authority key passphrase: ")
    term.type(SECRET)
    term.expect("listening on ")
    os.kill(term.pid, signal.SIGTERM)
    assert term.finish()[0] == 0


def test_a_folder_without_a_usable_authority_is_named_with_what_to_do(tmp_path: Path) -> None:
    """`prov serve --ca DIR` where DIR lacks a file of the authority, or holds one that is
    no PEM key or certificate: exit 2, a usage error under --ca naming the file, what is
    wrong with it and what to do, before any passphrase is used. Before: "[Errno 2] No
    such file or directory: 'DIR/ca.key.pem'", cryptography's "Unable to load PEM file.
    See https://cryptography.io/... MalformedFraming", a missing certificate blamed on
    --ca-passphrase-file, and a key of garbage said to be "not encrypted" when a
    passphrase file was given."""
    good = tmp_path / "good"
    assert (
        _run("admin", "ca", "init", "--dir", str(good), env={"PROV_CA_PASSPHRASE": SECRET})[0] == 0
    )
    right = tmp_path / "right.pass"
    right.write_text(SECRET + "\n")
    key, cert = (good / KEY_FILE).read_bytes(), (good / CERT_FILE).read_bytes()
    # the folder's name, its key file (None: absent; a folder), its certificate, the words
    cases: list[tuple[str, bytes | None, bytes | None, str]] = [
        ("empty", None, None, f"{KEY_FILE} does not exist"),
        ("no-cert", key, None, f"{CERT_FILE} does not exist"),
        ("junk-key", b"garbage\n", cert, f"{KEY_FILE} is not a PEM private key"),
        ("junk-cert", key, b"garbage\n", f"{CERT_FILE} is not a PEM certificate"),
        ("key-folder", b"", cert, f"{KEY_FILE}: Is a directory"),
    ]
    for name, key_bytes, cert_bytes, words in cases:
        ca = tmp_path / name
        ca.mkdir()
        if name == "key-folder":
            (ca / KEY_FILE).mkdir()
        elif key_bytes is not None:
            (ca / KEY_FILE).write_bytes(key_bytes)
        if cert_bytes is not None:
            (ca / CERT_FILE).write_bytes(cert_bytes)
        for extra in ((), ("--ca-passphrase-file", str(right))):
            said = " ".join(_serve_refused(tmp_path / "p.db", "--ca", str(ca), *extra).split("│"))
            said = " ".join(said.split())
            assert "Invalid value for --ca:" in said, (name, extra, said)
            assert f"{ca}/{words}" in said, (name, extra, said)
            assert "Errno" not in said and "cryptography.io" not in said, (name, extra, said)
            assert "needs no passphrase" not in said, (name, extra, said)
            if name in ("empty", "no-cert"):
                assert "prov admin ca init --dir" in said, (name, said)


def test_ca_init_into_a_file_or_fifo_says_so(tmp_path: Path) -> None:
    """`prov admin ca init --dir X` where X is a file or a FIFO, not a folder, is a usage
    error (exit 2) saying what X is, not "an authority already exists in X" (exit 1),
    which would send its user looking for an authority that is not there. The library's
    `init_authority` says the folder cannot be made, not that an authority exists."""
    afile = tmp_path / "photo.jpg"
    afile.write_bytes(b"not a folder")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in [(afile, "a file"), (fifo, "a FIFO (named pipe)")]:
        rc, out, err = _run("admin", "ca", "init", "--dir", str(path), "--no-passphrase")
        assert rc == 2 and "Traceback" not in err, err
        assert f"Invalid value for --dir: {path} is {kind}, not a folder" in err, err
        assert "already exists" not in err, err
    assert afile.read_bytes() == b"not a folder"
    now = datetime.now(UTC)
    for path in (afile / "ca", afile):
        with pytest.raises(ConfigError) as caught:
            init_authority(path, now=now)
        assert f"cannot create the folder {path} for the authority" in str(caught.value)
        assert "already exists" not in str(caught.value)
