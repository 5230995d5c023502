"""Witness names, URLs and answers are echoed bounded and escaped (h-bounds55): a witness
configured or answering with a megabyte of text, or with terminal escapes, must not make
a megabyte-long or terminal-moving error, status or log line. Real servers on real ports:
a witness that answers with hostile text over HTTP, and a relay in front of a real `prov
serve` that answers GetCheckpoint with hostile witness statuses."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from clients.cosigned import policy_key
from provenance.cli.urls import MAX_URL_CHARS
from provenance.core import merkle
from provenance.core.errors import ConfigError, LogError
from provenance.core.merkle import MemoryTree
from provenance.log.checkpoint import Checkpoint, generate_log_key
from provenance.v1 import provenance_pb2 as pb
from provenance.wire.sidecar import Sidecar, encode_sidecar
from provenance.witness import cosigner_vkey
from provenance.witness.client import Cosigner, WitnessSpec, parse_witness_option
from tests.conftest import ADMIN_TOKEN, ROOT, ServerProc, enroll_key, relay, signed_claim
from tests.test_tiles import _serving

MB = 1_000_000
#: Terminal escapes a hostile peer may send: clear the screen, set the window title,
#: reverse the text after it (U+202E), and line breaks that would forge log lines.
ESCAPES = "\x1b[2J\x1b]0;pwned\x07\u202e\r\nERROR forged log line\n"
#: Any character `provenance.terminal.shown_line` escapes that matters here.
_RAW = re.compile("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


def _vkey(name: str = "witness.test/w1") -> str:
    return cosigner_vkey(name, Ed25519PrivateKey.generate().public_key().public_bytes_raw())


# --- config time -------------------------------------------------------------------


def test_a_witness_url_of_a_megabyte_is_refused_at_start_in_a_short_message() -> None:
    """`prov serve --witness URL=KEY` took a URL of any length (and any characters): it
    was then echoed whole in every status, log line and refusal about that witness. Now
    one over `MAX_URL_CHARS`, or with a control character, a space or a
    character that is not ASCII, is refused naming the bound, quoting only its start."""
    vkey = _vkey()
    long_url = "http://127.0.0.1:8090/" + "p" * MB
    with pytest.raises(ConfigError) as caught:
        parse_witness_option(f"{long_url}={vkey}")
    said = str(caught.value)
    assert len(said) < 400, said[:400]
    assert f"longer than the {MAX_URL_CHARS:,} characters a URL may have here" in said
    assert f"({len(long_url):,} characters)" in said, said
    for bad in (
        "http://127.0.0.1:8090/a b",
        "http://127.0.0.1:8090/\x1b[2J",
        "http://h\u00e9.example",
    ):
        with pytest.raises(ConfigError) as caught:
            parse_witness_option(f"{bad}={vkey}")
        said = str(caught.value)
        assert "printable ASCII" in said and not _RAW.search(said), said
    fits = "http://127.0.0.1:8090/" + "p" * (MAX_URL_CHARS - 22)
    assert parse_witness_option(f"{fits}={vkey}").url == fits


@pytest.mark.parametrize(
    "value",
    ["x" * MB, "http://127.0.0.1:8090=" + "k" * MB, ESCAPES * 1000],
    ids=["no-equals-sign", "key-of-a-megabyte", "escapes"],
)
def test_a_malformed_witness_option_of_a_megabyte_is_quoted_bounded(value: str) -> None:
    """Before: 'is not URL=KEY' quoted the whole value, and a key of a megabyte (no file
    name can be that long) failed as a key file that cannot be read, naming it whole."""
    with pytest.raises(ConfigError) as caught:
        parse_witness_option(value)
    said = str(caught.value)
    assert len(said) < 500 and not _RAW.search(said), said[:500]
    with pytest.raises((ConfigError, LogError)) as refused:
        policy_key(value)  # `prov verify --witness`: the same key reading
    said = str(refused.value)
    assert len(said) < 500 and not _RAW.search(said), said[:500]


def test_prov_serve_refuses_a_huge_witness_url_as_a_usage_error(tmp_path: Path) -> None:
    """The command line (one argument may be at most 128 KiB on Linux): exit 2, one
    short line, nothing made. (A process, given 120 s: a --witness taken would serve.)"""
    url = "http://127.0.0.1:8090/" + "p" * 100_000
    db = tmp_path / "prov.db"
    args = ["serve", "--db", str(db), "--listen", "127.0.0.1:0", "--no-detector"]
    done = subprocess.run(
        [sys.executable, "-m", "clients.cli", *args, "--witness", f"{url}={_vkey()}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN},
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr[:1500]
    assert "characters a URL may have here" in done.stderr, done.stderr[:1500]
    assert len(done.stderr) < 2000 and "listening" not in done.stdout, done.stderr[:2000]
    assert not db.exists()


# --- a witness answering hostile text ------------------------------------------------


class _Refusing(BaseHTTPRequestHandler):
    """A witness that refuses every add-checkpoint with 400 and ``body``."""

    body = b""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(400)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing() -> Iterator[str]:
    """http://127.0.0.1:PORT of a witness refusing with 60 KB of escapes and text."""
    handler = type("Refusing", (_Refusing,), {"body": (ESCAPES + "y" * 60_000).encode()})
    with _serving(handler) as url:
        yield url.rstrip("/")


