"""A queue entry *named* for a number far past every other (``18446744073709551615.json``,
an edit, a damaged directory, a file copied in) moved the device's numbering there even
when it could not be read: at 2^64 - 1 the key could sign nothing more ("used its last
sequence number"). Now an entry that cannot be read reserves its number only when that
number is within `SEQUENCE_MARGIN` of the device's last sequence; past it, the entry is
moved to set_aside/ as it is, saying so, and the numbering goes on. A claim this key did
sign at such a number (its signature verifies) still counts. Real keys, a real `prov
serve` (not reached: the claims stay queued), the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

from clients.device import SEQUENCE_MARGIN, DeviceHome
from tests.conftest import Cli, closed_port
from tests.photos import noise_photo, sidecar_sequence


def test_an_unreadable_entry_named_far_ahead_is_set_aside(enrolled: Cli, tmp_path: Path) -> None:
    offline = closed_port()
    photos = [noise_photo(tmp_path, f"p{i}.png", i, size=64) for i in range(4)]
    rc, out, err = enrolled("sign", "--server", offline, str(photos[0]), str(photos[1]))
    assert rc == 4, (out, err)  # queued #1, #2
    queue = enrolled.home / "queue"
    far = [f"{2**64 - 1}.json", f"{10**15}.json"]
    for name in far:
        (queue / name).write_bytes(b"")  # cannot be read: no claim in it
    (queue / f"{2 + SEQUENCE_MARGIN:012d}.json").write_bytes(b"{")  # near enough: reserved

    rc, out, err = enrolled("sign", "--server", offline, str(photos[2]))
    said = " ".join(err.split())
    assert rc == 4, (out, err)
    assert sidecar_sequence(photos[2]) == 3 + SEQUENCE_MARGIN, (out, err)
    for name in far:
        assert f"queue/{name}" in said, said
        assert not (queue / name).exists()
        assert (enrolled.home / "set_aside" / name).read_bytes() == b""  # kept as it was
    assert "not reserved" in said and "set_aside" in said, said
    assert "Traceback" not in said

    rc, out, err = enrolled("sign", "--server", offline, str(photos[3]))  # said once
    assert rc == 4 and sidecar_sequence(photos[3]) == 4 + SEQUENCE_MARGIN, (out, err)
    assert str(10**15) not in err, err


def test_a_claim_this_key_signed_far_ahead_still_counts(enrolled: Cli, tmp_path: Path) -> None:
    offline = closed_port()
    photos = [noise_photo(tmp_path, f"p{i}.png", i, size=64) for i in range(2)]
    state_path = enrolled.home / "device.json"
    before = json.loads(state_path.read_text())
    far = 10**15
    state_path.write_text(json.dumps({**before, "last_sequence": far - 1}))
    rc, out, err = enrolled("sign", "--server", offline, str(photos[0]))  # queued as 10^15
    assert rc == 4 and sidecar_sequence(photos[0]) == far, (out, err)
    state_path.write_text(json.dumps(before))  # an older copy put back

    rc, out, err = enrolled("sign", "--server", offline, str(photos[1]))
    assert rc == 4 and sidecar_sequence(photos[1]) == far + 1, (out, err)
    assert DeviceHome(enrolled.home).state().last_sequence == far + 1


def test_repair_does_not_count_a_name_far_ahead(enrolled: Cli, tmp_path: Path) -> None:
    offline = closed_port()
    photos = [noise_photo(tmp_path, f"p{i}.png", i, size=64) for i in range(2)]
    rc, out, err = enrolled("sign", "--server", offline, *map(str, photos))  # queued #1, #2
    assert rc == 4, (out, err)
    (enrolled.home / "queue" / f"{2**64 - 1}.json").write_bytes(b"")
    (enrolled.home / "device.json").write_bytes(b"{")
    rc, out, err = enrolled("device", "repair", "--server", offline)
    said = " ".join((out + err).split())
    assert rc == 0 and "last sequence 2" in said, said
    assert f"queue/{2**64 - 1}.json" in said and "not counted" in said, said
    assert DeviceHome(enrolled.home).state().last_sequence == 2
