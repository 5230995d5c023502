"""Multipart forms as senders other than browsers may write them, against a real
`prov web` (and its `prov serve`) on real ports, hand-made bodies:

- a preamble before the first boundary (RFC 2046 section 5.1.1: ignored) is ignored,
  and the file gets the verdict it gets without one (before: 400 "malformed");
- a ``filename*=UTF-8''...`` parameter (RFC 8187; RFC 7578 section 4.2 says senders
  must not use it, but some do) names the file (before: it was dropped, and the report
  named the file "upload"; in a field other than ``file`` the file was taken for a
  small text field); a malformed one, or RFC 2231 continuations, get a 400 naming it;
- a part with ``Content-Transfer-Encoding: base64`` (deprecated by RFC 7578 section
  4.7) is refused with a 400 naming it (before: the base64 text was verified as if it
  were the file's bytes: a wrong verdict).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import DemoSite, demo_site, start_web

pytestmark = pytest.mark.slow

FORM = {"content-type": "multipart/form-data; boundary=XyZ"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    with demo_site(tmp_path_factory.mktemp("web-multipart"), web_separate=False) as s:
        yield s


@pytest.fixture(scope="module")
def http(site: DemoSite) -> Iterator[httpx.Client]:
    """A client of a `prov web` of its own on the site's service, with no upload rate
    limit (these tests send more than its default 30 a minute)."""
    web = start_web(site.grpc.address, "--uploads-per-minute", "0")
    try:
        with httpx.Client(base_url=web.address, timeout=120) as c:
            yield c
    finally:
        web.stop()


def _part(disposition: str, value: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in (f"Content-Disposition: {disposition}", *headers))
    return b"--XyZ\r\n" + head.encode() + b"\r\n" + value + b"\r\n"


def _file_part(value: bytes, params: str = 'filename="photo.jpg"', *headers: str) -> bytes:
    return _part(f'form-data; name="file"; {params}', value, *headers)


def _post(http: httpx.Client, body: bytes, path: str = "/api/v1/verify") -> httpx.Response:
    return http.post(path, content=body, headers=FORM, params={"detect": "false"})


def _report(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    report: dict[str, Any] = r.json()
    report.pop("verified_at")
    return report


def _error(r: httpx.Response, words: str) -> None:
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert re.search(words, message), message


def _error_on_both(http: httpx.Client, body: bytes, words: str, shown: str) -> None:
    """``body`` gets the API's 400 matching ``words`` and the page's 400 showing ``shown``."""
    _error(_post(http, body), words)
    page = _post(http, body, "/verify")
    assert page.status_code == 400 and shown in page.text, page.text


# ---------------------------------------------------------------- preamble


def test_a_preamble_before_the_first_boundary_is_ignored(
    site: DemoSite, http: httpx.Client
) -> None:
    jpeg = site.files.hopper.read_bytes()
    form = _file_part(jpeg) + b"--XyZ--\r\n"
    plain = _report(_post(http, form))
    assert plain["status"] == "SIGNED_ORIGINAL", plain
    preambles = [
        b"This is a multi-part message in MIME format.\r\n",
        # text that looks like a boundary but is not at the start of a line
        b"see --XyZ below\r\n",
        # a preamble of many lines, longer than one read of the body
        b"".join(b"line %d of the preamble\r\n" % i for i in range(2000)),
        # only the CRLF that ends an empty preamble
        b"\r\n",
        # a preamble whose last line ends in LF alone, as a hand-written body's may: its
        # form (before: the closing line was taken for the first boundary line, an empty
        # form, and the answer was 400 "no file")
        b"This is a multi-part message in MIME format.\n",
        b"line one\r\nline two\n",
    ]
    for preamble in preambles:
        assert _report(_post(http, preamble + form)) == plain, preamble[:40]
    # the page too
    page = _post(http, preambles[0] + form, "/verify")
    assert page.status_code == 200 and 'data-status="SIGNED_ORIGINAL"' in page.text, page.text


def test_a_body_with_no_boundary_line_gets_a_400_naming_it(http: httpx.Client) -> None:
    _error(
        _post(http, b"no form here, just text\r\n" * 4),
        "the multipart form has no boundary line",
    )
    # a preamble without end: refused once past its bound, not read for ever
    r = _post(http, b"x" * (1024 * 1024) + _file_part(b"\xff\xd8\xff") + b"--XyZ--\r\n")
    _error(r, r"no boundary line .*in its first [\d,]+ bytes")


def test_a_boundary_line_that_goes_on_past_its_boundary_gets_our_own_400(
    site: DemoSite, http: httpx.Client
) -> None:
    """A first boundary line with more after the boundary (``\\r\\n--XyZjunk`` ending a
    preamble, or opening the body) is refused in our words, naming the line; so is one
    later in the form, and a part whose headers do not parse. Before: python-multipart's
    own text ("Did not find CR at end of boundary (5)", "Did not find CRLF after boundary
    padding at 80", "Found invalid character ...").
    Spaces and tabs after a boundary (RFC 2046's transport padding) are no fault: the
    file gets its verdict (before: the same 400 for the first boundary line)."""
    jpeg = site.files.hopper.read_bytes()
    form = _file_part(jpeg) + b"--XyZ--\r\n"
    first = "the multipart form's first boundary line"
    cases = [
        (b"preamble\r\n--XyZjunk\r\n" + form[7:], rf'^{first} "--XyZjunk" goes on past'),
        (b"--XyZjunk\r\n" + form[7:], rf'^{first} "--XyZjunk" goes on past its boundary \(--XyZ,'),
        (b"--XyZ" + b"x" * 5000 + b"\r\n" + form[7:], rf'^{first} "--XyZxxx.*" goes on past'),
        (
            _file_part(b"data") + b"--XyZ junk\r\n",
            r"^a boundary line of the multipart form \(--XyZ\) goes on past its boundary",
        ),
        (
            b"--XyZ\r\nnot a header\x00\r\n\r\ndata\r\n--XyZ--\r\n",
            r"^the multipart form is malformed: a part's header lines",
        ),
    ]
    for body, words in cases:
        r = _post(http, body)
        _error(r, words)
        said = r.json()["error"]["message"]
        assert "Did not find" not in said and "Found" not in said and "index" not in said, said
    padded = b"--XyZ \t \r\n" + form[7:]
    assert _report(_post(http, padded)) == _report(_post(http, form))


# ---------------------------------------------------------------- filename*


def test_a_filename_star_parameter_names_the_file(site: DemoSite, http: httpx.Client) -> None:
    jpeg = site.files.hopper.read_bytes()
    cases = [
        ("filename*=UTF-8''caf%C3%A9.jpg", "café.jpg"),
        ("filename*=utf-8'fr'%22caf%C3%A9%22.jpg", '"café".jpg'),
        ("filename*=ISO-8859-1''caf%E9.jpg", "café.jpg"),
        # both: the extended one is the name as its sender wrote it (RFC 6266 section 4.3)
        ("filename=\"cafe.jpg\"; filename*=UTF-8''caf%C3%A9.jpg", "café.jpg"),
        ("filename*=UTF-8''caf%C3%A9.jpg; filename=\"cafe.jpg\"", "café.jpg"),
        # a folder in it is dropped, as from a plain file name
        ("filename*=UTF-8''..%2F..%2Fetc%2Fcaf%C3%A9.jpg", "café.jpg"),
    ]
    for params, name in cases:
        report = _report(_post(http, _file_part(jpeg, params) + b"--XyZ--\r\n"))
        assert report["path"] == name, (params, report["path"])
        assert report["status"] == "SIGNED_ORIGINAL", report
    page = _post(http, _file_part(jpeg, cases[0][0]) + b"--XyZ--\r\n", "/verify")
    assert page.status_code == 200 and '<p class="file-name">café.jpg</p>' in page.text, page.text


def test_a_file_named_by_filename_star_in_another_field_is_named(
    site: DemoSite, http: httpx.Client
) -> None:
    body = _part("form-data; name=\"photo\"; filename*=UTF-8''caf%C3%A9.jpg", b"tiny")
    _error(
        _post(http, body + b"--XyZ--\r\n"),
        r"the file came in the form field `photo`; send it in the field `file`"
        r" \(e\.g\. curl -F file=@café\.jpg\)",
    )


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ("filename*=UTF-16''%FF%FEa", r"filename\*.*UTF-16.*UTF-8"),
        ("filename*=caf%C3%A9.jpg", r"filename\*.*CHARSET'LANGUAGE'"),
        ("filename*=UTF-8''caf%C3.jpg", r"filename\*.*not UTF-8"),
        ("filename*=UTF-8''caf%G1.jpg", r"filename\*.*percent"),
        (
            "filename*0*=UTF-8''caf%C3%A9; filename*1=.jpg",
            r"continuations \(filename\*0\*, filename\*1\)",
        ),
    ],
    ids=["charset", "no-charset", "not-utf8", "bad-percent", "continuations"],
)
def test_a_malformed_filename_star_gets_a_400_naming_it(
    http: httpx.Client, params: str, words: str
) -> None:
    _error(_post(http, _file_part(b"\xff\xd8\xff", params) + b"--XyZ--\r\n"), words)


# ---------------------------------------------------------------- Content-Transfer-Encoding


@pytest.mark.parametrize("encoding", ["base64", "BASE64", "quoted-printable", "x-gzip"])
def test_a_transfer_encoded_part_is_refused(
    site: DemoSite, http: httpx.Client, encoding: str
) -> None:
    jpeg = site.files.hopper.read_bytes()
    text = base64.encodebytes(jpeg)
    body = _file_part(text, 'filename="photo.jpg"', f"Content-Transfer-Encoding: {encoding}")
    words = (
        rf"the form's part `file` has Content-Transfer-Encoding: {encoding}, which this page"
        r" does not decode \(RFC 7578 section 4\.7 deprecates it\)"
    )
    _error(_post(http, body + b"--XyZ--\r\n"), words)
    page = _post(http, body + b"--XyZ--\r\n", "/verify")
    assert page.status_code == 400 and "Content-Transfer-Encoding" in page.text, page.text


def test_an_identity_transfer_encoding_is_accepted(site: DemoSite, http: httpx.Client) -> None:
    jpeg = site.files.hopper.read_bytes()
    for encoding in ("binary", "8bit", "7BIT"):
        body = _file_part(jpeg, 'filename="photo.jpg"', f"Content-Transfer-Encoding: {encoding}")
        assert _report(_post(http, body + b"--XyZ--\r\n"))["status"] == "SIGNED_ORIGINAL"


# ---------------------------------------------------------------- a part with no name


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Type: image/jpeg",  # no Content-Disposition at all
        b'Content-Disposition: form-data; filename="photo.jpg"',  # no name
        b'Content-Disposition: form-data; name=""; filename="photo.jpg"',  # an empty one
    ],
)
def test_a_part_naming_no_field_gets_a_400_saying_so(
    site: DemoSite, http: httpx.Client, head: bytes
) -> None:
    """RFC 7578 section 4.2: each part has a Content-Disposition of form-data naming its
    field. A part with none was taken for a field named "" (review att45): the photo in
    it got "the form field `` is larger than 1,024 bytes" or "the file came in the form
    field ``", naming nothing a sender could find."""
    jpeg = site.files.hopper.read_bytes()
    body = b"--XyZ\r\n" + head + b"\r\n\r\n" + jpeg + b"\r\n--XyZ--\r\n"
    words = (
        r"a part of the form names no field: each part needs a header such as"
        r' Content-Disposition: form-data; name="file"; filename="photo\.jpg"'
    )
    _error_on_both(http, body, words, "names no field")


# ---------------------------------------------------------------- a part's headers


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            'Content-Disposition: form-data; name="note"',
            'content-disposition: form-data; name="file"',
        ),
        ('Content-Disposition: form-data; name="file"', 'Content-Disposition: form-data; name="x"'),
        ("Content-Transfer-Encoding: binary", "Content-Transfer-Encoding: 8bit"),
    ],
    ids=["disposition-note-then-file", "disposition-file-then-x", "transfer-encoding"],
)
def test_a_header_given_twice_in_a_part_gets_a_400_naming_it(
    site: DemoSite, http: httpx.Client, first: str, second: str
) -> None:
    """A part that gives a header twice is ambiguous: one reader takes the first, another
    the last (review att47). Before, the two values were joined into one
    (``form-data; name="note"form-data; name="file"; ...``): a part that named the field
    `note` first was verified as the file, and one that named `file` first got "the file
    came in the form field `x`; ... curl -F file=@"photo.jpg"form-data"."""
    jpeg = site.files.hopper.read_bytes()
    name = second.partition(":")[0] if "Transfer" in first else "Content-Disposition"
    heads = [first, second]
    if "Transfer" in first:
        heads.insert(0, 'Content-Disposition: form-data; name="file"; filename="photo.jpg"')
    else:
        heads = [f'{h}; filename="photo.jpg"' for h in heads]
    body = b"--XyZ\r\n" + "".join(f"{h}\r\n" for h in heads).encode() + b"\r\n"
    body += jpeg + b"\r\n--XyZ--\r\n"
    words = (
        rf"a part of the form gives its header {name} twice, which readers may take"
        r" differently: give each header once"
    )
    _error_on_both(http, body, words, "twice")


