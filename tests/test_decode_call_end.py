"""A VerifyFile whose caller gives up (its deadline passes, or it cancels the call) stops
the server's decode of its video and gives its decode slot back, so the next caller is
served: a real `prov serve` with one decode slot, a real slow video (120 flat 4K frames at
1 fps, about 10-25 s to sample here), a real small image after it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import ServerProc, start_server, write_video

#: The one decode slot is waited for this long: far less than the slow video's decode.
DECODE_WAIT_S = 3
#: The abandoned call's deadline: time to upload and start decoding, far less than the
#: decode.
DEADLINE_S = 4.0


@pytest.fixture(scope="module")
def slow_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """140 flat 3840x2160 frames at 1 fps (1.16 billion sampled pixels, under the
    decoding budget): every frame is a 1 Hz sample, converted and PDQ-hashed at 4K
    (78-176 ms each here: 11-25 s)."""
    path = tmp_path_factory.mktemp("v") / "slow4k.mp4"
    grey = np.full((2160, 3840, 3), 128, np.uint8)
    write_video(path, (grey for _ in range(140)), fps=1, crf=51)
    return path


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
    try:
        call.result()
    except grpc.FutureCancelledError:
        return grpc.StatusCode.CANCELLED
    except grpc.RpcError as e:
        return e.code()
    raise AssertionError("the call was answered")


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
