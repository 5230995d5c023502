"""A VerifyFile's near-duplicate (PDQ) search has a time budget, `prov serve
--verify-search-seconds`, checked between its rounds (`ProvenanceService._search_grouped`),
the search again after a revocation (`_near_logged`) included.

A search takes more than one round only near more than `NEAR_SEARCHED` entries whose
device the server has not read since its start: one device's 70 claims at rocket.jpg's
PDQ code, logged before a restart, here (a clip of 600 frames near 20,000 such claims took
10.4 s in one VerifyFile, and again after the device's key was revoked). Cut short, the
verdict stands on the near copies found by then and says so: ``near_search_cut`` in the
evidence and a reason, never "no signed claim ... matches these pixels"; exact-bytes
verdicts never search. Real `prov serve` processes over one SQLite file, the real client,
`prov verify` and the web page's JSON.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from clients.api import ProvenanceClient
from provenance.core.binding import PerceptualHash
from provenance.core.claims import Verdict
from provenance.core.errors import ConfigError, DeadlineError
from provenance.core.keys import DeviceKey
from provenance.core.verify import NO_MATCH_REASON, FileFacts, decide
from provenance.media.video.decode import sample_frames
from provenance.server.limits import ServerLimits
from provenance.server.pipeline import VerificationPipeline
from provenance.server.service import NEAR_SEARCHED, SearchBudget
from tests.conftest import (
    ADMIN_TOKEN,
    enroll_key,
    read_line,
    sign_claim,
    start_server,
    write_video,
)
from tests.inproc import InProc
from tests.test_band_display import _prov
from tests.test_claim_bounds import video_claim
from tests.test_lookup_hot_codes import HOT, _photo, rocket_codes

PHOTO, CODE, NEAR = rocket_codes()
#: a budget every search spends in its first round: a second round is never searched
TINY = "0.000001"


@contextmanager
def _serving(db: Path, *extra: str) -> Iterator[ProvenanceClient]:
    """An admin client of a real `prov serve` of ``db`` started with ``extra`` options;
    the server is stopped when the block ends, however it ends."""
    srv = start_server(db, *extra)
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            yield c
    finally:
        srv.stop()


def _log_many(c: ProvenanceClient, label: str, code: bytes) -> DeviceKey:
    """Enroll a device named ``label`` and log `NEAR_SEARCHED` + 6 photo claims of it
    (other bytes each) at PDQ ``code``; return its key."""
    key = enroll_key(c, label)
    for seq in range(1, NEAR_SEARCHED + 7):
        c.submit(sign_claim(key, _photo(key, seq, code)))
    return key


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A SQLite log where one device logged `NEAR_SEARCHED` + 6 claims at rocket.jpg's
    code (other bytes), written by a server that has stopped."""
    db = tmp_path / "prov.db"
    with _serving(db) as c:
        _log_many(c, "many", CODE)
    return db


def test_a_verify_near_many_unread_claims_is_cut_at_its_budget_and_says_so(planted: Path) -> None:
    """After a restart, the first VerifyFile of the photo needs a second round: with a
    budget spent by the first, it is answered DERIVED from what the first round found,
    marked cut (before: no such flag, every round searched however long). The next one
    needs no second round (the server kept what the first learnt): not cut. Revoking the
    device from before its claims makes the next search learn its claims again (the
    recheck of `_near_logged`), which is cut too: marked, and UNSIGNED, not REVOKED_KEY
    (before h-cut54: REVOKED_KEY): a cut search cannot say the revoked captures it found
    are the only ones. Asked again, not cut: REVOKED_KEY."""
    with _serving(planted, "--verify-search-seconds", TINY) as c:
        first = c.verify_file(PHOTO)
        second = c.verify_file(PHOTO)
        device = first.evidence.claim.device if first.evidence.claim else None
        assert device is not None
        c.revoke(device.device_id, "lost", datetime.now(UTC) - timedelta(days=1))
        revoked = c.verify_file(PHOTO)
        settled = c.verify_file(PHOTO)
    assert first.status is Verdict.DERIVED, first.reasons
    assert first.evidence.near_search_cut, first.reasons
    assert first.evidence.near_search_seconds > 0
    said = [r for r in first.reasons if "cut short after" in r]
    assert len(said) == 1 and "--verify-search-seconds" in said[0], first.reasons
    assert second.status is Verdict.DERIVED, second.reasons
    assert not second.evidence.near_search_cut, second.reasons
    assert not any("cut short" in r for r in second.reasons), second.reasons
    assert revoked.status is Verdict.UNSIGNED, revoked.reasons
    assert revoked.evidence.near_search_cut, revoked.reasons
    assert revoked.evidence.claim is None
    assert settled.status is Verdict.REVOKED_KEY, settled.reasons
    assert not settled.evidence.near_search_cut, settled.reasons


def test_a_verify_with_the_default_budget_searches_every_round(planted: Path) -> None:
    with _serving(planted) as c:
        report = c.verify_file(PHOTO)
    assert report.status is Verdict.DERIVED, report.reasons
    assert not report.evidence.near_search_cut, report.reasons


