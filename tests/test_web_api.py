"""The HTTP API against a real `prov serve --http` holding the demo's signed captures:
every JSON endpoint, the C2PA soft binding resolution endpoints, hostile uploads
(empty, truncated, a text file named .jpg, a decompression bomb, oversize), the
upload rate limit, the security headers, and the server staying up throughout."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from clients.api import ProvenanceClient
from clients.cli import main as prov_main
from provenance.core import merkle
from provenance.core.binding import PerceptualHash, pdq_hash
from provenance.core.envelope import PAYLOAD_TYPE_ENROLL, sign_payload
from provenance.core.errors import ConfigError
from provenance.core.keys import DeviceKey
from provenance.log.checkpoint import NoteVerifier, open_checkpoint
from provenance.media.image import _PIL_FORMATS, FORMAT_NAMES, SUPPORTED_FORMATS
from provenance.media.video.frames import DEMUXERS
from provenance.web.app import WebConfig
from provenance.web.serve import bind
from provenance.web.serve import start_web as start_web_app
from tests.conftest import (
    ADMIN_TOKEN,
    FIXTURES,
    DemoSite,
    demo_site,
    enroll_key,
    start_server,
    start_web,
)
from tests.ports import kept_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    with demo_site(tmp_path_factory.mktemp("web-api"), web_separate=False) as s:
        yield s


@pytest.fixture(scope="module")
def http(site: DemoSite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.web, timeout=120) as c:
        yield c


@pytest.fixture
def small_web(site: DemoSite) -> Iterator[str]:
    """A second `prov web` on the same service that relays files of up to 1 MiB."""
    web = start_web(site.grpc.address, "--max-upload-mb", "1")
    yield web.address
    web.stop()


@pytest.fixture
def limited_web(site: DemoSite) -> Iterator[str]:
    """A second `prov web` on the same service taking 2 uploads a minute per client."""
    web = start_web(site.grpc.address, "--uploads-per-minute", "2")
    yield web.address
    web.stop()


def _verify(http: httpx.Client, path: Path, name: str | None = None, **kw: Any) -> httpx.Response:
    return http.post("/api/v1/verify", files={"file": (name or path.name, path.read_bytes())}, **kw)


def _error(r: httpx.Response, code: int, words: str) -> None:
    assert r.status_code == code, r.text
    body = r.json()["error"]
    assert body["code"] == code
    assert re.search(words, body["message"], re.I), body["message"]


def _alive(site: DemoSite, http: httpx.Client) -> None:
    assert site.grpc.proc.poll() is None
    assert http.get("/api/v1/checkpoint").status_code == 200


# ---------------------------------------------------------------- verify


def test_verify_answers_the_object_prov_verify_json_prints(
    site: DemoSite, http: httpx.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    for f in (site.files.hopper, site.files.derived, site.files.unsigned):
        web = _verify(http, f, params={"detect": "false"}).json()
        capsys.readouterr()
        prov_main(
            [
                "verify",
                str(f),
                "--json",
                "--no-detect",
                "--no-sidecar",
                "--server",
                site.grpc.address,
            ]
        )
        cli = json.loads(capsys.readouterr().out)
        assert web["path"] == f.name
        for d in (web, cli):
            d.pop("verified_at")
            d.pop("path")
        assert web == cli


def test_a_float_tiff_of_a_signed_photo_is_found_by_the_web_verify(
    site: DemoSite, http: httpx.Client
) -> None:
    """The web page's verify path decodes with the server's decoder: a 32-bit float TIFF
    (samples 0..1) of the signed Grace Hopper photo's grey is a DERIVED copy of it.
    Before, Pillow clipped its samples to 0..255, so it hashed as all black (quality 0)
    and read UNSIGNED."""
    with Image.open(site.files.hopper) as im:
        grey = np.asarray(im.convert("L"), np.float32) / 255
    buf = io.BytesIO()
    Image.fromarray(grey, "F").save(buf, "TIFF")
    r = http.post(
        "/api/v1/verify", files={"file": ("hopper.tif", buf.getvalue())}, params={"detect": "0"}
    )
    body = r.json()
    assert (r.status_code, body["status"]) == (200, "DERIVED"), body
    assert body["evidence"]["pdq_distance"] <= 8, body["evidence"]


def test_the_home_page_says_once_that_cryptography_decides(http: httpx.Client) -> None:
    """The home page said "Cryptography decides the verdict..." twice: under the verdicts'
    legend and in the footer every page carries. Once now (the footer's)."""
    page = " ".join(html.unescape(http.get("/").text).split())
    assert page.count("Cryptography decides the verdict") == 1, page
    assert "the detector only advises" in page


def test_the_page_and_the_cli_name_the_same_supported_formats(
    site: DemoSite, http: httpx.Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One list of formats, from the decoders (before: the page said "HEIC, TIFF, MP4, MOV,
    WebM or Matroska" and the CLI "GIF, TIFF, HEIC or a video container")."""
    words = "JPEG, PNG, WebP, GIF, TIFF, HEIC, MP4, MOV, WebM or Matroska"
    assert SUPPORTED_FORMATS == words
    assert set(FORMAT_NAMES) == set(_PIL_FORMATS) | set(DEMUXERS)  # what is decoded
    assert f"{words}, up to" in http.get("/").text
    notes = tmp_path / "notes.jpg"
    notes.write_text("just some text\n")
    capsys.readouterr()
    rc = prov_main(["verify", str(notes), "--no-detect", "--server", site.grpc.address])
    assert rc == 1 and f"(expected {words})" in " ".join(capsys.readouterr().err.split())


def test_verify_with_sidecar_and_video(site: DemoSite, http: httpx.Client) -> None:
    t = site.files.tampered
    r = http.post(
        "/api/v1/verify",
        files={
            "file": (t.name, t.read_bytes()),
            "sidecar": ("s.prov", Path(f"{t}.prov").read_bytes()),
        },
    )
    assert r.json()["status"] == "TAMPERED"
    v = _verify(http, site.files.small_video).json()
    assert v["status"] == "DERIVED"
    assert v["evidence"]["video_match"]["matched"] is True
    assert v["evidence"]["video_match"]["original_start_s"] == 0.0


def test_large_upload_is_relayed_as_it_streams(site: DemoSite, http: httpx.Client) -> None:
    """A 19 MB PNG (over the 8 MiB held in memory) reaches the service whole."""
    noise = np.random.default_rng(7).integers(0, 256, (2500, 2500, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG", compress_level=1)
    data = buf.getvalue()
    assert len(data) > 9 * 1024 * 1024
    r = http.post("/api/v1/verify", files={"file": ("noise.png", data)}, params={"detect": "0"})
    body = r.json()
    assert body["status"] == "UNSIGNED", body
    assert body["file"]["size"] == len(data)
    assert body["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    # a sidecar sent after a file that large cannot reach the service's header in time
    r = http.post(
        "/api/v1/verify",
        files={"file": ("noise.png", data), "sidecar": ("s.prov", b"{}")},
    )
    _error(r, 400, "send the sidecar field before the file")


# ---------------------------------------------------------------- hostile uploads


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width * 3 + 1) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bad_uploads_get_clear_errors_and_the_server_stays_up(
    site: DemoSite, http: httpx.Client, tmp_path: Path
) -> None:
    jpeg = site.files.hopper.read_bytes()
    cases = [
        ({"file": ("empty.jpg", b"")}, 400, "empty file"),
        ({"file": ("notes.jpg", b"just some text\n" * 50)}, 400, "unrecognised file format"),
        ({"file": ("bomb.png", _bomb_png(40_000, 40_000))}, 413, "pixel|megapixel|limit"),
        ({"sidecar": ("x.prov", b"not json")}, 400, "sidecar|json|no field named `file`"),
    ]
    for files, code, words in cases:
        _error(http.post("/api/v1/verify", files=files), code, words)
        _alive(site, http)
    # a damaged photo is judged on its bytes, as `prov scan` judges it (before: a 400)
    r = http.post("/api/v1/verify", files={"file": ("half.jpg", jpeg[: len(jpeg) // 2])})
    assert r.status_code == 200 and r.json()["status"] == "UNSIGNED", r.text
    assert any(
        x.startswith("could not decode the image: truncated or corrupt")
        for x in r.json()["reasons"]
    ), r.text
    # no pixels were decoded: the reasons say only the bytes were looked up (before:
    # "no signed claim in the log matches these bytes or these pixels")
    assert r.json()["reasons"][0] == "no signed claim in the log matches these bytes", r.text
    # not a form at all
    _error(http.post("/api/v1/verify", content=b"raw"), 400, "multipart/form-data")
    # the file under another field name (curl -F photo=@h.jpg): a 400 naming the field
    # expected, whatever its size (before: 413 "larger than 1,024 bytes" for a photo)
    for body in (jpeg, b"tiny"):
        _error(
            http.post("/api/v1/verify", files={"photo": ("h.jpg", body)}),
            400,
            r"the file came in the form field `photo`; send it in the field `file`"
            r" \(e\.g\. curl -F file=@h\.jpg\)",
        )
        _alive(site, http)
    # a large value in a field that is no file (curl -F photo=<h.jpg): 400 as well
    _error(
        http.post("/api/v1/verify", data={"photo": jpeg.decode("latin-1")}, files={"x": b""}),
        400,
        r"form field `photo` is larger than 1,024 bytes; a file goes in the field `file`",
    )
    # a multipart body that stops before its closing boundary
    head = b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    r = http.post(
        "/api/v1/verify",
        content=head + jpeg[:5000],
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    _error(r, 400, "truncated upload")
    # a part whose headers are garbage
    r = http.post(
        "/api/v1/verify",
        content=b"--XyZ\r\nnot a header\x00\r\n\r\ndata\r\n--XyZ--\r\n",
        headers={"content-type": "multipart/form-data; boundary=XyZ"},
    )
    _error(r, 400, "malformed")
    # a client that goes away mid-upload
    parts = urlsplit(site.web)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(
            b"POST /api/v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9000000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' + jpeg
        )
    # a malformed sidecar next to a good file
    r = http.post(
        "/api/v1/verify",
        files={"sidecar": ("x.prov", b"{not json"), "file": ("h.jpg", jpeg)},
    )
    assert r.status_code == 400, r.text
    _alive(site, http)
    assert _verify(http, site.files.hopper).json()["status"] == "SIGNED_ORIGINAL"


def test_a_sidecar_sent_as_the_file_is_named_as_one(site: DemoSite, http: httpx.Client) -> None:
    """A FILE.prov chosen as the file to verify (the page's file field, or curl -F
    file=@photo.jpg.prov) is told to be sent as the sidecar of the photo it describes,
    as `prov verify photo.jpg.prov` says. Before, the page relayed it and answered
    "unsupported or unrecognised file format (expected JPEG, PNG, ...)", which says
    nothing of what to do with it."""
    sidecar = Path(str(site.files.tampered) + ".prov")
    r = http.post("/api/v1/verify", files={"file": (sidecar.name, sidecar.read_bytes())})
    _error(
        r,
        400,
        r"hopper_edited\.jpg\.prov is a provenance sidecar: send the file it describes"
        r" \(hopper_edited\.jpg\) in the field `file` and this one in the field `sidecar`",
    )
    page = http.post("/verify", files={"file": (sidecar.name, sidecar.read_bytes())})
    assert page.status_code == 400 and "is a provenance sidecar" in page.text


def test_a_form_split_inside_a_part_header_is_read_whole(
    site: DemoSite, http: httpx.Client
) -> None:
    """A form's bytes arrive in whatever pieces the network makes. Before, a piece that
    ended inside a part's header name (``Content-Dispo`` | ``sition: ...``) lost the
    name's start: the part lost its name and a valid upload got 413 "the form field ``
    is larger than 1,024 bytes"."""
    jpeg = site.files.hopper.read_bytes()
    sidecar = Path(f"{site.files.hopper}.prov").read_bytes()
    form = (
        b'--XyZ\r\nContent-Disposition: form-data; name="sidecar"; filename="h.prov"\r\n\r\n'
        + sidecar
        + b'\r\n--XyZ\r\nContent-Disposition: form-data; name="file"; filename="h.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + jpeg + b"\r\n--XyZ--\r\n"
    )
    head = (
        b"Content-Type: multipart/form-data; boundary=XyZ\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n" % len(form)
    )
    first = form.index(b"Content-Disposition")
    second = form.index(b"Content-Disposition", first + 1)
    for cut in (first + 7, second + 7, second + 14, form.index(b"Content-Type") + 8):

        def pieces(cut: int = cut) -> Iterator[bytes]:
            yield form[:cut]
            time.sleep(0.3)  # the server reads the first piece alone
            yield form[cut:]

        answer = _raw_post(site.web, head, pieces())
        assert answer.startswith("HTTP/1.1 200 "), (cut, answer[-300:])
        body = json.loads(answer.partition("\r\n\r\n")[2])
        assert body["status"] == "SIGNED_ORIGINAL" and body["path"] == "h.jpg", body
    _alive(site, http)


def _raw_post(url: str, head: bytes, body: Iterator[bytes]) -> str:
    """POST over a plain socket, stop sending when the server stops reading (it may
    answer before the body ends), and return the status line and headers."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
        try:
            s.sendall(b"POST /api/v1/verify HTTP/1.1\r\nHost: localhost\r\n" + head + b"\r\n")
            for block in body:
                s.sendall(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return _read_answer(s)


def _read_answer(s: socket.socket) -> str:
    """An HTTP answer's status line, headers and body (by its Content-Length)."""
    answer = b""
    try:
        while got := s.recv(65536):
            answer += got
            head, sep, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            if sep and (length is None or len(body) >= int(length.group(1))):
                break
    except ConnectionResetError:
        pass
    return answer.decode("latin-1")


def test_oversize_uploads_are_refused(site: DemoSite, small_web: str) -> None:
    ctype = b"Content-Type: multipart/form-data; boundary=b\r\n"
    # declared too large: refused before the body is read
    answer = _raw_post(small_web, ctype + b"Content-Length: 5000000000\r\n", iter([b"--b\r\n"]))
    assert answer.startswith("HTTP/1.1 413"), answer
    # each refusal names the limit the page states ("up to 1.0 MiB"), not the form's
    # allowance for a sidecar and framing (it said "this page's limit is 5,308,416 bytes")
    page = httpx.get(small_web + "/").text
    assert "up to 1.0 MiB" in page
    assert "limit of 1.0 MiB (1,048,576 bytes) per file" in answer, answer

    # streamed without a length past the limit: refused as it arrives
    def body() -> Iterator[bytes]:
        def chunk(data: bytes) -> bytes:
            return f"{len(data):x}\r\n".encode() + data + b"\r\n"

        yield chunk(
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.jpg"\r\n\r\n'
        )
        yield chunk(b"\xff\xd8\xff")
        for _ in range(64):  # 4 MiB, over the 1 MiB limit
            yield chunk(bytes(65536))
        yield chunk(b"\r\n--b--\r\n") + b"0\r\n\r\n"

    answer = _raw_post(small_web, ctype + b"Transfer-Encoding: chunked\r\n", body())
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "limit of 1.0 MiB (1,048,576 bytes) per file" in answer, answer
    # the same file within the limit goes through
    with httpx.Client(base_url=small_web, timeout=60) as c:
        r = c.post("/api/v1/verify", files={"file": ("h.jpg", site.files.hopper.read_bytes())})
        assert r.json()["status"] == "SIGNED_ORIGINAL"


def test_uploads_are_rate_limited_per_client(site: DemoSite, limited_web: str) -> None:
    with httpx.Client(base_url=limited_web, timeout=60) as c:
        codes = [
            c.post("/api/v1/verify", files={"file": ("h.jpg", site.files.hopper.read_bytes())})
            for _ in range(4)
        ]
        assert [r.status_code for r in codes][:2] == [200, 200]
        limited = [r for r in codes if r.status_code == 429]
        assert limited, [r.status_code for r in codes]
        assert int(limited[0].headers["retry-after"]) >= 1
        _error(limited[0], 429, "too many uploads")
        # a forged X-Forwarded-For does not make a new client (proxies are not trusted)
        forged = c.post(
            "/api/v1/verify",
            files={"file": ("h.jpg", site.files.hopper.read_bytes())},
            headers={"X-Forwarded-For": "203.0.113.9"},
        )
        _error(forged, 429, "too many uploads")
        # reads are not limited
        assert c.get("/api/v1/checkpoint").status_code == 200


def _from(address: str, base: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (a loopback address: the
    web counts each as another visitor)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=base, transport=transport, timeout=60)


def test_log_and_device_reads_are_rate_limited_per_visitor(site: DemoSite) -> None:
    web = start_web(site.grpc.address, "--reads-per-minute", "4")
    try:
        with _from("127.0.0.1", web.address) as flood, _from("127.0.0.2", web.address) as other:
            dev = flood.get("/api/v1/entries/0").json()["device"]["device_id"]
            paths = ["/api/v1/checkpoint", f"/api/v1/devices/{dev}", "/api/v1/entries?start=0"]
            assert [flood.get(p).status_code for p in paths] == [200, 200, 200]
            api = flood.get("/api/v1/proofs/inclusion?index=0")
            _error(api, 429, r"too many pages and API calls reading the log or devices from"
                   r" 127\.0\.0\.1: at most 4 a minute \(this server's limit, --reads-per-minute\);"
                   r" try again in \d+ s")  # fmt: skip
            assert int(api.headers["retry-after"]) >= 1
            for page in ["/log", "/log/entries/0", f"/log/devices/{dev}", "/manifests/0"]:
                r = flood.get(page)
                assert r.status_code == 429, (page, r.status_code)
                assert int(r.headers["retry-after"]) >= 1
                if page.startswith("/log"):
                    assert r.headers["content-type"].startswith("text/html")
                    assert "too many pages and API calls" in r.text
                else:
                    _error(r, 429, "too many pages and API calls")
            # a forged X-Forwarded-For does not make a new visitor (no proxy is trusted)
            forged = flood.get("/api/v1/checkpoint", headers={"X-Forwarded-For": "203.0.113.9"})
            _error(forged, 429, "too many pages")
            # pages that read neither are not counted
            assert flood.get("/").status_code == 200
            assert flood.get("/openapi.json").status_code == 200
            # another visitor is served as before
            for p in [*paths, "/log"]:
                assert other.get(p).status_code == 200, p
    finally:
        web.stop()


def test_reads_are_counted_per_visitor_behind_a_trusted_proxy(site: DemoSite) -> None:
    web = start_web(site.grpc.address, "--reads-per-minute", "2", "--trusted-proxy", "127.0.0.1")
    try:
        with _from("127.0.0.1", web.address) as proxy:
            a = {"X-Forwarded-For": "198.51.100.7"}
            b = {"X-Forwarded-For": "198.51.100.8"}
            assert [proxy.get("/api/v1/checkpoint", headers=a).status_code for _ in range(3)] == [
                200,
                200,
                429,
            ]
            _error(proxy.get("/api/v1/checkpoint", headers=a), 429, r"from 198\.51\.100\.7")
            assert proxy.get("/api/v1/checkpoint", headers=b).status_code == 200
    finally:
        web.stop()


def test_reads_per_minute_0_is_no_limit(site: DemoSite) -> None:
    # more reads than the default allows in a burst (`READS_PER_MINUTE`), all answered
    web = start_web(site.grpc.address, "--reads-per-minute", "0")
    try:
        with _from("127.0.0.1", web.address) as c:
            codes = {c.get("/api/v1/proofs/inclusion?index=0").status_code for _ in range(130)}
        assert codes == {200}
    finally:
        web.stop()


def _enroll_one(address: str) -> None:
    """Enroll a new device on the service at ``address`` (its log gets an entry)."""
    key = DeviceKey.generate()
    with ProvenanceClient(address, ADMIN_TOKEN) as client:
        token, _ = client.create_enrollment_token()
        client.enroll(token, key.public_key, sign_payload(key, PAYLOAD_TYPE_ENROLL, token.encode()))


def test_the_web_keeps_the_log_key_until_a_restarted_service_has_another(
    tmp_path: Path,
) -> None:
    first = start_server(tmp_path / "a.db")
    address = first.address
    web = start_web(address)
    second = None
    try:
        _enroll_one(address)
        with httpx.Client(base_url=web.address, timeout=60) as c:
            before = c.get("/api/v1/checkpoint").json()
            first.stop()
            # another service, another log key, on the same address (kept meanwhile:
            # freed, the kernel could give it to another xdist worker's server on port 0)
            with kept_port(int(address.rsplit(":", 1)[1])):
                second = start_server(tmp_path / "b.db", "--listen", address)
            _enroll_one(address)
            deadline = time.monotonic() + 30
            r = c.get("/api/v1/checkpoint")
            while r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(0.2)  # the web's channel reconnecting
                r = c.get("/api/v1/checkpoint")
            after = r.json()
        assert r.status_code == 200, r.text
        assert after["log_key"] != before["log_key"]
        assert after["signature_verified"] is True
        open_checkpoint(after["checkpoint"], NoteVerifier.from_vkey(after["log_key"]))
    finally:
        web.stop()
        first.stop()
        if second is not None:
            second.stop()


# ---------------------------------------------------------------- the log


def test_an_explicit_tree_size_0_is_refused_not_taken_as_the_latest(http: httpx.Client) -> None:
    """``/api/v1/proofs/inclusion?index=1&tree_size=0``: a tree of size 0 holds no entry,
    so an explicit 0 (or any size not above the index) is a 400 saying tree_size must be
    at least index+1; left out, tree_size is the latest. Before: an explicit 0 was taken
    as the latest and answered a proof for another tree size than asked for."""
    for size in (0, 1):
        r = http.get("/api/v1/proofs/inclusion", params={"index": 1, "tree_size": size})
        _error(r, 400, rf"tree_size must be at least index\+1 \(2\).*tree of size {size}")
    latest = http.get("/api/v1/checkpoint").json()["size"]
    got = http.get("/api/v1/proofs/inclusion", params={"index": 1})
    assert got.status_code == 200, got.text
    assert got.json()["tree_size"] == latest


def test_an_explicit_second_size_below_first_or_0_is_refused(http: httpx.Client) -> None:
    """``/api/v1/proofs/consistency?first=1&second=0``: as tree_size above, an explicit
    second size of 0 was taken as the latest (a proof between other sizes than asked
    for), and one below first went on to the service. Now each is a 400 saying second
    must be at least first (and at least 1); left out, second is the latest."""
    for first, second in ((1, 0), (0, 0), (3, 2)):
        r = http.get("/api/v1/proofs/consistency", params={"first": first, "second": second})
        _error(r, 400, rf"second must be at least {max(first, 1)}.*leave second out")
    # so is the page's: /log/consistency?first=2&second=0 showed the proof from 2 to the
    # latest (200, "2 → 4 entries"), a size nobody asked for; its form's empty second
    # field is still the latest
    for first in (1, 2):
        page = http.get("/log/consistency", params={"first": first, "second": 0})
        assert page.status_code == 400, (first, page.status_code)
        shown = html.unescape(page.text)
        assert re.search(rf"second tree size must be at least {first}.*leave it empty", shown)
    assert http.get("/log/consistency", params={"first": 1, "second": ""}).status_code == 200
    latest = http.get("/api/v1/checkpoint").json()["size"]
    got = http.get("/api/v1/proofs/consistency", params={"first": 1})
    assert got.status_code == 200 and got.json()["second_size"] == latest, got.text


def test_consistency_sizes_no_proof_runs_between_are_said_plainly(http: httpx.Client) -> None:
    """A first size of 0 (``first=0&second=1``), or a size past the log's, is a 400 that
    says what is wrong with which parameter, on the API and on the page. Before: the
    service's "no consistency proof from size 0 to size 1" and "first size 9 is larger
    than second size 4" (a second size nobody gave), and "tree size 99 is beyond ..."
    for a parameter named second."""
    latest = http.get("/api/v1/checkpoint").json()["size"]
    cases = [
        ({"first": 0, "second": 1}, r"^first must be at least 1: a consistency proof starts"),
        ({"first": 0}, r"^first must be at least 1: .*every tree extends the empty one"),
        (
            {"first": latest + 5},
            rf"^first \({latest + 5}\) is past the log's size \({latest}\): it holds no tree"
            rf" of {latest + 5} entries yet",
        ),
        (
            {"first": 1, "second": latest + 5},
            rf"^second \({latest + 5}\) is past the log's size \({latest}\)",
        ),
    ]
    for params, words in cases:
        _error(http.get("/api/v1/proofs/consistency", params=params), 400, words)
        page = http.get("/log/consistency", params=params)
        assert page.status_code == 400, (params, page.status_code)
        shown = html.unescape(page.text)
        assert re.search(words.lstrip("^"), shown), (params, shown[-2000:])
    # the page takes an explicit second below first to the view (the API refuses it first)
    page = http.get("/log/consistency", params={"first": 3, "second": 2})
    assert page.status_code == 400 and "second (2) is below first (3)" in page.text, page.text


def test_checkpoint_is_signed_by_the_log_key(site: DemoSite, http: httpx.Client) -> None:
    cp = http.get("/api/v1/checkpoint").json()
    parsed = open_checkpoint(cp["checkpoint"], NoteVerifier.from_vkey(cp["log_key"]))
    assert parsed.size == cp["size"] == 4  # the demo camera's enrollment and 3 captures
    assert parsed.root_hash.hex() == cp["root_hash"]


def test_entries_proofs_and_lookup(site: DemoSite, http: httpx.Client) -> None:
    hopper = hashlib.sha256(site.files.hopper.read_bytes()).hexdigest()
    found = http.get("/api/v1/entries", params={"sha256": hopper}).json()["entries"]
    assert [e["index"] for e in found] == [1]  # entry 0: the demo camera's enrollment
    entry = found[0]
    assert entry["claim"]["sha256"] == hopper
    assert entry["inclusion"]["verified"] is True
    assert entry["device"]["label"] == "demo-camera"
    assert http.get("/api/v1/entries/3").json()["claim"]["media_type"].startswith("video/")
    page = http.get("/api/v1/entries", params={"start": 0, "limit": 5}).json()["entries"]
    assert [e["index"] for e in page] == [0, 1, 2, 3]
    assert page[0]["media_type"] == "key history: enrollment"
    assert page[3]["leaf_hash"] == http.get("/api/v1/entries/3").json()["leaf_hash"]
    enrollment = http.get("/api/v1/entries/0").json()
    assert enrollment["claim"] is None and enrollment["key_event"]["kind"] == "enrollment"
    assert enrollment["key_event"]["signature_verified"] is True
    assert enrollment["device"]["label"] == "demo-camera"
    _error(http.get("/api/v1/entries/4"), 404, "no entry 4")
    _error(http.get("/api/v1/entries/abc"), 400, "whole number")
    _error(http.get("/api/v1/entries", params={"sha256": "00" * 32}), 404, "no logged capture")
    _error(http.get("/api/v1/entries", params={"sha256": "xyz"}), 400, "64 hex digits")

    inc = http.get("/api/v1/proofs/inclusion", params={"index": 1, "tree_size": 4}).json()
    root = bytes.fromhex(http.get("/api/v1/checkpoint").json()["root_hash"])
    merkle.verify_inclusion(
        1, 4, bytes.fromhex(inc["leaf_hash"]), [bytes.fromhex(p) for p in inc["proof"]], root
    )
    _error(http.get("/api/v1/proofs/inclusion", params={"index": 5}), 400, "leaf|range|tree")

    first_root = enrollment["leaf_hash"]  # the root of a tree of one entry is its leaf hash
    ok = http.get("/api/v1/proofs/consistency", params={"first": 1, "first_root": first_root})
    assert ok.json()["verified"] is True
    bad = http.get("/api/v1/proofs/consistency", params={"first": 1, "first_root": "11" * 32})
    assert bad.json()["verified"] is False

    rgb = np.asarray(Image.open(site.files.derived).convert("RGB"))
    h = pdq_hash(rgb)
    q = {
        "queries": [
            {"ref": "a", "sha256": hopper},
            {"ref": "b", "pdq": [{"hash": h.hex, "quality": h.quality}]},
            {"ref": "c", "sha256": "00" * 32},
        ]
    }
    res = {r["ref"]: r for r in http.post("/api/v1/lookup", json=q).json()["results"]}
    assert res["a"]["status"] == "SIGNED_ORIGINAL"
    assert res["b"]["status"] == "DERIVED"
    assert res["b"]["evidence"]["claim"]["log"]["leaf_index"] == 2
    assert res["c"]["status"] == "UNSIGNED"
    _error(http.post("/api/v1/lookup", json={"queries": [{"pdq": "x"}]}), 400, "pdq must be a list")
    _error(http.post("/api/v1/lookup", content=b"{"), 400, "not valid JSON")
    many = {"queries": [{"sha256": hopper}] * 1001}
    _error(http.post("/api/v1/lookup", json=many), 413, "limit")


def test_a_lookup_field_the_api_does_not_know_is_refused_not_ignored(
    site: DemoSite, http: httpx.Client
) -> None:
    """A misspelt field changed the answer without a word (review att45): a PDQ hash of
    quality 20 is too weak to match (UNSIGNED), but sent as ``"qualty": 20`` it was read
    as quality 100 and matched (DERIVED); hashes sent in ``"pdqs"`` were dropped and the
    report said no perceptual hash could be computed. Now a 400 names the field and the
    ones the API reads, at each level of the body."""
    rgb = np.asarray(Image.open(site.files.derived).convert("RGB"))
    h = pdq_hash(rgb).hex
    weak = {"queries": [{"pdq": [{"hash": h, "quality": 20}]}]}
    assert http.post("/api/v1/lookup", json=weak).json()["results"][0]["status"] == "UNSIGNED"
    for body, where, field, known in (
        (
            {"queries": [{"pdq": [{"hash": h, "qualty": 20}]}]},
            "queries[0].pdq[0]",
            "qualty",
            "`quality`",
        ),
        (
            {"queries": [{"sha256": "00" * 32, "pdqs": [{"hash": h}]}]},
            "queries[0]",
            "pdqs",
            "`pdq`",
        ),
        (
            {"queries": [{"pdq": [{"hash": h}]}], "max_results": 5},
            "the body",
            "max_results",
            "`queries`",
        ),
        ({"queries": [{"sha256": "00" * 32, "\u202e": 1}]}, "queries[0]", "\\u202e", "`ref`"),
    ):
        r = http.post("/api/v1/lookup", json=body)
        _error(r, 400, re.escape(f"{where} has a field `{field}` this API does not read"))
        assert known in r.json()["error"]["message"]


def test_soft_binding_resolution_api(site: DemoSite, http: httpx.Client) -> None:
    h = pdq_hash(np.asarray(Image.open(site.files.derived).convert("RGB")))
    value = base64.b64encode(h.hash).decode()
    got = http.get("/matches/byBinding", params={"alg": "pdq", "value": value}).json()
    assert [m["manifestId"] for m in got["matches"]] == ["2"]
    assert 80 <= got["matches"][0]["similarityScore"] <= 100
    posted = http.post("/matches/byBinding", json={"alg": "pdq", "value": value}).json()
    assert posted == got
    far = base64.b64encode(bytes(32)).decode()
    assert http.get("/matches/byBinding", params={"alg": "pdq", "value": far}).json() == {
        "matches": []
    }
    by_content = http.post(
        "/matches/byContent",
        content=site.files.derived.read_bytes(),
        headers={"content-type": "image/jpeg"},
    ).json()
    assert [m["manifestId"] for m in by_content["matches"]] == ["2"]
    # byContent takes the raw bytes; the form /api/v1/verify takes is named as the mistake
    _error(
        http.post("/matches/byContent", files={"file": ("d.jpg", site.files.derived.read_bytes())}),
        400,
        "as the request body",
    )
    manifest = http.get("/manifests/2").json()
    assert manifest["index"] == 2 and manifest["inclusion"]["verified"] is True
    assert http.get("/services/supportedAlgorithms").json()["fingerprints"] == [{"alg": "pdq"}]
    _error(
        http.get("/matches/byBinding", params={"alg": "com.adobe.trustmark.Q", "value": value}),
        400,
        "unsupported soft binding algorithm",
    )
    _error(http.get("/matches/byBinding", params={"alg": "pdq", "value": "!!"}), 400, "base64")
    _error(http.get("/manifests/99"), 404, "no entry 99")


def test_a_binding_written_into_the_url_as_it_is_is_read(
    site: DemoSite, http: httpx.Client
) -> None:
    """A base64 binding pasted into the URL as it is (``value=+/v7...``: a query's ``+``
    reads as a space) or without its ``=`` padding (base64url usually drops it) is read
    (review att47); before, both were "value is not valid base64", though a space is no
    base64 character and the padding says nothing. Still refused: text that is no
    base64 in any of these ways, in words naming the alphabets."""
    raw = bytearray(pdq_hash(np.asarray(Image.open(site.files.rocket).convert("RGB"))).hash)
    raw[0] = (0b111110 << 2) | (raw[0] & 0b11)  # its first character "+", 6 bits off at most
    value = base64.b64encode(bytes(raw)).decode()
    assert value.startswith("+") and value.endswith("=")
    encoded = http.get("/matches/byBinding", params={"alg": "pdq", "value": value}).json()
    assert [m["manifestId"] for m in encoded["matches"]] == ["2"], encoded
    for written in (value, value.rstrip("="), value.rstrip("=").replace("+", "-")):
        r = http.get(f"/matches/byBinding?alg=pdq&value={written}")
        assert r.status_code == 200 and r.json() == encoded, (written, r.text)
    posted = http.post("/matches/byBinding", json={"alg": "pdq", "value": value.rstrip("=")})
    assert posted.status_code == 200 and posted.json() == encoded, posted.text
    for bad in ("!!", "ab=c", "a b"):
        r = http.post("/matches/byBinding", json={"alg": "pdq", "value": bad})
        _error(r, 400, r"value is not base64 \(A-Z, a-z, 0-9 and \+ /, or - _")


def test_openapi_describes_every_endpoint(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/api/v1/verify",
        "/api/v1/lookup",
        "/api/v1/checkpoint",
        "/api/v1/entries",
        "/api/v1/entries/{index}",
        "/api/v1/proofs/inclusion",
        "/api/v1/proofs/consistency",
        "/api/v1/devices/{device_id}",
        "/matches/byBinding",
        "/matches/byContent",
        "/manifests/{manifestId}",
    ):
        assert path in doc["paths"], path
    _error(http.get("/api/v1/nothing"), 404, "no API endpoint")


# ---------------------------------------------------------------- pages and headers


def test_every_response_carries_the_security_headers(site: DemoSite, http: httpx.Client) -> None:
    for path in (
        "/",
        "/log",
        "/log/entries/0",
        "/static/app.js",
        "/api/v1/checkpoint",
        "/nope",
        "/api/v1/entries/99",
    ):
        r = http.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert "default-src 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff", path
    page = http.get("/").text
    assert "<script src=" in page and not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert " style=" not in page


def test_the_connection_guard_s_own_answers_carry_the_security_headers(site: DemoSite) -> None:
    """The answers the HTTP guard writes itself, before the app sees a request (a 400 for
    a request h11 cannot read, whose message holds bytes of the request; 414 and 431 for
    a head too long), carry the headers every other answer does, and ``no-store``: before,
    only Content-Type, so no ``nosniff`` and a 414 (cacheable by default, RFC 9110
    15.1) open to a cache."""
    host, port = urlsplit(site.web).hostname or "", urlsplit(site.web).port or 0
    heads = {
        400: b"POST /api/v1/lookup HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        414: b"GET /log?q=" + b"a" * 17000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431: b"GET /log HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n",
    }
    for status, head in heads.items():
        with socket.create_connection((host, port), timeout=60) as s:
            s.sendall(head)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.partition(b"\r\n\r\n")[0].decode().lower().split("\r\n")
        assert lines[0].startswith(f"http/1.1 {status} "), (status, lines)
        assert "x-content-type-options: nosniff" in lines, (status, lines)
        assert "cache-control: no-store" in lines, (status, lines)
        assert any(h.startswith("content-security-policy: default-src 'none'") for h in lines)


def test_file_names_are_escaped_in_the_report(site: DemoSite, http: httpx.Client) -> None:
    name = "<img src=x onerror=alert(1)>.jpg"
    r = http.post("/verify", files={"file": (name, site.files.unsigned.read_bytes())})
    assert r.status_code == 200
    assert "&lt;img src=x onerror=" in r.text
    assert "<img src=x" not in r.text
    assert _verify(http, site.files.unsigned, name).json()["path"] == name


def test_text_a_device_or_an_admin_wrote_is_shown_with_its_controls_escaped(
    tmp_path: Path,
) -> None:
    """A claim's metadata (written by the device) is shown on the log explorer's pages
    with its control and bidirectional control characters written as escapes, as file
    names are and as the CLI prints them (before: a U+202E in a metadata key reordered the
    line around it, and an ESC or NUL went into the page as it was). A device's label and
    a claim's media type can hold none since review att37 (CreateEnrollmentToken and
    SubmitCapture refuse them)."""
    from datetime import UTC, datetime

    from provenance.core.claims import Claim, HardBinding
    from tests.conftest import read_line, sign_claim

    srv = start_server(tmp_path / "prov.db", "--http", "127.0.0.1:0")
    try:
        web = read_line(srv.proc, "web on ")
        with ProvenanceClient(srv.address, ADMIN_TOKEN) as client:
            key = enroll_key(client, label="desk cam")
            claim = Claim(
                device_id=key.key_id,
                sequence=1,
                captured_at=datetime.now(UTC),
                media_type="image/jpeg",
                size_bytes=10,
                hard_binding=HardBinding(sha256=bytes(32)),
                soft_bindings=(PerceptualHash("pdq", bytes(32), 0),),
                width=4,
                height=3,
                metadata={"place\u2066": "Paris\u202eLondon\x00", "app": "cam\nline\u200b\ufeff"},
            )
            receipt, _ = client.submit(sign_claim(key, claim))
        with httpx.Client(base_url=web, timeout=60) as http:
            pages = {
                "entry": http.get(f"/log/entries/{receipt.leaf_index}").text,
                "enrollment": http.get("/log/entries/0").text,
                "device": http.get(f"/log/devices/{key.key_id.hex()}").text,
                "log": http.get("/log").text,
            }
    finally:
        srv.stop()
    for name, page in pages.items():
        for raw in ("\u202e", "\u2066", "\x1b", "\x00", "\u200b", "\ufeff"):
            assert raw not in page, (name, ascii(raw))
    assert "place\\u2066" in pages["entry"] and "Paris\\u202eLondon\\x00" in pages["entry"]
    assert "line\\u200b\\ufeff" in pages["entry"]
    assert "desk cam" in pages["device"]


def test_a_browser_s_escapes_in_a_file_name_are_undone(site: DemoSite, http: httpx.Client) -> None:
    """Browsers (and curl) send a file name's ``"``, LF and CR as %22, %0A and %0D in the
    multipart header (the HTML standard's form encoding); the report named the file
    ``say %22cheese%22.jpg``. The name is the one the sender gave, in the JSON and on
    the page, escaped there as text; other %-sequences are left as they are."""
    sent = b"say %22cheese%22 %3Cb%3E line%0Anext%0D.jpg"
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="' + sent + b'"\r\n\r\n'
        + site.files.unsigned.read_bytes() + b"\r\n--XyZ--\r\n"
    )  # fmt: skip
    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    r = http.post("/api/v1/verify", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["path"] == 'say "cheese" %3Cb%3E line\nnext\r.jpg'
    page = http.post("/verify", content=body, headers=headers)
    assert page.status_code == 200
    # on the page the name stays on one line, LF and CR shown as escapes (`shown_line`)
    assert "say &#34;cheese&#34; %3Cb%3E line\\x0anext\\x0d.jpg" in page.text, page.text
    assert "%22" not in page.text


def test_explorer_pages(site: DemoSite, http: httpx.Client) -> None:
    page = http.get("/log").text
    assert "Latest checkpoint" in page and http.get("/api/v1/checkpoint").json()["log_key"] in page
    r = http.get("/log/find", params={"q": "2"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/log/entries/2"
    sha = hashlib.sha256(site.files.rocket.read_bytes()).hexdigest()
    found = http.get("/log/find", params={"q": sha}, follow_redirects=False)
    assert found.status_code == 200 and "Log entry #2" in found.text, found.text
    assert http.get("/log/find", params={"q": "00" * 32}).status_code == 404
    assert http.get("/log/find", params={"q": "zz"}).status_code == 400
    assert "✓ Included" in http.get("/log/entries/1").text
    older = http.get("/log", params={"before": 2}).text
    assert 'href="/log/entries/1"' in older and 'href="/log/entries/2"' not in older
    assert "Newer entries" in older
    assert (
        "✓ Consistent"
        in http.get(
            "/log/consistency",
            params={"first": 1, "first_root": http.get("/api/v1/entries/0").json()["leaf_hash"]},
        ).text
    )


def test_the_search_box_points_a_device_id_at_its_device_page(
    site: DemoSite, http: httpx.Client
) -> None:
    """A device id typed into the explorer's search box (the form at /log/find is for an
    entry index or a file's SHA-256): the whole 64-digit id, found as no file's SHA-256,
    goes on to its device page; the start of one, as pages show device ids shortened,
    says that it may be a device id and how to find its page, not only "must be 64 hex
    digits"."""
    dev = http.get("/api/v1/entries/1").json()["claim"]["device_id"]
    r = http.get("/log/find", params={"q": dev}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/log/devices/{dev}", r.text
    prefix = dev[:16] if not dev[:16].isdigit() else "ab" + dev[:14]
    r = http.get("/log/find", params={"q": prefix})
    assert r.status_code == 400, r.text
    assert "device id" in r.text and "Device form" in r.text, r.text
    assert http.get("/log/find", params={"q": "abcdef1"}).status_code == 400


def test_the_search_box_says_what_it_takes_and_the_start_of_a_file_hash(
    http: httpx.Client,
) -> None:
    """The explorer's search box takes an entry index or a file's SHA-256: text that is
    neither is told both (before h-newuser61: "a file's SHA-256 (or an entry index) must
    be 64 hex digits", as if an index were hex digits too); the start of a file's SHA-256,
    as `prov verify` shows it ("sha256 6846e4e1271ab383..."), is told how to get the whole
    one, not only taken for the start of a device id."""
    r = http.get("/log/find", params={"q": "zzz"})
    assert r.status_code == 400, r.text
    assert "an entry index (a whole number" in r.text and "(64 hex digits)" in r.text, r.text
    assert "or an entry index) must be" not in r.text, r.text
    sha = http.get("/api/v1/entries/1").json()["claim"]["sha256"]
    prefix = sha[:16] if not sha[:16].isdigit() else "ab" + sha[:14]
    r = http.get("/log/find", params={"q": prefix})
    assert r.status_code == 400, r.text
    assert "prov verify" in r.text and "sha256sum FILE" in r.text, r.text
    assert "device id" in r.text, r.text


def test_device_pages_show_enrollment_then_revocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a server of its own: a revocation is a new entry of the log (and it revokes
    the device), which the other tests' shared demo log must not get."""
    from tests.conftest import read_line

    srv = start_server(tmp_path / "prov.db", "--http", "127.0.0.1:0")
    try:
        web = read_line(srv.proc, "web on ")
        with ProvenanceClient(srv.address, ADMIN_TOKEN) as client:
            dev = enroll_key(client, label="field-camera").key_id.hex()
        with httpx.Client(base_url=web, timeout=60) as http:
            d = http.get(f"/api/v1/devices/{dev}").json()
            assert d["revoked"] is False and d["label"] == "field-camera"
            assert "Enrolled" in http.get(f"/log/devices/{dev}").text
            _error(http.get(f"/api/v1/devices/{'ab' * 32}"), 404, "no enrolled device")
            monkeypatch.setenv("PROV_ADMIN_TOKEN", ADMIN_TOKEN)
            revoke = ["admin", "revoke", dev, "--reason", "stolen in a test"]
            assert prov_main([*revoke, "--server", srv.address]) == 0
            d = http.get(f"/api/v1/devices/{dev}").json()
            assert d["revoked"] is True and d["revocation_reason"] == "stolen in a test"
            assert d["revoked_at"]
            page = http.get(f"/log/devices/{dev}").text
            assert "Revoked" in page and "stolen in a test" in page
            # the revocation is an entry of the log, after the enrollment, shown as such
            assert http.get("/api/v1/checkpoint").json()["size"] == 2
            last = http.get("/api/v1/entries/1").json()["key_event"]
            assert (last["kind"], last["reason"]) == ("revocation", "stolen in a test")
            assert "Key history: revocation" in http.get("/log/entries/1").text
    finally:
        srv.stop()


def test_web_refuses_a_port_in_use(site: DemoSite) -> None:
    port = urlsplit(site.web).port
    with pytest.raises(ConfigError, match="cannot listen"):
        bind(f"127.0.0.1:{port}")


def test_damaged_video_names_its_byte_ranges(site: DemoSite, http: httpx.Client) -> None:
    video = bytearray(site.files.video.read_bytes())
    middle = len(video) // 2
    video[middle : middle + 16] = bytes(16)
    sidecar = Path(f"{site.files.video}.prov").read_bytes()
    files = {"sidecar": ("fabric.mp4.prov", sidecar), "file": ("fabric.mp4", bytes(video))}
    body = http.post("/api/v1/verify", files=files, params={"detect": "0"}).json()
    assert body["status"] == "TAMPERED"
    [damaged] = body["evidence"]["damaged_ranges"]
    assert damaged["first_byte"] <= middle <= damaged["last_byte"]
    page = http.post("/verify", files=files).text
    assert "Damaged bytes" in page and f"{damaged['first_byte']:,}" in page


def test_web_without_its_service_answers_503(site: DemoSite) -> None:
    web = start_web("127.0.0.1:1")
    try:
        with httpx.Client(base_url=web.address, timeout=60) as c:
            _error(c.get("/api/v1/checkpoint"), 503, "cannot reach the server")
            r = c.post("/api/v1/verify", files={"file": ("h.jpg", site.files.hopper.read_bytes())})
            _error(r, 503, "cannot reach the server")
            assert c.get("/log").status_code == 503
            assert c.get("/").status_code == 200
    finally:
        web.stop()


def test_web_without_its_service_does_not_show_the_service_address() -> None:
    """While its gRPC service is down, every visitor of `prov web` was told the service's
    internal address and gRPC's own failure text ("cannot reach the server at
    10.0.3.7:50051 (UNAVAILABLE: failed to connect to all addresses; last error:
    UNKNOWN: ipv4:10.0.3.7:50051: ...)"), in the JSON API and on the pages. Now the
    answer is still 503 saying the server cannot be reached, without either; the
    operator reads them in the web process's log."""
    web = start_web("127.0.0.2:1")
    try:
        with httpx.Client(base_url=web.address, timeout=60) as c:
            for r in (
                c.get("/api/v1/checkpoint"),
                c.post("/api/v1/lookup", json={"queries": [{"sha256": "a" * 64}]}),
            ):
                _error(r, 503, "cannot reach the server")
                assert "127.0.0.2" not in r.text and "ipv4" not in r.text, r.text
            page = c.get("/log")
            assert page.status_code == 503
            assert "127.0.0.2" not in page.text and "ipv4" not in page.text
    finally:
        web.stop()
    assert "WARNING provenance.web.errors: cannot reach the server at 127.0.0.2:1" in (
        web.stderr()
    )  # the operator's log has it


def test_grpc_s_own_failure_text_is_not_shown_to_visitors() -> None:
    """764ed30 kept a service that cannot be reached from telling visitors its address
    and gRPC's failure text; a gRPC failure of any other code still reached the page and
    the JSON as gRPC wrote it, under a plain title: here `prov web` pointed at a gRPC
    server without our services (another service on that port, or one half started),
    each page said "Method not found!" under "Something went wrong". Now a plain
    sentence (`errors.GRPC_FAILURE_TEXT`), the status kept; gRPC's text goes to the web
    process's log."""
    import grpc

    from provenance.web.errors import GRPC_FAILURE_TEXT

    foreign = grpc.server(ThreadPoolExecutor(max_workers=2))
    port = foreign.add_insecure_port("127.0.0.1:0")
    foreign.start()
    web = start_web(f"127.0.0.1:{port}")
    try:
        with httpx.Client(base_url=web.address, timeout=60) as c:
            api = c.get("/api/v1/checkpoint")
            assert api.status_code == 501, api.text
            assert api.json()["error"]["message"] == GRPC_FAILURE_TEXT, api.text
            for page in (c.get("/log"), c.get("/log/entries/0")):
                assert page.status_code == 501, page.text
                assert GRPC_FAILURE_TEXT in page.text.replace("&#39;", "'"), page.text
                assert "Method not found" not in page.text, page.text
    finally:
        web.stop()
        foreign.stop(None)
    log_text = web.stderr()
    assert "WARNING provenance.web.errors: Method not found! [UNIMPLEMENTED]" in log_text, log_text


def test_one_client_has_a_bounded_share_of_json_bodies_in_memory() -> None:
    """One host's connections each held a 4 MiB JSON body in memory while they waited for
    the two JSON workers (seen: 256 connections from 8 loopback addresses took `prov web`
    from 180 MB to 1 GB). Now a client has at most `JSON_BYTES_PER_CLIENT` of JSON bodies
    in memory, counted as they arrive: with two bodies of nearly 4 MiB still arriving, its
    third request gets 429 with Retry-After (before: read and answered, here 503 since
    no service runs), another address is served, and once the two are gone so is the
    first client. A real `prov web`, real sockets."""
    from provenance.web.api import MAX_JSON_BYTES

    per_client = 2 * MAX_JSON_BYTES  # api.JSON_BYTES_PER_CLIENT

    web = start_web("127.0.0.1:1")
    host, port = urlsplit(web.address).hostname, urlsplit(web.address).port
    assert host is not None and port is not None
    body = b'{"queries": [{"sha256": "' + b"a" * 64 + b'"}]}'
    arriving: list[socket.socket] = []
    try:
        for _ in range(2):
            s = socket.create_connection((host, port))
            s.sendall(
                b"POST /api/v1/lookup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n\r\n" % MAX_JSON_BYTES
            )
            s.sendall(b" " * (MAX_JSON_BYTES - 10))  # all but the end: still arriving
            arriving.append(s)
        time.sleep(1.0)  # read by the server
        assert 2 * (MAX_JSON_BYTES - 10) > per_client - len(body)
        with httpx.Client(base_url=web.address, timeout=30) as c:
            r = c.post("/api/v1/lookup", content=body)
            _error(r, 429, "already has .* bytes of JSON bodies")
            assert r.headers["Retry-After"] == "1"  # api.JSON_RETRY_AFTER_S
        other = httpx.Client(
            base_url=web.address,
            timeout=30,
            transport=httpx.HTTPTransport(local_address="127.0.0.2"),
        )
        with other:
            _error(other.post("/api/v1/lookup", content=body), 503, "cannot reach")
        for s in arriving:
            s.close()
        arriving.clear()
        time.sleep(1.0)
        with httpx.Client(base_url=web.address, timeout=30) as c:
            _error(c.post("/api/v1/lookup", content=body), 503, "cannot reach")
    finally:
        for s in arriving:
            s.close()
        web.stop()


def test_a_json_body_declared_over_its_limit_is_refused_before_it_is_read() -> None:
    """A lookup whose Content-Length declares more than the 4 MiB a JSON body may hold was
    waited on for its body: a client declaring 10^20 - 1 bytes and sending two held its
    connection until the upload idle time (30 s), then read 408 "the upload stalled", a
    stall it never had, where the upload form answers such a length 413 at once. Now
    413 naming the limit and the declared length, before the body is read. A real
    `prov web`, a real socket; no service is needed to refuse it."""
    from provenance.web.api import MAX_JSON_BYTES

    web = start_web("127.0.0.1:1")
    host, port = urlsplit(web.address).hostname, urlsplit(web.address).port
    assert host is not None and port is not None
    try:
        for declared in (MAX_JSON_BYTES + 1, 10**20 - 1):
            with socket.create_connection((host, port), timeout=120) as s:
                s.sendall(
                    b"POST /api/v1/lookup HTTP/1.1\r\nHost: localhost\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{}" % declared
                )
                answer = _read_answer(s)
            assert answer.startswith("HTTP/1.1 413 "), answer
            body = json.loads(answer.partition("\r\n\r\n")[2])["error"]
            assert body["status"] == "RESOURCE_EXHAUSTED"
            assert f"larger than {MAX_JSON_BYTES:,} bytes" in body["message"], body
            assert f"{declared:,}" in body["message"], body
    finally:
        web.stop()


def test_stalled_uploads_time_out_and_one_client_cannot_take_every_slot(
    site: DemoSite,
) -> None:
    web = start_web(site.grpc.address, "--upload-idle-seconds", "12")
    parts = urlsplit(web.address)
    head = (
        b"POST /api/v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.jpg"\r\n\r\n\xff\xd8'
    )
    stalled = [socket.create_connection((parts.hostname, parts.port), timeout=30) for _ in range(2)]
    try:
        for s in stalled:
            s.sendall(head)
        time.sleep(2.0)  # both are being relayed now (and stall for 12 s)
        with httpx.Client(base_url=web.address, timeout=60) as c:
            r = c.post("/api/v1/verify", files={"file": ("h.jpg", site.files.hopper.read_bytes())})
            _error(r, 429, "already running")
            for s in stalled:  # the stalled uploads are cut off, with a clear answer
                answer = _read_answer(s)
                assert answer.startswith("HTTP/1.1 408"), answer
                assert "stalled" in answer
            r = c.post("/api/v1/verify", files={"file": ("h.jpg", site.files.hopper.read_bytes())})
            assert r.json()["status"] == "SIGNED_ORIGINAL"
    finally:
        for s in stalled:
            s.close()
        web.stop()


def test_content_credentials_are_their_own_line_of_evidence(
    site: DemoSite, http: httpx.Client
) -> None:
    signed = FIXTURES / "c2pa" / "third_party" / "public-testfiles" / "adobe-20220124-CA.jpg"
    files = {"file": (signed.name, signed.read_bytes())}
    body = http.post("/api/v1/verify", files=files, params={"detect": "0"}).json()
    assert body["status"] == "UNSIGNED"  # not in our log, whatever its manifest says
    assert body["c2pa"]["present"] is True
    assert body["c2pa"]["validation_state"] == "Valid"
    page = http.post("/verify", files=files).text
    block = page[page.index("Content Credentials (C2PA)") :]
    assert "<strong>Valid</strong>" in block and "Ingredients" in block


def test_a_slow_large_upload_keeps_the_service_stream_alive(tmp_path: Path) -> None:
    """Relayed bytes go on every 256 KiB: a browser sending 256 KiB/s never leaves the
    service (idle timeout 3 s here) waiting long enough to cancel the upload. Nor is the
    page's wait for the service (`--service-timeout`, 2 s here) spent by an upload that
    takes 6 s: only the time the service keeps a piece or its receipt waiting counts."""
    srv = start_server(tmp_path / "slow.db", "--upload-idle-seconds", "3")
    config = WebConfig(srv.address, upload_hold_bytes=64 * 1024, service_timeout_s=2.0)
    web = start_web_app("127.0.0.1:0", config)
    try:
        buf = io.BytesIO()
        noise = np.random.default_rng(1).integers(0, 256, (700, 700, 3), dtype=np.uint8)
        Image.fromarray(noise).save(buf, "PNG")
        data = buf.getvalue()
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\n\r\n'
            + data
            + b"\r\n--b--\r\n"
        )

        def paced() -> Iterator[bytes]:
            for i in range(0, len(body), 64 * 1024):
                time.sleep(0.25)
                yield body[i : i + 64 * 1024]

        head = b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: %d\r\n" % len(
            body
        )
        answer = _raw_post(f"http://{web.address}", head, paced())
        assert answer.startswith("HTTP/1.1 200"), answer
        assert '"status":"UNSIGNED"' in answer
    finally:
        web.stop()
        srv.stop()


def test_a_derived_copy_is_not_called_cryptographically_proven(
    site: DemoSite, http: httpx.Client
) -> None:
    """The demo's photo with a black bar painted across, sent without its sidecar, reads
    DERIVED (10 PDQ bits from the signed capture). Its basis, in the JSON and under the
    page's verdict, said "cryptographic: the status rests on device signatures, the file's
    hashes and the signed log", as for the signed original; the signature and the log
    prove the capture, only a perceptual match links this copy to it."""
    r = _verify(http, site.files.tampered)
    report = r.json()
    assert report["status"] == "DERIVED", report
    basis = report["status_basis"]
    assert "not for this file" in basis and "perceptual match" in basis, basis
    assert "some edits keep too" in basis and "advisory" in basis, basis
    files = {"file": ("e.jpg", site.files.tampered.read_bytes())}
    page = http.post("/verify", files=files).text
    shown = re.search(r'id="status-basis">([^<]*)<', page)
    assert shown is not None and "not for this file" in shown.group(1), page
    original = _verify(http, site.files.hopper).json()
    assert original["status_basis"].startswith("cryptographic: the status rests on"), original


def test_an_unsigned_file_is_not_said_to_rest_on_signatures(
    site: DemoSite, http: httpx.Client
) -> None:
    """An UNSIGNED file has no signature or logged capture behind it: its basis, in the
    JSON and under the page's verdict, says nothing matched and nothing is proven, not
    that the status rests on device signatures."""
    report = _verify(http, site.files.unsigned).json()
    assert report["status"] == "UNSIGNED", report
    assert "nothing is proven either way" in report["status_basis"], report
    assert "rests on device signatures" not in report["status_basis"], report
    files = {"file": ("u.png", site.files.unsigned.read_bytes())}
    shown = re.search(r'id="status-basis">([^<]*)<', http.post("/verify", files=files).text)
    assert shown is not None and "nothing is proven either way" in shown.group(1)


def test_an_upload_cut_mid_way_logs_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser that stops an upload mid-way (Cancel, Stop, a closed tab) is ordinary:
    the relay to the service ends and nothing is logged as an error. Before, each one
    logged two tracebacks: grpc's "Exception iterating requests!" (WebError: the upload
    was abandoned) in the web process, and asyncio's "Future exception was never
    retrieved" (MediaError: the PNG data ends early) in the service."""
    srv = start_server(tmp_path / "cut.db")
    web = start_web_app("127.0.0.1:0", WebConfig(srv.address, upload_hold_bytes=64 * 1024))
    try:
        noise = np.random.default_rng(2).integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "PNG")
        data = buf.getvalue()  # about 4.3 MB
        head = (
            b"POST /api/v1/verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data;"
            b" boundary=b\r\nContent-Length: %d\r\n\r\n" % (len(data) + 200)
        )
        part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="n.png"\r\n\r\n'
        with caplog.at_level("WARNING"):
            for _ in range(2):
                host, port = web.address.rsplit(":", 1)
                with socket.create_connection((host, int(port)), timeout=30) as s:
                    s.sendall(head + part + data[: len(data) // 2])
                    time.sleep(0.5)  # relayed in part, then the client goes away
            time.sleep(3)
    finally:
        web.stop()
        code = srv.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not errors, errors
    logged = srv.stderr()
    assert "Traceback" not in logged and " ERROR " not in logged, logged
    assert code == 0


def _stalled_answers(web: str, data: bytes, timeout: float) -> list[tuple[str, httpx.Response]]:
    """Each kind of request `prov web` relays to its (stopped) service: a small and a large
    upload (relayed as it streams), the page's form, a checkpoint and a lookup; with the
    answer (``timeout``: httpx's, seconds; past it httpx raises ReadTimeout)."""
    big = data + bytes(9 * 1024 * 1024)  # past the 8 MiB held in memory: streamed
    calls: dict[str, Callable[[httpx.Client], httpx.Response]] = {
        "upload": lambda c: c.post("/api/v1/verify", files={"file": ("h.jpg", data)}),
        "large upload": lambda c: c.post("/api/v1/verify", files={"file": ("b.jpg", big)}),
        "page": lambda c: c.post("/verify", files={"file": ("h.jpg", data)}),
        "checkpoint": lambda c: c.get("/api/v1/checkpoint"),
        "lookup": lambda c: c.post("/api/v1/lookup", json={"queries": [{"sha256": "a" * 64}]}),
    }
    out = []
    with httpx.Client(base_url=web, timeout=timeout) as c:
        for what, call in calls.items():
            out.append((what, call(c)))
    return out


def test_a_stalled_service_is_answered_504_within_the_service_timeout(
    tmp_path: Path, site: DemoSite
) -> None:
    """A service that holds its connection but never answers (here a real `prov serve`
    stopped with SIGSTOP once `prov web` had connected) kept each upload waiting 210 s
    (the call's deadline: 30 s plus 180 s for decoding) before a 504 saying the server
    "cannot be reached", and each page or lookup 30 s. Now `prov web --service-timeout`
    bounds the wait for the service (20 s by default; a slow upload is not counted: only
    time the service keeps a piece or the answer waiting) and the 504 says so: the
    message is made from the wait that ran out (`NO_ANSWER_TEXT`), so "within 3 s" is
    the service timeout's doing; waiting for the call's deadline instead, each request
    would pass httpx's 60 s timeout (ReadTimeout)."""
    import signal

    srv = start_server(tmp_path / "stall.db")
    web = start_web(srv.address, "--service-timeout", "3")
    data = site.files.hopper.read_bytes()
    try:
        with httpx.Client(base_url=web.address, timeout=60) as c:
            assert c.post("/api/v1/verify", files={"file": ("h.jpg", data)}).status_code == 200
        srv.proc.send_signal(signal.SIGSTOP)
        try:
            answers = _stalled_answers(web.address, data, 60)
        finally:
            srv.proc.send_signal(signal.SIGCONT)
        for what, r in answers:
            assert r.status_code == 504, (what, r.text)
            said = "the verification service did not answer within 3 s; try again"
            assert said in r.text, (what, r.text)
        # the service answers again once it runs: so does the page
        with httpx.Client(base_url=web.address, timeout=60) as c:
            r = c.post("/api/v1/verify", files={"file": ("h.jpg", data)})
            assert r.json()["status"] == "UNSIGNED", r.text
    finally:
        web.stop()
        srv.stop()


class _HostileVerification:
    """A gRPC service on a loopback port that takes a whole VerifyFile upload and never
    answers: ``said`` is the initial metadata it sends, ``early`` whether before reading
    the upload (else after). Not our service: one a `prov web` may be pointed at, or
    ours wedged after its receipt (a decoder that never returns)."""

    def __init__(self, said: tuple[tuple[str, str], ...], early: bool) -> None:
        import threading
        from concurrent import futures

        import grpc

        from provenance.v1 import provenance_pb2_grpc as rpc

        self.release = threading.Event()
        release = self.release

        class Servicer(rpc.VerificationServicer):
            def VerifyFile(self, requests: Any, context: Any) -> Any:
                if early:
                    context.send_initial_metadata(said)
                for _ in requests:
                    pass
                if not early:
                    context.send_initial_metadata(said)
                release.wait(120)
                context.abort(grpc.StatusCode.INTERNAL, "released")

        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        rpc.add_VerificationServicer_to_server(Servicer(), self.server)
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def stop(self) -> None:
        self.release.set()
        self.server.stop(0)


def test_initial_metadata_without_prov_received_is_no_receipt() -> None:
    """Only `RECEIVED_KEY` says the service has the whole file: a service that sends
    other initial metadata and then never answers is a stall, answered 504 within
    `--service-timeout` (1 s here: the 504 names the wait that ran out). Before, any
    initial metadata counted as the receipt and the page waited for the call's deadline
    (no answer within httpx's 20 s: ReadTimeout)."""
    hostile = _HostileVerification((("x-other", "1"),), early=False)
    web = start_web(hostile.address, "--service-timeout", "1")
    try:
        with httpx.Client(base_url=web.address, timeout=20) as c:
            r = c.post("/api/v1/verify", files={"file": ("h.jpg", b"\xff\xd8" * 1000)})
        assert r.status_code == 504, r.text
        assert "did not answer within 1 s" in r.text
    finally:
        web.stop()
        hostile.stop()


def test_a_service_wedged_after_its_receipt_is_not_waited_on_for_hours() -> None:
    """A service that says it has the whole file (`RECEIVED_KEY`; here at once) and then
    never answers is waited on at most ``work_s`` past the upload's end, not the call's
    deadline: `prov web` sizes that by the slowest upload pace of its largest file when
    the size is not known (streamed: 120 s + 2 GiB at 32 KiB/s + 210 s, about 18 hours,
    each holding a relay slot). Before, no answer within 20 s (work_s 2 s here): the
    client's ``waited_s`` is the wait that ran out, 2 s, where the call's deadline
    would give 20."""
    from clients.api import ProvenanceClient
    from provenance.core.errors import TransportError
    from provenance.wire.contract import RECEIVED_KEY

    hostile = _HostileVerification(((RECEIVED_KEY, "1"),), early=True)
    client = ProvenanceClient(hostile.address)
    try:
        with pytest.raises(TransportError) as err:
            client.verify_stream(
                iter([b"\xff\xd8" * 1000]), "h.jpg", 20.0, answer_s=1.0, work_s=2.0
            )
        assert err.value.code == "DEADLINE_EXCEEDED", err.value
        assert err.value.waited_s == 2.0
    finally:
        client.close()
        hostile.stop()


def test_a_service_at_work_past_the_service_timeout_still_answers(
    site: DemoSite, tmp_path: Path
) -> None:
    """The service says it has the whole file (initial metadata `RECEIVED_KEY`) before
    decoding it: decoding a video for longer than `--service-timeout` (0.3 s here) is
    work, not a stall, and its verdict comes back."""
    from tests.conftest import write_video

    video = tmp_path / "long.mp4"
    rng = np.random.default_rng(3)
    write_video(video, (rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(200)), 2)
    web = start_web(site.grpc.address, "--service-timeout", "0.3")
    try:
        with httpx.Client(base_url=web.address, timeout=120) as c:
            t = time.monotonic()
            r = _verify(c, video, params={"detect": "false"})
            took = time.monotonic() - t
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "UNSIGNED"
        assert took > 0.3 * 3, took  # it did take longer than the timeout
    finally:
        web.stop()


def test_a_device_key_reads_the_same_on_the_device_and_its_enrollment_entry(
    http: httpx.Client,
) -> None:
    """An auditor comparing the device page's key with its enrollment entry's saw two
    strings: /api/v1/devices gave base64, the entry (and `prov device show`, and every
    other hash of the API) hex. Both are hex now, and the device page says so."""
    dev = http.get("/api/v1/entries/1").json()["claim"]["device_id"]
    d = http.get(f"/api/v1/devices/{dev}").json()
    enrolled = http.get("/api/v1/entries/0").json()["key_event"]
    assert enrolled["kind"] == "enrollment" and enrolled["device_id"] == dev
    assert d["public_key"] == enrolled["public_key"], (d, enrolled)
    assert hashlib.sha256(bytes.fromhex(d["public_key"])).hexdigest() == dev  # the id's key
    page = http.get(f"/log/devices/{dev}").text
    assert f'{d["public_key"]}</code> <span class="muted">(Ed25519, hex)</span>' in page


def test_the_form_page_of_an_error_is_titled_as_one(http: httpx.Client) -> None:
    """The page's form posted without its script (`POST /verify`) with a file that is no
    media: the page's title says it could not be checked, as the log explorer's error
    pages say "Error 400". Before, it was "Verify a file", the blank form's title, so a
    screen reader announced the form, not the error."""
    page = http.post("/verify", files={"file": ("notes.txt", b"not a photo\n")})
    assert page.status_code == 400
    title = re.search(r"<title>(.*?)</title>", page.text, re.S)
    assert title is not None
    assert html.unescape(title.group(1)).startswith("Error: This could not be checked")


def test_the_log_page_before_entry_0_says_it_lists_none(http: httpx.Client) -> None:
    """``/log?before=0`` (a hand-made address: the pager links no such page) lists no
    entry. Before, its heading said "Entries 0 to 0" over the empty table, as though
    entry #0 were listed."""
    page = http.get("/log", params={"before": "0"})
    assert page.status_code == 200
    heading = re.search(r'<h2 id="recent-title">(.*?)</h2>', page.text, re.S)
    assert heading is not None
    assert html.unescape(heading.group(1)) == "No entries before entry #0", heading.group(1)
    assert 'href="/log/entries/' not in page.text.split('id="recent-title"')[1].split("</table>")[0]
