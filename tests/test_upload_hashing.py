"""Uploads hashed beside the receiving thread, upload messages read without copies, and
the per-file timestamp of Lookup replies built without protobuf's slow path."""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from clients.device import measure
from provenance.core import hash_threads
from provenance.core.hash_threads import BackgroundSha256, run_beside, start_beside
from provenance.core.verify import FileFacts
from provenance.core.video_binding import ChunkedHasher
from provenance.media.inspect import InspectConfig, Upload, embedded_chunk_facts
from provenance.server.pipeline import unlocated_note
from provenance.server.rpc import ServerConfig, create_server
from provenance.server.rpc_input import UPLOAD_METHODS, DataChunk, _upload_chunk
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from provenance.wire.contract import MAX_CLAIM_CHUNK_HASHES
from provenance.wire.convert import ts_to_pb
from tests.conftest import ADMIN_TOKEN, SAMPLES
from tests.inproc import InProc


def test_background_sha256_matches_hashlib_past_its_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hash_threads, "BACKLOG_BYTES", 3000)  # the writer has to wait
    pieces = [os.urandom(n) for n in (0, 1, 2047, 2048, 5000, 70_000, 3)]
    stream = BackgroundSha256()
    for p in pieces:
        stream.update(p)
    stream.update(memoryview(b"tail"))
    whole = b"".join(pieces) + b"tail"
    assert stream.size == len(whole)
    assert stream.digest() == hashlib.sha256(whole).digest()
    stream.update(b"more")  # the stream continues after a digest
    assert stream.digest() == hashlib.sha256(whole + b"more").digest()


def test_run_beside_runs_both_and_raises_either_error() -> None:
    seen: list[str] = []
    run_beside(lambda: seen.append("helper"), lambda: seen.append("caller"))
    assert sorted(seen) == ["caller", "helper"]

    def boom() -> None:
        raise ValueError("helper failed")

    with pytest.raises(ValueError, match="helper failed"):
        run_beside(boom, lambda: None)

    def fails_here() -> None:
        raise KeyError("caller failed")

    with pytest.raises(KeyError):
        run_beside(lambda: None, fails_here)
    run_beside(lambda: None, lambda: None)  # the helpers still work afterwards


def test_upload_hashes_bytes_views_and_mutable_buffers_alike() -> None:
    data = b"no media here\n" + os.urandom(3 << 20)
    buf = bytearray(data[2 << 20 :])
    with Upload(max_bytes=1 << 30) as upload:
        upload.write(data[: 1 << 20])
        upload.write(memoryview(data)[1 << 20 : 2 << 20])
        upload.write(buf)
        buf[:] = bytes(len(buf))  # reused by its owner at once: the upload copied it
        assert upload.size == len(data)
        assert upload.sha256 == hashlib.sha256(data).digest()
        assert not upload.kept  # no media type: only the head was kept


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16_384, 1 << 20])
def test_data_only_upload_messages_are_views_equal_to_protobufs(size: int) -> None:
    parse = _upload_chunk(pb.VerifyFileChunk.FromString)
    data = os.urandom(size)
    raw = pb.VerifyFileChunk(data=data).SerializeToString()
    chunk = parse(raw)
    assert isinstance(chunk, DataChunk)
    assert chunk.WhichOneof("part") == pb.VerifyFileChunk.FromString(raw).WhichOneof("part")
    assert chunk.data == data and chunk.data.obj is raw  # a view: no copy


def test_other_upload_messages_are_parsed_by_protobuf() -> None:
    parse = _upload_chunk(pb.VerifyFileChunk.FromString)
    header = pb.VerifyFileChunk(header=pb.VerifyFileHeader(filename="a.jpg", size_bytes=9))
    assert parse(header.SerializeToString()) == header
    # a data field followed by another field, and a length past the end: protobuf decides
    twice = pb.VerifyFileChunk(data=b"ab").SerializeToString() * 2
    assert parse(twice) == pb.VerifyFileChunk.FromString(twice)
    with pytest.raises(Exception):  # noqa: B017 - protobuf's DecodeError
        parse(bytes((0x12, 0x05)) + b"abc")
    assert parse(b"") == pb.VerifyFileChunk()
    assert UPLOAD_METHODS == {
        "/provenance.v1.Verification/VerifyFile",
        "/provenance.v1.Verification/DetectFile",
    }


