"""`prov scan` against a real server: a desk of signed, derived, tampered, unsigned, corrupt,
non-media and hostile files in a folder, a zip and a tar.gz; the process pool and Ray
give the same report; a scan killed with SIGKILL resumes to the same report."""

from __future__ import annotations

import contextlib
import csv
import gc
import html
import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from PIL import Image, ImageDraw
from rich.console import Console
from typer.testing import CliRunner

from clients.cli import main as prov_main
from clients.scan import worker
from clients.scan.cli import scan as scan_command
from clients.scan.engines import LocalEngine, RayEngine
from clients.scan.pipeline import run_scan
from clients.scan.progress import ScanProgress
from clients.scan.report import csv_path, html_path
from clients.scan.rowcheck import row_problem
from clients.scan.rows import VOLATILE_FIELDS
from clients.scan.worker import ScanConfig
from provenance.core.errors import TransportError
from tests.conftest import (
    ADMIN_TOKEN,
    FIXTURES,
    PASSPHRASE,
    ROOT,
    SAMPLES,
    ServerProc,
    start_server,
)
from tests.drain import drain, finish

REAL = FIXTURES / "detector" / "real" / "afhq"
SECRET = b"k" * 32
XSS = "<img src=x onerror=alert(1)>.jpg"


@dataclass
class Desk:
    server: ServerProc
    root: Path
    folder: Path
    tarball: Path
    device_id: str
    escape: str
    baseline: list[dict[str, Any]]


