"""Bounds of a signed note (c2sp.org/signed-note): its size, a key name, a signature's
base64. A note was bounded only to 100 signature lines, so a hostile log, witness or
mirror could send one line of 50 MB, or a key name of megabytes, and every reader
decoded and held it (a 50 MB signature line by an unknown key: accepted, 0.8 s and
+274 MiB; a 50 MB key name: accepted, 2.7 s; a malformed line was echoed whole into
the error, a 50 MB message). Now each is refused before it is decoded, in words that
quote none of it; a line by an unknown key within the bounds is still passed over (the
spec's "verifiers MUST ignore signatures from unknown keys"). The parser directly, then
each reader that takes a note from the network: a real `prov witness serve`, a tiled
log served over HTTP to `prov log audit --tiles`, and `prov verify --log-key` through a
gRPC relay in front of a real `prov serve`."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.core.errors import LogError
from provenance.log.checkpoint import (
    MAX_KEY_NAME_BYTES,
    MAX_NOTE_BYTES,
    MAX_SIGNATURE_BASE64,
    MAX_SIGNATURES,
    Checkpoint,
    LogSigner,
    NoteVerifier,
    check_key_name,
    generate_log_key,
    open_checkpoint,
)
from tests.conftest import SAMPLES, Cli, ServerProc, post_checkpoint, relay, witness_serve
from tests.memory import traced_in_child
from tests.test_cited_binding import VERIFY_FILE, _genuine_answer
from tests.test_tiles import _audit, _Quiet, _serving, _tiled_log

ORIGIN = "bounds.example/log"
#: Bytes of a hostile note's one field, as the issue has it.
HOSTILE_BYTES = 50_000_000


@pytest.fixture(scope="module")
def signer() -> LogSigner:
    return LogSigner(Ed25519PrivateKey.generate(), ORIGIN)


@pytest.fixture(scope="module")
def note(signer: LogSigner) -> str:
    return signer.sign(Checkpoint(ORIGIN, 5, bytes(32)))


def _line(name: str, raw: bytes) -> str:
    return f"\u2014 {name} {base64.b64encode(raw).decode()}\n"


#: Reads the file argv[1] as ``data`` (UTF-8), makes ``verifier`` of the key argv[3]
#: where given and ``fetch`` of the tiled log's folder ".", then evaluates the expression
#: argv[2] traced (`tests.memory`); tells whether it raised a LogError, its message, and
#: the peak of bytes traced.
_REFUSAL = """
from pathlib import Path
from provenance.core.errors import LogError
from provenance.log.checkpoint import NoteVerifier, open_checkpoint
from provenance.log.tiledir import fetcher
from provenance.witness import parse_cosigner_vkey
data = Path(sys.argv[1]).read_text(encoding="utf-8")
verifier = NoteVerifier.from_vkey(sys.argv[3]) if len(sys.argv) > 3 else None
fetch = fetcher(".")
e, _, peak = traced(lambda: eval(sys.argv[2]))
tell(isinstance(e, LogError), str(e), peak)
"""


def _refused(call: str, data: str, folder: Path, most_bytes: int, *vkey: str) -> str:
    """The LogError of the expression ``call`` (`_REFUSAL`: over ``data``, the verifier
    of ``vkey``, or ``fetch`` of ``folder``), which must allocate at most ``most_bytes``
    at its peak (Python's own allocations, tracemalloc, in a child process in ``folder``:
    `tests.memory`): refused before any copy of it; its message is short."""
    (folder / "refused.txt").write_text(data, encoding="utf-8")
    (refused, said, peak), _ = traced_in_child(_REFUSAL, ["refused.txt", call, *vkey], folder)
    assert refused, f"{call} raised no LogError: {said}"
    assert peak <= most_bytes, f"{peak:,} bytes allocated refusing {call}"
    assert len(said) < 400, said[:400]
    return str(said)


def _refused_within(note: str, vkey: str, folder: Path, most_bytes: int) -> str:
    """`_refused` of opening ``note`` with the verifier of ``vkey``."""
    return _refused("open_checkpoint(data, verifier)", note, folder, most_bytes, vkey)


# --- the parser --------------------------------------------------------------------


def test_unknown_signatures_at_the_bounds_are_still_passed_over(
    signer: LogSigner, note: str
) -> None:
    """Lines by unknown keys of the largest name and signature taken (an ML-DSA-87
    signature with its key id is 4,631 bytes, 6,176 of base64), as many as a note may
    carry: the note opens, each ignored."""
    name = "w" * MAX_KEY_NAME_BYTES
    wide = "\u00e9" * (MAX_KEY_NAME_BYTES // 2)  # 2 UTF-8 bytes each: the bound is bytes
    raw = bytes(MAX_SIGNATURE_BASE64 // 4 * 3)  # base64 of exactly the bound, no padding
    assert len(base64.b64encode(raw)) == MAX_SIGNATURE_BASE64
    padded = note + _line(wide, raw) + _line(name, bytes(4631))
    padded += "".join(_line(name, i.to_bytes(4, "big") + raw[4:]) for i in range(97))
    assert padded.count("\n\u2014 ") == MAX_SIGNATURES
    assert len(padded.encode()) <= MAX_NOTE_BYTES
    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    assert open_checkpoint(padded, verifier) == Checkpoint(ORIGIN, 5, bytes(32))


def test_a_signature_line_of_50_mb_is_refused_before_it_is_decoded(
    signer: LogSigner, note: str, tmp_path: Path
) -> None:
    """Before: accepted (an unknown key's line), decoded and re-encoded whole."""
    hostile = note + "\u2014 other.example/w " + "A" * HOSTILE_BYTES + "\n"
    said = _refused_within(hostile, signer.verifier_key(), tmp_path, 1 << 20)
    assert f"more than the {MAX_NOTE_BYTES:,} a signed note may hold" in said, said


def test_a_signature_over_its_bound_is_refused_in_a_note_within_its_own(
    signer: LogSigner, note: str, tmp_path: Path
) -> None:
    """A signature of more base64 than any known kind (`MAX_SIGNATURE_BASE64`), in a
    note under `MAX_NOTE_BYTES`: refused by its own bound, naming its key."""
    hostile = note + _line("other.example/w", bytes(MAX_SIGNATURE_BASE64 // 4 * 3 + 3))
    said = _refused_within(hostile, signer.verifier_key(), tmp_path, 256 << 10)
    assert said == (
        f"the signature of other.example/w is {MAX_SIGNATURE_BASE64 + 4:,} characters of"
        f" base64, more than the {MAX_SIGNATURE_BASE64:,} of any signature a note may carry"
    ), said


@pytest.mark.parametrize("size", [HOSTILE_BYTES, MAX_KEY_NAME_BYTES + 1])
def test_a_key_name_over_its_bound_is_refused_unquoted(
    signer: LogSigner, note: str, size: int, tmp_path: Path
) -> None:
    """Before: a key name of 50 MB by an unknown key was accepted, 2.7 s of checking it
    character by character for spaces."""
    hostile = note + _line("n" * size, bytes(68))
    said = _refused_within(hostile, signer.verifier_key(), tmp_path, 1 << 20)
    if size > MAX_NOTE_BYTES:
        assert "a signed note may hold" in said, said
    else:
        assert said.startswith(
            f"a key name of {size:,} characters, more than the {MAX_KEY_NAME_BYTES} bytes a"
            " note key name may have: 'nnnn"
        ), said


def test_key_names_are_bounded_in_bytes() -> None:
    check_key_name("a" * MAX_KEY_NAME_BYTES)
    check_key_name("\u00e9" * (MAX_KEY_NAME_BYTES // 2))
    for name in ("a" * (MAX_KEY_NAME_BYTES + 1), "\u00e9" * (MAX_KEY_NAME_BYTES // 2 + 1)):
        with pytest.raises(LogError, match=f"more than the {MAX_KEY_NAME_BYTES} bytes a note key"):
            check_key_name(name)
    with pytest.raises(LogError, match="more than the 256"):
        NoteVerifier.from_vkey("k" * 300 + "+00000000+" + "A" * 44)


def test_a_malformed_line_is_not_quoted_whole(signer: LogSigner, note: str, tmp_path: Path) -> None:
    """Before: 'signature line ... does not start with' quoted the whole line, a message
    as long as the note."""
    hostile = note + "x" * (MAX_NOTE_BYTES - len(note) - 10) + "\n"
    said = _refused_within(hostile, signer.verifier_key(), tmp_path, 1 << 20)
    assert said.startswith("signature line 'xxxx") and "does not start with" in said, said


# --- readers of notes from the network ---------------------------------------------


def test_a_witness_refuses_an_oversized_signature_line_with_400(tmp_path: Path) -> None:
    """`prov witness serve`: a genuine checkpoint with a 100 KB line by an unknown key
    (within the 128 KiB body) was cosigned; now 400, saying which bound. A line of
    the largest signature taken is still passed over: cosigned."""
    log = generate_log_key(tmp_path / "log.pem", ORIGIN)
    empty = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest())
    genuine = log.sign(empty)
    with witness_serve(tmp_path, log.verifier_key()) as (url, _):
        big = genuine + "\u2014 other.example/w " + "A" * 100_000 + "\n"
        status, text = post_checkpoint(url, "old 0\n\n" + big)
        assert status == 400, (status, text)
        assert "characters of base64, more than the 8,192" in text, text
        long_name = genuine + _line("n" * 300, bytes(68))
        status, text = post_checkpoint(url, "old 0\n\n" + long_name)
        assert status == 400 and "a key name of 300 characters" in text, (status, text)
        fits = genuine + _line("other.example/w", bytes(MAX_SIGNATURE_BASE64 // 4 * 3))
        status, text = post_checkpoint(url, "old 0\n\n" + fits)
        assert status == 200 and text.startswith("\u2014 witness.test/w1 "), (status, text)


@contextmanager
def _serving_checkpoint(folder: Path, checkpoint: bytes) -> Iterator[str]:
    """The tiled log in ``folder`` over HTTP, its checkpoint answered with ``checkpoint``."""

    class Padded(_Quiet):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = folder / self.path.lstrip("/")
            if self.path != "/checkpoint" and not path.is_file():
                self.send_error(404)
                return
            body = checkpoint if self.path == "/checkpoint" else path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with _serving(Padded) as url:
        yield url


def test_a_tiled_logs_checkpoint_padded_past_the_note_bound_is_no_tiled_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov log audit --tiles URL`: the genuine checkpoint with an unknown key's line of
    2 MB (under the 16 MiB of a tiled-log file) was audited OK; now exit 1, nothing
    signed within the bounds is there (and no more than the bound and a byte is read:
    tests/test_hostile_log_servers.py). Within them, the same log audits OK."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    _tiled_log(tmp_path / "tiles", signer, 300)
    genuine = (tmp_path / "tiles" / "checkpoint").read_bytes()
    vkey = signer.verifier_key()
    padded = genuine + b"\xe2\x80\x94 other.example/w " + b"A" * 2_000_000 + b"\n"
    with _serving_checkpoint(tmp_path / "tiles", padded) as url:
        rc = _audit("--state", str(tmp_path / "a.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert err.startswith(
        f"error: no tiled log at {url}: {url}checkpoint is more than the {MAX_NOTE_BYTES:,}"
        " bytes (1 MiB) a signed note may hold; it was read no further"
    ), err
    assert len(err) < 1000 and not (tmp_path / "a.json").exists(), err[:1000]
    fits = genuine + _line("other.example/w", bytes(6144)).encode()
    with _serving_checkpoint(tmp_path / "tiles", fits) as url:
        rc = _audit("--state", str(tmp_path / "a.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 0, err


def test_a_tiled_logs_folder_checkpoint_is_read_only_to_the_note_bound(tmp_path: Path) -> None:
    """A tiled log's folder whose `checkpoint` is 12 MiB: its fetcher (`prov log audit
    --tiles DIR`) read all of it, up to a tile's 16 MiB, before its size was checked
    against the 1 MiB a note may hold (12 MiB held); now no more than the bound and one
    byte is read, and the message names the bound."""
    (tmp_path / "checkpoint").write_bytes(b"A" * (12 << 20))
    said = _refused('fetch("checkpoint")', "", tmp_path, MAX_NOTE_BYTES + (256 << 10))
    assert said == (
        f"checkpoint is more than the {MAX_NOTE_BYTES:,} bytes (1 MiB) a signed note may"
        " hold; it was read no further"
    ), said


def test_verify_log_key_refuses_a_receipt_checkpoint_padded_past_the_bound(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov verify --log-key` through a relay whose VerifyFile answers the real server's
    verdict with a 7 MB line by an unknown key on its receipt's checkpoint (under the
    8 MiB reply): before, the line was decoded and the verdict shown (exit 0); now the
    evidence is refused (exit 3), in a message that quotes none of it."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0, (rc, out, err)
    answer = _genuine_answer(server.address, photo)
    with ProvenanceClient(server.address) as c:
        vkey = c.log_key()[0]
    checkpoint = answer.evidence.claim.receipt.checkpoint
    answer.evidence.claim.receipt.checkpoint = checkpoint + _line("pad.example/x", bytes(5 << 20))
    padded = answer.SerializeToString()
    with relay(server.address, {}, uploads={VERIFY_FILE: padded}) as address:
        capsys.readouterr()
        rc = prov_main(
            ["verify", "--no-detect", str(photo), "--server", address, "--log-key", vkey]
        )
        out, err = capsys.readouterr()
    assert rc == 3, (rc, out[:500], err[:500])
    assert "SERVER EVIDENCE REFUSED" in out + err, (out[:500], err[:500])
    assert "a signed note may hold" in out + err, (out[:500], err[:500])
    assert len(out) + len(err) < 4000, (out[:500], err[:500])


def _refused_key_within(parse: str, vkey: str, folder: Path, most_bytes: int) -> str:
    """`_refused` of ``parse(vkey)``, ``parse`` named."""
    return _refused(f"{parse}(data)", vkey, folder, most_bytes)


def test_a_verifier_key_of_megabytes_is_refused_before_it_is_decoded(
    signer: LogSigner, tmp_path: Path
) -> None:
    """A log key (a server's GetLogKey answer, up to its 8 MiB reply) or a witness key
    whose key material is megabytes of base64 was decoded whole before its length was
    found wrong; an Ed25519 key's material is 44 characters, checked first."""
    name, key_id, _ = signer.verifier_key().split("+", 2)
    big = f"{name}+{key_id}+" + "A" * 7_000_000
    said = _refused_key_within("NoteVerifier.from_vkey", big, tmp_path, 1 << 20)
    assert said == (
        "verifier key has 7,000,000 characters of key material, more than the 8,192 of any"
        " key (an Ed25519 key's are 44)"
    ), said
    said = _refused_key_within("parse_cosigner_vkey", big, tmp_path, 1 << 20)
    assert said.startswith("witness key has 7,000,000 characters of key material"), said
    said = _refused_key_within(
        "NoteVerifier.from_vkey", "n" * 7_000_000 + "+0+" + "A" * 44, tmp_path, 1 << 20
    )
    assert said.startswith("a key name of 7,000,000 characters, more than the 256 bytes"), said
    said = _refused_key_within(
        "parse_cosigner_vkey", "n" * 7_000_000 + "+" + "A" * 44, tmp_path, 1 << 20
    )
    assert "(7,000,045 characters) is not <name>+<key id>+<key>" in said, said


def test_another_origin_is_not_quoted_whole(signer: LogSigner) -> None:
    """A note signed by the log key whose origin line is another name of 500,000
    characters (a hostile server signs what it likes with the key it presents), and a
    genuine note opened against an origin of 500,000 characters (the web's GetLogKey
    answer): the message quotes at most 60 characters of each. Before: both whole."""
    verifier = NoteVerifier.from_vkey(signer.verifier_key())
    long_origin = "o" * 500_000
    text = f"{long_origin}\n5\n{base64.b64encode(bytes(32)).decode()}\n"
    with pytest.raises(LogError) as e:
        open_checkpoint(signer.sign_text(text), verifier)
    assert "is not 'bounds.example/log'" in str(e.value) and len(str(e.value)) < 300, e.value
    genuine = signer.sign(Checkpoint(ORIGIN, 5, bytes(32)))
    with pytest.raises(LogError) as e:
        open_checkpoint(genuine, verifier, origin=long_origin)
    assert str(e.value).startswith(f"checkpoint origin {ORIGIN!r} is not 'oooo"), e.value
    assert len(str(e.value)) < 300, len(str(e.value))
