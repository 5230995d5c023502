"""Query parameters on a real `prov serve --http` holding the demo's captures: a
parameter a route does not read, and a value outside what it allows, are refused with
a 400 naming the parameter, the value given (escaped, cut short) and what is allowed,
in the one JSON error shape on the JSON routes; never answered 200 as if left out."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import DemoSite, demo_site

pytestmark = pytest.mark.slow

H = "a" * 64
B64 = "A" * 43


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    with demo_site(Path(tmp_path_factory.mktemp("params")), web_separate=False) as s:
        yield s


@pytest.fixture(scope="module")
def http(site: DemoSite) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.web, timeout=120) as c:
        yield c


def _json_error(r: httpx.Response, words: str) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message", "status"]
    assert body["error"]["code"] == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert re.search(words, body["error"]["message"]), body["error"]["message"]


UNKNOWN_ON_JSON = [
    ("GET", "/api/v1/entries?count=1e9"),
    ("GET", "/api/v1/checkpoint?x=1"),
    ("GET", "/api/v1/entries/0?x=1"),
    ("GET", "/api/v1/proofs/inclusion?index=0&foo=1"),
    ("GET", "/api/v1/proofs/consistency?first=1&x=1"),
    ("GET", f"/api/v1/devices/{H}?x=1"),
    ("GET", "/openapi.json?x=1"),
    ("POST", "/api/v1/lookup?x=1"),
    ("POST", "/api/v1/verify?x=1"),
    ("GET", f"/matches/byBinding?alg=pdq&value={B64}&x=1"),
    ("POST", "/matches/byBinding?x=1"),
    ("POST", "/matches/byContent?x=1"),
    ("GET", "/manifests/0?x=1"),
    ("GET", "/services/supportedAlgorithms?x=1"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ON_JSON)
def test_a_parameter_a_json_route_does_not_read_is_refused(
    http: httpx.Client, method: str, path: str
) -> None:
    kw: dict[str, object] = {}
    if path.startswith("/api/v1/lookup"):
        kw = {"json": {"queries": [{"sha256": H}]}}
    elif path.startswith("/api/v1/verify"):
        kw = {"files": {"file": ("a.jpg", b"xx")}}
    elif path.startswith("/matches/byBinding") and method == "POST":
        kw = {"json": {"alg": "pdq", "value": B64}}
    elif path.startswith("/matches/byContent"):
        kw = {"content": b"xx"}
    r = http.request(method, path, **kw)  # type: ignore[arg-type]
    name = "count" if "count=" in path else "foo" if "foo=" in path else "x"
    _json_error(r, rf"unknown query parameter '{name}'.*(reads|takes)")


def test_the_refusal_escapes_and_cuts_what_was_given(http: httpx.Client) -> None:
    r = http.get("/api/v1/entries", params={"\u202e" + "n" * 100: "\x1b" + "v" * 500})
    _json_error(r, r"unknown query parameter")
    message = r.json()["error"]["message"]
    assert "\u202e" not in message and "\x1b" not in message
    assert "\\u202e" in message and "\\x1b" in message
    assert len(message) < 400, message


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (
            "/api/v1/entries?limit=1000000000",
            r"limit must be a whole number from 1 to 100; got '1000000000'",
        ),
        ("/api/v1/entries?limit=0", r"limit must be a whole number from 1 to 100; got '0'"),
        (
            "/api/v1/proofs/consistency?first=1&first_root=",
            r"first_root must be 64 hex digits, got 0 characters: ''",
        ),
    ],
)
def test_a_value_the_api_used_to_take_as_another_is_refused(
    http: httpx.Client, path: str, words: str
) -> None:
    _json_error(http.get(path), words)


def test_the_api_still_answers_what_it_reads(http: httpx.Client) -> None:
    assert http.get("/api/v1/entries?start=0&limit=100").status_code == 200
    assert http.get("/api/v1/entries?limit=1").json()["entries"][0]["index"] == 0
    assert http.get("/api/v1/proofs/inclusion?index=0&tree_size=1").status_code == 200
    assert http.get(f"/matches/byBinding?alg=pdq&value={B64}&maxResults=5").status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/log?start=-1",
        "/log/find?q=1&x=1",
        "/log/entries/0?x=1",
        f"/log/device?id={H}&x=1",
        f"/log/devices/{H}?x=1",
        "/log/consistency?first=1&x=1",
    ],
)
def test_a_parameter_a_log_page_does_not_read_is_refused(http: httpx.Client, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 400, r.text[:300]
    assert r.headers["content-type"].startswith("text/html")
    assert re.search(r"unknown query parameter &#39;(start|x)&#39;", r.text), r.text[:2000]


@pytest.mark.parametrize("path", ["/?utm_source=x", "/api?v=2", "/static/app.js?v=2"])
def test_pages_without_parameters_tolerate_cache_busting_ones(
    http: httpx.Client, path: str
) -> None:
    assert http.get(path).status_code == 200


def test_the_log_forms_empty_fields_still_mean_the_default(http: httpx.Client) -> None:
    r = http.get("/log/consistency?first=1&second=&first_root=")
    assert r.status_code == 200, r.text[:500]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/log?before=99999", "before must be a whole number from 0 to 4 .*got &#39;99999&#39;"),
        ("/log?before=", "before must be a whole number from 0 below 2\\^63.*got &#39;&#39;"),
    ],
)
def test_a_log_page_before_past_the_log_or_empty_is_refused(
    http: httpx.Client, path: str, words: str
) -> None:
    r = http.get(path)
    assert r.status_code == 400, r.text[:300]
    assert re.search(words, r.text), r.text[:3000]
    assert http.get("/log?before=4").status_code == 200
    assert http.get("/log?before=0").status_code == 200


def test_every_parameter_the_soft_binding_spec_defines_is_accepted(
    site: DemoSite, http: httpx.Client
) -> None:
    """The C2PA Soft Binding Resolution API (OpenAPI 1.0.0) defines ``hintAlg`` and
    ``hintValue`` on ``POST /matches/byContent`` and ``returnActiveManifest`` on ``GET
    /manifests/{manifestId}``: optional, so a conforming client may send them and must
    get its answer (they are accepted and ignored here), not a 400."""
    photo = site.files.hopper.read_bytes()
    r = http.post(
        "/matches/byContent",
        params={"alg": "pdq", "maxResults": "5", "hintAlg": "pdq", "hintValue": B64},
        content=photo,
        headers={"content-type": "image/jpeg"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["matches"][0]["manifestId"] == "1"
    for flag in ("true", "false"):
        r = http.get("/manifests/1", params={"returnActiveManifest": flag})
        assert r.status_code == 200, r.text
        assert r.json()["index"] == 1


def test_the_openapi_description_lists_what_each_route_reads(http: httpx.Client) -> None:
    """Each query parameter /openapi.json documents is one its route accepts: sent, no
    answer is the unknown-parameter 400; and the soft binding routes document the C2PA
    API's optional parameters (before, byContent's hintAlg and hintValue and the
    manifests' returnActiveManifest were neither documented nor accepted)."""
    doc = http.get("/openapi.json").json()
    assert [p["name"] for p in doc["paths"]["/matches/byContent"]["post"]["parameters"]] == [
        "alg",
        "maxResults",
        "hintAlg",
        "hintValue",
    ]
    assert [p["name"] for p in doc["paths"]["/manifests/{manifestId}"]["get"]["parameters"]] == [
        "manifestId",
        "returnActiveManifest",
    ]
    assert [p["name"] for p in doc["paths"]["/matches/byBinding"]["post"]["parameters"]] == [
        "maxResults"
    ]
    values = {"integer": "1", "boolean": "true"}
    named = {"sha256": H, "first_root": H, "alg": "pdq", "value": B64, "hintValue": B64}
    checked = 0
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            url = path.replace("{index}", "1").replace("{manifestId}", "1")
            url = url.replace("{device_id}", H)
            for p in op.get("parameters", []):
                if p["in"] != "query":
                    continue
                value = named.get(p["name"], values.get(p["schema"]["type"], "x"))
                kw: dict[str, object] = {"params": {p["name"]: value}}
                if path == "/api/v1/verify":
                    kw["files"] = {"file": ("a.jpg", b"xx")}
                elif method == "post":
                    kw["content"] = b"xx"
                r = http.request(method.upper(), url, **kw)  # type: ignore[arg-type]
                assert "unknown query parameter" not in r.text, (method, url, r.text)
                checked += 1
    assert checked >= 15


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
def test_head_and_options_answer_with_a_query_as_without(http: httpx.Client, method: str) -> None:
    """HEAD answers as GET does, its query checked alike (a spec parameter taken, an
    unknown one a 400); OPTIONS is a method these routes do not answer: a 405 with or
    without a query, not a 400 about the query."""
    plain = http.request(method, "/manifests/1")
    spec = http.request(method, "/manifests/1?returnActiveManifest=true")
    unknown = http.request(method, "/manifests/1?x=1")
    if method == "HEAD":
        assert plain.status_code == spec.status_code == 200 and unknown.status_code == 400
    else:
        assert plain.status_code == spec.status_code == unknown.status_code == 405


