"""A log written under earlier, looser rules still starts, serves, verifies, audits and
shows its text safely: a claim's media type over 255 characters and a revocation reason
holding control and format characters (a line feed, ESC, a bidirectional override) are
refused now, but a log holding them, written before, must stay readable. The entries are
written through the service's writer, past the checks a server now makes first, as an
older server logged them; then a real server, `prov verify`, `prov admin revoke` and
`prov log audit` (--db and --tiles) read them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from clients.device.measuring import measure
from provenance.core.claims import Claim, SignedClaim
from provenance.core.envelope import PAYLOAD_TYPE_CLAIM, PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.keyhistory import KeyEvent, KeyEventKind, KeySigner, sign_key_event
from provenance.core.keys import DeviceKey
from provenance.server.service import ProvenanceService, ServiceConfig
from provenance.server.writer import PendingKeyEvent
from provenance.wire import convert as wire
from tests.conftest import SAMPLES, Cli, device_env, start_server

#: A reason an older server logged as given: a line that, printed raw, forges a report line.
OLD_REASON = "lost\x1b[31m\n  status     SIGNED_ORIGINAL: forged\u202eevil"


def _enrolled(s: ProvenanceService) -> DeviceKey:
    key = DeviceKey.generate()
    token, _ = s.create_enrollment_token()
    s.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))
    return key


def _logged_as_before(s: ProvenanceService, key: DeviceKey, name: str, media_type: str) -> None:
    """Log ``key``'s claim #1 on the sample ``name`` stating ``media_type``, past the
    submission's shape checks (the writer still checks its signature and sequence)."""
    fields, _ = measure(SAMPLES / name)
    fields["media_type"] = media_type
    claim = Claim(device_id=key.key_id, sequence=1, captured_at=datetime.now(UTC), **fields)
    data = wire.encode_claim(claim)
    signed = SignedClaim(
        PAYLOAD_TYPE_CLAIM, data, key.key_id, sign_payload(key, PAYLOAD_TYPE_CLAIM, data)
    )
    s.writer.submit(ProvenanceService._pending(signed, claim, key.public_key))


def test_a_log_written_under_the_old_rules_still_serves_verifies_audits_and_shows_safely(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db, log_key = tmp_path / "prov.db", tmp_path / "log.pem"
    s = ProvenanceService(ServiceConfig(db=db, log_key=log_key))
    try:
        long_type = _enrolled(s)
        _logged_as_before(s, long_type, "rocket.jpg", "image/" + "x" * 300)
        revoked = _enrolled(s)
        _logged_as_before(s, revoked, "grace_hopper.jpg", "image/jpeg")
        ev = KeyEvent(
            KeyEventKind.REVOCATION,
            revoked.key_id,
            datetime(2020, 1, 1, tzinfo=UTC),
            reason=OLD_REASON,
            authorised_by="admin",
        )
        admin = KeySigner.of(DeviceKey.generate())
        s.writer.submit_key_event(
            PendingKeyEvent(sign_key_event(admin, wire.encode_key_event(ev)), ev)
        )
    finally:
        s.close()

    srv = start_server(db, "--log-key", str(log_key))  # its start-up checks pass
    try:
        device_env(monkeypatch, tmp_path / "device", srv.address)
        cli = Cli(tmp_path / "device", srv.address, capsys)
        rc, out, err = cli("verify", str(SAMPLES / "rocket.jpg"))
        assert rc == 0 and "SIGNED_ORIGINAL" in out, (out, err)
        rc, out, err = cli("verify", str(SAMPLES / "grace_hopper.jpg"))
        assert "REVOKED_KEY" in out, (rc, out, err)
        assert "\\x1b" in out and "\\x0a" in out and "\x1b" not in out, out
        assert "\n  status     SIGNED_ORIGINAL: forged" not in out, out
        # the old reason shown by `prov admin revoke` of the key again: on one line
        rc, out, err = cli("admin", "revoke", revoked.key_id.hex(), "--reason", "again")
        assert rc == 3, (out, err)
        assert len(out.splitlines()) == 1, out
        assert "(reason: lost\\x1b[31m\\x0a  status     SIGNED_ORIGINAL: forged" in out, out
        rc, vkey, err = cli("log", "key")
        assert rc == 0, err
    finally:
        srv.stop()
    (tmp_path / "log.vkey").write_text(vkey)
    pinned = ("--log-key", str(tmp_path / "log.vkey"))
    rc, out, err = cli(
        "log", "audit", "--state", str(tmp_path / "db.json"), "--db", str(db), *pinned
    )
    assert rc == 0, (out, err)
    assert "2 enrollments and 1 revocation in the log" in out, out
    assert "claims OK: 2 claims verify" in out, out
    rc, out, err = cli("log", "export-tiles", "--db", str(db), str(tmp_path / "tiles"))
    assert rc == 0, (out, err)
    rc, out, err = cli(
        "log",
        "audit",
        "--state",
        str(tmp_path / "t.json"),
        "--tiles",
        str(tmp_path / "tiles"),
        *pinned,
    )
    assert rc == 0 and "tiled log OK: has 5 entries" in out, (out, err)
