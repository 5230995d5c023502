"""gRPC's C core writes to stderr only its errors unless GRPC_VERBOSITY says otherwise;
else `prov serve --http` (and `prov web`) writes an INFO line of its own format into
the server's log each time the service closes the page's idle connection
(``I1208 01:24:51.234647 3000 chttp2_transport.cc:1403] ipv4:127.0.0.1:18981: Got goaway
[2] err=UNAVAILABLE:GOAWAY received; ...``), every --connection-idle-seconds. A real
server on real ports, its page asked once over HTTP, its idle limit 2 s."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import read_line, start_server

#: A line as gRPC's core (absl logging) writes one: level letter, date, time, thread, file.
CORE_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+\.cc:\d+\]", re.MULTILINE)


def test_an_idle_page_connection_closed_by_the_service_logs_nothing(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path / "prov.db", "--http", "127.0.0.1:0", "--connection-idle-seconds", "2"
    )
    try:
        web = read_line(srv.proc, "web on ")
        try:  # the page asks the service: its gRPC connection opens
            urllib.request.urlopen(f"{web}/api/v1/devices/{'ab' * 32}", timeout=30).close()
        except urllib.error.HTTPError as e:
            assert e.code == 404, e  # no such device: the service answered
        time.sleep(6)  # the connection idle past 2 s: the service closes it (GOAWAY)
    finally:
        assert srv.stop() == 0, srv.stderr()
    log = srv.stderr()
    assert "Got goaway" not in log, log
    assert not CORE_LINE.search(log), log
