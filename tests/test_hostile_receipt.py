"""A server (or a proxy in front of one) that answers a submission with a receipt that
does not verify: the claim is not taken as logged. It stays queued, `prov sign` says why,
and `prov device sync` against the real log submits it later. A real server on a real
port, a real gRPC proxy in front of it, the real CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.device import DeviceHome
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import SAMPLES, Cli, closed_port

SUBMIT = "/provenance.v1.Captures/SubmitCapture"


def _fake_receipt() -> bytes:
    """A SubmitCapture answer whose receipt proves nothing: a leaf index, a time, and a
    checkpoint that is no signed note (a proxy's or a broken server's answer)."""
    answer = pb.SubmitCaptureResponse()
    answer.receipt.leaf_index = 3
    answer.receipt.checkpoint = "garbage\n"
    answer.receipt.integrated_at.seconds = 1_800_000_000
    return answer.SerializeToString()


class _Proxy(grpc.GenericRpcHandler):
    """Forwards every unary call to ``upstream`` as it is, but answers SubmitCapture
    itself, never forwarding it."""

    def __init__(self, upstream: str, submit: Callable[[], bytes]) -> None:
        self.channel = grpc.insecure_channel(upstream)
        self.submit = submit

    def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = str(details.method)
        if method == SUBMIT:
            return grpc.unary_unary_rpc_method_handler(lambda request, context: self.submit())
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(method)

        def forward(request: bytes, context: Any) -> bytes:
            try:
                answer: bytes = call(request, timeout=60, metadata=context.invocation_metadata())
            except grpc.RpcError as e:
                context.abort(e.code(), e.details())
            return answer

        return grpc.unary_unary_rpc_method_handler(forward)


@pytest.fixture(params=[_fake_receipt, bytes], ids=["forged", "empty"])
def proxy(enrolled: Cli, request: pytest.FixtureRequest) -> Iterator[str]:
    """HOST:PORT of a proxy in front of the enrolled device's server whose SubmitCapture
    answers a forged receipt (`_fake_receipt`), or an empty answer (no receipt at all:
    before, "logged at leaf 0")."""
    handler = _Proxy(enrolled.server, request.param)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)
    handler.channel.close()


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
    assert rc == 0 and "queued" in out, (rc, out, err)
    rc, out, err = enrolled("device", "sync", "--server", proxy)
    assert "logged at leaf" not in out, (rc, out, err)
    said = f"the server at {proxy} answered a receipt that does not verify"
    assert said in out + err, (out, err)
    _queued_unlogged(enrolled, photo, out, err)
    _sync_and_verify(enrolled, photo)
