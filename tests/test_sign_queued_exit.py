"""`prov sign`'s exit code tells a claim only queued from a claim logged: 4 when every
file was signed but one or more claims stay queued on the device (the server
unreachable, or answering another log key than the one pinned), 0 once they are logged;
a failure (1) or a kept sidecar (2) still wins over it. Real server, real device folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import SAMPLES, Cli, closed_port

#: `prov sign`'s exit code when its claims are signed but only queued (README, "Exit codes").
EXIT_QUEUED = 4


def test_a_claim_only_queued_exits_4_and_says_so_then_0_once_logged(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    offline = closed_port()
    rc, out, err = enrolled("sign", "--server", offline, str(photo))
    flat = " ".join((out + err).split())
    assert rc == EXIT_QUEUED, (rc, flat)
    assert f"queued: server {offline} unreachable" in flat, flat
    assert "not logged: 1 signed claim queued on this device" in flat, flat
    assert f"exit {EXIT_QUEUED}" in flat, flat

    # the same file again, still offline: already signed, still only queued
    rc, out, err = enrolled("sign", "--server", offline, str(photo))
    assert rc == EXIT_QUEUED and "queued" in out, (rc, out, err)

    # with the server: the queued claim is logged, exit 0, no "not logged" line
    second = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
    rc, out, err = enrolled("sign", str(photo), str(second))
    assert rc == 0 and out.count("logged at leaf") == 2, (rc, out, err)
    assert "not logged" not in err, err


def test_a_failure_still_exits_1_when_another_claim_is_queued(
    enrolled: Cli, tmp_path: Path
) -> None:
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    junk = tmp_path / "notes.jpg"
    junk.write_bytes(b"not an image at all")
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo), str(junk))
    assert rc == 1 and "queued" in out and "not signed" in err, (rc, out, err)
    # the queued claim is still said, without an exit code the process does not give
    assert "not logged: 1 signed claim queued" in err and "exit 4" not in err, err