def test_prov_verify_and_the_web_page_show_a_cut_search(planted: Path) -> None:
    """`prov verify` prints the reason (text) and the evidence field (--json); the web
    page's POST /api/v1/verify answers the same JSON."""
    srv = start_server(planted, "--verify-search-seconds", TINY)
    try:
        rc, out, err = _prov("verify", str(PHOTO), "--no-detect", server=srv.address)
    finally:
        srv.stop()
    assert "  status     DERIVED" in out, out + err
    assert "why        note: the search for signed near copies of these pixels was cut short" in out
    srv = start_server(planted, "--verify-search-seconds", TINY)
    try:
        rc, out, err = _prov("verify", str(PHOTO), "--no-detect", "--json", server=srv.address)
    finally:
        srv.stop()
    doc = json.loads(out)
    assert doc["status"] == "DERIVED", doc["reasons"]
    assert doc["evidence"]["near_search_cut"] is True, doc["evidence"]
    assert doc["evidence"]["near_search_seconds"] > 0
    srv = start_server(planted, "--verify-search-seconds", TINY, "--http", "127.0.0.1:0")
    try:
        web = read_line(srv.proc, "web on ")
        with httpx.Client(base_url=web, timeout=120) as http:
            got = http.post(
                "/api/v1/verify", files={"file": ("rocket.jpg", PHOTO.read_bytes(), "image/jpeg")}
            )
    finally:
        srv.stop()
    assert got.status_code == 200, got.text
    page = got.json()
    assert page["evidence"]["near_search_cut"] is True, page["evidence"]
    assert any("cut short after" in r for r in page["reasons"]), page["reasons"]


def test_an_unsigned_verdict_of_a_cut_search_does_not_say_nothing_matches() -> None:
    soft = (PerceptualHash("pdq", os.urandom(32), 100),)
    facts = FileFacts(os.urandom(32), 10, "image/jpeg", soft)
    complete = decide(facts, datetime.now(UTC))
    cut = decide(facts, datetime.now(UTC), near_cut_s=4.96)
    assert cut.status is Verdict.UNSIGNED
    assert cut.evidence.near_search_cut and cut.evidence.near_search_seconds == 4.96
    assert NO_MATCH_REASON not in cut.reasons
    [said] = [r for r in cut.reasons if "cut short after 5.0 s" in r]
    assert "this is not a finding that none does" in said, said
    assert NO_MATCH_REASON in complete.reasons and not complete.evidence.near_search_cut


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_verify_search_seconds_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ConfigError, match="verify_search_s must be more than 0"):
        ServerLimits(verify_search_s=bad)


def test_a_lookups_search_again_after_a_revocation_keeps_to_its_deadline(
    inproc: InProc,
) -> None:
    """A Lookup's search again after a revocation (`_near_logged`: the device's claims
    are grouped anew) keeps to the Lookup's deadline too: before, it learnt them again in
    as many rounds as it took, whatever the deadline (DERIVED... then REVOKED_KEY here)."""
    dev = inproc.enroll()
    hot = (PerceptualHash("pdq", HOT, 100),)
    for _ in range(NEAR_SEARCHED + 6):
        inproc.submit(dev.next_claim(soft_bindings=hot))
    inproc.reopen()  # whose each leaf is is not known after a restart
    near = FileFacts(os.urandom(32), 10, "image/jpeg", hot)
    lookups = VerificationPipeline(inproc.service)
    [found] = lookups.lookup_many([near])  # learnt: the next search takes one round
    assert not isinstance(found, Exception) and found.status is Verdict.DERIVED, found
    inproc.service.revoke(dev.device_id, "lost", inproc.clock() - timedelta(days=1))
    with pytest.raises(DeadlineError) as got:
        lookups.lookup_many([near], deadline=time.monotonic())
    assert "ran out of time before its round 2" in str(got.value), got.value
    [again] = lookups.lookup_many([near])
    assert not isinstance(again, Exception) and again.status is Verdict.REVOKED_KEY, again


@pytest.fixture
def revoked_beside_valid(tmp_path: Path) -> Path:
    """A SQLite log, written by a server that has stopped, where a device whose key was
    revoked from before its claims logged `NEAR_SEARCHED` + 6 claims at rocket.jpg's code,
    and another device (never revoked) one claim 6 bits from it: a near copy of
    rocket.jpg that a search reaches only once it knows the revoked device's entries are
    one device's (after a restart it does not)."""
    db = tmp_path / "prov.db"
    with _serving(db) as c:
        thief = _log_many(c, "stolen", CODE)
        honest = enroll_key(c, "honest")
        c.submit(sign_claim(honest, _photo(honest, 1, NEAR)))
        c.revoke(thief.key_id, "stolen", datetime.now(UTC) - timedelta(days=1))
    return db


