"""`prov verify --witness` (without --log-key) proves the receipt of every claim an answer
lists as also signed (`evidence.other_claims`), not only the cited claim's: a hostile
server must not show an "also signed" co-signer whose receipt does not verify (exit 3).
The policy (exit 0 or 14) rests on the cited claim's receipt alone: an "also" claim the
witnesses have not cosigned yet is shown so (latecosign59). A real `prov serve`
whose log a real `prov witness serve` cosigns (quorum 1), real devices signing the same
bytes, a real gRPC relay on a real port editing the server's genuine answers, the real
CLI; and the honest flow through the same checks, which must pass."""

# ruff: noqa: F811
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clients.api import ProvenanceClient
from clients.device import DeviceHome
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import SAMPLES, Cli, ServerProc, relay, sign_sample, wait_cosigned
from tests.test_cited_binding import (  # noqa: F401
    _forger,
    _genuine_answer,
    _resized,
    _signed_again,
    _verify,
    server,
    server_answer,
    witness,
)
from tests.test_verdict_several_claims import _device, _leaves, _sign_copy

GET_CHECKPOINT = "/provenance.v1.Log/GetCheckpoint"
VERIFY_FILE = "/provenance.v1.Verification/VerifyFile"


def _sequence(evidence: pb.ClaimEvidence) -> int:
    """The sequence number of the claim of ``evidence``."""
    return int(pb.Claim.FromString(evidence.signed_claim.claim).sequence)


