"""`prov admin revoke` of a key that is already revoked says so and exits 3 instead of
printing the earlier revocation as if it had just been made; an earlier --since still
moves the revocation earlier (exit 0). The server's Revoke is idempotent: a key already
revoked at or before the asked time gets no second log entry, however many admins call
at once. A real server, a real device key."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clients.api import ProvenanceClient
from provenance.core.claims import Device
from provenance.core.keyhistory import KeyEvent, KeyEventKind, KeySigner, sign_key_event
from provenance.core.keys import DeviceKey
from provenance.server.writer import KeyAppended, PendingKeyEvent, _Item
from provenance.store import open_store
from provenance.wire import convert as wire
from tests.conftest import ADMIN_TOKEN, Cli, ServerProc, enroll_key, sign_sample, start_server
from tests.inproc import InProc


def checkpoint_size(note: str) -> int:
    """The tree size of a C2SP checkpoint note (its second line)."""
    return int(note.splitlines()[1])


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


def test_the_same_revocation_sent_again_is_a_retry_answered_as_logged(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The README's usage block: the same --since and reason as a revocation the log holds
    is a retry (an answer lost on the way, say), answered as that entry, exit 0, with no
    second log entry; only another reason or a later --since reads "already revoked",
    exit 3."""
    _, device_id = sign_sample(enrolled, tmp_path)
    args = ("admin", "revoke", device_id, "--reason", "R1", "--since", "2026-01-01T00:00:00Z")
    rc, first, err = enrolled(*args)
    assert rc == 0, err
    rc, again, err = enrolled(*args)
    assert rc == 0, (again, err)
    assert again == first == f"revoked {device_id} at 2026-01-01 00:00:00 UTC: R1\n", again
    rc, audit, err = enrolled("log", "audit", "--state", str(tmp_path / "audit.json"))
    assert rc == 0 and "1 enrollment and 1 revocation in the log" in audit, (audit, err)
    rc, other, err = enrolled(*args[:4], "R2", *args[5:])
    assert rc == 3 and "already revoked" in other, (other, err)


