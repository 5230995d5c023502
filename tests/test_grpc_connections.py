"""Idle gRPC connections from one client do not shut the others out: `prov serve` raises
its open-file limit (RLIMIT_NOFILE) from the soft to the hard limit at start, as a
server holding a socket per connection must (a service's soft limit is commonly 1,024:
systemd's default, LimitNOFILE=1024:524288). A real server on loopback, started with a
low soft limit; 127.0.0.1 and ::1 are two client addresses of a server on [::]."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from provenance.v1 import provenance_pb2 as pb
from provenance.v1 import provenance_pb2_grpc as rpc
from tests.conftest import SAMPLES, cli_process, read_line

#: The soft limit the server is started under (its hard limit stays as it is).
SOFT_LIMIT = 256
#: HTTP/2's client connection preface and an empty SETTINGS frame (RFC 9113 §3.4): the
#: connection is then one gRPC would keep open, waiting for calls.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def test_idle_connections_past_the_soft_open_file_limit_do_not_shut_others_out(
    tmp_path: Path,
) -> None:
    """One address holds more idle HTTP/2 connections than the server's soft open-file
    limit (256 here); another address's call is still answered. Before, the server ran
    out of descriptors: 'File descriptor limit reached. Retrying.' in its log every
    second and the other call DEADLINE_EXCEEDED (seen with 1,100 connections against the
    common 1,024, and here with 300 against 256)."""
    command = ["serve", "--db", str(tmp_path / "p.db"), "--listen", "[::]:0", "--no-detector"]
    proc = cli_process(command, soft_open_files=SOFT_LIMIT)
    held: list[socket.socket] = []
    try:
        port = int(read_line(proc, "listening on ").rpartition(":")[2])
        for _ in range(SOFT_LIMIT + 44):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(PREFACE)
            held.append(s)
        with grpc.insecure_channel(f"[::1]:{port}") as channel:
            vkey = rpc.LogStub(channel).GetLogKey(pb.GetLogKeyRequest(), timeout=20)
        assert vkey.verifier_key.startswith("media-provenance.local/log+")
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)


def _server_settings(port: int) -> dict[int, int]:
    """The HTTP/2 SETTINGS (id: value) a server at ``port`` on loopback sends first on a
    connection (RFC 9113 §6.5)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(PREFACE)
        data = b""
        while len(data) < 9 or len(data) < 9 + int.from_bytes(data[:3], "big"):
            chunk = s.recv(65536)
            assert chunk, "the server closed the connection before its SETTINGS"
            data += chunk
    length, kind = int.from_bytes(data[:3], "big"), data[3]
    assert kind == 0x4, f"the server's first frame is of type {kind}, not SETTINGS"
    body = data[9 : 9 + length]
    return {
        int.from_bytes(body[i : i + 2], "big"): int.from_bytes(body[i + 2 : i + 6], "big")
        for i in range(0, len(body), 6)
    }


