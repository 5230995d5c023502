"""Form field names in the web page's and the HTTP API's error messages are shown by the
rule file names already follow (`provenance.terminal.shown_line`): a bidi control such
as U+202E, or a terminal escape, appears as its code point (``\\u202e``), never raw, so
a hostile field name cannot reorder or restyle the message around it. Before, they were
HTML-escaped only (h-small32's note). A real `prov web` process, hand-made multipart
bodies."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import closed_port, start_web

#: A field name reading "photo" with a right-to-left override, an ANSI escape and a
#: C1 control in it
HOSTILE = "ph\u202eot\x1b[2Jo\x9b"
RAW = ("\u202e", "\x1b", "\x9b")


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    proc = start_web(closed_port())  # these errors come before any call to the service
    yield proc.address
    proc.stop()


def _form(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body (boundary XyZ) of (field name, file name, value)."""
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--XyZ\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + b"--XyZ--\r\n"


CASES = [
    ("the file came in the form field", _form((HOSTILE, "h.jpg", b"\xff\xd8\xff"))),
    ("twice", _form((HOSTILE, None, b"a"), (HOSTILE, None, b"b"))),
    ("is larger than", _form((HOSTILE, None, b"x" * 5000))),
]


@pytest.mark.parametrize(("words", "body"), CASES, ids=["file-field", "twice", "large"])
def test_a_hostile_field_name_is_shown_as_code_points(web: str, words: str, body: bytes) -> None:
    headers = {"content-type": "multipart/form-data; boundary=XyZ"}
    with httpx.Client(base_url=web, timeout=60) as http:
        api = http.post("/api/v1/verify", content=body, headers=headers)
        page = http.post("/verify", content=body, headers=headers)
    assert api.status_code == 400, api.text
    message = api.json()["error"]["message"]
    assert words in message and "`ph\\u202eot\\x1b[2Jo\\x9b`" in message, message
    assert page.status_code == 400 and words in page.text, page.text
    assert "ph\\u202eot\\x1b[2Jo\\x9b" in page.text, page.text
    for c in RAW:
        assert c not in message and c not in page.text, (c, message)