def test_a_cut_search_that_found_only_revoked_copies_does_not_answer_revoked_key(
    revoked_beside_valid: Path,
) -> None:
    """The first search after a restart is cut after its first round, which holds only the
    revoked device's entries (nearer than the honest copy): before, REVOKED_KEY, a finding
    against the file, though an unrevoked capture it did not reach matches it (the next
    search, not cut, answers DERIVED from it). A cut search cannot say the revoked
    captures are the only ones: UNSIGNED, marked cut, its reason naming the revoked
    capture found and that this is no finding either way."""
    with _serving(revoked_beside_valid, "--verify-search-seconds", TINY) as c:
        cut = c.verify_file(PHOTO)
        again = c.verify_file(PHOTO)
    assert again.status is Verdict.DERIVED, again.reasons
    assert not again.evidence.near_search_cut, again.reasons
    assert again.evidence.claim is not None and again.evidence.pdq_distance == 6
    assert cut.evidence.near_search_cut, cut.reasons
    assert cut.status is Verdict.UNSIGNED, cut.reasons
    assert cut.evidence.claim is None, cut.evidence
    [said] = [r for r in cut.reasons if "revoked" in r]
    assert "not a finding that the file is a copy of a revoked key's capture" in said, said
    assert NO_MATCH_REASON not in cut.reasons


def _still_clip(path: Path, seconds: int) -> bytes:
    """Write a ``seconds``-long 1 fps clip of rocket.jpg at 160 x 120 to ``path``, every
    frame the same picture; return its first 1 Hz sample's PDQ code as the server hashes
    it (`sample_frames`)."""
    with Image.open(PHOTO) as im:
        still = np.asarray(im.convert("RGB").resize((160, 120)))
    write_video(path, [still] * seconds)
    return sample_frames(path).frames[0].pdq.hash


def test_a_videos_dense_pass_keeps_the_mark_of_its_cut_first_search(tmp_path: Path) -> None:
    """A still clip whose frames' code one device logged `NEAR_SEARCHED` + 6 photo claims
    of before a restart (a video claim from another device makes the server run the
    dense pass for trimmed clips). The 1 Hz frames' search is cut after its first round
    (which learnt the device's entries), the verdict UNSIGNED; the dense pass's search
    then settles in one round, not cut. Before h-cut54 its report, made anew, replaced
    the first's and dropped the mark: an UNSIGNED with "no signed claim ... matches these
    pixels", a finding the cut first search cannot back (a claim it did not reach may
    match the 1 Hz frames). Now the mark stays."""
    clip = tmp_path / "still.mp4"
    code = _still_clip(clip, 4)
    db = tmp_path / "prov.db"
    with _serving(db) as c:
        _log_many(c, "many", code)
        filmer = enroll_key(c, "filmer")
        c.submit(sign_claim(filmer, video_claim(filmer, 1)))
    with _serving(db, "--verify-search-seconds", TINY) as c:
        report = c.verify_file(clip)
    assert report.status is Verdict.UNSIGNED, report.reasons
    assert report.evidence.near_search_cut, report.reasons
    assert report.evidence.near_search_seconds > 0
    assert NO_MATCH_REASON not in report.reasons, report.reasons
    assert not any("dense frame pass" in r for r in report.reasons), report.reasons


def test_a_search_again_after_a_revocation_that_ends_answers_revoked_key(
    inproc: InProc,
) -> None:
    """The search again after a revocation (`_near_logged`) replaces the first search, and
    its cut mark too: a first search cut at its budget, then a search again that settles
    in one round (it kept what the first learnt), gives the whole search's verdict,
    REVOKED_KEY, unmarked. Were the first search's mark kept, an honest copy of revoked
    keys' captures would read UNSIGNED (h-cut54's rule) though no search was left cut
    (no test failed when `_near_logged` kept it). One device logs a claim at the code and
    one at another code, a second device `NEAR_SEARCHED` + 6 at the code, revoked from
    before them; after a restart (whose each leaf is is not known) a search of the other
    code learns the first device's group, which its revocation then makes stale: the
    code's search needs a second round (cut), finds the first device's capture, and is
    searched again."""
    hot = (PerceptualHash("pdq", HOT, 100),)
    other = (PerceptualHash("pdq", bytes(b ^ 0xFF for b in HOT), 100),)
    one = inproc.enroll()
    inproc.submit(one.next_claim(soft_bindings=hot))
    inproc.submit(one.next_claim(soft_bindings=other))
    many = inproc.enroll()
    for _ in range(NEAR_SEARCHED + 6):
        inproc.submit(many.next_claim(soft_bindings=hot))
    inproc.service.revoke(many.device_id, "lost", inproc.clock() - timedelta(days=1))
    inproc.reopen()
    learnt = inproc.service.verify(FileFacts(os.urandom(32), 10, "image/jpeg", other))
    assert learnt.status is Verdict.DERIVED, learnt.reasons
    inproc.service.revoke(one.device_id, "stolen", inproc.clock() - timedelta(days=1))
    budget = SearchBudget(float(TINY))
    near = FileFacts(os.urandom(32), 10, "image/jpeg", hot)
    report = inproc.service.verify(near, budget=budget)
    assert report.status is Verdict.REVOKED_KEY, report.reasons
    assert not report.evidence.near_search_cut, report.reasons
