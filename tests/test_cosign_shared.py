"""Servers over one PostgreSQL database with a witness policy (docs/deploy.md, step 6):
each one's cosigned checkpoint follows the log, whichever server appended. Before, a
server asked its witnesses to cosign only the checkpoints it committed itself, so behind
a load balancer `prov receipt refresh` or `prov verify --witness` through one server of
a claim logged through another exited 14 ("no checkpoint cosigned by the server's
quorum ... covers leaf N") until that server appended something (a newcomer following
deploy.md). Real PostgreSQL, two real `prov serve`, a real `prov witness serve`."""

from __future__ import annotations

from pathlib import Path

from clients.api import ProvenanceClient
from provenance.log.checkpoint import generate_log_key
from tests.conftest import (
    ADMIN_TOKEN,
    PG_LOG_KEYS,
    enroll_key,
    signed_claim,
    start_server,
    wait_cosigned,
    witness_serve,
)


def test_a_server_gets_cosigned_what_another_server_appended(pg_url: str, tmp_path: Path) -> None:
    log_vkey = generate_log_key(PG_LOG_KEYS[pg_url], "media-provenance.local/log").verifier_key()
    with witness_serve(tmp_path, log_vkey) as (url, wkey):
        policy = ("--witness", f"{url}={wkey}")
        a = start_server(pg_url, *policy)
        b = start_server(pg_url, *policy)
        try:
            with ProvenanceClient(a.address, admin_token=ADMIN_TOKEN) as c:
                device = enroll_key(c)  # leaf 0, through A
                c.submit(signed_claim(device, 1))  # leaf 1, through A
            assert wait_cosigned(a.address, 2)[1] == 1
            # B appended nothing: before, it never asked the witness past its start
            assert wait_cosigned(b.address, 2)[1] == 1
        finally:
            a.stop()
            b.stop()
