"""`prov device sync` and `prov sign` ask the server for its log key once per run, before
any claim is sent, and compare it with the key the device pinned at enrollment. Before,
each claim synced cost a GetLogKey call after its SubmitCapture (n claims, n calls), and
a server answering another key had the signed claim already before its receipt was
refused (tests/test_device_log_key_pin.py: no claim reaches it now). Counted on a real
`prov serve`'s /metrics (GetLogKey and SubmitCapture answered),
the real CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.device import DeviceHome
from tests.conftest import Cli, ServerProc, closed_port, read_line, rpc_calls, start_server
from tests.photos import noise_photo

pytestmark = pytest.mark.slow  # starts `prov serve` processes

#: The metrics URL of each server the fixtures started, by its address.
_METRICS: dict[str, str] = {}


@pytest.fixture
def server(server_db: Path | str) -> Iterator[ServerProc]:
    """`prov serve` with its /metrics on a loopback port (`_METRICS`)."""
    srv = start_server(server_db, "--metrics-listen", "127.0.0.1:0")
    _METRICS[srv.address] = read_line(srv.proc, "metrics on ")
    yield srv
    srv.stop()


def calls(address: str, rpc: str) -> int:
    """How many ``rpc`` calls the server at ``address`` answered, whatever their status."""
    return rpc_calls(_METRICS[address], rpc)


def test_sync_asks_the_log_key_once_for_all_its_claims(enrolled: Cli, tmp_path: Path) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(3)]
    offline = closed_port()
    for photo in photos:
        rc, out, err = enrolled("sign", "--server", offline, str(photo))
        assert rc == 4 and "queued" in out, (out, err)
    keys, submits = calls(enrolled.server, "GetLogKey"), calls(enrolled.server, "SubmitCapture")
    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 3 of 3" in out, (out, err)
    assert calls(enrolled.server, "SubmitCapture") - submits == 3
    assert calls(enrolled.server, "GetLogKey") - keys == 1


def test_sign_asks_the_log_key_once_for_all_its_files(enrolled: Cli, tmp_path: Path) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(3)]
    keys = calls(enrolled.server, "GetLogKey")
    rc, out, err = enrolled("sign", *map(str, photos))
    assert rc == 0 and out.count("logged at leaf") == 3, (out, err)
    assert calls(enrolled.server, "GetLogKey") - keys == 1


def test_an_older_device_pins_on_the_one_call(enrolled: Cli, tmp_path: Path) -> None:
    """A device enrolled before keys were pinned (no log_key) still pins on its first
    verified receipt, and the run's other claims verify with that key."""
    h = DeviceHome(enrolled.home)
    h.state_path.write_text(re.sub(r',\s*"log_key": "[^"]*"', "", h.state_path.read_text()))
    assert h.state().log_key == ""
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(2)]
    keys = calls(enrolled.server, "GetLogKey")
    rc, out, err = enrolled("sign", *map(str, photos))
    flat = " ".join((out + err).split())
    assert rc == 0 and flat.count("logged at leaf") == 2 and flat.count("pinned the log key") == 1
    assert calls(enrolled.server, "GetLogKey") - keys == 1
    assert h.state().log_key
