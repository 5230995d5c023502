"""`prov admin revoke` of a key that is already revoked says so and exits 3 instead of
printing the earlier revocation as if it had just been made; an earlier --since still
moves the revocation earlier (exit 0). A real server, a real device key."""

from __future__ import annotations

from pathlib import Path

from conftest import Cli, sign_sample

from clients.api import ProvenanceClient


def test_revoking_twice_says_nothing_changed(enrolled: Cli, tmp_path: Path) -> None:
    _, device_id = sign_sample(enrolled, tmp_path)
    rc, first, err = enrolled("admin", "revoke", device_id, "--reason", "R1")
    assert rc == 0, err
    assert first.startswith(f"revoked {device_id} at ") and first.rstrip().endswith(": R1")
    when = first.split(" at ", 1)[1].split(": R1")[0]  # "YYYY-MM-DD HH:MM:SS UTC"
    rc, again, err = enrolled("admin", "revoke", device_id, "--reason", "R2")
    # before: exit 0 and "revoked ... at <the old time>: R1", as if it had worked
    assert rc == 3, (again, err)
    assert again.strip() == (
        f"{device_id} was already revoked at {when} (reason: R1); nothing changed"
    ), again
    with ProvenanceClient(enrolled.server) as c:
        assert c.get_device(bytes.fromhex(device_id)).revocation_reason == "R1"
    # nothing changed in the log either: no second revocation entry (before: one with R2)
    rc, audit, err = enrolled("log", "audit", "--state", str(tmp_path / "audit.json"))
    assert rc == 0 and "1 enrollment and 1 revocation in the log" in audit, (audit, err)
    # a --since before the revocation does change it: the earlier time, its reason
    rc, moved, err = enrolled(
        "admin", "revoke", device_id, "--reason", "R3", "--since", "2026-01-01T00:00:00Z"
    )
    assert rc == 0, (moved, err)
    assert moved.strip() == f"revoked {device_id} at 2026-01-01 00:00:00 UTC: R3"
    rc, audit, err = enrolled("log", "audit", "--state", str(tmp_path / "audit.json"))
    assert rc == 0 and "1 enrollment and 2 revocations in the log" in audit, (audit, err)
