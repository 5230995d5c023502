"""A server (or a proxy in front of one) that answers a submission with a receipt that
does not verify: the claim is not taken as logged. It stays queued, `prov sign` says why,
and `prov device sync` against the real log submits it later. A real server on a real
port, a real gRPC proxy in front of it, the real CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.device import DeviceHome
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import SAMPLES, Cli, RelayAnswer, closed_port, relay

SUBMIT = "/provenance.v1.Captures/SubmitCapture"


def _fake_receipt() -> bytes:
    """A SubmitCapture answer whose receipt proves nothing: a leaf index, a time, and a
    checkpoint that is no signed note (a proxy's or a broken server's answer)."""
    answer = pb.SubmitCaptureResponse()
    answer.receipt.leaf_index = 3
    answer.receipt.checkpoint = "garbage\n"
    answer.receipt.integrated_at.seconds = 1_800_000_000
    return answer.SerializeToString()


@pytest.fixture(params=[_fake_receipt, bytes], ids=["forged", "empty"])
def proxy(enrolled: Cli, request: pytest.FixtureRequest) -> Iterator[str]:
    """HOST:PORT of a proxy in front of the enrolled device's server whose SubmitCapture
    answers a forged receipt (`_fake_receipt`), or an empty answer (no receipt at all:
    before, "logged at leaf 0"), never forwarding it."""
    fake: Callable[[], bytes] = request.param
    with relay(enrolled.server, {SUBMIT: lambda request, context, forward: fake()}) as address:
        yield address


def _queued_unlogged(cli: Cli, photo: Path, out: str, err: str) -> None:
    """The claim of ``photo`` is still queued, and its sidecar holds no receipt."""
    assert "Traceback" not in err, err
    assert len(DeviceHome(cli.home).pending()) == 1, (out, err)
    sidecar = json.loads(photo.with_name(photo.name + ".prov").read_text())
    assert sidecar["receipt"] is None, sidecar


def _sync_and_verify(cli: Cli, photo: Path) -> None:
    """`prov device sync` with the real server logs the queued claim: SIGNED_ORIGINAL."""
    rc, out, err = cli("device", "sync", "--server", cli.server)
    assert rc == 0, (rc, out, err)
    assert DeviceHome(cli.home).pending() == []
    rc, out, err = cli("verify", str(photo), "--no-detect", "--server", cli.server)
    assert rc == 0 and "SIGNED_ORIGINAL" in out, (rc, out, err)


def test_sign_keeps_the_claim_queued_on_a_receipt_that_does_not_verify(
    enrolled: Cli, proxy: str, tmp_path: Path
) -> None:
    """(h-att45c: before, `prov sign` printed "signed (#1) and logged at leaf 3", exit 0,
    removed the claim from the queue and wrote the fake receipt into the sidecar: the
    claim was never logged, `prov device sync` had nothing to send, and signing the file
    again said "already signed ... and logged at leaf 3; not signed again".)"""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo), "--server", proxy)
    assert "logged at leaf" not in out, (rc, out, err)
    assert "queued" in out, (rc, out, err)
    said = f"the server at {proxy} answered a receipt that does not verify"
    assert said in out + err, (out, err)
    _queued_unlogged(enrolled, photo, out, err)
    _sync_and_verify(enrolled, photo)


def test_sync_keeps_the_claim_queued_on_a_receipt_that_does_not_verify(
    enrolled: Cli, proxy: str, tmp_path: Path
) -> None:
    """`prov device sync` through such a server: nothing taken as logged, the reason said."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo), "--server", closed_port())
    assert rc == 4 and "queued" in out, (rc, out, err)
    rc, out, err = enrolled("device", "sync", "--server", proxy)
    assert "logged at leaf" not in out, (rc, out, err)
    said = f"the server at {proxy} answered a receipt that does not verify"
    assert said in out + err, (out, err)
    _queued_unlogged(enrolled, photo, out, err)
    _sync_and_verify(enrolled, photo)


def test_a_last_sequence_far_past_the_device_is_not_adopted(enrolled: Cli, tmp_path: Path) -> None:
    """A refusal as "sequence does not advance" makes the device read the log's last
    sequence for its key (GetDevice) and number past it (`DeviceHome._catch_up`). One far
    past the device's is not adopted, and the reason says so (h-att45c found it through a
    proxy answering 2^64 - 1: "its next claim is numbered 18446744073709551616", and
    every later `prov sign` said "this device has used its last sequence number": one
    forged answer ended the key; h-dev45 fixed it on main meanwhile with
    `SEQUENCE_MARGIN`; this is the same attack end to end, through a real proxy)."""

    def refuse(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, "sequence does not advance")
        raise AssertionError("abort returned")

    def forged(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        device = pb.Device.FromString(forward(request))
        device.last_sequence = 2**64 - 1
        return device.SerializeToString()

    answers: dict[str, RelayAnswer] = {
        SUBMIT: refuse,
        "/provenance.v1.DeviceRegistry/GetDevice": forged,
    }
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    with relay(enrolled.server, answers) as address:
        rc, out, err = enrolled("sign", str(photo), "--server", address)
    assert rc == 1 and "refused" in out + err, (rc, out, err)
    assert "18446744073709551616" not in out + err, (out, err)
    said = " ".join((out + err).split())
    assert "not adopted" in said, said
    assert DeviceHome(enrolled.home).state().last_sequence == 1, (out, err)
    other = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "other.jpg"))
    other.write_bytes(other.read_bytes() + b"another capture")
    rc, out, err = enrolled("sign", str(other))  # the real server: signed and logged
    assert rc == 0 and "logged at leaf" in out, (rc, out, err)


def test_a_log_key_that_cannot_be_read_sends_no_claim_and_sets_none_aside(
    enrolled: Cli, tmp_path: Path
) -> None:
    """A proxy whose GetLogKey answers no key: the log key is asked before any claim is
    sent, so no claim reaches it, and the claim stays queued however many syncs fail so
    (before: each sync sent the claim, which the log took, then failed on the key as
    `INTERNAL`; at the third failed attempt, the offline one counted, the claim was set
    aside as refused although the log held it, and the third sync said "nothing
    queued")."""
    submitted: list[bytes] = []

    def count(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        submitted.append(request)
        return forward(request)

    answers: dict[str, RelayAnswer] = {
        SUBMIT: count,
        "/provenance.v1.Log/GetLogKey": lambda request, context, forward: b"",
    }
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo), "--server", closed_port())
    assert rc == 4 and "queued" in out, (rc, out, err)
    with relay(enrolled.server, answers) as address:
        for _ in range(3):
            rc, out, err = enrolled("device", "sync", "--server", address)
            flat = " ".join((out + err).split())
            assert rc == 1 and "could not be read" in flat and "no claim was sent" in flat, flat
        second = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "second.jpg"))
        second.write_bytes(second.read_bytes() + b"a second capture")
        rc, out, err = enrolled("sign", str(second), "--server", address)
        flat = " ".join((out + err).split())
        # in words, not "the server deferred the log key of the server at ..."
        assert "queued: the log key of the server at" in flat, flat
        assert "deferred" not in flat, flat
    assert submitted == []
    h = DeviceHome(enrolled.home)
    assert len(h.pending()) == 2 and h.set_aside() == [], (out, err)
    _sync_and_verify(enrolled, photo)
