"""An attacker's review of the log's offline side (session 29): receipts as C2SP
tlog-proofs checked by `prov receipt verify` against witness policies, witness state,
and tree sizes at the edge of a uint64.

Real things throughout: a `ProvenanceService` on a SQLite file issues the receipt with
its own log key; witness keys are real Ed25519 keys and their lines are made by the
witness's own `cosign`; the CLI runs in-process as `prov`."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import main as prov_main
from provenance.core.binding import PDQ_ALGORITHM, PerceptualHash
from provenance.core.claims import Receipt, SignedClaim
from provenance.core.errors import ClaimError, ConfigError, LogError
from provenance.core.merkle import EMPTY_ROOT
from provenance.core.video_match import QUERY_RATE_HZ, match_video
from provenance.log.checkpoint import Checkpoint, LogSigner, generate_log_key, parse_tree_size
from provenance.log.tiledir import export_tiles
from provenance.log.tlogproof import encode_tlog_proof
from provenance.media.video.decode import sample_frames
from provenance.media.video.transcode import transcode
from provenance.wire import convert as wire
from provenance.witness import (
    MAX_BODY_BYTES,
    Witness,
    check_quorum,
    cosign,
    cosignature_key_id,
    cosigner_vkey,
)
from provenance.witness.client import Cosigner, WitnessSpec
from tests.conftest import post_checkpoint, witness_serve, write_video
from tests.inproc import InProc


def _witness(tmp_path: Path, name: str) -> tuple[LogSigner, str]:
    """A witness key (file in ``tmp_path``) and its cosigner verifier key."""
    signer = generate_log_key(tmp_path / f"{name.replace('/', '_')}.pem", name)
    return signer, cosigner_vkey(signer.name, signer.public_key)


def _receipt(inproc: InProc) -> tuple[Receipt, bytes]:
    """The receipt of a freshly logged claim, and the note text of its checkpoint (what
    a witness cosigns)."""
    receipt = inproc.submit(inproc.enroll().next_claim()).receipt
    return receipt, receipt.checkpoint[: receipt.checkpoint.rfind("\n\n") + 1].encode()


def _proof_file(tmp_path: Path, receipt: Receipt, lines: str) -> Path:
    """``receipt`` as a tlog-proof file whose checkpoint also carries the cosignature
    ``lines``."""
    path = tmp_path / "leaf.tlog-proof"
    path.write_text(encode_tlog_proof(replace(receipt, checkpoint=receipt.checkpoint + lines)))
    return path


@pytest.mark.parametrize("timestamp", [2**40, 2**63 - 1, 2**64 - 1])
def test_a_cosignature_time_past_any_date_counts_as_no_cosignature(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str], timestamp: int
) -> None:
    """A policy of 2 witnesses, quorum 1: w1 cosigned properly, w2 with a timestamp no
    date holds (year 36812; 2^63 - 1; 2^64 - 1, above the 2^63 - 1 tlog-cosignature
    allows). w1 meets the policy and w2 counts as not having cosigned. Before, reading
    w2's time raised ValueError (a traceback), OSError or OverflowError out of
    `prov receipt verify`: one witness could make every check of the policy fail."""
    w1, k1 = _witness(tmp_path, "witness.test/w1")
    w2, k2 = _witness(tmp_path, "witness.test/w2")
    receipt, body = _receipt(inproc)
    lines = cosign(w1, body, int(time.time())) + cosign(w2, body, timestamp)
    path = _proof_file(tmp_path, receipt, lines)
    vkey = inproc.service.signer.verifier_key()
    verify = ["receipt", "verify", str(path), "--log-key", vkey, "--witness", k1, "--witness", k2]
    assert prov_main([*verify, "--witness-quorum", "1"]) == 0
    assert "cosigned by 1 of 2 witnesses: witness.test/w1 at" in capsys.readouterr().out
    assert prov_main(verify) == 14
    err = capsys.readouterr().err
    assert "1 of the 2 witness cosignatures required" in err
    assert f"timestamp {timestamp}" in err


def test_one_witness_cannot_fill_two_places_of_a_policy(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2-of-2 policy must take two witnesses. Before, the same key given twice counted
    its one cosignature twice; and one key under two names (an Ed25519 cosignature does
    not commit to the name, tlog-cosignature "Ed25519 signed message") let anyone copy
    w1's line under the second name with that name's key id, and pass as two. Both are
    now a usage error naming the key; `check_quorum` refuses such a policy."""
    w1, k1 = _witness(tmp_path, "witness.test/w1")
    receipt, body = _receipt(inproc)
    line = cosign(w1, body, int(time.time()))
    alias = "witness.test/w1-again"
    raw = base64.b64decode(line.split(" ")[2])
    copied = cosignature_key_id(alias, w1.public_key) + raw[4:]
    relabelled = f"\u2014 {alias} {base64.b64encode(copied).decode()}\n"
    k_alias = cosigner_vkey(alias, w1.public_key)
    note = receipt.checkpoint + line + relabelled
    path = _proof_file(tmp_path, receipt, line + relabelled)
    vkey = inproc.service.signer.verifier_key()
    for policy in ([k1, k1], [k1, k_alias]):
        with pytest.raises(LogError, match="the same public key"):
            check_quorum(note, policy, 2)
        args = ["receipt", "verify", str(path), "--log-key", vkey]
        for k in policy:
            args += ["--witness", k]
        assert prov_main(args) == 2
        err = " ".join(w for w in capsys.readouterr().err.split() if w != "\u2502")  # unboxed
        assert "witness.test/w1 and witness.test/w1" in err and "the same public key" in err
    # the log server's own policy (prov serve --witness URL=KEY) is refused the same way
    specs = [WitnessSpec("http://127.0.0.1:1", k) for k in (k1, k_alias)]
    with pytest.raises(ConfigError, match="the same public key"):
        Cosigner(specs, 2, lambda old, new: [], lambda: None)


