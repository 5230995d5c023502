"""Every report says which part is cryptographic and which advisory (README: "every
report says which is which"; DESIGN.md: the two halves are never mixed up): the text
report, the JSON of `prov verify --json` and the web API, and the web page say the
status rests on signatures, hashes and the signed log; the detector's block says it is
advisory and never changes the status. Before, only the detector's half was labelled."""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jinja2

from clients.report import DERIVED_BASIS, UNSIGNED_BASIS, report_to_json, report_to_text
from provenance.core.keys import DeviceKey
from provenance.core.verify import FileFacts, VerificationReport, decide
from provenance.web import present
from provenance.web.app import PACKAGE
from tests.test_core_verdict import SHA as SIDECAR_SHA
from tests.test_core_verdict import _device, _sidecar_case
from tests.test_verdict_branches import NOW as LOGGED_NOW
from tests.test_verdict_branches import _facts, _logged

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BLOCK = {
    "available": True,
    "band": "likely generated",
    "score": 0.93,
    "band_low": 0.9,
    "band_high": 0.95,
    "model_id": "default",
    "model_version": "7",
    "crops": [],
    "threshold_low": 0.295,
    "threshold_high": 0.885,
}


def _report() -> VerificationReport:
    data = b"not a signed file"
    facts = FileFacts(hashlib.sha256(data).digest(), len(data), "image/png")
    return replace(decide(facts, NOW), detector=dict(BLOCK))


def test_the_text_report_says_the_status_is_cryptographic_and_the_detector_advisory() -> None:
    text = report_to_text(_report(), "x.png")
    lines = text.splitlines()
    basis = next(i for i, line in enumerate(lines) if line.startswith("  basis "))
    assert basis == 2 and "cryptographic" in lines[basis]  # right under the status
    detector = next(i for i, line in enumerate(lines) if line.startswith("  detector "))
    assert detector > basis and "advisory only" in "\n".join(lines[detector:])


def test_the_json_report_says_the_same() -> None:
    doc = report_to_json(_report(), "x.png")
    assert doc["status"] == "UNSIGNED" and doc["status_basis"].startswith("cryptographic:")
    assert "never changes it" in doc["status_basis"]
    # an UNSIGNED file's status rests on what was not found, not on a signature
    assert "nothing is proven either way" in doc["status_basis"]
    assert "rests on device signatures" not in doc["status_basis"]
    assert "advisory" in doc["detector"]["advisory"]


def test_the_web_page_says_the_same() -> None:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True)
    present.install(env)
    page = env.get_template("_report.html").render(
        report=report_to_json(_report(), "x.png"), filename="x.png"
    )
    found = re.search(r'id="status-basis">([^<]*)<', page)
    assert found is not None and found.group(1).startswith("Cryptographic: no capture signed")
    assert 'class="badge">advisory<' in page


def test_the_text_report_says_unsigned_is_no_judgement_of_the_file() -> None:
    """`UNSIGNED` is the verdict of most files a newsroom gets, and the one most easily
    misread as "fake". The web page says under it that it "says nothing about whether it
    is real: most files are never signed"; the text report of `prov verify` said only
    "no signed capture found for this file" (found by walking through README as an
    editor: the CLI reader was never told)."""
    lines = report_to_text(_report(), "x.png").splitlines()
    status = lines[1]
    assert status.startswith("  status     UNSIGNED: no signed capture found"), status
    assert "says nothing about whether it is real" in status, status
    assert "most files are never signed" in status, status


def test_the_web_page_keeps_the_basis_s_capitals() -> None:
    """The page wrote DERIVED's basis with Jinja's `capitalize`, which lowercases all but
    the first letter: "a perceptual match of the pixels (pdq)", where the text report and
    the JSON say "(PDQ)" (seen on `make web`'s page for the demo's transcoded video)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True)
    present.install(env)
    report = {**report_to_json(_report(), "x.png"), "status": "DERIVED"}
    report["status_basis"] = DERIVED_BASIS
    page = env.get_template("_report.html").render(report=report, filename="x.png")
    found = re.search(r'id="status-basis">([^<]*)<', page)
    assert found is not None, page
    assert found.group(1).startswith("Cryptographic for the signed capture"), found.group(1)
    assert "(PDQ)" in found.group(1), found.group(1)


def test_an_unsigned_of_a_cut_search_is_not_headed_no_signed_capture_matches() -> None:
    """A near search cut at --verify-search-seconds that found only a revoked key's
    capture gives UNSIGNED, its reason naming that capture and saying that a capture it
    did not reach may match (h-cut54). The page's line under the verdict said "No signed
    capture matches this file", and the text report's status line "no signed capture found
    for this file": both contradicted by the reasons beneath them. They now say the search
    was cut short; a whole search's UNSIGNED keeps its words."""
    revoked = _logged(DeviceKey.generate(), revoked_at=LOGGED_NOW - timedelta(days=3))
    cut = decide(_facts(sha=b"\x0b" * 32), NOW, near=[revoked], near_cut_s=5.1)
    whole = decide(_facts(sha=b"\x0b" * 32), NOW)
    assert cut.status.value == whole.status.value == "UNSIGNED", cut.reasons
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(PACKAGE / "templates"), autoescape=True)
    present.install(env)
    pages = {
        name: env.get_template("_report.html").render(
            report=report_to_json(r, "x.jpg"), filename="x.jpg"
        )
        for name, r in (("cut", cut), ("whole", whole))
    }
    meaning = {k: re.search(r'class="meaning">([^<]*)<', p) for k, p in pages.items()}
    assert meaning["whole"] is not None and "No signed capture matches" in meaning["whole"][1]
    assert meaning["cut"] is not None, pages["cut"]
    assert "No signed capture matches" not in meaning["cut"][1], meaning["cut"][1]
    assert "cut short" in meaning["cut"][1], meaning["cut"][1]
    assert "says nothing about whether it is real" in meaning["cut"][1]
    status = report_to_text(cut, "x.jpg").splitlines()[1]
    assert "no signed capture found for this file" not in status, status
    assert "cut short" in status and "says nothing about whether it is real" in status, status
    assert (
        report_to_text(whole, "x.jpg")
        .splitlines()[1]
        .startswith("  status     UNSIGNED: no signed capture found for this file")
    )


def test_an_unsigned_basis_holds_beside_the_signature_or_the_capture_it_found() -> None:
    """An UNSIGNED file may carry a valid device signature never logged (its sidecar), or
    match, by a search cut short, a logged capture of a key revoked before it: its basis
    denies neither (no "no device signature", no "match these bytes or these pixels"),
    and says what every UNSIGNED shares: no capture signed by a key in good standing and
    recorded in the log was found."""
    unlogged, _, _ = _sidecar_case(FileFacts(SIDECAR_SHA, 11, "image/jpeg"), device=_device())
    revoked = _logged(DeviceKey.generate(), revoked_at=LOGGED_NOW - timedelta(days=3))
    cut = decide(_facts(sha=b"\x0b" * 32), NOW, near=[revoked], near_cut_s=5.1)
    for r, found in ((unlogged, "  signature  valid"), (cut, "of a signed capture at log index 7")):
        assert r.status.value == "UNSIGNED", r.reasons
        text = report_to_text(r, "x.jpg")
        assert found in text, text
        basis = report_to_json(r, "x.jpg")["status_basis"]
        assert basis == UNSIGNED_BASIS and f"  basis      {basis}" in text
        assert "no device signature" not in basis and "match these" not in basis
        assert "recorded in the signed log was found for this file" in basis
