"""`provenance.cli.urls`: the one check of the http(s) URLs `prov` is given, and each
flag taking one answering a bad URL the same, in the same words: a usage error (exit 2)
naming the flag as given, before any file is read or made. The check is pure (a table of
URLs and the reason each is refused, or None); the flags are run through the real CLI,
with real files."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.cli import main as prov_main
from provenance.c2pa.timestamp import TimestampAuthority, request_token
from provenance.cli.urls import ENDPOINT, MAX_URL_CHARS, PREFIX, REDIRECT, UrlRules, url_problem
from provenance.core.errors import ConfigError, TimestampError, WitnessError
from provenance.log.checkpoint import LogSigner
from provenance.log.tiledir import fetcher, location_problem
from provenance.terminal import quoted
from provenance.witness import cosigner_vkey
from provenance.witness.client import fetch_cosigned_checkpoint
from tests.conftest import SAMPLES, closed_port
from tests.test_usage_errors import _flat

NOT_HOST = "is not a host name: each part between dots must be 1 to 63"
NO_QUERY = "a query (?...) cannot be given here: this URL is a prefix"
FRAGMENT = "a fragment (#...) is never sent with a request"
CHARS = "a URL is printable ASCII without spaces"
PORT = "its port is not a number from 1 to 65535"

#: (URL, rules, a part of the reason it is refused, or None where it is taken).
TABLE: list[tuple[str, UrlRules, str | None]] = [
    ("http://127.0.0.1:8090", PREFIX, None),
    ("https://witness.example/w1/", PREFIX, None),
    ("HTTP://127.0.0.1:8090/", PREFIX, None),  # schemes in any case (RFC 3986 3.1)
    ("http://[::1]:8090/", PREFIX, None),
    ("http://[::ffff:127.0.0.1]/", PREFIX, None),
    ("http://localhost./", PREFIX, None),  # an absolute name
    ("http://255.255.255.255/", PREFIX, None),
    ("http://host.1a/", PREFIX, None),  # a name: its last part is no number
    # a host ending in a number is an IPv4 address, written as four decimal numbers:
    # inet_aton, which getaddrinfo applies, reads others otherwise, or not at all
    ("http://127.1:8090/", PREFIX, "the resolver would read it as 127.0.0.1"),
    ("http://010.1.1.1/", PREFIX, "no IPv4 address as written"),
    ("http://010.1.1.1/", PREFIX, "read it as 8.1.1.1"),  # a leading 0: octal
    ("http://0x7f.1/", ENDPOINT, "read it as 127.0.0.1"),
    ("http://0/", PREFIX, "read it as 0.0.0.0"),
    ("http://4294967295/", REDIRECT, "read it as 255.255.255.255"),
    ("http://1.2.3.4.5/", PREFIX, "the resolver would look it up as a name"),
    ("http://999.1.1.1/", PREFIX, "look it up as a name"),
    ("http://host.0x/", PREFIX, "look it up as a name"),
    ("http://127.0.0.1./", PREFIX, "the resolver would look it up as a name"),
    ("http://127.0.0.1:/", PREFIX, None),  # an empty port: the default
    ("http://127.0.0.1:08090/", PREFIX, None),
    ("http://my_service:8090/", PREFIX, None),  # a container's name
    ("http://xn--bcher-kva.example/", PREFIX, None),
    ("http://h/%2e%2e/w%20x", PREFIX, None),
    ("http://h/" + "a" * 1000, PREFIX, None),
    ("http://" + ".".join(["a" * 63] * 3 + ["a" * 61]) + "/", PREFIX, None),  # 253
    ("http://h/tsa?policy=1.2", ENDPOINT, None),
    ("http://h/x?a=1#f", REDIRECT, None),
    ("http://h/" + "a" * 5000, REDIRECT, None),
    ("", PREFIX, "an empty URL"),
    ("http://", PREFIX, "it names no host"),
    ("http:///tlog/", PREFIX, "it names no host"),
    ("http://:8090/", PREFIX, "it names no host"),
    ("http://a..example/", PREFIX, f"'a..example' {NOT_HOST}"),
    ("http://.example/", PREFIX, NOT_HOST),
    ("http://localhost../", PREFIX, NOT_HOST),
    (f"http://{'a' * 64}.example/", PREFIX, NOT_HOST),
    ("http://a!b/", PREFIX, NOT_HOST),
    ("http://%6cocalhost/", PREFIX, NOT_HOST),
    ("http://" + ".".join(["a" * 63] * 4) + "/", PREFIX, "more than the 253 a DNS name"),
    ("http://[::1", PREFIX, "its [ is not closed"),
    ("http://[zz]/", PREFIX, "'[zz]' is no IPv6 address"),
    ("http://[v1.x]/", PREFIX, "is no IPv6 address"),
    ("http://[]/", PREFIX, "is no IPv6 address"),
    ("http://[::1]x/", PREFIX, "'x' follows the ] of its host"),
    ("http://[fe80::1%25eth0]:8090/", PREFIX, "holds a zone (%25...)"),
    ("http://h]/", PREFIX, "a [ or ] outside a bracketed IPv6 host"),
    ("http://::1:8090/", PREFIX, "an IPv6 address goes in brackets"),
    ("http://[::1]:99999/", PREFIX, PORT),
    ("http://127.0.0.1:0/", PREFIX, PORT),
    ("http://127.0.0.1:65536/", PREFIX, PORT),
    ("http://127.0.0.1:99999999999999999999/", PREFIX, PORT),
    ("http://127.0.0.1:abc/", PREFIX, PORT),
    ("http://127.0.0.1:+80/", PREFIX, PORT),
    ("http://127.0.0.1:\u0665/", PREFIX, CHARS),  # another script's digit: no ASCII
    ("http://u:p@127.0.0.1:8090/", PREFIX, "holds no user name or password"),
    ("http://u@127.0.0.1:8090/", ENDPOINT, "holds no user name or password"),
    ("http://@127.0.0.1:8090/", REDIRECT, "holds no user name or password"),
    ("http://127.0.0.1:8090/w#top", PREFIX, FRAGMENT),
    ("http://127.0.0.1:8090/w?k=1", PREFIX, NO_QUERY),
    ("http://h/?", PREFIX, NO_QUERY),
    ("http://h#", PREFIX, FRAGMENT),
    ("http://h/?#", PREFIX, FRAGMENT),
    ("http://h/tsa#top", ENDPOINT, FRAGMENT),
    ("http://h/tsa?q#top", ENDPOINT, FRAGMENT),
    ("file:///etc/passwd", PREFIX, "its scheme is file: and only http:// and https://"),
    ("ftp://127.0.0.1/", ENDPOINT, "its scheme is ftp: and only"),
    ("javascript:alert(1)", REDIRECT, "its scheme is javascript:"),
    ("127.0.0.1:8090", PREFIX, "it names no scheme"),
    ("localhost:8090", PREFIX, "it names no scheme"),
    ("witness.example/w1", PREFIX, "it names no scheme"),
    ("http:127.0.0.1:8090", PREFIX, "no // after its scheme: give http://HOST"),
    ("http:/127.0.0.1:8090", PREFIX, "no // after its scheme"),
    ("http://127.0.0.1:8090/a b", PREFIX, f"it holds a space at character 24: {CHARS}"),
    (" http://127.0.0.1:8090/", PREFIX, "it holds a space at character 1"),
    ("http://127.0.0.1:8090/\x1b[2J", PREFIX, "it holds '\\x1b' at character 23"),
    ("http://127.0.0.\n1:8090/", PREFIX, "it holds '\\n'"),  # urlsplit would drop it
    ("http://127.0.0.\t1:8090/", ENDPOINT, "it holds '\\t'"),
    ("http://127.0.0.1:8090\\@evil/", PREFIX, "it holds '\\\\'"),  # \ read as / by browsers
    ("http://h/<script>", REDIRECT, "it holds '<'"),
    ("http://h\u00e9.example/", PREFIX, "it holds 'é' (U+00E9) at character 9"),
    # a character that draws nothing is named by its code point too
    ("http://h/\u3164", PREFIX, "it holds '\\u3164' (U+3164) at character 10"),
    ("http://h/\u2800", PREFIX, "it holds '\u2800' (U+2800)"),
    ("http://h/\u202e", PREFIX, "it holds '\\u202e'"),
    ("http://h/%zz", PREFIX, "a % not followed by two hex digits"),
    ("http://h/%2", ENDPOINT, "a % not followed by two hex digits"),
    ("http://h/" + "p" * MAX_URL_CHARS, PREFIX, "longer than the 1,024 characters"),
    ("http://h/" + "p" * 9000, REDIRECT, "longer than the 8,000 characters"),
]


@pytest.mark.parametrize(("url", "rules", "why"), TABLE, ids=[repr(c[0][:40]) for c in TABLE])
def test_url_problem_table(url: str, rules: UrlRules, why: str | None) -> None:
    """Each URL of the table taken (None) or refused for its reason, in at most 400
    characters that quote at most 60 of the URL's own; a URL taken is one Python's
    parser, its IDNA codec (which `socket.getaddrinfo` applies) and `ipaddress` read
    without an error, its host and port what the URL says."""
    problem = url_problem(url, rules)
    if why is None:
        assert problem is None, problem
        parts = urllib.parse.urlsplit(url)
        assert parts.scheme in ("http", "https") and parts.hostname, parts
        assert parts.port is None or 0 < parts.port < 65536
        parts.hostname.encode("idna")
        if ":" in parts.hostname:
            ipaddress.IPv6Address(parts.hostname)
        assert parts.username is None and not parts.fragment or rules.fragment
        return
    assert problem is not None and why in problem, (url, problem)
    assert len(problem) < 400 and url[60:] not in problem or len(url) < 70, problem


def test_every_rule_set_refuses_what_the_common_rules_refuse() -> None:
    """A URL refused under `PREFIX` for anything but its query or fragment is refused
    under each rule set in the same words: only a query, a fragment and the length
    differ by place."""
    for url, rules, why in TABLE:
        if why is None or why in (NO_QUERY, FRAGMENT) or "longer" in why:
            continue
        said = {url_problem(url, r) for r in (PREFIX, ENDPOINT, REDIRECT)}
        assert said == {url_problem(url, rules)}, (url, said)


# --- each flag, through the real CLI -----------------------------------------------


#: Bad URLs short enough to stay whole on a line of the usage error's box, each with a
#: part of its reason.
BAD = [
    ("http://a..example/", NOT_HOST),
    ("http://[zz]/", "is no IPv6 address"),
    ("http://h.example:0/", PORT),
    ("http://u:p@h.example/", "holds no user name or password"),
    ("ftp://h.example/", "its scheme is ftp:"),
    ("http://h.example/a b", "it holds a space at character 19"),
    ("http://h.example/%zz", "a % not followed by two hex digits"),
    ("http://h.example/w#f", FRAGMENT),
]


def test_each_url_flag_refuses_a_bad_url_as_a_usage_error_in_the_same_words(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prov verify --witness-url`, `prov receipt refresh --witness-url`, `prov serve
    --witness URL=KEY`, `prov log audit --tiles`, `prov sign --c2pa --tsa-url`: each bad
    URL is exit 2, "Invalid value for FLAG: 'URL': WHY" with the same WHY for every flag,
    before any call: nothing written (no database, no audit state, the photo and sidecar
    as they were), no traceback."""
    photo = Path(shutil.copy(SAMPLES / "rocket.jpg", tmp_path / "rocket.jpg"))
    sidecar = tmp_path / "rocket.jpg.prov"
    sidecar.write_text("{}")
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    w = cosigner_vkey(
        "witness.example/w1", Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    )
    log_key = LogSigner(Ed25519PrivateKey.generate(), "log.example/log").verifier_key()
    closed = closed_port()
    state, db = str(tmp_path / "audit.json"), str(tmp_path / "prov.db")
    for url, why in BAD:
        flags = {
            "--witness-url": [
                ["verify", str(photo), "--server", closed, "--witness", w, "--witness-url", url],
                ["receipt", "refresh", str(sidecar), "--witness", w, "--witness-url", url],
            ],
            "--witness": [
                ["serve", "--db", db, "--listen", "127.0.0.1:0", "--witness", f"{url}={w}"]
            ],
            "--tiles": [["log", "audit", "--state", state, "--tiles", url, "--log-key", log_key]],
            "--tsa-url": [
                ["sign", str(photo), "--home", str(tmp_path / "h"), "--c2pa", "--tsa-url", url]
            ],
        }
        reasons = set()
        for flag, commands in flags.items():
            for args in commands:
                capsys.readouterr()
                rc = prov_main(args)
                err = _flat(capsys.readouterr().err)
                head = f"Invalid value for {flag}: {quoted(url)}: "
                assert rc == 2 and head in err and why in err, (args, rc, err)
                assert "Traceback" not in err, err
                reasons.add(err.split(head, 1)[1])
        assert len(reasons) == 1, (url, reasons)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept


