"""`prov device enroll` pins the log's verifier key in device.json; `prov sign` and
`prov device sync` verify receipts against that pinned key, not against whatever key
the server answers. Before, the key came from the same server as the receipt, so a
server (or a machine in the middle) with another log key passed its own receipts.

Real `prov serve` processes on real loopback ports: the honest one, then (the hostile
path) another with its own database, hence its own log key, on the same address."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from clients.device import DeviceHome
from tests.conftest import SAMPLES, Cli, ServerProc, read_line, rpc_calls, start_server
from tests.ports import kept_port

pytestmark = pytest.mark.slow  # starts `prov serve` processes


def _log_key(cli: Cli) -> str:
    rc, out, err = cli("log", "key", "--server", cli.server)
    assert rc == 0, err
    return out.strip()


def test_enroll_pins_the_log_key_and_sign_and_sync_use_it(enrolled: Cli, tmp_path: Path) -> None:
    vkey = _log_key(enrolled)
    assert DeviceHome(enrolled.home).state().log_key == vkey
    rc, out, err = enrolled("device", "show")
    assert rc == 0 and json.loads(out)["log_key"] == vkey, (out, err)
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "logged at leaf" in out, (out, err)
    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "nothing queued" in out, (out, err)


def test_a_server_with_another_log_key_keeps_the_claim_queued(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    pinned = _log_key(enrolled)
    server.stop()
    # its port kept until the other binds it, so no other xdist worker's server on port 0
    # is given it meanwhile
    with kept_port(int(server.address.rsplit(":", 1)[1])):
        other = start_server(
            tmp_path / "other.db", "--listen", server.address, "--metrics-listen", "127.0.0.1:0"
        )
    metrics = read_line(other.proc, "metrics on ")
    try:
        assert other.address == server.address
        theirs = _log_key(enrolled)
        assert theirs != pinned
        # the other server knows the device (a hostile one would take any claim); the
        # device's own file is put back as it was: it still pins the first server's key
        h = DeviceHome(enrolled.home)
        kept = h.state_path.read_bytes()
        rc, token, err = enrolled("admin", "enroll-token", "--label", "again")
        assert rc == 0, err
        rc, _, err = enrolled("device", "enroll", "--token", token.strip())
        assert rc == 0, err
        h.state_path.write_bytes(kept)
        photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
        rc, out, err = enrolled("sign", str(photo))
        flat = " ".join((out + err).split())
        assert "logged at leaf" not in flat, flat
        assert rc == 4 and "queued" in flat, (rc, flat)  # signed, only queued: not 0
        assert "differs from the one pinned at enrollment" in flat, flat
        assert pinned.split("+")[0] in flat and pinned.split("+")[1] in flat, flat
        assert theirs.split("+")[1] in flat, flat
        assert "prov device init --force" in flat, flat
        assert "Traceback" not in flat and "Error(" not in flat, flat
        assert len(DeviceHome(enrolled.home).pending()) == 1
        rc, out, err = enrolled("device", "sync")
        flat = " ".join((out + err).split())
        assert rc == 1 and "differs from the one pinned at enrollment" in flat, flat
        assert len(DeviceHome(enrolled.home).pending()) == 1
        assert DeviceHome(enrolled.home).state().log_key == pinned
        # the log key is asked before any claim is sent (before: sign and sync each sent
        # it, and only its receipt was refused)
        assert rpc_calls(metrics, "SubmitCapture") == 0
    finally:
        other.stop()


def test_a_device_enrolled_by_older_code_pins_on_first_sync(enrolled: Cli, tmp_path: Path) -> None:
    h = DeviceHome(enrolled.home)
    doc = json.loads(h.state_path.read_text())
    del doc["log_key"]
    h.state_path.write_text(json.dumps(doc))
    assert h.state().log_key == ""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo))
    flat = " ".join((out + err).split())
    assert rc == 0 and "logged at leaf" in flat and "pinned" in flat, flat
    assert h.state().log_key == _log_key(enrolled)
    second = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "second.jpg"))
    second.write_bytes(second.read_bytes() + b"\0")
    rc, out, err = enrolled("sign", str(second))
    assert rc == 0 and "pinned" not in out + err, (out, err)


def test_repair_keeps_the_pinned_key(enrolled: Cli) -> None:
    h = DeviceHome(enrolled.home)
    vkey = h.state().log_key
    text = h.state_path.read_text()
    h.state_path.write_text(text.replace('"last_sequence": 0', '"last_sequence": zero'))
    assert h.state_path.read_text() != text
    rc, out, err = enrolled("device", "repair")
    assert rc == 0, (out, err)
    assert h.state().log_key == vkey
