"""`prov receipt verify/export/refresh` of a SIDECAR that cannot be read is a usage error,
exit 2, as README says and as `prov verify --sidecar` does (review att35): a FIFO, a
device or a file over the sidecar limit exited 1 with `error: ...`, while a file that is
not JSON exited 2. The CLI in-process against a real server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provenance.wire.sidecar import MAX_SIDECAR_BYTES
from tests.conftest import Cli, sign_sample


@pytest.mark.parametrize("command", ["verify", "export", "refresh"])
def test_an_unreadable_sidecar_is_a_usage_error(
    enrolled: Cli, tmp_path: Path, command: str
) -> None:
    photo, _ = sign_sample(enrolled, tmp_path)
    sidecar = str(photo) + ".prov"
    rc, key, err = enrolled("log", "key", "--server", enrolled.server)
    assert rc == 0, err
    extra = {"verify": ["--log-key", key.strip()], "export": [], "refresh": []}[command]
    fifo = tmp_path / "fifo.prov"
    os.mkfifo(fifo)
    big = tmp_path / "big.prov"
    big.write_bytes(Path(sidecar).read_bytes().ljust(MAX_SIDECAR_BYTES + 1, b" "))
    for bad, why in ((fifo, "FIFO"), (Path("/dev/zero"), "device"), (big, "limit")):
        rc, out, err = enrolled("receipt", command, str(bad), *extra)
        assert rc == 2, (command, bad, rc, out, err)
        assert "not a usable sidecar" in err and why in err, err
        assert "error:" not in err, err
    # the sidecar itself is read (refresh: this server has no witnesses, so exit 14)
    rc, out, err = enrolled("receipt", command, sidecar, *extra)
    assert rc == {"verify": 0, "export": 0, "refresh": 14}[command], (out, err)