def test_tree_sizes_above_a_uint64_are_malformed(tmp_path: Path) -> None:
    """A tree size is a uint64 (tlog-checkpoint; Go's note readers use ParseUint(64)).
    20 digits were taken whatever their value, so a checkpoint of 2^64 leaves (signed
    by the log) was cosigned by `prov witness serve` and kept as its state, and an
    ``old`` size of 2^64 read as a number: both are now 400, malformed. 2^64 - 1 is
    still a size."""
    assert parse_tree_size(str(2**64 - 1)) == 2**64 - 1
    for text in (str(2**64), "9" * 20):
        with pytest.raises(LogError, match="at most 2\\^64 - 1"):
            parse_tree_size(text)
    with pytest.raises(LogError, match="at most 2\\^64 - 1"):
        Checkpoint("log.test/big", 2**64, bytes(32))
    signer = generate_log_key(tmp_path / "log.pem", "log.test/big")
    with witness_serve(tmp_path, signer.verifier_key()) as (url, _):
        root = base64.b64encode(bytes(32)).decode()
        huge = signer.sign_text(f"log.test/big\n{2**64}\n{root}\n")  # signed by the log
        status, text = post_checkpoint(url, f"old 0\n\n{huge}")
        assert status == 400 and "at most 2^64 - 1" in text, (status, text)
        top = signer.sign(Checkpoint("log.test/big", 2**64 - 1, bytes(32)))
        status, text = post_checkpoint(url, f"old {2**64}\n\n{top}")
        assert status == 400 and "'old <size>'" in text, (status, text)
        status, text = post_checkpoint(url, f"old 0\n\n{top}")
        assert status == 200, text


