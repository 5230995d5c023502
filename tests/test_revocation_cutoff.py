"""The revocation cut-off is the server's integration time, never the device's clock
(DESIGN.md: `captured_at` is "the device clock (UTC), distinct from the server's time";
`REVOKED_KEY` is "signed, but by a key revoked before the submission"). A stolen key
can write any `captured_at`: a claim it backdates to before the revocation must still
read `REVOKED_KEY`, and an honest claim whose device clock ran ahead must not. Before
these tests every verdict test logged its claims at their `captured_at`, so a verdict
that compared the revocation with the device clock passed them all."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from clients.device import measure
from provenance.core.claims import Verdict
from provenance.core.verify import FileFacts
from provenance.media.assets import AssetLimits, inspect_image
from tests.conftest import SAMPLES
from tests.inproc import InProc, open_inproc

PHOTO = SAMPLES / "grace_hopper.jpg"


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[InProc]:
    h = open_inproc(tmp_path)
    yield h
    h.service.close()


def _facts(path: Path) -> FileFacts:
    data = path.read_bytes()
    return inspect_image(hashlib.sha256(data).digest(), data, AssetLimits()).facts


def test_a_claim_backdated_by_its_device_clock_is_judged_by_its_logging_time(
    inproc: InProc,
) -> None:
    dev = inproc.enroll()
    captured = inproc.clock.now  # the device clock says the photo was taken now...
    inproc.clock.advance(hours=2)  # ...but it reaches the log two hours later
    fields, _ = measure(PHOTO)
    inproc.submit(dev.next_claim(**{**fields, "captured_at": captured}))
    # the operator learns the key leaked an hour before the claim was logged
    inproc.service.revoke(dev.device_id, "key leaked", captured + timedelta(hours=1))
    report = inproc.service.verify(_facts(PHOTO))
    assert report.status is Verdict.REVOKED_KEY, report.reasons
    assert "key leaked" in report.reasons[0] and "before that claim was logged" in report.reasons[0]


def test_a_claim_whose_device_clock_ran_ahead_is_judged_by_its_logging_time(
    inproc: InProc,
) -> None:
    dev = inproc.enroll()
    logged = inproc.clock.now
    fields, _ = measure(PHOTO)
    inproc.submit(dev.next_claim(**{**fields, "captured_at": logged + timedelta(hours=3)}))
    inproc.clock.advance(hours=4)
    # revoked after the claim was logged, before the time its device clock wrote
    inproc.service.revoke(dev.device_id, "lost", logged + timedelta(hours=1))
    report = inproc.service.verify(_facts(PHOTO))
    assert report.status is Verdict.SIGNED_ORIGINAL, report.reasons
    assert any("after this claim was logged" in r for r in report.reasons), report.reasons
