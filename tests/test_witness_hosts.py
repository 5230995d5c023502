"""The witness answers every Host name, by design (review hostile51): the metrics port
and the web page refuse names they were not given (421, a DNS-rebinding defence), but a
witness is reached by its name from other servers (`prov serve --witness
http://witness.internal:8090=KEY` sends Host witness.internal), and everything it answers
is public: a cosignature of a checkpoint the log itself signed, or the last checkpoint it
cosigned, which any monitor may fetch. A rebinding page reading those learns nothing, and
one posting a checkpoint needs none of the answer (a browser posts it blind anyway).
docs/deploy.md, "Witnesses", says so; this test fails if a default allow-list is added
without that choice being revisited."""

from __future__ import annotations

import hashlib
import http.client
from pathlib import Path
from urllib.parse import urlsplit

from provenance.log.checkpoint import Checkpoint, generate_log_key
from tests.conftest import witness_serve


def _ask(url: str, method: str, path: str, host: str, body: bytes = b"") -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.putrequest(method, path, skip_host=True)
        conn.putheader("Host", host)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_the_witness_answers_a_name_it_was_not_given(tmp_path: Path) -> None:
    signer = generate_log_key(tmp_path / "log.pem", "log.test/hosts")
    note = signer.sign(Checkpoint("log.test/hosts", 1, bytes(32)))
    origin = hashlib.sha256(b"log.test/hosts").hexdigest()
    with witness_serve(tmp_path, signer.verifier_key()) as (url, _):
        for old, host in enumerate(("witness.internal:8090", "rebound.attacker.example")):
            body = f"old {old}\n\n{note}".encode()  # the second: the same checkpoint again
            status, text = _ask(url, "POST", "/add-checkpoint", host, body)
            assert status == 200 and text.startswith(b"\xe2\x80\x94 witness.test/w1 "), text
            status, text = _ask(url, "GET", f"/{origin}/checkpoint", host)
            assert status == 200 and text.startswith(b"log.test/hosts\n1\n"), text
