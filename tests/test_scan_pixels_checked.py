"""`prov scan` and `prov verify`'s text say whether a near copy's match was checked here.

A near copy's verdict (DERIVED, or REVOKED_KEY of a near match) rests on the claim's soft
binding; the client checks it on the file's own pixels (`clients.derived`), unless the
file is over the client's own image limits, when the verdict is the service's word
(``pixels_checked: false``, as `prov verify --json` and the web page say it). A scan row
says the same (``pixels_checked``: true, false, or null for any other verdict; the CSV's
last column; the HTML page's flagged table and legend), and `prov verify`'s text has a
``match`` line. Before (scanpix55) the scan's rows had no such field, and `prov verify`'s
text said it only in a reason at the end of its why lines.

A real `prov serve --max-megapixels 150` (it decodes a 109-megapixel copy the client
will not), a real enrolled device, real photos, the real CLI."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path

import pytest

from clients.cli import main as prov_main
from clients.scan.report import csv_path, html_path
from provenance.c2pa.container import MAX_PNG_CHUNKS
from provenance.media.image import MAX_JPEG_SCANS
from tests.conftest import FIXTURES, Cli, ServerProc, sign_sample, start_server
from tests.test_cited_binding import _verify
from tests.test_derived_limits import SERVICE_MEGAPIXELS, _enlarged
from tests.test_scan_log_key import _scan
from tests.test_scan_resume import _resume

#: A real unsigned photo (shared fixtures).
UNSIGNED_PHOTO = FIXTURES / "detector" / "real" / "afhq" / "ref_cat_flickr_cat_000495.jpg"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    """`prov serve --max-megapixels 150` (the ``enrolled`` and ``cli`` fixtures use it)."""
    srv = start_server(tmp_path / "big.db", "--max-megapixels", str(SERVICE_MEGAPIXELS))
    yield srv
    srv.stop()


def _desk(enrolled: Cli, tmp_path: Path) -> Path:
    """A folder of: rocket.jpg signed (SIGNED_ORIGINAL), rocket_4x.jpg a near copy
    within the client's limits (DERIVED by the Lookup, checked here), rocket_huge.jpg a
    109 MP near copy over them beside a sidecar of another picture (chelsea.png's: sent
    with VerifyFile, DERIVED, not checked here), and an unsigned real photo."""
    folder = tmp_path / "desk"
    folder.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    a, _ = sign_sample(enrolled, folder, "rocket.jpg")
    _enlarged(a, folder / "rocket_4x.jpg", 4)
    _enlarged(a, folder / "rocket_huge.jpg")
    b, _ = sign_sample(enrolled, other, "chelsea.png")
    shutil.copy(b.with_name(b.name + ".prov"), folder / "rocket_huge.jpg.prov")
    shutil.copy(UNSIGNED_PHOTO, folder / "cat.jpg")
    return folder


def _cells(report: Path) -> dict[str, dict[str, str]]:
    with csv_path(report).open(newline="") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


#: What each file's row says: (status, pixels_checked).
EXPECTED = {
    "rocket.jpg": ("SIGNED_ORIGINAL", None),
    "rocket_4x.jpg": ("DERIVED", True),
    "rocket_huge.jpg": ("DERIVED", False),
    "cat.jpg": ("UNSIGNED", None),
}


def test_a_scans_rows_say_whether_a_near_copys_pixels_were_checked_here(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _desk(enrolled, tmp_path)
    report = tmp_path / "scan.jsonl"
    rc, out, err, rows = _scan(capsys, folder, report, server.address)
    assert rc == 0, (out, err)
    for name, (status, pixels) in EXPECTED.items():
        row = rows[name]
        assert (row["status"], row["pixels_checked"]) == (status, pixels), row
    assert (
        "pixels_checked" in rows["rocket.jpg.prov"]
        and rows["rocket.jpg.prov"]["pixels_checked"] is None
    ), rows["rocket.jpg.prov"]
    assert any("not checked here" in r for r in rows["rocket_huge.jpg"]["reasons"]), rows
    # the CSV: a new last column, the others where they were
    cells = _cells(report)
    assert list(cells["rocket.jpg"])[-3:] == ["evidence_checked", "log_key", "pixels_checked"]
    want = {"rocket.jpg": "", "rocket_4x.jpg": "true", "rocket_huge.jpg": "false", "cat.jpg": ""}
    assert {n: cells[n]["pixels_checked"] for n in want} == want, cells
    # the HTML page: a column of the flagged table, and a legend line
    page = html_path(report).read_text()
    table = page[page.index("<h2>Files to look at") : page.index("<h2>Unsigned images")]
    assert "<th>match checked</th>" in table, table
    assert "rocket_4x.jpg</td><td>DERIVED</td>" in table, table
    huge = table[table.index("rocket_huge.jpg</td>") :]
    assert "<td class='unchecked'>not checked here</td>" in huge.split("</tr>")[0], huge
    four = table[table.index("rocket_4x.jpg</td>") :]
    assert "<td>checked here too</td>" in four.split("</tr>")[0], four
    legend = page[page.index("<ul class='note' id='legend'>") :].split("</ul>")[0]
    assert "1 DERIVED or REVOKED_KEY file" in legend and "not checked here" in legend, legend
    # ... and the terminal's legend under the counts
    assert "not checked here" in out and "1 DERIVED or REVOKED_KEY file" in out, out


def test_a_resumed_scan_reads_rows_written_before_pixels_checked(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A journal written before scanpix55 (no ``pixels_checked`` in its rows) resumes: its
    rows keep no value (null: not said, never false), their CSV cells are empty, and the
    rows the resumed run writes have it."""
    folder = _desk(enrolled, tmp_path)
    (folder / "rocket_huge.jpg").rename(tmp_path / "later.jpg")
    report = tmp_path / "scan.jsonl"
    rc, out, err, rows = _scan(capsys, folder, report, server.address)
    assert rc == 0 and rows["rocket_4x.jpg"]["pixels_checked"] is True, (out, err)
    old = [json.loads(line) for line in report.read_text().splitlines()]
    report.write_text(
        "".join(
            json.dumps({k: v for k, v in r.items() if k != "pixels_checked"}) + "\n" for r in old
        )
    )
    (tmp_path / "later.jpg").rename(folder / "rocket_huge.jpg")
    capsys.readouterr()
    args = ["--report", str(report), "--server", server.address, "--workers", "0", "--resume"]
    rc = prov_main(["scan", str(folder), *args])
    out, err = capsys.readouterr()
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert rc == 0, (out, err)
    assert "pixels_checked" not in rows["rocket_4x.jpg"], rows  # not scanned again
    assert rows["rocket_huge.jpg"]["pixels_checked"] is False, rows
    cells = _cells(report)
    assert (cells["rocket_4x.jpg"]["status"], cells["rocket_4x.jpg"]["pixels_checked"]) == (
        "DERIVED",
        "",
    ), cells
    assert cells["rocket_huge.jpg"]["pixels_checked"] == "false", cells
    page = html_path(report).read_text()
    assert "<td class='unchecked'>not checked here</td>" in page, page


