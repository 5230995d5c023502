"""`prov device repair` on a folder damaged in more than its state file, and what it
says: a queued claim whose bytes are damaged stopped the repair ("error: malformed
claim"), a claim not signed by this key (damaged bytes, or put there) moved the
numbering to whatever sequence it named, a repair killed after setting the damaged
file aside lost the sequence that file still held (a number already signed reused),
and the output said "a number already signed is never reused" when the log had not
been asked. Real keys, a real `prov serve`, the real CLI."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from clients.device import DeviceHome
from provenance.wire.convert import decode_claim, encode_claim
from tests.conftest import Cli, closed_port
from tests.photos import noise_photo


def _edit_claim(entry_file: Path, payload: bytes) -> None:
    """Put ``payload`` in place of the signed claim bytes of a queue entry, its
    signature kept (what a damaged disk, or someone, leaves)."""
    doc: dict[str, Any] = json.loads(entry_file.read_text())
    sidecar = json.loads(doc["sidecar"])
    sidecar["payload"] = base64.b64encode(payload).decode()
    entry_file.write_text(json.dumps({**doc, "sidecar": json.dumps(sidecar)}))


def test_damaged_or_foreign_claims_neither_stop_repair_nor_set_the_numbering(
    enrolled: Cli, tmp_path: Path
) -> None:
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(4)]
    offline = closed_port()
    rc, out, err = enrolled("sign", "--server", offline, *map(str, photos[:3]))
    assert rc == 4 and out.count("queued") == 3, (out, err)
    queue = DeviceHome(enrolled.home).queue_dir
    _edit_claim(queue / "000000000002.json", b"\xff\xff\xff not a claim")
    # a claim naming this key and a sequence far ahead, its signature not over it
    third = queue / "000000000003.json"
    claim = decode_claim(
        base64.b64decode(json.loads(json.loads(third.read_text())["sidecar"])["payload"])
    )
    _edit_claim(third, encode_claim(replace(claim, sequence=10**6)))
    (enrolled.home / "device.json").write_bytes(b"{")

    rc, out, err = enrolled("device", "repair", "--server", enrolled.server)
    assert rc == 0, (out, err)
    assert "last sequence 3" in out and "Traceback" not in err, (out, err)
    state = DeviceHome(enrolled.home).state()
    assert state.last_sequence == 3, state

    rc, out, err = enrolled("device", "sync")
    assert "submitted 1 of 3" in out, (out, err)
    rc, out, err = enrolled("sign", str(photos[3]))
    assert rc == 0 and "signed (#4) and logged" in out, (out, err)


def test_a_repair_killed_after_setting_the_damaged_file_aside_keeps_its_sequence(
    enrolled: Cli, tmp_path: Path
) -> None:
    """Killed between renaming device.json to device.json.damaged-TIME and writing the
    new one: run again, the repair reads what that copy holds (the server, the last
    sequence), not only what is left in the folder."""
    photos = [noise_photo(tmp_path, f"p{i}.png", i) for i in range(3)]
    rc, out, err = enrolled("sign", str(photos[0]), str(photos[1]))  # logged #1, #2
    assert rc == 0 and out.count("and logged at leaf") == 2, (out, err)
    offline = closed_port()  # the server not reachable when the repair runs
    state_path = enrolled.home / "device.json"
    good = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**good, "server": offline, "device_id": 7}))
    copy = enrolled.home / "device.json.damaged-20261205T000000Z"
    os.rename(state_path, copy)  # what a repair killed after `_set_aside` leaves

    rc, out, err = enrolled("device", "repair")
    assert rc == 0, (out, err)
    said = " ".join(out.split())
    assert "last sequence 2" in said and copy.name in said, said
    assert f"server {offline}" in said, said
    state = DeviceHome(enrolled.home).state()
    assert (state.last_sequence, state.server) == (2, offline), state
    assert copy.exists()
    rc, out, err = enrolled("sign", str(photos[2]))
    assert rc == 0 and "signed (#3)" in out, (out, err)


def test_what_repair_says_about_reuse_is_what_it_checked(enrolled: Cli, tmp_path: Path) -> None:
    """The log not asked: "never reused" is not said, and why the next number may be
    one the log holds is. A damaged file saying 2^64 - 1 that nothing else vouches for
    (the log holds #1) is not counted, and said so (before: taken, and the key had used
    its last number; a last sequence the log vouches for up to 2^64 - 1, with no next
    number: tests/test_device_repair_log_sequence.py)."""
    photo = noise_photo(tmp_path, "p.png", 0)
    rc, out, err = enrolled("sign", str(photo))  # logged #1, its sidecar beside it
    assert rc == 0, err
    state_path = enrolled.home / "device.json"
    good = json.loads(state_path.read_text())
    state_path.write_bytes(b"{")
    rc, out, err = enrolled("device", "repair", "--server", closed_port())
    said = " ".join(out.split())
    assert rc == 0 and "last sequence 0" in said, said
    assert "never reused" not in said, said
    assert "the log was not asked" in said and "may be one the log already holds" in said, said

    state_path.write_text(json.dumps({**good, "last_sequence": 2**64 - 1, "device_id": 7}))
    rc, out, err = enrolled("device", "repair")
    said = " ".join(out.split())
    assert rc == 0 and "last sequence 1 (the highest seen: the log)" in said, said
    assert f"says the last sequence is {2**64 - 1}" in said and "not counted" in said, said
    assert "used its last sequence number" not in said, said


def test_with_no_state_the_newest_copy_names_the_server(enrolled: Cli) -> None:
    """Two copies set aside within one second (``...Z`` and the newer ``...Z-2``): the
    server comes from the newer."""
    state_path = enrolled.home / "device.json"
    good = json.loads(state_path.read_text())
    older, newer = closed_port(), closed_port()
    stamp = "device.json.damaged-20261205T000000Z"
    (enrolled.home / stamp).write_text(json.dumps({**good, "server": older, "device_id": 7}))
    (enrolled.home / f"{stamp}-2").write_text(json.dumps({**good, "server": newer, "x": {}}))
    state_path.unlink()
    rc, out, err = enrolled("device", "repair")
    assert rc == 0 and f"server {newer} (from {stamp}-2)" in out, (out, err)
