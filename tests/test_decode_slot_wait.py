"""A VerifyFile whose caller gives up (cancels it, or its deadline passes) while it waits
for a decode slot (--max-decodes) is not decoded once a slot frees up: its wait ends
with the call and the slot goes to the next caller. A real `prov serve` with one decode
slot held by a real slow video, a real small image waiting behind it, /metrics read for
what the server decoded."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.api import ProvenanceClient
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import read_line, start_server
from tests.test_decode_call_end import (
    _decoder,
    _decoding,
    ended_code,
    small_image,
)

__all__ = ["small_image"]  # a module fixture, shared with test_decode_call_end

#: The image's deadline: time to upload it and start waiting, far less than the video's
#: decode.
DEADLINE_S = 3.0


def _wait_for(done: Callable[[], bool], what: str) -> None:
    for _ in range(600):  # hang guard: 60 s
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within 60 s: {what}")


def _metrics(url: str) -> dict[str, float]:
    """The decode-slot families of /metrics, by sample name (a wait by its outcome)."""
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(("prov_decode", "prov_decodes")):
                outcome = s.labels.get("outcome")
                out[f"{s.name}:{outcome}" if outcome else s.name] = s.value
    return out


@pytest.mark.parametrize("cancel", [True, False], ids=["cancelled", "deadline"])
def test_a_call_given_up_while_it_waits_for_a_decode_slot_is_not_decoded(
    tmp_path: Path, slow_video: Path, small_image: Path, cancel: bool
) -> None:
    """The slow video holds the one slot; the image's VerifyFile waits for it (the wait
    allowed: 120 s) and its caller gives up; then the video's call is cancelled, which
    frees the slot. The image is never decoded (/metrics: one slot taken, the video's;
    one wait ended with its call), and the slot is free for the next image. Before, the
    cancelled call waited on, took the slot the video gave back and decoded the image
    for nobody (2 slots taken, no wait ended)."""
    server = start_server(
        tmp_path / "p.db",
        "--max-decodes",
        "1",
        "--decode-wait-seconds",
        "120",
        "--metrics-listen",
        "127.0.0.1:0",
    )
    try:
        url = read_line(server.proc, "metrics on ")
        _wait_for(lambda: _decoder(server) is not None, "the decoder process starts")
        with ProvenanceClient(server.address) as client:
            verify = client._verification.VerifyFile
            video = verify.future(client._upload(slow_video, pb.VerifyFileHeader())[0])
            _wait_for(lambda: video.done() or _decoding(server), "the video is decoded")
            assert not video.done(), "the video was answered before it held the slot"
            stream, _ = client._upload(small_image, pb.VerifyFileHeader())
            image = verify.future(stream, timeout=None if cancel else DEADLINE_S)
            _wait_for(
                lambda: _metrics(url).get("prov_decodes_waiting") == 1 or image.done(),
                "the image waits for the slot",
            )
            if cancel:
                image.cancel()
            code = ended_code(image)
            assert code == (
                grpc.StatusCode.CANCELLED if cancel else grpc.StatusCode.DEADLINE_EXCEEDED
            )
            video.cancel()  # its decode stops, and the slot is free
            assert ended_code(video) == grpc.StatusCode.CANCELLED
            _wait_for(
                lambda: (
                    _metrics(url).get("prov_decodes_waiting") == 0
                    and _metrics(url).get("prov_decode_slots_busy") == 0
                ),
                "nothing waits for the slot or holds it",
            )
            seen = _metrics(url)
            assert seen.get("prov_decode_slot_waits_total:taken") == 1, seen  # the video's
            assert seen.get("prov_decode_slot_waits_total:call_ended") == 1, seen
            report = client.verify_file(small_image)  # the slot is free
        assert report.status.value == "UNSIGNED", report
        seen = _metrics(url)
        assert seen.get("prov_decode_slot_waits_total:taken") == 2, seen
        assert seen.get("prov_decode_slots_busy") == 0, seen
    finally:
        server.stop()
