"""`prov sign --c2pa` embeds the manifest by writing a new file and renaming it over the
one named (a crash leaves the old file or the new one whole). Given a symbolic link, that
replaced the link with a regular file and left the file it pointed to without the
manifest; given a file with other hard links, those names kept the old bytes. Both are
refused before anything is signed (or, for a file signed before, before its export),
saying why and what to do (sign the link's target, or a copy); the file, its links and
the device's sequence numbers are left as they were.
Real CLI, real server with an enrollment authority, real files and links."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from clients.device import SIDECAR_SUFFIX, DeviceHome
from tests.conftest import SAMPLES, Cli, ServerProc


def _refused(cli: Cli, named: Path, err: str, rc: int, files: dict[Path, bytes]) -> None:
    text = " ".join(err.split())
    assert rc == 1, err
    assert f"{named}: not signed:" in text, text
    for path, data in files.items():
        assert path.read_bytes() == data, path
        assert not Path(f"{path}{SIDECAR_SUFFIX}").exists(), path
    assert DeviceHome(cli.home).state().last_sequence == 0


def test_a_symbolic_link_is_refused_and_its_target_can_be_signed(
    ca_server: ServerProc, cli: Cli, tmp_path: Path
) -> None:
    target = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    link = tmp_path / "link.jpg"
    link.symlink_to(target)
    original = target.read_bytes()
    rc, out, err = cli("sign", "--c2pa", str(link))
    _refused(cli, link, err, rc, {target: original, link: original})
    assert link.is_symlink() and os.readlink(link) == str(target)
    text = " ".join(err.split())
    assert f"{link.name} is a symbolic link (to {target})" in text, text
    assert "would replace the link with a regular file" in text, text
    assert f"prov sign --c2pa {target}" in text, text
    # the advice works: the file it points to gets its manifest, the link stays a link
    rc, out, err = cli("sign", "--c2pa", str(target))
    assert rc == 0 and "C2PA manifest embedded" in out, (out, err)
    assert link.is_symlink() and link.read_bytes() == target.read_bytes() != original


@pytest.mark.parametrize("signed_before", [False, True])
def test_a_file_with_other_hard_links_is_refused(
    ca_server: ServerProc, cli: Cli, tmp_path: Path, signed_before: bool
) -> None:
    """``signed_before``: signed without --c2pa first, so the export is of a file already
    signed (the same refusal, its claim and sidecar kept)."""
    path = Path(shutil.copy(SAMPLES / "grace_hopper.jpg", tmp_path / "photo.jpg"))
    other = tmp_path / "backup.jpg"
    os.link(path, other)
    original = path.read_bytes()
    sidecar = Path(f"{path}{SIDECAR_SUFFIX}")
    if signed_before:
        assert cli("sign", str(path))[0] == 0
        kept = sidecar.read_bytes()
    rc, out, err = cli("sign", "--c2pa", str(path))
    if signed_before:
        assert rc == 1 and sidecar.read_bytes() == kept, (out, err)
        assert DeviceHome(cli.home).state().last_sequence == 1
    else:
        _refused(cli, path, err, rc, {path: original, other: original})
    text = " ".join(err.split())
    assert rc == 1 and f"{path}: not signed:" in text, (out, err)
    assert f"{path.name} has 2 hard links" in text, text
    assert "the other name would keep the bytes without it" in text, text
    assert "sign a copy" in text, text
    assert os.stat(path).st_ino == os.stat(other).st_ino and path.read_bytes() == original