def test_timestamps_are_what_protobuf_makes_of_them() -> None:
    """`ts_to_pb` (timedelta arithmetic, called once per file of a Lookup reply) equals
    `Timestamp.FromDatetime` over the whole range, in any time zone."""
    rng = random.Random(7)
    for _ in range(2000):
        offset = timezone(timedelta(minutes=rng.randint(-900, 900)))
        when = datetime(1, 1, 2, tzinfo=UTC) + timedelta(
            seconds=rng.randint(0, 315_537_000_000), microseconds=rng.randint(0, 999_999)
        )
        want = Timestamp()
        want.FromDatetime(when)
        assert ts_to_pb(when.astimezone(offset)) == want
    assert ts_to_pb(None) is None


def test_start_beside_returns_results_in_the_order_asked_and_raises_errors() -> None:
    jobs = [start_beside(partial(pow, k, 2)) for k in range(20)]  # spread over the helpers
    assert [job() for job in jobs] == [k * k for k in range(20)]

    def fails() -> int:
        raise ValueError("hash failed")

    job = start_beside(fails)
    with pytest.raises(ValueError, match="hash failed"):
        job()


def test_an_upload_behind_on_hashing_says_so_and_is_waited_for_off_the_caller() -> None:
    """A caller that finds `hashing_behind` is woken by `when_hashed` once the hashing has
    caught up, so that an event loop never blocks inside `write` (VerifyFile's loop)."""
    upload = Upload(64 << 20)
    busy = threading.Event()
    upload._digest._helper.start(busy.wait)  # the hashing thread is held up
    upload.write(b"no media here\n" + bytes(3 << 20))  # under the backlog: returns at once
    behind = upload.hashing_behind  # (asserted directly, mypy would keep it True below)
    assert behind
    woken = threading.Event()
    upload.when_hashed(woken.set)
    assert not woken.wait(0.2)  # still waiting for the held-up hashing
    busy.set()
    assert woken.wait(10) and not upload.hashing_behind
    assert upload.sha256 == hashlib.sha256(b"no media here\n" + bytes(3 << 20)).digest()


def test_call_within_wakes_from_the_helper_once_it_is_that_close() -> None:
    """`BackgroundFeed.call_within` calls back on the helper's thread as soon as the feed
    is at most the given bytes behind (the rest still to do), at once when it already is,
    and when the feeding fails."""
    stream = BackgroundSha256()
    busy = threading.Event()
    stream._helper.start(busy.wait)  # the hashing thread is held up
    piece = bytes(1 << 20)
    for _ in range(3):
        stream.update(piece)
    seen: list[tuple[int, str]] = []
    woken = threading.Event()

    def wake() -> None:
        seen.append((stream.behind, threading.current_thread().name))
        woken.set()

    stream.call_within(1 << 20, wake)
    assert not woken.wait(0.2)  # 3 MiB behind, held up
    busy.set()
    assert woken.wait(10)
    # called right after the second piece, before the helper went on to the third
    assert len(seen) == 1 and seen[0][0] == 1 << 20 and seen[0][1].startswith("hash-")
    assert stream.digest() == hashlib.sha256(piece * 3).digest()
    stream.call_within(0, lambda: seen.append((stream.behind, "caller")))  # caught up: now
    assert seen[-1] == (0, "caller")

    def fails(data: bytes | memoryview) -> None:
        raise ValueError("feeding failed")

    broken = hash_threads.BackgroundFeed(fails)
    held = threading.Event()
    broken._helper.start(held.wait)
    broken.update(b"x" * 5000)
    failed = threading.Event()
    broken.call_within(0, failed.set)
    held.set()
    assert failed.wait(10)  # woken although never caught up
    with pytest.raises(ValueError, match="feeding failed"):
        broken.drain()


