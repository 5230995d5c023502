"""`prov sign` and `prov device sync` talk to the server this device enrolled with (the
address `prov device enroll` records in device.json) when neither --server nor
$PROV_SERVER names one, and say so; one named that is not the enrolled server is used
as asked, with a warning naming both. Before, without --server or $PROV_SERVER they
called 127.0.0.1:50051, whatever server the device had enrolled with: a device enrolled
elsewhere queued every claim ("server unreachable") or was told it is not enrolled.

In-process `prov` against real `prov serve` processes on loopback ports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, Cli, ServerProc, closed_port, start_server

pytestmark = pytest.mark.slow  # starts one or two `prov serve` processes


def test_sign_and_sync_use_the_enrolled_server_by_default(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROV_SERVER")
    rc, out, _ = enrolled("device", "show")
    assert rc == 0 and json.loads(out)["server"] == server.address, out
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "logged at leaf 1" in out, (out, err)  # leaf 0: the enrollment
    assert f"server: {server.address}, the one this device enrolled with" in err, err

    # a claim queued with another server named (nothing there): a warning, then queued
    other = closed_port()
    later = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
    rc, out, err = enrolled("sign", str(later), "--server", other)
    flat = " ".join(err.split())
    assert f"warning: this device enrolled with {server.address}; --server names {other}" in flat
    assert rc == 4 and f"queued: server {other} unreachable" in out, (out, err)

    rc, out, err = enrolled("device", "sync")
    assert rc == 0, (out, err)
    assert f"submitted 1 of 1 queued claim(s) to {server.address}" in out, (out, err)
    assert "warning" not in err, err


def test_a_named_server_that_is_not_the_enrolled_one_is_used_with_a_warning(
    enrolled: Cli, server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The named server is called (it answers another log key than the one pinned at
    enrollment, so no claim is sent to it) and the warning names where the device
    enrolled; from --server and from $PROV_SERVER."""
    elsewhere = start_server(tmp_path / "elsewhere.db")
    try:
        photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
        for args, source in (
            (["--server", elsewhere.address], "--server"),
            ([], "$PROV_SERVER"),
        ):
            monkeypatch.setenv("PROV_SERVER", elsewhere.address)
            rc, out, err = enrolled("sign", str(photo), *args)
            flat = " ".join(err.split())
            # "..., which is used" read as if that server were busy (seen failing first)
            assert (
                f"warning: this device enrolled with {server.address}; {source} names"
                f" {elsewhere.address}, and this command calls it" in flat
            ), err
            # the server named was called: it answers another log key
            assert f"the server at {elsewhere.address} answers another log key" in flat, err
            assert rc == 4 and "queued" in out, (out, err)
        rc, out, err = enrolled("device", "sync")
        flat = " ".join(err.split())
        assert f"$PROV_SERVER names {elsewhere.address}" in flat, err
        assert rc == 1 and "submitted 0 of 1 queued claim(s) to " in out, (out, err)
    finally:
        elsewhere.stop()
