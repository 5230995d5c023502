"""`prov sign` finds a logged claim of a file's bytes among the sidecars kept in
PROV_HOME/sidecars/ through the folder's index (sidecars/index.json,
`clients.device.keptindex`), checked against the folder on every use: a sidecar
removed, added or replaced by hand is seen at once, and an index that is cut short,
damaged, not a file, or lying is never taken for an answer (each name it gives is read
and checked in full). Real `prov serve`, the real CLI in-process, real keys and files."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from clients.device import DeviceHome, keptindex
from clients.device.keptindex import INDEX_NAME, KeptIndex
from provenance.wire.sidecar import decode_sidecar
from tests.conftest import SAMPLES, Cli


@pytest.fixture(autouse=True)
def _settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of files written a moment ago are kept in the index file too (a file
    changed within `SETTLED_NS` of a listing is read on each use instead, which would
    leave these tests nothing in the file to make stale)."""
    monkeypatch.setattr(keptindex, "SETTLED_NS", 0)


def _keep(cli: Cli, photo: Path) -> Path:
    """Sign ``photo`` while its FILE.prov cannot be written: the logged sidecar is kept
    in sidecars/. Returns where."""
    side = photo.with_name(photo.name + ".prov")
    side.mkdir()
    rc, out, err = cli("sign", str(photo))
    assert rc == 0 and "and logged" in out, (out, err)
    side.rmdir()
    home = DeviceHome(cli.home)
    kept = home.sidecar_dir / f"{home.state().last_sequence:012d}.prov"
    assert decode_sidecar(kept.read_bytes()).receipt is not None
    return kept


def _copy(name: str, tmp_path: Path, as_name: str) -> Path:
    return Path(shutil.copy(SAMPLES / name, tmp_path / as_name))


def _two_kept(cli: Cli, tmp_path: Path) -> tuple[DeviceHome, Path, Path, Path]:
    """Two photos, A and C, whose logged sidecars are kept (claims 1 and 2), then a third
    signed as usual (#3: no kept sidecar binds it), which writes the index naming both:
    (the device, its index file, A, C)."""
    home = DeviceHome(cli.home)
    a = _copy("rocket.jpg", tmp_path, "a.jpg")
    c = _copy("grace_hopper.jpg", tmp_path, "c.jpg")
    kept = [_keep(cli, a), _keep(cli, c)]
    out, _ = _signed(cli, _copy("chelsea.png", tmp_path, "b.png"))
    assert "signed (#3) and logged" in out, out
    index = home.sidecar_dir / INDEX_NAME
    assert all(k.name.encode() in index.read_bytes() for k in kept)
    return home, index, a, c


def _signed(cli: Cli, photo: Path) -> tuple[str, str]:
    """`prov sign PHOTO` (exit 0): its stdout and stderr, spaces joined."""
    rc, out, err = cli("sign", str(photo))
    assert rc == 0, (out, err)
    return " ".join(out.split()), " ".join(err.split())


def test_hits_misses_and_sidecars_removed_added_or_replaced_by_hand(
    enrolled: Cli, tmp_path: Path
) -> None:
    home, index, a, c = _two_kept(enrolled, tmp_path)
    kept_a, kept_c = home.sidecar_dir / "000000000001.prov", home.sidecar_dir / "000000000002.prov"
    kept_a_bytes = kept_a.read_bytes()
    # a hit: the kept sidecar is written beside the file, nothing signed
    out, err = _signed(enrolled, a)
    assert "already signed (#1) and logged" in out, out
    assert f"written from the sidecar kept at {kept_a}" in err, err
    assert home.state().last_sequence == 3
    Path(f"{a}.prov").unlink()

    # removed by hand, then the index rewritten by the next signature without it
    kept_a.unlink()
    out, _ = _signed(enrolled, _copy("generated_controlnet.png", tmp_path, "e.png"))
    assert "signed (#4)" in out, out
    assert kept_a.name.encode() not in index.read_bytes()
    # added by hand under another name: the index does not name it, and it is found
    added = home.sidecar_dir / "000000000009.prov"
    added.write_bytes(kept_a_bytes)
    out, err = _signed(enrolled, a)
    assert "already signed (#1) and logged" in out, out
    assert f"written from the sidecar kept at {added}" in err, err
    Path(f"{a}.prov").unlink()

    # removed by hand while the index names it: not taken for a hit, the file signed anew
    added.unlink()
    out, _ = _signed(enrolled, a)
    assert "signed (#5) and logged" in out, out
    Path(f"{a}.prov").unlink()

    # replaced in place by hand: the index names it with C's bytes; it holds A's now
    kept_c.write_bytes(kept_a_bytes)
    out, err = _signed(enrolled, a)
    assert "already signed (#1) and logged" in out, out
    assert f"written from the sidecar kept at {kept_c}" in err, err


