"""A VerifyFile whose caller gives up (its deadline passes, or it cancels the call) stops
the server's decode of its video and gives its decode slot back, so the next caller is
served: a real `prov serve` with one decode slot, a real slow video (140 s of flat 4K at
30 fps, about 17 s to verify here), a real small image after it."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import ServerProc, read_line, start_server

#: The one decode slot is waited for this long: far less than the slow video's decode.
DECODE_WAIT_S = 3
#: The abandoned call's deadline: time to upload and start decoding, far less than the
#: decode.
DEADLINE_S = 4.0


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("i") / "small.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), np.uint8)).save(path)
    return path


@pytest.fixture()
def one_slot(tmp_path: Path) -> Iterator[ServerProc]:
    srv = start_server(
        tmp_path / "p.db", "--max-decodes", "1", "--decode-wait-seconds", str(DECODE_WAIT_S)
    )
    try:
        _wait_for(lambda: _decoder(srv) is not None)  # started in the background
        yield srv
    finally:
        srv.stop()


def _wait_for(done: Callable[[], bool]) -> None:
    for _ in range(6000):  # hang guard: 60 s
        if done():
            return
        time.sleep(0.01)
    raise AssertionError("not within 60 s")


def _decoder(server: ServerProc) -> psutil.Process | None:
    """The server's decoder process (`provenance.media.video.worker`), if running."""
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        try:
            if "provenance.media.video.worker" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _decoding(server: ServerProc) -> bool:
    """Whether the server has a decoding child (a child of its decoder process) now."""
    decoder = _decoder(server)
    try:
        return decoder is not None and bool(decoder.children())
    except psutil.NoSuchProcess:
        return False


def _abandon(
    client: ProvenanceClient, server: ServerProc, video: Path, cancel: bool
) -> grpc.StatusCode:
    """VerifyFile of ``video`` given up once the server decodes it (its decoding child
    runs, so it holds the slot): cancelled by us, or at its `DEADLINE_S` deadline. Its
    status code."""
    stream, _ = client._upload(video, pb.VerifyFileHeader())
    call = client._verification.VerifyFile.future(stream, timeout=None if cancel else DEADLINE_S)
    _wait_for(lambda: call.done() or _decoding(server))
    assert not call.done(), "the call ended before its video was decoded: nothing to stop"
    if cancel:
        call.cancel()
    code = ended_code(call)
    assert code != grpc.StatusCode.OK, "the call was answered"
    return code


def ended_code(call: grpc.Future[Any]) -> grpc.StatusCode:
    """How ``call`` ended (OK when answered), once it has."""
    try:
        call.result()
    except grpc.FutureCancelledError:
        return grpc.StatusCode.CANCELLED
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("cancel", [False, True], ids=["deadline", "cancelled"])
def test_a_caller_that_gives_up_frees_the_decode_slot_for_the_next(
    one_slot: ServerProc, slow_video: Path, small_image: Path, cancel: bool
) -> None:
    """Before, the abandoned call's decode ran on to its end (the 120 s decoding limit at
    most), holding the only slot, and the image after it was refused: 'the server is
    decoding 1 files, its limit (--max-decodes), and none finished within 4 s'."""
    with ProvenanceClient(one_slot.address) as client:
        code = _abandon(client, one_slot, slow_video, cancel)
        expected = grpc.StatusCode.CANCELLED if cancel else grpc.StatusCode.DEADLINE_EXCEEDED
        assert code == expected
        report = client.verify_file(small_image)
    assert report.status.value == "UNSIGNED", report


def test_a_web_verify_whose_client_goes_away_frees_the_decode_slot(
    slow_video: Path, small_image: Path, tmp_path: Path
) -> None:
    """POST /api/v1/verify of the slow video, its connection closed once the server
    decodes it: the page cancels its VerifyFile, so the decode stops and the next
    upload is verified. Before, the page waited on for the service's answer (the
    decode's end) with nobody to give it to, and the image after it was refused ('the
    server is decoding 1 files, its limit (--max-decodes) ...')."""
    srv = start_server(
        tmp_path / "p.db",
        "--http",
        "127.0.0.1:0",
        "--max-decodes",
        "1",
        "--decode-wait-seconds",
        str(DECODE_WAIT_S),
    )
    try:
        web = read_line(srv.proc, "web on ", timeout=60)
        _wait_for(lambda: _decoder(srv) is not None)
        host, _, port = web.removeprefix("http://").rstrip("/").rpartition(":")
        boundary = "dec40boundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.webm"'
                "\r\nContent-Type: video/webm\r\n\r\n"
            ).encode()
            + slow_video.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.request(
            "POST",
            "/api/v1/verify",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        _wait_for(lambda: _decoding(srv))
        conn.close()  # the browser went away
        with httpx.Client(base_url=web, timeout=60) as client:
            files = {"file": (small_image.name, small_image.read_bytes())}
            r = client.post("/api/v1/verify", files=files)
    finally:
        srv.stop()
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "UNSIGNED", r.text