def test_a_resumed_row_whose_pixels_checked_is_no_boolean_is_named(tmp_path: Path) -> None:
    """An edited journal's ``pixels_checked`` of "yes" is refused on --resume, named, as
    the other fields are (`clients.scan.rowcheck`); true, false and null resume."""
    row = {"path": "a.jpg", "kind": "media", "status": "DERIVED", "error": None}
    ok = [json.dumps({**row, "path": f"{v}.jpg", "pixels_checked": v}) for v in (True, False)]
    assert len(_resume(tmp_path / "ok.jsonl", [*ok, json.dumps(row)]).done) == 3
    from provenance.core.errors import ConfigError

    with pytest.raises(ConfigError, match='its pixels_checked is "yes": true or false, or null'):
        _resume(tmp_path / "bad.jsonl", [json.dumps({**row, "pixels_checked": "yes"})])


@pytest.mark.parametrize(("status", "exit_code"), [("DERIVED", 10), ("REVOKED_KEY", 12)])
def test_verify_text_says_whether_the_pixels_were_checked_here(
    enrolled: Cli,
    server: ServerProc,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    status: str,
    exit_code: int,
) -> None:
    """`prov verify`'s text for exit 10 (and 12: a near copy of a capture logged after
    its key's revocation, the key revoked since before the capture was signed) has a
    ``match`` line: "checked here too" for a copy within this client's limits, "not
    checked here" naming the limit (over it: the service's word) for the 109 MP copy; the
    signed photo itself (nothing to check on pixels) has none."""
    since = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    a, device = sign_sample(enrolled, tmp_path, "rocket.jpg")
    if status == "REVOKED_KEY":
        rc, out, err = enrolled(
            "admin",
            "revoke",
            device,
            "--reason",
            "stolen",
            "--since",
            f"{since:%Y-%m-%dT%H:%M:%SZ}",
        )
        assert rc == 0, (out, err)
    small = _enlarged(a, tmp_path / "rocket_4x.jpg", 4)
    big = _enlarged(a, tmp_path / "rocket_huge.jpg")
    rc, out, err = _verify(capsys, str(small), "--server", server.address)
    assert rc == exit_code and f"status     {status}" in out, (rc, out, err)
    [line] = [x for x in out.splitlines() if x.startswith("  match ")]
    assert line == (
        "  match      checked here too: this client hashed the file's own pixels and they"
        " match the claim's"
    ), out
    rc, out, err = _verify(capsys, str(big), "--server", server.address)
    assert rc == exit_code, (rc, out, err)
    [line] = [x for x in out.splitlines() if x.startswith("  match ")]
    assert line.startswith("  match      not checked here: the file is over this client's own"), out
    assert "100000000 pixels" in line and "the service's word" in line, line
    rc, out, err = _verify(capsys, str(a), "--server", server.address)
    assert rc == (0 if status == "DERIVED" else 12) and "  match " not in out, (rc, out, err)