@pytest.mark.parametrize("value", ["banana", "2", "TRUE!", "t"])
def test_return_active_manifest_takes_only_true_or_false(http: httpx.Client, value: str) -> None:
    """``returnActiveManifest`` is a boolean in the C2PA Soft Binding Resolution API:
    another value is a 400 naming the parameter, the value and the values it takes
    (before: accepted and ignored whatever it said, ``=banana`` a 200)."""
    _json_error(
        http.get("/manifests/1", params={"returnActiveManifest": value}),
        f"returnActiveManifest must be true or false.*got '{re.escape(value)}'",
    )
    assert http.get("/manifests/1?returnActiveManifest=").status_code == 200  # left empty


def test_a_boolean_parameter_refused_names_every_value_it_takes(http: httpx.Client) -> None:
    """The 400 for a boolean parameter lists exactly the values taken: each word it names
    is answered 200, in any case, on both boolean parameters (``detect`` on the verify
    route, ``returnActiveManifest``), and nothing taken goes unnamed (before: the message
    said "true or false" while 1/0, yes/no and on/off were taken too)."""
    r = http.get("/manifests/1", params={"returnActiveManifest": "banana"})
    message = r.json()["error"]["message"]
    named = set(re.findall(r"\b(true|false|yes|no|on|off|1|0)\b", message.split(", got")[0]))
    assert named == {"true", "false", "1", "0", "yes", "no", "on", "off"}, message
    assert "any case" in message, message
    for word in sorted(named):
        for value in (word, word.upper()):
            got = http.get("/manifests/1", params={"returnActiveManifest": value})
            assert got.status_code == 200, (value, got.text)
    verify = http.post("/api/v1/verify?detect=maybe", files={"file": ("x.jpg", b"x")})
    _json_error(verify, "detect must be true or false \\(or 1/yes/on for true, 0/no/off")


def test_max_results_past_what_the_log_answers_is_a_cap_not_an_error(
    site: DemoSite, http: httpx.Client
) -> None:
    """``maxResults`` caps the answer and costs nothing (the lookup finds the nearest
    capture, one match at most): the C2PA API sets no maximum, so a large cap is taken
    (1,000,000,000: one match, 200), as is any whole number from 1 below 2^63; past that,
    or below 1, it is a 400 naming the range."""
    photo = site.files.hopper.read_bytes()
    for cap in ("1", "1000000000", str(2**63 - 1)):
        r = http.post(
            "/matches/byContent",
            params={"maxResults": cap},
            content=photo,
            headers={"content-type": "image/jpeg"},
        )
        assert r.status_code == 200, r.text
        assert [m["manifestId"] for m in r.json()["matches"]] == ["1"], (cap, r.text)
    for bad in (str(2**63), "0"):
        _json_error(
            http.get(f"/matches/byBinding?alg=pdq&value={B64}&maxResults={bad}"),
            f"maxResults must be a whole number from 1 below 2\\^63; got '{bad}'",
        )
