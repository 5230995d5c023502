"""`prov verify --witness-url` of a hostile witness URL (revwiturl61): an answer cut
short, a redirect, an answer over 64 KiB, a checkpoint of another origin signed with the
log's own key, one whose only cosignature line is in the witness's name but of another
key: each "cannot confirm", exit 14, naming the URL and why (a cut answer is not said to
be "asked again later": one fetch, nothing asks again). A checkpoint the log's key signed
and a --witness key cosigned but of another tree of the receipt's size, or of a size past
the server's log: a fork, exit 3. The genuine checkpoint with extra lines (another key in
the witness's name, a cosignature by a witness of no --witness key) and one of size 0
(the empty tree): exit 0. `prov receipt refresh` exits as `prov verify`, its sidecar
untouched. A server's wrong or refused consistency proof between the witness's
checkpoint and the receipt's, either one the larger: exit 3 (1 when it is unavailable),
never 0. An honest log with two witness URLs, one behind the other: exit 0, the same
--json; one unreachable: exit 14, the full --json report, ``witnesses.error`` naming it.
Real `prov serve`, real `prov witness serve`, a real gRPC relay, a real TCP server for
the hostile answers."""

# ruff: noqa: F811
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provenance.core import merkle
from provenance.log.checkpoint import Checkpoint, LogSigner, load_log_signer
from provenance.v1 import provenance_pb2 as pb
from provenance.witness import cosign, cosigner_vkey
from provenance.witness.client import fetch_cosigned_checkpoint
from tests.conftest import (
    SAMPLES,
    Cli,
    RelayAnswer,
    ServerProc,
    relay,
    sign_sample,
    wait_cosigned,
)
from tests.test_cited_binding import (  # noqa: F401
    VERIFY_FILE,
    _genuine_answer,
    _verify,
    server,
    witness,
)

ORIGIN = "media-provenance.local/log"


class _Canned(socketserver.BaseRequestHandler):
    """Answers a request (read whole: its body too, so that closing after the answer
    resets nothing) with the bytes ``answers`` holds for its path's first part."""

    answers: dict[str, bytes] = {}

    def handle(self) -> None:
        sock: socket.socket = self.request
        got = b""
        while b"\r\n\r\n" not in got:
            more = sock.recv(4096)
            if not more:
                return
            got += more
        head, _, body = got.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        while length is not None and len(body) < int(length.group(1)):
            more = sock.recv(4096)
            if not more:
                return
            body += more
        path = head.split(b" ", 2)[1].decode()
        sock.sendall(self.answers[path.split("/")[1]])


@contextmanager
def _hostile(answers: dict[str, bytes]) -> Iterator[str]:
    """``http://HOST:PORT`` of a real TCP server sending ``answers[CASE]`` to a request
    for ``/CASE/...``, then closing the connection."""
    handler = type("Handler", (_Canned,), {"answers": answers})
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def _ok(text: str) -> bytes:
    body = text.encode()
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body


def _signed(log: LogSigner, size: int, root: bytes) -> str:
    return log.sign(Checkpoint(ORIGIN, size, root))