def test_a_witness_makes_its_new_state_durable_before_it_cosigns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The witness must persist a new checkpoint before it answers (tlog-witness
    "add-checkpoint"): its state file is written, fsynced and renamed into place, and
    the rename itself is only durable once the folder is fsynced. Without that, a power
    cut after the answer could bring back the older state, and the witness would then
    cosign a fork of the tree it had cosigned (a rolled-back witness). The real
    `os.fsync` and `os.replace` run; the test only records what was synced, in order."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/w")
    w, _ = _witness(tmp_path, "witness.test/w1")
    state_dir = tmp_path / "wstate"
    witness = Witness(w, [log.verifier_key()], state_dir)
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        folder = stat.S_ISDIR(st.st_mode) and os.path.samestat(st, os.stat(state_dir))
        events.append("fsync state folder" if folder else "fsync file")
        real_fsync(fd)

    def replace_(src: str | Path, dst: str | Path) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace_)
    note = log.sign(Checkpoint("log.test/w", 1, bytes(32)))
    assert witness.add_checkpoint(f"old 0\n\n{note}".encode()).status == 200
    assert events == ["fsync file", "rename", "fsync state folder"]


def test_a_claim_too_large_for_an_entry_bundle_is_refused_before_the_log(
    inproc: InProc, tmp_path: Path
) -> None:
    """tlog-tiles entry bundles prefix each entry with a uint16 length, so an entry over
    65,535 bytes can never be exported. A claim of 4,096 video frame hashes (what
    `prov sign` made of a 68-minute video; 213 KB) was logged, and from then on
    `prov log export-tiles` failed on it at every run: the log is append-only, so its
    tiled copy stopped there for good. A claim carries at most 1,000 frames now, and
    one whose entry would be too large for another reason (a 64 KiB media type) is
    refused too (ClaimError), before the writer; 1,000 frames are logged and exported."""
    dev = inproc.enroll()

    def claim(frames: int, media_type: str = "video/mp4") -> SignedClaim:
        soft = tuple(PerceptualHash(PDQ_ALGORITHM, os.urandom(32), 100, float(i)) for i in
                     range(frames))  # fmt: skip
        return dev.next_claim(
            media_type=media_type, soft_bindings=soft, duration_seconds=float(frames)
        )

    cases: list[tuple[Callable[[], SignedClaim], str]] = [
        (lambda: claim(4096), "claim has 4096 soft bindings; the limit is 1000"),
        (lambda: claim(10, "video/" + "x" * 65_536), "the log holds entries of at most 65,535"),
    ]
    for refused, why in cases:
        seq, last = dev.seq, dev.last
        with pytest.raises(ClaimError, match=why):
            inproc.submit(refused())
        dev.seq, dev.last = seq, last  # the refused claim's number is free again
    fits = inproc.submit(claim(1000)).receipt
    assert 50_000 < len(fits.log_entry) <= 65_535
    result = export_tiles(inproc.service.store, tmp_path / "tiles")
    assert (result.size, result.bundles_written) == (2, 1)  # the enrollment and the claim


def test_a_long_video_is_sampled_sparsely_enough_to_be_logged(
    inproc: InProc, tmp_path: Path
) -> None:
    """`prov sign` of a video of more than 1,000 seconds: its 1 Hz samples would be more
    frames than a claim carries (and, before, a log entry too large for the tiles), so
    every k-th sample is kept (here every 2nd of 1,201: the samples of 0.5 Hz) and the
    claim says that rate. A real 1,201-second video (16x16 pixels, one frame a second,
    each a different grey) measured as `prov sign` does, logged and exported."""
    path = tmp_path / "long.mp4"

    def grey(i: int) -> np.ndarray:
        pixels = np.full((16, 16, 3), (i * 37) % 256, dtype=np.uint8)
        pixels[: i % 16] = 255 - pixels[0, 0]  # a bar that moves: frames differ
        return pixels

    write_video(path, map(grey, range(1201)))
    dev = inproc.enroll()
    signed = dev.claim_for_file(path)
    claim = wire.decode_claim(signed.claim_bytes)
    assert len(claim.soft_bindings) == 601  # samples 0, 2, ..., 1200
    assert claim.frame_sample_rate == 0.5
    times = [h.timestamp_seconds for h in claim.soft_bindings]
    assert times == [2.0 * i for i in range(601)]
    inproc.submit(signed)
    assert export_tiles(inproc.service.store, tmp_path / "tiles").size == 2


