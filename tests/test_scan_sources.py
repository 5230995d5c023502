"""Reading folders and archives for a scan: hostile entries refused, limits, refs."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import stat
import struct
import sys
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clients.scan.sources import (
    MAX_LIST_LINE,
    EntryItem,
    FileItem,
    HashedItem,
    Item,
    RefusedItem,
    ScanLimits,
    entry_name_problem,
    iter_items,
)
from tests.deep_tree import make_chain, remove_tree
from tests.memory import traced_in_child

SAMPLES = Path(__file__).resolve().parents[1] / "clients" / "samples"
JPEG = (SAMPLES / "rocket.jpg").read_bytes()
PNG = (SAMPLES / "chelsea.png").read_bytes()


def _data(item: Item) -> bytes:
    """The bytes of an archive entry (failing the test if ``item`` is another kind)."""
    assert isinstance(item, EntryItem), item
    return item.data


def _error(item: Item) -> str:
    """Why an item was refused (failing the test if ``item`` was not refused)."""
    assert isinstance(item, RefusedItem), item
    return item.error


def _by_ref(items: list[Item]) -> dict[str, Item]:
    out = {i.ref: i for i in items}
    assert len(out) == len(items), "refs must be unique"
    return out


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _zip_symlink(z: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z.writestr(info, target)


def _mark_encrypted(archive: Path, name: bytes) -> None:
    """Set the 'encrypted' flag of an entry in the central directory (zipfile won't)."""
    data = bytearray(archive.read_bytes())
    pos = data.find(b"PK\x01\x02")
    while pos >= 0:
        n = int.from_bytes(data[pos + 28 : pos + 30], "little")
        if data[pos + 46 : pos + 46 + n] == name:
            data[pos + 8] |= 0x1
        pos = data.find(b"PK\x01\x02", pos + 4)
    archive.write_bytes(bytes(data))


def test_entry_names_that_escape_a_folder_are_refused() -> None:
    assert entry_name_problem("photos/day1/a.jpg") is None
    assert entry_name_problem("a..b.jpg") is None
    for name in ("../a.jpg", "x/../../a.jpg", "..\\a.jpg", "x\\..\\a"):
        assert "path traversal" in (entry_name_problem(name) or "")
    for name in ("/etc/passwd", "\\server\\share", "C:evil.jpg", "c:/windows/a.jpg"):
        assert "absolute" in (entry_name_problem(name) or "")
    assert "control character" in (entry_name_problem("a\x01.jpg") or "")
    assert 'a NUL byte in the entry name "a\\x00.jpg"' in (entry_name_problem("a\x00.jpg") or "")
    assert entry_name_problem("") == "empty entry name"


def test_hostile_zip_entries_are_refused_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    escape = f"/tmp/scan-escape-{uuid.uuid4().hex}.jpg"
    archive = tmp_path / "in" / "hostile.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ok/rocket.jpg", JPEG)
        z.writestr("../../escape.jpg", JPEG)
        z.writestr(escape, JPEG)
        z.writestr("..\\windows.jpg", JPEG)
        _zip_symlink(z, "link.jpg", "/etc/passwd")
        z.writestr("secret.jpg", JPEG)
        z.writestr("bomb.bin", bytes(20 << 20))
        z.writestr("ok/notes.txt", b"plain text")
    _mark_encrypted(archive, b"secret.jpg")
    monkeypatch.chdir(tmp_path / "in")
    before = _tree(tmp_path)
    limits = ScanLimits(ratio_min_bytes=1 << 20)
    got = _by_ref(list(iter_items([str(archive)], limits)))
    a = str(archive)
    ok = got[f"{a}!ok/rocket.jpg"]
    assert isinstance(ok, EntryItem) and ok.data == JPEG and ok.archive == a
    assert isinstance(got[f"{a}!ok/notes.txt"], EntryItem)
    errors = {ref.split("!", 1)[1]: i.error for ref, i in got.items() if isinstance(i, RefusedItem)}
    assert "path traversal" in errors["../../escape.jpg"]
    assert "path traversal" in errors["..\\\\windows.jpg"]  # a backslash is escaped in a ref
    assert "absolute entry name" in errors[escape]
    assert errors["link.jpg"] == "symbolic link: not followed"
    assert errors["secret.jpg"] == "encrypted entry: cannot be scanned"
    assert (
        "compression ratio" in errors["bomb.bin"] and "over the 100:1 limit" in errors["bomb.bin"]
    )
    assert len(got) == 8
    assert _tree(tmp_path) == before
    assert not os.path.exists(escape)


def test_hostile_tar_members_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "hostile.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        for name, data in (("good.png", PNG), ("../up.png", PNG), ("/abs/x.png", PNG)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, kind, link in (
            ("sym", tarfile.SYMTYPE, "/etc/shadow"),
            ("hard", tarfile.LNKTYPE, "good.png"),
            ("dev", tarfile.CHRTYPE, ""),
            ("fifo", tarfile.FIFOTYPE, ""),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            t.addfile(info)
        t.addfile(tarfile.TarInfo("after.txt"), io.BytesIO(b""))
    got = _by_ref(list(iter_items([str(archive)], ScanLimits())))
    a = str(archive)
    assert _data(got[f"{a}!good.png"]) == PNG
    errors = {ref.split("!", 1)[1]: i.error for ref, i in got.items() if isinstance(i, RefusedItem)}
    assert errors == {
        "../up.png": errors["../up.png"],
        "/abs/x.png": errors["/abs/x.png"],
        "sym": "symbolic link to '/etc/shadow': not followed",
        "hard": "hard link to 'good.png': not followed",
        "dev": "not a regular file (device, socket or FIFO)",
        "fifo": "not a regular file (device, socket or FIFO)",
    }
    assert "path traversal" in errors["../up.png"] and "absolute" in errors["/abs/x.png"]
    assert isinstance(got[f"{a}!after.txt"], EntryItem)  # the scan went on