def test_one_connection_holds_a_bounded_number_of_streams(tmp_path: Path) -> None:
    """The server advertises SETTINGS_MAX_CONCURRENT_STREAMS (`MAX_STREAMS_PER_CONNECTION`)
    on the main port and on the health port. Without it (grpc's default: no bound), one
    client's connection held 30,000 streams that sent their headers and never their
    message, and the server grew by 543 MiB (measured 5 December; see the constant). A
    burst of 2,000 calls at once on one connection (under the bound) is still answered
    in full."""
    import asyncio

    from provenance.server.limits import MAX_STREAMS_PER_CONNECTION

    command = [
        "serve", "--db", str(tmp_path / "p.db"), "--listen", "127.0.0.1:0",
        "--health-listen", "127.0.0.1:0", "--no-detector",
    ]  # fmt: skip
    proc = cli_process(command)
    try:
        port = int(read_line(proc, "listening on ").rpartition(":")[2])
        health = int(read_line(proc, "health").rpartition(":")[2])
        for each in (port, health):
            settings = _server_settings(each)
            assert settings.get(0x3) == MAX_STREAMS_PER_CONNECTION, (each, settings)

        async def burst(n: int) -> list[str]:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = rpc.LogStub(channel)
                replies = await asyncio.gather(
                    *(stub.GetLogKey(pb.GetLogKeyRequest(), timeout=120) for _ in range(n))
                )
            return [r.verifier_key for r in replies]

        keys = asyncio.run(burst(2000))
        assert len(keys) == 2000 and len(set(keys)) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _header_only_streams(port: int, streams: int) -> socket.socket | None:
    """A connection to ``port`` on loopback that opens ``streams`` calls of GetLogKey
    that send their headers and never their message (HPACK literals, RFC 7541 §6.2.2);
    None when the server closed it before they were all sent."""
    fields = [
        (b":method", b"POST"), (b":scheme", b"http"),
        (b":path", b"/provenance.v1.Log/GetLogKey"), (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers"),
    ]  # fmt: skip
    block = b"".join(b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v for n, v in fields)
    frames = b"".join(
        len(block).to_bytes(3, "big") + b"\x01\x04" + (1 + 2 * i).to_bytes(4, "big") + block
        for i in range(streams)
    )
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        s.sendall(PREFACE)
        if not s.recv(65536):  # the server's SETTINGS, or its close
            s.close()
            return None
        s.sendall(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00" + frames)  # SETTINGS ACK
    except OSError:  # reset: closed when accepted
        s.close()
        return None
    return s


def _still_open(held: list[socket.socket], wait_s: float, bound: int) -> list[socket.socket]:
    """The sockets of ``held`` the server has not closed (those it closed read end-of-file
    or a reset; what it sends meanwhile is read and dropped), once at most ``bound`` are
    left open or after ``wait_s`` seconds, whichever comes first. The server closes
    connections and never opens one again, so the count only falls: stopping at the
    bound answers "at most ``bound`` held" as waiting out ``wait_s`` did (10 s each time,
    20 s of the bounded-connections test, before)."""
    import select
    import time

    open_ = list(held)
    end = time.monotonic() + wait_s
    while len(open_) > bound and (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select(open_, [], [], left)
        for s in ready:
            try:
                if not s.recv(1 << 20):
                    open_.remove(s)
            except OSError:
                open_.remove(s)
    return open_


def _serve(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen[str], int, int]:
    """`prov serve` on loopback with a health port, and ``flags``: (process, gRPC port,
    health port)."""
    command = [
        "serve", "--db", str(tmp_path / "p.db"), "--listen", "127.0.0.1:0",
        "--health-listen", "127.0.0.1:0", "--no-detector", *flags,
    ]  # fmt: skip
    proc = cli_process(command)
    port = int(read_line(proc, "listening on ").rpartition(":")[2])
    return proc, port, int(read_line(proc, "health").rpartition(":")[2])


def test_connections_are_bounded_so_held_streams_are(tmp_path: Path) -> None:
    """`--max-rpc-connections` bounds the connections the server holds, on the main port
    and the health port each: a client opening 8 connections that each hold streams
    waiting for their request (here 256 a connection; up to `MAX_STREAMS_PER_CONNECTION`)
    keeps at most 3 against a bound of 4 (an honest client holds the fourth), the rest
    closed when accepted; the honest client's calls on its connection are answered
    throughout, and once the flood ends a new connection's are. Before, every connection
    was held: 2,048 such streams cost about 42 MiB each, and 50 connections grew the
    server by 2.1 GiB (measured 5 December, `MAX_RPC_CONNECTIONS`)."""
    proc, port, health = _serve(tmp_path, "--max-rpc-connections", "4")
    flood: list[socket.socket] = []
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rpc.LogStub(channel)
            key = stub.GetLogKey(pb.GetLogKeyRequest(), timeout=20).verifier_key
            for _ in range(8):
                s = _header_only_streams(port, 256)
                if s is not None:
                    flood.append(s)
            held = _still_open(flood, 10, 3)
            assert len(held) <= 3, f"{len(held)} of 8 flooding connections held (bound 4)"
            assert stub.GetLogKey(pb.GetLogKeyRequest(), timeout=20).verifier_key == key
        probes = [socket.create_connection(("127.0.0.1", health), timeout=20) for _ in range(6)]
        for s in probes:
            try:
                s.sendall(PREFACE)
            except OSError:
                pass
        flood += probes
        held = _still_open(probes, 10, 4)
        assert len(held) <= 4, f"{len(held)} of 6 health-port connections held (bound 4)"
        for s in flood:
            s.close()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The server may not yet have read the flood's closes when this connection
            # arrives (then it is refused as over the bound): an honest client's retry,
            # within the deadline, must find a place.
            stub = rpc.LogStub(channel)
            reply = stub.GetLogKey(pb.GetLogKeyRequest(), timeout=30, wait_for_ready=True)
        assert reply.verifier_key == key
    finally:
        for s in flood:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)


def _frames_until_closed(s: socket.socket, wait_s: float) -> list[int] | None:
    """The types of the HTTP/2 frames the server sends on ``s`` until it closes the
    connection; None when it is still open after ``wait_s`` seconds."""
    import time

    data = b""
    end = time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except OSError:  # reset
            chunk = b""
        if not chunk:
            kinds = []
            while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
                kinds.append(data[3])
                data = data[9 + int.from_bytes(data[:3], "big") :]
            return kinds
        data += chunk
    return None


def test_idle_connections_are_closed_and_busy_ones_kept(tmp_path: Path) -> None:
    """A connection with no call open for `--connection-idle-seconds` (2 here; grpc's
    ``grpc.max_connection_idle_ms``, up to 10% more) is told GOAWAY and closed, on the
    main port and the health port, while one carrying an upload whose pieces come 3 s
    apart is not cut: the upload is answered, and that channel's next call, after its
    connection too was idle and closed, is answered on a new one. Before, nothing closed
    an idle connection: each held a descriptor and a place under `--max-rpc-connections`
    until its client left."""
    import threading

    proc, port, health = _serve(tmp_path, "--connection-idle-seconds", "2")
    idle: list[socket.socket] = []
    try:
        piece = 120 * 1024
        data = (SAMPLES / "chelsea.png").read_bytes()  # 235 KiB: two pieces

        def upload() -> Iterator[pb.VerifyFileChunk]:
            header = pb.VerifyFileHeader(filename="chelsea.png", size_bytes=len(data))
            yield pb.VerifyFileChunk(header=header)
            for i in range(0, len(data), piece):
                time.sleep(3)  # longer than the idle time
                yield pb.VerifyFileChunk(data=data[i : i + piece])

        reports: list[pb.VerificationReport] = []
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = rpc.VerificationStub(channel)
            busy = threading.Thread(
                target=lambda: reports.append(stub.VerifyFile(upload(), timeout=60))
            )
            busy.start()
            for each in (port, health):
                idle.append(socket.create_connection(("127.0.0.1", each), timeout=20))
                idle[-1].sendall(PREFACE)
            kinds = [_frames_until_closed(s, 15) for s in idle]
            busy.join(60)
            # this channel's connection idle too, and closed (the channel leaves READY);
            # before, a 5 s sleep
            left: list[grpc.ChannelConnectivity] = []
            gone = threading.Event()

            def watch(state: grpc.ChannelConnectivity) -> None:
                left.append(state)
                if state is not grpc.ChannelConnectivity.READY:
                    gone.set()

            channel.subscribe(watch)
            try:
                assert gone.wait(15), f"the channel's idle connection was kept: {left}"
            finally:
                channel.unsubscribe(watch)
            key = rpc.LogStub(channel).GetLogKey(pb.GetLogKeyRequest(), timeout=20)
        assert key.verifier_key, "the channel did not call again on a new connection"
        for each, got in zip((port, health), kinds, strict=True):
            assert got is not None, f"the idle connection to {each} was still open after 15 s"
            assert 0x7 in got, f"{each} closed an idle connection without GOAWAY: {got}"
        assert len(reports) == 1, "the upload on a busy connection was not answered"
        assert reports[0].evidence.file_size == len(data)
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(timeout=30)
