"""A hostile witness against the log server's cosigner (issue 16 item 2): the server must
never publish a cosigned checkpoint carrying anything but verified cosignature lines, and
a witness that answers slowly must not stall the rounds of the others.

The witnesses are real `provenance.witness.Witness` objects (real keys, real state on
disk) behind a real HTTP server on a loopback port; the hostile one rewrites the honest
answer (extra lines, a line without the signature-line dash, a blank line) or drips it."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from provenance.core import merkle
from provenance.core.errors import ConfigError
from provenance.core.merkle import MemoryTree
from provenance.log.checkpoint import (
    Checkpoint,
    LogSigner,
    NoteVerifier,
    generate_log_key,
    open_checkpoint,
    split_note,
)
from provenance.witness import (
    SIZE_CONTENT_TYPE,
    Answer,
    Witness,
    check_quorum,
    cosignature_key_id,
    cosigner_vkey,
    parse_cosigner_vkey,
)
from provenance.witness.client import Cosigner, WitnessSpec

ORIGIN = "media-provenance.local/log"


Mangle = Callable[[str, str], str]
"""Rewrites an honest 200 answer: (the answer, the other witness's key) -> what is sent."""


@dataclass
class Served:
    """A witness behind an HTTP server; ``mangle`` rewrites its 200 answers, ``drip_s``
    (when set) sends the answer one byte per ``drip_s`` seconds."""

    witness: Witness
    server: ThreadingHTTPServer
    stop: threading.Event
    mangle: Mangle | None = None
    other_vkey: str = ""
    drip_s: float = 0.0
    conflict: str | None = None  # when set, every answer is 409 with this body
    conflict_type: str | None = None  # when set, the Content-Type of every 409 answer

    @property
    def spec(self) -> WitnessSpec:
        return WitnessSpec(f"http://127.0.0.1:{self.server.server_address[1]}", self.witness.vkey())


def _forged_line(vkey: str) -> str:
    """A cosignature line with ``vkey``'s name and key id and a random signature."""
    name, raw = parse_cosigner_vkey(vkey)
    blob = cosignature_key_id(name, raw) + int(time.time()).to_bytes(8, "big") + os.urandom(64)
    return f"\u2014 {name} {base64.b64encode(blob).decode()}\n"


def serve(witness: Witness) -> Served:
    """``witness`` behind a threaded HTTP server on a loopback port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            answer = witness.add_checkpoint(self.rfile.read(int(self.headers["Content-Length"])))
            if served.conflict is not None:
                answer = Answer(409, served.conflict, SIZE_CONTENT_TYPE)
            if answer.status == 409 and served.conflict_type is not None:
                answer = Answer(409, answer.body, served.conflict_type)
            text = answer.body
            if answer.status == 200 and served.mangle is not None:
                text = served.mangle(text, served.other_vkey)
            data = text.encode()
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not served.drip_s:
                self.wfile.write(data)
                return
            for i in range(len(data)):
                if served.stop.wait(served.drip_s):
                    return
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    served = Served(witness, server, threading.Event())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return served


@dataclass
class Setup:
    """Two served witnesses of an in-memory log; ``grow`` appends one leaf and returns
    (size, signed note); ``cosigner`` makes a `Cosigner` with both witnesses."""

    served: list[Served]
    tree: MemoryTree
    notes: dict[int, str]
    signer: LogSigner

    def grow(self) -> tuple[int, str]:
        self.tree.append(os.urandom(16))
        size = self.tree.size
        self.notes[size] = self.signer.sign(Checkpoint(ORIGIN, size, self.tree.root(), None))
        return size, self.notes[size]

    def grow_by(self, leaves: int) -> tuple[int, str]:
        """Append ``leaves`` leaves, one checkpoint each; the last (size, signed note)."""
        for _ in range(leaves - 1):
            self.grow()
        return self.grow()

    def cosigner(self, quorum: int, timeout_s: float = 5.0) -> Cosigner:
        return Cosigner(
            [s.spec for s in self.served],
            quorum,
            lambda old, new: merkle.consistency_proof(old, new, self.tree.get_nodes),
            lambda: (self.tree.size, self.notes[self.tree.size]),
            timeout_s=timeout_s,
        )


@contextlib.contextmanager
def witnesses(tmp_path: Path, count: int) -> Iterator[Setup]:
    """`Setup` of ``count`` served witnesses (witness.test/w1...), stopped after."""
    signer = generate_log_key(tmp_path / "log.pem", ORIGIN)
    served = []
    for i in range(1, count + 1):
        wsigner = generate_log_key(tmp_path / f"w{i}.pem", f"witness.test/w{i}")
        served.append(serve(Witness(wsigner, [signer.verifier_key()], tmp_path / f"w{i}")))
    served[0].other_vkey = served[1].witness.vkey()
    try:
        yield Setup(served, MemoryTree(), {}, signer)
    finally:
        for s in served:
            s.stop.set()
            s.server.shutdown()
            s.server.server_close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with witnesses(tmp_path, 2) as two:
        yield two


MANGLES: dict[str, Mangle] = {
    "then a forged line of the other witness": lambda line, other: line + _forged_line(other),
    "after a forged line of the other witness": lambda line, other: _forged_line(other) + line,
    "twice with a blank line between": lambda line, other: line + "\n" + line,
    "without its leading dash": lambda line, other: line.removeprefix("\u2014 "),
    # line breaks that str.splitlines() honours but a signed note does not (only U+000A
    # ends a line): the line carrying them must not be published, or no one could open
    # the cosigned checkpoint (a control character, or a signature that is not base64)
    "ending in CR LF": lambda line, other: line.replace("\n", "\r\n"),
    "with U+2028 and text before its newline": lambda line, other: line[:-1] + "\u2028x\n",
    "with NEL (U+0085) before its newline": lambda line, other: line[:-1] + "\x85\n",
    "with a form feed before its newline": lambda line, other: line[:-1] + "\x0c\n",
}


@pytest.mark.parametrize("how", list(MANGLES))
def test_a_witness_cannot_put_other_lines_into_the_cosigned_checkpoint(
    setup: Setup, how: str
) -> None:
    """Its valid cosignature line, sent with something else: what the server publishes
    is the log's note plus exactly one verified line per witness, which meets a 2-of-2
    policy (a forged line in the honest witness's name must not shadow its real one)."""
    setup.served[0].mangle = MANGLES[how]
    cosigner = setup.cosigner(2)
    try:
        size, note = setup.grow()
        cosigner.submit(size, note)
        deadline = time.monotonic() + 30  # a hang guard (10 s before: short under load)
        while time.monotonic() < deadline and not cosigner.statuses()[0].problem:
            if cosigner.wait_cosigned(size, 0.05):
                break
        got = cosigner.cosigned()
        if got is not None:
            assert got is not None
            verifier = NoteVerifier.from_vkey(setup.signer.verifier_key())
            assert open_checkpoint(got, verifier).size == size
            assert len(check_quorum(got, [s.witness.vkey() for s in setup.served], 2)) == 2
            assert got.count("\n\n") == 1 and got.count("\n\u2014 ") == 3
        else:  # or refused: then nothing is published and the witness is reported
            assert got is None
            assert "cosignature" in cosigner.statuses()[0].problem
    finally:
        cosigner.close()


def test_a_witness_dripping_its_answer_does_not_stall_the_others(
    setup: Setup,
) -> None:
    """1 of 2: the slow witness sends its answer a byte every 0.3 s (each read within
    the 1 s timeout, the whole answer in ~40 s); the honest one keeps cosigning."""
    slow = setup.served[0]
    slow.drip_s = 0.3
    cosigner = setup.cosigner(1, timeout_s=1.0)
    try:
        for _ in range(3):
            size, note = setup.grow()
            cosigner.submit(size, note)
            # 20 s: room for a loaded machine, and still half the ~40 s the slow witness's
            # answer takes, so a round that waited for it would fail here
            assert cosigner.wait_cosigned(size, 20), f"checkpoint {size} not cosigned in 20 s"
        status = cosigner.statuses()[0]
        assert status.size == 0 and status.problem
    finally:
        slow.stop.set()
        cosigner.close()


@pytest.mark.parametrize(
    "body", ["\u00b2\n", "\u0663\n", "\uff13\n", "03\n", "-3\n", "3 entries\n", "\n"]
)
def test_a_409_size_that_is_not_ascii_digits_is_reported_as_such(setup: Setup, body: str) -> None:
    """A witness answering 409 with a "size" Python's int() or str.isdigit() takes but that
    is not ASCII decimal (a superscript two, an Arabic-Indic or fullwidth three) or is
    malformed: the round reports the witness with a sentence quoting the body (before:
    "failed on checkpoint 3: ValueError(\"invalid literal for int() ...\")" for "²", and
    "٣" read as 3) and the honest witness's cosignature is published (1 of 2)."""
    setup.served[0].conflict = body
    cosigner = setup.cosigner(1)
    try:
        for _ in range(3):
            size, note = setup.grow()
        cosigner.submit(size, note)
        assert cosigner.wait_cosigned(size, 30), "the honest witness's cosignature is missing"
        deadline = time.monotonic() + 30  # a hang guard: the round reports it at once
        while time.monotonic() < deadline and not cosigner.statuses()[0].problem:
            time.sleep(0.02)
        problem = cosigner.statuses()[0].problem
        assert problem == (
            f"did not cosign checkpoint {size}: its 409 answer carries no tree size:"
            f" {body!r} (want ASCII decimal digits)"
        ), problem
    finally:
        cosigner.close()


@pytest.mark.parametrize("ctype", ["Text/X.Tlog.Size", "TEXT/X.TLOG.SIZE; charset=utf-8"])
def test_a_409_size_is_followed_whatever_the_case_of_its_media_type(
    setup: Setup, ctype: str
) -> None:
    """tlog-witness "add-checkpoint": the 409 answer "MUST have a Content-Type of
    text/x.tlog.size"; RFC 9110 section 8.3.1: "The type and subtype tokens are
    case-insensitive." A witness that already cosigned size 3 for this log is asked by a
    new server (which starts from ``old 0``) to cosign size 5; it answers 409 with its
    size under the media type spelled in capitals, and the size is followed (a request
    from 3 with the proof). Before, only the lowercase spelling was read as a size hint,
    and the witness was reported as refusing ("409: 3") and never cosigned."""
    first = setup.cosigner(2)
    try:
        first.submit(*setup.grow_by(3))
        assert first.wait_cosigned(3, 30), "size 3 was not cosigned"
    finally:
        first.close()
    setup.served[0].conflict_type = ctype
    second = setup.cosigner(2)
    try:
        second.submit(*setup.grow_by(2))
        assert second.wait_cosigned(5, 30), second.statuses()
        assert [s.size for s in second.statuses()] == [5, 5]
    finally:
        second.close()


def test_a_cosigned_checkpoint_carries_at_most_16_signatures(tmp_path: Path) -> None:
    """c2sp.org/signed-note "Format": "Verifiers SHOULD apply a maximum limit to the
    number of signatures in a note [...] but MUST accept at least up to 16 signatures."
    A policy of 17 witnesses: the published checkpoint carries the log's signature and
    15 cosignature lines, a note every conformant verifier accepts, and still meets a
    quorum of 15; a quorum of 16 could never be shown in such a note and is refused when
    the server starts. Before, every witness's line was appended: 18 signatures here
    (and past 99 witnesses, more than the 100 that Go's note package and ours take)."""
    with witnesses(tmp_path, 17) as many:
        keys = [s.witness.vkey() for s in many.served]
        with pytest.raises(ConfigError, match="16 signatures"):
            many.cosigner(16)
        cosigner = many.cosigner(15)
        try:
            size, note = many.grow()
            cosigner.submit(size, note)
            assert cosigner.wait_cosigned(size, 60), cosigner.statuses()
            deadline = time.monotonic() + 60  # a hang guard: every witness answers
            while time.monotonic() < deadline and any(s.size != size for s in cosigner.statuses()):
                time.sleep(0.02)
            assert all(s.size == size for s in cosigner.statuses()), cosigner.statuses()
            published = cosigner.cosigned()
            assert published is not None
            assert len(split_note(published)[1]) == 16
            assert len(check_quorum(published, keys, 15)) == 15
        finally:
            cosigner.close()


def test_an_answer_over_64_kib_is_refused_and_the_next_round_reconnects_cleanly(
    setup: Setup,
) -> None:
    """A witness answering its line followed by 70 KiB: the round reports it in words
    ("over 64 KiB") and drops the kept-alive connection, whose unread rest would otherwise
    be taken for the next answer. Once the witness answers honestly again, its next round
    cosigns with no other problem reported on the way (before: the answer was cut at 64
    KiB, reported as a malformed cosignature, and the next request on the same connection
    read the cut answer's rest as its status line, failed once and backed off). The
    witness keeps its connections alive (HTTP/1.1), as `prov witness serve` does."""
    setup.served[0].mangle = lambda line, other: line + "x" * (70 * 1024) + "\n"
    handler = setup.served[0].server.RequestHandlerClass
    handler.protocol_version = "HTTP/1.1"  # type: ignore[attr-defined]  # kept alive
    cosigner = setup.cosigner(2)
    try:
        size, note = setup.grow()
        cosigner.submit(size, note)
        deadline = time.monotonic() + 30  # a hang guard: the round reports it at once
        while time.monotonic() < deadline and not cosigner.statuses()[0].problem:
            time.sleep(0.02)
        first = cosigner.statuses()[0].problem
        assert first == f"did not cosign checkpoint {size}: its answer is over 64 KiB", first
        setup.served[0].mangle = None
        size, note = setup.grow()
        cosigner.submit(size, note)
        seen = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not cosigner.wait_cosigned(size, 0.01):
            seen.add(cosigner.statuses()[0].problem)
        assert "\n\n" in (cosigner.cosigned() or "")
        assert cosigner.statuses()[0].size == size, cosigner.statuses()
        assert seen <= {first, ""}, seen
    finally:
        cosigner.close()


@pytest.mark.parametrize("hours", [1.0, 1e9 / 3.6], ids=["an hour", "1e12 s"])
def test_a_long_round_interval_neither_delays_the_first_round_nor_a_stop(
    setup: Setup, hours: float
) -> None:
    """``--witness-interval-ms`` of hours more than this machine has been up (or of more
    years than a sleep can take): the first checkpoint is sent at once, and a server
    stopping (`Cosigner.close`) does not wait for the next round. Before, the first
    round waited until the interval after the machine's boot (``time.monotonic()``
    counted from there), every later one slept its interval out uninterruptibly (so
    `prov serve` took up to an interval to stop on SIGTERM), and an interval past what
    ``time.sleep`` takes ended the thread in an OverflowError: nothing cosigned again."""
    cosigner = Cosigner(
        [s.spec for s in setup.served],
        2,  # both cosigned it: the first round is over when the quorum is met
        lambda old, new: merkle.consistency_proof(old, new, setup.tree.get_nodes),
        lambda: (setup.tree.size, setup.notes[setup.tree.size]),
        interval_s=time.monotonic() + hours * 3600,
    )
    closer = threading.Thread(target=cosigner.close, daemon=True)
    try:
        size, note = setup.grow()
        cosigner.submit(size, note)
        assert cosigner.wait_cosigned(size, 60), "the first checkpoint was not cosigned"
        cosigner.submit(*setup.grow())  # its round waits out the interval
    finally:
        closer.start()
        closer.join(60)  # a hang guard: the interval is far longer
    assert not closer.is_alive(), "close() waited for the round interval"


def test_a_witness_that_never_answers_does_not_hold_a_stop_for_its_timeout(
    tmp_path: Path,
) -> None:
    """A witness that takes the request and never answers, under ``--witness-timeout``
    of an hour: a server stopping (`Cosigner.close`) ends the exchange at once. Before,
    close() waited for the request's timeout (a real `prov serve --witness-timeout 120`
    still ran 60 s after SIGTERM), so a hostile witness made every stop of the log
    server as slow as the longest timeout an operator allowed a slow witness."""
    signer = generate_log_key(tmp_path / "log.pem", ORIGIN)
    mute = generate_log_key(tmp_path / "mute.pem", "witness.test/mute")
    listener = socket.create_server(("127.0.0.1", 0))
    asked = threading.Event()
    held: list[socket.socket] = []

    def take() -> None:
        with contextlib.suppress(OSError):  # the listener closed
            while True:
                conn, _ = listener.accept()
                held.append(conn)
                conn.recv(65536)  # the request, never answered
                asked.set()

    threading.Thread(target=take, daemon=True).start()
    tree = MemoryTree()
    tree.append(b"leaf")
    note = signer.sign(Checkpoint(ORIGIN, 1, tree.root(), None))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    cosigner = Cosigner(
        [WitnessSpec(url, cosigner_vkey(mute.name, mute.public_key))],
        1,
        lambda old, new: merkle.consistency_proof(old, new, tree.get_nodes),
        lambda: (1, note),
        timeout_s=3600,
    )
    closer = threading.Thread(target=cosigner.close, daemon=True)
    try:
        cosigner.submit(1, note)
        assert asked.wait(60), "the cosigner never asked the witness"
    finally:
        closer.start()
        closer.join(60)  # a hang guard: the timeout is far longer
        listener.close()
        for conn in held:
            conn.close()
    assert not closer.is_alive(), "close() waited for the witness's answer"


def test_a_stop_cutting_a_healthy_witnesss_answer_is_no_problem_of_the_witness(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """A server stopping (`Cosigner.close`) while a witness is still sending its answer
    cuts the exchange: that is the stop's doing, not the witness's, so no problem is
    recorded for it and no warning is logged (before: "did not cosign checkpoint 1: no
    answer before this server stopped; retrying with backoff", at every stop that came
    during a round)."""
    slow = setup.served[0]
    answering = threading.Event()

    def mark(text: str, other: str) -> str:
        answering.set()
        return text

    slow.mangle = mark
    slow.drip_s = 3600.0  # a byte an hour: the answer is under way when the stop comes
    cosigner = setup.cosigner(1, timeout_s=3600.0)
    closer = threading.Thread(target=cosigner.close, daemon=True)
    try:
        size, note = setup.grow()
        cosigner.submit(size, note)
        assert cosigner.wait_cosigned(size, 60), "the other witness did not cosign"
        assert answering.wait(60), "the slow witness never answered"
    finally:
        with caplog.at_level("WARNING", logger="provenance"):
            closer.start()
            closer.join(60)  # a hang guard: the answer takes hours
    assert not closer.is_alive(), "close() waited for the witness's answer"
    said = [r.getMessage() for r in caplog.records if r.levelname in {"WARNING", "ERROR"}]
    assert not said, said
    assert [s.problem for s in cosigner.statuses()] == ["", ""], cosigner.statuses()