def test_an_upload_behind_wakes_its_receiver_with_a_message_still_to_hash() -> None:
    """`Upload.when_hashed`, which VerifyFile's receive loop awaits (no thread waits),
    calls back once both the SHA-256 and a video's chunk leaves are at most a quarter of
    the backlog behind, so the hashing threads still have work while the loop reads on
    (before, the loop waited in a thread until every byte was hashed)."""
    data = os.urandom(3 << 20)
    with _helpers_held() as held, Upload(64 << 20) as upload:
        upload.hash_chunks(1 << 20)
        for i in range(0, len(data), 1 << 20):
            upload.write(data[i : i + (1 << 20)])
        assert upload.hashing_behind
        seen: list[tuple[int, int]] = []
        woken = threading.Event()

        def wake() -> None:
            assert upload._chunks is not None
            seen.append((upload._digest.behind, upload._chunks.behind))
            woken.set()

        upload.when_hashed(wake)
        assert not woken.wait(0.2)  # both held up
        held.set()
        assert woken.wait(10)
        quarter = hash_threads.BACKLOG_BYTES // 4
        assert len(seen) == 1 and max(seen[0]) <= quarter
        whole = ChunkedHasher(1 << 20)
        whole.update(data)
        assert upload.chunk_hashes == whole.finalize().chunk_hashes
        assert upload.sha256 == hashlib.sha256(data).digest()


@contextmanager
def _helpers_held() -> Iterator[threading.Event]:
    """Every hashing helper thread held up until the event is set (set on leaving)."""
    busy = threading.Event()
    for helper in hash_threads._helpers():
        helper.start(busy.wait)
    try:
        yield busy
    finally:
        busy.set()


def test_chunk_leaves_of_an_upload_are_hashed_off_the_writing_thread() -> None:
    """A video upload's `write` returns while every hashing helper is held up: neither its
    SHA-256 nor its chunk leaves are hashed on the writer's thread (`prov serve`'s loop)."""
    data = os.urandom(3 << 20)
    with _helpers_held() as held, Upload(64 << 20) as upload:
        upload.hash_chunks(1 << 20)

        def write() -> None:
            for i in range(0, len(data), 1 << 20):
                upload.write(data[i : i + (1 << 20)])

        writer = threading.Thread(target=write)
        writer.start()
        writer.join(10)
        assert not writer.is_alive()  # before: it hashed leaves here and waited for a helper
        assert upload.hashing_behind
        held.set()
        whole = ChunkedHasher(1 << 20)
        whole.update(data)
        assert upload.chunk_hashes == whole.finalize().chunk_hashes
        assert upload.sha256 == hashlib.sha256(data).digest()


@pytest.mark.slow
def test_an_embedded_claims_chunks_are_hashed_only_at_a_chunk_size_the_server_takes() -> None:
    """A video whose claim came embedded in its C2PA manifest (no sidecar named a chunk
    size while it arrived) has its chunks hashed afterwards at the claim's chunk size, as
    an upload hashes them for a sidecar's claim; a chunk size under the server's minimum
    (`prov serve --min-chunk-kb`, 64 KiB by default) or over `MAX_VIDEO_CHUNK`, which an
    embedded claim of anyone's may state, is not hashed: 1-byte chunks of a 256 MiB file
    would be 268 million hashes."""
    data = (SAMPLES / "fabric_pattern.mp4").read_bytes()
    with Upload(64 << 20) as upload:
        upload.write(data)
        facts = FileFacts(upload.sha256, upload.size, "video/mp4")
        cfg = InspectConfig()
        hashed = embedded_chunk_facts(upload, facts, 1 << 16, cfg)
        whole = ChunkedHasher(1 << 16)
        whole.update(data)
        assert hashed.chunk_hashes == whole.finalize().chunk_hashes
        assert hashed.content_chunk_hashes == ()  # no manifest store to take out
        for size in (1, (1 << 16) - 1, (64 << 20) + 1):
            assert embedded_chunk_facts(upload, facts, size, cfg) is facts
        small = InspectConfig(min_chunk_bytes=4096)  # a server run with --min-chunk-kb 4
        assert embedded_chunk_facts(upload, facts, 4096, small).chunk_hashes
        assert embedded_chunk_facts(upload, hashed, 4096, small) is hashed  # hashed already