def _index_of(home: DeviceHome, records: dict[str, tuple[Path, str]]) -> bytes:
    """An index file in the format `keptindex` writes, checksum and all, giving each name
    the ``stat`` of its path and the SHA-256 (hex) given: what a hostile writer makes."""
    doc = {}
    for name, (path, sha) in records.items():
        st = path.stat()
        doc[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sha]
    body = json.dumps(doc).encode()
    return b"prov-kept-index 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def test_a_damaged_or_lying_index_never_makes_a_wrong_answer(enrolled: Cli, tmp_path: Path) -> None:
    home, index, a, c = _two_kept(enrolled, tmp_path)
    kept_a, kept_c = home.sidecar_dir / "000000000001.prov", home.sidecar_dir / "000000000002.prov"
    whole = index.read_bytes()

    for damaged in (whole[: len(whole) // 2], b"", b"\x00garbage\n{", whole + b" "):
        index.write_bytes(damaged)  # cut short, emptied, garbage, checksum off
        out, err = _signed(enrolled, a)
        assert "already signed (#1) and logged" in out, (damaged, out, err)
        Path(f"{a}.prov").unlink()
        assert index.read_bytes().startswith(b"prov-kept-index 1 ")  # written anew
        assert kept_a.name.encode() in index.read_bytes()

    index.unlink()
    index.mkdir()  # not a file: ignored, and nothing written over it
    out, _ = _signed(enrolled, c)
    assert "already signed (#2) and logged" in out, out
    Path(f"{c}.prov").unlink()
    index.rmdir()

    # lying, checksum and stat right: C's sidecar named as the one for new bytes D, and
    # A's sidecar left out. D is signed anew with a claim of its own, never C's; A's
    # sidecar, not named with its stat, is read and found
    d = _copy("generated_controlnet.png", tmp_path, "d.png")
    d_sha = hashlib.sha256(d.read_bytes()).hexdigest()
    index.write_bytes(_index_of(home, {kept_c.name: (kept_c, d_sha)}))
    out, _ = _signed(enrolled, d)
    assert "signed (#4) and logged" in out, out
    claim = decode_sidecar(Path(f"{d}.prov").read_bytes()).claim
    assert claim.sequence == 4 and claim.hard_binding.sha256.hex() == d_sha
    rc, out, err = enrolled("verify", str(d), "--no-detect")
    assert rc == 0 and "SIGNED_ORIGINAL" in out, (out, err)
    index.write_bytes(_index_of(home, {kept_c.name: (kept_c, d_sha)}))
    out, err = _signed(enrolled, a)
    assert "already signed (#1) and logged" in out, (out, err)


def test_the_index_is_written_only_under_the_folders_lock(tmp_path: Path) -> None:
    """Read without the lock (a library caller), the folder is looked at and nothing is
    written; with it, the index file is written once and read back as it was."""
    folder = tmp_path / "sidecars"
    folder.mkdir()
    (folder / "000000000001.prov").write_bytes(b"no sidecar")
    assert KeptIndex(folder).bindings(write=False) == {"000000000001.prov": ""}
    assert not (folder / INDEX_NAME).exists()
    assert KeptIndex(folder).bindings(write=True) == {"000000000001.prov": ""}
    written = (folder / INDEX_NAME).read_bytes()
    assert KeptIndex(folder).bindings(write=True) == {"000000000001.prov": ""}
    assert (folder / INDEX_NAME).read_bytes() == written
    assert KeptIndex(tmp_path / "none").bindings(write=True) == {}
    assert not (tmp_path / "none").exists()


def _checksummed(body: bytes) -> bytes:
    """``body`` after the first line `keptindex` writes, its checksum right."""
    return b"prov-kept-index 1 " + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


@pytest.mark.parametrize(
    "body",
    [
        b'{"x.prov":[' + b"[]," * 100_000 + b"[]]}",  # at 64 MiB: 1.7 GiB to parse
        b'{"x.prov":[' + b"{}," * 100_000 + b"{}]}",
        b'{"x.prov":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"x.prov":[NaN,Infinity,-1e999,1.5,""]}',
        b'{"x.prov":[true,false,null,1,""]}',
        b'{"x.prov":[1,2,3,4,"",5]}',
        b'{"x.prov":[1,2,3,123456789012345678901,""]}',
        b'{"x.prov":[1,2,3,4,"not hex"]}',
        b'[["x.prov",1,2,3,4,""]]',
    ],
    ids=["arrays", "objects", "deep", "nan", "true", "six", "21-digit", "not-hex", "array"],
)
def test_an_index_of_another_shape_is_never_parsed(tmp_path: Path, body: bytes) -> None:
    """An index whose checksum is right but whose JSON is not records alone (a name, four
    integers of at most 20 digits, a SHA-256 in hex or "") is ignored unparsed and
    rebuilt from the sidecars: millions of ``[]`` in 64 MiB took 1.7 GiB to parse."""
    folder = tmp_path / "sidecars"
    folder.mkdir()
    (folder / "x.prov").write_bytes(b"no sidecar")
    (folder / INDEX_NAME).write_bytes(_checksummed(body))
    assert keptindex._load(folder / INDEX_NAME) == {}
    assert KeptIndex(folder).bindings(write=True) == {"x.prov": ""}
    st = (folder / "x.prov").stat()
    assert keptindex._load(folder / INDEX_NAME) == {
        "x.prov": [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, ""]
    }


def test_any_file_name_is_kept_in_the_index(tmp_path: Path) -> None:
    """Names JSON escapes (a quote, a backslash, a newline, non-ASCII, a byte that is
    not UTF-8) are read back from the index as written."""
    folder = tmp_path / "sidecars"
    folder.mkdir()
    names = ['a"b\\c\nd.prov', "é.prov", b"\xff.prov".decode("utf-8", "surrogateescape")]
    for name in names:
        (folder / name).write_bytes(b"no sidecar")
    assert KeptIndex(folder).bindings(write=True) == dict.fromkeys(names, "")
    assert sorted(keptindex._load(folder / INDEX_NAME)) == sorted(names)


def test_one_command_lists_the_folder_again_only_once_it_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signing many files in one command lists and ``stat``s the kept sidecars once
    while their folder stays as it was (10,000 kept: about 0.2 s a file); a file added
    or removed there changes the folder, and the next file's look lists it again."""
    monkeypatch.setattr(keptindex, "SETTLED_NS", 1_000_000_000)
    folder = tmp_path / "sidecars"
    folder.mkdir()
    for n in (1, 2):
        (folder / f"00000000000{n}.prov").write_bytes(b"no sidecar")
    time.sleep(1.1)
    index = KeptIndex(folder)
    want = {"000000000001.prov": "", "000000000002.prov": ""}
    assert index.bindings(write=True) == want  # writes index.json: the folder changed
    time.sleep(1.1)
    listings: list[Path] = []
    listing = keptindex._listing

    def counted(f: Path) -> dict[str, list[int]] | None:
        listings.append(f)
        return listing(f)

    monkeypatch.setattr(keptindex, "_listing", counted)
    assert index.bindings(write=True) == want and len(listings) == 1
    assert index.bindings(write=True) == want and len(listings) == 1  # not listed again
    (folder / "000000000003.prov").write_bytes(b"no sidecar")
    assert index.bindings(write=True) == {**want, "000000000003.prov": ""}
    (folder / "000000000001.prov").unlink()
    assert index.bindings(write=True) == {"000000000002.prov": "", "000000000003.prov": ""}
    assert len(listings) == 3


def test_a_sidecar_kept_by_the_same_command_is_found_for_the_next_file(
    enrolled: Cli, tmp_path: Path
) -> None:
    """`prov sign A COPY_OF_A`, A.prov blocked: A's logged sidecar is kept in sidecars/
    by this command, and its copy, signed next by the same command, gets it (no second
    claim for the same bytes)."""
    a = _copy("rocket.jpg", tmp_path, "a.jpg")
    copy = _copy("rocket.jpg", tmp_path, "copy.jpg")
    Path(f"{a}.prov").mkdir()
    rc, out, err = enrolled("sign", str(a), str(copy))
    out = " ".join(out.split())
    assert rc == 0 and "signed (#1) and logged" in out, (out, err)
    assert "copy.jpg: already signed (#1) and logged" in out, (out, err)
    assert DeviceHome(enrolled.home).state().last_sequence == 1
