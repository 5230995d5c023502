"""Every request has a bounded cost (issue 11, server side): stalled uploads, tiny chunks,
near-limit images, oversized files, heavy Lookups, large replies, a port in use, a full
disk and a flooding device, each against a real `prov serve` on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import resource
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from PIL import Image

from clients.api import ProvenanceClient, Query
from clients.cli import main as prov_main
from clients.scan.worker import _lookup_part
from provenance.core.binding import PerceptualHash
from provenance.core.claims import MAX_CLAIM_SOFT_BINDINGS, Claim, HardBinding, SignedClaim
from provenance.core.errors import (
    ConfigError,
    LimitError,
    MediaError,
    MediaTooLargeError,
    TransportError,
)
from provenance.core.keys import DeviceKey
from provenance.media.image import decode_image
from provenance.media.inspect import MEMORY_DIR, Upload
from provenance.server.limits import DeviceQuota, ServerLimits, UploadGate
from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from provenance.wire import convert as wire
from provenance.wire.contract import MAX_CLAIM_CHUNK_HASHES, MAX_MESSAGE_BYTES
from tests.conftest import (
    ADMIN_TOKEN,
    ROOT,
    SAMPLES,
    ServerProc,
    enroll_key,
    sign_claim,
    signed_claim,
    start_server,
)

#: A 38-byte lossless WebP of 9999x9999 pixels (one colour), as in the issue.
WEBP_9999 = bytes.fromhex(
    "524946461e000000574542505650384c110000002f0ea7c30907508a2ad4a3ff8188e87f0000"
)


def _png_gray(side: int) -> bytes:
    """A grey PNG of side x side pixels, compressed row by row (about 100 KB at 9995)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    z = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * side
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _stub(address: str) -> rpc.VerificationStub:
    channel = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    return rpc.VerificationStub(channel)


def _stalled(
    release: threading.Event, size: int = 1000, sent: threading.Event | None = None
) -> Iterator[pb.VerifyFileChunk]:
    """A header, then nothing until ``release`` is set; ``sent`` is set once gRPC has
    taken the header and asks for the next message."""
    yield pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=size))
    if sent is not None:
        sent.set()
    release.wait(60)


def _code(fut: grpc.Future[Any]) -> grpc.StatusCode:
    """The status of a finished call's future: OK, or the code of its error (the call)."""
    err = fut.exception()
    if err is None:
        return grpc.StatusCode.OK
    assert isinstance(err, grpc.Call), err
    return err.code()


@pytest.fixture
def srv_factory(tmp_path: Path) -> Iterator[list[ServerProc]]:
    started: list[ServerProc] = []
    yield started
    for s in started:
        s.stop()


def _start(started: list[ServerProc], db: Path, *flags: str) -> ServerProc:
    s = start_server(db, *flags)
    started.append(s)
    return s


# ---------------------------------------------------------------- High 1