def _first_problem(tmp_path: Path, spec: WitnessSpec, timeout_s: float = 5.0) -> str:
    """The first problem a cosigner of a one-entry log reports with the witness ``spec``
    (asked with ``timeout_s``), once it reports one."""
    signer = generate_log_key(tmp_path / "log.pem", "media-provenance.local/log")
    tree = MemoryTree()
    tree.append(os.urandom(16))
    note = signer.sign(Checkpoint(signer.name, 1, tree.root(), None))
    cosigner = Cosigner(
        [spec],
        1,
        lambda old, new: merkle.consistency_proof(old, new, tree.get_nodes),
        lambda: (1, note),
        timeout_s=timeout_s,
    )
    try:
        cosigner.submit(1, note)
        deadline = time.monotonic() + 30 + timeout_s  # a hang guard: it reports at once
        while time.monotonic() < deadline and not cosigner.statuses()[0].problem:
            time.sleep(0.02)
        (status,) = cosigner.statuses()
    finally:
        cosigner.close()
    return status.problem


def test_a_witness_refusal_full_of_escapes_is_reported_bounded_and_escaped(
    tmp_path: Path, refusing: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A witness answering 400 with terminal escapes and line breaks before 60 KB of
    text (under the 64 KiB answer bound): the server's status for it (sent to clients
    by GetCheckpoint) and its log line carried the first 300 characters raw, so a
    forged log line and a screen-clearing escape reached the operator's log and any
    client's terminal. Now they are escaped, and cut, saying the length."""
    caplog.set_level(logging.WARNING, "provenance.witness.client")
    problem = _first_problem(tmp_path, WitnessSpec(refusing, _vkey("witness.test/w\u202eevil")))
    assert problem.startswith("refused checkpoint 1: 400: \\x1b[2J\\x1b]0;pwned\\x07\\u202e"), (
        problem
    )
    assert not _RAW.search(problem) and len(problem) < 1000, problem
    assert "characters)" in problem, problem
    lines = [r.getMessage() for r in caplog.records if "refused checkpoint" in r.getMessage()]
    assert len(lines) == 1, lines
    assert not _RAW.search(lines[0]) and len(lines[0]) < 1500, lines[0]
    assert "witness witness.test/w\\u202eevil (" in lines[0], lines[0]


# --- a server answering hostile witness statuses -----------------------------------


def _hostile_statuses(request: bytes, context: Any, forward: Any) -> bytes:
    """GetCheckpoint: the real answer, but for a cosigned one: no checkpoint yet, and
    witnesses whose name, URL and problem are a megabyte each, then 5,000 more."""
    if not pb.GetCheckpointRequest.FromString(request).cosigned:
        return bytes(forward(request))
    huge = pb.WitnessStatus(
        name="n" * MB + ESCAPES,
        url=ESCAPES + "http://" + "u" * MB,
        size=0,
        problem=ESCAPES + "p" * MB,
    )
    many = [pb.WitnessStatus(name=f"w{i}", url="http://w", problem="down") for i in range(5000)]
    return pb.GetCheckpointResponse(
        checkpoint="", quorum=1, witnesses=[huge, *many]
    ).SerializeToString()


