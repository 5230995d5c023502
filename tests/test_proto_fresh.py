"""The committed generated modules match what scripts/gen_proto.py makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import ROOT, ServerProc


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "codegen produced nothing"
    stale = [str(p) for p in generated if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert not stale, f"regenerate with `make proto`: stale {stale}"


def test_reflection_lists_our_services(server: ServerProc) -> None:
    chan = grpc.insecure_channel(server.address)
    stub = reflection_pb2_grpc.ServerReflectionStub(chan)
    responses = stub.ServerReflectionInfo(  # type: ignore[operator]  # the stub types it as binascii.Incomplete
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    chan.close()
    assert {
        "provenance.v1.DeviceRegistry",
        "provenance.v1.Captures",
        "provenance.v1.Verification",
        "provenance.v1.Log",
        "grpc.health.v1.Health",
    } <= names
