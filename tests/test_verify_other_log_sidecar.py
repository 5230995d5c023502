"""`prov verify` of a file whose sidecar holds another log's receipt (the log at that
address replaced, as each `make web` run is): UNSIGNED, since this log holds no claim
of it. Seen failing first: the first reason advised "submit it with `prov device sync`",
which on the signer's device answers "nothing queued" (the claim was logged, by the
other log) and means nothing to a newsroom that only received the file; the reason now
says the receipt is not this log's and how it is still checked. A real `prov serve`
pair, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Cli, sign_sample, start_server

pytestmark = pytest.mark.slow  # starts a second `prov serve`


def test_a_sidecar_of_another_log_is_not_told_to_sync(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo, _ = sign_sample(enrolled, tmp_path)  # logged by the first log
    other = start_server(tmp_path / "another-log.db")
    try:  # the device enrolls with the new log, as the README says after a new `make web`
        monkeypatch.setenv("PROV_SERVER", other.address)
        rc, token, err = enrolled("admin", "enroll-token", "--label", "again")
        assert rc == 0, err
        rc, _, err = enrolled("device", "enroll", "--token", token.strip())
        assert rc == 0, err
        rc, out, err = enrolled("verify", str(photo), "--no-detect", "--json")
    finally:
        other.stop()
    assert rc == 11, (out, err)
    report = json.loads(out)
    reasons = " | ".join(report["reasons"])
    assert report["status"] == "UNSIGNED", reasons
    assert "prov device sync" not in reasons, reasons
    assert (
        "the sidecar's signature is valid and matches the bytes, but the claim is not in"
        " this log, and the sidecar's receipt does not verify with this log's key"
    ) in reasons, reasons
    assert "`prov receipt verify FILE.prov --log-key KEY`" in reasons, reasons
    assert "note: the sidecar's receipt does not verify" not in reasons, reasons  # said once