def test_stalled_uploads_do_not_block_checkpoint_or_submit(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """20 VerifyFile streams that send their header and stall: cheap calls still answer;
    uploads past the cap are refused at once with RESOURCE_EXHAUSTED."""
    srv = _start(srv_factory, tmp_path / "p.db")
    with ProvenanceClient(srv.address, ADMIN_TOKEN, timeout=10) as c:
        key = enroll_key(c)
        c.submit(signed_claim(key, 1))
        release = threading.Event()
        stub = _stub(srv.address)
        futs = [stub.VerifyFile.future(_stalled(release), timeout=90) for _ in range(20)]
        over = 20 - ServerLimits().max_uploads
        try:
            deadline = time.monotonic() + 30
            while sum(f.done() for f in futs) < over and time.monotonic() < deadline:
                time.sleep(0.1)
            assert c.checkpoint().startswith("media-provenance.local/log")
            receipt, _ = c.submit(signed_claim(key, 2))
            assert receipt.leaf_index == 2  # after the enrollment and claim 1
            done = [f for f in futs if f.done()]
            assert len(done) == over
            assert {_code(f) for f in done} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert "--max-uploads" in done[0].exception().details()
        finally:
            release.set()
        for f in futs:
            f.exception(timeout=30)


@pytest.mark.slow
def test_stalled_upload_is_cut_by_idle_timeout_and_deadline(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """An upload silent past --upload-idle-seconds, or still trickling in past
    --upload-deadline-seconds, is cut with DEADLINE_EXCEEDED and frees its slot."""
    srv = _start(
        srv_factory,
        tmp_path / "p.db",
        "--max-uploads",
        "1",
        "--rpc-threads",
        "5",
        "--upload-idle-seconds",
        "1",
        "--upload-deadline-seconds",
        "3",
    )
    stub = _stub(srv.address)
    release = threading.Event()
    try:
        two = [stub.VerifyFile.future(_stalled(release), timeout=30) for _ in range(2)]
        errs = sorted((f.exception(timeout=25) for f in two), key=lambda e: e.code().value)
        assert [e.code() for e in errs] == [
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ]
        assert "idle" in errs[0].details()

        def trickle() -> Iterator[pb.VerifyFileChunk]:
            yield pb.VerifyFileChunk(header=pb.VerifyFileHeader())
            for _ in range(40):
                if release.wait(0.5):
                    return
                yield pb.VerifyFileChunk(data=b"\0" * 65536)

        with pytest.raises(grpc.RpcError) as slow:
            stub.VerifyFile(trickle(), timeout=30)
        assert slow.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "--upload-deadline-seconds" in str(slow.value.details())
    finally:
        release.set()
    with ProvenanceClient(srv.address) as c:
        assert c.verify_file(SAMPLES / "chelsea.png").status.value == "UNSIGNED"


def test_an_upload_that_never_sends_its_first_message_is_cut_when_idle(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """A VerifyFile stream that opens (its HTTP/2 headers sent) and never sends a message
    is cut after --upload-idle-seconds as one that stalls after its header is, and its
    upload slot is given back. Before, its first wait had no limit (the idle timer was
    set as a delay of the loop's clock reading plus the idle time, in effect none): it
    held its slot until its client's own deadline (the 8 slots of the default, held by
    8 such streams with no deadline from a raw HTTP/2 client, were still held after 53 s;
    measured 5 December)."""
    srv = _start(srv_factory, tmp_path / "p.db", "--max-uploads", "1", "--rpc-threads", "5",
                 "--upload-idle-seconds", "1")  # fmt: skip
    stub = _stub(srv.address)
    release = threading.Event()

    def nothing() -> Iterator[pb.VerifyFileChunk]:
        release.wait(60)
        yield from ()

    try:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as silent:
            stub.VerifyFile(nothing(), timeout=30)
        assert silent.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert "--upload-idle-seconds" in str(silent.value.details()), silent.value.details()
        assert time.monotonic() - t0 < 20
    finally:
        release.set()
    with ProvenanceClient(srv.address) as c:  # its slot (the only one) was given back
        assert c.verify_file(SAMPLES / "chelsea.png").status.value == "UNSIGNED"


def _two_clients(
    tmp_path: Path, srv_factory: list[ServerProc], max_uploads: int, *flags: str
) -> tuple[rpc.VerificationStub, rpc.VerificationStub]:
    """Stubs of two clients of one server with ``max_uploads`` upload slots (and
    ``flags``): the server listens on both stacks, the first client comes over IPv4, the
    second from ::1."""
    probe = socket.socket(socket.AF_INET6)
    try:
        probe.bind(("::1", 0))
    except OSError:
        pytest.fail("these tests need an IPv6 loopback (::1) to come from a second client")
    finally:
        probe.close()
    srv = _start(
        srv_factory,
        tmp_path / "p.db",
        "--listen",
        "[::]:0",
        "--max-uploads",
        str(max_uploads),
        *flags,
    )
    port = srv.address.rsplit(":", 1)[1]
    return _stub(f"127.0.0.1:{port}"), _stub(f"[::1]:{port}")


def _whole(data: bytes) -> Iterator[pb.VerifyFileChunk]:
    yield pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=len(data)))
    yield pb.VerifyFileChunk(data=data)


def test_one_client_cannot_hold_every_upload_slot(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """The upload slots are shared fairly between clients: one client's stalled streams
    in every slot are cut one at a time (of equals, the newest first) when another
    client's upload arrives (RESOURCE_EXHAUSTED, "try again"), and that upload is
    verified. Before, 8 streams from one address, each sending 64 KiB every 29 s (18 KiB/s
    in all), kept every other caller (the web front-end's uploads included) refused for
    600 s at a time."""
    hog, other = _two_clients(tmp_path, srv_factory, 4)
    release = threading.Event()
    data = (SAMPLES / "chelsea.png").read_bytes()

    def whole() -> Iterator[pb.VerifyFileChunk]:
        return _whole(data)

    try:
        held = []
        for _ in range(4):  # one after another, so that the server sees them in this order
            sent = threading.Event()
            held.append(hog.VerifyFile.future(_stalled(release, sent=sent), timeout=90))
            assert sent.wait(30)
            time.sleep(0.5)  # the header on its way and admitted before the next starts
        assert not any(f.done() for f in held)
        with pytest.raises(grpc.RpcError) as more:  # the hog asks for a fifth: refused
            hog.VerifyFile(whole(), timeout=30)
        assert more.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for _ in range(2):  # the other client is served, each time
            report = other.VerifyFile(whole(), timeout=30)
            assert report.status == pb.Verdict.Value("UNSIGNED")
        done = [f for f in held if f.done()]
        assert len(done) == 1  # one slot taken from the hog, then given back to the pool
        err = done[0].exception()
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "upload cut" in err.details() and "try again" in err.details()
        assert not held[0].done()  # the newest was cut, the oldest kept
    finally:
        release.set()
    for f in held:
        f.exception(timeout=30)


def test_upload_cut_spares_the_one_furthest_along(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """Of the biggest holder's uploads, the cut takes the one that has received the
    fewest bytes, not the newest: the web front-end relays every user's upload as one
    client, and its large file in flight was its newest upload still arriving whenever
    the later small ones had arrived, so each upload from another address cut it and it
    never got through. Here the holder's newest upload has sent 2 MiB of 3 (random bytes,
    judged no media once whole), its three older ones nothing: another client's upload
    cuts an older one."""
    front, other = _two_clients(tmp_path, srv_factory, 4)
    release = threading.Event()

    def large() -> Iterator[pb.VerifyFileChunk]:
        yield pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=3 << 20))
        for _ in range(2):
            yield pb.VerifyFileChunk(data=os.urandom(1 << 20))
        release.wait(60)
        yield pb.VerifyFileChunk(data=os.urandom(1 << 20))

    try:
        waiting = []
        for _ in range(3):  # one after the other: the newest is known
            waiting.append(front.VerifyFile.future(_stalled(release), timeout=90))
            time.sleep(0.3)
        far = front.VerifyFile.future(large(), timeout=90)
        time.sleep(1.5)
        assert not far.done() and not any(f.done() for f in waiting)
        data = (SAMPLES / "chelsea.png").read_bytes()
        assert other.VerifyFile(_whole(data), timeout=30).status == pb.Verdict.Value("UNSIGNED")
        cut = [f for f in waiting if f.done()]
        assert len(cut) == 1 and "upload cut" in cut[0].exception().details()
        assert not far.done()
        assert cut[0] is waiting[-1]  # of the three equals, the newest
    finally:
        release.set()
    # received whole and judged (random bytes: no media), not cut
    assert far.exception(timeout=30).code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unrecognised file format" in far.exception().details()
    for f in waiting:
        f.exception(timeout=30)


def _paced(release: threading.Event, size: int) -> Iterator[pb.VerifyFileChunk]:
    """An upload's messages: a header, then ``size`` zero bytes every 0.3 s until
    ``release`` is set."""
    yield pb.VerifyFileChunk(header=pb.VerifyFileHeader())
    while not release.wait(0.3):
        yield pb.VerifyFileChunk(data=b"\0" * size)


def test_an_upload_under_the_minimum_pace_yields_its_slot(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """With every slot taken and no client holding two more than the newcomer's, the
    slowest upload that has run past --upload-idle-seconds averaging under
    --upload-min-rate-kb is cut for the newcomer (RESOURCE_EXHAUSTED "send it faster"),
    whoever's it is; a faster one is not. Before, shares alone decided: a client on 8
    addresses (or 8 IPv6 /64s) held all 8 slots with one stalled stream each, 26 KiB/s in
    all, and every other upload was refused. Here 2 slots, one upload from each client,
    one at about 3 KiB/s, the other at about 200 KiB/s."""
    first, second = _two_clients(
        tmp_path, srv_factory, 2, "--upload-idle-seconds", "1", "--min-chunk-kb", "1"
    )
    release = threading.Event()
    try:
        slow = first.VerifyFile.future(_paced(release, 1024), timeout=60)
        fast = second.VerifyFile.future(_paced(release, 64 * 1024), timeout=60)
        time.sleep(2.0)  # both past their first second
        assert not slow.done() and not fast.done()
        data = (SAMPLES / "chelsea.png").read_bytes()
        report = second.VerifyFile(_whole(data), timeout=30)  # holds as much as the other
        assert report.status == pb.Verdict.Value("UNSIGNED")
        err = slow.exception(timeout=10)
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "upload cut" in err.details() and "send it faster" in err.details()
        assert "--upload-min-rate-kb" in err.details()
        assert not fast.done()
    finally:
        release.set()
    assert fast.exception(timeout=30).code() is grpc.StatusCode.INVALID_ARGUMENT  # zeros


@pytest.mark.parametrize(
    ("flags", "chunk"),
    [((), 4 * 1024), (("--upload-min-rate-kb", "0"), 1024)],
    ids=["default-8-kib-s", "rule-off"],
)
def test_an_upload_at_or_over_the_minimum_pace_keeps_its_slot(
    tmp_path: Path, srv_factory: list[ServerProc], flags: tuple[str, ...], chunk: int
) -> None:
    """An upload at about 13 KiB/s keeps its slot under the default minimum pace (8 KiB/s;
    at 32, the first default, honest 25 KiB/s phones cut each other when the server was
    full), and with --upload-min-rate-kb 0 even one at about 3 KiB/s does: the newcomer,
    whose client already holds as many slots as the other, is refused instead."""
    first, second = _two_clients(
        tmp_path, srv_factory, 2, "--upload-idle-seconds", "1", "--min-chunk-kb", "1", *flags
    )
    release = threading.Event()
    try:
        slow = first.VerifyFile.future(_paced(release, chunk), timeout=60)
        fast = second.VerifyFile.future(_paced(release, 64 * 1024), timeout=60)
        time.sleep(2.0)  # both past their first second
        assert not slow.done() and not fast.done()
        data = (SAMPLES / "chelsea.png").read_bytes()
        with pytest.raises(grpc.RpcError) as refused:
            second.VerifyFile(_whole(data), timeout=30)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "upload cut" not in (refused.value.details() or "")
        assert not slow.done() and not fast.done()
    finally:
        release.set()
    assert slow.exception(timeout=30).code() is grpc.StatusCode.INVALID_ARGUMENT  # zeros


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--upload-min-rate-kb", "-1"),
        ("--max-uploads", "0"),
        ("--min-chunk-kb", "-1"),
        ("--upload-idle-seconds", "-1"),
        ("--upload-deadline-seconds", "0"),
        ("--lookup-seconds", "0"),
        ("--upload-idle-seconds", "inf"),
        ("--upload-deadline-seconds", "1e309"),
        ("--decode-wait-seconds", "inf"),
        ("--lookup-seconds", "inf"),
        ("--decode-wait-seconds", "1e10"),  # finite, but a busy slot's wait overflowed
        ("--upload-deadline-seconds", "604801"),
        ("--forgeries-per-minute", "-1"),
        ("--quota-claim-kb-per-minute", "-1"),
        ("--max-pending-calls", "0"),
        ("--max-rpc-connections", "0"),
        ("--max-rpc-connections", "-1"),
        ("--max-rpc-connections", "1000001"),  # past it grpc's C int argument
        ("--connection-idle-seconds", "0"),
        ("--connection-idle-seconds", "inf"),
        ("--connection-idle-seconds", "604801"),
        ("--max-queued-claims", "0"),
        ("--db-connect-wait", "0.05"),
        ("--db-connect-wait", "-1"),
        ("--db-connect-wait", "nan"),
        ("--db-connect-wait", "inf"),
        ("--db-connect-wait", "601"),
        ("--submit-wait", "0.05"),
        ("--submit-wait", "nan"),
        ("--submit-wait", "inf"),
        ("--submit-wait", "601"),
        ("--detector-timeout", "0"),
        ("--detector-timeout", "-1"),
        ("--detector-timeout", "nan"),
        ("--detector-timeout", "inf"),
        ("--detector-timeout", "604801"),
        # sizes of zero or less refused every upload or image ("the limit is -5242880
        # bytes") and -1 reader processes was taken as none (h-att41)
        ("--max-upload-mb", "0"),
        ("--max-upload-mb", "-5"),
        ("--max-megapixels", "0"),
        ("--max-image-mb", "-1"),
        ("--decode-budget-mb", "0"),
        ("--c2pa-workers", "-1"),
        # a log name no checkpoint can carry: exit 1 after the start began (h-att41)
        ("--origin", ""),
        ("--origin", "my log"),
        ("--origin", "log+1"),
        ("--origin", "log\x07"),
    ],
)
def test_a_limit_out_of_range_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    """``prov serve`` with a limit out of its range exits 2 naming the flag, before the
    database is made (before: exit 1 with the field's name, "upload_min_rate cannot be
    negative, got -1024", "max_uploads must be at least 1, got 0")."""
    db = tmp_path / "prov.db"
    args = ["serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector"]
    rc = prov_main([*args, flag, value])
    err = capsys.readouterr().err
    assert rc == 2 and flag in err and "Traceback" not in err, err
    assert "_" not in err.split("Invalid value")[-1].split("got")[0], err  # no field names
    assert not db.exists()