@pytest.mark.parametrize(
    ("status", "extra"),
    [
        ("TAMPERED", {}),
        ("SIGNED_ORIGINAL", {}),
        ("UNSIGNED", {}),
        (None, {"error": "cannot read: denied"}),
        ("REVOKED_KEY", {"evidence": {"hash_match": True}}),  # of the exact bytes: no pixels
    ],
)
@pytest.mark.parametrize("value", [True, False])
def test_a_resumed_row_of_another_verdict_with_pixels_checked_is_named(
    tmp_path: Path, status: str | None, extra: dict[str, object], value: bool
) -> None:
    """An edited journal whose TAMPERED, SIGNED_ORIGINAL, UNSIGNED, error or exact
    REVOKED_KEY row says ``pixels_checked`` true or false (no scan writes that: null for
    any verdict that is no near copy's) is refused on --resume, named. Before, it resumed:
    the flagged table showed a TAMPERED file "not checked here", the CSV said "false", and
    the legend counted it among "DERIVED or REVOKED_KEY" files over this client's limits."""
    from provenance.core.errors import ConfigError

    row = {"path": "a.jpg", "kind": "media", "status": status, **extra, "pixels_checked": value}
    with pytest.raises(ConfigError, match="its pixels_checked is (true|false): null for"):
        _resume(tmp_path / "bad.jsonl", [json.dumps(row)])


def test_a_resumed_near_copys_row_with_pixels_checked_resumes(tmp_path: Path) -> None:
    """DERIVED and a near REVOKED_KEY (hash_match false, or no evidence said) keep their
    ``pixels_checked``, true or false."""
    rows = [
        {"path": f"{n}.jpg", "kind": "media", "status": s, "evidence": e, "pixels_checked": v}
        for n, (s, e, v) in enumerate(
            [
                ("DERIVED", None, False),
                ("DERIVED", {"hash_match": False}, True),
                ("REVOKED_KEY", {"hash_match": False}, False),
                ("REVOKED_KEY", None, True),
            ]
        )
    ]
    assert len(_resume(tmp_path / "ok.jsonl", [json.dumps(r) for r in rows]).done) == 4