def test_the_tiles_fetcher_and_the_tiles_flag_say_the_same(tmp_path: Path) -> None:
    """`provenance.log.tiledir.fetcher` (the library's way in) refuses a --tiles place as
    `prov log audit --tiles` does, in the same words (`location_problem`); a folder, or a
    folder whose name starts like a scheme (``tiles:old``), is a folder."""
    for url, why in BAD:
        problem = location_problem(url)
        assert problem == f"{quoted(url)}: {url_problem(url)}" and why in problem, problem
        with pytest.raises(ConfigError) as refused:
            fetcher(url)
        assert str(refused.value) == problem
    odd = tmp_path / "tiles:old"
    odd.mkdir()
    assert location_problem(str(odd)) is None and location_problem(str(tmp_path)) is None
    assert "nor a folder" in (location_problem(str(tmp_path / "gone")) or "")
    assert "it names no scheme" in (location_problem("localhost:8080") or "")
    assert "it holds a space at character 1" in (location_problem(" http://h/") or "")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("gone\n\x1b[2Jtiles", "'gone\\n\\x1b[2Jtiles' is neither an http(s):// URL nor a folder"),
        ("t" * 5000, "(5,000 characters) is neither an http(s):// URL nor a folder that"),
        ("t/" * 3000, "nor a folder that can be looked at (File name too long)"),
    ],
)
def test_a_tiles_folder_that_is_not_there_is_a_usage_error_quoting_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], given: str, said: str
) -> None:
    """``--tiles`` naming no folder: exit 2 before anything is read or written, the name
    quoted as a URL is (escaped, cut to 60 characters) and its length said (before: the
    name as given, a line break and escape sequence let through; one too long for the
    file system was "error: File name too long: NAME", all of it, exit 1)."""
    log_key = LogSigner(Ed25519PrivateKey.generate(), "log.example/log").verifier_key()
    state = tmp_path / "audit.json"
    rc = prov_main(["log", "audit", "--state", str(state), "--tiles", given, "--log-key", log_key])
    err = _flat(capsys.readouterr().err)
    assert rc == 2 and f"Invalid value for --tiles: {quoted(given)}" in err, err
    assert said in err, err
    assert len(err) < 800 and "\x1b" not in err.replace("\\x1b", ""), err
    assert not state.exists()