def test_an_upload_right_after_an_abandoned_one_gets_its_slot(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """A client that abandons an upload (its request stream raises: grpc cancels the
    call) and at once starts another is admitted to the slot the first held, as `prov
    web` does when a relay it cut makes way for another's. Before, the server gave the
    slot back only after the next upload had been refused (grpc's cancellation runs a
    loop turn or two later): 6 to 8 of 10 were refused "already receiving 2 uploads".
    Five rounds here, with the other slot held throughout."""
    srv = _start(srv_factory, tmp_path / "p.db", "--max-uploads", "2")
    stub = _stub(srv.address)
    release = threading.Event()
    block = os.urandom(1 << 20)

    def abandoned(gone: threading.Event) -> Iterator[pb.VerifyFileChunk]:
        yield pb.VerifyFileChunk(header=pb.VerifyFileHeader())
        for _ in range(9):
            yield pb.VerifyFileChunk(data=block)
        gone.wait(60)
        raise RuntimeError("abandoned by its client")

    data = (SAMPLES / "chelsea.png").read_bytes()
    other = stub.VerifyFile.future(_stalled(release), timeout=90)
    try:
        for _ in range(5):
            gone = threading.Event()
            first = stub.VerifyFile.future(abandoned(gone), timeout=60)
            time.sleep(0.5)  # its 9 MiB received
            gone.set()
            assert first.exception(timeout=30) is not None
            report = stub.VerifyFile(_whole(data), timeout=30)
            assert report.status == pb.Verdict.Value("UNSIGNED")
    finally:
        release.set()
    other.exception(timeout=30)


def test_the_idle_timer_waits_while_the_server_works_on_a_message() -> None:
    """The idle timer counts the client's silence, not the server's own work between
    messages: the upload handler awaits the hashing of earlier bytes when it falls
    behind, and a timer firing then cancelled that wait: the handler ended in
    CancelledError, which grpc.aio answers with no status at all, so the client waited
    until its own deadline (DEADLINE_EXCEEDED, grpcio 1.85). The gate of `prov serve`
    itself, with an idle limit of 0.1 s and 0.3 s of work per message."""

    async def run() -> list[int]:
        gate = UploadGate(ServerLimits(upload_idle_s=0.1))

        async def stream() -> AsyncIterator[int]:
            for i in range(3):
                yield i

        got = []
        with gate.upload("one") as slot:
            async with aclosing(gate.messages(stream(), slot)) as it:
                async for m in it:
                    await asyncio.sleep(0.3)  # the server's work on the message
                    got.append(m)
        return got

    assert asyncio.run(run()) == [0, 1, 2]


def test_upload_cut_as_its_stream_ends_is_still_cut() -> None:
    """An upload cut in the event loop's turn in which its last message arrives (its
    stream ends before the cut's timer fires) is still cut: its slot is the newcomer's,
    and it went on to be decoded beside it, one upload past --max-uploads (and past the
    RPC threads kept for cheap calls, once per such race). The gate of `prov serve`
    itself; the stream is the one the loop would hand it."""

    async def run() -> None:
        gate = UploadGate(ServerLimits(max_uploads=2))
        ended = asyncio.Event()

        async def stream() -> AsyncIterator[str]:
            yield "header"
            await ended.wait()

        with gate.upload("front"), gate.upload("front") as last:

            async def receive() -> list[str]:
                async with aclosing(gate.messages(stream(), last)) as it:
                    return [m async for m in it]

            task = asyncio.create_task(receive())
            await asyncio.sleep(0.05)  # waiting for the next message
            ended.set()  # the stream ends, and in the same turn another client comes
            with gate.upload("other"):
                assert last.evicted
                with pytest.raises(LimitError, match="upload cut"):
                    await task

    asyncio.run(run())


# ---------------------------------------------------------------- High 2


def _one_byte_chunks(key: DeviceKey, size: int, sha256: bytes) -> Claim:
    """A video claim of ``key``'s binding ``size`` bytes of SHA-256 ``sha256`` in 1-byte
    chunks (a made-up chunk root)."""
    return Claim(
        device_id=key.key_id,
        sequence=1,
        captured_at=datetime.now(UTC),
        media_type="video/mp4",
        size_bytes=size,
        hard_binding=HardBinding(
            sha256=sha256, chunk_size=1, chunk_count=size, chunk_merkle_root=os.urandom(32)
        ),
        soft_bindings=(PerceptualHash("pdq", bytes(32), 0),),
        duration_seconds=1.0,
    )


def test_chunk_size_1_sidecar_upload_is_not_hashed_byte_by_byte(server: ServerProc) -> None:
    """A sidecar claim (unenrolled key) naming 1-byte chunks: the server does not hash the
    upload chunk by chunk; it says so in the report of a file the claim does not bind, and
    not in that of the very bytes it binds (nothing there to locate; before, "damaged
    byte ranges were not located" was said of an intact file too)."""
    data = os.urandom(256 * 1024)
    key = DeviceKey.generate()
    claim = _one_byte_chunks(key, len(data), hashlib.sha256(data).digest())
    assert isinstance(server.db, Path)  # conftest's server_db: a SQLite file
    path = server.db.with_name("clip.bin")
    path.write_bytes(data)
    with ProvenanceClient(server.address) as c:
        report = c.verify_file(path, sign_claim(key, claim), chunk_hashes=[os.urandom(32)] * 8)
        # the claim binds these very bytes: nothing is damaged, so no range was missed
        assert report.evidence.hash_match, report
        assert not any("damaged byte ranges" in r for r in report.reasons), report.reasons
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # now one byte differs
        report = c.verify_file(path, sign_claim(key, claim), chunk_hashes=[os.urandom(32)] * 8)
    assert not report.evidence.hash_match, report
    assert any("under the server's minimum" in r for r in report.reasons), report.reasons


def test_tiny_upload_chunks_are_refused(server: ServerProc) -> None:
    """An upload in 1-byte messages is refused with INVALID_ARGUMENT naming the minimum."""
    data = (SAMPLES / "chelsea.png").read_bytes()

    def tiny() -> Iterator[pb.VerifyFileChunk]:
        yield pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=len(data)))
        for i in range(len(data)):
            yield pb.VerifyFileChunk(data=data[i : i + 1])

    with pytest.raises(grpc.RpcError) as e:
        _stub(server.address).VerifyFile(tiny(), timeout=60)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "at least 65536 bytes" in str(e.value.details())


