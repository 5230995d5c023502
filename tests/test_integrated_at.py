"""The time a capture was logged (``integrated_at``, the server's clock) is the same
instant in every output, and every JSON one writes it alike: RFC 3339 with microseconds
and ``Z`` (``clients.report.iso_utc``), the whole precision the gRPC service's
Timestamp carries. The web API's entry listing gave whole seconds while its entry, the
verify report and `prov verify --json` gave microseconds. The text report and the web
pages, written for people, show whole seconds of the same instant. A real `prov serve
--http` holding the demo's signed captures, the real `prov verify`, real HTTP."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import httpx
import pytest

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.wire import convert as wire
from tests.conftest import DemoSite, demo_site

pytestmark = pytest.mark.slow

RFC3339_MICRO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    with demo_site(tmp_path_factory.mktemp("integrated-at"), web_separate=False) as s:
        yield s


def test_every_output_gives_the_same_logged_time(
    site: DemoSite, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = site.files.hopper
    args = ["verify", str(photo), "--no-detect", "--no-sidecar", "--server", site.grpc.address]
    capsys.readouterr()
    assert prov_main([*args, "--json"]) == 0
    log = json.loads(capsys.readouterr().out)["evidence"]["claim"]["log"]
    index, cli_json = log["leaf_index"], log["integrated_at"]

    # the gRPC service's own answer: a Timestamp, in whole microseconds
    client = ProvenanceClient(site.grpc.address)
    try:
        [entry], _ = client.entries(index, 1)
    finally:
        client.close()
    stamp = wire.pb.LogEntry.FromString(entry).integrated_at
    assert stamp.nanos % 1000 == 0, stamp
    _, at = wire.decode_entry(entry)
    expected = f"{at:%Y-%m-%dT%H:%M:%S}.{stamp.nanos // 1000:06d}Z"
    assert RFC3339_MICRO.fullmatch(expected)
    assert cli_json == expected

    with httpx.Client(base_url=site.web, timeout=120) as http:
        report = http.post(
            "/api/v1/verify",
            params={"detect": "false"},
            files={"file": (photo.name, photo.read_bytes())},
        ).json()
        listing = http.get("/api/v1/entries", params={"start": index, "limit": 1}).json()
        one = http.get(f"/api/v1/entries/{index}").json()
        manifest = http.get(f"/manifests/{index}").json()
        entry_page = http.get(f"/log/entries/{index}").text
        log_page = http.get("/log").text
        report_page = http.post("/verify", files={"file": (photo.name, photo.read_bytes())}).text
    assert report["evidence"]["claim"]["log"]["integrated_at"] == expected
    assert listing["entries"][0]["integrated_at"] == expected
    assert one["integrated_at"] == expected
    assert manifest["integrated_at"] == expected, manifest

    # for people: whole seconds of the same instant
    seconds = f"{at:%Y-%m-%d %H:%M:%S} UTC"
    capsys.readouterr()
    assert prov_main(args) == 0
    text = capsys.readouterr().out
    assert f"  log        leaf {index}, logged {seconds} (server clock)" in text, text
    logged = re.search(r'<dd id="logged-at">([^<]*)<', entry_page)
    assert logged is not None and logged.group(1).strip() == seconds, entry_page
    row = re.search(rf'<a href="/log/entries/{index}">#{index}</a></td><td>([^<]*)<', log_page)
    assert row is not None and row.group(1) == seconds, log_page
    assert html.escape(seconds) in report_page