def _two_claims(cli: Cli, tmp_path: Path, server: ServerProc) -> tuple[Path, bytes]:
    """Photo A signed twice by ``cli``'s device (two claims of its bytes, both logged and
    cosigned), and the server's cosigned GetCheckpoint answer from before the second
    claim was logged (its checkpoint covers the first claim, not the second)."""
    photo, _ = sign_sample(cli, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    with ProvenanceClient(server.address) as c:
        before = c._log.GetCheckpoint(pb.GetCheckpointRequest(cosigned=True), timeout=60)
    _signed_again(cli, tmp_path, photo)
    wait_cosigned(server.address, 3)
    return photo, bytes(before.SerializeToString())


def _old_cosigned(before: bytes) -> Callable[[bytes, Any, Callable[[bytes], bytes]], bytes]:
    """GetCheckpoint answered, for the cosigned checkpoint, with ``before`` (as a server
    whose witnesses have not cosigned since: the genuine older checkpoint)."""

    def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked = pb.GetCheckpointRequest.FromString(request)
        return before if asked.cosigned else forward(request)

    return answer


@pytest.mark.parametrize("fault", ["no_receipt", "wrong_proof", "leaf_far_off"])
@pytest.mark.parametrize("near", [False, True], ids=["exact", "derived"])
def test_an_also_signed_claim_whose_receipt_does_not_verify_is_refused_under_witness(
    witness: tuple[str, str],
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: Any,
    fault: str,
    near: bool,
) -> None:
    """The server's genuine answer for A, listing A's second claim as also signed; or its
    genuine DERIVED answer for a resized copy of A, listing a genuine claim of that
    copy's bytes (signed since) as also signed. That claim's receipt then left out, its
    inclusion proof changed, or its leaf index moved past every tree: `prov verify
    --witness` alone refuses it (exit 3), naming the server and the claim. (h-witalso59:
    before, exit 0 (10 for the copy), the "also" line shown under "cosigned by 1 of 1
    witnesses": only the cited claim's receipt met the policy.)"""
    if near:
        photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
        (tmp_path / "near").mkdir()
        target = _resized(photo, tmp_path / "near")
        forged = server_answer(server.address, target)
        _signed_again(enrolled, tmp_path, target)  # a claim of the copy's own bytes
        wait_cosigned(server.address, 3)
        forged.evidence.other_claims.append(server_answer(server.address, target).evidence.claim)
    else:
        target, _ = _two_claims(enrolled, tmp_path, server)
        forged = server_answer(server.address, target)
    assert forged.status == (pb.DERIVED if near else pb.SIGNED_ORIGINAL), forged
    assert len(forged.evidence.other_claims) == 1, forged
    also = forged.evidence.other_claims[0]
    if fault == "no_receipt":
        also.ClearField("receipt")
    elif fault == "wrong_proof":
        also.receipt.inclusion_proof[0] = bytes(32)
    else:
        also.receipt.leaf_index = 1_000_000
    for address in _forger(server.address, forged.SerializeToString()):
        for extra in ((), ("--json",)):
            rc, out, err = _verify(
                capsys, str(target), "--server", address, "--witness", witness[1], *extra
            )
            assert rc == 3, (fault, extra, rc, out, err)
            assert err.startswith("SERVER EVIDENCE REFUSED: "), err
            assert f"the server at {address}" in err, err
            assert "another claim it lists as also signed" in err, err
            assert f"sequence {_sequence(also)}" in err, err
            assert ("no receipt" if fault == "no_receipt" else "does not verify") in err, err
            assert "--witness" in err and "Traceback" not in err, err
            shown = json.loads(out)["status"] if extra else out
            assert not shown, out  # --json: "status": null, the error beside it


def test_the_cited_claims_receipt_is_proven_under_witness_too(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """The cited claim's receipt, its checkpoint the server's newest cosigned one, its
    inclusion proof changed: refused (exit 3). (h-witalso59: before, exit 0 and "cosigned
    by 1 of 1 witnesses": a receipt already carrying the cosigned checkpoint was taken
    as it was, its proof never checked, so the policy held for any leaf.)"""
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    forged = _genuine_answer(server.address, photo)
    with ProvenanceClient(server.address) as c:
        note, _, _ = c.cosigned_checkpoint()
    receipt = forged.evidence.claim.receipt
    receipt.checkpoint = note  # the cosigned checkpoint: the case that was not proven
    receipt.inclusion_proof[0] = bytes(32)
    for address in _forger(server.address, forged.SerializeToString()):
        rc, out, err = _verify(capsys, str(photo), "--server", address, "--witness", witness[1])
        assert rc == 3, (rc, out, err)
        assert err.startswith("SERVER EVIDENCE REFUSED: ") and address in err, err
        assert "the receipt of the claim it cites" in err and "does not verify" in err, err
        assert "SIGNED_ORIGINAL" not in out, out


def test_an_also_signed_claim_no_cosigned_checkpoint_holds_is_shown_not_yet_cosigned(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """A server whose newest cosigned checkpoint holds the cited claim but not the one it
    lists as also signed (its genuine receipt logged after the witnesses last cosigned):
    the policy, decided by the cited claim's receipt, is met (exit 0); the other claim is
    shown "not yet cosigned by the witnesses", and `--json` marks it
    (`witness_cosigned` false); not refused as the server's evidence (exit 3).
    (latecosign59: before, exit 14, POLICY NOT MET naming that claim: anyone signing a
    copy of a cosigned photo while a witness was down made its check fail;
    h-witalso59 to latecosign59 this test asserted that exit 14.)"""
    photo, before = _two_claims(enrolled, tmp_path, server)
    genuine = _genuine_answer(server.address, photo)
    sequence = _sequence(genuine.evidence.other_claims[0])
    answers = {GET_CHECKPOINT: _old_cosigned(before)}
    with relay(server.address, answers, {VERIFY_FILE: genuine.SerializeToString()}) as address:
        rc, out, err = _verify(capsys, str(photo), "--server", address, "--witness", witness[1])
        assert rc == 0, (rc, out, err)
        assert "cosigned by 1 of 1 witnesses" in out and "POLICY NOT MET" not in out + err
        assert f"sequence {sequence}" in out, out
        assert "is not yet cosigned by the witnesses" in out, out
        assert "proven with the log key only, the log's word until they cosign" in out, out
        assert "so is the receipt" not in out, out
        rc, out, err = _verify(
            capsys, str(photo), "--server", address, "--witness", witness[1], "--json"
        )
        doc = json.loads(out)
        assert rc == 0 and doc["witnesses"]["met"] is True, (rc, out, err)
        assert doc["evidence_checked"] == "witness" and doc["witnesses"]["error"] is None
        assert [o["witness_cosigned"] for o in doc["evidence"]["other_claims"]] == [False]


def test_honest_claims_of_two_devices_pass_the_witness_policy(
    witness: tuple[str, str],
    cli: Cli,
    server: ServerProc,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two devices sign the same bytes; the witness cosigns (quorum 1). `prov verify
    --witness` of either copy, and of a resized copy (DERIVED), lists the other claim
    and passes: no false refusal now that every "also" receipt meets the policy too
    (with --log-key too)."""
    homes = {n: _device(cli, monkeypatch, tmp_path, f"cam-{n}") for n in "ab"}
    (photo_a, leaf_a), (photo_b, leaf_b) = (
        _sign_copy(cli, monkeypatch, home, tmp_path / n) for n, home in homes.items()
    )
    wait_cosigned(server.address, max(leaf_a, leaf_b) + 1)
    with ProvenanceClient(server.address) as c:
        log_vkey = c.log_key()[0]
    (tmp_path / "near").mkdir()
    near = _resized(photo_a, tmp_path / "near")
    unsigned = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "unsigned.jpg"))
    for photo, want in ((photo_a, 0), (photo_b, 0), (near, 10), (unsigned, 11)):
        for pinned in ((), ("--log-key", log_vkey)):
            rc, out, err = cli(
                "verify", str(photo), "--no-detect", "--witness", witness[1], *pinned
            )
            assert rc == want, (photo, pinned, rc, out, err)
            if want != 11:  # a near copy's honest answer lists no "also" claim
                assert "cosigned by 1 of 1 witnesses" in out, out
                also = "so is the receipt of the claim listed as also signed" in out
                assert also == (want == 0), out
            rc, out, err = cli(
                "verify", str(photo), "--no-detect", "--json", "--witness", witness[1], *pinned
            )
            doc = json.loads(out)
            assert rc == want, (photo, pinned, rc, out, err)
            if want != 11:
                assert doc["witnesses"]["met"] is True, doc
                assert doc["evidence_checked"] == ("log-key" if pinned else "witness"), doc
                cited, others = _leaves(doc)
                assert sorted([cited, *others]) == sorted([leaf_a, leaf_b]) or (
                    want == 10 and cited in (leaf_a, leaf_b) and not others
                ), doc


def test_more_also_signed_claims_than_an_honest_server_lists_are_refused(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """A server listing more claims as also signed than an honest one does
    (`MAX_OTHER_CLAIMS`; it says "and N more" of the rest in a note): each is a round of
    calls under `--witness` (its cosigned checkpoint, an inclusion proof, a consistency
    proof, each reply up to 8 MiB), so a hostile server listing thousands (its 8 MiB
    VerifyFile reply holds some 20,000) held `prov verify` for that many rounds. Here 17
    genuine, logged, cosigned claims of the same bytes: refused, exit 3, before any of
    them is checked; with --log-key too. (revwit59: before, exit 0, "so is the receipt
    of each of the 17 claims listed as also signed", after 17 rounds of calls.)"""
    from provenance.core.verify import MAX_OTHER_CLAIMS
    from provenance.wire.convert import receipt_to_pb, signed_to_pb
    from provenance.wire.sidecar import decode_sidecar

    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    sidecars = []
    for i in range(MAX_OTHER_CLAIMS + 1):  # as many claims again of the same bytes
        (tmp_path / f"again{i}").mkdir()
        again = Path(shutil.copy(photo, tmp_path / f"again{i}" / photo.name))
        rc, _, err = enrolled("sign", str(again))
        assert rc == 0, err
        sidecars.append(decode_sidecar(again.with_name(again.name + ".prov").read_bytes()))
    wait_cosigned(server.address, MAX_OTHER_CLAIMS + 3)
    forged = _genuine_answer(server.address, photo)
    assert len(forged.evidence.other_claims) == MAX_OTHER_CLAIMS, forged
    listed = {bytes(o.signed_claim.claim) for o in forged.evidence.other_claims}
    for s in sidecars:  # the claim the honest answer left to its note
        if signed_to_pb(s.signed_claim).claim not in listed and s.receipt is not None:
            extra = forged.evidence.other_claims.add()
            extra.CopyFrom(forged.evidence.other_claims[0])
            extra.signed_claim.CopyFrom(signed_to_pb(s.signed_claim))
            extra.receipt.CopyFrom(receipt_to_pb(s.receipt))
    assert len(forged.evidence.other_claims) == MAX_OTHER_CLAIMS + 1, forged
    with ProvenanceClient(server.address) as c:
        log_vkey = c.log_key()[0]
    for address in _forger(server.address, forged.SerializeToString()):
        for pinned in ((), ("--log-key", log_vkey)):
            rc, out, err = _verify(
                capsys, str(photo), "--server", address, "--witness", witness[1], *pinned
            )
            assert rc == 3, (pinned, rc, out, err)
            assert err.startswith("SERVER EVIDENCE REFUSED: ") and address in err, err
            assert f"{MAX_OTHER_CLAIMS + 1} claims as also signed" in err, err
            assert f"at most {MAX_OTHER_CLAIMS}" in err, err
            assert "SIGNED_ORIGINAL" not in out, out


def test_honest_claims_through_two_servers_on_one_database_pass_the_policy(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Two `prov serve` over one PostgreSQL database, one witness (quorum 1), as behind a
    load balancer (docs/deploy.md step 6). Device a signs a photo through server A; the
    witnesses cosign; device b then signs the same bytes through server B; device a is
    revoked. The receipts are of different ages (a's checkpoint older than the newest
    cosigned one, b's from B's own batch), one claim is by a revoked device, and the
    claims were logged through different servers: `prov verify --witness` through
    either server, with and without --log-key, text and --json, passes for each copy
    (each listing the other claim as also signed), and so after `prov receipt refresh`
    of a's sidecar (its own receipt then already cosigned). No false refusal."""
    from provenance.log.checkpoint import generate_log_key
    from tests.conftest import PG_LOG_KEYS, device_env, start_server, witness_serve

    log_vkey = generate_log_key(PG_LOG_KEYS[pg_url], "media-provenance.local/log").verifier_key()
    (tmp_path / "w").mkdir()
    with witness_serve(tmp_path / "w", log_vkey) as (url, wkey):
        policy = ("--witness", f"{url}={wkey}", "--witness-quorum", "1")
        a, b = start_server(pg_url, *policy), start_server(pg_url, *policy)
        try:
            cli = Cli(tmp_path / "cam-a", a.address, capsys)
            device_env(monkeypatch, cli.home, a.address)
            home_a = _device(cli, monkeypatch, tmp_path, "cam-a")
            photo_a, leaf_a = _sign_copy(cli, monkeypatch, home_a, tmp_path / "a")
            wait_cosigned(a.address, leaf_a + 1)
            monkeypatch.setenv("PROV_SERVER", b.address)
            home_b = _device(cli, monkeypatch, tmp_path, "cam-b")
            photo_b, leaf_b = _sign_copy(cli, monkeypatch, home_b, tmp_path / "b")
            rc, _, err = cli(
                "admin", "revoke", DeviceHome(home_a).state().device_id, "--reason", "lost"
            )
            assert rc == 0, err
            size = max(leaf_a, leaf_b) + 2  # the revocation is logged too
            for s in (a, b):
                wait_cosigned(s.address, size)
            pinned_key = ("--log-key", log_vkey)
            for refreshed in (False, True):
                if refreshed:
                    rc, out, err = cli(
                        "receipt", "refresh", f"{photo_a}.prov", "--server", a.address
                    )
                    assert rc == 0, (out, err)
                for s in (a, b):
                    for photo in (photo_a, photo_b):
                        for pinned in ((), pinned_key):
                            args = ("verify", str(photo), "--no-detect", "--server", s.address)
                            rc, out, err = cli(*args, "--witness", wkey, *pinned)
                            assert rc == 0, (s.address, photo, pinned, rc, out, err)
                            assert "cosigned by 1 of 1 witnesses" in out, out
                            assert "so is the receipt of the claim listed as also signed" in out
                            rc, out, err = cli(*args, "--json", "--witness", wkey, *pinned)
                            doc = json.loads(out)
                            assert rc == 0 and doc["witnesses"]["met"] is True, (rc, out, err)
                            assert doc["evidence_checked"] == ("log-key" if pinned else "witness")
                            cited, others = _leaves(doc)
                            assert sorted([cited, *others]) == sorted([leaf_a, leaf_b]), doc
        finally:
            a.stop()
            b.stop()


def test_the_cosigned_checkpoint_is_asked_for_once_however_many_claims(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """An honest answer citing one claim and listing another as also signed, both
    receipts older than the newest cosigned checkpoint: `prov verify --witness` brings
    both up to one cosigned checkpoint, asked for once (each ask a reply of up to 8 MiB
    and a call of up to 30 s; all the receipts are held to the same checkpoint), and
    passes. (revwit59: before, asked once per claim: 2.)"""
    photo, _ = _two_claims(enrolled, tmp_path, server)
    sign_sample(enrolled, tmp_path / "again", "grace_hopper.jpg")  # a newer checkpoint
    wait_cosigned(server.address, 4)
    asked: list[bool] = []

    def counted(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked.append(pb.GetCheckpointRequest.FromString(request).cosigned)
        return forward(request)

    genuine = _genuine_answer(server.address, photo).SerializeToString()
    with relay(server.address, {GET_CHECKPOINT: counted}, {VERIFY_FILE: genuine}) as address:
        rc, out, err = _verify(capsys, str(photo), "--server", address, "--witness", witness[1])
    assert rc == 0, (rc, out, err)
    assert "so is the receipt of the claim listed as also signed" in out, out
    assert asked.count(True) == 1, asked


def test_a_tampered_verdicts_receipt_is_proven_before_the_policy_is_shown_met(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """A TAMPERED answer citing a logged claim whose receipt carries the server's newest
    cosigned checkpoint and a changed inclusion proof: under `--witness` that receipt is
    what the witnesses line vouches for ("leaf N is in a checkpoint ... cosigned by"),
    so it is proven first and refused (exit 3), as for a SIGNED_ORIGINAL. (revwit59:
    before, exit 13 with "cosigned by 1 of 1 witnesses" and --json's evidence_checked
    "witness": the up-front proof skipped verdicts that vouch for nothing, and the
    receipt carrying the cosigned checkpoint was taken as it was.)"""
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    forged = _genuine_answer(server.address, photo)
    with ProvenanceClient(server.address) as c:
        note, _, _ = c.cosigned_checkpoint()
    forged.status = pb.TAMPERED
    receipt = forged.evidence.claim.receipt
    receipt.checkpoint = note
    receipt.inclusion_proof[0] = bytes(32)
    for address in _forger(server.address, forged.SerializeToString()):
        for extra in ((), ("--json",)):
            rc, out, err = _verify(
                capsys, str(photo), "--server", address, "--witness", witness[1], *extra
            )
            assert rc == 3, (extra, rc, out, err)
            assert err.startswith("SERVER EVIDENCE REFUSED: ") and address in err, err
            assert "does not verify with the log key" in err, err
            assert "cosigned by 1 of 1" not in out, out


def test_a_stopped_witness_and_a_new_copy_do_not_fail_a_cosigned_photos_policy(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two real witnesses, the server's quorum 2. Device a signs a photo; both witnesses
    cosign; a's sidecar is refreshed. One witness stops; device b signs a copy of the
    same bytes (anyone with an enrolled device may): no checkpoint the witnesses cosign
    covers b's claim while that witness is down. `prov verify --witness` of a's photo
    rests on a's receipt, which the witnesses cosigned: the policy holds (exit 0, with
    either quorum), b's claim shown as also signed, "not yet cosigned by the witnesses",
    and `--json`'s `witness_cosigned` false for it; so for b's copy, beside b's sidecar
    (the verdict rests on the earliest claim, a's). (latecosign59: before, exit 14,
    POLICY NOT MET naming b's claim, even with --witness-quorum 1: a denial of service
    by anyone able to sign a copy.) `prov receipt refresh` concerns only the sidecar's
    own claim: a's exits 0, b's 14 (no cosigned checkpoint covers it, w2 named)."""
    from provenance.log.checkpoint import generate_log_key
    from tests.conftest import device_env, start_server
    from tests.test_cosign import start_witness

    log_vkey = generate_log_key(tmp_path / "prov.db.logkey.pem", "media-provenance.local/log")
    ws = [
        start_witness(tmp_path / f"w{i}", f"witness.test/w{i}", log_vkey.verifier_key())
        for i in (1, 2)
    ]
    try:
        policy = [a for w in ws for a in ("--witness", w.option)]
        srv = start_server(tmp_path / "prov.db", *policy, "--witness-quorum", "2")
        try:
            cli = Cli(tmp_path / "cam-a", srv.address, capsys)
            device_env(monkeypatch, cli.home, srv.address)
            home_a = _device(cli, monkeypatch, tmp_path, "cam-a")
            home_b = _device(cli, monkeypatch, tmp_path, "cam-b")
            photo_a, leaf_a = _sign_copy(cli, monkeypatch, home_a, tmp_path / "a")
            wait_cosigned(srv.address, leaf_a + 1)
            rc, out, err = cli("receipt", "refresh", f"{photo_a}.prov")
            assert rc == 0, (out, err)
            ws[1].stop()
            photo_b, leaf_b = _sign_copy(cli, monkeypatch, home_b, tmp_path / "b")
            keys = [a for w in ws for a in ("--witness", w.vkey)]
            for photo, quorum in ((photo_a, "2"), (photo_a, "1"), (photo_b, "2")):
                args = ("verify", str(photo), "--no-detect", *keys, "--witness-quorum", quorum)
                rc, out, err = cli(*args)
                assert rc == 0, (photo, quorum, rc, out, err)
                assert f"witnesses: leaf {leaf_a} is in a checkpoint" in out, out
                assert "POLICY NOT MET" not in out + err, (out, err)
                assert f"leaf {leaf_b}) is not yet cosigned by the witnesses" in out, out
                rc, out, err = cli(*args, "--json")
                doc = json.loads(out)
                assert rc == 0 and doc["witnesses"]["met"] is True, (quorum, rc, out, err)
                assert doc["evidence_checked"] == "witness", doc
                assert _leaves(doc) == (leaf_a, [leaf_b]), doc  # the earliest claim cited
                assert "witness_cosigned" not in doc["evidence"]["claim"], doc
                assert doc["evidence"]["other_claims"][0]["witness_cosigned"] is False, doc
            rc, out, err = cli("receipt", "refresh", f"{photo_a}.prov")
            assert rc == 0, (out, err)
            rc, out, err = cli("receipt", "refresh", f"{photo_b}.prov")
            assert rc == 14 and "witness.test/w2" in err, (rc, out, err)
        finally:
            srv.stop()
    finally:
        for w in ws:
            w.stop()


#: (fault, the cited claim cosigned or pending) of the forged "also" receipt test.
FORGED_ALSO = [
    (fault, main)
    for fault in ("wrong_proof", "other_leaf", "other_key")
    for main in ("cosigned", "pending")
]


@pytest.mark.parametrize(("fault", "main"), FORGED_ALSO)
def test_a_forged_also_receipt_is_refused_not_shown_not_yet_cosigned(
    fault: str,
    main: str,
    witness: tuple[str, str],
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: Any,
) -> None:
    """The relay's cosigned checkpoint holds the cited claim but not the one listed as
    also signed (the case latecosign59 shows "not yet cosigned" and lets pass), or holds
    neither (none cosigned yet: the cited claim's policy not met, exit 14 but for the
    "also" claim); that claim's receipt forged: its inclusion proof changed, the receipt
    of another leaf (the cited claim's), or its checkpoint signed by another key of the
    same origin. Refused as the server's evidence (exit 3), never classed "not yet
    cosigned", whether the cited claim's policy is met or not (revlate59: a guard; this
    held at a3de95f8, as every "also" receipt is proven before the policy is looked at)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from provenance.log.checkpoint import LogSigner

    photo, before = _two_claims(enrolled, tmp_path, server)
    forged = _genuine_answer(server.address, photo)
    also = forged.evidence.other_claims[0]
    if fault == "wrong_proof":
        also.receipt.inclusion_proof[0] = bytes(32)
    elif fault == "other_leaf":
        also.receipt.CopyFrom(forged.evidence.claim.receipt)
    else:
        body = also.receipt.checkpoint.split("\n\n", 1)[0] + "\n"
        origin = body.split("\n", 1)[0]
        also.receipt.checkpoint = LogSigner(Ed25519PrivateKey.generate(), origin).sign_text(body)
    if main == "pending":  # no cosigned checkpoint yet: the cited claim's policy not met
        old = pb.GetCheckpointResponse.FromString(before)
        old.checkpoint = ""
        before = bytes(old.SerializeToString())
    answers = {GET_CHECKPOINT: _old_cosigned(before)}
    with relay(server.address, answers, {VERIFY_FILE: forged.SerializeToString()}) as address:
        for extra in ((), ("--json",)):
            rc, out, err = _verify(
                capsys, str(photo), "--server", address, "--witness", witness[1], *extra
            )
            assert rc == 3, (fault, main, extra, rc, out, err)
            assert err.startswith("SERVER EVIDENCE REFUSED: "), err
            assert "another claim it lists as also signed" in err, err
            assert f"sequence {_sequence(also)}" in err, err
            assert "not yet cosigned" not in out + err and "Traceback" not in err, (out, err)
            shown = json.loads(out)["status"] if extra else out
            assert not shown, out


def _also_lines(out: str) -> list[str]:
    """The report body's "also" lines and the "cosigned" lines that follow them."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  also "))
    return [line for line in lines[start:] if line.startswith(("  also ", "  cosigned "))]


def test_a_pending_also_claim_is_marked_in_the_report_body_under_witness(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """The report body's "also leaf L: device ..." line of a claim no cosigned checkpoint
    covers yet is followed by a line of its own saying so, under `--witness`: a reader
    need not match leaves against the witnesses line at the end. One the witnesses
    cosigned gets no such line, nor does any without `--witness`. `--json` is unchanged.
    (pendingtext59: before, the "also" line carried no marker.)"""
    photo, before = _two_claims(enrolled, tmp_path, server)
    genuine = _genuine_answer(server.address, photo)
    leaf = genuine.evidence.other_claims[0].receipt.leaf_index
    answers = {GET_CHECKPOINT: _old_cosigned(before)}
    with relay(server.address, answers, {VERIFY_FILE: genuine.SerializeToString()}) as address:
        rc, out, err = _verify(capsys, str(photo), "--server", address, "--witness", witness[1])
        assert rc == 0, (rc, out, err)
        also = _also_lines(out)
        assert also[0].startswith(f"  also       leaf {leaf}: device "), out
        assert also[1] == (
            f"  cosigned   leaf {leaf} (above): not yet cosigned by the witnesses; its"
            " receipt is proven with the log key only"
        ), out
        rc, out, err = _verify(capsys, str(photo), "--server", address)
        assert rc == 0 and "not yet cosigned" not in out, (rc, out, err)
    rc, out, err = _verify(capsys, str(photo), "--server", server.address, "--witness", witness[1])
    assert rc == 0, (rc, out, err)
    assert len(_also_lines(out)) == 1 and "not yet cosigned" not in out, out


def test_a_policy_not_met_names_the_pending_also_claims_too(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """No cosigned checkpoint yet (the witnesses have cosigned nothing the relay shows):
    the cited claim's policy is not met (exit 14), and the POLICY NOT MET line names the
    claim listed as also signed as not yet cosigned too, as the line of a met policy
    does. (pendingtext59: before, the line named the cited claim's problem only.)"""
    photo, before = _two_claims(enrolled, tmp_path, server)
    genuine = _genuine_answer(server.address, photo)
    sequence = _sequence(genuine.evidence.other_claims[0])
    old = pb.GetCheckpointResponse.FromString(before)
    old.checkpoint = ""
    answers = {GET_CHECKPOINT: _old_cosigned(bytes(old.SerializeToString()))}
    with relay(server.address, answers, {VERIFY_FILE: genuine.SerializeToString()}) as address:
        rc, out, err = _verify(capsys, str(photo), "--server", address, "--witness", witness[1])
    assert rc == 14, (rc, out, err)
    assert "witnesses: POLICY NOT MET (1 of 1): " in err, err
    named = f"the claim listed as also signed (device {_device_hex(genuine)}, sequence {sequence}"
    assert named in err and "is not yet cosigned by the witnesses" in err, err


def _device_hex(answer: pb.VerificationReport) -> str:
    """The first 16 hex digits of the device of ``answer``'s first "also" claim."""
    claim = pb.Claim.FromString(answer.evidence.other_claims[0].signed_claim.claim)
    return bytes(claim.device_id).hex()[:16]


def test_a_verdict_citing_no_claim_says_what_of_its_also_claims_was_checked(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """An UNSIGNED answer citing no claim but listing a genuine claim as also signed,
    through a relay showing the newest cosigned checkpoint, then one from before that
    claim was logged: its receipt is proven and held to the policy, so the witnesses line
    says so (met, or not yet cosigned), not "nothing to check". (pendingtext59: before,
    "witnesses: nothing to check (no logged claim matched the file)" though the "also"
    receipt was checked.)"""
    photo, before = _two_claims(enrolled, tmp_path, server)
    forged = _genuine_answer(server.address, photo)
    forged.status = pb.UNSIGNED
    forged.evidence.ClearField("claim")
    del forged.evidence.other_claims[1:]
    sequence = _sequence(forged.evidence.other_claims[0])
    for cosigned in (True, False):
        answers = {} if cosigned else {GET_CHECKPOINT: _old_cosigned(before)}
        uploads = {VERIFY_FILE: forged.SerializeToString()}
        with relay(server.address, answers, uploads) as address:
            rc, out, err = _verify(capsys, str(photo), "--server", address, "--witness", witness[1])
        assert rc == 11, (cosigned, rc, out, err)
        assert "nothing to check" not in out + err, out
        assert "witnesses: the verdict cites no logged claim" in out, out
        if cosigned:
            assert "the receipt of the claim listed as also signed is in a checkpoint" in out
            assert "not yet cosigned" not in out, out
        else:
            assert f"sequence {sequence}" in out and "is not yet cosigned by the witnesses" in out
