"""`prov web --log-key KEY` in front of the second of two `prov serve` sharing one
PostgreSQL log (h-pinkey60): the key the first presents, pinned, is the key the second
signs with (one log key file for the servers of a database), so the explorer, the log
API and a lookup are 200, not 502. Real servers, a real PostgreSQL, a real `prov web`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from tests.conftest import SAMPLES, Cli, ServerProc, sign_sample, start_server
from tests.test_web_cited import _web


@pytest.fixture
def server_db(pg_url: str) -> str:
    """The servers of this module log into one PostgreSQL database."""
    return pg_url


def test_a_pinned_key_holds_for_each_server_of_a_shared_log(
    enrolled: Cli, server: ServerProc, server_db: str, tmp_path: Path
) -> None:
    sign_sample(enrolled, tmp_path, "rocket.jpg")
    sign_sample(enrolled, tmp_path, "chelsea.png")
    with ProvenanceClient(server.address, timeout=60) as c:
        real, _ = c.log_key()
    second = start_server(server_db)
    try:
        with _web(second.address, "--log-key", real) as http:
            r = http.get("/api/v1/checkpoint")
            assert r.status_code == 200, r.text
            assert r.json()["log_key"] == real and r.json()["size"] == 3, r.text
            for path in ["/log", "/log/entries/2", "/api/v1/entries/1", "/manifests/2"]:
                assert http.get(path).status_code == 200, path
            sha = hashlib.sha256((SAMPLES / "rocket.jpg").read_bytes()).hexdigest()
            r = http.post("/api/v1/lookup", json={"queries": [{"sha256": sha}]})
            assert r.status_code == 200, r.text
            assert r.json()["results"][0]["status"] == "SIGNED_ORIGINAL", r.text
    finally:
        second.stop()
