"""`prov sign --c2pa` embeds the manifest after the claim is signed and logged, reading the
file again: a file changed in between (replaced, written to) is not exported. Before, the
manifest, whose claim binds the signed bytes, was embedded into the changed bytes, and a
write made while the manifest was made was undone by the rename of the export over the
file. Now: "C2PA manifest not embedded: FILE changed after it was signed ...; the claim is
logged ... for the earlier bytes ...; no manifest was written", exit 1, the file left as
the other writer left it, the sidecar and the log entry kept.

The change is made at a boundary of the real flow, nothing of ours replaced: the embed
step's first open of the capture once it is signed (`clients.device.export`'s
``open_regular``, which then opens it as ever), or the ``os.open`` that creates the
export's temporary file. Before c2paopen55 that first read was ``Path.read_bytes``,
which these tests hooked; c2paopen55 made it ``open_regular`` and the hook never fired
(``assert changed`` failed in all 7 cases)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from clients.device import SIDECAR_SUFFIX, export
from clients.files import open_regular
from provenance.cli.atomicfile import temp_names_of
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import FIXTURES, SAMPLES, Cli, ServerProc, hide_writes

#: Each sample and another capture of its type that replaces it.
OTHERS = {
    "grace_hopper.jpg": SAMPLES / "rocket.jpg",
    "chelsea.png": SAMPLES / "generated_controlnet.png",
    "fabric_pattern.mp4": FIXTURES / "phash" / "video" / "doorknob-hd-no-bar.mp4",
}


def _change(how: str, path: Path, other: Path) -> None:
    """Change ``path`` as a second writer would: ``replace`` renames a copy of ``other``
    over it (a new inode); ``overwrite`` rewrites one byte of its middle in place (same
    inode, same size)."""
    if how == "replace":
        os.replace(shutil.copy(other, path.with_name("incoming")), path)
    else:
        middle = path.stat().st_size // 2
        with open(path, "r+b") as f:
            byte = os.pread(f.fileno(), 1, middle)
            os.pwrite(f.fileno(), bytes([byte[0] ^ 0xFF]), middle)


def _changing_first_read(how: str, path: Path, other: Path, changed: list[bytes]) -> Any:
    """The embed step's ``open_regular`` (`clients.device.export`), which first changes
    ``path`` as `_change` does (``how``, ``other``) when it is asked for ``path`` and
    nothing was changed yet, appending what ``path`` then holds to ``changed``."""

    def open_after_a_change(file: Any) -> BinaryIO:
        if Path(file) == path and not changed:
            _change(how, path, other)
            changed.append(path.read_bytes())
        return open_regular(file)  # the one export imports, as it was

    return open_after_a_change


def _check_refused(
    cli: Cli, path: Path, original: bytes, changed: bytes, err: str, *, decodes: bool = True
) -> None:
    """The export was refused saying what state the capture is in; the file holds the
    other writer's bytes; its sidecar holds the logged claim of ``original``; signing the
    file again (when its changed bytes still ``decodes``) keeps that sidecar (exit 2), as
    the message says, without --force."""
    text = " ".join(err.split())
    assert f"{path}: C2PA manifest not embedded: {path.name} changed" in text, text
    assert "the claim is logged at leaf 1 for the earlier bytes" in text, text
    assert "no manifest was written" in text, text
    assert path.read_bytes() == changed  # no manifest, and the other write not undone
    side = decode_sidecar(path.with_name(path.name + SIDECAR_SUFFIX).read_bytes())
    assert side.receipt is not None
    assert side.claim.hard_binding.sha256 == hashlib.sha256(original).digest()
    assert "`prov sign --force --c2pa` on it signs what it holds now" in text, text
    if decodes:
        rc, out, err = cli("sign", "--c2pa", str(path))
        assert rc == 2 and "not signed" in err, (out, err)


@pytest.mark.parametrize("how", ["replace", "overwrite"])
@pytest.mark.parametrize("name", ["grace_hopper.jpg", "chelsea.png", "fabric_pattern.mp4"])
def test_a_file_changed_after_it_was_signed_gets_no_manifest(
    ca_server: ServerProc, cli: Cli, tmp_path: Path, name: str, how: str
) -> None:
    path = Path(shutil.copy(SAMPLES / name, tmp_path / name))
    original = path.read_bytes()
    changed: list[bytes] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            export, "open_regular", _changing_first_read(how, path, OTHERS[name], changed)
        )
        rc, out, err = cli("sign", "--c2pa", str(path))
    assert changed and changed[0] != original
    assert f"{path}: signed (#1) and logged at leaf 1" in out, (out, err)
    assert rc == 1, (out, err)
    assert "changed after it was signed" in " ".join(err.split()), err
    # a flipped byte of a PNG's image data fails its chunk's CRC: not an image to sign
    decodes = (name, how) != ("chelsea.png", "overwrite")
    _check_refused(cli, path, original, changed[0], err, decodes=decodes)


def test_a_file_signed_before_and_changed_before_the_export_gets_no_manifest(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    """`prov sign`, then `prov sign --c2pa` (already signed): the same check."""
    path = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    original = path.read_bytes()
    assert cli("sign", str(path))[0] == 0
    changed: list[bytes] = []
    change = _changing_first_read("overwrite", path, SAMPLES / "rocket.jpg", changed)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "open_regular", change)
        rc, out, err = cli("sign", "--c2pa", str(path))
    assert f"{path}: already signed (#1) and logged at leaf 1" in out, (out, err)
    assert rc == 1 and changed, (out, err)
    _check_refused(cli, path, original, changed[0], err)


@pytest.mark.parametrize("how", ["replace", "overwrite", "overwrite unseen"])
@pytest.mark.parametrize("name", ["grace_hopper.jpg", "fabric_pattern.mp4"])
def test_a_write_while_the_manifest_is_made_is_not_undone(
    ca_server: ServerProc, cli: Cli, tmp_path: Path, name: str, how: str
) -> None:
    """The file changes once its bytes were read for the export, before the export is
    renamed over it. ``overwrite unseen`` is that in-place write on a filesystem whose
    timestamps do not show it (FAT keeps times to 2 s, older kernels to a clock tick):
    ``stat`` and ``fstat`` go on reporting the file as it was."""
    path = Path(shutil.copy(SAMPLES / name, tmp_path / name))
    original = path.read_bytes()
    real_open = os.open
    changed: list[bytes] = []

    def open_after_a_change(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if temp_names_of(path).fullmatch(Path(file).name) and flags & os.O_CREAT and not changed:
            _change(how.removesuffix(" unseen"), path, OTHERS[name])
            changed.append(path.read_bytes())
        return real_open(file, flags, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        if how == "overwrite unseen":
            hide_writes(patch, path)
        patch.setattr(os, "open", open_after_a_change)
        rc, out, err = cli("sign", "--c2pa", str(path))
    assert changed and changed[0] != original
    assert f"{path}: signed (#1) and logged at leaf 1" in out, (out, err)
    assert rc == 1, (out, err)
    assert "changed while its C2PA manifest was being made" in " ".join(err.split()), err
    _check_refused(cli, path, original, changed[0], err)
