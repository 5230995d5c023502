"""A server that answers with what no provenance server sends (an empty report, a
verdict this client does not know, an empty log key): the client says so in one
`error:` line and exits 1, never a traceback and never exit 0. Such a server is a
stranger's gRPC service on the port, a proxy answering empty messages, or a newer
server with a verdict added. A real gRPC server on a real port, the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from clients.cli import main as prov_main
from tests.conftest import ROOT, SAMPLES, Answers


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = prov_main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    ("status", "said"),
    [(0, "no verdict"), (99, "verdict 99, which this client does not know")],
)
def test_a_report_without_a_known_verdict_is_an_error_not_a_traceback(
    hostile: Callable[[Answers], str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: int,
    said: str,
) -> None:
    """(h-att41: before, "ValueError: 'VERDICT_UNSPECIFIED' is not a valid Verdict" and
    a traceback, exit 1, for an empty report; the same for a verdict added later.)"""
    report = bytes([0x08, status]) if status else b""  # field 1 (status), as a varint
    address = hostile({"VerifyFile": lambda: report})
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    for json in ((), ("--json",)):
        rc, out, err = _run(capsys, "verify", str(photo), "--no-detect", "--server", address, *json)
        assert rc == 1, (rc, out, err)
        assert "Traceback" not in err and "ValueError" not in err, err
        assert f"error: the server at {address} answered a report with {said}" in err, err


def test_an_empty_log_key_is_an_error_not_an_empty_line(
    hostile: Callable[[Answers], str], capsys: pytest.CaptureFixture[str]
) -> None:
    """(h-att41: before, `prov log key` printed an empty line and exited 0.)"""
    address = hostile({"GetLogKey": lambda: b""})
    rc, out, err = _run(capsys, "log", "key", "--server", address)
    assert rc == 1 and out == "", (rc, out, err)
    assert f"error: the server at {address} answered a log key that is no verifier key" in err, err
    assert "Traceback" not in err, err


def test_an_answer_that_is_no_message_of_ours_is_one_line_without_a_traceback(
    hostile: Callable[[Answers], str],
) -> None:
    """An answer that does not parse as the reply expected is said in our words, in one
    line, in a real `prov` process (h-att41: before, gRPC logged "Exception deserializing
    message!" with a traceback, then "error: Exception deserializing response!
    [INTERNAL]")."""
    address = hostile({"GetLogKey": lambda: b"\xff\xff\xff"})
    run = subprocess.run(
        [sys.executable, "-m", "clients.cli", "log", "key", "--server", address],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 1 and run.stdout == "", (run.returncode, run.stdout, run.stderr)
    assert run.stderr == (
        f"error: the server at {address} answered with a message that is no reply of this"
        " service: is it a provenance server?\n"
    ), run.stderr


def _lookup_answering(status: int, left_out: str | None = None) -> grpc.GenericRpcHandler:
    """A Lookup that answers every query with a report of verdict ``status`` (and only
    that: no reasons, no evidence), but those whose ref ends in ``left_out``: no result
    at all for them (a server or proxy that drops part of its reply)."""
    from provenance.v1 import provenance_pb2 as pb

    def lookup(request: bytes, context: Any) -> bytes:
        asked = pb.LookupRequest.FromString(request)
        return pb.LookupResponse(
            results=[
                pb.LookupResult(ref=q.ref, report=pb.VerificationReport(status=status))  # type: ignore[arg-type]
                for q in asked.queries
                if left_out is None or not q.ref.endswith(left_out)
            ]
        ).SerializeToString()

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
            if str(details.method) == "/provenance.v1.Verification/Lookup":
                return grpc.unary_unary_rpc_method_handler(lookup)
            return None

    return Handler()


def _scan_photos(
    handler: grpc.GenericRpcHandler,
    names: list[str],
    report: Path,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str, int]:
    """`prov scan` (in this process, no workers) of a folder beside ``report`` holding a
    copy of rocket.jpg under each of ``names``, against a gRPC server of ``handler`` on a
    real port: (exit code, stdout, stderr, the server's port)."""
    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        folder = report.parent / "photos"
        folder.mkdir()
        for name in names:
            shutil.copy(SAMPLES / "rocket.jpg", folder / name)
        address = f"127.0.0.1:{port}"
        args = ("scan", str(folder), "--report", str(report), "--server", address)
        rc, out, err = _run(capsys, *args, "--workers", "0")
    finally:
        server.stop(None)
    return rc, out, err, port


@pytest.mark.parametrize(
    ("status", "said"),
    [(0, "no verdict"), (99, "verdict 99, which this client does not know")],
)
def test_scan_gives_a_file_of_an_unknown_verdict_a_row_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, said: str
) -> None:
    """`prov scan` against a server that answers a verdict this client does not know (a
    newer server's) or none: each file gets a row saying so, with no status, and the scan
    ends (h-claim41: before, ``pb.Verdict.Name`` raised ValueError for 99 and the scan
    stopped; 0 gave a "VERDICT_UNSPECIFIED" row)."""
    import json

    report = tmp_path / "scan.jsonl"
    rc, out, err, _ = _scan_photos(_lookup_answering(status), ["rocket.jpg"], report, capsys)
    assert "Traceback" not in err and "ValueError" not in err, err
    rows = [json.loads(line) for line in report.read_text().splitlines() if line.strip()]
    files = [r for r in rows if r.get("path", "").endswith("rocket.jpg")]
    assert len(files) == 1, rows
    row = files[0]
    assert row["status"] is None, row
    assert "VERDICT_UNSPECIFIED" not in json.dumps(rows)
    assert f"answered a report with {said}" in row["error"], row
    if status:
        assert "update prov" in row["error"], row
    assert rc in (0, 1), (rc, out, err)


def test_scan_says_so_when_the_server_leaves_a_file_out_of_its_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Lookup reply with no result for one of the files asked about gives that file a
    row with an error saying so, counted as ERROR (h-att45c: before, its row had no
    status and no error, and the summary, CSV and HTML counted the photo as a SIDECAR,
    exit 0: a file never verified read as if it had been set aside on purpose)."""
    import csv
    import json

    from provenance.v1 import provenance_pb2 as pb

    report = tmp_path / "scan.jsonl"
    handler = _lookup_answering(pb.UNSIGNED, "left-out.jpg")
    rc, out, err, port = _scan_photos(handler, ["answered.jpg", "left-out.jpg"], report, capsys)
    assert "Traceback" not in err, err
    rows = {
        Path(r["path"]).name: r
        for r in (json.loads(line) for line in report.read_text().splitlines() if line.strip())
    }
    assert rows["answered.jpg"]["status"] == "UNSIGNED", rows
    left = rows["left-out.jpg"]
    assert left["status"] is None, left
    assert left["error"] == (
        f"the server at 127.0.0.1:{port} answered no result for this file; scan it again"
    ), left
    with open(report.with_suffix(".csv"), newline="") as f:
        by_name = {Path(r["path"]).name: r for r in csv.DictReader(f)}
    assert by_name["left-out.jpg"]["error"] == left["error"], by_name
    assert "SIDECAR" not in out and "ERROR 1" in out + err, (out, err)
    assert rc == 0, (rc, out, err)