# ---------------------------------------------------------------- High 3


def _upload(data: bytes) -> Iterator[pb.VerifyFileChunk]:
    yield pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=len(data)))
    for i in range(0, len(data), 1 << 20):
        yield pb.VerifyFileChunk(data=data[i : i + (1 << 20)])


def test_near_limit_images_three_at_once_bounded_memory(server: ServerProc) -> None:
    """A 38-byte WebP of 9999x9999 and a 100 KB PNG of 9995x9995, three at once: each
    answers (or is refused with RESOURCE_EXHAUSTED) within its deadline, and the server's
    RSS grows by less than 1 GB."""
    png = _png_gray(9995)
    assert len(png) < 200_000
    proc = psutil.Process(server.proc.pid)
    base = proc.memory_info().rss
    peak = base
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    stub = _stub(server.address)
    try:
        futs = [stub.VerifyFile.future(_upload(d), timeout=60) for d in (WEBP_9999, png, WEBP_9999)]
        codes = [_code(f) for f in futs]
    finally:
        done.set()
        sampler.join()
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert peak - base < 1 << 30, f"server RSS grew by {(peak - base) >> 20} MiB"


def test_oversized_jpeg_is_refused_before_it_is_read(server: ServerProc) -> None:
    """A 1.5 GB upload that starts like a JPEG is refused after its first chunk, not after
    the server has taken it all."""
    sent = 0
    release = threading.Event()

    def big() -> Iterator[pb.VerifyFileChunk]:
        nonlocal sent
        yield pb.VerifyFileChunk(header=pb.VerifyFileHeader(size_bytes=1536 << 20))
        for _ in range(1536):
            if release.is_set():
                return
            sent += 1
            yield pb.VerifyFileChunk(data=b"\xff\xd8\xff\xe0" + b"\0" * ((1 << 20) - 4))
            time.sleep(0.01)

    try:
        with pytest.raises(grpc.RpcError) as e:
            _stub(server.address).VerifyFile(big(), timeout=30)
    finally:
        release.set()
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit for images" in str(e.value.details())
    assert sent < 64


