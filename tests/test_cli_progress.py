"""`prov verify` shows, on a terminal, a bar while the file goes up and then while the
server checks it (a large video takes minutes to send and decode; before, nothing moved
until the report). Off a terminal it writes nothing to stderr. A real server; the real
CLI in a child process, for which Rich takes TTY_COMPATIBLE=1 as a terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Cli, ServerProc, sign_sample


def test_verify_shows_the_upload_and_the_check_on_a_terminal(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    clip, _ = sign_sample(enrolled, tmp_path, "fabric_pattern.mp4")
    for tty in ("1", "0"):
        run = subprocess.run(
            [sys.executable, "-m", "clients.cli", "verify", str(clip), "--no-detect", "--json"]
            + ["--server", server.address],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TTY_COMPATIBLE": tty},
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["status"] == "SIGNED_ORIGINAL"  # stdout stays JSON
        if tty == "1":
            assert "uploading" in run.stderr and "checking (the server decodes it)" in run.stderr
        else:
            assert run.stderr == "", run.stderr
