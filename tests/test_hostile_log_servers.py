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
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from clients.api import SLOW_LINK_RATE, ProvenanceClient
from clients.cli import main as prov_main
from provenance.core.errors import LogIntegrityError, TransportError
from provenance.core.networds import wire_budget
from provenance.log.checkpoint import MAX_NOTE_BYTES, LogSigner
from provenance.log.tiledir import MAX_FILE_BYTES, fetcher
from provenance.v1 import provenance_pb2 as pb
from provenance.wire.contract import MAX_MESSAGE_BYTES
from tests.conftest import SAMPLES, Answers, ServerProc
from tests.memory import prov_in_child
from tests.test_tiles import (
    ORIGIN,
    _answering,
    _audit,
    _encoding_server,
    _Quiet,
    _serving,
    _tiled_log,
)

_EMPTY_MEMBER = gzip.compress(b"", mtime=0)


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
    member count: a log served as 2,000 empty members before each file audits (exit 0),
    and the inflaters' work is linear (the old loop's was ~2,000 times the body). (20,000
    members, 400 KB, before: a tile's gzip body is now read no further than
    `gzip_sent_bound` of its own bound, 65,600 bytes for the 1-hash tile here.)"""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    _tiled_log(tmp_path / "tiles", signer, 300)
    vkey = signer.verifier_key()
    members = 2_000
    served = sum(
        members * len(_EMPTY_MEMBER) + len(gzip.compress(p.read_bytes()))
        for p in (tmp_path / "tiles").rglob("*")
        if p.is_file() and p.name != "checkpoint"
    )
    work = [0]
    monkeypatch.setattr(zlib, "decompressobj", lambda wbits: _CountedInflate(work, wbits))

    def encode(body: bytes) -> bytes:  # members - 1 empty ones, then the file's
        return _EMPTY_MEMBER * (members - 1) + gzip.compress(body)

    with _serving(_encoding_server(tmp_path / "tiles", "gzip", encode)) as url:
        rc = _audit("--state", str(tmp_path / "a.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 0, err
    assert served < work[0] <= 8 * served, (work[0], served)


class _CountingCheckpoint(_Quiet):
    """Answers every GET with an endless (``length`` None: no Content-Length, the body
    ends when the socket does) or ``length``-byte checkpoint of b"A"s, from a socket
    whose send buffer is small (16 KiB asked for), counting in ``sent`` the bytes the
    kernel took before the client closed; ``done`` is set once it stopped. Set the
    class attributes on a subclass per test."""

    sent: list[int]
    done: threading.Event
    length: int | None = None
    encoding: str = ""

    def setup(self) -> None:
        self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200)
        if self.encoding:
            self.send_header("Content-Encoding", self.encoding)
        if self.length is not None:
            self.send_header("Content-Length", str(self.length))
        self.end_headers()
        self.wfile.flush()
        chunk = _BOMB_CHUNK if self.encoding == "gzip" else b"A" * 65536
        left = self.length
        try:
            while left is None or left > 0:
                piece = chunk if left is None else chunk[:left]
                self.wfile.write(piece)
                self.sent[0] += len(piece)
                left = None if left is None else left - len(piece)
        except OSError:  # the client stopped reading and closed
            pass
        finally:
            self.done.set()
            self.close_connection = True


#: One gzip member of 16 MiB of b"A"s, about 16 KB: sent again and again, a gzip bomb
#: without end (a gzip stream is a series of members, RFC 1952 2.2).
_BOMB_CHUNK = gzip.compress(b"A" * (16 << 20), mtime=0)


def _counting(length: int | None, encoding: str = "") -> type[_CountingCheckpoint]:
    return type(
        "Counting",
        (_CountingCheckpoint,),
        {"sent": [0], "done": threading.Event(), "length": length, "encoding": encoding},
    )


@pytest.mark.parametrize(
    ("length", "encoding", "verb"),
    [
        (None, "", "is"),
        (12 << 20, "", "is"),
        (None, "gzip", "is"),
        (len(_BOMB_CHUNK), "gzip", "inflates to"),
    ],
    ids=["endless", "12-MiB-with-content-length", "endless-gzip-members", "one-gzip-bomb"],
)
def test_a_checkpoint_larger_than_any_note_is_read_only_to_the_notes_bound(
    tmp_path: Path, length: int | None, encoding: str, verb: str
) -> None:
    """A server answering `checkpoint` with an endless body (a misconfigured site's
    stream, a hostile mirror), or one of 5 MiB, was read to `MAX_FILE_BYTES` (16 MiB,
    a tile's bound) before its size was checked against the 1 MiB a signed note may
    hold, and the endless one was then called a LOG INTEGRITY FAILURE (exit 3), an
    alarm about a log nobody signed there; a gzip member of 16 KB was inflated to 16 MiB.
    Now reading (and inflating) stops one byte past `MAX_NOTE_BYTES`, and nothing signed
    is at that place, as for an HTML page (exit 1, 'no tiled log at ...', naming the
    bound). Measured: what the server's socket took before the client closed (its send
    buffer is small, so that is what the client read, give or take its own receive
    buffer), and the most memory Python held meanwhile (tracemalloc). Before: 16.97 MB,
    all 12 MiB, and 17.1 MB sent, and 16 MiB inflated from the one bomb; now 1.0 to
    1.3 MB sent, and under 8 MiB held in every case. A tile over its own bound stays an
    integrity failure: the signed checkpoint commits to it. Measured in a child process
    (`tests.memory`: tracemalloc counts every thread, and in the test's own this
    server's would be counted), after the same audit of another such server (24 MB of imports at the first)."""
    handler = _counting(length, encoding)
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    with _serving(_counting(length, encoding)) as first, _serving(handler) as url:
        audit = ["log", "audit", "--log-key", vkey, "--state", str(tmp_path / "s.json")]
        rc, held, both = prov_in_child(
            [*audit, "--tiles", url], tmp_path, [*audit, "--tiles", first]
        )
        assert handler.done.wait(30), "the server is still sending after the client returned"
    err = both[both.find(f"error: no tiled log at {url}") :]  # the traced run's
    assert rc == 1, both
    assert err.startswith(
        f"error: no tiled log at {url}: {url}checkpoint {verb} more than the"
        f" {MAX_NOTE_BYTES:,} bytes (1 MiB) a signed note may hold; it was read no further"
    ), err
    assert "INTEGRITY" not in err and "Traceback" not in err, err
    assert len(err) < 1000, err[:1000]
    assert not (tmp_path / "s.json").exists()
    assert handler.sent[0] < MAX_FILE_BYTES // 2, handler.sent[0]
    assert held < MAX_FILE_BYTES // 2, held


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


def test_a_redirects_own_body_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """urllib's redirect handler reads a 3xx answer's body whole (``fp.read()``) before
    it follows the Location, outside any bound of ours: a server (or a hostile mirror)
    redirecting each file of a tiled log with a 12 MiB body had all of it read into the
    auditor's memory for every file (an endless one: for the 300 s of the file's
    deadline, as fast as the link goes). Now a redirect's body is never read: its
    connection is closed, and the file is fetched from where it points. Measured: the
    most bytes the server's socket took for one redirect (a 16 KiB send buffer) before
    the client closed; before, all 12 MiB."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    _tiled_log(tmp_path / "tiles", signer, 300)
    folder = tmp_path / "tiles"
    sent: list[int] = []
    body = b"<html>moved</html>" * (1 << 16)  # 1.1 MiB, sent 11 times: 12.4 MiB

    class Redirecting(_Quiet):
        def setup(self) -> None:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            super().setup()

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.startswith("/moved/"):
                self.send_response(302)
                self.send_header("Location", "/real/" + self.path[len("/moved/") :])
                self.send_header("Content-Length", str(11 * len(body)))
                self.end_headers()
                took = 0
                try:
                    for _ in range(11):
                        self.wfile.write(body)
                        took += len(body)
                except OSError:  # the client closed without reading it
                    pass
                finally:
                    sent.append(took)
                    self.close_connection = True
                return
            path = folder / self.path.removeprefix("/real/")
            if not self.path.startswith("/real/") or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with _serving(Redirecting) as url:
        rc = _audit(
            "--state",
            str(tmp_path / "s.json"),
            "--tiles",
            url + "moved/",
            "--log-key",
            signer.verifier_key(),
        )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert sent, "no file was redirected"
    assert max(sent) < MAX_FILE_BYTES // 4, sent


def _raw_server(head: bytes, endless: bytes) -> tuple[str, list[int], threading.Event]:
    """A one-answer HTTP server on a loopback port: it reads the request, sends ``head``,
    then ``endless`` (if not empty) again and again until the client closes; (its URL, the bytes its
    socket took in ``[0]``, an event set once it stopped)."""
    listener = socket.create_server(("127.0.0.1", 0))
    sent = [0]
    done = threading.Event()

    def answer() -> None:
        conn, _ = listener.accept()
        listener.close()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        try:
            conn.recv(65536)
            conn.sendall(head)
            while endless:
                conn.sendall(endless)
                sent[0] += len(endless)
        except OSError:  # the client closed
            pass
        finally:
            conn.close()
            done.set()

    threading.Thread(target=answer, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/", sent, done


@pytest.mark.parametrize(
    ("head", "endless"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
            b"X-Trailer: " + b"t" * 1000 + b"\r\n",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"1;x=" + b"e" * 60_000 + b"\r\nA\r\n",
        ),
    ],
    ids=["endless-trailer", "chunk-extensions"],
)
def test_chunked_framing_is_read_no_further_than_the_files_bound(
    head: bytes, endless: bytes
) -> None:
    """The body of a tiled log's file was bounded (the checkpoint to 1 MiB and a byte),
    but not the bytes around it: http.client reads and drops any number of trailer lines
    after a chunked body's last chunk, and a chunk-size line of up to 64 KiB of
    extensions before each chunk, so a 5-byte checkpoint with an endless trailer, or one
    sent a byte a chunk with 60 KB of extensions each, had the auditor read for the
    file's whole deadline (972 MB in 3 s here, on loopback). Now the bytes read off the
    connection for a file are at most twice its bound and 1 MiB (`wire_budget`), and past
    that it is refused in words, read no further."""
    url, sent, done = _raw_server(head, endless)
    fetch = fetcher(url, deadline_s=20)
    with pytest.raises(TransportError) as e:
        fetch("checkpoint")
    assert done.wait(20), "the server is still sending after the client returned"
    said = str(e.value)
    assert "took more than" not in said, (said, sent[0])
    assert f"more than the {wire_budget(MAX_NOTE_BYTES):,} bytes" in said, said
    assert sent[0] < 2 * wire_budget(MAX_NOTE_BYTES), sent[0]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 302 Found\r\nLocation: ftp://x/\x1b[2J" + b"a" * 60_000 + b"\r\n",
        b"HTTP/1.1 500 \x1b]0;pwned\x07 " + b"r" * 60_000 + b"\r\n",
    ],
    ids=["redirect-target", "reason-phrase"],
)
def test_a_servers_long_redirect_target_or_reason_is_repeated_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], head: bytes
) -> None:
    """A redirect off http(s) was refused naming its target whole, and an HTTP error
    repeated its reason phrase whole: a server's 60 KB Location or status line made a
    60 KB `error:` line (the console escaped its controls). Now each is cut, escaped,
    saying its length (`provenance.terminal.clipped_line`)."""
    url, _, done = _raw_server(head + b"Content-Length: 0\r\n\r\n", b"")
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err
    assert rc == 1, err[:500]
    assert len(err) < 1000, (len(err), err[:300])
    assert "characters)" in err and "\x1b" not in err, err


@pytest.mark.parametrize("encoding", ["", "gzip"], ids=["identity", "gzip"])
def test_an_endless_hash_tile_is_read_no_further_than_a_tiles_bound(encoding: str) -> None:
    """A server answering a full hash tile (8,192 bytes at most) with an endless body had
    the auditor take up to a full bundle's 16 MiB (`MAX_FILE_BYTES`) of it before refusing
    it, though the folder fetcher reads a tile file no further than its bound and a byte.
    Now the body is refused once it passes the tile's bound and a byte (gzip-encoded:
    `gzip_sent_bound`, 81,920 bytes, as sent), saying what a tile of 256 hashes can hold
    (gzip-encoded: and the 81,920 bytes of gzip it passed).
    Measured: what the server's socket took before the client closed; before: 16.8 MB
    (both), now well under 1 MiB."""
    head = b"HTTP/1.1 200 OK\r\n" + (b"Content-Encoding: gzip\r\n" if encoding else b"") + b"\r\n"
    endless = _BOMB_CHUNK[:65536] if encoding else b"A" * 65536
    url, sent, done = _raw_server(head, endless)
    fetch = fetcher(url, deadline_s=60)
    with pytest.raises(LogIntegrityError) as e:
        fetch("tile/0/000")
    assert done.wait(30), "the server is still sending after the client returned"
    if encoding:  # its gzip cap named, not the tile's bound alone (h-tidy57)
        assert str(e.value).startswith(
            f"the server sent more than 81,920 bytes of gzip for {url}tile/0/000, the most"
            " taken for a tile of 256 hashes, which can hold 8,192 bytes"
        ), str(e.value)
    else:
        assert str(e.value) == (
            "the server sent more than a tile of 256 hashes can hold (8,192 bytes):"
            f" {url}tile/0/000; it was read no further"
        ), str(e.value)
    assert sent[0] < MAX_FILE_BYTES // 16, sent[0]


#: Empty gzip members before a full hash tile's own: 100,000 bytes, past the 81,920 its
#: gzip body may take as sent (`gzip_sent_bound`), though the tile inflates intact.
_PADDING_MEMBERS = 5_000


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (
            "padded-gzip",
            "the server sent more than 81,920 bytes of gzip for {url}, the most taken for a"
            " tile of 256 hashes, which can hold 8,192 bytes (twice that and 64 KiB: a"
            " tile's gzip is at most a few dozen bytes larger than the tile); it was read no"
            " further: the server pads its gzip, or sends no tile of this log there; tell"
            " its operator",
        ),
        (
            "inflates-past",
            "the server's gzip of {url} inflates past 8,192 bytes, more than a tile of 256"
            " hashes can hold; it was inflated no further",
        ),
        (
            "identity",
            "the server sent more than a tile of 256 hashes can hold (8,192 bytes): {url};"
            " it was read no further",
        ),
    ],
    ids=["padded-gzip", "inflates-past", "identity"],
)
def test_a_gzip_tile_past_a_cap_names_the_cap_it_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, said: str
) -> None:
    """`prov log audit --tiles URL` against a real server of a real tiled log whose full
    hash tile ``tile/0/000`` (8,192 bytes at most) comes gzip-encoded in 100,000 bytes
    (5,000 empty members before the tile's own), past the 81,920 bytes a gzip body of it
    may take as sent (`gzip_sent_bound`), was refused as 'the server sent more than a tile
    of 256 hashes can hold (8,192 bytes)': the tile's bound, not the cap that was passed,
    and nothing on what to do. Now the message names the gzip cap, the tile's bound, and
    what to do; a gzip body inflating past the bound says so; an identity body past it is
    as before. All three stay a LOG INTEGRITY FAILURE, exit 3, as every tile over its
    bound."""
    signer = LogSigner(Ed25519PrivateKey.generate(), ORIGIN)
    folder = tmp_path / "tiles"
    _tiled_log(folder, signer, 300)
    full = (folder / "tile/0/000").read_bytes()

    def encode(body: bytes) -> bytes:  # tile/0/000 damaged, the other files intact
        if body != full:
            return body if damage == "identity" else gzip.compress(body, mtime=0)
        if damage == "padded-gzip":
            return _EMPTY_MEMBER * _PADDING_MEMBERS + gzip.compress(body, mtime=0)
        if damage == "inflates-past":
            return gzip.compress(body + full[:32], mtime=0)
        return body + full[:32]

    encoding = "identity" if damage == "identity" else "gzip"
    with _serving(_encoding_server(folder, encoding, encode)) as url:
        capsys.readouterr()
        rc = _audit(
            "--state", str(tmp_path / "a.json"), "--tiles", url, "--log-key",
            signer.verifier_key(),
        )  # fmt: skip
    err = " ".join(capsys.readouterr().err.split())
    assert rc == 3, err
    assert err == "LOG INTEGRITY FAILURE: " + said.format(url=f"{url}tile/0/000"), err


@pytest.mark.parametrize(
    ("body", "quoted"),
    [
        (b"", ""),
        (b"disk on fire\n", " (the server says: disk on fire)"),
        (b"busy: Try again later.\n", " (the server says: busy: Try again later.)"),
    ],
    ids=["no-words", "other-words", "its-own-try-later"],
)
def test_a_server_failing_says_try_again_later_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: bytes, quoted: str
) -> None:
    """A tiles server answering 500: the audit says the server failed and to try again
    later once, in its own words unless the server's quoted line ends saying so (`prov
    web`'s damaged-file 500 does: the line said it twice before, h-tilefile57); exit 1."""
    failing = _answering(500, body, "text/plain; charset=utf-8")
    vkey = LogSigner(Ed25519PrivateKey.generate(), ORIGIN).verifier_key()
    with _serving(failing) as url:
        rc = _audit("--state", str(tmp_path / "s.json"), "--tiles", url, "--log-key", vkey)
    err = capsys.readouterr().err.strip()
    later = "" if "again later" in quoted else "; try again later"
    assert err == (
        f"error: cannot fetch {url}checkpoint: the server failed to serve it (HTTP 500"
        f" Internal Server Error), its own fault, not the log's{later}{quoted}"
    ), err
    assert err.lower().count("try again later") == 1 and rc == 1, (rc, err)


def _gzip_answer(framing: str, body: bytes, encoding: str = "gzip") -> bytes:
    """An HTTP answer of ``body`` (gzip bytes) with ``Content-Encoding: encoding``,
    framed by a Content-Length, chunked, or by the connection's close."""
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: " + encoding.encode() + b"\r\n"
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if framing == "chunked":
        chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + chunk + b"0\r\n\r\n"
    return head + b"Connection: close\r\n\r\n" + body


@pytest.mark.parametrize(
    ("framing", "cut"),
    [("length", 12), ("length", None), ("chunked", 12), ("close", 12)],
    ids=["length", "length-empty", "chunked", "close"],
)
def test_a_gzip_stream_cut_short_says_whether_the_connection_or_the_server_cut_it(
    framing: str, cut: int | None
) -> None:
    """A gzip-encoded file whose stream ends before its end: said to be "the connection
    closed early; try again" whatever its framing. But a body framed by its
    Content-Length or chunks that all came (an empty one too) was sent whole, cut by the
    server (or a proxy), and trying again fetches the same: now it says so and to tell
    the server's operator. A body framed by the connection's close alone may have been
    cut by the network: that still says to try again. Exit 1 (TransportError) for each."""
    note = b"tiles.test/log\n0\n" + b"A" * 43 + b"=\n"
    sent = gzip.compress(note)[:-cut] if cut else b""
    url, _, done = _raw_server(_gzip_answer(framing, sent), b"")
    with pytest.raises(TransportError) as e:
        fetcher(url)("checkpoint")
    assert done.wait(20)
    said = str(e.value)
    if framing == "close":
        assert said == (
            f"cannot fetch {url}checkpoint: its gzip stream ended before its end (the"
            " connection closed early); try again"
        ), said
    else:
        assert said == (
            f"cannot fetch {url}checkpoint: its gzip stream ends before its end, though the"
            f" server sent the whole body it announced ({len(sent):,} bytes): the server,"
            " or a proxy on the way, cut it; try again later, or tell the server's operator"
        ), said


def test_a_file_sent_as_x_gzip_is_read_as_gzip() -> None:
    """RFC 9110 8.4.1.3: a recipient SHOULD take the coding "x-gzip" for "gzip" (`prov
    web` does in Accept-Encoding). The audit refused a file so sent: "the server sent it
    in the encoding 'x-gzip', which was not asked for". Now it is inflated as gzip."""
    note = b"tiles.test/log\n0\n" + b"A" * 43 + b"=\n"
    url, _, done = _raw_server(_gzip_answer("length", gzip.compress(note), "X-Gzip"), b"")
    assert fetcher(url)("checkpoint") == note
    assert done.wait(20)