def test_a_hostile_witness_url_is_cannot_confirm_or_a_fork(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """Each hostile answer of the module docstring: its exit code and words; no traceback.
    (revwiturl61: before, the answer cut short said "it is asked again later".)"""
    url, vkey = witness
    photo, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    genuine = fetch_cosigned_checkpoint(url, ORIGIN)
    sidecar = Path(f"{photo}.prov")
    kept = sidecar.read_bytes()
    log = load_log_signer(tmp_path / "prov.db.logkey.pem", ORIGIN)
    evil = LogSigner(Ed25519PrivateKey.generate(), "evil.test/w")
    same_name = LogSigner(Ed25519PrivateKey.generate(), "witness.test/w1")
    evil_vkey = cosigner_vkey(evil.name, evil.public_key)
    junk = LogSigner(Ed25519PrivateKey.generate(), "junk.test/x")
    text = genuine.split("\n\n", 1)[0]
    log_line, witness_line = [ln for ln in genuine.split("\n") if ln.startswith("\u2014 ")]
    log_only = f"{text}\n\n{log_line}\n"  # the log's signature, no cosignature

    def cosigned(note: str, signer: LogSigner = evil) -> str:
        return note + cosign(signer, note.split("\n\n", 1)[0].encode() + b"\n", 1_700_000_000)

    other_origin = log.sign_text(f"other.example/log\n2\n{'A' * 43}=\n")
    answers = {
        "cut": b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + genuine.encode()[:40],
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n"
        + genuine.encode()[:40],
        "redirect": b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
        % url.encode(),
        "huge": _ok("x" * (70 * 1024)),
        "origin": _ok(cosigned(other_origin)),
        "same-name": _ok(cosigned(log_only, same_name)),
        "extra": _ok(cosigned(cosigned(log_only, same_name), junk) + witness_line + "\n"),
        "equal-size": _ok(cosigned(_signed(log, 2, b"\x01" * 32))),
        "ahead": _ok(cosigned(_signed(log, 1000, b"\x02" * 32))),
        "empty": _ok(cosigned(_signed(log, 0, merkle.EMPTY_ROOT))),
    }
    policy = ("--witness", vkey, "--witness", evil_vkey, "--witness-quorum", "1")
    with _hostile(answers) as base:
        expected = [
            ("cut", 14, "ended its answer before its end"),
            ("chunked", 14, "ended its answer before its end"),
            ("redirect", 14, f"HTTP 302, a redirect (to {url}), not followed"),
            ("huge", 14, "64 KiB"),
            ("origin", 14, "does not verify with the log key"),
            ("same-name", 14, "carries no valid cosignature by a --witness key"),
            ("extra", 0, ""),
            ("equal-size", 3, "two different trees of size 2"),
            ("ahead", 3, "fewer entries than the witness cosigned"),
            ("empty", 0, ""),
        ]
        wrong = []  # every case tried, its mismatches listed together
        for case, code, words in expected:
            given = f"{base}/{case}"
            args = (str(photo), "--server", server.address, *policy, "--witness-url", given)
            rc, out, err = _verify(capsys, *args)
            said = " ".join(err.split())
            good = (
                rc == code
                and words in said
                and "Traceback" not in err
                and "asked again later" not in said
                and (code != 14 or f"--witness-url {given}: the log cannot be checked" in said)
                and (code != 3 or given in said)
            )
            if code:  # `prov receipt refresh` the same, its sidecar left as it was
                refresh = ("receipt", "refresh", str(sidecar), *policy, "--witness-url", given)
                rc, out, err = enrolled(*refresh)
                refreshed = " ".join(err.split())
                good = good and rc == code and given in refreshed and words in refreshed
                good = good and sidecar.read_bytes() == kept
            if not good:
                wrong.append((case, rc, out, err))
    assert not wrong, wrong


def _two_photos(
    enrolled: Cli, server: ServerProc, url: str, folder: Path
) -> tuple[Path, Path, str]:
    """Photo A signed (its receipt of 2 entries), the checkpoint of 2 the witness at ``url``
    then cosigned kept, photo B signed and cosigned (3): (A, B, that checkpoint)."""
    photo_a, _ = sign_sample(enrolled, folder, "rocket.jpg")
    wait_cosigned(server.address, 2)
    behind = fetch_cosigned_checkpoint(url, ORIGIN)
    photo_b = Path(shutil.copy(SAMPLES / "chelsea.png", folder / "chelsea.png"))
    rc, _, err = enrolled("sign", str(photo_b))
    assert rc == 0, err
    wait_cosigned(server.address, 3)
    return photo_a, photo_b, behind


CONSISTENCY = "/provenance.v1.Log/GetConsistencyProof"


def _proof(hashes: list[bytes]) -> RelayAnswer:
    """GetConsistencyProof answered with ``hashes`` as the proof, whatever is asked."""

    def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        asked = pb.GetConsistencyProofRequest.FromString(request)
        return bytes(
            pb.GetConsistencyProofResponse(
                first_size=asked.first_size, second_size=asked.second_size, proof=hashes
            ).SerializeToString()
        )

    return answer


def _refused(code: grpc.StatusCode) -> RelayAnswer:
    """GetConsistencyProof refused with ``code``."""

    def answer(request: bytes, context: Any, forward: Callable[[bytes], bytes]) -> bytes:
        context.abort(code, "refused by a hostile server")
        raise AssertionError("abort returned")

    return answer


def test_a_servers_bad_proof_to_the_witnesss_checkpoint_is_no_pass(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """Photo A's receipt (2 entries), the witness at 3: a server (a relay in front of the
    real one) sending a wrong consistency proof from 2 to 3 (random hashes, none, one
    short hash, 100,000 hashes) or refusing it as past its log is a fork, exit 3, naming
    the witness; one refusing it otherwise (unavailable) is exit 1: never a pass. The
    other way, photo B's receipt (3) and the witness's checkpoint of 2 (kept, served at
    another URL): a wrong proof from 2 to 3 is exit 3 too, and so is a refusal of it as
    past the log (witurl2-61: before, exit 1, though the server signed the receipt's
    checkpoint of 3), an unavailable one exit 1."""
    url, vkey = witness
    photo_a, photo_b, behind = _two_photos(enrolled, server, url, tmp_path)
    upload = {VERIFY_FILE: _genuine_answer(server.address, photo_a).SerializeToString()}
    cases = [
        ("random", _proof([os.urandom(32), os.urandom(32)]), 3, "does not verify"),
        ("none", _proof([]), 3, "does not verify"),
        ("short", _proof([b"x"]), 3, "does not verify"),
        ("huge", _proof([bytes(32)] * 100_000), 3, "does not verify"),
        ("out of range", _refused(grpc.StatusCode.OUT_OF_RANGE), 3, "fewer entries"),
        ("unavailable", _refused(grpc.StatusCode.UNAVAILABLE), 1, ""),
    ]
    wrong = []
    for case, answer, code, words in cases:
        with relay(server.address, {CONSISTENCY: answer}, upload) as address:
            args = ("--server", address, "--witness", vkey, "--witness-url", url)
            rc, out, err = _verify(capsys, str(photo_a), *args)
        said = " ".join(err.split())
        good = rc == code and words in said and "Traceback" not in err
        if not (good and (code != 3 or f"the one the witness at {url} cosigned (3)" in said)):
            wrong.append((case, rc, out, err))
    upload = {VERIFY_FILE: _genuine_answer(server.address, photo_b).SerializeToString()}
    with _hostile({"behind": _ok(behind)}) as base:
        for case, answer, code, words in cases:
            with relay(server.address, {CONSISTENCY: answer}, upload) as address:
                args = ("--server", address, "--witness", vkey, "--witness-url", f"{base}/behind")
                rc, out, err = _verify(capsys, str(photo_b), *args)
            said = " ".join(err.split())
            good = rc == code and words in said and "Traceback" not in err
            if not (good and (code != 3 or f"witness at {base}/behind cosigned (2)" in said)):
                wrong.append((f"{case}, witness behind", rc, out, err))
    assert not wrong, wrong


def test_two_witnesses_one_behind_the_other_pass_an_honest_log(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """The witness's genuine checkpoint of 2 entries kept and served at a second URL (a
    witness behind), the witness itself at 3: photo A (receipt of 2) and B (of 3) verify,
    exit 0, with both URLs, in either order, and --json shows the same report as without
    them (but the time it was made); a second URL that cannot be reached is exit 14 with
    the full report, as for a policy not met: its verdict and evidence as without it,
    ``witnesses.met`` false and ``witnesses.error`` naming the URL (witurl2-61: before,
    only ``{"status": null, "error": ...}``)."""
    url, vkey = witness
    photo_a, photo_b, behind = _two_photos(enrolled, server, url, tmp_path)
    with _hostile({"behind": _ok(behind), "gone": b""}) as base:
        for photo in (photo_a, photo_b):
            args = (str(photo), "--server", server.address, "--witness", vkey, "--json")
            plain = _verify(capsys, *args)
            assert plain[0] == 0, plain
            for urls in ((url, f"{base}/behind"), (f"{base}/behind", url)):
                asked = _verify(capsys, *args, *(a for u in urls for a in ("--witness-url", u)))
                assert asked[0] == 0, asked
                assert _report(asked[1]) == _report(plain[1]), (asked, plain)
        gone = f"{base}/gone"
        rc, out, err = _verify(capsys, *args, "--witness-url", url, "--witness-url", gone)
    assert rc == 14, (rc, out, err)
    doc, want = _report(out), _report(plain[1])
    said = doc["witnesses"].pop("error") or ""
    assert f"--witness-url {gone}: the log cannot be checked" in said, doc
    assert doc["witnesses"].pop("met") is False, doc
    want["witnesses"].pop("error"), want["witnesses"].pop("met")
    assert doc["status"] == want["status"] and doc["evidence"] == want["evidence"], (doc, want)
    assert doc["witnesses"]["leaf_index"] == want["witnesses"]["leaf_index"], (doc, want)


def _report(out: str) -> dict[str, Any]:
    """`prov verify --json`'s object, its ``verified_at`` (the time of the run) left out."""
    doc: dict[str, Any] = json.loads(out)
    doc.pop("verified_at")
    return doc
