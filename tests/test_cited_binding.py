"""A hostile or broken server must not make `prov verify` read a file as signed by
citing a genuine claim of other bytes: the claim, receipt, inclusion proof, checkpoint
and witness cosignatures of photo A, which a real `prov serve` logged from a real device
key and a real `prov witness serve` cosigned, sent as the answer for photo B. The client
checks that the claim a verdict rests on binds the bytes it uploaded. A real server and
witness, a real hostile gRPC server on a real port (it relays every other call to the
real server, so the log key, cosigned checkpoint and proofs are genuine), the real CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.log.checkpoint import generate_log_key
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import (
    FIXTURES,
    SAMPLES,
    Cli,
    ServerProc,
    relay,
    sign_sample,
    start_server,
    wait_cosigned,
    witness_serve,
)
from tests.memory import prov_in_child


@pytest.fixture
def witness(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A `prov witness serve` of the log whose key is made here at prov.db's default key
    path: (its URL, its cosigner key)."""
    log_vkey = generate_log_key(
        tmp_path / "prov.db.logkey.pem", "media-provenance.local/log"
    ).verifier_key()
    (tmp_path / "w").mkdir()
    with witness_serve(tmp_path / "w", log_vkey) as served:
        yield served


@pytest.fixture
def server(tmp_path: Path, witness: tuple[str, str]) -> Iterator[ServerProc]:
    """`prov serve` with that witness, quorum 1 (replaces conftest's `server`, so
    `enrolled` uses it)."""
    url, vkey = witness
    srv = start_server(tmp_path / "prov.db", "--witness", f"{url}={vkey}", "--witness-quorum", "1")
    yield srv
    srv.stop()


VERIFY_FILE = "/provenance.v1.Verification/VerifyFile"
LOOKUP = "/provenance.v1.Verification/Lookup"


