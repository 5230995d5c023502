"""`prov verify --witness` and `prov receipt refresh` of a receipt the server's newest
cosigned checkpoint does not cover yet ("not yet cosigned", exit 14 or "pending") first
prove that the receipt's checkpoint extends the cosigned one: a log that forked before
its witnesses last cosigned must not pass a receipt of its private branch off as merely
not cosigned yet. A real fork: one `prov serve` (a real `prov witness serve` cosigning
it, quorum 1) stopped and its database copied; the copy, started with the same log key,
logs other entries than the original, whose witness cosigns them; a real gRPC relay in
front of the copy shows the original's genuine cosigned checkpoint (a hostile operator
showing the witnesses' checkpoint of its public branch), and the real CLI. A relay
showing an older cosigned checkpoint, from before the fork, or none hides the fork from
that check ("not yet cosigned", exit 14); `--witness-url` asks the witness itself and
finds it (exit 3)."""

# ruff: noqa: F811
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.api import ProvenanceClient
from provenance.core import merkle
from provenance.log.checkpoint import DEFAULT_ORIGIN, Checkpoint, LogSigner
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import (
    ADMIN_TOKEN,
    SAMPLES,
    Cli,
    ServerProc,
    enroll_key,
    relay,
    sign_sample,
    start_server,
    wait_cosigned,
)
from tests.test_cited_binding import _genuine_answer, _verify, server, witness  # noqa: F401
from tests.test_witness_also_claims import GET_CHECKPOINT, VERIFY_FILE, _old_cosigned


def _sign(cli: Cli, photo: Path, server: str) -> None:
    """Sign ``photo`` with ``cli``'s device into the log of the server at ``server``."""
    rc, _, err = cli("sign", str(photo), "--server", server)
    assert rc == 0, err


