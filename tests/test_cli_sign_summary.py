"""`prov sign` over several files ends with a one-line summary of the outcomes, through the
real CLI against a real `prov serve`; the exit code rule stays (1 when a file failed)."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

from clients.device import DeviceHome
from tests.conftest import SAMPLES, Cli, cli_process
from tests.stopping import owned, stop_by


def test_sign_over_several_files_ends_with_a_summary(enrolled: Cli, tmp_path: Path) -> None:
    old = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "old.png"))
    rc, out, err = enrolled("sign", str(old))
    assert rc == 0 and "summary of" not in err, err  # one file: its line says it all
    new = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "new.jpg"))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a capture\n")
    rc, out, err = enrolled("sign", str(new), str(old), str(notes))
    assert rc == 1, err  # a file failed
    # the list of formats is the web page's (provenance.media.image.SUPPORTED_FORMATS)
    assert "(expected JPEG, PNG, WebP, GIF, TIFF, HEIC, MP4, MOV, WebM or Matroska)" in err
    assert err.strip().splitlines()[-1] == (
        "summary of 3 files: 1 signed and logged, 1 already signed, 1 not signed (failed)"
    ), err
    rc, out, err = enrolled("sign", str(new), str(old))
    assert rc == 0 and err.strip().endswith("summary of 2 files: 2 already signed"), err


def test_a_refused_signature_names_the_file_once(enrolled: Cli, tmp_path: Path) -> None:
    """A claim the server refuses (here: the key was revoked) reads "FILE: signed (#N) but
    refused by the server: <why>", the file named once (before: "cat.png: signed (#1) but
    refused by the server: cat.png: device ... was revoked ...")."""
    photo = Path(shutil.copy(SAMPLES / "chelsea.png", tmp_path / "cat.png"))
    device_id = DeviceHome(enrolled.home).state().device_id
    rc, _, err = enrolled("admin", "revoke", device_id, "--reason", "lost")
    assert rc == 0, err
    rc, _, err = enrolled("sign", str(photo))
    text = " ".join(err.split())
    assert rc == 1, err
    assert f"{photo}: signed (#1) but refused by the server: device {device_id[:16]}" in text, text
    assert "was revoked" in text and "(set aside in " in text, text


def test_ctrl_c_says_what_was_signed_and_what_is_queued(enrolled: Cli, tmp_path: Path) -> None:
    """Ctrl-C in the middle of `prov sign` over many files: the file in hand is finished,
    then exit 130 and a last line saying how many files were done, how many signed claims wait in the queue for `prov
    device sync`, and that the same command signs the rest. Before: a bare
    "interrupted", though a claim signed when Ctrl-C came stays queued, unsubmitted."""
    folder = tmp_path / "many"
    folder.mkdir()
    files = [
        Path(shutil.copy(SAMPLES / "rocket.jpg", folder / f"r{k:03d}.jpg")) for k in range(300)
    ]
    with owned(cli_process(["sign", *map(str, files)])) as proc:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("*.prov"))) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        rc, _, err = stop_by(proc, signal.SIGINT, timeout=60)
    assert rc == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    done = int(last.removeprefix("interrupted after ").split(" ", 1)[0])
    queued = len(DeviceHome(enrolled.home).pending())
    # Ctrl-C waits for the file in hand: every sidecar written is a file counted as done
    # (before, one signed and logged as Ctrl-C came was in neither count: 4 done, 5 sidecars)
    assert 5 <= done == len(list(folder.glob("*.prov"))) < 300, err[-2000:]
    assert "Ctrl-C: stopping after this file" in err, err[-2000:]
    assert last.startswith(f"interrupted after {done} of 300 files (") and last.endswith(
        "the same command signs the rest (a file already signed is not signed again)"
    ), last
    if queued:
        assert f"{queued} signed claim" in last and "`prov device sync` submits" in last, last
    assert "Traceback" not in err and "interrupted" not in err.splitlines(), err[-2000:]