def test_a_revocation_reason_too_long_for_an_entry_bundle_is_refused(
    inproc: InProc, tmp_path: Path
) -> None:
    """A revocation is logged as a key-history entry, with its reason: a 70,000-character
    reason (a pasted document) made an entry no tlog-tiles bundle holds, and the tiled
    copy of the log stopped at it for good. Reasons are at most 1,024 bytes (UTF-8),
    refused before anything is logged; one of 1,024 is logged and exported."""
    dev = inproc.enroll()
    with pytest.raises(ClaimError, match="reason is 70,000 bytes; at most 1,024"):
        inproc.service.revoke(dev.device_id, "x" * 70_000, None)
    with pytest.raises(ClaimError, match="reason is 1,026 bytes"):
        inproc.service.revoke(dev.device_id, "é" * 513, None)
    assert not inproc.service.get_device(dev.device_id).revoked
    inproc.service.revoke(dev.device_id, "é" * 512, None)
    assert export_tiles(inproc.service.store, tmp_path / "tiles").size == 2


def test_two_witness_processes_on_one_state_folder_take_turns(tmp_path: Path) -> None:
    """The check of the old size and the save of the new checkpoint must be one atomic
    step (tlog-witness "add-checkpoint", the race of steps 1-6), also between two
    `prov witness serve` of one --state folder (a restart that overlaps the old
    process, two ports for one witness): each took only its own thread lock, so one
    could check size N, the other save N+K and cosign it, and the first then save N
    over it, rolling the witness back K leaves. The step now holds an flock on the
    folder's lock file: while another holder has it, a request waits and saves
    nothing."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/w")
    w, _ = _witness(tmp_path, "witness.test/w1")
    state_dir = tmp_path / "wstate"
    witness = Witness(w, [log.verifier_key()], state_dir)
    note = log.sign(Checkpoint("log.test/w", 1, bytes(32)))
    answers: list[int] = []
    with open(state_dir / ".lock", "a") as other:  # what the other process holds
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        asking = threading.Thread(
            target=lambda: answers.append(
                witness.add_checkpoint(f"old 0\n\n{note}".encode()).status
            )
        )
        asking.start()
        asking.join(1.0)
        assert asking.is_alive() and not answers and witness.latest("log.test/w") is None
        fcntl.flock(other.fileno(), fcntl.LOCK_UN)
    asking.join(30)
    assert answers == [200]
    latest = witness.latest("log.test/w")
    assert latest is not None and latest.size == 1


@pytest.mark.parametrize("every", [2, 3])
def test_a_sparser_claim_still_matches_re_encoded_trimmed_and_converted_copies(
    tmp_path: Path, every: int
) -> None:
    """What the sparser sampling of a long video gives up: the real sample clip's 1 Hz
    frames thinned to every 2nd or 3rd (0.5 or 0.33 Hz, as `prov sign` does past 1,000
    s) still match its smaller re-encode, a 3 s trim and a 25 fps conversion, hashed
    at every frame as a verifier does (`match_video`)."""
    sample = Path(__file__).resolve().parents[1] / "clients" / "samples" / "fabric_pattern.mp4"
    claim = [f.pdq for f in sample_frames(sample).frames][::every]
    copies: dict[str, dict[str, Any]] = {
        "small": dict(width=180, height=320, crf=34),
        "trim": dict(width=180, height=320, start_s=2.1, end_s=5.0, crf=30),
        "fps25": dict(width=180, height=320, crf=30, frame_rate=25),
    }
    for name, kwargs in copies.items():
        copy = tmp_path / f"{name}.mp4"
        transcode(sample, copy, encoder_options={"preset": "ultrafast"}, **kwargs)
        query = [f.pdq for f in sample_frames(copy, rate_hz=QUERY_RATE_HZ).frames]
        found = match_video(query, claim)
        assert found.matched and found.coverage == 1.0, (name, found)


def test_an_add_checkpoint_without_a_checkpoint_is_malformed(tmp_path: Path) -> None:
    """A body whose checkpoint is missing, or whose first line (the origin) is empty, is
    a malformed request (400, tlog-witness), not a log this witness does not know (before:
    404 "this witness does not witness the log ''"; review att36)."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/w")
    w, _ = _witness(tmp_path, "witness.test/w1")
    witness = Witness(w, [log.verifier_key()], tmp_path / "wstate")
    note = log.sign(Checkpoint("log.test/w", 1, bytes(32)))
    for body in ("old 0\n\n", "old 0\n\n\n1\nAAAA\n\n", f"old 0\n\n\n{note}"):
        answer = witness.add_checkpoint(body.encode())
        assert (answer.status, answer.body) == (
            400,
            "malformed add-checkpoint body: the checkpoint's first line, its origin, is empty\n",
        ), body
    assert witness.add_checkpoint(f"old 0\n\n{note}".encode()).status == 200