def test_a_part_header_past_the_parsers_limits_gets_a_400_naming_them(
    site: DemoSite, http: httpx.Client
) -> None:
    """The parser (python-multipart) takes a header line of at most 4,224 bytes and 8
    header lines a part; before, a 5,000-character file name (a line under the 8,192 bytes
    the message named) and a part of 9 short header lines were both told "a part's header
    lines do not parse (... at most 8,192 bytes in all ...)", a limit they were under."""
    jpeg = site.files.hopper.read_bytes()
    long_name = _file_part(jpeg, 'filename="' + "n" * 5000 + '.jpg"') + b"--XyZ--\r\n"
    _error(
        _post(http, long_name),
        r"^a header line of a part of the multipart form is longer than 4,224 bytes",
    )
    many = b"--XyZ\r\n" + b"".join(b"X-Note-%d: n\r\n" % i for i in range(8))
    many += b'Content-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    many += jpeg + b"\r\n--XyZ--\r\n"
    _error(_post(http, many), r"^a part of the multipart form has more than 8 header lines")


@pytest.mark.parametrize(
    ("disposition", "param"),
    [
        ('form-data; name="sidecar"; name="file"; filename="photo.jpg"', "name"),
        ('form-data; name="file"; filename="a.jpg"; FILENAME="b.jpg"', "filename"),
    ],
    ids=["name", "filename"],
)
def test_a_parameter_given_twice_gets_a_400_naming_it(
    site: DemoSite, http: httpx.Client, disposition: str, param: str
) -> None:
    """A Content-Disposition naming its field or file twice is ambiguous as a header given
    twice is: before, python-multipart took the last (``name="sidecar"; name="file"`` was
    verified as the file, a reader taking the first saw a sidecar), while the page's own
    reading of ``filename*`` took the first (review att47)."""
    jpeg = site.files.hopper.read_bytes()
    words = (
        rf"a part of the form gives the parameter {param} twice in its Content-Disposition,"
        r" which readers may take differently: give it once"
    )
    _error_on_both(http, _part(disposition, jpeg) + b"--XyZ--\r\n", words, "twice")


