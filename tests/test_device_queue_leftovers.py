"""The queue's own bookkeeping damaged: a hand-edited ``attempts`` out of range (before,
a negative count defeated the limit of `MAX_FAILED_ATTEMPTS` server failures, so one
entry the server cannot digest held back every later capture for good), and what a
command killed midway leaves (stray ``.prov-tmp-*`` files of `atomic_write`, a claim
both queued and set aside, duplicate set-aside copies ``NAME-2.json``). Real keys, a
real `prov serve`, the real CLI; the leftovers are made as a kill at each point leaves
them."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clients.device import MAX_FAILED_ATTEMPTS, DeviceHome
from provenance.c2pa.authority import init_authority, issue_device_certificate
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import Cli, closed_port
from tests.photos import noise_photo


def _show(cli: Cli) -> dict[str, Any]:
    rc, out, err = cli("device", "show")
    assert rc == 0, err
    shown: dict[str, Any] = json.loads(out)
    return shown


@pytest.mark.parametrize("attempts", [-100, True, "2", 2**80, 1.5])
def test_an_attempts_count_out_of_range_is_read_as_damaged(
    attempts: object, enrolled: Cli, tmp_path: Path
) -> None:
    photo = noise_photo(tmp_path, "p.png", 0)
    rc, out, err = enrolled("sign", "--server", closed_port(), str(photo))
    assert rc == 4 and "queued" in out, (out, err)
    home = DeviceHome(enrolled.home)
    (entry_file,) = home.queue_dir.iterdir()
    doc = json.loads(entry_file.read_text())
    entry_file.write_text(json.dumps({**doc, "attempts": attempts}))

    (entry,) = home.pending()
    # not trusted: one more server failure sets it aside (before: -100 took 103)
    assert entry.attempts == MAX_FAILED_ATTEMPTS - 1, entry
    assert entry.sidecar is not None  # the signed claim itself is sound: still submitted
    (shown,) = _show(enrolled)["queue"]
    assert f"attempts {json.dumps(attempts)} is out of range" in shown["damaged"], shown
    assert "one more server failure sets it aside" in shown["damaged"], shown

    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 1 of 1" in out, (out, err)
    assert "is out of range" in err, err
    assert decode_sidecar(photo.with_name("p.png.prov").read_bytes()).receipt is not None


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_commands_leftovers_are_cleaned_and_nothing_queued_is_lost(
    enrolled: Cli, tmp_path: Path
) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(4)]
    rc, out, err = enrolled("sign", "--server", closed_port(), *map(str, photos))
    assert rc == 4 and out.count("queued") == 4, (out, err)
    home = DeviceHome(enrolled.home)
    queue, aside, root = home.queue_dir, home.set_aside_dir, home.root
    aside.mkdir()
    names = [f"{n:012d}.json" for n in range(1, 5)]
    # killed in `_set_entry_aside` after writing the set-aside copy, before removing the
    # entry: claim 1 both queued and set aside (the queued copy is kept, and submitted)
    doc1 = json.loads((queue / names[0]).read_text())
    (aside / names[0]).write_text(json.dumps({**doc1, "set_aside_at": "2026-12-01T00:00:00+00:00"}))
    # claim 2 set aside, and a copy of it set aside again as NAME-2.json
    (queue / names[1]).rename(aside / names[1])
    shutil.copy(aside / names[1], aside / "000000000002-2.json")
    # killed in `_enqueue` between writing the entry and renaming it: claim 3's only copy
    # is a temporary file (its state already reserved the number)
    recovered = queue / ".prov-tmp-4194301-0a1b2c3d"
    (queue / names[2]).rename(recovered)
    # killed mid-write: a truncated temporary copy of claim 4's entry, and of the state
    partial = queue / ".prov-tmp-4194302-00ff00ff"
    partial.write_bytes((queue / names[3]).read_bytes()[:50])
    state_tmp = root / ".prov-tmp-4194303-12345678"
    state_tmp.write_bytes((root / "device.json").read_bytes())
    # killed in `prov device enroll` between writing the certificate chain and renaming
    # it: its only copy (the token is spent)
    chain = _chain_for(bytes.fromhex(home.state().public_key), tmp_path / "ca")
    cert_tmp = root / ".prov-tmp-4194306-c0ffee00"
    cert_tmp.write_bytes(chain)
    _age(cert_tmp, 60)
    sidecar_tmp = root / "sidecars"
    sidecar_tmp.mkdir()
    (sidecar_tmp / ".prov-tmp-4194304-cafecafe").write_bytes(b"{")
    for p in (
        aside / names[0],
        recovered,
        partial,
        state_tmp,
        sidecar_tmp / ".prov-tmp-4194304-cafecafe",
    ):
        _age(p, 60)
    # not ours (another name), and one newer than this command whose writer still runs
    # (this process: a writer that is gone has nothing more to write): both left alone
    theirs = queue / ".prov-tmp-x"
    theirs.write_text("someone else's")
    _age(theirs, 60)
    fresh = queue / f".prov-tmp-{os.getpid()}-0badf00d"
    fresh.write_bytes(b"{")
    then = time.time() + 3600
    os.utime(fresh, (then, then))

    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 3 of 3" in out, (out, err)
    said = " ".join(err.split())
    assert "recovered claim #3" in said and "removed 3 stray temporary file" in said, said
    assert "removed 2 duplicate" in said and "set aside" in said, said
    assert sorted(p.name for p in queue.iterdir()) == [fresh.name, ".prov-tmp-x"]
    assert sorted(p.name for p in aside.iterdir()) == [names[1]]
    assert not state_tmp.exists() and not any(sidecar_tmp.iterdir())
    assert not cert_tmp.exists() and home.cert_path.read_bytes() == chain
    sequences = []
    for p in photos:
        sidecar = decode_sidecar(p.with_name(p.name + ".prov").read_bytes())
        sequences.append((sidecar.claim.sequence, sidecar.receipt is not None))
    assert sequences == [(1, True), (2, False), (3, True), (4, True)], sequences


def test_a_claim_left_in_a_temporary_file_dated_ahead_is_recovered(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The clock was ahead when `prov sign` was killed after writing a queue entry's
    temporary file (a camera booted before its clock was set, then set back): the only
    copy of claim 2 is dated two days from now. Its writer is not running, so it is
    recovered now, not once the clock has caught up with it (before: "submitted 1 of 1"
    and claim 2 in no queue for two days). A writer number that no process can have
    (past the kernel's pid_max, or past what a pid holds) reads as not running."""
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(3)]
    rc, out, err = enrolled("sign", "--server", closed_port(), *map(str, photos))
    assert rc == 4 and out.count("queued") == 3, (out, err)
    queue = DeviceHome(enrolled.home).queue_dir
    never_a_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    ahead = time.time() + 2 * 86400
    for seq, pid in ((2, never_a_pid), (3, 2**80)):
        temp = queue / f".prov-tmp-{pid}-0a1b2c3d"
        (queue / f"{seq:012d}.json").rename(temp)
        os.utime(temp, (ahead, ahead))

    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "submitted 3 of 3" in out, (out, err)
    said = " ".join(err.split())
    assert "recovered claim #2" in said and "recovered claim #3" in said, said
    assert not any(queue.iterdir())