def test_an_add_checkpoint_body_that_is_not_utf8_is_named_in_our_words(tmp_path: Path) -> None:
    """A body that is not UTF-8 is a malformed request (400) naming the byte and where it
    stands (h-att41; before: Python's codec message, "'utf-8' codec can't decode byte 0xff
    in position 0: invalid start byte")."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/w")
    w, _ = _witness(tmp_path, "witness.test/w1")
    witness = Witness(w, [log.verifier_key()], tmp_path / "wstate")
    note = log.sign(Checkpoint("log.test/w", 1, bytes(32)))
    for body, said in (
        (b"\xff\xfe", "byte 0xff at offset 0"),
        (
            f"old 0\n\n{note}".encode().replace(b"log.test/w\n", b"log.test/\xe9\n", 1),
            "byte 0xe9 at offset 16",
        ),
    ):
        answer = witness.add_checkpoint(body)
        assert (answer.status, answer.body) == (
            400,
            f"malformed add-checkpoint body: the body is not UTF-8 text ({said})\n",
        ), body


def test_two_witness_keys_one_name_and_key_id_are_refused_as_ambiguous() -> None:
    """A cosignature line is found by its name and 4-byte key id (tlog-cosignature), and
    `verify_cosignature` takes the first such line. Two keys of one name whose ids
    collide (found by a birthday search over 10^5 keys: 11 s here; seeds below) were a
    valid policy, and then only one of the two could ever count: the first line failed
    the other's key. Go's note verifiers refuse such a pair ("ambiguous key"); so does
    `check_policy` now, naming both, and with it `check_quorum`, `prov verify --witness`
    and `prov receipt verify --witness` (`prov serve --witness` refused two witnesses of
    one name already)."""
    signers = [
        LogSigner(
            Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"grind%d" % n).digest()),
            "witness.test/w",
        )
        for n in (43830, 97849)
    ]
    keys = [cosigner_vkey(s.name, s.public_key) for s in signers]
    assert keys[0] != keys[1] and keys[0].split("+")[1] == keys[1].split("+")[1]
    log = LogSigner(Ed25519PrivateKey.generate(), "log.test/ambiguous")
    note = log.sign(Checkpoint(log.name, 0, EMPTY_ROOT))
    body = note[: note.rfind("\n\n") + 1].encode()
    cosigned = note + "".join(cosign(s, body, 1_700_000_000) for s in signers)
    for policy in (keys, keys[::-1]):
        with pytest.raises(LogError, match="the same name and key id") as info:
            check_quorum(cosigned, policy, 2)
        assert "cosignatures required" not in str(info.value), info.value


def test_a_witness_answers_a_body_too_large_413_and_a_malformed_note_400(
    tmp_path: Path,
) -> None:
    """`prov witness serve`: a body over its 128 KiB is 413 Content Too Large, not a 400
    that reads as a malformed request; a checkpoint with a control character in its
    origin (a NUL, a tab) is a malformed signed note (400, as any other malformed note,
    c2sp.org/signed-note allows no control character but newline), not 404 "this witness
    does not witness the log '\\x00'", which sent its sender looking for a log that was
    never named. A well-formed checkpoint of another log is still 404."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/w")
    generate_log_key(tmp_path / "witness.pem", "witness.test/w1")
    note = log.sign(Checkpoint("log.test/w", 1, bytes(32)))
    other = LogSigner(Ed25519PrivateKey.generate(), "other.test/log")
    with witness_serve(tmp_path, log.verifier_key()) as (url, _):
        status, text = post_checkpoint(url, "old 0\n\n" + note + "x" * 200_000)
        assert status == 413 and "larger than 131072 bytes" in text, (status, text)
        for damaged in ("log.test/w\x00", "log.test\tw", "\x01"):
            body = f"old 0\n\n{note}".replace("log.test/w\n", damaged + "\n", 1)
            status, text = post_checkpoint(url, body)
            assert status == 400 and "control characters" in text, (damaged, status, text)
        status, text = post_checkpoint(
            url, f"old 0\n\n{other.sign(Checkpoint(other.name, 1, bytes(32)))}"
        )
        assert status == 404 and "other.test/log" in text, (status, text)
        assert post_checkpoint(url, f"old 0\n\n{note}")[0] == 200