def test_a_near_copy_over_the_limits_with_no_sidecar_says_no_near_copy_was_searched(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 109 MP near copy of a signed photo, with no sidecar, is over this client's image
    limits: the scan looks it up by its SHA-256 alone (only hashes travel), so it reads
    UNSIGNED, while `prov verify` uploads it and the service, started with higher limits,
    answers DERIVED (the match its word). The row, its CSV note and the page's note say
    so: no near copy was searched for, and `prov verify` may find one. Before
    (revscanpix55) the row said only that its SHA-256 was looked up, the page's note
    "over a size limit", nothing of near copies: a signed original hidden behind UNSIGNED.
    The legend (page and terminal) now counts such images."""
    folder = tmp_path / "desk"
    folder.mkdir()
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    big = _enlarged(a, folder / "rocket_huge.jpg")
    report = tmp_path / "scan.jsonl"
    rc, out, err, rows = _scan(capsys, folder, report, server.address)
    assert rc == 0, (out, err)
    row = rows["rocket_huge.jpg"]
    assert (row["status"], row["kind"], row["pixels_checked"]) == ("UNSIGNED", "file", None), row
    first = row["reasons"][0]
    assert "100000000 pixels" in first and "no near copy" in first, row
    assert "`prov verify`" in first and "higher limits" in first, row
    assert "no near copy" in _cells(report)["rocket_huge.jpg"]["note"]
    page = html_path(report).read_text()
    legend = unescape(page[page.index("<ul class='note' id='legend'>") :].split("</ul>")[0])
    assert "1 image is over this client's own image limits" in legend, legend
    assert "no near copy of a signed capture was searched for" in legend, legend
    assert "no near copy of a signed capture was searched for" in out, out  # the terminal's
    rc, out, err = _verify(capsys, str(big), "--server", server.address, "--json")
    assert rc == 10 and json.loads(out)["pixels_checked"] is False, (rc, out, err)


def test_an_image_over_the_byte_limit_says_no_near_copy_was_searched(tmp_path: Path) -> None:
    """An image over the scan's byte limit is measured by its SHA-256 alone, its note
    saying no near copy was searched for (`clients.scan.hashing.measure`); a corrupt image,
    which no limit of a service decodes, does not say `prov verify` may find one."""
    from clients.scan.hashing import measure
    from clients.scan.sources import FileItem
    from provenance.media.assets import AssetLimits

    photo = tmp_path / "cat.jpg"
    shutil.copy(UNSIGNED_PHOTO, photo)
    size = photo.stat().st_size
    m = measure(FileItem("cat.jpg", str(photo), size), AssetLimits(max_image_bytes=size - 1))
    assert m.kind == "file" and m.note is not None, m
    assert "no near copy" in m.note and "`prov verify`" in m.note, m.note
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photo.read_bytes()[: size // 3])
    m = measure(FileItem("broken.jpg", str(broken), size // 3), AssetLimits())
    assert m.kind == "file" and m.note is not None and "`prov verify`" not in m.note, m


#: Images past a limit on their structure: file name, what their note says of the limit.
_PAST_A_STRUCTURE_LIMIT = {
    "text.png": "decompresses to more than 1 MiB",
    "chunks.png": "chunks, the limit here",
    "scans.jpg": "scans, the limit here",
}


@pytest.mark.parametrize("name", sorted(_PAST_A_STRUCTURE_LIMIT))
def test_an_image_past_a_fixed_structure_limit_does_not_send_it_to_prov_verify(
    tmp_path: Path, name: str
) -> None:
    """An image past a limit on its structure that is a constant of this code, the same
    in every service (a PNG text chunk inflating past 1 MiB, more than MAX_PNG_CHUNKS
    chunks, a JPEG of more than MAX_JPEG_SCANS scans), is measured by its SHA-256 alone,
    its note saying no near copy was searched for, but not that `prov verify` may find
    one on a service "started with higher limits (`prov serve --max-megapixels`,
    `--max-image-mb`, `--decode-budget-mb`)": none of these flags moves that limit, and
    `prov verify` of it unlogged is refused (RESOURCE_EXHAUSTED) by every service. Nor
    is it counted among the images over this client's own limits. Before (since
    h-client58 for the text chunk), each note gave that advice."""
    from clients.scan.hashing import NO_NEAR_SEARCH, measure
    from clients.scan.sources import FileItem
    from provenance.media.assets import AssetLimits
    from tests.test_jpeg_scans import _many_scans
    from tests.test_png_chunks import _TWO_MIB, _chunk, _with_chunks, _with_empty_chunks

    data = {
        "text.png": lambda: _with_chunks(b"", _chunk(b"zTXt", b"k\0\0" + _TWO_MIB)),
        "chunks.png": lambda: _with_empty_chunks(MAX_PNG_CHUNKS),
        "scans.jpg": lambda: _many_scans(MAX_JPEG_SCANS),
    }[name]()
    said = _PAST_A_STRUCTURE_LIMIT[name]
    path = tmp_path / name
    path.write_bytes(data)
    m = measure(FileItem(name, str(path), len(data)), AssetLimits())
    assert m.kind == "file" and m.note is not None, m
    assert said in m.note and "no near copy" in m.note, m.note
    assert "`prov verify`" not in m.note and NO_NEAR_SEARCH not in m.note, m.note
    assert "every service holds this limit" in m.note, m.note