def test_decode_budget_refuses_unsigned_image_but_signed_original_still_verifies(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """Over the decode budget an unknown image is refused up front; the logged original
    still reads SIGNED_ORIGINAL (exact bytes decide), with a note that pixels were not
    decoded."""
    srv = _start(srv_factory, tmp_path / "p.db", "--decode-budget-mb", "1")
    signed_png, other = SAMPLES / "chelsea.png", SAMPLES / "generated_controlnet.png"
    data = signed_png.read_bytes()
    with ProvenanceClient(srv.address, ADMIN_TOKEN) as c:
        key = enroll_key(c)
        claim = replace(
            _claim(key, 1, ""),
            media_type="image/png",
            size_bytes=len(data),
            hard_binding=HardBinding(sha256=hashlib.sha256(data).digest()),
        )
        c.submit(sign_claim(key, claim))
        report = c.verify_file(signed_png)
        assert report.status.value == "SIGNED_ORIGINAL"
        assert any("decode budget" in r for r in report.reasons), report.reasons
        with pytest.raises(TransportError) as e:
            c.verify_file(other)
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert "--decode-budget-mb" in str(e.value)


def test_decode_budget_scales_jpeg_and_refuses_png() -> None:
    """Over the decode budget a JPEG is decoded at a libjpeg scale; a PNG is refused
    before its pixels are decoded."""
    im = Image.new("RGB", (2000, 1500), (120, 60, 30))
    jpeg, png = io.BytesIO(), io.BytesIO()
    im.save(jpeg, "JPEG")
    im.save(png, "PNG")
    budget = 2000 * 1500 * 30 // 3
    small = decode_image(jpeg.getvalue(), max_decode_bytes=budget)
    assert (small.width, small.height) == (1000, 750)
    assert decode_image(jpeg.getvalue()).width == 2000
    with pytest.raises(MediaTooLargeError, match="decode budget"):
        decode_image(png.getvalue(), max_decode_bytes=budget)


# ---------------------------------------------------------------- Medium


def _query(n_hashes: int) -> pb.LookupQuery:
    return pb.LookupQuery(
        ref="q",
        sha256=os.urandom(32),
        soft_bindings=[
            pb.SoftBinding(algorithm="pdq", hash=os.urandom(32), quality=90)
            for _ in range(n_hashes)
        ],
    )


def test_7mb_lookup_is_refused_by_its_hash_count(server: ServerProc) -> None:
    """A Lookup carrying 20,000 perceptual hashes is refused before any search."""
    req = pb.LookupRequest(queries=[_query(100) for _ in range(200)])
    with pytest.raises(grpc.RpcError) as e:
        _stub(server.address).Lookup(req, timeout=60)
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-lookup-hashes" in str(e.value.details())


def test_a_lookups_dihedral_hashes_count_toward_its_hash_limit(server: ServerProc) -> None:
    """Rotated and mirrored hashes are searched too, so they count: 500 queries of 25 plain
    hashes and 500 photos of 8 packed ones are 16,500 searches, over the default 16,384
    (the 12,500 plain alone would pass)."""
    photo = pb.LookupQuery(
        ref="p", sha256=os.urandom(32), pdq_dihedral=os.urandom(8 * 32), pdq_quality=90
    )
    queries = [_query(25) for _ in range(500)] + [photo] * 500
    with pytest.raises(grpc.RpcError) as e:
        _stub(server.address).Lookup(pb.LookupRequest(queries=queries), timeout=60)
    assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16500 perceptual hashes" in str(e.value.details())


def test_lookup_reply_never_outgrows_the_message_limit(server: ServerProc) -> None:
    """200 copies of a signed 1,000-frame video (the most a claim carries): one Lookup
    would answer more than 8 MiB, so the server refuses it clearly, and the scanner
    splits the batch and gets every row."""
    frames = tuple(
        PerceptualHash("pdq", os.urandom(32), 90, float(t)) for t in range(MAX_CLAIM_SOFT_BINDINGS)
    )
    sha = os.urandom(32)
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
        key = enroll_key(c)
        claim = Claim(
            device_id=key.key_id,
            sequence=1,
            captured_at=datetime.now(UTC),
            media_type="video/mp4",
            size_bytes=10,
            hard_binding=HardBinding(sha256=sha),
            soft_bindings=frames,
            duration_seconds=float(MAX_CLAIM_SOFT_BINDINGS),
        )
        c.submit(sign_claim(key, claim))
        queries = [Query(f"copy{i}.mp4", sha, (), "video/mp4") for i in range(200)]
        with pytest.raises(TransportError) as e:
            c.lookup(queries)
        assert e.value.code == "RESOURCE_EXHAUSTED"
        assert "send fewer queries" in str(e.value)
        got = _lookup_part(c, queries)
    assert sorted(got) == sorted(q.ref for q in queries)
    # the scanner reads the Lookup's wire reports as they came (`clients.scan.rows`)
    statuses = {
        pb.Verdict.Name(r.status) if isinstance(r, pb.VerificationReport) else repr(r)
        for r in got.values()
    }
    assert statuses == {"SIGNED_ORIGINAL"}


@pytest.mark.slow
def test_get_entries_reply_never_outgrows_the_message_limit(
    server: ServerProc, tmp_path: Path
) -> None:
    """200 logged claims of 1,000 frames each (the most a claim carries; about 10 MB):
    GetEntries answers a page that fits one reply, and paging with `next` reaches every
    entry. `prov log audit`, which refuses a page whose `next` is not where it ends
    (h-small59), reads on over those pages cut by size and passes."""
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
        key = enroll_key(c)
        frames = tuple(
            PerceptualHash("pdq", bytes(32), 90, float(t)) for t in range(MAX_CLAIM_SOFT_BINDINGS)
        )
        for seq in range(1, 201):
            claim = replace(
                _claim(key, seq, ""),
                media_type="video/mp4",
                duration_seconds=float(MAX_CLAIM_SOFT_BINDINGS),
                soft_bindings=frames,
                metadata={},
            )
            c.submit(sign_claim(key, claim))
        first, nxt = c.entries(0, 1000)
        assert 0 < len(first) == nxt < 201
        got = list(first)
        while nxt < 201:  # the enrollment and 200 claims
            page, nxt = c.entries(nxt, 1000)
            got += page
    assert len(got) == 201 and sum(map(len, first)) < MAX_MESSAGE_BYTES
    audit = subprocess.run(
        [sys.executable, "-m", "clients.cli", "log", "audit", "--server", server.address]
        + ["--state", str(tmp_path / "audit.json")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "201 entries re-hashed" in audit.stdout, audit.stdout


def test_second_serve_on_a_port_in_use_fails_clearly(tmp_path: Path, server: ServerProc) -> None:
    """SO_REUSEPORT is off: a second server on the same port exits 1 and says why."""
    env = {**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN}
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "clients.cli",
            "serve",
            "--db",
            str(tmp_path / "other.db"),
            "--listen",
            server.address,
            "--no-detector",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert second.returncode == 1, second.stdout
    assert "cannot listen on" in second.stderr


def _claim(key: DeviceKey, seq: int, note: str) -> Claim:
    """An image claim carrying ``note`` as metadata (to make it large)."""
    return Claim(
        device_id=key.key_id,
        sequence=seq,
        captured_at=datetime.now(UTC),
        media_type="image/jpeg",
        size_bytes=10,
        hard_binding=HardBinding(sha256=os.urandom(32)),
        soft_bindings=(PerceptualHash("pdq", bytes(32), 0),),
        width=4,
        height=3,
        metadata={"note": note},
    )


def test_full_disk_answers_storage_unavailable_and_loses_nothing(server: ServerProc) -> None:
    """With the server's files capped (RLIMIT_FSIZE, as a full disk), a submission gets
    UNAVAILABLE naming the full storage (not "cannot rollback"); every acknowledged capture stays, and once space is
    back the refused one is logged."""
    pid = server.proc.pid
    db = server.db
    assert isinstance(db, Path)  # conftest's server_db: a SQLite file
    wal = db.with_name(db.name + "-wal")
    with ProvenanceClient(server.address, ADMIN_TOKEN) as c:
        key = enroll_key(c)
        cap = max(db.stat().st_size, wal.stat().st_size if wal.exists() else 0) + (256 << 10)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (cap, resource.RLIM_INFINITY))
        acked = 0
        try:
            for seq in range(1, 400):
                signed = sign_claim(key, _claim(key, seq, os.urandom(1500).hex()))
                try:
                    c.submit(signed)
                except TransportError as e:
                    refused, err = signed, e
                    break
                acked += 1
            else:
                pytest.fail("the file size cap never filled")
        finally:
            resource.prlimit(
                pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        assert err.code == "UNAVAILABLE", err
        # callers are told the storage, not the server's file or SQLite's words (h-leak48)
        assert "cannot grow (its storage is full" in str(err) and "rollback" not in str(err)
        assert str(db) not in str(err)
        assert acked > 0
        for i in range(acked + 1):  # leaf 0: the enrollment
            assert c.inclusion_proof(0, leaf_index=i)[0] == i
        receipt, dup = c.submit(refused)
        assert (receipt.leaf_index, dup) == (acked + 1, False)


def test_per_device_quota_refuses_a_flooding_device(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """Past its claims-per-minute quota a device gets RESOURCE_EXHAUSTED; another device
    is not affected, and forged submissions never spend a device's quota."""
    srv = _start(srv_factory, tmp_path / "p.db", "--quota-claims-per-minute", "3")
    with ProvenanceClient(srv.address, ADMIN_TOKEN) as c:
        flood, other = enroll_key(c), enroll_key(c)
        forged = signed_claim(flood, 1)
        for _ in range(5):
            with pytest.raises(TransportError):
                c.submit(
                    SignedClaim(forged.payload_type, forged.claim_bytes, forged.key_id, bytes(64))
                )
        for seq in range(1, 4):
            c.submit(signed_claim(flood, seq))
        with pytest.raises(TransportError) as e:
            c.submit(signed_claim(flood, 4))
        assert e.value.code == "RESOURCE_EXHAUSTED"
        assert "--quota-claims-per-minute" in str(e.value)
        c.submit(signed_claim(other, 1))


def test_a_burst_of_one_device_is_held_to_its_quota(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """40 submissions of one device at once against a quota of 5 a minute, while a real
    second SQLite connection holds the write lock (so none is logged before all are
    admitted): 5 are logged, the others get RESOURCE_EXHAUSTED naming the quota (before:
    every one passed the check before any was counted, and all 40 were logged)."""
    db = tmp_path / "p.db"
    srv = _start(srv_factory, db, "--quota-claims-per-minute", "5", "--forgeries-per-minute", "0")
    with ProvenanceClient(srv.address, ADMIN_TOKEN) as c:
        key = enroll_key(c)
        size = int(c.checkpoint().splitlines()[1])
    blocker = sqlite3.connect(db, isolation_level=None)
    channel = grpc.insecure_channel(srv.address)
    try:
        stub = rpc.CapturesStub(channel)
        blocker.execute("BEGIN IMMEDIATE")
        calls = [
            stub.SubmitCapture.future(
                pb.SubmitCaptureRequest(signed_claim=wire.signed_to_pb(signed_claim(key, seq))),
                timeout=60,
            )
            for seq in range(1, 41)
        ]
        # the refusals come back while the lock is held: nothing of the device was logged
        give_up = time.monotonic() + 30
        while sum(call.done() for call in calls) < 35 and time.monotonic() < give_up:
            time.sleep(0.05)
        blocker.execute("ROLLBACK")
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
    finally:
        channel.close()
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
    # the 5 admitted are logged or refused for their order (a later sequence number
    # logged first): never more than the quota
    assert codes.count("RESOURCE_EXHAUSTED") == 35, codes
    assert codes.count("OK") + codes.count("FAILED_PRECONDITION") == 5, codes
    with ProvenanceClient(srv.address) as c:
        assert int(c.checkpoint().splitlines()[1]) == size + codes.count("OK")


def test_per_device_quota_counts_claim_bytes(tmp_path: Path, srv_factory: list[ServerProc]) -> None:
    """Past its claim-bytes-per-minute quota a device gets RESOURCE_EXHAUSTED."""
    srv = _start(srv_factory, tmp_path / "p.db", "--quota-claim-kb-per-minute", "8")
    with ProvenanceClient(srv.address, ADMIN_TOKEN) as c:
        key = enroll_key(c)
        for seq in (1, 2):
            c.submit(sign_claim(key, _claim(key, seq, "x" * 3000)))
        with pytest.raises(TransportError) as e:
            c.submit(sign_claim(key, _claim(key, 3, "x" * 3000)))
        assert e.value.code == "RESOURCE_EXHAUSTED"
        assert "--quota-claim-kb-per-minute" in str(e.value)


def test_server_limits_refuse_uploads_taking_every_thread(tmp_path: Path) -> None:
    """Uploads may never hold every RPC thread: such a configuration is refused."""
    with pytest.raises(ConfigError, match="RPC threads"):
        ServerLimits(rpc_threads=8, max_uploads=8)
    with pytest.raises(RuntimeError, match="RPC threads"):
        start_server(tmp_path / "p.db", "--max-uploads", "40")


def test_device_quota_refills_over_a_minute() -> None:
    """The quota is a sliding window of one minute: spent, it comes back as the minute
    of the spending slides out of the last 60 s."""
    now = [60.0]
    quota = DeviceQuota(ServerLimits(quota_claims_per_minute=2), clock=lambda: now[0])
    dev = b"d" * 32
    for _ in range(2):
        quota.admit(dev, 100)
        quota.settle(dev, 100, logged=True)
    with pytest.raises(LimitError):
        quota.admit(dev, 100)
    now[0] = 150.0  # half of the spending minute is still inside the last 60 s: one back
    quota.admit(dev, 100)
    quota.settle(dev, 100, logged=True)
    with pytest.raises(LimitError):
        quota.admit(dev, 100)
    quota.admit(b"e" * 32, 100)


def test_concurrent_lookups_past_the_cap_are_refused_and_cheap_calls_still_answer(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """With --max-lookups 1, one Lookup runs and one waits; further concurrent ones are
    refused at once with RESOURCE_EXHAUSTED naming the flag, checkpoints still answer,
    and every Lookup admitted gets its reply."""
    srv = _start(srv_factory, tmp_path / "p.db", "--max-lookups", "1")
    stub = _stub(srv.address)
    heavy = pb.LookupRequest(queries=[_query(16) for _ in range(1000)])  # 16,000 hashes
    with ProvenanceClient(srv.address, ADMIN_TOKEN) as c:
        c.submit(signed_claim(enroll_key(c), 1))
        futs = [stub.Lookup.future(heavy, timeout=120) for _ in range(8)]
        assert c.checkpoint().startswith("media-provenance.local/log")
    codes = [_code(f) for f in futs]
    refused = [f for f in futs if _code(f) is grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert codes.count(grpc.StatusCode.OK) >= 2, codes
    assert refused and set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "--max-lookups" in refused[0].exception().details()
    assert len(stub.Lookup(heavy, timeout=120).results) == 1000  # slots freed


def test_upload_of_non_media_bytes_keeps_only_its_head() -> None:
    """Bytes of no known media type are hashed and dropped as they stream in: no buffer
    grows and nothing is written to a file; a video is spilled for its decoder."""
    data = b"not media\n" + os.urandom(3 << 20)
    with Upload(max_bytes=8 << 20, inline_bytes=1 << 20) as up:
        for i in range(0, len(data), 1 << 16):
            up.write(data[i : i + (1 << 16)])
        assert (up.size, up.sha256) == (len(data), hashlib.sha256(data).digest())
        assert up.head(10) == b"not media\n" and not up.kept and up.path() is None
        with pytest.raises(MediaError, match="not kept"):
            up.data()
    mp4 = (SAMPLES / "fabric_pattern.mp4").read_bytes()
    with Upload(max_bytes=8 << 20, expected_bytes=len(mp4)) as up:
        up.write(mp4)
        path = up.path()
        assert up.kept and path is not None
        assert Path(path).read_bytes() == mp4
        if MEMORY_DIR is not None:
            assert path.startswith(MEMORY_DIR)


def _reconnecting(
    stub: rpc.VerificationStub, stop: threading.Event, every: float, cycles: list[int]
) -> None:
    """Keeps one stalled upload open on ``stub`` (a header, then nothing), cancelled by
    its client and begun again every ``every`` seconds, until ``stop`` is set."""
    while not stop.is_set():
        fut = stub.VerifyFile.future(_stalled(stop), timeout=60)
        stop.wait(every)
        fut.cancel()
        cycles.append(1)


def test_an_upload_slot_cannot_be_held_by_reconnecting_before_the_idle_window(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """A client whose upload ended unfinished under --upload-min-rate-kb is on notice: its
    next uploads are measured at once, not after --upload-idle-seconds, so beginning again
    does not restart the clock. Here 2 slots, each client holding one with a stalled
    upload that it cancels and begins again every 1.5 s, always younger than the 2 s idle
    window; a newcomer's upload takes one of their slots and is verified. Before, it was
    refused "already receiving 2 uploads" for as long as they kept it up (the pace rule
    measured neither), as 8 addresses could hold all 8 slots of a default server."""
    first, second = _two_clients(tmp_path, srv_factory, 2, "--upload-idle-seconds", "2")
    stop = threading.Event()
    cycles: list[int] = []
    threads = [
        threading.Thread(target=_reconnecting, args=(stub, stop, 1.5, cycles), daemon=True)
        for stub in (first, second)
    ]
    for t in threads:
        t.start()
    try:
        while len(cycles) < 4:  # each client has cancelled a stalled upload
            time.sleep(0.05)
        seen = len(cycles)
        while len(cycles) == seen:  # both just began again: 1.5 s to the next time
            time.sleep(0.01)
        time.sleep(0.3)
        data = (SAMPLES / "chelsea.png").read_bytes()
        report = second.VerifyFile(_whole(data), timeout=30)
        assert report.status == pb.Verdict.Value("UNSIGNED")
    finally:
        stop.set()
        for t in threads:
            t.join()


def _peak_rss(pid: int) -> int:
    """The peak resident set of process ``pid`` so far, in bytes (VmHWM in
    /proc/PID/status: the kernel's high-water mark, so nothing is sampled)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def test_tiny_chunks_past_what_a_claim_lists_cost_no_memory_at_min_chunk_0(
    tmp_path: Path, srv_factory: list[ServerProc]
) -> None:
    """`prov serve --min-chunk-kb 0` takes a sidecar's chunk size of 1 byte, but a claim's
    list holds at most MAX_CLAIM_CHUNK_HASHES hashes, so a 2 MiB file in 1-byte chunks
    (2,097,152 of them) matches no list: its chunks are not hashed, whether the header
    announces its size or not, and the report says why no damaged range was located.
    Before: one hash kept per byte, the server's RSS grew by about 390 MiB for 2.2 MB
    (7.4 s of CPU), so 45 GiB for a 256 MiB file."""
    server = _start(srv_factory, tmp_path / "db.sqlite", "--min-chunk-kb", "0")
    data = os.urandom(2 << 20)
    key = DeviceKey.generate()
    claim = _one_byte_chunks(key, len(data), hashlib.sha256(b"other bytes").digest())
    sidecar = wire.signed_to_pb(sign_claim(key, claim))

    def upload(announced: int) -> Iterator[pb.VerifyFileChunk]:
        header = pb.VerifyFileHeader(
            size_bytes=announced, sidecar=sidecar, chunk_hashes=[os.urandom(32)] * 8
        )
        yield pb.VerifyFileChunk(header=header)
        step = 1 << 16  # the most hashed before the size passes the list's bound: 196,608
        for i in range(0, len(data), step):
            yield pb.VerifyFileChunk(data=data[i : i + step])

    stub = _stub(server.address)
    pid = server.proc.pid
    base = psutil.Process(pid).memory_info().rss
    # the header's size, or none (0: unknown)
    replies = [stub.VerifyFile(upload(announced), timeout=300) for announced in (len(data), 0)]
    grew = _peak_rss(pid) - base
    assert grew < 64 << 20, f"the server's peak RSS grew by {grew >> 20} MiB"
    for reply in replies:
        said = [r for r in reply.reasons if "damaged byte ranges were not located" in r]
        assert said == [
            "damaged byte ranges were not located: the sidecar's claim cuts the file into"
            f" 1-byte chunks, 2,097,152 of them, more than the {MAX_CLAIM_CHUNK_HASHES:,}"
            " chunk hashes a claim's list can hold, so no list matches and they were not"
            " hashed"
        ], list(reply.reasons)