def test_receipt_commands_show_a_file_name_on_one_line(
    inproc: InProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov receipt export` and `refresh` printed the sidecar's name as it was: a name
    holding a newline (a file someone sent) forged a line of its own ("receipt OK: ...")
    under the command's. Names are shown on one line, their newline and bidirectional
    overrides as escapes, as `prov sign` and `prov verify` show them."""
    from provenance.wire.sidecar import Sidecar, encode_sidecar

    dev = inproc.enroll()
    signed = dev.next_claim()
    receipt = inproc.submit(signed).receipt
    vkey = inproc.service.signer.verifier_key()
    sidecar = tmp_path / "x\nreceipt OK: leaf 9 of 9 \u202egpj.prov"
    sidecar.write_bytes(
        encode_sidecar(Sidecar(signed, dev.key.public_key, receipt, log_verifier_key=vkey))
    )
    assert prov_main(["receipt", "export", str(sidecar), "--format", "tlog-proof"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\u202e" not in out, out
    assert "x\\x0areceipt OK: leaf 9 of 9 \\u202egpj.tlog-proof" in out, out


def test_a_witness_answers_a_declared_gigantic_body_413_without_waiting_for_it(
    tmp_path: Path,
) -> None:
    """`prov witness serve`: an add-checkpoint whose Content-Length declares more than its
    128 KiB (here a terabyte) is refused 413 from its head, with ``Connection: close``.
    Before, the witness read what came and waited for the rest: a client that declared a
    terabyte and sent the start of a body held the connection for the body's idle timeout
    and was then told 408 "too slow", a refusal that named the wrong fault. Raw socket:
    only the first line of the body is ever sent, so only an answer from the head can
    come before the socket's own timeout."""
    log = generate_log_key(tmp_path / "log.pem", "log.test/w")
    generate_log_key(tmp_path / "witness.pem", "witness.test/w1")
    with witness_serve(tmp_path, log.verifier_key()) as (url, _):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        for declared in (10**12, MAX_BODY_BYTES + 1):
            with socket.create_connection((host, int(port)), timeout=60) as s:
                s.sendall(
                    b"POST /add-checkpoint HTTP/1.1\r\nHost: w\r\n"
                    b"Content-Length: %d\r\n\r\nold 0\n" % declared
                )
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
            head, _, text = answer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").lower().split("\r\n")
            assert lines[0].startswith("http/1.1 413"), (declared, answer[:300])
            assert "connection: close" in lines, lines
            assert f"{declared:,} bytes".encode() in text, text
        # a body of exactly the limit is read (and here refused as malformed, 400)
        status, _ = post_checkpoint(url, "old 0\n" + "x" * (MAX_BODY_BYTES - 6))
        assert status == 400