def test_a_tar_compression_bomb_stops_its_archive(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        for name, data in (
            ("first.txt", b"hello"),
            ("zeros.bin", bytes(8 << 20)),
            ("never.png", PNG),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    items = list(iter_items([str(archive)], ScanLimits(ratio_min_bytes=1 << 20)))
    assert [i.ref for i in items] == [f"{archive}!first.txt", str(archive)]
    last = items[-1]
    assert isinstance(last, RefusedItem) and "decompression ratio over 100:1" in last.error


def test_entry_count_total_size_and_nesting_limits(tmp_path: Path) -> None:
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as z:
        for k in range(10):
            z.writestr(f"f{k}.txt", b"x" * 1000)
    items = list(iter_items([str(many)], ScanLimits(max_entries=4)))
    # a zip is refused whole, from its central directory (h-media50; before, its first 4
    # entries were scanned: zipfile had built every entry's ZipInfo by then)
    assert [i.ref for i in items] == [str(many)]
    assert "more than 4 entries" in _error(items[-1])
    items = list(iter_items([str(many)], ScanLimits(max_total_bytes=2500)))
    # what the entries declare, said as declared, the number with separators (h-rev41b:
    # "more than 1099511627776 uncompressed bytes ... (a compression bomb?)" for a size
    # a header only declared, nothing decompressed)
    said = _error(items[-1])
    assert len(items) == 3 and "entries declare more than 2,500 bytes in all" in said, said
    huge = tmp_path / "huge.tar"
    with tarfile.open(huge, "w", format=tarfile.GNU_FORMAT) as t:
        info = tarfile.TarInfo("big.bin")
        info.size = 1 << 41  # declared only: written as base-256, no data follows
        t.addfile(info)
    said = _error(list(iter_items([str(huge)], ScanLimits()))[-1])
    assert "declare more than 1,099,511,627,776 bytes" in said and "bomb" not in said, said

    deep = io.BytesIO()
    with zipfile.ZipFile(deep, "w") as z:
        z.writestr("deepest.jpg", JPEG)
    mid = io.BytesIO()
    with tarfile.open(fileobj=mid, mode="w:gz") as t:
        for name, data in (("inner.png", PNG), ("deep.zip", deep.getvalue())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("mid.tar.gz", mid.getvalue())
        z.writestr("top.jpg", JPEG)
    got = _by_ref(list(iter_items([str(outer)], ScanLimits(max_depth=2))))
    o = str(outer)
    assert set(got) == {f"{o}!mid.tar.gz!inner.png", f"{o}!mid.tar.gz!deep.zip", f"{o}!top.jpg"}
    assert _data(got[f"{o}!mid.tar.gz!inner.png"]) == PNG
    assert "nested more than 2 levels" in _error(got[f"{o}!mid.tar.gz!deep.zip"])
    deeper = _by_ref(list(iter_items([str(outer)], ScanLimits(max_depth=3))))
    assert f"{o}!mid.tar.gz!deep.zip!deepest.jpg" in deeper


def test_corrupt_archives_are_one_row_each(tmp_path: Path) -> None:
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as t:
        for k in range(3):
            info = tarfile.TarInfo(f"p{k}.png")
            info.size = len(PNG)
            t.addfile(info, io.BytesIO(PNG))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"PK\x03\x04" + os.urandom(200))
    items = list(iter_items([str(cut), str(fake)], ScanLimits()))
    refused = [i for i in items if isinstance(i, RefusedItem)]
    # the member the cut falls in has a row of its own, before the archive's
    assert [i.ref for i in refused] == [f"{cut}!p1.png", str(cut), str(fake)]
    assert refused[0].error.startswith("truncated: the archive ends ")
    assert "truncated or corrupt tar archive after 2 members" in refused[1].error
    assert "not a readable zip archive" in refused[2].error
    assert all(isinstance(i, EntryItem) and i.data == PNG for i in items if i not in refused)


def test_an_archive_its_reader_fails_on_is_said_in_words(tmp_path: Path) -> None:
    """A .tar.gz cut after 3 bytes (a download that stopped: ``1f 8b 08``) makes the
    standard library's gzip header reader fail in a way it does not foresee (TypeError,
    found by mutating archives: the only one of 80,000 mutated zips and tars to reach this
    guard). Before, the row said "truncated or corrupt (TypeError)"; now it says what
    failed and how to check the file, with no class name."""
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(b"\x1f\x8b\x08")
    (item,) = iter_items([str(cut)], ScanLimits())
    error = _error(item)
    assert error.startswith("not a readable tar archive: truncated or corrupt"), error
    assert "`tar -tvf` on the file" in error and "the rest of it was not scanned" in error, error
    assert "TypeError" not in error and "(" not in error, error


def _tar_with_negative_size(path: Path, compress: str) -> None:
    """A tar of a.txt, b.png and c.png whose a.txt header declares -16 bytes (GNU base-256,
    its checksum right)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (("a.txt", b"hello" * 10), ("b.png", PNG), ("c.png", PNG)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    raw[124:136] = b"\xff" * 11 + b"\xf0"  # -16 in base-256
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    data = bytes(raw)
    path.write_bytes({"": data, "gz": gzip.compress(data), "bz2": bz2.compress(data)}[compress])


@pytest.mark.parametrize("compress", ["", "gz", "bz2"])
def test_a_tar_member_of_negative_size_stops_its_archive_in_words(
    tmp_path: Path, compress: str
) -> None:
    """Before, the member was an empty entry (a row of 0 bytes) and the members after it
    vanished without a word: the next header was read inside its data and taken for the
    archive's end."""
    path = tmp_path / ("x.tar" + (f".{compress}" if compress else ""))
    _tar_with_negative_size(path, compress)
    got = _by_ref(list(iter_items([str(path)], ScanLimits())))
    assert "negative size (-16 bytes)" in _error(got[f"{path}!a.txt"]), got
    stop = _error(got[str(path)])
    assert "a member declares a negative size" in stop and "not scanned" in stop, stop
    assert sorted(got) == [str(path), f"{path}!a.txt"], got


def test_a_tar_member_whose_pax_size_is_no_number_stops_its_archive_in_words(
    tmp_path: Path,
) -> None:
    """A pax header ``size=abc``: Python's tarfile reads an unparsable pax number as 0, so
    the member was an empty entry ("empty file") and its data was then read as the next
    header (h-rev41b). Now the member and its archive say why they stop."""
    path = tmp_path / "pax.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, pax in (("a.png", {"size": "abc"}), ("b.png", {})):
            info = tarfile.TarInfo(name)
            info.size, info.pax_headers = len(PNG), pax
            t.addfile(info, io.BytesIO(PNG))
    got = _by_ref(list(iter_items([str(path)], ScanLimits())))
    said = _error(got[f"{path}!a.png"])
    assert "pax header declares its size as 'abc'" in said, got
    stop = _error(got[str(path)])
    assert "not a whole number of bytes" in stop and "not scanned" in stop, stop


def test_a_zip_whose_directory_points_past_its_end_is_said_in_words(tmp_path: Path) -> None:
    """The end record puts the central directory 1,000 bytes past the file's end, so
    zipfile shifts every entry's offset by as much (the first below 0). Before, such an
    entry's row said "cannot read the entry: [Errno 22] Invalid argument" (from a file;
    "negative seek value -1073" from memory); now what is wrong, in words."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.png", PNG)
        z.writestr("b.png", PNG)
    raw = bytearray(buf.getvalue())
    end = raw.rfind(b"PK\x05\x06")
    raw[end + 16 : end + 20] = (len(raw) + 1000).to_bytes(4, "little")
    path = tmp_path / "x.zip"
    path.write_bytes(bytes(raw))
    got = _by_ref(list(iter_items([str(path)], ScanLimits())))
    assert sorted(got) == [f"{path}!a.png", f"{path}!b.png"], got
    first = _error(got[f"{path}!a.png"])
    assert "local header lies before the start of the archive" in first, first
    # b.png's offset, shifted as much, lands inside a.png's data: zipfile's own words
    assert "Bad magic number for file header" in _error(got[f"{path}!b.png"]), got
    assert not any("Errno" in _error(i) or "Invalid argument" in _error(i) for i in got.values())


@pytest.mark.parametrize("damage", ["checksum", "cut in a header"])
@pytest.mark.parametrize("compress", ["", "gz"])
def test_a_tar_damaged_after_its_first_member_says_so(
    tmp_path: Path, damage: str, compress: str
) -> None:
    """The second of three members' header has a wrong checksum, or the file ends 100
    bytes into it. Before, Python's tarfile took either for the archive's end: the first
    member was scanned and the other two vanished without a row."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name in ("a.png", "b.png", "c.png"):
            info = tarfile.TarInfo(name)
            info.size = len(PNG)
            t.addfile(info, io.BytesIO(PNG))
    raw = bytearray(buf.getvalue())
    second = 512 + -(-len(PNG) // 512) * 512  # the header after a.png's data blocks
    if damage == "checksum":
        raw[second + 148 : second + 154] = b"000000"
    else:
        raw = raw[: second + 100]
    path = tmp_path / ("x.tar" + (f".{compress}" if compress else ""))
    path.write_bytes(gzip.compress(bytes(raw)) if compress else bytes(raw))
    got = _by_ref(list(iter_items([str(path)], ScanLimits())))
    assert _data(got[f"{path}!a.png"]) == PNG
    stop = _error(got[str(path)])
    # one member is "1 member" (before: "after 1 members")
    assert stop.startswith("truncated or corrupt tar archive after 1 member:"), stop
    assert sorted(got) == [str(path), f"{path}!a.png"], got


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_folders_list_files_links_sidecars_duplicates_and_skip(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(JPEG)
    (root / "a.jpg.prov").write_text("{}")
    (root / "sub" / "b.png").write_bytes(PNG)
    (root / "link.jpg").symlink_to(root / "a.jpg")
    (root / "linkdir").symlink_to(root / "sub")
    big = os.urandom((1 << 20) + 10)
    with zipfile.ZipFile(root / "pack.zip", "w") as z:
        z.writestr("same.txt", b"one")
        z.writestr("same.txt", b"two")
        z.writestr("big.bin", big)
    (root / "pack.zip.txt").write_bytes(b"not a list inside a folder")
    listing = tmp_path / "paths.txt"
    listing.write_text("# archive desk\nphotos\n\nmissing.jpg\nphotos/sub/b.png\n")
    got = list(iter_items([str(listing)], ScanLimits()))
    refs = [i.ref for i in got]
    p = str(root)
    assert refs == [
        f"{p}/a.jpg",
        f"{p}/a.jpg.prov",
        f"{p}/link.jpg",
        f"{p}/linkdir",
        f"{p}/pack.zip!same.txt",
        f"{p}/pack.zip!same.txt #2",
        f"{p}/pack.zip!big.bin",
        f"{p}/pack.zip.txt",
        f"{p}/sub/b.png",
        f"{tmp_path}/missing.jpg",
        f"{p}/sub/b.png",
    ]
    by = {i.ref: i for i in got}
    a = by[f"{p}/a.jpg"]
    assert isinstance(a, FileItem) and a.sidecar == f"{p}/a.jpg.prov" and a.size == len(JPEG)
    assert _error(by[f"{p}/link.jpg"]) == "symbolic link: not followed"
    assert _error(by[f"{p}/linkdir"]) == "symbolic link: not followed"
    assert _error(by[f"{tmp_path}/missing.jpg"]).startswith("cannot open")
    assert [_data(by[f"{p}/pack.zip!same.txt"]), _data(by[f"{p}/pack.zip!same.txt #2"])] == [
        b"one",
        b"two",
    ]
    hashed = by[f"{p}/pack.zip!big.bin"]
    assert isinstance(hashed, HashedItem)
    assert (hashed.sha256, hashed.size, hashed.archive) == (
        hashlib.sha256(big).digest(),
        len(big),
        f"{p}/pack.zip",
    )

    skipped = [
        i.ref for i in iter_items([p], ScanLimits(), skip=lambda r: r.endswith((".jpg", ".txt")))
    ]
    assert skipped == [
        f"{p}/a.jpg.prov",
        f"{p}/link.jpg",
        f"{p}/linkdir",
        f"{p}/pack.zip!same.txt #2",
        f"{p}/pack.zip!big.bin",
        f"{p}/sub/b.png",
    ]


def test_entries_whose_names_look_numbered_keep_a_ref_each(tmp_path: Path) -> None:
    """A zip holding `a.txt` twice and an entry literally named `a.txt #2` (in either
    order) gives each of its three files its own ref, so none loses its row."""
    for names in (["a.txt", "a.txt", "a.txt #2"], ["a.txt #2", "a.txt", "a.txt"]):
        path = tmp_path / f"{uuid.uuid4().hex}.zip"
        with zipfile.ZipFile(path, "w") as z, pytest.warns(UserWarning, match="Duplicate"):
            for i, name in enumerate(names):
                z.writestr(name, f"file {i}".encode())
        got = list(iter_items([str(path)], ScanLimits()))
        refs = [i.ref for i in got]
        assert len(set(refs)) == 3, refs
        data = sorted(_data(i) for i in got)
        assert data == [b"file 0", b"file 1", b"file 2"]


#: Levels of the deep folder (`deep_folder`): past Python's recursion limit.
DEEP = sys.getrecursionlimit() + 200


@pytest.fixture
def deep_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder holding ``0.jpg``, ``b.jpg`` and a chain of DEEP folders ``a`` with
    ``leaf.jpg`` at its bottom; removed after the test, passed or failed, from folder
    descriptors (`tests.deep_tree.remove_tree`): left behind, it made pytest's clean-up of
    old runs' folders fail (shutil.rmtree: RecursionError) on every later run."""
    root = tmp_path / "d"
    root.mkdir()
    try:
        make_chain(root, DEEP)
        (root / ("a/" * DEEP + "leaf.jpg")).write_bytes(JPEG)
        (root / "b.jpg").write_bytes(JPEG)
        (root / "0.jpg").write_bytes(JPEG)
        yield root
    finally:
        remove_tree(root)


def test_folders_nested_deeper_than_pythons_recursion_limit_are_walked(deep_folder: Path) -> None:
    """A folder 1,200 levels deep (an archive's disk can hold one; its path is still
    under PATH_MAX) is walked to its bottom, in the same order as a shallow one: before,
    each level was one more nested generator and the walk died of RecursionError, the
    scan with a traceback and no row at all."""
    refs = [i.ref for i in iter_items([str(deep_folder)], ScanLimits())]
    root = deep_folder
    assert refs == [f"{root}/0.jpg", f"{root}/{'a/' * DEEP}leaf.jpg", f"{root}/b.jpg"]


#: Walks the PATH argument argv[1] traced (`tests.memory`), the items dropped as they
#: come; tells how many came and the peak of memory in bytes.
_WALK_PEAK = """
from clients.scan.sources import ScanLimits, iter_items
count, _, peak = traced(lambda: sum(1 for _ in iter_items([sys.argv[1]], ScanLimits())))
tell(count, peak)
"""


def _walk_peak(path: Path) -> tuple[int, int]:
    """(items, peak bytes) of walking ``path`` as a scan's PATH argument, measured in a
    child process (`tests.memory`: tracemalloc counts every thread's allocations) and
    named relative to its working folder, ``path``'s own: the items hold their paths, so
    a longer tmp_path would measure more."""
    (count, peak), _ = traced_in_child(_WALK_PEAK, [path.name], path.parent)
    return count, peak


def test_a_large_folder_walk_frees_each_entry_once_yielded(tmp_path: Path) -> None:
    """Walking a folder of 20,000 files holds its sorted listing (names and types), not
    every entry's `stat` result until the folder ends: before, each `os.DirEntry` kept the
    `stat_result` cached by `DirEntry.stat` alive with the listing (tracemalloc's peak:
    980 bytes a file here, 970 at 10^5 files), now about 280. Measured in a child
    process: tracemalloc counts every thread's allocations. The folder is named
    relative to the child's working folder, since the listing holds each path: a tmp_path
    60 characters longer measured 56 bytes a file more."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(20_000):
        (folder / f"f{i:05d}.txt").write_bytes(b"x")
    count, peak = _walk_peak(folder)
    assert count == 20_000
    assert peak < 400 * 20_000, peak


def test_a_list_file_names_files_from_its_own_folder(tmp_path: Path) -> None:
    """A list file (.txt, .lst, .list) names a file a line, relative to the list's folder;
    blank lines and ``#`` comments are skipped, a line's surrounding blanks and its CR
    (a list written on Windows) dropped; a list named in a list is a file, not read as a
    list."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    (tmp_path / "b.jpg").write_bytes(JPEG)
    (tmp_path / "inner.txt").write_text("a.jpg\n")
    (tmp_path / "names.lst").write_bytes(
        b"a.jpg\r\n# a comment\n\n  b.jpg \nmissing.jpg\ninner.txt"
    )
    got = list(iter_items([str(tmp_path / "names.lst")], ScanLimits()))
    assert [(type(i).__name__, i.ref) for i in got] == [
        ("FileItem", f"{tmp_path}/a.jpg"),
        ("FileItem", f"{tmp_path}/b.jpg"),
        ("RefusedItem", f"{tmp_path}/missing.jpg"),
        ("FileItem", f"{tmp_path}/inner.txt"),
    ]


@pytest.mark.parametrize(
    "encoding", ["utf-8-sig", "utf-16"], ids=["UTF-8 with a BOM", "UTF-16 with a BOM"]
)
def test_a_list_file_with_a_byte_order_mark_names_its_files(tmp_path: Path, encoding: str) -> None:
    """A list saved by Windows tools: Notepad's "UTF-8 with BOM", PowerShell 5's
    ``Get-ChildItem -Name > list.txt`` (UTF-16 LE with a BOM). Before, the first name kept
    the BOM (U+FEFF) and was refused, "cannot open: No such file or directory", for a file
    that is there, and each line of a UTF-16 list was skipped as holding a NUL byte."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    (tmp_path / "b.jpg").write_bytes(JPEG)
    listed = tmp_path / "names.txt"
    listed.write_bytes("a.jpg\r\nb.jpg\r\n".encode(encoding))
    got = list(iter_items([str(listed)], ScanLimits()))
    assert [(type(i).__name__, i.ref) for i in got] == [
        ("FileItem", f"{tmp_path}/a.jpg"),
        ("FileItem", f"{tmp_path}/b.jpg"),
    ]


def test_a_listed_file_that_cannot_be_opened_names_its_list_and_line(tmp_path: Path) -> None:
    """`prov scan notes.txt` reads notes.txt as a list file (one path a line): a line
    naming no file there is refused naming the list and the line. Before, the row said
    "cannot open: No such file or directory" for a path the user never typed (a note's
    first line), with no word of the list it came from (a newcomer's finding)."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    listed = tmp_path / "notes.txt"
    listed.write_text("a.jpg\nhello world\n")
    got = list(iter_items([str(listed)], ScanLimits()))
    assert [(type(i).__name__, i.ref) for i in got] == [
        ("FileItem", f"{tmp_path}/a.jpg"),
        ("RefusedItem", f"{tmp_path}/hello world"),
    ]
    refused = got[1]
    assert isinstance(refused, RefusedItem)
    assert refused.error == (
        f"cannot open: No such file or directory (named on line 2 of the list file {listed}:"
        " a PATH ending in .txt, .lst or .list is read as a list of paths, one a line)"
    ), refused.error


def test_list_lines_that_name_no_file_are_one_row_of_the_list(tmp_path: Path) -> None:
    """A line longer than MAX_LIST_LINE characters (no file name is) or holding a NUL
    byte (none holds one) is skipped, the lines after it read, and the list file gets one
    row naming those lines. Before, a long line became a row whose ref was the whole
    line ("cannot open: File name too long"), and a NUL ended the scan in a traceback
    (ValueError: embedded null byte)."""
    (tmp_path / "a.jpg").write_bytes(JPEG)
    (tmp_path / "b.jpg").write_bytes(JPEG)
    long = "x" * (MAX_LIST_LINE + 1)
    lines = ["a.jpg", long, "c\0.jpg", "b.jpg", long * 3]  # the last without a newline
    listed = tmp_path / "names.txt"
    listed.write_text("\n".join(lines))
    got = list(iter_items([str(listed)], ScanLimits()))
    assert [i.ref for i in got] == [f"{tmp_path}/a.jpg", f"{tmp_path}/b.jpg", str(listed)]
    last = got[-1]
    assert isinstance(last, RefusedItem), last
    assert last.error == (
        "3 lines of the list file name no file and were skipped: line 2 (longer than"
        f" {MAX_LIST_LINE:,} characters), line 3 (holds a NUL byte), line 5 (longer than"
        f" {MAX_LIST_LINE:,} characters)"
    ), last.error


@pytest.mark.parametrize("shape", ["200,000 names", "one line of 32 MiB"])
def test_a_list_file_is_read_a_line_at_a_time(tmp_path: Path, shape: str) -> None:
    """A list file is read as the scan goes, a line of at most MAX_LIST_LINE characters
    at a time: memory does not grow with the list. Before, the whole list was read into
    a list of lines first (a list of 10^7 names cost about 1 GB before the first file),
    and a single line of any length was held whole, several times over. Measured in a
    child process on a relative name (as the folder walk's test: tracemalloc counts every
    thread)."""
    listed = tmp_path / "names.txt"
    with listed.open("w") as f:
        if shape == "200,000 names":
            f.writelines(f"missing/{i:07d}.jpg\n" for i in range(200_000))
        else:
            f.write("x" * (32 << 20))
    count, peak = _walk_peak(listed)
    assert count == (200_000 if shape == "200,000 names" else 1)
    assert peak < 2 << 20, f"{peak:,} bytes at the peak"


def _empty_tar() -> bytes:
    """What `tarfile` (and GNU tar) write for an archive of no members: 10,240 zeros."""
    buf = io.BytesIO()
    tarfile.open(fileobj=buf, mode="w").close()
    assert buf.getvalue() == bytes(10240)
    return buf.getvalue()


def test_an_all_zero_tar_is_an_empty_archive(tmp_path: Path) -> None:
    """A .tar of zeros is a tar of no members (`tarfile` reads it so): like an empty zip,
    it gives no row, on disk, as a PATH and inside another tar. Before, it was scanned as
    a file of an unrecognised format. A .tar whose first block is zeros but whose later
    bytes are not, or an all-zero file of another name, is still a file."""
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "empty.tar").write_bytes(_empty_tar())
    (folder / "zeros.bin").write_bytes(_empty_tar())
    (folder / "wiped.tar").write_bytes(bytes(512) + b"x" * 600)
    outer = folder / "outer.tar"
    with tarfile.open(outer, "w") as t:
        for name, data in (("in.tar", _empty_tar()), ("in-wiped.tar", bytes(512) + b"y")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    got = _by_ref(list(iter_items([str(folder)], ScanLimits())))
    assert sorted(got) == sorted(
        [f"{folder}/zeros.bin", f"{folder}/wiped.tar", f"{outer}!in-wiped.tar"]
    ), got
    assert _data(got[f"{outer}!in-wiped.tar"]) == bytes(512) + b"y"
    assert list(iter_items([str(folder / "empty.tar")], ScanLimits())) == []


def _zip_of_many_headers(path: Path, count: int) -> None:
    """A zip of one stored entry whose central directory lists it ``count`` times under
    other names: 57 bytes of directory an entry, the cheapest way to make Python's zipfile
    build ``count`` ZipInfo objects (about 750 bytes each) when the archive is opened."""
    data = b"x"
    crc = zlib.crc32(data)
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, 1, 1, 5, 0)
    local += b"a.jpg" + data
    directory = bytearray()
    for k in range(count):
        name = b"%07d.jpg" % k
        directory += struct.pack(
            "<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, 1, 1, len(name), 0, 0, 0, 0, 0, 0
        )
        directory += name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, count, count, len(directory), len(local), 0)
    path.write_bytes(local + bytes(directory) + end)


def test_a_zip_listing_more_entries_than_the_limit_is_refused_before_it_is_opened(
    tmp_path: Path,
) -> None:
    # h-media50: zipfile reads the whole central directory when the archive is opened, so
    # max_entries applied only after every entry's ZipInfo was built: a 114 MB zip listing
    # 2 million entries (all naming one local header) took 1.5 GB and 44 s to walk, and
    # its first million entries were each a row before the limit stopped it
    many = tmp_path / "many.zip"
    _zip_of_many_headers(many, 2_000)
    items = list(iter_items([str(many)], ScanLimits(max_entries=1_000)))
    assert [i.ref for i in items] == [str(many)]
    said = _error(items[0])
    assert "more than 1,000 entries" in said and "not scanned" in said, said
    # at the limit, every entry is walked (each sharing one local header: refused, a row each)
    _zip_of_many_headers(many, 1_000)
    items = list(iter_items([str(many)], ScanLimits(max_entries=1_000)))
    assert len(items) == 1_000 and all(i.ref != str(many) for i in items)


def test_a_zip_whose_entry_comments_hold_the_directory_signature_is_not_refused(
    tmp_path: Path,
) -> None:
    # h-revmedia50: the count before opening counted the 4 signature bytes wherever they
    # stood in the directory, so 5 entries whose comments hold them 50 times each were
    # "more than 10 entries" and the whole zip was refused; the headers are walked by
    # their lengths, as zipfile walks them, when the quick count is over the limit
    made = io.BytesIO()
    with zipfile.ZipFile(made, "w") as z:
        for k in range(5):
            info = zipfile.ZipInfo(f"c{k}.txt")
            info.comment = b"PK\x01\x02" * 50
            z.writestr(info, b"x")
    path = tmp_path / "commented.zip"
    path.write_bytes(made.getvalue())
    items = list(iter_items([str(path)], ScanLimits(max_entries=10)))
    assert [i.ref for i in items] == [f"{path}!c{k}.txt" for k in range(5)]
    items = list(iter_items([str(path)], ScanLimits(max_entries=4)))
    assert [i.ref for i in items] == [str(path)] and "more than 4 entries" in _error(items[0])


def test_a_tar_of_many_tiny_members_does_not_keep_every_header(tmp_path: Path) -> None:
    """A tar's members are read as a stream, and each header is forgotten once handled
    (review hostile51): `tarfile` kept every one (TarFile.members) as it read, so memory
    grew by about 600 bytes a member up to max_entries, a million: 590 MiB of headers for
    a 512 MB tar of empty members (maxrss 662 MiB, now 162: what is left is each name,
    kept to tell apart entries of one name). 40,000 here: 26.9 MB before, 4.5 now.
    Measured in a child process (`_walk_peak`)."""
    archive = tmp_path / "many.tar"
    n = 40_000
    with archive.open("wb") as f:
        for k in range(n):
            info = tarfile.TarInfo(f"m/{k:07d}.jpg")
            f.write(info.tobuf(format=tarfile.USTAR_FORMAT))
        f.write(bytes(10240))
    count, peak = _walk_peak(archive)
    assert count == n
    assert peak < 12 << 20, f"{peak:,} bytes to read {n:,} empty members"


def test_zip_utf8_name_without_the_flag_is_read_as_utf8(tmp_path: Path) -> None:
    """A zip entry name stored as UTF-8 bytes without the zip's UTF-8 flag (bit 11), as
    Info-ZIP's `zip` writes on Linux, is read as UTF-8: before, Python's cp437 default
    made `my cat é.png` the row `my cat ├⌐.png`. A name whose bytes are not UTF-8 keeps
    the cp437 reading (an old DOS or Windows zip), and a flagged name stays as it was."""
    archive = tmp_path / "desk.zip"
    with zipfile.ZipFile(archive, "w") as z:  # zipfile flags a non-ASCII name: write X's
        z.writestr("X" * len("my cat é.png".encode()), PNG)
        z.writestr("Y" * 6, JPEG)
        z.writestr("flagged ü.jpg", JPEG + b"\0")
    data = archive.read_bytes()
    data = data.replace(b"X" * len("my cat é.png".encode()), "my cat é.png".encode())
    data = data.replace(b"Y" * 6, b"caf\x82.j")  # cp437 0x82 is é; not UTF-8
    archive.write_bytes(data)
    got = _by_ref(list(iter_items([str(archive)], ScanLimits())))
    a = str(archive)
    assert sorted(got) == sorted([f"{a}!my cat é.png", f"{a}!café.j", f"{a}!flagged ü.jpg"])
    assert _data(got[f"{a}!my cat é.png"]) == PNG
    assert _data(got[f"{a}!café.j"]) == JPEG


def test_a_tar_bz2_bomb_is_decompressed_a_block_at_a_time(tmp_path: Path) -> None:
    """A .tar.bz2 of a few hundred bytes that holds 128 MiB of zeros is stopped by the
    ratio limit having decompressed about a block of it: `tarfile`'s stream reader hands
    each 10 KiB of compressed bytes to the decompressor with no cap on what comes out,
    and bzip2 turns 200 bytes into 128 MiB in that one call (a 3 KB file into 4 GiB:
    maxrss 1.9 GiB and 34 s before its first member was read). Measured in a child
    process (`_walk_peak`)."""
    header = tarfile.TarInfo("zeros.bin")
    header.size = 128 << 20
    c = bz2.BZ2Compressor(9)
    parts = [c.compress(header.tobuf(format=tarfile.USTAR_FORMAT))]
    block = bytes(16 << 20)
    parts += [c.compress(block) for _ in range(header.size // len(block))]
    archive = tmp_path / "bomb.tar.bz2"
    archive.write_bytes(b"".join([*parts, c.compress(bytes(1024)), c.flush()]))
    assert archive.stat().st_size < 4096
    count, peak = _walk_peak(archive)
    assert count == 1  # the archive's own row: a compression bomb
    assert peak < 48 << 20, f"{peak:,} bytes traced to walk a {archive.stat().st_size}-byte bomb"
    (item,) = iter_items([str(archive)], ScanLimits())
    assert isinstance(item, RefusedItem) and "decompression ratio over 100:1" in item.error


def _zip_of_one_entry(name: bytes, method: int, data: bytes, size: int, crc: int) -> bytes:
    """A zip of one entry ``name`` whose compressed bytes are ``data`` (compression
    ``method``), its headers declaring ``size`` uncompressed bytes and CRC-32 ``crc``."""
    fields = (method, 0, 0, crc, len(data), size, len(name), 0)
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 46, 0, *fields) + name
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 46, 46, 0, *fields, 0, 0, 0, 0, 0)
    central += name
    end = struct.pack(
        "<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0
    )
    return local + data + central + end


def test_a_bzip2_zip_entry_that_lies_about_its_size_is_decompressed_a_block_at_a_time(
    tmp_path: Path,
) -> None:
    """A zip entry compressed with bzip2 (method 12) whose 200 bytes hold 128 MiB of
    zeros, its headers declaring 100 bytes (so its declared ratio is no bomb's), is read
    decompressing about a block at a time: Python's `zipfile` hands each read's
    compressed bytes to a bzip2 or LZMA decompressor with no cap on what comes out (a
    3 KB entry of 4 GiB: maxrss 4.2 GiB, 22 s). Entries of both methods that tell the
    truth still read whole. Measured in a child process (`_walk_peak`)."""
    c = bz2.BZ2Compressor(9)
    block = bytes(16 << 20)
    data = b"".join([*(c.compress(block) for _ in range(8)), c.flush()])
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip_of_one_entry(b"x.bin", zipfile.ZIP_BZIP2, data, 100, 0))
    count, peak = _walk_peak(bomb)
    assert count == 1
    assert peak < 48 << 20, f"{peak:,} bytes traced to walk a {len(data)}-byte entry"
    (item,) = iter_items([str(bomb)], ScanLimits())
    assert "Bad CRC-32" in _error(item), item
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("a.png", PNG * 3, compress_type=zipfile.ZIP_BZIP2)
        z.writestr("b.png", PNG * 3, compress_type=zipfile.ZIP_LZMA)
        z.writestr("c.bin", os.urandom(3 << 20), compress_type=zipfile.ZIP_LZMA)
    got = _by_ref(list(iter_items([str(good)], ScanLimits())))
    assert _data(got[f"{good}!a.png"]) == PNG * 3 and _data(got[f"{good}!b.png"]) == PNG * 3
    assert isinstance(got[f"{good}!c.bin"], HashedItem)


def test_a_tar_gz_with_junk_after_its_gzip_stream_keeps_its_members(tmp_path: Path) -> None:
    """Bytes after a .tar.gz's gzip stream that are no gzip member (gzip(1) and GNU tar
    warn of them and go on) end the stream: the members before them are scanned, where a
    tar with no padding to a 10 KiB record (Go's archive/tar writes none) read through
    `gzip.GzipFile` lost them to one row "Not a gzipped file"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("a.png")
        info.size = len(PNG)
        t.addfile(info, io.BytesIO(PNG))
    tar = buf.getvalue()
    unpadded = tar[: 512 + -(-len(PNG) // 512) * 512 + 1024]
    path = tmp_path / "x.tar.gz"
    path.write_bytes(gzip.compress(unpadded) + b"JUNK" * 100)
    items = list(iter_items([str(path)], ScanLimits()))
    assert [i.ref for i in items] == [f"{path}!a.png"], items
    assert _data(items[0]) == PNG


def _one_member_tar(data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        info = tarfile.TarInfo("photo.jpg")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_a_compressed_tar_whose_checksum_fails_has_a_row_that_says_so(tmp_path: Path) -> None:
    """A .tar.gz, .tar.bz2 or .tar.xz whose compressed stream, read on past the tar's end,
    fails its checksum or is cut short has a row of the archive's own saying its
    members' hashes may be of damaged bytes (`gzip -t` fails on it too); 64 bytes zeroed
    in a stored gzip block decode with no error, and only the trailing CRC-32 finds
    them."""
    data = os.urandom(200_000)
    tar = _one_member_tar(data)
    gz = bytearray(gzip.compress(tar, compresslevel=0, mtime=0))
    at = gz.index(data[100_000:100_032])
    gz[at : at + 64] = bytes(64)
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(gz)
    items = list(iter_items([str(bad)], ScanLimits()))
    assert [i.ref for i in items] == [f"{bad}!photo.jpg", str(bad)], items
    why = _error(items[1])
    assert "checksum" in why and "may be of damaged bytes" in why and "gzip -t" in why, why
    cut = tmp_path / "cut.tar.xz"  # its end (xz's index and stream footer) missing
    cut.write_bytes(lzma.compress(tar)[:-8])
    items = list(iter_items([str(cut)], ScanLimits()))
    assert [i.ref for i in items] == [f"{cut}!photo.jpg", str(cut)], items
    assert "ends early" in _error(items[1]) and "xz -t" in _error(items[1]), items
    good = tmp_path / "good.tar.bz2"
    good.write_bytes(bz2.compress(tar) + b"JUNK" * 10)  # bzip2(1) ignores trailing junk too
    items = list(iter_items([str(good)], ScanLimits()))
    assert [i.ref for i in items] == [f"{good}!photo.jpg"], items
    assert _data(items[0]) == data


def test_a_tar_bz2_of_identical_4_kib_headers_is_stopped_as_a_bomb(tmp_path: Path) -> None:
    """Headers within the allowance a member are free of the ratio only up to
    `ScanLimits.tar_header_ratio` times the compressed bytes: 20,000 members each of
    4 KiB of identical pax headers (80 MiB) bzip2-compress to about 1 KB, so are stopped
    as a bomb, where an honest archive's headers compress a few hundred to one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("a.png")
        info.pax_headers = {"comment": "a" * 3058}
        t.addfile(info, io.BytesIO(b""))
    one = buf.getvalue()[:4096]
    path = tmp_path / "bomb.tar.bz2"
    path.write_bytes(bz2.compress(one * 20_000 + bytes(1024)))
    items = list(iter_items([str(path)], ScanLimits()))
    assert "decompression ratio over 100:1" in _error(items[-1]), items[-1]
    assert len(items) < 10_000, len(items)


def test_an_lzma_zip_entry_of_no_bytes_is_an_empty_entry(tmp_path: Path) -> None:
    """An LZMA entry (method 14) of no compressed bytes declaring 0 bytes is empty, as
    `zipfile` reads it; declaring 5 (and the CRC-32 of 5 bytes), it is cut short."""
    for size, crc in ((0, 0), (5, zlib.crc32(b"hello"))):
        path = tmp_path / f"{size}.zip"
        path.write_bytes(_zip_of_one_entry(b"x.bin", zipfile.ZIP_LZMA, b"", size, crc))
        (item,) = iter_items([str(path)], ScanLimits())
        if size:
            assert "Bad CRC-32" in _error(item), item
        else:
            assert _data(item) == b"", item


def _tar_bz2(path: Path, *parts: bytes) -> None:
    """Write ``parts`` (tar bytes: headers, data) then the end-of-archive blocks to
    ``path``, bzip2-compressed."""
    c = bz2.BZ2Compressor(9)
    path.write_bytes(
        b"".join([*(c.compress(p) for p in parts), c.compress(bytes(1024)), c.flush()])
    )


def _header(name: str, kind: bytes, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def _member(name: str, data: bytes) -> bytes:
    return _header(name, tarfile.REGTYPE, len(data)) + data + bytes(-len(data) % 512)


@pytest.mark.parametrize(
    "kind", [tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK]
)
def test_a_tar_header_over_a_mib_stops_the_archive_before_it_is_read(
    tmp_path: Path, kind: bytes
) -> None:
    """A pax header or a GNU long name declaring more than 1 MiB (`MAX_TAR_HEADER_BYTES`,
    Go's and libarchive's bound too) stops the archive before its bytes are read:
    `tarfile` reads it whole in one read, so an 843-byte .tar.bz2 declaring a 1 GiB pax
    header of zeros took 2.2 GiB of memory. The member before it is kept."""
    path = tmp_path / "big-header.tar.bz2"
    big = 4 << 20
    _tar_bz2(path, _member("a.png", PNG), _header("h", kind, big), bytes(big), _member("b", b"x"))
    count, peak = _walk_peak(path)
    assert count == 2
    assert peak < 3 << 20, f"{peak:,} bytes traced"
    items = list(iter_items([str(path)], ScanLimits()))
    assert _data(items[0]) == PNG
    error = _error(items[1])
    assert "take more than 1,048,576 bytes" in error and "corrupt or hostile" in error, error


def test_a_sparse_map_over_a_mib_stops_the_archive(tmp_path: Path) -> None:
    """An old GNU sparse member whose extension blocks go on past 1 MiB (each 512-byte
    block 21 map entries, each entry a tuple in `tarfile`'s list: an 11 KB .tar.bz2 of
    256 MiB of them took 0.9 GiB) stops the archive once its headers pass 1 MiB; so does
    a GNU sparse 1.0 map (in the member's data: a line a number) past 1 MiB."""
    head = bytearray(_header("s", tarfile.GNUTYPE_SPARSE, 0))
    head[482] = 1  # isextended
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    block = (b"%011o\0" % 1) * 42 + bytes(504 - 21 * 24) + b"\x01" + bytes(7)
    old = tmp_path / "old-sparse.tar.bz2"
    _tar_bz2(old, bytes(head), block * 8192)  # 4 MiB of extension blocks
    pax = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "1"}
    info = tarfile.TarInfo("s")
    info.size = 4 << 20
    info.pax_headers = pax
    new = tmp_path / "sparse-1.0.tar.bz2"
    _tar_bz2(new, info.tobuf(format=tarfile.PAX_FORMAT), b"9999999\n" + b"1\n" * (2 << 20))
    for path in (old, new):
        count, peak = _walk_peak(path)
        assert count == 1
        assert peak < 8 << 20, f"{path.name}: {peak:,} bytes traced"
        (item,) = iter_items([str(path)], ScanLimits())
        assert "take more than 1,048,576 bytes" in _error(item), item


def test_global_pax_headers_over_a_mib_in_all_stop_the_archive(tmp_path: Path) -> None:
    """Global pax headers add to one dict kept for the whole archive: past 1 MiB in all
    they stop it, however small each is."""
    path = tmp_path / "globals.tar.bz2"
    parts = []
    for i in range(5):
        records = b"".join(b"%d k%d.%07d=\n" % (14 + len(str(i)), i, j) for j in range(20_000))
        glob = tarfile.TarInfo("g")
        glob.type = tarfile.XGLTYPE
        glob.size = len(records)
        parts += [glob.tobuf(format=tarfile.GNU_FORMAT), records + bytes(-len(records) % 512)]
        parts.append(_member(f"m{i}", b"x"))
    _tar_bz2(path, *parts)
    items = list(iter_items([str(path)], ScanLimits()))
    assert [i.ref for i in items[:-1]] == [f"{path}!m0", f"{path}!m1", f"{path}!m2"], items
    assert "global pax headers take more than 1,048,576 bytes in all" in _error(items[-1])


def test_a_tar_member_of_an_unknown_type_is_read_through_checking_the_ratio(
    tmp_path: Path,
) -> None:
    """A member of a type tarfile does not know (``Z``) is data it skips by seeking, which
    in a compressed stream decompresses it all, no limit checked: a 6 KB .tar.bz2 of one
    such member of 8 GiB of zeros took 103 s. It is read through here, checked as it
    goes: the ratio limit stops it."""
    path = tmp_path / "unknown.tar.bz2"
    c = bz2.BZ2Compressor(9)
    size = 64 << 20
    parts = [c.compress(_header("u", b"Z", size))]
    parts += [c.compress(bytes(16 << 20)) for _ in range(size >> 24)]
    path.write_bytes(b"".join([*parts, c.compress(bytes(1024)), c.flush()]))
    items = list(iter_items([str(path)], ScanLimits()))
    assert [i.ref for i in items] == [f"{path}!u", str(path)], items
    assert _error(items[0]) == "a member of an unknown type ('Z'): not scanned"
    assert "decompression ratio over 100:1" in _error(items[1])


def _tar_of(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar (no compression) of regular files (name, data), written by `tarfile`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gz": gzip.compress,
    "bz2": bz2.compress,
    "xz": lzma.compress,
}


@pytest.mark.parametrize("names", ["notes/n{k:05d}.txt", "notes/café/ñ{k:05d}.txt"])
@pytest.mark.parametrize("compress", ["gz", "bz2", "xz"])
def test_a_compressed_tar_of_many_tiny_files_is_no_bomb(
    tmp_path: Path, compress: str, names: str
) -> None:
    """An honest archive of many small files, as Python's `tarfile` writes it: each
    member is a 512-byte header and a few bytes padded to 512 (names that are not ASCII
    add a pax header: 2 KiB a member), mostly zeros, so the stream decompresses to
    130-530 times the file. Counted as data, those headers and padding would stop a
    .tar.gz of 10^5 notes after 16,384 members as "a compression bomb?"; the ratio counts
    members' data and, apart, headers past 4 KiB a member. 3,000 members here, the ratio
    checked from 1 MiB (16 MiB by default)."""
    n = 3_000
    members = [(names.format(k=k), b"note %d\n" % k) for k in range(n)]
    raw = _tar_of(members)
    path = tmp_path / f"notes.tar.{compress}"
    path.write_bytes(_COMPRESS[compress](raw))
    assert len(raw) > 100 * path.stat().st_size  # what the limit looked at before
    items = list(iter_items([str(path)], ScanLimits(ratio_min_bytes=1 << 20)))
    assert [i.ref for i in items] == [f"{path}!{name}" for name, _ in members], items[-1]
    assert [_data(i) for i in items] == [data for _, data in members]


def test_tar_headers_past_their_allowance_count_toward_the_ratio(tmp_path: Path) -> None:
    """Headers are free of the ratio up to 4 KiB a member, not beyond: folders whose pax
    headers hold 12 KiB each (a comment record, compressing to nothing) are stopped by
    the ratio though no member holds a byte of data; with the allowance raised past
    them they are read to the end (no row: folders)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for k in range(400):
            info = tarfile.TarInfo(f"d{k:04d}")
            info.type = tarfile.DIRTYPE
            info.pax_headers = {"comment": "x" * (12 << 10)}
            t.addfile(info)
    path = tmp_path / "headers.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    (item,) = iter_items([str(path)], ScanLimits(ratio_min_bytes=1 << 20))
    assert item.ref == str(path)
    assert "decompression ratio over 100:1" in _error(item)
    lim = ScanLimits(ratio_min_bytes=1 << 20, tar_header_allowance=16 << 10)
    assert list(iter_items([str(path)], lim)) == []


def test_a_bomb_of_big_tar_headers_is_stopped_early_in_little_memory(tmp_path: Path) -> None:
    """A .tar.bz2 of 47 KB whose 2,000 members each carry 960 KiB of pax headers (just
    under `MAX_TAR_HEADER_BYTES`): 1.9 GB of headers, counted past the allowance, so the
    ratio stops it once past 16 MiB, having read about 18 members. The file is 200 bzip2
    streams of 10 members each, one after another (`bz2.BZ2File` reads them as one).
    Measured in a child process (`_walk_peak`)."""
    info = tarfile.TarInfo("h")
    info.type = tarfile.DIRTYPE
    info.pax_headers = {"comment": "x" * (960 << 10)}
    ten = bz2.compress(info.tobuf(format=tarfile.PAX_FORMAT) * 10)
    path = tmp_path / "headers.tar.bz2"
    path.write_bytes(ten * 200 + bz2.compress(bytes(1024)))
    assert path.stat().st_size < 64 << 10
    count, peak = _walk_peak(path)
    assert count == 1
    assert peak < 8 << 20, f"{peak:,} bytes traced"
    (item,) = iter_items([str(path)], ScanLimits())
    assert "decompression ratio over 100:1" in _error(item), item


_RATIO_STOP = re.compile(
    r"decompression ratio over 100:1 \(\d{1,3}(,\d{3})* bytes out of \d{1,3}(,\d{3})*"
    r" compressed\): a compression bomb\? the rest of the archive was not scanned"
)


def test_the_ratio_limit_is_worded_alike_for_a_tar_stream_and_a_zip(tmp_path: Path) -> None:
    """A compressed tar stopped by its stream's ratio and a zip stopped by the bytes its
    entries produced say so in the same words and number format, thousands separated."""
    tar = tmp_path / "bomb.tar.gz"
    tar.write_bytes(gzip.compress(_tar_of([("zeros.bin", bytes(4 << 20))])))
    zipped = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as z:
        for k in range(4):
            z.writestr(f"z{k}.bin", bytes(1 << 20))
    lim = ScanLimits(ratio_min_bytes=1 << 20)
    for path in (tar, zipped):
        said = _error(list(iter_items([str(path)], lim))[-1])
        assert _RATIO_STOP.fullmatch(said), said


@pytest.mark.parametrize("compress", ["", "gz"])
def test_a_tar_cut_inside_a_member_gives_that_member_a_row(tmp_path: Path, compress: str) -> None:
    """A tar cut 3,000 bytes into its third member's data: the first two are scanned, the
    third gets a row saying it was cut short, so each of the "3 members" the archive's
    row counts has a row, and the archive's row says where reading stopped."""
    raw = _tar_of([(f"p{k}.png", PNG) for k in range(3)], tarfile.USTAR_FORMAT)
    third = 2 * (512 + -(-len(PNG) // 512) * 512) + 512  # the third member's data
    path = tmp_path / ("cut.tar" + (f".{compress}" if compress else ""))
    cut = raw[: third + 3000]
    path.write_bytes(gzip.compress(cut) if compress else cut)
    items = list(iter_items([str(path)], ScanLimits()))
    assert [i.ref for i in items] == [
        f"{path}!p0.png",
        f"{path}!p1.png",
        f"{path}!p2.png",
        str(path),
    ]
    assert _data(items[0]) == _data(items[1]) == PNG
    assert _error(items[2]) == (
        f"truncated: the archive ends 3,000 bytes into this member's {len(PNG):,} bytes;"
        " not scanned"
    )
    assert items[2].size == len(PNG)
    assert _error(items[3]).startswith("truncated or corrupt tar archive after 3 members:")


def test_a_compressed_tar_cut_inside_a_large_member_gives_it_a_row(tmp_path: Path) -> None:
    """A .tar.bz2 cut halfway, inside a 3 MiB member that is hashed as it streams: that
    member's row says how far its data went before the compressed stream ended."""
    big = os.urandom(3 << 20)
    data = bz2.compress(_tar_of([("a.txt", b"a"), ("big.bin", big)]))
    path = tmp_path / "cut.tar.bz2"
    path.write_bytes(data[: len(data) // 2])
    items = list(iter_items([str(path)], ScanLimits()))
    assert [i.ref for i in items] == [f"{path}!a.txt", f"{path}!big.bin", str(path)]
    said = _error(items[1])
    assert said.startswith("truncated: the archive ends ") and said.endswith(
        f" bytes into this member's {len(big):,} bytes; not scanned"
    ), said
    assert "after 2 members: Compressed file ended" in _error(items[2])
