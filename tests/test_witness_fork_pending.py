"""`prov verify --witness` and `prov receipt refresh` of a receipt the server's newest
cosigned checkpoint does not cover yet ("not yet cosigned", exit 14 or "pending") first
prove that the receipt's checkpoint extends the cosigned one: a log that forked before
its witnesses last cosigned must not pass a receipt of its private branch off as merely
not cosigned yet. A real fork: one `prov serve` (a real `prov witness serve` cosigning
it, quorum 1) stopped and its database copied; the copy, started with the same log key,
logs other entries than the original, whose witness cosigns them; a real gRPC relay in
front of the copy shows the original's genuine cosigned checkpoint (a hostile operator
showing the witnesses' checkpoint of its public branch), and the real CLI."""

# ruff: noqa: F811
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from clients.api import ProvenanceClient
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import (
    ADMIN_TOKEN,
    SAMPLES,
    Cli,
    ServerProc,
    enroll_key,
    relay,
    sign_sample,
    start_server,
    wait_cosigned,
)
from tests.test_cited_binding import _genuine_answer, _verify, server, witness  # noqa: F401
from tests.test_witness_also_claims import GET_CHECKPOINT, VERIFY_FILE, _old_cosigned


def _sign(cli: Cli, photo: Path, server: str) -> None:
    """Sign ``photo`` with ``cli``'s device into the log of the server at ``server``."""
    rc, _, err = cli("sign", str(photo), "--server", server)
    assert rc == 0, err


def test_a_forked_logs_receipt_not_yet_cosigned_is_refused_as_a_fork(
    witness: tuple[str, str], enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: Any
) -> None:
    """The log of 2 entries (the device's enrollment, photo A's claim: cosigned, A's
    sidecar refreshed to that) forks: the original logs another device's enrollment and
    its witness cosigns 3 entries; the copy logs a different enrollment, a second claim
    of A's bytes (leaf 3) and photo B's claim (leaf 4). Through a relay in front of the
    copy showing the original's cosigned checkpoint of 3 entries, `prov verify --witness`
    of B (its claim cited), of A (its second claim listed as also signed), text and
    --json, and `prov receipt refresh` of B's sidecar are refused as a log integrity
    failure (exit 3) naming both sizes, the server and a fork. (forkpend60: before, B
    exited 14, "try again once they cosign", A exited 0 with its second claim shown
    "not yet cosigned by the witnesses", and the refresh exited 14: no consistency proof
    was asked for from the cosigned checkpoint to the receipt's.)"""
    photo_a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    wait_cosigned(server.address, 2)
    rc, out, err = enrolled("receipt", "refresh", f"{photo_a}.prov")
    assert rc == 0, (out, err)
    server.stop()
    shutil.copy(tmp_path / "prov.db", tmp_path / "fork.db")
    shutil.copy(tmp_path / "prov.db.logkey.pem", tmp_path / "fork.db.logkey.pem")
    url, vkey = witness
    honest = start_server(tmp_path / "prov.db", "--witness", f"{url}={vkey}")
    forked = start_server(tmp_path / "fork.db")
    try:
        with ProvenanceClient(honest.address, admin_token=ADMIN_TOKEN) as c:
            enroll_key(c)  # leaf 2 of the original
        wait_cosigned(honest.address, 3)
        with ProvenanceClient(honest.address) as c:
            cosigned = c._log.GetCheckpoint(pb.GetCheckpointRequest(cosigned=True), timeout=60)
        with ProvenanceClient(forked.address, admin_token=ADMIN_TOKEN) as c:
            enroll_key(c)  # another leaf 2, of the copy
        (tmp_path / "again").mkdir()
        _sign(enrolled, Path(shutil.copy(photo_a, tmp_path / "again")), forked.address)  # 3
        photo_b = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "chelsea.png"))
        _sign(enrolled, photo_b, forked.address)  # leaf 4
        shown = {GET_CHECKPOINT: _old_cosigned(bytes(cosigned.SerializeToString()))}
        for photo, size in ((photo_b, 5), (photo_a, 4)):
            answer = {VERIFY_FILE: _genuine_answer(forked.address, photo).SerializeToString()}
            with relay(forked.address, shown, answer) as address:
                for extra in ((), ("--json",)):
                    rc, out, err = _verify(
                        capsys, str(photo), "--server", address, "--witness", vkey, *extra
                    )
                    assert rc == 3, (photo, extra, rc, out, err)
                    _a_fork(err, address, 3, size)
                    assert "not yet cosigned" not in out + err, (out, err)
                    also = "another claim it lists as also signed (device" in " ".join(err.split())
                    assert also == (photo == photo_a), err
                    assert not (json.loads(out)["status"] if extra else out), out
        with relay(forked.address, shown) as address:
            rc, out, err = enrolled("receipt", "refresh", f"{photo_b}.prov", "--server", address)
        assert rc == 3, (rc, out, err)
        _a_fork(err, address, 3, 5)
    finally:
        forked.stop()
        honest.stop()


def _a_fork(err: str, address: str, cosigned: int, receipt: int) -> None:
    """``err`` refuses the receipt's checkpoint of ``receipt`` entries as not of one log
    with the cosigned one of ``cosigned``, both named, the server at ``address`` too."""
    said = " ".join(err.split())
    assert said.startswith("LOG INTEGRITY FAILURE: "), err
    assert f"the receipt's checkpoint ({receipt} entries)" in said, err
    assert f"the cosigned one ({cosigned})" in said, err
    assert f"the server at {address}" in said and "a fork" in said, err
    assert "Traceback" not in err, err
