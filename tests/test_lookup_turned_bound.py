"""A video's Lookup under a `prov serve --max-lookup-hashes` set below its default.

Each sampled frame carries 7 turned hashes (`LookupQuery.video_turned`, the rotations and
mirror images a turned copy is found by), and every hash searched counts against the
bound. A video of F frames is 8 x F hashes with them: under a bound between F and 8 x F,
the Lookup was refused whole (RESOURCE_EXHAUSTED), although its frames alone fit and no
split of the call could ever have made it fit. Now its frames are searched without their
turns, and the report says so, naming the bound to set for them. A call whose frames
alone pass the bound is still refused, naming what to send or to raise."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.api import ProvenanceClient, Query
from clients.device.measuring import measure
from provenance.core.claims import Verdict
from provenance.core.errors import TransportError
from provenance.media.video.decode import sample_frames, video_turns
from tests.conftest import ADMIN_TOKEN, ServerProc, enroll_key, start_server
from tests.inproc import make_claim, sign

VIDEO = Path("/work/shared/fixtures/phash/video/pattern-sd-grey-bar.mp4")
#: the bound the server runs with: the video's 7 frames fit, with their 49 turns they do not
BOUND = 20


@pytest.fixture(scope="module")
def low_bound(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    srv = start_server(
        tmp_path_factory.mktemp("turned-bound") / "p.db", "--max-lookup-hashes", str(BOUND)
    )
    try:
        with ProvenanceClient(srv.address, admin_token=ADMIN_TOKEN, timeout=60) as client:
            key = enroll_key(client)
            fields, _ = measure(VIDEO)
            client.submit(sign(key, make_claim(key, 1, **fields)))
        yield srv
    finally:
        srv.stop()


def _query(ref: str) -> Query:
    """The video's Lookup query as `prov scan` sends it (its frames and their 7 turns),
    under another SHA-256: a copy, found by its frames."""
    info = sample_frames(str(VIDEO), dihedral=True)
    frames = tuple(f.pdq for f in info.frames)
    turned = b"".join(h.hash for h in video_turns(info))
    assert len(frames) == 7 and len(turned) == 7 * 32 * len(frames)
    return Query(ref, os.urandom(32), frames, "video/mp4", video_turned=turned)


def test_a_videos_lookup_whose_turns_pass_the_bound_is_answered_saying_so(
    low_bound: ServerProc,
) -> None:
    with ProvenanceClient(low_bound.address, timeout=60) as client:
        answers = client.lookup([_query("a"), _query("b")])
    assert [ref for ref, _ in answers] == ["a", "b"]
    for _, report in answers:
        assert report.status is Verdict.DERIVED, report.reasons
        notes = [r for r in report.reasons if "--max-lookup-hashes" in r]
        assert notes == [
            f"note: the 49 rotated and mirrored hashes of its 7 frames (video_turned) were"
            f" not searched: with them it is 56 perceptual hashes, over this server's"
            f" --max-lookup-hashes of {BOUND}, so a copy displayed turned is not found by this"
            " lookup (the server's operator can set --max-lookup-hashes 56 or more)"
        ], report.reasons


def test_a_call_whose_frames_alone_pass_the_bound_is_refused_naming_it(
    low_bound: ServerProc,
) -> None:
    with (
        ProvenanceClient(low_bound.address, timeout=60) as client,
        pytest.raises(TransportError) as e,
    ):
        client.lookup([_query("a"), _query("b"), _query("c")])
    assert e.value.code == "RESOURCE_EXHAUSTED"
    assert (
        f"21 perceptual hashes in one Lookup (not counting the 147 rotated and mirrored"
        f" hashes of video frames, video_turned, which are left out when they do not fit);"
        f" the limit is {BOUND} (--max-lookup-hashes): send fewer per call"
    ) in str(e.value), e.value
