"""Near candidates' per-device share across servers of one PostgreSQL log.

`ProvenanceService` groups each leaf by its device and by whether its key's revocation
covers it (`service.NEAR_PER_DEVICE` places a group). A server that grouped a device's
leaves before its key was revoked, whether the revocation came through it or through
another `prov serve` over the same database, must not keep the thief's later claims in
the group of the device's genuine capture: they would take its places and the copy of
the photo would read REVOKED_KEY. Real servers, a real PostgreSQL database.
"""

from __future__ import annotations

import os
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clients.api import ProvenanceClient, Query
from provenance.core.binding import PerceptualHash
from tests.conftest import (
    ADMIN_TOKEN,
    enroll_key,
    read_line,
    sign_claim,
    start_server,
)
from tests.test_lookup_hot_codes import _photo, assert_derived_from, rocket_codes


@pytest.mark.parametrize("revoked_through", ["the same server", "another server"])
@pytest.mark.parametrize("thief_through", ["the same server", "another server"])
def test_a_revocation_seen_after_grouping_frees_the_genuine_captures_place(
    pg_url: str, revoked_through: str, thief_through: str
) -> None:
    """A device logs a capture 6 bits from rocket.jpg's PDQ hash through server A; its key
    is stolen and the thief logs 6 claims with the photo's exact code (through A, or
    through B over the same database); A answers a Lookup of the photo (DERIVED from a
    thief's claim: nothing is revoked yet), so it has grouped all 7 leaves as one device's.
    Then the key is revoked from between the capture and the thief's claims, through A or
    B. VerifyFile and Lookup of rocket.jpg on A, and on A after a restart, find the
    genuine capture: DERIVED from it at distance 6, never REVOKED_KEY."""
    photo, code, near = rocket_codes()  # near: 6 bits away
    query = Query("photo", os.urandom(32), (PerceptualHash("pdq", code, 100),), "image/jpeg")
    a, b = start_server(pg_url), start_server(pg_url)
    try:
        with (
            ProvenanceClient(a.address, admin_token=ADMIN_TOKEN) as ca,
            ProvenanceClient(b.address, admin_token=ADMIN_TOKEN) as cb,
        ):
            key = enroll_key(ca, "stolen")
            genuine = ca.submit(sign_claim(key, _photo(key, 1, near)))[0].leaf_index
            stolen_from = datetime.now(UTC)  # after the capture was logged, before the thief's
            thief = ca if thief_through == "the same server" else cb
            for seq in range(2, 8):
                thief.submit(sign_claim(key, _photo(key, seq, code)))
            [(_, before)] = ca.lookup([query])
            assert before.status.name == "DERIVED", before.reasons  # a thief's claim, unrevoked
            admin = ca if revoked_through == "the same server" else cb
            admin.revoke(key.key_id, "stolen", stolen_from)
            reports = [ca.verify_file(photo), ca.lookup([query])[0][1]]
        a.stop()
        a = start_server(pg_url)
        with ProvenanceClient(a.address, admin_token=ADMIN_TOKEN) as ca:
            reports += [ca.verify_file(photo), ca.lookup([query])[0][1]]
    finally:
        a.stop()
        b.stop()
    for report in reports:
        assert_derived_from(report, genuine, 6)


#: Claims the hostile device plants at the photo's code before the restart.
PLANTED = 2_000


def _group_reads(url: str) -> int:
    """``prov_near_group_reads_total`` of the server whose /metrics is at ``url``."""
    with urllib.request.urlopen(url, timeout=30) as r:
        text = r.read().decode()
    found = re.search(r"^prov_near_group_reads_total (\S+)$", text, re.M)
    assert found, "no prov_near_group_reads_total in /metrics"
    return int(float(found.group(1)))


def test_learning_one_devices_many_old_leaves_takes_few_rounds(tmp_path: Path) -> None:
    """One device logs 2,000 claims with a photo's exact code (3.3 minutes of the default
    quota), an honest device a copy 6 bits away, and the hostile key is revoked from before
    them; after a restart the server knows whose none of those leaves are. The first Lookup of the photo finds the honest copy (DERIVED
    from it) and learns the hostile leaves in at most 12 reads of the store (each read one
    round of searching the code again). Before, each round learnt 60 more leaves: 34 reads
    here, and N / 60 rounds each a search of all N hits for N planted claims (10^5: 1,668
    rounds, 94 s, where the search alone takes 0.03 s; bench/bench_group_rounds.py)."""
    db = tmp_path / "prov.db"
    code = bytes([0x5A] * 32)
    near = bytes([code[0] ^ 0x3F]) + code[1:]  # 6 bits away
    query = Query("photo", os.urandom(32), (PerceptualHash("pdq", code, 100),), "image/jpeg")
    srv = start_server(db, "--quota-claims-per-minute", "0")
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            hostile, honest = enroll_key(c, "hostile"), enroll_key(c, "honest")
            honest_leaf = c.submit(sign_claim(honest, _photo(honest, 1, near)))[0].leaf_index
            for seq in range(1, PLANTED + 1):
                c.submit(sign_claim(hostile, _photo(hostile, seq, code)))
            c.revoke(hostile.key_id, "planted copies", datetime.now(UTC) - timedelta(hours=1))
    finally:
        srv.stop()
    srv = start_server(db, "--metrics-listen", "127.0.0.1:0")
    try:
        url = read_line(srv.proc, "metrics on ")
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN) as c:
            [(_, report)] = c.lookup([query])
            reads = _group_reads(url)
            [(_, again)] = c.lookup([query])
            assert _group_reads(url) == reads  # learnt once
    finally:
        srv.stop()
    for r in (report, again):
        assert_derived_from(r, honest_leaf)
    assert 1 <= reads <= 12, reads