def _chain_for(public_key: bytes, ca: Path) -> bytes:
    """A real PEM chain (leaf, root) certifying ``public_key``, from a new CA in ``ca``."""
    now = datetime.now(UTC)
    authority = init_authority(ca, now=now)
    return issue_device_certificate(authority, public_key, "device", now=now)


@pytest.mark.parametrize("which", ["cut short", "another key's"])
def test_a_certificate_temporary_file_is_put_in_place_only_whole_and_this_keys(
    which: str, enrolled: Cli, tmp_path: Path
) -> None:
    """A chain cut short (a crash before the write reached the disk) was put in place as
    the device's certificate ("recovered"), and every `prov sign --c2pa` then failed with
    "the certificate chain is not PEM"; a chain of another key (a device replaced by
    `prov device init --force` before this version cleared its leftovers) too. Now only
    a whole chain whose leaf certifies this device's key is; any other is removed."""
    home = DeviceHome(enrolled.home)
    own = bytes.fromhex(home.state().public_key)
    other = bytes.fromhex(DeviceHome(tmp_path / "x").init(b"pass phrase 1")[0].public_key)
    whole = _chain_for(own, tmp_path / "ca")
    chain = (
        whole[: len(whole) // 3] if which == "cut short" else _chain_for(other, tmp_path / "ca2")
    )
    temp = home.root / ".prov-tmp-4194306-c0ffee00"
    temp.write_bytes(chain)
    _age(temp, 60)
    rc, out, err = enrolled("device", "sync")
    assert rc == 0, (out, err)
    assert not home.cert_path.exists() and not temp.exists(), err
    assert "removed 1 stray temporary file" in " ".join(err.split()), err

    temp.write_bytes(whole)
    _age(temp, 60)
    rc, out, err = enrolled("device", "sync")
    assert rc == 0 and "recovered from" in err, (out, err)
    assert home.cert_path.read_bytes() == whole and not temp.exists()