def test_a_wrong_admin_token_is_refused_even_for_a_revoked_key(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov admin revoke` with a wrong PROV_ADMIN_TOKEN exits 1 saying the credential is
    wrong, whatever the key's state. Before, the command read the device first (a public
    call) and, the key being revoked already, said "already revoked ...; nothing changed"
    and exited 3 without ever presenting the credential; for a device not enrolled it
    said "not enrolled": the operator never learnt the token was wrong."""
    _, device_id = sign_sample(enrolled, tmp_path)
    rc, _, err = enrolled("admin", "revoke", device_id, "--reason", "R1")
    assert rc == 0, err
    monkeypatch.setenv("PROV_ADMIN_TOKEN", "not-the-token")
    rc, out, err = enrolled("admin", "revoke", device_id, "--reason", "R2")
    assert rc == 1 and out == "", (out, err)
    assert "admin credential is wrong" in err, err
    # and what to do: the token is the one the server was started with
    assert "the admin token this server was started with" in " ".join(err.split()), err
    rc, out, err = enrolled("admin", "revoke", "ab" * 32, "--reason", "R2")
    assert rc == 1 and "admin credential is wrong" in err, (out, err)


def test_a_reason_too_long_to_log_is_a_usage_error(enrolled: Cli, tmp_path: Path) -> None:
    """A revocation reason is logged and at most 1,024 bytes (UTF-8): a longer one went
    to the server and came back as 'error: ... [INVALID_ARGUMENT]', exit 1, as if the
    server had failed. It is now a usage error (exit 2) naming the limit, before any
    request; 1,024 bytes are revoked."""
    _, device_id = sign_sample(enrolled, tmp_path)
    rc, _, err = enrolled("admin", "revoke", device_id, "--reason", "é" * 513)
    said = " ".join(err.replace("│", " ").split())  # Typer's usage-error box
    assert rc == 2 and "1,026 bytes; at most 1,024" in said, err
    with ProvenanceClient(enrolled.server) as c:
        assert not c.get_device(bytes.fromhex(device_id)).revoked
    rc, out, err = enrolled("admin", "revoke", device_id, "--reason", "é" * 512)
    assert rc == 0 and out.startswith(f"revoked {device_id} at "), err


def _revocations_logged(cli: Cli, state: Path) -> str:
    rc, audit, err = cli("log", "audit", "--state", str(state))
    assert rc == 0, (audit, err)
    return audit


def test_the_server_logs_no_second_revocation(server: ServerProc, tmp_path: Path) -> None:
    """A Revoke of a key already revoked (at or before the asked time) appends nothing
    and says so (``already_revoked``), whoever calls: before, the server logged a second
    REVOCATION entry that the earliest-counts rule then ignored."""
    with ProvenanceClient(server.address, admin_token=ADMIN_TOKEN) as c:
        key = enroll_key(c)
        first, again = c.revoke(key.key_id, "R1")
        size = checkpoint_size(c.checkpoint())
        second, again2 = c.revoke(key.key_id, "R2")
        assert (again, again2) == (False, True)
        assert checkpoint_size(c.checkpoint()) == size  # nothing appended
        assert (second.revoked_at, second.revocation_reason) == (first.revoked_at, "R1")
        # an earlier time does change the revocation: logged
        assert first.revoked_at is not None
        moved, again3 = c.revoke(key.key_id, "R3", first.revoked_at - timedelta(hours=1))
        assert not again3 and moved.revocation_reason == "R3"
        assert checkpoint_size(c.checkpoint()) == size + 1


def test_concurrent_revokes_log_one_entry(enrolled: Cli, tmp_path: Path) -> None:
    """Eight admins revoking one key at once: exactly one REVOCATION entry, and exactly
    one of them is told its call revoked the key (the writer decides under the append
    lock, whatever batches the calls land in)."""
    _, device_id = sign_sample(enrolled, tmp_path)
    dev = bytes.fromhex(device_id)
    with ProvenanceClient(enrolled.server, admin_token=ADMIN_TOKEN) as c:
        start = threading.Barrier(8)

        def revoke(n: int) -> bool:
            start.wait()
            return c.revoke(dev, f"R{n}")[1]

        with ThreadPoolExecutor(8) as pool:
            flags = list(pool.map(revoke, range(8)))
    assert flags.count(False) == 1, flags
    audit = _revocations_logged(enrolled, tmp_path / "audit.json")
    assert "1 enrollment and 1 revocation in the log" in audit, audit
    rc, out, err = enrolled("admin", "revoke", device_id, "--reason", "late")
    assert rc == 3 and "nothing changed" in out, (out, err)


def test_two_revocations_in_one_batch_log_one_entry(inproc: InProc) -> None:
    """The same, made deterministic: two revocations of one key committed in one batch
    (as concurrent calls are) give one leaf; the second is answered as already revoked,
    with the first one's reason."""
    dev = inproc.enroll()
    admin = KeySigner.of(DeviceKey.generate())
    items: list[_Item] = []
    futures: list[Future[KeyAppended]] = []
    for reason in ("lost", "stolen"):
        ev = KeyEvent(KeyEventKind.REVOCATION, dev.device_id, inproc.clock.now, reason=reason)
        pending = PendingKeyEvent(sign_key_event(admin, wire.encode_key_event(ev)), ev)
        futures.append(Future())
        items.append(_Item(pending, futures[-1]))
    size = inproc.service.store.tree_size()
    inproc.service.writer._commit(items)
    first, second = (f.result(5) for f in futures)
    assert isinstance(first, KeyAppended) and first.receipt is not None
    assert isinstance(second, KeyAppended) and second.receipt is None
    assert second.device.revocation_reason == "lost"
    assert inproc.service.store.tree_size() == size + 1


def test_concurrent_revokes_through_two_servers_on_postgresql_log_one_entry(
    pg_url: str,
) -> None:
    """Two `prov serve` over one PostgreSQL database (DESIGN.md "Scale"), eight admins
    revoking one key at one time through either: one of them revokes it, the seven others
    are told it already was, all get the same standing revocation, and later Revokes
    through either server (the same time, later, none) log nothing. The append lock is
    the database's, so the writers of both servers decide alike."""
    a, b = start_server(pg_url), start_server(pg_url)
    try:
        with (
            ProvenanceClient(a.address, admin_token=ADMIN_TOKEN) as ca,
            ProvenanceClient(b.address, admin_token=ADMIN_TOKEN) as cb,
        ):
            key = enroll_key(ca)
            when = datetime.now(UTC) - timedelta(minutes=1)
            start = threading.Barrier(8)

            def revoke(n: int) -> tuple[Device, bool]:
                start.wait()
                return (ca, cb)[n % 2].revoke(key.key_id, f"R{n}", when)

            with ThreadPoolExecutor(8) as pool:
                got = list(pool.map(revoke, range(8)))
            assert [again for _, again in got].count(False) == 1, got
            standing = {(d.revoked_at, d.revocation_reason) for d, _ in got}
            assert len(standing) == 1 and next(iter(standing))[0] == when, standing
            for c, at in ((ca, when), (cb, when + timedelta(seconds=30)), (cb, None)):
                d, again = c.revoke(key.key_id, "late", at)
                assert again and (d.revoked_at, d.revocation_reason) in standing
        store = open_store(pg_url, read_only=True)
        try:
            entries = store.key_event_entries(key.key_id)  # the enrollment, one revocation
        finally:
            store.close()
        assert len(entries) == 2, entries
    finally:
        a.stop()
        b.stop()


def test_revocations_asked_for_now_log_one_entry_whatever_order_they_commit_in(
    inproc: InProc,
) -> None:
    """Two Revokes with no time ("now"), the one that read the clock first committed
    second (as concurrent calls do under load): the second is already satisfied by the
    first, a moment later, so one entry is logged. Before, its earlier time was logged as
    a move of the revocation: `test_concurrent_revokes_log_one_entry` saw 2 entries once
    in a run of the touched tests at load 1.9. A time given explicitly still moves it."""
    dev = inproc.enroll()
    admin = KeySigner.of(DeviceKey.generate())
    t0 = inproc.clock.now
    items: list[_Item] = []
    futures: list[Future[KeyAppended]] = []
    for reason, at, now in (
        ("second", t0 + timedelta(milliseconds=5), True),
        ("first", t0, True),
        ("given", t0 - timedelta(milliseconds=1), False),
    ):
        ev = KeyEvent(KeyEventKind.REVOCATION, dev.device_id, at, reason=reason)
        pending = PendingKeyEvent(
            sign_key_event(admin, wire.encode_key_event(ev)), ev, as_of_now=now
        )
        futures.append(Future())
        items.append(_Item(pending, futures[-1]))
    size = inproc.service.store.tree_size()
    inproc.clock.advance(seconds=1)  # the writer commits after the calls read the clock
    inproc.service.writer._commit(items)
    logged, satisfied, moved = (f.result(5) for f in futures)
    assert isinstance(logged, KeyAppended) and logged.receipt is not None
    assert isinstance(satisfied, KeyAppended) and satisfied.receipt is None
    assert satisfied.device.revocation_reason == "second"
    assert isinstance(moved, KeyAppended) and moved.receipt is not None
    assert moved.device.revocation_reason == "given"
    assert inproc.service.store.tree_size() == size + 2


@pytest.mark.parametrize(
    "since", ["0001-01-01+05:00", "0001-01-01T00:00:00+05:00", "0001-01-01T00:20+00:30"]
)
def test_a_since_out_of_range_in_utc_is_a_usage_error(
    enrolled: Cli, tmp_path: Path, since: str
) -> None:
    """A --since that falls before 0001-01-01 UTC once converted (or is not a time at all,
    as Python 3.11 reads "0001-01-01+05:00": the '+' as the date/time separator) is a usage
    error (exit 2) before any call; before, the server refused it (exit 1)."""
    _, device_id = sign_sample(enrolled, tmp_path)
    rc, text, err = enrolled("admin", "revoke", device_id, "--reason", "R", "--since", since)
    assert rc == 2, (text, err)
    assert "--since" in err and "UTC" in err, err
    with ProvenanceClient(enrolled.server) as c:  # nothing was asked of the server
        assert c.get_device(bytes.fromhex(device_id)).revoked_at is None


def test_a_revocation_before_year_1000_shows_four_digit_years(
    enrolled: Cli, tmp_path: Path
) -> None:
    """ISO 8601 years have 4 digits: 0999-12-31, not strftime's 999-12-31 (glibc)."""
    _, device_id = sign_sample(enrolled, tmp_path)
    since = "0999-12-31T23:00:00Z"
    rc, text, err = enrolled("admin", "revoke", device_id, "--reason", "R", "--since", since)
    assert rc == 0, (text, err)
    assert text.strip() == f"revoked {device_id} at 0999-12-31 23:00:00 UTC: R", text
    rc, again, err = enrolled("admin", "revoke", device_id, "--reason", "R2", "--since", since)
    assert rc == 3 and "already revoked at 0999-12-31 23:00:00 UTC" in again, (again, err)
