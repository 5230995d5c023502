"""`prov verify --witness-url` and `prov receipt refresh --witness-url` of an honest log:
the witness asked directly changes nothing (exit 0, or 14 while a receipt is not yet
cosigned); a witness URL that cannot be reached, has cosigned nothing of the log, or
serves a checkpoint no --witness key cosigned is "cannot confirm" (exit 14) naming the
URL and why; --witness-url without --witness or not an http(s) URL is a usage error.
Real `prov serve`, real `prov witness serve`, a real gRPC relay and the real CLI. The
forked log's case is in tests/test_witness_fork_pending.py."""

# ruff: noqa: F811
from __future__ import annotations

import contextlib
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.api import ProvenanceClient
from clients.options import witness_urls
from provenance.core.errors import ConfigError
from provenance.terminal import quoted
from provenance.v1 import provenance_pb2 as pb
from provenance.witness import cosigner_vkey
from provenance.witness.client import parse_witness_option
from tests.conftest import (
    SAMPLES,
    Cli,
    ServerProc,
    cli_process,
    closed_port,
    relay,
    sign_sample,
    wait_cosigned,
    witness_serve,
)
from tests.drain import finish
from tests.stopping import owned
from tests.test_cited_binding import _genuine_answer, _verify, server, witness  # noqa: F401
from tests.test_witness_also_claims import GET_CHECKPOINT, VERIFY_FILE, _old_cosigned