class _NotHere(BaseHTTPRequestHandler):
    """Answers every request 404 in plain text, the request line's path its words."""

    def _answer(self) -> None:
        body = f"no such thing: {self.path}".encode()
        self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Quiet."""


@contextmanager
def _ipv6_on_port_80() -> Iterator[None]:
    """A real HTTP server at [::1]:80 answering 404 (skipped where the port is taken or
    not this user's, or there is no IPv6 loopback)."""

    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    try:
        server = Server(("::1", 80), _NotHere)
    except OSError as e:
        pytest.skip(f"no server at [::1]:80 here: {e}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_an_ipv6_url_without_a_port_reaches_the_default_port() -> None:
    """``http://[::1]/w`` is [::1] at port 80, for a witness and a timestamp authority
    alike (http.client, given the host without brackets and no port, reads the last
    group of the address as the port: "::1" as host ":" port 1, "Name or service not
    known"; "2001:db8::abcd" raised InvalidURL "nonnumeric port: 'abcd'")."""
    with _ipv6_on_port_80():
        with pytest.raises(
            WitnessError, match=r"cosigned no checkpoint .*HTTP 404: no such thing: /w/"
        ):
            fetch_cosigned_checkpoint("http://[::1]/w", "example.org/log", 5.0)
        with pytest.raises(TimestampError, match=r"answered HTTP 404"):
            request_token(b"to be signed", TimestampAuthority("HTTP://[::1]/tsa", timeout_s=5.0))
