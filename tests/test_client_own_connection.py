"""A `ProvenanceClient` connects on its own: another client of the same process, whose
calls to the same address were refused and whose channel waits to try again, does not
make a new client's first call fail while a server listens there.

Before, gRPC shared one connection (subchannel) per address among all the channels of a
process, its backoff with it: the new client's first call was answered at once with the
old one's error, "Connection refused", from a server that was listening. CI lost a test
so (test_submit_deadline, 7 December): the in-process `prov scan --workers 0` of
test_scan_server_down keeps its client (`clients.scan.worker`) for the rest of the
pytest worker, retrying its stopped server's address for good, and a later server of
that worker was given the same port. A real `prov serve` on a real port."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core.errors import TransportError
from tests.conftest import ADMIN_TOKEN, enroll_key, start_server
from tests.ports import kept_port


def test_a_new_client_reaches_a_server_where_another_was_refused(tmp_path: Path) -> None:
    with kept_port() as held:  # bound, not listening: a connection is refused
        address = f"127.0.0.1:{held.getsockname()[1]}"
        with ProvenanceClient(address, timeout=60) as old:
            with pytest.raises(TransportError) as refused:
                old.log_key()
            assert "Connection refused" in str(refused.value), refused.value
            # the old client stays open, retrying after 1 s, then 1.6 s, 2.6 s...; the
            # server binds the port beside the holder (SO_REUSEADDR), takes 1 s or more
            srv = start_server(tmp_path / "prov.db", "--listen", address)
            try:
                with ProvenanceClient(address, admin_token=ADMIN_TOKEN) as new:
                    # before: TransportError "cannot reach the server at 127.0.0.1:P
                    # (UNAVAILABLE: ... Connection refused)", the old client's
                    enroll_key(new)
            finally:
                assert srv.stop() == 0