def test_an_honest_logs_witness_url_changes_nothing(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """Photo A (leaf 1) and B (leaf 2) signed, the witness cosigned 3 entries: `prov
    verify --witness` of each says the same, exit 0, with --witness-url of the witness;
    behind a relay showing the cosigned checkpoint of 2 entries, B is not yet cosigned,
    exit 14, with it or without; `prov receipt refresh` of A's sidecar (its receipt of 2
    entries, proven consistent with the witness's 3) rewrites it, exit 0. (witurl61:
    before, --witness-url was no option: exit 2.)"""
    url, vkey = witness
    photo_a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    with ProvenanceClient(server.address) as c:
        before = c._log.GetCheckpoint(pb.GetCheckpointRequest(cosigned=True), timeout=60)
    photo_b = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
    rc, _, err = enrolled("sign", str(photo_b))
    assert rc == 0, err
    wait_cosigned(server.address, 3)
    for photo in (photo_a, photo_b):
        args = (str(photo), "--server", server.address, "--witness", vkey)
        plain = _verify(capsys, *args)
        asked = _verify(capsys, *args, "--witness-url", url)
        assert plain[0] == 0, plain
        assert asked == plain, (asked, plain)
    shown = {GET_CHECKPOINT: _old_cosigned(bytes(before.SerializeToString()))}
    answer = {VERIFY_FILE: _genuine_answer(server.address, photo_b).SerializeToString()}
    with relay(server.address, shown, answer) as address:
        args = (str(photo_b), "--server", address, "--witness", vkey)
        plain = _verify(capsys, *args)
        asked = _verify(capsys, *args, "--witness-url", url, "--witness-url", url + "/")
    assert plain[0] == 14, plain
    assert "covers leaf 2 (the newest covers 2 entries;" in " ".join(plain[2].split()), plain
    assert asked == plain, (asked, plain)
    refresh = ("receipt", "refresh", f"{photo_a}.prov", "--witness", vkey)
    rc, out, err = enrolled(*refresh, "--witness-url", url)
    assert rc == 0, (out, err)
    assert "now proven against checkpoint 3" in " ".join(out.split()), out


def test_a_witness_url_that_cannot_be_checked_is_cannot_confirm(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """--witness-url of nothing listening, of a second witness of the log that has
    cosigned nothing (404), and of the witness with only another witness's key as
    --witness: `prov verify` and `prov receipt refresh` exit 14, naming the URL and why,
    no traceback, the sidecar left as it was; --witness-url without --witness, or of
    another scheme: exit 2."""
    url, vkey = witness
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    sidecar = Path(f"{photo}.prov")
    kept = sidecar.read_bytes()
    nowhere = f"http://{closed_port()}"
    (tmp_path / "w2").mkdir()
    with ProvenanceClient(server.address) as c:
        log_key = c.log_key()[0]
    with witness_serve(tmp_path / "w2", log_key) as (url2, vkey2):
        cases = [
            (nowhere, vkey, "is not reachable"),
            (url2, vkey, "it has cosigned no checkpoint of the log"),
            (url, vkey2, "carries no valid cosignature by a --witness key"),
        ]
        for given, key, why in cases:
            args = ("--witness", key, "--witness-url", given)
            verified = _verify(capsys, str(photo), "--server", server.address, *args)
            refreshed = enrolled("receipt", "refresh", str(sidecar), *args)
            for rc, out, err in (verified, refreshed):
                said = " ".join(err.split())
                assert rc == 14, (given, rc, out, err)
                assert f"--witness-url {given}: the log cannot be checked" in said, err
                assert why in said, err
                assert "Traceback" not in err, err
            assert sidecar.read_bytes() == kept
    for bad in (("--witness-url", url), ("--witness", vkey, "--witness-url", "ftp://x")):
        rc, out, err = _verify(capsys, str(photo), "--server", server.address, *bad)
        assert rc == 2, (bad, rc, out, err)
        assert "--witness-url" in err, err
        rc, out, err = enrolled("receipt", "refresh", str(sidecar), *bad)
        assert rc == 2, (bad, rc, out, err)


def test_a_witness_url_with_a_query_or_fragment_is_a_usage_error(
    tmp_path: Path, capsys: Any
) -> None:
    """--witness-url with a query (``?...``) or a fragment (``#...``), which the checkpoint
    request (``URL/<origin hash>/checkpoint``, c2sp.org/tlog-witness) cannot carry: exit 2
    before any call, naming the URL and saying to give it without them. (witurl2-61:
    before, the query and fragment were silently dropped from the request.)"""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not looked at: the usage error comes first")
    key = cosigner_vkey(
        "witness.test/w1", Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    )
    for given in ("http://127.0.0.1:8090/w?key=1", "http://127.0.0.1:8090/w#top", "http://h/?"):
        args = (str(photo), "--server", closed_port(), "--witness", key)
        rc, out, err = _verify(capsys, *args, "--witness-url", given)
        said = " ".join(err.split())
        assert rc == 2, (given, rc, out, err)
        want = "a fragment (#...) is never sent" if "#" in given else "a query (?...) cannot"
        assert want in said, err
        assert given in said, err
    given = "http://user:pw@127.0.0.1:8090/w"  # session 61: before, dropped silently
    rc, out, err = _verify(capsys, *args, "--witness-url", given)
    assert rc == 2, (rc, out, err)
    assert "holds no user name or password" in " ".join(err.split()), err


def test_one_witness_url_given_twice_is_asked_once() -> None:
    """--witness-url values naming one witness (a trailing slash, the scheme or host in
    another case, the default port written out, an IPv6 address in another of its
    spellings) are one URL, the first as given (less its
    trailing slashes): the witness is asked once. (witurl2-61: before, ``URL`` and
    ``URL/`` were both fetched.)"""
    given = [
        "http://127.0.0.1:8090/w",
        "http://127.0.0.1:8090/w/",
        "HTTP://127.0.0.1:8090/w",
        "https://Witness.Example/",
        "https://witness.example:443",
        "http://witness.example",
        "http://127.0.0.1:8090/W",
        "http://[::1]:8090/w",
        "http://[0:0:0:0:0:0:0:1]:8090/w",  # one IPv6 address, written out
        "http://[2001:DB8::A]/",
        "http://[2001:db8:0::a]:80",
    ]
    assert witness_urls(given) == [
        "http://127.0.0.1:8090/w",
        "https://Witness.Example",
        "http://witness.example",
        "http://127.0.0.1:8090/W",
        "http://[::1]:8090/w",
        "http://[2001:DB8::A]",
    ]


#: Seconds a stalled witness holds its connection for the others to connect, at most.
HOLD_S = 30.0


@dataclass
class _Stalled:
    """Witnesses that answer no request until all of them hold one (`_stalled_witnesses`):
    their URLs, in order; the indexes of those that took a connection (``arrived``), and
    of those whose connection was still held when the last of them took one (``met``)."""

    urls: list[str]
    arrived: list[int] = field(default_factory=list)
    met: list[int] = field(default_factory=list)


@contextmanager
def _stalled_witnesses(n: int) -> Iterator[_Stalled]:
    """``n`` loopback HTTP servers, each taking one connection and reading its request,
    then answering nothing until all ``n`` hold one (a `threading.Barrier`, `HOLD_S` at
    most, broken on the way out of the block): only a client asking them all at once gets
    answers. Then each answers ``HTTP 404`` with the text ``stalled witness I`` (I its
    index), the last first (each waits for the one after it), so an answer that comes
    first is not the first URL's. A client asking one after another holds the first
    connection until its own timeout, the others never taken."""
    barrier = threading.Barrier(n, timeout=HOLD_S)
    answered = [threading.Event() for _ in range(n)]
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(n)]
    held = _Stalled([f"http://127.0.0.1:{s.getsockname()[1]}" for s in listeners])
    lock = threading.Lock()

    def hold(i: int, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except OSError:  # shut down on the way out: never asked
            return
        with conn:
            with lock:
                held.arrived.append(i)
            conn.settimeout(HOLD_S)
            request = b""
            while b"\r\n\r\n" not in request:  # read whole: no reset of an unread one
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            try:
                barrier.wait()
            except threading.BrokenBarrierError:  # not all asked at once
                return
            with lock:
                held.met.append(i)
            if i + 1 < n:
                answered[i + 1].wait(HOLD_S)
            body = f"stalled witness {i}".encode()
            head = f"HTTP/1.1 404 Not Found\r\nContent-Length: {len(body)}\r\n"
            conn.sendall(f"{head}Connection: close\r\n\r\n".encode() + body)
            answered[i].set()

    threads = [
        threading.Thread(target=hold, args=(i, s), daemon=True) for i, s in enumerate(listeners)
    ]
    for t in threads:
        t.start()
    try:
        yield held
    finally:
        barrier.abort()
        for s in listeners:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in threads:
            t.join(HOLD_S)


def test_witness_urls_are_asked_at_once(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """Three --witness-url witnesses that answer nothing until all three are asked:
    `prov verify` and `prov receipt refresh` (the real CLI, a child process) hold a
    connection to each at once, then exit 14 naming the first URL given and its answer,
    though the third answered first. (Asked one after another, the first held the
    command for its 5 s timeout, "no complete answer within 5 s", and the others were
    never asked.)"""
    vkey = witness[1]
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    commands = [
        ["verify", "--no-detect", str(photo), "--server", server.address],
        ["receipt", "refresh", f"{photo}.prov"],
    ]
    for command in commands:
        with _stalled_witnesses(3) as held:
            asked = [a for url in held.urls for a in ("--witness-url", url)]
            with owned(cli_process([*command, "--witness", vkey, *asked])) as proc:
                out, err = finish(proc, timeout=120)
        said = " ".join(err.split())
        assert sorted(held.met) == [0, 1, 2], (command, held, out, err)
        assert proc.returncode == 14, (command, proc.returncode, out, err)
        first = f"--witness-url {held.urls[0]}: the log cannot be checked"
        assert first in said and "(HTTP 404: stalled witness 0)" in said, (command, err)
        assert "stalled witness 1" not in said and "stalled witness 2" not in said, err
        assert "Traceback" not in err, err


def test_a_witness_url_host_no_resolver_can_be_asked_about_is_a_usage_error(
    tmp_path: Path, capsys: Any
) -> None:
    """--witness-url (and `prov serve --witness`) with a host Python cannot put to the
    resolver (a part between dots empty or over 63 characters: IDNA refuses it), or that
    `urllib.parse.urlsplit` refuses (an unclosed ``[``, brackets around no IPv6 address):
    exit 2 before any call, naming the URL. (revwitpar62: before, the first two ended
    `prov verify` in a UnicodeError traceback once the witness was asked, exit 1, the
    others in a ValueError traceback while the option was read, exit 1; `prov serve`
    took the first two and failed each round as "an internal error".)"""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not looked at: the usage error comes first")
    key = cosigner_vkey(
        "witness.test/w1", Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    )
    not_a_host = "is not a host name: each part between dots must be 1 to 63"
    bad = [
        ("http://a..example:8090", not_a_host),
        (f"http://{'a' * 64}.example", not_a_host),
        ("http://[::1", "its [ is not closed"),
        ("http://[zz]:80", "'[zz]' is no IPv6 address"),
    ]
    for given, why in bad:
        args = (str(photo), "--server", closed_port(), "--witness", key)
        rc, out, err = _verify(capsys, *args, "--witness-url", given)
        said = " ".join(err.split())
        assert rc == 2, (given, rc, out, err)
        assert f"--witness-url: {quoted(given)}: " in said and why in said, (given, err)
        assert "Traceback" not in err, (given, err)
        with pytest.raises(ConfigError, match="--witness"):
            parse_witness_option(f"{given}={key}")
