"""The log's clients against a hostile or broken server (h-client52): `prov log audit
--tiles URL` against an HTTP server of a real tiled log that encodes its files to cost the
auditor, or answers its checkpoint with more bytes than any; the gRPC clients against a
gRPC server answering a message over their size cap, or taking an upload and never
answering. Real servers on real ports, the
real CLI in this process."""

from __future__ import annotations

import gzip
import shutil
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from clients.api import SLOW_LINK_RATE, ProvenanceClient
from clients.cli import main as prov_main
from provenance.core.errors import TransportError
from provenance.log.checkpoint import LogSigner
from provenance.v1 import provenance_pb2 as pb
from provenance.wire.contract import MAX_MESSAGE_BYTES
from tests.conftest import SAMPLES, Answers, ServerProc
from tests.test_tiles import ORIGIN, _audit, _serving, _tiled_log

_EMPTY_MEMBER = gzip.compress(b"", mtime=0)


def _members_server(folder: Path, members: int) -> type[BaseHTTPRequestHandler]:
    """A handler serving the tiled log in ``folder``, each tile and bundle gzip-encoded
    as ``members`` gzip members: ``members - 1`` empty ones, then the file's."""

    class Members(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = folder / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            if self.path != "/checkpoint":
                body = _EMPTY_MEMBER * (members - 1) + gzip.compress(body)
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Members


class _CountedInflate:
    """zlib's inflater, counting the bytes it is given and leaves over in ``work``."""

    def __init__(self, work: list[int], wbits: int) -> None:
        self._inflate = _DECOMPRESSOBJ(wbits)
        self._work = work

    def decompress(self, data: bytes | memoryview, max_length: int = 0) -> bytes:
        self._work[0] += len(data)
        return self._inflate.decompress(data, max_length)

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def unconsumed_tail(self) -> bytes:
        return self._inflate.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        self._work[0] += len(self._inflate.unused_data)
        return self._inflate.unused_data


_DECOMPRESSOBJ = zlib.decompressobj


def test_a_tile_of_many_gzip_members_is_read_in_linear_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each gzip member after the first was read from a copy of the rest of the body, so
    a 16 MiB body of 838,000 empty members (20 bytes each) took the auditor's CPU for
    minutes a file (a quadratic cost), and then a body of more than 64 members was
    refused (exit 1), bgzip's honest one member per 64 KiB block too. Now the bytes
    zlib is given and leaves over stay within a few times those served, whatever the
    member count: a log served as 20,000 empty members before each file audits (exit 0),
    and the inflaters' work is linear (the old loop's was ~20,000 times the body)."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    _tiled_log(tmp_path / "tiles", signer, 300)
    vkey = signer.verifier_key()
    members = 20_000
    served = sum(
        members * len(_EMPTY_MEMBER) + len(gzip.compress(p.read_bytes()))
        for p in (tmp_path / "tiles").rglob("*")
        if p.is_file() and p.name != "checkpoint"
    )
    work = [0]
    monkeypatch.setattr(zlib, "decompressobj", lambda wbits: _CountedInflate(work, wbits))
    with _serving(_members_server(tmp_path / "tiles", members)) as url:
        rc = _audit("--state", str(tmp_path / "a.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert served < work[0] <= 8 * served, (work[0], served)


def test_a_checkpoint_larger_than_any_file_is_no_tiled_log_not_an_integrity_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server answering `checkpoint` with an endless body (a misconfigured site's
    stream, a hostile mirror) was read to `MAX_FILE_BYTES` and then called a LOG
    INTEGRITY FAILURE (exit 3), an alarm about a log nobody signed there: nothing signed
    is at that place, as for an HTML page (exit 1, 'no tiled log at ...'). A tile over
    the size stays an integrity failure: the signed checkpoint commits to it."""

    class Endless(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()  # no Content-Length: the body ends when the socket does
            chunk = b"A" * 65536
            try:
                while True:
                    self.wfile.write(chunk)
            except OSError:  # the client stopped reading
                return

        def log_message(self, *args: object) -> None:
            pass

    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    with _serving(Endless) as url:
        rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert f"error: no tiled log at {url}: {url}checkpoint is larger than" in err, err
    assert "INTEGRITY" not in err and "Traceback" not in err, err
    assert not (tmp_path / "s.json").exists()


def test_an_answer_over_the_message_cap_is_said_in_our_words(
    hostile: Callable[[Answers], str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A server answering a message over the client's 8 MiB cap (`MAX_MESSAGE_BYTES`: a
    page of entries, a log key) failed with grpc's words, 'error: Stream removed (CLIENT:
    Received message larger than max (13107803 vs. 8388608)) [RESOURCE_EXHAUSTED]'. Now
    the server is named with the sizes, exit 1."""
    big = pb.GetLogKeyResponse(verifier_key="x" * (MAX_MESSAGE_BYTES + 1)).SerializeToString()
    address = hostile({"GetLogKey": lambda: big})
    capsys.readouterr()
    rc = prov_main(["log", "key", "--server", address])
    out, err = capsys.readouterr()
    assert rc == 1 and out == "", (rc, out, err)
    assert err == (
        f"error: the server at {address} answered with a message of {len(big):,} bytes, more"
        f" than the {MAX_MESSAGE_BYTES:,} a reply may hold: is it a provenance server?\n"
    ), err


@pytest.mark.parametrize("reads", [True, False], ids=["reads-all", "reads-nothing"])
def test_an_upload_the_server_never_answers_fails_after_the_calls_wait_not_the_decodes(
    tmp_path: Path, reads: bool
) -> None:
    """A server that takes a `prov verify` upload and never answers (or never takes its
    first message) held the command for the whole deadline sized for decoding a video,
    `DEFAULT_TIMEOUT` + `VERIFY_DECODE_SECONDS` + size / `MIN_UPLOAD_RATE`: 219 s for a
    small photo. A server that keeps a message waiting, or has not said it received the
    whole file (`RECEIVED_KEY`) within the client's timeout of the last, is given up
    on after that timeout, as the web page does (`verify_stream`'s ``answer_s``)."""
    stop = threading.Event()

    def upload(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        if reads:
            for _ in requests:
                pass
        stop.wait()
        return b""

    class Handler(grpc.GenericRpcHandler):
        def service(self, details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
            if str(details.method).endswith("/VerifyFile"):
                return grpc.stream_unary_rpc_method_handler(upload)
            return None

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((Handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    photo = shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg")
    try:
        with ProvenanceClient(f"127.0.0.1:{port}", timeout=1.0) as client:
            with pytest.raises(TransportError) as caught:
                client.verify_file(Path(photo))
    finally:
        stop.set()
        server.stop(None)
    assert caught.value.code == "DEADLINE_EXCEEDED", caught.value
    # the timeout, and the time the bytes sent take over a slow link (`SLOW_LINK_RATE`)
    waited = caught.value.waited_s
    most = 1 + (Path(photo).stat().st_size + 4096) // SLOW_LINK_RATE
    assert waited is not None and 1 <= waited <= most, caught.value
    assert str(caught.value) == (
        f"the server at 127.0.0.1:{port} did not answer within {waited:g} s"
    )


def _throttled(target: str, rate: int) -> tuple[str, Callable[[], None]]:
    """A TCP proxy on a real port to ``target`` (HOST:PORT) that passes the client's bytes
    on at ``rate`` bytes a second (a slow uplink, its buffers full of what was sent), the
    server's back at once; returns its address and a function that closes it."""
    host, port = target.rsplit(":", 1)
    listener = socket.create_server(("127.0.0.1", 0))
    links: list[socket.socket] = [listener]

    def pump(a: socket.socket, b: socket.socket, paced: bool) -> None:
        start, passed = time.monotonic(), 0
        try:
            while data := a.recv(8192):
                b.sendall(data)
                passed += len(data)
                if paced:  # against the clock since the start: no drift from sleep's slack
                    time.sleep(max(0.0, start + passed / rate - time.monotonic()))
            b.shutdown(socket.SHUT_WR)
        except OSError:  # either end closed
            pass

    def accept() -> None:
        try:
            while True:
                client, _ = listener.accept()
                server = socket.create_connection((host, int(port)))
                links.extend((client, server))
                threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, False), daemon=True).start()
        except OSError:  # the listener closed
            pass

    threading.Thread(target=accept, daemon=True).start()

    def close() -> None:
        for link in links:
            link.close()

    return f"127.0.0.1:{listener.getsockname()[1]}", close


def test_an_upload_over_a_slow_link_is_not_given_up_while_its_bytes_still_arrive(
    tmp_path: Path, server: ServerProc
) -> None:
    """gRPC takes an upload's messages as fast as the flow-control window and the socket
    buffers allow, and over a slow link those hold megabytes: `prov verify` of a 6 MB
    file to a real `prov serve` through a 100 KB/s link had its last message taken
    after 21 s, the server had it all 39 s later, and the client had given up at 51 s
    ('did not answer within 30 s': the server's word that it has the whole file,
    `RECEIVED_KEY`, was awaited only 30 s after the last message, while the bytes still
    flowed). Here a 2 MB image through a 150 KB/s link with a 2 s timeout: it is
    answered."""
    noise = np.random.default_rng(0).integers(0, 256, (820, 820, 3), np.uint8)
    image = tmp_path / "noise.png"
    Image.fromarray(noise).save(image)
    assert image.stat().st_size > 2_000_000
    address, close = _throttled(server.address, 150_000)
    try:
        with ProvenanceClient(address, timeout=2.0) as client:
            report = client.verify_file(image)
    finally:
        close()
    assert report.status == "UNSIGNED", report