def _forger(real: str, forged: bytes) -> Iterator[str]:
    """Yields the HOST:PORT of a server answering VerifyFile with ``forged``
    (bytes of a VerificationReport), and Lookup with it for each query; it relays every
    other unary call to the real server at ``real`` (`relay`)."""

    def lookup(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        report = pb.VerificationReport.FromString(forged)
        asked = pb.LookupRequest.FromString(request)
        results = [pb.LookupResult(ref=q.ref, report=report) for q in asked.queries]
        return bytes(pb.LookupResponse(results=results).SerializeToString())

    with relay(real, {LOOKUP: lookup}, uploads={VERIFY_FILE: forged}) as address:
        yield address


def server_answer(server: str, path: Path) -> pb.VerificationReport:
    """The real server's VerifyFile answer for ``path``."""
    with ProvenanceClient(server) as c:
        chunks, _, _ = c._watched_upload(path, pb.VerifyFileHeader())
        answer = c._verification.VerifyFile(chunks, timeout=180)
    assert isinstance(answer, pb.VerificationReport)
    return answer


def _genuine_answer(server: str, photo: Path) -> pb.VerificationReport:
    """The real server's VerifyFile answer for ``photo``, a SIGNED_ORIGINAL."""
    answer = server_answer(server, photo)
    assert answer.status == pb.SIGNED_ORIGINAL, answer
    return answer


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = prov_main(["verify", "--no-detect", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _scan_here(
    capsys: pytest.CaptureFixture[str], folder: Path, report: Path, server: str, *extra: str
) -> tuple[int, str, str]:
    """`prov scan FOLDER --report REPORT --server SERVER --workers 0 EXTRA...` in this
    process (a report already there is taken as it is): (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = prov_main(
        ["scan", str(folder), "--report", str(report), "--server", server, "--workers", "0", *extra]
    )
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("file_hash", ["as_sent_for_a", "rewritten_to_b"])
def test_a_claim_of_other_bytes_is_refused_not_read_as_signed(
    enrolled: Cli,
    server: ServerProc,
    witness: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    file_hash: str,
) -> None:
    """(h-bind52: before, `prov verify B`, with and without --witness, printed
    SIGNED_ORIGINAL, "cosigned by 1 of 1 witnesses", and exited 0.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
    wait_cosigned(server.address, 2)  # the enrollment and A's claim
    forged = _genuine_answer(server.address, a)
    if file_hash == "rewritten_to_b":  # the report's own file hash made B's
        forged.evidence.file_sha256 = hashlib.sha256(b.read_bytes()).digest()
    said = "answered for other bytes" if file_hash == "as_sent_for_a" else "a claim of other bytes"
    for address in _forger(server.address, forged.SerializeToString()):
        for extra in ((), ("--json",), ("--witness", witness[1])):
            rc, out, err = _verify(capsys, str(b), "--server", address, *extra)
            assert rc == 3, (extra, rc, out, err)
            assert "status     SIGNED" not in out and '"status": "SIGNED' not in out, out
            assert "cosigned by" not in out, out
            if "--json" in extra:
                assert '"status": null' in out and said in out, out
            assert "SERVER EVIDENCE REFUSED:" in err and said in err, err
            assert "Traceback" not in err, err
        if file_hash == "as_sent_for_a":  # the honest answer for A itself: unchanged
            rc, out, err = _verify(capsys, str(a), "--server", address, "--witness", witness[1])
            assert rc == 0 and "SIGNED_ORIGINAL" in out, (rc, out, err)
            assert "cosigned by 1 of 1 witnesses" in out, out
            with ProvenanceClient(server.address) as c:  # and with the log's key pinned
                pinned = ("--witness", witness[1], "--log-key", c.log_key()[0])
            rc, out, err = _verify(capsys, str(a), "--server", address, *pinned)
            assert rc == 0 and "cosigned by 1 of 1 witnesses" in out, (rc, out, err)
            assert "verified here with --log-key" in out, out


@pytest.mark.parametrize("path", ["lookup", "upload"])
def test_scan_gives_a_claim_of_other_bytes_an_error_row(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
) -> None:
    """`prov scan` of photo B against a server citing A's claim, in its Lookup answer
    (B's hash as the report's file hash) and, for B with a sidecar (uploaded, as `prov
    verify` does), in its VerifyFile answer: B's row has no status and says why
    (h-bind52: before, SIGNED_ORIGINAL rows), and the scan exits 3."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    folder = tmp_path / "photos"
    folder.mkdir()
    b = Path(shutil.copy(SAMPLES / "chelsea.png", folder / "chelsea.png"))
    if path == "upload":  # any sidecar makes scan upload the file: A's will do
        shutil.copy(f"{a}.prov", f"{b}.prov")
    forged = _genuine_answer(server.address, a)
    forged.evidence.file_sha256 = hashlib.sha256(b.read_bytes()).digest()
    report = tmp_path / "scan.jsonl"
    for address in _forger(server.address, forged.SerializeToString()):
        rc, out, err = _scan_here(capsys, folder, report, address)
        # as `prov verify` exits 3 for the file (cited53: before, the scan exited 0)
        assert rc == 3 and "SERVER EVIDENCE REFUSED:" in err, (rc, out, err)
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    [row] = [r for r in rows if r.get("path", "").endswith("chelsea.png")]
    assert row["status"] is None and row["evidence_checked"] == "refused", row
    assert "the server cited a claim of other bytes" in row["error"], row


def _big_c2pa_png(folder: Path, padding: int) -> Path:
    """The shared C2PA-signed PNG with a private ancillary chunk of ``padding`` bytes
    before IEND: a large file whose manifest store `strip_manifest_store` removes."""
    data = (FIXTURES / "c2pa" / "generated" / "gen_ed25519_capture.png").read_bytes()
    iend = data.rindex(b"IEND") - 4
    body = b"prVt" + bytes(padding)
    chunk = struct.pack(">I", padding) + body + struct.pack(">I", zlib.crc32(body))
    path = folder / "big_c2pa.png"
    path.write_bytes(data[:iend] + chunk + data[iend:])
    return path


def test_a_claim_of_other_bytes_for_a_large_c2pa_file_costs_bounded_memory(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """A hostile server answering SIGNED_ORIGINAL for a large file with Content
    Credentials, citing a claim of other bytes (its report's file hash made the file's),
    makes the client hash the file without its manifest store: that second read must not
    hold the file in memory (a 2 GB video export would need 6 GB). Refused, exit 3, with
    the Python heap's peak a small part of the file's size. (revverify52: before, the
    file was read whole, copied without its store and copied again: a peak of about 3x
    the file, 144 MiB for this 48 MiB PNG.) Measured in a child process (`tests.memory`:
    tracemalloc counts every thread, and in the test's own the forger's would count)."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    big = _big_c2pa_png(tmp_path, 48 * 1024**2)
    forged = _genuine_answer(server.address, a)
    forged.evidence.file_sha256 = hashlib.sha256(big.read_bytes()).digest()
    for address in _forger(server.address, forged.SerializeToString()):
        verify = ["verify", "--no-detect", str(big), "--server", address]
        rc, peak, err = prov_in_child(verify, tmp_path)
        assert rc == 3 and "a claim of other bytes" in err, (rc, err)
        assert "without its Content Credentials" in err, err  # the stripped hash was made
        assert peak < big.stat().st_size // 4, (peak, big.stat().st_size)


def test_witness_policy_is_not_skipped_by_an_answer_without_its_receipt(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """`prov verify --witness` checks the policy on the receipt of the claim a verdict
    rests on; a hostile server must not skip that check by leaving the receipt out of a
    SIGNED_ORIGINAL (refused, exit 3, as `--log-key` refuses it), nor by marking the
    claim "not in the log" while its receipt is there (the policy is checked on it). A
    real server's genuine answer for photo A, so relayed and edited by a hostile server.
    (h-hostsrv58: before, both printed SIGNED_ORIGINAL, "witnesses: nothing to check",
    and exited 0; the second also with --log-key.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    with ProvenanceClient(server.address) as c:
        log_vkey = c.log_key()[0]
    stranger_cosigner = _cosigner_key("witness.example")
    no_receipt = _genuine_answer(server.address, a)
    no_receipt.evidence.claim.ClearField("receipt")
    for address in _forger(server.address, no_receipt.SerializeToString()):
        for extra in ((), ("--json",)):
            rc, out, err = _verify(
                capsys, str(a), "--server", address, "--witness", witness[1], *extra
            )
            assert rc == 3, (extra, rc, out, err)
            assert "SERVER EVIDENCE REFUSED:" in err and "--witness" in err, err
            assert "SIGNED_ORIGINAL citing a claim without a receipt" in err, err
            assert "witnesses: nothing" not in out and "Traceback" not in err, (out, err)
    not_in_log = _genuine_answer(server.address, a)
    not_in_log.evidence.claim.in_log = False
    for address in _forger(server.address, not_in_log.SerializeToString()):
        for pinned in ((), ("--log-key", log_vkey)):
            rc, out, err = _verify(
                capsys, str(a), "--server", address, "--witness", stranger_cosigner, *pinned
            )
            assert rc == 14, (pinned, rc, out, err)
            assert "POLICY NOT MET" in err, err
        rc, out, err = _verify(capsys, str(a), "--server", address, "--witness", witness[1])
        assert rc == 0 and "cosigned by 1 of 1 witnesses" in out, (rc, out, err)


def _signed_again(cli: Cli, tmp_path: Path, photo: Path) -> None:
    """Sign a copy of ``photo``'s bytes again with ``cli``'s device (a second claim of
    the same bytes: the server's honest answer lists it as also signed)."""
    (tmp_path / "again").mkdir()
    again = Path(shutil.copy(photo, tmp_path / "again" / photo.name))
    rc, _, err = cli("sign", str(again))
    assert rc == 0, err


def _cosigner_key(name: str) -> str:
    """The cosigner key (`prov witness serve`'s kind) of a new Ed25519 key named
    ``name``: a witness that cosigned nothing of this log."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from provenance.witness import cosigner_vkey

    public = Ed25519PrivateKey.generate().public_key()
    return cosigner_vkey(name, public.public_bytes(Encoding.Raw, PublicFormat.Raw))


def test_an_also_signed_claim_of_other_bytes_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """The "also" lines (`evidence.other_claims`: other logged claims of the same bytes)
    name devices as having signed the file: a hostile server adding the genuine, logged
    claim of photo B to its honest answer for photo A is refused as citing a claim of
    other bytes (exit 3), with --log-key too. (h-hostsrv58: before, exit 0, SIGNED_ORIGINAL
    with "also  leaf 2: device ..." under "receipt verified here with --log-key".)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b, _ = sign_sample(enrolled, tmp_path, "chelsea.png")
    forged = _genuine_answer(server.address, a)
    forged.evidence.other_claims.append(_genuine_answer(server.address, b).evidence.claim)
    log_vkey = _refused_either_way(
        capsys, server, a, forged, "claim of other bytes", "listing as also signed a claim"
    )
    _signed_again(enrolled, tmp_path, a)
    unproven = _genuine_answer(server.address, a)  # A's second claim listed, its proof wrong
    assert len(unproven.evidence.other_claims) == 1, unproven
    unproven.evidence.other_claims[0].receipt.inclusion_proof[0] = bytes(32)
    for address in _forger(server.address, unproven.SerializeToString()):
        rc, out, err = _verify(capsys, str(a), "--server", address, "--log-key", log_vkey)
        assert rc == 3, (rc, out, err)
        assert "the receipt of another claim it lists as also signed" in err, err
        assert "does not verify with the log key" in err and "also" not in out, (out, err)


def test_a_wrong_pinned_log_key_is_named_on_the_claim_the_verdict_cites(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """A --log-key of another log fails every receipt; the refusal names the receipt of
    the claim the verdict rests on, not one of the claims listed as also signed (a new
    user's pass, 7 December: before, with a second claim of the same bytes logged, exit 3
    naming "the receipt of another claim it lists as also signed")."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    _signed_again(enrolled, tmp_path, a)
    other_log = tmp_path / "other"
    other_log.mkdir()
    wrong = generate_log_key(other_log / "key.pem", "media-provenance.local/log").verifier_key()
    rc, out, err = _verify(capsys, str(a), "--server", server.address, "--log-key", wrong)
    assert rc == 3, (rc, out, err)
    assert "the receipt of the claim it cites" in err, err
    assert "another claim it lists as also signed" not in err, err


def _resized(photo: Path, folder: Path) -> Path:
    """A re-encoded half-size copy of ``photo`` in ``folder`` (a near copy: DERIVED)."""
    from PIL import Image

    out = folder / f"small-{photo.stem}.jpg"
    with Image.open(photo) as im:
        im.resize((im.width // 2, im.height // 2)).save(out, quality=85)
    return out


def test_scan_refuses_an_also_signed_claim_of_other_bytes_in_a_near_copys_answer(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """A hostile server adding photo B's genuine logged claim, as "also signed", to its
    honest DERIVED answer for a resized copy of A: `prov verify` refuses it (check_cited
    looks at the "also" claims of any verdict), and so must `prov scan`, with --log-key
    too. (revhost58: before, the scan's row read DERIVED with B's claim among its
    other_claims, exit 0: the scan called check_cited only for verdicts resting on a
    hard binding.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    b, _ = sign_sample(enrolled, tmp_path, "chelsea.png")
    folder = tmp_path / "photos"
    folder.mkdir()
    copy = _resized(a, folder)
    forged = server_answer(server.address, copy)
    assert forged.status == pb.DERIVED, forged
    forged.evidence.other_claims.append(_genuine_answer(server.address, b).evidence.claim)
    with ProvenanceClient(server.address) as c:
        log_vkey = c.log_key()[0]
    report = tmp_path / "scan.jsonl"
    for address in _forger(server.address, forged.SerializeToString()):
        rc, out, err = _verify(capsys, str(copy), "--server", address)
        assert rc == 3 and "listing as also signed a claim" in err, (rc, out, err)
        for extra in ((), ("--log-key", log_vkey)):
            report.unlink(missing_ok=True)
            rc, out, err = _scan_here(capsys, folder, report, address, *extra)
            rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
            [row] = [r for r in rows if r.get("path", "").endswith(copy.name)]
            assert rc == 3 and row["status"] is None, (extra, rc, row, err)
            assert "listing as also signed a claim" in row["error"], row


def test_an_also_signed_claim_without_a_receipt_is_refused_with_the_log_key(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """With --log-key every "also" claim's receipt is proven; one listed without a receipt
    (an honest server lists logged claims only, each with its receipt) cannot be, so the
    answer is refused, as a cited claim without a receipt is (exit 3), by `prov verify`
    and `prov scan`. Without --log-key it is the server's word, shown "not in the log".
    (revhost58: before, with --log-key, exit 0 and "also  not in the log: device ..."
    under "receipt verified here with --log-key".)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    _signed_again(enrolled, tmp_path, a)
    forged = _genuine_answer(server.address, a)  # A's second claim listed, its receipt gone
    assert len(forged.evidence.other_claims) == 1, forged
    forged.evidence.other_claims[0].ClearField("receipt")
    with ProvenanceClient(server.address) as c:
        log_vkey = c.log_key()[0]
    report = tmp_path / "scan.jsonl"
    for address in _forger(server.address, forged.SerializeToString()):
        rc, out, err = _verify(capsys, str(a), "--server", address, "--log-key", log_vkey)
        assert rc == 3, (rc, out, err)
        assert "another claim it lists as also signed" in err and "no receipt" in err, err
        rc, out, err = _scan_here(capsys, tmp_path, report, address, "--log-key", log_vkey)
        rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
        found = [r for r in rows if r.get("path", "").endswith("rocket.jpg")]  # A, its copy
        assert rc == 3 and len(found) == 2, (rc, rows, err)
        for row in found:
            assert row["status"] is None, row
            assert "another claim it lists as also signed" in row["error"], row


def test_a_claim_listed_twice_is_refused(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """An honest server lists each claim of the bytes once (`rank_exact` keeps one per
    claim hash), the cited one never among the "also" lines. A hostile server listing
    the cited claim again as also signed (its genuine receipt: every check passes) makes
    one signer look like two: refused (exit 3), with --log-key too. (revhost58: before,
    exit 0, "also  leaf 1: device ..." for the cited claim's own leaf.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    forged = _genuine_answer(server.address, a)
    forged.evidence.other_claims.append(forged.evidence.claim)
    _refused_either_way(capsys, server, a, forged, "more than once")


def _refused_either_way(
    capsys: Any, server: ServerProc, photo: Path, forged: pb.VerificationReport, *words: str
) -> str:
    """`prov verify` of ``photo`` against a server answering ``forged`` exits 3 without
    --log-key and with the real server's key, its error holding each of ``words``, no
    "also" line shown; returns that key."""
    with ProvenanceClient(server.address) as c:
        log_vkey = c.log_key()[0]
    for address in _forger(server.address, forged.SerializeToString()):
        for extra in ((), ("--log-key", log_vkey)):
            rc, out, err = _verify(capsys, str(photo), "--server", address, *extra)
            assert rc == 3, (extra, rc, out, err)
            assert "SERVER EVIDENCE REFUSED:" in err and "also" not in out, (out, err)
            assert all(w in err for w in words), err
    return log_vkey