def test_a_boundary_given_twice_gets_a_400_naming_it(site: DemoSite, http: httpx.Client) -> None:
    """``multipart/form-data; boundary=XyZ; boundary=abc``: python-multipart took the last,
    and the form (written with the first) was told it has no boundary line --abc."""
    body = _file_part(site.files.hopper.read_bytes()) + b"--XyZ--\r\n"
    r = http.post(
        "/api/v1/verify",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=XyZ; boundary=abc"},
    )
    _error(r, r"the Content-Type names the multipart boundary twice")


# ---------------------------------------------------------------- backslashes in quoted values


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        # RFC 6266 / RFC 9110 quoted-pair: "a\\" is the name a\ (a Windows client escaping
        # its trailing backslash); before, the part was told it names no field, or the
        # file was named '"; size=3'
        ('form-data; filename="a\\\\"; name="file"', "upload"),
        ('form-data; name="file"; filename="a\\\\"; size=3', "upload"),
        ('form-data; name="file"; filename="b\\\\a.jpg"; size=3', "a.jpg"),
        ('form-data; filename="say \\"hi\\".jpg"; name="file"', 'say "hi".jpg'),
        # as browsers write a name ending in a backslash (the HTML standard escapes only
        # LF, CR and ", never \): not a quoted-pair, the string ends at the quote
        ('form-data; filename="a\\"; name="file"', "upload"),
        ('form-data; name="file"; filename="x\\"; size=3', "upload"),
        # a Windows path as older browsers sent it: its folders dropped, as before
        ('form-data; name="file"; filename="C:\\Users\\me\\photo.jpg"; size=3', "photo.jpg"),
    ],
)
def test_a_backslash_before_a_quote_in_a_file_name_is_read_as_its_sender_meant(
    site: DemoSite, http: httpx.Client, disposition: str, name: str
) -> None:
    jpeg = site.files.hopper.read_bytes()
    report = _report(_post(http, _part(disposition, jpeg) + b"--XyZ--\r\n"))
    assert report["path"] == name, (disposition, report["path"])
    assert report["status"] == "SIGNED_ORIGINAL", report


def test_a_content_disposition_whose_quoted_value_never_ends_gets_a_400_naming_it(
    site: DemoSite, http: httpx.Client
) -> None:
    body = _part('form-data; name="file"; filename="a.jpg', site.files.hopper.read_bytes())
    words = (
        r"the Content-Disposition of a part of the form does not parse: a quoted value"
        r" .*is not closed"
    )
    _error_on_both(http, body + b"--XyZ--\r\n", words, "does not parse")
