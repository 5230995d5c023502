"""`prov serve --metrics-listen`: Prometheus /metrics scraped during a real run."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from tests.conftest import SAMPLES, Cli, ServerProc, read_line, start_server, write_video
from tests.test_video_budget import _encode

pytestmark = pytest.mark.slow  # the server loads the detector


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    srv = start_server(tmp_path / "prov.db", "--metrics-listen", "127.0.0.1:0", "--detector")
    yield srv
    srv.stop()


def _metrics_url(srv: ServerProc) -> str:
    return read_line(srv.proc, "metrics on ")


def _scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _total(m: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lb, v in m.get(name, []) if all(lb.get(k) == w for k, w in labels.items()))


def test_metrics_families_count_a_run(enrolled: Cli, server: ServerProc, tmp_path: Path) -> None:
    url = _metrics_url(server)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    other = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    rc, _, err = enrolled("sign", str(photo))
    assert rc == 0, err
    rc, _, err = enrolled("verify", str(other))  # unsigned: index search, detector, C2PA
    assert rc == 11, err
    with ProvenanceClient(server.address) as c, pytest.raises(TransportError) as e:
        c.get_device(b"\x07" * 32)  # NOT_FOUND
    assert e.value.code == "NOT_FOUND", e.value
    # grpc.aio sends an abort's status from the event loop before the handler's pool thread
    # counts the call, so the client can scrape first (seen under load): wait for it, for
    # at most 30 s (a loaded machine can keep that thread from running for seconds)
    m = _scrape(url)
    give_up = time.monotonic() + 30
    while _total(m, "prov_rpc_requests_total", rpc="GetDevice") < 1:
        if time.monotonic() > give_up:
            break
        time.sleep(0.05)
        m = _scrape(url)
    assert _total(m, "prov_rpc_requests_total", rpc="SubmitCapture", code="OK") >= 1
    assert _total(m, "prov_rpc_requests_total", rpc="GetDevice", code="NOT_FOUND") == 1
    assert _total(m, "prov_rpc_duration_seconds_count", rpc="VerifyFile", code="OK") >= 1
    assert _total(m, "prov_upload_bytes_total", rpc="VerifyFile") == other.stat().st_size
    for name in (
        "prov_log_appends_total",
        "prov_commit_batch_size_count",
        "prov_commit_duration_seconds_count",
        "prov_log_tree_size",
        "prov_index_hashes",
        "prov_index_lookup_duration_seconds_count",
        "prov_detector_batch_size_count",
        "prov_c2pa_reads_total",
    ):
        assert _total(m, name) > 0, name
    for gauge in ("prov_detector_queue_depth", "prov_c2pa_workers_busy"):
        assert gauge in m, gauge  # at rest both are 0


def test_health_reflection_and_the_webs_lookup_are_counted(tmp_path: Path) -> None:
    """The gRPC health check, a reflection stream and the web page's POST /api/v1/lookup
    (the page's Lookup RPC) are counted in ``prov_rpc_requests_total`` and
    ``prov_rpc_duration_seconds`` as every other RPC is (by method and status code); the
    web page's other API calls are counted by their RPCs the same way. (Their lack of a
    per-client rate limit is what the notes called "unmetered".) Real server, real
    /metrics, real calls."""
    srv = start_server(
        tmp_path / "prov.db", "--metrics-listen", "127.0.0.1:0", "--http", "127.0.0.1:0"
    )
    try:
        url = _metrics_url(srv)
        web = read_line(srv.proc, "web on ")
        with grpc.insecure_channel(srv.address) as channel:
            checker: Any = health_pb2_grpc.HealthStub(channel)  # the stub declares no methods
            health = checker.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            asked = iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
            assert len(list(stub.ServerReflectionInfo(asked, timeout=10))) == 1
        body = json.dumps({"queries": [{"sha256": "00" * 32}]}).encode()
        request = urllib.request.Request(
            f"{web}/api/v1/lookup", body, {"content-type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
        m = _scrape(url)
        for rpc in ("Check", "ServerReflectionInfo", "Lookup"):
            assert _total(m, "prov_rpc_requests_total", rpc=rpc, code="OK") == 1, rpc
            assert _total(m, "prov_rpc_duration_seconds_count", rpc=rpc, code="OK") == 1, rpc
    finally:
        srv.stop()


def test_one_verify_decodes_a_video_once_per_frame_set(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """prov_video_decodes_total across VerifyFile and DetectFile calls that score video
    (issue 15): the detector's frames come from the 1 Hz decode of the soft bindings, so
    a signed clip is decoded once, an unsigned one twice (the dense pass that looks for
    trimmed clips hashes other frames), `prov detect` once, and a video over the decoding
    budget is refused by its one decode. Before, each call that asked for the detector
    decoded once more."""
    url = _metrics_url(server)
    clip = Path(shutil.copy(SAMPLES / "fabric_pattern.mp4", tmp_path / "clip.mp4"))
    rc, _, err = enrolled("sign", str(clip))
    assert rc == 0, err
    other = tmp_path / "other.mp4"  # no claim's frames: UNSIGNED after the dense pass
    rng = np.random.default_rng(15)
    write_video(other, (rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(5)))
    for path, args, rc_wanted, decodes in (
        (clip, ("verify",), 0, 1),
        (clip, ("verify", "--no-detect"), 0, 1),
        (other, ("verify",), 11, 2),
        (other, ("detect",), 0, 1),
    ):
        before = _total(_scrape(url), "prov_video_decodes_total")
        rc, out, err = enrolled(*args, str(path), "--json")
        assert rc == rc_wanted, (args, err)
        if "--no-detect" not in args:
            block = json.loads(out)
            block = block["results"][0] if "results" in block else block["detector"]
            assert all(0.0 <= f["score"] <= 1.0 for f in block["timeline"]), block
        assert _total(_scrape(url), "prov_video_decodes_total") - before == decodes, args
    # over the decoding budget (the review's 8K file): refused from its header by the
    # one decode, the detector asked or not
    big = tmp_path / "big8k.mp4"
    grey = np.full((4320, 7680, 3), 128, np.uint8)
    _encode(big, (grey for _ in range(40)), 1, "51")  # one array: `_encode` converts it once
    before = _total(_scrape(url), "prov_video_decodes_total")
    with ProvenanceClient(server.address) as c, pytest.raises(TransportError) as e:
        c.verify_file(big, detect=True)
    assert e.value.code == "RESOURCE_EXHAUSTED" and "decoding budget" in str(e.value), e.value
    assert _total(_scrape(url), "prov_video_decodes_total") - before == 1