def test_receipt_refresh_bounds_a_servers_witness_statuses(
    server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov receipt refresh` against a server (here a relay in front of a real one)
    whose GetCheckpoint names a witness of a megabyte of name, URL and problem, then
    5,000 more witnesses: the WITNESS POLICY NOT MET line quoted each whole (3 MB and
    50,000 more characters on stderr). Now each field is cut and escaped, and the
    witnesses after the first 16 are counted, not listed: exit 14 still."""
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        key = enroll_key(c)
        log_vkey, _ = c.log_key()
        signed = signed_claim(key, 1)
        receipt, _ = c.submit(signed)
    side = tmp_path / "one.prov"
    side.write_bytes(encode_sidecar(Sidecar(signed, key.public_key, receipt, log_vkey)))
    with relay(server.address, {"/provenance.v1.Log/GetCheckpoint": _hostile_statuses}) as address:
        capsys.readouterr()
        rc = prov_main(["receipt", "refresh", str(side), "--server", address])
        out, err = capsys.readouterr()
    assert rc == 14, (rc, out[:500], err[:500])
    assert err.startswith("WITNESS POLICY NOT MET: no checkpoint cosigned"), err[:500]
    assert len(err) < 6000, (len(err), err[:500])
    assert "\x1b" not in err and "\u202e" not in err, err[:3000]
    assert err.count("\n") == 1, err[:3000]  # one line (the console does not wrap it)
    assert "\\x1b[2J" in err and "(1,000," in err, err[:3000]  # escaped; lengths said
    assert "and 4,985 more witnesses" in err, err[-500:]


def test_a_witness_answer_with_an_endless_trailer_is_read_no_further_than_its_bound(
    tmp_path: Path,
) -> None:
    """The witness's answer was read to `MAX_ANSWER_BYTES`, but not the bytes around it:
    after a chunked answer's last chunk http.client read and dropped trailer lines
    without end, so a witness could hold each round for the whole timeout, sending as
    fast as the link goes, and its problem read 'no complete answer within 5 s'. Now the
    answer's headers, framing and trailers count with it (`wire_budget`): refused at
    once, in words."""
    from provenance.core.networds import wire_budget
    from provenance.witness.client import MAX_ANSWER_BYTES
    from tests.test_hostile_log_servers import _raw_server

    url, sent, done = _raw_server(
        b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n",
        b"X-Trailer: " + b"t" * 1000 + b"\r\n",
    )
    problem = _first_problem(tmp_path, WitnessSpec(url.rstrip("/"), _vkey()), timeout_s=20)
    assert done.wait(30), "the witness is still sending after the round ended"
    budget = wire_budget(MAX_ANSWER_BYTES)
    assert f"sent more than the {budget:,} bytes" in problem, (problem, sent[0])
    assert sent[0] < 8 * budget, sent[0]


class _BadCosigning(_Refusing):
    """A witness answering 200 with ``body``."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


def test_a_witness_name_with_a_bidi_mark_is_escaped_in_every_problem(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A witness whose configured name holds a bidirectional override (a key name may:
    signed-note forbids only spaces, '+' and controls) was escaped where the log line
    names it, but not inside its problem: 'the cosignature by witness.test/w<U+202E>evil
    does not verify' went raw into its GetCheckpoint status and the server's log line,
    reversing what follows on the operator's screen. Now the whole problem is escaped."""
    import base64

    from provenance.witness import cosignature_key_id

    name = "witness.test/w\u202eevil"
    raw = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    vkey = cosigner_vkey(name, raw)
    forged = base64.b64encode(cosignature_key_id(name, raw) + bytes(72)).decode()
    handler = type("Bad", (_BadCosigning,), {"body": f"\u2014 {name} {forged}\n".encode()})
    caplog.set_level(logging.WARNING, "provenance.witness.client")
    with _serving(handler) as url:
        problem = _first_problem(tmp_path, WitnessSpec(url.rstrip("/"), vkey))
    assert "does not verify" in problem, problem
    assert not _RAW.search(problem), problem
    lines = [r.getMessage() for r in caplog.records if "does not verify" in r.getMessage()]
    assert lines and not _RAW.search(lines[0]), lines
