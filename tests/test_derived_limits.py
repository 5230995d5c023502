"""A near copy's verdict on a file over the client's own decode limits is not a forgery.

`prov verify` and `prov web` check a DERIVED (or near REVOKED_KEY) answer by hashing the
file's pixels themselves (`clients.derived.check_derived`), within this client's image
limits (`provenance.media.assets.AssetLimits`: 100 megapixels, 256 MiB). A service started
with higher limits (`prov serve --max-megapixels 150`) honestly answers DERIVED for a
copy the client cannot decode within its own: the client must then show that verdict,
marked as not checked by pixels (``pixels_checked: false`` and a reason saying why),
not refuse it as a forged answer (exit 3, 502). A real `prov serve`, a real `prov web`,
the real CLI, a real 109-megapixel JPEG (1.6 MB: decoded at 1/8 scale by the service).
The page `prov serve --http` runs in the service's own process knows its limits, and
checks such a copy within them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import Cli, ServerProc, read_line, sign_sample, start_server, start_web
from tests.test_cited_binding import _verify

#: Megapixels the service decodes in this module: over the client's default 100.
SERVICE_MEGAPIXELS = 150


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    """`prov serve --max-megapixels 150 --http 127.0.0.1:0` (the ``cli`` fixture talks to
    it; its page's address is its "web on" line)."""
    srv = start_server(
        tmp_path / "big.db", "--max-megapixels", str(SERVICE_MEGAPIXELS), "--http", "127.0.0.1:0"
    )
    yield srv
    srv.stop()


def _enlarged(photo: Path, out: Path, factor: int = 20) -> Path:
    """``photo`` enlarged ``factor`` times each way (nearest neighbour: flat 20x20 blocks,
    a small JPEG), a near copy of it: rocket.jpg's 640x427 gives 12800x8540, 109 MP."""
    img = Image.open(photo).convert("RGB")
    size = (img.width * factor, img.height * factor)
    img.resize(size, Image.Resampling.NEAREST).save(out, "JPEG", quality=85)
    return out


def test_an_honest_derived_over_the_clients_limits_is_shown_unchecked(
    enrolled: Cli, server: ServerProc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(h-webimg54: before, `prov verify` exited 3 "SERVER EVIDENCE REFUSED ... cannot be
    hashed here ... over the limit of 100000000 pixels", and `prov web` answered 502 for
    the service's honest DERIVED.)"""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    big = _enlarged(a, tmp_path / "rocket_huge.jpg")
    rc, out, err = _verify(capsys, str(big), "--server", server.address, "--json")
    assert rc == 10, (rc, out, err)
    doc = json.loads(out)
    assert doc["status"] == "DERIVED" and doc["pixels_checked"] is False, doc
    assert any("not checked here" in r and "100000000 pixels" in r for r in doc["reasons"]), doc
    rc, out, err = _verify(capsys, str(big), "--server", server.address)
    assert rc == 10 and "not checked here" in out, (rc, out, err)
    web = start_web(server.address)
    try:
        with httpx.Client(base_url=web.address, timeout=120) as http:
            files = {"file": (big.name, big.read_bytes())}
            r = http.post("/api/v1/verify", files=files, params={"detect": "0"})
            assert r.status_code == 200, (r.status_code, r.text)
            body = r.json()
            assert body["status"] == "DERIVED" and body["pixels_checked"] is False, body
            assert any("not checked here" in x for x in body["reasons"]), body
            page = http.post("/verify", files=files, params={"detect": "0"})
            assert page.status_code == 200 and 'id="pixels-unchecked"' in page.text, page.text
            # a copy within the client's limits is checked, and says so
            small = {"file": (a.name, _enlarged(a, tmp_path / "rocket_4x.jpg", 4).read_bytes())}
            r = http.post("/api/v1/verify", files=small, params={"detect": "0"})
            assert r.status_code == 200 and r.json()["status"] == "DERIVED", r.text
            assert r.json()["pixels_checked"] is True, r.json()
            page = http.post("/verify", files=small, params={"detect": "0"})
            assert page.status_code == 200 and 'id="pixels-checked"' in page.text, page.text
    finally:
        web.stop()


def test_the_services_own_page_checks_such_a_copy_within_the_services_limits(
    enrolled: Cli, server: ServerProc, tmp_path: Path
) -> None:
    """`prov serve --http`'s page decodes a near copy within its service's image limits
    (`provenance.web.upload.UploadLimits.image`): the 109 MP copy's match is checked
    there, ``pixels_checked: true`` (h-webimg54: before, the defaults: not checked, and
    before that a 502)."""
    a, _ = sign_sample(enrolled, tmp_path, "rocket.jpg")
    big = _enlarged(a, tmp_path / "rocket_huge.jpg")
    with httpx.Client(base_url=read_line(server.proc, "web on "), timeout=120) as http:
        files = {"file": (big.name, big.read_bytes())}
        r = http.post("/api/v1/verify", files=files, params={"detect": "0"})
        assert r.status_code == 200, (r.status_code, r.text)
        body = r.json()
        assert body["status"] == "DERIVED" and body["pixels_checked"] is True, body
        assert not any("not checked here" in x for x in body["reasons"]), body
