"""Receipts as C2SP tlog-proof (prov receipt export --format tlog-proof / verify)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provenance.core.errors import LogError
from provenance.log.checkpoint import LogSigner
from provenance.log.tlogproof import HEADER, decode_tlog_proof, encode_tlog_proof, is_tlog_proof
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import SAMPLES, Cli


@pytest.fixture
def signed_two(enrolled: Cli, tmp_path: Path) -> list[Path]:
    files = [Path(shutil.copy(SAMPLES / n, tmp_path / n)) for n in ("rocket.jpg", "chelsea.png")]
    rc, _, err = enrolled("sign", *map(str, files))
    assert rc == 0, err
    return files


def test_export_and_verify_against_a_real_server(
    signed_two: list[Path], enrolled: Cli, tmp_path: Path
) -> None:
    rc, vkey, _ = enrolled("log", "key")
    vkey = vkey.strip()
    side = Path(f"{signed_two[1]}.prov")
    rc, out, err = enrolled("receipt", "export", str(side), "--format", "tlog-proof")
    assert rc == 0, err
    proof_path = tmp_path / "chelsea.png.tlog-proof"
    text = proof_path.read_text()
    receipt = decode_sidecar(side.read_bytes()).receipt
    assert receipt is not None
    # the spec's layout: header, extra (our leaf data), index, proof lines, blank, checkpoint
    lines = text.split("\n")
    assert lines[0] == HEADER
    assert base64.b64decode(lines[1].removeprefix("extra ")) == receipt.log_entry
    assert lines[2] == f"index {receipt.leaf_index}" == "index 2"  # 0: the enrollment
    assert [base64.b64decode(x) for x in lines[3 : 3 + len(receipt.inclusion_proof)]] == list(
        receipt.inclusion_proof
    )
    assert text.endswith("\n\n" + receipt.checkpoint)
    assert decode_tlog_proof(text) == receipt
    assert encode_tlog_proof(decode_tlog_proof(text)) == text

    rc, out, err = enrolled("receipt", "verify", str(proof_path), "--log-key", vkey)
    assert rc == 0 and "tlog-proof OK: leaf 2 of 3" in out, err
    rc, out, err = enrolled(
        "receipt", "verify", str(proof_path), "--log-key", vkey, "--sidecar", str(side)
    )
    assert rc == 0 and "verified with the sidecar's key" in out, err
    # the sidecar keeps its own form and still verifies
    rc, out, _ = enrolled("receipt", "verify", str(side), "--log-key", vkey)
    assert rc == 0 and "receipt OK" in out

    # a proof of another claim than the sidecar's
    other = Path(f"{signed_two[0]}.prov")
    rc, _, err = enrolled(
        "receipt", "verify", str(proof_path), "--log-key", vkey, "--sidecar", str(other)
    )
    assert rc == 1 and "different claim" in err
    # tampering: a proof hash, the index, the leaf data
    hash_line = lines[3]
    flipped = base64.b64encode(
        bytes([base64.b64decode(hash_line)[0] ^ 1]) + base64.b64decode(hash_line)[1:]
    ).decode()
    entry = base64.b64decode(lines[1][6:])
    for bad in (
        text.replace(hash_line, flipped, 1),
        text.replace("index 2\n", "index 1\n", 1),
        text.replace(
            lines[1], "extra " + base64.b64encode(entry[:-1] + bytes([entry[-1] ^ 1])).decode(), 1
        ),
    ):
        proof_path.write_text(bad)
        rc, _, err = enrolled("receipt", "verify", str(proof_path), "--log-key", vkey)
        assert rc == 1, bad
    # another log's key
    proof_path.write_text(text)
    other_key = LogSigner(Ed25519PrivateKey.generate(), vkey.split("+")[0]).verifier_key()
    rc, _, err = enrolled("receipt", "verify", str(proof_path), "--log-key", other_key)
    assert rc == 1 and "no signature by" in err


def test_an_export_onto_a_folder_is_a_usage_error_naming_a_file(
    signed_two: list[Path], enrolled: Cli, tmp_path: Path
) -> None:
    """`--output` naming a folder: exit 2 saying to name a file, as `--report` and `--db`
    do. Before: exit 1, "error: Is a directory: PATH" (found by h-rev43)."""
    side = Path(f"{signed_two[1]}.prov")
    folder = tmp_path / "proofs"
    folder.mkdir()
    rc, _, err = enrolled("receipt", "export", str(side), "--output", str(folder))
    said = " ".join(err.split())
    assert rc == 2 and "Traceback" not in err, err
    assert "is a folder; name the file to write" in said, said
    assert "Is a directory" not in said, said
    assert list(folder.iterdir()) == []


def test_an_export_onto_a_link_leading_nowhere_is_written_at_the_link_s_name(
    signed_two: list[Path], enrolled: Cli, tmp_path: Path
) -> None:
    """`--output` naming a symbolic link into a folder that does not exist: the proof is
    written beside the link and renamed over its name (as every export is), so it is made
    there, replacing the link, and the link's own folder is the one that must exist; exit
    0. Judged by the folder it leads into, it was refused (exit 2, "the folder ... does
    not exist (create it first)"), though creating that folder would not have put the
    proof there."""
    side = Path(f"{signed_two[1]}.prov")
    link = tmp_path / "out.tlog-proof"
    link.symlink_to(tmp_path / "gone" / "out.tlog-proof")
    rc, _, err = enrolled("receipt", "export", str(side), "--output", str(link))
    assert rc == 0, err
    assert not link.is_symlink() and is_tlog_proof(link.read_bytes()), err
    assert not (tmp_path / "gone").exists()


def test_a_garbage_tlog_proof_file_is_named_a_tlog_proof_not_a_sidecar(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A FILE.tlog-proof that does not start with the format's header (cut short, another
    file renamed) is told what the format's first line must be. Before, it was read as a
    sidecar: "not a usable sidecar (... not valid JSON ...)", exit 2 (found by h-rev43)."""
    rc, vkey, _ = enrolled("log", "key")
    proof = tmp_path / "x.jpg.tlog-proof"
    proof.write_text("garbage\n")
    rc, _, err = enrolled("receipt", "verify", str(proof), "--log-key", vkey.strip())
    said = " ".join(err.split())
    assert rc == 1 and "Traceback" not in err, err
    assert "tlog-proof" in said and "first line" in said, said
    assert "sidecar" not in said and "JSON" not in said, said


def test_a_proof_with_crlf_line_endings_is_named_as_such(
    signed_two: list[Path], enrolled: Cli, tmp_path: Path
) -> None:
    """A proof a Windows editor or git's autocrlf rewrote with CRLF: the format's lines are
    separated by U+000A and its checkpoint was signed with them, so it is refused, saying
    so. Before, it did not start with the header line as this log writes it and read as a
    broken sidecar: "not a usable sidecar (... not valid JSON ...)", exit 2."""
    rc, vkey, _ = enrolled("log", "key")
    side = Path(f"{signed_two[1]}.prov")
    rc, _, err = enrolled("receipt", "export", str(side), "--format", "tlog-proof")
    assert rc == 0, err
    proof = tmp_path / "chelsea.png.tlog-proof"
    proof.write_bytes(proof.read_bytes().replace(b"\n", b"\r\n"))
    rc, _, err = enrolled("receipt", "verify", str(proof), "--log-key", vkey.strip())
    said = " ".join(err.split())
    assert rc == 1 and "Traceback" not in err, err
    assert "uses CRLF line endings; the tlog-proof format needs LF" in said, said
    assert "sidecar" not in said, said


@pytest.mark.parametrize(
    "text, message",
    [
        ("c2sp.org/tlog-proof@v2\nextra AA==\nindex 0\n\ncp\n", "first line"),
        (HEADER + "\nindex 0\n\ncp\n", "no 'extra' line"),
        (HEADER + "\nextra AA==\nindex 01\n\ncp\n", "index N"),
        # before: ValueError from int() (over 4,300 digits), a traceback in prov receipt
        (HEADER + "\nextra AA==\nindex 1" + "0" * 5000 + "\n\ncp\n", "index N"),
        (HEADER + "\nextra AA==\nindex \u0661\n\ncp\n", "index N"),  # Arabic-Indic 1
        (HEADER + "\nextra AA==\nindex 1_000\n\ncp\n", "index N"),
        (HEADER + "\nextra AA==\nindex 9223372036854775808\n\ncp\n", "out of range"),
        (HEADER + "\nextra AA==\nindex 0\nAAAA\n\ncp\n", "not a SHA-256 hash"),
        (HEADER + "\nextra AA==\nindex 0\n", "no blank line"),
        (HEADER + "\r\nextra AA==\r\nindex 0\r\n\r\ncp\r\n", "uses CRLF line endings"),
        # converted past the header only (before: "no blank line before its checkpoint")
        (HEADER + "\nextra AA==\r\nindex 0\r\n\r\ncp\r\n", "uses CRLF line endings"),
        # a UTF-8 byte order mark, as Windows Notepad saved UTF-8 (before: "the first line
        # is not 'c2sp.org/tlog-proof@v1'", and prov receipt verify read it as a sidecar)
        ("\ufeff" + HEADER + "\nextra AA==\nindex 0\n\ncp\n", "byte order mark"),
        # lone CR, classic Mac OS (before: "no blank line before its checkpoint")
        (HEADER + "\rextra AA==\rindex 0\r\rcp\r", "carriage returns"),
        (HEADER + "\nextra A==\nindex 0\n\ncp\n", "not base64"),
        (HEADER + "\nextra AAAA\nindex 0\n\ncp\n", "not a log entry"),
    ],
)
def test_malformed_proofs_are_refused(text: str, message: str) -> None:
    with pytest.raises(LogError, match=message):
        decode_tlog_proof(text)


def test_a_proof_with_cr_line_endings_is_still_read_as_a_proof() -> None:
    """Before, a proof whose header ended with a lone CR was not taken for a proof and
    `prov receipt verify` read it as a sidecar ("not valid JSON", exit 2)."""
    assert is_tlog_proof((HEADER + "\rextra AA==\r").encode())
    assert is_tlog_proof((HEADER + "\r\nextra AA==\r\n").encode())
    assert is_tlog_proof(("\ufeff" + HEADER + "\nextra AA==\n").encode())
    assert not is_tlog_proof((HEADER + "x\n").encode())