def test_a_forked_logs_receipt_not_yet_cosigned_is_refused_as_a_fork(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """The log of 2 entries (the device's enrollment, photo A's claim: cosigned, A's
    sidecar refreshed to that) forks: the original logs another device's enrollment and
    its witness cosigns 3 entries; the copy logs a different enrollment, a second claim
    of A's bytes (leaf 3) and photo B's claim (leaf 4). Through a relay in front of the
    copy showing the original's cosigned checkpoint of 3 entries, `prov verify --witness`
    of B (its claim cited), of A (its second claim listed as also signed), text and
    --json, and `prov receipt refresh` of B's sidecar are refused as a log integrity
    failure (exit 3) naming both sizes, the server and a fork, and which receipt: the
    cited claim's or the "also" claim's, --json's error too (revfork60: before, the
    cited claim's was not named). (forkpend60: before, B
    exited 14, "try again once they cosign", A exited 0 with its second claim shown
    "not yet cosigned by the witnesses", and the refresh exited 14: no consistency proof
    was asked for from the cosigned checkpoint to the receipt's.)"""
    vkey = witness[1]
    with _forked_log(witness, enrolled, server, tmp_path) as fork:
        photo_a, photo_b, forked = fork.photo_a, fork.photo_b, fork.address
        shown = {GET_CHECKPOINT: _old_cosigned(fork.cosigned)}
        for photo, size in ((photo_b, 5), (photo_a, 4)):
            answer = {VERIFY_FILE: _genuine_answer(forked, photo).SerializeToString()}
            with relay(forked, shown, answer) as address:
                for extra in ((), ("--json",)):
                    rc, out, err = _verify(
                        capsys, str(photo), "--server", address, "--witness", vkey, *extra
                    )
                    assert rc == 3, (photo, extra, rc, out, err)
                    _a_fork(err, address, 3, size)
                    assert "not yet cosigned" not in out + err, (out, err)
                    said = " ".join(err.split())
                    also = "another claim it lists as also signed (device" in said
                    assert also == (photo == photo_a), err
                    # which receipt: B's claim cited, the third of the device (revfork60)
                    cites = "(the receipt of the claim it cites (device" in said
                    assert cites == (photo == photo_b), err
                    assert not cites or said.endswith("sequence 3, leaf 4))"), err
                    assert not (json.loads(out)["status"] if extra else out), out
                    if extra:  # --json: the same words in its error, claim named
                        assert json.loads(out)["error"] in said, (out, err)
        with relay(forked, shown) as address:
            rc, out, err = enrolled("receipt", "refresh", f"{photo_b}.prov", "--server", address)
        assert rc == 3, (rc, out, err)
        _a_fork(err, address, 3, 5)


@dataclass(frozen=True)
class _Fork:
    """A log forked after its witness cosigned (`_forked_log`): the photos signed (A's
    sidecar refreshed to the cosigned checkpoint of 2 entries before the fork, B signed
    into the copy only), the copy's and the original's HOST:PORT, and GetCheckpoint's cosigned answers
    (bytes) of the original: ``before`` from before the fork (2 entries), ``cosigned``
    after the witness cosigned its public branch (3 entries)."""

    photo_a: Path
    photo_b: Path
    address: str
    honest: str
    before: bytes
    cosigned: bytes


@contextmanager
def _forked_log(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path
) -> Iterator[_Fork]:
    """The log of 2 entries (the device's enrollment, photo A's claim: cosigned, A's
    sidecar refreshed to that) forks: ``server`` is stopped and its database and log key
    copied; the original, started again with the witness, logs another device's
    enrollment and its witness cosigns 3 entries; the copy logs a different enrollment,
    a second claim of A's bytes (leaf 3) and photo B's claim (leaf 4). Both servers are
    stopped after."""
    photo_a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    rc, out, err = enrolled("receipt", "refresh", f"{photo_a}.prov")
    assert rc == 0, (out, err)
    with ProvenanceClient(server.address) as c:
        before = c._log.GetCheckpoint(pb.GetCheckpointRequest(cosigned=True), timeout=60)
    server.stop()
    shutil.copy(tmp_path / "prov.db", tmp_path / "fork.db")
    shutil.copy(tmp_path / "prov.db.logkey.pem", tmp_path / "fork.db.logkey.pem")
    url, vkey = witness
    honest = start_server(tmp_path / "prov.db", "--witness", f"{url}={vkey}")
    forked = start_server(tmp_path / "fork.db")
    try:
        with ProvenanceClient(honest.address, admin_token=ADMIN_TOKEN) as c:
            enroll_key(c)  # leaf 2 of the original
        wait_cosigned(honest.address, 3)
        with ProvenanceClient(honest.address) as c:
            cosigned = c._log.GetCheckpoint(pb.GetCheckpointRequest(cosigned=True), timeout=60)
        with ProvenanceClient(forked.address, admin_token=ADMIN_TOKEN) as c:
            enroll_key(c)  # another leaf 2, of the copy
        (tmp_path / "again").mkdir()
        _sign(enrolled, Path(shutil.copy(photo_a, tmp_path / "again")), forked.address)  # 3
        photo_b = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
        _sign(enrolled, photo_b, forked.address)  # leaf 4
        yield _Fork(
            photo_a,
            photo_b,
            forked.address,
            honest.address,
            bytes(before.SerializeToString()),
            bytes(cosigned.SerializeToString()),
        )
    finally:
        forked.stop()
        honest.stop()


def test_a_fork_behind_an_old_cosigned_checkpoint_is_found_by_asking_the_witness(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """The forked log of `_forked_log` behind a relay that shows the cosigned checkpoint
    from before the fork (2 entries, genuine: the copy extends it) or none at all: without
    --witness-url, `prov verify --witness` of B and `prov receipt refresh` of its sidecar
    read "not yet cosigned" (exit 14, the limit docs/verify.md states); with
    --witness-url of the witness, which cosigned 3 entries of the public branch, a log
    integrity failure (exit 3) naming the witness's URL, both sizes, the server and
    B's claim, --json too, also once the witness cosigned more entries (6) than the copy
    holds (its proof refused as past its log, OUT_OF_RANGE: said so); A's verify likewise (its receipts served by the copy cannot
    be proven of one log with the witness's 3 entries). (witurl61: before, --witness-url
    was no option: exit 2.)"""
    url, vkey = witness
    with _forked_log(witness, enrolled, server, tmp_path) as fork:
        empty = pb.GetCheckpointResponse(quorum=1).SerializeToString()
        for shown, have in ((fork.before, "the newest covers 2"), (empty, "there is none yet")):
            _hidden_fork_found(fork, shown, f"covers leaf 4 ({have}", url, vkey, enrolled, capsys)
        with ProvenanceClient(fork.honest, admin_token=ADMIN_TOKEN) as c:
            for _ in range(3):
                enroll_key(c)  # leaves 3 to 5 of the original: 6 entries, more than the copy's
        wait_cosigned(fork.honest, 6)
        answer = {VERIFY_FILE: _genuine_answer(fork.address, fork.photo_b).SerializeToString()}
        with relay(fork.address, {GET_CHECKPOINT: _old_cosigned(empty)}, answer) as address:
            args = ("--server", address, "--witness", vkey, "--witness-url", url)
            rc, out, err = _verify(capsys, str(fork.photo_b), *args)
        assert rc == 3, (rc, out, err)
        said = _a_fork(err, address, 6, 5, url)
        assert "its log holds fewer entries than the witness cosigned" in said, err


def _hidden_fork_found(
    fork: _Fork, shown: bytes, pending: str, url: str, vkey: str, enrolled: Cli, capsys: Any
) -> None:
    """Through a relay in front of ``fork``'s copy answering GetCheckpoint's cosigned
    checkpoint with ``shown``: B not yet cosigned without --witness-url (``pending`` in
    the message), a fork with --witness-url ``url`` (`test_a_fork_behind_an_old_...`)."""
    old = {GET_CHECKPOINT: _old_cosigned(shown)}
    answer = {VERIFY_FILE: _genuine_answer(fork.address, fork.photo_b).SerializeToString()}
    with relay(fork.address, old, answer) as address:
        rc, out, err = _verify(capsys, str(fork.photo_b), "--server", address, "--witness", vkey)
        assert rc == 14, (rc, out, err)
        assert pending in " ".join(err.split()), err
        for extra in ((), ("--json",)):
            rc, out, err = _verify(
                capsys,
                str(fork.photo_b),
                *("--server", address, "--witness", vkey, "--witness-url", url, *extra),
            )
            assert rc == 3, (extra, rc, out, err)
            said = _a_fork(err, address, 3, 5, url)
            assert said.endswith("sequence 3, leaf 4))"), err
            assert "(the receipt of the claim it cites (device" in said, err
            assert "not yet cosigned" not in out + err, (out, err)
            if extra:
                assert json.loads(out)["error"] in said, (out, err)
    with relay(fork.address, old) as address:
        refresh = ("receipt", "refresh", f"{fork.photo_b}.prov", "--server", address)
        rc, out, err = enrolled(*refresh, "--witness", vkey)
        assert rc == 14, (rc, out, err)
        rc, out, err = enrolled(*refresh, "--witness", vkey, "--witness-url", url)
    assert rc == 3, (rc, out, err)
    _a_fork(err, address, 3, 5, url)
    answer = {VERIFY_FILE: _genuine_answer(fork.address, fork.photo_a).SerializeToString()}
    with relay(fork.address, old, answer) as address:
        args = (str(fork.photo_a), "--server", address, "--witness", vkey)
        rc, out, err = _verify(capsys, *args, "--witness-url", url)
    assert rc == 3, (rc, out, err)
    said = " ".join(err.split())
    assert said.startswith("LOG INTEGRITY FAILURE: "), err
    assert f"the one the witness at {url} cosigned (3)" in said, err


@pytest.mark.parametrize("root", ["empty", "other"])
def test_a_cosigned_checkpoint_of_size_0_is_extended_by_every_tree(
    witness: tuple[str, str],
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: Any,
    root: str,
) -> None:
    """A "cosigned" checkpoint of size 0 the log key signed, shown by a relay: every tree
    extends the empty one (RFC 9162 2.1.4.2), so nothing is asked of the server and the
    receipt reads not yet cosigned, exit 14, `prov verify --witness` and `prov receipt
    refresh` alike; one whose root is not the empty tree's is a tree that cannot be, a log
    integrity failure (exit 3). (revfork60: before, forkpend60 asked the server for a
    consistency proof from size 0, which it refuses: exit 1, "error: first_size must be at
    least 1 ... [OUT_OF_RANGE]", of either root.)"""
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    _, vkey = witness
    pem = (tmp_path / "prov.db.logkey.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, Ed25519PrivateKey)
    empty = merkle.EMPTY_ROOT if root == "empty" else b"\1" * 32
    now = datetime.now(UTC).replace(microsecond=0)
    zero = LogSigner(key, DEFAULT_ORIGIN).sign(Checkpoint(DEFAULT_ORIGIN, 0, empty, now))
    shown = {
        GET_CHECKPOINT: _old_cosigned(
            pb.GetCheckpointResponse(checkpoint=zero, quorum=1).SerializeToString()
        )
    }
    answer = {VERIFY_FILE: _genuine_answer(server.address, photo).SerializeToString()}
    with relay(server.address, shown, answer) as address:
        verified = _verify(capsys, str(photo), "--server", address, "--witness", vkey)
        refreshed = enrolled("receipt", "refresh", f"{photo}.prov", "--server", address)
    for rc, out, err in (verified, refreshed):
        said = " ".join(err.split())
        assert "first_size" not in said and "Traceback" not in said, err
        if root == "empty":
            assert rc == 14, (rc, out, err)
            assert "covers leaf 1 (the newest covers 0 entries;" in said, err
        else:
            assert rc == 3, (rc, out, err)
            assert said.startswith("LOG INTEGRITY FAILURE: "), err
            assert "a tree of size 0 whose root is not the empty tree's" in said, err
            assert f"the server at {address}" in said, err


def _a_fork(err: str, address: str, cosigned: int, receipt: int, url: str = "") -> str:
    """``err`` refuses the receipt's checkpoint of ``receipt`` entries as not of one log
    with the cosigned one of ``cosigned`` (with ``url``: the one the witness at that URL
    cosigned), both named, the server at ``address`` too; returns ``err`` on one line."""
    said = " ".join(err.split())
    assert said.startswith("LOG INTEGRITY FAILURE: "), err
    assert f"the receipt's checkpoint ({receipt} entries)" in said, err
    other = f"the one the witness at {url} cosigned" if url else "the cosigned one"
    assert f"{other} ({cosigned})" in said, err
    assert f"the server at {address}" in said and "a fork" in said, err
    assert "Traceback" not in err, err
    return said
