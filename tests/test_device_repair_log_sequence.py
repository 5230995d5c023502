"""`prov device repair` took the log's last sequence for the key as it came: a log
answering wrongly (a hostile or broken server: 10^15, or 2^64 - 1, for a device whose own
claims go to 3) moved the device's numbering there, to its end for 2^64 - 1, and the key
could sign nothing more. A number more than `SEQUENCE_MARGIN` past the highest this
folder shows is now not adopted without `--accept-log-sequence`, and the output says
what the log said, that the next number may then be one the log holds, and what to do.
`prov device sync`, moving the numbering past the log's after a refusal, had the same
hole and keeps the same rule.

The honest log is a real `prov serve` (the `enrolled` fixture); the wrong one is a gRPC
server of this test answering only `GetDevice`, the one call repair makes: it stands in
for a hostile third party, not for the project's server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from PIL import Image

from clients.device import SEQUENCE_MARGIN, DeviceHome
from provenance.v1 import provenance_pb2 as pb
from tests.conftest import Answers, Cli, Refusal, closed_port


def _wrong_log(hostile: Callable[[Answers], str], last_sequence: int) -> str:
    """A server whose `GetDevice` says ``last_sequence`` of any key; its HOST:PORT."""
    device = pb.Device(last_sequence=last_sequence).SerializeToString()
    return hostile({"GetDevice": lambda: device})


def _said(enrolled: Cli, *args: str) -> tuple[int, str]:
    """`prov ARGS`: the exit code and all it said, whitespace folded."""
    rc, out, err = enrolled(*args)
    return rc, " ".join((out + err).split())


def _queue_three(enrolled: Cli, tmp_path: Path) -> Path:
    """Three claims queued (#1..#3, the log never reached); device.json then damaged."""
    photos = []
    for i in range(3):
        photos.append(tmp_path / f"p{i}.png")
        Image.effect_noise((64, 64), 40 + i).convert("RGB").save(photos[-1])
    rc, out, err = enrolled("sign", "--server", closed_port(), *map(str, photos))
    assert rc == 4 and out.count("queued") == 3, (out, err)
    state_path = enrolled.home / "device.json"
    state_path.write_bytes(b"{")
    return state_path


@pytest.mark.parametrize("said", [10**15, 2**64 - 1])
def test_a_log_sequence_far_past_the_folder_is_not_adopted(
    enrolled: Cli, tmp_path: Path, hostile: Callable[[Answers], str], said: int
) -> None:
    _queue_three(enrolled, tmp_path)
    server = _wrong_log(hostile, said)
    rc, text = _said(enrolled, "device", "repair", "--server", server)
    assert rc == 0, text
    assert DeviceHome(enrolled.home).state().last_sequence == 3, text
    assert f"up to sequence {said}" in text and "not adopted" in text, text
    assert "--accept-log-sequence" in text, text
    assert "never reused" not in text and "may be one the log already holds" in text, text
    assert "used its last sequence number" not in text, text
    assert "Traceback" not in text

    if said == 10**15:  # the user's decision: the log does hold them (a second signer)
        rc, text = _said(enrolled, "device", "repair", "--server", server, "--accept-log-sequence")
        assert rc == 0, text
        assert DeviceHome(enrolled.home).state().last_sequence == said, text
        assert f"the next claim is numbered {said + 1}" in text, text


def test_a_log_sequence_within_the_margin_is_adopted(
    enrolled: Cli, tmp_path: Path, hostile: Callable[[Answers], str]
) -> None:
    _queue_three(enrolled, tmp_path)
    rc, text = _said(
        enrolled, "device", "repair", "--server", _wrong_log(hostile, 3 + SEQUENCE_MARGIN)
    )
    assert rc == 0 and "never reused" in text, text
    assert DeviceHome(enrolled.home).state().last_sequence == 3 + SEQUENCE_MARGIN


def test_accepting_the_log_sequence_of_a_sound_state_with_a_real_server(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The honest log (a real `prov serve`) agrees with the folder: nothing changes."""
    photo = tmp_path / "p.png"
    Image.effect_noise((64, 64), 40).convert("RGB").save(photo)
    rc, out, err = enrolled("sign", str(photo))
    assert rc == 0 and "logged" in out, (out, err)
    state_path = enrolled.home / "device.json"
    before = json.loads(state_path.read_text())
    rc, text = _said(enrolled, "device", "repair", "--accept-log-sequence")
    assert rc == 0 and "nothing to repair" in text, text
    assert json.loads(state_path.read_text()) == before


def test_sync_does_not_adopt_a_log_sequence_far_past_the_device(
    enrolled: Cli, tmp_path: Path, hostile: Callable[[Answers], str]
) -> None:
    """`prov device sync`, a claim refused as one whose sequence the log holds, moved the
    numbering past the log's last (`GetDevice`) as it came: the same hole as repair's."""
    state_path = _queue_three(enrolled, tmp_path)
    rc, log_key, err = enrolled("log", "key", "--server", enrolled.server)
    assert rc == 0, err
    state_path.unlink()
    rc, out, err = enrolled("device", "repair", "--server", closed_port())
    assert rc == 0, (out, err)

    def refused() -> bytes:
        raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, "sequence 1 is not after 10^15")

    device = pb.Device(last_sequence=10**15).SerializeToString()
    # the log key is asked before any claim is sent: a hostile server answers the honest
    # log's (it is public), so the claims are sent
    vkey = pb.GetLogKeyResponse(verifier_key=log_key.strip())
    answers = {"SubmitCapture": refused, "GetDevice": lambda: device}
    server = hostile({**answers, "GetLogKey": vkey.SerializeToString})
    rc, text = _said(enrolled, "device", "sync", "--server", server)
    assert rc == 1, text
    assert DeviceHome(enrolled.home).state().last_sequence == 3, text
    assert f"up to sequence {10**15}" in text and "not adopted" in text, text
    assert "prov device repair --accept-log-sequence" in text, text


def _damaged_saying(state_path: Path, last: int) -> None:
    """device.json cut short after naming ``last`` as its last sequence."""
    state_path.write_bytes(b'{"last_sequence": %d, "serv' % last)


@pytest.mark.parametrize("log", ["real", "offline"])
@pytest.mark.parametrize("said", [2**64 - 1, 4 + SEQUENCE_MARGIN])
def test_a_damaged_files_sequence_far_past_the_rest_is_not_counted(
    enrolled: Cli, tmp_path: Path, log: str, said: int
) -> None:
    """The damaged device.json's number was taken as it was, up to 2^64 - 1 (a damaged
    digit, or garbage that reads as one): the key then signed nothing more. Like the
    log's, it now counts only within `SEQUENCE_MARGIN` of the claims this key signed that
    the folder holds and the log's number (here the real log's 0: the claims are queued;
    or the log not asked), and the output says it was not counted."""
    state_path = _queue_three(enrolled, tmp_path)
    _damaged_saying(state_path, said)
    server = enrolled.server if log == "real" else closed_port()
    rc, text = _said(enrolled, "device", "repair", "--server", server)
    assert rc == 0, text
    assert DeviceHome(enrolled.home).state().last_sequence == 3, text
    assert f"says the last sequence is {said}" in text and "not counted" in text, text
    assert "used its last sequence number" not in text and "Traceback" not in text, text


def test_a_damaged_files_far_sequence_the_log_holds_is_counted(
    enrolled: Cli, tmp_path: Path, hostile: Callable[[Answers], str]
) -> None:
    """The damaged file's number far past the folder's claims, and the log holding this
    key's claims up to it (claims logged whose sidecars are elsewhere): counted, as
    before; up to 2^64 - 1, where the output says the key has used its last number."""
    state_path = _queue_three(enrolled, tmp_path)
    for said in (3 + 2 * SEQUENCE_MARGIN, 2**64 - 1):
        _damaged_saying(state_path, said)
        rc, text = _said(enrolled, "device", "repair", "--server", _wrong_log(hostile, said))
        assert rc == 0 and "not counted" not in text, text
        assert DeviceHome(enrolled.home).state().last_sequence == said, text
        assert ("used its last sequence number" in text) == (said == 2**64 - 1), text