def _prov(*args: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = prov_main(list(args))
    assert rc == 0, (args, buf.getvalue())
    return buf.getvalue()


def _jpeg(im: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _add(
    t: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _scan(paths: list[Path], out: Path, engine: Any, **kw: Any) -> list[dict[str, Any]]:
    config = ScanConfig(
        server=kw.pop("server"), detector_secret=SECRET, detect=kw.pop("detect", False)
    )
    run_scan([str(p) for p in paths], out, config, engine, **kw)
    return [json.loads(line) for line in out.read_text().splitlines()]


def _normal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without run-dependent fields, in path order (reports are compared unordered)."""
    return sorted(
        ({k: v for k, v in r.items() if k not in VOLATILE_FIELDS} for r in rows),
        key=lambda r: r["path"],
    )


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    root = tmp_path_factory.mktemp("desk")
    srv = start_server(root / "prov.db")
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {
                "PROV_HOME": str(root / "device"),
                "PROV_PASSPHRASE": PASSPHRASE,
                "PROV_ADMIN_TOKEN": ADMIN_TOKEN,
                "PROV_SERVER": srv.address,
            }.items():
                mp.setenv(k, v)
            device_id = _prov("device", "init").split()[-1]
            token = _prov("admin", "enroll-token", "--label", "desk-camera").strip()
            _prov("device", "enroll", "--token", token)
            folder = root / "folder"
            folder.mkdir()
            signed = {
                "rocket.jpg": (SAMPLES / "rocket.jpg").read_bytes(),
                "hopper.jpg": (SAMPLES / "grace_hopper.jpg").read_bytes(),
                "cat.jpg": (REAL / "ref_cat_flickr_cat_000495.jpg").read_bytes(),
            }
            for name, data in signed.items():
                (folder / name).write_bytes(data)
            _prov("sign", *(str(folder / n) for n in signed))
        cat = Image.open(folder / "cat.jpg")
        ImageDraw.Draw(cat).rectangle((10, 10, 60, 60), fill=(255, 0, 0))
        (folder / "cat.jpg").write_bytes(_jpeg(cat, 95))  # edited after signing: TAMPERED
        rocket = Image.open(io.BytesIO(signed["rocket.jpg"]))
        small = _jpeg(rocket.resize((rocket.width // 2, rocket.height // 2)), 80)
        (folder / "rocket-small.jpg").write_bytes(small)
        buf = io.BytesIO()
        Image.open(io.BytesIO(signed["hopper.jpg"])).save(buf, "PNG")
        hopper_png = buf.getvalue()
        (folder / "hopper.png").write_bytes(hopper_png)
        dog = (REAL / "ref_dog_flickr_dog_001072.jpg").read_bytes()
        (folder / "chelsea.png").write_bytes((SAMPLES / "chelsea.png").read_bytes())
        (folder / "chelsea.png.prov").write_text("not a sidecar")
        (folder / XSS).write_bytes(dog)
        (folder / "broken.jpg").write_bytes(signed["rocket.jpg"][:3000])
        (folder / "notes.txt").write_text("caption: launch\n")
        (folder / "empty.jpg").write_bytes(b"")
        (folder / "link.jpg").symlink_to("/etc/passwd")

        escape = f"/tmp/scan-abs-{uuid.uuid4().hex}.jpg"
        deeper = io.BytesIO()
        with zipfile.ZipFile(deeper, "w") as z:
            z.writestr("too-deep.jpg", signed["hopper.jpg"])
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w:gz") as t:
            _add(t, "hopper.jpg", signed["hopper.jpg"])
            _add(t, "deeper.zip", deeper.getvalue())
        with zipfile.ZipFile(folder / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("sent/rocket.jpg", signed["rocket.jpg"])
            z.writestr("sent/rocket-small.jpg", small)
            z.writestr("dog.jpg", dog)
            z.writestr("broken.jpg", signed["rocket.jpg"][:3000])
            z.writestr("notes.txt", "caption\n")
            z.writestr("../../escape.jpg", signed["rocket.jpg"])
            z.writestr(escape, signed["rocket.jpg"])
            link = zipfile.ZipInfo("passwd.jpg")
            link.external_attr = 0o120777 << 16
            z.writestr(link, "/etc/passwd")
            z.writestr("bomb.bin", bytes(20 << 20))
            z.writestr("inner.tar.gz", inner.getvalue())
        tarball = root / "wire.tar.gz"
        with tarfile.open(tarball, "w:gz") as t:
            _add(t, "hopper.png", hopper_png)
            _add(t, "chelsea.png", (SAMPLES / "chelsea.png").read_bytes())
            _add(t, "sym.jpg", kind=tarfile.SYMTYPE, link="/etc/shadow")
            _add(t, "hard.jpg", kind=tarfile.LNKTYPE, link="hopper.png")
            _add(t, "../../../escape.png", hopper_png)
        baseline = _scan(
            [folder, tarball], root / "baseline.jsonl", LocalEngine(0), server=srv.address
        )
        yield Desk(srv, root, folder, tarball, device_id, escape, baseline)
    finally:
        srv.stop()


def test_each_row_of_a_mixed_desk_is_right(desk: Desk) -> None:
    f, b, t = str(desk.folder), f"{desk.folder}/bundle.zip", str(desk.tarball)
    expected = {
        # path: (kind, status, note or error fragment)
        f"{f}/rocket.jpg": ("media", "SIGNED_ORIGINAL", None),
        f"{f}/hopper.jpg": ("media", "SIGNED_ORIGINAL", None),
        f"{f}/cat.jpg": ("media", "TAMPERED", None),
        f"{f}/rocket-small.jpg": ("media", "DERIVED", None),
        f"{f}/hopper.png": ("media", "DERIVED", None),
        f"{f}/chelsea.png": ("media", "UNSIGNED", "sidecar chelsea.png.prov not usable"),
        f"{f}/chelsea.png.prov": ("file", "UNSIGNED", "not a recognised image or video format"),
        f"{f}/{XSS}": ("media", "UNSIGNED", None),
        f"{f}/broken.jpg": ("file", "UNSIGNED", "truncated or corrupt"),
        f"{f}/notes.txt": ("file", "UNSIGNED", "not a recognised image or video format"),
        f"{f}/empty.jpg": ("empty", None, "empty file: nothing to look up"),
        f"{f}/rocket.jpg.prov": ("sidecar", None, "provenance sidecar"),
        f"{f}/hopper.jpg.prov": ("sidecar", None, "provenance sidecar"),
        f"{f}/cat.jpg.prov": ("sidecar", None, "provenance sidecar"),
        f"{f}/link.jpg": ("refused", None, "symbolic link: not followed"),
        f"{b}!sent/rocket.jpg": ("media", "SIGNED_ORIGINAL", None),
        f"{b}!sent/rocket-small.jpg": ("media", "DERIVED", None),
        f"{b}!dog.jpg": ("media", "UNSIGNED", None),
        f"{b}!broken.jpg": ("file", "UNSIGNED", "truncated or corrupt"),
        f"{b}!notes.txt": ("file", "UNSIGNED", "not a recognised"),
        f"{b}!../../escape.jpg": ("refused", None, "path traversal"),
        f"{b}!{desk.escape}": ("refused", None, "absolute entry name"),
        f"{b}!passwd.jpg": ("refused", None, "symbolic link"),
        f"{b}!bomb.bin": ("refused", None, "compression ratio"),
        f"{b}!inner.tar.gz!hopper.jpg": ("media", "SIGNED_ORIGINAL", None),
        f"{b}!inner.tar.gz!deeper.zip": ("refused", None, "nested more than 2 levels"),
        f"{t}!hopper.png": ("media", "DERIVED", None),
        f"{t}!chelsea.png": ("media", "UNSIGNED", None),
        f"{t}!sym.jpg": ("refused", None, "symbolic link to '/etc/shadow'"),
        f"{t}!hard.jpg": ("refused", None, "hard link to 'hopper.png'"),
        f"{t}!../../../escape.png": ("refused", None, "path traversal"),
    }
    rows = {r["path"]: r for r in desk.baseline}
    assert len(rows) == len(desk.baseline) == len(expected)
    # each row reads back on --resume: its fields are of the kinds `row_problem` checks
    assert {p: row_problem(r) for p, r in rows.items() if row_problem(r)} == {}
    for path, (kind, status, text) in expected.items():
        r = rows[path]
        assert (r["kind"], r["status"]) == (kind, status), path
        if kind == "refused":
            assert text in r["error"] and r["sha256"] is None, path
        else:
            assert r["error"] is None, path
            assert (text is None and r["note"] is None) or (text and text in r["note"]), path
        assert r["archive"] == (
            None
            if path.startswith(f"{f}/") and "!" not in path
            else (b if path.startswith(b) else t)
        ), path
    # a row looked up by SHA-256 only says so and why (its note), not "no ... claim
    # matches these bytes or these pixels": no pixels were hashed
    for path in (f"{f}/broken.jpg", f"{b}!broken.jpg", f"{f}/notes.txt", f"{b}!notes.txt"):
        r = rows[path]
        why = r["note"].removesuffix(": looked up by SHA-256 only")
        assert r["reasons"] == [
            f"no signed claim in the log matches these bytes; only their SHA-256 was looked"
            f" up ({why})"
        ], (path, r["reasons"])
    assert "truncated or corrupt" in rows[f"{f}/broken.jpg"]["reasons"][0]
    assert "pixels" not in " ".join(rows[f"{f}/notes.txt"]["reasons"])
    signed = rows[f"{b}!inner.tar.gz!hopper.jpg"]
    hopper = (SAMPLES / "grace_hopper.jpg").read_bytes()
    assert signed["sha256"] == __import__("hashlib").sha256(hopper).hexdigest()
    assert signed["size"] == len(hopper) and signed["media_type"] == "image/jpeg"
    assert signed["evidence"]["hash_match"] is True
    assert signed["evidence"]["claim"]["device_id"] == desk.device_id
    assert signed["evidence"]["claim"]["log"]["leaf_index"] in (1, 2, 3)  # 0: the enrollment
    derived = rows[f"{f}/rocket-small.jpg"]
    assert 0 <= derived["evidence"]["pdq_distance"] <= 31 == derived["evidence"]["pdq_threshold"]
    assert derived["evidence"]["claim"]["sha256"] == rows[f"{f}/rocket.jpg"]["sha256"]
    assert rows[f"{f}/cat.jpg"]["evidence"]["sidecar_present"] is True
    assert rows[f"{f}/chelsea.png"]["soft_bindings"][0]["quality"] >= 50
    assert all(r["detector"] is None for r in desk.baseline)  # --detect was not asked for
    # nothing was extracted: only the reports were written
    assert not os.path.exists(desk.escape)
    assert (
        not (desk.root.parent / "escape.jpg").exists() and not (desk.root / "escape.jpg").exists()
    )
    assert sorted(p.name for p in desk.root.iterdir()) == sorted(
        [
            "prov.db",
            "prov.db.lock",
            "prov.db.logkey.pem",
            "prov.db.logkey.pem.checkpoint",  # the newest signed checkpoint, remembered
            "device",
            "folder",
            "wire.tar.gz",
            "baseline.jsonl",
            "baseline.csv",
            "baseline.html",
        ]
        + [p.name for p in desk.root.glob("prov.db-*")]
    )


def test_csv_and_html_reports_describe_every_row(desk: Desk) -> None:
    report = desk.root / "baseline.jsonl"
    lines = csv_path(report).read_text().splitlines()
    assert lines[0].startswith("path,archive,kind,size,media_type,sha256,pdq,")
    assert len(lines) == 1 + len(desk.baseline)
    page = html_path(report).read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert "<td>UNSIGNED</td><td class='n'>9</td>" in page  # empty.jpg is not looked up
    assert (
        "<p class='note'>5 of the UNSIGNED files were looked up by SHA-256 only (not"
        " media, truncated or corrupt, or over a size limit): the CSV's note column says"
        " why for each.</p>"
    ) in page
    notes = {r["path"]: r["note"] for r in csv.DictReader(lines)}
    assert "truncated or corrupt" in notes[f"{desk.folder}/broken.jpg"]
    assert notes[f"{desk.folder}/broken.jpg"].endswith("looked up by SHA-256 only")
    assert "<td>EMPTY</td><td class='n'>1</td>" in page
    assert "<td>SIGNED_ORIGINAL</td><td class='n'>4</td>" in page
    assert "<td>ERROR</td><td class='n'>9</td>" in page
    # without --detect nothing ranks the unsigned images: no thumbnails, no second read
    assert "data:image/jpeg;base64," not in page
    # ... and the page says no detector ran, without the empty score and band columns
    assert "No detector ran in this scan" in page
    assert "<th>score</th>" not in page and "<th>band</th>" not in page
    assert "<h2>Unsigned images (first 4)</h2><table><tr><th>path</th><th>size</th></tr>" in page
    assert "path traversal" in page
    # the tampered and derived files are named with their evidence, most serious first,
    # before the unsigned list
    rows = {r["path"]: r for r in desk.baseline}
    flagged = page.index("<h2>Files to look at: tampered, revoked or derived</h2>")
    assert flagged < page.index("<h2>Unsigned images")
    cat = rows[f"{desk.folder}/cat.jpg"]
    reason = html.escape(cat["reasons"][0], quote=True)
    assert f"<td>{html.escape(str(desk.folder))}/cat.jpg</td><td>TAMPERED</td><td>{reason}" in page
    small = rows[f"{desk.folder}/rocket-small.jpg"]["evidence"]
    leaf = small["claim"]["log"]["leaf_index"]
    assert (
        f"rocket-small.jpg</td><td>DERIVED</td><td>matches the capture at log leaf {leaf}:"
        f" PDQ distance {small['pdq_distance']} bits (match threshold 31)</td>"
    ) in page
    table = page[flagged : page.index("<h2>Unsigned images")]
    assert table.index("<td>TAMPERED</td>") < table.index("<td>DERIVED</td>")
    assert table.count("<td>DERIVED</td>") == 4 and table.count("<td>TAMPERED</td>") == 1


@pytest.mark.parametrize(
    ("name", "workers", "batch_size"),
    [
        ("pool", 2, 4),  # a process pool
        # the server answers a Lookup's files together (one store read, one index
        # search): the rows equal those of one file per Lookup
        ("one-by-one", 0, 1),
    ],
)
def test_engines_and_lookup_batches_give_the_same_report(
    desk: Desk, tmp_path: Path, name: str, workers: int, batch_size: int
) -> None:
    rows = _scan(
        [desk.folder, desk.tarball],
        tmp_path / f"{name}.jsonl",
        LocalEngine(workers),
        server=desk.server.address,
        batch_size=batch_size,
    )
    assert _normal(rows) == _normal(desk.baseline)
    assert {r["status"] for r in rows} >= {"SIGNED_ORIGINAL", "DERIVED", "TAMPERED", "UNSIGNED"}


def test_pool_workers_inherit_what_the_main_script_imported(tmp_path: Path) -> None:
    """The fork server imports the modules of the main script (`prov`'s imports clients.cli)
    and of its sibling modules, so a worker forked from it does not import them again when
    it re-runs the script."""
    lib, script = tmp_path / "lib", tmp_path / "script"
    lib.mkdir()
    script.mkdir()
    (lib / "imported_by_main.py").write_text("import os\n\nPID = os.getpid()\n")
    (lib / "imported_by_sibling.py").write_text("import os\n\nPID = os.getpid()\n")
    (script / "sibling.py").write_text("import imported_by_sibling\n")
    (script / "main.py").write_text(
        "import os\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "import imported_by_main\n"
        "import sibling\n"
        "from clients.scan.engines import _worker_context\n"
        "from clients.scan.worker import GC_YOUNG_THRESHOLD\n\n"
        "def where() -> tuple[int, int, int]:\n"
        "    return os.getpid(), imported_by_main.PID, sibling.imported_by_sibling.PID\n\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(1, mp_context=_worker_context()) as pool:\n"
        "        pid, *imported_in = pool.submit(where).result()\n"
        "    print(['imported again' if pid == p else 'inherited' for p in imported_in])\n"
    )
    path = os.pathsep.join([str(lib), str(ROOT), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(script / "main.py")],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.strip() == "['inherited', 'inherited']", out.stderr


def test_progress_line_redraws_twice_a_second() -> None:
    """The live line on a terminal is drawn at most REFRESH_PER_SECOND (2) times a second,
    plus once at the start and once at the end: Rich's default of 10 redraws cost the
    scan's driver about 10 ms more CPU per second of scan."""
    out = io.StringIO()
    began = time.monotonic()
    with ScanProgress(Console(file=out, force_terminal=True, width=100)):
        time.sleep(1.0)
    # the line was live this long: 1 s, or more on a loaded machine (1.5 s or more drew a
    # fifth frame, as it should, and the bound of 4 failed)
    held = time.monotonic() - began
    frames = out.getvalue().count("starting")  # the description, in every frame drawn
    assert 1 <= frames <= 2 + int(2 * held), (frames, held)  # at 10 a second: 12


def test_progress_to_a_file_is_one_whole_final_line() -> None:
    """stderr sent to a file: one final line, whole and ending in a newline (before: the
    live display's last frame, cut at the console's 80 columns), and '1 file'."""
    statuses = ["SIGNED_ORIGINAL", "DERIVED", "UNSIGNED", "REVOKED_KEY", "TAMPERED"]
    for n in (1, 5):
        out = io.StringIO()
        with ScanProgress(Console(file=out, width=80)) as progress:
            progress.update([{"status": s, "kind": "media", "size": 1000} for s in statuses[:n]])
        text = out.getvalue()
        assert text.count("\n") == 1 and text.endswith("\n"), repr(text)
        assert text.startswith("1 file  " if n == 1 else f"{n} files  "), repr(text)
        assert all(f"{s} 1" in text for s in statuses[:n]), repr(text)


def test_a_run_that_scanned_nothing_says_so_without_rates(tmp_path: Path) -> None:
    """A resumed scan with nothing left, or a folder holding no files, printed "0 files
    0.0 files/s 0.0 MB/s" and a table with "files/s 0.0": a rate of no work, read as a
    stalled scan. It now says what happened, and gives no rate."""
    from clients.scan.pipeline import ScanResult
    from clients.scan.progress import summary_note, summary_table
    from clients.scan.report import Summary

    out = io.StringIO()
    with ScanProgress(Console(file=out, width=80)):
        pass
    assert out.getvalue() == "no files scanned in this run\n", repr(out.getvalue())

    def table(result: ScanResult) -> str:
        text = io.StringIO()
        Console(file=text, width=100).print(summary_table(result, tmp_path / "s.jsonl"))
        return text.getvalue()

    done = Summary(counts={"UNSIGNED": 2, "ERROR": 1}, rows=3, bytes=9, unsigned=[], refused=[])
    resumed = ScanResult(scanned=0, scanned_bytes=0, skipped=3, elapsed_s=0.2, summary=done)
    assert "files/s" not in table(resumed) and "MB/s" not in table(resumed), table(resumed)
    assert summary_note(resumed) == (
        "nothing left to scan: all 3 files were already in the report"
        " (--retry-errors scans its 1 error row again)"
    )
    nothing = Summary(counts={}, rows=0, bytes=0, unsigned=[], refused=[])
    empty = ScanResult(scanned=0, scanned_bytes=0, skipped=0, elapsed_s=0.1, summary=nothing)
    assert "files/s" not in table(empty)
    assert summary_note(empty) == "no files found in the paths given"
    # a run that scanned files gives its rates, and no note
    ran = ScanResult(scanned=3, scanned_bytes=9, skipped=0, elapsed_s=1.0, summary=done)
    assert "files/s" in table(ran) and summary_note(ran) is None


def test_live_progress_on_80_columns_shows_every_count() -> None:
    """On an 80-column terminal the live line was cut at its end ("SIGNED_ORIGINAL 15
    DERIVED 12  UNSIGNED 4…"): while 5,000 files were scanned an archivist could not see
    that one was TAMPERED or refused until the end. The line now folds onto a second one
    rather than drop counts, and the pulsing bar (the total is not known) is narrower."""
    statuses = ["SIGNED_ORIGINAL", "DERIVED", "TAMPERED", "UNSIGNED"]
    rows = [{"status": s, "kind": "media", "size": 1000} for s in statuses]
    rows.append({"status": None, "kind": "refused", "size": 0, "error": "path traversal"})
    out = io.StringIO()
    with ScanProgress(Console(file=out, force_terminal=True, width=80)) as progress:
        progress.update(rows * 1000)
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue()).split("\r")[-1]
    flat = " ".join(last.split())
    for word in ("SIGNED_ORIGINAL 1000", "TAMPERED 1000", "UNSIGNED 1000", "ERROR 1000"):
        assert word in flat, (word, last)


def test_pool_workers_start_with_the_decoder_and_grpc_loaded(tmp_path: Path) -> None:
    """The fork server pays what each worker paid on its first image and first channel
    (`clients.scan.preload`): a worker forked from it has Pillow's plugins initialised and
    gRPC's channel module imported before its first task, though the main script imports
    neither; and what it inherited is frozen out of the garbage collector's full passes
    (gc.freeze, so a full pass walks only the worker's own objects), and its young
    objects are collected every GC_YOUNG_THRESHOLD allocations, not 700."""
    script = tmp_path / "main.py"
    script.write_text(
        "import gc\n"
        "import signal\n"
        "import sys\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from clients.scan.engines import _worker_context\n"
        "from clients.scan.worker import GC_YOUNG_THRESHOLD\n\n"
        "def loaded() -> list[bool]:\n"
        "    image = sys.modules.get('PIL.Image')\n"
        "    return [\n"
        "        bool(getattr(image, '_initialized', 0)),\n"
        "        'PIL.JpegImagePlugin' in sys.modules,\n"
        "        'grpc._channel' in sys.modules,\n"
        "        gc.get_freeze_count() > 10000,\n"
        "        gc.get_threshold()[0] == GC_YOUNG_THRESHOLD,\n"
        "        signal.getsignal(signal.SIGINT) is signal.SIG_IGN,\n"
        "        signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, []),\n"
        "    ]\n\n"
        "if __name__ == '__main__':\n"
        "    assert 'grpc._channel' not in sys.modules\n"
        "    with ProcessPoolExecutor(1, mp_context=_worker_context()) as pool:\n"
        "        print(pool.submit(loaded).result())\n"
    )
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # the last: a worker ignores Ctrl-C (the scan process stops its workers itself,
    # `clients.scan.engines._stop_workers`; before, every worker took it, and one could
    # die holding the pool's task-queue lock); and not blocked, as the fork server was
    # started (`clients.scan.engines._start_fork_server`): its preload unblocks it
    assert out.stdout.strip() == "[True, True, True, True, True, True, True]", out.stderr


#: How long a failed Ray start waits for the machine's run queue to drain before its one
#: retry, in seconds.
RAY_RETRY_WAIT_S = 90.0


def _start_ray(ray: Any) -> None:
    """Start a local Ray node of 2 CPUs, or fail the test saying Ray could not start one.

    Ray's node start-up has deadlines of its own that no option of Ray 2.x changes: the
    raylet aborts when its dashboard agent (a Python process) has not written its port
    file within 15 s (raylet.err: "Timed out waiting for file .../metrics_agent_port_*"),
    and `ray.init` gives the raylet 30 s to register ("The current node timed out during
    startup"). On a 2-core machine at a load of 7 or more the six processes of a start-up
    can miss them; that was the flake, and its retry at once met the same load and failed
    the same way (the raylet.err of both sessions in /tmp/ray). So the one retry waits until the 1-minute load
    is under the core count (at most RAY_RETRY_WAIT_S), and a node that still does not
    start fails the test, naming Ray's deadline and the load (no skip: a test that cannot
    run must not pass as if it had)."""
    kw: dict[str, Any] = {"num_cpus": 2, "include_dashboard": False, "log_to_driver": False}
    try:
        ray.init(**kw)
        return
    except Exception as e:  # Ray raises a bare Exception for its start-up deadline
        ray.shutdown()
        if "timed out" not in str(e).lower():
            raise
    cores = os.cpu_count() or 1
    deadline = time.monotonic() + RAY_RETRY_WAIT_S
    while os.getloadavg()[0] >= cores and time.monotonic() < deadline:
        time.sleep(1.0)
    try:
        ray.init(**kw)
    except Exception as e:
        ray.shutdown()
        if "timed out" not in str(e).lower():
            raise
        load = os.getloadavg()[0]
        pytest.fail(f"Ray's node missed its own start-up deadline twice (load {load:.1f}): {e}")


@pytest.mark.slow
def test_ray_engine_gives_the_same_report(desk: Desk, tmp_path: Path) -> None:
    import ray

    _start_ray(ray)
    try:
        rows = _scan(
            [desk.folder, desk.tarball],
            tmp_path / "ray.jsonl",
            RayEngine(),
            server=desk.server.address,
            batch_size=4,
        )
    finally:
        ray.shutdown()
    assert _normal(rows) == _normal(desk.baseline)


@pytest.mark.slow
def test_a_ray_scan_cuts_its_last_batches_for_the_cluster_s_cpus(
    desk: Desk, tmp_path: Path
) -> None:
    """A Ray cluster the scan joins (RAY_ADDRESS's, or here one started by the caller:
    the same path) has CPUs of its own, which --workers does not change: the last
    batches are cut for twice them. 240 photos, batches of 16 doubling to 64, a cluster
    of 2 CPUs and --workers 1: the last two batches' 128 files arrive as 4 batches of 32.
    Before, they were cut for twice --workers, 2 batches of 64 (16, 32, 64, 64, 64)."""
    import ray

    _start_ray(ray)
    try:
        sizes, rows = _batch_sizes(desk, tmp_path, RayEngine(1))
    finally:
        ray.shutdown()
    assert sorted(sizes) == [16, 32, 32, 32, 32, 32, 64]
    assert len({row["path"] for row in rows}) == 240


def test_detect_scores_only_unsigned_images(desk: Desk, tmp_path: Path) -> None:
    rows = {
        r["path"]: r
        for r in _scan(
            [desk.folder],
            tmp_path / "detect.jsonl",
            LocalEngine(0),
            server=desk.server.address,
            detect=True,
        )
    }
    # every row, scored or not, reads back on --resume (its fields are as rows' should be)
    assert [r["path"] for r in rows.values() if row_problem(r)] == []
    scored = {p for p, r in rows.items() if r["detector"] is not None}
    assert scored == {
        f"{desk.folder}/chelsea.png",
        f"{desk.folder}/{XSS}",
        f"{desk.folder}/bundle.zip!dog.jpg",
    }
    for path in scored:
        block = rows[path]["detector"]
        if "score" in block:  # the local detector loaded
            assert 0.0 <= block["band_low"] <= block["score"] <= block["band_high"] <= 1.0
            assert "advisory" in block["advisory"].lower()
        else:  # no local weights: the server was asked (folder files) or nothing could be
            assert block["available"] is False
            expected = (
                "this server runs no detector"
                if "!" not in path
                else "needs a file on disk, not an archive entry"
            )
            assert expected in block["note"], block
    page = html_path(tmp_path / "detect.jsonl").read_text()
    shown = [float(x) for x in re.findall(r"<td class='n'>(\d\.\d{3})</td>", page)]
    scores = sorted(
        (r["detector"].get("score", -1.0) for r in rows.values() if r["detector"]), reverse=True
    )
    assert shown == [round(x, 3) for x in scores if x >= 0]  # ranked by score, highest first
    # a thumbnail for each scored image (archive entries included), none for the others
    assert page.count("data:image/jpeg;base64,") == len(shown)
    # the detector ran: its columns are there, and no word says it did not
    assert "<th>score</th><th>band</th>" in page and "No detector ran" not in page


def _photos(folder: Path, n: int) -> None:
    rng = np.random.default_rng(5)
    folder.mkdir()
    for k in range(n):
        base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((96, 96), Image.Resampling.BICUBIC)
        (folder / f"p{k:03d}.jpg").write_bytes(_jpeg(im, 90))


def _batch_sizes(desk: Desk, tmp_path: Path, engine: Any) -> tuple[list[int], list[dict[str, Any]]]:
    """A scan of 240 photos (in ``tmp_path``/many) with ``engine``, batches of 16 doubling
    to 64: the sizes of the batches in the order their rows came, and the report's rows."""
    folder = tmp_path / "many"
    _photos(folder, 240)
    sizes: list[int] = []
    rows = _scan(
        [folder],
        tmp_path / "sizes.jsonl",
        engine,
        server=desk.server.address,
        batch_size=64,
        on_rows=lambda got: sizes.append(len(got)),
    )
    return sizes, rows


def test_a_scan_killed_midway_resumes_to_the_same_report(desk: Desk, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    _photos(folder, 240)
    full = _scan([folder], tmp_path / "full.jsonl", LocalEngine(0), server=desk.server.address)
    out = tmp_path / "killed.jsonl"
    code = "import typer; from clients.scan.cli import scan; typer.run(scan)"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            str(folder),
            "--report",
            str(out),
            "--server",
            desk.server.address,
            "--workers",
            "0",
            "--batch-size",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = out.read_bytes().count(b"\n")
    assert 20 <= before < 240, "the scan must be killed mid-way"
    with out.open("ab") as f:
        f.write(b'{"path": "cut by the cra')  # a row half-written when the process died
    config = ScanConfig(server=desk.server.address)
    result = run_scan([str(folder)], out, config, LocalEngine(0), resume=True)
    assert result.skipped == before and result.scanned == 240 - before
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len({r["path"] for r in rows}) == len(rows) == 240
    assert _normal(rows) == _normal(full)
    # the CSV holds the rows of both runs, in the report's order
    with csv_path(out).open(newline="") as f:
        assert [r["path"] for r in csv.DictReader(f)] == [r["path"] for r in rows]
    assert not csv_path(out).with_suffix(".csv.part").exists()


def test_the_cli_command_scans_refuses_to_overwrite_and_resumes(desk: Desk, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(scan_command)
    runner = CliRunner()
    out = tmp_path / "cli.jsonl"
    args = [
        str(desk.tarball),
        "--report",
        str(out),
        "--server",
        desk.server.address,
        "--workers",
        "0",
    ]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "SIGNED_ORIGINAL" not in r.stdout and "DERIVED" in r.stdout and "files/s" in r.stdout
    assert len(out.read_text().splitlines()) == 5
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "exists: add --resume" in again.output  # usage error
    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0 and "already in the report (resumed)" in resumed.stdout
    assert len(out.read_text().splitlines()) == 5
    # nothing was left: it says so, not "files/s 0.0" (a rate of no work read as a stall)
    said = " ".join(resumed.output.split())
    assert "nothing left to scan: all 5 files were already in the report" in said, said
    assert "files/s" not in said and "MB/s" not in said, said
    bad = runner.invoke(app, [str(desk.tarball), "--report", str(tmp_path / "x.csv")])
    assert bad.exit_code == 2 and ".jsonl" in bad.output


def test_videos_get_frame_hashes_on_disk_and_sha256_in_archives(desk: Desk, tmp_path: Path) -> None:
    video = FIXTURES / "phash" / "video" / "doorknob-hd-no-bar.mp4"
    with zipfile.ZipFile(tmp_path / "clips.zip", "w") as z:
        z.write(video, "clip.mp4")
    rows = {
        r["path"]: r
        for r in _scan(
            [video, tmp_path / "clips.zip"],
            tmp_path / "v.jsonl",
            LocalEngine(0),
            server=desk.server.address,
        )
    }
    on_disk = rows[str(video)]
    assert (on_disk["kind"], on_disk["status"], on_disk["media_type"]) == (
        "media",
        "UNSIGNED",
        "video/mp4",
    )
    assert [h["timestamp_seconds"] for h in on_disk["soft_bindings"]] == [0.0, 1.0, 2.0, 3.0]
    archived = rows[f"{tmp_path}/clips.zip!clip.mp4"]
    assert archived["kind"] == "file" and archived["sha256"] == on_disk["sha256"]
    assert "frames not sampled" in archived["note"]


def test_an_unreachable_server_stops_the_scan_with_a_transport_error(
    desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    out = tmp_path / "down.jsonl"
    with pytest.raises(TransportError, match="cannot reach the server") as e:
        run_scan([str(desk.tarball)], out, ScanConfig(server="127.0.0.1:1"), LocalEngine(0))
    assert e.value.code == "UNAVAILABLE"
    assert out.read_text() == ""  # nothing recorded; --resume starts this batch again


def test_the_driver_freezes_its_objects_for_the_scan_only(
    desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run_scan keeps the objects that existed before it out of the garbage collector's
    full passes while it runs (gc.freeze), collects young objects every
    GC_YOUNG_THRESHOLD allocations, and hands both back at its end, even when the scan
    fails; a caller that froze objects itself keeps them frozen."""
    assert gc.get_freeze_count() == 0
    before = gc.get_threshold()
    assert before[0] < worker.GC_YOUNG_THRESHOLD
    during: list[int] = []
    young: list[int] = []

    def on_rows(rows: list[dict[str, Any]]) -> None:
        during.append(gc.get_freeze_count())
        young.append(gc.get_threshold()[0])

    _scan(
        [desk.folder],
        tmp_path / "a.jsonl",
        LocalEngine(0),
        server=desk.server.address,
        on_rows=on_rows,
    )
    assert during and min(during) > 10000  # the imports, at least
    assert set(young) == {worker.GC_YOUNG_THRESHOLD}
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    monkeypatch.setattr(worker, "RETRY_DELAYS_S", (0.01,))
    with pytest.raises(TransportError):
        run_scan(
            [str(desk.folder)],
            tmp_path / "b.jsonl",
            ScanConfig(server="127.0.0.1:1"),
            LocalEngine(0),
        )
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        _scan([desk.folder], tmp_path / "c.jsonl", LocalEngine(0), server=desk.server.address)
        assert gc.get_freeze_count() > 0.9 * frozen  # (a frozen object may still be freed)
    finally:
        gc.unfreeze()


def test_names_that_are_not_utf8_are_scanned_and_reported(desk: Desk, tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), b"bad\xffname.jpg")
    with open(odd, "wb") as f:
        f.write((SAMPLES / "rocket.jpg").read_bytes())
    rows = _scan([folder], tmp_path / "odd.jsonl", LocalEngine(0), server=desk.server.address)
    assert [r["path"] for r in rows] == [f"{folder}/bad\\xffname.jpg"]
    assert rows[0]["kind"] == "media" and rows[0]["status"] is not None


def test_a_report_inside_the_scanned_folder_is_not_scanned(desk: Desk, tmp_path: Path) -> None:
    """`prov scan . --report scan.jsonl`: the scan listed its own outputs as files of the
    folder: the report it was writing and the CSV's ``.part`` as `empty` rows (they were
    not, by the end), and on the next run the last run's CSV and HTML pages as unsigned
    files. Now the report's files (OUT.jsonl, OUT.csv, OUT.csv.part, OUT.html), named
    in any way (here through a link to the folder, and by a second hard link), are left
    out; the rest of the folder is scanned as before."""
    folder = tmp_path / "desk"
    folder.mkdir()
    (folder / "rocket.jpg").write_bytes((SAMPLES / "rocket.jpg").read_bytes())
    (folder / "scan.csv").write_text("an older run's CSV\n")
    (folder / "scan.html").write_text("<p>an older run's page</p>\n")
    (tmp_path / "via").symlink_to(folder)
    out = tmp_path / "via" / "scan.jsonl"
    rows = _scan([folder], out, LocalEngine(0), server=desk.server.address)
    assert [r["path"] for r in rows] == [f"{folder}/rocket.jpg"], rows
    os.link(folder / "scan.html", folder / "also-scan.html")
    (folder / "notes.txt").write_text("caption\n")
    rows = _scan([folder], out, LocalEngine(0), server=desk.server.address, resume=True)
    assert [r["path"] for r in rows] == [f"{folder}/rocket.jpg", f"{folder}/notes.txt"], rows


def test_a_batch_handed_to_a_pool_whose_worker_died_is_a_worker_error() -> None:
    """A worker killed between two batches: handing the pool the next batch raises
    WorkerError (the scan's clear message, --resume), not BrokenProcessPool, which
    reached the user as a traceback (1 CI run in about 40 of
    test_a_worker_killed_midway_stops_the_scan_with_a_clear_error)."""
    import psutil

    from provenance.core.errors import WorkerError

    me = psutil.Process()
    # grandchildren already there are not the pool's: a server this module started (its
    # decoder process), another test's fork server's children
    others = {w.pid for child in me.children() for w in child.children()}

    def batches() -> Iterator[list[Any]]:
        yield []
        workers = [w for child in me.children() for w in child.children() if w.pid not in others]
        assert workers, "no worker process appeared"
        for w in workers:
            w.kill()
        psutil.wait_procs(workers, timeout=10)
        time.sleep(1.0)  # the pool's manager thread marks the pool broken
        yield []

    rows = LocalEngine(1).map(batches(), ScanConfig(server="127.0.0.1:1"))
    with pytest.raises(WorkerError, match="a scan worker process died.*--resume"):
        list(rows)


@pytest.mark.slow
def test_a_worker_killed_midway_stops_the_scan_with_a_clear_error(
    desk: Desk, tmp_path: Path
) -> None:
    """A scan worker dies (kill -9, as the OOM killer does): the scan neither hangs nor
    prints a traceback; it exits 1 with a message naming the cause and --resume, and the
    resumed scan completes."""
    import psutil

    folder = tmp_path / "many"
    folder.mkdir()
    src = (SAMPLES / "rocket.jpg").read_bytes()
    for i in range(300):
        (folder / f"r{i}.jpg").write_bytes(src + str(i).encode())
    out = tmp_path / "killed.jsonl"
    args = [sys.executable, "-m", "clients.cli", "scan", str(folder), "--report", str(out)]
    args += ["--server", desk.server.address, "--workers", "1"]
    proc = drain(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 60
    worker_proc = None
    while worker_proc is None and time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children():  # the fork server's children
            worker_proc = next(iter(child.children()), worker_proc)
        time.sleep(0.05)
    assert worker_proc is not None, "no worker process appeared"
    worker_proc.kill()
    _, stderr = finish(proc, timeout=60)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "worker process" in stderr and "--resume" in stderr
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert len(out.read_text().splitlines()) == 300


def test_a_ray_node_that_cannot_start_is_our_error_with_a_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's start-up deadlines on a busy host surface as a bare Exception from ray.init;
    the engine says what failed and how to go on instead of a traceback."""
    import ray

    from provenance.core.errors import WorkerError

    def late(*_a: object, **_k: object) -> None:
        raise Exception("The current node timed out during startup.")  # Ray's own words

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", late)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(WorkerError) as info:
        next(iter(RayEngine().map(iter([]), ScanConfig(server="127.0.0.1:9"))))
    said = str(info.value)
    assert re.search(r"timed out during startup.*ray start --head.*--engine local", said), said
    assert "Exception" not in said, said


@pytest.mark.parametrize(
    ("address", "workers", "ray_said"),
    [
        ("garbage", [], "Invalid address format: garbage"),
        ("localhost:notaport", ["--workers", "1"], "Unable to parse port number from notaport"),
    ],
)
def test_a_ray_address_that_is_no_address_is_said_in_words(
    tmp_path: Path, address: str, workers: list[str], ray_said: str
) -> None:
    """``RAY_ADDRESS`` mistyped: ``prov scan --engine ray`` exits 1 naming the variable,
    what Ray said, and the ways on (a head at that address, or --engine local). Before:
    "could not start or reach a Ray node (ValueError: Invalid address format: garbage)
    ... or scan with --engine process", a Python class name and an engine that does not
    exist; and with --workers, whatever RAY_ADDRESS said, "(ValueError: When connecting to
    an existing cluster, num_cpus and num_gpus must not be provided.)": --workers was
    passed to a cluster whose CPUs are its own, so no scan reached a cluster with it."""
    photo = tmp_path / "a.txt"
    photo.write_text("a file to scan")
    run = subprocess.run(
        [sys.executable, "-m", "clients.cli", "scan", str(photo), *workers]
        + ["--report", str(tmp_path / "r.jsonl"), "--engine", "ray"]
        + ["--server", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "RAY_ADDRESS": address, "COLUMNS": "400"},
    )
    err = " ".join(run.stderr.split())
    assert run.returncode == 1, (run.returncode, err)
    assert f"--engine ray could not reach the Ray cluster at RAY_ADDRESS={address}" in err, err
    assert ray_said in err and "--engine local" in err and "ray start --head" in err, err
    assert not re.search(r"\b(Value|Connection|Timeout)Error\b|Traceback", err), err
    assert "--engine process" not in err, err


def test_two_scans_score_a_file_alike_with_the_secret_kept_in_prov_home(
    desk: Desk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prov scan --detect` keeps its local detector's crop secret in PROV_HOME (0600), so a
    re-scan (or the rest of a resumed one) scores each file as before; each run drew its own
    secret, and the same image got another score in every scan."""
    home = tmp_path / "home"
    monkeypatch.setenv("PROV_HOME", str(home))
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in sorted(REAL.glob("*.jpg"))[-3:]:  # none of them signed on the desk
        (folder / p.name).write_bytes(p.read_bytes())
    scores = []
    for run in ("a", "b"):
        report = tmp_path / f"{run}.jsonl"
        args = [sys.executable, "-m", "clients.cli", "scan", str(folder), "--report", str(report)]
        args += ["--server", desk.server.address, "--workers", "0", "--detect"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        rows = [json.loads(line) for line in report.read_text().splitlines()]
        scores.append({r["path"]: r["detector"]["score"] for r in rows})
    assert len(scores[0]) == 3 and scores[0] == scores[1], scores
    secret = home / "scan-detector-secret"
    assert len(secret.read_bytes()) == 32 and secret.stat().st_mode & 0o077 == 0


def test_a_pool_scan_cuts_its_last_batches_so_its_workers_end_together(
    desk: Desk, tmp_path: Path
) -> None:
    """240 photos at 2 workers, batches of 16 doubling to 64: the last two batches' 128
    files arrive as 4 batches of 32 (twice the workers), not as a whole batch of 64 for
    one worker while the other has nothing left; every file scanned once, the rows the
    same as one process's."""
    sizes, rows = _batch_sizes(desk, tmp_path, LocalEngine(2))
    assert sorted(sizes) == [16, 32, 32, 32, 32, 32, 64]
    alone = _scan(
        [tmp_path / "many"], tmp_path / "alone.jsonl", LocalEngine(0), server=desk.server.address
    )
    assert _normal(rows) == _normal(alone)