def test_no_more_chunks_are_hashed_than_a_claims_list_can_hold() -> None:
    """At a server's ``--min-chunk-kb 0`` a claim may ask for 1-byte chunks; a file of more
    chunks than a claim's list holds (MAX_CLAIM_CHUNK_HASHES) matches no list, so neither
    an upload (its size announced or not) nor an embedded claim's hashing
    (`embedded_chunk_facts`) hashes it chunk by chunk, and the note says why no damaged
    range was located. Before: a hash kept per byte, 392 MiB for 2.2 MB."""
    fits = MAX_CLAIM_CHUNK_HASHES
    with Upload(64 << 20, expected_bytes=fits + 1) as announced:
        announced.hash_chunks(1)
        assert announced.chunk_size == 0  # refused before the first byte
    with Upload(64 << 20, expected_bytes=fits) as exact:
        exact.hash_chunks(1)
        exact.write(os.urandom(fits))
        assert len(exact.chunk_hashes) == fits  # as many as a list can hold: hashed
    with Upload(64 << 20) as unknown:  # no size announced: dropped once the bytes pass it
        unknown.hash_chunks(1)
        unknown.write(os.urandom(fits))
        assert unknown.chunk_size == 1
        unknown.write(b"x")
        assert (unknown.chunk_size, unknown.chunk_hashes) == (0, ())
    data = (SAMPLES / "fabric_pattern.mp4").read_bytes()
    assert len(data) > fits
    with Upload(64 << 20) as upload:
        upload.write(data)
        facts = FileFacts(upload.sha256, upload.size, "video/mp4")
        anything = InspectConfig(min_chunk_bytes=0)  # a server run with --min-chunk-kb 0
        assert embedded_chunk_facts(upload, facts, 1, anything) is facts
        least = -(-len(data) // fits)  # the smallest chunk size that fits: hashed
        assert len(embedded_chunk_facts(upload, facts, least, anything).chunk_hashes) <= fits
    whose = "the claim embedded in its Content Credentials"
    assert unlocated_note(whose, 1, len(data), 0) == (
        f"damaged byte ranges were not located: {whose} cuts the file into 1-byte chunks,"
        f" {len(data):,} of them, more than the {fits:,} chunk hashes a claim's list can"
        " hold, so no list matches and they were not hashed"
    )
    assert unlocated_note(whose, 1, fits, 0) is None
    assert unlocated_note(whose, 4095, fits, 4096) == (
        f"damaged byte ranges were not located: {whose} cuts the file into 4095-byte"
        " chunks, under the server's minimum of 4096 bytes"
    )


def test_a_big_video_upload_being_hashed_stalls_no_other_call(
    inproc: InProc, tmp_path: Path
) -> None:
    """While a VerifyFile of a 9 MiB video with chunk hashes waits for its hashing (the
    helpers are held up), GetCheckpoint on the same server is still answered; once the
    hashing goes on, the video is reported as the signed original."""
    video = tmp_path / "clip.mp4"
    video.write_bytes((SAMPLES / "fabric_pattern.mp4").read_bytes() + bytes(8 << 20))
    signed, _ = inproc.log_file(inproc.enroll(), video)
    _, leaves = measure(video)
    server, port = create_server(
        "127.0.0.1:0", inproc.service, ServerConfig(admin_token=ADMIN_TOKEN)
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    data = video.read_bytes()
    header = pb.VerifyFileHeader(
        size_bytes=len(data), sidecar=wire.signed_to_pb(signed), chunk_hashes=leaves
    )
    chunks = [pb.VerifyFileChunk(header=header)] + [
        pb.VerifyFileChunk(data=data[i : i + (1 << 20)]) for i in range(0, len(data), 1 << 20)
    ]
    try:
        with _helpers_held() as held:
            upload = rpc.VerificationStub(channel).VerifyFile.future(iter(chunks), timeout=120)
            deadline = time.monotonic() + 30
            while sum(h.jobs.qsize() for h in hash_threads._helpers()) == 0:  # hashing queued
                assert time.monotonic() < deadline, "the upload never reached the hashing"
                time.sleep(0.01)
            log = rpc.LogStub(channel).GetCheckpoint(pb.GetCheckpointRequest(), timeout=10)
            assert log.checkpoint and not upload.done()  # answered while the upload waits
            held.set()
            assert upload.result().status == pb.SIGNED_ORIGINAL
    finally:
        channel.close()
        server.stop(None)
